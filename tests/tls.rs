//! End-to-end TLS tests of `mailhop send`.
//!
//! Against a real Postfix smtpd (a private instance per test, see
//! `common/postfix.rs`, with the test PKI of `common/certs.rs`): STARTTLS at
//! levels may, encrypt, verify, secure and fingerprint, the `[[tls.policy]]`
//! table, and SMTPS wrapper mode. A delivery "over TLS" is checked on both
//! sides: mailhop's JSON `tls` field and log line, and the server's own
//! `TLS connection established from ...` line, its `QUEUEID: client=` line
//! and the discard agent's `status=sent` line for the same queue id. A
//! refused delivery is checked to have left no message in Postfix.
//!
//! Against in-process scripted servers (one loopback port, one or more
//! connections in turn, read timeouts): a broken or stalled handshake (and
//! the plaintext retry of old mail at level may), a refused STARTTLS, a
//! server without STARTTLS, response injection after the STARTTLS reply, a
//! TLS session lost after a good handshake (a server speaking real TLS with
//! the test PKI), and bad `[[tls.policy]]` entries.
//!
//! In a daemon (issue 16): the broken-TLS memory (`[tls]
//! broken_tls_memory`: old mail skips STARTTLS with a server whose
//! handshake failed, young mail still tries; "0s" remembers nothing) with
//! scripted servers, and TLS session resumption (`[tls]
//! session_cache_timeout`) against Postfix's STARTTLS and SMTPS services.
//!
//! Without Postfix the real-server tests print SKIPPED and pass, except
//! under `CI=true`, where they fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::certs::Pki;
use common::postfix::{Postfix, Service, Session};
use common::{
    Delivery, Line, PEER, Peer as Conn, READ_LIMIT, Run, Server, Workdir, ehlo, run_mailhop,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Running mailhop
// ---------------------------------------------------------------------------

/// Short timeouts everywhere: a stuck peer cannot stall the suite.
const SMTP_TIMEOUTS: &str = "[smtp]
connect_timeout = \"5s\"
helo_timeout = \"5s\"
mail_timeout = \"5s\"
rcpt_timeout = \"5s\"
data_init_timeout = \"5s\"
data_xfer_timeout = \"5s\"
data_done_timeout = \"5s\"
quit_timeout = \"2s\"
rset_timeout = \"2s\"
";

/// `mailhop send --direct --json` of the small message from a@x.test to
/// b@y.test. `tls` is TOML for the `[tls]` table (keys first, then any
/// `[[tls.policy]]` tables); `starttls_timeout` is 5s unless it sets it.
/// `arrival_age`: `--arrival-time` this long ago.
fn send(nexthop: &str, tls: &str, arrival_age: Option<Duration>) -> Run {
    let work = Workdir::new();
    let timeout = if tls.contains("starttls_timeout") {
        ""
    } else {
        "starttls_timeout = \"5s\"\n"
    };
    let config = format!("{SMTP_TIMEOUTS}\n[tls]\n{timeout}{tls}\n");
    let config_path = work.file("mailhop.toml", config.as_bytes());
    let message = work.file("message", common::SMALL_MESSAGE);
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
    if let Some(age) = arrival_age {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        args.push("--arrival-time".into());
        args.push(now.saturating_sub(age).as_secs().to_string().into());
    }
    args.push(message.into());
    run_mailhop(&work, &args, None)
}

/// The one recipient's JSON result, after checking the exit code and the
/// address.
fn outcome(run: &Run, code: i32) -> Value {
    assert_eq!(run.code, code, "exit code of {run:#?}");
    let json = run.json();
    let recipients = json["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {run:#?}"));
    assert_eq!(recipients.len(), 1, "{run:#?}");
    let result = recipients[0].clone();
    assert_eq!(result["address"], "b@y.test", "{run:#?}");
    result
}

/// Asserts status, dsn, relay and the exact diagnostic; returns the `tls`
/// field.
fn expect(run: &Run, code: i32, status: &str, dsn: &str, relay: &str, diagnostic: &str) -> Value {
    let result = outcome(run, code);
    assert_eq!(
        (
            result["status"].as_str(),
            result["dsn"].as_str(),
            result["relay"].as_str(),
            result["diagnostic"].as_str()
        ),
        (Some(status), Some(dsn), Some(relay), Some(diagnostic)),
        "{run:#?}"
    );
    result["tls"].clone()
}

/// A message deferred with `dsn` and `diagnostic`, without TLS details.
fn expect_deferred(run: &Run, relay: &str, dsn: &str, diagnostic: &str) {
    let tls = expect(run, 75, "deferred", dsn, relay, diagnostic);
    assert_eq!(tls, Value::Null, "{run:#?}");
}

fn assert_logged(run: &Run, text: &str) {
    assert!(
        run.stderr.contains(text),
        "{text:?} not in mailhop's log: {run:#?}"
    );
}

fn assert_not_logged(run: &Run, text: &str) {
    assert!(
        !run.stderr.contains(text),
        "{text:?} unexpectedly in mailhop's log: {run:#?}"
    );
}

fn now_minus_one_hour() -> Option<Duration> {
    Some(Duration::from_secs(3600))
}

// ---------------------------------------------------------------------------
// Against the real Postfix smtpd
// ---------------------------------------------------------------------------

/// Starts a PKI and a private Postfix (None: Postfix unavailable, skipped).
fn postfix() -> Option<(Pki, Postfix)> {
    let pki = Pki::generate();
    let postfix = Postfix::start(&pki)?;
    // Visible with --nocapture; the report quotes it.
    println!("private Postfix started in {:?}", postfix.startup);
    Some((pki, postfix))
}

/// TOML string for a path.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// What one run did on the Postfix side: the new session of `service`.
fn new_session(pf: &Postfix, service: Service, before: usize) -> Session {
    let sessions = pf.wait_sessions(service, before + 1);
    assert_eq!(
        sessions.len(),
        before + 1,
        "exactly one new {service:?} session; maillog:\n{}",
        pf.maillog()
    );
    sessions[before].clone()
}

