use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::config::TlsConfig;
use crate::dns::{Answer, DnsError, DnsErrorKind, MxRecord};

/// TXT answers from a table; everything else NXDOMAIN.
struct FakeDns(Vec<(&'static str, &'static str)>);

fn nx() -> DnsError {
    DnsError::new(DnsErrorKind::NotFound, "not found")
}

impl DnsLookup for FakeDns {
    fn mx(&self, _: &str) -> Result<Answer<MxRecord>, DnsError> {
        Err(nx())
    }
    fn a(&self, _: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        Err(nx())
    }
    fn aaaa(&self, _: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        Err(nx())
    }
    fn txt(&self, name: &str) -> Result<Answer<String>, DnsError> {
        let records: Vec<String> = self
            .0
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
            .collect();
        if records.is_empty() {
            return Err(nx());
        }
        Ok(Answer {
            records,
            authenticated: false,
            canonical: None,
        })
    }
}

fn settings(dir: &Path, no_policy_found: bool, submit: bool) -> Settings {
    Settings {
        report_directory: dir.to_path_buf(),
        organization_name: "Org".into(),
        contact_info: "ops@sender.example".into(),
        submitter: "mx.sender.example".into(),
        sender: "postmaster@mx.sender.example".into(),
        no_policy_found,
        submit,
    }
}

fn policy(level: &str) -> Policy {
    let config = TlsConfig {
        security_level: level.into(),
        ..TlsConfig::default()
    };
    crate::tls_policy::policy_for(&config, "example.com", false).unwrap()
}

fn session<'a>(domain: &'a str, mx: &'a str) -> Session<'a> {
    Session {
        domain,
        mx_host: mx,
        receiving_ip: Some("198.51.100.1".parse().unwrap()),
        sending_ip: Some("192.0.2.9".parse().unwrap()),
    }
}

#[test]
fn failures_map_to_rfc_8460_result_types() {
    let cases = [
        (
            TlsFailure::Handshake("x".into()),
            Some(ResultType::ValidationFailure),
        ),
        (
            TlsFailure::NotVerified(CertProblem::NameMismatch, "x".into()),
            Some(ResultType::CertificateHostMismatch),
        ),
        (
            TlsFailure::NotVerified(CertProblem::Expired, "x".into()),
            Some(ResultType::CertificateExpired),
        ),
        (
            TlsFailure::NotVerified(CertProblem::NotTrusted, "x".into()),
            Some(ResultType::CertificateNotTrusted),
        ),
        (
            TlsFailure::NotVerified(CertProblem::TlsaMismatch, "x".into()),
            Some(ResultType::ValidationFailure),
        ),
        (TlsFailure::Config("x".into()), None),
    ];
    for (failure, expected) in cases {
        assert_eq!(tls_failure_result(&failure), expected, "{failure:?}");
    }
    let refusal = |kind| DaneRefusal {
        text: String::new(),
        warning: None,
        kind,
    };
    assert_eq!(
        dane_refusal_result(&refusal(RefusalKind::NoTlsa)),
        Some(ResultType::DaneRequired)
    );
    assert_eq!(
        dane_refusal_result(&refusal(RefusalKind::LookupError)),
        Some(ResultType::DnssecInvalid)
    );
    assert_eq!(
        dane_refusal_result(&refusal(RefusalKind::Unusable)),
        Some(ResultType::TlsaInvalid)
    );
    assert_eq!(dane_refusal_result(&refusal(RefusalKind::Config)), None);
}

#[test]
fn only_names_are_policy_domains() {
    assert_eq!(policy_domain("Example.COM."), Some("example.com".into()));
    for bad in [
        "",
        "192.0.2.1",
        "::1",
        "[mx.example]",
        "/run/lmtp",
        "localhost",
    ] {
        assert_eq!(policy_domain(bad), None, "{bad:?}");
    }
}

#[test]
fn no_policy_sessions_count_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let dns: Arc<dyn DnsLookup> = Arc::new(FakeDns(vec![]));
    let off = TlsRpt::new(settings(dir.path(), false, false), Arc::clone(&dns));
    off.record_session(&policy("verify"), &session("example.com", "mx"), None);
    assert!(off.counts().is_empty());
    let on = TlsRpt::new(settings(dir.path(), true, false), dns);
    on.record_session(&policy("verify"), &session("example.com", "mx"), None);
    on.record_session(&policy("none"), &session("example.com", "mx"), None);
    on.record_session(&policy("verify"), &session("[192.0.2.1]", "mx"), None);
    assert_eq!(on.counts().len(), 1);
}

