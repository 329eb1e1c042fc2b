//! The session state machine driven through every step with scripted server
//! replies (in-memory transport), SMTP and LMTP, with and without PIPELINING.

use std::time::Duration;

use super::*;
use crate::smtp::client::{ClientSettings, Envelope, MessageFacts, RcptResult, Recipient, TlsMode};
use crate::smtp::command::{Notify, Ret};
use crate::transport::script::{Scripted, Step, say};

fn timeouts() -> Timeouts {
    let t = Duration::from_secs(1);
    Timeouts {
        connect: t,
        helo: t,
        mail: t,
        rcpt: t,
        data_init: t,
        data_xfer: t,
        data_done: t,
        quit: t,
        rset: t,
        starttls: t,
        per_request_deadline: false,
        min_data_rate: 500,
    }
}

struct Inline(&'static [u8]);

impl MessageSource for Inline {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0))
    }
}

struct Unreadable;

impl MessageSource for Unreadable {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Err(io::Error::from_raw_os_error(13))
    }
}

/// The session settings most tests use: peer mx.test[127.0.0.1], HELO
/// client.test, no TLS.
fn client_settings(lmtp: bool) -> ClientSettings {
    ClientSettings {
        tls_authenticated: false,
        lmtp,
        helo_name: "client.test".into(),
        skip_5xx_greeting: true,
        peer: "mx.test[127.0.0.1]".into(),
        smtputf8_enable: true,
        loop_check: None,
        tls: TlsMode::Off,
        strict_reply_syntax: true,
        mime_conversion: Some(crate::smtp::mime::MimeLimits::default()),
        sasl: None,
    }
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        requiretls: false,
        sender: "s@x.test".into(),
        recipients: rcpts
            .iter()
            .map(|a| Recipient {
                address: (*a).into(),
                orcpt: None,
                notify: Notify::default(),
            })
            .collect(),
        envid: None,
        ret: None,
        smtputf8: false,
    }
}

const EHLO_PIPE: &str = "250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
const EHLO_PLAIN: &str = "250-mx.test\r\n250 8BITMIME\r\n";
const BODY: &[u8] = b"Subject: t\n\n.hi\nbye";

struct Outcome {
    results: Vec<Option<RcptResult>>,
    written: String,
    handshake: bool,
    end: RunEnd,
    leftover_script: usize,
}

fn drive(
    lmtp: bool,
    env: Envelope,
    facts: MessageFacts,
    message: &dyn MessageSource,
    steps: Vec<Step>,
) -> Outcome {
    let settings = client_settings(lmtp);
    let mut client = Client::new(settings, env, facts);
    let mut conn = Connection::new(Scripted::new(steps), 2048);
    let mut end = run(&mut conn, &mut client, &timeouts(), message, 998);
    if end == RunEnd::Idle {
        close(&mut conn, &mut client, &timeouts());
        end = RunEnd::Idle;
    }
    let handshake = client.handshake_done();
    let transport = conn.into_inner();
    Outcome {
        results: client.into_results(),
        written: transport.written_text(),
        handshake,
        end,
        leftover_script: transport.steps.len(),
    }
}

fn smtp(rcpts: &[&str], steps: Vec<Step>) -> Outcome {
    drive(
        false,
        envelope(rcpts),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: BODY.len() as u64,
            has_8bit: false,
        },
        &Inline(BODY),
        steps,
    )
}

fn delivered(r: &Option<RcptResult>) -> Option<(String, String)> {
    match r {
        Some(RcptResult::Delivered(d)) => Some((d.code.to_string(), d.text.clone())),
        _ => None,
    }
}

fn failed(r: &Option<RcptResult>) -> Option<(String, String)> {
    match r {
        Some(RcptResult::Failed(d)) => Some((d.code.to_string(), d.text.clone())),
        _ => None,
    }
}

#[test]
fn pipelined_delivery_sends_one_batch_and_exact_bytes() {
    let out = smtp(
        &["a@y.test", "b@y.test"],
        vec![
            say("220 mx.test ESMTP\r\n"),
            say(EHLO_PIPE),
            say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
            say("250 2.0.0 Ok: queued as X\r\n"),
        ],
    );
    assert_eq!(
        out.written,
        "EHLO client.test\r\n\
         MAIL FROM:<s@x.test> BODY=7BIT\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n\
         Subject: t\r\n\r\n..hi\r\nbye\r\n.\r\nQUIT\r\n"
    );
    for r in &out.results {
        assert_eq!(
            delivered(r),
            Some(("2.0.0".into(), "250 2.0.0 Ok: queued as X".into()))
        );
    }
    assert!(out.handshake);
}

#[test]
fn lock_step_without_pipelining_waits_for_each_reply() {
    // If the client sent RCPT before reading MAIL's reply, the script (one
    // reply per read) would still pass, so check the interleaving through a
    // transport that fails a write made while a reply is unread.
    struct Strict {
        inner: Scripted,
        unread_replies: usize,
    }
    impl Read for Strict {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.unread_replies = self.unread_replies.saturating_sub(1);
            self.inner.read(buf)
        }
    }
    impl io::Write for Strict {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.unread_replies > 0 {
                return Err(io::Error::other("wrote before reading the reply"));
            }
            let commands = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "QUIT", "RSET"];
            self.unread_replies = buf
                .split(|&b| b == b'\n')
                .filter(|line| {
                    *line == b".\r" || commands.iter().any(|c| line.starts_with(c.as_bytes()))
                })
                .count();
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Transport for Strict {
        fn set_recv_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn set_send_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }
    let steps = vec![
        say("220 mx.test ESMTP\r\n"),
        say(EHLO_PLAIN),
        say("250 2.1.0 Ok\r\n"),
        say("250 2.1.5 Ok\r\n"),
        say("354 go\r\n"),
        say("250 2.0.0 Ok\r\n"),
    ];
    let settings = client_settings(false);
    let facts = MessageFacts {
        tls_required_no: false,
        utf8_header: false,
        size: 3,
        has_8bit: false,
    };
    let mut client = Client::new(settings, envelope(&["a@y.test"]), facts);
    let strict = Strict {
        inner: Scripted::new(steps),
        unread_replies: 1,
    };
    let mut conn = Connection::new(strict, 2048);
    assert_eq!(
        run(&mut conn, &mut client, &timeouts(), &Inline(b"hi\n"), 998),
        RunEnd::Idle
    );
    assert!(
        delivered(&client.results()[0]).is_some(),
        "{:?}",
        client.results()
    );
}

#[test]
fn lock_step_all_recipients_rejected_sends_no_data() {
    let out = smtp(
        &["a@y.test", "b@y.test"],
        vec![
            say("220 mx.test ESMTP\r\n"),
            say(EHLO_PLAIN),
            say("250 2.1.0 Ok\r\n"),
            say("550 5.1.1 <a@y.test>: no such user\r\n"),
            say("450 4.2.0 <b@y.test>: try later\r\n"),
        ],
    );
    assert!(!out.written.contains("DATA"), "{}", out.written);
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "5.1.1".into(),
            "host mx.test[127.0.0.1] said: 550 5.1.1 <a@y.test>: no such user (in reply to RCPT TO command)".into()
        ))
    );
    assert_eq!(failed(&out.results[1]).map(|f| f.0), Some("4.2.0".into()));
}

