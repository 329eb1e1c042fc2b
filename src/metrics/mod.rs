//! Prometheus metrics of the daemon (`[metrics]`, docs/metrics.md): the
//! hooks the delivery code calls ([`record_answer`], [`record_connect`],
//! [`record_tls`]), the one process-wide [`Recorder`] they count into, and
//! the HTTP endpoint that serves it ([`bind`], [`Endpoint::serve`]).
//!
//! The hooks are free functions on a process-global recorder that exists
//! only once [`install`] ran (the daemon does when `[metrics] listen` is
//! set): until then each is a load of an empty `OnceLock` and nothing
//! more, so `mailhop send --direct` and a daemon without metrics pay
//! nothing.
//!
//! Layout: `recorder` (what is counted, the top-N destination labels, the
//! rendering of a scrape with the `prometheus-client` crate), `snapshot`
//! (the scrape-time gauges from the daemon's status), `http` (the
//! endpoint's bounded HTTP server).
//!
//! Error contract: recording never fails; [`bind`] returns the startup
//! error text; see `http` for serving.

mod http;
mod recorder;
mod snapshot;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::job::RecipientResult;

pub use http::{BoundFile, Endpoint, REQUEST_MAX, REQUEST_TIME, RESPONSE_TIME, SnapshotFn, bind};
pub use recorder::{Format, OTHER, Recorder};
pub use snapshot::{DestinationGauges, IngressGauges, Snapshot, TlsGauges};

static RECORDER: OnceLock<Arc<Recorder>> = OnceLock::new();

/// Turns recording on for the process (once; a second call returns the
/// first recorder) with `label_limit` destinations labelled by name.
pub fn install(label_limit: usize) -> Arc<Recorder> {
    Arc::clone(RECORDER.get_or_init(|| Arc::new(Recorder::new(label_limit))))
}

/// Whether the hooks record (a caller may skip work done only for them).
pub fn enabled() -> bool {
    RECORDER.get().is_some()
}

/// A job was answered: its recipients' outcomes and DSN codes, counted
/// under `destination` (its first next hop) and `transport` ("smtp" or
/// "lmtp"), and its `latency` (job line read to answer).
pub fn record_answer(
    destination: &str,
    transport: &str,
    recipients: &[RecipientResult],
    latency: Duration,
) {
    if let Some(recorder) = RECORDER.get() {
        recorder.answer(destination, transport, recipients, latency);
    }
}

/// A TCP connect to a mail server took `elapsed` and connected (`ok`) or
/// failed.
pub fn record_connect(elapsed: Duration, ok: bool) {
    if let Some(recorder) = RECORDER.get() {
        recorder.connect(elapsed, ok);
    }
}

/// A TLS handshake ended: `Some((trust, version))` for a session
/// ("verified", "TLSv1.3"), `None` for a failure.
pub fn record_tls(session: Option<(&str, &str)>) {
    if let Some(recorder) = RECORDER.get() {
        recorder.tls(session);
    }
}
