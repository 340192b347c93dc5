//! TCP stream transports and servers through the facade, on real loopback
//! sockets: create_connection / create_server (echo of 1 MiB both ways,
//! BufferedProtocol, several hosts, ephemeral ports, every interface,
//! backlog, reuse_port, start_serving), the Server API (close, wait_closed,
//! serve_forever, is_serving, sockets, close_clients, abort_clients,
//! get_loop), connect_accepted_socket, `sock=`, `local_addr=`, Happy
//! Eyeballs and the aggregation of connect errors, and the transport API
//! (write at once, writelines, write_eof, eof_received, close, abort,
//! extra info, set_protocol, pause_reading).
#![cfg(feature = "net")]

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use aioloop::{AddrInfoHints, ExtraInfo, SockAddr, SocketKind};
use futures_lite::future::poll_once;

fn port_of(server: &Server, i: usize) -> u16 {
    server.sockets()[i].as_inet().unwrap().port()
}

/// A server on 127.0.0.1 (an ephemeral port) with the default options.
async fn local_server<F: IntoProtocol>(
    lp: &EventLoop,
    factory: impl Fn() -> F + 'static,
) -> Server {
    lp.create_server(factory, &["127.0.0.1"], 0, ServerOptions::default())
        .await
        .unwrap()
}

/// Opens a transport with a [`RecordingProtocol`] (with `hooks`) to
/// `host`:`port`; it returns after `connection_made`, as asyncio.
async fn connect_rec(
    lp: &EventLoop,
    host: Option<&str>,
    port: u16,
    hooks: Hooks,
    opts: ConnectOptions,
) -> (Transport, ProtocolHandle<RecordingProtocol>, Rc<Recorder>) {
    let rec = Recorder::new();
    let r = rec.clone();
    let (t, h) = lp
        .create_connection(move || RecordingProtocol::new(&r, hooks), host, port, opts)
        .await
        .unwrap();
    (t, h, rec)
}

/// Hooks for server connections that shrink their send buffer and write
/// `big` on `connection_made` (more than the kernel takes unread).
fn writer_hooks(big: Vec<u8>) -> impl Fn() -> Hooks + 'static {
    move || {
        let b = big.clone();
        Hooks::none().on_made(move |t, _| {
            small_send_buffer(t);
            t.write(&b).unwrap()
        })
    }
}

/// Opens a transport (with a [`RecordingProtocol`]) to a blocking std peer
/// and waits for `connection_made`.
async fn connect_std(lp: &EventLoop, hooks: Hooks) -> (Transport, Rc<Recorder>, TcpStream) {
    let (l, addr) = std_listener("127.0.0.1:0");
    let (t, _h, rec) = connect_rec(
        lp,
        Some("127.0.0.1"),
        addr.port(),
        hooks,
        ConnectOptions::default(),
    )
    .await;
    let (theirs, _) = l.accept().unwrap();
    bounded(&theirs);
    rec.until_made().await;
    (t, rec, theirs)
}

/// An echo server on 127.0.0.1 with recorded connections.
async fn echo_server(lp: &EventLoop) -> (Server, Rc<Accepted>, u16) {
    let acc = Accepted::new();
    let server = local_server(lp, acc.factory(Hooks::echo)).await;
    let port = port_of(&server, 0);
    (server, acc, port)
}

/// Connects a recording client that writes `payload` on connection_made and
/// waits for its echo; returns the client's recorder and transport.
async fn echo_once(
    lp: &EventLoop,
    host: &str,
    port: u16,
    payload: Vec<u8>,
) -> (Transport, Rc<Recorder>) {
    let rec = Recorder::new();
    let r = rec.clone();
    let p = payload.clone();
    let (t, _h) = lp
        .create_connection(
            move || {
                RecordingProtocol::new(&r, Hooks::none().on_made(move |t, _| t.write(&p).unwrap()))
            },
            Some(host),
            port,
            ConnectOptions::default(),
        )
        .await
        .unwrap();
    rec.until_data(payload.len()).await;
    assert!(
        rec.bytes() == payload,
        "the echo differs from what was sent"
    );
    (t, rec)
}

