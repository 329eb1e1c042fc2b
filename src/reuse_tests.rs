use super::*;
use crate::nexthop::{SystemServices, parse_nexthop};

fn policy() -> Policy {
    crate::tls_policy::policy_for(&crate::config::Config::default().tls, "", false)
        .expect("default policy")
}

/// The labels a job stores under and looks up by come from one
/// builder: for LMTP `inet:host:port` they used to differ (the store
/// used the raw first element, `inet:` included).
#[test]
fn the_nexthop_label_is_the_same_for_lmtp_inet_and_plain_forms() {
    let keys = Keys::new(Protocol::Lmtp, "h.test", false);
    let label = |text: &str| {
        let list = parse_nexthop(text, Protocol::Lmtp, 24, &SystemServices).expect("parses");
        keys.nexthop(&list[0], policy().level)
    };
    assert_eq!(label("inet:[127.0.0.1]:2424"), label("[127.0.0.1]:2424"));
    assert_eq!(label("[MX.Example]:25, b.test").nexthop, "[mx.example]:25");
}

#[test]
fn a_tls_session_is_kept_only_with_connection_reuse() {
    assert!(may_keep(true, true, false, false));
    assert!(!may_keep(true, true, true, false));
    assert!(may_keep(true, true, true, true));
    assert!(!may_keep(false, true, false, true));
    assert!(!may_keep(true, false, false, true));
}

/// A session authenticated as one SASL user is never found for another
/// user's mail, nor for mail without a credential.
#[test]
fn the_sasl_user_is_part_of_the_endpoint_label() {
    let table = crate::sasl::PasswordTable::parse(
        "mx.a.test alice:one\n[relay.test]:587 bob:two\nshared.test carol:three\n",
    )
    .expect("table");
    let endpoint = Endpoint::Inet("192.0.2.1:25".parse().expect("address"));
    let plain = Keys::new(Protocol::Smtp, "h.test", false);
    let for_a = plain.with_sasl(Some(&table), "a.test");
    let for_relay = plain.with_sasl(Some(&table), "[relay.test]:587");
    let none = plain.with_sasl(Some(&table), "other.test");
    // By host name first, then by the destination as written.
    let alice = for_a.endpoint(&endpoint, &policy(), "mx.a.test");
    let bob = for_relay.endpoint(&endpoint, &policy(), "relay.test");
    let stranger = none.endpoint(&endpoint, &policy(), "relay.test");
    assert_eq!(alice.sasl_username, "alice");
    assert_eq!(bob.sasl_username, "bob");
    assert_eq!(stranger.sasl_username, "");
    assert_ne!(alice, bob);
    assert_ne!(bob, stranger);
    assert_eq!(stranger, plain.endpoint(&endpoint, &policy(), "relay.test"));
    // The host entry wins over the destination for every destination.
    let via_relay = for_relay.endpoint(&endpoint, &policy(), "shared.test");
    assert_eq!(via_relay.sasl_username, "carol");
}
