//! [`DatagramLoopExt`]: asyncio's `create_datagram_endpoint`, as an
//! extension trait of [`EventLoop`], with its options ([`DatagramOptions`],
//! [`DatagramAddr`]) and the making of the socket.
//!
//! # Rules kept here
//! - `SO_REUSEADDR` is never set on a datagram socket: on UDP it lets
//!   another user's socket bind the same port and receive a share of the
//!   datagrams (CPython bpo-37228, after which asyncio removed
//!   `reuse_address`). `SO_REUSEPORT` is set only when asked for.
//! - IP addresses: `local_addr` and `remote_addr` are resolved (numeric
//!   hosts without a lookup) and paired by family, in the order the
//!   resolver gave them; each pair is tried in turn (create, bind, connect)
//!   and the first that works is used, else the first pair's error is
//!   returned (asyncio).
//! - Unix paths: a socket file left at `local_addr` by an endpoint that is
//!   gone (nobody bound to it: a probe's `connect` is refused) is replaced;
//!   one that is in use is an `AddrInUse` error, never stolen. The file
//!   this endpoint binds is removed when it is closed (only if the path
//!   still names that socket). Abstract names (a leading NUL byte) and
//!   sockets passed in are never unlinked.
//! - A socket passed in (`sock`) is used as it is, made non-blocking; no
//!   other option may be given with it.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use loop_core::EventLoop;
use rustix::net::{AddressFamily as RawFamily, Protocol as RawProtocol, SocketFlags, SocketType};

use crate::addr::SockAddr;
use crate::datagram::{DatagramProtocol, DatagramTransport, Endpoint, OwnedPath, Prepared};
use crate::dns::{self, AddrInfoFlags, AddrInfoHints, AddressFamily, IpProtocol, SocketKind};
use crate::protocol::ProtocolHandle;

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// A local or remote address of a datagram endpoint: asyncio's `(host,
/// port)` tuple, or a Unix datagram socket's path.
///
/// Converts from `SocketAddr` (and its V4/V6 forms), `(&str, u16)`,
/// `(String, u16)`, `&Path` and `PathBuf`.
///
/// ```
/// use loop_net::DatagramAddr;
/// use std::net::SocketAddr;
/// let a: DatagramAddr = ("localhost", 5353).into();
/// let b: DatagramAddr = "127.0.0.1:0".parse::<SocketAddr>().unwrap().into();
/// let c: DatagramAddr = std::path::Path::new("/tmp/app.dgram").into();
/// assert!(matches!(a, DatagramAddr::Host(..)));
/// assert!(matches!(b, DatagramAddr::Inet(_)));
/// assert!(matches!(c, DatagramAddr::Unix(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DatagramAddr {
    /// A host name or numeric address and a port, resolved with
    /// `getaddrinfo` (`SOCK_DGRAM`, with the options' `family`, `proto` and
    /// `flags`); a numeric host needs no lookup.
    Host(String, u16),
    /// An IP address and port, used as is.
    Inet(SocketAddr),
    /// A Unix datagram socket path; a leading NUL byte names a Linux
    /// abstract socket (no file).
    Unix(PathBuf),
}

impl From<SocketAddr> for DatagramAddr {
    fn from(a: SocketAddr) -> Self {
        DatagramAddr::Inet(a)
    }
}

impl From<SocketAddrV4> for DatagramAddr {
    fn from(a: SocketAddrV4) -> Self {
        DatagramAddr::Inet(a.into())
    }
}

impl From<SocketAddrV6> for DatagramAddr {
    fn from(a: SocketAddrV6) -> Self {
        DatagramAddr::Inet(a.into())
    }
}

impl From<(&str, u16)> for DatagramAddr {
    fn from((host, port): (&str, u16)) -> Self {
        DatagramAddr::Host(host.to_string(), port)
    }
}

impl From<(String, u16)> for DatagramAddr {
    fn from((host, port): (String, u16)) -> Self {
        DatagramAddr::Host(host, port)
    }
}

impl From<&Path> for DatagramAddr {
    fn from(p: &Path) -> Self {
        DatagramAddr::Unix(p.to_path_buf())
    }
}

impl From<PathBuf> for DatagramAddr {
    fn from(p: PathBuf) -> Self {
        DatagramAddr::Unix(p)
    }
}

