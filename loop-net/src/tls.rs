//! TLS for stream connections (feature `tls`): asyncio's `ssl=` arguments of
//! `create_connection` / `create_server` / the Unix variants, and
//! `loop.start_tls`, on rustls with the ring provider.
//!
//! # The API at a glance
//!
//! | asyncio | here |
//! |---|---|
//! | `create_connection(..., ssl=ctx, server_hostname=, ssl_handshake_timeout=, ssl_shutdown_timeout=)` | [`ConnectOptions::tls`](crate::ConnectOptions::tls) = `Some(`[`TlsClientOptions`]`)` |
//! | `create_server(..., ssl=ctx, ssl_handshake_timeout=, ssl_shutdown_timeout=)`, `create_unix_server(..., ssl=)` | [`ServerOptions::tls`](crate::ServerOptions::tls) = `Some(`[`TlsServerOptions`]`)` |
//! | `create_unix_connection(..., ssl=ctx, server_hostname=)` | [`TlsLoopExt::create_unix_connection_tls`] |
//! | `connect_accepted_socket(..., ssl=ctx)` | [`TlsLoopExt::connect_accepted_socket_tls`] |
//! | `await loop.start_tls(transport, protocol, ctx, server_side=, server_hostname=, ...)` | [`TlsLoopExt::start_tls`] (the side is the config's: [`TlsOptions::Client`] / [`TlsOptions::Server`]) |
//! | `ssl.SSLContext` | [`rustls::ClientConfig`] / [`rustls::ServerConfig`] in an `Arc` (re-exported as [`crate::rustls`]) |
//! | `transport.get_extra_info("peercert" / "cipher" / "sslcontext" / ...)` | the same names (see [`Transport::get_extra_info`]), and typed accessors: [`Transport::peer_certificate`], [`Transport::cipher`], [`Transport::tls_version`], [`Transport::alpn_protocol`], [`Transport::tls_config`] |
//! | `ssl.SSLError`, `SSLCertVerificationError` | an [`io::Error`] of kind `InvalidData` whose source is the [`rustls::Error`] (`e.get_ref()` and `downcast_ref::<rustls::Error>()`) |
//! | handshake timeout (`ConnectionAbortedError` in asyncio) | an [`io::Error`] of kind `TimedOut` |
//! | the peer's FIN during the handshake (`ConnectionResetError`) | an [`io::Error`] of kind `ConnectionReset` |
//! | `ValueError` for a timeout `<= 0` | an [`io::Error`] of kind `InvalidInput` from the options' builder methods ([`TlsClientOptions::handshake_timeout`], ...), and, for a zero set in the public fields, from `create_connection`, `create_server`, `start_tls`, `connect_accepted_socket_tls` before anything is connected |
//! | `server_hostname=''` (no SNI; name matching off) | [`TlsClientOptions::server_hostname`]`("")`: no SNI is sent; name matching is the configuration's verifier's (see there): off with [`TlsClientOptions::from_ca_file_without_hostname_check`] (`check_hostname = False`) |
//!
//! A TLS connection is a [`Transport`] like any other: the same methods,
//! flow control and lifecycle as the socket stream transport, with these
//! differences (asyncio's SSL transport behaves the same way):
//!
//! - `connection_made` is called once the handshake has completed; a
//!   handshake that fails or times out closes the socket and calls nothing
//!   on the protocol. The client's `create_connection` returns the error;
//!   a server reports it to the exception handler in debug mode only (as
//!   asyncio: a port scanner must not flood the log), and
//!   `Server::wait_closed` does not wait for the failed connection.
//! - `close()` stops delivering data at once, flushes the buffer, sends
//!   `close_notify`, half-closes the socket, and waits (at most
//!   `shutdown_timeout`) for the peer's `close_notify` or EOF before
//!   `connection_lost`, discarding what arrives meanwhile: closing the
//!   socket with unread bytes would make the kernel send a reset, which can
//!   destroy the last bytes we sent before the peer read them. If the peer
//!   does not answer within `shutdown_timeout`, the transport is closed and
//!   `connection_lost` gets a `TimedOut` error (asyncio's `TimeoutError`).
//! - The peer's `close_notify` is the EOF: `eof_received` is called; as in
//!   asyncio, returning `true` has no effect (a warning is logged, "returning
//!   true from eof_received() has no effect when using ssl", and the
//!   transport closes).
//!   A TCP EOF without `close_notify` (a truncation) is an error:
//!   `connection_lost(Some(UnexpectedEof))`.
//! - `write_eof()` sends `close_notify` and keeps reading: TLS 1.3 only
//!   ([`can_write_eof`](Transport::can_write_eof) is true once TLS 1.3 was
//!   negotiated); TLS 1.2 has no half-close, and `write_eof` is an
//!   `InvalidState` error there.
//! - `get_write_buffer_size()` counts the encrypted bytes waiting for the
//!   socket (plaintext is encrypted as soon as it is written; before the
//!   handshake completes, the plaintext waiting for it is counted too).
//!
//! ```
//! use std::sync::Arc;
//! use loop_net::rustls;
//! use loop_net::{ConnectOptions, ServerOptions, TlsClientOptions, TlsServerOptions};
//!
//! // The configurations come from your certificates (see rustls' docs);
//! // this only shows where they go.
//! fn options(
//!     server: Arc<rustls::ServerConfig>,
//!     client: Arc<rustls::ClientConfig>,
//! ) -> (ServerOptions, ConnectOptions) {
//!     let server = ServerOptions { tls: Some(TlsServerOptions::new(server)), ..Default::default() };
//!     let client = ConnectOptions {
//!         tls: Some(TlsClientOptions::new(client).server_hostname("localhost")),
//!         ..Default::default()
//!     };
//!     (server, client)
//! }
//! # let _ = options;
//! ```
//!
//! # start_tls
//!
//! [`TlsLoopExt::start_tls`] upgrades a live TCP or Unix stream transport:
//! it stops reading from it, waits until its write buffer has drained (the
//! protocol may get the `resume_writing` that pairs an earlier
//! `pause_writing` meanwhile), takes its socket over, and runs the handshake
//! on the same socket. The old transport then delivers nothing more: it is
//! closing, its writes are dropped and counted, and its `close`/`abort` act
//! on the new transport (so `Server::close_clients` still reaches an
//! upgraded connection). The protocol given to `start_tls` is not told
//! `connection_made` (asyncio's `call_connection_made=False`): keep the
//! returned transport. Bytes the old protocol already received that belong
//! to the TLS stream (a ClientHello pipelined right behind `STARTTLS`) are
//! handed over with [`TlsLoopExt::start_tls_with_data`]; bytes still in the
//! kernel's socket buffer are read by the TLS layer.

