//! The metrics recorded as deliveries happen ([`Recorder`]): recipients by
//! outcome and DSN class, recipients per destination with bounded label
//! cardinality ([`Board`]), job latency and connect time histograms, TLS
//! sessions by level; and the rendering of a scrape ([`Recorder::render`]),
//! which adds the gauges of a status [`Snapshot`].
//!
//! Error contract: none. Recording only counts (a poisoned lock is taken
//! over, nothing panics); rendering writes into a `String` and returns the
//! text, empty only should the encoder itself fail.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::job::RecipientResult;
use crate::recipients::Status;

use super::snapshot::{Snapshot, SnapshotCollector};

/// The label of everything not among the top destinations.
pub const OTHER: &str = "other";

/// Longest label value kept (destination names come from jobs).
const LABEL_MAX: usize = 255;

/// Job latency buckets, in seconds: from a pipelined message on a cached
/// session to a job that waited out throttling.
const JOB_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Connect time buckets, in seconds: loopback to the connect timeout.
const CONNECT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The output format of a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (what promtool checks).
    Prometheus,
    /// OpenMetrics 1.0 text (for scrapers that ask for it).
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    transport: &'static str,
    outcome: &'static str,
    dsn_class: &'static str,
    dsn_subject: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
    transport: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    level: &'static str,
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn job_histogram() -> Histogram {
    Histogram::new(JOB_BUCKETS)
}

fn connect_histogram() -> Histogram {
    Histogram::new(CONNECT_BUCKETS)
}

/// Everything the hooks record, for one process.
#[derive(Debug)]
pub struct Recorder {
    recipients: Family<OutcomeLabels, Counter>,
    by_destination: Family<DestinationLabels, Counter>,
    jobs: HistogramFamily<TransportLabels>,
    connects: HistogramFamily<ResultLabels>,
    tls: Family<TlsLabels, Counter>,
    tls_failures: Counter,
    board: Mutex<Board>,
    label_limit: usize,
}

impl Recorder {
    /// A recorder giving at most `label_limit` destinations a label of
    /// their own.
    pub fn new(label_limit: usize) -> Self {
        Self {
            recipients: Family::default(),
            by_destination: Family::default(),
            jobs: Family::new_with_constructor(job_histogram),
            connects: Family::new_with_constructor(connect_histogram),
            tls: Family::default(),
            tls_failures: Counter::default(),
            board: Mutex::new(Board::new(label_limit)),
            label_limit,
        }
    }

    fn board(&self) -> MutexGuard<'_, Board> {
        self.board
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A job was answered: its recipients by outcome and DSN, under its
    /// destination, and its latency.
    pub fn answer(
        &self,
        destination: &str,
        transport: &str,
        recipients: &[RecipientResult],
        latency: Duration,
    ) {
        let transport = transport_label(transport);
        let mut by_outcome = [0u64; 3];
        for rcpt in recipients {
            let (dsn_class, dsn_subject) = dsn_labels(&rcpt.dsn);
            let outcome = rcpt.status.as_str();
            self.recipients
                .get_or_create(&OutcomeLabels {
                    transport,
                    outcome,
                    dsn_class,
                    dsn_subject,
                })
                .inc();
            by_outcome[outcome_index(rcpt.status)] += 1;
        }
        let total: u64 = by_outcome.iter().sum();
        if total > 0 {
            let key = DestinationKey {
                name: label_value(destination),
                transport,
            };
            // Under the board's lock: a rebalance cannot drop the series
            // between the decision and the count.
            let mut board = self.board();
            let name = if board.count(&key, total) {
                key.name.clone()
            } else {
                OTHER.to_string()
            };
            for (status, n) in OUTCOMES.iter().zip(by_outcome) {
                if n > 0 {
                    self.by_destination
                        .get_or_create(&DestinationLabels {
                            destination: name.clone(),
                            transport,
                            outcome: status.as_str(),
                        })
                        .inc_by(n);
                }
            }
        }
        self.jobs
            .get_or_create(&TransportLabels { transport })
            .observe(latency.as_secs_f64());
    }

    /// A TCP connect ended, connected (`ok`) or not.
    pub fn connect(&self, elapsed: Duration, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.connects
            .get_or_create(&ResultLabels { result })
            .observe(elapsed.as_secs_f64());
    }

    /// A TLS handshake succeeded with this trust level (Postfix's word:
    /// "verified", "trusted", "untrusted", "anonymous") and protocol
    /// version, or (`None`) failed.
    pub fn tls(&self, session: Option<(&str, &str)>) {
        match session {
            Some((level, version)) => {
                self.tls
                    .get_or_create(&TlsLabels {
                        level: trust_label(level),
                        version: label_value(version),
                    })
                    .inc();
            }
            None => {
                self.tls_failures.inc();
            }
        }
    }

