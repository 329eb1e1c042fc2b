use super::*;

// ---------- helpers ----------

/// The converter's output (CRLF content, before the BodyEncoder).
fn conv(input: &[u8]) -> Vec<u8> {
    conv_limits(input, MimeLimits::default()).unwrap_or_default()
}

fn conv_limits(input: &[u8], limits: MimeLimits) -> Result<Vec<u8>, MimeError> {
    let mut d = Downgrader::new(limits);
    let mut out = Vec::new();
    d.feed(input, &mut out)?;
    d.finish(&mut out)?;
    Ok(out)
}

fn conv_pieces(input: &[u8], size: usize) -> Vec<u8> {
    let mut d = Downgrader::new(MimeLimits::default());
    let mut out = Vec::new();
    for piece in input.chunks(size.max(1)) {
        d.feed(piece, &mut out).unwrap_or_default();
    }
    d.finish(&mut out).unwrap_or_default();
    out
}

fn lf_to_crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

#[track_caller]
fn check(input: &str, expected: &str) {
    let got = conv(input.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&lf_to_crlf(expected))
    );
}

// ---------- primary part ----------

#[test]
fn declared_8bit_text_becomes_quoted_printable() {
    check(
        "Subject: x\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße = 1\n",
        "Subject: x\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe =3D 1\n",
    );
}

#[test]
fn encoding_header_moves_to_the_end_of_the_block() {
    check(
        "Content-Transfer-Encoding: binary\nSubject: s\n\n\u{e9}\n",
        "Subject: s\nContent-Transfer-Encoding: quoted-printable\n\n=C3=A9\n",
    );
}

#[test]
fn undeclared_8bit_goes_out_unchanged() {
    check(
        "Subject: \u{e9}\n\nbody \u{e9}\n",
        "Subject: \u{e9}\n\nbody \u{e9}\n",
    );
}

#[test]
fn qp_and_base64_parts_are_not_touched() {
    check(
        "Content-Transfer-Encoding: quoted-printable\n\n\u{e9}=\n",
        "Content-Transfer-Encoding: quoted-printable\n\n\u{e9}=\n",
    );
}

#[test]
fn eight_bit_in_headers_stays() {
    check(
        "Subject: \u{e9}t\u{e9}\nContent-Transfer-Encoding: 8bit\n\na\n",
        "Subject: \u{e9}t\u{e9}\nContent-Transfer-Encoding: quoted-printable\n\na\n",
    );
}

#[test]
fn header_name_space_colon_is_normalised_and_folding_kept() {
    check(
        "Subject :  a\n\tb\nTo: c\n\nx\n",
        "Subject:  a\n\tb\nTo: c\n\nx\n",
    );
}

#[test]
fn garbage_after_primary_headers_gets_an_empty_line() {
    check(
        "Subject: a\nnot a header\nx\n",
        "Subject: a\n\nnot a header\nx\n",
    );
}

#[test]
fn headers_only_message_still_gets_its_encoding_header() {
    check(
        "Content-Transfer-Encoding: 8bit\nSubject: a\n",
        "Subject: a\nContent-Transfer-Encoding: quoted-printable\n",
    );
}

#[test]
fn comments_and_case_in_the_encoding_header() {
    check(
        "Content-Transfer-Encoding: (c) 8BIT (x)\n\n\u{e9}\n",
        "Content-Transfer-Encoding: quoted-printable\n\n=C3=A9\n",
    );
}

#[test]
fn later_7bit_encoding_header_wins() {
    check(
        "Content-Transfer-Encoding: 8bit\nContent-Transfer-Encoding: 7bit\n\n\u{e9}\n",
        "Content-Transfer-Encoding: 7bit\n\n\u{e9}\n",
    );
}

// ---------- quoted-printable details ----------

#[test]
fn soft_breaks_after_73_characters() {
    let line = "a".repeat(200);
    let input = format!("Content-Transfer-Encoding: 8bit\n\n{line}\n");
    let expected = format!(
        "Content-Transfer-Encoding: quoted-printable\n\n{}=\n{}=\n{}\n",
        "a".repeat(73),
        "a".repeat(73),
        "a".repeat(54)
    );
    check(&input, &expected);
}

#[test]
fn encoded_bytes_may_run_to_76() {
    let line = format!("{}\u{e9}\u{e9}", "a".repeat(72));
    let input = format!("Content-Transfer-Encoding: 8bit\n\n{line}\n");
    // 72 + "=C3" = 75 > 72: the next byte starts a new line.
    let expected = format!(
        "Content-Transfer-Encoding: quoted-printable\n\n{}=C3=\n=A9=C3=A9\n",
        "a".repeat(72)
    );
    check(&input, &expected);
}

