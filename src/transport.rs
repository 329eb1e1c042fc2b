//! The byte stream under a session: the [`Transport`] trait (TCP, UNIX, and
//! later TLS, or an in-memory script in tests) and [`Connection`], which adds
//! per-phase timeouts, bounded reply-line reading and failure classification.
//!
//! Time limits: by default (`per_request_deadline`, Postfix's
//! smtp_per_request_deadline) a limit covers a whole request (one
//! [`Connection::send`]) or a whole response (one [`Connection::read_reply`]),
//! so a server trickling a byte per read cannot stretch it; the message
//! content has a [`DataDeadline`] that its own progress extends
//! (`min_data_rate`). Without it, each limit applies to every single read
//! or write, as in Postfix's default.
//!
//! Contract: every read and write carries a timeout; a line longer than the
//! cap is truncated (the rest is read and dropped); a reply longer than
//! [`MAX_REPLY_BYTES`] in total is an error, so a hostile server can neither
//! exhaust memory nor keep a worker spinning on endless continuation lines.
//! Errors come back as [`IoFailure`], the protocol layer's vocabulary.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::smtp::client::IoFailure;
use crate::smtp::reply::{Reply, ReplyParser};

/// Most bytes one reply may take on the wire, all lines together.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// A bidirectional byte stream with settable timeouts.
pub trait Transport: Read + Write + Send {
    /// Sets the timeout of each read; `None` blocks without limit.
    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Sets the timeout of each write; `None` blocks without limit.
    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Writes what the stream takes at once, without blocking (and so
    /// without needing a timeout); None when the stream cannot tell.
    fn send_now(&mut self, _bytes: &[u8]) -> Option<io::Result<usize>> {
        None
    }

    /// Close with a reset instead of FIN (no TIME_WAIT on either side);
    /// only for a session the server has already ended (its QUIT reply
    /// arrived). Default: nothing.
    fn reset_on_close(&mut self) {}

    /// Sets the read and the write timeout.
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_recv_timeout(timeout)?;
        self.set_send_timeout(timeout)
    }

    /// For idle connections: the peer closed it, or sent something
    /// unsolicited (either way it is no longer usable). Never blocks.
    fn peer_closed(&mut self) -> bool {
        false
    }

    /// The local (source) address, for logs; None for UNIX sockets.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// One non-blocking send on a socket (MSG_DONTWAIT, no SIGPIPE).
pub fn socket_send_now(fd: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    loop {
        match send(
            fd.as_raw_fd(),
            bytes,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(0),
            Err(errno) => return Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
}

/// Non-blocking peek on a socket: closed (EOF), unexpected data, or an
/// error all mean "not usable".
pub fn socket_peer_closed(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    !matches!(
        recv(
            fd.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Err(nix::errno::Errno::EAGAIN)
    )
}

impl Transport for std::net::TcpStream {
    fn send_now(&mut self, bytes: &[u8]) -> Option<io::Result<usize>> {
        Some(socket_send_now(std::os::fd::AsFd::as_fd(self), bytes))
    }

    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(timeout)
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        std::net::TcpStream::local_addr(self).ok()
    }

    fn peer_closed(&mut self) -> bool {
        socket_peer_closed(std::os::fd::AsFd::as_fd(self))
    }
}

impl Transport for std::os::unix::net::UnixStream {
    fn send_now(&mut self, bytes: &[u8]) -> Option<io::Result<usize>> {
        Some(socket_send_now(std::os::fd::AsFd::as_fd(self), bytes))
    }

    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(timeout)
    }

    fn peer_closed(&mut self) -> bool {
        socket_peer_closed(std::os::fd::AsFd::as_fd(self))
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn reset_on_close(&mut self) {
        (**self).reset_on_close()
    }

    fn send_now(&mut self, bytes: &[u8]) -> Option<io::Result<usize>> {
        (**self).send_now(bytes)
    }

    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_recv_timeout(timeout)
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_send_timeout(timeout)
    }

    fn peer_closed(&mut self) -> bool {
        (**self).peer_closed()
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        (**self).local_addr()
    }
}

/// Maps an I/O error to the protocol layer's failure kinds.
pub fn classify(error: &io::Error) -> IoFailure {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => IoFailure::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => IoFailure::Lost,
        _ => IoFailure::Other(strerror(error)),
    }
}

/// The OS error text without Rust's " (os error N)" suffix, like strerror(3).
pub fn strerror(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

fn zero_is_none(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then_some(timeout)
}

/// Most bytes of message content written at once under a [`DataDeadline`],
/// so that its progress is counted as it happens.
const DATA_CHUNK: usize = 64 * 1024;

/// The deadline of the DATA phase under per-request deadlines (Postfix's
/// smtp_min_data_rate): it starts at `limit` (`data_xfer_timeout`); each
/// write uses up the time it took and earns N/`rate` seconds for its N
/// bytes, never beyond `limit`. A transfer at `rate` bytes per second or
/// faster never runs out; a server that stops taking bytes is left within
/// `limit`. Pure arithmetic: the clock is the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataDeadline {
    limit: Duration,
    rate: u32,
    left: Duration,
}

impl DataDeadline {
    pub fn new(limit: Duration, min_data_rate: u32) -> Self {
        Self {
            limit,
            rate: min_data_rate.max(1),
            left: limit,
        }
    }

