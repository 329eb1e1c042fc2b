//! The per-recipient log line (Postfix's log_adhoc.c): the one writer of
//! every recipient outcome in the log — a delivery's outcome, a result
//! that came after its job was answered (information only), a recipient
//! deferred at shutdown or after a worker panic.
//!
//! Text, Postfix's form (pflogsumm and other log tools read it):
//! `ID: to=<...>, relay=..., delay=..., delays=a/b/c/d, dsn=...,
//! status=... (...)`; a late result has no `status=`: `ID: to=<...>,
//! relay=..., dsn=..., late result (information only; the job was already
//! answered): sent (...)`. JSON (`[log] format = "json"`): one object of
//! the same shape for every line, with the keys `id`, `to`, `relay`,
//! `delay`, `delays`, `dsn`, `status`, `late_status`, `diagnostic`, `tls`
//! and `source`; a late result has `status` null and its outcome in
//! `late_status` (null otherwise), so that counting `status` counts each
//! recipient once. delays: a = waiting for a worker, b = before the
//! deciding connection (DNS, other servers), c = connection setup
//! (connect, greeting, EHLO, TLS), d = transmission.
//!
//! Writing never fails and never panics; text is made printable.

use std::net::IpAddr;
use std::time::Duration;

use crate::dsn::StatusCode;
use crate::recipients::{Status, TlsPolicyNote, TlsSummary};

/// Which service logs (the log target `mailhop/smtp` or `mailhop/lmtp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Smtp,
    Lmtp,
}

impl Service {
    fn target(self) -> &'static str {
        match self {
            Service::Smtp => "mailhop/smtp",
            Service::Lmtp => "mailhop/lmtp",
        }
    }
}

/// One recipient's line.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    pub service: Service,
    pub id: &'a str,
    pub address: &'a str,
    /// `host[addr]:port` of the deciding server (`none` without one).
    pub relay: Option<&'a str>,
    /// Since the message arrived (or the job was received).
    pub delay: Duration,
    pub delays: [Duration; 4],
    pub dsn: StatusCode,
    pub status: Status,
    pub diagnostic: &'a str,
    pub tls: Option<&'a TlsSummary>,
    /// The deciding server's TLS policy (JSON only; the text line keeps
    /// Postfix's form).
    pub tls_policy: Option<&'a TlsPolicyNote>,
    /// Our source address on the deciding connection (JSON only).
    pub source: Option<IpAddr>,
    /// A result after the job was answered: information only.
    pub late: bool,
}

/// Writes `line` to the log, as text or as JSON.
pub fn write(line: &Line<'_>, json: bool) {
    let target = line.service.target();
    if json {
        log::info!(target: target, "{}", json_object(line));
        return;
    }
    log::info!(target: target, "{}", text(line));
}

/// The JSON form of `line`: the same keys for every line.
pub fn json_object(line: &Line<'_>) -> serde_json::Value {
    let (status, late_status) = if line.late {
        (None, Some(line.status.as_str()))
    } else {
        (Some(line.status.as_str()), None)
    };
    let [a, b, c, d] = line.delays;
    serde_json::json!({
        "id": line.id,
        "to": line.address,
        "relay": line.relay,
        "delay": line.delay.as_secs_f64(),
        "delays": [a.as_secs_f64(), b.as_secs_f64(), c.as_secs_f64(), d.as_secs_f64()],
        "dsn": line.dsn.to_string(),
        "status": status,
        "late_status": late_status,
        "diagnostic": line.diagnostic,
        "tls": line.tls,
        "tls_policy": line.tls_policy,
        "source": line.source.map(|ip| ip.to_string()),
    })
}

/// The text form of `line` (see the module documentation).
pub fn text(line: &Line<'_>) -> String {
    // Built piece by piece: one line per recipient of every job. Writing
    // into a String cannot fail.
    let mut out = String::with_capacity(160 + line.diagnostic.len());
    out.push_str(line.id);
    out.push_str(": to=<");
    crate::recipients::push_printable_address(&mut out, line.address);
    out.push_str(">, relay=");
    out.push_str(line.relay.unwrap_or("none"));
    if !line.late {
        out.push_str(", delay=");
        let _ = seconds(line.delay).write_to(&mut out);
        out.push_str(", delays=");
        for (i, part) in line.delays.into_iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            let _ = seconds(part).write_to(&mut out);
        }
    }
    out.push_str(", dsn=");
    let _ = line.dsn.write_to(&mut out);
    if line.late {
        out.push_str(", late result (information only; the job was already answered): ");
    } else {
        out.push_str(", status=");
    }
    out.push_str(line.status.as_str());
    out.push_str(" (");
    out.push_str(line.diagnostic);
    out.push(')');
    out
}

/// Postfix's delay format: two significant digits below 10 s, "0" for
/// nothing measurable. Shared by every log line with delays.
pub fn seconds(d: Duration) -> Seconds {
    Seconds(d)
}

/// A delay written the way [`seconds`] describes, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_to(f)
    }
}

impl Seconds {
    /// Writes the delay to `f` (a `String` directly, or a formatter).
    pub fn write_to<W: std::fmt::Write>(&self, f: &mut W) -> std::fmt::Result {
        // Integer arithmetic on nanoseconds (rounded half up), no float
        // formatting: this runs for every delay of every log line.
        let nanos = self.0.as_nanos();
        if nanos < 5_000_000 {
            return f.write_str("0");
        }
        use crate::text::u64_digits;
        let mut buf = [0u8; 20];
        let int = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        if nanos >= 10_000_000_000 {
            return f.write_str(u64_digits(
                int((nanos + 500_000_000) / 1_000_000_000),
                &mut buf,
            ));
        }
        let centis = (nanos + 5_000_000) / 10_000_000;
        let (whole, hundredths) = (int(centis / 100), int(centis % 100));
        f.write_str(u64_digits(whole, &mut buf))?;
        match hundredths {
            0 => Ok(()),
            h if h % 10 == 0 => {
                f.write_str(".")?;
                f.write_str(u64_digits(h / 10, &mut buf))
            }
            h => {
                f.write_str(if h < 10 { ".0" } else { "." })?;
                f.write_str(u64_digits(h, &mut buf))
            }
        }
    }
}

#[cfg(test)]
#[path = "recipient_log_tests.rs"]
mod tests;
