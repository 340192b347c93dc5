//! Pipe transports: asyncio's `_UnixReadPipeTransport` and
//! `_UnixWritePipeTransport`, over pipes, FIFOs, character devices and
//! sockets.
//!
//! # What a pipe transport accepts
//! The fd must be a FIFO (a pipe or a named pipe), a socket or a character
//! device (`fstat`'s `S_ISFIFO`, `S_ISSOCK`, `S_ISCHR`); anything else, a
//! regular file above all, is refused with asyncio's message ("Pipe
//! transport is for pipes/sockets only."), as an `InvalidInput` error whose
//! inner error is a [`LoopError`] of kind `InvalidArgument`. The fd must be
//! open for the transport's direction (`O_RDONLY`/`O_RDWR` to read,
//! `O_WRONLY`/`O_RDWR` to write). It is switched to `O_NONBLOCK`, and the
//! transport owns it from then on: it is closed after `connection_lost`.
//!
//! # State machine
//! `Open -> Closing -> Lost`, one way only, as the socket stream transport
//! (stream.rs). `connection_made` is delivered first, through `call_soon`;
//! `connection_lost` exactly once, through `call_soon`, never synchronously
//! (`lost_scheduled` guards the one scheduling). When it has run, the fd is
//! unregistered and closed, the state is `Lost`, and the transport lets go
//! of its protocol (a protocol that keeps its `Transport` is no `Rc` cycle).
//!
//! # The read pipe
//! Reading starts after `connection_made` (unless the protocol paused it
//! there). Each readiness does one `read` (bounded work per iteration) into
//! a 64 KiB buffer shared by the thread's pipe transports (taken out of its
//! slot for the call), handed to `data_received` as a slice: no allocation
//! per read. A [`BufferedProtocol`](crate::BufferedProtocol) gets the bytes
//! in its own buffer. A protocol borrowed elsewhere (a task holding a
//! `ProtocolHandle` borrow) is not read in that iteration. End of file:
//! `eof_received()` (its return value is ignored: a read pipe has nothing
//! left to keep open), then `connection_lost(None)`. A read error other than
//! `EAGAIN`/`EINTR` is fatal: `connection_lost(Some(err))`. `pause_reading`
//! unregisters the fd; `is_reading` is asyncio's `not paused and not
//! closing`. The write side of the `Transport` API is refused with an
//! `InvalidState` error (`write`, `writelines`, `write_eof`);
//! `can_write_eof` is false.
//!
//! # The write pipe
//! Write first, buffer only the rest: `write()` writes at once when nothing
//! is buffered, and the fd is watched for writability only while the buffer
//! is non-empty. Every path that grows the buffer ends in
//! `maybe_pause_protocol`, every path that shrinks it in
//! `maybe_resume_protocol`; the notices are delivered synchronously, or right
//! after the protocol's running callback when it is the caller (as in
//! stream.rs). Every error branch ends in exactly one of: still watched for
//! writability, or closed. `close()` and `write_eof()` are the same for a
//! pipe (asyncio's): flush, close the fd, `connection_lost(None)`; after
//! `write_eof`, `write` is an `InvalidState` error, after `close` writes are
//! dropped and counted (`writes_after_lost`). `abort()` drops the buffer.
//!
//! **The reader going away.** For a FIFO opened write-only and for a socket,
//! the fd is also watched for *reading*, as asyncio does: the write end of a
//! pipe reports an error condition once the last reader closed (epoll's
//! `EPOLLERR`, which the loop delivers as readable), and a socket becomes
//! readable at the peer's close. Then the transport closes at once:
//! `connection_lost(Some(BrokenPipe))` if bytes were still buffered, `None`
//! otherwise. A write that fails first (`EPIPE`) gives
//! `connection_lost(Some(EPIPE))`. As in asyncio, a socket's peer is not
//! expected to send on a write pipe: any readability counts as its closing.
//! A FIFO opened `O_RDWR` is its own reader and is not watched this way.
//! `pause_reading`/`resume_reading` are no-ops on a write pipe and
//! `is_reading` is false.
//!
//! **No SIGPIPE.** Writing to a pipe whose reader is gone raises `SIGPIPE`,
//! whose default action kills the process. Rust programs start with it
//! ignored, as Python does, but a library cannot rely on that. Sockets are
//! written with `MSG_NOSIGNAL`. For other fds, the transport reads the
//! disposition of `SIGPIPE` when it is created: if it is not ignored, each
//! write runs with `SIGPIPE` blocked on the loop thread, and a `SIGPIPE` that
//! the write raised is consumed before the mask is restored (two more
//! syscalls per write; none when it is ignored). Either way the error is
//! `EPIPE`, delivered to the protocol. The thread's signal mask is never left
//! changed (children started later inherit it).
//!
//! # Fds that cannot be polled
//! Some character devices (`/dev/null`, `/dev/zero`) cannot be registered
//! with epoll (`EPERM`), although they are always ready, as `poll(2)`
//! reports them. For those, readiness is emulated: while the transport reads
//! (or has bytes to write), one attempt runs per loop iteration, scheduled
//! with `call_soon`. Like a level-triggered fd that is always ready, this
//! keeps the loop from sleeping while it lasts.
//!
//! # For crate-internal users (subprocess pipes)
//! [`ReadPipe::start`] and [`WritePipe::start`] wrap an `OwnedFd` and an
//! [`AnyProtocol`] without waiting: they check and prepare the fd, schedule
//! `connection_made`, and return the `Transport` with the pipe itself, whose
//! `wait_made` resolves once `connection_made` ran (or the pipe was lost).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use loop_core::{ErrorKind, EventLoop, ExceptionContext, LoopError};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};

