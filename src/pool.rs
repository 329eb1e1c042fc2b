//! The daemon's worker pool: a fixed number of threads fed by a bounded
//! crossbeam channel of [`Ticket`]s. Each worker runs one whole delivery
//! ([`dispatch::execute`]) and hands the answer to the ticket's
//! [`Report`] (which never blocks the worker on a client). A job's
//! delivery plan ([`crate::plan`]) is made once, by the first worker that
//! needs it, and kept with its ticket: the same-route check, the chain
//! follower and the delivery use it; at submission only its keys are
//! counted as cache demand ([`Plan::keys_of`]). Connections
//! wait for room in the queue on `QueueRoom`, asleep. When every worker
//! is busy, a worker takes the next queued job along for the same next
//! hop so that its transaction can follow the current message on the
//! same session ([`crate::chain`]); a job for elsewhere goes back.
//!
//! Also owns what must hold for every job: the message file is opened on
//! behalf of the submitting peer ([`PeerIdentity`]) and checked against
//! its credentials, every ticket is answered exactly once (a worker and
//! the shutdown path race for the answer through [`Ticket`]'s claim), and
//! a job that cannot finish before shutdown is answered at once: its
//! recipients already settled keep their outcome, the others are deferred,
//! 4.3.0 "mail system shutting down" (see [`crate::progress`] for the
//! end-of-data case and the one log line per recipient).
//!
//! Error contract: nothing here panics on job input; a job that cannot
//! run becomes an error answer (`{"id":...,"error":...}`). Should a worker
//! panic anyway, its [`WorkerGuard`] answers the jobs it held with every
//! recipient deferred, 4.3.0 "unknown mail transport error" (Postfix's
//! qmgr text for a crashed delivery agent), logs their ids, and starts a
//! replacement thread: the pool never shrinks ([`Pool::replenish`] retries
//! a replacement that could not be started).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::cache::DemandGuard;
use crate::chain::Chain;
use crate::config::LogFormat;
use crate::deliver::Deliverer;
use crate::dispatch;
use crate::dsn::StatusCode;
use crate::job::{
    CheckedJob, Job, JobError, JobErrorKind, JobResult, MessageRef, RecipientResult, TransportKind,
};
use crate::message::Message;
use crate::plan::{NexthopKey, Plan};
use crate::progress::Progress;
use crate::recipient_log::Service;
use crate::recipients::Status;
use crate::shaping::{self, Key, Shaper, Tally, Unqueued, Verdict};
use crate::stats::{PoolShape, ShapingReport, Stats};
use crate::transport::strerror;

/// The diagnostic of a job deferred because the daemon stops.
pub const SHUTDOWN_DIAGNOSTIC: &str = "mail system shutting down";
/// Its enhanced status code.
pub const SHUTDOWN_DSN: StatusCode = crate::dsn::SYSTEM_TROUBLE;
/// The diagnostic of a job whose worker panicked (Postfix's qmgr, when a
/// delivery agent dies); deferred with [`SHUTDOWN_DSN`].
pub const PANIC_DIAGNOSTIC: &str = "unknown mail transport error";

/// What one job ends with: a result, or an error naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Done(JobResult),
    Failed(JobError),
}

impl Answer {
    /// The job's id (`None` for an error about a line without one).
    pub fn id(&self) -> Option<&str> {
        match self {
            Answer::Done(result) => Some(&result.id),
            Answer::Failed(error) => error.id.as_deref(),
        }
    }

    /// The protocol line, without the newline.
    pub fn to_line(&self) -> String {
        let mut line = self.to_wire();
        line.pop();
        // to_wire writes JSON (UTF-8) and a newline.
        String::from_utf8(line).unwrap_or_default()
    }

    /// The protocol line with its newline, serialized straight into one
    /// buffer sized for the usual answer.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(512);
        let json = match self {
            Answer::Done(result) => {
                result.write_json(&mut line);
                Ok(())
            }
            Answer::Failed(error) => serde_json::to_writer(&mut line, error),
        };
        if json.is_err() {
            // Serializing these plain structs cannot fail; keep a valid line anyway.
            line.clear();
            line.extend_from_slice(
                br#"{"id":null,"error":"internal error: cannot encode the result","kind":"other"}"#,
            );
        }
        line.push(b'\n');
        line
    }
}

/// Where a job's answer goes (the submitting connection).
pub trait Report: Send + Sync {
    fn report(&self, answer: Answer);

    /// Told of each recipient as it settles (default: nobody).
    fn observer(&self) -> Option<Arc<dyn crate::progress::SettleObserver>> {
        None
    }
}

/// Who submitted a job (from SO_PEERCRED), for message file access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub uid: u32,
    /// Primary group and every supplementary group of the uid.
    pub gids: Vec<u32>,
    /// Root, or the daemon's own uid: may name any file the daemon can read.
    pub privileged: bool,
}

impl PeerIdentity {
    /// Classic POSIX permission check (no ACLs): may this peer `want`
    /// (4 read, 1 search) an object with this owner, group and mode?
    pub fn may(&self, owner: u32, group: u32, mode: u32, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let bits = if owner == self.uid {
            mode >> 6
        } else if self.gids.contains(&group) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }
}

/// One accepted job on its way through the pool.
pub struct Ticket {
    job: CheckedJob,
    /// The job's delivery plan, made once by the first worker that needs
    /// it (see [`Ticket::plan`]).
    plan: OnceLock<Plan>,
    peer: Arc<PeerIdentity>,
    report: Arc<dyn Report>,
    claimed: AtomicBool,
    /// Demand registered with the connection cache while the job waits.
    queued_demand: Mutex<Vec<DemandGuard>>,
    /// When the job line was read (the log's delays start here).
    received: Instant,
    /// A worker looking for a follower put it back in the queue once.
    requeued: AtomicBool,
    /// Unique per daemon, assigned at acceptance: what a chained session
    /// is handed to (the job id is the client's and need not be unique).
    serial: u64,
    /// The message passed with SCM_RIGHTS (`"message":{"fd":true}`),
    /// taken when the message is opened.
    message_fd: Mutex<Option<File>>,
    /// Its destination in the scheduler ([`crate::shaping`]), when shaped.
    shaping: OnceLock<Key>,
}

