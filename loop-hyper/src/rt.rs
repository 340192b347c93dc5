//! hyper's runtime traits on the loop: [`LoopExecutor`] (hyper's
//! `Executor`) and [`LoopTimer`] (hyper's `Timer`).
//!
//! hyper's sleeps must be `Send + Sync`, and the loop's timers are not. A
//! [`LoopSleep`] schedules its wake-up at its first poll (hyper drops it
//! unpolled when the request is already buffered):
//! - polled on the loop's thread (hyper's connections on the loop always
//!   are), it joins the loop thread's sleep queue (sleep_queue.rs): one
//!   loop timer for all such sleeps, a sleep dropped or reset leaves the
//!   queue at once (O(1), its waker dropped), so the per-request
//!   header-read sleep costs no loop timer and no allocation of its own;
//! - polled on another thread, it schedules a thread-safe loop timer
//!   (`LoopHandle::call_later_threadsafe`, loop-core's
//!   threadsafe_timer.rs), cancelled when the sleep is dropped or reset; a
//!   sleep armed on the loop's thread and then polled elsewhere moves to
//!   such a timer.
//!
//! `Timer::reset` reuses the sleep's box (a new deadline, scheduled at the
//! next poll).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use loop_core::{EventLoop, LoopHandle, ThreadSafeTimerHandle};

use crate::sleep_queue::{self, Polled, SleepKey};

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

/// hyper's [`Timer`](hyper::rt::Timer) on the loop's timers: its sleeps are
/// `Send + Sync` (as hyper requires) and wake on the loop's own
/// timers (see [`LoopSleep`]).
///
/// A sleep schedules its wake-up at its first poll (a sleep that is
/// dropped unpolled, as hyper's header-read timeout is when the request is
/// already buffered, costs nothing), and takes it back when dropped. Give it to
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

/// What a sleep and its thread-safe loop timer share (a sleep polled off
/// the loop's thread).
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

/// Where a sleep's wake-up is scheduled.
enum Armed {
    /// Not yet polled (or reset): nothing scheduled.
    No,
    /// In the loop thread's sleep queue (sleep_queue.rs).
    Local(SleepKey),
    /// A thread-safe loop timer (polled off the loop's thread).
    Remote {
        wake: Arc<Wake>,
        timer: ThreadSafeTimerHandle,
    },
    /// The deadline passed.
    Fired,
}

/// A sleep of [`LoopTimer`]: `Send + Sync`; ready at its deadline (never
/// early, by the loop's clock); dropping or resetting it takes it out of
/// the loop's timers and drops its waker.
///
/// Polled on the loop's thread (as hyper's connections on the loop are), a
/// sleep joins the loop's sleep queue: one loop timer serves all of them,
/// and a sleep dropped before its deadline costs no timer of its own (the
/// queue's timer, if that sleep armed it, lapses at its deadline and runs
/// nothing). Polled on another thread, it schedules a thread-safe loop
/// timer ([`LoopHandle::call_later_threadsafe`]), cancelled when dropped.
pub struct LoopSleep {
    handle: LoopHandle,
    /// `None`: a deadline beyond what `Instant` can hold (never ready).
    deadline: Option<Instant>,
    armed: Armed,
}

impl fmt::Debug for LoopSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let armed = match &self.armed {
            Armed::No => "no",
            Armed::Local(_) => "loop thread",
            Armed::Remote { .. } => "thread-safe timer",
            Armed::Fired => "fired",
        };
        f.debug_struct("LoopSleep")
            .field("deadline", &self.deadline)
            .field("armed", &armed)
            .finish()
    }
}

impl LoopSleep {
    fn new(handle: LoopHandle, deadline: Option<Instant>) -> LoopSleep {
        LoopSleep {
            handle,
            deadline,
            armed: Armed::No,
        }
    }

