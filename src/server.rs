//! The job protocol on a UNIX stream socket: newline-delimited JSON, both
//! ways. Owns the per-connection side of the daemon (peer credential
//! check, line assembly with a length cap, job and control lines, the
//! reader/writer thread pair) and the client side used by `mailhop send`
//! and `mailhop status`.
//!
//! Protocol: each request line is a job ([`Job`]) or a control command
//! (an object with a `"command"` key; `{"command":"status"}`). Each job
//! gets exactly one answer line carrying its `id`: a result ([`JobResult`]
//! with `"log"`) or an error (`{"id":...|null,"error":"..."}`). Answers may
//! come in any order. A refused line (malformed, unknown field, over
//! `max_line_length`, not UTF-8...) is answered with an error and the
//! connection stays usable.
//!
//! Error contract: nothing a client sends can panic or stall a worker.
//! Workers never block on a client: a worker writes its answer with one
//! non-blocking send when the socket takes it whole, and otherwise leaves
//! it to the connection's writer thread; a client that stops reading is cut off
//! after `client_idle_timeout`; an idle connection is closed after the
//! same time; a client that disconnects does not stop its jobs, whose
//! outcomes are still logged.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Group;

use crate::config::DaemonConfig;
use crate::job::{CheckedJob, Job, JobError, JobResult, MessageRef, parse_job};
use crate::pool::{Answer, PeerIdentity, Report, Submitter, Ticket};
use crate::stats::{CacheReport, StatusReport};

/// How often blocked reads and writer waits look at the clock and flags.
const POLL: Duration = Duration::from_millis(200);
/// Read size of the line assembler.
const CHUNK: usize = 64 * 1024;
/// Largest line buffer a connection keeps between lines.
const KEEP_LINE_BUFFER: usize = 256 * 1024;
/// Stack of the connection threads (they parse JSON, nothing deep:
/// serde_json stops at 128 levels of nesting).
const CONNECTION_STACK: usize = 256 * 1024;

/// Who may submit jobs: root, the daemon's own uid, `allowed_uids`, and
/// members (primary or supplementary) of `allowed_groups`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    pub daemon_uid: u32,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl AccessPolicy {
    /// From `[daemon]`. A group name that does not exist grants nothing
    /// and is logged.
    pub fn from_config(daemon: &DaemonConfig, daemon_uid: u32) -> Self {
        let mut gids = Vec::new();
        for name in &daemon.allowed_groups {
            match lookup_group(name) {
                Ok(gid) => gids.push(gid),
                Err(e) => log::warn!("daemon.allowed_groups: {e}; ignored"),
            }
        }
        Self {
            daemon_uid,
            uids: daemon.allowed_uids.clone(),
            gids,
        }
    }

    pub fn allows(&self, peer: &PeerIdentity) -> bool {
        peer.uid == 0
            || peer.uid == self.daemon_uid
            || self.uids.contains(&peer.uid)
            || peer.gids.iter().any(|g| self.gids.contains(g))
    }
}

/// A group by name or numeric id.
pub fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no such group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {}", e.desc())),
    }
}

/// The peer's uid with all its groups as the kernel saw them when it
/// connected: the primary gid from SO_PEERCRED plus the supplementary
/// groups from SO_PEERGROUPS (its real groups, not the group database's
/// idea of them).
pub fn peer_identity(uid: u32, gid: u32, groups: &[u32], daemon_uid: u32) -> PeerIdentity {
    let mut gids = vec![gid];
    for &g in groups {
        if !gids.contains(&g) {
            gids.push(g);
        }
    }
    PeerIdentity {
        uid,
        gids,
        privileged: uid == 0 || uid == daemon_uid,
    }
}

/// The peer's supplementary groups (SO_PEERGROUPS, Linux 4.13).
pub fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    const GID_SIZE: usize = std::mem::size_of::<libc::gid_t>();
    // NGROUPS_MAX is 65536.
    const MAX_GROUPS: usize = 65_536;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let bytes = groups.len().saturating_mul(GID_SIZE);
        let mut len = libc::socklen_t::try_from(bytes).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `groups` has room for `len` bytes of gid_t values; the
        // kernel writes at most `len` bytes and stores the size in `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let wanted = usize::try_from(len).unwrap_or(usize::MAX) / GID_SIZE;
        if rc == 0 {
            groups.truncate(wanted.min(groups.len()));
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && wanted > groups.len() && wanted <= MAX_GROUPS {
            groups.resize(wanted, 0);
            continue;
        }
        return Err(e);
    }
}

/// The settings a connection keeps from its start (a reload applies to
/// connections made after it; the access policy, through
/// [`Context::access`], to open ones too).
#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub access: AccessPolicy,
    pub max_line_length: usize,
    pub idle_timeout: Duration,
    /// Most answers a connection may have pending (queued, running or not
    /// yet written) before its reader stops reading.
    pub window: usize,
    /// `[daemon]` bounds (see conf/mailhop.toml).
    pub limits: Limits,
}

/// The `[daemon]` resource bounds a connection applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections_per_uid: usize,
    pub queued_bytes: usize,
    pub queued_bytes_per_uid: usize,
    pub inline_size: usize,
    pub recipients: usize,
    pub unread_answer_bytes: usize,
}

