//! Nothing outlives its owner (issue 12, part 1): a loop's descriptors go
//! when it is closed, whatever handles on it live, and a loop whose owning
//! handle is dropped without `close()` leaks nothing; a transport lets go
//! of its loop after `connection_lost`; a connect or accept future dropped
//! before it completes undoes what it started.
//!
//! Its own test binary, and every test takes one process-global lock: they
//! count the descriptors of the whole process (`/proc/self/fd`), which tests
//! running beside them on other threads would change.
#![cfg(feature = "net")]

#[cfg(feature = "tls")]
mod tls_util;
mod util;

use std::cell::Cell;
use std::future::Future;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aioloop::prelude::*;
use aioloop::{Backend, BaseProtocol, ErrorKind, EventLoop, Protocol, Transport};
use futures_lite::future;
use util::*;

static FDS: Mutex<()> = Mutex::new(());

/// The process-global lock of this binary's tests.
fn serial() -> MutexGuard<'static, ()> {
    FDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open descriptors of this process, with what each one is.
fn open_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// What the descriptors open now that were not in `before` are, counted by
/// kind (the `read_dir` of `/proc/self/fd` itself left out).
fn new_fds(before: &[(i32, String)]) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for (_, what) in open_fds().into_iter().filter(|fd| !before.contains(fd)) {
        if what.starts_with("/proc/") && what.ends_with("/fd") {
            continue;
        }
        match kinds.iter_mut().find(|(k, _)| *k == what) {
            Some((_, n)) => *n += 1,
            None => kinds.push((what, 1)),
        }
    }
    kinds
}

/// Every backend, io_uring included (where it is available: a loop asked
/// for it may run epoll instead, which is then counted twice).
fn backends() -> [Backend; 3] {
    [Backend::Epoll, Backend::Polling, Backend::Uring]
}

fn build(backend: Backend) -> EventLoop {
    EventLoop::builder()
        .backend(backend)
        .build()
        .expect("creating an event loop")
}

// ---------------------------------------------------------------------------
// The loop itself

#[test]
fn loops_dropped_without_close_leak_no_descriptor() {
    let _serial = serial();
    for backend in backends() {
        let before = open_fds();
        for _ in 0..200 {
            let lp = build(backend);
            // A callback and a timer that each hold a handle on their loop,
            // both still queued when the loop is dropped: the cycle
            // loop -> callback -> loop.
            let a = lp.clone();
            lp.call_soon(move || a.stop()).unwrap();
            let b = lp.clone();
            lp.call_later(Duration::from_secs(3600), move || b.stop())
                .unwrap();
            let c = lp.clone();
            lp.call_soon(move || drop(c.call_soon(|| {}))).unwrap();
            lp.run_forever().unwrap();
            drop(lp);
        }
        assert_eq!(
            new_fds(&before),
            vec![],
            "{backend:?}: 200 loops dropped without close() left these open"
        );
    }
}

#[test]
fn a_loop_dropped_without_close_frees_its_memory_despite_callbacks_holding_it() {
    let _serial = serial();
    let lp = new_loop();
    let weak = lp.downgrade();
    let a = lp.clone();
    lp.call_later(Duration::from_secs(3600), move || a.stop())
        .unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let b = lp.clone();
    lp.add_reader(&sock, move || b.stop()).unwrap();
    let c = lp.clone();
    let task = lp.create_task(async move {
        c.sleep(Duration::from_secs(3600)).await.ok();
    });
    drop(task);
    drop(lp);
    assert!(
        weak.upgrade().is_none(),
        "the loop's callbacks kept it alive after its owner was dropped"
    );
}

