//! The Redis Streams feed (`[feed]`, docs/scale-out.md): jobs read from
//! streams through a consumer group, run on the daemon's worker pool like
//! the socket's jobs, answered in the results stream.
//!
//! Owns three threads. The reader creates the groups when missing, reads
//! no more jobs (XREADGROUP) than the queue has free places and claims
//! those of dead nodes first (XAUTOCLAIM, idle longer than `claim_after`).
//! The refresher resets the idle time of the jobs this node holds (XCLAIM
//! ... JUSTID to itself, every third of `claim_after`). The writer writes, in order, each recipient's
//! outcome as it settles (a hash per job entry) and each finished job's
//! answer: XACK, then — only if the XACK took the entry, so that a retried
//! or a duplicate answer is never written twice — XADD to the results
//! stream and DEL of the progress hash, atomically in one Lua script. A
//! claimed job delivers only its recipients still open in that hash.
//!
//! Redis unreachable stops nothing: every thread reconnect with back-off
//! (see [`conn`]); answers wait in memory and are written when it is back.

pub mod conn;
pub mod limits;
pub mod retry;
pub mod slot;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Script, Value};

use crate::config::FeedConfig;
use crate::job::{Job, JobError, JobResult, MessageRef, RecipientResult};
use crate::pool::{Answer, PeerIdentity, Report, SHUTDOWN_DIAGNOSTIC, Submitter, Ticket};
use crate::progress::SettleObserver;
use crate::recipients::Status;

pub use conn::{Conn, FeedError};

/// How long a progress hash lives without its job finishing.
const PROGRESS_TTL_SECS: u64 = 7 * 86_400;
/// XREADGROUP's BLOCK: the reader looks at its other duties this often.
const READ_BLOCK_MS: u64 = 100;
/// Most entries one XREADGROUP asks for: replies of a few hundred
/// kilobytes, parsed without growing the reader's heap each time, and no
/// long stall of the server (the reader reads again at once for more).
const READ_CHUNK: usize = 200;
/// How often XAUTOCLAIM looks for a dead node's entries: an eighth of
/// `claim_after`, within 250 ms and 1 s (a dead node's jobs are taken over
/// within `claim_after` + 1 s; each call scans the pending list, live
/// entries included, and holds the server meanwhile).
pub fn claim_period(claim_after: Duration) -> Duration {
    (claim_after / 8).clamp(Duration::from_millis(250), Duration::from_secs(1))
}
/// Most entries one XAUTOCLAIM call asks for (Redis scans ten times as
/// many pending entries at most).
const CLAIM_CHUNK: usize = 100;
/// Most XAUTOCLAIM calls per stream and round (a million pending entries
/// scanned).
const CLAIM_CALLS: usize = 1000;
/// How long a worker waits, before its next message body, for its earlier
/// outcomes to be written (then that job is deferred before its body).
const SETTLE_WAIT: Duration = Duration::from_secs(10);
/// Most answers and outcomes the writer sends in one round trip.
const WRITE_BATCH: usize = 512;

/// KEYS: the job stream, the results stream, the progress hash, the
/// stream's retry due set and job hash ([`retry`]); ARGV: the group, the
/// entry id, the answer, the retry step ("" none, "retry" or "expired"),
/// the due time, the retried job's JSON or the expired result's JSON. 1
/// when answered now, 0 when the entry was not pending any more (answered
/// before): a retry is scheduled, or an expired result published, only
/// with the answer (as retry.rs's SCHEDULE_LUA: once per entry).
/// Answers a batch of one stream's finished jobs in one call. KEYS: the
/// stream, the results stream, the retry due set and job hash, then each
/// job's progress hash. ARGV: the group, then five per job: entry id,
/// answer, retry kind ("", "retry", "expired"), due time, extra (the job
/// to retry, or the expired result). Returns how many were answered.
const FINISH_LUA: &str = r"
local answered = 0
for i = 0, #KEYS - 5 do
  local a = 2 + i * 5
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[a]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'result', ARGV[a + 1])
    redis.call('DEL', KEYS[5 + i])
    if ARGV[a + 2] == 'retry' then
      if redis.call('HSETNX', KEYS[4], ARGV[a], ARGV[a + 4]) == 1 then
        redis.call('ZADD', KEYS[3], ARGV[a + 3], ARGV[a])
      end
    elseif ARGV[a + 2] == 'expired' then
      redis.call('XADD', KEYS[2], '*', 'result', ARGV[a + 4])
    end
    answered = answered + 1
  end