/// Asserts a delivery over TLS on both sides; returns mailhop's `tls`.
fn assert_sent_over_tls(
    pf: &Postfix,
    service: Service,
    run: &Run,
    before: usize,
    trust: &str,
) -> Value {
    let result = outcome(run, 0);
    assert_eq!(result["status"], "sent", "{run:#?}");
    assert_eq!(result["dsn"], "2.0.0", "{run:#?}");
    assert_eq!(result["relay"], pf.relay(service).as_str(), "{run:#?}");
    let diagnostic = result["diagnostic"].as_str().unwrap_or_default();
    let queue_id = diagnostic
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("Postfix's queued reply expected: {run:#?}"))
        .to_string();

    // mailhop's side.
    let tls = result["tls"].clone();
    let version = tls["version"].as_str().unwrap_or_default().to_string();
    let cipher = tls["cipher"].as_str().unwrap_or_default().to_string();
    assert!(version.starts_with("TLSv1."), "TLS version in {run:#?}");
    assert!(!cipher.is_empty(), "cipher in {run:#?}");
    assert_eq!(tls["trust"], trust, "{run:#?}");
    assert_eq!(tls["verified"], trust == "verified", "{run:#?}");
    let word = {
        let mut chars = trust.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    };
    assert_logged(
        run,
        &format!(
            "{word} TLS connection established to {}: {version} with cipher {cipher} (",
            pf.relay(service)
        ),
    );

    // Postfix's side: the same session negotiated the same, and queued
    // exactly this message, which the discard agent then "delivered".
    let session = new_session(pf, service, before);
    let line = session
        .tls_line()
        .unwrap_or_else(|| panic!("no TLS line in {session:#?}"));
    assert!(
        line.starts_with("Anonymous TLS connection established from ")
            && line.contains(&format!("[127.0.0.1]: {version} with cipher {cipher} (")),
        "server TLS line {line:?} vs mailhop's {tls}"
    );
    assert_eq!(
        session.queue_id().as_deref(),
        Some(queue_id.as_str()),
        "{session:#?}"
    );
    let counts = match service {
        Service::Smtps => "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        _ => "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
    };
    assert_eq!(session.counts(), counts, "{session:#?}");
    let discarded = pf.wait_discarded(&queue_id);
    assert!(
        discarded.starts_with(&format!("{queue_id}: to=<b@y.test>, relay=none, "))
            && discarded.contains(", dsn=2.0.0, status=sent "),
        "{discarded:?}"
    );
    tls
}

