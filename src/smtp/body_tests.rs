use super::*;
use std::time::Instant;

// ---------- helpers ----------

/// Pass-through of a stray CR (`replace_stray_cr = false`): the model
/// these tests were written for; the replacing encoder has its own below.
fn enc(input: &[u8], limit: usize) -> Vec<u8> {
    let mut e = BodyEncoder::new(limit).replace_stray_cr(false);
    let mut out = Vec::new();
    e.encode(input, &mut out);
    e.finish(&mut out);
    out
}

fn enc_pieces(pieces: &[&[u8]], limit: usize) -> Vec<u8> {
    let mut e = BodyEncoder::new(limit).replace_stray_cr(false);
    let mut out = Vec::new();
    for p in pieces {
        e.encode(p, &mut out);
    }
    e.finish(&mut out);
    out
}

/// Obviously-correct per-line model of the wire form.
fn reference(input: &[u8], limit: usize) -> Vec<u8> {
    let limit = if limit == 1 { 2 } else { limit };
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // split() yields a final empty element after a trailing LF (or for
    // empty input): that is not a line.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let terminated = input.ends_with(b"\n");
    let count = lines.len();
    let mut out = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        let has_lf = i + 1 < count || terminated;
        let content = if has_lf {
            line.strip_suffix(b"\r").unwrap_or(line)
        } else {
            line
        };
        if content.first() == Some(&b'.') {
            out.push(b'.');
        }
        if limit == 0 || content.len() <= limit {
            out.extend_from_slice(content);
        } else {
            let (first, mut rest) = content.split_at(limit);
            out.extend_from_slice(first);
            while !rest.is_empty() {
                let take = rest.len().min(limit - 1);
                let (piece, r) = rest.split_at(take);
                out.extend_from_slice(b"\r\n ");
                out.extend_from_slice(piece);
                rest = r;
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Deterministic LCG (Knuth MMIX constants).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_input(rng: &mut Lcg, max_len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"\r\r\r\n\n\n\n...aaaaa\xC3\xC3 b";
    let len = rng.below(max_len + 1);
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

/// Checks invariants every wire-form output must satisfy.
fn check_wire_form(out: &[u8], limit: usize) {
    let limit = if limit == 1 { 2 } else { limit };
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\r\n"), "not CRLF-terminated: {out:?}");
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i} in {out:?}");
        }
    }
    let body = &out[..out.len() - 2];
    for line in split_crlf(body) {
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            assert!(!line.starts_with(b"."), "unstuffed dot line {line:?}");
            line
        };
        if limit > 0 {
            assert!(unstuffed.len() <= limit, "line too long: {line:?}");
        }
    }
}

fn split_crlf(mut s: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    while let Some(p) = s.windows(2).position(|w| w == b"\r\n") {
        v.push(&s[..p]);
        s = &s[p + 2..];
    }
    v.push(s);
    v
}

fn pattern(len: usize) -> Vec<u8> {
    const ABC: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..len).map(|i| ABC[i % ABC.len()]).collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------- table tests ----------

