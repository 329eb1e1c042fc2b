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
