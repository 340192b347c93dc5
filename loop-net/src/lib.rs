//! asyncio's networking for aioloop: DNS, the `sock_*` methods, transports
//! and protocols (TCP, Unix, datagrams, pipes, TLS), servers and `sendfile`.
//!
//! # Should I be using this crate?
//!
//! Use it directly if you depend on `loop-core` alone and want networking;
//! otherwise depend on the `aioloop` facade, whose prelude brings the
//! extension traits into scope: [`NetLoopExt`] (DNS, `sock_*`),
//! [`StreamLoopExt`] (`create_connection`, `create_server`, Unix variants,
//! `connect_accepted_socket`), [`DatagramLoopExt`], [`PipeLoopExt`],
//! [`SendfileLoopExt`], [`StreamsLoopExt`] (asyncio's high-level streams:
//! `open_connection`, `start_server`) and, with the `tls` feature,
//! `TlsLoopExt` (`start_tls`).
//!
//! # The API at a glance
//!
//! The methods are those of the [`NetLoopExt`] trait, implemented for
//! [`loop_core::EventLoop`]:
//!
//! | asyncio | here |
//! |---|---|
//! | `await loop.getaddrinfo(host, port, family=, type=, proto=, flags=)` | [`NetLoopExt::getaddrinfo`] with [`AddrInfoHints`] → `Vec<`[`AddrInfo`]`>` |
//! | `await loop.getnameinfo(sockaddr, flags)` | [`NetLoopExt::getnameinfo`] with [`NameInfoFlags`] |
//! | `await loop.sock_recv(sock, n)` / `sock_recv_into(sock, buf)` | [`NetLoopExt::sock_recv`], [`NetLoopExt::sock_recv_into`] |
//! | `await loop.sock_recvfrom(sock, n)` / `sock_recvfrom_into(sock, buf)` | [`NetLoopExt::sock_recvfrom`], [`NetLoopExt::sock_recvfrom_into`] |
//! | `await loop.sock_sendall(sock, data)` / `sock_sendto(sock, data, addr)` | [`NetLoopExt::sock_sendall`], [`NetLoopExt::sock_sendto`] |
//! | `await loop.sock_connect(sock, addr)` / `sock_accept(sock)` | [`NetLoopExt::sock_connect`], [`NetLoopExt::sock_accept`] |
//! | `await loop.sock_sendfile(sock, file, offset, count, fallback=)` | [`NetLoopExt::sock_sendfile`] |
//! | `await loop.sendfile(transport, file, offset, count, fallback=)` | [`SendfileLoopExt::sendfile`] with [`SendfileFallback`] (or a `bool`) |
//! | `await loop.connect_read_pipe(factory, pipe)` / `connect_write_pipe(factory, pipe)` | [`PipeLoopExt::connect_read_pipe`], [`PipeLoopExt::connect_write_pipe`] (pipes, FIFOs, character devices, sockets) |
//! | `socket.gaierror` / `SendfileNotAvailableError` | [`ResolveError`], [`SendfileNotAvailableError`] (inside an `io::Error`) |
//! | `create_connection(..., all_errors=True)`'s `ExceptionGroup` | [`ConnectErrors`] (inside an `io::Error`; [`ConnectOptions::all_errors`]) |
//!
//! asyncio's high-level streams (beyond the low-level API), on
//! [`StreamsLoopExt`]:
//!
//! | asyncio | here |
//! |---|---|
//! | `await asyncio.open_connection(host, port, limit=, **kw)` | [`StreamsLoopExt::open_connection`], [`StreamsLoopExt::open_connection_with`] (with [`ConnectOptions`] and the limit) → ([`StreamReader`], [`StreamWriter`]) |
//! | `await asyncio.start_server(cb, host, port, limit=, **kw)` | [`StreamsLoopExt::start_server`], [`StreamsLoopExt::start_server_with_limit`] (the callback's future runs as a task; [`ClientTaskOutput`]) → [`Server`] |
//! | `await asyncio.open_unix_connection(path)` / `start_unix_server(cb, path)` | [`StreamsLoopExt::open_unix_connection`], [`StreamsLoopExt::start_unix_server`] |
//! | `StreamReader`: `read(n)`, `read()`, `readline()`, `readuntil(sep)`, `readexactly(n)`, `at_eof()`, `feed_data`, `feed_eof`, `set_exception`, `exception`, `set_transport` | [`StreamReader`] (`read`, `read_to_end`, `readline`, `readuntil`, `readexactly`, ...); errors: [`StreamError`], [`IncompleteReadError`], [`LimitOverrunError`] |
//! | `StreamWriter`: `write`, `writelines`, `write_eof`, `can_write_eof`, `close`, `is_closing`, `wait_closed()`, `drain()`, `get_extra_info`, `transport` | [`StreamWriter`] (built from a [`Transport`], a [`FlowControl`] and an optional reader) |
//! | `StreamReaderProtocol`, `FlowControlMixin` | [`StreamReaderProtocol`], [`FlowControl`] |
//! | (none: `futures-io`) | `AsyncRead` for [`StreamReader`], `AsyncWrite` for [`StreamWriter`], both for [`StreamPair`] |
//!
//! Addresses are [`SockAddr`]s (from `std::net::SocketAddr` or a Unix path).
//! Every method returns `std::io::Result`, as asyncio raises `OSError`.
//!
//! ```
//! use loop_core::EventLoop;
//! use loop_net::NetLoopExt;
//! use std::net::{TcpListener, TcpStream};
//! use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
//!
//! let lp = EventLoop::new()?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! listener.set_nonblocking(true)?;
//! let addr = listener.local_addr()?;
//! // A fresh non-blocking socket to connect with.
//! let client = socket_with(AddressFamily::INET, SocketType::STREAM, SocketFlags::NONBLOCK, None)?;
//!
//! let l = lp.clone();
//! let echoed = lp.run_until_complete(async move {
//!     l.sock_connect(&client, addr).await?;
//!     let (server, _peer) = l.sock_accept(&listener).await?;
//!     let server = TcpStream::from(server);
//!     l.sock_sendall(&client, b"ping").await?;
//!     let got = l.sock_recv(&server, 16).await?;
//!     l.sock_sendall(&server, &got).await?;
//!     l.sock_recv(&client, 16).await
//! })??;
//! assert_eq!(echoed, b"ping");
//! lp.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! - **DNS** calls the C library's `getaddrinfo`/`getnameinfo` on a small
//!   resolver thread pool of its own (at most four threads, process-wide,
//!   started on demand and retired when idle), not on the default executor,
//!   so a busy executor cannot delay name resolution. Numeric input needs no
//!   lookup and is answered on the loop thread at once.
//! - **`sock_*`** try the syscall first and wait through the loop's
//!   level-triggered readers and writers only on `EAGAIN`; a dropped future
//!   unregisters at once; a socket that is always ready still lets the loop
//!   run timers and other tasks (a task yields after a bounded number of
//!   syscalls that did not wait).
//! - **`sock_sendfile`** uses `sendfile(2)` on Linux, with asyncio's read and
//!   send fallback.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
#![doc(test(attr(deny(warnings))))]