#[test]
fn echo_of_one_mebibyte_both_ways_is_byte_exact() {
    on_loop(|l| async move {
        let (server, acc, port) = echo_server(&l).await;
        let payload = pattern(1 << 20, 1);
        let (t, rec) = echo_once(&l, "127.0.0.1", port, payload.clone()).await;
        let srv = acc.get(0);
        assert!(
            srv.bytes() == payload,
            "the server did not receive the exact bytes"
        );
        assert!(
            rec.count(&Ev::Data(0)) == 0 && rec.events().len() > 2,
            "{:?}",
            rec.events()
        );
        t.close();
        rec.until_lost().await;
        acc.until_all_lost(1).await;
        rec.assert_clean_life();
        srv.assert_clean_life();
        // The server saw the client's EOF (after close), then lost.
        assert!(srv.saw_eof());
        assert_eq!(rec.lost_kind(), None);
        assert_eq!(srv.lost_kind(), None);
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn buffered_protocols_receive_every_byte_on_both_ends() {
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = local_server(&l, acc.buffered_factory(Hooks::echo, 1000)).await;
        let port = port_of(&server, 0);
        let payload = pattern(300_000, 2);
        let rec = Recorder::new();
        let (r, p) = (rec.clone(), payload.clone());
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let (t, h) = l
            .create_connection(
                move || {
                    let proto = RecordingBuffered::new(
                        &r,
                        Hooks::none().on_made(move |t, _| t.write(&p).unwrap()),
                        777,
                    );
                    c.set(1);
                    aioloop::Buffered(proto)
                },
                Some("127.0.0.1"),
                port,
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(calls.get(), 1);
        rec.until_data(payload.len()).await;
        assert!(rec.bytes() == payload);
        assert!(acc.get(0).bytes() == payload);
        // Each read went into the protocol's own (777-byte) buffer.
        assert!(h.with(|p| p.get_buffer_calls.get()) >= payload.len() / 777);
        assert!(matches!(t.get_protocol(), AnyProtocol::Buffered(_)));
        t.close();
        rec.until_lost().await;
        acc.until_all_lost(1).await;
        rec.assert_clean_life();
        acc.get(0).assert_clean_life();
        server.close();
    });
}

#[test]
fn create_connection_returns_after_connection_made() {
    // asyncio awaits a waiter set after connection_made: the protocol has its
    // transport when create_connection returns.
    on_loop(|l| async move {
        let (l4, addr) = std_listener("127.0.0.1:0");
        let (t, h, rec) = connect_rec(
            &l,
            Some("127.0.0.1"),
            addr.port(),
            Hooks::none(),
            ConnectOptions::default(),
        )
        .await;
        assert!(
            rec.is_made(),
            "create_connection returned before connection_made"
        );
        assert!(rec.transport().ptr_eq(&t));
        assert!(h.with(|p| Rc::ptr_eq(&p.rec, &rec)));
        // Closing right away is then legal and gives made -> lost.
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
        drop(l4);
    });
}

#[test]
fn a_server_on_several_hosts_listens_on_each() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let v6 = ipv6_loopback();
    if !v6 {
        println!("skipping the ::1 host: this machine cannot bind ::1");
    }
    run(&lp, async move {
        let acc = Accepted::new();
        let mut hosts = vec!["127.0.0.1", "127.0.0.2"];
        if v6 {
            hosts.push("::1");
        }
        let server = l
            .create_server(
                acc.factory(Hooks::echo),
                &hosts,
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let socks = server.sockets();
        assert_eq!(socks.len(), hosts.len(), "{socks:?}");
        let mut clients = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let a = socks[i].as_inet().unwrap();
            assert_eq!(a.ip(), host.parse::<IpAddr>().unwrap());
            assert_ne!(a.port(), 0);
            let (t, rec) = echo_once(&l, host, a.port(), pattern(5000, i)).await;
            assert_eq!(t.peername().unwrap().as_inet().unwrap(), a);
            clients.push((t, rec));
        }
        assert_eq!(acc.len(), hosts.len());
        for (t, _) in &clients {
            t.close();
        }
        acc.until_all_lost(hosts.len()).await;
        server.close();
        server.wait_closed().await;
        for (_, rec) in clients {
            rec.until_lost().await;
            rec.assert_clean_life();
        }
    });
    finish(&lp, &seen);
}

#[test]
fn port_zero_is_ephemeral_and_a_given_port_is_used() {
    on_loop(|l| async move {
        let (server, _acc, port) = echo_server(&l).await;
        assert_ne!(port, 0);
        // The address the kernel gave is the one a client reaches.
        let (t, _rec) = echo_once(&l, "127.0.0.1", port, b"ephemeral".to_vec()).await;
        assert_eq!(t.peername().unwrap().as_inet().unwrap().port(), port);
        t.abort();
        server.close();
        // A port given explicitly (found free by binding it once).
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(Hooks::echo),
                &["127.0.0.1"],
                free,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(port_of(&server, 0), free);
        let (t, _rec) = echo_once(&l, "127.0.0.1", free, b"fixed".to_vec()).await;
        t.abort();
        server.close();
        server.abort_clients();
        server.wait_closed().await;
    });
}

#[test]
fn no_host_listens_on_every_interface() {
    let v6 = ipv6_loopback();
    on_loop(|l| async move {
        let acc = Accepted::new();
        let server = l
            .create_server(acc.factory(Hooks::echo), &[], 0, ServerOptions::default())
            .await
            .unwrap();
        let socks: Vec<SocketAddr> = server
            .sockets()
            .iter()
            .map(|s| s.as_inet().unwrap())
            .collect();
        let any4 = socks
            .iter()
            .find(|a| a.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .copied()
            .unwrap_or_else(|| panic!("no 0.0.0.0 listener in {socks:?}"));
        let (t, _) = echo_once(&l, "127.0.0.1", any4.port(), b"v4".to_vec()).await;
        t.close();
        let mut n = 1;
        if v6 {
            let any6 = socks
                .iter()
                .find(|a| a.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED))
                .copied()
                .unwrap_or_else(|| panic!("no [::] listener in {socks:?}"));
            let (t, _) = echo_once(&l, "::1", any6.port(), b"v6".to_vec()).await;
            t.close();
            n += 1;
        } else {
            println!("skipping the IPv6 half: this machine cannot bind ::1");
        }
        acc.until_all_lost(n).await;
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn backlog_bounds_the_listen_queue() {
    // With backlog 1 and nobody accepting (start_serving: false), the kernel
    // completes at most a couple of handshakes, then drops SYNs; once the
    // server serves, it accepts those that completed.
    on_loop(|l| async move {
        let acc = Accepted::new();
        let opts = ServerOptions {
            backlog: 1,
            start_serving: false,
            ..ServerOptions::default()
        };
        let server = l
            .create_server(acc.factory(Hooks::none), &["127.0.0.1"], 0, opts)
            .await
            .unwrap();
        let addr = server.sockets()[0].as_inet().unwrap();
        let mut completed = Vec::new();
        let mut refused_at = None;
        for i in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => completed.push(s),
                Err(_) => {
                    refused_at = Some(i);
                    break;
                }
            }
        }
        let n = refused_at.expect("backlog 1 let 16 handshakes complete: not passed to listen()");
        assert!(
            (1..=3).contains(&n),
            "{n} handshakes completed with backlog 1"
        );
        server.start_serving().unwrap();
        acc.until_made(n).await;
        assert_eq!(acc.len(), n);
        server.close();
        server.abort_clients();
        server.wait_closed().await;
        drop(completed);
    });
}

#[test]
fn reuse_port_lets_two_servers_share_a_port_and_both_accept() {
    on_loop(|l| async move {
        let opts = || ServerOptions {
            reuse_port: true,
            ..ServerOptions::default()
        };
        let (a, b) = (Accepted::new(), Accepted::new());
        let s1 = l
            .create_server(a.factory(Hooks::echo), &["127.0.0.1"], 0, opts())
            .await
            .unwrap();
        let port = port_of(&s1, 0);
        let s2 = l
            .create_server(b.factory(Hooks::echo), &["127.0.0.1"], port, opts())
            .await
            .unwrap();
        assert_eq!(port_of(&s2, 0), port);
        // The kernel spreads connections by their 4-tuple; 64 connections all
        // landing on one socket has a chance of 2^-63.
        let mut clients = Vec::new();
        for i in 0..64 {
            let (t, _) = echo_once(&l, "127.0.0.1", port, pattern(100, i)).await;
            clients.push(t);
            if a.len() > 0 && b.len() > 0 {
                break;
            }
        }
        assert!(
            a.len() > 0 && b.len() > 0,
            "one server took all: {} / {}",
            a.len(),
            b.len()
        );
        for t in &clients {
            t.close();
        }
        a.until_all_lost(a.len()).await;
        b.until_all_lost(b.len()).await;
        s1.close();
        s2.close();
    });
}

#[test]
fn start_serving_false_accepts_nothing_until_start_serving() {
    on_loop(|l| async move {
        let acc = Accepted::new();
        let opts = ServerOptions {
            start_serving: false,
            ..ServerOptions::default()
        };
        let server = l
            .create_server(acc.factory(Hooks::echo), &["127.0.0.1"], 0, opts)
            .await
            .unwrap();
        assert!(!server.is_serving());
        let addr = server.sockets()[0].as_inet().unwrap();
        // The handshake completes in the kernel's queue.
        let mut client = TcpStream::connect(addr).unwrap();
        bounded(&client);
        client.write_all(b"queued").unwrap();
        // The listening socket is readable now: a watched one would be
        // dispatched in the next iteration.
        iterations(5).await;
        assert_eq!(acc.len(), 0, "accepted while not serving");
        server.start_serving().unwrap();
        server.start_serving().unwrap(); // idempotent
        assert!(server.is_serving());
        acc.until_count(1).await;
        let srv = acc.get(0);
        srv.until_data(6).await;
        assert_eq!(srv.bytes(), b"queued");
        let mut back = [0u8; 6];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"queued");
        drop(client);
        srv.until_lost().await;
        srv.assert_clean_life();
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn close_stops_listening_and_new_connects_are_refused() {
    on_loop(|l| async move {
        let (server, acc, port) = echo_server(&l).await;
        assert!(server.is_serving());
        assert_eq!(server.sockets().len(), 1);
        let (t, rec) = echo_once(&l, "127.0.0.1", port, b"before".to_vec()).await;
        server.close();
        server.close(); // idempotent
        assert!(!server.is_serving());
        assert!(server.sockets().is_empty());
        assert!(
            server.start_serving().is_err(),
            "a closed server cannot serve again"
        );
        let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // The connection accepted before close is untouched.
        t.write(b"still here").unwrap();
        rec.until_data(6 + 10).await;
        assert_eq!(rec.bytes(), b"beforestill here");
        t.close();
        acc.until_all_lost(1).await;
        server.wait_closed().await;
    });
}

#[test]
fn wait_closed_resolves_only_after_every_connection_is_lost() {
    on_loop(|l| async move {
        let (server, acc, port) = echo_server(&l).await;
        let (t1, r1) = echo_once(&l, "127.0.0.1", port, b"one".to_vec()).await;
        let (t2, r2) = echo_once(&l, "127.0.0.1", port, b"two".to_vec()).await;
        assert_eq!(server.active_connections(), 2);
        let mut waiting = Box::pin(server.wait_closed());
        assert!(
            poll_once(waiting.as_mut()).await.is_none(),
            "resolved while serving"
        );
        server.close();
        iterations(2).await;
        assert!(
            poll_once(waiting.as_mut()).await.is_none(),
            "resolved with 2 connections open"
        );
        t1.close();
        r1.until_lost().await;
        acc.get(0).until_lost().await;
        assert_eq!(server.active_connections(), 1);
        assert!(
            poll_once(waiting.as_mut()).await.is_none(),
            "resolved with 1 connection open"
        );
        t2.close();
        r2.until_lost().await;
        waiting.await;
        assert!(acc.all().iter().all(|r| r.lost.get() == 1));
        assert_eq!(server.active_connections(), 0);
        // And again at once, now that everything is gone.
        server.wait_closed().await;
    });
}

#[test]
fn serve_forever_serves_and_returns_after_close() {
    on_loop(|l| async move {
        let acc = Accepted::new();
        let opts = ServerOptions {
            start_serving: false,
            ..ServerOptions::default()
        };
        let server = l
            .create_server(acc.factory(Hooks::echo), &["127.0.0.1"], 0, opts)
            .await
            .unwrap();
        let port = port_of(&server, 0);
        let forever = l.create_task(server.serve_forever()).unwrap();
        iterations(1).await;
        assert!(server.is_serving());
        assert!(!forever.done());
        let (t, _) = echo_once(&l, "127.0.0.1", port, b"served".to_vec()).await;
        assert!(!forever.done());
        let s = server.clone();
        l.call_soon(move || s.close()).unwrap();
        forever.await.unwrap().unwrap();
        assert!(!server.is_serving());
        // Serving a closed server again is an error, not a hang.
        server.serve_forever().await.unwrap_err();
        t.close();
        acc.until_all_lost(1).await;
        server.wait_closed().await;
    });
}

#[test]
fn close_clients_flushes_and_abort_clients_drops() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    // What each server connection writes (more than the kernel buffers take
    // while the client does not read).
    let big = pattern(1 << 20, 3);
    let b = big.clone();
    let out = run(&lp, async move {
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(writer_hooks(b)),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let addr = server.sockets()[0].as_inet().unwrap();
        // Two blocking clients that read everything on threads.
        let c1 = peer(TcpStream::connect(addr).unwrap(), |mut s| {
            read_to_end_or_reset(&mut s)
        });
        acc.until_made(1).await;
        let c2 = peer(TcpStream::connect(addr).unwrap(), |mut s| {
            read_to_end_or_reset(&mut s)
        });
        acc.until_made(2).await;
        server.close();
        // close_clients: each connection flushes its buffer first.
        let (first, second) = (acc.get(0), acc.get(1));
        assert!(second.transport().get_write_buffer_size() > 0);
        first.transport().close();
        server.close_clients();
        assert!(first.transport().is_closing() && second.transport().is_closing());
        assert_eq!(
            first.lost.get() + second.lost.get(),
            0,
            "connection_lost ran inside close"
        );
        acc.until_all_lost(2).await;
        server.wait_closed().await;
        (c1, c2, first, second)
    });
    let (c1, c2, first, second) = out;
    let (got1, e1) = c1.join().unwrap();
    let (got2, e2) = c2.join().unwrap();
    assert_eq!((e1, e2), (None, None));
    assert!(
        got1 == big && got2 == big,
        "close_clients lost buffered bytes"
    );
    first.assert_clean_life();
    second.assert_clean_life();

    // abort_clients: the buffers are dropped; connection_lost(None).
    let l = lp.clone();
    let b = big.clone();
    let (c, srv) = run(&lp, async move {
        let acc = Accepted::new();
        let server = local_server(&l, acc.factory(writer_hooks(b))).await;
        let addr = server.sockets()[0].as_inet().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        acc.until_made(1).await;
        let srv = acc.get(0);
        assert!(
            srv.transport().get_write_buffer_size() > 0,
            "nothing was buffered"
        );
        server.abort_clients();
        assert_eq!(srv.transport().get_write_buffer_size(), 0);
        assert_eq!(srv.lost.get(), 0, "connection_lost ran inside abort");
        srv.until_lost().await;
        server.close();
        server.wait_closed().await;
        (peer(client, |mut s| read_to_end_or_reset(&mut s)), srv)
    });
    let (got, _err) = c.join().unwrap();
    assert!(got.len() < big.len(), "abort sent the whole buffer");
    assert!(got[..] == big[..got.len()]);
    srv.assert_clean_life();
    assert_eq!(srv.lost_kind(), None);
    finish(&lp, &seen);
}

#[test]
fn get_loop_of_server_and_transport() {
    on_loop(|l| async move {
        let (server, acc, port) = echo_server(&l).await;
        assert!(server.get_loop().ptr_eq(&l));
        let (t, _) = echo_once(&l, "127.0.0.1", port, b"x".to_vec()).await;
        assert!(t.get_loop().unwrap().ptr_eq(&l));
        assert!(acc.get(0).transport().get_loop().unwrap().ptr_eq(&l));
        t.close();
        acc.until_all_lost(1).await;
        server.close();
    });
}

#[test]
fn connect_accepted_socket_wraps_a_std_socket() {
    on_loop(|l| async move {
        let (listener, addr) = std_listener("127.0.0.1:0");
        let mut client = TcpStream::connect(addr).unwrap();
        bounded(&client);
        let (accepted, peer_addr) = listener.accept().unwrap();
        assert!(!is_nonblocking(&accepted));
        let rec = Recorder::new();
        let r = rec.clone();
        let (t, _h) = l
            .connect_accepted_socket(
                move || RecordingProtocol::new(&r, Hooks::echo()),
                OwnedFd::from(accepted),
            )
            .await
            .unwrap();
        rec.until_made().await;
        assert!(
            is_nonblocking_fd(t.fd().unwrap()),
            "connect_accepted_socket must make it non-blocking"
        );
        assert_eq!(t.peername().unwrap().as_inet().unwrap(), peer_addr);
        client.write_all(b"wrapped").unwrap();
        rec.until_data(7).await;
        let mut back = [0u8; 7];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"wrapped");
        drop(client);
        rec.until_lost().await;
        rec.assert_clean_life();
        // A datagram socket is refused.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = l
            .connect_accepted_socket(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                OwnedFd::from(udp),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

fn is_nonblocking(s: &TcpStream) -> bool {
    is_nonblocking_fd(s.as_raw_fd())
}

/// Reads the fd's flags from /proc (the tests are free of `unsafe`, so they
/// do not borrow a raw fd).
fn is_nonblocking_fd(fd: std::os::fd::RawFd) -> bool {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_else(|e| panic!("fd {fd}: {e}"));
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .expect("a flags line");
    flags & 0o4000 != 0
}

/// What the fd is, as /proc names it ("socket:[inode]").
fn fd_kind(fd: std::os::fd::RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn create_connection_with_a_connected_sock() {
    on_loop(|l| async move {
        let (listener, addr) = std_listener("127.0.0.1:0");
        let sock = TcpStream::connect(addr).unwrap();
        let local = sock.local_addr().unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        bounded(&theirs);
        let (t, _h, rec) = connect_rec(
            &l,
            None,
            0,
            Hooks::none(),
            ConnectOptions {
                sock: Some(OwnedFd::from(sock)),
                ..ConnectOptions::default()
            },
        )
        .await;
        assert!(rec.is_made());
        assert_eq!(t.sockname().unwrap().as_inet().unwrap(), local);
        t.write(b"via sock").unwrap();
        let mut got = [0u8; 8];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"via sock");
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
        // host and sock together are refused.
        let other = TcpStream::connect(addr).unwrap();
        let err = l
            .create_connection(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                Some("127.0.0.1"),
                addr.port(),
                ConnectOptions {
                    sock: Some(OwnedFd::from(other)),
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn local_addr_binds_the_client_end() {
    on_loop(|l| async move {
        let (server, acc, port) = echo_server(&l).await;
        let local: SocketAddr = "127.0.0.2:0".parse().unwrap();
        let (t, _h, rec) = connect_rec(
            &l,
            Some("127.0.0.1"),
            port,
            Hooks::none(),
            ConnectOptions {
                local_addr: Some(local),
                ..ConnectOptions::default()
            },
        )
        .await;
        let ours = t.sockname().unwrap().as_inet().unwrap();
        assert_eq!(ours.ip(), local.ip());
        acc.until_made(1).await;
        assert_eq!(
            acc.get(0)
                .transport()
                .peername()
                .unwrap()
                .as_inet()
                .unwrap(),
            ours
        );
        // A local address that cannot be bound is an error naming it.
        let err = l
            .create_connection(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                Some("127.0.0.1"),
                port,
                ConnectOptions {
                    local_addr: Some(ours),
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains(&ours.to_string()), "{err}");
        t.close();
        rec.until_lost().await;
        acc.until_all_lost(1).await;
        server.close();
    });
}

/// A host name that resolves to both `::1` and `127.0.0.1` here: `localhost`
/// when the resolver says so, else no host at all (getaddrinfo's loopback of
/// each family, which asyncio gets for `host=None` too).
async fn dual_stack_loopback(lp: &EventLoop) -> Option<(Option<&'static str>, Vec<SocketAddr>)> {
    if !ipv6_loopback() {
        println!("skipping: this machine cannot bind ::1");
        return None;
    }
    let hints = AddrInfoHints {
        socktype: SocketKind::STREAM,
        ..AddrInfoHints::default()
    };
    for host in [Some("localhost"), None] {
        let Ok(infos) = lp.getaddrinfo(host, 9, hints).await else {
            continue;
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for i in infos {
            if !addrs.contains(&i.addr) {
                addrs.push(i.addr);
            }
        }
        let v6 = addrs
            .iter()
            .any(|a| a.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST));
        let v4 = addrs
            .iter()
            .any(|a| a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST));
        if v6 && v4 && addrs.len() == 2 {
            return Some((host, addrs));
        }
        println!("{host:?} resolves to {addrs:?}, not to ::1 and 127.0.0.1");
    }
    println!("skipping: no host here resolves to both ::1 and 127.0.0.1");
    None
}

#[test]
fn happy_eyeballs_races_past_an_address_that_never_answers() {
    on_loop(|l| async move {
        let Some((host, addrs)) = dual_stack_loopback(&l).await else {
            return;
        };
        // The first address tried never answers (a full backlog-0 listener
        // drops SYNs); the second listens, on the same port.
        let (first, second) = (addrs[0], addrs[1]);
        let mut tries = 0;
        let (hole, good, port) = loop {
            tries += 1;
            let good = TcpListener::bind(SocketAddr::new(second.ip(), 0)).unwrap();
            let port = good.local_addr().unwrap().port();
            match std::panic::catch_unwind(|| black_hole(SocketAddr::new(first.ip(), port))) {
                Ok(hole) => break (hole, good, port),
                Err(_) if tries < 5 => continue,
                Err(p) => std::panic::resume_unwind(p),
            }
        };
        let delay = Duration::from_millis(100);
        let rec = Recorder::new();
        let r = rec.clone();
        let start = Instant::now();
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&r, Hooks::none()),
                host,
                port,
                ConnectOptions {
                    happy_eyeballs_delay: Some(delay),
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(
            t.peername().unwrap().as_inet().unwrap(),
            SocketAddr::new(second.ip(), port)
        );
        assert!(
            took >= delay,
            "the second attempt started after {took:?}, before the delay"
        );
        // The losing attempt was dropped: its socket is closed.
        if let Some(n) = syn_sent_to(port) {
            assert_eq!(
                n, 0,
                "the attempt to the silent address is still connecting"
            );
        }
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
        drop((hole, good));
    });
}

#[test]
fn failed_attempts_are_aggregated_into_one_error() {
    on_loop(|l| async move {
        // A port closed on both families.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let connect = |host: Option<&'static str>| {
            let l = l.clone();
            async move {
                l.create_connection(
                    || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                    host,
                    port,
                    ConnectOptions::default(),
                )
                .await
                .map(|_| ())
                .unwrap_err()
            }
        };
        // One address: that error as the OS gave it (errno kept; issue 15).
        let err = connect(Some("127.0.0.1")).await;
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::CONNREFUSED.raw_os_error()),
            "{err}"
        );
        match dual_stack_loopback(&l).await {
            Some((host, _addrs)) => {
                // Refused alike on both: the first error, errno kept (the
                // aggregate of differing errors: connect_options.rs).
                let err = connect(host).await;
                assert_eq!(
                    err.raw_os_error(),
                    Some(rustix::io::Errno::CONNREFUSED.raw_os_error()),
                    "{err}"
                );
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            }
            None => println!("checked the single-address error only"),
        }
    });
}

#[test]
fn clients_closed_before_connection_made_still_get_made_then_lost() {
    // abort_clients runs in the iteration after the accept, before the
    // connection_made that Stream::start scheduled: asyncio still delivers
    // connection_made, then connection_lost.
    on_loop(|l| async move {
        let acc = Accepted::new();
        let slot: Rc<RefCell<Option<Server>>> = Rc::new(RefCell::new(None));
        let (s, lp2) = (slot.clone(), l.clone());
        let inner = acc.factory(Hooks::none);
        let server = local_server(&l, move || {
            let s = s.clone();
            lp2.call_soon(move || s.borrow().as_ref().unwrap().abort_clients())
                .unwrap();
            inner()
        })
        .await;
        *slot.borrow_mut() = Some(server.clone());
        let addr = server.sockets()[0].as_inet().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        acc.until_all_lost(1).await;
        let srv = acc.get(0);
        srv.assert_clean_life();
        assert_eq!(srv.events(), vec![Ev::Made, Ev::Lost(None)]);
        server.close();
        server.wait_closed().await;
        slot.borrow_mut().take();
        drop(client);
    });
}

// ---------------------------------------------------------------------------
// The transport

#[test]
fn a_small_write_is_sent_at_once() {
    on_loop(|l| async move {
        let (t, rec, mut theirs) = connect_std(&l, Hooks::none()).await;
        t.write(b"now").unwrap();
        assert_eq!(t.get_write_buffer_size(), 0, "a small write was buffered");
        // The peer gets it while the loop is blocked here, in this task: the
        // bytes left in write() itself.
        let mut got = [0u8; 3];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"now");
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
    });
}

#[test]
fn writelines_sends_every_chunk_in_order() {
    on_loop(|l| async move {
        let (t, rec, mut theirs) = connect_std(&l, Hooks::none()).await;
        // Small: one vectored send, nothing buffered.
        t.writelines(&[b"ab", b"", b"cd", b"e"]).unwrap();
        assert_eq!(t.get_write_buffer_size(), 0);
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcde");
        // Large: partly sent, the rest buffered in order.
        let chunks: Vec<Vec<u8>> = (0..5).map(|i| pattern(700_000 + i * 13, i)).collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        let expected: Vec<u8> = chunks.concat();
        let n = expected.len();
        let reader = peer(theirs, move |mut s| {
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).unwrap();
            buf
        });
        t.writelines(&refs).unwrap();
        t.close();
        rec.until_lost().await;
        let got = reader.join().unwrap();
        assert!(got == expected, "writelines reordered or lost bytes");
        rec.assert_clean_life();
    });
}

#[test]
fn write_eof_half_closes_and_the_reply_still_arrives() {
    on_loop(|l| async move {
        // The server answers at EOF, keeping the connection half-open to do
        // so, then closes.
        let acc = Accepted::new();
        let server = local_server(
            &l,
            acc.factory(|| {
                Hooks::none().on_eof(|t, r| {
                    let mut reply = b"got ".to_vec();
                    reply.extend_from_slice(&r.bytes());
                    t.write(&reply).unwrap();
                    t.close();
                    true
                })
            }),
        )
        .await;
        let port = port_of(&server, 0);
        let (t, _h, rec) = connect_rec(
            &l,
            Some("127.0.0.1"),
            port,
            Hooks::none(),
            ConnectOptions::default(),
        )
        .await;
        assert!(t.can_write_eof());
        t.write(b"question").unwrap();
        t.write_eof().unwrap();
        t.write_eof().unwrap(); // idempotent
        assert!(!t.is_closing(), "write_eof is not close");
        rec.until_lost().await;
        assert_eq!(rec.bytes(), b"got question");
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        assert!(rec.saw_eof());
        rec.assert_clean_life();
        acc.until_all_lost(1).await;
        let srv = acc.get(0);
        srv.assert_clean_life();
        assert_eq!(
            srv.events(),
            vec![Ev::Made, Ev::Data(8), Ev::Eof, Ev::Lost(None)]
        );
        server.close();
    });
}

#[test]
fn eof_received_false_closes_and_true_keeps_writing_possible() {
    on_loop(|l| async move {
        // false (the default): the transport closes itself.
        let (t, rec, theirs) = connect_std(&l, Hooks::none()).await;
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        rec.until_lost().await;
        assert!(t.is_closing());
        assert_eq!(rec.events(), vec![Ev::Made, Ev::Eof, Ev::Lost(None)]);
        rec.assert_clean_life();

        // true: still open for writing; reading stops.
        let (t, rec, mut theirs) = connect_std(&l, Hooks::none().on_eof(|_, _| true)).await;
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        rec.until(|r| r.saw_eof()).await;
        iterations(3).await;
        assert!(!t.is_closing());
        assert_eq!(rec.lost.get(), 0);
        t.write(b"after eof").unwrap();
        let mut got = [0u8; 9];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"after eof");
        // Resuming reading after EOF does not deliver a second EOF.
        t.resume_reading();
        iterations(3).await;
        assert_eq!(rec.count(&Ev::Eof), 1, "{:?}", rec.events());
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
    });
}

#[test]
fn close_flushes_then_connection_lost_once_never_from_close() {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_std(&l, Hooks::none()).await;
        small_send_buffer(&t);
        let data = pattern(3 << 20, 9);
        t.write(&data).unwrap();
        assert!(t.get_write_buffer_size() > 0, "3 MiB fit in the kernel");
        assert!(!t.is_closing());
        t.close();
        assert!(t.is_closing());
        assert_eq!(rec.lost.get(), 0, "connection_lost ran inside close()");
        t.close(); // idempotent
        let reader = peer(theirs, |mut s| read_to_end_or_reset(&mut s));
        rec.until_lost().await;
        let (got, err) = reader.join().unwrap();
        assert_eq!(err, None);
        assert!(
            got == data,
            "close lost buffered bytes ({} of {})",
            got.len(),
            data.len()
        );
        assert_eq!(t.get_write_buffer_size(), 0);
        // Nothing more arrives.
        iterations(3).await;
        assert_eq!(rec.lost.get(), 1);
        assert_eq!(rec.lost_kind(), None);
        assert_eq!(t.fd(), None, "the socket was not released");
        rec.assert_clean_life();

        // Closing with nothing buffered: connection_lost still comes later,
        // through the loop.
        let (t, rec, _theirs) = connect_std(&l, Hooks::none()).await;
        t.close();
        assert_eq!(rec.lost.get(), 0, "connection_lost ran inside close()");
        rec.until_lost().await;
        rec.assert_clean_life();
    });
}

#[test]
fn abort_drops_the_buffer_and_loses_the_connection_once() {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_std(&l, Hooks::none()).await;
        small_send_buffer(&t);
        let data = pattern(2 << 20, 4);
        t.write(&data).unwrap();
        assert!(t.get_write_buffer_size() > 0);
        t.abort();
        assert_eq!(t.get_write_buffer_size(), 0, "abort kept the buffer");
        assert!(t.is_closing());
        assert_eq!(rec.lost.get(), 0, "connection_lost ran inside abort()");
        t.abort();
        t.close();
        rec.until_lost().await;
        let (got, _) = read_to_end_or_reset(&mut { theirs });
        assert!(got.len() < data.len());
        assert!(got[..] == data[..got.len()]);
        iterations(3).await;
        assert_eq!(rec.lost_kind(), None);
        rec.assert_clean_life();
    });
}

#[test]
fn extra_info_names_and_typed_accessors() {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_std(&l, Hooks::none()).await;
        let ours = theirs.peer_addr().unwrap();
        let peer_addr = theirs.local_addr().unwrap();
        assert_eq!(
            t.get_extra_info("peername"),
            Some(ExtraInfo::Addr(SockAddr::Inet(peer_addr)))
        );
        assert_eq!(
            t.get_extra_info("sockname"),
            Some(ExtraInfo::Addr(SockAddr::Inet(ours)))
        );
        assert_eq!(t.peername(), Some(SockAddr::Inet(peer_addr)));
        assert_eq!(t.sockname(), Some(SockAddr::Inet(ours)));
        let fd = t.fd().unwrap();
        assert_eq!(t.get_extra_info("socket"), Some(ExtraInfo::Fd(fd)));
        assert!(fd_kind(fd).starts_with("socket:"), "{}", fd_kind(fd));
        assert_eq!(t.get_extra_info("no such thing"), None);
        assert_eq!(t.get_extra_info("sslcontext"), None);
        let dbg = format!("{t:?}");
        assert!(dbg.contains("Transport"), "{dbg}");
        t.close();
        rec.until_lost().await;
        // After the loss the addresses are still known; the socket is gone.
        assert_eq!(t.peername(), Some(SockAddr::Inet(peer_addr)));
        assert_eq!(t.get_extra_info("socket"), None);
        rec.assert_clean_life();
    });
}

