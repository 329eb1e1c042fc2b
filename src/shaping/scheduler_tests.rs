use super::*;
use crate::config::{Rate, ShapingSettings};

fn settings() -> ShapingSettings {
    ShapingSettings::default()
}

fn core(settings: ShapingSettings) -> Scheduler<u32> {
    Scheduler::new(Arc::new(settings))
}

fn key(name: &str) -> Key {
    Key::new(false, name)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn throttled(at_greeting: bool) -> Verdict {
    Verdict::Throttled {
        reply: "421 4.7.0 Too many connections".into(),
        only: true,
        at_greeting,
    }
}

fn site_failure() -> Verdict {
    Verdict::SiteFailure {
        dsn: "4.4.1".into(),
        diagnostic: "connect to mx[127.0.0.1]:25: Connection refused".into(),
    }
}

/// Offers jobs 0..n, returns what was admitted.
fn offer_all(
    core: &mut Scheduler<u32>,
    key: &Key,
    jobs: std::ops::Range<u32>,
    now: Instant,
) -> Vec<u32> {
    let mut admitted = Vec::new();
    for job in jobs {
        match core.offer(key, job, now) {
            Ok(moves) => admitted.extend(moves.admitted),
            Err(_) => panic!("job {job} refused"),
        }
    }
    admitted
}

#[test]
fn admits_up_to_the_initial_window_and_one_more_per_finished_job() {
    let mut core = core(settings());
    let now = Instant::now();
    let a = key("a.example");
    assert_eq!(offer_all(&mut core, &a, 0..8, now), vec![0, 1, 2, 3, 4]);
    let moves = core.done(&a, &Verdict::Reached, Tally::default(), now);
    assert_eq!(moves.admitted, vec![5]);
    let (states, paused) = core.snapshot(now);
    assert_eq!(paused, 0);
    assert_eq!(states[0].active, 5);
    assert_eq!(states[0].waiting, 2);
    assert_eq!(states[0].limit, 20);
}

#[test]
fn destinations_do_not_block_each_other() {
    let mut core = core(settings());
    let now = Instant::now();
    let slow = key("slow.example");
    let fast = key("fast.example");
    assert_eq!(offer_all(&mut core, &slow, 0..50, now).len(), 5);
    assert_eq!(
        offer_all(&mut core, &fast, 100..103, now),
        vec![100, 101, 102]
    );
}

#[test]
fn the_window_grows_with_successes_up_to_the_limit() {
    let mut core = core(ShapingSettings {
        concurrency_limit: 8,
        ..settings()
    });
    let now = Instant::now();
    let a = key("a.example");
    let mut running = offer_all(&mut core, &a, 0..250, now).len();
    let mut max = running;
    for _ in 0..200 {
        let moves = core.done(&a, &Verdict::Reached, Tally::default(), now);
        running = running - 1 + moves.admitted.len();
        max = max.max(running);
    }
    assert_eq!(max, 8);
}

#[test]
fn jobs_beyond_the_waiting_limit_are_set_aside_in_order() {
    let mut core = core(ShapingSettings {
        waiting_limit: 3,
        initial_concurrency: 1,
        concurrency_limit: 1,
        ..settings()
    });
    let now = Instant::now();
    let a = key("a.example");
    assert_eq!(offer_all(&mut core, &a, 0..4, now), vec![0]);
    let moves = core.offer(&a, 4, now).unwrap();
    assert_eq!((moves.parked, moves.unparked), (1, 0));
    let moves = core.offer(&a, 5, now).unwrap();
    assert_eq!(moves.parked, 1);
    assert_eq!(core.snapshot(now).0[0].waiting, 5);
    // One finishes: 1 starts, 4 moves in from aside.
    let moves = core.done(&a, &Verdict::Reached, Tally::default(), now);
    assert_eq!(moves.admitted, vec![1]);
    assert_eq!(moves.unparked, 1);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.extend(
            core.done(&a, &Verdict::Reached, Tally::default(), now)
                .admitted,
        );
    }
    assert_eq!(order, vec![2, 3, 4, 5]);
    // Another destination is not affected.
    assert!(core.offer(&key("b.example"), 10, now).is_ok());
}