mod stream;

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use loop_core::EventLoop;
use rustls::pki_types::ServerName;

mod anchor;
mod pem;

use crate::addr::SockAddr;
use crate::protocol::AnyProtocol;
use crate::stream::connect::{given, IntoProtocol};
use crate::stream::server::Starter;
use crate::tls::stream::{Settings, TlsStream};
use crate::transport::{ExtraInfo, Transport};

/// asyncio's `SSL_HANDSHAKE_TIMEOUT`: 60 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// asyncio's `SSL_SHUTDOWN_TIMEOUT`: 30 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The client side of TLS: asyncio's `ssl=` (a client context),
/// `server_hostname=`, `ssl_handshake_timeout=` and `ssl_shutdown_timeout=`.
#[derive(Clone, Debug)]
pub struct TlsClientOptions {
    /// The client configuration (asyncio's `SSLContext`): trusted roots,
    /// ALPN protocols, client certificate, versions.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must match, and the SNI sent
    /// (`server_hostname=`). `None`: the host given to `create_connection`
    /// (an error when there is none, as in asyncio). An IP address is
    /// matched against the certificate's IP addresses.
    ///
    /// `Some("")` (asyncio's `server_hostname=''`) sends no SNI. It does not
    /// by itself turn name matching off, which is insecure: in rustls that
    /// is the configuration's certificate verifier's business (as
    /// `check_hostname` is the `SSLContext`'s in Python, whose `ssl` module
    /// refuses a missing name while `check_hostname` is on). The verifier
    /// gets the host given to `create_connection` as the name, or, without
    /// one, the unspecified address `0.0.0.0`, which no certificate names:
    /// to connect without name matching, build the options with
    /// [`from_ca_file_without_hostname_check`](Self::from_ca_file_without_hostname_check)
    /// (Python's `check_hostname = False`), or install a verifier that
    /// ignores the name (rustls' `ClientConfig::dangerous()`), knowing that
    /// it allows a man-in-the-middle.
    pub server_hostname: Option<String>,
    /// How long the handshake may take before the connection is aborted
    /// with a `TimedOut` error (`ssl_handshake_timeout=`, default 60 s).
    /// Zero is refused (by [`handshake_timeout`](Self::handshake_timeout),
    /// and, set here, by the call that takes the options).
    #[doc(alias = "ssl_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// How long `close()` may wait for the flush and the peer's
    /// `close_notify` before it aborts the connection
    /// (`ssl_shutdown_timeout=`, default 30 s). Zero is refused as for
    /// [`handshake_timeout`](Self::handshake_timeout).
    #[doc(alias = "ssl_shutdown_timeout")]
    pub shutdown_timeout: Duration,
}

