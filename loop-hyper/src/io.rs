//! [`HyperStream`]: a connection of the loop as hyper's I/O.
//!
//! # Who buffers, who copies
//! The connection's protocol is a [`BufferedProtocol`]: the transport
//! `recv`s straight into the protocol's buffer (no shared read buffer in
//! between), and hyper's `poll_read` copies from it into hyper's own buffer
//! (`put_slice`, no zeroing of hyper's uninitialised memory). Writes go
//! straight to the [`Transport`] (sent at once, only the rest buffered),
//! vectored writes as one `writelines` (one `sendmsg`).
//!
//! # Backpressure
//! Reading: once [`MAX_BUFFERED`] bytes wait unread the transport is paused,
//! and resumed when hyper has taken half of them. Writing: `poll_write` and
//! `poll_flush` are `Pending` while the transport's buffer is above its
//! high-water mark (between `pause_writing` and `resume_writing`).
//!
//! # Borrows
//! The protocol's state sits in the transport's protocol cell. The transport
//! borrows it only while it calls the protocol; `HyperStream` borrows it only
//! inside a poll, and releases it before it calls any transport method (a
//! `write` may call `pause_writing`, a `resume_reading` may deliver data at
//! once). Wakers are woken from protocol callbacks, which only schedules the
//! waiting task.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use loop_core::EventLoop;
use loop_net::{
    AnyProtocol, BaseProtocol, BufferedProtocol, ConnectOptions, IntoProtocol, ProtocolHandle,
    StreamLoopExt, Transport,
};

/// The smallest read buffer, allocated at the first read.
const INITIAL_BUFFER: usize = 8 * 1024;

/// Free space below which the buffer is compacted or grown before a read.
const MIN_READ: usize = 4 * 1024;

/// Unread bytes at which reading pauses (resumed at half of it).
pub const MAX_BUFFERED: usize = 64 * 1024;

/// What to do with the stream once `connection_made` ran (the server's
/// "serve this connection").
pub(crate) type OnMade = Box<dyn FnOnce(HyperStream)>;

/// The protocol behind a [`HyperStream`].
pub(crate) struct HyperProtocol {
    me: Weak<RefCell<HyperProtocol>>,
    on_made: Option<OnMade>,
    transport: Option<Transport>,
    /// Received bytes are `buf[start..end]`; `buf` is initialised memory.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// `Some` once `connection_lost` ran: its error, if any.
    lost: Option<Option<io::Error>>,
    read_paused: bool,
    write_paused: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl HyperProtocol {
    /// A new protocol in its cell, with `on_made` to run once connected.
    pub(crate) fn new_handle(on_made: Option<OnMade>) -> ProtocolHandle<HyperProtocol> {
        let handle = ProtocolHandle::new(HyperProtocol {
            me: Weak::new(),
            on_made,
            transport: None,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            lost: None,
            read_paused: false,
            write_paused: false,
            read_waker: None,
            write_waker: None,
        });
        handle.borrow_mut().me = Rc::downgrade(handle.cell());
        handle
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

fn store_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The error a lost connection gives: a copy of its error, or `None` after
/// a clean close.
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl BaseProtocol for HyperProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport.clone());
        if let (Some(on_made), Some(cell)) = (self.on_made.take(), self.me.upgrade()) {
            on_made(HyperStream {
                proto: ProtocolHandle::from_cell(cell),
                transport,
            });
        }
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.lost = Some(error);
        self.transport = None;
        self.on_made = None;
        self.wake_all();
    }

    fn pause_writing(&mut self) {
        self.write_paused = true;
    }

