use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::tlsrpt::aggregate::{Aggregator, FailureKey, Outcome, PolicyKey};

/// The shape of the example of RFC 8460 section 4.4, with our numbers.
#[test]
fn the_json_has_the_rfc_shape() {
    let agg = Aggregator::new();
    let day = UNIX_EPOCH + Duration::from_secs(1_459_468_800 + 3600);
    let sts = PolicyKey {
        policy_type: PolicyType::Sts,
        policy_string: vec![
            "version: STSv1".into(),
            "mode: testing".into(),
            "mx: *.mail.company-y.example".into(),
            "max_age: 86400".into(),
        ],
        mx_host: vec!["*.mail.company-y.example".into()],
    };
    for _ in 0..2 {
        agg.record(day, "company-y.example", &sts, Outcome::Success);
    }
    agg.record(
        day,
        "company-y.example",
        &sts,
        Outcome::Failure(FailureKey {
            result_type: ResultType::CertificateExpired,
            sending_mta_ip: Some("2001:db8:abcd:12::1".parse().unwrap()),
            receiving_mx_hostname: Some("mx1.mail.company-y.example".into()),
            receiving_ip: None,
        }),
    );
    agg.record(
        day,
        "company-y.example",
        &sts,
        Outcome::Failure(FailureKey {
            result_type: ResultType::StarttlsNotSupported,
            sending_mta_ip: Some("2001:db8:abcd:13::1".parse().unwrap()),
            receiving_mx_hostname: Some("mx2.mail.company-y.example".into()),
            receiving_ip: Some("203.0.113.56".parse().unwrap()),
        }),
    );
    let counts = agg.take(day, true).pop().unwrap();
    let report = Report::build(
        &counts,
        "Company-X",
        "sts-reporting@company-x.example",
        "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let expected = serde_json::json!({
        "organization-name": "Company-X",
        "date-range": {
            "start-datetime": "2016-04-01T00:00:00Z",
            "end-datetime": "2016-04-01T23:59:59Z"
        },
        "contact-info": "sts-reporting@company-x.example",
        "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
        "policies": [{
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: testing",
                    "mx: *.mail.company-y.example", "max_age: 86400"],
                "policy-domain": "company-y.example",
                "mx-host": ["*.mail.company-y.example"]
            },
            "summary": {
                "total-successful-session-count": 2,
                "total-failure-session-count": 2
            },
            "failure-details": [{
                "result-type": "starttls-not-supported",
                "sending-mta-ip": "2001:db8:abcd:13::1",
                "receiving-mx-hostname": "mx2.mail.company-y.example",
                "receiving-ip": "203.0.113.56",
                "failed-session-count": 1
            }, {
                "result-type": "certificate-expired",
                "sending-mta-ip": "2001:db8:abcd:12::1",
                "receiving-mx-hostname": "mx1.mail.company-y.example",
                "failed-session-count": 1
            }]
        }]
    });
    assert_eq!(json, expected, "{}", report.to_json());
}

#[test]
fn no_policy_found_has_no_policy_string_and_no_details_when_all_succeeded() {
    let agg = Aggregator::new();
    let now = UNIX_EPOCH + Duration::from_secs(86_400 * 3);
    agg.record(now, "a.example", &PolicyKey::no_policy(), Outcome::Success);
    let counts = agg.take(now, true).pop().unwrap();
    let json = serde_json::to_value(Report::build(&counts, "o", "c", "id")).unwrap();
    assert_eq!(
        json["policies"][0],
        serde_json::json!({
            "policy": {"policy-type": "no-policy-found", "policy-domain": "a.example"},
            "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0}
        })
    );
}

#[test]
fn the_file_name_is_rfc_8460_section_5_3() {
    let day = Day(16_892);
    assert_eq!(
        file_name("mail.sender.example", "example.com", day, "001", "json.gz"),
        "mail.sender.example!example.com!1459468800!1459555199!001.json.gz"
    );
    assert_eq!(
        file_name("a/b", "../x", day, "i d", "json"),
        "a_b!.._x!1459468800!1459555199!i_d.json"
    );
}
