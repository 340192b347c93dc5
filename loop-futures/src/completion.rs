//! The completion state that [`Future`](crate::Future) and
//! [`Task`](crate::Task) share: the outcome, the done callbacks, the wakers of
//! whoever awaits it.
//!
//! # Invariants
//! - The outcome is set once: `Pending` becomes `Done`; `Done` becomes `Taken`
//!   when an `.await` moves the value out (Rust's one-consumer rule; `result()`
//!   clones instead and leaves it in place).
//! - Done callbacks never run inside `complete`: each is scheduled with the
//!   loop's `call_soon`, in registration order. A callback added after
//!   completion is scheduled at once.
//! - Nothing here holds a `RefCell` borrow while user code runs: callbacks
//!   and wakers are taken out of their cells before being scheduled or woken.

use std::cell::{Cell, RefCell};
use std::task::{Context, Poll, Waker};

use crate::{ErrorKind, LoopError, LoopRef};

/// Identifies a done callback, for `remove_done_callback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u32);

pub(crate) enum Outcome<T> {
    Pending,
    Done(Result<T, LoopError>),
    /// Moved out by an `.await`; the error (if it was one) stays readable.
    Taken(Option<LoopError>),
}

type DoneCallback<H> = Box<dyn FnOnce(&H)>;

/// One party waiting for the outcome: a task (its waker) or a done callback.
enum Waiter<H> {
    Waker(Waker),
    Callback(CallbackId, DoneCallback<H>),
}

/// The waiters, in registration order. One is kept inline: almost every
/// future has exactly one (the task awaiting it), and then neither a heap
/// allocation nor a vector's drop is needed.
#[derive(Default)]
enum Waiters<H> {
    #[default]
    None,
    One(Waiter<H>),
    Many(Vec<Waiter<H>>),
}

impl<H> Waiters<H> {
    fn push(&mut self, w: Waiter<H>) {
        match self {
            Waiters::None => *self = Waiters::One(w),
            Waiters::Many(v) => v.push(w),
            Waiters::One(_) => {
                if let Waiters::One(first) = std::mem::take(self) {
                    *self = Waiters::Many(vec![first, w]);
                }
            }
        }
    }

    fn as_slice(&self) -> &[Waiter<H>] {
        match self {
            Waiters::None => &[],
            Waiters::One(w) => std::slice::from_ref(w),
            Waiters::Many(v) => v,
        }
    }

    fn has_waker(&self, waker: &Waker) -> bool {
        self.as_slice()
            .iter()
            .any(|w| matches!(w, Waiter::Waker(x) if x.will_wake(waker)))
    }
}

pub(crate) struct Completion<T, H> {
    outcome: RefCell<Outcome<T>>,
    waiters: RefCell<Waiters<H>>,
    next_id: Cell<u32>,
    /// Someone looked at the error (result, exception, await).
    pub(crate) retrieved: Cell<bool>,
}

impl<T, H> Default for Completion<T, H> {
    fn default() -> Self {
        Completion {
            outcome: RefCell::new(Outcome::Pending),
            waiters: RefCell::new(Waiters::default()),
            next_id: Cell::new(0),
            retrieved: Cell::new(false),
        }
    }
}

