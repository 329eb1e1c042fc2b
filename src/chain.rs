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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::EndpointLabel;
    use crate::connect::Endpoint;
    use crate::smtp::command::Notify;
    use crate::transport::Connection;
    use crate::transport::script::Scripted;

    fn follower(id: &str, nexthop: &str) -> Follower {
        Follower {
            job_id: id.into(),
            nexthop: nexthop.into(),
            protocol: Protocol::Smtp,
            envelope: Envelope {
                sender: "s@x.test".into(),
                recipients: vec![crate::smtp::client::Recipient {
                    address: "r@y.test".into(),
                    orcpt: None,
                    notify: Notify::default(),
                }],
                envid: None,
                ret: None,
                smtputf8: false,
            },
            facts: MessageFacts {
                size: 1,
                has_8bit: false,
            },
        }
    }

    fn session() -> IdleSession {
        IdleSession {
            conn: Connection::new(Box::new(Scripted::new(Vec::new())), 2048),
            extensions: crate::smtp::ehlo::Extensions::default(),
            endpoint: EndpointLabel {
                lmtp: false,
                endpoint: Endpoint::Inet("127.0.0.1:25".parse().expect("address")),
                tls_level: crate::tls_policy::Level::None,
                verified_identity: String::new(),
                helo_name: "h.test".into(),
            },
            display: "h[127.0.0.1]".into(),
            relay: "h[127.0.0.1]:25".into(),
            tls: None,
            connected_at: std::time::Instant::now(),
            uses: 1,
            primed: None,
        }
    }

    #[test]
    fn a_follower_is_offered_to_its_own_route_once() {
        clear();
        offer(follower("B", "[MX.example]:25"));
        assert!(take_follower("[mx.example]:26", Protocol::Smtp).is_none());
        assert!(take_follower("[mx.example]:25", Protocol::Lmtp).is_none());
        let taken = take_follower("[mx.example]:25", Protocol::Smtp).expect("offered");
        assert_eq!(taken.job_id, "B");
        assert!(take_follower("[mx.example]:25", Protocol::Smtp).is_none());
    }

    #[test]
    fn a_handed_session_waits_only_for_its_job() {
        clear();
        hand_over("B".into(), session());
        keep_only_for("B");
        assert!(take_handed(|s| s.endpoint.lmtp).is_none(), "not wanted");
        assert!(take_handed(|_| true).is_some());
        hand_over("B".into(), session());
        offer(follower("C", "x"));
        keep_only_for("C");
        assert!(take_handed(|_| true).is_none(), "B's session is gone");
        assert!(take_follower("x", Protocol::Smtp).is_none(), "stale offer");
    }
}
