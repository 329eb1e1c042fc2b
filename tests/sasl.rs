//! SASL AUTH client end to end: `mailhop send --direct` against a private
//! Postfix smtpd whose SASL is a private Dovecot (`smtpd_sasl_type =
//! dovecot`, passwd-file with `{PLAIN}` passwords, mechanisms PLAIN, LOGIN
//! and SCRAM-SHA-256). Two smtpd listeners, both accepting mail only from
//! authenticated clients (`smtpd_recipient_restrictions =
//! permit_sasl_authenticated, reject`):
//!
//! - `postfix/sasl/smtpd` on 127.0.0.2 announces AUTH in plaintext;
//! - `postfix/authonly/smtpd` on 127.0.0.3 has `smtpd_tls_auth_only =
//!   yes`: AUTH only after STARTTLS.
//!
//! Cases: right password (delivered; Postfix logs sasl_method and
//! sasl_username), wrong password (Postfix's wording, deferred with the
//! soft bounce), the mechanism filter choosing LOGIN, SCRAM-SHA-256 under
//! the default security options, PLAIN after STARTTLS allowed by
//! tls_security_options, and the failures without TLS: a server that
//! announces AUTH only over TLS is talked to without AUTH (as Postfix does:
//! its relay refusal bounces the mail), and the default options leave no
//! mechanism in plaintext ("no mechanism available"), a filter that leaves
//! nothing gives "offered no compatible authentication mechanisms". The
//! password table must be closed to group and other.
//!
//! With the daemon (as root, switching to `nobody`): a cached session
//! authenticated as one user is reused for that user's next job; a reload
//! that changes the password table empties the cache, so the next job
//! authenticates as the new user; a reload with a table open to others is
//! refused (the old table stays); a daemon whose table is not its user's
//! does not start (exit 78).
//!
//! With scripted servers: no plaintext retry after a broken STARTTLS when
//! the server has a credential; a soft AUTH failure lets the fallback
//! relay try, a hard one (auth_soft_bounce = false) bounces.
//!
//! Each test starts its own Dovecot and Postfix and stops them; under
//! `CI=true` a missing Postfix or Dovecot fails the test.

mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;

use common::certs::Pki;
use common::daemon::{Daemon, Reaped, daemon_command};
use common::dovecot::Dovecot;
use common::postfix::{Listener, Postfix};
use common::{Delivery, Line, Run, Workdir};

const SASL_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const AUTH_ONLY_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const USER: &str = "alice";
const PASSWORD: &str = "pencil-7";
const RCPT: &str = "b@y.test";
const OTHER_USER: &str = "bob";
const OTHER_PASSWORD: &str = "bobs-secret";
const LIMIT: Duration = Duration::from_secs(20);

/// The servers of one test.
struct Lab {
    // Postfix first: it is stopped before the Dovecot it uses.
    pf: Postfix,
    _dovecot: Dovecot,
    _pki: Pki,
}

impl Lab {
    fn start() -> Option<Lab> {
        let dovecot = Dovecot::start(&[(USER, PASSWORD), (OTHER_USER, OTHER_PASSWORD)])?;
        let pki = Pki::generate();
        let socket = dovecot.auth_socket();
        let sasl = [
            "smtpd_sasl_auth_enable=yes".to_string(),
            "smtpd_sasl_type=dovecot".to_string(),
            format!("smtpd_sasl_path={}", socket.display()),
            "smtpd_recipient_restrictions=permit_sasl_authenticated,reject".to_string(),
        ];
        let plain_cert = pki.issue("sasl.tls.test");
        let only_cert = pki.issue("authonly.tls.test");
        let mut auth_only = sasl.to_vec();
        auth_only.push("smtpd_tls_auth_only=yes".into());
        let pf = Postfix::start_with(
            &pki,
            &[
                Listener::new(SASL_ADDR, "sasl", &plain_cert.chain).with_options(&sasl),
                Listener::new(AUTH_ONLY_ADDR, "authonly", &only_cert.chain)
                    .with_options(&auth_only),
            ],
        )?;
        Some(Lab {
            pf,
            _dovecot: dovecot,
            _pki: pki,
        })
    }

