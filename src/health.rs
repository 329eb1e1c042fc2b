//! Address health memory: which server addresses (IP and port) recently
//! failed to connect — the connect timed out, was refused, or the host or
//! network was unreachable — so that later address lists try them last.
//!
//! One [`AddressHealth`] is shared by all of a daemon's workers and kept
//! across configuration reloads (like the session cache); `mailhop send
//! --direct` uses a fresh one. A failure marks the address for the
//! configured time (`[smtp] address_health_time`); a successful connect
//! clears the mark at once. [`AddressHealth::demote`] moves marked
//! addresses to the end of a list, keeping the order otherwise: a
//! blackholed MX address then costs one connect timeout per period, not
//! one per job. When a mark runs out, the first caller that asks gets the
//! address in its place again (it probes it); for the others the mark
//! holds until that probe ends (a failure starts a new period, a success
//! clears the mark) or, when the prober never gets to it, for one more
//! period: so concurrent jobs do not all retry a dead address at once.
//! The same holds at first contact: while a connect to an address that
//! has never connected (as far as this memory knows) is in progress,
//! other jobs try it last too, so that a burst of jobs to a blackholed
//! address costs one connect timeout, not one per job; once an address
//! has connected, connects in progress no longer count. This is a deviation from Postfix's order (which retries
//! every address in DNS/MX order every time); `[smtp] address_health =
//! false` gives Postfix's order exactly.
//!
//! Only the order changes: which recipients are kept for a backup MX and
//! their status codes are the caller's (the delivery loop's final-server
//! rule), see [`crate::deliver`]. The clock is passed in (`*_at` methods)
//! so that the logic is tested without waiting. Bounded: at most
//! [`MAX_ENTRIES`] addresses are remembered. Never panics; a poisoned lock
//! is taken over (the map holds no invariant a panicking holder could
//! break).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most addresses remembered at once; beyond it, expired entries are
/// dropped, then new failures are not remembered until room is made.
pub const MAX_ENTRIES: usize = 65_536;

/// A failed address's mark.
#[derive(Clone, Copy, Debug)]
struct Mark {
    /// When the mark runs out.
    until: Instant,
    /// The period it was set for.
    period: Duration,
    /// Once it ran out: the first caller probes the address, and the mark
    /// holds for the others until this time (or the probe's end).
    probe_until: Option<Instant>,
}

type Marks = HashMap<SocketAddr, Mark, foldhash::fast::RandomState>;

/// Connects in progress to addresses that have not connected yet, and
/// the addresses that have.
#[derive(Debug, Default)]
struct Contact {
    /// Address → connects in progress to it and when the first of them
    /// started (only unproven addresses).
    unproven_in_flight: HashMap<SocketAddr, (u32, Instant), foldhash::fast::RandomState>,
    /// Addresses that connected at least once (bounded by [`MAX_ENTRIES`]).
    proven: std::collections::HashSet<SocketAddr, foldhash::fast::RandomState>,
}

/// Recently failed server addresses, each with its mark.
#[derive(Debug, Default)]
pub struct AddressHealth {
    failed: Mutex<Marks>,
    /// Entries in `failed` (read without the lock: an empty memory, the
    /// usual case, costs no lock per job).
    count: AtomicUsize,
    contact: Mutex<Contact>,
    /// Entries in `contact.unproven_in_flight` (read without the lock).
    in_flight: AtomicUsize,
}

impl AddressHealth {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, Marks> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connect to `addr` timed out, was refused or found no route: try
    /// it last for `period` from now.
    pub fn failed(&self, addr: SocketAddr, period: Duration) {
        self.failed_at(addr, period, Instant::now());
    }

    /// [`AddressHealth::failed`] at the time `now`.
    pub fn failed_at(&self, addr: SocketAddr, period: Duration, now: Instant) {
        let Some(until) = now.checked_add(period) else {
            return;
        };
        let mut map = self.map();
        if map.len() >= MAX_ENTRIES && !map.contains_key(&addr) {
            map.retain(|_, mark| mark.until.max(mark.probe_until.unwrap_or(mark.until)) > now);
            if map.len() >= MAX_ENTRIES {
                log::debug!("address health memory full; {addr} not remembered");
                self.count.store(map.len(), Ordering::Relaxed);
                return;
            }
        }
        let mark = Mark {
            until,
            period,
            probe_until: None,
        };
        map.insert(addr, mark);
        self.count.store(map.len(), Ordering::Relaxed);
    }

    fn contact(&self) -> MutexGuard<'_, Contact> {
        self.contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connect to `addr` starts. Until [`AddressHealth::connect_ended`],
    /// an address that has never connected counts as failed for others.
    pub fn connecting(&self, addr: SocketAddr) {
        let mut contact = self.contact();
        if contact.proven.contains(&addr) {
            return;
        }
        contact
            .unproven_in_flight
            .entry(addr)
            .or_insert((0, Instant::now()))
            .0 += 1;
        self.in_flight
            .store(contact.unproven_in_flight.len(), Ordering::Relaxed);
    }

