//! The one scripted SMTP/LMTP server of the integration tests.
//!
//! [`Server`] owns a listener on loopback and serves connections with a
//! handler: one connection ([`Server::start`]), up to N in turn
//! ([`Server::sequential`]), or any number at once, each on its own thread
//! ([`Server::concurrent`]). The handler talks through a [`Peer`] (line
//! reads with timeouts, raw writes, close and reset). The common handler is
//! a script: [`Behaviour`] says the reply to each command, LMTP's
//! per-recipient replies after the dot, and fault [`Action`]s (delay,
//! close, reset, partial write, stall) at chosen commands;
//! [`play`] runs it and records what arrived ([`Transcript`]).
//!
//! Contract: every wait is bounded: accepting ([`Limits::accept`]), each
//! read ([`READ_LIMIT`] unless the handler says otherwise) and long-lived
//! sessions ([`Peer::next_line`] polls the stop flag). A server is stopped
//! on drop: it stops accepting, its sessions see the stop flag, and every
//! thread is joined, so a failing test leaves nothing running.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{nexthop, relay};

/// How long a scripted server waits for a connection, and for each read.
const ACCEPT_LIMIT: Duration = Duration::from_secs(20);
pub const READ_LIMIT: Duration = Duration::from_secs(5);
/// Longest line a scripted server keeps (a command or a body line).
const MAX_LINE: u64 = 1 << 20;
/// How often a long-lived session looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Why a scripted server stopped reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    Timeout,
    Error,
}

/// What [`Peer::wait_input`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes are buffered.
    Data,
    /// The client closed its side.
    Eof,
    /// Nothing arrived within the limit (or the server is stopping).
    Timeout,
}

/// The server side of one accepted connection.
pub struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    partial: Vec<u8>,
    read_limit: Duration,
    stop: Arc<AtomicBool>,
}

