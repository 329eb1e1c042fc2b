//! Cluster-wide destination limits (issue 18) against a real
//! redis-server started on loopback by each test: several clients (each
//! its own `ClusterLimits`, as separate nodes would be) never hold more
//! leases of one destination together than its limit; a dead holder's
//! leases free up after their lifetime while a live holder's are renewed;
//! the shared GCRA admits at most rate × window + burst over three
//! clients; and a simulation of 10 nodes' schedulers sharing one
//! destination's limits.

mod common;

use common::redis::Redis;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mailhop::config::{Rate, ShapingSettings};
use mailhop::feed::limits::{ClusterLimits, LimitSettings};
use mailhop::shaping::gcra::Pace;
use mailhop::shaping::scheduler::Scheduler;
use mailhop::shaping::{Demand, Grant, Key, SharedLimits, Tally, Verdict};

/// One node's cluster-wide limits on `redis`.
fn node(redis: &Redis, name: &str, lease_time: Duration) -> Arc<ClusterLimits> {
    ClusterLimits::new(
        redis.url(),
        LimitSettings {
            node: name.into(),
            lease_time,
            ..LimitSettings::default()
        },
    )
    .expect("limits")
}

fn key() -> Key {
    Key::new(false, "mx.example.com")
}

fn count_only(limit: u32) -> Demand {
    Demand {
        limit: Some(limit),
        pace: None,
    }
}

/// Acquires, waiting as told, for at most `within`.
fn acquire_within(limits: &ClusterLimits, demand: Demand, within: Duration) -> Option<Grant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match limits.acquire(&key(), demand) {
            Grant::Wait(after) => thread::sleep(after.min(Duration::from_millis(20))),
            grant => return Some(grant),
        }
    }
    None
}

#[test]
fn clients_together_never_hold_more_leases_than_the_limit() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    const LIMIT: u32 = 3;
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 40;
    let in_flight = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let limits = node(&redis, &format!("node{n}"), Duration::from_secs(30));
            let (in_flight, most, done, barrier) = (
                Arc::clone(&in_flight),
                Arc::clone(&most),
                Arc::clone(&done),
                Arc::clone(&barrier),
            );
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..ROUNDS {
                    let grant = acquire_within(&limits, count_only(LIMIT), Duration::from_secs(20));
                    let Some(Grant::Granted(Some(lease))) = grant else {
                        panic!("no lease: {grant:?}");
                    };
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(3));
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    limits.release(&key(), lease);
                    done.fetch_add(1, Ordering::SeqCst);
                }
                assert_eq!(limits.held(), 0);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(done.load(Ordering::SeqCst), CLIENTS * ROUNDS);
    let most = most.load(Ordering::SeqCst);
    eprintln!("most leases held together: {most} (limit {LIMIT})");
    assert!(most <= LIMIT, "{most} held together, limit {LIMIT}");
    assert_eq!(most, LIMIT, "the limit was reached (the test contends)");
}

