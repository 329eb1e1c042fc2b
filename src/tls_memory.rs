//! What the SMTP client remembers about servers' TLS across connections,
//! shared by all workers and kept across reloads: client TLS sessions for
//! resumption (`[tls] session_cache_timeout`, Postfix's
//! smtp_tls_session_cache_timeout) and servers whose TLS handshake failed
//! (`[tls] broken_tls_memory`, mailhop's own), with their counters for
//! `mailhop status` and the metrics.
//!
//! **Sessions.** A session is cached under its [`SessionKey`]: the server
//! endpoint, the names SNI and the certificate checks use, and the whole
//! [`Policy`] (level, match rules, fingerprints, CA files, protocols ...),
//! Postfix's cache key idea: a session established under one policy is
//! never offered under another, so never resumed under a stronger one.
//! Only sessions of handshakes whose certificate checks passed are stored
//! (see [`crate::tls::Resumption`]); one session per key, the latest
//! (TLS 1.3 servers grant several tickets), for
//! min(`session_cache_timeout`, the session's own lifetime). An offered
//! session the server did not resume, or a handshake that failed with
//! one, removes the entry. At most [`MAX_SESSIONS`] entries.
//!
//! **Broken TLS.** A TLS handshake failure (not a certificate verdict)
//! marks the endpoint for `broken_tls_memory`; [`TlsMemory::skip_tls`]
//! tells the delivery loop to go plaintext at once for mail that would be
//! retried in plaintext anyway (level `may`, older than `[tls]
//! plaintext_retry_after`). A completed handshake clears the mark. At most
//! [`MAX_BROKEN`] endpoints.
//!
//! Error contract: nothing here fails; TLS failures are
//! [`crate::tls::TlsFailure`]s as [`crate::tls::handshake`] returns them.
//! A poisoned lock is taken over (the maps hold no invariant a panicking
//! holder could break). The clock is passed in (`*_at`) for tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openssl::ssl::SslSession;
use serde::{Deserialize, Serialize};

use crate::connect::Endpoint;
use crate::tls::{self, PeerNames, Resumption, TlsFailure, TlsInfo, TlsTransport};
use crate::tls_policy::Policy;
use crate::transport::Transport;

/// Most sessions cached at once; beyond it, expired ones are dropped, then
/// new ones are not cached until room is made.
pub const MAX_SESSIONS: usize = 10_000;

/// Most endpoints remembered with broken TLS.
pub const MAX_BROKEN: usize = 65_536;

/// What a cached session may be used for: the same server, names and
/// policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    endpoint: Endpoint,
    hostname: String,
    nexthop: String,
    hostname_is_ip: bool,
    policy: Policy,
}

impl SessionKey {
    pub fn new(endpoint: &Endpoint, peer: &PeerNames<'_>, policy: &Policy) -> Self {
        Self {
            endpoint: endpoint.clone(),
            hostname: peer.hostname.to_ascii_lowercase(),
            nexthop: peer.nexthop.to_ascii_lowercase(),
            hostname_is_ip: peer.hostname_is_ip,
            policy: policy.clone(),
        }
    }
}