    fn nexthop(&self, addr: Ipv4Addr) -> String {
        format!("[{addr}]:{}", self.pf.listener_port)
    }

    fn relay(&self, addr: Ipv4Addr) -> String {
        format!("{addr}[{addr}]:{}", self.pf.listener_port)
    }

    /// `mailhop send` to `addr` with this `[tls]` level and these `[sasl]`
    /// lines, the password table holding `password` for the destination.
    fn send(&self, addr: Ipv4Addr, level: &str, sasl: &str, password: &str) -> Run {
        let work = Workdir::new();
        let table = work.file_with_mode(
            "sasl_passwd",
            format!(
                "# the destination as written in the job\n{} {USER}:{password}\n",
                self.nexthop(addr)
            )
            .as_bytes(),
            0o600,
        );
        let config = config(level, &table, sasl);
        Delivery::to(&self.nexthop(addr))
            .rcpt(RCPT)
            .raw_config(&config)
            .run()
    }

    /// The `client=` line of the smtpd session that took the message.
    fn client_line(&self, program: &str) -> String {
        let sessions = self.pf.wait_sessions_of(program, 1);
        sessions
            .iter()
            .flat_map(|s| s.lines.iter())
            .find(|l| l.contains(": client="))
            .cloned()
            .unwrap_or_else(|| panic!("no client= line; maillog:\n{}", self.pf.maillog()))
    }
}

fn config(level: &str, table: &Path, sasl: &str) -> String {
    format!(
        "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"10s\"\n\
         [tls]\nsecurity_level = \"{level}\"\n\
         [sasl]\nauth_enable = true\npassword_maps = {:?}\n{sasl}\n",
        table.display().to_string()
    )
}

fn one_line(run: &Run) -> Line {
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "{run:#?}");
    lines[0].clone()
}

#[test]
fn right_password_plain_is_delivered() {
    let Some(lab) = Lab::start() else { return };
    // No options: PLAIN is allowed in plaintext (SCRAM-SHA-256, which
    // would be preferred, is filtered out).
    let sasl = "security_options = []\nmechanism_filter = [\"PLAIN\"]";
    let run = lab.send(SASL_ADDR, "none", sasl, PASSWORD);
    let line = one_line(&run);
    assert_eq!(line.status, "sent", "{run:#?}");
    assert_eq!(line.relay, lab.relay(SASL_ADDR));
    let client = lab.client_line("postfix/sasl/smtpd");
    assert!(
        client.ends_with(&format!("sasl_method=PLAIN, sasl_username={USER}")),
        "{client}"
    );
    assert!(
        !run.stderr.contains(PASSWORD),
        "password in the log: {run:#?}"
    );
}

#[test]
fn wrong_password_is_deferred_with_postfixs_words() {
    let Some(lab) = Lab::start() else { return };
    let sasl = "security_options = []\nmechanism_filter = [\"PLAIN\"]";
    let run = lab.send(SASL_ADDR, "none", sasl, "wrong");
    let line = one_line(&run);
    assert_eq!(line.status, "deferred", "{run:#?}");
    // 535 5.7.8 made 4.7.8 by auth_soft_bounce.
    assert_eq!(line.dsn, "4.7.8", "{run:#?}");
    let prefix = format!(
        "SASL authentication failed; server {addr}[{addr}] said: 535 5.7.8 Error: authentication failed",
        addr = SASL_ADDR
    );
    assert!(line.diagnostic.starts_with(&prefix), "{run:#?}");
    let sessions = lab.pf.wait_sessions_of("postfix/sasl/smtpd", 1);
    assert!(sessions[0].counts().contains("auth=0/1"), "{sessions:?}");
    assert!(
        sessions[0]
            .disconnect()
            .is_some_and(|d| !d.contains("mail=")),
        "{sessions:?}"
    );
}

