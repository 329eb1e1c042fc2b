//! Pipelining across jobs on one cached session (`[cache] chain_jobs`).
//!
//! RFC 2920 lets the next transaction's commands follow the end of the
//! message data in the same write. A daemon worker that has already taken
//! its next job from the queue (same next hop, a small message in memory)
//! offers it here as a [`Follower`] before it runs the current job. When
//! the current job's session is a reused one whose server offers
//! PIPELINING, the delivery code starts the follower's transaction (its
//! RSET probe, MAIL, RCPT and DATA) behind the final dot, and — if the
//! session stays usable — hands the connection, with that transaction in
//! flight, to the follower instead of the cache. The follower's delivery
//! then finds it where it would look for a cached session, and goes on
//! reading the replies. One round trip and one sleep of the worker less
//! per message.
//!
//! Failure handling is the cached session's: the follower's first reply is
//! its RSET probe's, so a connection that breaks while the current job
//! finishes, or a server that says 421, only makes the follower connect
//! afresh, without touching a recipient. A handed session the follower
//! does not pick up is closed when it ends.
//!
//! The state is one [`Chain`] per worker (each runs one job at a time),
//! passed explicitly to the deliveries it runs: nothing here is shared,
//! and the CLI, which never offers a follower, passes none.

use std::cell::RefCell;
use std::hash::BuildHasher;

use crate::cache::IdleSession;
use crate::nexthop::Protocol;
use crate::plan::NexthopKey;
use crate::smtp::client::{Client, Envelope, MessageFacts};

/// The job a worker will run next, as far as its session needs it.
#[derive(Debug)]
pub struct Follower {
    /// Its job id, for logs only: the client chooses it and nothing keeps
    /// it unique; a handed session is keyed by the daemon's ticket.
    pub job_id: String,
    /// Its normalised form: a session's job takes the follower only for
    /// the same key.
    pub key: NexthopKey,
    pub protocol: Protocol,
    pub envelope: Envelope,
    pub facts: MessageFacts,
    /// [`message_digest`] of its message.
    pub message_digest: u64,
}

/// A transaction started for the job with this ticket.
struct Primed {
    ticket: u64,
    message_digest: u64,
    client: Client,
}

/// A session with a job's transaction in flight, for that job only.
struct Handed {
    ticket: u64,
    message_digest: u64,
    session: IdleSession,
}

#[derive(Default)]
struct Slot {
    /// The daemon ticket of the job this worker runs now.
    current: Option<u64>,
    follower: Option<(u64, Follower)>,
    /// The follower's transaction, started behind the current job's data.
    primed: Option<Primed>,
    /// A session with the follower's transaction in flight.
    handed: Option<Handed>,
}

/// One worker's hand-over state: owned by the worker, passed explicitly
/// to each delivery it runs (nothing is shared between threads).
#[derive(Default)]
pub struct Chain {
    slot: RefCell<Slot>,
}

/// The identity of a message's content (not a security boundary: the
/// ticket is; this catches a session meeting the wrong message).
pub fn message_digest(bytes: &[u8]) -> u64 {
    // foldhash: a few GB/s, and the same seed in every thread.
    foldhash::fast::FixedState::with_seed(0x6d61_696c_686f_7021).hash_one(bytes)
}

impl Chain {
    /// A worker offers the job it will run next (`ticket`: its daemon ticket).
    pub fn offer(&self, ticket: u64, follower: Follower) {
        self.slot.borrow_mut().follower = Some((ticket, follower));
    }

    /// The offered follower and its ticket, when it goes to the same next
    /// hop with the same protocol (taken: it is offered to one session only).
    pub fn take_follower(
        &self,
        nexthop: &NexthopKey,
        protocol: Protocol,
    ) -> Option<(u64, Follower)> {
        let mut slot = self.slot.borrow_mut();
        let matches = slot
            .follower
            .as_ref()
            .is_some_and(|(_, f)| f.protocol == protocol && f.key == *nexthop);
        if matches { slot.follower.take() } else { None }
    }

    /// Records the follower's started transaction (for the job `ticket`,
    /// whose message has `message_digest`).
    pub fn set_primed(&self, ticket: u64, message_digest: u64, client: Client) {
        self.slot.borrow_mut().primed = Some(Primed {
            ticket,
            message_digest,
            client,
        });
    }

    /// The follower's started transaction, if the current session made
    /// one: (ticket, message digest, client).
    pub fn take_primed(&self) -> Option<(u64, u64, Client)> {
        self.slot
            .borrow_mut()
            .primed
            .take()
            .map(|p| (p.ticket, p.message_digest, p.client))
    }

    /// Leaves a session (with `session.primed` set) for the job `ticket`.
    pub fn hand_over(&self, ticket: u64, message_digest: u64, session: IdleSession) {
        self.slot.borrow_mut().handed = Some(Handed {
            ticket,
            message_digest,
            session,
        });
    }

    /// The session handed to the job running now (see [`Chain::keep_only_for`]),
    /// when `wanted` accepts it and the digest of its message.
    pub fn take_handed(
        &self,
        wanted: impl FnOnce(&IdleSession, u64) -> bool,
    ) -> Option<IdleSession> {
        let mut slot = self.slot.borrow_mut();
        let current = slot.current;
        let fits = slot
            .handed
            .as_ref()
            .is_some_and(|h| Some(h.ticket) == current && wanted(&h.session, h.message_digest));
        if fits {
            slot.handed.take().map(|h| h.session)
        } else {
            None
        }
    }

    /// Before a worker runs the job with daemon ticket `ticket`: forgets
    /// what is not for that job (an unused follower offer or started
    /// transaction, a session handed to another job; such a session is
    /// closed by dropping it).
    pub fn keep_only_for(&self, ticket: u64) {
        let stale = {
            let mut slot = self.slot.borrow_mut();
            slot.current = Some(ticket);
            slot.follower = None;
            slot.primed = None;
            match &slot.handed {
                Some(h) if h.ticket != ticket => slot.handed.take(),
                _ => None,
            }
        };
        drop(stale);
    }

    /// After the job with ticket `ticket` ran: a session handed to it that
    /// it did not use is closed; nothing is for it any more.
    pub fn job_done(&self, ticket: u64) {
        let stale = {
            let mut slot = self.slot.borrow_mut();
            if slot.current == Some(ticket) {
                slot.current = None;
            }
            match &slot.handed {
                Some(h) if h.ticket == ticket => slot.handed.take(),
                _ => None,
            }
        };
        drop(stale);
    }

    /// Forgets everything (the worker has no next job).
    pub fn clear(&self) {
        let stale = std::mem::take(&mut *self.slot.borrow_mut());
        drop(stale);
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
