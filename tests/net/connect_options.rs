//! The connect and server options of issue 15 and the behaviours asyncio
//! has around them, through the facade on real loopback sockets: cancelling
//! `serve_forever`, `sock=` refusing non-stream sockets, `TCP_NODELAY` on
//! every TCP path, a panicking `connection_made`, host `""`, the errno of a
//! refused connection, `all_errors`, `sock=` for servers and Unix
//! connections, `cleanup_socket`, service names as ports, and the TLS
//! options (`server_hostname=""`, timeouts checked at construction).
#![cfg(feature = "net")]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use aioloop::{ConnectErrors, ErrorKind, ResolveError};

/// Closes `server` and its connections, and waits until they are gone.
async fn shut_down(server: &Server) {
    server.close();
    server.abort_clients();
    server.wait_closed().await;
}

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_inet().unwrap().port()
}

/// A recording client factory (its recorder is dropped: only the transport
/// matters to these tests).
fn client() -> impl FnOnce() -> RecordingProtocol + 'static {
    || RecordingProtocol::new(&Recorder::new(), Hooks::none())
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads `TCP_NODELAY` back from a transport's socket.
fn nodelay(t: &Transport) -> bool {
    let fd = t.fd().expect("the transport owns a socket");
    // SAFETY: the transport owns `fd` and is alive (borrowed) for the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::net::sockopt::tcp_nodelay(fd).expect("reading TCP_NODELAY")
}

fn assert_nodelay_off(fd: impl AsFd) {
    assert!(!rustix::net::sockopt::tcp_nodelay(fd).unwrap());
}

// ---------------------------------------------------------------------------
// 1. Cancelling serve_forever closes the server

async fn forever_server(lp: &EventLoop) -> (Server, u16) {
    let acc = Accepted::new();
    let server = lp
        .create_server(
            acc.factory(Hooks::none),
            &["127.0.0.1"],
            0,
            ServerOptions::default(),
        )
        .await
        .unwrap();
    let port = port_of(&server);
    (server, port)
}

/// asyncio's `serve_forever` closes the server when it is cancelled and
/// raises `CancelledError` out of the `await` (base_events.py
/// `Server.serve_forever`: `except CancelledError: ... finally: self.close()`).
/// Here the cancellation of the task is observed at the `serve_forever`
/// await: the body gets `Cancelled` (and may handle it), and the server is
/// closed by then.
#[test]
fn cancelling_the_task_running_serve_forever_closes_the_server() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let (server, port) = forever_server(&l).await;
        let s = server.clone();
        let task = l
            .create_task(async move {
                let r = s.serve_forever().await;
                // The body sees the cancellation and the closed server.
                let kind = r.as_ref().err().map(|e| e.kind());
                Ok::<_, LoopError>((kind, s.is_serving()))
            })
            .unwrap();
        iterations(2).await;
        assert!(server.is_serving());
        assert!(task.cancel(None));
        let (kind, serving) = task.await.unwrap().unwrap();
        assert_eq!(kind, Some(ErrorKind::Cancelled));
        assert!(!serving);
        assert!(!server.is_serving());
        assert!(server.sockets().is_empty());
        let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        server.wait_closed().await;
    });
    finish(&lp, &seen);
}

/// `wait_for(serve_forever(), t)` in a task: the task's cancellation reaches
/// `serve_forever` through the timeout (which passes it on) and closes the
/// server; an expiring `wait_for` closes it too, with a `Timeout` error.
#[test]
fn cancelling_a_wait_for_around_serve_forever_closes_the_server() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        // The task around the wait_for is cancelled.
        let (server, port) = forever_server(&l).await;
        let s = server.clone();
        let task = l
            .create_task(async move {
                let r = wait_for(s.serve_forever(), Duration::from_secs(3600)).await;
                Ok::<_, LoopError>(r.err().map(|e| e.kind()))
            })
            .unwrap();
        iterations(2).await;
        assert!(server.is_serving());
        task.cancel(None);
        assert_eq!(task.await.unwrap().unwrap(), Some(ErrorKind::Cancelled));
        assert!(!server.is_serving());
        let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        // The wait_for expires.
        let (server, _) = forever_server(&l).await;
        let err = wait_for(server.serve_forever(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(!server.is_serving());
        assert!(server.sockets().is_empty());
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 2. sock= must be a stream socket

#[test]
fn sock_options_refuse_a_datagram_socket() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let udp = || OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let check = |err: io::Error| {
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("A Stream Socket was expected, got "),
                "{text}"
            );
            assert!(text.contains("DGRAM"), "{text}");
        };
        let opts = ConnectOptions {
            sock: Some(udp()),
            ..ConnectOptions::default()
        };
        check(
            l.create_connection(client(), None, 0, opts)
                .await
                .map(|_| ())
                .unwrap_err(),
        );
        check(
            l.connect_accepted_socket(client(), udp())
                .await
                .map(|_| ())
                .unwrap_err(),
        );
        let opts = ServerOptions {
            sock: Some(udp()),
            ..ServerOptions::default()
        };
        check(
            l.create_server(client_factory(), &[], 0, opts)
                .await
                .unwrap_err(),
        );
    });
    finish(&lp, &seen);
}

