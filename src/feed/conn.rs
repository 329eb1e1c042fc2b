//! One connection to Redis for the feed, with reconnection: a command that
//! fails on the connection drops it, and the next use connects again after
//! a back-off (doubling from 100 ms to 10 s), logging the first failure and
//! the recovery. Nothing here stops the daemon: Redis unreachable is a
//! state the feed waits out.
//!
//! With `[feed] cluster = true` the URL is a seed node of a Redis Cluster
//! and the connection is the crate's cluster connection ([`Link`]): each
//! command goes to the master of its key's slot, a pipeline's commands
//! each to theirs (in order per node), a script to the slot of its first
//! key (every key of a script must share that slot: checked at start,
//! [`super::slot`]).

use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection, ClusterPipeline};
use redis::{
    Client, Cmd, Connection, ConnectionLike, FromRedisValue, IntoConnectionInfo, Pipeline,
    RedisError, RedisResult, Script, Value,
};

/// The feed's error: a Redis command that failed (connection or reply),
/// with the server's error code when it answered one ("NOGROUP", ...).
#[derive(Debug)]
pub struct FeedError(pub String, pub Option<String>);

impl FeedError {
    pub fn new(text: impl Into<String>) -> Self {
        FeedError(text.into(), None)
    }

    /// The server answered this error code.
    pub fn is(&self, code: &str) -> bool {
        self.1.as_deref() == Some(code) || self.0.contains(code)
    }
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<RedisError> for FeedError {
    fn from(e: RedisError) -> Self {
        FeedError(e.to_string(), e.code().map(str::to_string))
    }
}

/// How Redis is reached: one server, or a Redis Cluster from a seed node.
pub enum Opener {
    Single(Client),
    Cluster(ClusterClient),
}

/// Retries of the cluster client on a redirection or a failed node
/// before the error reaches the caller (which retries on its own terms).
const CLUSTER_RETRIES: u32 = 2;

impl Opener {
    /// The client for `info` (with `cluster`, a seed node of the cluster);
    /// no connection is made here.
    pub fn open(
        info: impl IntoConnectionInfo,
        cluster: bool,
        connect_timeout: Duration,
    ) -> RedisResult<Opener> {
        if cluster {
            let client = ClusterClient::builder([info])
                .connection_timeout(connect_timeout)
                .retries(CLUSTER_RETRIES)
                .build()?;
            return Ok(Opener::Cluster(client));
        }
        Client::open(info).map(Opener::Single)
    }

