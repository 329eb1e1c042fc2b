//! MTA-STS (RFC 8461): whether a destination domain publishes a policy
//! that requires authenticated TLS to its MX hosts, and what that means for
//! one delivery.
//!
//! Owns, one concern per file:
//! - [`record`]: the `_mta-sts.<domain>` TXT record → the policy id (pure);
//! - [`policy`]: the policy file → [`StsPolicy`], and MX pattern matching
//!   (pure; the fuzz target `mta_sts_policy`);
//! - [`cache`]: the per-domain cache, the use/refetch decision (pure) and
//!   its JSON file (written atomically);
//! - [`fetch`]: the HTTPS fetch, the I/O edge, behind [`PolicyFetcher`];
//! - [`apply`]: a policy in force + the default TLS policy + the MX list →
//!   the servers to try and their TLS policy (pure);
//! - here: [`MtaSts`], which joins them for the deliverer — one per
//!   configuration, shared by the workers behind one `Arc`.
//!
//! [`MtaSts::lookup`] asks the DNS for the TXT record, decides with the
//! cache, fetches when needed, stores and persists a fetched policy, and
//! keeps using a valid cached policy when a refetch fails (with a warning).
//! A failed fetch is not retried for [`FETCH_RETRY_SECS`] (in memory).
//! The cache lock is never held during DNS or HTTPS I/O.
//!
//! # Error contract
//!
//! Nothing here panics on input or network data. Each part reports its
//! failures as an [`MtaStsError`], by cause; [`MtaSts::lookup`] itself
//! never fails: a domain whose policy cannot be had is a domain without a
//! policy (logged), as RFC 8461 section 5.1 prescribes.

pub mod apply;
pub mod cache;
pub mod fetch;
pub mod policy;
pub mod record;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::MtaStsConfig;
use crate::dns::{DnsErrorKind, DnsLookup};

pub use apply::{Verdict, apply};
pub use cache::{Action, Cache, Entry, Txt, decide};
pub use fetch::{FetchSettings, HttpsFetcher, PolicyFetcher};
pub use policy::{Mode, MxPattern, StsPolicy, parse_policy};

/// Why MTA-STS has no policy to offer, by cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MtaStsError {
    /// The TXT records name no policy (none, several, malformed).
    Record(String),
    /// The policy file is malformed.
    Policy(String),
    /// The HTTPS fetch failed (name lookup, connect, certificate, status,
    /// content type, size, timeout).
    Fetch(String),
    /// The cache file cannot be read, parsed or written.
    Cache(String),
}

impl fmt::Display for MtaStsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MtaStsError::Record(text)
            | MtaStsError::Policy(text)
            | MtaStsError::Fetch(text)
            | MtaStsError::Cache(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for MtaStsError {}

/// A domain's policy in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The policy domain (lower case, no trailing dot).
    pub domain: String,
    /// The id it was fetched for.
    pub id: String,
    pub policy: StsPolicy,
}

/// After a failed fetch, the same policy id of the same domain is not
/// fetched again for this long (so that a broken policy host does not
/// cost every delivery a `fetch_timeout`); meanwhile the domain has its
/// valid cached policy, or none.
pub const FETCH_RETRY_SECS: u64 = 300;

/// Seconds since the Unix epoch, for the cache.
pub type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The MTA-STS policies of one configuration: lookups, fetches and the
/// shared cache.
pub struct MtaSts {
    dns: Arc<dyn DnsLookup>,
    fetcher: Box<dyn PolicyFetcher>,
    cache: Mutex<Cache>,
    cache_file: Option<PathBuf>,
    /// Held while the file is written, so that saves happen in order.
    saving: Mutex<()>,
    /// Failed fetches by domain: the id and until when it is not retried.
    failures: Mutex<HashMap<String, (String, u64)>>,
    /// One gate per domain whose policy is being fetched: workers that
    /// need the same policy at once wait for one fetch (single flight).
    fetching: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    clock: Clock,
}

impl fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtaSts")
            .field("cache_file", &self.cache_file)
            .finish_non_exhaustive()
    }
}

