//! The TLS stream transport: a rustls connection over a non-blocking TCP or
//! Unix stream socket, behind the same [`Transport`] handle as the plain
//! socket transport (stream.rs, whose rules it follows).
//!
//! This module holds the transport's state and its registration with the
//! loop; its child modules hold the rest: the handshake (tls/stream/handshake.rs),
//! the read path (tls/stream/input.rs), the write path and flow control
//! (tls/stream/output.rs), closing and `connection_lost` (tls/stream/shutdown.rs), the
//! `Transport` methods (tls/stream/transport.rs), `loop.sendfile`'s hooks
//! (tls/stream/sendfile.rs) and, on a loop that runs `Backend::Uring`, the
//! io_uring completion path that moves the ciphertext instead of readiness
//! (tls/stream/completion.rs; the states below are the same on it).
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
//! - `Lost`: as for every transport ([`Lifecycle`](crate::lifecycle)).
//!   `abort()` and fatal errors schedule `connection_lost` at once, dropping
//!   the buffer.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::Duration;

use loop_core::{EventLoop, LoopError, TimerHandle, WaiterList};
use rustls::Connection;

use crate::addr::SockAddr;
use crate::flow::{FlowOwner, WriteFlow};
use crate::lifecycle::{LifeState, Lifecycle, LifecycleOwner};
use crate::protocol::AnyProtocol;
use crate::ring::{Ring, Stash};
use crate::sendfile::transport::SendfileState;
use crate::stream::LostHook;
use crate::tls::{TlsClientOptions, TlsConfig, TlsServerOptions};
use crate::transport::Transport;
use crate::write_buffer::{WriteBuffer, WriteBufferLimits};

mod completion;
mod handshake;
mod input;
mod output;
mod sendfile;
mod shutdown;
mod transport;

/// The TLS transport's states (see the module docs): the lifecycle's
/// `Open`, `Closing` and `Lost` (lifecycle.rs) with the TLS steps before
/// and after ([`Phase`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Handshaking,
    Open,
    Closing,
    ShuttingDown,
    Lost,
}

/// What the TLS transport adds to the lifecycle's states.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Handshaking,
    Running,
    ShuttingDown,
}

/// A [`TlsStream::start`] that failed: the error, and the lost hook it was
/// given, not called.
pub(crate) struct StartError {
    pub(crate) error: LoopError,
    pub(crate) on_lost: Option<LostHook>,
}

/// A duration in seconds as asyncio's messages print a float: `1.0`, `0.2`,
/// `2.5` (Rust's `{}` of `1.0_f64` would say `1`).
pub(crate) fn asyncio_seconds(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.1}")
    } else {
        format!("{secs}")
    }
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
    /// The lifecycle's state, the protocol and the loop (lifecycle.rs).
    life: Lifecycle<AnyProtocol>,
    phase: Cell<Phase>,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    conn: RefCell<Connection>,
    config: TlsConfig,
    server_hostname: Option<String>,
    announce: bool,
    report_failure: bool,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    buffer: RefCell<WriteBuffer>,
    /// Water marks and the pause/resume notices owed (flow.rs).
    flow: WriteFlow,
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
    /// Ciphertext not fed to rustls yet, and (on the completion path) a
    /// receive error met behind it (ring.rs's stash).
    pending_in: Stash,
    /// The loop's completion path for the socket, when the loop runs
    /// io_uring (tls/stream/completion.rs); empty: readiness.
    ring: Ring,
    /// Plaintext written before the handshake completed (held by rustls).
    pre_handshake: Cell<usize>,
    /// Bytes the buffer held when a forced close (abort, error) dropped it.
    dropped_on_loss: Cell<usize>,
    /// The waiter (`create_connection`, `start_tls`) may return.
    ready: Cell<bool>,
    waiters: WaiterList,
    failure: RefCell<Option<io::Error>>,
    handshake_timer: RefCell<Option<TimerHandle>>,
    shutdown_timer: RefCell<Option<TimerHandle>>,
    kick_scheduled: Cell<bool>,
    /// What rustls writes now leaves at once, even on the completion path
    /// inside a delivery (the alert of a failure: input.rs).
    urgent: Cell<bool>,
    writes_after_lost: Cell<u64>,
    write_error: RefCell<Option<io::Error>>,
    peername: Option<SockAddr>,
    sockname: Option<SockAddr>,
    on_lost: RefCell<Option<LostHook>>,
    /// `loop.sendfile` in progress (tls/stream/sendfile.rs).
    sendfile: SendfileState,
}

