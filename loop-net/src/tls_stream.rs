//! The TLS stream transport: a rustls connection over a non-blocking TCP or
//! Unix stream socket, behind the same [`Transport`] handle as the plain
//! socket transport (stream.rs, whose rules it follows).
//!
//! # State machine
//! `Handshaking -> Open -> Closing -> ShuttingDown -> Lost`, one way only
//! (a step may be skipped):
//! - `Handshaking`: the socket is watched for reading; handshake messages
//!   are read, fed to rustls and its answers written. The protocol has been
//!   told nothing. Failure (a rustls error, EOF, a socket error, the
//!   handshake timeout, `close`/`abort`, the waiting future dropped) goes
//!   straight to `Lost`: the timer is cancelled, the socket unregistered
//!   and closed, the protocol released, and the error handed to whoever
//!   waits (`create_connection`, `start_tls`) or, for a server's connection,
//!   reported in debug mode. No protocol callback runs for such a
//!   connection, as in asyncio.
//! - `Open`: the handshake completed. Reading stops until
//!   `connection_made` has been delivered (through `call_soon`; `start_tls`
//!   sends none, and delivery starts one `call_soon` after its future is
//!   woken, so the caller holds the new transport before any
//!   `data_received`).
//! - `Closing`: `close()` (or the peer's `close_notify` with
//!   `eof_received` returning false). Nothing more is delivered; the buffer
//!   and our `close_notify` are flushed under the shutdown timer.
//! - `ShuttingDown`: flushed and half-closed (`SHUT_WR`); the socket is
//!   read and the input discarded until the peer's `close_notify` or EOF
//!   (bounded by the same timer), so that closing does not turn unread
//!   input into a reset that could destroy our last bytes at the peer.
//! - `Lost`: `connection_lost` ran (exactly once, through `call_soon`,
//!   after `connection_made`), the socket is closed, the protocol released.
//!   `abort()` and fatal errors schedule it at once, dropping the buffer.
//!
//! # Read path
//! One `recv` per readiness into a 64 KiB buffer shared by the thread's TLS
//! transports; the bytes are fed to rustls (which takes at most one record
//! buffer at a time), each batch decrypted, and the plaintext handed to the
//! protocol from a second shared buffer (or read straight into a
//! `BufferedProtocol`'s buffer). When the protocol cannot take more (it
//! paused reading, is busy in a task, or `connection_made` is still due),
//! the undecrypted rest is kept in order (`pending_in`, at most one read's
//! worth) and the socket is not read until it has been delivered: bytes
//! are never reordered or dropped. A TCP EOF is given to rustls only after
//! that backlog, so it cannot cut delivered data short.
//!
//! # Write path
//! `write()` encrypts at once (rustls' own buffer limit is off) and moves
//! every record rustls has to send into the socket through a sink that
//! sends first and buffers only what the socket did not take; so
//! the transport's write buffer holds all pending ciphertext and the water
//! marks see it (plus, before the handshake completes, the plaintext
//! rustls holds for it). One `sendmsg` per flush. Every path that grows
//! the buffer calls `maybe_pause_protocol` (`flush_tls`); every path that
//! shrinks it `maybe_resume_protocol`. Handshake replies, alerts and key
//! updates go through the same sink.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use loop_core::{ErrorKind, EventLoop, ExceptionContext, LoopError, TimerHandle};
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown};
use rustls::{Connection, ProtocolVersion};

use crate::addr::SockAddr;
use crate::protocol::{AnyProtocol, BaseProtocol, Protocol};
use crate::stream::{LostHook, READ_SIZE};
use crate::tls::{tls_error, CipherInfo, TlsClientOptions, TlsConfig, TlsServerOptions};
use crate::transport::{ExtraInfo, Transport, TransportImpl};
use crate::write_buffer::{WriteBuffer, WriteBufferLimits};

/// How soon a delivery to a protocol that was busy is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(1);

thread_local! {
    /// Ciphertext read from a socket, shared by the thread's TLS transports.
    static CIPHER_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Plaintext on its way to a protocol, likewise shared.
    static PLAIN_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Handshaking,
    Open,
    Closing,
    ShuttingDown,
    Lost,
}

#[derive(Clone, Copy, Debug)]
enum Notice {
    Pause,
    Resume,
}

/// What one attempt to hand plaintext to the protocol did.
enum Delivery {
    /// Some bytes were delivered.
    Data,
    /// rustls has no plaintext now.
    Empty,
    /// The protocol is borrowed elsewhere.
    Busy,
    /// The peer's `close_notify`: the clean end of its data.
    Eof,
    /// A fatal condition (TCP EOF without `close_notify`, an empty
    /// `get_buffer`).
    Failed(io::Error),
}

/// A [`TlsStream::start`] that failed: the error, and the lost hook it was
/// given, not called.
pub(crate) struct StartError {
    pub(crate) error: LoopError,
    pub(crate) on_lost: Option<LostHook>,
}

