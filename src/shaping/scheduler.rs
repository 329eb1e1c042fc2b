//! The scheduler's state, without threads or clocks of its own: one queue
//! per destination with its concurrency [`Window`], its rate ([`Gcra`]),
//! its pause after a throttling reply and its dead state, and the timers
//! that end pauses and rate waits. Every operation takes the time and
//! returns the [`Moves`] it decided (jobs admitted, jobs to defer); the
//! caller carries them out. Items are opaque (`T`: the daemon's tickets).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gcra::{Gcra, Pace};
use super::shared::{Demand, Grant, Lease, LocalOnly, SharedLimits};
use super::verdict::Verdict;
use super::window::{Window, WindowRules};
use crate::config::{DestinationShape, ShapingSettings};
use crate::stats::DestinationState;

/// A destination: a job's first next hop (or its MX site), per transport.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub lmtp: bool,
    pub name: String,
}

impl Key {
    pub fn new(lmtp: bool, name: impl Into<String>) -> Self {
        Self {
            lmtp,
            name: name.into(),
        }
    }

    pub fn transport(&self) -> &'static str {
        if self.lmtp { "lmtp" } else { "smtp" }
    }
}

/// What an operation decided.
#[derive(Debug)]
pub struct Moves<T> {
    /// Jobs admitted, in order: hand them to the workers.
    pub admitted: Vec<T>,
    /// Jobs to answer deferred at once (their destination is dead).
    pub rejected: Vec<(T, Suspension)>,
    /// A timer was set earlier than the clock's planned wake-up.
    pub wake_clock: bool,
    /// Jobs put aside because their destination's queue is full (they no
    /// longer count as waiting in the daemon's queue).
    pub parked: usize,
    /// Jobs moved from aside into their destination's queue (they count
    /// as waiting again).
    pub unparked: usize,
}

impl<T> Default for Moves<T> {
    fn default() -> Self {
        Self {
            admitted: Vec::new(),
            rejected: Vec::new(),
            wake_clock: false,
            parked: 0,
            unparked: 0,
        }
    }
}

/// Why an offered job was not queued: its destination is dead; defer
/// the job so.
#[derive(Debug)]
pub struct Refusal<T>(pub T, pub Suspension);

/// Why a dead destination's jobs are deferred: the status code and
/// diagnostic of the failure that killed it, the diagnostic prefixed as
/// Postfix's qmgr does ("delivery temporarily suspended: ...").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspension {
    pub dsn: String,
    pub diagnostic: String,
}

/// Recipients of a finished job by outcome, for the destination's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
}

struct Destination<T> {
    rules: WindowRules,
    pace: Option<Pace>,
    rate_text: Option<String>,
    /// Deliveries per second learned from a rate-limit reply, when no rate
    /// is configured (see [`Learned`]).
    learned: Option<Learned>,
    /// Deliveries started in the current and the previous second.
    starts: Starts,
    window: Window,
    gcra: Gcra,
    waiting: VecDeque<T>,
    /// Jobs beyond `destination_waiting_limit`, in arrival order; they
    /// move into `waiting` as it empties.
    parked: VecDeque<T>,
    active: u32,
    paused_until: Option<Instant>,
    /// Dead (failed-cohort rule): what deferred jobs are told.
    dead: Option<Suspension>,
    /// Throttles in a row without a delivery reaching the site between.
    streak: u32,
    /// After a connection-count throttle: the window may not grow past
    /// this until the time given.
    ceiling: Option<(u32, Instant)>,
    last_throttle: Option<String>,
    throttled: u64,
    tally: Tally,
    /// The earliest timer set for it.
    timer_at: Option<Instant>,
    /// Leases of the shared limits held for its deliveries in progress
    /// (interchangeable: any one is given back when a job is done).
    leases: Vec<Lease>,
    /// Deliveries in progress admitted without a lease (no shared limit
    /// then, or the shared limits unreachable): they end first, so that
    /// the leases held never fall below the leased deliveries.
    unleased: u32,
}

/// A rate learned from a throttling reply that came within a session
/// (a message rate limit, not a connection limit): four fifths of the
/// rate that met it; then one more per second for every tenth of a
/// second's worth of deliveries that reach the site (additive increase),
/// until the next throttle cuts it again.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Learned {
    per_second: f64,
}

