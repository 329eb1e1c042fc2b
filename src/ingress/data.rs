//! The message of an LMTP DATA command as it streams in, without I/O:
//! bytes in, dot-unstuffed message bytes out (line ends kept as sent),
//! until the final dot. Chunks may split anywhere, even inside the final
//! `CRLF . CRLF`; memory stays what one chunk takes.
//!
//! The end is a line holding only a dot, ended by CRLF or by a bare LF
//! (as Postfix's smtpd reads it): `.\r\n` or `.\n` at the start of a line
//! (the first line counts as a line start). A dot that starts any other
//! line is dropped (RFC 5321 section 4.5.2). Nothing here panics.

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
                            out.extend_from_slice(rest.get(..=n).unwrap_or_default());
                            i += n + 1;
                            self.at = At::LineStart;
                        }
                        None => {
                            out.extend_from_slice(rest);
                            i = input.len();
                        }
                    }
                }
                At::LineStart => {
                    i += 1;
                    match byte {
                        b'.' => self.at = At::Dot,
                        b'\n' => out.push(byte),
                        _ => {
                            out.push(byte);
                            self.at = At::Inside;
                        }
                    }
                }
                At::Dot => {
                    i += 1;
                    match byte {
                        b'\r' => self.at = At::DotCr,
                        b'\n' => self.at = At::Done,
                        _ => {
                            // A stuffed dot: dropped.
                            out.push(byte);
                            self.at = At::Inside;
                        }
                    }
                }
                At::DotCr => {
                    if byte == b'\n' {
                        i += 1;
                        self.at = At::Done;
                    } else {
                        // ".\r" then more: the line ".\rX" unstuffed; the
                        // byte is looked at again, inside the line.
                        out.push(b'\r');
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

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
