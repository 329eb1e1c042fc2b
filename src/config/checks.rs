//! Checks and parsers of single configuration values (ports, time limits,
//! host names, addresses, lists, TLS policy entries, ...).  A check returns
//! an `Invalid` whose message the configuration error shows unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::text::{LIST_SEPARATORS, TLS_LIST_SEPARATORS, list_items};

use super::error::Invalid;
use super::settings::{AddressPreference, DnsSupport, InetProtocols, LogFormat};
use super::tables::TlsPolicyEntry;
use super::tls::{Digest, MatchRule, SecurityLevel, parse_fingerprint, protocol_item};

pub(super) fn check_port(port: &u16) -> Result<(), Invalid> {
    if *port == 0 {
        return Err(
            String::from("invalid value 0, expected a TCP port number from 1 to 65535").into(),
        );
    }
    Ok(())
}

pub(super) fn check_timeout(timeout: &Duration) -> Result<(), Invalid> {
    if timeout.is_zero() {
        return Err(String::from(
            "invalid value \"0s\": the time limit must be greater than zero \
             (only connect_timeout may be \"0s\")",
        )
        .into());
    }
    Ok(())
}

/// A period or delay that must be positive (no "0s").
pub(super) fn check_period(period: &Duration) -> Result<(), Invalid> {
    if period.is_zero() {
        return Err(String::from("invalid value \"0s\": must be greater than zero").into());
    }
    Ok(())
}

pub(super) fn check_opt_period(period: &Option<Duration>) -> Result<(), Invalid> {
    period.as_ref().map_or(Ok(()), check_period)
}

pub(super) fn check_opt_timeout(timeout: &Option<Duration>) -> Result<(), Invalid> {
    timeout.as_ref().map_or(Ok(()), check_timeout)
}

pub(super) fn check_min_data_rate(rate: &u32) -> Result<(), Invalid> {
    if *rate == 0 {
        return Err(String::from("invalid value 0, expected at least 1 (bytes per second)").into());
    }
    Ok(())
}

pub(super) fn check_opt_min_data_rate(rate: &Option<u32>) -> Result<(), Invalid> {
    rate.as_ref().map_or(Ok(()), check_min_data_rate)
}

pub(super) fn check_line_length_limit(limit: &usize) -> Result<(), Invalid> {
    if *limit != 0 && *limit < 40 {
        return Err(format!("invalid value {limit}, expected 0 (no limit) or at least 40").into());
    }
    Ok(())
}

pub(super) fn check_opt_line_length_limit(limit: &Option<usize>) -> Result<(), Invalid> {
    limit.as_ref().map_or(Ok(()), check_line_length_limit)
}

pub(super) fn check_reply_length_limit(limit: &usize) -> Result<(), Invalid> {
    if *limit < 512 {
        return Err(format!(
            "invalid value {limit}, expected at least 512 (the Postfix minimum of line_length_limit)"
        )
        .into());
    }
    Ok(())
}

pub(super) fn check_helo_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || valid_hostname(name) || valid_address_literal(name) {
        return Ok(());
    }
    let hint = if name.starts_with('[')
        && !name
            .get(1..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("ipv6:"))
    {
        " (write IPv6 address literals as \"[IPv6:2001:db8::1]\")"
    } else {
        ""
    };
    Err(format!(
        "invalid value {name:?}, expected a host name or an address literal \
         such as \"[192.0.2.1]\"{hint}"
    )
    .into())
}

pub(super) fn check_opt_helo_name(name: &Option<String>) -> Result<(), Invalid> {
    name.as_deref().map_or(Ok(()), check_helo_name)
}

pub(super) fn check_bind_address(text: &str) -> Result<(), Invalid> {
    parse_bind_address(text).map(|_| ())
}

pub(super) fn check_bind_address6(text: &str) -> Result<(), Invalid> {
    parse_bind_address6(text).map(|_| ())
}

pub(super) fn check_nameservers(entries: &[String]) -> Result<(), Invalid> {
    for (index, entry) in entries.iter().enumerate() {
        parse_nameserver(entry).map_err(|message| Invalid {
            index: Some(index),
            message,
        })?;
    }
    Ok(())
}

pub(super) fn check_dane_insecure_mx_policy(value: &str) -> Result<(), Invalid> {
    match super::InsecureMxPolicy::parse(value) {
        Some(_) => Ok(()),
        None => Err(Invalid::from(format!(
            "invalid value {value:?}, expected one of dane, encrypt, may"
        ))),
    }
}

