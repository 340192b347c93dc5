//! asyncio's `Task`: a future running on the loop, cancellable, with a name.
//!
//! # Design
//! A task is two allocations: async-task's raw task, whose future is the
//! *body* (an `async` block that polls the user's future), and an
//! `Rc<TaskCore>` with what asyncio's Task object holds (the name, the
//! outcome, done callbacks, the cancel request, the waker). [`Task`] handles
//! are clones of that `Rc`; the async-task handle is detached at once, so
//! dropping every `Task` handle never stops the task (as in asyncio, where
//! the loop keeps running tasks nobody references).
//!
//! # Cancellation
//!
//! This is the one place that states the rule; everything else links here.
//!
//! `task.cancel(msg)` records a request (counted by `cancelling()`) and
//! wakes the task. At its next poll the task *delivers* it, as asyncio
//! throws `CancelledError` into the coroutine at its `await`:
//!
//! 1. **The awaitable observes it.** The first aioloop awaitable the body
//!    polls takes the delivery and returns a `Cancelled` error carrying
//!    `msg` at the await: an aioloop [`Future`](crate::Future) (it cancels
//!    itself first, as asyncio cancels the task's `_fut_waiter`), a [`Task`]
//!    (it forwards `cancel(msg)` to the task it awaits, so a chain of tasks
//!    is cancelled from the outside in), `sleep` (its timer is cancelled),
//!    `run_in_executor` (a job not yet started is skipped), the `sock_*`
//!    calls, stream reads and `drain` (an `io::Error` or `StreamError`
//!    holding the `LoopError`, kind `Other`; [`LoopError::of_io`] finds
//!    it), `gather`, `wait`, `shield`, and `timeout`'s inner future. Even an
//!    awaitable that is already done gives the error (asyncio's
//!    `_must_cancel`); a done Future keeps its value.
//! 2. **The body decides.** It may propagate the error (`?`): the task then
//!    ends **cancelled** (`cancelled()` is true, `result()` is a `Cancelled`
//!    error with `msg`). It may handle it and go on: the task goes on, and
//!    ends with whatever the body returns. "Propagated" means the error is
//!    still alive when the body returns: in its output (`Err(e)`, an
//!    `io::Error` made from `e`...) or anywhere the body stored it (storing
//!    it counts as propagating; keep `e.to_string()` to keep a record
//!    without that). The same holds for the `Cancelled` error an awaited
//!    Future or Task gives because it was cancelled by someone else
//!    (asyncio: a `CancelledError` escaping the coroutine cancels the task).
//!    An inner task that handles the cancellation forwarded to it and
//!    returns a value gives the awaiting task that value, and it goes on.
//! 3. **`cancelling()` / `uncancel()`** count as in asyncio 3.11+: each
//!    `cancel()` of a pending task adds one, even when the task then
//!    handles it; `uncancel()` removes one, and at zero it withdraws a
//!    request not yet delivered.
//! 4. **The fallback.** A body suspended on something that is not an aioloop
//!    awaitable (a channel of another runtime, a hand-written future that
//!    does not call [`take_cancellation`](crate::take_cancellation)), or
//!    reached through a combinator that does not poll the aioloop awaitable
//!    again when the task is woken, cannot observe the cancellation: when
//!    the poll that delivered it returns `Pending` with the delivery not
//!    taken, the body is dropped then and there (running its `Drop` code,
//!    Rust's `finally:`) and the task ends cancelled. Then, and only then.
//! 5. **Edge cases, as asyncio.** A task cancelled before its first poll
//!    never runs its body. A task cancelled during the poll in which its
//!    body returns ends cancelled (its output is dropped). A task cancelled
//!    while it runs (it cancels itself) observes it at its next await.
//!
//! Differences from asyncio: the awaited future is cancelled when the task
//! next runs (the next loop iteration), not inside `cancel()`, since only
//! the task's own poll knows what it awaits. Awaiting the task itself or a
//! future of another loop fails at once ("Task cannot await on itself",
//! "... attached to a different loop") instead of raising into the
//! coroutine later. `EventLoop::close()` and `run` cancel the tasks left
//! this way and run them to completion, within a bound (loop-core's
//! `tasks` module).
//!
//! **Panics.** The body polls the user's future inside `catch_unwind`; a
//! panic completes the task with an `ErrorKind::Panicked` error. An error
//! nobody retrieved (by `.await`, `result()` or `exception()`) is reported to
//! the loop's exception handler when the last `Task` handle is dropped: "Task
//! exception was never retrieved". So is an error *output* of the common
//! types (`Result<(), E>` with `E` a `LoopError`, `io::Error`, boxed
//! `Error`, `String` or `&str`: the list and why it is a list are in the
//! source's unretrieved.rs).
//!
//! **Destruction.** If the body is dropped before it completed (the loop
//! closed with the task pending), the task completes as cancelled, and in
//! debug mode the loop reports "Task was destroyed but it is pending!".

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future as StdFuture;
use std::panic::Location;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use crate::cancel;
use crate::completion::{CallbackId, Completion};
use crate::{ErrorKind, LoopError, LoopRef, WeakLoopError};

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// Task ids a thread takes from [`NEXT_TASK_ID`] at a time.
const TASK_ID_BLOCK: u64 = 1024;

