#![cfg(feature = "net")]
//! Datagram endpoints (`create_datagram_endpoint`, `DatagramTransport`,
//! `DatagramProtocol`) over UDP and Unix datagram sockets, through the
//! facade: echo, connected endpoints and their address rule, errors that go
//! to `error_received` and leave the endpoint working (ICMP port
//! unreachable, EMSGSIZE both ways, a dead peer while paused), sends after
//! close, socket options (`reuse_port`, `allow_broadcast`, never
//! `SO_REUSEADDR`), existing sockets, Unix paths and their files, flow
//! control, fairness under a flood, the lifecycle, re-entrancy, and Python's
//! asyncio as a peer.
//!
//! Every wait is event-driven (a protocol callback wakes the test) and
//! bounded by a watchdog; the only timers are the ones a test measures and
//! the resending of datagrams that a lossy network could drop.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use aioloop::prelude::*;
use aioloop::{
    AddressFamily, DatagramAddr, DatagramLoopExt, DatagramOptions, DatagramProtocol,
    DatagramTransport, ExtraInfo, SockAddr,
};
use futures_lite::future;

use crate::util::{
    capture_warnings, finish, on_loop, record_exceptions, run, warnings_on_this_thread, Notify,
    LIMIT,
};

// ---------------------------------------------------------------------------
// Helpers

pub(crate) fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) fn inet(t: &DatagramTransport) -> SocketAddr {
    t.sockname()
        .and_then(|a| a.as_inet())
        .expect("an IP sockname")
}

pub(crate) fn local(addr: impl Into<DatagramAddr>) -> DatagramOptions {
    DatagramOptions::default().with_local_addr(addr)
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// One protocol callback, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    Made,
    Data(Vec<u8>, SockAddr),
    /// `error_received`: errno and kind.
    Error(Option<i32>, io::ErrorKind),
    Lost(Option<io::ErrorKind>),
    /// `pause_writing` / `resume_writing`, with the write buffer size then.
    Pause(usize),
    Resume(usize),
}

/// What a [`Rec`] protocol saw, shared with the test.
#[derive(Default)]
pub(crate) struct Log {
    notify: Rc<Notify>,
    events: RefCell<Vec<Ev>>,
    transport: RefCell<Option<DatagramTransport>>,
    /// Send every datagram back to its sender.
    pub(crate) echo: Cell<bool>,
    /// Illegal transitions (a callback before `connection_made` or after
    /// `connection_lost`, a second `connection_lost`).
    violations: RefCell<Vec<String>>,
    /// Inside a callback of this protocol right now.
    busy: Cell<bool>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("events", &self.events).finish()
    }
}

impl Log {
    fn new() -> Rc<Log> {
        Rc::new(Log::default())
    }

    pub(crate) fn events(&self) -> Vec<Ev> {
        self.events.borrow().clone()
    }

    pub(crate) fn data(&self) -> Vec<(Vec<u8>, SockAddr)> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Ev::Data(d, a) => Some((d.clone(), a.clone())),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.events.borrow().iter().filter(|e| f(e)).count()
    }

    pub(crate) fn errors(&self) -> Vec<Option<i32>> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Ev::Error(n, _) => Some(*n),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn lost(&self) -> usize {
        self.count(|e| matches!(e, Ev::Lost(_)))
    }

    fn paused(&self) -> bool {
        let ev = self.events.borrow();
        let p = ev.iter().filter(|e| matches!(e, Ev::Pause(_))).count();
        let r = ev.iter().filter(|e| matches!(e, Ev::Resume(_))).count();
        p > r
    }

    pub(crate) fn until<'a>(
        &'a self,
        cond: impl Fn(&Log) -> bool + 'a,
    ) -> impl std::future::Future<Output = ()> + 'a {
        self.notify.until(move || cond(self))
    }

    fn record(&self, ev: Ev) {
        assert!(!self.busy.replace(true), "a protocol method was re-entered");
        let state_ok = {
            let events = self.events.borrow();
            let made = events.first() == Some(&Ev::Made);
            let lost = events.iter().any(|e| matches!(e, Ev::Lost(_)));
            match ev {
                Ev::Made => events.is_empty(),
                _ => made && !lost,
            }
        };
        if !state_ok {
            self.violations
                .borrow_mut()
                .push(format!("{ev:?} after {:?}", self.events.borrow()));
        }
        self.events.borrow_mut().push(ev);
    }

    fn done(&self) {
        self.busy.set(false);
        self.notify.wake();
    }

    fn transport(&self) -> DatagramTransport {
        self.transport
            .borrow()
            .clone()
            .expect("connection_made ran")
    }

    pub(crate) fn assert_clean(&self) {
        assert!(
            self.violations.borrow().is_empty(),
            "{:?}",
            self.violations.borrow()
        );
    }
}

/// A protocol that records every callback into a [`Log`].
struct Rec(Rc<Log>);

impl DatagramProtocol for Rec {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.0.record(Ev::Made);
        *self.0.transport.borrow_mut() = Some(transport);
        self.0.done();
    }

    fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
        self.0.record(Ev::Data(data.to_vec(), addr.clone()));
        if self.0.echo.get() {
            let t = self.0.transport();
            t.sendto(data, Some(addr)).expect("echo sendto");
        }
        self.0.done();
    }

    fn error_received(&mut self, error: io::Error) {
        self.0.record(Ev::Error(errno(&error), error.kind()));
        self.0.done();
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.0.record(Ev::Lost(error.map(|e| e.kind())));
        // Let go of the transport, as a well-behaved protocol does.
        self.0.transport.borrow_mut().take();
        self.0.done();
    }

    fn pause_writing(&mut self) {
        let size = self.0.transport().get_write_buffer_size();
        self.0.record(Ev::Pause(size));
        self.0.done();
    }

    fn resume_writing(&mut self) {
        let size = self.0.transport().get_write_buffer_size();
        self.0.record(Ev::Resume(size));
        self.0.done();
    }
}

