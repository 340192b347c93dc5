//! [`run`]: asyncio's `asyncio.run`, the entry point of a program.
//!
//! A new loop runs the main future as a task; then the shutdown asyncio's
//! `Runner.close` does: the tasks left are cancelled and run to their end
//! (bounded: see the `tasks` module), async generators are finalised, the
//! default executor is shut down (waiting up to
//! [`EXECUTOR_SHUTDOWN_TIMEOUT`] for its jobs), and the loop is closed and
//! dropped. Errors of the shutdown steps go to the exception handler; the
//! main future's outcome is what `run` returns.

use std::future::Future;
use std::time::Duration;

use crate::event_loop::{Builder, EventLoop};
use crate::exception::ExceptionContext;
use crate::{running, ErrorKind, LoopError};

/// How long [`run`]'s shutdown waits for the default executor's jobs
/// (asyncio's `THREAD_JOIN_TIMEOUT`, 300 seconds).
pub const EXECUTOR_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `main` on a new event loop and returns its output (asyncio's
/// `asyncio.run(main())`).
///
/// `main` receives the loop (the handle is yours: no `clone()` needed) and
/// returns the future to run, as a task. Its output is a `Result<T, E>`
/// whose error type can hold a [`LoopError`] (`LoopError` itself,
/// `std::io::Error`, `Box<dyn Error>`...): a failure of the loop (it could
/// not be created, the main task was cancelled or panicked) comes back as
/// that `E`, so `main` needs neither `??` nor `.unwrap()`.
///
/// After `main` ends, the tasks it left are cancelled and run to their end
/// (each observes its cancellation at its await; see the
/// [cancellation rule](loop_futures::task#cancellation)), async
/// generators are finalised, the default executor is shut down, and the
/// loop is closed: nothing of it outlives the call unless `T` holds it.
///
/// Errors with [`ErrorKind::AlreadyRunning`] when called from a running
/// loop.
///
/// ```
/// use std::time::Duration;
///
/// fn main() -> Result<(), loop_core::LoopError> {
///     let sum = loop_core::run(|lp| async move {
///         let task = lp.create_task(async { 20 + 1 })?;
///         lp.sleep(Duration::from_millis(1)).await?;
///         Ok::<_, loop_core::LoopError>(task.await? + 21)
///     })?;
///     assert_eq!(sum, 42);
///     Ok(())
/// }
/// ```
#[doc(alias = "asyncio.run")]
pub fn run<F, Fut, T, E>(main: F) -> Result<T, E>
where
    F: FnOnce(EventLoop) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: From<LoopError> + 'static,
{
    run_with(EventLoop::builder(), main)
}

/// [`run`] on a loop built by `builder` (asyncio's `asyncio.run(main(),
/// debug=True)` and `loop_factory=`: a chosen backend, debug mode, a
/// virtual clock).
///
/// ```
/// use loop_core::{run_with, EventLoop, LoopError};
/// let debug = run_with(EventLoop::builder().debug(true), |lp| async move {
///     Ok::<_, LoopError>(lp.get_debug())
/// })
/// .unwrap();
/// assert!(debug);
/// ```
#[doc(alias = "asyncio.Runner")]
pub fn run_with<F, Fut, T, E>(builder: Builder, main: F) -> Result<T, E>
where
    F: FnOnce(EventLoop) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: From<LoopError> + 'static,
{
    if running::running_loop().is_some() {
        return Err(LoopError::new(
            ErrorKind::AlreadyRunning,
            "run() cannot be called from a running event loop",
        )
        .into());
    }
    let lp = builder.build()?;
    let out = lp.run_until_complete(main(lp.clone()));
    lp.shut_down_after_run();
    drop(lp);
    match out {
        Ok(result) => result,
        Err(e) => Err(e.into()),
    }
}

impl EventLoop {
    /// `run`'s shutdown (asyncio's `Runner.close`).
    fn shut_down_after_run(&self) {
        self.cancel_leftover_tasks("run() shutdown");
        let gens = self.shutdown_asyncgens();
        if let Err(e) = self.run_until_complete(gens).and_then(|r| r) {
            self.call_exception_handler(
                ExceptionContext::new("run(): shutting down async generators failed").with_error(e),
            );
        }
        let executor = self.shutdown_default_executor(Some(EXECUTOR_SHUTDOWN_TIMEOUT));
        if let Err(e) = self.run_until_complete(executor).and_then(|r| r) {
            self.call_exception_handler(
                ExceptionContext::new("run(): shutting down the default executor failed")
                    .with_error(e),
            );
        }
        if let Err(e) = self.close() {
            self.call_exception_handler(
                ExceptionContext::new("run(): closing the loop failed").with_error(e),
            );
        }
    }
}
