//! Pipelining across jobs (`[cache] chain_jobs`) through the daemon's
//! worker pool, against a scripted PIPELINING server on loopback that
//! records every message it receives and whether the next job's RSET was
//! already waiting behind a message's final dot. Faults: the server hangs
//! up right after answering a dot, or answers the chained RSET with 421 —
//! every job must still be delivered exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::jobs::{job, recipient};
use common::{Input, Peer};

use mailhop::cache::SessionCache;
use mailhop::config::Config;
use mailhop::deliver::Deliverer;
use mailhop::job::{Job, MessageRef, TransportKind};
use mailhop::pool::{Answer, PeerIdentity, Pool, PoolSize, Report, Ticket};
use mailhop::recipients::Status;
use mailhop::stats::Stats;

const LIMIT: Duration = Duration::from_secs(30);

/// What the server does besides accepting mail.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Hang up right after answering the dot of the Nth message.
    CloseAfterDot(usize),
    /// Answer the first RSET after the Nth message with 421 and hang up.
    RefuseRsetAfter(usize),
    /// Send one stray reply right behind the end-of-data reply(ies) of the
    /// Nth message, in the same write.
    StrayReplyAfterDot(usize),
    /// LMTP: answer the Nth message's dot for its first recipient only,
    /// then hang up unless a command arrives within a second.
    ShortLmtpReplies(usize),
}

#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    /// Subject of every message received, in order.
    subjects: Vec<String>,
    /// Final dots with the next RSET already received behind them.
    chained: usize,
    /// (subject, recipient) of every recipient whose delivery the server
    /// confirmed (SMTP: the dot's 250; LMTP: its per-recipient 250).
    accepted: Vec<(String, String)>,
    /// Every body received, with the recipients it was accepted for.
    bodies: Vec<(String, Vec<String>)>,
}

/// The harness's concurrent scripted server, with this file's session.
struct Server {
    server: common::Server<()>,
    seen: Arc<Mutex<Seen>>,
}

impl Server {
    fn start(fault: Fault) -> Server {
        Server::start_with(fault, false)
    }

    /// An LMTP server (`lmtp`) or an SMTP one.
    fn start_with(fault: Fault, lmtp: bool) -> Server {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = Arc::clone(&seen);
        let server = common::Server::concurrent(move |_, peer| {
            record.lock().expect("seen").connections += 1;
            let _ = serve(peer, fault, lmtp, &record);
        });
        Server { server, seen }
    }

    fn nexthop(&self) -> String {
        self.server.nexthop()
    }
}

fn serve(peer: &mut Peer, fault: Fault, lmtp: bool, seen: &Mutex<Seen>) -> std::io::Result<()> {
    peer.try_reply("220 chain.test ESMTP")?;
    let mut refuse_next_rset = false;
    let mut rcpts: Vec<String> = Vec::new();
    while let Some(command) = peer.next_line(LIMIT) {
        let command = command.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            peer.try_reply("250-chain.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")?;
        } else if upper.starts_with("MAIL FROM:") {
            rcpts.clear();
            peer.try_reply("250 2.1.0 Ok")?;
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = command[8..].trim().to_string();
            if rcpt.contains("-reject@") {
                peer.try_reply("550 5.1.1 no such user")?;
            } else {
                rcpts.push(rcpt);
                peer.try_reply("250 2.1.5 Ok")?;
            }
        } else if upper == "DATA" {
            peer.try_reply("354 go ahead")?;
            let mut subject = String::new();
            loop {
                match peer.next_line(LIMIT).map(|l| l.trim_end().to_string()) {
                    Some(l) if l == "." => break,
                    Some(l) => {
                        if let Some(s) = l.strip_prefix("Subject: ") {
                            subject = s.to_string();
                        }
                    }
                    None => return Ok(()),
                }
            }
            let count = {
                let mut seen = seen.lock().expect("seen");
                seen.subjects.push(subject.clone());
                if peer.buffered().starts_with(b"RSET") {
                    seen.chained += 1;
                }
                seen.subjects.len()
            };
            // The recipients this server confirms, and its replies.
            let short = lmtp && fault == Fault::ShortLmtpReplies(count);
            let confirmed: Vec<String> = if short {
                rcpts.iter().take(1).cloned().collect()
            } else {
                rcpts.clone()
            };
            let mut replies = if lmtp {
                confirmed
                    .iter()
                    .map(|r| format!("250 2.1.5 {r} Ok\r\n"))
                    .collect::<String>()
            } else {
                "250 2.0.0 Ok: queued\r\n".to_string()
            };
            if fault == Fault::StrayReplyAfterDot(count) {
                replies.push_str("250 2.0.0 stray\r\n");
            }
            {
                let mut seen = seen.lock().expect("seen");
                for r in &confirmed {
                    seen.accepted.push((subject.clone(), r.clone()));
                }
                seen.bodies.push((subject.clone(), confirmed.clone()));
            }
            peer.try_send(replies.as_bytes())?;
            if short {
                // Hang up unless the client says something within a second.
                match peer.wait_input(Duration::from_secs(1)) {
                    Input::Data => {}
                    Input::Eof => return Ok(()),
                    Input::Timeout => {
                        peer.close();
                        return Ok(());
                    }
                }
            }
            match fault {
                Fault::CloseAfterDot(n) if count == n => {
                    peer.close();
                    return Ok(());
                }
                Fault::RefuseRsetAfter(n) if count == n => refuse_next_rset = true,
                _ => {}
            }
        } else if upper == "RSET" {
            if refuse_next_rset {
                peer.try_reply("421 4.3.2 shutting down")?;
                peer.close();
                return Ok(());
            }
            peer.try_reply("250 2.0.0 Ok")?;
        } else if upper == "QUIT" {
            peer.try_reply("221 2.0.0 Bye")?;
            return Ok(());
        } else {
            peer.try_reply("502 5.5.2 what?")?;
        }
    }
    Ok(())
}

