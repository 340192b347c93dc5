//! Datagram endpoints: [`DatagramProtocol`] and [`DatagramTransport`]
//! (asyncio's `DatagramProtocol` and its selector datagram transport), over
//! UDP and Unix datagram sockets.
//!
//! # State machine
//! `Open -> Closing -> Lost`, one way only, as the stream transport.
//! `connection_made` is always delivered first, through `call_soon`; reading
//! starts after it. `close()` moves to `Closing` and stops reading; the
//! queued datagrams are still sent, then `connection_lost(None)` is
//! scheduled. `abort()` drops the queue and schedules it at once; so does a
//! fatal error (a watcher that cannot be registered, a panic in
//! `connection_made`). Whichever comes first schedules `connection_lost`
//! (through `call_soon`, never synchronously; `lost_scheduled` makes it
//! exactly once); when it runs the socket is closed, a Unix socket file this
//! endpoint bound is removed, the state is `Lost`, and the endpoint lets go
//! of its protocol (a protocol that keeps its `DatagramTransport` would
//! otherwise be an `Rc` cycle). `sendto` after `close()` drops the datagram
//! and counts it ([`DatagramTransport::sends_after_close`]): never an error,
//! never a panic.
//!
//! # Errors do not close the endpoint
//! As in asyncio, a failed send or receive (`ECONNREFUSED` after an ICMP
//! port unreachable on a connected endpoint, `EMSGSIZE`, `ENOBUFS`, ...) goes
//! to the protocol's `error_received` and the endpoint keeps working. The
//! datagram that failed is dropped. A panic in `datagram_received`,
//! `error_received`, `pause_writing` or `resume_writing` is reported to the
//! exception handler and the endpoint keeps working too (one bad datagram
//! must not take a server down); a panic in `connection_made` is fatal.
//!
//! # Read path
//! The socket is watched level-triggered while the endpoint is open. Each
//! readiness does at most 16 `recvmsg` calls, stopping at `EAGAIN` (bounded
//! work per loop iteration, so a flooding peer cannot starve timers and
//! other callbacks, without one poll per datagram under load) into a 64 KiB
//! buffer shared by every datagram endpoint of the thread (taken out of its
//! slot for the call and put back after): no allocation per datagram. The
//! protocol gets `datagram_received(&buf[..n], addr)`. A datagram longer than
//! the buffer (possible on Unix sockets only: a UDP payload is at most 65,527
//! bytes) is dropped and reported to `error_received` as `EMSGSIZE` rather
//! than delivered truncated. A receive error goes to `error_received`. If the
//! protocol is busy (a task holds a borrow of it across an await), nothing is
//! read that iteration; level-triggering brings the socket back.
//!
//! # Write path and flow control
//! `sendto` tries the socket at once when nothing is queued; a datagram the
//! kernel does not take now (`EAGAIN`) is copied into the queue (a
//! `VecDeque` of datagrams with their destinations), and only then is the
//! socket watched for writability. Datagrams leave in order. The queue's
//! size counts each datagram's bytes plus 8 bytes of overhead (asyncio's
//! accounting, so that empty datagrams count too). Every path that grows the
//! queue checks the high-water mark (`pause_writing`); every path that
//! shrinks it checks the low-water mark (`resume_writing`). Every error
//! branch of the flush ends in exactly one of: still armed for writability
//! (datagrams left), or unarmed with an empty queue, the protocol resumed if
//! it was paused and a pending close finished (lesson 4 of the design notes:
//! no lost wake-up after a send error).
//!
//! # Notices to a busy protocol
//! `pause_writing`, `resume_writing` and `error_received` caused by a
//! `sendto` are synchronous, as in asyncio, except when the protocol is the
//! caller (its `RefCell` is borrowed): then they are queued and delivered
//! right after its callback returns, in order. A protocol method is never
//! re-entered, and the endpoint holds no borrow of its own state while user
//! code runs. Pending notices are delivered before `connection_lost`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use loop_core::{ErrorKind, EventLoop, ExceptionContext, LoopError};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvFlags, ReturnFlags, SendFlags, SocketAddrAny};

use crate::addr::SockAddr;
use crate::protocol::ProtocolHandle;
use crate::transport::ExtraInfo;
use crate::write_buffer::WriteBufferLimits;