#[derive(Clone)]
struct Cached {
    /// Never handed to a connection (only copies are).
    session: SslSession,
    until: Instant,
    /// Which store made it (so that a late removal does not drop a newer
    /// session).
    generation: u64,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("until", &self.until)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The session cache proper (behind [`TlsMemory`]).
#[derive(Debug, Default)]
struct Sessions {
    map: Mutex<HashMap<SessionKey, Cached>>,
    generation: AtomicU64,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Cached>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store_at(&self, key: &SessionKey, session: SslSession, lifetime: Duration, now: Instant) {
        // A copy of our own, and each offer a copy (see tls::copy_session):
        // the granted and the offered objects belong to connections.
        let Some(session) = tls::copy_session(&session) else {
            return;
        };
        let own = u64::try_from(session.timeout()).unwrap_or(0);
        let lifetime = lifetime.min(Duration::from_secs(own));
        let Some(until) = now.checked_add(lifetime) else {
            return;
        };
        if lifetime.is_zero() {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map();
        if map.len() >= MAX_SESSIONS && !map.contains_key(key) {
            map.retain(|_, cached| cached.until > now);
            if map.len() >= MAX_SESSIONS {
                log::debug!("TLS session cache full; session not cached");
                return;
            }
        }
        map.insert(
            key.clone(),
            Cached {
                session,
                until,
                generation,
            },
        );
    }

    fn lookup_at(&self, key: &SessionKey, now: Instant) -> Option<(SslSession, u64)> {
        let mut map = self.map();
        match map.get(key) {
            Some(cached) if cached.until > now => {
                tls::copy_session(&cached.session).map(|session| (session, cached.generation))
            }
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    fn remove(&self, key: &SessionKey, generation: u64) {
        let mut map = self.map();
        if map.get(key).is_some_and(|c| c.generation == generation) {
            map.remove(key);
        }
    }
}

/// The counters of `mailhop status` (the `tls` object) and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCounters {
    /// Completed TLS handshakes with a full (new) session.
    pub new_sessions: u64,
    /// Completed TLS handshakes that resumed a cached session.
    pub resumed_sessions: u64,
    /// Sessions in the session cache now.
    pub cached_sessions: u64,
    /// Servers remembered now with a broken TLS handshake.
    pub broken_servers: u64,
    /// Deliveries that went plaintext at once, skipping the handshake
    /// with such a server.
    pub skipped_handshakes: u64,
}

/// The memory: one per daemon (or `mailhop send --direct` run).
#[derive(Debug, Default)]
pub struct TlsMemory {
    sessions: Arc<Sessions>,
    broken: Mutex<HashMap<Endpoint, Instant>>,
    new_sessions: AtomicU64,
    resumed_sessions: AtomicU64,
    skipped: AtomicU64,
}

/// The settings of one delivery's use of the memory.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// `[tls] session_cache_timeout` (zero: no resumption).
    pub session_cache_timeout: Duration,
    /// `[tls] broken_tls_memory` (zero: remember nothing).
    pub broken_tls_memory: Duration,
}

impl TlsMemory {
    pub fn new() -> Self {
        Self::default()
    }

