//! asyncio's `Future`: a result that will be set later, bound to a loop.

use std::fmt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::cancel;
use crate::completion::{CallbackId, Completion};
use crate::{ErrorKind, LoopError, LoopRef};

/// An asyncio `Future`: a value (or an error) that something sets later,
/// that callbacks can wait for and tasks can `.await`.
///
/// A `Future` is a cheap `Clone` handle; all clones see the same state. It is
/// bound to the loop that created it (`loop.create_future()`), which runs its
/// done callbacks.
///
/// Awaiting it gives `Result<T, LoopError>`: the value, the error given to
/// [`set_exception`](Self::set_exception), or an
/// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) error. An `.await`
/// *moves* the value out (the one-consumer rule of Rust futures); use
/// [`result`](Self::result) to read a `Clone` value any number of times.
///
/// Differences from asyncio: errors are values, not raised exceptions;
/// `remove_done_callback` takes the [`CallbackId`] that `add_done_callback`
/// returned, since closures cannot be compared.
#[doc(alias = "asyncio.Future")]
pub struct Future<T, L: LoopRef> {
    inner: Rc<FutureInner<T, L>>,
}

struct FutureInner<T, L: LoopRef> {
    lp: L,
    completion: Completion<T, Future<T, L>>,
}

impl<T, L: LoopRef> Clone for Future<T, L> {
    fn clone(&self) -> Self {
        Future {
            inner: self.inner.clone(),
        }
    }
}

impl<T: 'static, L: LoopRef> Future<T, L> {
    /// A new pending future bound to `lp` (what `loop.create_future()` does).
    pub fn new(lp: &L) -> Self {
        Future {
            inner: Rc::new(FutureInner {
                lp: lp.clone(),
                completion: Completion::default(),
            }),
        }
    }

    /// Marks the future done with `value` and schedules its done callbacks.
    /// Errors with `InvalidState` if it is already done (or cancelled).
    #[doc(alias = "Future.set_result")]
    pub fn set_result(&self, value: T) -> Result<(), LoopError> {
        self.complete(Ok(value), "set_result")
    }

    /// Marks the future done with `error` (any error type; a [`LoopError`]
    /// is kept as it is, others become [`ErrorKind::Exception`](crate::ErrorKind::Exception)).
    /// Errors with `InvalidState` if it is already done.
    #[doc(alias = "Future.set_exception")]
    pub fn set_exception(
        &self,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Result<(), LoopError> {
        self.complete(Err(LoopError::exception(error)), "set_exception")
    }

    fn complete(&self, result: Result<T, LoopError>, what: &str) -> Result<(), LoopError> {
        if self.inner.completion.complete(&self.inner.lp, self, result) {
            Ok(())
        } else {
            Err(LoopError::new(
                crate::ErrorKind::InvalidState,
                format!("invalid state: {what}() on a future that is already done"),
            ))
        }
    }

    /// Cancels the future: if it is pending, it becomes done with a
    /// `Cancelled` error carrying `msg`, its callbacks are scheduled, and
    /// `true` is returned; if it is already done, nothing changes and `false`
    /// is returned.
    #[doc(alias = "Future.cancel")]
    pub fn cancel(&self, msg: Option<&str>) -> bool {
        self.inner.completion.complete(
            &self.inner.lp,
            self,
            Err(LoopError::cancelled(msg.unwrap_or(""))),
        )
    }

    /// Whether the future was cancelled.
    #[doc(alias = "Future.cancelled")]
    pub fn cancelled(&self) -> bool {
        self.inner.completion.is_cancelled()
    }

    /// Whether the future is done (a result, an error, or cancelled).
    #[doc(alias = "Future.done")]
    pub fn done(&self) -> bool {
        self.inner.completion.is_done()
    }

    /// The result: the value (cloned), the error set with `set_exception`, a
    /// `Cancelled` error with the cancel message, or `InvalidState` when the
    /// future is not done.
    #[doc(alias = "Future.result")]
    pub fn result(&self) -> Result<T, LoopError>
    where
        T: Clone,
    {
        self.inner.completion.result()
    }

    /// Moves the value out, for values that are not `Clone`; afterwards
    /// `result()` gives `InvalidState`. Errors as `result()`.
    pub fn take_result(&self) -> Result<T, LoopError> {
        self.inner.completion.take_result()
    }

    /// The error: `Ok(None)` if the future succeeded, `Ok(Some(e))` if it
    /// failed, `Err` with `Cancelled` if it was cancelled and with
    /// `InvalidState` if it is not done.
    #[doc(alias = "Future.exception")]
    pub fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        self.inner.completion.exception()
    }

    /// Adds `callback`, to be scheduled with `call_soon` (never run
    /// synchronously) when the future is done, after the callbacks added
    /// before it. If the future is already done, it is scheduled now.
    #[doc(alias = "Future.add_done_callback")]
    pub fn add_done_callback(&self, callback: impl FnOnce(&Future<T, L>) + 'static) -> CallbackId {
        self.inner
            .completion
            .add_done_callback(&self.inner.lp, self, Box::new(callback))
    }

    /// Removes the callback `id` from the callbacks not yet scheduled;
    /// returns how many were removed (0 or 1).
    #[doc(alias = "Future.remove_done_callback")]
    pub fn remove_done_callback(&self, id: CallbackId) -> usize {
        self.inner.completion.remove_done_callback(id)
    }

    /// The loop this future is bound to.
    #[doc(alias = "Future.get_loop")]
    pub fn get_loop(&self) -> L {
        self.inner.lp.clone()
    }

    /// Whether two handles are the same future.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// `Ready` once the future is done, registering `cx`'s waker until then;
    /// moves nothing out and observes no cancellation (for combinators).
    pub fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.completion.poll_done(cx)
    }

    /// Runs `f` on the outcome (`None` while pending or once moved out).
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&Result<T, LoopError>>) -> R) -> R {
        self.inner.completion.peek(f)
    }
}

