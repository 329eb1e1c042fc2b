//! Streaming conversion of a message file into SMTP `DATA` wire form.
//!
//! Owns everything between "here is the queued message content" and "these
//! are the bytes that go on the wire after `354`", except the terminating
//! `.<CRLF>`, which the caller writes:
//!
//! * line endings are normalised to CRLF (bare LF becomes CRLF, CRLF is kept);
//! * a stray CR (one not followed by LF: LF and CRLF both end lines, so no
//!   LF is ever stray) is replaced with a SPACE, as Postfix 3.9's cleanup
//!   does with `cleanup_replace_stray_cr_lf = yes`, so no message can put a
//!   bare CR on the wire and no lenient receiver can be made to see an
//!   end-of-data (`\r.\r`, `\n.\r\n`, ... — SMTP smuggling) that we did
//!   not send; [`BodyEncoder::replace_stray_cr`]`(false)` passes it through
//!   as data instead (the `[smtp] replace_stray_cr = false` setting);
//! * lines that start with `.` are dot-stuffed (RFC 5321 section 4.5.2);
//! * lines longer than the line length limit are broken Postfix-style
//!   (`smtp_line_length_limit`): after `limit` bytes a CRLF and a SPACE are
//!   inserted, so a continuation line is never dot-stuffed and no wire line
//!   holds more than `limit` bytes (not counting the transparency dot, which
//!   RFC 5321 section 4.5.3.1.6 excludes from the limit);
//! * a final CRLF is added when the content does not end with a line ending;
//!   empty content produces no output at all.
//!
//! It also owns [`scan`], the pre-send pass that yields the facts needed for
//! `SIZE=` and `BODY=8BITMIME`.
//!
//! All conversion state lives in [`BodyEncoder`], which accepts input in
//! pieces of any size and produces identical output however the input is
//! split. [`write_body`] drives it with a fixed 64 KiB read buffer and a reused
//! output buffer written in pieces of at least 32 KiB, so memory stays flat
//! whatever the message size.
//!
//! Error contract: the encoder itself cannot fail. [`write_body`] reports
//! [`BodyError::Read`] when the message source fails (a local problem; the
//! caller maps it to 4.3.0) and [`BodyError::Write`] when the destination
//! fails (a network problem; 4.4.2). `ErrorKind::Interrupted` from a read is
//! retried; from a write it is retried by `write_all`. Nothing in this module
//! panics.

use std::fmt;
use std::io::{self, Read, Write};

/// Size of the read buffer used by [`write_body`] and [`scan`].
pub const READ_CHUNK: usize = 64 * 1024;

/// [`write_body`] hands buffered output to the destination once at least this
/// many bytes are pending (and once more at the end).
pub const WRITE_THRESHOLD: usize = 32 * 1024;

/// Facts about a message gathered by [`scan`] before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BodyFacts {
    /// Size in bytes as read (before any line ending normalisation).
    pub size: u64,
    /// Whether any byte ≥ 0x80 occurs.
    pub has_8bit: bool,
    /// The header (within its first [`READ_CHUNK`] bytes) has a
    /// `TLS-Required: No` field (RFC 8689 section 5).
    pub tls_required_no: bool,
    /// The primary header (up to the first empty line) has a byte ≥ 0x80:
    /// Postfix's `SMTPUTF8_FLAG_HEADER` (cleanup_out.c).
    pub utf8_header: bool,
}

/// Streaming test for a non-ASCII byte in the primary header, fed the
/// message in pieces of any size. The header ends where Postfix's MIME
/// parser ends it (`mime_state.c` with `is_header.c`): at the empty line
/// (LF or CRLF at the start of a line), or at the first line that is
/// neither a header field (a name of printable ASCII, optional blanks,
/// `:`) nor, after one, a continuation (starting with a blank; a stray CR
/// counts as the blank it becomes on the wire). That line is body already.
/// Scanning stops at the end of the header or the first byte ≥ 0x80 in it.
#[derive(Clone, Copy, Debug)]
pub struct HeaderScan {
    line: LineState,
    /// A header field was seen (a blank line start continues it).
    any_field: bool,
    /// The header has ended.
    ended: bool,
    non_ascii: bool,
}

/// Where [`HeaderScan`] is in the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    /// At the start of a line (the message starts at one).
    Start,
    /// A CR at the start of a line: an LF now makes the empty line.
    CrAtStart,
    /// In a field name (`is_header`'s IN_CHAR).
    Name,
    /// Blanks after the name (IN_CHAR_SPACE).
    NameSpace,
    /// After the colon, or in a continuation line: the field's value.
    Value,
}