#[test]
fn set_protocol_routes_later_callbacks_to_the_new_protocol() {
    on_loop(|l| async move {
        let (t, old, mut theirs) = connect_std(&l, Hooks::none()).await;
        let first = t.get_protocol();
        assert!(matches!(first, AnyProtocol::Streaming(_)));
        theirs.write_all(b"to old").unwrap();
        old.until_data(6).await;
        let new = Recorder::adopted(old.notify.clone(), &t);
        let handle = ProtocolHandle::new(RecordingProtocol::new(&new, Hooks::none()));
        t.set_protocol(handle.clone());
        assert!(t.get_protocol().ptr_eq(&AnyProtocol::from(handle.clone())));
        assert!(!t.get_protocol().ptr_eq(&first));
        theirs.write_all(b"to new").unwrap();
        new.until_data(6).await;
        assert_eq!(old.bytes(), b"to old");
        assert_eq!(new.bytes(), b"to new");
        drop(theirs);
        new.until_lost().await;
        assert_eq!(
            old.lost.get(),
            0,
            "the replaced protocol got connection_lost"
        );
        assert_eq!(new.lost.get(), 1);
        assert_eq!(new.events(), vec![Ev::Data(6), Ev::Eof, Ev::Lost(None)]);

        // From inside data_received: the rest of the stream goes to the
        // new protocol.
        let notify = Rc::new(Notify::default());
        let swapped: Rc<RefCell<Option<Rc<Recorder>>>> = Rc::new(RefCell::new(None));
        let (sw, n2) = (swapped.clone(), notify.clone());
        let (t, old, mut theirs) = connect_std(
            &l,
            Hooks::none().on_data(move |t, _, _| {
                if sw.borrow().is_none() {
                    let new = Recorder::adopted(n2.clone(), t);
                    t.set_protocol(ProtocolHandle::new(RecordingProtocol::new(
                        &new,
                        Hooks::echo(),
                    )));
                    *sw.borrow_mut() = Some(new);
                }
            }),
        )
        .await;
        theirs.write_all(b"first").unwrap();
        old.until_data(5).await;
        let new = swapped.borrow().clone().unwrap();
        theirs.write_all(b"second").unwrap();
        new.until_data(6).await;
        let mut back = [0u8; 6];
        theirs.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"second");
        assert_eq!(old.bytes(), b"first");
        t.close();
        new.until_lost().await;
        assert_eq!(old.lost.get() + new.lost.get(), 1);
        assert!(new.violations.borrow().is_empty() && old.violations.borrow().is_empty());
    });
}

