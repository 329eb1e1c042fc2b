//! SMTP/LMTP server replies: line syntax, multi-line assembly, caps and the
//! RFC 3463 code each reply stands for.
//!
//! Pure: lines (already split and length-capped by the transport) go in,
//! complete [`Reply`] values come out. Nothing here can fail: garbage lines are
//! kept as text and flagged (`malformed`), like Postfix's "non-ESMTP response";
//! a lenient parser reads on (within a bound) until a well-formed last line
//! arrives, a strict one (PIPELINING in effect) ends the reply there as a
//! protocol violation. Stored text is
//! made printable and capped at the configured limit, so a hostile server can
//! neither inject control characters into logs nor grow memory.

use crate::dsn::StatusCode;

/// One complete server reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code of the last line.
    pub code: u16,
    /// RFC 3463 code from the last line (as Postfix takes it), when its
    /// class matches `code`.
    pub enhanced: Option<StatusCode>,
    /// Some line was not `DDD`, `DDD text` or `DDD-text`, or the code
    /// changed between lines; with code 0, the reply was cut short there
    /// (see [`ReplyParser`]).
    pub malformed: bool,
    /// Every line, codes included, joined with single spaces (printable, capped).
    pub text: String,
    /// Where the first line's text (after `DDD ` / `DDD-`) lies in `text`.
    first_line: LineSpan,
    /// The same for the second and later lines (empty for one-line replies,
    /// so the common reply costs one allocation: its `text`).
    more_lines: Vec<LineSpan>,
}

/// A byte range of [`Reply::text`]: one line's text without its code.
type LineSpan = (u32, u32);

impl Reply {
    /// `2xx`.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// `3xx` (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// Codes outside 2xx–5xx are protocol violations (Postfix: 5.5.0).
    pub fn is_protocol_violation(&self) -> bool {
        !(200..=599).contains(&self.code)
    }

    /// Each stored line's text without its `DDD-` / `DDD ` prefix (a garbage
    /// line as it came), in order. Lines past the text cap are not stored.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first_line)
            .chain(self.more_lines.iter().copied())
            .map(|(start, end)| self.text.get(start as usize..end as usize).unwrap_or(""))
    }

    /// The RFC 3463 status this reply stands for: the enhanced code when the
    /// server sent one, else the class default (Postfix smtp_chat.c).
    pub fn status(&self) -> StatusCode {
        if let Some(code) = self.enhanced {
            return code;
        }
        match self.code / 100 {
            2 => crate::dsn::OK,
            4 => crate::dsn::REPLY_SOFT,
            5 => crate::dsn::REPLY_HARD,
            _ => crate::dsn::PROTOCOL_ERROR,
        }
    }
}

/// Most garbage lines skipped in one reply before PIPELINING is in effect
/// (mailhop's own bound; Postfix skips without limit until its timeout).
pub const MAX_SKIPPED_LINES: usize = 100;

/// Most bytes of garbage lines skipped in one reply (see [`MAX_SKIPPED_LINES`]).
pub const MAX_SKIPPED_BYTES: usize = 16 * 1024;

/// Assembles replies from lines; one parser per reply.
///
/// Lenient (the default: the greeting, the EHLO reply, a server without
/// PIPELINING) it skips lines that are not reply lines, like Postfix's
/// smtp_chat.c, flagging the reply `malformed`, until
/// [`MAX_SKIPPED_LINES`] or [`MAX_SKIPPED_BYTES`] are passed. Strict
/// (PIPELINING in effect, or a reused session: a skipped line could turn
/// the next command's reply into this one's) the first such line — or a
/// line whose code differs from the reply's first line — ends the reply at
/// once as a protocol violation (code 0, `malformed`).
#[derive(Debug)]
pub struct ReplyParser {
    text_limit: usize,
    text: String,
    lines: usize,
    first_line: LineSpan,
    more_lines: Vec<LineSpan>,
    malformed: bool,
    strict: bool,
    /// The code of the reply's first reply line.
    first_code: Option<u16>,
    skipped_lines: usize,
    skipped_bytes: usize,
}

impl ReplyParser {
    /// `text_limit` caps the stored text of one reply (at least 16 bytes).
    pub fn new(text_limit: usize) -> Self {
        Self {
            text_limit: text_limit.max(16),
            text: String::new(),
            lines: 0,
            first_line: (0, 0),
            more_lines: Vec::new(),
            malformed: false,
            strict: false,
            first_code: None,
            skipped_lines: 0,
            skipped_bytes: 0,
        }
    }

