use super::*;

use crate::job::JobRecipient;

const DAY: u64 = 86_400;

fn job(sender: &str, arrival: Option<u64>) -> Job {
    Job {
        arrival_time: arrival,
        ..Job::new(
            "j1",
            sender,
            [
                JobRecipient::new("a@example.com"),
                JobRecipient::new("b@example.com"),
                JobRecipient::new("c@example.com"),
            ],
            MessageRef::Data {
                data: "Subject: x\r\n\r\nhi\r\n".into(),
            },
        )
    }
}

fn rcpt(address: &str, status: Status, dsn: &str, diagnostic: &str) -> RecipientResult {
    RecipientResult {
        address: address.into(),
        status,
        dsn: dsn.into(),
        relay: Some("mx.example.com[192.0.2.1]:25".into()),
        diagnostic: diagnostic.into(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

fn result(statuses: [Status; 3]) -> JobResult {
    let [a, b, c] = statuses;
    JobResult {
        id: "j1".into(),
        recipients: vec![
            rcpt("a@example.com", a, "2.0.0", "250 2.0.0 Ok"),
            rcpt(
                "b@example.com",
                b,
                "4.2.2",
                "host mx.example.com[192.0.2.1] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)",
            ),
            rcpt(
                "c@example.com",
                c,
                "4.4.1",
                "connect to mx.example.com[192.0.2.1]:25: Connection refused",
            ),
        ],
        log: None,
    }
}

#[test]
fn defaults_are_postfix() {
    let cfg = RetryConfig::default();
    assert!(!cfg.retries);
    assert_eq!(cfg.minimal_backoff_time.as_secs(), 300);
    assert_eq!(cfg.maximal_backoff_time.as_secs(), 4000);
    assert_eq!(cfg.maximal_queue_lifetime.as_secs(), 5 * DAY);
    assert_eq!(cfg.bounce_queue_lifetime.as_secs(), 5 * DAY);
    assert_eq!(cfg.check(), Ok(()));
}

#[test]
fn config_reads_duration_strings_and_defaults() {
    let cfg: RetryConfig = toml::from_str(
        "retries = true\nminimal_backoff_time = \"1m\"\nmaximal_queue_lifetime = \"2d\"\n",
    )
    .expect("config parses");
    assert!(cfg.retries);
    assert_eq!(cfg.minimal_backoff_time.as_secs(), 60);
    assert_eq!(cfg.maximal_backoff_time.as_secs(), 4000);
    assert_eq!(cfg.maximal_queue_lifetime.as_secs(), 2 * DAY);
    let empty: RetryConfig = toml::from_str("").expect("empty parses");
    assert_eq!(empty, RetryConfig::default());
    let text = toml::to_string(&RetryConfig::default()).expect("serializes");
    assert!(
        text.contains("maximal_queue_lifetime = \"432000s\""),
        "{text}"
    );
    assert!(toml::from_str::<RetryConfig>("minimal_backoff_time = \"-1s\"").is_err());
}

#[test]
fn check_refuses_zero_and_inverted_backoff() {
    let zero = RetryConfig {
        minimal_backoff_time: Duration::ZERO,
        ..RetryConfig::default()
    };
    assert!(zero.check().is_err());
    let inverted = RetryConfig {
        maximal_backoff_time: Duration::from_secs(100),
        ..RetryConfig::default()
    };
    assert!(inverted.check().is_err());
}

/// qmgr_active.c: the delay is the time in the queue, clamped to
/// [minimal_backoff_time, maximal_backoff_time].
#[test]
fn backoff_is_age_clamped() {
    let cfg = RetryConfig::default();
    let t0 = 1_000_000;
    for (age, want) in [
        (0, 300),
        (1, 300),
        (299, 300),
        (300, 300),
        (301, 301),
        (600, 600),
        (1200, 1200),
        (2400, 2400),
        (3999, 3999),
        (4000, 4000),
        (4001, 4000),
        (DAY, 4000),
    ] {
        assert_eq!(cfg.backoff(Some(t0), t0 + age), want, "age {age}");
    }
    assert_eq!(cfg.backoff(None, t0), 300, "no arrival time");
    assert_eq!(cfg.backoff(Some(t0 + 50), t0), 300, "arrival in the future");
}

/// Trying at each due time, the gaps double from minimal_backoff_time
/// (300, 600, 1200, 2400) and stay at maximal_backoff_time.
#[test]
fn successive_tries_double_then_cap() {
    let cfg = RetryConfig::default();
    let arrival = 1_000_000;
    let mut now = arrival;
    let mut gaps = Vec::new();
    for _ in 0..7 {
        let gap = cfg.backoff(Some(arrival), now);
        gaps.push(gap);
        now += gap;
    }
    assert_eq!(gaps, [300, 300, 600, 1200, 2400, 4000, 4000]);
}

#[test]
fn lifetime_boundary_and_null_sender() {
    let cfg = RetryConfig {
        bounce_queue_lifetime: Duration::from_secs(DAY),
        ..RetryConfig::default()
    };
    let t0 = 1_000_000;
    assert!(!cfg.expired("s@example.com", t0, t0 + 5 * DAY - 1));
    assert!(cfg.expired("s@example.com", t0, t0 + 5 * DAY));
    assert!(!cfg.expired("", t0, t0 + DAY - 1));
    assert!(cfg.expired("", t0, t0 + DAY));
    // bounce_queue_lifetime is at most maximal_queue_lifetime (qmgr.c).
    let longer = RetryConfig {
        bounce_queue_lifetime: Duration::from_secs(9 * DAY),
        ..RetryConfig::default()
    };
    assert_eq!(longer.lifetime(""), 5 * DAY);
    // 0: one attempt only.
    let once = RetryConfig {
        maximal_queue_lifetime: Duration::ZERO,
        ..RetryConfig::default()
    };
    assert!(once.expired("s@example.com", t0, t0));
    // No overflow: an arrival time near the end of time is not expired.
    assert!(!cfg.expired("s@example.com", u64::MAX, 0));
}

#[test]
fn plan_keeps_only_deferred_recipients_and_arrival() {
    let cfg = RetryConfig::default();
    let arrival = 1_000_000;
    let now = arrival + 900;
    let got = plan(
        &cfg,
        &job("s@example.com", Some(arrival)),
        &result([Status::Sent, Status::Deferred, Status::Deferred]),
        now,
    )
    .expect("plan");
    let Plan::Retry { due, job: next } = got else {
        panic!("expected a retry, got {got:?}");
    };
    assert_eq!(due, now + 900);
    assert_eq!(next.arrival_time, Some(arrival));
    let addresses: Vec<&str> = next.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(addresses, ["b@example.com", "c@example.com"]);
    assert_eq!(next.id, "j1");
    assert_eq!(next.sender, "s@example.com");
}

#[test]
fn plan_stamps_a_missing_arrival_time() {
    let now = 2_000_000;
    let got = plan(
        &RetryConfig::default(),
        &job("s@example.com", None),
        &result([Status::Deferred, Status::Sent, Status::Bounced]),
        now,
    )
    .expect("plan");
    let Plan::Retry { due, job: next } = got else {
        panic!("expected a retry, got {got:?}");
    };
    assert_eq!(due, now + 300);
    assert_eq!(next.arrival_time, Some(now));
    assert_eq!(next.recipients.len(), 1);
}

#[test]
fn plan_without_deferred_recipients_is_done() {
    let got = plan(
        &RetryConfig::default(),
        &job("s@example.com", Some(1)),
        &result([Status::Sent, Status::Bounced, Status::Sent]),
        10,
    )
    .expect("plan");
    assert_eq!(got, Plan::Done);
}

#[test]
fn plan_past_lifetime_bounces_with_the_last_reason_and_qmgr_log() {
    let arrival = 1_000_000;
    let got = plan(
        &RetryConfig::default(),
        &job("s@example.com", Some(arrival)),
        &result([Status::Sent, Status::Deferred, Status::Deferred]),
        arrival + 5 * DAY,
    )
    .expect("plan");
    let Plan::Expired(bounced) = got else {
        panic!("expected expiry, got {got:?}");
    };
    assert_eq!(bounced.id, "j1");
    assert_eq!(bounced.recipients.len(), 2);
    let b = &bounced.recipients[0];
    assert_eq!(b.address, "b@example.com");
    assert_eq!(b.status, Status::Bounced);
    assert_eq!(b.dsn, "4.2.2", "Postfix keeps the deferral's status");
    assert!(b.diagnostic.contains("452 4.2.2 Mailbox full"));
    assert_eq!(bounced.recipients[1].dsn, "4.4.1");
    assert_eq!(
        bounced.log,
        Some(vec![
            "j1: from=<s@example.com>, status=expired, returned to sender".to_string()
        ])
    );
    assert_eq!(
        bounced.text_lines()[0],
        "to=<b@example.com>, relay=mx.example.com[192.0.2.1]:25, dsn=4.2.2, status=bounced \
         (host mx.example.com[192.0.2.1] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command))"
    );
}

#[test]
fn plan_refuses_a_result_of_another_job() {
    let cfg = RetryConfig::default();
    let j = job("s@example.com", Some(1));
    let mut other = result([Status::Deferred; 3]);
    other.id = "j2".into();
    assert!(matches!(
        plan(&cfg, &j, &other, 10),
        Err(RetryError::Result(_))
    ));
    let mut short = result([Status::Deferred; 3]);
    short.recipients.pop();
    assert!(matches!(
        plan(&cfg, &j, &short, 10),
        Err(RetryError::Result(_))
    ));
    let mut swapped = result([Status::Deferred; 3]);
    swapped.recipients.swap(0, 1);
    assert!(matches!(
        plan(&cfg, &j, &swapped, 10),
        Err(RetryError::Result(_))
    ));
}

#[test]
fn plan_refuses_to_retry_a_passed_descriptor() {
    let mut j = job("s@example.com", Some(1));
    j.message = MessageRef::Fd { fd: true };
    let got = plan(
        &RetryConfig::default(),
        &j,
        &result([Status::Deferred; 3]),
        10,
    );
    assert!(matches!(got, Err(RetryError::Job(_))));
}

#[test]
fn keys_share_the_streams_hash_tag() {
    assert_eq!(due_key("mail{0}"), "mail{0}:retry");
    assert_eq!(jobs_key("mail{0}"), "mail{0}:retry:jobs");
}

#[test]
fn decide_serializes_the_retry_and_respects_off() {
    let j = job("s@example.com", Some(1_000_000));
    let job_json = serde_json::to_string(&j).expect("job JSON");
    let mut answer = Vec::new();
    result([Status::Sent, Status::Deferred, Status::Sent]).write_json(&mut answer);
    let answer = String::from_utf8(answer).expect("UTF-8");
    let off = RetryConfig::default();
    assert_eq!(
        decide(&off, &job_json, &answer, 1_000_010).expect("decide"),
        Decision::Off
    );
    let on = RetryConfig {
        retries: true,
        ..RetryConfig::default()
    };
    let got = decide(&on, &job_json, &answer, 1_000_010).expect("decide");
    let Decision::Retry(retry) = got else {
        panic!("expected a retry, got {got:?}");
    };
    assert_eq!(retry.due, 1_000_310);
    assert_eq!(retry.recipients, 1);
    let back = parse_job(retry.job_json.as_bytes()).expect("a valid job");
    assert_eq!(back.job().recipients, [JobRecipient::new("b@example.com")]);
    assert_eq!(back.job().arrival_time, Some(1_000_000));
    assert!(matches!(
        decide(&on, "{", &answer, 1),
        Err(RetryError::Job(_))
    ));
    assert!(matches!(
        decide(&on, &job_json, "[]", 1),
        Err(RetryError::Result(_))
    ));
}

#[test]
fn retry_command_is_one_eval_with_its_keys() {
    let retry = Retry {
        due: 42,
        recipients: 1,
        job_json: "{}".into(),
    };
    let packed =
        String::from_utf8_lossy(&retry.command("s{1}", "1-0").get_packed_command()).into_owned();
    for part in [
        "EVAL",
        "HSETNX",
        "s{1}:retry\r\n",
        "s{1}:retry:jobs",
        "$2\r\n42\r\n",
        "1-0",
    ] {
        assert!(packed.contains(part), "{part:?} in {packed:?}");
    }
}