#[test]
fn pause_reading_holds_data_until_resume_reading() {
    on_loop(|l| async move {
        let (t, rec, mut theirs) = connect_std(&l, Hooks::none()).await;
        assert!(t.is_reading());
        t.pause_reading();
        t.pause_reading(); // idempotent
        assert!(!t.is_reading());
        theirs.write_all(b"held").unwrap();
        // The socket is readable now; a watched one would be dispatched.
        iterations(5).await;
        assert_eq!(rec.data_len(), 0, "data_received while paused");
        t.resume_reading();
        t.resume_reading();
        assert!(t.is_reading());
        rec.until_data(4).await;
        assert_eq!(rec.bytes(), b"held");
        t.close();
        assert!(!t.is_reading(), "a closing transport does not read");
        t.resume_reading();
        assert!(!t.is_reading());
        rec.until_lost().await;
        rec.assert_clean_life();
    });
}

#[test]
fn write_buffer_limits_defaults_and_validation() {
    on_loop(|l| async move {
        let (t, rec, _theirs) = connect_std(&l, Hooks::none()).await;
        assert_eq!(t.get_write_buffer_limits(), (16384, 65536));
        assert_eq!(t.get_write_buffer_size(), 0);
        let err = t.set_write_buffer_limits(Some(10), Some(20)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            t.get_write_buffer_limits(),
            (16384, 65536),
            "a refused call changed the limits"
        );
        t.set_write_buffer_limits(Some(1000), None).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (250, 1000));
        t.set_write_buffer_limits(None, Some(100)).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (100, 400));
        t.set_write_buffer_limits(None, None).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (16384, 65536));
        t.set_write_buffer_limits(Some(0), Some(0)).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (0, 0));
        t.close();
        rec.until_lost().await;
    });
}

