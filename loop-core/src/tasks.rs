//! Tasks and futures on the loop: `create_task`, `create_future`, the task
//! factory, `all_tasks`, `current_task`, and the local task spawner beneath
//! them and `run_until_complete`.
//!
//! Tasks are async-task's local tasks: the future need not be `Send` and is
//! polled only on the loop thread. async-task requires the schedule function
//! to be `Send + Sync` (a waker may travel to another thread). It is a plain
//! function, [`schedule_task`], and what it needs to know is the task's
//! metadata ([`TaskMeta`]: the loop's id and thread). A schedule function
//! that captures nothing lets async-task hand a consumed waker's reference
//! to the runnable (one atomic operation per wake-up instead of three), and
//! an id instead of an `Arc` saves two more per task. A wake-up on the loop
//! thread while the loop runs pushes the runnable straight onto the ready
//! queue (through the thread-local of `running.rs`); any other wake-up finds
//! the loop by its id ([`Shared::find`]) and goes through the thread-safe
//! queue, which wakes the loop. A task whose loop no longer exists can never
//! run again: its runnable is dropped on the loop's thread, leaked on any
//! other (a local task's future must not be dropped off its thread).
//!
//! # Leftover tasks at shutdown
//! [`EventLoop::close`] and [`run`](crate::run) first cancel the tasks still
//! pending and run the loop until they are done, as `asyncio.run`'s
//! `_cancel_all_tasks` does, so that each observes its cancellation at its
//! await and may clean up (see the
//! [cancellation rule](loop_futures::task#cancellation)). The wait is
//! bounded: up to [`SHUTDOWN_ROUNDS`] rounds, each cancelling the tasks
//! still pending (again, for one that handled the previous cancellation and
//! went on) and running the loop until they are done or
//! [`SHUTDOWN_ROUND_LIMIT`] of loop time passed. What is still pending then
//! is reported to the exception handler and dropped, as before. A task that
//! ends with an error meanwhile is reported too ("unhandled exception during
//! shutdown"). Nothing runs when the loop cannot run (another loop runs on
//! this thread).

use std::future::Future as StdFuture;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use loop_futures::{LoopRef, TaskBody, TaskRef, TaskRegistry};

use crate::event_loop::EventLoop;
use crate::exception::ExceptionContext;
use crate::running;
use crate::threadsafe::{self, Shared};
use crate::LoopError;

/// asyncio's `Future`, bound to an [`EventLoop`].
#[doc(alias = "asyncio.Future")]
pub type Future<T> = loop_futures::Future<T, EventLoop>;

/// asyncio's `Task`, running on an [`EventLoop`].
#[doc(alias = "asyncio.Task")]
pub type Task<T> = loop_futures::Task<T, EventLoop>;

/// Customises how [`EventLoop::create_task`] builds tasks (asyncio's task
/// factory).
///
/// Rust cannot hand a factory a future of every output type, so the factory
/// receives the task's *body*: a boxed future that runs the user's future and
/// records its outcome in the task. It returns the body to schedule: the same
/// one, or one that wraps it (to time it, log around it, run it in a context,
/// rename the task through `task`...). A factory that drops the body without
/// polling it completes the task as cancelled. Any `Fn(&EventLoop, TaskBody,
/// &TaskRef) -> TaskBody` closure is a factory.
///
/// ```
/// use loop_core::{EventLoop, TaskBody, TaskRef};
/// use std::{cell::RefCell, rc::Rc};
/// let lp = EventLoop::new().unwrap();
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let l = log.clone();
/// lp.set_task_factory(move |_lp: &EventLoop, body: TaskBody, task: &TaskRef| {
///     let (l, name) = (l.clone(), task.get_name());
///     Box::pin(async move {
///         body.await;
///         l.borrow_mut().push(format!("{name} finished"));
///     }) as TaskBody
/// });
/// let task = lp.create_task_named(async { 7 }, "worker").unwrap();
/// assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 7);
/// assert!(log.borrow().contains(&"worker finished".to_string()));
/// ```
#[doc(alias = "task_factory")]
pub trait TaskFactory {
    /// Returns the body to schedule for `task`.
    fn create_task(&self, lp: &EventLoop, body: TaskBody, task: &TaskRef) -> TaskBody;
}

impl<F> TaskFactory for F
where
    F: Fn(&EventLoop, TaskBody, &TaskRef) -> TaskBody,
{
    fn create_task(&self, lp: &EventLoop, body: TaskBody, task: &TaskRef) -> TaskBody {
        self(lp, body, task)
    }
}