/// The next ticket's serial.
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Ticket {
    pub fn new(job: CheckedJob, peer: Arc<PeerIdentity>, report: Arc<dyn Report>) -> Arc<Self> {
        Self::with_message_fd(job, peer, report, None)
    }

    /// A ticket whose message came as a file descriptor on the job's
    /// connection.
    pub fn with_message_fd(
        job: CheckedJob,
        peer: Arc<PeerIdentity>,
        report: Arc<dyn Report>,
        message_fd: Option<File>,
    ) -> Arc<Self> {
        Arc::new(Self {
            job,
            plan: OnceLock::new(),
            peer,
            report,
            claimed: AtomicBool::new(false),
            queued_demand: Mutex::new(Vec::new()),
            received: Instant::now(),
            requeued: AtomicBool::new(false),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            message_fd: Mutex::new(message_fd),
            shaping: OnceLock::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.job.id
    }

    /// The daemon's own unique number for this job.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The job's delivery plan, made with `deliverer` by the first caller
    /// (a worker) and kept.
    fn plan(&self, deliverer: &Deliverer) -> &Plan {
        self.plan.get_or_init(|| deliverer.plan(&self.job))
    }

    /// The job was answered (or is being answered): a worker that takes
    /// it from the queue now must not deliver it.
    fn answered(&self) -> bool {
        self.claimed.load(Ordering::SeqCst)
    }

    /// True for exactly one caller: the one that answers the job.
    fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::SeqCst)
    }

    fn drop_queued_demand(&self) {
        if let Ok(mut guards) = self.queued_demand.lock() {
            guards.clear();
        }
    }
}

/// Pool size: `[daemon] workers`, `queue_capacity`, `worker_stack_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub workers: usize,
    pub queue_capacity: usize,
    pub stack_size: usize,
}

/// Room in the job queue, counted here so that connections wait for it
/// asleep on a condition variable (crossbeam's blocking `send` spins and
/// yields first, which costs many wake-ups when 20 readers wait at once).
#[derive(Default)]
struct QueueRoom {
    /// Tickets in the channel or about to be sent into it.
    queued: Mutex<usize>,
    freed: Condvar,
    waiting: AtomicUsize,
}

impl QueueRoom {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        match self.queued.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes a place, waiting while `capacity` are taken; false when
    /// `stop` turned true while waiting.
    fn take(&self, capacity: usize, stop: &AtomicBool) -> bool {
        let mut queued = self.lock();
        while *queued >= capacity {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            queued = match self.freed.wait_timeout(queued, Duration::from_millis(200)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        *queued += 1;
        true
    }

    /// Takes a place without waiting (a job put back by a worker: it had
    /// one until it was taken).
    fn take_now(&self) {
        *self.lock() += 1;
    }

    /// A ticket left the channel. Waiting connections are woken together
    /// once the queue is down to three quarters of `capacity`: each then
    /// queues a batch, instead of one wake-up (and one sleep) per job.
    fn give_back(&self, capacity: usize) {
        let mut queued = self.lock();
        *queued = queued.saturating_sub(1);
        let low_water = *queued <= capacity.saturating_mul(3) / 4;
        drop(queued);
        if low_water && self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_all();
        }
    }
}

struct Shared {
    /// The job queue, as the workers see it.
    rx: Receiver<Arc<Ticket>>,
    /// For a worker putting a job back (see [`take_follower`]).
    requeue: Sender<Arc<Ticket>>,
    /// Worker threads alive (started and not ended).
    alive: AtomicUsize,
    /// Worker threads ever started (their names).
    spawned: AtomicU64,
    room: QueueRoom,
    deliverer: RwLock<Arc<Deliverer>>,
    /// Tickets being delivered, by slot number.
    running: Mutex<HashMap<u64, Running, foldhash::fast::RandomState>>,
    next_slot: AtomicU64,
    stopping: AtomicBool,
    stats: Arc<Stats>,
    size: PoolSize,
    /// The per-destination scheduler in front of the channel.
    shaper: OnceLock<Arc<Shaper<Arc<Ticket>>>>,
}

impl Shared {
    fn deliverer(&self) -> Arc<Deliverer> {
        match self.deliverer.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Answers a ticket, unless someone else already did.
    fn answer(&self, ticket: &Ticket, answer: Answer) -> bool {
        if !ticket.claim() {
            return false;
        }
        self.answer_claimed(ticket, answer);
        true
    }

    /// Answers a ticket the caller has claimed.
    fn answer_claimed(&self, ticket: &Ticket, answer: Answer) {
        match &answer {
            Answer::Done(result) => self
                .stats
                .job_done(result.recipients.iter().map(|r| &r.status)),
            Answer::Failed(_) => self.stats.job_failed(),
        }
        if let Answer::Done(result) = &answer
            && crate::metrics::enabled()
        {
            // The scheduler's destination (an MX site with
            // group_by_mx_site), else the plan the worker made, else
            // (answered before delivery) the keys it would have.
            let computed;
            let first = match (ticket.shaping.get(), ticket.plan.get()) {
                (Some(key), _) => Some(key.name.as_str()),
                (None, Some(plan)) => plan.keys().next().map(|key| key.as_str()),
                (None, None) => {
                    computed = Plan::keys_of(&ticket.job, self.deliverer().settings());
                    computed.first().map(|key| key.as_str())
                }
            };
            let destination = first.unwrap_or("none");
            let transport = match ticket.job.transport {
                TransportKind::Smtp => "smtp",
                TransportKind::Lmtp => "lmtp",
            };
            let latency = ticket.received.elapsed();
            crate::metrics::record_answer(destination, transport, &result.recipients, latency);
        }
        ticket.report.report(answer);
    }

    /// Answers a job that has not started with every recipient deferred
    /// (shutdown).
    fn defer(&self, ticket: &Ticket) -> bool {
        self.cut(ticket, None, SHUTDOWN_DIAGNOSTIC)
    }

    /// Answers a job that has not started with every recipient deferred
    /// with `dsn` and `diagnostic` (its destination is dead).
    fn defer_suspended(&self, ticket: &Ticket, suspension: &shaping::Suspension) -> bool {
        if !ticket.claim() {
            return false;
        }
        let json = self.deliverer().settings().log_format == LogFormat::Json;
        let delays = Delays::of(ticket, None);
        let dsn = StatusCode::parse(&suspension.dsn).unwrap_or(SHUTDOWN_DSN);
        let mut result = deferred_result(&ticket.job, &suspension.diagnostic);
        for recipient in &mut result.recipients {
            recipient.dsn = dsn.to_string();
            log_deferral_with(ticket, &delays, json, recipient, dsn);
        }
        self.answer_claimed(ticket, Answer::Done(result));
        true
    }

    /// Answers a ticket now, unless someone else already did: every
    /// recipient deferred 4.3.0 `diagnostic`, except, for a job being
    /// delivered (`running`), those already settled (and logged), which
    /// keep their outcome (see [`Progress::cut`]). Each deferred recipient
    /// is logged.
    fn cut(&self, ticket: &Ticket, running: Option<&Running>, diagnostic: &str) -> bool {
        if !ticket.claim() {
            return false;
        }
        self.answer_cut_claimed(ticket, running, diagnostic);
        true
    }

    /// [`Shared::cut`] of a ticket the caller has claimed.
    fn answer_cut_claimed(&self, ticket: &Ticket, running: Option<&Running>, diagnostic: &str) {
        let json = self.deliverer().settings().log_format == LogFormat::Json;
        let delays = Delays::of(ticket, running.map(|r| r.started));
        let log = |r: &RecipientResult| log_deferral(ticket, &delays, json, r);
        let recipients = match running {
            Some(running) => running.progress.cut(
                ticket.job.recipients.iter().map(|r| r.address.as_str()),
                diagnostic,
                log,
            ),
            None => {
                let result = deferred_result(&ticket.job, diagnostic);
                result.recipients.iter().for_each(log);
                result.recipients
            }
        };
        let result = JobResult {
            id: ticket.job.id.clone(),
            recipients,
            log: Some(vec![format!("deferred: {diagnostic}")]),
        };
        self.answer_claimed(ticket, Answer::Done(result));
    }
}

impl Shared {
    /// Carries out the scheduler's moves: admitted jobs go to the
    /// workers' channel, jobs of a dead destination are deferred.
    fn carry_out(&self, tx: &Sender<Arc<Ticket>>, moves: shaping::Moves<Arc<Ticket>>) {
        let capacity = self.size.queue_capacity;
        // Jobs set aside leave the queue's count; jobs back from aside
        // (before they are admitted or deferred below) join it again.
        for _ in 0..moves.unparked {
            self.room.take_now();
        }
        for _ in 0..moves.parked {
            self.room.give_back(capacity);
        }
        for ticket in moves.admitted {
            if let Err(e) = tx.try_send(ticket) {
                // Not reached: the channel has room for every job that
                // took room in the queue.
                self.room.give_back(capacity);
                let ticket = e.into_inner();
                log::error!("job {}: the worker queue is full; deferred", ticket.id());
                self.defer(&ticket);
            }
        }
        for (ticket, why) in moves.rejected {
            self.room.give_back(capacity);
            self.defer_suspended(&ticket, &why);
        }
    }

