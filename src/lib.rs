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
//! loop is built. `hyper` (off by default) adds the [`hyper`](mod@hyper)
//! module: hyper 1.x served and called on the loop.
//!
//! # Finding things by their asyncio names
//!
//! The [`api`] module is docs/API.md: every entry of asyncio's low-level API
//! index, the Rust item that implements it, and the tests that exercise it.
//! rustdoc's search knows the asyncio names: type `loop.call_soon`,
//! `asyncio.Future`, `Future.add_done_callback` or `StreamReader.readline`
//! into the search box.
//!
//! # The asyncio documentation's examples, ported
//!
//! ## TCP echo server and client, with protocols
//!
//! asyncio's "TCP Echo Server" and "TCP Echo Client" (Transports and
//! Protocols); both run on one loop here, the server on an ephemeral port.
//!
//! ```
//! # #[cfg(feature = "net")] {
//! use aioloop::prelude::*;
//!
//! struct EchoServerProtocol {
//!     transport: Option<Transport>,
//! }
//!
//! impl BaseProtocol for EchoServerProtocol {
//!     fn connection_made(&mut self, transport: Transport) {
//!         let peer = transport.get_extra_info("peername").unwrap();
//!         println!("Connection from {peer}");
//!         self.transport = Some(transport);
//!     }
//! }
//!
//! impl Protocol for EchoServerProtocol {
//!     fn data_received(&mut self, data: &[u8]) {
//!         println!("Data received: {:?}", String::from_utf8_lossy(data));
//!         let transport = self.transport.as_ref().unwrap();
//!         println!("Send: {:?}", String::from_utf8_lossy(data));
//!         transport.write(data).unwrap();
//!         println!("Close the client socket");
//!         transport.close();
//!     }
//! }
//!
//! struct EchoClientProtocol {
//!     message: &'static [u8],
//!     on_con_lost: aioloop::Future<()>,
//!     received: Vec<u8>,
//! }
//!
//! impl BaseProtocol for EchoClientProtocol {
//!     fn connection_made(&mut self, transport: Transport) {
//!         transport.write(self.message).unwrap();
//!         println!("Data sent: {:?}", String::from_utf8_lossy(self.message));
//!     }
//!
//!     fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
//!         println!("The server closed the connection");
//!         let _ = self.on_con_lost.set_result(());
//!     }
//! }
//!
//! impl Protocol for EchoClientProtocol {
//!     fn data_received(&mut self, data: &[u8]) {
//!         println!("Data received: {:?}", String::from_utf8_lossy(data));
//!         self.received.extend_from_slice(data);
//!     }
//! }
//!
//! let lp = EventLoop::new()?;
//! let l = lp.clone();
//! let echoed = lp.run_until_complete(async move {
//!     let server = l
//!         .create_server(
//!             || EchoServerProtocol { transport: None },
//!             &["127.0.0.1"],
//!             0,
//!             ServerOptions::default(),
//!         )
//!         .await?;
//!     let port = server.sockets()[0].as_inet().unwrap().port();
//!
//!     let on_con_lost = l.create_future::<()>();
//!     let lost = on_con_lost.clone();
//!     let (transport, protocol) = l
//!         .create_connection(
//!             move || EchoClientProtocol {
//!                 message: b"Hello World!",
//!                 on_con_lost: lost,
//!                 received: Vec::new(),
//!             },
//!             Some("127.0.0.1"),
//!             port,
//!             ConnectOptions::default(),
//!         )
//!         .await?;
//!     // Wait until the protocol signals that the connection is lost.
//!     on_con_lost.await?;
//!     transport.close();
//!     server.close();
//!     server.wait_closed().await;
//!     let received = protocol.with(|p| p.received.clone());
//!     Ok::<_, LoopError>(received)
//! })??;
//! assert_eq!(echoed, b"Hello World!");
//! lp.close()?;
//! # }
//! # Ok::<(), aioloop::LoopError>(())
//! ```
//!
//! ## UDP echo server and client
//!
//! asyncio's "UDP Echo Server" and "UDP Echo Client".
//!
//! ```
//! # #[cfg(feature = "net")] {
//! use aioloop::prelude::*;
//!
//! struct EchoServerProtocol {
//!     transport: Option<DatagramTransport>,
//! }
//!
//! impl DatagramProtocol for EchoServerProtocol {
//!     fn connection_made(&mut self, transport: DatagramTransport) {
//!         self.transport = Some(transport);
//!     }
//!
//!     fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
//!         println!("Received {:?} from {addr}", String::from_utf8_lossy(data));
//!         println!("Send {:?} to {addr}", String::from_utf8_lossy(data));
//!         self.transport.as_ref().unwrap().sendto(data, Some(addr)).unwrap();
//!     }
//! }
//!
//! struct EchoClientProtocol {
//!     message: &'static [u8],
//!     on_con_lost: aioloop::Future<()>,
//!     transport: Option<DatagramTransport>,
//!     received: Vec<u8>,
//! }
//!
//! impl DatagramProtocol for EchoClientProtocol {
//!     fn connection_made(&mut self, transport: DatagramTransport) {
//!         println!("Send: {:?}", String::from_utf8_lossy(self.message));
//!         transport.sendto(self.message, None).unwrap();
//!         self.transport = Some(transport);
//!     }
//!
//!     fn datagram_received(&mut self, data: &[u8], _addr: SockAddr) {
//!         println!("Received: {:?}", String::from_utf8_lossy(data));
//!         self.received.extend_from_slice(data);
//!         println!("Close the socket");
//!         self.transport.as_ref().unwrap().close();
//!     }
//!
//!     fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
//!         println!("Connection closed");
//!         let _ = self.on_con_lost.set_result(());
//!     }
//! }
//!
//! let lp = EventLoop::new()?;
//! let l = lp.clone();
//! let echoed = lp.run_until_complete(async move {
//!     let (server, _) = l
//!         .create_datagram_endpoint(
//!             || EchoServerProtocol { transport: None },
//!             DatagramOptions::default().with_local_addr(("127.0.0.1", 0)),
//!         )
//!         .await?;
//!     let server_addr = server.sockname().unwrap().as_inet().unwrap();
//!
//!     let on_con_lost = l.create_future::<()>();
//!     let lost = on_con_lost.clone();
//!     let (_transport, protocol) = l
//!         .create_datagram_endpoint(
//!             move || EchoClientProtocol {
//!                 message: b"Hello World!",
//!                 on_con_lost: lost,
//!                 transport: None,
//!                 received: Vec::new(),
//!             },
//!             DatagramOptions::default().with_remote_addr(server_addr),
//!         )
//!         .await?;
//!     on_con_lost.await?;
//!     server.close();
//!     let received = protocol.with(|p| p.received.clone());
//!     Ok::<_, LoopError>(received)
//! })??;
//! assert_eq!(echoed, b"Hello World!");
//! lp.close()?;
//! # }
//! # Ok::<(), aioloop::LoopError>(())
//! ```
//!
//! ## TCP echo server and client, with streams
//!
//! asyncio's "TCP echo client using streams" and "TCP echo server using
//! streams" (`handle_echo`).
//!
//! ```
//! # #[cfg(feature = "net")] {
//! use aioloop::prelude::*;
//!
//! async fn handle_echo(reader: StreamReader, writer: StreamWriter) -> Result<(), LoopError> {
//!     let data = reader.read(100).await?;
//!     let addr = writer.get_extra_info("peername").unwrap();
//!     println!("Received {:?} from {addr}", String::from_utf8_lossy(&data));
//!     println!("Send: {:?}", String::from_utf8_lossy(&data));
//!     writer.write(&data)?;
//!     writer.drain().await?;
//!     println!("Close the connection");
//!     writer.close();
//!     writer.wait_closed().await?;
//!     Ok(())
//! }
//!
//! async fn tcp_echo_client(lp: EventLoop, port: u16, message: &str) -> Result<Vec<u8>, LoopError> {
//!     let (reader, writer) = lp.open_connection("127.0.0.1", port).await?;
//!     println!("Send: {message:?}");
//!     writer.write(message.as_bytes())?;
//!     writer.drain().await?;
//!     let data = reader.read(100).await?;
//!     println!("Received: {:?}", String::from_utf8_lossy(&data));
//!     println!("Close the connection");
//!     writer.close();
//!     writer.wait_closed().await?;
//!     Ok(data)
//! }
//!
//! let lp = EventLoop::new()?;
//! let l = lp.clone();
//! let echoed = lp.run_until_complete(async move {
//!     let server = l
//!         .start_server(handle_echo, &["127.0.0.1"], 0, ServerOptions::default())
//!         .await?;
//!     let port = server.sockets()[0].as_inet().unwrap().port();
//!     println!("Serving on {}", server.sockets()[0]);
//!     let data = tcp_echo_client(l.clone(), port, "Hello World!").await?;
//!     server.close();
//!     server.wait_closed().await;
//!     Ok::<_, LoopError>(data)
//! })??;
//! assert_eq!(echoed, b"Hello World!");
//! lp.close()?;
//! # }
//! # Ok::<(), aioloop::LoopError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

