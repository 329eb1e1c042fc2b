//! Cluster-wide destination limits: the per-destination concurrency and
//! rate of `[shaping]`, held in Redis so that all nodes fed from the same
//! Redis together stay within one destination's limits. It is the
//! scheduler's [`SharedLimits`]: the local window and rate still apply on
//! top of it on each node.
//!
//! - Concurrency: a sorted set per destination of lease ids scored by
//!   their expiry (server time, microseconds). Acquiring runs one Lua
//!   script: drop expired leases, refuse when as many as the limit are
//!   held, else add the lease. Releasing is a `ZREM`. A thread renews the
//!   leases this node holds every third of their lifetime, so a long
//!   delivery keeps its lease; the leases of a dead node free up when
//!   they expire (at most `lease_time` later).
//! - Rate: GCRA in the same script, with the semantics of the local
//!   `destination_rate` ([`crate::shaping::gcra`]): a theoretical arrival
//!   time per destination, one emission interval per start, starts
//!   allowed while it is no further ahead than the burst allowance. The
//!   count is checked first, so a refused start consumes no rate.
//! - Time is Redis's (`TIME` inside the scripts): the nodes' clocks may
//!   differ.
//! - Keys: `{prefix}{<transport>:<destination>}:leases` and `...:tat`
//!   (one hash tag per destination: both keys on one Redis Cluster slot).
//!
//! Failure policy: Redis unreachable (or an error reply) → the scheduler
//! is told [`Grant::Unavailable`] and applies its local limits only; it
//! is logged once, and Redis is not asked again before a back-off (1 s,
//! doubling up to 30 s) has passed. Each call is bounded by `timeout`:
//! the scheduler asks under its lock.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use redis::{IntoConnectionInfo, Script};

use super::conn::{Link as Connection, Opener};

use crate::shaping::{Demand, Grant, Key, Lease, SharedLimits};

/// Acquire: KEYS = leases, tat; ARGV = lease id, lease lifetime (µs),
/// limit (0: no count check), interval (µs, 0: no rate), burst (µs).
/// Returns {1, 0} (granted) or {0, µs to wait} (-1: the count is full).
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local life = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
  if redis.call('ZCARD', KEYS[1]) >= limit then
    return {0, -1}
  end
end
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if tat < now then tat = now end
  local allowed = tat - burst
  if allowed > now then
    return {0, allowed - now}
  end
  local next = tat + interval
  local keep = math.ceil((next - now) / 1000) + 1000
  redis.call('SET', KEYS[2], string.format('%.0f', next), 'PX', keep)
end
if limit > 0 then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + life), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(life / 1000) * 2)
end
return {1, 0}
";

/// Renew: KEYS = leases; ARGV = lease id, lease lifetime (µs). Returns
/// 1 when the lease was still held, 0 when it had expired (and is gone).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local life = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + life), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(life / 1000) * 2)
return 1
";

/// First back-off after Redis could not be reached.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the cluster limits behave (the feed sets them from `[feed]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// Prefix of the Redis keys.
    pub prefix: String,
    /// This node's name, in its lease ids (the feed's `consumer`).
    pub node: String,
    /// How long a lease lives without renewal: how long a dead node's
    /// deliveries still count against a destination.
    pub lease_time: Duration,
    /// How long the scheduler waits before asking again when the count
    /// is full (other nodes' releases are not signalled).
    pub poll: Duration,
    /// Longest wait for Redis (connect, reply).
    pub timeout: Duration,
    /// The address is a seed node of a Redis Cluster (`[feed] cluster`).
    pub cluster: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            prefix: "mailhop:limits:".into(),
            node: "mailhop".into(),
            lease_time: Duration::from_secs(30),
            poll: Duration::from_millis(50),
            timeout: Duration::from_millis(250),
            cluster: false,
        }
    }
}

/// The leases and rate keys of one destination: one hash tag (the
/// transport and the destination), so both are on one Redis Cluster slot
/// as the acquire script needs.
pub fn limit_keys(prefix: &str, transport: &str, name: &str) -> (String, String) {
    let base = format!("{prefix}{{{transport}:{name}}}");
    (format!("{base}:leases"), format!("{base}:tat"))
}

/// Why the cluster limits could not be set up.
#[derive(Debug)]
pub enum LimitsError {
    /// With a Redis Cluster: one destination's keys on two slots.
    Slots(String),
    /// The connection info does not parse.
    Address(redis::RedisError),
    /// The renewal thread could not start.
    Thread(std::io::Error),
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(e) => write!(f, "Redis address: {e}"),
            Self::Slots(e) => f.write_str(e),
            Self::Thread(e) => write!(f, "cannot start the lease renewal thread: {e}"),
        }
    }
}

impl std::error::Error for LimitsError {}

/// The connection and its health.
struct Link {
    conn: Option<Connection>,
    /// Not asked again before this (after a failure).
    down_until: Option<Instant>,
    backoff: Duration,
}

