//! The harness's scripted server's fault actions (delay, close, reset,
//! partial write, stall) against `mailhop send --direct`: each fault at a
//! chosen command gives the outcome Postfix's smtp(8) gives for it, and
//! the server's transcript shows where the conversation stopped.

mod common;

use std::time::Duration;

use common::{
    Action, Behaviour, Delivery, End, Line, PEER, ehlo, hostname, smtp_server, smtp_servers,
};

#[test]
fn a_delayed_reply_within_the_timeout_is_waited_for() {
    let server = smtp_server(Behaviour::default().fault(
        "RCPT",
        0,
        Action::Delay(Duration::from_millis(300)),
    ));
    let run = Delivery::to(&server.nexthop()).rcpt("b@y.test").run();
    let relay = server.relay();
    let t = server.finish().expect("connected");
    run.expect(
        0,
        &[Line::sent(
            "b@y.test",
            &relay,
            "2.0.0",
            "250 2.0.0 Ok: queued as 4XYZ",
        )],
    );
    assert_eq!(t.fault, None, "{t:?}");
    assert_eq!(t.commands.last().map(String::as_str), Some("QUIT"), "{t:?}");
}

#[test]
fn a_close_instead_of_the_mail_reply_defers_4_4_2_lost_while_sending_mail_from() {
    let server = smtp_server(Behaviour::default().fault("MAIL", 0, Action::Close));
    let run = Delivery::to(&server.nexthop()).rcpt("b@y.test").run();
    let relay = server.relay();
    let t = server.finish().expect("connected");
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &relay,
            "4.4.2",
            &format!("lost connection with {PEER} while sending MAIL FROM"),
        )],
    );
    assert_eq!(t.fault, Some(Action::Close), "{t:?}");
    assert_eq!(t.end, Some(End::Eof), "{t:?}");
    assert_eq!(t.commands.first(), Some(&ehlo()), "{t:?}");
    assert_eq!(
        t.commands.last().map(String::as_str),
        Some("MAIL FROM:<a@x.test>"),
        "{t:?}"
    );
}

#[test]
fn a_reset_instead_of_the_data_reply_defers_4_4_2_lost_connection() {
    let server = smtp_server(Behaviour::default().fault("DATA", 0, Action::Reset));
    let run = Delivery::to(&server.nexthop()).rcpt("b@y.test").run();
    let t = server.finish().expect("connected");
    let lines = run.lines();
    assert_eq!(run.code, 75, "{run:#?}");
    assert_eq!(lines.len(), 1, "{run:#?}");
    assert_eq!(
        (lines[0].status.as_str(), lines[0].dsn.as_str()),
        ("deferred", "4.4.2")
    );
    // The reset may discard replies the client had not read yet: which
    // command it was sending depends on timing.
    assert!(
        lines[0]
            .diagnostic
            .starts_with(&format!("lost connection with {PEER} while sending ")),
        "{run:#?}"
    );
    assert_eq!(t.fault, Some(Action::Reset), "{t:?}");
    assert_eq!(t.commands.last().map(String::as_str), Some("DATA"), "{t:?}");
    assert_eq!(t.body, None, "{t:?}");
}

#[test]
fn a_partial_greeting_then_close_defers_4_4_2_lost_while_receiving_the_greeting() {
    let server = smtp_server(Behaviour::default().fault("CONNECT", 0, Action::Partial(5)));
    let run = Delivery::to(&server.nexthop()).rcpt("b@y.test").run();
    let relay = server.relay();
    let t = server.finish().expect("connected");
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &relay,
            "4.4.2",
            &format!("lost connection with {PEER} while receiving the initial server greeting"),
        )],
    );
    assert_eq!(t.fault, Some(Action::Partial(5)), "{t:?}");
    assert!(t.commands.is_empty(), "{t:?}");
}

#[test]
fn a_stalled_end_of_data_reply_defers_4_4_2_after_data_done_timeout() {
    let server = smtp_server(Behaviour::default().fault(".", 0, Action::Stall));
    let run = Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .smtp_setting("data_done_timeout", "\"1s\"")
        .run();
    let relay = server.relay();
    let t = server.finish().expect("connected");
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &relay,
            "4.4.2",
            &format!(
                "conversation with {PEER} timed out while sending end of data -- message may be sent more than once"
            ),
        )],
    );
    assert!(run.elapsed < Duration::from_secs(4), "{run:#?}");
    assert_eq!(t.fault, Some(Action::Stall), "{t:?}");
    assert_eq!(t.commands.last().map(String::as_str), Some("."), "{t:?}");
    assert!(
        t.body.is_some_and(|b| b.ends_with(b"hello\r\n")),
        "the whole body arrived"
    );
}

#[test]
fn lmtp_per_recipient_replies_after_the_dot_decide_each_recipient() {
    let script = Behaviour {
        lmtp_dot: vec!["250 2.1.5 b Ok".into(), "452 4.2.2 c full".into()],
        ..Behaviour::default()
    };
    let server = smtp_servers(vec![script]);
    let run = Delivery::to(&server.nexthop())
        .lmtp()
        .rcpts(&["b@y.test", "c@y.test"])
        .run();
    let relay = server.relay();
    let transcripts = server.finish_all();
    run.expect(
        75,
        &[
            Line::sent("b@y.test", &relay, "2.1.5", "250 2.1.5 b Ok"),
            Line::deferred(
                "c@y.test",
                &relay,
                "4.2.2",
                &format!("host {PEER} said: 452 4.2.2 c full (in reply to end of DATA command)"),
            ),
        ],
    );
    assert_eq!(transcripts.len(), 1, "{transcripts:?}");
    assert_eq!(
        transcripts[0].commands,
        vec![
            format!("LHLO {}", hostname()),
            "MAIL FROM:<a@x.test>".into(),
            "RCPT TO:<b@y.test>".into(),
            "RCPT TO:<c@y.test>".into(),
            "DATA".into(),
            ".".into(),
            "QUIT".into(),
        ]
    );
}