/// Awaiting a future moves its value out, or gives its error. When the task
/// awaiting it is cancelled, the future is cancelled with the same message
/// (asyncio cancels the task's `_fut_waiter`) and the await gives the
/// delivered `Cancelled` error; a future already done keeps its value and
/// the await still gives the error (asyncio's `_must_cancel`). See the
/// [cancellation rule](crate::task#cancellation). Awaiting a pending future
/// of another loop from a task is an `InvalidState` error.
impl<T: 'static, L: LoopRef> std::future::Future for Future<T, L> {
    type Output = Result<T, LoopError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Err(err) = cancel::check_await(&self.inner.lp, "Future") {
            if let Some(err) = self.interrupted(err) {
                return Poll::Ready(Err(err));
            }
        }
        match self.inner.completion.poll_take(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(failed(e))),
            other => other,
        }
    }
}

impl<T: 'static, L: LoopRef> Future<T, L> {
    /// `check_await` said no: the error to return now, if any.
    #[cold]
    fn interrupted(&self, err: LoopError) -> Option<LoopError> {
        if err.kind() == ErrorKind::Cancelled {
            self.cancel(Some(err.message()));
            return Some(err);
        }
        // Another loop's future: an error unless it is done (asyncio only
        // checks the loop of a future the task must wait for).
        if self.inner.completion.is_done() {
            None
        } else {
            Some(err)
        }
    }
}

/// The error an await of a failed future gives (a cancellation is watched
/// by the awaiting task: see the cancellation rule).
#[cold]
fn failed(e: LoopError) -> LoopError {
    if e.kind() == ErrorKind::Cancelled {
        cancel::observe_cancellation(e)
    } else {
        e
    }
}

impl<T, L: LoopRef> Drop for FutureInner<T, L> {
    fn drop(&mut self) {
        // asyncio logs "Future exception was never retrieved" from __del__.
        if let Some(err) = self.completion.unretrieved_error_any() {
            self.lp
                .report_error("Future exception was never retrieved", &err);
        }
    }
}

impl<T: 'static, L: LoopRef> fmt::Debug for Future<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Future {}>", self.inner.completion.state_name())
    }
}
