use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

const PERIOD: Duration = Duration::from_secs(300);

#[test]
fn a_failed_address_is_marked_for_the_period_then_probed_by_one_caller() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    let a = addr("192.0.2.1:25");
    assert!(!health.is_failed_at(a, t0));
    health.failed_at(a, PERIOD, t0);
    assert!(health.is_failed_at(a, t0));
    assert!(health.is_failed_at(a, t0 + PERIOD - Duration::from_millis(1)));
    // The period is over: the first caller probes it, the others still
    // see the mark while the probe may run.
    let t1 = t0 + PERIOD;
    assert!(!health.is_failed_at(a, t1));
    assert!(health.is_failed_at(a, t1));
    assert!(health.is_failed_at(a, t1 + Duration::from_secs(30)));
    // The probe failed: a new period.
    health.failed_at(a, PERIOD, t1 + Duration::from_secs(30));
    assert!(health.is_failed_at(a, t1 + PERIOD));
    assert!(!health.is_failed_at(a, t1 + Duration::from_secs(30) + PERIOD));
    // This probe connected: the mark is gone for everyone.
    health.succeeded(a);
    assert!(!health.is_failed_at(a, t1 + PERIOD + PERIOD));
    assert!(health.is_empty());
}

#[test]
fn a_probe_that_never_ends_passes_to_another_caller_after_a_period() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    let a = addr("192.0.2.1:25");
    health.failed_at(a, PERIOD, t0);
    let t1 = t0 + PERIOD;
    assert!(!health.is_failed_at(a, t1), "the first caller probes");
    assert!(health.is_failed_at(a, t1 + PERIOD - Duration::from_millis(1)));
    assert!(
        !health.is_failed_at(a, t1 + PERIOD),
        "the next caller probes"
    );
    assert!(health.is_failed_at(a, t1 + PERIOD));
}

#[test]
fn the_port_is_part_of_the_address() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    health.failed_at(addr("192.0.2.1:25"), PERIOD, t0);
    assert!(!health.is_failed_at(addr("192.0.2.1:2525"), t0));
    assert!(!health.is_failed_at(addr("192.0.2.2:25"), t0));
}

#[test]
fn a_successful_connect_clears_the_mark_at_once() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    let a = addr("[2001:db8::1]:25");
    health.failed_at(a, PERIOD, t0);
    health.succeeded(a);
    assert!(!health.is_failed_at(a, t0));
    assert_eq!(health.len(), 0);
}

#[test]
fn a_new_failure_restarts_the_period() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    let a = addr("192.0.2.1:25");
    health.failed_at(a, PERIOD, t0);
    let t1 = t0 + Duration::from_secs(200);
    health.failed_at(a, PERIOD, t1);
    assert!(health.is_failed_at(a, t0 + PERIOD + Duration::from_secs(1)));
    assert!(!health.is_failed_at(a, t1 + PERIOD));
}

#[test]
fn demote_moves_marked_addresses_last_in_stable_order() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    let list: Vec<SocketAddr> = ["10.0.0.1:25", "10.0.0.2:25", "10.0.0.3:25", "10.0.0.4:25"]
        .iter()
        .map(|a| addr(a))
        .collect();
    health.failed_at(list[0], PERIOD, t0);
    health.failed_at(list[2], PERIOD, t0);
    let mut items = list.clone();
    let demoted = health.demote_at(&mut items, |a| Some(*a), t0);
    assert_eq!(demoted.moved, 2);
    assert_eq!(items, vec![list[1], list[3], list[0], list[2]]);
    // The caller claimed its first contact, and connects.
    assert_eq!(demoted.claimed, Some(list[1]));
    health.connect_ended(list[1], true);
    // After the period, Postfix's order is back for the caller that
    // probes; the next caller still has them last while it does.
    let mut items = list.clone();
    let first = health.demote_at(&mut items, |a| Some(*a), t0 + PERIOD);
    assert_eq!(first.moved, 0);
    assert_eq!(first.probes, vec![list[0], list[2]]);
    assert_eq!(items, list);
    let mut items = list.clone();
    let second = health.demote_at(&mut items, |a| Some(*a), t0 + PERIOD);
    assert_eq!((second.moved, second.probes.len()), (2, 0));
}

