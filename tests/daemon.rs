//! `mailhop daemon` as a real process: the job protocol on its UNIX socket
//! (concurrency, pipelining, hostile input, disconnects, backpressure),
//! peer credential checks, SIGTERM drain, SIGHUP reload, sd_notify, and
//! `mailhop send` / `mailhop status` through the socket.
//!
//! Contract: self-contained (no external peers): deliveries go to an
//! in-process multi-connection SMTP sink on 127.0.0.1 ([`Sink`]). Every
//! daemon ([`Daemon`]) and sink a test starts is owned by a guard whose
//! `Drop` kills/stops and reaps it; every wait is bounded. The uid test
//! needs root and prints a loud SKIPPED line otherwise (panics when
//! `CI=true`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

mod common;
use common::daemon::{Client, Reaped, daemon_command};
use common::jobs::path_job;
use common::{Invocation, Peer, Server, Workdir, is_root, skip};

const MESSAGE: &[u8] = b"From: a@x.test\nTo: b@y.test\nSubject: daemon test\n\nhello\n";
/// Longest wait for any single answer or event.
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Working directory
// ---------------------------------------------------------------------------

/// The work directory (mode 0777: the uid test connects as `nobody`).
fn workdir() -> Workdir {
    Workdir::with_prefix("mailhop-d-")
}

// ---------------------------------------------------------------------------
// An SMTP sink for many connections
// ---------------------------------------------------------------------------

/// When the sink answers the final dot.
#[derive(Clone, Copy, Debug)]
enum Dot {
    Now,
    After(Duration),
    /// Never (until the sink stops).
    Never,
}

#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    /// DATA commands accepted (a delivery reached the content phase).
    data: usize,
    /// Messages received completely (the final dot arrived).
    messages: usize,
    /// EHLO arguments, in order.
    helos: Vec<String>,
    /// QUIT commands received.
    quits: usize,
}

/// A TCP SMTP sink on 127.0.0.1 serving any number of connections, each
/// on its own thread (the harness's concurrent [`Server`]). RCPT local
/// parts starting with "defer" get 450, "bounce" 550. Stopped and joined
/// on drop.
struct Sink {
    server: Server<()>,
    seen: Arc<Mutex<Seen>>,
}

impl Sink {
    fn start(dot: Dot) -> Sink {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = Arc::clone(&seen);
        let server = Server::concurrent(move |_, peer| {
            record.lock().expect("seen").connections += 1;
            let _ = session(peer, dot, &record);
        });
        Sink { server, seen }
    }