impl MtaSts {
    /// The MTA-STS of `[mta_sts]` over `dns`; `Ok(None)` when disabled.
    /// Fails when the HTTPS client cannot be made (an unreadable
    /// `ca_file`).
    pub fn from_config(
        config: &MtaStsConfig,
        families: crate::config::InetProtocols,
        dns: Arc<dyn DnsLookup>,
    ) -> Result<Option<Self>, MtaStsError> {
        if !config.enabled {
            return Ok(None);
        }
        let path = |text: &str| (!text.trim().is_empty()).then(|| PathBuf::from(text));
        let settings = FetchSettings {
            timeout: config.fetch_timeout,
            port: config.https_port,
            ca_file: path(&config.ca_file),
            ipv4: families.ipv4,
            ipv6: families.ipv6,
        };
        let fetcher = HttpsFetcher::new(&settings, Arc::clone(&dns))?;
        Ok(Some(Self::new(
            dns,
            Box::new(fetcher),
            path(&config.cache_file),
        )))
    }

    /// MTA-STS with this fetcher; the cache starts from `cache_file` (a
    /// corrupt or unreadable file is a warning and an empty cache).
    pub fn new(
        dns: Arc<dyn DnsLookup>,
        fetcher: Box<dyn PolicyFetcher>,
        cache_file: Option<PathBuf>,
    ) -> Self {
        let cache = match &cache_file {
            Some(path) => Cache::load(path).unwrap_or_else(|e| {
                log::warn!("MTA-STS cache: {e}; starting with an empty cache");
                Cache::default()
            }),
            None => Cache::default(),
        };
        Self {
            dns,
            fetcher,
            cache: Mutex::new(cache),
            cache_file,
            saving: Mutex::new(()),
            failures: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            clock: Box::new(system_clock),
        }
    }

    /// Uses `clock` (seconds since the epoch) instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A copy of the cached entry of `domain`.
    pub fn cached(&self, domain: &str) -> Option<Entry> {
        self.cache().get(&normalise(domain)).cloned()
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy in force for `domain`, if any (RFC 8461 section 5.1).
    pub fn lookup(&self, domain: &str) -> Option<Found> {
        self.lookup_reporting(domain, |_| {})
    }

    /// [`MtaSts::lookup`], telling `on_failure` when a policy fetch failed
    /// (the fetch or the policy file: for TLS-RPT's sts-policy-fetch-error
    /// and sts-policy-invalid), whether or not a cached policy stands in.
    pub fn lookup_reporting(
        &self,
        domain: &str,
        on_failure: impl FnOnce(&MtaStsError),
    ) -> Option<Found> {
        let domain = normalise(domain);
        let txt = self.txt(&domain);
        let now = (self.clock)();
        let cached = self.cache().get(&domain).cloned();
        let found = |entry: Entry| Found {
            domain: domain.clone(),
            id: entry.id,
            policy: entry.policy,
        };
        match decide(cached.as_ref(), &txt, now) {
            Action::Use => cached.map(found),
            Action::NoPolicy => None,
            Action::Fetch => {
                let Txt::Id(id) = txt else {
                    return None;
                };
                // One fetch per domain at a time; whoever waited finds the
                // policy (or the failure) the other one got.
                let gate = self.gate(&domain);
                let _held = gate.lock().unwrap_or_else(PoisonError::into_inner);
                let result = self.fetch_locked(&domain, id, now, on_failure);
                drop(_held);
                self.release_gate(&domain, gate);
                result
            }
        }
    }

    /// The fetch gate of `domain`.
    fn gate(&self, domain: &str) -> Arc<Mutex<()>> {
        let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(fetching.entry(domain.to_owned()).or_default())
    }

    /// Forgets the gate of `domain` when no other worker holds it.
    fn release_gate(&self, domain: &str, gate: Arc<Mutex<()>>) {
        let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&gate) <= 2 {
            fetching.remove(domain);
        }
    }

