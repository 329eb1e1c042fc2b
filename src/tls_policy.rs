//! TLS policy resolution: which security level, certificate checks, SNI
//! name and protocol versions apply to one delivery destination.
//!
//! This module owns the mapping from the `[tls]` configuration (the defaults
//! and the `[[tls.policy]]` table, Postfix's `smtp_tls_*` parameters and
//! `smtp_tls_policy_maps`) to an effective [`Policy`].  It is pure: no I/O,
//! no logging, no OpenSSL; [`crate::tls`] applies the result.
//!
//! # Error contract
//!
//! Nothing here panics.  Every problem with the configuration as it applies
//! to one destination (an unknown level, `dane-only`, level `fingerprint`
//! without fingerprints, a malformed fingerprint, match rule, digest or
//! protocol list) is a [`PolicyError`] whose text says what is wrong.  The
//! caller skips the address with a warning naming that text and the DSN
//! 4.7.5 `client TLS configuration problem`, as Postfix does for a bad
//! policy table entry.

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::config::{
    Digest, Level, MatchRule, PolicyError, ServerName, TlsVersion, parse_fingerprint,
    parse_protocols,
};
use crate::config::{SecurityLevel, TlsConfig, TlsPolicyEntry, parse_match_rules};

/// Which rule decided the TLS level of a delivery, for results and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    /// `[tls] security_level`: no table entry, no published policy.
    Default,
    /// A `[[tls.policy]]` entry (Postfix's smtp_tls_policy_maps).
    PolicyTable,
    /// The server's DNSSEC-signed TLSA records (or their absence) under a
    /// "dane"/"dane-only" level.
    Dane,
    /// The destination domain's MTA-STS policy (RFC 8461).
    MtaSts,
}

impl PolicySource {
    /// The word of results and logs: "default", "policy-table", "dane",
    /// "mta-sts".
    pub fn name(self) -> &'static str {
        match self {
            PolicySource::Default => "default",
            PolicySource::PolicyTable => "policy-table",
            PolicySource::Dane => "dane",
            PolicySource::MtaSts => "mta-sts",
        }
    }
}

/// How a "dane" or "dane-only" policy falls back when a server cannot be
/// authenticated with DANE (RFC 7672 section 2.2, Postfix's dane_init).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DaneMode {
    /// "dane": no DNSSEC or no TLSA records → may; unusable TLSA records →
    /// encrypt.
    Opportunistic,
    /// "dane-only": either of those defers (4.7.5).
    Mandatory,
}

/// The effective TLS policy of one destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    pub level: Level,
    /// Set while `level` is [`Level::Dane`] and the server is not known
    /// yet: each server's TLSA records decide its own policy.
    pub dane: Option<DaneMode>,
    /// The server's usable TLSA records (level [`Level::Dane`], decided).
    pub tlsa: Vec<crate::dane::Tlsa>,
    /// DANE for a host whose MX RRset is insecure (Postfix's "half-dane"):
    /// the TLSA records are enforced, but the session is never "Verified".
    pub half_dane: bool,
    /// Which rule decided `level`, and why, for results and logs.
    pub source: PolicySource,
    pub reason: String,
    /// Certificate name rules; any one matching suffices (verify, secure).
    pub matches: Vec<MatchRule>,
    /// Accepted fingerprints (raw digest bytes) for level `fingerprint`.
    pub fingerprints: Vec<Vec<u8>>,
    pub digest: Digest,
    pub servername: ServerName,
    pub min_version: TlsVersion,
    /// `None`: the newest version OpenSSL supports.
    pub max_version: Option<TlsVersion>,
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Policy {
    /// The level, source and reason, as results and logs show them.
    pub fn note(&self) -> crate::recipients::TlsPolicyNote {
        crate::recipients::TlsPolicyNote {
            level: self.level.name().to_string(),
            source: self.source.name().to_string(),
            reason: self.reason.clone(),
        }
    }
}

/// A policy as delivery uses it: shared, or the reason it cannot apply.
pub type PolicyResult = Result<Arc<Policy>, PolicyError>;

