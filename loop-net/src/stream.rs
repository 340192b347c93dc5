//! The socket stream transport (TCP and Unix stream sockets).
//!
//! # State machine
//! `Open -> Closing -> Lost`, one way only. `close()` moves to `Closing` and
//! stops reading; the buffered bytes are still sent, then `connection_lost`
//! is scheduled. `abort()` and fatal errors drop the buffer and schedule it at
//! once. Whichever comes first schedules `connection_lost` (through
//! `call_soon`, never synchronously) and nothing schedules it twice
//! (`lost_scheduled`); when it runs, the socket is closed and the state is
//! `Lost`. Writes after that are dropped and counted. The transport then lets
//! go of its protocol (asyncio sets `_protocol = None`): a protocol that
//! keeps its `Transport` would otherwise keep both alive forever, a cycle of
//! `Rc`s leaked with every connection.
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
//! # Where the parts live
//! This module holds the transport's state, its creation, `connection_made`
//! and the lifecycle (closing, `connection_lost`, the release of the socket
//! and the protocol). Its child modules hold the rest, reaching that state
//! without widening it: the read path (stream/input.rs), the write path and
//! its flow-control notices (stream/output.rs), the `Transport` methods
//! (stream/transport.rs), `loop.sendfile`'s hooks (stream/sendfile.rs) and
//! `start_tls`'s hand-over of the socket (stream/upgrade.rs).

pub(crate) mod connect;
pub(crate) mod ext;
pub(crate) mod server;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, LoopError};

use crate::addr::SockAddr;
use crate::flow::{Notice, WriteFlow};
use crate::loop_slot::LoopSlot;
use crate::protocol::{report_protocol_panic, AnyProtocol, Made};
use crate::transport::Transport;
use crate::write_buffer::{WriteBuffer, WriteBufferLimits};

mod input;
mod output;
mod sendfile;
use crate::sendfile::transport::SendfileState;

mod transport;
mod upgrade;

pub(crate) use input::READ_SIZE;
use upgrade::UpgradeState;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    Closing,
    Lost,
}

/// Called when a transport's connection is lost (servers count their
/// connections this way).
pub(crate) type LostHook = Box<dyn FnOnce()>;