/// How a TLS transport is set up.
pub(crate) struct Settings {
    /// Call `connection_made` after the handshake (not for `start_tls`).
    pub(crate) announce: bool,
    /// A server's accepted connection: report a failed handshake to the
    /// exception handler in debug mode (nobody awaits it).
    pub(crate) report_failure: bool,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// The write-buffer limits (`start_tls` carries the old ones over).
    pub(crate) limits: Option<WriteBufferLimits>,
    /// Ciphertext received before the transport existed (`start_tls`).
    pub(crate) received: Vec<u8>,
    pub(crate) config: TlsConfig,
    pub(crate) server_hostname: Option<String>,
}

impl Settings {
    pub(crate) fn client(o: &TlsClientOptions, announce: bool) -> Settings {
        Settings {
            announce,
            report_failure: false,
            handshake_timeout: o.handshake_timeout,
            shutdown_timeout: o.shutdown_timeout,
            limits: None,
            received: Vec::new(),
            config: TlsConfig::Client(o.config.clone()),
            server_hostname: o.server_hostname.clone(),
        }
    }

    pub(crate) fn server(o: &TlsServerOptions, announce: bool) -> Settings {
        Settings {
            announce,
            report_failure: false,
            handshake_timeout: o.handshake_timeout,
            shutdown_timeout: o.shutdown_timeout,
            limits: None,
            received: Vec::new(),
            config: TlsConfig::Server(o.config.clone()),
            server_hostname: None,
        }
    }
}

pub(crate) struct TlsStream {
    me: Weak<TlsStream>,
    lp: EventLoop,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    conn: RefCell<Connection>,
    config: TlsConfig,
    server_hostname: Option<String>,
    announce: bool,
    report_failure: bool,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    state: Cell<State>,
    protocol: RefCell<AnyProtocol>,
    buffer: RefCell<WriteBuffer>,
    limits: Cell<WriteBufferLimits>,
    protocol_paused: Cell<bool>,
    /// The socket is watched for reading.
    reading: Cell<bool>,
    /// The user called `pause_reading`.
    app_paused: Cell<bool>,
    writing: Cell<bool>,
    /// `write_eof` was called (our `close_notify` is queued or sent).
    eof: Cell<bool>,
    /// The socket's writing side was shut down.
    shut_wr: Cell<bool>,
    /// `recv` returned 0.
    tcp_eof: Cell<bool>,
    /// rustls was told about the TCP EOF.
    eof_fed: Cell<bool>,
    /// The peer's data ended (its `close_notify`, delivered as EOF).
    peer_closed: Cell<bool>,
    /// Plaintext in rustls or ciphertext in `pending_in` waits for the
    /// protocol; it goes before anything read later.
    stalled: Cell<bool>,
    pending_in: RefCell<Vec<u8>>,
    /// Plaintext written before the handshake completed (held by rustls).
    pre_handshake: Cell<usize>,
    lost_scheduled: Cell<bool>,
    /// Data may be delivered: `connection_made` ran (or, for `start_tls`,
    /// the caller was woken).
    made: Cell<bool>,
    /// The waiter (`create_connection`, `start_tls`) may return.
    ready: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
    failure: RefCell<Option<io::Error>>,
    handshake_timer: RefCell<Option<TimerHandle>>,
    shutdown_timer: RefCell<Option<TimerHandle>>,
    kick_scheduled: Cell<bool>,
    retry_pending: Cell<bool>,
    writes_after_lost: Cell<u64>,
    deferred: RefCell<Vec<Notice>>,
    write_error: RefCell<Option<io::Error>>,
    peername: Option<SockAddr>,
    sockname: Option<SockAddr>,
    on_lost: RefCell<Option<LostHook>>,
}

