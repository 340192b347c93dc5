//! asyncio's high-level streams over aioloop's transports:
//! [`StreamReaderProtocol`], [`StreamPair`] (one `AsyncRead + AsyncWrite`
//! value) and [`StreamsLoopExt`] (`open_connection`, `start_server`, the
//! Unix forms).
//!
//! The reader and the writer live in `streams/reader.rs` and
//! `streams/writer.rs`, each with its invariants; this is the design they
//! share.
//!
//! # Who buffers
//! asyncio's `streams.py` over the transports, with wakers only: no loop is
//! needed to feed or to read. The [`StreamReader`] holds every received
//! byte (fed by [`StreamReaderProtocol`]'s `data_received`); the transport
//! holds every unsent byte ([`StreamWriter::write`] goes straight to
//! [`Transport::write`](crate::Transport::write)). Nothing else copies.
//!
//! # Backpressure
//! - Reading: past twice the limit the reader pauses the transport's
//!   reading; a read that leaves the buffer at or below the limit, or a read
//!   that must wait, resumes it (asyncio's `_maybe_resume_transport` and
//!   `_wait_for_data`).
//! - Writing: the protocol forwards `pause_writing`, `resume_writing` and
//!   `connection_lost` to a [`FlowControl`] (public, so that loop-process's
//!   stdin pipe protocol can feed one), and `drain` waits on it exactly as
//!   asyncio's `_drain_helper` does: `ConnectionReset` once lost, and a
//!   `connection_lost(None)` while paused releases the waiters with `Ok`.
//! - One read waits at a time (`AlreadyWaiting` otherwise); `eof_received`
//!   returns `true` (half-open) except over TLS. Dropping a `StreamWriter`
//!   closes its transport (asyncio's `__del__`).
//!
//! # futures-io
//! `poll_read` copies from the reader's buffer. `poll_write` is `Pending`
//! while writing is paused, then hands the whole slice to the transport.
//! `poll_flush` is `Pending` while paused and fails only when buffered bytes
//! could not be delivered (the transport records what a forced close
//! dropped: [`Transport::dropped_on_loss`](crate::Transport::dropped_on_loss));
//! after a clean loss and while closing it is `Ok`, as tokio's and
//! async-io's are, because hyper, async-tungstenite and `io::copy` flush
//! between the polls of a close. It does not wait for the transport's
//! buffer to empty (the transport sends it by itself, as the kernel sends a
//! socket's). `drain` keeps asyncio's semantics (an error once lost).
//! `poll_close` closes the transport and waits for `connection_lost`. There
//! is no `AsyncBufRead`: the buffer sits behind a `RefCell` and cannot lend
//! a slice past a poll.

pub(crate) mod error;
pub(crate) mod reader;
pub(crate) mod writer;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use loop_core::{EventLoop, ExceptionContext, LoopError};

use crate::dns::Service;
use crate::protocol::{BaseProtocol, Protocol};
use crate::stream::connect::{ConnectOptions, ServerOptions};
use crate::stream::ext::StreamLoopExt;
use crate::stream::server::Server;
use crate::streams::error::clone_io_error;
use crate::streams::reader::{StreamReader, DEFAULT_LIMIT};
use crate::streams::writer::{FlowControl, StreamWriter};
use crate::transport::Transport;

type Connected = Box<dyn FnOnce(StreamReader, StreamWriter)>;

/// The protocol between a transport and a [`StreamReader`] /
/// [`FlowControl`] pair (asyncio's `StreamReaderProtocol`).
///
/// - `connection_made`: gives the reader the transport (for backpressure);
///   with a client-connected callback, builds the [`StreamWriter`] and calls
///   it with `(reader, writer)`.
/// - `data_received`: `feed_data`. `eof_received`: `feed_eof`, and keeps the
///   connection half-open (returns `true`, so the writer may still write)
///   except over TLS, as asyncio.
/// - `connection_lost`: `feed_eof` (clean) or `set_exception` (error) on the
///   reader, then [`FlowControl::connection_lost`]; the protocol lets go of
///   the reader.
/// - `pause_writing` / `resume_writing`: forwarded to the `FlowControl`.
#[doc(alias = "asyncio.StreamReaderProtocol")]
pub struct StreamReaderProtocol {
    reader: Option<StreamReader>,
    flow: FlowControl,
    on_connected: Option<Connected>,
    over_tls: bool,
}