#[test]
fn mixed_recipient_replies_pipelined() {
    let out = smtp(
        &["ok@y.test", "hard@y.test", "soft@y.test"],
        vec![
            say("220 mx.test ESMTP\r\n"),
            say(EHLO_PIPE),
            say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n450 4.2.1 later\r\n354 go\r\n"),
            say("250 2.0.0 Ok\r\n"),
        ],
    );
    assert_eq!(
        delivered(&out.results[0]).map(|d| d.0),
        Some("2.0.0".into())
    );
    assert_eq!(failed(&out.results[1]).map(|d| d.0), Some("5.1.1".into()));
    assert_eq!(failed(&out.results[2]).map(|d| d.0), Some("4.2.1".into()));
}

#[test]
fn ehlo_rejected_falls_back_to_helo() {
    let out = smtp(
        &["a@y.test"],
        vec![
            say("220 old.test\r\n"),
            say("500 5.5.1 Command unrecognized\r\n"),
            say("250 old.test\r\n"),
            say("250 Ok\r\n"),
            say("250 Ok\r\n"),
            say("354 go\r\n"),
            say("250 Ok\r\n"),
        ],
    );
    assert!(
        out.written
            .starts_with("EHLO client.test\r\nHELO client.test\r\nMAIL FROM:<s@x.test>\r\n"),
        "{}",
        out.written
    );
    assert_eq!(
        delivered(&out.results[0]).map(|d| d.0),
        Some("2.0.0".into())
    );
}

#[test]
fn ehlo_421_does_not_try_helo() {
    let out = smtp(
        &["a@y.test"],
        vec![say("220 x\r\n"), say("421 4.3.2 shutting down\r\n")],
    );
    assert!(!out.written.contains("HELO"));
    assert!(!out.written.contains("QUIT"), "no QUIT after 421");
    assert_eq!(failed(&out.results[0]).map(|d| d.0), Some("4.3.2".into()));
}

#[test]
fn helo_hard_reject_is_hard() {
    let out = smtp(
        &["a@y.test"],
        vec![
            say("220 x\r\n"),
            say("500 5.3.0 no\r\n"),
            say("500 5.3.0 Error: command failed\r\n"),
        ],
    );
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "5.3.0".into(),
            "host mx.test[127.0.0.1] refused to talk to me: 500 5.3.0 Error: command failed".into()
        ))
    );
    assert!(!out.handshake);
}

#[test]
fn greeting_failures() {
    let soft = smtp(&["a@y.test"], vec![say("450 4.3.0 busy\r\n")]);
    assert_eq!(
        failed(&soft.results[0]),
        Some((
            "4.3.0".into(),
            "host mx.test[127.0.0.1] refused to talk to me: 450 4.3.0 busy".into()
        ))
    );
    assert!(soft.written.ends_with("QUIT\r\n"));
    // 5xx greeting counts as 4xx while skip_5xx_greeting.
    let hard = smtp(&["a@y.test"], vec![say("554 5.3.0 go away\r\n")]);
    assert_eq!(failed(&hard.results[0]).map(|d| d.0), Some("4.3.0".into()));
    let plain = smtp(&["a@y.test"], vec![say("554 go away\r\n")]);
    assert_eq!(failed(&plain.results[0]).map(|d| d.0), Some("4.0.0".into()));
}

#[test]
fn greeting_5xx_is_hard_without_skip() {
    let settings = ClientSettings {
        tls_authenticated: false,
        lmtp: false,
        helo_name: "c".into(),
        skip_5xx_greeting: false,
        peer: "h[a]".into(),
        smtputf8_enable: true,
        loop_check: None,
        tls: TlsMode::Off,
        strict_reply_syntax: true,
        mime_conversion: Some(crate::smtp::mime::MimeLimits::default()),
        sasl: None,
    };
    let mut client = Client::new(settings, envelope(&["a@y"]), MessageFacts::default());
    let mut conn = Connection::new(Scripted::new(vec![say("554 5.7.1 no\r\n")]), 2048);
    run(&mut conn, &mut client, &timeouts(), &Inline(b""), 998);
    assert_eq!(
        failed(&client.results()[0]).map(|d| d.0),
        Some("5.7.1".into())
    );
}

#[test]
fn mail_rejected_pipelined_consumes_all_replies() {
    let out = smtp(
        &["a@y.test", "b@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say(
                "553 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n",
            ),
        ],
    );
    for r in &out.results {
        assert_eq!(
            failed(r),
            Some((
                "5.7.1".into(),
                "host mx.test[127.0.0.1] said: 553 5.7.1 sender rejected (in reply to MAIL FROM command)".into()
            ))
        );
    }
    assert_eq!(out.leftover_script, 0);
    assert!(out.written.ends_with("DATA\r\nQUIT\r\n"), "{}", out.written);
}

#[test]
fn data_354_with_no_recipient_sends_a_lone_dot() {
    let out = smtp(
        &["a@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n550 5.1.1 no\r\n354 go\r\n"),
            say("554 5.5.1 no valid recipients\r\n"),
        ],
    );
    assert!(
        out.written.ends_with("DATA\r\n.\r\nQUIT\r\n"),
        "{}",
        out.written
    );
    assert_eq!(failed(&out.results[0]).map(|d| d.0), Some("5.1.1".into()));
}

#[test]
fn data_and_end_of_data_rejections() {
    let data = smtp(
        &["a@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n250 ok\r\n451 4.3.0 no data now\r\n"),
        ],
    );
    assert_eq!(
        failed(&data.results[0]).map(|d| d.1),
        Some(
            "host mx.test[127.0.0.1] said: 451 4.3.0 no data now (in reply to DATA command)".into()
        )
    );
    let dot = smtp(
        &["a@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("450 4.3.0 Error: command failed\r\n"),
        ],
    );
    assert_eq!(
        failed(&dot.results[0]),
        Some((
            "4.3.0".into(),
            "host mx.test[127.0.0.1] said: 450 4.3.0 Error: command failed (in reply to end of DATA command)".into()
        ))
    );
}

#[test]
fn reply_421_at_rcpt_fails_the_rest_with_server_text() {
    let out = smtp(
        &["a@y.test", "b@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PLAIN),
            say("250 ok\r\n"),
            say("421 4.0.0 Server closing connection\r\n"),
        ],
    );
    for r in &out.results {
        assert_eq!(
            failed(r),
            Some((
                "4.0.0".into(),
                "host mx.test[127.0.0.1] said: 421 4.0.0 Server closing connection (in reply to RCPT TO command)".into()
            ))
        );
    }
    assert!(!out.written.contains("QUIT"));
    assert_eq!(out.end, RunEnd::Closed);
}

#[test]
fn lmtp_gets_one_reply_per_recipient() {
    let out = drive(
        true,
        envelope(&["a@y.test", "b@y.test", "c@y.test", "d@y.test"]),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 3,
            has_8bit: false,
        },
        &Inline(b"hi\n"),
        vec![
            say("220 lmtp.test LMTP\r\n"),
            say("250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"),
            say("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 2.1.5 a ok\r\n452 4.2.2 b over quota\r\n550 5.2.1 d disabled\r\n"),
            say("221 bye\r\n"),
        ],
    );
    assert!(out.written.starts_with("LHLO client.test\r\n"));
    assert_eq!(
        delivered(&out.results[0]).map(|d| d.1),
        Some("250 2.1.5 a ok".into())
    );
    assert_eq!(failed(&out.results[1]).map(|d| d.0), Some("5.1.1".into()));
    assert_eq!(
        failed(&out.results[2]).map(|d| d.1),
        Some("host mx.test[127.0.0.1] said: 452 4.2.2 b over quota (in reply to end of DATA command)".into())
    );
    assert_eq!(failed(&out.results[3]).map(|d| d.0), Some("5.2.1".into()));
    assert!(out.written.ends_with("QUIT\r\n"));
    assert_eq!(out.leftover_script, 0, "LMTP waits for the QUIT reply");
}

