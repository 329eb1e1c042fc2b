use super::*;
use crate::config::TlsConfig;
use crate::tls_policy::policy_for;

fn dane_policy(level: &str) -> Policy {
    let config = TlsConfig {
        security_level: level.into(),
        ..TlsConfig::default()
    };
    policy_for(&config, "example.test", false).unwrap()
}

fn context() -> DaneContext<'static> {
    DaneContext {
        dnssec_lookups: true,
        ignore_mx_lookup_error: false,
        insecure_mx_policy: InsecureMxPolicy::Dane,
        destination: "example.test",
        host: "mx1.example.test",
        port: 25,
        host_is_ip: false,
        mx_secure: Some(true),
        addr_secure: true,
        canonical: None,
    }
}

fn ee() -> Tlsa {
    Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    }
}

fn pkix() -> Tlsa {
    Tlsa {
        usage: 0,
        selector: 0,
        matching: 1,
        data: vec![7; 32],
    }
}

fn found(
    records: Vec<Tlsa>,
    authenticated: bool,
) -> impl FnMut(&str) -> Result<Answer<Tlsa>, DnsError> {
    move |name| {
        assert_eq!(name, "_25._tcp.mx1.example.test");
        Ok(Answer {
            records: records.clone(),
            authenticated,
            canonical: None,
        })
    }
}

fn failing(kind: DnsErrorKind) -> impl FnMut(&str) -> Result<Answer<Tlsa>, DnsError> {
    move |_| Err(DnsError::new(kind, "Host not found, try again"))
}

fn never() -> impl FnMut(&str) -> Result<Answer<Tlsa>, DnsError> {
    |name| panic!("no TLSA lookup expected, asked for {name}")
}

#[test]
fn usable_records_make_a_dane_policy_that_names_the_host() {
    let p = decide(
        &dane_policy("dane"),
        &context(),
        found(vec![ee(), pkix()], true),
    )
    .unwrap();
    assert_eq!(p.level, Level::Dane);
    assert_eq!(p.dane, None);
    assert_eq!(p.tlsa, vec![ee()]);
    assert!(!p.half_dane);
    assert_eq!(p.source, PolicySource::Dane);
    assert_eq!(
        p.reason,
        "1 usable TLSA record for _25._tcp.mx1.example.test"
    );
    assert_eq!(
        p.matches,
        vec![crate::tls_policy::MatchRule::Name(
            "mx1.example.test".into()
        )]
    );
}

#[test]
fn no_records_is_may_for_dane_and_a_refusal_for_dane_only() {
    for lookup in [DnsErrorKind::NoData, DnsErrorKind::NotFound] {
        let p = decide(&dane_policy("dane"), &context(), failing(lookup)).unwrap();
        assert_eq!(
            (p.level, p.reason.as_str()),
            (Level::May, "no TLSA records found")
        );
        let refusal = decide(&dane_policy("dane-only"), &context(), failing(lookup)).unwrap_err();
        assert_eq!(refusal.text, "no TLSA records found");
    }
    // Records the resolver did not validate count as none.
    let p = decide(&dane_policy("dane"), &context(), found(vec![ee()], false)).unwrap();
    assert_eq!(p.level, Level::May);
}

#[test]
fn unusable_records_are_encrypt_for_dane_and_a_refusal_for_dane_only() {
    let p = decide(&dane_policy("dane"), &context(), found(vec![pkix()], true)).unwrap();
    assert_eq!(
        (p.level, p.reason.as_str()),
        (Level::Encrypt, "TLSA records unusable")
    );
    let refusal = decide(
        &dane_policy("dane-only"),
        &context(),
        found(vec![pkix()], true),
    );
    assert_eq!(refusal.unwrap_err().text, "TLSA records unusable");
}

#[test]
fn a_failed_lookup_refuses_the_server_at_both_levels() {
    for level in ["dane", "dane-only"] {
        let refusal = decide(
            &dane_policy(level),
            &context(),
            failing(DnsErrorKind::Retry),
        );
        let refusal = refusal.unwrap_err();
        assert_eq!(refusal.text, "TLSA lookup error for mx1.example.test:25");
        assert!(refusal.warning.is_some());
    }
}

