//! End-to-end tests against a real Postfix `smtp-sink` (see
//! ../shared/reference/postfix-smtp-client.md §11–12 for the flags and
//! the result texts Postfix 3.7 produces against the same peers).
//!
//! Each test starts its own sink(s) on a free loopback port or a private
//! UNIX socket; the guards stop them. Without smtp-sink the tests print
//! SKIPPED and pass, except under `CI=true`, where they fail.

mod common;

use std::fs;
use std::time::Duration;

use common::{Delivery, Line, Listen, PEER, Server, Sink, hostname, relay, said};
use serde_json::json;

/// smtp-sink's replies for `-f` / `-r` commands.
const HARD: &str = "500 5.3.0 Error: command failed";
const SOFT: &str = "450 4.3.0 Error: command failed";

fn refused(reply: &str) -> String {
    format!("host {PEER} refused to talk to me: {reply}")
}

#[test]
fn smtp_delivery_to_two_recipients_is_sent_in_text_and_json() {
    let Some(sink) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let send = Delivery::to(&sink.nexthop()).rcpts(&["b@y.test", "c@y.test"]);
    send.run().expect(
        0,
        &[
            Line::sent("b@y.test", &sink.relay(), "2.0.0", "250 2.0.0 Ok"),
            Line::sent("c@y.test", &sink.relay(), "2.0.0", "250 2.0.0 Ok"),
        ],
    );

    let run = send.json().id("sink-json-1").run();
    assert_eq!(run.code, 0, "{run:#?}");
    let relay = sink.relay();
    assert_eq!(
        run.json(),
        json!({
            "id": "sink-json-1",
            "recipients": [
                {"address": "b@y.test", "status": "sent", "dsn": "2.0.0",
                 "relay": relay, "diagnostic": "250 2.0.0 Ok", "tls": null,
                 "tls_policy": {"level": "may", "source": "default", "reason": "security_level may"}},
                {"address": "c@y.test", "status": "sent", "dsn": "2.0.0",
                 "relay": relay, "diagnostic": "250 2.0.0 Ok", "tls": null,
                 "tls_policy": {"level": "may", "source": "default", "reason": "security_level may"}},
            ]
        }),
        "{run:#?}"
    );
}

#[test]
fn lmtp_over_unix_socket_gives_one_result_per_recipient() {
    let Some(sink) = Sink::start(Listen::Unix, &["-L"]) else {
        return;
    };
    let relay = format!("{}[{}]", hostname(), sink.socket.display());
    let run = Delivery::to(&sink.unix_nexthop())
        .lmtp()
        .rcpts(&["b@y.test", "c@y.test", "d@y.test"])
        .run();
    run.expect(
        0,
        &[
            Line::sent("b@y.test", &relay, "2.2.0", "250 2.2.0 Ok"),
            Line::sent("c@y.test", &relay, "2.2.0", "250 2.2.0 Ok"),
            Line::sent("d@y.test", &relay, "2.2.0", "250 2.2.0 Ok"),
        ],
    );
}

#[test]
fn lmtp_over_tcp_delivers_every_recipient() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-L"]) else {
        return;
    };
    let rcpts = ["r1@y.test", "r2@y.test", "r3@y.test", "r4@y.test"];
    let expected: Vec<Line> = rcpts
        .iter()
        .map(|r| Line::sent(r, &sink.relay(), "2.2.0", "250 2.2.0 Ok"))
        .collect();
    // Both spellings of an LMTP TCP destination.
    Delivery::to(&sink.nexthop())
        .lmtp()
        .rcpts(&rcpts)
        .run()
        .expect(0, &expected);
    Delivery::to(&format!("inet:{}", sink.nexthop()))
        .lmtp()
        .rcpts(&rcpts)
        .run()
        .expect(0, &expected);
}

