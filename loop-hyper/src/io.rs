//! [`HyperStream`]: a connection of the loop as hyper's I/O.
//!
//! # Who buffers, who copies
//! The connection's protocol appends what `data_received` hands it (a slice
//! of the transport's shared read buffer) to the stream's buffer, and
//! hyper's `poll_read` copies from there into hyper's own buffer
//! (`put_slice`, no zeroing of hyper's uninitialised memory). Writes go
//! straight to the [`Transport`] (sent at once, only the rest buffered),
//! vectored writes as one `writelines` (one `sendmsg`).
//!
//! # Who polls hyper
//! A served connection's future is polled by a [`Driver`] straight from
//! the protocol callbacks (driver.rs says why: one reactor poll per request
//! instead of two); a client's stream is polled by the user's task, which
//! the protocol wakes.
//!
//! # Backpressure
//! Reading: once [`MAX_BUFFERED`] bytes wait unread the transport is paused,
//! and resumed when hyper has taken half of them. Writing: `poll_write` and
//! `poll_flush` are `Pending` while the transport's buffer is above its
//! high-water mark (between `pause_writing` and `resume_writing`).
//!
//! # Borrows
//! The shared I/O state is borrowed only for bookkeeping: never while hyper
//! is polled, a waker is woken, or a transport method is called (a `write`
//! may call `pause_writing`, a `resume_reading` may deliver data at once).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use loop_core::EventLoop;
use loop_net::{
    AnyProtocol, BaseProtocol, ConnectOptions, IntoProtocol, Protocol, ProtocolHandle,
    StreamLoopExt, Transport,
};

use crate::driver::Driver;

/// Unread bytes at which reading pauses (resumed at half of it).
pub const MAX_BUFFERED: usize = 64 * 1024;

/// What to do with the stream once `connection_made` ran (the server's
/// "serve this connection"): a [`Driver`] to poll inline, or `None` when
/// the stream went to a task.
pub(crate) type OnMade = Box<dyn FnOnce(HyperStream) -> Option<Rc<Driver>>>;

/// The I/O state a [`HyperStream`] and its protocol share. It lives outside
/// the protocol's cell: the driver polls hyper from inside protocol
/// callbacks, while the transport holds that cell.
#[derive(Default)]
pub(crate) struct IoState {
    /// Received bytes not yet read: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    /// `Some` once `connection_lost` ran: its error, if any.
    lost: Option<Option<io::Error>>,
    read_paused: bool,
    write_paused: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl IoState {
    fn unread(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The wakers to wake for a change.
    fn take_wakers(&mut self) -> [Option<Waker>; 2] {
        [self.read_waker.take(), self.write_waker.take()]
    }
}

pub(crate) type Shared = Rc<RefCell<IoState>>;

/// The protocol behind a [`HyperStream`]: feeds the shared state, then
/// polls the connection's driver inline (served connections) or wakes the
/// waiting task (a client's stream).
pub(crate) struct HyperProtocol {
    shared: Shared,
    on_made: Option<OnMade>,
    driver: Option<Rc<Driver>>,
    transport: Option<Transport>,
}

impl HyperProtocol {
    pub(crate) fn new(on_made: Option<OnMade>) -> HyperProtocol {
        HyperProtocol {
            shared: Rc::default(),
            on_made,
            driver: None,
            transport: None,
        }
    }

    /// Something changed: poll the connection (inline) or wake its task.
    /// No borrow of the shared state is held here.
    fn notify(&self) {
        match &self.driver {
            Some(d) => d.poll_now(),
            None => {
                let wakers = self.shared.borrow_mut().take_wakers();
                wakers.into_iter().flatten().for_each(Waker::wake);
            }
        }
    }
}

fn store_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A copy of a connection's error (`io::Error` is not `Clone`).
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl BaseProtocol for HyperProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport.clone());
        if let Some(on_made) = self.on_made.take() {
            let stream = HyperStream {
                shared: self.shared.clone(),
                transport,
            };
            self.driver = on_made(stream);
            if let Some(d) = &self.driver {
                // hyper's first poll: it starts reading (and its timers).
                d.poll_now();
            }
        }
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.shared.borrow_mut().lost = Some(error);
        self.transport = None;
        self.on_made = None;
        self.notify();
    }

    fn pause_writing(&mut self) {
        self.shared.borrow_mut().write_paused = true;
    }

    fn resume_writing(&mut self) {
        self.shared.borrow_mut().write_paused = false;
        self.notify();
    }
}

impl Protocol for HyperProtocol {
    fn data_received(&mut self, data: &[u8]) {
        let pause = {
            let mut s = self.shared.borrow_mut();
            if s.start == s.buf.len() {
                s.buf.clear();
                s.start = 0;
            } else if s.start > 0 && s.start >= s.buf.len() / 2 {
                let start = s.start;
                s.buf.drain(..start);
                s.start = 0;
            }
            s.buf.extend_from_slice(data);
            let pause = s.unread() >= MAX_BUFFERED && !s.read_paused;
            if pause {
                s.read_paused = true;
            }
            pause
        };
        if pause {
            if let Some(t) = &self.transport {
                t.pause_reading();
            }
        }
        self.notify();
    }

    fn eof_received(&mut self) -> bool {
        self.shared.borrow_mut().eof = true;
        self.notify();
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
    shared: Shared,
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
pub(crate) struct IntoHyper(pub(crate) HyperProtocol);

impl IntoProtocol for IntoHyper {
    type Handle = Shared;
    fn into_protocol(self) -> (AnyProtocol, Shared) {
        let shared = self.0.shared.clone();
        let handle = ProtocolHandle::new(self.0);
        (AnyProtocol::from(handle), shared)
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
    /// already connected socket in [`ConnectOptions::sock`]...).
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
        let (transport, shared) = lp
            .create_connection(|| IntoHyper(HyperProtocol::new(None)), host, port, options)
            .await?;
        Ok(HyperStream { shared, transport })
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
        let mut p = self.shared.borrow_mut();
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
        Some(match &self.shared.borrow().lost {
            Some(Some(e)) => copy_error(e),
            _ => io::Error::new(io::ErrorKind::ConnectionReset, "Connection lost"),
        })
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
            let mut p = self.shared.borrow_mut();
            if p.unread() == 0 {
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
            let n = buf.remaining().min(p.unread());
            let start = p.start;
            buf.put_slice(&p.buf[start..start + n]);
            p.start += n;
            let resume = p.read_paused && p.unread() <= MAX_BUFFERED / 2;
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
        let mut p = self.shared.borrow_mut();
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
