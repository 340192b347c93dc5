//! `loop.sendfile(transport, file, offset, count, fallback=)`: a file sent
//! through a [`Transport`], with `sendfile(2)` where the kernel can.
//!
//! # The sequence (asyncio's `BaseEventLoop.sendfile`, with selector_events'
//! `_sendfile_native` and base_events' `_sendfile_fallback`)
//! 1. **Check** the arguments: `count` positive if given; `file` a regular
//!    file opened for reading; the loop open and the transport's own; the
//!    transport open (not closing) and able to take part (a
//!    [`SendfileSupport`]; else "sendfile is not supported for transport").
//! 2. **Enter sendfile mode** on the transport ([`SendfileSupport::sendfile_begin`]):
//!    from now on the protocol's `write`/`writelines` are refused
//!    (`InvalidState`, asyncio's "unable to write; sendfile is in progress")
//!    and `pause_writing`/`resume_writing` are held back from the protocol.
//!    Remember whether the transport was reading, and pause reading.
//! 3. **Native path** (a socket transport, fallback not forced): wait until
//!    the write buffer is empty (asyncio's `_make_empty_waiter`), then send
//!    with `sendfile(2)` and explicit offsets on a duplicate of the
//!    transport's socket, waiting for writability through the loop (the
//!    engine of `sock_sendfile`, sendfile.rs). The transport is watched
//!    meanwhile: if it closes, the send stops with `ConnectionAborted`. If
//!    the very first `sendfile(2)` fails with an error that means "not for
//!    this pair" (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`, `ESPIPE`), the native
//!    path is unavailable: step 4 if fallback is allowed, else a
//!    [`SendfileNotAvailableError`](crate::SendfileNotAvailableError) with
//!    nothing sent.
//! 4. **Fallback** (native unavailable, a transport without a native path
//!    such as TLS, whose bytes must be encrypted, or
//!    [`SendfileFallback::Forced`]): read blocks of 256 KiB with
//!    `pread` on the default executor (a disk read may block; the loop must
//!    not), the next block being read while the current one drains; before
//!    each write wait until the transport's buffer is at or below its
//!    low-water mark; then write the block through the transport (on TLS:
//!    encrypted at once by its write path, the ciphertext sent or buffered).
//! 5. **However it ends** (done, failed, or the future dropped): leave
//!    sendfile mode (the protocol is then told the flow-control state it
//!    missed, if it changed), resume reading if the transport was reading,
//!    and, if anything was sent, set the file position to `offset + sent`.
//!
//! # Invariants
//! - The file's bytes follow every byte written to the transport before the
//!   call and precede every byte written after it returns: nothing can jump
//!   in between (writes are refused while it runs, and the native path
//!   starts only on an empty buffer).
//! - Bounded memory: the native path copies nothing; the fallback holds two
//!   blocks plus a transport buffer of at most low-water + one block (of
//!   ciphertext on TLS: the block plus its records' overhead).
//! - The socket is never closed under a registration: the native path sends
//!   on its own duplicate, unregistered and closed when the path ends.
//! - The protocol's flow-control notices stay paired: held ones are
//!   reconciled with the transport's state when sendfile mode ends.
//! - Only one sendfile at a time per transport (a second one is refused).
//!
//! # Where this differs from asyncio, and why
//! - asyncio refuses writes during the native path only; here they are
//!   refused on the copy path too, so that no byte can ever jump in between.
//! - asyncio's copy path reads from the *current* file position when
//!   `offset` is 0 (`if offset: file.seek(offset)`); here both paths read
//!   from `offset` (with `pread`), as its native path does.
//! - `count == Some(0)` is refused on every path (asyncio's copy path would
//!   take 0 as "to the end").
//! - `fallback=false` with a transport that never has a native path (TLS):
//!   asyncio raises a plain `RuntimeError`; here it is the same
//!   [`SendfileNotAvailableError`](crate::SendfileNotAvailableError) as for a
//!   refused `sendfile(2)` (a `RuntimeError` subclass in asyncio too).
//! - [`SendfileFallback::Forced`] is an addition.
//! - `write_eof` on a TLS transport (TLS 1.3's half-close) is itself an
//!   addition (asyncio's SSL transport has none); a sendfile after it is
//!   refused up front, as every later write would be.
//! - A socket error ends the call but does not close the transport (as in
//!   asyncio); the caller decides.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use loop_core::{ErrorKind, EventLoop, LoopError};
use rustix::io::Errno;

use crate::sendfile::{self, NativeError, SendfileNotAvailableError, FALLBACK_BLOCK};
use crate::transport::Transport;

