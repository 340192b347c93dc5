//! [`FlowControl`] (asyncio's `FlowControlMixin`, plus the close waiter of
//! its `StreamReaderProtocol`) and [`StreamWriter`].
//!
//! # Who does what
//! - The **transport** buffers every byte written (it sends what the
//!   kernel takes at once and keeps the rest); it calls its protocol's
//!   `pause_writing` above the high-water mark and `resume_writing` at the
//!   low-water mark, and `connection_lost` once.
//! - The **protocol** forwards those three calls to a [`FlowControl`].
//!   [`StreamReaderProtocol`](crate::StreamReaderProtocol) does; so can any
//!   protocol of another crate (a subprocess's stdin pipe, for one).
//! - The **writer** writes to the transport and waits on the `FlowControl`:
//!   [`StreamWriter::drain`] waits while writing is paused and fails once
//!   the connection is lost; [`StreamWriter::wait_closed`] waits for
//!   `connection_lost`.
//!
//! All waiting is done with wakers (no loop is needed). The state is an
//! `Rc<RefCell<_>>` whose borrow is released before any waker is woken.

use std::cell::{RefCell, RefMut};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use loop_core::LoopError;

use crate::streams::error::clone_io_error;
use crate::streams::reader::{next_id, StreamReader};
use crate::transport::{ExtraInfo, Transport};

/// One `drain` waiting for `resume_writing` or `connection_lost`.
struct DrainWaiter {
    id: u64,
    waker: Option<Waker>,
    /// Set when the waiter is released: `Ok` by `resume_writing` (or a clean
    /// `connection_lost`), the error of the `connection_lost` otherwise.
    outcome: Option<io::Result<()>>,
}

#[derive(Default)]
struct FlowInner {
    paused: bool,
    /// `Some` once `connection_lost` ran: its error, if any.
    lost: Option<Option<io::Error>>,
    drain_waiters: Vec<DrainWaiter>,
    close_waiters: Vec<(u64, Waker)>,
}

fn connection_lost_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "Connection lost")
}

/// Write flow control for a stream: tracks `pause_writing` /
/// `resume_writing` / `connection_lost` and lets writers wait on them
/// (asyncio's `FlowControlMixin`, and the "closed" future of its
/// `StreamReaderProtocol`).
///
/// A cheap handle (an `Rc`): the protocol keeps one clone and forwards its
/// three callbacks to it, the [`StreamWriter`] keeps another.
///
/// ```
/// use loop_net::FlowControl;
/// let flow = FlowControl::new();
/// // What a protocol does in its callbacks:
/// flow.pause_writing();
/// assert!(flow.is_paused());
/// flow.resume_writing();
/// flow.connection_lost(None);
/// // Now a drain fails, and wait_closed is done.
/// futures_lite::future::block_on(async {
///     assert_eq!(flow.drain().await.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
///     flow.wait_closed().await.unwrap();
/// });
/// ```
#[doc(alias = "asyncio.streams.FlowControlMixin")]
#[derive(Clone, Default)]
pub struct FlowControl {
    inner: Rc<RefCell<FlowInner>>,
}

impl fmt::Debug for FlowControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(i) => f
                .debug_struct("FlowControl")
                .field("paused", &i.paused)
                .field("lost", &i.lost)
                .field("drain_waiters", &i.drain_waiters.len())
                .finish(),
            Err(_) => f.write_str("FlowControl { <busy> }"),
        }
    }
}

impl FlowControl {
    /// Not paused, not lost.
    pub fn new() -> FlowControl {
        FlowControl::default()
    }