thread_local! {
    /// This thread's block of task ids: the next one and the end.
    static TASK_IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// A task id unique in the process (the N of the default name `Task-N`):
/// taken from a per-thread block, so that creating a task costs no atomic
/// operation. Ids increase on each thread; tasks of different threads may
/// interleave out of order.
fn next_task_id() -> u64 {
    TASK_IDS
        .try_with(|ids| {
            let (next, end) = ids.get();
            if next < end {
                ids.set((next + 1, end));
                return next;
            }
            let start = NEXT_TASK_ID.fetch_add(TASK_ID_BLOCK, Ordering::Relaxed);
            ids.set((start + 1, start + TASK_ID_BLOCK));
            start
        })
        .unwrap_or_else(|_| NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed))
}

/// A boxed task body, as a task factory receives and returns it.
pub type TaskBody = Pin<Box<dyn StdFuture<Output = ()>>>;

/// An asyncio `Task`: a future scheduled on its loop.
///
/// Created by `loop.create_task(future)`. A cheap `Clone` handle; dropping
/// every handle does not cancel the task. Awaiting it gives
/// `Result<T, LoopError>` (the future's output, or a `Cancelled` or
/// `Panicked` error); an `.await` moves the output out, [`result`](Self::result)
/// clones it. How [`cancel`](Self::cancel) reaches the body, and what
/// awaiting a task does when the awaiting task is cancelled, is the
/// [module's cancellation rule](self#cancellation).
#[doc(alias = "asyncio.Task")]
pub struct Task<T, L: LoopRef> {
    core: Rc<TaskCore<T, L>>,
}

/// `TaskCore::flags`: the body was polled at least once.
const STARTED: u8 = 1;
/// `TaskCore::flags`: `cancel()` asked, its message in `cancel_request`.
const CANCEL_REQUESTED: u8 = 2;
/// `TaskCore::flags`: `tracked` holds cancellations handed to the body.
const TRACKING: u8 = 4;

struct TaskCore<T, L: LoopRef> {
    lp: L,
    id: u64,
    name: RefCell<Option<String>>,
    completion: Completion<T, Task<T, L>>,
    /// The message of a pending `cancel()` request; set only with
    /// [`CANCEL_REQUESTED`] in `flags`, so a poll reads it only then.
    cancel_request: RefCell<Option<String>>,
    cancelling: Cell<u32>,
    waker: RefCell<Option<Waker>>,
    registry_key: Cell<usize>,
    /// [`STARTED`], [`CANCEL_REQUESTED`], [`TRACKING`]: one load tells a
    /// poll whether it may take the fast path.
    flags: Cell<u8>,
    /// The cancellations handed to the body (delivered, or observed from an
    /// awaited future or task): if one is alive when the body returns, the
    /// body propagated it. Boxed: one word in every task, allocated only
    /// for a task that met a cancellation.
    #[allow(clippy::box_collection)] // one word per task; a `Vec` is three
    tracked: Cell<Option<Box<Vec<WeakLoopError>>>>,
    /// The cancellation delivered to a task awaiting this one and forwarded
    /// here: given back to it if this task ends cancelled (so that what it
    /// propagates is its own delivered error), dropped otherwise.
    forwarded: Cell<Option<LoopError>>,
    /// Where the task was created (`create_task`'s caller), for reports.
    created: &'static Location<'static>,
    /// Finds an error in the output (unretrieved.rs), for the "never
    /// retrieved" report; chosen where `T: 'static` is known.
    output_failure: fn(&T) -> Option<LoopError>,
}

impl<T, L: LoopRef> Clone for Task<T, L> {
    fn clone(&self) -> Self {
        Task::from_core(self.core.clone())
    }
}

impl<T, L: LoopRef> Task<T, L> {
    fn from_core(core: Rc<TaskCore<T, L>>) -> Self {
        Task { core }
    }
}