    fn nexthop(&self) -> String {
        self.server.nexthop()
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("seen"))
    }

    /// Waits until `f` holds, within [`LIMIT`].
    fn wait(&self, what: &str, f: impl Fn(&Seen) -> bool) {
        let start = Instant::now();
        while !self.seen(&f) {
            assert!(start.elapsed() < LIMIT, "sink: {what} did not happen");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How long one sink session may last.
const SESSION_LIMIT: Duration = Duration::from_secs(60);

fn session(peer: &mut Peer, dot: Dot, seen: &Mutex<Seen>) -> io::Result<()> {
    peer.try_reply("220 sink.test ESMTP")?;
    let mut accepted = 0;
    while let Some(line) = peer.next_line(SESSION_LIMIT) {
        let upper = line.to_ascii_uppercase();
        if let Some(name) = upper.strip_prefix("EHLO ") {
            let _ = name;
            seen.lock().expect("seen").helos.push(line[5..].to_string());
            peer.try_reply("250-sink.test\r\n250 ENHANCEDSTATUSCODES")?;
        } else if upper.starts_with("MAIL FROM:") {
            accepted = 0;
            peer.try_reply("250 2.1.0 Ok")?;
        } else if upper.starts_with("RCPT TO:<DEFER") {
            peer.try_reply("450 4.2.0 Mailbox busy, try later")?;
        } else if upper.starts_with("RCPT TO:<BOUNCE") {
            peer.try_reply("550 5.1.1 No such user")?;
        } else if upper.starts_with("RCPT TO:") {
            accepted += 1;
            peer.try_reply("250 2.1.5 Ok")?;
        } else if upper == "DATA" {
            if accepted == 0 {
                peer.try_reply("554 5.5.1 No valid recipients")?;
                continue;
            }
            seen.lock().expect("seen").data += 1;
            peer.try_reply("354 End data with <CR><LF>.<CR><LF>")?;
            loop {
                match peer.next_line(SESSION_LIMIT) {
                    Some(l) if l == "." => break,
                    Some(_) => {}
                    None => return Ok(()),
                }
            }
            seen.lock().expect("seen").messages += 1;
            match dot {
                Dot::Now => {}
                Dot::After(delay) => {
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !peer.stopping() {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                Dot::Never => {
                    while !peer.stopping() {
                        thread::sleep(Duration::from_millis(10));
                    }
                    return Ok(());
                }
            }
            peer.try_reply("250 2.0.0 Ok: queued as SINK1")?;
        } else if upper == "RSET" || upper == "NOOP" {
            peer.try_reply("250 2.0.0 Ok")?;
        } else if upper == "QUIT" {
            seen.lock().expect("seen").quits += 1;
            peer.try_reply("221 2.0.0 Bye")?;
            return Ok(());
        } else {
            peer.try_reply("502 5.5.2 Error: command not recognized")?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// A configuration: `[smtp]` and `[daemon]` keys (TOML values), plus raw
/// extra tables.
struct Settings {
    smtp: BTreeMap<String, String>,
    daemon: BTreeMap<String, String>,
    extra: String,
}

impl Settings {
    fn new(socket: &Path) -> Self {
        let mut smtp = BTreeMap::new();
        for key in [
            "connect_timeout",
            "helo_timeout",
            "mail_timeout",
            "rcpt_timeout",
            "data_init_timeout",
            "data_xfer_timeout",
            "data_done_timeout",
        ] {
            smtp.insert(key.to_string(), "\"10s\"".to_string());
        }
        smtp.insert("quit_timeout".into(), "\"2s\"".into());
        smtp.insert("rset_timeout".into(), "\"2s\"".into());
        let mut daemon = BTreeMap::new();
        daemon.insert(
            "socket".into(),
            format!("{:?}", socket.display().to_string()),
        );
        daemon.insert("workers".into(), "4".into());
        daemon.insert("queue_capacity".into(), "16".into());
        Self {
            smtp,
            daemon,
            extra: String::new(),
        }
    }

    fn smtp(mut self, key: &str, value: &str) -> Self {
        self.smtp.insert(key.into(), value.into());
        self
    }

    fn daemon(mut self, key: &str, value: &str) -> Self {
        self.daemon.insert(key.into(), value.into());
        self
    }

    fn extra(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self
    }

    fn text(&self) -> String {
        let mut text = String::from("[smtp]\n");
        for (k, v) in &self.smtp {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text.push_str("\n[daemon]\n");
        for (k, v) in &self.daemon {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text.push('\n');
        text.push_str(&self.extra);
        text
    }
}

// The harness's daemon guard, started from [`Settings`].
use common::daemon::Daemon;

impl Daemon {
    fn start(work: &Workdir, settings: &Settings) -> Daemon {
        Self::start_env(work, settings, &[])
    }

    fn start_env(work: &Workdir, settings: &Settings, env: &[(&str, &str)]) -> Daemon {
        let config = work.file_with_mode("mailhop.toml", settings.text().as_bytes(), 0o644);
        let mut cmd = daemon_command(&config);
        cmd.envs(env.iter().copied());
        Self::launch(work, cmd, config, work.path().join("m.sock"), LIMIT)
    }
}

fn job(id: &str, nexthop: &str, message: &Path) -> String {
    path_job(id, nexthop, message).to_string()
}

/// Like [`job`], for two recipients: b@y.test and c@y.test.
fn two_recipient_job(id: &str, nexthop: &str, message: &Path) -> String {
    let mut job = path_job(id, nexthop, message);
    job["recipients"] = json!([{"address": "b@y.test"}, {"address": "c@y.test"}]);
    job.to_string()
}

/// A DNS server on 127.0.0.1 that never answers (it lives as long as the
/// returned socket), and the `[dns]` table that sends every lookup there
/// with a 3 s timeout and one attempt.
fn silent_dns() -> (std::net::UdpSocket, String) {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a silent DNS port");
    let dns = silent.local_addr().expect("its address");
    let table = format!("[dns]\nnameservers = [\"{dns}\"]\ntimeout = \"3s\"\nattempts = 1\n");
    (silent, table)
}

/// Asserts a result with every recipient `status`.
fn assert_all(answer: &Value, status: &str) {
    let recipients = answer["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("not a result: {answer}"));
    assert!(!recipients.is_empty(), "{answer}");
    for r in recipients {
        assert_eq!(r["status"], status, "{answer}");
    }
    assert!(
        answer["log"].is_array(),
        "daemon results carry a log: {answer}"
    );
}

fn assert_error(answer: &Value, id: Option<&str>, fragment: &str) {
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error answer: {answer}"));
    assert!(error.contains(fragment), "{fragment:?} not in {answer}");
    match id {
        Some(id) => assert_eq!(answer["id"], id, "{answer}"),
        None => assert!(answer["id"].is_null(), "{answer}"),
    }
}

/// Runs the mailhop binary (the harness's [`Invocation`], bounded), stdin
/// from `stdin` or /dev/null, as `uid` if given; (code, stdout, stderr).
fn run_mailhop(args: &[&str], stdin: Option<&Path>, uid: Option<u32>) -> (i32, String, String) {
    let work = workdir();
    let run = Invocation::new(args)
        .stdin(stdin)
        .uid(uid)
        .rust_log("warn")
        .limit(LIMIT)
        .run(&work);
    (run.code, run.stdout, run.stderr)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// 1. Many concurrent clients plus a pipelined connection: every result
///    comes back with its id, all sent.
#[test]
fn concurrent_clients_and_pipelining() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let daemon = Daemon::start(&work, &Settings::new(&work.path().join("m.sock")));
    let nexthop = sink.nexthop();
    let mut threads = Vec::new();
    for t in 0..8 {
        let socket = daemon.socket.clone();
        let (nexthop, message) = (nexthop.clone(), message.clone());
        threads.push(thread::spawn(move || {
            let mut client = Client::connect(&socket, LIMIT);
            let ids: BTreeSet<String> = (0..20).map(|j| format!("c{t}-{j}")).collect();
            for id in &ids {
                client.send(&job(id, &nexthop, &message));
            }
            let answers = client.answers(20);
            assert_eq!(answers.keys().cloned().collect::<BTreeSet<_>>(), ids);
            for answer in answers.values() {
                assert_all(answer, "sent");
            }
        }));
    }
    let mut piped = daemon.client();
    let ids: BTreeSet<String> = (0..50).map(|j| format!("p-{j}")).collect();
    let lines: String = ids
        .iter()
        .map(|id| job(id, &nexthop, &message) + "\n")
        .collect();
    piped.send_raw(lines.as_bytes());
    let answers = piped.answers(50);
    assert_eq!(answers.keys().cloned().collect::<BTreeSet<_>>(), ids);
    for answer in answers.values() {
        assert_all(answer, "sent");
    }
    for t in threads {
        t.join().expect("a client thread failed");
    }
    assert_eq!(sink.seen(|s| s.messages), 210);
}

/// 2. Malformed and hostile lines each get an error naming the problem;
///    good jobs on the same connection still succeed.
#[test]
fn hostile_input_keeps_the_connection_usable() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock")).daemon("max_line_length", "65536");
    let daemon = Daemon::start(&work, &settings);
    let nexthop = sink.nexthop();
    let mut c = daemon.client();
    let ok = |id: &str| job(id, &nexthop, &message);

    c.send("garbage");
    assert_error(&c.answer(), None, "malformed job");
    c.send("{}");
    assert_error(&c.answer(), None, "missing field `id`");
    let mut unknown: Value = serde_json::from_str(&ok("u1")).expect("json");
    unknown["bogus"] = json!(1);
    c.send(&unknown.to_string());
    assert_error(&c.answer(), Some("u1"), "unknown field `bogus`");
    let mut empty: Value = serde_json::from_str(&ok("e1")).expect("json");
    empty["recipients"] = json!([]);
    c.send(&empty.to_string());
    assert_error(&c.answer(), Some("e1"), "no recipients");
    let missing = work.path().join("no-such-message");
    c.send(&job("m1", &nexthop, &missing));
    assert_error(
        &c.answer(),
        Some("m1"),
        &format!(
            "cannot read message {}: No such file or directory",
            missing.display()
        ),
    );
    c.send(&job("r1", &nexthop, Path::new("relative/msg")));
    assert_error(&c.answer(), Some("r1"), "not absolute");
    c.send(r#"{"command":"reboot"}"#);
    assert_error(&c.answer(), None, "unknown command");
    // Over 10 MB on one line, far over max_line_length.
    let mut big: Value = serde_json::from_str(&ok("big")).expect("json");
    big["message"] = json!({"data": "x".repeat(10 * 1024 * 1024 + 17)});
    c.send(&big.to_string());
    assert_error(&c.answer(), None, "line too long");
    c.send_raw(b"{\"id\":\"\xff\xfe\",\"sender\":\"\"}\n");
    assert_error(&c.answer(), None, "not valid UTF-8");
    c.send(&ok("g1"));
    let good = c.answer();
    assert_eq!(good["id"], "g1");
    assert_all(&good, "sent");
    // Still usable; an unterminated last line is taken at end of input.
    c.send(&ok("g2"));
    assert_all(&c.answer(), "sent");
    c.send_raw(ok("g3").as_bytes());
    c.writer
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let last = c.answer();
    assert_eq!(last["id"], "g3");
    assert_all(&last, "sent");
    assert_eq!(sink.seen(|s| s.messages), 3);
}

/// 3. A client that disconnects at once does not stop its delivery, which
///    is logged; the daemon keeps serving.
#[test]
fn client_disconnect_mid_job() {
    let work = workdir();
    let sink = Sink::start(Dot::After(Duration::from_millis(1000)));
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let daemon = Daemon::start(&work, &Settings::new(&work.path().join("m.sock")));
    {
        let mut c = daemon.client();
        c.send(&job("gone-1", &sink.nexthop(), &message));
    }
    sink.wait("the message arrived", |s| s.messages == 1);
    daemon.wait_log("gone-1: to=<b@y.test>");
    assert!(daemon.log().contains("status=sent"), "{}", daemon.log());
    let mut c = daemon.client();
    c.send(&job("after-1", &sink.nexthop(), &message));
    let answer = c.answer();
    assert_eq!(answer["id"], "after-1");
    assert_all(&answer, "sent");
}

/// 4. Peer credentials: `nobody` is refused with the error line, root is
///    served, and a member of `allowed_groups` is served.
#[test]
fn refused_uid() {
    if !is_root() {
        skip("the uid test needs root (it runs a client as nobody)");
        return;
    }
    // A uid that is neither root nor the daemon's user (started as root,
    // the daemon runs as "mailhop", or "nobody" without that user).
    let nobody = 54_321;
    let work = workdir();
    let socket = work.path().join("m.sock");
    let settings = Settings::new(&socket).daemon("socket_mode", "\"0666\"");
    let mut daemon = Daemon::start(&work, &settings);
    let sock = socket.display().to_string();
    let (code, _, stderr) =
        run_mailhop(&["status", "--json", "--socket", &sock], None, Some(nobody));
    assert!(
        stderr.contains(&format!(
            "permission denied: uid {nobody} is not allowed to submit jobs"
        )),
        "{stderr}"
    );
    assert_eq!(code, 77, "{stderr}");
    daemon.wait_log(&format!("refused connection from uid {nobody}"));
    let (code, stdout, stderr) = run_mailhop(&["status", "--json", "--socket", &sock], None, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"accepted\""), "{stdout}");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT), Some(0));

    // The same peer, allowed through its group.
    let work = workdir();
    let socket = work.path().join("m.sock");
    let settings = Settings::new(&socket)
        .daemon("socket_mode", "\"0666\"")
        .daemon("allowed_groups", &format!("[\"{nobody}\"]"));
    let _daemon = Daemon::start(&work, &settings);
    let sock = socket.display().to_string();
    let (code, stdout, stderr) =
        run_mailhop(&["status", "--json", "--socket", &sock], None, Some(nobody));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"accepted\""), "{stdout}");
}

/// 5a. SIGTERM lets running deliveries finish, defers the queued job with
///     4.3.0, answers every job and exits 0.
#[test]
fn sigterm_drains_and_defers_queued_jobs() {
    let work = workdir();
    let sink = Sink::start(Dot::After(Duration::from_millis(1500)));
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .daemon("workers", "2")
        .daemon("queue_capacity", "4")
        .daemon("shutdown_timeout", "\"20s\"");
    let mut daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    for id in ["d1", "d2", "d3"] {
        c.send(&job(id, &sink.nexthop(), &message));
    }
    sink.wait("two deliveries in DATA", |s| s.data == 2);
    daemon.signal(Signal::SIGTERM);
    let answers = c.answers(3);
    let statuses: Vec<&str> = answers
        .values()
        .map(|a| a["recipients"][0]["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "sent").count(),
        2,
        "{answers:?}"
    );
    let deferred: Vec<&Value> = answers
        .values()
        .filter(|a| a["recipients"][0]["status"] == "deferred")
        .collect();
    assert_eq!(deferred.len(), 1, "{answers:?}");
    assert_eq!(deferred[0]["recipients"][0]["dsn"], "4.3.0");
    assert_eq!(
        deferred[0]["recipients"][0]["diagnostic"],
        "mail system shutting down"
    );
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("dsn=4.3.0, status=deferred (mail system shutting down)"),
        "{log}"
    );
    assert!(!daemon.socket.exists(), "the socket file is removed");
}

/// 5b. A delivery that does not finish within shutdown_timeout is answered
///     with 4.3.0 deferrals, and the daemon exits 0.
#[test]
fn sigterm_defers_unfinished_delivery() {
    let work = workdir();
    let sink = Sink::start(Dot::Never);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .daemon("workers", "1")
        .daemon("shutdown_timeout", "\"1s\"");
    let mut daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    c.send(&two_recipient_job("h1", &sink.nexthop(), &message));
    sink.wait("the delivery reached DATA", |s| s.data == 1);
    let start = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let answer = c.answer();
    assert_eq!(answer["id"], "h1");
    for r in answer["recipients"].as_array().expect("recipients") {
        assert_eq!(r["status"], "deferred", "{answer}");
        assert_eq!(r["dsn"], "4.3.0", "{answer}");
    }
    assert_eq!(answer["recipients"].as_array().map(Vec::len), Some(2));
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(
        daemon
            .log()
            .contains("deferred 1 jobs still being delivered"),
        "{}",
        daemon.log()
    );
}

/// 5c. A second SIGTERM exits at once.
#[test]
fn second_sigterm_exits_at_once() {
    let work = workdir();
    let sink = Sink::start(Dot::Never);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .daemon("workers", "1")
        .daemon("shutdown_timeout", "\"60s\"");
    let mut daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    c.send(&job("s1", &sink.nexthop(), &message));
    sink.wait("the delivery reached DATA", |s| s.data == 1);
    daemon.signal(Signal::SIGTERM);
    daemon.wait_log("shutting down");
    assert_eq!(daemon.wait_exit(Duration::from_millis(300)), None);
    let start = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// 6. SIGHUP reloads the configuration for new jobs; a broken file is
///    refused and the old configuration kept.
#[test]
fn sighup_reload() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .smtp("helo_name", "\"first.test\"")
        .extra("[cache]\non_demand = false\n");
    let daemon = Daemon::start(&work, &settings);
    let deliver = |id: &str| {
        let mut c = daemon.client();
        c.send(&job(id, &sink.nexthop(), &message));
        let answer = c.answer();
        assert_all(&answer, "sent");
    };
    deliver("before");
    let text = settings.smtp("helo_name", "\"second.test\"").text();
    fs::write(&daemon.config, text).expect("rewrite the configuration");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded");
    deliver("after");
    fs::write(&daemon.config, "[smtp]\nport = \"not a number\"\n").expect("break the file");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reload refused");
    deliver("broken");
    assert_eq!(
        sink.seen(|s| s.helos.clone()),
        vec!["first.test", "second.test", "second.test"]
    );
}

/// 7. sd_notify: READY=1 once listening, STOPPING=1 on SIGTERM.
#[test]
fn sd_notify_ready_and_stopping() {
    let work = workdir();
    let notify_path = work.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    // Started as root, the daemon notifies as its unprivileged user.
    fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o777)).expect("chmod");
    notify
        .set_read_timeout(Some(LIMIT))
        .expect("notify read timeout");
    let path = notify_path.display().to_string();
    let mut daemon = Daemon::start_env(
        &work,
        &Settings::new(&work.path().join("m.sock")),
        &[("NOTIFY_SOCKET", &path)],
    );
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    daemon.signal(Signal::SIGTERM);
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert_eq!(daemon.wait_exit(LIMIT), Some(0));
}

/// 8. `mailhop status` prints the counters.
#[test]
fn status_counters() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let daemon = Daemon::start(&work, &Settings::new(&work.path().join("m.sock")));
    let mut c = daemon.client();
    for j in 0..5 {
        c.send(&job(&format!("s{j}"), &sink.nexthop(), &message));
    }
    c.send("nonsense");
    let answers = c.answers(6);
    assert_eq!(answers.len(), 6);
    let config = daemon.config.display().to_string();
    let (code, stdout, stderr) =
        run_mailhop(&["status", "--json", "--config", &config], None, None);
    assert_eq!(code, 0, "{stderr}");
    let status: Value = serde_json::from_str(&stdout).expect("status JSON");
    assert_eq!(status["command"], "status");
    assert!(status["accepted"].as_u64() >= Some(5), "{status}");
    assert!(status["done"]["sent"].as_u64() >= Some(5), "{status}");
    assert!(status["errors"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
    assert_eq!(status["workers"]["total"], 4, "{status}");
    assert_eq!(status["workers"]["busy"], 0, "{status}");
    assert_eq!(status["queue"]["capacity"], 16, "{status}");
    assert!(status["uptime"].is_u64(), "{status}");
    for key in ["hits", "misses", "idle", "chained"] {
        assert!(status["cache"][key].is_u64(), "{status}");
    }
    // The same through the raw protocol.
    c.send(r#"{"command":"status"}"#);
    let again = c.answer();
    assert_eq!(again["command"], "status");
}

/// 9. `mailhop send` through the daemon prints what `--direct` prints,
///    with the same exit code (text, JSON, stdin).
#[test]
fn send_through_the_daemon_matches_direct() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let daemon = Daemon::start(&work, &Settings::new(&work.path().join("m.sock")));
    let config = daemon.config.display().to_string();
    let nexthop = sink.nexthop();
    let msg = message.display().to_string();
    let base = |json: bool, direct: bool, from_stdin: bool| {
        let mut args = vec!["send", "--config", &config, "--nexthop", &nexthop];
        args.extend(["--from", "a@x.test", "--to", "b@y.test"]);
        args.extend([
            "--to",
            "defer@y.test",
            "--to",
            "bounce@y.test",
            "--id",
            "SAME1",
        ]);
        if json {
            args.push("--json");
        }
        if direct {
            args.push("--direct");
        }
        args.push(if from_stdin { "-" } else { &msg });
        let stdin = from_stdin.then_some(message.as_path());
        run_mailhop(&args, stdin, None)
    };
    for (json, from_stdin) in [(false, false), (true, false), (false, true)] {
        let (dcode, dout, derr) = base(json, true, from_stdin);
        let (code, out, err) = base(json, false, from_stdin);
        assert_eq!(out, dout, "stdout; stderr direct {derr:?}, daemon {err:?}");
        assert_eq!(code, dcode, "exit code; stderr {err:?}");
        assert_eq!(code, 69, "{out}");
        assert!(
            out.contains("status=sent") || out.contains("\"sent\""),
            "{out}"
        );
    }
    // A missing file: the same message and exit code.
    let missing = work.path().join("missing");
    let missing = missing.display().to_string();
    let run = |direct: bool| {
        let mut args = vec!["send", "--config", &config, "--nexthop", &nexthop];
        args.extend(["--from", "a@x.test", "--to", "b@y.test"]);
        if direct {
            args.push("--direct");
        }
        args.push(&missing);
        run_mailhop(&args, None, None)
    };
    let (dcode, _, derr) = run(true);
    let (code, _, err) = run(false);
    assert_eq!((code, err.trim()), (dcode, derr.trim()));
    assert_eq!(code, 66);
    // No daemon there: a temporary failure.
    let (code, _, err) = {
        let mut args = vec![
            "send",
            "--socket",
            "/nonexistent/m.sock",
            "--nexthop",
            &nexthop,
        ];
        args.extend(["--from", "a@x.test", "--to", "b@y.test", &msg]);
        run_mailhop(&args, None, None)
    };
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("cannot connect to the daemon"), "{err}");
}

/// 10. Backpressure: one worker, a queue of one, ten jobs on one
///     connection to a slow server: all ten answered.
#[test]
fn backpressure_never_drops() {
    let work = workdir();
    let sink = Sink::start(Dot::After(Duration::from_millis(150)));
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .daemon("workers", "1")
        .daemon("queue_capacity", "1");
    let daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    let ids: BTreeSet<String> = (0..10).map(|j| format!("b{j}")).collect();
    let lines: String = ids
        .iter()
        .map(|id| job(id, &sink.nexthop(), &message) + "\n")
        .collect();
    c.send_raw(lines.as_bytes());
    let answers = c.answers(10);
    assert_eq!(answers.keys().cloned().collect::<BTreeSet<_>>(), ids);
    for answer in answers.values() {
        assert_all(answer, "sent");
    }
    assert_eq!(sink.seen(|s| s.messages), 10);
}

/// 11. Socket activation: a listening socket passed as fd 3 with
///     LISTEN_FDS/LISTEN_PID is used instead of binding `[daemon] socket`.
#[test]
fn socket_activation() {
    use std::os::fd::AsRawFd;
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let activated = work.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&activated).expect("bind");
    let fd = listener.as_raw_fd();
    let unused = work.path().join("m.sock");
    let config = work.file_with_mode(
        "mailhop.toml",
        Settings::new(&unused).text().as_bytes(),
        0o644,
    );
    // LISTEN_PID must be the daemon's pid: the shell's, which exec keeps.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_mailhop"))
        .args(["daemon", "--config"])
        .arg(&config)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and
    // exec, on descriptors this process owns.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0) == 0
            } else {
                nix::libc::dup2(fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let mut daemon = Daemon::launch(&work, cmd, config, activated.clone(), LIMIT);
    drop(listener);
    assert!(
        daemon.log().contains("socket activation"),
        "{}",
        daemon.log()
    );
    let mut c = daemon.client();
    c.send(&job("act-1", &sink.nexthop(), &message));
    assert_all(&c.answer(), "sent");
    assert!(!unused.exists(), "[daemon] socket must not be bound");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    assert!(
        activated.exists(),
        "the passed socket's file is not ours to remove"
    );
}

/// 12. An idle connection is closed after client_idle_timeout; one that
///     waits for a result longer than that is not.
#[test]
fn idle_connections_close() {
    let work = workdir();
    let sink = Sink::start(Dot::After(Duration::from_millis(1800)));
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings =
        Settings::new(&work.path().join("m.sock")).daemon("client_idle_timeout", "\"1s\"");
    let daemon = Daemon::start(&work, &settings);
    let mut busy = daemon.client();
    busy.send(&job("slow-1", &sink.nexthop(), &message));
    let mut idle = daemon.client();
    let start = Instant::now();
    let mut line = String::new();
    let n = idle.reader.read_line(&mut line).expect("read until EOF");
    assert_eq!((n, line.as_str()), (0, ""), "an idle connection is closed");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let answer = busy.answer();
    assert_eq!(answer["id"], "slow-1");
    assert_all(&answer, "sent");
}

/// 13. Started as root with `[daemon] user`: the socket belongs to that
///     user, the process runs as it for good (real, effective, saved ids
///     and groups), and it still delivers and exits cleanly.
#[test]
fn drops_privileges_to_daemon_user() {
    if !is_root() {
        skip("the privilege test needs root");
        return;
    }
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let run_dir = work.path().join("run");
    let socket = run_dir.join("m.sock");
    let settings = Settings::new(&socket).daemon("user", "\"nobody\"");
    let config = work.file_with_mode("mailhop.toml", settings.text().as_bytes(), 0o644);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailhop"));
    cmd.args(["daemon", "--config"]).arg(&config);
    let mut daemon = Daemon::launch(&work, cmd, config, socket.clone(), LIMIT);
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("a nobody user");
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .expect("read /proc/PID/status");
    let ids = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let uid = nobody.uid.to_string();
    let gid = nobody.gid.to_string();
    assert_eq!(ids("Uid:"), vec![uid.clone(); 4], "{status}");
    assert_eq!(ids("Gid:"), vec![gid.clone(); 4], "{status}");
    assert!(!ids("Groups:").contains(&"0".to_string()), "{status}");
    let meta = fs::metadata(&socket).expect("socket metadata");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        nobody.uid.as_raw()
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(
        daemon.log().contains("switched to user nobody"),
        "{}",
        daemon.log()
    );
    let mut c = daemon.client();
    c.send(&job("priv-1", &sink.nexthop(), &message));
    assert_all(&c.answer(), "sent");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    assert!(!socket.exists(), "the socket file is removed at exit");
}

/// `[log] format = "json"`: one JSON object per recipient with the source
/// address; the text format gives the qmgr line and the delivery line.
#[test]
fn log_lines_in_both_formats() {
    let sink = Sink::start(Dot::Now);
    for json in [true, false] {
        let work = workdir();
        let message = work.file_with_mode("msg", MESSAGE, 0o644);
        let mut settings = Settings::new(&work.path().join("m.sock"));
        if json {
            settings = settings.extra("[log]\nformat = \"json\"\n");
        }
        let daemon = Daemon::start(&work, &settings);
        let mut c = daemon.client();
        c.send(&job("L1", &sink.nexthop(), &message));
        assert_all(&c.answer(), "sent");
        daemon.wait_log("L1: ");
        let log = daemon.log();
        let qmgr = log
            .lines()
            .find(|l| l.contains("mailhop/qmgr[") && l.contains("L1: from=<"))
            .unwrap_or_else(|| panic!("qmgr line: {log}"));
        assert!(qmgr.contains("nrcpt=1 (queue active)"), "{qmgr}");
        let line = log
            .lines()
            .find(|l| l.contains("mailhop/smtp[") && l.contains("L1"))
            .unwrap_or_else(|| panic!("delivery line: {log}"));
        if json {
            let start = line.find('{').expect("a JSON object");
            let entry: Value = serde_json::from_str(&line[start..]).expect("JSON log entry");
            assert_eq!(entry["id"], "L1", "{entry}");
            assert_eq!(entry["status"], "sent", "{entry}");
            assert_eq!(entry["dsn"], "2.0.0", "{entry}");
            assert_eq!(entry["source"], "127.0.0.1", "{entry}");
        } else {
            assert!(line.contains("L1: to=<"), "{line}");
            assert!(line.contains("status=sent (250"), "{line}");
        }
    }
}

/// The scheduling policy (field 41 of /proc/PID/task/TID/stat) of each of
/// the daemon's threads, by thread name.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task")).expect("list the daemon's threads") {
        let dir = entry.expect("task entry").path();
        let name = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name start at field 3 (state).
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        if let Some(policy) = after.split_whitespace().nth(41 - 3) {
            out.push((name.trim().to_string(), policy.parse().expect("policy")));
        }
    }
    out
}

/// `[daemon] batch_scheduling` (default on): every thread of the daemon,
/// workers and client connection threads included, runs under SCHED_BATCH
/// (3); turned off, they stay SCHED_OTHER (0); started under another
/// policy, they keep it. Delivery works in every case.
#[test]
fn batch_scheduling_covers_every_thread() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    let sink = Sink::start(Dot::Now);
    for batch in [None, Some("false")] {
        let work = workdir();
        let message = work.file_with_mode("msg", MESSAGE, 0o644);
        let mut settings = Settings::new(&work.path().join("m.sock"));
        if let Some(value) = batch {
            settings = settings.daemon("batch_scheduling", value);
        }
        let daemon = Daemon::start(&work, &settings);
        let mut c = daemon.client();
        c.send(&job("sched-1", &sink.nexthop(), &message));
        assert_all(&c.answer(), "sent");
        let policies = thread_policies(daemon.child.id());
        let want = if batch.is_none() {
            SCHED_BATCH
        } else {
            SCHED_OTHER
        };
        let workers = policies
            .iter()
            .filter(|(name, _)| name.starts_with("worker-"))
            .count();
        assert_eq!(workers, 4, "{policies:?}");
        assert!(
            policies.iter().any(|(name, _)| name.starts_with("conn-")),
            "a connection thread is running: {policies:?}"
        );
        for (name, policy) in &policies {
            assert_eq!(
                *policy, want,
                "thread {name} (batch_scheduling {batch:?}): {policies:?}"
            );
        }
    }
    // Started under another policy (here SCHED_IDLE through chrt, as
    // systemd's CPUSchedulingPolicy= would), the daemon keeps it.
    const SCHED_IDLE: u32 = 5;
    if Command::new("chrt").arg("--help").output().is_err() {
        skip("chrt (util-linux) is needed for the kept-policy case");
        return;
    }
    let work = workdir();
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"));
    let config = work.file_with_mode("mailhop.toml", settings.text().as_bytes(), 0o644);
    let mut cmd = Command::new("chrt");
    cmd.args([
        "-i",
        "0",
        env!("CARGO_BIN_EXE_mailhop"),
        "daemon",
        "--config",
    ])
    .arg(&config);
    for var in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"] {
        cmd.env_remove(var);
    }
    let daemon = Daemon::launch(&work, cmd, config, work.path().join("m.sock"), LIMIT);
    let mut c = daemon.client();
    c.send(&job("sched-idle", &sink.nexthop(), &message));
    assert_all(&c.answer(), "sent");
    let policies = thread_policies(daemon.child.id());
    assert!(policies.len() > 4, "{policies:?}");
    for (name, policy) in &policies {
        assert_eq!(*policy, SCHED_IDLE, "thread {name}: {policies:?}");
    }
    assert!(
        daemon.log().contains("keeping it"),
        "the kept policy is logged:\n{}",
        daemon.log()
    );
}

