//! Retries of the Redis Streams feed (`[feed] retries`, issue 18): a job's
//! deferred recipients go back to the job's stream on Postfix's back-off
//! schedule, through a Redis sorted set of due jobs; past the queue
//! lifetime they bounce the way Postfix's queue manager expires a message.
//!
//! Postfix's rules (qmgr/qmgr_active.c, postconf.proto), mirrored here:
//! - After an attempt that leaves recipients deferred, the next try is
//!   the message's age (now − arrival time) later, clamped to
//!   `[minimal_backoff_time, maximal_backoff_time]` (300 s, 4000 s):
//!   "per-message exponential backoff", as the age roughly doubles from
//!   one try to the next. A message without an arrival time waits
//!   `minimal_backoff_time`.
//! - The lifetime is checked after an attempt that leaves recipients
//!   deferred: when `now >= arrival + maximal_queue_lifetime` (5 d;
//!   `bounce_queue_lifetime`, also 5 d and at most the former, for mail
//!   from the null sender), the deferred recipients are returned to the
//!   sender instead. 0 means one attempt only.
//! - Expired recipients keep the last attempt's reason and DSN status (a
//!   4.X.X code: Postfix's bounce report for an expired message prints
//!   the defer log's `Status:` as it is, with `Action: failed`), and the
//!   message is logged as `<id>: from=<sender>, status=expired, returned
//!   to sender`.
//!
//! Redis keys, per stream `S`: the sorted set `S:retry` (member: the
//! finished job's stream entry id, score: due time in UNIX seconds) and
//! the hash `S:retry:jobs` (member → job JSON). With Redis Cluster, a
//! stream named with a hash tag (`mail{0}`) keeps the three keys in one
//! slot, as the Lua scripts need.
//!
//! [`plan`], [`decide`] and the back-off arithmetic are pure; [`schedule`]
//! and [`promote_due`] do the I/O, each one Lua script (atomic). Errors:
//! [`RetryError`] (a bad job or result, or Redis).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{format_duration, parse_duration};
use crate::job::{Job, JobResult, MessageRef, RecipientResult, parse_job};
use crate::recipients::Status;

/// Postfix's `minimal_backoff_time` default.
pub const DEFAULT_MINIMAL_BACKOFF_TIME: Duration = Duration::from_secs(300);
/// Postfix's `maximal_backoff_time` default.
pub const DEFAULT_MAXIMAL_BACKOFF_TIME: Duration = Duration::from_secs(4000);
/// Postfix's `maximal_queue_lifetime` default (5d).
pub const DEFAULT_MAXIMAL_QUEUE_LIFETIME: Duration = Duration::from_secs(5 * 86_400);
/// Postfix's `bounce_queue_lifetime` default (5d).
pub const DEFAULT_BOUNCE_QUEUE_LIFETIME: Duration = Duration::from_secs(5 * 86_400);

/// The retry keys of the `[feed]` table (merged into the feed's config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConfig {
    /// Deferred recipients go back to their stream on the back-off
    /// schedule (default false: a deferral is a final answer, as today).
    #[serde(default)]
    pub retries: bool,
    /// Postfix's minimal_backoff_time.
    #[serde(default = "default_min", with = "secs")]
    pub minimal_backoff_time: Duration,
    /// Postfix's maximal_backoff_time.
    #[serde(default = "default_max", with = "secs")]
    pub maximal_backoff_time: Duration,
    /// Postfix's maximal_queue_lifetime.
    #[serde(default = "default_lifetime", with = "secs")]
    pub maximal_queue_lifetime: Duration,
    /// Postfix's bounce_queue_lifetime (null-sender mail).
    #[serde(default = "default_bounce_lifetime", with = "secs")]
    pub bounce_queue_lifetime: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            retries: false,
            minimal_backoff_time: DEFAULT_MINIMAL_BACKOFF_TIME,
            maximal_backoff_time: DEFAULT_MAXIMAL_BACKOFF_TIME,
            maximal_queue_lifetime: DEFAULT_MAXIMAL_QUEUE_LIFETIME,
            bounce_queue_lifetime: DEFAULT_BOUNCE_QUEUE_LIFETIME,
        }
    }
}

