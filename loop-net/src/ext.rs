//! [`NetLoopExt`]: the DNS and `sock_*` methods of asyncio's loop, as an
//! extension trait of [`EventLoop`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use loop_core::EventLoop;

use crate::addr::SockAddr;
use crate::dns::{self, AddrInfo, AddrInfoHints, NameInfoFlags, Service};
use crate::{sendfile, sock};

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// asyncio's DNS and low-level socket methods on [`EventLoop`]:
/// `getaddrinfo`, `getnameinfo` and the `sock_*` coroutines.
///
/// Bring it into scope (`use loop_net::NetLoopExt;`, or
/// `use aioloop::prelude::*;`) and call the methods on the loop. It is sealed:
/// only [`EventLoop`] implements it.
///
/// # The `sock_*` methods
/// They work on raw sockets you own (anything [`AsFd`]: `TcpStream`,
/// `UdpSocket`, `OwnedFd`, ...), which must be in non-blocking mode; a
/// blocking socket is refused with an [`InvalidInput`](io::ErrorKind::InvalidInput)
/// error, since a syscall on it could block the whole loop. Each call tries
/// the syscall at once and, only if it would block, waits for readiness
/// through the loop. Await the futures on this loop.
///
/// - **Cancellation.** Dropping a future removes its reader or writer from
///   the loop at once, so the same socket can be used again immediately.
///   What a dropped send had already written stays written.
/// - **One waiter per direction.** As in asyncio, one operation at a time may
///   wait to read from a socket, and one to write. A second one replaces the
///   first's registration; the first then fails with
///   [`ResourceBusy`](io::ErrorKind::ResourceBusy) instead of waiting forever.
/// - **Fairness.** An operation that finds its socket always ready still
///   yields to the loop after a bounded number of syscalls, so a task looping
///   on a flooded socket does not starve timers and other tasks.
/// - **Errors** are [`io::Error`]s, as asyncio raises `OSError`. A closed
///   loop gives an error whose inner error is a [`loop_core::LoopError`] of kind
///   [`Closed`](loop_core::ErrorKind::Closed).
pub trait NetLoopExt: sealed::Sealed {
    /// Resolves `host` and `port` into socket addresses with the system
    /// resolver (asyncio's `loop.getaddrinfo(host, port, family=, type=,
    /// proto=, flags=)`).
    ///
    /// `host` is a name or a numeric address, or `None` for the local host
    /// (loopback addresses, or wildcard ones with
    /// [`AddrInfoFlags::PASSIVE`](crate::AddrInfoFlags::PASSIVE)). `port` is a
    /// number, a service name (`"http"`), or `None`.
    ///
    /// A lookup runs on a small resolver thread pool of its own, never on the
    /// loop thread and never on the default executor, so a busy executor
    /// cannot delay it. Numeric input (an IP literal or no host, with a
    /// numeric port or none) needs no lookup and is answered when the future
    /// is first polled. Dropping the future abandons the lookup.
    ///
    /// Errors: a resolver failure is an [`io::Error`] holding a
    /// [`ResolveError`](crate::ResolveError) with the `EAI_*` code and the
    /// C library's message; `EAI_SYSTEM` is the OS error itself.
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use loop_net::{AddrInfoHints, NetLoopExt, SocketKind};
    /// let lp = EventLoop::new()?;
    /// let hints = AddrInfoHints { socktype: SocketKind::STREAM, ..Default::default() };
    /// let infos = lp.run_until_complete(lp.getaddrinfo("127.0.0.1", 8080, hints))??;
    /// assert_eq!(infos[0].addr, "127.0.0.1:8080".parse().unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "loop.getaddrinfo")]
    fn getaddrinfo<'h>(
        &self,
        host: impl Into<Option<&'h str>>,
        port: impl Into<Service>,
        hints: AddrInfoHints,
    ) -> impl Future<Output = io::Result<Vec<AddrInfo>>> + 'static;

    /// The host and service names of `addr` (asyncio's
    /// `loop.getnameinfo(sockaddr, flags)`), as `(host, port)` strings.
    ///
    /// With both [`NameInfoFlags::NUMERICHOST`] and
    /// [`NameInfoFlags::NUMERICSERV`] this only formats the address and is
    /// answered on the first poll; otherwise it runs on the resolver pool,
    /// like [`getaddrinfo`](Self::getaddrinfo), with the same errors.
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use loop_net::{NameInfoFlags, NetLoopExt};
    /// let lp = EventLoop::new()?;
    /// let flags = NameInfoFlags::NUMERICHOST | NameInfoFlags::NUMERICSERV;
    /// let names = lp.run_until_complete(lp.getnameinfo("[::1]:80".parse()?, flags))??;
    /// assert_eq!(names, ("::1".to_string(), "80".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "loop.getnameinfo")]
    fn getnameinfo(
        &self,
        addr: SocketAddr,
        flags: NameInfoFlags,
    ) -> impl Future<Output = io::Result<(String, String)>> + 'static;

    /// Receives up to `nbytes` bytes from `sock` (asyncio's
    /// `loop.sock_recv(sock, nbytes)`). An empty vector means end of stream
    /// (or `nbytes` was 0). To receive into a buffer you own, use
    /// [`sock_recv_into`](Self::sock_recv_into).
    #[doc(alias = "loop.sock_recv")]
    fn sock_recv<'a>(
        &'a self,
        sock: &'a impl AsFd,
        nbytes: usize,
    ) -> impl Future<Output = io::Result<Vec<u8>>> + 'a;

    /// Receives into `buf` and returns how many bytes arrived; 0 means end of
    /// stream (asyncio's `loop.sock_recv_into(sock, buf)`).
    #[doc(alias = "loop.sock_recv_into")]
    fn sock_recv_into<'a>(
        &'a self,
        sock: &'a impl AsFd,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + 'a;

    /// Receives one datagram of up to `bufsize` bytes (the rest of a longer
    /// one is discarded) and the sender's address (asyncio's
    /// `loop.sock_recvfrom(sock, bufsize)`). The address is `None` when the
    /// kernel gives none (a connected stream socket).
    #[doc(alias = "loop.sock_recvfrom")]
    fn sock_recvfrom<'a>(
        &'a self,
        sock: &'a impl AsFd,
        bufsize: usize,
    ) -> impl Future<Output = io::Result<(Vec<u8>, Option<SockAddr>)>> + 'a;

    /// Receives one datagram into `buf`; returns its length (at most
    /// `buf.len()`) and the sender's address (asyncio's
    /// `loop.sock_recvfrom_into(sock, buf)`).
    #[doc(alias = "loop.sock_recvfrom_into")]
    fn sock_recvfrom_into<'a>(
        &'a self,
        sock: &'a impl AsFd,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, Option<SockAddr>)>> + 'a;

    /// Sends all of `data` (asyncio's `loop.sock_sendall(sock, data)`),
    /// waiting for room in the socket buffer as often as needed. On error
    /// there is no telling how much was sent; the same holds when the future
    /// is dropped half-way.
    #[doc(alias = "loop.sock_sendall")]
    fn sock_sendall<'a>(
        &'a self,
        sock: &'a impl AsFd,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + 'a;

    /// Sends one datagram to `addr` and returns the bytes sent (asyncio's
    /// `loop.sock_sendto(sock, data, address)`).
    #[doc(alias = "loop.sock_sendto")]
    fn sock_sendto<'a>(
        &'a self,
        sock: &'a impl AsFd,
        data: &'a [u8],
        addr: impl Into<SockAddr>,
    ) -> impl Future<Output = io::Result<usize>> + 'a;

    /// Connects `sock` to `addr` (asyncio's `loop.sock_connect(sock,
    /// address)`): starts a non-blocking `connect` and, while it is in
    /// progress, waits for writability and reads the outcome from
    /// `SO_ERROR` (so a refused connection is `ECONNREFUSED`). Resolve names
    /// first with [`getaddrinfo`](Self::getaddrinfo).
    #[doc(alias = "loop.sock_connect")]
    fn sock_connect<'a>(
        &'a self,
        sock: &'a impl AsFd,
        addr: impl Into<SockAddr>,
    ) -> impl Future<Output = io::Result<()>> + 'a;

    /// Connects the `AF_INET` or `AF_INET6` socket `sock` to `host` and
    /// `port` (asyncio's `loop.sock_connect(sock, (host, port))` with a host
    /// name): the name is resolved first, for the socket's family and type
    /// (asyncio's `_ensure_resolved`), on the resolver pool (a numeric
    /// address is answered at once), then `sock` is connected to the first
    /// address, as [`sock_connect`](Self::sock_connect). A socket of
    /// another family is an [`InvalidInput`](io::ErrorKind::InvalidInput)
    /// error; a resolver failure is as in [`getaddrinfo`](Self::getaddrinfo).
    #[doc(alias = "loop.sock_connect")]
    fn sock_connect_host<'a>(
        &'a self,
        sock: &'a impl AsFd,
        host: &'a str,
        port: u16,
    ) -> impl Future<Output = io::Result<()>> + 'a;

    /// Accepts a connection on the listening `sock` (asyncio's
    /// `loop.sock_accept(sock)`): the new socket, already non-blocking and
    /// close-on-exec, and the peer's address. Turn the `OwnedFd` into a
    /// `TcpStream` or `UnixStream` with `From`.
    #[doc(alias = "loop.sock_accept")]
    fn sock_accept<'a>(
        &'a self,
        sock: &'a impl AsFd,
    ) -> impl Future<Output = io::Result<(OwnedFd, SockAddr)>> + 'a;

    /// Sends `file` from `offset`, `count` bytes (or up to its end) over the
    /// stream socket `sock` and returns the bytes sent (asyncio's
    /// `loop.sock_sendfile(sock, file, offset, count, fallback=)`).
    ///
    /// On Linux a regular file goes with `sendfile(2)`, without copying
    /// through user space. When that is not possible (not a regular file,
    /// the kernel refuses the pair, another platform), `fallback` true reads
    /// the file in blocks on the default executor and sends them; `fallback`
    /// false fails with an [`Unsupported`](io::ErrorKind::Unsupported) error
    /// holding a [`SendfileNotAvailableError`](crate::SendfileNotAvailableError),
    /// having sent nothing. Either way the file position ends at
    /// `offset + bytes sent`, as in asyncio. `count` of `Some(0)` and a
    /// socket that is not `SOCK_STREAM` are
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) errors.
    #[doc(alias = "loop.sock_sendfile")]
    fn sock_sendfile<'a>(
        &'a self,
        sock: &'a impl AsFd,
        file: &'a impl AsFd,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
    ) -> impl Future<Output = io::Result<u64>> + 'a;
}

