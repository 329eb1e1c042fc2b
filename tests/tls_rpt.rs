//! TLS reporting (RFC 8460) end to end: `mailhop send --direct` with
//! `[tls_rpt] enabled` delivers to scripted servers on 127.0.0.1 found
//! through dnsmasq MX records (each domain publishes a `_smtp._tls` TXT
//! record there), and each run writes its report when it ends. The test
//! then reads the reports and compares them with the deliveries that made
//! them: the domain, the policy type, the counts per result type, the MX
//! host and the addresses.
//!
//! Deliveries: `ok.test` at level verify with a certificate naming its MX
//! host (success); `mismatch.test` at level verify whose MX host the
//! certificate does not name (certificate-host-mismatch); `plain.test` at
//! level encrypt whose server offers no STARTTLS (starttls-not-supported);
//! and `norecord.test`, with no TXT record, for which no report is written.
//!
//! A second test runs the daemon with `[tls_rpt] submit = true`: after a
//! delivery to `ok.test`, `mailhop tlsrpt-flush` writes the partial day's
//! report and the daemon's own workers mail it, routed by MX, to a real
//! smtp-sink that keeps it; the test decodes the attachment and compares
//! it with the file written. A third checks the refusal with TLS-RPT off.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use std::time::Duration;

use common::certs::Pki;
use common::daemon::Daemon;
use common::dnsmasq::{Dnsmasq, Zone};
use common::starttls::{accept_tls, smtp_in_tls};
use common::{Invocation, Listen, Peer as Conn, Run, Server, Sink, Workdir};
use serde_json::Value;

type Scripted = Server<Vec<String>>;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// STARTTLS with the PKI's certificate for `mx.tls.test`, then accepts
/// the message inside TLS. Returns what the client sent inside TLS, after
/// a `<tls>` note.
fn starttls_session(cert: &Path, key: &Path, conn: &mut Conn) -> Vec<String> {
    conn.reply("220 scripted.test ESMTP");
    for _ in 0..3 {
        let Ok(line) = conn.read_line() else {
            return vec!["<EOF>".into()];
        };
        if line.starts_with("EHLO") {
            conn.send(b"250-scripted.test\r\n250 STARTTLS\r\n");
        } else if line == "STARTTLS" {
            break;
        }
    }
    conn.reply("220 2.0.0 Ready to start TLS");
    let mut tls = match accept_tls(conn, cert, key) {
        Ok(tls) => tls,
        Err(note) => return vec![note],
    };
    let mut transcript = vec!["<tls>".to_string()];
    smtp_in_tls(
        &mut tls,
        b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n",
        "250 2.0.0 Ok: queued as RPT1",
        &mut transcript,
    );
    transcript
}

/// A server that offers no STARTTLS; returns the client's commands.
fn plain_session(conn: &mut Conn) -> Vec<String> {
    let mut transcript = Vec::new();
    conn.reply("220 plain.test ESMTP");
    for _ in 0..10 {
        let Ok(line) = conn.read_line() else {
            return transcript;
        };
        transcript.push(line.clone());
        if line.starts_with("EHLO") {
            conn.send(b"250-plain.test\r\n250 ENHANCEDSTATUSCODES\r\n");
        } else if line == "QUIT" {
            conn.reply("221 2.0.0 Bye");
            return transcript;
        } else {
            conn.reply("502 5.5.2 Error: command not recognized");
        }
    }
    transcript
}

fn tls_server(pki: &Pki) -> Scripted {
    let (cert, key) = (pki.server_pem(), pki.server_key());
    Server::sequential(1, move |_, conn: &mut Conn| {
        starttls_session(&cert, &key, conn)
    })
}

/// The TXT record of a domain's reports.
fn txt(domain: &str) -> String {
    format!("--txt-record=_smtp._tls.{domain},v=TLSRPTv1; rua=mailto:tlsrpt@{domain}")
}

/// The configuration: dnsmasq, the test CA, TLS-RPT on with `reports` as
/// its directory, and one policy entry per next hop.
fn config(dns: &Dnsmasq, pki: &Pki, reports: &Path, entries: &[(String, &str)]) -> String {
    let mut text = format!(
        "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"5s\"\nmail_timeout = \"5s\"\n\
         rcpt_timeout = \"5s\"\ndata_init_timeout = \"5s\"\ndata_xfer_timeout = \"5s\"\n\
         data_done_timeout = \"5s\"\nquit_timeout = \"2s\"\n\
         [dns]\nnameservers = [{:?}]\ntimeout = \"2s\"\nattempts = 1\n\
         [tls_rpt]\nenabled = true\nno_policy_found = true\nreport_directory = {:?}\n\
         organization_name = \"mailhop test\"\ncontact_info = \"ops@sender.test\"\n\
         [tls]\nstarttls_timeout = \"5s\"\nsecurity_level = \"may\"\nca_file = {:?}\n",
        dns.nameserver(),
        reports.display().to_string(),
        pki.ca_pem().display().to_string()
    );
    for (destination, level) in entries {
        text.push_str(&format!(
            "[[tls.policy]]\ndestination = {destination:?}\nlevel = {level:?}\n"
        ));
    }
    text
}

