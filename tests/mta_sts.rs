//! End-to-end tests of MTA-STS (RFC 8461, issue 16) with real peers: a
//! per-test dnsmasq serves the domain's MX, the `_mta-sts` TXT record and
//! the addresses; an in-process HTTPS server (OpenSSL, a certificate of the
//! test PKI for `mta-sts.sts.test`) serves the policy on the port named by
//! `[mta_sts] https_port`; an in-process SMTP server offers STARTTLS with
//! the PKI's certificate for the MX host `mx.tls.test`; `mailhop send
//! --direct --json` delivers to `sts.test:PORT` (an MX lookup) in between,
//! with `[tls] ca_file` and `[mta_sts] ca_file` naming the test CA and
//! `[mta_sts] cache_file` in the test's own directory.
//!
//! Contract: every server is owned by a guard that stops it (dnsmasq is
//! killed and reaped, in-process servers are joined); every loop and wait
//! is bounded. Without dnsmasq a test prints SKIPPED and passes, except
//! under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};

use common::certs::{Pki, SERVER_NAME};
use common::dnsmasq::{Dnsmasq, Zone};
use common::https::{HttpsServer, Reply};
use common::starttls::{accept_tls, smtp_in_tls};
use common::{DEFAULT_TIMEOUTS, Delivery, Peer, Run, Server, Workdir};
use serde_json::Value;

/// The policy domain.
const DOMAIN: &str = "sts.test";
/// Its policy host.
const POLICY_HOST: &str = "mta-sts.sts.test";

fn policy(mode: &str, mx: &str) -> Reply {
    Reply::text(&format!(
        "version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"
    ))
}

/// The zone: `sts.test MX 10 mx.tls.test`, the MX host and the policy
/// host on 127.0.0.1, and the TXT record with `id`.
fn zone(id: &str) -> Zone {
    Zone::new()
        .mx(DOMAIN, 10, SERVER_NAME)
        .a(SERVER_NAME, [127, 0, 0, 1].into())
        .a(POLICY_HOST, [127, 0, 0, 1].into())
        .txt(&format!("_mta-sts.{DOMAIN}"), &format!("v=STSv1; id={id};"))
}

/// One test's peers and files.
struct Lab {
    pki: Pki,
    work: Workdir,
    https: Option<HttpsServer>,
    dns: Dnsmasq,
}

impl Lab {
    /// `None` (after SKIPPED) without dnsmasq.
    fn start(reply: Reply, id: &str) -> Option<Self> {
        let dns = Dnsmasq::start(&zone(id))?;
        let pki = Pki::generate();
        let issued = pki.issue(POLICY_HOST);
        let https = HttpsServer::start(&issued.cert, &issued.key, reply);
        Some(Self {
            pki,
            work: Workdir::new(),
            https: Some(https),
            dns,
        })
    }

    fn https(&self) -> &HttpsServer {
        self.https.as_ref().expect("the HTTPS server runs")
    }

    /// Serves the zone with this TXT id from now on (a new dnsmasq).
    fn set_id(&mut self, id: &str) {
        self.dns = Dnsmasq::start(&zone(id)).expect("dnsmasq ran before");
    }

    fn cache_file(&self) -> PathBuf {
        self.work.path().join("mta-sts.json")
    }

    /// The configuration; `extra` is appended (TOML).
    fn config(&self, https_port: u16, extra: &str) -> String {
        let mut text = String::from("[smtp]\n");
        for (key, value) in DEFAULT_TIMEOUTS {
            text.push_str(&format!("{key} = {value:?}\n"));
        }
        text.push_str(&format!(
            "\n[dns]\nnameservers = [{:?}]\ntimeout = \"1s\"\nattempts = 1\n\n\
             [tls]\nca_file = {:?}\nstarttls_timeout = \"5s\"\n\n\
             [mta_sts]\ncache_file = {:?}\nhttps_port = {https_port}\nca_file = {:?}\n\
             fetch_timeout = \"5s\"\n{extra}\n",
            self.dns.nameserver(),
            toml_path(&self.pki.ca_pem()),
            toml_path(&self.cache_file()),
            toml_path(&self.pki.ca_pem()),
        ));
        text
    }

    /// `mailhop send --direct --json` to `sts.test:port`.
    fn send(&self, smtp_port: u16, extra: &str) -> Run {
        let https_port = self.https.as_ref().map_or(1, HttpsServer::port);
        Delivery::to(&format!("{DOMAIN}:{smtp_port}"))
            .raw_config(&self.config(https_port, extra))
            .json()
            .rcpt("b@sts.test")
            .run()
    }
}

fn toml_path(path: &Path) -> String {
    path.display().to_string()
}