/// Asserts a plaintext delivery on both sides.
fn assert_sent_in_plaintext(pf: &Postfix, service: Service, run: &Run, before: usize) {
    let result = outcome(run, 0);
    assert_eq!(result["status"], "sent", "{run:#?}");
    assert_eq!(result["dsn"], "2.0.0", "{run:#?}");
    assert_eq!(result["relay"], pf.relay(service).as_str(), "{run:#?}");
    assert_eq!(result["tls"], Value::Null, "{run:#?}");
    assert_not_logged(run, "TLS connection established");
    let queue_id = result["diagnostic"]
        .as_str()
        .and_then(|d| d.strip_prefix("250 2.0.0 Ok: queued as "))
        .unwrap_or_else(|| panic!("Postfix's queued reply expected: {run:#?}"))
        .to_string();
    let session = new_session(pf, service, before);
    assert_eq!(session.tls_line(), None, "{session:#?}");
    assert_eq!(session.queue_id(), Some(queue_id.clone()), "{session:#?}");
    assert_eq!(
        session.counts(),
        "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        "{session:#?}"
    );
    pf.wait_discarded(&queue_id);
}

/// Asserts that the run's session with Postfix ended right after the
/// STARTTLS handshake (completed: the certificate check came after it) and
/// queued nothing; `discarded`: messages delivered by the instance so far.
fn assert_nothing_queued(pf: &Postfix, service: Service, before: usize, discarded: usize) {
    let session = new_session(pf, service, before);
    assert!(session.tls_line().is_some(), "{session:#?}");
    assert_eq!(session.queue_id(), None, "queued a message: {session:#?}");
    assert_eq!(
        session.counts(),
        "ehlo=1 starttls=1 commands=2",
        "{session:#?}"
    );
    assert_eq!(pf.discarded().len(), discarded, "{}", pf.maillog());
}

#[test]
fn postfix_level_may_is_the_default_and_sends_over_unverified_tls() {
    let Some((_pki, pf)) = postfix() else {
        return;
    };
    // No [tls] keys at all: the default level "may", the system trust
    // store, which does not know the test CA.
    let run = send(&pf.nexthop(Service::StartTls), "", None);
    let tls = assert_sent_over_tls(&pf, Service::StartTls, &run, 0, "untrusted");
    assert_eq!(tls["verified"], false);

    // Level "none" against the same server: plaintext, and Postfix sees no
    // STARTTLS.
    let run = send(
        &pf.nexthop(Service::StartTls),
        "security_level = \"none\"",
        None,
    );
    assert_sent_in_plaintext(&pf, Service::StartTls, &run, 1);

    // "dane" without DNSSEC support is "may".
    let run = send(
        &pf.nexthop(Service::StartTls),
        "security_level = \"dane\"",
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 2, "untrusted");
}

#[test]
fn postfix_level_encrypt_sends_over_tls() {
    let Some((pki, pf)) = postfix() else {
        return;
    };
    let run = send(
        &pf.nexthop(Service::StartTls),
        "security_level = \"encrypt\"",
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 0, "untrusted");

    // With the test CA as the trust anchor the chain verifies, but encrypt
    // checks no name: "trusted", not "verified".
    let run = send(
        &pf.nexthop(Service::StartTls),
        &format!(
            "security_level = \"encrypt\"\nca_file = {}",
            toml_path(&pki.ca_pem())
        ),
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 1, "trusted");

    // The protocol range reaches the handshake: both sides log the version.
    for (sessions, protocols, version) in [(2, "<=TLSv1.2", "TLSv1.2"), (3, ">=TLSv1.3", "TLSv1.3")]
    {
        let run = send(
            &pf.nexthop(Service::StartTls),
            &format!("security_level = \"encrypt\"\nprotocols = \"{protocols}\""),
            None,
        );
        let tls = assert_sent_over_tls(&pf, Service::StartTls, &run, sessions, "untrusted");
        assert_eq!(tls["version"], version, "{protocols}: {run:#?}");
    }
}

#[test]
fn postfix_levels_verify_and_secure_check_the_chain_and_the_name() {
    let Some((pki, pf)) = postfix() else {
        return;
    };
    let ca = toml_path(&pki.ca_pem());
    let nexthop = pf.nexthop(Service::StartTls);
    let relay = pf.relay(Service::StartTls);
    let policy = |level: &str, name: &str, ca: &str| {
        format!(
            "ca_file = {ca}\n\n[[tls.policy]]\ndestination = \"{nexthop}\"\nlevel = \"{level}\"\nmatch = [\"{name}\"]\n"
        )
    };
    let mut sessions = 0;

    // verify, through a policy entry naming the certificate's name.
    let run = send(&nexthop, &policy("verify", "mx.tls.test", &ca), None);
    assert_sent_over_tls(&pf, Service::StartTls, &run, sessions, "verified");
    sessions += 1;

    // secure, through the global keys.
    let run = send(
        &nexthop,
        &format!(
            "security_level = \"secure\"\nca_file = {ca}\nsecure_cert_match = [\"mx.tls.test\"]"
        ),
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, sessions, "verified");
    sessions += 1;

    let not_verified = "Server certificate not verified";

    // The right chain, but the match list names another host.
    let run = send(&nexthop, &policy("verify", "other.test", &ca), None);
    expect_deferred(&run, &relay, "4.7.5", not_verified);
    assert_logged(
        &run,
        &format!(
            "TLS handshake with {relay}: Server certificate not verified: server certificate name mismatch: mx.tls.test matches none of: other.test"
        ),
    );
    assert_nothing_queued(&pf, Service::StartTls, sessions, 2);
    sessions += 1;

    // The default verify match ("hostname") against an address literal:
    // the certificate cannot name "127.0.0.1".
    let run = send(
        &nexthop,
        &format!("security_level = \"verify\"\nca_file = {ca}"),
        None,
    );
    expect_deferred(&run, &relay, "4.7.5", not_verified);
    assert_logged(
        &run,
        "server certificate name mismatch: mx.tls.test matches none of: hostname 127.0.0.1",
    );
    assert_nothing_queued(&pf, Service::StartTls, sessions, 2);
    sessions += 1;

    // The right name, but anchored in the other CA.
    let other_ca = toml_path(&pki.other_ca_pem());
    let run = send(&nexthop, &policy("secure", "mx.tls.test", &other_ca), None);
    expect_deferred(&run, &relay, "4.7.5", not_verified);
    assert_logged(
        &run,
        &format!(
            "TLS handshake with {relay}: Server certificate not verified: server certificate not trusted: "
        ),
    );
    assert_nothing_queued(&pf, Service::StartTls, sessions, 2);

    // A certificate from the trusted CA, but for the wrong name.
    let wrong = pf.nexthop(Service::WrongName);
    let wrong_relay = pf.relay(Service::WrongName);
    let run = send(
        &wrong,
        &format!(
            "ca_file = {ca}\n\n[[tls.policy]]\ndestination = \"{wrong}\"\nlevel = \"verify\"\nmatch = [\"mx.tls.test\"]\n"
        ),
        None,
    );
    expect_deferred(&run, &wrong_relay, "4.7.5", not_verified);
    assert_logged(
        &run,
        "server certificate name mismatch: wrong.tls.test matches none of: mx.tls.test",
    );
    assert_nothing_queued(&pf, Service::WrongName, 0, 2);
}

#[test]
fn postfix_level_fingerprint_accepts_only_the_listed_certificate() {
    let Some((pki, pf)) = postfix() else {
        return;
    };
    let nexthop = pf.nexthop(Service::StartTls);
    let relay = pf.relay(Service::StartTls);
    assert_eq!(pki.server_fingerprint.len(), 32 * 3 - 1);

    // The right SHA-256 (default digest), no CA: verified by fingerprint.
    let run = send(
        &nexthop,
        &format!(
            "security_level = \"fingerprint\"\nfingerprint_cert_match = [\"{}\"]",
            pki.server_fingerprint
        ),
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 0, "verified");

    // The same through a policy entry, written in lower case.
    let run = send(
        &nexthop,
        &format!(
            "[[tls.policy]]\ndestination = \"{nexthop}\"\nlevel = \"fingerprint\"\nfingerprints = [\"{}\"]\n",
            pki.server_fingerprint.to_ascii_lowercase()
        ),
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 1, "verified");

    // The public key's fingerprint (SubjectPublicKeyInfo) is as good.
    let run = send(
        &nexthop,
        &format!(
            "security_level = \"fingerprint\"\nfingerprint_cert_match = [\"{}\"]",
            pki.server_pkey_fingerprint
        ),
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 2, "verified");

    // A fingerprint of another certificate (from the same CA).
    let run = send(
        &nexthop,
        &format!(
            "security_level = \"fingerprint\"\nfingerprint_cert_match = [\"{}\"]",
            pki.wrong_fingerprint
        ),
        None,
    );
    expect_deferred(&run, &relay, "4.7.5", "Server certificate not verified");
    assert_logged(
        &run,
        &format!(
            "TLS handshake with {relay}: Server certificate not verified: server certificate sha256 fingerprint {} (or its public key's) matches none of the configured fingerprints",
            pki.server_fingerprint
        ),
    );
    assert_nothing_queued(&pf, Service::StartTls, 3, 3);
}

#[test]
fn postfix_policy_table_entry_overrides_the_default_level() {
    let Some((_pki, pf)) = postfix() else {
        return;
    };
    let nexthop = pf.nexthop(Service::StartTls);

    // Default none, but this destination must be encrypted.
    let run = send(
        &nexthop,
        &format!(
            "security_level = \"none\"\n\n[[tls.policy]]\ndestination = \"{nexthop}\"\nlevel = \"encrypt\"\n"
        ),
        None,
    );
    assert_sent_over_tls(&pf, Service::StartTls, &run, 0, "untrusted");

    // An entry for another destination (another port) does not apply:
    // the default "none" does.
    let run = send(
        &nexthop,
        "security_level = \"none\"\n\n[[tls.policy]]\ndestination = \"[127.0.0.1]:1\"\nlevel = \"encrypt\"\n",
        None,
    );
    assert_sent_in_plaintext(&pf, Service::StartTls, &run, 1);
}

#[test]
fn postfix_smtps_wrapper_mode_needs_level_encrypt() {
    let Some((_pki, pf)) = postfix() else {
        return;
    };
    let nexthop = pf.nexthop(Service::Smtps);

    // Level may: the address is skipped without connecting.
    let run = send(&nexthop, "wrappermode = true", None);
    let result = outcome(&run, 75);
    assert_eq!(
        (
            &result["status"],
            &result["dsn"],
            &result["relay"],
            &result["diagnostic"],
            &result["tls"]
        ),
        (
            &Value::from("deferred"),
            &Value::from("4.7.5"),
            &Value::Null,
            &Value::from("client TLS configuration problem"),
            &Value::Null
        ),
        "{run:#?}"
    );
    assert_logged(
        &run,
        &format!(
            "{nexthop}: SMTPS wrapper mode (TLS before the greeting, used for port 465) requires [tls] security_level = \"encrypt\" (or stronger); skipping"
        ),
    );

    let run = send(
        &nexthop,
        "wrappermode = true\nsecurity_level = \"encrypt\"",
        None,
    );
    assert_sent_over_tls(&pf, Service::Smtps, &run, 0, "untrusted");
    // The skipped attempt never reached the server: one session only.
    assert_eq!(pf.sessions(Service::Smtps).len(), 1, "{}", pf.maillog());

    // Wrapper mode against the plaintext listener: its greeting is no TLS
    // record, so the handshake fails and nothing is sent.
    let plain = pf.nexthop(Service::StartTls);
    let run = send(
        &plain,
        "wrappermode = true\nsecurity_level = \"encrypt\"",
        None,
    );
    expect_deferred(
        &run,
        &pf.relay(Service::StartTls),
        "4.7.5",
        "Cannot start TLS: handshake failure",
    );
    let session = new_session(&pf, Service::StartTls, 0);
    assert_eq!(session.tls_line(), None, "{session:#?}");
    assert_eq!(session.queue_id(), None, "{session:#?}");
    assert_eq!(pf.discarded().len(), 1, "{}", pf.maillog());
}

// ---------------------------------------------------------------------------
// Scripted servers
// ---------------------------------------------------------------------------

/// The harness's sequential scripted server: each connection's handler
/// returns that connection's transcript.
type Scripted = Server<Vec<String>>;

/// What a scripted server does when the client says STARTTLS.
#[derive(Clone, Copy, Debug)]
enum OnStartTls {
    /// `220 go ahead`; then, once the ClientHello arrived, junk instead of
    /// a ServerHello, and the socket stays open until the client leaves
    /// (at most 2 s).
    Junk,
    /// This reply, and the session goes on in plaintext.
    Refuse(&'static str),
    /// `220 go ahead\r\n250 injected\r\n` in one write, then whatever the
    /// client sends until it leaves.
    Inject,
}

const QUEUED: &str = "250 2.0.0 Ok: queued as TLS1";

/// A plaintext SMTP session (offering STARTTLS or not) up to QUIT or the
/// STARTTLS scenario's end; the transcript holds the client's command lines
/// and `<...>` notes.
fn smtp_session(conn: &mut Conn, offer_starttls: bool, on_starttls: OnStartTls) -> Vec<String> {
    let mut transcript = Vec::new();
    conn.reply("220 scripted.test ESMTP");
    for _ in 0..100 {
        let Some(line) = conn.read_line().ok() else {
            transcript.push("<EOF>".into());
            return transcript;
        };
        transcript.push(line.clone());
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                let starttls = if offer_starttls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                conn.send(
                    format!("250-scripted.test\r\n250-PIPELINING\r\n{starttls}250 ENHANCEDSTATUSCODES\r\n")
                        .as_bytes(),
                );
            }
            "STARTTLS" => match on_starttls {
                OnStartTls::Refuse(reply) => conn.reply(reply),
                OnStartTls::Junk => {
                    conn.reply("220 go ahead");
                    match conn.read_byte() {
                        Ok(0x16) => transcript.push("<ClientHello>".into()),
                        other => transcript.push(format!("<no ClientHello: {other:?}>")),
                    }
                    conn.send(b"this is not TLS\r\n");
                    let (_, end) = conn.read_rest(Duration::from_secs(2));
                    transcript.push(format!("<{end}>"));
                    return transcript;
                }
                OnStartTls::Inject => {
                    conn.send(b"220 go ahead\r\n250 injected\r\n");
                    let (bytes, end) = conn.read_rest(READ_LIMIT);
                    transcript.push(format!("<{} bytes, then {end}>", bytes.len()));
                    return transcript;
                }
            },
            "MAIL" => conn.reply("250 2.1.0 Ok"),
            "RCPT" => conn.reply("250 2.1.5 Ok"),
            "DATA" => {
                conn.reply("354 End data with <CR><LF>.<CR><LF>");
                let mut complete = false;
                for _ in 0..10_000 {
                    match conn.read_line().ok() {
                        Some(body) if body == "." => {
                            complete = true;
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                if !complete {
                    transcript.push("<EOF in DATA>".into());
                    return transcript;
                }
                transcript.push(".".into());
                conn.reply(QUEUED);
            }
            "QUIT" => {
                conn.reply("221 2.0.0 Bye");
                return transcript;
            }
            _ => conn.reply("502 5.5.2 Error: command not recognized"),
        }
    }
    transcript
}

fn lines(list: &[&str]) -> Vec<String> {
    list.iter().map(|l| l.to_string()).collect()
}

/// EHLO, then this, then a whole plaintext transaction.
fn plaintext_after(between: &[&str]) -> Vec<String> {
    let mut all = vec![ehlo()];
    all.extend(lines(between));
    all.extend(lines(&[
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<b@y.test>",
        "DATA",
        ".",
        "QUIT",
    ]));
    all
}

#[test]
fn broken_handshake_defers_young_mail_and_retries_old_mail_in_plaintext() {
    let junk_then_plain = |index: usize, conn: &mut Conn| {
        if index == 0 {
            smtp_session(conn, true, OnStartTls::Junk)
        } else {
            // Offers STARTTLS again: the retry must not use it.
            smtp_session(
                conn,
                true,
                OnStartTls::Refuse("454 4.7.0 must not be asked"),
            )
        }
    };
    let broken = vec![
        ehlo(),
        "STARTTLS".into(),
        "<ClientHello>".into(),
        "<closed>".into(),
    ];

    // Level may, a message that just arrived: deferred, no retry.
    let server = Scripted::sequential(2, junk_then_plain);
    let run = send(&server.nexthop(), "", None);
    expect_deferred(
        &run,
        &server.relay(),
        "4.7.5",
        "Cannot start TLS: handshake failure",
    );
    assert_logged(
        &run,
        &format!(
            "TLS handshake with {}: Cannot start TLS: handshake failure: ",
            server.relay()
        ),
    );
    assert_not_logged(&run, "trying again without TLS");
    assert_eq!(server.finish_all(), vec![broken.clone()]);

    // Level may, a message younger than plaintext_retry_after (default
    // 300s): deferred, no retry.
    let server = Scripted::sequential(2, junk_then_plain);
    let run = send(&server.nexthop(), "", Some(Duration::from_secs(100)));
    expect_deferred(
        &run,
        &server.relay(),
        "4.7.5",
        "Cannot start TLS: handshake failure",
    );
    assert_eq!(server.finish_all(), vec![broken.clone()]);

    // Level may, a message an hour old: the same address again, in
    // plaintext, without STARTTLS.
    let server = Scripted::sequential(2, junk_then_plain);
    let run = send(&server.nexthop(), "", now_minus_one_hour());
    let tls = expect(&run, 0, "sent", "2.0.0", &server.relay(), QUEUED);
    assert_eq!(tls, Value::Null, "{run:#?}");
    assert_logged(
        &run,
        &format!(
            "{}: TLS handshake failed; trying again without TLS",
            server.relay()
        ),
    );
    assert_eq!(
        server.finish_all(),
        vec![broken.clone(), plaintext_after(&[])]
    );

    // Level encrypt, however old the message: deferred, no retry.
    let server = Scripted::sequential(2, junk_then_plain);
    let run = send(
        &server.nexthop(),
        "security_level = \"encrypt\"",
        now_minus_one_hour(),
    );
    expect_deferred(
        &run,
        &server.relay(),
        "4.7.5",
        "Cannot start TLS: handshake failure",
    );
    assert_not_logged(&run, "trying again without TLS");
    assert_eq!(server.finish_all(), vec![broken]);
}

#[test]
fn handshake_timeout_is_a_handshake_failure_within_starttls_timeout() {
    // 220 to STARTTLS, then silence: the handshake must give up after
    // starttls_timeout (1s here), not the 5s of the other timeouts.
    let server = Scripted::sequential(1, |_, conn: &mut Conn| {
        let mut transcript = Vec::new();
        conn.reply("220 scripted.test ESMTP");
        for _ in 0..3 {
            let Some(line) = conn.read_line().ok() else {
                break;
            };
            transcript.push(line.clone());
            if line.starts_with("EHLO") {
                conn.send(b"250-scripted.test\r\n250 STARTTLS\r\n");
            } else if line == "STARTTLS" {
                conn.reply("220 go ahead");
                let (bytes, end) = conn.read_rest(Duration::from_secs(4));
                transcript.push(format!("<{}, then {end}>", bytes.first() == Some(&0x16)));
                break;
            }
        }
        transcript
    });
    let run = send(
        &server.nexthop(),
        "security_level = \"encrypt\"\nstarttls_timeout = \"1s\"",
        None,
    );
    expect_deferred(
        &run,
        &server.relay(),
        "4.7.5",
        "Cannot start TLS: handshake failure",
    );
    assert_logged(&run, "Cannot start TLS: handshake failure: timed out");
    assert!(
        run.elapsed < Duration::from_secs(4),
        "took {:?}: {run:#?}",
        run.elapsed
    );
    assert_eq!(
        server.finish_all(),
        vec![vec![
            ehlo(),
            "STARTTLS".into(),
            "<true, then closed>".into()
        ]]
    );
}

#[test]
fn refused_starttls_continues_in_plaintext_at_may_and_defers_at_encrypt() {
    const REFUSAL: &str = "454 4.7.0 TLS not available due to local problem";
    let refusing =
        |_: usize, conn: &mut Conn| smtp_session(conn, true, OnStartTls::Refuse(REFUSAL));

    let server = Scripted::sequential(2, refusing);
    let run = send(&server.nexthop(), "security_level = \"may\"", None);
    let tls = expect(&run, 0, "sent", "2.0.0", &server.relay(), QUEUED);
    assert_eq!(tls, Value::Null, "{run:#?}");
    // The same connection, without a second EHLO.
    assert_eq!(server.finish_all(), vec![plaintext_after(&["STARTTLS"])]);

    let server = Scripted::sequential(2, refusing);
    let run = send(&server.nexthop(), "security_level = \"encrypt\"", None);
    let diagnostic = format!("TLS is required, but host {PEER} refused to start TLS: {REFUSAL}");
    expect_deferred(&run, &server.relay(), "4.7.0", &diagnostic);
    // The same in the text result line.
    Delivery::to(&server.nexthop())
        .raw_config(&format!(
            "{SMTP_TIMEOUTS}\n[tls]\nstarttls_timeout = \"5s\"\nsecurity_level = \"encrypt\"\n"
        ))
        .rcpt("b@y.test")
        .run()
        .expect(
            75,
            &[Line::deferred(
                "b@y.test",
                &server.relay(),
                "4.7.0",
                &diagnostic,
            )],
        );
    let once = lines(&[&ehlo(), "STARTTLS", "QUIT"]);
    assert_eq!(server.finish_all(), vec![once.clone(), once]);
}

#[test]
fn server_without_starttls_defers_at_encrypt_and_gets_plaintext_at_may() {
    let plain = |_: usize, conn: &mut Conn| smtp_session(conn, false, OnStartTls::Junk);

    let server = Scripted::sequential(2, plain);
    let run = send(&server.nexthop(), "security_level = \"encrypt\"", None);
    expect_deferred(
        &run,
        &server.relay(),
        "4.7.4",
        &format!("TLS is required, but was not offered by host {PEER}"),
    );
    assert_eq!(server.finish_all(), vec![lines(&[&ehlo(), "QUIT"])]);

    let server = Scripted::sequential(2, plain);
    let run = send(&server.nexthop(), "security_level = \"may\"", None);
    let tls = expect(&run, 0, "sent", "2.0.0", &server.relay(), QUEUED);
    assert_eq!(tls, Value::Null, "{run:#?}");
    assert_eq!(server.finish_all(), vec![plaintext_after(&[])]);
}

#[test]
fn data_after_the_starttls_reply_is_response_injection() {
    let server = Scripted::sequential(2, |_, conn: &mut Conn| {
        smtp_session(conn, true, OnStartTls::Inject)
    });
    let run = send(&server.nexthop(), "", None);
    expect_deferred(
        &run,
        &server.relay(),
        "4.7.5",
        "Cannot start TLS: unexpected data after the STARTTLS reply",
    );
    assert_logged(
        &run,
        "14 bytes received after the STARTTLS reply and before the TLS handshake: possible response injection",
    );
    // Nothing more was sent: no ClientHello, no command, no retry.
    assert_eq!(
        server.finish_all(),
        vec![lines(&[&ehlo(), "STARTTLS", "<0 bytes, then closed>"])]
    );
}

/// A good entry first, so that the bad one is the second array element.
const GOOD_ENTRY: &str = "[tls]\nsecurity_level = \"may\"\n\n[[tls.policy]]\ndestination = \"a.test\"\nlevel = \"encrypt\"\n\n";

#[test]
fn bad_tls_policy_entries_fail_config_check_with_exit_78() {
    let cases = [
        (
            "[[tls.policy]]\ndestination = \"[127.0.0.1]:25\"\nlevel = \"bogus\"\n",
            "line 8: tls.policy: level: invalid value \"bogus\", expected one of none, may, \
             encrypt, fingerprint, verify, secure, dane, dane-only",
        ),
        (
            "[[tls.policy]]\ndestination = \"example.test\"\nlevel = \"fingerprint\"\n",
            "line 8: tls.policy: level \"fingerprint\" needs a fingerprints list",
        ),
        (
            "[[tls.policy]]\ndestination = \"example.test\"\nlevel = \"verify\"\nmatch = [\"bad name!\"]\n",
            "line 8: tls.policy: match: invalid value \"bad name!\", expected \"hostname\", \
             \"nexthop\", \"dot-nexthop\" or a domain name",
        ),
    ];
    for (entry, message) in cases {
        let work = Workdir::new();
        let path = work.file("mailhop.toml", format!("{GOOD_ENTRY}{entry}").as_bytes());
        let run = run_mailhop(
            &work,
            &["config".into(), "check".into(), path.clone().into()],
            None,
        );
        assert_eq!(run.code, 78, "{entry:?}: {run:#?}");
        assert_eq!(run.stdout, "", "{run:#?}");
        assert_eq!(
            run.stderr,
            format!("mailhop: {}: {message}\n", path.display()),
            "{run:#?}"
        );
    }

    // The same file refuses a delivery before any connection.
    let server = Scripted::sequential(1, |_, conn: &mut Conn| {
        smtp_session(conn, true, OnStartTls::Junk)
    });
    let work = Workdir::new();
    let config = work.file(
        "mailhop.toml",
        format!(
            "{GOOD_ENTRY}[[tls.policy]]\ndestination = \"[127.0.0.1]:25\"\nlevel = \"bogus\"\n"
        )
        .as_bytes(),
    );
    let message = work.file("message", common::SMALL_MESSAGE);
    let run = run_mailhop(
        &work,
        &[
            "send".into(),
            "--config".into(),
            config.into(),
            "--direct".into(),
            "--nexthop".into(),
            server.nexthop().into(),
            "--from".into(),
            "a@x.test".into(),
            "--to".into(),
            "b@y.test".into(),
            message.into(),
        ],
        None,
    );
    assert_eq!(run.code, 78, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    assert!(run.stderr.contains("tls.policy"), "{run:#?}");
    assert!(
        server.finish_all().is_empty(),
        "connected with a bad configuration"
    );
}

#[test]
fn policy_entry_unusable_at_delivery_skips_the_address_with_4_7_5() {
    // A 20-byte fingerprint for the sha256 digest cannot apply: `config
    // check` reports the entry (exit 78), and a delivery that uses the file
    // anyway skips the address with a warning and 4.7.5, as Postfix does.
    let server = Scripted::sequential(1, |_, conn: &mut Conn| {
        smtp_session(conn, true, OnStartTls::Junk)
    });
    let nexthop = server.nexthop();
    let sha1_sized = "AB:CD:EF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00";
    let tls = format!(
        "[[tls.policy]]\ndestination = \"{nexthop}\"\nlevel = \"fingerprint\"\nfingerprints = [\"{sha1_sized}\"]\n"
    );
    let work = Workdir::new();
    let path = work.file("mailhop.toml", format!("[tls]\n{tls}").as_bytes());
    let check = run_mailhop(&work, &["config".into(), "check".into(), path.into()], None);
    assert_eq!(check.code, 78, "{check:#?}");
    assert!(
        check.stderr.contains("tls.policy[0]")
            && check.stderr.contains("cannot be a sha256 digest"),
        "{check:#?}"
    );

    let run = send(&nexthop, &tls, None);
    let result = outcome(&run, 75);
    assert_eq!(
        (
            &result["status"],
            &result["dsn"],
            &result["relay"],
            &result["diagnostic"],
            &result["tls"]
        ),
        (
            &Value::from("deferred"),
            &Value::from("4.7.5"),
            &Value::Null,
            &Value::from("client TLS configuration problem"),
            &Value::Null
        ),
        "{run:#?}"
    );
    assert_logged(
        &run,
        &format!(
            "warning: TLS policy lookup for {nexthop}: TLS policy entry for \"{nexthop}\": \
             a fingerprint of 20 bytes cannot be a sha256 digest (32 bytes)"
        ),
    );
    assert!(
        server.finish_all().is_empty(),
        "connected despite the bad entry"
    );
}

// ---------------------------------------------------------------------------
// A scripted server that really speaks TLS (with the test PKI)
// ---------------------------------------------------------------------------

/// Reads one CRLF line from a TLS stream (byte by byte; bounded).
fn tls_line(stream: &mut openssl::ssl::SslStream<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match stream.read(&mut byte) {
            Ok(1) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    let text = String::from_utf8_lossy(&line);
                    return Some(text.trim_end_matches(['\r', '\n']).to_string());
                }
            }
            _ => return None,
        }
    }
    None
}

/// STARTTLS offered and accepted, a real TLS session with the PKI's
/// server certificate, EHLO answered inside it (without PIPELINING), and
/// then the connection dropped when MAIL FROM arrives: a TLS session
/// failure after a completed handshake.
fn tls_then_drop_at_mail(cert: &Path, key: &Path, conn: &mut Conn) -> Vec<String> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut transcript = Vec::new();
    conn.reply("220 scripted.test ESMTP");
    for _ in 0..3 {
        let Some(line) = conn.read_line().ok() else {
            transcript.push("<EOF>".into());
            return transcript;
        };
        transcript.push(line.clone());
        if line.starts_with("EHLO") {
            conn.send(b"250-scripted.test\r\n250 STARTTLS\r\n");
        } else if line == "STARTTLS" {
            break;
        }
    }
    conn.reply("220 2.0.0 Ready to start TLS");
    let mut acceptor =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("TLS acceptor");
    acceptor
        .set_certificate_chain_file(cert)
        .expect("server certificate");
    acceptor
        .set_private_key_file(key, SslFiletype::PEM)
        .expect("server key");
    let acceptor = acceptor.build();
    // The client waited for the 220, so nothing is buffered in the reader.
    let stream = conn.stream().try_clone().expect("clone the connection");
    let mut tls = match acceptor.accept(stream) {
        Ok(tls) => tls,
        Err(e) => {
            transcript.push(format!("<handshake failed: {e}>"));
            return transcript;
        }
    };
    transcript.push("<TLS>".into());
    for _ in 0..3 {
        let Some(line) = tls_line(&mut tls) else {
            transcript.push("<EOF>".into());
            return transcript;
        };
        transcript.push(line.clone());
        if line.starts_with("EHLO") {
            let _ = tls.write_all(b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n");
        } else {
            // MAIL FROM: hang up without a word.
            let _ = tls.get_ref().shutdown(std::net::Shutdown::Both);
            transcript.push("<dropped>".into());
            return transcript;
        }
    }
    transcript
}

/// A server whose first connection is [`tls_then_drop_at_mail`] and whose
/// second is plaintext SMTP offering STARTTLS (refused if asked). The PKI
/// must outlive the server.
fn tls_session_then_drop(pki: &Pki) -> Scripted {
    let (cert, key) = (pki.server_pem(), pki.server_key());
    Scripted::sequential(2, move |index, conn: &mut Conn| {
        if index == 0 {
            tls_then_drop_at_mail(&cert, &key, conn)
        } else {
            smtp_session(
                conn,
                true,
                OnStartTls::Refuse("454 4.7.0 must not be asked"),
            )
        }
    })
}

fn dropped_in_tls() -> Vec<String> {
    lines(&[
        &ehlo(),
        "STARTTLS",
        "<TLS>",
        &ehlo(),
        "MAIL FROM:<a@x.test>",
        "<dropped>",
    ])
}

#[test]
fn tls_session_lost_after_the_handshake_defers_young_mail() {
    let pki = Pki::generate();
    let server = tls_session_then_drop(&pki);
    let run = send(&server.nexthop(), "", None);
    let tls = expect(
        &run,
        75,
        "deferred",
        "4.4.2",
        &server.relay(),
        &format!("lost connection with {PEER} while sending MAIL FROM"),
    );
    assert_eq!(tls["trust"], "untrusted", "{run:#?}");
    assert_not_logged(&run, "trying again without TLS");
    assert_eq!(server.finish_all(), vec![dropped_in_tls()]);
}

/// Postfix (smtp_trouble.c, smtp_stream_except): a lost connection or a
/// timeout inside an established TLS session at level may, with recipients
/// left and the message at least minimal_backoff_time old, retries the same
/// server in plaintext (PLAINTEXT_FALLBACK_OK_AFTER_TLS_SESSION_FAILURE),
/// as after a failed handshake.
#[test]
fn tls_session_lost_after_the_handshake_retries_old_mail_in_plaintext() {
    let pki = Pki::generate();
    let server = tls_session_then_drop(&pki);
    let run = send(&server.nexthop(), "", now_minus_one_hour());
    let tls = expect(&run, 0, "sent", "2.0.0", &server.relay(), QUEUED);
    assert_eq!(tls, Value::Null, "{run:#?}");
    assert_logged(
        &run,
        &format!(
            "{}: TLS handshake failed; trying again without TLS",
            server.relay()
        ),
    );
    assert_eq!(
        server.finish_all(),
        vec![dropped_in_tls(), plaintext_after(&[])]
    );
}

// ---------------------------------------------------------------------------
// Broken-TLS memory ([tls] broken_tls_memory), in a daemon
// ---------------------------------------------------------------------------

/// A daemon with one worker, no connection cache and this
/// `broken_tls_memory`.
fn tls_daemon(broken_tls_memory: &str, extra_tls: &str) -> common::daemon::Daemon {
    let work = Workdir::new();
    let text = format!(
        "{SMTP_TIMEOUTS}\n[tls]\nstarttls_timeout = \"5s\"\nbroken_tls_memory = {broken_tls_memory:?}\n{extra_tls}\n\
         [cache]\non_demand = false\n\n[daemon]\nsocket = {:?}\nworkers = 1\n",
        work.path().join("m.sock").display().to_string()
    );
    common::daemon::Daemon::start_text(&work, &text, Duration::from_secs(30)).owning(work)
}

/// A job to `nexthop` that arrived `age` ago.
fn aged_job(id: &str, nexthop: &str, age: Duration) -> Value {
    let mut job = common::jobs::inline_job(id, nexthop, "Subject: t\r\n\r\nhello\r\n");
    let arrival = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .saturating_sub(age)
        .as_secs();
    job["arrival_time"] = arrival.into();
    job
}

/// The daemon's status reply's `tls` object.
fn tls_status(daemon: &common::daemon::Daemon) -> Value {
    let mut client = daemon.client();
    client.send(r#"{"command":"status"}"#);
    client.answer()["tls"].clone()
}

fn job_status(answer: &Value) -> String {
    answer["recipients"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A scripted server whose connections break the handshake (`true`) or
/// take a plaintext transaction, refusing STARTTLS if asked (`false`).
fn broken_or_plain(plan: Vec<bool>) -> Scripted {
    let max = plan.len();
    Scripted::sequential(max, move |index, conn| {
        if plan.get(index).copied().unwrap_or(false) {
            smtp_session(conn, true, OnStartTls::Junk)
        } else {
            smtp_session(
                conn,
                true,
                OnStartTls::Refuse("454 4.7.0 must not be asked"),
            )
        }
    })
}

fn broken_transcript() -> Vec<String> {
    vec![
        ehlo(),
        "STARTTLS".into(),
        "<ClientHello>".into(),
        "<closed>".into(),
    ]
}

#[test]
fn broken_tls_memory_sends_old_mail_in_plaintext_without_starttls_across_a_reload() {
    let hour = Duration::from_secs(3600);
    let server = broken_or_plain(vec![true, false, false, false, true]);
    let daemon = tls_daemon("1h", "");
    let nexthop = server.nexthop();
    // 1. Old mail: the handshake fails, the plaintext retry sends it, and
    //    the server is remembered.
    let first = daemon.submit(&[aged_job("J1", &nexthop, hour)]);
    assert_eq!(job_status(&first[0]), "sent", "{first:?}");
    daemon.wait_log("remembering the server for 3600s ([tls] broken_tls_memory)");
    // 2. Old mail: plaintext at once, no STARTTLS.
    let second = daemon.submit(&[aged_job("J2", &nexthop, hour)]);
    assert_eq!(job_status(&second[0]), "sent", "{second:?}");
    daemon.wait_log("sending in plaintext without STARTTLS ([tls] broken_tls_memory)");
    // The memory outlives a reload.
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_log("reload: configuration reloaded");
    let again = daemon.submit(&[aged_job("J2b", &nexthop, hour)]);
    assert_eq!(job_status(&again[0]), "sent", "{again:?}");
    // 3. Young mail still tries TLS (and is deferred).
    let third = daemon.submit(&[aged_job("J3", &nexthop, Duration::from_secs(10))]);
    assert_eq!(job_status(&third[0]), "deferred", "{third:?}");
    assert_eq!(third[0]["recipients"][0]["dsn"], "4.7.5", "{third:?}");
    let tls = tls_status(&daemon);
    assert_eq!(tls["broken_servers"], 1, "{tls}");
    assert_eq!(tls["skipped_handshakes"], 2, "{tls}");
    assert_eq!(tls["new_sessions"], 0, "{tls}");
    drop(daemon);
    assert_eq!(
        server.finish_all(),
        vec![
            broken_transcript(),
            plaintext_after(&[]),
            plaintext_after(&[]),
            plaintext_after(&[]),
            broken_transcript(),
        ]
    );
}

#[test]
fn broken_tls_memory_0s_tries_the_handshake_every_time() {
    let hour = Duration::from_secs(3600);
    let server = broken_or_plain(vec![true, false, true, false]);
    let daemon = tls_daemon("0s", "");
    let nexthop = server.nexthop();
    for id in ["J1", "J2"] {
        let answer = daemon.submit(&[aged_job(id, &nexthop, hour)]);
        assert_eq!(job_status(&answer[0]), "sent", "{answer:?}");
    }
    let log = daemon.log();
    assert!(!log.contains("broken_tls_memory"), "{log}");
    let tls = tls_status(&daemon);
    assert_eq!(tls["broken_servers"], 0, "{tls}");
    assert_eq!(tls["skipped_handshakes"], 0, "{tls}");
    drop(daemon);
    assert_eq!(
        server.finish_all(),
        vec![
            broken_transcript(),
            plaintext_after(&[]),
            broken_transcript(),
            plaintext_after(&[]),
        ]
    );
}

// ---------------------------------------------------------------------------
// Session resumption ([tls] session_cache_timeout) against Postfix
// ---------------------------------------------------------------------------

/// The daemon delivers twice to Postfix's STARTTLS and SMTPS services,
/// each delivery on a new connection: the second resumes the first's
/// session (Postfix's smtpd issues TLS 1.3 tickets with its default
/// smtpd_tls_session_cache_timeout, keys from tlsmgr); with
/// `session_cache_timeout = "0s"` nothing is resumed.
#[test]
fn postfix_second_delivery_resumes_the_tls_session() {
    let Some((_pki, pf)) = postfix() else {
        return;
    };
    let mut before_starttls = 0;
    for (timeout, resumed) in [("1h", true), ("0s", false)] {
        for service in [Service::StartTls, Service::Smtps] {
            let wrapper = match service {
                Service::Smtps => "security_level = \"encrypt\"\nwrappermode = true\n",
                _ => "",
            };
            let daemon = tls_daemon(
                "1h",
                &format!("session_cache_timeout = {timeout:?}\n{wrapper}"),
            );
            for n in 0..2 {
                let id = format!("{service:?}{n}");
                let job = aged_job(&id, &pf.nexthop(service), Duration::ZERO);
                let answer = daemon.submit(&[job]);
                assert_eq!(
                    job_status(&answer[0]),
                    "sent",
                    "{answer:?}\n{}",
                    daemon.log()
                );
            }
            let log = daemon.log();
            let tls = tls_status(&daemon);
            let established = format!("TLS connection established to {}: ", pf.relay(service));
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&established)).collect();
            assert_eq!(lines.len(), 2, "{service:?}: {log}");
            assert!(!lines[0].ends_with("(session resumed)"), "{log}");
            assert_eq!(
                lines[1].ends_with("(session resumed)"),
                resumed,
                "{service:?} {timeout}: {tls} {log}\nPOSTFIX {}",
                pf.maillog()
            );
            let resumed = u64::from(resumed);
            assert_eq!(tls["resumed_sessions"], resumed, "{tls}");
            assert_eq!(tls["new_sessions"], 2 - resumed, "{tls}");
            drop(daemon);
        }
        // Postfix took every STARTTLS message over TLS.
        let sessions = pf.wait_sessions(Service::StartTls, before_starttls + 2);
        assert!(
            sessions[before_starttls..]
                .iter()
                .all(|s| s.tls_line().is_some() && s.queue_id().is_some()),
            "{sessions:#?}"
        );
        before_starttls += 2;
    }
}