// ---------------------------------------------------------------------------
// Issue 12: faults inside the daemon
// ---------------------------------------------------------------------------

/// `mailhop status` through the protocol, parsed.
fn status_of(daemon: &Daemon) -> Value {
    let mut c = daemon.client();
    c.send(r#"{"command":"status"}"#);
    c.answer()
}

/// Issue 12 item 6: an `arrival_time` no clock can hold (it panicked the
/// worker, "internal error") is an `invalid job` error when the line is
/// read; the connection and the daemon go on.
#[test]
fn out_of_range_arrival_time_is_an_invalid_job() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let daemon = Daemon::start(&work, &Settings::new(&work.path().join("m.sock")));
    let mut c = daemon.client();
    for (id, t) in [("t1", u64::MAX), ("t2", u64::MAX - 1_000), ("t3", 1 << 62)] {
        let mut line: Value =
            serde_json::from_str(&job(id, &sink.nexthop(), &message)).expect("json");
        line["arrival_time"] = json!(t);
        c.send(&line.to_string());
        assert_error(&c.answer(), Some(id), "invalid job: arrival_time");
    }
    let mut fine: Value =
        serde_json::from_str(&job("t4", &sink.nexthop(), &message)).expect("json");
    fine["arrival_time"] = json!(1_795_440_001u64);
    c.send(&fine.to_string());
    assert_all(&c.answer(), "sent");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Issue 12 item 6: a worker that panics (injected through the debug-build
/// hook `MAILHOP_DEBUG_PANIC_JOB`) answers its job with every recipient
/// deferred 4.3.0 (`mailhop send` exits 75), logs the job id, and is
/// replaced: more panicking jobs than workers are all answered, the pool
/// size in `mailhop status` stays, and the next jobs are delivered.
#[test]
fn panicking_worker_defers_every_recipient_and_is_replaced() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock")).daemon("workers", "2");
    let daemon = Daemon::start_env(&work, &settings, &[("MAILHOP_DEBUG_PANIC_JOB", "boom")]);
    let mut c = daemon.client();
    for n in 0..5 {
        let id = format!("boom-{n}");
        c.send(&two_recipient_job(&id, &sink.nexthop(), &message));
        let answer = c.answer();
        assert_eq!(answer["id"], id.as_str(), "{answer}");
        let recipients = answer["recipients"].as_array().expect("a result");
        assert_eq!(recipients.len(), 2, "{answer}");
        for r in recipients {
            assert_eq!(r["status"], "deferred", "{answer}");
            assert_eq!(r["dsn"], "4.3.0", "{answer}");
            assert_eq!(r["diagnostic"], "unknown mail transport error", "{answer}");
        }
        daemon.wait_log(&format!("job {id}: the worker panicked"));
    }
    let status = status_of(&daemon);
    assert_eq!(status["workers"]["total"], 2, "{status}");
    assert_eq!(status["workers"]["busy"], 0, "{status}");
    // `mailhop send` through the daemon: a temporary failure.
    let config = daemon.config.display().to_string();
    let nexthop = sink.nexthop();
    let msg = message.display().to_string();
    let (code, out, err) = run_mailhop(
        &[
            "send",
            "--config",
            &config,
            "--nexthop",
            &nexthop,
            "--from",
            "a@x.test",
            "--to",
            "b@y.test",
            "--id",
            "boom-send",
            &msg,
        ],
        None,
        None,
    );
    assert_eq!(code, 75, "{out} {err}");
    assert!(out.contains("dsn=4.3.0, status=deferred"), "{out}");
    // The replaced workers deliver: more jobs than workers, at once.
    let lines: String = (0..6)
        .map(|n| job(&format!("after-{n}"), &nexthop, &message) + "\n")
        .collect();
    c.send_raw(lines.as_bytes());
    for answer in c.answers(6).values() {
        assert_all(answer, "sent");
    }
    let status = status_of(&daemon);
    assert_eq!(status["workers"]["total"], 2, "{status}");
    assert_eq!(sink.seen(|s| s.messages), 6);
    let log = daemon.log();
    let deferrals = log
        .lines()
        .filter(|l| l.contains("boom-0: to=<") && l.contains("status=deferred"))
        .count();
    assert_eq!(deferrals, 2, "one deferral line per recipient:\n{log}");
}

/// Issue 12 item 6: time limits too long for the clock do not overflow:
/// a delivery with such a `connect_timeout` works, and SIGTERM with such
/// a `shutdown_timeout` exits 0 (it panicked in `Instant + timeout`).
#[test]
fn huge_shutdown_timeout_does_not_overflow() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let huge = "\"18446744073709551615s\"";
    let settings = Settings::new(&work.path().join("m.sock"))
        .smtp("connect_timeout", huge)
        .daemon("shutdown_timeout", huge);
    let mut daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    c.send(&job("huge-1", &sink.nexthop(), &message));
    assert_all(&c.answer(), "sent");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// The log lines of `id`'s recipient `rcpt` that carry an outcome.
fn status_lines(log: &str, id: &str, rcpt: &str) -> Vec<String> {
    let to = format!("{id}: to=<{rcpt}>");
    log.lines()
        .filter(|l| l.contains(&to) && l.contains("status="))
        .map(str::to_string)
        .collect()
}

/// Issue 12 item 8: a job still waiting for its end-of-data reply when
/// `shutdown_timeout` ends is answered at once, every recipient 4.x with
/// Postfix's "message may be sent more than once" words; the server's
/// later 250 is logged as information only: one `status=` line per
/// recipient, the one the client got.
#[test]
fn shutdown_cuts_a_pending_end_of_data_with_one_outcome_per_recipient() {
    let work = workdir();
    let sink = Sink::start(Dot::After(Duration::from_secs(4)));
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .daemon("workers", "1")
        .daemon("shutdown_timeout", "\"1s\"");
    let mut daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    c.send(&two_recipient_job("dot1", &sink.nexthop(), &message));
    sink.wait("the final dot arrived", |s| s.messages == 1);
    let start = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let answer = c.answer();
    let took = start.elapsed();
    let _ = writeln!(io::stderr(), "answered {took:?} after SIGTERM");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    assert_eq!(answer["id"], "dot1");
    let recipients = answer["recipients"].as_array().expect("a result");
    assert_eq!(recipients.len(), 2, "{answer}");
    for r in recipients {
        assert_eq!(r["status"], "deferred", "{answer}");
        assert!(
            r["dsn"].as_str().is_some_and(|d| d.starts_with("4.")),
            "{answer}"
        );
        let text = r["diagnostic"].as_str().unwrap_or_default();
        assert!(
            text.ends_with("while sending end of data -- message may be sent more than once"),
            "{answer}"
        );
    }
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    let _ = writeln!(io::stderr(), "exited {:?} after SIGTERM", start.elapsed());
    let log = daemon.log();
    for rcpt in ["b@y.test", "c@y.test"] {
        let lines = status_lines(&log, "dot1", rcpt);
        assert_eq!(lines.len(), 1, "one outcome for {rcpt}:\n{log}");
        assert!(
            lines[0].contains("status=deferred") && lines[0].contains("may be sent more than once"),
            "{log}"
        );
        // The server's late 250: information only.
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("dot1: to=<{rcpt}>"))
                    && l.contains("late result")
                    && l.contains(": sent (250 2.0.0")),
            "{log}"
        );
    }
}

