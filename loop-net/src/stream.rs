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
//! buffer. If the protocol is borrowed elsewhere (a task holding a
//! `ProtocolHandle` borrow across an await), the transport does not read in
//! that iteration: level-triggering brings it back, and nothing is lost.
//!
//! # Write path
//! Write first, buffer only the rest: `write()` tries `send` at once when
//! nothing is buffered, and registers for writability only while the buffer
//! is non-empty. Every path that grows the buffer goes through
//! `maybe_pause_protocol`; every path that shrinks it through
//! `maybe_resume_protocol`. Every error branch ends in exactly one of: still
//! armed for writability, or closed.

use std::cell::{Cell, RefCell};
use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, ExceptionContext, LoopError};
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown};

use crate::addr::SockAddr;
use crate::flow::{Notice, WriteFlow, RETRY_DELAY};
use crate::protocol::AnyProtocol;
use crate::transport::{ExtraInfo, Transport, TransportImpl};
use crate::write_buffer::{WriteBuffer, WriteBufferLimits};

#[path = "stream_sendfile.rs"]
mod sendfile_hooks;
use crate::transport_sendfile::SendfileState;

#[path = "stream_upgrade.rs"]
mod upgrade;
use upgrade::UpgradeState;

/// How much one `recv` asks for (asyncio's `max_size` is 256 KiB; 64 KiB
/// keeps the shared buffer in L2 and is what uvloop reads).
pub(crate) const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// The read buffer shared by every transport of this thread's loop.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
    lp: EventLoop,
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
    /// `connection_made` was delivered.
    made: Cell<bool>,
    made_waiters: RefCell<Vec<std::task::Waker>>,
    /// `pause_reading()` was called (and not undone by `resume_reading()`).
    user_paused: Cell<bool>,
    writes_after_lost: Cell<u64>,
    peername: Option<SockAddr>,
    sockname: Option<SockAddr>,
    on_lost: RefCell<Option<LostHook>>,
    /// `loop.sendfile` in progress (stream_sendfile.rs).
    sendfile: SendfileState,
    /// `start_tls` waiting, or done (stream_upgrade.rs).
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
            lp: lp.clone(),
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
        let protocol = self.protocol.borrow().clone();
        let mut arg = Some(transport);
        let made = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_with_base(|p| {
                if let Some(t) = arg.take() {
                    p.connection_made(t)
                }
            })
        }));
        match made {
            Ok(true) => {
                self.made.set(true);
                self.wake_made();
                self.drain_deferred();
                if self.state.get() == State::Open && !self.user_paused.get() {
                    self.start_reading();
                }
            }
            Ok(false) => {
                // The protocol is borrowed by someone else right now: retry.
                let me = self.clone();
                let t = arg.take().expect("not consumed");
                if self
                    .lp
                    .call_later(RETRY_DELAY, move || me.deliver_made(t))
                    .is_err()
                {
                    self.finish_lost();
                }
            }
            Err(payload) => {
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

    /// The `Rc` of `self`, for the callbacks registered with the loop.
    fn rc(&self) -> Rc<Stream> {
        self.me.upgrade().expect("a live Stream is owned by an Rc")
    }

    fn with_fd<R>(&self, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
    }

    fn start_reading(self: &Rc<Self>) {
        if self.reading.get() || self.read_eof.get() || self.state.get() != State::Open {
            return;
        }
        let me = self.clone();
        match self.lp.add_reader(self.raw, move || me.on_readable()) {
            Ok(()) => self.reading.set(true),
            Err(e) => self.fatal(io_error(e)),
        }
    }

    fn stop_reading(&self) {
        if self.reading.replace(false) {
            let _ = self.lp.remove_reader(self.raw);
        }
    }

    fn start_writing(self: &Rc<Self>) {
        if self.writing.get() {
            return;
        }
        let me = self.clone();
        match self.lp.add_writer(self.raw, move || me.on_writable()) {
            Ok(()) => self.writing.set(true),
            Err(e) => self.fatal(io_error(e)),
        }
    }

    fn stop_writing(&self) {
        if self.writing.replace(false) {
            let _ = self.lp.remove_writer(self.raw);
        }
    }

    fn on_readable(self: &Rc<Self>) {
        if self.state.get() != State::Open || !self.reading.get() {
            return;
        }
        let protocol = self.protocol.borrow().clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.read_into(&protocol)));
        match outcome {
            Ok(Some(Ok(0))) => self.on_eof(&protocol),
            Ok(Some(Ok(_))) | Ok(None) => {}
            Ok(Some(Err(e))) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                _ => self.fatal(e),
            },
            Err(payload) => self.protocol_failed("data_received", payload),
        }
        self.drain_deferred();
    }

    /// One `recv` into the protocol; `None` when the protocol is busy.
    fn read_into(&self, protocol: &AnyProtocol) -> Option<io::Result<usize>> {
        match protocol {
            AnyProtocol::Streaming(p) => {
                let mut p = p.try_borrow_mut().ok()?;
                let mut buf = READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let got =
                    self.with_fd(|fd| rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()));
                let result = match got {
                    // The socket is gone (closed while we were called): nothing to read.
                    None => Err(io::ErrorKind::WouldBlock.into()),
                    Some(Ok((n, _))) => {
                        if n > 0 {
                            p.data_received(&buf[..n]);
                        }
                        Ok(n)
                    }
                    Some(Err(e)) => Err(io::Error::from(e)),
                };
                READ_BUF.with(|b| {
                    let mut slot = b.borrow_mut();
                    if slot.is_empty() {
                        *slot = buf;
                    }
                });
                Some(result)
            }
            AnyProtocol::Buffered(p) => {
                let mut p = p.try_borrow_mut().ok()?;
                let target = p.get_buffer(READ_SIZE);
                if target.is_empty() {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "get_buffer() returned an empty buffer",
                    )));
                }
                let got =
                    self.with_fd(|fd| rustix::net::recv(fd, &mut *target, RecvFlags::empty()))?;
                Some(match got {
                    Ok((n, _)) => {
                        if n > 0 {
                            p.buffer_updated(n);
                        }
                        Ok(n)
                    }
                    Err(e) => Err(io::Error::from(e)),
                })
            }
        }
    }

    fn on_eof(self: &Rc<Self>, protocol: &AnyProtocol) {
        self.read_eof.set(true);
        let keep_open = catch_unwind(AssertUnwindSafe(|| match protocol {
            AnyProtocol::Streaming(p) => p.try_borrow_mut().map(|mut p| p.eof_received()),
            AnyProtocol::Buffered(p) => p.try_borrow_mut().map(|mut p| p.eof_received()),
        }));
        match keep_open {
            Ok(Ok(true)) => self.stop_reading(),
            Ok(Ok(false)) | Ok(Err(_)) => self.close_impl(),
            Err(payload) => self.protocol_failed("eof_received", payload),
        }
    }

    fn on_writable(self: &Rc<Self>) {
        if !self.writing.get() {
            return;
        }
        let sent = {
            let buffer = self.buffer.borrow();
            if buffer.is_empty() {
                Ok(0)
            } else {
                self.with_fd(|fd| rustix::net::send(fd, buffer.as_slice(), SendFlags::NOSIGNAL))
                    .unwrap_or(Ok(0))
                    .map_err(io::Error::from)
            }
        };
        match sent {
            Ok(n) => {
                self.buffer.borrow_mut().consume(n);
                self.after_drain();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.fatal(e),
        }
        self.drain_deferred();
    }

    /// After bytes left the buffer: resume the protocol, and when the buffer
    /// is empty stop watching writability and finish a close or write_eof.
    fn after_drain(self: &Rc<Self>) {
        self.sendfile.wake();
        self.upgrade.wake();
        self.maybe_resume_protocol();
        if !self.buffer.borrow().is_empty() {
            return;
        }
        self.stop_writing();
        if self.state.get() == State::Closing {
            self.schedule_lost(None);
        } else if self.eof.get() {
            let _ = self.with_fd(|fd| rustix::net::shutdown(fd, Shutdown::Write));
        }
    }

    fn send_now(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            let r = self
                .with_fd(|fd| rustix::net::send(fd, data, SendFlags::NOSIGNAL))
                .unwrap_or(Ok(0));
            match r {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn sendv_now(&self, chunks: &[&[u8]]) -> io::Result<usize> {
        let slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        loop {
            let r = self
                .with_fd(|fd| {
                    rustix::net::sendmsg(
                        fd,
                        &slices,
                        &mut SendAncillaryBuffer::default(),
                        SendFlags::NOSIGNAL,
                    )
                })
                .unwrap_or(Ok(0));
            match r {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn check_writable(&self) -> Result<bool, LoopError> {
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.state.get() == State::Lost || self.lost_scheduled.get() {
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
            let sent = if chunks.len() == 1 {
                self.send_now(chunks[0])
            } else {
                self.sendv_now(chunks)
            };
            match sent {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => skip = n,
                Err(e) => {
                    self.fatal(e);
                    return Ok(());
                }
            }
        }
        self.buffer.borrow_mut().extend_unsent(chunks, skip);
        self.start_writing();
        self.maybe_pause_protocol();
        Ok(())
    }

    fn maybe_pause_protocol(&self) {
        if self.flow.pause_if_above(self.buffer.borrow().len()) {
            self.notify(Notice::Pause);
        }
    }

    fn maybe_resume_protocol(&self) {
        if self.flow.resume_if_at_or_below(self.buffer.borrow().len()) {
            self.notify(Notice::Resume);
        }
    }

    /// Delivers a flow-control notice now, or right after the protocol's
    /// running callback returns if it is busy.
    fn notify(&self, notice: Notice) {
        if self.sendfile.holds_notices() {
            return; // told when the sendfile ends
        }
        self.flow.push(notice);
        self.drain_deferred();
    }

    /// Delivers the queued notices in order (flow.rs); a busy protocol is
    /// retried shortly, so no notice is stranded.
    fn drain_deferred(&self) {
        let delivered = self.flow.drain(|notice| {
            let protocol = self.protocol.borrow().clone();
            notice.deliver(&self.lp, &protocol, || None)
        });
        if !delivered {
            let me = self.rc();
            self.flow.retry_later(&self.lp, move || me.drain_deferred());
        }
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
        let err = LoopError::panicked(format!("protocol.{what}()"), payload);
        self.lp.call_exception_handler(
            ExceptionContext::new(format!("Fatal error: protocol.{what}() call failed."))
                .with_error(err.clone())
                .with("transport", format!("fd={}", self.raw)),
        );
        self.force_close(Some(io::Error::other(err.to_string())));
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
        if !self.made.get() && self.state.get() != State::Lost {
            // connection_made is still being retried; lost comes after it.
            let me = self.clone();
            if self
                .lp
                .call_later(RETRY_DELAY, move || me.call_connection_lost(error))
                .is_ok()
            {
                return;
            }
            self.finish_lost();
            return;
        }
        let protocol = self.protocol.borrow().clone();
        let context = format!("fd={}", self.raw);
        if let Err(error) = protocol.deliver_connection_lost(&self.lp, error, &context) {
            // Borrowed by a task right now: try again shortly.
            let me = self.clone();
            if self
                .lp
                .call_later(RETRY_DELAY, move || me.call_connection_lost(error))
                .is_ok()
            {
                return;
            }
        }
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
        if let Some(hook) = self.on_lost.borrow_mut().take() {
            hook();
        }
        drop(released);
    }
}

fn io_error(e: LoopError) -> io::Error {
    e.into()
}

impl TransportImpl for Stream {
    fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.sendfile.check_write()?;
        self.rc().write_impl(&[data])
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.sendfile.check_write()?;
        self.rc().write_impl(chunks)
    }

    fn write_eof(&self) -> Result<(), LoopError> {
        if self.state.get() != State::Open || self.eof.get() {
            return Ok(());
        }
        self.eof.set(true);
        if self.buffer.borrow().is_empty() {
            let _ = self.with_fd(|fd| rustix::net::shutdown(fd, Shutdown::Write));
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        if !self.upgrade.forward(|t| t.close()) {
            self.rc().close_impl()
        }
    }

    fn abort(&self) {
        if !self.upgrade.forward(|t| t.abort()) {
            self.rc().force_close(None)
        }
    }

    fn is_closing(&self) -> bool {
        self.state.get() != State::Open
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        let old = self.protocol.replace(protocol);
        drop(old);
        self.sendfile.protocol_replaced();
        if self.flow.is_paused() {
            self.notify(Notice::Pause);
        }
    }

    fn get_protocol(&self) -> AnyProtocol {
        self.protocol.borrow().clone()
    }

    fn pause_reading(&self) {
        if self.state.get() == State::Open {
            // Remembered, so that a pause from inside connection_made holds
            // when the transport would start reading after it.
            self.user_paused.set(true);
            self.stop_reading();
        }
    }

    fn resume_reading(&self) {
        if self.state.get() == State::Open {
            self.user_paused.set(false);
            self.rc().start_reading();
        }
    }

    fn is_reading(&self) -> bool {
        self.state.get() == State::Open && self.reading.get()
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
        match name {
            "peername" => self.peername.clone().map(ExtraInfo::Addr),
            "sockname" => self.sockname.clone().map(ExtraInfo::Addr),
            "socket" => self
                .fd
                .borrow()
                .as_ref()
                .map(|fd| ExtraInfo::Fd(fd.as_raw_fd())),
            _ => None,
        }
    }

    fn get_loop(&self) -> EventLoop {
        self.lp.clone()
    }

    fn writes_after_lost(&self) -> u64 {
        self.writes_after_lost.get()
    }

    fn sendfile_support(&self) -> Option<&dyn crate::transport_sendfile::SendfileSupport> {
        Some(self)
    }

    #[cfg(feature = "tls")]
    fn upgrade_hook(&self) -> Option<Rc<Stream>> {
        Some(self.rc())
    }
}
