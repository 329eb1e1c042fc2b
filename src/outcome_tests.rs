use super::*;
use crate::recipients::SuccessDuty;

fn ledger(n: usize) -> Ledger {
    Ledger::new((0..n).map(|i| format!("r{i}@x.test")).collect())
}

fn statuses(ledger: Ledger) -> Vec<(Status, String)> {
    ledger
        .finish()
        .0
        .into_iter()
        .map(|s| (s.outcome.status, s.outcome.dsn.to_string()))
        .collect()
}

#[test]
fn soft_failures_are_kept_until_the_final_server() {
    let mut l = ledger(2);
    let mut t = Trouble::default();
    let soft = Dsn::new(crate::dsn::SYSTEM_TROUBLE, "host h said: 450 busy");
    apply_session(
        &mut l,
        &[0, 1],
        vec![Some(RcptResult::Failed(soft.clone())), None],
        false,
        &Via::plain("h[a]:25"),
        SuccessDuty::Owed("relayed"),
        &mut t,
    );
    assert_eq!(l.left(), 2);
    apply_session(
        &mut l,
        &[0, 1],
        vec![Some(RcptResult::Failed(soft)), None],
        true,
        &Via::plain("h[a]:25"),
        SuccessDuty::Owed("relayed"),
        &mut t,
    );
    assert_eq!(l.left(), 1);
    settle_leftovers(&mut l, &t, LeftoverContext::default());
    assert_eq!(
        statuses(l),
        vec![
            (Status::Deferred, "4.3.0".into()),
            (Status::Deferred, "4.3.0".into())
        ]
    );
}

#[test]
fn hard_failures_bounce_at_once_and_success_is_sent() {
    let mut l = ledger(2);
    let mut t = Trouble::default();
    apply_session(
        &mut l,
        &[1, 0],
        vec![
            Some(RcptResult::Failed(Dsn::new(
                crate::dsn::StatusCode::new(5, 1, 1),
                "no such user",
            ))),
            Some(RcptResult::Delivered(Dsn::new(crate::dsn::OK, "250 ok"))),
        ],
        false,
        &Via::plain("h[a]:25"),
        SuccessDuty::Owed("relayed"),
        &mut t,
    );
    assert_eq!(
        statuses(l),
        vec![
            (Status::Sent, "2.0.0".into()),
            (Status::Bounced, "5.1.1".into())
        ]
    );
}

#[test]
fn soft_non_final_is_soft_until_final() {
    let mut l = ledger(1);
    let mut t = Trouble::default();
    let dsn = Dsn::new(crate::dsn::SMTPUTF8_REQUIRED, "SMTPUTF8 is required").soft_non_final();
    fail_all(&mut l, &dsn, false, None, &mut t);
    assert_eq!(l.left(), 1);
    fail_all(&mut l, &dsn, true, None, &mut t);
    assert_eq!(statuses(l), vec![(Status::Bounced, "5.6.7".into())]);
}

#[test]
fn leftovers_without_reason_get_4_3_0() {
    let mut l = ledger(1);
    settle_leftovers(&mut l, &Trouble::default(), LeftoverContext::default());
    let settled = l.finish().0;
    assert_eq!(
        settled[0].outcome.diagnostic,
        "server unavailable or unable to receive mail"
    );
    assert_eq!(settled[0].outcome.status, Status::Deferred);
}

#[test]
fn hard_leftovers_at_fallback_relay_or_relayhost_become_4_3_5() {
    for context in [
        LeftoverContext {
            last_was_fallback_relay: true,
            nexthop_is_relayhost: false,
        },
        LeftoverContext {
            last_was_fallback_relay: false,
            nexthop_is_relayhost: true,
        },
    ] {
        let mut l = ledger(1);
        let mut t = Trouble::default();
        t.record(&Dsn::new(
            crate::dsn::HOST_NOT_FOUND,
            "Host or domain name not found",
        ));
        settle_leftovers(&mut l, &t, context);
        let settled = l.finish().0;
        assert_eq!(settled[0].outcome.status, Status::Deferred);
        assert_eq!(settled[0].outcome.dsn.to_string(), "4.3.5");
        assert_eq!(
            settled[0].outcome.diagnostic,
            "Host or domain name not found"
        );
    }
    let mut l = ledger(1);
    let mut t = Trouble::default();
    t.record(&Dsn::new(crate::dsn::HOST_NOT_FOUND, "not found"));
    settle_leftovers(&mut l, &t, LeftoverContext::default());
    assert_eq!(statuses(l), vec![(Status::Bounced, "5.4.4".into())]);
}
