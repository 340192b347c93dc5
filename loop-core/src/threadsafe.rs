//! The loop's one door from other threads.
//!
//! [`LoopHandle`] is the `Send + Sync` part of a loop. Everything that enters
//! the loop from another thread comes through the same channel:
//! `call_soon_threadsafe` callbacks, `stop` requests, and tasks woken by a
//! waker that was sent to another thread (async-task requires a `Send + Sync`
//! schedule function even for local tasks). The channel is `std::sync::mpsc`
//! (lock-free on both sides); its receiver lives in the loop, its sender in
//! [`Shared`]. After sending, the caller sets the `pending` flag and asks the
//! [`Notifier`](crate::reactor::Notifier) to wake the loop, which writes the
//! eventfd only if the loop may be asleep.
//!
//! The loop drains the channel after the poll of each iteration, and before
//! each push onto its ready queue, only when `pending` is set: so an idle
//! channel costs one atomic load per push, and a callback sent before a
//! `call_soon` runs before it (the ready queue's module docs state the
//! invariant). Closing the loop drops the receiver: queued items are dropped
//! with it, on the loop thread, and later sends fail and hand the item back;
//! it also closes the notifier's wake-up fd at once, however many
//! `LoopHandle`s live (see `Notifier` for why that cannot race a `notify`).

use std::collections::BTreeMap;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::{self, ThreadId};

use crate::reactor::Notifier;
use crate::LoopError;

/// Work that arrives from another thread (or from a waker).
pub(crate) enum Injected {
    Callback(Box<dyn FnOnce() + Send + 'static>),
    Task(crate::tasks::Runnable),
    Stop,
}

pub(crate) struct Shared {
    /// Unique among the loops of this process.
    pub(crate) id: u64,
    owner: ThreadId,
    tx: Sender<Injected>,
    pending: AtomicBool,
    closed: AtomicBool,
    pub(crate) notifier: Notifier,
    /// A wake-up failed where no caller could be told (a task's waker): the
    /// loop reports it through its exception handler (LESSONS 21).
    wake_failed: AtomicBool,
    wake_failure: Mutex<Option<LoopError>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every loop's shared half by id, held weakly: how a task woken where its
/// loop is not running finds the loop (see tasks.rs). A task carries its
/// loop's id instead of an `Arc<Shared>`, which saves two atomic operations
/// per task and keeps no loop alive from a forgotten waker. An entry goes
/// when its `Shared` is dropped.
static LOOPS: RwLock<BTreeMap<u64, Weak<Shared>>> = RwLock::new(BTreeMap::new());

impl Shared {
    /// The shared half and the loop's receiving end.
    pub(crate) fn new(notifier: Notifier) -> (Shared, Receiver<Injected>) {
        let (tx, rx) = mpsc::channel();
        let shared = Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            owner: thread::current().id(),
            tx,
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            notifier,
            wake_failed: AtomicBool::new(false),
            wake_failure: Mutex::new(None),
        };
        (shared, rx)
    }

    /// Makes the loop findable by [`find`](Self::find).
    pub(crate) fn register(self: &Arc<Self>) {
        let mut loops = LOOPS.write().unwrap_or_else(|e| e.into_inner());
        loops.insert(self.id, Arc::downgrade(self));
    }

    /// The loop with this id, if it still exists.
    pub(crate) fn find(id: u64) -> Option<Arc<Shared>> {
        let loops = LOOPS.read().unwrap_or_else(|e| e.into_inner());
        loops.get(&id).and_then(Weak::upgrade)
    }

    /// The thread that owns the loop (its tasks must be dropped there).
    pub(crate) fn owner(&self) -> ThreadId {
        self.owner
    }

    /// Queues `item` and wakes the loop. Fails on a closed loop (the item is
    /// handed back for disposal) or when the wake-up cannot be sent.
    pub(crate) fn inject(&self, item: Injected) -> Result<(), (LoopError, Option<Injected>)> {
        if let Err(mpsc::SendError(item)) = self.tx.send(item) {
            return Err((LoopError::closed(), Some(item)));
        }
        self.pending.store(true, Ordering::SeqCst);
        self.notifier
            .notify()
            .map_err(|e| (LoopError::io("waking the event loop", e), None))
    }