impl Limits {
    pub fn from_config(daemon: &DaemonConfig) -> Self {
        Self {
            connections_per_uid: daemon.max_connections_per_uid,
            queued_bytes: daemon.max_queued_bytes,
            queued_bytes_per_uid: daemon.max_queued_bytes_per_uid,
            inline_size: daemon.max_inline_size,
            recipients: daemon.max_recipients,
            unread_answer_bytes: daemon.max_unread_answer_bytes,
        }
    }
}

/// What the clients hold of the daemon, per peer uid and in all:
/// connections, and bytes of job lines (being read, or accepted and not
/// yet answered). Checked against [`Limits`]; over a limit, the client
/// gets a retryable error.
#[derive(Debug, Default)]
pub struct Quotas {
    /// Bytes held by all clients.
    bytes: AtomicUsize,
    /// Per uid with a connection or bytes held. Charging and releasing
    /// take the read lock only (no waiting between workers); the write
    /// lock is for connections coming and going.
    per_uid: RwLock<std::collections::HashMap<u32, Arc<Usage>>>,
}

#[derive(Debug, Default)]
struct Usage {
    bytes: AtomicUsize,
    connections: AtomicUsize,
}

/// Adds `amount` to `counter` unless that passes `limit`.
fn take_within(counter: &AtomicUsize, amount: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(amount).filter(|&total| total <= limit)
        })
        .is_ok()
}

/// Takes `amount` from `counter` (never below 0); the value left.
fn give_back(counter: &AtomicUsize, amount: usize) -> usize {
    let before = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            Some(held.saturating_sub(amount))
        })
        .unwrap_or(0);
    before.saturating_sub(amount)
}

impl Quotas {
    fn usage(&self, uid: u32) -> Option<Arc<Usage>> {
        let map = match self.per_uid.read() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(&uid).cloned()
    }

    fn map_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<u32, Arc<Usage>>> {
        match self.per_uid.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forgets `uid` once it has neither a connection nor bytes held.
    fn forget_if_idle(&self, uid: u32) {
        let mut map = self.map_mut();
        if map.get(&uid).is_some_and(|u| {
            u.connections.load(Ordering::Acquire) == 0 && u.bytes.load(Ordering::Acquire) == 0
        }) {
            map.remove(&uid);
        }
    }

    /// Takes a connection for `uid`; the error names the limit.
    pub fn connect(&self, uid: u32, limits: &Limits) -> Result<(), String> {
        let mut map = self.map_mut();
        let usage = map.entry(uid).or_default();
        if !take_within(&usage.connections, 1, limits.connections_per_uid) {
            return Err(format!(
                "too many connections from uid {uid} ({}, max_connections_per_uid)",
                limits.connections_per_uid
            ));
        }
        Ok(())
    }

    pub fn disconnect(&self, uid: u32) {
        if let Some(usage) = self.usage(uid)
            && give_back(&usage.connections, 1) == 0
        {
            self.forget_if_idle(uid);
        }
    }

    /// Takes `bytes` more for `uid`, or nothing when that would pass a
    /// limit (the error names it).
    pub fn charge(&self, uid: u32, bytes: usize, limits: &Limits) -> Result<(), String> {
        if !take_within(&self.bytes, bytes, limits.queued_bytes) {
            return Err(format!(
                "the daemon holds too much queued data ({} bytes, max_queued_bytes)",
                limits.queued_bytes
            ));
        }
        let usage = match self.usage(uid) {
            Some(usage) => usage,
            None => Arc::clone(self.map_mut().entry(uid).or_default()),
        };
        if !take_within(&usage.bytes, bytes, limits.queued_bytes_per_uid) {
            give_back(&self.bytes, bytes);
            if usage.connections.load(Ordering::Acquire) == 0 {
                self.forget_if_idle(uid);
            }
            return Err(format!(
                "uid {uid} has too much queued data ({} bytes, max_queued_bytes_per_uid)",
                limits.queued_bytes_per_uid
            ));
        }
        Ok(())
    }

    pub fn release(&self, uid: u32, bytes: usize) {
        give_back(&self.bytes, bytes);
        if let Some(usage) = self.usage(uid)
            && give_back(&usage.bytes, bytes) == 0
            && usage.connections.load(Ordering::Acquire) == 0
        {
            self.forget_if_idle(uid);
        }
    }

    /// Bytes held now, in all (for tests and the log).
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// A connection's slot for its uid, given back on drop.
struct ConnectionSlot<'a> {
    quotas: &'a Quotas,
    uid: u32,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.quotas.disconnect(self.uid);
    }
}

/// A job's answer path with the bytes it holds against the quotas: given
/// back when the job is answered (or its ticket dropped).
struct Charged {
    conn: Arc<Conn>,
    quotas: Arc<Quotas>,
    uid: u32,
    bytes: AtomicUsize,
    /// The answer's estimated size, committed on the connection until the
    /// answer exists (see [`answer_estimate`]).
    estimate: AtomicUsize,
}