fn client_factory() -> impl Fn() -> RecordingProtocol + 'static {
    || RecordingProtocol::new(&Recorder::new(), Hooks::none())
}

// ---------------------------------------------------------------------------
// 3. TCP_NODELAY on every TCP transport

/// Every path that makes a TCP transport sets `TCP_NODELAY` (asyncio's
/// `_set_nodelay` in `_SelectorSocketTransport.__init__`): host/port
/// connect, `sock=` connect, `connect_accepted_socket`, and the server's
/// accepted connections. The sockets handed in start without it.
#[test]
fn tcp_nodelay_is_set_on_every_tcp_transport() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(Hooks::none),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let port = port_of(&server);

        // host/port
        let (t, _) = l
            .create_connection(client(), Some("127.0.0.1"), port, Default::default())
            .await
            .unwrap();
        assert!(nodelay(&t), "create_connection(host, port)");
        acc.until_made(1).await;
        assert!(nodelay(&acc.get(0).transport()), "accepted connection");

        // sock=
        let std = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_nodelay_off(&std);
        let opts = ConnectOptions {
            sock: Some(std.into()),
            ..ConnectOptions::default()
        };
        let (t2, _) = l.create_connection(client(), None, 0, opts).await.unwrap();
        assert!(nodelay(&t2), "create_connection(sock=)");

        // connect_accepted_socket
        let (listener, addr) = std_listener("127.0.0.1:0");
        let _peer = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_nodelay_off(&accepted);
        let (t3, _) = l
            .connect_accepted_socket(client(), accepted.into())
            .await
            .unwrap();
        assert!(nodelay(&t3), "connect_accepted_socket");

        for t in [t, t2, t3] {
            t.abort();
        }
        shut_down(&server).await;
    });
    finish(&lp, &seen);
}

/// Unix stream sockets have no `TCP_NODELAY`: the Unix paths work and do
/// not try to set it (no error, nothing reported).
#[test]
fn unix_transports_do_not_get_tcp_nodelay() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let (a, _b) = UnixStream::pair().unwrap();
        let (t, _) = l.connect_accepted_socket(client(), a.into()).await.unwrap();
        let fd = t.fd().unwrap();
        // SAFETY: the transport owns `fd` and is alive for the call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        assert!(rustix::net::sockopt::tcp_nodelay(fd).is_err());
        t.abort();
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 4. A panic in connection_made