/// Whether [`SendfileLoopExt::sendfile`] may, must or must not copy the
/// file through the transport when `sendfile(2)` cannot serve it.
///
/// `bool` converts into it as asyncio's `fallback=` does: `true` is
/// [`Allowed`](Self::Allowed), `false` [`Disabled`](Self::Disabled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendfileFallback {
    /// Never copy: fail with a
    /// [`SendfileNotAvailableError`](crate::SendfileNotAvailableError) when the
    /// native path is unavailable (asyncio's `fallback=False`).
    Disabled,
    /// Use `sendfile(2)` when possible, else read and write (asyncio's
    /// default, `fallback=True`).
    #[default]
    Allowed,
    /// Always read and write, never `sendfile(2)` (not in asyncio: for
    /// measurements, and for files on file systems whose `sendfile` is known
    /// to misbehave).
    Forced,
}

impl From<bool> for SendfileFallback {
    fn from(fallback: bool) -> Self {
        if fallback {
            SendfileFallback::Allowed
        } else {
            SendfileFallback::Disabled
        }
    }
}

/// What a kind of transport offers to `loop.sendfile` (asyncio's
/// `_sendfile_compatible`, `_make_empty_waiter` and the fallback protocol's
/// flow control). A transport whose `TransportImpl::sendfile_support` gives
/// `None` does not support sendfile at all.
pub(crate) trait SendfileSupport {
    /// A duplicate of the transport's stream socket, for `sendfile(2)`;
    /// `None` when only the fallback can serve this transport (TLS).
    fn native_socket(&self) -> Option<io::Result<OwnedFd>>;

    /// Enters sendfile mode: the protocol's writes are refused and its
    /// flow-control notices held. Refused if a sendfile is in progress.
    fn sendfile_begin(&self) -> Result<(), LoopError>;

    /// Leaves sendfile mode (idempotent): writes are accepted again, and the
    /// protocol is told the flow-control state it missed, if it changed.
    fn sendfile_end(&self);

    /// `Ready(Ok)` once the write buffer holds at most `at_most` bytes
    /// (`None`: never; only watch the transport); `Ready(Err)` once the
    /// transport is closing or lost. Otherwise registers `cx`'s waker, to be
    /// woken when the buffer shrinks or the transport closes.
    fn poll_sendfile_ready(
        &self,
        cx: &mut Context<'_>,
        at_most: Option<usize>,
    ) -> Poll<io::Result<()>>;

    /// The fallback's write: `write`, allowed in sendfile mode.
    fn sendfile_write(&self, data: &[u8]) -> Result<(), LoopError>;
}

/// A transport's sendfile-mode state, shared by the kinds that take part
/// (the socket stream, stream/sendfile.rs; TLS, tls/stream/sendfile.rs).
///
/// - While `active`, the protocol's `write`/`writelines` are refused and the
///   transport drops its `pause_writing`/`resume_writing` notices (its flow
///   control still tracks the buffer).
/// - `told_paused` is what the current protocol was last told: the state at
///   [`begin`](Self::begin), or "not paused" for a protocol installed
///   meanwhile ([`protocol_replaced`](Self::protocol_replaced)). When the
///   call ends the transport delivers the one notice that brings the
///   protocol to its state, so every notice stays paired.
/// - The sendfile task's waker is woken ([`wake`](Self::wake)) whenever what
///   it waits for may have changed: bytes left the buffer, the transport
///   started closing, or it was lost.
#[derive(Default)]
pub(crate) struct SendfileState {
    active: Cell<bool>,
    told_paused: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl SendfileState {
    /// Refuses the protocol's writes while a sendfile runs.
    pub(crate) fn check_write(&self) -> Result<(), LoopError> {
        if self.active.get() {
            Err(write_refused())
        } else {
            Ok(())
        }
    }

    /// Whether flow-control notices are held back now.
    pub(crate) fn holds_notices(&self) -> bool {
        self.active.get()
    }

    /// `set_protocol` ran: the new protocol has been told nothing.
    pub(crate) fn protocol_replaced(&self) {
        self.told_paused.set(false);
    }

    /// Wakes the sendfile task, if one waits.
    pub(crate) fn wake(&self) {
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Enters sendfile mode; `paused`: the protocol is paused now (told, or
    /// about to be told). Refused if a sendfile is in progress.
    pub(crate) fn begin(&self, paused: bool) -> Result<(), LoopError> {
        if self.active.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "sendfile is already in progress on this transport",
            ));
        }
        self.active.set(true);
        self.told_paused.set(paused);
        Ok(())
    }

