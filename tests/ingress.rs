//! The LMTP ingress (`[[ingress]]`, src/ingress) in a running daemon,
//! spoken to by an LMTP client in the test: per-recipient replies that
//! carry each remote outcome, the message reaching a real smtp-sink
//! unchanged, the deadline (a waiting job never starts, a running one
//! sends no body), SIGTERM mid-delivery (4xx, never a loss), size and
//! access refusals, and the spool (emptied after each answer, leftovers
//! removed at start). Private-Postfix end-to-end tests are in
//! tests/ingress_postfix.rs.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::daemon::Daemon;
use common::{Action, Behaviour, Listen, Sink, Workdir, free_port, said, smtp_server};
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// An LMTP client: one reply (all its lines) at a time.
struct Lmtp {
    reader: BufReader<Box<dyn std::io::Read + Send>>,
    writer: Box<dyn Write + Send>,
}

impl Lmtp {
    fn unix(path: &Path) -> Lmtp {
        let stream = UnixStream::connect(path).expect("connect to the ingress socket");
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut lmtp = Lmtp {
            reader: BufReader::new(Box::new(stream)),
            writer: Box::new(writer),
        };
        let greeting = lmtp.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        lmtp
    }

    fn tcp(port: u16) -> Lmtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the ingress port");
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut lmtp = Lmtp {
            reader: BufReader::new(Box::new(stream)),
            writer: Box::new(writer),
        };
        let greeting = lmtp.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        lmtp
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    /// One reply, its lines joined with "\n" (empty when the server closed).
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return lines.join("\n");
            }
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// LHLO, then MAIL, the RCPTs and DATA pipelined; checks each reply.
    fn begin(&mut self, xforward: &str, sender: &str, recipients: &[&str]) {
        self.send("LHLO mta.test\r\n");
        let lhlo = self.reply();
        assert!(
            lhlo.contains("PIPELINING") && lhlo.contains("XFORWARD"),
            "{lhlo}"
        );
        if !xforward.is_empty() {
            self.send(&format!("XFORWARD {xforward}\r\n"));
            assert_eq!(self.reply(), "250 2.0.0 Ok");
        }
        let mut batch = format!("MAIL FROM:<{sender}>\r\n");
        for r in recipients {
            batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        batch.push_str("DATA\r\n");
        self.send(&batch);
        assert_eq!(self.reply(), "250 2.1.0 Ok");
        for _ in recipients {
            assert_eq!(self.reply(), "250 2.1.5 Ok");
        }
        assert!(self.reply().starts_with("354 "));
    }

    /// XFORWARD, MAIL, the RCPTs and DATA on a session already greeted.
    fn begin_again(&mut self, xforward: &str, sender: &str, recipients: &[&str]) {
        let mut batch = format!("XFORWARD {xforward}\r\nMAIL FROM:<{sender}>\r\n");
        for r in recipients {
            batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        batch.push_str("DATA\r\n");
        self.send(&batch);
        assert_eq!(self.reply(), "250 2.0.0 Ok");
        assert_eq!(self.reply(), "250 2.1.0 Ok");
        for _ in recipients {
            assert_eq!(self.reply(), "250 2.1.5 Ok");
        }
        assert!(self.reply().starts_with("354 "));
    }

    /// Sends the message (dot-stuffed here) and the final dot; the
    /// replies, one per recipient.
    fn message(&mut self, body: &str, recipients: usize) -> Vec<String> {
        let mut data = String::new();
        for line in body.split_inclusive('\n') {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
        }
        data.push_str(".\r\n");
        self.send(&data);
        (0..recipients).map(|_| self.reply()).collect()
    }
}

/// A daemon with `ingress` (the `[[ingress]]` tables) and more `[daemon]` keys.
fn start(daemon_keys: &str, ingress: &str) -> (Daemon, PathBuf) {
    let work = Workdir::with_prefix("mailhop-ingress-");
    let spool = work.path().join("spool");
    let text = format!(
        "[smtp]\nconnect_timeout = \"5s\"\n[daemon]\nsocket = {:?}\nspool_directory = {:?}\n{daemon_keys}\n{ingress}\n",
        work.path().join("m.sock").display().to_string(),
        spool.display().to_string(),
    );
    (Daemon::start_text(&work, &text, LIMIT).owning(work), spool)
}

/// One transaction on a connection of its own, on a thread: the replies
/// after the dot (the test goes on while the daemon delivers).
fn in_background(
    socket: &Path,
    ident: &str,
    recipients: &[&str],
    body: &str,
) -> thread::JoinHandle<Vec<String>> {
    let socket = socket.to_path_buf();
    let xforward = format!("IDENT={ident}");
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let body = body.to_string();
    thread::spawn(move || {
        let mut lmtp = Lmtp::unix(&socket);
        let rcpts: Vec<&str> = recipients.iter().map(String::as_str).collect();
        lmtp.begin(&xforward, "s@y.test", &rcpts);
        lmtp.message(&body, rcpts.len())
    })
}

/// Waits (bounded) until the ingress socket accepts connections.
fn wait_socket(path: &Path) {
    let start = Instant::now();
    while UnixStream::connect(path).is_err() {
        assert!(start.elapsed() < LIMIT, "{} never listened", path.display());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until the spool is empty: a connection keeps its spool
/// file from one message to the next and removes it when it closes.
fn assert_spool_empties(spool: &Path) {
    let start = Instant::now();
    while !spool_files(spool).is_empty() && start.elapsed() < LIMIT {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(spool_files(spool).is_empty(), "{:?}", spool_files(spool));
}

fn spool_files(spool: &Path) -> Vec<String> {
    fs::read_dir(spool)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A daemon whose only ingress listens on a UNIX socket in its work dir.
fn start_unix(nexthop: &str, daemon_keys: &str, extra: &str) -> (Daemon, PathBuf, PathBuf) {
    start_unix_env(nexthop, daemon_keys, extra, &[])
}

/// [`start_unix`] with more environment for the daemon.
fn start_unix_env(
    nexthop: &str,
    daemon_keys: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (Daemon, PathBuf, PathBuf) {
    let work = Workdir::with_prefix("mailhop-ingress-");
    let spool = work.path().join("spool");
    let socket = work.path().join("lmtp.sock");
    let text = format!(
        "[smtp]\nconnect_timeout = \"5s\"\n[daemon]\nsocket = {:?}\nspool_directory = {:?}\n{daemon_keys}\n\
         [[ingress]]\nlisten = \"unix:{}\"\nnexthop = {nexthop:?}\n{extra}\n",
        work.path().join("m.sock").display().to_string(),
        spool.display().to_string(),
        socket.display(),
    );
    let config = work.file("mailhop.toml", text.as_bytes());
    let mut cmd = common::daemon::daemon_command(&config);
    cmd.envs(env.iter().copied());
    let m_sock = work.path().join("m.sock");
    let daemon = Daemon::launch(&work, cmd, config, m_sock, LIMIT).owning(work);
    wait_socket(&socket);
    (daemon, socket, spool)
}

#[test]
fn each_recipient_gets_its_remote_outcome_after_the_dot() {
    let server = smtp_server(Behaviour {
        rcpt: vec![
            "250 2.1.5 Ok".into(),
            "550 5.1.1 <b@x.test>: Recipient address rejected: User unknown".into(),
            "450 4.2.0 <c@x.test>: Recipient address rejected: Greylisted".into(),
        ],
        ..Behaviour::default()
    });
    let (daemon, socket, spool) = start_unix(&server.nexthop(), "", "");
    let mut lmtp = Lmtp::unix(&socket);
    lmtp.begin(
        "NAME=client.test ADDR=192.0.2.7 IDENT=4QxYz1",
        "s@y.test",
        &["a@x.test", "b@x.test", "c@x.test"],
    );
    let replies = lmtp.message("Subject: ingress\r\n\r\n.leading dot\r\nhello\r\n", 3);
    assert_eq!(
        replies[0],
        format!(
            "250 2.0.0 <a@x.test> host {} said: 250 2.0.0 Ok: queued as 4XYZ",
            server.relay()
        )
    );
    assert_eq!(
        replies[1],
        format!(
            "550 5.1.1 <b@x.test> {}",
            said(
                "550 5.1.1 <b@x.test>: Recipient address rejected: User unknown",
                "RCPT TO"
            )
        )
    );
    assert_eq!(
        replies[2],
        format!(
            "450 4.2.0 <c@x.test> {}",
            said(
                "450 4.2.0 <c@x.test>: Recipient address rejected: Greylisted",
                "RCPT TO"
            )
        )
    );
    // The connection goes on: a second transaction, then QUIT.
    lmtp.send("RSET\r\nQUIT\r\n");
    assert_eq!(lmtp.reply(), "250 2.0.0 Ok");
    assert!(lmtp.reply().starts_with("221 "));
    let transcript = server.finish().expect("the server saw the delivery");
    assert_eq!(
        transcript.body.as_deref(),
        Some(&b"Subject: ingress\r\n\r\n..leading dot\r\nhello\r\n"[..]),
        "the message as the MTA sent it (dot-stuffed again on the way out)"
    );
    // The MTA's queue id is the job id of mailhop's log lines, and the
    // transaction is logged with its XFORWARD attributes.
    daemon.wait_log("4QxYz1: to=<c@x.test>");
    let log = daemon.log();
    assert!(
        log.contains("4QxYz1: from=<s@y.test>, size=41, nrcpt=3, name=client.test, addr=192.0.2.7, ident=4QxYz1"),
        "{log}"
    );
    assert!(log.contains("4QxYz1: to=<b@x.test>") && log.contains("status=bounced"));
    // Nothing stays in the spool once the connection is over.
    assert_spool_empties(&spool);
    // The status report counts the message and its replies by class.
    let mut status = Value::Null;
    for _ in 0..100 {
        let mut client = daemon.client();
        client.send(r#"{"command":"status"}"#);
        status = client.answer();
        if status["ingress"]["connections"] == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let ingress = &status["ingress"];
    assert_eq!(ingress["messages"], 1, "{status}");
    assert_eq!(ingress["replied_2xx"], 1, "{status}");
    assert_eq!(ingress["replied_4xx"], 1, "{status}");
    assert_eq!(ingress["replied_5xx"], 1, "{status}");
    assert_eq!(ingress["connections"], 0, "{status}");
}

#[test]
fn a_real_smtp_sink_receives_the_message_unchanged_over_an_inet_listener() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-d", "{dir}/dump/%M."]) else {
        return;
    };
    let port = free_port();
    let (daemon, spool) = start(
        "",
        &format!(
            "[[ingress]]\nlisten = \"inet:127.0.0.1:{port}\"\nnexthop = {:?}\n",
            sink.nexthop()
        ),
    );
    let start = Instant::now();
    let mut lmtp = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            drop(stream);
            break Lmtp::tcp(port);
        }
        assert!(start.elapsed() < LIMIT, "the ingress never listened");
        thread::sleep(Duration::from_millis(20));
    };
    // 8-bit text, a long line, dots at line starts.
    let mut body = String::from("Subject: caf\u{e9}\r\nX-Test: sink\r\n\r\n");
    body.push_str(&"x".repeat(900));
    body.push_str("\r\n.\r\n..\r\n.end\r\n");
    for i in 0..2000 {
        body.push_str(&format!("line {i} of a longer message\r\n"));
    }
    lmtp.begin("", "s@y.test", &["r@sink.test"]);
    let replies = lmtp.message(&body, 1);
    assert!(
        replies[0].starts_with("250 2.0.0 <r@sink.test> host 127.0.0.1[127.0.0.1]"),
        "{replies:?}"
    );
    let dumps = sink.wait_files("dump", 1);
    assert_eq!(dumps.len(), 1);
    let dumped = fs::read(&dumps[0]).unwrap();
    // smtp-sink writes its dump with LF line ends, after headers of its own.
    let expected = body.replace("\r\n", "\n");
    assert!(
        dumped
            .windows(expected.len())
            .any(|w| w == expected.as_bytes()),
        "the sink's dump holds the message as sent"
    );
    drop(lmtp);
    assert_spool_empties(&spool);
    drop(daemon);
}

#[test]
fn at_the_deadline_a_waiting_job_never_starts_and_a_running_one_sends_no_body() {
    // One worker: the first message's delivery stalls at MAIL FROM (the
    // server answers after 6 s); the second message waits for the worker.
    let server =
        smtp_server(Behaviour::default().fault("MAIL", 0, Action::Delay(Duration::from_secs(6))));
    let (daemon, socket, spool) = start_unix(
        &server.nexthop(),
        "workers = 1\nqueue_capacity = 10",
        "deadline = \"2s\"",
    );
    let started = Instant::now();
    let first = in_background(
        &socket,
        "FIRST1",
        &["a@x.test"],
        "Subject: first\r\n\r\nbody\r\n",
    );
    daemon.wait_log("FIRST1: from=<s@y.test>");
    let mut second = Lmtp::unix(&socket);
    second.begin("IDENT=SECOND2", "s@y.test", &["b@x.test"]);
    let second_replies = second.message("Subject: second\r\n\r\nbody\r\n", 1);
    let first_replies = first.join().unwrap();
    let waited = started.elapsed();
    for (replies, rcpt) in [(&first_replies, "a@x.test"), (&second_replies, "b@x.test")] {
        assert!(
            replies[0].starts_with(&format!(
                "451 4.3.0 <{rcpt}> delivery not completed within the ingress deadline (2s)"
            )),
            "{replies:?}"
        );
    }
    assert!(
        waited < Duration::from_secs(5),
        "answered at the deadline, not after the stalled delivery: {waited:?}"
    );
    // The running job's session goes on after the answer, but sends no
    // message body; the waiting job never connects.
    let transcript = server.finish().expect("the first delivery's session");
    assert!(
        !transcript.commands.iter().any(|c| c == ".")
            && transcript.body.unwrap_or_default().is_empty(),
        "no message reached the server: {:?}",
        transcript.commands
    );
    daemon.wait_log("SECOND2: to=<b@x.test>");
    let log = daemon.log();
    assert!(
        !log.contains("SECOND2: to=<b@x.test>, relay=127"),
        "the waiting job was never delivered: {log}"
    );
    assert!(spool_files(&spool).is_empty(), "{:?}", spool_files(&spool));
}

#[test]
fn sigterm_mid_delivery_answers_4xx_and_idle_connections_get_421() {
    // The end-of-data reply comes only after 8 s: the body is on its way
    // when the daemon is told to stop.
    let server =
        smtp_server(Behaviour::default().fault(".", 0, Action::Delay(Duration::from_secs(8))));
    let (mut daemon, socket, _spool) =
        start_unix(&server.nexthop(), "shutdown_timeout = \"1s\"", "");
    let mut idle = Lmtp::unix(&socket);
    idle.send("LHLO mta.test\r\n");
    assert!(idle.reply().starts_with("250-"));
    let busy = in_background(
        &socket,
        "TERM1",
        &["a@x.test", "b@x.test"],
        "Subject: term\r\n\r\nbody\r\n",
    );
    // Wait until the server has the body (its dot reply is pending).
    daemon.wait_log("TERM1: from=<s@y.test>");
    thread::sleep(Duration::from_millis(700));
    daemon.signal(Signal::SIGTERM);
    let replies = busy.join().unwrap();
    for (reply, rcpt) in replies.iter().zip(["a@x.test", "b@x.test"]) {
        assert!(
            reply.starts_with(&format!("451 4.3.0 <{rcpt}> mail system shutting down")),
            "a recipient in flight at shutdown is deferred, never lost: {replies:?}"
        );
    }
    assert!(
        idle.reply().starts_with("421 4.3.0 "),
        "an idle connection is told the daemon stops"
    );
    assert_eq!(daemon.wait_exit(LIMIT), Some(0));
    drop(server);
}

#[test]
fn a_message_over_max_message_size_is_refused_per_recipient() {
    let server = smtp_server(Behaviour::default());
    let (_daemon, socket, spool) = start_unix(&server.nexthop(), "", "max_message_size = 1000");
    let mut lmtp = Lmtp::unix(&socket);
    lmtp.send("LHLO mta.test\r\n");
    assert!(lmtp.reply().contains("250-SIZE 1000"));
    lmtp.send("MAIL FROM:<s@y.test> SIZE=5000\r\n");
    assert_eq!(lmtp.reply(), "552 5.3.4 Error: message file too big");
    lmtp.send("MAIL FROM:<s@y.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n");
    for _ in 0..3 {
        assert!(lmtp.reply().starts_with("250"));
    }
    assert!(lmtp.reply().starts_with("354"));
    let body = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(3000));
    let replies = lmtp.message(&body, 2);
    assert_eq!(
        replies,
        [
            "552 5.3.4 <a@x.test> Error: message file too big",
            "552 5.3.4 <b@x.test> Error: message file too big"
        ]
    );
    assert_eq!(server.connections(), 0, "nothing was delivered");
    assert!(spool_files(&spool).is_empty());
}

#[test]
fn spool_leftovers_are_removed_at_start_and_other_files_kept() {
    let work = Workdir::with_prefix("mailhop-ingress-");
    let spool = work.path().join("spool");
    fs::create_dir(&spool).unwrap();
    fs::write(spool.join("4242.7.lmtp"), b"left by a crash").unwrap();
    fs::write(spool.join("notes.txt"), b"not ours").unwrap();
    let socket = work.path().join("lmtp.sock");
    let text = format!(
        "[daemon]\nsocket = {:?}\nspool_directory = {:?}\n[[ingress]]\nlisten = \"unix:{}\"\n",
        work.path().join("m.sock").display().to_string(),
        spool.display().to_string(),
        socket.display()
    );
    let daemon = Daemon::start_text(&work, &text, LIMIT);
    wait_socket(&socket);
    assert_eq!(spool_files(&spool), ["notes.txt"]);
    assert!(
        daemon
            .log()
            .contains("removed 1 files left by an earlier run")
    );
    drop(daemon);
    drop(work);
}

#[test]
fn a_unix_peer_that_may_not_submit_is_refused_with_421() {
    if !common::is_root() {
        common::skip("refusing a peer by uid needs root (to connect as another uid)");
        return;
    }
    let server = smtp_server(Behaviour::default());
    let (_daemon, socket, _spool) = start_unix(&server.nexthop(), "socket_mode = \"0666\"", "");
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); s.settimeout(10); print(s.recv(200).decode().strip())",
        socket.display().to_string()
    );
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir("/")
        .uid(54321)
        .gid(54321)
        .output()
        .expect("run python3 as uid 54321");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.starts_with("421 4.7.0 ") && said.contains("uid 54321 is not allowed"),
        "{said} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(server.connections(), 0);
}

use std::os::unix::process::CommandExt;

#[test]
fn a_transaction_whose_mta_hangs_up_is_cancelled_before_it_starts() {
    // One worker, busy for 4 s with the first message (its server answers
    // MAIL late); the second message's MTA gives up and closes while its
    // job waits: the job must never be delivered (the MTA sends it again).
    let server =
        smtp_server(Behaviour::default().fault("MAIL", 0, Action::Delay(Duration::from_secs(4))));
    let (daemon, socket, spool) =
        start_unix(&server.nexthop(), "workers = 1\nqueue_capacity = 10", "");
    let first = in_background(
        &socket,
        "STAYS1",
        &["a@x.test"],
        "Subject: first\r\n\r\nbody\r\n",
    );
    daemon.wait_log("STAYS1: from=<s@y.test>");
    {
        let mut second = Lmtp::unix(&socket);
        second.begin("IDENT=GONE2", "s@y.test", &["b@x.test"]);
        second.send("Subject: second\r\n\r\nbody\r\n.\r\n");
        daemon.wait_log("GONE2: from=<s@y.test>");
        // The MTA's timeout: it hangs up without waiting for the replies.
    }
    daemon.wait_log("GONE2: to=<b@x.test>");
    let first_replies = first.join().unwrap();
    assert!(
        first_replies[0].starts_with("250 2.0.0 <a@x.test>"),
        "{first_replies:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("job GONE2: the MTA closed the LMTP connection"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("GONE2: to=<b@x.test>") && l.contains("status=deferred")),
        "{log}"
    );
    let transcript = server.finish().expect("the first delivery's session");
    let mails = transcript
        .commands
        .iter()
        .filter(|c| c.starts_with("MAIL FROM"))
        .count();
    assert_eq!(
        mails, 1,
        "only the first message was delivered: {:?}",
        transcript.commands
    );
    let start = Instant::now();
    while !spool_files(&spool).is_empty() && start.elapsed() < LIMIT {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(spool_files(&spool).is_empty(), "{:?}", spool_files(&spool));
}

#[test]
fn an_ingress_with_transport_lmtp_delivers_to_a_real_lmtp_sink() {
    let Some(sink) = Sink::start(Listen::Unix, &["-L"]) else {
        return;
    };
    let (daemon, socket, spool) = start_unix(&sink.unix_nexthop(), "", "transport = \"lmtp\"");
    let mut lmtp = Lmtp::unix(&socket);
    lmtp.begin("IDENT=LMTPOUT", "s@y.test", &["a@x.test", "b@x.test"]);
    let replies = lmtp.message("Subject: lmtp out\r\n\r\nbody\r\n", 2);
    for (reply, rcpt) in replies.iter().zip(["a@x.test", "b@x.test"]) {
        assert!(reply.starts_with("250 2."), "{replies:?}");
        assert!(
            reply.contains(&format!(" <{rcpt}> host ")) && reply.ends_with("said: 250 2.2.0 Ok"),
            "{replies:?}"
        );
    }
    daemon.wait_log("LMTPOUT: to=<b@x.test>");
    assert!(daemon.log().contains("mailhop/lmtp["), "{}", daemon.log());
    drop(lmtp);
    assert_spool_empties(&spool);
}

#[test]
fn a_worker_that_panics_mid_message_answers_4xx_and_the_next_message_goes() {
    // Debug builds only: the daemon's test hook makes a worker panic on
    // jobs whose id starts with "BOOM" (the MTA's queue id, here).
    if !cfg!(debug_assertions) {
        common::skip("the worker panic hook exists in debug builds only");
        return;
    }
    let Some(sink) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let (daemon, socket, spool) = start_unix_env(
        &sink.nexthop(),
        "workers = 2",
        "",
        &[("MAILHOP_DEBUG_PANIC_JOB", "BOOM")],
    );
    let mut lmtp = Lmtp::unix(&socket);
    lmtp.begin("IDENT=BOOM1", "s@y.test", &["a@x.test", "b@x.test"]);
    let replies = lmtp.message("Subject: boom\r\n\r\nbody\r\n", 2);
    assert_eq!(
        replies,
        [
            "451 4.3.0 <a@x.test> unknown mail transport error",
            "451 4.3.0 <b@x.test> unknown mail transport error"
        ]
    );
    daemon.wait_log("job BOOM1: the worker panicked");
    lmtp.send("RSET\r\n");
    assert_eq!(lmtp.reply(), "250 2.0.0 Ok");
    lmtp.begin_again("IDENT=FINE2", "s@y.test", &["c@x.test"]);
    let replies = lmtp.message("Subject: fine\r\n\r\nbody\r\n", 1);
    assert!(
        replies[0].starts_with("250 2.0.0 <c@x.test> host "),
        "{replies:?}"
    );
    // The connection's one spool file served both messages.
    assert_eq!(spool_files(&spool).len(), 1, "{:?}", spool_files(&spool));
    drop(lmtp);
    assert_spool_empties(&spool);
}

/// SMTP smuggling into the ingress: the published end-of-data variants
/// (`\n.\n`, `\r.\r`, `\n.\r\n` after a bare LF line...) do not end the
/// message (Postfix's `smtpd_forbid_bare_newline = normalize`); the
/// "second message" stays text of the first; the one message goes out
/// with CRLF line ends and stray CRs as spaces, and the smuggled MAIL FROM
/// never reaches the server as a command.
#[test]
fn no_smuggling_variant_ends_an_ingress_message_early() {
    let server = smtp_server(Behaviour::default());
    let (_daemon, socket, _spool) = start_unix(&server.nexthop(), "", "");
    let mut lmtp = Lmtp::unix(&socket);
    lmtp.begin("", "s@y.test", &["b@y.test"]);
    lmtp.send(
        "Subject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@y.test>\r\n\
         DATA\r\n\r\nsmuggled\r.\r\nagain\n.\r\nQUIT\r\n.\rbye\r\n.\r\n",
    );
    let reply = lmtp.reply();
    assert!(reply.starts_with("250 "), "{reply}");
    lmtp.send("QUIT\r\n");
    assert!(lmtp.reply().starts_with("221 "));
    let t = server.finish().expect("the daemon delivered");
    let mails: Vec<_> = t
        .commands
        .iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert_eq!(mails.len(), 1, "{:?}", t.commands);
    assert!(
        !t.commands.iter().any(|c| c.contains("evil@")),
        "{:?}",
        t.commands
    );
    let body = t.body.expect("a message arrived");
    let want: &[u8] = b"hello\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@y.test>\r\n\
        DATA\r\n\r\nsmuggled .\r\nagain\r\nQUIT\r\n bye\r\n";
    assert!(body.ends_with(want), "{:?}", String::from_utf8_lossy(&body));
}