mod addr;
mod datagram;
mod dns;
mod ext;
mod flow;
pub mod lifecycle;
mod loop_slot;
mod owned_path;
mod pipe;
mod protocol;
mod readiness;
mod ring;
mod sendfile;
mod sock;
mod stream;
mod streams;
#[cfg(test)]
mod test_protocol;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
mod write_buffer;

pub use addr::SockAddr;
pub use datagram::ext::{DatagramAddr, DatagramLoopExt, DatagramOptions};
pub use datagram::{DatagramProtocol, DatagramTransport};
pub use dns::{
    AddrInfo, AddrInfoFlags, AddrInfoHints, AddressFamily, IpProtocol, NameInfoFlags, ResolveError,
    Service, SocketKind,
};
pub use ext::NetLoopExt;
pub use pipe::ext::PipeLoopExt;
pub use protocol::{
    AnyProtocol, BaseProtocol, BufferedProtocol, Condition, Protocol, ProtocolCell, ProtocolHandle,
    WaitUntil,
};
/// rustls, whose configurations TLS connections take (feature `tls`).
#[cfg(feature = "tls")]
pub use rustls;
pub use sendfile::transport::{SendfileFallback, SendfileLoopExt};
pub use sendfile::SendfileNotAvailableError;
pub use stream::connect::{Buffered, ConnectErrors, ConnectOptions, IntoProtocol, ServerOptions};
pub use stream::ext::StreamLoopExt;
pub use stream::server::Server;
pub use streams::error::{IncompleteReadError, LimitOverrunError, StreamError};
pub use streams::reader::{StreamReader, DEFAULT_LIMIT};
pub use streams::writer::{FlowControl, StreamWriter};
pub use streams::{ClientTaskOutput, StreamPair, StreamReaderProtocol, StreamsLoopExt};
#[cfg(feature = "tls")]
pub use tls::{
    CipherInfo, TlsClientOptions, TlsConfig, TlsLoopExt, TlsOptions, TlsServerOptions,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use transport::{ExtraInfo, Transport};
pub use write_buffer::WriteBufferLimits;