#[test]
fn table() {
    let cases: &[(&[u8], &[u8])] = &[
        // line endings
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\r\nc\n", b"a\r\nb\r\nc\r\n"),
        (b"\n", b"\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"\r\n\r\n", b"\r\n\r\n"),
        (b"\r\n\n", b"\r\n\r\n"),
        // bare CR is data
        (b"a\rb\n", b"a\rb\r\n"),
        (b"a\r\rb\r\n", b"a\r\rb\r\n"),
        (b"\r\r\n", b"\r\r\n"),
        (b"a\r\r\n\r\n", b"a\r\r\n\r\n"),
        (b"\rx\n", b"\rx\r\n"),
        // leading dots
        (b".\n", b"..\r\n"),
        (b"..\n", b"...\r\n"),
        (b".x\n", b"..x\r\n"),
        (b"a\n.\n", b"a\r\n..\r\n"),
        (b"a\n..\n", b"a\r\n...\r\n"),
        (b"a\r\n.x\r\n", b"a\r\n..x\r\n"),
        (b"a\n.x", b"a\r\n..x\r\n"),
        (b".", b"..\r\n"),
        (b"a.b\n. \n", b"a.b\r\n.. \r\n"),
        (b" .\n", b" .\r\n"),
        (b"\r.\n", b"\r.\r\n"),
        (b"\n.\n\n.", b"\r\n..\r\n\r\n..\r\n"),
        // empty / unterminated
        (b"", b""),
        (b"abc", b"abc\r\n"),
        (b"a\nbc", b"a\r\nbc\r\n"),
        // trailing CR only: the CR is data, then the final CRLF
        (b"abc\r", b"abc\r\r\n"),
        (b"\r", b"\r\r\n"),
        (b"a\n\r", b"a\r\n\r\r\n"),
        // 8-bit and NUL pass through
        (b"Gr\xC3\xBC\xC3\x9Fe\n", b"Gr\xC3\xBC\xC3\x9Fe\r\n"),
        (b"\x80\xFF\x00\x7F\n", b"\x80\xFF\x00\x7F\r\n"),
    ];
    for (input, want) in cases {
        let got = enc(input, 998);
        assert_eq!(
            got,
            *want,
            "input {:?}: got {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(&got)
        );
        assert_eq!(got, reference(input, 998));
    }
}

#[test]
fn all_byte_values_pass_through() {
    let data: Vec<u8> = (0u8..=255).filter(|&b| b != b'\r' && b != b'\n').collect();
    let input = cat(&[&data, b"\n"]);
    assert_eq!(enc(&input, 0), cat(&[&data, b"\r\n"]));
    assert_eq!(enc(&input, 998), cat(&[&data, b"\r\n"]));
}

#[test]
fn long_line_exactly_at_limit_is_not_broken() {
    for limit in [2, 10, 998] {
        let line = pattern(limit);
        for eol in [&b"\n"[..], b"\r\n", b""] {
            let input = cat(&[&line, eol]);
            assert_eq!(enc(&input, limit), cat(&[&line, b"\r\n"]), "limit {limit}");
        }
    }
}

#[test]
fn long_line_limit_plus_one() {
    for limit in [2, 10, 998] {
        let line = pattern(limit + 1);
        let want = cat(&[&line[..limit], b"\r\n ", &line[limit..], b"\r\n"]);
        for eol in [&b"\n"[..], b"\r\n", b""] {
            let input = cat(&[&line, eol]);
            assert_eq!(enc(&input, limit), want, "limit {limit}");
        }
    }
}

#[test]
fn long_line_three_times_limit_plus_five() {
    for limit in [10, 998] {
        let line = pattern(3 * limit + 5);
        // first `limit` bytes, then pieces of limit-1 bytes after a space
        let a = limit;
        let b = a + (limit - 1);
        let c = b + (limit - 1);
        let want = cat(&[
            &line[..a],
            b"\r\n ",
            &line[a..b],
            b"\r\n ",
            &line[b..c],
            b"\r\n ",
            &line[c..],
            b"\r\n",
        ]);
        assert_eq!(line.len() - c, 7); // last wire line: space + 7 bytes
        let got = enc(&cat(&[&line, b"\n"]), limit);
        assert_eq!(got, want, "limit {limit}");
        check_wire_form(&got, limit);
    }
}

#[test]
fn long_line_explicit_positions() {
    let got = enc(b"0123456789abcdefghijklmnopqrstuvwxyzABCDE\n", 10);
    assert_eq!(
        got,
        b"0123456789\r\n abcdefghi\r\n jklmnopqr\r\n stuvwxyzA\r\n BCDE\r\n".to_vec()
    );
}

#[test]
fn long_line_starting_with_dot() {
    // The transparency dot is not counted (RFC 5321 4.5.3.1.6).
    assert_eq!(
        enc(b".123456789ABC\n", 10),
        b"..123456789\r\n ABC\r\n".to_vec()
    );
    assert_eq!(enc(b".123456789\n", 10), b"..123456789\r\n".to_vec());
    // A continuation that begins with '.' is not stuffed: it starts with a space.
    assert_eq!(
        enc(b"0123456789.abc\n", 10),
        b"0123456789\r\n .abc\r\n".to_vec()
    );
    assert_eq!(
        enc(b"0123456789012345678.\n", 10),
        b"0123456789\r\n 012345678\r\n .\r\n".to_vec()
    );
}

#[test]
fn cr_around_limit() {
    // CRLF right after `limit` bytes is a line ending, not a long line.
    assert_eq!(
        enc(b"0123456789\r\nx\n", 10),
        b"0123456789\r\nx\r\n".to_vec()
    );
    // A bare CR beyond the limit is data and gets broken onto the next line.
    assert_eq!(
        enc(b"0123456789\rX\n", 10),
        b"0123456789\r\n \rX\r\n".to_vec()
    );
    // A trailing bare CR beyond the limit at end of input.
    assert_eq!(enc(b"0123456789\r", 10), b"0123456789\r\n \r\r\n".to_vec());
    // A bare CR within the limit counts as a byte of the line.
    assert_eq!(
        enc(b"012345678\rX\n", 10),
        b"012345678\r\r\n X\r\n".to_vec()
    );
}

#[test]
fn limit_zero_means_no_breaking() {
    let line = pattern(5000);
    assert_eq!(enc(&cat(&[&line, b"\n"]), 0), cat(&[&line, b"\r\n"]));
    let dotted = cat(&[b".", &line]);
    assert_eq!(enc(&dotted, 0), cat(&[b".", &dotted, b"\r\n"]));
}

#[test]
fn limit_one_is_treated_as_two() {
    assert_eq!(BodyEncoder::new(1).line_length_limit(), 2);
    assert_eq!(BodyEncoder::new(0).line_length_limit(), 0);
    assert_eq!(BodyEncoder::new(998).line_length_limit(), 998);
    assert_eq!(enc(b"abcd\n", 1), b"ab\r\n c\r\n d\r\n".to_vec());
}

#[test]
fn eight_bit_long_line() {
    let line: Vec<u8> = (0..25).map(|i| 0x80 + i as u8).collect();
    let got = enc(&line, 10);
    let want = cat(&[
        &line[..10],
        b"\r\n ",
        &line[10..19],
        b"\r\n ",
        &line[19..],
        b"\r\n",
    ]);
    assert_eq!(got, want);
}

#[test]
fn encoder_is_reusable_after_finish() {
    let mut e = BodyEncoder::new(10).replace_stray_cr(false);
    let mut out = Vec::new();
    e.encode(b"abc\r", &mut out);
    e.finish(&mut out);
    assert_eq!(out, b"abc\r\r\n".to_vec());
    out.clear();
    e.encode(b".x", &mut out);
    e.finish(&mut out);
    assert_eq!(out, b"..x\r\n".to_vec());
    out.clear();
    e.finish(&mut out);
    assert!(out.is_empty());
}

#[test]
fn encode_appends_without_clearing() {
    let mut e = BodyEncoder::new(998);
    let mut out = b"HEAD".to_vec();
    e.encode(b"x\n", &mut out);
    e.finish(&mut out);
    assert_eq!(out, b"HEADx\r\n".to_vec());
}

// ---------- chunk-boundary independence ----------

fn boundary_inputs() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a\r\nb\r\n".to_vec(),
        b"a\r\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n".to_vec(),
        b"\r\r\r\n\n".to_vec(),
        b"abc\r".to_vec(),
        b"\r".to_vec(),
        b".\n.\r\n..\n.x\r\n.".to_vec(),
        b"x\r.\r\n.\r\r\n.".to_vec(),
        b"line one\nline two\r\n.dot\n\nend".to_vec(),
        b"Gr\xC3\xBC\xC3\x9Fe\r\n\xC3.\n".to_vec(),
        b"0123456789\r\n0123456789\rX\n0123456789\r".to_vec(),
        b"0123456789.abcdefghij.klmnopqrs\r\n.0123456789ABCDEFGHIJ\n".to_vec(),
    ];
    let long = pattern(40);
    v.push(cat(&[&long, b"\r\n.", &long, b"\n", &long]));
    v.push(cat(&[b".", &long, b"\r", &long, b"\r\n\r"]));
    v
}