/// What asyncio does (CPython 3.12, selector_events.py and events.py): the
/// socket transport's `__init__` schedules `protocol.connection_made` with
/// `call_soon`, then (also with `call_soon`) adds the reader. A raise in
/// `connection_made` is caught by `Handle._run`, which reports it to the
/// exception handler ("Exception in callback ..."); nothing closes the
/// transport, and reading starts as usual. So here: the panic is reported,
/// the transport stays open, and it keeps delivering data to the protocol.
#[test]
fn a_panic_in_connection_made_is_reported_and_the_transport_stays_open() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let s = seen.clone();
    run(&lp, async move {
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(|| Hooks::none().on_made(|_, _| panic!("made failed"))),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let port = port_of(&server);
        let mut peer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The report comes from inside connection_made, which wakes no
        // waiter: poll for it, bounded.
        for _ in 0..10_000 {
            if !s.borrow().is_empty() {
                break;
            }
            iterations(1).await;
        }
        let rec = acc.get(0);
        assert!(rec.is_made());
        // Reported once, naming the callback and the panic.
        let seen_now = s.borrow().clone();
        assert_eq!(seen_now.len(), 1, "{seen_now:#?}");
        assert!(
            seen_now[0].message.contains("connection_made"),
            "{seen_now:#?}"
        );
        assert_eq!(seen_now[0].panic.as_deref(), Some("made failed"));
        s.borrow_mut().clear();
        // Still open: it reads and writes.
        std::io::Write::write_all(&mut peer, b"still here").unwrap();
        rec.until_data(10).await;
        assert_eq!(rec.bytes(), b"still here");
        assert_eq!(rec.lost.get(), 0);
        let t = rec.transport();
        assert!(!t.is_closing());
        t.write(b"ok").unwrap();
        let mut buf = [0u8; 2];
        std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        t.close();
        rec.until_lost().await;
        server.close();
        server.wait_closed().await;
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 5. create_server(host="")

/// asyncio: `if host == '': hosts = [None]` (every interface).
#[test]
fn create_server_with_an_empty_host_listens_on_every_interface() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let acc = Accepted::new();
        let server = l
            .create_server(acc.factory(Hooks::none), &[""], 0, ServerOptions::default())
            .await
            .unwrap();
        let addrs: Vec<SocketAddr> = server
            .sockets()
            .iter()
            .map(|a| a.as_inet().unwrap())
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_unspecified()), "{addrs:?}");
        let port = addrs[0].port();
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        acc.until_made(1).await;
        shut_down(&server).await;
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 6. A refused connection keeps its errno

/// asyncio re-raises the attempt's `OSError` (its errno kept) when every
/// attempt failed alike; here "alike" is the same errno, since the text of
/// each names its address. One address, and two addresses refused alike.
#[test]
fn a_refused_connection_keeps_its_errno() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let port = closed_port();
        let err = l
            .create_connection(client(), Some("127.0.0.1"), port, Default::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_econnrefused()), "{err:?}");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        // Two addresses refused alike: no host gives the loopback of each
        // family (::1 and 127.0.0.1), where IPv6 works.
        if ipv6_loopback() {
            let err = l
                .create_connection(client(), None, port, Default::default())
                .await
                .map(|_| ())
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc_econnrefused()), "{err:?}");
        } else {
            println!("no IPv6 loopback: checked one address only");
        }
    });
    finish(&lp, &seen);
}

/// Attempts that failed differently are one error listing each address's
/// failure ("Multiple exceptions: ...", asyncio's aggregate `OSError`, which
/// has no errno). Here ::1 cannot bind the IPv4 `local_addr` while
/// 127.0.0.1 is refused.
#[test]
fn attempts_failing_differently_are_one_multiple_exceptions_error() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        if !ipv6_loopback() {
            println!("no IPv6 loopback: nothing to check");
            return;
        }
        let port = closed_port();
        let opts = ConnectOptions {
            local_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..ConnectOptions::default()
        };
        let err = l
            .create_connection(client(), None, port, opts)
            .await
            .map(|_| ())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("Multiple exceptions: "), "{text}");
        assert!(text.contains(&format!("[::1]:{port}")), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert_eq!(err.raw_os_error(), None);
    });
    finish(&lp, &seen);
}

fn libc_econnrefused() -> i32 {
    rustix::io::Errno::CONNREFUSED.raw_os_error()
}

// ---------------------------------------------------------------------------
// 7. all_errors