/// Creates a task running `future` on `lp` and queues its first poll.
///
/// This is what `loop.create_task` does when no task factory is set.
#[track_caller]
pub fn spawn<L, F>(lp: &L, future: F, name: Option<String>) -> Result<Task<F::Output, L>, LoopError>
where
    L: LoopRef,
    F: StdFuture + 'static,
    F::Output: 'static,
{
    let (task, body) = prepare(lp, future, name)?;
    launch(lp, body);
    Ok(task)
}

/// Creates the task and its body without scheduling it: a task factory
/// wraps the body (boxed with [`Box::pin`]) and then calls [`launch`].
/// The caller's location is kept as where the task was created (see
/// [`Task::created_at`]).
#[track_caller]
pub fn prepare<L, F>(
    lp: &L,
    future: F,
    name: Option<String>,
) -> Result<(Task<F::Output, L>, impl StdFuture<Output = ()> + 'static), LoopError>
where
    L: LoopRef,
    F: StdFuture + 'static,
    F::Output: 'static,
{
    if lp.is_closed() {
        return Err(LoopError::closed());
    }
    let core = Rc::new(TaskCore {
        lp: lp.clone(),
        id: next_task_id(),
        name: RefCell::new(name),
        completion: Completion::default(),
        cancel_request: RefCell::new(None),
        cancelling: Cell::new(0),
        waker: RefCell::new(None),
        registry_key: Cell::new(usize::MAX),
        flags: Cell::new(0),
        tracked: Cell::new(None),
        forwarded: Cell::new(None),
        created: Location::caller(),
        output_failure: crate::unretrieved::output_failure::<F::Output>,
    });
    let weak: Weak<dyn AnyTask> = Rc::downgrade(&core) as Weak<dyn AnyTask>;
    core.registry_key.set(lp.tasks().insert(weak));
    let task = Task::from_core(core.clone());
    // The guard is made here and moved into the body, not made inside it: a
    // body dropped before its first poll (the loop closed, the task factory
    // dropped it) must complete the task too.
    let guard = Unfinished(Some(core));
    let body = async move {
        let guard = guard;
        let core = guard.0.as_ref().expect("set above").clone();
        let step = {
            let mut future = pin!(future);
            std::future::poll_fn(|cx| core.poll_body(future.as_mut(), cx)).await
        };
        // The future is gone (dropped at the end of the block above): what
        // decides the outcome is whether a cancellation handed to the body
        // outlives it (in the output, or stored).
        guard.finish(core.settle(step));
    };
    Ok((task, body))
}

/// Schedules a prepared task body's first poll on `lp`.
pub fn launch<L: LoopRef>(lp: &L, body: impl StdFuture<Output = ()> + 'static) {
    lp.spawn_body(body);
}

/// Completes the task as cancelled if the body is dropped before finishing.
struct Unfinished<T: 'static, L: LoopRef>(Option<Rc<TaskCore<T, L>>>);

impl<T: 'static, L: LoopRef> Unfinished<T, L> {
    fn finish(mut self, result: Result<T, LoopError>) {
        if let Some(core) = self.0.take() {
            core.finish(result);
        }
    }
}

impl<T: 'static, L: LoopRef> Drop for Unfinished<T, L> {
    fn drop(&mut self) {
        if let Some(core) = self.0.take() {
            if core.lp.is_debug() {
                core.lp.report_error(
                    "Task was destroyed but it is pending!",
                    &LoopError::cancelled(format!(
                        "task {} (created at {})",
                        core.name(),
                        core.created
                    )),
                );
            }
            core.finish(Err(LoopError::cancelled(
                "Task was destroyed but it is pending!",
            )));
        }
    }
}

/// How one poll of the body ended.
enum Step<T> {
    /// The future returned `v`.
    Done(T),
    /// The future returned `v`, but the task must end cancelled: cancelled
    /// during that very poll, or a delivery nobody took.
    DoneCancelled(T, LoopError),
    /// Cancelled before its first poll, or suspended on something that did
    /// not take the delivery: the future is dropped unfinished.
    Cancelled(LoopError),
    /// The future panicked.
    Panicked(LoopError),
}