/// What a task carries for [`schedule_task`]: the loop it belongs to.
pub(crate) struct TaskMeta {
    /// The loop's [`Shared::id`].
    pub(crate) loop_id: u64,
    /// The loop's thread.
    owner: std::thread::ThreadId,
}

/// A task's runnable, as the ready queue and the thread-safe queue hold it.
pub(crate) type Runnable = async_task::Runnable<TaskMeta>;

/// async-task's schedule function for every task (see the module docs).
fn schedule_task(runnable: Runnable) {
    if let Err(runnable) = running::schedule_local(runnable) {
        match Shared::find(runnable.metadata().loop_id) {
            Some(shared) => EventLoop::inject_task(&shared, runnable),
            None => {
                let owner = runnable.metadata().owner;
                threadsafe::dispose_task(runnable, owner);
            }
        }
    }
}

impl EventLoop {
    /// Spawns `future` as a local task scheduled on this loop.
    pub(crate) fn spawn_local<F>(&self, future: F) -> async_task::Task<F::Output, TaskMeta>
    where
        F: StdFuture + 'static,
        F::Output: 'static,
    {
        let meta = TaskMeta {
            loop_id: self.inner.shared.id,
            owner: self.inner.shared.owner(),
        };
        let (runnable, task) = async_task::Builder::new()
            .metadata(meta)
            .spawn_local(move |_| future, schedule_task);
        // We are on the loop's thread (`EventLoop` is `!Send`): queue it directly.
        self.inner
            .ready
            .borrow_mut()
            .push(crate::ready_queue::Ready::Task(runnable));
        task
    }
}