/// asyncio 3.12's `all_errors=True`: every attempt's error is raised (an
/// `ExceptionGroup`), even for one address. Here: a [`ConnectErrors`]
/// inside the `io::Error`, listing each attempt with its address and its
/// own error (errno kept).
#[test]
fn all_errors_returns_every_attempt() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let port = closed_port();
        let opts = || ConnectOptions {
            all_errors: true,
            ..ConnectOptions::default()
        };
        let err = l
            .create_connection(client(), Some("127.0.0.1"), port, opts())
            .await
            .map(|_| ())
            .unwrap_err();
        let all = ConnectErrors::from_io(&err).expect("a ConnectErrors inside");
        assert_eq!(all.attempts().len(), 1);
        let (addr, e) = &all.attempts()[0];
        assert_eq!(*addr, SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(e.raw_os_error(), Some(libc_econnrefused()));
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            err.to_string().contains("create_connection failed"),
            "{err}"
        );

        if ipv6_loopback() {
            let err = l
                .create_connection(client(), None, port, opts())
                .await
                .map(|_| ())
                .unwrap_err();
            let all = ConnectErrors::from_io(&err).unwrap();
            assert_eq!(all.attempts().len(), 2, "{err}");
            for (a, e) in all.attempts() {
                assert_eq!(a.port(), port);
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            }
        }
        // Without all_errors, no ConnectErrors.
        let err = l
            .create_connection(client(), Some("127.0.0.1"), port, Default::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(ConnectErrors::from_io(&err).is_none());
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 8. sock= for servers and Unix connections; cleanup_socket

#[test]
fn create_server_serves_on_a_given_listening_socket() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let acc = Accepted::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = ServerOptions {
            sock: Some(listener.into()),
            ..ServerOptions::default()
        };
        let server = l
            .create_server(acc.factory(Hooks::echo), &[], 0, opts)
            .await
            .unwrap();
        assert_eq!(port_of(&server), addr.port());
        let mut c = TcpStream::connect(addr).unwrap();
        acc.until_made(1).await;
        assert!(nodelay(&acc.get(0).transport()));
        std::io::Write::write_all(&mut c, b"echo").unwrap();
        acc.get(0).until_data(4).await;
        shut_down(&server).await;
        // host/port and sock together are refused, as asyncio.
        let opts = ServerOptions {
            sock: Some(TcpListener::bind("127.0.0.1:0").unwrap().into()),
            ..ServerOptions::default()
        };
        let err = l
            .create_server(acc.factory(Hooks::none), &["127.0.0.1"], 0, opts)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err
            .to_string()
            .contains("can not be specified at the same time"));
    });
    finish(&lp, &seen);
}

fn temp_socket_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aioloop-co-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    dir
}

#[test]
fn unix_server_and_connection_take_a_given_socket() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let path = temp_socket_path("sock");
        let listener = UnixListener::bind(&path).unwrap();
        let acc = Accepted::new();
        let opts = ServerOptions {
            sock: Some(listener.into()),
            ..ServerOptions::default()
        };
        let server = l
            .create_unix_server(acc.factory(Hooks::echo), std::path::Path::new(""), opts)
            .await
            .unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        let (t, _) = l
            .create_unix_connection_sock(client(), stream.into())
            .await
            .unwrap();
        acc.until_made(1).await;
        t.write(b"hi").unwrap();
        acc.get(0).until_data(2).await;
        t.abort();
        shut_down(&server).await;
        // cleanup_socket (default true) applies to a given socket too.
        assert!(!path.exists());

        // A TCP socket is not a Unix socket, for the server either.
        let opts = ServerOptions {
            sock: Some(TcpListener::bind("127.0.0.1:0").unwrap().into()),
            ..ServerOptions::default()
        };
        let err = l
            .create_unix_server(client_factory(), std::path::Path::new(""), opts)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string()
                .starts_with("A UNIX Domain Stream Socket was expected, got "),
            "{err}"
        );
        let tcp = TcpStream::connect(
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap(),
        )
        .unwrap();
        let err = l
            .create_unix_connection_sock(client(), tcp.into())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
    finish(&lp, &seen);
}

/// asyncio 3.13's `cleanup_socket=False`: the socket file stays after
/// `close()`; with the default it is removed.
#[test]
fn cleanup_socket_false_leaves_the_socket_file() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let path = temp_socket_path("keep");
        let opts = ServerOptions {
            cleanup_socket: false,
            ..ServerOptions::default()
        };
        let server = l
            .create_unix_server(client_factory(), &path, opts)
            .await
            .unwrap();
        server.close();
        server.wait_closed().await;
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();

        let server = l
            .create_unix_server(client_factory(), &path, ServerOptions::default())
            .await
            .unwrap();
        assert!(path.exists());
        server.close();
        assert!(!path.exists());
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 9. Ports as service names

