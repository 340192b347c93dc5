//! A datagram endpoint's lifecycle (a child module of `datagram`): making
//! it from a prepared socket, `connection_made`, closing, `connection_lost`
//! and the release of the socket, its Unix socket file and its protocol;
//! the registration of its socket with the loop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, ExceptionContext, LoopError};

use crate::addr::SockAddr;
use crate::flow::WriteFlow;
use crate::lifecycle::{self, LifeProtocol, Lifecycle, LifecycleOwner, Made};
use crate::protocol::ProtocolCell;
use crate::write_buffer::WriteBufferLimits;

use super::{DatagramProtocol, DatagramTransport, DynProtocol, Endpoint, State};
use crate::owned_path::OwnedPath;

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
            life: Lifecycle::owning(lp, protocol, fd.as_raw_fd(), "datagram transport"),
            ring: RefCell::new(None),
            stash: RefCell::new(VecDeque::new()),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            queue: RefCell::new(VecDeque::new()),
            buffer_size: Cell::new(0),
            flow: WriteFlow::new(WriteBufferLimits::default()),
            reading: Cell::new(false),
            writing: Cell::new(false),
            sends_after_close: Cell::new(0),
            connected,
            remote,
            remote_raw,
            peername,
            sockname,
            unnamed,
            owned_path: RefCell::new(owned_path),
        });
        ep.open_completion();
        let transport = DatagramTransport { inner: ep.clone() };
        lifecycle::schedule_made(&ep, transport.clone())?;
        Ok((transport, ep))
    }

    /// Resolves once `connection_made` was called (or the endpoint is
    /// lost), as asyncio's `create_datagram_endpoint` waits for it.
    pub(crate) fn wait_made(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + 'static {
        let me = self.clone();
        std::future::poll_fn(move |cx| me.life.poll_made(cx))
    }

    pub(super) fn rc(&self) -> Rc<Endpoint> {
        self.me
            .upgrade()
            .expect("a live Endpoint is owned by an Rc")
    }

    pub(super) fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        let guard = self.fd.borrow();
        guard.as_ref().map(|fd| f(fd.as_fd()))
    }

    pub(super) fn close_impl(self: &Rc<Self>) {
        if !self.life.begin_closing() {
            return;
        }
        self.stop_reading();
        if self.queue.borrow().is_empty() {
            self.schedule_lost(None);
        }
    }

    pub(super) fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.life.lost_claimed() {
            return;
        }
        let dropped = std::mem::take(&mut *self.queue.borrow_mut());
        drop(dropped);
        self.buffer_size.set(0);
        self.stop_writing();
        self.stop_reading();
        self.life.force_closing();
        self.schedule_lost(error);
    }

    pub(super) fn schedule_lost(self: &Rc<Self>, error: Option<io::Error>) {
        lifecycle::schedule_lost(self, error);
    }

    pub(super) fn report_panic(
        &self,
        what: &str,
        payload: Box<dyn std::any::Any + Send>,
    ) -> LoopError {
        let name = self
            .life
            .protocol()
            .peek(|p| p.protocol_type_name())
            .unwrap_or("<protocol in use>");
        let err = LoopError::panicked(format!("{name}.{what}()"), payload);
        self.life.lp().call_exception_handler(
            ExceptionContext::new(format!("protocol.{what}() call failed."))
                .with_error(err.clone())
                .with("transport", format!("datagram fd={}", self.raw))
                .with("protocol", name),
        );
        err
    }

    pub(super) fn start_reading(self: &Rc<Self>) {
        if self.reading.get() || self.life.state() != State::Open {
            return;
        }
        if self.ring_start_reading() {
            self.reading.set(true);
            return;
        }
        let me = self.clone();
        match self
            .life
            .lp()
            .add_reader(self.raw, move || me.on_readable())
        {
            Ok(()) => self.reading.set(true),
            Err(e) => self.force_close(Some(e.into())),
        }
    }

    /// Stops reading; on the completion path for good (every caller
    /// closes the endpoint), the receive released before the fd closes.
    pub(super) fn stop_reading(&self) {
        let was = self.reading.replace(false);
        if !self.ring_release() && was {
            let _ = self.life.lp().remove_reader(self.raw);
        }
    }

    pub(super) fn start_writing(self: &Rc<Self>) {
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
            Err(e) => self.force_close(Some(e.into())),
        }
    }

    pub(super) fn stop_writing(&self) {
        if self.writing.replace(false) {
            let _ = self.life.lp().remove_writer(self.raw);
        }
    }
}

impl LifecycleOwner for Endpoint {
    type Protocol = DynProtocol;

    fn life(&self) -> &Lifecycle<DynProtocol> {
        &self.life
    }

    fn after_made(self: &Rc<Self>) {
        self.drain_deferred();
        if self.life.state() == State::Open {
            self.start_reading();
        }
    }

    fn protocol_failed(self: &Rc<Self>, what: &str, payload: Box<dyn std::any::Any + Send>) {
        let err = self.report_panic(what, payload);
        self.force_close(Some(io::Error::other(err.to_string())));
    }

    fn deliver_lost(self: &Rc<Self>, protocol: &DynProtocol, error: Option<io::Error>) {
        // Whatever is still owed to the protocol comes first.
        self.drain_deferred();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_call(|p| p.connection_lost(error))
        }));
        if let Err(payload) = outcome {
            self.report_panic("connection_lost", payload);
        }
    }

    fn close_resources(&self) {
        self.stop_reading();
        self.stop_writing();
        let fd = self.fd.borrow_mut().take();
        drop(fd);
        let path = self.owned_path.borrow_mut().take();
        drop(path);
        let queue = std::mem::take(&mut *self.queue.borrow_mut());
        drop(queue);
        self.buffer_size.set(0);
        self.flow.clear();
    }
}

impl LifeProtocol for DynProtocol {
    type Handle = DatagramTransport;

    fn in_use(&self) -> bool {
        ProtocolCell::in_use(self)
    }

    fn when_free(&self, f: impl FnOnce() + 'static) {
        ProtocolCell::when_free(self, f)
    }

    fn offer_made(&self, transport: DatagramTransport) -> Made<DatagramTransport> {
        lifecycle::offer_made_with(transport, |arg| {
            self.try_call(|p| {
                if let Some(t) = arg.take() {
                    p.connection_made(t)
                }
            })
        })
    }
}

impl crate::lifecycle::Released for DynProtocol {
    fn released() -> DynProtocol {
        Rc::new(ProtocolCell::new(Released))
    }
}

/// What a lost endpoint holds instead of its protocol: nothing to call.
struct Released;

impl DatagramProtocol for Released {
    fn datagram_received(&mut self, _: &[u8], _: SockAddr) {}
}