#[test]
fn every_two_way_split_matches_one_shot() {
    for input in boundary_inputs() {
        for limit in [0, 1, 2, 3, 5, 10, 998] {
            let whole = enc(&input, limit);
            assert_eq!(
                whole,
                reference(&input, limit),
                "input {input:?} limit {limit}"
            );
            for i in 0..=input.len() {
                let (a, b) = input.split_at(i);
                assert_eq!(
                    enc_pieces(&[a, b], limit),
                    whole,
                    "input {input:?} split at {i} limit {limit}"
                );
                // empty pieces anywhere change nothing
                assert_eq!(enc_pieces(&[b"", a, b"", b, b""], limit), whole);
            }
        }
    }
}

#[test]
fn every_three_way_split_matches_one_shot() {
    for input in boundary_inputs().into_iter().filter(|i| i.len() <= 60) {
        for limit in [0, 2, 3, 10] {
            let whole = enc(&input, limit);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let got = enc_pieces(&[&input[..i], &input[i..j], &input[j..]], limit);
                    assert_eq!(got, whole, "input {input:?} splits {i},{j} limit {limit}");
                }
            }
        }
    }
}

#[test]
fn one_byte_pieces_match_one_shot() {
    for input in boundary_inputs() {
        for limit in [0, 1, 2, 3, 5, 10, 998] {
            let pieces: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                enc_pieces(&pieces, limit),
                enc(&input, limit),
                "input {input:?} limit {limit}"
            );
        }
    }
}

