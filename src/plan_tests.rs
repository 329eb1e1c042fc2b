use super::*;
use crate::config::Config;
use crate::job::{Job, JobRecipient, MessageRef};
use crate::nexthop::SystemServices;

fn job(transport: TransportKind, nexthop: Option<&str>, rcpts: &[&str]) -> CheckedJob {
    Job {
        transport,
        nexthop: nexthop.map(Into::into),
        ..Job::new(
            "P1",
            "a@x.test",
            rcpts.iter().copied().map(JobRecipient::new),
            MessageRef::Data {
                data: "Subject: x\n\nhi\n".into(),
            },
        )
    }
    .into_checked()
    .expect("a valid job")
}

fn plan(config: &Config, job: &CheckedJob) -> Plan {
    Plan::of(job, &config.settings(), &SystemServices)
}

#[test]
fn each_group_carries_its_key_and_destinations_parsed_with_the_protocols_port() {
    let mut config = Config::default();
    config.smtp.port = 2525;
    let smtp = plan(
        &config,
        &job(TransportKind::Smtp, Some("[MX.Example]"), &["u@a.test"]),
    );
    assert_eq!(smtp.groups.len(), 1, "{smtp:?}");
    let group = &smtp.groups[0];
    assert_eq!(group.hop.nexthop, "[MX.Example]");
    assert_eq!(group.hop.key.as_str(), "[mx.example]");
    assert_eq!(
        group.hop.destinations,
        parse_nexthop("[MX.Example]", Protocol::Smtp, 2525, &SystemServices)
    );
    assert!(matches!(
        group.hop.destinations.as_deref(),
        Ok([Destination::Inet { port: 2525, .. }])
    ));
    let lmtp = plan(
        &config,
        &job(TransportKind::Lmtp, Some("inet:[127.0.0.1]"), &["u@a.test"]),
    );
    assert!(matches!(
        lmtp.groups[0].hop.destinations.as_deref(),
        Ok([Destination::Inet { port: 24, .. }])
    ));
    // A next hop that does not parse keeps its error for delivery.
    let bad = plan(
        &config,
        &job(TransportKind::Smtp, Some("[127.0.0.1]:0"), &["u@a.test"]),
    );
    assert!(bad.groups[0].hop.destinations.is_err());
}

#[test]
fn recipients_are_grouped_by_domain_without_a_next_hop_or_relayhost() {
    let config = Config::default();
    let job = job(
        TransportKind::Smtp,
        None,
        &[
            "u@B.test",
            "v@a.test",
            "w@b.test",
            "nodomain",
            "x@[127.0.0.1]:25",
        ],
    );
    let plan = plan(&config, &job);
    let groups: Vec<(&str, &[usize])> = plan
        .groups
        .iter()
        .map(|g| (g.hop.key.as_str(), g.indexes.as_slice()))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("", &[3][..]),
            ("a.test", &[1][..]),
            ("b.test", &[0, 2][..])
        ]
    );
    assert!(plan.groups[0].hop.destinations.is_err());
    assert_eq!(plan.refused.len(), 1);
    assert_eq!(plan.refused[0].0, 4);
    assert_eq!(plan.explicit_key(), None);
    // relayhost takes every SMTP recipient, never an LMTP one.
    let mut relayed = Config::default();
    relayed.smtp.relayhost = "[relay.test]".into();
    let smtp = super::Plan::of(&job, &relayed.settings(), &SystemServices);
    assert_eq!(smtp.groups.len(), 1);
    assert_eq!(smtp.groups[0].hop.key.as_str(), "[relay.test]");
    assert_eq!(smtp.groups[0].indexes, vec![0, 1, 2, 3, 4]);
    assert_eq!(smtp.explicit_key(), None);
}

/// The keys counted as cache demand at submission are the keys of the
/// plan a worker makes later: one grouping rule for both.
#[test]
fn demand_keys_are_the_plans_keys() {
    let mut relayed = Config::default();
    relayed.smtp.relayhost = "[Relay.test]".into();
    for config in [Config::default(), relayed] {
        for job in [
            job(
                TransportKind::Smtp,
                None,
                &["u@B.test", "v@a.test", "nodomain", "x@[127.0.0.1]:25"],
            ),
            job(TransportKind::Smtp, Some("[Host.test]:2525"), &["u@b.test"]),
            job(
                TransportKind::Lmtp,
                Some("inet:Host.test:24"),
                &["u@b.test"],
            ),
        ] {
            let settings = config.settings();
            let planned: Vec<NexthopKey> = plan(&config, &job).keys().cloned().collect();
            assert_eq!(Plan::keys_of(&job, &settings), planned, "{:?}", job.nexthop);
        }
    }
}

#[test]
fn same_route_needs_the_same_transport_and_explicit_key() {
    let config = Config::default();
    let a = plan(
        &config,
        &job(TransportKind::Smtp, Some("[MX.example]:25"), &["u@a.test"]),
    );
    let b = plan(
        &config,
        &job(TransportKind::Smtp, Some("[mx.example]:25"), &["v@b.test"]),
    );
    let lmtp = plan(
        &config,
        &job(TransportKind::Lmtp, Some("[mx.example]:25"), &["v@b.test"]),
    );
    let other = plan(
        &config,
        &job(TransportKind::Smtp, Some("[mx.example]:26"), &["v@b.test"]),
    );
    let domains = plan(&config, &job(TransportKind::Smtp, None, &["u@a.test"]));
    assert!(same_route(&a, &b));
    assert!(!same_route(&a, &lmtp));
    assert!(!same_route(&a, &other));
    assert!(!same_route(&domains, &domains));
}

#[test]
fn a_plan_holds_until_relayhost_or_the_default_port_changes() {
    let job = job(TransportKind::Smtp, None, &["u@a.test"]);
    let config = Config::default();
    let made = plan(&config, &job);
    assert!(made.holds_under(&config.settings()));
    let mut helo = Config::default();
    helo.smtp.helo_name = "other.test".into();
    assert!(made.holds_under(&helo.settings()));
    let mut relayed = Config::default();
    relayed.smtp.relayhost = "[relay.test]".into();
    assert!(!made.holds_under(&relayed.settings()));
    let mut port = Config::default();
    port.smtp.port = 2525;
    assert!(!made.holds_under(&port.settings()));
    // The LMTP port is not the SMTP job's.
    let mut lmtp_port = Config::default();
    lmtp_port.lmtp.port = 2424;
    assert!(made.holds_under(&lmtp_port.settings()));
}

#[test]
fn keys_ignore_case_and_bare_strips_brackets_and_port() {
    let key = NexthopKey::new("[MX.Example]:2525");
    assert_eq!(key, NexthopKey::new("[mx.example]:2525"));
    assert_ne!(key, NexthopKey::new("[mx.example]:2526"));
    assert_eq!(key.bare(), "mx.example");
    assert_eq!(NexthopKey::new("Relay.Test").bare(), "relay.test");
}