    /// Gives back an admitted job's place in its destination without
    /// feedback (it was not delivered: shutdown, or its worker panicked).
    fn release_shaped(&self, ticket: &Ticket) {
        if let (Some(key), Some(shaper)) = (ticket.shaping.get(), self.shaper.get()) {
            shaper.done(key, &Verdict::Nothing, Tally::default());
        }
    }

    /// Feeds a finished job back to the scheduler. Returns the ticket when
    /// it went back to its destination's queue to be tried again (a
    /// throttling reply was all it got): it is not answered now.
    fn finish_shaped(&self, ticket: &Arc<Ticket>, answer: &Answer) -> bool {
        let (Some(key), Some(shaper)) = (ticket.shaping.get(), self.shaper.get()) else {
            return false;
        };
        let deliverer = self.deliverer();
        let settings = &deliverer.settings().shaping;
        let (verdict, tally) = match answer {
            Answer::Done(result) => (
                shaping::verdict(&settings.throttle_rules, &result.recipients),
                tally(&result.recipients),
            ),
            Answer::Failed(_) => (Verdict::Nothing, Tally::default()),
        };
        let again = matches!(verdict, Verdict::Throttled { only: true, .. })
            && !settings.retry_time.is_zero()
            && ticket.received.elapsed() < settings.retry_time
            && !matches!(ticket.job.message, MessageRef::Fd { .. })
            && !self.stopping.load(Ordering::SeqCst);
        drop(deliverer);
        shaper.done(key, &verdict, if again { Tally::default() } else { tally });
        if !again {
            return false;
        }
        self.room.take_now();
        match shaper.requeue(key, Arc::clone(ticket)) {
            Ok(()) => {
                log::info!(
                    "job {}: only throttling replies; queued again for {}",
                    ticket.id(),
                    key.name
                );
                true
            }
            Err(_) => {
                self.room.give_back(self.size.queue_capacity);
                false
            }
        }
    }
}

/// Recipients by outcome.
fn tally(recipients: &[RecipientResult]) -> Tally {
    let mut tally = Tally::default();
    for recipient in recipients {
        match recipient.status {
            Status::Sent => tally.sent += 1,
            Status::Deferred => tally.deferred += 1,
            Status::Bounced => tally.bounced += 1,
        }
    }
    tally
}

/// A job being delivered: its ticket, when its worker took it, and its
/// progress (shared with the worker).
#[derive(Clone)]
struct Running {
    ticket: Arc<Ticket>,
    started: Instant,
    progress: Arc<Progress>,
}

/// The times of a deferral's log line: a = waiting for a worker, b =
/// delivering, and the delay since arrival.
struct Delays {
    a: Duration,
    b: Duration,
    delay: Duration,
}

impl Delays {
    fn of(ticket: &Ticket, started: Option<Instant>) -> Self {
        let now = Instant::now();
        let begun = started.unwrap_or(now);
        Self {
            a: begun.saturating_duration_since(ticket.received),
            b: now.saturating_duration_since(begun),
            delay: dispatch::arrival(&ticket.job)
                .and_then(|arrival| std::time::SystemTime::now().duration_since(arrival).ok())
                .unwrap_or_else(|| now.saturating_duration_since(ticket.received)),
        }
    }
}

/// The log line of a recipient deferred at shutdown or after a panic, in
/// the shape of the delivery lines (`ID: to=<...>, relay=none, delay=...,
/// delays=a/b/0/0, dsn=4.3.0, status=deferred (mail system shutting
/// down)`, or JSON with `[log] format = "json"`).
fn log_deferral(ticket: &Ticket, delays: &Delays, json: bool, rcpt: &RecipientResult) {
    log_deferral_with(ticket, delays, json, rcpt, SHUTDOWN_DSN);
}

/// [`log_deferral`] with another status code.
fn log_deferral_with(
    ticket: &Ticket,
    delays: &Delays,
    json: bool,
    rcpt: &RecipientResult,
    dsn: StatusCode,
) {
    let job = &ticket.job;
    let Delays { a, b, delay } = *delays;
    let line = crate::recipient_log::Line {
        service: match job.transport {
            TransportKind::Smtp => Service::Smtp,
            TransportKind::Lmtp => Service::Lmtp,
        },
        id: &job.id,
        address: &rcpt.address,
        relay: None,
        delay,
        delays: [a, b, Duration::ZERO, Duration::ZERO],
        dsn,
        status: Status::Deferred,
        diagnostic: &rcpt.diagnostic,
        tls: None,
        tls_policy: None,
        source: None,
        late: false,
    };
    crate::recipient_log::write(&line, json);
}

/// The result of a job cut short by shutdown: every recipient deferred.
pub fn shutdown_result(job: &Job) -> JobResult {
    deferred_result(job, SHUTDOWN_DIAGNOSTIC)
}

/// Every recipient deferred, 4.3.0 `diagnostic`.
fn deferred_result(job: &Job, diagnostic: &str) -> JobResult {
    JobResult {
        id: job.id.clone(),
        recipients: job
            .recipients
            .iter()
            .map(|r| RecipientResult {
                address: r.address.clone(),
                status: Status::Deferred,
                dsn: SHUTDOWN_DSN.to_string(),
                relay: None,
                diagnostic: diagnostic.into(),
                tls: None,
                tls_policy: None,
                success_dsn: None,
            })
            .collect(),
        log: Some(vec![format!("deferred: {diagnostic}")]),
    }
}

/// The running pool. Worker threads live until the process exits; one
/// that panics is replaced.
pub struct Pool {
    tx: Sender<Arc<Ticket>>,
    rx: Receiver<Arc<Ticket>>,
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts `size.workers` threads. Fails when a thread cannot be created.
    pub fn start(size: PoolSize, deliverer: Deliverer, stats: Arc<Stats>) -> io::Result<Pool> {
        // Room for every queued job plus those a worker puts back after a
        // throttling reply (at most one per worker, see `QueueRoom::take_now`).
        let (tx, rx) = bounded::<Arc<Ticket>>(
            size.queue_capacity
                .max(1)
                .saturating_add(size.workers.saturating_mul(2)),
        );
        let shared = Arc::new(Shared {
            rx: rx.clone(),
            requeue: tx.clone(),
            alive: AtomicUsize::new(0),
            spawned: AtomicU64::new(0),
            room: QueueRoom::default(),
            deliverer: RwLock::new(Arc::new(deliverer)),
            running: Mutex::new(HashMap::default()),
            next_slot: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stats,
            size,
            shaper: OnceLock::new(),
        });
        let shaping = shared.deliverer().settings().shaping.clone();
        let mover = {
            let shared = Arc::downgrade(&shared);
            let tx = tx.clone();
            move |moves: shaping::Moves<Arc<Ticket>>| {
                if let Some(shared) = shared.upgrade() {
                    shared.carry_out(&tx, moves);
                }
            }
        };
        let shaper = Shaper::start(shaping, Box::new(mover))?;
        let _ = shared.shaper.set(shaper);
        for _ in 0..size.workers.max(1) {
            shared.alive.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = spawn_worker(&shared) {
                shared.alive.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(Pool { tx, rx, shared })
    }

    /// Starts workers until `[daemon] workers` are alive again (a worker
    /// that panicked and could not start its replacement). Cheap when
    /// nothing is missing: the daemon calls it on every tick.
    pub fn replenish(&self) {
        let want = self.shared.size.workers.max(1);
        while !self.shared.stopping.load(Ordering::SeqCst)
            && self.shared.alive.load(Ordering::SeqCst) < want
        {
            self.shared.alive.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = spawn_worker(&self.shared) {
                self.shared.alive.fetch_sub(1, Ordering::SeqCst);
                log::error!("cannot start a worker to replace one that ended: {e}");
                return;
            }
            log::warn!("started a worker to replace one that ended");
        }
    }

    /// A handle for connections to queue jobs with.
    pub fn submitter(&self) -> Submitter {
        Submitter {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// New jobs use this deliverer; running ones finish with theirs. The
    /// scheduler takes the new `[shaping]` limits at once.
    pub fn set_deliverer(&self, deliverer: Deliverer) {
        if let Some(shaper) = self.shared.shaper.get() {
            shaper.set_settings(deliverer.settings().shaping.clone());
        }
        let new = Arc::new(deliverer);
        match self.shared.deliverer.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    pub fn deliverer(&self) -> Arc<Deliverer> {
        self.shared.deliverer()
    }

    /// Stops starting jobs: from now on every queued or newly submitted
    /// job is deferred at once. Returns how many were waiting.
    pub fn begin_shutdown(&self) -> usize {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.drain_queue()
    }

    /// Defers the jobs waiting in the queue and in the scheduler; returns
    /// how many.
    pub fn drain_queue(&self) -> usize {
        let mut count = 0;
        if let Some(shaper) = self.shared.shaper.get() {
            let (waiting, parked) = shaper.drain();
            for ticket in waiting {
                self.shared.room.give_back(self.shared.size.queue_capacity);
                if self.shared.defer(&ticket) {
                    count += 1;
                }
            }
            for ticket in parked {
                if self.shared.defer(&ticket) {
                    count += 1;
                }
            }
        }
        while let Ok(ticket) = self.rx.try_recv() {
            self.shared.room.give_back(self.shared.size.queue_capacity);
            self.shared.release_shaped(&ticket);
            if self.shared.defer(&ticket) {
                count += 1;
            }
        }
        count
    }

    /// Jobs being delivered right now.
    pub fn running(&self) -> usize {
        self.shared.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Answers every job still being delivered: its recipients not yet
    /// settled are deferred (see [`Progress::cut`]); returns how many
    /// jobs. Their workers finish in the background, send no message body
    /// any more, and their late results are only logged.
    pub fn defer_running(&self) -> usize {
        let running: Vec<Running> = match self.shared.running.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        running
            .iter()
            .filter(|r| self.shared.cut(&r.ticket, Some(r), SHUTDOWN_DIAGNOSTIC))
            .count()
    }
}

/// A connection's handle on the pool.
#[derive(Clone)]
pub struct Submitter {
    tx: Sender<Arc<Ticket>>,
    shared: Arc<Shared>,
}

impl Submitter {
    /// Queues a job. Blocks while the queue is full (backpressure); during
    /// shutdown the job is deferred at once instead.
    pub fn submit(&self, ticket: Arc<Ticket>) {
        self.shared.stats.job_accepted();
        if self.stopping() {
            self.shared.defer(&ticket);
            return;
        }
        let deliverer = self.shared.deliverer();
        // Only the plan's keys are needed now (cache demand, the
        // scheduler's destination), computed once; the worker makes the
        // plan, once, and it stays with the ticket. (A plan made here
        // would be kept, and freed, across threads: measured 5-7 MB more
        // peak RSS in scenario 1 for 1,000 queued jobs.)
        let shaped = deliverer.settings().shaping.enabled && self.shared.shaper.get().is_some();
        let demand = deliverer.cache().filter(|cache| cache.counts_demand());
        let keys = if shaped || demand.is_some() {
            Plan::keys_of(&ticket.job, deliverer.settings())
        } else {
            Vec::new()
        };
        if let Some(cache) = demand
            && let Ok(mut guards) = ticket.queued_demand.lock()
        {
            for key in &keys {
                guards.push(cache.demand(key));
            }
        }
        let shaping = shaped.then(|| shaping_key(&ticket.job, &deliverer, keys.first()));
        drop(deliverer);
        let capacity = self.shared.size.queue_capacity.max(1);
        if !self.shared.room.take(capacity, &self.shared.stopping) {
            self.shared.defer(&ticket);
            return;
        }
        if let (Some(key), Some(shaper)) = (shaping, self.shared.shaper.get()) {
            let key = ticket.shaping.get_or_init(|| key);
            match shaper.submit(key, Arc::clone(&ticket), &self.shared.stopping) {
                Ok(()) => {}
                Err(Unqueued::Suspended(ticket, why)) => {
                    self.shared.room.give_back(capacity);
                    self.shared.defer_suspended(&ticket, &why);
                }
                Err(Unqueued::Stopping(ticket)) => {
                    self.shared.room.give_back(capacity);
                    self.shared.defer(&ticket);
                }
            }
            return;
        }
        let ticket = match self.tx.try_send(ticket) {
            Ok(()) => return,
            Err(TrySendError::Full(ticket)) => ticket,
            Err(TrySendError::Disconnected(ticket)) => {
                self.shared.room.give_back(self.shared.size.queue_capacity);
                self.shared.defer(&ticket);
                return;
            }
        };
        // Not reached while every sender takes room first; kept as a
        // safety net.
        log::debug!("job {}: queue full; waiting", ticket.id());
        if let Err(e) = self.tx.send(ticket) {
            self.shared.room.give_back(self.shared.size.queue_capacity);
            self.shared.defer(&e.0);
        }
    }

    /// Answers a job now, if nobody did: every recipient not settled yet
    /// is deferred (4.3.0 `diagnostic`, logged) and its delivery cancelled
    /// before it starts: a job still waiting is never delivered; a running
    /// one sends no message body from now on (see [`Progress::cut`]).
    /// While a message body of the running job may be on its way to a
    /// server (its end-of-data reply awaited), nothing is done and false
    /// returned, unless `force` (the answer then says the message may be
    /// delivered twice). True when the job is answered (now or before).
    pub fn cancel(&self, ticket: &Ticket, diagnostic: &str, force: bool) -> bool {
        // Under the running lock: a worker registers a job it took under
        // the same lock and then looks at `answered`, so a job claimed
        // here before it is registered is never started.
        let running = match self.shared.running.lock() {
            Ok(running) => running,
            Err(poisoned) => poisoned.into_inner(),
        };
        let found = running
            .values()
            .find(|r| std::ptr::eq(Arc::as_ptr(&r.ticket), ticket))
            .cloned();
        if ticket.answered() {
            return true;
        }
        match found {
            None => {
                if !ticket.claim() {
                    return true;
                }
                drop(running);
                self.shared.answer_cut_claimed(ticket, None, diagnostic);
                true
            }
            Some(found) => {
                drop(running);
                if !force && found.progress.body_pending() {
                    return false;
                }
                self.shared.cut(ticket, Some(&found), diagnostic);
                true
            }
        }
    }

    /// Free places in the job queue now (the Redis feed reads no more
    /// jobs than this).
    pub fn free_slots(&self) -> usize {
        let capacity = self.shared.size.queue_capacity.max(1);
        capacity.saturating_sub(*self.shared.room.lock())
    }

    /// The daemon is shutting down.
    pub fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Counts a refused line (it never became a job).
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Pool size and queue fill, for `mailhop status`.
    pub fn shape(&self) -> PoolShape {
        let size = self.shared.size;
        PoolShape {
            workers: u64::try_from(self.shared.alive.load(Ordering::SeqCst)).unwrap_or(u64::MAX),
            queue_depth: u64::try_from(self.tx.len()).unwrap_or(u64::MAX),
            queue_capacity: u64::try_from(size.queue_capacity).unwrap_or(u64::MAX),
        }
    }

    pub fn deliverer(&self) -> Arc<Deliverer> {
        self.shared.deliverer()
    }

    /// The scheduler's per-destination state, for `mailhop status`.
    pub fn shaping(&self) -> Option<Arc<dyn ShapingReport>> {
        let shaper = self.shared.shaper.get()?;
        Some(Arc::clone(shaper) as Arc<dyn ShapingReport>)
    }

    /// Destination limits shared with other nodes (the Redis feed's
    /// cluster-wide limits), asked by the scheduler on top of its own;
    /// false when there is no scheduler to ask them.
    pub fn share_limits(&self, shared: Arc<dyn shaping::SharedLimits>) -> bool {
        self.shared
            .shaper
            .get()
            .map(|shaper| shaper.set_shared(shared))
            .is_some()
    }

    /// Destinations paused now.
    pub fn paused_destinations(&self) -> u64 {
        self.shared.shaper.get().map_or(0, |shaper| shaper.paused())
    }
}

/// A job's destination for the scheduler: its transport and its first
/// next hop.
/// With `[shaping] group_by_mx_site`, a domain whose MX hosts are known
/// is shaped as its MX site.
fn shaping_key(job: &CheckedJob, deliverer: &Deliverer, first: Option<&NexthopKey>) -> Key {
    let lmtp = job.transport == TransportKind::Lmtp;
    let Some(first) = first else {
        return Key::new(lmtp, "");
    };
    let site = deliverer
        .settings()
        .shaping
        .group_by_mx_site
        .then(|| deliverer.sites()?.site_of(first.bare()))
        .flatten();
    Key::new(lmtp, site.unwrap_or_else(|| first.as_str().to_string()))
}

/// A job a worker has taken from the queue, with its slot in `running`
/// and, when it was taken as the follower of another job, its message.
struct Taken {
    ticket: Arc<Ticket>,
    slot: u64,
    progress: Arc<Progress>,
    opened: Option<Opened>,
}

/// A message file opened for the submitting peer (or passed by it), and
/// its content: in memory, or read through the open file for each pass.
struct Opened {
    message: Message,
}

impl Shared {
    /// Records a taken job as running (the shutdown defers it if it has
    /// not finished in time); its slot and progress.
    fn register(&self, ticket: &Arc<Ticket>) -> (u64, Arc<Progress>) {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let progress = Progress::observed(ticket.job.recipients.len(), ticket.report.observer());
        let mut running = match self.running.lock() {
            Ok(running) => running,
            Err(poisoned) => poisoned.into_inner(),
        };
        running.insert(
            slot,
            Running {
                ticket: Arc::clone(ticket),
                started: Instant::now(),
                progress: Arc::clone(&progress),
            },
        );
        (slot, progress)
    }

    fn unregister(&self, slot: u64) {
        let mut running = match self.running.lock() {
            Ok(running) => running,
            Err(poisoned) => poisoned.into_inner(),
        };
        running.remove(&slot);
    }
}

/// Starts one worker thread; the caller has counted it in `alive`.
fn spawn_worker(shared: &Arc<Shared>) -> io::Result<()> {
    let n = shared.spawned.fetch_add(1, Ordering::Relaxed);
    let for_thread = Arc::clone(shared);
    thread::Builder::new()
        .name(format!("worker-{n}"))
        .stack_size(shared.size.stack_size)
        .spawn(move || worker(&for_thread))
        .map(drop)
}

/// What a worker holds while it runs, for the case it panics: the jobs it
/// took (the current one and a follower) and whether it counts as busy.
/// Dropped while panicking, it answers those jobs (every recipient
/// deferred, 4.3.0), logs their ids and starts the thread's replacement.
struct WorkerGuard<'a> {
    shared: &'a Arc<Shared>,
    held: Vec<(Arc<Ticket>, u64)>,
    busy: bool,
}

impl WorkerGuard<'_> {
    fn hold(&mut self, ticket: &Arc<Ticket>, slot: u64) {
        self.held.push((Arc::clone(ticket), slot));
    }

    fn release(&mut self, slot: u64) {
        self.held.retain(|(_, s)| *s != slot);
    }

    fn set_busy(&mut self, busy: bool) {
        if busy != self.busy {
            self.busy = busy;
            if busy {
                self.shared.stats.worker_busy();
            } else {
                self.shared.stats.worker_idle();
            }
        }
    }
}

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        let shared = self.shared;
        if !thread::panicking() {
            shared.alive.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.set_busy(false);
        // The replacement first (it takes over this thread's place in
        // `alive`), so that a client seeing the answer sees a whole pool.
        if shared.stopping.load(Ordering::SeqCst) {
            shared.alive.fetch_sub(1, Ordering::SeqCst);
        } else if let Err(e) = spawn_worker(shared) {
            shared.alive.fetch_sub(1, Ordering::SeqCst);
            log::error!("cannot replace a worker that panicked: {e}; retrying");
        }
        for (ticket, slot) in self.held.drain(..) {
            let running = shared
                .running
                .lock()
                .ok()
                .and_then(|running| running.get(&slot).cloned());
            shared.unregister(slot);
            shared.release_shaped(&ticket);
            if shared.cut(&ticket, running.as_ref(), PANIC_DIAGNOSTIC) {
                log::error!(
                    "job {}: the worker panicked; every recipient deferred ({SHUTDOWN_DSN} {PANIC_DIAGNOSTIC}); worker replaced",
                    ticket.id()
                );
            }
        }
    }
}

/// Test-only fault injection, compiled into debug builds only (release
/// builds, the ones deployed, cannot reach it): a worker panics on a job
/// whose id starts with `MAILHOP_DEBUG_PANIC_JOB`, so tests can check what
/// a panicking worker does.
#[cfg(debug_assertions)]
fn injected_fault(ticket: &Ticket) {
    static PREFIX: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        std::env::var("MAILHOP_DEBUG_PANIC_JOB")
            .ok()
            .filter(|p| !p.is_empty())
    });
    if let Some(prefix) = prefix
        && ticket.id().starts_with(prefix.as_str())
    {
        // invariant: reached only in debug builds (cfg(debug_assertions))
        // and only when the operator's environment names a job-id prefix:
        // neither a job nor the network can make it fire in a release build.
        #[allow(clippy::panic)]
        {
            // invariant: debug builds only, and only for the operator's own prefix (above).
            panic!(
                "injected panic (MAILHOP_DEBUG_PANIC_JOB) for job {}",
                ticket.id()
            );
        }
    }
}

#[cfg(not(debug_assertions))]
fn injected_fault(_: &Ticket) {}

fn worker(shared: &Arc<Shared>) {
    let rx = &shared.rx;
    let mut guard = WorkerGuard {
        shared,
        held: Vec::new(),
        busy: false,
    };
    let capacity = shared.size.queue_capacity;
    let mut next: Option<Taken> = None;
    // This worker's hand-over state (see crate::chain), passed to each job.
    let chain = Chain::default();
    loop {
        let current = match next.take() {
            Some(taken) => taken,
            None => {
                chain.clear();
                let Ok(ticket) = rx.recv() else { break };
                shared.room.give_back(capacity);
                let (slot, progress) = shared.register(&ticket);
                guard.hold(&ticket, slot);
                Taken {
                    slot,
                    ticket,
                    progress,
                    opened: None,
                }
            }
        };
        let Taken {
            ticket,
            slot,
            progress,
            opened,
        } = current;
        ticket.drop_queued_demand();
        chain.keep_only_for(ticket.serial());
        if ticket.answered() {
            // Cancelled while it waited (see Submitter::cancel): never started.
            shared.unregister(slot);
            guard.release(slot);
            shared.release_shaped(&ticket);
            continue;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            shared.unregister(slot);
            guard.release(slot);
            shared.release_shaped(&ticket);
            shared.defer(&ticket);
            continue;
        }
        guard.set_busy(true);
        let deliverer = shared.deliverer();
        // With more jobs waiting and every worker busy, take the next one
        // now: when it goes to the same next hop, this job's session can
        // start its transaction behind this message (see crate::chain).
        // One for elsewhere goes back to the queue (once; a job sent back
        // before stays with us). With a worker idle, it is left to that
        // worker: held here it would wait for this job to finish.
        // Only when this job's session may be kept: a session that ends
        // with QUIT has nothing to hand over.
        let may_keep = |nexthop: &NexthopKey| match ticket.job.cache {
            Some(hints) => hints.store && deliverer.cache().is_some(),
            None => deliverer
                .cache()
                .is_some_and(|cache| cache.may_store(nexthop)),
        };
        // LMTP jobs are never chained (crate::chain): nothing to prepare.
        // Shaped, the follower comes from the job's destination queue
        // (jobs waiting there hold no worker: they wait for the window).
        if deliverer.config().cache.chain_jobs
            && ticket.job.transport == TransportKind::Smtp
            && ticket.plan(&deliverer).explicit_key().is_some_and(may_keep)
            && let Some(follower) = next_follower(shared, &ticket, &deliverer)
        {
            shared.room.give_back(capacity);
            let follower_plan = follower.plan(&deliverer);
            let opened = crate::plan::same_route(ticket.plan(&deliverer), follower_plan)
                .then(|| open_message(&follower).ok())
                .flatten();
            if let Some(opened) = &opened
                && let Some(offer) =
                    dispatch::follower(&follower.job, follower_plan, &opened.message)
            {
                chain.offer(follower.serial(), offer);
            }
            let (follower_slot, follower_progress) = shared.register(&follower);
            guard.hold(&follower, follower_slot);
            next = Some(Taken {
                slot: follower_slot,
                ticket: follower,
                progress: follower_progress,
                opened,
            });
        }
        let job_lines = crate::logging::JobLines::start();
        let entered = crate::progress::enter(progress);
        injected_fault(&ticket);
        let answer = run(&deliverer, &ticket, opened, &chain);
        drop(entered);
        drop(job_lines);
        chain.job_done(ticket.serial());
        drop(deliverer);
        shared.unregister(slot);
        guard.release(slot);
        guard.set_busy(false);
        if shared.finish_shaped(&ticket, &answer) {
            continue;
        }
        if !shared.answer(&ticket, answer) {
            log::info!(
                "job {}: delivery finished after the job was answered at shutdown; its late results are information only",
                ticket.id()
            );
        }
    }
}

/// A job to follow `current` on its session: shaped, the next one waiting
/// in its destination's queue (for the same route; another goes back);
/// else, with every worker busy, the next one in the channel (see
/// [`take_follower`]).
fn next_follower(
    shared: &Shared,
    current: &Arc<Ticket>,
    deliverer: &Deliverer,
) -> Option<Arc<Ticket>> {
    if let (Some(key), Some(shaper)) = (current.shaping.get(), shared.shaper.get())
        && let Some(follower) = shaper.take_follower(key)
    {
        if crate::plan::same_route(current.plan(deliverer), follower.plan(deliverer)) {
            return Some(follower);
        }
        shaper.untake(key, follower);
        return None;
    }
    // Admitted (or unshaped) jobs wait in the channel.
    if shared.stats.busy_workers() >= u64::try_from(shared.size.workers).unwrap_or(u64::MAX) {
        return take_follower(&shared.rx, &shared.requeue, current, deliverer);
    }
    None
}

/// The next job in the queue, if one waits and goes the same way as
/// `current`; a job for elsewhere is put back at the end of the queue,
/// unless it was put back before (then it is returned: it runs next).
fn take_follower(
    rx: &Receiver<Arc<Ticket>>,
    requeue: &Sender<Arc<Ticket>>,
    current: &Ticket,
    deliverer: &Deliverer,
) -> Option<Arc<Ticket>> {
    let follower = rx.try_recv().ok()?;
    if crate::plan::same_route(current.plan(deliverer), follower.plan(deliverer))
        || follower.requeued.swap(true, Ordering::SeqCst)
    {
        return Some(follower);
    }
    // Its place in the queue (and in the room count) is still free.
    match requeue.try_send(follower) {
        Ok(()) => None,
        Err(e) => Some(e.into_inner()),
    }
}

/// Opens and reads a job's message: a path on the submitting peer's
/// behalf, the descriptor it passed, or the inline data. Errs with the
/// job error (retryable when the daemon ran out of descriptors).
fn open_message(ticket: &Ticket) -> Result<Opened, JobError> {
    let id = || Some(ticket.job.id.clone());
    let (file, len, name): (File, u64, &str) = match &ticket.job.message {
        MessageRef::Data { data } => {
            return Ok(Opened {
                message: Message::Inline(data.clone().into_bytes()),
            });
        }
        MessageRef::Path { path } => {
            let (file, len) =
                open_for_peer(Path::new(path), &ticket.peer).map_err(|e| e.into_job_error(id()))?;
            (file, len, path.as_str())
        }
        MessageRef::Fd { .. } => {
            // Taken only once it is read: a failed early open (a chained
            // follower) leaves it for the job's own, which reports why.
            let mut passed = match ticket.message_fd.lock() {
                Ok(fd) => fd,
                Err(poisoned) => poisoned.into_inner(),
            };
            let Some(file) = passed.as_ref() else {
                return Err(JobError::invalid(
                    id(),
                    "invalid job: message {\"fd\":true} but no file descriptor came with the job line",
                ));
            };
            let len = check_passed_file(file).map_err(|e| e.into_job_error(id()))?;
            let name = "(passed file descriptor)";
            let message = Message::from_open_file(file, len, PathBuf::from(name)).map_err(|e| {
                OpenError::from_io(format!("cannot read message {name}"), &e).into_job_error(id())
            })?;
            passed.take();
            return Ok(Opened { message });
        }
    };
    let message = Message::from_open_file(&file, len, PathBuf::from(name)).map_err(|e| {
        OpenError::from_io(format!("cannot read message {name}"), &e).into_job_error(id())
    })?;
    Ok(Opened { message })
}

/// Runs one job: the message is opened here (unless `opened` already
/// holds it), on the peer's behalf, and the delivery reads it through
/// that open file.
fn run(deliverer: &Deliverer, ticket: &Ticket, opened: Option<Opened>, chain: &Chain) -> Answer {
    let job = &ticket.job;
    let opened = match opened.map_or_else(|| open_message(ticket), Ok) {
        Ok(opened) => opened,
        Err(error) => return Answer::Failed(error),
    };
    let answer = match dispatch::execute_with(
        deliverer,
        job,
        ticket.plan(deliverer),
        &opened.message,
        true,
        ticket.received,
        Some(chain),
    ) {
        Ok(result) => Answer::Done(result),
        Err(error) => Answer::Failed(error),
    };
    opened.message.recycle();
    answer
}

/// Why a message could not be opened; `retryable` when the daemon ran out
/// of something (descriptors, memory) rather than the job being wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenError {
    pub text: String,
    pub kind: JobErrorKind,
}

impl OpenError {
    /// The message cannot be read (`cannot read message ...`).
    fn unreadable(text: String) -> Self {
        Self {
            text,
            kind: JobErrorKind::UnreadableMessage,
        }
    }