// ---------- reference model ----------

#[test]
fn matches_reference_model_on_random_inputs() {
    const LIMITS: &[usize] = &[0, 1, 2, 3, 4, 5, 7, 10, 16, 998];
    let mut rng = Lcg(0x5eed_1234_abcd_0001);
    for round in 0..4000 {
        let input = random_input(&mut rng, 200);
        let limit = LIMITS[rng.below(LIMITS.len())];
        let want = reference(&input, limit);
        let got = enc(&input, limit);
        assert_eq!(got, want, "round {round} limit {limit} input {input:?}");
        check_wire_form(&got, limit);

        // random multi-piece split
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = rng.below(rest.len().min(17) + 1);
            let (p, r) = rest.split_at(n);
            pieces.push(p);
            rest = r;
        }
        assert_eq!(
            enc_pieces(&pieces, limit),
            want,
            "round {round} limit {limit} pieces {pieces:?}"
        );
    }
}

#[test]
fn reference_model_sanity() {
    assert_eq!(reference(b"", 10), b"".to_vec());
    assert_eq!(reference(b"a\r", 10), b"a\r\r\n".to_vec());
    assert_eq!(reference(b".a\r\n", 10), b"..a\r\n".to_vec());
    assert_eq!(reference(b"abcde", 3), b"abc\r\n de\r\n".to_vec());
}

#[test]
fn find_lf_matches_position() {
    let mut rng = Lcg(42);
    for _ in 0..2000 {
        let len = rng.below(200);
        let mut v = vec![b'x'; len];
        for _ in 0..rng.below(3) {
            if len > 0 {
                let at = rng.below(len);
                v[at] = b'\n';
            }
        }
        assert_eq!(find_lf(&v), v.iter().position(|&b| b == b'\n'));
    }
    for len in 0..100 {
        for at in 0..len {
            let mut v = vec![b'y'; len];
            v[at] = b'\n';
            assert_eq!(find_lf(&v), Some(at));
        }
    }
}

// ---------- write_body ----------

struct FailingWriter;
impl Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer went away"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Yields `data`, then fails.
struct FailingReader {
    data: Vec<u8>,
    pos: usize,
}
impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.data.len() {
            let n = buf.len().min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        } else {
            Err(io::Error::other("disk on fire"))
        }
    }
}

/// Short reads of varying size with `Interrupted` in between.
struct ChoppyReader {
    data: Vec<u8>,
    pos: usize,
    calls: usize,
}
impl Read for ChoppyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(3) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf
            .len()
            .min(self.data.len() - self.pos)
            .min(1 + self.calls % 7);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Records the size of every write call; accepts at most `max` per call.
struct RecordingWriter {
    data: Vec<u8>,
    writes: Vec<usize>,
    max: usize,
}
impl RecordingWriter {
    fn new(max: usize) -> Self {
        Self {
            data: Vec::new(),
            writes: Vec::new(),
            max,
        }
    }
}
impl Write for RecordingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.max);
        self.writes.push(n);
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Claims to have read more than the buffer holds.
struct LyingReader;
impl Read for LyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(buf.len() + 1)
    }
}

