//! One LMTP connection of the ingress, on its own thread: the I/O around
//! the conversation of [`super::lmtp`]. Command lines are read with a
//! length cap and answered (replies to pipelined commands go out together,
//! when no more input is waiting); DATA is streamed through
//! [`super::data::DataReceiver`] into a spool file; the transaction
//! becomes one job per destination on the daemon's pool, and its
//! recipients are answered, in RCPT order, once the pool has settled them,
//! or at the listener's deadline (see [`Transaction::wait`]).
//!
//! Error contract: nothing the MTA sends can panic the daemon or lose a
//! recipient: every accepted recipient gets exactly one reply after the
//! final dot, and only a 2xx when mailhop delivered it. A connection that
//! breaks loses nothing either: the MTA had no reply, and retries.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::data::DataReceiver;
use super::lmtp::{self, Envelope, MAX_COMMAND, Server, Step};
use super::spool::{Spool, SpoolFile};
use crate::config::{IngressListener, IngressTransport};
use crate::job::{Job, JobRecipient, MessageRef, TransportKind};
use crate::plan::Plan;
use crate::pool::{Answer, PeerIdentity, Report, Submitter, Ticket};
use crate::recipients::Status;

/// How often a blocked read looks at the clock and the shutdown flag.
const POLL: Duration = Duration::from_millis(200);
/// Read buffer of a connection.
const READ_BUFFER: usize = 64 * 1024;
/// After a forced cancel, the longest wait for the pool's answer (it is
/// given at once; this only guards against a bug leaving a recipient
/// unanswered).
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// What every connection of the ingress shares.
pub struct Shared {
    pub submitter: Submitter,
    pub spool: Spool,
    /// The host name in the greeting and LHLO reply.
    pub hostname: String,
    /// A connection idle this long is closed (`[daemon] client_idle_timeout`).
    pub idle_timeout: Duration,
    /// Who the ingress's jobs are submitted as: the daemon itself (the
    /// spool files are its own).
    pub peer: Arc<PeerIdentity>,
}

/// A connection's stream.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    /// The client hung up (or its connection broke): what it sent last
    /// may still be readable, but it will read no reply.
    fn peer_gone(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let fd = match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        };
        // POLLRDHUP: the peer shut down its side (nix names no such flag).
        let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
        let mut fds = [PollFd::new(fd, rdhup)];
        // Asked for POLLRDHUP only, a descriptor is ready only for it or
        // for what poll always reports (POLLHUP, POLLERR, POLLNVAL); nix's
        // revents() cannot name POLLRDHUP, so the count is the answer.
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(timeout),
            Stream::Tcp(s) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// Why a connection ends early.
#[derive(Debug)]
enum Stop {
    /// The client closed, or an I/O error.
    Gone(String),
    /// Idle for too long.
    Idle,
    /// The daemon stops (between transactions).
    Shutdown,
}

/// A connection: its reader, its writer and the replies not yet written.
struct Conn<'a> {
    reader: BufReader<Stream>,
    writer: Stream,
    out: Vec<u8>,
    /// The message bytes of one read, kept from one message to the next.
    chunk: Vec<u8>,
    shared: &'a Shared,
}