fn default_min() -> Duration {
    DEFAULT_MINIMAL_BACKOFF_TIME
}
fn default_max() -> Duration {
    DEFAULT_MAXIMAL_BACKOFF_TIME
}
fn default_lifetime() -> Duration {
    DEFAULT_MAXIMAL_QUEUE_LIFETIME
}
fn default_bounce_lifetime() -> Duration {
    DEFAULT_BOUNCE_QUEUE_LIFETIME
}

/// Duration strings (`"300s"`, `"5d"`) for the keys above.
mod secs {
    use super::{Deserialize, Deserializer, Duration, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let text = super::format_duration(*value).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl From<&crate::config::FeedConfig> for RetryConfig {
    /// The retry keys of `[feed]` (the one source of truth).
    fn from(feed: &crate::config::FeedConfig) -> Self {
        Self {
            retries: feed.retries,
            minimal_backoff_time: feed.minimal_backoff_time,
            maximal_backoff_time: feed.maximal_backoff_time,
            maximal_queue_lifetime: feed.maximal_queue_lifetime,
            bounce_queue_lifetime: feed.bounce_queue_lifetime,
        }
    }
}

impl RetryConfig {
    /// The keys' checks: back-off times non-zero and minimal ≤ maximal
    /// (Postfix: "should be set greater than or equal to").
    pub fn check(&self) -> Result<(), String> {
        if self.minimal_backoff_time.as_secs() == 0 {
            return Err("[feed] minimal_backoff_time must be at least 1s".into());
        }
        if self.maximal_backoff_time < self.minimal_backoff_time {
            return Err("[feed] maximal_backoff_time must be at least minimal_backoff_time".into());
        }
        Ok(())
    }

    /// The lifetime of mail from `sender`: bounce_queue_lifetime (at most
    /// maximal_queue_lifetime, as qmgr.c clamps it) for the null sender.
    pub fn lifetime(&self, sender: &str) -> u64 {
        let max = self.maximal_queue_lifetime.as_secs();
        if sender.is_empty() {
            self.bounce_queue_lifetime.as_secs().min(max)
        } else {
            max
        }
    }

    /// Seconds until the next try of mail that arrived at `arrival`
    /// (qmgr_active.c: the age, clamped to the back-off times).
    pub fn backoff(&self, arrival: Option<u64>, now: u64) -> u64 {
        let min = self.minimal_backoff_time.as_secs();
        let max = self.maximal_backoff_time.as_secs().max(min);
        match arrival {
            Some(arrival) => now.saturating_sub(arrival).clamp(min, max),
            None => min,
        }
    }

    /// Whether mail from `sender` that arrived at `arrival` is past its
    /// lifetime at `now` (qmgr_active.c: `now >= arrival + lifetime`).
    pub fn expired(&self, sender: &str, arrival: u64, now: u64) -> bool {
        now >= arrival.saturating_add(self.lifetime(sender))
    }
}

/// What to do with a finished job (pure: [`plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No recipient deferred: nothing to retry.
    Done,
    /// Try `job` (the deferred recipients only, arrival time kept or set)
    /// again at `due` (UNIX seconds).
    Retry { due: u64, job: Job },
    /// Past the lifetime: the deferred recipients, bounced.
    Expired(JobResult),
}

/// What [`decide`] makes of a finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `[feed] retries` is off: nothing to do.
    Off,
    /// No recipient deferred: nothing to retry.
    Done,
    /// Put this retry in the due set ([`Retry::command`]).
    Retry(Retry),
    /// Past the lifetime: the result to publish for the deferred
    /// recipients, now bounced; its `log` holds qmgr's expiry line.
    Expired(JobResult),
}

/// A job to try again: its JSON (the deferred recipients only) and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// UNIX seconds.
    pub due: u64,
    pub recipients: usize,
    pub job_json: String,
}

