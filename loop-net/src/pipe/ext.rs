//! [`PipeLoopExt`]: asyncio's `connect_read_pipe` and `connect_write_pipe`,
//! as an extension trait of [`EventLoop`].
//!
//! The transports themselves, and the invariants they keep, are described
//! in the `pipe` module's documentation (pipe.rs); in short: the fd must be
//! a pipe, FIFO, socket or character device (a regular file is refused), it
//! is made non-blocking and owned by the transport, `connection_made` comes
//! first and `connection_lost` exactly once, both through the loop.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;

use loop_core::EventLoop;

use crate::pipe::{ReadPipe, WritePipe};
use crate::stream::connect::IntoProtocol;
use crate::transport::Transport;

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's pipe methods on [`EventLoop`]: `connect_read_pipe` and
/// `connect_write_pipe`.
///
/// Bring it into scope (`use loop_net::PipeLoopExt;`, or
/// `use aioloop::prelude::*;`). The pipe is anything that converts into an
/// [`OwnedFd`]: a `ChildStdout` or `ChildStdin`, a `File` opened on a FIFO
/// or a character device, a `UnixStream`, an `OwnedFd` from
/// `rustix::pipe::pipe()`. The transport takes ownership and closes it after
/// `connection_lost`.
///
/// Both methods return `(Transport, ProtocolHandle<P>)`, asyncio's
/// `(transport, protocol)`, once the protocol's `connection_made` has run.
/// The [`Transport`] is the same handle type as for sockets; the methods
/// that do not apply to a direction behave as asyncio's pipes do:
///
/// | | read pipe | write pipe |
/// |---|---|---|
/// | `write`, `writelines` | `InvalidState` error | write first, buffer the rest |
/// | `write_eof` | `InvalidState` error | flush, then close (as `close`) |
/// | `can_write_eof` | false | true |
/// | `pause_reading`, `resume_reading` | stop / restart reading | no-op |
/// | `is_reading` | not paused and not closing | false |
/// | `get_write_buffer_size` | 0 | the buffered bytes |
/// | `get_extra_info("pipe")` | the fd | the fd |
///
/// End of file on a read pipe gives `eof_received()` and then
/// `connection_lost(None)`. A write pipe whose reader goes away gives
/// `connection_lost(Some(err))` with [`BrokenPipe`](io::ErrorKind::BrokenPipe)
/// when bytes were still to be written (`None` otherwise); a write never
/// raises `SIGPIPE`, whatever the process's disposition of that signal (read
/// when the transport is created: when it is not "ignore", writes to a pipe
/// run with the signal blocked on the loop thread).
///
/// Errors are [`io::Error`]s, as asyncio raises `OSError`/`ValueError`: an fd
/// of the wrong type, or one not open in the transport's direction, is
/// [`InvalidInput`](io::ErrorKind::InvalidInput) (its inner error a
/// [`LoopError`](loop_core::LoopError) of kind
/// [`InvalidArgument`](loop_core::ErrorKind::InvalidArgument)), and the fd is
/// closed; a closed loop gives an error whose inner error is a `LoopError` of
/// kind [`Closed`](loop_core::ErrorKind::Closed).
///
/// ```
/// use std::cell::RefCell;
/// use std::io::Write;
/// use std::rc::Rc;
/// use loop_core::EventLoop;
/// use loop_net::{BaseProtocol, PipeLoopExt, Protocol};
///
/// /// Collects what the pipe carries; completes `done` at its end.
/// struct Collect {
///     got: Rc<RefCell<Vec<u8>>>,
///     done: loop_core::Future<()>,
/// }
/// impl BaseProtocol for Collect {
///     fn connection_lost(&mut self, _err: Option<std::io::Error>) {
///         let _ = self.done.set_result(());
///     }
/// }
/// impl Protocol for Collect {
///     fn data_received(&mut self, data: &[u8]) {
///         self.got.borrow_mut().extend_from_slice(data);
///     }
/// }
///
/// let lp = EventLoop::new()?;
/// let (read_end, write_end) = rustix::pipe::pipe()?;
/// let mut writer = std::fs::File::from(write_end);
/// writer.write_all(b"hello through a pipe")?;
/// drop(writer); // end of file
///
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let done = lp.create_future::<()>();
/// let (g, d, l) = (got.clone(), done.clone(), lp.clone());
/// lp.run_until_complete(async move {
///     let (_transport, _protocol) =
///         l.connect_read_pipe(move || Collect { got: g, done: d }, read_end).await?;
///     done.await.map_err(std::io::Error::from)
/// })??;
/// assert_eq!(&*got.borrow(), b"hello through a pipe");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait PipeLoopExt: sealed::Sealed {
    /// Wraps the read end of a pipe in a read transport and a protocol from
    /// `factory` (asyncio's `loop.connect_read_pipe(protocol_factory, pipe)`).
    ///
    /// The fd must be a FIFO (a pipe or named pipe), a socket or a character
    /// device, open for reading; it is made non-blocking. Reading starts
    /// after `connection_made`; each readiness is one `read` handed to
    /// `data_received` (or, with [`Buffered`](crate::Buffered), read into the
    /// protocol's buffer). At end of file the protocol gets `eof_received()`
    /// (whose return value is ignored) and then `connection_lost(None)`; a
    /// read error is `connection_lost(Some(err))`. Character devices that
    /// cannot be polled (`/dev/zero`) are always ready: one read per loop
    /// iteration while reading.
    #[doc(alias = "loop.connect_read_pipe")]
    fn connect_read_pipe<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        pipe: impl Into<OwnedFd>,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;

    /// Wraps the write end of a pipe in a write transport and a protocol
    /// from `factory` (asyncio's `loop.connect_write_pipe(protocol_factory,
    /// pipe)`).
    ///
    /// The fd must be a FIFO, a socket or a character device, open for
    /// writing; it is made non-blocking. `write` writes at once and buffers
    /// only what the pipe does not take; above the high-water mark the
    /// protocol gets `pause_writing`, at or below the low one
    /// `resume_writing`. `close` (and `write_eof`, the same for a pipe)
    /// flushes the buffer, closes the fd and calls `connection_lost(None)`;
    /// `abort` drops the buffer. For a FIFO opened write-only and a socket,
    /// the fd is also watched for the reader's going away, as asyncio does;
    /// then the transport closes with `connection_lost(Some(BrokenPipe))` if
    /// bytes were still buffered, `connection_lost(None)` otherwise. A write
    /// that fails (`EPIPE`, ...) is `connection_lost(Some(err))`.
    #[doc(alias = "loop.connect_write_pipe")]
    fn connect_write_pipe<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        pipe: impl Into<OwnedFd>,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;
}

impl PipeLoopExt for EventLoop {
    fn connect_read_pipe<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        pipe: impl Into<OwnedFd>,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        let fd = pipe.into();
        async move {
            let (protocol, handle) = factory().into_protocol();
            let (transport, pipe) = ReadPipe::start(&lp, fd, protocol)?;
            pipe.wait_made().await;
            Ok((transport, handle))
        }
    }

    fn connect_write_pipe<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        pipe: impl Into<OwnedFd>,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        let fd = pipe.into();
        async move {
            let (protocol, handle) = factory().into_protocol();
            let (transport, pipe) = WritePipe::start(&lp, fd, protocol)?;
            pipe.wait_made().await;
            Ok((transport, handle))
        }
    }
}
