//! One job's progress, shared between the worker delivering it and the
//! paths that may have to answer it first (the shutdown, a worker panic):
//! which recipients are settled, whether the message body may already be
//! on its way (an end-of-data reply awaited), and whether the job was cut
//! (answered before its delivery ended).
//!
//! Also the place where a running job's recipients are logged: each one
//! when the ledger settles it ([`settled`], called by
//! [`crate::recipients::Ledger::settle`]), not when the whole job ends, and
//! exactly once: the outcome line (`status=...`) is written under the
//! job's lock, so that a recipient is either logged with its real outcome
//! (and then answered with it), or cut and logged as deferred; a result
//! that comes after the cut is logged as information only.
//!
//! Outside the daemon (no progress entered), settling only logs. Nothing
//! here panics; a poisoned lock is taken over as it is.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::job::RecipientResult;
use crate::recipients::{Outcome, Settled, Status};

/// Postfix's words (smtp_proto.c) for a message whose end-of-data reply
/// did not come: appended to the diagnostic of a job cut while its body
/// may have reached the server.
pub const MAY_DUPLICATE: &str = "while sending end of data -- message may be sent more than once";

/// What a delivery cut short by [`Progress::cut`] tells its own (never
/// reported) recipients when it stops before the message body.
pub const CUT_TEXT: &str = "the job was already answered (mail system shutting down)";

/// One job's shared progress (see the module documentation).
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<State>,
    /// Told of each recipient as it settles (the Redis feed keeps it).
    observer: Observer,
}

/// Told of each of a job's recipients as it settles, with its position in
/// the job (the Redis feed writes it to Redis: a job taken over from a dead
/// node then delivers only the recipients still open).
pub trait SettleObserver: Send + Sync {
    /// Must not block: called with the job's lock held.
    fn settled(&self, index: usize, result: &RecipientResult);

    /// Called on the worker before a message body goes out, with no lock
    /// held: `Err(text)` holds the body back (the transaction is dropped
    /// before its end-of-data and its recipients deferred with `text`).
    /// The Redis feed waits here until the outcomes this worker settled
    /// before are in Redis: a node killed at any time then has at most one
    /// delivered, unrecorded transaction per worker.
    fn before_body(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Whether a message body may go out now (see [`may_send_body`]).
#[derive(Debug, PartialEq, Eq)]
pub enum BodyGate {
    Send,
    /// The job was answered already (shutdown): recipients told "deferred".
    Cut,
    /// The job's observer holds the body back, with this reason.
    Held(String),
}

#[derive(Default)]
struct Observer(Option<Arc<dyn SettleObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Observer" } else { "None" })
    }
}

#[derive(Debug, Default)]
struct State {
    /// By recipient position in the job.
    slots: Vec<Slot>,
    /// A message body may have been sent: an end-of-data reply may decide.
    body: bool,
    /// Answered by [`Progress::cut`]: send no (more) message body.
    cut: bool,
}

#[derive(Clone, Debug, Default)]
enum Slot {
    #[default]
    Open,
    Settled(Box<RecipientResult>),
    Cut,
}

impl Progress {
    pub fn new(recipients: usize) -> Arc<Self> {
        Self::observed(recipients, None)
    }

    /// A progress whose settled recipients are also told to `observer`.
    pub fn observed(recipients: usize, observer: Option<Arc<dyn SettleObserver>>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                slots: vec![Slot::Open; recipients],
                body: false,
                cut: false,
            }),
            observer: Observer(observer),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records the outcome of the job's recipient `index` and logs it, with
    /// the lock held: `log(true)` for its one outcome line, `log(false)`
    /// for a result that comes after the job was answered for it
    /// (information only).
    pub fn settle(&self, index: usize, result: RecipientResult, log: impl FnOnce(bool)) {
        let mut state = self.lock();
        match state.slots.get_mut(index) {
            Some(slot @ Slot::Open) => {
                if let Some(observer) = &self.observer.0 {
                    observer.settled(index, &result);
                }
                *slot = Slot::Settled(Box::new(result));
                log(true);
            }
            _ => log(false),
        }
    }

    /// Answers the job now: a settled recipient keeps its outcome, every
    /// other one is deferred 4.3.0 `diagnostic` — followed by Postfix's
    /// [`MAY_DUPLICATE`] words when the message body may have reached a
    /// server — and passed to `log` (lock held). From now on the delivery
    /// sends no message body ([`may_send_body`]). `addresses`: the job's
    /// recipients, in order.
    pub fn cut<'a>(
        &self,
        addresses: impl Iterator<Item = &'a str>,
        diagnostic: &str,
        mut log: impl FnMut(&RecipientResult),
    ) -> Vec<RecipientResult> {
        let mut state = self.lock();
        state.cut = true;
        let text = if state.body {
            format!("{diagnostic} {MAY_DUPLICATE}")
        } else {
            diagnostic.to_string()
        };
        let mut out = Vec::new();
        for (index, address) in addresses.enumerate() {
            if let Some(Slot::Settled(result)) = state.slots.get(index) {
                out.push(RecipientResult::clone(result));
                continue;
            }
            let result = deferred(address, &text);
            log(&result);
            if let Some(slot) = state.slots.get_mut(index) {
                *slot = Slot::Cut;
            }
            out.push(result);
        }
        out
    }

    /// A message body may be on its way to a server and some recipient
    /// is not settled yet: an end-of-data reply may still decide.
    pub fn body_pending(&self) -> bool {
        let state = self.lock();
        state.body && !state.cut && state.slots.iter().any(|s| matches!(s, Slot::Open))
    }

    /// A message body is about to go out: `Held` when the observer holds
    /// it back, `Cut` once the job was cut (its recipients were answered:
    /// the body must not be sent); otherwise (`Send`) notes that an
    /// end-of-data reply may decide from now on.
    fn begin_body(&self) -> BodyGate {
        if let Some(observer) = &self.observer.0
            && let Err(text) = observer.before_body()
        {
            return BodyGate::Held(text);
        }
        let mut state = self.lock();
        if state.cut {
            return BodyGate::Cut;
        }
        state.body = true;
        BodyGate::Send
    }
}