impl fmt::Debug for StreamReaderProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReaderProtocol")
            .field("reader", &self.reader)
            .field("flow", &self.flow)
            .field("over_tls", &self.over_tls)
            .finish()
    }
}

impl StreamReaderProtocol {
    /// Feeds `reader` and `flow` (what `open_connection` uses); build the
    /// [`StreamWriter`] from the transport you get back.
    pub fn new(reader: StreamReader, flow: FlowControl) -> StreamReaderProtocol {
        StreamReaderProtocol {
            reader: Some(reader),
            flow,
            on_connected: None,
            over_tls: false,
        }
    }

    /// As [`new`](Self::new), and calls `on_connected(reader, writer)` from
    /// `connection_made` (what `start_server` uses, asyncio's
    /// `client_connected_cb`).
    pub fn with_client_connected(
        reader: StreamReader,
        flow: FlowControl,
        on_connected: impl FnOnce(StreamReader, StreamWriter) + 'static,
    ) -> StreamReaderProtocol {
        StreamReaderProtocol {
            reader: Some(reader),
            flow,
            on_connected: Some(Box::new(on_connected)),
            over_tls: false,
        }
    }

    /// The reader, until `connection_lost`.
    pub fn reader(&self) -> Option<&StreamReader> {
        self.reader.as_ref()
    }

    /// The flow control the protocol feeds.
    pub fn flow_control(&self) -> &FlowControl {
        &self.flow
    }
}

impl BaseProtocol for StreamReaderProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.over_tls = transport.get_extra_info("sslcontext").is_some();
        if let Some(reader) = &self.reader {
            // A reader handed to a second connection keeps its first
            // transport; its backpressure then stays with that one.
            let _ = reader.set_transport(transport.clone());
        }
        if let (Some(cb), Some(reader)) = (self.on_connected.take(), self.reader.clone()) {
            let writer = StreamWriter::new(transport, self.flow.clone(), Some(reader.clone()));
            cb(reader, writer);
        }
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        if let Some(reader) = self.reader.take() {
            match &error {
                None => reader.feed_eof(),
                Some(e) => reader.set_exception(clone_io_error(e)),
            }
        }
        self.flow.connection_lost(error.as_ref());
    }

    fn pause_writing(&mut self) {
        self.flow.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.flow.resume_writing();
    }
}

impl Protocol for StreamReaderProtocol {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(reader) = &self.reader {
            // Refused only after feed_eof, which a transport never follows
            // with data.
            let _ = reader.feed_data(data);
        }
    }

    fn eof_received(&mut self) -> bool {
        if let Some(reader) = &self.reader {
            reader.feed_eof();
        }
        // asyncio: True (stay half-open) except over TLS, where it would
        // have no effect.
        !self.over_tls
    }
}

/// What a [`start_server`](StreamsLoopExt::start_server) client task may
/// return: `()`, or a `Result<(), E>` whose error is reported to the loop's
/// exception handler (as asyncio reports a task's exception nobody
/// retrieved).
pub trait ClientTaskOutput: 'static {
    /// The error to report, if any.
    fn into_error(self) -> Option<LoopError>;
}

impl ClientTaskOutput for () {
    fn into_error(self) -> Option<LoopError> {
        None
    }
}

impl<E: Error + Send + Sync + 'static> ClientTaskOutput for Result<(), E> {
    fn into_error(self) -> Option<LoopError> {
        self.err().map(LoopError::exception)
    }
}