impl Peer {
    fn new(stream: TcpStream, read_limit: Duration, stop: Arc<AtomicBool>) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(read_limit))?;
        stream.set_write_timeout(Some(read_limit))?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            read_limit,
            stop,
        })
    }

    /// True once the server is being stopped.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The connection (e.g. for a TLS acceptor; nothing may be buffered).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Sends raw bytes; a failed write is ignored (the client may be gone).
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
        let _ = self.writer.flush();
    }

    /// Sends one reply line, adding CRLF.
    pub fn reply(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// Sends one reply line, adding CRLF; the error when the write fails.
    pub fn try_reply(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    /// Sends raw bytes in one write; the error when it fails.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Hangs up (FIN both ways); later writes fail.
    pub fn close(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }

    /// Makes the end of this connection a reset (RST): the handler must
    /// return right after, which drops the socket with SO_LINGER 0.
    pub fn reset(&mut self) {
        let _ = socket2::SockRef::from(&self.writer).set_linger(Some(Duration::ZERO));
    }

    /// Bytes received but not read yet.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Reads one line with its line ending, within `limit`.
    pub fn read_raw_line_within(&mut self, limit: Duration) -> Result<Vec<u8>, End> {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))));
        let room = MAX_LINE.saturating_sub(self.partial.len() as u64);
        let result = (&mut self.reader)
            .take(room)
            .read_until(b'\n', &mut self.partial);
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(self.read_limit));
        match result {
            Ok(_) if self.partial.ends_with(b"\n") => Ok(std::mem::take(&mut self.partial)),
            Ok(0) => Err(End::Eof),
            Ok(_) if self.partial.len() as u64 >= MAX_LINE => Ok(std::mem::take(&mut self.partial)),
            Ok(_) => Err(End::Eof),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(End::Timeout)
            }
            Err(_) => Err(End::Error),
        }
    }

    /// Reads one line with its line ending.
    pub fn read_raw_line(&mut self) -> Result<Vec<u8>, End> {
        self.read_raw_line_within(self.read_limit)
    }

    /// Reads one line without its line ending, as (lossy) text.
    pub fn read_line(&mut self) -> Result<String, End> {
        self.read_raw_line().map(|raw| line_text(&raw))
    }

    /// For long-lived sessions: one line without its line ending, waiting
    /// up to `limit` in short polls of the stop flag; `None` at EOF, on an
    /// error, after `limit` or when the server stops.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        let started = Instant::now();
        while !self.stopping() && started.elapsed() < limit {
            match self.read_raw_line_within(POLL) {
                Ok(raw) => return Some(line_text(&raw)),
                Err(End::Timeout) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits up to `limit` (polling the stop flag) until input is buffered
    /// or the client closes.
    pub fn wait_input(&mut self, limit: Duration) -> Input {
        let started = Instant::now();
        let _ = self.reader.get_ref().set_read_timeout(Some(POLL));
        let mut found = Input::Timeout;
        while self.reader.buffer().is_empty() && started.elapsed() < limit && !self.stopping() {
            match self.reader.fill_buf() {
                Ok([]) => {
                    found = Input::Eof;
                    break;
                }
                Ok(_) => {}
                Err(_) => {}
            }
        }
        if !self.reader.buffer().is_empty() {
            found = Input::Data;
        }
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(self.read_limit));
        found
    }

    /// Reads whatever the client still sends until EOF or a read timeout.
    pub fn drain(&mut self) -> (Vec<String>, End) {
        let mut lines = Vec::new();
        for _ in 0..10_000 {
            match self.read_line() {
                Ok(line) => lines.push(line),
                Err(end) => return (lines, end),
            }
        }
        (lines, End::Error)
    }

    /// Whatever the client sends until it closes the connection or `limit`:
    /// (bytes, "closed" or "timeout"). A reset (the client closed with our
    /// bytes unread) counts as closed.
    pub fn read_rest(&mut self, limit: Duration) -> (Vec<u8>, &'static str) {
        let _ = self.reader.get_ref().set_read_timeout(Some(limit));
        let mut all = std::mem::take(&mut self.partial);
        all.extend_from_slice(self.reader.buffer());
        let buffered = self.reader.buffer().len();
        self.reader.consume(buffered);
        let mut buf = [0u8; 4096];
        let started = Instant::now();
        while started.elapsed() < limit {
            match self.reader.get_mut().read(&mut buf) {
                Ok(0) => return (all, "closed"),
                Ok(n) => all.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return (all, "timeout");
                }
                Err(_) => return (all, "closed"),
            }
        }
        (all, "timeout")
    }

    /// Reads one byte (retrying reads interrupted by a signal).
    pub fn read_byte(&mut self) -> io::Result<u8> {
        let mut byte = [0u8; 1];
        let mut result = self.reader.read(&mut byte);
        for _ in 0..10 {
            match &result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    result = self.reader.read(&mut byte);
                }
                _ => break,
            }
        }
        match result? {
            1 => Ok(byte[0]),
            n => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {n} bytes"),
            )),
        }
    }
}

fn line_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

/// Where and how long a [`Server`] listens.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The address to bind (port 0: the kernel chooses).
    pub bind: SocketAddr,
    /// Sequential servers: how long (since start) they accept connections.
    pub accept: Duration,
    /// The read (and write) timeout of each connection.
    pub read: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            accept: ACCEPT_LIMIT,
            read: READ_LIMIT,
        }
    }
}

/// A scripted TCP server on loopback, run by threads that are joined by
/// [`Server::finish`] or on drop. `T` is what a handler returns for each
/// connection (sequential servers).
pub struct Server<T: Send + 'static> {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Vec<T>>>,
}

