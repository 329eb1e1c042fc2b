//! End-to-end tests of `mailhop send` against in-process scripted SMTP/LMTP
//! servers, for what smtp-sink cannot do: per-recipient reply mixes, SIZE,
//! SMTPUTF8, DSN, huge or stalled replies, protocol violations, and the
//! command-line error paths.
//!
//! Each scripted server serves one connection on its own loopback port with
//! read timeouts, records the commands it received, and is joined by the test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Behaviour, Delivery, End, Line, PEER, SMALL_MESSAGE, Server, Transcript, ehlo, hostname, said,
    smtp_server,
};
use serde_json::json;

/// The small message in wire form, as the server must receive it.
const SMALL_WIRE: &[u8] = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: test\r\n\r\nhello\r\n";

fn commands(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| c.to_string()).collect()
}

fn transcript(server: Server<Transcript>) -> Transcript {
    server.finish().expect("the scripted server was connected")
}

/// A message of exactly `size` bytes in lines of 100.
fn message_of(size: usize) -> Vec<u8> {
    let mut message = b"Subject: big\n\n".to_vec();
    while message.len() < size {
        let room = size - message.len();
        if room <= 100 {
            message.extend(std::iter::repeat_n(b'x', room - 1));
            message.push(b'\n');
        } else {
            message.extend(std::iter::repeat_n(b'x', 99));
            message.push(b'\n');
        }
    }
    assert_eq!(message.len(), size);
    message
}

// ---------------------------------------------------------------------------
// SIZE
// ---------------------------------------------------------------------------

#[test]
fn message_over_the_size_limit_bounces_before_mail_from() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "SIZE 1000"]));
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .message(&message_of(5000))
        .run();
    let diag = format!("message size 5000 exceeds size limit 1000 of server {PEER}");
    run.expect(
        69,
        &[
            Line::bounced("b@y.test", &server.relay(), "5.3.4", &diag),
            Line::bounced("c@y.test", &server.relay(), "5.3.4", &diag),
        ],
    );
    let t = transcript(server);
    assert_eq!(t.commands, commands(&[&ehlo(), "QUIT"]));
}

#[test]
fn message_within_the_size_limit_carries_size_on_mail_from() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "SIZE 5000"]));
    let message = message_of(5000);
    let run = Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message(&message)
        .run();
    run.expect(
        0,
        &[Line::sent(
            "b@y.test",
            &server.relay(),
            "2.0.0",
            "250 2.0.0 Ok: queued as 4XYZ",
        )],
    );
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test> SIZE=5000",
            "RCPT TO:<b@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
    let wire: Vec<u8> = String::from_utf8_lossy(&message)
        .replace('\n', "\r\n")
        .into_bytes();
    assert_eq!(t.body.as_deref(), Some(&wire[..]));
}

// ---------------------------------------------------------------------------
// Per-recipient replies
// ---------------------------------------------------------------------------

fn mixed_rcpt_behaviour(keywords: &[&str], readahead: Duration) -> Behaviour {
    Behaviour {
        rcpt: vec![
            "250 2.1.5 Ok".into(),
            "550 5.1.1 <r2@y.test>: Recipient address rejected".into(),
            "450 4.2.0 <r3@y.test>: mailbox busy".into(),
        ],
        readahead_at_mail: Some((4, readahead)),
        ..Behaviour::default().keywords(keywords)
    }
}

fn assert_mixed_outcome(server: &Server<Transcript>, run: &common::Run) {
    run.expect(
        69,
        &[
            Line::sent(
                "r1@y.test",
                &server.relay(),
                "2.0.0",
                "250 2.0.0 Ok: queued as 4XYZ",
            ),
            Line::bounced(
                "r2@y.test",
                &server.relay(),
                "5.1.1",
                &said(
                    "550 5.1.1 <r2@y.test>: Recipient address rejected",
                    "RCPT TO",
                ),
            ),
            Line::deferred(
                "r3@y.test",
                &server.relay(),
                "4.2.0",
                &said("450 4.2.0 <r3@y.test>: mailbox busy", "RCPT TO"),
            ),
        ],
    );
}

const MIXED_COMMANDS: &[&str] = &[
    "MAIL FROM:<a@x.test>",
    "RCPT TO:<r1@y.test>",
    "RCPT TO:<r2@y.test>",
    "RCPT TO:<r3@y.test>",
    "DATA",
    ".",
    "QUIT",
];

#[test]
fn mixed_rcpt_replies_with_pipelining_give_one_outcome_per_recipient() {
    // The server holds its MAIL reply until RCPT×3 and DATA have arrived:
    // only a pipelining client sends them before that reply.
    let server = smtp_server(mixed_rcpt_behaviour(
        &["PIPELINING", "ENHANCEDSTATUSCODES"],
        Duration::from_secs(3),
    ));
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["r1@y.test", "r2@y.test", "r3@y.test"])
        .run();
    assert_mixed_outcome(&server, &run);
    let t = transcript(server);
    let mut expected = vec![ehlo()];
    expected.extend(commands(MIXED_COMMANDS));
    assert_eq!(t.commands, expected);
    assert_eq!(t.readahead, Some(4), "RCPT×3 + DATA before the MAIL reply");
    assert_eq!(t.body.as_deref(), Some(SMALL_WIRE));
}

