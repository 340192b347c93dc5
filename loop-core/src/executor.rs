//! Running blocking work off the loop: `run_in_executor` and friends.
//!
//! # Design
//! An [`Executor`] runs boxed jobs on other threads. The default one hands
//! them to the `blocking` crate's thread pool; [`set_default_executor`]
//! installs another. Whatever the executor, the loop wraps each job so that:
//! - a panic in the job is caught on the worker thread and delivered as the
//!   future's [`ErrorKind::Panicked`] error (it never unwinds into a pool);
//! - the result travels back through a shared slot, and the worker wakes the
//!   awaiting task, whose wake-up enters the loop through its thread-safe
//!   queue: the result is always consumed on the loop thread;
//! - jobs in flight are counted, so [`shutdown_default_executor`] can wait for
//!   them, up to a timeout (`blocking` has no join of its own); an executor
//!   with threads to join hands over a blocking join ([`Executor::join`]),
//!   which runs on a thread of its own, so that the timeout bounds it too;
//! - a job an executor drops without running completes its future with an
//!   [`ErrorKind::InvalidState`] error instead of leaving it pending forever.
//!
//! Dropping the future does not stop a job that already started (nothing can
//! stop a thread safely); the result is then discarded.
//!
//! [`set_default_executor`]: EventLoop::set_default_executor
//! [`shutdown_default_executor`]: EventLoop::shutdown_default_executor

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::event_loop::EventLoop;
use crate::{ErrorKind, LoopError, WaiterList};

/// A unit of blocking work handed to an [`Executor`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Something that runs blocking jobs on other threads: asyncio's
/// `concurrent.futures.Executor`, reduced to what the loop needs.
///
/// ```
/// use loop_core::{EventLoop, Executor, Job};
/// /// One new thread per job.
/// struct ThreadPerJob;
/// impl Executor for ThreadPerJob {
///     fn execute(&self, job: Job) {
///         std::thread::spawn(job);
///     }
/// }
/// let lp = EventLoop::new().unwrap();
/// lp.set_default_executor(ThreadPerJob);
/// let fut = lp.run_in_executor(|| 2 + 2).unwrap();
/// assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 4);
/// ```
#[doc(alias = "concurrent.futures.Executor")]
pub trait Executor {
    /// Runs `job` soon, on some thread other than the loop's (running it
    /// inline would block the loop). Dropping the job instead of running it
    /// completes its future with an error.
    fn execute(&self, job: Job);

    /// Tells the executor to stop (asyncio's `shutdown(wait=False)`): jobs
    /// already handed over still run. It runs on the loop thread, so it must
    /// not block. Called once by [`EventLoop::shutdown_default_executor`]
    /// after the loop's jobs finished (or its timeout expired), and by
    /// [`EventLoop::close`]. The default does nothing.
    fn shutdown(&self) {}

    /// The wait for the executor's own threads to end, if it has any to
    /// join (the `wait=True` half of asyncio's `shutdown`).
    /// [`EventLoop::shutdown_default_executor`] calls it after
    /// [`shutdown`](Self::shutdown) and runs the returned job on a thread of
    /// its own, waiting for it only up to its timeout, as asyncio runs
    /// `executor.shutdown(wait=True)` on a new thread. The default has
    /// nothing to join.
    fn join(&self) -> Option<Job> {
        None
    }
}

/// The default executor: the `blocking` crate's shared thread pool (threads
/// start on demand, up to `BLOCKING_MAX_THREADS`, 500 by default, and retire
/// when idle).
#[derive(Debug, Default, Clone, Copy)]
pub struct BlockingPool;

impl Executor for BlockingPool {
    fn execute(&self, job: Job) {
        blocking::unblock(job).detach();
    }
}

/// Counts jobs in flight and wakes whoever waits for zero.
#[derive(Default)]
struct JobCounter {
    in_flight: AtomicUsize,
    waiters: Mutex<WaiterList>,
}

impl JobCounter {
    /// Resolves once nothing is in flight.
    fn all_done(self: Arc<Self>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .register(cx.waker());
            // Re-check: the last job may have finished before we registered.
            if self.in_flight.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waiters = self
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            waiters.wake_all();
        }
    }
}

