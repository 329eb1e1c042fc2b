//! 8-bit to 7-bit MIME conversion of message content, as Postfix's smtp(8)
//! does it for a server that does not announce 8BITMIME
//! (`disable_mime_output_conversion = no`): Postfix's `global/mime_state.c`
//! with its downgrade option, as `smtp/smtp_proto.c` uses it.
//!
//! Owns the MIME view of the content between "here is the queued message"
//! and [`BodyEncoder`] (which keeps CRLF, dot-stuffing and line breaking):
//!
//! * the content is cut into lines, and lines into records of at most
//!   [`RECORD_LIMIT`] bytes, as Postfix's queue file holds them (a long
//!   line is several records; record bounds decide where a boundary or a
//!   header may start and when a header is cut, exactly as in Postfix);
//! * headers (folded or not) are collected, up to `header_size_limit`
//!   (more text is dropped); `Name :` is written `Name:`;
//!   `Content-Type` and `Content-Transfer-Encoding` are parsed with
//!   Postfix's RFC 822 tokenizer (comments, quoted strings, specials);
//! * `multipart/*` boundaries are stacked (each cut to
//!   `mime_boundary_length_limit` bytes); a `multipart/*` header that would
//!   push more than `mime_nesting_limit` boundaries is [`MimeError::Nesting`]
//!   (Postfix: 5.6.0 "MIME nesting exceeds safety limit"; smtp(8) drops the
//!   connection without the final dot and the message bounces);
//! * `message/rfc822` (and 7-bit `message/global`) bodies start with headers
//!   of their own;
//! * a part (or the primary message) whose encoding domain is 8bit or binary
//!   loses its `Content-Transfer-Encoding` header and gets one at the end of
//!   its header block: `7bit` for `message/*` (but `message/global`) and
//!   `multipart/*`, `quoted-printable` for every other type; the body of a
//!   non-composite part is then quoted-printable encoded: every byte
//!   below 32 (but TAB), `=` and every byte above 126 as `=XX`, a soft line
//!   break (`=`) once a line holds more than 72 characters, a SPACE or TAB
//!   at the end of a line encoded;
//! * everything else goes out unchanged — 8-bit headers, 8-bit text in a
//!   part without a declared 8bit/binary encoding, in a quoted-printable or
//!   base64 part, in a multipart preamble or epilogue (Postfix does not
//!   touch them either);
//! * a non-header line where the primary header block should continue ends
//!   that block with an added empty line.
//!
//! [`Downgrader`] accepts input in pieces of any size and gives identical
//! output however the input is split; it keeps one record, one header and
//! the boundary stack, so memory does not grow with the message.
//!
//! Error contract: nothing here panics. [`MimeError`] is the only MIME
//! error (Postfix reports no other when downgrading); [`DowngradeError`]
//! adds the read/write failures of [`write_body_downgraded`].

use std::fmt;
use std::io::{self, Read, Write};

use super::body::{BodyEncoder, BodyError, READ_CHUNK, WRITE_THRESHOLD};
use crate::dsn::StatusCode;

/// Size of one record (Postfix's queue file line piece: `line_length_limit`,
/// 2048 bytes): longer lines are handled in pieces of this size.
pub const RECORD_LIMIT: usize = 2048;

/// The limits of the MIME parser (Postfix's parameters of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MimeLimits {
    /// `mime_nesting_limit`: how many multipart boundaries may be open.
    pub nesting_limit: usize,
    /// `mime_boundary_length_limit`: a boundary is compared on at most
    /// this many bytes.
    pub boundary_length_limit: usize,
    /// `header_size_limit`: text beyond this is dropped from a header.
    pub header_size_limit: usize,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self {
            nesting_limit: 100,
            boundary_length_limit: 2048,
            header_size_limit: 102_400,
        }
    }
}

/// A MIME error that stops the conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MimeError {
    /// More multipart boundaries than `mime_nesting_limit` allows.
    Nesting,
}

impl MimeError {
    /// The enhanced status code Postfix gives it (the message bounces).
    pub fn status(self) -> StatusCode {
        match self {
            MimeError::Nesting => StatusCode::new(5, 6, 0),
        }
    }

    /// Postfix's text for it.
    pub fn text(self) -> &'static str {
        match self {
            MimeError::Nesting => "MIME nesting exceeds safety limit",
        }
    }
}

