//! 8-bit to 7-bit MIME conversion against the reference: for each test
//! message, a private Postfix queues it (injected with BODY=8BITMIME), the
//! queued form is read back (`postcat -bh` while the message is held),
//! Postfix's smtp(8) relays it to a dumping smtp-sink that does not
//! announce 8BITMIME (`-8`), and mailhop sends the queued form to a second
//! such sink. The two dumps must be equal byte for byte, but for the lines
//! smtp-sink adds itself (its X-* envelope records and its Received:
//! header).
//!
//! Needs root, Postfix and smtp-sink: skipped loudly without them, a
//! failure under `CI=true`.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::postfix_relay::PostfixRelay;
use common::*;

/// Longest wait for Postfix's delivery to reach its sink.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

/// The message content of a dump: without smtp-sink's own X-Client-Addr,
/// X-Client-Proto, X-Helo-Args, X-Mail-Args and X-Rcpt-Args records and
/// without its Received: header (the first one, with its continuation
/// lines).
fn content_of(dump: &[u8]) -> Vec<u8> {
    let mut lines = dump.split_inclusive(|&b| b == b'\n').peekable();
    while lines.peek().is_some_and(|l| {
        [
            &b"X-Client-Addr:"[..],
            b"X-Client-Proto:",
            b"X-Helo-Args:",
            b"X-Mail-Args:",
            b"X-Rcpt-Args:",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    }) {
        lines.next();
    }
    if lines.peek().is_some_and(|l| l.starts_with(b"Received:")) {
        lines.next();
        while lines
            .peek()
            .is_some_and(|l| l.starts_with(b" ") || l.starts_with(b"\t"))
        {
            lines.next();
        }
    }
    lines.flatten().copied().collect()
}

/// The dumps in `sink`'s dump directory, waiting (bounded) for `count`.
fn wait_dumps(sink: &Sink, count: usize, postfix: Option<&PostfixRelay>) -> Vec<PathBuf> {
    let started = Instant::now();
    loop {
        let files = sink.wait_files("dump", count);
        if files.len() >= count {
            return files;
        }
        assert!(
            started.elapsed() < DELIVERY_LIMIT,
            "{count} dumps expected, found {files:?}; maillog:\n{}",
            postfix.map(PostfixRelay::maillog).unwrap_or_default()
        );
    }
}

/// The test messages: (name, content with LF line endings).
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut long = Vec::new();
    long.extend_from_slice(
        b"Subject: long lines\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
    );
    long.extend_from_slice(&"\u{e9}t\u{e9} ".repeat(300).into_bytes()); // 2100 bytes, one line
    long.extend_from_slice(b"\n");
    long.extend_from_slice(&b"0123456789".repeat(110)); // 1100 bytes of ASCII
    long.extend_from_slice(b"\n");
    long.extend_from_slice(&b"x".repeat(80));
    long.extend_from_slice(b" \t\n.dot = end\n");

    let mut long_raw = Vec::new();
    long_raw.extend_from_slice(
        b"Subject: long 8-bit lines, not converted\nContent-Type: text/plain\n\n",
    );
    long_raw.extend_from_slice(&"\u{fc}".repeat(1200).into_bytes()); // 2400 bytes
    long_raw.extend_from_slice(b"\nend\n");

    // A soft line break puts "--b" at the start of an output line.
    let mut soft_dash = Vec::new();
    soft_dash.extend_from_slice(
        b"Subject: soft break\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: 8bit\n\n",
    );
    soft_dash.extend_from_slice(&b"y".repeat(73));
    soft_dash.extend_from_slice("--b \u{e9}\n--b--\n".as_bytes());

    let mut long_header = Vec::new();
    long_header.extend_from_slice(b"Subject: ");
    long_header.extend_from_slice(&"\u{e4}".repeat(700).into_bytes());
    long_header.extend_from_slice(b"\nContent-Transfer-Encoding: 8bit\n\n.\xc3\xa4\nFrom me\n");

    vec![
        ("soft-break-dashes", soft_dash),
        ("long-8bit-header", long_header),
        (
            "digest-and-partial",
            "Subject: digest\nContent-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: part one \u{e9}\nContent-Transfer-Encoding: 8bit\n\nd\u{e9}but\n--d\nContent-Type: message/partial; id=x; number=1\nContent-Transfer-Encoding: 8bit\n\nSubject: partial \u{e9}\n\nbody \u{e9}\n--d\nContent-Type: message/global\nContent-Transfer-Encoding: 8bit\n\nSubject: global \u{e9}\n\nbody \u{e9}\n--d--\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "headers-only",
            "Subject: no body \u{e9}\nContent-Transfer-Encoding: 8bit\n".as_bytes().to_vec(),
        ),
        (
            "encodings-odd",
            "Subject: odd\nContent-Type: text/plain (comment); charset=\"utf-8\"\nContent-Transfer-Encoding: (x) 8BIT\nContent-Type: application/x-thing\n\nch\u{e2}teau\r tab\there\x01\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "8bit-text",
            "Subject: 8-bit text\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e aus K\u{f6}ln = 100%\ntrailing blank \nthe end\t\n\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "multipart",
            "Subject: multipart\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=-b1-=\"\nContent-Transfer-Encoding: 8bit\n\nThis is a multi-part message (pr\u{e9}ambule).\n--=-b1-=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nna\u{ef}ve caf\u{e9}\n--=-b1-=\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: binary\n\n<p>\u{e0} bient\u{f4}t</p>\n--=-b1-=\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAECAwQFBgcICQ==\n--=-b1-=\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\nd=C3=A9j=C3=A0\n--=-b1-=--\nepilogue \u{e9}\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "nested-rfc822",
            "Subject: forwarded\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: text/plain\n\nsee below\n--outer\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nFrom: x@y.test\nSubject: inner \u{e9}\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nint\u{e9}rieur\n--inner--\n--outer--\n"
                .as_bytes()
                .to_vec(),
        ),
        ("long-lines", long),
        ("long-lines-unconverted", long_raw),
        (
            "already-7bit",
            b"Subject: plain\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\nnothing to do = here\n.dot\n"
                .to_vec(),
        ),
        (
            "8bit-header",
            "Subject: R\u{e9}sum\u{e9} f\u{fc}r dich\nFrom: J\u{fc}rgen <j@x.test>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nS\u{e9}e attached\n"
                .as_bytes()
                .to_vec(),
        ),
    ]
}