    fn from_errno(what: String, errno: nix::errno::Errno) -> Self {
        use nix::errno::Errno;
        let kind = if matches!(errno, Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM) {
            JobErrorKind::Temporary
        } else {
            JobErrorKind::UnreadableMessage
        };
        Self {
            text: format!("{what}: {}", errno.desc()),
            kind,
        }
    }

    fn from_io(what: String, e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Self::from_errno(what, nix::errno::Errno::from_raw(code)),
            None => Self::unreadable(format!("{what}: {}", strerror(e))),
        }
    }

    /// Out of descriptors or memory: try again later.
    pub fn retryable(&self) -> bool {
        self.kind == JobErrorKind::Temporary
    }

    fn into_job_error(self, id: Option<String>) -> JobError {
        match self.kind {
            JobErrorKind::Temporary => {
                JobError::temporary(id, format!("{}; try again later", self.text))
            }
            kind => JobError {
                id,
                error: self.text,
                kind,
                retryable: false,
            },
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a file that is not a regular file is, for the error.
fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "not a file",
    }
}

/// A descriptor passed as the message: a regular file open for reading.
/// Its size.
fn check_passed_file(file: &File) -> Result<u64, OpenError> {
    let what = || "cannot read message (passed file descriptor)".to_string();
    let meta = file
        .metadata()
        .map_err(|e| OpenError::from_io(what(), &e))?;
    if !meta.is_file() {
        return Err(OpenError::unreadable(format!(
            "{}: not a regular file ({})",
            what(),
            file_kind(meta.mode())
        )));
    }
    let flags = nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| OpenError::from_errno(what(), e))?;
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        return Err(OpenError::unreadable(format!(
            "{}: not open for reading",
            what()
        )));
    }
    Ok(meta.len())
}

