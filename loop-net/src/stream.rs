//! The socket stream transport (TCP and Unix stream sockets).
//!
//! # Lifecycle
//! `Open -> Closing -> Lost` and the rules of `connection_made` and
//! `connection_lost` are [`Lifecycle`](crate::lifecycle)'s. Here, `close()`
//! stops reading and lets the buffered bytes go out before `connection_lost`
//! is scheduled; `abort()` and fatal errors drop the buffer (its size is
//! kept for `dropped_on_loss`) and schedule it at once. Writes after that
//! are dropped and counted.
//!
//! # Read path
//! The loop watches the socket level-triggered while the transport reads.
//! Each readiness does one `recv` (bounded work per iteration, as asyncio)
//! into a read buffer shared by all the loop's transports (taken out of its
//! slot for the call and put back after), and hands the protocol a slice:
//! no allocation per read. A `BufferedProtocol` gets the bytes in its own
//! buffer. The protocol is free whenever the loop dispatches (it is reached
//! only through closures, protocol.rs); should a readiness find it in use,
//! nothing is read and the socket is unwatched until it is free
//! (stream/input.rs): no spin, nothing lost.
//!
//! # Write path
//! Write first, buffer only the rest: `write()` tries `send` at once when
//! nothing is buffered, and registers for writability only while the buffer
//! is non-empty. Every path that grows the buffer goes through
//! `maybe_pause_protocol`; every path that shrinks it through
//! `maybe_resume_protocol`. Every error branch ends in exactly one of: still
//! armed for writability, or closed.
//!
//! # On io_uring
//! On a loop that runs `Backend::Uring`, the transport moves its bytes by
//! completion instead (stream/completion.rs): the kernel receives into the
//! loop's ring buffers and sends what an iteration wrote in one go. The
//! lifecycle, flow control and the protocol's view are the same.
//!
//! # Where the parts live
//! This module holds the transport's state, its creation, `connection_made`
//! and the lifecycle (closing, `connection_lost`, the release of the socket
//! and the protocol). Its child modules hold the rest, reaching that state
//! without widening it: the read path (stream/input.rs), the write path and
//! its flow-control notices (stream/output.rs), the `Transport` methods
//! (stream/transport.rs), `loop.sendfile`'s hooks (stream/sendfile.rs),
//! `start_tls`'s hand-over of the socket (stream/upgrade.rs) and the
//! io_uring completion path (stream/completion.rs).

pub(crate) mod connect;
pub(crate) mod ext;
pub(crate) mod server;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, LoopError};

use crate::addr::SockAddr;
use crate::flow::{FlowOwner, Notice, WriteFlow};
use crate::lifecycle::{self, LifeState as State, Lifecycle, LifecycleOwner};
use crate::protocol::{report_made_panic, report_protocol_panic, AnyProtocol};
use crate::ring::{Ring, Stash};
use crate::transport::Transport;
use crate::write_buffer::{WriteBuffer, WriteBufferLimits};

mod completion;
mod input;
mod output;
mod sendfile;
use crate::sendfile::transport::SendfileState;

mod transport;
mod upgrade;

pub(crate) use input::READ_SIZE;
#[cfg(feature = "tls")]
pub(crate) use transport::{socket_extra_info, socket_transport_methods};
use upgrade::UpgradeState;

/// Called when a transport's connection is lost (servers count their
/// connections this way).
pub(crate) type LostHook = Box<dyn FnOnce()>;

pub(crate) struct Stream {
    me: std::rc::Weak<Stream>,
    /// The state, the protocol and the loop (lifecycle.rs).
    life: Lifecycle<AnyProtocol>,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    buffer: RefCell<WriteBuffer>,
    /// The loop's completion path for this socket, when the loop runs
    /// io_uring (stream/completion.rs); empty: readiness.
    ring: Ring,
    /// Bytes received on the completion path while not reading (paused,
    /// or the protocol in use), delivered first when reading resumes, with
    /// the EOF or error met behind them (ring.rs).
    stash: Stash,
    /// Water marks and the pause/resume notices owed (flow.rs).
    flow: WriteFlow,
    reading: Cell<bool>,
    /// The reader is edge-triggered (input.rs says what that asks of it).
    edge: Cell<bool>,
    /// Reads so far: a re-read scheduled after a full read is skipped if
    /// another read ran in between (it scheduled its own).
    reads: Cell<u64>,
    writing: Cell<bool>,
    eof: Cell<bool>,
    /// The peer's EOF was delivered: reading never starts again (asyncio
    /// removes the reader and `resume_reading` does not re-add it).
    read_eof: Cell<bool>,
    /// Bytes the buffer held when a forced close (abort, error) dropped it.
    dropped_on_loss: Cell<usize>,
    /// `pause_reading()` was called (and not undone by `resume_reading()`).
    user_paused: Cell<bool>,
    writes_after_lost: Cell<u64>,
    peername: Option<SockAddr>,
    sockname: Option<SockAddr>,
    on_lost: RefCell<Option<LostHook>>,
    /// `loop.sendfile` in progress (stream/sendfile.rs).
    sendfile: SendfileState,
    /// `start_tls` waiting, or done (stream/upgrade.rs).
    upgrade: UpgradeState,
}