/// Collects the pool's answers.
#[derive(Default)]
struct Answers {
    got: Mutex<Vec<Answer>>,
    changed: Condvar,
}

impl Report for Answers {
    fn report(&self, answer: Answer) {
        if let Ok(mut got) = self.got.lock() {
            got.push(answer);
        }
        self.changed.notify_all();
    }
}

impl Answers {
    fn wait(&self, count: usize) -> Vec<Answer> {
        let start = Instant::now();
        let mut got = self.got.lock().expect("answers");
        while got.len() < count {
            assert!(
                start.elapsed() < LIMIT,
                "only {} of {count} answers",
                got.len()
            );
            got = self
                .changed
                .wait_timeout(got, Duration::from_millis(50))
                .expect("answers")
                .0;
        }
        got.clone()
    }
}

/// Runs `count` jobs through a one-worker pool (so that jobs wait in the
/// queue and are chained) against `server`; returns the answers by id.
fn run_jobs(server: &Server, count: usize, chain: bool) -> BTreeMap<String, Answer> {
    let mut config = Config::default();
    config.cache.destinations = vec!["127.0.0.1".into()];
    config.cache.chain_jobs = chain;
    run_jobs_with(server, count, config)
}

/// [`run_jobs`] with a configuration of the caller's.
fn run_jobs_with(server: &Server, count: usize, config: Config) -> BTreeMap<String, Answer> {
    run_jobs_made(server, count, config, job)
}

/// An LMTP job with `rcpts` recipients `{id}-{n}@y.test`.
fn lmtp_job(rcpts: usize) -> impl Fn(&str, &str, &Path) -> Job {
    move |id, nexthop, message| {
        let mut job = job(id, nexthop, message);
        job.transport = TransportKind::Lmtp;
        job.recipients = (0..rcpts)
            .map(|n| recipient(&format!("{id}-{n}@y.test")))
            .collect();
        job
    }
}

/// The configuration of [`run_jobs`].
fn cached(chain: bool) -> Config {
    let mut config = Config::default();
    config.cache.destinations = vec!["127.0.0.1".into()];
    config.cache.chain_jobs = chain;
    config
}

/// [`run_jobs_with`] with jobs made by `make`.
fn run_jobs_made(
    server: &Server,
    count: usize,
    config: Config,
    make: impl Fn(&str, &str, &Path) -> Job,
) -> BTreeMap<String, Answer> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(SessionCache::new(config.cache.clone()));
    let deliverer = Deliverer::new(config).with_cache(cache);
    let size = PoolSize {
        workers: 1,
        queue_capacity: 64,
        stack_size: 256 * 1024,
    };
    let pool = Pool::start(size, deliverer, Arc::new(Stats::new())).expect("pool");
    let submitter = pool.submitter();
    let answers = Arc::new(Answers::default());
    let peer = Arc::new(PeerIdentity {
        uid: 0,
        gids: vec![0],
        privileged: true,
    });
    for n in 0..count {
        let id = format!("J{n:03}");
        let message = dir.path().join(&id);
        std::fs::write(&message, format!("Subject: {id}\n\nbody of {id}\n")).expect("write");
        let report: Arc<dyn Report> = Arc::clone(&answers) as Arc<dyn Report>;
        submitter.submit(Ticket::new(
            make(&id, &server.nexthop(), &message)
                .into_checked()
                .expect("a valid job"),
            Arc::clone(&peer),
            report,
        ));
    }
    let got = answers.wait(count);
    pool.begin_shutdown();
    got.into_iter()
        .map(|a| (a.id().unwrap_or_default().to_string(), a))
        .collect()
}