#[derive(Default)]
pub(crate) struct ExecutorState {
    custom: RefCell<Option<Rc<dyn Executor>>>,
    shut_down: Cell<bool>,
    jobs: Arc<JobCounter>,
}

enum SlotState<T> {
    Waiting(Option<Waker>),
    Done(Result<T, LoopError>),
    Taken,
    /// The awaiting task was cancelled: a job not started yet is skipped,
    /// a result is discarded.
    Cancelled,
}

struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

impl<T> Slot<T> {
    fn complete(&self, result: Result<T, LoopError>) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *state, SlotState::Done(result)) {
                SlotState::Waiting(w) => w,
                // Already done (cannot happen), taken or cancelled: keep it
                // as it was.
                other => {
                    *state = other;
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Completes the job's future with an error if the job is dropped unrun, and
/// counts the job out of the in-flight total either way.
struct JobGuard<T> {
    slot: Option<Arc<Slot<T>>>,
    counter: Arc<JobCounter>,
}

impl<T> Drop for JobGuard<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.complete(Err(LoopError::new(
                ErrorKind::InvalidState,
                "the executor dropped the job without running it",
            )));
        }
        self.counter.finished();
    }
}

/// The future of [`EventLoop::run_in_executor`]: resolves to the job's
/// output, or to an error if the job panicked or was dropped unrun.
///
/// When the task awaiting it is cancelled, it gives the delivered
/// `Cancelled` error: a job that has not started yet is then skipped, and
/// the result of one already running is discarded (asyncio cancels the
/// `concurrent.futures.Future`, which stops only a job not yet started).
#[must_use = "futures do nothing unless awaited"]
pub struct ExecutorFuture<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Future for ExecutorFuture<T> {
    type Output = Result<T, LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(err) = loop_futures::take_cancellation() {
            let old = std::mem::replace(&mut *state, SlotState::Cancelled);
            drop(state);
            drop(old);
            return Poll::Ready(Err(err));
        }
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Done(result) => Poll::Ready(result),
            SlotState::Waiting(_) => {
                *state = SlotState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            SlotState::Taken | SlotState::Cancelled => Poll::Ready(Err(LoopError::new(
                ErrorKind::InvalidState,
                "run_in_executor future polled after completion",
            ))),
        }
    }
}

impl<T> std::fmt::Debug for ExecutorFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutorFuture")
    }
}

