//! Retries of the Redis Streams feed (`src/feed/retry.rs`, issue 18)
//! against a real redis-server started by each test on a loopback port:
//! scheduling deferred recipients in the due set, promotion back to the
//! stream (atomic, exactly once even with racing promoters), expiry past
//! the queue lifetime, and a real delivery's answer (a scripted server
//! deferring one recipient) turned into a retry.

use std::thread;

use mailhop::feed::retry::{
    Decision, Outcome, RetryConfig, decide, due_key, jobs_key, promote_due, schedule, waiting,
};
use mailhop::job::parse_job;
use serde_json::{Value, json};

mod common;
use common::redis::Redis;
use common::{Behaviour, Delivery, smtp_server};

const DAY: u64 = 86_400;

fn on() -> RetryConfig {
    RetryConfig {
        retries: true,
        ..RetryConfig::default()
    }
}

fn job_json(id: &str, recipients: &[&str], arrival: Option<u64>) -> String {
    let mut job = json!({
        "id": id,
        "sender": "s@x.test",
        "recipients": recipients.iter().map(|a| json!({"address": a})).collect::<Vec<_>>(),
        "message": {"data": "Subject: retry\r\n\r\nhello\r\n"},
    });
    if let Some(t) = arrival {
        job["arrival_time"] = json!(t);
    }
    job.to_string()
}

fn result_json(id: &str, recipients: &[(&str, &str, &str)]) -> String {
    let list: Vec<Value> = recipients
        .iter()
        .map(|(address, status, dsn)| {
            json!({
                "address": address, "status": status, "dsn": dsn,
                "relay": "mx.y.test[192.0.2.1]:25",
                "diagnostic": format!("host mx.y.test[192.0.2.1] said: 452 {dsn} try later"),
                "tls": null, "tls_policy": null,
            })
        })
        .collect();
    json!({"id": id, "recipients": list}).to_string()
}

/// The `job` fields of the stream's entries, oldest first.
fn stream_jobs(conn: &mut redis::Connection, stream: &str) -> Vec<Value> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| {
            assert_eq!(fields.len(), 1, "one field per entry: {fields:?}");
            let (name, value) = fields.into_iter().next().expect("a field");
            assert_eq!(name, "job");
            serde_json::from_str(&value).expect("job JSON")
        })
        .collect()
}

#[test]
fn deferred_recipients_return_to_the_stream_when_due() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let arrival = 1_700_000_000;
    let now = arrival + 1000;
    let job = job_json("j1", &["a@y.test", "b@y.test", "c@y.test"], Some(arrival));
    let result = result_json(
        "j1",
        &[
            ("a@y.test", "sent", "2.0.0"),
            ("b@y.test", "deferred", "4.2.2"),
            ("c@y.test", "deferred", "4.4.1"),
        ],
    );
    let outcome = schedule(&mut conn, &on(), "jobs", "1-0", &job, &result, now).expect("schedule");
    assert_eq!(
        outcome,
        Outcome::Scheduled {
            due: now + 1000,
            recipients: 2,
            first: true
        }
    );
    assert_eq!(waiting(&mut conn, "jobs").expect("ZCARD"), 1);

    assert_eq!(
        promote_due(&mut conn, "jobs", now + 999, 10).expect("promote"),
        0
    );
    assert!(stream_jobs(&mut conn, "jobs").is_empty(), "not due yet");

    assert_eq!(
        promote_due(&mut conn, "jobs", now + 1000, 10).expect("promote"),
        1
    );
    let jobs = stream_jobs(&mut conn, "jobs");
    assert_eq!(jobs.len(), 1);
    let back = &jobs[0];
    assert_eq!(back["id"], "j1");
    assert_eq!(back["arrival_time"], arrival);
    assert_eq!(
        back["recipients"],
        json!([{"address": "b@y.test"}, {"address": "c@y.test"}])
    );
    assert_eq!(back["message"]["data"], "Subject: retry\r\n\r\nhello\r\n");
    parse_job(back.to_string().as_bytes()).expect("the retried job is a valid job");

    // Nothing left behind: neither the due set nor the job hash.
    assert_eq!(waiting(&mut conn, "jobs").expect("ZCARD"), 0);
    let left: usize = redis::cmd("HLEN")
        .arg(jobs_key("jobs"))
        .query(&mut conn)
        .expect("HLEN");
    assert_eq!(left, 0);
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 9999, 10).expect("promote"),
        0
    );
}