#[test]
fn close_releases_the_poller_and_the_wakeup_fd_while_clones_and_handles_live() {
    let _serial = serial();
    for backend in backends() {
        let before = open_fds();
        let lp = build(backend);
        let clone = lp.clone();
        let handle = lp.handle();
        assert!(
            !new_fds(&before).is_empty(),
            "{backend:?}: a loop opens its poller"
        );
        lp.close().unwrap();
        assert_eq!(
            new_fds(&before),
            vec![],
            "{backend:?}: close() left these open while a clone and a LoopHandle live"
        );
        // And every later call, through any handle, gets Closed.
        assert!(clone.is_closed());
        assert_eq!(
            clone.call_soon(|| {}).unwrap_err().kind(),
            ErrorKind::Closed
        );
        assert_eq!(
            clone
                .call_later(Duration::from_millis(1), || {})
                .unwrap_err()
                .kind(),
            ErrorKind::Closed
        );
        assert_eq!(clone.run_forever().unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(
            clone.add_reader(0, || {}).unwrap_err().kind(),
            ErrorKind::Closed
        );
        let from_thread = std::thread::spawn(move || {
            (
                handle.is_closed(),
                handle.call_soon_threadsafe(|| {}).map_err(|e| e.kind()),
                handle.stop().map_err(|e| e.kind()),
            )
        })
        .join()
        .unwrap();
        assert_eq!(
            from_thread,
            (true, Err(ErrorKind::Closed), Err(ErrorKind::Closed))
        );
        drop((clone, lp));
    }
}

#[test]
fn dropping_the_owning_handle_closes_the_loop_for_its_clones() {
    let _serial = serial();
    let before = open_fds();
    let lp = new_loop();
    let clone = lp.clone();
    let handle = lp.handle();
    drop(lp);
    assert!(clone.is_closed(), "the owner's drop closes the loop");
    assert!(handle.is_closed());
    assert_eq!(
        clone.call_soon(|| {}).unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(new_fds(&before), vec![]);
}

#[test]
fn dropping_a_clone_leaves_the_loop_open() {
    let _serial = serial();
    let lp = new_loop();
    let clone = lp.clone();
    drop(clone);
    assert!(!lp.is_closed());
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.call_soon(move || r.set(true)).unwrap();
    one_iteration(&lp);
    assert!(ran.get());
}

#[test]
fn an_owner_dropped_while_its_loop_runs_closes_it_when_the_run_returns() {
    let _serial = serial();
    let before = open_fds();
    let lp = new_loop();
    let outside = lp.clone();
    let seen_open_inside = Rc::new(Cell::new(false));
    let seen = seen_open_inside.clone();
    let inside = lp.clone();
    // The owner moves into a callback, which drops it while the loop runs.
    outside
        .call_soon(move || {
            drop(lp);
            seen.set(!inside.is_closed());
            inside.stop();
        })
        .unwrap();
    let dog = Watchdog::start(&outside);
    outside.run_forever().unwrap();
    dog.disarm();
    assert!(
        seen_open_inside.get(),
        "the loop stays open for the rest of the run"
    );
    assert!(outside.is_closed(), "and closes when the run returns");
    assert_eq!(new_fds(&before), vec![]);
}

// ---------------------------------------------------------------------------
// Connect futures dropped before they complete

/// A protocol that counts every call it gets.
struct Counting(Rc<Cell<u32>>);

impl BaseProtocol for Counting {
    fn connection_made(&mut self, _: Transport) {
        self.0.set(self.0.get() + 1);
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.0.set(self.0.get() + 1);
    }
}

impl Protocol for Counting {
    fn data_received(&mut self, _: &[u8]) {
        self.0.set(self.0.get() + 1);
    }
    fn eof_received(&mut self) -> bool {
        self.0.set(self.0.get() + 1);
        false
    }
}

/// Polls `fut` at most `polls` times, one loop iteration apart, and drops
/// it: `true` if it completed first (then its output is dropped too).
fn poll_then_drop<F: Future + 'static>(lp: &EventLoop, polls: usize, fut: F) -> bool {
    let dog = Watchdog::start(lp);
    let done = lp
        .run_until_complete(async move {
            let mut fut = Box::pin(fut);
            for i in 0..polls {
                if i > 0 {
                    future::yield_now().await;
                }
                if future::poll_once(fut.as_mut()).await.is_some() {
                    return true;
                }
            }
            // Dropped right after its last poll.
            false
        })
        .unwrap();
    dog.disarm();
    done
}

/// Runs loop iterations until no descriptor beyond `before` is open (or
/// the time limit passes), so that whatever the loop still had to do for
/// a dropped connection is done; returns what stayed open.
fn settle(lp: &EventLoop, before: &[(i32, String)]) -> Vec<(String, usize)> {
    let deadline = Instant::now() + LIMIT;
    loop {
        one_iteration(lp);
        let left = new_fds(before);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
    }
}

/// The peer's end sees the connection closed: EOF or a reset, never data
/// and never a timeout.
fn assert_peer_sees_closed(mut peer: impl Read, what: &str) {
    let mut buf = [0u8; 64];
    match peer.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: the peer read {other:?} instead of the connection closing"),
    }
}