#[test]
fn trailing_blank_is_encoded_and_controls_too() {
    check(
        "Content-Transfer-Encoding: 8bit\n\na \nb\t\nc\x01\td\x7f\n\n",
        "Content-Transfer-Encoding: quoted-printable\n\na=20\nb=09\nc=01\td=7F\n\n",
    );
}

#[test]
fn bare_cr_is_data_and_crlf_is_a_line_end() {
    let got = conv(b"Content-Transfer-Encoding: 8bit\r\n\r\na\rb\r\n");
    assert_eq!(
        got,
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=0Db\r\n".to_vec()
    );
}

#[test]
fn a_last_line_without_line_end_is_a_line() {
    check(
        "Content-Transfer-Encoding: 8bit\n\n\u{e9} ",
        "Content-Transfer-Encoding: quoted-printable\n\n=C3=A9=20\n",
    );
}

#[test]
fn a_line_longer_than_a_record_is_encoded_as_one_line() {
    let line = "\u{e9}".repeat(3000);
    let input = format!("Content-Transfer-Encoding: 8bit\n\n{line}\n");
    let got = conv(input.as_bytes());
    let body = got
        .split(|&b| b == b'\n')
        .skip(2)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>();
    let joined: Vec<u8> = body
        .iter()
        .flat_map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            l.strip_suffix(b"=").unwrap_or(l).to_vec()
        })
        .collect();
    assert_eq!(joined, "=C3=A9".repeat(3000).into_bytes());
    assert!(body.iter().all(|l| l.len() <= 77));
}

// ---------- multipart and message ----------

const MULTIPART: &str = "\
Content-Type: multipart/mixed; boundary=\"b1\"
Content-Transfer-Encoding: 8bit

pre \u{e9}
--b1
Content-Type: text/plain
Content-Transfer-Encoding: 8bit

t\u{e9}xt
--b1
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

QUJD
--b1--
epi \u{e9}
";

#[test]
fn multipart_gets_7bit_and_parts_are_converted() {
    check(
        MULTIPART,
        "\
Content-Type: multipart/mixed; boundary=\"b1\"
Content-Transfer-Encoding: 7bit

pre \u{e9}
--b1
Content-Type: text/plain
Content-Transfer-Encoding: quoted-printable

t=C3=A9xt
--b1
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

QUJD
--b1--
epi \u{e9}
",
    );
}

#[test]
fn nested_message_rfc822_headers_are_parsed() {
    check(
        "\
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Subject: inner \u{e9}
Content-Transfer-Encoding: 8bit

inner \u{e9}
",
        "\
Content-Type: message/rfc822
Content-Transfer-Encoding: 7bit

Subject: inner \u{e9}
Content-Transfer-Encoding: quoted-printable

inner =C3=A9
",
    );
}

#[test]
fn message_global_keeps_a_quoted_printable_body() {
    check(
        "Content-Type: message/global\nContent-Transfer-Encoding: 8bit\n\nSubject: \u{e9}\n",
        "Content-Type: message/global\nContent-Transfer-Encoding: quoted-printable\n\nSubject: =C3=A9\n",
    );
}

#[test]
fn inner_boundary_closed_by_outer() {
    check(
        "\
Content-Type: multipart/mixed; boundary=o

--o
Content-Type: multipart/alternative; boundary=i

--i
Content-Transfer-Encoding: 8bit

\u{e9}
--o
Content-Transfer-Encoding: 8bit

\u{e9}
--o--
",
        "\
Content-Type: multipart/mixed; boundary=o

--o
Content-Type: multipart/alternative; boundary=i

--i
Content-Transfer-Encoding: quoted-printable

=C3=A9
--o
Content-Transfer-Encoding: quoted-printable

=C3=A9
--o--
",
    );
}

#[test]
fn digest_parts_default_to_message() {
    check(
        "\
Content-Type: multipart/digest; boundary=d

--d

Subject: s
Content-Transfer-Encoding: 8bit

\u{e9}
--d--
",
        "\
Content-Type: multipart/digest; boundary=d

--d

Subject: s
Content-Transfer-Encoding: quoted-printable

=C3=A9
--d--
",
    );
}

#[test]
fn boundary_is_cut_to_its_limit() {
    let limits = MimeLimits {
        boundary_length_limit: 3,
        ..MimeLimits::default()
    };
    let input = "Content-Type: multipart/mixed; boundary=abcdef\n\n--abcX\nContent-Transfer-Encoding: 8bit\n\n\u{e9}\n";
    let got = conv_limits(input.as_bytes(), limits).unwrap_or_default();
    assert!(String::from_utf8_lossy(&got).contains("=C3=A9"));
}

