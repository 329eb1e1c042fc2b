use super::*;

fn parse_all(lines: &[&str]) -> Vec<Reply> {
    let mut parser = ReplyParser::new(2048);
    lines
        .iter()
        .filter_map(|l| parser.push_line(l.as_bytes()))
        .collect()
}

#[test]
fn single_line() {
    let replies = parse_all(&["250 2.1.0 Ok"]);
    assert_eq!(replies.len(), 1);
    let r = &replies[0];
    assert_eq!(r.code, 250);
    assert_eq!(r.enhanced, Some(StatusCode::new(2, 1, 0)));
    assert_eq!(r.text, "250 2.1.0 Ok");
    assert_eq!(r.lines().collect::<Vec<_>>(), vec!["2.1.0 Ok"]);
    assert!(r.is_positive());
    assert!(!r.malformed);
}

#[test]
fn multi_line_every_prefix_is_incomplete() {
    let lines = [
        "250-mx.test Hello",
        "250-PIPELINING",
        "250-SIZE 1000",
        "250 8BITMIME",
    ];
    let mut parser = ReplyParser::new(2048);
    for (i, line) in lines.iter().enumerate() {
        let out = parser.push_line(line.as_bytes());
        if i + 1 < lines.len() {
            assert!(out.is_none(), "prefix of {} lines completed a reply", i + 1);
            assert!(parser.in_progress());
        } else {
            let reply = out.expect("last line completes");
            assert_eq!(
                reply.lines().collect::<Vec<_>>(),
                vec!["mx.test Hello", "PIPELINING", "SIZE 1000", "8BITMIME"]
            );
            assert_eq!(
                reply.text,
                "250-mx.test Hello 250-PIPELINING 250-SIZE 1000 250 8BITMIME"
            );
            assert!(!parser.in_progress());
        }
    }
}

#[test]
fn code_only_line_is_last() {
    let r = &parse_all(&["354"])[0];
    assert_eq!(r.code, 354);
    assert!(r.is_intermediate());
    assert_eq!(r.lines().collect::<Vec<_>>(), vec![""]);
}

#[test]
fn enhanced_code_class_must_match() {
    assert_eq!(parse_all(&["550 4.1.1 odd"])[0].enhanced, None);
    assert_eq!(
        parse_all(&["550 4.1.1 odd"])[0].status().to_string(),
        "5.0.0"
    );
    assert_eq!(parse_all(&["450 no code"])[0].status().to_string(), "4.0.0");
    assert_eq!(parse_all(&["250 ok"])[0].status().to_string(), "2.0.0");
    assert_eq!(
        parse_all(&["550 5.7.1 denied"])[0].status().to_string(),
        "5.7.1"
    );
    assert_eq!(parse_all(&["550 5.7.1x denied"])[0].enhanced, None);
}

#[test]
fn bad_codes_are_protocol_violations() {
    for line in ["100 what", "199 x", "600 x", "999 x", "000 x"] {
        let r = &parse_all(&[line])[0];
        assert!(r.is_protocol_violation(), "{line}");
        assert_eq!(r.status().to_string(), "5.5.0", "{line}");
    }
    assert!(!parse_all(&["421 bye"])[0].is_protocol_violation());
}

#[test]
fn garbage_is_kept_and_flagged_until_a_real_last_line() {
    let mut parser = ReplyParser::new(2048);
    assert!(parser.push_line(b"hello there").is_none());
    assert!(parser.push_line(b"25").is_none());
    assert!(parser.push_line(b"2500 x").is_none());
    let r = parser.push_line(b"250 ok").expect("complete");
    assert!(r.malformed);
    assert_eq!(r.code, 250);
    assert_eq!(r.text, "hello there 25 2500 x 250 ok");
    // The parser is clean for the next reply.
    let next = parser.push_line(b"221 bye").expect("complete");
    assert!(!next.malformed);
}

#[test]
fn non_printables_are_replaced() {
    let mut parser = ReplyParser::new(2048);
    let r = parser
        .push_line(b"550 5.1.1 bad\x1b[31m\x00\xff")
        .expect("complete");
    assert_eq!(r.text, "550 5.1.1 bad?[31m??");
}

#[test]
fn text_is_capped_across_many_lines() {
    let mut parser = ReplyParser::new(100);
    let long = format!("250-{}", "x".repeat(60));
    let mut done = None;
    for _ in 0..10_000 {
        assert!(parser.push_line(long.as_bytes()).is_none());
    }
    if let Some(r) = parser.push_line(b"250 end") {
        done = Some(r);
    }
    let r = done.expect("complete");
    assert!(r.text.len() <= 100, "{}", r.text.len());
    assert!(r.lines().count() <= 3);
}

