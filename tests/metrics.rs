//! The daemon's Prometheus endpoint (`[metrics] listen`) and `mailhop
//! status` as a real process: jobs delivered to real `smtp-sink` peers
//! (one accepting, one refusing recipients for now, one for good), then
//! `/metrics` scraped over TCP and over a UNIX socket, the counters
//! compared with the job answers, the text checked by `promtool check
//! metrics` (Debian's prometheus package), the Grafana dashboard's
//! queries checked against the scrape, TLS sessions and failed handshakes
//! (one-connection STARTTLS servers with the test PKI), the endpoint's
//! refusals of bad requests, a bind failure at start, a reload that keeps
//! the endpoint, and `mailhop status` (table, `--json`, `--watch
//! --count`).
//!
//! Contract: every daemon and sink is owned by a guard that stops it;
//! every wait and read is bounded. Without smtp-sink or promtool a test
//! prints a loud SKIPPED line (and fails under `CI=true`).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::daemon::{Daemon, daemon_command, mailhop_bin};
use common::jobs::inline_job;
use common::{Invocation, Listen, Sink, Workdir, free_port, require_tool, skip};

const LIMIT: Duration = Duration::from_secs(20);
const MESSAGE: &str = "From: a@x.test\nTo: b@y.test\nSubject: metrics\n\nhello\n";

/// Runs `mailhop ARGS`: exit code, stdout, stderr.
fn run_mailhop(args: &[&str]) -> (i32, String, String) {
    let work = Workdir::new();
    let run = Invocation::new(args)
        .rust_log("warn")
        .limit(LIMIT)
        .run(&work);
    (run.code, run.stdout, run.stderr)
}

/// A daemon with 2 workers, short SMTP timeouts and `[metrics] listen`.
fn start_daemon(work: &Workdir, listen: &str) -> Daemon {
    let socket = work.path().join("m.sock");
    let config = format!(
        "[daemon]\nsocket = \"{}\"\nworkers = 2\nqueue_capacity = 16\n\
         [smtp]\nconnect_timeout = \"2s\"\nhelo_timeout = \"5s\"\n\
         [metrics]\nlisten = \"{listen}\"\n",
        socket.display()
    );
    Daemon::start_text(work, &config, LIMIT)
}

/// Every job answered, each with its recipients' statuses and DSNs.
fn submit(daemon: &Daemon, jobs: &[Value]) -> Vec<Value> {
    let answers = daemon.submit(jobs);
    for answer in &answers {
        assert!(answer["recipients"].is_array(), "{answer}");
    }
    answers
}

/// A job with `n` recipients.
fn job(id: &str, nexthop: &str, n: usize) -> Value {
    let mut job = inline_job(id, nexthop, MESSAGE);
    job["recipients"] = (0..n)
        .map(|i| serde_json::json!({"address": format!("r{i}-{id}@y.test")}))
        .collect();
    job
}

/// The HTTP response (head and body) to `request` on `stream`.
fn exchange(mut stream: impl Read + Write, request: &str) -> (String, String) {
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    (head.to_string(), body.to_string())
}

fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream
}