end
return answered
";

/// The reader moves due retries back to their streams this often.
const PROMOTE_PERIOD: Duration = Duration::from_secs(1);
/// Most retries moved per stream and round.
const PROMOTE_LIMIT: usize = 1000;

/// What the answer of a finished job brings along (`[feed] retries`).
#[derive(Debug, Default)]
enum Step {
    /// Nothing (retries off, nothing deferred, or not a result).
    #[default]
    None,
    /// The deferred recipients go back to the stream at `due`.
    Retry { due: u64, job: String },
    /// Past the lifetime: this result (the deferred recipients bounced)
    /// is published too.
    Expired(String),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The retry step of `job` answered by `result` (`[feed] retries`).
fn retry_step(cfg: &retry::RetryConfig, job: &Job, result: &JobResult) -> Step {
    if !cfg.retries {
        return Step::None;
    }
    match retry::plan(cfg, job, result, unix_now()) {
        Ok(retry::Plan::Done) => Step::None,
        Ok(retry::Plan::Retry { due, job: next }) => match serde_json::to_string(&next) {
            Ok(json) => {
                log::info!(
                    "{}: {} deferred recipients retried in {}s (feed)",
                    job.id,
                    next.recipients.len(),
                    due.saturating_sub(unix_now())
                );
                Step::Retry { due, job: json }
            }
            Err(e) => {
                log::warn!("feed: job {}: cannot retry: {e}", job.id);
                Step::None
            }
        },
        Ok(retry::Plan::Expired(bounced)) => {
            for line in bounced.log.iter().flatten() {
                log::info!("{line}");
            }
            match serde_json::to_string(&bounced) {
                Ok(json) => Step::Expired(json),
                Err(e) => {
                    log::warn!("feed: job {}: cannot publish its expiry: {e}", job.id);
                    Step::None
                }
            }
        }
        Err(e) => {
            log::warn!("feed: job {}: {e}", job.id);
            Step::None
        }
    }
}

/// The progress hash of a job entry: field = recipient position, value =
/// its result JSON.
pub fn progress_key(stream: &str, id: &str) -> String {
    format!("{stream}:progress:{id}")
}

/// The results stream of the job stream `stream`: `[feed] results_stream`
/// with each `$stream` replaced by the stream's name (`"$stream:results"`:
/// `{s7}:jobs` answers to `{s7}:jobs:results`, in the stream's cluster
/// slot); without `$stream`, the one results stream of all streams.
pub fn results_key(template: &str, stream: &str) -> String {
    template.replace("$stream", stream)
}

/// The hash counting claims, per consumer (`mailhop feed status`).
pub fn claims_key(group: &str) -> String {
    format!("mailhop:feed:{group}:claims")
}

/// The consumer name: `[feed] consumer`, else the host name.
pub fn consumer_name(config: &FeedConfig) -> String {
    if !config.consumer.is_empty() {
        return config.consumer.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| format!("mailhop-{}", std::process::id()))
}

enum Msg {
    Settled {
        key: Arc<str>,
        index: usize,
        json: Vec<u8>,
        /// Set once it is written.
        written: Arc<Written>,
    },
    Done {
        stream: Arc<str>,
        id: String,
        answer: Vec<u8>,
        step: Step,
    },
    /// Not answered (the daemon stops): left pending for another node.
    Leave { stream: Arc<str>, id: String },
}

/// Entries held by this node, by stream: refreshed until answered.
type InFlight = Arc<Mutex<HashMap<Arc<str>, HashSet<String>>>>;

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, HashSet<String>>> {
    match in_flight.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The running feed.
pub struct Feed {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    refresher: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    tx: Sender<Msg>,
}

impl Feed {
    /// Starts the reader and the writer.
    pub fn start(config: &FeedConfig, submitter: Submitter) -> Result<Feed, FeedError> {
        let consumer = consumer_name(config);
        let retries = retry::RetryConfig::from(config);
        retries.check().map_err(FeedError::new)?;
        if config.cluster {
            slot::check_streams(config).map_err(FeedError::new)?;
        }
        let read_timeout = Duration::from_millis(READ_BLOCK_MS) + Duration::from_secs(5);
        let reader_conn = Conn::new(&config.redis_url, config.cluster, "reader", read_timeout)?;
        let writer_conn = Conn::new(
            &config.redis_url,
            config.cluster,
            "writer",
            Duration::from_secs(5),
        )?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight: InFlight = Arc::default();
        let streams: Vec<Arc<str>> = config
            .streams
            .iter()
            .map(|s| Arc::from(s.as_str()))
            .collect();
        let reader = Reader {
            conn: reader_conn,
            cursors: HashMap::new(),
            streams,
            group: config.group.clone(),
            consumer: consumer.clone(),
            claim_after: config.claim_after,
            submitter,
            tx: tx.clone(),
            in_flight: Arc::clone(&in_flight),
            stop: Arc::clone(&stop),
            peer: Arc::new(PeerIdentity {
                uid: u32::MAX,
                gids: Vec::new(),
                privileged: false,
            }),
            retry: Arc::new(retries),
        };
        let writer = Writer {
            conn: writer_conn,
            group: config.group.clone(),
            results: config.results_stream.clone(),
            script: Script::new(FINISH_LUA),
            loaded: false,
            in_flight: Arc::clone(&in_flight),
            stop: Arc::clone(&stop),
        };
        let refresher = Refresher {
            conn: Conn::new(
                &config.redis_url,
                config.cluster,
                "refresher",
                Duration::from_secs(5),
            )?,
            group: config.group.clone(),
            consumer: consumer.clone(),
            period: (config.claim_after / 3).max(Duration::from_millis(50)),
            in_flight: Arc::clone(&in_flight),
            stop: Arc::clone(&stop),
        };
        let spawn_err =
            |e: std::io::Error| FeedError::new(format!("cannot start a feed thread: {e}"));
        let writer = thread::Builder::new()
            .name("feed-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(spawn_err)?;
        let refresher = thread::Builder::new()
            .name("feed-refresh".into())
            .spawn(move || refresher.run())
            .map_err(spawn_err)?;
        let reader = thread::Builder::new()
            .name("feed-reader".into())
            .spawn(move || reader.run())
            .map_err(spawn_err)?;
        log::info!(
            "feed: reading {} as {consumer} in group {} from {}",
            config.streams.join(", "),
            config.group,
            redact(&config.redis_url)
        );
        Ok(Feed {
            stop,
            reader: Some(reader),
            refresher: Some(refresher),
            writer: Some(writer),
            tx,
        })
    }

    /// Stops reading, writes what is left to write (for up to `limit`),
    /// and ends both threads.
    pub fn stop(mut self, limit: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let deadline = Instant::now() + limit;
        while !self.tx.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let left = self.tx.len();
        if left > 0 {
            log::warn!("feed: {left} answers or outcomes not written to Redis at shutdown");
        }
        drop(self.tx);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.join();
        }
    }
}

/// The URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

struct Reader {
    conn: Conn,
    /// Where each stream's next XAUTOCLAIM starts.
    cursors: HashMap<Arc<str>, String>,
    streams: Vec<Arc<str>>,
    group: String,
    consumer: String,
    claim_after: Duration,
    submitter: Submitter,
    tx: Sender<Msg>,
    in_flight: InFlight,
    stop: Arc<AtomicBool>,
    peer: Arc<PeerIdentity>,
    retry: Arc<retry::RetryConfig>,
}

impl Reader {
    fn run(mut self) {
        let claim_period = claim_period(self.claim_after);
        let mut last_claim = Instant::now() - claim_period;
        // Entries idle too long are still waiting to be claimed: claims
        // go before new reads.
        let mut backlog = false;
        let mut groups = false;
        let mut last_promote = Instant::now() - PROMOTE_PERIOD;
        while !self.stop.load(Ordering::SeqCst) && !self.submitter.stopping() {
            match self.conn.ensure() {
                Ok(true) => groups = self.create_groups(),
                Ok(false) if !groups => {
                    // Refused before (a server still loading its data).
                    groups = self.create_groups();
                    if !groups {
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                Ok(false) => {}
                Err(_) => {
                    thread::sleep(
                        self.conn
                            .wait()
                            .clamp(Duration::from_millis(10), Duration::from_millis(100)),
                    );
                    continue;
                }
            }
            if self.retry.retries && last_promote.elapsed() >= PROMOTE_PERIOD {
                self.promote();
                last_promote = Instant::now();
            }
            if backlog || last_claim.elapsed() >= claim_period {
                backlog = self.claim();
                last_claim = Instant::now();
                if backlog {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
            let free = self.submitter.free_slots();
            if free == 0 {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            self.read(free);
        }
    }

    /// Moves the retries now due back to their streams.
    fn promote(&mut self) {
        let now = unix_now();
        for stream in self.streams.clone() {
            match self.conn.run(|con| {
                retry::promote_due(con, &stream, now, PROMOTE_LIMIT).map_err(redis_error)
            }) {
                Ok(0) => {}
                Ok(moved) => log::info!("feed: {moved} deferred jobs back to {stream} for a retry"),
                Err(e) => log::debug!("feed: moving due retries to {stream}: {e}"),
            }
        }
    }

    /// True when every group exists.
    fn create_groups(&mut self) -> bool {
        let mut all = true;
        for stream in self.streams.clone() {
            let created: Result<Value, FeedError> = self.conn.query(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&*stream)
                    .arg(&self.group)
                    .arg("0")
                    .arg("MKSTREAM"),
            );
            match created {
                Ok(_) => log::info!("feed: created group {} on {stream}", self.group),
                Err(e) if e.is("BUSYGROUP") => {}
                Err(e) => {
                    all = false;
                    log::warn!("feed: cannot create group {} on {stream}: {e}", self.group);
                }
            }
        }
        all
    }

    fn read(&mut self, free: usize) {
        if !self.conn.is_cluster() {
            let streams = self.streams.clone();
            self.read_streams(&streams, free, true);
            return;
        }
        // A Redis Cluster: one stream per XREADGROUP (their keys are on
        // different slots); BLOCK only on the last, and only when the
        // others brought nothing.
        let streams = self.streams.clone();
        let mut read = 0;
        for (i, stream) in streams.iter().enumerate() {
            let free = self.submitter.free_slots();
            if free == 0 {
                return;
            }
            let last = i + 1 == streams.len();
            read += self.read_streams(std::slice::from_ref(stream), free, last && read == 0);
        }
    }

    /// One XREADGROUP on `streams` for at most `free` entries; how many
    /// were taken.
    fn read_streams(&mut self, streams: &[Arc<str>], free: usize, block: bool) -> usize {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(free.min(READ_CHUNK));
        if block {
            cmd.arg("BLOCK").arg(READ_BLOCK_MS);
        }
        cmd.arg("STREAMS");
        for stream in streams {
            cmd.arg(&**stream);
        }
        for _ in streams {
            cmd.arg(">");
        }
        let mut taken = 0;
        match self.conn.query::<Value>(&cmd) {
            Ok(reply) => {
                for (stream, entries) in parse_read(reply) {
                    let Some(stream) = self.streams.iter().find(|s| ***s == *stream).cloned()
                    else {
                        continue;
                    };
                    for entry in entries {
                        taken += 1;
                        self.take(&stream, entry, Vec::new());
                    }
                }
            }
            Err(e) if e.is("NOGROUP") => {
                self.create_groups();
            }
            Err(e) => {
                log::debug!("feed: XREADGROUP: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
        taken
    }

    /// Claims entries idle longer than claim_after (a dead node's); true
    /// when more may be waiting (the queue had no room for them all).
    fn claim(&mut self) -> bool {
        let idle = u64::try_from(self.claim_after.as_millis()).unwrap_or(u64::MAX);
        let mut backlog = false;
        for stream in self.streams.clone() {
            // Redis scans at most ten times COUNT pending entries a call:
            // small calls (no long stall of the server), continued from
            // where the last one stopped until the list is scanned to its
            // end, so an entry deep in a long pending list is reached too.
            for _ in 0..CLAIM_CALLS {
                let free = self.submitter.free_slots();
                if free == 0 {
                    return backlog;
                }
                let count = free.min(CLAIM_CHUNK);
                let start = self
                    .cursors
                    .get(&stream)
                    .cloned()
                    .unwrap_or_else(|| "0-0".to_string());
                let reply: Result<Value, FeedError> = self.conn.query(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&*stream)
                        .arg(&self.group)
                        .arg(&self.consumer)
                        .arg(idle)
                        .arg(&start)
                        .arg("COUNT")
                        .arg(count),
                );
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        log::debug!("feed: XAUTOCLAIM {stream}: {e}");
                        self.cursors.remove(&stream);
                        break;
                    }
                };
                let next = autoclaim_cursor(&reply).unwrap_or_else(|| "0-0".to_string());
                let entries = parse_autoclaim(reply);
                backlog |= entries.len() >= count;
                self.take_claimed(&stream, entries);
                let wrapped = next == "0-0";
                self.cursors.insert(Arc::clone(&stream), next);
                if wrapped {
                    break;
                }
            }
        }
        backlog
    }

    /// Runs the entries claimed from `stream` (a dead node's), each with
    /// the recipients its progress hash records as settled.
    fn take_claimed(&mut self, stream: &Arc<str>, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let held: HashSet<String> = lock(&self.in_flight)
            .get(stream)
            .cloned()
            .unwrap_or_default();
        let mut claimed = 0u64;
        for entry in entries {
            if held.contains(&entry.id) {
                continue;
            }
            claimed += 1;
            let key = progress_key(stream, &entry.id);
            let settled: Vec<(String, String)> = self
                .conn
                .query(redis::cmd("HGETALL").arg(&key))
                .unwrap_or_default();
            let pre = settled
                .into_iter()
                .filter_map(|(i, json)| {
                    Some((i.parse::<usize>().ok()?, serde_json::from_str(&json).ok()?))
                })
                .collect();
            self.take(stream, entry, pre);
        }
        if claimed > 0 {
            log::info!(
                "feed: claimed {claimed} jobs of {stream} idle longer than claim_after (a node that stopped)"
            );
            let _: Result<Value, FeedError> = self.conn.query(
                redis::cmd("HINCRBY")
                    .arg(claims_key(&self.group))
                    .arg(&self.consumer)
                    .arg(claimed),
            );
        }
    }

    /// Submits one entry (`pre`: its recipients settled before a claim).
    fn take(&mut self, stream: &Arc<str>, entry: Entry, pre: Vec<(usize, RecipientResult)>) {
        lock(&self.in_flight)
            .entry(Arc::clone(stream))
            .or_default()
            .insert(entry.id.clone());
        let done = |answer: Answer| Msg::Done {
            stream: Arc::clone(stream),
            id: entry.id.clone(),
            answer: answer_line(answer),
            step: Step::None,
        };
        let Some(line) = entry.job else {
            let error = JobError::invalid(None, "feed: the stream entry has no field \"job\"");
            let _ = self.tx.send(done(Answer::Failed(error)));
            return;
        };
        let checked = match crate::job::parse_job(&line) {
            Ok(checked) => checked,
            Err(error) => {
                let _ = self.tx.send(done(Answer::Failed(error)));
                return;
            }
        };
        if !matches!(checked.message, MessageRef::Data { .. }) {
            let error = JobError::invalid(
                Some(checked.id.clone()),
                "the Redis feed takes inline messages only (\"message\":{\"data\":...}): nodes share no files",
            );
            let _ = self.tx.send(done(Answer::Failed(error)));
            return;
        }
        let total = checked.recipients.len();
        let settled: HashSet<usize> = pre.iter().map(|(i, _)| *i).filter(|i| *i < total).collect();
        let open: Vec<usize> = (0..total).filter(|i| !settled.contains(i)).collect();
        let key: Arc<str> = Arc::from(progress_key(stream, &entry.id));
        let observer = Arc::new(FeedObserver {
            key: Arc::clone(&key),
            open: open.clone(),
            tx: self.tx.clone(),
        });
        let report = Arc::new(FeedReport {
            stream: Arc::clone(stream),
            id: entry.id.clone(),
            open: open.clone(),
            pre,
            total,
            observer,
            tx: self.tx.clone(),
            submitter: self.submitter.clone(),
            job: self.retry.retries.then(|| checked.job().clone()),
            retry: Arc::clone(&self.retry),
        });
        if open.len() == total {
            self.submitter
                .submit(Ticket::new(checked, Arc::clone(&self.peer), report));
            return;
        }
        if open.is_empty() {
            report.report(Answer::Done(JobResult {
                id: checked.id.clone(),
                recipients: Vec::new(),
                log: None,
            }));
            return;
        }
        let mut job = checked.job().clone();
        job.recipients = open
            .iter()
            .filter_map(|i| job.recipients.get(*i).cloned())
            .collect();
        match job.into_checked() {
            Ok(rest) => self
                .submitter
                .submit(Ticket::new(rest, Arc::clone(&self.peer), report)),
            Err(error) => report.report(Answer::Failed(error)),
        }
    }
}

/// Keeps the entries this node holds from looking dead: resets their idle
/// time every third of claim_after, on a thread of its own (the reader
/// may wait for queue room).
struct Refresher {
    conn: Conn,
    group: String,
    consumer: String,
    period: Duration,
    in_flight: InFlight,
    stop: Arc<AtomicBool>,
}

impl Refresher {
    fn run(mut self) {
        let mut last = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            if last.elapsed() >= self.period {
                last = Instant::now();
                self.refresh();
            }
        }
    }

    /// Resets the idle time of the entries this node holds.
    fn refresh(&mut self) {
        let held: Vec<(Arc<str>, Vec<String>)> = lock(&self.in_flight)
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(s, ids)| (Arc::clone(s), ids.iter().cloned().collect()))
            .collect();
        for (stream, ids) in held {
            for chunk in ids.chunks(1000) {
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(&*stream)
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(0);
                for id in chunk {
                    cmd.arg(id);
                }
                cmd.arg("JUSTID");
                if let Err(e) = self.conn.query::<Value>(&cmd) {
                    log::debug!("feed: refreshing {stream}: {e}");
                }
            }
        }
    }
}

/// A retry error as a Redis error (for [`Conn::run`]).
fn redis_error(e: retry::RetryError) -> redis::RedisError {
    match e {
        retry::RetryError::Redis(e) => e,
        other => redis::RedisError::from((redis::ErrorKind::Client, "retry", other.to_string())),
    }
}

/// The answer JSON, without its newline.
fn answer_line(answer: Answer) -> Vec<u8> {
    let mut line = answer.to_wire();
    line.pop();
    line
}

struct FeedObserver {
    key: Arc<str>,
    /// Job positions of the submitted recipients.
    open: Vec<usize>,
    tx: Sender<Msg>,
}

/// Set by the writer when an outcome is in Redis; the worker that settled
/// it is woken (park/unpark: no spinning while it waits).
struct Written {
    done: AtomicBool,
    worker: thread::Thread,
}

impl Written {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            done: AtomicBool::new(false),
            worker: thread::current(),
        })
    }

    fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.worker.unpark();
    }

