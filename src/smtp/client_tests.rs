//! SASL AUTH in the client state machine, with scripted replies.

use super::*;
use crate::sasl::{ClientAuth, Credential, SecurityOptions};
use crate::smtp::reply::ReplyParser;

fn reply(text: &str) -> Reply {
    let mut parser = ReplyParser::new(2048);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(reply) = parser.push_line(line.as_bytes()) {
            return reply;
        }
    }
    panic!("incomplete scripted reply {text:?}");
}

fn auth(options: &[&str], tls_options: &[&str], filter: &[&str]) -> ClientAuth {
    ClientAuth {
        credential: Credential {
            username: "user".into(),
            password: "pencil".into(),
        },
        filter: filter.iter().map(|s| s.to_string()).collect(),
        options: SecurityOptions::parse(options).unwrap(),
        tls_options: SecurityOptions::parse(tls_options).unwrap(),
        tls_verified_options: SecurityOptions::parse(tls_options).unwrap(),
        soft_bounce: true,
        nonce: "rOprNGfwEbeRWgbNEkqO".into(),
    }
}

fn client(sasl: Option<ClientAuth>, tls: TlsMode) -> Client {
    let settings = ClientSettings {
        tls_authenticated: false,
        lmtp: false,
        helo_name: "client.test".into(),
        skip_5xx_greeting: true,
        peer: "mx.test[127.0.0.1]".into(),
        smtputf8_enable: true,
        loop_check: None,
        tls,
        strict_reply_syntax: true,
        mime_conversion: None,
        sasl,
    };
    let envelope = Envelope {
        sender: "s@x.test".into(),
        recipients: vec![Recipient {
            address: "r@y.test".into(),
            orcpt: None,
            notify: Notify::default(),
        }],
        envid: None,
        ret: None,
        smtputf8: false,
        requiretls: false,
    };
    Client::new(settings, envelope, MessageFacts::default())
}

/// Runs the client against `replies` (one per Receive); returns the lines
/// it sent ("<TLS>" for the handshake, "<BODY>" for the message).
fn run(client: &mut Client, replies: &[&str]) -> Vec<String> {
    let mut replies = replies.iter();
    let mut sent = Vec::new();
    for _ in 0..200 {
        match client.next_action() {
            Action::Send { bytes, .. } => {
                let text = String::from_utf8(bytes).unwrap();
                sent.extend(text.split_terminator("\r\n").map(str::to_string));
            }
            Action::SendBody => {
                sent.push("<BODY>".into());
                client.body_sent();
            }
            Action::StartTls => {
                sent.push("<TLS>".into());
                client.tls_started();
            }
            Action::Receive(_) => match replies.next() {
                Some(text) => client.on_reply(reply(text)),
                None => break,
            },
            Action::Idle => client.quit(),
            Action::Close => break,
        }
    }
    sent
}