impl fmt::Display for MimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for MimeError {}

/// Why [`write_body_downgraded`] failed.
#[derive(Debug)]
pub enum DowngradeError {
    /// Reading or writing failed (see [`BodyError`]).
    Body(BodyError),
    /// The content cannot be converted; nothing more may be sent.
    Mime(MimeError),
}

impl fmt::Display for DowngradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DowngradeError::Body(e) => e.fmt(f),
            DowngradeError::Mime(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DowngradeError {}

/// How a record ends: with the line (`Norm`) or in the middle of a long
/// line (`Cont`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rec {
    Norm,
    Cont,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Primary,
    Multipart,
    Nested,
    Body,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CType {
    Other,
    Text,
    Message,
    Multipart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SType {
    Other,
    Plain,
    Rfc822,
    Partial,
    ExternalBody,
    Global,
}

/// The encoding domain: what the bytes of a part may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Domain {
    SevenBit,
    EightBit,
    Binary,
}

/// An open multipart: its boundary and the default type of its parts.
#[derive(Clone, Debug)]
struct Frame {
    def_ctype: CType,
    def_stype: SType,
    boundary: Vec<u8>,
}

/// Incremental 8-bit to 7-bit MIME converter. Its output is content with
/// CRLF line endings, for a [`BodyEncoder`].
///
/// Feed input with [`feed`](Self::feed), then call [`finish`](Self::finish)
/// once. After an error, stop: the message must not be sent.
#[derive(Clone, Debug)]
pub struct Downgrader {
    limits: MimeLimits,
    /// The record being assembled (no line ending).
    rec: Vec<u8>,
    /// The input so far ended with a CR whose meaning depends on the next
    /// byte.
    pending_cr: bool,
    state: State,
    ctype: CType,
    stype: SType,
    domain: Domain,
    /// The header being collected (lines joined with LF).
    header: Vec<u8>,
    /// The quoted-printable line being built.
    qp: Vec<u8>,
    /// The previous record was a `Cont`.
    prev_cont: bool,
    stack: Vec<Frame>,
    error: Option<MimeError>,
    /// Bytes above 127 written unconverted (headers, other parts).
    passed_8bit: u64,
}

impl Downgrader {
    pub fn new(limits: MimeLimits) -> Self {
        Self {
            limits,
            rec: Vec::new(),
            pending_cr: false,
            state: State::Primary,
            ctype: CType::Text,
            stype: SType::Plain,
            domain: Domain::SevenBit,
            header: Vec::new(),
            qp: Vec::new(),
            prev_cont: false,
            stack: Vec::new(),
            error: None,
            passed_8bit: 0,
        }
    }

    /// How many bytes above 127 went out unconverted so far (in headers
    /// and in parts that are not converted): every other output byte is
    /// 7-bit.
    pub fn passed_8bit(&self) -> u64 {
        self.passed_8bit
    }

    fn pass(&mut self, text: &[u8], out: &mut Vec<u8>) {
        let high = text.iter().filter(|&&b| b >= 0x80).count();
        // usize is at most 64 bits on every supported target: lossless.
        self.passed_8bit = self.passed_8bit.saturating_add(high as u64);
        out.extend_from_slice(text);
    }

    /// Converts the next piece of input, appending CRLF content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MimeError> {
        let mut rest = input;
        if self.pending_cr {
            match rest.split_first() {
                None => return self.status(),
                Some((&b'\n', tail)) => {
                    self.pending_cr = false;
                    self.end_line(out);
                    rest = tail;
                }
                Some(_) => {
                    self.pending_cr = false;
                    self.push_data(b"\r", out);
                }
            }
        }
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let line = rest.get(..pos).unwrap_or_default();
            rest = rest.get(pos + 1..).unwrap_or_default();
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            self.push_data(content, out);
            self.end_line(out);
        }
        let content = match rest.strip_suffix(b"\r") {
            Some(content) => {
                self.pending_cr = true;
                content
            }
            None => rest,
        };
        self.push_data(content, out);
        self.status()
    }

    /// Ends the input: a last line without line ending counts as a line;
    /// a header block still open gets its `Content-Transfer-Encoding`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MimeError> {
        if self.pending_cr {
            self.pending_cr = false;
            self.push_data(b"\r", out);
        }
        if !self.rec.is_empty() {
            self.end_line(out);
        }
        self.update(None, &[], out);
        self.status()
    }

    fn status(&self) -> Result<(), MimeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Adds line content to the record, passing on full records as `Cont`
    /// once more content arrives (so a line of exactly `RECORD_LIMIT` bytes
    /// is one record).
    fn push_data(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.rec.len() >= RECORD_LIMIT {
                let rec = std::mem::take(&mut self.rec);
                self.update(Some(Rec::Cont), &rec, out);
                self.rec = rec;
                self.rec.clear();
            }
            let room = RECORD_LIMIT.saturating_sub(self.rec.len());
            let (head, tail) = data.split_at(room.min(data.len()));
            self.rec.extend_from_slice(head);
            data = tail;
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        let rec = std::mem::take(&mut self.rec);
        self.update(Some(Rec::Norm), &rec, out);
        self.rec = rec;
        self.rec.clear();
    }

    fn set(&mut self, state: State, ctype: CType, stype: SType, domain: Domain) {
        self.state = state;
        self.ctype = ctype;
        self.stype = stype;
        self.domain = domain;
    }

    /// One record (`None`: the end of the input), as `mime_state_update`.
    fn update(&mut self, kind: Option<Rec>, text: &[u8], out: &mut Vec<u8>) {
        if kind.is_none() && self.prev_cont {
            self.update(Some(Rec::Norm), &[], out);
        }
        if self.state != State::Body {
            if !self.header.is_empty() {
                if let Some(kind) = kind {
                    if self.prev_cont {
                        if self.header.len() < self.limits.header_size_limit {
                            append_c(&mut self.header, text);
                        }
                        self.prev_cont = kind == Rec::Cont;
                        return;
                    }
                    if matches!(text.first(), Some(b' ' | b'\t')) {
                        if self.header.len() < self.limits.header_size_limit {
                            self.header.push(b'\n');
                            append_c(&mut self.header, text);
                        }
                        self.prev_cont = kind == Rec::Cont;
                        return;
                    }
                }
                self.flush_header(out);
            }
            if let Some(kind) = kind
                && let Some(name_len) = header_name_len(text)
            {
                let (name, rest) = text.split_at(name_len.min(text.len()));
                self.header.clear();
                append_c(&mut self.header, name);
                let value_at = rest
                    .iter()
                    .position(|&b| b != b' ' && b != b'\t')
                    .unwrap_or(rest.len());
                append_c(&mut self.header, rest.get(value_at..).unwrap_or_default());
                self.prev_cont = kind == Rec::Cont;
                return;
            }
            // The end of a header block.
            if self.domain != Domain::SevenBit {
                let encoding: &[u8] = if (self.ctype == CType::Message
                    && self.stype != SType::Global)
                    || self.ctype == CType::Multipart
                {
                    b"7bit"
                } else {
                    b"quoted-printable"
                };
                out.extend_from_slice(b"Content-Transfer-Encoding: ");
                out.extend_from_slice(encoding);
                out.extend_from_slice(b"\r\n");
            }
            match kind {
                Some(_) if text.is_empty() => match self.ctype {
                    CType::Message
                        if self.stype == SType::Rfc822
                            || (self.stype == SType::Global && self.domain == Domain::SevenBit) =>
                    {
                        self.set(State::Nested, CType::Text, SType::Plain, Domain::SevenBit);
                    }
                    CType::Multipart => {
                        self.set(State::Body, CType::Other, SType::Other, Domain::SevenBit);
                    }
                    _ => self.state = State::Body,
                },
                Some(_) => {
                    if self.state == State::Primary {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.state = State::Body;
                }
                None => self.state = State::Body,
            }
        }
        let Some(kind) = kind else {
            return;
        };
        if !self.stack.is_empty() && !self.prev_cont && text.len() > 2 && text.starts_with(b"--") {
            self.boundary(text);
        }
        if self.domain != Domain::SevenBit {
            self.downgrade(kind, text, out);
        } else {
            self.pass(text, out);
            if kind == Rec::Norm {
                out.extend_from_slice(b"\r\n");
            }
        }
        self.prev_cont = kind == Rec::Cont;
    }

    /// A body line starting with `--`: the innermost open boundary it
    /// starts with closes the multiparts inside it, and starts a part or
    /// (with `--` after it) ends its own multipart.
    fn boundary(&mut self, text: &[u8]) {
        let after = text.get(2..).unwrap_or_default();
        let found = self
            .stack
            .iter()
            .rposition(|frame| after.starts_with(&frame.boundary));
        let Some(index) = found else {
            return;
        };
        self.stack.truncate(index + 1);
        let Some(frame) = self.stack.last() else {
            return;
        };
        let closing = after
            .get(frame.boundary.len()..)
            .is_some_and(|tail| tail.starts_with(b"--"));
        if closing {
            self.stack.pop();
            self.set(State::Body, CType::Other, SType::Other, Domain::SevenBit);
        } else {
            let (ctype, stype) = (frame.def_ctype, frame.def_stype);
            self.set(State::Multipart, ctype, stype, Domain::SevenBit);
        }
    }

    /// A complete header: its MIME meaning, then out (unless it is a
    /// `Content-Transfer-Encoding` that the end of the block replaces).
    fn flush_header(&mut self, out: &mut Vec<u8>) {
        let header = std::mem::take(&mut self.header);
        let colon = header.iter().position(|&b| b == b':');
        let name = colon
            .and_then(|c| header.get(..c))
            .unwrap_or_default()
            .trim_ascii_end();
        let value = colon.and_then(|c| header.get(c + 1..)).unwrap_or_default();
        let is_cte = name.eq_ignore_ascii_case(b"Content-Transfer-Encoding");
        if name.eq_ignore_ascii_case(b"Content-Type") {
            self.content_type(value);
        } else if is_cte {
            self.content_encoding(value);
        }
        if !is_cte || self.domain == Domain::SevenBit {
            for line in header.split(|&b| b == b'\n') {
                self.pass(line, out);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.header = header;
        self.header.clear();
        self.prev_cont = false;
    }

    fn content_type(&mut self, value: &[u8]) {
        let mut pos = 0;
        let tokens = match header_tokens(value, &mut pos, 3, CT_SPECIALS, Some(b';')) {
            Some(tokens) if !tokens.is_empty() => tokens,
            _ => {
                self.ctype = CType::Other;
                return;
            }
        };
        let subtype = match (tokens.get(1), tokens.get(2)) {
            (Some(slash), Some(sub)) if slash.kind == TokKind::Special(b'/') => Some(sub),
            _ => None,
        };
        let sub_is = |name: &str| subtype.is_some_and(|sub| sub.is(name));
        let Some(first) = tokens.first() else {
            return;
        };
        if first.is("text") {
            self.ctype = CType::Text;
            self.stype = if sub_is("plain") {
                SType::Plain
            } else {
                SType::Other
            };
        } else if first.is("message") {
            self.ctype = CType::Message;
            self.stype = if sub_is("rfc822") {
                SType::Rfc822
            } else if sub_is("partial") {
                SType::Partial
            } else if sub_is("external-body") {
                SType::ExternalBody
            } else if sub_is("global") {
                SType::Global
            } else {
                SType::Other
            };
        } else if first.is("multipart") {
            self.ctype = CType::Multipart;
            let (def_ctype, def_stype) = if sub_is("digest") {
                (CType::Message, SType::Rfc822)
            } else {
                (CType::Text, SType::Plain)
            };
            while let Some(params) = header_tokens(value, &mut pos, 3, CT_SPECIALS, Some(b';')) {
                let (Some(name), Some(eq), Some(boundary)) =
                    (params.first(), params.get(1), params.get(2))
                else {
                    continue;
                };
                if !name.is("boundary") || eq.kind != TokKind::Special(b'=') {
                    continue;
                }
                // Postfix's nesting level is the stack depth minus one.
                if self.stack.len() > self.limits.nesting_limit.saturating_add(1) {
                    self.error.get_or_insert(MimeError::Nesting);
                } else {
                    let mut boundary = boundary.value.clone();
                    boundary.truncate(self.limits.boundary_length_limit);
                    self.stack.push(Frame {
                        def_ctype,
                        def_stype,
                        boundary,
                    });
                }
            }
        }
    }

    fn content_encoding(&mut self, value: &[u8]) {
        let mut pos = 0;
        let Some(tokens) = header_tokens(value, &mut pos, 1, LEX_822_SPECIALS, None) else {
            return;
        };
        let Some(token) = tokens.first() else {
            return;
        };
        if token.is("7bit") || token.is("base64") || token.is("quoted-printable") {
            self.domain = Domain::SevenBit;
        } else if token.is("8bit") {
            self.domain = Domain::EightBit;
        } else if token.is("binary") {
            self.domain = Domain::Binary;
        }
    }

    /// Quoted-printable encoding of one record.
    fn downgrade(&mut self, kind: Rec, text: &[u8], out: &mut Vec<u8>) {
        for &ch in text {
            if self.qp.len() > 72 {
                self.qp.push(b'=');
                out.extend_from_slice(&self.qp);
                out.extend_from_slice(b"\r\n");
                self.qp.clear();
            }
            if (ch < 32 && ch != b'\t') || ch == b'=' || ch > 126 {
                qp_encode(&mut self.qp, ch);
            } else {
                self.qp.push(ch);
            }
        }
        if kind == Rec::Norm {
            if let Some(&last) = self.qp.last()
                && (last == b' ' || last == b'\t')
            {
                self.qp.pop();
                qp_encode(&mut self.qp, last);
            }
            out.extend_from_slice(&self.qp);
            out.extend_from_slice(b"\r\n");
            self.qp.clear();
        }
    }
}

fn qp_encode(buf: &mut Vec<u8>, ch: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    buf.push(b'=');
    let hex = |nibble: u8| HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
    buf.push(hex(ch >> 4));
    buf.push(hex(ch & 0xf));
}

/// Appends `text` up to its first NUL (Postfix's headers are C strings).
fn append_c(buf: &mut Vec<u8>, text: &[u8]) {
    let end = memchr::memchr(0, text).unwrap_or(text.len());
    buf.extend_from_slice(text.get(..end).unwrap_or_default());
}

fn is_cntrl(ch: u8) -> bool {
    ch < 32 || ch == 127
}

/// The length of the header name when `text` starts a header (`name:` or
/// `name :`; the name printable ASCII without blanks), as Postfix's
/// `is_header_buf`.
fn header_name_len(text: &[u8]) -> Option<usize> {
    let mut len = 0;
    let mut blanks = false;
    for &ch in text {
        match ch {
            b':' => return (len > 0).then_some(len),
            b' ' | b'\t' => {
                if len == 0 {
                    return None;
                }
                blanks = true;
            }
            _ => {
                if ch == 0 || ch >= 0x80 || is_cntrl(ch) || blanks {
                    return None;
                }
                len += 1;
            }
        }
    }
    None
}

/// Content-Type specials (RFC 2045 tspecials).
const CT_SPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";
/// RFC 822 specials.
const LEX_822_SPECIALS: &[u8] = b"()<>@,;:\\\".[]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokKind {
    Token,
    QString,
    Special(u8),
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokKind,
    value: Vec<u8>,
}

impl Token {
    /// A plain token equal to `name` (ASCII case ignored).
    fn is(&self, name: &str) -> bool {
        self.kind == TokKind::Token && self.value.eq_ignore_ascii_case(name.as_bytes())
    }
}

fn is_lwsp(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\r' | b'\n')
}

/// Postfix's `header_token`: up to `max` tokens of `text` from `*pos`,
/// skipping blanks and comments, up to and including `terminator` (with
/// a terminator the rest of the item is read but not kept). `None` when
/// nothing is left.
fn header_tokens(
    text: &[u8],
    pos: &mut usize,
    max: usize,
    specials: &[u8],
    terminator: Option<u8>,
) -> Option<Vec<Token>> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut at = *pos;
    let mut ended = true;
    while let Some(&ch) = text.get(at) {
        if ch == 0 {
            break;
        }
        if terminator.is_none() && tokens.len() >= max {
            ended = false;
            break;
        }
        at += 1;
        if is_lwsp(ch) {
            continue;
        }
        if Some(ch) == terminator {
            ended = false;
            break;
        }
        let keep = tokens.len() < max;
        if ch == b'(' {
            let mut level = 1usize;
            while let Some(&c) = text.get(at) {
                if c == 0 {
                    break;
                }
                at += 1;
                if c == b'(' {
                    level += 1;
                } else if c == b')' {
                    level -= 1;
                    if level == 0 {
                        break;
                    }
                } else if c == b'\\' {
                    match text.get(at) {
                        None | Some(0) => break,
                        Some(_) => at += 1,
                    }
                }
            }
            continue;
        }
        if ch == b'"' {
            let mut value = Vec::new();
            while let Some(&c) = text.get(at) {
                if c == 0 {
                    break;
                }
                at += 1;
                if c == b'"' {
                    break;
                }
                if c == b'\n' {
                    while value.last().is_some_and(|&b| is_lwsp(b)) {
                        value.pop();
                    }
                    continue;
                }
                let mut c = c;
                if c == b'\\' {
                    match text.get(at) {
                        None | Some(0) => break,
                        Some(&next) => {
                            c = next;
                            at += 1;
                        }
                    }
                }
                value.push(c);
            }
            if keep {
                tokens.push(Token {
                    kind: TokKind::QString,
                    value,
                });
            }
            continue;
        }
        if specials.contains(&ch) || is_cntrl(ch) {
            if keep {
                tokens.push(Token {
                    kind: TokKind::Special(ch),
                    value: vec![ch],
                });
            }
            continue;
        }
        let start = at - 1;
        while let Some(&c) = text.get(at) {
            if c == 0 || is_lwsp(c) || is_cntrl(c) || specials.contains(&c) {
                break;
            }
            at += 1;
        }
        if keep {
            tokens.push(Token {
                kind: TokKind::Token,
                value: text.get(start..at).unwrap_or_default().to_vec(),
            });
        }
    }
    *pos = at;
    if tokens.is_empty() && ended {
        return None;
    }
    Some(tokens)
}