    /// True once set, waiting at most `limit`.
    fn wait(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.done.load(Ordering::Acquire) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            thread::park_timeout(deadline - now);
        }
    }
}

thread_local! {
    /// The newest outcome this worker thread handed to the writer, until
    /// it is known written (the writer writes in order: the newest one
    /// written means every earlier one is).
    static UNRECORDED: std::cell::RefCell<Option<Arc<Written>>> =
        const { std::cell::RefCell::new(None) };
}

/// Waits until this worker's outcomes handed to the writer are written,
/// for at most `limit`: false when they were not (then they are waited
/// for again before the next body).
fn await_recorded(limit: Duration) -> bool {
    let pending = UNRECORDED.with(|u| u.try_borrow().ok().and_then(|u| u.clone()));
    let Some(written) = pending else {
        return true;
    };
    if !written.wait(limit) {
        return false;
    }
    UNRECORDED.with(|u| {
        if let Ok(mut u) = u.try_borrow_mut()
            && u.as_ref().is_some_and(|w| Arc::ptr_eq(w, &written))
        {
            *u = None;
        }
    });
    true
}

impl SettleObserver for FeedObserver {
    fn settled(&self, index: usize, result: &RecipientResult) {
        let Some(&index) = self.open.get(index) else {
            return;
        };
        let Ok(json) = serde_json::to_vec(result) else {
            return;
        };
        // Not waited for here (a job's lock is held): the worker waits in
        // before_body, before it commits its next transaction.
        let written = Written::new();
        let sent = self.tx.send(Msg::Settled {
            key: Arc::clone(&self.key),
            index,
            json,
            written: Arc::clone(&written),
        });
        if sent.is_ok() {
            UNRECORDED.with(|u| {
                if let Ok(mut u) = u.try_borrow_mut() {
                    *u = Some(written);
                }
            });
        }
    }