fn failure(client: &Client) -> Dsn {
    match client.results().first() {
        Some(Some(RcptResult::Failed(dsn))) => dsn.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

const EHLO_AUTH: &str = "250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n";
const DELIVERY: [&str; 4] = ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 go", "250 2.0.0 queued"];

#[test]
fn plain_over_plaintext_when_the_options_allow_it() {
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    let mut script = vec![
        "220 mx.test",
        EHLO_AUTH,
        "235 2.7.0 Authentication successful",
    ];
    script.extend(DELIVERY);
    let sent = run(&mut c, &script);
    assert_eq!(sent[1], "AUTH PLAIN AHVzZXIAcGVuY2ls");
    assert_eq!(sent[2], "MAIL FROM:<s@x.test> BODY=7BIT");
    assert_eq!(c.authenticated(), Some("PLAIN"));
    assert!(matches!(c.results()[0], Some(RcptResult::Delivered(_))));
    assert!(c.handshake_done());
}

#[test]
fn no_auth_without_credential_or_without_auth_in_ehlo() {
    let mut c = client(None, TlsMode::Off);
    let mut script = vec!["220 mx.test", EHLO_AUTH];
    script.extend(DELIVERY);
    let sent = run(&mut c, &script);
    assert!(sent[1].starts_with("MAIL FROM"), "{sent:?}");
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    let mut script = vec!["220 mx.test", "250 mx.test"];
    script.extend(DELIVERY);
    let sent = run(&mut c, &script);
    assert!(sent[1].starts_with("MAIL FROM"), "{sent:?}");
    assert_eq!(c.authenticated(), None);
}

#[test]
fn default_options_leave_no_mechanism_in_plaintext() {
    let mut c = client(
        Some(auth(&["noplaintext", "noanonymous"], &["noanonymous"], &[])),
        TlsMode::Off,
    );
    let sent = run(&mut c, &["220 mx.test", EHLO_AUTH, "221 bye"]);
    assert_eq!(sent, ["EHLO client.test", "QUIT"]);
    let dsn = failure(&c);
    assert_eq!(dsn.code.to_string(), "4.7.0");
    assert_eq!(
        dsn.text,
        "SASL authentication failed; cannot authenticate to server mx.test[127.0.0.1]: no mechanism available"
    );
    assert!(!c.handshake_done());
}

#[test]
fn tls_options_apply_after_starttls() {
    let mut c = client(
        Some(auth(&["noplaintext", "noanonymous"], &["noanonymous"], &[])),
        TlsMode::Opportunistic,
    );
    let mut script = vec![
        "220 mx.test",
        "250-mx.test\r\n250 STARTTLS\r\n",
        "220 go ahead",
        EHLO_AUTH,
        "235 2.7.0 ok",
    ];
    script.extend(DELIVERY);
    let sent = run(&mut c, &script);
    assert_eq!(
        &sent[..4],
        ["EHLO client.test", "STARTTLS", "<TLS>", "EHLO client.test"]
    );
    assert!(sent[4].starts_with("AUTH PLAIN "), "{sent:?}");
    assert_eq!(c.authenticated(), Some("PLAIN"));
}

#[test]
fn filter_that_leaves_nothing_is_postfixs_no_compatible_mechanisms() {
    let mut c = client(Some(auth(&[], &[], &["CRAM-MD5"])), TlsMode::Off);
    run(&mut c, &["220 mx.test", EHLO_AUTH, "221 bye"]);
    let dsn = failure(&c);
    assert_eq!(dsn.code.to_string(), "4.7.0");
    assert_eq!(
        dsn.text,
        "SASL authentication failed: server mx.test[127.0.0.1] offered no compatible \
         authentication mechanisms for this type of connection security"
    );
}

#[test]
fn login_answers_two_challenges() {
    let mut c = client(Some(auth(&[], &[], &["login"])), TlsMode::Off);
    let mut script = vec![
        "220 mx.test",
        EHLO_AUTH,
        "334 VXNlcm5hbWU6",
        "334 UGFzc3dvcmQ6",
        "235 2.7.0 ok",
    ];
    script.extend(DELIVERY);
    let sent = run(&mut c, &script);
    assert_eq!(&sent[1..4], ["AUTH LOGIN", "dXNlcg==", "cGVuY2ls"]);
    assert_eq!(c.authenticated(), Some("LOGIN"));
}

#[test]
fn wrong_password_is_soft_bounced_with_the_servers_words() {
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    let sent = run(
        &mut c,
        &[
            "220 mx.test",
            EHLO_AUTH,
            "535 5.7.8 Error: authentication failed: bad",
            "221 bye",
        ],
    );
    assert_eq!(sent.last().map(String::as_str), Some("QUIT"));
    let dsn = failure(&c);
    assert_eq!(dsn.code.to_string(), "4.7.8");
    assert_eq!(
        dsn.text,
        "SASL authentication failed; server mx.test[127.0.0.1] said: 535 5.7.8 Error: authentication failed: bad"
    );
    let mut hard = auth(&[], &[], &[]);
    hard.soft_bounce = false;
    let mut c = client(Some(hard), TlsMode::Off);
    run(
        &mut c,
        &[
            "220 mx.test",
            EHLO_AUTH,
            "535 5.7.8 Error: authentication failed",
            "221 bye",
        ],
    );
    assert_eq!(failure(&c).code.to_string(), "5.7.8");
}

#[test]
fn scram_exchange_verifies_the_server() {
    let ehlo = "250-mx.test\r\n250 AUTH SCRAM-SHA-256 PLAIN\r\n";
    let server_first = crate::sasl::encode64(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    );
    let server_final = crate::sasl::encode64(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    let first = format!("334 {server_first}");
    let last = format!("334 {server_final}");
    let mut script = vec![
        "220 mx.test",
        ehlo,
        first.as_str(),
        last.as_str(),
        "235 2.7.0 ok",
    ];
    script.extend(DELIVERY);
    let mut c = client(Some(auth(&["noplaintext"], &[], &[])), TlsMode::Off);
    let sent = run(&mut c, &script);
    assert_eq!(
        sent[1],
        format!(
            "AUTH SCRAM-SHA-256 {}",
            crate::sasl::encode64(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        )
    );
    assert_eq!(sent[3], "", "empty response to the server-final message");
    assert_eq!(c.authenticated(), Some("SCRAM-SHA-256"));
}

#[test]
fn forged_scram_server_is_cancelled() {
    let ehlo = "250-mx.test\r\n250 AUTH SCRAM-SHA-256\r\n";
    let server_first = crate::sasl::encode64(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    );
    let forged = crate::sasl::encode64(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    let first = format!("334 {server_first}");
    let last = format!("334 {forged}");
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    let sent = run(
        &mut c,
        &[
            "220 mx.test",
            ehlo,
            first.as_str(),
            last.as_str(),
            "501 5.7.0 cancelled",
            "221 bye",
        ],
    );
    assert_eq!(&sent[sent.len() - 2..], ["*", "QUIT"]);
    let dsn = failure(&c);
    assert_eq!(dsn.code.to_string(), "4.7.0");
    assert!(
        dsn.text
            .ends_with("SCRAM-SHA-256 server signature mismatch"),
        "{}",
        dsn.text
    );
    // A 235 before the server's signature was seen is no success either.
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    run(
        &mut c,
        &[
            "220 mx.test",
            ehlo,
            first.as_str(),
            "235 2.7.0 ok",
            "221 bye",
        ],
    );
    assert!(
        failure(&c)
            .text
            .contains("without a verified SCRAM server signature")
    );
}

#[test]
fn garbage_and_unexpected_challenges_fail_the_exchange() {
    let mut c = client(Some(auth(&[], &[], &["LOGIN"])), TlsMode::Off);
    run(
        &mut c,
        &[
            "220 mx.test",
            EHLO_AUTH,
            "334 !!!!",
            "501 cancelled",
            "221 bye",
        ],
    );
    assert!(
        failure(&c).text.contains("not base64"),
        "{}",
        failure(&c).text
    );
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    let mut script = vec!["220 mx.test", EHLO_AUTH];
    script.extend(std::iter::repeat_n("334 ", 150));
    run(&mut c, &script);
    let dsn = failure(&c);
    assert_eq!(dsn.code.to_string(), "4.7.0", "{}", dsn.text);
}

#[test]
fn connection_lost_during_auth_names_the_ehlo_handshake() {
    // A connection lost while waiting for the AUTH reply names the EHLO
    // handshake, as Postfix does.
    let mut c = client(Some(auth(&[], &[], &[])), TlsMode::Off);
    run(&mut c, &["220 mx.test", EHLO_AUTH]);
    c.on_io_failure(IoFailure::Lost);
    let dsn = failure(&c);
    assert_eq!(
        dsn.text,
        "lost connection with mx.test[127.0.0.1] while performing the EHLO handshake"
    );
}

#[test]
fn lmtp_authenticates_after_lhlo() {
    let mut c = client(Some(auth(&[], &[], &["PLAIN"])), TlsMode::Off);
    c.settings.lmtp = true;
    let sent = run(&mut c, &["220 lmtp.test", EHLO_AUTH]);
    assert_eq!(sent, ["LHLO client.test", "AUTH PLAIN AHVzZXIAcGVuY2ls"]);
    c.on_io_failure(IoFailure::Timeout);
    assert_eq!(
        failure(&c).text,
        "conversation with mx.test[127.0.0.1] timed out while performing the LHLO handshake"
    );
}

#[test]
fn long_initial_response_waits_for_an_empty_challenge() {
    let mut long = auth(&[], &[], &["PLAIN"]);
    long.credential.password = "p".repeat(400);
    let mut c = client(Some(long.clone()), TlsMode::Off);
    let mut script = vec!["220 mx.test", EHLO_AUTH, "334 ", "235 2.7.0 ok"];
    script.extend(DELIVERY);
    let sent = run(&mut c, &script);
    assert_eq!(sent[1], "AUTH PLAIN");
    assert_eq!(sent[2].len(), 4 * (406_usize).div_ceil(3));
    assert_eq!(c.authenticated(), Some("PLAIN"));
    // A non-empty challenge instead is a protocol error: cancelled.
    let mut c = client(Some(long), TlsMode::Off);
    let sent = run(
        &mut c,
        &[
            "220 mx.test",
            EHLO_AUTH,
            "334 Zm9v",
            "501 cancelled",
            "221 bye",
        ],
    );
    assert_eq!(&sent[sent.len() - 2..], ["*", "QUIT"]);
    assert!(
        failure(&c)
            .text
            .starts_with("SASL authentication failed; non-empty initial PLAIN challenge from server mx.test[127.0.0.1]: Zm9v"),
        "{}",
        failure(&c).text
    );
}
