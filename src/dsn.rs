//! RFC 3463 enhanced status codes and delivery status notifications (DSNs).
//!
//! Owns the `Dsn` value every failure is turned into: an enhanced status code
//! (`4.4.1`), the diagnostic text in Postfix's words, and the flags the error
//! policy needs (is it soft, does it only become hard on the final server).
//! Pure data: no I/O, no policy.

use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl StatusCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses `X.Y.Z` where X is 2, 4 or 5 and Y, Z have 1–3 digits.
    pub fn parse(text: &str) -> Option<Self> {
        // class "." 1*3digit "." 1*3digit, read byte by byte (every reply
        // line passes through here).
        let bytes = text.as_bytes();
        let class = match bytes {
            [c @ (b'2' | b'4' | b'5'), b'.', ..] => c - b'0',
            _ => return None,
        };
        let number = |part: &[u8]| -> Option<u16> {
            if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        };
        let rest = bytes.get(2..)?;
        let dot = rest.iter().position(|&b| b == b'.')?;
        let subject = number(rest.get(..dot)?)?;
        let detail = number(rest.get(dot + 1..)?)?;
        Some(Self {
            class,
            subject,
            detail,
        })
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

    /// The same subject and detail with another class (5.3.0 → 4.3.0).
    pub fn with_class(self, class: u8) -> Self {
        Self { class, ..self }
    }
}

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

    /// Shorthand for a code written as a literal, e.g. `Dsn::simple("4.4.1", ...)`.
    /// An unparsable literal is a programming error and degrades to 4.3.0.
    pub fn simple(code: &str, text: impl Into<String>) -> Self {
        Self::new(
            StatusCode::parse(code).unwrap_or(StatusCode::new(4, 3, 0)),
            text,
        )
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
mod tests {
    use super::*;

    #[test]
    fn parses_valid_codes() {
        assert_eq!(StatusCode::parse("5.1.1"), Some(StatusCode::new(5, 1, 1)));
        assert_eq!(
            StatusCode::parse("4.7.123"),
            Some(StatusCode::new(4, 7, 123))
        );
        assert_eq!(
            StatusCode::parse("2.0.0").map(|c| c.to_string()),
            Some("2.0.0".into())
        );
    }

    #[test]
    fn rejects_invalid_codes() {
        for bad in [
            "", "5", "5.1", "3.1.1", "5.1.1.1", "5..1", "5.1234.1", "x.1.1", "55.1.1", "5.1.a",
        ] {
            assert_eq!(StatusCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn class_change_keeps_subject_and_detail() {
        assert_eq!(StatusCode::new(5, 3, 0).with_class(4).to_string(), "4.3.0");
    }
}
