use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

#[test]
fn the_clock_ends_a_pause_and_admits_the_waiting_jobs() {
    let (tx, rx) = mpsc::channel::<u32>();
    let tx = Mutex::new(tx);
    let settings = ShapingSettings {
        initial_concurrency: 1,
        backoff: Duration::from_millis(200),
        ..ShapingSettings::default()
    };
    let shaper = Shaper::start(
        settings,
        Box::new(move |moves: Moves<u32>| {
            if let Ok(tx) = tx.lock() {
                for job in moves.admitted {
                    let _ = tx.send(job);
                }
            }
        }),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let key = Key::new(false, "a.example");
    shaper.submit(&key, 1, &stop).unwrap();
    shaper.submit(&key, 2, &stop).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(1));
    let started = Instant::now();
    shaper.done(
        &key,
        &Verdict::Throttled {
            reply: "421 slow down".into(),
            only: true,
            at_greeting: false,
        },
        Tally::default(),
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(2)), Ok(2));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert_eq!(shaper.destinations().len(), 1);
    assert_eq!(shaper.drain(), (Vec::new(), Vec::new()));
}

#[test]
fn a_full_destination_never_blocks_the_submitter() {
    let settings = ShapingSettings {
        initial_concurrency: 1,
        waiting_limit: 1,
        ..ShapingSettings::default()
    };
    let shaper = Shaper::start(settings, Box::new(|_: Moves<u32>| {})).unwrap();
    let stop = AtomicBool::new(false);
    let key = Key::new(false, "a.example");
    for job in 1..=5 {
        shaper.submit(&key, job, &stop).unwrap();
    }
    assert_eq!(shaper.waiting(), 4);
    stop.store(true, Ordering::SeqCst);
    assert!(matches!(
        shaper.submit(&key, 6, &stop),
        Err(Unqueued::Stopping(6))
    ));
    assert_eq!(shaper.drain(), (vec![2], vec![3, 4, 5]));
}