pub(super) fn check_trusted_resolvers(entries: &[String]) -> Result<(), Invalid> {
    for (index, entry) in entries.iter().enumerate() {
        entry
            .parse::<super::IpNetwork>()
            .map_err(|message| Invalid {
                index: Some(index),
                message,
            })?;
    }
    Ok(())
}

pub(super) fn check_tls_policy(entries: &[TlsPolicyEntry]) -> Result<(), Invalid> {
    for (index, entry) in entries.iter().enumerate() {
        let at = |message: String| Invalid {
            index: Some(index),
            message,
        };
        if entry.destination.trim().is_empty() {
            return Err(at("destination is empty".into()));
        }
        let level = security_level(&entry.level).map_err(|e| at(format!("level: {e}")))?;
        check_cert_match(&entry.matches).map_err(|e| at(format!("match: {}", e.message)))?;
        check_fingerprints(&entry.fingerprints)
            .map_err(|e| at(format!("fingerprints: {}", e.message)))?;
        if let Some(protocols) = &entry.protocols {
            check_tls_protocols(protocols).map_err(|e| at(format!("protocols: {}", e.message)))?;
        }
        if level == SecurityLevel::Fingerprint && entry.fingerprints.is_empty() {
            return Err(at("level \"fingerprint\" needs a fingerprints list".into()));
        }
    }
    Ok(())
}

/// Each element one rule of the match grammar ([`MatchRule`]), written
/// alone: no list separators, blanks or trailing dot in an element.
pub(super) fn check_cert_match(entries: &[String]) -> Result<(), Invalid> {
    for (index, entry) in entries.iter().enumerate() {
        let alone = list_items(entry, TLS_LIST_SEPARATORS).eq([entry.as_str()]);
        if !alone || entry.ends_with('.') || entry.parse::<MatchRule>().is_err() {
            return Err(Invalid {
                index: Some(index),
                message: format!(
                    "invalid value {entry:?}, expected \"hostname\", \"nexthop\", \"dot-nexthop\" or a domain name"
                ),
            });
        }
    }
    Ok(())
}

/// Each element a fingerprint of the grammar ([`parse_fingerprint`]),
/// without surrounding blanks and of at least 20 bytes (SHA-1).
pub(super) fn check_fingerprints(entries: &[String]) -> Result<(), Invalid> {
    for (index, entry) in entries.iter().enumerate() {
        let good =
            entry.trim() == entry && parse_fingerprint(entry).is_ok_and(|bytes| bytes.len() >= 20);
        if !good {
            return Err(Invalid {
                index: Some(index),
                message: format!(
                    "invalid fingerprint {entry:?}, expected hex bytes such as \"AB:CD:...\""
                ),
            });
        }
    }
    Ok(())
}

/// A [`Digest`] name, in lower case.
pub(super) fn check_fingerprint_digest(value: &str) -> Result<(), Invalid> {
    match value.parse::<Digest>() {
        Ok(digest) if digest.name() == value => Ok(()),
        _ => check_one_of(value, &["sha256", "sha512", "sha1"]),
    }
}

/// Accepts ">=TLSvX", "<=TLSvX", Postfix's exclusion list ("!SSLv3,
/// !TLSv1") and bare names: items of the protocol grammar
/// ([`protocol_item`]), names in their exact case, separated by commas or
/// blanks (not colons).  Ranges with gaps are left to the policy.
pub(super) fn check_tls_protocols(value: &str) -> Result<(), Invalid> {
    for item in list_items(value, LIST_SEPARATORS) {
        if protocol_item(item, true).is_err() {
            return Err(format!(
                "invalid protocol {item:?} in {value:?}, expected e.g. \">=TLSv1.2\" or \"!SSLv3, !TLSv1\""
            )
            .into());
        }
    }
    Ok(())
}

pub(super) fn check_inet_protocols(text: &str) -> Result<(), Invalid> {
    parse_inet_protocols(text).map(|_| ())
}

/// A [`SecurityLevel`], in lower case.
pub(super) fn check_security_level(level: &str) -> Result<(), Invalid> {
    security_level(level).map(|_| ()).map_err(Invalid::from)
}

/// A [`SecurityLevel`] written as the documentation writes it.
fn security_level(text: &str) -> Result<SecurityLevel, String> {
    match text.parse::<SecurityLevel>() {
        Ok(level) if level.name() == text => Ok(level),
        Ok(_) => Err(format!(
            "invalid value {text:?}, expected one of none, may, encrypt, fingerprint, verify, \
             secure, dane, dane-only"
        )),
        Err(message) => Err(message),
    }
}

