//! Running one job: from a protocol [`Job`] (or the CLI's equivalent) to
//! deliveries grouped by next hop, and back to one [`JobResult`] with an
//! outcome for every recipient, in job order.
//!
//! Errors: a message that cannot be read is a [`JobError`] (nothing was
//! tried); everything else — bad destinations, DNS, servers — ends up as
//! per-recipient outcomes. A bookkeeping anomaly is logged and the affected
//! recipient deferred by the ledger, never lost.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::chain::{Chain, Follower};
use crate::config::LogFormat;
use crate::deliver::{CacheUse, Deliverer, Delivery, Request};
use crate::job::{CheckedJob, Job, JobError, JobResult, MessageRef};
use crate::message::Message;
use crate::nexthop::Protocol;
use crate::plan::{Group, Plan};
use crate::recipient_log::Service;
use crate::recipients::{Outcome, Settled};
use crate::session::MessageSource;
use crate::smtp::client::Envelope;
use crate::transport::strerror;

pub use crate::recipient_log::{Seconds, seconds};

/// Runs a job to completion. `with_log` adds the transcript summary.
pub fn execute(deliverer: &Deliverer, job: &Job, with_log: bool) -> Result<JobResult, JobError> {
    execute_at(deliverer, job, with_log, Instant::now())
}

/// As [`execute`], for a job received at `received` (the log's delays
/// start there).
pub fn execute_at(
    deliverer: &Deliverer,
    job: &Job,
    with_log: bool,
    received: Instant,
) -> Result<JobResult, JobError> {
    execute_in(deliverer, job, with_log, received, None)
}

/// As [`execute`], on a worker's [`Chain`]: a session the previous job
/// handed over, and the follower offered, are found there.
pub fn execute_chained(
    deliverer: &Deliverer,
    job: &Job,
    with_log: bool,
    chain: &Chain,
) -> Result<JobResult, JobError> {
    execute_in(deliverer, job, with_log, Instant::now(), Some(chain))
}

fn execute_in(
    deliverer: &Deliverer,
    job: &Job,
    with_log: bool,
    received: Instant,
    chain: Option<&Chain>,
) -> Result<JobResult, JobError> {
    let message = match &job.message {
        MessageRef::Path { path } => Message::small_file_in_memory(path.as_ref()),
        MessageRef::Data { data } => Message::Inline(data.clone().into_bytes()),
        MessageRef::Fd { .. } => {
            return Err(JobError::invalid(
                Some(job.id.clone()),
                "invalid job: a message passed as a file descriptor needs the daemon",
            ));
        }
    };
    let job = job.clone().into_checked()?;
    let plan = deliverer.plan(&job);
    execute_with(deliverer, &job, &plan, &message, with_log, received, chain)
}