    fn before_body(&self) -> Result<(), String> {
        if await_recorded(SETTLE_WAIT) {
            return Ok(());
        }
        log::warn!(
            "feed: an earlier outcome of this worker is not in Redis after {}s; \
             job {} deferred before its message body (no delivery goes unrecorded)",
            SETTLE_WAIT.as_secs(),
            self.key
        );
        Err(format!(
            "the Redis feed cannot record outcomes (Redis unreachable for over {}s)",
            SETTLE_WAIT.as_secs()
        ))
    }
}

struct FeedReport {
    stream: Arc<str>,
    id: String,
    open: Vec<usize>,
    pre: Vec<(usize, RecipientResult)>,
    total: usize,
    observer: Arc<FeedObserver>,
    tx: Sender<Msg>,
    submitter: Submitter,
    /// The whole job, with retries on.
    job: Option<Job>,
    retry: Arc<retry::RetryConfig>,
}

impl Report for FeedReport {
    fn report(&self, answer: Answer) {
        let answer = match answer {
            Answer::Done(result) => {
                if self.submitter.stopping() && cut_by_shutdown(&result) {
                    log::info!(
                        "feed: job {} ({} {}) not finished at shutdown: left pending for another node",
                        result.id,
                        self.stream,
                        self.id
                    );
                    let _ = self.tx.send(Msg::Leave {
                        stream: Arc::clone(&self.stream),
                        id: self.id.clone(),
                    });
                    return;
                }
                Answer::Done(merge(result, &self.open, &self.pre, self.total))
            }
            failed => failed,
        };
        let step = match (&answer, &self.job) {
            (Answer::Done(result), Some(job)) => retry_step(&self.retry, job, result),
            _ => Step::None,
        };
        let _ = self.tx.send(Msg::Done {
            stream: Arc::clone(&self.stream),
            id: self.id.clone(),
            answer: answer_line(answer),
            step,
        });
    }