    fn state(&self) -> RefMut<'_, FlowInner> {
        // Never held across foreign code (wakers), so never borrowed twice.
        self.inner.borrow_mut()
    }

    /// The transport's buffer went above its high-water mark: drains wait
    /// from now on. Call it from your protocol's `pause_writing`.
    /// Idempotent.
    #[doc(alias = "FlowControlMixin.pause_writing")]
    pub fn pause_writing(&self) {
        self.state().paused = true;
    }

    /// The buffer drained to the low-water mark: wakes every waiting drain.
    /// Call it from your protocol's `resume_writing`. Idempotent.
    #[doc(alias = "FlowControlMixin.resume_writing")]
    pub fn resume_writing(&self) {
        let wakers = {
            let mut inner = self.state();
            inner.paused = false;
            release(&mut inner.drain_waiters, || Ok(()))
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The connection is lost (`error`: why, `None` after a clean close):
    /// wakes `wait_closed`; if writing was paused, releases the waiting
    /// drains, with `Ok` (clean) or a copy of the error, as asyncio does.
    /// Later drains fail with `ConnectionReset` ("Connection lost"). Call it
    /// from your protocol's `connection_lost`; only the first call counts.
    #[doc(alias = "FlowControlMixin.connection_lost")]
    pub fn connection_lost(&self, error: Option<&io::Error>) {
        let wakers = {
            let mut inner = self.state();
            if inner.lost.is_some() {
                return;
            }
            inner.lost = Some(error.map(clone_io_error));
            let mut wakers: Vec<Waker> = std::mem::take(&mut inner.close_waiters)
                .into_iter()
                .map(|(_, w)| w)
                .collect();
            if inner.paused {
                wakers.extend(release(&mut inner.drain_waiters, || match error {
                    Some(e) => Err(clone_io_error(e)),
                    None => Ok(()),
                }));
            }
            wakers
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether writing is paused.
    pub fn is_paused(&self) -> bool {
        self.state().paused
    }

    /// Whether `connection_lost` was called.
    pub fn is_connection_lost(&self) -> bool {
        self.state().lost.is_some()
    }

    /// asyncio's `_drain_helper`: fails with `ConnectionReset` ("Connection
    /// lost") once the connection is lost; returns at once when writing is
    /// not paused; else waits for `resume_writing` (`Ok`) or
    /// `connection_lost` (`Ok` or its error). Any number may wait at once.
    #[doc(alias = "FlowControlMixin._drain_helper")]
    pub fn drain(&self) -> impl Future<Output = io::Result<()>> + 'static {
        FlowWait {
            flow: self.clone(),
            reg: None,
            poll: FlowControl::poll_drain,
        }
    }

    /// Waits until `connection_lost` is called: `Ok` after a clean close,
    /// a copy of its error otherwise (asyncio's close waiter, what
    /// `StreamWriter.wait_closed` awaits).
    pub fn wait_closed(&self) -> impl Future<Output = io::Result<()>> + 'static {
        FlowWait {
            flow: self.clone(),
            reg: None,
            poll: FlowControl::poll_closed,
        }
    }

    /// The poll form of [`drain`](Self::drain); `reg` holds the registration
    /// between polls (drop it with [`unregister`](Self::unregister)).
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        reg: &mut Option<u64>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.state();
        if let Some(id) = *reg {
            if let Some(pos) = inner.drain_waiters.iter().position(|w| w.id == id) {
                if inner.drain_waiters[pos].outcome.is_some() {
                    let w = inner.drain_waiters.remove(pos);
                    *reg = None;
                    return Poll::Ready(w.outcome.unwrap_or(Ok(())));
                }
                inner.drain_waiters[pos].waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            *reg = None;
        }
        if inner.lost.is_some() {
            return Poll::Ready(Err(connection_lost_error()));
        }
        if !inner.paused {
            return Poll::Ready(Ok(()));
        }
        let id = next_id();
        inner.drain_waiters.push(DrainWaiter {
            id,
            waker: Some(cx.waker().clone()),
            outcome: None,
        });
        *reg = Some(id);
        Poll::Pending
    }

    /// The poll form of [`wait_closed`](Self::wait_closed).
    pub(crate) fn poll_closed(
        &self,
        cx: &mut Context<'_>,
        reg: &mut Option<u64>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.state();
        if let Some(lost) = &inner.lost {
            let out = match lost {
                Some(e) => Err(clone_io_error(e)),
                None => Ok(()),
            };
            *reg = None;
            return Poll::Ready(out);
        }
        let id = *reg.get_or_insert_with(next_id);
        match inner.close_waiters.iter_mut().find(|(w, _)| *w == id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => inner.close_waiters.push((id, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Drops a registration of `poll_drain` / `poll_closed`.
    pub(crate) fn unregister(&self, reg: &mut Option<u64>) {
        if let Some(id) = reg.take() {
            if let Ok(mut inner) = self.inner.try_borrow_mut() {
                inner.drain_waiters.retain(|w| w.id != id);
                inner.close_waiters.retain(|(w, _)| *w != id);
            }
        }
    }

    /// The error a writer gets once the connection is lost: a copy of the
    /// connection's error, else `ConnectionReset`.
    pub(crate) fn lost_error(&self) -> Option<io::Error> {
        match &self.state().lost {
            Some(Some(e)) => Some(clone_io_error(e)),
            Some(None) => Some(connection_lost_error()),
            None => None,
        }
    }
}

/// Gives every waiter without an outcome the outcome `make()`; returns the
/// wakers to wake.
fn release(waiters: &mut [DrainWaiter], make: impl Fn() -> io::Result<()>) -> Vec<Waker> {
    let mut wakers = Vec::new();
    for w in waiters.iter_mut().filter(|w| w.outcome.is_none()) {
        w.outcome = Some(make());
        wakers.extend(w.waker.take());
    }
    wakers
}

/// A wait on a [`FlowControl`] ([`drain`](FlowControl::drain) or
/// [`wait_closed`](FlowControl::wait_closed)): `poll` with the registration
/// held between polls, dropped with the future.
struct FlowWait {
    flow: FlowControl,
    reg: Option<u64>,
    poll: fn(&FlowControl, &mut Context<'_>, &mut Option<u64>) -> Poll<io::Result<()>>,
}

impl Future for FlowWait {
    type Output = io::Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The awaiting task's cancellation (drain, wait_closed): the wait
        // ends, its registration is dropped with it.
        if let Some(err) = loop_core::take_cancellation() {
            this.flow.unregister(&mut this.reg);
            return Poll::Ready(Err(err.into()));
        }
        (this.poll)(&this.flow, cx, &mut this.reg)
    }
}

impl Drop for FlowWait {
    fn drop(&mut self) {
        self.flow.unregister(&mut self.reg);
    }
}

/// A stream's writing side: a [`Transport`] plus the [`FlowControl`] its
/// protocol feeds, and optionally the [`StreamReader`] of the same
/// connection (asyncio's `StreamWriter`).
///
/// Writes go to the transport at once (it buffers what the kernel does not
/// take); [`drain`](Self::drain) is the backpressure point. Dropping the
/// writer closes the transport if it is not closing already (asyncio's
/// `StreamWriter.__del__`, without the warning): keep the writer for as long
/// as the connection should live.
///
/// Over any transport whose protocol forwards `pause_writing`,
/// `resume_writing` and `connection_lost` to the `FlowControl`:
///
/// ```
/// use std::io::Read;
/// use loop_core::EventLoop;
/// use loop_net::{BaseProtocol, FlowControl, PipeLoopExt, Protocol, StreamWriter};
///
/// /// A protocol of your own (here for a pipe) that feeds a FlowControl.
/// struct Feeds(FlowControl);
/// impl BaseProtocol for Feeds {
///     fn pause_writing(&mut self) { self.0.pause_writing() }
///     fn resume_writing(&mut self) { self.0.resume_writing() }
///     fn connection_lost(&mut self, e: Option<std::io::Error>) { self.0.connection_lost(e.as_ref()) }
/// }
/// impl Protocol for Feeds {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let lp = EventLoop::new()?;
/// let (read_end, write_end) = rustix::pipe::pipe()?;
/// let reader = std::thread::spawn(move || {
///     let mut got = Vec::new();
///     std::fs::File::from(read_end).read_to_end(&mut got).map(|_| got)
/// });
/// let l = lp.clone();
/// lp.run_until_complete(async move {
///     let flow = FlowControl::new();
///     let f = flow.clone();
///     let (transport, _) = l.connect_write_pipe(move || Feeds(f), write_end).await?;
///     let writer = StreamWriter::new(transport, flow, None);
///     writer.write(&vec![7u8; 300_000])?;
///     writer.drain().await?; // waits while the pipe's reader catches up
///     writer.write_eof()?; // a write pipe closes after its buffer is sent
///     writer.wait_closed().await
/// })??;
/// assert_eq!(reader.join().unwrap()?.len(), 300_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It also implements [`futures_lite::io::AsyncWrite`]; see
/// [`StreamPair`](crate::StreamPair) for the semantics.
#[doc(alias = "asyncio.StreamWriter")]
pub struct StreamWriter {
    transport: Transport,
    flow: FlowControl,
    reader: Option<StreamReader>,
    /// The `AsyncWrite` side's registrations (poll_write/poll_flush, and
    /// poll_close).
    io_drain: Option<u64>,
    io_close: Option<u64>,
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter")
            .field("transport", &self.transport)
            .field("flow", &self.flow)
            .field("reader", &self.reader)
            .finish()
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.flow.unregister(&mut self.io_drain);
        self.flow.unregister(&mut self.io_close);
        if !self.transport.is_closing() {
            self.transport.close();
        }
    }
}

impl StreamWriter {
    /// A writer over `transport`, waiting on `flow` (which the transport's
    /// protocol must feed), with the connection's `reader` if any (its
    /// exception fails [`drain`](Self::drain), as in asyncio).
    pub fn new(
        transport: Transport,
        flow: FlowControl,
        reader: Option<StreamReader>,
    ) -> StreamWriter {
        StreamWriter {
            transport,
            flow,
            reader,
            io_drain: None,
            io_close: None,
        }
    }

    /// The transport (asyncio's `StreamWriter.transport`).
    #[doc(alias = "StreamWriter.transport")]
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The flow control this writer waits on.
    pub fn flow_control(&self) -> &FlowControl {
        &self.flow
    }

    /// The reader given at creation.
    pub fn reader(&self) -> Option<&StreamReader> {
        self.reader.as_ref()
    }

    /// Writes `data` through the transport ([`Transport::write`]): sent or
    /// buffered at once, never blocking. Follow with
    /// [`drain`](Self::drain) to respect backpressure. `InvalidState` after
    /// [`write_eof`](Self::write_eof); after the connection is lost the
    /// bytes are dropped and counted, as in asyncio.
    #[doc(alias = "StreamWriter.write")]
    pub fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.transport.write(data)
    }

    /// Writes `data`, a buffer the transport may keep instead of copying it
    /// ([`Transport::write_owned`]: a write pipe, such as a child's stdin,
    /// keeps it; other transports copy). Otherwise as [`write`](Self::write).
    #[doc(alias = "StreamWriter.write")]
    pub fn write_owned<B: AsRef<[u8]> + 'static>(&self, data: B) -> Result<(), LoopError> {
        self.transport.write_owned(data)
    }

    /// Writes several buffers ([`Transport::writelines`]).
    #[doc(alias = "StreamWriter.writelines")]
    pub fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.transport.writelines(chunks)
    }

    /// Closes the writing side once the buffer is sent ([`Transport::write_eof`]).
    #[doc(alias = "StreamWriter.write_eof")]
    pub fn write_eof(&self) -> Result<(), LoopError> {
        self.transport.write_eof()
    }

    /// Whether the transport supports [`write_eof`](Self::write_eof).
    #[doc(alias = "StreamWriter.can_write_eof")]
    pub fn can_write_eof(&self) -> bool {
        self.transport.can_write_eof()
    }

    /// Closes the transport (after its buffer is sent). Idempotent. Await
    /// [`wait_closed`](Self::wait_closed) to know when it is done.
    #[doc(alias = "StreamWriter.close")]
    pub fn close(&self) {
        self.transport.close()
    }

    /// Whether the transport is closing or closed.
    #[doc(alias = "StreamWriter.is_closing")]
    pub fn is_closing(&self) -> bool {
        self.transport.is_closing()
    }

    /// Waits until the connection is lost: `Ok` after a clean close, a copy
    /// of the connection's error otherwise (asyncio's `wait_closed`).
    #[doc(alias = "StreamWriter.wait_closed")]
    pub fn wait_closed(&self) -> impl Future<Output = io::Result<()>> + 'static {
        self.flow.wait_closed()
    }

    /// Waits until it is appropriate to write more (asyncio's `drain`):
    /// fails with the reader's exception if it has one; if the transport is
    /// closing, yields once (so that `connection_lost` may run) before
    /// checking; fails with `ConnectionReset` once the connection is lost;
    /// waits while writing is paused.
    #[doc(alias = "StreamWriter.drain")]
    pub async fn drain(&self) -> io::Result<()> {
        if let Some(e) = self.reader.as_ref().and_then(|r| r.exception()) {
            return Err(e);
        }
        if self.transport.is_closing() {
            futures_lite::future::yield_now().await;
        }
        self.flow.drain().await
    }

    /// asyncio's `get_extra_info` ([`Transport::get_extra_info`]).
    #[doc(alias = "StreamWriter.get_extra_info")]
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.transport.get_extra_info(name)
    }

    /// The `AsyncWrite` side's check before a write: `Ok(true)` to write,
    /// `Pending` while paused.
    fn poll_ready_to_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.flow.lost_error() {
            return Poll::Ready(Err(e));
        }
        if self.transport.is_closing() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream writer is closing",
            )));
        }
        self.flow.poll_drain(cx, &mut self.io_drain)
    }
}