impl EventLoop {
    /// A new pending [`Future`] bound to this loop.
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// let lp = EventLoop::new().unwrap();
    /// let fut = lp.create_future::<u32>();
    /// let setter = fut.clone();
    /// lp.call_soon(move || setter.set_result(5).unwrap()).unwrap();
    /// assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 5);
    /// ```
    #[doc(alias = "loop.create_future")]
    pub fn create_future<T: 'static>(&self) -> Future<T> {
        loop_futures::Future::new(self)
    }

    /// Schedules `future` as a [`Task`] on this loop: its first poll happens
    /// in the next iteration. The future need not be `Send`.
    ///
    /// Errors with [`ErrorKind::Closed`](crate::ErrorKind::Closed) on a
    /// closed loop.
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// let lp = EventLoop::new().unwrap();
    /// let task = lp.create_task(async { "done" }).unwrap();
    /// assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), "done");
    /// ```
    #[doc(alias = "loop.create_task")]
    #[track_caller]
    pub fn create_task<F>(&self, future: F) -> Result<Task<F::Output>, LoopError>
    where
        F: StdFuture + 'static,
        F::Output: 'static,
    {
        self.create_task_inner(future, None)
    }

    /// [`create_task`](Self::create_task) with a name (asyncio's `name=`).
    #[doc(alias = "loop.create_task")]
    #[track_caller]
    pub fn create_task_named<F>(
        &self,
        future: F,
        name: impl Into<String>,
    ) -> Result<Task<F::Output>, LoopError>
    where
        F: StdFuture + 'static,
        F::Output: 'static,
    {
        self.create_task_inner(future, Some(name.into()))
    }

    #[track_caller]
    fn create_task_inner<F>(
        &self,
        future: F,
        name: Option<String>,
    ) -> Result<Task<F::Output>, LoopError>
    where
        F: StdFuture + 'static,
        F::Output: 'static,
    {
        let factory = self.inner.task_factory.borrow().clone();
        match factory {
            None => loop_futures::spawn(self, future, name),
            Some(factory) => {
                let (task, body) = loop_futures::prepare(self, future, name)?;
                let body = factory.create_task(self, Box::pin(body), &task.as_task_ref());
                loop_futures::launch(self, body);
                Ok(task)
            }
        }
    }

    /// Installs a [`TaskFactory`] used by every later `create_task`.
    #[doc(alias = "loop.set_task_factory")]
    pub fn set_task_factory(&self, factory: impl TaskFactory + 'static) {
        let old = self.inner.task_factory.replace(Some(Rc::new(factory)));
        drop(old);
    }

    /// Removes the task factory: `create_task` builds plain tasks again
    /// (asyncio's `set_task_factory(None)`).
    #[doc(alias = "loop.set_task_factory")]
    pub fn clear_task_factory(&self) {
        let old = self.inner.task_factory.replace(None);
        drop(old);
    }

    /// The installed task factory, if any.
    #[doc(alias = "loop.get_task_factory")]
    pub fn get_task_factory(&self) -> Option<Rc<dyn TaskFactory>> {
        self.inner.task_factory.borrow().clone()
    }

    /// The tasks of this loop that are not done (asyncio's `all_tasks(loop)`).
    #[doc(alias = "asyncio.all_tasks")]
    pub fn all_tasks(&self) -> Vec<TaskRef> {
        self.inner.tasks.all()
    }

    /// The task being polled right now, if this loop is running one
    /// (asyncio's `current_task(loop)`).
    #[doc(alias = "asyncio.current_task")]
    pub fn current_task(&self) -> Option<TaskRef> {
        self.inner.tasks.current()
    }

    /// `close()`'s part: cancel the tasks still pending. Called after the
    /// thread-safe queue refused new work, so each woken task's runnable is
    /// dropped at once, which drops its future.
    pub(crate) fn close_tasks(&self) {
        self.inner.tasks.cancel_all("Event loop is closed");
    }

    /// Cancels the tasks still pending and runs the loop until they are
    /// done, within a bound (see the module docs); `context` names the
    /// caller in reports. Called by `close()` before it closes anything,
    /// and by `run` after its main task.
    pub(crate) fn cancel_leftover_tasks(&self, context: &str) {
        if self.inner.tasks.is_empty()
            || self.is_closed()
            || self.is_running()
            || running::running_loop().is_some()
        {
            return;
        }
        let mut reported: Vec<u64> = Vec::new();
        for _ in 0..SHUTDOWN_ROUNDS {
            let pending = self.all_tasks();
            if pending.is_empty() {
                break;
            }
            for t in &pending {
                t.cancel(None);
            }
            let waiting = pending.clone();
            let all_done = std::future::poll_fn(move |cx| {
                let mut all = true;
                for t in &waiting {
                    all &= t.poll_done(cx).is_ready();
                }
                if all {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let mut limit =
                crate::sleep::Deadline::new(self, self.time().checked_add(SHUTDOWN_ROUND_LIMIT));
            let round = futures_lite::future::or(all_done, async move {
                let _ = std::future::poll_fn(|cx| limit.poll_fired(cx)).await;
            });
            let ran = self.run_until_complete(round);
            for t in pending.iter().filter(|t| t.done() && !t.cancelled()) {
                if reported.contains(&t.id()) {
                    continue;
                }
                if let Ok(Some(err)) = t.exception() {
                    reported.push(t.id());
                    self.call_exception_handler(
                        ExceptionContext::new(format!("unhandled exception during {context}"))
                            .with_error(err)
                            .with("task", t.get_name()),
                    );
                }
            }
            if ran.is_err() {
                break;
            }
        }
        let left = self.all_tasks();
        if !left.is_empty() {
            let names: Vec<String> = left.iter().map(TaskRef::get_name).collect();
            self.call_exception_handler(
                ExceptionContext::new(format!(
                    "{context}: {} task(s) still pending after being cancelled {SHUTDOWN_ROUNDS} \
                     times; they are dropped",
                    left.len()
                ))
                .with("tasks", names.join(", ")),
            );
        }
    }
}

/// How many times `close()` and `run` cancel the tasks left pending before
/// they give up and drop them (see the module docs).
pub const SHUTDOWN_ROUNDS: u32 = 3;

/// How long (loop time) each of those rounds waits for the cancelled tasks
/// to finish.
pub const SHUTDOWN_ROUND_LIMIT: Duration = Duration::from_secs(1);

impl LoopRef for EventLoop {
    fn call_soon_fn<F: FnOnce() + 'static>(&self, callback: F) -> Result<(), LoopError> {
        self.call_soon(callback).map(|_| ())
    }

    fn call_soon_dyn(&self, callback: Box<dyn FnOnce()>) -> Result<(), LoopError> {
        self.call_soon(callback).map(|_| ())
    }

    fn spawn_body<F: StdFuture<Output = ()> + 'static>(&self, body: F) {
        self.spawn_local(body).detach();
    }

    fn report_error(&self, message: &str, error: &LoopError) {
        self.call_exception_handler(ExceptionContext::new(message).with_error(error.clone()));
    }

    fn is_debug(&self) -> bool {
        self.get_debug()
    }

    fn is_closed(&self) -> bool {
        EventLoop::is_closed(self)
    }

    fn tasks(&self) -> &TaskRegistry {
        &self.inner.tasks
    }
}

/// The task being polled on this thread's running loop, if any (asyncio's
/// `asyncio.current_task()`).
#[doc(alias = "asyncio.current_task")]
pub fn current_task() -> Option<TaskRef> {
    running::running_loop()?.current_task()
}