    /// Keeps a wake-up failure that has no caller to return to (the first
    /// one until the loop reports it).
    pub(crate) fn record_wake_failure(&self, err: LoopError) {
        let mut slot = self.wake_failure.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(err);
        self.wake_failed.store(true, Ordering::SeqCst);
    }

    /// The wake-up failure to report, if any (one atomic load otherwise).
    #[inline]
    pub(crate) fn take_wake_failure(&self) -> Option<LoopError> {
        if !self.wake_failed.load(Ordering::Relaxed) {
            return None;
        }
        let mut slot = self.wake_failure.lock().unwrap_or_else(|e| e.into_inner());
        self.wake_failed.store(false, Ordering::SeqCst);
        slot.take()
    }

    /// Whether something waits in the channel.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Whether something may wait in the channel, without ordering (the
    /// ready queue's check before each push).
    #[inline]
    pub(crate) fn has_pending_relaxed(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Hands the queued items to `out` in the order they were sent (cheap
    /// when nothing is pending).
    #[inline]
    pub(crate) fn drain(&self, rx: &Receiver<Injected>, mut out: impl FnMut(Injected)) {
        if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::SeqCst) {
            for item in rx.try_iter() {
                out(item);
            }
        }
    }

    /// Marks the loop closed; the caller then drops the receiver.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pending.store(false, Ordering::SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Disposes of an item that cannot run (see [`dispose_task`]).
    pub(crate) fn discard(&self, item: Injected) {
        match item {
            Injected::Task(r) => dispose_task(r, self.owner),
            other => drop(other),
        }
    }
}

/// Disposes of a task's runnable that can never run (its loop closed or
/// gone). It must not be dropped off its owner thread (async-task's local
/// tasks panic on that), so there it is leaked.
pub(crate) fn dispose_task(runnable: crate::tasks::Runnable, owner: ThreadId) {
    if thread::current().id() == owner {
        drop(runnable);
    } else {
        mem::forget(runnable);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut loops = LOOPS.write().unwrap_or_else(|e| e.into_inner());
        loops.remove(&self.id);
    }
}

/// The `Send + Sync` handle of a loop: schedule callbacks on it and stop it
/// from any thread.
///
/// Get one with [`EventLoop::handle`](crate::EventLoop::handle). This is the
/// only way to reach a loop from another thread: `EventLoop` itself is
/// `!Send`, so calling a non-thread-safe method such as `call_soon` from the
/// wrong thread does not compile (asyncio can only catch that at run time, in
/// debug mode).
///
/// ```
/// use loop_core::EventLoop;
/// let lp = EventLoop::new().unwrap();
/// let handle = lp.handle();
/// let t = std::thread::spawn(move || {
///     handle.call_soon_threadsafe(|| println!("hello from the loop thread")).unwrap();
///     handle.stop().unwrap();
/// });
/// lp.run_forever().unwrap(); // woken at once by the other thread
/// t.join().unwrap();
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

impl LoopHandle {
    /// Schedules `callback` to run on the loop thread in a coming iteration,
    /// and wakes the loop if it is waiting. Callbacks from one thread run in
    /// the order they were sent.
    ///
    /// Errors: [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the loop
    /// is closed (the callback is dropped); [`ErrorKind::Io`](crate::ErrorKind::Io)
    /// if the wake-up could not be sent (the callback stays queued and runs
    /// when the loop next wakes).
    #[doc(alias = "loop.call_soon_threadsafe")]
    pub fn call_soon_threadsafe(
        &self,
        callback: impl FnOnce() + Send + 'static,
    ) -> Result<(), LoopError> {
        self.shared
            .inject(Injected::Callback(Box::new(callback)))
            .map_err(|(err, item)| {
                if let Some(item) = item {
                    self.shared.discard(item);
                }
                err
            })
    }

    /// Asks the loop to stop, from any thread: the request takes its place
    /// in the ready queue behind what was queued before it (as asyncio's
    /// `call_soon_threadsafe(loop.stop)`), and the loop stops after the
    /// iteration that runs it.
    #[doc(alias = "loop.stop")]
    pub fn stop(&self) -> Result<(), LoopError> {
        self.shared.inject(Injected::Stop).map_err(|(err, _)| err)
    }

    /// Whether the loop was closed.
    #[doc(alias = "loop.is_closed")]
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle")
            .field("loop_id", &self.shared.id)
            .finish()
    }
}