/// Every job sent, and every message received exactly once.
fn assert_each_delivered_once(server: &Server, answers: &BTreeMap<String, Answer>, count: usize) {
    assert_eq!(answers.len(), count);
    for (id, answer) in answers {
        match answer {
            Answer::Done(result) => {
                assert_eq!(result.recipients.len(), 1, "{id}");
                assert_eq!(
                    result.recipients[0].status,
                    Status::Sent,
                    "{id}: {result:?}"
                );
            }
            Answer::Failed(error) => panic!("{id}: {error:?}"),
        }
    }
    let seen = server.seen.lock().expect("seen");
    let mut subjects = seen.subjects.clone();
    subjects.sort();
    let expected: Vec<String> = answers.keys().cloned().collect();
    assert_eq!(subjects, expected, "each message exactly once");
}

#[test]
fn queued_jobs_are_chained_on_one_session() {
    let server = Server::start(Fault::None);
    let answers = run_jobs(&server, 40, true);
    assert_each_delivered_once(&server, &answers, 40);
    let seen = server.seen.lock().expect("seen");
    assert_eq!(seen.connections, 1, "{seen:?}");
    // The first job opens the session; every later one whose predecessor
    // found it waiting in the queue rides behind a final dot.
    assert!(seen.chained >= 20, "only {} of 40 chained", seen.chained);
}

#[test]
fn without_chain_jobs_every_transaction_waits() {
    let server = Server::start(Fault::None);
    let answers = run_jobs(&server, 20, false);
    assert_each_delivered_once(&server, &answers, 20);
    let seen = server.seen.lock().expect("seen");
    assert_eq!(seen.chained, 0, "{seen:?}");
    assert_eq!(seen.connections, 1, "{seen:?}");
}

#[test]
fn sessions_that_are_not_cached_are_not_chained() {
    // chain_jobs on, but nothing may be cached: each job's session ends
    // with QUIT, so no job rides behind another one's dot.
    let server = Server::start(Fault::None);
    let mut config = Config::default();
    config.cache.destinations = Vec::new();
    config.cache.on_demand = false;
    config.cache.chain_jobs = true;
    let answers = run_jobs_with(&server, 12, config);
    assert_each_delivered_once(&server, &answers, 12);
    let seen = server.seen.lock().expect("seen");
    assert_eq!(seen.chained, 0, "{seen:?}");
    assert_eq!(seen.connections, 12, "{seen:?}");
}

#[test]
fn hang_up_after_a_dot_sends_the_chained_job_on_a_new_session() {
    let server = Server::start(Fault::CloseAfterDot(5));
    let answers = run_jobs(&server, 20, true);
    assert_each_delivered_once(&server, &answers, 20);
    let seen = server.seen.lock().expect("seen");
    assert!(seen.connections >= 2, "{seen:?}");
    assert!(seen.chained >= 1, "{seen:?}");
}

#[test]
fn refused_chained_rset_sends_the_job_on_a_new_session() {
    let server = Server::start(Fault::RefuseRsetAfter(5));
    let answers = run_jobs(&server, 20, true);
    assert_each_delivered_once(&server, &answers, 20);
    let seen = server.seen.lock().expect("seen");
    assert!(seen.connections >= 2, "{seen:?}");
    assert!(seen.chained >= 1, "{seen:?}");
}

// ---------------------------------------------------------------------------
// Desynchronised sessions (issue 12, defect 1): a stray reply behind an
// end-of-data reply must never make the next job on that session read its
// replies one step late.
// ---------------------------------------------------------------------------

#[test]
fn stray_reply_after_a_dot_does_not_fail_the_next_cached_job() {
    let server = Server::start(Fault::StrayReplyAfterDot(3));
    let answers = run_jobs(&server, 10, false);
    assert_each_delivered_once(&server, &answers, 10);
    let seen = server.seen.lock().expect("seen");
    assert!(seen.connections >= 2, "{seen:?}");
}

