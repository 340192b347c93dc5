//! The write end of a pipe: asyncio's `_UnixWritePipeTransport`. A child
//! module of `pipe`, whose shared lifecycle it plugs into ([`PipeEnd`]).
//!
//! Write first, buffer only the rest (a copy for `write`/`writelines`, the
//! caller's buffer itself for `write_owned`: pipe/write_queue.rs): a write
//! goes out at once when nothing is buffered, and the fd is watched for
//! writability while the buffer is non-empty, and until the first readiness
//! after it emptied: the watch is dropped lazily, at that readiness if
//! nothing was written meanwhile. A producer that refills the buffer from a
//! task woken by the drain (a `StreamWriter` awaiting `drain()`) so costs
//! no `epoll_ctl` per refill, and an idle pipe at most one spurious
//! readiness. Every path that grows the buffer ends in
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
//! Writes to a pipe or character device go through the SIGPIPE guard
//! (sigpipe.rs); sockets are written with `MSG_NOSIGNAL`.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::{Rc, Weak};

use loop_core::{ErrorKind, EventLoop, LoopError};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};

use super::write_queue::{WriteQueue, MAX_SLICES};
use super::{
    ensure_open, launch, prepare_pipe_fd, sigpipe, start_watch, stop_watch, wait_made, Dir, FdKind,
    Life, PipeDirection, PipeEnd, Watch,
};
use crate::flow::{FlowOwner, Notice, WriteFlow};
use crate::lifecycle::{self, LifeState as State};
use crate::protocol::AnyProtocol;
use crate::transport::{ExtraInfo, OwnedBuf, Transport, TransportImpl};
use crate::write_buffer::WriteBufferLimits;

/// Linux's `IOV_MAX`: `writev` refuses more buffers than this; the rest of
/// a longer `writelines` is buffered.
const MAX_IOV: usize = 1024;

