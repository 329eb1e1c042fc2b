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

use std::fmt;
use std::path::PathBuf;

use crate::config::{TlsConfig, TlsPolicyEntry};

/// A TLS security level, ordered by strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Never use TLS.
    None,
    /// STARTTLS when offered; no certificate check.
    May,
    /// TLS required; no certificate check.
    Encrypt,
    /// TLS required; the server certificate or public key fingerprint must
    /// be one of those listed.
    Fingerprint,
    /// TLS required; PKIX chain and a name matching the MX host name.
    Verify,
    /// TLS required; PKIX chain and a name matching the next-hop domain.
    Secure,
}

impl Level {
    /// The level's name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Fingerprint => "fingerprint",
            Level::Verify => "verify",
            Level::Secure => "secure",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule of a certificate name match list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MatchRule {
    /// The MX host name the session connected to.
    Hostname,
    /// The next-hop domain.
    Nexthop,
    /// Any strict subdomain of the next-hop domain.
    DotNexthop,
    /// "example.com" exact or ".example.com" any subdomain (lower case).
    Name(String),
}

/// The digest of level `fingerprint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    /// Length in bytes of a digest value.
    pub fn output_len(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha256 => 32,
            Digest::Sha512 => 64,
        }
    }

    /// The digest's configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha256 => "sha256",
            Digest::Sha512 => "sha512",
        }
    }
}

/// Which name is sent as SNI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// The MX host name (none for an address literal).
    Hostname,
    /// The next-hop domain.
    Nexthop,
    /// This name.
    Fixed(String),
}

/// A TLS protocol version.  SSLv2 and SSLv3 are never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    Tls1_0,
    Tls1_1,
    Tls1_2,
    Tls1_3,
}

impl TlsVersion {
    /// The version's name as OpenSSL and Postfix write it ("TLSv1.2").
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls1_0 => "TLSv1",
            TlsVersion::Tls1_1 => "TLSv1.1",
            TlsVersion::Tls1_2 => "TLSv1.2",
            TlsVersion::Tls1_3 => "TLSv1.3",
        }
    }
}

/// The effective TLS policy of one destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    pub level: Level,
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

/// A TLS configuration problem for one destination.  The caller maps it to
/// the DSN 4.7.5 `client TLS configuration problem` and logs the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Items of a list value: separated by commas, colons or white space.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ':', ' ', '\t', '\r', '\n'])
        .filter(|item| !item.is_empty())
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
    let destination = destination.trim();
    let lookup = |key: &str| {
        table
            .iter()
            .find(|entry| entry.destination.trim().eq_ignore_ascii_case(key))
    };
    if let Some(entry) = lookup(destination) {
        return Some(entry);
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

fn parse_level(text: &str) -> Result<Level, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(Level::None),
        "may" => Ok(Level::May),
        "encrypt" => Ok(Level::Encrypt),
        "fingerprint" => Ok(Level::Fingerprint),
        "verify" => Ok(Level::Verify),
        "secure" => Ok(Level::Secure),
        // DANE is not built: like Postfix without DNSSEC, "dane" is "may".
        "dane" => Ok(Level::May),
        "dane-only" => Err(PolicyError(
            "dane-only requires DANE, which is not supported yet".into(),
        )),
        other => Err(PolicyError(format!(
            "invalid TLS security level {other:?}, expected none, may, encrypt, \
             fingerprint, verify, secure, dane or dane-only"
        ))),
    }
}

fn parse_digest(text: &str) -> Result<Digest, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "sha1" => Ok(Digest::Sha1),
        "sha256" => Ok(Digest::Sha256),
        "sha512" => Ok(Digest::Sha512),
        other => Err(PolicyError(format!(
            "invalid fingerprint digest {other:?}, expected sha256, sha512 or sha1"
        ))),
    }
}