#[test]
fn stray_reply_after_a_dot_does_not_fail_the_next_chained_job() {
    let server = Server::start(Fault::StrayReplyAfterDot(5));
    let answers = run_jobs(&server, 20, true);
    assert_each_delivered_once(&server, &answers, 20);
    let seen = server.seen.lock().expect("seen");
    assert!(seen.connections >= 2, "{seen:?}");
}

#[test]
fn lmtp_stray_reply_does_not_fail_the_next_cached_job() {
    let server = Server::start_with(Fault::StrayReplyAfterDot(3), true);
    let answers = run_jobs_made(&server, 10, cached(false), lmtp_job(1));
    assert_each_delivered_once(&server, &answers, 10);
}

#[test]
fn lmtp_stray_reply_does_not_fail_the_next_chained_job() {
    let server = Server::start_with(Fault::StrayReplyAfterDot(5), true);
    let answers = run_jobs_made(&server, 20, cached(true), lmtp_job(1));
    assert_each_delivered_once(&server, &answers, 20);
}

#[test]
fn lmtp_recipient_is_never_sent_on_another_commands_reply() {
    // The 5th message gets one per-recipient reply for two recipients: its
    // second recipient must not take the next job's reply for its own.
    let server = Server::start_with(Fault::ShortLmtpReplies(5), true);
    let answers = run_jobs_made(&server, 12, cached(true), lmtp_job(2));
    assert_eq!(answers.len(), 12);
    let seen = server.seen.lock().expect("seen");
    let mut sent = 0;
    for (id, answer) in &answers {
        let Answer::Done(result) = answer else {
            panic!("{id}: {answer:?}");
        };
        for rcpt in &result.recipients {
            assert_ne!(rcpt.status, Status::Bounced, "{id}: {result:?}");
            if rcpt.status == Status::Sent {
                sent += 1;
                let accepted = seen
                    .accepted
                    .iter()
                    .any(|(subject, r)| subject == id && r.contains(rcpt.address.as_str()));
                assert!(
                    accepted,
                    "{id}: {} reported sent, never accepted: {result:?}",
                    rcpt.address
                );
            }
        }
    }
    assert!(sent >= 22, "only {sent} sent");
}

// ---------------------------------------------------------------------------
// Hand-over keyed by the daemon's ticket (issue 12, defect 3).
// ---------------------------------------------------------------------------

/// A job whose only recipient is `rcpt`, with message `subject`.
fn job_for(id: &str, nexthop: &str, rcpt: &str, subject: &str) -> Job {
    let mut job = job(id, nexthop, Path::new("/unused"));
    job.recipients[0].address = rcpt.into();
    job.message = MessageRef::Data {
        data: format!("Subject: {subject}\n\nbody of {subject}\n"),
    };
    job
}

/// The chain offer of `job` (as the daemon's worker makes it).
fn follower_of(job: &Job) -> mailhop::chain::Follower {
    let message = mailhop::message::Message::Inline(match &job.message {
        MessageRef::Data { data } => data.clone().into_bytes(),
        MessageRef::Path { .. } | MessageRef::Fd { .. } => Vec::new(),
    });
    let job = job.clone().into_checked().expect("a valid job");
    let settings = Config::default().settings();
    let plan = mailhop::plan::Plan::of(&job, &settings, &mailhop::nexthop::SystemServices);
    mailhop::dispatch::follower(&job, &plan, &message).expect("a follower")
}

/// No recipient got a body that is not its own job's.
fn assert_nothing_misdelivered(seen: &Seen, owner: &dyn Fn(&str) -> String) {
    for (subject, rcpts) in &seen.bodies {
        for rcpt in rcpts {
            assert_eq!(
                owner(rcpt),
                *subject,
                "{rcpt} received {subject}: {:?}",
                seen.bodies
            );
        }
    }
}

#[test]
fn a_session_handed_to_one_job_is_never_used_by_another_with_the_same_id() {
    let server = Server::start(Fault::None);
    let nexthop = server.nexthop();
    let config = cached(true);
    let cache = Arc::new(SessionCache::new(config.cache.clone()));
    let deliverer = Deliverer::new(config).with_cache(cache);
    // One worker's hand-over state, as the daemon's worker keeps it.
    let chain = mailhop::chain::Chain::default();
    let run = |job: &Job| {
        let result =
            mailhop::dispatch::execute_chained(&deliverer, job, false, &chain).expect("runs");
        assert_eq!(result.recipients[0].status, Status::Sent, "{result:?}");
    };
    // A session in the cache, then a job on it with the next job (id X,
    // for victim@) offered: its transaction is started and handed over.
    run(&job_for("A0", &nexthop, "a0@y.test", "A0"));
    // (Tickets as the daemon numbers them; the job ids are the same.)
    let victim = job_for("X", &nexthop, "victim@y.test", "B");
    chain.offer(1001, follower_of(&victim));
    run(&job_for("A1", &nexthop, "a1@y.test", "A1"));
    // The handed-to job never runs; another job with the same id does.
    let other = job_for("X", &nexthop, "own@y.test", "C");
    chain.keep_only_for(1002);
    run(&other);
    chain.clear();
    let seen = server.seen.lock().expect("seen");
    assert!(seen.chained >= 1, "{seen:?}");
    assert_nothing_misdelivered(&seen, &|rcpt: &str| {
        match rcpt.trim_matches(['<', '>']) {
            "a0@y.test" => "A0",
            "a1@y.test" => "A1",
            "victim@y.test" => "B",
            _ => "C",
        }
        .to_string()
    });
}

