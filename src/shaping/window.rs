//! A destination's concurrency window and its feedback, with the
//! semantics of Postfix's queue manager (qmgr_queue.c): positive feedback
//! after each delivery that reached the site, grown in whole steps once a
//! hysteresis cycle is full and only while the window is within the
//! initial concurrency of the deliveries in progress; negative feedback
//! after each site failure, shrinking at once (never below 1); and the
//! failed-cohort rule that declares the destination dead. Pure.

use crate::config::Feedback;

/// The numbers one destination's window needs from the configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowRules {
    /// 0: no limit.
    pub limit: u32,
    pub initial: u32,
    pub positive: Feedback,
    pub negative: Feedback,
    /// 0: never dead.
    pub failed_cohort_limit: u32,
}

/// The window and its feedback cycles.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    window: f64,
    success: f64,
    failure: f64,
    fail_cohorts: f64,
}

impl Window {
    pub fn new(rules: &WindowRules) -> Self {
        Self {
            window: f64::from(rules.initial.max(1)),
            success: 0.0,
            failure: 0.0,
            fail_cohorts: 0.0,
        }
    }

    /// Deliveries that may be in progress at once.
    pub fn size(&self) -> u32 {
        // The window is kept between 1 and the limit (a u32).
        self.window.clamp(1.0, f64::from(u32::MAX)) as u32
    }

    /// A delivery reached the site (Postfix's qmgr_queue_unthrottle on a
    /// live queue); `busy` deliveries are in progress.
    pub fn success(&mut self, rules: &WindowRules, busy: u32) {
        self.fail_cohorts = 0.0;
        let limit = f64::from(rules.limit);
        let below_limit = rules.limit == 0 || limit > self.window;
        let near_busy = self.window < f64::from(busy) + f64::from(rules.initial);
        if below_limit && near_busy {
            let feedback = rules.positive.value(self.window);
            self.success += feedback;
            // Whole steps; half a step of margin for rounding.
            while self.success + feedback / 2.0 >= 1.0 {
                self.window += 1.0;
                self.success -= 1.0;
                self.failure = 0.0;
            }
            if rules.limit > 0 && self.window > limit {
                self.window = limit;
            }
        }
    }

    /// A delivery failed at the site (qmgr_queue_throttle). True when the
    /// failed-cohort rule declares the destination dead.
    pub fn failure(&mut self, rules: &WindowRules) -> bool {
        self.fail_cohorts += 1.0 / self.window.max(1.0);
        let dead = rules.failed_cohort_limit > 0
            && self.fail_cohorts >= f64::from(rules.failed_cohort_limit);
        self.shrink(rules);
        dead
    }

    /// Negative feedback without the dead rule (a throttling reply: the
    /// site is alive and asks us to slow down).
    pub fn shrink(&mut self, rules: &WindowRules) {
        let feedback = rules.negative.value(self.window);
        self.failure -= feedback;
        while self.failure - feedback / 2.0 < 0.0 {
            self.window -= 1.0;
            self.success = 0.0;
            self.failure += 1.0;
        }
        if self.window < 1.0 {
            self.window = 1.0;
        }
    }

    /// Caps the window at `ceiling` (at least 1).
    pub fn cap(&mut self, ceiling: u32) {
        let ceiling = f64::from(ceiling.max(1));
        if self.window > ceiling {
            self.window = ceiling;
            self.success = 0.0;
        }
    }

    /// Back from the dead: "best concurrency is anyone's guess": the
    /// deliveries in progress, else the initial window.
    pub fn revive(&mut self, rules: &WindowRules, busy: u32) {
        self.window = if busy > 0 {
            f64::from(busy)
        } else {
            f64::from(rules.initial.max(1))
        };
        self.success = 0.0;
        self.failure = 0.0;
        self.fail_cohorts = 0.0;
    }

    /// Applies a new limit (configuration reload).
    pub fn limit_to(&mut self, rules: &WindowRules) {
        if rules.limit > 0 && self.window > f64::from(rules.limit) {
            self.window = f64::from(rules.limit);
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