    /// Time left for the next write (zero: the deadline has passed).
    pub fn left(&self) -> Duration {
        self.left
    }

    /// Accounts for a write of `bytes` that took `elapsed`; returns the
    /// time left.
    pub fn after_write(&mut self, bytes: usize, elapsed: Duration) -> Duration {
        let bytes = u128::from(u64::try_from(bytes).unwrap_or(u64::MAX));
        let nanos = bytes.saturating_mul(1_000_000_000) / u128::from(self.rate);
        let credit = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.left = self
            .left
            .saturating_sub(elapsed)
            .saturating_add(credit)
            .min(self.limit);
        self.left
    }
}

/// Message content on its way out (see [`Connection::data_writer`]): a
/// writer whose writes share one [`DataDeadline`], or each have the plain
/// per-write timeout.
pub struct DataWriter<'a, T: Transport> {
    conn: &'a mut Connection<T>,
    deadline: Option<DataDeadline>,
}

impl<T: Transport> Write for DataWriter<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(deadline) = &mut self.deadline else {
            return self.conn.stream.write(buf);
        };
        let left = deadline.left();
        if left < Duration::from_millis(1) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "DATA deadline exceeded",
            ));
        }
        self.conn
            .apply_send_timeout(left)
            .map_err(|_| io::Error::other("cannot set the write timeout"))?;
        let chunk = buf.get(..buf.len().min(DATA_CHUNK)).unwrap_or(buf);
        let started = Instant::now();
        let written = self.conn.stream.write(chunk)?;
        deadline.after_write(written, started.elapsed());
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.stream.flush()
    }
}

/// A transport with a read buffer, reply assembly and timeouts.
pub struct Connection<T: Transport> {
    stream: T,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line_cap: usize,
    reply_cap: usize,
    /// The read and write timeouts last set on the stream, to skip
    /// redundant setsockopt calls. None: unknown.
    recv_timeout: Option<Option<Duration>>,
    send_timeout: Option<Option<Duration>>,
    /// The source address, asked once (a cached session is logged per job).
    local: std::cell::OnceCell<Option<std::net::SocketAddr>>,
    /// Reply line assembly buffer.
    line: Vec<u8>,
    /// A time limit covers a whole request or response (see the module doc).
    per_request: bool,
}

impl<T: Transport> Connection<T> {
    /// `reply_text_limit` caps stored reply text (Postfix `line_length_limit`).
    pub fn new(stream: T, reply_text_limit: usize) -> Self {
        Self {
            stream,
            // Replies are short; a larger one is assembled across reads.
            // 1 KiB comes from the allocator's per-thread cache, which a
            // zero-filled allocation (calloc) would bypass: the filler is
            // any other byte (the contents are never read before written).
            buf: vec![b' '; 1024],
            start: 0,
            end: 0,
            line_cap: reply_text_limit.max(512),
            reply_cap: reply_text_limit,
            recv_timeout: None,
            send_timeout: None,
            local: std::cell::OnceCell::new(),
            line: Vec::new(),
            per_request: false,
        }
    }

    /// true: each time limit covers a whole request or response (Postfix's
    /// smtp_per_request_deadline); false: every single read or write.
    pub fn set_per_request_deadline(&mut self, on: bool) {
        self.per_request = on;
    }