#[test]
fn mixed_rcpt_replies_in_lock_step_give_the_same_outcomes() {
    let server = smtp_server(mixed_rcpt_behaviour(
        &["ENHANCEDSTATUSCODES"],
        Duration::from_millis(300),
    ));
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["r1@y.test", "r2@y.test", "r3@y.test"])
        .run();
    assert_mixed_outcome(&server, &run);
    let t = transcript(server);
    let mut expected = vec![ehlo()];
    expected.extend(commands(MIXED_COMMANDS));
    assert_eq!(t.commands, expected);
    assert_eq!(
        t.readahead,
        Some(0),
        "nothing may follow MAIL before its reply"
    );
    assert_eq!(t.body.as_deref(), Some(SMALL_WIRE));
}

#[test]
fn mail_from_rejection_bounces_every_recipient() {
    let server = smtp_server(Behaviour {
        mail: "553 5.7.1 <a@x.test>: Sender address rejected".into(),
        rcpt: vec!["503 5.5.1 Error: need MAIL command".into(); 2],
        data: Some("503 5.5.1 Error: need RCPT command".into()),
        ..Behaviour::default()
    });
    let diag = said("553 5.7.1 <a@x.test>: Sender address rejected", "MAIL FROM");
    Delivery::to(&server.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            69,
            &[
                Line::bounced("b@y.test", &server.relay(), "5.7.1", &diag),
                Line::bounced("c@y.test", &server.relay(), "5.7.1", &diag),
            ],
        );
    let t = transcript(server);
    assert!(
        t.body.is_none(),
        "no message content after a MAIL rejection"
    );
}

