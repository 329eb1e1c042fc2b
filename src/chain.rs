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
//! The state is per thread (each worker runs one job at a time): nothing
//! here is shared, and the CLI, which never offers a follower, is not
//! affected.

use std::cell::RefCell;

use crate::cache::IdleSession;
use crate::nexthop::Protocol;
use crate::smtp::client::{Client, Envelope, MessageFacts};

/// The job a worker will run next, as far as its session needs it.
#[derive(Debug)]
pub struct Follower {
    /// Its job id: a handed session is only for this job.
    pub job_id: String,
    /// The job's next hop as written.
    pub nexthop: String,
    pub protocol: Protocol,
    pub envelope: Envelope,
    pub facts: MessageFacts,
}

#[derive(Default)]
struct Slot {
    follower: Option<Follower>,
    /// The follower's transaction, started behind the current job's data.
    primed: Option<(String, Client)>,
    /// A session with the follower's transaction in flight, for that job.
    handed: Option<(String, IdleSession)>,
}

thread_local! {
    static SLOT: RefCell<Slot> = RefCell::new(Slot::default());
}

/// A worker offers the job it will run next.
pub fn offer(follower: Follower) {
    SLOT.with(|slot| slot.borrow_mut().follower = Some(follower));
}

/// The offered follower, when it goes to the same next hop with the same
/// protocol (taken: it is offered to one session only).
pub fn take_follower(nexthop: &str, protocol: Protocol) -> Option<Follower> {
    SLOT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let matches = slot
            .follower
            .as_ref()
            .is_some_and(|f| f.protocol == protocol && f.nexthop.eq_ignore_ascii_case(nexthop));
        if matches { slot.follower.take() } else { None }
    })
}

/// Records the follower's started transaction.
pub fn set_primed(job_id: String, client: Client) {
    SLOT.with(|slot| slot.borrow_mut().primed = Some((job_id, client)));
}

/// The follower's started transaction, if the current session made one.
pub fn take_primed() -> Option<(String, Client)> {
    SLOT.with(|slot| slot.borrow_mut().primed.take())
}

/// Leaves a session (with `session.primed` set) for the job `job_id`.
pub fn hand_over(job_id: String, session: IdleSession) {
    SLOT.with(|slot| slot.borrow_mut().handed = Some((job_id, session)));
}

/// The handed session, when `wanted` accepts it.
pub fn take_handed(wanted: impl FnOnce(&IdleSession) -> bool) -> Option<IdleSession> {
    SLOT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let fits = slot.handed.as_ref().is_some_and(|(_, s)| wanted(s));
        if fits {
            slot.handed.take().map(|(_, s)| s)
        } else {
            None
        }
    })
}

/// Before a worker runs `job_id`: forgets what is not for that job (an
/// unused follower offer or started transaction, a session handed to
/// another job; such a session is closed by dropping it).
pub fn keep_only_for(job_id: &str) {
    let stale = SLOT.with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.follower = None;
        slot.primed = None;
        match &slot.handed {
            Some((id, _)) if id != job_id => slot.handed.take(),
            _ => None,
        }
    });
    drop(stale);
}

/// Forgets everything (the worker has no next job).
pub fn clear() {
    let stale = SLOT.with(|slot| std::mem::take(&mut *slot.borrow_mut()));
    drop(stale);
}
