//! Next-hop (destination) syntax for SMTP and LMTP delivery.
//!
//! Owns the parsing of a delivery request's next-hop string into an ordered
//! list of [`Destination`]s, following the behaviour of Postfix's smtp(8) and
//! lmtp(8) clients:
//!
//! * the string is a list separated by commas, spaces and tabs (empty
//!   elements are ignored); no other control character is accepted
//!   anywhere, in any form (a CR/LF could forge log lines);
//! * SMTP elements: `domain` (MX lookup), `domain:port`, `[host]`,
//!   `[host]:port`, `[addr]`, `[ipv6:addr]` (any case of `ipv6:`), and bare IP
//!   addresses (no MX lookup). No `unix:`/`inet:` prefixes for SMTP;
//! * LMTP: a whole string starting with `unix:` is one socket path (never split);
//!   a whole string starting with `inet:` has that prefix removed before the list
//!   is split; each element may also carry its own `inet:` or `unix:` prefix.
//!   LMTP never looks up MX records;
//! * ports are numbers 1..=65535 or service names (built-in `known_tcp_ports`
//!   table first, then services(5) via [`ServiceLookup`]).
//!
//! It does no DNS and no socket I/O; the only I/O is [`SystemServices`] reading
//! `/etc/services` at lookup time.
//!
//! Error contract: nothing here panics. Every syntax problem is returned as a
//! [`NextHopError`] naming the offending element (or the whole text for an
//! empty or over-long list) and a short reason in Postfix's words; it displays
//! as `bad destination "ELEMENT": REASON`. These are configuration errors:
//! the caller decides the delivery status (Postfix treats them as fatal
//! configuration errors). [`parse_port`] returns just the reason string.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::text::{LIST_SEPARATORS, list_items};

/// Longest next-hop string (and element) accepted, in bytes.
pub const MAX_NEXTHOP_LEN: usize = 4096;

/// Size of `sockaddr_un.sun_path` including the terminating NUL: a UNIX-domain
/// socket path must be strictly shorter than this.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const UNIX_PATH_LIMIT: usize = 108;
/// Size of `sockaddr_un.sun_path` including the terminating NUL: a UNIX-domain
/// socket path must be strictly shorter than this.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const UNIX_PATH_LIMIT: usize = 104;

/// Service names resolved without consulting services(5), like Postfix's
/// default `known_tcp_ports`.
pub const KNOWN_TCP_PORTS: &[(&str, u16)] = &[
    ("lmtp", 24),
    ("smtp", 25),
    ("smtps", 465),
    ("submissions", 465),
    ("submission", 587),
];

/// Where [`SystemServices`] reads service definitions.
const SERVICES_PATH: &str = "/etc/services";

/// Upper bound on how much of a services file is read.
const MAX_SERVICES_FILE: u64 = 4 * 1024 * 1024;

const MISSING_HOST: &str = "missing host information";
const MISSING_SERVICE: &str = "missing service information";

/// Which client protocol the next-hop is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Lmtp,
}

/// The host part of an Internet destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A name: for SMTP without brackets it is a mail domain (MX lookup), else
    /// a host name (A/AAAA only). Stored as written minus one trailing dot;
    /// non-ASCII (U-label) names are passed through unconverted.
    Name(String),
    /// An IP address literal.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// The same text as `Display`, without going through `core::fmt`.
    pub fn text(&self) -> String {
        match self {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => crate::text::ip_string(*ip),
        }
    }
}

/// One parsed element of a next-hop list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A TCP destination.
    Inet {
        host: Host,
        port: u16,
        /// True only for an unbracketed SMTP domain name.
        lookup_mx: bool,
        /// the element exactly as written, e.g. "[10.0.0.1]:2525" (without an
        /// LMTP `inet:` prefix, so `inet:h` and `h` share one key)
        text: String,
    },
    /// An LMTP UNIX-domain socket.
    Unix {
        path: PathBuf,
        /// the element as written, including its `unix:` prefix
        text: String,
    },
}

impl Destination {
    /// The element as written (used as the TLS-policy / cache key and in messages).
    #[must_use]
    pub fn text(&self) -> &str {
        match self {
            Destination::Inet { text, .. } | Destination::Unix { text, .. } => text,
        }
    }

