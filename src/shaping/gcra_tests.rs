use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn one_per_delay_without_burst() {
    let pace = Pace {
        interval: ms(100),
        burst: Duration::ZERO,
    };
    let start = Instant::now();
    let mut gcra = Gcra::default();
    assert_eq!(gcra.take(pace, start), Ok(()));
    assert_eq!(gcra.take(pace, start), Err(start + ms(100)));
    assert_eq!(gcra.take(pace, start + ms(99)), Err(start + ms(100)));
    assert_eq!(gcra.take(pace, start + ms(100)), Ok(()));
    assert!(!gcra.idle(start + ms(150)));
    assert!(gcra.idle(start + ms(200)));
}

#[test]
fn a_burst_then_the_rate() {
    // 10/s with one second of burst: 10 at once, then one per 100 ms.
    let pace = Pace {
        interval: ms(100),
        burst: ms(900),
    };
    let start = Instant::now();
    let mut gcra = Gcra::default();
    for _ in 0..10 {
        assert_eq!(gcra.take(pace, start), Ok(()));
    }
    assert!(gcra.take(pace, start).is_err());
    assert_eq!(gcra.take(pace, start + ms(100)), Ok(()));
    assert!(gcra.take(pace, start + ms(100)).is_err());
}

#[test]
fn counts_over_a_long_run_match_the_rate() {
    let pace = Pace {
        interval: ms(5),
        burst: ms(995),
    };
    let start = Instant::now();
    let mut gcra = Gcra::default();
    let mut started = 0;
    // Try every millisecond for 10 s: 200/s gives 2,000 plus the burst.
    for t in 0..10_000 {
        if gcra.take(pace, start + ms(t)).is_ok() {
            started += 1;
        }
    }
    assert!((2_000..=2_200).contains(&started), "{started}");
}
