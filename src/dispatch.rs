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
    let mut result = JobResult::new(job.id.clone(), settled);
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
    let nexthop = job.nexthop.as_ref()?;
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
        nexthop: nexthop.clone(),
        key,
        protocol: job.protocol(),
        envelope: Envelope {
            sender: job.sender.clone(),
            recipients: job.envelope_recipients().to_vec(),
            envid: job.envid.clone(),
            ret: job.ret.map(Into::into),
            smtputf8: job.smtputf8,
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
        source: outcome.source.map(|a| a.ip()),
        late,
    };
    crate::recipient_log::write(&line, json);
}

#[cfg(test)]
mod delay_tests {
    use super::*;

    #[test]
    fn delays_read_like_postfix() {
        for (ms, text) in [
            (0, "0"),
            (4, "0"),
            (30, "0.03"),
            (100, "0.1"),
            (1_500, "1.5"),
            (2_000, "2"),
            (9_999, "10"),
            (9_994, "9.99"),
            (1_005, "1.01"),
            (1_050, "1.05"),
            (10_000, "10"),
            (12_400, "12"),
            (123_600, "124"),
            (86_400_000, "86400"),
        ] {
            assert_eq!(
                seconds(Duration::from_millis(ms)).to_string(),
                text,
                "{ms} ms"
            );
        }
    }
}

#[cfg(test)]
mod follower_tests {
    use super::*;
    use crate::job::{JobRecipient, TransportKind};

    /// [`super::follower`] of a job that must pass its check first.
    fn follower(job: &Job, message: &Message) -> Option<Follower> {
        let job = job.clone().into_checked().ok()?;
        let settings = crate::config::Config::default().settings();
        let plan = Plan::of(&job, &settings, &crate::nexthop::SystemServices);
        super::follower(&job, &plan, message)
    }

    fn job(sender: &str, rcpt: &str) -> Job {
        Job {
            id: "F1".into(),
            transport: TransportKind::Smtp,
            nexthop: Some("[127.0.0.1]:2525".into()),
            sender: sender.into(),
            recipients: vec![JobRecipient {
                address: rcpt.into(),
                orcpt: None,
                notify: None,
            }],
            message: MessageRef::Data {
                data: "Subject: x\n\nhi\n".into(),
            },
            envid: None,
            ret: None,
            smtputf8: false,
            arrival_time: None,
            cache: None,
        }
    }

    #[test]
    fn only_clean_envelopes_ride_behind_another_job() {
        let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
        let good = follower(&job("a@x.test", "b@y.test"), &message).expect("a follower");
        assert_eq!(good.envelope.recipients.len(), 1);
        assert_eq!(good.nexthop, "[127.0.0.1]:2525");
        // Control characters would smuggle commands into the other session.
        assert!(
            follower(
                &job("a@x.test", "b@y.test>\r\nRCPT TO:<evil@z.test"),
                &message
            )
            .is_none()
        );
        assert!(follower(&job("a@x.test\r\nRSET", "b@y.test"), &message).is_none());
        // No explicit next hop, or a message not in memory: not chained.
        let mut no_nexthop = job("a@x.test", "b@y.test");
        no_nexthop.nexthop = None;
        assert!(follower(&no_nexthop, &message).is_none());
        let on_disk = Message::File("/nonexistent".into());
        assert!(follower(&job("a@x.test", "b@y.test"), &on_disk).is_none());
    }
}

#[cfg(test)]
mod domain_tests {
    use super::*;
    use crate::config::Config;
    use crate::job::{JobRecipient, TransportKind};

    #[test]
    fn a_recipient_domain_never_chooses_a_port_or_a_list() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let addresses = [
            format!("u@[127.0.0.1]:{port}"),
            "nodomain".to_string(),
            format!("u@localhost:{port}"),
            format!("u@a.test,[127.0.0.1]:{port}"),
            format!("u@a.test [127.0.0.1]:{port}"),
            format!("u@[IPv6:::1]:{port}"),
        ];
        let job = Job {
            id: "D1".into(),
            transport: TransportKind::Smtp,
            nexthop: None,
            sender: "a@x.test".into(),
            recipients: addresses
                .iter()
                .map(|address| JobRecipient {
                    address: address.clone(),
                    orcpt: None,
                    notify: None,
                })
                .collect(),
            message: MessageRef::Data {
                data: "Subject: x\n\nhi\n".into(),
            },
            envid: None,
            ret: None,
            smtputf8: false,
            arrival_time: None,
            cache: None,
        };
        // Short limits: before the fix the session waited for a greeting.
        let mut config = Config::default();
        config.smtp.connect_timeout = Duration::from_secs(1);
        config.smtp.helo_timeout = Duration::from_secs(1);
        let deliverer =
            Deliverer::new(config).with_resolver(Box::new(crate::resolve::LiteralResolver));
        let result = execute(&deliverer, &job, false).expect("a result");
        let got: Vec<(&str, &str, &str)> = result
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.status.as_str(), r.dsn.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (addresses[0].as_str(), "bounced", "5.1.3"),
                ("nodomain", "deferred", "4.3.5"),
                (addresses[2].as_str(), "bounced", "5.1.3"),
                (addresses[3].as_str(), "bounced", "5.1.3"),
                (addresses[4].as_str(), "bounced", "5.1.3"),
                (addresses[5].as_str(), "bounced", "5.1.3"),
            ]
        );
        assert_eq!(
            result.recipients[0].diagnostic,
            format!("bad address syntax: domain \"[127.0.0.1]:{port}\": garbage after \"]\"")
        );
        assert!(result.recipients.iter().all(|r| r.relay.is_none()));
        // Nobody connected to the port the domains named.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            listener.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;
    use crate::config::Config;
    use crate::job::{JobRecipient, TransportKind};

    /// A job queued before a reload (SIGHUP) is delivered with the new
    /// configuration: its plan, made at submission with the old default
    /// port, is made again.
    #[test]
    fn a_plan_made_before_a_reload_is_remade_with_the_new_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let job = Job {
            id: "R1".into(),
            transport: TransportKind::Smtp,
            nexthop: Some("[127.0.0.1]".into()),
            sender: "a@x.test".into(),
            recipients: vec![JobRecipient {
                address: "u@y.test".into(),
                orcpt: None,
                notify: None,
            }],
            message: MessageRef::Data {
                data: "Subject: x\n\nhi\n".into(),
            },
            envid: None,
            ret: None,
            smtputf8: false,
            arrival_time: None,
            cache: None,
        }
        .into_checked()
        .expect("a valid job");
        let mut before = Config::default();
        before.smtp.port = 9;
        let stale = Plan::of(&job, &before.settings(), &crate::nexthop::SystemServices);
        let mut after = Config::default();
        after.smtp.port = port;
        after.smtp.connect_timeout = Duration::from_secs(1);
        after.smtp.helo_timeout = Duration::from_secs(1);
        let deliverer =
            Deliverer::new(after).with_resolver(Box::new(crate::resolve::LiteralResolver));
        let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
        let result = execute_with(
            &deliverer,
            &job,
            &stale,
            &message,
            false,
            Instant::now(),
            None,
        )
        .expect("a result");
        assert_eq!(result.recipients[0].status.as_str(), "deferred");
        // The delivery connected to the new port.
        assert!(listener.accept().is_ok());
    }
}
