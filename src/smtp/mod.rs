//! The SMTP/LMTP protocol, without I/O: replies, commands, EHLO keywords, the
//! session state machine and the DATA body encoding.

pub mod body;
pub mod client;
pub mod command;
pub mod ehlo;
pub mod mime;
pub mod reply;
pub mod smtputf8;
