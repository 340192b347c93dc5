//! Opening stream connections: `create_connection` (with RFC 8305 Happy
//! Eyeballs), `create_unix_connection`, `connect_accepted_socket`, and the
//! listening sockets of `create_server` / `create_unix_server`.
//!
//! # Rules
//! - **Lazy and `'static`.** A connection future does nothing until
//!   polled and owns what it needs (a loop handle, copies of host names and
//!   paths, a `'static` factory), so it can be handed to `create_task`, as a
//!   coroutine object can.
//! - **Returns after `connection_made`.** As asyncio's, `create_connection`
//!   resolves once the protocol's `connection_made` ran. Dropped before that
//!   (every path: host/port, `sock=`, Unix, an accepted socket, TLS,
//!   `open_connection`), it closes the socket at once and the protocol is
//!   never called (`AbandonUnlessMade` here, `AbortUnlessReady` in tls.rs).
//! - **Unix socket files.** A stale socket file (connect refused) is
//!   replaced; a live one is an `AddrInUse` error. A server removes the
//!   file it bound, or the file of a socket handed in with `sock=`, when it
//!   closes, if the path still names that socket (`OwnedPath`;
//!   `cleanup_socket = false` keeps it, asyncio 3.13); abstract names are
//!   never unlinked.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use loop_core::EventLoop;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::addr::SockAddr;
use crate::dns::{self, AddrInfoHints, Service, SocketKind};
use crate::protocol::{AnyProtocol, BufferedProtocol, Protocol, ProtocolHandle};
use crate::stream::Stream;
use crate::transport::Transport;

// The one error of a `create_connection` whose attempts all failed (errno
// kept when they failed alike), and `ConnectErrors` for `all_errors`.
mod errors;
// Sockets handed in (`sock=`, `connect_accepted_socket`): checked to be
// stream sockets of the right family, non-blocking, `TCP_NODELAY` on TCP.
pub(crate) mod given;
// The listening sockets of `create_server` / `create_unix_server`: bound
// from hosts and port or a path, or handed in; `cleanup_socket`.
mod listen;

pub use errors::ConnectErrors;
pub(crate) use listen::{create_server, create_unix_server};

/// Something a protocol factory may return: a [`Protocol`], a
/// [`Buffered`] protocol, or an existing [`ProtocolHandle`].
pub trait IntoProtocol: 'static {
    /// The user's handle on the protocol.
    type Handle;
    /// Splits into what the transport drives and what the caller keeps.
    fn into_protocol(self) -> (AnyProtocol, Self::Handle);
}

impl<P: Protocol> IntoProtocol for P {
    type Handle = ProtocolHandle<P>;
    fn into_protocol(self) -> (AnyProtocol, ProtocolHandle<P>) {
        let h = ProtocolHandle::new(self);
        (AnyProtocol::Streaming(h.cell.clone()), h)
    }
}

impl<P: Protocol> IntoProtocol for ProtocolHandle<P> {
    type Handle = ProtocolHandle<P>;
    fn into_protocol(self) -> (AnyProtocol, ProtocolHandle<P>) {
        (AnyProtocol::Streaming(self.cell.clone()), self)
    }
}

/// Marks a [`BufferedProtocol`] for a protocol factory:
/// `create_server(|| Buffered(MyProtocol::new()), ...)`.
#[derive(Debug)]
pub struct Buffered<P>(pub P);

impl<P: BufferedProtocol> IntoProtocol for Buffered<P> {
    type Handle = ProtocolHandle<P>;
    fn into_protocol(self) -> (AnyProtocol, ProtocolHandle<P>) {
        let h = ProtocolHandle::new(self.0);
        (AnyProtocol::Buffered(h.cell.clone()), h)
    }
}

/// Options of `create_connection` (asyncio's keyword arguments).
#[derive(Debug, Default)]
pub struct ConnectOptions {
    /// Restrict resolution to one family (`family=`); `None`: any.
    pub family: Option<crate::dns::AddressFamily>,
    /// Bind the socket to this address first (`local_addr=`).
    pub local_addr: Option<SocketAddr>,
    /// RFC 8305: start the next attempt this long after the previous one
    /// began, racing them (`happy_eyeballs_delay=`; asyncio recommends
    /// 250 ms). `None`: one attempt after another.
    pub happy_eyeballs_delay: Option<Duration>,
    /// Reorder the addresses to alternate families, taking this many of the
    /// first family first (`interleave=`); defaults to 1 when a delay is set.
    pub interleave: Option<usize>,
    /// An already connected socket to use instead of host and port (`sock=`):
    /// a stream socket (anything else is an `InvalidInput` error, "A Stream
    /// Socket was expected, got ..."), made non-blocking, with
    /// `TCP_NODELAY` if it is TCP. Give it as `std::net::TcpStream::into()`
    /// or any [`OwnedFd`].
    pub sock: Option<OwnedFd>,
    /// When every attempt fails, return all their errors, not one (asyncio
    /// 3.12's `all_errors=True`): the [`io::Error`] then carries a
    /// [`ConnectErrors`] (get it with [`ConnectErrors::from_io`]) listing
    /// each address with its own error, even when there was one address.
    /// Default `false`: one error (see
    /// [`create_connection`](crate::StreamLoopExt::create_connection)).
    pub all_errors: bool,
    /// Speak TLS over the connection (`ssl=`, `server_hostname=`,
    /// `ssl_handshake_timeout=`, `ssl_shutdown_timeout=`; feature `tls`):
    /// `create_connection` returns once the handshake is done and
    /// `connection_made` ran, or the handshake's error.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsClientOptions>,
}