fn sample_message(len: usize) -> Vec<u8> {
    let mut rng = Lcg(7);
    let mut v = Vec::with_capacity(len + 3000);
    while v.len() < len {
        let n = match rng.below(50) {
            0 => 2500,
            1 => 0,
            _ => rng.below(100),
        };
        if rng.below(10) == 0 {
            v.push(b'.');
        }
        v.extend(pattern(n));
        if rng.below(5) == 0 {
            v.push(b'\r');
        }
        v.push(b'\n');
    }
    v
}

#[test]
fn write_body_matches_encoder() {
    let input = sample_message(300_000);
    let want = enc_replacing(&input, 998);
    let mut dst = Vec::new();
    let n = write_body(&input[..], &mut dst, 998).map_err(|e| e.to_string());
    assert_eq!(n, Ok(want.len() as u64));
    assert_eq!(dst, want);
    check_wire_form(&dst, 998);
    assert_smuggling_safe(&dst);
    // The pass-through encoder through write_body_with.
    let want = enc(&input, 998);
    let mut dst = Vec::new();
    let encoder = BodyEncoder::new(998).replace_stray_cr(false);
    let n = write_body_with(&input[..], &mut dst, encoder).map_err(|e| e.to_string());
    assert_eq!(n, Ok(want.len() as u64));
    assert_eq!(dst, want);
    check_wire_form(&dst, 998);
}

#[test]
fn write_body_empty_input_writes_nothing() {
    let mut dst = RecordingWriter::new(usize::MAX);
    assert_eq!(write_body(&b""[..], &mut dst, 998).ok(), Some(0));
    assert!(dst.writes.is_empty());
    // Nothing is written, so a broken destination is not even noticed.
    assert_eq!(write_body(&b""[..], &mut FailingWriter, 998).ok(), Some(0));
}

#[test]
fn write_body_writes_in_large_pieces() {
    let input = sample_message(1_000_000);
    let mut dst = RecordingWriter::new(usize::MAX);
    let n = write_body(&input[..], &mut dst, 998).ok();
    assert_eq!(n, Some(dst.data.len() as u64));
    assert_eq!(dst.data, enc(&input, 998));
    let (last, rest) = dst
        .writes
        .split_last()
        .map(|(l, r)| (*l, r.to_vec()))
        .unwrap_or_default();
    assert!(last > 0);
    assert!(
        rest.iter().all(|&w| w >= WRITE_THRESHOLD),
        "{:?}",
        dst.writes
    );
    assert!(dst.writes.len() <= 1 + input.len() / WRITE_THRESHOLD);
}

#[test]
fn write_body_handles_partial_writes() {
    let input = sample_message(200_000);
    let mut dst = RecordingWriter::new(1000);
    let n = write_body(&input[..], &mut dst, 10).ok();
    let want = enc(&input, 10);
    assert_eq!(n, Some(want.len() as u64));
    assert_eq!(dst.data, want);
}

#[test]
fn write_body_retries_interrupted_and_short_reads() {
    let input = sample_message(20_000);
    let src = ChoppyReader {
        data: input.clone(),
        pos: 0,
        calls: 0,
    };
    let mut dst = Vec::new();
    let n = write_body(src, &mut dst, 16).ok();
    let want = enc(&input, 16);
    assert_eq!(n, Some(want.len() as u64));
    assert_eq!(dst, want);
}

