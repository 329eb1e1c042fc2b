use super::*;
use crate::dsn::StatusCode;
use crate::recipients::Outcome;

fn settled(address: &str, status: Status, dsn: StatusCode) -> Settled {
    Settled {
        address: address.into(),
        outcome: Outcome {
            status,
            dsn,
            relay: Some("h[127.0.0.1]:2525".into()),
            diagnostic: "250 2.0.0 Ok".into(),
            tls: None,
            tls_policy: None,
            timing: None,
            source: None,
            success: None,
        },
    }
}

#[test]
fn text_and_exit_codes() {
    let ok = JobResult::new(
        "1",
        vec![settled("b@y.test", Status::Sent, StatusCode::new(2, 0, 0))],
    );
    assert_eq!(
        ok.text_lines(),
        vec!["to=<b@y.test>, relay=h[127.0.0.1]:2525, dsn=2.0.0, status=sent (250 2.0.0 Ok)"]
    );
    assert_eq!(ok.exit_code(), 0);
    let deferred = JobResult::new(
        "2",
        vec![
            settled("a@y", Status::Sent, StatusCode::new(2, 0, 0)),
            settled("b@y", Status::Deferred, StatusCode::new(4, 0, 0)),
        ],
    );
    assert_eq!(deferred.exit_code(), 75);
    let bounced = JobResult::new(
        "3",
        vec![
            settled("a@y", Status::Bounced, StatusCode::new(5, 0, 0)),
            settled("b@y", Status::Deferred, StatusCode::new(4, 0, 0)),
        ],
    );
    assert_eq!(bounced.exit_code(), 69);
}

#[test]
fn text_lines_cannot_be_split_by_an_address() {
    let r = JobResult::new(
        "x",
        vec![settled(
            "a@y\r\nto=<forged>",
            Status::Bounced,
            StatusCode::new(5, 1, 3),
        )],
    );
    let lines = r.text_lines();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("to=<a@y??to=<forged>>,"),
        "{}",
        lines[0]
    );
}

#[test]
fn json_shape() {
    let r = JobResult::new(
        "x",
        vec![settled("b@y.test", Status::Sent, StatusCode::new(2, 0, 0))],
    );
    let json = serde_json::to_value(&r).unwrap_or_default();
    assert_eq!(json["recipients"][0]["status"], "sent");
    assert_eq!(json["recipients"][0]["dsn"], "2.0.0");
    assert_eq!(json["id"], "x");
}

