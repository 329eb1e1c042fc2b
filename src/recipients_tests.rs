use super::*;

fn outcome(status: Status) -> Outcome {
    Outcome {
        status,
        dsn: StatusCode::new(2, 0, 0),
        relay: None,
        diagnostic: "x".into(),
        tls: None,
        tls_policy: None,
        timing: None,
        source: None,
        success: None,
    }
}

#[test]
fn exactly_one_outcome_each() {
    let mut ledger = Ledger::new(vec!["a@x".into(), "b@x".into(), "c@x".into()]);
    assert_eq!(ledger.pending(), vec![0, 1, 2]);
    assert!(ledger.settle(1, outcome(Status::Sent)));
    assert!(!ledger.settle(1, outcome(Status::Bounced)));
    assert!(!ledger.settle(7, outcome(Status::Sent)));
    assert_eq!(ledger.pending(), vec![0, 2]);
    assert!(ledger.settle(0, outcome(Status::Deferred)));
    let (settled, anomalies) = ledger.finish();
    assert_eq!(settled.len(), 3);
    assert_eq!(settled[1].outcome.status, Status::Sent);
    assert_eq!(settled[2].outcome.status, Status::Deferred);
    assert_eq!(settled[2].outcome.dsn.to_string(), "4.3.0");
    assert_eq!(anomalies, 3);
}