pub(super) fn check_octal_mode(value: &str) -> Result<(), Invalid> {
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o777 => Ok(()),
        _ => {
            Err(format!("invalid value {value:?}, expected an octal mode such as \"0660\"").into())
        }
    }
}

pub(super) fn check_workers(workers: &usize) -> Result<(), Invalid> {
    if (1..=10_000).contains(workers) {
        return Ok(());
    }
    Err(format!("invalid value {workers}, expected 1 to 10000").into())
}

pub(super) fn check_max_recipients(value: &usize) -> Result<(), Invalid> {
    if (1..=crate::job::MAX_RECIPIENTS).contains(value) {
        return Ok(());
    }
    Err(format!(
        "invalid value {value}, expected 1 to {}",
        crate::job::MAX_RECIPIENTS
    )
    .into())
}

pub(super) fn check_positive(value: &usize) -> Result<(), Invalid> {
    if *value > 0 {
        return Ok(());
    }
    Err(String::from("invalid value 0, expected a positive number").into())
}

pub(super) fn check_stack_size(value: &usize) -> Result<(), Invalid> {
    if (65_536..=67_108_864).contains(value) {
        return Ok(());
    }
    Err(format!("invalid value {value}, expected 65536 to 67108864 bytes").into())
}

pub(super) fn check_log_format(value: &str) -> Result<(), Invalid> {
    value
        .parse::<LogFormat>()
        .map(|_| ())
        .map_err(Invalid::from)
}

pub(super) fn check_attempts(attempts: &u32) -> Result<(), Invalid> {
    if (1..=10).contains(attempts) {
        return Ok(());
    }
    Err(format!("invalid value {attempts}, expected 1 to 10").into())
}

pub(super) fn check_one_of(value: &str, allowed: &[&str]) -> Result<(), Invalid> {
    one_of(value, allowed).map_err(Invalid::from)
}

/// `value` is one of the `allowed` words (exact case).
pub(super) fn one_of(value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "invalid value {value:?}, expected one of {}",
        allowed.join(", ")
    ))
}

pub(super) fn check_dns_support(value: &str) -> Result<(), Invalid> {
    value
        .parse::<DnsSupport>()
        .map(|_| ())
        .map_err(Invalid::from)
}

pub(super) fn check_address_preference(value: &str) -> Result<(), Invalid> {
    value
        .parse::<AddressPreference>()
        .map(|_| ())
        .map_err(Invalid::from)
}

pub(super) fn check_inet_interfaces(text: &str) -> Result<(), Invalid> {
    let items: Vec<&str> = list_items(text, LIST_SEPARATORS).collect();
    match items.as_slice() {
        [] => Err(String::from(
            "empty value, expected \"all\", \"loopback-only\" or a list of addresses",
        )
        .into()),
        ["all"] | ["loopback-only"] => Ok(()),
        _ => {
            for item in &items {
                if *item == "all" || *item == "loopback-only" {
                    return Err(format!(
                        "invalid value {text:?}: {item:?} cannot be combined with other entries"
                    )
                    .into());
                }
                check_interface(item)?;
            }
            Ok(())
        }
    }
}

pub(super) fn check_interface_list(entries: &[String]) -> Result<(), Invalid> {
    for (index, entry) in entries.iter().enumerate() {
        check_interface(entry).map_err(|invalid| Invalid {
            index: Some(index),
            ..invalid
        })?;
    }
    Ok(())
}

/// One interface: an address, optionally in brackets, or a host name.
pub(super) fn check_interface(item: &str) -> Result<(), Invalid> {
    let bare = strip_brackets(item).unwrap_or(item);
    if bare.parse::<IpAddr>().is_ok() || valid_hostname(item) {
        return Ok(());
    }
    Err(format!("invalid interface {item:?}, expected an IP address or a host name").into())
}

/// `"[x]"` → `Some("x")`.
pub(super) fn strip_brackets(text: &str) -> Option<&str> {
    text.strip_prefix('[')?.strip_suffix(']')
}

