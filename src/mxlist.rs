//! Server address lists for one destination (Postfix's `smtp_addr.c`):
//! DNS answers + our own addresses + limits → ordered [`Candidate`]s.
//!
//! Owns: the MX lookup of an unbracketed SMTP domain ([`domain_route`]: null
//! MX, implicit MX, MX-host address lookups, the "I am an MX" cut and mail
//! loop detection) and the plain host lookup of `[host]`, LMTP and
//! DNS-disabled destinations ([`host_route`]), then the ordering Postfix
//! applies to every list: shuffle (injected RNG), stable sort by preference
//! (and address family when one is preferred), IPv4/IPv6 balancing within
//! `smtp_mx_address_limit`. Pure logic: DNS comes in through [`DnsLookup`],
//! nothing here opens a socket, and the address limit itself is enforced by
//! the caller while connecting.
//!
//! Also owns the routing vocabulary the rest of the crate speaks: a [`Route`]
//! of [`Candidate`]s, or a [`RouteError`].
//!
//! Error contract: every failure is a [`RouteError`], whose
//! [`RouteError::dsn`] is Postfix's words and code — 4.4.4 no network
//! protocol enabled; 5.1.0 null MX; 4.4.3 / 5.4.3 / 5.4.4 name service
//! errors (4.4.4 when a hard error follows a soft one, forced to class 4 by
//! `smtp_defer_if_no_mx_address_found`); 5.4.6 mail loops back to myself,
//! 4.4.4 unable to find primary relay. [`RouteError::is_loop`] and
//! [`RouteError::makes_nexthop_final`] tell the caller when fallback relays
//! must not be tried. Never panics.

use std::fmt;
use std::net::IpAddr;

use log::{debug, warn};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::dns::{DnsError, DnsErrorKind, DnsLookup, MxRecord, QueryType};
use crate::dsn::{self, Dsn, StatusCode};

/// Postfix's `var_dns_rr_list_limit`: no address list grows beyond this,
/// and at most this many MX records of an answer are considered.
pub const RR_LIST_LIMIT: usize = 100;

/// One server address to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Host name for diagnostics and TLS (the IP itself for a literal).
    pub host: String,
    pub addr: IpAddr,
    /// MX preference (0 for literals and implicit MX).
    pub preference: u32,
    /// `host` is an IP literal (the destination's, or an MX exchange
    /// written as one), not a name: TLS then checks no host name.
    pub host_is_ip: bool,
    /// The address came from a DNSSEC-validated answer (the AD bit of a
    /// trusted resolver): DANE may look up the host's TLSA records.
    pub addr_secure: bool,
    /// The host name is an alias: the end of its CNAME chain (DANE looks
    /// for TLSA records there first, RFC 7672 section 2.2.2).
    pub canonical: Option<String>,
}

/// The servers of one destination, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub candidates: Vec<Candidate>,
    /// This host is an MX for the destination (the list was cut at our own
    /// preference): the destination is final, fallback relays are not used.
    pub i_am_mx: bool,
    /// Preference of the best MX before cutting.
    pub best_preference: u32,
    /// Whether the MX RRset was DNSSEC-validated; `None` without an MX
    /// lookup (a `[host]`, an IP literal, no MX records).
    pub mx_secure: Option<bool>,
}

/// Why a destination has no server to try. [`RouteError::dsn`] gives the
/// status and text Postfix reports for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// `inet_protocols` enables no address family (4.4.4).
    ProtocolsDisabled,
    /// The destination is an IP literal of a disabled family (4.4.4).
    FamilyDisabled { host: String, family: &'static str },
    /// The domain publishes a null MX (5.1.0).
    NullMx { domain: String },
    /// A name service failure, with the status Postfix gives it (4.4.3,
    /// 5.4.3, 4.4.4 or 5.4.4, or class 4 by
    /// `smtp_defer_if_no_mx_address_found`) and its text.
    NameService { status: StatusCode, text: String },
    /// We are the best MX, or the host is one of our own addresses (5.4.6).
    MailLoop { name: String },
    /// We are a backup MX and no better MX has an address (4.4.4).
    NoPrimaryRelay { domain: String },
    /// No address and no lookup error: a broken invariant (4.3.0).
    NoAddress { name: String },
    /// A name that needs DNS, and no resolver is configured (4.3.5).
    NoResolver { name: String },
}