impl TlsClientOptions {
    /// Options with `config` and asyncio's defaults for the rest.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        TlsClientOptions {
            config,
            server_hostname: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Sets [`server_hostname`](Self::server_hostname).
    pub fn server_hostname(mut self, name: impl Into<String>) -> Self {
        self.server_hostname = Some(name.into());
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout); zero is an
    /// `InvalidInput` error (asyncio's `ValueError`, "ssl_handshake_timeout
    /// should be a positive number, got 0").
    #[doc(alias = "ssl_handshake_timeout")]
    pub fn handshake_timeout(mut self, timeout: Duration) -> io::Result<Self> {
        check_timeout("ssl_handshake_timeout", timeout)?;
        self.handshake_timeout = timeout;
        Ok(self)
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout); zero is an
    /// `InvalidInput` error, as for
    /// [`handshake_timeout`](Self::handshake_timeout).
    #[doc(alias = "ssl_shutdown_timeout")]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> io::Result<Self> {
        check_timeout("ssl_shutdown_timeout", timeout)?;
        self.shutdown_timeout = timeout;
        Ok(self)
    }
}

/// The server side of TLS: asyncio's `ssl=` (a server context),
/// `ssl_handshake_timeout=` and `ssl_shutdown_timeout=`.
#[derive(Clone, Debug)]
pub struct TlsServerOptions {
    /// The server configuration (asyncio's `SSLContext`): certificate chain
    /// and key, client authentication, ALPN protocols, versions.
    pub config: Arc<rustls::ServerConfig>,
    /// As [`TlsClientOptions::handshake_timeout`] (default 60 s).
    #[doc(alias = "ssl_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// As [`TlsClientOptions::shutdown_timeout`] (default 30 s).
    #[doc(alias = "ssl_shutdown_timeout")]
    pub shutdown_timeout: Duration,
}

impl TlsServerOptions {
    /// Options with `config` and asyncio's defaults for the rest.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServerOptions {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout); zero is an
    /// `InvalidInput` error (asyncio's `ValueError`, "ssl_handshake_timeout
    /// should be a positive number, got 0").
    #[doc(alias = "ssl_handshake_timeout")]
    pub fn handshake_timeout(mut self, timeout: Duration) -> io::Result<Self> {
        check_timeout("ssl_handshake_timeout", timeout)?;
        self.handshake_timeout = timeout;
        Ok(self)
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout); zero is an
    /// `InvalidInput` error, as for
    /// [`handshake_timeout`](Self::handshake_timeout).
    #[doc(alias = "ssl_shutdown_timeout")]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> io::Result<Self> {
        check_timeout("ssl_shutdown_timeout", timeout)?;
        self.shutdown_timeout = timeout;
        Ok(self)
    }
}

/// Which side of TLS [`TlsLoopExt::start_tls`] takes: asyncio's
/// `server_side=` is the variant.
#[derive(Clone, Debug)]
pub enum TlsOptions {
    /// Client side (`server_side=False`).
    Client(TlsClientOptions),
    /// Server side (`server_side=True`).
    Server(TlsServerOptions),
}

