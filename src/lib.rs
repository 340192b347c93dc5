//! aioloop: Python asyncio's low-level event loop API, in Rust.
//!
//! This facade re-exports the member crates so that one dependency gives the
//! whole API under the names an asyncio programmer knows.
//!
//! # Quick start
//!
//! ```
//! use aioloop::prelude::*;
//! use std::time::Duration;
//!
//! let lp = EventLoop::new()?;
//! let stopper = lp.clone();
//! lp.call_soon(|| println!("hello from the loop"))?;
//! lp.call_later(Duration::from_millis(10), move || stopper.stop())?;
//! lp.run_forever()?;
//! lp.close()?;
//! # Ok::<(), aioloop::LoopError>(())
//! ```
//!
//! # How the crates layer
//!
//! | crate | what it holds | status |
//! |---|---|---|
//! | `loop-core` | [`EventLoop`]: lifecycle, callbacks, timers, fd readiness, executor, exception handler, debug mode, `create_task` | available |
//! | `loop-futures` | asyncio [`Future`] and [`Task`], the shared [`LoopError`] | available |
//! | `loop-policy` | `get_event_loop`, `set_event_loop`, `new_event_loop`, `get_running_loop`, policies | available (feature `policy`) |
//! | `loop-net` | DNS, `sock_*`, TCP and Unix stream transports and protocols, servers, datagram endpoints, pipes, `loop.sendfile`, TLS (`start_tls`); asyncio's high-level streams (`open_connection`, `start_server`, `StreamReader`, `StreamWriter`) with `futures-io` interop | available (features `net`, `tls`) |
//! | `loop-process` | signal handlers (`SignalLoopExt`), subprocesses (`SubprocessLoopExt`: `subprocess_exec`, `subprocess_shell`, `SubprocessTransport`, `SubprocessProtocol`; `create_subprocess_exec`/`_shell` → `Process`) | feature `process` |
//!
//! # asyncio concepts and their Rust counterparts
//!
//! | asyncio | aioloop |
//! |---|---|
//! | `loop = asyncio.new_event_loop()` | `let lp = EventLoop::new()?;` (one loop per thread; `EventLoop` is a cheap `Rc` handle, `!Send`) |
//! | `loop.call_soon(cb, *args)` | `lp.call_soon(move \|\| cb(args))?` (a closure carries the arguments) |
//! | `await loop.create_connection(...)` | `lp.create_connection(...).await` (methods come from extension traits: `use aioloop::prelude::*;`) |
//! | a coroutine, `async def` | a Rust `Future` (`async` block or fn), run with `run_until_complete` or `create_task`; it need not be `Send` |
//! | `asyncio.run(main())` | [`run`]`(\|lp\| async move { .. })` (a new loop; leftover tasks cancelled and run to their end; closed after); [`run_with`] for a chosen [`Builder`] |
//! | `asyncio.Future` / `asyncio.Task` | [`Future`] / [`Task`], awaited with `.await` |
//! | `await asyncio.wait_for(aw, t)` / `async with asyncio.timeout(t):` | [`wait_for`]`(fut, t)` / [`timeout`]`(t, fut)`, [`timeout_at`]: an [`ErrorKind::Timeout`] error after cancelling the work |
//! | `asyncio.gather(*aws)` / `return_exceptions=True` | [`gather`]`(futs)` (outputs in order) / `.return_exceptions()` |
//! | `asyncio.wait(fs, return_when=...)` / `asyncio.shield(aw)` | [`wait`]`(tasks, ReturnWhen::FirstCompleted)` (`.timeout(t)`) / [`shield`]`(fut)`, `Shield::from(task)` |
//! | an exception (`OSError`, `CancelledError`, `InvalidStateError`, ...) | a typed error: `std::io::Error` for I/O (same errno), [`LoopError`] with an [`ErrorKind`] for the loop's own (`Cancelled`, `InvalidState`, `Closed`, ...) |
//! | `task.cancel(msg)`; catching `CancelledError` / `finally:` in the task | the awaited aioloop future, task, sleep or I/O call gives an `Err` of kind `Cancelled` at the await: `?` propagates it (the task ends cancelled), a `match` handles it and goes on; a body awaiting anything else is dropped (its `Drop` is the `finally:`). The rule: [`loop_futures::task`'s cancellation section](loop_futures::task#cancellation) |
//! | protocol classes (`Protocol`, `DatagramProtocol`, `SubprocessProtocol`) | traits with `&mut self` methods, all called on the loop thread |
//! | `transport.get_extra_info("peername")` | `transport.get_extra_info("peername")` → a typed enum, plus typed accessors (`peername()`) |
//! | `asyncio.get_event_loop()` | `aioloop::get_event_loop()` (feature `policy`) |
//! | `loop.set_exception_handler(h)` | `lp.set_exception_handler(\|lp, ctx\| ...)`; panics in callbacks are reported there |
//!
//! # Crate features
//!
//! `net`, `tls`, `process` and `policy` are on by default and pull in the
//! corresponding member crates; with `--no-default-features` only the core
//! loop is built.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub use loop_core::*;

