//! This host's own addresses, as Postfix's own_inet_addr_list() and
//! proxy_inet_addr_list() see them: for loop detection (an MX list or a
//! `[host]` that points back at us) and for choosing a source address.
//!
//! `inet_interfaces = "all"` means every address of every local interface,
//! "loopback-only" means 127.0.0.1 and ::1, otherwise the listed addresses.
//! Entries that are not IP addresses (host names) are ignored with a
//! warning. Enumeration failures give an empty list and a warning, never an
//! error: loop detection then relies on the listed and proxy addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::text::{LIST_SEPARATORS, list_items};

/// Addresses this host receives mail on, and those it is reached through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    /// `inet_interfaces`, expanded.
    pub interfaces: Vec<IpAddr>,
    /// `proxy_interfaces`.
    pub proxies: Vec<IpAddr>,
}

impl OwnAddresses {
    /// Builds the lists from the configuration values; `ipv4`/`ipv6` are
    /// the enabled families (inet_protocols).
    pub fn from_config(
        inet_interfaces: &str,
        proxy_interfaces: &[String],
        ipv4: bool,
        ipv6: bool,
    ) -> Self {
        let family_ok = |addr: &IpAddr| (addr.is_ipv4() && ipv4) || (addr.is_ipv6() && ipv6);
        let items: Vec<&str> = split_list(inet_interfaces).collect();
        let interfaces: Vec<IpAddr> = match items.as_slice() {
            ["all"] => local_interface_addresses(),
            ["loopback-only"] => vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            _ => items
                .iter()
                .filter_map(|item| parse_address(item))
                .collect(),
        };
        let proxies = proxy_interfaces
            .iter()
            .flat_map(|entry| split_list(entry).map(str::to_string).collect::<Vec<_>>())
            .filter_map(|item| parse_address(&item))
            .collect::<Vec<_>>();
        Self {
            interfaces: dedup(interfaces.into_iter().filter(family_ok).collect()),
            proxies: dedup(proxies.into_iter().filter(family_ok).collect()),
        }
    }

    /// Every address that counts as "myself" for loop detection.
    pub fn all(&self) -> Vec<IpAddr> {
        dedup(
            self.interfaces
                .iter()
                .chain(self.proxies.iter())
                .copied()
                .collect(),
        )
    }

    /// Postfix's implicit source address: when exactly one interface
    /// address of this family is configured and it is not loopback.
    pub fn implicit_source(&self, v6: bool) -> Option<IpAddr> {
        let mut same_family = self.interfaces.iter().filter(|a| a.is_ipv6() == v6);
        let first = same_family.next()?;
        if same_family.next().is_some() || first.is_loopback() {
            return None;
        }
        Some(*first)
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    list_items(text, LIST_SEPARATORS)
}

fn parse_address(item: &str) -> Option<IpAddr> {
    let bare = item
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(item);
    let bare = bare
        .strip_prefix("ipv6:")
        .or_else(|| bare.strip_prefix("IPv6:"))
        .unwrap_or(bare);
    match bare.parse::<IpAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            log::warn!(
                "interface address {item:?} is not an IP address; ignored for loop detection"
            );
            None
        }
    }
}

fn dedup(mut list: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut seen = Vec::with_capacity(list.len());
    list.retain(|a| {
        if seen.contains(a) {
            false
        } else {
            seen.push(*a);
            true
        }
    });
    list
}

/// Every address configured on a local interface.
pub fn local_interface_addresses() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|ifa| ifa.address)
            .filter_map(|addr| {
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(e) => {
            log::warn!("cannot list local interface addresses: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
#[path = "interfaces_tests.rs"]
mod tests;