#[test]
fn one_huge_line_is_capped() {
    let mut parser = ReplyParser::new(2048);
    let mut line = b"550 5.1.1 ".to_vec();
    line.extend(std::iter::repeat_n(b'y', 100_000));
    let r = parser.push_line(&line).expect("complete");
    assert_eq!(r.text.len(), 2048);
    assert_eq!(r.code, 550);
    assert_eq!(r.status().to_string(), "5.1.1");
}

#[test]
fn codes_of_continuation_lines_may_differ_last_wins() {
    let r = &parse_all(&["250-a", "550 5.0.0 b"])[0];
    assert_eq!(r.code, 550);
}

#[test]
fn strict_garbage_line_ends_the_reply_at_once() {
    let mut parser = ReplyParser::new(2048).strict(true);
    let r = parser.push_line(b"hello there").expect("cut short");
    assert_eq!(r.code, 0);
    assert!(r.malformed && r.is_protocol_violation());
    assert_eq!(r.status().to_string(), "5.5.0");
    assert_eq!(r.text, "hello there");
    // Also inside a multi-line reply, and for a bad separator.
    for bad in [&b"2500 x"[..], b"25", b"250x", b" 250 ok"] {
        let mut parser = ReplyParser::new(2048).strict(true);
        assert!(parser.push_line(b"250-first").is_none());
        let r = parser.push_line(bad).expect("cut short");
        assert_eq!(r.code, 0, "{bad:?}");
    }
    // A well-formed reply is unaffected.
    let mut parser = ReplyParser::new(2048).strict(true);
    assert!(parser.push_line(b"250-a").is_none());
    let r = parser.push_line(b"250 b").expect("complete");
    assert_eq!((r.code, r.malformed), (250, false));
}

#[test]
fn strict_code_change_inside_a_reply_is_a_protocol_violation() {
    let mut parser = ReplyParser::new(2048).strict(true);
    assert!(parser.push_line(b"250-a").is_none());
    let r = parser.push_line(b"550 5.1.1 b").expect("cut short");
    assert_eq!(r.code, 0);
    assert!(r.malformed);
    let mut parser = ReplyParser::new(2048).strict(true);
    assert!(parser.push_line(b"250-a").is_none());
    assert!(parser.push_line(b"251-b").is_some());
}

#[test]
fn lenient_parser_skips_garbage_within_a_bound() {
    let mut parser = ReplyParser::new(2048);
    for _ in 0..MAX_SKIPPED_LINES {
        assert!(parser.push_line(b"junk").is_none());
    }
    let r = parser.push_line(b"junk").expect("bound passed");
    assert_eq!(r.code, 0);
    assert!(r.malformed);
    // The byte bound.
    let mut parser = ReplyParser::new(2048);
    let long = vec![b'x'; 8000];
    assert!(parser.push_line(&long).is_none());
    assert!(parser.push_line(&long).is_none());
    assert_eq!(parser.push_line(&long).map(|r| r.code), Some(0));
    // A code change is flagged, the last code counts (Postfix).
    let r = &parse_all(&["250-a", "550 5.0.0 b"])[0];
    assert_eq!(r.code, 550);
    assert!(r.malformed);
}

#[test]
fn enhanced_code_of_a_multi_line_reply_is_the_last_lines() {
    let r = &parse_all(&["550-5.1.1 first", "550 5.7.1 last"])[0];
    assert_eq!(r.status().to_string(), "5.7.1");
    let r = &parse_all(&["550-5.1.1 first", "550 last"])[0];
    assert_eq!(r.enhanced, None);
    assert_eq!(r.status().to_string(), "5.0.0");
    let r = &parse_all(&["450-first", "450 4.2.2 full"])[0];
    assert_eq!(r.status().to_string(), "4.2.2");
    // Spaces before it are skipped; a tab ends it.
    assert_eq!(
        parse_all(&["550  5.1.1 x"])[0].status().to_string(),
        "5.1.1"
    );
    assert_eq!(
        parse_all(&["550 5.1.1\tx"])[0].status().to_string(),
        "5.1.1"
    );
    assert_eq!(parse_all(&["250 2.1.5"])[0].status().to_string(), "2.1.5");
}