#[test]
fn lmtp_lhlo_reject_is_a_site_failure() {
    let out = drive(
        true,
        envelope(&["a@y.test"]),
        MessageFacts::default(),
        &Inline(b""),
        vec![
            say("220 l\r\n"),
            say("500 5.5.1 no\r\n"),
            say("221 bye\r\n"),
        ],
    );
    assert!(!out.written.contains("HELO"));
    assert_eq!(failed(&out.results[0]).map(|d| d.0), Some("5.5.1".into()));
}

#[test]
fn size_limit_bounces_before_mail() {
    let out = drive(
        false,
        envelope(&["a@y.test"]),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 5000,
            has_8bit: false,
        },
        &Inline(b""),
        vec![say("220 x\r\n"), say("250-x\r\n250 SIZE 1000\r\n")],
    );
    assert!(!out.written.contains("MAIL"));
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "5.3.4".into(),
            "message size 5000 exceeds size limit 1000 of server mx.test[127.0.0.1]".into()
        ))
    );
}

#[test]
fn size_and_body_and_dsn_parameters_when_offered() {
    let mut env = envelope(&["a@y.test"]);
    env.envid = Some("Q1".into());
    env.ret = Some(Ret::Hdrs);
    env.recipients[0].notify = Notify {
        failure: true,
        delay: true,
        ..Default::default()
    };
    let ehlo = "250-x\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n250 DSN\r\n";
    let out = drive(
        false,
        env.clone(),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 42,
            has_8bit: true,
        },
        &Inline(b"x\n"),
        vec![
            say("220 x\r\n"),
            say(ehlo),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 ok\r\n"),
        ],
    );
    assert!(out.written.contains(
        "MAIL FROM:<s@x.test> SIZE=42 BODY=8BITMIME ENVID=Q1 RET=HDRS\r\nRCPT TO:<a@y.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@y.test\r\n"
    ), "{}", out.written);
    // Not offered: no parameters at all.
    let out = drive(
        false,
        env,
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 42,
            has_8bit: true,
        },
        &Inline(b"x\n"),
        vec![
            say("220 x\r\n"),
            say("250-x\r\n250 PIPELINING\r\n"),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 ok\r\n"),
        ],
    );
    assert!(
        out.written
            .contains("MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\n"),
        "{}",
        out.written
    );
}

#[test]
fn smtputf8_required_but_not_offered() {
    let out = smtp_utf8(
        &["ü@y.test"],
        false,
        b"",
        vec![say("220 x\r\n"), say(EHLO_PIPE)],
    );
    let Some(RcptResult::Failed(dsn)) = &out.results[0] else {
        panic!("expected failure: {:?}", out.results);
    };
    assert_eq!(dsn.code.to_string(), "5.6.7");
    assert!(dsn.soft_non_final);
    assert_eq!(
        dsn.text,
        "SMTPUTF8 is required, but was not offered by host mx.test[127.0.0.1]"
    );
    assert!(!out.written.contains("MAIL"));
}

#[test]
fn smtputf8_sent_when_offered_and_needed() {
    let out = smtp_utf8(
        &["ü@y.test"],
        false,
        b"",
        vec![
            say("220 x\r\n"),
            say("250-x\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 ok\r\n"),
        ],
    );
    assert!(
        out.written
            .contains("MAIL FROM:<s@x.test> BODY=7BIT SMTPUTF8\r\n"),
        "{}",
        out.written
    );
}

#[test]
fn timeouts_and_lost_connections_name_the_step() {
    let mail = smtp(
        &["a@y.test"],
        vec![say("220 x\r\n"), say(EHLO_PLAIN), Step::Stall],
    );
    assert_eq!(
        failed(&mail.results[0]),
        Some((
            "4.4.2".into(),
            "conversation with mx.test[127.0.0.1] timed out while sending MAIL FROM".into()
        ))
    );
    let pipelined = smtp(
        &["a@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n"),
            Step::Stall,
        ],
    );
    assert_eq!(
        failed(&pipelined.results[0]).map(|d| d.1),
        Some("conversation with mx.test[127.0.0.1] timed out while sending RCPT TO".into())
    );
    let greeting = smtp(&["a@y.test"], vec![Step::Hangup]);
    assert_eq!(
        failed(&greeting.results[0]).map(|d| d.1),
        Some(
            "lost connection with mx.test[127.0.0.1] while receiving the initial server greeting"
                .into()
        )
    );
    let dot = smtp(
        &["a@y.test"],
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            Step::Hangup,
        ],
    );
    assert_eq!(
        failed(&dot.results[0]).map(|d| d.1),
        Some("lost connection with mx.test[127.0.0.1] while sending end of data -- message may be sent more than once".into())
    );
}

#[test]
fn write_failure_during_body() {
    struct FailingBody;
    impl Read for FailingBody {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(5))
        }
    }
    struct Src;
    impl MessageSource for Src {
        fn open(&self) -> io::Result<Box<dyn Read + '_>> {
            Ok(Box::new(FailingBody))
        }
    }
    let out = drive(
        false,
        envelope(&["a@y.test"]),
        MessageFacts::default(),
        &Src,
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
        ],
    );
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "4.3.0".into(),
            "local data error while talking to mx.test[127.0.0.1]: error reading message: I/O error".into()
        ))
    );
    let out = drive(
        false,
        envelope(&["a@y.test"]),
        MessageFacts::default(),
        &Unreadable,
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
        ],
    );
    assert_eq!(failed(&out.results[0]).map(|d| d.0), Some("4.3.0".into()));
}

#[test]
fn bad_reply_codes_are_protocol_errors() {
    let out = smtp(
        &["a@y.test"],
        vec![say("220 x\r\n"), say(EHLO_PLAIN), say("199 what\r\n")],
    );
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "5.5.0".into(),
            "Protocol error: host mx.test[127.0.0.1] said: 199 what (in reply to MAIL FROM command)".into()
        ))
    );
}

#[test]
fn server_stalling_mid_reply_times_out() {
    let out = smtp(
        &["a@y.test"],
        vec![say("220 x\r\n"), say("250-x\r\n250-PIPE"), Step::Stall],
    );
    assert_eq!(
        failed(&out.results[0]).map(|d| d.1),
        Some(
            "conversation with mx.test[127.0.0.1] timed out while performing the EHLO handshake"
                .into()
        )
    );
}

#[test]
fn random_server_behaviour_never_panics_or_double_reports() {
    let replies = [
        "220 x\r\n",
        "250 ok\r\n",
        "250-a\r\n",
        "354 go\r\n",
        "421 bye\r\n",
        "450 4.0.0 t\r\n",
        "550 5.0.0 h\r\n",
        "garbage\r\n",
        "999 x\r\n",
        "250-PIPELINING\r\n",
        "250 SIZE 10\r\n",
        "250-DSN\r\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    for round in 0..3000 {
        let count = next() % 12;
        let mut steps: Vec<Step> = (0..count)
            .map(|_| say(replies[next() % replies.len()]))
            .collect();
        if next() % 3 == 0 {
            steps.push(Step::Stall);
        }
        let lmtp = round % 2 == 0;
        let out = drive(
            lmtp,
            envelope(&["a@y", "b@y", "c@y"]),
            MessageFacts {
                tls_required_no: false,
                utf8_header: false,
                size: 20,
                has_8bit: false,
            },
            &Inline(b"x\n"),
            steps,
        );
        // Every recipient has exactly one result once the script is exhausted.
        assert_eq!(out.results.len(), 3);
        assert!(
            out.results.iter().all(Option::is_some),
            "round {round}: {:?}",
            out.results
        );
    }
}