impl<T: Send + 'static> Server<T> {
    /// One connection on 127.0.0.1, served by `handler`.
    pub fn start<F>(handler: F) -> Self
    where
        F: FnOnce(&mut Peer) -> T + Send + 'static,
    {
        let mut handler = Some(handler);
        Self::sequential(1, move |_, peer| match handler.take() {
            Some(handler) => handler(peer),
            None => unreachable!("a one-connection server serves once"),
        })
    }

    /// Up to `max` connections on 127.0.0.1, one after the other, each
    /// served by `handler(index, peer)`.
    pub fn sequential<F>(max: usize, handler: F) -> Self
    where
        F: FnMut(usize, &mut Peer) -> T + Send + 'static,
    {
        Self::sequential_with(Limits::default(), max, handler)
            .unwrap_or_else(|e| panic!("bind a scripted server: {e}"))
    }

    /// [`Server::sequential`] with other [`Limits`]; the bind error when
    /// the address is taken (or needs privileges).
    pub fn sequential_with<F>(limits: Limits, max: usize, mut handler: F) -> io::Result<Self>
    where
        F: FnMut(usize, &mut Peer) -> T + Send + 'static,
    {
        let listener = TcpListener::bind(limits.bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&connections));
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut results = Vec::new();
            while results.len() < max {
                // Checked before accepting: a connection made just before
                // `finish` is still served.
                let stopping = stop_flag.load(Ordering::SeqCst);
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        match Peer::new(stream, limits.read, Arc::clone(&stop_flag)) {
                            Ok(mut peer) => results.push(handler(results.len(), &mut peer)),
                            Err(_) => break,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stopping || started.elapsed() > limits.accept {
                            break;
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
            results
        });
        Ok(Self {
            addr,
            stop,
            connections,
            handle: Some(handle),
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `[127.0.0.1]:port`.
    pub fn nexthop(&self) -> String {
        nexthop(self.port())
    }

    /// `127.0.0.1[127.0.0.1]:port`.
    pub fn relay(&self) -> String {
        relay(self.port())
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting and returns what the handler returned for each
    /// connection served, in order.
    pub fn finish_all(mut self) -> Vec<T> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(results)) => results,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Vec::new(),
        }
    }

    /// Stops waiting for a connection and returns what the handler returned
    /// for the first one (`None`: nobody connected).
    pub fn finish(self) -> Option<T> {
        self.finish_all().into_iter().next()
    }
}

impl Server<()> {
    /// Any number of connections on 127.0.0.1 at once, each served by
    /// `handler(index, peer)` on its own thread until the server stops.
    pub fn concurrent<F>(handler: F) -> Self
    where
        F: Fn(usize, &mut Peer) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a scripted server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&connections));
        let handler = Arc::new(handler);
        let handle = thread::spawn(move || {
            let sessions: Mutex<Vec<JoinHandle<()>>> = Mutex::default();
            while !stop_flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let index = count.fetch_add(1, Ordering::SeqCst);
                        let (stop, handler) = (Arc::clone(&stop_flag), Arc::clone(&handler));
                        let session = thread::spawn(move || {
                            if let Ok(mut peer) = Peer::new(stream, POLL, stop) {
                                handler(index, &mut peer);
                            }
                        });
                        if let Ok(mut list) = sessions.lock() {
                            list.push(session);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            let list = sessions.into_inner().unwrap_or_default();
            for session in list {
                let _ = session.join();
            }
            Vec::new()
        });
        Self {
            addr,
            stop,
            connections,
            handle: Some(handle),
        }
    }
}

impl<T: Send + 'static> Drop for Server<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The script
// ---------------------------------------------------------------------------

/// A fault a scripted server commits instead of (or around) one reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Wait, then reply as usual.
    Delay(Duration),
    /// Reply as usual, wait, then hang up.
    ReplyThenClose(Duration),
    /// Hang up without replying.
    Close,
    /// Reset the connection (RST) without replying.
    Reset,
    /// Send only the first N bytes of the reply, then hang up.
    Partial(usize),
    /// Never reply: wait (up to the read limit) until the client leaves.
    Stall,
}

/// When an [`Action`] happens: at the `nth` (0-based) occurrence of the
/// command `verb` (upper case, e.g. `"RCPT"`; `"."` is the end of data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub verb: String,
    pub nth: usize,
}

impl At {
    pub fn new(verb: &str, nth: usize) -> Self {
        Self {
            verb: verb.to_ascii_uppercase(),
            nth,
        }
    }
}

