//! Datagram endpoints on io_uring's completion path (issue 14): one
//! multishot receive per endpoint instead of a reader. Every test builds
//! its loop with `Backend::Uring` itself, so it runs the path in every CI
//! configuration, and says so and returns where the kernel refuses
//! io_uring. datagram.rs's `endpoint` helper checks, on every backend, that
//! an endpoint reads by completion on io_uring and by readiness elsewhere.
//! Real loopback peers:
//! - datagram.rs's own scenarios on the path: UDP echo of every size up to
//!   65,507 bytes (whole, in order), an ICMP port unreachable as
//!   `ECONNREFUSED` to `error_received` on a connected endpoint, a Unix
//!   datagram over 64 KiB dropped and reported as `EMSGSIZE` exactly as
//!   the readiness path does (64 KiB itself still fits);
//! - a Unix endpoint bound to a path, echoing a peer bound to another;
//! - many datagrams from ten std sockets at once, each echoed;
//! - `close()` while datagrams keep arriving: nothing is delivered after
//!   it, `connection_lost` comes once.
//!
//! The descriptor count of a loop closed with receives in flight is in
//! tests/ownership.rs.
#![cfg(feature = "net")]

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::datagram::{self, any_port, echo_server, inet, number_of, numbered, Ev};
use crate::net_util::{iterations, TempPath};
use crate::util::*;
use aioloop::SockAddr;

#[test]
fn udp_echo_of_every_size_up_to_65507_bytes_by_completion() {
    on_uring_loop(datagram::udp_echo);
}

#[test]
fn icmp_port_unreachable_is_error_received_by_completion() {
    on_uring_loop(datagram::icmp_port_unreachable);
}

#[test]
fn a_unix_datagram_longer_than_64_kib_is_dropped_and_reported_by_completion() {
    on_uring_loop(datagram::unix_datagram_over_64_kib);
}

/// A Unix datagram endpoint bound to a path echoes a std peer bound to
/// another (the sender's address is its path), and an unnamed sender's
/// address is the empty path, as on the readiness path.
#[test]
fn a_unix_datagram_endpoint_by_path_echoes_by_completion() {
    on_uring_loop(|l| async move {
        let (ours_path, theirs_path) = (TempPath::new("uring-dgram"), TempPath::new("uring-peer"));
        let (ours, theirs) = (ours_path.0.clone(), theirs_path.0.clone());
        let (t, log) = datagram::endpoint(&l, datagram::local(ours.as_path()))
            .await
            .unwrap();
        log.echo.set(true);
        let peer = UnixDatagram::bind(&theirs).unwrap();
        peer.set_read_timeout(Some(LIMIT)).unwrap();
        let o = ours.clone();
        let echoed = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            let mut got = Vec::new();
            for i in 0..50u32 {
                let d = numbered(i, 100 + 1000 * i as usize);
                peer.send_to(&d, &o).unwrap();
                let n = peer.recv(&mut buf).unwrap();
                got.push(buf[..n] == d[..]);
            }
            got
        });
        log.until(|l| l.data().len() >= 50).await;
        assert!(
            echoed.join().unwrap().iter().all(|&same| same),
            "an echo differs"
        );
        assert!(log
            .data()
            .iter()
            .all(|(_, from)| *from == SockAddr::Unix(theirs.clone())));
        // (No echo to a sender without an address.)
        log.echo.set(false);
        let anon = UnixDatagram::unbound().unwrap();
        anon.send_to(b"anonymous", &ours).unwrap();
        log.until(|l| l.data().len() == 51).await;
        assert_eq!(
            log.data()[50],
            (
                b"anonymous".to_vec(),
                SockAddr::Unix(std::path::PathBuf::new())
            )
        );
        datagram::close_and_wait(&t, &log).await;
        drop((ours_path, theirs_path));
    });
}

#[test]
fn many_datagrams_from_ten_sockets_are_echoed_by_completion() {
    const SOCKETS: usize = 10;
    const EACH: u32 = 200;
    on_uring_loop(|l| async move {
        let (server, slog) = echo_server(&l).await;
        let to = inet(&server);
        let peers: Vec<_> = (0..SOCKETS)
            .map(|_| {
                std::thread::spawn(move || {
                    let s = UdpSocket::bind(any_port()).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut buf = vec![0u8; 2048];
                    let mut i = 0;
                    let mut tries = 0;
                    while i < EACH {
                        let d = numbered(i, 1024);
                        s.send_to(&d, to).unwrap();
                        // A datagram is echoed or resent (loopback does not
                        // lose them, but a kernel under pressure may).
                        match s.recv_from(&mut buf) {
                            Ok((n, _)) if number_of(&buf[..n]) == i => {
                                assert_eq!(&buf[..n], &d[..], "the echo differs");
                                i += 1;
                            }
                            Ok(_) => {}
                            Err(_) => {
                                tries += 1;
                                assert!(tries < 100, "datagram {i} never echoed");
                            }
                        }
                    }
                })
            })
            .collect();
        slog.until(|l| l.data().len() >= SOCKETS * EACH as usize)
            .await;
        for p in peers {
            p.join().unwrap();
        }
        assert_eq!(slog.errors(), vec![]);
        datagram::close_and_wait(&server, &slog).await;
    });
}

/// `close()` while a peer floods the
/// endpoint: the receive is released at once, nothing more is delivered,
/// and `connection_lost` comes exactly once.
#[test]
fn close_while_datagrams_keep_arriving_delivers_nothing_after_it() {
    on_uring_loop(|l| async move {
        let (server, slog) = datagram::endpoint(&l, datagram::local(any_port()))
            .await
            .unwrap();
        let to = inet(&server);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let flood = std::thread::spawn(move || {
            let s = UdpSocket::bind(any_port()).unwrap();
            let mut i = 0u32;
            while stopped.try_recv().is_err() && i < 1_000_000 {
                let _ = s.send_to(&numbered(i, 64), to);
                i += 1;
            }
        });
        slog.until(|l| l.data().len() >= 5).await;
        server.close();
        let at_close = slog.data().len();
        slog.until(|l| l.lost() > 0).await;
        iterations(10).await;
        let _ = stop.send(());
        flood.join().unwrap();
        assert_eq!(
            slog.data().len(),
            at_close,
            "a datagram was delivered after close()"
        );
        let events = slog.events();
        assert!(matches!(events.last(), Some(Ev::Lost(None))), "{events:?}");
        assert_eq!(slog.lost(), 1);
        slog.assert_clean();
    });
}