/// A recipient deferred 4.3.0 with `text`.
fn deferred(address: &str, text: &str) -> RecipientResult {
    RecipientResult {
        address: address.to_string(),
        status: Status::Deferred,
        dsn: crate::dsn::SYSTEM_TROUBLE.to_string(),
        relay: None,
        diagnostic: text.to_string(),
        tls: None,
        tls_policy: None,
        success_dsn: None,
    }
}

/// A recipient's outcome as the job answer carries it.
pub fn result_of(address: &str, outcome: &Outcome) -> RecipientResult {
    RecipientResult {
        address: address.to_string(),
        status: outcome.status,
        dsn: outcome.dsn.to_string(),
        relay: outcome.relay.clone(),
        diagnostic: outcome.diagnostic.clone(),
        tls: outcome.tls.clone(),
        tls_policy: outcome.tls_policy.clone(),
        success_dsn: None,
    }
}

/// Writes one recipient's line: `(address, outcome, first)`, `first` false
/// for an information-only line (see [`Progress::settle`]).
pub type LineWriter = Box<dyn FnMut(&str, &Outcome, bool)>;

/// The recipients being delivered on this thread: their positions in the
/// job (by ledger position), which were logged, and how.
struct Group {
    indexes: Vec<usize>,
    logged: Vec<bool>,
    write: LineWriter,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Progress>>> = const { RefCell::new(None) };
    static GROUP: RefCell<Option<Group>> = const { RefCell::new(None) };
}

/// While it lives, this thread delivers the job of `progress`.
pub struct Entered(());

/// Enters a job's progress on this thread (a daemon worker, around one job).
pub fn enter(progress: Arc<Progress>) -> Entered {
    CURRENT.with(|current| {
        if let Ok(mut current) = current.try_borrow_mut() {
            *current = Some(progress);
        }
    });
    Entered(())
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| {
            if let Ok(mut current) = current.try_borrow_mut() {
                *current = None;
            }
        });
    }
}

/// Called before a message body (and its final dot) is written:
/// [`BodyGate::Cut`] when this thread's job was already answered, `Held`
/// when its observer holds it back (then the body is not sent); `Send`
/// otherwise, and outside the daemon.
pub fn may_send_body() -> BodyGate {
    let progress = CURRENT.with(|current| current.try_borrow().ok().and_then(|c| c.clone()));
    match progress {
        Some(progress) => progress.begin_body(),
        None => BodyGate::Send,
    }
}

/// Runs `deliver` (one delivery for the job recipients at `indexes`, in
/// envelope order) with its recipients logged by `write` as the ledger
/// settles them; those its ledger only filled in at the end are logged
/// after it. `settled_of` reads the outcomes (in envelope order) from what
/// `deliver` returns (this module knows no delivery type: it sits below
/// the delivery code).
pub fn deliver_group<D>(
    indexes: &[usize],
    write: LineWriter,
    deliver: impl FnOnce() -> D,
    settled_of: impl Fn(&D) -> &[Settled],
) -> D {
    struct Installed;
    impl Drop for Installed {
        fn drop(&mut self) {
            crate::recipients::on_settled(None);
            GROUP.with(|group| {
                if let Ok(mut group) = group.try_borrow_mut() {
                    *group = None;
                }
            });
        }
    }
    GROUP.with(|group| {
        if let Ok(mut group) = group.try_borrow_mut() {
            *group = Some(Group {
                indexes: indexes.to_vec(),
                logged: vec![false; indexes.len()],
                write,
            });
        }
    });
    let installed = Installed;
    crate::recipients::on_settled(Some(settled));
    let delivery = deliver();
    for (position, one) in settled_of(&delivery).iter().enumerate() {
        let logged = GROUP.with(|group| {
            group
                .try_borrow()
                .ok()
                .and_then(|g| g.as_ref().and_then(|g| g.logged.get(position).copied()))
                .unwrap_or(true)
        });
        if !logged {
            settled(position, &one.address, &one.outcome);
        }
    }
    drop(installed);
    delivery
}

/// The ledger settled its recipient `position`: log it now (see the
/// module documentation). Without a group being delivered, nothing.
pub fn settled(position: usize, address: &str, outcome: &Outcome) {
    GROUP.with(|group| {
        let Ok(mut group) = group.try_borrow_mut() else {
            return;
        };
        let Some(group) = group.as_mut() else {
            return;
        };
        let Some(&index) = group.indexes.get(position) else {
            return;
        };
        if let Some(logged) = group.logged.get_mut(position) {
            *logged = true;
        }
        let progress = CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.clone()));
        let write = &mut group.write;
        match progress {
            Some(progress) => progress.settle(index, result_of(address, outcome), |first| {
                write(address, outcome, first);
                // Written before the lock is let go: never held back.
                crate::logging::flush_held();
            }),
            None => write(address, outcome, true),
        }
    });
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
