//! REQUIRETLS (RFC 8689) end to end: `mailhop send --requiretls` against
//! in-process scripted servers that speak real STARTTLS with the test PKI
//! (Postfix 3.7 cannot announce REQUIRETLS). Each server records what it
//! was sent, so the tests see whether the message (MAIL FROM ...
//! REQUIRETLS) reached it.
//!
//! Cases: an authenticated server that announces REQUIRETLS gets the
//! message with the parameter; one that does not announce it never sees
//! MAIL FROM (5.7.30, or the next server); an unauthenticated TLS session
//! (level may) never sees MAIL FROM (5.7.10); a `TLS-Required: No` message
//! goes over unverified TLS at a verify level.

mod common;

use std::path::{Path, PathBuf};

use common::certs::Pki;
use common::starttls::{accept_tls, smtp_in_tls};
use common::{Peer as Conn, Run, Server, Workdir, run_mailhop};
use serde_json::Value;

type Scripted = Server<Vec<String>>;

/// STARTTLS with the PKI's certificate for `mx.tls.test`, then SMTP inside
/// TLS: the EHLO reply announces REQUIRETLS when `announce`; the message
/// is accepted. Returns what the client sent inside TLS.
fn starttls_session(cert: &Path, key: &Path, announce: bool, conn: &mut Conn) -> Vec<String> {
    let mut transcript = Vec::new();
    conn.reply("220 scripted.test ESMTP");
    for _ in 0..3 {
        let Ok(line) = conn.read_line() else {
            transcript.push("<EOF>".into());
            return transcript;
        };
        if line.starts_with("EHLO") {
            conn.send(b"250-scripted.test\r\n250 STARTTLS\r\n");
        } else if line == "STARTTLS" {
            break;
        } else {
            transcript.push(format!("<plaintext {line}>"));
        }
    }
    conn.reply("220 2.0.0 Ready to start TLS");
    let mut tls = match accept_tls(conn, cert, key) {
        Ok(tls) => tls,
        Err(note) => return vec![note],
    };
    let ehlo: &[u8] = if announce {
        b"250-scripted.test\r\n250-ENHANCEDSTATUSCODES\r\n250 REQUIRETLS\r\n"
    } else {
        b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n"
    };
    smtp_in_tls(
        &mut tls,
        ehlo,
        "250 2.0.0 Ok: queued as RT1",
        &mut transcript,
    );
    transcript
}

fn server(pki: &Pki, announce: bool) -> Scripted {
    let (cert, key) = (pki.server_pem(), pki.server_key());
    Server::sequential(1, move |_, conn: &mut Conn| {
        starttls_session(&cert, &key, announce, conn)
    })
}

/// `mailhop send --direct --json --requiretls` (unless `message` has its
/// own reason not to) of `message` to `nexthop` with the `[tls]` and
/// `[smtp]` TOML given.
fn send(nexthop: &str, config: &str, message: &[u8], requiretls: bool) -> Run {
    let work = Workdir::new();
    let config = format!(
        "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"5s\"\nmail_timeout = \"5s\"\n\
         rcpt_timeout = \"5s\"\ndata_init_timeout = \"5s\"\ndata_xfer_timeout = \"5s\"\n\
         data_done_timeout = \"5s\"\nquit_timeout = \"2s\"\n{config}"
    );
    let config_path = work.file("mailhop.toml", config.as_bytes());
    let message_path = work.file("message", message);
    let mut args: Vec<std::ffi::OsString> = vec![
        "send".into(),
        "--config".into(),
        config_path.into(),
        "--direct".into(),
        "--json".into(),
        "--nexthop".into(),
        nexthop.into(),
        "--from".into(),
        "a@x.test".into(),
        "--to".into(),
        "b@y.test".into(),
    ];
    if requiretls {
        args.push("--requiretls".into());
    }
    args.push(message_path.into());
    run_mailhop(&work, &args, None)
}

/// `[tls]` at level verify with the test CA, the certificate's name
/// `mx.tls.test` accepted.
fn verify_tls(ca: PathBuf) -> String {
    format!(
        "[tls]\nstarttls_timeout = \"5s\"\nsecurity_level = \"verify\"\n\
         verify_cert_match = [\"mx.tls.test\"]\nca_file = {:?}\n",
        ca.display().to_string()
    )
}

fn result(run: &Run) -> Value {
    let json = run.json();
    json["recipients"][0].clone()
}

