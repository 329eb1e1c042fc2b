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
fn bare_lf_line_ends_are_kept_and_end_the_message() {
    let (out, taken, done) = receive(b"a\nb\n.\nNOOP\n");
    assert!(done);
    assert_eq!(out, b"a\nb\n");
    assert_eq!(taken, 6);
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