#[test]
fn enhanced_codes_are_taken_from_replies_only_when_the_class_matches() {
    let server = smtp_server(Behaviour {
        rcpt: vec![
            "550 4.1.1 mismatched class".into(),
            "452 too many recipients".into(),
            "250 2.1.5 Ok".into(),
        ],
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .rcpts(&["b@y.test", "c@y.test", "d@y.test"])
        .run()
        .expect(
            69,
            &[
                Line::bounced(
                    "b@y.test",
                    &server.relay(),
                    "5.0.0",
                    &said("550 4.1.1 mismatched class", "RCPT TO"),
                ),
                Line::deferred(
                    "c@y.test",
                    &server.relay(),
                    "4.0.0",
                    &said("452 too many recipients", "RCPT TO"),
                ),
                Line::sent(
                    "d@y.test",
                    &server.relay(),
                    "2.0.0",
                    "250 2.0.0 Ok: queued as 4XYZ",
                ),
            ],
        );
    transcript(server);
}

#[test]
fn multiline_rejection_is_quoted_whole_with_the_first_lines_enhanced_code() {
    let server = smtp_server(Behaviour {
        rcpt: vec!["550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Please try again.".into()],
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &server.relay(),
                "5.1.1",
                &said(
                    "550-5.1.1 The email account that you tried to reach does not exist. \
                 550 5.1.1 Please try again.",
                    "RCPT TO",
                ),
            )],
        );
    transcript(server);
}

#[test]
fn lmtp_per_recipient_replies_after_data_give_one_outcome_each() {
    let server = smtp_server(Behaviour {
        greeting: "220 scripted.test LMTP".into(),
        lmtp_dot: vec![
            "250 2.1.5 <b@y.test> delivered".into(),
            "452 4.2.2 <c@y.test> mailbox full".into(),
            "550 5.1.1 <d@y.test> no such user".into(),
        ],
        ..Behaviour::default()
    });
    let run = Delivery::to(&server.nexthop())
        .lmtp()
        .rcpts(&["b@y.test", "c@y.test", "d@y.test"])
        .run();
    run.expect(
        69,
        &[
            Line::sent(
                "b@y.test",
                &server.relay(),
                "2.1.5",
                "250 2.1.5 <b@y.test> delivered",
            ),
            Line::deferred(
                "c@y.test",
                &server.relay(),
                "4.2.2",
                &said("452 4.2.2 <c@y.test> mailbox full", "end of DATA"),
            ),
            Line::bounced(
                "d@y.test",
                &server.relay(),
                "5.1.1",
                &said("550 5.1.1 <d@y.test> no such user", "end of DATA"),
            ),
        ],
    );
    let t = transcript(server);
    assert_eq!(t.commands.first(), Some(&format!("LHLO {}", hostname())));
    // LMTP waits for the QUIT reply (lmtp_skip_quit_response = no).
    assert_eq!(t.commands.last().map(String::as_str), Some("QUIT"));
    assert_eq!(t.end, None);
}

#[test]
fn lmtp_rejected_rcpt_gets_no_end_of_data_reply_slot() {
    // RCPT 2 is refused, so only RCPT 1 and 3 get a reply after the dot,
    // in RCPT order.
    let server = smtp_server(Behaviour {
        greeting: "220 scripted.test LMTP".into(),
        rcpt: vec![
            "250 2.1.5 Ok".into(),
            "550 5.1.1 <c@y.test> unknown".into(),
            "250 2.1.5 Ok".into(),
        ],
        lmtp_dot: vec![
            "452 4.2.2 <b@y.test> over quota".into(),
            "250 2.1.5 <d@y.test> delivered".into(),
        ],
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .lmtp()
        .rcpts(&["b@y.test", "c@y.test", "d@y.test"])
        .run()
        .expect(
            69,
            &[
                Line::deferred(
                    "b@y.test",
                    &server.relay(),
                    "4.2.2",
                    &said("452 4.2.2 <b@y.test> over quota", "end of DATA"),
                ),
                Line::bounced(
                    "c@y.test",
                    &server.relay(),
                    "5.1.1",
                    &said("550 5.1.1 <c@y.test> unknown", "RCPT TO"),
                ),
                Line::sent(
                    "d@y.test",
                    &server.relay(),
                    "2.1.5",
                    "250 2.1.5 <d@y.test> delivered",
                ),
            ],
        );
    let t = transcript(server);
    assert_eq!(t.commands.last().map(String::as_str), Some("QUIT"));
    assert_eq!(t.end, None, "the client waited for the QUIT reply");
}

#[test]
fn data_rejection_bounces_the_accepted_recipients() {
    let server = smtp_server(Behaviour {
        rcpt: vec!["250 2.1.5 Ok".into(), "550 5.1.1 unknown".into()],
        data: Some("554 5.7.1 no data for you".into()),
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            69,
            &[
                Line::bounced(
                    "b@y.test",
                    &server.relay(),
                    "5.7.1",
                    &said("554 5.7.1 no data for you", "DATA"),
                ),
                Line::bounced(
                    "c@y.test",
                    &server.relay(),
                    "5.1.1",
                    &said("550 5.1.1 unknown", "RCPT TO"),
                ),
            ],
        );
    let t = transcript(server);
    assert!(t.body.is_none());
}

#[test]
fn many_pipelined_recipients_beyond_the_send_window_are_all_sent() {
    // ~20 kB of RCPT commands: more than one pipelining window.
    let rcpts: Vec<String> = (0..600)
        .map(|i| format!("recipient-number-{i:04}@y.test"))
        .collect();
    let server = smtp_server(Behaviour::default());
    let mut send = Delivery::to(&server.nexthop());
    for r in &rcpts {
        send = send.rcpt(r);
    }
    let run = send.run();
    let expected: Vec<Line> = rcpts
        .iter()
        .map(|r| Line::sent(r, &server.relay(), "2.0.0", "250 2.0.0 Ok: queued as 4XYZ"))
        .collect();
    run.expect(0, &expected);
    let t = transcript(server);
    let got_rcpts: Vec<String> = t
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT TO:"))
        .cloned()
        .collect();
    let want_rcpts: Vec<String> = rcpts.iter().map(|r| format!("RCPT TO:<{r}>")).collect();
    assert_eq!(got_rcpts, want_rcpts);
}

// ---------------------------------------------------------------------------
// SMTPUTF8
// ---------------------------------------------------------------------------

#[test]
fn utf8_recipient_without_the_smtputf8_request_goes_as_it_is() {
    // Postfix: no request, no requirement; UTF-8 local parts worked before
    // SMTPUTF8 and keep working. An address with a UTF-8 local part has no
    // ASCII form: it goes whole as it is; an ASCII local part's domain goes
    // as an A-label.
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "8BITMIME"]));
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["üser@bücher.test", "user@bücher.test"])
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test> BODY=7BIT",
            "RCPT TO:<üser@bücher.test>",
            "RCPT TO:<user@xn--bcher-kva.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

#[test]
fn utf8_domains_go_as_a_labels_when_smtputf8_is_not_offered() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "8BITMIME"]));
    let run = Delivery::to(&server.nexthop())
        .from("a@bücher.test")
        .rcpts(&["b@Bücher.test", "c@y.test"])
        .smtputf8()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@xn--bcher-kva.test> BODY=7BIT",
            "RCPT TO:<b@xn--bcher-kva.test>",
            "RCPT TO:<c@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

#[test]
fn a_utf8_header_needs_smtputf8_when_requested() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "8BITMIME"]));
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message("Subject: Grüße\r\n\r\nbody\r\n".as_bytes())
        .smtputf8()
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &server.relay(),
                "5.6.7",
                &format!("SMTPUTF8 is required, but was not offered by host {PEER}"),
            )],
        );
    let t = transcript(server);
    assert_eq!(t.commands, commands(&[&ehlo(), "QUIT"]));
}

