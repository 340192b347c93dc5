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
pub struct CallbackId(u64);

pub(crate) enum Outcome<T> {
    Pending,
    Done(Result<T, LoopError>),
    /// Moved out by an `.await`; the error (if it was one) stays readable.
    Taken(Option<LoopError>),
}

type DoneCallback<H> = Box<dyn FnOnce(&H)>;

/// Who awaits the outcome: almost always one task, kept without a heap
/// allocation; more go to `rest`.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakers {
    fn register(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) => {
                if !self.rest.iter().any(|w| w.will_wake(waker)) {
                    self.rest.push(waker.clone());
                }
            }
        }
    }
}

pub(crate) struct Completion<T, H> {
    outcome: RefCell<Outcome<T>>,
    callbacks: RefCell<Vec<(CallbackId, DoneCallback<H>)>>,
    wakers: RefCell<Wakers>,
    next_id: Cell<u64>,
    /// Someone looked at the error (result, exception, await).
    pub(crate) retrieved: Cell<bool>,
}

impl<T, H> Default for Completion<T, H> {
    fn default() -> Self {
        Completion {
            outcome: RefCell::new(Outcome::Pending),
            callbacks: RefCell::new(Vec::new()),
            wakers: RefCell::new(Wakers::default()),
            next_id: Cell::new(0),
            retrieved: Cell::new(false),
        }
    }
}

impl<T, H> Completion<T, H> {
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
        let callbacks = std::mem::take(&mut *self.callbacks.borrow_mut());
        for (_, cb) in callbacks {
            Self::schedule_callback(lp, this, cb);
        }
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers.first.into_iter().chain(wakers.rest) {
            w.wake();
        }
        true
    }

    fn schedule_callback<L: LoopRef>(lp: &L, this: &H, cb: DoneCallback<H>)
    where
        H: Clone + 'static,
    {
        let this = this.clone();
        // On a closed loop the callback cannot run; it is dropped.
        let _ = lp.call_soon_dyn(Box::new(move || cb(&this)));
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
        self.next_id.set(id.0 + 1);
        if self.is_done() {
            Self::schedule_callback(lp, this, cb);
        } else {
            self.callbacks.borrow_mut().push((id, cb));
        }
        id
    }

    pub(crate) fn remove_done_callback(&self, id: CallbackId) -> usize {
        let removed = {
            let mut cbs = self.callbacks.borrow_mut();
            let before = cbs.len();
            let mut removed = Vec::new();
            let mut i = 0;
            while i < cbs.len() {
                if cbs[i].0 == id {
                    removed.push(cbs.remove(i));
                } else {
                    i += 1;
                }
            }
            debug_assert_eq!(before - cbs.len(), removed.len());
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
        let mut outcome = self.outcome.borrow_mut();
        match std::mem::replace(&mut *outcome, Outcome::Taken(None)) {
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
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T, LoopError>> {
        if !self.is_done() {
            self.wakers.borrow_mut().register(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(self.take_result())
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

    pub(crate) fn state_name(&self) -> &'static str {
        match &*self.outcome.borrow() {
            Outcome::Pending => "pending",
            _ if self.is_cancelled() => "cancelled",
            _ => "finished",
        }
    }
}

fn taken() -> LoopError {
    LoopError::new(
        ErrorKind::InvalidState,
        "the result was already moved out by an .await or take_result()",
    )
}
