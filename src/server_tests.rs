use super::*;

fn split(max: usize, chunks: &[&[u8]]) -> (Vec<LineEvent>, Option<Vec<u8>>) {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        s.feed(chunk, &mut out);
    }
    (out, s.finish())
}

#[test]
fn lines_across_chunks() {
    let (events, rest) = split(100, &[b"ab", b"c\nde\n\nf", b"g"]);
    assert_eq!(
        events,
        vec![
            LineEvent::Line(b"abc".to_vec()),
            LineEvent::Line(b"de".to_vec()),
            LineEvent::Line(Vec::new()),
        ]
    );
    assert_eq!(rest, Some(b"fg".to_vec()));
}

#[test]
fn long_line_reported_once_and_skipped() {
    let (events, rest) = split(4, &[b"12345", b"678", b"9\nok\n1234\n"]);
    assert_eq!(
        events,
        vec![
            LineEvent::TooLong,
            LineEvent::Line(b"ok".to_vec()),
            LineEvent::Line(b"1234".to_vec()),
        ]
    );
    assert_eq!(rest, None);
    let (_, rest) = split(2, &[b"xyz"]);
    assert_eq!(rest, None, "an over-long unterminated line is dropped");
}

#[test]
fn any_chunking_gives_the_events_of_a_reference_split() {
    // A small LCG: random text of short and long lines, cut anywhere.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for _ in 0..2_000 {
        let max = 1 + next(12) as usize;
        let len = next(80) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                if next(5) == 0 {
                    b'\n'
                } else {
                    b'a' + next(3) as u8
                }
            })
            .collect();
        // Reference: every complete line, too-long ones as one event.
        let mut want = Vec::new();
        let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        let tail = parts.pop().unwrap_or(&[]);
        for line in parts {
            want.push(if line.len() > max {
                LineEvent::TooLong
            } else {
                LineEvent::Line(line.to_vec())
            });
        }
        if tail.len() > max {
            want.push(LineEvent::TooLong);
        }
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let take = 1 + next(10) as usize;
            let end = (at + take).min(data.len());
            chunks.push(&data[at..end]);
            at = end;
        }
        let (got, rest) = split(max, &chunks);
        assert_eq!(
            got,
            want,
            "max {max}, data {:?}",
            String::from_utf8_lossy(&data)
        );
        let want_rest = (!tail.is_empty() && tail.len() <= max).then(|| tail.to_vec());
        assert_eq!(rest, want_rest);
    }
}

#[test]
fn access_rules() {
    let policy = AccessPolicy {
        daemon_uid: 500,
        uids: vec![1001],
        gids: vec![42],
    };
    let peer = |uid, gids: &[u32]| PeerIdentity {
        uid,
        gids: gids.to_vec(),
        privileged: false,
    };
    assert!(policy.allows(&peer(0, &[0])));
    assert!(policy.allows(&peer(500, &[500])));
    assert!(policy.allows(&peer(1001, &[1001])));
    assert!(policy.allows(&peer(1002, &[1002, 42])));
    assert!(!policy.allows(&peer(1003, &[1003, 7])));
    assert_eq!(
        refusal_line(1003),
        r#"{"id":null,"error":"permission denied: uid 1003 is not allowed to submit jobs","kind":"permission_denied"}"#
    );
}

#[test]
fn quotas_per_uid_and_in_all() {
    let limits = Limits {
        connections_per_uid: 2,
        queued_bytes: 100,
        queued_bytes_per_uid: 60,
        inline_size: 10,
        recipients: 10,
        unread_answer_bytes: 10,
    };
    let q = Quotas::default();
    assert!(q.connect(7, &limits).is_ok());
    assert!(q.connect(7, &limits).is_ok());
    let err = q.connect(7, &limits).err().unwrap_or_default();
    assert!(err.contains("max_connections_per_uid"), "{err}");
    assert!(q.connect(8, &limits).is_ok());
    assert!(q.charge(7, 60, &limits).is_ok());
    let err = q.charge(7, 1, &limits).err().unwrap_or_default();
    assert!(err.contains("max_queued_bytes_per_uid"), "{err}");
    assert!(q.charge(8, 40, &limits).is_ok());
    let err = q.charge(9, 1, &limits).err().unwrap_or_default();
    assert!(err.contains("max_queued_bytes"), "{err}");
    q.release(7, 60);
    q.release(8, 40);
    assert_eq!(q.queued_bytes(), 0);
    q.disconnect(7);
    assert!(q.connect(7, &limits).is_ok());
}

#[test]
fn answers_parse_back() {
    let ok = parse_answer(r#"{"id":"a","recipients":[],"log":["x"]}"#);
    assert!(matches!(ok, Ok(Answer::Done(r)) if r.id == "a"));
    let err = parse_answer(r#"{"id":null,"error":"boom"}"#);
    assert!(matches!(err, Ok(Answer::Failed(e)) if e.error == "boom" && e.id.is_none()));
    assert!(parse_answer("nope").is_err());
}
