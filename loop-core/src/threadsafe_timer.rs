//! Thread-safe timers: [`LoopHandle::call_later_threadsafe`] and
//! [`ThreadSafeTimerHandle`].
//!
//! A loop timer ([`TimerHandle`](crate::TimerHandle)) is `!Send`: its cell is
//! an `Rc` shared with the timer heap. Some callers need a timer they can
//! hold, and cancel, from any thread: hyper's `Timer` hands out sleeps that
//! must be `Send + Sync`. This module builds one on the loop's own heap.
//!
//! # Design
//! - The `Send` half ([`ThreadSafeTimerHandle`]) owns an `Arc<TsShared>`: a
//!   state word (`LIVE`, `FIRED`, `CANCELLED`, changed only by
//!   compare-and-swap, so exactly one of "run" and "cancel" wins) and the
//!   callback behind a mutex (taken out by whoever wins, and run or dropped
//!   outside the lock).
//! - The loop half is an ordinary timer in the loop's heap (a slot of its
//!   timer slab), whose closure runs the callback if it wins the state
//!   word, so due timers run in the loop's order with every other timer.
//!   The loop thread also keeps a thread-local map from timer id to the
//!   timer's slot, so that a cancel can reach it and count it in the heap's
//!   cancelled statistics: a cancelled thread-safe timer is compacted away
//!   like a cancelled `TimerHandle`, not left in the heap until its
//!   deadline. The closure removes its map entry when it is run or dropped,
//!   so the map holds only timers still in the heap; dropped without
//!   running (by `close()`), it settles the timer cancelled and drops the
//!   callback.
//! - Scheduling from the loop thread while the loop runs pushes onto the
//!   heap at once; from anywhere else it goes through the thread-safe queue
//!   (`call_soon_threadsafe`), and the deadline is counted from when the
//!   loop receives it (so the timer never fires early, by the loop's clock).
//! - A cancel on the loop thread cancels the entry at once; from another
//!   thread it drops the callback at once and sends the entry's cancellation
//!   through the thread-safe queue.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::running::running_loop;
use crate::threadsafe::LoopHandle;
use crate::timer_slab::SlotRef;
use crate::{EventLoop, LoopError};

const LIVE: u8 = 0;
const FIRED: u8 = 1;
const CANCELLED: u8 = 2;

type BoxedCallback = Box<dyn FnOnce() + Send + 'static>;

static NEXT_TIMER_ID: AtomicU64 = AtomicU64::new(1);

/// Hashes the sequential timer ids with one multiplication (they are not
/// chosen by anyone: no flooding to resist, and SipHash would cost more
/// than the rest of a lookup).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

thread_local! {
    /// The loop thread's timers, by timer id, for cancels to find them
    /// (each removed when its closure is run or dropped).
    static ENTRIES: RefCell<IdMap<SlotRef>> = RefCell::new(IdMap::default());
}

/// What the `Send` handle and the loop's entry share.
struct TsShared {
    id: u64,
    state: AtomicU8,
    callback: Mutex<Option<BoxedCallback>>,
    location: &'static Location<'static>,
}

