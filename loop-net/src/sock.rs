//! The `sock_*` operations on raw non-blocking sockets.
//!
//! Each one is asyncio's algorithm: check the socket is non-blocking, try the
//! syscall at once, and only on `EAGAIN` wait for readiness through the loop
//! and retry (see `readiness.rs` for the waiting, the cancellation rule and
//! the fairness budget). Sends use `MSG_NOSIGNAL`, so a peer that went away
//! gives `EPIPE` instead of a `SIGPIPE`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use loop_core::EventLoop;
use rustix::buffer::spare_capacity;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use crate::addr::SockAddr;
use crate::readiness::{check_call, Direction, FdIo};

pub(crate) async fn recv(lp: &EventLoop, fd: BorrowedFd<'_>, nbytes: usize) -> io::Result<Vec<u8>> {
    check_call(lp, fd, "sock_recv")?;
    // Received straight into the vector's spare capacity (no zeroing). For
    // `u8` and the global allocator, `with_capacity(n)` has capacity exactly
    // `n`, which bounds the receive.
    let mut buf = Vec::with_capacity(nbytes);
    if nbytes == 0 {
        return Ok(buf);
    }
    let mut io = FdIo::new(lp, fd, Direction::Read, "sock_recv");
    io.run(|| {
        let (n, _) = rustix::net::recv(fd, spare_capacity(&mut buf), RecvFlags::empty())?;
        Ok(n)
    })
    .await?;
    Ok(buf)
}

pub(crate) async fn recv_into(
    lp: &EventLoop,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<usize> {
    check_call(lp, fd, "sock_recv_into")?;
    let mut io = FdIo::new(lp, fd, Direction::Read, "sock_recv_into");
    io.run(|| Ok(rustix::net::recv(fd, &mut *buf, RecvFlags::empty())?.0))
        .await
}

pub(crate) async fn recvfrom(
    lp: &EventLoop,
    fd: BorrowedFd<'_>,
    bufsize: usize,
) -> io::Result<(Vec<u8>, Option<SockAddr>)> {
    check_call(lp, fd, "sock_recvfrom")?;
    // A zero-length receive still takes a datagram off the queue, so it goes
    // through the kernel too (with an empty slice: `spare_capacity` wants
    // some capacity).
    let mut buf = Vec::with_capacity(bufsize);
    let mut io = FdIo::new(lp, fd, Direction::Read, "sock_recvfrom");
    let addr = io
        .run(|| {
            let (_, _, addr) = if bufsize == 0 {
                rustix::net::recvfrom(fd, &mut [0u8; 0][..], RecvFlags::empty())?
            } else {
                rustix::net::recvfrom(fd, spare_capacity(&mut buf), RecvFlags::empty())?
            };
            Ok(addr)
        })
        .await?;
    Ok((buf, addr.map(SockAddr::from_raw)))
}

pub(crate) async fn recvfrom_into(
    lp: &EventLoop,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SockAddr>)> {
    check_call(lp, fd, "sock_recvfrom_into")?;
    let mut io = FdIo::new(lp, fd, Direction::Read, "sock_recvfrom_into");
    let (n, addr) = io
        .run(|| {
            let (n, _, addr) = rustix::net::recvfrom(fd, &mut *buf, RecvFlags::empty())?;
            Ok((n, addr))
        })
        .await?;
    Ok((n, addr.map(SockAddr::from_raw)))
}

/// Sends all of `data` through `io`, adding each accepted chunk to `sent`
/// as it goes (so a caller that is cancelled half-way knows how far it got).
pub(crate) async fn send_all(
    io: &mut FdIo<'_>,
    fd: BorrowedFd<'_>,
    data: &[u8],
    sent: &mut u64,
) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let n = io
            .run(|| Ok(rustix::net::send(fd, rest, SendFlags::NOSIGNAL)?))
            .await?;
        rest = &rest[n..];
        *sent += n as u64;
    }
    Ok(())
}

