use super::script::*;
use super::*;

fn conn(steps: Vec<Step>) -> Connection<Scripted> {
    Connection::new(Scripted::new(steps), 2048)
}

#[test]
fn replies_split_anywhere_are_assembled() {
    let wire = "250-a\r\n250 b\r\n354 go\n";
    for cut in 0..wire.len() {
        let (x, y) = wire.split_at(cut);
        let steps = [x, y]
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| say(p))
            .collect();
        let mut c = conn(steps);
        let first = c.read_reply(Duration::from_secs(1)).expect("first");
        assert_eq!(first.text, "250-a 250 b");
        let second = c.read_reply(Duration::from_secs(1)).expect("second");
        assert_eq!(second.code, 354);
    }
}

#[test]
fn pipelined_replies_in_one_read() {
    let mut c = conn(vec![say("250 ok\r\n250 ok2\r\n354 data\r\n")]);
    assert_eq!(
        c.read_reply(Duration::ZERO).map(|r| r.text).ok().as_deref(),
        Some("250 ok")
    );
    assert!(c.buffered() > 0);
    assert_eq!(
        c.read_reply(Duration::ZERO).map(|r| r.text).ok().as_deref(),
        Some("250 ok2")
    );
    assert_eq!(c.read_reply(Duration::ZERO).map(|r| r.code).ok(), Some(354));
    assert_eq!(c.buffered(), 0);
}

#[test]
fn buffered_replies_are_counted_and_checked() {
    let mut c = conn(vec![say("250 ok\r\n250-a\r\n250 b\r\n354 go\r\n45")]);
    c.read_reply(Duration::ZERO).expect("first");
    assert_eq!(
        c.buffered_replies(),
        Some(2),
        "a partial line is not counted"
    );
    let mut c = conn(vec![say("250 ok\r\nhello\r\n250 b\r\n")]);
    c.read_reply(Duration::ZERO).expect("first");
    assert_eq!(c.buffered_replies(), None, "garbage");
    let mut c = conn(vec![say("250 ok\r\n")]);
    c.read_reply(Duration::ZERO).expect("first");
    assert_eq!(c.buffered_replies(), Some(0));
}

#[test]
fn huge_line_is_truncated_not_stored() {
    let mut line = b"550 5.1.1 ".to_vec();
    line.extend(std::iter::repeat_n(b'z', 100_000));
    line.extend_from_slice(b"\r\n250 next\r\n");
    let mut c = conn(vec![Step::Say(line)]);
    let r = c.read_reply(Duration::ZERO).expect("reply");
    assert_eq!(r.code, 550);
    assert_eq!(r.text.len(), 2048);
    assert_eq!(c.read_reply(Duration::ZERO).map(|r| r.code).ok(), Some(250));
}

#[test]
fn endless_reply_is_cut_off() {
    let chunk = "250-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n".repeat(1000);
    let steps = (0..200).map(|_| say(&chunk)).collect();
    let mut c = conn(steps);
    assert!(matches!(
        c.read_reply(Duration::ZERO),
        Err(IoFailure::Other(_))
    ));
}

#[test]
fn eof_and_stall_are_classified() {
    assert_eq!(
        conn(vec![say("250 par")]).read_reply(Duration::ZERO).err(),
        Some(IoFailure::Lost)
    );
    assert_eq!(
        conn(vec![Step::Stall]).read_reply(Duration::ZERO).err(),
        Some(IoFailure::Timeout)
    );
}

#[test]
fn unchanged_timeouts_are_not_set_again() {
    let mut c = conn(vec![say("250 a\r\n"), say("250 b\r\n"), say("250 c\r\n")]);
    let t = Duration::from_secs(5);
    assert!(c.send(b"X\r\n", t).is_ok());
    assert!(c.read_reply(t).is_ok());
    assert!(c.read_reply(t).is_ok());
    assert!(c.read_reply(Duration::from_secs(9)).is_ok());
    // One write timeout, one read timeout: the 9 s read keeps the 5 s
    // one (and reads on when it expires early).
    assert_eq!(c.into_inner().timeouts_set, 2);
    // A shorter limit is always set.
    let mut c = conn(vec![say("250 a\r\n"), say("250 b\r\n")]);
    assert!(c.read_reply(Duration::from_secs(9)).is_ok());
    assert!(c.read_reply(Duration::from_secs(5)).is_ok());
    assert_eq!(c.into_inner().timeouts_set, 2);
}

#[test]
fn per_request_deadlines_cost_no_extra_timeout_settings() {
    let mut c = conn(vec![say("250 a\r\n"), say("250 b\r\n"), say("250 c\r\n")]);
    c.set_per_request_deadline(true);
    let t = Duration::from_secs(5);
    assert!(c.send(b"X\r\n", t).is_ok());
    assert!(c.read_reply(t).is_ok());
    assert!(c.read_reply(t).is_ok());
    assert!(c.send_data(b"body\r\n.\r\n", t, 500).is_ok());
    assert!(c.read_reply(t).is_ok());
    assert_eq!(c.into_inner().timeouts_set, 2);
}