/// How a scripted SMTP server answers. Replies are complete lines without
/// CRLF unless noted.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub greeting: String,
    /// EHLO/LHLO keywords after the name line.
    pub keywords: Vec<String>,
    /// A complete EHLO reply (with CRLFs), instead of one built from `keywords`.
    pub ehlo_raw: Option<Vec<u8>>,
    pub helo: String,
    pub mail: String,
    /// Reply to the n-th RCPT; later ones get `250 2.1.5 Ok`.
    pub rcpt: Vec<String>,
    /// Reply to DATA; `None`: 354 when some RCPT was accepted, else 554.
    pub data: Option<String>,
    pub dot: String,
    /// LMTP: the replies after the final dot, one per accepted RCPT
    /// (instead of `dot`).
    pub lmtp_dot: Vec<String>,
    /// Before answering MAIL, read ahead up to N lines for at most this long
    /// (how many arrived shows whether the client pipelines).
    pub readahead_at_mail: Option<(usize, Duration)>,
    /// Faults, each at one command.
    pub faults: Vec<(At, Action)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            greeting: "220 scripted.test ESMTP".into(),
            keywords: vec!["PIPELINING".into(), "ENHANCEDSTATUSCODES".into()],
            ehlo_raw: None,
            helo: "250 scripted.test".into(),
            mail: "250 2.1.0 Ok".into(),
            rcpt: Vec::new(),
            data: None,
            dot: "250 2.0.0 Ok: queued as 4XYZ".into(),
            lmtp_dot: Vec::new(),
            readahead_at_mail: None,
            faults: Vec::new(),
        }
    }
}

impl Behaviour {
    pub fn keywords(mut self, keywords: &[&str]) -> Self {
        self.keywords = keywords.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Adds a fault at the `nth` occurrence of `verb`.
    pub fn fault(mut self, verb: &str, nth: usize, action: Action) -> Self {
        self.faults.push((At::new(verb, nth), action));
        self
    }

    fn ehlo_reply(&self) -> Vec<u8> {
        if let Some(raw) = &self.ehlo_raw {
            return raw.clone();
        }
        let mut lines = vec!["scripted.test".to_string()];
        lines.extend(self.keywords.iter().cloned());
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{line}\r\n"));
        }
        out.into_bytes()
    }

    fn action(&self, verb: &str, nth: usize) -> Option<&Action> {
        self.faults
            .iter()
            .find(|(at, _)| at.verb == verb && at.nth == nth)
            .map(|(_, action)| action)
    }
}

/// What a scripted SMTP server saw.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Command lines in arrival order, without CRLF.
    pub commands: Vec<String>,
    /// The DATA content exactly as received (dot-stuffed, CRLF), without
    /// the final ".\r\n".
    pub body: Option<Vec<u8>>,
    /// Lines that arrived before the MAIL reply was sent (readahead).
    pub readahead: Option<usize>,
    /// How the connection ended (`None`: after QUIT).
    pub end: Option<End>,
    /// The fault that ended the connection, if one did.
    pub fault: Option<Action>,
}

/// A scripted SMTP server playing `behaviour` on one connection.
pub fn smtp_server(behaviour: Behaviour) -> Server<Transcript> {
    Server::start(move |peer| play(peer, &behaviour))
}

/// A scripted SMTP server playing `scripts[i]` on its i-th connection, one
/// connection after the other.
pub fn smtp_servers(scripts: Vec<Behaviour>) -> Server<Transcript> {
    let count = scripts.len();
    Server::sequential(count, move |index, peer| match scripts.get(index) {
        Some(script) => play(peer, script),
        None => Transcript::default(),
    })
}

/// Sends `reply` (complete, with CRLFs) to the `nth` `verb`, committing the
/// fault scripted there; false when the connection is over.
fn answer(
    peer: &mut Peer,
    t: &mut Transcript,
    b: &Behaviour,
    at: (&str, usize),
    reply: &[u8],
) -> bool {
    let Some(action) = b.action(at.0, at.1) else {
        peer.send(reply);
        return true;
    };
    let over = match action {
        Action::Delay(delay) => {
            thread::sleep(*delay);
            peer.send(reply);
            return true;
        }
        Action::ReplyThenClose(delay) => {
            peer.send(reply);
            thread::sleep(*delay);
            peer.close();
            End::Eof
        }
        Action::Close => {
            peer.close();
            End::Eof
        }
        Action::Reset => {
            peer.reset();
            End::Error
        }
        Action::Partial(n) => {
            peer.send(reply.get(..*n).unwrap_or(reply));
            peer.close();
            End::Eof
        }
        Action::Stall => {
            let (_, end) = peer.read_rest(peer.read_limit);
            if end == "closed" {
                End::Eof
            } else {
                End::Timeout
            }
        }
    };
    t.fault = Some(action.clone());
    t.end = Some(over);
    false
}

