//! The delivery of a task's cancellation to the awaitable it is suspended
//! on. The rule itself is stated once, in the [`task`](crate::task) module
//! docs ("Cancellation"); this module is its mechanics.
//!
//! # Mechanics
//! One thread-local word, `CTX`, read with one load:
//! - its upper bits: the identity of the loop whose task is being polled
//!   (the address of its [`TaskRegistry`], aligned so that the two low bits
//!   are free), 0 outside task polls;
//! - bit 0, `ARMED`: a cancellation waits in `DELIVERY` to be taken by the
//!   first aioloop awaitable polled ([`take_cancellation`], [`check_await`]);
//! - bit 1, `OBSERVED`: an awaitable recorded in `OBSERVED` a `Cancelled`
//!   error it returned because what it awaited was cancelled (not by
//!   delivery).
//!
//! So an awaitable's check is one load and one comparison with its loop's
//! identity (or 0).
//!
//! `TaskCore::poll_body` arms a pending `cancel()` request as a fresh
//! `LoopError::cancelled(msg)` before polling the body and disarms it after:
//! whatever is still armed then was not observed. So outside a task poll
//! with a pending request nothing is armed, and an awaitable's check costs
//! one thread-local load.

use std::cell::{Cell, RefCell};

use crate::{ErrorKind, LoopError, LoopRef, TaskRegistry, WeakLoopError};

/// The context word (see the module docs).
pub(crate) type Ctx = usize;

const ARMED: usize = 1;
const OBSERVED: usize = 2;
const FLAGS: usize = ARMED | OBSERVED;

thread_local! {
    static CTX: Cell<usize> = const { Cell::new(0) };
    static DELIVERY: RefCell<Option<LoopError>> = const { RefCell::new(None) };
    static OBSERVED_LIST: RefCell<Vec<WeakLoopError>> = const { RefCell::new(Vec::new()) };
}

#[inline]
fn ctx() -> usize {
    CTX.with(Cell::get)
}

#[inline]
fn set_ctx(c: usize) {
    CTX.with(|x| x.set(c));
}

fn put_delivery(err: Option<LoopError>) -> Option<LoopError> {
    DELIVERY
        .try_with(|d| std::mem::replace(&mut *d.borrow_mut(), err))
        .ok()
        .flatten()
}

fn take_observed() -> Vec<WeakLoopError> {
    OBSERVED_LIST
        .try_with(|o| std::mem::take(&mut *o.borrow_mut()))
        .unwrap_or_default()
}

/// The identity of `lp` for the different-loop check.
#[inline]
pub(crate) fn loop_id<L: LoopRef>(lp: &L) -> usize {
    lp.tasks() as *const TaskRegistry as usize
}

/// Takes the cancellation being delivered to the task polling this
/// awaitable, if there is one.
///
/// Every aioloop awaitable calls this (or [`check_await`]) at the top of its
/// `poll`; an awaitable of your own that waits for something aioloop will
/// not cancel by itself should too: on `Some(err)`, stop waiting (cancel
/// what you wait for, as asyncio cancels the task's `_fut_waiter`) and
/// return `err`, or an error that holds it (an `io::Error` made from it with
/// `?`/`From` does), without keeping a clone of it. A task whose body then
/// propagates that error ends cancelled; one that drops it goes on. An
/// awaitable that does not take it leaves the task to the fallback rule: its
/// body is dropped. Outside a task poll, and in every poll of a task that
/// nobody cancelled, this is `None` at the cost of one thread-local load.
///
/// ```
/// use loop_futures::take_cancellation;
/// // Nothing is being delivered outside a cancelled task's poll.
/// assert!(take_cancellation().is_none());
/// ```
#[inline]
pub fn take_cancellation() -> Option<LoopError> {
    let c = ctx();
    if c & ARMED == 0 {
        return None;
    }
    set_ctx(c & !ARMED);
    put_delivery(None)
}

/// Whether a cancellation is waiting to be taken by the next awaitable
/// polled (see [`take_cancellation`]).
#[inline]
pub fn cancellation_pending() -> bool {
    ctx() & ARMED != 0
}

/// The check at the top of the `poll` of an awaitable bound to loop `lp`
/// (`what` names it in the error: `"Future"`, `"Task"`, ...).
///
/// `Err` with an [`ErrorKind::Cancelled`] error: the cancellation delivered
/// to the task polling it, taken ([`take_cancellation`]); stop waiting and
/// return it. `Err` with an [`ErrorKind::InvalidState`] error: the task
/// polling it belongs to another loop ("... attached to a different loop"),
/// which would never wake it; return it. `Ok`: go on (one thread-local load).
#[inline]
pub fn check_await<L: LoopRef>(lp: &L, what: &str) -> Result<(), LoopError> {
    let c = ctx();
    if c == 0 || c == loop_id(lp) {
        return Ok(());
    }
    check_await_slow(c, loop_id(lp), what)
}

