//! SMTPUTF8 against real peers: a Postfix `smtp-sink` (which does not
//! announce SMTPUTF8; it dumps each message with the envelope it saw) and
//! a private Postfix smtpd (which does). Postfix's rules decide: a job that
//! requested SMTPUTF8 gets the MAIL parameter where it is offered; where it
//! is not, UTF-8 in domains alone goes as A-labels (`[smtp]
//! smtputf8_a_labels`, a deviation; off: Postfix's 5.6.7), UTF-8 in a
//! local part or the header is a 5.6.7 bounce, and a job that did not
//! request it goes as it is. Without the peers the tests print SKIPPED and
//! pass, except under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::Pki;
use common::daemon::Daemon;
use common::postfix::{Postfix, Service};
use common::{Listen, Sink, Workdir};
use serde_json::{Value, json};

const ASCII_HEADER: &[u8] = b"Subject: hello\r\n\r\nbody\r\n";
const UTF8_HEADER: &[u8] = "Subject: Grüße\r\n\r\nbody\r\n".as_bytes();

fn daemon(work: Workdir, extra: &str) -> Daemon {
    let text = format!(
        "{extra}\n[daemon]\nsocket = {:?}\nworkers = 2\nqueue_capacity = 8\n",
        work.path().join("m.sock").display().to_string()
    );
    Daemon::start_text(&work, &text, Duration::from_secs(30)).owning(work)
}

fn message(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write the message");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

fn job(id: &str, nexthop: &str, rcpt: &str, smtputf8: bool, message: &Path) -> Value {
    json!({
        "id": id,
        "nexthop": nexthop,
        "sender": "s@x.test",
        "recipients": [{"address": rcpt}],
        "message": {"path": message.display().to_string()},
        "smtputf8": smtputf8,
    })
}

fn only(answer: &Value) -> &Value {
    &answer["recipients"][0]
}

/// The dump files the sink wrote, waiting for `count`.
fn dumps(sink: &Sink, count: usize) -> Vec<String> {
    sink.wait_files("dump", count)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

#[test]
fn a_server_without_smtputf8_gets_a_labels_or_a_5_6_7_bounce() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-d", "{dir}/dump/%M."]) else {
        return;
    };
    let work = Workdir::with_prefix("mailhop-utf8-");
    let ascii = message(work.path(), "ascii", ASCII_HEADER);
    let utf8 = message(work.path(), "utf8", UTF8_HEADER);
    let daemon = daemon(work, "");
    let answers = daemon.submit(&[
        // Requested, UTF-8 in the domain alone: A-labels.
        job("U1", &sink.nexthop(), "a@bücher.test", true, &ascii),
        // Requested, UTF-8 in the local part: 5.6.7.
        job("U2", &sink.nexthop(), "jörg@y.test", true, &ascii),
        // Requested, ASCII envelope, UTF-8 header: 5.6.7.
        job("U3", &sink.nexthop(), "b@y.test", true, &utf8),
        // Not requested: as it is, without the parameter.
        job("U4", &sink.nexthop(), "jörg@y.test", false, &utf8),
    ]);
    assert_eq!(only(&answers[0])["status"], "sent", "{}", answers[0]);
    for answer in &answers[1..3] {
        assert_eq!(only(answer)["status"], "bounced", "{answer}");
        assert_eq!(only(answer)["dsn"], "5.6.7", "{answer}");
        assert_eq!(
            only(answer)["diagnostic"],
            format!(
                "SMTPUTF8 is required, but was not offered by host {}",
                sink.relay().rsplit_once(':').map_or("", |(h, _)| h)
            ),
            "{answer}"
        );
    }
    assert_eq!(only(&answers[3])["status"], "sent", "{}", answers[3]);
    let dumps = dumps(&sink, 2).join("\n----\n");
    assert!(
        dumps.contains("X-Rcpt-Args: <a@xn--bcher-kva.test>"),
        "{dumps}"
    );
    // smtp-sink's dump shows each non-ASCII byte as "?": the two bytes of
    // "ö" went as they are, the domain as an A-label.
    assert!(!dumps.contains("b??cher"), "{dumps}");
    assert!(dumps.contains("X-Rcpt-Args: <j??rg@y.test>"), "{dumps}");
    assert!(!dumps.contains("SMTPUTF8"), "{dumps}");
}

#[test]
fn with_a_labels_off_utf8_domains_bounce_as_in_postfix() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-d", "{dir}/dump/%M."]) else {
        return;
    };
    let work = Workdir::with_prefix("mailhop-utf8-");
    let ascii = message(work.path(), "ascii", ASCII_HEADER);
    let daemon = daemon(work, "[smtp]\nsmtputf8_a_labels = false\n");
    let answers = daemon.submit(&[
        job("A1", &sink.nexthop(), "a@bücher.test", true, &ascii),
        job("A2", &sink.nexthop(), "a@bücher.test", false, &ascii),
    ]);
    assert_eq!(only(&answers[0])["dsn"], "5.6.7", "{}", answers[0]);
    assert_eq!(only(&answers[0])["status"], "bounced", "{}", answers[0]);
    assert_eq!(only(&answers[1])["status"], "sent", "{}", answers[1]);
    let dump = dumps(&sink, 1).remove(0);
    // The UTF-8 domain as it is (smtp-sink shows each non-ASCII byte as "?").
    assert!(dump.contains("X-Rcpt-Args: <a@b??cher.test>"), "{dump}");
    assert!(!dump.contains("xn--"), "{dump}");
}

#[test]
fn postfix_smtpd_offers_smtputf8_and_gets_the_addresses_as_they_are() {
    let pki = Pki::generate();
    let Some(postfix) = Postfix::start(&pki) else {
        return;
    };
    let work = Workdir::with_prefix("mailhop-utf8-");
    let utf8 = message(work.path(), "utf8", UTF8_HEADER);
    let daemon = daemon(work, "[tls]\nsecurity_level = \"none\"\n");
    let answer = daemon
        .submit(&[job(
            "P1",
            &postfix.nexthop(Service::StartTls),
            "jörg@bücher.test",
            true,
            &utf8,
        )])
        .remove(0);
    assert_eq!(only(&answer)["status"], "sent", "{answer}");
    let diagnostic = only(&answer)["diagnostic"].as_str().unwrap_or_default();
    let queue_id = diagnostic
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("Postfix's queued reply expected: {answer}"));
    let line = postfix.wait_discarded(queue_id);
    assert!(line.contains("to=<jörg@bücher.test>"), "{line}");
    let log = postfix.maillog();
    assert!(
        log.lines()
            .any(|l| l.contains(queue_id) && l.contains("from=<s@x.test>")),
        "{log}"
    );
}
