use redis::Value;

use super::*;
use crate::job::JobResult;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn result(address: &str, status: Status) -> RecipientResult {
    RecipientResult {
        address: address.into(),
        status,
        dsn: "2.0.0".into(),
        relay: None,
        diagnostic: String::new(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

#[test]
fn read_reply_gives_entries_by_stream() {
    let reply = Value::Array(vec![Value::Array(vec![
        bulk("jobs"),
        Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("job"), bulk("{}")]),
            ]),
            Value::Array(vec![
                bulk("2-0"),
                Value::Array(vec![bulk("other"), bulk("x")]),
            ]),
        ]),
    ])]);
    let got = parse_read(reply.clone());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "jobs");
    assert_eq!(
        got[0].1,
        vec![
            Entry {
                id: "1-0".into(),
                job: Some(b"{}".to_vec())
            },
            Entry {
                id: "2-0".into(),
                job: None
            },
        ]
    );
    assert!(parse_read(Value::Nil).is_empty());
}

#[test]
fn autoclaim_reply_skips_deleted_entries() {
    let reply = Value::Array(vec![
        bulk("0-0"),
        Value::Array(vec![
            Value::Nil,
            Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("job"), bulk("j")]),
            ]),
        ]),
        Value::Array(vec![bulk("1-0")]),
    ]);
    assert_eq!(
        parse_autoclaim(reply.clone()),
        vec![Entry {
            id: "3-0".into(),
            job: Some(b"j".to_vec())
        }]
    );
    assert!(parse_autoclaim(Value::Int(3)).is_empty());
}

#[test]
fn merge_puts_settled_and_new_results_in_job_order() {
    let now = JobResult {
        id: "j".into(),
        recipients: vec![result("b", Status::Sent), result("d", Status::Bounced)],
        log: None,
    };
    let pre = vec![
        (0, result("a", Status::Sent)),
        (2, result("c", Status::Deferred)),
    ];
    let merged = merge(now, &[1, 3], &pre, 4);
    let order: Vec<&str> = merged
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
}

#[test]
fn redacts_the_password() {
    assert_eq!(
        redact("redis://:secret@127.0.0.1:6379/0"),
        "redis://***@127.0.0.1:6379/0"
    );
    assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
}

#[test]
fn server_error_codes_are_matched() {
    let e = FeedError::from(redis::RedisError::from((
        redis::ErrorKind::Extension,
        "An error was signalled by the server",
        "NOGROUP No such key 'jobs' or consumer group 'g'".to_string(),
    )));
    assert!(!e.is("BUSYGROUP"));
    assert!(FeedError::new("BUSYGROUP Consumer Group name already exists").is("BUSYGROUP"));
}

#[test]
fn keys_name_the_stream_and_the_group() {
    assert_eq!(progress_key("{s7}:jobs", "1-2"), "{s7}:jobs:progress:1-2");
    assert_eq!(claims_key("mailhop"), "mailhop:feed:mailhop:claims");
}

#[test]
fn the_autoclaim_cursor_is_read_and_checked() {
    let reply = Value::Array(vec![bulk("1700000000000-3"), Value::Array(vec![])]);
    assert_eq!(autoclaim_cursor(&reply).as_deref(), Some("1700000000000-3"));
    let done = Value::Array(vec![
        bulk("0-0"),
        Value::Array(vec![]),
        Value::Array(vec![]),
    ]);
    assert_eq!(autoclaim_cursor(&done).as_deref(), Some("0-0"));
    for bad in ["", "-", "1-", "-1", "1-x", "+", "1-2-3", "١-2"] {
        let reply = Value::Array(vec![bulk(bad), Value::Array(vec![])]);
        assert_eq!(autoclaim_cursor(&reply), None, "{bad:?}");
    }
    assert_eq!(autoclaim_cursor(&Value::Int(3)), None);
    assert_eq!(autoclaim_cursor(&Value::Array(vec![])), None);
}

#[test]
fn results_stream_with_stream_is_one_per_job_stream() {
    assert_eq!(
        results_key("$stream:results", "{s7}:jobs"),
        "{s7}:jobs:results"
    );
    assert_eq!(results_key("r:$stream:$stream", "a"), "r:a:a");
}

#[test]
fn results_stream_without_stream_is_shared() {
    assert_eq!(
        results_key("mailhop:results", "{s7}:jobs"),
        "mailhop:results"
    );
}

#[test]
fn dead_nodes_are_looked_for_every_eighth_of_claim_after_within_bounds() {
    use std::time::Duration;
    assert_eq!(
        claim_period(Duration::from_secs(2)),
        Duration::from_millis(250)
    );
    assert_eq!(
        claim_period(Duration::from_secs(4)),
        Duration::from_millis(500)
    );
    assert_eq!(
        claim_period(Duration::from_secs(30)),
        Duration::from_secs(1)
    );
    assert_eq!(claim_period(Duration::ZERO), Duration::from_millis(250));
}