#[test]
fn write_body_failing_writer_is_write_error() {
    let input = sample_message(10_000);
    match write_body(&input[..], &mut FailingWriter, 998) {
        Err(BodyError::Write(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
        other => panic!("expected write error, got {other:?}"),
    }
    // Also when the failure comes at the final flush of a tiny message.
    match write_body(&b"hi"[..], &mut FailingWriter, 998) {
        Err(err @ BodyError::Write(_)) => {
            assert!(err.to_string().contains("writing"));
            assert!(std::error::Error::source(&err).is_some());
        }
        other => panic!("expected write error, got {other:?}"),
    }
}

#[test]
fn write_body_failing_reader_is_read_error() {
    let src = FailingReader {
        data: sample_message(100_000),
        pos: 0,
    };
    let mut dst = Vec::new();
    match write_body(src, &mut dst, 998) {
        Err(err @ BodyError::Read(_)) => {
            assert_eq!(err.io_error().kind(), io::ErrorKind::Other);
            assert!(err.to_string().contains("disk on fire"));
            assert!(err.to_string().contains("reading"));
        }
        other => panic!("expected read error, got {other:?}"),
    }
    // A reader that fails before any data.
    let src = FailingReader {
        data: Vec::new(),
        pos: 0,
    };
    assert!(matches!(
        write_body(src, &mut Vec::new(), 998),
        Err(BodyError::Read(_))
    ));
}

#[test]
fn write_body_lying_reader_is_read_error_not_panic() {
    match write_body(LyingReader, &mut Vec::new(), 998) {
        Err(BodyError::Read(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
        other => panic!("expected read error, got {other:?}"),
    }
    assert!(scan(LyingReader).is_err());
}

/// Generates `blocks` copies of `block` with irregular read sizes.
struct RepeatReader<'a> {
    block: &'a [u8],
    blocks_left: usize,
    pos: usize,
    calls: usize,
}
impl Read for RepeatReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blocks_left == 0 {
            return Ok(0);
        }
        self.calls += 1;
        // vary the read size so block boundaries fall everywhere
        let want = buf.len() - (self.calls * 4099) % (buf.len() / 2);
        let n = want.min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.block.len() {
            self.pos = 0;
            self.blocks_left -= 1;
        }
        Ok(n)
    }
}

#[test]
fn fifty_megabytes_through_write_body() {
    // 1 MiB of text ending at a line boundary, repeated 50 times.
    let mut block = sample_message(1 << 20);
    block.truncate(1 << 20);
    while block.last() != Some(&b'\n') {
        block.pop();
    }
    let copies = 50usize;
    let input_len = block.len() * copies;
    let want = enc(&block, 998).len() as u64 * copies as u64;
    let src = RepeatReader {
        block: &block,
        blocks_left: copies,
        pos: 0,
        calls: 0,
    };
    let start = Instant::now();
    let got = write_body(src, &mut io::sink(), 998).ok();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, Some(want));
    println!(
        "write_body: {:.1} MB in {:.3} s = {:.0} MB/s",
        input_len as f64 / 1e6,
        secs,
        input_len as f64 / 1e6 / secs
    );
}

// ---------- scan ----------

#[test]
fn scan_empty() {
    assert_eq!(scan(&b""[..]).ok(), Some(BodyFacts::default()));
}

#[test]
fn scan_ascii_and_8bit() {
    assert_eq!(
        scan(&b"hello\r\nworld\n"[..]).ok(),
        Some(BodyFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 13,
            has_8bit: false
        })
    );
    assert_eq!(
        scan(&b"Gr\xC3\xBC\xC3\x9Fe\n"[..]).ok(),
        // Not a header field: body, so no header UTF-8 (Postfix's rule).
        Some(BodyFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 8,
            has_8bit: true
        })
    );
    assert_eq!(
        scan(&b"\x7F\x00\x01"[..]).ok(),
        Some(BodyFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 3,
            has_8bit: false
        })
    );
    assert_eq!(scan(&b"\x80"[..]).map(|f| f.has_8bit).ok(), Some(true));
    assert_eq!(scan(&b"\xFF"[..]).map(|f| f.has_8bit).ok(), Some(true));
}

#[test]
fn scan_large_input_8bit_late() {
    let mut input = vec![b'a'; 3 * READ_CHUNK + 17];
    assert_eq!(
        scan(&input[..]).ok(),
        Some(BodyFacts {
            tls_required_no: false,
            utf8_header: false,
            size: input.len() as u64,
            has_8bit: false
        })
    );
    let last = input.len() - 1;
    input[last] = 0xC3;
    // One long line without a colon: not a header field, so body.
    assert_eq!(
        scan(&input[..]).ok(),
        Some(BodyFacts {
            tls_required_no: false,
            utf8_header: false,
            size: input.len() as u64,
            has_8bit: true
        })
    );
}

#[test]
fn scan_retries_interrupted_and_reports_errors() {
    let src = ChoppyReader {
        data: b"a:bc\xC3def\n".to_vec(),
        pos: 0,
        calls: 0,
    };
    assert_eq!(
        scan(src).ok(),
        Some(BodyFacts {
            tls_required_no: false,
            utf8_header: true,
            size: 9,
            has_8bit: true
        })
    );
    let src = FailingReader {
        data: b"abc".to_vec(),
        pos: 0,
    };
    assert_eq!(scan(src).map_err(|e| e.kind()), Err(io::ErrorKind::Other));
}

