use super::*;

/// The whole input at once: (message, bytes taken, done).
fn receive(input: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut receiver = DataReceiver::new();
    let mut out = Vec::new();
    let taken = receiver.feed(input, &mut out);
    (out, taken, receiver.done())
}

/// The same input one byte at a time gives the same message.
fn receive_bytewise(input: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut receiver = DataReceiver::new();
    let mut out = Vec::new();
    let mut taken = 0;
    for chunk in input.chunks(1) {
        if receiver.done() {
            break;
        }
        taken += receiver.feed(chunk, &mut out);
    }
    (out, taken, receiver.done())
}

#[test]
fn the_final_dot_ends_the_message_and_the_rest_is_left() {
    let input = b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    let (out, taken, done) = receive(input);
    assert!(done);
    assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(&input[taken..], b"QUIT\r\n");
    assert_eq!(receive_bytewise(input), (out, taken, true));
}

#[test]
fn stuffed_dots_are_removed_and_only_a_lone_dot_ends() {
    let input = b"..hidden\r\n.x\r\n. \r\n.\rX\r\n.\r\n";
    let (out, _, done) = receive(input);
    assert!(done);
    assert_eq!(out, b".hidden\r\nx\r\n \r\n\rX\r\n");
    assert_eq!(receive_bytewise(input).0, out);
}

#[test]
fn bare_lf_line_ends_are_kept_but_only_crlf_dot_crlf_ends() {
    // Postfix's smtpd_forbid_bare_newline = normalize: ".\n" is no end,
    // and the lone dot line is dropped.
    let input = b"a\nb\n.\nNOOP\n";
    let (out, taken, done) = receive(input);
    assert!(!done, "{out:?}");
    assert_eq!(out, b"a\nb\nNOOP\n");
    assert_eq!(taken, input.len());
    // After the bare LF of "NOOP\n", even ".\r\n" is dropped.
    let (out, _, done) = receive(b"NOOP\n.\r\nQUIT\r\n");
    assert!(!done);
    assert_eq!(out, b"NOOP\nQUIT\r\n");
    // Bare LF lines, then the standard end after a CRLF line.
    let input = b"a\nb\r\n.\r\nQUIT\r\n";
    let (out, taken, done) = receive(input);
    assert!(done);
    assert_eq!(out, b"a\nb\r\n");
    assert_eq!(&input[taken..], b"QUIT\r\n");
}

/// The published SMTP smuggling end-of-data variants: none of them ends
/// the message; the smuggled command stays message text; the one real
/// `CRLF . CRLF` ends it. Whole and byte by byte.
#[test]
fn smuggling_payloads_do_not_end_the_data() {
    let smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\n";
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\n.\r\n",
        b"\r.\n",
        b"\r\n.\n",
        b"\n.\r",
        b"\r.\r\n",
        b"\r\n\x00.\r\n",
    ];
    for &variant in variants {
        let mut input = b"Subject: s\r\n\r\nbody".to_vec();
        input.extend_from_slice(variant);
        input.extend_from_slice(smuggled);
        input.extend_from_slice(b"tail\r\n.\r\nQUIT\r\n");
        let (out, taken, done) = receive(&input);
        assert!(done, "variant {variant:?}");
        assert_eq!(&input[taken..], b"QUIT\r\n", "variant {variant:?}");
        assert!(
            out.windows(smuggled.len()).any(|w| w == smuggled),
            "variant {variant:?}: the smuggled commands are message text: {out:?}"
        );
        assert!(out.ends_with(b"tail\r\n"), "variant {variant:?}");
        assert_eq!(
            receive_bytewise(&input),
            (out, taken, true),
            "variant {variant:?}"
        );
    }
}

#[test]
fn a_lone_dot_next_to_a_bare_lf_is_dropped() {
    // ".\r\n" after a bare LF line: dropped, not the end.
    let (out, _, done) = receive(b"a\n.\r\nb\r\n.\r\n");
    assert!(done);
    assert_eq!(out, b"a\nb\r\n");
    // ".\n" after a CRLF line: dropped too.
    let (out, _, done) = receive(b"a\r\n.\nb\r\n.\r\n");
    assert!(done);
    assert_eq!(out, b"a\r\nb\r\n");
    // An empty bare-LF line before the dot.
    let (out, _, done) = receive(b"a\r\n\n.\r\n");
    assert!(!done);
    assert_eq!(out, b"a\r\n\n");
    // The first line may be the end.
    let (out, _, done) = receive(b".\r\n");
    assert!(done && out.is_empty());
    // A CR split from its LF across pieces still counts as CRLF.
    let mut receiver = DataReceiver::new();
    let mut out = Vec::new();
    receiver.feed(b"a\r", &mut out);
    receiver.feed(b"\n.\r", &mut out);
    receiver.feed(b"\n", &mut out);
    assert!(receiver.done());
    assert_eq!(out, b"a\r\n");
}

#[test]
fn an_empty_message_and_an_unfinished_one() {
    let (out, taken, done) = receive(b".\r\n");
    assert!(done && out.is_empty() && taken == 3);
    let mut receiver = DataReceiver::new();
    let mut out = Vec::new();
    assert_eq!(receiver.feed(b"line\r\n.", &mut out), 7);
    assert!(!receiver.done());
    assert_eq!(out, b"line\r\n");
    assert_eq!(receiver.feed(b"\r", &mut out), 1);
    assert_eq!(receiver.feed(b"\n", &mut out), 1);
    assert!(receiver.done());
    assert_eq!(receiver.size(), 6);
}

#[test]
fn a_dot_inside_a_line_or_after_a_bare_cr_is_text() {
    let input = b"a.\r\nb\r.\r\n\r\n.\r\n";
    let (out, _, done) = receive(input);
    assert!(done);
    assert_eq!(out, b"a.\r\nb\r.\r\n\r\n");
}