#[test]
fn a_cohort_of_site_failures_kills_the_destination_for_the_backoff_time() {
    let mut core = core(settings());
    let now = Instant::now();
    let a = key("dead.example");
    assert_eq!(offer_all(&mut core, &a, 0..10, now).len(), 5);
    let mut rejected = Vec::new();
    let mut failures = 0;
    while rejected.is_empty() && failures < 10 {
        rejected = core
            .done(&a, &site_failure(), Tally::default(), now)
            .rejected;
        failures += 1;
    }
    // 1/5 + 1/4 + 1/4 + 1/4 + 1/3 >= 1: the fifth failure.
    assert_eq!(failures, 5);
    // The waiting jobs (those not admitted before) are deferred at once.
    let ids: Vec<u32> = rejected.iter().map(|(id, _)| *id).collect();
    assert!(!ids.is_empty());
    assert_eq!(rejected[0].1.dsn, "4.4.1");
    assert_eq!(
        rejected[0].1.diagnostic,
        "delivery temporarily suspended: connect to mx[127.0.0.1]:25: Connection refused"
    );
    // New jobs too, until minimal_backoff_time has passed.
    assert!(matches!(core.offer(&a, 50, now), Err(Refusal(50, _))));
    let (states, paused) = core.snapshot(now);
    assert_eq!(paused, 1);
    assert!(states[0].dead);
    let later = now + Duration::from_secs(301);
    let _ = core.due(later);
    // Back with the deliveries still in progress as its window.
    assert!(core.offer(&a, 51, later).is_ok());
    assert!(!core.snapshot(later).0[0].dead);
}

#[test]
fn a_throttle_pauses_the_destination_then_it_resumes() {
    let mut core = core(settings());
    let now = Instant::now();
    let a = key("busy.example");
    assert_eq!(offer_all(&mut core, &a, 0..10, now).len(), 5);
    let moves = core.done(&a, &throttled(false), Tally::default(), now);
    assert!(moves.admitted.is_empty(), "paused: nothing admitted");
    assert!(moves.wake_clock);
    let wake = core.next_wake().unwrap();
    // 2 s with 20 % jitter.
    assert!(
        wake >= now + ms(1_600) && wake <= now + ms(2_400),
        "{:?}",
        wake - now
    );
    let (states, paused) = core.snapshot(now);
    assert_eq!(paused, 1);
    assert_eq!(
        states[0].last_throttle.as_deref(),
        Some("421 4.7.0 Too many connections")
    );
    assert_eq!(states[0].throttled, 1);
    // More throttles during the pause do not lengthen it.
    let _ = core.done(&a, &throttled(false), Tally::default(), now + ms(10));
    assert_eq!(core.next_wake(), Some(wake));
    assert!(core.due(wake - ms(1)).admitted.is_empty());
    let resumed = core.due(wake);
    assert!(!resumed.admitted.is_empty());
}

#[test]
fn repeated_throttles_back_off_exponentially_up_to_the_maximum() {
    let mut core = core(ShapingSettings {
        backoff: Duration::from_secs(10),
        backoff_max: Duration::from_secs(30),
        ..settings()
    });
    let mut now = Instant::now();
    let a = key("busy.example");
    let _ = offer_all(&mut core, &a, 0..100, now);
    let mut pauses = Vec::new();
    for _ in 0..4 {
        let _ = core.done(&a, &throttled(false), Tally::default(), now);
        let wake = core.next_wake().unwrap();
        pauses.push((wake - now).as_secs_f64());
        now = wake;
        let _ = core.due(now);
    }
    assert!((8.0..=12.0).contains(&pauses[0]), "{pauses:?}");
    assert!((16.0..=24.0).contains(&pauses[1]), "{pauses:?}");
    assert!((24.0..=36.0).contains(&pauses[2]), "{pauses:?}");
    assert!((24.0..=36.0).contains(&pauses[3]), "{pauses:?}");
}

#[test]
fn a_greeting_throttle_caps_the_window_below_the_count_that_met_it() {
    let mut core = core(ShapingSettings {
        initial_concurrency: 8,
        backoff: ms(100),
        ..settings()
    });
    let now = Instant::now();
    let a = key("limited.example");
    assert_eq!(offer_all(&mut core, &a, 0..250, now).len(), 8);
    let _ = core.done(&a, &throttled(true), Tally::default(), now);
    let later = now + Duration::from_secs(1);
    let mut running = 7 + core.due(later).admitted.len();
    assert_eq!(running, 7);
    // Successes do not grow it past 7 while the ceiling holds.
    for _ in 0..200 {
        running = running - 1
            + core
                .done(&a, &Verdict::Reached, Tally::default(), later)
                .admitted
                .len();
        assert!(running <= 7);
    }
}

#[test]
fn a_rate_paces_admission() {
    let mut core = core(ShapingSettings {
        rate: Some(Rate {
            count: 10,
            per: Duration::from_secs(1),
        }),
        initial_concurrency: 100,
        concurrency_limit: 100,
        ..settings()
    });
    let now = Instant::now();
    let a = key("paced.example");
    // A burst of one second's worth, then one per 100 ms.
    let first = offer_all(&mut core, &a, 0..50, now);
    assert_eq!(first.len(), 10);
    assert_eq!(core.next_wake(), Some(now + ms(100)));
    assert_eq!(core.due(now + ms(100)).admitted, vec![10]);
    let (states, _) = core.snapshot(now);
    assert_eq!(states[0].rate.as_deref(), Some("10/s"));
}

