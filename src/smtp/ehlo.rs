//! EHLO/LHLO reply keywords: which service extensions the server offers.
//!
//! Pure: a [`Reply`] goes in, an [`Extensions`] set comes out. Unknown
//! keywords are ignored; a malformed SIZE argument means "SIZE without a
//! limit", as Postfix reads it.

use super::reply::Reply;

/// Extensions announced in the EHLO/LHLO reply (RFC 5321 §4.1.1.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    /// Present when SIZE is offered; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    /// REQUIRETLS (RFC 8689): the server keeps the sender's demand for TLS.
    pub requiretls: bool,
    /// Recorded for the TLS layer.
    pub starttls: bool,
    pub enhancedstatuscodes: bool,
    /// SASL mechanisms from `AUTH` / `AUTH=` lines.
    pub auth: Vec<String>,
    /// The server announced AUTH (even with an empty list).
    pub auth_offered: bool,
}

impl Extensions {
    /// Parses an EHLO/LHLO reply; the first line is the server's greeting name.
    pub fn from_reply(reply: &Reply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            // Keywords are case-insensitive (compared without copying).
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                ext.pipelining = true;
            } else if is("SIZE") {
                let limit = words
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                ext.size = Some(limit);
            } else if is("8BITMIME") {
                ext.eightbitmime = true;
            } else if is("DSN") {
                ext.dsn = true;
            } else if is("SMTPUTF8") {
                ext.smtputf8 = true;
            } else if is("REQUIRETLS") {
                ext.requiretls = true;
            } else if is("STARTTLS") {
                ext.starttls = true;
            } else if is("ENHANCEDSTATUSCODES") {
                ext.enhancedstatuscodes = true;
            } else if is("AUTH") {
                ext.auth_offered = true;
                ext.auth.extend(words.map(str::to_ascii_uppercase));
            } else if keyword
                .get(..5)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("AUTH="))
            {
                ext.auth_offered = true;
                ext.auth
                    .push(keyword.get(5..).unwrap_or("").to_ascii_uppercase());
                ext.auth.extend(words.map(str::to_ascii_uppercase));
            }
        }
        // Postfix: SMTPUTF8 without 8BITMIME still implies 8BITMIME.
        if ext.smtputf8 {
            ext.eightbitmime = true;
        }
        ext.auth.sort();
        ext.auth.dedup();
        ext
    }

    /// The server's size limit, when it announced a fixed one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
#[path = "ehlo_tests.rs"]
mod tests;
