//! [`timeout`], [`timeout_at`] and [`wait_for`]: asyncio's `asyncio.timeout`
//! scope and `asyncio.wait_for`, as one future, [`Timeout`].
//!
//! # How it works
//! The wrapped future is polled in the awaiting task, not in a task of its
//! own. When the deadline passes, the future is polled once more as it is
//! (a result ready at the same moment wins, as in asyncio 3.12), then with a
//! cancellation delivered to it (`loop_futures::deliver_cancellation`), the
//! way asyncio's timeout cancels the task it runs in: the aioloop awaitable
//! it is suspended on is cancelled and gives it a `Cancelled` error. If the
//! future propagates that error, the timeout ends with an
//! [`ErrorKind::Timeout`] error (asyncio's `TimeoutError`); if it handles
//! it and returns something, that is the outcome. A future suspended on
//! something that cannot observe the cancellation is dropped, and the
//! timeout ends with the error at once. A cancellation of the awaiting task
//! itself passes through to the future and wins over the timeout.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use loop_futures::{cancellation_pending, deliver_cancellation, WeakLoopError};

use crate::sleep::Deadline;
use crate::{running, ErrorKind, LoopError};

/// Bounds `fut` to `delay` from its first poll (asyncio's
/// `async with asyncio.timeout(delay): await ...`): its output, or an
/// [`ErrorKind::Timeout`] error once `delay` passed, after the work was
/// cancelled (see the module docs for how).
///
/// `fut` is any future whose output is a `Result` whose error can hold a
/// `LoopError` (a [`Future`](crate::Future), a [`Task`](crate::Task),
/// `sleep`, an `async` block of awaits...). Awaited in a task of a running
/// loop; polled elsewhere it fails ("no running event loop").
///
/// ```
/// use loop_core::{run, timeout, ErrorKind, LoopError};
/// use std::time::Duration;
/// let kind = run(|lp| async move {
///     let slow = lp.sleep(Duration::from_secs(3600));
///     let r = timeout(Duration::from_millis(5), slow).await;
///     Ok::<_, LoopError>(r.unwrap_err().kind())
/// })
/// .unwrap();
/// assert_eq!(kind, ErrorKind::Timeout);
/// ```
#[doc(alias = "asyncio.timeout")]
pub fn timeout<F, T, E>(delay: Duration, fut: F) -> Timeout<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<LoopError>,
{
    Timeout::new(When::After(delay), fut)
}

/// [`timeout`] with a deadline in loop time ([`EventLoop::time`](crate::EventLoop::time);
/// asyncio's `asyncio.timeout_at`).
#[doc(alias = "asyncio.timeout_at")]
pub fn timeout_at<F, T, E>(deadline: Instant, fut: F) -> Timeout<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<LoopError>,
{
    Timeout::new(When::At(deadline), fut)
}

/// Waits for `fut` for at most `timeout` (asyncio's `asyncio.wait_for`):
/// [`timeout`] with asyncio's argument order. On expiry `fut` is cancelled
/// and the error is [`ErrorKind::Timeout`]; a `fut` that handles the
/// cancellation and returns a value gives that value (asyncio 3.12).
#[doc(alias = "asyncio.wait_for")]
pub fn wait_for<F, T, E>(fut: F, timeout: Duration) -> Timeout<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<LoopError>,
{
    Timeout::new(When::After(timeout), fut)
}

enum When {
    After(Duration),
    At(Instant),
}

/// The future of [`timeout`], [`timeout_at`] and [`wait_for`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    fut: Option<Pin<Box<F>>>,
    when: When,
    timer: Option<Deadline>,
    /// The cancellation delivered at expiry, while the future runs it.
    delivered: Option<WeakLoopError>,
}

impl<F> Timeout<F> {
    fn new(when: When, fut: F) -> Self {
        Timeout {
            fut: Some(Box::pin(fut)),
            when,
            timer: None,
            delivered: None,
        }
    }

    /// Whether the deadline passed (asyncio's `Timeout.expired()`).
    pub fn expired(&self) -> bool {
        self.timer.as_ref().is_some_and(Deadline::fired)
    }

    fn end<T, E: From<LoopError>>(&mut self, out: Option<Result<T, E>>) -> Poll<Result<T, E>> {
        if let Some(mut t) = self.timer.take() {
            t.cancel();
        }
        let fut = self.fut.take();
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(fut)));
        let propagated = self.delivered.take().is_some_and(|w| w.is_alive());
        match out {
            Some(out) if !propagated && dropped.is_ok() => Poll::Ready(out),
            _ => Poll::Ready(Err(LoopError::new(ErrorKind::Timeout, "timed out").into())),
        }
    }
}

impl<F, T, E> Future for Timeout<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<LoopError>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(Err(LoopError::new(
                ErrorKind::InvalidState,
                "timeout future polled after it completed",
            )
            .into()));
        };
        if this.delivered.is_some() {
            // Expired: the future is running its cancellation.
            return match fut.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(out) => this.end(Some(out)),
            };
        }
        // Not expired as far as the future knows: it goes first, so that a
        // result ready at the deadline wins.
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return this.end(Some(out));
        }
        if this.timer.is_none() {
            let Some(lp) = running::running_loop() else {
                this.fut = None;
                return Poll::Ready(Err(LoopError::new(
                    ErrorKind::InvalidState,
                    "no running event loop: timeout() and wait_for() are awaited in a task",
                )
                .into()));
            };
            let deadline = match this.when {
                When::After(d) => lp.time().checked_add(d),
                When::At(at) => Some(at),
            };
            this.timer = Some(Deadline::new(&lp, deadline));
        }
        let timer = this.timer.as_mut().expect("set above");
        match timer.poll_fired(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => {
                this.fut = None;
                return Poll::Ready(Err(e.into()));
            }
            Poll::Ready(Ok(())) => {}
        }
        if cancellation_pending() {
            // The awaiting task's own cancellation was not taken by the
            // future: the task drops it (the fallback rule).
            return Poll::Pending;
        }
        let err = LoopError::cancelled("");
        let weak = err.downgrade();
        let fut = this.fut.as_mut().expect("checked above");
        let (polled, left) = deliver_cancellation(err, || fut.as_mut().poll(cx));
        if left.is_some() {
            // Suspended on something that cannot observe it: drop it.
            return this.end::<T, E>(None);
        }
        this.delivered = Some(weak);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(out) => this.end(Some(out)),
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("expired", &self.expired())
            .field("done", &self.fut.is_none())
            .finish()
    }
}
