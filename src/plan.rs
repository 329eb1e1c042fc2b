//! A job's delivery plan, made once from the checked job: its recipients
//! grouped by next hop (the job's, else `relayhost` for SMTP, else each
//! recipient's domain), each group with its next hop as written and its
//! normalised [`NexthopKey`]. The key is what every "same next hop"
//! decision compares: on-demand cache counting ([`crate::cache`]), the
//! pool's same-route check for chaining, and the chained follower offer
//! ([`crate::chain`]). The next-hop grammar itself is [`crate::nexthop`]'s.
//!
//! Pure; no I/O. A recipient domain that cannot be a destination is set
//! apart (bounced 5.1.3, as Postfix's trivial-rewrite does), never
//! connected to.

use std::collections::BTreeMap;

use crate::job::{Job, TransportKind};
use crate::recipients::{Outcome, Status};

/// A next hop as written, normalised for comparison (ASCII lowercase):
/// two jobs with equal keys use the same sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexthopKey(String);

impl NexthopKey {
    pub fn new(nexthop: &str) -> Self {
        Self(nexthop.to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bare host of the first element (no brackets or port), as
    /// Postfix's smtp_connection_cache_destinations compares it.
    pub fn bare(&self) -> &str {
        let bare = self.0.trim_start_matches('[');
        bare.split([']', ':']).next().unwrap_or(bare)
    }
}

/// The recipients of one next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The next hop as written (delivery parses it, see
    /// [`crate::nexthop::parse_nexthop`]).
    pub nexthop: String,
    pub key: NexthopKey,
    /// Positions of its recipients in the job, in order.
    pub indexes: Vec<usize>,
}

/// A job's plan: its groups, and the recipients refused before any
/// connection (with their outcome).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub groups: Vec<Group>,
    pub refused: Vec<(usize, Outcome)>,
}

impl Plan {
    /// The plan of `job` with the configured `relayhost` (typed once in
    /// [`crate::config::Settings`]).
    /// An address without a domain gets an empty next hop (which defers
    /// it as a bad destination).
    pub fn of(job: &Job, relayhost: Option<&str>) -> Self {
        let all = || (0..job.recipients.len()).collect::<Vec<usize>>();
        let whole = |nexthop: &str| Self {
            groups: vec![Group {
                nexthop: nexthop.to_string(),
                key: NexthopKey::new(nexthop),
                indexes: all(),
            }],
            refused: Vec::new(),
        };
        if let Some(nexthop) = &job.nexthop {
            return whole(nexthop);
        }
        if job.transport == TransportKind::Smtp
            && let Some(relayhost) = relayhost
        {
            return whole(relayhost);
        }
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut refused = Vec::new();
        for (index, rcpt) in job.recipients.iter().enumerate() {
            let domain = match rcpt.address.rsplit_once('@') {
                Some((_, domain)) => match crate::nexthop::check_recipient_domain(domain) {
                    Ok(()) => domain.to_ascii_lowercase(),
                    Err(reason) => {
                        refused.push((index, bad_domain(domain, &reason)));
                        continue;
                    }
                },
                None => String::new(),
            };
            groups.entry(domain).or_default().push(index);
        }
        Self {
            groups: groups
                .into_iter()
                .map(|(nexthop, indexes)| Group {
                    key: NexthopKey::new(&nexthop),
                    nexthop,
                    indexes,
                })
                .collect(),
            refused,
        }
    }

    /// The keys of its groups (for demand counting).
    pub fn keys(&self) -> impl Iterator<Item = &NexthopKey> {
        self.groups.iter().map(|g| &g.key)
    }
}

/// The key of a job's explicit next hop, when it has one: two jobs go the
/// same route when their transports and these keys are equal.
pub fn explicit_key(job: &Job) -> Option<NexthopKey> {
    job.nexthop.as_deref().map(NexthopKey::new)
}

/// Two jobs that would use the same sessions: same transport, same
/// explicit next hop (by key).
pub fn same_route(a: &Job, b: &Job) -> bool {
    a.transport == b.transport
        && matches!((explicit_key(a), explicit_key(b)), (Some(x), Some(y)) if x == y)
}

/// The outcome of a recipient whose domain cannot be a destination.
fn bad_domain(domain: &str, reason: &str) -> Outcome {
    let mut diagnostic = String::from("bad address syntax: domain \"");
    crate::recipients::push_printable_address(&mut diagnostic, domain);
    diagnostic.push_str("\": ");
    diagnostic.push_str(reason);
    Outcome {
        status: Status::Bounced,
        dsn: crate::dsn::BAD_RECIPIENT_SYNTAX,
        relay: None,
        diagnostic,
        tls: None,
        timing: None,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_case_and_bare_strips_brackets_and_port() {
        let key = NexthopKey::new("[MX.Example]:2525");
        assert_eq!(key, NexthopKey::new("[mx.example]:2525"));
        assert_ne!(key, NexthopKey::new("[mx.example]:2526"));
        assert_eq!(key.bare(), "mx.example");
        assert_eq!(NexthopKey::new("Relay.Test").bare(), "relay.test");
    }
}
