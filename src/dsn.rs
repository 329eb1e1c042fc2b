//! RFC 3463 enhanced status codes and delivery status notifications (DSNs).
//!
//! Owns the `Dsn` value every failure is turned into: an enhanced status code
//! (`4.4.1`), the diagnostic text in Postfix's words, and the flags the error
//! policy needs (is it soft, does it only become hard on the final server).
//! Every status code mailhop itself assigns is a named constant below, made
//! by the `const fn` [`StatusCode::new`], so a mistyped code fails the build;
//! codes from the network go through [`StatusCode::parse`], which says why a
//! text is not one. Pure data: no I/O, no policy.

use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`: class 2, 4 or 5,
/// subject and detail of at most three digits (the fields are private, so
/// every value is one of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCode {
    class: u8,
    subject: u16,
    detail: u16,
}

/// Why a text is not an enhanced status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusParseError {
    /// The class is not 2, 4 or 5 followed by a dot.
    Class,
    /// The subject or detail is missing, not decimal or longer than three
    /// digits, or there is no second dot.
    Number,
}

impl fmt::Display for StatusParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Class => "the class of a status code is 2, 4 or 5 followed by a dot",
            Self::Number => "the subject and detail of a status code have 1 to 3 digits",
        })
    }
}

impl std::error::Error for StatusParseError {}

impl StatusCode {
    /// A code written in the source. Use it in a const context only (a
    /// `const` item, as the constants below, or `const { }`): there a bad
    /// code is a compile error.
    ///
    /// ```
    /// use mailhop::dsn::StatusCode;
    /// const BUSY: StatusCode = StatusCode::new(4, 4, 1);
    /// assert_eq!(BUSY.to_string(), "4.4.1");
    /// ```
    ///
    /// A class other than 2, 4 or 5 does not build:
    ///
    /// ```compile_fail
    /// const TYPO: mailhop::dsn::StatusCode = mailhop::dsn::StatusCode::new(3, 4, 1);
    /// ```
    ///
    /// nor does a subject or detail of more than three digits:
    ///
    /// ```compile_fail
    /// const TYPO: mailhop::dsn::StatusCode = mailhop::dsn::StatusCode::new(4, 4, 1000);
    /// ```
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        assert!(
            class == 2 || class == 4 || class == 5,
            "the class of a status code is 2, 4 or 5"
        );
        assert!(
            subject <= 999 && detail <= 999,
            "subject and detail of a status code have at most 3 digits"
        );
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses `X.Y.Z` where X is 2, 4 or 5 and Y, Z have 1–3 digits.
    pub fn parse(text: &str) -> Result<Self, StatusParseError> {
        // class "." 1*3digit "." 1*3digit, read byte by byte (every reply
        // line passes through here).
        let bytes = text.as_bytes();
        let class = match bytes {
            [c @ (b'2' | b'4' | b'5'), b'.', ..] => c - b'0',
            _ => return Err(StatusParseError::Class),
        };
        let number = |part: &[u8]| -> Option<u16> {
            if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        };
        let parts = || -> Option<(u16, u16)> {
            let rest = bytes.get(2..)?;
            let dot = rest.iter().position(|&b| b == b'.')?;
            Some((number(rest.get(..dot)?)?, number(rest.get(dot + 1..)?)?))
        };
        let (subject, detail) = parts().ok_or(StatusParseError::Number)?;
        Ok(Self {
            class,
            subject,
            detail,
        })
    }

    /// 2, 4 or 5.
    pub const fn class(&self) -> u8 {
        self.class
    }

    pub const fn subject(&self) -> u16 {
        self.subject
    }

    pub const fn detail(&self) -> u16 {
        self.detail
    }

    pub fn is_success(&self) -> bool {
        self.class == 2
    }

    pub fn is_soft(&self) -> bool {
        self.class == 4
    }

    pub fn is_hard(&self) -> bool {
        self.class == 5
    }

    /// Postfix's SMTP_HAS_LOOP_DSN: `x.4.6`, mail loops back to myself.
    pub fn is_loop(&self) -> bool {
        self.subject == 4 && self.detail == 6
    }

    /// The same subject and detail as a soft (class 4) code: 5.3.0 → 4.3.0.
    pub const fn soft(self) -> Self {
        Self { class: 4, ..self }
    }
}

// The codes mailhop assigns, by meaning (Postfix's choices, see
// postfix-smtp-client.md "DSN codes"). Codes from a server's reply are not
// here: they are parsed.

/// 2.0.0: success, the default of a 2xx reply without an enhanced code.
pub const OK: StatusCode = StatusCode::new(2, 0, 0);
/// 4.0.0: the default of a 4xx reply without an enhanced code.
pub const REPLY_SOFT: StatusCode = StatusCode::new(4, 0, 0);
/// 5.0.0: the default of a 5xx reply without an enhanced code.
pub const REPLY_HARD: StatusCode = StatusCode::new(5, 0, 0);
/// 5.5.0: a reply that is not 2xx, 4xx or 5xx ("Protocol error").
pub const PROTOCOL_ERROR: StatusCode = StatusCode::new(5, 5, 0);