    /// The fetch of `domain`'s policy `id`, under its gate: the cache is
    /// read again first (a worker that waited finds the fresh policy).
    fn fetch_locked(
        &self,
        domain: &str,
        id: String,
        now: u64,
        on_failure: impl FnOnce(&MtaStsError),
    ) -> Option<Found> {
        let domain = domain.to_owned();
        let cached = self.cache().get(&domain).cloned();
        let found = |entry: Entry| Found {
            domain: domain.clone(),
            id: entry.id,
            policy: entry.policy,
        };
        if let Some(entry) = cached.as_ref().filter(|e| e.id == id && e.is_valid(now))
            && decide(Some(entry), &Txt::Id(id.clone()), now) == Action::Use
        {
            return cached.map(found);
        }
        if self.failed_lately(&domain, &id, now) {
            // Not retried yet: as if this fetch had failed again.
            return cached.filter(|entry| entry.is_valid(now)).map(found);
        }
        match self
            .fetcher
            .fetch(&domain)
            .and_then(|body| parse_policy(&body))
        {
            Ok(policy) => {
                log::info!(
                    "MTA-STS policy of {domain} fetched: id {id}, mode {}, max_age {}",
                    policy.mode.name(),
                    policy.max_age
                );
                let entry = Entry::new(id, policy, now);
                self.failures().remove(&domain);
                self.cache().insert(&domain, entry.clone(), now);
                self.save();
                Some(found(entry))
            }
            Err(e) => {
                on_failure(&e);
                self.fetch_failed(&domain, &id, now);
                match cached.filter(|entry| entry.is_valid(now)) {
                    Some(entry) => {
                        log::warn!(
                            "MTA-STS policy of {domain} (id {id}): {e}; using the \
                             cached policy (id {}) until it expires",
                            entry.id
                        );
                        Some(found(entry))
                    }
                    None => {
                        log::warn!("MTA-STS policy of {domain} (id {id}): {e}; no policy");
                        None
                    }
                }
            }
        }
    }

    fn failures(&self) -> MutexGuard<'_, HashMap<String, (String, u64)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fetch of `domain`'s policy `id` failed less than
    /// [`FETCH_RETRY_SECS`] ago.
    fn failed_lately(&self, domain: &str, id: &str, now: u64) -> bool {
        self.failures()
            .get(domain)
            .is_some_and(|(failed_id, until)| failed_id == id && now < *until)
    }

    /// Remembers a failed fetch (at most [`cache::MAX_ENTRIES`] domains;
    /// the expired ones go first, then all).
    fn fetch_failed(&self, domain: &str, id: &str, now: u64) {
        let mut failures = self.failures();
        if failures.len() >= cache::MAX_ENTRIES {
            failures.retain(|_, (_, until)| now < *until);
            if failures.len() >= cache::MAX_ENTRIES {
                failures.clear();
            }
        }
        failures.insert(
            domain.to_owned(),
            (id.to_owned(), now.saturating_add(FETCH_RETRY_SECS)),
        );
    }

    /// What the `_mta-sts` TXT lookup of `domain` finds.
    fn txt(&self, domain: &str) -> Txt {
        match self.dns.txt(&format!("_mta-sts.{domain}")) {
            Ok(answer) => match record::policy_id(&answer.records) {
                Ok(id) => Txt::Id(id),
                Err(e) => {
                    log::debug!("_mta-sts.{domain}: {e}");
                    Txt::NoRecord
                }
            },
            Err(e) if matches!(e.kind, DnsErrorKind::NotFound | DnsErrorKind::NoData) => {
                Txt::NoRecord
            }
            Err(e) => {
                log::debug!("_mta-sts.{domain}: TXT lookup failed: {e}");
                Txt::Unavailable
            }
        }
    }

    /// Writes the cache file (a warning when it cannot be written).
    fn save(&self) {
        let Some(path) = &self.cache_file else {
            return;
        };
        let _order = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.cache().clone();
        if let Err(e) = snapshot.save(path) {
            log::warn!("MTA-STS cache: {e}");
        }
    }
}

/// Lower case, without a trailing dot.
fn normalise(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
