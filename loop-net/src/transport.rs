//! [`Transport`]: the handle a protocol writes to, as in asyncio.
//!
//! One handle type serves every stream-like transport (TCP, Unix sockets;
//! TLS and pipes later), each kind behind the internal `TransportImpl`
//! trait. The handle is a cheap `Clone` (an `Rc`); it stays valid after the
//! connection is lost, when writes are ignored and counted as asyncio does.

use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;

use loop_core::{ErrorKind, EventLoop, LoopError};

use crate::addr::SockAddr;
use crate::protocol::AnyProtocol;
use crate::write_buffer::WriteBufferLimits;

/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`: the dropped
/// write that logs the warning.
pub(crate) const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u64 = 5;

/// Counts one write dropped because the transport is closing or lost; the
/// 5th logs asyncio's `warning` (once per transport: asyncio repeats it on
/// every later one). Socket transports say "socket.send() raised
/// exception.", the write pipe "pipe closed by peer or os.write(pipe, data)
/// raised exception.".
pub(crate) fn count_dropped_write(counter: &std::cell::Cell<u64>, warning: &str) {
    let n = counter.get().saturating_add(1);
    counter.set(n);
    if n == LOG_THRESHOLD_FOR_CONNLOST_WRITES {
        loop_core::debug::warn(warning);
    }
}

/// A buffer given to [`Transport::write_owned`], boxed.
pub(crate) type OwnedBuf = Box<dyn AsRef<[u8]>>;

/// What a kind of transport implements; [`Transport`] forwards to it.
pub(crate) trait TransportImpl {
    fn write(&self, data: &[u8]) -> Result<(), LoopError>;
    /// [`Transport::write_owned`]: by default the bytes are copied, as
    /// `write` does; a kind that can keep the buffer overrides it.
    fn write_owned(&self, data: OwnedBuf) -> Result<(), LoopError> {
        self.write(AsRef::<[u8]>::as_ref(&*data))
    }
    fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError>;
    fn write_eof(&self) -> Result<(), LoopError>;
    fn can_write_eof(&self) -> bool;
    fn close(&self);
    fn abort(&self);
    fn is_closing(&self) -> bool;
    fn set_protocol(&self, protocol: AnyProtocol);
    fn get_protocol(&self) -> AnyProtocol;
    fn pause_reading(&self);
    fn resume_reading(&self);
    fn is_reading(&self) -> bool;
    fn write_buffer_size(&self) -> usize;
    fn write_buffer_limits(&self) -> WriteBufferLimits;
    fn set_write_buffer_limits(&self, limits: WriteBufferLimits);
    fn extra_info(&self, name: &str) -> Option<ExtraInfo>;
    fn get_loop(&self) -> Option<EventLoop>;
    fn writes_after_lost(&self) -> u64;
    /// Bytes of the write buffer that a forced close (abort, error) dropped
    /// unsent; 0 while open, after a clean close, and for read-only kinds.
    fn dropped_on_loss(&self) -> usize {
        0
    }
    /// What `loop.sendfile` may use of this transport
    /// (sendfile/transport.rs); `None`: sendfile is not supported.
    fn sendfile_support(&self) -> Option<&dyn crate::sendfile::transport::SendfileSupport> {
        None
    }
    /// `start_tls`: the socket stream transport behind this handle, whose
    /// socket an upgrade may take over (tls.rs); `None` for other kinds.
    #[cfg(feature = "tls")]
    fn upgrade_hook(&self) -> Option<Rc<crate::stream::Stream>> {
        None
    }
}

/// A value of [`Transport::get_extra_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtraInfo {
    /// `"peername"` / `"sockname"`: a socket address.
    Addr(SockAddr),
    /// `"socket"`: the transport's file descriptor (owned by the transport;
    /// do not close it, and do not `add_reader` on it).
    Fd(RawFd),
    /// Bytes: TLS's `"peercert"` (the peer's certificate, DER) and
    /// `"alpn_protocol"`.
    Bytes(Vec<u8>),
    /// Text: TLS's `"version"` / `"protocol"` (`"TLSv1.3"`) and
    /// `"server_hostname"`.
    Text(String),
    /// TLS's `"peercert_chain"`: the peer's certificates, leaf first, DER.
    Certificates(Vec<Vec<u8>>),
    /// TLS's `"cipher"`.
    #[cfg(feature = "tls")]
    Cipher(crate::tls::CipherInfo),
    /// TLS's `"sslcontext"`: the configuration the connection was made with.
    #[cfg(feature = "tls")]
    TlsConfig(crate::tls::TlsConfig),
}

