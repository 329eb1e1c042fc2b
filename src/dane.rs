//! DANE for SMTP (RFC 7672; issue 16, started): TLSA records as the DNS
//! gives them, which of them SMTP may use, and whether a server's
//! certificate chain matches them. I/O-free: the lookups (through the
//! stub resolver, with the AD bit from a trusted resolver) and the TLS
//! handshake hook come with the `dane` and `dane-only` levels.
//!
//! Rules kept (RFC 7672 section 3.1, as Postfix applies them):
//! - only DANE-TA(2) and DANE-EE(3) are usable for SMTP; PKIX-TA(0) and
//!   PKIX-EE(1) records are unusable and ignored;
//! - selectors Cert(0) and SPKI(1), matching types Full(0), SHA2-256(1)
//!   and SHA2-512(2); anything else, or a digest of the wrong length, is
//!   unusable;
//! - DANE-EE(3) matches the server's own (leaf) certificate only, with no
//!   name or validity checks;
//! - DANE-TA(2) matches a certificate of the chain the server sent other
//!   than the leaf (a trust anchor it presents); the leaf must then chain
//!   to it and carry the expected name, which the TLS layer checks.
//!
//! Error contract: nothing here panics on input; a record that cannot be
//! parsed is an error value, a certificate that cannot be read matches
//! nothing.

use openssl::x509::X509;

/// TLSA certificate usage.
pub const PKIX_TA: u8 = 0;
pub const PKIX_EE: u8 = 1;
pub const DANE_TA: u8 = 2;
pub const DANE_EE: u8 = 3;
/// TLSA selector.
pub const SELECTOR_CERT: u8 = 0;
pub const SELECTOR_SPKI: u8 = 1;
/// TLSA matching type.
pub const MATCH_FULL: u8 = 0;
pub const MATCH_SHA256: u8 = 1;
pub const MATCH_SHA512: u8 = 2;

/// One TLSA record (RFC 6698 section 2.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// Why TLSA RDATA could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaError {
    /// Fewer than the three octets of usage, selector and matching type.
    Truncated(usize),
    /// No certificate association data.
    Empty,
}

impl std::fmt::Display for TlsaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsaError::Truncated(n) => write!(f, "TLSA record of {n} octets: truncated"),
            TlsaError::Empty => f.write_str("TLSA record without association data"),
        }
    }
}

impl std::error::Error for TlsaError {}

/// Where in the server's chain a record matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// DANE-EE(3): the leaf certificate.
    EndEntity,
    /// DANE-TA(2): the certificate at this depth (1 = the leaf's issuer).
    TrustAnchor { depth: usize },
}

/// The verdict on a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A usable record matched (the first, in the records' order).
    Matched(Matched),
    /// Usable records, none matched: the server fails authentication.
    NoMatch,
    /// No usable record: DANE does not apply (RFC 7672 section 2.2: treat
    /// as if there were no TLSA records, i.e. mandatory unauthenticated TLS).
    NoUsableRecords,
}

impl Tlsa {
    /// From the RDATA of a TLSA resource record.
    pub fn from_rdata(rdata: &[u8]) -> Result<Tlsa, TlsaError> {
        let (Some(&usage), Some(&selector), Some(&matching)) =
            (rdata.first(), rdata.get(1), rdata.get(2))
        else {
            return Err(TlsaError::Truncated(rdata.len()));
        };
        let data = rdata.get(3..).unwrap_or_default();
        if data.is_empty() {
            return Err(TlsaError::Empty);
        }
        Ok(Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        })
    }

    /// Usable for SMTP (RFC 7672 section 3.1.3): DANE-TA or DANE-EE, a
    /// known selector and matching type, a digest of its type's length.
    pub fn usable(&self) -> bool {
        let usage = matches!(self.usage, DANE_TA | DANE_EE);
        let selector = matches!(self.selector, SELECTOR_CERT | SELECTOR_SPKI);
        let length = match self.matching {
            MATCH_FULL => !self.data.is_empty(),
            MATCH_SHA256 => self.data.len() == 32,
            MATCH_SHA512 => self.data.len() == 64,
            _ => false,
        };
        usage && selector && length
    }

    /// Does this record's association data match `cert` (DER)? The usage
    /// is not looked at here (see [`verify_chain`]).
    pub fn matches_cert(&self, cert_der: &[u8]) -> bool {
        let selected = match self.selector {
            SELECTOR_CERT => cert_der.to_vec(),
            SELECTOR_SPKI => match spki_of(cert_der) {
                Some(spki) => spki,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            MATCH_FULL => selected == self.data,
            MATCH_SHA256 => openssl::sha::sha256(&selected).as_slice() == self.data.as_slice(),
            MATCH_SHA512 => openssl::sha::sha512(&selected).as_slice() == self.data.as_slice(),
            _ => false,
        }
    }

    /// The record in presentation form (`3 1 1 ab12...`), for logs.
    pub fn presentation(&self) -> String {
        let hex: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {} {hex}", self.usage, self.selector, self.matching)
    }
}

/// The DER of the SubjectPublicKeyInfo of a certificate (DER), or `None`
/// when it cannot be read.
fn spki_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    let cert = X509::from_der(cert_der).ok()?;
    cert.public_key().ok()?.public_key_to_der().ok()
}

/// Checks the chain a server presented (`chain_der[0]` its certificate,
/// then the rest as sent) against TLSA records: DANE-EE records against
/// the leaf, DANE-TA records against the other certificates; unusable
/// records are ignored.
pub fn verify_chain(records: &[Tlsa], chain_der: &[Vec<u8>]) -> Verdict {
    let mut usable = false;
    for record in records.iter().filter(|r| r.usable()) {
        usable = true;
        match record.usage {
            DANE_EE
                if chain_der
                    .first()
                    .is_some_and(|leaf| record.matches_cert(leaf)) =>
            {
                return Verdict::Matched(Matched::EndEntity);
            }
            DANE_TA => {
                for (depth, cert) in chain_der.iter().enumerate().skip(1) {
                    if record.matches_cert(cert) {
                        return Verdict::Matched(Matched::TrustAnchor { depth });
                    }
                }
            }
            _ => {}
        }
    }
    if usable {
        Verdict::NoMatch
    } else {
        Verdict::NoUsableRecords
    }
}

#[cfg(test)]
#[path = "dane_tests.rs"]
mod tests;
