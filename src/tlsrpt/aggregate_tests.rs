use super::*;
use std::time::Duration;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// 2016-04-01T00:00:00Z.
const APRIL_1: u64 = 1_459_468_800;

fn failure(result_type: ResultType, mx: &str) -> Outcome {
    Outcome::Failure(FailureKey {
        result_type,
        sending_mta_ip: Some("192.0.2.1".parse().unwrap()),
        receiving_mx_hostname: Some(mx.into()),
        receiving_ip: Some("198.51.100.7".parse().unwrap()),
    })
}

#[test]
fn days_are_utc_dates() {
    assert_eq!(Day::of(at(APRIL_1)).date(), "2016-04-01");
    assert_eq!(Day::of(at(APRIL_1 + 86_399)).date(), "2016-04-01");
    assert_eq!(Day::of(at(APRIL_1 + 86_400)).date(), "2016-04-02");
    assert_eq!(Day(0).date(), "1970-01-01");
    assert_eq!(Day::of(at(951_782_400)).date(), "2000-02-29");
    assert_eq!(Day::of(at(APRIL_1)).end_secs(), APRIL_1 + 86_399);
}

#[test]
fn sessions_are_counted_per_domain_policy_and_row() {
    let agg = Aggregator::new();
    let none = PolicyKey::no_policy();
    let now = at(APRIL_1 + 100);
    assert!(agg.record(now, "Example.COM.", &none, Outcome::Success));
    assert!(agg.record(now, "example.com", &none, Outcome::Success));
    for _ in 0..3 {
        agg.record(
            now,
            "example.com",
            &none,
            failure(ResultType::CertificateExpired, "mx1"),
        );
    }
    agg.record(
        now,
        "example.com",
        &none,
        failure(ResultType::StarttlsNotSupported, "mx2"),
    );
    let tlsa = PolicyKey {
        policy_type: PolicyType::Tlsa,
        policy_string: vec!["3 1 1 AB".into()],
        mx_host: vec!["mx1".into()],
    };
    agg.record(now, "example.com", &tlsa, Outcome::Success);
    agg.record(now, "other.example", &none, Outcome::Success);

    let days = agg.take(at(APRIL_1 + 86_400), false);
    assert_eq!(days.len(), 2);
    let day = &days[0];
    assert_eq!(
        (day.domain.as_str(), day.day.date()),
        ("example.com", "2016-04-01".into())
    );
    assert_eq!(day.policies.len(), 2);
    let (key, counts) = &day.policies[0];
    assert_eq!(key, &none);
    assert_eq!((counts.successful, counts.failed), (2, 4));
    assert_eq!(counts.failures.len(), 2);
    let expired = counts
        .failures
        .iter()
        .find(|(k, _)| k.result_type == ResultType::CertificateExpired)
        .map(|(_, n)| *n);
    assert_eq!(expired, Some(3));
    assert_eq!(day.policies[1].1.successful, 1);
    assert!(agg.is_empty());
}

#[test]
fn only_ended_days_are_taken_unless_all() {
    let agg = Aggregator::new();
    let none = PolicyKey::no_policy();
    agg.record(at(APRIL_1 + 10), "a.example", &none, Outcome::Success);
    agg.record(
        at(APRIL_1 + 86_400 + 10),
        "a.example",
        &none,
        Outcome::Success,
    );
    // During April 1st nothing has ended.
    assert!(agg.take(at(APRIL_1 + 86_399), false).is_empty());
    // On April 2nd, April 1st has.
    let ended = agg.take(at(APRIL_1 + 86_400 + 20), false);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].day.date(), "2016-04-01");
    assert_eq!(agg.len(), 1);
    let rest = agg.take(at(APRIL_1 + 86_400 + 30), true);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].day.date(), "2016-04-02");
    assert!(agg.is_empty());
}

#[test]
fn bounds_drop_sessions_instead_of_growing() {
    let agg = Aggregator::new();
    let now = at(APRIL_1);
    for n in 0..MAX_POLICIES + 3 {
        let policy = PolicyKey {
            policy_type: PolicyType::Tlsa,
            policy_string: vec![format!("3 1 1 {n:02X}")],
            mx_host: vec![format!("mx{n}")],
        };
        agg.record(now, "a.example", &policy, Outcome::Success);
    }
    assert_eq!(agg.dropped(), 3);
    let none = PolicyKey::no_policy();
    for n in 0..MAX_FAILURE_ROWS + 5 {
        agg.record(
            now,
            "b.example",
            &none,
            failure(ResultType::ValidationFailure, &format!("mx{n}")),
        );
    }
    let days = agg.take(now, true);
    let b = days.iter().find(|d| d.domain == "b.example").unwrap();
    assert_eq!(b.policies[0].1.failed, (MAX_FAILURE_ROWS + 5) as u64);
    assert_eq!(b.policies[0].1.failures.len(), MAX_FAILURE_ROWS);
}
