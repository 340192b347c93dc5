//! The listening sockets of `create_server` and `create_unix_server`: bound
//! here from hosts and a port or a path, or handed in (`sock=`), then given
//! to a [`Server`].
//!
//! asyncio's rules kept: host `""` is every interface, like no host
//! (`if host == '': hosts = [None]`); `sock=` excludes hosts and port (or
//! the path); a Unix server removes its socket file on close if the path
//! still names the same socket (`cleanup_socket`, 3.13), for a socket it
//! bound and for one handed in.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use loop_core::EventLoop;
use rustix::net::AddressFamily;

use super::given::{self, Families};
use super::{ensure_open, inet_family, stream_socket, IntoProtocol, ServerOptions};
use crate::addr::SockAddr;
use crate::dns::{self, AddrInfoFlags, AddrInfoHints, Service, SocketKind};
use crate::stream::server::{Factory, Server};

fn factory_of<F: IntoProtocol>(factory: impl Fn() -> F + 'static) -> Factory {
    Box::new(move || factory().into_protocol().0)
}

fn both_given(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} and sock can not be specified at the same time"),
    )
}

/// Checks a listening socket handed in, makes it non-blocking and listens
/// on it (again: that only sets the backlog). Returns whether it is TCP.
fn given_listener(sock: &OwnedFd, families: Families, backlog: usize) -> io::Result<bool> {
    let tcp = given::check(sock, families)?;
    given::set_nonblocking(sock)?;
    rustix::net::listen(sock, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(tcp)
}

pub(crate) async fn create_server<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl Fn() -> F + 'static,
    hosts: &[&str],
    port: Service,
    mut opts: ServerOptions,
) -> io::Result<Server> {
    ensure_open(lp)?;
    check_tls(&opts)?;
    if let Some(sock) = opts.sock.take() {
        if !hosts.is_empty() || !matches!(port, Service::Any | Service::Port(0)) {
            return Err(both_given("host/port"));
        }
        let tcp = given_listener(&sock, Families::Any, opts.backlog)?;
        let server = Server::new(lp, vec![sock], factory_of(factory), opts.backlog, tcp, None);
        return arm(server, &opts);
    }
    let hints = AddrInfoHints {
        family: opts.family.unwrap_or_default(),
        socktype: SocketKind::STREAM,
        flags: AddrInfoFlags::PASSIVE,
        ..Default::default()
    };
    // No host, or `""`, is every interface (asyncio: `hosts = [None]`).
    let mut lookups: Vec<Option<&str>> = hosts
        .iter()
        .map(|h| Some(*h).filter(|h| !h.is_empty()))
        .collect();
    if lookups.is_empty() {
        lookups.push(None);
    }
    lookups.dedup();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for host in lookups {
        for i in dns::getaddrinfo(lp, host, port.clone(), hints).await? {
            if !addrs.contains(&i.addr) {
                addrs.push(i.addr);
            }
        }
    }
    let mut fds = Vec::with_capacity(addrs.len());
    for addr in &addrs {
        fds.push(listen_tcp(addr, &opts)?);
    }
    let server = Server::new(lp, fds, factory_of(factory), opts.backlog, true, None);
    arm(server, &opts)
}

/// asyncio's up-front checks of the TLS options (a timeout `<= 0`).
fn check_tls(opts: &ServerOptions) -> io::Result<()> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &opts.tls {
        crate::tls::check_server(tls)?;
    }
    let _ = opts;
    Ok(())
}

/// What every new server gets from its options: the TLS handshake of its
/// connections, and serving at once unless `start_serving` is false.
fn arm(server: Server, opts: &ServerOptions) -> io::Result<Server> {
    #[cfg(feature = "tls")]
    if let Some(tls) = opts.tls.clone() {
        server.set_starter(crate::tls::server_starter(tls));
    }
    if opts.start_serving {
        server.start_serving().map_err(io::Error::from)?;
    }
    Ok(server)
}

fn listen_tcp(addr: &SocketAddr, opts: &ServerOptions) -> io::Result<OwnedFd> {
    let sock = stream_socket(inet_family(addr))?;
    if opts.reuse_address {
        rustix::net::sockopt::set_socket_reuseaddr(&sock, true)?;
    }
    if opts.reuse_port {
        rustix::net::sockopt::set_socket_reuseport(&sock, true)?;
    }
    if addr.is_ipv6() {
        // So that `::` and `0.0.0.0` can both be bound, as asyncio does.
        rustix::net::sockopt::set_ipv6_v6only(&sock, true)?;
    }
    rustix::net::bind(&sock, addr).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("error while attempting to bind on address {addr}: {e}"),
        )
    })?;
    rustix::net::listen(&sock, i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
    Ok(sock)
}

pub(crate) fn create_unix_server<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl Fn() -> F + 'static,
    path: &Path,
    mut opts: ServerOptions,
) -> io::Result<Server> {
    ensure_open(lp)?;
    check_tls(&opts)?;
    let (sock, bound) = match opts.sock.take() {
        Some(sock) => {
            if !path.as_os_str().is_empty() {
                return Err(both_given("path"));
            }
            given_listener(&sock, Families::Unix, opts.backlog)?;
            let bound = rustix::net::getsockname(&sock)
                .ok()
                .map(SockAddr::from_raw)
                .and_then(|a| a.as_unix().map(Path::to_path_buf))
                .unwrap_or_default();
            (sock, bound)
        }
        None => {
            if path.as_os_str().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path was not specified, and no sock specified",
                ));
            }
            (bind_unix(path, &opts)?, path.to_path_buf())
        }
    };
    // A file to remove on close: a named path (not abstract, not unnamed).
    let named = bound
        .as_os_str()
        .as_bytes()
        .first()
        .is_some_and(|b| *b != 0);
    let owned: Option<PathBuf> = (opts.cleanup_socket && named).then_some(bound);
    let server = Server::new(
        lp,
        vec![sock],
        factory_of(factory),
        opts.backlog,
        false,
        owned,
    );
    arm(server, &opts)
}

/// A listening Unix socket bound at `path` (a stale socket file there is
/// replaced first).
fn bind_unix(path: &Path, opts: &ServerOptions) -> io::Result<OwnedFd> {
    let abstract_name = path.as_os_str().as_bytes().first() == Some(&0);
    if !abstract_name {
        crate::owned_path::remove_stale_socket(path, rustix::net::SocketType::STREAM)?;
    }
    let sock = stream_socket(AddressFamily::UNIX)?;
    let addr = SockAddr::Unix(path.to_path_buf()).to_raw()?;
    rustix::net::bind(&sock, &addr).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!(
                "error while attempting to bind on address {}: {e}",
                path.display()
            ),
        )
    })?;
    rustix::net::listen(&sock, i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
    Ok(sock)
}