#[test]
fn smtputf8_disabled_neither_requires_nor_requests_it() {
    let settings = ClientSettings {
        tls_authenticated: false,
        lmtp: false,
        helo_name: "c".into(),
        skip_5xx_greeting: true,
        peer: "h[a]".into(),
        smtputf8_enable: false,
        loop_check: None,
        tls: TlsMode::Off,
        strict_reply_syntax: true,
        mime_conversion: Some(crate::smtp::mime::MimeLimits::default()),
        sasl: None,
    };
    let mut client = Client::new(
        settings,
        envelope(&["ü@y.test"]),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 3,
            has_8bit: false,
        },
    );
    let steps = vec![
        say("220 x\r\n"),
        say(EHLO_PIPE),
        say("250 ok\r\n250 ok\r\n354 go\r\n"),
        say("250 ok\r\n"),
    ];
    let mut conn = Connection::new(Scripted::new(steps), 2048);
    run(&mut conn, &mut client, &timeouts(), &Inline(b"hi\n"), 998);
    assert!(delivered(&client.results()[0]).is_some());
    let written = conn.into_inner().written_text();
    assert!(
        written.contains("MAIL FROM:<s@x.test> BODY=7BIT\r\nRCPT TO:<ü@y.test>\r\n"),
        "{written}"
    );
}

#[test]
fn ehlo_reply_with_our_own_name_is_a_loop() {
    use crate::smtp::client::LoopCheck;
    for (best_mx, code) in [(true, "5.4.6"), (false, "4.4.6")] {
        let settings = ClientSettings {
            tls_authenticated: false,
            lmtp: false,
            helo_name: "me.test".into(),
            skip_5xx_greeting: true,
            peer: "mx.y.test[192.0.2.1]".into(),
            smtputf8_enable: true,
            loop_check: Some(LoopCheck {
                my_names: vec!["other.test".into(), "me.test".into()],
                nexthop: "y.test".into(),
                best_mx,
            }),
            tls: TlsMode::Off,
            strict_reply_syntax: true,
            mime_conversion: Some(crate::smtp::mime::MimeLimits::default()),
            sasl: None,
        };
        let mut client = Client::new(settings, envelope(&["a@y.test"]), MessageFacts::default());
        let steps = vec![
            say("220 me.test ESMTP\r\n"),
            say("250-ME.TEST\r\n250 PIPELINING\r\n"),
        ];
        let mut conn = Connection::new(Scripted::new(steps), 2048);
        run(&mut conn, &mut client, &timeouts(), &Inline(b""), 998);
        assert_eq!(
            failed(&client.results()[0]),
            Some((
                code.to_string(),
                "mail for y.test loops back to myself".to_string()
            ))
        );
        assert!(!conn.into_inner().written_text().contains("MAIL"));
    }
}

/// A TLS handshake that keeps the scripted stream (as if TLS were set up)
/// or refuses.
struct FakeTls {
    calls: usize,
    refuse: Option<TlsRefusal>,
}

impl TlsHandler<Scripted> for FakeTls {
    fn handshake(&mut self, stream: Scripted) -> Result<Scripted, TlsRefusal> {
        self.calls += 1;
        match self.refuse.clone() {
            Some(refusal) => Err(refusal),
            None => Ok(stream),
        }
    }
}

struct TlsRun {
    results: Vec<Option<RcptResult>>,
    written: String,
    handshakes: usize,
    retry_plain: bool,
    tls_active: bool,
}

fn drive_tls(mode: TlsMode, steps: Vec<Step>, refuse: Option<TlsRefusal>, size: u64) -> TlsRun {
    let settings = ClientSettings {
        tls: mode,
        strict_reply_syntax: true,
        mime_conversion: Some(crate::smtp::mime::MimeLimits::default()),
        sasl: None,
        ..client_settings(false)
    };
    let mut client = Client::new(
        settings,
        envelope(&["a@y.test"]),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size,
            has_8bit: false,
        },
    );
    let conn = Connection::new(Scripted::new(steps), 2048);
    let mut tls = FakeTls { calls: 0, refuse };
    let (conn, end) = super::drive(
        conn,
        &mut client,
        &timeouts(),
        &Inline(b"hi\n"),
        998,
        &mut tls,
    );
    let mut written = String::new();
    if let Some(mut conn) = conn {
        if end == RunEnd::Idle {
            close(&mut conn, &mut client, &timeouts());
        }
        written = conn.into_inner().written_text();
    }
    TlsRun {
        retry_plain: client.retry_plain(),
        tls_active: client.tls_active(),
        results: client.into_results(),
        written,
        handshakes: tls.calls,
    }
}

const EHLO_TLS: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10\r\n250 STARTTLS\r\n";

#[test]
fn starttls_then_ehlo_again_and_pre_tls_keywords_are_forgotten() {
    let run = drive_tls(
        TlsMode::Opportunistic,
        vec![
            say("220 mx.test ESMTP\r\n"),
            say(EHLO_TLS),
            say("220 2.0.0 Ready to start TLS\r\n"),
            say("250-mx.test\r\n250 PIPELINING\r\n"),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 2.0.0 Ok\r\n"),
        ],
        None,
        500,
    );
    assert_eq!(run.handshakes, 1);
    assert!(run.tls_active);
    // SIZE 10 was offered before TLS only: the 500-byte message is not refused.
    assert_eq!(
        delivered(&run.results[0]).map(|d| d.0),
        Some("2.0.0".into())
    );
    assert!(
        run.written.starts_with(
            "EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\nMAIL FROM:<s@x.test>\r\n"
        ),
        "{}",
        run.written
    );
}

#[test]
fn opportunistic_tls_not_offered_stays_plaintext() {
    let run = drive_tls(
        TlsMode::Opportunistic,
        vec![
            say("220 x\r\n"),
            say(EHLO_PIPE),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 ok\r\n"),
        ],
        None,
        3,
    );
    assert_eq!(run.handshakes, 0);
    assert!(delivered(&run.results[0]).is_some());
    assert!(!run.written.contains("STARTTLS"));
}

#[test]
fn required_tls_not_offered_is_4_7_4() {
    let run = drive_tls(
        TlsMode::Required,
        vec![say("220 x\r\n"), say(EHLO_PIPE)],
        None,
        3,
    );
    assert_eq!(
        failed(&run.results[0]),
        Some((
            "4.7.4".into(),
            "TLS is required, but was not offered by host mx.test[127.0.0.1]".into()
        ))
    );
    assert!(!run.written.contains("MAIL"));
}

#[test]
fn starttls_refused() {
    let steps = || {
        vec![
            say("220 x\r\n"),
            say(EHLO_TLS),
            say("454 4.7.0 TLS not available due to local problem\r\n"),
        ]
    };
    let required = drive_tls(TlsMode::Required, steps(), None, 3);
    assert_eq!(
        failed(&required.results[0]),
        Some((
            "4.7.0".into(),
            "TLS is required, but host mx.test[127.0.0.1] refused to start TLS: 454 4.7.0 TLS not available due to local problem"
                .into()
        ))
    );
    // Opportunistic: go on in plaintext on the same connection.
    let mut plain = steps();
    plain.extend([say("250 ok\r\n250 ok\r\n354 go\r\n"), say("250 ok\r\n")]);
    let may = drive_tls(TlsMode::Opportunistic, plain, None, 3);
    assert!(delivered(&may.results[0]).is_some(), "{:?}", may.results);
    assert_eq!(may.handshakes, 0);
}