/// Issue 12 item 8: each recipient is logged when it is settled, not when
/// the whole job ends: of a job for two destinations, the one delivered
/// first is in the log while the other still waits for DNS.
#[test]
fn recipients_are_logged_when_settled_not_at_job_end() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    // A DNS server that never answers: slow.test waits for the timeout.
    let (_silent, dns_table) = silent_dns();
    let settings = Settings::new(&work.path().join("m.sock"))
        .smtp("port", &sink.server.port().to_string())
        .extra(&dns_table);
    let daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    let two = json!({
        "id": "early1",
        "sender": "a@x.test",
        "recipients": [{"address": "b@[127.0.0.1]"}, {"address": "c@slow.test"}],
        "message": {"path": message.display().to_string()},
    });
    c.send(&two.to_string());
    daemon.wait_log("early1: to=<b@[127.0.0.1]>");
    let logged = Instant::now();
    let answer = c.answer();
    let waited = logged.elapsed();
    assert!(
        waited > Duration::from_millis(1500),
        "the first recipient was logged only {waited:?} before the job ended:\n{}",
        daemon.log()
    );
    assert_eq!(answer["recipients"][0]["status"], "sent", "{answer}");
    assert_eq!(answer["recipients"][1]["status"], "deferred", "{answer}");
    let log = daemon.log();
    assert_eq!(
        status_lines(&log, "early1", "b@[127.0.0.1]").len(),
        1,
        "{log}"
    );
    assert_eq!(
        status_lines(&log, "early1", "c@slow.test").len(),
        1,
        "{log}"
    );
}