impl Stream {
    /// Wraps a connected, non-blocking stream socket: calls
    /// `connection_made` (through the loop, as asyncio does) and starts
    /// reading after it.
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        protocol: AnyProtocol,
        on_lost: Option<LostHook>,
    ) -> Result<Transport, LoopError> {
        Self::start_rc(lp, fd, protocol, on_lost).map(|(t, _)| t)
    }

    /// [`start`](Self::start), also returning the stream itself.
    pub(crate) fn start_rc(
        lp: &EventLoop,
        fd: OwnedFd,
        protocol: AnyProtocol,
        on_lost: Option<LostHook>,
    ) -> Result<(Transport, Rc<Stream>), LoopError> {
        if lp.is_closed() {
            return Err(LoopError::new(ErrorKind::Closed, "Event loop is closed"));
        }
        let peername = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .map(SockAddr::from_raw);
        let sockname = rustix::net::getsockname(&fd).ok().map(SockAddr::from_raw);
        let stream = Rc::new_cyclic(|me| Stream {
            me: me.clone(),
            life: Lifecycle::owning(lp, protocol, fd.as_raw_fd(), "socket transport"),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            buffer: RefCell::new(WriteBuffer::default()),
            ring: Ring::default(),
            stash: Stash::default(),
            flow: WriteFlow::new(WriteBufferLimits::default()),
            reading: Cell::new(false),
            edge: Cell::new(false),
            reads: Cell::new(0),
            writing: Cell::new(false),
            eof: Cell::new(false),
            read_eof: Cell::new(false),
            dropped_on_loss: Cell::new(0),
            user_paused: Cell::new(false),
            writes_after_lost: Cell::new(0),
            peername,
            sockname,
            on_lost: RefCell::new(on_lost),
            sendfile: SendfileState::default(),
            upgrade: UpgradeState::default(),
        });
        stream.open_completion();
        let transport = Transport {
            inner: stream.clone(),
        };
        lifecycle::schedule_made(&stream, transport.clone())?;
        Ok((transport, stream))
    }

    /// Resolves once `connection_made` was called (or the transport is
    /// lost), as asyncio's `create_connection` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        let me = self.clone();
        std::future::poll_fn(move |cx| me.life.poll_made(cx))
    }

    /// The future waiting for `connection_made` was dropped before it ran
    /// (a cancelled `create_connection`): close the socket and release the
    /// protocol at once, without calling it; the `connection_made` already
    /// scheduled does nothing. Too late once `connection_made` ran: the
    /// caller then returns the transport.
    pub(crate) fn abandon(&self) {
        if self.life.is_made() || self.life.state() == State::Lost {
            return;
        }
        lifecycle::finish_lost(self);
    }

    /// The `Rc` of `self`, for the callbacks registered with the loop.
    fn rc(&self) -> Rc<Stream> {
        self.me.upgrade().expect("a live Stream is owned by an Rc")
    }

    fn with_fd<R>(&self, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
    }

    fn close_impl(self: &Rc<Self>) {
        if !self.life.begin_closing() {
            return;
        }
        self.sendfile.wake();
        self.stop_reading();
        if self.buffered() == 0 {
            self.schedule_lost(None);
        }
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.life.lost_claimed() {
            return;
        }
        self.dropped_on_loss.set(self.buffered());
        self.buffer.borrow_mut().clear();
        self.ring.discard();
        self.stop_writing();
        self.stop_reading();
        self.life.force_closing();
        self.sendfile.wake();
        self.schedule_lost(error);
    }

    fn fatal(self: &Rc<Self>, error: io::Error) {
        self.force_close(Some(error));
    }

    fn schedule_lost(self: &Rc<Self>, error: Option<io::Error>) {
        lifecycle::schedule_lost(self, error);
    }
}

impl LifecycleOwner for Stream {
    type Protocol = AnyProtocol;

    fn life(&self) -> &Lifecycle<AnyProtocol> {
        &self.life
    }

    fn after_made(self: &Rc<Self>) {
        self.drain_deferred();
        if self.life.state() == State::Open && !self.user_paused.get() {
            self.start_reading();
        }
    }

    fn protocol_failed(self: &Rc<Self>, what: &str, payload: Box<dyn std::any::Any + Send>) {
        let protocol = self.life.protocol();
        let context = format!("fd={}", self.raw);
        let error = match self.life.get_loop() {
            Some(lp) => report_protocol_panic(&lp, what, payload, context, &protocol),
            None => io::Error::other(format!("protocol.{what}() call failed")),
        };
        self.force_close(Some(error));
    }

    /// Reported, not fatal: asyncio runs `connection_made` as a loop
    /// callback, whose exception the loop reports, and the socket
    /// transport goes on (reading starts as usual).
    fn made_panicked(self: &Rc<Self>, payload: Box<dyn std::any::Any + Send>) -> bool {
        if let Some(lp) = self.life.get_loop() {
            let protocol = self.life.protocol();
            report_made_panic(&lp, payload, format!("fd={}", self.raw), &protocol);
        }
        true
    }

    fn lost_scheduled(self: &Rc<Self>) {
        self.upgrade.wake();
    }

    fn deliver_lost(self: &Rc<Self>, protocol: &AnyProtocol, error: Option<io::Error>) {
        if let Some(lp) = self.life.get_loop() {
            let _ = protocol.deliver_connection_lost(&lp, error, &format!("fd={}", self.raw));
        }
    }

    fn close_resources(&self) {
        self.sendfile.wake();
        self.stop_reading();
        self.stop_writing();
        // Before the fd closes: the kernel lets go of the socket with it.
        self.ring.release();
        let fd = self.fd.borrow_mut().take();
        drop(fd);
    }

    fn lost_hook(&self) {
        // Taken first: no borrow of ours is held while the hook runs.
        let hook = self.on_lost.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

fn io_error(e: LoopError) -> io::Error {
    e.into()
}