/// Drops the connect future made by `start` on `lp` after 1, 2, 3... polls
/// until one completes; after each drop the protocol was never called and
/// no descriptor stayed open. `accept_peers` checks the peers (called
/// after the drop, before the count). Closes `lp`.
fn drop_at_every_poll<F, Fut>(
    lp: EventLoop,
    what: &str,
    mut start: F,
    mut accept_peers: impl FnMut(&str),
) where
    F: FnMut(&EventLoop, Rc<Cell<u32>>) -> Fut,
    Fut: Future + 'static,
{
    let seen = record_exceptions(&lp);
    let before = open_fds();
    let mut completed_at = None;
    for polls in 1..10_000 {
        let calls = Rc::new(Cell::new(0));
        let fut = start(&lp, calls.clone());
        let completed = poll_then_drop(&lp, polls, fut);
        // Whatever the loop had scheduled for the connection runs now.
        for _ in 0..3 {
            one_iteration(&lp);
        }
        let at = format!("{what}, dropped after {polls} polls");
        if completed {
            completed_at = Some(polls);
            break;
        }
        assert_eq!(calls.get(), 0, "{at}: the protocol was called");
        accept_peers(&at);
        assert_eq!(settle(&lp, &before), vec![], "{at}: left open");
    }
    match completed_at {
        Some(n) => assert!(
            n > 1,
            "{what}: completed at the first poll: nothing was dropped"
        ),
        None => panic!("{what}: never completed"),
    }
    // In debug mode a TLS server reports each handshake its client gave up
    // on; nothing else may be reported.
    seen.borrow_mut()
        .retain(|s| !(lp.get_debug() && s.message == "SSL handshake failed"));
    assert!(seen.borrow().is_empty(), "{:#?}", seen.borrow());
    lp.close().unwrap();
}

fn listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// Accepts every connection waiting on `l` and checks that each one sees
/// the connection closed.
fn check_accepted(l: &TcpListener, at: &str) {
    while let Ok((s, _)) = l.accept() {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        assert_peer_sees_closed(s, at);
    }
}

#[test]
fn a_dropped_create_connection_future_closes_its_socket_and_never_calls_the_protocol() {
    let _serial = serial();
    let l = listener();
    let port = l.local_addr().unwrap().port();
    drop_at_every_poll(
        new_loop(),
        "create_connection(host, port)",
        |lp, calls| {
            let lp = lp.clone();
            async move {
                lp.create_connection(
                    move || Counting(calls),
                    Some("127.0.0.1"),
                    port,
                    ConnectOptions::default(),
                )
                .await
            }
        },
        |at| check_accepted(&l, at),
    );
}

#[test]
fn a_dropped_create_connection_future_with_sock_closes_it_and_never_calls_the_protocol() {
    let _serial = serial();
    let l = listener();
    let addr = l.local_addr().unwrap();
    drop_at_every_poll(
        new_loop(),
        "create_connection(sock=)",
        |lp, calls| {
            let sock: OwnedFd = TcpStream::connect(addr).unwrap().into();
            let lp = lp.clone();
            async move {
                let opts = ConnectOptions {
                    sock: Some(sock),
                    ..ConnectOptions::default()
                };
                lp.create_connection(move || Counting(calls), None, 0, opts)
                    .await
            }
        },
        |at| check_accepted(&l, at),
    );
}

#[test]
fn a_dropped_connect_accepted_socket_future_closes_it_and_never_calls_the_protocol() {
    let _serial = serial();
    let l = listener();
    let addr = l.local_addr().unwrap();
    let peers = std::cell::RefCell::new(Vec::new());
    drop_at_every_poll(
        new_loop(),
        "connect_accepted_socket",
        |lp, calls| {
            let client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(LIMIT)).unwrap();
            peers.borrow_mut().push(client);
            let (accepted, _) = loop {
                match l.accept() {
                    Ok(s) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("accept: {e}"),
                }
            };
            let sock: OwnedFd = accepted.into();
            let lp = lp.clone();
            async move {
                lp.connect_accepted_socket(move || Counting(calls), sock)
                    .await
            }
        },
        |at| {
            for peer in peers.borrow_mut().drain(..) {
                assert_peer_sees_closed(peer, at);
            }
        },
    );
}