#[test]
fn a_rate_delay_means_one_at_a_time_one_per_delay() {
    let mut core = core(ShapingSettings {
        rate_delay: Duration::from_secs(1),
        ..settings()
    });
    let now = Instant::now();
    let a = key("slowly.example");
    assert_eq!(offer_all(&mut core, &a, 0..3, now), vec![0]);
    // Finished at once: still one per second.
    assert!(
        core.done(&a, &Verdict::Reached, Tally::default(), now)
            .admitted
            .is_empty()
    );
    assert_eq!(core.due(now + Duration::from_secs(1)).admitted, vec![1]);
}

#[test]
fn per_destination_entries_override_the_defaults() {
    let mut settings = settings();
    settings.destinations.push(crate::config::DestinationShape {
        pattern: ".example.net".into(),
        concurrency_limit: Some(2),
        initial_concurrency: None,
        rate: None,
        rate_delay: None,
    });
    let mut core = core(settings);
    let now = Instant::now();
    assert_eq!(
        offer_all(&mut core, &key("mx.example.net"), 0..5, now).len(),
        2
    );
    assert_eq!(
        offer_all(&mut core, &key("example.org"), 0..10, now).len(),
        5
    );
}

#[test]
fn requeued_jobs_go_first_and_drain_takes_everything() {
    let mut core = core(ShapingSettings {
        initial_concurrency: 1,
        ..settings()
    });
    let now = Instant::now();
    let a = key("a.example");
    assert_eq!(offer_all(&mut core, &a, 0..3, now), vec![0]);
    let _ = core.done(&a, &throttled(false), Tally::default(), now);
    let _ = core.requeue(&a, 0, now);
    let (mut drained, parked) = core.drain();
    drained.sort_unstable();
    assert_eq!(drained, vec![0, 1, 2]);
    assert!(parked.is_empty());
    assert_eq!(core.waiting(), 0);
}

#[test]
fn idle_destinations_are_forgotten() {
    let mut core = core(settings());
    let now = Instant::now();
    let a = key("a.example");
    let _ = offer_all(&mut core, &a, 0..1, now);
    let _ = core.done(
        &a,
        &Verdict::Reached,
        Tally {
            sent: 1,
            ..Tally::default()
        },
        now,
    );
    assert!(core.snapshot(now).0.is_empty());
}

#[test]
fn a_rate_limit_reply_teaches_a_rate_that_then_grows_with_successes() {
    let mut core = core(ShapingSettings {
        initial_concurrency: 20,
        concurrency_limit: 20,
        backoff: ms(100),
        ..settings()
    });
    let start = Instant::now();
    let a = key("limited.example");
    // 100 deliveries started within the first second.
    let mut now = start;
    let _ = offer_all(&mut core, &a, 0..200, now);
    let mut started = 20;
    while started < 100 {
        now += ms(9);
        started += core
            .done(&a, &Verdict::Reached, Tally::default(), now)
            .admitted
            .len();
    }
    let rate_limited = Verdict::Throttled {
        reply: "451 4.7.0 Rate limit exceeded".into(),
        only: true,
        at_greeting: false,
    };
    let _ = core.done(&a, &rate_limited, Tally::default(), now);
    let learned = |core: &Scheduler<u32>, now: Instant| -> f64 {
        let rate = core.snapshot(now).0[0].rate.clone().unwrap_or_default();
        rate.trim_start_matches("learned ")
            .trim_end_matches("/s")
            .parse()
            .unwrap_or(0.0)
    };
    let first = learned(&core, now);
    assert!((60.0..=100.0).contains(&first), "learned {first}/s");
    // After the pause, admissions follow the learned rate: about a
    // tenth of a second's burst, then one per interval.
    now += ms(200);
    let admitted = core.due(now).admitted.len();
    assert!(admitted <= 12, "{admitted} at once");
    // Successes raise it again, one per second per tenth of a second's
    // worth: about 10 for a second's worth.
    for _ in 0..80 {
        let _ = core.done(&a, &Verdict::Reached, Tally::default(), now);
    }
    let grown = learned(&core, now);
    assert!(
        grown > first + 5.0 && grown < first + 15.0,
        "{first} -> {grown}"
    );
}