/// The largest datagram delivered whole; longer ones are dropped and
/// reported as `EMSGSIZE`.
pub(crate) const DATAGRAM_READ_SIZE: usize = 64 * 1024;

/// The most datagrams delivered per readiness (then the loop moves on).
const DATAGRAMS_PER_READINESS: usize = 16;

/// What each queued datagram adds to the write buffer size on top of its
/// bytes (asyncio's `_header_size`).
const DATAGRAM_OVERHEAD: usize = 8;

/// How soon a delivery to a protocol that was busy is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(1);

thread_local! {
    /// The receive buffer shared by every datagram endpoint of this thread.
    static DATAGRAM_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a datagram endpoint calls: asyncio's `DatagramProtocol`.
///
/// Every method takes `&mut self` and is called from the loop only:
/// `connection_made` first, then any number of `datagram_received`,
/// `error_received`, `pause_writing` and `resume_writing`, then
/// `connection_lost` exactly once. Only `datagram_received` has no default.
///
/// ```
/// use loop_net::{DatagramProtocol, DatagramTransport, SockAddr};
/// /// Sends every datagram back to where it came from.
/// #[derive(Default)]
/// struct Echo(Option<DatagramTransport>);
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, t: DatagramTransport) {
///         self.0 = Some(t);
///     }
///     fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
///         if let Some(t) = &self.0 {
///             let _ = t.sendto(data, Some(addr));
///         }
///     }
/// }
/// let _factory = Echo::default;
/// ```
#[doc(alias = "asyncio.DatagramProtocol")]
pub trait DatagramProtocol: 'static {
    /// The endpoint is ready; keep `transport` to send with it.
    #[doc(alias = "DatagramProtocol.connection_made")]
    fn connection_made(&mut self, transport: DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`. The slice is the endpoint's receive
    /// buffer, valid only during the call (no allocation per datagram). An
    /// unnamed Unix sender's address is the empty path.
    #[doc(alias = "DatagramProtocol.datagram_received")]
    fn datagram_received(&mut self, data: &[u8], addr: SockAddr);

    /// A send or receive failed (for example `ECONNREFUSED` on a connected
    /// endpoint whose peer is not listening, or `EMSGSIZE` for a datagram
    /// too long to send). The endpoint stays open; the datagram concerned is
    /// lost.
    #[doc(alias = "DatagramProtocol.error_received")]
    fn error_received(&mut self, error: io::Error) {
        let _ = error;
    }

    /// The endpoint is closed: `None` after `close`/`abort`, the error after
    /// a fatal failure. Called exactly once, after `connection_made`.
    #[doc(alias = "DatagramProtocol.connection_lost")]
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The queue of datagrams waiting for the socket went above the
    /// high-water mark: stop sending until
    /// [`resume_writing`](Self::resume_writing).
    #[doc(alias = "DatagramProtocol.pause_writing")]
    fn pause_writing(&mut self) {}

    /// The queue drained to the low-water mark or below.
    #[doc(alias = "DatagramProtocol.resume_writing")]
    fn resume_writing(&mut self) {}
}

/// Lets a `ProtocolHandle<P>` be given where a type-erased datagram
/// protocol is expected ([`DatagramTransport::set_protocol`]).
impl<P: DatagramProtocol> From<ProtocolHandle<P>> for ProtocolHandle<dyn DatagramProtocol> {
    fn from(h: ProtocolHandle<P>) -> Self {
        ProtocolHandle { cell: h.cell }
    }
}

type DynProtocol = Rc<RefCell<dyn DatagramProtocol>>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    Closing,
    Lost,
}

enum Notice {
    Pause,
    Resume,
    Error(io::Error),
}

impl Notice {
    fn name(&self) -> &'static str {
        match self {
            Notice::Pause => "pause_writing",
            Notice::Resume => "resume_writing",
            Notice::Error(_) => "error_received",
        }
    }
}

/// One datagram waiting for the socket, with its destination (`None` on a
/// connected socket).
struct Queued {
    data: Vec<u8>,
    addr: Option<SocketAddrAny>,
}

/// A Unix socket file an endpoint bound: removed when the endpoint goes
/// away, if the path still names that same socket (never a file someone
/// else put there since).
#[derive(Debug)]
pub(crate) struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedPath {
    /// Records the socket file just bound at `path`.
    pub(crate) fn bound(path: PathBuf) -> Option<OwnedPath> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&path).ok()?;
        Some(OwnedPath {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for OwnedPath {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A socket ready to become an endpoint, as `create_datagram_endpoint`
/// prepared it.
pub(crate) struct Prepared {
    pub(crate) fd: OwnedFd,
    /// The socket is connected: send with `send`, and `remote` is its peer.
    pub(crate) connected: bool,
    /// The fixed destination (`remote_addr`): the peer of a connected
    /// socket, or the address every datagram goes to when the socket was
    /// not connected (`allow_broadcast`).
    pub(crate) remote: Option<SockAddr>,
    pub(crate) owned_path: Option<OwnedPath>,
}

pub(crate) struct Endpoint {
    me: Weak<Endpoint>,
    lp: EventLoop,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    state: Cell<State>,
    protocol: RefCell<DynProtocol>,
    queue: RefCell<VecDeque<Queued>>,
    /// Bytes queued, plus [`DATAGRAM_OVERHEAD`] per datagram.
    buffer_size: Cell<usize>,
    limits: Cell<WriteBufferLimits>,
    protocol_paused: Cell<bool>,
    reading: Cell<bool>,
    writing: Cell<bool>,
    lost_scheduled: Cell<bool>,
    /// `connection_made` was delivered.
    made: Cell<bool>,
    made_waiters: RefCell<Vec<Waker>>,
    retry_pending: Cell<bool>,
    sends_after_close: Cell<u64>,
    deferred: RefCell<VecDeque<Notice>>,
    connected: bool,
    remote: Option<SockAddr>,
    /// The kernel form of `remote` when the socket is not connected.
    remote_raw: Option<SocketAddrAny>,
    peername: Option<SockAddr>,
    sockname: Option<SockAddr>,
    /// What `datagram_received` gets for a sender without an address.
    unnamed: SockAddr,
    owned_path: RefCell<Option<OwnedPath>>,
}

impl Endpoint {
    /// Wraps a prepared non-blocking datagram socket: schedules
    /// `connection_made`, after which reading starts.
    pub(crate) fn start(
        lp: &EventLoop,
        prepared: Prepared,
        protocol: DynProtocol,
    ) -> Result<(DatagramTransport, Rc<Endpoint>), LoopError> {
        if lp.is_closed() {
            return Err(LoopError::closed());
        }
        let Prepared {
            fd,
            connected,
            remote,
            owned_path,
        } = prepared;
        let remote_raw = match (&remote, connected) {
            (Some(r), false) => Some(r.to_raw().map_err(|e| {
                LoopError::new(ErrorKind::InvalidArgument, format!("remote address: {e}"))
            })?),
            _ => None,
        };
        let peername = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .map(SockAddr::from_raw);
        let sockname = rustix::net::getsockname(&fd).ok().map(SockAddr::from_raw);
        let unnamed = match &sockname {
            Some(SockAddr::Inet(a)) => SockAddr::Inet(std::net::SocketAddr::new(
                if a.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                },
                0,
            )),
            Some(SockAddr::Other(f)) => SockAddr::Other(*f),
            _ => SockAddr::Unix(PathBuf::new()),
        };
        let ep = Rc::new_cyclic(|me| Endpoint {
            me: me.clone(),
            lp: lp.clone(),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            state: Cell::new(State::Open),
            protocol: RefCell::new(protocol),
            queue: RefCell::new(VecDeque::new()),
            buffer_size: Cell::new(0),
            limits: Cell::new(WriteBufferLimits::default()),
            protocol_paused: Cell::new(false),
            reading: Cell::new(false),
            writing: Cell::new(false),
            lost_scheduled: Cell::new(false),
            made: Cell::new(false),
            made_waiters: RefCell::new(Vec::new()),
            retry_pending: Cell::new(false),
            sends_after_close: Cell::new(0),
            deferred: RefCell::new(VecDeque::new()),
            connected,
            remote,
            remote_raw,
            peername,
            sockname,
            unnamed,
            owned_path: RefCell::new(owned_path),
        });
        let transport = DatagramTransport { inner: ep.clone() };
        let t = transport.clone();
        let me = ep.clone();
        lp.call_soon(move || me.deliver_made(t))?;
        Ok((transport, ep))
    }

    /// Resolves once `connection_made` was called (or the endpoint is
    /// lost), as asyncio's `create_datagram_endpoint` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        let me = self.clone();
        std::future::poll_fn(move |cx| {
            if me.made.get() || me.state.get() == State::Lost {
                return Poll::Ready(());
            }
            me.made_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    }

    fn rc(&self) -> Rc<Endpoint> {
        self.me
            .upgrade()
            .expect("a live Endpoint is owned by an Rc")
    }

    fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
    }

    fn wake_made(&self) {
        let waiters = std::mem::take(&mut *self.made_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    // --- lifecycle -------------------------------------------------------

    fn deliver_made(self: &Rc<Self>, transport: DatagramTransport) {
        let protocol = self.protocol.borrow().clone();
        let Ok(mut p) = protocol.try_borrow_mut() else {
            // Borrowed by someone else right now: retry shortly.
            let me = self.clone();
            if self
                .lp
                .call_later(RETRY_DELAY, move || me.deliver_made(transport))
                .is_err()
            {
                self.finish_lost();
            }
            return;
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| p.connection_made(transport)));
        drop(p);
        drop(protocol);
        self.made.set(true);
        self.wake_made();
        match outcome {
            Ok(()) => {
                self.drain_deferred();
                if self.state.get() == State::Open {
                    self.start_reading();
                }
            }
            Err(payload) => {
                let err = self.report_panic("connection_made", payload);
                self.force_close(Some(io::Error::other(err.to_string())));
            }
        }
    }

    fn close_impl(self: &Rc<Self>) {
        if self.state.get() != State::Open {
            return;
        }
        self.state.set(State::Closing);
        self.stop_reading();
        if self.queue.borrow().is_empty() {
            self.schedule_lost(None);
        }
    }

    fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.lost_scheduled.get() {
            return;
        }
        let dropped = std::mem::take(&mut *self.queue.borrow_mut());
        drop(dropped);
        self.buffer_size.set(0);
        self.stop_writing();
        self.stop_reading();
        self.state.set(State::Closing);
        self.schedule_lost(error);
    }

    fn schedule_lost(self: &Rc<Self>, error: Option<io::Error>) {
        if self.lost_scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        if self
            .lp
            .call_soon(move || me.call_connection_lost(error))
            .is_err()
        {
            // The loop is closed: nothing can be delivered; release the socket.
            self.finish_lost();
        }
    }

    fn call_connection_lost(self: &Rc<Self>, error: Option<io::Error>) {
        let protocol = self.protocol.borrow().clone();
        let busy = !self.made.get() || protocol.try_borrow_mut().is_err();
        if busy {
            // connection_made is still being retried, or a task holds the
            // protocol: try again shortly.
            let me = self.clone();
            if self
                .lp
                .call_later(RETRY_DELAY, move || me.call_connection_lost(error))
                .is_err()
            {
                self.finish_lost();
            }
            return;
        }
        // Whatever is still owed to the protocol comes first.
        self.drain_deferred();
        let outcome = match protocol.try_borrow_mut() {
            Ok(mut p) => catch_unwind(AssertUnwindSafe(|| p.connection_lost(error))),
            Err(_) => Ok(()), // borrowed by one of its own notices' callbacks: cannot happen
        };
        drop(protocol);
        if let Err(payload) = outcome {
            self.report_panic("connection_lost", payload);
        }
        self.finish_lost();
    }

    fn finish_lost(&self) {
        self.state.set(State::Lost);
        self.wake_made();
        self.stop_reading();
        self.stop_writing();
        let fd = self.fd.borrow_mut().take();
        drop(fd);
        let path = self.owned_path.borrow_mut().take();
        drop(path);
        let queue = std::mem::take(&mut *self.queue.borrow_mut());
        drop(queue);
        self.buffer_size.set(0);
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        drop(deferred);
        // Break the protocol -> transport -> protocol cycle; the protocol's
        // own Drop runs outside any borrow of ours.
        let released = self
            .protocol
            .replace(Rc::new(RefCell::new(Released)) as DynProtocol);
        drop(released);
    }

    fn report_panic(&self, what: &str, payload: Box<dyn std::any::Any + Send>) -> LoopError {
        let err = LoopError::panicked(format!("protocol.{what}()"), payload);
        self.lp.call_exception_handler(
            ExceptionContext::new(format!("protocol.{what}() call failed."))
                .with_error(err.clone())
                .with("transport", format!("datagram fd={}", self.raw)),
        );
        err
    }

    // --- watchers --------------------------------------------------------

    fn start_reading(self: &Rc<Self>) {
        if self.reading.get() || self.state.get() != State::Open {
            return;
        }
        let me = self.clone();
        match self.lp.add_reader(self.raw, move || me.on_readable()) {
            Ok(()) => self.reading.set(true),
            Err(e) => self.force_close(Some(e.into())),
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
            Err(e) => self.force_close(Some(e.into())),
        }
    }

    fn stop_writing(&self) {
        if self.writing.replace(false) {
            let _ = self.lp.remove_writer(self.raw);
        }
    }

    // --- read path -------------------------------------------------------

    fn on_readable(self: &Rc<Self>) {
        if self.state.get() != State::Open || !self.reading.get() {
            return;
        }
        let protocol = self.protocol.borrow().clone();
        let Ok(mut p) = protocol.try_borrow_mut() else {
            return; // busy: level-triggering brings us back
        };
        let mut buf = DATAGRAM_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < DATAGRAM_READ_SIZE {
            buf.resize(DATAGRAM_READ_SIZE, 0);
        }
        // Up to DATAGRAMS_PER_READINESS datagrams per readiness: bounded
        // work per iteration (a flood cannot starve timers), without one
        // poll per datagram under load.
        let mut outcome = Ok(());
        let mut what = "";
        for _ in 0..DATAGRAMS_PER_READINESS {
            if self.state.get() != State::Open || !self.reading.get() {
                break;
            }
            let got = self.recv_one(&mut buf);
            let more = matches!(got, Ok(Some(_)));
            if matches!(got, Ok(None)) {
                break;
            }
            what = if more {
                "datagram_received"
            } else {
                "error_received"
            };
            outcome = catch_unwind(AssertUnwindSafe(|| match got {
                Ok(Some((n, addr))) => p.datagram_received(&buf[..n], addr),
                Ok(None) => {}
                Err(e) => p.error_received(e),
            }));
            if outcome.is_err() || !more {
                break;
            }
        }
        drop(p);
        drop(protocol);
        DATAGRAM_BUF.with(|b| {
            let mut slot = b.borrow_mut();
            if slot.is_empty() {
                *slot = buf;
            }
        });
        if let Err(payload) = outcome {
            self.report_panic(what, payload);
        }
        self.drain_deferred();
    }

    /// One `recvmsg`: the datagram's length and sender, `None` when there
    /// is nothing to read.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SockAddr)>> {
        loop {
            let got = self.with_fd(|fd| {
                let mut iov = [IoSliceMut::new(&mut *buf)];
                rustix::net::recvmsg(
                    fd,
                    &mut iov,
                    &mut RecvAncillaryBuffer::default(),
                    RecvFlags::empty(),
                )
            });
            return match got {
                // The socket is gone (closed while we were called).
                None => Ok(None),
                Some(Ok(msg)) => {
                    if msg.flags.contains(ReturnFlags::TRUNC) {
                        // Longer than the buffer: dropped, not delivered cut.
                        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
                    }
                    let addr = msg
                        .address
                        .map_or_else(|| self.unnamed.clone(), SockAddr::from_raw);
                    Ok(Some((msg.bytes, addr)))
                }
                Some(Err(Errno::INTR)) => continue,
                Some(Err(Errno::AGAIN)) => Ok(None),
                Some(Err(e)) => Err(e.into()),
            };
        }
    }

    // --- write path ------------------------------------------------------

    /// One send: `Ok(true)` sent, `Ok(false)` the kernel would block.
    fn send_one(&self, data: &[u8], addr: Option<&SocketAddrAny>) -> io::Result<bool> {
        loop {
            let r = self.with_fd(|fd| match addr {
                Some(a) => rustix::net::sendto(fd, data, SendFlags::NOSIGNAL, a),
                None => rustix::net::send(fd, data, SendFlags::NOSIGNAL),
            });
            return match r {
                None => Ok(true), // the socket is gone: nothing to send on
                Some(Ok(_)) => Ok(true),
                Some(Err(Errno::INTR)) => continue,
                Some(Err(Errno::AGAIN)) => Ok(false),
                Some(Err(e)) => Err(e.into()),
            };
        }
    }

    fn sendto_impl(self: &Rc<Self>, data: &[u8], addr: Option<SockAddr>) -> Result<(), LoopError> {
        // The destination: asyncio's address rules first.
        let given = match (&self.remote, addr) {
            (Some(remote), Some(a)) if a != *remote => {
                return Err(LoopError::new(
                    ErrorKind::InvalidArgument,
                    format!("Invalid address: must be None or {}", addr_text(remote)),
                ));
            }
            (Some(_), _) => None,
            (None, Some(a)) => Some(a.to_raw().map_err(|e| {
                LoopError::new(ErrorKind::InvalidArgument, format!("Invalid address: {e}"))
            })?),
            (None, None) if self.connected => None,
            (None, None) => {
                return Err(LoopError::new(
                    ErrorKind::InvalidArgument,
                    "Invalid address: the endpoint has no remote address, so sendto() needs one",
                ));
            }
        };
        if self.state.get() != State::Open {
            self.sends_after_close
                .set(self.sends_after_close.get().saturating_add(1));
            return Ok(());
        }
        let dest = given.as_ref().or(self.remote_raw.as_ref());
        if self.queue.borrow().is_empty() {
            match self.send_one(data, dest) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.notify(Notice::Error(e));
                    return Ok(());
                }
            }
        }
        let addr = match given {
            Some(a) => Some(a),
            None => self.remote_raw.clone(),
        };
        self.queue.borrow_mut().push_back(Queued {
            data: data.to_vec(),
            addr,
        });
        self.buffer_size
            .set(self.buffer_size.get() + data.len() + DATAGRAM_OVERHEAD);
        self.start_writing();
        self.maybe_pause_protocol();
        Ok(())
    }

    fn on_writable(self: &Rc<Self>) {
        if !self.writing.get() {
            return;
        }
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some(q) = next else { break };
            match self.send_one(&q.data, q.addr.as_ref()) {
                Ok(false) => {
                    self.queue.borrow_mut().push_front(q);
                    break;
                }
                Ok(true) => self.sent(&q),
                Err(e) => {
                    // Reported, dropped, and the flush goes on.
                    self.sent(&q);
                    self.deferred.borrow_mut().push_back(Notice::Error(e));
                }
            }
        }
        self.maybe_resume_protocol();
        if self.queue.borrow().is_empty() {
            self.stop_writing();
            if self.state.get() == State::Closing {
                self.schedule_lost(None);
            }
        }
        self.drain_deferred();
    }

    fn sent(&self, q: &Queued) {
        self.buffer_size.set(
            self.buffer_size
                .get()
                .saturating_sub(q.data.len() + DATAGRAM_OVERHEAD),
        );
    }

    fn maybe_pause_protocol(&self) {
        if !self.protocol_paused.get() && self.buffer_size.get() > self.limits.get().high {
            self.protocol_paused.set(true);
            self.notify(Notice::Pause);
        }
    }

    fn maybe_resume_protocol(&self) {
        if self.protocol_paused.get() && self.buffer_size.get() <= self.limits.get().low {
            self.protocol_paused.set(false);
            self.deferred.borrow_mut().push_back(Notice::Resume);
        }
    }

    // --- notices ---------------------------------------------------------

    /// Delivers a notice now, or right after the protocol's running callback
    /// returns if it is busy.
    fn notify(&self, notice: Notice) {
        if self.state.get() == State::Lost {
            return;
        }
        self.deferred.borrow_mut().push_back(notice);
        self.drain_deferred();
    }

    /// Delivers the queued notices in order. If the protocol is busy, the
    /// dispatcher running its callback drains them when it returns; in case
    /// it is busy for another reason (a task holding its borrow across an
    /// await), a retry is also scheduled, so no notice is stranded.
    fn drain_deferred(&self) {
        loop {
            if self.state.get() == State::Lost {
                return;
            }
            let Some(notice) = self.deferred.borrow_mut().pop_front() else {
                return;
            };
            let protocol = self.protocol.borrow().clone();
            let Ok(mut p) = protocol.try_borrow_mut() else {
                self.deferred.borrow_mut().push_front(notice);
                self.retry_later();
                return;
            };
            let what = notice.name();
            let outcome = catch_unwind(AssertUnwindSafe(|| match notice {
                Notice::Pause => p.pause_writing(),
                Notice::Resume => p.resume_writing(),
                Notice::Error(e) => p.error_received(e),
            }));
            drop(p);
            drop(protocol);
            if let Err(payload) = outcome {
                self.report_panic(what, payload);
            }
        }
    }

    /// Drains the notices again shortly (1 ms: not `call_soon`, which would
    /// spin the loop for as long as a task keeps the protocol borrowed).
    fn retry_later(&self) {
        if self.retry_pending.replace(true) {
            return;
        }
        let me = self.rc();
        let scheduled = self.lp.call_later(RETRY_DELAY, move || {
            me.retry_pending.set(false);
            me.drain_deferred();
        });
        if scheduled.is_err() {
            self.retry_pending.set(false);
        }
    }
}

/// What a lost endpoint holds instead of its protocol: nothing to call.
struct Released;

impl DatagramProtocol for Released {
    fn datagram_received(&mut self, _: &[u8], _: SockAddr) {}
}

/// An address as asyncio would print it in a message.
fn addr_text(a: &SockAddr) -> String {
    match a {
        SockAddr::Inet(a) => a.to_string(),
        SockAddr::Unix(p) => format!("{:?}", p.display().to_string()),
        other => format!("{other:?}"),
    }
}

/// A datagram endpoint's transport (asyncio's `DatagramTransport`): send
/// datagrams with [`sendto`](Self::sendto), close it, tune its flow control.
///
/// A cheap `Clone` handle (an `Rc`), `!Send` like the loop. It stays valid
/// after the endpoint is closed: sends are then dropped and counted.
#[doc(alias = "asyncio.DatagramTransport")]
#[derive(Clone)]
pub struct DatagramTransport {
    inner: Rc<Endpoint>,
}

impl DatagramTransport {
    /// Sends `data` as one datagram to `addr` (asyncio's
    /// `sendto(data, addr=None)`).
    ///
    /// On an endpoint created with a `remote_addr` (a connected one), give
    /// `None`, or exactly that address; any other address is an
    /// `InvalidArgument` error ("Invalid address: must be None or ...", as
    /// asyncio's `ValueError`). On any other endpoint `addr` is required.
    ///
    /// The datagram is sent at once if the kernel takes it; otherwise it is
    /// queued, sent in order when the socket is writable, and the protocol
    /// gets `pause_writing` when the queue goes above the high-water mark. A
    /// send error (other than "would block") goes to the protocol's
    /// `error_received`, and the endpoint keeps working. Empty datagrams are
    /// sent too. After [`close`](Self::close) or [`abort`](Self::abort), the
    /// datagram is dropped and counted
    /// ([`sends_after_close`](Self::sends_after_close)); never an error.
    #[doc(alias = "DatagramTransport.sendto")]
    pub fn sendto(&self, data: &[u8], addr: Option<SockAddr>) -> Result<(), LoopError> {
        self.inner.sendto_impl(data, addr)
    }

    /// Closes the endpoint: receiving stops now; the queued datagrams are
    /// still sent; then the protocol's `connection_lost(None)` is called
    /// (through the loop, never from inside `close`). Idempotent.
    #[doc(alias = "BaseTransport.close")]
    pub fn close(&self) {
        self.inner.close_impl()
    }

    /// Closes at once, dropping the queued datagrams; `connection_lost(None)`
    /// follows through the loop.
    #[doc(alias = "DatagramTransport.abort")]
    pub fn abort(&self) {
        self.inner.force_close(None)
    }

    /// Whether the endpoint is closing or closed.
    #[doc(alias = "BaseTransport.is_closing")]
    pub fn is_closing(&self) -> bool {
        self.inner.state.get() != State::Open
    }

    /// Replaces the protocol. If writing is paused, the new protocol gets
    /// `pause_writing` at once, so that the `resume_writing` it later gets is
    /// paired.
    #[doc(alias = "BaseTransport.set_protocol")]
    pub fn set_protocol(&self, protocol: impl Into<ProtocolHandle<dyn DatagramProtocol>>) {
        let new = protocol.into().cell;
        let old = self.inner.protocol.replace(new);
        drop(old);
        if self.inner.protocol_paused.get() {
            self.inner.notify(Notice::Pause);
        }
    }

    /// The current protocol. Once `connection_lost` has run, the endpoint
    /// has let go of it (as asyncio sets it to `None`) and this is an inert
    /// placeholder.
    #[doc(alias = "BaseTransport.get_protocol")]
    pub fn get_protocol(&self) -> ProtocolHandle<dyn DatagramProtocol> {
        ProtocolHandle {
            cell: self.inner.protocol.borrow().clone(),
        }
    }

    /// The size of the send queue: the bytes of the datagrams waiting for
    /// the socket plus 8 bytes per datagram (asyncio's accounting). The
    /// kernel's own socket buffer is not counted.
    #[doc(alias = "DatagramTransport.get_write_buffer_size")]
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.buffer_size.get()
    }

    /// The `(low, high)` water marks of the send queue, in asyncio's order.
    #[doc(alias = "DatagramTransport.get_write_buffer_limits")]
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        let l = self.inner.limits.get();
        (l.low, l.high)
    }

    /// Sets the water marks with asyncio's defaults (see
    /// [`WriteBufferLimits::new`]); `high < low` is `InvalidArgument`. A
    /// queue already above the new high-water mark pauses the protocol now.
    #[doc(alias = "DatagramTransport.set_write_buffer_limits")]
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LoopError> {
        let limits = WriteBufferLimits::new(high, low)
            .map_err(|m| LoopError::new(ErrorKind::InvalidArgument, m))?;
        self.inner.limits.set(limits);
        self.inner.maybe_pause_protocol();
        Ok(())
    }

    /// asyncio's `get_extra_info(name)`: `"peername"` (connected endpoints
    /// only), `"sockname"`, `"socket"` (while open). Unknown names give
    /// `None`.
    #[doc(alias = "BaseTransport.get_extra_info")]
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "peername" => self.inner.peername.clone().map(ExtraInfo::Addr),
            "sockname" => self.inner.sockname.clone().map(ExtraInfo::Addr),
            "socket" => self
                .inner
                .fd
                .borrow()
                .as_ref()
                .map(|fd| ExtraInfo::Fd(fd.as_raw_fd())),
            _ => None,
        }
    }

    /// The connected peer's address (`get_extra_info("peername")`).
    pub fn peername(&self) -> Option<SockAddr> {
        self.inner.peername.clone()
    }

    /// The local address (`get_extra_info("sockname")`).
    pub fn sockname(&self) -> Option<SockAddr> {
        self.inner.sockname.clone()
    }

    /// The socket's fd while the endpoint owns one
    /// (`get_extra_info("socket")`). Owned by the endpoint: do not close it,
    /// and do not `add_reader` on it.
    pub fn fd(&self) -> Option<RawFd> {
        self.inner.fd.borrow().as_ref().map(|fd| fd.as_raw_fd())
    }

    /// The fixed destination given as `remote_addr`, if any: what
    /// `sendto(data, None)` sends to.
    pub fn remote_addr(&self) -> Option<SockAddr> {
        self.inner.remote.clone()
    }

    /// How many `sendto` calls were dropped because the endpoint was
    /// already closing or closed (asyncio counts them and warns).
    pub fn sends_after_close(&self) -> u64 {
        self.inner.sends_after_close.get()
    }

    /// The loop the endpoint runs on.
    pub fn get_loop(&self) -> EventLoop {
        self.inner.lp.clone()
    }

    /// Whether two handles are the same endpoint.
    pub fn ptr_eq(&self, other: &DatagramTransport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("fd", &self.fd())
            .field("sockname", &self.inner.sockname)
            .field("remote", &self.inner.remote)
            .field("closing", &self.is_closing())
            .field("write_buffer", &self.get_write_buffer_size())
            .finish()
    }
}