impl Default for HeaderScan {
    fn default() -> Self {
        Self {
            line: LineState::Start,
            any_field: false,
            ended: false,
            non_ascii: false,
        }
    }
}

impl HeaderScan {
    /// Looks at the next piece of the message.
    pub fn feed(&mut self, piece: &[u8]) {
        for &b in piece {
            if self.ended || self.non_ascii {
                return;
            }
            self.step(b);
        }
    }

    fn step(&mut self, b: u8) {
        use LineState::{CrAtStart, Name, NameSpace, Start, Value};
        self.line = match (self.line, b) {
            (Start | CrAtStart, b'\n') => {
                self.ended = true;
                Start
            }
            (Start, b'\r') => CrAtStart,
            // A continuation line (a stray CR goes out as a blank).
            (Start | CrAtStart, b' ' | b'\t') | (CrAtStart, _) if self.any_field => {
                self.value_byte(b);
                Value
            }
            (Start, b':') | (Start | CrAtStart, _) if !is_name_byte(b) => {
                self.ended = true;
                Start
            }
            (Start, _) | (Name, _) if is_name_byte(b) => Name,
            (Name | NameSpace, b' ' | b'\t') => NameSpace,
            (Name | NameSpace, b':') => {
                self.any_field = true;
                Value
            }
            (Value, b'\n') => Start,
            (Value, _) => {
                self.value_byte(b);
                Value
            }
            // Anything else in a name: not a header line, so body.
            _ => {
                self.ended = true;
                Start
            }
        };
    }

    fn value_byte(&mut self, b: u8) {
        if b >= 0x80 {
            self.non_ascii = true;
        }
    }

    /// The header seen so far has a byte ≥ 0x80.
    pub fn non_ascii(&self) -> bool {
        self.non_ascii
    }
}

/// `bytes` without leading and trailing blanks (SP and HTAB, RFC 5322's
/// WSP; a CR or another control character is not trimmed).
fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// A byte of a header field name (`is_header.c`: printable ASCII, not a
/// blank, not the colon).
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b':'
}

/// Whether the header at the start of `start` (up to the first empty
/// line, or the end of `start`) has a `TLS-Required` field whose value is
/// "No" (any case, blanks ignored; folded continuation lines count).
pub fn has_tls_required_no(start: &[u8]) -> bool {
    let mut field: Option<Vec<u8>> = None;
    let check = |field: &Option<Vec<u8>>| {
        field.as_ref().is_some_and(|value| {
            let text = String::from_utf8_lossy(value);
            text.trim().eq_ignore_ascii_case("no")
        })
    };
    for raw in start.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(value) = field.as_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        if check(&field) {
            return true;
        }
        field = None;
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line
                .get(..colon)
                .is_some_and(|name| trim_blanks(name).eq_ignore_ascii_case(b"TLS-Required"))
        {
            field = Some(line.get(colon + 1..).unwrap_or_default().to_vec());
        }
    }
    check(&field)
}

/// Why [`write_body`] failed, split by whose fault it is.
#[derive(Debug)]
pub enum BodyError {
    /// Reading the message content failed: a local problem (4.3.0).
    Read(io::Error),
    /// Writing to the destination failed: a network problem (4.4.2).
    Write(io::Error),
}

impl BodyError {
    /// The underlying I/O error, whichever side it came from.
    pub fn io_error(&self) -> &io::Error {
        match self {
            BodyError::Read(e) | BodyError::Write(e) => e,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "error reading message content: {e}"),
            BodyError::Write(e) => write!(f, "error writing message body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.io_error())
    }
}

/// Incremental message-to-wire-form encoder.
///
/// Feed input with [`encode`](Self::encode) in pieces of any size, then call
/// [`finish`](Self::finish) once. The output is byte-identical however the
/// input was split. After `finish` the encoder is back in its initial state
/// and may be reused for another message.
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    /// Effective line length limit; 0 means no limit, otherwise ≥ 2.
    limit: usize,
    /// Bytes on the current wire line so far, excluding a transparency dot
    /// and excluding CRLF. Zero exactly when at the start of a wire line.
    /// When `limit > 0`, `line_len <= limit` always holds.
    line_len: usize,
    /// The previous input piece ended with a CR whose meaning (line ending
    /// or data) depends on the next byte. It has not been emitted yet.
    pending_cr: bool,
    /// A CR not followed by LF becomes a SPACE (else it is data).
    replace_stray_cr: bool,
}

