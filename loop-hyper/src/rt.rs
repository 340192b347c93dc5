//! hyper's runtime traits on the loop: [`LoopExecutor`] (hyper's
//! `Executor`) and [`LoopTimer`] (hyper's `Timer`).
//!
//! hyper's sleeps must be `Send + Sync`, and the loop's timers are not:
//! a [`LoopSleep`] holds a [`ThreadSafeTimerHandle`] from
//! `LoopHandle::call_later_threadsafe` (loop-core's threadsafe_timer.rs),
//! a timer on the loop's own heap that any thread can cancel. A sleep
//! schedules its timer at its first poll (hyper drops it unpolled when the
//! request is already buffered), cancels it when dropped (a cancel on the
//! loop thread is counted for the heap's purge, so the per-request
//! header-read sleep does not pile up), and `Timer::reset` reuses it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use loop_core::{EventLoop, LoopHandle, ThreadSafeTimerHandle};

/// hyper's [`Executor`](hyper::rt::Executor) on the loop: each future
/// becomes a task of the loop ([`EventLoop::create_task`]). The futures
/// need not be `Send`.
///
/// hyper spawns through it for HTTP/2 (a task per stream) and for client
/// connections' background work. On a closed loop the future is dropped.
#[derive(Clone)]
pub struct LoopExecutor {
    lp: EventLoop,
}

impl LoopExecutor {
    /// An executor spawning on `lp`.
    pub fn new(lp: &EventLoop) -> LoopExecutor {
        LoopExecutor { lp: lp.clone() }
    }
}

impl fmt::Debug for LoopExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopExecutor").finish_non_exhaustive()
    }
}

impl<F> hyper::rt::Executor<F> for LoopExecutor
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        // The task runs detached (dropping its handle does not cancel it);
        // a closed loop drops the future.
        let _ = self.lp.create_task(async move {
            fut.await;
        });
    }
}

/// hyper's [`Timer`](hyper::rt::Timer) on the loop's timers: each sleep is
/// a [`LoopHandle::call_later_threadsafe`] timer, so sleeps are `Send +
/// Sync` (as hyper requires) while they run on the loop's own timer heap.
///
/// A sleep schedules its timer at its first poll (a sleep that is dropped
/// unpolled, as hyper's header-read timeout is when the request is already
/// buffered, costs no timer), and cancels it when dropped. Give it to
/// hyper's builders (`http1::Builder::timer`) to enable the header-read
/// timeout and keep-alive timers.
#[derive(Clone, Debug)]
pub struct LoopTimer {
    handle: LoopHandle,
}

impl LoopTimer {
    /// A timer on `lp`.
    pub fn new(lp: &EventLoop) -> LoopTimer {
        LoopTimer {
            handle: lp.handle(),
        }
    }

    /// A timer on the loop of `handle` (from any thread).
    pub fn from_handle(handle: LoopHandle) -> LoopTimer {
        LoopTimer { handle }
    }
}

impl hyper::rt::Timer for LoopTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LoopSleep::new(
            self.handle.clone(),
            Instant::now().checked_add(duration),
        ))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LoopSleep::new(self.handle.clone(), Some(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<LoopSleep>() {
            Some(s) => s.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// What a sleep and its loop timer share.
#[derive(Default)]
struct Wake {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Wake {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A sleep of [`LoopTimer`]: `Send + Sync`; ready at its deadline (never
/// early, by the loop's timers); its loop timer is cancelled when it is
/// dropped or reset.
pub struct LoopSleep {
    handle: LoopHandle,
    /// `None`: a deadline beyond what `Instant` can hold (never ready).
    deadline: Option<Instant>,
    wake: Arc<Wake>,
    timer: Option<ThreadSafeTimerHandle>,
}

impl fmt::Debug for LoopSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopSleep")
            .field("deadline", &self.deadline)
            .field("timer", &self.timer)
            .finish()
    }
}

impl LoopSleep {
    fn new(handle: LoopHandle, deadline: Option<Instant>) -> LoopSleep {
        LoopSleep {
            handle,
            deadline,
            wake: Arc::new(Wake::default()),
            timer: None,
        }
    }

    /// Moves the deadline: the current loop timer (if any) is cancelled and
    /// a new one is scheduled at the next poll.
    fn reset(&mut self, deadline: Instant) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
        self.deadline = Some(deadline);
        self.wake = Arc::new(Wake::default());
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.wake.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        if this.timer.is_none() {
            let now = Instant::now();
            if deadline <= now {
                return Poll::Ready(());
            }
            *this.wake.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            let wake = this.wake.clone();
            match this
                .handle
                .call_later_threadsafe(deadline - now, move || wake.fire())
            {
                Ok(t) => this.timer = Some(t),
                // A closed loop runs nothing: the sleep is over.
                Err(_) => return Poll::Ready(()),
            }
            return Poll::Pending;
        }
        let mut slot = this.wake.waker.lock().unwrap_or_else(|e| e.into_inner());
        // Fired between the check above and the lock: the waker was taken.
        if this.wake.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match &mut *slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }
}

impl hyper::rt::Sleep for LoopSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}

    #[test]
    fn sleeps_are_send_sync_fire_on_time_and_cancel_when_dropped() {
        let lp = EventLoop::new().unwrap();
        let timer = LoopTimer::new(&lp);
        let l = lp.clone();
        lp.run_until_complete(async move {
            let start = Instant::now();
            let sleep = timer.sleep(Duration::from_millis(30));
            assert_send_sync(&sleep);
            sleep.await;
            assert!(start.elapsed() >= Duration::from_millis(30));

            // Polled once (its loop timer scheduled), then dropped: the
            // timer is cancelled and its callback released.
            let mut dropped = Box::pin(LoopSleep::new(
                l.handle(),
                Some(Instant::now() + Duration::from_secs(3600)),
            ));
            assert!(futures_lite::future::poll_once(dropped.as_mut())
                .await
                .is_none());
            let wake = Arc::downgrade(&dropped.wake);
            let handle_state = dropped.timer.as_ref().map(|t| t.cancelled());
            assert_eq!(handle_state, Some(false));
            drop(dropped);
            assert!(
                wake.upgrade().is_none(),
                "the timer's callback still holds the sleep's state"
            );

            // reset moves the deadline of the same sleep.
            let mut s = timer.sleep(Duration::from_secs(3600));
            let start = Instant::now();
            timer.reset(&mut s, Instant::now() + Duration::from_millis(20));
            s.await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            assert!(start.elapsed() < Duration::from_secs(60));
        })
        .unwrap();
    }
}