#[test]
fn handshake_failure_defers_or_leaves_recipients_for_a_plaintext_retry() {
    let steps = || vec![say("220 x\r\n"), say(EHLO_TLS), say("220 go ahead\r\n")];
    let refusal = TlsRefusal {
        dsn: crate::dsn::Dsn::new(
            crate::dsn::TLS_PROBLEM,
            "Cannot start TLS: handshake failure",
        ),
        retry_plain: false,
    };
    let run = drive_tls(TlsMode::Opportunistic, steps(), Some(refusal.clone()), 3);
    assert_eq!(
        failed(&run.results[0]),
        Some(("4.7.5".into(), "Cannot start TLS: handshake failure".into()))
    );
    assert!(!run.retry_plain);
    let retry = drive_tls(
        TlsMode::Opportunistic,
        steps(),
        Some(TlsRefusal {
            retry_plain: true,
            ..refusal
        }),
        3,
    );
    assert!(retry.retry_plain);
    assert_eq!(retry.results, vec![None]);
}

#[test]
fn bytes_after_the_starttls_reply_are_never_read_as_replies() {
    let run = drive_tls(
        TlsMode::Opportunistic,
        vec![
            say("220 x\r\n"),
            say(EHLO_TLS),
            say("220 go ahead\r\n250-injected\r\n250 PIPELINING\r\n"),
        ],
        None,
        3,
    );
    assert_eq!(run.handshakes, 0);
    assert_eq!(
        failed(&run.results[0]),
        Some((
            "4.7.5".into(),
            "Cannot start TLS: unexpected data after the STARTTLS reply".into()
        ))
    );
}

#[test]
fn wrapped_sessions_never_send_starttls() {
    let run = drive_tls(
        TlsMode::Wrapped,
        vec![
            say("220 x\r\n"),
            say(EHLO_TLS),
            say("250 ok\r\n250 ok\r\n354 go\r\n"),
            say("250 ok\r\n"),
        ],
        None,
        3,
    );
    assert!(!run.written.contains("STARTTLS"));
    assert!(run.tls_active);
    assert!(delivered(&run.results[0]).is_some());
}

/// A session taken from the cache (`Client::resume`) with the server's
/// extensions from `ehlo`, driven over `steps`.
fn resumed(ehlo: &str, steps: Vec<Step>) -> (Client, String, RunEnd) {
    let settings = client_settings(false);
    let mut parser = crate::smtp::reply::ReplyParser::new(2048);
    let reply = ehlo
        .split_inclusive('\n')
        .find_map(|line| parser.push_line(line.trim_end().as_bytes()))
        .expect("a complete EHLO reply");
    let extensions = crate::smtp::ehlo::Extensions::from_reply(&reply);
    let facts = MessageFacts {
        tls_required_no: false,
        utf8_header: false,
        size: BODY.len() as u64,
        has_8bit: false,
    };
    let mut client = Client::resume(settings, envelope(&["a@y.test"]), facts, extensions, false);
    let mut conn = Connection::new(Scripted::new(steps), 2048);
    let end = run(&mut conn, &mut client, &timeouts(), &Inline(BODY), 998);
    let written = conn.into_inner().written_text();
    (client, written, end)
}