#[test]
fn tls_required_no_is_read_from_the_header_only() {
    assert!(has_tls_required_no(
        b"From: a\r\nTLS-Required: No\r\n\r\nbody\r\n"
    ));
    assert!(has_tls_required_no(b"tls-required:  no \nSubject: x\n\n"));
    assert!(has_tls_required_no(b"TLS-Required:\r\n No\r\n\r\n"));
    assert!(!has_tls_required_no(b"TLS-Required: Yes\r\n\r\n"));
    assert!(!has_tls_required_no(b"TLS-Required: No way\r\n\r\n"));
    assert!(!has_tls_required_no(
        b"Subject: a\r\n\r\nTLS-Required: No\r\n"
    ));
    assert!(!has_tls_required_no(b"X-TLS-Required: No\r\n\r\n"));
    assert!(facts_of(b"TLS-Required: no\r\n\r\nx").tls_required_no);
    assert!(
        scan(&b"TLS-Required: no\r\n\r\nx"[..])
            .unwrap()
            .tls_required_no
    );
}

// ---------- stray CR replacement (cleanup_replace_stray_cr_lf) ----------

/// The replacing encoder (the default).
fn enc_replacing(input: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_all(input, limit, &mut out);
    out
}

fn enc_replacing_pieces(pieces: &[&[u8]], limit: usize) -> Vec<u8> {
    let mut e = BodyEncoder::new(limit);
    let mut out = Vec::new();
    for p in pieces {
        e.encode(p, &mut out);
    }
    e.finish(&mut out);
    out
}

/// Postfix's rule as a model: LF and CRLF end lines; every other CR (one
/// not followed by LF, also one at the very end) becomes a SPACE.
fn replace_model(input: &[u8]) -> Vec<u8> {
    input
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if b == b'\r' && input.get(i + 1) != Some(&b'\n') {
                b' '
            } else {
                b
            }
        })
        .collect()
}

/// No bare CR, no bare LF, and no line that is a lone "." (the caller adds
/// the real end): what no lenient receiver can misread as end-of-data.
fn assert_smuggling_safe(wire: &[u8]) {
    for (i, &b) in wire.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i} in {wire:?}");
        }
        if b == b'\n' {
            assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i} in {wire:?}");
        }
    }
    assert!(wire.is_empty() || wire.ends_with(b"\r\n"), "{wire:?}");
    for line in split_crlf(wire) {
        assert_ne!(line, b".", "a lone dot line in {wire:?}");
    }
}

#[test]
fn stray_cr_table() {
    #[rustfmt::skip]
    let table: &[(&[u8], &[u8])] = &[
        (b"a\rb\n",          b"a b\r\n"),
        (b"a\r\rb\r\n",      b"a  b\r\n"),
        (b"a\r\r\n",         b"a \r\n"),
        (b"\rx\n",           b" x\r\n"),
        (b"abc\r",           b"abc \r\n"),
        (b"\r",              b" \r\n"),
        (b"a\n\r",           b"a\r\n \r\n"),
        // The published smuggling payloads: none ends the data early.
        (b"x\n.\ny",         b"x\r\n..\r\ny\r\n"),
        (b"x\r.\ry",         b"x . y\r\n"),
        (b"x\r\n.\ry",       b"x\r\n.. y\r\n"),
        (b"x\n.\r\ny",       b"x\r\n..\r\ny\r\n"),
        (b"x\r.\ny",         b"x .\r\ny\r\n"),
        (b"x\r\n.\ny",       b"x\r\n..\r\ny\r\n"),
        (b"x\n.\ry",         b"x\r\n.. y\r\n"),
        (b"x\n.\r",          b"x\r\n.. \r\n"),
        (b"x\r.\r\nMAIL FROM:<a@b>\r\n", b"x .\r\nMAIL FROM:<a@b>\r\n"),
        (b".\r",             b".. \r\n"),
        (b"\r.\r\n",         b" .\r\n"),
    ];
    for &(input, want) in table {
        assert_eq!(enc_replacing(input, 998), want, "input {input:?}");
        assert_smuggling_safe(want);
    }
}