/// The core loop crate, whole.
pub use loop_core as core;

/// The subprocess and signal crate, whole (feature `process`).
#[cfg(feature = "process")]
pub use loop_process as process;

/// The networking crate, whole (feature `net`).
#[cfg(feature = "net")]
pub use loop_net as net;
#[cfg(feature = "net")]
pub use loop_net::PipeLoopExt;
#[cfg(feature = "net")]
pub use loop_net::{
    AddrInfo, AddrInfoFlags, AddrInfoHints, AddressFamily, AnyProtocol, BaseProtocol, Buffered,
    BufferedProtocol, ConnectOptions, ExtraInfo, IntoProtocol, IpProtocol, NameInfoFlags,
    NetLoopExt, Protocol, ProtocolHandle, ResolveError, SendfileNotAvailableError, Server,
    ServerOptions, Service, SockAddr, SocketKind, StreamLoopExt, Transport, WriteBufferLimits,
};
#[cfg(feature = "net")]
pub use loop_net::{
    ClientTaskOutput, FlowControl, IncompleteReadError, LimitOverrunError, StreamError, StreamPair,
    StreamReader, StreamReaderProtocol, StreamWriter, StreamsLoopExt,
};
#[cfg(feature = "net")]
pub use loop_net::{
    DatagramAddr, DatagramLoopExt, DatagramOptions, DatagramProtocol, DatagramTransport,
};
#[cfg(feature = "net")]
pub use loop_net::{SendfileFallback, SendfileLoopExt};

#[cfg(feature = "tls")]
pub use loop_net::{
    rustls, CipherInfo, TlsClientOptions, TlsConfig, TlsLoopExt, TlsOptions, TlsServerOptions,
};

#[cfg(feature = "process")]
pub use loop_process::{
    SignalLoopExt, Stdio, SubprocessInfo, SubprocessLoopExt, SubprocessOptions, SubprocessProtocol,
    SubprocessTransport,
};

#[cfg(feature = "policy")]
pub use loop_policy::{
    get_event_loop, get_event_loop_policy, get_running_loop, new_event_loop, set_event_loop,
    set_event_loop_policy, DefaultEventLoopPolicy, EventLoopPolicy, PerThreadLoop,
};

/// Everything a program usually needs, for `use aioloop::prelude::*;`.
pub mod prelude {
    pub use loop_core::{gather, shield, wait_for, ReturnWhen};
    pub use loop_core::{
        running_loop, ErrorKind, EventLoop, ExceptionContext, Executor, Future, Handle, LoopError,
        LoopHandle, Task, TimerHandle,
    };
    #[cfg(feature = "net")]
    pub use loop_net::PipeLoopExt;
    #[cfg(feature = "net")]
    pub use loop_net::SendfileLoopExt;
    #[cfg(feature = "net")]
    pub use loop_net::{
        AnyProtocol, BaseProtocol, Buffered, BufferedProtocol, ConnectOptions, ExtraInfo,
        IntoProtocol, NetLoopExt, Protocol, ProtocolHandle, Server, ServerOptions, StreamLoopExt,
        Transport, WriteBufferLimits,
    };
    #[cfg(feature = "net")]
    pub use loop_net::{
        DatagramAddr, DatagramLoopExt, DatagramOptions, DatagramProtocol, DatagramTransport,
    };
    #[cfg(feature = "net")]
    pub use loop_net::{
        FlowControl, StreamError, StreamPair, StreamReader, StreamWriter, StreamsLoopExt,
    };
    #[cfg(feature = "tls")]
    pub use loop_net::{TlsClientOptions, TlsLoopExt, TlsServerOptions};
    #[cfg(feature = "policy")]
    pub use loop_policy::{
        get_event_loop, get_running_loop, new_event_loop, set_event_loop, EventLoopPolicy,
    };
    #[cfg(feature = "process")]
    pub use loop_process::{
        Process, SignalLoopExt, SubprocessLoopExt, SubprocessOptions, SubprocessProtocol,
        SubprocessTransport,
    };
}