/// Options of `create_datagram_endpoint` (asyncio's arguments after the
/// protocol factory). The default is no option at all, which is an error:
/// give an address, a `family`, or a `sock`.
///
/// ```
/// use loop_net::{DatagramAddr, DatagramOptions};
/// use std::net::SocketAddr;
/// let server = DatagramOptions::default()
///     .with_local_addr("127.0.0.1:0".parse::<SocketAddr>().unwrap());
/// let client = DatagramOptions {
///     allow_broadcast: true,
///     ..DatagramOptions::default().with_remote_addr(("192.0.2.255", 9999))
/// };
/// assert!(matches!(client.remote_addr, Some(DatagramAddr::Host(..))));
/// assert!(server.local_addr.is_some());
/// ```
#[derive(Debug, Default)]
pub struct DatagramOptions {
    /// Bind the socket to this address (`local_addr=`). Port 0: an
    /// ephemeral port.
    pub local_addr: Option<DatagramAddr>,
    /// Connect the socket to this address (`remote_addr=`): `sendto(data,
    /// None)` then sends there, only datagrams from there are received, and
    /// errors such as `ECONNREFUSED` are reported. With `allow_broadcast`
    /// the socket is not connected, but the address is still the default
    /// destination.
    pub remote_addr: Option<DatagramAddr>,
    /// The address family (`family=`): restricts resolution, and names the
    /// family of an unbound, unconnected socket when no address is given.
    pub family: Option<AddressFamily>,
    /// The protocol of the socket and of the resolution (`proto=`; `ANY`:
    /// UDP for IP sockets).
    pub proto: IpProtocol,
    /// `getaddrinfo` flags for resolving the addresses (`flags=`).
    pub flags: AddrInfoFlags,
    /// Set `SO_REUSEPORT` (`reuse_port=`): several sockets, in this process
    /// or others of the same user, may bind the same address and port, and
    /// the kernel spreads the datagrams over them (one loop per thread, each
    /// with its own endpoint). Off by default. (`SO_REUSEADDR` is never set:
    /// see the module docs.)
    pub reuse_port: bool,
    /// Set `SO_BROADCAST` (`allow_broadcast=`): datagrams may go to a
    /// broadcast address. `remote_addr` is then not connected to.
    pub allow_broadcast: bool,
    /// An existing datagram socket to use instead of making one (`sock=`);
    /// no other option may be given with it. It is made non-blocking; if it
    /// is connected, its peer is the endpoint's remote address.
    pub sock: Option<OwnedFd>,
}

impl DatagramOptions {
    /// Sets [`local_addr`](Self::local_addr).
    pub fn with_local_addr(mut self, addr: impl Into<DatagramAddr>) -> Self {
        self.local_addr = Some(addr.into());
        self
    }

    /// Sets [`remote_addr`](Self::remote_addr).
    pub fn with_remote_addr(mut self, addr: impl Into<DatagramAddr>) -> Self {
        self.remote_addr = Some(addr.into());
        self
    }

    /// Sets [`sock`](Self::sock).
    pub fn with_sock(mut self, sock: impl Into<OwnedFd>) -> Self {
        self.sock = Some(sock.into());
        self
    }
}