#[test]
fn sts_sessions_count_under_the_noted_policy_and_policy_failures_too() {
    let dir = tempfile::tempdir().unwrap();
    let rpt = TlsRpt::new(
        settings(dir.path(), false, false),
        Arc::new(FakeDns(vec![])),
    );
    let lines = vec!["version: STSv1".to_string(), "mode: enforce".to_string()];
    rpt.note_sts_policy("Example.com", &lines, &["*.example.com".to_string()]);
    let mut sts = policy("verify");
    sts.source = PolicySource::MtaSts;
    rpt.record_session(&sts, &session("example.com", "mx1.example.com"), None);
    rpt.record_sts_failure("other.example", ResultType::StsPolicyFetchError, None);
    let days = rpt.counts().take(SystemTime::now(), true);
    assert_eq!(days.len(), 2);
    let example = days.iter().find(|d| d.domain == "example.com").unwrap();
    assert_eq!(example.policies[0].0.policy_string, lines);
    assert_eq!(
        example.policies[0].0.mx_host,
        vec!["*.example.com".to_string()]
    );
    let other = days.iter().find(|d| d.domain == "other.example").unwrap();
    assert_eq!(other.policies[0].1.failed, 1);
}

#[test]
fn flush_writes_only_for_domains_with_a_record_and_submits_mailto() {
    let dir = tempfile::tempdir().unwrap();
    let dns = FakeDns(vec![(
        "_smtp._tls.example.com",
        "v=TLSRPTv1; rua=mailto:rpt@example.com,https://r.example.com/x",
    )]);
    let rpt = TlsRpt::new(settings(dir.path(), true, true), Arc::new(dns));
    let jobs: Arc<Mutex<Vec<Job>>> = Arc::default();
    let sink = Arc::clone(&jobs);
    rpt.set_submitter(Box::new(move |job| {
        sink.lock().unwrap().push(job);
        Ok(())
    }));
    rpt.record_session(
        &policy("verify"),
        &session("example.com", "mx1.example.com"),
        None,
    );
    rpt.record_session(
        &policy("verify"),
        &session("example.com", "mx1.example.com"),
        Some(ResultType::CertificateHostMismatch),
    );
    rpt.record_session(&policy("verify"), &session("no-record.example", "mx"), None);
    // Today has not ended: nothing yet.
    assert_eq!(rpt.flush(SystemTime::now(), false), Flushed::default());
    let flushed = rpt.flush(SystemTime::now(), true);
    assert_eq!(
        (flushed.written.len(), flushed.no_record, flushed.submitted),
        (1, 1, 1)
    );
    let path = &flushed.written[0];
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("mx.sender.example!example.com!"), "{name}");
    assert!(name.ends_with(".json"), "{name}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["organization-name"], "Org");
    assert_eq!(
        json["policies"][0]["summary"]["total-failure-session-count"],
        1
    );
    assert_eq!(
        json["policies"][0]["failure-details"][0]["result-type"],
        "certificate-host-mismatch"
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let jobs = jobs.lock().unwrap();
    assert_eq!(jobs[0].recipients[0].address, "rpt@example.com");
    assert_eq!(jobs[0].sender, "postmaster@mx.sender.example");
    match &jobs[0].message {
        MessageRef::Data { data } => {
            assert!(
                data.contains("TLS-Report-Domain: example.com\r\n"),
                "{data}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_encrypt_fallback_of_unusable_tlsa_records_is_a_tlsa_invalid_failure() {
    let dir = tempfile::tempdir().unwrap();
    let rpt = TlsRpt::new(
        settings(dir.path(), false, false),
        Arc::new(FakeDns(vec![])),
    );
    let mut fallback = policy("encrypt");
    fallback.source = PolicySource::Dane;
    fallback.tlsa = vec![crate::dane::Tlsa {
        usage: 0,
        selector: 0,
        matching: 1,
        data: vec![1; 32],
    }];
    rpt.record_session(&fallback, &session("example.com", "mx1.example.com"), None);
    let days = rpt.counts().take(SystemTime::now(), true);
    assert_eq!(days.len(), 1);
    let (key, counts) = &days[0].policies[0];
    assert_eq!(key.policy_type, PolicyType::Tlsa);
    assert_eq!(key.policy_string.len(), 1);
    assert_eq!((counts.successful, counts.failed), (0, 1));
}