impl Charged {
    /// Gives the job's bytes back to the quotas; the answer's estimate,
    /// still committed on the connection, is returned for the caller to
    /// take off (with the answer, under one lock).
    fn release_bytes(&self) -> usize {
        let bytes = self.bytes.swap(0, Ordering::SeqCst);
        if bytes > 0 {
            self.quotas.release(self.uid, bytes);
        }
        self.estimate.swap(0, Ordering::SeqCst)
    }

    fn release(&self) {
        let estimate = self.release_bytes();
        if estimate > 0 {
            self.conn
                .update(|s| s.committed = s.committed.saturating_sub(estimate));
        }
    }
}

/// A generous guess at the size of a job's answer, so that the answers a
/// connection's accepted jobs will produce count against
/// `max_unread_answer_bytes` before they exist: the fixed part and the
/// log, plus per recipient its address and room for status, relay and
/// diagnostic.
fn answer_estimate(job: &Job) -> usize {
    job.recipients.iter().fold(2048, |sum, r| {
        sum.saturating_add(r.address.len().saturating_mul(2))
            .saturating_add(320)
    })
}

impl Report for Charged {
    fn report(&self, answer: Answer) {
        let estimate = self.release_bytes();
        self.conn
            .send_wire_uncommitting(answer.to_wire(), answer.id(), estimate);
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.release();
    }
}

impl ConnSettings {
    /// `shaped`: `[shaping] enabled`. Unshaped, a connection may have as
    /// many answers pending as the queue and the workers hold. Shaped, the
    /// jobs of a destination beyond its waiting limit are set aside
    /// outside the queue, so that a client's jobs for other destinations
    /// are read and flow behind them: then only the byte bounds
    /// (`max_queued_bytes*`, `max_unread_answer_bytes`) limit what a
    /// connection holds.
    pub fn from_config(daemon: &DaemonConfig, shaped: bool, daemon_uid: u32) -> Self {
        let window = if shaped {
            usize::MAX
        } else {
            daemon.queue_capacity.saturating_add(daemon.workers).max(1)
        };
        Self {
            access: AccessPolicy::from_config(daemon, daemon_uid),
            max_line_length: daemon.max_line_length,
            idle_timeout: daemon.client_idle_timeout,
            window,
            limits: Limits::from_config(daemon),
        }
    }
}

/// What every connection shares.
pub struct Context {
    pub submitter: Submitter,
    /// Connections open now (the shutdown waits for them to flush).
    pub live: Arc<AtomicUsize>,
    /// What the clients hold, per uid and in all.
    pub quotas: Arc<Quotas>,
    /// Who may submit now: replaced on SIGHUP and checked for every line
    /// of every open connection (a peer no longer allowed gets its next
    /// job refused).
    pub access: RwLock<Arc<AccessPolicy>>,
}