#[test]
fn mechanism_filter_picks_login() {
    let Some(lab) = Lab::start() else { return };
    let run = lab.send(
        SASL_ADDR,
        "none",
        "security_options = []\nmechanism_filter = [\"login\"]",
        PASSWORD,
    );
    assert_eq!(one_line(&run).status, "sent", "{run:#?}");
    let client = lab.client_line("postfix/sasl/smtpd");
    assert!(client.contains("sasl_method=LOGIN"), "{client}");
}

#[test]
fn scram_sha_256_under_the_default_options() {
    let Some(lab) = Lab::start() else { return };
    // Defaults: noplaintext, noanonymous: only SCRAM-SHA-256 is allowed.
    let run = lab.send(SASL_ADDR, "none", "", PASSWORD);
    assert_eq!(one_line(&run).status, "sent", "{run:#?}");
    let client = lab.client_line("postfix/sasl/smtpd");
    assert!(
        client.ends_with(&format!("sasl_method=SCRAM-SHA-256, sasl_username={USER}")),
        "{client}"
    );
    // A wrong password fails the same way with SCRAM.
    let run = lab.send(SASL_ADDR, "none", "", "wrong");
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.8"),
        "{run:#?}"
    );
}

#[test]
fn default_options_leave_no_plaintext_mechanism() {
    let Some(lab) = Lab::start() else { return };
    let run = lab.send(
        SASL_ADDR,
        "none",
        "mechanism_filter = [\"plain\", \"login\"]",
        PASSWORD,
    );
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.0"),
        "{run:#?}"
    );
    assert_eq!(
        line.diagnostic,
        format!(
            "SASL authentication failed; cannot authenticate to server {SASL_ADDR}[{SASL_ADDR}]: no mechanism available"
        )
    );
    let run = lab.send(
        SASL_ADDR,
        "none",
        "mechanism_filter = [\"cram-md5\"]",
        PASSWORD,
    );
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.0"),
        "{run:#?}"
    );
    assert_eq!(
        line.diagnostic,
        format!(
            "SASL authentication failed: server {SASL_ADDR}[{SASL_ADDR}] offered no compatible \
             authentication mechanisms for this type of connection security"
        )
    );
}

#[test]
fn tls_required_before_auth() {
    let Some(lab) = Lab::start() else { return };
    // PLAIN (the filter) is allowed over TLS by tls_security_options.
    let sasl = "mechanism_filter = [\"plain\"]\n\
                security_options = [\"noplaintext\", \"noanonymous\"]\n\
                tls_security_options = [\"noanonymous\"]";
    let run = lab.send(AUTH_ONLY_ADDR, "may", sasl, PASSWORD);
    assert_eq!(one_line(&run).status, "sent", "{run:#?}");
    let client = lab.client_line("postfix/authonly/smtpd");
    assert!(client.contains("sasl_method=PLAIN"), "{client}");
    let session = &lab.pf.wait_sessions_of("postfix/authonly/smtpd", 1)[0];
    assert!(
        session.counts().contains("starttls=1") && session.counts().contains("auth=1"),
        "{session:?}"
    );
    // Without TLS the server announces no AUTH: Postfix's client then
    // talks without authentication, and the server refuses the relay.
    let run = lab.send(AUTH_ONLY_ADDR, "none", sasl, PASSWORD);
    let line = one_line(&run);
    assert_eq!(line.status, "bounced", "{run:#?}");
    assert_eq!(line.dsn, "5.7.1", "{run:#?}");
    assert!(
        line.diagnostic.contains("(in reply to RCPT TO command)"),
        "{run:#?}"
    );
}

