//! The resolver pool: a few threads, shared by the whole process, that run
//! the blocking `getaddrinfo`/`getnameinfo` calls.
//!
//! # Why its own pool
//! Name resolution must not queue behind unrelated blocking work: when it
//! shared the default executor, a saturated executor turned into "DNS
//! timeouts" (CPython issue 112169, lesson 10 of the design notes). So DNS
//! never uses `run_in_executor`'s default executor; it goes through
//! [`EventLoop::run_in_executor_on`] with this pool, which keeps the loop's
//! panic catching and result delivery.
//!
//! # Threads
//! Threads start lazily, one per queued job while fewer than
//! [`MAX_THREADS`] exist, and retire after [`IDLE_TIMEOUT`] without work. A
//! lookup cannot be interrupted once it runs, so dropping a DNS future does
//! not stop its thread; instead a job whose future was dropped before the job
//! started is skipped, and the thread count never exceeds [`MAX_THREADS`]
//! however many futures are dropped. Nothing leaks: every thread either works
//! or retires.

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use loop_core::{EventLoop, Executor, Job};

/// At most this many lookups run at once, process-wide.
pub(crate) const MAX_THREADS: usize = 4;

/// A resolver thread with nothing to do for this long exits.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The name resolver threads carry (visible in `/proc/self/task/*/comm`).
pub(crate) const THREAD_NAME: &str = "aioloop-dns";

struct State {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

static POOL: Pool = Pool {
    state: Mutex::new(State {
        queue: VecDeque::new(),
        idle: 0,
        threads: 0,
    }),
    work: Condvar::new(),
};

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&'static self, job: Job) {
        let mut st = self.lock();
        st.queue.push_back(job);
        let spawn = st.queue.len() > st.idle && st.threads < MAX_THREADS;
        if spawn {
            st.threads += 1;
        }
        drop(st);
        self.work.notify_one();
        if !spawn {
            return;
        }
        let started = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || self.worker());
        if started.is_err() {
            let mut st = self.lock();
            st.threads -= 1;
            // With no thread at all, nothing would ever run the queue: drop
            // the jobs, which completes their futures with an error.
            let orphans: Vec<Job> = if st.threads == 0 {
                st.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            drop(st);
            drop(orphans);
        }
    }

    fn worker(&'static self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                // The loop's wrapper already catches a panicking job; this
                // keeps the thread count right even if something else panics.
                let _ = catch_unwind(AssertUnwindSafe(job));
                st = self.lock();
                continue;
            }
            st.idle += 1;
            let (guard, timeout) = self
                .work
                .wait_timeout(st, IDLE_TIMEOUT)
                .unwrap_or_else(PoisonError::into_inner);
            st = guard;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}

/// The [`Executor`] handle of the process-wide resolver pool.
#[derive(Debug, Clone, Copy)]
struct ResolverPool;

impl Executor for ResolverPool {
    fn execute(&self, job: Job) {
        POOL.submit(job);
    }
}

/// Sets the flag when dropped: the future went away (or finished).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the blocking `lookup` on the resolver pool and awaits its result on
/// `lp`. Dropping the future before the job starts skips the job.
pub(crate) async fn run<T, F>(lp: &EventLoop, lookup: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let job = lp
        .run_in_executor_on(&ResolverPool, move || {
            if flag.load(Ordering::Acquire) {
                Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the lookup was cancelled before it started",
                ))
            } else {
                lookup()
            }
        })
        .map_err(io::Error::from)?;
    let _cancel = CancelOnDrop(dropped);
    job.await.map_err(io::Error::from)?
}