/// A literal match name: labels of letters, digits, '-' and '_'.
fn valid_match_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_match_rules(items: &[String]) -> Result<Vec<MatchRule>, PolicyError> {
    let mut rules = Vec::new();
    for item in items.iter().flat_map(|item| list_items(item)) {
        let rule = match item.to_ascii_lowercase().as_str() {
            "hostname" => MatchRule::Hostname,
            "nexthop" => MatchRule::Nexthop,
            "dot-nexthop" => MatchRule::DotNexthop,
            name => {
                let bare = name.strip_prefix('.').unwrap_or(name);
                let bare = bare.strip_suffix('.').unwrap_or(bare);
                if !valid_match_name(bare) {
                    return Err(PolicyError(format!(
                        "invalid certificate match rule {item:?}, expected hostname, \
                         nexthop, dot-nexthop or a domain name"
                    )));
                }
                let dot = if name.starts_with('.') { "." } else { "" };
                MatchRule::Name(format!("{dot}{bare}"))
            }
        };
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// Parses a fingerprint: hex bytes separated by colons ("AB:CD:...") or
/// written together ("abcd..."), either case.
pub fn parse_fingerprint(text: &str) -> Result<Vec<u8>, PolicyError> {
    let bad = |why: &str| PolicyError(format!("invalid fingerprint {text:?}: {why}"));
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    let pairs: Vec<&str> = if trimmed.contains(':') {
        let pieces: Vec<&str> = trimmed.split(':').collect();
        if pieces.iter().any(|piece| piece.len() != 2) {
            return Err(bad("expected two hex digits between colons"));
        }
        pieces
    } else {
        if !trimmed.len().is_multiple_of(2) {
            return Err(bad("odd number of hex digits"));
        }
        (0..trimmed.len() / 2)
            .filter_map(|i| trimmed.get(2 * i..2 * i + 2))
            .collect()
    };
    if pairs.len() * 2 != trimmed.len() - trimmed.matches(':').count()
        || !pairs
            .iter()
            .all(|pair| pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(bad("not hex"));
    }
    pairs
        .iter()
        .map(|pair| u8::from_str_radix(pair, 16).map_err(|_| bad("not hex")))
        .collect()
}

/// The protocol names Postfix knows, in order; index 0 and 1 (SSLv2, SSLv3)
/// are never enabled.
const PROTOCOLS: [&str; 6] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const TLS_VERSIONS: [TlsVersion; 4] = [
    TlsVersion::Tls1_0,
    TlsVersion::Tls1_1,
    TlsVersion::Tls1_2,
    TlsVersion::Tls1_3,
];

/// Parses a protocol list into (minimum, maximum) versions.
///
/// Forms, combinable in one list: ">=TLSv1.2" (minimum), "<=TLSv1.2"
/// (maximum), Postfix's exclusions "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1" and
/// bare names ("TLSv1.2 TLSv1.3": only those).  Without any restriction
/// TLSv1 and up are allowed, as in Postfix; SSLv2 and SSLv3 never are.  An
/// empty text means the default, TLSv1.2 and up.  The allowed versions
/// must be contiguous: OpenSSL cannot skip one.
pub fn parse_protocols(text: &str) -> Result<(TlsVersion, Option<TlsVersion>), PolicyError> {
    let bad = |why: String| PolicyError(format!("invalid TLS protocols {text:?}: {why}"));
    let index_of = |name: &str| {
        PROTOCOLS
            .iter()
            .position(|known| known.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                bad(format!(
                    "unknown protocol {name:?}, expected e.g. \">=TLSv1.2\" or \"!SSLv3, !TLSv1\""
                ))
            })
    };
    if list_items(text).next().is_none() {
        return Ok((TlsVersion::Tls1_2, None));
    }
    let mut allowed = [false, false, true, true, true, true];
    let mut included = [false; 6];
    let mut any_included = false;
    for item in list_items(text) {
        if let Some(name) = item.strip_prefix(">=") {
            let min = index_of(name)?;
            allowed.iter_mut().take(min).for_each(|on| *on = false);
        } else if let Some(name) = item.strip_prefix("<=") {
            let max = index_of(name)?;
            allowed.iter_mut().skip(max + 1).for_each(|on| *on = false);
        } else if let Some(name) = item.strip_prefix('!') {
            if let Some(on) = allowed.get_mut(index_of(name)?) {
                *on = false;
            }
        } else {
            if let Some(on) = included.get_mut(index_of(item)?) {
                *on = true;
            }
            any_included = true;
        }
    }
    // allowed[i + 2] is TLS_VERSIONS[i].
    let enabled: Vec<TlsVersion> = TLS_VERSIONS
        .iter()
        .enumerate()
        .filter(|&(i, _)| {
            allowed.get(i + 2) == Some(&true)
                && (!any_included || included.get(i + 2) == Some(&true))
        })
        .map(|(_, version)| *version)
        .collect();
    let (Some(&min), Some(&max)) = (enabled.first(), enabled.last()) else {
        return Err(bad("no TLS protocol version left".into()));
    };
    let span = TLS_VERSIONS
        .iter()
        .filter(|version| (min..=max).contains(version))
        .count();
    if span != enabled.len() {
        return Err(bad(format!(
            "the allowed versions from {} to {} have a gap, which OpenSSL cannot honour",
            min.name(),
            max.name()
        )));
    }
    Ok((min, (max != TlsVersion::Tls1_3).then_some(max)))
}

fn parse_servername(text: &str) -> ServerName {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("hostname") {
        ServerName::Hostname
    } else if text.eq_ignore_ascii_case("nexthop") {
        ServerName::Nexthop
    } else {
        ServerName::Fixed(text.to_string())
    }
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
    let entry = find_entry(&config.policy, destination);
    let in_entry = |e: PolicyError| match entry {
        Some(entry) => PolicyError(format!("TLS policy entry for {:?}: {e}", entry.destination)),
        None => e,
    };
    let level = parse_level(entry.map_or(config.security_level.as_str(), |e| e.level.as_str()))
        .map_err(in_entry)?;
    let level = if unix_socket && level == Level::May {
        Level::None
    } else {
        level
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

    let digest = parse_digest(&config.fingerprint_digest)?;
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

    let servername = parse_servername(
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