pub(crate) async fn sendall(lp: &EventLoop, fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    check_call(lp, fd, "sock_sendall")?;
    let mut io = FdIo::new(lp, fd, Direction::Write, "sock_sendall");
    send_all(&mut io, fd, data, &mut 0).await
}

pub(crate) async fn sendto(
    lp: &EventLoop,
    fd: BorrowedFd<'_>,
    data: &[u8],
    addr: SockAddr,
) -> io::Result<usize> {
    check_call(lp, fd, "sock_sendto")?;
    let raw = addr.to_raw()?;
    let mut io = FdIo::new(lp, fd, Direction::Write, "sock_sendto");
    io.run(|| Ok(rustix::net::sendto(fd, data, SendFlags::NOSIGNAL, &raw)?))
        .await
}

pub(crate) async fn connect(lp: &EventLoop, fd: BorrowedFd<'_>, addr: SockAddr) -> io::Result<()> {
    check_call(lp, fd, "sock_connect")?;
    let raw = addr.to_raw()?;
    let mut io = FdIo::new(lp, fd, Direction::Write, "sock_connect");
    let mut waited = false;
    loop {
        match rustix::net::connect(fd, &raw) {
            Ok(()) => return Ok(()),
            Err(Errno::ISCONN) if waited => return Ok(()),
            // The connection goes on in the background (after EINTR too):
            // wait for writability, then read its outcome from SO_ERROR.
            Err(Errno::INPROGRESS) | Err(Errno::INTR) => {
                io.ready().await?;
                return match rustix::net::sockopt::socket_error(fd)? {
                    Ok(()) => Ok(()),
                    Err(e) => Err(e.into()),
                };
            }
            // A Unix socket whose listener's backlog is full: nothing is in
            // progress; try again when the socket turns writable.
            Err(Errno::AGAIN) => {
                io.ready().await?;
                waited = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// asyncio's `sock_connect` with a `(host, port)` to resolve first
/// (`_ensure_resolved` with the socket's family and type), then a connect
/// to the first address.
pub(crate) async fn connect_host(
    lp: &EventLoop,
    fd: BorrowedFd<'_>,
    host: &str,
    port: u16,
) -> io::Result<()> {
    use crate::dns::{AddrInfoHints, AddressFamily, SocketKind};
    check_call(lp, fd, "sock_connect")?;
    let family = match rustix::net::sockopt::socket_domain(fd)? {
        rustix::net::AddressFamily::INET => AddressFamily::INET,
        rustix::net::AddressFamily::INET6 => AddressFamily::INET6,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sock_connect: a host name needs an AF_INET or AF_INET6 socket",
            ))
        }
    };
    let socktype = match rustix::net::sockopt::socket_type(fd)? {
        rustix::net::SocketType::STREAM => SocketKind::STREAM,
        rustix::net::SocketType::DGRAM => SocketKind::DGRAM,
        _ => SocketKind::ANY,
    };
    let hints = AddrInfoHints {
        family,
        socktype,
        ..Default::default()
    };
    let infos = crate::dns::getaddrinfo(lp, Some(host), port.into(), hints).await?;
    let first = infos.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("sock_connect: no address for {host:?}"),
        )
    })?;
    connect(lp, fd, SockAddr::from(first.addr)).await
}

pub(crate) async fn accept(lp: &EventLoop, fd: BorrowedFd<'_>) -> io::Result<(OwnedFd, SockAddr)> {
    check_call(lp, fd, "sock_accept")?;
    let mut io = FdIo::new(lp, fd, Direction::Read, "sock_accept");
    let (conn, addr) = io
        .run(|| {
            Ok(rustix::net::acceptfrom_with(
                fd,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            )?)
        })
        .await?;
    let addr = addr.map_or(
        SockAddr::Other(crate::AddressFamily::UNSPEC),
        SockAddr::from_raw,
    );
    Ok((conn, addr))
}