impl BodyEncoder {
    /// Creates an encoder that breaks lines longer than `line_length_limit`
    /// bytes (excluding CRLF); 0 disables line breaking.
    ///
    /// A limit of 1 is treated as 2: a continuation line needs room for its
    /// leading space plus at least one byte of data.
    ///
    /// A stray CR is replaced with a SPACE (Postfix's default); see
    /// [`replace_stray_cr`](Self::replace_stray_cr).
    pub fn new(line_length_limit: usize) -> Self {
        let limit = match line_length_limit {
            1 => 2,
            n => n,
        };
        Self {
            limit,
            line_len: 0,
            pending_cr: false,
            replace_stray_cr: true,
        }
    }

    /// Whether a stray CR (a CR not followed by LF) becomes a SPACE (true,
    /// the default, as Postfix's `cleanup_replace_stray_cr_lf = yes`) or is
    /// passed through as data (false: a bare CR reaches the wire).
    pub fn replace_stray_cr(mut self, replace: bool) -> Self {
        self.replace_stray_cr = replace;
        self
    }

    /// The effective line length limit (0 = none).
    pub fn line_length_limit(&self) -> usize {
        self.limit
    }

    /// Converts the next piece of input, appending wire-form bytes to `out`.
    ///
    /// A CR at the very end of `input` is held back until the next call (or
    /// [`finish`](Self::finish)) shows whether it starts a CRLF.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        if self.pending_cr {
            match rest.split_first() {
                None => return,
                Some((&b'\n', tail)) => {
                    self.pending_cr = false;
                    self.end_line(out);
                    rest = tail;
                }
                Some(_) => {
                    self.pending_cr = false;
                    self.push_stray_cr(out);
                }
            }
        }
        out.reserve(rest.len() + rest.len() / 32 + 8);
        while let Some(pos) = find_lf(rest) {
            // invariant: find_lf returns the index of an existing byte, so
            // pos < rest.len() and both ranges below are in bounds.
            let line = &rest[..pos];
            rest = &rest[pos + 1..];
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            if self.replace_stray_cr && find_cr(content).is_some() {
                self.push_replacing_cr(content, out);
                self.end_line(out);
                continue;
            }
            if self.line_len == 0
                && content.first() != Some(&b'.')
                && (self.limit == 0 || content.len() <= self.limit)
            {
                // The usual line: whole, no dot to stuff, short enough.
                out.extend_from_slice(content);
                out.extend_from_slice(b"\r\n");
                continue;
            }
            self.push_content(content, out);
            self.end_line(out);
        }
        let content = match rest.strip_suffix(b"\r") {
            Some(content) => {
                self.pending_cr = true;
                content
            }
            None => rest,
        };
        if self.replace_stray_cr {
            self.push_replacing_cr(content, out);
        } else {
            self.push_content(content, out);
        }
    }

    /// Ends the message: emits a held-back CR as data and adds a final CRLF
    /// when the content did not end with a line ending. Emits nothing for
    /// empty content. Resets the encoder for reuse.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.push_stray_cr(out);
        }
        if self.line_len != 0 {
            self.end_line(out);
        }
    }

    /// A CR known not to start a CRLF: a SPACE, or the CR itself.
    fn push_stray_cr(&mut self, out: &mut Vec<u8>) {
        let byte: &[u8] = if self.replace_stray_cr { b" " } else { b"\r" };
        self.push_content(byte, out);
    }

    /// [`push_content`](Self::push_content) with every CR in `data` (line
    /// content: none of them ends a line) replaced by a SPACE.
    fn push_replacing_cr(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(pos) = find_cr(rest) {
            let (head, tail) = rest.split_at_checked(pos).unwrap_or((rest, &[]));
            self.push_content(head, out);
            self.push_content(b" ", out);
            rest = tail.get(1..).unwrap_or_default();
        }
        self.push_content(rest, out);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.line_len = 0;
    }

    /// Appends line content (never containing the line ending) to the
    /// current line, dot-stuffing at the start of a line and breaking the
    /// line when it would exceed the limit. Breaking is lazy: the CRLF SPACE
    /// is only inserted once a byte beyond the limit actually arrives, so a
    /// line of exactly `limit` bytes is never broken.
    fn push_content(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(&first) = data.first() else {
            return;
        };
        if self.line_len == 0 && first == b'.' {
            out.push(b'.');
        }
        if self.limit == 0 {
            out.extend_from_slice(data);
            self.line_len = self.line_len.saturating_add(data.len());
            return;
        }
        let mut data = data;
        loop {
            let room = self.limit.saturating_sub(self.line_len);
            match data.split_at_checked(room) {
                Some((head, tail)) if !tail.is_empty() => {
                    out.extend_from_slice(head);
                    out.extend_from_slice(b"\r\n ");
                    // limit >= 2, so the next round has room >= 1 and the
                    // loop always makes progress.
                    self.line_len = 1;
                    data = tail;
                }
                _ => {
                    out.extend_from_slice(data);
                    self.line_len += data.len();
                    return;
                }
            }
        }
    }
}