#[test]
fn greeting_5xx_is_deferred_by_default_and_the_next_nexthop_is_tried() {
    let Some(bad) = Sink::start(Listen::Tcp, &["-f", "connect"]) else {
        return;
    };
    Delivery::to(&bad.nexthop()).rcpt("b@y.test").run().expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &bad.relay(),
            "4.3.0",
            &refused(HARD),
        )],
    );

    // skip_5xx_greeting = false: the 5xx greeting is final.
    Delivery::to(&bad.nexthop())
        .smtp_setting("skip_5xx_greeting", "false")
        .rcpt("b@y.test")
        .run()
        .expect(
            69,
            &[Line::bounced(
                "b@y.test",
                &bad.relay(),
                "5.3.0",
                &refused(HARD),
            )],
        );

    let Some(good) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let list = format!("{}, {}", bad.nexthop(), good.nexthop());
    Delivery::to(&list).rcpt("b@y.test").run().expect(
        0,
        &[Line::sent(
            "b@y.test",
            &good.relay(),
            "2.0.0",
            "250 2.0.0 Ok",
        )],
    );
}

#[test]
fn greeting_4xx_is_deferred_and_the_next_nexthop_is_tried() {
    let Some(bad) = Sink::start(Listen::Tcp, &["-r", "connect"]) else {
        return;
    };
    Delivery::to(&bad.nexthop()).rcpt("b@y.test").run().expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &bad.relay(),
            "4.3.0",
            &refused(SOFT),
        )],
    );

    let Some(good) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let list = format!("{} {}", bad.nexthop(), good.nexthop());
    Delivery::to(&list)
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            0,
            &[
                Line::sent("b@y.test", &good.relay(), "2.0.0", "250 2.0.0 Ok"),
                Line::sent("c@y.test", &good.relay(), "2.0.0", "250 2.0.0 Ok"),
            ],
        );
}

#[test]
fn ehlo_and_helo_rejected_bounces_without_trying_the_next_nexthop() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-f", "ehlo,helo"]) else {
        return;
    };
    // The second destination records whether anybody connected.
    let second = Server::start(|_peer| ());
    let list = format!("{}, {}", sink.nexthop(), second.nexthop());
    let run = Delivery::to(&list).rcpts(&["b@y.test", "c@y.test"]).run();
    run.expect(
        69,
        &[
            Line::bounced("b@y.test", &sink.relay(), "5.3.0", &refused(HARD)),
            Line::bounced("c@y.test", &sink.relay(), "5.3.0", &refused(HARD)),
        ],
    );
    assert!(
        second.finish().is_none(),
        "the second nexthop was connected after a hard HELO rejection"
    );
}

#[test]
fn server_without_esmtp_gets_helo_and_the_mail_is_sent() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-e", "-d", "{dir}/dump/%M."]) else {
        return;
    };
    Delivery::to(&sink.nexthop()).rcpt("b@y.test").run().expect(
        0,
        &[Line::sent(
            "b@y.test",
            &sink.relay(),
            "2.0.0",
            "250 2.0.0 Ok",
        )],
    );
    let dumps = sink.wait_files("dump", 1);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = fs::read_to_string(&dumps[0]).expect("read the dump");
    // HELO, not EHLO: plain SMTP, and no ESMTP parameters on MAIL/RCPT.
    let head: Vec<&str> = dump.lines().take(5).collect();
    assert_eq!(
        head,
        [
            "X-Client-Addr: 127.0.0.1".to_string(),
            "X-Client-Proto: SMTP".to_string(),
            format!("X-Helo-Args: {}", hostname()),
            "X-Mail-Args: <a@x.test>".to_string(),
            "X-Rcpt-Args: <b@y.test>".to_string(),
        ],
        "{dump}"
    );
}