impl Context {
    /// The access policy in force.
    pub fn access(&self) -> Arc<AccessPolicy> {
        match self.access.read() {
            Ok(policy) => Arc::clone(&policy),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts a reloaded access policy in force for every connection.
    pub fn set_access(&self, policy: AccessPolicy) {
        let policy = Arc::new(policy);
        match self.access.write() {
            Ok(mut guard) => *guard = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

/// Serves one accepted connection on its own threads. Fails only when no
/// thread can be started (the connection is then closed).
pub fn spawn_connection(
    stream: UnixStream,
    ctx: &Arc<Context>,
    settings: Arc<ConnSettings>,
    number: u64,
) -> io::Result<()> {
    let ctx_for_thread = Arc::clone(ctx);
    ctx.live.fetch_add(1, Ordering::SeqCst);
    let spawned = thread::Builder::new()
        .name(format!("conn-{number}"))
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            serve(stream, &ctx_for_thread, &settings, number);
            ctx_for_thread.live.fetch_sub(1, Ordering::SeqCst);
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            ctx.live.fetch_sub(1, Ordering::SeqCst);
            Err(e)
        }
    }
}

/// The error line a refused peer gets.
pub fn refusal_line(uid: u32) -> String {
    let error = JobError::permission_denied(
        None,
        format!("permission denied: uid {uid} is not allowed to submit jobs"),
    );
    Answer::Failed(error).to_line()
}

fn serve(stream: UnixStream, ctx: &Context, settings: &ConnSettings, number: u64) {
    let creds = match getsockopt(&stream, PeerCredentials) {
        Ok(creds) => creds,
        Err(e) => {
            log::warn!("connection {number}: no peer credentials: {}", e.desc());
            return;
        }
    };
    let (uid, gid, pid) = (creds.uid(), creds.gid(), creds.pid());
    let groups = peer_groups(&stream).unwrap_or_else(|e| {
        log::warn!(
            "connection {number}: no peer groups (SO_PEERGROUPS): {e}; only the primary group counts"
        );
        Vec::new()
    });
    let peer = peer_identity(uid, gid, &groups, settings.access.daemon_uid);
    if !settings.access.allows(&peer) {
        log::warn!("refused connection from uid {uid} (pid {pid}): not allowed to submit jobs");
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = (&stream).write_all(format!("{}\n", refusal_line(uid)).as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        // Closing with unread input would reset the connection and could
        // lose the line: take (and drop) what the client sends, briefly.
        drain(&stream, Duration::from_secs(1), 1 << 20);
        return;
    }
    if let Err(why) = ctx.quotas.connect(uid, &settings.limits) {
        log::warn!("refused connection from uid {uid} (pid {pid}): {why}");
        let error = JobError::temporary(None, format!("{why}; try again later"));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = (&stream).write_all(&Answer::Failed(error).to_wire());
        let _ = stream.shutdown(Shutdown::Write);
        drain(&stream, Duration::from_secs(1), 1 << 20);
        return;
    }
    let _slot = ConnectionSlot {
        quotas: &ctx.quotas,
        uid,
    };
    log::debug!("connection {number}: uid {uid} pid {pid}");
    let writer_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("connection {number}: {e}; answering a retryable error");
            refuse_retryable(
                &stream,
                &format!("the daemon cannot serve this connection now: {e}"),
            );
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(POLL));
    let idle = settings.idle_timeout.max(Duration::from_millis(1));
    let _ = writer_stream.set_write_timeout(Some(idle));
    let direct_stream = match writer_stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("connection {number}: {e}; answering a retryable error");
            refuse_retryable(
                &stream,
                &format!("the daemon cannot serve this connection now: {e}"),
            );
            return;
        }
    };
    let conn = Arc::new(Conn {
        stream: direct_stream,
        state: Mutex::new(ConnState::default()),
        wake_writer: Condvar::new(),
        wake_reader: Condvar::new(),
    });
    let writer_conn = Arc::clone(&conn);
    let writer = thread::Builder::new()
        .name(format!("conn-{number}-w"))
        .stack_size(CONNECTION_STACK)
        .spawn(move || write_answers(writer_stream, &writer_conn));
    let writer = match writer {
        Ok(handle) => handle,
        Err(e) => {
            log::warn!("connection {number}: cannot start its writer: {e}");
            refuse_retryable(
                &stream,
                &format!("the daemon cannot serve this connection now: {e}"),
            );
            return;
        }
    };
    let mut reader = Reader {
        ctx,
        settings,
        conn: &conn,
        peer: Arc::new(peer),
        passed: VecDeque::new(),
        buffered: 0,
        lost_fds: false,
    };
    reader.run(&stream, idle);
    conn.update(|s| s.reader_done = true);
    let _ = writer.join();
    log::debug!("connection {number}: closed");
}

/// Answers a connection the daemon does not serve with a retryable
/// error line (`mailhop send` exits 75); the caller closes it.
pub fn refuse_retryable(stream: &UnixStream, why: &str) {
    let error = JobError::temporary(None, format!("{why}; try again later"));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = (&*stream).write_all(&Answer::Failed(error).to_wire());
}

/// Reads and discards input until EOF, `limit` or `max` bytes.
fn drain(stream: &UnixStream, limit: Duration, max: usize) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    while total < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[derive(Debug, Default)]
struct ConnState {
    /// Answers owed to the client and not yet written.
    outstanding: usize,
    /// Answer bytes waiting for the writer thread (in order).
    pending: Vec<u8>,
    /// The writer thread is writing bytes it took from `pending`: nobody
    /// else may write now, or answers could interleave.
    writer_busy: bool,
    /// The writer thread waits for work / the reader waits for room.
    writer_waiting: bool,
    reader_waiting: bool,
    reader_done: bool,
    /// The client cannot be written to any more.
    closed: bool,
    /// Bytes the writer thread took from `pending` and is writing.
    in_write: usize,
    /// Estimated bytes of the answers of accepted jobs not yet answered.
    committed: usize,
}

impl ConnState {
    /// `bytes` (whole answer lines) reached the client.
    fn written(&mut self, bytes: &[u8]) {
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        self.outstanding = self.outstanding.saturating_sub(lines);
    }
}

/// One connection's answer path, shared by its reader, its writer and the
/// tickets of its jobs. A worker with an answer writes it itself when the
/// socket takes it at once (one non-blocking send); otherwise the answer
/// waits in `pending` for the writer thread, which is the only one that
/// ever blocks on the client.
struct Conn {
    stream: UnixStream,
    state: Mutex<ConnState>,
    /// The writer thread waits here for pending bytes.
    wake_writer: Condvar,
    /// The reader waits here for room in its window.
    wake_reader: Condvar,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Changes the state and wakes whoever waits for a change.
    fn update<T>(&self, f: impl FnOnce(&mut ConnState) -> T) -> T {
        let mut state = self.lock();
        let value = f(&mut state);
        self.wake_waiters(&state);
        value
    }

    fn wake_waiters(&self, state: &ConnState) {
        if state.writer_waiting {
            self.wake_writer.notify_one();
        }
        if state.reader_waiting {
            self.wake_reader.notify_one();
        }
    }

    fn read<T>(&self, f: impl FnOnce(&ConnState) -> T) -> T {
        f(&self.lock())
    }

    /// Counts an answer owed; call before the job or line leaves the reader.
    fn owe(&self) {
        self.lock().outstanding += 1;
    }

    fn send(&self, answer: &Answer) {
        self.send_wire(answer.to_wire(), answer.id());
    }

    /// Sends one answer line (without its newline); `id` names the job in
    /// the log when the client is gone.
    fn send_line(&self, line: String, id: Option<&str>) {
        let mut line = line.into_bytes();
        line.push(b'\n');
        self.send_wire(line, id);
    }

