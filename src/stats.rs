//! Daemon counters for `mailhop status`: jobs accepted, answered and
//! failed, recipients by final status, busy workers, and the connection
//! cache's own counters through [`CacheReport`].
//!
//! Error contract: none. Counters are relaxed atomics that only ever count
//! up (or, for the gauges, up and down in pairs); a snapshot is a
//! best-effort view, never a reason to fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::SessionCache;
use crate::recipients::Status;
use crate::tls_memory::TlsCounters;

/// What a connection cache reports to `mailhop status`. The daemon asks
/// its cache (or any other implementation handed to it) for these numbers
/// on every status request.
pub trait CacheReport: Send + Sync {
    fn cache_counters(&self) -> CacheCounters;
}

/// The `cache` object of a status reply, filled by the connection cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounters {
    /// Lookups that found an idle session.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Sessions put into the cache.
    pub stored: u64,
    /// Idle sessions held right now.
    pub idle: u64,
    /// Sessions handed to the next job with its transaction already
    /// started behind the previous message (`[cache] chain_jobs`).
    pub chained: u64,
}

impl CacheReport for SessionCache {
    fn cache_counters(&self) -> CacheCounters {
        let stats = self.stats();
        CacheCounters {
            hits: stats.hits,
            misses: stats.misses,
            stored: stats.stored,
            idle: stats.idle,
            chained: stats.chained,
        }
    }
}

/// Live counters, shared by the connections and the workers.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    accepted: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
    deferred: AtomicU64,
    bounced: AtomicU64,
    busy: AtomicU64,
    ingress: IngressStats,
}

/// The LMTP ingress's counters (see [`IngressCounters`]).
#[derive(Debug, Default)]
struct IngressStats {
    on: AtomicBool,
    connections: AtomicU64,
    messages: AtomicU64,
    replied_2xx: AtomicU64,
    replied_4xx: AtomicU64,
    replied_5xx: AtomicU64,
    cancelled: AtomicU64,
}

