//! Handles: the scheduled-callback objects that `call_soon`, `call_later` and
//! `call_at` return.
//!
//! # Design
//! A scheduled callback is one allocation: an `Rc<CallbackCell<F>>` holding the
//! closure, its state flags and the source location that scheduled it. The
//! ready queue and the timer heap hold it as `Rc<dyn Callback>`; the user's
//! [`Handle`] holds another reference to the same cell. Cancelling is O(1): it
//! sets a flag and drops the closure at once (so that what it captured is
//! released, as asyncio clears `_callback`); the queue entry stays where it is
//! and is skipped when reached. Cancelled timers are counted so that the timer
//! heap can purge them, a budget per iteration, when they dominate (see
//! `timers.rs`).

use std::cell::Cell;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::time::Instant;

const CANCELLED: u64 = 1;
/// Set while a timer's entry is in the heap: cancelling it then counts towards
/// the heap's purge threshold.
const IN_HEAP: u64 = 2;
/// Set once the callback started running.
const RAN: u64 = 4;
/// The flags word holds a timer's scheduling sequence number above these
/// bits (the timer heap's tie-break, kept here so that a heap entry is 32
/// bytes instead of 40).
const SEQ_SHIFT: u32 = 3;

/// What the loop sees of a scheduled callback.
pub(crate) trait Callback {
    /// Runs the closure unless it was cancelled; runs it at most once.
    fn run(&self);
    /// Cancels; returns whether it was live and in the timer heap.
    fn cancel(&self) -> bool;
    fn is_cancelled(&self) -> bool;
    /// Marks the cell as in the timer heap with sequence number `seq`
    /// (below 2^61).
    fn enter_heap(&self, seq: u64);
    /// Marks the cell as out of the timer heap.
    fn leave_heap(&self);
    /// The sequence number given to `enter_heap`.
    fn seq(&self) -> u64;
    fn location(&self) -> &'static Location<'static>;
}

pub(crate) struct CallbackCell<F> {
    /// `CANCELLED | IN_HEAP | RAN`, and the timer sequence number above
    /// [`SEQ_SHIFT`].
    flags: Cell<u64>,
    f: Cell<Option<F>>,
    location: &'static Location<'static>,
}

impl<F: FnOnce() + 'static> CallbackCell<F> {
    pub(crate) fn new_rc(f: F, location: &'static Location<'static>) -> Rc<dyn Callback> {
        Rc::new(CallbackCell {
            flags: Cell::new(0),
            f: Cell::new(Some(f)),
            location,
        })
    }
}

impl<F: FnOnce()> Callback for CallbackCell<F> {
    #[inline]
    fn run(&self) {
        let flags = self.flags.get();
        if flags & (CANCELLED | RAN) != 0 {
            return;
        }
        self.flags.set(flags | RAN);
        if let Some(f) = self.f.take() {
            f();
        }
    }

    fn cancel(&self) -> bool {
        let flags = self.flags.get();
        if flags & CANCELLED != 0 {
            return false;
        }
        self.flags.set(flags | CANCELLED);
        // Release what the closure captured now, not when the entry is reached.
        drop(self.f.take());
        flags & IN_HEAP != 0
    }

    #[inline]
    fn is_cancelled(&self) -> bool {
        self.flags.get() & CANCELLED != 0
    }

    #[inline]
    fn enter_heap(&self, seq: u64) {
        let low = self.flags.get() & ((1 << SEQ_SHIFT) - 1);
        self.flags.set(seq << SEQ_SHIFT | low | IN_HEAP);
    }

    #[inline]
    fn leave_heap(&self) {
        self.flags.set(self.flags.get() & !IN_HEAP);
    }

    #[inline]
    fn seq(&self) -> u64 {
        self.flags.get() >> SEQ_SHIFT
    }

    fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

/// A callback scheduled with [`call_soon`](crate::EventLoop::call_soon): keep
/// it to [`cancel`](Handle::cancel) the call before it runs.
///
/// Dropping a `Handle` does not cancel the callback.
#[doc(alias = "asyncio.Handle")]
#[derive(Clone)]
pub struct Handle {
    pub(crate) cell: Rc<dyn Callback>,
}

impl Handle {
    /// Cancels the callback: if it has not run yet, it never will, and what
    /// it captured is dropped now. Cancelling twice, or after it ran, does
    /// nothing.
    #[doc(alias = "Handle.cancel")]
    pub fn cancel(&self) {
        self.cell.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    #[doc(alias = "Handle.cancelled")]
    pub fn cancelled(&self) -> bool {
        self.cell.is_cancelled()
    }

    /// Where in the source this callback was scheduled (asyncio records this
    /// only in debug mode; here it is free, so always).
    pub fn location(&self) -> &'static Location<'static> {
        self.cell.location()
    }

    /// How reports name a scheduled callback: `<Handle scheduled at
    /// file:line:col>`, or for a timer (`when`: its deadline) `<TimerHandle
    /// when=... scheduled at ...>` (asyncio's reprs, with the scheduling
    /// site for the callback's name).
    pub(crate) fn describe(cell: &dyn Callback, when: Option<Instant>) -> String {
        let loc = cell.location();
        let state = if cell.is_cancelled() {
            " cancelled"
        } else {
            ""
        };
        let (kind, when) = match when {
            Some(when) => ("TimerHandle", format!(" when={when:?}")),
            None => ("Handle", String::new()),
        };
        format!(
            "<{kind}{state}{when} scheduled at {}:{}:{}>",
            loc.file(),
            loc.line(),
            loc.column()
        )
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Handle::describe(&*self.cell, None))
    }
}

/// Counts cancelled timers that are still in the heap; shared between the
/// heap and every [`TimerHandle`].
#[derive(Debug, Default)]
pub(crate) struct TimerStats {
    pub(crate) cancelled_in_heap: Cell<usize>,
}

/// A callback scheduled with [`call_later`](crate::EventLoop::call_later) or
/// [`call_at`](crate::EventLoop::call_at).
///
/// Dropping a `TimerHandle` does not cancel the timer.
#[doc(alias = "asyncio.TimerHandle")]
#[derive(Clone)]
pub struct TimerHandle {
    pub(crate) handle: Handle,
    pub(crate) when: Instant,
    pub(crate) stats: Rc<TimerStats>,
}

impl TimerHandle {
    /// Cancels the timer in O(1): its callback never runs and what it captured
    /// is dropped now. The heap entry is skipped when reached, and purged over
    /// the next iterations when cancelled entries dominate the heap.
    #[doc(alias = "TimerHandle.cancel")]
    pub fn cancel(&self) {
        if self.handle.cell.cancel() {
            let stats = &self.stats.cancelled_in_heap;
            stats.set(stats.get() + 1);
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    #[doc(alias = "TimerHandle.cancelled")]
    pub fn cancelled(&self) -> bool {
        self.handle.cancelled()
    }

    /// The loop time at which the callback is due. For a timer that is
    /// never due (a delay too large for the clock, asyncio's `inf`), the
    /// latest instant the clock can represent: later than any other
    /// timer's.
    #[doc(alias = "TimerHandle.when")]
    pub fn when(&self) -> Instant {
        self.when
    }

    /// Where in the source this timer was scheduled.
    pub fn location(&self) -> &'static Location<'static> {
        self.handle.location()
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Handle::describe(&*self.handle.cell, Some(self.when)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_once_and_not_after_cancel() {
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        let cell = CallbackCell::new_rc(move || c.set(c.get() + 1), Location::caller());
        cell.run();
        cell.run();
        assert_eq!(count.get(), 1);

        let c = count.clone();
        let cell = CallbackCell::new_rc(move || c.set(c.get() + 1), Location::caller());
        assert!(!cell.cancel(), "not in a heap");
        assert!(cell.is_cancelled());
        cell.run();
        assert_eq!(count.get(), 1);
        assert_eq!(
            Rc::strong_count(&count),
            1,
            "cancel drops the closure at once"
        );
    }

    #[test]
    fn cancel_reports_heap_membership_once() {
        let cell = CallbackCell::new_rc(|| {}, Location::caller());
        cell.enter_heap(7);
        assert_eq!(cell.seq(), 7);
        assert!(cell.cancel());
        assert!(!cell.cancel(), "second cancel is a no-op");
    }
}