/// Options of `create_server` and `create_unix_server` (asyncio's keyword
/// arguments).
#[derive(Debug)]
pub struct ServerOptions {
    /// Restrict to one family (`family=`).
    pub family: Option<crate::dns::AddressFamily>,
    /// `listen()` backlog, and the most connections accepted per readiness
    /// (`backlog=`, default 100).
    pub backlog: usize,
    /// `SO_REUSEADDR` (`reuse_address=`, default true on Unix, as asyncio).
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (`reuse_port=`): several sockets, in one process or
    /// several, share the port and the kernel spreads connections over them.
    pub reuse_port: bool,
    /// Start accepting at once (`start_serving=`, default true).
    pub start_serving: bool,
    /// An already bound socket to serve on instead of hosts and port
    /// (`sock=`): a stream socket (else `InvalidInput`, "A Stream Socket was
    /// expected, got ..."), made non-blocking and listening with
    /// [`backlog`](Self::backlog). `create_server` then takes no hosts and
    /// port 0; `create_unix_server` takes an empty path and an `AF_UNIX`
    /// socket. Give it as `std::net::TcpListener::into()`,
    /// `std::os::unix::net::UnixListener::into()`, or any [`OwnedFd`].
    pub sock: Option<OwnedFd>,
    /// Unix servers: remove the socket file when the server closes, if the
    /// path still names the socket it served on (asyncio 3.13's
    /// `cleanup_socket=`, default true). Also for a socket given with
    /// [`sock`](Self::sock).
    pub cleanup_socket: bool,
    /// Speak TLS with every client (`ssl=`, `ssl_handshake_timeout=`,
    /// `ssl_shutdown_timeout=`; feature `tls`): each protocol's
    /// `connection_made` comes after its handshake.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsServerOptions>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            family: None,
            backlog: 100,
            reuse_address: true,
            reuse_port: false,
            start_serving: true,
            sock: None,
            cleanup_socket: true,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

pub(crate) fn inet_family(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    }
}

pub(crate) fn stream_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}

/// asyncio's `_interleave_addrinfos`: `first` addresses of the first family,
/// then one of each family in turn.
pub(crate) fn interleave(addrs: Vec<SocketAddr>, first: usize) -> Vec<SocketAddr> {
    let Some(head) = addrs.first() else {
        return addrs;
    };
    let head_v4 = head.is_ipv4();
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv4() == head_v4);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let take = first.max(1).saturating_sub(1).min(a.len());
    out.extend(a.drain(..take));
    let (mut ia, mut ib) = (a.into_iter(), b.drain(..));
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => break,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
    out
}

async fn connect_one(
    lp: &EventLoop,
    addr: SocketAddr,
    local: Option<SocketAddr>,
) -> io::Result<OwnedFd> {
    let sock = stream_socket(inet_family(&addr))?;
    if let Some(local) = local {
        rustix::net::bind(&sock, &local).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "error while attempting to bind on address {local}: {}",
                    io::Error::from(e)
                ),
            )
        })?;
    }
    crate::sock::connect(lp, sock.as_fd(), SockAddr::Inet(addr)).await?;
    // asyncio's `_set_nodelay`, as for every TCP transport (given.rs).
    let _ = rustix::net::sockopt::set_tcp_nodelay(&sock, true);
    Ok(sock)
}

type Attempt<'a> = Pin<Box<dyn Future<Output = io::Result<OwnedFd>> + 'a>>;

/// Tries `addrs` in order, starting the next attempt when the previous one
/// fails or, with a `delay`, when the delay passes first (RFC 8305). The
/// first connected socket wins; the other attempts are dropped (which
/// unregisters them from the loop and closes their sockets).
async fn connect_any(
    lp: &EventLoop,
    addrs: &[SocketAddr],
    local: Option<SocketAddr>,
    delay: Option<Duration>,
) -> Result<OwnedFd, Vec<(SocketAddr, io::Error)>> {
    let mut errors: Vec<(SocketAddr, io::Error)> = Vec::new();
    let mut running: Vec<(SocketAddr, Attempt<'_>)> = Vec::new();
    let mut next = 0;
    let mut timer: Option<Pin<Box<loop_core::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        loop {
            let mut start_next = running.is_empty() && next < addrs.len();
            if let Some(t) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    timer = None;
                    start_next = next < addrs.len();
                }
            }
            if start_next {
                let addr = addrs[next];
                next += 1;
                running.push((addr, Box::pin(connect_one(lp, addr, local))));
                if let Some(d) = delay {
                    timer = Some(Box::pin(lp.sleep(d)));
                }
            }
            let mut progressed = start_next;
            let mut i = 0;
            while i < running.len() {
                match running[i].1.as_mut().poll(cx) {
                    Poll::Ready(Ok(sock)) => return Poll::Ready(Ok(sock)),
                    Poll::Ready(Err(e)) => {
                        let (addr, _) = running.remove(i);
                        errors.push((addr, e));
                        // A failure starts the next attempt at once.
                        timer = None;
                        progressed = true;
                    }
                    Poll::Pending => i += 1,
                }
            }
            if running.is_empty() && next >= addrs.len() {
                return Poll::Ready(Err(std::mem::take(&mut errors)));
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    })
    .await
}

