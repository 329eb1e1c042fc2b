//! The connection cache shared by all workers (Postfix's scache with
//! smtp_reuse.c's labels): idle SMTP/LMTP sessions kept after a successful
//! transaction, found again by next-hop label or by endpoint label.
//!
//! A session is stored under its endpoint label (address, port, protocol,
//! TLS level and verified identity, HELO name) and, for the first good
//! session of a job, under the job's next-hop label too; taking it by
//! either label removes it from both. Sessions leave the cache when taken,
//! when idle longer than `[cache] time_limit`, when older than
//! `reuse_time_limit` or used `reuse_count_limit` + 1 times, and on
//! shutdown; leaving sessions are closed with QUIT. The lock is never held
//! during network I/O: sessions are moved out before they are closed.

use std::collections::HashMap;

/// The cache's maps hash with foldhash (randomly seeded per process): a
/// few lookups per delivery, where SipHash showed in profiles.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::connect::Endpoint;
use crate::plan::NexthopKey;
use crate::recipients::TlsSummary;
use crate::smtp::command;
use crate::smtp::ehlo::Extensions;
use crate::tls_policy::Level;
use crate::transport::{Connection, Transport};

/// What must match for an idle session to be reused for a new one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointLabel {
    pub lmtp: bool,
    pub endpoint: Endpoint,
    pub tls_level: Level,
    /// Names the certificate was verified for ("" when not verified).
    pub verified_identity: String,
    pub helo_name: String,
    /// The SASL user name the session authenticates (or would have
    /// authenticated) as ("" without a credential): a session is never
    /// reused for another user's mail.
    pub sasl_username: String,
}

/// The label of a job's destination (Postfix's next-hop label).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NexthopLabel {
    pub lmtp: bool,
    /// The destination as written in the job.
    pub nexthop: String,
    pub tls_level: Level,
    pub helo_name: String,
    /// The job needs SMTPUTF8 (a session found for one that does not
    /// might lack it).
    pub smtputf8: bool,
}

/// An idle session and what is needed to resume it.
pub struct IdleSession {
    pub conn: Connection<Box<dyn Transport>>,
    pub extensions: Extensions,
    pub endpoint: EndpointLabel,
    /// `host[addr]` and `host[addr]:port`.
    pub display: String,
    pub relay: String,
    pub tls: Option<TlsSummary>,
    /// When the connection was made, and how often it was used.
    pub connected_at: Instant,
    pub uses: u32,
    /// A transaction already started on it for the job it was handed to
    /// (see [`crate::chain`]); never set on a session in the cache.
    pub primed: Option<Box<crate::smtp::client::Client>>,
}

struct Entry {
    session: IdleSession,
    idle_since: Instant,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: FastMap<u64, Entry>,
    by_endpoint: FastMap<EndpointLabel, Vec<u64>>,
    by_nexthop: FastMap<NexthopLabel, Vec<u64>>,
}

/// Counters for `mailhop status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub idle: u64,
    pub chained: u64,
}