/// docs/API.md: every entry of asyncio's low-level API, the Rust item that
/// implements it, and the tests that exercise it (the test links are paths
/// of the source repository, `tests/<file>.rs`).
#[doc = include_str!("../docs/API.md")]
pub mod api {}

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
    AddrInfo, AddrInfoFlags, AddrInfoHints, AddressFamily, AnyProtocol, Buffered, ConnectErrors,
    ConnectOptions, ExtraInfo, IntoProtocol, IpProtocol, NameInfoFlags, NetLoopExt, ProtocolHandle,
    ResolveError, SendfileNotAvailableError, ServerOptions, Service, SockAddr, SocketKind,
    StreamLoopExt, WriteBufferLimits,
};
#[cfg(feature = "net")]
pub use loop_net::{ClientTaskOutput, FlowControl, StreamError, StreamPair, StreamsLoopExt};
#[cfg(feature = "net")]
pub use loop_net::{Condition, ProtocolCell, WaitUntil};
#[cfg(feature = "net")]
pub use loop_net::{DatagramAddr, DatagramLoopExt, DatagramOptions};
#[cfg(feature = "net")]
pub use loop_net::{SendfileFallback, SendfileLoopExt};

/// hyper 1.x on the loop (feature `hyper`, off by default): hyper's I/O
/// traits for the loop's connections ([`hyper::HyperStream`],
/// [`hyper::FuturesIo`]), an executor ([`hyper::LoopExecutor`]), a timer
/// with `Send + Sync` sleeps ([`hyper::LoopTimer`]) and
/// [`hyper::serve_http1`] / [`hyper::serve_http2`]. The loop-hyper crate,
/// whole.
#[cfg(feature = "hyper")]
pub use loop_hyper as hyper;

