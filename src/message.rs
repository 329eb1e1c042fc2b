//! The message to deliver: a spool file (streamed, never loaded whole) or
//! small inline data, and the facts about it needed before MAIL FROM.
//!
//! Errors are `io::Error`s from opening or reading; the caller decides what
//! they mean (exit 66 for the CLI, 4.3.0 for a delivery).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;

use crate::session::MessageSource;
use crate::smtp::body;
use crate::smtp::client::MessageFacts;

/// A message, by path, by an open file or inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    File(PathBuf),
    /// A file opened for the submitting peer (or passed by it): every
    /// pass reads it from offset 0 through this descriptor, never reopens
    /// it by a name.
    Open(SharedFile),
    Inline(Vec<u8>),
}

/// An open message file shared by the passes over it; equal only to itself.
#[derive(Clone, Debug)]
pub struct SharedFile(pub std::sync::Arc<File>);

impl PartialEq for SharedFile {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedFile {}

/// Reads a shared file from offset 0 with pread(2), leaving its offset
/// alone (several passes may read it one after the other).
struct AtReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for AtReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos = self.pos.saturating_add(u64::try_from(n).unwrap_or(0));
        Ok(n)
    }
}

/// Messages up to this size are read once into memory: one open and one
/// read per job instead of one per scan and per delivery attempt.
pub const IN_MEMORY_LIMIT: u64 = 64 * 1024;

/// Largest message buffer a thread keeps for its next message.
const SPARE_KEEP: usize = 64 * 1024 + 1024;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Message {
    /// A file message; small regular files are read into memory now. Any
    /// problem (missing file, ...) leaves it a file reference, so the error
    /// is reported where file errors are.
    pub fn small_file_in_memory(path: &std::path::Path) -> Self {
        let small =
            std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= IN_MEMORY_LIMIT);
        if small && let Ok(bytes) = std::fs::read(path) {
            return Message::Inline(bytes);
        }
        Message::File(path.to_path_buf())
    }

    /// The message behind an open file: read into memory when it is small
    /// (`len`, from the caller's fstat), else read through (a duplicate
    /// of) that descriptor for each pass. `_path` only names it.
    pub fn from_open_file(file: &File, len: u64, _path: PathBuf) -> io::Result<Self> {
        if len > IN_MEMORY_LIMIT {
            return Ok(Message::Open(SharedFile(std::sync::Arc::new(
                file.try_clone()?,
            ))));
        }
        // The size is known: read exactly that much (one read for a small
        // file; read_to_end would fstat and seek again and read to EOF),
        // into this thread's spare buffer when it has one.
        let mut bytes = SPARE.with(|spare| std::mem::take(&mut *spare.borrow_mut()));
        bytes.clear();
        bytes.resize(usize::try_from(len).unwrap_or(0), 0);
        // From offset 0 whatever the file's offset (a descriptor passed by
        // a client shares it).
        let mut filled = 0;
        while filled < bytes.len() {
            let at = u64::try_from(filled).unwrap_or(u64::MAX);
            match std::os::unix::fs::FileExt::read_at(
                file,
                bytes.get_mut(filled..).unwrap_or(&mut []),
                at,
            ) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        bytes.truncate(filled);
        Ok(Message::Inline(bytes))
    }

    /// Done with the message: its buffer serves this thread's next one.
    pub fn recycle(self) {
        if let Message::Inline(bytes) = self
            && bytes.capacity() <= SPARE_KEEP
        {
            SPARE.with(|spare| *spare.borrow_mut() = bytes);
        }
    }

    /// Reads the message once: size and whether it has 8-bit bytes.
    pub fn facts(&self) -> io::Result<MessageFacts> {
        let facts = match self {
            Message::Inline(bytes) => body::facts_of(bytes),
            Message::File(_) | Message::Open(_) => body::scan(self.open()?)?,
        };
        Ok(MessageFacts {
            size: facts.size,
            has_8bit: facts.has_8bit,
            tls_required_no: facts.tls_required_no,
            utf8_header: facts.utf8_header,
        })
    }
}

impl MessageSource for Message {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Message::File(path) => Ok(Box::new(BufReader::with_capacity(
                64 * 1024,
                File::open(path)?,
            ))),
            Message::Open(file) => Ok(Box::new(BufReader::with_capacity(
                64 * 1024,
                AtReader {
                    file: &file.0,
                    pos: 0,
                },
            ))),
            Message::Inline(data) => Ok(Box::new(data.as_slice())),
        }
    }

    fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Message::File(_) | Message::Open(_) => None,
            Message::Inline(data) => Some(data),
        }
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
