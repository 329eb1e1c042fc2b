//! The message of an LMTP DATA command as it streams in, without I/O:
//! bytes in, dot-unstuffed message bytes out (line ends kept as sent),
//! until the final dot. Chunks may split anywhere, even inside the final
//! `CRLF . CRLF`; memory stays what one chunk takes.
//!
//! Lines end with CRLF or with a bare LF, but only the standard
//! `<CR><LF>.<CR><LF>` ends the data, as Postfix's smtpd with
//! `smtpd_forbid_bare_newline = normalize` (the 3.9 default) reads it: a
//! line holding only a dot ends the message when it and the line before it
//! (if any; the first line counts as after a CRLF) end with CRLF. A lone
//! dot line that ends with a bare LF, or follows a line that did, is
//! dropped and reading goes on, so `\n.\n`, `\r\n.\n` or `\n.\r\n`
//! cannot end the message early and smuggle what follows in as commands
//! (SMTP smuggling). A bare CR never ends a line (`\r.\r` is text). A dot
//! that starts any other line is dropped (RFC 5321 section 4.5.2). Nothing
//! here panics.

/// Where the receiver stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// At the start of a line.
    LineStart,
    /// After a dot that starts a line.
    Dot,
    /// After `.` and `\r` at the start of a line.
    DotCr,
    /// Inside a line.
    Inside,
    /// The final dot was read.
    Done,
}

/// One message's receiver.
#[derive(Clone, Debug)]
pub struct DataReceiver {
    at: At,
    /// Message bytes produced so far.
    size: u64,
    /// The last line ended with a bare LF (Postfix's `prev_got_bare_lf`).
    prev_bare_lf: bool,
    /// Inside a line: its last byte so far is a CR.
    last_cr: bool,
}

impl Default for DataReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReceiver {
    pub fn new() -> Self {
        Self {
            at: At::LineStart,
            size: 0,
            prev_bare_lf: false,
            last_cr: false,
        }
    }

    /// The final dot was read.
    pub fn done(&self) -> bool {
        self.at == At::Done
    }

    /// Message bytes produced so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes bytes from `input`, appends the message bytes they carry to
    /// `out`, and returns how many input bytes it took: all of them, or,
    /// when the final dot ends inside `input`, those up to and including
    /// it (what follows is the next command).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let before = out.len();
        let mut i = 0;
        while i < input.len() && self.at != At::Done {
            let Some(&byte) = input.get(i) else { break };
            match self.at {
                At::Inside => {
                    // The rest of the line at once.
                    let rest = input.get(i..).unwrap_or_default();
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(n) => {
                            let cr = match n.checked_sub(1) {
                                Some(before) => rest.get(before) == Some(&b'\r'),
                                None => self.last_cr,
                            };
                            out.extend_from_slice(rest.get(..=n).unwrap_or_default());
                            i += n + 1;
                            self.line_end(!cr);
                        }
                        None => {
                            out.extend_from_slice(rest);
                            if let Some(&last) = rest.last() {
                                self.last_cr = last == b'\r';
                            }
                            i = input.len();
                        }
                    }
                }
                At::LineStart => {
                    i += 1;
                    match byte {
                        b'.' => self.at = At::Dot,
                        b'\n' => {
                            out.push(byte);
                            self.line_end(true);
                        }
                        _ => {
                            out.push(byte);
                            self.last_cr = byte == b'\r';
                            self.at = At::Inside;
                        }
                    }
                }
                At::Dot => {
                    i += 1;
                    match byte {
                        b'\r' => self.at = At::DotCr,
                        b'\n' => {
                            // A lone dot ended by a bare LF: not the end,
                            // and not stored (Postfix's normalize).
                            self.line_end(true);
                        }
                        _ => {
                            // A stuffed dot: dropped.
                            out.push(byte);
                            self.last_cr = false;
                            self.at = At::Inside;
                        }
                    }
                }
                At::DotCr => {
                    if byte == b'\n' {
                        i += 1;
                        if self.prev_bare_lf {
                            // ".\r\n" after a bare LF line: dropped too.
                            self.line_end(false);
                        } else {
                            self.at = At::Done;
                        }
                    } else {
                        // ".\r" then more: the line ".\rX" unstuffed; the
                        // byte is looked at again, inside the line.
                        out.push(b'\r');
                        self.last_cr = true;
                        self.at = At::Inside;
                    }
                }
                At::Done => {}
            }
        }
        let produced = out.len().saturating_sub(before);
        self.size = self
            .size
            .saturating_add(u64::try_from(produced).unwrap_or(u64::MAX));
        i
    }
}

impl DataReceiver {
    /// A line ended (with a bare LF when `bare_lf`): the next byte starts one.
    fn line_end(&mut self, bare_lf: bool) {
        self.prev_bare_lf = bare_lf;
        self.last_cr = false;
        self.at = At::LineStart;
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
