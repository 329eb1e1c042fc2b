use super::*;
use crate::config::builtin_throttle_rules;

fn rcpt(status: Status, dsn: &str, diagnostic: &str) -> RecipientResult {
    RecipientResult {
        address: "a@example.com".into(),
        status,
        dsn: dsn.into(),
        relay: None,
        diagnostic: diagnostic.into(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

fn deferred(dsn: &str, diagnostic: &str) -> RecipientResult {
    rcpt(Status::Deferred, dsn, diagnostic)
}

#[test]
fn remote_reply_finds_the_reply_and_its_command() {
    assert_eq!(
        remote_reply("host mx[1.2.3.4] said: 451 4.7.0 Rate limit (in reply to RCPT TO command)"),
        Some(("451 4.7.0 Rate limit", Some("RCPT TO")))
    );
    assert_eq!(
        remote_reply("host mx[1.2.3.4] refused to talk to me: 421 4.7.0 Too many connections"),
        Some(("421 4.7.0 Too many connections", None))
    );
    assert_eq!(
        remote_reply("connect to mx[1.2.3.4]:25: Connection refused"),
        None
    );
    assert_eq!(remote_reply("host x said: 4"), None);
}

#[test]
fn a_sent_or_bounced_recipient_means_the_site_was_reached() {
    let rules = builtin_throttle_rules();
    let list = [
        rcpt(Status::Sent, "2.0.0", "250 ok"),
        deferred("4.4.1", "connect to x: Connection refused"),
    ];
    assert_eq!(verdict(&rules, &list), Verdict::Reached);
    let list = [rcpt(
        Status::Bounced,
        "5.1.1",
        "host x said: 550 no (in reply to RCPT TO command)",
    )];
    assert_eq!(verdict(&rules, &list), Verdict::Reached);
    assert_eq!(verdict(&rules, &[]), Verdict::Nothing);
}

#[test]
fn connection_failures_are_site_failures() {
    let rules = builtin_throttle_rules();
    let list = [deferred(
        "4.4.1",
        "connect to mx[127.0.0.1]:25: Connection refused",
    )];
    assert_eq!(
        verdict(&rules, &list),
        Verdict::SiteFailure {
            dsn: "4.4.1".into(),
            diagnostic: "connect to mx[127.0.0.1]:25: Connection refused".into()
        }
    );
    let list = [deferred(
        "4.4.2",
        "lost connection with mx[127.0.0.1] while sending end of data -- message may be sent more than once",
    )];
    assert!(matches!(
        verdict(&rules, &list),
        Verdict::SiteFailure { .. }
    ));
    // A 4xx EHLO reply fails the site; a 4xx RCPT reply does not.
    let list = [deferred(
        "4.0.0",
        "host mx[127.0.0.1] said: 454 go away (in reply to EHLO command)",
    )];
    assert!(matches!(
        verdict(&rules, &list),
        Verdict::SiteFailure { .. }
    ));
    let list = [deferred(
        "4.2.0",
        "host mx[127.0.0.1] said: 450 4.2.0 mailbox busy (in reply to RCPT TO command)",
    )];
    assert_eq!(verdict(&rules, &list), Verdict::Reached);
}

#[test]
fn throttling_replies_pause_and_may_retry() {
    let rules = builtin_throttle_rules();
    let greeting = deferred(
        "4.7.0",
        "host mx[127.0.0.1] refused to talk to me: 421 4.7.0 Too many connections",
    );
    let rate = deferred(
        "4.7.0",
        "host mx[127.0.0.1] said: 451 4.7.0 Rate limit exceeded (in reply to MAIL FROM command)",
    );
    let busy = deferred(
        "4.2.0",
        "host mx[127.0.0.1] said: 450 4.2.0 mailbox busy (in reply to RCPT TO command)",
    );
    assert_eq!(
        verdict(&rules, std::slice::from_ref(&greeting)),
        Verdict::Throttled {
            reply: "421 4.7.0 Too many connections".into(),
            only: true,
            at_greeting: true
        }
    );
    assert_eq!(
        verdict(&rules, &[rate.clone(), greeting.clone()]),
        Verdict::Throttled {
            reply: "451 4.7.0 Rate limit exceeded".into(),
            only: true,
            at_greeting: false
        }
    );
    assert_eq!(
        verdict(&rules, &[rate, busy]),
        Verdict::Throttled {
            reply: "451 4.7.0 Rate limit exceeded".into(),
            only: false,
            at_greeting: false
        }
    );
}

#[test]
fn provider_replies_match_the_builtin_rules() {
    let rules = builtin_throttle_rules();
    for (dsn, text) in [
        (
            "4.7.0",
            "host mta7.am0.yahoodns.net[1.2.3.4] said: 421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1 (in reply to MAIL FROM command)",
        ),
        (
            "4.7.28",
            "host gmail-smtp-in.l.google.com[1.2.3.4] said: 421 4.7.28 Our system has detected an unusual rate of unsolicited mail (in reply to end of DATA command)",
        ),
        (
            "4.2.1",
            "host gmail-smtp-in.l.google.com[1.2.3.4] said: 450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered (in reply to RCPT TO command)",
        ),
        (
            "4.7.500",
            "host outlook-com.olc.protection.outlook.com[1.2.3.4] said: 451 4.7.500 Server busy. Please try again later from [1.2.3.4]. (in reply to RCPT TO command)",
        ),
    ] {
        let r = deferred(dsn, text);
        assert!(is_throttle(&rules, &r), "{text}");
    }
    // A 5xx is never a throttle, whatever its text.
    let r = rcpt(
        Status::Bounced,
        "5.7.1",
        "host x said: 550 5.7.1 rate limit (in reply to RCPT TO command)",
    );
    assert!(!is_throttle(&rules, &r));
    // A bare 421 of a server shutting down or timing out is not one.
    let r = deferred(
        "4.3.2",
        "host x refused to talk to me: 421 4.3.2 Service not available",
    );
    assert!(!is_throttle(&rules, &r));
    let r = deferred(
        "4.4.2",
        "host x said: 421 4.4.2 idle timeout exceeded (in reply to MAIL FROM command)",
    );
    assert!(!is_throttle(&rules, &r));
    // Without rules nothing is a throttle.
    let r = deferred("4.7.0", "host x refused to talk to me: 421 4.7.0 busy");
    assert!(!is_throttle(&[], &r));
}