    fn observer(&self) -> Option<Arc<dyn SettleObserver>> {
        Some(Arc::clone(&self.observer) as Arc<dyn SettleObserver>)
    }
}

/// Some recipient was deferred because the daemon stops.
fn cut_by_shutdown(result: &JobResult) -> bool {
    result
        .recipients
        .iter()
        .any(|r| r.status == Status::Deferred && r.diagnostic.starts_with(SHUTDOWN_DIAGNOSTIC))
}

/// The whole job's result: the recipients settled before a claim (`pre`,
/// by job position) and those delivered now (`result`, in the order of
/// `open`), in job order.
pub fn merge(
    mut result: JobResult,
    open: &[usize],
    pre: &[(usize, RecipientResult)],
    total: usize,
) -> JobResult {
    if pre.is_empty() {
        return result;
    }
    let mut slots: Vec<Option<RecipientResult>> = vec![None; total];
    for (index, r) in pre {
        if let Some(slot) = slots.get_mut(*index) {
            *slot = Some(r.clone());
        }
    }
    for (k, r) in std::mem::take(&mut result.recipients)
        .into_iter()
        .enumerate()
    {
        if let Some(slot) = open.get(k).and_then(|i| slots.get_mut(*i)) {
            *slot = Some(r);
        }
    }
    result.recipients = slots.into_iter().flatten().collect();
    result
}