/// asyncio's `create_datagram_endpoint` on [`EventLoop`]: UDP and Unix
/// datagram endpoints.
///
/// Bring it into scope (`use loop_net::DatagramLoopExt;`, or
/// `use aioloop::prelude::*;`). It is sealed: only [`EventLoop`] implements
/// it.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_net::{DatagramLoopExt, DatagramOptions, DatagramProtocol, DatagramTransport, SockAddr};
/// use std::net::SocketAddr;
///
/// /// Sends every datagram back.
/// #[derive(Default)]
/// struct Echo(Option<DatagramTransport>);
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, t: DatagramTransport) { self.0 = Some(t); }
///     fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
///         let _ = self.0.as_ref().unwrap().sendto(data, Some(addr));
///     }
/// }
///
/// /// Keeps what comes back.
/// #[derive(Default)]
/// struct Client { got: Vec<u8> }
/// impl DatagramProtocol for Client {
///     fn connection_made(&mut self, t: DatagramTransport) { t.sendto(b"ping", None).unwrap(); }
///     fn datagram_received(&mut self, data: &[u8], _addr: SockAddr) { self.got = data.to_vec(); }
/// }
///
/// let lp = EventLoop::new()?;
/// let l = lp.clone();
/// let got = lp.run_until_complete(async move {
///     let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
///     let (server, _) = l
///         .create_datagram_endpoint(Echo::default, DatagramOptions::default().with_local_addr(any))
///         .await?;
///     let to = server.sockname().unwrap().as_inet().unwrap();
///     let (client, proto) = l
///         .create_datagram_endpoint(Client::default, DatagramOptions::default().with_remote_addr(to))
///         .await?;
///     // Woken after each call into the protocol, not on a timer.
///     let got = proto.wait_until(|p: &Client| (!p.got.is_empty()).then(|| p.got.clone())).await;
///     client.close();
///     server.close();
///     Ok::<_, std::io::Error>(got)
/// })??;
/// assert_eq!(got, b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DatagramLoopExt: sealed::Sealed {
    /// Creates a datagram endpoint (asyncio's
    /// `loop.create_datagram_endpoint(protocol_factory, local_addr=None,
    /// remote_addr=None, *, family=0, proto=0, flags=0, reuse_port=None,
    /// allow_broadcast=None, sock=None)`) and returns asyncio's
    /// `(transport, protocol)` once the protocol's `connection_made` ran.
    ///
    /// The socket is made from the [`DatagramOptions`]: bound to
    /// `local_addr`, connected to `remote_addr` (see their docs), or taken
    /// from `sock`. A [`DatagramAddr::Unix`] address makes a Unix datagram
    /// socket (both addresses must then be paths). With no address and no
    /// socket, `family` must be given, and the socket is neither bound nor
    /// connected.
    ///
    /// Errors are [`io::Error`]s, as asyncio raises `OSError`: the
    /// resolver's, `bind`'s and `connect`'s (with the address in the
    /// message), `InvalidInput` for contradictory options (asyncio's
    /// `ValueError`), `AddrInUse` for a Unix path another socket is bound
    /// to.
    #[doc(alias = "loop.create_datagram_endpoint")]
    fn create_datagram_endpoint<P: DatagramProtocol>(
        &self,
        factory: impl FnOnce() -> P + 'static,
        options: DatagramOptions,
    ) -> impl Future<Output = io::Result<(DatagramTransport, ProtocolHandle<P>)>> + 'static;
}

impl DatagramLoopExt for EventLoop {
    fn create_datagram_endpoint<P: DatagramProtocol>(
        &self,
        factory: impl FnOnce() -> P + 'static,
        options: DatagramOptions,
    ) -> impl Future<Output = io::Result<(DatagramTransport, ProtocolHandle<P>)>> + 'static {
        let lp = self.clone();
        async move { create(&lp, factory, options).await }
    }
}

async fn create<P: DatagramProtocol>(
    lp: &EventLoop,
    factory: impl FnOnce() -> P,
    mut opts: DatagramOptions,
) -> io::Result<(DatagramTransport, ProtocolHandle<P>)> {
    if lp.is_closed() {
        return Err(loop_core::LoopError::closed().into());
    }
    let prepared = match opts.sock.take() {
        Some(sock) => from_sock(sock, &opts)?,
        None => open(lp, &opts).await?,
    };
    let handle = ProtocolHandle::new(factory());
    let (transport, endpoint) =
        Endpoint::start(lp, prepared, handle.cell.clone()).map_err(io::Error::from)?;
    // Dropped (cancelled) before connection_made ran: close the endpoint,
    // as asyncio does, instead of leaving it reading for nobody.
    let guard = CloseUnlessDone(Some(transport));
    endpoint.wait_made().await;
    Ok((guard.done(), handle))
}

/// Closes the transport when dropped, unless [`done`](Self::done) took it.
struct CloseUnlessDone(Option<DatagramTransport>);

impl CloseUnlessDone {
    fn done(mut self) -> DatagramTransport {
        self.0.take().expect("taken once")
    }
}

