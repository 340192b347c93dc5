//! Servers on io_uring's completion path (issue 14): one multishot accept
//! per listening socket instead of a reader on it. Every test builds its
//! loop with `Backend::Uring` itself, so it runs the path in every CI
//! configuration, and says so and returns where the kernel refuses
//! io_uring. Real loopback peers:
//! - many TCP connections (from several threads at once) and Unix ones are
//!   accepted and echoed, with no reader ever registered on the listener;
//! - `close()` with connections racing in: every accepted connection is
//!   either served or closed, `wait_closed` resolves, and the listener
//!   stops accepting at once (a connect after `close` is refused).
//!
//! The descriptor counts (nothing leaks when a server or the loop closes
//! with accepts in flight) are in tests/ownership.rs, the out-of-descriptors
//! retry in tests/accept_emfile.rs (both need a process of their own).
#![cfg(feature = "net")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;

/// Asserts that the server accepts by completion: serving, with no reader
/// on any of its listening sockets.
fn assert_accepts_by_completion(lp: &EventLoop, server: &Server) {
    assert!(server.is_serving());
    for fd in server.listener_fds() {
        assert!(
            !lp.has_reader(fd),
            "the server accepts through readiness (a reader on its listener)"
        );
    }
}

/// An echo server on 127.0.0.1 (an ephemeral port) that accepts by
/// completion, and its port.
async fn tcp_echo_server(lp: &EventLoop, acc: &Rc<Accepted>) -> (Server, u16) {
    let server = lp
        .create_server(
            acc.factory(Hooks::echo),
            &["127.0.0.1"],
            0,
            ServerOptions::default(),
        )
        .await
        .unwrap();
    assert_accepts_by_completion(lp, &server);
    let port = server.sockets()[0].as_inet().unwrap().port();
    (server, port)
}

const THREADS: usize = 4;
const PER_THREAD: usize = 60;

#[test]
fn many_tcp_connections_are_accepted_by_one_multishot_accept_and_echoed() {
    let Some(lp) = uring_loop() else { return };
    let seen = record_exceptions(&lp);
    let acc = Accepted::new();
    let l = lp.clone();
    let a = acc.clone();
    run(&lp, async move {
        let (server, port) = tcp_echo_server(&l, &a).await;
        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        bounded(&s);
                        let msg = pattern(100 + i, t * 1000 + i);
                        s.write_all(&msg).unwrap();
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg, "the echo differs");
                    }
                })
            })
            .collect();
        a.until_all_lost(THREADS * PER_THREAD).await;
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(a.len(), THREADS * PER_THREAD);
        for r in a.all() {
            r.assert_clean_life();
        }
        assert_accepts_by_completion(&l, &server);
        server.close();
        server.wait_closed().await;
    });
    lp.close().unwrap();
    assert_no_exceptions(&seen);
}

#[test]
fn unix_connections_are_accepted_by_completion_and_echoed() {
    const N: usize = 50;
    let Some(lp) = uring_loop() else { return };
    let seen = record_exceptions(&lp);
    let path = TempPath::new("uring-accept");
    let p = path.0.clone();
    let acc = Accepted::new();
    let l = lp.clone();
    let a = acc.clone();
    run(&lp, async move {
        let server = l
            .create_unix_server(a.factory(Hooks::echo), &p, ServerOptions::default())
            .await
            .unwrap();
        assert_accepts_by_completion(&l, &server);
        let client = std::thread::spawn(move || {
            for i in 0..N {
                let mut s = UnixStream::connect(&p).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                let msg = pattern(64 + i, i);
                s.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, msg, "the echo differs");
            }
        });
        a.until_all_lost(N).await;
        client.join().unwrap();
        server.close();
        server.wait_closed().await;
    });
    lp.close().unwrap();
    assert_no_exceptions(&seen);
    drop(path);
}

/// `close()` while connections keep arriving: the listener stops at once
/// (the accept is cancelled before its fd closes: a later connect is
/// refused), every connection the server took is served to its end, and
/// `wait_closed` resolves once they are gone.
#[test]
fn a_server_closed_while_connections_race_in_stops_at_once_and_wait_closed_resolves() {
    let Some(lp) = uring_loop() else { return };
    let seen = record_exceptions(&lp);
    let acc = Accepted::new();
    let l = lp.clone();
    let a = acc.clone();
    run(&lp, async move {
        let (server, port) = tcp_echo_server(&l, &a).await;
        // A burst of connects, none waited for.
        let mut early = Vec::new();
        for _ in 0..64 {
            early.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
        // Some are accepted (perhaps not all) when the server closes.
        a.until_count(1).await;
        server.close();
        assert!(!server.is_serving());
        let refused = TcpStream::connect(("127.0.0.1", port));
        assert!(
            refused.is_err(),
            "a connect after close() succeeded: the listening socket is still open"
        );
        // The connections the server took are still served.
        let taken = a.len();
        drop(early);
        a.until_all_lost(taken).await;
        server.wait_closed().await;
        assert_eq!(server.active_connections(), 0);
        // Nothing is accepted after close, even from the backlog.
        iterations(5).await;
        assert_eq!(a.len(), taken, "a connection was accepted after close()");
    });
    lp.close().unwrap();
    assert_no_exceptions(&seen);
}