/// Every error answer carries its kind on the wire, set where the
/// error is made; `mailhop send` reads the kind, never the text.
#[test]
fn error_answers_have_a_kind() {
    for (error, wire, expected) in [
        (
            JobError::permission_denied(None, "denied"),
            "permission_denied",
            JobErrorKind::PermissionDenied,
        ),
        (
            JobError::unreadable_message(None, "gone"),
            "unreadable_message",
            JobErrorKind::UnreadableMessage,
        ),
        (
            JobError::invalid(None, "bad"),
            "invalid_job",
            JobErrorKind::InvalidJob,
        ),
        (JobError::other(None, "boom"), "other", JobErrorKind::Other),
        (
            JobError::temporary(None, "busy"),
            "temporary",
            JobErrorKind::Temporary,
        ),
    ] {
        let text = serde_json::to_string(&error).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(value["kind"], wire, "{text}");
        let back: Option<JobError> = serde_json::from_str(&text).ok();
        assert_eq!(back.map(|e| e.kind()), Some(expected), "{text}");
    }
    // The text does not decide: an invalid-looking text of another kind
    // stays that kind.
    assert_eq!(
        JobError::other(None, "invalid job: but not really").kind(),
        JobErrorKind::Other
    );
    // A job line that does not parse, or fails its checks, is invalid.
    for line in [
        &b"{"[..],
        br#"{"id":"x"}"#,
        br#"{"id":"","sender":"a@x","recipients":[{"address":"b@y"}],"message":{"data":"x"}}"#,
    ] {
        let kind = parse_job(line).err().map(|e| e.kind());
        assert_eq!(kind, Some(JobErrorKind::InvalidJob));
    }
    // An answer without a kind (an older daemon) reads as Other, or as
    // Temporary when it says retryable.
    let old: Option<JobError> = serde_json::from_str(r#"{"id":null,"error":"x"}"#).ok();
    assert_eq!(old.map(|e| e.kind()), Some(JobErrorKind::Other));
    let old: Option<JobError> =
        serde_json::from_str(r#"{"id":null,"error":"x","retryable":true}"#).ok();
    assert_eq!(old.map(|e| e.kind()), Some(JobErrorKind::Temporary));
}

#[test]
fn out_of_range_arrival_time_is_an_invalid_job() {
    let line = |t: &str| {
        format!(
            r#"{{"id":"t","sender":"a@x","recipients":[{{"address":"b@y"}}],"message":{{"data":"x"}},"arrival_time":{t}}}"#
        )
    };
    for bad in [
        "18446744073709551615",
        "18446744073709551000",
        "253402300800",
    ] {
        let err = parse_job(line(bad).as_bytes()).err();
        assert!(
            err.as_ref().is_some_and(|e| e.id.as_deref() == Some("t")
                && e.error.starts_with("invalid job: arrival_time")),
            "{bad}: {err:?}"
        );
    }
    for good in ["0", "1795440001", "253402300799"] {
        assert!(parse_job(line(good).as_bytes()).is_ok(), "{good}");
    }
    // Negative or fractional numbers are not UNIX seconds either.
    for bad in ["-1", "1.5", "18446744073709551616"] {
        let err = parse_job(line(bad).as_bytes()).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.error.starts_with("invalid job")),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn notify_words() {
    assert!(notify_flags(Some(&[NotifyWord::Never, NotifyWord::Success])).is_err());
    let n = notify_flags(Some(&[NotifyWord::Success, NotifyWord::Delay])).unwrap_or_default();
    assert!(n.success && n.delay && !n.failure);
}

#[test]
fn message_is_a_path_or_inline_data_never_both() {
    let line = |message: &str| {
        format!(
            r#"{{"id":"m","sender":"a@x","recipients":[{{"address":"b@y"}}],"message":{message}}}"#
        )
    };
    let job = parse_job(line(r#"{"path":"/q/1"}"#).as_bytes()).map(|j| j.message.clone());
    assert_eq!(
        job,
        Ok(MessageRef::Path {
            path: "/q/1".into()
        })
    );
    let job =
        parse_job(line(r#"{"data":"Subject: x\n\nhi\n"}"#).as_bytes()).map(|j| j.message.clone());
    assert_eq!(
        job,
        Ok(MessageRef::Data {
            data: "Subject: x\n\nhi\n".into()
        })
    );
    for bad in [
        r#"{}"#,
        r#"{"path":"/q/1","data":"x"}"#,
        r#"{"file":"/q/1"}"#,
        r#""/q/1""#,
    ] {
        let err = parse_job(line(bad).as_bytes()).err();
        assert!(err.is_some_and(|e| e.id.as_deref() == Some("m")), "{bad}");
    }
    // A result line shows the message the way it came.
    let text = serde_json::to_string(&MessageRef::Path {
        path: "/q/1".into(),
    });
    assert_eq!(text.ok().as_deref(), Some(r#"{"path":"/q/1"}"#));
}

/// `retryable` is written only when true; an answer without it reads
/// back as not retryable (older daemons, every other error).
#[test]
fn retryable_errors_are_marked_and_others_unchanged() {
    let plain = serde_json::to_string(&JobError::other(None, "boom")).unwrap_or_default();
    assert_eq!(plain, r#"{"id":null,"error":"boom","kind":"other"}"#);
    let busy =
        serde_json::to_string(&JobError::temporary(Some("j".into()), "busy")).unwrap_or_default();
    assert_eq!(
        busy,
        r#"{"id":"j","error":"busy","kind":"temporary","retryable":true}"#
    );
    let back: Result<JobError, _> = serde_json::from_str(r#"{"id":null,"error":"x"}"#);
    assert!(back.is_ok_and(|e| !e.retryable));
}

/// A recipient list stops being read at MAX_RECIPIENTS + 1, and
/// control characters in any text field make the job invalid.
#[test]
fn recipients_bounded_and_control_characters_refused() {
    let mut line = String::from(r#"{"id":"many","sender":"a@x","recipients":["#);
    for i in 0..=MAX_RECIPIENTS {
        if i > 0 {
            line.push(',');
        }
        line.push_str(r#"{"address":"b@y"}"#);
    }
    line.push_str(r#"],"message":{"data":"x"}}"#);
    let err = parse_job(line.as_bytes())
        .err()
        .unwrap_or_else(|| JobError::other(None, ""));
    assert!(
        err.error.contains("more than 10000 recipients"),
        "{}",
        err.error
    );
    assert_eq!(err.id.as_deref(), Some("many"));
    let base = serde_json::json!({
        "id": "c", "sender": "a@x", "nexthop": "[127.0.0.1]:25",
        "recipients": [{"address": "b@y", "orcpt": "rfc822;b@y"}],
        "message": {"data": "x\r\n\ttab is fine in data"}, "envid": "E1"
    });
    assert!(parse_job(base.to_string().as_bytes()).is_ok());
    for pointer in ["/recipients/0/orcpt", "/envid", "/nexthop"] {
        let mut job = base.clone();
        if let Some(v) = job.pointer_mut(pointer) {
            *v = serde_json::json!("x\u{1b}[31m@y");
        }
        let err = parse_job(job.to_string().as_bytes()).err();
        assert!(
            err.is_some_and(|e| e.error.contains("control character")),
            "{pointer}"
        );
    }
}

/// Deep nesting anywhere is an error, not a crash or a stack overflow.
#[test]
fn deep_nesting_is_an_error() {
    for line in [
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)),
        format!(
            r#"{{"id":{}"x"{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    ] {
        assert!(parse_job(line.as_bytes()).is_err());
        assert!(probe_line(line.as_bytes()).is_none_or(|p| p.id.0.is_none()));
    }
}

fn result_with(recipients: Vec<RecipientResult>, log: Option<Vec<String>>) -> JobResult {
    JobResult {
        id: "job-1".into(),
        recipients,
        log,
    }
}

fn recipient(address: &str, relay: Option<&str>, diagnostic: &str) -> RecipientResult {
    RecipientResult {
        address: address.into(),
        status: Status::Sent,
        dsn: "2.0.0".into(),
        relay: relay.map(Into::into),
        diagnostic: diagnostic.into(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

/// The hand-written answer JSON is byte for byte serde_json's, for
/// plain strings, every kind of escape, non-ASCII text, missing and
/// present optional parts.
#[test]
fn result_json_matches_serde_json() {
    let hostile = "quote \" backslash \\ tab \t nl \n cr \r nul \u{0} bell \u{7} esc \u{1b} del \u{7f} \u{e9}t\u{e9} \u{1f600}";
    let mut deferred = recipient(
        "b@example.test",
        None,
        "connect to x[192.0.2.1]:25: Connection refused",
    );
    deferred.status = Status::Deferred;
    deferred.dsn = "4.4.1".into();
    let mut bounced = recipient(hostile, Some(hostile), hostile);
    bounced.status = Status::Bounced;
    bounced.dsn = "5.1.1".into();
    let mut with_tls = recipient("c@example.test", Some("mx[192.0.2.2]:25"), "250 2.0.0 Ok");
    with_tls.tls = Some(TlsSummary {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        verified: true,
        trust: "verified".into(),
    });
    let mut owed = recipient("d@example.test", Some("mx[192.0.2.3]:25"), "250 2.0.0 Ok");
    owed.success_dsn = Some(SuccessDsn {
        notify: true,
        action: "relayed".into(),
        original_recipient: "rfc822;d@example.test".into(),
        final_recipient: "rfc822;d@example.test".into(),
        remote_mta: Some("dns;mx".into()),
        diagnostic_code: "smtp;250 2.0.0 Ok".into(),
    });
    let mut passed_on = owed.clone();
    if let Some(dsn) = passed_on.success_dsn.as_mut() {
        dsn.notify = false;
        dsn.remote_mta = None;
        dsn.diagnostic_code = hostile.into();
    }
    let mut unverified = with_tls.clone();
    if let Some(tls) = unverified.tls.as_mut() {
        tls.verified = false;
        tls.trust = hostile.into();
    }
    let cases = vec![
        result_with(Vec::new(), None),
        result_with(
            vec![recipient(
                "a@example.test",
                Some("h[127.0.0.1]:25"),
                "250 2.0.0 Ok: queued as 4F2",
            )],
            None,
        ),
        result_with(
            vec![
                deferred.clone(),
                bounced.clone(),
                with_tls,
                unverified,
                owed,
                passed_on,
            ],
            None,
        ),
        result_with(vec![deferred], Some(Vec::new())),
        result_with(
            vec![bounced],
            Some(vec!["tried h[127.0.0.1]:25".into(), hostile.into()]),
        ),
        JobResult {
            id: hostile.into(),
            recipients: Vec::new(),
            log: Some(vec![String::new()]),
        },
    ];
    for result in cases {
        let mut ours = Vec::new();
        result.write_json(&mut ours);
        let theirs = serde_json::to_vec(&result).expect("serde_json");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        let back: JobResult = serde_json::from_slice(&ours).expect("valid JSON");
        assert_eq!(back, result);
    }
}

fn envelope_rcpt(
    address: &str,
    orcpt: Option<&str>,
    success: bool,
) -> crate::smtp::client::Recipient {
    crate::smtp::client::Recipient {
        address: address.into(),
        orcpt: orcpt.map(Into::into),
        notify: crate::smtp::command::Notify {
            success,
            ..Default::default()
        },
    }
}

fn sent_with(duty: Option<crate::recipients::SuccessDuty>) -> Settled {
    let mut s = settled("b@y.test", Status::Sent, StatusCode::new(2, 0, 0));
    s.outcome.relay = Some("mx1.y.test[192.0.2.1]:25".into());
    s.outcome.diagnostic = "250 2.0.0 Ok: queued as 4F2".into();
    s.outcome.success = duty;
    s
}

/// Postfix's smtp_rcpt_done: a server without DSN leaves the success
/// notification to this hop ("relayed"); one with DSN takes it over.
#[test]
fn success_dsn_fields_follow_the_servers_dsn_support() {
    use crate::recipients::SuccessDuty;
    let rcpt = envelope_rcpt("b@y.test", Some("rfc822;orig@y.test"), true);
    let owed = JobResult::with_success_dsn(
        "1",
        vec![sent_with(Some(SuccessDuty::Owed("relayed")))],
        std::slice::from_ref(&rcpt),
    );
    let dsn = owed.recipients[0].success_dsn.clone().expect("success_dsn");
    assert_eq!(
        dsn,
        SuccessDsn {
            notify: true,
            action: "relayed".into(),
            original_recipient: "rfc822;orig@y.test".into(),
            final_recipient: "rfc822;b@y.test".into(),
            remote_mta: Some("dns;mx1.y.test".into()),
            diagnostic_code: "smtp;250 2.0.0 Ok: queued as 4F2".into(),
        }
    );
    let lmtp = JobResult::with_success_dsn(
        "1",
        vec![sent_with(Some(SuccessDuty::Owed("delivered")))],
        std::slice::from_ref(&rcpt),
    );
    assert_eq!(
        lmtp.recipients[0]
            .success_dsn
            .as_ref()
            .map(|d| d.action.as_str()),
        Some("delivered")
    );
    let passed = JobResult::with_success_dsn(
        "1",
        vec![sent_with(Some(SuccessDuty::PassedOn))],
        std::slice::from_ref(&rcpt),
    );
    assert_eq!(
        passed.recipients[0].success_dsn.as_ref().map(|d| d.notify),
        Some(false)
    );
    // No NOTIFY=SUCCESS, or not sent by a session: no field at all.
    let not_asked = JobResult::with_success_dsn(
        "1",
        vec![sent_with(Some(SuccessDuty::Owed("relayed")))],
        &[envelope_rcpt("b@y.test", None, false)],
    );
    assert_eq!(not_asked.recipients[0].success_dsn, None);
    let mut json = Vec::new();
    not_asked.write_json(&mut json);
    assert!(!String::from_utf8_lossy(&json).contains("success_dsn"));
    let deferred = JobResult::with_success_dsn(
        "1",
        vec![settled(
            "b@y.test",
            Status::Deferred,
            StatusCode::new(4, 4, 1),
        )],
        std::slice::from_ref(&rcpt),
    );
    assert_eq!(deferred.recipients[0].success_dsn, None);
}
