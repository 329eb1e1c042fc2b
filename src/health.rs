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
//! one per job. This is a deviation from Postfix's order (which retries
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

/// Recently failed server addresses, each with the time its mark ends.
#[derive(Debug, Default)]
pub struct AddressHealth {
    failed: Mutex<HashMap<SocketAddr, Instant, foldhash::fast::RandomState>>,
    /// Entries in `failed` (read without the lock: an empty memory, the
    /// usual case, costs no lock per job).
    count: AtomicUsize,
}

impl AddressHealth {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<SocketAddr, Instant, foldhash::fast::RandomState>> {
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
            map.retain(|_, end| *end > now);
            if map.len() >= MAX_ENTRIES {
                log::debug!("address health memory full; {addr} not remembered");
                self.count.store(map.len(), Ordering::Relaxed);
                return;
            }
        }
        map.insert(addr, until);
        self.count.store(map.len(), Ordering::Relaxed);
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

    /// Whether `addr` is marked at the time `now` (an expired mark is
    /// dropped).
    pub fn is_failed_at(&self, addr: SocketAddr, now: Instant) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut map = self.map();
        match map.get(&addr) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(&addr);
                self.count.store(map.len(), Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Addresses marked now (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the items whose address is marked now to the end of `items`,
    /// keeping the order of both parts (a stable partition). `addr` gives
    /// an item's address; an item without one (a UNIX socket, a cached
    /// session) stays where it is. Returns how many items were moved.
    pub fn demote<T>(&self, items: &mut Vec<T>, addr: impl Fn(&T) -> Option<SocketAddr>) -> usize {
        self.demote_at(items, addr, Instant::now())
    }

    /// [`AddressHealth::demote`] at the time `now`.
    pub fn demote_at<T>(
        &self,
        items: &mut Vec<T>,
        addr: impl Fn(&T) -> Option<SocketAddr>,
        now: Instant,
    ) -> usize {
        if self.count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let marks: Vec<bool> = items
            .iter()
            .map(|item| addr(item).is_some_and(|a| self.is_failed_at(a, now)))
            .collect();
        let moved = marks.iter().filter(|&&m| m).count();
        if moved == 0 {
            return 0;
        }
        let mut good = Vec::with_capacity(items.len());
        let mut bad = Vec::with_capacity(moved);
        for (item, marked) in items.drain(..).zip(marks) {
            if marked {
                bad.push(item);
            } else {
                good.push(item);
            }
        }
        good.append(&mut bad);
        *items = good;
        moved
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