/// Issue 12 item 11: a changed `[tls]` section empties the connection
/// cache on SIGHUP: the idle session is closed (QUIT) and the next job
/// connects afresh instead of reusing a session set up under the old
/// TLS settings.
#[test]
fn sighup_with_changed_tls_empties_the_connection_cache() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let settings = Settings::new(&work.path().join("m.sock"))
        .extra("[cache]\ntime_limit = \"60s\"\n\n[tls]\nplaintext_retry_after = \"300s\"\n");
    let daemon = Daemon::start(&work, &settings);
    let cached_job = |id: &str| {
        let mut line: Value =
            serde_json::from_str(&job(id, &sink.nexthop(), &message)).expect("json");
        line["cache"] = json!({"load": true, "store": true});
        line.to_string()
    };
    let mut c = daemon.client();
    c.send(&cached_job("tls-1"));
    assert_all(&c.answer(), "sent");
    c.send(&cached_job("tls-2"));
    assert_all(&c.answer(), "sent");
    assert_eq!(sink.seen(|s| s.connections), 1, "the session was reused");
    assert_eq!(status_of(&daemon)["cache"]["idle"], 1);
    // A reload that leaves [tls] (and [cache]) alone keeps the session.
    fs::write(
        &daemon.config,
        settings.smtp("helo_name", "\"first.test\"").text(),
    )
    .expect("rewrite the configuration");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.seen(|s| s.quits), 0, "kept without a [tls] change");
    let text = Settings::new(&work.path().join("m.sock"))
        .smtp("helo_name", "\"first.test\"")
        .extra("[cache]\ntime_limit = \"60s\"\n\n[tls]\nplaintext_retry_after = \"301s\"\n")
        .text();
    fs::write(&daemon.config, text).expect("rewrite the configuration");
    daemon.signal(Signal::SIGHUP);
    sink.wait("the idle session was closed", |s| s.quits == 1);
    assert_eq!(status_of(&daemon)["cache"]["idle"], 0);
    c.send(&cached_job("tls-3"));
    assert_all(&c.answer(), "sent");
    assert_eq!(
        sink.seen(|s| s.connections),
        2,
        "a fresh session after the change"
    );
}