    /// Moves the deadline: what was scheduled is taken back, and the new
    /// deadline is scheduled at the next poll.
    fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = Some(deadline);
    }

    /// Takes back what was scheduled (from any thread).
    fn disarm(&mut self) {
        match std::mem::replace(&mut self.armed, Armed::No) {
            Armed::Local(key) => {
                if !sleep_queue::disarm(key) {
                    // Off the loop's thread: the loop frees it (a closed
                    // loop dropped its queue already).
                    let _ = self.handle.call_soon_threadsafe(move || {
                        sleep_queue::disarm(key);
                    });
                }
            }
            Armed::Remote { timer, .. } => timer.cancel(),
            Armed::No | Armed::Fired => {}
        }
    }

    /// Schedules the wake-up at `deadline`: in the loop's queue when polled
    /// on the loop's thread, else a thread-safe timer.
    fn arm(&mut self, deadline: Instant, cx: &Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if deadline <= now {
            self.armed = Armed::Fired;
            return Poll::Ready(());
        }
        let delay = deadline - now;
        if let Some(lp) = self.handle.running_here() {
            // The loop's clock (maybe virtual) counts the delay, as
            // `call_later` would.
            let Some(when) = lp.time().checked_add(delay) else {
                // Beyond the clock: never due.
                return Poll::Pending;
            };
            return match sleep_queue::arm(&lp, when, cx.waker()) {
                Ok(key) => {
                    self.armed = Armed::Local(key);
                    Poll::Pending
                }
                // A closed loop runs nothing: the sleep is over.
                Err(()) => {
                    self.armed = Armed::Fired;
                    Poll::Ready(())
                }
            };
        }
        let wake = Arc::new(Wake::default());
        *wake.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        let w = wake.clone();
        match self.handle.call_later_threadsafe(delay, move || w.fire()) {
            Ok(timer) => {
                self.armed = Armed::Remote { wake, timer };
                Poll::Pending
            }
            Err(_) => {
                self.armed = Armed::Fired;
                Poll::Ready(())
            }
        }
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        match &this.armed {
            Armed::Fired => Poll::Ready(()),
            Armed::No => this.arm(deadline, cx),
            Armed::Local(key) => match sleep_queue::poll(*key, cx.waker()) {
                Polled::Fired => {
                    this.armed = Armed::Fired;
                    Poll::Ready(())
                }
                Polled::Pending => Poll::Pending,
                Polled::Elsewhere => {
                    // Moved off the loop's thread (a thread-safe timer takes
                    // over, the deadline stays), or its loop closed.
                    this.disarm();
                    this.arm(deadline, cx)
                }
            },
            Armed::Remote { wake, .. } => {
                if wake.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                let mut slot = wake.waker.lock().unwrap_or_else(|e| e.into_inner());
                // Fired between the check above and the lock: the waker was taken.
                if wake.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                match &mut *slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    other => *other = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl hyper::rt::Sleep for LoopSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sleep_queue;
    use futures_lite::future::poll_once;
    use hyper::rt::Timer;
    use loop_core::VirtualClock;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}

    /// A waker that counts its wake-ups; its `Arc`'s strong count tells
    /// whether a sleep still holds it.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Runs `test` on a new loop, with a timer on that loop.
    fn with_timer<F: Future<Output = ()> + 'static>(test: impl FnOnce(EventLoop, LoopTimer) -> F) {
        let lp = EventLoop::new().unwrap();
        let timer = LoopTimer::new(&lp);
        lp.run_until_complete(test(lp.clone(), timer)).unwrap();
    }

    fn far() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(3600))
    }

    #[test]
    fn sleeps_are_send_sync_fire_on_time_and_release_their_waker_when_dropped() {
        with_timer(|l, timer| async move {
            let start = Instant::now();
            let sleep = timer.sleep(Duration::from_millis(30));
            assert_send_sync(&sleep);
            sleep.await;
            assert!(start.elapsed() >= Duration::from_millis(30));

            // Polled once (scheduled), then dropped: its waker is dropped
            // at once, nothing of the sleep is left scheduled.
            let w = Arc::new(Counting::default());
            let waker = Waker::from(w.clone());
            let mut dropped = Box::pin(LoopSleep::new(l.handle(), far()));
            let mut cx = Context::from_waker(&waker);
            assert!(dropped.as_mut().poll(&mut cx).is_pending());
            assert_eq!(Arc::strong_count(&w), 3, "the sleep holds its waker");
            drop(dropped);
            assert_eq!(Arc::strong_count(&w), 2, "the dropped sleep kept its waker");
            assert_eq!(sleep_queue::stats(&l).map(|s| s.1), Some(0));

            // reset moves the deadline of the same sleep.
            let mut s = timer.sleep(Duration::from_secs(3600));
            let start = Instant::now();
            timer.reset(&mut s, Instant::now() + Duration::from_millis(20));
            s.await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            assert!(start.elapsed() < Duration::from_secs(60));
        });
    }

    #[test]
    fn per_request_sleeps_share_one_loop_timer_and_leave_no_garbage() {
        // hyper's header-read timeout on a kept-alive connection: a sleep
        // made, polled once and dropped per request.
        with_timer(|l, timer| async move {
            let mut most = 0;
            for _ in 0..10_000 {
                let mut s = timer.sleep(Duration::from_secs(30));
                assert!(poll_once(s.as_mut()).await.is_none());
                drop(s);
                let (heap, in_use, _) = sleep_queue::stats(&l).unwrap();
                assert_eq!(in_use, 0);
                most = most.max(heap);
            }
            let (_, _, timers) = sleep_queue::stats(&l).unwrap();
            assert_eq!(timers, 1, "a loop timer per sleep");
            assert!(most <= sleep_queue::MIN_PURGE + 2, "heap grew to {most}");
        });
    }

    #[test]
    fn sleeps_wake_in_deadline_order_on_the_loops_clock() {
        // A virtual clock: the loop jumps to each deadline instead of waiting.
        let clock = VirtualClock::new();
        let lp = EventLoop::builder()
            .virtual_clock(clock.clone())
            .build()
            .unwrap();
        let timer = LoopTimer::new(&lp);
        let l = lp.clone();
        lp.run_until_complete(async move {
            let start = l.time();
            let woke = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Out of order, a tie, and far apart (hours).
            for (i, secs) in [(0, 7200u64), (1, 5), (2, 3600), (3, 5), (4, 60)] {
                let s = timer.sleep(Duration::from_secs(secs));
                let (woke, l2) = (woke.clone(), l.clone());
                tasks.push(l.create_task(async move {
                    s.await;
                    // The deadline is hyper's (real time) until the first
                    // poll converts what is left of it to the loop's clock:
                    // the real time in between is all it may be early by.
                    let at = l2.time() - start;
                    let slack = Duration::from_secs(30);
                    assert!(
                        at + slack >= Duration::from_secs(secs),
                        "sleep {i} woke at {at:?}"
                    );
                    woke.borrow_mut().push(i);
                }));
            }
            // One dropped before its deadline (it armed the queue's timer).
            let mut early = timer.sleep(Duration::from_secs(1));
            assert!(poll_once(early.as_mut()).await.is_none());
            drop(early);
            for t in tasks {
                t.unwrap().await.unwrap();
            }
            let order = woke.borrow().clone();
            assert!(
                order == [1, 3, 4, 2, 0] || order == [3, 1, 4, 2, 0],
                "{order:?}"
            );
            // Nothing left: the queue left the thread's table.
            assert!(sleep_queue::stats(&l).is_none());
        })
        .unwrap();
    }

    #[test]
    fn a_sleep_armed_on_the_loop_thread_can_be_polled_and_dropped_elsewhere() {
        with_timer(|l, timer| async move {
            // Armed here, awaited on another thread: a thread-safe timer
            // takes over and it still fires.
            let mut s = timer.sleep(Duration::from_millis(20));
            assert!(poll_once(s.as_mut()).await.is_none());
            let start = Instant::now();
            let job = l.run_in_executor(move || futures_lite::future::block_on(s));
            job.unwrap().await.unwrap();
            assert!(start.elapsed() < Duration::from_secs(60));

            // Armed here, dropped on another thread: the loop frees its
            // place (and its waker) when the disarm arrives.
            let w = Arc::new(Counting::default());
            let waker = Waker::from(w.clone());
            let mut s = timer.sleep(Duration::from_secs(3600));
            assert!(s
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            drop(waker);
            assert_eq!(Arc::strong_count(&w), 2);
            l.run_in_executor(move || drop(s)).unwrap().await.unwrap();
            for _ in 0..100 {
                if Arc::strong_count(&w) == 1 {
                    break;
                }
                futures_lite::future::yield_now().await;
            }
            assert_eq!(Arc::strong_count(&w), 1, "the queue kept the waker");
            assert_eq!(sleep_queue::stats(&l).map(|s| s.1), Some(0));
            assert_eq!(w.0.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn each_loop_on_a_thread_has_its_own_queue() {
        // A loop closed with a sleep still armed, then another loop on the
        // same thread: its sleeps use its own queue and fire.
        let first = EventLoop::new().unwrap();
        let timer = LoopTimer::new(&first);
        let pending = first
            .run_until_complete(async move {
                let mut s = timer.sleep(Duration::from_secs(3600));
                assert!(poll_once(s.as_mut()).await.is_none());
                // (In an Option: the block hands the sleep out, unawaited.)
                Some(s)
            })
            .unwrap()
            .unwrap();
        first.close().unwrap();
        let second = EventLoop::new().unwrap();
        let timer = LoopTimer::new(&second);
        let l = second.clone();
        second
            .run_until_complete(async move {
                let start = Instant::now();
                timer.sleep(Duration::from_millis(10)).await;
                assert!(start.elapsed() >= Duration::from_millis(10));
                // The closed loop's sleep is over (its loop runs nothing).
                pending.await;
                assert!(sleep_queue::stats(&l).is_none());
            })
            .unwrap();
    }
}