/// The write end: asyncio's `_UnixWritePipeTransport`.
pub(crate) struct WritePipe {
    me: Weak<WritePipe>,
    life: Life,
    buffer: RefCell<WriteQueue>,
    /// Bytes the buffer held when a forced close (abort, error) dropped it.
    dropped_on_loss: Cell<usize>,
    /// Water marks and the pause/resume notices owed (flow.rs).
    flow: WriteFlow,
    /// `write_eof` was called: `write` is an error from now on.
    eof: Cell<bool>,
    /// Watches the reader going away (FIFOs opened write-only, sockets).
    hangup: Watch,
    writer: Watch,
    /// Writes run with SIGPIPE blocked (it was not ignored at creation).
    sigpipe_guard: bool,
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
            buffer: RefCell::new(WriteQueue::default()),
            dropped_on_loss: Cell::new(0),
            flow: WriteFlow::new(WriteBufferLimits::default()),
            eof: Cell::new(false),
            hangup: Watch::default(),
            writer: Watch::default(),
            sigpipe_guard,
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
        if !self.watches_hangup() || self.life.lost_claimed() {
            return;
        }
        // A FIFO or socket can always be polled; if the registration fails
        // anyway, write errors still report the reader's going away.
        let _ = start_watch(self, Dir::Read, false);
    }

    /// The reader closed (or a socket peer sent something): close now.
    fn on_hangup(self: &Rc<Self>) {
        if self.life.lost_claimed() || !self.hangup.on.get() {
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
        let mut stack = [IoSlice::new(&[]); MAX_SLICES];
        let heap: Vec<IoSlice<'_>>;
        let nonempty = chunks.iter().filter(|c| !c.is_empty());
        let slices: &[IoSlice<'_>] = if chunks.len() <= MAX_SLICES {
            let mut n = 0;
            for (slot, c) in stack.iter_mut().zip(nonempty) {
                *slot = IoSlice::new(c);
                n += 1;
            }
            &stack[..n]
        } else {
            heap = nonempty.take(MAX_IOV).map(|c| IoSlice::new(c)).collect();
            &heap
        };
        if socket {
            rustix::net::sendmsg(
                fd,
                slices,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        } else {
            sigpipe::write_guarded(self.sigpipe_guard, || rustix::io::writev(fd, slices))
        }
    }

    fn check_writable(&self) -> Result<bool, LoopError> {
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.life.state() != State::Open || self.life.lost_claimed() {
            // asyncio's pipe drops writes once it is closing, and counts them.
            crate::transport::count_dropped_write(
                &self.writes_after_lost,
                "pipe closed by peer or os.write(pipe, data) raised exception.",
            );
            return Ok(false);
        }
        Ok(true)
    }

    fn write_impl(self: &Rc<Self>, chunks: &[&[u8]]) -> Result<(), LoopError> {
        let Some(skip) = self.write_first(chunks)? else {
            return Ok(());
        };
        self.buffer.borrow_mut().extend_unsent(chunks, skip);
        self.after_buffered();
        Ok(())
    }

    /// `write_owned`: as `write_impl`, keeping `data` instead of copying
    /// its rest.
    fn write_owned_impl(self: &Rc<Self>, data: OwnedBuf) -> Result<(), LoopError> {
        let Some(skip) = self.write_first(&[AsRef::<[u8]>::as_ref(&*data)])? else {
            return Ok(());
        };
        self.buffer.borrow_mut().push_owned(data, skip);
        self.after_buffered();
        Ok(())
    }

    /// The start of every write: checks the state, then writes at once when
    /// nothing is buffered. `Some(n)`: the first `n` bytes went out and the
    /// rest must be buffered; `None`: nothing left to do (all written,
    /// nothing to write, dropped, or the transport failed and closed).
    fn write_first(self: &Rc<Self>, chunks: &[&[u8]]) -> Result<Option<usize>, LoopError> {
        if !self.check_writable()? {
            return Ok(None);
        }
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return Ok(None);
        }
        if !self.buffer.borrow().is_empty() {
            return Ok(Some(0));
        }
        match self.write_now(chunks) {
            Ok(n) if n == total => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                self.force_close(Some(e));
                Ok(None)
            }
        }
    }

    /// After bytes were buffered: watch writability, maybe pause.
    fn after_buffered(self: &Rc<Self>) {
        if let Err(e) = start_watch(self, Dir::Write, true) {
            self.force_close(Some(e.into()));
            return;
        }
        self.maybe_pause_protocol();
    }

    fn on_writable(self: &Rc<Self>) {
        if !self.writer.on.get() || self.life.lost_claimed() {
            return;
        }
        if self.buffer.borrow().is_empty() {
            // The buffer emptied at an earlier readiness and nothing was
            // written since: stop watching now (see the module docs).
            stop_watch(&**self, Dir::Write);
            return;
        }
        let sent = {
            let buffer = self.buffer.borrow();
            let mut slices = [&[][..]; MAX_SLICES];
            let n = buffer.slices(&mut slices);
            self.write_now(&slices[..n])
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
    /// is empty finish a close. Writability stays watched until its next
    /// readiness finds the buffer still empty (see the module docs).
    fn after_drain(self: &Rc<Self>) {
        self.maybe_resume_protocol();
        if !self.buffer.borrow().is_empty() || self.life.lost_claimed() {
            return;
        }
        if self.life.state() == State::Closing {
            stop_watch(&**self, Dir::Write);
            stop_watch(&**self, Dir::Read);
            lifecycle::schedule_lost(self, None);
        }
    }

    fn close_impl(self: &Rc<Self>) {
        if !self.life.begin_closing() {
            return;
        }
        if self.buffer.borrow().is_empty() {
            stop_watch(&**self, Dir::Write);
            stop_watch(&**self, Dir::Read);
            lifecycle::schedule_lost(self, None);
        }
    }
}

impl FlowOwner for WritePipe {
    fn flow(&self) -> &WriteFlow<Notice> {
        &self.flow
    }
    fn buffered(&self) -> usize {
        self.buffer.borrow().len()
    }
    fn drain_deferred(&self) {
        if !self.life.is_made() {
            return; // delivered right after connection_made
        }
        if !self
            .flow
            .drain_to(&self.life, || format!("write pipe fd={}", self.life.raw))
        {
            let me = self.rc();
            self.flow
                .drain_later(&self.life, move || me.drain_deferred());
        }
    }
}

impl PipeEnd for WritePipe {
    const NAME: &'static str = "write pipe";

    fn shared(&self) -> &Life {
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

    fn start_io(self: &Rc<Self>) {
        self.drain_deferred();
        self.start_hangup_watch();
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.life.lost_claimed() {
            return;
        }
        self.dropped_on_loss.set(self.buffer.borrow().len());
        self.buffer.borrow_mut().clear();
        stop_watch(&**self, Dir::Write);
        stop_watch(&**self, Dir::Read);
        self.life.force_closing();
        lifecycle::schedule_lost(self, error);
    }

    fn on_finished(&self) {
        self.buffer.borrow_mut().clear();
        self.flow.clear();
    }
}

impl TransportImpl for WritePipe {
    fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.rc().write_impl(&[data])
    }

    fn write_owned(&self, data: OwnedBuf) -> Result<(), LoopError> {
        self.rc().write_owned_impl(data)
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.rc().write_impl(chunks)
    }

    /// asyncio's: the same as `close` for a pipe (flush, close the fd,
    /// `connection_lost(None)`), except that a later `write` is an error.
    fn write_eof(&self) -> Result<(), LoopError> {
        if self.life.state() != State::Open {
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
        self.life.state() != State::Open
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        if self.life.state() == State::Lost {
            return;
        }
        let old = self.life.replace_protocol(protocol);
        drop(old);
        if self.flow.is_paused() {
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
        self.flow.limits()
    }

    fn set_write_buffer_limits(&self, limits: WriteBufferLimits) {
        self.flow.set_limits(limits);
        self.maybe_pause_protocol();
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.life.extra_info(name)
    }

    fn get_loop(&self) -> Option<EventLoop> {
        self.life.lp().get()
    }

    fn writes_after_lost(&self) -> u64 {
        self.writes_after_lost.get()
    }

    fn dropped_on_loss(&self) -> usize {
        self.dropped_on_loss.get()
    }
}
