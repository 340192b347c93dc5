//! `EventLoop`: its state, its lifecycle, and one iteration.
//!
//! # One iteration (asyncio's order, kept)
//! 1. Compute the poll timeout: zero if the ready queue is non-empty, a stop
//!    was requested, another thread queued work, or the timers have
//!    bookkeeping left (a budget per iteration, see `timers.rs`); else until
//!    the earliest live timer; else infinite.
//! 2. Poll for I/O (skipped when the timeout is zero and no fd is watched,
//!    since nothing could be reported) and queue the ready watchers; then
//!    queue what other threads sent, and report through the exception
//!    handler a wake-up that a waker on another thread could not send.
//! 3. Move every due timer to the ready queue, in deadline order.
//! 4. Run exactly the callbacks that were ready when this step began.
//!
//! # Ownership
//! The handle `new`/`build` returns owns the loop; clones do not. Dropping
//! the owner closes the loop (at the end of the run, if it runs), and
//! `close` empties every queue and releases the reactor and the wake-up fd,
//! so the cycle loop -> callback -> clone of the loop ends there: nothing
//! leaks, whatever handles the user's callbacks captured.
//!
//! # Re-entrancy
//! No `RefCell` of the loop is borrowed while user code runs: step 4 swaps
//! the ready queue out before running it, watchers and handles are `Rc`s
//! cloned out of their tables, and everything a call removes (cancelled
//! callbacks, replaced watchers, the contents of a closed loop) is dropped
//! after the borrow ends. So every callback may call any loop method: stop,
//! close (refused while running, with an error), call_soon, cancel, add or
//! remove watchers, run_in_executor... Running the loop again from inside is
//! refused with [`ErrorKind::AlreadyRunning`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::asyncgens::AsyncGenRegistry;
use crate::clock::{Clock, VirtualClock};
use crate::debug::DebugState;
use crate::exception::{ExceptionContext, ExceptionHandler};
use crate::executor::ExecutorState;
use crate::handle::{Handle, TimerHandle};
use crate::io::FdRegistry;
use crate::reactor::{Backend, Completed, Reactor, Readiness};
use crate::ready_queue::{Ready, ReadyQueue};
use crate::running;
use crate::threadsafe::{Injected, Shared};
use crate::timers::{Next, TimerQueue};
use crate::{ErrorKind, LoopError};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RunState {
    Idle,
    Running,
    Closed,
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) reactor: Reactor,
    state: Cell<RunState>,
    /// The owning handle was dropped while the loop ran: close when the run
    /// returns.
    close_after_run: Cell<bool>,
    pub(crate) stopping: Cell<bool>,
    pub(crate) ready: RefCell<ReadyQueue>,
    pub(crate) timers: RefCell<TimerQueue>,
    pub(crate) io: RefCell<FdRegistry>,
    pub(crate) clock: Clock,
    pub(crate) debug: DebugState,
    pub(crate) exception_handler: RefCell<Option<ExceptionHandler>>,
    pub(crate) executor: ExecutorState,
    pub(crate) asyncgens: RefCell<AsyncGenRegistry>,
    pub(crate) tasks: loop_futures::TaskRegistry,
    pub(crate) task_factory: RefCell<Option<Rc<dyn crate::tasks::TaskFactory>>>,
}

