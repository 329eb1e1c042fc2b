//! Delivery shaping in the daemon (`[shaping]`, src/shaping): the
//! per-destination concurrency window, no head-of-line blocking between
//! destinations, the pause and retry after throttling replies, dead
//! destinations, rates, the per-destination waiting limit, the status
//! report and shutdown with jobs still waiting for admission. Against an
//! in-process SMTP server on loopback that counts its concurrent sessions
//! and can refuse connections past a count (421) or messages past a rate
//! (451), like a provider's throttling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::daemon::Daemon;
use common::jobs::inline_job;
use common::{ClosedPort, Peer, Workdir};
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
const MESSAGE: &str = "Subject: shaping\r\n\r\nhello\r\n";

/// What the server does.
#[derive(Clone, Copy, Debug, Default)]
struct Script {
    /// Wait this long before each reply to MAIL, RCPT, DATA and the dot.
    delay: Duration,
    /// Answer the greeting with 421 when this many sessions are open
    /// already (0: never).
    max_sessions: usize,
    /// Answer the first N connections with a 421 greeting.
    refuse_first: usize,
}

#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    max_open: AtomicUsize,
    connections: AtomicUsize,
    refused: AtomicUsize,
    messages: AtomicUsize,
}

struct Throttler {
    server: common::Server<()>,
    counts: Arc<Counts>,
}

impl Throttler {
    fn start(script: Script) -> Throttler {
        let counts = Arc::new(Counts::default());
        let record = Arc::clone(&counts);
        let server = common::Server::concurrent(move |_, peer| {
            let index = record.connections.fetch_add(1, Ordering::SeqCst);
            let open = record.open.fetch_add(1, Ordering::SeqCst) + 1;
            record.max_open.fetch_max(open, Ordering::SeqCst);
            let refuse = index < script.refuse_first
                || (script.max_sessions > 0 && open > script.max_sessions);
            if refuse {
                record.refused.fetch_add(1, Ordering::SeqCst);
                let _ = peer.try_reply("421 4.7.0 Too many connections, slow down");
                peer.close();
            } else {
                let _ = serve(peer, script, &record);
            }
            record.open.fetch_sub(1, Ordering::SeqCst);
        });
        Throttler { server, counts }
    }

    fn nexthop(&self) -> String {
        self.server.nexthop()
    }

    fn max_open(&self) -> usize {
        self.counts.max_open.load(Ordering::SeqCst)
    }

    fn messages(&self) -> usize {
        self.counts.messages.load(Ordering::SeqCst)
    }
}

fn serve(peer: &mut Peer, script: Script, counts: &Counts) -> std::io::Result<()> {
    peer.try_reply("220 throttler.test ESMTP")?;
    let pause = || {
        if !script.delay.is_zero() {
            thread::sleep(script.delay);
        }
    };
    while let Some(command) = peer.next_line(LIMIT) {
        let upper = command.trim_end().to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            peer.try_reply("250-throttler.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")?;
        } else if upper.starts_with("MAIL") {
            pause();
            peer.try_reply("250 2.1.0 Ok")?;
        } else if upper.starts_with("RCPT") {
            peer.try_reply("250 2.1.5 Ok")?;
        } else if upper == "DATA" {
            peer.try_reply("354 go ahead")?;
            loop {
                match peer.next_line(LIMIT) {
                    Some(line) if line.trim_end() == "." => break,
                    Some(_) => {}
                    None => return Ok(()),
                }
            }
            pause();
            counts.messages.fetch_add(1, Ordering::SeqCst);
            peer.try_reply("250 2.0.0 Ok: queued")?;
        } else if upper == "RSET" {
            peer.try_reply("250 2.0.0 Ok")?;
        } else if upper == "QUIT" {
            peer.try_reply("221 2.0.0 Bye")?;
            return Ok(());
        } else {
            peer.try_reply("502 5.5.2 what?")?;
        }
    }
    Ok(())
}

/// A daemon with `workers` and this `[shaping]` text (and more tables).
fn start(workers: usize, extra: &str) -> Daemon {
    start_queue(workers, 1000, extra)
}

/// [`start`] with another `[daemon] queue_capacity`.
fn start_queue(workers: usize, queue_capacity: usize, extra: &str) -> Daemon {
    let work = Workdir::with_prefix("mailhop-shaping-");
    let text = format!(
        "[smtp]\nconnect_timeout = \"5s\"\n[daemon]\nsocket = {:?}\nworkers = {workers}\nqueue_capacity = {queue_capacity}\n{extra}\n",
        work.path().join("m.sock").display().to_string()
    );
    Daemon::start_text(&work, &text, LIMIT).owning(work)
}

fn jobs(prefix: &str, nexthop: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| inline_job(&format!("{prefix}{i}"), nexthop, MESSAGE))
        .collect()
}