    /// Sends one answer line that already ends with its newline.
    fn send_wire(&self, line: Vec<u8>, id: Option<&str>) {
        self.send_wire_uncommitting(line, id, 0);
    }

    /// As [`Self::send_wire`], taking the answer's estimate (`uncommit`
    /// bytes, see [`answer_estimate`]) off the connection under the same
    /// lock.
    fn send_wire_uncommitting(&self, line: Vec<u8>, id: Option<&str>, uncommit: usize) {
        let mut state = self.lock();
        state.committed = state.committed.saturating_sub(uncommit);
        if state.closed {
            log::info!(
                "job {}: client gone; result not reported",
                id.unwrap_or("(none)")
            );
            state.written(&line);
            return;
        }
        let mut rest: &[u8] = &line;
        if !state.writer_busy && state.pending.is_empty() {
            // Would block, or an error the writer thread will see too: 0.
            let sent = nix::sys::socket::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                rest,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            )
            .unwrap_or_default();
            rest = rest.get(sent..).unwrap_or(&[]);
        }
        if rest.is_empty() {
            state.written(&line);
            if state.reader_waiting {
                self.wake_reader.notify_one();
            }
        } else {
            state.pending.extend_from_slice(rest);
            if state.writer_waiting {
                self.wake_writer.notify_one();
            }
        }
    }

    /// Waits until fewer than `window` answers are pending and at most
    /// `unread` bytes of answers wait for the client, or the client is
    /// gone (its answers are then dropped as they come).
    fn wait_for_room(&self, window: usize, unread: usize) {
        let mut state = self.lock();
        loop {
            if state.closed {
                return;
            }
            let held = state
                .pending
                .len()
                .saturating_add(state.in_write)
                .saturating_add(state.committed);
            if state.outstanding == 0 || (state.outstanding < window && held <= unread) {
                return;
            }
            state.reader_waiting = true;
            state = match self.wake_reader.wait_timeout(state, POLL) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.reader_waiting = false;
        }
    }
}

impl Report for Conn {
    fn report(&self, answer: Answer) {
        self.send(&answer);
    }
}