#[test]
fn a_dead_holders_leases_free_up_after_their_lifetime_and_a_live_holders_are_renewed() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let life = Duration::from_millis(1200);
    // A live holder keeps its lease past its lifetime (renewed every 400 ms).
    let live = node(&redis, "live", life);
    let other = node(&redis, "other", life);
    let Grant::Granted(Some(lease)) = live.acquire(&key(), count_only(1)) else {
        panic!("first lease refused");
    };
    let started = Instant::now();
    while started.elapsed() < life * 2 {
        assert!(
            matches!(other.acquire(&key(), count_only(1)), Grant::Wait(_)),
            "a live holder's lease was lost after {:?}",
            started.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
    live.release(&key(), lease);
    let Grant::Granted(Some(lease)) = other.acquire(&key(), count_only(1)) else {
        panic!("released lease not free");
    };
    other.release(&key(), lease);

    // A dead holder (dropped without releasing: no renewal, as after SIGKILL).
    let dead = node(&redis, "dead", life);
    for _ in 0..2 {
        assert!(matches!(
            dead.acquire(&key(), count_only(2)),
            Grant::Granted(Some(_))
        ));
    }
    let died = Instant::now();
    drop(dead);
    assert!(matches!(
        other.acquire(&key(), count_only(2)),
        Grant::Wait(_)
    ));
    let grant = acquire_within(&other, count_only(2), Duration::from_secs(5));
    let freed = died.elapsed();
    assert!(matches!(grant, Some(Grant::Granted(Some(_)))), "{grant:?}");
    eprintln!("a dead holder's leases freed after {freed:?} (lifetime {life:?})");
    assert!(freed >= life - Duration::from_millis(50), "{freed:?}");
    assert!(freed < life + Duration::from_secs(1), "{freed:?}");
}

#[test]
fn the_shared_rate_admits_at_most_rate_times_window_plus_burst_over_three_clients() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    // destination_rate = 20/s: interval 50 ms, burst 1 s - 50 ms (19 at once
    // beyond the first), as the local scheduler derives it.
    let rate = Rate {
        count: 20,
        per: Duration::from_secs(1),
    };
    let pace = Pace {
        interval: rate.interval(),
        burst: rate.per.min(Duration::from_secs(1)) - rate.interval(),
    };
    let demand = Demand {
        limit: None,
        pace: Some(pace),
    };
    let window = Duration::from_millis(1500);
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|n| {
            let limits = node(&redis, &format!("node{n}"), Duration::from_secs(30));
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let mut starts = Vec::new();
                while started.elapsed() < window {
                    match limits.acquire(&key(), demand) {
                        Grant::Granted(None) => starts.push(Instant::now()),
                        Grant::Wait(after) => thread::sleep(after.min(Duration::from_millis(5))),
                        other => panic!("{other:?}"),
                    }
                }
                starts
            })
        })
        .collect();
    let mut starts: Vec<Instant> = Vec::new();
    for t in threads {
        starts.extend(t.join().expect("client"));
    }
    starts.sort();
    let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
        panic!("nothing admitted");
    };
    let span = last.duration_since(*first);
    // GCRA: at most burst + 1 at once, then one per interval.
    let bound = 20 + (span.as_secs_f64() * 20.0).floor() as usize + 1;
    eprintln!(
        "{} starts over {span:?} by 3 clients (bound {bound}: 20/s × span + burst 20)",
        starts.len()
    );
    assert!(starts.len() <= bound, "{} > {bound}", starts.len());
    // And it does admit about that many: the limit is not a wall.
    assert!(
        starts.len() * 5 >= bound * 4,
        "{} admitted, bound {bound}",
        starts.len()
    );
    // No second in the run held more than 20 + burst.
    for (i, at) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|s| s.duration_since(*at) < Duration::from_secs(1))
            .count();
        assert!(within <= 40, "{within} starts within a second");
    }
}