#[test]
fn nesting_beyond_the_limit_is_an_error() {
    let limits = MimeLimits {
        nesting_limit: 2,
        ..MimeLimits::default()
    };
    let mut ok = String::new();
    // Postfix's level starts at -1 and refuses a push once it exceeds the
    // limit: limit + 2 open boundaries are allowed.
    for i in 0..4 {
        ok.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
    }
    assert!(conv_limits(ok.as_bytes(), limits).is_ok());
    let bad = format!("{ok}Content-Type: multipart/mixed; boundary=b9\n\n");
    assert_eq!(conv_limits(bad.as_bytes(), limits), Err(MimeError::Nesting));
    assert_eq!(MimeError::Nesting.status().to_string(), "5.6.0");
}

#[test]
fn header_text_beyond_the_limit_is_dropped() {
    let limits = MimeLimits {
        header_size_limit: 10,
        ..MimeLimits::default()
    };
    let got = conv_limits(b"Subject: 0123456789\n more\nTo: x\n\nb\n", limits).unwrap_or_default();
    assert_eq!(got, b"Subject: 0123456789\r\nTo: x\r\n\r\nb\r\n".to_vec());
}

// ---------- the tokenizer ----------

#[test]
fn tokenizer_handles_quotes_comments_and_specials() {
    let text = b" multipart/mixed (c (nested)) ; boundary = \"a\\\"b\" ; x";
    let mut pos = 0;
    let first = header_tokens(text, &mut pos, 3, CT_SPECIALS, Some(b';')).unwrap_or_default();
    let values: Vec<&[u8]> = first.iter().map(|t| t.value.as_slice()).collect();
    assert_eq!(values, vec![&b"multipart"[..], b"/", b"mixed"]);
    let second = header_tokens(text, &mut pos, 3, CT_SPECIALS, Some(b';')).unwrap_or_default();
    assert_eq!(
        second.get(2).map(|t| t.value.clone()),
        Some(b"a\"b".to_vec())
    );
    assert_eq!(second.get(2).map(|t| t.kind), Some(TokKind::QString));
    let third = header_tokens(text, &mut pos, 3, CT_SPECIALS, Some(b';'));
    assert_eq!(third.map(|t| t.len()), Some(1));
    assert!(header_tokens(text, &mut pos, 3, CT_SPECIALS, Some(b';')).is_none());
}

// ---------- invariants ----------

#[test]
fn seven_bit_message_is_unchanged() {
    let input = "Subject: a\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\nhello\n--x--\n";
    check(input, input);
}

#[test]
fn split_input_gives_identical_output() {
    let mut input = MULTIPART.as_bytes().to_vec();
    input.extend_from_slice(b"\r\n\r\rtail \xff\r");
    input.extend(std::iter::repeat_n(b'\xe9', 5000));
    let whole = conv(&input);
    for size in [1, 2, 3, 7, 64, 2047, 2048, 2049, 4096] {
        assert_eq!(conv_pieces(&input, size), whole, "piece size {size}");
    }
}

#[test]
fn wire_form_goes_through_the_body_encoder() {
    let mut wire = Vec::new();
    let input = b"Content-Transfer-Encoding: 8bit\n\n.\xe9\n.x\n";
    assert!(
        encode_all_downgraded(
            input,
            BodyEncoder::new(998),
            MimeLimits::default(),
            &mut wire
        )
        .is_ok()
    );
    assert_eq!(
        wire,
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n..=E9\r\n..x\r\n".to_vec()
    );
    let mut streamed = Vec::new();
    let n = write_body_downgraded(
        &input[..],
        &mut streamed,
        BodyEncoder::new(998),
        MimeLimits::default(),
    );
    assert_eq!(streamed, wire);
    assert_eq!(n.ok(), Some(wire.len() as u64));
}

#[test]
fn empty_input_gives_nothing() {
    assert!(conv(b"").is_empty());
}

#[test]
fn memory_stays_flat_on_a_huge_unbroken_8bit_line() {
    let mut d = Downgrader::new(MimeLimits::default());
    let mut out = Vec::new();
    assert!(
        d.feed(b"Content-Transfer-Encoding: 8bit\n\n", &mut out)
            .is_ok()
    );
    let chunk = vec![0xe9u8; READ_CHUNK];
    let mut total = 0usize;
    for _ in 0..160 {
        // 10 MiB on one line
        out.clear();
        assert!(d.feed(&chunk, &mut out).is_ok());
        total += out.len();
        // Three bytes per input byte and "=\r\n" per line of at most 76.
        assert!(out.len() <= 4 * READ_CHUNK);
        assert!(d.rec.capacity() <= 2 * RECORD_LIMIT);
        assert!(d.qp.capacity() <= 256);
        assert!(d.header.capacity() <= 256);
    }
    out.clear();
    assert!(d.finish(&mut out).is_ok());
    total += out.len();
    // 3 bytes per input byte plus "=\r\n" per 75 bytes of output.
    assert!(total > 3 * 160 * READ_CHUNK);
}