#[test]
fn reused_session_pipelines_its_rset_probe_with_the_transaction() {
    let (client, written, end) = resumed(
        EHLO_PIPE,
        vec![
            say("250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
            say("250 2.0.0 Ok: queued as Y\r\n"),
        ],
    );
    assert_eq!(
        written,
        "RSET\r\nMAIL FROM:<s@x.test> BODY=7BIT\r\nRCPT TO:<a@y.test>\r\nDATA\r\n\
         Subject: t\r\n\r\n..hi\r\nbye\r\n.\r\n"
    );
    assert_eq!(end, RunEnd::Idle);
    assert!(!client.probe_failed());
    assert!(client.reusable());
    assert_eq!(
        delivered(&client.results()[0]),
        Some(("2.0.0".into(), "250 2.0.0 Ok: queued as Y".into()))
    );
}

#[test]
fn failed_pipelined_probe_touches_no_recipient() {
    for steps in [
        vec![say(
            "421 4.4.2 idle too long\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
        )],
        vec![say("500 5.5.1 what\r\n")],
        vec![Step::Hangup],
        vec![Step::Stall],
    ] {
        let (client, written, _) = resumed(EHLO_PIPE, steps);
        assert!(client.probe_failed(), "{written}");
        assert!(client.results().iter().all(Option::is_none));
        assert!(!client.reusable());
        // Nothing after the pipelined batch: no body, no QUIT.
        assert_eq!(
            written,
            "RSET\r\nMAIL FROM:<s@x.test> BODY=7BIT\r\nRCPT TO:<a@y.test>\r\nDATA\r\n"
        );
    }
}

#[test]
fn reused_session_out_of_step_is_discarded_without_results() {
    let batch = "RSET\r\nMAIL FROM:<s@x.test> BODY=7BIT\r\nRCPT TO:<a@y.test>\r\nDATA\r\n";
    for replies in [
        // A stray reply ahead of the probe's: DATA reads the RCPT's 250.
        "250 2.0.0 stray\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
        // A 3xx where none is possible.
        "250 2.0.0 Ok\r\n354 go\r\n250 2.1.5 Ok\r\n354 go\r\n",
        // A line without a valid code.
        "250 2.0.0 Ok\r\nhello there\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
        // More replies than commands after a refused DATA.
        "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n250 2.0.0 extra\r\n",
    ] {
        let (client, written, end) = resumed(EHLO_PIPE, vec![say(replies)]);
        assert!(client.desynchronised(), "{replies}");
        assert_eq!(end, RunEnd::Closed, "{replies}");
        assert!(client.results().iter().all(Option::is_none), "{replies}");
        assert!(!client.reusable());
        assert_eq!(written, batch, "{replies}");
    }
}

#[test]
fn refused_transaction_on_a_reused_session_is_verified_with_rset() {
    // A stray reply ahead: the RCPT's 550 is read for DATA, and the real
    // DATA reply (554) arrives later. The RSET after the failed
    // transaction reads that 554: out of step, nothing counts.
    let batch = "RSET\r\nMAIL FROM:<s@x.test> BODY=7BIT\r\nRCPT TO:<a@y.test>\r\nDATA\r\n";
    let (client, written, end) = resumed(
        EHLO_PIPE,
        vec![
            say("250 2.0.0 stray\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550 5.1.1 no\r\n"),
            say("554 5.5.1 no valid recipients\r\n"),
            say("250 2.0.0 Ok\r\n"),
        ],
    );
    assert!(client.desynchronised());
    assert_eq!(end, RunEnd::Closed);
    assert!(client.results().iter().all(Option::is_none));
    assert_eq!(written, format!("{batch}RSET\r\n"));
    // In step, the refusal stands.
    let (client, written, end) = resumed(
        EHLO_PIPE,
        vec![
            say(
                "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n",
            ),
            say("250 2.0.0 Ok\r\n"),
        ],
    );
    assert!(!client.desynchronised());
    assert_eq!(end, RunEnd::Idle);
    assert_eq!(
        failed(&client.results()[0]).map(|f| f.0),
        Some("5.1.1".into())
    );
    assert_eq!(written, format!("{batch}RSET\r\n"));
}

#[test]
fn reused_session_proven_in_step_by_354_keeps_the_verdict_on_its_own_faults() {
    // After DATA's 354 the replies are in step: a bad end-of-data reply is
    // this transaction's own fault (Postfix's 5.5.0), not a reason to send
    // the message again on a new connection.
    for dot in ["this is no reply\r\n", "354 again\r\n"] {
        let (client, _, _) = resumed(
            EHLO_PIPE,
            vec![
                say("250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
                say(dot),
            ],
        );
        assert!(!client.desynchronised(), "{dot}");
        let (code, text) = failed(&client.results()[0]).expect("failed");
        assert_eq!(code, "5.5.0", "{text}");
        assert!(!client.reusable());
    }
}

#[test]
fn fresh_session_keeps_its_verdict_on_a_leftover_reply() {
    let out = smtp(
        &["a@y.test"],
        vec![
            say("220 mx ESMTP\r\n"),
            say(EHLO_PIPE),
            say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
            say("250 2.0.0 Ok: queued\r\n250 2.0.0 stray\r\n"),
        ],
    );
    assert!(delivered(&out.results[0]).is_some());
}

#[test]
fn garbage_line_with_pipelining_is_a_protocol_error_at_once() {
    // Before the fix the client waited for the stage's timeout (the Stall)
    // and deferred; Postfix's verdict is 5.5.0 at once.
    let out = smtp(
        &["a@y.test", "b@y.test"],
        vec![
            say("220 mx ESMTP\r\n"),
            say(EHLO_PIPE),
            say("250 2.1.0 Ok\r\nthis is no reply\r\n"),
            Step::Stall,
        ],
    );
    for result in &out.results {
        let (code, text) = failed(result).expect("failed");
        assert_eq!(code, "5.5.0", "{text}");
        assert!(
            text.contains("Protocol error") && text.contains("this is no reply"),
            "{text}"
        );
    }
    assert_eq!(out.leftover_script, 1, "no read after the garbage line");
    assert!(!out.written.contains("QUIT"), "{}", out.written);
}

#[test]
fn garbage_before_pipelining_is_known_is_skipped_within_a_bound() {
    // In the greeting and the EHLO reply: skipped, as Postfix does.
    let out = smtp(
        &["a@y.test"],
        vec![
            say("hello\r\n220 mx ESMTP\r\n"),
            say("250-mx.test\r\nnoise\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
            say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
            say("250 2.0.0 Ok: queued\r\n"),
        ],
    );
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
    // Past the bound: a protocol error.
    let flood = "junk\r\n".repeat(crate::smtp::reply::MAX_SKIPPED_LINES + 1);
    let out = smtp(&["a@y.test"], vec![say(&flood), Step::Stall]);
    let (code, text) = failed(&out.results[0]).expect("failed");
    assert_eq!(code, "5.5.0", "{text}");
    assert_eq!(out.leftover_script, 1);
}

#[test]
fn relaxed_reply_syntax_skips_garbage_with_pipelining_like_postfix() {
    // smtp.strict_reply_syntax = false: Postfix's smtp_chat.c skips the
    // line (with a warning) and goes on; the session is never cached.
    let settings = ClientSettings {
        strict_reply_syntax: false,
        mime_conversion: Some(crate::smtp::mime::MimeLimits::default()),
        sasl: None,
        ..client_settings(false)
    };
    let mut client = Client::new(
        settings,
        envelope(&["a@y.test"]),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: BODY.len() as u64,
            has_8bit: false,
        },
    );
    let mut conn = Connection::new(
        Scripted::new(vec![
            say("220 mx ESMTP\r\n"),
            say(EHLO_PIPE),
            say("250 2.1.0 Ok\r\nthis is no reply\r\n250 2.1.5 Ok\r\n354 go\r\n"),
            say("250 2.0.0 Ok: queued\r\n"),
        ]),
        2048,
    );
    let end = run(&mut conn, &mut client, &timeouts(), &Inline(BODY), 998);
    assert_eq!(end, RunEnd::Idle);
    assert!(client.protocol_error(), "such a session is never cached");
    assert!(
        delivered(&client.results()[0]).is_some(),
        "{:?}",
        client.results()
    );
}

#[test]
fn lock_step_session_skips_garbage_like_postfix() {
    // No PIPELINING: a garbage line is skipped, the session goes on.
    let out = smtp(
        &["a@y.test"],
        vec![
            say("220 mx ESMTP\r\n"),
            say("250 mx.test\r\n"),
            say("junk\r\n250 2.1.0 Ok\r\n"),
            say("250 2.1.5 Ok\r\n"),
            say("354 go\r\n"),
            say("250 2.0.0 Ok\r\n"),
        ],
    );
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
}

#[test]
fn reused_session_without_pipelining_sends_a_lone_rset_first() {
    let (client, written, _) = resumed(
        EHLO_PLAIN,
        vec![
            say("250 2.0.0 Ok\r\n"),
            say("250 2.1.0 Ok\r\n"),
            say("250 2.1.5 Ok\r\n"),
            say("354 go\r\n"),
            say("250 2.0.0 Ok\r\n"),
        ],
    );
    assert!(written.starts_with("RSET\r\nMAIL FROM:"), "{written}");
    assert!(delivered(&client.results()[0]).is_some());
    let (client, written, _) = resumed(EHLO_PLAIN, vec![say("421 4.4.2 bye\r\n")]);
    assert!(client.probe_failed());
    assert!(client.results().iter().all(Option::is_none));
    assert!(!written.contains("MAIL"), "{written}");
}

/// A message held in memory: the body and the final dot in one write.
struct Held(&'static [u8]);

impl MessageSource for Held {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0))
    }
    fn in_memory(&self) -> Option<&[u8]> {
        Some(self.0)
    }
}

#[test]
fn messages_in_memory_go_out_exactly_as_streamed_ones() {
    let bodies: [&'static [u8]; 5] = [
        b"Subject: t\n\n.hi\nbye",
        b"",
        b".\r\n..\n.",
        b"a\rb\r\n\n\xc3\xa9\n",
        b"x",
    ];
    for body in bodies {
        let run_with = |source: &dyn MessageSource| {
            drive(
                false,
                envelope(&["a@y.test"]),
                MessageFacts {
                    tls_required_no: false,
                    utf8_header: false,
                    size: body.len() as u64,
                    has_8bit: false,
                },
                source,
                vec![
                    say("220 mx.test ESMTP\r\n"),
                    say(EHLO_PIPE),
                    say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
                    say("250 2.0.0 Ok\r\n"),
                ],
            )
        };
        let streamed = run_with(&Inline(body));
        let held = run_with(&Held(body));
        assert_eq!(held.written, streamed.written, "{body:?}");
        assert!(delivered(&held.results[0]).is_some());
    }
    // A server that hangs up during the body: 4.4.2, as when streaming.
    let out = drive(
        false,
        envelope(&["a@y.test"]),
        MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: BODY.len() as u64,
            has_8bit: false,
        },
        &Held(BODY),
        vec![
            say("220 mx.test ESMTP\r\n"),
            say(EHLO_PIPE),
            say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
            Step::Hangup,
        ],
    );
    let (code, _) = failed(&out.results[0]).expect("a failure");
    assert_eq!(code, "4.4.2");
}

