use super::*;
use crate::shaping::gcra::Pace;

#[test]
fn keys_share_one_hash_tag_per_destination() {
    let limits = ClusterLimits::new("redis://127.0.0.1:1/", LimitSettings::default()).unwrap();
    let (leases, tat) = limits.keys(&Key::new(false, "mx.example.com"));
    assert_eq!(leases, "mailhop:limits:{smtp:mx.example.com}:leases");
    assert_eq!(tat, "mailhop:limits:{smtp:mx.example.com}:tat");
    let (leases, _) = limits.keys(&Key::new(true, "[10.0.0.1]:24"));
    assert_eq!(leases, "mailhop:limits:{lmtp:[10.0.0.1]:24}:leases");
}

#[test]
fn a_bad_address_is_an_error() {
    assert!(matches!(
        ClusterLimits::new("nonsense://x", LimitSettings::default()),
        Err(LimitsError::Address(_))
    ));
}

#[test]
fn unreachable_redis_means_local_limits_only_and_backs_off() {
    // Port 1 on loopback: refused at once.
    let limits = ClusterLimits::new("redis://127.0.0.1:1/", LimitSettings::default()).unwrap();
    let demand = Demand {
        limit: Some(2),
        pace: Some(Pace {
            interval: Duration::from_millis(100),
            burst: Duration::ZERO,
        }),
    };
    let key = Key::new(false, "a.example");
    assert_eq!(limits.acquire(&key, demand), Grant::Unavailable);
    assert!(lock(&limits.link).down_until.is_some());
    // Backing off: answered without trying (and at once).
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(limits.acquire(&key, demand), Grant::Unavailable);
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(lock(&limits.link).backoff, BACKOFF_MIN * 2);
    assert_eq!(limits.held(), 0);
}

#[test]
fn a_destination_s_keys_share_one_cluster_slot() {
    let (leases, tat) = limit_keys("mailhop:limits:", "smtp", "mx.example.com");
    assert_eq!(leases, "mailhop:limits:{smtp:mx.example.com}:leases");
    assert_eq!(tat, "mailhop:limits:{smtp:mx.example.com}:tat");
    assert_eq!(
        crate::feed::slot::slot(leases.as_bytes()),
        crate::feed::slot::slot(tat.as_bytes())
    );
    // A name with braces keeps both keys on the same tag.
    let (leases, tat) = limit_keys("mailhop:limits:", "smtp", "a}b{c");
    assert_eq!(
        crate::feed::slot::slot(leases.as_bytes()),
        crate::feed::slot::slot(tat.as_bytes())
    );
}

#[test]
fn a_prefix_that_splits_the_keys_is_refused_on_a_cluster() {
    let settings = LimitSettings {
        prefix: "limits{}".into(),
        cluster: true,
        ..LimitSettings::default()
    };
    assert!(matches!(
        ClusterLimits::new("redis://127.0.0.1:1/", settings),
        Err(LimitsError::Slots(_))
    ));
}