impl Drop for CloseUnlessDone {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.close();
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn from_sock(sock: OwnedFd, opts: &DatagramOptions) -> io::Result<Prepared> {
    let mut problems = Vec::new();
    if let Some(a) = &opts.local_addr {
        problems.push(format!("local_addr={a:?}"));
    }
    if let Some(a) = &opts.remote_addr {
        problems.push(format!("remote_addr={a:?}"));
    }
    if let Some(f) = opts.family {
        problems.push(format!("family={f:?}"));
    }
    if opts.proto != IpProtocol::ANY {
        problems.push(format!("proto={:?}", opts.proto));
    }
    if opts.flags != AddrInfoFlags::empty() {
        problems.push(format!("flags={:?}", opts.flags));
    }
    if opts.reuse_port {
        problems.push("reuse_port=true".into());
    }
    if opts.allow_broadcast {
        problems.push("allow_broadcast=true".into());
    }
    if !problems.is_empty() {
        return Err(invalid(format!(
            "socket modifier keyword arguments can not be used when sock is specified. ({})",
            problems.join(", ")
        )));
    }
    let kind = rustix::net::sockopt::socket_type(&sock)?;
    if kind == SocketType::STREAM {
        return Err(invalid(format!(
            "A datagram socket was expected, got {kind:?}"
        )));
    }
    let flags = rustix::fs::fcntl_getfl(&sock)?;
    rustix::fs::fcntl_setfl(&sock, flags | rustix::fs::OFlags::NONBLOCK)?;
    let peer = rustix::net::getpeername(&sock)
        .ok()
        .flatten()
        .map(SockAddr::from_raw);
    Ok(Prepared {
        fd: sock,
        connected: peer.is_some(),
        remote: peer,
        owned_path: None,
    })
}

fn dgram_socket(
    family: RawFamily,
    proto: IpProtocol,
    opts: &DatagramOptions,
) -> io::Result<OwnedFd> {
    let proto = match u32::try_from(proto.as_raw()) {
        Ok(0) => None,
        Ok(p) => std::num::NonZeroU32::new(p).map(RawProtocol::from_raw),
        Err(_) => return Err(invalid(format!("invalid proto {proto:?}"))),
    };
    let sock = rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        proto,
    )?;
    if opts.reuse_port {
        rustix::net::sockopt::set_socket_reuseport(&sock, true)?;
    }
    if opts.allow_broadcast {
        rustix::net::sockopt::set_socket_broadcast(&sock, true)?;
    }
    Ok(sock)
}

fn bind_error(addr: impl std::fmt::Display, e: rustix::io::Errno) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(
        e.kind(),
        format!("error while attempting to bind on address {addr}: {e}"),
    )
}

