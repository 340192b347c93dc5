//! Subprocesses and Unix signal handlers for aioloop.
//!
//! # Should I be using this crate?
//!
//! For signals, yes: [`SignalLoopExt`] adds asyncio's
//! `loop.add_signal_handler` and `loop.remove_signal_handler` to
//! [`EventLoop`](loop_core::EventLoop) (the `aioloop` facade re-exports it,
//! prelude included, with feature `process`). The subprocess half of the
//! crate (`subprocess_exec`, `subprocess_shell`, the subprocess transport and
//! protocol) comes later; until then it has no public items.
//!
//! | asyncio | here |
//! |---|---|
//! | `loop.add_signal_handler(sig, cb)` | [`SignalLoopExt::add_signal_handler`] |
//! | `loop.remove_signal_handler(sig)` | [`SignalLoopExt::remove_signal_handler`] |
//! | (`loop.close()` removing them) | [`SignalLoopExt::remove_all_signal_handlers`], or closing the loop |
//!
//! ```
//! use loop_core::EventLoop;
//! use loop_process::SignalLoopExt;
//!
//! let lp = EventLoop::new()?;
//! let stopper = lp.clone();
//! lp.add_signal_handler(rustix::process::Signal::USR2.as_raw(), move || stopper.stop())?;
//! // Any thread, or another process (`kill -USR2 <pid>`), may send it.
//! std::thread::spawn(|| {
//!     rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::USR2)
//! });
//! lp.run_forever()?; // woken at once; the callback runs here, on the loop
//! assert!(lp.remove_signal_handler(rustix::process::Signal::USR2.as_raw())?);
//! lp.close()?;
//! # Ok::<(), loop_core::LoopError>(())
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
#![doc(test(attr(deny(warnings))))]

mod child_watcher;
mod signals;
mod subprocess_ext;
mod subprocess_options;
mod subprocess_protocol;
mod subprocess_transport;

pub use signals::SignalLoopExt;
pub use subprocess_ext::SubprocessLoopExt;
pub use subprocess_options::{Stdio, SubprocessOptions};
pub use subprocess_protocol::SubprocessProtocol;
pub use subprocess_transport::{SubprocessInfo, SubprocessTransport};