#[test]
fn a_dropped_create_unix_connection_future_closes_its_socket_and_never_calls_the_protocol() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("aioloop-owner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    let p = path.clone();
    drop_at_every_poll(
        new_loop(),
        "create_unix_connection",
        move |lp, calls| {
            let lp = lp.clone();
            let p = p.clone();
            async move { lp.create_unix_connection(move || Counting(calls), &p).await }
        },
        |at| {
            while let Ok((s, _)) = l.accept() {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                assert_peer_sees_closed(s, at);
            }
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dropped_open_connection_future_closes_its_socket() {
    let _serial = serial();
    let l = listener();
    let port = l.local_addr().unwrap().port();
    drop_at_every_poll(
        new_loop(),
        "open_connection",
        |lp, _calls| {
            let lp = lp.clone();
            async move { lp.open_connection("127.0.0.1", port).await }
        },
        |at| check_accepted(&l, at),
    );
}

#[cfg(feature = "tls")]
#[test]
fn a_dropped_tls_create_connection_future_closes_its_socket_and_never_calls_the_protocol() {
    use tls_util::{client_opts, connect_tls, serve_tls, Pki};
    let _serial = serial();
    let pki = Pki::new(&["localhost"]);
    let lp = new_loop();
    // The TLS server runs on the same loop: a server connection whose
    // client went away ends (and closes its socket) while `settle` runs.
    let server_tls = aioloop::TlsServerOptions::new(pki.server_config());
    let server = lp
        .run_until_complete({
            let s = lp.clone();
            async move {
                s.create_server(
                    || Counting(Rc::new(Cell::new(0))),
                    &["127.0.0.1"],
                    0,
                    serve_tls(server_tls),
                )
                .await
            }
        })
        .unwrap()
        .unwrap();
    let port = server.sockets()[0].as_inet().unwrap().port();
    let tls = client_opts(&pki);
    drop_at_every_poll(
        lp.clone(),
        "create_connection(ssl=)",
        |lp, calls| {
            let lp = lp.clone();
            let opts = connect_tls(tls.clone());
            async move {
                lp.create_connection(move || Counting(calls), Some("127.0.0.1"), port, opts)
                    .await
            }
        },
        |_| {},
    );
    drop(server);
    drop(lp);
}

// ---------------------------------------------------------------------------
// Transports let go of their loop after connection_lost

/// Runs `lp` until `flag` is set (bounded by the watchdog's limit).
fn run_until(lp: &EventLoop, flag: &Cell<u32>, at_least: u32) {
    let deadline = Instant::now() + LIMIT;
    while flag.get() < at_least {
        one_iteration(lp);
        assert!(Instant::now() < deadline, "never happened");
    }
}

#[test]
fn a_transport_kept_after_connection_lost_does_not_keep_its_loop() {
    let _serial = serial();
    let before = open_fds();
    let l = listener();
    let port = l.local_addr().unwrap().port();
    let lp = new_loop();
    let weak = lp.downgrade();
    let calls = Rc::new(Cell::new(0));
    let t = connect_counting(&lp, port, &calls);
    t.close();
    run_until(&lp, &calls, 2); // connection_made, connection_lost
    assert!(t.get_loop().is_none(), "released with connection_lost");
    drop(lp);
    assert!(
        weak.upgrade().is_none(),
        "the Transport kept after connection_lost kept its loop"
    );
    drop(l);
    assert_eq!(new_fds(&before), vec![]);
    drop(t);
}

/// A datagram protocol that counts `connection_made` and `connection_lost`.
struct CountingDatagram(Rc<Cell<u32>>);

impl aioloop::DatagramProtocol for CountingDatagram {
    fn connection_made(&mut self, _: aioloop::DatagramTransport) {
        self.0.set(self.0.get() + 1);
    }
    fn datagram_received(&mut self, _: &[u8], _: aioloop::SockAddr) {}
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn datagram_and_pipe_transports_kept_after_connection_lost_do_not_keep_their_loop() {
    let _serial = serial();
    let before = open_fds();
    let lp = new_loop();
    let weak = lp.downgrade();
    let calls = Rc::new(Cell::new(0));
    let (d, _) = lp
        .run_until_complete({
            let lp = lp.clone();
            let calls = calls.clone();
            let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
            async move {
                lp.create_datagram_endpoint(
                    move || CountingDatagram(calls),
                    aioloop::DatagramOptions::default().with_local_addr(local),
                )
                .await
            }
        })
        .unwrap()
        .unwrap();
    let (rd, wr) = UnixStream::pair().unwrap();
    let pipe_calls = Rc::new(Cell::new(0));
    let (pt, _) = lp
        .run_until_complete({
            let lp = lp.clone();
            let pc = pipe_calls.clone();
            async move {
                lp.connect_read_pipe(move || Counting(pc), OwnedFd::from(rd))
                    .await
            }
        })
        .unwrap()
        .unwrap();
    d.close();
    drop(wr); // EOF: the read pipe ends
    run_until(&lp, &calls, 2);
    run_until(&lp, &pipe_calls, 3); // made, eof_received, lost
    assert!(d.get_loop().is_none());
    assert!(pt.get_loop().is_none());
    drop(lp);
    assert!(
        weak.upgrade().is_none(),
        "a transport kept after connection_lost kept its loop"
    );
    assert_eq!(new_fds(&before), vec![]);
    drop((d, pt));
}

#[test]
fn a_dropped_serve_forever_future_closes_its_server() {
    let _serial = serial();
    let lp = new_loop();
    let before = open_fds();
    let server = lp
        .run_until_complete({
            let lp = lp.clone();
            async move {
                let opts = ServerOptions {
                    start_serving: false,
                    ..ServerOptions::default()
                };
                lp.create_server(|| Counting(Rc::new(Cell::new(0))), &["127.0.0.1"], 0, opts)
                    .await
            }
        })
        .unwrap()
        .unwrap();
    let addr = server.sockets()[0].as_inet().unwrap();
    assert!(!poll_then_drop(&lp, 2, server.serve_forever()));
    assert!(
        !server.is_serving(),
        "serve_forever's future was dropped: the server stops, as asyncio's cancelled serve_forever"
    );
    one_iteration(&lp);
    assert_eq!(new_fds(&before), vec![], "the listening socket stayed open");
    let refused = TcpStream::connect(addr).map(drop).map_err(|e| e.kind());
    assert_eq!(refused, Err(io::ErrorKind::ConnectionRefused));
    drop(server);
    lp.close().unwrap();
}

#[cfg(feature = "tls")]
#[test]
fn a_tls_transport_kept_after_connection_lost_does_not_keep_its_loop() {
    use tls_util::{client_opts, connect_tls, serve_tls, Pki};
    let _serial = serial();
    let pki = Pki::new(&["localhost"]);
    let lp = new_loop();
    let weak = lp.downgrade();
    let server_tls = aioloop::TlsServerOptions::new(pki.server_config());
    let server_calls = Rc::new(Cell::new(0));
    let sc = server_calls.clone();
    let server = lp
        .run_until_complete({
            let s = lp.clone();
            async move {
                s.create_server(
                    move || Counting(sc.clone()),
                    &["127.0.0.1"],
                    0,
                    serve_tls(server_tls),
                )
                .await
            }
        })
        .unwrap()
        .unwrap();
    let port = server.sockets()[0].as_inet().unwrap().port();
    let calls = Rc::new(Cell::new(0));
    let (t, _) = lp
        .run_until_complete({
            let lp = lp.clone();
            let calls = calls.clone();
            let opts = connect_tls(client_opts(&pki));
            async move {
                lp.create_connection(move || Counting(calls), Some("127.0.0.1"), port, opts)
                    .await
            }
        })
        .unwrap()
        .unwrap();
    t.close();
    run_until(&lp, &calls, 2); // connection_made, connection_lost
    run_until(&lp, &server_calls, 2);
    assert!(t.get_loop().is_none(), "released with connection_lost");
    drop(server);
    drop(lp);
    assert!(
        weak.upgrade().is_none(),
        "the TLS Transport kept after connection_lost kept its loop"
    );
    drop(t);
}

/// A subprocess protocol that counts `connection_made` and
/// `connection_lost`.
#[cfg(feature = "process")]
struct CountingSubprocess(Rc<Cell<u32>>);

#[cfg(feature = "process")]
impl aioloop::SubprocessProtocol for CountingSubprocess {
    fn connection_made(&mut self, _: aioloop::SubprocessTransport) {
        self.0.set(self.0.get() + 1);
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.0.set(self.0.get() + 1);
    }
}

#[cfg(feature = "process")]
#[test]
fn a_subprocess_transport_kept_after_connection_lost_does_not_keep_its_loop() {
    use aioloop::{SubprocessLoopExt, SubprocessOptions};
    let _serial = serial();
    let lp = new_loop();
    let weak = lp.downgrade();
    let calls = Rc::new(Cell::new(0));
    let (t, _) = lp
        .run_until_complete({
            let lp = lp.clone();
            let calls = calls.clone();
            async move {
                lp.subprocess_exec(
                    move || CountingSubprocess(calls),
                    "true",
                    Vec::<&str>::new(),
                    SubprocessOptions::new(),
                )
                .await
            }
        })
        .unwrap()
        .unwrap();
    run_until(&lp, &calls, 2); // connection_made, connection_lost
    assert!(t.get_loop().is_none(), "released with connection_lost");
    drop(lp);
    assert!(
        weak.upgrade().is_none(),
        "the SubprocessTransport kept after connection_lost kept its loop"
    );
    drop(t);
}

/// A stream protocol that counts its drops (it keeps no transport: the
/// loop's hold on the transport is the last one).
struct Kept(#[allow(dead_code)] DropCount);

impl BaseProtocol for Kept {}

impl Protocol for Kept {
    fn data_received(&mut self, _: &[u8]) {}
}

/// io_uring's completion path (issue 14): a loop closed while its
/// transports have a multishot receive armed and a send in flight (their
/// peers do not read) cancels them, waits for the kernel to let go, and
/// frees everything: the sockets close (each peer sees the end), the
/// protocols are dropped, no descriptor stays open. Run under a memory
/// checker this also shows that nothing touches the freed buffers.
#[test]
fn a_uring_loop_closed_with_operations_in_flight_releases_everything() {
    let _serial = serial();
    let Some(lp) = uring_loop() else { return };
    let before = open_fds();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let drops = Rc::new(Cell::new(0));
    let mut peers = Vec::new();
    const CONNS: usize = 3;
    for _ in 0..CONNS {
        let c = lp.clone();
        let d = drops.clone();
        let (t, _) = lp
            .run_until_complete(async move {
                c.create_connection(
                    move || Kept(DropCount(d)),
                    Some("127.0.0.1"),
                    port,
                    ConnectOptions::default(),
                )
                .await
            })
            .unwrap()
            .unwrap();
        let (peer, _) = l.accept().unwrap();
        peer.set_read_timeout(Some(LIMIT)).unwrap();
        // A small send buffer: most of the 4 MiB waits in the loop.
        let fd = t.fd().unwrap();
        let dup = dup_of(fd);
        rustix::net::sockopt::set_socket_send_buffer_size(&dup, 4096).unwrap();
        drop(dup);
        t.write(&vec![7u8; 4 << 20]).unwrap();
        peers.push((peer, t));
    }
    // Let the sends be submitted and the receives armed.
    for _ in 0..5 {
        one_iteration(&lp);
    }
    for (_, t) in &peers {
        assert!(t.get_write_buffer_size() > 0, "a send is in flight");
    }
    let peers: Vec<TcpStream> = peers.into_iter().map(|(p, _)| p).collect();
    lp.close().unwrap();
    assert_eq!(drops.get(), CONNS, "the protocols were not dropped");
    drop(l);
    for mut p in peers {
        let (_, err) = drain(&mut p);
        assert!(
            err.is_none() || err == Some(io::ErrorKind::ConnectionReset),
            "{err:?}"
        );
    }
    assert_eq!(new_fds(&before), vec![], "descriptors left open");
    drop(lp);
}

/// A duplicate of this process's `fd` (through a pidfd, with no `unsafe`).
fn dup_of(fd: i32) -> OwnedFd {
    use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).unwrap();
    pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()).unwrap()
}

/// Reads to EOF or an error (bounded by the socket's read timeout).
fn drain(s: &mut TcpStream) -> (usize, Option<io::ErrorKind>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (n, None),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e.kind())),
        }
    }
}