/// Issue 12 item 11: SIGHUP applies a changed access policy to client
/// connections already open: a peer removed from `allowed_uids` gets its
/// next job on the same connection refused. Needs root (the client runs
/// as `nobody`, through python3).
#[test]
fn sighup_applies_a_changed_access_policy_to_open_connections() {
    if !is_root() {
        skip("the access-policy reload test needs root (a client runs as nobody)");
        return;
    }
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        skip("the access-policy reload test needs /usr/bin/python3 for its client");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .unwrap_or(65534);
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let socket = work.path().join("m.sock");
    let base = || Settings::new(&socket).daemon("socket_mode", "\"0666\"");
    let settings = base().daemon("allowed_uids", &format!("[{nobody}]"));
    let daemon = Daemon::start(&work, &settings);
    // A client as nobody: relays each stdin line to the daemon and prints
    // the answer line, on one connection.
    let relay = "import socket, sys\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 s.settimeout(20)\n\
                 s.connect(sys.argv[1])\n\
                 f = s.makefile('rw')\n\
                 for line in sys.stdin:\n\
                 \x20   f.write(line)\n\
                 \x20   f.flush()\n\
                 \x20   print(f.readline().strip(), flush=True)\n";
    let mut child = Command::new(python)
        .args(["-c", relay])
        .arg(&socket)
        .uid(nobody)
        .gid(nobody)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the client as nobody");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let _reap = Reaped(child);
    let mut ask = |line: &str| -> Value {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the client");
        let mut answer = String::new();
        stdout.read_line(&mut answer).expect("read from the client");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("bad answer {answer:?}: {e}"))
    };
    assert_all(&ask(&job("acl-1", &sink.nexthop(), &message)), "sent");
    fs::write(&daemon.config, base().text()).expect("rewrite the configuration");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded");
    let refused = ask(&job("acl-2", &sink.nexthop(), &message));
    assert_error(
        &refused,
        None,
        &format!("permission denied: uid {nobody} is not allowed to submit jobs"),
    );
    assert_eq!(
        sink.seen(|s| s.messages),
        1,
        "the refused job was not delivered"
    );
    daemon.wait_log(&format!("uid {nobody}"));
}