#[test]
fn past_the_lifetime_deferred_recipients_bounce_and_nothing_waits() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let arrival = 1_700_000_000;
    let job = job_json("j2", &["a@y.test", "b@y.test"], Some(arrival));
    let result = result_json(
        "j2",
        &[
            ("a@y.test", "deferred", "4.4.1"),
            ("b@y.test", "bounced", "5.1.1"),
        ],
    );
    let outcome = schedule(
        &mut conn,
        &on(),
        "jobs",
        "2-0",
        &job,
        &result,
        arrival + 5 * DAY,
    )
    .expect("schedule");
    let Outcome::Expired(bounced) = outcome else {
        panic!("expected expiry, got {outcome:?}");
    };
    let lines = bounced.text_lines();
    assert_eq!(
        lines,
        [
            "to=<a@y.test>, relay=mx.y.test[192.0.2.1]:25, dsn=4.4.1, status=bounced \
             (host mx.y.test[192.0.2.1] said: 452 4.4.1 try later)"
        ]
    );
    assert_eq!(
        bounced.log,
        Some(vec![
            "j2: from=<s@x.test>, status=expired, returned to sender".to_string()
        ])
    );
    assert_eq!(waiting(&mut conn, "jobs").expect("ZCARD"), 0);

    // One second earlier it is still retried, at maximal_backoff_time.
    let outcome = schedule(
        &mut conn,
        &on(),
        "jobs",
        "2-1",
        &job,
        &result,
        arrival + 5 * DAY - 1,
    )
    .expect("schedule");
    assert_eq!(
        outcome,
        Outcome::Scheduled {
            due: arrival + 5 * DAY - 1 + 4000,
            recipients: 1,
            first: true
        }
    );
}

#[test]
fn retries_off_or_nothing_deferred_writes_nothing() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let job = job_json("j3", &["a@y.test"], Some(1_700_000_000));
    let deferred = result_json("j3", &[("a@y.test", "deferred", "4.4.1")]);
    let off = RetryConfig::default();
    assert_eq!(
        schedule(
            &mut conn,
            &off,
            "jobs",
            "3-0",
            &job,
            &deferred,
            1_700_000_100
        )
        .expect("schedule"),
        Outcome::Off
    );
    let sent = result_json("j3", &[("a@y.test", "sent", "2.0.0")]);
    assert_eq!(
        schedule(&mut conn, &on(), "jobs", "4-0", &job, &sent, 1_700_000_100).expect("schedule"),
        Outcome::Done
    );
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    assert!(keys.is_empty(), "nothing written: {keys:?}");
    // A result that is not this job's is refused, and writes nothing.
    let other = result_json("other", &[("a@y.test", "deferred", "4.4.1")]);
    assert!(schedule(&mut conn, &on(), "jobs", "5-0", &job, &other, 1_700_000_100).is_err());
    assert!(schedule(&mut conn, &on(), "jobs", "6-0", "{not json", &deferred, 1).is_err());
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    assert!(keys.is_empty(), "nothing written: {keys:?}");
}