/// Prints the value the way asyncio's `repr` of it reads to a person: an
/// address as `127.0.0.1:39574`, a file descriptor as its number, text as it
/// is, bytes as text when they are printable ASCII (an ALPN protocol: `h2`)
/// and as lowercase hex otherwise (a DER certificate), a certificate chain as
/// its length, the cipher as `name (protocol, N bits)`, a TLS configuration
/// as which side it configures.
///
/// ```
/// use loop_net::{ExtraInfo, SockAddr};
/// use std::net::SocketAddr;
/// let peer = ExtraInfo::Addr(SockAddr::from("127.0.0.1:39574".parse::<SocketAddr>().unwrap()));
/// assert_eq!(peer.to_string(), "127.0.0.1:39574");
/// assert_eq!(ExtraInfo::Bytes(b"h2".to_vec()).to_string(), "h2");
/// assert_eq!(ExtraInfo::Bytes(vec![0x30, 0x82]).to_string(), "3082");
/// ```
impl fmt::Display for ExtraInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtraInfo::Addr(a) => fmt::Display::fmt(a, f),
            ExtraInfo::Fd(fd) => fmt::Display::fmt(fd, f),
            ExtraInfo::Bytes(b) if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic()) => {
                // Checked: printable ASCII is UTF-8.
                f.write_str(std::str::from_utf8(b).map_err(|_| fmt::Error)?)
            }
            ExtraInfo::Bytes(b) => b.iter().try_for_each(|c| write!(f, "{c:02x}")),
            ExtraInfo::Text(t) => f.write_str(t),
            ExtraInfo::Certificates(chain) => write!(f, "{} certificate(s), DER", chain.len()),
            #[cfg(feature = "tls")]
            ExtraInfo::Cipher(c) => fmt::Display::fmt(c, f),
            #[cfg(feature = "tls")]
            ExtraInfo::TlsConfig(crate::tls::TlsConfig::Client(_)) => {
                f.write_str("TLS client configuration")
            }
            #[cfg(feature = "tls")]
            ExtraInfo::TlsConfig(crate::tls::TlsConfig::Server(_)) => {
                f.write_str("TLS server configuration")
            }
        }
    }
}

/// A connection's transport: write to it, close it, pause it (asyncio's
/// `Transport`, the union of `ReadTransport` and `WriteTransport`).
#[doc(alias = "asyncio.Transport")]
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Rc<dyn TransportImpl>,
}