/// What [`schedule`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `[feed] retries` is off: nothing done.
    Off,
    /// No recipient deferred: nothing to retry.
    Done,
    /// `recipients` deferred recipients go back to the stream at `due`.
    /// `first` false: this stream entry was scheduled before (a job run
    /// again after a crash) and the earlier schedule, with its own due
    /// time, stands; nothing changed.
    Scheduled {
        due: u64,
        recipients: usize,
        first: bool,
    },
    /// Past the lifetime: the result to publish for the deferred
    /// recipients, now bounced; its `log` holds qmgr's expiry line.
    Expired(JobResult),
}

/// Why a job could not be scheduled.
#[derive(Debug)]
pub enum RetryError {
    /// The job JSON is not a valid job, or cannot be sent again.
    Job(String),
    /// The result JSON is not a result of this job.
    Result(String),
    /// Redis refused or failed.
    Redis(redis::RedisError),
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::Job(why) => write!(f, "retry: bad job: {why}"),
            RetryError::Result(why) => write!(f, "retry: bad result: {why}"),
            RetryError::Redis(err) => write!(f, "retry: redis: {err}"),
        }
    }
}

impl std::error::Error for RetryError {}

impl From<redis::RedisError> for RetryError {
    fn from(err: redis::RedisError) -> Self {
        RetryError::Redis(err)
    }
}

/// The retry plan for `job` after the attempt that gave `result`, at
/// `now` (UNIX seconds). `result` lists the job's recipients in order
/// (as the daemon answers); anything else is an error.
pub fn plan(
    cfg: &RetryConfig,
    job: &Job,
    result: &JobResult,
    now: u64,
) -> Result<Plan, RetryError> {
    if result.id != job.id {
        return Err(RetryError::Result(format!(
            "result id {:?} is not the job's {:?}",
            result.id, job.id
        )));
    }
    if result.recipients.len() != job.recipients.len() {
        return Err(RetryError::Result(format!(
            "{} recipients in the result, {} in the job",
            result.recipients.len(),
            job.recipients.len()
        )));
    }
    let mut deferred = Vec::new();
    let mut last: Vec<&RecipientResult> = Vec::new();
    for (want, got) in job.recipients.iter().zip(&result.recipients) {
        if want.address != got.address {
            return Err(RetryError::Result(format!(
                "recipient <{}> in the result where the job has <{}>",
                got.address, want.address
            )));
        }
        if got.status == Status::Deferred {
            deferred.push(want.clone());
            last.push(got);
        }
    }
    if deferred.is_empty() {
        return Ok(Plan::Done);
    }
    let arrival = job.arrival_time.unwrap_or(now);
    if cfg.expired(&job.sender, arrival, now) {
        let recipients = last
            .into_iter()
            .map(|r| RecipientResult {
                status: Status::Bounced,
                ..r.clone()
            })
            .collect();
        return Ok(Plan::Expired(JobResult {
            id: job.id.clone(),
            recipients,
            log: Some(vec![format!(
                "{}: from=<{}>, status=expired, returned to sender",
                job.id,
                crate::recipients::printable_address(&job.sender)
            )]),
        }));
    }
    if matches!(job.message, MessageRef::Fd { .. }) {
        return Err(RetryError::Job(
            "a job with a passed file descriptor cannot be retried".into(),
        ));
    }
    let mut next = job.clone();
    next.recipients = deferred;
    next.arrival_time = Some(arrival);
    let due = now.saturating_add(cfg.backoff(job.arrival_time, now));
    Ok(Plan::Retry { due, job: next })
}

/// The sorted set of due jobs of `stream`.
pub fn due_key(stream: &str) -> String {
    [stream, ":retry"].concat()
}

/// The hash of waiting job JSON of `stream`.
pub fn jobs_key(stream: &str) -> String {
    [stream, ":retry:jobs"].concat()
}

/// KEYS: due set, jobs hash. ARGV: due time, job JSON, member (the
/// finished job's stream entry id). Once per member: 1 the first time, 0
/// after (the earlier schedule stands).
const SCHEDULE_LUA: &str = r"
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
";