/// A connection's reader and writer as one value that implements both
/// [`futures_lite::io::AsyncRead`] and [`futures_lite::io::AsyncWrite`] (the
/// `futures-io` traits), for crates that take one `AsyncRead + AsyncWrite`
/// stream (WebSocket, HTTP, TLS and compression crates written against
/// `futures-io`).
///
/// # Semantics of the `futures-io` traits
///
/// | method | behaviour |
/// |---|---|
/// | `poll_read` | copies buffered bytes (at most `buf.len()`); `Ok(0)` at the end of file; the reader's exception (the connection's error) as an error; else `Pending` until the protocol feeds more. Draining the buffer resumes a paused transport, as `read` does. |
/// | `poll_write` | `Pending` while writing is paused (the transport's buffer above its high-water mark); then the transport takes *all* of `buf` (sending what the kernel takes, buffering the rest): `Ok(buf.len())`. The connection's error (or `ConnectionReset`) once lost; `BrokenPipe` once closing. |
/// | `poll_write_vectored` | the same, as one `writelines`. |
/// | `poll_flush` | `Pending` while writing is paused; an error only when the connection was aborted or failed with bytes still buffered (they could not be delivered); else `Ok`, also after the connection is lost cleanly and while closing (tokio's and async-io's behaviour, which hyper and other crates rely on). It does *not* wait for the transport's buffer to empty (the transport keeps sending by itself, as the kernel does a socket's). [`StreamWriter::drain`] keeps asyncio's semantics. |
/// | `poll_close` | [`StreamWriter::close`] (the buffer is sent first), then `Pending` until `connection_lost`: `Ok` after a clean close, else its error. Closes both directions. |
///
/// There is no `AsyncBufRead`: the buffer lives in the shared reader, which
/// cannot lend a slice past a poll. Wrap the pair in
/// `futures_lite::io::BufReader` if a crate needs one.
#[derive(Debug)]
pub struct StreamPair {
    reader: StreamReader,
    writer: StreamWriter,
}

impl StreamPair {
    /// Combines a connection's reader and writer.
    pub fn new(reader: StreamReader, writer: StreamWriter) -> StreamPair {
        StreamPair { reader, writer }
    }

    /// The reader.
    pub fn reader(&self) -> &StreamReader {
        &self.reader
    }

    /// The writer.
    pub fn writer(&self) -> &StreamWriter {
        &self.writer
    }

    /// Splits back into the reader and the writer.
    pub fn into_parts(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

impl From<(StreamReader, StreamWriter)> for StreamPair {
    fn from((reader, writer): (StreamReader, StreamWriter)) -> StreamPair {
        StreamPair::new(reader, writer)
    }
}

impl futures_lite::io::AsyncRead for StreamPair {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.reader.poll_read_into(cx, buf)
    }
}

impl futures_lite::io::AsyncWrite for StreamPair {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's stream functions on [`EventLoop`]: `open_connection`,
/// `start_server`, `open_unix_connection`, `start_unix_server`.
///
/// Bring it into scope (`use loop_net::StreamsLoopExt;`, or
/// `use aioloop::prelude::*;`). Connections are made by
/// [`StreamLoopExt`]'s methods with a [`StreamReaderProtocol`], so every
/// option of those (`ConnectOptions`, `ServerOptions`, TLS) applies. The
/// `limit` of the `_with` forms is the [`StreamReader`]'s (default
/// [`DEFAULT_LIMIT`], 64 KiB); zero is an `InvalidInput` error.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_net::{ServerOptions, StreamReader, StreamWriter, StreamsLoopExt};
///
/// let lp = EventLoop::new()?;
/// let l = lp.clone();
/// let line = lp.run_until_complete(async move {
///     // An echo server of lines: the callback's future runs as a task.
///     let server = l
///         .start_server(
///             |r: StreamReader, w: StreamWriter| async move {
///                 let line = r.readline().await?;
///                 w.write(&line)?;
///                 w.drain().await
///             },
///             &["127.0.0.1"],
///             0,
///             ServerOptions::default(),
///         )
///         .await?;
///     let port = server.sockets()[0].as_inet().unwrap().port();
///     let (r, w) = l.open_connection("127.0.0.1", port).await?;
///     w.write(b"hello\n")?;
///     let line = r.readline().await?;
///     w.close();
///     w.wait_closed().await?;
///     server.close();
///     Ok::<_, std::io::Error>(line)
/// })??;
/// assert_eq!(line, b"hello\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait StreamsLoopExt: sealed::Sealed {
    /// Connects to `host:port` over TCP and returns the connection's reader
    /// and writer (asyncio's `asyncio.open_connection(host, port)`). The
    /// port is a number or a service name (a [`Service`], as for
    /// [`create_connection`](StreamLoopExt::create_connection)).
    #[doc(alias = "asyncio.open_connection")]
    fn open_connection(
        &self,
        host: &str,
        port: impl Into<Service>,
    ) -> impl Future<Output = io::Result<(StreamReader, StreamWriter)>> + 'static;