impl<T: 'static, L: LoopRef> TaskCore<T, L> {
    /// One poll of the body. The fast path (no cancel request, nothing
    /// delivered or observed) is kept small; everything about cancellation
    /// is in the cold functions below.
    #[inline]
    fn poll_body<F: StdFuture<Output = T>>(
        self: &Rc<Self>,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Step<T>> {
        let flags = self.flags.get();
        if flags & CANCEL_REQUESTED != 0 {
            return self.poll_body_cancelled(future, cx);
        }
        self.flags.set(flags | STARTED);
        let (polled, outer, ended) = self.poll_once(future, cx, None);
        if !cancel::quiet(outer, ended) || self.flags.get() & CANCEL_REQUESTED != 0 {
            return self.after_poll(polled, outer, ended);
        }
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Step::Done(v)),
            Err(payload) => Poll::Ready(self.panicked(payload)),
        }
    }

    /// Polls the future once as the current task, with `delivery` armed;
    /// returns what it returned and the contexts `enter` and `leave` gave.
    #[inline(always)]
    fn poll_once<F: StdFuture<Output = T>>(
        self: &Rc<Self>,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
        delivery: Option<LoopError>,
    ) -> (std::thread::Result<Poll<T>>, cancel::Ctx, cancel::Ctx) {
        let registry = self.lp.tasks();
        let prev = registry.current.replace(self.registry_key.get());
        if registry.track_last.get() {
            let me: Rc<dyn AnyTask> = self.clone();
            let old = registry.last.borrow_mut().replace(me);
            drop(old);
        }
        let outer = cancel::enter(cancel::loop_id(&self.lp), delivery);
        let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
        let ended = cancel::leave(outer);
        registry.current.set(prev);
        if let Ok(Poll::Pending) = polled {
            let same = matches!(&*self.waker.borrow(), Some(w) if w.will_wake(cx.waker()));
            if !same {
                self.keep_waker(cx);
            }
        }
        (polled, outer, ended)
    }

    /// Keeps the waker of a task that suspended (a new one, or the first),
    /// for `cancel()` to wake it. Kept only then: a task that finishes in
    /// its first poll never needs one, and cloning and dropping it would
    /// cost two atomic operations. A cancel requested during the first poll
    /// found no waker to wake, so the task is woken here.
    #[cold]
    #[inline(never)]
    fn keep_waker(&self, cx: &Context<'_>) {
        let first = self.waker.replace(Some(cx.waker().clone())).is_none();
        if first && self.flags.get() & CANCEL_REQUESTED != 0 {
            cx.waker().wake_by_ref();
        }
    }

    /// A poll with a cancel request pending: delivered to the body, or, if
    /// the body never ran, the task ends at once (asyncio throws into a
    /// coroutine that never ran: it never starts).
    #[cold]
    #[inline(never)]
    fn poll_body_cancelled<F: StdFuture<Output = T>>(
        self: &Rc<Self>,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Step<T>> {
        let msg = self.take_cancel_request().unwrap_or_default();
        let err = LoopError::cancelled(msg);
        if self.flags.get() & STARTED == 0 {
            return Poll::Ready(Step::Cancelled(err));
        }
        self.track(err.downgrade());
        let (polled, outer, ended) = self.poll_once(future, cx, Some(err));
        self.after_poll(polled, outer, ended)
    }

    /// The end of a poll that met a cancellation (or ran nested).
    #[cold]
    #[inline(never)]
    fn after_poll(
        self: &Rc<Self>,
        polled: std::thread::Result<Poll<T>>,
        outer: cancel::Ctx,
        ended: cancel::Ctx,
    ) -> Poll<Step<T>> {
        let undelivered = if cancel::quiet(outer, ended) {
            None
        } else {
            self.after_cancellation_poll(outer, ended)
        };
        match polled {
            Ok(Poll::Pending) => match undelivered {
                None => Poll::Pending,
                // Suspended on something that cannot observe it: the
                // fallback (drop the body).
                Some(err) => Poll::Ready(Step::Cancelled(err)),
            },
            Ok(Poll::Ready(v)) => {
                // Cancelled during its last step (asyncio's `_must_cancel`
                // when the coroutine returns): `cancel()` said yes, so the
                // task ends cancelled and the value is dropped.
                match (self.take_cancel_request(), undelivered) {
                    (Some(msg), _) => {
                        Poll::Ready(Step::DoneCancelled(v, LoopError::cancelled(msg)))
                    }
                    (None, Some(err)) => Poll::Ready(Step::DoneCancelled(v, err)),
                    (None, None) => Poll::Ready(Step::Done(v)),
                }
            }
            Err(payload) => Poll::Ready(self.panicked(payload)),
        }
    }

    #[cold]
    fn panicked(&self, payload: Box<dyn std::any::Any + Send>) -> Step<T> {
        Step::Panicked(LoopError::panicked(
            format!("task {}", self.name()),
            payload,
        ))
    }

    /// Takes the pending cancel request's message, if there is one.
    fn take_cancel_request(&self) -> Option<String> {
        let flags = self.flags.get();
        if flags & CANCEL_REQUESTED == 0 {
            return None;
        }
        self.flags.set(flags & !CANCEL_REQUESTED);
        self.cancel_request.borrow_mut().take()
    }

    /// After a poll that met a cancellation (or ran nested): the delivery
    /// nobody took, the observed cancellations tracked, what an outer poll
    /// stashed put back.
    #[cold]
    #[inline(never)]
    fn after_cancellation_poll(&self, outer: cancel::Ctx, ended: cancel::Ctx) -> Option<LoopError> {
        let undelivered = if cancel::undelivered(ended) {
            cancel::take_undelivered()
        } else {
            None
        };
        if cancel::observed(ended) {
            self.track_all(cancel::take_observed_list());
        }
        if cancel::nested(outer) {
            cancel::unstash();
        }
        undelivered
    }

    /// Remembers a cancellation handed to the body (forgetting those
    /// already gone).
    #[cold]
    fn track(&self, weak: WeakLoopError) {
        let mut tracked = self.tracked.take().unwrap_or_default();
        tracked.retain(WeakLoopError::is_alive);
        tracked.push(weak);
        self.tracked.set(Some(tracked));
        self.flags.set(self.flags.get() | TRACKING);
    }

    #[cold]
    fn track_all(&self, weaks: Vec<WeakLoopError>) {
        for weak in weaks {
            self.track(weak);
        }
    }

    /// The cancellation handed to the body that is still alive, if any: the
    /// body propagated it (it lives in the output, or where the body stored
    /// it).
    #[cold]
    fn propagated(&self, tracked: &[WeakLoopError]) -> Option<LoopError> {
        tracked.iter().rev().find_map(WeakLoopError::upgrade)
    }

    /// The outcome, once the future is dropped.
    #[inline]
    fn settle(&self, step: Step<T>) -> Result<T, LoopError> {
        match step {
            Step::Done(v) if self.flags.get() & TRACKING == 0 => Ok(v),
            Step::Done(v) => match self.tracked.take() {
                None => Ok(v),
                Some(tracked) => match self.propagated(&tracked) {
                    None => Ok(v),
                    Some(err) => self.discard(v, err),
                },
            },
            Step::DoneCancelled(v, err) => self.discard(v, err),
            Step::Cancelled(err) | Step::Panicked(err) => Err(err),
        }
    }

    /// Drops the output of a task that ends cancelled with `err`.
    fn discard(&self, v: T, err: LoopError) -> Result<T, LoopError> {
        match catch_unwind(AssertUnwindSafe(move || drop(v))) {
            Ok(()) => Err(err),
            Err(payload) => Err(LoopError::panicked(
                format!("task {}", self.name()),
                payload,
            )),
        }
    }

    fn finish(self: &Rc<Self>, result: Result<T, LoopError>) {
        self.lp.tasks().remove(self.registry_key.get());
        if !matches!(&result, Err(e) if e.is_cancelled()) {
            // The awaiting task's forwarded cancellation was handled here.
            drop(self.forwarded.take());
        }
        drop(self.waker.borrow_mut().take());
        let handle = Task::from_core(self.clone());
        self.completion.complete(&self.lp, &handle, result);
    }

    fn name(&self) -> String {
        match &*self.name.borrow() {
            Some(n) => n.clone(),
            None => format!("Task-{}", self.id),
        }
    }
}