#[test]
fn utf8_recipient_bounces_when_smtputf8_is_not_offered() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "8BITMIME"]));
    Delivery::to(&server.nexthop())
        .rcpt("üser@y.test")
        .smtputf8()
        .run()
        .expect(
            69,
            &[Line::bounced(
                "üser@y.test",
                &server.relay(),
                "5.6.7",
                &format!("SMTPUTF8 is required, but was not offered by host {PEER}"),
            )],
        );
    let t = transcript(server);
    assert_eq!(t.commands, commands(&[&ehlo(), "QUIT"]));
}

#[test]
fn utf8_recipient_is_sent_with_smtputf8_when_offered() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "SMTPUTF8"]));
    Delivery::to(&server.nexthop())
        .rcpt("üser@y.test")
        .smtputf8()
        .run()
        .expect(
            0,
            &[Line::sent(
                "üser@y.test",
                &server.relay(),
                "2.0.0",
                "250 2.0.0 Ok: queued as 4XYZ",
            )],
        );
    let t = transcript(server);
    // SMTPUTF8 implies 8BITMIME (Postfix), so BODY= is sent too.
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test> BODY=7BIT SMTPUTF8",
            "RCPT TO:<üser@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

// ---------------------------------------------------------------------------
// Huge, stalled and hostile replies
// ---------------------------------------------------------------------------

#[test]
fn huge_rcpt_reply_is_capped_in_the_diagnostic() {
    let huge = format!("550 5.1.1 {}", "z".repeat(100_000));
    let server = smtp_server(Behaviour {
        rcpt: vec![huge],
        ..Behaviour::default().keywords(&["ENHANCEDSTATUSCODES"])
    });
    let run = Delivery::to(&server.nexthop()).rcpt("b@y.test").run();
    // reply_length_limit (2048) bytes of reply text are kept.
    let capped = format!("550 5.1.1 {}", "z".repeat(2048 - 10));
    run.expect(
        69,
        &[Line::bounced(
            "b@y.test",
            &server.relay(),
            "5.1.1",
            &said(&capped, "RCPT TO"),
        )],
    );
    let t = transcript(server);
    assert!(t.body.is_none());
}

#[test]
fn huge_multiline_ehlo_reply_still_allows_delivery() {
    // One 100 kB line, then ~100 kB of further continuation lines.
    let mut ehlo_reply = String::from("250-scripted.test\r\n250-PIPELINING\r\n");
    ehlo_reply.push_str(&format!("250-X-HUGE {}\r\n", "y".repeat(100_000)));
    for i in 0..1000 {
        ehlo_reply.push_str(&format!("250-X-JUNK-{i:04} {}\r\n", "j".repeat(90)));
    }
    ehlo_reply.push_str("250 8BITMIME\r\n");
    let server = smtp_server(Behaviour {
        ehlo_raw: Some(ehlo_reply.into_bytes()),
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            0,
            &[Line::sent(
                "b@y.test",
                &server.relay(),
                "2.0.0",
                "250 2.0.0 Ok: queued as 4XYZ",
            )],
        );
    let t = transcript(server);
    // Like Postfix, only the first line_length_limit (2048) bytes of a reply
    // are kept, so the 8BITMIME at the very end is not seen: no BODY=.
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
    assert_eq!(t.body.as_deref(), Some(SMALL_WIRE));
}

#[test]
fn ehlo_reply_stalling_mid_reply_times_out_with_helo_timeout() {
    let server = Server::start(|peer| {
        peer.reply("220 scripted.test ESMTP");
        let ehlo = peer.read_line();
        peer.send(b"250-first line\r\n");
        (ehlo, peer.drain())
    });
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("helo_timeout", "\"1s\"")
        .rcpt("b@y.test")
        .run();
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &server.relay(),
            "4.4.2",
            &format!("conversation with {PEER} timed out while performing the EHLO handshake"),
        )],
    );
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
    let (ehlo_line, (after, end)) = server.finish().expect("connected");
    assert_eq!(ehlo_line, Ok(ehlo()));
    // After a timeout the client just hangs up.
    assert_eq!(after, Vec::<String>::new());
    assert_eq!(end, End::Eof);
}

#[test]
fn silent_server_times_out_waiting_for_the_greeting() {
    let server = Server::start(|peer| peer.drain());
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("helo_timeout", "\"1s\"")
        .rcpt("b@y.test")
        .run();
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &server.relay(),
            "4.4.2",
            &format!(
                "conversation with {PEER} timed out while receiving the initial server greeting"
            ),
        )],
    );
    assert!(
        run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
    let (lines, end) = server.finish().expect("connected");
    assert_eq!((lines, end), (Vec::new(), End::Eof));
}

