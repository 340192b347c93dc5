//! Handles: the scheduled-callback objects that `call_soon`, `call_later` and
//! `call_at` return.
//!
//! # Design
//! A `call_soon` callback is one allocation: an `Rc<CallbackCell<F>>` holding
//! the closure, its state flags and the source location that scheduled it.
//! The ready queue holds it as `Rc<dyn Callback>`; the user's [`Handle`]
//! holds another reference to the same cell. Cancelling is O(1): it sets a
//! flag and drops the closure at once (so that what it captured is released,
//! as asyncio clears `_callback`); the queue entry stays where it is and is
//! skipped when reached.
//!
//! A timer lives in a slot of its loop's timer slab instead (`timer_slab.rs`):
//! a [`TimerHandle`] is one counted pointer to the slot, which holds the
//! deadline, the closure and the flags. Cancelling it is the same O(1) flag
//! and drop, and counts the cancellation for the timer heap's purge (see
//! `timers.rs`).

use std::cell::Cell;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::time::Instant;

use crate::timer_slab::{Slot, SlotRef};

const CANCELLED: u8 = 1;
/// Set once the callback started running.
const RAN: u8 = 2;

/// What the loop sees of a scheduled callback.
pub(crate) trait Callback {
    /// Runs the closure unless it was cancelled; runs it at most once.
    fn run(&self);
    /// Cancels; returns whether this call cancelled it.
    fn cancel(&self) -> bool;
    fn is_cancelled(&self) -> bool;
    fn location(&self) -> &'static Location<'static>;
}

pub(crate) struct CallbackCell<F> {
    /// `CANCELLED | RAN`.
    flags: Cell<u8>,
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
        true
    }

    #[inline]
    fn is_cancelled(&self) -> bool {
        self.flags.get() & CANCELLED != 0
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
    /// file:line:col>` (asyncio's repr, with the scheduling site for the
    /// callback's name).
    pub(crate) fn describe(cell: &dyn Callback) -> String {
        describe("Handle", cell.is_cancelled(), None, cell.location())
    }
}

/// The report name of a handle (`kind`: `Handle` or `TimerHandle`; `when`:
/// a timer's deadline): `<TimerHandle cancelled when=... scheduled at
/// file:line:col>`.
pub(crate) fn describe(
    kind: &str,
    cancelled: bool,
    when: Option<Instant>,
    loc: &'static Location<'static>,
) -> String {
    let state = if cancelled { " cancelled" } else { "" };
    let when = when.map(|w| format!(" when={w:?}")).unwrap_or_default();
    format!(
        "<{kind}{state}{when} scheduled at {}:{}:{}>",
        loc.file(),
        loc.line(),
        loc.column()
    )
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Handle::describe(&*self.cell))
    }
}

/// A callback scheduled with [`call_later`](crate::EventLoop::call_later) or
/// [`call_at`](crate::EventLoop::call_at).
///
/// One pointer to the timer's slot in its loop's timer slab; the slot stays
/// valid as long as a handle to it exists, even after the loop is closed
/// and dropped. Dropping a `TimerHandle` does not cancel the timer.
#[doc(alias = "asyncio.TimerHandle")]
#[derive(Clone)]
pub struct TimerHandle {
    pub(crate) slot: SlotRef,
}

impl TimerHandle {
    /// Cancels the timer in O(1): its callback never runs and what it captured
    /// is dropped now. The heap entry is skipped when reached, and purged over
    /// the next iterations when cancelled entries dominate the heap.
    #[doc(alias = "TimerHandle.cancel")]
    pub fn cancel(&self) {
        self.slot.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    #[doc(alias = "TimerHandle.cancelled")]
    pub fn cancelled(&self) -> bool {
        self.slot.is_cancelled()
    }

    /// The loop time at which the callback is due. For a timer that is
    /// never due (a delay too large for the clock, asyncio's `inf`), the
    /// latest instant the clock can represent: later than any other
    /// timer's.
    #[doc(alias = "TimerHandle.when")]
    pub fn when(&self) -> Instant {
        self.slot.when()
    }

    /// Where in the source this timer was scheduled.
    pub fn location(&self) -> &'static Location<'static> {
        self.slot.location()
    }

    /// How reports name a timer: `<TimerHandle when=... scheduled at ...>`.
    pub(crate) fn describe(slot: &Slot) -> String {
        describe(
            "TimerHandle",
            slot.is_cancelled(),
            Some(slot.when()),
            slot.location(),
        )
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&TimerHandle::describe(&self.slot))
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
        assert!(cell.cancel());
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
    fn a_second_cancel_does_nothing() {
        let cell = CallbackCell::new_rc(|| {}, Location::caller());
        assert!(cell.cancel());
        assert!(!cell.cancel(), "second cancel is a no-op");
    }

    /// A timer handle is one pointer (issue 16: a million handles are 8 MB
    /// of the user's memory, not 40).
    #[test]
    fn a_timer_handle_is_one_pointer() {
        assert_eq!(
            std::mem::size_of::<TimerHandle>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Option<TimerHandle>>(),
            std::mem::size_of::<usize>()
        );
    }
}