#[test]
fn rcpt_4xx_is_deferred_with_the_server_reply() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-r", "rcpt"]) else {
        return;
    };
    let diag = said(SOFT, "RCPT TO");
    Delivery::to(&sink.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            75,
            &[
                Line::deferred("b@y.test", &sink.relay(), "4.3.0", &diag),
                Line::deferred("c@y.test", &sink.relay(), "4.3.0", &diag),
            ],
        );

    // Soft RCPT failures are retried at the next nexthop (Postfix: sent via the 2nd).
    let Some(good) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let list = format!("{}, {}", sink.nexthop(), good.nexthop());
    Delivery::to(&list).rcpt("b@y.test").run().expect(
        0,
        &[Line::sent(
            "b@y.test",
            &good.relay(),
            "2.0.0",
            "250 2.0.0 Ok",
        )],
    );
}

#[test]
fn rcpt_5xx_with_custom_text_is_bounced_with_its_enhanced_code() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-B", "550 5.1.1 No such user", "-f", "rcpt"])
    else {
        return;
    };
    let diag = said("550 5.1.1 No such user", "RCPT TO");
    Delivery::to(&sink.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            69,
            &[
                Line::bounced("b@y.test", &sink.relay(), "5.1.1", &diag),
                Line::bounced("c@y.test", &sink.relay(), "5.1.1", &diag),
            ],
        );
}

#[test]
fn end_of_data_4xx_is_deferred_and_the_next_nexthop_gets_the_mail() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-r", "."]) else {
        return;
    };
    let diag = said(SOFT, "end of DATA");
    Delivery::to(&sink.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            75,
            &[
                Line::deferred("b@y.test", &sink.relay(), "4.3.0", &diag),
                Line::deferred("c@y.test", &sink.relay(), "4.3.0", &diag),
            ],
        );

    let Some(good) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let list = format!("{}, {}", sink.nexthop(), good.nexthop());
    Delivery::to(&list).rcpt("b@y.test").run().expect(
        0,
        &[Line::sent(
            "b@y.test",
            &good.relay(),
            "2.0.0",
            "250 2.0.0 Ok",
        )],
    );
}

#[test]
fn reply_421_at_rcpt_defers_with_4_0_0() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-Q", "rcpt"]) else {
        return;
    };
    let diag = said("421 4.0.0 Server closing connection", "RCPT TO");
    Delivery::to(&sink.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            75,
            &[
                Line::deferred("b@y.test", &sink.relay(), "4.0.0", &diag),
                Line::deferred("c@y.test", &sink.relay(), "4.0.0", &diag),
            ],
        );
}

#[test]
fn connection_dropped_at_data_is_deferred_as_lost_connection() {
    // smtp-sink answers the pipelined MAIL and RCPTs, then drops the
    // connection on DATA: the oldest unanswered command is DATA, which is
    // what Postfix names too.
    let Some(sink) = Sink::start(Listen::Tcp, &["-q", "data"]) else {
        return;
    };
    let diag = format!("lost connection with {PEER} while sending DATA command");
    Delivery::to(&sink.nexthop())
        .rcpts(&["b@y.test", "c@y.test"])
        .run()
        .expect(
            75,
            &[
                Line::deferred("b@y.test", &sink.relay(), "4.4.2", &diag),
                Line::deferred("c@y.test", &sink.relay(), "4.4.2", &diag),
            ],
        );
}