#[test]
fn stray_cr_replacement_matches_the_model_however_split() {
    for input in boundary_inputs() {
        for limit in [0, 1, 2, 3, 5, 10, 998] {
            let whole = enc_replacing(&input, limit);
            assert_eq!(
                whole,
                reference(&replace_model(&input), limit),
                "input {input:?} limit {limit}"
            );
            assert_smuggling_safe(&whole);
            for i in 0..=input.len() {
                let (a, b) = input.split_at(i);
                assert_eq!(
                    enc_replacing_pieces(&[a, b], limit),
                    whole,
                    "input {input:?} split at {i}"
                );
            }
            let pieces: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                enc_replacing_pieces(&pieces, limit),
                whole,
                "input {input:?} bytewise"
            );
        }
    }
}

#[test]
fn stray_cr_replacement_on_random_inputs() {
    const LIMITS: &[usize] = &[0, 1, 2, 3, 7, 10, 998];
    let mut rng = Lcg(0x5eed_0c0d_cafe_0002);
    for round in 0..4000 {
        let input = random_input(&mut rng, 200);
        let limit = LIMITS[rng.below(LIMITS.len())];
        let want = reference(&replace_model(&input), limit);
        let got = enc_replacing(&input, limit);
        assert_eq!(got, want, "round {round} limit {limit} input {input:?}");
        check_wire_form(&got, limit);
        assert_smuggling_safe(&got);
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = rng.below(rest.len().min(17) + 1);
            let (a, b) = rest.split_at(n);
            pieces.push(a);
            rest = b;
        }
        assert_eq!(
            enc_replacing_pieces(&pieces, limit),
            want,
            "round {round} pieces"
        );
    }
}

#[test]
fn header_scan_finds_utf8_in_the_header_only() {
    let cases: &[(&[u8], bool)] = &[
        (b"Subject: hi\r\n\r\nGr\xC3\xBC\xC3\x9Fe\r\n", false),
        (b"Subject: Gr\xC3\xBC\xC3\x9Fe\r\n\r\nbody\r\n", true),
        (b"Subject: hi\n\nGr\xC3\xBC\n", false),
        (b"Subject: hi\n folded \xC3\xBC\n\nbody\n", true),
        (b"\r\nSubject: \xC3\xBC\r\n", false),
        (b"\nSubject: \xC3\xBC\n", false),
        // A bare CR line is not the empty line.
        (b"A: b\r\n\rC: \xC3\xBC\r\n\r\n", true),
        (b"", false),
        // Postfix's header end: a line that is not a field ends it.
        (b"no empty line \xC3\xBC", false),
        (b"Subject: hi\r\nnot a header \xC3\xBC\r\n", false),
        (b"Subject: hi\r\nNoColon\r\nX: \xC3\xBC\r\n", false),
        (b"\xC3\xBC: x\r\n\r\n", false),
        (b" folded first \xC3\xBC\r\n", false),
        (b":x \xC3\xBC\r\n", false),
        // Blanks before the colon (RFC 822's obsolete form), folding with
        // a tab, a header without an empty line or a final newline.
        (b"Subject : \xC3\xBC\r\n\r\n", true),
        (b"X: a\r\n\t\xC3\xBC\r\n\r\n", true),
        (b"Subject: \xC3\xBC", true),
    ];
    for &(message, want) in cases {
        assert_eq!(facts_of(message).utf8_header, want, "{message:?}");
        assert_eq!(
            scan(message).map(|f| f.utf8_header).ok(),
            Some(want),
            "{message:?}"
        );
        let mut scan = HeaderScan::default();
        for b in message.chunks(1) {
            scan.feed(b);
        }
        assert_eq!(scan.non_ascii(), want, "bytewise {message:?}");
    }
}

/// Only blanks (SP, HTAB) may surround the field name: a control
/// character before it makes no `TLS-Required` field (a fuzz finding: a
/// vertical tab was trimmed by the reference and not by the scan).
#[test]
fn tls_required_name_is_trimmed_of_blanks_only() {
    // A folded line belongs to the field before it.
    assert!(!has_tls_required_no(b"A: x\r\n TLS-Required : No\r\n\r\n"));
    assert!(has_tls_required_no(b"TLS-Required\t: No\r\n\r\n"));
    assert!(!has_tls_required_no(
        b"Subj\xffct: x\r\n\r\x0bTLS-Required: No\r\n"
    ));
    assert!(!has_tls_required_no(b"\x0bTLS-Required: No\r\n"));
}