#[test]
fn demote_leaves_items_without_an_address_in_place() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    let bad = addr("10.0.0.1:25");
    health.failed_at(bad, PERIOD, t0);
    let mut items = vec![None, Some(bad), None];
    assert_eq!(health.demote_at(&mut items, |a| *a, t0).moved, 1);
    assert_eq!(items, vec![None, None, Some(bad)]);
}

#[test]
fn demote_with_nothing_marked_changes_nothing() {
    let health = AddressHealth::new();
    let mut items = vec![addr("10.0.0.2:25"), addr("10.0.0.1:25")];
    let before = items.clone();
    let demoted = health.demote(&mut items, |a| Some(*a));
    assert_eq!((demoted.moved, demoted.probes.len()), (0, 0));
    assert_eq!(items, before);
    // The first address, never connected, is this caller's first contact.
    assert_eq!(demoted.claimed, Some(before[0]));
}

#[test]
fn the_memory_is_bounded() {
    let health = AddressHealth::new();
    let t0 = Instant::now();
    for i in 0..MAX_ENTRIES {
        let ip = std::net::Ipv6Addr::from(u128::try_from(i).unwrap());
        health.failed_at(SocketAddr::new(ip.into(), 25), PERIOD, t0);
    }
    assert_eq!(health.len(), MAX_ENTRIES);
    let extra = addr("192.0.2.9:25");
    health.failed_at(extra, PERIOD, t0);
    assert_eq!(health.len(), MAX_ENTRIES);
    assert!(!health.is_failed_at(extra, t0));
    // Once the old marks expired, there is room again.
    let later = t0 + PERIOD;
    health.failed_at(extra, PERIOD, later);
    assert_eq!(health.len(), 1);
    assert!(health.is_failed_at(extra, later));
}

#[test]
fn a_period_beyond_the_clock_is_ignored() {
    let health = AddressHealth::new();
    health.failed_at(addr("10.0.0.1:25"), Duration::MAX, Instant::now());
    assert!(health.is_empty());
}

#[test]
fn a_first_contact_in_progress_is_tried_last_by_others_until_it_connects() {
    let health = AddressHealth::new();
    let now = Instant::now();
    let dead = addr("192.0.2.1:25");
    let live = addr("192.0.2.2:25");
    health.connecting(dead);
    // Another job puts the address being tried for the first time last.
    assert_eq!(health.state_at(dead, now), State::Failed);
    let mut list = vec![dead, live];
    let demoted = health.demote_at(&mut list, |a| Some(*a), now);
    assert_eq!(demoted.moved, 1);
    assert_eq!(list, vec![live, dead]);
    // It timed out: marked as failed for the period.
    health.connect_ended(dead, false);
    health.failed_at(dead, PERIOD, now);
    assert_eq!(health.state_at(dead, now), State::Failed);
    // A live address connected once: later connects in progress do not
    // make it suspect.
    health.connecting(live);
    health.connect_ended(live, true);
    health.connecting(live);
    assert_eq!(health.state_at(live, now), State::Good);
    health.connect_ended(live, true);
}

#[test]
fn of_two_first_contacts_in_progress_the_older_one_goes_last() {
    let health = AddressHealth::new();
    let dead = addr("192.0.2.1:25");
    let backup = addr("192.0.2.2:25");
    let now = Instant::now();
    // Job 1 claims the primary; job 2 finds it in progress and claims the
    // backup; job 3 finds both in progress: the backup, started last,
    // comes first (a dead address stays in progress the longest).
    let mut first = vec![dead, backup];
    assert_eq!(
        health.demote_at(&mut first, |a| Some(*a), now).claimed,
        Some(dead)
    );
    std::thread::sleep(Duration::from_millis(2));
    let mut second = vec![dead, backup];
    let demoted = health.demote_at(&mut second, |a| Some(*a), now);
    assert_eq!(second, vec![backup, dead]);
    assert_eq!(demoted.claimed, Some(backup));
    let mut third = vec![dead, backup];
    let demoted = health.demote_at(&mut third, |a| Some(*a), now);
    assert_eq!(third, vec![backup, dead]);
    assert_eq!(demoted.claimed, None);
    // The backup connected: proven, it is good for everyone.
    health.connect_ended(backup, true);
    let mut fourth = vec![dead, backup];
    let _ = health.demote_at(&mut fourth, |a| Some(*a), now);
    assert_eq!(fourth, vec![backup, dead]);
}