/// Issue 12 item 8: a job answered at shutdown before its message body
/// went out sends no body afterwards: its worker, still busy with a slow
/// DNS lookup when `shutdown_timeout` ends, later reaches the server but
/// stops before the message (the client was told "deferred"); the log
/// still has one outcome per recipient, the one the client got.
#[test]
fn a_job_answered_at_shutdown_sends_no_message_afterwards() {
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let message = work.file_with_mode("msg", MESSAGE, 0o644);
    let (_silent, dns_table) = silent_dns();
    let settings = Settings::new(&work.path().join("m.sock"))
        .smtp("port", &sink.server.port().to_string())
        .daemon("workers", "1")
        .daemon("shutdown_timeout", "\"1s\"")
        .extra(&dns_table);
    let mut daemon = Daemon::start(&work, &settings);
    let mut c = daemon.client();
    // "0slow.test" sorts before "[127.0.0.1]": its DNS wait comes first.
    let two = json!({
        "id": "cut1",
        "sender": "a@x.test",
        "recipients": [{"address": "b@0slow.test"}, {"address": "c@[127.0.0.1]"}],
        "message": {"path": message.display().to_string()},
    });
    c.send(&two.to_string());
    // Well inside the 3 s DNS wait of the first destination.
    thread::sleep(Duration::from_millis(500));
    daemon.signal(Signal::SIGTERM);
    let answer = c.answer();
    for r in answer["recipients"].as_array().expect("a result") {
        assert_eq!(r["status"], "deferred", "{answer}");
        assert_eq!(r["diagnostic"], "mail system shutting down", "{answer}");
    }
    drop(c);
    assert_eq!(daemon.wait_exit(LIMIT), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("cut1: to=<c@[127.0.0.1]>") && log.contains("late result"),
        "the worker went on to the server:\n{log}"
    );
    assert_eq!(
        sink.seen(|s| s.messages),
        0,
        "no message after the answer:\n{log}"
    );
    for rcpt in ["b@0slow.test", "c@[127.0.0.1]"] {
        let lines = status_lines(&log, "cut1", rcpt);
        assert_eq!(lines.len(), 1, "{rcpt}:\n{log}");
        assert!(
            lines[0].contains("status=deferred (mail system shutting down)"),
            "{log}"
        );
    }
}