    /// Leaves sendfile mode: `None` if it was not in it, else whether the
    /// protocol was last told it is paused (the transport then delivers the
    /// notice that brings it to its state, if that differs).
    pub(crate) fn end(&self) -> Option<bool> {
        if !self.active.replace(false) {
            return None;
        }
        drop(self.waker.borrow_mut().take());
        Some(self.told_paused.get())
    }

    /// Keeps `cx`'s waker for [`wake`](Self::wake); always `Pending`.
    pub(crate) fn wait<T>(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The error of a sendfile whose transport closed under it.
pub(crate) fn closed_during_sendfile() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the transport was closed while sendfile was in progress",
    )
}

/// The error of a write refused because a sendfile is in progress.
pub(crate) fn write_refused() -> LoopError {
    LoopError::new(
        ErrorKind::InvalidState,
        "unable to write; sendfile is in progress",
    )
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's `loop.sendfile` on [`EventLoop`].
///
/// Bring it into scope (`use loop_net::SendfileLoopExt;`, or
/// `use aioloop::prelude::*;`). It is sealed: only [`EventLoop`] implements
/// it.
pub trait SendfileLoopExt: sealed::Sealed {
    /// Sends `file` from `offset`, `count` bytes (`None`: up to its end)
    /// through `transport`, and returns the bytes sent (asyncio's
    /// `await loop.sendfile(transport, file, offset=0, count=None, *,
    /// fallback=True)`).
    ///
    /// On TCP and Unix stream transports the file goes with `sendfile(2)`,
    /// zero-copy: bytes the transport had buffered are sent first, then the
    /// file straight from the page cache to the socket. On a TLS transport
    /// that is never possible (the kernel cannot encrypt; asyncio's SSL
    /// transport is fallback-only too), nor where the kernel refuses the
    /// pair; then `fallback` decides: [`Allowed`](SendfileFallback::Allowed)
    /// (`true`) reads the file in 256 KiB blocks on the default executor and
    /// writes them through the transport, keeping its buffer near its
    /// low-water mark; [`Disabled`](SendfileFallback::Disabled) (`false`)
    /// fails with an [`Unsupported`](io::ErrorKind::Unsupported) error holding
    /// a [`SendfileNotAvailableError`](crate::SendfileNotAvailableError),
    /// having sent nothing; [`Forced`](SendfileFallback::Forced) always
    /// copies. On TLS each block is encrypted by the transport's own write
    /// path, so its buffer holds at most the low-water mark plus one block
    /// of ciphertext.
    ///
    /// While it runs:
    /// - the protocol's [`write`](Transport::write) and
    ///   [`writelines`](Transport::writelines) fail with
    ///   [`InvalidState`](loop_core::ErrorKind::InvalidState) ("unable to
    ///   write; sendfile is in progress", as asyncio raises): the file is never
    ///   interleaved with other bytes;
    /// - reading is paused (the protocol gets no `data_received`), and resumed
    ///   afterwards if it was on;
    /// - `pause_writing`/`resume_writing` are held back from the protocol; when
    ///   the call ends the protocol is told the state it missed, if it changed
    ///   (asyncio hides them by swapping in a protocol of its own);
    /// - closing or aborting the transport stops the call with a
    ///   [`ConnectionAborted`](io::ErrorKind::ConnectionAborted) error.
    ///
    /// However it ends (also when the future is dropped), the transport
    /// leaves that state, and if any byte was sent the file position is
    /// `offset + bytes sent`, as asyncio leaves it (so after an error the
    /// position tells how far it got).
    ///
    /// Errors: `count` of `Some(0)`, a `file` that is not a regular file
    /// opened for reading, or a transport of another loop:
    /// [`InvalidInput`](io::ErrorKind::InvalidInput). A closing transport, or
    /// one already in a sendfile: an error holding a
    /// [`LoopError`] of kind
    /// [`InvalidState`](loop_core::ErrorKind::InvalidState) ("Transport is
    /// closing"); a stream transport that a `start_tls` is taking over:
    /// the same kind (sendfile(2) would write plain bytes on the socket TLS
    /// is about to own); a TLS transport after its
    /// [`write_eof`](Transport::write_eof): the same kind ("Cannot call
    /// write() after write_eof()"), before anything is read. A transport
    /// kind without sendfile support (a write pipe):
    /// [`Unsupported`](io::ErrorKind::Unsupported). Socket errors are
    /// returned as they come (the transport itself is left as it is, as in
    /// asyncio).
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use loop_net::{BaseProtocol, NetLoopExt, Protocol, SendfileLoopExt, StreamLoopExt};
    ///
    /// struct Quiet;
    /// impl BaseProtocol for Quiet {}
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    ///
    /// let path = std::env::temp_dir().join(format!("loop-net-sendfile-doc-{}", std::process::id()));
    /// std::fs::write(&path, b"hello, sendfile")?;
    /// let file = std::fs::File::open(&path)?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// listener.set_nonblocking(true)?;
    /// let port = listener.local_addr()?.port();
    ///
    /// let lp = EventLoop::new()?;
    /// let l = lp.clone();
    /// let (sent, got) = lp.run_until_complete(async move {
    ///     let (transport, _) = l
    ///         .create_connection(|| Quiet, Some("127.0.0.1"), port, Default::default())
    ///         .await?;
    ///     let (peer, _) = l.sock_accept(&listener).await?;
    ///     transport.write(b"<")?;
    ///     // From byte 7 to the end; `true`: asyncio's fallback=True.
    ///     let sent = l.sendfile(&transport, &file, 7, None, true).await?;
    ///     transport.close();
    ///     let mut got = Vec::new();
    ///     loop {
    ///         let chunk = l.sock_recv(&peer, 1024).await?;
    ///         if chunk.is_empty() {
    ///             break;
    ///         }
    ///         got.extend(chunk);
    ///     }
    ///     Ok::<_, std::io::Error>((sent, got))
    /// })??;
    /// assert_eq!(sent, 8);
    /// assert_eq!(got, b"<sendfile");
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "loop.sendfile")]
    fn sendfile<'a>(
        &'a self,
        transport: &'a Transport,
        file: &'a impl AsFd,
        offset: u64,
        count: Option<u64>,
        fallback: impl Into<SendfileFallback>,
    ) -> impl Future<Output = io::Result<u64>> + 'a;
}