/// What [`slow_end_of_data`] saw: the commands before the body, then
/// what followed the final dot (or how the connection ended before it).
type EndOfDataSeen = (Vec<Result<String, End>>, Result<(Vec<String>, End), End>);

/// A server that answers the final dot after `delay` (or never, with None).
fn slow_end_of_data(delay: Option<Duration>) -> Server<EndOfDataSeen> {
    Server::start(move |peer| {
        let mut seen = Vec::new();
        peer.reply("220 scripted.test ESMTP");
        for reply in [
            "250 scripted.test",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 go ahead",
        ] {
            seen.push(peer.read_line());
            peer.reply(reply);
        }
        // Read the body and the final dot.
        for _ in 0..100 {
            match peer.read_line() {
                Ok(line) if line == "." => break,
                Ok(_) => {}
                Err(end) => return (seen, Err(end)),
            }
        }
        if let Some(delay) = delay {
            std::thread::sleep(delay);
            peer.reply("250 2.0.0 Ok: queued as SLOW");
        }
        (seen, Ok(peer.drain()))
    })
}

/// The one deferral a missing end-of-data reply gives.
fn expect_end_of_data_timeout(run: &common::Run, server: &Server<EndOfDataSeen>) {
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &server.relay(),
            "4.4.2",
            &format!(
                "conversation with {PEER} timed out while sending end of data -- message may be sent more than once"
            ),
        )],
    );
}

