//! Futures on the loop: the local task spawner behind `run_until_complete`,
//! and [`Sleep`].
//!
//! Tasks are async-task's local tasks: the future need not be `Send` and is
//! polled only on the loop thread. async-task requires the schedule function
//! to be `Send + Sync` (a waker may travel to another thread), so it captures
//! only the loop's `Arc<Shared>`: a wake-up on the loop thread while the loop
//! runs pushes the runnable straight onto the ready queue (through the
//! thread-local of `running.rs`); any other wake-up goes through the
//! thread-safe queue and wakes the loop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::event_loop::EventLoop;
use crate::handle::TimerHandle;
use crate::running;
use crate::threadsafe::Shared;
use crate::LoopError;

impl EventLoop {
    /// Spawns `future` as a local task scheduled on this loop.
    pub(crate) fn spawn_local<F>(&self, future: F) -> async_task::Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let shared: Arc<Shared> = self.inner.shared.clone();
        let id = shared.id;
        let schedule = move |runnable: async_task::Runnable| {
            if let Err(runnable) = running::schedule_local(id, runnable) {
                EventLoop::inject_task(&shared, runnable);
            }
        };
        let (runnable, task) = async_task::spawn_local(future, schedule);
        // We are on the loop's thread (`EventLoop` is `!Send`): queue it directly.
        self.inner
            .ready
            .borrow_mut()
            .push(crate::ready_queue::Ready::Task(runnable));
        task
    }

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
