use super::*;

#[test]
fn counts_and_shape() {
    let stats = Stats::new();
    stats.job_accepted();
    stats.job_accepted();
    stats.job_accepted();
    stats.job_done(&[Status::Sent, Status::Deferred]);
    stats.job_failed();
    stats.line_refused();
    stats.worker_busy();
    let report = stats.snapshot(
        PoolShape {
            workers: 4,
            queue_depth: 0,
            queue_capacity: 8,
        },
        CacheCounters::default(),
    );
    assert_eq!(report.accepted, 3);
    assert_eq!(report.in_flight, 1);
    assert_eq!(report.done.jobs, 2);
    assert_eq!(report.done.sent, 1);
    assert_eq!(report.done.deferred, 1);
    assert_eq!(report.errors, 2);
    assert_eq!(report.workers.busy, 1);
    let json = serde_json::to_value(&report).unwrap_or_default();
    assert_eq!(json["command"], "status");
    assert_eq!(json["done"]["sent"], 1);
    assert_eq!(json["cache"]["hits"], 0);
    assert_eq!(json["queue"]["capacity"], 8);
}