    /// Name used in diagnostics before an address is known: the host name or
    /// IP as text, or the path.
    #[must_use]
    pub fn display_host(&self) -> String {
        match self {
            Destination::Inet { host, .. } => host.to_string(),
            Destination::Unix { path, .. } => path.display().to_string(),
        }
    }
}

/// A next-hop syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHopError {
    /// The offending element, or the whole text for an empty or over-long list.
    pub destination: String,
    /// What is wrong with it, e.g. `bad network port: 0`.
    pub reason: String,
}

impl fmt::Display for NextHopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug formatting quotes the text and escapes control characters, so
        // a hostile destination cannot forge log lines.
        write!(f, "bad destination {:?}: {}", self.destination, self.reason)
    }
}

impl std::error::Error for NextHopError {}

/// Resolves TCP service names to port numbers.
pub trait ServiceLookup {
    /// The TCP port for `name` (a service name or alias), if known.
    fn tcp_port(&self, name: &str) -> Option<u16>;
}

/// The real lookup: [`KNOWN_TCP_PORTS`], then `tcp` entries of
/// `/etc/services`, read at call time (missing or unreadable file ⇒ `None`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemServices;

impl ServiceLookup for SystemServices {
    fn tcp_port(&self, name: &str) -> Option<u16> {
        known_tcp_port(name).or_else(|| services_file_port(Path::new(SERVICES_PATH), name))
    }
}

fn known_tcp_port(name: &str) -> Option<u16> {
    KNOWN_TCP_PORTS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, port)| port)
}

/// Looks `name` up in a services(5) file; any read error ⇒ `None`.
fn services_file_port(path: &Path, name: &str) -> Option<u16> {
    let file = File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_SERVICES_FILE).read_to_end(&mut bytes).ok()?;
    parse_services(&String::from_utf8_lossy(&bytes), name)
}

/// Finds the TCP port of service `name` (matching the official name or an
/// alias) in services(5) text: `name port/proto [aliases...] # comment`.
/// The first matching `tcp` entry wins; malformed lines and port 0 are skipped.
pub(crate) fn parse_services(text: &str, name: &str) -> Option<u16> {
    if name.is_empty() {
        return None;
    }
    for line in text.lines() {
        let line = line.split_once('#').map_or(line, |(before, _)| before);
        let mut fields = line.split_ascii_whitespace();
        let (Some(service), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, proto)) = port_proto.split_once('/') else {
            continue;
        };
        if proto != "tcp" {
            continue;
        }
        let Some(port) = parse_decimal_port(port) else {
            continue;
        };
        if service == name || fields.any(|alias| alias == name) {
            return Some(port);
        }
    }
    None
}

/// A non-empty all-digit string with value 1..=65535.
fn parse_decimal_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .bytes()
        .try_fold(0u16, |acc, b| {
            acc.checked_mul(10)?
                .checked_add(u16::from(b.checked_sub(b'0')?))
        })
        .filter(|&port| port != 0)
}

/// Replaces control characters so user text can go into a reason safely.
fn printable(text: &str) -> String {
    crate::logging::printable(text)
}

/// Parses a port number (1..=65535) or a TCP service name (known table first,
/// then `services`).
///
/// # Errors
///
/// `missing service information` for an empty string, `bad network port: N`
/// for 0 or more than 65535, `unknown service: NAME/tcp` for an unknown name.
pub fn parse_port(service: &str, services: &dyn ServiceLookup) -> Result<u16, String> {
    if service.is_empty() {
        return Err(MISSING_SERVICE.to_string());
    }
    if service.bytes().all(|b| b.is_ascii_digit()) {
        return parse_decimal_port(service)
            .ok_or_else(|| format!("bad network port: {}", printable(service)));
    }
    match known_tcp_port(service).or_else(|| services.tcp_port(service)) {
        Some(0) => Err(format!("bad network port: {}", printable(service))),
        Some(port) => Ok(port),
        None => Err(format!("unknown service: {}/tcp", printable(service))),
    }
}

