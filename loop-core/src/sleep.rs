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
            lp: self.clone(),
            deadline: self.time().checked_add(delay),
            state: Rc::new(SleepState::default()),
            timer: None,
        }
    }
}

#[derive(Default)]
struct SleepState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The future of [`EventLoop::sleep`]. Dropping it cancels its timer.
///
/// Resolves to `Err` only when its timer cannot be scheduled: the loop is
/// closed, or the delay puts the deadline beyond what the clock can hold.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    lp: EventLoop,
    deadline: Option<Instant>,
    state: Rc<SleepState>,
    timer: Option<TimerHandle>,
}

impl Future for Sleep {
    type Output = Result<(), LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.state.fired.get() {
            return Poll::Ready(Ok(()));
        }
        let Some(deadline) = this.deadline else {
            return Poll::Ready(Err(LoopError::new(
                crate::ErrorKind::InvalidArgument,
                "sleep: the delay puts the deadline beyond what the clock can represent",
            )));
        };
        *this.state.waker.borrow_mut() = Some(cx.waker().clone());
        if this.timer.is_none() {
            let state = this.state.clone();
            let timer = this.lp.call_at(deadline, move || {
                state.fired.set(true);
                let waker = state.waker.borrow_mut().take();
                if let Some(w) = waker {
                    w.wake();
                }
            });
            match timer {
                Ok(t) => this.timer = Some(t),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("fired", &self.state.fired.get())
            .finish()
    }
}