/// Most symbolic links followed while resolving a message path (Linux's
/// MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// The parts of a path to look up one by one ("." dropped, ".." kept).
fn path_parts(path: &Path) -> std::collections::VecDeque<std::ffi::OsString> {
    use std::path::Component;
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Opens a job's message file for a peer, without using the daemon's
/// rights before the peer's own are established: the path is resolved one
/// component at a time from `/` (symbolic links in directories are
/// followed by hand, at most [`MAX_SYMLINKS`]), the peer must be able to
/// search every directory it looks in (checked on the open directory,
/// with the peer's real groups) and read the file, which must be a
/// regular file and not a symbolic link; only then is it opened
/// (O_NONBLOCK|O_NOCTTY|O_NOFOLLOW), and its fstat must match what was
/// checked. A FIFO, a device or a directory is refused without being
/// opened. Root and the daemon's own uid skip the permission checks, not
/// the others. Returns the file and its size.
pub fn open_for_peer(path: &Path, peer: &PeerIdentity) -> Result<(File, u64), OpenError> {
    use nix::errno::Errno;
    use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
    use nix::sys::stat::{Mode, fstat, fstatat};
    let name = path.display();
    let cannot = |e: Errno| OpenError::from_errno(format!("cannot read message {name}"), e);
    let denied = || OpenError {
        kind: JobErrorKind::PermissionDenied,
        text: format!("permission denied: uid {} may not read {name}", peer.uid),
    };
    if !path.is_absolute() {
        return Err(OpenError {
            kind: JobErrorKind::InvalidJob,
            text: format!("invalid job: message path {name} is not absolute"),
        });
    }
    let file_flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC;
    if peer.privileged {
        // Root or the daemon's own user may name any file the daemon can
        // read: no per-directory checks, but still only a regular file,
        // never opened otherwise.
        let st = nix::sys::stat::lstat(path).map_err(cannot)?;
        return open_checked(path, &st, file_flags, None, &name.to_string());
    }
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = nix::fcntl::open("/", dir_flags, Mode::empty()).map_err(cannot)?;
    let mut dirs = vec![root];
    let mut parts = path_parts(path);
    let mut links = 0usize;
    while let Some(part) = parts.pop_front() {
        let Some(dir) = dirs.last() else {
            return Err(cannot(Errno::ENOENT));
        };
        if !peer.privileged {
            let st = fstat(dir).map_err(cannot)?;
            if !peer.may(st.st_uid, st.st_gid, st.st_mode, 1) {
                return Err(denied());
            }
        }
        if part == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let last = parts.is_empty();
        let st = fstatat(dir, part.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(cannot)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            if last {
                return Err(OpenError::unreadable(format!(
                    "cannot read message {name}: a symbolic link (not followed for a message file)"
                )));
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(cannot(Errno::ELOOP));
            }
            let target = readlinkat(dir, part.as_os_str()).map_err(cannot)?;
            let target = Path::new(&target);
            if target.is_absolute() {
                dirs.truncate(1);
            }
            let mut resolved = path_parts(target);
            resolved.extend(parts.drain(..));
            parts = resolved;
            continue;
        }
        if !last {
            if kind != libc::S_IFDIR {
                return Err(cannot(Errno::ENOTDIR));
            }
            let fd = openat(dir, part.as_os_str(), dir_flags, Mode::empty()).map_err(cannot)?;
            dirs.push(fd);
            continue;
        }
        if kind == libc::S_IFREG && !peer.may(st.st_uid, st.st_gid, st.st_mode, 4) {
            return Err(denied());
        }
        return open_checked(
            Path::new(part.as_os_str()),
            &st,
            file_flags,
            Some(dir),
            &name.to_string(),
        );
    }
    Err(OpenError::unreadable(format!(
        "cannot read message {name}: not a regular file (a directory)"
    )))
}

/// Opens `path` (relative to `dir`, or as it is) whose `lstat` was `st`:
/// only a regular file is opened, and it must still be the file that was
/// checked.
fn open_checked(
    path: &Path,
    st: &nix::sys::stat::FileStat,
    flags: nix::fcntl::OFlag,
    dir: Option<&std::os::fd::OwnedFd>,
    name: &str,
) -> Result<(File, u64), OpenError> {
    use nix::fcntl::openat;
    use nix::sys::stat::Mode;
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Err(OpenError::unreadable(format!(
            "cannot read message {name}: a symbolic link (not followed for a message file)"
        )));
    }
    if kind != libc::S_IFREG {
        return Err(OpenError::unreadable(format!(
            "cannot read message {name}: not a regular file ({})",
            file_kind(st.st_mode)
        )));
    }
    let fd = match dir {
        Some(dir) => openat(dir, path, flags, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    }
    .map_err(|e| OpenError::from_errno(format!("cannot read message {name}"), e))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| OpenError::from_io(format!("cannot read message {name}"), &e))?;
    if !meta.is_file() || meta.dev() != st.st_dev || meta.ino() != st.st_ino {
        return Err(OpenError::unreadable(format!(
            "cannot read message {name}: it changed while it was opened"
        )));
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
