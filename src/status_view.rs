//! The human-readable form of `mailhop status`: the daemon's counters in a
//! few lines, then one table row per destination of the shaper (name,
//! transport, deliveries active / concurrency window / limit, jobs
//! waiting, rate, time left in a pause, the reply that paused it last).
//!
//! Pure: a [`StatusReport`] in, text out. Text that came from outside
//! (destination names from jobs, throttling replies from servers) is made
//! printable and cut to its column, so a hostile reply cannot move the
//! cursor of the operator's terminal.
//!
//! Error contract: none.

use std::fmt::Write;

use crate::stats::{DestinationState, StatusReport};

/// Widest destination column.
const NAME_MAX: usize = 40;
/// Widest last-throttle column.
const REPLY_MAX: usize = 60;

/// The whole view: summary lines and the destination table.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let done = &report.done;
    let _ = writeln!(
        out,
        "mailhop daemon: up {}; workers {} of {} busy; queue {} of {}",
        uptime(report.uptime),
        report.workers.busy,
        report.workers.total,
        report.queue.depth,
        report.queue.capacity
    );
    let _ = writeln!(
        out,
        "jobs: {} accepted, {} in flight, {} answered, {} errors; recipients: {} sent, {} deferred, {} bounced",
        report.accepted,
        report.in_flight,
        done.jobs,
        report.errors,
        done.sent,
        done.deferred,
        done.bounced
    );
    let cache = &report.cache;
    let _ = writeln!(
        out,
        "cache: {} hits, {} misses, {} stored, {} chained, {} idle",
        cache.hits, cache.misses, cache.stored, cache.chained, cache.idle
    );
    if let Some(ingress) = &report.ingress {
        let _ = writeln!(
            out,
            "ingress: {} LMTP connections, {} messages; replies {} 2xx, {} 4xx, {} 5xx; {} jobs cancelled",
            ingress.connections,
            ingress.messages,
            ingress.replied_2xx,
            ingress.replied_4xx,
            ingress.replied_5xx,
            ingress.cancelled
        );
    }
    if let Some(tls) = &report.tls {
        let _ = writeln!(
            out,
            "tls: {} new sessions, {} resumed, {} cached; {} servers with broken TLS remembered, {} handshakes skipped",
            tls.new_sessions,
            tls.resumed_sessions,
            tls.cached_sessions,
            tls.broken_servers,
            tls.skipped_handshakes
        );
    }
    if report.destinations.is_empty() {
        let _ = writeln!(out, "destinations: none known ({} paused)", report.paused);
        return out;
    }
    let _ = writeln!(
        out,
        "destinations: {} known, {} paused",
        report.destinations.len(),
        report.paused
    );
    out.push('\n');
    out.push_str(&table(&report.destinations));
    out
}

/// The destination table, header first, columns as wide as their widest
/// cell.
pub fn table(destinations: &[DestinationState]) -> String {
    const HEADER: [&str; 7] = [
        "DESTINATION",
        "TRANSPORT",
        "ACTIVE/WINDOW/LIMIT",
        "WAITING",
        "RATE",
        "PAUSED FOR",
        "LAST THROTTLE",
    ];
    let rows: Vec<[String; 7]> = destinations.iter().map(row).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(String::from);
    for cells in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(d: &DestinationState) -> [String; 7] {
    let limit = if d.limit == 0 {
        "-".to_string()
    } else {
        d.limit.to_string()
    };
    let paused = match (d.dead, d.paused_for) {
        (true, Some(left)) => format!("dead, {}", seconds(left)),
        (true, None) => "dead".to_string(),
        (false, Some(left)) => seconds(left),
        (false, None) => "-".to_string(),
    };
    [
        printable(&d.name, NAME_MAX),
        printable(&d.transport, 8),
        format!("{}/{}/{limit}", d.active, d.window),
        d.waiting.to_string(),
        d.rate
            .as_deref()
            .map_or_else(|| "-".to_string(), |r| printable(r, 16)),
        paused,
        d.last_throttle
            .as_deref()
            .map_or_else(|| "-".to_string(), |r| printable(r, REPLY_MAX)),
    ]
}

/// "12.5s", "3m 20s".
fn seconds(left: f64) -> String {
    if !left.is_finite() || left < 0.0 {
        return "-".to_string();
    }
    if left < 60.0 {
        return format!("{left:.1}s");
    }
    let whole = left.round();
    if whole >= 1e12 {
        return "-".to_string();
    }
    // Whole, non-negative and below 2^40: exact.
    let whole = whole as u64;
    format!("{}m {:02}s", whole / 60, whole % 60)
}

/// "3d 4h 05m", "1h 02m 03s", "42s".
fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `text` with control characters shown as `?`, cut to `max` characters
/// (the last one then "~").
fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    let cut = text.chars().count() > max;
    for (count, c) in text.chars().enumerate() {
        if cut && count + 1 == max {
            out.push('~');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

#[cfg(test)]
#[path = "status_view_tests.rs"]
mod tests;
