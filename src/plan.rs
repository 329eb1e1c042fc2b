//! A job's delivery plan, made once from the checked job: its recipients
//! grouped by next hop (the job's, else `relayhost` for SMTP, else each
//! recipient's domain), each group with its [`Hop`]: the next hop as
//! written, its normalised [`NexthopKey`] and its parsed destinations.
//! The key is what every "same next hop" decision compares: on-demand
//! cache counting ([`crate::cache`]), the pool's same-route check for
//! chaining, and the chained follower offer ([`crate::chain`]); delivery
//! ([`crate::deliver`]) takes the destinations as they are. In the daemon
//! the worker that first needs a job's plan makes it and it stays with
//! the job (at submission only its keys are counted as cache demand,
//! [`Plan::keys_of`], from the same grouping rule); the CLI and
//! [`crate::dispatch::execute`] make it where they start. The
//! next-hop grammar itself is [`crate::nexthop`]'s.
//!
//! Pure; no I/O besides the service-name lookup it is given. A recipient
//! domain that cannot be a destination is set apart (bounced 5.1.3, as
//! Postfix's trivial-rewrite does), never connected to.

use std::collections::BTreeMap;

use crate::config::Settings;
use crate::job::{CheckedJob, TransportKind};
use crate::nexthop::{Destination, NextHopError, Protocol, ServiceLookup, parse_nexthop};
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

/// One next hop of a plan, in the three forms its users need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The next hop as written (for messages).
    pub nexthop: String,
    pub key: NexthopKey,
    /// Its destination list ([`parse_nexthop`] with the protocol's default
    /// port); a next hop that does not parse fails its recipients when
    /// delivered (logged then, 4.3.5).
    pub destinations: Result<Vec<Destination>, NextHopError>,
}

impl Hop {
    /// `nexthop` for `protocol`, whose default port is `port`.
    pub fn new(
        nexthop: impl Into<String>,
        protocol: Protocol,
        port: u16,
        services: &dyn ServiceLookup,
    ) -> Self {
        let nexthop = nexthop.into();
        Self {
            key: NexthopKey::new(&nexthop),
            destinations: parse_nexthop(&nexthop, protocol, port, services),
            nexthop,
        }
    }
}

/// The recipients of one next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub hop: Hop,
    /// Positions of its recipients in the job, in order.
    pub indexes: Vec<usize>,
}

/// A job's plan: its groups, and the recipients refused before any
/// connection (with their outcome).
#[derive(Clone, Debug)]
pub struct Plan {
    pub groups: Vec<Group>,
    pub refused: Vec<(usize, Outcome)>,
    transport: TransportKind,
    /// The job names its next hop (not `relayhost`, not the domains).
    explicit: bool,
    /// What the plan depends on in the configuration: `relayhost` and the
    /// protocol's default port when it was made.
    relayhost: Option<String>,
    port: u16,
}

impl Plan {
    /// The plan of `job` under `settings` (its `relayhost` and the
    /// protocol's default port); `services` resolves port names.
    /// An address without a domain gets an empty next hop (which defers
    /// it as a bad destination).
    pub fn of(job: &CheckedJob, settings: &Settings, services: &dyn ServiceLookup) -> Self {
        let protocol = job.protocol();
        let port = settings.protocol(protocol == Protocol::Lmtp).port;
        let Grouping { groups, refused } = grouping(job, settings.relayhost.as_deref());
        Self {
            groups: groups
                .into_iter()
                .map(|(nexthop, indexes)| Group {
                    hop: Hop::new(nexthop, protocol, port, services),
                    indexes,
                })
                .collect(),
            refused,
            transport: job.transport,
            explicit: job.nexthop.is_some(),
            relayhost: settings.relayhost.clone(),
            port,
        }
    }

    /// The keys the plan of `job` will have, without making the plan (no
    /// destination is parsed): what the pool counts as cache demand when
    /// a job is submitted; the plan itself is made once, by the worker.
    pub fn keys_of(job: &CheckedJob, settings: &Settings) -> Vec<NexthopKey> {
        grouping(job, settings.relayhost.as_deref())
            .groups
            .into_iter()
            .map(|(nexthop, _)| NexthopKey::new(&nexthop))
            .collect()
    }

    /// Whether the plan still holds under `settings`: a reload (SIGHUP)
    /// between submission and delivery may have changed `relayhost` or the
    /// default port, and a job is delivered with the configuration of the
    /// moment it runs.
    pub fn holds_under(&self, settings: &Settings) -> bool {
        let lmtp = self.transport == TransportKind::Lmtp;
        self.relayhost == settings.relayhost && self.port == settings.protocol(lmtp).port
    }

    /// The keys of its groups (for demand counting).
    pub fn keys(&self) -> impl Iterator<Item = &NexthopKey> {
        self.groups.iter().map(|g| &g.hop.key)
    }

    /// The key of the job's explicit next hop, when it has one: two jobs
    /// go the same route when their transports and these keys are equal.
    pub fn explicit_key(&self) -> Option<&NexthopKey> {
        if self.explicit {
            self.groups.first().map(|g| &g.hop.key)
        } else {
            None
        }
    }
}

/// Two jobs that would use the same sessions: same transport, same
/// explicit next hop (by key).
pub fn same_route(a: &Plan, b: &Plan) -> bool {
    a.transport == b.transport
        && matches!((a.explicit_key(), b.explicit_key()), (Some(x), Some(y)) if x == y)
}

/// A job's recipients grouped by next hop (in next-hop order), and those
/// refused before any connection.
struct Grouping {
    groups: Vec<(String, Vec<usize>)>,
    refused: Vec<(usize, Outcome)>,
}

/// The one grouping rule: the job's next hop, else `relayhost` (SMTP),
/// else each recipient's domain; an address without a domain gets an
/// empty next hop (deferred as a bad destination), a domain that cannot
/// be one is refused (5.1.3).
fn grouping(job: &CheckedJob, relayhost: Option<&str>) -> Grouping {
    let whole = job.nexthop.as_deref().or(match job.transport {
        TransportKind::Smtp => relayhost,
        TransportKind::Lmtp => None,
    });
    if let Some(nexthop) = whole {
        return Grouping {
            groups: vec![(nexthop.to_string(), (0..job.recipients.len()).collect())],
            refused: Vec::new(),
        };
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
    Grouping {
        groups: groups.into_iter().collect(),
        refused,
    }
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
        tls_policy: None,
        timing: None,
        source: None,
        success: None,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