/// The `ingress` object of a status reply, when `[[ingress]]` listeners
/// run: LMTP connections open now, messages received (a final dot), the
/// per-recipient replies given after them by class, and jobs cancelled
/// (at the deadline, or because the MTA hung up first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressCounters {
    pub connections: u64,
    pub messages: u64,
    pub replied_2xx: u64,
    pub replied_4xx: u64,
    pub replied_5xx: u64,
    pub cancelled: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            accepted: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            ingress: IngressStats::default(),
        }
    }

    /// The LMTP ingress runs: status replies carry its counters.
    pub fn ingress_started(&self) {
        self.ingress.on.store(true, Ordering::Relaxed);
    }

    /// An LMTP connection opened (`true`) or closed.
    pub fn ingress_connection(&self, open: bool) {
        if open {
            self.ingress.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ingress.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A message was answered with these per-recipient replies.
    pub fn ingress_message(&self, replies: &str) {
        self.ingress.messages.fetch_add(1, Ordering::Relaxed);
        for line in replies.lines() {
            let counter = match line.as_bytes().first() {
                Some(b'2') => &self.ingress.replied_2xx,
                Some(b'4') => &self.ingress.replied_4xx,
                Some(b'5') => &self.ingress.replied_5xx,
                _ => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An ingress job was cancelled (deadline, or the MTA hung up).
    pub fn ingress_cancelled(&self) {
        self.ingress.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    fn ingress_counters(&self) -> Option<IngressCounters> {
        let i = &self.ingress;
        i.on.load(Ordering::Relaxed).then(|| IngressCounters {
            connections: i.connections.load(Ordering::Relaxed),
            messages: i.messages.load(Ordering::Relaxed),
            replied_2xx: i.replied_2xx.load(Ordering::Relaxed),
            replied_4xx: i.replied_4xx.load(Ordering::Relaxed),
            replied_5xx: i.replied_5xx.load(Ordering::Relaxed),
            cancelled: i.cancelled.load(Ordering::Relaxed),
        })
    }

    /// A job passed the checks and was queued.
    pub fn job_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// An accepted job got its result: one count per recipient status.
    pub fn job_done<'a>(&self, statuses: impl IntoIterator<Item = &'a Status>) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        for status in statuses {
            let counter = match status {
                Status::Sent => &self.sent,
                Status::Deferred => &self.deferred,
                Status::Bounced => &self.bounced,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An accepted job ended with an error result (e.g. its message file
    /// could not be read).
    pub fn job_failed(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A line was refused before it became a job (malformed, too long...).
    pub fn line_refused(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn worker_busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Workers running a job now.
    pub fn busy_workers(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    pub fn worker_idle(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }

    /// The status reply, with the pool's size and fill and the cache's
    /// counters.
    pub fn snapshot(&self, pool: PoolShape, cache: CacheCounters) -> StatusReport {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let answered = self.answered.load(Ordering::Relaxed);
        StatusReport {
            command: "status".into(),
            accepted,
            in_flight: accepted.saturating_sub(answered),
            done: DoneCounters {
                jobs: answered,
                sent: self.sent.load(Ordering::Relaxed),
                deferred: self.deferred.load(Ordering::Relaxed),
                bounced: self.bounced.load(Ordering::Relaxed),
            },
            errors: self.errors.load(Ordering::Relaxed),
            workers: WorkerCounters {
                total: pool.workers,
                busy: self.busy.load(Ordering::Relaxed),
            },
            queue: QueueCounters {
                depth: pool.queue_depth,
                capacity: pool.queue_capacity,
            },
            uptime: self.started.elapsed().as_secs(),
            cache,
            paused: 0,
            destinations: Vec::new(),
            ingress: self.ingress_counters(),
            tls: None,
        }
    }
}

/// The worker pool's size and fill, for a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolShape {
    pub workers: u64,
    pub queue_depth: u64,
    pub queue_capacity: u64,
}

/// The reply to `{"command":"status"}`, one JSON line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Always "status": tells the reply apart from job results.
    pub command: String,
    /// Jobs accepted since start.
    pub accepted: u64,
    /// Accepted jobs without a result yet (queued or being delivered).
    pub in_flight: u64,
    /// Accepted jobs answered, and their recipients by final status.
    pub done: DoneCounters,
    /// Error results: refused lines and jobs that could not run.
    pub errors: u64,
    pub workers: WorkerCounters,
    pub queue: QueueCounters,
    /// Seconds since the daemon started.
    pub uptime: u64,
    pub cache: CacheCounters,
    /// Destinations paused right now (throttled or dead).
    #[serde(default)]
    pub paused: u64,
    /// Per-destination shaping state ([`crate::shaping`]), busiest first.
    #[serde(default)]
    pub destinations: Vec<DestinationState>,
    /// The LMTP ingress's counters, when `[[ingress]]` listeners run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressCounters>,
    /// TLS session resumption and broken-TLS memory
    /// ([`crate::tls_memory`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCounters>,
}

/// One destination's shaping state, for `mailhop status` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationState {
    /// The destination: a next hop as jobs name it (`example.com`,
    /// `[127.0.0.1]:2525`), or an MX site.
    pub name: String,
    /// "smtp" or "lmtp".
    pub transport: String,
    /// Deliveries in progress (admitted), counting a job chained behind
    /// one in progress on its session.
    pub active: u64,
    /// The concurrency window now (feedback moves it).
    pub window: u64,
    /// Its concurrency limit (0: none).
    pub limit: u64,
    /// Jobs waiting for admission.
    pub waiting: u64,
    /// The rate limit in force ("200/s"), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Seconds left in a pause (throttled or dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_for: Option<f64>,
    /// Suspended by the failed-cohort rule.
    pub dead: bool,
    /// The reply that paused it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_throttle: Option<String>,
    /// Throttling replies seen.
    pub throttled: u64,
    /// Recipients by outcome.
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
}

/// Who reports per-destination state (the daemon's scheduler).
pub trait ShapingReport: Send + Sync {
    /// Every destination known now, busiest first.
    fn destinations(&self) -> Vec<DestinationState>;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneCounters {
    /// Accepted jobs that got a result or an error result.
    pub jobs: u64,
    /// Recipients sent.
    pub sent: u64,
    /// Recipients deferred.
    pub deferred: u64,
    /// Recipients bounced.
    pub bounced: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub total: u64,
    pub busy: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    pub depth: u64,
    pub capacity: u64,
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