/// The port may be a service name, looked up as `getaddrinfo` does
/// (asyncio passes `port` to `getaddrinfo`); an unknown name is a
/// [`ResolveError`]. Integer ports keep compiling.
#[test]
fn ports_may_be_service_names() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        // A name is resolved: "127.0.0.1":"discard" is port 9 (refused
        // there unless something listens on it: either way port 9, not a
        // resolver error). Only where /etc/services knows the name.
        if std::fs::read_to_string("/etc/services").is_ok_and(|s| s.contains("discard")) {
            let opts = ConnectOptions {
                all_errors: true,
                ..ConnectOptions::default()
            };
            match l
                .create_connection(client(), Some("127.0.0.1"), "discard", opts)
                .await
            {
                Ok((t, _)) => {
                    assert_eq!(t.peername().unwrap().as_inet().unwrap().port(), 9);
                    t.abort();
                }
                Err(err) => {
                    let all = ConnectErrors::from_io(&err).unwrap_or_else(|| panic!("{err:?}"));
                    assert_eq!(all.attempts()[0].0.port(), 9);
                }
            }
        } else {
            println!("no /etc/services entry for discard: checked numeric names only");
        }
        // A number written as text is a port.
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(Hooks::none),
                &["127.0.0.1"],
                "0",
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let port = port_of(&server);
        let (t, _) = l
            .create_connection(
                client(),
                Some("127.0.0.1"),
                port.to_string(),
                Default::default(),
            )
            .await
            .unwrap();
        let (_r, w) = l
            .open_connection("127.0.0.1", port.to_string())
            .await
            .unwrap();
        acc.until_made(2).await;
        t.abort();
        w.close();
        shut_down(&server).await;
        // An unknown name is a typed resolver error.
        for err in [
            l.create_connection(
                client(),
                Some("127.0.0.1"),
                "no-such-service-aioloop",
                Default::default(),
            )
            .await
            .map(|_| ())
            .unwrap_err(),
            l.create_server(
                client_factory(),
                &["127.0.0.1"],
                "no-such-service-aioloop",
                ServerOptions::default(),
            )
            .await
            .map(|_| ())
            .unwrap_err(),
        ] {
            let gai = ResolveError::from_io(&err).unwrap_or_else(|| panic!("{err:?}"));
            assert!(
                [ResolveError::SERVICE, ResolveError::NONAME].contains(&gai.code()),
                "{gai}"
            );
        }
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// 3 (TLS) and 10. TLS over TCP, server_hostname="", timeouts

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use crate::tls_util::Pki;
    use aioloop::rustls;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};

    /// A TLS server on 127.0.0.1 with `config` (connections recorded in
    /// `acc`), and a TLS client connected to it trusting `pki`.
    async fn tls_pair(
        l: &EventLoop,
        acc: &Rc<Accepted>,
        config: Arc<rustls::ServerConfig>,
        pki: &Pki,
    ) -> (Server, u16, Transport) {
        let server = l
            .create_server(
                acc.factory(Hooks::none),
                &["127.0.0.1"],
                0,
                crate::tls_util::serve_tls(TlsServerOptions::new(config)),
            )
            .await
            .unwrap();
        let port = port_of(&server);
        let (t, _) = l
            .create_connection(
                client(),
                Some("127.0.0.1"),
                port,
                crate::tls_util::connect_tls(crate::tls_util::client_opts(pki)),
            )
            .await
            .unwrap();
        (server, port, t)
    }

    /// TLS over TCP gets `TCP_NODELAY` too: the client (host/port and
    /// `sock=`), the server's accepted connections, and
    /// `connect_accepted_socket_tls`.
    #[test]
    fn tcp_nodelay_is_set_on_tls_over_tcp() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        run(&lp, async move {
            let acc = Accepted::new();
            let (server, port, t) = tls_pair(&l, &acc, pki.server_config(), &pki).await;
            assert!(nodelay(&t), "TLS create_connection(host, port)");
            acc.until_made(1).await;
            assert!(nodelay(&acc.get(0).transport()), "TLS accepted");

            let std = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let opts = ConnectOptions {
                sock: Some(std.into()),
                tls: Some(crate::tls_util::client_opts(&pki)),
                ..ConnectOptions::default()
            };
            let (t2, _) = l.create_connection(client(), None, 0, opts).await.unwrap();
            assert!(nodelay(&t2), "TLS create_connection(sock=)");

            // connect_accepted_socket_tls, with our own client on the other end.
            let (listener, addr) = std_listener("127.0.0.1:0");
            let client_sock = TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            let l2 = l.clone();
            let tls_client = crate::tls_util::client_opts(&pki);
            let client_task = l
                .create_task(async move {
                    let opts = ConnectOptions {
                        sock: Some(client_sock.into()),
                        tls: Some(tls_client),
                        ..ConnectOptions::default()
                    };
                    l2.create_connection(client(), None, 0, opts)
                        .await
                        .map(|(t, _)| t)
                        .map_err(|e| LoopError::new(ErrorKind::Io, e.to_string()))
                })
                .unwrap();
            let (t3, _) = l
                .connect_accepted_socket_tls(
                    client(),
                    accepted.into(),
                    TlsServerOptions::new(pki.server_config()),
                )
                .await
                .unwrap();
            assert!(nodelay(&t3), "connect_accepted_socket_tls");
            let t4 = client_task.await.unwrap().unwrap();
            for t in [t, t2, t3, t4] {
                t.abort();
            }
            shut_down(&server).await;
        });
        finish(&lp, &seen);
    }

    /// A server certificate resolver that records the SNI each client sent.
    #[derive(Debug)]
    struct RecordSni {
        key: Arc<rustls::sign::CertifiedKey>,
        seen: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl rustls::server::ResolvesServerCert for RecordSni {
        fn resolve(
            &self,
            hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            self.seen
                .lock()
                .unwrap()
                .push(hello.server_name().map(str::to_owned));
            Some(self.key.clone())
        }
    }

    /// asyncio's `server_hostname=''` sends no SNI (its docs: it "disables
    /// hostname matching"; Python's ssl module then requires the context to
    /// have `check_hostname` off). With rustls: no SNI
    /// (`ClientConfig::enable_sni` off on a copy of the configuration); the
    /// certificate is checked by the configuration's verifier against the
    /// host connected to (name matching is the verifier's, as
    /// `check_hostname` is the context's in Python).
    #[test]
    fn an_empty_server_hostname_sends_no_sni() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        let snis = Arc::new(Mutex::new(Vec::new()));
        let key = rustls::sign::CertifiedKey::from_der(
            vec![pki.server_der.clone(), pki.ca_der.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key.clone().into()),
            &crate::tls_util::provider(),
        )
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(crate::tls_util::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(RecordSni {
                key: Arc::new(key),
                seen: snis.clone(),
            }));
        let s = snis.clone();
        run(&lp, async move {
            let acc = Accepted::new();
            // With a name: SNI sent.
            let (server, port, t) = tls_pair(&l, &acc, Arc::new(config), &pki).await;
            // With "": none.
            let opts = TlsClientOptions::new(pki.client_config()).server_hostname("");
            let (t2, _) = l
                .create_connection(
                    client(),
                    Some("127.0.0.1"),
                    port,
                    crate::tls_util::connect_tls(opts),
                )
                .await
                .unwrap();
            acc.until_made(2).await;
            assert_eq!(
                *s.lock().unwrap(),
                vec![Some("localhost".to_string()), None]
            );
            t.abort();
            t2.abort();
            shut_down(&server).await;
        });
        finish(&lp, &seen);
    }

    /// asyncio refuses a timeout `<= 0` with `ValueError` when the call is
    /// made; here the options refuse it when they are built.
    #[test]
    fn zero_tls_timeouts_are_refused_when_the_options_are_built() {
        let pki = Pki::new(&["localhost"]);
        let client = TlsClientOptions::new(pki.client_config());
        let server = TlsServerOptions::new(pki.server_config());
        let errors = [
            client
                .clone()
                .handshake_timeout(Duration::ZERO)
                .unwrap_err(),
            client.clone().shutdown_timeout(Duration::ZERO).unwrap_err(),
            server
                .clone()
                .handshake_timeout(Duration::ZERO)
                .unwrap_err(),
            server.clone().shutdown_timeout(Duration::ZERO).unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("should be a positive number"), "{e}");
        }
        assert_eq!(
            client
                .handshake_timeout(Duration::from_millis(1))
                .unwrap()
                .handshake_timeout,
            Duration::from_millis(1)
        );
    }

    /// A server's zero timeout set directly in the public field is refused
    /// by `create_server` up front (not at the first connection).
    #[test]
    fn create_server_refuses_a_zero_tls_timeout_up_front() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let pki = Pki::new(&["localhost"]);
        run(&lp, async move {
            let mut tls = TlsServerOptions::new(pki.server_config());
            tls.shutdown_timeout = Duration::ZERO;
            let err = l
                .create_server(
                    client_factory(),
                    &["127.0.0.1"],
                    0,
                    crate::tls_util::serve_tls(tls),
                )
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        });
        finish(&lp, &seen);
    }
}