impl SendfileLoopExt for EventLoop {
    fn sendfile<'a>(
        &'a self,
        transport: &'a Transport,
        file: &'a impl AsFd,
        offset: u64,
        count: Option<u64>,
        fallback: impl Into<SendfileFallback>,
    ) -> impl Future<Output = io::Result<u64>> + 'a {
        sendfile(
            self,
            transport,
            file.as_fd(),
            offset,
            count,
            fallback.into(),
        )
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn not_available(reason: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        SendfileNotAvailableError::new(reason),
    )
}

/// A regular file, opened for reading.
fn check_file(file: BorrowedFd<'_>) -> io::Result<()> {
    let st = rustix::fs::fstat(file)?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if !kind.is_file() {
        return Err(invalid(format!(
            "sendfile: file must be a regular file (got {kind:?})"
        )));
    }
    let mode = rustix::fs::fcntl_getfl(file)? & rustix::fs::OFlags::RWMODE;
    if mode == rustix::fs::OFlags::WRONLY {
        return Err(invalid("sendfile: file must be opened for reading"));
    }
    Ok(())
}

/// The state to restore however the call ends (step 5).
struct Session<'a> {
    transport: &'a Transport,
    support: &'a dyn SendfileSupport,
    was_reading: bool,
    file: BorrowedFd<'a>,
    offset: u64,
    sent: u64,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.support.sendfile_end();
        if self.was_reading {
            self.transport.resume_reading();
        }
        if self.sent > 0 {
            let _ = rustix::fs::seek(
                self.file,
                rustix::fs::SeekFrom::Start(self.offset.saturating_add(self.sent)),
            );
        }
    }
}