fn line_reply(line: &str) -> Vec<u8> {
    format!("{line}\r\n").into_bytes()
}

/// Plays `b` on one connection and returns what arrived.
pub fn play(peer: &mut Peer, b: &Behaviour) -> Transcript {
    let mut t = Transcript::default();
    let mut queued: VecDeque<String> = VecDeque::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut rcpt_count = 0usize;
    let mut accepted = 0usize;
    if !answer(peer, &mut t, b, ("CONNECT", 0), &line_reply(&b.greeting)) {
        return t;
    }
    for _ in 0..10_000 {
        let line = match queued.pop_front() {
            Some(line) => line,
            None => match peer.read_line() {
                Ok(line) => line,
                Err(end) => {
                    t.end = Some(end);
                    return t;
                }
            },
        };
        t.commands.push(line.clone());
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let nth = {
            let n = seen.entry(verb.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let at = (verb.as_str(), nth);
        let go_on = match verb.as_str() {
            "EHLO" | "LHLO" => answer(peer, &mut t, b, at, &b.ehlo_reply()),
            "HELO" => answer(peer, &mut t, b, at, &line_reply(&b.helo)),
            "MAIL" => {
                if let Some((want, limit)) = b.readahead_at_mail {
                    let deadline = Instant::now() + limit;
                    while queued.len() < want {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match peer.read_raw_line_within(left) {
                            Ok(raw) => queued.push_back(line_text(&raw)),
                            Err(_) => break,
                        }
                    }
                    t.readahead = Some(queued.len());
                }
                answer(peer, &mut t, b, at, &line_reply(&b.mail))
            }
            "RCPT" => {
                let reply = b
                    .rcpt
                    .get(rcpt_count)
                    .cloned()
                    .unwrap_or_else(|| "250 2.1.5 Ok".into());
                rcpt_count += 1;
                if reply.starts_with('2') {
                    accepted += 1;
                }
                answer(peer, &mut t, b, at, &line_reply(&reply))
            }
            "DATA" => {
                let reply = b.data.clone().unwrap_or_else(|| {
                    if accepted > 0 {
                        "354 End data with <CR><LF>.<CR><LF>".into()
                    } else {
                        "554 5.5.1 Error: no valid recipients".into()
                    }
                });
                let go = reply.starts_with('3');
                if !answer(peer, &mut t, b, at, &line_reply(&reply)) {
                    return t;
                }
                if go {
                    let mut body = Vec::new();
                    let mut complete = false;
                    for _ in 0..1_000_000 {
                        match peer.read_raw_line() {
                            Ok(raw) if raw == b".\r\n" => {
                                complete = true;
                                break;
                            }
                            Ok(raw) => body.extend_from_slice(&raw),
                            Err(end) => {
                                t.body = Some(body.clone());
                                t.end = Some(end);
                                return t;
                            }
                        }
                    }
                    t.body = Some(body);
                    if complete {
                        t.commands.push(".".into());
                        let dots = {
                            let n = seen.entry(".".into()).or_default();
                            *n += 1;
                            *n - 1
                        };
                        let replies = if b.lmtp_dot.is_empty() {
                            line_reply(&b.dot)
                        } else {
                            b.lmtp_dot
                                .iter()
                                .map(|r| format!("{r}\r\n"))
                                .collect::<String>()
                                .into_bytes()
                        };
                        if !answer(peer, &mut t, b, (".", dots), &replies) {
                            return t;
                        }
                    }
                }
                true
            }
            "RSET" | "NOOP" => answer(peer, &mut t, b, at, b"250 2.0.0 Ok\r\n"),
            "QUIT" => {
                if answer(peer, &mut t, b, at, b"221 2.0.0 Bye\r\n") {
                    return t;
                }
                false
            }
            _ => answer(
                peer,
                &mut t,
                b,
                at,
                b"502 5.5.2 Error: command not recognized\r\n",
            ),
        };
        if !go_on {
            return t;
        }
    }
    t.end = Some(End::Error);
    t
}