impl RouteError {
    /// The enhanced status code Postfix gives this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ProtocolsDisabled | Self::FamilyDisabled { .. } | Self::NoPrimaryRelay { .. } => {
                dsn::NO_ROUTE
            }
            Self::NullMx { .. } => dsn::NULL_MX,
            Self::NameService { status, .. } => *status,
            Self::MailLoop { .. } => dsn::MAIL_LOOP,
            Self::NoAddress { .. } => dsn::SYSTEM_TROUBLE,
            Self::NoResolver { .. } => dsn::CONFIG_PROBLEM,
        }
    }

    /// The delivery status for the recipients.
    pub fn dsn(&self) -> Dsn {
        Dsn::new(self.status(), self.to_string())
    }

    /// Mail loops back to myself (Postfix's SMTP_HAS_LOOP_DSN).
    pub fn is_loop(&self) -> bool {
        matches!(self, Self::MailLoop { .. })
    }

    /// True when Postfix makes the current next-hop final after this error
    /// (no fallback relays): a mail loop, or "unable to find primary relay"
    /// (we are a backup MX, so `found_myself` was set even though the list
    /// came out empty).
    pub fn makes_nexthop_final(&self) -> bool {
        matches!(self, Self::MailLoop { .. } | Self::NoPrimaryRelay { .. })
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProtocolsDisabled => f.write_str("all network protocols are disabled"),
            Self::FamilyDisabled { host, family } => {
                write!(f, "network protocol {family} is disabled for {host}")
            }
            Self::NullMx { domain } => write!(f, "Domain {domain} does not accept mail (nullMX)"),
            Self::NameService { text, .. } => f.write_str(text),
            Self::MailLoop { name } => write!(f, "mail for {name} loops back to myself"),
            Self::NoPrimaryRelay { domain } => {
                write!(f, "unable to find primary relay for {domain}")
            }
            Self::NoAddress { name } => write!(
                f,
                "internal error: no address and no lookup error for {name}"
            ),
            Self::NoResolver { name } => {
                write!(f, "cannot resolve {name}: no DNS resolver is configured")
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// `smtp_address_preference`: which family goes first within one preference.
pub use crate::config::AddressPreference;

/// The Postfix parameters that shape an address list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxSettings {
    /// `inet_protocols` includes ipv4.
    pub ipv4: bool,
    /// `inet_protocols` includes ipv6.
    pub ipv6: bool,
    /// `smtp_address_preference` (any).
    pub address_preference: AddressPreference,
    /// `smtp_randomize_addresses` (yes).
    pub randomize_addresses: bool,
    /// `smtp_balance_inet_protocols` (yes).
    pub balance_inet_protocols: bool,
    /// `smtp_mx_address_limit` (5; 0 = unlimited). Used here for balancing
    /// only; the caller enforces the limit while connecting.
    pub mx_address_limit: usize,
    /// `ignore_mx_lookup_error` (no).
    pub ignore_mx_lookup_error: bool,
    /// `smtp_defer_if_no_mx_address_found` (no).
    pub defer_if_no_mx_address_found: bool,
    /// The destination port is 25 (Postfix's SMTP_MISC_FLAG_LOOP_DETECT).
    pub loop_detect: bool,
    /// Local interface addresses (`inet_interfaces`) and `proxy_interfaces`.
    pub own_addresses: Vec<IpAddr>,
}

impl Default for MxSettings {
    /// Postfix's defaults, port 25, no known own addresses.
    fn default() -> Self {
        Self {
            ipv4: true,
            ipv6: true,
            address_preference: AddressPreference::Any,
            randomize_addresses: true,
            balance_inet_protocols: true,
            mx_address_limit: 5,
            ignore_mx_lookup_error: false,
            defer_if_no_mx_address_found: false,
            loop_detect: true,
            own_addresses: Vec::new(),
        }
    }
}

/// Unbracketed SMTP domain: MX lookup with Postfix semantics
/// (`smtp_domain_addr`).
pub fn domain_route<R: Rng>(
    domain: &str,
    dns: &dyn DnsLookup,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    check_protocols(settings)?;
    let (mut mx, mx_secure) = match dns.mx(domain) {
        Ok(answer) if answer.records.is_empty() => {
            // Cannot happen (an empty answer is NoData); treat it as one.
            return lookup_host(domain, dns, settings, rng);
        }
        Ok(answer) => (answer.records, answer.authenticated),
        Err(err) => return mx_lookup_failed(domain, &err, dns, settings, rng),
    };
    // Postfix's dns_rr_append(): at most var_dns_rr_list_limit records of
    // the answer, the first ones received, are kept; sorting comes after.
    if mx.len() > RR_LIST_LIMIT {
        warn!(
            "DNS record count limit ({RR_LIST_LIMIT}) exceeded -- dropping excess record(s) \
             after qname={domain} qtype=MX"
        );
        mx.truncate(RR_LIST_LIMIT);
    }
    if mx.iter().any(MxRecord::is_null) {
        return Err(RouteError::NullMx {
            domain: domain.to_owned(),
        });
    }
    let mut route = mx_route(domain, mx, dns, settings, rng)?;
    route.mx_secure = Some(mx_secure);
    Ok(route)
}

/// `[host]`, LMTP inet host, or DNS support disabled: A/AAAA only
/// (preference 0), with loop detection when `settings.loop_detect`
/// (`smtp_host_addr`).
pub fn host_route<R: Rng>(
    host: &str,
    dns: &dyn DnsLookup,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    check_protocols(settings)?;
    lookup_host(host, dns, settings, rng)
}

/// A destination given as an IP literal (`[192.0.2.1]`, or an LMTP inet
/// address): the address itself, with the family and loop checks of
/// [`host_route`]; no lookup, and the address stays an [`IpAddr`].
pub fn literal_route<R: Rng>(
    addr: IpAddr,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    check_protocols(settings)?;
    literal(crate::text::ip_string(addr), addr, settings, rng)
}

/// Refuses to look anything up when `inet_protocols` enables no family.
fn check_protocols(settings: &MxSettings) -> Result<(), RouteError> {
    if settings.ipv4 || settings.ipv6 {
        Ok(())
    } else {
        Err(RouteError::ProtocolsDisabled)
    }
}

/// The MX query itself failed: NOTFOUND means implicit MX; other errors
/// are final unless `ignore_mx_lookup_error`, which falls back to a host
/// lookup for RETRY, FAIL and INVAL alike (as smtp_addr.c does).
fn mx_lookup_failed<R: Rng>(
    domain: &str,
    err: &DnsError,
    dns: &dyn DnsLookup,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    let status = match err.kind {
        DnsErrorKind::NotFound | DnsErrorKind::NoData => {
            return lookup_host(domain, dns, settings, rng);
        }
        DnsErrorKind::Retry => dsn::DNS_RETRY,
        DnsErrorKind::Fail => dsn::DNS_FAIL,
        DnsErrorKind::Invalid => dsn::HOST_NOT_FOUND,
    };
    if settings.ignore_mx_lookup_error {
        debug!("{domain}: MX lookup failed ({err}), ignored: looking up the host");
        return lookup_host(domain, dns, settings, rng);
    }
    Err(RouteError::NameService {
        status,
        text: name_service_text(domain, QueryType::Mx, &err.reason),
    })
}

/// MX records found (at most [`RR_LIST_LIMIT`]): look up every exchanger
/// in preference order, cut the list at ourselves, then order it.
fn mx_route<R: Rng>(
    domain: &str,
    mut mx: Vec<MxRecord>,
    dns: &dyn DnsLookup,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    mx.sort_by_key(|rr| rr.preference);
    let best_mx_pref = mx.first().map_or(u32::MAX, |rr| u32::from(rr.preference));
    let mut list = AddrList::default();
    let mut trouble = LookupTrouble::default();
    for rr in &mx {
        if list.truncated {
            // The list is full: further addresses would be dropped anyway.
            break;
        }
        addr_one(
            &mut list,
            &rr.exchange,
            u32::from(rr.preference),
            dns,
            settings,
            &mut trouble,
        );
    }
    if list.items.is_empty() {
        let mut error = trouble.into_error(domain);
        if settings.defer_if_no_mx_address_found
            && let RouteError::NameService { status, .. } = &mut error
            && status.is_hard()
        {
            *status = status.soft();
        }
        warn!("no MX host for {domain} has a valid address record");
        return Err(error);
    }
    let mut candidates = list.items;
    let mut i_am_mx = false;
    if settings.loop_detect
        && let Some(self_pref) = find_self(&candidates, &settings.own_addresses)
    {
        debug!("{domain}: found myself at preference {self_pref}");
        i_am_mx = true;
        if let Some(cut) = candidates.iter().position(|c| c.preference == self_pref) {
            candidates.truncate(cut);
        }
        if candidates.is_empty() {
            return Err(if self_pref == best_mx_pref {
                RouteError::MailLoop {
                    name: domain.to_owned(),
                }
            } else {
                RouteError::NoPrimaryRelay {
                    domain: domain.to_owned(),
                }
            });
        }
    }
    let candidates = order(candidates, settings, rng);
    let best_preference = candidates.first().map_or(0, |c| c.preference);
    Ok(Route {
        mx_secure: None,
        candidates,
        i_am_mx,
        best_preference,
    })
}

/// Host lookup (preference 0), loop check, ordering; an IP literal
/// written as text is its own address.
fn lookup_host<R: Rng>(
    host: &str,
    dns: &dyn DnsLookup,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    if let Ok(addr) = host.parse::<IpAddr>() {
        return literal(host.to_owned(), addr, settings, rng);
    }
    let mut list = AddrList::default();
    let mut trouble = LookupTrouble::default();
    addr_one(&mut list, host, 0, dns, settings, &mut trouble);
    if list.items.is_empty() {
        return Err(trouble.into_error(host));
    }
    if settings.loop_detect && find_self(&list.items, &settings.own_addresses).is_some() {
        return Err(RouteError::MailLoop {
            name: host.to_owned(),
        });
    }
    Ok(Route {
        mx_secure: None,
        candidates: order(list.items, settings, rng),
        i_am_mx: false,
        best_preference: 0,
    })
}

/// The route of an IP literal `host` (its text as written): the family
/// check, then the loop check.
fn literal<R: Rng>(
    host: String,
    addr: IpAddr,
    settings: &MxSettings,
    rng: &mut R,
) -> Result<Route, RouteError> {
    if !family_enabled(addr, settings) {
        // Decision: Postfix would try the literal as a DNS name and bounce
        // with 5.4.4 "Name service error for H: invalid host or domain
        // name"; a disabled family is a local setting, so we defer.
        return Err(RouteError::FamilyDisabled {
            host,
            family: family_name(addr),
        });
    }
    if settings.loop_detect && settings.own_addresses.contains(&addr) {
        return Err(RouteError::MailLoop { name: host });
    }
    let candidates = vec![Candidate {
        canonical: None,
        addr_secure: false,
        host,
        addr,
        preference: 0,
        host_is_ip: true,
    }];
    Ok(Route {
        mx_secure: None,
        candidates: order(candidates, settings, rng),
        i_am_mx: false,
        best_preference: 0,
    })
}

/// Postfix's `smtp_addr_one`: append the addresses of one host (an IP
/// literal is its own address), or remember why there are none.
fn addr_one(
    list: &mut AddrList,
    host: &str,
    preference: u32,
    dns: &dyn DnsLookup,
    settings: &MxSettings,
    trouble: &mut LookupTrouble,
) {
    if let Ok(addr) = host.parse::<IpAddr>() {
        if family_enabled(addr, settings) {
            list.push_literal(host, addr, preference);
        } else {
            // Postfix passes the literal to dns_lookup(), which refuses
            // numeric names as NOTFOUND without asking a server.
            trouble.record(Failure {
                kind: DnsErrorKind::NotFound,
                text: format!("Name service error for {host}: invalid host or domain name"),
            });
        }
        return;
    }
    let mut found = false;
    let mut failure: Option<Failure> = None;
    if settings.ipv4 {
        match dns.a(host) {
            Ok(answer) if !answer.records.is_empty() => {
                found = true;
                for addr in answer.records {
                    list.push(
                        host,
                        IpAddr::V4(addr),
                        preference,
                        QueryType::A,
                        (answer.authenticated, answer.canonical.as_deref()),
                    );
                }
            }
            Ok(_) => Failure::no_data(host, QueryType::A).keep_if_worse(&mut failure),
            Err(err) => Failure::from_dns(host, QueryType::A, &err).keep_if_worse(&mut failure),
        }
    }
    if settings.ipv6 {
        match dns.aaaa(host) {
            Ok(answer) if !answer.records.is_empty() => {
                found = true;
                for addr in answer.records {
                    list.push(
                        host,
                        IpAddr::V6(addr),
                        preference,
                        QueryType::Aaaa,
                        (answer.authenticated, answer.canonical.as_deref()),
                    );
                }
            }
            Ok(_) => Failure::no_data(host, QueryType::Aaaa).keep_if_worse(&mut failure),
            Err(err) => {
                Failure::from_dns(host, QueryType::Aaaa, &err).keep_if_worse(&mut failure);
            }
        }
    }
    if !found && let Some(failure) = failure {
        trouble.record(failure);
    }
}

/// The preference of the first of our own addresses in the list (the list
/// is in MX order here, so that is the best one).
fn find_self(candidates: &[Candidate], own: &[IpAddr]) -> Option<u32> {
    candidates
        .iter()
        .find(|c| own.contains(&c.addr))
        .map(|c| c.preference)
}

/// Shuffle, sort by preference (and family), balance the families.
fn order<R: Rng>(mut list: Vec<Candidate>, settings: &MxSettings, rng: &mut R) -> Vec<Candidate> {
    if list.len() < 2 {
        return list;
    }
    if settings.randomize_addresses {
        list.shuffle(rng);
    }
    let preference = settings.address_preference;
    list.sort_by_key(|c| (c.preference, family_rank(c.addr, preference)));
    if settings.balance_inet_protocols && settings.mx_address_limit > 0 {
        list = balance_inet_protocols(list, settings.mx_address_limit);
    }
    list
}

/// Postfix's `smtp_balance_inet_proto`: when both families are present and
/// the list is longer than `limit`, keep the first addresses of each family
/// so that neither crowds the other out; the relative order is unchanged.
fn balance_inet_protocols(list: Vec<Candidate>, limit: usize) -> Vec<Candidate> {
    let v4_count = list.iter().filter(|c| c.addr.is_ipv4()).count();
    let v6_count = list.len() - v4_count;
    if v4_count == 0 || v6_count == 0 || list.len() <= limit {
        return list;
    }
    let half = limit / 2;
    let (mut v4_keep, mut v6_keep) = if v6_count <= half {
        (limit.saturating_sub(v6_count), v6_count)
    } else if v4_count <= half {
        (v4_count, limit.saturating_sub(v4_count))
    } else {
        let first_is_v4 = list.first().is_some_and(|c| c.addr.is_ipv4());
        let v4 = limit.saturating_add(usize::from(first_is_v4)) / 2;
        (v4, limit.saturating_sub(v4))
    };
    debug!("balancing address families: keeping {v4_keep} IPv4, {v6_keep} IPv6");
    list.into_iter()
        .filter(|c| {
            let left = if c.addr.is_ipv4() {
                &mut v4_keep
            } else {
                &mut v6_keep
            };
            if *left > 0 {
                *left -= 1;
                true
            } else {
                false
            }
        })
        .collect()
}

/// Sort key within one preference: 0 goes first.
fn family_rank(addr: IpAddr, preference: AddressPreference) -> u8 {
    match (preference, addr) {
        (AddressPreference::Any, _) => 0,
        (AddressPreference::Ipv4, IpAddr::V4(_)) | (AddressPreference::Ipv6, IpAddr::V6(_)) => 0,
        (AddressPreference::Ipv4, IpAddr::V6(_)) | (AddressPreference::Ipv6, IpAddr::V4(_)) => 1,
    }
}

fn family_enabled(addr: IpAddr, settings: &MxSettings) -> bool {
    match addr {
        IpAddr::V4(_) => settings.ipv4,
        IpAddr::V6(_) => settings.ipv6,
    }
}

fn family_name(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn qtype_of(addr: IpAddr) -> QueryType {
    match addr {
        IpAddr::V4(_) => QueryType::A,
        IpAddr::V6(_) => QueryType::Aaaa,
    }
}

/// What dns_lookup() writes into Postfix's `why` buffer.
fn name_service_text(name: &str, qtype: QueryType, reason: &str) -> String {
    format!(
        "Host or domain name not found. Name service error for name={name} type={}: {reason}",
        qtype.name()
    )
}

/// An address list capped at [`RR_LIST_LIMIT`] records (Postfix's
/// dns_rr_append()): excess records are dropped with one warning.
#[derive(Default)]
struct AddrList {
    items: Vec<Candidate>,
    truncated: bool,
}

impl AddrList {
    /// A looked-up address; `(secure, canonical)` from its answer.
    fn push(
        &mut self,
        host: &str,
        addr: IpAddr,
        preference: u32,
        qtype: QueryType,
        (secure, canonical): (bool, Option<&str>),
    ) {
        let before = self.items.len();
        self.push_candidate(host, addr, preference, qtype, false, secure);
        if self.items.len() > before
            && let Some(last) = self.items.last_mut()
        {
            last.canonical = canonical.map(str::to_owned);
        }
    }

    /// An MX exchange written as an IP literal: its own address.
    fn push_literal(&mut self, host: &str, addr: IpAddr, preference: u32) {
        self.push_candidate(host, addr, preference, qtype_of(addr), true, false);
    }

    fn push_candidate(
        &mut self,
        host: &str,
        addr: IpAddr,
        preference: u32,
        qtype: QueryType,
        host_is_ip: bool,
        addr_secure: bool,
    ) {
        if self.items.len() >= RR_LIST_LIMIT {
            if !self.truncated {
                warn!(
                    "DNS record count limit ({RR_LIST_LIMIT}) exceeded -- dropping excess \
                     record(s) after qname={host} qtype={}",
                    qtype.name()
                );
                self.truncated = true;
            }
            return;
        }
        self.items.push(Candidate {
            host: host.to_owned(),
            addr,
            preference,
            host_is_ip,
            addr_secure,
            canonical: None,
        });
    }
}

/// One host's failed address lookup: its class and Postfix's text.
struct Failure {
    kind: DnsErrorKind,
    text: String,
}

impl Failure {
    fn from_dns(host: &str, qtype: QueryType, err: &DnsError) -> Self {
        Self {
            kind: err.kind,
            text: name_service_text(host, qtype, &err.reason),
        }
    }

    /// An empty successful answer (cannot happen: the resolver reports
    /// NoData instead) counts as NoData.
    fn no_data(host: &str, qtype: QueryType) -> Self {
        Self {
            kind: DnsErrorKind::NoData,
            text: name_service_text(
                host,
                qtype,
                "Host found but no data record of requested type",
            ),
        }
    }

    /// dns_lookup_rv() precedence when A and AAAA both fail: RETRY >
    /// INVAL > FAIL > NOTFOUND; on a tie the later query (AAAA) speaks.
    fn rank(&self) -> u8 {
        match self.kind {
            DnsErrorKind::Retry => 3,
            DnsErrorKind::Invalid => 2,
            DnsErrorKind::Fail => 1,
            DnsErrorKind::NotFound | DnsErrorKind::NoData => 0,
        }
    }

    fn keep_if_worse(self, kept: &mut Option<Failure>) {
        if kept.as_ref().is_none_or(|k| self.rank() >= k.rank()) {
            *kept = Some(self);
        }
    }
}

/// Postfix's `why` buffer across the host lookups of one destination: the
/// text is always the latest failure's; a soft status, once set, keeps
/// later hard failures soft (RETRY 4.4.3; FAIL 5.4.3 or 4.4.3; NOTFOUND
/// and INVAL 5.4.4 or 4.4.4).
#[derive(Default)]
struct LookupTrouble {
    last: Option<(StatusCode, String)>,
}

impl LookupTrouble {
    fn record(&mut self, failure: Failure) {
        let soft = self
            .last
            .as_ref()
            .is_some_and(|(status, _)| status.is_soft());
        let status = match failure.kind {
            DnsErrorKind::Retry => dsn::DNS_RETRY,
            DnsErrorKind::Fail if soft => dsn::DNS_RETRY,
            DnsErrorKind::Fail => dsn::DNS_FAIL,
            DnsErrorKind::NotFound | DnsErrorKind::NoData | DnsErrorKind::Invalid if soft => {
                dsn::NO_ROUTE
            }
            DnsErrorKind::NotFound | DnsErrorKind::NoData | DnsErrorKind::Invalid => {
                dsn::HOST_NOT_FOUND
            }
        };
        self.last = Some((status, failure.text));
    }

    /// The error for "no address found"; an empty record is a broken
    /// invariant and defers.
    fn into_error(self, name: &str) -> RouteError {
        match self.last {
            Some((status, text)) => RouteError::NameService { status, text },
            None => RouteError::NoAddress {
                name: name.to_owned(),
            },
        }
    }
}

/// Happy Eyeballs order (RFC 8305 section 4) of an address list: within
/// each run of consecutive items of equal MX preference, the address
/// families alternate, starting with the family of the run's first item
/// (so `address_preference` and `balance_inet_protocols` decide who
/// starts), each family keeping its own order. Items never move out of
/// their run, so no address goes ahead of a more preferred MX host.
pub fn interleave_families<T>(
    items: Vec<T>,
    preference: impl Fn(&T) -> u32,
    is_ipv6: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    let mut run_pref = None;
    let mut first: std::collections::VecDeque<T> = Default::default();
    let mut other: std::collections::VecDeque<T> = Default::default();
    let mut first_v6 = false;
    let flush = |out: &mut Vec<T>,
                 first: &mut std::collections::VecDeque<T>,
                 other: &mut std::collections::VecDeque<T>| {
        while !first.is_empty() || !other.is_empty() {
            out.extend(first.pop_front());
            out.extend(other.pop_front());
        }
    };
    for item in items {
        let pref = preference(&item);
        if run_pref != Some(pref) {
            flush(&mut out, &mut first, &mut other);
            run_pref = Some(pref);
            first_v6 = is_ipv6(&item);
        }
        if is_ipv6(&item) == first_v6 {
            first.push_back(item);
        } else {
            other.push_back(item);
        }
    }
    flush(&mut out, &mut first, &mut other);
    out
}

#[cfg(test)]
#[path = "mxlist_tests.rs"]
mod tests;