    fn resume_writing(&mut self) {
        self.write_paused = false;
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

impl BufferedProtocol for HyperProtocol {
    fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < MIN_READ {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let free = self.buf.len() - self.end;
            if free < MIN_READ {
                let len = self.buf.len();
                let grown = if len < MAX_BUFFERED {
                    (len * 2).clamp(INITIAL_BUFFER, MAX_BUFFERED)
                } else if free == 0 {
                    // Reading should have paused; never hand out nothing.
                    len + INITIAL_BUFFER
                } else {
                    len
                };
                self.buf.resize(grown, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    fn buffer_updated(&mut self, n: usize) {
        self.end += n;
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if self.end - self.start >= MAX_BUFFERED && !self.read_paused {
            self.read_paused = true;
            if let Some(t) = &self.transport {
                t.pause_reading();
            }
        }
    }

    fn eof_received(&mut self) -> bool {
        self.eof = true;
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        // Half-open: hyper decides when to close (it shuts down after its
        // last response).
        true
    }
}

/// A connection of the loop as hyper's I/O: implements [`hyper::rt::Read`]
/// and [`hyper::rt::Write`].
///
/// Get one from [`HyperStream::connect`] (a client), or let
/// [`serve_http1`](crate::serve_http1) / [`serve_http2`](crate::serve_http2)
/// make one per accepted connection. It is `!Send` (it lives on the loop's
/// thread), which hyper's connection builders accept.
///
/// | hyper method | behaviour |
/// |---|---|
/// | `poll_read` | copies what the transport received (one `recv` straight into this stream's buffer, no intermediate copy); at end of file nothing (hyper's EOF); the connection's error once lost by one; else `Pending` |
/// | `poll_write`, `poll_write_vectored` | `Pending` while the transport's buffer is above its high-water mark; then the transport takes all the bytes (sent at once as far as the kernel takes them, the rest buffered); an error once the connection is lost or closing |
/// | `poll_flush` | `Pending` while writing is paused; an error only if the connection was aborted or failed with bytes still buffered; else `Ok` |
/// | `poll_shutdown` | closes the transport (its buffer is sent first, in the background); `Ok` |
///
/// Dropping the stream closes the connection (after its buffer is sent).
pub struct HyperStream {
    proto: ProtocolHandle<HyperProtocol>,
    transport: Transport,
}

impl fmt::Debug for HyperStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperStream")
            .field("transport", &self.transport)
            .finish()
    }
}

/// The protocol factory's value for `create_connection`/`create_server`.
pub(crate) struct IntoHyper(pub(crate) ProtocolHandle<HyperProtocol>);

impl IntoProtocol for IntoHyper {
    type Handle = ProtocolHandle<HyperProtocol>;
    fn into_protocol(self) -> (AnyProtocol, ProtocolHandle<HyperProtocol>) {
        (AnyProtocol::buffered(self.0.clone()), self.0)
    }
}

impl HyperStream {
    /// Opens a TCP connection to `host:port` (as
    /// [`create_connection`](loop_net::StreamLoopExt::create_connection)),
    /// for a hyper client (`hyper::client::conn::http1::handshake`).
    pub async fn connect(lp: &EventLoop, host: &str, port: u16) -> io::Result<HyperStream> {
        HyperStream::connect_with(lp, host, port, ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with options (a bound local address, an
    /// already connected socket in [`ConnectOptions::sock`], TLS with
    /// feature `tls` of loop-net...).
    pub async fn connect_with(
        lp: &EventLoop,
        host: &str,
        port: u16,
        options: ConnectOptions,
    ) -> io::Result<HyperStream> {
        let host = if options.sock.is_some() {
            None
        } else {
            Some(host)
        };
        let (transport, proto) = lp
            .create_connection(
                || IntoHyper(HyperProtocol::new_handle(None)),
                host,
                port,
                options,
            )
            .await?;
        Ok(HyperStream { proto, transport })
    }

    /// The connection's transport (peer address, write buffer limits...).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The error to give once the connection is lost or closing.
    fn write_error(lost: &Option<Option<io::Error>>) -> io::Error {
        match lost {
            Some(Some(e)) => copy_error(e),
            Some(None) => io::Error::new(io::ErrorKind::ConnectionReset, "Connection lost"),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the stream is closing"),
        }
    }

    /// `Ready(Ok)` when a write may go to the transport now.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Ok(mut p) = self.proto.cell().try_borrow_mut() else {
            // Busy: only possible re-entrantly; try again next iteration.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        if p.lost.is_some() || self.transport.is_closing() {
            return Poll::Ready(Err(Self::write_error(&p.lost)));
        }
        if p.write_paused {
            store_waker(&mut p.write_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Bytes dropped unsent by an abort or failure: the flush error.
    fn undelivered(&self) -> Option<io::Error> {
        if self.transport.dropped_on_loss() == 0 {
            return None;
        }
        let lost = self.proto.cell().try_borrow().ok().map(|p| match &p.lost {
            Some(Some(e)) => copy_error(e),
            _ => io::Error::new(io::ErrorKind::ConnectionReset, "Connection lost"),
        });
        Some(lost.unwrap_or_else(|| io::Error::from(io::ErrorKind::ConnectionReset)))
    }
}

impl Drop for HyperStream {
    fn drop(&mut self) {
        if !self.transport.is_closing() {
            self.transport.close();
        }
    }
}

impl hyper::rt::Read for HyperStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let resume = {
            let Ok(mut p) = self.proto.cell().try_borrow_mut() else {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            };
            if p.start == p.end {
                if p.eof {
                    return Poll::Ready(Ok(()));
                }
                if let Some(lost) = &p.lost {
                    return Poll::Ready(match lost {
                        Some(e) => Err(copy_error(e)),
                        None => Ok(()),
                    });
                }
                store_waker(&mut p.read_waker, cx);
                return Poll::Pending;
            }
            let n = buf.remaining().min(p.end - p.start);
            let start = p.start;
            buf.put_slice(&p.buf[start..start + n]);
            p.start += n;
            let resume = p.read_paused && p.end - p.start <= MAX_BUFFERED / 2;
            if resume {
                p.read_paused = false;
            }
            resume
        };
        if resume {
            // May deliver data at once: our borrow is released.
            self.transport.resume_reading();
        }
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.poll_writable(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(
                self.transport
                    .write(buf)
                    .map(|()| buf.len())
                    .map_err(io::Error::from),
            ),
            other => other.map_ok(|()| 0),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        match self.poll_writable(cx) {
            Poll::Ready(Ok(())) => {
                // hyper writes a head and a body or two: no allocation.
                let mut few: [&[u8]; 8] = [&[]; 8];
                let written = if bufs.len() <= few.len() {
                    for (slot, b) in few.iter_mut().zip(bufs) {
                        *slot = b;
                    }
                    self.transport.writelines(&few[..bufs.len()])
                } else {
                    let all: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
                    self.transport.writelines(&all)
                };
                Poll::Ready(written.map(|()| total).map_err(io::Error::from))
            }
            other => other.map_ok(|()| 0),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.undelivered() {
            return Poll::Ready(Err(e));
        }
        let Ok(mut p) = self.proto.cell().try_borrow_mut() else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        if p.lost.is_none() && !self.transport.is_closing() && p.write_paused {
            store_waker(&mut p.write_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.transport.is_closing() {
            self.transport.close();
        }
        match self.undelivered() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }
}