impl Learned {
    fn pace(self) -> Pace {
        let per_second = self.per_second.max(1.0);
        let interval = Duration::from_secs_f64(1.0 / per_second);
        Pace {
            interval,
            // A tenth of a second's worth at once.
            burst: Duration::from_millis(100).saturating_sub(interval),
        }
    }
}

/// Deliveries started in the current one-second bucket and the one
/// before: a sliding estimate of the recent rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Starts {
    bucket: Option<Instant>,
    current: u32,
    previous: u32,
}

impl Starts {
    fn roll(&mut self, now: Instant) {
        let start = *self.bucket.get_or_insert(now);
        let age = now.saturating_duration_since(start);
        if age >= Duration::from_secs(2) {
            self.previous = 0;
            self.current = 0;
            self.bucket = Some(now);
        } else if age >= Duration::from_secs(1) {
            self.previous = self.current;
            self.current = 0;
            self.bucket = start.checked_add(Duration::from_secs(1));
        }
    }

    fn count(&mut self, now: Instant) {
        self.roll(now);
        self.current = self.current.saturating_add(1);
    }

    /// Deliveries per second over the last second.
    fn rate(&mut self, now: Instant) -> f64 {
        self.roll(now);
        let into = self
            .bucket
            .map_or(0.0, |b| now.saturating_duration_since(b).as_secs_f64())
            .min(1.0);
        f64::from(self.previous) * (1.0 - into) + f64::from(self.current)
    }
}

impl<T> Destination<T> {
    /// The pace in force: the configured one, else a learned one.
    fn pace(&self) -> Option<Pace> {
        self.pace.or_else(|| self.learned.map(Learned::pace))
    }

    fn new(shape: Shape) -> Self {
        Self {
            window: Window::new(&shape.rules),
            rules: shape.rules,
            pace: shape.pace,
            rate_text: shape.rate_text,
            learned: None,
            starts: Starts::default(),
            gcra: Gcra::default(),
            waiting: VecDeque::new(),
            parked: VecDeque::new(),
            active: 0,
            paused_until: None,
            dead: None,
            streak: 0,
            ceiling: None,
            last_throttle: None,
            throttled: 0,
            tally: Tally::default(),
            timer_at: None,
            leases: Vec::new(),
            unleased: 0,
        }
    }

    /// A delivery starts, with its lease if it got one.
    fn hold(&mut self, lease: Option<Lease>) {
        match lease {
            Some(lease) => self.leases.push(lease),
            None => self.unleased = self.unleased.saturating_add(1),
        }
    }

    /// A delivery is over: the lease to give back, if any.
    fn unhold(&mut self) -> Option<Lease> {
        if self.unleased > 0 {
            self.unleased -= 1;
            return None;
        }
        self.leases.pop()
    }

    /// What one more delivery asks of the shared limits (`None`: this
    /// destination has no limit to share). A follower takes no session
    /// of its own: no count check, the rate only.
    fn demand(&self, follower: bool) -> Option<Demand> {
        let limit = (self.rules.limit > 0 && !follower).then_some(self.rules.limit);
        (limit.is_some() || self.pace.is_some()).then_some(Demand {
            limit,
            pace: self.pace,
        })
    }

    fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    /// Ends a pause whose time has come; a dead destination comes back
    /// ("best concurrency is anyone's guess": the deliveries in progress,
    /// else the initial window).
    fn end_pause_if_due(&mut self, key: &Key, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
            if self.dead.take().is_some() {
                self.window.revive(&self.rules, self.active);
                log::info!(
                    "{} destination {}: delivery resumed",
                    key.transport(),
                    key.name
                );
            }
        }
    }

    /// Nothing to remember: no job, no pause, no rate or ceiling in force.
    fn forgettable(&self, now: Instant) -> bool {
        self.waiting.is_empty()
            && self.parked.is_empty()
            && self.active == 0
            && self.leases.is_empty()
            && self.dead.is_none()
            && self.paused(now).is_none()
            && self.gcra.idle(now)
            && self.ceiling.is_none_or(|(_, until)| until <= now)
    }
}

/// A destination's settings, from the table and its first matching
/// `[[shaping.destination]]` entry.
struct Shape {
    rules: WindowRules,
    pace: Option<Pace>,
    rate_text: Option<String>,
}

