//! Session reuse (Postfix's smtp_reuse.c and smtp_key.c): the cache keys,
//! the order in which cached sessions are looked for, and the rules for
//! when a session may be kept after its job.
//!
//! - Keys: [`Keys`] is the one builder of the labels a session is stored
//!   and found under, an [`EndpointLabel`] (address and port, protocol,
//!   TLS level, verified identity, HELO name, SASL user name) and a
//!   [`NexthopLabel`] (the
//!   job's first destination as [`Destination::text`] gives it, so that
//!   LMTP `inet:h` and `h` share one label).
//! - Lookup ([`arrange`]), as smtp_connect_inet: a session handed over by
//!   the previous job (see [`crate::chain`]), else one cached under the
//!   job's next-hop label (first destination only), then, address by
//!   address, sessions to best-preference addresses; backup MX addresses
//!   are looked up when their turn comes ([`Lookup::by_endpoint`]).
//! - Store ([`keep`]): only a session that ended idle, of a job allowed to
//!   store, that the client found reusable and (with TLS) when
//!   `[tls] connection_reuse` allows; a session with the next job's
//!   transaction in flight goes to that job instead, and only while its
//!   unread replies fit that transaction. The next-hop label is stored
//!   once per job, with its first good session.
//!
//! Nothing here does network I/O besides closing (QUIT) a session that is
//! not kept; nothing panics.

use crate::cache::{EndpointLabel, IdleSession, NexthopLabel, SessionCache};
use crate::chain::{self, Chain};
use crate::connect::Endpoint;
use crate::nexthop::{Destination, Protocol};
use crate::sasl::PasswordTable;
use crate::smtp::client::{Client, Envelope, MessageFacts};
use crate::smtp::command;
use crate::tls_policy::{Level, Policy};

/// The one builder of cache labels for a job's sessions.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    pub lmtp: bool,
    pub helo_name: &'a str,
    /// The job needs SMTPUTF8 (next-hop labels only).
    pub smtputf8: bool,
    /// With SASL: the password table and the destination as written,
    /// whose credential for a server host goes into its endpoint label.
    pub sasl: Option<(&'a PasswordTable, &'a str)>,
}

impl<'a> Keys<'a> {
    pub fn new(protocol: Protocol, helo_name: &'a str, smtputf8: bool) -> Self {
        Self {
            lmtp: protocol == Protocol::Lmtp,
            helo_name,
            smtputf8,
            sasl: None,
        }
    }

    /// Labels that carry the SASL user of each server (looked up in
    /// `table` by host name, then `destination`, as delivery does).
    pub fn with_sasl(mut self, table: Option<&'a PasswordTable>, destination: &'a str) -> Self {
        self.sasl = table.map(|t| (t, destination));
        self
    }

    /// The SASL user name for a server host ("" without a credential).
    pub fn sasl_username(&self, host: &str) -> String {
        self.sasl
            .and_then(|(table, destination)| table.lookup(host, destination))
            .map(|c| c.username.clone())
            .unwrap_or_default()
    }

    /// The label of an endpoint: a session is only reused with the same
    /// TLS level and verified identity (the TLS host name, from level
    /// fingerprint up).
    pub fn endpoint(&self, endpoint: &Endpoint, policy: &Policy, tls_host: &str) -> EndpointLabel {
        EndpointLabel {
            lmtp: self.lmtp,
            endpoint: endpoint.clone(),
            tls_level: policy.level,
            verified_identity: if policy.level >= Level::Fingerprint {
                tls_host.to_ascii_lowercase()
            } else {
                String::new()
            },
            helo_name: self.helo_name.to_string(),
            sasl_username: self.sasl_username(tls_host),
        }
    }

    /// The next-hop label of a job's (first) destination.
    pub fn nexthop(&self, destination: &Destination, level: Level) -> NexthopLabel {
        NexthopLabel {
            lmtp: self.lmtp,
            nexthop: destination.text().to_ascii_lowercase(),
            tls_level: level,
            helo_name: self.helo_name.to_string(),
            smtputf8: self.smtputf8,
        }
    }

    /// Whether a handed-over session was made for sessions like these
    /// (protocol, TLS level, HELO name), whatever its address.
    pub fn fits(&self, session: &IdleSession, level: Level) -> bool {
        // The server's host name is the part of `host[addr]` before '['.
        let host = session.display.split('[').next().unwrap_or("");
        session.endpoint.lmtp == self.lmtp
            && session.endpoint.tls_level == level
            && session.endpoint.helo_name == self.helo_name
            && session.endpoint.sasl_username == self.sasl_username(host)
    }
}

/// What a handed-over session must match: the job's message, parameters
/// and (pending) envelope.
pub struct JobIdentity<'a> {
    /// The job's message when held in memory (else nothing is handed).
    pub message: Option<&'a [u8]>,
    pub facts: MessageFacts,
    /// Its pending envelope (made only when a session was handed over).
    pub envelope: &'a dyn Fn() -> Envelope,
}