use crate::protocol::{AnyProtocol, BaseProtocol, Protocol};
use crate::stream::READ_SIZE;
use crate::transport::{ExtraInfo, Transport, TransportImpl};
use crate::write_buffer::{WriteBuffer, WriteBufferLimits};

/// How soon a delivery to a protocol that was busy is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(1);

/// Linux's `IOV_MAX`: `writev` refuses more buffers than this; the rest of
/// a longer `writelines` is buffered.
const MAX_IOV: usize = 1024;

thread_local! {
    /// The read buffer shared by every read pipe of this thread.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The message asyncio gives when the fd is of the wrong type.
pub(crate) const NOT_A_PIPE: &str = "Pipe transport is for pipes/sockets only.";

/// The direction of a pipe transport.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PipeDirection {
    Read,
    Write,
}

/// What kind of file a pipe transport drives (checked once, at creation).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FdKind {
    Fifo,
    Socket,
    CharDevice,
}

/// The checked facts about a pipe fd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PipeFd {
    pub(crate) kind: FdKind,
    /// Opened `O_RDWR` (always so for a socket).
    pub(crate) read_write: bool,
}

fn refused(message: impl Into<String>) -> io::Error {
    LoopError::new(ErrorKind::InvalidArgument, message).into()
}

/// Checks that `fd` suits a pipe transport of direction `dir` (type and
/// access mode) and sets `O_NONBLOCK` on it.
pub(crate) fn prepare_pipe_fd(fd: &OwnedFd, dir: PipeDirection) -> io::Result<PipeFd> {
    let st = rustix::fs::fstat(fd)?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Fifo => FdKind::Fifo,
        FileType::Socket => FdKind::Socket,
        FileType::CharacterDevice => FdKind::CharDevice,
        _ => return Err(refused(NOT_A_PIPE)),
    };
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let access = flags & OFlags::ACCMODE;
    let read_write = access == OFlags::RDWR;
    let suits = match dir {
        PipeDirection::Read => read_write || access == OFlags::RDONLY,
        PipeDirection::Write => read_write || access == OFlags::WRONLY,
    };
    if !suits {
        return Err(refused(match dir {
            PipeDirection::Read => "connect_read_pipe: the file descriptor is not open for reading",
            PipeDirection::Write => {
                "connect_write_pipe: the file descriptor is not open for writing"
            }
        }));
    }
    if !flags.contains(OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    }
    Ok(PipeFd { kind, read_write })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    Closing,
    Lost,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Read,
    Write,
}

/// The registration of one direction of the fd with the loop.
#[derive(Default)]
struct Watch {
    /// Watched (registered, or emulated ticks running).
    on: Cell<bool>,
    /// The fd cannot be polled: readiness is emulated with `call_soon`.
    emulated: Cell<bool>,
    /// An emulated tick is scheduled.
    tick_pending: Cell<bool>,
}

/// The part of a pipe transport's state that both directions share: the
/// lifecycle, the fd and the protocol.
struct Life {
    lp: EventLoop,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    info: PipeFd,
    state: Cell<State>,
    protocol: RefCell<AnyProtocol>,
    lost_scheduled: Cell<bool>,
    /// `connection_made` was delivered.
    made: Cell<bool>,
    made_waiters: RefCell<Vec<Waker>>,
}

impl Life {
    fn new(lp: &EventLoop, fd: OwnedFd, info: PipeFd, protocol: AnyProtocol) -> Life {
        Life {
            lp: lp.clone(),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            info,
            state: Cell::new(State::Open),
            protocol: RefCell::new(protocol),
            lost_scheduled: Cell::new(false),
            made: Cell::new(false),
            made_waiters: RefCell::new(Vec::new()),
        }
    }

    fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
    }

    fn protocol(&self) -> AnyProtocol {
        self.protocol.borrow().clone()
    }

    fn wake_made(&self) {
        let waiters = std::mem::take(&mut *self.made_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "pipe" => self
                .fd
                .borrow()
                .as_ref()
                .map(|fd| ExtraInfo::Fd(fd.as_raw_fd())),
            _ => None,
        }
    }
}