/// The writer thread: writes what workers could not write at once, and
/// ends when the reader is done and every answer is written (or the
/// client is gone).
fn write_answers(mut stream: UnixStream, conn: &Conn) {
    loop {
        let batch = {
            let mut state = conn.lock();
            while state.pending.is_empty() {
                if state.closed || (state.reader_done && state.outstanding == 0) {
                    drop(state);
                    conn.update(|s| s.closed = true);
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                state.writer_waiting = true;
                state = match conn.wake_writer.wait_timeout(state, POLL) {
                    Ok((state, _)) => state,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                state.writer_waiting = false;
            }
            state.writer_busy = true;
            state.in_write = state.pending.len();
            std::mem::take(&mut state.pending)
        };
        let written = stream.write_all(&batch);
        conn.update(|s| {
            s.writer_busy = false;
            s.in_write = 0;
            s.written(&batch);
            if written.is_err() {
                s.closed = true;
                let dropped = std::mem::take(&mut s.pending);
                s.written(&dropped);
            }
        });
        if let Err(e) = written {
            log::info!("client connection lost while writing a result: {e}");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Splits a byte stream into lines of at most `max` bytes (newline not
/// counted); a longer line is reported once and skipped to its end.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    discarding: bool,
}

/// One event of the [`LineSplitter`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent {
    Line(Vec<u8>),
    TooLong,
}

/// A [`LineEvent`] with the line borrowed.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRef<'a> {
    Line(&'a [u8]),
    TooLong,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// Splits `data` into owned events (see [`Self::feed_with`]).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<LineEvent>) {
        self.feed_with(data, |event| {
            out.push(match event {
                LineRef::Line(line) => LineEvent::Line(line.to_vec()),
                LineRef::TooLong => LineEvent::TooLong,
            });
            true
        });
    }

    /// Splits `data`, handing each complete line to `each` as a slice: of
    /// `data` itself when the whole line is there (no copy), else of the
    /// splitter's buffer (kept for the next line). Stops, returning false,
    /// when `each` returns false.
    pub fn feed_with(
        &mut self,
        mut data: &[u8],
        mut each: impl FnMut(LineRef<'_>) -> bool,
    ) -> bool {
        while !data.is_empty() {
            let newline = memchr::memchr(b'\n', data);
            let (part, rest, complete) = match newline {
                Some(i) => (
                    data.get(..i).unwrap_or(&[]),
                    data.get(i + 1..).unwrap_or(&[]),
                    true,
                ),
                None => (data, &[][..], false),
            };
            data = rest;
            if !self.discarding {
                if self.buf.len().saturating_add(part.len()) > self.max {
                    self.buf = Vec::new();
                    self.discarding = true;
                    if !each(LineRef::TooLong) {
                        if complete {
                            self.discarding = false;
                        }
                        return false;
                    }
                } else if complete && self.buf.is_empty() {
                    if !each(LineRef::Line(part)) {
                        return false;
                    }
                    continue;
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if complete {
                if !self.discarding {
                    let go_on = each(LineRef::Line(&self.buf));
                    self.buf.clear();
                    if self.buf.capacity() > KEEP_LINE_BUFFER {
                        // A long line's buffer is not kept for the next.
                        self.buf = Vec::new();
                    }
                    if !go_on {
                        return false;
                    }
                }
                self.discarding = false;
            }
        }
        true
    }

    /// Bytes of a partial line held now.
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Drops the partial line held now and the rest of it as it comes.
    pub fn abandon(&mut self) {
        if !self.buf.is_empty() {
            self.buf = Vec::new();
            self.discarding = true;
        }
    }

    /// At end of input: the unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let discarding = std::mem::replace(&mut self.discarding, false);
        let buf = std::mem::take(&mut self.buf);
        (!discarding && !buf.is_empty()).then_some(buf)
    }
}

struct Reader<'a> {
    ctx: &'a Context,
    settings: &'a ConnSettings,
    conn: &'a Arc<Conn>,
    peer: Arc<PeerIdentity>,
    /// Descriptors passed with SCM_RIGHTS and not yet taken by a job with
    /// `"message":{"fd":true}`, oldest first.
    passed: VecDeque<File>,
    /// Bytes of the partial line charged to the quotas.
    buffered: usize,
    /// Passed descriptors were lost (control data truncated).
    lost_fds: bool,
}

/// Most passed descriptors a connection may have waiting for their jobs;
/// more are closed at once.
const MAX_PASSED_FDS: usize = 16;

impl Reader<'_> {
    /// Reads what the client sent, keeping the descriptors that came with
    /// it (in order) for the jobs that name them.
    fn receive(&mut self, stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::{AsRawFd, FromRawFd, RawFd};
        // SCM_MAX_FD (253) descriptors: a message never has more, so the
        // control data is never truncated (which would leave descriptors
        // behind that nobody closes).
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let bytes = msg.bytes;
        let mut dropped = 0usize;
        let cmsgs = msg.cmsgs();
        if cmsgs.is_err() {
            // Truncated: descriptors were lost (the daemon had no room).
            self.lost_fds = true;
        }
        if let Ok(cmsgs) = cmsgs {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    for fd in fds {
                        // SAFETY: the kernel just installed `fd` in this
                        // process for this message; nothing else owns it.
                        let file = unsafe { File::from_raw_fd(fd) };
                        if self.passed.len() < MAX_PASSED_FDS {
                            self.passed.push_back(file);
                        } else {
                            dropped += 1;
                        }
                    }
                }
            }
        }
        if dropped > 0 {
            log::warn!(
                "uid {}: closed {dropped} passed file descriptors (more than {MAX_PASSED_FDS} waiting for their jobs)",
                self.peer.uid
            );
        }
        Ok(bytes)
    }

    fn run(&mut self, stream: &UnixStream, idle: Duration) {
        self.read_lines(stream, idle);
        self.ctx.quotas.release(self.peer.uid, self.buffered);
        self.buffered = 0;
    }

    /// Keeps the bytes of the partial line the splitter holds charged to
    /// the quotas; over a limit, the line is discarded with a retryable
    /// error.
    fn account(&mut self, splitter: &mut LineSplitter) {
        let held = splitter.buffered();
        if held < self.buffered {
            self.ctx.quotas.release(self.peer.uid, self.buffered - held);
            self.buffered = held;
        } else if held > self.buffered {
            match self
                .ctx
                .quotas
                .charge(self.peer.uid, held - self.buffered, &self.settings.limits)
            {
                Ok(()) => self.buffered = held,
                Err(why) => {
                    splitter.abandon();
                    self.ctx.quotas.release(self.peer.uid, self.buffered);
                    self.buffered = 0;
                    self.refuse_temporary(None, format!("{why}; line discarded, try again later"));
                }
            }
        }
    }

    fn read_lines(&mut self, stream: &UnixStream, idle: Duration) {
        let mut splitter = LineSplitter::new(self.settings.max_line_length);
        let mut buf = vec![0u8; CHUNK];
        let mut last = Instant::now();
        // A client gone (its answers cannot be written) may still have
        // sent complete job lines: they are read to the end and run, their
        // outcomes logged. Every line a client sent whole is taken.
        loop {
            match self.receive(stream, &mut buf) {
                Ok(0) => {
                    if let Some(line) = splitter.finish() {
                        self.line(&line);
                    }
                    return;
                }
                Ok(n) => {
                    last = Instant::now();
                    let go_on = splitter.feed_with(buf.get(..n).unwrap_or(&[]), |event| {
                        self.conn.wait_for_room(
                            self.settings.window,
                            self.settings.limits.unread_answer_bytes,
                        );
                        match event {
                            LineRef::Line(line) => self.line(line),
                            LineRef::TooLong => self.refuse(JobError::other(
                                None,
                                format!(
                                    "line too long: more than {} bytes (max_line_length); skipped",
                                    self.settings.max_line_length
                                ),
                            )),
                        }
                        true
                    });
                    if !go_on {
                        return;
                    }
                    self.account(&mut splitter);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    let pending = self.conn.read(|s| s.outstanding);
                    if pending > 0 {
                        // Waiting for results is not idleness.
                        last = Instant::now();
                    } else if self.ctx.submitter.stopping() {
                        return;
                    } else if last.elapsed() >= idle {
                        log::debug!("closing an idle client connection");
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn refuse(&self, error: JobError) {
        self.ctx.submitter.stats().line_refused();
        self.conn.owe();
        self.conn.send(&Answer::Failed(error));
    }

    /// Refuses with a retryable error (temporary trouble: a quota).
    fn refuse_temporary(&self, id: Option<String>, error: String) {
        self.ctx.submitter.stats().line_refused();
        self.conn.owe();
        self.conn
            .send(&Answer::Failed(JobError::temporary(id, error)));
    }

    fn line(&mut self, raw: &[u8]) {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        // The policy in force now (a reload may have changed it since the
        // connection was accepted).
        if !self.ctx.access().allows(&self.peer) {
            let uid = self.peer.uid;
            log::warn!("refused a line from uid {uid}: not allowed to submit jobs any more");
            self.ctx.submitter.stats().line_refused();
            self.conn.owe();
            self.conn.send_line(refusal_line(uid), None);
            return;
        }
        // The common case, a well-formed job, in one parse (serde_json
        // checks the UTF-8 of what it reads). Anything else is explained
        // without building a JSON tree of the line: a hostile line (a
        // million small objects) costs no more memory than its bytes.
        let error = match parse_job(line) {
            Ok(job) => {
                self.accept(job, line.len());
                return;
            }
            Err(error) => error,
        };
        if std::str::from_utf8(line).is_err() {
            self.refuse(JobError::invalid(
                None,
                "malformed job: line is not valid UTF-8",
            ));
            return;
        }
        if crate::job::probe_line(line).is_some_and(|p| p.command.is_some()) {
            self.command(line);
            return;
        }
        self.refuse(error);
    }

    /// Queues a parsed, checked job (`cost`: its line's bytes, held
    /// against the quotas until it is answered).
    fn accept(&mut self, job: CheckedJob, cost: usize) {
        let limits = &self.settings.limits;
        if job.recipients.len() > limits.recipients {
            self.refuse(JobError::invalid(
                Some(job.id.clone()),
                format!(
                    "invalid job: more than {} recipients (max_recipients)",
                    limits.recipients
                ),
            ));
            return;
        }
        if let MessageRef::Data { data } = &job.message
            && data.len() > limits.inline_size
        {
            self.refuse(JobError::other(
                Some(job.id.clone()),
                format!(
                    "message too large: inline data over {} bytes (max_inline_size); pass it as a file",
                    limits.inline_size
                ),
            ));
            return;
        }
        if let Err(why) = self.ctx.quotas.charge(self.peer.uid, cost, limits) {
            self.refuse_temporary(Some(job.id.clone()), format!("{why}; try again later"));
            return;
        }
        let estimate = answer_estimate(&job);
        // More committed never makes room for anyone: nobody to wake.
        {
            let mut state = self.conn.lock();
            state.committed = state.committed.saturating_add(estimate);
        }
        let charged = Charged {
            conn: Arc::clone(self.conn),
            quotas: Arc::clone(&self.ctx.quotas),
            uid: self.peer.uid,
            bytes: AtomicUsize::new(cost),
            estimate: AtomicUsize::new(estimate),
        };
        if let MessageRef::Path { path } = &job.message
            && !Path::new(path).is_absolute()
        {
            self.refuse(JobError::invalid(
                Some(job.id.clone()),
                format!("invalid job: message path {path} is not absolute"),
            ));
            return;
        }
        let passed = if matches!(job.message, MessageRef::Fd { .. }) {
            let Some(file) = self.passed.pop_front() else {
                if std::mem::take(&mut self.lost_fds) {
                    self.refuse_temporary(
                        Some(job.id.clone()),
                        "a passed file descriptor was lost: no file descriptors left in the daemon; try again later".into(),
                    );
                    return;
                }
                self.refuse(JobError::invalid(
                    Some(job.id.clone()),
                    "invalid job: message {\"fd\":true} but no file descriptor came with the job line (SCM_RIGHTS)",
                ));
                return;
            };
            Some(file)
        } else {
            None
        };
        let report: Arc<dyn Report> = Arc::new(charged);
        self.conn.owe();
        self.ctx.submitter.submit(Ticket::with_message_fd(
            job,
            Arc::clone(&self.peer),
            report,
            passed,
        ));
    }

    /// A control line (an object with a `"command"` key): tiny, so it is
    /// read as a JSON value; a long one is refused unread.
    fn command(&self, line: &[u8]) {
        const MAX_COMMAND: usize = 4096;
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(value) if line.len() <= MAX_COMMAND => value,
            Ok(_) => {
                self.refuse(JobError::other(
                    None,
                    format!("invalid command: longer than {MAX_COMMAND} bytes"),
                ));
                return;
            }
            Err(e) => {
                self.refuse(JobError::other(None, format!("malformed command: {e}")));
                return;
            }
        };
        let command = value.get("command").unwrap_or(&serde_json::Value::Null);
        let extra = value
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "command").cloned());
        if let Some(key) = extra {
            self.refuse(JobError::other(
                None,
                format!("invalid command: unknown field `{key}`"),
            ));
            return;
        }
        match command.as_str() {
            Some("status") => {
                let report = status_report(&self.ctx.submitter);
                let line = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
                self.conn.owe();
                self.conn.send_line(line, None);
            }
            Some(other) => self.refuse(JobError::other(None, format!("unknown command {other:?}"))),
            None => self.refuse(JobError::other(
                None,
                "invalid command: \"command\" must be a string",
            )),
        }
    }
}

/// The counters for `{"command":"status"}`.
pub fn status_report(submitter: &Submitter) -> StatusReport {
    let cache = submitter
        .deliverer()
        .cache()
        .map(|c| c.cache_counters())
        .unwrap_or_default();
    let mut report = submitter.stats().snapshot(submitter.shape(), cache);
    report.tls = Some(submitter.deliverer().tls_memory().counters());
    if let Some(shaping) = submitter.shaping() {
        report.destinations = shaping.destinations();
        report.paused = submitter.paused_destinations();
    }
    report
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Why a client request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The daemon could not be reached or the connection broke.
    Unavailable(String),
    /// The daemon answered with something that is not a protocol line.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable(text) | ClientError::Protocol(text) => f.write_str(text),
        }
    }
}

fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| {
        ClientError::Unavailable(format!(
            "cannot connect to the daemon at {}: {}",
            socket.display(),
            crate::transport::strerror(&e)
        ))
    })
}