/// A protocol that keeps its transport (as most do) and counts its drops.
struct Keeper {
    transport: Option<Transport>,
    _drops: DropCount,
    lost: Rc<Cell<usize>>,
}

impl aioloop::BaseProtocol for Keeper {
    fn connection_made(&mut self, t: Transport) {
        self.transport = Some(t);
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.lost.set(self.lost.get() + 1);
    }
}

impl aioloop::Protocol for Keeper {
    fn data_received(&mut self, data: &[u8]) {
        self.transport.as_ref().unwrap().write(data).unwrap();
    }
}

#[test]
fn a_lost_connection_lets_go_of_a_protocol_that_keeps_its_transport() {
    // protocol -> transport -> protocol is a cycle of Rcs: unless the
    // transport lets go of its protocol once connection_lost has run (asyncio
    // sets `_protocol = None`), every connection of a long-running server
    // leaks its protocol and transport.
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let drops = counter();
    let lost = counter();
    let (d, lo, lost2) = (drops.clone(), lost.clone(), lost.clone());
    run(&lp, async move {
        let server = local_server(&l, move || Keeper {
            transport: None,
            _drops: DropCount(d.clone()),
            lost: lo.clone(),
        })
        .await;
        let port = port_of(&server, 0);
        for i in 0..5 {
            let (t, rec) = echo_once(&l, "127.0.0.1", port, pattern(100, i)).await;
            t.close();
            rec.until_lost().await;
        }
        // Server-side losses follow the clients' EOF (bounded by the
        // watchdog).
        while lost2.get() < 5 {
            iterations(1).await;
        }
        iterations(3).await;
        server.close();
        server.wait_closed().await;
    });
    assert_eq!(lost.get(), 5);
    assert_eq!(
        drops.get(),
        5,
        "protocols of lost connections are still alive"
    );
    finish(&lp, &seen);
}

