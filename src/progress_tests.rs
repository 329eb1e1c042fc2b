use super::*;
use crate::dsn::StatusCode;

fn sent() -> Outcome {
    Outcome {
        status: Status::Sent,
        dsn: StatusCode::new(2, 0, 0),
        relay: Some("h[127.0.0.1]:25".into()),
        diagnostic: "250 2.0.0 Ok".into(),
        tls: None,
        tls_policy: None,
        timing: None,
        source: None,
        success: None,
    }
}

#[test]
fn settled_recipients_keep_their_outcome_when_the_job_is_cut() {
    let progress = Progress::new(3);
    let mut lines = Vec::new();
    progress.settle(1, result_of("b@y", &sent()), |first| lines.push(first));
    assert_eq!(progress.begin_body(), BodyGate::Send);
    let mut cut = Vec::new();
    let answer = progress.cut(["a@y", "b@y", "c@y"].into_iter(), "shutting down", |r| {
        cut.push(r.address.clone())
    });
    assert_eq!(cut, vec!["a@y", "c@y"]);
    assert_eq!(answer[1].status, Status::Sent);
    for r in [&answer[0], &answer[2]] {
        assert_eq!(r.status, Status::Deferred);
        assert_eq!(r.dsn, "4.3.0");
        assert_eq!(r.diagnostic, format!("shutting down {MAY_DUPLICATE}"));
    }
    // After the cut: no body, and a late result is information only.
    assert_eq!(progress.begin_body(), BodyGate::Cut);
    progress.settle(0, result_of("a@y", &sent()), |first| lines.push(first));
    assert_eq!(lines, vec![true, false]);
}

#[test]
fn no_body_sent_no_duplicate_warning() {
    let progress = Progress::new(1);
    let answer = progress.cut(["a@y"].into_iter(), "shutting down", |_| {});
    assert_eq!(answer[0].diagnostic, "shutting down");
}

/// An observer that refuses the body until told, counting what it saw.
struct Gate {
    open: std::sync::atomic::AtomicBool,
    settled: std::sync::Mutex<Vec<usize>>,
}

impl SettleObserver for Gate {
    fn settled(&self, index: usize, _result: &RecipientResult) {
        if let Ok(mut s) = self.settled.lock() {
            s.push(index);
        }
    }

    fn before_body(&self) -> Result<(), String> {
        if self.open.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err("outcomes not recorded".into())
        }
    }
}

#[test]
fn an_observer_holds_the_body_back_without_marking_it_sent() {
    let gate = Arc::new(Gate {
        open: std::sync::atomic::AtomicBool::new(false),
        settled: std::sync::Mutex::new(Vec::new()),
    });
    let progress = Progress::observed(2, Some(Arc::clone(&gate) as Arc<dyn SettleObserver>));
    assert_eq!(
        progress.begin_body(),
        BodyGate::Held("outcomes not recorded".into())
    );
    // Held is not "body on its way": a cut now adds no duplicate warning.
    assert!(!progress.body_pending());
    gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(progress.begin_body(), BodyGate::Send);
    assert!(progress.body_pending());
    progress.settle(1, result_of("b@y", &sent()), |_| {});
    assert_eq!(*gate.settled.lock().unwrap(), vec![1]);
}
