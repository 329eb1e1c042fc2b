//! The scrape-time gauges: the daemon's status as the metrics see it
//! ([`Snapshot`], filled by the daemon from its status report at every
//! scrape) and their encoding ([`SnapshotCollector`]): jobs, queue,
//! workers, the connection cache's counters, paused destinations and each
//! destination's shaping state (the first `destination_label_limit`
//! destinations of the report, busiest first, under their names; the rest
//! summed under "other").
//!
//! The types are this module's own rather than `crate::stats`': the
//! status report depends on the connection cache, which connects, which
//! records here.
//!
//! Error contract: encoding fails only when the encoder does.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::recorder::OTHER;

/// The daemon's counters at one scrape (see `mailhop status`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Jobs accepted since start.
    pub accepted: u64,
    /// Jobs answered since start (results and error results).
    pub answered: u64,
    /// Error results: refused lines and jobs that could not run.
    pub errors: u64,
    /// Accepted jobs without an answer yet.
    pub in_flight: u64,
    pub workers: u64,
    pub busy_workers: u64,
    pub queue_depth: u64,
    pub queue_capacity: u64,
    pub uptime_seconds: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_stored: u64,
    pub cache_idle: u64,
    pub cache_chained: u64,
    /// Destinations paused now (throttled or dead).
    pub paused: u64,
    /// Per-destination shaping state, busiest first.
    pub destinations: Vec<DestinationGauges>,
    /// The LMTP ingress, when `[[ingress]]` listeners run.
    pub ingress: Option<IngressGauges>,
    /// TLS session resumption and broken-TLS memory.
    pub tls: Option<TlsGauges>,
}

/// The TLS memory's counters (see `mailhop status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsGauges {
    pub new_sessions: u64,
    pub resumed_sessions: u64,
    pub cached_sessions: u64,
    pub broken_servers: u64,
    pub skipped_handshakes: u64,
}

/// The LMTP ingress's counters (see `mailhop status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressGauges {
    /// LMTP connections open now.
    pub connections: u64,
    /// Messages received (a final dot) since start.
    pub messages: u64,
    /// Per-recipient replies after the final dot, by class.
    pub replied_2xx: u64,
    pub replied_4xx: u64,
    pub replied_5xx: u64,
    /// Jobs cancelled (the deadline, or the MTA hung up).
    pub cancelled: u64,
}

/// One destination's shaping state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestinationGauges {
    pub name: String,
    pub transport: String,
    pub active: u64,
    pub window: u64,
    pub limit: u64,
    pub waiting: u64,
    /// Seconds left in a pause.
    pub paused_for: Option<f64>,
    pub dead: bool,
    /// Throttling replies seen.
    pub throttled: u64,
    /// The reply that paused it last.
    pub last_throttle: Option<String>,
}

/// Encodes a [`Snapshot`] into a scrape.
#[derive(Debug)]
pub(super) struct SnapshotCollector {
    snapshot: Snapshot,
    label_limit: usize,
}

impl SnapshotCollector {
    pub(super) fn new(snapshot: Snapshot, label_limit: usize) -> Self {
        Self {
            snapshot,
            label_limit,
        }
    }
}

/// A metric of the snapshot: its name, help text, and whether it is a
/// counter (else a gauge).
type Plain = (&'static str, &'static str, bool, u64);

