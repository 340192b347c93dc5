//! Pipe transports: asyncio's `_UnixReadPipeTransport` and
//! `_UnixWritePipeTransport`, over pipes, FIFOs, character devices and
//! sockets. This module holds what both kinds share: the checking of the
//! fd, the lifecycle (`connection_made`, `connection_lost`, the release of
//! the fd and the protocol) and the emulation of readiness for fds that
//! cannot be polled. The read end is in pipe/read_pipe.rs, the write end in
//! pipe/write_pipe.rs, its buffer in pipe/write_queue.rs, the SIGPIPE guard
//! of its writes in sigpipe.rs (child modules, so that they reach the shared
//! state without widening it).
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
//! # Lifecycle
//! [`Lifecycle`](crate::lifecycle)'s states and rules; when
//! `connection_lost` has run, the fd is unregistered and closed.
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

pub(crate) mod ext;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, LoopError};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;

use crate::lifecycle::{self, Lifecycle, LifecycleOwner};
use crate::protocol::{report_protocol_panic, AnyProtocol};
use crate::transport::{ExtraInfo, Transport, TransportImpl};

mod read_pipe;
mod sigpipe;
mod write_pipe;
mod write_queue;

pub(crate) use read_pipe::ReadPipe;
pub(crate) use write_pipe::WritePipe;

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
/// lifecycle (through `Deref`) and the fd.
struct Life {
    cycle: Lifecycle<AnyProtocol>,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    info: PipeFd,
}

impl std::ops::Deref for Life {
    type Target = Lifecycle<AnyProtocol>;

    fn deref(&self) -> &Lifecycle<AnyProtocol> {
        &self.cycle
    }
}

impl Life {
    fn new(lp: &EventLoop, fd: OwnedFd, info: PipeFd, protocol: AnyProtocol) -> Life {
        Life {
            cycle: Lifecycle::owning(lp, protocol, fd.as_raw_fd(), "pipe transport"),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            info,
        }
    }

    fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
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

/// What the shared code needs from each kind of pipe transport.
trait PipeEnd: Sized + 'static {
    fn shared(&self) -> &Life;
    fn watch(&self, dir: Dir) -> &Watch;
    /// The fd is ready in direction `dir` (or an emulated tick ran).
    fn on_ready(self: &Rc<Self>, dir: Dir);
    /// `connection_made` was delivered: start the transport's I/O.
    fn start_io(self: &Rc<Self>);
    /// Closes at once (drops buffered bytes) and schedules
    /// `connection_lost(error)`.
    fn force_close(self: &Rc<Self>, error: Option<io::Error>);
    /// The connection is lost: forget what the protocol is owed.
    fn on_finished(&self) {}
    /// "read pipe" / "write pipe", for messages.
    const NAME: &'static str;
}

impl<T: PipeEnd> LifecycleOwner for T {
    type Protocol = AnyProtocol;

    fn life(&self) -> &Lifecycle<AnyProtocol> {
        &self.shared().cycle
    }

    fn after_made(self: &Rc<Self>) {
        self.start_io();
    }

    fn protocol_failed(self: &Rc<Self>, what: &str, payload: Box<dyn std::any::Any + Send>) {
        let life = self.shared();
        let context = format!("{} fd={}", T::NAME, life.raw);
        let protocol = life.protocol();
        let error = match life.get_loop() {
            Some(lp) => report_protocol_panic(&lp, what, payload, context, &protocol),
            None => io::Error::other(format!("protocol.{what}() call failed")),
        };
        self.force_close(Some(error));
    }

    fn deliver_lost(self: &Rc<Self>, protocol: &AnyProtocol, error: Option<io::Error>) {
        let life = self.shared();
        if let Some(lp) = life.get_loop() {
            let context = format!("{} fd={}", T::NAME, life.raw);
            let _ = protocol.deliver_connection_lost(&lp, error, &context);
        }
    }

    fn close_resources(&self) {
        stop_watch(self, Dir::Read);
        stop_watch(self, Dir::Write);
        self.on_finished();
        // Unregistered first, closed second (the poller's contract).
        let fd = self.shared().fd.borrow_mut().take();
        drop(fd);
    }
}

/// Wraps `pipe` in its `Transport`, schedules `connection_made`.
fn launch<T: PipeEnd + TransportImpl>(pipe: Rc<T>) -> io::Result<(Transport, Rc<T>)> {
    let transport = Transport {
        inner: pipe.clone(),
    };
    lifecycle::schedule_made(&pipe, transport.clone()).map_err(io::Error::from)?;
    Ok((transport, pipe))
}

fn ensure_open(lp: &EventLoop) -> io::Result<()> {
    if lp.is_closed() {
        return Err(LoopError::closed().into());
    }
    Ok(())
}

/// Resolves once `connection_made` ran, or the transport is lost.
fn wait_made<T: PipeEnd>(me: &Rc<T>) -> impl std::future::Future<Output = ()> + 'static {
    let me = me.clone();
    std::future::poll_fn(move |cx| me.shared().poll_made(cx))
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
    let life = me.shared();
    let m = me.clone();
    let registered = match dir {
        Dir::Read => life
            .lp()
            .add_reader(life.raw, move || m.on_ready(Dir::Read)),
        Dir::Write => life
            .lp()
            .add_writer(life.raw, move || m.on_ready(Dir::Write)),
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
        let life = me.shared();
        let _ = match dir {
            Dir::Read => life.lp().remove_reader(life.raw),
            Dir::Write => life.lp().remove_writer(life.raw),
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
    let scheduled = me.shared().lp().call_soon(move || {
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