#[test]
fn ten_nodes_schedulers_share_one_destinations_limits() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    // Every node has the same [shaping]: a window of 4 and 100/s for the
    // destination; without the shared limits the 10 nodes would have up
    // to 40 in progress together. With them: 4 at most, 100/s.
    const NODES: usize = 10;
    const JOBS: u32 = 30;
    const LIMIT: u32 = 4;
    let settings = Arc::new(ShapingSettings {
        concurrency_limit: LIMIT,
        initial_concurrency: LIMIT,
        rate: Some(Rate {
            count: 100,
            per: Duration::from_secs(1),
        }),
        ..ShapingSettings::default()
    });
    let in_flight = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..NODES)
        .map(|n| {
            let limits = node(&redis, &format!("node{n}"), Duration::from_secs(5));
            let settings = Arc::clone(&settings);
            let (in_flight, most, finished) = (
                Arc::clone(&in_flight),
                Arc::clone(&most),
                Arc::clone(&finished),
            );
            thread::spawn(move || {
                let mut core: Scheduler<u32> = Scheduler::new(settings);
                core.set_shared(limits.clone());
                let k = key();
                let mut running: Vec<(Instant, u32)> = Vec::new();
                let mut admitted = Vec::new();
                for job in 0..JOBS {
                    let Ok(moves) = core.offer(&k, job, Instant::now()) else {
                        panic!("refused");
                    };
                    admitted.extend(moves.admitted);
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut done = 0;
                while done < JOBS {
                    assert!(Instant::now() < deadline, "node {n}: {done} of {JOBS} done");
                    let now = Instant::now();
                    for job in admitted.drain(..) {
                        let held = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(held, Ordering::SeqCst);
                        // A delivery takes 5 to 15 ms.
                        let ms = 5 + u64::from((job * 7 + n as u32 * 3) % 11);
                        running.push((now + Duration::from_millis(ms), job));
                    }
                    let (over, still): (Vec<_>, Vec<_>) =
                        running.drain(..).partition(|(end, _)| *end <= now);
                    running = still;
                    for _ in over {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        done += 1;
                        let moves = core.done(&k, &Verdict::Reached, Tally::default(), now);
                        admitted.extend(moves.admitted);
                    }
                    admitted.extend(core.due(Instant::now()).admitted);
                    thread::sleep(Duration::from_millis(1));
                }
                finished.fetch_add(done as usize, Ordering::SeqCst);
                assert_eq!(limits.held(), 0, "node {n} holds leases after its jobs");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("node");
    }
    let took = started.elapsed();
    let most = most.load(Ordering::SeqCst);
    let total = finished.load(Ordering::SeqCst);
    eprintln!(
        "10 nodes: {total} deliveries in {took:?} ({:.0}/s), at most {most} at once (limit {LIMIT})",
        total as f64 / took.as_secs_f64()
    );
    assert_eq!(total, NODES * JOBS as usize);
    assert!(
        most <= LIMIT,
        "{most} at once over the nodes, limit {LIMIT}"
    );
    assert_eq!(most, LIMIT, "the shared limit was reached");
    // The shared rate: 100 at once, then 100/s, so 300 starts take 2 s
    // (each node's own 100/s with its burst would let them through in
    // well under a second).
    assert!(took >= Duration::from_millis(1950), "{took:?}");
}

#[test]
fn unreachable_redis_means_local_limits_only_until_it_is_back() {
    let Some(mut redis) = Redis::start(false) else {
        return;
    };
    let limits = node(&redis, "node", Duration::from_secs(30));
    let Grant::Granted(Some(lease)) = limits.acquire(&key(), count_only(1)) else {
        panic!("first lease refused");
    };
    limits.release(&key(), lease);
    redis.stop();
    let asked = Instant::now();
    assert_eq!(limits.acquire(&key(), count_only(1)), Grant::Unavailable);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // A scheduler with these limits admits by its local window alone.
    let mut core: Scheduler<u32> = Scheduler::new(Arc::new(ShapingSettings {
        concurrency_limit: 3,
        initial_concurrency: 3,
        ..ShapingSettings::default()
    }));
    core.set_shared(limits.clone());
    let mut admitted = Vec::new();
    for job in 0..5 {
        let Ok(moves) = core.offer(&key(), job, Instant::now()) else {
            panic!("refused");
        };
        admitted.extend(moves.admitted);
    }
    assert_eq!(admitted, vec![0, 1, 2]);
    // Redis back on the same port: shared again after the back-off (1 s).
    redis.start_again();
    let back = Instant::now();
    let mut grant = limits.acquire(&key(), count_only(1));
    while grant == Grant::Unavailable && back.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
        grant = limits.acquire(&key(), count_only(1));
    }
    let Grant::Granted(Some(lease)) = grant else {
        panic!("{grant:?} {:?} after Redis came back", back.elapsed());
    };
    eprintln!(
        "limits shared again {:?} after Redis came back",
        back.elapsed()
    );
    assert!(matches!(
        limits.acquire(&key(), count_only(1)),
        Grant::Wait(_)
    ));
    limits.release(&key(), lease);
}

#[test]
fn acquiring_and_releasing_costs_a_round_trip_each() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let limits = node(&redis, "node", Duration::from_secs(30));
    let demand = Demand {
        limit: Some(20),
        pace: Some(Pace {
            interval: Duration::from_micros(10),
            burst: Duration::from_millis(100),
        }),
    };
    const N: u32 = 2000;
    let started = Instant::now();
    for _ in 0..N {
        let Grant::Granted(Some(lease)) = limits.acquire(&key(), demand) else {
            panic!("refused");
        };
        limits.release(&key(), lease);
    }
    let each = started.elapsed() / N;
    eprintln!("acquire + release: {each:?} each (loopback)");
    assert!(each < Duration::from_millis(5), "{each:?}");
}

/// A client's SMTP transaction to the sink (one message, one recipient).
fn transact(port: u16, job: u32) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let mut expect = |code: &str, reader: &mut BufReader<std::net::TcpStream>| {
        line.clear();
        reader.read_line(&mut line)?;
        if line.starts_with(code) {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("{code} expected: {line}")))
        }
    };
    expect("220", &mut reader)?;
    for (command, code) in [
        ("HELO client".to_string(), "250"),
        ("MAIL FROM:<a@example.org>".to_string(), "250"),
        (format!("RCPT TO:<job{job}@mx.example.com>"), "250"),
        ("DATA".to_string(), "354"),
        ("Subject: x\r\n\r\nbody\r\n.".to_string(), "250"),
        ("QUIT".to_string(), "221"),
    ] {
        writer.write_all(format!("{command}\r\n").as_bytes())?;
        expect(code, &mut reader)?;
    }
    Ok(())
}