pub(crate) struct Stream {
    me: std::rc::Weak<Stream>,
    /// Released once `connection_lost` has run (loop_slot.rs).
    lp: LoopSlot,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    state: Cell<State>,
    protocol: RefCell<AnyProtocol>,
    buffer: RefCell<WriteBuffer>,
    /// Water marks and the pause/resume notices owed (flow.rs).
    flow: WriteFlow,
    reading: Cell<bool>,
    writing: Cell<bool>,
    eof: Cell<bool>,
    /// The peer's EOF was delivered: reading never starts again (asyncio
    /// removes the reader and `resume_reading` does not re-add it).
    read_eof: Cell<bool>,
    lost_scheduled: Cell<bool>,
    /// Bytes the buffer held when a forced close (abort, error) dropped it.
    dropped_on_loss: Cell<usize>,
    /// `connection_made` was delivered.
    made: Cell<bool>,
    made_waiters: RefCell<Vec<std::task::Waker>>,
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
            lp: LoopSlot::owning(lp, fd.as_raw_fd(), "socket transport"),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            state: Cell::new(State::Open),
            protocol: RefCell::new(protocol),
            buffer: RefCell::new(WriteBuffer::default()),
            flow: WriteFlow::new(WriteBufferLimits::default()),
            reading: Cell::new(false),
            writing: Cell::new(false),
            eof: Cell::new(false),
            read_eof: Cell::new(false),
            lost_scheduled: Cell::new(false),
            dropped_on_loss: Cell::new(0),
            made: Cell::new(false),
            made_waiters: RefCell::new(Vec::new()),
            user_paused: Cell::new(false),
            writes_after_lost: Cell::new(0),
            peername,
            sockname,
            on_lost: RefCell::new(on_lost),
            sendfile: SendfileState::default(),
            upgrade: UpgradeState::default(),
        });
        let transport = Transport {
            inner: stream.clone(),
        };
        let t = transport.clone();
        let me = stream.clone();
        lp.call_soon(move || me.deliver_made(t))?;
        Ok((transport, stream))
    }

    /// Calls `connection_made` (always first: a `close`/`abort` before it
    /// only schedules `connection_lost` after it), then starts reading.
    fn deliver_made(self: &Rc<Self>, transport: Transport) {
        if self.state.get() == State::Lost {
            // Abandoned before this ran: the protocol is never called.
            return;
        }
        let protocol = self.protocol.borrow().clone();
        match protocol.deliver_connection_made(transport) {
            Made::Called => {
                self.made.set(true);
                self.wake_made();
                self.drain_deferred();
                if self.state.get() == State::Open && !self.user_paused.get() {
                    self.start_reading();
                }
            }
            Made::Busy(t) => {
                // Offered from inside one of the protocol's methods (it is
                // shared with another transport): right after it returns.
                let me = self.clone();
                protocol.when_free(move || me.deliver_made(t));
            }
            Made::Panicked(payload) => {
                self.made.set(true);
                self.wake_made();
                self.protocol_failed("connection_made", payload);
            }
        }
    }

    fn wake_made(&self) {
        let waiters = std::mem::take(&mut *self.made_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves once `connection_made` was called (or the transport is
    /// lost), as asyncio's `create_connection` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        let me = self.clone();
        std::future::poll_fn(move |cx| {
            if me.made.get() || me.state.get() == State::Lost {
                return std::task::Poll::Ready(());
            }
            me.made_waiters.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
    }

    /// The future waiting for `connection_made` was dropped before it ran
    /// (a cancelled `create_connection`): close the socket and release the
    /// protocol at once, without calling it; the `connection_made` already
    /// scheduled does nothing. Too late once `connection_made` ran: the
    /// caller then returns the transport.
    pub(crate) fn abandon(&self) {
        if self.made.get() || self.state.get() == State::Lost {
            return;
        }
        self.lost_scheduled.set(true);
        self.finish_lost();
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
        if self.state.get() != State::Open {
            return;
        }
        self.state.set(State::Closing);
        self.sendfile.wake();
        self.stop_reading();
        if self.buffer.borrow().is_empty() {
            self.schedule_lost(None);
        }
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.lost_scheduled.get() {
            return;
        }
        self.dropped_on_loss.set(self.buffer.borrow().len());
        self.buffer.borrow_mut().clear();
        self.stop_writing();
        self.stop_reading();
        self.state.set(State::Closing);
        self.sendfile.wake();
        self.schedule_lost(error);
    }

    fn fatal(self: &Rc<Self>, error: io::Error) {
        self.force_close(Some(error));
    }

    fn protocol_failed(self: &Rc<Self>, what: &str, payload: Box<dyn std::any::Any + Send>) {
        let protocol = self.protocol.borrow().clone();
        let context = format!("fd={}", self.raw);
        let error = match self.lp.get() {
            Some(lp) => report_protocol_panic(&lp, what, payload, context, &protocol),
            None => io::Error::other(format!("protocol.{what}() call failed")),
        };
        self.force_close(Some(error));
    }

    fn schedule_lost(self: &Rc<Self>, error: Option<io::Error>) {
        if self.lost_scheduled.replace(true) {
            return;
        }
        self.upgrade.wake();
        let me = self.clone();
        let scheduled = self.lp.call_soon(move || me.call_connection_lost(error));
        if scheduled.is_err() {
            // The loop is closed: nothing can be delivered; release the socket.
            self.finish_lost();
        }
    }

    fn call_connection_lost(self: &Rc<Self>, error: Option<io::Error>) {
        let protocol = self.protocol.borrow().clone();
        if protocol.in_use() {
            // Reached from inside one of the protocol's methods: right after
            // it returns (after a connection_made deferred the same way).
            let me = self.clone();
            protocol.when_free(move || me.call_connection_lost(error));
            return;
        }
        if self.made.get() || self.state.get() == State::Lost {
            let context = format!("fd={}", self.raw);
            // The protocol is free: this cannot be handed back.
            if let Some(lp) = self.lp.get() {
                let _ = protocol.deliver_connection_lost(&lp, error, &context);
            }
        }
        // Else connection_made was never delivered: neither is connection_lost.
        drop(protocol);
        self.finish_lost();
    }

    fn finish_lost(&self) {
        self.state.set(State::Lost);
        self.sendfile.wake();
        self.wake_made();
        self.stop_reading();
        self.stop_writing();
        let fd = self.fd.borrow_mut().take();
        drop(fd);
        // Break the protocol -> transport -> protocol cycle; the protocol's
        // own Drop runs outside any borrow of ours.
        let released = self.protocol.replace(AnyProtocol::released());
        // Taken first: no borrow of ours is held while the hook runs.
        let hook = self.on_lost.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
        drop(released);
        // And the loop (asyncio sets `_loop = None`): a `Transport` kept
        // after this does not keep the loop alive.
        self.lp.release();
    }
}

fn io_error(e: LoopError) -> io::Error {
    e.into()
}