impl TlsStream {
    /// Starts the handshake over a connected, non-blocking stream socket.
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        mut conn: Connection,
        protocol: AnyProtocol,
        settings: Settings,
        on_lost: Option<LostHook>,
    ) -> Result<(Transport, Rc<TlsStream>), StartError> {
        if lp.is_closed() {
            return Err(StartError {
                error: LoopError::closed(),
                on_lost,
            });
        }
        // Our own write buffer (with the user's water marks) holds what the
        // socket does not take; rustls' buffers only pass bytes through.
        conn.set_buffer_limit(None);
        let peername = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .map(SockAddr::from_raw);
        let sockname = rustix::net::getsockname(&fd).ok().map(SockAddr::from_raw);
        let stalled = !settings.received.is_empty();
        let stream = Rc::new_cyclic(|me| TlsStream {
            me: me.clone(),
            lp: lp.clone(),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            conn: RefCell::new(conn),
            config: settings.config,
            server_hostname: settings.server_hostname,
            announce: settings.announce,
            report_failure: settings.report_failure,
            handshake_timeout: settings.handshake_timeout,
            shutdown_timeout: settings.shutdown_timeout,
            state: Cell::new(State::Handshaking),
            protocol: RefCell::new(protocol),
            buffer: RefCell::new(WriteBuffer::default()),
            limits: Cell::new(settings.limits.unwrap_or_default()),
            protocol_paused: Cell::new(false),
            reading: Cell::new(false),
            app_paused: Cell::new(false),
            writing: Cell::new(false),
            eof: Cell::new(false),
            shut_wr: Cell::new(false),
            tcp_eof: Cell::new(false),
            eof_fed: Cell::new(false),
            peer_closed: Cell::new(false),
            stalled: Cell::new(stalled),
            pending_in: RefCell::new(settings.received),
            pre_handshake: Cell::new(0),
            lost_scheduled: Cell::new(false),
            made: Cell::new(false),
            ready: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            failure: RefCell::new(None),
            handshake_timer: RefCell::new(None),
            shutdown_timer: RefCell::new(None),
            kick_scheduled: Cell::new(false),
            retry_pending: Cell::new(false),
            writes_after_lost: Cell::new(0),
            deferred: RefCell::new(Vec::new()),
            write_error: RefCell::new(None),
            peername,
            sockname,
            on_lost: RefCell::new(on_lost),
        });
        let transport = Transport {
            inner: stream.clone(),
        };
        let me = stream.clone();
        let timer = lp.call_later(settings.handshake_timeout, move || {
            me.on_handshake_timeout()
        });
        match timer {
            Ok(t) => *stream.handshake_timer.borrow_mut() = Some(t),
            Err(error) => {
                let on_lost = stream.discard();
                return Err(StartError { error, on_lost });
            }
        }
        if let Err(error) = stream.add_reader() {
            let on_lost = stream.discard();
            return Err(StartError { error, on_lost });
        }
        // The client's hello goes out now.
        stream.flush_tls();
        if stalled {
            stream.schedule_kick();
        }
        Ok((transport, stream))
    }

    /// Undoes a `start` that failed half-way: nothing was announced, and the
    /// lost hook goes back to the caller, who accounts for the connection.
    fn discard(self: &Rc<Self>) -> Option<LostHook> {
        let on_lost = self.on_lost.borrow_mut().take();
        self.state.set(State::Lost);
        self.lost_scheduled.set(true);
        self.finish_lost();
        on_lost
    }

    /// Resolves once the connection is ready for its user: `connection_made`
    /// delivered (or, without it, the handshake done); errs if it failed.
    pub(crate) fn wait_ready(self: &Rc<Self>) -> impl std::future::Future<Output = io::Result<()>> {
        let me = self.clone();
        std::future::poll_fn(move |cx| {
            if me.ready.get() {
                return Poll::Ready(Ok(()));
            }
            if me.state.get() == State::Lost {
                let err = me.failure.borrow_mut().take().unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the TLS connection was closed before it was ready",
                    )
                });
                return Poll::Ready(Err(err));
            }
            me.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    }

    /// The waiting future was dropped: the caller gave up on the connection.
    pub(crate) fn abort_handshake(self: &Rc<Self>) {
        if self.ready.get() {
            return;
        }
        if self.state.get() == State::Handshaking {
            self.end_handshake(
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the TLS handshake was cancelled",
                ),
                false,
            );
        } else {
            self.force_close(None);
        }
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn set_ready(&self) {
        self.ready.set(true);
        self.wake_waiters();
    }

    fn rc(&self) -> Rc<TlsStream> {
        self.me
            .upgrade()
            .expect("a live TlsStream is owned by an Rc")
    }

    fn with_fd<R>(&self, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
    }

    /// Not a transport's user yet, or no longer: nothing may be written.
    fn dead(&self) -> bool {
        self.lost_scheduled.get() || self.state.get() == State::Lost
    }

    // --- Registration ------------------------------------------------------

    fn add_reader(self: &Rc<Self>) -> Result<(), LoopError> {
        if self.reading.get() {
            return Ok(());
        }
        let me = self.clone();
        self.lp.add_reader(self.raw, move || me.on_readable())?;
        self.reading.set(true);
        Ok(())
    }

    /// Watches the socket for reading if the state wants it.
    fn start_reading(self: &Rc<Self>) {
        let wanted = match self.state.get() {
            State::Handshaking | State::ShuttingDown => true,
            State::Open => {
                self.made.get()
                    && !self.app_paused.get()
                    && !self.tcp_eof.get()
                    && !self.peer_closed.get()
                    && !self.stalled.get()
            }
            State::Closing | State::Lost => false,
        };
        if wanted && !self.tcp_eof.get() {
            if let Err(e) = self.add_reader() {
                self.fail(e.into());
            }
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
            Err(e) => self.fail(e.into()),
        }
    }

    fn stop_writing(&self) {
        if self.writing.replace(false) {
            let _ = self.lp.remove_writer(self.raw);
        }
    }

    fn cancel_timers(&self) {
        if let Some(t) = self.handshake_timer.borrow_mut().take() {
            t.cancel();
        }
        if let Some(t) = self.shutdown_timer.borrow_mut().take() {
            t.cancel();
        }
    }

    /// Runs [`kick`](Self::kick) soon (once, however often it is asked).
    fn schedule_kick(self: &Rc<Self>) {
        if self.kick_scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        if self.lp.call_soon(move || me.kick()).is_err() {
            self.kick_scheduled.set(false);
        }
    }

    /// Delivers what waits for the protocol, then reads the socket again.
    fn kick(self: &Rc<Self>) {
        self.kick_scheduled.set(false);
        let go = match self.state.get() {
            State::Handshaking => true,
            State::Open => self.made.get() && !self.app_paused.get(),
            _ => false,
        };
        if go {
            match catch_unwind(AssertUnwindSafe(|| self.process_backlog())) {
                Ok(true) => self.start_reading(),
                Ok(false) => {}
                Err(payload) => self.protocol_failed("data_received", payload),
            }
        }
        self.drain_deferred();
    }

    // --- Read path ---------------------------------------------------------

    fn on_readable(self: &Rc<Self>) {
        if !self.reading.get() {
            return;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            match self.state.get() {
                State::Lost | State::Closing => return,
                State::Open => {
                    if !self.made.get() || self.app_paused.get() {
                        return;
                    }
                    if self.protocol_busy() {
                        // Level-triggered: the bytes wait in the socket.
                        return;
                    }
                }
                State::Handshaking | State::ShuttingDown => {}
            }
            if self.stalled.get() && !self.process_backlog() {
                return;
            }
            self.read_once();
        }));
        if let Err(payload) = outcome {
            self.protocol_failed("data_received", payload);
        }
        self.drain_deferred();
    }

    fn protocol_busy(&self) -> bool {
        match &*self.protocol.borrow() {
            AnyProtocol::Streaming(p) => p.try_borrow_mut().is_err(),
            AnyProtocol::Buffered(p) => p.try_borrow_mut().is_err(),
        }
    }

    /// One `recv`, fed to rustls.
    fn read_once(self: &Rc<Self>) {
        let mut buf = CIPHER_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < READ_SIZE {
            buf.resize(READ_SIZE, 0);
        }
        let got = self.with_fd(|fd| rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()));
        match got {
            None => {}
            Some(Ok((0, _))) => self.on_tcp_eof(),
            Some(Ok((n, _))) => self.ingest(&buf[..n]),
            Some(Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR)) => {}
            Some(Err(e)) => self.fail(e.into()),
        }
        CIPHER_BUF.with(|b| {
            let mut slot = b.borrow_mut();
            if slot.is_empty() {
                *slot = buf;
            }
        });
    }

    /// Feeds ciphertext to rustls, record batch by record batch, delivering
    /// the plaintext in between; what the protocol cannot take now is kept,
    /// in order, in `pending_in`.
    fn ingest(self: &Rc<Self>, mut input: &[u8]) {
        while !input.is_empty() {
            if self.dead() {
                return;
            }
            let fed = self.conn.borrow_mut().read_tls(&mut input);
            match fed {
                // The peer's close_notify was seen: nothing after it counts.
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
            if !self.process_packets() {
                return;
            }
            if !self.deliver_plaintext() {
                if !input.is_empty() && !self.dead() {
                    self.pending_in.borrow_mut().extend_from_slice(input);
                    self.stalled.set(true);
                }
                return;
            }
        }
    }

    /// Delivers the backlog (rustls' plaintext, then `pending_in`, then a
    /// TCP EOF seen meanwhile). True when nothing is left and reading may go
    /// on.
    fn process_backlog(self: &Rc<Self>) -> bool {
        self.stalled.set(false);
        if !self.deliver_plaintext() {
            return false;
        }
        let pending = std::mem::take(&mut *self.pending_in.borrow_mut());
        if !pending.is_empty() {
            self.ingest(&pending);
            if self.stalled.get() || self.dead() {
                return false;
            }
        }
        if self.tcp_eof.get() && !self.eof_fed.get() {
            self.feed_eof();
            return false;
        }
        !self.dead()
    }

    /// Decrypts what rustls has, writes its answers, and notices the end
    /// of the handshake. False when the connection failed.
    fn process_packets(self: &Rc<Self>) -> bool {
        let result = self.conn.borrow_mut().process_new_packets();
        // Handshake messages, alerts (also the one for an error), key updates.
        let flushed = self.flush_tls();
        match result {
            Err(e) => {
                self.fail(tls_error(e));
                false
            }
            Ok(_) if !flushed => false,
            Ok(_) => {
                if self.state.get() == State::Handshaking && !self.conn.borrow().is_handshaking() {
                    self.handshake_complete();
                }
                !self.dead()
            }
        }
    }

    /// Hands rustls' plaintext to the protocol. True when all of it went
    /// (or is discarded, when closing) and more may be fed.
    fn deliver_plaintext(self: &Rc<Self>) -> bool {
        loop {
            match self.state.get() {
                State::Lost => return false,
                State::Handshaking => return true,
                State::Closing | State::ShuttingDown => {
                    self.discard_plaintext();
                    return !self.dead();
                }
                State::Open => {}
            }
            if self.lost_scheduled.get() {
                return false;
            }
            if !self.made.get() || self.app_paused.get() || self.peer_closed.get() {
                self.stalled.set(true);
                return false;
            }
            let protocol = self.protocol.borrow().clone();
            match self.deliver_one(&protocol) {
                Delivery::Data => continue,
                Delivery::Empty => return true,
                Delivery::Busy => {
                    self.stalled.set(true);
                    self.stop_reading();
                    self.retry_later(|me| me.kick());
                    return false;
                }
                Delivery::Eof => {
                    self.on_peer_close_notify(&protocol);
                    return false;
                }
                Delivery::Failed(e) => {
                    self.fatal(e);
                    return false;
                }
            }
        }
    }

    fn deliver_one(&self, protocol: &AnyProtocol) -> Delivery {
        match protocol {
            AnyProtocol::Streaming(p) => {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return Delivery::Busy;
                };
                let mut buf = PLAIN_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let got = self.conn.borrow_mut().reader().read(&mut buf[..]);
                let outcome = match got {
                    Ok(0) => Delivery::Eof,
                    Ok(n) => {
                        p.data_received(&buf[..n]);
                        Delivery::Data
                    }
                    Err(e) => classify_read_error(e),
                };
                PLAIN_BUF.with(|b| {
                    let mut slot = b.borrow_mut();
                    if slot.is_empty() {
                        *slot = buf;
                    }
                });
                outcome
            }
            AnyProtocol::Buffered(p) => {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return Delivery::Busy;
                };
                // Look before asking for a buffer: get_buffer is user code.
                let available = {
                    let mut conn = self.conn.borrow_mut();
                    let mut reader = conn.reader();
                    match reader.fill_buf() {
                        Ok([]) => return Delivery::Eof,
                        Ok(chunk) => chunk.len(),
                        Err(e) => return classify_read_error(e),
                    }
                };
                let target = p.get_buffer(available.max(READ_SIZE));
                if target.is_empty() {
                    return Delivery::Failed(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "get_buffer() returned an empty buffer",
                    ));
                }
                let got = self.conn.borrow_mut().reader().read(target);
                match got {
                    Ok(0) => Delivery::Eof,
                    Ok(n) => {
                        p.buffer_updated(n);
                        Delivery::Data
                    }
                    Err(e) => classify_read_error(e),
                }
            }
        }
    }

    /// Closing: what still arrives is decrypted (to see the peer's
    /// `close_notify`) and dropped.
    fn discard_plaintext(self: &Rc<Self>) {
        let ended = {
            let mut conn = self.conn.borrow_mut();
            let mut reader = conn.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => break true,
                    Ok(chunk) => {
                        let n = chunk.len();
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            }
        };
        if ended {
            self.peer_closed.set(true);
            if self.state.get() == State::ShuttingDown {
                self.schedule_lost(None);
            }
        }
    }

    /// The peer's `close_notify`: its EOF.
    fn on_peer_close_notify(self: &Rc<Self>, protocol: &AnyProtocol) {
        self.peer_closed.set(true);
        self.stop_reading();
        let keep_open = catch_unwind(AssertUnwindSafe(|| match protocol {
            AnyProtocol::Streaming(p) => p.try_borrow_mut().map(|mut p| p.eof_received()),
            AnyProtocol::Buffered(p) => p.try_borrow_mut().map(|mut p| p.eof_received()),
        }));
        match keep_open {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => self.close_impl(),
            Err(payload) => self.protocol_failed("eof_received", payload),
        }
    }

    fn on_tcp_eof(self: &Rc<Self>) {
        self.tcp_eof.set(true);
        self.stop_reading();
        match self.state.get() {
            State::Handshaking => self.handshake_failed(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            )),
            State::Open => {
                if !self.stalled.get() {
                    self.feed_eof();
                }
            }
            State::Closing => self.peer_closed.set(true),
            State::ShuttingDown => self.schedule_lost(None),
            State::Lost => {}
        }
    }

    /// Tells rustls the TCP stream ended, then lets the reader say whether
    /// that was clean (after `close_notify`) or a truncation.
    fn feed_eof(self: &Rc<Self>) {
        if self.eof_fed.replace(true) {
            return;
        }
        let _ = self.conn.borrow_mut().read_tls(&mut io::empty());
        let _ = self.deliver_plaintext();
    }

    // --- Handshake ---------------------------------------------------------

    fn handshake_complete(self: &Rc<Self>) {
        if let Some(t) = self.handshake_timer.borrow_mut().take() {
            t.cancel();
        }
        self.state.set(State::Open);
        self.pre_handshake.set(0);
        // Nothing is read until the protocol may be given data.
        self.stop_reading();
        let me = self.clone();
        let scheduled = if self.announce {
            let t = Transport {
                inner: self.clone(),
            };
            self.lp.call_soon(move || me.deliver_made(t))
        } else {
            // start_tls: its caller resumes first (its wake-up is queued
            // now), then delivery starts.
            self.set_ready();
            self.lp.call_soon(move || {
                me.made.set(true);
                me.maybe_pause_protocol();
                me.kick();
            })
        };
        if scheduled.is_err() {
            self.finish_lost();
        }
    }

    fn on_handshake_timeout(self: &Rc<Self>) {
        self.handshake_timer.borrow_mut().take();
        if self.state.get() == State::Handshaking {
            self.handshake_failed(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "SSL handshake is taking longer than {} seconds: aborting the connection",
                    self.handshake_timeout.as_secs_f64()
                ),
            ));
        }
    }

    /// The handshake failed: close everything, tell the waiter (or, for a
    /// server's connection, the exception handler in debug mode).
    fn handshake_failed(self: &Rc<Self>, error: io::Error) {
        self.end_handshake(error, true);
    }

    /// [`handshake_failed`](Self::handshake_failed); `report: false` when
    /// the user ended it (`close`, `abort`, `Server::close_clients`).
    fn end_handshake(self: &Rc<Self>, error: io::Error, report: bool) {
        if self.state.get() != State::Handshaking {
            return;
        }
        self.state.set(State::Lost);
        self.lost_scheduled.set(true);
        if self.report_failure {
            if report && self.lp.get_debug() {
                let peer = self
                    .peername
                    .as_ref()
                    .map(|a| format!("{a:?}"))
                    .unwrap_or_default();
                self.lp.call_exception_handler(
                    ExceptionContext::new("SSL handshake failed")
                        .with_error(error)
                        .with("peername", peer)
                        .with("transport", format!("fd={}", self.raw)),
                );
            }
        } else {
            *self.failure.borrow_mut() = Some(error);
        }
        self.finish_lost();
    }

    /// A failure: of the handshake, or of the open connection.
    fn fail(self: &Rc<Self>, error: io::Error) {
        if self.state.get() == State::Handshaking {
            self.handshake_failed(error);
        } else {
            self.fatal(error);
        }
    }

    fn deliver_made(self: &Rc<Self>, transport: Transport) {
        if self.state.get() == State::Lost {
            return;
        }
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
                self.set_ready();
                self.drain_deferred();
                self.maybe_pause_protocol();
                if self.state.get() == State::Open {
                    self.kick();
                }
            }
            Ok(false) => {
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
                self.set_ready();
                self.protocol_failed("connection_made", payload);
            }
        }
    }

    // --- Write path --------------------------------------------------------

    /// Moves everything rustls has to send into the socket (or, for what it
    /// does not take, the write buffer). False when a send failed and the
    /// connection was failed.
    fn flush_tls(self: &Rc<Self>) -> bool {
        loop {
            let mut conn = self.conn.borrow_mut();
            if !conn.wants_write() {
                break;
            }
            let mut sink = Sink { stream: self };
            if conn.write_tls(&mut sink).is_err() {
                break;
            }
        }
        let error = self.write_error.borrow_mut().take();
        if let Some(e) = error {
            self.fail(e);
            return false;
        }
        if !self.buffer.borrow().is_empty() && !self.dead() {
            self.start_writing();
            self.maybe_pause_protocol();
        }
        true
    }

    fn sendmsg(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let r = self
                .with_fd(|fd| {
                    if bufs.len() == 1 {
                        rustix::net::send(fd, &bufs[0], SendFlags::NOSIGNAL)
                    } else {
                        rustix::net::sendmsg(
                            fd,
                            bufs,
                            &mut SendAncillaryBuffer::default(),
                            SendFlags::NOSIGNAL,
                        )
                    }
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

    fn write_impl(self: &Rc<Self>, chunks: &[&[u8]]) -> Result<(), LoopError> {
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.dead() || !matches!(self.state.get(), State::Handshaking | State::Open) {
            // Closing sent (or is sending) close_notify: nothing may follow.
            self.writes_after_lost.set(self.writes_after_lost.get() + 1);
            return Ok(());
        }
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let written = {
            let mut conn = self.conn.borrow_mut();
            let mut writer = conn.writer();
            chunks.iter().try_for_each(|c| writer.write_all(c))
        };
        if let Err(e) = written {
            self.fatal(e);
            return Ok(());
        }
        if self.state.get() == State::Handshaking {
            // rustls sends it when the handshake completes.
            self.pre_handshake.set(self.pre_handshake.get() + total);
            self.maybe_pause_protocol();
            return Ok(());
        }
        self.flush_tls();
        Ok(())
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
                self.sendmsg(&[IoSlice::new(buffer.as_slice())])
            }
        };
        match sent {
            Ok(n) => {
                self.buffer.borrow_mut().consume(n);
                self.after_drain();
            }
            Err(e) => self.fail(e),
        }
        self.drain_deferred();
    }

    fn after_drain(self: &Rc<Self>) {
        self.maybe_resume_protocol();
        if !self.buffer.borrow().is_empty() {
            return;
        }
        self.stop_writing();
        match self.state.get() {
            State::Closing if !self.lost_scheduled.get() => self.flushed_on_close(),
            State::Open if self.eof.get() => self.shutdown_write(),
            _ => {}
        }
    }

    fn shutdown_write(&self) {
        if !self.shut_wr.replace(true) {
            let _ = self.with_fd(|fd| rustix::net::shutdown(fd, Shutdown::Write));
        }
    }

    fn write_buffer_len(&self) -> usize {
        self.buffer.borrow().len() + self.pre_handshake.get()
    }

    fn maybe_pause_protocol(&self) {
        if !self.made.get() {
            return;
        }
        if !self.protocol_paused.get() && self.write_buffer_len() > self.limits.get().high {
            self.protocol_paused.set(true);
            self.notify(Notice::Pause);
        }
    }

    fn maybe_resume_protocol(&self) {
        if self.protocol_paused.get() && self.write_buffer_len() <= self.limits.get().low {
            self.protocol_paused.set(false);
            self.notify(Notice::Resume);
        }
    }

    fn notify(&self, notice: Notice) {
        self.deferred.borrow_mut().push(notice);
        self.drain_deferred();
    }

    fn deliver(&self, notice: Notice) -> bool {
        let protocol = self.protocol.borrow().clone();
        let delivered = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_with_base(|p| match notice {
                Notice::Pause => p.pause_writing(),
                Notice::Resume => p.resume_writing(),
            })
        }));
        match delivered {
            Ok(d) => d,
            Err(payload) => {
                let what = match notice {
                    Notice::Pause => "pause_writing",
                    Notice::Resume => "resume_writing",
                };
                self.lp.call_exception_handler(
                    ExceptionContext::new(format!("protocol.{what}() failed"))
                        .with_error(LoopError::panicked(what, payload)),
                );
                true
            }
        }
    }

    /// Delivers the queued flow-control notices in order (see stream.rs).
    fn drain_deferred(&self) {
        loop {
            let Some(notice) = self.deferred.borrow().first().copied() else {
                return;
            };
            if !self.deliver(notice) {
                self.retry_later(|me| me.drain_deferred());
                return;
            }
            self.deferred.borrow_mut().remove(0);
        }
    }

    fn retry_later(&self, f: impl FnOnce(&Rc<TlsStream>) + 'static) {
        if self.retry_pending.replace(true) {
            // One pending retry: it kicks and drains everything.
            return;
        }
        let me = self.rc();
        let _ = self.lp.call_later(RETRY_DELAY, move || {
            me.retry_pending.set(false);
            f(&me);
            me.kick();
        });
    }

    // --- Closing -----------------------------------------------------------

    fn close_impl(self: &Rc<Self>) {
        match self.state.get() {
            State::Handshaking => self.end_handshake(
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the transport was closed during the TLS handshake",
                ),
                false,
            ),
            State::Open => {
                self.state.set(State::Closing);
                self.stop_reading();
                self.pending_in.borrow_mut().clear();
                self.conn.borrow_mut().send_close_notify();
                let me = self.clone();
                if let Ok(t) = self
                    .lp
                    .call_later(self.shutdown_timeout, move || me.on_shutdown_timeout())
                {
                    *self.shutdown_timer.borrow_mut() = Some(t);
                }
                if !self.flush_tls() {
                    return;
                }
                if self.buffer.borrow().is_empty() && !self.lost_scheduled.get() {
                    self.flushed_on_close();
                }
            }
            _ => {}
        }
    }

    /// Everything, our `close_notify` last, is in the kernel's hands.
    fn flushed_on_close(self: &Rc<Self>) {
        self.shutdown_write();
        if self.peer_closed.get() || self.tcp_eof.get() {
            self.schedule_lost(None);
            return;
        }
        self.state.set(State::ShuttingDown);
        // The peer's close_notify may already sit in rustls.
        self.discard_plaintext();
        if !self.lost_scheduled.get() {
            self.start_reading();
        }
    }

    fn on_shutdown_timeout(self: &Rc<Self>) {
        self.shutdown_timer.borrow_mut().take();
        match self.state.get() {
            State::Closing => self.force_close(Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "SSL shutdown timed out: the data was not flushed within {} seconds",
                    self.shutdown_timeout.as_secs_f64()
                ),
            ))),
            // Our side is done; the peer did not answer our close_notify.
            State::ShuttingDown => self.force_close(None),
            _ => {}
        }
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.state.get() == State::Handshaking {
            // An error reaches here only from user code (a panicking
            // callback cannot run before the handshake): do not report it.
            let report = error.is_some();
            let error = error.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the transport was aborted during the TLS handshake",
                )
            });
            self.end_handshake(error, report);
            return;
        }
        if self.lost_scheduled.get() {
            return;
        }
        self.buffer.borrow_mut().clear();
        self.pending_in.borrow_mut().clear();
        self.stop_writing();
        self.stop_reading();
        self.cancel_timers();
        if self.state.get() != State::Lost {
            self.state.set(State::Closing);
        }
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
                .with("transport", format!("fd={} (TLS)", self.raw)),
        );
        self.force_close(Some(io::Error::other(err.to_string())));
    }

    fn schedule_lost(self: &Rc<Self>, error: Option<io::Error>) {
        if self.lost_scheduled.replace(true) {
            return;
        }
        self.stop_reading();
        let me = self.clone();
        if self
            .lp
            .call_soon(move || me.call_connection_lost(error))
            .is_err()
        {
            self.finish_lost();
        }
    }

    fn call_connection_lost(self: &Rc<Self>, error: Option<io::Error>) {
        if self.state.get() == State::Lost {
            return;
        }
        if self.announce && !self.made.get() {
            // connection_made is still due (its protocol was busy): after it.
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
        if let Err(error) = protocol.deliver_connection_lost(&self.lp, error, "TLS transport") {
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

    /// Closes the socket and lets go of everything (see stream.rs).
    fn finish_lost(&self) {
        self.state.set(State::Lost);
        self.cancel_timers();
        self.stop_reading();
        self.stop_writing();
        self.buffer.borrow_mut().clear();
        self.pending_in.borrow_mut().clear();
        let fd = self.fd.borrow_mut().take();
        drop(fd);
        self.wake_waiters();
        let released = self
            .protocol
            .replace(AnyProtocol::Streaming(Rc::new(RefCell::new(Released))));
        if let Some(hook) = self.on_lost.borrow_mut().take() {
            hook();
        }
        drop(released);
    }

    fn version(&self) -> Option<ProtocolVersion> {
        self.conn.borrow().protocol_version()
    }
}

fn classify_read_error(e: io::Error) -> Delivery {
    match e.kind() {
        io::ErrorKind::WouldBlock => Delivery::Empty,
        io::ErrorKind::UnexpectedEof => Delivery::Failed(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection without sending TLS close_notify (truncated)",
        )),
        _ => Delivery::Failed(e),
    }
}

fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    }
}

