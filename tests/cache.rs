//! The connection cache against a real smtp-sink: jobs reuse sessions
//! (counted by the sink's own `-c` counters), limits are honoured, and a
//! cached session closed by the server does not cost a recipient.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::jobs::job_with_hints;
use common::{Action, Behaviour, Listen, Sink, Workdir, smtp_servers};
use mailhop::cache::SessionCache;
use mailhop::config::Config;
use mailhop::deliver::Deliverer;
use mailhop::dispatch;
use mailhop::job::{CacheHints, Job};
use mailhop::recipients::Status;

fn job(id: &str, nexthop: &str, message: &str, hints: Option<CacheHints>) -> Job {
    job_with_hints(id, nexthop, Path::new(message), hints)
}

const BOTH: Option<CacheHints> = Some(CacheHints {
    load: true,
    store: true,
});

/// Waits (bounded) until the sink has counted `want` sessions.
fn wait_sessions(sink: &Sink, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = sink.sessions();
    while seen < want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        seen = sink.sessions();
    }
    seen
}

fn deliverer(config: Config, cached: bool) -> (Arc<Deliverer>, Option<Arc<SessionCache>>) {
    let cache = cached.then(|| Arc::new(SessionCache::new(config.cache.clone())));
    let mut deliverer = Deliverer::new(config);
    if let Some(cache) = &cache {
        deliverer = deliverer.with_cache(Arc::clone(cache));
    }
    (Arc::new(deliverer), cache)
}

/// Runs `count` jobs from `threads` threads; every one must be sent.
fn run_jobs(
    deliverer: &Arc<Deliverer>,
    nexthop: &str,
    message: &str,
    count: usize,
    threads: usize,
) {
    let per_thread = count / threads;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let deliverer = Arc::clone(deliverer);
            let nexthop = nexthop.to_string();
            let message = message.to_string();
            thread::spawn(move || {
                for n in 0..per_thread {
                    let job = job(&format!("j{t}x{n}"), &nexthop, &message, BOTH);
                    let result = dispatch::execute(&deliverer, &job, false).expect("job runs");
                    assert_eq!(result.recipients[0].status, Status::Sent, "{result:?}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("worker thread");
    }
}

#[test]
fn cached_sessions_serve_many_jobs_with_few_connections() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-c"]) else {
        return;
    };
    let work = Workdir::new();
    let message = work.file("m.eml", b"Subject: cache\n\nhello\n");
    let message = message.to_string_lossy().into_owned();
    let (deliverer, cache) = deliverer(Config::default(), true);
    run_jobs(&deliverer, &sink.nexthop(), &message, 200, 4);
    let stats = cache.as_ref().map(|c| c.stats()).unwrap_or_default();
    if let Some(cache) = &cache {
        cache.close_all();
    }
    let used = wait_sessions(&sink, 1);
    // 4 workers: a handful of connections, not 200.
    eprintln!("200 jobs from 4 threads: {used} sessions, cache {stats:?}");
    assert!(
        (1..=16).contains(&used),
        "sessions: {used}, cache: {stats:?}"
    );
    assert!(stats.hits >= 180, "{stats:?}");
}

#[test]
fn without_the_cache_every_job_connects() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-c"]) else {
        return;
    };
    let work = Workdir::new();
    let message = work.file("m.eml", b"Subject: no cache\n\nhello\n");
    let message = message.to_string_lossy().into_owned();
    let (deliverer, _) = deliverer(Config::default(), false);
    run_jobs(&deliverer, &sink.nexthop(), &message, 200, 4);
    assert_eq!(wait_sessions(&sink, 200), 200);
}

#[test]
fn reuse_count_limit_bounds_each_session() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-c"]) else {
        return;
    };
    let work = Workdir::new();
    let message = work.file("m.eml", b"Subject: limit\n\nhello\n");
    let message = message.to_string_lossy().into_owned();
    let mut config = Config::default();
    config.cache.reuse_count_limit = 1; // each session used at most twice
    let (deliverer, cache) = deliverer(config, true);
    run_jobs(&deliverer, &sink.nexthop(), &message, 10, 1);
    if let Some(cache) = &cache {
        cache.close_all();
    }
    assert_eq!(wait_sessions(&sink, 5), 5);
}

#[test]
fn cached_session_closed_by_the_server_is_replaced() {
    // A server that hangs up after each transaction (no QUIT): the cached
    // session is dead; the next job's RSET probe notices and it reconnects.
    let once = Behaviour {
        greeting: "220 once.test ESMTP".into(),
        ehlo_raw: Some(b"250-once.test\r\n250 PIPELINING\r\n".to_vec()),
        mail: "250 2.0.0 Ok".into(),
        data: Some("354 go".into()),
        dot: "250 2.0.0 Ok".into(),
        ..Behaviour::default()
    }
    // Hang up after the transaction, once the client has had time to
    // cache the session (a session already closed when it would be
    // stored is never stored).
    .fault(".", 0, Action::ReplyThenClose(Duration::from_millis(50)));
    let server = smtp_servers(vec![once.clone(), once]);
    let port = server.port();
    let work = Workdir::new();
    let message = work.file("m.eml", b"Subject: dead\n\nhello\n");
    let message = message.to_string_lossy().into_owned();
    let (deliverer, cache) = deliverer(Config::default(), true);
    let nexthop = format!("[127.0.0.1]:{port}");
    for id in ["first", "second"] {
        thread::sleep(Duration::from_millis(100));
        let result = dispatch::execute(&deliverer, &job(id, &nexthop, &message, BOTH), true)
            .expect("job runs");
        assert_eq!(result.recipients[0].status, Status::Sent, "{result:?}");
        if id == "second" {
            let log = result.log.unwrap_or_default();
            assert!(
                log.iter().any(|l| l.contains("no longer usable")),
                "{log:?}"
            );
        }
    }
    if let Some(cache) = &cache {
        cache.close_all();
    }
    assert_eq!(server.finish_all().len(), 2);
}

#[test]
fn reuse_time_limit_retires_old_sessions() {
    let Some(sink) = Sink::start(Listen::Tcp, &["-c"]) else {
        return;
    };
    let work = Workdir::new();
    let message = work.file("m.eml", b"Subject: old\n\nhello\n");
    let message = message.to_string_lossy().into_owned();
    let mut config = Config::default();
    config.cache.reuse_time_limit = Duration::from_millis(1);
    let (deliverer, cache) = deliverer(config, true);
    for n in 0..5 {
        thread::sleep(Duration::from_millis(5));
        let result = dispatch::execute(
            &deliverer,
            &job(&format!("t{n}"), &sink.nexthop(), &message, BOTH),
            false,
        )
        .expect("job runs");
        assert_eq!(result.recipients[0].status, Status::Sent, "{result:?}");
    }
    if let Some(cache) = &cache {
        assert_eq!(cache.stats().hits, 0, "{:?}", cache.stats());
        cache.close_all();
    }
    // Every job needed its own connection: no session outlived 1 ms.
    assert_eq!(wait_sessions(&sink, 5), 5);
}