/// 4.3.0: mail system trouble: no reason known, a local data error, an
/// internal error, the daemon shutting down.
pub const SYSTEM_TROUBLE: StatusCode = StatusCode::new(4, 3, 0);
/// 4.3.5: a configuration problem (bad destination, fallback relay or
/// relayhost, UNIX socket path, no DNS resolver).
pub const CONFIG_PROBLEM: StatusCode = StatusCode::new(4, 3, 5);
/// 5.3.4: the message exceeds the server's SIZE limit.
pub const MESSAGE_TOO_BIG: StatusCode = StatusCode::new(5, 3, 4);

/// 4.4.0: the source address cannot be bound (`smtp_bind_address_enforce`).
pub const BIND_FAILED: StatusCode = StatusCode::new(4, 4, 0);
/// 4.4.1: the connection could not be made.
pub const CONNECT_FAILED: StatusCode = StatusCode::new(4, 4, 1);
/// 4.4.2: the connection was lost or timed out.
pub const CONNECTION_LOST: StatusCode = StatusCode::new(4, 4, 2);
/// 4.4.3: a temporary name service failure.
pub const DNS_RETRY: StatusCode = StatusCode::new(4, 4, 3);
/// 5.4.3: a non-recoverable name service failure.
pub const DNS_FAIL: StatusCode = StatusCode::new(5, 4, 3);
/// 4.4.4: no route: no network protocol, primary relay not found, or host
/// not found after a soft failure.
pub const NO_ROUTE: StatusCode = StatusCode::new(4, 4, 4);
/// 5.4.4: host or domain name not found.
pub const HOST_NOT_FOUND: StatusCode = StatusCode::new(5, 4, 4);
/// 5.4.6: mail loops back to myself (we are the best MX).
pub const MAIL_LOOP: StatusCode = StatusCode::new(5, 4, 6);
/// 4.4.6: the server greets with our own name and is not the best MX.
pub const MAIL_LOOP_BACKUP_MX: StatusCode = StatusCode::new(4, 4, 6);
/// 5.1.0: the domain publishes a null MX (RFC 7505).
pub const NULL_MX: StatusCode = StatusCode::new(5, 1, 0);

/// 5.1.3: bad recipient address syntax.
pub const BAD_RECIPIENT_SYNTAX: StatusCode = StatusCode::new(5, 1, 3);
/// 5.1.7: bad sender address syntax.
pub const BAD_SENDER_SYNTAX: StatusCode = StatusCode::new(5, 1, 7);

/// 4.7.4: TLS is required but the server does not offer STARTTLS.
pub const TLS_NOT_OFFERED: StatusCode = StatusCode::new(4, 7, 4);
/// 4.7.5: a TLS handshake, certificate or TLS configuration problem.
pub const TLS_PROBLEM: StatusCode = StatusCode::new(4, 7, 5);
/// 5.7.10: REQUIRETLS, but the session is not TLS with an authenticated
/// server (RFC 8689).
pub const REQUIRETLS_NOT_AUTHENTICATED: StatusCode = StatusCode::new(5, 7, 10);
/// 5.7.30: REQUIRETLS, but the server does not announce it (RFC 8689).
pub const REQUIRETLS_NOT_OFFERED: StatusCode = StatusCode::new(5, 7, 30);
/// 5.6.7: SMTPUTF8 is required but not offered.
pub const SMTPUTF8_REQUIRED: StatusCode = StatusCode::new(5, 6, 7);
/// 4.7.0: SASL authentication could not be done (no usable mechanism, a
/// challenge we cannot answer).
pub const SASL_FAILED: StatusCode = StatusCode::new(4, 7, 0);

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl StatusCode {
    /// Writes `class.subject.detail` to `f` (a `String` directly, or a
    /// formatter).
    pub fn write_to<W: fmt::Write>(&self, f: &mut W) -> fmt::Result {
        use crate::text::u64_digits;
        f.write_str(u64_digits(u64::from(self.class), &mut [0; 20]))?;
        f.write_str(".")?;
        f.write_str(u64_digits(u64::from(self.subject), &mut [0; 20]))?;
        f.write_str(".")?;
        f.write_str(u64_digits(u64::from(self.detail), &mut [0; 20]))
    }
}

/// A delivery status: the code and the diagnostic that goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    pub code: StatusCode,
    /// Human-readable reason, Postfix style (`host H[A] said: ... (in reply to RCPT TO command)`).
    pub text: String,
    /// Soft on a non-final server (keep the recipient for the next one),
    /// hard on the final server: Postfix's SOFT_NON_FINAL (e.g. 5.6.7 SMTPUTF8).
    pub soft_non_final: bool,
}

impl Dsn {
    pub fn new(code: StatusCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            soft_non_final: false,
        }
    }

    pub fn soft_non_final(mut self) -> Self {
        self.soft_non_final = true;
        self
    }

    pub fn is_soft(&self) -> bool {
        self.code.is_soft()
    }

    pub fn is_hard(&self) -> bool {
        self.code.is_hard()
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

#[cfg(test)]
#[path = "dsn_tests.rs"]
mod tests;