/// What the shared lifecycle code needs from each kind of pipe transport.
trait PipeEnd: Sized + 'static {
    fn life(&self) -> &Life;
    fn watch(&self, dir: Dir) -> &Watch;
    /// The fd is ready in direction `dir` (or an emulated tick ran).
    fn on_ready(self: &Rc<Self>, dir: Dir);
    /// `connection_made` was delivered: start the transport's I/O.
    fn after_made(self: &Rc<Self>);
    /// Closes at once (drops buffered bytes) and schedules
    /// `connection_lost(error)`.
    fn force_close(self: &Rc<Self>, error: Option<io::Error>);
    /// The connection is lost: forget what the protocol is owed.
    fn on_finished(&self) {}
    /// "read pipe" / "write pipe", for messages.
    const NAME: &'static str;
}

/// Wraps `pipe` in its `Transport`, schedules `connection_made`.
fn launch<T: PipeEnd + TransportImpl>(pipe: Rc<T>) -> io::Result<(Transport, Rc<T>)> {
    let transport = Transport {
        inner: pipe.clone(),
    };
    let t = transport.clone();
    let me = pipe.clone();
    pipe.life()
        .lp
        .call_soon(move || deliver_made(&me, t))
        .map_err(io::Error::from)?;
    Ok((transport, pipe))
}

fn ensure_open(lp: &EventLoop) -> io::Result<()> {
    if lp.is_closed() {
        return Err(LoopError::closed().into());
    }
    Ok(())
}

/// Calls `connection_made` (always first: a `close`/`abort` before it only
/// schedules `connection_lost` after it), then starts the I/O.
fn deliver_made<T: PipeEnd>(me: &Rc<T>, transport: Transport) {
    let life = me.life();
    let protocol = life.protocol();
    let mut arg = Some(transport);
    let made = catch_unwind(AssertUnwindSafe(|| {
        protocol.try_with_base(|p| {
            if let Some(t) = arg.take() {
                p.connection_made(t)
            }
        })
    }));
    drop(protocol);
    match made {
        Ok(true) => {
            life.made.set(true);
            life.wake_made();
            me.after_made();
        }
        Ok(false) => {
            // The protocol is borrowed by someone else right now: retry.
            let again = me.clone();
            let t = arg.take().expect("connection_made was not called");
            if life
                .lp
                .call_later(RETRY_DELAY, move || deliver_made(&again, t))
                .is_err()
            {
                finish_lost(me);
            }
        }
        Err(payload) => {
            life.made.set(true);
            life.wake_made();
            protocol_failed(me, "connection_made", payload);
        }
    }
}

/// Resolves once `connection_made` ran, or the transport is lost.
fn wait_made<T: PipeEnd>(me: &Rc<T>) -> impl std::future::Future<Output = ()> + 'static {
    let me = me.clone();
    std::future::poll_fn(move |cx| {
        let life = me.life();
        if life.made.get() || life.state.get() == State::Lost {
            return Poll::Ready(());
        }
        life.made_waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    })
}

fn is_eperm(e: &LoopError) -> bool {
    e.io_error().and_then(io::Error::raw_os_error) == Some(Errno::PERM.raw_os_error())
}