/// KEYS: stream, due set, jobs hash. ARGV: now, limit.
const PROMOTE_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local moved = 0
for _, member in ipairs(due) do
  local job = redis.call('HGET', KEYS[3], member)
  if job then
    redis.call('XADD', KEYS[1], '*', 'job', job)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[3], member)
end
return moved
";

/// What to do with a finished job (`job_json` as read from the stream,
/// `result_json` the daemon's answer) at `now`; pure.
pub fn decide(
    cfg: &RetryConfig,
    job_json: &str,
    result_json: &str,
    now: u64,
) -> Result<Decision, RetryError> {
    if !cfg.retries {
        return Ok(Decision::Off);
    }
    let checked = parse_job(job_json.as_bytes()).map_err(|err| RetryError::Job(err.error))?;
    let result: JobResult =
        serde_json::from_str(result_json).map_err(|err| RetryError::Result(err.to_string()))?;
    match plan(cfg, checked.job(), &result, now)? {
        Plan::Done => Ok(Decision::Done),
        Plan::Expired(bounced) => Ok(Decision::Expired(bounced)),
        Plan::Retry { due, job } => {
            let job_json =
                serde_json::to_string(&job).map_err(|err| RetryError::Job(err.to_string()))?;
            Ok(Decision::Retry(Retry {
                due,
                recipients: job.recipients.len(),
                job_json,
            }))
        }
    }
}

impl Retry {
    /// The command that puts this retry of stream entry `entry_id` in
    /// `stream`'s due set: an EVAL the feed may queue in the MULTI/EXEC
    /// that publishes the result and XACKs the entry, so that the three
    /// happen together. Idempotent per `entry_id`: a job run again after
    /// a crash is not scheduled twice. Answers 1 (scheduled) or 0
    /// (scheduled before).
    pub fn command(&self, stream: &str, entry_id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCHEDULE_LUA)
            .arg(2)
            .arg(due_key(stream))
            .arg(jobs_key(stream))
            .arg(self.due)
            .arg(&self.job_json)
            .arg(entry_id);
        cmd
    }
}

/// [`decide`], then the retry's [`Retry::command`] on its own, for a
/// finished job of `stream` read as entry `entry_id`.
pub fn schedule(
    conn: &mut dyn redis::ConnectionLike,
    cfg: &RetryConfig,
    stream: &str,
    entry_id: &str,
    job_json: &str,
    result_json: &str,
    now: u64,
) -> Result<Outcome, RetryError> {
    match decide(cfg, job_json, result_json, now)? {
        Decision::Off => Ok(Outcome::Off),
        Decision::Done => Ok(Outcome::Done),
        Decision::Expired(bounced) => Ok(Outcome::Expired(bounced)),
        Decision::Retry(retry) => {
            let added: i64 = retry.command(stream, entry_id).query(conn)?;
            Ok(Outcome::Scheduled {
                due: retry.due,
                recipients: retry.recipients,
                first: added == 1,
            })
        }
    }
}

/// Moves up to `limit` jobs of `stream` due at `now` back to the stream
/// (XADD, field `job`), atomically (one Lua script); returns how many.
pub fn promote_due(
    conn: &mut dyn redis::ConnectionLike,
    stream: &str,
    now: u64,
    limit: usize,
) -> Result<usize, RetryError> {
    if limit == 0 {
        return Ok(0);
    }
    let moved: usize = redis::Script::new(PROMOTE_LUA)
        .key(stream)
        .key(due_key(stream))
        .key(jobs_key(stream))
        .arg(now)
        .arg(limit)
        .invoke(conn)?;
    Ok(moved)
}

/// How many jobs of `stream` wait in the due set.
pub fn waiting(conn: &mut dyn redis::ConnectionLike, stream: &str) -> Result<usize, RetryError> {
    let count: usize = redis::cmd("ZCARD").arg(due_key(stream)).query(conn)?;
    Ok(count)
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
