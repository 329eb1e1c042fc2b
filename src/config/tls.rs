//! The grammar of the `[tls]` values, in one place: security levels,
//! certificate match rules, fingerprints and their digest, SNI names and
//! protocol lists, each parsed into a typed value.
//!
//! Two callers use the same parsers.  Loading a file ([`super::Config`]
//! checks) additionally requires each value to be written the way the
//! documentation writes it (the stricter rules that loading always had:
//! lower-case level and digest names, protocol names in their exact case
//! and without `:` separators, one match rule per array element, no
//! surrounding blanks, fingerprints of at least 20 bytes).  Building a
//! destination's policy ([`crate::tls_policy`]) parses what a `TlsConfig`
//! built in code may hold as Postfix would (any case, `:` separators) and
//! adds the rules only a whole policy can judge: `dane-only`, the digest
//! length of fingerprints and protocol ranges without gaps.
//!
//! Nothing here panics on input; every parser returns a typed error or a
//! [`PolicyError`] with the text the caller shows.

use std::fmt;
use std::str::FromStr;

use crate::text::{TLS_LIST_SEPARATORS, list_items};

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
    /// DANE (RFC 7672): before a server is tried, its TLSA records decide
    /// (see [`crate::tls_policy::DaneMode`]); a session at this level has
    /// usable TLSA records, and the server's chain must match one.
    Dane,
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
            Level::Dane => "dane",
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

/// `[tls] dane_insecure_mx_policy` (Postfix's
/// `smtp_tls_dane_insecure_mx_policy`): what "dane" does for an MX host
/// whose MX RRset is not DNSSEC-validated but whose own records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InsecureMxPolicy {
    /// Use the host's TLSA records anyway ("half-dane": enforced, logged as
    /// Trusted, never Verified). Postfix 3.12's default.
    #[default]
    Dane,
    /// TLS without authentication.
    Encrypt,
    /// Opportunistic TLS, as for a destination without DNSSEC.
    May,
}

impl InsecureMxPolicy {
    /// The written value: "dane", "encrypt" or "may" (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "dane" => Some(Self::Dane),
            "encrypt" => Some(Self::Encrypt),
            "may" => Some(Self::May),
            _ => None,
        }
    }
}

/// A security level as written (`tls.security_level`, a policy entry's
/// `level`): the levels of [`Level`] and the DANE levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityLevel {
    None,
    May,
    Encrypt,
    Fingerprint,
    Verify,
    Secure,
    Dane,
    DaneOnly,
}

/// Every written level, in the order error messages list them.
const SECURITY_LEVELS: [(&str, SecurityLevel); 8] = [
    ("none", SecurityLevel::None),
    ("may", SecurityLevel::May),
    ("encrypt", SecurityLevel::Encrypt),
    ("fingerprint", SecurityLevel::Fingerprint),
    ("verify", SecurityLevel::Verify),
    ("secure", SecurityLevel::Secure),
    ("dane", SecurityLevel::Dane),
    ("dane-only", SecurityLevel::DaneOnly),
];

impl SecurityLevel {
    /// The level's name as the documentation writes it.
    pub fn name(self) -> &'static str {
        SECURITY_LEVELS
            .iter()
            .find(|(_, level)| *level == self)
            .map_or("none", |(name, _)| name)
    }

    /// The level of a destination's policy: "dane" and "dane-only" are
    /// [`Level::Dane`], decided per server from its TLSA records.
    pub fn effective(self) -> Level {
        match self {
            SecurityLevel::None => Level::None,
            SecurityLevel::May => Level::May,
            SecurityLevel::Encrypt => Level::Encrypt,
            SecurityLevel::Fingerprint => Level::Fingerprint,
            SecurityLevel::Verify => Level::Verify,
            SecurityLevel::Secure => Level::Secure,
            SecurityLevel::Dane | SecurityLevel::DaneOnly => Level::Dane,
        }
    }
}

impl FromStr for SecurityLevel {
    type Err = String;