fn send(work: &Workdir, config: &Path, nexthop: &str, to: &str) -> Run {
    let message = work.file(
        "message",
        b"From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n",
    );
    let args: Vec<std::ffi::OsString> = vec![
        "send".into(),
        "--config".into(),
        config.into(),
        "--direct".into(),
        "--json".into(),
        "--nexthop".into(),
        nexthop.into(),
        "--from".into(),
        "a@sender.test".into(),
        "--to".into(),
        to.into(),
        message.into(),
    ];
    Invocation::new(&args).rust_log("debug").run(work)
}

/// The reports written, by policy domain (one file per domain expected).
fn reports(dir: &Path) -> Vec<(String, PathBuf, Value)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).expect("read a report");
        let json: Value = serde_json::from_str(&text).expect("a report is JSON");
        let domain = json["policies"][0]["policy"]["policy-domain"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        found.push((domain, path, json));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn reports_match_the_deliveries_that_made_them() {
    let zone = Zone::new()
        .mx("ok.test", 10, "mx.tls.test")
        .mx("mismatch.test", 10, "mx.mismatch.test")
        .mx("plain.test", 10, "mx.plain.test")
        .mx("norecord.test", 10, "mx.tls.test")
        .host("mx.tls.test", &[LOCALHOST])
        .host("mx.mismatch.test", &[LOCALHOST])
        .host("mx.plain.test", &[LOCALHOST])
        .arg(&txt("ok.test"))
        .arg(&txt("mismatch.test"))
        .arg(&txt("plain.test"));
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let pki = Pki::generate();
    let work = Workdir::new();
    let dir = work.path().join("reports");

    let ok = tls_server(&pki);
    let mismatch = tls_server(&pki);
    let plain = Server::sequential(1, |_, conn: &mut Conn| plain_session(conn));
    let norecord = tls_server(&pki);
    let hops = [
        format!("ok.test:{}", ok.port()),
        format!("mismatch.test:{}", mismatch.port()),
        format!("plain.test:{}", plain.port()),
        format!("norecord.test:{}", norecord.port()),
    ];
    let entries: Vec<(String, &str)> = vec![
        (hops[0].clone(), "verify"),
        (hops[1].clone(), "verify"),
        (hops[2].clone(), "encrypt"),
        (hops[3].clone(), "verify"),
    ];
    let conf = work.file(
        "mailhop.toml",
        config(&dns, &pki, &dir, &entries).as_bytes(),
    );

    let statuses: Vec<(String, String)> = [
        ("ok.test", &hops[0]),
        ("mismatch.test", &hops[1]),
        ("plain.test", &hops[2]),
        ("norecord.test", &hops[3]),
    ]
    .iter()
    .map(|(domain, hop)| {
        let run = send(&work, &conf, hop, &format!("u@{domain}"));
        let json = run.json();
        let r = &json["recipients"][0];
        eprintln!("{domain}: {}", run.stderr);
        (
            r["status"].as_str().unwrap_or_default().to_string(),
            r["diagnostic"].as_str().unwrap_or_default().to_string(),
        )
    })
    .collect();
    assert_eq!(statuses[0].0, "sent", "{statuses:?}");
    assert_eq!(statuses[1].0, "deferred", "{statuses:?}");
    assert!(statuses[1].1.contains("not verified"), "{statuses:?}");
    assert_eq!(statuses[2].0, "deferred", "{statuses:?}");
    assert!(statuses[2].1.contains("TLS is required"), "{statuses:?}");
    assert_eq!(statuses[3].0, "sent", "{statuses:?}");
    assert!(ok.finish_all().concat().contains(&"<tls>".to_string()));
    mismatch.finish_all();
    let plain_seen = plain.finish_all().concat();
    assert!(
        !plain_seen.iter().any(|l| l.starts_with("MAIL")),
        "{plain_seen:?}"
    );
    norecord.finish_all();

    let found = reports(&dir);
    let domains: Vec<&str> = found.iter().map(|(d, _, _)| d.as_str()).collect();
    // No report for the domain without a TLSRPT record.
    assert_eq!(
        domains,
        ["mismatch.test", "ok.test", "plain.test"],
        "{found:#?}"
    );

    for (domain, path, json) in &found {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(name.contains(&format!("!{domain}!")), "{name}");
        assert!(name.ends_with(".json"), "{name}");
        assert_eq!(json["organization-name"], "mailhop test");
        assert_eq!(json["contact-info"], "ops@sender.test");
        let start = json["date-range"]["start-datetime"]
            .as_str()
            .unwrap_or_default();
        let end = json["date-range"]["end-datetime"]
            .as_str()
            .unwrap_or_default();
        assert!(
            start.ends_with("T00:00:00Z") && end.ends_with("T23:59:59Z"),
            "{json}"
        );
        assert_eq!(start.get(..10), end.get(..10), "{json}");
        assert!(
            json["report-id"]
                .as_str()
                .is_some_and(|id| id.contains(domain.as_str()))
        );
        let policies = json["policies"].as_array().cloned().unwrap_or_default();
        assert_eq!(policies.len(), 1, "{json}");
        assert_eq!(
            policies[0]["policy"]["policy-type"], "no-policy-found",
            "{json}"
        );
    }
    let summary = |i: usize| {
        let s = &found[i].2["policies"][0]["summary"];
        (
            s["total-successful-session-count"].as_u64(),
            s["total-failure-session-count"].as_u64(),
        )
    };
    let details = |i: usize| found[i].2["policies"][0]["failure-details"].clone();
    // mismatch.test: one failed session, its MX host and addresses.
    assert_eq!(summary(0), (Some(0), Some(1)), "{:#}", found[0].2);
    assert_eq!(
        details(0),
        serde_json::json!([{
            "result-type": "certificate-host-mismatch",
            "sending-mta-ip": "127.0.0.1",
            "receiving-mx-hostname": "mx.mismatch.test",
            "receiving-ip": "127.0.0.1",
            "failed-session-count": 1
        }])
    );
    // ok.test: one successful session, no failure details.
    assert_eq!(summary(1), (Some(1), Some(0)), "{:#}", found[1].2);
    assert!(details(1).is_null(), "{:#}", found[1].2);
    // plain.test: STARTTLS not offered at level encrypt.
    assert_eq!(summary(2), (Some(0), Some(1)), "{:#}", found[2].2);
    assert_eq!(
        details(2),
        serde_json::json!([{
            "result-type": "starttls-not-supported",
            "sending-mta-ip": "127.0.0.1",
            "receiving-mx-hostname": "mx.plain.test",
            "receiving-ip": "127.0.0.1",
            "failed-session-count": 1
        }])
    );
}

/// The dump of the one message an smtp-sink `-d` received: its envelope
/// records and the message, LF line ends.
fn sink_dump(sink: &Sink) -> String {
    let dumps = sink.wait_files("dump", 1);
    assert_eq!(dumps.len(), 1, "{dumps:?}\nsink log: {}", sink.log());
    std::fs::read_to_string(&dumps[0]).expect("read the dump")
}

/// The base64 body of the `application/tlsrpt+gzip` part of a dumped
/// message, decoded and gunzipped.
fn tlsrpt_attachment(dump: &str) -> String {
    let lines: Vec<&str> = dump.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("Content-Type: application/tlsrpt+gzip"))
        .unwrap_or_else(|| panic!("no tlsrpt+gzip part:\n{dump}"));
    let body_start = at
        + lines[at..]
            .iter()
            .position(|l| l.is_empty())
            .expect("the part's header ends")
        + 1;
    let base64: String = lines[body_start..]
        .iter()
        .take_while(|l| !l.starts_with("--"))
        .map(|l| l.trim())
        .collect();
    let gz = openssl::base64::decode_block(&base64).expect("the attachment is base64");
    let mut json = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut json)
        .expect("the attachment is gzip of UTF-8");
    json
}

