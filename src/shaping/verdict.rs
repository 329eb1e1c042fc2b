//! What a finished job tells the scheduler about its destination
//! ([`Verdict`]), read from the job's result alone: a delivery that
//! reached the site (positive feedback), a site failure (every recipient
//! deferred by a connection, DNS or session problem: negative feedback,
//! Postfix's "hop status"), or a throttling reply (the site asks us to
//! slow down: pause; see [`crate::config::ThrottleRule`]). Pure.

use crate::config::ThrottleRule;
use crate::job::RecipientResult;
use crate::recipients::Status;

/// The scheduler's reading of one finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The site was reached: a recipient was sent or refused for good, or
    /// the server answered the transaction (per-recipient 4xx).
    Reached,
    /// Every recipient deferred before the site took part in a
    /// transaction: the first one's status code and diagnostic.
    SiteFailure { dsn: String, diagnostic: String },
    /// Every recipient deferred, at least one by a throttling reply;
    /// `only` when all of them were (the job may be tried again);
    /// `at_greeting` when the reply refused the connection itself (a
    /// connection-count limit).
    Throttled {
        reply: String,
        only: bool,
        at_greeting: bool,
    },
    /// No delivery was tried (the job could not run).
    Nothing,
}

/// The remote reply in a diagnostic (`host H said: 421 4.7.0 text (in
/// reply to RCPT TO command)`, `host H refused to talk to me: 421 ...`):
/// the reply text (code first), and the command it answered (None for
/// the greeting).
pub fn remote_reply(diagnostic: &str) -> Option<(&str, Option<&str>)> {
    let start = ["said: ", "refused to talk to me: "]
        .iter()
        .find_map(|marker| diagnostic.find(marker).map(|at| at + marker.len()))?;
    let reply = diagnostic.get(start..)?;
    let code = reply.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match reply.rfind(" (in reply to ") {
        Some(at) => {
            let command = reply
                .get(at + " (in reply to ".len()..)
                .and_then(|rest| rest.strip_suffix(" command)"));
            Some((reply.get(..at)?, command))
        }
        None => Some((reply, None)),
    }
}

/// Does a deferred recipient's reply match one of `rules`?
pub fn is_throttle(rules: &[ThrottleRule], recipient: &RecipientResult) -> bool {
    let Some((reply, _)) = remote_reply(&recipient.diagnostic) else {
        return false;
    };
    let code = reply.get(..3).unwrap_or("");
    if !code.starts_with('4') {
        return false;
    }
    let lower = reply.to_ascii_lowercase();
    rules.iter().any(|rule| {
        (rule.reply_code.is_empty() || rule.reply_code == code)
            && (rule.dsn.is_empty() || recipient.dsn.starts_with(&rule.dsn))
            && (rule.text.is_empty() || lower.contains(&rule.text))
    })
}

/// Commands whose replies mean the server took part in the transaction.
const TRANSACTION_COMMANDS: [&str; 5] = ["MAIL FROM", "RCPT TO", "DATA", "end of DATA", "BDAT"];

/// Reads a job's recipients (an empty list: [`Verdict::Nothing`]).
pub fn verdict(rules: &[ThrottleRule], recipients: &[RecipientResult]) -> Verdict {
    let Some(first) = recipients.first() else {
        return Verdict::Nothing;
    };
    if recipients.iter().any(|r| r.status != Status::Deferred) {
        return Verdict::Reached;
    }
    let throttled: Vec<&RecipientResult> = recipients
        .iter()
        .filter(|r| is_throttle(rules, r))
        .collect();
    if let Some(throttle) = throttled.first() {
        let (reply, command) = remote_reply(&throttle.diagnostic)
            .map_or((throttle.diagnostic.as_str(), None), |(reply, command)| {
                (reply, command)
            });
        return Verdict::Throttled {
            reply: reply.to_string(),
            only: throttled.len() == recipients.len(),
            at_greeting: command.is_none(),
        };
    }
    // A network problem (4.4.x: connect, lost connection, timeout, DNS) is
    // a site failure wherever it happened; a reply fails the site only
    // when it came before the transaction (greeting, EHLO, STARTTLS).
    let site_failure = recipients.iter().all(|r| {
        r.dsn.starts_with("4.4.")
            || remote_reply(&r.diagnostic).is_none_or(|(_, command)| {
                command.is_none_or(|c| !TRANSACTION_COMMANDS.contains(&c))
            })
    });
    if site_failure {
        Verdict::SiteFailure {
            dsn: first.dsn.clone(),
            diagnostic: first.diagnostic.clone(),
        }
    } else {
        Verdict::Reached
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