#[test]
fn promotion_follows_due_order_and_its_limit() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let now = 1_700_000_000;
    // Five jobs arriving at different times: due 300..=700 s from now.
    for (i, age) in [700u64, 300, 500, 400, 600].iter().enumerate() {
        let id = format!("k{i}");
        let job = job_json(&id, &["a@y.test"], Some(now - age));
        let result = result_json(&id, &[("a@y.test", "deferred", "4.4.1")]);
        schedule(
            &mut conn,
            &on(),
            "jobs",
            &format!("{i}-0"),
            &job,
            &result,
            now,
        )
        .expect("schedule");
    }
    let scores: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(due_key("jobs"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut conn)
        .expect("ZRANGE");
    let dues: Vec<u64> = scores.iter().map(|(_, s)| *s - now).collect();
    assert_eq!(dues, [300, 400, 500, 600, 700]);

    assert_eq!(
        promote_due(&mut conn, "jobs", now + 10_000, 2).expect("promote"),
        2
    );
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 10_000, 0).expect("promote"),
        0
    );
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 10_000, 100).expect("promote"),
        3
    );
    let ids: Vec<String> = stream_jobs(&mut conn, "jobs")
        .iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["k1", "k3", "k2", "k4", "k0"], "earliest due first");
}

/// Racing promoters (one per node) move each due job exactly once.
#[test]
fn racing_promoters_move_each_job_exactly_once() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let now = 1_700_000_000;
    const JOBS: usize = 300;
    for i in 0..JOBS {
        let id = format!("r{i}");
        let job = job_json(&id, &["a@y.test"], Some(now));
        let result = result_json(&id, &[("a@y.test", "deferred", "4.4.1")]);
        schedule(
            &mut conn,
            &on(),
            "jobs",
            &format!("{i}-0"),
            &job,
            &result,
            now,
        )
        .expect("schedule");
    }
    let promoters: Vec<_> = (0..3)
        .map(|_| {
            let mut conn = redis.conn();
            thread::spawn(move || {
                let mut moved = 0;
                for _ in 0..JOBS {
                    let n = promote_due(&mut conn, "jobs", now + 300, 7).expect("promote");
                    if n == 0 {
                        break;
                    }
                    moved += n;
                }
                moved
            })
        })
        .collect();
    let total: usize = promoters
        .into_iter()
        .map(|t| t.join().expect("promoter"))
        .sum();
    assert_eq!(total, JOBS);
    let mut ids: Vec<String> = stream_jobs(&mut conn, "jobs")
        .iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), JOBS);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), JOBS, "no job added twice");
    assert_eq!(waiting(&mut conn, "jobs").expect("ZCARD"), 0);
}

/// A real answer: `mailhop send --json` to a server that defers one of
/// two recipients (452 to the second RCPT); the retry carries that one.
#[test]
fn a_real_deferral_is_scheduled_with_its_recipient() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let server = smtp_server(Behaviour {
        rcpt: vec!["250 2.1.5 Ok".into(), "452 4.2.2 Mailbox full".into()],
        ..Behaviour::default()
    });
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["one@y.test", "two@y.test"])
        .id("real1")
        .json()
        .run();
    let answer = run.stdout.clone();
    let parsed = run.json();
    assert_eq!(parsed["recipients"][1]["status"], "deferred", "{answer}");
    let arrival = 1_700_000_000;
    let job = json!({
        "id": "real1",
        "nexthop": server.nexthop(),
        "sender": "a@x.test",
        "recipients": [{"address": "one@y.test"}, {"address": "two@y.test"}],
        "message": {"data": "Subject: t\r\n\r\nx\r\n"},
        "arrival_time": arrival,
    })
    .to_string();
    let now = arrival + 60;
    let outcome =
        schedule(&mut conn, &on(), "jobs", "9-0", &job, answer.trim(), now).expect("schedule");
    assert_eq!(
        outcome,
        Outcome::Scheduled {
            due: now + 300,
            recipients: 1,
            first: true
        }
    );
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 300, 10).expect("promote"),
        1
    );
    let jobs = stream_jobs(&mut conn, "jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["recipients"], json!([{"address": "two@y.test"}]));
    assert_eq!(jobs[0]["nexthop"], server.nexthop());
    drop(server);
}

