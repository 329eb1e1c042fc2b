//! The LMTP ingress (issue 15, in progress): mailhop behind any MTA. So
//! far the conversation itself ([`lmtp`], I/O-free); the listeners, the
//! spool and the hand-over to the pool come next.

pub mod lmtp;