#[test]
fn duplicate_job_ids_from_several_clients_are_never_misdelivered() {
    let server = Server::start(Fault::None);
    let nexthop = server.nexthop();
    let config = cached(true);
    let cache = Arc::new(SessionCache::new(config.cache.clone()));
    let deliverer = Deliverer::new(config).with_cache(cache);
    let size = PoolSize {
        workers: 2,
        queue_capacity: 256,
        stack_size: 256 * 1024,
    };
    let pool = Pool::start(size, deliverer, Arc::new(Stats::new())).expect("pool");
    let answers = Arc::new(Answers::default());
    let (clients, per_client) = (4, 30);
    let submitters: Vec<_> = (0..clients)
        .map(|c| {
            let submitter = pool.submitter();
            let answers = Arc::clone(&answers);
            let nexthop = nexthop.clone();
            thread::spawn(move || {
                let peer = Arc::new(PeerIdentity {
                    uid: 0,
                    gids: vec![0],
                    privileged: true,
                });
                for n in 0..per_client {
                    let tag = format!("c{c}n{n}");
                    let job = job_for("SAME", &nexthop, &format!("{tag}@y.test"), &tag)
                        .into_checked()
                        .expect("a valid job");
                    let report: Arc<dyn Report> = Arc::clone(&answers) as Arc<dyn Report>;
                    submitter.submit(Ticket::new(job, Arc::clone(&peer), report));
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.join().expect("client");
    }
    let got = answers.wait(clients * per_client);
    pool.begin_shutdown();
    let mut sent = 0;
    for answer in &got {
        let Answer::Done(result) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(result.recipients[0].status, Status::Sent, "{result:?}");
        sent += 1;
    }
    assert_eq!(sent, clients * per_client);
    let seen = server.seen.lock().expect("seen");
    assert!(seen.chained >= 1, "nothing chained: {seen:?}");
    assert_nothing_misdelivered(&seen, &|rcpt: &str| {
        rcpt.trim_matches(['<', '>'])
            .trim_end_matches("@y.test")
            .to_string()
    });
    let mut subjects = seen.subjects.clone();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), clients * per_client, "each message once");
    assert_eq!(
        seen.subjects.len(),
        clients * per_client,
        "each message once"
    );
}

/// An SMTP job with a good recipient `{id}-ok@` and one the server
/// refuses, `{id}-reject@`.
fn job_with_a_refused_recipient(id: &str, nexthop: &str, message: &Path) -> Job {
    let mut job = job(id, nexthop, message);
    job.recipients = ["ok", "reject"]
        .iter()
        .map(|which| recipient(&format!("{id}-{which}@y.test")))
        .collect();
    job
}

#[test]
fn stray_reply_never_turns_a_refused_recipient_into_a_refused_transaction() {
    for chain in [false, true] {
        let server = Server::start(Fault::StrayReplyAfterDot(4));
        let answers = run_jobs_made(&server, 12, cached(chain), job_with_a_refused_recipient);
        for (id, answer) in &answers {
            let Answer::Done(result) = answer else {
                panic!("{id}: {answer:?}");
            };
            let ok = &result.recipients[0];
            assert_eq!(ok.status, Status::Sent, "chain {chain}, {id}: {result:?}");
            let refused = &result.recipients[1];
            assert_eq!(refused.status, Status::Bounced, "{id}: {result:?}");
            assert_eq!(refused.dsn, "5.1.1", "{id}: {result:?}");
        }
        let seen = server.seen.lock().expect("seen");
        let mut subjects = seen.subjects.clone();
        subjects.sort();
        let expected: Vec<String> = answers.keys().cloned().collect();
        assert_eq!(subjects, expected, "each message exactly once");
    }
}