/// Every message of [`messages`] through Postfix (with `postfix_extra`
/// main.cf lines) and through mailhop (with `disable_mime_output_conversion
/// = disabled`): the dumps must be equal. `converted`: a message that
/// declares 8bit reaches the sink quoted-printable unless conversion is off.
fn compare_with_postfix(postfix_extra: &str, disabled: bool) {
    let Some(postfix_sink) = Sink::start(Listen::Tcp, &["-8", "-d", "{dir}/dump/%M."]) else {
        return;
    };
    let Some(mailhop_sink) = Sink::start(Listen::Tcp, &["-8", "-d", "{dir}/dump/%M."]) else {
        return;
    };
    let Some(postfix) = PostfixRelay::start(&postfix_sink.nexthop(), postfix_extra) else {
        return;
    };
    let mut failures = Vec::new();
    let (mut seen_reference, mut seen_mailhop) = (Vec::new(), Vec::new());
    for (count, (name, message)) in messages().into_iter().enumerate() {
        let queue_id = postfix.inject("a@x.test", "b@y.test", &message);
        let queued = postfix.queued_content(&queue_id);
        postfix.release(&queue_id);
        let reference_dump = wait_dumps(&postfix_sink, count + 1, Some(&postfix));
        Delivery::to(&mailhop_sink.nexthop())
            .smtp_setting("disable_mime_output_conversion", &disabled.to_string())
            .rcpt("b@y.test")
            .message(&queued)
            .run()
            .expect(
                0,
                &[Line::sent(
                    "b@y.test",
                    &mailhop_sink.relay(),
                    "2.0.0",
                    "250 2.0.0 Ok",
                )],
            );
        let mailhop_dump = wait_dumps(&mailhop_sink, count + 1, None);
        // This message's dump is the one not seen before.
        let new = |files: &[PathBuf], seen: &mut Vec<PathBuf>| {
            let file = files
                .iter()
                .find(|p| !seen.contains(p))
                .cloned()
                .expect("a new dump");
            seen.push(file.clone());
            fs::read(file).expect("read a dump")
        };
        let expected = content_of(&new(&reference_dump, &mut seen_reference));
        let got = content_of(&new(&mailhop_dump, &mut seen_mailhop));
        // The conversion did happen where it should, and only then.
        let qp = |bytes: &[u8]| {
            bytes
                .windows(16)
                .filter(|w| w == b"quoted-printable")
                .count()
        };
        if disabled {
            assert_eq!(qp(&expected), qp(&message), "{name}: Postfix converted");
        } else if message.windows(4).any(|w| w.eq_ignore_ascii_case(b"8bit")) {
            assert!(
                qp(&expected) > qp(&message),
                "{name}: Postfix did not convert:\n{}",
                String::from_utf8_lossy(&expected)
            );
        }
        if got != expected {
            failures.push(format!(
                "{name}: mailhop sent\n{}\n--- Postfix sent\n{}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n=====\n"));
}

#[test]
fn mailhop_converts_8bit_content_exactly_as_postfix_smtp() {
    compare_with_postfix("", false);
}

#[test]
fn with_conversion_disabled_8bit_content_goes_out_as_postfix_sends_it() {
    compare_with_postfix("disable_mime_output_conversion = yes", true);
}

#[test]
fn too_deep_mime_nesting_bounces_like_postfix_smtp() {
    let Some(postfix_sink) = Sink::start(Listen::Tcp, &["-8", "-d", "{dir}/dump/%M."]) else {
        return;
    };
    let Some(mailhop_sink) = Sink::start(Listen::Tcp, &["-8", "-d", "{dir}/dump/%M."]) else {
        return;
    };
    // Without header_checks cleanup does not check the nesting itself, and
    // the mail goes out at once.
    let Some(postfix) = PostfixRelay::start(&postfix_sink.nexthop(), "header_checks =") else {
        return;
    };
    // Postfix's level starts at -1 and may reach mime_nesting_limit + 1:
    // 102 nested multiparts go, 103 do not.
    for (levels, bounced) in [(102, false), (103, true)] {
        let mut message = b"Subject: deep\n".to_vec();
        for level in 0..levels {
            message.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n")
                    .as_bytes(),
            );
        }
        message.extend_from_slice("Content-Transfer-Encoding: 8bit\n\n\u{e9}\n".as_bytes());
        // The null sender: Postfix sends no bounce to the sink.
        let queue_id = postfix.inject("", "b@y.test", &message);
        let line = postfix.wait_log(&format!("{queue_id}: to=<b@y.test>"));
        let (_, verdict) = line
            .split_once(", dsn=")
            .unwrap_or_else(|| panic!("no dsn in {line:?}"));
        let run = Delivery::to(&mailhop_sink.nexthop())
            .rcpt("b@y.test")
            .message(&message)
            .run();
        if bounced {
            assert_eq!(
                verdict,
                "5.6.0, status=bounced (MIME nesting exceeds safety limit)"
            );
            assert_eq!(
                run.lines(),
                [Line::bounced(
                    "b@y.test",
                    &mailhop_sink.relay(),
                    "5.6.0",
                    "MIME nesting exceeds safety limit"
                )],
                "{run:#?}"
            );
        } else {
            assert!(verdict.starts_with("2.0.0, status=sent"), "{line}");
            assert_eq!(
                run.lines().first().map(|l| l.status.as_str()),
                Some("sent"),
                "{run:#?}"
            );
            assert_eq!(postfix_sink.wait_files("dump", 1).len(), 1);
            assert_eq!(mailhop_sink.wait_files("dump", 1).len(), 1);
        }
    }
    // Neither server got the deeper message: the connection was dropped
    // before the dot.
    assert_eq!(postfix_sink.wait_files("dump", 2).len(), 1);
    assert_eq!(mailhop_sink.wait_files("dump", 2).len(), 1);
}