impl TlsStream {
    /// Starts the handshake over a connected, non-blocking stream socket.
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        mut conn: Connection,
        protocol: AnyProtocol,
        mut settings: Settings,
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
        let received = std::mem::take(&mut settings.received);
        let stream = Rc::new_cyclic(|me| TlsStream {
            me: me.clone(),
            life: Lifecycle::owning(lp, protocol, fd.as_raw_fd(), "TLS transport"),
            phase: Cell::new(Phase::Handshaking),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            conn: RefCell::new(conn),
            config: settings.config,
            server_hostname: settings.server_hostname,
            announce: settings.announce,
            report_failure: settings.report_failure,
            handshake_timeout: settings.handshake_timeout,
            shutdown_timeout: settings.shutdown_timeout,
            buffer: RefCell::new(WriteBuffer::default()),
            flow: WriteFlow::new(settings.limits.unwrap_or_default()),
            reading: Cell::new(false),
            app_paused: Cell::new(false),
            writing: Cell::new(false),
            eof: Cell::new(false),
            shut_wr: Cell::new(false),
            tcp_eof: Cell::new(false),
            eof_fed: Cell::new(false),
            peer_closed: Cell::new(false),
            stalled: Cell::new(stalled),
            pending_in: Stash::default(),
            ring: Ring::default(),
            pre_handshake: Cell::new(0),
            dropped_on_loss: Cell::new(0),
            ready: Cell::new(false),
            waiters: WaiterList::new(),
            failure: RefCell::new(None),
            handshake_timer: RefCell::new(None),
            shutdown_timer: RefCell::new(None),
            kick_scheduled: Cell::new(false),
            urgent: Cell::new(false),
            writes_after_lost: Cell::new(0),
            write_error: RefCell::new(None),
            peername,
            sockname,
            on_lost: RefCell::new(on_lost),
            sendfile: SendfileState::default(),
        });
        stream.pending_in.push(&received);
        stream.open_completion();
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
            if me.state() == State::Lost {
                let err = me.failure.borrow_mut().take().unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the TLS connection was closed before it was ready",
                    )
                });
                return Poll::Ready(Err(err));
            }
            me.waiters.register(cx.waker());
            Poll::Pending
        })
    }

    /// The waiting future was dropped: the caller gave up on the connection.
    pub(crate) fn abort_handshake(self: &Rc<Self>) {
        if self.ready.get() {
            return;
        }
        if self.state() == State::Handshaking {
            self.end_handshake(
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the TLS handshake was cancelled",
                ),
                false,
            );
        } else if !self.life.is_made() {
            // Handshake done, `connection_made` scheduled but not run: the
            // protocol is never called; close the socket now.
            self.finish_lost();
        } else {
            self.force_close(None);
        }
    }

    fn wake_waiters(&self) {
        self.waiters.wake_all();
    }

    fn set_ready(&self) {
        self.ready.set(true);
        self.wake_waiters();
    }

    fn state(&self) -> State {
        match (self.life.state(), self.phase.get()) {
            (LifeState::Lost, _) => State::Lost,
            (_, Phase::Handshaking) => State::Handshaking,
            (LifeState::Open, _) => State::Open,
            (LifeState::Closing, Phase::ShuttingDown) => State::ShuttingDown,
            (LifeState::Closing, Phase::Running) => State::Closing,
        }
    }

    /// Moves on (`Lost` is reached only through `finish_lost`).
    fn set_state(&self, state: State) {
        match state {
            State::Handshaking => self.phase.set(Phase::Handshaking),
            State::Open => self.phase.set(Phase::Running),
            State::Closing => {
                self.phase.set(Phase::Running);
                self.life.force_closing();
            }
            State::ShuttingDown => {
                self.phase.set(Phase::ShuttingDown);
                self.life.force_closing();
            }
            State::Lost => debug_assert!(false, "Lost is reached through finish_lost"),
        }
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
        self.life.lost_claimed() || self.state() == State::Lost
    }

    // --- Registration ------------------------------------------------------

    fn add_reader(self: &Rc<Self>) -> Result<(), LoopError> {
        if self.reading.get() {
            return Ok(());
        }
        if self.ring.is_on() {
            self.reading.set(true);
            return Ok(self.ring.start_recv()?);
        }
        let me = self.clone();
        self.life
            .lp()
            .add_reader(self.raw, move || me.on_readable())?;
        self.reading.set(true);
        Ok(())
    }

    /// Watches the socket for reading if the state wants it.
    fn start_reading(self: &Rc<Self>) {
        let wanted = match self.state() {
            State::Handshaking | State::ShuttingDown => true,
            State::Open => {
                self.life.is_made()
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
            if self.ring.is_on() {
                self.ring.stop_recv();
            } else {
                let _ = self.life.lp().remove_reader(self.raw);
            }
        }
    }

    fn start_writing(self: &Rc<Self>) {
        if self.writing.get() {
            return;
        }
        let me = self.clone();
        match self
            .life
            .lp()
            .add_writer(self.raw, move || me.on_writable())
        {
            Ok(()) => self.writing.set(true),
            Err(e) => self.fail(e.into()),
        }
    }

    fn stop_writing(&self) {
        if self.writing.replace(false) {
            let _ = self.life.lp().remove_writer(self.raw);
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
        if self.life.lp().call_soon(move || me.kick()).is_err() {
            self.kick_scheduled.set(false);
        }
    }

    /// Delivers what waits for the protocol, then reads the socket again.
    fn kick(self: &Rc<Self>) {
        self.kick_scheduled.set(false);
        let go = match self.state() {
            State::Handshaking => true,
            State::Open => self.life.is_made() && !self.app_paused.get(),
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
}

#[cfg(test)]
mod seconds_tests {
    use super::*;

    #[test]
    fn seconds_print_as_asyncio_prints_a_float() {
        assert_eq!(asyncio_seconds(Duration::from_secs(1)), "1.0");
        assert_eq!(asyncio_seconds(Duration::from_secs(60)), "60.0");
        assert_eq!(asyncio_seconds(Duration::from_millis(200)), "0.2");
        assert_eq!(asyncio_seconds(Duration::from_millis(2500)), "2.5");
    }
}
