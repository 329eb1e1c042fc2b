//! The MTA-STS policy cache (RFC 8461 sections 3.3 and 5.1): per policy
//! domain the policy, its id, when it was fetched and when it expires
//! (`max_age` later); the decision whether to use, refetch or do without;
//! and its JSON file.
//!
//! The decision ([`decide`]) is pure: the cached entry, what the TXT
//! lookup found and the time in, an [`Action`] out. A valid entry is used
//! as long as the TXT record names its id and more than
//! 1/[`REFRESH_DIVISOR`] of its `max_age` is left; a new id, or an entry
//! near its expiry, is refetched; a domain whose TXT record is
//! missing or cannot be looked up keeps its valid entry (section 3.3:
//! senders continue to use a cached policy until it expires). The caller
//! keeps a valid entry when a refetch fails.
//!
//! The cache holds at most [`MAX_ENTRIES`] domains (expired ones go first,
//! then those expiring soonest). [`Cache::save`] writes the JSON file
//! atomically (a temporary file in the same directory, then `rename`);
//! [`Cache::load`] reads it, a missing file being an empty cache.
//!
//! Error contract: nothing here panics; a file that cannot be read,
//! parsed or written is an [`MtaStsError::Cache`] naming the path.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::MtaStsError;
use super::policy::StsPolicy;

/// An entry is refetched once less than `max_age / REFRESH_DIVISOR` of its
/// life is left (a policy of a week is refetched in its last 42 hours).
pub const REFRESH_DIVISOR: u64 = 4;

/// Most domains kept.
pub const MAX_ENTRIES: usize = 10_000;

/// The format version of the cache file.
const FILE_VERSION: u32 = 1;

/// One domain's cached policy; times are seconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The id of the TXT record the policy was fetched for.
    pub id: String,
    pub policy: StsPolicy,
    pub fetched_at: u64,
    pub expires_at: u64,
}

impl Entry {
    /// A policy fetched at `now` for the TXT id `id`.
    pub fn new(id: String, policy: StsPolicy, now: u64) -> Self {
        let expires_at = now.saturating_add(policy.max_age);
        Self {
            id,
            policy,
            fetched_at: now,
            expires_at,
        }
    }

    /// Not expired at `now`.
    pub fn is_valid(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// Less than 1/[`REFRESH_DIVISOR`] of its life left at `now`.
    pub fn near_expiry(&self, now: u64) -> bool {
        let life = self.expires_at.saturating_sub(self.fetched_at);
        self.expires_at.saturating_sub(now) < life / REFRESH_DIVISOR
    }
}

/// What the `_mta-sts` TXT lookup of a domain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Txt {
    /// One valid record with this id.
    Id(String),
    /// No valid record (none, several, malformed; or the name does not
    /// exist).
    NoRecord,
    /// The lookup failed temporarily.
    Unavailable,
}

/// What to do for one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Use the cached entry.
    Use,
    /// Fetch the policy (on failure, use the cached entry if still valid).
    Fetch,
    /// The domain has no policy.
    NoPolicy,
}

/// The decision of RFC 8461 section 5.1 for one domain.
pub fn decide(cached: Option<&Entry>, txt: &Txt, now: u64) -> Action {
    let valid = cached.filter(|entry| entry.is_valid(now));
    match (valid, txt) {
        (Some(entry), Txt::Id(id)) if *id != entry.id || entry.near_expiry(now) => Action::Fetch,
        (Some(_), _) => Action::Use,
        (None, Txt::Id(_)) => Action::Fetch,
        (None, _) => Action::NoPolicy,
    }
}

/// The cached policies, by lower-case domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    entries: HashMap<String, Entry>,
}

/// The file: a version and the entries (sorted, so that the file is
/// stable).
#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    policies: BTreeMap<String, Entry>,
}

impl Cache {
    pub fn get(&self, domain: &str) -> Option<&Entry> {
        self.entries.get(&domain.to_ascii_lowercase())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `entry` for `domain`, making room as needed (expired entries
    /// at `now` first, then those expiring soonest).
    pub fn insert(&mut self, domain: &str, entry: Entry, now: u64) {
        let domain = domain.to_ascii_lowercase();
        if !self.entries.contains_key(&domain) && self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| e.is_valid(now));
            // Bounded: each pass removes one entry.
            while self.entries.len() >= MAX_ENTRIES {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires_at)
                    .map(|(d, _)| d.clone());
                match soonest {
                    Some(d) => self.entries.remove(&d),
                    None => break,
                };
            }
        }
        self.entries.insert(domain, entry);
    }

    /// The JSON text of the file.
    pub fn to_json(&self) -> Result<String, MtaStsError> {
        let file = CacheFile {
            version: FILE_VERSION,
            policies: self
                .entries
                .iter()
                .map(|(d, e)| (d.clone(), e.clone()))
                .collect(),
        };
        serde_json::to_string_pretty(&file)
            .map_err(|e| MtaStsError::Cache(format!("cannot encode the cache: {e}")))
    }

    /// The cache in a file's JSON text (at most [`MAX_ENTRIES`] are kept).
    pub fn from_json(text: &str) -> Result<Self, MtaStsError> {
        let file: CacheFile = serde_json::from_str(text)
            .map_err(|e| MtaStsError::Cache(format!("invalid cache file: {e}")))?;
        if file.version != FILE_VERSION {
            return Err(MtaStsError::Cache(format!(
                "cache file version {} (expected {FILE_VERSION})",
                file.version
            )));
        }
        let entries = file
            .policies
            .into_iter()
            .take(MAX_ENTRIES)
            .map(|(d, e)| (d.to_ascii_lowercase(), e))
            .collect();
        Ok(Self { entries })
    }

    /// Reads the file at `path`; a missing file is an empty cache.
    pub fn load(path: &Path) -> Result<Self, MtaStsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_json(&text)
                .map_err(|e| MtaStsError::Cache(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(MtaStsError::Cache(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the file at `path` atomically: a temporary file beside it,
    /// flushed to disk, renamed over it.
    pub fn save(&self, path: &Path) -> Result<(), MtaStsError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            MtaStsError::Cache(format!("cannot {what} {}: {e}", path.display()))
        };
        let json = self.to_json()?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".mta-sts-")
            .tempfile_in(dir)
            .map_err(|e| fail("create a temporary file for", &e))?;
        temp.write_all(json.as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| fail("write", &e))?;
        temp.persist(path).map_err(|e| fail("replace", &e.error))?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