fn read_reply(reader: &mut impl BufRead, socket: &Path) -> Result<String, ClientError> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(ClientError::Unavailable(format!(
            "the daemon at {} closed the connection without an answer",
            socket.display()
        ))),
        Ok(_) => Ok(line.trim_end().to_string()),
        Err(e) => Err(ClientError::Unavailable(format!(
            "reading from the daemon at {}: {e}",
            socket.display()
        ))),
    }
}

/// Parses an answer line: a result, or an error.
pub fn parse_answer(line: &str) -> Result<Answer, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("unreadable answer: {e}"))?;
    if value.get("error").is_some() {
        serde_json::from_value::<JobError>(value)
            .map(Answer::Failed)
            .map_err(|e| format!("unreadable error answer: {e}"))
    } else {
        serde_json::from_value::<JobResult>(value)
            .map(Answer::Done)
            .map_err(|e| format!("unreadable result: {e}"))
    }
}

/// Submits one job and waits for its answer (a connection-level error
/// without an id, such as a refused peer, is the answer too).
pub fn submit(socket: &Path, job: &Job) -> Result<Answer, ClientError> {
    submit_with_fd(socket, job, None)
}

/// Writes `line`, passing `fd` (SCM_RIGHTS) with its first bytes.
fn send_with_fd(stream: &UnixStream, line: &[u8], fd: Option<&File>) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let Some(fd) = fd else {
        return (&*stream).write_all(line);
    };
    let fds = [fd.as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[io::IoSlice::new(line)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    };
    (&*stream).write_all(line.get(sent..).unwrap_or(&[]))
}