    /// The text of one scrape: the recorded metrics, then the gauges of
    /// `snapshot` (when the daemon gave one). Reconsiders which
    /// destinations carry a label of their own first.
    pub fn render(&self, snapshot: Option<Snapshot>, format: Format) -> String {
        {
            let mut board = self.board();
            for key in board.rebalance() {
                for status in OUTCOMES {
                    self.by_destination.remove(&DestinationLabels {
                        destination: key.name.clone(),
                        transport: key.transport,
                        outcome: status.as_str(),
                    });
                }
            }
        }
        let mut registry = Registry::with_prefix("mailhop");
        // Declared in every scrape, even before their first series, so
        // that dashboards and alerts see the whole schema from the start.
        registry.register_collector(Box::new(Declared {
            recipients: self.recipients.clone(),
            by_destination: self.by_destination.clone(),
            jobs: self.jobs.clone(),
            connects: self.connects.clone(),
            tls: self.tls.clone(),
            tls_failures: self.tls_failures.clone(),
        }));
        if let Some(snapshot) = snapshot {
            registry
                .register_collector(Box::new(SnapshotCollector::new(snapshot, self.label_limit)));
        }
        let mut out = String::new();
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        };
        if let Err(e) = encoded {
            log::warn!("metrics: cannot encode a scrape: {e}");
            out.clear();
        }
        out
    }
}

/// The recorded metrics of one scrape, each declared (`# HELP`, `# TYPE`)
/// whether or not it has a series yet.
#[derive(Debug)]
struct Declared {
    recipients: Family<OutcomeLabels, Counter>,
    by_destination: Family<DestinationLabels, Counter>,
    jobs: HistogramFamily<TransportLabels>,
    connects: HistogramFamily<ResultLabels>,
    tls: Family<TlsLabels, Counter>,
    tls_failures: Counter,
}

fn declare(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for Declared {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        declare(
            &mut encoder,
            "recipients",
            "Recipients answered, by transport, outcome and DSN class and subject (\"4\", \"4.4\")",
            &self.recipients,
        )?;
        declare(
            &mut encoder,
            "destination_recipients",
            "Recipients answered per destination (the job's first next hop); destinations beyond destination_label_limit are summed as \"other\"",
            &self.by_destination,
        )?;
        declare(
            &mut encoder,
            "job_duration_seconds",
            "Job latency: from the job line read to its answer",
            &self.jobs,
        )?;
        declare(
            &mut encoder,
            "connect_duration_seconds",
            "Time of TCP connects to mail servers, by result",
            &self.connects,
        )?;
        declare(
            &mut encoder,
            "tls_sessions",
            "TLS sessions established, by trust level and protocol version",
            &self.tls,
        )?;
        declare(
            &mut encoder,
            "tls_handshake_failures",
            "TLS handshakes that failed",
            &self.tls_failures,
        )
    }
}

/// The outcomes, in the order of the per-outcome arrays.
const OUTCOMES: [Status; 3] = [Status::Sent, Status::Deferred, Status::Bounced];

fn outcome_index(status: Status) -> usize {
    match status {
        Status::Sent => 0,
        Status::Deferred => 1,
        Status::Bounced => 2,
    }
}

/// "smtp" or "lmtp" (anything else counts as smtp).
fn transport_label(transport: &str) -> &'static str {
    if transport.eq_ignore_ascii_case("lmtp") {
        "lmtp"
    } else {
        "smtp"
    }
}

/// One of Postfix's four trust words, else "other".
fn trust_label(level: &str) -> &'static str {
    ["verified", "trusted", "untrusted", "anonymous"]
        .into_iter()
        .find(|word| word.eq_ignore_ascii_case(level))
        .unwrap_or(OTHER)
}

/// A label value from outside (a destination, a TLS version): at most
/// [`LABEL_MAX`] bytes, cut at a character boundary.
fn label_value(text: &str) -> String {
    if text.len() <= LABEL_MAX {
        return text.to_string();
    }
    let mut end = LABEL_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_string()
}

/// The DSN class ("2", "4", "5") and class.subject ("4.4") of an RFC 3463
/// code such as "4.4.1"; a code of another shape gives "other" for what
/// cannot be read (the subject's number is at most three digits). The
/// common one-digit subjects are static text.
pub(super) fn dsn_labels(dsn: &str) -> (&'static str, Cow<'static, str>) {
    const SUBJECTS: [[&str; 10]; 3] = [
        [
            "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "2.9",
        ],
        [
            "4.0", "4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "4.7", "4.8", "4.9",
        ],
        [
            "5.0", "5.1", "5.2", "5.3", "5.4", "5.5", "5.6", "5.7", "5.8", "5.9",
        ],
    ];
    let mut parts = dsn.split('.');
    let (class, row) = match parts.next() {
        Some("2") => ("2", &SUBJECTS[0]),
        Some("4") => ("4", &SUBJECTS[1]),
        Some("5") => ("5", &SUBJECTS[2]),
        _ => return (OTHER, Cow::Borrowed(OTHER)),
    };
    let subject = match parts.next() {
        Some(s) if (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) => {
            match s.parse::<usize>().ok().and_then(|n| row.get(n)) {
                Some(text) if s.len() == 1 => Cow::Borrowed(*text),
                _ => Cow::Owned(format!("{class}.{s}")),
            }
        }
        _ => Cow::Borrowed(OTHER),
    };
    (class, subject)
}