#[test]
fn insecure_records_skip_the_lookup() {
    let insecure_host = DaneContext {
        addr_secure: false,
        ..context()
    };
    let p = decide(&dane_policy("dane"), &insecure_host, never()).unwrap();
    assert_eq!(
        (p.level, p.reason.as_str()),
        (Level::May, "no TLSA records found")
    );
    let insecure_mx = DaneContext {
        mx_secure: Some(false),
        ..context()
    };
    let refusal = decide(&dane_policy("dane-only"), &insecure_mx, never()).unwrap_err();
    assert_eq!(refusal.text, "non DNSSEC destination");
    let may = DaneContext {
        insecure_mx_policy: InsecureMxPolicy::May,
        ..insecure_mx
    };
    let p = decide(&dane_policy("dane"), &may, never()).unwrap();
    assert_eq!(
        (p.level, p.reason.as_str()),
        (Level::May, "non DNSSEC destination")
    );
    // The default: the host's records still count ("half-dane").
    let p = decide(&dane_policy("dane"), &insecure_mx, found(vec![ee()], true)).unwrap();
    assert_eq!(p.level, Level::Dane);
    assert!(p.half_dane);
    let encrypt = DaneContext {
        insecure_mx_policy: InsecureMxPolicy::Encrypt,
        ..insecure_mx
    };
    let p = decide(&dane_policy("dane"), &encrypt, found(vec![ee()], true)).unwrap();
    assert_eq!(p.level, Level::Encrypt);
}

#[test]
fn without_dnssec_lookups_dane_is_may_and_dane_only_a_configuration_problem() {
    let off = DaneContext {
        dnssec_lookups: false,
        ..context()
    };
    let p = decide(&dane_policy("dane"), &off, never()).unwrap();
    assert_eq!(p.level, Level::May);
    assert!(p.reason.contains("dnssec lookups disabled"), "{}", p.reason);
    let refusal = decide(&dane_policy("dane-only"), &off, never()).unwrap_err();
    assert_eq!(refusal.text, "client TLS configuration problem");
    assert!(refusal.warning.unwrap().contains("dnssec lookups disabled"));
}

#[test]
fn other_levels_pass_through() {
    let p = dane_policy("verify");
    assert_eq!(decide(&p, &context(), never()).unwrap(), p);
}

#[test]
fn an_alias_has_its_tlsa_records_looked_up_at_the_target_first() {
    let alias = DaneContext {
        host: "alias.example.test",
        canonical: Some("mx1.example.test"),
        ..context()
    };
    let mut asked = Vec::new();
    let p = decide(&dane_policy("dane"), &alias, |name| {
        asked.push(name.to_string());
        Ok(Answer {
            records: vec![ee()],
            authenticated: true,
            canonical: None,
        })
    })
    .unwrap();
    assert_eq!(asked, ["_25._tcp.mx1.example.test"]);
    assert_eq!(p.level, Level::Dane);
    assert_eq!(p.matches.len(), 2);
    // Nothing at the target: the alias's own name is asked next.
    let mut asked = Vec::new();
    let p = decide(&dane_policy("dane"), &alias, |name| {
        asked.push(name.to_string());
        Err(DnsError::new(DnsErrorKind::NoData, "no data"))
    })
    .unwrap();
    assert_eq!(
        asked,
        ["_25._tcp.mx1.example.test", "_25._tcp.alias.example.test"]
    );
    assert_eq!(p.level, Level::May);
    // A failure at the target is not followed by the alias's name.
    let mut asked = Vec::new();
    let refusal = decide(&dane_policy("dane"), &alias, |name| {
        asked.push(name.to_string());
        Err(DnsError::new(DnsErrorKind::Retry, "try again"))
    });
    assert_eq!(
        refusal.unwrap_err().text,
        "TLSA lookup error for alias.example.test:25"
    );
    assert_eq!(asked.len(), 1);
}