    /// Any case, surrounding blanks ignored (Postfix's level names are
    /// case-insensitive).  The error is the configuration's message.
    fn from_str(text: &str) -> Result<Self, String> {
        let word = text.trim();
        SECURITY_LEVELS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|(_, level)| *level)
            .ok_or_else(|| {
                let names: Vec<&str> = SECURITY_LEVELS.iter().map(|(name, _)| *name).collect();
                format!(
                    "invalid value {text:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for SecurityLevel {
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

impl FromStr for MatchRule {
    type Err = ();

    /// One rule: "hostname", "nexthop", "dot-nexthop" (any case) or a
    /// domain name, ".domain" for its subdomains (a trailing dot is
    /// dropped).
    fn from_str(item: &str) -> Result<Self, ()> {
        Ok(match item.to_ascii_lowercase().as_str() {
            "hostname" => MatchRule::Hostname,
            "nexthop" => MatchRule::Nexthop,
            "dot-nexthop" => MatchRule::DotNexthop,
            name => {
                let bare = name.strip_prefix('.').unwrap_or(name);
                let bare = bare.strip_suffix('.').unwrap_or(bare);
                if !valid_match_name(bare) {
                    return Err(());
                }
                let dot = if name.starts_with('.') { "." } else { "" };
                MatchRule::Name(format!("{dot}{bare}"))
            }
        })
    }
}

/// Parses a match list: each element may hold several rules separated by
/// commas, colons or blanks, as in Postfix.  Duplicates are dropped.
pub fn parse_match_rules(items: &[String]) -> Result<Vec<MatchRule>, PolicyError> {
    let mut rules = Vec::new();
    for item in items
        .iter()
        .flat_map(|item| list_items(item, TLS_LIST_SEPARATORS))
    {
        let rule = item.parse::<MatchRule>().map_err(|()| {
            PolicyError(format!(
                "invalid certificate match rule {item:?}, expected hostname, \
                 nexthop, dot-nexthop or a domain name"
            ))
        })?;
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Ok(rules)
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

impl FromStr for Digest {
    type Err = PolicyError;

    /// Any case, surrounding blanks ignored.
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "sha1" => Ok(Digest::Sha1),
            "sha256" => Ok(Digest::Sha256),
            "sha512" => Ok(Digest::Sha512),
            other => Err(PolicyError(format!(
                "invalid fingerprint digest {other:?}, expected sha256, sha512 or sha1"
            ))),
        }
    }
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

impl ServerName {
    /// "" or "hostname", "nexthop" (any case), else a fixed name.
    pub fn parse(text: &str) -> ServerName {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("hostname") {
            ServerName::Hostname
        } else if text.eq_ignore_ascii_case("nexthop") {
            ServerName::Nexthop
        } else {
            ServerName::Fixed(text.to_string())
        }
    }
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

/// The protocol names Postfix knows, in order; index 0 and 1 (SSLv2, SSLv3)
/// are never enabled.
const PROTOCOLS: [&str; 6] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const TLS_VERSIONS: [TlsVersion; 4] = [
    TlsVersion::Tls1_0,
    TlsVersion::Tls1_1,
    TlsVersion::Tls1_2,
    TlsVersion::Tls1_3,
];

/// What one item of a protocol list says about the version at
/// `PROTOCOLS[index]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProtocolItem {
    /// ">=name"
    AtLeast(usize),
    /// "<=name"
    AtMost(usize),
    /// "!name"
    Not(usize),
    /// "name": only the named versions.
    Only(usize),
}

/// Parses one item of a protocol list.  `exact_case`: the name must be
/// written as Postfix writes it ("TLSv1.2"); otherwise any case.  The error
/// is the unknown name.
pub(super) fn protocol_item(item: &str, exact_case: bool) -> Result<ProtocolItem, &str> {
    let (make, name): (fn(usize) -> ProtocolItem, &str) =
        if let Some(name) = item.strip_prefix(">=") {
            (ProtocolItem::AtLeast, name)
        } else if let Some(name) = item.strip_prefix("<=") {
            (ProtocolItem::AtMost, name)
        } else if let Some(name) = item.strip_prefix('!') {
            (ProtocolItem::Not, name)
        } else {
            (ProtocolItem::Only, item)
        };
    PROTOCOLS
        .iter()
        .position(|known| {
            if exact_case {
                *known == name
            } else {
                known.eq_ignore_ascii_case(name)
            }
        })
        .map(make)
        .ok_or(name)
}

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
    if list_items(text, TLS_LIST_SEPARATORS).next().is_none() {
        return Ok((TlsVersion::Tls1_2, None));
    }
    let mut allowed = [false, false, true, true, true, true];
    let mut included = [false; 6];
    let mut any_included = false;
    for item in list_items(text, TLS_LIST_SEPARATORS) {
        let parsed = protocol_item(item, false).map_err(|name| {
            bad(format!(
                "unknown protocol {name:?}, expected e.g. \">=TLSv1.2\" or \"!SSLv3, !TLSv1\""
            ))
        })?;
        match parsed {
            ProtocolItem::AtLeast(min) => {
                allowed.iter_mut().take(min).for_each(|on| *on = false);
            }
            ProtocolItem::AtMost(max) => {
                allowed.iter_mut().skip(max + 1).for_each(|on| *on = false);
            }
            ProtocolItem::Not(index) => {
                if let Some(on) = allowed.get_mut(index) {
                    *on = false;
                }
            }
            ProtocolItem::Only(index) => {
                if let Some(on) = included.get_mut(index) {
                    *on = true;
                }
                any_included = true;
            }
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