    /// A connect to `addr` ended (`ok`: it connected).
    pub fn connect_ended(&self, addr: SocketAddr, ok: bool) {
        let mut contact = self.contact();
        if let Some((count, _)) = contact.unproven_in_flight.get_mut(&addr) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                contact.unproven_in_flight.remove(&addr);
            }
        }
        if ok && !contact.proven.contains(&addr) {
            if contact.proven.len() >= MAX_ENTRIES {
                contact.proven.clear();
            }
            contact.proven.insert(addr);
            // Proven: other connects in progress to it are no longer
            // first contacts.
            contact.unproven_in_flight.remove(&addr);
        }
        self.in_flight
            .store(contact.unproven_in_flight.len(), Ordering::Relaxed);
    }

    /// A connect to an address that never connected is in progress.
    fn suspect(&self, addr: SocketAddr) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
            && self.contact().unproven_in_flight.contains_key(&addr)
    }

    /// A connect to `addr` succeeded: it is healthy again.
    pub fn succeeded(&self, addr: SocketAddr) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map();
        map.remove(&addr);
        self.count.store(map.len(), Ordering::Relaxed);
    }

    /// Whether `addr` is marked now.
    pub fn is_failed(&self, addr: SocketAddr) -> bool {
        self.is_failed_at(addr, Instant::now())
    }

    /// Whether `addr` is marked at the time `now`. The first caller after
    /// the mark ran out gets false (it probes the address); the others get
    /// true while that probe may be running (one more period at most).
    pub fn is_failed_at(&self, addr: SocketAddr, now: Instant) -> bool {
        self.state_at(addr, now) == State::Failed
    }

    /// The state of `addr` at the time `now` for this caller; see
    /// [`AddressHealth::is_failed_at`].
    pub fn state_at(&self, addr: SocketAddr, now: Instant) -> State {
        match self.marked_state(addr, now) {
            Some(state) => state,
            None => self.good_or_suspect(addr),
        }
    }

    /// The state from the failure marks alone; None: not marked.
    fn marked_state(&self, addr: SocketAddr, now: Instant) -> Option<State> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.map();
        let mark = map.get_mut(&addr)?;
        Some(Self::mark_state(mark, now))
    }

    fn mark_state(mark: &mut Mark, now: Instant) -> State {
        if now < mark.until {
            return State::Failed;
        }
        match mark.probe_until {
            Some(end) if now < end => State::Failed,
            _ => {
                mark.probe_until = Some(now.checked_add(mark.period).unwrap_or(now));
                State::Probe
            }
        }
    }

    /// Not marked: good, unless it is a first contact in progress.
    fn good_or_suspect(&self, addr: SocketAddr) -> State {
        if self.suspect(addr) {
            State::Failed
        } else {
            State::Good
        }
    }

    /// Addresses remembered (marked, or being probed; for tests and
    /// diagnostics).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the items whose address is marked now to the end of `items`,
    /// keeping the order of both parts (a stable partition). `addr` gives
    /// an item's address; an item without one (a UNIX socket, a cached
    /// session) stays where it is. Returns how many items were moved and
    /// the addresses this caller is to probe (left in place).
    pub fn demote<T>(
        &self,
        items: &mut Vec<T>,
        addr: impl Fn(&T) -> Option<SocketAddr>,
    ) -> Demoted {
        self.demote_at(items, addr, Instant::now())
    }

    /// [`AddressHealth::demote`] at the time `now`. Also claims the first
    /// contact: when the address the caller will try first has never
    /// connected and nobody is connecting to it, it counts as in progress
    /// from now on (others try it last) until the caller's
    /// [`AddressHealth::connect_ended`] for it ([`Demoted::claimed`]).
    pub fn demote_at<T>(
        &self,
        items: &mut Vec<T>,
        addr: impl Fn(&T) -> Option<SocketAddr>,
        now: Instant,
    ) -> Demoted {
        let mut demoted = Demoted::default();
        // One lock over the checks and the claim: two callers cannot both
        // take a first contact.
        let mut contact = self.contact();
        // Rank: 0 good, then first contacts in progress (the one started
        // last first: a dead address stays in progress the longest), then
        // addresses that failed lately.
        let ranks: Vec<(u8, Option<std::cmp::Reverse<Instant>>)> = items
            .iter()
            .map(|item| {
                let Some(a) = addr(item) else {
                    return (0, None);
                };
                match self.marked_state(a, now) {
                    None => match contact.unproven_in_flight.get(&a) {
                        Some((_, since)) => (1, Some(std::cmp::Reverse(*since))),
                        None => (0, None),
                    },
                    Some(State::Good) => (0, None),
                    Some(State::Failed) => (2, None),
                    Some(State::Probe) => {
                        demoted.probes.push(a);
                        (0, None)
                    }
                }
            })
            .collect();
        let moved = ranks.iter().filter(|(rank, _)| *rank > 0).count();
        demoted.moved = moved;
        if moved > 0 {
            let mut ranked: Vec<_> = ranks.into_iter().zip(items.drain(..)).collect();
            // Stable: equal ranks keep their order.
            ranked.sort_by_key(|(rank, _)| *rank);
            *items = ranked.into_iter().map(|(_, item)| item).collect();
        }
        if let Some(first) = items.first().and_then(&addr)
            && !contact.proven.contains(&first)
            && !contact.unproven_in_flight.contains_key(&first)
        {
            contact
                .unproven_in_flight
                .insert(first, (1, Instant::now()));
            self.in_flight
                .store(contact.unproven_in_flight.len(), Ordering::Relaxed);
            demoted.claimed = Some(first);
        }
        demoted
    }
}

/// An address's state for one caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not marked: no recent failure.
    Good,
    /// Failed lately (or being probed by another caller): try it last.
    Failed,
    /// Its mark ran out and this caller is the one to probe it: try it in
    /// its place.
    Probe,
}

/// What [`AddressHealth::demote`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demoted {
    /// Items moved to the end.
    pub moved: usize,
    /// Addresses whose mark ran out and that this caller is to probe.
    pub probes: Vec<SocketAddr>,
    /// The first contact this caller claimed: its connect counts as in
    /// progress until the caller's `connect_ended` for it.
    pub claimed: Option<SocketAddr>,
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