    /// [`open_connection`](Self::open_connection) with
    /// [`create_connection`](StreamLoopExt::create_connection)'s arguments
    /// (`host: None` with [`ConnectOptions::sock`]) and the reader's
    /// `limit` (asyncio's `limit=`).
    #[doc(alias = "asyncio.open_connection")]
    fn open_connection_with(
        &self,
        host: Option<&str>,
        port: impl Into<Service>,
        options: ConnectOptions,
        limit: usize,
    ) -> impl Future<Output = io::Result<(StreamReader, StreamWriter)>> + 'static;

    /// Listens like [`create_server`](StreamLoopExt::create_server) and calls
    /// `client_connected(reader, writer)` for each connection, from its
    /// `connection_made`; the future it returns runs as a task of the loop
    /// (asyncio's `asyncio.start_server`, whose coroutine callbacks become
    /// tasks). A plain callback returns `async {}`. A task ending in `Err`
    /// is reported to the exception handler. The writer closes its
    /// connection when dropped, so keep it as long as the connection is to
    /// stay open.
    #[doc(alias = "asyncio.start_server")]
    fn start_server<C, Fut>(
        &self,
        client_connected: C,
        hosts: &[&str],
        port: impl Into<Service>,
        options: ServerOptions,
    ) -> impl Future<Output = io::Result<Server>> + 'static
    where
        C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: ClientTaskOutput;

    /// [`start_server`](Self::start_server) with the readers' `limit`.
    #[doc(alias = "asyncio.start_server")]
    fn start_server_with_limit<C, Fut>(
        &self,
        client_connected: C,
        hosts: &[&str],
        port: impl Into<Service>,
        options: ServerOptions,
        limit: usize,
    ) -> impl Future<Output = io::Result<Server>> + 'static
    where
        C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: ClientTaskOutput;

    /// Connects to the Unix socket `path` (asyncio's
    /// `asyncio.open_unix_connection`); `limit` is the reader's (pass
    /// [`DEFAULT_LIMIT`] for asyncio's default).
    #[doc(alias = "asyncio.open_unix_connection")]
    fn open_unix_connection(
        &self,
        path: &Path,
        limit: usize,
    ) -> impl Future<Output = io::Result<(StreamReader, StreamWriter)>> + 'static;