/// The policies of one configuration, built once (at start and on SIGHUP):
/// the default policy and that of every `[[tls.policy]]` entry, each for a
/// TCP destination and for a UNIX socket.  Delivery looks a destination up
/// here; nothing is parsed per delivery.
#[derive(Clone, Debug)]
pub struct Policies {
    /// `[TCP, UNIX socket]` policy of destinations without an entry.
    default: [PolicyResult; 2],
    /// The entries' destinations as written and their `[TCP, UNIX socket]`
    /// policies, in table order.
    entries: Vec<(String, [PolicyResult; 2])>,
}

impl Policies {
    /// Builds every policy of `config`.  An entry that cannot apply keeps
    /// its error, which each delivery to it reports (4.7.5).
    pub fn new(config: &TlsConfig) -> Self {
        let both = |entry: Option<&TlsPolicyEntry>| {
            [false, true].map(|unix| policy_for_entry(config, entry, unix).map(Arc::new))
        };
        Policies {
            default: both(None),
            entries: config
                .policy
                .iter()
                .map(|entry| (entry.destination.clone(), both(Some(entry))))
                .collect(),
        }
    }

    /// The policy of `destination` (as written in the job), found as
    /// [`find_entry`] finds its entry.  `unix_socket`: LMTP over a UNIX
    /// socket.
    pub fn lookup(&self, destination: &str, unix_socket: bool) -> PolicyResult {
        let found = find_index(
            self.entries.iter().map(|(key, _)| key.as_str()),
            destination,
        )
        .and_then(|index| self.entries.get(index))
        .map_or(&self.default, |(_, policies)| policies);
        found[usize::from(unix_socket)].clone()
    }
}

/// A bare domain (no brackets, no port or service, no transport prefix):
/// the only destinations for which ".parent" entries are tried.
fn is_bare_domain(destination: &str) -> bool {
    !destination.is_empty() && !destination.contains(['[', ']', ':', '/'])
}

/// The table entry for a destination: exact key first; then, for a bare
/// domain (no brackets, no port), ".parent" keys from the nearest parent
/// outwards ("a.b.example.com" → ".b.example.com", ".example.com",
/// ".com"). Case-insensitive on domains.
pub fn find_entry<'a>(
    table: &'a [TlsPolicyEntry],
    destination: &str,
) -> Option<&'a TlsPolicyEntry> {
    find_index(
        table.iter().map(|entry| entry.destination.as_str()),
        destination,
    )
    .and_then(|index| table.get(index))
}

/// The index of the entry for a destination among the entries' keys, by
/// the rules of [`find_entry`].
fn find_index<'a>(keys: impl Iterator<Item = &'a str> + Clone, destination: &str) -> Option<usize> {
    let destination = destination.trim();
    let lookup = |key: &str| {
        keys.clone()
            .position(|entry| entry.trim().eq_ignore_ascii_case(key))
    };
    if let Some(index) = lookup(destination) {
        return Some(index);
    }
    if !is_bare_domain(destination) {
        return None;
    }
    // Each '.' that has a label after it starts a parent key (".b.c").
    destination
        .char_indices()
        .filter(|&(index, c)| c == '.' && index + 1 < destination.len())
        .find_map(|(index, _)| destination.get(index..).and_then(lookup))
}

fn path(text: &str) -> Option<PathBuf> {
    (!text.trim().is_empty()).then(|| PathBuf::from(text))
}

/// The effective policy for one destination (as written in the job).
/// `unix_socket`: LMTP over a UNIX socket (may → none).
pub fn policy_for(
    config: &TlsConfig,
    destination: &str,
    unix_socket: bool,
) -> Result<Policy, PolicyError> {
    policy_for_entry(config, find_entry(&config.policy, destination), unix_socket)
}

/// A security level as written.
fn level(text: &str) -> Result<SecurityLevel, PolicyError> {
    text.parse::<SecurityLevel>().map_err(|_| {
        let other = text.trim().to_ascii_lowercase();
        PolicyError(format!(
            "invalid TLS security level {other:?}, expected none, may, encrypt, \
             fingerprint, verify, secure, dane or dane-only"
        ))
    })
}