/// One per-destination series: its labels and value.
type Row = ([(&'static str, String); 2], f64);

/// A per-destination series with one more label.
type Row3 = ([(&'static str, String); 3], f64);

/// The bounded label of a throttling reply: its reply code and enhanced
/// status code ("421 4.7.0", "421"), found as the first three-digit word
/// starting with 2, 4 or 5 (and the x.y.z word after it); "other" when
/// there is none, "none" without a reply.
pub(super) fn reply_label(reply: Option<&str>) -> String {
    let Some(reply) = reply else {
        return "none".into();
    };
    let mut words = reply.split(|c: char| c.is_ascii_whitespace() || c == '-');
    let is_code = |w: &str| {
        w.len() == 3
            && w.bytes().all(|b| b.is_ascii_digit())
            && matches!(w.as_bytes().first(), Some(b'2' | b'4' | b'5'))
    };
    let is_enhanced = |w: &str| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    while let Some(word) = words.next() {
        if is_code(word) {
            return match words.next() {
                Some(next) if is_enhanced(next) => format!("{word} {next}"),
                _ => word.to_string(),
            };
        }
    }
    super::recorder::OTHER.to_string()
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let encoder = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    metric.encode(encoder)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    let encoder = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    metric.encode(encoder)
}

/// A family of per-destination series of one type (declared even
/// without a destination).
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[Row],
) -> std::fmt::Result {
    let mut metric_encoder = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let series = metric_encoder.encode_family(labels)?;
        if kind == MetricType::Counter {
            ConstCounter::new(*value).encode(series)?;
        } else {
            ConstGauge::new(*value).encode(series)?;
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let plain: [Plain; 15] = [
            (
                "jobs_accepted",
                "Jobs accepted since start",
                true,
                s.accepted,
            ),
            (
                "jobs_answered",
                "Jobs answered since start (results and error results)",
                true,
                s.answered,
            ),
            (
                "errors",
                "Error results: refused lines and jobs that could not run",
                true,
                s.errors,
            ),
            (
                "jobs_in_flight",
                "Accepted jobs not answered yet (queued, waiting or being delivered)",
                false,
                s.in_flight,
            ),
            ("workers", "Delivery worker threads", false, s.workers),
            (
                "workers_busy",
                "Workers delivering a job now",
                false,
                s.busy_workers,
            ),
            (
                "queue_depth",
                "Jobs waiting for a worker",
                false,
                s.queue_depth,
            ),
            (
                "queue_capacity",
                "Most jobs that may wait for a worker ([daemon] queue_capacity)",
                false,
                s.queue_capacity,
            ),
            (
                "uptime_seconds",
                "Seconds since the daemon started",
                false,
                s.uptime_seconds,
            ),
            (
                "cache_hits",
                "Connection cache lookups that found an idle session",
                true,
                s.cache_hits,
            ),
            (
                "cache_misses",
                "Connection cache lookups that found none",
                true,
                s.cache_misses,
            ),
            (
                "cache_stored",
                "Sessions put into the connection cache",
                true,
                s.cache_stored,
            ),
            (
                "cache_chained",
                "Sessions handed to the next job with its transaction already started ([cache] chain_jobs)",
                true,
                s.cache_chained,
            ),
            (
                "cache_idle_sessions",
                "Idle sessions in the connection cache now",
                false,
                s.cache_idle,
            ),
            (
                "destinations_paused",
                "Destinations paused now (throttled or dead)",
                false,
                s.paused,
            ),
        ];
        for (name, help, is_counter, value) in plain {
            if is_counter {
                counter(&mut encoder, name, help, value)?;
            } else {
                gauge(&mut encoder, name, help, value)?;
            }
        }
        if let Some(ingress) = &s.ingress {
            gauge(
                &mut encoder,
                "ingress_connections",
                "LMTP ingress connections open now",
                ingress.connections,
            )?;
            counter(
                &mut encoder,
                "ingress_messages",
                "Messages received by the LMTP ingress (a final dot)",
                ingress.messages,
            )?;
            let mut replies = encoder.encode_descriptor(
                "ingress_replies",
                "Per-recipient LMTP replies after the final dot, by class",
                None,
                MetricType::Counter,
            )?;
            for (class, value) in [
                ("2xx", ingress.replied_2xx),
                ("4xx", ingress.replied_4xx),
                ("5xx", ingress.replied_5xx),
            ] {
                let labels = [("class", class.to_string())];
                ConstCounter::new(value).encode(replies.encode_family(&labels)?)?;
            }
            counter(
                &mut encoder,
                "ingress_cancelled",
                "Ingress jobs cancelled (the deadline, or the MTA hung up)",
                ingress.cancelled,
            )?;
        }
        if let Some(tls) = &s.tls {
            let mut sessions = encoder.encode_descriptor(
                "tls_client_sessions",
                "Completed TLS handshakes by session: \"new\" (full handshake) or \"resumed\" ([tls] session_cache_timeout)",
                None,
                MetricType::Counter,
            )?;
            for (kind, value) in [("new", tls.new_sessions), ("resumed", tls.resumed_sessions)] {
                let labels = [("session", kind.to_string())];
                ConstCounter::new(value).encode(sessions.encode_family(&labels)?)?;
            }
            gauge(
                &mut encoder,
                "tls_cached_sessions",
                "TLS sessions in the session cache now",
                tls.cached_sessions,
            )?;
            gauge(
                &mut encoder,
                "tls_broken_servers",
                "Servers remembered now with a failed TLS handshake ([tls] broken_tls_memory)",
                tls.broken_servers,
            )?;
            counter(
                &mut encoder,
                "tls_skipped_handshakes",
                "Deliveries sent in plaintext at once, skipping the handshake with a server remembered with broken TLS",
                tls.skipped_handshakes,
            )?;
        }
        gauge(
            &mut encoder,
            "destinations",
            "Destinations the shaper knows now",
            u64::try_from(s.destinations.len()).unwrap_or(u64::MAX),
        )?;
        let tables = DestinationTables::of(&s.destinations, self.label_limit);
        let gauges: [(&str, &str, &Vec<Row>); 7] = [
            (
                "destination_active",
                "Deliveries in progress per destination",
                &tables.active,
            ),
            (
                "destination_waiting",
                "Jobs waiting for admission per destination",
                &tables.waiting,
            ),
            (
                "destination_window",
                "Concurrency window per destination (feedback moves it)",
                &tables.window,
            ),
            (
                "destination_limit",
                "Concurrency limit per destination (0: none)",
                &tables.limit,
            ),
            (
                "destination_paused_seconds",
                "Seconds left in a destination's pause (0: not paused)",
                &tables.paused,
            ),
            (
                "destination_dead",
                "1 when a destination is suspended by the failed-cohort rule",
                &tables.dead,
            ),
            (
                "destination_throttling_replies",
                "Throttling replies seen per destination since it became known",
                &tables.throttled,
            ),
        ];
        let pauses: Vec<Row3> = s
            .destinations
            .iter()
            .take(self.label_limit)
            .filter(|d| d.paused_for.is_some() || d.dead)
            .map(|d| {
                (
                    [
                        ("destination", d.name.clone()),
                        ("transport", d.transport.clone()),
                        ("reply", reply_label(d.last_throttle.as_deref())),
                    ],
                    1.0,
                )
            })
            .collect();
        let mut metric_encoder = encoder.encode_descriptor(
            "destination_pause_info",
            "1 for each named destination paused now, with the reply code and enhanced status code that paused it last (\"421 4.7.0\"; \"none\" for a dead destination without one)",
            None,
            MetricType::Gauge,
        )?;
        for (labels, value) in &pauses {
            ConstGauge::new(*value).encode(metric_encoder.encode_family(labels)?)?;
        }
        for (name, help, rows) in gauges {
            let kind = if name == "destination_throttling_replies" {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            family(&mut encoder, name, help, kind, rows)?;
        }
        Ok(())
    }
}

/// The per-destination rows of a snapshot: the first `limit` destinations
/// of the report (busiest first) under their names, then one "other" row
/// per transport for the rest (active, waiting, window, limit and
/// throttling replies summed; the longest pause; dead when any is).
#[derive(Debug, Default)]
pub(super) struct DestinationTables {
    pub(super) active: Vec<Row>,
    pub(super) waiting: Vec<Row>,
    pub(super) window: Vec<Row>,
    pub(super) limit: Vec<Row>,
    pub(super) paused: Vec<Row>,
    pub(super) dead: Vec<Row>,
    pub(super) throttled: Vec<Row>,
}

impl DestinationTables {
    pub(super) fn of(destinations: &[DestinationGauges], limit: usize) -> Self {
        let mut tables = Self::default();
        let mut others: Vec<DestinationGauges> = Vec::new();
        for (rank, d) in destinations.iter().enumerate() {
            if rank < limit {
                tables.push(&d.name, &d.transport, d);
                continue;
            }
            match others.iter_mut().find(|o| o.transport == d.transport) {
                Some(o) => {
                    o.active = o.active.saturating_add(d.active);
                    o.waiting = o.waiting.saturating_add(d.waiting);
                    o.window = o.window.saturating_add(d.window);
                    o.limit = o.limit.saturating_add(d.limit);
                    o.paused_for = max_pause(o.paused_for, d.paused_for);
                    o.throttled = o.throttled.saturating_add(d.throttled);
                    o.dead |= d.dead;
                }
                None => others.push(d.clone()),
            }
        }
        for o in &others {
            tables.push(OTHER, &o.transport, o);
        }
        tables
    }

    fn push(&mut self, name: &str, transport: &str, d: &DestinationGauges) {
        let labels = || {
            [
                ("destination", name.to_string()),
                ("transport", transport.to_string()),
            ]
        };
        let count = |n: u64| n as f64;
        self.active.push((labels(), count(d.active)));
        self.waiting.push((labels(), count(d.waiting)));
        self.window.push((labels(), count(d.window)));
        self.limit.push((labels(), count(d.limit)));
        self.paused
            .push((labels(), d.paused_for.unwrap_or(0.0).max(0.0)));
        self.dead.push((labels(), if d.dead { 1.0 } else { 0.0 }));
        self.throttled.push((labels(), count(d.throttled)));
    }
}

fn max_pause(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