impl EventLoop {
    /// Runs `f` on the default executor and returns a future of its output,
    /// to await on this loop.
    ///
    /// The future resolves to `Err` with [`ErrorKind::Panicked`] if `f`
    /// panicked. Errors at once with [`ErrorKind::Closed`] on a closed loop,
    /// and with [`ErrorKind::InvalidState`] after
    /// [`shutdown_default_executor`](Self::shutdown_default_executor).
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// let lp = EventLoop::new().unwrap();
    /// let job = lp.run_in_executor(|| std::thread::current().id()).unwrap();
    /// let worker = lp.run_until_complete(job).unwrap().unwrap();
    /// assert_ne!(worker, std::thread::current().id());
    /// ```
    #[doc(alias = "loop.run_in_executor")]
    pub fn run_in_executor<T, F>(&self, f: F) -> Result<ExecutorFuture<T>, LoopError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.check_open()?;
        let state = &self.inner.executor;
        if state.shut_down.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Executor shutdown has been called",
            ));
        }
        let executor = state.custom.borrow().clone();
        let job = self.wrap_job(f);
        match executor {
            Some(e) => e.execute(job.1),
            None => BlockingPool.execute(job.1),
        }
        Ok(job.0)
    }

    /// Runs `f` on `executor` instead of the default one (asyncio's
    /// `run_in_executor(executor, func)` with an explicit executor).
    #[doc(alias = "run_in_executor")]
    pub fn run_in_executor_on<T, F>(
        &self,
        executor: &dyn Executor,
        f: F,
    ) -> Result<ExecutorFuture<T>, LoopError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.check_open()?;
        let (fut, job) = self.wrap_job(f);
        executor.execute(job);
        Ok(fut)
    }

    fn wrap_job<T, F>(&self, f: F) -> (ExecutorFuture<T>, Job)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting(None)),
        });
        let counter = self.inner.executor.jobs.clone();
        counter.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut guard = JobGuard {
            slot: Some(slot.clone()),
            counter,
        };
        let job: Job = Box::new(move || {
            let cancelled = guard.slot.as_ref().is_some_and(|s| {
                matches!(
                    *s.state.lock().unwrap_or_else(|e| e.into_inner()),
                    SlotState::Cancelled
                )
            });
            if cancelled {
                // Nobody waits for it any more: skip it (the guard counts it
                // out; completing a cancelled slot changes nothing).
                drop(f);
                drop(guard);
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(f))
                .map_err(|p| LoopError::panicked("the run_in_executor job", p));
            if let Some(slot) = guard.slot.take() {
                slot.complete(result);
            }
            drop(guard);
        });
        (ExecutorFuture { slot }, job)
    }

    /// Replaces the executor that [`run_in_executor`](Self::run_in_executor)
    /// uses. Jobs already running on the old one are still counted by
    /// `shutdown_default_executor`.
    #[doc(alias = "loop.set_default_executor")]
    pub fn set_default_executor(&self, executor: impl Executor + 'static) {
        let old = self.inner.executor.custom.replace(Some(Rc::new(executor)));
        drop(old);
    }

    /// Number of `run_in_executor` jobs of this loop that have not finished.
    pub fn executor_jobs_in_flight(&self) -> usize {
        self.inner.executor.jobs.in_flight.load(Ordering::Acquire)
    }

    /// Refuses further `run_in_executor` calls, waits until every job of
    /// this loop has finished, shuts the executor down, and waits for its
    /// threads to end ([`Executor::join`], run on a thread of its own): all
    /// of it up to `timeout` (`None`: no limit).
    ///
    /// When the timeout expires first it returns all the same, as asyncio
    /// does, after logging asyncio's warning ("The executor did not
    /// finishing joining its threads within {timeout} seconds.", through
    /// [`debug::warn`](crate::debug::warn)) and telling the executor to stop.
    /// The jobs and threads still running go on (a thread cannot be stopped
    /// safely). Await it on this loop.
    #[doc(alias = "loop.shutdown_default_executor")]
    pub fn shutdown_default_executor(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<(), LoopError>> + 'static {
        let lp = self.clone();
        async move {
            lp.check_open()?;
            lp.inner.executor.shut_down.set(true);
            let executor = lp.inner.executor.custom.borrow().clone();
            let jobs = lp.inner.executor.jobs.clone();
            let stopped = Cell::new(false);
            let stop = || {
                if !stopped.replace(true) {
                    if let Some(e) = &executor {
                        e.shutdown();
                    }
                }
            };
            let all_done = async {
                jobs.all_done().await;
                stop();
                let Some(join) = executor.as_ref().and_then(|e| e.join()) else {
                    return Ok(());
                };
                let joined = Arc::new(JobCounter::default());
                joined.in_flight.store(1, Ordering::Release);
                let j = joined.clone();
                std::thread::Builder::new()
                    .name("aioloop-executor-join".into())
                    .spawn(move || {
                        let _ = catch_unwind(AssertUnwindSafe(join));
                        j.finished();
                    })
                    .map_err(|e| LoopError::io("starting the executor's join thread", e))?;
                joined.all_done().await;
                Ok(())
            };
            let finished = match timeout {
                None => Some(all_done.await),
                Some(t) => {
                    let sleep = lp.sleep(t);
                    futures_lite::future::or(async { Some(all_done.await) }, async {
                        let _ = sleep.await;
                        None
                    })
                    .await
                }
            };
            stop();
            match finished {
                Some(result) => result,
                None => {
                    let secs = timeout.unwrap_or_default().as_secs_f64();
                    crate::debug::warn(&format!(
                        "The executor did not finishing joining its threads within {secs:?} seconds."
                    ));
                    Ok(())
                }
            }
        }
    }

    /// `close()`'s part: refuse new jobs and shut the executor down without
    /// waiting (asyncio: `executor.shutdown(wait=False)`).
    pub(crate) fn executor_close(&self) {
        let state = &self.inner.executor;
        state.shut_down.set(true);
        let executor = state.custom.borrow_mut().take();
        if let Some(e) = executor {
            e.shutdown();
        }
    }
}