impl From<TlsClientOptions> for TlsOptions {
    fn from(o: TlsClientOptions) -> Self {
        TlsOptions::Client(o)
    }
}

impl From<TlsServerOptions> for TlsOptions {
    fn from(o: TlsServerOptions) -> Self {
        TlsOptions::Server(o)
    }
}

/// A TLS transport's configuration (`get_extra_info("sslcontext")`).
/// Two values are equal when they hold the same `Arc`.
#[derive(Clone, Debug)]
pub enum TlsConfig {
    /// A client connection's configuration.
    Client(Arc<rustls::ClientConfig>),
    /// A server connection's configuration.
    Server(Arc<rustls::ServerConfig>),
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TlsConfig::Client(a), TlsConfig::Client(b)) => Arc::ptr_eq(a, b),
            (TlsConfig::Server(a), TlsConfig::Server(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for TlsConfig {}

/// The negotiated cipher suite (`get_extra_info("cipher")`, asyncio's
/// `(name, protocol, secret_bits)` tuple).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CipherInfo {
    /// The suite's name as rustls spells it, e.g.
    /// `"TLS13_AES_256_GCM_SHA384"` or
    /// `"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"`.
    pub name: String,
    /// The protocol version: `"TLSv1.3"` or `"TLSv1.2"`.
    pub protocol: String,
    /// The symmetric key's size in bits (128 or 256).
    pub secret_bits: u32,
}

impl fmt::Display for CipherInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {} bits)",
            self.name, self.protocol, self.secret_bits
        )
    }
}

/// Typed accessors of a TLS transport's `get_extra_info` values; each is
/// `None` on a transport that is not TLS (or before the handshake).
impl Transport {
    /// The peer's certificate, DER-encoded (`get_extra_info("peercert")`;
    /// asyncio decodes it into a dict, parse it with an X.509 crate).
    #[doc(alias = "peercert")]
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self.inner.extra_info("peercert")? {
            ExtraInfo::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The peer's certificate chain as sent, leaf first, each DER-encoded
    /// (`get_extra_info("peercert_chain")`).
    pub fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        match self.inner.extra_info("peercert_chain")? {
            ExtraInfo::Certificates(c) => Some(c),
            _ => None,
        }
    }

    /// The negotiated cipher suite (`get_extra_info("cipher")`).
    pub fn cipher(&self) -> Option<CipherInfo> {
        match self.inner.extra_info("cipher")? {
            ExtraInfo::Cipher(c) => Some(c),
            _ => None,
        }
    }