fn shape_of(settings: &ShapingSettings, name: &str) -> Shape {
    let entry: Option<&DestinationShape> = settings.destinations.iter().find(|d| d.matches(name));
    let rate_delay = entry
        .and_then(|e| e.rate_delay)
        .unwrap_or(settings.rate_delay);
    let rate = entry.and_then(|e| e.rate).unwrap_or(settings.rate);
    let mut limit = entry
        .and_then(|e| e.concurrency_limit)
        .unwrap_or(settings.concurrency_limit);
    let initial = entry
        .and_then(|e| e.initial_concurrency)
        .unwrap_or(settings.initial_concurrency)
        .max(1);
    let (pace, rate_text) = if !rate_delay.is_zero() {
        // Postfix: a rate delay makes the destination concurrency 1.
        limit = 1;
        (
            Some(Pace {
                interval: rate_delay,
                burst: Duration::ZERO,
            }),
            Some(format!(
                "1/{}",
                crate::config::format_duration(rate_delay).unwrap_or_default()
            )),
        )
    } else if let Some(rate) = rate {
        let interval = rate.interval();
        let burst = rate
            .per
            .min(Duration::from_secs(1))
            .saturating_sub(interval);
        (Some(Pace { interval, burst }), Some(rate.to_string()))
    } else {
        (None, None)
    };
    let initial = if limit > 0 {
        initial.min(limit)
    } else {
        initial
    };
    Shape {
        rules: WindowRules {
            limit,
            initial,
            positive: settings.positive_feedback,
            negative: settings.negative_feedback,
            failed_cohort_limit: settings.failed_cohort_limit,
        },
        pace,
        rate_text,
    }
}

/// Most destinations a status snapshot lists.
const SNAPSHOT_LIMIT: usize = 200;

/// The scheduler state.
pub struct Scheduler<T> {
    settings: Arc<ShapingSettings>,
    destinations: HashMap<Key, Destination<T>, foldhash::fast::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// When the clock plans to wake up next.
    planned: Option<Instant>,
    /// Jitter source (xorshift).
    seed: u64,
    /// Limits shared with other nodes (none by default).
    shared: Arc<dyn SharedLimits>,
}