/// A session that will not be kept: QUIT rides behind the final dot when
/// the server pipelines, and is not sent again.
#[test]
fn quit_is_pipelined_behind_the_dot_when_the_session_ends() {
    for (ehlo, held) in [(EHLO_PIPE, true), (EHLO_PIPE, false), (EHLO_PLAIN, true)] {
        let settings = client_settings(false);
        let facts = MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: BODY.len() as u64,
            has_8bit: false,
        };
        let mut client = Client::new(settings, envelope(&["a@y.test"]), facts);
        client.set_quit_after_data(true);
        let pipelined = ehlo == EHLO_PIPE;
        let steps = if pipelined {
            vec![
                say("220 mx.test ESMTP\r\n"),
                say(ehlo),
                say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"),
                say("250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"),
            ]
        } else {
            vec![
                say("220 mx.test ESMTP\r\n"),
                say(ehlo),
                say("250 2.1.0 Ok\r\n"),
                say("250 2.1.5 Ok\r\n"),
                say("354 go\r\n"),
                say("250 2.0.0 Ok\r\n"),
            ]
        };
        let mut conn = Connection::new(Scripted::new(steps), 2048);
        let source: &dyn MessageSource = if held { &Held(BODY) } else { &Inline(BODY) };
        let end = run(&mut conn, &mut client, &timeouts(), source, 998);
        assert_eq!(end, RunEnd::Idle);
        assert!(delivered(&client.results()[0]).is_some());
        let written = conn.into_inner().written_text();
        assert_eq!(client.quit_pipelined(), pipelined, "{written}");
        assert!(!client.reusable() || !pipelined);
        assert_eq!(
            written.ends_with("bye\r\n.\r\nQUIT\r\n"),
            pipelined,
            "{written}"
        );
        assert_eq!(written.matches("QUIT").count(), usize::from(pipelined));
    }
}

// ---------- 8-bit to 7-bit MIME conversion ----------

const EIGHT_BIT: &[u8] = b"Subject: t\nContent-Transfer-Encoding: 8bit\n\nd\xc3\xa9j\xc3\xa0 =\n";

struct InMemory(&'static [u8]);

impl MessageSource for InMemory {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0))
    }
    fn in_memory(&self) -> Option<&[u8]> {
        Some(self.0)
    }
}

fn mime_session(
    ehlo: &str,
    conversion: bool,
    message: &dyn MessageSource,
    bytes: &[u8],
    after_data: Vec<Step>,
) -> Outcome {
    mime_session_as(false, ehlo, conversion, message, bytes, after_data)
}

fn mime_session_as(
    lmtp: bool,
    ehlo: &str,
    conversion: bool,
    message: &dyn MessageSource,
    bytes: &[u8],
    after_data: Vec<Step>,
) -> Outcome {
    let mut settings = client_settings(lmtp);
    if !conversion {
        settings.mime_conversion = None;
    }
    let facts = MessageFacts {
        tls_required_no: false,
        utf8_header: false,
        size: bytes.len() as u64,
        has_8bit: bytes.iter().any(|&b| b >= 0x80),
    };
    let mut client = Client::new(settings, envelope(&["a@y.test"]), facts);
    let mut steps = vec![
        say("220 mx.test ESMTP\r\n"),
        say(ehlo),
        say("250 2.1.0 Ok\r\n"),
        say("250 2.1.5 Ok\r\n"),
        say("354 go\r\n"),
    ];
    steps.extend(after_data);
    let mut conn = Connection::new(Scripted::new(steps), 2048);
    let end = run(&mut conn, &mut client, &timeouts(), message, 998);
    if end == RunEnd::Idle {
        close(&mut conn, &mut client, &timeouts());
    }
    let transport = conn.into_inner();
    Outcome {
        results: client.into_results(),
        written: transport.written_text(),
        handshake: true,
        end,
        leftover_script: transport.steps.len(),
    }
}

// ---------- SMTPUTF8 (Postfix's rules plus A-labels) and stray CR ----------

/// A session for an envelope that requested SMTPUTF8, with `header_utf8`
/// as the header fact; `body` empty means [`BODY`].
fn smtp_utf8(rcpts: &[&str], header_utf8: bool, body: &'static [u8], steps: Vec<Step>) -> Outcome {
    let env = Envelope {
        smtputf8: true,
        ..envelope(rcpts)
    };
    drive_body(env, header_utf8, body, true, steps)
}

fn drive_body(
    env: Envelope,
    header_utf8: bool,
    body: &'static [u8],
    replace_stray_cr: bool,
    steps: Vec<Step>,
) -> Outcome {
    drive_body_with(env, header_utf8, body, replace_stray_cr, true, steps)
}

fn drive_body_with(
    env: Envelope,
    header_utf8: bool,
    body: &'static [u8],
    replace_stray_cr: bool,
    a_labels: bool,
    steps: Vec<Step>,
) -> Outcome {
    let body = if body.is_empty() { BODY } else { body };
    let facts = MessageFacts {
        tls_required_no: false,
        utf8_header: header_utf8,
        size: body.len() as u64,
        has_8bit: !body.is_ascii(),
    };
    let mut client = Client::new(client_settings(false), env, facts);
    client.set_replace_stray_cr(replace_stray_cr);
    client.set_smtputf8_a_labels(a_labels);
    let mut conn = Connection::new(Scripted::new(steps), 2048);
    let message = Inline(body);
    let mut end = run(&mut conn, &mut client, &timeouts(), &message, 998);
    if end == RunEnd::Idle {
        close(&mut conn, &mut client, &timeouts());
        end = RunEnd::Idle;
    }
    let handshake = client.handshake_done();
    let transport = conn.into_inner();
    Outcome {
        results: client.into_results(),
        written: transport.written_text(),
        handshake,
        end,
        leftover_script: transport.steps.len(),
    }
}

#[test]
fn eight_bit_to_a_server_without_8bitmime_is_converted_and_sent_without_size() {
    for message in [
        &Inline(EIGHT_BIT) as &dyn MessageSource,
        &InMemory(EIGHT_BIT),
    ] {
        let out = mime_session(
            "250-mx.test\r\n250 SIZE 1000000\r\n",
            true,
            message,
            EIGHT_BIT,
            vec![say("250 2.0.0 Ok\r\n"), say("221 bye\r\n")],
        );
        assert_eq!(
            out.written,
            "EHLO client.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n\
             Subject: t\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             d=C3=A9j=C3=A0 =3D\r\n.\r\nQUIT\r\n"
        );
        assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
    }
}

#[test]
fn eight_bit_to_an_8bitmime_server_or_with_conversion_off_is_unchanged() {
    let body = String::from_utf8_lossy(EIGHT_BIT).replace('\n', "\r\n");
    let out = mime_session(
        "250-mx.test\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n",
        true,
        &Inline(EIGHT_BIT),
        EIGHT_BIT,
        vec![say("250 2.0.0 Ok\r\n"), say("221 bye\r\n")],
    );
    assert!(
        out.written
            .contains(&format!("SIZE={} BODY=8BITMIME\r\n", EIGHT_BIT.len())),
        "{}",
        out.written
    );
    assert!(out.written.contains(&body), "{}", out.written);
    let out = mime_session(
        "250-mx.test\r\n250 SIZE 1000000\r\n",
        false,
        &Inline(EIGHT_BIT),
        EIGHT_BIT,
        vec![say("250 2.0.0 Ok\r\n"), say("221 bye\r\n")],
    );
    assert!(
        out.written.contains(&format!(
            "MAIL FROM:<s@x.test> SIZE={}\r\n",
            EIGHT_BIT.len()
        )),
        "{}",
        out.written
    );
    assert!(out.written.contains(&body), "{}", out.written);
}