/// The one recipient's JSON result, after checking the exit code.
fn outcome(run: &Run, code: i32) -> Value {
    assert_eq!(run.code, code, "exit code of {run:#?}");
    let json = run.json();
    let recipients = json["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {run:#?}"));
    assert_eq!(recipients.len(), 1, "{run:#?}");
    recipients[0].clone()
}

/// Sent over verified TLS under the MTA-STS policy with id `id`, enforced.
fn assert_sent_enforced(run: &Run, id: &str) {
    let result = outcome(run, 0);
    assert_eq!(result["status"], "sent", "{run:#?}");
    assert_eq!(result["tls"]["trust"], "verified", "{run:#?}");
    assert_eq!(result["tls_policy"]["source"], "mta-sts", "{run:#?}");
    assert_eq!(result["tls_policy"]["level"], "verify", "{run:#?}");
    assert_eq!(
        result["tls_policy"]["reason"],
        format!("MTA-STS policy of {DOMAIN} (id {id}) mode enforce").as_str(),
        "{run:#?}"
    );
}

fn assert_logged(run: &Run, text: &str) {
    assert!(run.stderr.contains(text), "{text:?} not logged in {run:#?}");
}

// ---------------------------------------------------------------------------
// The receiving server: STARTTLS with the certificate of mx.tls.test
// ---------------------------------------------------------------------------

type Smtp = Server<Vec<String>>;

/// Up to `max` SMTP sessions, one after the other, each offering STARTTLS
/// and taking the message only inside TLS.
fn smtp_server(pki: &Pki, max: usize) -> Smtp {
    smtp_server_with(pki.server_pem(), pki.server_key(), max)
}

/// [`smtp_server`] presenting this certificate.
fn smtp_server_with(cert: PathBuf, key: PathBuf, max: usize) -> Smtp {
    Smtp::sequential(max, move |_, conn| tls_session(&cert, &key, conn))
}

/// A session: EHLO, STARTTLS, then EHLO, MAIL, RCPT, DATA and QUIT inside
/// TLS. The transcript holds the client's commands and `<...>` notes.
fn tls_session(cert: &Path, key: &Path, conn: &mut Peer) -> Vec<String> {
    let mut transcript = Vec::new();
    conn.reply("220 mx.tls.test ESMTP");
    let mut starttls = false;
    for _ in 0..10 {
        let Ok(line) = conn.read_line() else {
            transcript.push("<EOF>".into());
            return transcript;
        };
        transcript.push(line.clone());
        if line.starts_with("EHLO") {
            conn.send(b"250-mx.tls.test\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n");
        } else if line == "STARTTLS" {
            starttls = true;
            break;
        } else if line == "QUIT" {
            conn.reply("221 2.0.0 Bye");
            return transcript;
        } else {
            conn.reply("530 5.7.0 Must issue a STARTTLS command first");
        }
    }
    if !starttls {
        return transcript;
    }
    conn.reply("220 2.0.0 Ready to start TLS");
    let mut tls = match accept_tls(conn, cert, key) {
        Ok(tls) => tls,
        Err(note) => {
            transcript.push(note);
            return transcript;
        }
    };
    transcript.push("<TLS>".into());
    smtp_in_tls(
        &mut tls,
        b"250-mx.tls.test\r\n250 ENHANCEDSTATUSCODES\r\n",
        "250 2.0.0 Ok: queued as STS1",
        &mut transcript,
    );
    transcript
}