impl Conn<'_> {
    /// Writes the pending replies.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self
            .writer
            .write_all(&self.out)
            .and_then(|()| self.writer.flush());
        self.out.clear();
        result.map_err(|e| Stop::Gone(format!("write: {e}")))
    }

    /// Waits for input (flushing replies first when none is buffered):
    /// the buffered bytes, or why not. `idle_since` is moved on by input.
    fn fill(&mut self, idle_since: &mut Instant, in_transaction: bool) -> Result<&[u8], Stop> {
        if self.reader.buffer().is_empty() {
            self.flush()?;
        }
        loop {
            if !self.reader.buffer().is_empty() {
                *idle_since = Instant::now();
                return Ok(self.reader.buffer());
            }
            if !in_transaction && self.shared.submitter.stopping() {
                return Err(Stop::Shutdown);
            }
            if idle_since.elapsed() >= self.shared.idle_timeout {
                return Err(Stop::Idle);
            }
            match self.reader.fill_buf() {
                Ok([]) => return Err(Stop::Gone("the client closed the connection".into())),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Stop::Gone(format!("read: {e}"))),
            }
        }
    }

    /// One command line, without its line end; `None` for a line over
    /// [`MAX_COMMAND`] (read to its end and dropped).
    fn command_line(&mut self, idle_since: &mut Instant) -> Result<Option<Vec<u8>>, Stop> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buffer = self.fill(idle_since, false)?;
            let (taken, ended) = match buffer.iter().position(|&b| b == b'\n') {
                Some(n) => (n + 1, true),
                None => (buffer.len(), false),
            };
            if !too_long {
                line.extend_from_slice(buffer.get(..taken).unwrap_or_default());
                if line.len() > MAX_COMMAND + 2 {
                    too_long = true;
                    line = Vec::new();
                }
            }
            self.reader.consume(taken);
            if ended {
                if too_long {
                    return Ok(None);
                }
                while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
        }
    }

    /// Reads the message after 354 into `spool` (when there is one) up to
    /// the final dot. The outcome: its size, or why it cannot be
    /// delivered (too big, a spool write error).
    fn receive(
        &mut self,
        spool: Option<std::fs::File>,
        max_size: u64,
        idle_since: &mut Instant,
    ) -> Result<Result<u64, Refusal>, Stop> {
        let mut receiver = DataReceiver::new();
        // Each read's message bytes go to the file with one write (a read
        // is at most READ_BUFFER): no second buffer.
        let mut writer = spool;
        let mut failed: Option<Refusal> = None;
        let mut chunk = std::mem::take(&mut self.chunk);
        while !receiver.done() {
            let buffer = match self.fill(idle_since, true) {
                Ok(buffer) => buffer,
                Err(stop) => {
                    self.chunk = chunk;
                    return Err(stop);
                }
            };
            chunk.clear();
            let taken = receiver.feed(buffer, &mut chunk);
            self.reader.consume(taken);
            if failed.is_some() {
                continue;
            }
            if max_size > 0 && receiver.size() > max_size {
                failed = Some(Refusal::TooBig);
                writer = None;
                continue;
            }
            if let Some(w) = writer.as_mut()
                && let Err(e) = w.write_all(&chunk)
            {
                failed = Some(Refusal::Spool(e.to_string()));
                writer = None;
            }
        }
        chunk.clear();
        self.chunk = chunk;
        Ok(match failed {
            Some(refusal) => Err(refusal),
            None => Ok(receiver.size()),
        })
    }
}

/// Why a received message is not delivered: every recipient gets it.
#[derive(Debug)]
enum Refusal {
    TooBig,
    Spool(String),
}

/// Serves one connection to its end. `listen` names the listener in logs.
pub fn serve(stream: Stream, shared: &Shared, listener: &IngressListener, number: u64) {
    let listen = listener.listen.to_string();
    let reader = match stream.try_clone() {
        Ok(reader) => reader,
        Err(e) => {
            log::warn!("ingress {listen}: connection {number}: {e}");
            return;
        }
    };
    if let Err(e) = reader
        .set_read_timeout(Some(POLL))
        .and_then(|()| stream.set_write_timeout(Some(shared.idle_timeout)))
    {
        log::warn!("ingress {listen}: connection {number}: {e}");
        return;
    }
    let mut conn = Conn {
        reader: BufReader::with_capacity(READ_BUFFER, reader),
        writer: stream,
        out: Vec::new(),
        chunk: Vec::with_capacity(READ_BUFFER),
        shared,
    };
    let mut server = Server::new(shared.hostname.clone(), listener.max_message_size);
    conn.out.extend_from_slice(server.greeting().as_bytes());
    let mut idle_since = Instant::now();
    // The connection's spool file, kept from one message to the next
    // while nothing may still read it (see Spool::open); removed on drop.
    let mut kept: Option<SpoolFile> = None;
    let stop = loop {
        let line = match conn.command_line(&mut idle_since) {
            Ok(Some(line)) => line,
            Ok(None) => {
                conn.out
                    .extend_from_slice(b"500 5.5.2 Error: line too long\r\n");
                continue;
            }
            Err(stop) => break stop,
        };
        match server.command(&line) {
            Step::Reply(text) => conn.out.extend_from_slice(text.as_bytes()),
            Step::Close(text) => {
                conn.out.extend_from_slice(text.as_bytes());
                let _ = conn.flush();
                return;
            }
            Step::Data(text) => {
                conn.out.extend_from_slice(text.as_bytes());
                if let Err(stop) = conn.flush() {
                    break stop;
                }
                let envelope = server.envelope().clone();
                let spooled = shared.spool.open(kept.take());
                let (spool_file, file, spool_error) = match spooled {
                    Ok((guard, file)) => (Some(guard), Some(file), None),
                    Err(e) => (None, None, Some(e.to_string())),
                };
                let received = match conn.receive(file, listener.max_message_size, &mut idle_since)
                {
                    Ok(received) => received,
                    Err(stop) => break stop,
                };
                let received = match (received, spool_error) {
                    (_, Some(e)) => Err(Refusal::Spool(e)),
                    (received, None) => received,
                };
                let replies = match (received, spool_file) {
                    (Ok(size), Some(spool_file)) => {
                        let writer = &conn.writer;
                        let gone = || writer.peer_gone();
                        let (replies, settled) = deliver(
                            shared,
                            listener,
                            &listen,
                            &envelope,
                            &spool_file,
                            size,
                            &gone,
                        );
                        // A job cancelled or cut may still be reading it.
                        if settled && !shared.submitter.stopping() {
                            // A big one is emptied now, not at the next message.
                            if size > 1 << 20 {
                                let _ = std::fs::OpenOptions::new()
                                    .write(true)
                                    .truncate(true)
                                    .open(spool_file.path());
                            }
                            kept = Some(spool_file);
                        }
                        replies
                    }
                    (Ok(_), None) => refuse_all(&envelope, &Refusal::Spool("no file".into())),
                    (Err(refusal), _) => {
                        log::warn!(
                            "ingress {listen}: message from <{}> not accepted: {}",
                            envelope.sender,
                            match &refusal {
                                Refusal::TooBig => format!(
                                    "larger than max_message_size ({})",
                                    listener.max_message_size
                                ),
                                Refusal::Spool(e) => format!("spool: {e}"),
                            }
                        );
                        refuse_all(&envelope, &refusal)
                    }
                };
                shared.submitter.stats().ingress_message(&replies);
                conn.out.extend_from_slice(replies.as_bytes());
                server.transaction_done();
                idle_since = Instant::now();
            }
        }
    };
    match stop {
        Stop::Gone(why) => log::debug!("ingress {listen}: connection {number}: {why}"),
        Stop::Idle => {
            conn.out.extend_from_slice(
                format!("421 4.4.2 {} Error: timeout exceeded\r\n", shared.hostname).as_bytes(),
            );
            let _ = conn.flush();
        }
        Stop::Shutdown => {
            conn.out.extend_from_slice(
                format!(
                    "421 4.3.0 {} mail system shutting down\r\n",
                    shared.hostname
                )
                .as_bytes(),
            );
            let _ = conn.flush();
        }
    }
}