#[cold]
fn check_await_slow(c: usize, id: usize, what: &str) -> Result<(), LoopError> {
    let polling = c & !FLAGS;
    if polling != 0 && polling != id {
        return Err(LoopError::new(
            ErrorKind::InvalidState,
            format!(
                "Task got {what} attached to a different loop (a future or task can only be \
                 awaited from a task of the loop it belongs to)"
            ),
        ));
    }
    match take_cancellation() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The `Cancelled` error an awaitable returns because what it awaited was
/// cancelled by someone else (a future's `cancel()`, a task that ended
/// cancelled): inside a task poll, a copy of `err` that the task watches, so
/// that a body propagating it ends the task cancelled (asyncio: a
/// `CancelledError` escaping the coroutine cancels the task). Outside a task
/// poll, `err` itself.
pub fn observe_cancellation(err: LoopError) -> LoopError {
    let c = ctx();
    if c == 0 {
        return err;
    }
    let fresh = err.detached();
    let weak = fresh.downgrade();
    if OBSERVED_LIST
        .try_with(|o| o.borrow_mut().push(weak))
        .is_ok()
    {
        set_ctx(c | OBSERVED);
    }
    fresh
}

/// Runs `poll` (which polls the future a combinator wraps) with `err`
/// waiting to be delivered, as a task does for its own cancellation:
/// asyncio's `timeout` cancelling the work it bounds. Returns what `poll`
/// returned, and `err` back if nothing took it: then either a cancellation
/// was already waiting (see [`cancellation_pending`]; it is delivered
/// first and `err` is not armed), or the wrapped future is suspended on
/// something that does not observe cancellation.
pub fn deliver_cancellation<R>(err: LoopError, poll: impl FnOnce() -> R) -> (R, Option<LoopError>) {
    let c = ctx();
    if c & ARMED != 0 {
        return (poll(), Some(err));
    }
    put_delivery(Some(err));
    set_ctx(c | ARMED);
    let out = poll();
    let after = ctx();
    if after & ARMED != 0 {
        set_ctx(after & !ARMED);
        (out, put_delivery(None))
    } else {
        (out, None)
    }
}

/// Enters a task poll of loop `id`, with `delivery` armed if given;
/// returns the context to give back to [`leave`]. The fast path (no
/// delivery, no task poll around it) is two thread-local accesses.
#[inline]
pub(crate) fn enter(id: usize, delivery: Option<LoopError>) -> Ctx {
    debug_assert_eq!(id & FLAGS, 0, "a registry address is aligned");
    let armed = delivery.is_some();
    let prev = CTX.with(|c| c.replace(id | usize::from(armed)));
    if prev & FLAGS != 0 || armed {
        enter_slow(prev, delivery);
    }
    prev
}

#[cold]
#[inline(never)]
fn enter_slow(prev: usize, delivery: Option<LoopError>) {
    if prev & FLAGS != 0 {
        // What the outer poll had is put aside: `put_delivery` below must
        // not overwrite it.
        let saved = (put_delivery(None), take_observed());
        let _ = STASH.try_with(|s| s.borrow_mut().push(saved));
    }
    if let Some(err) = delivery {
        put_delivery(Some(err));
    }
}

/// Leaves a task poll, restoring `prev`; returns the context the poll
/// ended with (whether a delivery is left, whether cancellations were
/// observed: see [`take_undelivered`] and [`take_observed_list`]).
#[inline]
pub(crate) fn leave(prev: Ctx) -> Ctx {
    CTX.with(|c| c.replace(prev))
}

/// Nothing to do after the poll: no delivery left, nothing observed,
/// nothing stashed (the contexts [`enter`] and [`leave`] returned).
#[inline]
pub(crate) fn quiet(outer: usize, ended: usize) -> bool {
    (outer | ended) & FLAGS == 0
}

/// The delivery was not taken (of the context [`leave`] returned).
#[inline]
pub(crate) fn undelivered(ended: usize) -> bool {
    ended & ARMED != 0
}

/// Cancellations were observed (of the context [`leave`] returned).
#[inline]
pub(crate) fn observed(ended: usize) -> bool {
    ended & OBSERVED != 0
}

/// The poll stashed what it found before it (of the context [`enter`]
/// returned).
#[inline]
pub(crate) fn nested(prev: usize) -> bool {
    prev & FLAGS != 0
}

/// The delivery a poll that ended with `undelivered()` left.
#[cold]
pub(crate) fn take_undelivered() -> Option<LoopError> {
    put_delivery(None)
}

/// The cancellations a poll that ended with `observed()` recorded.
#[cold]
pub(crate) fn take_observed_list() -> Vec<WeakLoopError> {
    take_observed()
}

thread_local! {
    /// What nested task polls saved (task polls do not nest in aioloop, but
    /// a foreign executor could nest them).
    static STASH: RefCell<Vec<(Option<LoopError>, Vec<WeakLoopError>)>> = const { RefCell::new(Vec::new()) };
}

/// Puts back what [`enter`] stashed for a nested poll (call after
/// [`leave`] when `prev.nested()`, once the poll's own leftovers were taken).
#[cold]
#[inline(never)]
pub(crate) fn unstash() {
    let Some((delivery, observed)) = STASH.try_with(|s| s.borrow_mut().pop()).ok().flatten() else {
        return;
    };
    put_delivery(delivery);
    let _ = OBSERVED_LIST.try_with(|o| *o.borrow_mut() = observed);
}