impl NetLoopExt for EventLoop {
    fn getaddrinfo<'h>(
        &self,
        host: impl Into<Option<&'h str>>,
        port: impl Into<Service>,
        hints: AddrInfoHints,
    ) -> impl Future<Output = io::Result<Vec<AddrInfo>>> + 'static {
        dns::getaddrinfo(self, host.into(), port.into(), hints)
    }

    fn getnameinfo(
        &self,
        addr: SocketAddr,
        flags: NameInfoFlags,
    ) -> impl Future<Output = io::Result<(String, String)>> + 'static {
        dns::getnameinfo(self, addr, flags)
    }

    fn sock_recv<'a>(
        &'a self,
        sock: &'a impl AsFd,
        nbytes: usize,
    ) -> impl Future<Output = io::Result<Vec<u8>>> + 'a {
        sock::recv(self, sock.as_fd(), nbytes)
    }

    fn sock_recv_into<'a>(
        &'a self,
        sock: &'a impl AsFd,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        sock::recv_into(self, sock.as_fd(), buf)
    }

    fn sock_recvfrom<'a>(
        &'a self,
        sock: &'a impl AsFd,
        bufsize: usize,
    ) -> impl Future<Output = io::Result<(Vec<u8>, Option<SockAddr>)>> + 'a {
        sock::recvfrom(self, sock.as_fd(), bufsize)
    }

    fn sock_recvfrom_into<'a>(
        &'a self,
        sock: &'a impl AsFd,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, Option<SockAddr>)>> + 'a {
        sock::recvfrom_into(self, sock.as_fd(), buf)
    }

    fn sock_sendall<'a>(
        &'a self,
        sock: &'a impl AsFd,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + 'a {
        sock::sendall(self, sock.as_fd(), data)
    }

    fn sock_sendto<'a>(
        &'a self,
        sock: &'a impl AsFd,
        data: &'a [u8],
        addr: impl Into<SockAddr>,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        sock::sendto(self, sock.as_fd(), data, addr.into())
    }

    fn sock_connect<'a>(
        &'a self,
        sock: &'a impl AsFd,
        addr: impl Into<SockAddr>,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        sock::connect(self, sock.as_fd(), addr.into())
    }

    fn sock_connect_host<'a>(
        &'a self,
        sock: &'a impl AsFd,
        host: &'a str,
        port: u16,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        sock::connect_host(self, sock.as_fd(), host, port)
    }

    fn sock_accept<'a>(
        &'a self,
        sock: &'a impl AsFd,
    ) -> impl Future<Output = io::Result<(OwnedFd, SockAddr)>> + 'a {
        sock::accept(self, sock.as_fd())
    }

    fn sock_sendfile<'a>(
        &'a self,
        sock: &'a impl AsFd,
        file: &'a impl AsFd,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
    ) -> impl Future<Output = io::Result<u64>> + 'a {
        sendfile::sock_sendfile(self, sock.as_fd(), file.as_fd(), offset, count, fallback)
    }
}