/// A new endpoint with a recording protocol, reading by completion on
/// io_uring and by readiness elsewhere.
pub(crate) async fn endpoint(
    lp: &EventLoop,
    opts: DatagramOptions,
) -> io::Result<(DatagramTransport, Rc<Log>)> {
    let log = Log::new();
    let l = log.clone();
    let (t, _handle) = lp.create_datagram_endpoint(move || Rec(l), opts).await?;
    assert_eq!(
        log.events(),
        vec![Ev::Made],
        "connection_made ran before the return"
    );
    assert_eq!(
        lp.has_reader(t.fd().expect("an open endpoint")),
        lp.backend() != aioloop::Backend::Uring,
        "the endpoint reads by completion on io_uring, by readiness elsewhere"
    );
    Ok((t, log))
}

/// An echoing endpoint on 127.0.0.1.
pub(crate) async fn echo_server(lp: &EventLoop) -> (DatagramTransport, Rc<Log>) {
    let (t, log) = endpoint(lp, local(any_port())).await.expect("echo server");
    log.echo.set(true);
    (t, log)
}

/// Closes `t` and waits for its `connection_lost`, checking it came once.
pub(crate) async fn close_and_wait(t: &DatagramTransport, log: &Log) {
    t.close();
    assert!(t.is_closing());
    log.until(|l| l.lost() > 0).await;
    assert_eq!(log.lost(), 1);
    log.assert_clean();
}

/// Calls `send` now and every `every` until `cond` holds (resending is what
/// a datagram application does; loopback does not lose datagrams, but a
/// kernel under memory pressure may).
async fn resend_until(
    lp: &EventLoop,
    log: &Log,
    every: Duration,
    mut send: impl FnMut(),
    cond: impl Fn(&Log) -> bool,
) {
    loop {
        send();
        let done = future::or(
            async {
                log.until(&cond).await;
                true
            },
            async {
                let _ = lp.sleep(every).await;
                false
            },
        )
        .await;
        if done {
            return;
        }
    }
}

/// A fresh directory for Unix sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aioloop-dgram-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_socket_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

fn fd_of(t: &DatagramTransport) -> BorrowedFd<'static> {
    // SAFETY: the endpoint owns the fd and stays open for every use of the
    // returned borrow in these tests.
    unsafe { BorrowedFd::borrow_raw(t.fd().expect("an open endpoint")) }
}

/// Datagram `i` of a numbered stream: its index, then filler.
pub(crate) fn numbered(i: u32, len: usize) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.resize(len.max(4), (i % 251) as u8);
    v
}

pub(crate) fn number_of(d: &[u8]) -> u32 {
    u32::from_be_bytes(d[..4].try_into().unwrap())
}

// ---------------------------------------------------------------------------
// UDP

#[test]
fn udp_echo_between_two_endpoints() {
    on_loop(udp_echo);
}

/// The body of [`udp_echo_between_two_endpoints`] (uring_datagrams.rs
/// runs it on the completion path).
pub(crate) async fn udp_echo(l: EventLoop) {
    {
        let (server, slog) = echo_server(&l).await;
        let (client, clog) = endpoint(&l, local(any_port())).await.unwrap();
        let to = SockAddr::from(inet(&server));
        let sizes = [0usize, 1, 100, 1500, 9000, 65_507];
        for (i, &n) in sizes.iter().enumerate() {
            let mut d = vec![(i + 1) as u8; n];
            if n >= 4 {
                d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            }
            client.sendto(&d, Some(to.clone())).unwrap();
        }
        clog.until(|l| l.data().len() == sizes.len()).await;
        let got = clog.data();
        for ((d, from), &n) in got.iter().zip(&sizes) {
            assert_eq!(d.len(), n, "in order, whole");
            assert_eq!(*from, to, "from the server");
        }
        let client_addr = SockAddr::from(inet(&client));
        assert!(slog.data().iter().all(|(_, a)| *a == client_addr));

        // Extra info.
        assert_eq!(server.peername(), None);
        assert_eq!(server.get_extra_info("peername"), None);
        assert_eq!(
            server.get_extra_info("sockname"),
            Some(ExtraInfo::Addr(to.clone()))
        );
        let fd = server.fd().unwrap();
        assert_eq!(server.get_extra_info("socket"), Some(ExtraInfo::Fd(fd)));
        assert_eq!(server.get_extra_info("no such thing"), None);
        assert_eq!(server.get_write_buffer_size(), 0);
        assert_eq!(server.get_write_buffer_limits(), (16 * 1024, 64 * 1024));
        assert!(server.get_loop().unwrap().is_running());
        assert!(format!("{server:?}").contains("DatagramTransport"));

        close_and_wait(&client, &clog).await;
        close_and_wait(&server, &slog).await;
        assert_eq!(
            server.fd(),
            None,
            "the socket is closed after connection_lost"
        );
        assert_eq!(server.get_extra_info("socket"), None);
        assert_eq!(clog.events().last(), Some(&Ev::Lost(None)));
        assert_eq!(slog.errors(), vec![]);
    }
}

