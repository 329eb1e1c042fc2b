//! Small text builders for the per-delivery hot path: numbers and IPv4
//! addresses appended to a `String` digit by digit, where `core::fmt`
//! (padding support, dynamic dispatch) would cost several times more.
//! Output is identical to the `Display` implementations they replace.
//! Also the one splitter of Postfix-style lists.

use std::net::IpAddr;

/// "00" to "99": numbers below 100 (most of those in log lines and status
/// codes) are sliced from here instead of being validated as UTF-8.
const TWO_DIGITS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// `n` in decimal, written into `buf`.
pub fn u64_digits(n: u64, buf: &mut [u8; 20]) -> &str {
    if n < 100 {
        let at = usize::try_from(n).unwrap_or(0) * 2;
        let from = if n < 10 { at + 1 } else { at };
        return TWO_DIGITS.get(from..at + 2).unwrap_or("0");
    }
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        // rest % 10 < 10: the cast cannot truncate.
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(u64_digits(n, &mut [0; 20]));
}

/// Appends an address as `Display` writes it (dotted quad for IPv4; IPv6
/// through `Display`, which is rare enough not to matter).
pub fn push_ip(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing into a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// [`push_ip`] into a new string.
pub fn ip_string(addr: IpAddr) -> String {
    let mut out = String::with_capacity(15);
    push_ip(&mut out, addr);
    out
}

/// Postfix's list separators (`CHARS_COMMA_SP`).
pub const LIST_SEPARATORS: &[char] = &[',', ' ', '\t', '\r', '\n'];

/// The separators of TLS protocol and match lists (`CHARS_COMMA_SP ":"`).
pub const TLS_LIST_SEPARATORS: &[char] = &[',', ':', ' ', '\t', '\r', '\n'];

/// The items of a list value: the text between `separators`, empty items
/// dropped.  The one list splitter (configuration values, next-hop
/// lists, interface lists).
pub fn list_items<'a>(text: &'a str, separators: &'a [char]) -> impl Iterator<Item = &'a str> + 'a {
    text.split(separators).filter(|item| !item.is_empty())
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
