//! Error policy (Postfix's smtp_trouble.c): what a session result or a
//! failure means for each recipient — sent, kept for the next server,
//! deferred or bounced — and the final-server rules for what is left over.
//!
//! The only place where a `Dsn` becomes a recipient's outcome. Pure.

use crate::dsn::Dsn;
use crate::recipients::{Ledger, Outcome, SessionTiming, Status, TlsSummary};
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
        timing: via.and_then(|v| v.timing),
        source: via.and_then(|v| v.source),
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
/// recipient positions to ledger positions.
pub fn apply_session(
    ledger: &mut Ledger,
    indexes: &[usize],
    results: Vec<Option<RcptResult>>,
    final_server: bool,
    via: &Via,
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
mod tests {
    use super::*;

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
            &mut t,
        );
        assert_eq!(l.left(), 2);
        apply_session(
            &mut l,
            &[0, 1],
            vec![Some(RcptResult::Failed(soft)), None],
            true,
            &Via::plain("h[a]:25"),
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
}