/// rustls' `write_tls` target: sends at once, buffers only what the socket
/// did not take; it always accepts everything, so rustls' own queue is empty
/// after each flush. A send error is kept for `flush_tls` to act on.
struct Sink<'a> {
    stream: &'a TlsStream,
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(data)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let s = self.stream;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if s.dead() || s.write_error.borrow().is_some() {
            return Ok(total);
        }
        let mut skip = 0;
        if s.buffer.borrow().is_empty() {
            match s.sendmsg(bufs) {
                Ok(n) => skip = n,
                Err(e) => {
                    *s.write_error.borrow_mut() = Some(e);
                    return Ok(total);
                }
            }
        }
        if skip < total {
            let mut buffer = s.buffer.borrow_mut();
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                buffer.extend(&b[skip..]);
                skip = 0;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a lost transport holds instead of its protocol.
struct Released;

impl BaseProtocol for Released {}

impl Protocol for Released {
    fn data_received(&mut self, _: &[u8]) {}
}

impl TransportImpl for TlsStream {
    fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.rc().write_impl(&[data])
    }

    fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.rc().write_impl(chunks)
    }

    fn write_eof(&self) -> Result<(), LoopError> {
        match self.state.get() {
            State::Open if !self.eof.get() && !self.dead() => {}
            State::Handshaking => {
                return Err(LoopError::new(
                    ErrorKind::InvalidState,
                    "write_eof(): the TLS handshake has not completed",
                ))
            }
            _ => return Ok(()),
        }
        if self.version() != Some(ProtocolVersion::TLSv1_3) {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "write_eof() needs TLS 1.3: TLS 1.2 has no half-close",
            ));
        }
        self.eof.set(true);
        self.conn.borrow_mut().send_close_notify();
        let me = self.rc();
        if me.flush_tls() && me.buffer.borrow().is_empty() {
            me.shutdown_write();
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        self.version() == Some(ProtocolVersion::TLSv1_3)
    }

    fn close(&self) {
        self.rc().close_impl()
    }

    fn abort(&self) {
        self.rc().force_close(None)
    }

    fn is_closing(&self) -> bool {
        self.lost_scheduled.get()
            || matches!(
                self.state.get(),
                State::Closing | State::ShuttingDown | State::Lost
            )
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        let old = self.protocol.replace(protocol);
        drop(old);
        if self.protocol_paused.get() {
            self.notify(Notice::Pause);
        }
    }

    fn get_protocol(&self) -> AnyProtocol {
        self.protocol.borrow().clone()
    }

    fn pause_reading(&self) {
        if matches!(self.state.get(), State::Open | State::Handshaking) && !self.dead() {
            self.app_paused.set(true);
            if self.state.get() == State::Open {
                self.stop_reading();
            }
        }
    }

    fn resume_reading(&self) {
        if self.app_paused.replace(false) && !self.dead() && self.state.get() == State::Open {
            self.rc().schedule_kick();
        }
    }

    fn is_reading(&self) -> bool {
        matches!(self.state.get(), State::Open | State::Handshaking)
            && !self.dead()
            && !self.app_paused.get()
            && !self.peer_closed.get()
            && !self.tcp_eof.get()
    }

    fn write_buffer_size(&self) -> usize {
        self.write_buffer_len()
    }

    fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.limits.get()
    }

    fn set_write_buffer_limits(&self, limits: WriteBufferLimits) {
        self.limits.set(limits);
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
            "sslcontext" => Some(ExtraInfo::TlsConfig(self.config.clone())),
            "server_hostname" => self.server_hostname.clone().map(ExtraInfo::Text),
            _ => {
                let conn = self.conn.borrow();
                if conn.is_handshaking() {
                    return None;
                }
                match name {
                    "peercert" => conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| ExtraInfo::Bytes(c.as_ref().to_vec())),
                    "peercert_chain" => conn.peer_certificates().map(|c| {
                        ExtraInfo::Certificates(c.iter().map(|c| c.as_ref().to_vec()).collect())
                    }),
                    "cipher" => conn.negotiated_cipher_suite().map(|s| {
                        let suite = s.suite();
                        let name = suite
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{suite:?}"));
                        let secret_bits = if name.contains("AES_128") { 128 } else { 256 };
                        ExtraInfo::Cipher(CipherInfo {
                            name,
                            protocol: version_name(s.version().version),
                            secret_bits,
                        })
                    }),
                    "version" | "protocol" => conn
                        .protocol_version()
                        .map(|v| ExtraInfo::Text(version_name(v))),
                    "alpn_protocol" => conn.alpn_protocol().map(|a| ExtraInfo::Bytes(a.to_vec())),
                    _ => None,
                }
            }
        }
    }

    fn get_loop(&self) -> EventLoop {
        self.lp.clone()
    }

    fn writes_after_lost(&self) -> u64 {
        self.writes_after_lost.get()
    }
}