fn strip_prefix_ignore_ascii_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// Validates a host or domain name; returns it without one trailing dot.
///
/// Letters, digits, `-` and `_` in ASCII labels; non-ASCII characters (except
/// control and white space) pass through for later IDNA conversion. Length
/// limits (label ≤ 63, name ≤ 255) apply to ASCII labels and all-ASCII names;
/// U-label lengths can only be judged after A-label conversion.
fn parse_host_name(name: &str) -> Result<String, String> {
    let bad = |what: &str| Err(format!("malformed host or domain name: {what}"));
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return bad("empty label");
    }
    if name.is_ascii() && name.len() > 255 {
        return bad("name longer than 255 characters");
    }
    let mut numeric = true;
    for label in name.split('.') {
        if label.is_empty() {
            return bad("empty label");
        }
        if label.is_ascii() && label.len() > 63 {
            return bad("label longer than 63 characters");
        }
        for c in label.chars() {
            let valid = c.is_ascii_alphanumeric()
                || c == '-'
                || c == '_'
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace());
            if !valid {
                return bad("invalid character");
            }
            if !c.is_ascii_digit() {
                numeric = false;
            }
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("misplaced hyphen");
        }
    }
    if numeric {
        return bad("numeric name");
    }
    Ok(name.to_string())
}

/// Checks that a recipient address's domain can serve as its destination
/// (when no next hop is given, the domain becomes the next hop): a domain
/// name or an address literal, never a port, a service or a list. Follows
/// Postfix's trivial-rewrite, which sends any other domain to the error
/// transport ("5.1.3 bad address syntax"):
///
/// * one trailing dot is ignored (not two, and not a domain that is only a dot);
/// * `[...]` must close at the end and hold a dotted-quad IPv4 address (an
///   initial 0 only in 0.0.0.0) or `IPv6:` (any case) and an IPv6 address;
///   mailhop also refuses IPv4 octets with leading zeros, which Postfix
///   accepts but which are ambiguous (octal) to other resolvers;
/// * otherwise a host name as [`parse_host_name`] accepts it (letters,
///   digits, `-`, `_`, U-labels; not all-numeric, so no bare IPv4 address;
///   no `:`, so no port and no bare IPv6 address; no `,` or space, so no list).
///
/// # Errors
///
/// The reason, in Postfix's words where it has them.
pub fn check_recipient_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain".to_string());
    }
    if domain.len() > MAX_NEXTHOP_LEN {
        return Err("domain too long".to_string());
    }
    let Some(rest) = domain.strip_prefix('[') else {
        return parse_host_name(domain).map(|_| ());
    };
    let Some((inner, after)) = rest.split_once(']') else {
        return Err("missing \"]\"".to_string());
    };
    if !after.is_empty() {
        return Err("garbage after \"]\"".to_string());
    }
    if let Some(addr) = strip_prefix_ignore_ascii_case(inner, "ipv6:") {
        return addr
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "malformed IPv6 address".to_string());
    }
    match inner.parse::<std::net::Ipv4Addr>() {
        Ok(ip) if matches!(ip.octets(), [0, ..]) && !ip.is_unspecified() => {
            Err("bad initial octet value".to_string())
        }
        Ok(_) => Ok(()),
        Err(_) if inner.contains(':') => Err("IPv6 address without IPv6: prefix".to_string()),
        Err(_) => Err("malformed IPv4 address".to_string()),
    }
}

/// The inside of `[...]`.
fn parse_bracketed_host(inner: &str) -> Result<Host, String> {
    if inner.is_empty() {
        return Err(MISSING_HOST.to_string());
    }
    if let Some(addr) = strip_prefix_ignore_ascii_case(inner, "ipv6:") {
        return addr
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| "malformed IPv6 address".to_string());
    }
    if let Ok(ip) = inner.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if inner.contains(':') {
        return Err("malformed IPv6 address".to_string());
    }
    parse_host_name(inner).map(Host::Name)
}

/// An unbracketed host: IP address or name.
fn parse_plain_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err(MISSING_HOST.to_string());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    parse_host_name(host).map(Host::Name)
}

/// Parses `host`, `host:port`, `[host]`, `[host]:port` (no prefixes).
/// Returns the host, the port and whether the host was bracketed.
fn parse_inet(
    text: &str,
    default_port: u16,
    services: &dyn ServiceLookup,
) -> Result<(Host, u16, bool), String> {
    let (host, port, bracketed) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err("missing \"]\"".to_string());
        };
        let port = if after.is_empty() {
            None
        } else if let Some(port) = after.strip_prefix(':') {
            Some(port)
        } else {
            return Err("garbage after \"]\"".to_string());
        };
        (parse_bracketed_host(inner)?, port, true)
    } else if let Ok(addr) = text.parse::<Ipv6Addr>() {
        // A bare IPv6 address is all host: its last group is not a port.
        (Host::Ip(IpAddr::V6(addr)), None, false)
    } else if let Some((host, port)) = text.rsplit_once(':') {
        (parse_plain_host(host)?, Some(port), false)
    } else {
        (parse_plain_host(text)?, None, false)
    };
    let port = match port {
        Some(service) => parse_port(service, services)?,
        None if default_port == 0 => return Err("bad network port: 0".to_string()),
        None => default_port,
    };
    Ok((host, port, bracketed))
}