fn scrape_tcp(port: u16) -> String {
    let (head, body) = exchange(tcp(port), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body
}

/// Samples by their full name and labels as written.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(text: &str, series: &str) -> f64 {
    *samples(text)
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// The number of recipients per (status, dsn) in the answers.
fn tally(answers: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for answer in answers {
        for r in answer["recipients"].as_array().expect("recipients") {
            let key = (
                r["status"].as_str().expect("status").to_string(),
                r["dsn"].as_str().expect("dsn").to_string(),
            );
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

/// `promtool check metrics` on `text`: passes, or skips loudly (fails
/// under CI=true) without promtool.
fn promtool_check(text: &str) {
    let Some(promtool) = require_tool("promtool", "prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric names a Grafana dashboard's queries use (`mailhop_...`).
fn dashboard_metric_names(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|expr| {
            let bytes = expr.as_bytes();
            let mut found = Vec::new();
            let mut i = 0;
            while let Some(at) = expr[i..].find("mailhop_") {
                let start = i + at;
                let end = expr[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(expr.len(), |n| start + n);
                let before_ok = start == 0
                    || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
                if before_ok {
                    found.push(expr[start..end].to_string());
                }
                i = end;
            }
            found
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Whether a scrape declares `name` (a histogram's `_bucket`, `_sum` and
/// `_count` series belong to its family).
fn declared(scrape: &str, name: &str) -> bool {
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|base| scrape.contains(&format!("# TYPE {base} histogram\n")));
    family.is_some() || scrape.contains(&format!("# TYPE {name} "))
}

#[test]
fn loopback_endpoint_counts_deliveries_and_passes_promtool_and_the_dashboard() {
    let Some(ok) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let Some(soft) = Sink::start(Listen::Tcp, &["-r", "rcpt"]) else {
        return;
    };
    let Some(hard) = Sink::start(Listen::Tcp, &["-f", "rcpt"]) else {
        return;
    };
    let work = Workdir::new();
    let port = free_port();
    let daemon = start_daemon(&work, &format!("127.0.0.1:{port}"));
    daemon.wait_log(&format!("metrics: serving http://127.0.0.1:{port}/metrics"));

    let before = scrape_tcp(port);
    assert_eq!(value(&before, "mailhop_jobs_accepted_total"), 0.0);
    assert_eq!(value(&before, "mailhop_workers"), 2.0);
    assert_eq!(value(&before, "mailhop_queue_capacity"), 16.0);

    let jobs = [
        job("s1", &ok.nexthop(), 2),
        job("s2", &ok.nexthop(), 1),
        job("s3", &ok.nexthop(), 3),
        job("d1", &soft.nexthop(), 1),
        job("b1", &hard.nexthop(), 2),
    ];
    let answers = submit(&daemon, &jobs);
    let counted = tally(&answers);
    let sent: u64 = counted
        .iter()
        .filter(|((s, _), _)| s == "sent")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(sent, 6, "{answers:?}");

    let text = scrape_tcp(port);
    for ((status, dsn), n) in &counted {
        let mut parts = dsn.split('.');
        let class = parts.next().expect("class");
        let subject = format!("{class}.{}", parts.next().expect("subject"));
        let series = format!(
            "mailhop_recipients_total{{transport=\"smtp\",outcome=\"{status}\",dsn_class=\"{class}\",dsn_subject=\"{subject}\"}}"
        );
        assert_eq!(value(&text, &series), *n as f64, "{series}");
    }
    let by_destination = |nexthop: &str, outcome: &str| {
        value(
            &text,
            &format!(
                "mailhop_destination_recipients_total{{destination=\"{nexthop}\",transport=\"smtp\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(by_destination(&ok.nexthop(), "sent"), 6.0);
    assert_eq!(by_destination(&soft.nexthop(), "deferred"), 1.0);
    assert_eq!(by_destination(&hard.nexthop(), "bounced"), 2.0);
    assert_eq!(
        value(
            &text,
            "mailhop_job_duration_seconds_count{transport=\"smtp\"}"
        ),
        5.0
    );
    let job_latency = value(
        &text,
        "mailhop_job_duration_seconds_sum{transport=\"smtp\"}",
    );
    assert!(
        job_latency > 0.0 && job_latency < 5.0 * LIMIT.as_secs_f64(),
        "{job_latency}"
    );
    let connects = value(
        &text,
        "mailhop_connect_duration_seconds_count{result=\"ok\"}",
    );
    assert!(connects >= 3.0, "one connect per sink at least: {connects}");
    assert_eq!(value(&text, "mailhop_jobs_accepted_total"), 5.0);
    assert_eq!(value(&text, "mailhop_jobs_answered_total"), 5.0);
    assert_eq!(value(&text, "mailhop_jobs_in_flight"), 0.0);
    assert_eq!(value(&text, "mailhop_workers_busy"), 0.0);
    let lookups =
        value(&text, "mailhop_cache_hits_total") + value(&text, "mailhop_cache_misses_total");
    assert!(
        lookups >= 3.0,
        "the cache was asked for each destination: {lookups}"
    );
    assert_eq!(value(&text, "mailhop_tls_handshake_failures_total"), 0.0);
    promtool_check(&text);

    // The dashboard asks only for what a real scrape declares.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/grafana-mailhop.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let names = dashboard_metric_names(&dashboard);
    assert!(names.len() >= 15, "too few metrics queried: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !declared(&text, n)).collect();
    assert!(
        missing.is_empty(),
        "queried but not in a scrape: {missing:?}\n{text}"
    );
    assert!(
        dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8),
        "the dashboard has its panels"
    );
}

#[test]
fn the_endpoint_refuses_bad_requests_and_outlives_a_stalled_client() {
    let work = Workdir::new();
    let port = free_port();
    let daemon = start_daemon(&work, &format!("127.0.0.1:{port}"));
    daemon.wait_log("metrics: serving");

    let (head, body) = exchange(tcp(port), "GET / HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{head}");
    assert!(body.contains("/metrics"), "{body}");
    let (head, _) = exchange(tcp(port), "DELETE /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    let (head, _) = exchange(tcp(port), "\u{1}\u{2} nonsense\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let mut stream = tcp(port);
    // The server answers after 8 KiB and closes: the rest may not be sent.
    let _ = stream.write_all(long.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let (head, _) = exchange(
        tcp(port),
        "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");

    // A client that connects and says nothing holds the endpoint for at
    // most the request time; the next scrape is then served.
    let stalled = tcp(port);
    let started = Instant::now();
    let text = scrape_tcp(port);
    assert!(text.contains("mailhop_workers 2"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the stalled client held the endpoint for {:?}",
        started.elapsed()
    );
    drop(stalled);
    assert!(daemon.log().contains("listening on"), "{}", daemon.log());
}

#[test]
fn unix_socket_endpoint_serves_survives_a_reload_and_is_removed_at_exit() {
    let Some(sink) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let work = Workdir::new();
    let path = work.path().join("metrics.sock");
    let mut daemon = start_daemon(&work, &format!("unix:{}", path.display()));
    daemon.wait_log("metrics: serving unix:");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    let answers = submit(&daemon, &[job("u1", &sink.nexthop(), 2)]);
    assert_eq!(answers[0]["recipients"][0]["status"], "sent", "{answers:?}");
    let scrape = || {
        let stream = UnixStream::connect(&path).expect("connect to the metrics socket");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let (head, body) = exchange(stream, "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        body
    };
    let text = scrape();
    assert_eq!(
        value(
            &text,
            "mailhop_recipients_total{transport=\"smtp\",outcome=\"sent\",dsn_class=\"2\",dsn_subject=\"2.0\"}"
        ),
        2.0
    );
    promtool_check(&text);

    // A reload with another [metrics] keeps the running endpoint.
    let config = std::fs::read_to_string(&daemon.config).expect("config");
    std::fs::write(
        &daemon.config,
        config.replace(&format!("unix:{}", path.display()), "127.0.0.1:1"),
    )
    .expect("rewrite the config");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reload: [metrics] takes effect at restart");
    assert!(scrape().contains("mailhop_jobs_accepted_total 1"));

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    assert!(!path.exists(), "the metrics socket is removed at exit");
}

#[test]
fn an_endpoint_that_cannot_listen_stops_the_daemon_at_start() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let work = Workdir::new();
    let socket = work.path().join("m.sock");
    let config = work.file(
        "mailhop.toml",
        format!(
            "[daemon]\nsocket = \"{}\"\nworkers = 1\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            socket.display()
        )
        .as_bytes(),
    );
    let mut child = daemon_command(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not stop");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(71), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "metrics.listen: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(!socket.exists(), "the job socket is removed again");
    drop(taken);
}

#[test]
fn status_prints_counters_and_destinations_and_watch_redraws() {
    let Some(sink) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let work = Workdir::new();
    let daemon = start_daemon(&work, "");
    submit(&daemon, &[job("t1", &sink.nexthop(), 1)]);
    let sock = daemon.socket.display().to_string();

    let (code, json, stderr) = run_mailhop(&["status", "--json", "--socket", &sock]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&json).expect("--json is the status line");
    assert_eq!(report["command"], "status");

    let (code, text, stderr) = run_mailhop(&["status", "--socket", &sock]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.starts_with("mailhop daemon: up "), "{text}");
    assert!(
        text.contains("workers 0 of 2 busy; queue 0 of 16"),
        "{text}"
    );
    assert!(
        text.contains("jobs: 1 accepted, 0 in flight, 1 answered, 0 errors; recipients: 1 sent"),
        "{text}"
    );
    // The table shows what the shaper reports, one row per destination.
    let destinations = report["destinations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if destinations.is_empty() {
        assert!(text.contains("destinations: none known"), "{text}");
    } else {
        assert!(text.contains("DESTINATION"), "{text}");
        for d in &destinations {
            let name = d["name"].as_str().expect("name");
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
        }
    }

    let started = Instant::now();
    let (code, watched, stderr) =
        run_mailhop(&["status", "--watch", "--count", "3", "--socket", &sock]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        watched.matches("mailhop daemon: up ").count(),
        3,
        "{watched}"
    );
    assert!(
        !watched.contains('\u{1b}'),
        "no ANSI when not a terminal: {watched:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "one view a second: {:?}",
        started.elapsed()
    );
    let (code, lines, _) = run_mailhop(&[
        "status", "--json", "--watch", "--count", "2", "--socket", &sock,
    ]);
    assert_eq!(code, 0);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for line in lines.lines() {
        serde_json::from_str::<Value>(line).expect("one JSON line per view");
    }
    let (code, _, stderr) = run_mailhop(&["status", "--count", "2", "--socket", &sock]);
    assert_eq!(code, 64, "--count needs --watch: {stderr}");
}

#[test]
fn status_watch_on_a_terminal_clears_the_screen_before_each_view() {
    let Some(script) = common::find_tool("script") else {
        skip("script(1) not installed (package bsdutils)");
        return;
    };
    let work = Workdir::new();
    let daemon = start_daemon(&work, "");
    let command = format!(
        "{} status --watch --count 2 --socket {}",
        mailhop_bin().display(),
        daemon.socket.display()
    );
    let out = Command::new(script)
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("\u{1b}[H\u{1b}[2J").count(), 2, "{text:?}");
    assert_eq!(text.matches("mailhop daemon: up ").count(), 2, "{text:?}");
}

/// Every family with series, as the library renders it (per-destination
/// gauges included, which the daemon fills from its shaper), passes
/// promtool.
#[test]
fn a_scrape_with_every_family_filled_passes_promtool() {
    use mailhop::job::RecipientResult;
    use mailhop::metrics::{DestinationGauges, Format, Recorder, Snapshot};
    use mailhop::recipients::Status;

    let recorder = Recorder::new(2);
    let rcpt = |status, dsn: &str| RecipientResult {
        address: "r@y.test".into(),
        status,
        dsn: dsn.into(),
        relay: None,
        diagnostic: String::new(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    };
    for (i, name) in ["a.test", "b.test", "c.test", "we\"ird\\name\n"]
        .iter()
        .enumerate()
    {
        let recipients = vec![
            rcpt(Status::Sent, "2.0.0"),
            rcpt(Status::Deferred, "4.7.0"),
            rcpt(Status::Bounced, "5.1.1"),
        ];
        recorder.answer(
            name,
            if i % 2 == 0 { "smtp" } else { "lmtp" },
            &recipients,
            Duration::from_millis(40),
        );
    }
    recorder.connect(Duration::from_millis(1), true);
    recorder.connect(Duration::from_secs(5), false);
    recorder.tls(Some(("verified", "TLSv1.3")));
    recorder.tls(None);
    let destination = |name: &str, paused: Option<f64>| DestinationGauges {
        name: name.into(),
        transport: "smtp".into(),
        active: 2,
        window: 5,
        limit: 20,
        waiting: 3,
        paused_for: paused,
        dead: paused.is_some(),
        throttled: 4,
        last_throttle: paused.map(|_| "421 4.7.0 [TS04] deferred".to_string()),
    };
    let snapshot = Snapshot {
        workers: 4,
        paused: 1,
        destinations: vec![
            destination("a.test", None),
            destination("slow.test", Some(12.5)),
            destination("c.test", None),
            destination("d.test", Some(1.0)),
        ],
        ..Snapshot::default()
    };
    let text = recorder.render(Some(snapshot), Format::Prometheus);
    assert!(
        text.contains(
            "mailhop_destination_paused_seconds{destination=\"slow.test\",transport=\"smtp\"} 12.5"
        ),
        "{text}"
    );
    assert!(text.contains("destination=\"other\""), "{text}");
    assert!(
        text.contains("mailhop_destination_pause_info{destination=\"slow.test\",transport=\"smtp\",reply=\"421 4.7.0\"} 1"),
        "{text}"
    );
    promtool_check(&text);
}

/// What a one-connection scripted server does after STARTTLS.
#[derive(Clone, Copy)]
enum AfterStartTls {
    /// A real TLS session with the PKI's server certificate, then a whole
    /// mail transaction.
    Session,
    /// Bytes that are no TLS in answer to the ClientHello, then the
    /// connection closed.
    Garbage,
}

/// A loopback SMTP server for exactly one connection (every read bounded
/// by LIMIT): STARTTLS offered, then `after`. Returns its port and the
/// thread (joined by the caller).
fn starttls_server(
    pki: &common::certs::Pki,
    after: AfterStartTls,
) -> (u16, thread::JoinHandle<()>) {
    use std::io::BufRead;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (cert, key) = (pki.server_pem(), pki.server_key());
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        writer
            .write_all(b"220 scripted.test ESMTP\r\n")
            .expect("greet");
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.starts_with("EHLO") {
                writer
                    .write_all(b"250-scripted.test\r\n250 STARTTLS\r\n")
                    .expect("ehlo");
            } else if line.starts_with("STARTTLS") {
                writer
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .expect("220");
                break;
            } else {
                return;
            }
        }
        if let AfterStartTls::Garbage = after {
            // After the ClientHello (sooner would be response injection).
            let mut hello = [0u8; 512];
            let _ = reader.get_mut().read(&mut hello);
            let _ = writer.write_all(b"this is not TLS\r\n\r\n");
            return;
        }
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let mut acceptor =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
        acceptor
            .set_certificate_chain_file(&cert)
            .expect("certificate");
        acceptor
            .set_private_key_file(&key, SslFiletype::PEM)
            .expect("key");
        let Ok(tls) = acceptor.build().accept(stream) else {
            return;
        };
        let mut tls = std::io::BufReader::new(tls);
        let mut in_data = false;
        loop {
            line.clear();
            if tls.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let reply: &[u8] = if in_data {
                if line != ".\r\n" {
                    continue;
                }
                in_data = false;
                b"250 2.0.0 queued\r\n"
            } else if line.starts_with("EHLO") {
                b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n"
            } else if line.starts_with("DATA") {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line.starts_with("QUIT") {
                let _ = tls.get_mut().write_all(b"221 2.0.0 bye\r\n");
                return;
            } else {
                b"250 2.0.0 ok\r\n"
            };
            if tls.get_mut().write_all(reply).is_err() {
                return;
            }
        }
    });
    (port, handle)
}

#[test]
fn tls_sessions_and_failed_handshakes_are_counted_by_level() {
    let pki = common::certs::Pki::generate();
    let work = Workdir::new();
    let port = free_port();
    let daemon = start_daemon(&work, &format!("127.0.0.1:{port}"));
    daemon.wait_log("metrics: serving");

    let (good, served) = starttls_server(&pki, AfterStartTls::Session);
    let answers = submit(&daemon, &[job("tls1", &format!("[127.0.0.1]:{good}"), 1)]);
    served.join().expect("the TLS server");
    let rcpt = &answers[0]["recipients"][0];
    assert_eq!(rcpt["status"], "sent", "{rcpt}");
    let trust = rcpt["tls"]["trust"].as_str().expect("a TLS summary");
    let version = rcpt["tls"]["version"].as_str().expect("a TLS version");

    let (bad, served) = starttls_server(&pki, AfterStartTls::Garbage);
    let answers = submit(&daemon, &[job("tls2", &format!("[127.0.0.1]:{bad}"), 1)]);
    served.join().expect("the garbage server");
    assert_eq!(
        answers[0]["recipients"][0]["status"], "deferred",
        "{answers:?}"
    );

    let text = scrape_tcp(port);
    assert_eq!(
        value(
            &text,
            &format!("mailhop_tls_sessions_total{{level=\"{trust}\",version=\"{version}\"}}")
        ),
        1.0
    );
    assert_eq!(value(&text, "mailhop_tls_handshake_failures_total"), 1.0);
    promtool_check(&text);
}