    /// The end of a request or response that starts now under `timeout`
    /// (None: per-read limits, or no limit at all).
    fn deadline_for(&self, timeout: Duration) -> Option<Instant> {
        if !self.per_request || timeout.is_zero() {
            return None;
        }
        Instant::now().checked_add(timeout)
    }

    /// The limit of the next read or write: what is left until `deadline`,
    /// else `timeout` itself.
    fn limit_until(deadline: Option<Instant>, timeout: Duration) -> Result<Duration, IoFailure> {
        let Some(deadline) = deadline else {
            return Ok(timeout);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(IoFailure::Timeout);
        }
        // Just started: the whole limit, so the stream keeps the timeout it
        // already has (no setsockopt per reply).
        if left.saturating_add(Duration::from_millis(1)) >= timeout {
            return Ok(timeout);
        }
        Ok(left)
    }

    /// Readies the stream for a read that may wait `timeout` (zero: no
    /// limit). A shorter timeout already on the stream is kept: the read
    /// goes on after it expires until `timeout` has passed (see
    /// [`Self::read_within`]), so the alternating limits of a session
    /// (a 20 s RSET, a 600 s final dot, 300 s elsewhere) do not cost a
    /// setsockopt each.
    fn apply_recv_timeout(&mut self, timeout: Duration) -> Result<(), IoFailure> {
        let wanted = zero_is_none(timeout);
        let keep = match (self.recv_timeout, wanted) {
            (Some(Some(current)), Some(wanted)) => current <= wanted,
            (Some(Some(_)), None) | (Some(None), None) => true,
            _ => false,
        };
        if !keep {
            self.set_recv_timeout_now(wanted)?;
        }
        Ok(())
    }

    fn set_recv_timeout_now(&mut self, timeout: Option<Duration>) -> Result<(), IoFailure> {
        self.recv_timeout = None;
        self.stream
            .set_recv_timeout(timeout)
            .map_err(|e| classify(&e))?;
        self.recv_timeout = Some(timeout);
        Ok(())
    }