/// Watches direction `dir`. An fd that epoll refuses (`EPERM`: always
/// ready) is emulated with one tick per iteration when `emulate` allows.
fn start_watch<T: PipeEnd>(me: &Rc<T>, dir: Dir, emulate: bool) -> Result<(), LoopError> {
    let w = me.watch(dir);
    if w.on.get() {
        return Ok(());
    }
    if w.emulated.get() {
        w.on.set(true);
        schedule_tick(me, dir);
        return Ok(());
    }
    let life = me.life();
    let m = me.clone();
    let registered = match dir {
        Dir::Read => life.lp.add_reader(life.raw, move || m.on_ready(Dir::Read)),
        Dir::Write => life.lp.add_writer(life.raw, move || m.on_ready(Dir::Write)),
    };
    match registered {
        Ok(()) => {
            w.on.set(true);
            Ok(())
        }
        Err(e) if emulate && is_eperm(&e) => {
            w.emulated.set(true);
            w.on.set(true);
            schedule_tick(me, dir);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn stop_watch<T: PipeEnd>(me: &T, dir: Dir) {
    let w = me.watch(dir);
    if w.on.replace(false) && !w.emulated.get() {
        let life = me.life();
        let _ = match dir {
            Dir::Read => life.lp.remove_reader(life.raw),
            Dir::Write => life.lp.remove_writer(life.raw),
        };
    }
}

/// One emulated readiness of `dir`, in the next iteration (and again after
/// it, while the direction is watched).
fn schedule_tick<T: PipeEnd>(me: &Rc<T>, dir: Dir) {
    let w = me.watch(dir);
    if w.tick_pending.replace(true) {
        return;
    }
    let m = me.clone();
    let scheduled = me.life().lp.call_soon(move || {
        let w = m.watch(dir);
        w.tick_pending.set(false);
        if w.on.get() {
            m.on_ready(dir);
            if m.watch(dir).on.get() {
                schedule_tick(&m, dir);
            }
        }
    });
    if scheduled.is_err() {
        w.tick_pending.set(false);
    }
}

fn schedule_lost<T: PipeEnd>(me: &Rc<T>, error: Option<io::Error>) {
    let life = me.life();
    if life.lost_scheduled.replace(true) {
        return;
    }
    let m = me.clone();
    if life
        .lp
        .call_soon(move || call_connection_lost(&m, error))
        .is_err()
    {
        // The loop is closed: nothing can be delivered; release the fd.
        finish_lost(me);
    }
}

fn call_connection_lost<T: PipeEnd>(me: &Rc<T>, error: Option<io::Error>) {
    let life = me.life();
    if life.state.get() == State::Lost {
        return;
    }
    if !life.made.get() {
        // connection_made is still being retried; lost comes after it.
        let m = me.clone();
        if life
            .lp
            .call_later(RETRY_DELAY, move || call_connection_lost(&m, error))
            .is_err()
        {
            finish_lost(me);
        }
        return;
    }
    let protocol = life.protocol();
    let context = format!("{} fd={}", T::NAME, life.raw);
    let delivered = protocol.deliver_connection_lost(&life.lp, error, &context);
    drop(protocol);
    if let Err(error) = delivered {
        // Borrowed by a task right now: try again shortly.
        let m = me.clone();
        if life
            .lp
            .call_later(RETRY_DELAY, move || call_connection_lost(&m, error))
            .is_ok()
        {
            return;
        }
    }
    finish_lost(me);
}

/// The end: unregister, close the fd, let go of the protocol.
fn finish_lost<T: PipeEnd>(me: &Rc<T>) {
    let life = me.life();
    life.state.set(State::Lost);
    life.lost_scheduled.set(true);
    life.wake_made();
    stop_watch(&**me, Dir::Read);
    stop_watch(&**me, Dir::Write);
    me.on_finished();
    // Unregistered first, closed second (the poller's contract).
    let fd = life.fd.borrow_mut().take();
    drop(fd);
    // Break the protocol -> transport -> protocol cycle; the protocol's own
    // Drop runs outside any borrow of ours.
    let released = life
        .protocol
        .replace(AnyProtocol::Streaming(Rc::new(RefCell::new(Released))));
    drop(released);
}

fn protocol_failed<T: PipeEnd>(me: &Rc<T>, what: &str, payload: Box<dyn std::any::Any + Send>) {
    let life = me.life();
    let err = LoopError::panicked(format!("protocol.{what}()"), payload);
    life.lp.call_exception_handler(
        ExceptionContext::new(format!("Fatal error: protocol.{what}() call failed."))
            .with_error(err.clone())
            .with("transport", format!("{} fd={}", T::NAME, life.raw)),
    );
    me.force_close(Some(io::Error::other(err.to_string())));
}

/// What a lost transport holds instead of its protocol: nothing to call.
struct Released;

impl BaseProtocol for Released {}

impl Protocol for Released {
    fn data_received(&mut self, _: &[u8]) {}
}

// ---------------------------------------------------------------------------
// The read pipe

/// The read end: asyncio's `_UnixReadPipeTransport`.
pub(crate) struct ReadPipe {
    me: Weak<ReadPipe>,
    life: Life,
    /// `pause_reading` was called (and not undone).
    paused: Cell<bool>,
    reader: Watch,
    /// Never used: a read pipe has no writer.
    unused: Watch,
}

/// What one read gave.
enum Got {
    /// The protocol is busy: nothing was read.
    Busy,
    Data,
    /// End of file; `eof_received` was called.
    Eof,
}

impl ReadPipe {
    /// Wraps the read end `fd` (a FIFO, socket or character device open for
    /// reading; anything else is refused) and `protocol`: sets `O_NONBLOCK`,
    /// schedules `connection_made`, and starts reading after it. Does not
    /// wait: see [`wait_made`](Self::wait_made).
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        protocol: AnyProtocol,
    ) -> io::Result<(Transport, Rc<ReadPipe>)> {
        ensure_open(lp)?;
        let info = prepare_pipe_fd(&fd, PipeDirection::Read)?;
        let pipe = Rc::new_cyclic(|me| ReadPipe {
            me: me.clone(),
            life: Life::new(lp, fd, info, protocol),
            paused: Cell::new(false),
            reader: Watch::default(),
            unused: Watch::default(),
        });
        launch(pipe)
    }

    /// Resolves once `connection_made` was called (or the pipe is lost), as
    /// asyncio's `connect_read_pipe` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        wait_made(self)
    }

    fn rc(&self) -> Rc<ReadPipe> {
        self.me
            .upgrade()
            .expect("a live ReadPipe is owned by an Rc")
    }

    fn start_reading(self: &Rc<Self>) {
        if self.life.state.get() != State::Open || self.paused.get() || !self.life.made.get() {
            return;
        }
        if let Err(e) = start_watch(self, Dir::Read, true) {
            self.force_close(Some(e.into()));
        }
    }

    fn on_readable(self: &Rc<Self>) {
        if self.life.state.get() != State::Open || !self.reader.on.get() {
            return;
        }
        let protocol = self.life.protocol();
        let stage = Cell::new("data_received");
        let outcome = catch_unwind(AssertUnwindSafe(|| self.read_into(&protocol, &stage)));
        drop(protocol);
        match outcome {
            Ok(Ok(Got::Busy)) | Ok(Ok(Got::Data)) => {}
            Ok(Ok(Got::Eof)) => self.close_impl(),
            Ok(Err(e)) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                _ => self.force_close(Some(e)),
            },
            Err(payload) => protocol_failed(self, stage.get(), payload),
        }
    }

    /// One `read` into the protocol, which gets the data or the EOF.
    fn read_into(&self, protocol: &AnyProtocol, stage: &Cell<&'static str>) -> io::Result<Got> {
        match protocol {
            AnyProtocol::Streaming(p) => {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return Ok(Got::Busy);
                };
                let mut buf = READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let got = self
                    .life
                    .with_fd(|fd| rustix::io::read(fd, &mut buf[..]))
                    .unwrap_or(Err(Errno::AGAIN));
                let result = match got {
                    Ok(0) => {
                        stage.set("eof_received");
                        let _ = p.eof_received();
                        Ok(Got::Eof)
                    }
                    Ok(n) => {
                        p.data_received(&buf[..n]);
                        Ok(Got::Data)
                    }
                    Err(e) => Err(io::Error::from(e)),
                };
                READ_BUF.with(|b| {
                    let mut slot = b.borrow_mut();
                    if slot.is_empty() {
                        *slot = buf;
                    }
                });
                result
            }
            AnyProtocol::Buffered(p) => {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return Ok(Got::Busy);
                };
                stage.set("get_buffer");
                let target = p.get_buffer(READ_SIZE);
                if target.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "get_buffer() returned an empty buffer",
                    ));
                }
                let got = self
                    .life
                    .with_fd(|fd| rustix::io::read(fd, &mut *target))
                    .unwrap_or(Err(Errno::AGAIN));
                match got {
                    Ok(0) => {
                        stage.set("eof_received");
                        let _ = p.eof_received();
                        Ok(Got::Eof)
                    }
                    Ok(n) => {
                        stage.set("buffer_updated");
                        p.buffer_updated(n);
                        Ok(Got::Data)
                    }
                    Err(e) => Err(io::Error::from(e)),
                }
            }
        }
    }

    fn close_impl(self: &Rc<Self>) {
        if self.life.state.get() != State::Open {
            return;
        }
        self.life.state.set(State::Closing);
        stop_watch(&**self, Dir::Read);
        schedule_lost(self, None);
    }

    fn not_supported(what: &str) -> LoopError {
        LoopError::new(
            ErrorKind::InvalidState,
            format!("{what} is not supported by a read pipe transport"),
        )
    }
}