    /// The negotiated protocol version, `"TLSv1.3"` or `"TLSv1.2"`
    /// (`get_extra_info("version")`, as Python's `SSLObject.version()`).
    #[doc(alias = "SSLObject.version")]
    pub fn tls_version(&self) -> Option<String> {
        match self.inner.extra_info("version")? {
            ExtraInfo::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The protocol chosen by ALPN, if any (`get_extra_info("alpn_protocol")`,
    /// Python's `selected_alpn_protocol()`).
    #[doc(alias = "selected_alpn_protocol")]
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        match self.inner.extra_info("alpn_protocol")? {
            ExtraInfo::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The configuration the connection was made with
    /// (`get_extra_info("sslcontext")`).
    #[doc(alias = "sslcontext")]
    pub fn tls_config(&self) -> Option<TlsConfig> {
        match self.inner.extra_info("sslcontext")? {
            ExtraInfo::TlsConfig(c) => Some(c),
            _ => None,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's TLS methods that have no plain-socket counterpart to carry
/// their options: `start_tls`, and the TLS forms of
/// `create_unix_connection` and `connect_accepted_socket` (TCP connections
/// and every server take TLS through [`ConnectOptions::tls`] and
/// [`ServerOptions::tls`]).
///
/// [`ConnectOptions::tls`]: crate::ConnectOptions::tls
/// [`ServerOptions::tls`]: crate::ServerOptions::tls
pub trait TlsLoopExt: sealed::Sealed {
    /// Upgrades a live TCP or Unix stream transport to TLS and returns the
    /// new transport, once the handshake has completed (asyncio's
    /// `await loop.start_tls(transport, protocol, sslcontext, server_side=,
    /// server_hostname=, ssl_handshake_timeout=, ssl_shutdown_timeout=)`).
    ///
    /// `protocol` receives the TLS connection's data; it is not told
    /// `connection_made` (as in asyncio), so keep the returned transport.
    /// The old transport stops reading at once; its buffered bytes are
    /// flushed first; after the upgrade it delivers nothing (see the
    /// [module docs](crate::tls)). If writing was paused, the old protocol gets
    /// its `resume_writing` while the buffer drains, before the upgrade: the
    /// TLS transport starts unpaused, and its protocol never sees an
    /// unpaired `resume_writing`. The write-buffer limits carry over.
    ///
    /// Errors: the transport is not a socket stream transport or TLS
    /// already (`InvalidInput`), it is closing or half-closed
    /// (`NotConnected`), a `sendfile` or another `start_tls` is under way
    /// on it (a [`LoopError`](loop_core::LoopError) of kind `InvalidState`:
    /// `sendfile(2)` writes plain bytes on the socket until it ends), the
    /// connection fails while draining, or the
    /// handshake fails or times out (the socket is then closed). Dropping
    /// the future before it resolves aborts the new connection.
    #[doc(alias = "loop.start_tls")]
    fn start_tls(
        &self,
        transport: &Transport,
        protocol: impl Into<AnyProtocol>,
        tls: impl Into<TlsOptions>,
    ) -> impl Future<Output = io::Result<Transport>> + 'static;

    /// [`start_tls`](Self::start_tls), first feeding the TLS layer `received`:
    /// bytes the old protocol already got that belong to the TLS stream (a
    /// peer may send its ClientHello in the same packet as the `STARTTLS`
    /// line, and the stream transport hands the protocol all of it). This
    /// is the fix of CPython's gh-142352 (the read-ahead of a
    /// `StreamReader` moved into the TLS layer).
    #[doc(alias = "loop.start_tls")]
    fn start_tls_with_data(
        &self,
        transport: &Transport,
        protocol: impl Into<AnyProtocol>,
        tls: impl Into<TlsOptions>,
        received: Vec<u8>,
    ) -> impl Future<Output = io::Result<Transport>> + 'static;

    /// A TLS connection over the Unix stream socket `path` (asyncio's
    /// `loop.create_unix_connection(factory, path, ssl=ctx,
    /// server_hostname=...)`). There is no host to default the name to:
    /// [`TlsClientOptions::server_hostname`] is required.
    #[doc(alias = "loop.create_unix_connection")]
    fn create_unix_connection_tls<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        path: &Path,
        tls: TlsClientOptions,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;

    /// The server side of TLS over an already accepted socket (asyncio's
    /// `loop.connect_accepted_socket(factory, sock, ssl=ctx)`); resolves
    /// after the handshake and `connection_made`.
    #[doc(alias = "loop.connect_accepted_socket")]
    fn connect_accepted_socket_tls<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        sock: OwnedFd,
        tls: TlsServerOptions,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static;
}

impl TlsLoopExt for EventLoop {
    fn start_tls(
        &self,
        transport: &Transport,
        protocol: impl Into<AnyProtocol>,
        tls: impl Into<TlsOptions>,
    ) -> impl Future<Output = io::Result<Transport>> + 'static {
        start_tls(
            self.clone(),
            transport.clone(),
            protocol.into(),
            tls.into(),
            Vec::new(),
        )
    }

    fn start_tls_with_data(
        &self,
        transport: &Transport,
        protocol: impl Into<AnyProtocol>,
        tls: impl Into<TlsOptions>,
        received: Vec<u8>,
    ) -> impl Future<Output = io::Result<Transport>> + 'static {
        start_tls(
            self.clone(),
            transport.clone(),
            protocol.into(),
            tls.into(),
            received,
        )
    }

    fn create_unix_connection_tls<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        path: &Path,
        tls: TlsClientOptions,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        let path = path.to_owned();
        async move { unix_connect_tls(&lp, factory, &path, tls).await }
    }

    fn connect_accepted_socket_tls<F: IntoProtocol>(
        &self,
        factory: impl FnOnce() -> F + 'static,
        sock: OwnedFd,
        tls: TlsServerOptions,
    ) -> impl Future<Output = io::Result<(Transport, F::Handle)>> + 'static {
        let lp = self.clone();
        async move {
            check_server(&tls)?;
            let sock = accepted_stream_socket(&lp, sock)?;
            let conn = rustls::ServerConnection::new(tls.config.clone()).map_err(tls_error)?;
            let (protocol, handle) = factory().into_protocol();
            let (transport, stream) = TlsStream::start(
                &lp,
                sock,
                rustls::Connection::Server(conn),
                protocol,
                Settings::server(&tls, true),
                None,
            )
            .map_err(|e| io::Error::from(e.error))?;
            AbortUnlessReady::new(stream).wait().await?;
            Ok((transport, handle))
        }
    }
}

async fn unix_connect_tls<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl FnOnce() -> F,
    path: &Path,
    tls: TlsClientOptions,
) -> io::Result<(Transport, F::Handle)> {
    check_client(&tls, None)?;
    let sock = unix_connect(lp, path).await?;
    connect_tls(lp, sock, factory, tls, None).await
}

/// Connects a Unix stream socket to `path` (as `create_unix_connection`).
async fn unix_connect(lp: &EventLoop, path: &Path) -> io::Result<OwnedFd> {
    if lp.is_closed() {
        return Err(loop_core::LoopError::closed().into());
    }
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    crate::sock::connect(lp, sock.as_fd(), SockAddr::Unix(path.to_path_buf())).await?;
    Ok(sock)
}

/// Checks and prepares an accepted socket (as `connect_accepted_socket`).
fn accepted_stream_socket(lp: &EventLoop, sock: OwnedFd) -> io::Result<OwnedFd> {
    if lp.is_closed() {
        return Err(loop_core::LoopError::closed().into());
    }
    given::connected(sock, given::Families::Any)
}

/// Wraps a rustls error in an [`io::Error`] of kind `InvalidData` (the
/// rustls error is its source, for `downcast_ref`).
pub(crate) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// asyncio's checks of `server_hostname` and the timeouts before anything
/// is connected.
pub(crate) fn check_client(tls: &TlsClientOptions, host: Option<&str>) -> io::Result<()> {
    check_timeouts(tls.handshake_timeout, tls.shutdown_timeout)?;
    server_name(tls, host).map(|_| ())
}

/// asyncio's checks of a server's options before anything listens.
pub(crate) fn check_server(tls: &TlsServerOptions) -> io::Result<()> {
    check_timeouts(tls.handshake_timeout, tls.shutdown_timeout)
}

fn check_timeouts(handshake: Duration, shutdown: Duration) -> io::Result<()> {
    check_timeout("ssl_handshake_timeout", handshake)?;
    check_timeout("ssl_shutdown_timeout", shutdown)
}

/// asyncio's `ValueError` for a timeout that is not positive.
fn check_timeout(name: &str, t: Duration) -> io::Result<()> {
    if t.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} should be a positive number, got 0"),
        ));
    }
    Ok(())
}