    /// One read that gives up after `timeout` (zero: never), however much
    /// shorter the stream's own read timeout is.
    fn read_within(&mut self, timeout: Duration) -> Result<usize, IoFailure> {
        self.apply_recv_timeout(timeout)?;
        let started = std::time::Instant::now();
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Only a stream timeout shorter than this read's limit
                    // (kept by apply_recv_timeout) means "wait on".
                    let shorter = match self.recv_timeout {
                        Some(Some(current)) => timeout.is_zero() || current < timeout,
                        _ => false,
                    };
                    if !shorter {
                        return Err(IoFailure::Timeout);
                    }
                    if timeout.is_zero() {
                        continue;
                    }
                    let left = timeout.saturating_sub(started.elapsed());
                    if left < Duration::from_millis(1) {
                        return Err(IoFailure::Timeout);
                    }
                    // The stream's shorter timeout expired: wait the rest,
                    // at most what is left of this read's own limit.
                    if matches!(self.recv_timeout, Some(Some(current)) if current > left) {
                        self.set_recv_timeout_now(Some(left))?;
                    }
                }
                Err(e) => return Err(classify(&e)),
            }
        }
    }

    /// Sets the stream's write timeout unless it is already in force.
    fn apply_send_timeout(&mut self, timeout: Duration) -> Result<(), IoFailure> {
        let wanted = zero_is_none(timeout);
        if self.send_timeout != Some(wanted) {
            self.send_timeout = None;
            self.stream
                .set_send_timeout(wanted)
                .map_err(|e| classify(&e))?;
            self.send_timeout = Some(wanted);
        }
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut T {
        // The caller may change the timeouts behind our back.
        self.recv_timeout = None;
        self.send_timeout = None;
        &mut self.stream
    }

    pub fn into_inner(self) -> T {
        self.stream
    }

    /// The connection's source address (TCP).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        *self.local.get_or_init(|| self.stream.local_addr())
    }

    /// An idle connection the peer closed or wrote to unasked.
    pub fn peer_closed(&mut self) -> bool {
        self.buffered() > 0 || self.stream.peer_closed()
    }

    /// The reply text cap this connection was made with.
    pub fn reply_limit(&self) -> usize {
        self.reply_cap
    }

    /// Received bytes not yet consumed start with `prefix`.
    pub fn buffered_starts_with(&self, prefix: &[u8]) -> bool {
        self.buf
            .get(self.start..self.end)
            .is_some_and(|rest| rest.starts_with(prefix))
    }

    /// The complete replies among the received bytes not yet consumed
    /// (a partial last line is not counted); None when a complete line is
    /// not a valid reply line (`DDD`, `DDD text`, `DDD-text`).
    pub fn buffered_replies(&self) -> Option<usize> {
        let rest = self.buf.get(self.start..self.end).unwrap_or(&[]);
        let mut replies = 0usize;
        let mut lines = rest.split(|&b| b == b'\n');
        // The piece after the last newline is an unfinished line.
        let _unfinished = lines.next_back();
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let code = line.get(..3)?;
            if !code.iter().all(u8::is_ascii_digit) {
                return None;
            }
            match line.get(3) {
                None | Some(b' ') => replies += 1,
                Some(b'-') => {}
                Some(_) => return None,
            }
        }
        Some(replies)
    }

    /// Bytes received but not yet consumed as replies.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Writes what the stream takes at once without blocking, where the
    /// stream can tell: `None` when all of `bytes` went, else what is still
    /// to write (all of `bytes` when the stream cannot tell).
    fn send_at_once<'b>(&mut self, bytes: &'b [u8]) -> Result<Option<&'b [u8]>, IoFailure> {
        let Some(sent) = self.stream.send_now(bytes) else {
            return Ok(Some(bytes));
        };
        let n = sent.map_err(|e| classify(&e))?;
        let rest = bytes.get(n..).unwrap_or(&[]);
        Ok((!rest.is_empty()).then_some(rest))
    }

    /// Writes all bytes under `timeout` (zero = none).
    pub fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), IoFailure> {
        // Most writes fit the socket buffer: try without blocking first, and
        // set the write timeout only when the rest has to wait.
        let Some(mut rest) = self.send_at_once(bytes)? else {
            return Ok(());
        };
        let Some(deadline) = self.deadline_for(timeout) else {
            self.apply_send_timeout(timeout)?;
            self.stream.write_all(rest).map_err(|e| classify(&e))?;
            return self.stream.flush().map_err(|e| classify(&e));
        };
        // The whole request within `timeout`, however the writes go.
        while !rest.is_empty() {
            self.apply_send_timeout(Self::limit_until(Some(deadline), timeout)?)?;
            match self.stream.write(rest) {
                Ok(0) => return Err(IoFailure::Lost),
                Ok(n) => rest = rest.get(n..).unwrap_or(&[]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(&e)),
            }
        }
        self.stream.flush().map_err(|e| classify(&e))
    }

    /// Writes message content (or all of an in-memory message with its
    /// final dot) under `timeout`: with per-request deadlines, one
    /// [`DataDeadline`] extended by `min_data_rate`; else per write.
    pub fn send_data(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
        min_data_rate: u32,
    ) -> Result<(), IoFailure> {
        if self.deadline_for(timeout).is_none() {
            return self.send(bytes, timeout);
        }
        // Most messages fit the socket buffer: no deadline to keep.
        let Some(rest) = self.send_at_once(bytes)? else {
            return Ok(());
        };
        let mut writer = self.data_writer(timeout, min_data_rate)?;
        writer.write_all(rest).map_err(|e| classify(&e))?;
        writer.flush().map_err(|e| classify(&e))
    }

    /// A writer for message content under `timeout`: see [`Self::send_data`].
    pub fn data_writer(
        &mut self,
        timeout: Duration,
        min_data_rate: u32,
    ) -> Result<DataWriter<'_, T>, IoFailure> {
        let deadline = self
            .deadline_for(timeout)
            .map(|_| DataDeadline::new(timeout, min_data_rate));
        if deadline.is_none() {
            self.apply_send_timeout(timeout)?;
        }
        Ok(DataWriter {
            conn: self,
            deadline,
        })
    }

    /// Reads one complete reply; `timeout` (zero = none) applies to the
    /// whole reply with per-request deadlines, else to each read from the
    /// stream (a reply already buffered needs none).
    pub fn read_reply(&mut self, timeout: Duration) -> Result<Reply, IoFailure> {
        self.read_reply_strict(timeout, false)
    }

    /// As [`Self::read_reply`]; `strict`: a line that is not a reply line
    /// ends the reply at once (see [`ReplyParser`]).
    pub fn read_reply_strict(
        &mut self,
        timeout: Duration,
        strict: bool,
    ) -> Result<Reply, IoFailure> {
        // One line buffer per connection, reused for every reply.
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let reply = self.read_reply_with(timeout, &mut line, strict);
        self.line = line;
        reply
    }

    fn read_reply_with(
        &mut self,
        timeout: Duration,
        line: &mut Vec<u8>,
        strict: bool,
    ) -> Result<Reply, IoFailure> {
        let mut parser = ReplyParser::new(self.reply_cap).strict(strict);
        let mut consumed = 0usize;
        let deadline = self.deadline_for(timeout);
        loop {
            // Take one line out of the buffer, reading more as needed.
            let newline = self
                .buf
                .get(self.start..self.end)
                .and_then(|b| memchr::memchr(b'\n', b));
            match newline {
                Some(pos) => {
                    let chunk = self.buf.get(self.start..self.start + pos).unwrap_or(&[]);
                    let room = self.line_cap.saturating_sub(line.len());
                    let chunk = chunk.get(..room.min(chunk.len())).unwrap_or(&[]);
                    self.start += pos + 1;
                    consumed += pos + 1;
                    let done = if line.is_empty() {
                        // The whole line is in the buffer: parse it there.
                        parser.push_line(chunk.strip_suffix(b"\r").unwrap_or(chunk))
                    } else {
                        line.extend_from_slice(chunk);
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        parser.push_line(line)
                    };
                    if let Some(reply) = done {
                        return Ok(reply);
                    }
                    line.clear();
                }
                None => {
                    let chunk = self.buf.get(self.start..self.end).unwrap_or(&[]);
                    let room = self.line_cap.saturating_sub(line.len());
                    line.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or(&[]));
                    consumed += chunk.len();
                    self.start = 0;
                    self.end = 0;
                    if consumed > MAX_REPLY_BYTES {
                        return Err(IoFailure::Other(format!(
                            "server reply exceeds {MAX_REPLY_BYTES} bytes"
                        )));
                    }
                    let n = self.read_within(Self::limit_until(deadline, timeout)?)?;
                    if n == 0 {
                        return Err(IoFailure::Lost);
                    }
                    self.end = n.min(self.buf.len());
                }
            }
            if consumed > MAX_REPLY_BYTES {
                return Err(IoFailure::Other(format!(
                    "server reply exceeds {MAX_REPLY_BYTES} bytes"
                )));
            }
        }
    }
}