/// Every recipient refused for the same reason.
fn refuse_all(envelope: &Envelope, refusal: &Refusal) -> String {
    envelope
        .recipients
        .iter()
        .map(|r| match refusal {
            Refusal::TooBig => format!(
                "552 5.3.4 <{}> Error: message file too big\r\n",
                printable(&r.address)
            ),
            Refusal::Spool(_) => format!(
                "451 4.3.0 <{}> Error: cannot spool the message\r\n",
                printable(&r.address)
            ),
        })
        .collect()
}

fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The id of the jobs of a transaction: the MTA's queue id (XFORWARD
/// IDENT), else the ENVID, else our own.
fn job_id(envelope: &Envelope) -> String {
    let ident = envelope
        .xforward
        .iter()
        .rev()
        .find(|(name, value)| name == "IDENT" && !value.is_empty() && value != "[UNAVAILABLE]")
        .map(|(_, value)| value.clone());
    let id = ident.or_else(|| envelope.envid.clone()).unwrap_or_else(|| {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        format!(
            "lmtp-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    });
    let id: String = id.chars().filter(|c| !c.is_control()).take(128).collect();
    if id.is_empty() { "lmtp".into() } else { id }
}

/// Where one job's answer goes: the transaction's channel, with the job's
/// place among the transaction's jobs.
struct ToTransaction {
    index: usize,
    tx: Sender<(usize, Answer)>,
}

impl Report for ToTransaction {
    fn report(&self, answer: Answer) {
        // The transaction may have stopped waiting (never before every
        // job answered, but a send to nobody is harmless).
        let _ = self.tx.send((self.index, answer));
    }
}

/// The jobs of one transaction: each with the positions (in RCPT order)
/// of its recipients.
struct Transaction {
    tickets: Vec<(Arc<Ticket>, Vec<usize>)>,
    rx: Receiver<(usize, Answer)>,
}

/// Delivers a spooled transaction and returns the replies, one per
/// recipient in RCPT order, and whether every job ended on its own (none
/// was cancelled here: then no delivery reads the spool file any more).
fn deliver(
    shared: &Shared,
    listener: &IngressListener,
    listen: &str,
    envelope: &Envelope,
    spool_file: &SpoolFile,
    size: u64,
    gone: &dyn Fn() -> bool,
) -> (String, bool) {
    // The deadline counts from the final dot, waits for queue room included.
    let received = Instant::now();
    let id = job_id(envelope);
    let forwarded: String = envelope
        .xforward
        .iter()
        .map(|(name, value)| format!(", {}={}", name.to_ascii_lowercase(), printable(value)))
        .collect();
    log::info!(
        "ingress {listen}: {id}: from=<{}>, size={size}, nrcpt={}{forwarded}",
        printable(&envelope.sender),
        envelope.recipients.len()
    );
    let mut replies: Vec<Option<String>> = vec![None; envelope.recipients.len()];
    let groups = match job_groups(shared, listener, envelope, &id, spool_file) {
        Ok(groups) => groups,
        Err(why) => {
            log::warn!("ingress {listen}: {id}: {why}");
            let replies = envelope
                .recipients
                .iter()
                .map(|r| {
                    format!(
                        "451 4.3.0 <{}> Error: {}\r\n",
                        printable(&r.address),
                        printable(&why)
                    )
                })
                .collect();
            return (replies, true);
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut transaction = Transaction {
        tickets: Vec::new(),
        rx,
    };
    for (job, positions) in groups {
        let index = transaction.tickets.len();
        let report: Arc<dyn Report> = Arc::new(ToTransaction {
            index,
            tx: tx.clone(),
        });
        let ticket = match job.into_checked() {
            Ok(checked) => Ticket::new(checked, Arc::clone(&shared.peer), report),
            Err(e) => {
                for &position in &positions {
                    if let (Some(slot), Some(r)) =
                        (replies.get_mut(position), envelope.recipients.get(position))
                    {
                        *slot = Some(format!(
                            "451 4.3.0 <{}> Error: {}\r\n",
                            printable(&r.address),
                            printable(&e.error)
                        ));
                    }
                }
                continue;
            }
        };
        transaction.tickets.push((Arc::clone(&ticket), positions));
        shared.submitter.submit(ticket);
    }
    drop(tx);
    let (answers, settled) = transaction.wait(&shared.submitter, listener, received, gone);
    for ((_, positions), answer) in transaction.tickets.iter().zip(answers) {
        fill_replies(&mut replies, positions, envelope, answer);
    }
    let replies = replies
        .into_iter()
        .zip(&envelope.recipients)
        .map(|(reply, r)| {
            reply.unwrap_or_else(|| {
                format!(
                    "451 4.3.0 <{}> Error: no outcome (internal error)\r\n",
                    printable(&r.address)
                )
            })
        })
        .collect();
    (replies, settled)
}

/// The transaction as jobs: one, or, when its recipients go to several
/// next hops (each recipient's domain), one per domain, so that each
/// destination is shaped on its own.
fn job_groups(
    shared: &Shared,
    listener: &IngressListener,
    envelope: &Envelope,
    id: &str,
    spool_file: &SpoolFile,
) -> Result<Vec<(Job, Vec<usize>)>, String> {
    let path = spool_file
        .path()
        .to_str()
        .ok_or("the spool path is not UTF-8")?
        .to_string();
    let make = |recipients: Vec<JobRecipient>| Job {
        transport: match listener.transport {
            IngressTransport::Smtp => TransportKind::Smtp,
            IngressTransport::Lmtp => TransportKind::Lmtp,
        },
        nexthop: listener.nexthop.clone(),
        envid: envelope.envid.clone(),
        ret: envelope.ret,
        smtputf8: envelope.smtputf8,
        requiretls: envelope.requiretls,
        ..Job::new(
            id,
            envelope.sender.clone(),
            recipients,
            MessageRef::Path { path: path.clone() },
        )
    };
    let whole = make(envelope.recipients.clone());
    let all: Vec<usize> = (0..envelope.recipients.len()).collect();
    if listener.nexthop.is_some() || envelope.recipients.len() < 2 {
        return Ok(vec![(whole, all)]);
    }
    let deliverer = shared.submitter.deliverer();
    let keys = match whole.clone().into_checked() {
        Ok(checked) => Plan::keys_of(&checked, deliverer.settings()).len(),
        Err(_) => 1,
    };
    if keys < 2 {
        return Ok(vec![(whole, all)]);
    }
    let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (position, r) in envelope.recipients.iter().enumerate() {
        let domain = r
            .address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        by_domain.entry(domain).or_default().push(position);
    }
    Ok(by_domain
        .into_values()
        .map(|positions| {
            let recipients = positions
                .iter()
                .filter_map(|&p| envelope.recipients.get(p).cloned())
                .collect();
            (make(recipients), positions)
        })
        .collect())
}

impl Transaction {
    /// Every job's answer, in job order: as the pool gives them, or, past
    /// the listener's deadline, cancelled (see [`Submitter::cancel`]);
    /// a job whose message body is on its way is waited for up to
    /// `end_of_data_grace` more. When the client hangs up first (its own
    /// timeout), what has not started is cancelled at once: the MTA will
    /// send the message again, and should get no duplicate.
    fn wait(
        &self,
        submitter: &Submitter,
        listener: &IngressListener,
        start: Instant,
        gone: &dyn Fn() -> bool,
    ) -> (Vec<Option<Answer>>, bool) {
        let mut answers: Vec<Option<Answer>> = vec![None; self.tickets.len()];
        let deadline = start + listener.deadline;
        let forced = deadline + listener.end_of_data_grace;
        let mut cancelled = vec![false; self.tickets.len()];
        let mut last_resort: Option<Instant> = None;
        let mut hung_up = false;
        while answers.iter().any(Option::is_none) {
            let now = Instant::now();
            if !hung_up && now < deadline && gone() {
                hung_up = true;
                for (index, (ticket, _)) in self.tickets.iter().enumerate() {
                    if answers.get(index).is_some_and(Option::is_none)
                        && submitter.cancel(
                            ticket,
                            "the MTA closed the LMTP connection before the outcome; cancelled",
                            false,
                        )
                    {
                        if let Some(c) = cancelled.get_mut(index) {
                            *c = true;
                        }
                        submitter.stats().ingress_cancelled();
                        log::warn!(
                            "job {}: the MTA closed the LMTP connection; unsettled recipients deferred and not delivered",
                            ticket.id()
                        );
                    }
                }
            }
            if now >= deadline {
                let force = now >= forced;
                for (index, (ticket, _)) in self.tickets.iter().enumerate() {
                    if answers.get(index).is_some_and(Option::is_some)
                        || cancelled.get(index).copied().unwrap_or(true)
                    {
                        continue;
                    }
                    let why = format!(
                        "delivery not completed within the ingress deadline ({}s); cancelled",
                        listener.deadline.as_secs()
                    );
                    if submitter.cancel(ticket, &why, force) {
                        if let Some(c) = cancelled.get_mut(index) {
                            *c = true;
                        }
                        submitter.stats().ingress_cancelled();
                        log::warn!(
                            "job {}: not settled within the ingress deadline; unsettled recipients deferred",
                            ticket.id()
                        );
                    }
                }
                if force && last_resort.is_none() {
                    last_resort = Some(now + ANSWER_LIMIT);
                }
            }
            if last_resort.is_some_and(|limit| now >= limit) {
                log::error!("ingress: a job's answer did not come after it was cancelled");
                break;
            }
            // Wakes at least twice a second: the clock, the client.
            let wake = (now + Duration::from_millis(500)).min(if now < deadline {
                deadline
            } else {
                now + Duration::from_millis(500)
            });
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok((index, answer)) => {
                    if let Some(slot) = answers.get_mut(index) {
                        *slot = Some(answer);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let settled = !cancelled.iter().any(|c| *c) && answers.iter().all(Option::is_some);
        (answers, settled)
    }
}

/// The replies of one job's recipients, at their positions.
fn fill_replies(
    replies: &mut [Option<String>],
    positions: &[usize],
    envelope: &Envelope,
    answer: Option<Answer>,
) {
    for (n, &position) in positions.iter().enumerate() {
        let Some(address) = envelope
            .recipients
            .get(position)
            .map(|r| r.address.as_str())
        else {
            continue;
        };
        let reply = match &answer {
            Some(Answer::Done(result)) => {
                // In job order; by address should a result list differ.
                let found = result
                    .recipients
                    .get(n)
                    .filter(|r| r.address == address)
                    .or_else(|| result.recipients.iter().find(|r| r.address == address));
                match found {
                    Some(r) => {
                        // The MTA logs the ingress as the relay: the
                        // server that took the message is named in the text.
                        let text = match (&r.status, &r.relay) {
                            (Status::Sent, Some(relay)) if !r.diagnostic.starts_with("host ") => {
                                format!("host {relay} said: {}", r.diagnostic)
                            }
                            _ => r.diagnostic.clone(),
                        };
                        lmtp::recipient_reply(address, r.status, &r.dsn, &text)
                    }
                    None => lmtp::recipient_reply(
                        address,
                        Status::Deferred,
                        "4.3.0",
                        "no outcome for this recipient (internal error)",
                    ),
                }
            }
            Some(Answer::Failed(error)) => {
                lmtp::recipient_reply(address, Status::Deferred, "4.3.0", &error.error)
            }
            None => lmtp::recipient_reply(
                address,
                Status::Deferred,
                "4.3.0",
                "no outcome for this recipient (internal error)",
            ),
        };
        if let Some(slot) = replies.get_mut(position) {
            *slot = Some(reply);
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