#[test]
fn a_kept_shorter_timeout_reads_on_until_the_reads_own_limit() {
    // The stream has 5 s; a 600 s read that sees it expire goes on.
    let mut c = conn(vec![say("250 a\r\n"), Step::Stall, say("250 b\r\n")]);
    assert!(c.read_reply(Duration::from_secs(5)).is_ok());
    let second = c.read_reply(Duration::from_secs(600)).map(|r| r.text);
    assert_eq!(second.ok().as_deref(), Some("250 b"));
    // A read whose own limit is the stream's times out at once.
    let mut c = conn(vec![say("250 a\r\n"), Step::Stall, say("250 b\r\n")]);
    assert!(c.read_reply(Duration::from_secs(5)).is_ok());
    assert_eq!(
        c.read_reply(Duration::from_secs(5)).err(),
        Some(IoFailure::Timeout)
    );
    // No limit at all: a stream timeout never ends the read.
    let mut c = conn(vec![
        say("250 a\r\n"),
        Step::Stall,
        Step::Stall,
        say("250 b\r\n"),
    ]);
    assert!(c.read_reply(Duration::from_secs(5)).is_ok());
    assert!(c.read_reply(Duration::ZERO).is_ok());
}

#[test]
fn buffered_replies_need_no_read_timeout() {
    let mut c = conn(vec![say("250 a\r\n250 b\r\n")]);
    assert!(c.read_reply(Duration::from_secs(5)).is_ok());
    assert!(c.read_reply(Duration::from_secs(9)).is_ok());
    assert_eq!(c.into_inner().timeouts_set, 1);
}

#[test]
fn data_deadline_is_extended_by_progress_up_to_its_limit() {
    let secs = Duration::from_secs;
    let ms = Duration::from_millis;
    let mut d = DataDeadline::new(secs(10), 500);
    assert_eq!(d.left(), secs(10));
    // 4 s for 1000 bytes: 4 s used, 2 s earned.
    assert_eq!(d.after_write(1000, secs(4)), secs(8));
    // Never beyond the limit.
    assert_eq!(d.after_write(1_000_000, ms(1)), secs(10));
    // Stalled writes use it up; more than is left: zero, not negative.
    assert_eq!(d.after_write(0, secs(7)), secs(3));
    assert_eq!(d.after_write(0, secs(9)), Duration::ZERO);
    // 250 bytes at 500 B/s: half a second, to the nanosecond.
    let mut d = DataDeadline::new(secs(1), 500);
    assert_eq!(d.after_write(250, secs(1)), ms(500));
    // A rate of 0 counts as 1 B/s; huge writes do not overflow.
    let mut d = DataDeadline::new(secs(60), 0);
    assert_eq!(d.after_write(30, secs(40)), secs(50));
    assert_eq!(d.after_write(usize::MAX, Duration::MAX), secs(60));
}

/// A peer that sends `reply` one byte every `gap`, on a thread.
fn trickle(reply: &'static [u8], gap: Duration) -> std::os::unix::net::UnixStream {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    std::thread::spawn(move || {
        for byte in reply {
            std::thread::sleep(gap);
            if theirs.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    ours
}

#[test]
fn per_request_deadline_bounds_a_trickled_reply() {
    let gap = Duration::from_millis(300);
    // On: the whole reply within 1 s, however the bytes trickle.
    let mut c = Connection::new(trickle(b"250 2.1.0 Ok\r\n", gap), 2048);
    c.set_per_request_deadline(true);
    let started = Instant::now();
    assert_eq!(
        c.read_reply(Duration::from_secs(1)).err(),
        Some(IoFailure::Timeout)
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // Off: 1 s per read, and each byte comes within it.
    let mut c = Connection::new(trickle(b"250 2.1.0 Ok\r\n", gap), 2048);
    let reply = c.read_reply(Duration::from_secs(1)).map(|r| r.text);
    assert_eq!(reply.ok().as_deref(), Some("250 2.1.0 Ok"));
}

/// Sends `size` bytes with [`Connection::send_data`] to a peer that
/// reads 32 KiB every 40 ms; returns the result and how long it took.
fn slow_reader_send(
    per_request: bool,
    min_data_rate: u32,
    size: usize,
) -> (Result<(), IoFailure>, Duration) {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        for _ in 0..10_000 {
            std::thread::sleep(Duration::from_millis(40));
            match theirs.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let mut c = Connection::new(ours, 2048);
    c.set_per_request_deadline(per_request);
    let started = Instant::now();
    let result = c.send_data(&vec![b'x'; size], Duration::from_secs(1), min_data_rate);
    let took = started.elapsed();
    drop(c);
    let _ = reader.join();
    (result, took)
}

#[test]
fn min_data_rate_extends_the_data_deadline_of_a_large_body() {
    // About 2.5 s at the reader's pace, with a 1 s data_xfer_timeout.
    let size = 2 * 1024 * 1024;
    let (result, took) = slow_reader_send(true, 500, size);
    assert_eq!(result, Ok(()), "{took:?}");
    assert!(took > Duration::from_millis(1200), "{took:?}");
    // A rate no transfer reaches: no extension, the deadline holds.
    let (result, took) = slow_reader_send(true, u32::MAX, size);
    assert_eq!(result, Err(IoFailure::Timeout), "{took:?}");
    assert!(took < Duration::from_millis(1600), "{took:?}");
    // Without per-request deadlines, every write has its own 1 s.
    let (result, _) = slow_reader_send(false, u32::MAX, size);
    assert_eq!(result, Ok(()));
}

#[test]
fn strerror_drops_the_suffix() {
    let e = io::Error::from_raw_os_error(111);
    assert_eq!(strerror(&e), "Connection refused");
}