fn server_name(tls: &TlsClientOptions, host: Option<&str>) -> io::Result<ServerName<'static>> {
    let name = match (&tls.server_hostname, host) {
        // No SNI (see `client_connection`): the verifier gets the host, or
        // a name no certificate has.
        (Some(n), Some(h)) if n.is_empty() => h,
        (Some(n), None) if n.is_empty() => "0.0.0.0",
        (Some(n), _) => n.as_str(),
        (None, Some(h)) => h,
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "You must set server_hostname when using ssl without a host",
            ))
        }
    };
    // `[::1]` as a host is `::1` as a name.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid server_hostname {name:?}: {e}"),
        )
    })
}

/// The client's TLS state for `host`: with `server_hostname` `""`, over a
/// copy of the configuration that sends no SNI (asyncio's
/// `server_hostname=''`).
fn client_connection(
    tls: &TlsClientOptions,
    host: Option<&str>,
) -> io::Result<rustls::ClientConnection> {
    let name = server_name(tls, host)?;
    let config = if tls.server_hostname.as_deref() == Some("") {
        let mut config = (*tls.config).clone();
        config.enable_sni = false;
        Arc::new(config)
    } else {
        tls.config.clone()
    };
    rustls::ClientConnection::new(config, name).map_err(tls_error)
}