#[test]
fn a_connected_endpoint_sends_with_none_and_refuses_another_address() {
    on_loop(|l| async move {
        let (server, slog) = echo_server(&l).await;
        let to = inet(&server);
        let (client, clog) = endpoint(&l, DatagramOptions::default().with_remote_addr(to))
            .await
            .unwrap();
        assert_eq!(client.peername(), Some(SockAddr::from(to)));
        assert_eq!(client.remote_addr(), Some(SockAddr::from(to)));
        client.sendto(b"one", None).unwrap();
        client.sendto(b"two", Some(to.into())).unwrap();
        let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = client.sendto(b"three", Some(other.into())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string()
                .contains(&format!("Invalid address: must be None or {to}")),
            "{err}"
        );
        clog.until(|l| l.data().len() == 2).await;
        assert_eq!(clog.data()[0].0, b"one");
        assert_eq!(clog.data()[1].0, b"two");
        assert_eq!(slog.data().len(), 2, "the refused datagram was never sent");

        // A host name is resolved, and the endpoint is connected to it.
        let (named, nlog) = endpoint(
            &l,
            DatagramOptions {
                family: Some(AddressFamily::INET),
                ..DatagramOptions::default().with_remote_addr(("localhost", to.port()))
            },
        )
        .await
        .unwrap();
        assert_eq!(named.peername(), Some(SockAddr::from(to)));
        named.sendto(b"by name", None).unwrap();
        nlog.until(|l| l.data().len() == 1).await;

        // An endpoint without a remote address needs one.
        let (free, flog) = endpoint(&l, local(any_port())).await.unwrap();
        let err = free.sendto(b"x", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let unnamed = SockAddr::Unix(PathBuf::new());
        let err = free.sendto(b"x", Some(unnamed)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);

        for (t, log) in [
            (&client, &clog),
            (&named, &nlog),
            (&free, &flog),
            (&server, &slog),
        ] {
            close_and_wait(t, log).await;
        }
    });
}

#[test]
fn icmp_port_unreachable_is_error_received_and_the_endpoint_keeps_working() {
    on_loop(icmp_port_unreachable);
}

/// The body of [`icmp_port_unreachable_is_error_received_and_the_endpoint_keeps_working`].
pub(crate) async fn icmp_port_unreachable(l: EventLoop) {
    {
        // A port nobody listens on: bound, then released.
        let port = UdpSocket::bind(any_port())
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let (client, clog) = endpoint(&l, DatagramOptions::default().with_remote_addr(to))
            .await
            .unwrap();
        let c = client.clone();
        resend_until(
            &l,
            &clog,
            Duration::from_millis(50),
            move || c.sendto(b"anyone?", None).unwrap(),
            |l| !l.errors().is_empty(),
        )
        .await;
        assert_eq!(clog.errors()[0], Some(libc_econnrefused()));
        assert!(!client.is_closing(), "an error does not close the endpoint");
        assert_eq!(clog.lost(), 0);

        // Someone listens there now: the same endpoint reaches it.
        let now_there = UdpSocket::bind(to).expect("rebinding the released port");
        let (server, slog) = endpoint(&l, DatagramOptions::default().with_sock(now_there))
            .await
            .unwrap();
        slog.echo.set(true);
        let c = client.clone();
        resend_until(
            &l,
            &clog,
            Duration::from_millis(50),
            move || c.sendto(b"hello again", None).unwrap(),
            |l| !l.data().is_empty(),
        )
        .await;
        assert_eq!(
            clog.data()[0],
            (b"hello again".to_vec(), SockAddr::from(to))
        );
        close_and_wait(&client, &clog).await;
        close_and_wait(&server, &slog).await;
    }
}

fn libc_econnrefused() -> i32 {
    io::Error::from(io::ErrorKind::ConnectionRefused)
        .raw_os_error()
        .unwrap_or(111)
}

const EMSGSIZE: i32 = 90;

#[test]
fn a_datagram_too_long_to_send_is_error_received_and_the_endpoint_keeps_working() {
    on_loop(|l| async move {
        let (server, slog) = echo_server(&l).await;
        let (client, clog) = endpoint(
            &l,
            DatagramOptions::default().with_remote_addr(inet(&server)),
        )
        .await
        .unwrap();
        client.sendto(&vec![7u8; 70_000], None).unwrap();
        // Synchronous, as asyncio: the protocol was not busy.
        assert_eq!(clog.errors(), vec![Some(EMSGSIZE)]);
        assert_eq!(client.get_write_buffer_size(), 0, "nothing queued");
        assert!(!client.is_closing());
        client.sendto(b"small", None).unwrap();
        clog.until(|l| !l.data().is_empty()).await;
        assert_eq!(clog.data()[0].0, b"small");
        assert_eq!(slog.data().len(), 1);
        close_and_wait(&client, &clog).await;
        close_and_wait(&server, &slog).await;
    });
}

/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`: `sendto` after close is
/// dropped silently until the 5th, which logs "socket.send() raised
/// exception." (once here; asyncio repeats it).
#[test]
fn the_fifth_send_after_close_logs_asyncios_warning_once() {
    capture_warnings();
    on_loop(|l| async move {
        let (server, _slog) = echo_server(&l).await;
        let to = SockAddr::from(inet(&server));
        let (t, _log) = endpoint(&l, local(any_port())).await.unwrap();
        t.close();
        let warned = || {
            warnings_on_this_thread()
                .iter()
                .filter(|m| *m == "socket.send() raised exception.")
                .count()
        };
        for i in 1..=12u64 {
            t.sendto(b"late", Some(to.clone())).unwrap();
            assert_eq!(t.sends_after_close(), i);
            assert_eq!(warned(), usize::from(i >= 5), "after {i} sends");
        }
    });
}

#[test]
fn sendto_after_close_is_dropped_and_counted() {
    on_loop(|l| async move {
        let (server, slog) = echo_server(&l).await;
        let to = SockAddr::from(inet(&server));
        let (t, log) = endpoint(&l, local(any_port())).await.unwrap();
        t.close();
        assert!(t.is_closing());
        t.sendto(b"late", Some(to.clone())).unwrap();
        assert_eq!(t.sends_after_close(), 1);
        t.close();
        t.abort();
        assert_eq!(log.lost(), 0, "connection_lost comes through the loop");
        log.until(|l| l.lost() > 0).await;
        t.sendto(b"later", Some(to.clone())).unwrap();
        t.sendto(b"", Some(to)).unwrap();
        assert_eq!(t.sends_after_close(), 3);
        // A few iterations: nothing more is delivered, nothing arrives.
        for _ in 0..5 {
            future::yield_now().await;
        }
        assert_eq!(log.events(), vec![Ev::Made, Ev::Lost(None)]);
        assert!(slog.data().is_empty());
        close_and_wait(&server, &slog).await;
    });
}

#[test]
fn reuse_port_is_opt_in_and_reuse_address_is_never_set() {
    on_loop(|l| async move {
        let shared = || DatagramOptions {
            reuse_port: true,
            ..local(any_port())
        };
        let (a, alog) = endpoint(&l, shared()).await.unwrap();
        let port = inet(&a);
        let (b, blog) = endpoint(
            &l,
            DatagramOptions {
                reuse_port: true,
                ..local(port)
            },
        )
        .await
        .expect("a second endpoint on the same port with reuse_port");
        assert_eq!(inet(&b), port);
        for t in [&a, &b] {
            assert!(rustix::net::sockopt::socket_reuseport(fd_of(t)).unwrap());
            assert!(!rustix::net::sockopt::socket_reuseaddr(fd_of(t)).unwrap());
        }
        // Without it, the port is taken.
        let err = endpoint(&l, local(port)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string()
                .contains(&format!("error while attempting to bind on address {port}")),
            "{err}"
        );
        let (plain, plog) = endpoint(&l, local(any_port())).await.unwrap();
        assert!(!rustix::net::sockopt::socket_reuseport(fd_of(&plain)).unwrap());
        assert!(!rustix::net::sockopt::socket_reuseaddr(fd_of(&plain)).unwrap());

        // Datagrams to the port reach one of the two.
        let sender = UdpSocket::bind(any_port()).unwrap();
        let a2 = alog.clone();
        let b2 = blog.clone();
        let got = future::or(
            async move {
                a2.until(|l| !l.data().is_empty()).await;
            },
            async move {
                b2.until(|l| !l.data().is_empty()).await;
            },
        );
        sender.send_to(b"to whoever", port).unwrap();
        got.await;
        for (t, log) in [(&a, &alog), (&b, &blog), (&plain, &plog)] {
            close_and_wait(t, log).await;
        }
    });
}

#[test]
fn allow_broadcast_sets_so_broadcast_and_keeps_remote_addr_as_the_destination() {
    on_loop(|l| async move {
        let (server, slog) = echo_server(&l).await;
        let to = inet(&server);
        let (plain, plog) = endpoint(&l, local(any_port())).await.unwrap();
        assert!(!rustix::net::sockopt::socket_broadcast(fd_of(&plain)).unwrap());

        let (b, blog) = endpoint(
            &l,
            DatagramOptions {
                allow_broadcast: true,
                ..DatagramOptions::default().with_remote_addr(to)
            },
        )
        .await
        .unwrap();
        assert!(rustix::net::sockopt::socket_broadcast(fd_of(&b)).unwrap());
        // asyncio does not connect a broadcasting endpoint, but sendto(data,
        // None) still goes to remote_addr, and only it may be named.
        assert_eq!(b.peername(), None);
        assert_eq!(b.remote_addr(), Some(SockAddr::from(to)));
        b.sendto(b"one", None).unwrap();
        b.sendto(b"two", Some(to.into())).unwrap();
        let err = b
            .sendto(b"x", Some(SockAddr::from(inet(&plain))))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        blog.until(|l| l.data().len() == 2).await;
        for (t, log) in [(&b, &blog), (&plain, &plog), (&server, &slog)] {
            close_and_wait(t, log).await;
        }
    });
}

#[test]
fn an_existing_socket_is_used_as_it_is() {
    on_loop(|l| async move {
        // A blocking std socket: made non-blocking.
        let std_sock = UdpSocket::bind(any_port()).unwrap();
        let addr = std_sock.local_addr().unwrap();
        let (server, slog) = endpoint(&l, DatagramOptions::default().with_sock(std_sock))
            .await
            .unwrap();
        slog.echo.set(true);
        assert_eq!(inet(&server), addr);
        let fl = rustix::fs::fcntl_getfl(fd_of(&server)).unwrap();
        assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));

        // A connected one: its peer is the remote address.
        let connected = UdpSocket::bind(any_port()).unwrap();
        connected.connect(addr).unwrap();
        let (client, clog) = endpoint(&l, DatagramOptions::default().with_sock(connected))
            .await
            .unwrap();
        assert_eq!(client.peername(), Some(SockAddr::from(addr)));
        client.sendto(b"via sock", None).unwrap();
        clog.until(|l| !l.data().is_empty()).await;

        // No other option with sock (asyncio's ValueError).
        let extra = DatagramOptions {
            reuse_port: true,
            ..DatagramOptions::default().with_sock(UdpSocket::bind(any_port()).unwrap())
        };
        let err = endpoint(&l, extra).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("reuse_port=true"), "{err}");
        // Not a datagram socket.
        let tcp = OwnedFd::from(TcpListener::bind(any_port()).unwrap());
        let err = endpoint(&l, DatagramOptions::default().with_sock(tcp))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("A datagram socket was expected"),
            "{err}"
        );

        close_and_wait(&client, &clog).await;
        close_and_wait(&server, &slog).await;
    });
}

#[test]
fn bad_options_are_clear_errors() {
    let lp = EventLoop::new().unwrap();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let err = endpoint(&l, DatagramOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("unexpected address family"));
        // Mixing a path with an IP address.
        let mixed = DatagramOptions::default()
            .with_local_addr(Path::new("/tmp/x.sock"))
            .with_remote_addr(any_port());
        assert_eq!(
            endpoint(&l, mixed).await.unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // A family that contradicts the address.
        let v6 = DatagramOptions {
            family: Some(AddressFamily::INET6),
            ..local(any_port())
        };
        let err = endpoint(&l, v6).await.unwrap_err();
        assert!(
            err.to_string().contains("can not get address information"),
            "{err}"
        );
        let unix_fam = DatagramOptions {
            family: Some(AddressFamily::INET),
            ..local(Path::new("/tmp/x.sock"))
        };
        assert_eq!(
            endpoint(&l, unix_fam).await.unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // A name that does not resolve keeps the resolver's error.
        let nowhere = local(("no-such-host.invalid", 0));
        let err = endpoint(&l, nowhere).await.unwrap_err();
        assert!(aioloop::ResolveError::from_io(&err).is_some(), "{err:?}");

        // Only a family: an unbound socket that can still send.
        let (server, slog) = echo_server(&l).await;
        let (t, log) = endpoint(
            &l,
            DatagramOptions {
                family: Some(AddressFamily::INET),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        t.sendto(b"unbound", Some(inet(&server).into())).unwrap();
        log.until(|l| !l.data().is_empty()).await;
        close_and_wait(&t, &log).await;
        close_and_wait(&server, &slog).await;
    });
    // A closed loop.
    let closed = EventLoop::new().unwrap();
    closed.close().unwrap();
    let err = future::block_on(endpoint(&closed, local(any_port()))).unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// Unix datagram sockets

#[test]
fn unix_datagram_endpoints_by_path_both_directions_and_their_files() {
    let lp = EventLoop::new().unwrap();
    let seen = record_exceptions(&lp);
    let dir = TempDir::new();
    let (pa, pb) = (dir.path("a.sock"), dir.path("b.sock"));
    let l = lp.clone();
    let (pa2, pb2) = (pa.clone(), pb.clone());
    run(&lp, async move {
        let (a, alog) = endpoint(&l, local(pa2.as_path())).await.unwrap();
        let (b, blog) = endpoint(
            &l,
            DatagramOptions::default()
                .with_local_addr(pb2.clone())
                .with_remote_addr(pa2.clone()),
        )
        .await
        .unwrap();
        assert!(is_socket_file(&pa2) && is_socket_file(&pb2));
        assert_eq!(a.sockname(), Some(SockAddr::Unix(pa2.clone())));
        assert_eq!(b.peername(), Some(SockAddr::Unix(pa2.clone())));

        b.sendto(b"b to a", None).unwrap();
        alog.until(|l| !l.data().is_empty()).await;
        assert_eq!(
            alog.data()[0],
            (b"b to a".to_vec(), SockAddr::Unix(pb2.clone()))
        );
        a.sendto(b"a to b", Some(SockAddr::Unix(pb2.clone())))
            .unwrap();
        blog.until(|l| !l.data().is_empty()).await;
        assert_eq!(
            blog.data()[0],
            (b"a to b".to_vec(), SockAddr::Unix(pa2.clone()))
        );

        // An unnamed sender's address is the empty path.
        let anon = UnixDatagram::unbound().unwrap();
        anon.send_to(b"anonymous", &pa2).unwrap();
        alog.until(|l| l.data().len() == 2).await;
        assert_eq!(alog.data()[1].1, SockAddr::Unix(PathBuf::new()));

        // A path in use is refused, and left alone.
        let err = endpoint(&l, local(pa2.as_path())).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(is_socket_file(&pa2));

        close_and_wait(&b, &blog).await;
        close_and_wait(&a, &alog).await;
    });
    assert!(
        !pa.exists() && !pb.exists(),
        "the endpoints removed their files"
    );

    // A stale file (its socket is gone) is replaced; a regular file is not.
    let stale = dir.path("stale.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(is_socket_file(&stale));
    let plain = dir.path("plain");
    std::fs::write(&plain, b"keep me").unwrap();
    let l = lp.clone();
    let (stale2, plain2) = (stale.clone(), plain.clone());
    run(&lp, async move {
        let (t, log) = endpoint(&l, local(stale2.as_path())).await.unwrap();
        let peer = UnixDatagram::unbound().unwrap();
        peer.send_to(b"fresh", &stale2).unwrap();
        log.until(|l| !l.data().is_empty()).await;
        let err = endpoint(&l, local(plain2.as_path())).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        close_and_wait(&t, &log).await;
    });
    assert!(!stale.exists());
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");

    // A file replaced behind the endpoint's back is not the endpoint's to
    // remove.
    let moved = dir.path("moved.sock");
    let l = lp.clone();
    let moved2 = moved.clone();
    run(&lp, async move {
        let (t, log) = endpoint(&l, local(moved2.as_path())).await.unwrap();
        std::fs::remove_file(&moved2).unwrap();
        std::fs::write(&moved2, b"someone else's").unwrap();
        close_and_wait(&t, &log).await;
    });
    assert_eq!(std::fs::read(&moved).unwrap(), b"someone else's");
    drop(dir);
    finish(&lp, &seen);
}

#[cfg(target_os = "linux")]
#[test]
fn unix_abstract_names_have_no_file() {
    use std::os::unix::ffi::OsStringExt;
    let name = PathBuf::from(std::ffi::OsString::from_vec(
        format!("\0aioloop-dgram-{}", std::process::id()).into_bytes(),
    ));
    on_loop(|l| async move {
        let (a, alog) = endpoint(&l, local(name.clone())).await.unwrap();
        let (b, blog) = endpoint(
            &l,
            DatagramOptions::default().with_remote_addr(name.clone()),
        )
        .await
        .unwrap();
        b.sendto(b"abstract", None).unwrap();
        alog.until(|l| !l.data().is_empty()).await;
        assert_eq!(a.sockname(), Some(SockAddr::Unix(name.clone())));
        close_and_wait(&b, &blog).await;
        close_and_wait(&a, &alog).await;
    });
}

#[test]
fn a_unix_datagram_longer_than_64_kib_is_dropped_and_reported() {
    on_loop(unix_datagram_over_64_kib);
}

/// The body of [`a_unix_datagram_longer_than_64_kib_is_dropped_and_reported`].
pub(crate) async fn unix_datagram_over_64_kib(l: EventLoop) {
    {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let (t, log) = endpoint(&l, DatagramOptions::default().with_sock(ours))
            .await
            .unwrap();
        theirs.send(&vec![1u8; 100_000]).unwrap();
        theirs.send(b"next").unwrap();
        log.until(|l| !l.data().is_empty()).await;
        assert_eq!(log.errors(), vec![Some(EMSGSIZE)]);
        assert_eq!(log.data()[0].0, b"next");
        // Exactly 64 KiB still fits.
        theirs.send(&vec![2u8; 64 * 1024]).unwrap();
        log.until(|l| l.data().len() == 2).await;
        assert_eq!(log.data()[1].0.len(), 64 * 1024);
        close_and_wait(&t, &log).await;
    }
}

// ---------------------------------------------------------------------------
// Flow control

/// Sends numbered datagrams of `len` bytes until the protocol is paused;
/// returns how many were sent. Panics if it never pauses.
fn send_until_paused(t: &DatagramTransport, log: &Log, first: u32, len: usize) -> u32 {
    let mut i = first;
    while !log.paused() {
        assert!(i - first < 100_000, "pause_writing never came");
        t.sendto(&numbered(i, len), None).unwrap();
        i += 1;
    }
    i - first
}

/// Reads every datagram `peer` has, into `out`, then wakes `notify`.
fn drain(peer: &UnixDatagram, out: &RefCell<Vec<Vec<u8>>>, notify: &Notify) {
    let mut buf = vec![0u8; 70_000];
    loop {
        match peer.recv(&mut buf) {
            Ok(n) => out.borrow_mut().push(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("peer recv: {e}"),
        }
    }
    notify.wake();
}

#[test]
fn pause_writing_above_high_water_and_resume_writing_at_low_water_in_order() {
    on_loop(|l| async move {
        // A socketpair whose receiver does not read: the kernel takes a few
        // datagrams, then says EAGAIN.
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let peer = Rc::new(peer);
        let (t, log) = endpoint(&l, DatagramOptions::default().with_sock(ours))
            .await
            .unwrap();
        t.set_write_buffer_limits(Some(20_000), Some(5_000))
            .unwrap();
        assert_eq!(t.get_write_buffer_limits(), (5_000, 20_000));
        let sent = send_until_paused(&t, &log, 0, 1000);
        // Synchronous, as asyncio: the protocol was not busy.
        let size = t.get_write_buffer_size();
        assert!(size > 20_000, "{size}");
        assert!(matches!(log.events().last(), Some(Ev::Pause(s)) if *s == size));

        // A second protocol while paused gets pause_writing at once, and the
        // resume_writing that pairs with it.
        let log2 = Log::new();
        log2.record(Ev::Made);
        log2.done();
        *log2.transport.borrow_mut() = Some(t.clone());
        let handle = aioloop::ProtocolHandle::new(Rec(log2.clone()));
        t.set_protocol(handle.clone());
        assert!(t
            .get_protocol()
            .ptr_eq(&aioloop::ProtocolHandle::<dyn DatagramProtocol>::from(
                handle
            )));
        assert!(log2.paused());

        // The peer reads: the queue drains in order, the protocol resumes.
        let got = Rc::new(RefCell::new(Vec::new()));
        let (p, g, n) = (peer.clone(), got.clone(), log2.notify.clone());
        l.add_reader(peer.as_raw_fd(), move || drain(&p, &g, &n))
            .unwrap();
        log2.until(|l| !l.paused()).await;
        let resumed_at = match log2.events().last() {
            Some(Ev::Resume(s)) => *s,
            other => panic!("expected resume_writing, got {other:?}"),
        };
        assert!(resumed_at <= 5_000, "{resumed_at}");
        assert_eq!(
            log.count(|e| matches!(e, Ev::Resume(_))),
            0,
            "the old protocol is out"
        );
        let g = got.clone();
        log2.notify
            .until(|| g.borrow().len() == sent as usize)
            .await;
        assert_eq!(t.get_write_buffer_size(), 0);
        let numbers: Vec<u32> = got.borrow().iter().map(|d| number_of(d)).collect();
        assert_eq!(
            numbers,
            (0..sent).collect::<Vec<_>>(),
            "in order, none lost"
        );
        l.remove_reader(peer.as_raw_fd()).unwrap();
        close_and_wait(&t, &log2).await;
        assert_eq!(log.lost(), 0);
    });
}

#[test]
fn notices_caused_from_inside_a_callback_come_right_after_it() {
    // The protocol sends from datagram_received until the queue is above
    // high water: pause_writing cannot re-enter it, so it comes after.
    struct Burst {
        log: Rc<Log>,
        inside: Rc<Cell<bool>>,
        order: Rc<RefCell<Vec<&'static str>>>,
        t: Option<DatagramTransport>,
    }
    impl DatagramProtocol for Burst {
        fn connection_made(&mut self, t: DatagramTransport) {
            self.t = Some(t);
        }
        fn datagram_received(&mut self, _: &[u8], _: SockAddr) {
            self.inside.set(true);
            self.order.borrow_mut().push("datagram_received");
            let t = self.t.clone().unwrap();
            for i in 0..200 {
                t.sendto(&numbered(i, 1000), None).unwrap();
            }
            // Also an error caused from inside: reported after, in order.
            t.sendto(&vec![0u8; 300_000], None).unwrap();
            self.inside.set(false);
        }
        fn error_received(&mut self, e: io::Error) {
            assert!(!self.inside.get());
            self.order.borrow_mut().push("error_received");
            self.log.record(Ev::Error(e.raw_os_error(), e.kind()));
            self.log.done();
        }
        fn pause_writing(&mut self) {
            assert!(
                !self.inside.get(),
                "pause_writing re-entered datagram_received"
            );
            self.order.borrow_mut().push("pause_writing");
            self.log.notify.wake();
        }
        fn resume_writing(&mut self) {
            self.order.borrow_mut().push("resume_writing");
            self.log.notify.wake();
        }
    }
    let lp = EventLoop::new().unwrap();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let log = Log::new();
    log.record(Ev::Made);
    log.done();
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    run(&lp, async move {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let lg = log.clone();
        let o2 = o.clone();
        let (t, _h) = l
            .create_datagram_endpoint(
                move || Burst {
                    log: lg,
                    inside: Rc::new(Cell::new(false)),
                    order: o2,
                    t: None,
                },
                DatagramOptions::default().with_sock(ours),
            )
            .await
            .unwrap();
        peer.send(b"go").unwrap();
        let o3 = o.clone();
        log.notify.until(|| o3.borrow().len() >= 2).await;
        assert!(t.get_write_buffer_size() > 64 * 1024);
        let drained = RefCell::new(Vec::new());
        let o4 = o.clone();
        // The peer reads until the queue is empty.
        let peer2 = Rc::new(peer);
        let p = peer2.clone();
        let tt = t.clone();
        let d = Rc::new(drained);
        let d2 = d.clone();
        let n = log.notify.clone();
        l.add_reader(peer2.as_raw_fd(), move || drain(&p, &d2, &n))
            .unwrap();
        log.notify
            .until(|| o4.borrow().contains(&"resume_writing") && tt.get_write_buffer_size() == 0)
            .await;
        l.remove_reader(peer2.as_raw_fd()).unwrap();
        t.abort();
    });
    let order = order.borrow().clone();
    // The oversized datagram is queued behind the others (the queue was not
    // empty), so its EMSGSIZE comes from the flush, after the pause.
    assert_eq!(
        &order[..2],
        &["datagram_received", "pause_writing"],
        "{order:?}"
    );
    assert!(order.contains(&"error_received"), "{order:?}");
    assert_eq!(order.last(), Some(&"resume_writing"), "{order:?}");
    finish(&lp, &seen);
}

#[test]
fn a_send_error_while_paused_still_resumes_and_keeps_the_endpoint_open() {
    // Lesson 4: every error branch of the flush ends armed, resumed or
    // closed. The peer goes away while datagrams are queued: each fails.
    on_loop(|l| async move {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        let (t, log) = endpoint(&l, DatagramOptions::default().with_sock(ours))
            .await
            .unwrap();
        t.set_write_buffer_limits(Some(10_000), None).unwrap();
        send_until_paused(&t, &log, 0, 1000);
        let queued = (t.get_write_buffer_size()) / (1000 + 8);
        drop(peer);
        log.until(|l| !l.paused()).await;
        let errors = log.errors();
        assert_eq!(errors.len(), queued, "one error per queued datagram");
        assert_eq!(errors[0], Some(libc_econnrefused()));
        assert_eq!(t.get_write_buffer_size(), 0);
        assert!(!t.is_closing(), "send errors do not close the endpoint");
        // Still usable (this one fails at once: nobody is there).
        t.sendto(b"x", None).unwrap();
        assert_eq!(log.errors().len(), queued + 1);
        close_and_wait(&t, &log).await;
    });
}

// ---------------------------------------------------------------------------
// Lifecycle

#[test]
fn close_flushes_the_queue_before_connection_lost_and_abort_drops_it() {
    on_loop(|l| async move {
        // close: lost only after the peer took every queued datagram.
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let (t, log) = endpoint(&l, DatagramOptions::default().with_sock(ours))
            .await
            .unwrap();
        let sent = send_until_paused(&t, &log, 0, 2000);
        t.close();
        for _ in 0..5 {
            future::yield_now().await;
        }
        assert_eq!(log.lost(), 0, "the queue is not flushed yet");
        assert!(t.fd().is_some());
        let got = Rc::new(RefCell::new(Vec::new()));
        let peer = Rc::new(peer);
        let (p, g, n) = (peer.clone(), got.clone(), log.notify.clone());
        l.add_reader(peer.as_raw_fd(), move || drain(&p, &g, &n))
            .unwrap();
        log.until(|l| l.lost() > 0).await;
        let g = got.clone();
        log.notify.until(|| g.borrow().len() == sent as usize).await;
        l.remove_reader(peer.as_raw_fd()).unwrap();
        assert_eq!(log.lost(), 1);
        assert_eq!(log.events().last(), Some(&Ev::Lost(None)));

        // abort: the queue is dropped, lost comes at once.
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let (t, log) = endpoint(&l, DatagramOptions::default().with_sock(ours))
            .await
            .unwrap();
        send_until_paused(&t, &log, 0, 2000);
        t.abort();
        assert_eq!(t.get_write_buffer_size(), 0);
        t.close();
        t.abort();
        log.until(|l| l.lost() > 0).await;
        let got = RefCell::new(Vec::new());
        drain(&peer, &got, &Notify::default());
        assert!(
            got.borrow().len() < sent as usize,
            "the queued ones were dropped"
        );
        for _ in 0..5 {
            future::yield_now().await;
        }
        assert_eq!(log.lost(), 1);
        log.assert_clean();
    });
}

#[test]
fn the_endpoint_lets_go_of_its_protocol_after_connection_lost() {
    struct Keeper {
        t: Option<DatagramTransport>,
        _drops: crate::util::DropCount,
        lost: Rc<Cell<usize>>,
        notify: Rc<Notify>,
    }
    impl DatagramProtocol for Keeper {
        fn connection_made(&mut self, t: DatagramTransport) {
            self.t = Some(t); // a cycle, unless the endpoint lets go
        }
        fn datagram_received(&mut self, _: &[u8], _: SockAddr) {}
        fn connection_lost(&mut self, _: Option<io::Error>) {
            self.lost.set(self.lost.get() + 1);
            self.notify.wake();
        }
    }
    let lp = EventLoop::new().unwrap();
    let seen = record_exceptions(&lp);
    let drops = crate::util::counter();
    let lost = crate::util::counter();
    let notify = Rc::new(Notify::default());
    let l = lp.clone();
    let (d, lo, n) = (drops.clone(), lost.clone(), notify.clone());
    run(&lp, async move {
        let (t, handle) = l
            .create_datagram_endpoint(
                {
                    let (d, lo, n) = (d.clone(), lo.clone(), n.clone());
                    move || Keeper {
                        t: None,
                        _drops: crate::util::DropCount(d),
                        lost: lo,
                        notify: n,
                    }
                },
                local(any_port()),
            )
            .await
            .unwrap();
        t.close();
        n.until(|| lo.get() == 1).await;
        drop(handle);
        drop(t);
        assert_eq!(d.get(), 1, "the protocol (and its transport) were freed");
    });
    assert_eq!(lost.get(), 1);
    assert_eq!(drops.get(), 1);
    finish(&lp, &seen);
}

#[test]
fn dropping_the_create_future_before_connection_made_closes_the_endpoint() {
    on_loop(|l| async move {
        let log = Log::new();
        let lg = log.clone();
        let port = UdpSocket::bind(any_port()).unwrap().local_addr().unwrap();
        let mut create = Box::pin(l.create_datagram_endpoint(move || Rec(lg), local(port)));
        // Polled once: the socket is bound and connection_made scheduled.
        assert!(future::poll_once(create.as_mut()).await.is_none());
        drop(create);
        log.until(|l| l.lost() > 0).await;
        assert_eq!(log.events(), vec![Ev::Made, Ev::Lost(None)]);
        // The port is free again.
        drop(UdpSocket::bind(port).expect("the endpoint's socket is closed"));
    });
}

#[test]
fn protocol_methods_may_call_back_into_the_transport() {
    // close, abort, sendto, set_protocol from inside the callbacks.
    struct Reentrant {
        t: Option<DatagramTransport>,
        log: Rc<Log>,
    }
    impl DatagramProtocol for Reentrant {
        fn connection_made(&mut self, t: DatagramTransport) {
            self.log.record(Ev::Made);
            t.sendto(b"from connection_made", None).unwrap();
            self.t = Some(t);
            self.log.done();
        }
        fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
            self.log.record(Ev::Data(data.to_vec(), addr.clone()));
            let t = self.t.clone().unwrap();
            match data {
                b"close" => {
                    t.close();
                    t.sendto(b"after close", None).unwrap();
                    t.close();
                    t.abort();
                }
                _ => t.sendto(data, None).unwrap(),
            }
            self.log.done();
        }
        fn connection_lost(&mut self, e: Option<io::Error>) {
            self.log.record(Ev::Lost(e.map(|e| e.kind())));
            let t = self.t.take().unwrap();
            t.sendto(b"from connection_lost", None).unwrap();
            t.close();
            self.log.done();
        }
    }
    on_loop(|l| async move {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let log = Log::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_datagram_endpoint(
                move || Reentrant { t: None, log: lg },
                DatagramOptions::default().with_sock(ours),
            )
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from connection_made");
        peer.send(b"ping").unwrap();
        log.until(|l| l.data().len() == 1).await;
        // The echo was sent from inside datagram_received.
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        peer.send(b"close").unwrap();
        log.until(|l| l.lost() > 0).await;
        assert_eq!(t.sends_after_close(), 2);
        for _ in 0..3 {
            future::yield_now().await;
        }
        assert_eq!(log.lost(), 1);
        log.assert_clean();
    });
}

#[test]
fn a_panicking_datagram_received_is_reported_and_the_endpoint_keeps_working() {
    struct Fragile(Rc<Log>);
    impl DatagramProtocol for Fragile {
        fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
            if data == b"boom" {
                panic!("bad datagram");
            }
            self.0
                .events
                .borrow_mut()
                .push(Ev::Data(data.to_vec(), addr));
            self.0.notify.wake();
        }
    }
    let lp = EventLoop::new().unwrap();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let s = seen.clone();
    run(&lp, async move {
        let log = Log::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_datagram_endpoint(move || Fragile(lg), local(any_port()))
            .await
            .unwrap();
        let sender = UdpSocket::bind(any_port()).unwrap();
        sender.send_to(b"boom", inet(&t)).unwrap();
        sender.send_to(b"fine", inet(&t)).unwrap();
        log.until(|l| !l.data().is_empty()).await;
        assert_eq!(log.data()[0].0, b"fine");
        assert!(!t.is_closing());
        let seen = s.borrow();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(seen[0].message, "protocol.datagram_received() call failed.");
        assert_eq!(seen[0].panic.as_deref(), Some("bad datagram"));
        drop(seen);
        t.abort();
    });
    seen.borrow_mut().clear();
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// Fairness

#[test]
fn a_flooding_peer_does_not_delay_a_timer() {
    on_loop(|l| async move {
        let (t, log) = endpoint(&l, local(any_port())).await.unwrap();
        let to = inet(&t);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let flooder = std::thread::spawn(move || {
            let s = UdpSocket::bind(any_port()).unwrap();
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                let _ = s.send_to(&n.to_be_bytes(), to);
                n += 1;
            }
            n
        });
        // The flood is on.
        log.until(|l| l.data().len() >= 100).await;
        let before = log.data().len();
        let fired = Rc::new(Cell::new(None));
        let f = fired.clone();
        let n = log.notify.clone();
        let start = Instant::now();
        l.call_later(Duration::from_millis(10), move || {
            f.set(Some(start.elapsed()));
            n.wake();
        })
        .unwrap();
        let f = fired.clone();
        log.notify.until(|| f.get().is_some()).await;
        let late = fired.get().unwrap();
        let during = log.data().len() - before;
        stop.store(true, Ordering::Relaxed);
        let sent = flooder.join().unwrap();
        assert!(late >= Duration::from_millis(10), "{late:?}");
        assert!(
            late < Duration::from_millis(500),
            "the timer was {late:?} late under a flood ({during} datagrams meanwhile, {sent} sent)"
        );
        assert!(during > 0, "the flood went on while the timer waited");
        t.abort();
        log.until(|l| l.lost() > 0).await;
    });
}

// ---------------------------------------------------------------------------
// Python's asyncio as a peer

const PY_ECHO: &str = r#"
import asyncio, sys

class Echo(asyncio.DatagramProtocol):
    def __init__(self, done):
        self.done = done
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)
        if data == b"bye" and not self.done.done():
            self.done.set_result(None)

async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Echo(done), local_addr=("127.0.0.1", 0))
    print("port", transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.wait_for(done, 60)
    transport.close()

asyncio.run(main())
"#;

#[test]
fn python_asyncio_udp_echo_server_echoes_an_aioloop_client() {
    let test = "python_asyncio_udp_echo_server_echoes_an_aioloop_client";
    let mut child = match Command::new("python3")
        .args(["-c", PY_ECHO])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("{test}: skipped: python3 is not on the PATH");
            return;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(LIMIT) {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no port from the Python server: {e}");
        }
    };
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected line from python: {line:?}")
        });

    let lp = EventLoop::new().unwrap();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let (t, log) = endpoint(&l, DatagramOptions::default().with_remote_addr(to))
            .await
            .unwrap();
        // Ping-pong (Python 3.11 drops empty datagrams, so none here).
        let sizes = [1usize, 100, 1400, 8000, 60_000];
        for (i, &n) in sizes.iter().enumerate() {
            let d = numbered(i as u32, n);
            let t2 = t.clone();
            let d2 = d.clone();
            resend_until(
                &l,
                &log,
                Duration::from_millis(200),
                move || t2.sendto(&d2, None).unwrap(),
                |l| l.data().iter().any(|(got, _)| *got == d),
            )
            .await;
        }
        assert!(log
            .data()
            .iter()
            .all(|(_, from)| *from == SockAddr::from(to)));
        t.sendto(b"bye", None).unwrap();
        log.until(|l| l.data().iter().any(|(d, _)| d == b"bye"))
            .await;
        assert!(log.errors().is_empty(), "{:?}", log.errors());
        close_and_wait(&t, &log).await;
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python server did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "python exited with {status:?}");
    finish(&lp, &seen);
}