impl TsShared {
    /// Moves `LIVE` to `to`; returns the callback if this call won.
    fn settle(&self, to: u8) -> Option<BoxedCallback> {
        self.state
            .compare_exchange(LIVE, to, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.callback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The loop-side closure of a thread-safe timer: runs the callback if it
/// wins the state word. Dropped without running (cancelled on the loop
/// thread, or dropped by `close()`), it settles the timer cancelled, so that
/// its handle says so and the callback is dropped now; either way it
/// removes the timer from the thread's map.
struct LoopSide {
    shared: Arc<TsShared>,
}

impl LoopSide {
    fn fire(self) {
        let won = self.shared.settle(FIRED);
        // Unlisted (by the drop) before the callback runs.
        drop(self);
        if let Some(f) = won {
            f();
        }
    }
}

impl Drop for LoopSide {
    fn drop(&mut self) {
        // Already settled when it fired or was cancelled by its handle.
        drop(self.shared.settle(CANCELLED));
        let id = self.shared.id;
        // try_with: the thread may be exiting. The slot reference taken out
        // is dropped after the map's borrow ends.
        let taken = ENTRIES
            .try_with(|m| m.try_borrow_mut().ok().and_then(|mut m| m.remove(&id)))
            .ok()
            .flatten();
        drop(taken);
    }
}

/// Puts the timer of `shared` in the heap of `lp` (loop thread), unless it
/// was cancelled meanwhile.
fn push_entry(lp: &EventLoop, shared: Arc<TsShared>, delay: Duration) -> Result<(), LoopError> {
    if shared.state.load(Ordering::Acquire) != LIVE {
        return Ok(());
    }
    lp.check_open()?;
    let id = shared.id;
    let location = shared.location;
    let side = LoopSide { shared };
    let fire = move || side.fire();
    let now = lp.time();
    // Never due (asyncio's `inf`) if the deadline overflows: kept until
    // cancelled or closed.
    let (when, never) = match now.checked_add(delay) {
        Some(when) => (when, false),
        None => (crate::clock::latest_instant(now), true),
    };
    let slot = lp
        .inner
        .timers
        .borrow_mut()
        .schedule(when, never, location, fire);
    let old = ENTRIES.with(|m| m.borrow_mut().insert(id, slot));
    drop(old);
    Ok(())
}

/// Cancels the entry `id` if this thread holds it.
fn cancel_local(id: u64) {
    let slot = ENTRIES.with(|m| m.borrow_mut().remove(&id));
    if let Some(slot) = slot {
        // Its callback is gone already (taken by the handle's cancel): this
        // drops the loop-side closure and counts the heap entry cancelled.
        slot.cancel();
    }
}

/// The running loop of this thread, if it is the loop of `handle`.
fn this_loop(handle: &LoopHandle) -> Option<EventLoop> {
    running_loop().filter(|lp| lp.inner.shared.id == handle.shared.id)
}

impl LoopHandle {
    /// This handle's loop, if it is the loop running on the current thread
    /// (what a `Send` waker checks before taking the local fast path:
    /// `call_soon` instead of `call_soon_threadsafe`).
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// let lp = EventLoop::new().unwrap();
    /// let handle = lp.handle();
    /// assert!(handle.running_here().is_none()); // not running yet
    /// let inside = lp.run_until_complete(async move { handle.running_here().is_some() });
    /// assert!(inside.unwrap());
    /// ```
    pub fn running_here(&self) -> Option<EventLoop> {
        this_loop(self)
    }

    /// Schedules `callback` to run on the loop thread `delay` from now,
    /// from any thread, and returns a `Send + Sync` handle that can cancel it
    /// from any thread (a thread-safe `call_later`; asyncio has none, its
    /// `call_later` must be called on the loop's thread).
    ///
    /// Called on the loop's thread while it runs, the timer is in the heap
    /// at once; from elsewhere it is sent through the thread-safe queue and
    /// `delay` counts from when the loop receives it. Either way it never
    /// runs early. A cancelled timer is removed from the heap as a cancelled
    /// [`TimerHandle`](crate::TimerHandle) is (compacted when cancelled
    /// entries dominate), and its callback is dropped at once.
    ///
    /// A delay too large for the clock (`Duration::MAX`) makes a timer that
    /// never runs until cancelled, as with
    /// [`call_later`](crate::EventLoop::call_later).
    ///
    /// Errors: [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the loop
    /// is closed.
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use std::time::Duration;
    /// let lp = EventLoop::new().unwrap();
    /// let handle = lp.handle();
    /// let stopper = lp.handle();
    /// let worker = std::thread::spawn(move || {
    ///     let never = handle.call_later_threadsafe(Duration::from_millis(1), || panic!()).unwrap();
    ///     never.cancel();
    ///     handle.call_later_threadsafe(Duration::from_millis(5), move || {
    ///         stopper.stop().unwrap();
    ///     }).unwrap()
    /// });
    /// lp.run_forever().unwrap();
    /// assert!(worker.join().unwrap().fired());
    /// ```
    #[track_caller]
    pub fn call_later_threadsafe(
        &self,
        delay: Duration,
        callback: impl FnOnce() + Send + 'static,
    ) -> Result<ThreadSafeTimerHandle, LoopError> {
        let shared = Arc::new(TsShared {
            id: NEXT_TIMER_ID.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(LIVE),
            callback: Mutex::new(Some(Box::new(callback))),
            location: Location::caller(),
        });
        match this_loop(self) {
            Some(lp) => push_entry(&lp, shared.clone(), delay)?,
            None => {
                let s = shared.clone();
                self.call_soon_threadsafe(move || {
                    if let Some(lp) = running_loop() {
                        // Refused only by a closing loop: the timer never runs.
                        let _ = push_entry(&lp, s, delay);
                    }
                })?;
            }
        }
        Ok(ThreadSafeTimerHandle {
            shared,
            lp: self.clone(),
        })
    }
}

/// A timer scheduled with [`LoopHandle::call_later_threadsafe`]: `Send +
/// Sync`, cancellable from any thread.
///
/// Dropping the handle does not cancel the timer (as with
/// [`TimerHandle`](crate::TimerHandle)).
pub struct ThreadSafeTimerHandle {
    shared: Arc<TsShared>,
    lp: LoopHandle,
}

impl ThreadSafeTimerHandle {
    /// Cancels the timer: its callback never runs and is dropped now (on
    /// this thread). Does nothing once it ran or was cancelled. From the
    /// loop's thread the heap entry is cancelled at once; from another
    /// thread its cancellation is sent to the loop.
    pub fn cancel(&self) {
        let Some(callback) = self.shared.settle(CANCELLED) else {
            return;
        };
        drop(callback);
        let id = self.shared.id;
        if this_loop(&self.lp).is_some() {
            cancel_local(id);
        } else {
            // A closed loop dropped its heap already.
            let _ = self.lp.call_soon_threadsafe(move || cancel_local(id));
        }
    }

    /// Whether [`cancel`](Self::cancel) won before the timer ran.
    pub fn cancelled(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Whether the callback started running.
    pub fn fired(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == FIRED
    }

    /// Where in the source the timer was scheduled.
    pub fn location(&self) -> &'static Location<'static> {
        self.shared.location
    }
}

impl fmt::Debug for ThreadSafeTimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.shared.state.load(Ordering::Acquire) {
            LIVE => "pending",
            FIRED => "fired",
            _ => "cancelled",
        };
        f.debug_struct("ThreadSafeTimerHandle")
            .field("state", &state)
            .field("location", &self.shared.location)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn cancelled_entries_are_counted_and_compacted() {
        let lp = EventLoop::new().unwrap();
        let l = lp.clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        lp.run_until_complete(async move {
            let h = l.handle();
            for _ in 0..1000 {
                let r = r.clone();
                let t = h
                    .call_later_threadsafe(Duration::from_secs(3600), move || {
                        r.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap();
                t.cancel();
                assert!(t.cancelled());
            }
            // Counted as cancelled (scheduling also purges a few as it goes).
            let counted = l.inner.timers.borrow().cancelled();
            assert!(counted > 0 && counted <= 1000, "{counted}");
            // The deadline computations purge the heap, a budget at a time.
            let mut next = crate::timers::Next::Busy;
            for _ in 0..100 {
                next = l.inner.timers.borrow_mut().next_deadline();
                if next != crate::timers::Next::Busy {
                    break;
                }
            }
            assert_eq!(next, crate::timers::Next::Idle);
            assert_eq!(l.inner.timers.borrow().len(), 0);
            assert!(ENTRIES.with(|m| m.borrow().is_empty()));
        })
        .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn timers_cancelled_from_another_thread_leave_the_heap() {
        let lp = EventLoop::new().unwrap();
        let l = lp.clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        lp.run_until_complete(async move {
            let h = l.handle();
            let handles: Vec<ThreadSafeTimerHandle> = (0..300)
                .map(|_| {
                    let r = r.clone();
                    h.call_later_threadsafe(Duration::from_secs(3600), move || {
                        r.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
                })
                .collect();
            assert_eq!(l.inner.timers.borrow().len(), 300);
            // Cancelled elsewhere: the callbacks go at once, the entries'
            // cancellations come through the thread-safe queue.
            std::thread::spawn(move || handles.iter().for_each(|t| t.cancel()))
                .join()
                .unwrap();
            // The cancellations were queued before the join: the next
            // iteration drains them (this task resumes after it).
            // The next iterations drain them and purge the heap, a budget
            // at a time.
            for _ in 0..100 {
                futures_lite::future::yield_now().await;
                if l.inner.timers.borrow().is_empty() {
                    break;
                }
            }
        })
        .unwrap();
        // Counted as cancelled, so the loop's next deadline computation
        // compacted them away (300 > 100 and over half the heap).
        assert_eq!(lp.inner.timers.borrow().len(), 0);
        assert_eq!(lp.inner.timers.borrow().cancelled(), 0);
        assert!(ENTRIES.with(|m| m.borrow().is_empty()));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