impl<T> Scheduler<T> {
    pub fn new(settings: Arc<ShapingSettings>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| u64::from(d.subsec_nanos()) | 1);
        Self {
            settings,
            destinations: HashMap::default(),
            timers: BinaryHeap::new(),
            planned: None,
            seed,
            shared: Arc::new(LocalOnly),
        }
    }

    /// Limits shared with other nodes, asked before each admission on
    /// top of the local window and rate (see [`super::shared`]).
    pub fn set_shared(&mut self, shared: Arc<dyn SharedLimits>) {
        self.shared = shared;
    }

    pub fn settings(&self) -> &ShapingSettings {
        &self.settings
    }

    /// A reloaded configuration: new limits and rates for every
    /// destination; windows, pauses and queues stay.
    pub fn set_settings(&mut self, settings: Arc<ShapingSettings>, now: Instant) -> Moves<T> {
        self.settings = settings;
        let mut moves = Moves::default();
        let keys: Vec<Key> = self.destinations.keys().cloned().collect();
        for key in keys {
            let shape = shape_of(&self.settings, &key.name);
            if let Some(dest) = self.destinations.get_mut(&key) {
                dest.rules = shape.rules;
                dest.pace = shape.pace;
                dest.rate_text = shape.rate_text;
                dest.window.limit_to(&dest.rules);
            }
            self.admit(&key, now, &mut moves);
        }
        moves
    }

    /// Queues a job for `key` (aside, when its queue holds
    /// `destination_waiting_limit` jobs) and admits what may start.
    pub fn offer(&mut self, key: &Key, item: T, now: Instant) -> Result<Moves<T>, Refusal<T>> {
        let limit = self.settings.waiting_limit;
        let dest = self.destination(key);
        dest.end_pause_if_due(key, now);
        if let Some(reason) = &dest.dead {
            return Err(Refusal(item, reason.clone()));
        }
        let mut moves = Moves::default();
        if dest.waiting.len() >= limit || !dest.parked.is_empty() {
            dest.parked.push_back(item);
            moves.parked += 1;
        } else {
            dest.waiting.push_back(item);
        }
        self.admit(key, now, &mut moves);
        Ok(moves)
    }

    /// A job tried once more (after a throttling reply): first in its
    /// destination's queue, whatever the waiting limit.
    pub fn requeue(&mut self, key: &Key, item: T, now: Instant) -> Moves<T> {
        let dest = self.destination(key);
        dest.end_pause_if_due(key, now);
        let mut moves = Moves::default();
        if let Some(reason) = &dest.dead {
            moves.rejected.push((item, reason.clone()));
            return moves;
        }
        dest.waiting.push_front(item);
        self.admit(key, now, &mut moves);
        moves
    }

    /// The next waiting job of `key`, admitted now to follow a delivery
    /// in progress on its session (pipelining across jobs): it takes no
    /// session of its own, so the window does not hold it back, but the
    /// pause, the dead state and the rate do.
    pub fn take_follower(&mut self, key: &Key, now: Instant) -> (Option<T>, Moves<T>) {
        let mut moves = Moves::default();
        let Some(dest) = self.destinations.get_mut(key) else {
            return (None, moves);
        };
        if dest.dead.is_some() || dest.paused(now).is_some() || dest.waiting.is_empty() {
            return (None, moves);
        }
        if let Some(pace) = dest.pace()
            && dest.gcra.check(pace, now).is_err()
        {
            return (None, moves);
        }
        let lease = match dest.demand(true).map(|d| self.shared.acquire(key, d)) {
            Some(Grant::Wait(_)) => return (None, moves),
            Some(Grant::Granted(lease)) => lease,
            Some(Grant::Unavailable) | None => None,
        };
        if let Some(pace) = dest.pace() {
            let _ = dest.gcra.take(pace, now);
        }
        let item = dest.waiting.pop_front();
        if item.is_some() {
            dest.active += 1;
            dest.starts.count(now);
            dest.hold(lease);
        } else if let Some(lease) = lease {
            self.shared.release(key, lease);
        }
        self.admit(key, now, &mut moves);
        (item, moves)
    }

    /// A follower that cannot follow after all goes back to the front of
    /// its destination's queue, its admission undone.
    pub fn untake(&mut self, key: &Key, item: T, now: Instant) -> Moves<T> {
        let mut moves = Moves::default();
        let dest = self.destination(key);
        dest.active = dest.active.saturating_sub(1);
        let lease = dest.unhold();
        if let Some(reason) = &dest.dead {
            moves.rejected.push((item, reason.clone()));
        } else {
            dest.waiting.push_front(item);
        }
        if let Some(lease) = lease {
            self.shared.release(key, lease);
        }
        self.admit(key, now, &mut moves);
        moves
    }

    /// A job of `key` admitted earlier finished: feedback from its
    /// `verdict`, then admission.
    pub fn done(&mut self, key: &Key, verdict: &Verdict, tally: Tally, now: Instant) -> Moves<T> {
        let mut moves = Moves::default();
        let jitter = self.jitter();
        let settings = Arc::clone(&self.settings);
        let shared = Arc::clone(&self.shared);
        let dest = self.destination(key);
        let busy = dest.active;
        dest.active = dest.active.saturating_sub(1);
        if let Some(lease) = dest.unhold() {
            shared.release(key, lease);
        }
        dest.tally.sent += tally.sent;
        dest.tally.deferred += tally.deferred;
        dest.tally.bounced += tally.bounced;
        let mut timer = None;
        match verdict {
            Verdict::Nothing => {}
            Verdict::Reached => {
                if let Some(learned) = &mut dest.learned {
                    // One more per second for each tenth of a second's
                    // worth (back from 4/5 of a rate within a few seconds).
                    learned.per_second += 10.0 / learned.per_second.max(1.0);
                }
                if dest.dead.is_none() {
                    dest.streak = 0;
                    dest.window.success(&dest.rules, busy);
                    if let Some((ceiling, until)) = dest.ceiling {
                        if until > now {
                            dest.window.cap(ceiling);
                        } else {
                            dest.ceiling = None;
                        }
                    }
                }
            }
            Verdict::SiteFailure { dsn, diagnostic } => {
                if dest.dead.is_none() && dest.window.failure(&dest.rules) {
                    let reason = Suspension {
                        dsn: dsn.clone(),
                        diagnostic: format!("delivery temporarily suspended: {diagnostic}"),
                    };
                    let until = now + settings.dead_time;
                    log::warn!(
                        "{} destination {}: dead for {}: {dsn} {diagnostic}",
                        key.transport(),
                        key.name,
                        crate::config::format_duration(settings.dead_time).unwrap_or_default()
                    );
                    moves
                        .rejected
                        .extend(dest.waiting.drain(..).map(|item| (item, reason.clone())));
                    // Jobs aside were given back their place when parked:
                    // count them in again so that their deferral gives it back.
                    moves.unparked += dest.parked.len();
                    moves
                        .rejected
                        .extend(dest.parked.drain(..).map(|item| (item, reason.clone())));
                    dest.dead = Some(reason);
                    dest.paused_until = Some(until);
                    timer = Some(until);
                }
            }
            Verdict::Throttled {
                reply, at_greeting, ..
            } => {
                dest.throttled += 1;
                dest.last_throttle = Some(reply.clone());
                dest.window.shrink(&dest.rules);
                if *at_greeting {
                    // A connection-count limit: stay below the count that
                    // met it for a while.
                    let ceiling = busy.saturating_sub(1).max(1);
                    dest.window.cap(ceiling);
                    dest.ceiling = Some((ceiling, now + settings.backoff_max));
                } else if dest.pace.is_none() && dest.paused(now).is_none() {
                    // A message rate limit: learn four fifths of the rate
                    // that met it (or of the learned one).
                    let recent = dest.starts.rate(now);
                    let base = dest
                        .learned
                        .map_or(recent, |l| l.per_second.min(recent.max(1.0)));
                    dest.learned = Some(Learned {
                        per_second: (base * 0.8).max(1.0),
                    });
                }
                if dest.paused(now).is_none() {
                    let exponent = dest.streak.min(16);
                    dest.streak = dest.streak.saturating_add(1);
                    let backoff = settings
                        .backoff
                        .saturating_mul(1u32 << exponent)
                        .min(settings.backoff_max)
                        .mul_f64(jitter);
                    let until = now + backoff;
                    log::info!(
                        "{} destination {}: paused for {} ms after a throttling reply: {reply}",
                        key.transport(),
                        key.name,
                        backoff.as_millis()
                    );
                    dest.paused_until = Some(until);
                    timer = Some(until);
                }
            }
        }
        if let Some(at) = timer {
            self.schedule(key, at, &mut moves);
        }
        self.admit(key, now, &mut moves);
        self.forget_if_idle(key, now);
        moves
    }

    /// Runs the timers due at `now`: pauses end, the dead come back,
    /// rate waits are over.
    pub fn due(&mut self, now: Instant) -> Moves<T> {
        let mut moves = Moves::default();
        self.planned = None;
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            let Some(dest) = self.destinations.get_mut(&key) else {
                continue;
            };
            if dest.timer_at == Some(at) {
                dest.timer_at = None;
            }
            dest.end_pause_if_due(&key, now);
            let still_paused = dest.paused(now);
            self.admit(&key, now, &mut moves);
            // A pause (or dead time) not over yet needs its own timer,
            // whether or not jobs wait: this one may have been another's
            // (a rate wait, an earlier pause).
            if let Some(until) = still_paused {
                self.schedule(&key, until, &mut moves);
            }
            self.forget_if_idle(&key, now);
        }
        moves
    }

    /// When the clock must wake next (the earliest timer); records it as
    /// planned.
    pub fn next_wake(&mut self) -> Option<Instant> {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        self.planned = next;
        next
    }

    /// Every waiting job (shutdown): those counted as waiting, and those
    /// aside.
    pub fn drain(&mut self) -> (Vec<T>, Vec<T>) {
        let mut waiting = Vec::new();
        let mut parked = Vec::new();
        for dest in self.destinations.values_mut() {
            waiting.extend(dest.waiting.drain(..));
            parked.extend(dest.parked.drain(..));
        }
        (waiting, parked)
    }

    /// Jobs waiting in all (aside included).
    pub fn waiting(&self) -> usize {
        self.destinations
            .values()
            .map(|d| d.waiting.len() + d.parked.len())
            .sum()
    }

    /// The state of the busiest destinations (active + waiting), and how
    /// many destinations are paused.
    pub fn snapshot(&self, now: Instant) -> (Vec<DestinationState>, u64) {
        let mut paused = 0u64;
        let mut list: Vec<DestinationState> = self
            .destinations
            .iter()
            .map(|(key, dest)| {
                let paused_for = dest.paused(now).map(|until| (until - now).as_secs_f64());
                if paused_for.is_some() {
                    paused += 1;
                }
                DestinationState {
                    name: key.name.clone(),
                    transport: key.transport().into(),
                    active: u64::from(dest.active),
                    window: u64::from(dest.window.size()),
                    limit: u64::from(dest.rules.limit),
                    waiting: u64::try_from(dest.waiting.len() + dest.parked.len())
                        .unwrap_or(u64::MAX),
                    rate: dest.rate_text.clone().or_else(|| {
                        dest.learned
                            .map(|l| format!("learned {:.0}/s", l.per_second))
                    }),
                    paused_for,
                    dead: dest.dead.is_some(),
                    last_throttle: dest.last_throttle.clone(),
                    throttled: dest.throttled,
                    sent: dest.tally.sent,
                    deferred: dest.tally.deferred,
                    bounced: dest.tally.bounced,
                }
            })
            .collect();
        list.sort_by(|a, b| {
            (b.active + b.waiting, b.paused_for.is_some())
                .cmp(&(a.active + a.waiting, a.paused_for.is_some()))
                .then_with(|| a.name.cmp(&b.name))
        });
        list.truncate(SNAPSHOT_LIMIT);
        (list, paused)
    }

    fn destination(&mut self, key: &Key) -> &mut Destination<T> {
        let settings = &self.settings;
        self.destinations
            .entry(key.clone())
            .or_insert_with(|| Destination::new(shape_of(settings, &key.name)))
    }

    /// Admits waiting jobs of `key` while its window, pause and rate allow,
    /// and moves jobs from aside into the room made.
    fn admit(&mut self, key: &Key, now: Instant, moves: &mut Moves<T>) {
        let mut timer = None;
        let limit = self.settings.waiting_limit;
        if let Some(dest) = self.destinations.get_mut(key) {
            loop {
                while dest.waiting.len() < limit
                    && let Some(item) = dest.parked.pop_front()
                {
                    dest.waiting.push_back(item);
                    moves.unparked += 1;
                }
                if dest.waiting.is_empty() {
                    break;
                }
                if let Some(until) = dest.paused(now) {
                    timer = Some(until);
                    break;
                }
                if dest.active >= dest.window.size() {
                    break;
                }
                if let Some(pace) = dest.pace()
                    && let Err(at) = dest.gcra.check(pace, now)
                {
                    timer = Some(at);
                    break;
                }
                let lease = match dest.demand(false).map(|d| self.shared.acquire(key, d)) {
                    Some(Grant::Wait(after)) => {
                        timer = Some(now + after);
                        break;
                    }
                    Some(Grant::Granted(lease)) => lease,
                    Some(Grant::Unavailable) | None => None,
                };
                if let Some(pace) = dest.pace() {
                    let _ = dest.gcra.take(pace, now);
                }
                let Some(item) = dest.waiting.pop_front() else {
                    if let Some(lease) = lease {
                        self.shared.release(key, lease);
                    }
                    break;
                };
                dest.hold(lease);
                dest.active += 1;
                dest.starts.count(now);
                moves.admitted.push(item);
            }
        }
        if let Some(at) = timer {
            self.schedule(key, at, moves);
        }
    }

    fn schedule(&mut self, key: &Key, at: Instant, moves: &mut Moves<T>) {
        let Some(dest) = self.destinations.get_mut(key) else {
            return;
        };
        if dest.timer_at.is_some_and(|set| set <= at) {
            return;
        }
        dest.timer_at = Some(at);
        self.timers.push(Reverse((at, key.clone())));
        if self.planned.is_none_or(|planned| at < planned) {
            moves.wake_clock = true;
        }
    }

    fn forget_if_idle(&mut self, key: &Key, now: Instant) {
        if self
            .destinations
            .get(key)
            .is_some_and(|dest| dest.forgettable(now))
        {
            self.destinations.remove(key);
        }
    }

    /// A factor from 0.8 to 1.2.
    fn jitter(&mut self) -> f64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        0.8 + 0.4 * ((x >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