impl Transport {
    /// Writes `data`: sent at once as far as the socket takes it, the rest
    /// buffered and sent when the socket is writable. Never blocks. Above the
    /// high-water mark the protocol gets `pause_writing`.
    ///
    /// Errors with `InvalidState` after [`write_eof`](Self::write_eof). After
    /// the connection is lost (closed, aborted, failed) the data is dropped
    /// and counted ([`writes_after_lost`](Self::writes_after_lost)), as in
    /// asyncio: never an error, never a panic; the 5th dropped write logs
    /// asyncio's warning once ("socket.send() raised exception.", a write
    /// pipe's "pipe closed by peer or os.write(pipe, data) raised
    /// exception."), through the `log` crate (target `aioloop`) or to
    /// stderr.
    #[doc(alias = "WriteTransport.write")]
    pub fn write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.inner.write(data)
    }

    /// Writes `data`, a buffer the transport may keep instead of copying
    /// it: asyncio's `write(data)` as uvloop does it for a `bytes` object,
    /// which it keeps by reference. What the kernel does not take at once
    /// is buffered, as with [`write`](Self::write), with the same
    /// errors, flow control and water marks; the difference is only the
    /// copy.
    ///
    /// A write pipe (`connect_write_pipe`, a child's stdin) keeps `data`
    /// until its last byte is written (a rest under 4 KiB is copied
    /// instead) and drops it then, or at `abort`, or when the connection is
    /// lost. The other transports copy the rest, as `write` does. Meant for
    /// large buffers that would otherwise be copied: an `Rc<[u8]>` shared
    /// by many writes, a `Vec<u8>` the caller is done with. Costs one small
    /// allocation (the box) per call.
    #[doc(alias = "WriteTransport.write")]
    pub fn write_owned<B: AsRef<[u8]> + 'static>(&self, data: B) -> Result<(), LoopError> {
        self.inner.write_owned(Box::new(data))
    }

    /// Writes several buffers, with one vectored system call when the socket
    /// takes them.
    #[doc(alias = "WriteTransport.writelines")]
    pub fn writelines(&self, chunks: &[&[u8]]) -> Result<(), LoopError> {
        self.inner.writelines(chunks)
    }

    /// Closes the writing side after the buffered data is sent (a TCP
    /// half-close); reading goes on.
    #[doc(alias = "WriteTransport.write_eof")]
    pub fn write_eof(&self) -> Result<(), LoopError> {
        self.inner.write_eof()
    }

    /// Whether [`write_eof`](Self::write_eof) is supported (true for TCP and
    /// Unix sockets).
    #[doc(alias = "WriteTransport.can_write_eof")]
    pub fn can_write_eof(&self) -> bool {
        self.inner.can_write_eof()
    }

    /// Closes the transport: reading stops now; the buffered data is sent;
    /// then the protocol's `connection_lost(None)` is called (through the
    /// loop, never from inside `close`). Idempotent.
    #[doc(alias = "BaseTransport.close")]
    pub fn close(&self) {
        self.inner.close()
    }

    /// Closes at once, dropping the buffered data; `connection_lost(None)`
    /// follows through the loop.
    #[doc(alias = "WriteTransport.abort")]
    pub fn abort(&self) {
        self.inner.abort()
    }

    /// Whether the transport is closing or closed.
    #[doc(alias = "BaseTransport.is_closing")]
    pub fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    /// Replaces the protocol. If writing is paused, the new protocol gets
    /// `pause_writing` at once, so that the `resume_writing` it later gets is
    /// paired.
    #[doc(alias = "BaseTransport.set_protocol")]
    pub fn set_protocol(&self, protocol: impl Into<AnyProtocol>) {
        self.inner.set_protocol(protocol.into())
    }

    /// The current protocol. Once `connection_lost` has run, the transport
    /// has let go of it (as asyncio sets it to `None`, so that a protocol
    /// keeping its transport is not leaked with it) and this is an inert
    /// placeholder.
    #[doc(alias = "BaseTransport.get_protocol")]
    pub fn get_protocol(&self) -> AnyProtocol {
        self.inner.get_protocol()
    }

    /// Stops calling the protocol's `data_received` until
    /// [`resume_reading`](Self::resume_reading). Idempotent.
    #[doc(alias = "ReadTransport.pause_reading")]
    pub fn pause_reading(&self) {
        self.inner.pause_reading()
    }

    /// Resumes reading. Idempotent.
    #[doc(alias = "ReadTransport.resume_reading")]
    pub fn resume_reading(&self) {
        self.inner.resume_reading()
    }

    /// Whether the transport is reading.
    #[doc(alias = "ReadTransport.is_reading")]
    pub fn is_reading(&self) -> bool {
        self.inner.is_reading()
    }

    /// Bytes buffered in user space and not yet accepted by the kernel (the
    /// kernel's own socket buffer is not counted).
    #[doc(alias = "WriteTransport.get_write_buffer_size")]
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.write_buffer_size()
    }

    /// The `(low, high)` water marks, in asyncio's order.
    #[doc(alias = "WriteTransport.get_write_buffer_limits")]
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        let l = self.inner.write_buffer_limits();
        (l.low, l.high)
    }

    /// Sets the water marks with asyncio's defaults (see
    /// [`WriteBufferLimits::new`]); `high < low` is `InvalidArgument`.
    #[doc(alias = "WriteTransport.set_write_buffer_limits")]
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LoopError> {
        let limits = WriteBufferLimits::new(high, low)
            .map_err(|m| LoopError::new(ErrorKind::InvalidArgument, m))?;
        self.inner.set_write_buffer_limits(limits);
        Ok(())
    }

    /// asyncio's `get_extra_info(name)`: `"peername"`, `"sockname"`,
    /// `"socket"`. Unknown names give `None`.
    #[doc(alias = "BaseTransport.get_extra_info")]
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.inner.extra_info(name)
    }

    /// The peer's address (`get_extra_info("peername")`).
    pub fn peername(&self) -> Option<SockAddr> {
        match self.inner.extra_info("peername")? {
            ExtraInfo::Addr(a) => Some(a),
            _ => None,
        }
    }

    /// The local address (`get_extra_info("sockname")`).
    pub fn sockname(&self) -> Option<SockAddr> {
        match self.inner.extra_info("sockname")? {
            ExtraInfo::Addr(a) => Some(a),
            _ => None,
        }
    }

    /// The socket's fd while the transport owns one (`get_extra_info("socket")`).
    pub fn fd(&self) -> Option<RawFd> {
        match self.inner.extra_info("socket")? {
            ExtraInfo::Fd(fd) => Some(fd),
            _ => None,
        }
    }

    /// How many writes were dropped because the connection was already lost.
    pub fn writes_after_lost(&self) -> u64 {
        self.inner.writes_after_lost()
    }

    /// Bytes that were buffered and never sent because the connection was
    /// aborted or failed (0 while open and after a clean close): what a
    /// writer's flush reports as undelivered. Not in asyncio.
    pub fn dropped_on_loss(&self) -> usize {
        self.inner.dropped_on_loss()
    }

    /// The loop the transport runs on; `None` once `connection_lost` has
    /// run (asyncio's transport sets its `_loop` to `None` then): a
    /// transport kept after its connection is lost does not keep its loop
    /// alive.
    pub fn get_loop(&self) -> Option<EventLoop> {
        self.inner.get_loop()
    }

    /// Whether two handles are the same transport.
    pub fn ptr_eq(&self, other: &Transport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("fd", &self.fd())
            .field("closing", &self.is_closing())
            .field("write_buffer", &self.get_write_buffer_size())
            .finish()
    }
}
