use super::*;
use crate::job::{JobError, JobResult, RecipientResult};

fn envelope(xforward: &[(&str, &str)], envid: Option<&str>, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: "s@y.test".into(),
        recipients: rcpts.iter().map(|r| JobRecipient::new(*r)).collect(),
        envid: envid.map(str::to_string),
        xforward: xforward
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Envelope::default()
    }
}

fn result(
    address: &str,
    status: Status,
    dsn: &str,
    relay: Option<&str>,
    diag: &str,
) -> RecipientResult {
    RecipientResult {
        address: address.into(),
        status,
        dsn: dsn.into(),
        relay: relay.map(str::to_string),
        diagnostic: diag.into(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

#[test]
fn the_job_id_is_the_mtas_queue_id_else_the_envid_else_ours() {
    let e = envelope(
        &[("NAME", "x"), ("IDENT", "4QxYz1")],
        Some("env-1"),
        &["a@x.test"],
    );
    assert_eq!(job_id(&e), "4QxYz1");
    let e = envelope(&[("IDENT", "[UNAVAILABLE]")], Some("env-1"), &["a@x.test"]);
    assert_eq!(job_id(&e), "env-1");
    let e = envelope(&[], None, &["a@x.test"]);
    assert!(job_id(&e).starts_with("lmtp-"), "{}", job_id(&e));
    let e = envelope(&[("IDENT", "a\u{7}b")], None, &["a@x.test"]);
    assert_eq!(job_id(&e), "ab");
    let long = "x".repeat(400);
    let e = envelope(&[("IDENT", long.as_str())], None, &["a@x.test"]);
    assert_eq!(job_id(&e).len(), 128);
    let e = envelope(&[("IDENT", "\u{1}\u{2}")], None, &["a@x.test"]);
    assert_eq!(job_id(&e), "lmtp");
}

#[test]
fn replies_follow_rcpt_order_and_quote_the_remote_server() {
    let e = envelope(&[], None, &["a@x.test", "b@x.test", "c@x.test", "d@x.test"]);
    let mut replies = vec![None; 4];
    // The result lists the job's recipients in another order: matched by address.
    let answer = Answer::Done(JobResult {
        id: "j".into(),
        recipients: vec![
            result(
                "b@x.test",
                Status::Bounced,
                "5.1.1",
                Some("mx[192.0.2.1]:25"),
                "host mx[192.0.2.1] said: 550 5.1.1 unknown (in reply to RCPT TO command)",
            ),
            result(
                "a@x.test",
                Status::Sent,
                "2.0.0",
                Some("mx[192.0.2.1]:25"),
                "250 2.0.0 Ok: queued as X",
            ),
        ],
        log: None,
    });
    fill_replies(&mut replies, &[0, 1], &e, Some(answer));
    let failed = Answer::Failed(JobError::temporary(Some("j".into()), "no descriptors"));
    fill_replies(&mut replies, &[2], &e, Some(failed));
    fill_replies(&mut replies, &[3], &e, None);
    assert_eq!(
        replies[0].as_deref(),
        Some("250 2.0.0 <a@x.test> host mx[192.0.2.1]:25 said: 250 2.0.0 Ok: queued as X\r\n")
    );
    assert_eq!(
        replies[1].as_deref(),
        Some(
            "550 5.1.1 <b@x.test> host mx[192.0.2.1] said: 550 5.1.1 unknown (in reply to RCPT TO command)\r\n"
        )
    );
    assert_eq!(
        replies[2].as_deref(),
        Some("451 4.3.0 <c@x.test> no descriptors\r\n")
    );
    assert!(
        replies[3]
            .as_deref()
            .is_some_and(|r| r.starts_with("451 4.3.0 <d@x.test> no outcome")),
        "{replies:?}"
    );
}

#[test]
fn a_recipient_missing_from_the_result_is_deferred_never_sent() {
    let e = envelope(&[], None, &["a@x.test", "b@x.test"]);
    let mut replies = vec![None; 2];
    let answer = Answer::Done(JobResult {
        id: "j".into(),
        recipients: vec![result("a@x.test", Status::Sent, "2.0.0", None, "250 Ok")],
        log: None,
    });
    fill_replies(&mut replies, &[0, 1], &e, Some(answer));
    assert_eq!(
        replies[0].as_deref(),
        Some("250 2.0.0 <a@x.test> 250 Ok\r\n")
    );
    assert!(
        replies[1]
            .as_deref()
            .is_some_and(|r| r.starts_with("451 4.3.0 <b@x.test>"))
    );
}

#[test]
fn refusals_answer_every_recipient() {
    let e = envelope(&[], None, &["a@x.test", "b\r\n@x.test"]);
    assert_eq!(
        refuse_all(&e, &Refusal::TooBig),
        "552 5.3.4 <a@x.test> Error: message file too big\r\n552 5.3.4 <b  @x.test> Error: message file too big\r\n"
    );
    assert!(
        refuse_all(&e, &Refusal::Spool("disk full".into())).starts_with("451 4.3.0 <a@x.test>")
    );
}