/// [`submit`], passing `fd` with the job line for a job whose message is
/// `{"fd":true}`.
pub fn submit_with_fd(socket: &Path, job: &Job, fd: Option<&File>) -> Result<Answer, ClientError> {
    let stream = connect(socket)?;
    let line = serde_json::to_string(job)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the job: {e}")))?;
    // A refused peer may find the connection closed before its job is
    // written: the daemon's answer is still there to read.
    let sent = send_with_fd(&stream, format!("{line}\n").as_bytes(), fd);
    let mut reader = BufReader::new(&stream);
    if let Err(e) = sent {
        return match read_reply(&mut reader, socket).map(|l| parse_answer(&l)) {
            Ok(Ok(answer)) if answer.id().is_none() => Ok(answer),
            _ => Err(ClientError::Unavailable(format!("sending the job: {e}"))),
        };
    }
    // Bounded: one answer per line sent, plus a few connection errors.
    for _ in 0..16 {
        let line = read_reply(&mut reader, socket)?;
        let answer = parse_answer(&line).map_err(ClientError::Protocol)?;
        match answer.id() {
            Some(id) if id == job.id => return Ok(answer),
            None => return Ok(answer),
            Some(_) => continue,
        }
    }
    Err(ClientError::Protocol(
        "the daemon did not answer this job".into(),
    ))
}

/// Sends `{"command":"status"}`; the daemon's JSON line, or its error.
pub fn status(socket: &Path) -> Result<Result<String, JobError>, ClientError> {
    let stream = connect(socket)?;
    let sent = (&stream).write_all(b"{\"command\":\"status\"}\n");
    let line = match (read_reply(&mut BufReader::new(&stream), socket), sent) {
        (Ok(line), _) => line,
        (Err(_), Err(e)) => {
            return Err(ClientError::Unavailable(format!(
                "sending the request: {e}"
            )));
        }
        (Err(e), Ok(())) => return Err(e),
    };
    let value: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| ClientError::Protocol(format!("unreadable answer: {e}")))?;
    if value.get("error").is_some() {
        let error = serde_json::from_value::<JobError>(value)
            .map_err(|e| ClientError::Protocol(format!("unreadable error answer: {e}")))?;
        return Ok(Err(error));
    }
    Ok(Ok(line))
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