#[test]
fn too_deep_mime_nesting_bounces_and_drops_the_connection_without_the_dot() {
    let mut text = Vec::new();
    for i in 0..103 {
        text.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n").as_bytes(),
        );
    }
    text.extend_from_slice(b"Content-Transfer-Encoding: 8bit\n\n\xe9\n");
    let bytes: &'static [u8] = Box::leak(text.into_boxed_slice());
    for message in [&Inline(bytes) as &dyn MessageSource, &InMemory(bytes)] {
        let out = mime_session(
            "250-mx.test\r\n250 SIZE 1000000\r\n",
            true,
            message,
            bytes,
            vec![],
        );
        assert_eq!(
            failed(&out.results[0]),
            Some(("5.6.0".into(), "MIME nesting exceeds safety limit".into()))
        );
        assert!(!out.written.contains("\r\n.\r\n"), "{}", out.written);
        assert!(!out.written.contains("QUIT"), "{}", out.written);
        assert_eq!(out.end, RunEnd::Closed);
    }
}

#[test]
fn lmtp_converts_like_smtp() {
    // Postfix's lmtp(8) is smtp(8): the same conversion for an LMTP server
    // without 8BITMIME.
    let out = mime_session_as(
        true,
        "250-mx.test\r\n250 SIZE 1000000\r\n",
        true,
        &Inline(EIGHT_BIT),
        EIGHT_BIT,
        vec![say("250 2.1.5 Ok\r\n")],
    );
    assert!(
        out.written.starts_with(
            "LHLO client.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n\
             Subject: t\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             d=C3=A9j=C3=A0 =3D\r\n.\r\n"
        ),
        "{}",
        out.written
    );
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
}

fn accepting(ehlo: &str) -> Vec<Step> {
    vec![
        say("220 x\r\n"),
        say(ehlo),
        say("250 ok\r\n250 ok\r\n354 go\r\n"),
        say("250 ok\r\n"),
    ]
}

#[test]
fn smtputf8_not_requested_goes_as_it_is_without_smtputf8() {
    // Postfix: no SMTPUTF8 request, no requirement, even with UTF-8 in a
    // local part and a server without SMTPUTF8.
    let out = drive_body(
        envelope(&["ü@y.test"]),
        true,
        b"",
        true,
        accepting(EHLO_PIPE),
    );
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
    assert!(
        out.written.contains("MAIL FROM:<s@x.test> BODY=7BIT\r\n"),
        "{}",
        out.written
    );
    assert!(
        out.written.contains("RCPT TO:<ü@y.test>\r\n"),
        "{}",
        out.written
    );
    // Nor to a server that offers it.
    let out = drive_body(
        envelope(&["ü@y.test"]),
        false,
        b"",
        true,
        accepting("250-x\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"),
    );
    assert!(
        out.written.contains("MAIL FROM:<s@x.test> BODY=7BIT\r\n"),
        "{}",
        out.written
    );
}

#[test]
fn smtputf8_requested_with_utf8_domains_only_goes_as_a_labels() {
    let out = smtp_utf8(&["a@bücher.test"], false, b"", accepting(EHLO_PIPE));
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
    assert!(
        out.written.contains("MAIL FROM:<s@x.test> BODY=7BIT\r\n"),
        "{}",
        out.written
    );
    assert!(
        out.written.contains("RCPT TO:<a@xn--bcher-kva.test>\r\n"),
        "{}",
        out.written
    );
    assert!(!out.written.contains("bücher"), "{}", out.written);
    // The message itself is not changed.
    assert!(
        out.written.contains("..hi\r\nbye\r\n.\r\n"),
        "{}",
        out.written
    );
}

#[test]
fn smtputf8_requested_keeps_utf8_domains_when_offered() {
    let out = smtp_utf8(
        &["a@bücher.test"],
        false,
        b"",
        accepting("250-x\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"),
    );
    assert!(out.written.contains("SMTPUTF8\r\n"), "{}", out.written);
    assert!(
        out.written.contains("RCPT TO:<a@bücher.test>\r\n"),
        "{}",
        out.written
    );
}

#[test]
fn smtputf8_requested_with_a_utf8_header_needs_smtputf8() {
    // ASCII envelope, UTF-8 header: Postfix's SMTPUTF8_FLAG_HEADER.
    let out = smtp_utf8(
        &["a@y.test"],
        true,
        b"",
        vec![say("220 x\r\n"), say(EHLO_PIPE)],
    );
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "5.6.7".into(),
            "SMTPUTF8 is required, but was not offered by host mx.test[127.0.0.1]".into()
        ))
    );
    assert!(!out.written.contains("MAIL"));
    // A UTF-8 header and a UTF-8 domain: A-labels are not enough.
    let out = smtp_utf8(
        &["a@bücher.test"],
        true,
        b"",
        vec![say("220 x\r\n"), say(EHLO_PIPE)],
    );
    assert_eq!(failed(&out.results[0]).map(|f| f.0), Some("5.6.7".into()));
    // Requested, all ASCII: goes without SMTPUTF8.
    let out = smtp_utf8(&["a@y.test"], false, b"", accepting(EHLO_PIPE));
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
}

#[test]
fn stray_cr_is_replaced_unless_configured_off() {
    let body: &'static [u8] = b"Subject: t\r\n\r\na\r.\rb\n.\r\nc\r\r\nd\r";
    let out = drive_body(
        envelope(&["a@y.test"]),
        false,
        body,
        true,
        accepting(EHLO_PIPE),
    );
    assert!(
        out.written.contains("354 go") || out.written.contains("DATA\r\n"),
        "{}",
        out.written
    );
    assert!(
        out.written
            .ends_with("\r\n\r\na . b\r\n..\r\nc \r\nd \r\n.\r\nQUIT\r\n"),
        "{:?}",
        out.written
    );
    let out = drive_body(
        envelope(&["a@y.test"]),
        false,
        body,
        false,
        accepting(EHLO_PIPE),
    );
    assert!(
        out.written
            .ends_with("\r\n\r\na\r.\rb\r\n..\r\nc\r\r\nd\r\r\n.\r\nQUIT\r\n"),
        "{:?}",
        out.written
    );
}

#[test]
fn smtputf8_a_labels_off_is_postfix_addresses_as_they_are_and_5_6_7() {
    let env = Envelope {
        smtputf8: true,
        ..envelope(&["a@bücher.test"])
    };
    let out = drive_body_with(
        env,
        false,
        b"",
        true,
        false,
        vec![say("220 x\r\n"), say(EHLO_PIPE)],
    );
    assert_eq!(
        failed(&out.results[0]),
        Some((
            "5.6.7".into(),
            "SMTPUTF8 is required, but was not offered by host mx.test[127.0.0.1]".into()
        ))
    );
    // Not requested: the address goes as it is, no A-label.
    let out = drive_body_with(
        envelope(&["a@bücher.test"]),
        false,
        b"",
        true,
        false,
        accepting(EHLO_PIPE),
    );
    assert!(delivered(&out.results[0]).is_some(), "{:?}", out.results);
    assert!(
        out.written.contains("RCPT TO:<a@bücher.test>\r\n"),
        "{}",
        out.written
    );
}