/// An asyncio event loop: callbacks, timers, fd readiness and futures, run on
/// the thread that owns it.
///
/// `EventLoop` is `!Send`: one loop belongs to one thread, and callbacks and
/// futures need not be `Send`. Reach it from other threads through
/// [`handle`](Self::handle).
///
/// # The owning handle
///
/// The handle that [`EventLoop::new`] and [`Builder::build`] return *owns*
/// the loop; [`clone`](Clone::clone) gives a cheap handle to the same loop
/// that does not (callbacks, timers, tasks and transports capture such
/// clones). Dropping the owning handle closes the loop if it is not closed
/// yet, as dropping tokio's `Runtime` shuts it down; if it is dropped while
/// the loop runs (moved into a callback, say), the loop closes when that
/// run returns. Closing empties every queue, so whatever the loop's
/// callbacks held (their own clones of the loop included) is released: a
/// loop dropped without [`close`](Self::close) leaks no descriptor and no
/// memory. So keep the owning handle for as long as you want the loop: a
/// clone kept after the owner is dropped sees a closed loop
/// ([`ErrorKind::Closed`]).
///
/// ```
/// use loop_core::EventLoop;
/// use std::time::Duration;
///
/// let lp = EventLoop::new()?; // the owner
/// let stopper = lp.clone(); // not an owner
/// lp.call_soon(|| println!("first"))?;
/// lp.call_later(Duration::from_millis(5), move || stopper.stop())?;
/// lp.run_forever()?;
/// let answer = lp.run_until_complete(async { 6 * 7 })?;
/// assert_eq!(answer, 42);
///
/// let clone = lp.clone();
/// drop(lp); // closes the loop
/// assert!(clone.is_closed());
/// # Ok::<(), loop_core::LoopError>(())
/// ```
pub struct EventLoop {
    pub(crate) inner: Rc<Inner>,
    /// This is the handle `new`/`build` returned: dropping it closes the loop.
    owner: bool,
}

impl Clone for EventLoop {
    /// A handle on the same loop that does not own it.
    fn clone(&self) -> Self {
        EventLoop {
            inner: self.inner.clone(),
            owner: false,
        }
    }
}

impl Drop for EventLoop {
    /// The owning handle closes the loop (at the end of the current run if
    /// it is running).
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        match self.inner.state.get() {
            RunState::Closed => {}
            RunState::Running => self.inner.close_after_run.set(true),
            RunState::Idle => {
                let _ = self.close();
            }
        }
    }
}

/// A loop handle that does not keep the loop alive
/// ([`EventLoop::downgrade`]); same thread only, as [`EventLoop`].
#[derive(Clone, Debug)]
pub struct WeakEventLoop {
    inner: std::rc::Weak<Inner>,
}

impl WeakEventLoop {
    /// The loop, if some handle on it still exists.
    pub fn upgrade(&self) -> Option<EventLoop> {
        self.inner.upgrade().map(|inner| EventLoop {
            inner,
            owner: false,
        })
    }

    /// Whether this is a handle on `lp`.
    pub fn is(&self, lp: &EventLoop) -> bool {
        std::ptr::eq(self.inner.as_ptr(), Rc::as_ptr(&lp.inner))
    }
}

/// Builds an [`EventLoop`] with a chosen backend, debug mode or clock.
///
/// ```
/// use loop_core::{Backend, EventLoop};
/// let lp = EventLoop::builder().backend(Backend::Polling).debug(true).build().unwrap();
/// assert_eq!(lp.backend(), Backend::Polling);
/// assert!(lp.get_debug());
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    backend: Option<Backend>,
    debug: Option<bool>,
    clock: Option<VirtualClock>,
}