pub(super) fn parse_bind_address(text: &str) -> Result<Option<Ipv4Addr>, Invalid> {
    if text.is_empty() {
        return Ok(None);
    }
    let bare = strip_brackets(text).unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(addr)) => Ok(Some(addr)),
        Ok(IpAddr::V6(_)) => Err(format!(
            "invalid value {text:?}: an IPv6 address; it belongs in smtp.bind_address6"
        )
        .into()),
        Err(_) => Err(format!("invalid value {text:?}, expected an IPv4 address or \"\"").into()),
    }
}

pub(super) fn parse_bind_address6(text: &str) -> Result<Option<Ipv6Addr>, Invalid> {
    if text.is_empty() {
        return Ok(None);
    }
    let bare = strip_brackets(text).unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(addr)) => Ok(Some(addr)),
        Ok(IpAddr::V4(_)) => Err(format!(
            "invalid value {text:?}: an IPv4 address; it belongs in smtp.bind_address"
        )
        .into()),
        Err(_) => Err(format!("invalid value {text:?}, expected an IPv6 address or \"\"").into()),
    }
}

/// `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`; port 53 by default.
pub(super) fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    const DNS_PORT: u16 = 53;
    let parsed = if let Ok(ip) = text.parse::<IpAddr>() {
        Some(SocketAddr::new(ip, DNS_PORT))
    } else if let Some(v6) = strip_brackets(text).and_then(|bare| bare.parse::<Ipv6Addr>().ok()) {
        Some(SocketAddr::new(IpAddr::V6(v6), DNS_PORT))
    } else {
        text.parse::<SocketAddr>().ok()
    };
    match parsed {
        Some(addr) if addr.port() != 0 => Ok(addr),
        Some(_) => Err(format!("invalid nameserver {text:?}: port 0")),
        None => Err(format!(
            "invalid nameserver {text:?}, expected \"ip\", \"ip:port\" or \"[ipv6]:port\""
        )),
    }
}

pub(super) fn parse_inet_protocols(text: &str) -> Result<InetProtocols, Invalid> {
    let mut protocols = InetProtocols {
        ipv4: false,
        ipv6: false,
    };
    let mut any = false;
    for item in list_items(text, LIST_SEPARATORS) {
        any = true;
        match item {
            "all" => {
                protocols.ipv4 = true;
                protocols.ipv6 = true;
            }
            "ipv4" => protocols.ipv4 = true,
            "ipv6" => protocols.ipv6 = true,
            _ => {
                return Err(format!(
                    "invalid value {text:?}: unknown protocol {item:?}, expected \"all\", \
                     \"ipv4\", \"ipv6\" or a comma-separated list of them"
                )
                .into());
            }
        }
    }
    if !any {
        return Err(String::from(
            "empty value, expected \"all\", \"ipv4\", \"ipv6\" or a comma-separated list of them",
        )
        .into());
    }
    Ok(protocols)
}

/// Postfix `valid_hostname()`: letters, digits, `_`, `-` and `.`; no empty
/// label, no hyphen at a label's start or end, labels of at most 63
/// characters, at most 255 in all, not all-numeric.
pub(super) fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut numeric = true;
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
        numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    !numeric
}

/// RFC 5321 address literal: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
pub(super) fn valid_address_literal(text: &str) -> bool {
    let Some(inner) = strip_brackets(text) else {
        return false;
    };
    match inner.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ipv6:") => inner
            .get(5..)
            .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok()),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    }
}

/// `[tls_rpt] report_directory`: an absolute path.
pub(super) fn check_report_directory(path: &str) -> Result<(), Invalid> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Invalid::from(format!("{path:?} is not an absolute path")))
    }
}

/// `[sasl]` security options: Postfix's words (see [`crate::sasl::SecurityOptions`]).
#[allow(clippy::ptr_arg)] // the signature of every check: fn(&T)
pub(super) fn check_sasl_options(words: &Vec<String>) -> Result<(), Invalid> {
    crate::sasl::SecurityOptions::parse(words)
        .map(|_| ())
        .map_err(Invalid::from)
}

/// An optional `[sasl]` security option list.
pub(super) fn check_opt_sasl_options(words: &Option<Vec<String>>) -> Result<(), Invalid> {
    words.as_ref().map_or(Ok(()), check_sasl_options)
}

/// A `[sasl]` mechanism name: letters, digits, '-' and '_' (RFC 4422).
#[allow(clippy::ptr_arg)] // the signature of every check: fn(&T)
pub(super) fn check_sasl_mechanisms(names: &Vec<String>) -> Result<(), Invalid> {
    for name in names {
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("invalid SASL mechanism name \"{name}\"").into());
        }
    }
    Ok(())
}
