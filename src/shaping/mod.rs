//! Delivery shaping: the daemon's per-destination admission control,
//! between the clients' submissions and the worker channel, as Postfix's
//! queue manager does it for its delivery agents (qmgr_queue.c,
//! qmgr_feedback.c). Each destination (a job's first next hop, or its MX
//! site) has a queue, a concurrency window moved by feedback from each
//! finished job ([`window`]), an optional rate ([`gcra`]), a pause after
//! a throttling reply ([`verdict`]) and a dead state after a cohort of
//! site failures. A job waits in its destination's queue, holding no
//! worker, until the destination may take one more delivery; then it goes
//! to the workers' channel. Jobs beyond a destination's waiting limit are
//! set aside (bounded by the clients' byte quotas, not counted in the
//! daemon's queue) so that one destination never fills the queue and
//! never stops a client's jobs for other destinations.
//!
//! [`Shaper`] is the thread-safe wrapper (one mutex, a clock thread for
//! pauses and rate waits); the decisions are [`scheduler::Scheduler`]'s, pure and
//! tested with a given clock.
//!
//! Error contract: nothing here fails or panics on input; a poisoned lock
//! is taken over (the state stays consistent: every operation completes
//! its changes before it returns).

pub mod gcra;
pub mod scheduler;
pub mod shared;
pub mod sites;
pub mod verdict;
pub mod window;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub use self::scheduler::{Key, Moves, Refusal, Suspension, Tally};
pub use self::shared::{Demand, Grant, Lease, LocalOnly, SharedLimits};
pub use self::sites::MxSites;
pub use self::verdict::{Verdict, verdict};
use crate::config::ShapingSettings;
use crate::stats::{DestinationState, ShapingReport};

/// Longest sleep of the clock thread (it also forgets idle state then).
const CLOCK_TICK: Duration = Duration::from_secs(1);

/// Carries out the moves the scheduler decided (hands admitted jobs to
/// the workers, defers rejected ones).
pub type Mover<T> = dyn Fn(Moves<T>) + Send + Sync;

/// Why [`Shaper::submit`] did not queue a job.
#[derive(Debug)]
pub enum Unqueued<T> {
    /// Its destination is dead: defer it so.
    Suspended(T, Suspension),
    /// The daemon stops.
    Stopping(T),
}

/// The thread-safe scheduler.
pub struct Shaper<T> {
    core: Mutex<self::scheduler::Scheduler<T>>,
    /// A timer earlier than the clock's sleep was set.
    tick: Condvar,
    stop: AtomicBool,
    mover: Box<Mover<T>>,
}

impl<T: Send + 'static> Shaper<T> {
    /// A scheduler whose decisions `mover` carries out, with its clock
    /// thread started.
    pub fn start(settings: ShapingSettings, mover: Box<Mover<T>>) -> io::Result<Arc<Self>> {
        let shaper = Arc::new(Self {
            core: Mutex::new(self::scheduler::Scheduler::new(Arc::new(settings))),
            tick: Condvar::new(),
            stop: AtomicBool::new(false),
            mover,
        });
        let clock = Arc::clone(&shaper);
        thread::Builder::new()
            .name("shaper-clock".into())
            .stack_size(128 * 1024)
            .spawn(move || clock.run_clock())?;
        Ok(shaper)
    }

    fn lock(&self) -> MutexGuard<'_, self::scheduler::Scheduler<T>> {
        match self.core.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether shaping is on, and the settings in force.
    pub fn settings(&self) -> Arc<ShapingSettings> {
        Arc::new(self.lock().settings().clone())
    }

    /// Limits shared with other nodes (the Redis feed's cluster-wide
    /// destination limits), asked on top of the local ones from now on.
    /// They are asked under the scheduler's lock: an implementation
    /// answers quickly or [`Grant::Unavailable`].
    pub fn set_shared(&self, shared: Arc<dyn SharedLimits>) {
        self.lock().set_shared(shared);
    }

    /// A reloaded configuration.
    pub fn set_settings(&self, settings: ShapingSettings) {
        let moves = self.lock().set_settings(Arc::new(settings), Instant::now());
        self.carry_out(moves);
    }

    /// Queues a job for its destination (aside when that destination has
    /// `destination_waiting_limit` jobs waiting: never blocks).
    pub fn submit(&self, key: &Key, item: T, stopping: &AtomicBool) -> Result<(), Unqueued<T>> {
        let mut core = self.lock();
        if stopping.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
            return Err(Unqueued::Stopping(item));
        }
        match core.offer(key, item, Instant::now()) {
            Ok(moves) => {
                drop(core);
                self.carry_out(moves);
                Ok(())
            }
            Err(Refusal(back, why)) => Err(Unqueued::Suspended(back, why)),
        }
    }

    /// A job of `key` finished with `verdict`.
    pub fn done(&self, key: &Key, verdict: &Verdict, tally: Tally) {
        let moves = self.lock().done(key, verdict, tally, Instant::now());
        self.carry_out(moves);
    }

    /// The next waiting job of `key` to follow a delivery in progress on
    /// its session (see [`scheduler::Scheduler::take_follower`]).
    pub fn take_follower(&self, key: &Key) -> Option<T> {
        let (item, moves) = self.lock().take_follower(key, Instant::now());
        self.carry_out(moves);
        item
    }

    /// A follower that cannot follow goes back to its queue.
    pub fn untake(&self, key: &Key, item: T) {
        let moves = self.lock().untake(key, item, Instant::now());
        self.carry_out(moves);
    }

    /// A throttled job goes back to the front of its destination's queue;
    /// handed back when the scheduler has stopped (shutdown).
    pub fn requeue(&self, key: &Key, item: T) -> Result<(), T> {
        let mut core = self.lock();
        if self.stop.load(Ordering::SeqCst) {
            return Err(item);
        }
        let moves = core.requeue(key, item, Instant::now());
        drop(core);
        self.carry_out(moves);
        Ok(())
    }

    /// Takes every waiting job (shutdown) and stops the clock: those
    /// counted as waiting, and those aside.
    pub fn drain(&self) -> (Vec<T>, Vec<T>) {
        self.stop.store(true, Ordering::SeqCst);
        self.tick.notify_all();
        self.lock().drain()
    }

    /// Jobs waiting for admission.
    pub fn waiting(&self) -> usize {
        self.lock().waiting()
    }

    fn carry_out(&self, moves: Moves<T>) {
        if moves.wake_clock {
            self.tick.notify_all();
        }
        (self.mover)(moves);
    }

    fn run_clock(&self) {
        let mut core = self.lock();
        while !self.stop.load(Ordering::SeqCst) {
            let moves = core.due(Instant::now());
            let sleep = core
                .next_wake()
                .map_or(CLOCK_TICK, |at| {
                    at.saturating_duration_since(Instant::now())
                })
                .min(CLOCK_TICK);
            drop(core);
            self.carry_out(moves);
            core = self.lock();
            if !sleep.is_zero() {
                core = match self.tick.wait_timeout(core, sleep) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
    }
}

impl<T: Send + 'static> ShapingReport for Shaper<T> {
    fn destinations(&self) -> Vec<DestinationState> {
        self.lock().snapshot(Instant::now()).0
    }
}

impl<T: Send + 'static> Shaper<T> {
    /// Destinations paused now.
    pub fn paused(&self) -> u64 {
        self.lock().snapshot(Instant::now()).1
    }
}

#[cfg(test)]
#[path = "shaping_tests.rs"]
mod tests;