/// A protocol that pauses reading in connection_made.
struct PausesAtStart {
    transport: Option<aioloop::Transport>,
    got: Vec<u8>,
}

impl aioloop::BaseProtocol for PausesAtStart {
    fn connection_made(&mut self, t: aioloop::Transport) {
        t.pause_reading();
        self.transport = Some(t);
    }
}

impl aioloop::Protocol for PausesAtStart {
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
}

#[test]
fn pause_reading_inside_connection_made_holds() {
    use std::io::Write as _;
    let lp = aioloop::EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let lp2 = lp.clone();
    let (t, proto, mut peer) = lp
        .run_until_complete(async move {
            let (t, proto) = aioloop::StreamLoopExt::create_connection(
                &lp2,
                || PausesAtStart {
                    transport: None,
                    got: Vec::new(),
                },
                Some("127.0.0.1"),
                port,
                Default::default(),
            )
            .await
            .unwrap();
            let (peer, _) = listener.accept().unwrap();
            (t, proto, peer)
        })
        .unwrap();
    assert!(!t.is_reading());
    peer.write_all(b"held back").unwrap();
    // Several iterations: nothing may be delivered while paused.
    for _ in 0..5 {
        let lp2 = lp.clone();
        lp.run_until_complete(async move { lp2.sleep(std::time::Duration::from_millis(2)).await })
            .unwrap()
            .unwrap();
    }
    assert!(
        proto.with(|p| p.got.is_empty()),
        "data_received while paused"
    );
    t.resume_reading();
    let p2 = proto.clone();
    lp.run_until_complete(async move { p2.wait_until(|p| p.got.len() >= 9).await })
        .unwrap();
    assert_eq!(proto.with(|p| p.got.clone()), b"held back");
    t.abort();
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// LESSONS 1 and 9 (docs/LESSONS.md)

/// LESSONS 1: write first, buffer only the rest, and watch for writability
/// only while the buffer holds bytes. The loop's writer table is the
/// witness: `has_writer` on the transport's fd (`remove_writer` is refused
/// on a transport's fd, issue 15).
/// A writer left behind after the buffer drained would keep a level-triggered
/// poller waking at once on every iteration (a busy loop).
#[test]
fn the_transport_watches_for_writability_only_while_its_buffer_is_not_empty() {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_std(&l, Hooks::none()).await;
        let fd = t.fd().unwrap();
        // A small write leaves at once: nothing buffered, nothing watched.
        t.write(b"one byte at a time: x").unwrap();
        assert_eq!(t.get_write_buffer_size(), 0);
        assert!(
            !l.has_writer(fd),
            "a writer is registered with an empty buffer"
        );
        // A large write: what the kernel does not take is buffered (the
        // writer is registered then), and resume_writing comes only once the
        // buffer is empty (low-water mark 0).
        small_send_buffer(&t);
        t.set_write_buffer_limits(Some(64 * 1024), Some(0)).unwrap();
        const N: usize = 4 << 20;
        t.write(&pattern(N, 1)).unwrap();
        assert!(
            t.get_write_buffer_size() > 0,
            "4 MiB did not fit the kernel"
        );
        assert!(rec.paused.get());
        // The peer reads everything and keeps the connection open (its
        // stream comes back with the bytes), so the transport stays idle.
        let reader = peer(theirs, |mut s| {
            let mut buf = vec![0u8; 21 + N];
            s.read_exact(&mut buf).unwrap();
            (buf, s)
        });
        rec.until(|r| !r.paused.get()).await;
        assert_eq!(t.get_write_buffer_size(), 0);
        assert!(
            !l.has_writer(fd),
            "the writer stayed registered after the buffer drained"
        );
        let (got, _theirs) = reader.join().unwrap();
        assert!(got[21..] == pattern(N, 1)[..], "bytes lost or reordered");
        // The loop idles: a level-triggered writer left behind would make it
        // spin through this sleep (measured here: ~100,000 wake-ups and
        // ~140 ms of CPU in 300 ms; an idle loop: one wake-up, under 1 ms).
        // The thread's CPU time is a second witness; a loaded machine can
        // only lower a spinning thread's share, never raise an idle one's.
        let cpu = || rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let before = cpu();
        l.sleep(Duration::from_millis(300)).await.unwrap();
        let after = cpu();
        let used = Duration::new(after.tv_sec as u64, after.tv_nsec as u32)
            .saturating_sub(Duration::new(before.tv_sec as u64, before.tv_nsec as u32));
        assert!(
            used < Duration::from_millis(50),
            "the idle loop used {used:?} of CPU in 300 ms"
        );
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
    });
}