#[test]
fn a_destination_that_dies_during_a_pause_comes_back_after_its_dead_time() {
    let mut core = core(ShapingSettings {
        initial_concurrency: 2,
        concurrency_limit: 2,
        ..settings()
    });
    let now = Instant::now();
    let a = key("flaky.example");
    assert_eq!(offer_all(&mut core, &a, 0..4, now).len(), 2);
    // A throttle pauses it (a timer in 2 s), then a site failure kills it
    // (its dead-time timer is later than the pause's).
    let _ = core.done(&a, &throttled(false), Tally::default(), now);
    let moves = core.done(&a, &site_failure(), Tally::default(), now);
    assert_eq!(moves.rejected.len(), 2, "the waiting jobs are deferred");
    // The pause's timer fires: still dead, nothing waits, yet the dead
    // time must keep its own timer.
    let _ = core.due(now + Duration::from_secs(3));
    assert!(core.snapshot(now + Duration::from_secs(3)).0[0].dead);
    let wake = core.next_wake();
    assert!(wake.is_some(), "no timer left for the end of the dead time");
    let later = now + Duration::from_secs(301);
    let _ = core.due(later);
    assert_eq!(
        core.offer(&a, 9, later).map(|m| m.admitted).ok(),
        Some(vec![9])
    );
}

#[test]
fn a_dead_time_over_is_noticed_by_the_next_job_even_without_the_clock() {
    let mut core = core(ShapingSettings {
        initial_concurrency: 1,
        ..settings()
    });
    let now = Instant::now();
    let a = key("dead.example");
    let _ = offer_all(&mut core, &a, 0..1, now);
    let _ = core.done(&a, &site_failure(), Tally::default(), now);
    assert!(matches!(core.offer(&a, 1, now), Err(Refusal(1, _))));
    let later = now + Duration::from_secs(301);
    assert_eq!(
        core.offer(&a, 2, later).map(|m| m.admitted).ok(),
        Some(vec![2])
    );
}

/// Shared limits scripted by the test: a count over "all nodes".
struct Counted {
    limit: std::sync::Mutex<(u32, u32, bool)>,
}

impl Counted {
    fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            limit: std::sync::Mutex::new((limit, 0, true)),
        })
    }
}

impl crate::shaping::SharedLimits for Counted {
    fn acquire(&self, _key: &Key, demand: crate::shaping::Demand) -> crate::shaping::Grant {
        let mut state = self.limit.lock().unwrap();
        if !state.2 {
            return crate::shaping::Grant::Unavailable;
        }
        assert_eq!(demand.limit, Some(5));
        if state.1 >= state.0 {
            return crate::shaping::Grant::Wait(ms(50));
        }
        state.1 += 1;
        crate::shaping::Grant::Granted(Some(crate::shaping::Lease(format!("l{}", state.1))))
    }

    fn release(&self, _key: &Key, _lease: crate::shaping::Lease) {
        let mut state = self.limit.lock().unwrap();
        state.1 -= 1;
    }
}

#[test]
fn shared_limits_hold_admission_on_top_of_the_window_and_leases_go_back() {
    let now = Instant::now();
    let mut core = core(ShapingSettings {
        concurrency_limit: 5,
        initial_concurrency: 5,
        ..settings()
    });
    let shared = Counted::new(2);
    core.set_shared(shared.clone());
    let k = key("a.example");
    let admitted = offer_all(&mut core, &k, 0..4, now);
    assert_eq!(
        admitted,
        vec![0, 1],
        "the shared count of 2 holds the window of 5"
    );
    assert_eq!(shared.limit.lock().unwrap().1, 2);
    // The refusal set a timer at the wait the shared limits asked.
    assert_eq!(core.next_wake(), Some(now + ms(50)));
    let moves = core.done(&k, &Verdict::Reached, Tally::default(), now + ms(10));
    assert_eq!(moves.admitted, vec![2]);
    assert_eq!(shared.limit.lock().unwrap().1, 2);
    // Unreachable shared limits: the local window alone.
    shared.limit.lock().unwrap().2 = false;
    let moves = core.due(now + ms(60));
    assert_eq!(moves.admitted, vec![3]);
    for _ in 0..4 {
        core.done(&k, &Verdict::Reached, Tally::default(), now + ms(70));
    }
    assert_eq!(shared.limit.lock().unwrap().1, 0, "every lease given back");
}

#[test]
fn deliveries_admitted_without_a_lease_end_first() {
    let now = Instant::now();
    let mut core = core(ShapingSettings {
        concurrency_limit: 5,
        initial_concurrency: 5,
        ..settings()
    });
    let shared = Counted::new(5);
    core.set_shared(shared.clone());
    let k = key("a.example");
    shared.limit.lock().unwrap().2 = false;
    assert_eq!(offer_all(&mut core, &k, 0..1, now), vec![0]);
    shared.limit.lock().unwrap().2 = true;
    assert_eq!(offer_all(&mut core, &k, 1..2, now), vec![1]);
    assert_eq!(shared.limit.lock().unwrap().1, 1);
    // Either may end first: the lease is kept while one delivery runs
    // (an over-count, never an under-count).
    core.done(&k, &Verdict::Reached, Tally::default(), now);
    assert_eq!(shared.limit.lock().unwrap().1, 1);
    core.done(&k, &Verdict::Reached, Tally::default(), now);
    assert_eq!(shared.limit.lock().unwrap().1, 0);
}
