//! SMTP/LMTP commands as wire bytes, and the envelope checks that keep
//! untrusted addresses from injecting commands.
//!
//! Pure. An address with CR, LF, NUL or another control character is refused
//! ([`AddressError`]); everything that reaches the wire has been checked here.
//! Local parts that are not dot-atoms are quoted (Postfix's
//! `smtp_quote_rfc821_envelope = yes`); DSN values are xtext-encoded (RFC 3461).

use std::fmt::{self, Write as _};

/// Why an envelope address cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    ControlCharacter,
    TooLong,
    Malformed,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::ControlCharacter => f.write_str("address contains a control character"),
            AddressError::TooLong => f.write_str("address is too long"),
            AddressError::Malformed => f.write_str("malformed address"),
        }
    }
}

/// Longest address accepted (RFC 5321 path limit is 256; be lenient, bounded).
pub const MAX_ADDRESS_LEN: usize = 1024;

/// Checks an envelope address (empty = null sender) for the wire.
pub fn check_address(address: &str) -> Result<(), AddressError> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    if address.chars().any(|c| c.is_control()) {
        return Err(AddressError::ControlCharacter);
    }
    if address.starts_with('@') && !address.contains(':') {
        return Err(AddressError::Malformed);
    }
    Ok(())
}

/// True when the address needs SMTPUTF8 (any non-ASCII character).
pub fn needs_smtputf8(address: &str) -> bool {
    !address.is_ascii()
}

/// RFC 5322 atext (bytes of non-ASCII characters count as atext, as
/// SMTPUTF8 allows).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
        || !b.is_ascii()
}

fn is_dot_atom(local: &str) -> bool {
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// Quotes the local part when it is not a dot-atom (RFC 5321 §4.1.2).
pub fn quote_address(address: &str) -> String {
    let mut out = String::with_capacity(address.len() + 2);
    push_quoted_address(&mut out, address);
    out
}

/// The local part and the domain (when there is an '@').
fn split_address(address: &str) -> (&str, Option<&str>) {
    match address.rsplit_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (address, None),
    }
}

/// True when the address goes on the wire as it is.
fn needs_no_quotes(address: &str) -> bool {
    let (local, _) = split_address(address);
    let already_quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    address.is_empty() || already_quoted || is_dot_atom(local)
}

/// [`quote_address`] appended to `out` (no allocation of its own).
pub fn push_quoted_address(out: &mut String, address: &str) {
    if needs_no_quotes(address) {
        out.push_str(address);
        return;
    }
    let (local, domain) = split_address(address);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    if let Some(domain) = domain {
        out.push('@');
        out.push_str(domain);
    }
}

/// RFC 3461 xtext: `+XX` for '+', '=', and bytes outside `!`..`~`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_xtext(&mut out, value);
    out
}

/// [`xtext`] appended to `out`.
pub fn push_xtext(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('+');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// DSN NOTIFY conditions (RFC 3461).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// The NOTIFY= value, or None when nothing was requested.
    pub fn value(&self) -> Option<&'static str> {
        if self.never {
            return Some("NEVER");
        }
        match (self.success, self.failure, self.delay) {
            (false, false, false) => None,
            (true, false, false) => Some("SUCCESS"),
            (false, true, false) => Some("FAILURE"),
            (false, false, true) => Some("DELAY"),
            (true, true, false) => Some("SUCCESS,FAILURE"),
            (true, false, true) => Some("SUCCESS,DELAY"),
            (false, true, true) => Some("FAILURE,DELAY"),
            (true, true, true) => Some("SUCCESS,FAILURE,DELAY"),
        }
    }
}

/// DSN RET (RFC 3461).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// BODY= value of MAIL FROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

/// Parameters of MAIL FROM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub smtputf8: bool,
    /// RFC 8689 REQUIRETLS.
    pub requiretls: bool,
}

/// Parameters of RCPT TO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<&'static str>,
    /// Complete ORCPT value, `addr-type;xtext`.
    pub orcpt: Option<String>,
}

/// `VERB name` CRLF, built without `core::fmt`.
fn greeting_command(verb: &[u8], name: &str) -> Vec<u8> {
    let mut cmd = Vec::with_capacity(verb.len() + name.len() + 3);
    cmd.extend_from_slice(verb);
    cmd.push(b' ');
    cmd.extend_from_slice(name.as_bytes());
    cmd.extend_from_slice(b"\r\n");
    cmd
}