    /// Listens on the Unix socket `path` like
    /// [`create_unix_server`](StreamLoopExt::create_unix_server), with
    /// [`start_server`](Self::start_server)'s callback (asyncio's
    /// `asyncio.start_unix_server`); `limit` is the readers'.
    #[doc(alias = "asyncio.start_unix_server")]
    fn start_unix_server<C, Fut>(
        &self,
        client_connected: C,
        path: &Path,
        options: ServerOptions,
        limit: usize,
    ) -> impl Future<Output = io::Result<Server>> + 'static
    where
        C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: ClientTaskOutput;
}

/// Connects a client through `connect` (given the protocol to drive) and
/// returns its reader and writer: what `open_connection` and
/// `open_unix_connection` share.
async fn open_stream<Fut, H>(
    limit: usize,
    connect: impl FnOnce(StreamReaderProtocol) -> Fut,
) -> io::Result<(StreamReader, StreamWriter)>
where
    Fut: Future<Output = io::Result<(Transport, H)>>,
{
    let reader = StreamReader::with_limit(limit)?;
    let flow = FlowControl::new();
    let protocol = StreamReaderProtocol::new(reader.clone(), flow.clone());
    let (transport, _) = connect(protocol).await?;
    let writer = StreamWriter::new(transport, flow, Some(reader.clone()));
    Ok((reader, writer))
}

/// The protocol factory of a stream server: each connection gets a reader,
/// a flow control and a callback that runs the user's future as a task. A
/// zero `limit` is an `InvalidInput` error.
fn server_factory<C, Fut>(
    lp: &EventLoop,
    client_connected: C,
    limit: usize,
) -> io::Result<impl Fn() -> StreamReaderProtocol + 'static>
where
    C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: ClientTaskOutput,
{
    if limit == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "Limit cannot be <= 0",
        ));
    }
    let cb = Rc::new(client_connected);
    let lp = lp.clone();
    Ok(move || {
        let cb = cb.clone();
        let lp = lp.clone();
        let reader = StreamReader::with_limit(limit).unwrap_or_default();
        StreamReaderProtocol::with_client_connected(reader, FlowControl::new(), move |r, w| {
            let fut = cb(r, w);
            let report = lp.clone();
            // A closed loop runs no task; the future is dropped (and with it
            // the writer, which closes the connection).
            let _ = lp.create_task(async move {
                if let Some(err) = fut.await.into_error() {
                    report.call_exception_handler(
                        ExceptionContext::new("Unhandled error in a start_server client task")
                            .with_error(err),
                    );
                }
            });
        })
    })
}

impl StreamsLoopExt for EventLoop {
    fn open_connection(
        &self,
        host: &str,
        port: impl Into<Service>,
    ) -> impl Future<Output = io::Result<(StreamReader, StreamWriter)>> + 'static {
        self.open_connection_with(Some(host), port, ConnectOptions::default(), DEFAULT_LIMIT)
    }

    fn open_connection_with(
        &self,
        host: Option<&str>,
        port: impl Into<Service>,
        options: ConnectOptions,
        limit: usize,
    ) -> impl Future<Output = io::Result<(StreamReader, StreamWriter)>> + 'static {
        let lp = self.clone();
        let host = host.map(str::to_owned);
        let port = port.into();
        async move {
            open_stream(limit, |protocol| {
                lp.create_connection(move || protocol, host.as_deref(), port, options)
            })
            .await
        }
    }

    fn start_server<C, Fut>(
        &self,
        client_connected: C,
        hosts: &[&str],
        port: impl Into<Service>,
        options: ServerOptions,
    ) -> impl Future<Output = io::Result<Server>> + 'static
    where
        C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: ClientTaskOutput,
    {
        self.start_server_with_limit(client_connected, hosts, port, options, DEFAULT_LIMIT)
    }

    fn start_server_with_limit<C, Fut>(
        &self,
        client_connected: C,
        hosts: &[&str],
        port: impl Into<Service>,
        options: ServerOptions,
        limit: usize,
    ) -> impl Future<Output = io::Result<Server>> + 'static
    where
        C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: ClientTaskOutput,
    {
        let lp = self.clone();
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let port = port.into();
        async move {
            let factory = server_factory(&lp, client_connected, limit)?;
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            lp.create_server(factory, &hosts, port, options).await
        }
    }

    fn open_unix_connection(
        &self,
        path: &Path,
        limit: usize,
    ) -> impl Future<Output = io::Result<(StreamReader, StreamWriter)>> + 'static {
        let lp = self.clone();
        let path = path.to_owned();
        async move {
            open_stream(limit, |protocol| {
                lp.create_unix_connection(move || protocol, &path)
            })
            .await
        }
    }

    fn start_unix_server<C, Fut>(
        &self,
        client_connected: C,
        path: &Path,
        options: ServerOptions,
        limit: usize,
    ) -> impl Future<Output = io::Result<Server>> + 'static
    where
        C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: ClientTaskOutput,
    {
        let lp = self.clone();
        let path = path.to_owned();
        async move {
            let factory = server_factory(&lp, client_connected, limit)?;
            lp.create_unix_server(factory, &path, options).await
        }
    }
}