/// LESSONS 9 (TCP half): `create_server` sets `SO_REUSEADDR` by default on
/// Unix, as asyncio (CPython had to re-add it after removing it by
/// mistake), and `reuse_address: false` leaves it off. The visible effect:
/// a server restarted on the port of a connection it closed first (the
/// closing side keeps the 4-tuple in TIME_WAIT) binds again with the
/// default, and is refused without it.
#[test]
fn servers_set_so_reuseaddr_by_default_so_a_restart_binds_despite_time_wait() {
    on_loop(|l| async move {
        let acc = Accepted::new();
        let first = local_server(&l, acc.factory(Hooks::none)).await;
        let addr = first.sockets()[0].as_inet().unwrap();
        let port = addr.port();
        // The server side closes first: its end goes to TIME_WAIT once the
        // client's FIN arrives.
        let client = TcpStream::connect(addr).unwrap();
        bounded(&client);
        acc.until_made(1).await;
        let server_end = acc.get(0).transport();
        assert!(rustix::net::sockopt::socket_reuseaddr(dup_fd(server_end.fd().unwrap())).unwrap());
        server_end.close();
        acc.until_all_lost(1).await;
        let mut c = client;
        let (rest, _) = read_to_end_or_reset(&mut c);
        assert!(rest.is_empty());
        drop(c);
        first.close();
        first.wait_closed().await;

        // Without SO_REUSEADDR the port is taken by the closed connection.
        let err = l
            .create_server(
                acc.factory(Hooks::none),
                &["127.0.0.1"],
                port,
                ServerOptions {
                    reuse_address: false,
                    ..ServerOptions::default()
                },
            )
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // With the default it binds, and serves.
        let again = l
            .create_server(
                acc.factory(Hooks::none),
                &["127.0.0.1"],
                port,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        acc.until_made(2).await;
        drop(c);
        acc.until_all_lost(2).await;
        again.close();
        again.wait_closed().await;
    });
}

/// asyncio's `Protocol.data_received` and `DatagramProtocol.datagram_received`
/// do nothing by default: a protocol that overrides nothing compiles and
/// runs; what it is sent is dropped, and the connection ends normally.
#[test]
fn a_protocol_that_overrides_nothing_drops_what_it_receives() {
    struct Nothing;
    impl BaseProtocol for Nothing {}
    impl Protocol for Nothing {}
    struct NoDatagrams;
    impl aioloop::DatagramProtocol for NoDatagrams {}

    on_loop(|l| async move {
        let (listener, addr) = std_listener("127.0.0.1:0");
        let (t, _h) = l
            .create_connection(
                || Nothing,
                Some("127.0.0.1"),
                addr.port(),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        theirs.write_all(b"dropped on the floor").unwrap();
        drop(theirs);
        // The EOF closes the transport (eof_received's default: false).
        while !t.is_closing() {
            iterations(1).await;
        }

        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (d, _h) = aioloop::DatagramLoopExt::create_datagram_endpoint(
            &l,
            || NoDatagrams,
            aioloop::DatagramOptions::default().with_local_addr(any),
        )
        .await
        .unwrap();
        let to = match d.get_extra_info("sockname") {
            Some(ExtraInfo::Addr(a)) => a,
            other => panic!("{other:?}"),
        };
        d.sendto(b"to myself", Some(to)).unwrap();
        iterations(3).await;
        d.close();
    });
}
