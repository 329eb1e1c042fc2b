//! The Redis Streams feed of issue 18 (`[feed]`): jobs read from Redis
//! Streams by many delivery nodes, results written back, and what the
//! nodes share there: retries of deferred recipients (`retry`) and
//! cluster-wide destination limits (`limits`).

pub mod limits;
pub mod retry;