#[test]
fn password_table_open_to_others_is_refused() {
    let Some(lab) = Lab::start() else { return };
    let work = Workdir::new();
    let table = work.file_with_mode(
        "sasl_passwd",
        format!("{} {USER}:{PASSWORD}\n", lab.nexthop(SASL_ADDR)).as_bytes(),
        0o644,
    );
    let run = Delivery::to(&lab.nexthop(SASL_ADDR))
        .rcpt(RCPT)
        .raw_config(&config("none", &table, ""))
        .run();
    assert_eq!(run.code, 78, "{run:#?}");
    assert!(run.stderr.contains("mode 0644"), "{run:#?}");
    assert!(!run.stderr.contains(PASSWORD), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

/// The uid and gid of `nobody`, the daemon's user in these tests.
fn nobody() -> (nix::unistd::Uid, nix::unistd::Gid) {
    let user = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("the nobody user");
    (user.uid, user.gid)
}

/// A password table for `nexthop` owned by `nobody`, mode `mode`.
fn write_table(path: &Path, nexthop: &str, user: &str, password: &str, mode: u32) {
    fs::write(path, format!("{nexthop} {user}:{password}\n")).expect("write the table");
    let (uid, gid) = nobody();
    nix::unistd::chown(path, Some(uid), Some(gid)).expect("chown the table");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod the table");
}

fn daemon_config(work: &Workdir, table: &Path) -> String {
    format!(
        "[daemon]\nsocket = {:?}\nuser = \"nobody\"\nworkers = 2\n\
         [smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"10s\"\n\
         [tls]\nsecurity_level = \"none\"\n\
         [cache]\ntime_limit = \"60s\"\n\
         [sasl]\nauth_enable = true\npassword_maps = {:?}\n\
         security_options = []\nmechanism_filter = [\"PLAIN\"]\n",
        work.path().join("m.sock").display().to_string(),
        table.display().to_string(),
    )
}

/// The `sasl_username=` of every message Postfix took, in order.
fn sasl_users(lab: &Lab, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let users: Vec<String> = lab
            .pf
            .maillog()
            .lines()
            .filter(|l| l.contains("postfix/sasl/smtpd") && l.contains(": client="))
            .filter_map(|l| l.split_once("sasl_username=").map(|(_, u)| u.to_string()))
            .collect();
        if users.len() >= count || started.elapsed() > LIMIT {
            return users;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn daemon_reuses_a_session_for_its_user_and_reloads_the_table() {
    let Some(lab) = Lab::start() else { return };
    let work = Workdir::with_prefix("mailhop-sasl-");
    let nexthop = lab.nexthop(SASL_ADDR);
    let table = work.path().join("sasl_passwd");
    write_table(&table, &nexthop, USER, PASSWORD, 0o600);
    let daemon = Daemon::start_text(&work, &daemon_config(&work, &table), LIMIT);
    let job = |id: &str| {
        json!({
            "id": id,
            "nexthop": nexthop,
            "sender": "a@x.test",
            "recipients": [{"address": RCPT}],
            "message": {"data": "Subject: t\r\n\r\nhello\r\n"},
            "cache": {"load": true, "store": true},
        })
    };
    let status = |answer: &serde_json::Value| answer["recipients"][0]["status"].clone();
    let answers = daemon.submit(&[job("one"), job("two")]);
    assert!(answers.iter().all(|a| status(a) == "sent"), "{answers:?}");
    assert_eq!(sasl_users(&lab, 2), [USER, USER]);
    let sessions = lab.pf.sessions_of("postfix/sasl/smtpd");
    assert_eq!(sessions.len(), 1, "one session, reused: {sessions:?}");

    // Another user in the table: the reload empties the cache.
    write_table(&table, &nexthop, OTHER_USER, OTHER_PASSWORD, 0o600);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("the connection cache was emptied");
    let answers = daemon.submit(&[job("three")]);
    assert_eq!(status(&answers[0]), "sent", "{answers:?}");
    assert_eq!(sasl_users(&lab, 3), [USER, USER, OTHER_USER]);

    // A table open to others is refused; the running one stays.
    write_table(&table, &nexthop, USER, PASSWORD, 0o644);
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reload refused: sasl.password_maps:");
    assert!(daemon.log().contains("mode 0644"), "{}", daemon.log());
    let answers = daemon.submit(&[job("four")]);
    assert_eq!(status(&answers[0]), "sent", "{answers:?}");
    assert_eq!(sasl_users(&lab, 4), [USER, USER, OTHER_USER, OTHER_USER]);
    assert!(!daemon.log().contains(PASSWORD) && !daemon.log().contains(OTHER_PASSWORD));
}

#[test]
fn daemon_does_not_start_with_a_table_it_does_not_own() {
    if !common::need_root("the daemon start test") {
        return;
    }
    let work = Workdir::with_prefix("mailhop-sasl-");
    // Owned by root, not by the daemon's user (nobody).
    let table = work.file_with_mode("sasl_passwd", b"[127.0.0.2]:25 alice:pw\n", 0o600);
    let config = work.file("mailhop.toml", daemon_config(&work, &table).as_bytes());
    let log = work.path().join("daemon.log");
    let mut cmd = daemon_command(&config);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"));
    let mut child = Reaped(cmd.spawn().expect("spawn the daemon"));
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status.code();
        }
        assert!(started.elapsed() < LIMIT, "the daemon did not exit");
        thread::sleep(Duration::from_millis(25));
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(78), "{text}");
    assert!(
        text.contains("sasl.password_maps:")
            && text.contains("permission denied to the daemon's uid")
            && text.contains("must be a regular file owned by the daemon's user"),
        "{text}"
    );
    assert!(!work.path().join("m.sock").exists(), "{text}");
}

/// A scripted server whose STARTTLS handshake breaks (it answers the
/// ClientHello with text): level may would retry old mail in plaintext,
/// but not with SASL credentials for the server (Postfix's
/// PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE), so the mail is deferred
/// and the server sees one connection.
#[test]
fn no_plaintext_retry_with_sasl_credentials() {
    let broken_tls = |_: usize, conn: &mut common::Peer| {
        conn.reply("220 scripted.test ESMTP");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let Ok(line) = conn.read_line() else { break };
            seen.push(line.clone());
            if line.starts_with("EHLO") {
                conn.send(b"250-scripted.test\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
            } else if line == "STARTTLS" {
                conn.reply("220 go ahead");
                let _ = conn.read_byte();
                conn.send(b"this is not TLS\r\n");
                let _ = conn.read_rest(Duration::from_secs(2));
                break;
            } else {
                conn.reply("502 5.5.2 unexpected");
            }
        }
        seen
    };
    let run_with = |table_line: bool| {
        let server = common::Server::sequential(2, broken_tls);
        let work = Workdir::new();
        let entry = if table_line {
            format!("{} {USER}:{PASSWORD}\n", server.nexthop())
        } else {
            "other.test x:y\n".to_string()
        };
        let table = work.file_with_mode("sasl_passwd", entry.as_bytes(), 0o600);
        let config = format!(
            "{}[tls]\nstarttls_timeout = \"5s\"\n",
            config("may", &table, "tls_security_options = [\"noanonymous\"]")
        );
        // One [tls] table: level may is the default, the timeout is short.
        let config = config.replace("[tls]\nsecurity_level = \"may\"\n", "");
        let path = work.file("mailhop.toml", config.as_bytes());
        let message = work.file("message", common::SMALL_MESSAGE);
        let hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            - 3600;
        let args: Vec<std::ffi::OsString> = vec![
            "send".into(),
            "--config".into(),
            path.into(),
            "--direct".into(),
            "--nexthop".into(),
            server.nexthop().into(),
            "--from".into(),
            "a@x.test".into(),
            "--to".into(),
            RCPT.into(),
            "--arrival-time".into(),
            hour_ago.to_string().into(),
            message.into(),
        ];
        let run = common::run_mailhop(&work, &args, None);
        (run, server.finish_all())
    };
    // With a credential: deferred, one connection.
    let (run, sessions) = run_with(true);
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.5"),
        "{run:#?}"
    );
    assert_eq!(sessions.len(), 1, "{sessions:?} {run:#?}");
    assert!(!run.stderr.contains("trying again without TLS"), "{run:#?}");
    // Without one for this server: the usual plaintext retry.
    let (run, sessions) = run_with(false);
    assert_eq!(sessions.len(), 2, "{sessions:?} {run:#?}");
    assert!(run.stderr.contains("trying again without TLS"), "{run:#?}");
}

/// A scripted server announcing AUTH PLAIN that answers AUTH with `reply`
/// and takes mail when authenticated; returns the commands it read.
fn auth_server(reply: &'static str) -> common::Server<Vec<String>> {
    common::Server::sequential(1, move |_, conn: &mut common::Peer| {
        conn.reply("220 scripted.test ESMTP");
        let mut seen = Vec::new();
        for _ in 0..20 {
            let Ok(line) = conn.read_line() else { break };
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            seen.push(verb.clone());
            match verb.as_str() {
                "EHLO" => conn.send(b"250-scripted.test\r\n250 AUTH PLAIN LOGIN\r\n"),
                "AUTH" => conn.reply(reply),
                "MAIL" | "RCPT" => conn.reply("250 2.1.0 Ok"),
                "DATA" => {
                    conn.reply("354 go");
                    while conn.read_line().is_ok_and(|l| l != ".") {}
                    conn.reply("250 2.0.0 Ok: queued as S1");
                }
                "QUIT" => {
                    conn.reply("221 2.0.0 Bye");
                    break;
                }
                _ => conn.reply("502 5.5.2 unexpected"),
            }
        }
        seen
    })
}

/// A soft AUTH failure lets the next server (here the fallback relay)
/// try; a hard one (auth_soft_bounce = false) bounces at once, as
/// Postfix's smtp_sess_fail.
#[test]
fn soft_auth_failure_tries_the_next_server_hard_one_bounces() {
    let run_with = |soft_bounce: bool| {
        let first = auth_server("535 5.7.8 Error: authentication failed: nope");
        let second = auth_server("235 2.7.0 Authentication successful");
        let work = Workdir::new();
        let table = work.file_with_mode(
            "sasl_passwd",
            format!(
                "{} {USER}:{PASSWORD}\n{} {USER}:{PASSWORD}\n",
                first.nexthop(),
                second.nexthop()
            )
            .as_bytes(),
            0o600,
        );
        let config = format!(
            "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"10s\"\nfallback_relay = [{:?}]\n\
             [tls]\nsecurity_level = \"none\"\n\
             [sasl]\nauth_enable = true\npassword_maps = {:?}\nsecurity_options = []\n\
             auth_soft_bounce = {soft_bounce}\n",
            second.nexthop(),
            table.display().to_string()
        );
        let run = Delivery::to(&first.nexthop())
            .rcpt(RCPT)
            .raw_config(&config)
            .run();
        let second_relay = second.relay();
        let first_seen = first.finish_all();
        let second_seen = second.finish_all();
        (run, first_seen, second_seen, second_relay)
    };
    let (run, first, second, second_relay) = run_with(true);
    assert_eq!(first, [vec!["EHLO", "AUTH", "QUIT"]], "{run:#?}");
    assert_eq!(second.len(), 1, "{run:#?}");
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.relay.as_str()),
        ("sent", second_relay.as_str()),
        "{run:#?}"
    );
    let (run, first, second, _) = run_with(false);
    assert_eq!(first.len(), 1, "{run:#?}");
    assert!(
        second.is_empty(),
        "the fallback relay is not tried: {run:#?}"
    );
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("bounced", "5.7.8"),
        "{run:#?}"
    );
}