/// Sends every job on one connection, then reads all answers.
fn submit_all(daemon: &Daemon, jobs: &[Value]) -> Vec<Value> {
    let mut client = daemon.client();
    for job in jobs {
        client.send(&job.to_string());
    }
    client.answers(jobs.len()).into_values().collect()
}

fn status(answer: &Value) -> &str {
    answer["recipients"][0]["status"].as_str().unwrap_or("?")
}

fn diagnostic(answer: &Value) -> &str {
    answer["recipients"][0]["diagnostic"]
        .as_str()
        .unwrap_or("?")
}

fn daemon_status(daemon: &Daemon) -> Value {
    let mut client = daemon.client();
    client.send(r#"{"command":"status"}"#);
    client.answer()
}

#[test]
fn concurrency_to_a_destination_stays_within_its_window() {
    let server = Throttler::start(Script {
        delay: Duration::from_millis(50),
        ..Script::default()
    });
    let daemon = start(
        16,
        "[shaping]\ninitial_destination_concurrency = 2\ndestination_concurrency_limit = 3\n",
    );
    let answers = submit_all(&daemon, &jobs("w", &server.nexthop(), 40));
    assert!(answers.iter().all(|a| status(a) == "sent"), "{answers:?}");
    assert_eq!(server.messages(), 40);
    let max = server.max_open();
    assert!(
        (2..=3).contains(&max),
        "at most 3 sessions at once, saw {max}"
    );

    // The same load without shaping uses more sessions: the limit above
    // is the scheduler's doing.
    let server = Throttler::start(Script {
        delay: Duration::from_millis(50),
        ..Script::default()
    });
    let daemon = start(16, "[shaping]\nenabled = false\n");
    let answers = submit_all(&daemon, &jobs("u", &server.nexthop(), 40));
    assert!(answers.iter().all(|a| status(a) == "sent"), "{answers:?}");
    assert!(
        server.max_open() > 3,
        "unshaped: {} sessions",
        server.max_open()
    );
}

#[test]
fn a_slow_destination_does_not_hold_up_a_fast_one() {
    let slow = Throttler::start(Script {
        delay: Duration::from_millis(700),
        ..Script::default()
    });
    let fast = Throttler::start(Script::default());
    let daemon = start(
        8,
        "[shaping]\ninitial_destination_concurrency = 4\ndestination_concurrency_limit = 4\n",
    );
    // 30 slow jobs first (about 3 s of work at 4 at a time), then 20 fast
    // ones from another client.
    let slow_jobs = jobs("slow", &slow.nexthop(), 30);
    let slow_client = {
        let mut client = daemon.client();
        for job in &slow_jobs {
            client.send(&job.to_string());
        }
        client
    };
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let answers = submit_all(&daemon, &jobs("fast", &fast.nexthop(), 20));
    let fast_time = started.elapsed();
    assert!(answers.iter().all(|a| status(a) == "sent"), "{answers:?}");
    assert!(
        fast_time < Duration::from_millis(1500),
        "the fast destination waited {fast_time:?} behind the slow one"
    );
    let mut slow_client = slow_client;
    let slow_answers = slow_client.answers(30);
    assert!(slow_answers.values().all(|a| status(a) == "sent"));
    assert!(slow.max_open() <= 4);
}

#[test]
fn a_throttling_reply_pauses_the_destination_and_the_job_is_tried_again() {
    let server = Throttler::start(Script {
        refuse_first: 2,
        ..Script::default()
    });
    let daemon = start(
        4,
        "[shaping]\nthrottle_backoff = \"300ms\"\nthrottle_backoff_max = \"1s\"\n",
    );
    let started = Instant::now();
    let answers = submit_all(&daemon, &jobs("t", &server.nexthop(), 1));
    assert_eq!(status(&answers[0]), "sent", "{answers:?}");
    // Two 421 greetings, each followed by a pause, then the delivery.
    assert_eq!(server.counts.refused.load(Ordering::SeqCst), 2);
    assert_eq!(server.messages(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let log = daemon.log();
    assert!(log.contains("paused for"), "{log}");
    assert!(
        log.contains("only throttling replies; queued again"),
        "{log}"
    );
}

#[test]
fn with_no_retry_time_a_throttled_job_is_deferred_at_once_as_postfix_does() {
    let server = Throttler::start(Script {
        refuse_first: 100,
        ..Script::default()
    });
    let daemon = start(4, "[shaping]\nthrottle_retry_time = \"0s\"\n");
    let answers = submit_all(&daemon, &jobs("p", &server.nexthop(), 1));
    assert_eq!(status(&answers[0]), "deferred", "{answers:?}");
    assert!(
        diagnostic(&answers[0]).contains("421 4.7.0 Too many connections"),
        "{answers:?}"
    );
    assert_eq!(server.counts.connections.load(Ordering::SeqCst), 1);
    // The destination is paused, with the reply, in the status report.
    let report = daemon_status(&daemon);
    assert_eq!(report["paused"], 1, "{report}");
    let dest = &report["destinations"][0];
    assert_eq!(dest["name"], server.nexthop().as_str(), "{report}");
    assert!(dest["paused_for"].as_f64().unwrap_or(0.0) > 0.0, "{report}");
    assert_eq!(
        dest["last_throttle"],
        "421 4.7.0 Too many connections, slow down"
    );
}

#[test]
fn a_dead_destination_defers_its_waiting_jobs_at_once() {
    let closed = ClosedPort::new();
    let nexthop = format!("[127.0.0.1]:{}", closed.port);
    let daemon = start(
        4,
        "[shaping]\ninitial_destination_concurrency = 1\nminimal_backoff_time = \"60s\"\n",
    );
    let answers = submit_all(&daemon, &jobs("d", &nexthop, 12));
    assert_eq!(answers.len(), 12);
    assert!(
        answers.iter().all(|a| status(a) == "deferred"),
        "{answers:?}"
    );
    let tried: Vec<&Value> = answers
        .iter()
        .filter(|a| diagnostic(a).starts_with("connect to"))
        .collect();
    let suspended: Vec<&Value> = answers
        .iter()
        .filter(|a| diagnostic(a).starts_with("delivery temporarily suspended: connect to"))
        .collect();
    // Window 1: the first failure is a whole failed cohort. (A second job
    // may have been taken to follow the first on its session, and tries
    // on its own when there is none.)
    assert!((1..=2).contains(&tried.len()), "{answers:?}");
    assert_eq!(suspended.len(), 12 - tried.len(), "{answers:?}");
    assert!(
        suspended
            .iter()
            .all(|a| a["recipients"][0]["dsn"] == "4.4.1"),
        "{answers:?}"
    );
    // Jobs arriving later are deferred too, without a connection.
    let later = submit_all(&daemon, &jobs("late", &nexthop, 1));
    assert!(diagnostic(&later[0]).starts_with("delivery temporarily suspended"));
    let report = daemon_status(&daemon);
    assert_eq!(report["destinations"][0]["dead"], true, "{report}");
}

#[test]
fn a_rate_spaces_the_deliveries() {
    let server = Throttler::start(Script::default());
    let daemon = start(8, "[shaping]\ndestination_rate = \"5/s\"\n");
    let started = Instant::now();
    let answers = submit_all(&daemon, &jobs("r", &server.nexthop(), 15));
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|a| status(a) == "sent"), "{answers:?}");
    // A burst of 5, then one per 200 ms: at least 10 x 200 ms.
    assert!(elapsed >= Duration::from_millis(1800), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn a_full_destination_queue_holds_up_nothing_else_even_on_the_same_connection() {
    let slow = Throttler::start(Script {
        delay: Duration::from_millis(300),
        ..Script::default()
    });
    let fast = Throttler::start(Script::default());
    let daemon = start_queue(
        8,
        4,
        "[shaping]\ninitial_destination_concurrency = 1\ndestination_concurrency_limit = 1\ndestination_waiting_limit = 2\n",
    );
    // One client sends 16 slow jobs (1 running, 2 waiting, 13 set aside:
    // more than the whole queue and the workers hold, 12), then 5 fast ones.
    let mut client = daemon.client();
    for job in jobs("s", &slow.nexthop(), 16) {
        client.send(&job.to_string());
    }
    let started = Instant::now();
    for job in jobs("f", &fast.nexthop(), 5) {
        client.send(&job.to_string());
    }
    // The fast ones are answered first, while the slow ones wait.
    let mut fast_answers = 0;
    while fast_answers < 5 {
        let answer = client.answer();
        let id = answer["id"].as_str().unwrap_or("").to_string();
        assert!(id.starts_with('f'), "a slow job answered first: {answer}");
        assert_eq!(status(&answer), "sent", "{answer}");
        fast_answers += 1;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let report = daemon_status(&daemon);
    let dest = report["destinations"]
        .as_array()
        .and_then(|list| list.iter().find(|d| d["name"] == slow.nexthop().as_str()))
        .cloned()
        .unwrap_or_default();
    // One delivery, and perhaps a job chained behind it on its session.
    assert!(
        (1..=2).contains(&dest["active"].as_u64().unwrap_or(0)),
        "{report}"
    );
    assert!(dest["waiting"].as_u64().unwrap_or(0) >= 5, "{report}");
    let slow_answers = client.answers(16);
    assert!(slow_answers.values().all(|a| status(a) == "sent"));
    assert!(slow.max_open() <= 1);
}

#[test]
fn shutdown_defers_the_jobs_waiting_for_admission() {
    let server = Throttler::start(Script {
        refuse_first: 1_000,
        ..Script::default()
    });
    let daemon = start(
        4,
        "[shaping]\ninitial_destination_concurrency = 1\nthrottle_backoff = \"30s\"\n",
    );
    let mut client = daemon.client();
    for job in jobs("q", &server.nexthop(), 5) {
        client.send(&job.to_string());
    }
    // The first attempt meets a 421 and pauses the destination for 30 s;
    // the job and the four others wait in the scheduler.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("paused for") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    daemon.signal(Signal::SIGTERM);
    let answers = client.answers(5);
    assert_eq!(answers.len(), 5);
    for answer in answers.values() {
        assert_eq!(status(answer), "deferred", "{answer}");
    }
    let shutdown = answers
        .values()
        .filter(|a| diagnostic(a) == "mail system shutting down")
        .count();
    assert!(shutdown >= 4, "{answers:?}");
}

/// The status report shows a busy destination with its window and limit.
#[test]
fn status_counts_recipients_per_destination() {
    let server = Throttler::start(Script {
        delay: Duration::from_millis(200),
        ..Script::default()
    });
    let daemon = start(4, "");
    let mut client = daemon.client();
    for job in jobs("c", &server.nexthop(), 12) {
        client.send(&job.to_string());
    }
    thread::sleep(Duration::from_millis(300));
    let report = daemon_status(&daemon);
    let dest = &report["destinations"][0];
    assert_eq!(dest["name"], server.nexthop().as_str(), "{report}");
    assert_eq!(dest["transport"], "smtp");
    assert_eq!(dest["limit"], 20);
    assert_eq!(dest["window"], 5, "{report}");
    assert!(dest["active"].as_u64().unwrap_or(0) >= 1, "{report}");
    let answers = client.answers(12);
    assert!(answers.values().all(|a| status(a) == "sent"));
}

#[test]
fn domains_behind_the_same_mx_hosts_share_one_destination() {
    use common::dnsmasq::{Dnsmasq, Zone};
    use std::net::Ipv4Addr;
    let zone = Zone::new()
        .mx("a.example", 10, "mx1.provider.test")
        .mx("b.example", 10, "mx1.provider.test")
        .a("mx1.provider.test", Ipv4Addr::new(127, 0, 0, 1));
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let server = Throttler::start(Script {
        delay: Duration::from_millis(150),
        ..Script::default()
    });
    let port = server.server.port();
    let daemon = start(
        16,
        &format!(
            "[dns]\nnameservers = [{:?}]\n[shaping]\ngroup_by_mx_site = true\ninitial_destination_concurrency = 2\ndestination_concurrency_limit = 2\n",
            dns.nameserver()
        ),
    );
    let a = format!("a.example:{port}");
    let b = format!("b.example:{port}");
    // One job each first: their deliveries learn the MX site.
    let first = submit_all(&daemon, &[jobs("a", &a, 1), jobs("b", &b, 1)].concat());
    assert!(first.iter().all(|x| status(x) == "sent"), "{first:?}");
    // Then both domains at once: one window of 2 for the site, not 2 each.
    let mut burst = jobs("ma", &a, 12);
    burst.extend(jobs("mb", &b, 12));
    let before = server.max_open();
    let mut client = daemon.client();
    for job in &burst {
        client.send(&job.to_string());
    }
    thread::sleep(Duration::from_millis(400));
    let report = daemon_status(&daemon);
    let answers = client.answers(burst.len());
    assert!(answers.values().all(|x| status(x) == "sent"), "{answers:?}");
    assert!(
        server.max_open().max(before) <= 2,
        "saw {} sessions",
        server.max_open()
    );
    let names: Vec<&str> = report["destinations"]
        .as_array()
        .map(|list| list.iter().filter_map(|d| d["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["mx:mx1.provider.test"], "{report}");
}

#[test]
fn jobs_waiting_for_a_full_window_follow_on_its_sessions() {
    let server = Throttler::start(Script {
        delay: Duration::from_millis(20),
        ..Script::default()
    });
    let daemon = start(
        8,
        "[shaping]\ninitial_destination_concurrency = 2\ndestination_concurrency_limit = 2\n",
    );
    let answers = submit_all(&daemon, &jobs("c", &server.nexthop(), 40));
    assert!(answers.iter().all(|a| status(a) == "sent"), "{answers:?}");
    assert_eq!(server.messages(), 40);
    assert!(server.max_open() <= 2, "{} sessions", server.max_open());
    let report = daemon_status(&daemon);
    let chained = report["cache"]["chained"].as_u64().unwrap_or(0);
    assert!(
        chained > 0,
        "no job followed another on its session: {report}"
    );
}