impl<T, H> Completion<T, H> {
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        !matches!(*self.outcome.borrow(), Outcome::Pending)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        match &*self.outcome.borrow() {
            Outcome::Done(Err(e)) | Outcome::Taken(Some(e)) => e.kind() == ErrorKind::Cancelled,
            _ => false,
        }
    }

    /// Sets the outcome; false if it was already set.
    #[inline]
    pub(crate) fn complete<L: LoopRef>(
        &self,
        lp: &L,
        this: &H,
        result: Result<T, LoopError>,
    ) -> bool
    where
        H: Clone + 'static,
    {
        {
            let mut outcome = self.outcome.borrow_mut();
            if !matches!(*outcome, Outcome::Pending) {
                return false;
            }
            *outcome = Outcome::Done(result);
        }
        // Wake tasks and schedule callbacks in the order they registered:
        // waking a task queues it on the loop just as call_soon would.
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        let fire = |w: Waiter<H>| match w {
            Waiter::Waker(w) => w.wake(),
            Waiter::Callback(_, cb) => Self::schedule_callback(lp, this, cb),
        };
        match waiters {
            Waiters::None => {}
            Waiters::One(w) => fire(w),
            Waiters::Many(v) => v.into_iter().for_each(fire),
        }
        true
    }

    fn schedule_callback<L: LoopRef>(lp: &L, this: &H, cb: DoneCallback<H>)
    where
        H: Clone + 'static,
    {
        let this = this.clone();
        // On a closed loop the callback cannot run; it is dropped.
        let _ = lp.call_soon_fn(move || cb(&this));
    }

    pub(crate) fn add_done_callback<L: LoopRef>(
        &self,
        lp: &L,
        this: &H,
        cb: DoneCallback<H>,
    ) -> CallbackId
    where
        H: Clone + 'static,
    {
        let id = CallbackId(self.next_id.get());
        self.next_id.set(id.0.wrapping_add(1));
        if self.is_done() {
            Self::schedule_callback(lp, this, cb);
        } else {
            self.waiters.borrow_mut().push(Waiter::Callback(id, cb));
        }
        id
    }

    pub(crate) fn remove_done_callback(&self, id: CallbackId) -> usize {
        let is_it = |w: &Waiter<H>| matches!(w, Waiter::Callback(x, _) if *x == id);
        let removed: Vec<Waiter<H>> = {
            let mut waiters = self.waiters.borrow_mut();
            let mut removed = Vec::new();
            match &mut *waiters {
                Waiters::None => {}
                Waiters::One(w) => {
                    if is_it(w) {
                        if let Waiters::One(w) = std::mem::take(&mut *waiters) {
                            removed.push(w);
                        }
                    }
                }
                Waiters::Many(v) => {
                    let mut i = 0;
                    while i < v.len() {
                        if is_it(&v[i]) {
                            removed.push(v.remove(i));
                        } else {
                            i += 1;
                        }
                    }
                }
            }
            removed
        };
        let n = removed.len();
        drop(removed); // user closures, dropped outside the borrow
        n
    }

    /// asyncio's `result()`: the value (cloned), or the error.
    pub(crate) fn result(&self) -> Result<T, LoopError>
    where
        T: Clone,
    {
        self.mark_retrieved();
        match &*self.outcome.borrow() {
            Outcome::Pending => Err(LoopError::new(
                ErrorKind::InvalidState,
                "Result is not set.",
            )),
            Outcome::Done(r) => r.clone(),
            Outcome::Taken(Some(e)) => Err(e.clone()),
            Outcome::Taken(None) => Err(taken()),
        }
    }

    /// Moves the value out (for results that are not `Clone`).
    pub(crate) fn take_result(&self) -> Result<T, LoopError> {
        self.mark_retrieved();
        take_done(&mut self.outcome.borrow_mut())
    }

    /// asyncio's `exception()`: `Ok(None)` on success, `Ok(Some(e))` when it
    /// failed, `Err(Cancelled)` when cancelled, `Err(InvalidState)` when not done.
    pub(crate) fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        self.mark_retrieved();
        match &*self.outcome.borrow() {
            Outcome::Pending => Err(LoopError::new(
                ErrorKind::InvalidState,
                "Exception is not set.",
            )),
            Outcome::Done(Err(e)) | Outcome::Taken(Some(e)) if e.kind() == ErrorKind::Cancelled => {
                Err(e.clone())
            }
            Outcome::Done(Err(e)) | Outcome::Taken(Some(e)) => Ok(Some(e.clone())),
            Outcome::Done(Ok(_)) | Outcome::Taken(None) => Ok(None),
        }
    }

    /// The `std::future::Future` side: move the outcome out when done.
    #[inline]
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T, LoopError>> {
        {
            let mut outcome = self.outcome.borrow_mut();
            if !matches!(*outcome, Outcome::Pending) {
                self.retrieved.set(true);
                return Poll::Ready(take_done(&mut outcome));
            }
        }
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.has_waker(cx.waker()) {
            waiters.push(Waiter::Waker(cx.waker().clone()));
        }
        Poll::Pending
    }

    /// `Ready` once done, registering `cx`'s waker until then; takes nothing.
    pub(crate) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_done() {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.has_waker(cx.waker()) {
            waiters.push(Waiter::Waker(cx.waker().clone()));
        }
        Poll::Pending
    }

    /// Runs `f` on the outcome: `None` while pending, or once the value was
    /// moved out (a moved-out error is still shown).
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&Result<T, LoopError>>) -> R) -> R {
        let outcome = self.outcome.borrow();
        match &*outcome {
            Outcome::Done(r) => f(Some(r)),
            Outcome::Taken(Some(e)) => f(Some(&Err(e.clone()))),
            Outcome::Pending | Outcome::Taken(None) => f(None),
        }
    }

    /// Records that someone looked at the outcome. Only a look at a *done*
    /// future counts: asking before completion (an `InvalidState` error) does
    /// not retrieve an error set later, as in asyncio, where `set_exception`
    /// arms the "never retrieved" report and only `result()`/`exception()`
    /// on the finished future disarm it.
    fn mark_retrieved(&self) {
        if self.is_done() {
            self.retrieved.set(true);
        }
    }

    /// The error nobody retrieved, if any (for the "never retrieved" report).
    pub(crate) fn unretrieved_error_any(&self) -> Option<LoopError> {
        if self.retrieved.get() {
            return None;
        }
        match &*self.outcome.borrow() {
            Outcome::Done(Err(e)) if e.kind() != ErrorKind::Cancelled => Some(e.clone()),
            _ => None,
        }
    }

    /// The error held by an `Ok` output nobody retrieved, as `probe` finds
    /// it (the task's "never retrieved" report of an error output).
    pub(crate) fn unretrieved_output_failure(
        &self,
        probe: fn(&T) -> Option<LoopError>,
    ) -> Option<LoopError> {
        if self.retrieved.get() {
            return None;
        }
        match &*self.outcome.borrow() {
            Outcome::Done(Ok(v)) => probe(v),
            _ => None,
        }
    }

    pub(crate) fn state_name(&self) -> &'static str {
        match &*self.outcome.borrow() {
            Outcome::Pending => "pending",
            _ if self.is_cancelled() => "cancelled",
            _ => "finished",
        }
    }
}

/// Moves the value out of a done outcome (an error stays readable).
fn take_done<T>(outcome: &mut Outcome<T>) -> Result<T, LoopError> {
    match std::mem::replace(outcome, Outcome::Taken(None)) {
        Outcome::Pending => {
            *outcome = Outcome::Pending;
            Err(LoopError::new(
                ErrorKind::InvalidState,
                "Result is not set.",
            ))
        }
        Outcome::Done(Ok(v)) => Ok(v),
        Outcome::Done(Err(e)) | Outcome::Taken(Some(e)) => {
            *outcome = Outcome::Taken(Some(e.clone()));
            Err(e)
        }
        Outcome::Taken(None) => Err(taken()),
    }
}

fn taken() -> LoopError {
    LoopError::new(
        ErrorKind::InvalidState,
        "the result was already moved out by an .await or take_result()",
    )
}