/// Index of the first `\n` in `hay` (SIMD search: long lines are skipped
/// quickly).
fn find_lf(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

/// Index of the first `\r` in `hay`.
fn find_cr(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\r', hay)
}

/// Reads the next chunk into `buf`, retrying `Interrupted`. An empty slice
/// means end of input.
fn read_chunk<'a, R: Read>(src: &mut R, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    loop {
        match src.read(buf) {
            Ok(n) => {
                return buf.get(..n).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "reader reported more bytes than the buffer holds",
                    )
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads the whole input once: size in bytes as read, whether any byte
/// ≥ 0x80 occurs, and the header facts (`TLS-Required: No`, non-ASCII).
pub fn scan<R: Read>(mut src: R) -> io::Result<BodyFacts> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut facts = BodyFacts::default();
    let mut header = HeaderScan::default();
    loop {
        let chunk = read_chunk(&mut src, &mut buf)?;
        if chunk.is_empty() {
            facts.utf8_header = header.non_ascii();
            return Ok(facts);
        }
        header.feed(chunk);
        if facts.size == 0 {
            facts.tls_required_no = has_tls_required_no(chunk);
        }
        facts.size = facts.size.saturating_add(chunk.len() as u64);
        if !facts.has_8bit {
            facts.has_8bit = chunk.iter().fold(0u8, |acc, &b| acc | b) & 0x80 != 0;
        }
    }
}

/// [`scan`] for a message already in memory.
pub fn facts_of(bytes: &[u8]) -> BodyFacts {
    let mut header = HeaderScan::default();
    header.feed(bytes);
    BodyFacts {
        utf8_header: header.non_ascii(),
        size: bytes.len() as u64,
        has_8bit: bytes.iter().fold(0u8, |acc, &b| acc | b) & 0x80 != 0,
        tls_required_no: has_tls_required_no(bytes.get(..READ_CHUNK).unwrap_or(bytes)),
    }
}

/// A whole message in memory in wire form, appended to `out` (the
/// terminating `.<CRLF>` is not added): what [`write_body`] writes.
pub fn encode_all(bytes: &[u8], line_length_limit: usize, out: &mut Vec<u8>) {
    encode_all_with(bytes, BodyEncoder::new(line_length_limit), out);
}

/// [`encode_all`] with a configured encoder (e.g. stray CR pass-through).
pub fn encode_all_with(bytes: &[u8], mut encoder: BodyEncoder, out: &mut Vec<u8>) {
    out.reserve(bytes.len() + bytes.len() / 32 + 8);
    encoder.encode(bytes, out);
    encoder.finish(out);
}

/// Copies the message to `dst` in wire form; returns bytes written.
///
/// Does not write the terminating `.<CRLF>` and does not flush `dst`.
pub fn write_body<R: Read, W: Write>(
    src: R,
    dst: &mut W,
    line_length_limit: usize,
) -> Result<u64, BodyError> {
    write_body_with(src, dst, BodyEncoder::new(line_length_limit))
}

/// [`write_body`] with a configured encoder (e.g. stray CR pass-through).
pub fn write_body_with<R: Read, W: Write>(
    mut src: R,
    dst: &mut W,
    mut encoder: BodyEncoder,
) -> Result<u64, BodyError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(WRITE_THRESHOLD + 2 * READ_CHUNK);
    let mut written: u64 = 0;
    loop {
        let chunk = read_chunk(&mut src, &mut buf).map_err(BodyError::Read)?;
        if chunk.is_empty() {
            break;
        }
        encoder.encode(chunk, &mut out);
        if out.len() >= WRITE_THRESHOLD {
            written += drain_to(dst, &mut out)?;
        }
    }
    encoder.finish(&mut out);
    written += drain_to(dst, &mut out)?;
    Ok(written)
}

/// Writes all of `out` to `dst` (if anything) and empties it, keeping its
/// capacity for reuse. Returns the number of bytes written.
fn drain_to<W: Write>(dst: &mut W, out: &mut Vec<u8>) -> Result<u64, BodyError> {
    if out.is_empty() {
        return Ok(0);
    }
    dst.write_all(out).map_err(BodyError::Write)?;
    // usize is at most 64 bits on every supported target: lossless.
    let n = out.len() as u64;
    out.clear();
    Ok(n)
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