    /// A connection, its replies bounded by `read` and its writes by
    /// `write`.
    pub fn connect(
        &self,
        connect_timeout: Duration,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> RedisResult<Link> {
        match self {
            Opener::Single(client) => {
                let con = client.get_connection_with_timeout(connect_timeout)?;
                con.set_read_timeout(read)?;
                con.set_write_timeout(write)?;
                Ok(Link::Single(con))
            }
            Opener::Cluster(client) => {
                let con = client.get_connection()?;
                con.set_read_timeout(read)?;
                con.set_write_timeout(write)?;
                Ok(Link::Cluster(Box::new(con)))
            }
        }
    }
}

/// A connection to one Redis server or to a Redis Cluster.
pub enum Link {
    Single(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Link {
    /// Runs `pipe`, its replies dropped (the feed ignores them all). On a
    /// cluster each command goes to its slot's node, in order per node.
    pub fn pipe_ignored(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        match self {
            Link::Single(con) => pipe.query::<Value>(con).map(|_| ()),
            Link::Cluster(con) => {
                let mut cluster = ClusterPipeline::new();
                for cmd in pipe.cmd_iter() {
                    cluster.add_command(cmd.clone()).ignore();
                }
                if cluster.cmd_iter().next().is_none() {
                    return Ok(());
                }
                cluster.query::<Value>(con).map(|_| ())
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Link::Single(con) => con.req_packed_command(cmd),
            Link::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(con) => con.req_packed_commands(cmd, offset, count),
            Link::Cluster(con) => con.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Single(con) => con.req_command(cmd),
            Link::Cluster(con) => con.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(con) => con.get_db(),
            Link::Cluster(con) => con.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Link::Single(con) => con.supports_pipelining(),
            Link::Cluster(con) => con.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Link::Single(con) => con.check_connection(),
            Link::Cluster(con) => con.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Link::Single(con) => con.is_open(),
            Link::Cluster(con) => con.is_open(),
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis connection that reconnects (see the module documentation).
pub struct Conn {
    client: Opener,
    /// What the log lines call it ("reader", "writer").
    role: &'static str,
    con: Option<Link>,
    backoff: Duration,
    /// No connection attempt before this.
    next_try: Option<Instant>,
    /// Down since the last success was logged.
    down: bool,
    read_timeout: Option<Duration>,
}

impl Conn {
    /// A connection to `url` (with `cluster`, a seed node of a Redis
    /// Cluster), made at first use. `read_timeout` bounds a reply (a
    /// blocking read must ask for less).
    pub fn new(
        url: &str,
        cluster: bool,
        role: &'static str,
        read_timeout: Duration,
    ) -> Result<Conn, FeedError> {
        let client = Opener::open(url, cluster, CONNECT_TIMEOUT)
            .map_err(|e| FeedError::new(format!("feed.redis_url: {e}")))?;
        Ok(Conn {
            client,
            role,
            con: None,
            backoff: FIRST_BACKOFF,
            next_try: None,
            down: false,
            read_timeout: Some(read_timeout),
        })
    }

    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Opener::Cluster(_))
    }

    /// Whether a connection is up (or may be tried now).
    pub fn ready(&self) -> bool {
        self.con.is_some() || self.next_try.is_none_or(|t| Instant::now() >= t)
    }

    /// How long until the next connection attempt (zero when connected).
    pub fn wait(&self) -> Duration {
        match (&self.con, self.next_try) {
            (None, Some(t)) => t.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        }
    }

    /// True when this use made a new connection (the caller sets up
    /// what a restarted server may have lost, the consumer groups).
    fn connect(&mut self) -> Result<bool, FeedError> {
        if self.con.is_some() {
            return Ok(false);
        }
        if !self.ready() {
            return Err(FeedError::new("Redis unreachable; waiting to reconnect"));
        }
        match self
            .client
            .connect(CONNECT_TIMEOUT, self.read_timeout, Some(CONNECT_TIMEOUT))
        {
            Ok(con) => {
                if self.down {
                    log::info!("feed: {}: connected to Redis again", self.role);
                }
                self.down = false;
                self.backoff = FIRST_BACKOFF;
                self.next_try = None;
                self.con = Some(con);
                Ok(true)
            }
            Err(e) => {
                self.failed(&e);
                Err(e.into())
            }
        }
    }

    fn failed(&mut self, e: &RedisError) {
        self.con = None;
        if !self.down {
            log::warn!(
                "feed: {}: Redis unreachable ({e}); reconnecting with back-off up to {}s",
                self.role,
                MAX_BACKOFF.as_secs()
            );
        }
        self.down = true;
        self.next_try = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Connects when needed; true for a new connection.
    pub fn ensure(&mut self) -> Result<bool, FeedError> {
        self.connect()
    }

    /// Runs `f` on the connection (connected when needed).
    pub fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Link) -> Result<T, RedisError>,
    ) -> Result<T, FeedError> {
        self.connect()?;
        let Some(con) = self.con.as_mut() else {
            return Err(FeedError::new("no connection"));
        };
        match f(con) {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout()
                {
                    self.failed(&e);
                }
                Err(e.into())
            }
        }
    }

    pub fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, FeedError> {
        self.run(|con| cmd.query(con))
    }

    /// Runs `pipe`, its replies dropped (see [`Link::pipe_ignored`]).
    pub fn pipe(&mut self, pipe: &Pipeline) -> Result<(), FeedError> {
        self.run(|con| con.pipe_ignored(pipe))
    }

    /// Runs `script` with `keys` and `args` (EVALSHA, loaded when missing).
    pub fn script<T: FromRedisValue>(
        &mut self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, FeedError> {
        self.run(|con| {
            let mut call = script.prepare_invoke();
            for key in keys {
                call.key(*key);
            }
            for arg in args {
                call.arg(*arg);
            }
            call.invoke(con)
        })
    }
}
