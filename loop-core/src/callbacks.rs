//! Scheduling callbacks: `call_soon`, `call_later`, `call_at`, `time`, and
//! the thread-safe handle.

use std::panic::Location;
use std::time::{Duration, Instant};

use crate::event_loop::EventLoop;
use crate::handle::{CallbackCell, Handle, TimerHandle};
use crate::ready_queue::Ready;
use crate::threadsafe::{Injected, LoopHandle};
use crate::LoopError;

impl EventLoop {
    /// Schedules `callback` to run in the next iteration. Callbacks run in
    /// the order they were scheduled (FIFO); one scheduled from inside a
    /// callback runs in the following iteration, never in the current one.
    ///
    /// Returns a [`Handle`] to cancel it. Errors with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) on a closed loop.
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use std::{cell::RefCell, rc::Rc};
    /// let lp = EventLoop::new().unwrap();
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// for i in 0..3 {
    ///     let log = log.clone();
    ///     lp.call_soon(move || log.borrow_mut().push(i)).unwrap();
    /// }
    /// let cancelled = lp.call_soon(|| unreachable!()).unwrap();
    /// cancelled.cancel();
    /// lp.stop();
    /// lp.run_forever().unwrap(); // one iteration
    /// assert_eq!(*log.borrow(), [0, 1, 2]);
    /// ```
    #[doc(alias = "loop.call_soon")]
    #[track_caller]
    #[inline]
    pub fn call_soon(&self, callback: impl FnOnce() + 'static) -> Result<Handle, LoopError> {
        self.check_open()?;
        let cell = CallbackCell::new_rc(callback, Location::caller());
        self.inner
            .ready
            .borrow_mut()
            .push(Ready::Callback(cell.clone()));
        Ok(Handle { cell })
    }

    /// Schedules `callback` to run `delay` from now (loop time). It never
    /// runs early; timers due at the same time run in scheduling order.
    ///
    /// A delay so large that the deadline cannot be represented (such as
    /// `Duration::MAX`) makes a timer that is never due, as asyncio's
    /// `call_later(math.inf, ...)`: its callback is kept until the timer is
    /// cancelled or the loop closes, it never wakes the loop, and its
    /// [`when`](TimerHandle::when) is the latest instant the clock can
    /// represent.
    #[doc(alias = "loop.call_later")]
    #[track_caller]
    pub fn call_later(
        &self,
        delay: Duration,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle, LoopError> {
        match self.time().checked_add(delay) {
            Some(when) => self.call_at(when, callback),
            None => self.call_never(callback),
        }
    }

    /// Schedules `callback` to run at `when`, a point of [`time`](Self::time).
    /// A `when` in the past runs in the next iteration.
    #[doc(alias = "loop.call_at")]
    #[track_caller]
    pub fn call_at(
        &self,
        when: Instant,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle, LoopError> {
        self.schedule_timer(when, false, callback)
    }

    /// A timer that is never due (see [`call_later`](Self::call_later)).
    #[track_caller]
    fn call_never(&self, callback: impl FnOnce() + 'static) -> Result<TimerHandle, LoopError> {
        let when = crate::clock::latest_instant(self.time());
        self.schedule_timer(when, true, callback)
    }

    /// `call_at`, or (`never`) a timer that is never due.
    #[track_caller]
    #[inline(always)]
    fn schedule_timer(
        &self,
        when: Instant,
        never: bool,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle, LoopError> {
        self.check_open()?;
        let slot =
            self.inner
                .timers
                .borrow_mut()
                .schedule(when, never, Location::caller(), callback);
        Ok(TimerHandle { slot })
    }

    /// The loop's clock: monotonic, the time base of [`call_at`](Self::call_at).
    /// It is [`Instant::now`] unless the loop was built with a
    /// [`VirtualClock`](crate::VirtualClock).
    #[doc(alias = "loop.time")]
    pub fn time(&self) -> Instant {
        self.inner.clock.now()
    }

    /// The `Send + Sync` handle for scheduling callbacks and stopping the
    /// loop from other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// Schedules `callback` through the thread-safe queue and wakes the loop;
    /// the same as `self.handle().call_soon_threadsafe(callback)`. From the
    /// loop thread, prefer [`call_soon`](Self::call_soon).
    #[doc(alias = "loop.call_soon_threadsafe")]
    pub fn call_soon_threadsafe(
        &self,
        callback: impl FnOnce() + Send + 'static,
    ) -> Result<(), LoopError> {
        self.handle().call_soon_threadsafe(callback)
    }

    /// Queues a task runnable from a waker (the scheduler of `tasks.rs`).
    pub(crate) fn inject_task(
        shared: &crate::threadsafe::Shared,
        runnable: crate::tasks::Runnable,
    ) {
        match shared.inject(Injected::Task(runnable)) {
            Ok(()) => {}
            Err((_, Some(item))) => shared.discard(item),
            // Queued, but the loop may sleep on: a waker cannot return the
            // error, so the loop reports it (LESSONS 21).
            Err((err, None)) => shared.record_wake_failure(err),
        }
    }
}