struct Writer {
    conn: Conn,
    group: String,
    results: String,
    script: Script,
    /// The script is known to be loaded on this connection's server.
    loaded: bool,
    in_flight: InFlight,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Msg>) {
        let mut batch: Vec<Msg> = Vec::new();
        let mut failures = 0u32;
        loop {
            if batch.is_empty() {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(msg) => batch.push(msg),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            match self.write(&batch) {
                Ok(()) => {
                    self.settle(&batch);
                    batch.clear();
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if self.stop.load(Ordering::SeqCst) && failures > 50 {
                        log::warn!(
                            "feed: giving up writing {} answers or outcomes at shutdown: {e}",
                            batch.len()
                        );
                        return;
                    }
                    log::debug!("feed: writing to Redis: {e}; retrying");
                    thread::sleep(
                        self.conn
                            .wait()
                            .clamp(Duration::from_millis(20), Duration::from_millis(200)),
                    );
                }
            }
        }
    }

    fn write(&mut self, batch: &[Msg]) -> Result<(), FeedError> {
        if self.conn.ensure()? || !self.loaded {
            // Again after any failure: a restarted server has no scripts.
            self.loaded = false;
            let _: Value = self
                .conn
                .query(redis::cmd("SCRIPT").arg("LOAD").arg(FINISH_LUA))?;
            self.loaded = true;
        }
        let hash = self.script.get_hash().to_string();
        // Outcomes of a job answered in this same batch are not written:
        // the answer deletes them anyway.
        let answered: HashSet<String> = batch
            .iter()
            .filter_map(|msg| match msg {
                Msg::Done { stream, id, .. } => Some(progress_key(stream, id)),
                _ => None,
            })
            .collect();
        let mut pipe = redis::pipe();
        let mut expire: Vec<&str> = Vec::new();
        for msg in batch {
            if let Msg::Settled {
                key, index, json, ..
            } = msg
                && !answered.contains(&**key)
            {
                pipe.cmd("HSET").arg(&**key).arg(*index).arg(json).ignore();
                if !expire.contains(&&**key) {
                    expire.push(key);
                }
            }
        }
        for key in expire {
            pipe.cmd("EXPIRE").arg(key).arg(PROGRESS_TTL_SECS).ignore();
        }
        // One script call per stream, its jobs in batch order.
        let mut streams: Vec<&Arc<str>> = Vec::new();
        for msg in batch {
            if let Msg::Done { stream, .. } = msg
                && !streams.contains(&stream)
            {
                streams.push(stream);
            }
        }
        for stream in streams {
            let jobs: Vec<(&String, &Vec<u8>, &Step)> = batch
                .iter()
                .filter_map(|msg| match msg {
                    Msg::Done {
                        stream: of,
                        id,
                        answer,
                        step,
                    } if of == stream => Some((id, answer, step)),
                    _ => None,
                })
                .collect();
            let mut call = redis::cmd("EVALSHA");
            call.arg(&hash)
                .arg(4 + jobs.len())
                .arg(&**stream)
                .arg(results_key(&self.results, stream))
                .arg(retry::due_key(stream))
                .arg(retry::jobs_key(stream));
            for (id, _, _) in &jobs {
                call.arg(progress_key(stream, id));
            }
            call.arg(&self.group);
            for (id, answer, step) in jobs {
                let (kind, due, extra) = match step {
                    Step::None => ("", 0, ""),
                    Step::Retry { due, job } => ("retry", *due, job.as_str()),
                    Step::Expired(result) => ("expired", 0, result.as_str()),
                };
                call.arg(id).arg(answer).arg(kind).arg(due).arg(extra);
            }
            pipe.add_command(call).ignore();
        }
        let written = self.conn.pipe(&pipe);
        if written.is_err() {
            self.loaded = false;
        }
        written
    }

    /// The answered entries are no longer held.
    fn settle(&self, batch: &[Msg]) {
        for msg in batch {
            if let Msg::Settled { written, .. } = msg {
                written.set();
            }
        }
        let mut held = lock(&self.in_flight);
        for msg in batch {
            if let Msg::Done { stream, id, .. } | Msg::Leave { stream, id } = msg
                && let Some(ids) = held.get_mut(stream)
            {
                ids.remove(id);
            }
        }
    }
}