/// As [`execute_at`], with the job's plan made (the daemon makes it at
/// submission, see [`crate::plan`]) and the message already at hand (the
/// daemon reads it through the file it opened for the submitting peer);
/// `job.message` only names it in errors. `chain`: the worker's hand-over
/// state, if any. A plan made under a configuration since reloaded with
/// another `relayhost` or default port is made again under `deliverer`'s.
pub fn execute_with(
    deliverer: &Deliverer,
    job: &CheckedJob,
    plan: &Plan,
    message: &Message,
    with_log: bool,
    received: Instant,
    chain: Option<&Chain>,
) -> Result<JobResult, JobError> {
    let started = Instant::now();
    let error = |text: String| JobError::unreadable_message(Some(job.id.clone()), text);
    let facts = message.facts().map_err(|e| {
        let name = match &job.message {
            MessageRef::Path { path } => path.as_str(),
            MessageRef::Data { .. } => "(inline data)",
            MessageRef::Fd { .. } => "(passed file descriptor)",
        };
        error(format!("cannot read message {name}: {}", strerror(&e)))
    })?;
    let protocol = job.protocol();
    let recipients = job.envelope_recipients().to_vec();
    // Postfix's qmgr line, for log tools that count senders and sizes.
    let mut line = String::with_capacity(96 + job.id.len() + job.sender.len());
    line.push_str(&job.id);
    line.push_str(": from=<");
    crate::recipients::push_printable_address(&mut line, &job.sender);
    line.push_str(">, size=");
    crate::text::push_u64(&mut line, facts.size);
    line.push_str(", nrcpt=");
    crate::text::push_u64(
        &mut line,
        u64::try_from(recipients.len()).unwrap_or(u64::MAX),
    );
    line.push_str(" (queue active)");
    log::info!(target: "mailhop/qmgr", "{line}");
    let remade;
    let plan = if plan.holds_under(deliverer.settings()) {
        plan
    } else {
        remade = deliverer.plan(job);
        &remade
    };
    let Plan {
        groups, refused, ..
    } = plan;
    let service = match protocol {
        Protocol::Smtp => Service::Smtp,
        Protocol::Lmtp => Service::Lmtp,
    };
    let json = deliverer.settings().log_format == LogFormat::Json;
    let arrival_at = job.arrival();
    // Each recipient is logged as soon as it is settled.
    let line_writer = || {
        let id = job.id.clone();
        Box::new(move |address: &str, outcome: &Outcome, first: bool| {
            let since = arrival_at.and_then(|at| SystemTime::now().duration_since(at).ok());
            log_recipient(
                service, &id, address, outcome, received, started, since, json, !first,
            );
        })
    };
    let mut settled: Vec<Option<Settled>> = vec![None; recipients.len()];
    // One next hop for every recipient (the usual job) takes the recipients
    // as they are; otherwise each group gets copies of its own.
    let single = groups.len() == 1 && refused.is_empty();
    if !refused.is_empty() {
        // Settled before any connection: logged (and recorded for the
        // shutdown path) like every other outcome.
        let (indexes, outcomes): (Vec<usize>, Vec<Outcome>) = refused.iter().cloned().unzip();
        let refused_settled: Vec<Settled> = indexes
            .iter()
            .zip(outcomes)
            .filter_map(|(&index, outcome)| {
                recipients.get(index).map(|rcpt| Settled {
                    address: rcpt.address.clone(),
                    outcome,
                })
            })
            .collect();
        let delivery = crate::progress::deliver_group(
            &indexes,
            line_writer(),
            || Delivery {
                settled: refused_settled,
                anomalies: 0,
                log: Vec::new(),
            },
            |d| &d.settled,
        );
        for (&index, result) in indexes.iter().zip(delivery.settled) {
            if let Some(slot) = settled.get_mut(index) {
                *slot = Some(result);
            }
        }
    }
    let mut log = Vec::new();
    let mut recipients = Some(recipients);
    for Group { hop, indexes } in groups {
        let envelope = Envelope {
            sender: job.sender.clone(),
            recipients: if single {
                recipients.take().unwrap_or_default()
            } else {
                indexes
                    .iter()
                    .filter_map(|&i| recipients.as_ref().and_then(|all| all.get(i)).cloned())
                    .collect()
            },
            envid: job.envid.clone(),
            ret: job.ret.map(Into::into),
            smtputf8: job.smtputf8,
            requiretls: job.requiretls,
        };
        // Connection cache: the job's own hints win; else the cache's policy.
        let _demand = deliverer.cache().map(|cache| cache.demand(&hop.key));
        let cache = match (deliverer.cache(), job.cache) {
            (None, _) => CacheUse::default(),
            (Some(_), Some(hints)) => CacheUse {
                load: hints.load,
                store: hints.store,
            },
            (Some(cache), None) => {
                let (load, store) = cache.policy_for(&hop.key);
                CacheUse { load, store }
            }
        };
        let request = Request {
            protocol,
            hop,
            envelope,
            message,
            facts,
            arrival: job.arrival(),
            cache,
        };
        let delivery = crate::progress::deliver_group(
            indexes,
            line_writer(),
            || deliverer.deliver_chained(&request, chain),
            |d| &d.settled,
        );
        if delivery.anomalies > 0 {
            log::error!(
                "{}: {} recipient bookkeeping anomalies",
                job.id,
                delivery.anomalies
            );
        }
        log.extend(delivery.log);
        for (&index, result) in indexes.iter().zip(delivery.settled) {
            if let Some(slot) = settled.get_mut(index) {
                *slot = Some(result);
            }
        }
    }
    let missing = settled.iter().filter(|s| s.is_none()).count();
    if missing > 0 {
        // Impossible by construction; never lose a recipient silently.
        log::error!("{}: {missing} recipients without an outcome", job.id);
        return Err(error(format!(
            "internal error: {missing} recipients without an outcome"
        )));
    }
    let settled: Vec<Settled> = settled.into_iter().flatten().collect();
    let mut result =
        JobResult::with_success_dsn(job.id.clone(), settled, job.envelope_recipients());
    if with_log {
        result.log = Some(log);
    }
    Ok(result)
}