const MESSAGE: &[u8] = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: t\r\n\r\nhello\r\n";

#[test]
fn an_authenticated_server_that_announces_requiretls_gets_the_message_with_it() {
    let pki = Pki::generate();
    let srv = server(&pki, true);
    let run = send(&srv.nexthop(), &verify_tls(pki.ca_pem()), MESSAGE, true);
    let r = result(&run);
    assert_eq!(r["status"], "sent", "{run:#?}");
    assert_eq!(r["tls"]["trust"], "verified", "{run:#?}");
    let seen = srv.finish_all().concat();
    assert!(
        seen.contains(&"MAIL FROM:<a@x.test> REQUIRETLS".to_string()),
        "{seen:?}"
    );
    assert!(seen.contains(&".".to_string()), "{seen:?}");
}

#[test]
fn a_server_that_does_not_announce_requiretls_never_gets_the_message() {
    let pki = Pki::generate();
    let srv = server(&pki, false);
    let run = send(&srv.nexthop(), &verify_tls(pki.ca_pem()), MESSAGE, true);
    let r = result(&run);
    assert_eq!(
        (r["status"].as_str(), r["dsn"].as_str()),
        (Some("bounced"), Some("5.7.30")),
        "{run:#?}"
    );
    let text = r["diagnostic"].as_str().unwrap_or_default();
    assert!(
        text.contains("REQUIRETLS was not offered by host"),
        "{text}"
    );
    let seen = srv.finish_all().concat();
    assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
}

#[test]
fn unauthenticated_tls_never_gets_a_requiretls_message() {
    let pki = Pki::generate();
    let srv = server(&pki, true);
    let run = send(
        &srv.nexthop(),
        "[tls]\nstarttls_timeout = \"5s\"\nsecurity_level = \"may\"\n",
        MESSAGE,
        true,
    );
    let r = result(&run);
    assert_eq!(
        (r["status"].as_str(), r["dsn"].as_str()),
        (Some("bounced"), Some("5.7.10")),
        "{run:#?}"
    );
    let text = r["diagnostic"].as_str().unwrap_or_default();
    assert!(text.contains("Sender requested REQUIRETLS"), "{text}");
    let seen = srv.finish_all().concat();
    assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
}

#[test]
fn the_next_server_gets_the_message_when_the_first_lacks_requiretls() {
    let pki = Pki::generate();
    let first = server(&pki, false);
    let second = server(&pki, true);
    let config = format!(
        "fallback_relay = [{:?}]\n{}",
        second.nexthop(),
        verify_tls(pki.ca_pem())
    );
    let run = send(&first.nexthop(), &config, MESSAGE, true);
    let r = result(&run);
    assert_eq!(r["status"], "sent", "{run:#?}");
    assert_eq!(
        r["relay"].as_str(),
        Some(second.relay().as_str()),
        "{run:#?}"
    );
    let first_seen = first.finish_all().concat();
    assert!(
        !first_seen.iter().any(|l| l.starts_with("MAIL")),
        "{first_seen:?}"
    );
    let second_seen = second.finish_all().concat();
    assert!(
        second_seen.contains(&"MAIL FROM:<a@x.test> REQUIRETLS".to_string()),
        "{second_seen:?}"
    );
}

#[test]
fn tls_required_no_sends_over_tls_that_a_verify_level_would_refuse() {
    let pki = Pki::generate();
    let srv = server(&pki, false);
    // The certificate does not name "other.test": verify would defer.
    let tls = format!(
        "[tls]\nstarttls_timeout = \"5s\"\nsecurity_level = \"verify\"\n\
         verify_cert_match = [\"other.test\"]\nca_file = {:?}\n",
        pki.ca_pem().display().to_string()
    );
    let message = b"From: a@x.test\r\nTLS-Required: No\r\nSubject: t\r\n\r\nhello\r\n";
    let run = send(&srv.nexthop(), &tls, message, false);
    let r = result(&run);
    assert_eq!(r["status"], "sent", "{run:#?}");
    assert_eq!(r["tls_policy"]["level"], "may", "{run:#?}");
    let reason = r["tls_policy"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("TLS-Required: No"), "{reason}");
    let seen = srv.finish_all().concat();
    assert!(
        seen.contains(&"MAIL FROM:<a@x.test>".to_string()),
        "{seen:?}"
    );
}
