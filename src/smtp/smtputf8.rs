//! Whether a transaction uses SMTPUTF8, goes without it, or cannot go to
//! this server at all (5.6.7) — Postfix's rules (`global/smtputf8.h`,
//! `smtp/smtp_proto.c`) plus one mailhop addition: A-labels.
//!
//! Postfix's rules, from the facts of one delivery:
//!
//! * the MAIL FROM `SMTPUTF8` parameter is sent when the sender requested
//!   SMTPUTF8 and the server offers it (whatever the content);
//! * SMTPUTF8 is *required* when it was requested AND the envelope sender,
//!   a recipient of this transaction or the primary header has a non-ASCII
//!   byte (`SMTPUTF8_FLAG_REQUESTED` and `SMTPUTF8_FLAG_DERIVED`); a server
//!   that does not offer it then gets nothing and the recipients fail with
//!   5.6.7 (soft on a non-final server, so the next MX is tried);
//! * mail that did not request SMTPUTF8 goes as it is, with no parameter,
//!   even to a server without SMTPUTF8 (UTF-8 local parts and headers
//!   worked before SMTPUTF8 and keep working);
//! * `smtputf8_enable = no`: never requested, never required.
//!
//! The addition (Postfix "does not convert internationalized domain names
//! from UTF-8 into ASCII" in SMTP commands, SMTPUTF8_README): when a
//! session goes without SMTPUTF8, a non-ASCII domain of an envelope address
//! is sent in its A-label form (UTS #46 ToASCII, non-transitional, STD3
//! rules, hyphen and DNS length checks: what Postfix's `midna_domain`
//! does with ICU and `valid_hostname`). So mail whose only UTF-8 is in
//! domains reaches a server without SMTPUTF8 even when SMTPUTF8 was
//! requested: the A-labels say the same thing in ASCII. A UTF-8 local part
//! or header has no ASCII form: that stays a 5.6.7. A domain that does not
//! convert is sent as it is when SMTPUTF8 is not required, and makes the
//! A-labels useless (5.6.7) when it is. Only MAIL FROM and RCPT TO change;
//! the message is never touched.
//!
//! Pure functions, no I/O; nothing here panics.

use std::borrow::Cow;

/// Where an address has non-ASCII bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressUtf8 {
    /// All ASCII.
    Ascii,
    /// Only in the domain (after the last `@`).
    Domain,
    /// In the local part (whatever the domain).
    LocalPart,
}

/// Classifies an envelope address (the null sender is ASCII).
pub fn classify(address: &str) -> AddressUtf8 {
    if address.is_ascii() {
        return AddressUtf8::Ascii;
    }
    match address.rsplit_once('@') {
        Some((local, _)) if local.is_ascii() => AddressUtf8::Domain,
        _ => AddressUtf8::LocalPart,
    }
}

/// The facts of one transaction that decide about SMTPUTF8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Postfix `smtputf8_enable`.
    pub enable: bool,
    /// The sender asked for SMTPUTF8 (the job's `smtputf8`).
    pub requested: bool,
    /// The worst of the sender and this transaction's recipients.
    pub envelope: AddressUtf8,
    /// The primary header has a non-ASCII byte.
    pub header: bool,
    /// Every non-ASCII domain of the envelope has an A-label form.
    pub domains_convert: bool,
    /// `[smtp] smtputf8_a_labels`: A-labels may stand in for SMTPUTF8
    /// (false: Postfix's behaviour, addresses always as they are).
    pub a_labels: bool,
}

impl Facts {
    /// Postfix's `DELIVERY_REQUIRES_SMTPUTF8`: requested, and the envelope
    /// or the header has UTF-8.
    pub fn required(&self) -> bool {
        self.enable && self.requested && (self.header || self.envelope != AddressUtf8::Ascii)
    }

    /// What to do with a server that offers SMTPUTF8 (`offered`) or not.
    pub fn plan(&self, offered: bool) -> Plan {
        if !self.enable {
            return Plan::Plain;
        }
        if self.requested && offered {
            return Plan::Smtputf8;
        }
        if !self.required() {
            return Plan::Plain;
        }
        // Required, and the server does not offer it: only A-labels can help.
        if self.a_labels
            && !self.header
            && self.envelope == AddressUtf8::Domain
            && self.domains_convert
        {
            Plan::Plain
        } else {
            Plan::Refuse
        }
    }
}

/// The outcome of [`Facts::plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// MAIL FROM carries `SMTPUTF8`; addresses go as they are.
    Smtputf8,
    /// No `SMTPUTF8`; non-ASCII domains go as A-labels where they convert
    /// ([`wire_address`]).
    Plain,
    /// The recipients fail with 5.6.7: SMTPUTF8 is required and not offered.
    Refuse,
}

/// The A-label (ASCII) form of a domain: UTS #46 ToASCII with the checks
/// Postfix's `midna_domain_to_ascii` makes. `Err` holds Postfix's warning
/// text (`Problem translating domain "..." to ASCII form: ...`).
pub fn domain_to_ascii(domain: &str) -> Result<Cow<'_, str>, String> {
    if domain.is_ascii() {
        return Ok(Cow::Borrowed(domain));
    }
    let shown: String = domain.chars().take(100).collect();
    match idna::domain_to_ascii_strict(domain) {
        Ok(ascii) if !ascii.is_empty() && ascii.is_ascii() => Ok(Cow::Owned(ascii)),
        Ok(_) => Err(format!(
            "Problem translating domain \"{shown}\" to ASCII form: malformed ASCII label(s)"
        )),
        Err(_) => Err(format!(
            "Problem translating domain \"{shown}\" to ASCII form: not a valid internationalized domain name (UTS #46)"
        )),
    }
}

/// The address with its domain in A-label form, when the local part is
/// ASCII and the domain converts; otherwise the address as it is.
pub fn wire_address(address: &str) -> Cow<'_, str> {
    if classify(address) != AddressUtf8::Domain {
        return Cow::Borrowed(address);
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Cow::Borrowed(address);
    };
    match domain_to_ascii(domain) {
        Ok(ascii) => Cow::Owned(format!("{local}@{ascii}")),
        Err(_) => Cow::Borrowed(address),
    }
}

/// Whether the domain of `address` (if not ASCII) has an A-label form;
/// logs Postfix's warning when it has not.
pub fn domain_converts(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_ascii() => match domain_to_ascii(domain) {
            Ok(_) => true,
            Err(why) => {
                log::warn!("{why}");
                false
            }
        },
        _ => true,
    }
}

/// The facts of a transaction from its addresses and header fact, with
/// A-labels allowed (set [`Facts::a_labels`] to change that).
pub fn facts<'a>(
    enable: bool,
    requested: bool,
    sender: &str,
    recipients: impl IntoIterator<Item = &'a str>,
    header: bool,
) -> Facts {
    let mut envelope = classify(sender);
    let mut domains_convert = envelope != AddressUtf8::Domain || domain_converts(sender);
    for rcpt in recipients {
        let class = classify(rcpt);
        envelope = envelope.max(class);
        if class == AddressUtf8::Domain && !domain_converts(rcpt) {
            domains_convert = false;
        }
    }
    Facts {
        enable,
        requested,
        envelope,
        header,
        domains_convert,
        a_labels: true,
    }
}

#[cfg(test)]
#[path = "smtputf8_tests.rs"]
mod tests;