impl<T, L: LoopRef> Drop for TaskCore<T, L> {
    fn drop(&mut self) {
        let err = self.completion.unretrieved_error_any().or_else(|| {
            self.completion
                .unretrieved_output_failure(self.output_failure)
        });
        if let Some(err) = err {
            self.lp
                .report_error("Task exception was never retrieved", &err);
        }
    }
}

impl<T: 'static, L: LoopRef> Task<T, L> {
    /// The task's name: the one given at creation or by
    /// [`set_name`](Self::set_name), else `Task-<id>`.
    #[doc(alias = "Task.get_name")]
    pub fn get_name(&self) -> String {
        self.core.name()
    }

    /// Renames the task.
    #[doc(alias = "Task.set_name")]
    pub fn set_name(&self, name: impl Into<String>) {
        *self.core.name.borrow_mut() = Some(name.into());
    }

    /// Where the task was created: the caller of `create_task` (or of
    /// `run_until_complete`, for the task it wraps its future in), as the
    /// "Task was destroyed but it is pending!" report names it (asyncio
    /// gives the coroutine's source line in debug mode).
    pub fn created_at(&self) -> &'static Location<'static> {
        self.core.created
    }

    /// A process-unique number for the task.
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// Requests cancellation (asyncio's `Task.cancel`): at the task's next
    /// poll, the aioloop awaitable it is suspended on (a future, a task,
    /// `sleep`, I/O...) is cancelled and gives the body a `Cancelled` error
    /// carrying `msg`; a body that propagates it ends the task cancelled,
    /// one that handles it goes on. The whole rule, with its fallback for
    /// bodies suspended on anything else, is the
    /// [module's](self#cancellation). Returns `false` if the task is
    /// already done; `true` (and counts one more request) otherwise.
    #[doc(alias = "Task.cancel")]
    pub fn cancel(&self, msg: Option<&str>) -> bool {
        self.core.request_cancel(msg.unwrap_or(""))
    }

    /// How many times the task was cancelled and not uncancelled (asyncio's
    /// `cancelling()`): a request the body handled still counts until
    /// [`uncancel`](Self::uncancel).
    #[doc(alias = "Task.cancelling")]
    pub fn cancelling(&self) -> u32 {
        self.core.cancelling.get()
    }

    /// Removes one from [`cancelling`](Self::cancelling) (a body that
    /// handled its cancellation and goes on calls it, as in asyncio); at
    /// zero, a request not yet delivered is withdrawn. Returns the remaining
    /// count.
    #[doc(alias = "Task.uncancel")]
    pub fn uncancel(&self) -> u32 {
        self.core.uncancel()
    }

    /// Whether the task was cancelled.
    #[doc(alias = "Task.cancelled")]
    pub fn cancelled(&self) -> bool {
        self.core.completion.is_cancelled()
    }

    /// Whether the task is done.
    #[doc(alias = "Task.done")]
    pub fn done(&self) -> bool {
        self.core.completion.is_done()
    }

    /// The task's output (cloned), or its error; see [`Future::result`](crate::Future::result).
    #[doc(alias = "Task.result")]
    pub fn result(&self) -> Result<T, LoopError>
    where
        T: Clone,
    {
        self.core.completion.result()
    }

    /// Moves the output out (for outputs that are not `Clone`).
    pub fn take_result(&self) -> Result<T, LoopError> {
        self.core.completion.take_result()
    }

    /// The error; see [`Future::exception`](crate::Future::exception).
    #[doc(alias = "Task.exception")]
    pub fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        self.core.completion.exception()
    }

    /// Adds a callback scheduled (with `call_soon`) when the task is done.
    #[doc(alias = "Task.add_done_callback")]
    pub fn add_done_callback(&self, callback: impl FnOnce(&Task<T, L>) + 'static) -> CallbackId {
        self.core
            .completion
            .add_done_callback(&self.core.lp, self, Box::new(callback))
    }

    /// Removes a callback not yet scheduled; returns how many were removed.
    #[doc(alias = "Task.remove_done_callback")]
    pub fn remove_done_callback(&self, id: CallbackId) -> usize {
        self.core.completion.remove_done_callback(id)
    }

    /// The loop the task runs on.
    #[doc(alias = "Task.get_loop")]
    pub fn get_loop(&self) -> L {
        self.core.lp.clone()
    }

    /// A type-erased handle to this task.
    pub fn as_task_ref(&self) -> TaskRef {
        TaskRef(self.core.clone())
    }

    /// Whether two handles are the same task.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.core, &other.core)
    }

    /// `Ready` once the task is done, registering `cx`'s waker until then;
    /// moves nothing out and observes no cancellation (for combinators that
    /// wait on many tasks and take the results themselves).
    pub fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.core.completion.poll_done(cx)
    }

    /// Runs `f` on the outcome (`None` while pending or once moved out),
    /// without cloning or moving it.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&Result<T, LoopError>>) -> R) -> R {
        self.core.completion.peek(f)
    }

    /// Whether the task being polled right now is this one.
    fn is_current(&self) -> bool {
        self.core.lp.tasks().current.get() == self.core.registry_key.get()
    }
}