#[test]
fn missing_end_of_data_reply_times_out_with_data_done_timeout() {
    let server = slow_end_of_data(None);
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("data_done_timeout", "\"1s\"")
        .rcpt("b@y.test")
        .run();
    expect_end_of_data_timeout(&run, &server);
    assert!(
        run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
    let (seen, after) = server.finish().expect("connected");
    assert_eq!(
        seen,
        vec![
            Ok(ehlo()),
            Ok("MAIL FROM:<a@x.test>".into()),
            Ok("RCPT TO:<b@y.test>".into()),
            Ok("DATA".into()),
        ]
    );
    assert_eq!(after, Ok((Vec::new(), End::Eof)));
}

#[test]
fn end_of_data_reply_slower_than_the_earlier_read_limits_is_waited_for() {
    // The socket keeps the 1 s limit of the earlier reads; the final dot's
    // own 4 s limit still applies: a reply after 2 s is taken.
    let server = slow_end_of_data(Some(Duration::from_millis(2000)));
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("helo_timeout", "\"1s\"")
        .smtp_setting("mail_timeout", "\"1s\"")
        .smtp_setting("rcpt_timeout", "\"1s\"")
        .smtp_setting("data_init_timeout", "\"1s\"")
        .smtp_setting("data_done_timeout", "\"4s\"")
        .rcpt("b@y.test")
        .run();
    run.expect(
        0,
        &[Line::sent(
            "b@y.test",
            &server.relay(),
            "2.0.0",
            "250 2.0.0 Ok: queued as SLOW",
        )],
    );
    assert!(
        run.elapsed >= Duration::from_millis(2000),
        "took {:?}",
        run.elapsed
    );
    assert!(server.finish().is_some());
}

#[test]
fn end_of_data_limit_longer_than_the_earlier_ones_still_ends_the_wait() {
    // No reply at all: the wait ends at data_done_timeout (3 s), not at
    // the 1 s the socket kept from the earlier reads.
    let server = slow_end_of_data(None);
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("helo_timeout", "\"1s\"")
        .smtp_setting("mail_timeout", "\"1s\"")
        .smtp_setting("rcpt_timeout", "\"1s\"")
        .smtp_setting("data_init_timeout", "\"1s\"")
        .smtp_setting("data_done_timeout", "\"3s\"")
        .rcpt("b@y.test")
        .run();
    expect_end_of_data_timeout(&run, &server);
    assert!(
        run.elapsed >= Duration::from_millis(2900) && run.elapsed < Duration::from_secs(6),
        "took {:?}",
        run.elapsed
    );
    assert!(server.finish().is_some());
}

/// A server that accepts one message transaction up to the 354 reply and
/// then runs `after_354`.
fn until_354<T, F>(after_354: F) -> Server<T>
where
    T: Send + 'static,
    F: FnOnce(&mut common::Peer) -> T + Send + 'static,
{
    Server::start(move |peer| {
        peer.reply("220 scripted.test ESMTP");
        for reply in [
            "250 scripted.test",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 go ahead",
        ] {
            if peer.read_line().is_err() {
                break;
            }
            peer.reply(reply);
        }
        after_354(peer)
    })
}

/// 16 MB: more than loopback socket buffers hold, so writing it blocks or
/// fails when the server stops reading.
fn big_message() -> Vec<u8> {
    let mut message = b"Subject: big\n\n".to_vec();
    let line = [b"y".repeat(99), b"\n".to_vec()].concat();
    for _ in 0..160_000 {
        message.extend_from_slice(&line);
    }
    message
}

#[test]
fn server_that_stops_reading_the_body_times_out_with_data_xfer_timeout() {
    let release = Arc::new(AtomicBool::new(false));
    let released = Arc::clone(&release);
    let server = until_354(move |_peer| {
        // Read nothing more until the client has given up (bounded).
        for _ in 0..1000 {
            if released.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("data_xfer_timeout", "\"1s\"")
        .rcpt("b@y.test")
        .message(&big_message())
        .run();
    release.store(true, Ordering::SeqCst);
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &server.relay(),
            "4.4.2",
            &format!("conversation with {PEER} timed out while sending message body"),
        )],
    );
    // The timeout is per write (as Postfix's): writes that still make some
    // progress while socket buffers settle restart it, so allow a few periods.
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
    server.finish().expect("connected");
}

#[test]
fn server_closing_during_the_body_is_a_lost_connection_while_sending_message_body() {
    let server = until_354(|peer| {
        // Take a little of the body, then hang up with data unread (RST).
        let _ = peer.read_line();
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message(&big_message())
        .run()
        .expect(
            75,
            &[Line::deferred(
                "b@y.test",
                &server.relay(),
                "4.4.2",
                &format!("lost connection with {PEER} while sending message body"),
            )],
        );
    server.finish().expect("connected");
}

#[test]

fn early_reply_before_the_server_drops_the_body_is_reported() {
    let server = until_354(|peer| {
        let _ = peer.read_line();
        peer.reply("552 5.3.4 Message size exceeds fixed limit");
        std::thread::sleep(Duration::from_millis(50));
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message(&big_message())
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &server.relay(),
                "5.3.4",
                &said("552 5.3.4 Message size exceeds fixed limit", "end of DATA"),
            )],
        );
    server.finish().expect("connected");
}

#[test]
fn control_characters_in_replies_are_made_printable() {
    let server = smtp_server(Behaviour {
        rcpt: vec!["550 5.1.1 bad\x1b[31m user\x07".into()],
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &server.relay(),
                "5.1.1",
                &said("550 5.1.1 bad?[31m user?", "RCPT TO"),
            )],
        );
    transcript(server);
}

#[test]
fn reply_code_outside_2xx_to_5xx_at_mail_is_a_protocol_error() {
    let server = smtp_server(Behaviour {
        mail: "199 what".into(),
        ..Behaviour::default()
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &server.relay(),
                "5.5.0",
                &format!("Protocol error: {}", said("199 what", "MAIL FROM")),
            )],
        );
    let t = transcript(server);
    // This server accepts the pipelined RCPT and DATA regardless; the client
    // then ends the DATA phase at once with a lone "." (no content).
    assert_eq!(t.body.as_deref(), Some(&b""[..]), "{t:?}");
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

#[test]
fn garbage_reply_line_with_pipelining_bounces_at_once() {
    // A line without a reply code after MAIL's 250, then silence: with
    // PIPELINING in effect that is a protocol error at once (5.5.0), not a
    // wait for the RCPT timeout.
    let server = Server::start(|peer| {
        peer.reply("220 scripted.test ESMTP");
        let _ = peer.read_line();
        peer.send(b"250-scripted.test\r\n250 PIPELINING\r\n");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(peer.read_line());
        }
        peer.send(b"250 2.1.0 Ok\r\nthis is no reply\r\n");
        (got, peer.drain())
    });
    let run = Delivery::to(&server.nexthop())
        .smtp_setting("rcpt_timeout", "\"20s\"")
        .rcpt("b@y.test")
        .run();
    run.expect(
        69,
        &[Line::bounced(
            "b@y.test",
            &server.relay(),
            "5.5.0",
            &format!("Protocol error: {}", said("this is no reply", "RCPT TO")),
        )],
    );
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
    let (got, (after, end)) = server.finish().expect("connected");
    assert_eq!(
        got,
        vec![
            Ok("MAIL FROM:<a@x.test>".to_string()),
            Ok("RCPT TO:<b@y.test>".to_string()),
            Ok("DATA".to_string())
        ]
    );
    assert_eq!(after, Vec::<String>::new());
    assert_eq!(end, End::Eof);
}

// ---------------------------------------------------------------------------
// Envelope safety
// ---------------------------------------------------------------------------

#[test]
fn recipient_with_crlf_is_bounced_and_nothing_is_injected() {
    let server = smtp_server(Behaviour::default());
    let evil = "a@y.test\r\nRSET";
    let run = Delivery::to(&server.nexthop())
        .rcpts(&[evil, "good@y.test"])
        .json()
        .id("inject")
        .run();
    assert_eq!(run.code, 69, "{run:#?}");
    assert_eq!(
        run.json(),
        json!({
            "id": "inject",
            "recipients": [
                {"address": evil, "status": "bounced", "dsn": "5.1.3", "relay": null,
                 "diagnostic": "bad recipient address syntax: address contains a control character", "tls": null,
                 "tls_policy": null},
                {"address": "good@y.test", "status": "sent", "dsn": "2.0.0",
                 "relay": server.relay(), "diagnostic": "250 2.0.0 Ok: queued as 4XYZ", "tls": null,
                 "tls_policy": {"level": "may", "source": "default", "reason": "security_level may"}},
            ]
        }),
        "{run:#?}"
    );
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<good@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
    assert!(!t.commands.iter().any(|c| c.contains("RSET")));
}