impl Builder {
    /// Uses `backend` instead of the platform default (or `AIOLOOP_BACKEND`).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Starts in debug mode (or not), instead of following `AIOLOOP_DEBUG`.
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = Some(debug);
        self
    }

    /// Reads time from `clock` instead of the system clock (for tests).
    pub fn virtual_clock(mut self, clock: VirtualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Creates the loop: an epoll instance (or an io_uring, or a `polling`
    /// poller) and an eventfd. A [`Backend::Uring`] that the kernel does not
    /// offer falls back to the platform default; [`EventLoop::backend`] says
    /// which runs.
    pub fn build(self) -> Result<EventLoop, LoopError> {
        let backend = match self.backend {
            Some(b) => b,
            None => {
                Backend::from_env().map_err(|m| LoopError::new(ErrorKind::InvalidArgument, m))?
            }
        };
        let debug = self.debug.unwrap_or_else(crate::debug::debug_from_env);
        let (reactor, notifier) = Reactor::new(backend, debug)
            .map_err(|e| LoopError::io(format!("creating the {backend:?} poller"), e))?;
        let (shared, injected_rx) = Shared::new(notifier);
        let shared = Arc::new(shared);
        shared.register();
        Ok(EventLoop {
            owner: true,
            inner: Rc::new(Inner {
                ready: RefCell::new(ReadyQueue::new(shared.clone(), injected_rx)),
                shared,
                reactor,
                state: Cell::new(RunState::Idle),
                close_after_run: Cell::new(false),
                stopping: Cell::new(false),
                timers: RefCell::new(TimerQueue::new()),
                io: RefCell::default(),
                clock: self.clock.map(Clock::Virtual).unwrap_or_default(),
                debug: DebugState::new(debug),
                exception_handler: RefCell::new(None),
                executor: ExecutorState::default(),
                asyncgens: RefCell::default(),
                tasks: loop_futures::TaskRegistry::default(),
                task_factory: RefCell::new(None),
            }),
        })
    }
}

/// What `run_forever`'s iterations keep between them: buffers reused so
/// that an iteration allocates nothing.
#[derive(Default)]
struct Scratch {
    events: Vec<Readiness>,
    /// Completions of the io_uring completion path (uring_stream.rs).
    done: Vec<Completed>,
    batch: VecDeque<Ready>,
}

impl EventLoop {
    /// A new loop with the platform's default backend (`AIOLOOP_BACKEND`
    /// overrides it) and debug mode off (`AIOLOOP_DEBUG=1` turns it on).
    #[doc(alias = "new_event_loop")]
    pub fn new() -> Result<EventLoop, LoopError> {
        Builder::default().build()
    }

    /// A [`Builder`] to choose the backend, debug mode or clock.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The poller this loop actually uses: the one asked for, except that a
    /// loop asked for [`Backend::Uring`] where io_uring is unavailable runs
    /// the platform default.
    pub fn backend(&self) -> Backend {
        self.inner.reactor.backend()
    }

    /// Whether two handles refer to the same loop.
    pub fn ptr_eq(&self, other: &EventLoop) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// A handle that does not keep the loop alive: for tables that map
    /// loops to state of their own (the extension crates' per-loop state)
    /// without holding the loop after its last user dropped it.
    pub fn downgrade(&self) -> WeakEventLoop {
        WeakEventLoop {
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// Runs until [`stop`](Self::stop) is called.
    ///
    /// If `stop` was called before, runs exactly one iteration (the callbacks
    /// already scheduled) and returns. Errors: the loop is closed, it is
    /// already running (a call from inside a callback), or another loop runs
    /// on this thread; or the poller failed (`ErrorKind::Io`).
    #[doc(alias = "loop.run_forever")]
    pub fn run_forever(&self) -> Result<(), LoopError> {
        let _guard = self.enter()?;
        let mut scratch = Scratch::default();
        loop {
            self.run_once(&mut scratch)?;
            if self.inner.stopping.get() {
                return Ok(());
            }
        }
    }

    /// Runs until `future` completes and returns its output.
    ///
    /// `future` is any Rust future (an `async` block, a task, an executor
    /// result...); it is polled on this thread and need not be `Send`. If it
    /// panics, the panic is caught and returned as an
    /// [`ErrorKind::Panicked`] error; the loop stays usable. If the loop is
    /// stopped before the future completes, the future is dropped and the
    /// error is [`ErrorKind::Stopped`] ("Event loop stopped before Future
    /// completed.").
    #[doc(alias = "loop.run_until_complete")]
    #[track_caller]
    pub fn run_until_complete<F>(&self, future: F) -> Result<F::Output, LoopError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.check_can_run()?;
        // Panics until this returns are reported by the loop, not printed
        // by the panic hook too (loop_futures::QuietPanics).
        let _quiet = loop_futures::QuietPanics::enter();
        // asyncio wraps the future in a Task (so `current_task()` and
        // `all_tasks()` see it, and a task factory applies) and stops the loop
        // from the task's done callback.
        //
        // The future itself lives in a slot owned here as well as by the
        // task, so that one still pending when the loop stops is dropped
        // before this returns (a cancelled task would only drop it at its
        // next poll, keeping whatever it holds alive until then).
        let slot: Rc<RefCell<Option<Pin<Box<F>>>>> = Rc::new(RefCell::new(Some(Box::pin(future))));
        let polled = slot.clone();
        let body = std::future::poll_fn(move |cx| {
            let mut guard = polled.borrow_mut();
            let Some(f) = guard.as_mut() else {
                return Poll::Pending;
            };
            let out = f.as_mut().poll(cx);
            if out.is_ready() {
                let done = guard.take();
                drop(guard);
                drop(done);
            }
            out
        });
        let task = self.create_task(body)?;
        let stopper = self.clone();
        let stop_cb = task.add_done_callback(move |_| stopper.stop());
        let result = match self.run_forever() {
            Err(e) => Err(e),
            Ok(()) if task.done() => return task.take_result(),
            Ok(()) => Err(LoopError::new(
                ErrorKind::Stopped,
                "Event loop stopped before Future completed.",
            )),
        };
        // Not finished: the done callback must not stop a later run, and
        // the task ends (cancelled) at its next poll.
        task.remove_done_callback(stop_cb);
        task.cancel(Some("Event loop stopped before Future completed."));
        // Not finished: drop the future now, outside any borrow, and keep a
        // panicking `Drop` from escaping.
        let unfinished = slot.borrow_mut().take();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(unfinished))) {
            self.call_exception_handler(
                ExceptionContext::new(
                    "The future given to run_until_complete panicked while being dropped",
                )
                .with_error(LoopError::panicked("drop", payload)),
            );
        }
        result
    }

    /// Stops the loop after the current iteration: the callbacks already
    /// ready in this iteration still run, and those scheduled from them wait
    /// for the next `run_*`. Calling it before `run_forever` makes that run
    /// do one iteration. From another thread, use [`LoopHandle::stop`](crate::LoopHandle::stop).
    #[doc(alias = "loop.stop")]
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    /// Whether the loop is running (inside `run_forever` or
    /// `run_until_complete`).
    #[doc(alias = "loop.is_running")]
    pub fn is_running(&self) -> bool {
        self.inner.state.get() == RunState::Running
    }

    /// Whether [`close`](Self::close) was called.
    #[doc(alias = "loop.is_closed")]
    pub fn is_closed(&self) -> bool {
        self.inner.state.get() == RunState::Closed
    }

    /// Closes the loop. First the tasks still pending are cancelled as
    /// asyncio's `run` cancels them (the cancellation is observed at their
    /// await, so they may clean up) and run to completion, within a bound
    /// ([`SHUTDOWN_ROUNDS`](crate::SHUTDOWN_ROUNDS) rounds of at most
    /// [`SHUTDOWN_ROUND_LIMIT`](crate::SHUTDOWN_ROUND_LIMIT) of loop time;
    /// what is left then is reported and dropped). Then it drops every
    /// pending callback and timer, removes
    /// every reader and writer (the fds themselves stay open: they are the
    /// caller's), shuts the default executor down without waiting (use
    /// [`shutdown_default_executor`](Self::shutdown_default_executor) first
    /// to wait), releases the poller and the wake-up fd, and drops the
    /// exception handler. All at once, whatever clones and
    /// [`LoopHandle`](crate::LoopHandle)s still exist: later calls through
    /// any of them get [`ErrorKind::Closed`]. Idempotent. Errors with
    /// [`ErrorKind::Running`] while the loop runs. Dropping the owning
    /// handle does this too (see [`EventLoop`]).
    #[doc(alias = "loop.close")]
    pub fn close(&self) -> Result<(), LoopError> {
        match self.inner.state.get() {
            RunState::Running => {
                return Err(LoopError::new(
                    ErrorKind::Running,
                    "Cannot close a running event loop",
                ))
            }
            RunState::Closed => return Ok(()),
            RunState::Idle => {}
        }
        self.cancel_leftover_tasks("close()");
        self.inner.state.set(RunState::Closed);
        // The panics of the drops below are reported, not printed too.
        let _quiet = loop_futures::QuietPanics::enter();
        let inner = &*self.inner;
        inner.shared.close();
        let (ready, rx) = inner.ready.borrow_mut().take_all();
        let injected: Vec<Injected> = rx
            .as_ref()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default();
        drop(rx);
        let timers = inner.timers.borrow_mut().take_all();
        let watchers = self.clear_watchers();
        let stream_handlers = self.take_stream_handlers();
        let accept_handlers = self.take_accept_handlers();
        let datagram_handlers = self.take_datagram_handlers();
        // Dropping user closures and futures may run user `Drop` code; do it
        // with no borrow held, one item at a time, and keep a panicking
        // `Drop` from escaping (or, with a second one, from aborting).
        // Cancelling (not just dropping our reference) releases what a
        // callback captured even when the user still holds its `Handle`.
        let mut panics = Vec::new();
        let mut guarded = |f: &mut dyn FnMut()| {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
                panics.push(payload);
            }
        };
        for item in injected {
            let mut item = Some(item);
            guarded(&mut || drop(item.take()));
        }
        for item in ready {
            let mut item = Some(item);
            guarded(&mut || {
                match &item {
                    Some(Ready::Callback(cb)) => {
                        cb.cancel();
                    }
                    Some(Ready::Timer(t)) => {
                        t.cancel();
                    }
                    Some(Ready::Completion(c)) => self.discard_completion(*c),
                    _ => {}
                }
                drop(item.take());
            });
        }
        for t in timers {
            guarded(&mut || {
                t.cancel();
            });
        }
        for w in watchers {
            guarded(&mut || w.cancel());
        }
        for h in stream_handlers {
            let mut h = Some(h);
            guarded(&mut || drop(h.take()));
        }
        for h in accept_handlers {
            let mut h = Some(h);
            guarded(&mut || drop(h.take()));
        }
        for h in datagram_handlers {
            let mut h = Some(h);
            guarded(&mut || drop(h.take()));
        }
        guarded(&mut || self.executor_close());
        // Tasks still waiting (on I/O, timers, other tasks): cancel them.
        // Their runnables are dropped at once (the queue refuses them), and
        // with them the futures.
        guarded(&mut || self.close_tasks());
        let mut factory = inner.task_factory.borrow_mut().take();
        guarded(&mut || drop(factory.take()));
        // The descriptors go now, whatever handles (and `LoopHandle`s on
        // other threads) still exist.
        inner.reactor.close();
        inner.shared.notifier.close();
        for payload in panics {
            self.call_exception_handler(
                ExceptionContext::new("A callback or task panicked while being dropped by close()")
                    .with_error(LoopError::panicked("drop", payload)),
            );
        }
        // Last, the exception handler (it may hold a handle on the loop):
        // reports made after this go to the default handler.
        let mut handler = inner.exception_handler.borrow_mut().take();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(handler.take()))) {
            self.call_exception_handler(
                ExceptionContext::new(
                    "The exception handler panicked while being dropped by close()",
                )
                .with_error(LoopError::panicked("drop", payload)),
            );
        }
        Ok(())
    }

    pub(crate) fn check_open(&self) -> Result<(), LoopError> {
        if self.is_closed() {
            Err(LoopError::closed())
        } else {
            Ok(())
        }
    }

    fn check_can_run(&self) -> Result<(), LoopError> {
        self.check_open()?;
        if self.is_running() {
            return Err(LoopError::new(
                ErrorKind::AlreadyRunning,
                "This event loop is already running",
            ));
        }
        if running::running_loop().is_some() {
            return Err(LoopError::new(
                ErrorKind::AlreadyRunning,
                "Cannot run the event loop while another loop is running",
            ));
        }
        Ok(())
    }

    fn enter(&self) -> Result<RunGuard, LoopError> {
        self.check_can_run()?;
        self.inner.state.set(RunState::Running);
        running::set_running(Some(self.clone()));
        Ok(RunGuard {
            lp: self.clone(),
            _quiet: loop_futures::QuietPanics::enter(),
        })
    }

    /// One iteration; see the module docs.
    fn run_once(&self, s: &mut Scratch) -> Result<(), LoopError> {
        let inner = &*self.inner;
        let shared = &*inner.shared;

        // 1. The timeout.
        let busy = !inner.ready.borrow().is_empty() || inner.stopping.get() || shared.has_pending();
        let mut timeout = if busy { Some(Duration::ZERO) } else { None };
        let has_timers = !inner.timers.borrow().is_empty();
        if has_timers {
            let next = inner.timers.borrow_mut().next_deadline();
            if next == Next::Busy {
                // Timer bookkeeping left over: continue next iteration.
                timeout = Some(Duration::ZERO);
            }
            if let (Next::At(deadline), None) = (next, timeout) {
                let wait = deadline.saturating_duration_since(inner.clock.now());
                match inner.clock.as_virtual() {
                    // Virtual time jumps to the deadline instead of sleeping.
                    Some(v) if !wait.is_zero() => {
                        v.advance_to(deadline);
                        timeout = Some(Duration::ZERO);
                    }
                    _ => timeout = Some(wait),
                }
            }
        }

        // 2. Poll for I/O.
        // (The completion path's streams count only on the uring backend:
        // a field read keeps the others from borrowing the reactor.)
        let watched = inner.io.borrow().len() > 0
            || (inner.reactor.backend() == Backend::Uring && inner.reactor.has_streams());
        let polled = timeout != Some(Duration::ZERO) || watched;
        if polled {
            let blocking = timeout != Some(Duration::ZERO);
            if blocking {
                shared.notifier.set_parked(true);
                if shared.has_pending() {
                    timeout = Some(Duration::ZERO);
                }
            }
            let res = inner
                .reactor
                .wait(&mut s.events, &mut s.done, timeout, &shared.notifier);
            if blocking {
                shared.notifier.set_parked(false);
            }
            res.map_err(|e| LoopError::io("polling for I/O", e))?;
        }
        // What other threads sent before the poll returned goes first (as
        // in asyncio, where it is in `_ready` before the events are
        // appended); the events and due timers below then need no check.
        if shared.has_pending_relaxed() {
            inner.ready.borrow_mut().take_injected();
        }
        // Events and completions come only from a poll (an iteration that
        // skipped it has none to look at).
        if polled {
            self.queue_found(s);
        }

        if let Some(err) = shared.take_wake_failure() {
            self.call_exception_handler(
                ExceptionContext::new(
                    "Failed to wake up the event loop from another thread (a task woken there \
                     waited for the loop's next wake-up)",
                )
                .with_error(err),
            );
        }

        // 3. Due timers.
        if has_timers {
            let now = inner.clock.now();
            let mut ready = inner.ready.borrow_mut();
            let mut timers = inner.timers.borrow_mut();
            timers.pop_due(now, |slot| ready.push_found(Ready::Timer(slot)));
        }

        // 4. Run exactly what is ready now.
        inner.ready.borrow_mut().swap_into(&mut s.batch);
        if inner.debug.enabled() {
            while let Some(item) = s.batch.pop_front() {
                self.run_item_timed(item);
            }
        } else {
            while let Some(item) = s.batch.pop_front() {
                self.run_item(item);
            }
        }
        Ok(())
    }

    /// Queues what the poll found: ready fds, then the completion path's
    /// completions (and their number, which it reads while delivering them).
    fn queue_found(&self, s: &mut Scratch) {
        let inner = &*self.inner;
        if !s.events.is_empty() {
            let mut io = inner.io.borrow_mut();
            let mut ready = inner.ready.borrow_mut();
            io.dispatch(&s.events, &inner.reactor, |r| ready.push_found(r));
            s.events.clear();
        }
        crate::uring_stream::set_batch(s.done.len());
        if !s.done.is_empty() {
            let mut ready = inner.ready.borrow_mut();
            for c in s.done.drain(..) {
                ready.push_found(Ready::Completion(c));
            }
        }
    }

    /// Runs one ready item, catching a panic at the callback boundary.
    #[inline]
    fn run_item(&self, item: Ready) {
        let outcome = match item {
            Ready::Callback(cb) => match catch_unwind(AssertUnwindSafe(|| cb.run())) {
                Ok(()) => return,
                Err(p) => (p, Some(Handle::describe(&*cb))),
            },
            Ready::Timer(t) => match catch_unwind(AssertUnwindSafe(|| t.run())) {
                Ok(()) => return,
                Err(p) => (p, Some(TimerHandle::describe(&t))),
            },
            Ready::Io(w) => match catch_unwind(AssertUnwindSafe(|| w.fire())) {
                Ok(()) => return,
                Err(p) => (p, Some("<reader/writer callback>".to_string())),
            },
            Ready::Task(r) => match catch_unwind(AssertUnwindSafe(|| r.run())) {
                Ok(_) => return,
                Err(p) => (p, Some("<task>".to_string())),
            },
            Ready::Boxed(f) => match catch_unwind(AssertUnwindSafe(f)) {
                Ok(()) => return,
                Err(p) => (p, Some("<call_soon_threadsafe callback>".to_string())),
            },
            Ready::Completion(c) => {
                match catch_unwind(AssertUnwindSafe(|| self.deliver_completion(c))) {
                    Ok(()) => return,
                    Err(p) => (p, Some("<stream completion>".to_string())),
                }
            }
            Ready::Stop => {
                self.inner.stopping.set(true);
                return;
            }
        };
        let (payload, handle) = outcome;
        let what = handle.clone().unwrap_or_default();
        let mut ctx = ExceptionContext::new(format!("Exception in callback {what}"))
            .with_error(LoopError::panicked("callback", payload));
        ctx.handle = handle;
        self.call_exception_handler(ctx);
    }

    /// `run_item` with the slow-callback check of debug mode.
    fn run_item_timed(&self, item: Ready) {
        if item.is_cancelled() {
            return;
        }
        let is_task = matches!(item, Ready::Task(_));
        let what = if is_task {
            self.inner.tasks.track_last_polled();
            String::new()
        } else {
            item.describe()
        };
        let start = Instant::now();
        self.run_item(item);
        let took = start.elapsed();
        let task = if is_task {
            self.inner.tasks.take_last_polled()
        } else {
            None
        };
        if took < self.slow_callback_duration() {
            return;
        }
        // A task step is named after it ran, by the task it polled (asyncio
        // prints the task's repr, state included).
        let what = match (is_task, task) {
            (true, Some(task)) => describe_task(&task),
            (true, None) => "<Task step>".to_string(),
            (false, _) => what,
        };
        self.check_slow_callback(&what, took);
    }

    /// Number of callbacks waiting for the next iteration (for tests and
    /// diagnostics).
    pub fn ready_len(&self) -> usize {
        self.inner.ready.borrow().len()
    }

    /// Number of entries in the timer heap, cancelled ones not yet compacted
    /// included (for tests and diagnostics).
    pub fn timer_heap_len(&self) -> usize {
        self.inner.timers.borrow().len()
    }
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("id", &self.inner.shared.id)
            .field("owner", &self.owner)
            .field("running", &self.is_running())
            .field("closed", &self.is_closed())
            .field("debug", &self.get_debug())
            .finish()
    }
}

