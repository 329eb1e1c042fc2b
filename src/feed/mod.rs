//! The Redis Streams feed of issue 18 (`[feed]`): jobs read from Redis
//! Streams by many delivery nodes. This branch holds only the retry part
//! (`retry`); the feed loop, connection wrapper and limits live in their
//! own modules, merged by the lead.

pub mod retry;
