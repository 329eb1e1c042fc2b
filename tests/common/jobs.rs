//! The one set of job builders of the integration tests: job-protocol
//! lines (JSON, for a daemon's socket) and [`Job`]s (for the library's
//! pool, dispatcher and chaining).
//!
//! Contract: pure builders, no I/O. Defaults: sender `a@x.test` (JSON) or
//! `s@x.test` (structs), one recipient; tests change fields afterwards.

use std::path::Path;

use mailhop::job::{CacheHints, Job, JobRecipient, MessageRef, TransportKind};
use serde_json::{Value, json};

/// A JSON job for `b@y.test` from `a@x.test` with this `message` object
/// (`{"path": ...}`, `{"data": ...}` or `{"fd": true}`).
pub fn json_job(id: &str, nexthop: &str, message: Value) -> Value {
    json!({
        "id": id,
        "nexthop": nexthop,
        "sender": "a@x.test",
        "recipients": [{"address": "b@y.test"}],
        "message": message,
    })
}

/// [`json_job`] with the message in the file `path`.
pub fn path_job(id: &str, nexthop: &str, path: &Path) -> Value {
    json_job(id, nexthop, json!({"path": path.display().to_string()}))
}

/// [`json_job`] with the message inline.
pub fn inline_job(id: &str, nexthop: &str, data: &str) -> Value {
    json_job(id, nexthop, json!({"data": data}))
}

/// A job's recipient without ORCPT or NOTIFY.
pub fn recipient(address: &str) -> JobRecipient {
    JobRecipient {
        address: address.into(),
        orcpt: None,
        notify: None,
    }
}

/// An SMTP [`Job`] from `s@x.test` to `{id}@y.test` with the message in the
/// file `message`.
pub fn job(id: &str, nexthop: &str, message: &Path) -> Job {
    Job {
        nexthop: Some(nexthop.into()),
        ..Job::new(
            id,
            "s@x.test",
            [recipient(&format!("{id}@y.test"))],
            MessageRef::Path {
                path: message.display().to_string(),
            },
        )
    }
}

/// [`job`] with session cache hints.
pub fn job_with_hints(id: &str, nexthop: &str, message: &Path, hints: Option<CacheHints>) -> Job {
    Job {
        cache: hints,
        ..job(id, nexthop, message)
    }
}
