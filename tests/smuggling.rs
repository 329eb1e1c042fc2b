//! SMTP smuggling through mailhop: the published end-of-data variants
//! (`\n.\n`, `\r.\r`, `\r\n.\r`, `\n.\r\n`, `\r.\n`, `\r\n.\n`, `\n.\r`,
//! `.\r\n` after a bare LF), each followed by a smuggled `MAIL FROM:`
//! transaction, are put into a message and sent with `mailhop send`.
//!
//! The receiver is an in-process scripted server that records every byte
//! that arrived. It asserts what a lenient receiver could not misread:
//! exactly one message and one `MAIL FROM`, no line on the wire that is a
//! lone `.` except the real end, no bare CR nor bare LF in the DATA stream,
//! and the smuggled `MAIL FROM:` only ever as message text. With
//! `[smtp] replace_stray_cr = false` a bare CR reaches the wire (the
//! setting's documented effect); bare LFs still never do.

mod common;

use std::time::Duration;

use common::{Delivery, End, Peer, Server};

/// Most lines one session may take: a bound for the receiver's loop.
const MAX_LINES: usize = 10_000;

/// What the recording receiver saw on one connection.
#[derive(Debug, Default)]
struct Wire {
    /// Every command line, raw (with its line ending).
    commands: Vec<Vec<u8>>,
    /// Each message's raw DATA bytes, up to and including its end line.
    messages: Vec<Vec<u8>>,
}

/// A strict receiver (only `CRLF . CRLF` ends the data) that keeps the raw
/// bytes of everything.
fn recording_server() -> Server<Wire> {
    Server::start(|peer: &mut Peer| {
        let mut wire = Wire::default();
        peer.send(b"220 rec.test ESMTP\r\n");
        let mut data: Option<Vec<u8>> = None;
        for _ in 0..MAX_LINES {
            let line = match peer.read_raw_line_within(Duration::from_secs(10)) {
                Ok(line) => line,
                Err(End::Eof | End::Timeout | End::Error) => break,
            };
            if let Some(message) = data.as_mut() {
                message.extend_from_slice(&line);
                if line == b".\r\n" {
                    wire.messages.extend(data.take());
                    peer.send(b"250 2.0.0 Ok: queued\r\n");
                }
                continue;
            }
            wire.commands.push(line.clone());
            let verb = String::from_utf8_lossy(&line).to_ascii_uppercase();
            if verb.starts_with("EHLO") {
                peer.send(b"250-rec.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
            } else if verb.starts_with("MAIL") || verb.starts_with("RCPT") {
                peer.send(b"250 2.1.0 Ok\r\n");
            } else if verb.starts_with("DATA") {
                peer.send(b"354 go\r\n");
                data = Some(Vec::new());
            } else if verb.starts_with("QUIT") {
                peer.send(b"221 bye\r\n");
                break;
            } else {
                peer.send(b"502 5.5.2 what\r\n");
            }
        }
        wire
    })
}

const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n\r\nsmuggled\r\n";

/// The published variants (the end-of-data sequence a lenient receiver
/// might accept).
const PAYLOADS: &[(&str, &[u8])] = &[
    ("lf-dot-lf", b"\n.\n"),
    ("cr-dot-cr", b"\r.\r"),
    ("crlf-dot-cr", b"\r\n.\r"),
    ("lf-dot-crlf", b"\n.\r\n"),
    ("cr-dot-lf", b"\r.\n"),
    ("crlf-dot-lf", b"\r\n.\n"),
    ("lf-dot-cr", b"\n.\r"),
    ("dot-crlf-after-bare-lf", b"\nx\n.\r\n"),
    ("cr-dot-crlf", b"\r.\r\n"),
];

fn message_with(payload: &[u8]) -> Vec<u8> {
    let mut message = b"From: a@x.test\r\nSubject: smuggling\r\n\r\nhello".to_vec();
    message.extend_from_slice(payload);
    message.extend_from_slice(SMUGGLED);
    message.extend_from_slice(b"bye\r\n");
    message
}

fn deliver(payload: &[u8], replace_stray_cr: bool) -> Wire {
    let server = recording_server();
    let run = Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .message(&message_with(payload))
        .smtp_setting("replace_stray_cr", &replace_stray_cr.to_string())
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    server.finish().expect("mailhop connected")
}

/// Lines of `data` as a lenient receiver might split them: at CRLF, LF or
/// CR alone.
fn lenient_lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n' || b == b'\r')
        .filter(|line| !line.is_empty())
        .collect()
}

fn assert_one_clean_message(name: &str, wire: &Wire) {
    let mails: Vec<_> = wire
        .commands
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with(b"MAIL"))
        .collect();
    assert_eq!(mails.len(), 1, "{name}: {:?}", wire.commands);
    assert!(
        mails.iter().all(|m| m.starts_with(b"MAIL FROM:<a@x.test>")),
        "{name}: {mails:?}"
    );
    assert!(
        !wire
            .commands
            .iter()
            .any(|c| c.windows(5).any(|w| w == b"evil@")),
        "{name}: a smuggled command arrived as a command: {:?}",
        wire.commands
    );
    assert_eq!(wire.messages.len(), 1, "{name}: {:?}", wire.messages);
    let data = &wire.messages[0];
    // No bare CR, no bare LF.
    for (i, &b) in data.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(
                data.get(i + 1),
                Some(&b'\n'),
                "{name}: bare CR at {i}: {data:?}"
            );
        }
        if b == b'\n' {
            assert!(
                i > 0 && data[i - 1] == b'\r',
                "{name}: bare LF at {i}: {data:?}"
            );
        }
    }
    // No lone dot line except the real end, however leniently split.
    let lines = lenient_lines(data);
    let dots = lines.iter().filter(|l| **l == b".").count();
    assert_eq!(dots, 1, "{name}: {data:?}");
    assert_eq!(lines.last().copied(), Some(&b"."[..]), "{name}");
    // The smuggled transaction is message text.
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(b"MAIL FROM:<evil@attacker.test>")),
        "{name}: {data:?}"
    );
    assert!(data.ends_with(b"bye\r\n.\r\n"), "{name}: {data:?}");
}

#[test]
fn no_published_payload_smuggles_a_second_message() {
    for (name, payload) in PAYLOADS {
        let wire = deliver(payload, true);
        assert_one_clean_message(name, &wire);
    }
}

#[test]
fn a_stray_cr_becomes_a_space_as_in_postfix_cleanup() {
    let wire = deliver(b"\r.\r", true);
    let data = &wire.messages[0];
    assert!(
        data.windows(13).any(|w| w == b"hello . MAIL "),
        "{:?}",
        String::from_utf8_lossy(data)
    );
}

#[test]
fn replace_stray_cr_false_passes_a_bare_cr_but_never_a_bare_lf() {
    let wire = deliver(b"\r.\r", false);
    assert_eq!(wire.messages.len(), 1);
    let data = &wire.messages[0];
    assert!(data.windows(3).any(|w| w == b"\r.\r"), "{data:?}");
    // Bare LFs still become CRLF and a lone dot is still stuffed.
    let wire = deliver(b"\n.\n", false);
    assert_one_clean_message("lf-dot-lf, pass-through", &wire);
}
