//! [`Sleep`]: asyncio's `asyncio.sleep`, as a future on the loop's timers.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::event_loop::EventLoop;
use crate::handle::TimerHandle;
use crate::LoopError;

impl EventLoop {
    /// A future that completes `delay` from now (loop time): asyncio's
    /// `asyncio.sleep`, on this loop.
    ///
    /// A delay too large for the clock (`Duration::MAX`) waits forever, as
    /// asyncio's `sleep(math.inf)`: until the awaiting task is cancelled.
    ///
    /// When the task awaiting it is cancelled, its timer is cancelled and it
    /// gives the delivered `Cancelled` error (see the
    /// [cancellation rule](loop_futures::task#cancellation)).
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use std::time::Duration;
    /// let lp = EventLoop::new().unwrap();
    /// let start = lp.time();
    /// let lp2 = lp.clone();
    /// lp.run_until_complete(async move { lp2.sleep(Duration::from_millis(10)).await }).unwrap().unwrap();
    /// assert!(lp.time() - start >= Duration::from_millis(10));
    /// ```
    #[doc(alias = "asyncio.sleep")]
    pub fn sleep(&self, delay: Duration) -> Sleep {
        Sleep {
            timer: Deadline::new(self, self.time().checked_add(delay)),
        }
    }
}

#[derive(Default)]
struct SleepState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// A timer on the loop that wakes its poller when `deadline` passes: what
/// [`Sleep`], `timeout` and `wait` wait with. It observes no cancellation
/// (the future around it does). Dropping it cancels the timer.
pub(crate) struct Deadline {
    lp: EventLoop,
    deadline: Option<Instant>,
    state: Rc<SleepState>,
    timer: Option<TimerHandle>,
}

impl Deadline {
    /// `deadline` `None`: beyond what the clock can represent, so never
    /// (asyncio's `inf`): it stays pending until dropped.
    pub(crate) fn new(lp: &EventLoop, deadline: Option<Instant>) -> Self {
        Deadline {
            lp: lp.clone(),
            deadline,
            state: Rc::new(SleepState::default()),
            timer: None,
        }
    }

    /// `Ready(Ok)` once the deadline passed; `Ready(Err)` when the timer
    /// cannot be scheduled (closed loop). Never ready without a deadline.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LoopError>> {
        if self.state.fired.get() {
            return Poll::Ready(Ok(()));
        }
        let Some(deadline) = self.deadline else {
            // Nothing to schedule: only the awaiting task's cancellation (or
            // a timeout around it) ends this wait.
            return Poll::Pending;
        };
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        if self.timer.is_none() {
            let state = self.state.clone();
            let timer = self.lp.call_at(deadline, move || {
                state.fired.set(true);
                let waker = state.waker.borrow_mut().take();
                if let Some(w) = waker {
                    w.wake();
                }
            });
            match timer {
                Ok(t) => self.timer = Some(t),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Pending
    }

    /// Whether the deadline passed (the timer ran).
    pub(crate) fn fired(&self) -> bool {
        self.state.fired.get()
    }

    /// Cancels the timer (it will not fire).
    pub(crate) fn cancel(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The future of [`EventLoop::sleep`]. Dropping it cancels its timer.
///
/// Resolves to `Err` when its timer cannot be scheduled (the loop is
/// closed), and with the delivered `Cancelled` error when the task awaiting it is
/// cancelled.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    timer: Deadline,
}

impl Future for Sleep {
    type Output = Result<(), LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Err(err) = loop_futures::check_await(&this.timer.lp, "sleep") {
            this.timer.cancel();
            return Poll::Ready(Err(err));
        }
        this.timer.poll_fired(cx)
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.timer.deadline)
            .field("fired", &self.timer.fired())
            .finish()
    }
}