#[test]
fn slow_mail_reply_times_out_with_the_configured_mail_timeout() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-p", "-W", "mail:5"]) else {
        return;
    };
    let run = Delivery::to(&sink.nexthop())
        .smtp_setting("mail_timeout", "\"1s\"")
        .rcpt("b@y.test")
        .run();
    run.expect(
        75,
        &[Line::deferred(
            "b@y.test",
            &sink.relay(),
            "4.4.2",
            &format!("conversation with {PEER} timed out while sending MAIL FROM"),
        )],
    );
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn message_content_reaches_the_server_in_smtp_wire_form() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-d", "{dir}/dump/%M."]) else {
        return;
    };
    let long: Vec<u8> = b"0123456789".repeat(150); // 1500 bytes
    let mut message = Vec::new();
    message.extend_from_slice(b"From: a@x.test\nSubject: dump test\n\n");
    message.extend_from_slice(b".leading dot\n..two dots\n.\nplain\r\n");
    message.extend_from_slice(&long);
    message.extend_from_slice(b"\n8bit: caf\xc3\xa9 \xff\nno final newline");

    Delivery::to(&sink.nexthop())
        .rcpt("b@y.test")
        .message(&message)
        .run()
        .expect(
            0,
            &[Line::sent(
                "b@y.test",
                &sink.relay(),
                "2.0.0",
                "250 2.0.0 Ok",
            )],
        );

    let dumps = sink.wait_files("dump", 1);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = fs::read(&dumps[0]).expect("read the dump");

    // smtp-sink writes its envelope records, a three-line Received: header,
    // then each received line un-dot-stuffed with LF endings, then an empty line.
    let text = String::from_utf8_lossy(&dump);
    let records: Vec<&str> = text.lines().take(6).collect();
    assert_eq!(
        records,
        [
            "X-Client-Addr: 127.0.0.1".to_string(),
            "X-Client-Proto: ESMTP".to_string(),
            format!("X-Helo-Args: {}", hostname()),
            "X-Mail-Args: <a@x.test> BODY=8BITMIME".to_string(),
            "X-Rcpt-Args: <b@y.test> ORCPT=rfc822;b@y.test".to_string(),
            format!("Received: from {} ([127.0.0.1])", hostname()),
        ],
        "{text}"
    );
    let mut rest: &[u8] = &dump;
    for _ in 0..8 {
        let newline = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("8 header lines");
        rest = &rest[newline + 1..];
    }
    let content = rest;

    let mut expected = Vec::new();
    expected.extend_from_slice(b"From: a@x.test\nSubject: dump test\n\n");
    expected.extend_from_slice(b".leading dot\n..two dots\n.\nplain\n");
    // Broken after 998 bytes with CRLF SPACE; the sink stores lines with LF.
    expected.extend_from_slice(&long[..998]);
    expected.extend_from_slice(b"\n ");
    expected.extend_from_slice(&long[998..]);
    expected.extend_from_slice(b"\n8bit: caf\xc3\xa9 \xff\nno final newline\n");
    expected.extend_from_slice(b"\n");
    assert_eq!(
        String::from_utf8_lossy(content),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(content, &expected[..]);
}

#[test]
fn lmtp_soft_end_of_data_defers_every_recipient() {
    let Some(sink) = Sink::start(Listen::Unix, &["-L", "-r", "."]) else {
        return;
    };
    let relay = format!("{}[{}]", hostname(), sink.socket.display());
    let diag = format!("host {relay} said: {SOFT} (in reply to end of DATA command)");
    Delivery::to(&sink.unix_nexthop())
        .lmtp()
        .rcpts(&["b@y.test", "c@y.test", "d@y.test"])
        .run()
        .expect(
            75,
            &[
                Line::deferred("b@y.test", &relay, "4.3.0", &diag),
                Line::deferred("c@y.test", &relay, "4.3.0", &diag),
                Line::deferred("d@y.test", &relay, "4.3.0", &diag),
            ],
        );
}

#[test]
fn refused_port_before_a_good_nexthop_is_skipped() {
    let Some(good) = Sink::start(Listen::Tcp, &[]) else {
        return;
    };
    let closed = common::ClosedPort::new();
    Delivery::to(&closed.nexthop())
        .rcpt("b@y.test")
        .run()
        .expect(
            75,
            &[Line::deferred(
                "b@y.test",
                "none",
                "4.4.1",
                &format!("connect to {PEER}:{}: Connection refused", closed.port),
            )],
        );
    let list = format!("{}, {}", closed.nexthop(), good.nexthop());
    Delivery::to(&list).rcpt("b@y.test").run().expect(
        0,
        &[Line::sent(
            "b@y.test",
            &relay(good.port),
            "2.0.0",
            "250 2.0.0 Ok",
        )],
    );
}