impl PipeEnd for ReadPipe {
    const NAME: &'static str = "read pipe";

    fn life(&self) -> &Life {
        &self.life
    }

    fn watch(&self, dir: Dir) -> &Watch {
        match dir {
            Dir::Read => &self.reader,
            Dir::Write => &self.unused,
        }
    }

    fn on_ready(self: &Rc<Self>, dir: Dir) {
        if dir == Dir::Read {
            self.on_readable();
        }
    }

    fn after_made(self: &Rc<Self>) {
        self.start_reading();
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.life.lost_scheduled.get() {
            return;
        }
        self.life.state.set(State::Closing);
        stop_watch(&**self, Dir::Read);
        schedule_lost(self, error);
    }
}

impl TransportImpl for ReadPipe {
    fn write(&self, _data: &[u8]) -> Result<(), LoopError> {
        Err(Self::not_supported("write()"))
    }

    fn writelines(&self, _chunks: &[&[u8]]) -> Result<(), LoopError> {
        Err(Self::not_supported("writelines()"))
    }

    fn write_eof(&self) -> Result<(), LoopError> {
        Err(Self::not_supported("write_eof()"))
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    fn close(&self) {
        self.rc().close_impl()
    }

    fn abort(&self) {
        self.rc().close_impl()
    }

    fn is_closing(&self) -> bool {
        self.life.state.get() != State::Open
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        if self.life.state.get() == State::Lost {
            return;
        }
        let old = self.life.protocol.replace(protocol);
        drop(old);
    }

    fn get_protocol(&self) -> AnyProtocol {
        self.life.protocol()
    }

    fn pause_reading(&self) {
        if self.life.state.get() != State::Open || self.paused.replace(true) {
            return;
        }
        stop_watch(self, Dir::Read);
    }

    fn resume_reading(&self) {
        if self.life.state.get() != State::Open || !self.paused.replace(false) {
            return;
        }
        self.rc().start_reading();
    }

    fn is_reading(&self) -> bool {
        self.life.state.get() == State::Open && !self.paused.get()
    }

    fn write_buffer_size(&self) -> usize {
        0
    }

    fn write_buffer_limits(&self) -> WriteBufferLimits {
        WriteBufferLimits::default()
    }

    fn set_write_buffer_limits(&self, _limits: WriteBufferLimits) {}

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.life.extra_info(name)
    }

    fn get_loop(&self) -> EventLoop {
        self.life.lp.clone()
    }