// Always compiled (the integration tests under tests/ use it too) but
// hidden from the documentation: not part of the interface.
#[doc(hidden)]
pub mod script {
    //! An in-memory transport that plays a server script, for tests.
    use super::*;
    use std::collections::VecDeque;

    /// What the scripted server does next.
    #[derive(Clone, Debug)]
    pub enum Step {
        /// Bytes the server sends.
        Say(Vec<u8>),
        /// The next read times out.
        Stall,
        /// The server closes the connection.
        Hangup,
    }

    /// Plays `Step`s to reads; records everything written.
    #[derive(Debug, Default)]
    pub struct Scripted {
        pub steps: VecDeque<Step>,
        pub written: Vec<u8>,
        pub fail_writes: bool,
        /// How often a timeout was set.
        pub timeouts_set: usize,
    }

    impl Scripted {
        pub fn new(steps: Vec<Step>) -> Self {
            Self {
                steps: steps.into(),
                ..Default::default()
            }
        }

        pub fn written_text(&self) -> String {
            String::from_utf8_lossy(&self.written).into_owned()
        }
    }

    pub fn say(text: &str) -> Step {
        Step::Say(text.as_bytes().to_vec())
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.steps.pop_front() {
                None | Some(Step::Hangup) => Ok(0),
                Some(Step::Stall) => Err(io::Error::new(io::ErrorKind::WouldBlock, "stalled")),
                Some(Step::Say(mut bytes)) => {
                    let n = bytes.len().min(buf.len());
                    let rest = bytes.split_off(n);
                    if let Some(dst) = buf.get_mut(..n) {
                        dst.copy_from_slice(&bytes);
                    }
                    if !rest.is_empty() {
                        self.steps.push_front(Step::Say(rest));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fail_writes {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "broken pipe"));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Scripted {
        fn set_recv_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
            self.timeouts_set += 1;
            Ok(())
        }

        fn set_send_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
            self.timeouts_set += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
