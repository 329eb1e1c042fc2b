use std::net::IpAddr;

use super::*;
use crate::config::TlsConfig;
use crate::mta_sts::parse_policy;
use crate::tls_policy::policy_for;

fn found(mode: &str) -> Found {
    let text = format!(
        "version: STSv1\nmode: {mode}\nmx: mx1.example.com\nmx: *.mail.example.com\nmax_age: 86400\n"
    );
    Found {
        domain: "example.com".into(),
        id: "42".into(),
        policy: parse_policy(text.as_bytes()).unwrap(),
    }
}

fn candidate(host: &str, last: u8) -> Candidate {
    Candidate {
        host: host.into(),
        addr: IpAddr::from([192, 0, 2, last]),
        preference: u32::from(last),
        host_is_ip: false,
        addr_secure: false,
        canonical: None,
    }
}

fn base(level: &str) -> Policy {
    let config = TlsConfig {
        security_level: level.into(),
        ..TlsConfig::default()
    };
    policy_for(&config, "example.com", false).unwrap()
}

#[test]
fn enforce_keeps_matching_hosts_and_requires_verify() {
    let mut list = vec![
        candidate("evil.example.net", 1),
        candidate("mx1.example.com", 2),
        candidate("a.mail.example.com", 3),
        candidate("evil.example.net", 4),
    ];
    let Verdict::Enforce { policy, dropped } = apply(&found("enforce"), &base("may"), &mut list)
    else {
        panic!("not enforced");
    };
    let hosts: Vec<&str> = list.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["mx1.example.com", "a.mail.example.com"]);
    assert_eq!(dropped, ["evil.example.net"]);
    assert_eq!(policy.level, Level::Verify);
    assert_eq!(policy.source, PolicySource::MtaSts);
    assert_eq!(policy.matches, [MatchRule::Hostname]);
    assert_eq!(policy.servername, ServerName::Hostname);
    assert_eq!(policy.min_version, TlsVersion::Tls1_2);
    assert_eq!(
        policy.reason,
        "MTA-STS policy of example.com (id 42) mode enforce"
    );
}

#[test]
fn enforce_without_a_matching_host_is_no_match() {
    let mut list = vec![
        candidate("mx.other.net", 1),
        candidate("b.a.mail.example.com", 2),
    ];
    assert_eq!(
        apply(&found("enforce"), &base("may"), &mut list),
        Verdict::NoMatch {
            text: "MX hosts mx.other.net, b.a.mail.example.com do not match the MTA-STS \
                   policy of example.com"
                .into()
        }
    );
    let mut one = vec![candidate("mx.other.net", 1)];
    assert_eq!(
        apply(&found("enforce"), &base("may"), &mut one),
        Verdict::NoMatch {
            text: "MX host mx.other.net does not match the MTA-STS policy of example.com".into()
        }
    );
}

#[test]
fn an_mx_written_as_an_ip_literal_never_matches() {
    let mut list = vec![Candidate {
        host_is_ip: true,
        ..candidate("192.0.2.1", 1)
    }];
    assert!(matches!(
        apply(&found("enforce"), &base("may"), &mut list),
        Verdict::NoMatch { .. }
    ));
}

#[test]
fn testing_changes_only_source_and_reason() {
    let mut list = vec![
        candidate("evil.example.net", 1),
        candidate("mx1.example.com", 2),
    ];
    let before = list.clone();
    let Verdict::Testing { policy, mismatched } = apply(&found("testing"), &base("may"), &mut list)
    else {
        panic!("not testing");
    };
    assert_eq!(list, before);
    assert_eq!(mismatched, ["evil.example.net"]);
    assert_eq!(policy.level, Level::May);
    assert_eq!(policy.source, PolicySource::MtaSts);
    assert!(policy.reason.contains("testing mode"), "{}", policy.reason);
}

#[test]
fn mode_none_is_unchanged() {
    let mut list = vec![candidate("evil.example.net", 1)];
    assert_eq!(
        apply(&found("none"), &base("may"), &mut list),
        Verdict::Unchanged
    );
    assert_eq!(list.len(), 1);
}

#[test]
fn a_default_level_that_authenticates_is_kept() {
    let mut list = vec![candidate("mx1.example.com", 1)];
    let Verdict::Enforce { policy, .. } = apply(&found("enforce"), &base("secure"), &mut list)
    else {
        panic!("not enforced");
    };
    assert_eq!(policy.level, Level::Secure);
    assert_eq!(policy.source, PolicySource::MtaSts);
}

#[test]
fn a_default_dane_level_keeps_its_dane_mode() {
    let mut list = vec![candidate("mx1.example.com", 1)];
    let dane = base("dane");
    let Verdict::Enforce { policy, .. } = apply(&found("enforce"), &dane, &mut list) else {
        panic!("not enforced");
    };
    assert_eq!(policy.level, Level::Verify);
    assert_eq!(policy.dane, dane.dane);
}