/// Found by the soak: a client that sends many jobs and leaves without
/// reading made the reader stop at the first answer it could not write,
/// and the complete job lines still in the socket were never run (no
/// answer, no log line). Every line a client sent whole is run and its
/// recipients logged, once.
#[test]
fn every_whole_line_of_a_departed_client_is_run() {
    const JOBS: usize = 150;
    let work = workdir();
    let sink = Sink::start(Dot::Now);
    let daemon = Daemon::start(
        &work,
        &Settings::new(&work.path().join("m.sock")).daemon("queue_capacity", "4"),
    );
    let padding = "x".repeat(16 * 1024);
    let mut lines = String::new();
    for n in 0..JOBS {
        let line = json!({
            "id": format!("left-{n}"),
            "nexthop": sink.nexthop(),
            "sender": "a@x.test",
            "recipients": [{"address": format!("r{n}@y.test")}],
            "message": {"data": format!("Subject: {n}\n\n{padding}\n")},
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    {
        let mut c = daemon.client();
        c.send_raw(lines.as_bytes());
    } // Gone without reading a single answer.
    let start = Instant::now();
    loop {
        let log = daemon.log();
        let settled = (0..JOBS)
            .filter(|n| {
                !status_lines(&log, &format!("left-{n}"), &format!("r{n}@y.test")).is_empty()
            })
            .count();
        if settled == JOBS {
            break;
        }
        assert!(
            start.elapsed() < LIMIT * 2,
            "only {settled} of {JOBS} jobs of the departed client were run:\n{}",
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    for n in 0..JOBS {
        let lines = status_lines(&log, &format!("left-{n}"), &format!("r{n}@y.test"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("status=sent"), "{lines:?}");
    }
}
