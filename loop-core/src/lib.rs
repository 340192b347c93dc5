//! The event loop of aioloop: asyncio's low-level loop API in Rust.
//!
//! # Should I be using this crate?
//!
//! Use it directly if you need only the loop itself: callbacks, timers,
//! file-descriptor readiness, running futures, an executor for blocking work.
//! For transports, subprocesses, signals and policies, depend on the `aioloop`
//! facade, which re-exports this crate.
//!
//! # The API at a glance
//!
//! | asyncio | here |
//! |---|---|
//! | `loop.run_forever()` / `loop.run_until_complete(f)` | [`EventLoop::run_forever`], [`EventLoop::run_until_complete`] |
//! | `loop.stop()` / `loop.close()` / `is_running()` / `is_closed()` | [`EventLoop::stop`], [`EventLoop::close`], [`EventLoop::is_running`], [`EventLoop::is_closed`] |
//! | `loop.call_soon(cb)` / `call_later(d, cb)` / `call_at(t, cb)` / `time()` | [`EventLoop::call_soon`], [`EventLoop::call_later`], [`EventLoop::call_at`], [`EventLoop::time`] |
//! | `loop.call_soon_threadsafe(cb)` | [`LoopHandle::call_soon_threadsafe`] (from [`EventLoop::handle`]) |
//! | `Handle.cancel()` / `TimerHandle.when()` | [`Handle::cancel`], [`TimerHandle::when`] |
//! | `loop.add_reader(fd, cb)` / `remove_reader` / `add_writer` / `remove_writer` | [`EventLoop::add_reader`], ... |
//! | `await loop.run_in_executor(None, f)` | [`EventLoop::run_in_executor`] |
//! | `loop.set_default_executor(e)` / `await loop.shutdown_default_executor()` | [`EventLoop::set_default_executor`], [`EventLoop::shutdown_default_executor`] |
//! | `loop.set_exception_handler(h)` / `get_…` / `call_…` / `default_exception_handler` | [`EventLoop::set_exception_handler`], ... |
//! | `loop.set_debug()` / `get_debug()` / `slow_callback_duration` | [`EventLoop::set_debug`], [`EventLoop::get_debug`], [`EventLoop::set_slow_callback_duration`] |
//! | `await loop.shutdown_asyncgens()` | [`EventLoop::shutdown_asyncgens`] with [`EventLoop::track_async_gen`] |
//! | `asyncio.sleep(d)` | [`EventLoop::sleep`] |
//! | `asyncio.run(main())` | [`run`], [`run_with`] |
//! | `asyncio.wait_for(aw, t)` / `asyncio.timeout(t)` / `timeout_at(when)` | [`wait_for`], [`timeout`], [`timeout_at`] |
//! | `asyncio.gather(*aws)` / `asyncio.wait(fs)` / `asyncio.shield(aw)` | [`gather`], [`wait`] with [`ReturnWhen`], [`shield`] |
//! | `task.cancel(msg)` delivered at the await | [`Task::cancel`]; the rule: [`loop_futures::task`'s cancellation section](loop_futures::task#cancellation); for awaitables of your own, [`take_cancellation`] |
//!
//! ```
//! use loop_core::EventLoop;
//! use std::time::Duration;
//!
//! let lp = EventLoop::new()?;
//! let lp2 = lp.clone();
//! let value = lp.run_until_complete(async move {
//!     lp2.sleep(Duration::from_millis(1)).await?;
//!     let sum = lp2.run_in_executor(|| (1..=10u64).sum::<u64>())?.await?;
//!     Ok::<_, loop_core::LoopError>(sum)
//! })??;
//! assert_eq!(value, 55);
//! lp.close()?;
//! # Ok::<(), loop_core::LoopError>(())
//! ```
//!
//! # The model
//!
//! One loop per thread, single-threaded: [`EventLoop`] is a cheap `Clone`
//! handle and `!Send`; callbacks and futures need not be `Send`. The handle
//! [`EventLoop::new`] returns owns the loop: dropping it closes the loop,
//! releasing every descriptor (clones do not own it; see [`EventLoop`]). The only way
//! in from another thread is the `Send + Sync` [`LoopHandle`]. A panic in a
//! callback is caught where the loop called it and reported through the
//! [exception handler](EventLoop::set_exception_handler); the loop keeps
//! running. Every fallible call returns a [`LoopError`] whose
//! [`kind`](LoopError::kind) says what went wrong.
//!
//! # Differences from asyncio
//!
//! - Errors are values: scheduling on a closed loop returns
//!   [`ErrorKind::Closed`] instead of raising `RuntimeError`.
//! - `time()` is an [`Instant`](std::time::Instant), delays are
//!   [`Duration`](std::time::Duration)s.
//! - `call_soon_threadsafe` from another thread returns `()`, not a cancellable
//!   handle (a handle would have to be `Send`).
//! - Calling a non-thread-safe method from another thread does not compile,
//!   rather than failing in debug mode.
//! - `set_exception_handler(None)` is [`EventLoop::clear_exception_handler`].
//! - `run_until_complete` takes any Rust future; when the loop is stopped
//!   first, the future is dropped.
//!
//! # Backends
//!
//! On Linux the loop polls with epoll directly; elsewhere, or when forced with
//! [`Backend::Polling`] or `AIOLOOP_BACKEND=polling`, with the `polling`
//! crate. On Linux, [`Backend::Uring`] or `AIOLOOP_BACKEND=uring` chooses
//! io_uring (opt-in; probed at loop creation, with a fall back to epoll
//! where the kernel refuses it: [`EventLoop::backend`] says which runs).
//! See the `reactor` module's source for why.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
#![doc(test(attr(deny(warnings))))]