/// The session handed over to this job by the previous one (see
/// [`crate::chain`]), when `wanted` accepts it and the transaction
/// started on it is exactly this job's.
pub fn handed(
    chain: Option<&Chain>,
    job: &JobIdentity<'_>,
    wanted: impl FnOnce(&IdleSession) -> bool,
) -> Option<IdleSession> {
    let chain = chain?;
    let message = job.message?;
    chain.take_handed(|session, message_digest| {
        let Some(primed) = session.primed.as_deref() else {
            return false;
        };
        let fits = message_digest == chain::message_digest(message)
            && primed.facts() == job.facts
            && *primed.envelope() == (job.envelope)();
        if !fits {
            log::warn!("a chained session does not fit the job it was handed to; not used");
        }
        fits && wanted(session)
    })
}

/// Where a destination's cached sessions are looked for.
pub struct Lookup<'a> {
    pub cache: &'a SessionCache,
    pub keys: Keys<'a>,
    pub policy: &'a Policy,
}

impl Lookup<'_> {
    /// A session to this address (a best-preference one before
    /// connecting; a backup MX one when its turn comes).
    pub fn by_endpoint(&self, endpoint: &Endpoint, tls_host: &str) -> Option<IdleSession> {
        self.cache
            .take_by_endpoint(&self.keys.endpoint(endpoint, self.policy, tls_host))
    }
}

/// One server address as [`arrange`] sees it.
pub struct Target<'c, T> {
    pub item: &'c T,
    pub endpoint: Endpoint,
    /// Host name for the verified identity.
    pub tls_host: &'c str,
    /// A best-preference address (looked up before connecting).
    pub best: bool,
}

/// Postfix's smtp_reuse_session order for one TCP destination: `first`
/// (a handed-over session or one found by next-hop label) goes with its
/// address, then best-preference addresses with a cached session, then
/// the rest in order. A `first` session whose address is no longer in the
/// list is closed.
pub fn arrange<'c, T>(
    lookup: &Lookup<'_>,
    first: Option<IdleSession>,
    targets: Vec<Target<'c, T>>,
) -> Vec<(&'c T, Option<IdleSession>)> {
    let mut first = first;
    let mut queue = Vec::with_capacity(targets.len());
    let mut rest = Vec::new();
    for target in targets {
        if let Some(idle) = first.take_if(|idle| idle.endpoint.endpoint == target.endpoint) {
            queue.push((target.item, Some(idle)));
        } else if target.best {
            match lookup.by_endpoint(&target.endpoint, target.tls_host) {
                Some(idle) => queue.push((target.item, Some(idle))),
                None => rest.push((target.item, None)),
            }
        } else {
            rest.push((target.item, None));
        }
    }
    drop(first);
    queue.extend(rest);
    queue
}

/// The next job's transaction, started behind this one's data (chain):
/// its ticket, its message's digest, its client.
pub type PrimedNext = (u64, u64, Client);

/// Whether a session that ended idle may be kept: its job may store, the
/// client found it reusable, and a TLS session only with
/// `[tls] connection_reuse`.
pub fn may_keep(store: bool, reusable: bool, tls: bool, tls_connection_reuse: bool) -> bool {
    store && reusable && (!tls || tls_connection_reuse)
}

/// After a session that ended idle: keeps it in `cache` (or hands it to
/// the next job, see [`crate::chain`]) when `cache` is given, else ends it
/// with QUIT (none when the next job's commands are on the wire: then
/// only closing is safe). `nexthop` is stored with it at most once per
/// job (taken).
pub fn keep(
    cache: Option<&SessionCache>,
    chain: Option<&Chain>,
    mut session: IdleSession,
    primed_next: Option<PrimedNext>,
    nexthop: &mut Option<NexthopLabel>,
    quit_timeout: std::time::Duration,
) {
    let Some(cache) = cache else {
        if primed_next.is_none() {
            // QUIT without waiting for the reply (smtp_skip_quit_response).
            let _ = session.conn.send(command::QUIT, quit_timeout);
        }
        return;
    };
    if let Some((ticket, message_digest, next)) = primed_next {
        // The next job's transaction is in flight: the session goes to
        // that job instead of the cache (if the cache would keep it),
        // only while every unread byte can still be a reply to a
        // command it has sent (else its replies are out of step).
        let in_step = session
            .conn
            .buffered_replies()
            .is_some_and(|replies| replies <= next.awaiting_replies());
        if !in_step {
            log::info!(
                "{}: unread replies do not fit the chained transaction; closing",
                session.relay
            );
            return;
        }
        session.primed = Some(Box::new(next));
        if cache.reusable(&session)
            && let Some(chain) = chain
        {
            cache.count_chained();
            chain.hand_over(ticket, message_digest, session);
        }
        return;
    }
    cache.store(session, nexthop.take());
}

#[cfg(test)]
#[path = "reuse_tests.rs"]
mod tests;
