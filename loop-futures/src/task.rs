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
//! **Cancellation.** `cancel(msg)` records the request and wakes the task. At
//! its next poll the body does not poll the user's future again: it drops it
//! (running its `Drop` code, Rust's `finally:`) and completes the task with a
//! `Cancelled` error carrying `msg`. A Rust future cannot catch the
//! cancellation the way a coroutine catches `CancelledError`; `uncancel()`
//! before the next poll withdraws the request instead. A task cancelled
//! before its first poll never runs its body; one cancelled during the poll
//! in which its future completes ends cancelled (its output is dropped), as
//! in asyncio.
//!
//! **Panics.** The body polls the user's future inside `catch_unwind`; a
//! panic completes the task with an `ErrorKind::Panicked` error. An error
//! nobody retrieved (by `.await`, `result()` or `exception()`) is reported to
//! the loop's exception handler when the last `Task` handle is dropped: "Task
//! exception was never retrieved".
//!
//! **Destruction.** If the body is dropped before it completed (the loop
//! closed with the task pending), the task completes as cancelled, and in
//! debug mode the loop reports "Task was destroyed but it is pending!".

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future as StdFuture;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use crate::completion::{CallbackId, Completion};
use crate::{LoopError, LoopRef};

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// A boxed task body, as a task factory receives and returns it.
pub type TaskBody = Pin<Box<dyn StdFuture<Output = ()>>>;

/// An asyncio `Task`: a future scheduled on its loop.
///
/// Created by `loop.create_task(future)`. A cheap `Clone` handle; dropping
/// every handle does not cancel the task. Awaiting it gives
/// `Result<T, LoopError>` (the future's output, or a `Cancelled` or
/// `Panicked` error); an `.await` moves the output out, [`result`](Self::result)
/// clones it.
#[doc(alias = "asyncio.Task")]
pub struct Task<T, L: LoopRef> {
    core: Rc<TaskCore<T, L>>,
}

struct TaskCore<T, L: LoopRef> {
    lp: L,
    id: u64,
    name: RefCell<Option<String>>,
    completion: Completion<T, Task<T, L>>,
    cancel_request: RefCell<Option<String>>,
    cancelling: Cell<u32>,
    waker: RefCell<Option<Waker>>,
    registry_key: Cell<usize>,
}

impl<T, L: LoopRef> Clone for Task<T, L> {
    fn clone(&self) -> Self {
        Task {
            core: self.core.clone(),
        }
    }
}

/// Creates a task running `future` on `lp` and queues its first poll.
///
/// This is what `loop.create_task` does when no task factory is set.
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
        id: NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed),
        name: RefCell::new(name),
        completion: Completion::default(),
        cancel_request: RefCell::new(None),
        cancelling: Cell::new(0),
        waker: RefCell::new(None),
        registry_key: Cell::new(usize::MAX),
    });
    let weak: Weak<dyn AnyTask> = Rc::downgrade(&core) as Weak<dyn AnyTask>;
    core.registry_key.set(lp.tasks().insert(weak));
    let task = Task { core: core.clone() };
    // The guard is made here and moved into the body, not made inside it: a
    // body dropped before its first poll (the loop closed, the task factory
    // dropped it) must complete the task too.
    let guard = Unfinished(Some(core));
    let body = async move {
        let guard = guard;
        let core = guard.0.as_ref().expect("set above").clone();
        let result = {
            let mut future = pin!(future);
            std::future::poll_fn(|cx| core.poll_body(future.as_mut(), cx)).await
        };
        guard.finish(result);
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
                    &LoopError::cancelled(format!("task {}", core.name())),
                );
            }
            core.finish(Err(LoopError::cancelled(
                "Task was destroyed but it is pending!",
            )));
        }
    }
}

impl<T: 'static, L: LoopRef> TaskCore<T, L> {
    fn poll_body<F: StdFuture<Output = T>>(
        self: &Rc<Self>,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, LoopError>> {
        if let Some(msg) = self.cancel_request.borrow_mut().take() {
            return Poll::Ready(Err(LoopError::cancelled(msg)));
        }
        {
            let mut waker = self.waker.borrow_mut();
            match &*waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        let registry = self.lp.tasks();
        let prev = registry.current.replace(self.registry_key.get());
        let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
        registry.current.set(prev);
        match polled {
            Ok(Poll::Ready(v)) => {
                // Cancelled during its last step (asyncio's `_must_cancel`
                // when the coroutine returns): `cancel()` said yes, so the
                // task ends cancelled and the value is dropped.
                let request = self.cancel_request.borrow_mut().take();
                match request {
                    None => Poll::Ready(Ok(v)),
                    Some(msg) => match catch_unwind(AssertUnwindSafe(move || drop(v))) {
                        Ok(()) => Poll::Ready(Err(LoopError::cancelled(msg))),
                        Err(payload) => Poll::Ready(Err(LoopError::panicked(
                            format!("task {}", self.name()),
                            payload,
                        ))),
                    },
                }
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(LoopError::panicked(
                format!("task {}", self.name()),
                payload,
            ))),
        }
    }

    fn finish(self: &Rc<Self>, result: Result<T, LoopError>) {
        self.lp.tasks().remove(self.registry_key.get());
        drop(self.waker.borrow_mut().take());
        let handle = Task { core: self.clone() };
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
        if let Some(err) = self.completion.unretrieved_error_any() {
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

    /// A process-unique number for the task.
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// Requests cancellation: the task stops at its next suspension point
    /// (its future is dropped, not polled again) and completes with a
    /// `Cancelled` error carrying `msg`. Returns `false` if the task is
    /// already done.
    #[doc(alias = "Task.cancel")]
    pub fn cancel(&self, msg: Option<&str>) -> bool {
        self.core.request_cancel(msg.unwrap_or(""))
    }

    /// How many cancellation requests are pending (asyncio's `cancelling()`).
    #[doc(alias = "Task.cancelling")]
    pub fn cancelling(&self) -> u32 {
        self.core.cancelling.get()
    }

    /// Withdraws one cancellation request; when none remains and the task has
    /// not been stopped yet, it carries on. Returns the remaining count.
    #[doc(alias = "Task.uncancel")]
    pub fn uncancel(&self) -> u32 {
        let n = self.core.cancelling.get().saturating_sub(1);
        self.core.cancelling.set(n);
        if n == 0 {
            self.core.cancel_request.borrow_mut().take();
        }
        n
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
}

impl<T: 'static, L: LoopRef> StdFuture for Task<T, L> {
    type Output = Result<T, LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.core.completion.poll_take(cx)
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
        self.cancelling.set(self.cancelling.get() + 1);
        let waker = self.waker.borrow().clone();
        if let Some(w) = waker {
            w.wake();
        }
        true
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
}

impl Default for TaskRegistry {
    fn default() -> Self {
        TaskRegistry {
            slots: RefCell::default(),
            free: RefCell::default(),
            current: Cell::new(usize::MAX),
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