/// The effective policy of the destinations of `entry` (`None`: of those
/// without an entry).
fn policy_for_entry(
    config: &TlsConfig,
    entry: Option<&TlsPolicyEntry>,
    unix_socket: bool,
) -> Result<Policy, PolicyError> {
    let in_entry = |e: PolicyError| match entry {
        Some(entry) => PolicyError(format!("TLS policy entry for {:?}: {e}", entry.destination)),
        None => e,
    };
    let written = level(entry.map_or(config.security_level.as_str(), |e| e.level.as_str()))
        .map_err(in_entry)?;
    let dane = match written {
        SecurityLevel::Dane => Some(DaneMode::Opportunistic),
        SecurityLevel::DaneOnly => Some(DaneMode::Mandatory),
        _ => None,
    };
    // Postfix refuses both DANE levels over a UNIX socket (no TLSA name);
    // mailhop refuses only "dane-only", and treats "dane" like "may",
    // which is "none" there: a global "dane" keeps local LMTP working.
    if unix_socket && dane == Some(DaneMode::Mandatory) {
        return Err(in_entry(PolicyError(format!(
            "the \"{written}\" security level is invalid for delivery via unix-domain sockets"
        ))));
    }
    let level = written.effective();
    let (level, dane) = if unix_socket && matches!(level, Level::May | Level::Dane) {
        (Level::None, None)
    } else {
        (level, dane)
    };
    let (source, reason) = match entry {
        Some(entry) => (
            PolicySource::PolicyTable,
            format!("policy entry {:?} level {written}", entry.destination),
        ),
        None => (PolicySource::Default, format!("security_level {written}")),
    };

    let entry_matches = entry.map(|e| e.matches.as_slice()).unwrap_or_default();
    let matches = if !entry_matches.is_empty() {
        parse_match_rules(entry_matches).map_err(in_entry)?
    } else {
        match level {
            Level::Verify => parse_match_rules(&config.verify_cert_match)?,
            Level::Secure => parse_match_rules(&config.secure_cert_match)?,
            _ => Vec::new(),
        }
    };

    let digest: Digest = config.fingerprint_digest.parse()?;
    let entry_fingerprints = entry.map(|e| e.fingerprints.as_slice()).unwrap_or_default();
    let fingerprints = if !entry_fingerprints.is_empty() {
        entry_fingerprints
            .iter()
            .map(|text| parse_fingerprint(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(in_entry)?
    } else {
        config
            .fingerprint_cert_match
            .iter()
            .map(|text| parse_fingerprint(text))
            .collect::<Result<Vec<_>, _>>()?
    };
    if level == Level::Fingerprint {
        if fingerprints.is_empty() {
            return Err(in_entry(PolicyError(
                "level \"fingerprint\" needs fingerprints (fingerprint_cert_match or the \
                 policy entry's fingerprints)"
                    .into(),
            )));
        }
        if let Some(wrong) = fingerprints.iter().find(|f| f.len() != digest.output_len()) {
            return Err(in_entry(PolicyError(format!(
                "a fingerprint of {} bytes cannot be a {} digest ({} bytes)",
                wrong.len(),
                digest.name(),
                digest.output_len()
            ))));
        }
    }

    let servername = ServerName::parse(
        entry
            .and_then(|e| e.servername.as_deref())
            .unwrap_or(&config.servername),
    );
    let (min_version, max_version) = match entry.and_then(|e| e.protocols.as_deref()) {
        Some(protocols) => parse_protocols(protocols).map_err(in_entry)?,
        None => parse_protocols(&config.protocols)?,
    };

    Ok(Policy {
        level,
        dane,
        tlsa: Vec::new(),
        half_dane: false,
        source,
        reason,
        matches,
        fingerprints,
        digest,
        servername,
        min_version,
        max_version,
        ca_file: path(&config.ca_file),
        ca_path: path(&config.ca_path),
        cert_file: path(&config.cert_file),
        key_file: path(&config.key_file),
    })
}

#[cfg(test)]
#[path = "tls_policy_tests.rs"]
mod tests;