#[test]
fn three_schedulers_against_a_sink_never_exceed_the_destinations_limit_together() {
    use common::scripted_server::Server;
    use mailhop::shaping::{Moves, Shaper};
    use std::sync::{Mutex, OnceLock, Weak};
    let Some(redis) = Redis::start(false) else {
        return;
    };
    const LIMIT: u32 = 3;
    const JOBS: u32 = 20;
    // The sink counts transactions in progress (MAIL to the reply after
    // the dot, which it holds for 15 ms).
    let in_tx = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let sink = {
        let (in_tx, most) = (Arc::clone(&in_tx), Arc::clone(&most));
        Server::concurrent(move |_, peer| {
            peer.reply("220 sink ESMTP");
            let mut open = false;
            while let Ok(line) = peer.read_line() {
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "MAIL" => {
                        let now = in_tx.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        open = true;
                        peer.reply("250 ok");
                    }
                    "DATA" => {
                        peer.reply("354 go on");
                        while let Ok(body) = peer.read_line() {
                            if body == "." {
                                break;
                            }
                        }
                        thread::sleep(Duration::from_millis(15));
                        if open {
                            in_tx.fetch_sub(1, Ordering::SeqCst);
                            open = false;
                        }
                        peer.reply("250 queued");
                    }
                    "QUIT" => {
                        peer.reply("221 bye");
                        break;
                    }
                    _ => peer.reply("250 ok"),
                }
            }
            if open {
                in_tx.fetch_sub(1, Ordering::SeqCst);
            }
        })
    };
    let port = sink.port();
    let finished = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let settings = ShapingSettings {
        enabled: true,
        concurrency_limit: LIMIT,
        initial_concurrency: LIMIT,
        ..ShapingSettings::default()
    };
    let mut shapers = Vec::new();
    for n in 0..3 {
        let me: Arc<OnceLock<Weak<Shaper<u32>>>> = Arc::new(OnceLock::new());
        let mover = {
            let (me, finished, failed) =
                (Arc::clone(&me), Arc::clone(&finished), Arc::clone(&failed));
            move |moves: Moves<u32>| {
                for job in moves.admitted {
                    let (me, finished, failed) =
                        (Arc::clone(&me), Arc::clone(&finished), Arc::clone(&failed));
                    thread::spawn(move || {
                        if let Err(e) = transact(port, job) {
                            failed.lock().unwrap().push(e.to_string());
                        }
                        if let Some(shaper) = me.get().and_then(Weak::upgrade) {
                            shaper.done(&key(), &Verdict::Reached, Tally::default());
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        };
        let shaper = Shaper::start(settings.clone(), Box::new(mover)).expect("shaper");
        let _ = me.set(Arc::downgrade(&shaper));
        shaper.set_shared(node(&redis, &format!("node{n}"), Duration::from_secs(10)));
        shapers.push(shaper);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    for job in 0..JOBS {
        for shaper in &shapers {
            if shaper.submit(&key(), job, &stop).is_err() {
                panic!("job {job} not queued");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished.load(Ordering::SeqCst) < 3 * JOBS as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {} done",
            finished.load(Ordering::SeqCst),
            3 * JOBS
        );
        thread::sleep(Duration::from_millis(10));
    }
    for shaper in &shapers {
        assert_eq!(shaper.drain(), (Vec::new(), Vec::new()));
    }
    assert_eq!(*failed.lock().unwrap(), Vec::<String>::new());
    let most = most.load(Ordering::SeqCst);
    eprintln!("three schedulers: at most {most} transactions at the sink at once (limit {LIMIT})");
    assert!(most <= LIMIT, "{most} at once, limit {LIMIT}");
    assert_eq!(most, LIMIT, "the limit was reached (up to 9 without it)");
}