fn loop_to_io(e: LoopError) -> io::Error {
    io::Error::from(e)
}

impl futures_lite::io::AsyncWrite for StreamWriter {
    /// Waits while writing is paused (the transport's buffer is above its
    /// high-water mark), then hands all of `buf` to the transport, which
    /// sends what it can at once and buffers the rest: `Ok(buf.len())`.
    /// Errors: the connection's error (or `ConnectionReset`) once it is
    /// lost; `BrokenPipe` once the writer is closing.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.poll_ready_to_write(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => Poll::Ready(
                self.transport
                    .write(buf)
                    .map(|()| buf.len())
                    .map_err(loop_to_io),
            ),
        }
    }

    /// As `poll_write`, with every buffer in one `writelines`.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        match self.poll_ready_to_write(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let chunks: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
                Poll::Ready(
                    self.transport
                        .writelines(&chunks)
                        .map(|()| total)
                        .map_err(loop_to_io),
                )
            }
        }
    }

    /// Succeeds when nothing is left to deliver; fails only when buffered
    /// bytes could not be delivered. In order:
    /// - the connection was aborted or failed with bytes still buffered:
    ///   the connection's error (or `ConnectionReset`);
    /// - the connection is lost otherwise, or the transport is closing
    ///   (a close started here, by `poll_close` or
    ///   [`close`](StreamWriter::close), sends the buffer by itself and
    ///   `poll_close` reports how it ended): `Ok`;
    /// - writing is paused (the buffer is above its high-water mark):
    ///   `Pending` until it resumes;
    /// - else `Ok`: the transport sends what it holds by itself, as the
    ///   kernel sends a socket's buffer after tokio's no-op flush.
    ///
    /// Unlike [`drain`](StreamWriter::drain) (asyncio's, unchanged), a lost
    /// connection with nothing buffered is not an error here: futures-io
    /// users (hyper, async-tungstenite, `io::copy`) flush between the polls
    /// of a close and expect `Ok`, as tokio and async-io give.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let undelivered = || this.flow.lost_error().unwrap_or_else(connection_lost_error);
        if this.transport.dropped_on_loss() > 0 {
            this.flow.unregister(&mut this.io_drain);
            return Poll::Ready(Err(undelivered()));
        }
        if this.flow.is_connection_lost() || this.transport.is_closing() {
            this.flow.unregister(&mut this.io_drain);
            return Poll::Ready(Ok(()));
        }
        match this.flow.poll_drain(cx, &mut this.io_drain) {
            Poll::Ready(Err(_)) if this.transport.dropped_on_loss() == 0 => Poll::Ready(Ok(())),
            other => other,
        }
    }

    /// Closes the transport (which sends its buffer first) and waits for
    /// `connection_lost`: `Ok` after a clean close, the connection's error
    /// otherwise. Closes the whole connection, reading too; for a
    /// half-close use [`StreamWriter::write_eof`].
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.transport.is_closing() {
            self.transport.close();
        }
        let this = &mut *self;
        this.flow.poll_closed(cx, &mut this.io_close)
    }
}
