//! One connection to Redis for the feed, with reconnection: a command that
//! fails on the connection drops it, and the next use connects again after
//! a back-off (doubling from 100 ms to 10 s), logging the first failure and
//! the recovery. Nothing here stops the daemon: Redis unreachable is a
//! state the feed waits out.

use std::time::{Duration, Instant};

use redis::{Client, Cmd, Connection, FromRedisValue, Pipeline, RedisError, Script};

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

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis connection that reconnects (see the module documentation).
pub struct Conn {
    client: Client,
    /// What the log lines call it ("reader", "writer").
    role: &'static str,
    con: Option<Connection>,
    backoff: Duration,
    /// No connection attempt before this.
    next_try: Option<Instant>,
    /// Down since the last success was logged.
    down: bool,
    read_timeout: Option<Duration>,
}

impl Conn {
    /// A connection to `url`, made at first use. `read_timeout` bounds a
    /// reply (a blocking read must ask for less).
    pub fn new(url: &str, role: &'static str, read_timeout: Duration) -> Result<Conn, FeedError> {
        let client =
            Client::open(url).map_err(|e| FeedError::new(format!("feed.redis_url: {e}")))?;
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
        match self.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(con) => {
                con.set_read_timeout(self.read_timeout)?;
                con.set_write_timeout(Some(CONNECT_TIMEOUT))?;
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
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
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

    pub fn pipe<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> Result<T, FeedError> {
        self.run(|con| pipe.query(con))
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