async fn open(lp: &EventLoop, opts: &DatagramOptions) -> io::Result<Prepared> {
    let (local, remote) = (&opts.local_addr, &opts.remote_addr);
    let is_unix = |a: &Option<DatagramAddr>| matches!(a, Some(DatagramAddr::Unix(_)));
    if is_unix(local) || is_unix(remote) {
        return open_unix(lp, opts).await;
    }
    if local.is_none() && remote.is_none() {
        let family = match opts.family {
            Some(f) if f != AddressFamily::UNSPEC => f,
            _ => return Err(invalid("unexpected address family")),
        };
        let raw = rustix::net::RawAddressFamily::try_from(family.as_raw())
            .map(RawFamily::from_raw)
            .map_err(|_| invalid("unexpected address family"))?;
        return Ok(Prepared {
            fd: dgram_socket(raw, opts.proto, opts)?,
            connected: false,
            remote: None,
            owned_path: None,
        });
    }
    if opts.family == Some(AddressFamily::UNIX) {
        return Err(invalid(
            "family UNIX needs Unix paths (DatagramAddr::Unix) as addresses",
        ));
    }
    let locals = match local {
        Some(a) => resolve(lp, a, opts).await?,
        None => Vec::new(),
    };
    let remotes = match remote {
        Some(a) => resolve(lp, a, opts).await?,
        None => Vec::new(),
    };
    // Pair by family, in the resolver's order (local first): asyncio keys
    // its pairs by (family, proto), and every entry here has the same proto.
    let mut pairs: Vec<(bool, Option<SocketAddr>, Option<SocketAddr>)> = Vec::new();
    for (a, is_local) in locals
        .iter()
        .map(|a| (a, true))
        .chain(remotes.iter().map(|a| (a, false)))
    {
        let v4 = a.is_ipv4();
        let i = match pairs.iter().position(|p| p.0 == v4) {
            Some(i) => i,
            None => {
                pairs.push((v4, None, None));
                pairs.len() - 1
            }
        };
        let slot = if is_local {
            &mut pairs[i].1
        } else {
            &mut pairs[i].2
        };
        slot.get_or_insert(*a);
    }
    pairs.retain(|(_, l, r)| (local.is_none() || l.is_some()) && (remote.is_none() || r.is_some()));
    if pairs.is_empty() {
        return Err(invalid("can not get address information"));
    }
    let mut first_error = None;
    for (v4, l, r) in pairs {
        let family = if v4 {
            RawFamily::INET
        } else {
            RawFamily::INET6
        };
        match open_inet(lp, family, l, r, opts).await {
            Ok(p) => return Ok(p),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.expect("at least one pair was tried"))
}

async fn resolve(
    lp: &EventLoop,
    addr: &DatagramAddr,
    opts: &DatagramOptions,
) -> io::Result<Vec<SocketAddr>> {
    let family = opts.family.unwrap_or_default();
    match addr {
        DatagramAddr::Inet(a) => {
            let fits = if family == AddressFamily::UNSPEC {
                true
            } else if family == AddressFamily::INET {
                a.is_ipv4()
            } else if family == AddressFamily::INET6 {
                a.is_ipv6()
            } else {
                false
            };
            Ok(if fits { vec![*a] } else { Vec::new() })
        }
        DatagramAddr::Host(host, port) => {
            let hints = AddrInfoHints {
                family,
                socktype: SocketKind::DGRAM,
                protocol: opts.proto,
                flags: opts.flags,
            };
            let infos = dns::getaddrinfo(lp, Some(host), (*port).into(), hints).await?;
            if infos.is_empty() {
                return Err(io::Error::other("getaddrinfo() returned empty list"));
            }
            let mut out: Vec<SocketAddr> = Vec::new();
            for i in infos {
                if !out.contains(&i.addr) {
                    out.push(i.addr);
                }
            }
            Ok(out)
        }
        DatagramAddr::Unix(_) => Err(invalid("cannot mix a Unix path with an IP address")),
    }
}

async fn open_inet(
    lp: &EventLoop,
    family: RawFamily,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    opts: &DatagramOptions,
) -> io::Result<Prepared> {
    let sock = dgram_socket(family, opts.proto, opts)?;
    if let Some(l) = local {
        rustix::net::bind(&sock, &l).map_err(|e| bind_error(l, e))?;
    }
    let mut connected = false;
    if let Some(r) = remote {
        if !opts.allow_broadcast {
            crate::sock::connect(lp, sock.as_fd(), SockAddr::Inet(r)).await?;
            connected = true;
        }
    }
    Ok(Prepared {
        fd: sock,
        connected,
        remote: remote.map(SockAddr::Inet),
        owned_path: None,
    })
}

async fn open_unix(lp: &EventLoop, opts: &DatagramOptions) -> io::Result<Prepared> {
    let path_of = |a: &Option<DatagramAddr>| -> io::Result<Option<PathBuf>> {
        match a {
            None => Ok(None),
            Some(DatagramAddr::Unix(p)) => Ok(Some(p.clone())),
            Some(_) => Err(invalid("cannot mix a Unix path with an IP address")),
        }
    };
    let local = path_of(&opts.local_addr)?;
    let remote = path_of(&opts.remote_addr)?;
    if let Some(f) = opts.family {
        if f != AddressFamily::UNIX && f != AddressFamily::UNSPEC {
            return Err(invalid(format!("a Unix path needs family UNIX, not {f:?}")));
        }
    }
    let sock = dgram_socket(RawFamily::UNIX, opts.proto, opts)?;
    let mut owned_path = None;
    if let Some(path) = &local {
        let abstract_name = path.as_os_str().as_bytes().first() == Some(&0);
        if !abstract_name {
            crate::owned_path::remove_stale_socket(path, SocketType::DGRAM)?;
        }
        let addr = SockAddr::Unix(path.clone()).to_raw()?;
        rustix::net::bind(&sock, &addr).map_err(|e| bind_error(path.display(), e))?;
        if !abstract_name {
            owned_path = OwnedPath::bound(path.clone());
        }
    }
    let mut connected = false;
    if let Some(path) = &remote {
        if !opts.allow_broadcast {
            crate::sock::connect(lp, sock.as_fd(), SockAddr::Unix(path.clone())).await?;
            connected = true;
        }
    }
    Ok(Prepared {
        fd: sock,
        connected,
        remote: remote.map(SockAddr::Unix),
        owned_path,
    })
}
