//! Subprocesses and Unix signal handlers for aioloop.
//!
//! # Should I be using this crate?
//!
//! Use it directly if you build on `loop-core` and `loop-net` alone;
//! otherwise the `aioloop` facade re-exports it (feature `process`, prelude
//! included). It adds two extension traits to
//! [`EventLoop`](loop_core::EventLoop):
//!
//! | asyncio | here |
//! |---|---|
//! | `await loop.subprocess_exec(factory, program, *args, stdin=, stdout=, stderr=, env=, cwd=, ...)` | [`SubprocessLoopExt::subprocess_exec`] with [`SubprocessOptions`] and [`Stdio`] |
//! | `await loop.subprocess_shell(factory, cmd, ...)` | [`SubprocessLoopExt::subprocess_shell`] (`/bin/sh -c cmd`) |
//! | `SubprocessTransport` (`get_pid`, `get_pipe_transport`, `get_returncode`, `kill`, `send_signal`, `terminate`, `close`, `is_closing`, `get_extra_info`) | [`SubprocessTransport`] |
//! | `SubprocessProtocol` (`pipe_data_received`, `pipe_connection_lost`, `process_exited`, ...) | [`SubprocessProtocol`] |
//! | `await asyncio.create_subprocess_exec(program, *args, ...)` / `create_subprocess_shell(cmd, ...)` | [`SubprocessLoopExt::create_subprocess_exec`] / [`SubprocessLoopExt::create_subprocess_shell`] → [`Process`] (`stdin`, `stdout`, `stderr` as loop-net's `StreamWriter` / `StreamReader`, `wait`, `communicate`, `pid`, `returncode`, `kill`, `terminate`, `send_signal`) |
//! | `ProcessLookupError` | an `io::Error` with `ESRCH` (signals after `connection_lost`; between the exit and then they do nothing, as in asyncio) |
//! | `loop.add_signal_handler(sig, cb)` | [`SignalLoopExt::add_signal_handler`] |
//! | `loop.remove_signal_handler(sig)` | [`SignalLoopExt::remove_signal_handler`] |
//! | (`loop.close()` removing them, restoring each signal's disposition) | closing the loop, or [`SignalLoopExt::remove_all_signal_handlers`] |
//!
//! [`SubprocessLoopExt`] has a runnable example of a child's output
//! collected through a protocol.
//!
//! # How children are watched
//!
//! On Linux (5.3 and later) with the epoll backend, each child gets a pidfd,
//! watched by the loop like any fd: no SIGCHLD handler is installed, so a
//! user may register one, and a signal sent through the transport can never
//! reach another process that reused the pid. Elsewhere (and with the
//! `polling` backend) one SIGCHLD registration per loop, through
//! signal-hook, wakes the loop, which then waits for each of its own
//! children by pid. `waitpid(-1)` is never called: children that other code
//! started are never reaped. A child whose transport is dropped is still
//! reaped when it exits; one still running when its loop closes goes to a
//! process-wide reaper thread. No zombie is left behind.
//!
//! # Signals
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
mod fd_inheritance;
mod pidfd;
mod process;
pub mod signal;
mod signals;
mod subprocess_ext;
mod subprocess_options;
mod subprocess_protocol;
mod subprocess_transport;

pub use process::{Process, DEFAULT_LIMIT};
pub use signal::*;
pub use signals::{SignalLoopExt, SignalStream};
pub use subprocess_ext::SubprocessLoopExt;
pub use subprocess_options::{Stdio, SubprocessOptions};
pub use subprocess_protocol::SubprocessProtocol;
pub use subprocess_transport::{SubprocessInfo, SubprocessTransport};