/// io_uring's completion path (issue 14): `abort()` with a send in flight
/// (its peer does not read) cancels it, and the socket closes with the
/// transport's fd: the peer sees the end while the loop runs on, and no
/// descriptor is left open.
#[test]
fn a_uring_transport_aborted_with_a_send_in_flight_closes_its_socket() {
    let _serial = serial();
    let Some(lp) = uring_loop() else { return };
    let before = open_fds();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let calls = Rc::new(Cell::new(0));
    let t = connect_counting(&lp, port, &calls);
    let (mut peer, _) = l.accept().unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let dup = dup_of(t.fd().unwrap());
    rustix::net::sockopt::set_socket_send_buffer_size(&dup, 4096).unwrap();
    drop(dup);
    t.write(&vec![7u8; 4 << 20]).unwrap();
    for _ in 0..5 {
        one_iteration(&lp);
    }
    assert!(t.get_write_buffer_size() > 0, "a send is in flight");
    t.abort();
    run_until(&lp, &calls, 2); // connection_made, connection_lost
    let (_, err) = drain(&mut peer);
    assert!(
        err.is_none() || err == Some(io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
    drop((peer, l));
    assert_eq!(new_fds(&before), vec![], "descriptors left open");
    drop(t);
    lp.close().unwrap();
}

/// Connects a [`Counting`] protocol to 127.0.0.1:`port` on `lp`; returns
/// its transport.
fn connect_counting(lp: &EventLoop, port: u16, calls: &Rc<Cell<u32>>) -> Transport {
    let c = lp.clone();
    let counted = calls.clone();
    let (t, _) = lp
        .run_until_complete(async move {
            c.create_connection(
                move || Counting(counted),
                Some("127.0.0.1"),
                port,
                ConnectOptions::default(),
            )
            .await
        })
        .unwrap()
        .unwrap();
    t
}

/// Connects to 127.0.0.1:`port` up to `n` times as fast as it can on
/// another thread (stopping at the first refusal: the server closed);
/// returns the connected sockets when joined.
fn connect_storm(port: u16, n: usize) -> std::thread::JoinHandle<Vec<TcpStream>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        for _ in 0..n {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => out.push(s),
                Err(_) => break,
            }
        }
        out
    })
}