#[test]
fn recipient_with_crlf_alone_is_bounced_without_connecting() {
    let server = smtp_server(Behaviour::default());
    Delivery::to(&server.nexthop())
        .rcpt("a@y.test\nRSET")
        .json()
        .run()
        .json();
    assert!(
        server.finish().is_none(),
        "connected for no valid recipient"
    );
}

#[test]
fn sender_with_newline_bounces_every_recipient_without_connecting() {
    let server = smtp_server(Behaviour::default());
    let diag = "bad sender address syntax: address contains a control character";
    Delivery::to(&server.nexthop())
        .from("a@x.test\nRSET")
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            69,
            &[
                Line::bounced("b@y.test", "none", "5.1.7", diag),
                Line::bounced("c@y.test", "none", "5.1.7", diag),
            ],
        );
    assert!(server.finish().is_none(), "connected with a bad sender");
}

#[test]
fn text_result_shows_control_characters_in_addresses_as_question_marks() {
    let server = smtp_server(Behaviour::default());
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["a@y.test\r\nRSET", "good@y.test"])
        .run();
    assert_eq!(
        run.stdout,
        format!(
            "to=<a@y.test??RSET>, relay=none, dsn=5.1.3, status=bounced \
             (bad recipient address syntax: address contains a control character)\n\
             to=<good@y.test>, relay={}, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XYZ)\n",
            server.relay()
        ),
        "{run:#?}"
    );
    assert_eq!(run.code, 69, "{run:#?}");
    transcript(server);
}

#[test]
fn non_dot_atom_local_parts_are_quoted_and_the_null_sender_is_empty() {
    let server = smtp_server(Behaviour::default());
    Delivery::to(&server.nexthop())
        .from("")
        .rcpts(&["a b@y.test", "q\"uote@y.test"])
        .run()
        .expect(
            0,
            &[
                Line::sent(
                    "a b@y.test",
                    &server.relay(),
                    "2.0.0",
                    "250 2.0.0 Ok: queued as 4XYZ",
                ),
                Line::sent(
                    "q\"uote@y.test",
                    &server.relay(),
                    "2.0.0",
                    "250 2.0.0 Ok: queued as 4XYZ",
                ),
            ],
        );
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<>",
            "RCPT TO:<\"a b\"@y.test>",
            "RCPT TO:<\"q\\\"uote\"@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

// ---------------------------------------------------------------------------
// DSN
// ---------------------------------------------------------------------------

#[test]
fn orcpt_is_sent_when_dsn_is_offered() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "DSN"]));
    Delivery::to(&server.nexthop())
        .rcpts(&["b@y.test", "c+tag@y.test"])
        .run()
        .expect(
            0,
            &[
                Line::sent(
                    "b@y.test",
                    &server.relay(),
                    "2.0.0",
                    "250 2.0.0 Ok: queued as 4XYZ",
                ),
                Line::sent(
                    "c+tag@y.test",
                    &server.relay(),
                    "2.0.0",
                    "250 2.0.0 Ok: queued as 4XYZ",
                ),
            ],
        );
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@y.test> ORCPT=rfc822;b@y.test",
            "RCPT TO:<c+tag@y.test> ORCPT=rfc822;c+2Btag@y.test",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

#[test]

fn orcpt_keeps_quoting_and_uses_utf8_type_like_postfix() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING", "DSN", "SMTPUTF8"]));
    let run = Delivery::to(&server.nexthop())
        .rcpts(&["a b@y.test", "üser@y.test"])
        .smtputf8()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test> BODY=7BIT SMTPUTF8",
            "RCPT TO:<\"a b\"@y.test> ORCPT=rfc822;\"a+20b\"@y.test",
            "RCPT TO:<üser@y.test> ORCPT=utf-8;üser@y.test",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

#[test]
fn orcpt_is_absent_when_dsn_is_not_offered() {
    let server = smtp_server(Behaviour::default().keywords(&["PIPELINING"]));
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            0,
            &[Line::sent(
                "b@y.test",
                &server.relay(),
                "2.0.0",
                "250 2.0.0 Ok: queued as 4XYZ",
            )],
        );
    let t = transcript(server);
    assert_eq!(
        t.commands,
        commands(&[
            &ehlo(),
            "MAIL FROM:<a@x.test>",
            "RCPT TO:<b@y.test>",
            "DATA",
            ".",
            "QUIT"
        ])
    );
}