/// The server got the message inside TLS in every one of its sessions.
fn assert_delivered_in_tls(server: Smtp, sessions: usize) {
    let transcripts = server.finish_all();
    assert_eq!(transcripts.len(), sessions, "{transcripts:#?}");
    for transcript in &transcripts {
        assert!(
            transcript.iter().any(|l| l == "<TLS>") && transcript.iter().any(|l| l == "."),
            "{transcript:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn enforce_with_a_matching_mx_sends_over_verified_tls() {
    let Some(lab) = Lab::start(policy("enforce", "*.tls.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 1);
    let run = lab.send(server.port(), "");
    assert_sent_enforced(&run, "1");
    assert_logged(
        &run,
        "MTA-STS policy of sts.test fetched: id 1, mode enforce",
    );
    let requests = lab.https().requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].line, "GET /.well-known/mta-sts.txt HTTP/1.1");
    assert_eq!(requests[0].host, POLICY_HOST);
    assert_delivered_in_tls(server, 1);
}

#[test]
fn enforce_with_no_matching_mx_defers_4_7_5_and_connects_nowhere() {
    let Some(lab) = Lab::start(policy("enforce", "mx.elsewhere.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 1);
    let run = lab.send(server.port(), "");
    let result = outcome(&run, 75);
    assert_eq!(result["status"], "deferred", "{run:#?}");
    assert_eq!(result["dsn"], "4.7.5", "{run:#?}");
    assert_eq!(
        result["diagnostic"], "MX host mx.tls.test does not match the MTA-STS policy of sts.test",
        "{run:#?}"
    );
    assert_eq!(server.connections(), 0, "{run:#?}");
    assert!(server.finish_all().is_empty());
}

#[test]
fn testing_mode_with_no_matching_mx_delivers_and_logs_the_mismatch() {
    let Some(lab) = Lab::start(policy("testing", "mx.elsewhere.test"), "7") else {
        return;
    };
    let server = smtp_server(&lab.pki, 1);
    let run = lab.send(server.port(), "");
    let result = outcome(&run, 0);
    assert_eq!(result["status"], "sent", "{run:#?}");
    assert_eq!(result["tls_policy"]["source"], "mta-sts", "{run:#?}");
    assert_eq!(result["tls_policy"]["level"], "may", "{run:#?}");
    let reason = result["tls_policy"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("testing mode"), "{run:#?}");
    // Level may: encrypted, the name not checked.
    assert_ne!(result["tls"]["trust"], "verified", "{run:#?}");
    assert_logged(
        &run,
        "MX host mx.tls.test does not match the MTA-STS policy of sts.test (id 7, testing mode): delivering anyway",
    );
    assert_delivered_in_tls(server, 1);
}

#[test]
fn a_failed_refetch_keeps_the_cached_policy() {
    let Some(mut lab) = Lab::start(policy("enforce", "mx.tls.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 2);
    assert_sent_enforced(&lab.send(server.port(), ""), "1");
    // The policy host goes away and the TXT id changes: the refetch fails,
    // the cached policy (valid for a day) stays in force.
    let https_port = lab.https().port();
    lab.https = None;
    lab.set_id("2");
    let run = Delivery::to(&format!("{DOMAIN}:{}", server.port()))
        .raw_config(&lab.config(https_port, ""))
        .json()
        .rcpt("b@sts.test")
        .run();
    assert_sent_enforced(&run, "1");
    assert_logged(&run, "using the cached policy (id 1) until it expires");
    assert_delivered_in_tls(server, 2);
}

#[test]
fn a_new_policy_id_is_refetched_and_its_mx_patterns_apply() {
    let Some(mut lab) = Lab::start(policy("enforce", "mx.elsewhere.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 1);
    let run = lab.send(server.port(), "");
    assert_eq!(outcome(&run, 75)["dsn"], "4.7.5", "{run:#?}");
    // Same id, new file: the cached policy still applies.
    lab.https().set(policy("enforce", "*.tls.test"));
    let run = lab.send(server.port(), "");
    assert_eq!(outcome(&run, 75)["dsn"], "4.7.5", "{run:#?}");
    assert_eq!(lab.https().requests().len(), 1);
    // A new id: refetched, and the new pattern matches.
    lab.set_id("2");
    assert_sent_enforced(&lab.send(server.port(), ""), "2");
    assert_eq!(lab.https().requests().len(), 2);
    assert_delivered_in_tls(server, 1);
}

#[test]
fn the_cache_file_carries_the_policy_to_the_next_process() {
    let Some(lab) = Lab::start(policy("enforce", "mx.tls.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 2);
    assert_sent_enforced(&lab.send(server.port(), ""), "1");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.cache_file()).expect("the cache file was written"),
    )
    .expect("the cache file is JSON");
    let entry = &file["policies"][DOMAIN];
    assert_eq!(entry["id"], "1", "{file:#}");
    assert_eq!(entry["policy"]["mode"], "enforce", "{file:#}");
    assert_eq!(entry["policy"]["mx"][0], "mx.tls.test", "{file:#}");
    // A second process: the policy comes from the file, no request.
    assert_sent_enforced(&lab.send(server.port(), ""), "1");
    assert_eq!(lab.https().requests().len(), 1);
    assert_delivered_in_tls(server, 2);
}

#[test]
fn a_tls_policy_entry_wins_over_mta_sts() {
    let Some(lab) = Lab::start(policy("enforce", "mx.elsewhere.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 1);
    // The entry's key is the next hop as written in the job.
    let entry = format!(
        "\n[[tls.policy]]\ndestination = \"{DOMAIN}:{}\"\nlevel = \"encrypt\"\n",
        server.port()
    );
    let run = lab.send(server.port(), &entry);
    let result = outcome(&run, 0);
    assert_eq!(result["tls_policy"]["source"], "policy-table", "{run:#?}");
    assert!(lab.https().requests().is_empty());
    assert_delivered_in_tls(server, 1);
}

#[test]
fn enabled_false_is_postfix_behaviour() {
    let Some(lab) = Lab::start(policy("enforce", "mx.elsewhere.test"), "1") else {
        return;
    };
    let server = smtp_server(&lab.pki, 1);
    let run = lab.send(server.port(), "enabled = false\n");
    let result = outcome(&run, 0);
    assert_eq!(result["tls_policy"]["source"], "default", "{run:#?}");
    assert!(lab.https().requests().is_empty());
    assert_delivered_in_tls(server, 1);
}

#[test]
fn enforce_defers_4_7_5_when_the_mx_certificate_names_another_host() {
    let Some(lab) = Lab::start(policy("enforce", "mx.tls.test"), "1") else {
        return;
    };
    let server = smtp_server_with(lab.pki.wrong_pem(), lab.pki.wrong_key(), 1);
    let run = lab.send(server.port(), "");
    let result = outcome(&run, 75);
    assert_eq!(result["status"], "deferred", "{run:#?}");
    assert_eq!(result["dsn"], "4.7.5", "{run:#?}");
    assert_eq!(
        result["diagnostic"], "Server certificate not verified",
        "{run:#?}"
    );
    let transcripts = server.finish_all();
    assert!(
        transcripts
            .iter()
            .all(|t| !t.iter().any(|line| line.starts_with("MAIL"))),
        "{transcripts:#?}"
    );
}

/// Each unusable reply of the policy host means "no policy": the mail
/// goes out under the default level, and the reason is logged.
#[test]
fn an_unusable_policy_reply_is_no_policy() {
    let Some(lab) = Lab::start(policy("enforce", "mx.elsewhere.test"), "1") else {
        return;
    };
    let body = "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n";
    let cases = [
        (
            Reply {
                status: 404,
                ..Reply::text(body)
            },
            "HTTP status 404 (only 200 is accepted)",
        ),
        (
            Reply {
                status: 301,
                ..Reply::text(body)
            },
            // Not followed (the Location names another host).
            "HTTP status 301 (only 200 is accepted)",
        ),
        (
            Reply {
                content_type: "text/html".into(),
                ..Reply::text(body)
            },
            "Content-Type \"text/html\" (text/plain is required)",
        ),
        (
            Reply::text(&format!("{body}{}", "x: y\n".repeat(20_000))),
            "policy larger than 65536 bytes",
        ),
        (Reply::text("version: STSv1\nmode: enforce\n"), "no max_age"),
    ];
    let server = smtp_server(&lab.pki, cases.len() + 1);
    for (reply, why) in cases {
        lab.https().set(reply);
        let run = lab.send(server.port(), "");
        let result = outcome(&run, 0);
        assert_eq!(result["tls_policy"]["source"], "default", "{run:#?}");
        assert_logged(&run, why);
        assert_logged(&run, "MTA-STS policy of sts.test (id 1): ");
    }
    // A policy host whose certificate names another host.
    let wrong = HttpsServer::start(
        &lab.pki.wrong_pem(),
        &lab.pki.wrong_key(),
        policy("enforce", "mx.elsewhere.test"),
    );
    let run = Delivery::to(&format!("{DOMAIN}:{}", server.port()))
        .raw_config(&lab.config(wrong.port(), ""))
        .json()
        .rcpt("b@sts.test")
        .run();
    assert_eq!(
        outcome(&run, 0)["tls_policy"]["source"],
        "default",
        "{run:#?}"
    );
    assert_logged(&run, "https://mta-sts.sts.test/.well-known/mta-sts.txt: ");
    assert!(wrong.requests().is_empty(), "{:#?}", wrong.requests());
    assert!(!lab.cache_file().exists());
    server.finish_all();
}

#[test]
fn a_policy_host_that_never_answers_is_cut_off_by_fetch_timeout() {
    let Some(lab) = Lab::start(policy("enforce", "mx.elsewhere.test"), "1") else {
        return;
    };
    // Connections complete in the kernel's backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let server = smtp_server(&lab.pki, 1);
    let config = lab
        .config(port, "")
        .replace("fetch_timeout = \"5s\"", "fetch_timeout = \"1s\"");
    let started = std::time::Instant::now();
    let run = Delivery::to(&format!("{DOMAIN}:{}", server.port()))
        .raw_config(&config)
        .json()
        .rcpt("b@sts.test")
        .run();
    let elapsed = started.elapsed();
    assert_eq!(
        outcome(&run, 0)["tls_policy"]["source"],
        "default",
        "{run:#?}"
    );
    assert_logged(&run, "timed out");
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "{elapsed:?}: {run:#?}"
    );
    drop(silent);
    assert_delivered_in_tls(server, 1);
}
