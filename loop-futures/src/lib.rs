//! asyncio's `Future` and `Task`, for aioloop, and the error type every
//! aioloop crate shares.
//!
//! # Should I be using this crate?
//!
//! Through `loop-core` or the `aioloop` facade, which re-export what is here
//! bound to their `EventLoop` (`loop_core::Future<T>` is
//! `loop_futures::Future<T, EventLoop>`). Depend on this crate directly only
//! to bind these types to a loop of your own, by implementing [`LoopRef`].
//!
//! # What is here
//!
//! - [`Future`]: a result set later (`set_result`, `set_exception`, `cancel`),
//!   with done callbacks scheduled on the loop, awaitable from tasks.
//! - [`Task`]: a Rust future running on the loop, with a name, cancellation,
//!   done callbacks, and its panic kept as its error.
//! - [`LoopError`] and [`ErrorKind`], shared by every aioloop crate.
//!
//! The module docs of `future` and `completion` (in the source) state the
//! invariants: done callbacks never run synchronously, an `.await` moves the
//! value out. The [`task`] module states the cancellation rule: a task's
//! cancellation is delivered at its await, as asyncio's.
//!
//! For awaitables of your own: [`take_cancellation`] (or [`check_await`]) at
//! the top of `poll` is how an awaitable observes a task's cancellation; see
//! the rule for what to do with it.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod cancel;
mod completion;
mod error;
mod future;
mod panic_report;
pub mod task;
mod unretrieved;
mod waitable;
mod waiters;

pub use cancel::{
    cancellation_pending, check_await, deliver_cancellation, observe_cancellation,
    take_cancellation,
};
pub use completion::CallbackId;
pub use error::{ErrorKind, LoopError, PanicError, WeakLoopError};
pub use future::Future;
pub use panic_report::QuietPanics;
pub use task::{launch, prepare, spawn, Task, TaskBody, TaskRef, TaskRegistry};
pub use waitable::Waitable;
pub use waiters::WaiterList;

/// What futures and tasks need from the loop they belong to.
///
/// `loop_core::EventLoop` implements it; the methods are the loop's
/// internals that this lower crate cannot name.
pub trait LoopRef: Clone + 'static {
    /// `call_soon` for a boxed callback; fails on a closed loop.
    fn call_soon_dyn(&self, callback: Box<dyn FnOnce()>) -> Result<(), LoopError>;

    /// `call_soon` for a closure, without boxing it first: a loop that
    /// stores callbacks in cells of their own (as `EventLoop` does)
    /// overrides this to save the box. By default it boxes and calls
    /// [`call_soon_dyn`](Self::call_soon_dyn).
    fn call_soon_fn<F: FnOnce() + 'static>(&self, callback: F) -> Result<(), LoopError> {
        self.call_soon_dyn(Box::new(callback))
    }

    /// Spawns `body` as a local task of this loop (async-task's local
    /// spawning with the loop's scheduler) and queues its first poll. Called
    /// on the loop's thread.
    fn spawn_body<F: std::future::Future<Output = ()> + 'static>(&self, body: F);

    /// Reports an error that has no caller to the exception handler.
    fn report_error(&self, message: &str, error: &LoopError);

    /// Whether the loop is in debug mode.
    fn is_debug(&self) -> bool;

    /// Whether the loop is closed.
    fn is_closed(&self) -> bool;

    /// The loop's registry of live tasks.
    fn tasks(&self) -> &TaskRegistry;
}