    /// A strict parser (see the type's documentation).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Takes one line (without CRLF); returns the reply it completes.
    pub fn push_line(&mut self, raw: &[u8]) -> Option<Reply> {
        let syntax = line_syntax(raw);
        if self.text.len() < self.text_limit {
            if self.text.capacity() == 0 {
                // One allocation per reply, sized for the usual reply.
                self.text.reserve(self.text_limit.min(256));
            }
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            let line_start = self.text.len();
            push_printable(&mut self.text, raw, self.text_limit);
            let line_end = self.text.len();
            let text_start = if matches!(syntax, LineSyntax::Garbage) {
                line_start
            } else {
                (line_start + 4).min(line_end)
            };
            // The text is capped far below u32::MAX (the transport caps lines).
            let span = (text_start as u32, line_end as u32);
            if self.lines == 0 {
                self.first_line = span;
            } else {
                self.more_lines.push(span);
            }
            self.lines += 1;
        }
        let code = match syntax {
            LineSyntax::Last(code) | LineSyntax::More(code) => Some(code),
            LineSyntax::Garbage => None,
        };
        let changed = match (code, self.first_code) {
            (Some(code), Some(first)) => code != first,
            (Some(code), None) => {
                self.first_code = Some(code);
                false
            }
            (None, _) => false,
        };
        if changed {
            self.malformed = true;
            if self.strict {
                return Some(self.finish(0, None));
            }
        }
        match syntax {
            LineSyntax::More(_) => None,
            LineSyntax::Garbage => {
                self.malformed = true;
                self.skipped_lines += 1;
                self.skipped_bytes = self.skipped_bytes.saturating_add(raw.len() + 2);
                let over = self.skipped_lines > MAX_SKIPPED_LINES
                    || self.skipped_bytes > MAX_SKIPPED_BYTES;
                (self.strict || over).then(|| self.finish(0, None))
            }
            LineSyntax::Last(code) => {
                // Postfix takes the enhanced code from the last line (after
                // the code and any spaces), when its class is the reply's.
                let text = raw.get(3..).unwrap_or(&[]);
                let enhanced =
                    leading_status(text).filter(|status| u16::from(status.class()) == code / 100);
                Some(self.finish(code, enhanced))
            }
        }
    }

    /// The reply so far, completed with `code`; the parser starts afresh.
    fn finish(&mut self, code: u16, enhanced: Option<StatusCode>) -> Reply {
        let reply = Reply {
            code,
            enhanced,
            malformed: self.malformed,
            text: std::mem::take(&mut self.text),
            first_line: self.first_line,
            more_lines: std::mem::take(&mut self.more_lines),
        };
        self.lines = 0;
        self.malformed = false;
        self.first_code = None;
        self.skipped_lines = 0;
        self.skipped_bytes = 0;
        reply
    }

    /// Lines of an unfinished reply have been taken.
    pub fn in_progress(&self) -> bool {
        self.lines > 0 || self.malformed
    }
}

enum LineSyntax {
    Last(u16),
    More(u16),
    Garbage,
}

fn line_syntax(raw: &[u8]) -> LineSyntax {
    let (digits, rest) = raw.split_at(raw.len().min(3));
    if digits.len() != 3 || !digits.iter().all(u8::is_ascii_digit) {
        return LineSyntax::Garbage;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match rest.first() {
        None | Some(b' ') => LineSyntax::Last(code),
        Some(b'-') => LineSyntax::More(code),
        Some(_) => LineSyntax::Garbage,
    }
}

/// The enhanced status code a line's text starts with, after any spaces
/// (`2.1.0 Ok` → 2.1.0), as Postfix's dsn_valid: ended by whitespace or
/// the end of the line.
fn leading_status(text: &[u8]) -> Option<StatusCode> {
    let start = text.iter().position(|&b| b != b' ')?;
    let text = text.get(start..)?;
    let end = text
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(text.len());
    StatusCode::parse(std::str::from_utf8(text.get(..end)?).ok()?).ok()
}

/// Appends `raw` to `dst` with every byte outside printable ASCII replaced by
/// `?`, stopping when `dst` holds `limit` bytes.
fn push_printable(dst: &mut String, raw: &[u8], limit: usize) {
    let room = limit.saturating_sub(dst.len());
    let raw = raw.get(..room).unwrap_or(raw);
    // Checked without early exit, so the compiler can use vector compares.
    if raw.iter().fold(true, |printable, &b| {
        printable & (b.wrapping_sub(0x20) < 0x5f)
    }) {
        // The usual line: printable ASCII, copied as it is.
        if let Ok(text) = std::str::from_utf8(raw) {
            dst.push_str(text);
            return;
        }
    }
    dst.extend(raw.iter().map(|&b| {
        if (0x20..0x7f).contains(&b) {
            b as char
        } else {
            '?'
        }
    }));
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
