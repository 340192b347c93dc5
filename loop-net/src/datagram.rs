//! Datagram endpoints: [`DatagramProtocol`] and [`DatagramTransport`]
//! (asyncio's `DatagramProtocol` and its selector datagram transport), over
//! UDP and Unix datagram sockets.
//!
//! This module holds the protocol trait, the transport handle and the
//! endpoint's state; its child modules hold the endpoint's lifecycle
//! (datagram/endpoint.rs), its read path (datagram/recv.rs; on io_uring,
//! datagram/completion.rs) and its send
//! queue with the flow control and the notices (datagram/send.rs).
//!
//! # Lifecycle
//! [`Lifecycle`](crate::lifecycle)'s states and rules. `close()` stops
//! reading; the queued datagrams are still sent, then `connection_lost(None)`
//! is scheduled. `abort()` drops the queue and schedules it at once; so
//! does a fatal error (a watcher that cannot be registered, a panic in
//! `connection_made`). When it has run, the socket is closed and a Unix
//! socket file this endpoint bound is removed. `sendto` after `close()`
//! drops the datagram and counts it
//! ([`DatagramTransport::sends_after_close`]): never an error, never a
//! panic.
//!
//! # Errors do not close the endpoint
//! As in asyncio, a failed send or receive (`ECONNREFUSED` after an ICMP
//! port unreachable on a connected endpoint, `EMSGSIZE`, `ENOBUFS`, ...) goes
//! to the protocol's `error_received` and the endpoint keeps working. The
//! datagram that failed is dropped. A panic in `datagram_received`,
//! `error_received`, `pause_writing` or `resume_writing` is reported to the
//! exception handler and the endpoint keeps working too (one bad datagram
//! must not take a server down); a panic in `connection_made` is fatal.

pub(crate) mod ext;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use loop_core::{ErrorKind, EventLoop, LoopError};
use rustix::net::SocketAddrAny;

use crate::addr::SockAddr;
use crate::flow::WriteFlow;
use crate::lifecycle::{LifeState as State, Lifecycle};
use crate::protocol::{ProtocolCell, ProtocolHandle};
use crate::transport::ExtraInfo;
use crate::write_buffer::WriteBufferLimits;

mod completion;
mod endpoint;
mod recv;
mod send;

pub(crate) use crate::owned_path::OwnedPath;
pub(crate) use endpoint::Prepared;

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
    /// unnamed Unix sender's address is the empty path. By default it is
    /// dropped (asyncio's `DatagramProtocol.datagram_received` does
    /// nothing), so a protocol that overrides nothing is valid.
    #[doc(alias = "DatagramProtocol.datagram_received")]
    fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
        let _ = (data, addr);
    }

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

    /// The protocol's type name, which the report of a panic in one of its
    /// methods names. The default, [`std::any::type_name`] of the
    /// implementing type, needs no override.
    fn protocol_type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// Lets a `ProtocolHandle<P>` be given where a type-erased datagram
/// protocol is expected ([`DatagramTransport::set_protocol`]).
impl<P: DatagramProtocol> From<ProtocolHandle<P>> for ProtocolHandle<dyn DatagramProtocol> {
    fn from(h: ProtocolHandle<P>) -> Self {
        ProtocolHandle { cell: h.cell }
    }
}

type DynProtocol = Rc<ProtocolCell<dyn DatagramProtocol>>;

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

pub(crate) struct Endpoint {
    me: Weak<Endpoint>,
    /// The state, the protocol and the loop (lifecycle.rs).
    life: Lifecycle<DynProtocol>,
    /// The multishot receive on the io_uring backend (completion.rs);
    /// released before `fd` closes.
    ring: RefCell<Option<loop_core::UringDatagram>>,
    /// Datagrams received by completion while the protocol was in use.
    stash: RefCell<VecDeque<completion::Stashed>>,
    fd: RefCell<Option<OwnedFd>>,
    raw: RawFd,
    queue: RefCell<VecDeque<Queued>>,
    /// Bytes queued, plus [`DATAGRAM_OVERHEAD`] per datagram.
    buffer_size: Cell<usize>,
    /// Water marks and the notices owed (flow.rs).
    flow: WriteFlow<Notice>,
    reading: Cell<bool>,
    writing: Cell<bool>,
    sends_after_close: Cell<u64>,
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
    /// ([`sends_after_close`](Self::sends_after_close)); never an error. The
    /// 5th dropped one logs asyncio's warning "socket.send() raised
    /// exception." once (through the `log` crate, target `aioloop`, or to
    /// stderr).
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
        self.inner.life.state() != State::Open
    }

    /// Replaces the protocol. If writing is paused, the new protocol gets
    /// `pause_writing` at once, so that the `resume_writing` it later gets is
    /// paired.
    #[doc(alias = "BaseTransport.set_protocol")]
    pub fn set_protocol(&self, protocol: impl Into<ProtocolHandle<dyn DatagramProtocol>>) {
        let new = protocol.into().cell;
        let old = self.inner.life.replace_protocol(new);
        drop(old);
        if self.inner.flow.is_paused() {
            self.inner.notify(Notice::Pause);
        }
    }

    /// The current protocol. Once `connection_lost` has run, the endpoint
    /// has let go of it (as asyncio sets it to `None`) and this is an inert
    /// placeholder.
    #[doc(alias = "BaseTransport.get_protocol")]
    pub fn get_protocol(&self) -> ProtocolHandle<dyn DatagramProtocol> {
        ProtocolHandle {
            cell: self.inner.life.protocol(),
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
        let l = self.inner.flow.limits();
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
        self.inner.flow.set_limits(limits);
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

    /// The loop the endpoint runs on; `None` once `connection_lost` has
    /// run (asyncio's transport sets its `_loop` to `None` then), so an
    /// endpoint kept after that does not keep its loop alive.
    pub fn get_loop(&self) -> Option<EventLoop> {
        self.inner.life.get_loop()
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