#[cfg(feature = "tls")]
pub use loop_net::{
    rustls, CipherInfo, TlsClientOptions, TlsConfig, TlsLoopExt, TlsOptions, TlsServerOptions,
};

/// Signal numbers by name (`SIGINT`, `SIGTERM`, ...), also at the crate root
/// and in the prelude (feature `process`).
#[cfg(feature = "process")]
pub use loop_process::signal;
#[cfg(feature = "process")]
pub use loop_process::signal::*;
#[cfg(feature = "process")]
pub use loop_process::{
    SignalLoopExt, SignalStream, Stdio, SubprocessInfo, SubprocessLoopExt, SubprocessOptions,
};

#[cfg(feature = "policy")]
pub use loop_policy::PerThreadLoop;

// The asyncio names of the types and functions, once more on these
// re-exports: rustdoc drops the `#[doc(alias)]` of an item that a crate
// re-exports from a private module (as every member crate does), so
// without these, search would not find `asyncio.Future`, `asyncio.Transport`,
// `asyncio.get_event_loop`, ... (`cargo xtask api-check` checks that it does).
#[doc(alias = "asyncio.current_task")]
pub use loop_core::current_task;
#[doc(alias = "asyncio.gather")]
pub use loop_core::gather;
#[doc(alias = "asyncio.run")]
pub use loop_core::run;
#[doc(alias = "asyncio.Runner")]
pub use loop_core::run_with;
#[doc(alias = "asyncio.shield")]
pub use loop_core::shield;
#[doc(alias = "asyncio.timeout")]
pub use loop_core::timeout;
#[doc(alias = "asyncio.timeout_at")]
pub use loop_core::timeout_at;
#[doc(alias = "asyncio.wait")]
pub use loop_core::wait;
#[doc(alias = "asyncio.wait_for")]
pub use loop_core::wait_for;
#[doc(alias = "concurrent.futures.Executor")]
pub use loop_core::Executor;
#[doc(alias = "asyncio.Future")]
pub use loop_core::Future;
#[doc(alias = "asyncio.Handle")]
pub use loop_core::Handle;
#[doc(alias = "asyncio.Task")]
pub use loop_core::Task;
#[doc(alias = "asyncio.TimerHandle")]
pub use loop_core::TimerHandle;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.BaseProtocol")]
pub use loop_net::BaseProtocol;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.BufferedProtocol")]
pub use loop_net::BufferedProtocol;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.DatagramProtocol")]
pub use loop_net::DatagramProtocol;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.DatagramTransport")]
pub use loop_net::DatagramTransport;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.IncompleteReadError")]
pub use loop_net::IncompleteReadError;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.LimitOverrunError")]
pub use loop_net::LimitOverrunError;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.Protocol")]
pub use loop_net::Protocol;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.Server")]
pub use loop_net::Server;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.StreamReader")]
pub use loop_net::StreamReader;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.StreamReaderProtocol")]
pub use loop_net::StreamReaderProtocol;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.StreamWriter")]
pub use loop_net::StreamWriter;
#[cfg(feature = "net")]
#[doc(alias = "asyncio.Transport")]
pub use loop_net::Transport;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.get_event_loop")]
pub use loop_policy::get_event_loop;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.get_event_loop_policy")]
pub use loop_policy::get_event_loop_policy;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.get_running_loop")]
pub use loop_policy::get_running_loop;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.new_event_loop")]
pub use loop_policy::new_event_loop;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.set_event_loop")]
pub use loop_policy::set_event_loop;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.set_event_loop_policy")]
pub use loop_policy::set_event_loop_policy;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.DefaultEventLoopPolicy")]
pub use loop_policy::DefaultEventLoopPolicy;
#[cfg(feature = "policy")]
#[doc(alias = "asyncio.AbstractEventLoopPolicy")]
pub use loop_policy::EventLoopPolicy;
#[cfg(feature = "process")]
#[doc(alias = "asyncio.subprocess.Process")]
pub use loop_process::Process;
#[cfg(feature = "process")]
#[doc(alias = "asyncio.SubprocessProtocol")]
pub use loop_process::SubprocessProtocol;
#[cfg(feature = "process")]
#[doc(alias = "asyncio.SubprocessTransport")]
pub use loop_process::SubprocessTransport;