/// A destination as counted: its name and transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct DestinationKey {
    pub(super) name: String,
    pub(super) transport: &'static str,
}

/// Which destinations carry a label of their own: at most `limit` of
/// them, those with the most recipients since start, counted in a table
/// of at most `capacity` destinations (lossy counting: when the table is
/// full, the less counted half of the unlabelled destinations is
/// forgotten in one pass, so a destination with much traffic always
/// stays, and counting stays cheap whatever the number of destinations).
/// Between scrapes a free label goes to the first destination that comes;
/// at each scrape ([`Board::rebalance`]) an outsider takes the place of
/// the weakest labelled destination once it has a quarter more recipients
/// (so that two neighbours do not swap on every scrape). Each exported
/// series only ever counts up; one that loses its label disappears.
#[derive(Debug)]
pub(super) struct Board {
    limit: usize,
    capacity: usize,
    tally: HashMap<DestinationKey, u64>,
    labelled: HashSet<DestinationKey>,
}

impl Board {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            capacity: limit.saturating_mul(4).max(1024),
            tally: HashMap::new(),
            labelled: HashSet::new(),
        }
    }

    /// Counts `n` recipients for `key`; whether they go under its own label.
    pub(super) fn count(&mut self, key: &DestinationKey, n: u64) -> bool {
        if let Some(tally) = self.tally.get_mut(key) {
            *tally = tally.saturating_add(n);
        } else {
            if self.tally.len() >= self.capacity {
                self.forget_the_lesser_half();
            }
            self.tally.insert(key.clone(), n);
        }
        if self.labelled.contains(key) {
            return true;
        }
        if self.labelled.len() < self.limit {
            self.labelled.insert(key.clone());
            return true;
        }
        false
    }

    /// Drops the unlabelled destinations counted no more than the median
    /// of them (at least half of them).
    fn forget_the_lesser_half(&mut self) {
        let labelled = &self.labelled;
        let mut counts: Vec<u64> = self
            .tally
            .iter()
            .filter(|(key, _)| !labelled.contains(*key))
            .map(|(_, tally)| *tally)
            .collect();
        if counts.is_empty() {
            return;
        }
        let middle = counts.len() / 2;
        let (_, median, _) = counts.select_nth_unstable(middle);
        let median = *median;
        self.tally
            .retain(|key, tally| labelled.contains(key) || *tally > median);
    }

    /// Gives the labels to the destinations with the most recipients;
    /// returns those that lost theirs.
    pub(super) fn rebalance(&mut self) -> Vec<DestinationKey> {
        let labelled = &self.labelled;
        let mut outsiders: Vec<(u64, &DestinationKey)> = self
            .tally
            .iter()
            .filter(|(key, _)| !labelled.contains(*key))
            .map(|(key, tally)| (*tally, key))
            .collect();
        outsiders.sort_unstable_by_key(|(tally, _)| std::cmp::Reverse(*tally));
        outsiders.truncate(self.limit);
        let mut insiders: Vec<(u64, &DestinationKey)> = labelled
            .iter()
            .map(|key| (self.tally.get(key).copied().unwrap_or(0), key))
            .collect();
        insiders.sort_unstable_by_key(|(tally, _)| *tally);
        let mut free = self.limit.saturating_sub(insiders.len());
        let mut promoted = Vec::new();
        let mut demoted = Vec::new();
        let mut weakest = insiders.iter();
        for (strength, outsider) in outsiders {
            if free > 0 {
                free -= 1;
                promoted.push(outsider.clone());
                continue;
            }
            // Outsiders come strongest first: once one cannot take the
            // weakest label, none after it can.
            let Some((weak, insider)) = weakest.next() else {
                break;
            };
            if strength <= weak.saturating_add(weak / 4).saturating_add(1) {
                break;
            }
            promoted.push(outsider.clone());
            demoted.push((*insider).clone());
        }
        for key in &demoted {
            self.labelled.remove(key);
        }
        self.labelled.extend(promoted);
        demoted
    }

    /// The destinations carrying a label now (for tests).
    #[cfg(test)]
    pub(super) fn labelled(&self) -> Vec<String> {
        let mut names: Vec<String> = self.labelled.iter().map(|k| k.name.clone()).collect();
        names.sort();
        names
    }
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