/// The job's `arrival_time` as a time; `None` without one, or for a value
/// no clock can hold ([`Job::check`] refuses those before a job runs).
pub fn arrival(job: &Job) -> Option<SystemTime> {
    job.arrival_time
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
}

/// The job (with its `plan`) as the follower of another one on a cached
/// session (see [`crate::chain`]): only a valid job with one explicit next
/// hop whose message is held in memory, and that may use cached sessions.
pub fn follower(job: &CheckedJob, plan: &Plan, message: &Message) -> Option<Follower> {
    let key = plan.explicit_key()?.clone();
    if job.cache.is_some_and(|hints| !hints.load) || message.in_memory().is_none() {
        return None;
    }
    // Its commands go out before its own delivery checks the envelope:
    // only addresses that check would pass (no control characters that
    // could smuggle commands into the other job's session).
    crate::smtp::command::check_address(&job.sender).ok()?;
    for rcpt in &job.recipients {
        crate::smtp::command::check_address(&rcpt.address).ok()?;
    }
    let facts = message.facts().ok()?;
    let message_digest = crate::chain::message_digest(message.in_memory()?);
    Some(Follower {
        job_id: job.id.clone(),
        key,
        protocol: job.protocol(),
        envelope: Envelope {
            sender: job.sender.clone(),
            recipients: job.envelope_recipients().to_vec(),
            envid: job.envid.clone(),
            ret: job.ret.map(Into::into),
            smtputf8: job.smtputf8,
            requiretls: job.requiretls,
        },
        facts,
        message_digest,
    })
}

/// One recipient's log line (see [`crate::recipient_log`]) for a
/// delivery's outcome (`late`: one that came after its job was answered,
/// cut at shutdown, see [`crate::progress`]). delays: a = waiting for a
/// worker, b = before the deciding connection, c = connection setup, d =
/// transmission.
#[allow(clippy::too_many_arguments)]
fn log_recipient(
    service: Service,
    id: &str,
    address: &str,
    outcome: &Outcome,
    received: Instant,
    started: Instant,
    since_arrival: Option<Duration>,
    json: bool,
    late: bool,
) {
    let now = Instant::now();
    let a = started.saturating_duration_since(received);
    let (b, c, d) = match outcome.timing {
        Some(t) => (
            t.connect.saturating_duration_since(started),
            t.handshake.saturating_duration_since(t.connect),
            t.end.saturating_duration_since(t.handshake),
        ),
        None => (
            now.saturating_duration_since(started),
            Duration::ZERO,
            Duration::ZERO,
        ),
    };
    let line = crate::recipient_log::Line {
        service,
        id,
        address,
        relay: outcome.relay.as_deref(),
        delay: since_arrival.unwrap_or_else(|| now.saturating_duration_since(received)),
        delays: [a, b, c, d],
        dsn: outcome.dsn,
        status: outcome.status,
        diagnostic: &outcome.diagnostic,
        tls: outcome.tls.as_ref(),
        tls_policy: outcome.tls_policy.as_ref(),
        source: outcome.source.map(|a| a.ip()),
        late,
    };
    crate::recipient_log::write(&line, json);
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