impl Drop for Inner {
    /// The last handle of a loop that was never closed (its owner was
    /// leaked with `mem::forget`, say): its `LoopHandle`s may live on in
    /// other threads. Mark the thread-safe queue closed so that they get
    /// `ErrorKind::Closed` instead of queueing work that can never run.
    fn drop(&mut self) {
        // The receiver (and what is queued in it) is dropped with `self`,
        // on this thread.
        self.shared.close();
    }
}

/// Leaves the running state however `run_forever` exits.
struct RunGuard {
    lp: EventLoop,
    /// Panics of the run are reported by the loop, not printed by the hook
    /// too (one report per panic).
    _quiet: loop_futures::QuietPanics,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let inner = &self.lp.inner;
        if inner.state.get() == RunState::Running {
            inner.state.set(RunState::Idle);
        }
        inner.stopping.set(false);
        running::set_running(None);
        if inner.close_after_run.replace(false) {
            // The owning handle was dropped during the run.
            let _ = self.lp.close();
        }
    }
}

/// A task as slow-callback reports name it (asyncio's `Task` repr: state
/// and name).
fn describe_task(task: &loop_futures::TaskRef) -> String {
    let state = if task.cancelled() {
        "cancelled"
    } else if task.done() {
        "finished"
    } else {
        "pending"
    };
    format!("<Task {state} name='{}' id={}>", task.get_name(), task.id())
}
