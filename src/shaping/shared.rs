//! The hook for limits shared with other nodes: before the scheduler
//! admits a job to a destination whose concurrency or rate is limited,
//! it asks a [`SharedLimits`] for a lease; it gives the lease back when
//! the job is done. The default, [`LocalOnly`], grants everything at once
//! and holds nothing: the local window and rate are then the only limits
//! (today's behaviour). The Redis feed's `feed::limits::ClusterLimits`
//! holds the leases and the rate in Redis so that all nodes together
//! stay within one destination's limits; the local window still applies
//! on top of them.
//!
//! Error contract: an implementation never fails the scheduler; when its
//! store cannot be reached it answers [`Grant::Unavailable`] (the
//! scheduler then applies its local limits only).

use std::time::Duration;

use super::gcra::Pace;
use super::scheduler::Key;

/// What a destination asks of the shared limits for one more delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Deliveries the destination may have in progress over all nodes
    /// (`destination_concurrency_limit`); `None`: no count check (a
    /// follower on a session already counted, or no limit).
    pub limit: Option<u32>,
    /// The destination's configured rate, if any.
    pub pace: Option<Pace>,
}

/// A held lease: handed back with [`SharedLimits::release`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease(pub String);

/// The answer to a [`Demand`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The delivery may start; `None`: nothing to give back.
    Granted(Option<Lease>),
    /// Not now: as many deliveries as the limit are in progress over the
    /// nodes, or the shared rate says wait; ask again after this long.
    Wait(Duration),
    /// The shared store cannot be reached: apply the local limits only.
    Unavailable,
}

/// Limits shared by several nodes (see the module doc).
pub trait SharedLimits: Send + Sync {
    /// One more delivery to `key`?
    fn acquire(&self, key: &Key, demand: Demand) -> Grant;
    /// A delivery granted by `acquire` is over.
    fn release(&self, key: &Key, lease: Lease);
}

/// No shared limits: everything is granted, nothing held.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly;

impl SharedLimits for LocalOnly {
    fn acquire(&self, _key: &Key, _demand: Demand) -> Grant {
        Grant::Granted(None)
    }

    fn release(&self, _key: &Key, _lease: Lease) {}
}
