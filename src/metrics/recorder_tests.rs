use std::time::Duration;

use super::*;
use crate::job::RecipientResult;
use crate::metrics::{DestinationGauges, Snapshot};
use crate::recipients::Status;

fn rcpt(status: Status, dsn: &str) -> RecipientResult {
    RecipientResult {
        address: "a@example.test".into(),
        status,
        dsn: dsn.into(),
        relay: None,
        diagnostic: String::new(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

fn sent(n: usize) -> Vec<RecipientResult> {
    (0..n).map(|_| rcpt(Status::Sent, "2.0.0")).collect()
}

/// The value of the sample `line_start` (name and labels as rendered).
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
}

fn key(name: &str) -> DestinationKey {
    DestinationKey {
        name: name.into(),
        transport: "smtp",
    }
}

#[test]
fn dsn_labels_are_class_and_class_subject() {
    let labels = |dsn: &str| {
        let (class, subject) = dsn_labels(dsn);
        (class, subject.into_owned())
    };
    assert_eq!(labels("2.0.0"), ("2", "2.0".into()));
    assert_eq!(labels("4.4.1"), ("4", "4.4".into()));
    assert_eq!(labels("5.7.26"), ("5", "5.7".into()));
    assert_eq!(labels("4.123.1"), ("4", "4.123".into()));
    assert_eq!(labels("4.01.1"), ("4", "4.01".into()));
    assert_eq!(labels("4.1234.1"), ("4", OTHER.into()));
    assert_eq!(labels("4.x.1"), ("4", OTHER.into()));
    assert_eq!(labels("4"), ("4", OTHER.into()));
    assert_eq!(labels("3.0.0"), (OTHER, OTHER.into()));
    assert_eq!(labels(""), (OTHER, OTHER.into()));
}

#[test]
fn an_answer_counts_recipients_by_outcome_dsn_and_destination() {
    let recorder = Recorder::new(20);
    let recipients = vec![
        rcpt(Status::Sent, "2.0.0"),
        rcpt(Status::Sent, "2.0.0"),
        rcpt(Status::Deferred, "4.4.1"),
        rcpt(Status::Bounced, "5.1.1"),
    ];
    recorder.answer(
        "example.com",
        "smtp",
        &recipients,
        Duration::from_millis(30),
    );
    recorder.answer("[127.0.0.1]:24", "LMTP", &sent(1), Duration::from_millis(2));
    let text = recorder.render(None, Format::Prometheus);
    let expect = [
        (
            r#"mailhop_recipients_total{transport="smtp",outcome="sent",dsn_class="2",dsn_subject="2.0"}"#,
            2.0,
        ),
        (
            r#"mailhop_recipients_total{transport="smtp",outcome="deferred",dsn_class="4",dsn_subject="4.4"}"#,
            1.0,
        ),
        (
            r#"mailhop_recipients_total{transport="smtp",outcome="bounced",dsn_class="5",dsn_subject="5.1"}"#,
            1.0,
        ),
        (
            r#"mailhop_recipients_total{transport="lmtp",outcome="sent",dsn_class="2",dsn_subject="2.0"}"#,
            1.0,
        ),
        (
            r#"mailhop_destination_recipients_total{destination="example.com",transport="smtp",outcome="sent"}"#,
            2.0,
        ),
        (
            r#"mailhop_destination_recipients_total{destination="example.com",transport="smtp",outcome="deferred"}"#,
            1.0,
        ),
        (
            r#"mailhop_destination_recipients_total{destination="example.com",transport="smtp",outcome="bounced"}"#,
            1.0,
        ),
        (
            r#"mailhop_destination_recipients_total{destination="[127.0.0.1]:24",transport="lmtp",outcome="sent"}"#,
            1.0,
        ),
        (
            r#"mailhop_job_duration_seconds_count{transport="smtp"}"#,
            1.0,
        ),
        (
            r#"mailhop_job_duration_seconds_bucket{transport="smtp",le="0.05"}"#,
            1.0,
        ),
        (
            r#"mailhop_job_duration_seconds_bucket{transport="smtp",le="0.025"}"#,
            0.0,
        ),
        (
            r#"mailhop_job_duration_seconds_count{transport="lmtp"}"#,
            1.0,
        ),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
}

#[test]
fn connects_and_tls_sessions_are_counted() {
    let recorder = Recorder::new(20);
    recorder.connect(Duration::from_micros(300), true);
    recorder.connect(Duration::from_secs(3), false);
    recorder.tls(Some(("Verified", "TLSv1.3")));
    recorder.tls(Some(("untrusted", "TLSv1.2")));
    recorder.tls(Some(("bogus\"\n", "TLSv1.2")));
    recorder.tls(None);
    let text = recorder.render(None, Format::Prometheus);
    let expect = [
        (
            r#"mailhop_connect_duration_seconds_count{result="ok"}"#,
            1.0,
        ),
        (
            r#"mailhop_connect_duration_seconds_bucket{result="ok",le="0.0005"}"#,
            1.0,
        ),
        (
            r#"mailhop_connect_duration_seconds_count{result="failed"}"#,
            1.0,
        ),
        (
            r#"mailhop_connect_duration_seconds_bucket{result="failed",le="2.5"}"#,
            0.0,
        ),
        (
            r#"mailhop_connect_duration_seconds_bucket{result="failed",le="10"}"#,
            1.0,
        ),
        (
            r#"mailhop_tls_sessions_total{level="verified",version="TLSv1.3"}"#,
            1.0,
        ),
        (
            r#"mailhop_tls_sessions_total{level="untrusted",version="TLSv1.2"}"#,
            1.0,
        ),
        (
            r#"mailhop_tls_sessions_total{level="other",version="TLSv1.2"}"#,
            1.0,
        ),
        ("mailhop_tls_handshake_failures_total", 1.0),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
}

#[test]
fn every_family_is_declared_before_its_first_series() {
    let text = Recorder::new(20).render(Some(Snapshot::default()), Format::Prometheus);
    for name in [
        "mailhop_recipients_total counter",
        "mailhop_destination_recipients_total counter",
        "mailhop_job_duration_seconds histogram",
        "mailhop_connect_duration_seconds histogram",
        "mailhop_tls_sessions_total counter",
        "mailhop_jobs_accepted_total counter",
        "mailhop_queue_depth gauge",
        "mailhop_workers_busy gauge",
        "mailhop_cache_hits_total counter",
        "mailhop_destinations_paused gauge",
        "mailhop_destination_active gauge",
        "mailhop_destination_throttling_replies_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name}\n")),
            "{name} in\n{text}"
        );
    }
}

#[test]
fn destination_labels_are_destination_names_and_escaped() {
    let recorder = Recorder::new(20);
    recorder.answer("we\"ird\\host\n", "smtp", &sent(1), Duration::ZERO);
    let long = "x".repeat(300);
    recorder.answer(&long, "smtp", &sent(1), Duration::ZERO);
    let text = recorder.render(None, Format::Prometheus);
    assert!(
        text.contains(r#"destination="we\"ird\\host\n",transport="smtp",outcome="sent"} 1"#),
        "{text}"
    );
    let cut = format!("destination=\"{}\",", "x".repeat(255));
    assert!(text.contains(&cut), "{text}");
}

#[test]
fn beyond_the_label_limit_destinations_are_other_until_a_scrape_promotes_them() {
    let recorder = Recorder::new(2);
    recorder.answer("a.test", "smtp", &sent(1), Duration::ZERO);
    recorder.answer("b.test", "smtp", &sent(1), Duration::ZERO);
    recorder.answer("c.test", "smtp", &sent(10), Duration::ZERO);
    let line = |name: &str| {
        format!(
            r#"mailhop_destination_recipients_total{{destination="{name}",transport="smtp",outcome="sent"}}"#
        )
    };
    let first = recorder.render(None, Format::Prometheus);
    // Rendering rebalanced after counting: c.test was "other" until now.
    assert_eq!(sample(&first, &line("other")), Some(10.0), "{first}");
    assert_eq!(sample(&first, &line("c.test")), None, "{first}");
    recorder.answer("c.test", "smtp", &sent(3), Duration::ZERO);
    let second = recorder.render(None, Format::Prometheus);
    assert_eq!(sample(&second, &line("c.test")), Some(3.0), "{second}");
    assert_eq!(sample(&second, &line("other")), Some(10.0), "{second}");
    let labelled = ["a.test", "b.test"]
        .iter()
        .filter(|n| sample(&second, &line(n)).is_some())
        .count();
    assert_eq!(labelled, 1, "one of a/b lost its label:\n{second}");
    let series = second
        .lines()
        .filter(|l| l.starts_with("mailhop_destination_recipients_total{"))
        .count();
    assert_eq!(series, 3, "limit 2 plus other:\n{second}");
}

#[test]
fn label_limit_zero_puts_every_destination_under_other() {
    let recorder = Recorder::new(0);
    recorder.answer("a.test", "smtp", &sent(2), Duration::ZERO);
    recorder.answer("b.test", "lmtp", &sent(1), Duration::ZERO);
    let text = recorder.render(None, Format::Prometheus);
    let mut series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mailhop_destination_recipients_total{"))
        .collect();
    series.sort();
    assert_eq!(
        series,
        [
            r#"mailhop_destination_recipients_total{destination="other",transport="lmtp",outcome="sent"} 1"#,
            r#"mailhop_destination_recipients_total{destination="other",transport="smtp",outcome="sent"} 2"#,
        ]
    );
}

#[test]
fn the_board_swaps_only_for_a_clear_lead() {
    let mut board = Board::new(1);
    assert!(board.count(&key("a"), 100));
    assert!(!board.count(&key("b"), 110));
    assert!(
        board.rebalance().is_empty(),
        "110 is not a quarter more than 100"
    );
    assert_eq!(board.labelled(), ["a"]);
    assert!(!board.count(&key("b"), 40));
    let demoted = board.rebalance();
    assert_eq!(demoted, [key("a")]);
    assert_eq!(board.labelled(), ["b"]);
    assert!(board.count(&key("b"), 1));
    assert!(!board.count(&key("a"), 1));
}

#[test]
fn the_board_table_is_bounded_and_keeps_the_heavy_destinations() {
    let mut board = Board::new(1);
    board.count(&key("big"), 1_000_000);
    board.count(&key("steady"), 10);
    for i in 0..5000 {
        board.count(&key(&format!("d{i}")), 1);
        if i % 10 == 0 {
            board.count(&key("steady"), 5);
        }
    }
    assert!(board.tally.len() <= 1024, "{}", board.tally.len());
    assert!(
        board.tally.contains_key(&key("steady")),
        "a steady destination is kept"
    );
    assert_eq!(board.labelled(), ["big"]);
    // A heavy newcomer after many small ones still wins the label.
    for _ in 0..20 {
        board.count(&key("heavy"), 100_000);
    }
    assert_eq!(board.rebalance(), [key("big")]);
    assert_eq!(board.labelled(), ["heavy"]);
}

#[test]
fn a_rebalance_fills_free_labels_and_swaps_several_at_once() {
    let mut board = Board::new(3);
    for (name, n) in [("a", 10), ("b", 20), ("c", 30)] {
        assert!(board.count(&key(name), n));
    }
    for (name, n) in [("x", 100), ("y", 90), ("z", 12)] {
        assert!(!board.count(&key(name), n));
    }
    let mut demoted: Vec<String> = board.rebalance().into_iter().map(|k| k.name).collect();
    demoted.sort();
    assert_eq!(demoted, ["a", "b"]);
    assert_eq!(board.labelled(), ["c", "x", "y"]);
    assert!(board.rebalance().is_empty(), "stable once settled");
    let mut wide = Board::new(5);
    wide.count(&key("a"), 1);
    assert!(wide.rebalance().is_empty());
    assert_eq!(wide.labelled(), ["a"]);
}

#[test]
fn the_snapshot_gives_gauges_and_top_destinations_with_the_rest_as_other() {
    let destination = |name: &str, transport: &str, active: u64, waiting: u64| DestinationGauges {
        name: name.into(),
        transport: transport.into(),
        active,
        window: 5,
        limit: 20,
        waiting,
        paused_for: None,
        dead: false,
        throttled: 1,
        last_throttle: None,
    };
    let mut paused = destination("slow.test", "smtp", 0, 7);
    paused.paused_for = Some(12.5);
    paused.dead = true;
    paused.last_throttle = Some("421-4.7.0 [TS04] Messages from 192.0.2.1 deferred".into());
    let snapshot = Snapshot {
        accepted: 9,
        answered: 7,
        in_flight: 2,
        workers: 4,
        busy_workers: 2,
        queue_depth: 3,
        queue_capacity: 16,
        cache_hits: 5,
        cache_misses: 6,
        cache_chained: 1,
        paused: 1,
        destinations: vec![
            destination("busy.test", "smtp", 4, 1),
            paused,
            destination("x.test", "smtp", 1, 2),
            destination("y.test", "smtp", 2, 3),
            destination("z.test", "lmtp", 1, 0),
        ],
        ..Snapshot::default()
    };
    let text = Recorder::new(2).render(Some(snapshot), Format::Prometheus);
    let expect = [
        ("mailhop_jobs_accepted_total ", 9.0),
        ("mailhop_jobs_answered_total ", 7.0),
        ("mailhop_jobs_in_flight ", 2.0),
        ("mailhop_workers ", 4.0),
        ("mailhop_workers_busy ", 2.0),
        ("mailhop_queue_depth ", 3.0),
        ("mailhop_queue_capacity ", 16.0),
        ("mailhop_cache_hits_total ", 5.0),
        ("mailhop_cache_misses_total ", 6.0),
        ("mailhop_cache_chained_total ", 1.0),
        ("mailhop_destinations_paused ", 1.0),
        ("mailhop_destinations ", 5.0),
        (
            r#"mailhop_destination_active{destination="busy.test",transport="smtp"}"#,
            4.0,
        ),
        (
            r#"mailhop_destination_waiting{destination="slow.test",transport="smtp"}"#,
            7.0,
        ),
        (
            r#"mailhop_destination_paused_seconds{destination="slow.test",transport="smtp"}"#,
            12.5,
        ),
        (
            r#"mailhop_destination_dead{destination="slow.test",transport="smtp"}"#,
            1.0,
        ),
        (
            r#"mailhop_destination_dead{destination="busy.test",transport="smtp"}"#,
            0.0,
        ),
        (
            r#"mailhop_destination_window{destination="busy.test",transport="smtp"}"#,
            5.0,
        ),
        (
            r#"mailhop_destination_limit{destination="busy.test",transport="smtp"}"#,
            20.0,
        ),
        // x and y summed per transport; z alone under lmtp.
        (
            r#"mailhop_destination_active{destination="other",transport="smtp"}"#,
            3.0,
        ),
        (
            r#"mailhop_destination_waiting{destination="other",transport="smtp"}"#,
            5.0,
        ),
        (
            r#"mailhop_destination_active{destination="other",transport="lmtp"}"#,
            1.0,
        ),
        (
            r#"mailhop_destination_throttling_replies_total{destination="other",transport="smtp"}"#,
            2.0,
        ),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
    assert!(!text.contains("x.test"), "{text}");
}

#[test]
fn openmetrics_output_ends_with_eof() {
    let recorder = Recorder::new(20);
    recorder.answer("a.test", "smtp", &sent(1), Duration::ZERO);
    let text = recorder.render(None, Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE mailhop_recipients counter\n"),
        "{text}"
    );
}

#[test]
fn a_throttling_reply_becomes_a_bounded_label() {
    use super::super::snapshot::reply_label;
    assert_eq!(reply_label(None), "none");
    assert_eq!(reply_label(Some("421 4.7.0 Try again later")), "421 4.7.0");
    assert_eq!(reply_label(Some("421-4.7.28 rate limited")), "421 4.7.28");
    assert_eq!(
        reply_label(Some("host mx[192.0.2.1] said: 451 4.7.1 slow down")),
        "451 4.7.1"
    );
    assert_eq!(reply_label(Some("421 Too many connections")), "421");
    assert_eq!(
        reply_label(Some("connection refused by 1234 servers")),
        "other"
    );
    assert_eq!(reply_label(Some("")), "other");
}

#[test]
fn the_ingress_series_appear_only_when_its_listeners_run() {
    let without = Recorder::new(2).render(Some(Snapshot::default()), Format::Prometheus);
    assert!(!without.contains("mailhop_ingress"), "{without}");
    let snapshot = Snapshot {
        ingress: Some(super::super::IngressGauges {
            connections: 2,
            messages: 11,
            replied_2xx: 9,
            replied_4xx: 3,
            replied_5xx: 1,
            cancelled: 1,
        }),
        ..Snapshot::default()
    };
    let text = Recorder::new(2).render(Some(snapshot), Format::Prometheus);
    for line in [
        "mailhop_ingress_connections 2",
        "mailhop_ingress_messages_total 11",
        "mailhop_ingress_replies_total{class=\"2xx\"} 9",
        "mailhop_ingress_replies_total{class=\"4xx\"} 3",
        "mailhop_ingress_replies_total{class=\"5xx\"} 1",
        "mailhop_ingress_cancelled_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

#[test]
fn the_tls_memory_series() {
    let snapshot = Snapshot {
        tls: Some(super::super::TlsGauges {
            new_sessions: 4,
            resumed_sessions: 7,
            cached_sessions: 2,
            broken_servers: 1,
            skipped_handshakes: 3,
        }),
        ..Snapshot::default()
    };
    let text = Recorder::new(2).render(Some(snapshot), Format::Prometheus);
    for line in [
        "mailhop_tls_client_sessions_total{session=\"new\"} 4",
        "mailhop_tls_client_sessions_total{session=\"resumed\"} 7",
        "mailhop_tls_cached_sessions 2",
        "mailhop_tls_broken_servers 1",
        "mailhop_tls_skipped_handshakes_total 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}