/// Awaiting a task gives its output, or its error. When the task awaiting
/// it is cancelled, the cancellation is forwarded to this task (asyncio's
/// `_fut_waiter.cancel(msg)`): if this task then ends cancelled the
/// awaiting task gets a `Cancelled` error with the same message (which it
/// propagates or handles, as its own); if it handles it and returns a
/// value, the awaiting task gets the value. A task that is already
/// done gives the delivered cancellation at once. Awaiting the task itself,
/// or a pending task of another loop, is an `InvalidState` error.
impl<T: 'static, L: LoopRef> StdFuture for Task<T, L> {
    type Output = Result<T, LoopError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Err(err) = cancel::check_await(&this.core.lp, "Task") {
            if let Some(out) = this.interrupted(err) {
                return Poll::Ready(Err(out));
            }
        }
        match this.core.completion.poll_take(cx) {
            // Pending while it is the task being polled: awaiting itself.
            Poll::Pending if this.is_current() => Poll::Ready(Err(this.self_await())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(Ok(v)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.failed(e))),
        }
    }
}

impl<T: 'static, L: LoopRef> Task<T, L> {
    /// `check_await` said no: the error to return now, or `None` to go on
    /// (the cancellation was forwarded to this task).
    #[cold]
    fn interrupted(&self, err: LoopError) -> Option<LoopError> {
        let done = self.core.completion.is_done();
        if err.kind() == ErrorKind::Cancelled {
            if done {
                return Some(err);
            }
            if !self.is_current() {
                self.core.request_cancel(err.message());
                self.core.forwarded.set(Some(err));
            }
            None
        } else if !done {
            // A pending task of another loop (a done one gives its output,
            // as asyncio's await of a done task does).
            Some(err)
        } else {
            None
        }
    }

    #[cold]
    fn self_await(&self) -> LoopError {
        LoopError::new(
            ErrorKind::InvalidState,
            format!("Task cannot await on itself: {self:?}"),
        )
    }

    /// The error an await of a failed task gives: a cancellation is the
    /// awaiting task's own delivered one when it was forwarded here, else a
    /// copy the awaiting task watches (see the cancellation rule).
    #[cold]
    fn failed(&self, e: LoopError) -> LoopError {
        if e.kind() != ErrorKind::Cancelled {
            return e;
        }
        match self.core.forwarded.take() {
            Some(delivered) => delivered,
            None => cancel::observe_cancellation(e),
        }
    }
}