// ---------------------------------------------------------------------------
// Handshake failures
// ---------------------------------------------------------------------------

#[test]

fn ehlo_421_is_a_site_failure_refused_to_talk_to_me() {
    let server = Server::start(|peer| {
        peer.reply("220 scripted.test ESMTP");
        let ehlo = peer.read_line();
        peer.reply("421 4.3.2 Service shutting down");
        (ehlo, peer.drain())
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            75,
            &[Line::deferred(
                "b@y.test",
                &server.relay(),
                "4.3.2",
                &format!("host {PEER} refused to talk to me: 421 4.3.2 Service shutting down"),
            )],
        );
    let (ehlo_line, (after, _)) = server.finish().expect("connected");
    assert_eq!(ehlo_line, Ok(ehlo()));
    assert!(!after.iter().any(|c| c.starts_with("HELO")), "{after:?}");
}

#[test]
fn ehlo_rejected_falls_back_to_helo_and_then_bounces_on_helo_rejection() {
    let server = Server::start(|peer| {
        let mut seen = Vec::new();
        peer.reply("220 scripted.test ESMTP");
        seen.push(peer.read_line());
        peer.reply("502 5.5.2 Error: command not recognized");
        seen.push(peer.read_line());
        peer.reply("554 5.7.1 go away");
        (seen, peer.drain())
    });
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &server.relay(),
                "5.7.1",
                &format!("host {PEER} refused to talk to me: 554 5.7.1 go away"),
            )],
        );
    let (seen, _) = server.finish().expect("connected");
    assert_eq!(seen, vec![Ok(ehlo()), Ok(format!("HELO {}", hostname()))]);
}

// ---------------------------------------------------------------------------
// Command-line error paths
// ---------------------------------------------------------------------------

#[test]
fn missing_message_file_exits_66_without_connecting() {
    let server = smtp_server(Behaviour::default());
    let missing = "/nonexistent/mailhop-test/message";
    let run = Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message_arg(missing)
        .run();
    assert_eq!(run.code, 66, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "mailhop: cannot read message {missing}: No such file or directory"
        )),
        "{run:#?}"
    );
    assert!(server.finish().is_none(), "connected without a message");
}

#[test]
fn bad_config_file_exits_78_naming_the_key() {
    let server = smtp_server(Behaviour::default());
    let cases = [
        (
            "[smtp]\nbogus_key = 1\n",
            "line 2: smtp.bogus_key: unknown field `bogus_key` in [smtp]",
        ),
        (
            "[smtp]\nmail_timeout = \"1x\"\n",
            "line 2: smtp.mail_timeout: invalid duration \"1x\": unknown unit \"x\", expected ms, s, m, h, d or w",
        ),
    ];
    for (config, message) in cases {
        let run = Delivery::to(&server.nexthop())
            .raw_config(config)
            .rcpt("b@y.test")
            .run();
        assert_eq!(run.code, 78, "{run:#?}");
        assert_eq!(run.stdout, "", "{run:#?}");
        assert!(run.stderr.contains(message), "{message:?} in {run:#?}");
    }
    assert!(
        server.finish().is_none(),
        "connected with a bad configuration"
    );
}

#[test]
fn bad_destinations_defer_every_recipient_with_4_3_5() {
    let long_unix = format!("unix:/tmp/{}", "s".repeat(200));
    let cases: Vec<(String, bool, String)> = vec![
        ("[127.0.0.1]:0".into(), false, "bad network port: 0".into()),
        (
            "[127.0.0.1]:99999".into(),
            false,
            "bad network port: 99999".into(),
        ),
        (
            "[127.0.0.1]:nosuchservice".into(),
            false,
            "unknown service: nosuchservice/tcp".into(),
        ),
        (long_unix.clone(), true, "unix-domain name too long".into()),
        (" , ".into(), false, "empty destination list".into()),
    ];
    let started = Instant::now();
    for (destination, lmtp, reason) in cases {
        let mut send = Delivery::to(&destination).rcpts(&["b@y.test", "c@y.test"]);
        if lmtp {
            send = send.lmtp();
        }
        let diag = format!("bad destination {destination:?}: {reason}");
        send.run().expect(
            75,
            &[
                Line::deferred("b@y.test", "none", "4.3.5", &diag),
                Line::deferred("c@y.test", "none", "4.3.5", &diag),
            ],
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn message_from_standard_input_is_delivered() {
    let server = smtp_server(Behaviour::default());
    Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message(SMALL_MESSAGE)
        .via_stdin()
        .run()
        .expect(
            0,
            &[Line::sent(
                "b@y.test",
                &server.relay(),
                "2.0.0",
                "250 2.0.0 Ok: queued as 4XYZ",
            )],
        );
    let t = transcript(server);
    assert_eq!(t.body.as_deref(), Some(SMALL_WIRE));
}