pub fn ehlo(name: &str) -> Vec<u8> {
    greeting_command(b"EHLO", name)
}

pub fn helo(name: &str) -> Vec<u8> {
    greeting_command(b"HELO", name)
}

pub fn lhlo(name: &str) -> Vec<u8> {
    greeting_command(b"LHLO", name)
}

pub fn mail_from(sender: &str, params: &MailParams) -> Vec<u8> {
    let mut cmd = String::with_capacity(sender.len() + 64);
    cmd.push_str("MAIL FROM:<");
    push_quoted_address(&mut cmd, sender);
    cmd.push('>');
    if let Some(size) = params.size {
        // Writing into a String cannot fail.
        let _ = write!(cmd, " SIZE={size}");
    }
    match params.body {
        Some(BodyType::EightBitMime) => cmd.push_str(" BODY=8BITMIME"),
        Some(BodyType::SevenBit) => cmd.push_str(" BODY=7BIT"),
        None => {}
    }
    if let Some(envid) = &params.envid {
        cmd.push_str(" ENVID=");
        push_xtext(&mut cmd, envid);
    }
    match params.ret {
        Some(Ret::Full) => cmd.push_str(" RET=FULL"),
        Some(Ret::Hdrs) => cmd.push_str(" RET=HDRS"),
        None => {}
    }
    if params.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if params.requiretls {
        cmd.push_str(" REQUIRETLS");
    }
    cmd.push_str("\r\n");
    cmd.into_bytes()
}

pub fn rcpt_to(recipient: &str, params: &RcptParams) -> Vec<u8> {
    let orcpt_len = params.orcpt.as_ref().map_or(0, |o| o.len() + 7);
    let mut cmd = String::with_capacity(recipient.len() + orcpt_len + 48);
    cmd.push_str("RCPT TO:<");
    push_quoted_address(&mut cmd, recipient);
    cmd.push('>');
    if let Some(notify) = params.notify {
        cmd.push_str(" NOTIFY=");
        cmd.push_str(notify);
    }
    if let Some(orcpt) = &params.orcpt {
        cmd.push_str(" ORCPT=");
        cmd.push_str(orcpt);
    }
    cmd.push_str("\r\n");
    cmd.into_bytes()
}

/// RFC 6533 utf-8-addr-unitext: non-ASCII kept, '+', '=', '\\', space and
/// controls as `\x{HH}`.
pub fn uxtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if !c.is_ascii() || (c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\')) {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

/// ORCPT value (RFC 3461 / RFC 6533), as Postfix builds it: the job's
/// `type;addr` keeps its type; otherwise the recipient address, with its
/// local part quoted, as `rfc822;xtext`, or `utf-8;unitext` when the
/// address is not ASCII and the session uses SMTPUTF8.
pub fn orcpt_value(orcpt: Option<&str>, recipient: &str, smtputf8: bool) -> String {
    if let Some((kind, addr)) = orcpt.and_then(|o| o.split_once(';'))
        && !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return if kind.eq_ignore_ascii_case("utf-8") {
            format!("{kind};{}", uxtext(addr))
        } else {
            let mut out = String::with_capacity(kind.len() + 1 + addr.len() + 8);
            out.push_str(kind);
            out.push(';');
            push_xtext(&mut out, addr);
            out
        };
    }
    let address = orcpt.unwrap_or(recipient);
    if smtputf8 && !address.is_ascii() {
        format!("utf-8;{}", uxtext(&quote_address(address)))
    } else {
        let mut out = String::with_capacity(address.len() + 16);
        out.push_str("rfc822;");
        if needs_no_quotes(address) {
            push_xtext(&mut out, address);
        } else {
            push_xtext(&mut out, &quote_address(address));
        }
        out
    }
}

pub const DATA: &[u8] = b"DATA\r\n";
pub const DOT: &[u8] = b".\r\n";
pub const RSET: &[u8] = b"RSET\r\n";
pub const QUIT: &[u8] = b"QUIT\r\n";
pub const STARTTLS: &[u8] = b"STARTTLS\r\n";

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
