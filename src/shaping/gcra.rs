//! Rate limits by the generic cell rate algorithm (GCRA): a destination
//! may start a delivery when its theoretical arrival time (TAT) is no
//! further ahead than the burst allowance; each start pushes the TAT by
//! the rate's emission interval. Postfix's `default_destination_rate_delay`
//! is the case of one delivery per delay with no burst. Pure: the caller
//! passes the time.

use std::time::{Duration, Instant};

/// One destination's rate state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    /// The theoretical arrival time of the next delivery; `None`: never
    /// limited yet.
    tat: Option<Instant>,
}

/// A rate as GCRA needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Time between deliveries.
    pub interval: Duration,
    /// How far ahead of the schedule deliveries may run (a burst of
    /// `burst / interval` extra deliveries).
    pub burst: Duration,
}

impl Gcra {
    /// Whether [`Gcra::take`] would admit a delivery at `now`, counting
    /// nothing.
    pub fn check(&self, pace: Pace, now: Instant) -> Result<(), Instant> {
        self.clone().take(pace, now)
    }

    /// When a delivery may start: `now` (and it is counted) or the time
    /// to try again.
    pub fn take(&mut self, pace: Pace, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.filter(|tat| *tat > now).unwrap_or(now);
        let allowed_at = tat.checked_sub(pace.burst).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at);
        }
        self.tat = tat.checked_add(pace.interval).or(Some(tat));
        Ok(())
    }

    /// True when no earlier delivery still weighs on the schedule (the
    /// state can be forgotten).
    pub fn idle(&self, now: Instant) -> bool {
        self.tat.is_none_or(|tat| tat <= now)
    }
}

#[cfg(test)]
#[path = "gcra_tests.rs"]
mod tests;