    fn broken(&self) -> MutexGuard<'_, HashMap<Endpoint, Instant>> {
        self.broken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The TLS handshake with `endpoint` ([`tls::handshake`]), resuming a
    /// cached session when there is one and caching the new ones, and
    /// remembering (or forgetting) the endpoint's broken TLS. Returns
    /// whether the session was resumed.
    pub fn handshake(
        &self,
        stream: Box<dyn Transport>,
        endpoint: &Endpoint,
        policy: &Policy,
        peer: &PeerNames<'_>,
        timeout: Duration,
        settings: Settings,
    ) -> Result<(TlsTransport, TlsInfo, bool), TlsFailure> {
        let lifetime = settings.session_cache_timeout;
        let mut offered = None;
        let result = if lifetime.is_zero() {
            tls::handshake(stream, policy, peer, timeout)
        } else {
            let key = SessionKey::new(endpoint, peer, policy);
            let offer = self.sessions.lookup_at(&key, Instant::now());
            offered = offer
                .as_ref()
                .map(|(_, generation)| (key.clone(), *generation));
            let sessions = Arc::clone(&self.sessions);
            let resumption = Resumption {
                offer: offer.map(|(session, _)| session),
                store: Arc::new(move |session: SslSession| {
                    sessions.store_at(&key, session, lifetime, Instant::now());
                }),
            };
            tls::handshake_resuming(stream, policy, peer, timeout, Some(resumption))
        };
        match result {
            Ok((transport, info)) => {
                let reused = transport.ssl().session_reused();
                if let (false, Some((key, generation))) = (reused, &offered) {
                    self.sessions.remove(key, *generation);
                }
                let counter = if reused {
                    &self.resumed_sessions
                } else {
                    &self.new_sessions
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.handshake_ok(endpoint);
                Ok((transport, info, reused))
            }
            Err(failure) => {
                if let Some((key, generation)) = &offered {
                    self.sessions.remove(key, *generation);
                }
                if matches!(failure, TlsFailure::Handshake(_)) {
                    self.handshake_failed_at(endpoint, settings.broken_tls_memory, Instant::now());
                }
                Err(failure)
            }
        }
    }

    /// A handshake with `endpoint` failed: remember it for `period`.
    pub fn handshake_failed_at(&self, endpoint: &Endpoint, period: Duration, now: Instant) {
        if period.is_zero() {
            return;
        }
        let Some(until) = now.checked_add(period) else {
            return;
        };
        let mut map = self.broken();
        if map.len() >= MAX_BROKEN && !map.contains_key(endpoint) {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_BROKEN {
                return;
            }
        }
        if map.insert(endpoint.clone(), until).is_none() {
            log::info!(
                "{}: TLS handshake failed; remembering the server for {}s ([tls] broken_tls_memory)",
                endpoint_text(endpoint),
                period.as_secs()
            );
        }
    }

    /// A handshake with `endpoint` completed: forget its broken TLS.
    fn handshake_ok(&self, endpoint: &Endpoint) {
        let mut map = self.broken();
        if !map.is_empty() && map.remove(endpoint).is_some() {
            log::info!(
                "{}: TLS handshake completed; the server's broken TLS is forgotten",
                endpoint_text(endpoint)
            );
        }
    }

    /// Whether mail to `endpoint` that may go in plaintext should skip the
    /// TLS handshake: the endpoint is remembered with broken TLS. Counts
    /// and logs the skip (`relay` names the server).
    pub fn skip_tls_at(&self, endpoint: &Endpoint, relay: &str, now: Instant) -> bool {
        let remembered = {
            let mut map = self.broken();
            match map.get(endpoint) {
                Some(until) if *until > now => true,
                Some(_) => {
                    map.remove(endpoint);
                    false
                }
                None => false,
            }
        };
        if remembered {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "{relay}: TLS handshake failed recently; sending in plaintext without STARTTLS ([tls] broken_tls_memory)"
            );
        }
        remembered
    }

    /// [`TlsMemory::skip_tls_at`] now.
    pub fn skip_tls(&self, endpoint: &Endpoint, relay: &str) -> bool {
        self.skip_tls_at(endpoint, relay, Instant::now())
    }

    /// The counters now (the gauges count unexpired entries).
    pub fn counters(&self) -> TlsCounters {
        let now = Instant::now();
        let broken = self.broken().values().filter(|until| **until > now).count();
        let cached = self
            .sessions
            .map()
            .values()
            .filter(|c| c.until > now)
            .count();
        TlsCounters {
            new_sessions: self.new_sessions.load(Ordering::Relaxed),
            resumed_sessions: self.resumed_sessions.load(Ordering::Relaxed),
            cached_sessions: u64::try_from(cached).unwrap_or(u64::MAX),
            broken_servers: u64::try_from(broken).unwrap_or(u64::MAX),
            skipped_handshakes: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// The Postfix log line of a completed handshake; a resumed session says
/// so at its end (Postfix says "Reusing old session" at
/// smtp_tls_loglevel 2, in a line of its own).
pub fn established_line(info: &TlsInfo, relay: &str, resumed: bool) -> String {
    let line = info.established_line(relay);
    if resumed {
        line + " (session resumed)"
    } else {
        line
    }
}

fn endpoint_text(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Inet(addr) => addr.to_string(),
        Endpoint::Unix(path) => path.display().to_string(),
    }
}

#[cfg(test)]
#[path = "tls_memory_tests.rs"]
mod tests;