/// The client half of `create_connection(..., ssl=)`: the TLS transport
/// over a connected socket, resolved after `connection_made`.
pub(crate) async fn connect_tls<F: IntoProtocol>(
    lp: &EventLoop,
    sock: OwnedFd,
    factory: impl FnOnce() -> F,
    tls: TlsClientOptions,
    host: Option<&str>,
) -> io::Result<(Transport, F::Handle)> {
    let conn = client_connection(&tls, host)?;
    let (protocol, handle) = factory().into_protocol();
    let (transport, stream) = TlsStream::start(
        lp,
        sock,
        rustls::Connection::Client(conn),
        protocol,
        Settings::client(&tls, true),
        None,
    )
    .map_err(|e| io::Error::from(e.error))?;
    AbortUnlessReady::new(stream).wait().await?;
    Ok((transport, handle))
}

/// What a TLS server does with each accepted socket.
pub(crate) fn server_starter(tls: TlsServerOptions) -> Starter {
    Rc::new(move |lp, fd, protocol, on_lost| {
        let conn = rustls::ServerConnection::new(tls.config.clone()).map_err(|e| {
            loop_core::LoopError::new(
                loop_core::ErrorKind::Io,
                format!("cannot start a TLS server connection: {e}"),
            )
        })?;
        let mut settings = Settings::server(&tls, true);
        settings.report_failure = true;
        TlsStream::start(
            lp,
            fd,
            rustls::Connection::Server(conn),
            protocol,
            settings,
            on_lost,
        )
        .map(|(t, _)| t)
        // The server accounts for a connection that did not start.
        .map_err(|e| e.error)
    })
}

async fn start_tls(
    lp: EventLoop,
    transport: Transport,
    protocol: AnyProtocol,
    tls: TlsOptions,
    received: Vec<u8>,
) -> io::Result<Transport> {
    let stream = transport.inner.upgrade_hook().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "start_tls(): the transport is not a socket stream transport",
        )
    })?;
    // Build the TLS state first: a bad server name must fail before the
    // old transport is touched.
    let (conn, settings) = match &tls {
        TlsOptions::Client(o) => {
            // No host here: the name must be given, as in asyncio.
            check_timeouts(o.handshake_timeout, o.shutdown_timeout)?;
            let conn = client_connection(o, None)?;
            (rustls::Connection::Client(conn), Settings::client(o, false))
        }
        TlsOptions::Server(o) => {
            check_timeouts(o.handshake_timeout, o.shutdown_timeout)?;
            let conn = rustls::ServerConnection::new(o.config.clone()).map_err(tls_error)?;
            (rustls::Connection::Server(conn), Settings::server(o, false))
        }
    };
    let detached = stream.detach_for_upgrade().await?;
    let mut settings = settings;
    settings.limits = Some(detached.limits);
    let mut received = received;
    received.extend_from_slice(&detached.early);
    settings.received = received;
    let started = TlsStream::start(&lp, detached.fd, conn, protocol, settings, detached.on_lost);
    let (new_transport, tls_stream) = match started {
        Ok(s) => s,
        Err(e) => {
            // The connection ends here: whoever counted it hears so.
            if let Some(hook) = e.on_lost {
                hook();
            }
            return Err(e.error.into());
        }
    };
    stream.set_successor(new_transport.clone());
    AbortUnlessReady::new(tls_stream).wait().await?;
    Ok(new_transport)
}

/// Waits for a TLS transport to be ready (handshake done, and
/// `connection_made` delivered when it is due); aborts the transport if the
/// waiting future is dropped first (asyncio closes the transport when
/// `create_connection` or `start_tls` is cancelled).
struct AbortUnlessReady {
    stream: Option<Rc<TlsStream>>,
}

impl AbortUnlessReady {
    fn new(stream: Rc<TlsStream>) -> Self {
        AbortUnlessReady {
            stream: Some(stream),
        }
    }

    async fn wait(mut self) -> io::Result<()> {
        let stream = self.stream.clone().expect("set until ready");
        let result = stream.wait_ready().await;
        self.stream = None;
        result
    }
}

impl Drop for AbortUnlessReady {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            s.abort_handshake();
        }
    }
}
