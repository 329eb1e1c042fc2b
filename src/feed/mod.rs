//! The Redis Streams feed (issue 18): jobs from Redis, results back to
//! Redis, and what the nodes share there. This file only names the parts
//! present on this branch.

pub mod limits;
