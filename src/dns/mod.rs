//! DNS for mail routing: the lookup vocabulary shared by the stub resolver
//! ([`stub`]) and the MX list builder (`mxlist.rs`).
//!
//! [`DnsLookup`] is the seam: the real implementation is the synchronous,
//! cached stub resolver; tests inject fakes. Errors are classified the way
//! Postfix's dns_lookup() does (NOTFOUND, RETRY, FAIL, INVAL), because the
//! DSN a recipient gets depends on that class.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub mod stub;

/// One MX record. `exchange` is the lower-case host name without the
/// trailing dot; the null MX (`MX 0 .`) has an empty exchange.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

impl MxRecord {
    /// RFC 7505 null MX.
    pub fn is_null(&self) -> bool {
        self.exchange.is_empty()
    }
}

/// A successful answer: the records (never empty; an empty answer is
/// [`DnsErrorKind::NoData`]), and whether the resolver vouched for them
/// (the AD bit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    pub records: Vec<T>,
    pub authenticated: bool,
    /// The name at the end of a CNAME chain the answer followed (lower
    /// case, no trailing dot); `None` when the records are at the name
    /// asked for. DANE looks for TLSA records there first.
    pub canonical: Option<String>,
}

/// How a lookup failed, in Postfix's classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsErrorKind {
    /// NXDOMAIN: the name does not exist (Postfix DNS_NOTFOUND, "Host not found").
    NotFound,
    /// The name exists but has no record of this type (DNS_NOTFOUND,
    /// "Host found but no data record of type X").
    NoData,
    /// Temporary: SERVFAIL, timeout, no server reachable (DNS_RETRY,
    /// "Host not found, try again").
    Retry,
    /// Permanent: REFUSED/FORMERR/NOTIMP from every server, or an unusable
    /// reply (DNS_FAIL, "Non-recoverable error").
    Fail,
    /// The name itself is not valid (DNS_INVAL).
    Invalid,
}

/// A failed lookup: its class and a Postfix-style reason text
/// ("Host not found", "Host not found, try again", ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsError {
    pub kind: DnsErrorKind,
    pub reason: String,
}

impl DnsError {
    pub fn new(kind: DnsErrorKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    pub fn is_soft(&self) -> bool {
        self.kind == DnsErrorKind::Retry
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DnsError {}

/// Record types mail routing asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryType {
    Mx,
    A,
    Aaaa,
    /// TLSA (RFC 6698), for DANE (`_25._tcp.<host>`).
    Tlsa,
    /// TXT, for MTA-STS (`_mta-sts.<domain>`) and TLS-RPT
    /// (`_smtp._tls.<domain>`).
    Txt,
}

impl QueryType {
    /// The name Postfix prints in "type=X".
    pub fn name(self) -> &'static str {
        match self {
            QueryType::Mx => "MX",
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Tlsa => "TLSA",
            QueryType::Txt => "TXT",
        }
    }
}

/// Synchronous DNS lookups; names are absolute (no search list), given
/// without the trailing dot, and may be U-labels (converted to A-labels).
pub trait DnsLookup: Send + Sync {
    fn mx(&self, name: &str) -> Result<Answer<MxRecord>, DnsError>;
    fn a(&self, name: &str) -> Result<Answer<Ipv4Addr>, DnsError>;
    fn aaaa(&self, name: &str) -> Result<Answer<Ipv6Addr>, DnsError>;
    /// TLSA records of `name` (e.g. `_25._tcp.mx.example.com`), with the
    /// AD bit. Lookups that do not know TLSA answer Retry.
    fn tlsa(&self, _name: &str) -> Result<Answer<crate::dane::Tlsa>, DnsError> {
        Err(DnsError::new(
            DnsErrorKind::Retry,
            "TLSA lookups are not supported by this resolver",
        ))
    }
    /// TXT records of `name`, each record's character-strings joined into
    /// one text, with the AD bit. Lookups that do not know TXT answer Retry.
    fn txt(&self, _name: &str) -> Result<Answer<String>, DnsError> {
        Err(DnsError::new(
            DnsErrorKind::Retry,
            "TXT lookups are not supported by this resolver",
        ))
    }
}
