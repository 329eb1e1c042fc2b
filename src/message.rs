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

/// A message, by path or inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    File(PathBuf),
    Inline(Vec<u8>),
}

impl Message {
    /// Reads the message once: size and whether it has 8-bit bytes.
    pub fn facts(&self) -> io::Result<MessageFacts> {
        let facts = body::scan(self.open()?)?;
        Ok(MessageFacts {
            size: facts.size,
            has_8bit: facts.has_8bit,
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
            Message::Inline(data) => Ok(Box::new(data.as_slice())),
        }
    }
}
