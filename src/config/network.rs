//! Address ranges in the configuration: `"127.0.0.0/8"`, `"::1"` (a
//! single address is a /32 or /128), parsed into [`IpNetwork`], which
//! answers whether an address is inside. Used by `dns.trusted_resolvers`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address and a prefix length: the addresses whose first `prefix` bits
/// equal those of `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// The range of `prefix` bits at `addr` (a prefix past the address
    /// length is the address length).
    pub const fn new(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        IpNetwork {
            addr,
            prefix: if prefix > max { max } else { prefix },
        }
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address
    /// (`::ffff:127.0.0.1`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_equal(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let whole = bits / 8;
    let rest = bits % 8;
    if a.get(..whole) != b.get(..whole) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(whole), b.get(whole)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`; the error is the configuration's message.
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("invalid address {addr_text:?} in {text:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "invalid prefix length {p:?} in {text:?} (0 to {max})"
                    ));
                }
            },
        };
        Ok(IpNetwork { addr, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