/// A whole message in memory, converted and put in wire form by
/// `encoder`, appended to `out` (without the final `.<CRLF>`).
pub fn encode_all_downgraded(
    bytes: &[u8],
    mut encoder: BodyEncoder,
    limits: MimeLimits,
    out: &mut Vec<u8>,
) -> Result<(), MimeError> {
    let mut mime = Downgrader::new(limits);
    let mut mid = Vec::with_capacity(READ_CHUNK.min(bytes.len()).saturating_mul(2));
    for chunk in bytes.chunks(READ_CHUNK) {
        mime.feed(chunk, &mut mid)?;
        encoder.encode(&mid, out);
        mid.clear();
    }
    mime.finish(&mut mid)?;
    encoder.encode(&mid, out);
    encoder.finish(out);
    Ok(())
}

/// Copies the message to `dst` converted and in wire form; returns bytes
/// written. Does not write the final `.<CRLF>` and does not flush `dst`.
pub fn write_body_downgraded<R: Read, W: Write>(
    mut src: R,
    dst: &mut W,
    mut encoder: BodyEncoder,
    limits: MimeLimits,
) -> Result<u64, DowngradeError> {
    let mut mime = Downgrader::new(limits);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut mid = Vec::with_capacity(2 * READ_CHUNK);
    let mut out = Vec::with_capacity(WRITE_THRESHOLD + 4 * READ_CHUNK);
    let mut written: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DowngradeError::Body(BodyError::Read(e))),
        };
        let Some(chunk) = buf.get(..n) else {
            return Err(DowngradeError::Body(BodyError::Read(io::Error::new(
                io::ErrorKind::InvalidData,
                "reader reported more bytes than the buffer holds",
            ))));
        };
        if chunk.is_empty() {
            break;
        }
        mime.feed(chunk, &mut mid).map_err(DowngradeError::Mime)?;
        encoder.encode(&mid, &mut out);
        mid.clear();
        if out.len() >= WRITE_THRESHOLD {
            written += drain_to(dst, &mut out)?;
        }
    }
    mime.finish(&mut mid).map_err(DowngradeError::Mime)?;
    encoder.encode(&mid, &mut out);
    encoder.finish(&mut out);
    written += drain_to(dst, &mut out)?;
    Ok(written)
}

fn drain_to<W: Write>(dst: &mut W, out: &mut Vec<u8>) -> Result<u64, DowngradeError> {
    if out.is_empty() {
        return Ok(0);
    }
    dst.write_all(out)
        .map_err(|e| DowngradeError::Body(BodyError::Write(e)))?;
    // usize is at most 64 bits on every supported target: lossless.
    let n = out.len() as u64;
    out.clear();
    Ok(n)
}

#[cfg(test)]
#[path = "mime_tests.rs"]
mod tests;
