//! The recipient ledger: every recipient of a job ends with exactly one
//! outcome — sent, deferred or bounced — and the ledger checks it.
//!
//! Settling a recipient twice keeps the first outcome and counts an anomaly;
//! finishing with a recipient unsettled defers it with 4.3.0 and counts an
//! anomaly. Both are logged as errors: an impossible state is reported, never
//! silently lost, and never crashes the daemon.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

use crate::dsn::StatusCode;

/// Told of each outcome as the ledger records it: `(recipient index,
/// address, outcome)`.
pub type SettledHook = fn(usize, &str, &Outcome);

thread_local! {
    /// Installed by whoever logs recipients as they settle (the daemon's
    /// progress tracking, `crate::progress`), for this thread's delivery.
    static ON_SETTLED: Cell<Option<SettledHook>> = const { Cell::new(None) };
}

/// Installs (or with `None` removes) this thread's [`SettledHook`].
pub fn on_settled(hook: Option<SettledHook>) {
    ON_SETTLED.with(|h| h.set(hook));
}

/// Final status of one recipient in one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        }
    }
}

/// What happened to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub dsn: StatusCode,
    /// `host[addr]:port` (or `host[/path]`) of the server that decided, if any.
    pub relay: Option<String>,
    pub diagnostic: String,
    /// TLS of the session that decided, when there was one.
    pub tls: Option<TlsSummary>,
    /// The TLS policy of the server that decided, when one was tried.
    pub tls_policy: Option<TlsPolicyNote>,
    /// Timing of the session that decided, for the log's delays.
    pub timing: Option<SessionTiming>,
    /// Our source address on the deciding connection.
    pub source: Option<std::net::SocketAddr>,
    /// For a sent recipient: who owes a NOTIFY=SUCCESS notification
    /// (Postfix's smtp_rcpt_done); `None` for other outcomes.
    pub success: Option<SuccessDuty>,
}

/// After a recipient was accepted: whether the server took over DSN
/// (it announced DSN, so NOTIFY went on with the recipient and mailhop's
/// client owes no success notification), or the DSN action of the success
/// notification the client owes when the recipient asked for one
/// ("relayed"; "delivered" from an LMTP server with `[lmtp] assume_final`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuccessDuty {
    PassedOn,
    Owed(&'static str),
}

impl SuccessDuty {
    /// The duty after a session with this server: `dsn_offered` from its
    /// EHLO/LHLO reply; `final_delivery` for LMTP with assume_final.
    pub fn after_session(dsn_offered: bool, final_delivery: bool) -> Self {
        if dsn_offered {
            SuccessDuty::PassedOn
        } else if final_delivery {
            SuccessDuty::Owed("delivered")
        } else {
            SuccessDuty::Owed("relayed")
        }
    }
}

/// When the deciding session connected, finished its handshake, and ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTiming {
    pub connect: std::time::Instant,
    pub handshake: std::time::Instant,
    pub end: std::time::Instant,
}

/// How the deciding session was protected: for auditing. In answers it is
/// written by `JobResult::write_json`: a new field goes there too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSummary {
    /// "TLSv1.3".
    pub version: String,
    pub cipher: String,
    /// The certificate satisfied a verifying level (fingerprint, verify, secure).
    pub verified: bool,
    /// Postfix's trust word: "anonymous", "untrusted", "trusted", "verified".
    pub trust: String,
}

/// Which TLS level applied to the deciding server, which rule decided it
/// (`source`: "default", "policy-table", "dane", "mta-sts") and why: for
/// auditing. Written by `JobResult::write_json` too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPolicyNote {
    pub level: String,
    pub source: String,
    pub reason: String,
}

/// A recipient and its outcome, once the ledger is finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub address: String,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub struct Ledger {
    addresses: Vec<String>,
    outcomes: Vec<Option<Outcome>>,
    anomalies: usize,
}

impl Ledger {
    pub fn new(addresses: Vec<String>) -> Self {
        let outcomes = vec![None; addresses.len()];
        Self {
            addresses,
            outcomes,
            anomalies: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    pub fn address(&self, index: usize) -> Option<&str> {
        self.addresses.get(index).map(String::as_str)
    }

    /// Indexes of recipients without an outcome, in job order.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.outcomes.len())
            .filter(|&i| self.outcomes.get(i).is_some_and(Option::is_none))
            .collect()
    }

    /// Recipients still without an outcome.
    pub fn left(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_none()).count()
    }

    /// Records an outcome; a second outcome for the same recipient is refused.
    pub fn settle(&mut self, index: usize, outcome: Outcome) -> bool {
        match self.outcomes.get_mut(index) {
            Some(slot @ None) => {
                // Logged as soon as it is settled (a daemon job: once).
                let address = self.addresses.get(index).map_or("", String::as_str);
                if let Some(hook) = ON_SETTLED.with(Cell::get) {
                    hook(index, address, &outcome);
                }
                *slot = Some(outcome);
                true
            }
            Some(Some(_)) => {
                self.anomalies += 1;
                log::error!(
                    "internal error: recipient {} settled twice; keeping the first outcome",
                    self.addresses.get(index).map_or("?", String::as_str)
                );
                false
            }
            None => {
                self.anomalies += 1;
                log::error!("internal error: no recipient #{index}");
                false
            }
        }
    }

    /// Bookkeeping errors seen so far (double or missing outcomes).
    pub fn anomalies(&self) -> usize {
        self.anomalies
    }

    /// Closes the ledger: exactly one outcome per recipient, in job order.
    pub fn finish(mut self) -> (Vec<Settled>, usize) {
        let mut settled = Vec::with_capacity(self.addresses.len());
        for (address, outcome) in self.addresses.into_iter().zip(self.outcomes) {
            let outcome = outcome.unwrap_or_else(|| {
                self.anomalies += 1;
                log::error!(
                    "internal error: recipient {address} left without an outcome; deferring"
                );
                Outcome {
                    status: Status::Deferred,
                    dsn: crate::dsn::SYSTEM_TROUBLE,
                    relay: None,
                    diagnostic: "mail system software error: recipient left without an outcome"
                        .into(),
                    tls: None,
                    tls_policy: None,
                    timing: None,
                    source: None,
                    success: None,
                }
            });
            settled.push(Settled { address, outcome });
        }
        (settled, self.anomalies)
    }
}

/// An address as it may appear in a log or result line: control characters
/// shown as '?', so a hostile address cannot forge extra lines.
pub fn printable_address(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    push_printable_address(&mut out, address);
    out
}

/// [`printable_address`] appended to `out` ([`crate::logging::push_printable`]).
pub fn push_printable_address(out: &mut String, address: &str) {
    crate::logging::push_printable(out, address);
}

#[cfg(test)]
#[path = "recipients_tests.rs"]
mod tests;