/// One stream entry: its id and its "job" field.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub job: Option<Vec<u8>>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// The elements of an array (or set) reply, taken out of it.
fn into_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// `[id, [field, value, ...]]`; `None` for a deleted entry (nil). The job
/// is moved out of the reply, not copied (a reply holds hundreds of them).
fn parse_entry(value: Value) -> Option<Entry> {
    let mut parts = into_items(value).into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let id = text(&id)?;
    let mut job = None;
    let mut fields = into_items(fields).into_iter();
    while let (Some(name), Some(data)) = (fields.next(), fields.next()) {
        let is_job = match &name {
            Value::BulkString(b) => b == b"job",
            Value::SimpleString(s) => s == "job",
            _ => false,
        };
        if is_job && let Value::BulkString(data) = data {
            job = Some(data);
        }
    }
    Some(Entry { id, job })
}

fn parse_entries(value: Value) -> Vec<Entry> {
    into_items(value)
        .into_iter()
        .filter_map(parse_entry)
        .collect()
}

/// An XREADGROUP reply: entries by stream (nil: none).
pub fn parse_read(value: Value) -> Vec<(String, Vec<Entry>)> {
    match value {
        Value::Map(pairs) => pairs
            .into_iter()
            .filter_map(|(name, entries)| Some((text(&name)?, parse_entries(entries))))
            .collect(),
        other => into_items(other)
            .into_iter()
            .filter_map(|one| {
                let mut pair = into_items(one).into_iter();
                match (pair.next(), pair.next(), pair.next()) {
                    (Some(name), Some(entries), None) => {
                        Some((text(&name)?, parse_entries(entries)))
                    }
                    _ => None,
                }
            })
            .collect(),
    }
}

/// An XAUTOCLAIM reply: `[next, entries, deleted]`; the entries.
pub fn parse_autoclaim(value: Value) -> Vec<Entry> {
    let mut parts = into_items(value).into_iter();
    match (parts.next(), parts.next()) {
        (Some(_), Some(entries)) => parse_entries(entries),
        _ => Vec::new(),
    }
}

/// The cursor an XAUTOCLAIM reply gives for the next call ("0-0": the
/// pending list was scanned to its end); `None` for a malformed reply.
pub fn autoclaim_cursor(value: &Value) -> Option<String> {
    match items(value) {
        [cursor, ..] => text(cursor).filter(|c| is_stream_id(c)),
        _ => None,
    }
}

/// `<ms>-<seq>`, both decimal.
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