/// `[tls_rpt] submit = true` in a daemon: a delivery to `ok.test` is
/// counted, `mailhop tlsrpt-flush` writes the partial day's report and
/// hands it to the daemon's own workers, which deliver it through MX
/// routing (`rpt.test`, the `rua` domain) to a real smtp-sink.
#[test]
fn tlsrpt_flush_submits_the_report_through_the_daemons_workers() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-d", "{dir}/dump/%M."]) else {
        return;
    };
    let zone = Zone::new()
        .mx("ok.test", 10, "mx.tls.test")
        .host("mx.tls.test", &[LOCALHOST])
        .mx("rpt.test", 10, "mx.rpt.test")
        .host("mx.rpt.test", &[LOCALHOST])
        .arg("--txt-record=_smtp._tls.ok.test,v=TLSRPTv1; rua=mailto:reports@rpt.test");
    let Some(dns) = Dnsmasq::start(&zone) else {
        return;
    };
    let pki = Pki::generate();
    let work = Workdir::with_prefix("mailhop-tlsrpt-");
    let dir = work.subdir("reports");
    let ok = tls_server(&pki);
    let hop = format!("ok.test:{}", ok.port());
    let socket = work.path().join("m.sock");
    // The report goes to rpt.test's MX on the sink's port: the default
    // port of the daemon's SMTP client. The job to ok.test names its port.
    let text = config(&dns, &pki, &dir, &[(hop.clone(), "verify")])
        .replacen("[smtp]\n", &format!("[smtp]\nport = {}\n", sink.port), 1)
        .replacen("[tls_rpt]\n", "[tls_rpt]\nsubmit = true\n", 1)
        + &format!(
            "[daemon]\nsocket = {:?}\nworkers = 2\n",
            socket.display().to_string()
        );
    let mut daemon = Daemon::start_text(&work, &text, Duration::from_secs(30));

    let job = serde_json::json!({
        "id": "J1",
        "nexthop": hop,
        "sender": "a@sender.test",
        "recipients": [{"address": "b@ok.test"}],
        "message": {"data": "From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n"},
    });
    let answers = daemon.submit(&[job]);
    let result = &answers[0]["recipients"][0];
    assert_eq!(result["status"], "sent", "{}\n{}", answers[0], daemon.log());
    assert_eq!(daemon.log().matches("tls_rpt: report").count(), 0);

    let run = Invocation::new(&[
        "tlsrpt-flush".into(),
        "--socket".into(),
        socket.clone().into_os_string(),
        "--json".into(),
    ])
    .run(&work);
    assert_eq!(run.code, 0, "{run:?}\n{}", daemon.log());
    let answer: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON answer");
    assert_eq!(answer["written"], 1, "{answer}");
    assert_eq!(answer["failed"], 0, "{answer}");
    assert_eq!(answer["submitted"], 1, "{answer}");
    assert_eq!(answer["no_record"], 0, "{answer}");
    let file = PathBuf::from(answer["files"][0].as_str().expect("a file name"));
    assert_eq!(file.parent(), Some(dir.as_path()), "{answer}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("the report file"))
            .expect("the report file is JSON");

    // The report message, delivered by the daemon's workers.
    let dump = sink_dump(&sink);
    assert!(
        dump.lines()
            .any(|l| l.starts_with("X-Rcpt-Args: <reports@rpt.test>")),
        "{dump}"
    );
    for header in [
        "TLS-Report-Domain: ok.test\n",
        "\nTLS-Report-Submitter: ",
        "Content-Type: multipart/report; report-type=\"tlsrpt\"",
    ] {
        assert!(dump.contains(header), "no {header:?} in:\n{dump}");
    }
    let sent: Value = serde_json::from_str(&tlsrpt_attachment(&dump)).expect("JSON report");
    let policy = &sent["policies"][0];
    assert_eq!(policy["policy"]["policy-domain"], "ok.test", "{sent:#}");
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 1,
        "{sent:#}"
    );
    assert_eq!(
        policy["summary"]["total-failure-session-count"], 0,
        "{sent:#}"
    );
    // The file written is the report sent.
    assert_eq!(written, sent);
    daemon.wait_log("tls_rpt: report message:");
    assert!(
        daemon
            .log()
            .lines()
            .any(|l| l.contains("tls_rpt: report message:") && l.contains("sent")),
        "{}",
        daemon.log()
    );

    // Stopped before the scripted server: a cached session ends with it.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(ok.finish_all().concat().contains(&"<tls>".to_string()));
}

/// With `[tls_rpt] enabled = false` the daemon refuses the command.
#[test]
fn tlsrpt_flush_is_refused_when_tls_rpt_is_off() {
    let work = Workdir::with_prefix("mailhop-tlsrpt-");
    let socket = work.path().join("m.sock");
    let text = format!("[daemon]\nsocket = {:?}\n", socket.display().to_string());
    let daemon = Daemon::start_text(&work, &text, Duration::from_secs(30));
    let run = Invocation::new(&[
        "tlsrpt-flush".into(),
        "--socket".into(),
        socket.clone().into_os_string(),
    ])
    .run(&work);
    assert_eq!(run.code, 70, "{run:?}");
    assert!(run.stderr.contains("[tls_rpt] enabled is false"), "{run:?}");
    let answer = daemon.submit(&[serde_json::json!({"command": "tlsrpt-flush"})]);
    assert_eq!(answer[0]["kind"], "other", "{}", answer[0]);
    assert_eq!(answer[0]["id"], Value::Null, "{}", answer[0]);
}