/// Everything a program usually needs, for `use aioloop::prelude::*;`.
///
/// It exports no item named `Future`, so std's `Future` trait (in the
/// edition-2024 prelude) keeps its name: `impl Future<Output = ()>` means
/// the trait. asyncio's future type is [`crate::Future`] (reach it by path,
/// or get one from `lp.create_future()`).
pub mod prelude {
    pub use loop_core::{gather, shield, wait_for, ReturnWhen};
    pub use loop_core::{
        running_loop, ErrorKind, EventLoop, ExceptionContext, Executor, Handle, LoopError,
        LoopHandle, Task, TimerHandle,
    };
    #[cfg(feature = "net")]
    pub use loop_net::PipeLoopExt;
    #[cfg(feature = "net")]
    pub use loop_net::SendfileLoopExt;
    #[cfg(feature = "net")]
    pub use loop_net::{
        AnyProtocol, BaseProtocol, Buffered, BufferedProtocol, ConnectOptions, ExtraInfo,
        IntoProtocol, NetLoopExt, Protocol, ProtocolHandle, Server, ServerOptions, SockAddr,
        StreamLoopExt, Transport, WriteBufferLimits,
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
    pub use loop_process::signal::*;
    #[cfg(feature = "process")]
    pub use loop_process::{
        Process, SignalLoopExt, SignalStream, Stdio, SubprocessLoopExt, SubprocessOptions,
        SubprocessProtocol, SubprocessTransport,
    };
}