pub(crate) async fn sendfile(
    lp: &EventLoop,
    transport: &Transport,
    file: BorrowedFd<'_>,
    offset: u64,
    count: Option<u64>,
    fallback: SendfileFallback,
) -> io::Result<u64> {
    if lp.is_closed() {
        return Err(LoopError::closed().into());
    }
    // (A lost transport has let go of its loop: refused below as closing.)
    if transport.get_loop().is_some_and(|t| !lp.ptr_eq(&t)) {
        return Err(invalid(
            "sendfile: the transport belongs to another event loop",
        ));
    }
    if let Some(0) = count {
        return Err(invalid("count must be a positive integer (got 0)"));
    }
    check_file(file)?;
    if transport.is_closing() {
        return Err(LoopError::new(ErrorKind::InvalidState, "Transport is closing").into());
    }
    let Some(support) = transport.inner.sendfile_support() else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("sendfile is not supported for transport {transport:?}"),
        ));
    };
    let socket = match fallback {
        SendfileFallback::Forced => None,
        _ => support.native_socket().transpose()?,
    };
    if socket.is_none() && fallback == SendfileFallback::Disabled {
        return Err(not_available(format!(
            "fallback is disabled and native sendfile is not supported for transport {transport:?}"
        )));
    }
    support.sendfile_begin()?;
    let mut session = Session {
        transport,
        support,
        was_reading: transport.is_reading(),
        file,
        offset,
        sent: 0,
    };
    if session.was_reading {
        // (Not otherwise: pausing a transport that does not read yet, or was
        // paused by its protocol, would be a pause nobody undoes.)
        transport.pause_reading();
    }
    if let Some(socket) = socket {
        std::future::poll_fn(|cx| support.poll_sendfile_ready(cx, Some(0))).await?;
        match native(lp, support, socket, file, offset, count, &mut session.sent).await {
            Ok(()) => return Ok(session.sent),
            Err(NativeError::Io(e)) => return Err(e),
            Err(NativeError::Unavailable(reason)) => {
                if fallback == SendfileFallback::Disabled {
                    return Err(not_available(reason));
                }
            }
        }
    }
    copy(
        lp,
        transport,
        support,
        file,
        offset,
        count,
        &mut session.sent,
    )
    .await?;
    Ok(session.sent)
}

/// Step 3: `sendfile(2)` on `socket` (a duplicate of the transport's),
/// stopped if the transport closes meanwhile.
async fn native(
    lp: &EventLoop,
    support: &dyn SendfileSupport,
    socket: OwnedFd,
    file: BorrowedFd<'_>,
    offset: u64,
    count: Option<u64>,
    sent: &mut u64,
) -> Result<(), NativeError> {
    // Declared after `socket`, so dropped before it: the writer registered
    // on the duplicate is removed before the duplicate is closed.
    let mut work = pin!(sendfile::native(
        lp,
        socket.as_fd(),
        file,
        offset,
        count,
        sent
    ));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(Err(e)) = support.poll_sendfile_ready(cx, None) {
            return Poll::Ready(Err(NativeError::Io(e)));
        }
        work.as_mut().poll(cx)
    })
    .await
}

/// One block read at `at` on the default executor (into `buf[..want]`).
fn read_block(
    lp: &EventLoop,
    file: &Arc<OwnedFd>,
    mut buf: Vec<u8>,
    at: u64,
    want: usize,
) -> io::Result<loop_core::ExecutorFuture<(Vec<u8>, io::Result<usize>)>> {
    let file = file.clone();
    lp.run_in_executor(move || {
        let result = loop {
            match rustix::io::pread(&*file, &mut buf[..want], at) {
                Err(Errno::INTR) => continue,
                other => break other.map_err(io::Error::from),
            }
        };
        (buf, result)
    })
    .map_err(io::Error::from)
}

/// Step 4: read blocks on the executor and write them through the
/// transport, one block read ahead, the buffer kept near its low-water mark.
async fn copy(
    lp: &EventLoop,
    transport: &Transport,
    support: &dyn SendfileSupport,
    file: BorrowedFd<'_>,
    offset: u64,
    count: Option<u64>,
    sent: &mut u64,
) -> io::Result<()> {
    // pread's offset is an off_t: past i64::MAX there is nothing to read.
    if offset > i64::MAX as u64 {
        return Ok(());
    }
    let left = |sent: u64| count.map_or(u64::MAX, |c| c - sent);
    let block = usize::try_from(left(0).min(FALLBACK_BLOCK as u64)).unwrap_or(FALLBACK_BLOCK);
    // The executor reads through its own descriptor of the same open file.
    let reader = Arc::new(file.try_clone_to_owned()?);
    let mut spare: Option<Vec<u8>> = None;
    let mut next = Some(read_block(lp, &reader, vec![0u8; block], offset, block)?);
    while let Some(job) = next.take() {
        let (buf, result) = job.await.map_err(io::Error::from)?;
        let n = result?;
        if n == 0 {
            break;
        }
        let after = *sent + n as u64;
        let rest = left(after);
        if rest > 0 {
            let want = usize::try_from(rest.min(block as u64)).unwrap_or(block);
            let b = spare.take().unwrap_or_else(|| vec![0u8; block]);
            next = Some(read_block(lp, &reader, b, offset + after, want)?);
        }
        let low = transport.get_write_buffer_limits().0;
        std::future::poll_fn(|cx| support.poll_sendfile_ready(cx, Some(low))).await?;
        support.sendfile_write(&buf[..n])?;
        *sent = after;
        spare = Some(buf);
    }
    Ok(())
}