/// Which list of idle sessions to take from.
enum Index<'a> {
    Nexthop(&'a NexthopLabel),
    Endpoint(&'a EndpointLabel),
}

/// The shared cache.
pub struct SessionCache {
    config: CacheConfig,
    inner: Mutex<Inner>,
    /// Jobs queued or running per next hop (on-demand caching).
    demand: Mutex<FastMap<String, usize>>,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    chained: AtomicU64,
}

impl SessionCache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            demand: Mutex::new(FastMap::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            chained: AtomicU64::new(0),
        }
    }

    /// A session was handed to the next job with its transaction started
    /// (see [`crate::chain`]).
    pub fn count_chained(&self) {
        self.chained.fetch_add(1, Ordering::Relaxed);
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Whether `nexthop` is one of `[cache] destinations` (bare name, no
    /// brackets or port, as Postfix's smtp_connection_cache_destinations).
    pub fn always_cached(&self, nexthop: &NexthopKey) -> bool {
        let bare = nexthop.bare();
        self.config
            .destinations
            .iter()
            .any(|d| d.eq_ignore_ascii_case(bare) || d.eq_ignore_ascii_case(nexthop.as_str()))
    }

    /// Whether jobs are counted per next hop at all (`on_demand`).
    pub fn counts_demand(&self) -> bool {
        self.config.on_demand
    }

    /// Counts a job for `nexthop` as queued or running until the guard is
    /// dropped: with `on_demand`, sessions are cached while more than one
    /// job for the same destination is around.
    pub fn demand(self: &std::sync::Arc<Self>, nexthop: &NexthopKey) -> DemandGuard {
        // Demand only decides anything with on_demand, for destinations
        // not cached anyway: otherwise the guard counts nothing.
        if !self.config.on_demand || self.always_cached(nexthop) {
            return DemandGuard {
                cache: std::sync::Arc::clone(self),
                key: None,
            };
        }
        let key = nexthop.as_str().to_string();
        if let Ok(mut demand) = self.demand.lock() {
            *demand.entry(key.clone()).or_insert(0) += 1;
        }
        DemandGuard {
            cache: std::sync::Arc::clone(self),
            key: Some(key),
        }
    }

    /// Jobs for `nexthop` queued or running now.
    pub fn demand_for(&self, nexthop: &NexthopKey) -> usize {
        self.demand
            .lock()
            .ok()
            .and_then(|d| d.get(nexthop.as_str()).copied())
            .unwrap_or(0)
    }

    /// A session to `nexthop` may be kept after its job (always cached, or
    /// cached on demand): what pipelining the next job behind it needs.
    pub fn may_store(&self, nexthop: &NexthopKey) -> bool {
        self.config.on_demand || self.always_cached(nexthop)
    }

    /// Whether a job for `nexthop` looks up and stores sessions: `[cache]
    /// destinations`, else with `on_demand` when other jobs for it are
    /// around (the job itself counts one).
    pub fn policy_for(&self, nexthop: &NexthopKey) -> (bool, bool) {
        if self.always_cached(nexthop) {
            return (true, true);
        }
        if self.config.on_demand {
            let busy = self.demand_for(nexthop) > 1;
            return (true, busy);
        }
        (false, false)
    }

    /// A session may still be reused (age and use count).
    pub fn reusable(&self, session: &IdleSession) -> bool {
        let young = session.connected_at.elapsed() < self.config.reuse_time_limit;
        let limit = self.config.reuse_count_limit;
        young && (limit == 0 || session.uses <= limit)
    }

    /// Keeps an idle session. Sessions past their reuse limits are closed instead.
    pub fn store(&self, mut session: IdleSession, nexthop: Option<NexthopLabel>) {
        if session.primed.is_some() {
            // Mid-transaction (its DATA may be answered): only closing is safe.
            drop(session);
            return;
        }
        if session.conn.peer_closed() {
            // Unread bytes (a stray reply would answer the next job's first
            // command) or a server that hung up: never kept. Nothing is
            // said on an out-of-step session; it is just closed.
            log::info!(
                "{}: not caching a session with unread input or closed by the server",
                session.relay
            );
            drop(session);
            return;
        }
        if !self.reusable(&session) {
            close_session(session);
            return;
        }
        let overflow = {
            let Ok(mut inner) = self.inner.lock() else {
                drop(session);
                return;
            };
            let id = inner.next_id;
            inner.next_id = inner.next_id.wrapping_add(1);
            // The label is copied only for a list that does not exist yet.
            match inner.by_endpoint.get_mut(&session.endpoint) {
                Some(ids) => ids.push(id),
                None => {
                    inner.by_endpoint.insert(session.endpoint.clone(), vec![id]);
                }
            }
            if let Some(label) = nexthop {
                inner.by_nexthop.entry(label).or_default().push(id);
            }
            inner.sessions.insert(
                id,
                Entry {
                    session,
                    idle_since: Instant::now(),
                },
            );
            self.stored.fetch_add(1, Ordering::Relaxed);
            // Over the cap: drop the oldest idle session.
            if inner.sessions.len() > self.config.max_idle {
                let oldest = inner
                    .sessions
                    .iter()
                    .min_by_key(|(_, e)| e.idle_since)
                    .map(|(id, _)| *id);
                oldest.and_then(|id| inner.sessions.remove(&id))
            } else {
                None
            }
        };
        if let Some(entry) = overflow {
            close_session(entry.session);
        }
    }

    /// An idle session for this next-hop label.
    pub fn take_by_nexthop(&self, label: &NexthopLabel) -> Option<IdleSession> {
        let found = self.take_with(Index::Nexthop(label));
        self.count(found.is_some());
        found
    }

    /// An idle session for this endpoint.
    pub fn take_by_endpoint(&self, label: &EndpointLabel) -> Option<IdleSession> {
        let found = self.take_with(Index::Endpoint(label));
        self.count(found.is_some());
        found
    }

    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the oldest usable session listed under `index`; sessions found
    /// expired on the way are closed. The list is edited in place.
    fn take_with(&self, index: Index<'_>) -> Option<IdleSession> {
        let mut expired = Vec::new();
        let found = {
            let mut inner = self.inner.lock().ok()?;
            let Inner {
                sessions,
                by_nexthop,
                by_endpoint,
                ..
            } = &mut *inner;
            let ids = match index {
                Index::Nexthop(label) => by_nexthop.get_mut(label),
                Index::Endpoint(label) => by_endpoint.get_mut(label),
            }?;
            let mut found = None;
            let mut looked_at = 0;
            for id in ids.iter() {
                looked_at += 1;
                // An id whose session is gone was taken through the other index.
                let Some(entry) = sessions.remove(id) else {
                    continue;
                };
                if entry.idle_since.elapsed() >= self.config.time_limit
                    || !self.reusable(&entry.session)
                {
                    expired.push(entry.session);
                } else {
                    found = Some(entry.session);
                    break;
                }
            }
            // What was not looked at stays, in order.
            ids.drain(..looked_at);
            found
        };
        for session in expired {
            close_session(session);
        }
        found
    }

    /// Closes sessions idle longer than `time_limit`, past their reuse
    /// limits, or closed by the peer. Call it about once a second.
    pub fn expire(&self) {
        let leaving: Vec<IdleSession> = {
            let Ok(mut inner) = self.inner.lock() else {
                return;
            };
            let limit = self.config.time_limit;
            let mut old = Vec::new();
            for (id, e) in inner.sessions.iter_mut() {
                if e.idle_since.elapsed() >= limit
                    || !self.reusable(&e.session)
                    || e.session.conn.peer_closed()
                {
                    old.push(*id);
                }
            }
            let leaving = old
                .iter()
                .filter_map(|id| inner.sessions.remove(id))
                .map(|e| e.session)
                .collect();
            let live: std::collections::HashSet<u64> = inner.sessions.keys().copied().collect();
            inner.by_endpoint.retain(|_, ids| {
                ids.retain(|id| live.contains(id));
                !ids.is_empty()
            });
            inner.by_nexthop.retain(|_, ids| {
                ids.retain(|id| live.contains(id));
                !ids.is_empty()
            });
            leaving
        };
        for session in leaving {
            close_session(session);
        }
    }

    /// Closes every idle session (shutdown).
    pub fn close_all(&self) {
        let all: Vec<IdleSession> = match self.inner.lock() {
            Ok(mut inner) => {
                inner.by_endpoint.clear();
                inner.by_nexthop.clear();
                inner.sessions.drain().map(|(_, e)| e.session).collect()
            }
            Err(_) => Vec::new(),
        };
        for session in all {
            close_session(session);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let idle = self.inner.lock().map(|i| i.sessions.len()).unwrap_or(0);
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            idle: u64::try_from(idle).unwrap_or(u64::MAX),
            chained: self.chained.load(Ordering::Relaxed),
        }
    }
}

/// See [`SessionCache::demand`].
pub struct DemandGuard {
    cache: std::sync::Arc<SessionCache>,
    /// The counted next hop (None: nothing was counted).
    key: Option<String>,
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        let Some(key) = &self.key else { return };
        if let Ok(mut demand) = self.cache.demand.lock() {
            let gone = match demand.get_mut(key) {
                Some(count) => {
                    *count = count.saturating_sub(1);
                    *count == 0
                }
                None => false,
            };
            if gone {
                demand.remove(key);
            }
        }
    }
}

impl Drop for SessionCache {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// QUIT without waiting for the reply, then drop the connection.
fn close_session(mut session: IdleSession) {
    let _ = session.conn.send(command::QUIT, Duration::from_secs(2));
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