    fn writes_after_lost(&self) -> u64 {
        0
    }
}

// ---------------------------------------------------------------------------
// The write pipe

#[derive(Clone, Copy, Debug)]
enum Notice {
    Pause,
    Resume,
}

/// The write end: asyncio's `_UnixWritePipeTransport`.
pub(crate) struct WritePipe {
    me: Weak<WritePipe>,
    life: Life,
    buffer: RefCell<WriteBuffer>,
    limits: Cell<WriteBufferLimits>,
    protocol_paused: Cell<bool>,
    /// `write_eof` was called: `write` is an error from now on.
    eof: Cell<bool>,
    /// Watches the reader going away (FIFOs opened write-only, sockets).
    hangup: Watch,
    writer: Watch,
    /// Writes run with SIGPIPE blocked (it was not ignored at creation).
    sigpipe_guard: bool,
    deferred: RefCell<VecDeque<Notice>>,
    /// `drain_deferred` is running (a protocol method it called re-entered).
    draining: Cell<bool>,
    retry_pending: Cell<bool>,
    writes_after_lost: Cell<u64>,
}

impl WritePipe {
    /// Wraps the write end `fd` (a FIFO, socket or character device open for
    /// writing; anything else is refused) and `protocol`: sets `O_NONBLOCK`
    /// and schedules `connection_made`. The transport can be written to at
    /// once. Does not wait: see [`wait_made`](Self::wait_made).
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        protocol: AnyProtocol,
    ) -> io::Result<(Transport, Rc<WritePipe>)> {
        ensure_open(lp)?;
        let info = prepare_pipe_fd(&fd, PipeDirection::Write)?;
        let sigpipe_guard = info.kind != FdKind::Socket && !sigpipe::ignored();
        let pipe = Rc::new_cyclic(|me| WritePipe {
            me: me.clone(),
            life: Life::new(lp, fd, info, protocol),
            buffer: RefCell::new(WriteBuffer::default()),
            limits: Cell::new(WriteBufferLimits::default()),
            protocol_paused: Cell::new(false),
            eof: Cell::new(false),
            hangup: Watch::default(),
            writer: Watch::default(),
            sigpipe_guard,
            deferred: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
            retry_pending: Cell::new(false),
            writes_after_lost: Cell::new(0),
        });
        launch(pipe)
    }

    /// Resolves once `connection_made` was called (or the pipe is lost), as
    /// asyncio's `connect_write_pipe` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        wait_made(self)
    }

    fn rc(&self) -> Rc<WritePipe> {
        self.me
            .upgrade()
            .expect("a live WritePipe is owned by an Rc")
    }

    /// Whether the reader's going away can be seen by watching for reading.
    fn watches_hangup(&self) -> bool {
        match self.life.info.kind {
            FdKind::Socket => true,
            FdKind::Fifo => !self.life.info.read_write,
            FdKind::CharDevice => false,
        }
    }

    fn start_hangup_watch(self: &Rc<Self>) {
        if !self.watches_hangup() || self.life.lost_scheduled.get() {
            return;
        }
        // A FIFO or socket can always be polled; if the registration fails
        // anyway, write errors still report the reader's going away.
        let _ = start_watch(self, Dir::Read, false);
    }

    /// The reader closed (or a socket peer sent something): close now.
    fn on_hangup(self: &Rc<Self>) {
        if self.life.lost_scheduled.get() || !self.hangup.on.get() {
            return;
        }
        let error = if self.buffer.borrow().is_empty() {
            None
        } else {
            Some(io::Error::from(Errno::PIPE))
        };
        self.force_close(error);
    }

    /// One write of `chunks` (vectored when several); `Ok(0)` when the pipe
    /// is full.
    fn write_now(&self, chunks: &[&[u8]]) -> io::Result<usize> {
        loop {
            let r = self
                .life
                .with_fd(|fd| self.write_once(fd, chunks))
                .unwrap_or(Ok(0));
            match r {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn write_once(&self, fd: BorrowedFd<'_>, chunks: &[&[u8]]) -> rustix::io::Result<usize> {
        let socket = self.life.info.kind == FdKind::Socket;
        if let [one] = chunks {
            return if socket {
                rustix::net::send(fd, one, SendFlags::NOSIGNAL)
            } else {
                sigpipe::write_guarded(self.sigpipe_guard, || rustix::io::write(fd, one))
            };
        }
        let slices: Vec<IoSlice<'_>> = chunks
            .iter()
            .filter(|c| !c.is_empty())
            .take(MAX_IOV)
            .map(|c| IoSlice::new(c))
            .collect();
        if socket {
            rustix::net::sendmsg(
                fd,
                &slices,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        } else {
            sigpipe::write_guarded(self.sigpipe_guard, || rustix::io::writev(fd, &slices))
        }
    }

    fn check_writable(&self) -> Result<bool, LoopError> {
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.life.state.get() != State::Open || self.life.lost_scheduled.get() {
            // asyncio's pipe drops writes once it is closing, and counts them.
            self.writes_after_lost.set(self.writes_after_lost.get() + 1);
            return Ok(false);
        }
        Ok(true)
    }

    fn write_impl(self: &Rc<Self>, chunks: &[&[u8]]) -> Result<(), LoopError> {
        if !self.check_writable()? {
            return Ok(());
        }
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let mut skip = 0;
        if self.buffer.borrow().is_empty() {
            match self.write_now(chunks) {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => skip = n,
                Err(e) => {
                    self.force_close(Some(e));
                    return Ok(());
                }
            }
        }
        {
            let mut buffer = self.buffer.borrow_mut();
            for c in chunks {
                if skip >= c.len() {
                    skip -= c.len();
                    continue;
                }
                buffer.extend(&c[skip..]);
                skip = 0;
            }
        }
        if let Err(e) = start_watch(self, Dir::Write, true) {
            self.force_close(Some(e.into()));
            return Ok(());
        }
        self.maybe_pause_protocol();
        Ok(())
    }

    fn on_writable(self: &Rc<Self>) {
        if !self.writer.on.get() || self.life.lost_scheduled.get() {
            return;
        }
        let sent = {
            let buffer = self.buffer.borrow();
            if buffer.is_empty() {
                Ok(0)
            } else {
                self.write_now(&{
                    let (a, b) = buffer.as_slices();
                    [a, b]
                })
            }
        };
        match sent {
            Ok(n) => {
                self.buffer.borrow_mut().consume(n);
                self.after_drain();
            }
            Err(e) => self.force_close(Some(e)),
        }
        self.drain_deferred();
    }

    /// After bytes left the buffer: resume the protocol, and when the buffer
    /// is empty stop watching writability and finish a close.
    fn after_drain(self: &Rc<Self>) {
        self.maybe_resume_protocol();
        if !self.buffer.borrow().is_empty() || self.life.lost_scheduled.get() {
            return;
        }
        stop_watch(&**self, Dir::Write);
        if self.life.state.get() == State::Closing {
            stop_watch(&**self, Dir::Read);
            schedule_lost(self, None);
        }
    }

    fn close_impl(self: &Rc<Self>) {
        if self.life.state.get() != State::Open {
            return;
        }
        self.life.state.set(State::Closing);
        if self.buffer.borrow().is_empty() {
            stop_watch(&**self, Dir::Read);
            schedule_lost(self, None);
        }
    }

    fn maybe_pause_protocol(&self) {
        let size = self.buffer.borrow().len();
        if !self.protocol_paused.get() && size > self.limits.get().high {
            self.protocol_paused.set(true);
            self.notify(Notice::Pause);
        }
    }

    fn maybe_resume_protocol(&self) {
        let size = self.buffer.borrow().len();
        if self.protocol_paused.get() && size <= self.limits.get().low {
            self.protocol_paused.set(false);
            self.notify(Notice::Resume);
        }
    }

    /// Delivers a flow-control notice now, or right after the protocol's
    /// running callback returns if it is busy.
    fn notify(&self, notice: Notice) {
        self.deferred.borrow_mut().push_back(notice);
        self.drain_deferred();
    }

    fn deliver(&self, notice: Notice) -> bool {
        let protocol = self.life.protocol();
        let delivered = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_with_base(|p| match notice {
                Notice::Pause => p.pause_writing(),
                Notice::Resume => p.resume_writing(),
            })
        }));
        drop(protocol);
        match delivered {
            Ok(d) => d,
            Err(payload) => {
                let what = match notice {
                    Notice::Pause => "pause_writing",
                    Notice::Resume => "resume_writing",
                };
                self.life.lp.call_exception_handler(
                    ExceptionContext::new(format!("protocol.{what}() failed"))
                        .with_error(LoopError::panicked(what, payload))
                        .with("transport", format!("write pipe fd={}", self.life.raw)),
                );
                true
            }
        }
    }

    /// Delivers the queued notices in order, once `connection_made` was. If
    /// the protocol is busy, the dispatcher running its callback drains them
    /// when it returns; in case it is busy for another reason (a task holding
    /// its borrow across an await), a retry is also scheduled.
    fn drain_deferred(&self) {
        if !self.life.made.get() {
            return; // delivered right after connection_made
        }
        if self.draining.replace(true) {
            return; // a notice is being delivered: its loop delivers this one
        }
        loop {
            let Some(notice) = self.deferred.borrow_mut().pop_front() else {
                break;
            };
            if !self.deliver(notice) {
                self.deferred.borrow_mut().push_front(notice);
                self.retry_later();
                break;
            }
        }
        self.draining.set(false);
    }

    /// Drains again shortly (1 ms: not `call_soon`, which would spin the
    /// loop for as long as a task keeps the protocol borrowed).
    fn retry_later(&self) {
        if self.retry_pending.replace(true) {
            return;
        }
        let me = self.rc();
        let _ = self.life.lp.call_later(RETRY_DELAY, move || {
            me.retry_pending.set(false);
            me.drain_deferred();
        });
    }
}