pub(crate) async fn create_connection<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl FnOnce() -> F,
    host: Option<&str>,
    port: Service,
    mut opts: ConnectOptions,
) -> io::Result<(Transport, F::Handle)> {
    ensure_open(lp)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &opts.tls {
        crate::tls::check_client(tls, host)?;
    }
    let sock = match opts.sock.take() {
        Some(sock) => {
            if host.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "host/port and sock can not be specified at the same time",
                ));
            }
            given::connected(sock, given::Families::Any)?
        }
        None => {
            let hints = AddrInfoHints {
                family: opts.family.unwrap_or_default(),
                socktype: SocketKind::STREAM,
                ..Default::default()
            };
            let infos = dns::getaddrinfo(lp, host, port, hints).await?;
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for i in infos {
                if !addrs.contains(&i.addr) {
                    addrs.push(i.addr);
                }
            }
            let interleave_n = opts.interleave.or(opts.happy_eyeballs_delay.map(|_| 1));
            if let Some(n) = interleave_n {
                addrs = interleave(addrs, n);
            }
            connect_any(lp, &addrs, opts.local_addr, opts.happy_eyeballs_delay)
                .await
                .map_err(|errors| errors::combine(errors, opts.all_errors))?
        }
    };
    #[cfg(feature = "tls")]
    if let Some(tls) = opts.tls.take() {
        return crate::tls::connect_tls(lp, sock, factory, tls, host).await;
    }
    start_and_wait(lp, sock, factory).await
}

/// Starts the transport and waits for `connection_made`, as asyncio's
/// `create_connection` does before returning. Dropped before that, it
/// closes the socket and the protocol is never called.
async fn start_and_wait<F: IntoProtocol>(
    lp: &EventLoop,
    sock: OwnedFd,
    factory: impl FnOnce() -> F,
) -> io::Result<(Transport, F::Handle)> {
    let (protocol, handle) = factory().into_protocol();
    let (transport, stream) =
        Stream::start_rc(lp, sock, protocol, None).map_err(io::Error::from)?;
    let mut guard = AbandonUnlessMade(Some(stream.clone()));
    stream.wait_made().await;
    guard.0 = None;
    Ok((transport, handle))
}

/// Abandons the stream transport (stream.rs) if the future waiting for its
/// `connection_made` is dropped.
struct AbandonUnlessMade(Option<std::rc::Rc<Stream>>);

impl Drop for AbandonUnlessMade {
    fn drop(&mut self) {
        if let Some(stream) = self.0.take() {
            stream.abandon();
        }
    }
}

pub(crate) fn ensure_open(lp: &EventLoop) -> io::Result<()> {
    if lp.is_closed() {
        return Err(loop_core::LoopError::closed().into());
    }
    Ok(())
}

pub(crate) async fn create_unix_connection<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl FnOnce() -> F,
    path: &Path,
) -> io::Result<(Transport, F::Handle)> {
    ensure_open(lp)?;
    let sock = stream_socket(AddressFamily::UNIX)?;
    crate::sock::connect(lp, sock.as_fd(), SockAddr::Unix(path.to_path_buf())).await?;
    start_and_wait(lp, sock, factory).await
}

pub(crate) async fn connect_accepted_socket<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl FnOnce() -> F,
    sock: OwnedFd,
) -> io::Result<(Transport, F::Handle)> {
    ensure_open(lp)?;
    let sock = given::connected(sock, given::Families::Any)?;
    start_and_wait(lp, sock, factory).await
}

/// `create_unix_connection(sock=)`: a connected `AF_UNIX` stream socket.
pub(crate) async fn unix_connection_on<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl FnOnce() -> F,
    sock: OwnedFd,
) -> io::Result<(Transport, F::Handle)> {
    ensure_open(lp)?;
    let sock = given::connected(sock, given::Families::Unix)?;
    start_and_wait(lp, sock, factory).await
}

#[cfg(test)]
mod tests {
    use super::interleave;
    use std::net::SocketAddr;

    #[test]
    fn interleave_alternates_families() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let addrs = vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("127.0.0.1:1"),
            a("127.0.0.2:1"),
        ];
        assert_eq!(
            interleave(addrs.clone(), 1),
            vec![
                a("[::1]:1"),
                a("127.0.0.1:1"),
                a("[::2]:1"),
                a("127.0.0.2:1")
            ]
        );
        assert_eq!(
            interleave(addrs, 2),
            vec![
                a("[::1]:1"),
                a("[::2]:1"),
                a("127.0.0.1:1"),
                a("127.0.0.2:1")
            ]
        );
    }
}
