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
    assert!(shaper.drain().is_empty());
}

#[test]
fn a_client_waits_for_room_in_a_full_destination_until_stopped() {
    let settings = ShapingSettings {
        initial_concurrency: 1,
        waiting_limit: 1,
        ..ShapingSettings::default()
    };
    let shaper = Shaper::start(settings, Box::new(|_: Moves<u32>| {})).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let key = Key::new(false, "a.example");
    shaper.submit(&key, 1, &stop).unwrap(); // admitted
    shaper.submit(&key, 2, &stop).unwrap(); // waits
    let waiter = {
        let shaper = Arc::clone(&shaper);
        let stop = Arc::clone(&stop);
        let key = key.clone();
        thread::spawn(move || shaper.submit(&key, 3, &stop))
    };
    thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished());
    stop.store(true, Ordering::SeqCst);
    let result = waiter.join().unwrap();
    assert!(matches!(result, Err(Unqueued::Stopping(3))));
    assert_eq!(shaper.drain(), vec![2]);
}