impl PipeEnd for WritePipe {
    const NAME: &'static str = "write pipe";

    fn life(&self) -> &Life {
        &self.life
    }

    fn watch(&self, dir: Dir) -> &Watch {
        match dir {
            Dir::Read => &self.hangup,
            Dir::Write => &self.writer,
        }
    }

    fn on_ready(self: &Rc<Self>, dir: Dir) {
        match dir {
            Dir::Read => self.on_hangup(),
            Dir::Write => self.on_writable(),
        }
    }

    fn after_made(self: &Rc<Self>) {
        self.drain_deferred();
        self.start_hangup_watch();
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.life.lost_scheduled.get() {
            return;
        }
        self.buffer.borrow_mut().clear();
        stop_watch(&**self, Dir::Write);
        stop_watch(&**self, Dir::Read);
        self.life.state.set(State::Closing);
        schedule_lost(self, error);
    }

    fn on_finished(&self) {
        self.buffer.borrow_mut().clear();
        self.deferred.borrow_mut().clear();
    }
}

impl TransportImpl for WritePipe {
    fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.rc().write_impl(&[data])
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.rc().write_impl(chunks)
    }

    /// asyncio's: the same as `close` for a pipe (flush, close the fd,
    /// `connection_lost(None)`), except that a later `write` is an error.
    fn write_eof(&self) -> Result<(), LoopError> {
        if self.life.state.get() != State::Open {
            return Ok(());
        }
        self.eof.set(true);
        self.rc().close_impl();
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        self.rc().close_impl()
    }

    fn abort(&self) {
        self.rc().force_close(None)
    }

    fn is_closing(&self) -> bool {
        self.life.state.get() != State::Open
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        if self.life.state.get() == State::Lost {
            return;
        }
        let old = self.life.protocol.replace(protocol);
        drop(old);
        if self.protocol_paused.get() {
            // The new protocol inherits the pause, so that the
            // resume_writing it gets later is paired.
            self.notify(Notice::Pause);
        }
    }

    fn get_protocol(&self) -> AnyProtocol {
        self.life.protocol()
    }

    fn pause_reading(&self) {}

    fn resume_reading(&self) {}

    fn is_reading(&self) -> bool {
        false
    }

    fn write_buffer_size(&self) -> usize {
        self.buffer.borrow().len()
    }

    fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.limits.get()
    }

    fn set_write_buffer_limits(&self, limits: WriteBufferLimits) {
        self.limits.set(limits);
        self.maybe_pause_protocol();
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.life.extra_info(name)
    }

    fn get_loop(&self) -> EventLoop {
        self.life.lp.clone()
    }

    fn writes_after_lost(&self) -> u64 {
        self.writes_after_lost.get()
    }
}