/// Validates a UNIX-domain socket path (relative paths are allowed).
fn parse_unix_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty unix-domain name".to_string());
    }
    if path.contains('\0') {
        return Err("unix-domain name contains a null byte".to_string());
    }
    if path.chars().any(char::is_control) {
        return Err("unix-domain name contains a control character".to_string());
    }
    if path.len() >= UNIX_PATH_LIMIT {
        return Err("unix-domain name too long".to_string());
    }
    Ok(PathBuf::from(path))
}

/// Parses a whole next-hop string into its destination list.
///
/// # Errors
///
/// An empty list (empty or only separators) or a string longer than
/// [`MAX_NEXTHOP_LEN`] is reported against the whole text; otherwise the first
/// bad element is reported as by [`parse_destination`].
pub fn parse_nexthop(
    text: &str,
    protocol: Protocol,
    default_port: u16,
    services: &dyn ServiceLookup,
) -> Result<Vec<Destination>, NextHopError> {
    let whole_error = |reason: &str| NextHopError {
        destination: text.to_string(),
        reason: reason.to_string(),
    };
    if text.len() > MAX_NEXTHOP_LEN {
        return Err(whole_error("destination list too long"));
    }
    // No control character anywhere (it could forge log lines): a tab may
    // only separate the elements of a list; a `unix:` path refuses its own.
    let unix = protocol == Protocol::Lmtp && text.starts_with("unix:");
    if !unix && text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(whole_error("control character in destination list"));
    }
    let list = match protocol {
        Protocol::Lmtp if text.starts_with("unix:") => {
            // Like Postfix: the rest of the string is one path, not a list.
            return parse_destination(text, protocol, default_port, services).map(|d| vec![d]);
        }
        Protocol::Lmtp => text.strip_prefix("inet:").unwrap_or(text),
        Protocol::Smtp => text,
    };
    // Control characters other than TAB are refused above, so Postfix's
    // CHARS_COMMA_SP are the separators that matter here.
    let destinations = list_items(list, LIST_SEPARATORS)
        .map(|element| parse_destination(element, protocol, default_port, services))
        .collect::<Result<Vec<_>, _>>()?;
    if destinations.is_empty() {
        return Err(whole_error("empty destination list"));
    }
    Ok(destinations)
}

/// Parses one element (no list splitting, no `unix:`/`inet:` handling for SMTP).
///
/// # Errors
///
/// Any syntax error in the element, reported against the element as given.
pub fn parse_destination(
    element: &str,
    protocol: Protocol,
    default_port: u16,
    services: &dyn ServiceLookup,
) -> Result<Destination, NextHopError> {
    let error = |reason: String| NextHopError {
        destination: element.to_string(),
        reason,
    };
    if element.len() > MAX_NEXTHOP_LEN {
        return Err(error("destination too long".to_string()));
    }
    if element.is_empty() {
        return Err(error("empty destination".to_string()));
    }
    let inet_text = match protocol {
        Protocol::Lmtp => {
            if let Some(path) = element.strip_prefix("unix:") {
                let path = parse_unix_path(path).map_err(error)?;
                return Ok(Destination::Unix {
                    path,
                    text: element.to_string(),
                });
            }
            element.strip_prefix("inet:").unwrap_or(element)
        }
        Protocol::Smtp => element,
    };
    let (host, port, bracketed) = parse_inet(inet_text, default_port, services).map_err(error)?;
    let lookup_mx = protocol == Protocol::Smtp && !bracketed && matches!(host, Host::Name(_));
    Ok(Destination::Inet {
        host,
        port,
        lookup_mx,
        text: inet_text.to_string(),
    })
}

#[cfg(test)]
#[path = "nexthop_tests.rs"]
mod tests;
