//! Error policy (Postfix's smtp_trouble.c): what a session result or a
//! failure means for each recipient — sent, kept for the next server,
//! deferred or bounced — and the final-server rules for what is left over.
//!
//! The only place where a `Dsn` becomes a recipient's outcome. Pure.

use crate::dsn::Dsn;
use crate::recipients::{
    Ledger, Outcome, SessionTiming, Status, SuccessDuty, TlsPolicyNote, TlsSummary,
};
use crate::smtp::client::RcptResult;

/// Tracks the last failure reason across all servers of a job (Postfix's
/// `why`), which leftover recipients receive at the end.
#[derive(Debug, Default)]
pub struct Trouble {
    pub last: Option<Dsn>,
    /// The job's transcript summary: servers tried and each failure reason.
    pub log: Vec<String>,
}

/// Most transcript lines kept per job.
const MAX_LOG_LINES: usize = 200;

impl Trouble {
    pub fn record(&mut self, dsn: &Dsn) {
        self.note(format!("{} {}", dsn.code, dsn.text));
        self.last = Some(dsn.clone());
    }

    /// Adds a transcript line (bounded).
    pub fn note(&mut self, line: String) {
        if self.log.len() < MAX_LOG_LINES {
            self.log.push(line);
        }
    }
}

/// The server a result came from: `host[addr]:port` and its TLS, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Via {
    pub relay: String,
    pub tls: Option<TlsSummary>,
    /// The server's TLS policy: level, source and reason.
    pub tls_policy: Option<TlsPolicyNote>,
    /// When the session's connection attempt began, its handshake ended,
    /// and it ended (Postfix's delays c and d).
    pub timing: Option<SessionTiming>,
    /// Our source address on that connection.
    pub source: Option<std::net::SocketAddr>,
}

impl Via {
    pub fn plain(relay: impl Into<String>) -> Self {
        Self {
            relay: relay.into(),
            tls: None,
            tls_policy: None,
            timing: None,
            source: None,
        }
    }
}

fn outcome(status: Status, dsn: &Dsn, via: Option<&Via>) -> Outcome {
    Outcome {
        status,
        dsn: dsn.code,
        relay: via.map(|v| v.relay.clone()),
        diagnostic: dsn.text.clone(),
        tls: via.and_then(|v| v.tls.clone()),
        tls_policy: via.and_then(|v| v.tls_policy.clone()),
        timing: via.and_then(|v| v.timing),
        source: via.and_then(|v| v.source),
        success: None,
    }
}

/// Applies one failure to one recipient: hard → bounce; soft (or
/// soft-non-final on a non-final server) → defer on the final server, else
/// keep for the next one.
pub fn apply_failure(
    ledger: &mut Ledger,
    index: usize,
    dsn: &Dsn,
    final_server: bool,
    via: Option<&Via>,
    trouble: &mut Trouble,
) {
    trouble.record(dsn);
    let treat_soft =
        dsn.is_soft() || (dsn.soft_non_final && !final_server) || dsn.code.is_success();
    if !treat_soft {
        ledger.settle(index, outcome(Status::Bounced, dsn, via));
    } else if final_server {
        ledger.settle(index, outcome(Status::Deferred, dsn, via));
    } else {
        log::info!(
            "{}: {} (kept for the next server)",
            crate::recipients::printable_address(ledger.address(index).unwrap_or("?")),
            dsn.text
        );
    }
}

/// Applies a session's per-recipient results. `indexes` maps the session's
/// recipient positions to ledger positions; `success` is what the
/// session's server means for NOTIFY=SUCCESS (see [`SuccessDuty`]).
pub fn apply_session(
    ledger: &mut Ledger,
    indexes: &[usize],
    results: Vec<Option<RcptResult>>,
    final_server: bool,
    via: &Via,
    success: SuccessDuty,
    trouble: &mut Trouble,
) {
    for (position, result) in results.into_iter().enumerate() {
        let Some(&index) = indexes.get(position) else {
            continue;
        };
        match result {
            Some(RcptResult::Delivered(dsn)) => {
                // The reply text moves into the outcome (no copy).
                let mut sent = outcome(Status::Sent, &Dsn::new(dsn.code, String::new()), Some(via));
                sent.diagnostic = dsn.text;
                sent.success = Some(success);
                ledger.settle(index, sent);
            }
            Some(RcptResult::Failed(dsn)) => {
                apply_failure(ledger, index, &dsn, final_server, Some(via), trouble);
            }
            None => {}
        }
    }
}

/// Applies one failure to every recipient still open.
pub fn fail_all(
    ledger: &mut Ledger,
    dsn: &Dsn,
    final_server: bool,
    via: Option<&Via>,
    trouble: &mut Trouble,
) {
    for index in ledger.pending() {
        apply_failure(ledger, index, dsn, final_server, via, trouble);
    }
}

/// Where the last destination came from, for the leftover rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeftoverContext {
    /// The last destination tried was a fallback relay.
    pub last_was_fallback_relay: bool,
    /// SMTP, and the job's first destination is `relayhost`.
    pub nexthop_is_relayhost: bool,
}

/// Settles every recipient still open after all servers were tried
/// (Postfix's smtp_sess_fail after smtp_connect_inet).
pub fn settle_leftovers(ledger: &mut Ledger, trouble: &Trouble, context: LeftoverContext) {
    if ledger.left() == 0 {
        return;
    }
    let mut dsn = match &trouble.last {
        None => Dsn::new(
            crate::dsn::SYSTEM_TROUBLE,
            "server unavailable or unable to receive mail",
        ),
        Some(dsn) => dsn.clone(),
    };
    if dsn.is_hard() {
        if context.last_was_fallback_relay {
            log::warn!("fallback_relay configuration problem");
            dsn.code = crate::dsn::CONFIG_PROBLEM;
        } else if context.nexthop_is_relayhost {
            log::warn!("relayhost configuration problem");
            dsn.code = crate::dsn::CONFIG_PROBLEM;
        }
    }
    let mut scratch = Trouble::default();
    dsn.soft_non_final = false;
    fail_all(ledger, &dsn, true, None, &mut scratch);
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