/// Keeping `SIGPIPE` away from writes to pipes (see the module docs).
mod sigpipe {
    use rustix::io::Errno;

    /// Whether the process ignores `SIGPIPE` right now.
    pub(super) fn ignored() -> bool {
        // SAFETY: a query (null new action) into a zeroed, owned sigaction.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) != 0 {
                return false;
            }
            old.sa_sigaction == libc::SIG_IGN
        }
    }

    /// Runs `write` (one write to a pipe) so that it cannot raise `SIGPIPE`
    /// when `guard` is set: with the signal blocked on this thread, consuming
    /// the one the write raised, then restoring the mask.
    pub(super) fn write_guarded(
        guard: bool,
        write: impl FnOnce() -> rustix::io::Result<usize>,
    ) -> rustix::io::Result<usize> {
        if !guard {
            return write();
        }
        // SAFETY: plain calls on sigset_t values owned by this frame.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return write();
            }
            let was_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
            // A SIGPIPE already pending (while the caller blocks it) is not
            // ours to consume.
            let pending_before = was_blocked && {
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut pending) == 0
                    && libc::sigismember(&pending, libc::SIGPIPE) == 1
            };
            let result = write();
            if result == Err(Errno::PIPE) && !pending_before {
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
            }
            if !was_blocked {
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            }
            result
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sigpipe_pending() -> bool {
            // SAFETY: as above.
            unsafe {
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut pending);
                libc::sigismember(&pending, libc::SIGPIPE) == 1
            }
        }

        /// The guarded path, even though the test binary ignores SIGPIPE
        /// (a blocked signal is queued even when ignored, so the path is
        /// really exercised): EPIPE comes back, no SIGPIPE stays pending,
        /// the mask is restored.
        #[test]
        fn a_guarded_write_to_a_pipe_without_reader_is_epipe_and_leaves_no_signal() {
            let (r, w) = rustix::pipe::pipe().unwrap();
            drop(r);
            let got = write_guarded(true, || rustix::io::write(&w, b"x"));
            assert_eq!(got, Err(Errno::PIPE));
            assert!(!sigpipe_pending(), "the SIGPIPE was not consumed");
            // SAFETY: as above.
            let blocked = unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                libc::sigismember(&cur, libc::SIGPIPE) == 1
            };
            assert!(!blocked, "the thread's mask was left changed");
            assert!(ignored(), "Rust test binaries ignore SIGPIPE");
        }
    }
}