mod asyncgens;
mod callbacks;
mod clock;
pub mod debug;
mod event_loop;
mod exception;
mod executor;
mod fd_claim;
mod gather;
mod handle;
mod io;
mod reactor;
mod ready_queue;
mod run;
mod running;
mod shield;
mod sleep;
mod tasks;
mod threadsafe;
mod threadsafe_timer;
mod timeouts;
mod timer_slab;
mod timers;
mod uring_accept;
mod uring_datagram;
mod uring_slot;
mod uring_stream;
mod wait;

pub use asyncgens::AsyncGen;
pub use clock::VirtualClock;
pub use event_loop::{Builder, EventLoop, WeakEventLoop};
pub use exception::{ExceptionContext, ExceptionHandler};
pub use executor::{BlockingPool, Executor, ExecutorFuture, Job};
pub use fd_claim::FdClaim;
#[doc(alias = "asyncio.gather")]
pub use gather::gather;
pub use gather::{Gather, GatherAll};
pub use handle::{Handle, TimerHandle};
pub use io::FileDescriptor;
pub use loop_futures::{
    cancellation_pending, check_await, deliver_cancellation, observe_cancellation,
    take_cancellation, Waitable, WaiterList, WeakLoopError,
};
pub use loop_futures::{CallbackId, TaskBody, TaskRef};
pub use loop_futures::{ErrorKind, LoopError, PanicError};
pub use reactor::Backend;
#[doc(alias = "asyncio.run")]
pub use run::run;
#[doc(alias = "asyncio.Runner")]
pub use run::run_with;
pub use run::EXECUTOR_SHUTDOWN_TIMEOUT;
pub use running::running_loop;
#[doc(alias = "asyncio.shield")]
pub use shield::shield;
pub use shield::Shield;
pub use sleep::Sleep;
pub use tasks::{current_task, Future, Task, TaskFactory, SHUTDOWN_ROUNDS, SHUTDOWN_ROUND_LIMIT};
pub use threadsafe::LoopHandle;
pub use threadsafe_timer::ThreadSafeTimerHandle;
#[doc(alias = "asyncio.timeout")]
pub use timeouts::timeout;
#[doc(alias = "asyncio.timeout_at")]
pub use timeouts::timeout_at;
#[doc(alias = "asyncio.wait_for")]
pub use timeouts::wait_for;
pub use timeouts::Timeout;
pub use uring_accept::{AcceptHandler, UringAccept};
pub use uring_datagram::{DatagramHandler, UringDatagram};
pub use uring_stream::{StreamHandler, UringStream};
#[doc(alias = "asyncio.wait")]
pub use wait::wait;
pub use wait::{ReturnWhen, Wait};
