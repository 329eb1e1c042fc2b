//! What a domain's MTA-STS policy in force means for one delivery (RFC
//! 8461 sections 4 and 5): the MX hosts that may be tried and the TLS
//! policy they get.
//!
//! Pure: a [`Found`] policy, the destination's TLS policy (from `[tls]
//! security_level`; the caller applies MTA-STS only then) and the MX
//! candidates in, a [`Verdict`] out.
//! - `enforce`: candidates whose MX host matches no `mx` pattern are
//!   dropped (none left: [`Verdict::NoMatch`], which the caller defers
//!   with 4.7.5); the others get level `verify` with the MX host name as
//!   the certificate match and SNI name, TLS 1.2 at least (section 4.2).
//!   A default level that already authenticates (fingerprint, verify,
//!   secure) is kept. A default "dane" level keeps its DANE mode, so the
//!   per-server DANE decision can still take over where TLSA records are
//!   usable.
//! - `testing`: nothing changes but the source and reason; the MX hosts
//!   that enforce would refuse are listed for the caller to report.
//! - `none`: [`Verdict::Unchanged`].
//!
//! Never panics.

use crate::mxlist::Candidate;
use crate::tls_policy::{Level, MatchRule, Policy, PolicySource, ServerName, TlsVersion};

use super::{Found, Mode};

/// The outcome for one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No policy applies (mode none).
    Unchanged,
    /// Enforce: the servers left (in their order) and their policy; the
    /// MX hosts dropped, for the log.
    Enforce {
        policy: Policy,
        dropped: Vec<String>,
    },
    /// Testing: the policy (level unchanged), and the MX hosts enforce
    /// mode would have refused.
    Testing {
        policy: Policy,
        mismatched: Vec<String>,
    },
    /// Enforce, and no MX host matches: the text for the 4.7.5 deferral.
    NoMatch { text: String },
}

/// The verdict of `found` for a destination with TLS policy `base` and MX
/// `candidates` (those not allowed are removed from it under enforce).
pub fn apply(found: &Found, base: &Policy, candidates: &mut Vec<Candidate>) -> Verdict {
    let Found { domain, id, policy } = found;
    let mismatched = distinct_hosts(candidates.iter().filter(|c| !allowed(found, c)));
    match policy.mode {
        Mode::None => Verdict::Unchanged,
        Mode::Testing => {
            let mut testing = base.clone();
            testing.source = PolicySource::MtaSts;
            testing.reason = format!(
                "MTA-STS policy of {domain} (id {id}) in testing mode: not enforced, {}",
                base.reason
            );
            Verdict::Testing {
                policy: testing,
                mismatched,
            }
        }
        Mode::Enforce => {
            candidates.retain(|c| allowed(found, c));
            if candidates.is_empty() {
                let text = match mismatched.as_slice() {
                    [one] => format!("MX host {one} does not match the MTA-STS policy of {domain}"),
                    many => format!(
                        "MX hosts {} do not match the MTA-STS policy of {domain}",
                        many.join(", ")
                    ),
                };
                return Verdict::NoMatch { text };
            }
            Verdict::Enforce {
                policy: enforced(base, domain, id),
                dropped: mismatched,
            }
        }
    }
}

/// An MX host name (not an IP literal) that a pattern matches.
fn allowed(found: &Found, candidate: &Candidate) -> bool {
    !candidate.host_is_ip && found.policy.matches(&candidate.host)
}

/// Each host name once, in order.
fn distinct_hosts<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for candidate in candidates {
        if !hosts.contains(&candidate.host) {
            hosts.push(candidate.host.clone());
        }
    }
    hosts
}

/// The TLS policy of the servers under enforce.
fn enforced(base: &Policy, domain: &str, id: &str) -> Policy {
    let mut policy = base.clone();
    policy.source = PolicySource::MtaSts;
    let authenticates = matches!(
        base.level,
        Level::Fingerprint | Level::Verify | Level::Secure
    );
    if authenticates {
        policy.reason = format!(
            "MTA-STS policy of {domain} (id {id}) mode enforce; {} kept",
            base.reason
        );
        return policy;
    }
    policy.level = Level::Verify;
    policy.matches = vec![MatchRule::Hostname];
    policy.servername = ServerName::Hostname;
    policy.min_version = policy.min_version.max(TlsVersion::Tls1_2);
    policy.reason = format!("MTA-STS policy of {domain} (id {id}) mode enforce");
    policy
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