impl<T: 'static, L: LoopRef> fmt::Debug for Task<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Task {} name={:?}>",
            self.core.completion.state_name(),
            self.core.name()
        )
    }
}

/// What the loop and [`TaskRef`] see of any task, whatever its output type.
pub(crate) trait AnyTask {
    fn name(&self) -> String;
    fn set_name(&self, name: String);
    fn id(&self) -> u64;
    fn done(&self) -> bool;
    fn cancelled(&self) -> bool;
    fn cancelling(&self) -> u32;
    fn request_cancel(&self, msg: &str) -> bool;
    fn uncancel(&self) -> u32;
    fn exception(&self) -> Result<Option<LoopError>, LoopError>;
    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()>;
}

impl<T: 'static, L: LoopRef> AnyTask for TaskCore<T, L> {
    fn name(&self) -> String {
        TaskCore::name(self)
    }

    fn set_name(&self, name: String) {
        *self.name.borrow_mut() = Some(name);
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn done(&self) -> bool {
        self.completion.is_done()
    }

    fn cancelled(&self) -> bool {
        self.completion.is_cancelled()
    }

    fn cancelling(&self) -> u32 {
        self.cancelling.get()
    }

    fn request_cancel(&self, msg: &str) -> bool {
        if self.completion.is_done() {
            return false;
        }
        *self.cancel_request.borrow_mut() = Some(msg.to_string());
        self.flags.set(self.flags.get() | CANCEL_REQUESTED);
        self.cancelling.set(self.cancelling.get() + 1);
        let waker = self.waker.borrow().clone();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn uncancel(&self) -> u32 {
        let n = self.cancelling.get().saturating_sub(1);
        self.cancelling.set(n);
        if n == 0 {
            self.take_cancel_request();
        }
        n
    }

    fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        self.completion.exception()
    }

    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.completion.poll_done(cx)
    }
}

/// A handle to a task of any output type: what `current_task` and
/// `all_tasks` return.
#[derive(Clone)]
pub struct TaskRef(Rc<dyn AnyTask>);

impl TaskRef {
    /// The task's name.
    #[doc(alias = "Task.get_name")]
    pub fn get_name(&self) -> String {
        self.0.name()
    }

    /// Renames the task.
    #[doc(alias = "Task.set_name")]
    pub fn set_name(&self, name: impl Into<String>) {
        self.0.set_name(name.into());
    }

    /// The task's process-unique number.
    pub fn id(&self) -> u64 {
        self.0.id()
    }

    /// Whether the task is done.
    #[doc(alias = "Task.done")]
    pub fn done(&self) -> bool {
        self.0.done()
    }

