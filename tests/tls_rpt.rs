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

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};

use common::certs::Pki;
use common::dnsmasq::{Dnsmasq, Zone};
use common::{Invocation, Peer as Conn, Run, Server, Workdir};
use serde_json::Value;

type Scripted = Server<Vec<String>>;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One line from the TLS stream, without CRLF (bounded).
fn read_tls_line(stream: &mut openssl::ssl::SslStream<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => {
                let text = String::from_utf8_lossy(&line);
                return Some(text.trim_end_matches('\r').to_string());
            }
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// STARTTLS with the PKI's certificate for `mx.tls.test`, then accepts
/// the message inside TLS. Returns what the client sent inside TLS.
fn starttls_session(cert: &Path, key: &Path, conn: &mut Conn) -> Vec<String> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
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
    let Ok(mut builder) = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()) else {
        return vec!["<no acceptor>".into()];
    };
    if builder.set_certificate_chain_file(cert).is_err()
        || builder.set_private_key_file(key, SslFiletype::PEM).is_err()
    {
        return vec!["<no certificate>".into()];
    }
    let acceptor = builder.build();
    let Ok(stream) = conn.stream().try_clone() else {
        return vec!["<no stream>".into()];
    };
    let mut tls = match acceptor.accept(stream) {
        Ok(tls) => tls,
        Err(e) => return vec![format!("<handshake failed: {e}>")],
    };
    let mut transcript = vec!["<tls>".to_string()];
    for _ in 0..100 {
        let Some(line) = read_tls_line(&mut tls) else {
            transcript.push("<EOF>".into());
            return transcript;
        };
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        transcript.push(line);
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n",
            "MAIL" => b"250 2.1.0 Ok\r\n",
            "RCPT" => b"250 2.1.5 Ok\r\n",
            "DATA" => {
                let _ = tls.write_all(b"354 go ahead\r\n");
                for _ in 0..10_000 {
                    match read_tls_line(&mut tls) {
                        Some(body) if body == "." => break,
                        Some(_) => {}
                        None => return transcript,
                    }
                }
                b"250 2.0.0 Ok: queued as RPT1\r\n"
            }
            "QUIT" => {
                let _ = tls.write_all(b"221 2.0.0 Bye\r\n");
                return transcript;
            }
            _ => b"502 5.5.2 Error: command not recognized\r\n",
        };
        let _ = tls.write_all(reply);
    }
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
