//! DSN pass-through against a real Postfix `smtp-sink`: NOTIFY, ORCPT,
//! RET and ENVID go only to a server that announces DSN, exactly as the
//! job gave them, and a recipient that asked NOTIFY=SUCCESS gets in its
//! answer what a DSN generator needs (`success_dsn`): whether this hop
//! owes the notification (the server announced no DSN: action "relayed",
//! or "delivered" from LMTP with `[lmtp] assume_final`) or passed it on.
//!
//! The sink dumps each message with the envelope it saw (`-d`), so the
//! tests read the MAIL and RCPT parameters as they arrived. Without
//! smtp-sink the tests print SKIPPED and pass, except under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::Daemon;
use common::{Listen, Sink, Workdir};
use serde_json::{Value, json};

const MESSAGE: &[u8] = b"Subject: dsn\r\n\r\nbody\r\n";

fn daemon(work: Workdir, extra: &str) -> Daemon {
    let text = format!(
        "{extra}\n[daemon]\nsocket = {:?}\nworkers = 2\nqueue_capacity = 8\n",
        work.path().join("m.sock").display().to_string()
    );
    Daemon::start_text(&work, &text, Duration::from_secs(20)).owning(work)
}

fn message_file(dir: &Path) -> PathBuf {
    let path = dir.join("message");
    std::fs::write(&path, MESSAGE).expect("write the message");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

fn dsn_job(id: &str, nexthop: &str, message: &Path, transport: &str) -> Value {
    json!({
        "id": id,
        "transport": transport,
        "nexthop": nexthop,
        "sender": "s@x.test",
        "envid": "ENV+ID=1",
        "ret": "hdrs",
        "recipients": [
            {"address": "ok@y.test", "orcpt": "rfc822;original@y.test",
             "notify": ["success", "failure"]},
            {"address": "quiet@y.test", "notify": ["failure", "delay"]},
        ],
        "message": {"path": message.display().to_string()},
    })
}

/// The dump files the sink wrote: their text, one per message.
fn dumps(sink: &Sink, count: usize) -> Vec<String> {
    sink.wait_files("dump", count)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

fn recipient<'a>(answer: &'a Value, address: &str) -> &'a Value {
    answer["recipients"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("no answer for {address}: {answer}"))
}

#[test]
fn dsn_parameters_go_to_a_dsn_server_as_given_and_it_takes_over_success() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-d", "{dir}/dump/%M."]) else {
        return;
    };
    let work = Workdir::with_prefix("mailhop-dsn-");
    let message = message_file(work.path());
    let daemon = daemon(work, "");
    let answer = daemon
        .submit(&[dsn_job("D1", &sink.nexthop(), &message, "smtp")])
        .remove(0);
    let ok = recipient(&answer, "ok@y.test");
    assert_eq!(ok["status"], "sent", "{answer}");
    assert_eq!(
        ok["success_dsn"],
        json!({"notify": false, "action": "relayed",
               "original_recipient": "rfc822;original@y.test",
               "final_recipient": "rfc822;ok@y.test",
               "remote_mta": format!("dns;{}", sink.relay().split('[').next().unwrap_or("")),
               "diagnostic_code": "smtp;250 2.0.0 Ok"}),
        "{answer}"
    );
    // No NOTIFY=SUCCESS: no success_dsn at all.
    assert!(
        recipient(&answer, "quiet@y.test")
            .get("success_dsn")
            .is_none(),
        "{answer}"
    );
    let dump = dumps(&sink, 1).remove(0);
    assert!(dump.contains("RET=HDRS"), "{dump}");
    assert!(dump.contains("ENVID=ENV+2BID+3D1"), "{dump}");
    assert!(
        dump.contains("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;original@y.test"),
        "{dump}"
    );
    assert!(
        dump.contains("NOTIFY=FAILURE,DELAY ORCPT=rfc822;quiet@y.test"),
        "{dump}"
    );
}

#[test]
fn a_server_without_dsn_gets_no_dsn_parameters_and_success_is_owed_here() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-N", "-d", "{dir}/dump/%M."]) else {
        return;
    };
    let work = Workdir::with_prefix("mailhop-dsn-");
    let message = message_file(work.path());
    let daemon = daemon(work, "");
    let answer = daemon
        .submit(&[dsn_job("D2", &sink.nexthop(), &message, "smtp")])
        .remove(0);
    let ok = recipient(&answer, "ok@y.test");
    assert_eq!(ok["status"], "sent", "{answer}");
    assert_eq!(ok["success_dsn"]["notify"], true, "{answer}");
    assert_eq!(ok["success_dsn"]["action"], "relayed", "{answer}");
    assert_eq!(
        ok["success_dsn"]["original_recipient"], "rfc822;original@y.test",
        "{answer}"
    );
    let dump = dumps(&sink, 1).remove(0);
    for param in ["NOTIFY=", "ORCPT=", "RET=", "ENVID="] {
        assert!(!dump.contains(param), "{param} sent without DSN: {dump}");
    }
}

#[test]
fn lmtp_without_dsn_owes_delivered_with_assume_final_and_relayed_without() {
    for (assume_final, action) in [(true, "delivered"), (false, "relayed")] {
        let Some(sink) = Sink::start(Listen::Tcp, &["-L", "-N"]) else {
            return;
        };
        let work = Workdir::with_prefix("mailhop-dsn-");
        let message = message_file(work.path());
        let daemon = daemon(work, &format!("[lmtp]\nassume_final = {assume_final}\n"));
        let nexthop = format!("inet:{}", sink.nexthop());
        let answer = daemon
            .submit(&[dsn_job("D3", &nexthop, &message, "lmtp")])
            .remove(0);
        let ok = recipient(&answer, "ok@y.test");
        assert_eq!(ok["status"], "sent", "{answer}");
        assert_eq!(ok["success_dsn"]["notify"], true, "{answer}");
        assert_eq!(ok["success_dsn"]["action"], action, "{answer}");
        assert_eq!(
            ok["success_dsn"]["diagnostic_code"], "smtp;250 2.2.0 Ok",
            "{answer}"
        );
    }
}