/// Destination limits held in Redis (see the module doc).
pub struct ClusterLimits {
    client: Opener,
    settings: LimitSettings,
    link: Mutex<Link>,
    /// Leases held by this node: lease id → its sorted set.
    held: Mutex<HashMap<String, String>>,
    seq: AtomicU64,
    /// Makes this instance's lease ids unique (with the node's name).
    nonce: String,
    acquire: Script,
    renew: Script,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl ClusterLimits {
    /// Cluster limits on the Redis at `conn_info` (a `redis://` URL or
    /// connection info), with their lease renewal thread started (it ends
    /// when the limits are dropped). Connects lazily: an unreachable
    /// Redis is no error here.
    pub fn new(
        conn_info: impl IntoConnectionInfo,
        settings: LimitSettings,
    ) -> Result<Arc<Self>, LimitsError> {
        if settings.cluster {
            let (leases, tat) = limit_keys(&settings.prefix, "smtp", "example.com");
            super::slot::check_limit_keys(&leases, &tat).map_err(LimitsError::Slots)?;
        }
        let client = Opener::open(conn_info, settings.cluster, settings.timeout)
            .map_err(LimitsError::Address)?;
        let limits = Arc::new(Self {
            client,
            settings,
            link: Mutex::new(Link {
                conn: None,
                down_until: None,
                backoff: BACKOFF_MIN,
            }),
            held: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            nonce: format!(
                "{}.{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() & 0xffff_ffff)
            ),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
        });
        let weak = Arc::downgrade(&limits);
        let every = (limits.settings.lease_time / 3).max(Duration::from_millis(10));
        thread::Builder::new()
            .name("limits-renew".into())
            .stack_size(128 * 1024)
            .spawn(move || renew_loop(&weak, every))
            .map_err(LimitsError::Thread)?;
        Ok(limits)
    }

    /// Leases this node holds now.
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    fn keys(&self, key: &Key) -> (String, String) {
        limit_keys(&self.settings.prefix, key.transport(), &key.name)
    }

    /// Runs `f` on the connection (made if needed); `None` when Redis is
    /// down or backing off (logged on the change).
    fn with_conn<R>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<R>) -> Option<R> {
        let mut link = lock(&self.link);
        let now = Instant::now();
        if link.down_until.is_some_and(|until| until > now) {
            return None;
        }
        if link.conn.is_none() {
            match self.connect() {
                Ok(conn) => link.conn = Some(conn),
                Err(e) => {
                    self.went_down(&mut link, now, &e);
                    return None;
                }
            }
        }
        let conn = link.conn.as_mut()?;
        match f(conn) {
            Ok(answer) => {
                if link.down_until.take().is_some() {
                    log::info!(
                        "cluster limits: Redis reachable again: destination limits shared again"
                    );
                }
                link.backoff = BACKOFF_MIN;
                Some(answer)
            }
            Err(e) => {
                link.conn = None;
                self.went_down(&mut link, now, &e);
                None
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<Connection> {
        self.client.connect(
            self.settings.timeout,
            Some(self.settings.timeout),
            Some(self.settings.timeout),
        )
    }

    fn went_down(&self, link: &mut Link, now: Instant, e: &redis::RedisError) {
        if link.down_until.is_none() {
            log::warn!(
                "cluster limits: Redis unreachable ({e}): local destination limits only; \
                 trying again in {} ms",
                link.backoff.as_millis()
            );
        }
        link.down_until = Some(now + link.backoff);
        link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
    }

    fn renew_all(&self) {
        let leases: Vec<(String, String)> = lock(&self.held)
            .iter()
            .map(|(id, set)| (id.clone(), set.clone()))
            .collect();
        let life = micros(self.settings.lease_time);
        for (id, set) in leases {
            let kept =
                self.with_conn(|conn| self.renew.key(&set).arg(&id).arg(life).invoke::<i64>(conn));
            // Gone and not released meanwhile: it expired.
            if kept == Some(0) && lock(&self.held).remove(&id).is_some() {
                log::warn!(
                    "cluster limits: lease {id} of {set} had expired before its renewal \
                     (Redis unreachable for longer than the lease time?)"
                );
            }
        }
    }
}

fn renew_loop(limits: &Weak<ClusterLimits>, every: Duration) {
    loop {
        // Sleep in short steps so that a dropped limits ends the thread soon.
        let until = Instant::now() + every;
        while Instant::now() < until {
            if limits.strong_count() == 0 {
                return;
            }
            thread::sleep(every.min(Duration::from_millis(100)));
        }
        match limits.upgrade() {
            Some(limits) => limits.renew_all(),
            None => return,
        }
    }
}

impl SharedLimits for ClusterLimits {
    fn acquire(&self, key: &Key, demand: Demand) -> Grant {
        let (leases, tat) = self.keys(key);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}:{}:{seq}", self.settings.node, self.nonce);
        let limit = demand.limit.unwrap_or(0);
        let (interval, burst) = demand
            .pace
            .map_or((0, 0), |p| (micros(p.interval).max(1), micros(p.burst)));
        let answer = self.with_conn(|conn| {
            self.acquire
                .key(&leases)
                .key(&tat)
                .arg(&id)
                .arg(micros(self.settings.lease_time))
                .arg(limit)
                .arg(interval)
                .arg(burst)
                .invoke::<(i64, i64)>(conn)
        });
        match answer {
            None => Grant::Unavailable,
            Some((1, _)) if limit > 0 => {
                lock(&self.held).insert(id.clone(), leases);
                Grant::Granted(Some(Lease(id)))
            }
            Some((1, _)) => Grant::Granted(None),
            Some((_, wait)) => match u64::try_from(wait) {
                Ok(us) => Grant::Wait(Duration::from_micros(us.max(1))),
                Err(_) => Grant::Wait(self.settings.poll),
            },
        }
    }

    fn release(&self, _key: &Key, lease: Lease) {
        let Some(set) = lock(&self.held).remove(&lease.0) else {
            return;
        };
        // Unreachable: the lease expires by itself.
        let _ = self.with_conn(|conn| {
            redis::cmd("ZREM")
                .arg(&set)
                .arg(&lease.0)
                .query::<i64>(conn)
        });
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