/// A job run again after a crash (the same stream entry finished twice)
/// is scheduled once; the first schedule stands.
#[test]
fn the_same_entry_is_scheduled_once() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let now = 1_700_000_000;
    let job = job_json("d1", &["a@y.test"], Some(now));
    let result = result_json("d1", &[("a@y.test", "deferred", "4.4.1")]);
    let first = schedule(&mut conn, &on(), "jobs", "1700-0", &job, &result, now).expect("schedule");
    let again =
        schedule(&mut conn, &on(), "jobs", "1700-0", &job, &result, now + 5).expect("schedule");
    assert_eq!(
        first,
        Outcome::Scheduled {
            due: now + 300,
            recipients: 1,
            first: true
        }
    );
    assert_eq!(
        again,
        Outcome::Scheduled {
            due: now + 305,
            recipients: 1,
            first: false
        }
    );
    assert_eq!(waiting(&mut conn, "jobs").expect("ZCARD"), 1);
    // The first schedule's due time stands.
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 299, 10).expect("promote"),
        0
    );
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 300, 10).expect("promote"),
        1
    );
    assert_eq!(stream_jobs(&mut conn, "jobs").len(), 1);
}

/// The feed's use: the result, the XACK and the retry in one MULTI/EXEC.
#[test]
fn the_retry_command_joins_the_feeds_transaction() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    let now = 1_700_000_000;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("jobs")
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut conn)
        .expect("XGROUP");
    let job = job_json("t1", &["a@y.test", "b@y.test"], Some(now - 400));
    let _: String = redis::cmd("XADD")
        .arg("jobs")
        .arg("*")
        .arg("job")
        .arg(&job)
        .query(&mut conn)
        .expect("XADD");
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query(&mut conn)
        .expect("XREADGROUP");
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("jobs")
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut conn)
        .expect("XPENDING");
    assert_eq!(pending.len(), 1, "{read:?}");
    let entry = pending[0].0.clone();
    let result = result_json(
        "t1",
        &[
            ("a@y.test", "deferred", "4.4.1"),
            ("b@y.test", "sent", "2.0.0"),
        ],
    );
    let Decision::Retry(retry) = decide(&on(), &job, &result, now).expect("decide") else {
        panic!("expected a retry");
    };
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XADD")
        .arg("results")
        .arg("*")
        .arg("result")
        .arg(&result)
        .ignore()
        .cmd("XACK")
        .arg("jobs")
        .arg("g")
        .arg(&entry)
        .ignore()
        .add_command(retry.command("jobs", &entry));
    let (added,): (i64,) = pipe.query(&mut conn).expect("MULTI/EXEC");
    assert_eq!(added, 1);
    let results: usize = redis::cmd("XLEN")
        .arg("results")
        .query(&mut conn)
        .expect("XLEN");
    assert_eq!(results, 1);
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("jobs")
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut conn)
        .expect("XPENDING");
    assert!(pending.is_empty(), "acknowledged");
    assert_eq!(
        promote_due(&mut conn, "jobs", now + 400, 10).expect("promote"),
        1
    );
    let jobs = stream_jobs(&mut conn, "jobs");
    assert_eq!(jobs.len(), 2, "the original entry and the retry");
    assert_eq!(jobs[1]["recipients"], json!([{"address": "a@y.test"}]));
}

/// Redis gone: an error to handle (the feed reconnects), never a panic.
#[test]
fn redis_gone_is_an_error() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let mut conn = redis.conn();
    drop(redis);
    let job = job_json("g1", &["a@y.test"], Some(1_700_000_000));
    let result = result_json("g1", &[("a@y.test", "deferred", "4.4.1")]);
    let got = schedule(
        &mut conn,
        &on(),
        "jobs",
        "1-0",
        &job,
        &result,
        1_700_000_001,
    );
    assert!(
        matches!(got, Err(mailhop::feed::retry::RetryError::Redis(_))),
        "{got:?}"
    );
    let got = promote_due(&mut conn, "jobs", 1_700_000_001, 10);
    assert!(
        matches!(got, Err(mailhop::feed::retry::RetryError::Redis(_))),
        "{got:?}"
    );
}