    /// Whether the task was cancelled.
    #[doc(alias = "Task.cancelled")]
    pub fn cancelled(&self) -> bool {
        self.0.cancelled()
    }

    /// Pending cancellation requests.
    #[doc(alias = "Task.cancelling")]
    pub fn cancelling(&self) -> u32 {
        self.0.cancelling()
    }

    /// Requests cancellation; see [`Task::cancel`].
    #[doc(alias = "Task.cancel")]
    pub fn cancel(&self, msg: Option<&str>) -> bool {
        self.0.request_cancel(msg.unwrap_or(""))
    }

    /// Withdraws one cancellation request; see [`Task::uncancel`] (what
    /// `asyncio.current_task().uncancel()` does).
    #[doc(alias = "Task.uncancel")]
    pub fn uncancel(&self) -> u32 {
        self.0.uncancel()
    }

    /// The task's error; see [`Task::exception`].
    #[doc(alias = "Task.exception")]
    pub fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        self.0.exception()
    }

    /// `Ready` once the task is done, registering `cx`'s waker until then
    /// (for code that waits on tasks of any output type, as `close()` does).
    pub fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_done(cx)
    }

    /// Whether two handles are the same task.
    pub fn ptr_eq(&self, other: &TaskRef) -> bool {
        self.0.id() == other.0.id()
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<TaskRef {} name={:?} done={}>",
            self.id(),
            self.get_name(),
            self.done()
        )
    }
}

/// The live (not yet done) tasks of one loop: what `all_tasks` lists and
/// what `close` cancels. A slab of weak references; a task removes itself
/// when it completes.
pub struct TaskRegistry {
    slots: RefCell<Vec<Option<Weak<dyn AnyTask>>>>,
    free: RefCell<Vec<usize>>,
    /// The key of the task being polled (`usize::MAX`: none).
    current: Cell<usize>,
    /// Whether a poll records its task in `last` (the loop's debug mode
    /// names a slow task step by it).
    track_last: Cell<bool>,
    last: RefCell<Option<Rc<dyn AnyTask>>>,
}

impl Default for TaskRegistry {
    fn default() -> Self {
        TaskRegistry {
            slots: RefCell::default(),
            free: RefCell::default(),
            current: Cell::new(usize::MAX),
            track_last: Cell::new(false),
            last: RefCell::new(None),
        }
    }
}

impl TaskRegistry {
    fn insert(&self, task: Weak<dyn AnyTask>) -> usize {
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(key) => {
                slots[key] = Some(task);
                key
            }
            None => {
                slots.push(Some(task));
                slots.len() - 1
            }
        }
    }

    fn remove(&self, key: usize) {
        let mut slots = self.slots.borrow_mut();
        if let Some(slot) = slots.get_mut(key) {
            if slot.take().is_some() {
                self.free.borrow_mut().push(key);
            }
        }
    }

    /// Number of live tasks.
    pub fn len(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }

    /// Whether no task is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The task being polled right now, if any (asyncio's `current_task`).
    pub fn current(&self) -> Option<TaskRef> {
        let key = self.current.get();
        let slots = self.slots.borrow();
        let task = slots.get(key)?.as_ref()?.upgrade()?;
        Some(TaskRef(task))
    }

    /// From now on, remember the task that a poll runs, for
    /// [`take_last_polled`](Self::take_last_polled) (the loop's debug mode
    /// names a slow task step by it).
    pub fn track_last_polled(&self) {
        self.track_last.set(true);
        let old = self.last.borrow_mut().take();
        drop(old);
    }

    /// The task polled since [`track_last_polled`](Self::track_last_polled),
    /// if one was; stops remembering.
    pub fn take_last_polled(&self) -> Option<TaskRef> {
        self.track_last.set(false);
        let last = self.last.borrow_mut().take();
        last.map(TaskRef)
    }

    /// Handles to every live task.
    pub fn all(&self) -> Vec<TaskRef> {
        let slots = self.slots.borrow();
        slots
            .iter()
            .flatten()
            .filter_map(|w| w.upgrade())
            .filter(|t| !t.done())
            .map(TaskRef)
            .collect()
    }

    /// Cancels every live task (for a closing loop); returns how many there
    /// were. The loop must refuse new work first, so that each woken task's
    /// runnable is dropped, which drops its future.
    pub fn cancel_all(&self, msg: &str) -> usize {
        let tasks = self.all();
        for t in &tasks {
            t.0.request_cancel(msg);
        }
        tasks.len()
    }
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("live", &self.len())
            .finish()
    }
}