/// Starts a server of [`Counting`] protocols on `lp`: (server, port).
fn counting_server(lp: &EventLoop, calls: &Rc<Cell<u32>>) -> (Server, u16) {
    let l = lp.clone();
    let c = calls.clone();
    let server = lp
        .run_until_complete(async move {
            l.create_server(
                move || Counting(c.clone()),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
        })
        .unwrap()
        .unwrap();
    for fd in server.listener_fds() {
        assert!(
            !lp.has_reader(fd),
            "the server accepts through readiness, not by a multishot accept"
        );
    }
    let port = server.sockets()[0].as_inet().unwrap().port();
    (server, port)
}

/// io_uring's multishot accept (issue 14): a server closed while
/// connections race in (some accepted by the kernel and not yet delivered,
/// some in the backlog) closes every one it did not hand to a transport,
/// `wait_closed` resolves once the ones it took are gone, and no
/// descriptor stays open.
#[test]
fn a_uring_server_closed_with_connections_racing_in_leaks_no_descriptor() {
    let _serial = serial();
    let Some(lp) = uring_loop() else { return };
    let before = open_fds();
    let calls = Rc::new(Cell::new(0));
    let (server, port) = counting_server(&lp, &calls);
    let storm = connect_storm(port, 400);
    run_until(&lp, &calls, 1);
    server.close();
    let clients = storm.join().unwrap();
    drop(clients);
    // The connections it took see their peers' EOF and close.
    let s = server.clone();
    run(&lp, async move { s.wait_closed().await });
    assert_eq!(server.active_connections(), 0);
    assert_eq!(settle(&lp, &before), vec![], "descriptors left open");
    drop(server);
    lp.close().unwrap();
}

/// io_uring's multishot accept (issue 14): a server closed from inside the
/// first `connection_made` of a batch (connections waiting in the backlog
/// before the accept was armed: the kernel accepts them all at once)
/// closes the connections delivered after it, which it will not serve, and
/// leaks nothing; `wait_closed` resolves once the one it took is gone.
#[test]
fn a_uring_server_closed_inside_a_batch_of_accepts_closes_the_rest() {
    const K: usize = 20;
    let _serial = serial();
    let Some(lp) = uring_loop() else { return };
    let before = open_fds();
    let calls = Rc::new(Cell::new(0));
    let to_close: Rc<std::cell::RefCell<Option<Server>>> = Rc::default();
    let l = lp.clone();
    let (c, tc) = (calls.clone(), to_close.clone());
    let server = lp
        .run_until_complete(async move {
            l.create_server(
                move || {
                    if let Some(s) = tc.borrow_mut().take() {
                        s.close();
                    }
                    Counting(c.clone())
                },
                &["127.0.0.1"],
                0,
                ServerOptions {
                    start_serving: false,
                    ..ServerOptions::default()
                },
            )
            .await
        })
        .unwrap()
        .unwrap();
    *to_close.borrow_mut() = Some(server.clone());
    let port = server.sockets()[0].as_inet().unwrap().port();
    // Every connect completes in the kernel's backlog before the accept is
    // armed (start_serving: false).
    let clients: Vec<TcpStream> = (0..K)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    server.start_serving().unwrap();
    assert!(!lp.has_reader(server.listener_fds()[0]));
    run_until(&lp, &calls, 1);
    assert!(!server.is_serving());
    // One connection was taken; every other one is closed by the server.
    let mut ends = 0;
    for mut c in clients {
        // The one taken stays open: its read times out.
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        match c.read(&mut buf) {
            Ok(0) => ends += 1,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => ends += 1,
            _ => {}
        }
    }
    assert_eq!(
        ends,
        K - 1,
        "connections the server did not take stayed open"
    );
    let s = server.clone();
    run(&lp, async move { s.wait_closed().await });
    assert_eq!(settle(&lp, &before), vec![], "descriptors left open");
    drop(server);
    lp.close().unwrap();
}

/// io_uring's multishot accept (issue 14): a loop closed while its server
/// still accepts, with connections in the backlog, cancels the accept,
/// closes whatever the kernel accepted meanwhile, and leaks nothing.
#[test]
fn a_uring_loop_closed_with_a_server_accepting_leaks_no_descriptor() {
    let _serial = serial();
    let Some(lp) = uring_loop() else { return };
    let before = open_fds();
    let calls = Rc::new(Cell::new(0));
    let (server, port) = counting_server(&lp, &calls);
    let storm = connect_storm(port, 50);
    run_until(&lp, &calls, 1);
    let clients = storm.join().unwrap();
    assert!(!clients.is_empty());
    lp.close().unwrap();
    drop(server);
    drop(clients);
    assert_eq!(new_fds(&before), vec![], "descriptors left open");
    drop(lp);
}

/// A datagram protocol that counts its drops.
struct KeptDatagram(#[allow(dead_code)] DropCount);

impl aioloop::DatagramProtocol for KeptDatagram {
    fn datagram_received(&mut self, _: &[u8], _: aioloop::SockAddr) {}
}

/// io_uring's datagram receives (issue 14): a loop closed while its UDP
/// endpoints have multishot receives armed and datagrams in the ring
/// (their peer keeps sending) cancels them, waits for the kernel to let
/// go, and frees everything: the protocols are dropped, no descriptor
/// stays open.
#[test]
fn a_uring_loop_closed_with_datagram_receives_in_flight_releases_everything() {
    use aioloop::{DatagramLoopExt, DatagramOptions};
    const ENDPOINTS: usize = 3;
    let _serial = serial();
    let Some(lp) = uring_loop() else { return };
    let before = open_fds();
    let drops = Rc::new(Cell::new(0));
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut kept = Vec::new();
    for _ in 0..ENDPOINTS {
        let l = lp.clone();
        let d = drops.clone();
        let (t, _) = lp
            .run_until_complete(async move {
                let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
                l.create_datagram_endpoint(
                    move || KeptDatagram(DropCount(d)),
                    DatagramOptions::default().with_local_addr(any),
                )
                .await
            })
            .unwrap()
            .unwrap();
        assert!(
            !lp.has_reader(t.fd().unwrap()),
            "the endpoint reads through readiness, not by completion"
        );
        kept.push(t);
    }
    let to: Vec<_> = kept
        .iter()
        .map(|t| t.sockname().unwrap().as_inet().unwrap())
        .collect();
    for round in 0..3 {
        for a in &to {
            for _ in 0..8 {
                peer.send_to(&[round as u8; 512], a).unwrap();
            }
        }
        one_iteration(&lp);
    }
    for a in &to {
        peer.send_to(b"in the ring at close", a).unwrap();
    }
    drop(kept);
    lp.close().unwrap();
    assert_eq!(drops.get(), ENDPOINTS, "the protocols were not dropped");
    drop(peer);
    assert_eq!(new_fds(&before), vec![], "descriptors left open");
    drop(lp);
}
