//! TLS transports between aioloop peers and against scripted raw peers
//! (blocking std sockets, with rustls on a thread where a real TLS peer is
//! needed): 1 MiB echoed byte for byte, half-close, extra info, close
//! semantics, every handshake failure (timeout, unknown CA, wrong name,
//! plaintext peer, garbage, truncation, a peer that vanishes), cancellation,
//! and `start_tls` (pipelined ClientHello, flow-control hand-over).
//!
//! Nothing here sleeps to synchronise: the loop waits on protocol events,
//! the threads on their blocking sockets, and each test runs under a
//! watchdog.
#![cfg(feature = "tls")]

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::net_util::{Accepted, Ev, Hooks, Recorder, RecordingBuffered, RecordingProtocol};
use crate::tls_util::*;
use crate::util::{
    capture_warnings, finish, new_loop, on_loop, record_exceptions, run, warnings_on_this_thread,
};
use aioloop::prelude::*;
use aioloop::rustls;
use aioloop::{ExtraInfo, TlsConfig};

const MIB: usize = 1 << 20;

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_inet().unwrap().port()
}

/// A TLS echo server on 127.0.0.1 with `pki`'s certificate.
async fn echo_server(lp: &EventLoop, acc: &Rc<Accepted>, tls: TlsServerOptions) -> Server {
    lp.create_server(
        acc.factory(Hooks::echo_paced),
        &["127.0.0.1"],
        0,
        serve_tls(tls),
    )
    .await
    .unwrap()
}

/// Connects a [`RecordingProtocol`] client to 127.0.0.1:`port` with `opts`
/// (plain or TLS); returns its transport, handle and log.
async fn rec_client(
    lp: &EventLoop,
    port: u16,
    opts: ConnectOptions,
) -> (Transport, ProtocolHandle<RecordingProtocol>, Rc<Recorder>) {
    let log = Recorder::new();
    let lg = log.clone();
    let (t, h) = lp
        .create_connection(
            move || RecordingProtocol::new(&lg, Hooks::none()),
            Some("127.0.0.1"),
            port,
            opts,
        )
        .await
        .unwrap();
    (t, h, log)
}

/// [`rec_client`] over TLS to `server`, trusting `pki` with its defaults.
async fn rec_tls_client(
    lp: &EventLoop,
    server: &Server,
    pki: &Pki,
) -> (Transport, ProtocolHandle<RecordingProtocol>, Rc<Recorder>) {
    rec_client(lp, port_of(server), connect_tls(client_opts(pki))).await
}

/// The error of a [`RecordingProtocol`] client's `create_connection` that must fail.
async fn connect_err(
    lp: &EventLoop,
    host: Option<&str>,
    port: u16,
    opts: ConnectOptions,
) -> io::Error {
    lp.create_connection(
        || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
        host,
        port,
        opts,
    )
    .await
    .unwrap_err()
}

#[test]
fn one_mib_echoes_byte_exact_between_aioloop_client_and_server() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, TlsServerOptions::new(pki.server_config())).await;
        let (t, _h, log) = rec_tls_client(&l, &server, &pki).await;
        // create_connection returns after connection_made, as asyncio.
        assert_eq!(log.events(), vec![Ev::Made]);
        assert!(t.is_reading());
        let data = pattern(MIB);
        for chunk in data.chunks(48 * 1024 + 7) {
            t.write(chunk).unwrap();
        }
        log.until_data_or_lost(MIB).await;
        assert!(*log.data.borrow() == data, "the echo differs");
        t.close();
        assert!(t.is_closing());
        log.until_lost().await;
        assert_eq!(
            log.lost_outcome(),
            Some(None),
            "{:?}",
            log.lost_error.borrow()
        );
        assert_eq!(log.count(&Ev::Pause), log.count(&Ev::Resume));
        let srv = acc.get(0);
        srv.until_lost().await;
        // The client's close_notify is the server's EOF; it closed cleanly.
        assert!(srv.events().contains(&Ev::Eof));
        assert_eq!(srv.lost_outcome(), Some(None));
        assert_eq!(srv.count(&Ev::Made), 1);
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn buffered_protocol_and_writelines_over_tls_1_2() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let v12 = Some(&rustls::version::TLS12);
        let acc = Accepted::new();
        let server = echo_server(
            &l,
            &acc,
            TlsServerOptions::new(pki.server_config_with(&[], v12)),
        )
        .await;
        let log = Recorder::new();
        let lg = log.clone();
        let tls =
            TlsClientOptions::new(pki.client_config_with(&[], v12)).server_hostname("localhost");
        let (t, _h) = l
            .create_connection(
                // A buffer smaller than a record: several reads each.
                move || Buffered(RecordingBuffered::new(&lg, Hooks::none(), 1000)),
                Some("127.0.0.1"),
                port_of(&server),
                connect_tls(tls),
            )
            .await
            .unwrap();
        assert_eq!(t.tls_version().as_deref(), Some("TLSv1.2"));
        // TLS 1.2 has no half-close.
        assert!(!t.can_write_eof());
        assert_eq!(t.write_eof().unwrap_err().kind(), ErrorKind::InvalidState);
        let data = pattern(200_000);
        let (a, b) = data.split_at(70_001);
        t.writelines(&[a, b]).unwrap();
        log.until_data_or_lost(data.len()).await;
        assert!(*log.data.borrow() == data);
        t.close();
        log.until_lost().await;
        assert_eq!(log.lost_outcome(), Some(None));
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn tls13_write_eof_sends_close_notify_and_keeps_reading() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, TlsServerOptions::new(pki.server_config())).await;
        let (t, _h, log) = rec_tls_client(&l, &server, &pki).await;
        assert!(t.can_write_eof());
        let data = pattern(300_000);
        t.write(&data).unwrap();
        t.write_eof().unwrap();
        assert_eq!(t.write(b"x").unwrap_err().kind(), ErrorKind::InvalidState);
        // The server sees our close_notify as EOF after all the data, closes
        // after flushing its echo; we read all of it, then its EOF.
        log.until_lost().await;
        assert!(*log.data.borrow() == data);
        let ev = log.events();
        let eof_at = ev.iter().position(|e| *e == Ev::Eof).expect("eof_received");
        assert!(ev[..eof_at].iter().all(|e| !matches!(e, Ev::Lost(_))));
        assert_eq!(log.lost_outcome(), Some(None));
        let srv = acc.get(0);
        srv.until_lost().await;
        assert!(srv.events().contains(&Ev::Eof));
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn extra_info_reports_certificate_cipher_version_alpn_and_config() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        let acc = Accepted::new();
        let server_config = pki.server_config_with(&[b"h2", b"echo/1"], None);
        let server = echo_server(&l, &acc, TlsServerOptions::new(server_config.clone())).await;
        let client_config = pki.client_config_with(&[b"echo/1"], None);
        // No server_hostname: the host (an IP address) is the name.
        let (t, _h, log) = rec_client(
            &l,
            port_of(&server),
            connect_tls(TlsClientOptions::new(client_config.clone())),
        )
        .await;
        assert_eq!(
            t.peer_certificate().unwrap(),
            pki.server_der.as_ref().to_vec()
        );
        assert_eq!(
            t.get_extra_info("peercert"),
            Some(ExtraInfo::Bytes(pki.server_der.as_ref().to_vec()))
        );
        let chain = t.peer_certificates().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], pki.ca_der.as_ref().to_vec());
        let cipher = t.cipher().unwrap();
        assert_eq!(cipher.protocol, "TLSv1.3");
        assert!(cipher.name.starts_with("TLS13_"), "{cipher}");
        assert!(cipher.secret_bits == 128 || cipher.secret_bits == 256);
        assert_eq!(t.tls_version().as_deref(), Some("TLSv1.3"));
        assert_eq!(
            t.get_extra_info("protocol"),
            Some(ExtraInfo::Text("TLSv1.3".into()))
        );
        assert_eq!(t.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
        assert_eq!(
            t.tls_config(),
            Some(TlsConfig::Client(client_config.clone()))
        );
        assert_eq!(
            t.get_extra_info("server_hostname"),
            None,
            "no explicit server_hostname"
        );
        assert!(t.peername().is_some() && t.sockname().is_some() && t.fd().is_some());

        // The server's side: no client certificate, the same suite.
        acc.notify.until(|| acc.len() == 1).await;
        let srv = acc.get(0);
        srv.until(|l| l.count(&Ev::Made) == 1).await;
        let st = srv.transport();
        assert_eq!(st.peer_certificate(), None);
        assert_eq!(st.cipher(), Some(cipher));
        assert_eq!(st.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
        assert_eq!(st.tls_config(), Some(TlsConfig::Server(server_config)));

        // A plain transport has none of these.
        let plain = l
            .create_server(
                Accepted::new().factory(Hooks::echo_paced),
                &["127.0.0.1"],
                0,
                Default::default(),
            )
            .await
            .unwrap();
        let (pt, _h, plog) = rec_client(&l, port_of(&plain), Default::default()).await;
        assert_eq!(pt.cipher(), None);
        assert_eq!(pt.peer_certificate(), None);
        assert_eq!(pt.tls_config(), None);
        pt.close();
        plog.until_lost().await;
        plain.close();

        t.close();
        log.until_lost().await;
        server.close();
        server.wait_closed().await;
    });
}

/// A listener whose connections complete in the kernel and then hear
/// nothing (the backlog accepts them; nobody calls accept).
fn silent_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn handshake_timeout_fails_create_connection_with_timed_out() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = silent_listener();
        let sock: OwnedFd = TcpStream::connect(listener.local_addr().unwrap())
            .unwrap()
            .into();
        let raw = sock.as_raw_fd();
        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let err = connect_err(
            &l,
            None,
            0,
            ConnectOptions {
                sock: Some(sock),
                tls: Some(client_opts(&pki).handshake_timeout(timeout).unwrap()),
                ..ConnectOptions::default()
            },
        )
        .await;
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            err.to_string().contains("SSL handshake is taking longer"),
            "{err}"
        );
        assert!(start.elapsed() >= timeout);
        // Nothing is left registered for the socket, and it is closed: the
        // server side reads EOF.
        assert!(matches!(l.remove_reader(raw), Ok(false)));
        assert!(matches!(l.remove_writer(raw), Ok(false)));
        let (mut peer, _) = listener.accept().unwrap();
        let mut hello = Vec::new();
        peer.read_to_end(&mut hello).unwrap();
        assert!(hello.first() == Some(&0x16), "a ClientHello was sent first");
    });
}

#[test]
fn unknown_ca_fails_the_client_and_is_reported_by_a_debug_server() {
    let lp = new_loop();
    lp.set_debug(true);
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let s = seen.clone();
    run(&lp, async move {
        let pki = Pki::new(&["localhost"]);
        let other = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, TlsServerOptions::new(pki.server_config())).await;
        let err = connect_err(
            &l,
            Some("127.0.0.1"),
            port_of(&server),
            connect_tls(client_opts(&other)),
        )
        .await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{err:?}"
        );
        // The server heard the client's alert: the connection is gone, its
        // protocol was never called, and debug mode reported it.
        server.close();
        server.wait_closed().await;
        assert_eq!(server.active_connections(), 0);
        assert_eq!(acc.len(), 1);
        assert!(acc.get(0).events().is_empty());
        let reports = s.borrow();
        assert_eq!(reports.len(), 1, "{reports:#?}");
        assert_eq!(reports[0].message, "SSL handshake failed");
        assert!(
            reports[0].error.as_deref().unwrap_or("").contains("alert"),
            "{reports:#?}"
        );
    });
    seen.borrow_mut().clear();
    finish(&lp, &seen);
}

#[test]
fn wrong_hostname_fails_the_client() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, TlsServerOptions::new(pki.server_config())).await;
        let err = connect_err(
            &l,
            Some("127.0.0.1"),
            port_of(&server),
            connect_tls(client_opts(&pki).server_hostname("example.org")),
        )
        .await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_not_valid_for_name(&err);
        // Without a host there is no name to check: an error up front.
        let err = connect_err(
            &l,
            None,
            0,
            ConnectOptions {
                sock: Some(
                    TcpStream::connect(server.sockets()[0].as_inet().unwrap())
                        .unwrap()
                        .into(),
                ),
                tls: Some(TlsClientOptions::new(pki.client_config())),
                ..ConnectOptions::default()
            },
        )
        .await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("server_hostname"), "{err}");
        server.close();
        server.abort_clients();
        server.wait_closed().await;
    });
    finish_allowing_handshake_reports(&lp, &seen);
}

#[test]
fn a_plaintext_echo_peer_fails_the_handshake() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        // A plain TCP echo server: our ClientHello comes back at us.
        let plain = l
            .create_server(
                acc.factory(Hooks::echo_paced),
                &["127.0.0.1"],
                0,
                Default::default(),
            )
            .await
            .unwrap();
        let err = connect_err(
            &l,
            Some("127.0.0.1"),
            port_of(&plain),
            connect_tls(client_opts(&pki)),
        )
        .await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(rustls_error(&err).is_some(), "{err:?}");
        // The socket was closed: the echo server's connection ends.
        let srv = acc.get(0);
        srv.until_lost().await;
        plain.close();
        plain.wait_closed().await;
    });
}

#[test]
fn garbage_from_the_peer_fails_closes_and_leaves_nothing_registered() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            // The client must close: read to EOF (or a reset).
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        });
        let sock: OwnedFd = TcpStream::connect(addr).unwrap().into();
        let raw = sock.as_raw_fd();
        let err = connect_err(
            &l,
            None,
            0,
            ConnectOptions {
                sock: Some(sock),
                tls: Some(client_opts(&pki)),
                ..ConnectOptions::default()
            },
        )
        .await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(rustls_error(&err).is_some(), "{err:?}");
        assert!(matches!(l.remove_reader(raw), Ok(false)));
        assert!(matches!(l.remove_writer(raw), Ok(false)));
        peer.join().unwrap();
    });
}

/// A blocking rustls server on a thread: accepts one connection, completes
/// the handshake, then runs `then` on the connection and the socket.
pub(crate) fn rustls_server_thread<T: Send + 'static>(
    config: std::sync::Arc<rustls::ServerConfig>,
    then: impl FnOnce(rustls::ServerConnection, TcpStream) -> T + Send + 'static,
) -> (u16, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        then(conn, sock)
    });
    (port, h)
}

/// asyncio's `SSLProtocol.eof_received` during the handshake: a
/// `ConnectionResetError` (the peer read our ClientHello, then sent FIN).
#[test]
fn peer_fin_during_the_handshake_is_a_connection_reset() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = silent_listener();
        let port = listener.local_addr().unwrap().port();
        let peer = thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut hello = [0u8; 5];
            sock.read_exact(&mut hello).unwrap();
            sock.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        let err = connect_err(&l, Some("127.0.0.1"), port, connect_tls(client_opts(&pki))).await;
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        peer.join().unwrap();
    });
}

/// asyncio's `_check_shutdown_timeout`: `close()` sent close_notify, the
/// peer never answers nor closes; when `shutdown_timeout` expires the
/// transport is closed and `connection_lost` gets a timeout error.
#[test]
fn a_shutdown_that_times_out_after_close_notify_gives_connection_lost_a_timeout() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (release, hold) = mpsc::channel::<()>();
        let (port, peer) = rustls_server_thread(pki.server_config(), move |_conn, sock| {
            // Hold the connection open, reading nothing, until released.
            let _ = hold.recv();
            drop(sock);
        });
        let opts = client_opts(&pki)
            .shutdown_timeout(Duration::from_millis(200))
            .unwrap();
        let (t, _h, log) = rec_client(&l, port, connect_tls(opts)).await;
        t.close();
        log.until_lost().await;
        assert_eq!(log.lost_outcome(), Some(Some(io::ErrorKind::TimedOut)));
        release.send(()).unwrap();
        peer.join().unwrap();
    });
}

/// asyncio's `ValueError` for `ssl_handshake_timeout` / `ssl_shutdown_timeout`
/// of 0: refused before anything is connected.
#[test]
fn zero_tls_timeouts_are_refused() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = silent_listener();
        let port = listener.local_addr().unwrap().port();
        for (opts, name) in [
            (
                TlsClientOptions {
                    handshake_timeout: Duration::ZERO,
                    ..client_opts(&pki)
                },
                "ssl_handshake_timeout",
            ),
            (
                TlsClientOptions {
                    shutdown_timeout: Duration::ZERO,
                    ..client_opts(&pki)
                },
                "ssl_shutdown_timeout",
            ),
        ] {
            let err = connect_err(&l, Some("127.0.0.1"), port, connect_tls(opts)).await;
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert_eq!(
                err.to_string(),
                format!("{name} should be a positive number, got 0")
            );
        }
        // Nothing connected.
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err());
    });
}

/// asyncio's SSLProtocol: `eof_received()` returning true has no effect
/// over TLS; it logs "returning true from eof_received() has no effect
/// when using ssl" and the transport closes.
#[test]
fn eof_received_returning_true_over_tls_warns_and_closes() {
    capture_warnings();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (port, peer) = rustls_server_thread(pki.server_config(), |mut conn, mut sock| {
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            // Wait for the client's close_notify and FIN.
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        // Set before the connection exists: the close_notify may be read
        // as soon as connection_made ran.
        let log = Recorder::new();
        let lg = log.clone();
        let (_t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::keep_open()),
                Some("127.0.0.1"),
                port,
                connect_tls(client_opts(&pki)),
            )
            .await
            .unwrap();
        log.until_lost().await;
        assert!(log.events().contains(&Ev::Eof));
        assert_eq!(log.lost_outcome(), Some(None));
        let warned = warnings_on_this_thread();
        assert_eq!(
            warned
                .iter()
                .filter(|m| *m == "returning true from eof_received() has no effect when using ssl")
                .count(),
            1,
            "{warned:?}"
        );
        peer.join().unwrap();
    });
}

#[test]
fn a_truncated_record_then_eof_is_an_error_not_a_hang() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (port, peer) = rustls_server_thread(pki.server_config(), |mut conn, mut sock| {
            conn.writer().write_all(&[7u8; 1000]).unwrap();
            let mut record = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut record).unwrap();
            }
            // Half a record, then the TCP connection ends (no close_notify).
            sock.write_all(&record[..record.len() / 2]).unwrap();
            sock.shutdown(std::net::Shutdown::Write).unwrap();
            let mut sink = Vec::new();
            let _ = sock.read_to_end(&mut sink);
        });
        let (_t, _h, log) = rec_client(&l, port, connect_tls(client_opts(&pki))).await;
        log.until_lost().await;
        assert_eq!(log.lost_outcome(), Some(Some(io::ErrorKind::UnexpectedEof)));
        assert!(
            log.data.borrow().is_empty(),
            "half a record decrypts to nothing"
        );
        assert!(
            !log.events().contains(&Ev::Eof),
            "a truncation is not an EOF"
        );
        peer.join().unwrap();
    });
}

#[test]
fn a_client_that_vanishes_mid_handshake_leaves_no_connection_behind() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = echo_server(
            &l,
            &acc,
            TlsServerOptions::new(pki.server_config())
                .handshake_timeout(Duration::from_millis(300))
                .unwrap(),
        )
        .await;
        let addr = server.sockets()[0].as_inet().unwrap();
        // Half a ClientHello, then gone.
        let mut client =
            rustls::ClientConnection::new(pki.client_config(), "localhost".try_into().unwrap())
                .unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&hello[..hello.len() / 2]).unwrap();
        drop(s);
        // One that connects and never speaks: the handshake timeout ends it.
        let silent = TcpStream::connect(addr).unwrap();
        acc.notify.until(|| acc.len() == 2).await;
        server.close();
        // wait_closed resolves once both connections are gone.
        server.wait_closed().await;
        assert_eq!(server.active_connections(), 0);
        assert!(acc.get(0).events().is_empty() && acc.get(1).events().is_empty());
        drop(silent);
    });
    finish_allowing_handshake_reports(&lp, &seen);
}

#[test]
fn a_cancelled_create_connection_closes_its_socket() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = silent_listener();
        let sock: OwnedFd = TcpStream::connect(listener.local_addr().unwrap())
            .unwrap()
            .into();
        let raw = sock.as_raw_fd();
        let connect = l.create_connection(
            || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
            None,
            0,
            ConnectOptions {
                sock: Some(sock),
                tls: Some(client_opts(&pki)),
                ..ConnectOptions::default()
            },
        );
        let gave_up = futures_lite::future::or(async { connect.await.map(|_| ()) }, async {
            l.sleep(Duration::from_millis(50)).await.unwrap();
            Err(io::Error::from(io::ErrorKind::TimedOut))
        })
        .await;
        assert_eq!(gave_up.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(matches!(l.remove_reader(raw), Ok(false)));
        let (mut peer, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap(); // EOF: the socket was closed
    });
}

#[test]
fn close_stops_delivery_at_once_and_still_ends_cleanly() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = l
            .create_server(
                acc.factory(Hooks::none),
                &["127.0.0.1"],
                0,
                serve_tls(TlsServerOptions::new(pki.server_config())),
            )
            .await
            .unwrap();
        let (t, _h, log) = rec_tls_client(&l, &server, &pki).await;
        acc.notify.until(|| acc.len() == 1).await;
        let srv = acc.get(0);
        srv.until(|l| l.count(&Ev::Made) == 1).await;
        // The server streams 4 MiB; we close after the first bytes.
        srv.transport().write(&pattern(4 * MIB)).unwrap();
        log.until_data_or_lost(1).await;
        t.close();
        assert!(!t.is_reading());
        let got = log.data.borrow().len();
        log.until_lost().await;
        assert_eq!(log.data.borrow().len(), got, "data_received after close()");
        assert_eq!(log.lost_outcome(), Some(None));
        // The server got our close_notify, flushed, and closed cleanly.
        srv.until_lost().await;
        assert_eq!(srv.lost_outcome(), Some(None));
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn unix_socket_tls_echo_and_accepted_socket_tls() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let path = pki.dir.join("tls.sock");
        let acc = Accepted::new();
        let server = l
            .create_unix_server(
                acc.factory(Hooks::echo_paced),
                &path,
                serve_tls(TlsServerOptions::new(pki.server_config())),
            )
            .await
            .unwrap();
        let log = Recorder::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_unix_connection_tls(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                &path,
                client_opts(&pki),
            )
            .await
            .unwrap();
        t.write(b"over a unix socket").unwrap();
        log.until_data_or_lost(18).await;
        assert_eq!(&*log.data.borrow(), b"over a unix socket");
        t.close();
        log.until_lost().await;
        server.close();
        server.wait_closed().await;

        // connect_accepted_socket with TLS, over a socketpair.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let srv_log = Recorder::new();
        let sl = srv_log.clone();
        let server_side = {
            let l = l.clone();
            let tls = TlsServerOptions::new(pki.server_config());
            l.connect_accepted_socket_tls(
                move || RecordingProtocol::new(&sl, Hooks::echo_paced()),
                OwnedFd::from(a),
                tls,
            )
        };
        let client_side = l.connect_accepted_socket(
            || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
            OwnedFd::from(b),
        );
        // b as a *plain* transport would not speak TLS; use it through
        // start_tls instead.
        let (plain, _h) = client_side.await.unwrap();
        let cl = Recorder::new();
        let upgrade = l.start_tls(
            &plain,
            ProtocolHandle::new(RecordingProtocol::new(&cl, Hooks::none())),
            client_opts(&pki),
        );
        let (server_done, client_done) = futures_lite::future::zip(server_side, upgrade).await;
        let (st, _sh) = server_done.unwrap();
        let ct = client_done.unwrap();
        cl.adopt(&ct);
        ct.write(b"pair").unwrap();
        cl.until_data_or_lost(4).await;
        assert_eq!(&*cl.data.borrow(), b"pair");
        ct.close();
        cl.until_lost().await;
        srv_log.until_lost().await;
        assert!(st.is_closing());
    });
}

// --- start_tls ---------------------------------------------------------------

#[test]
fn start_tls_takes_a_client_hello_pipelined_behind_the_starttls_reply() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client_config = pki.client_config();
        // The peer asks for TLS and is its client: it answers our STARTTLS
        // with "OK\r\n" and its ClientHello in ONE write (one packet).
        let peer = thread::spawn(move || -> io::Result<Vec<u8>> {
            let (mut sock, _) = listener.accept()?;
            let mut line = [0u8; 10];
            sock.read_exact(&mut line)?;
            assert_eq!(&line, b"STARTTLS\r\n");
            let mut conn =
                rustls::ClientConnection::new(client_config, "localhost".try_into().unwrap())
                    .unwrap();
            let mut packet = b"OK\r\n".to_vec();
            conn.write_tls(&mut packet)?;
            sock.write_all(&packet)?;
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(b"ping over tls")?;
            let mut echo = [0u8; 13];
            tls.read_exact(&mut echo)?;
            tls.conn.send_close_notify();
            tls.flush()?;
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest)?; // until the server's close_notify
            Ok(echo.to_vec())
        });
        let (plain, _h, old) = rec_client(&l, port, Default::default()).await;
        plain.write(b"STARTTLS\r\n").unwrap();
        old.until(|l| l.data.borrow().windows(2).any(|w| w == b"\r\n"))
            .await;
        let received = old.data.borrow().clone();
        assert_eq!(&received[..4], b"OK\r\n");
        let pipelined = received[4..].to_vec();
        let new = Recorder::new();
        let tls = l
            .start_tls_with_data(
                &plain,
                ProtocolHandle::new(RecordingProtocol::new(&new, Hooks::echo_paced())),
                TlsServerOptions::new(pki.server_config()),
                pipelined,
            )
            .await
            .unwrap();
        // No connection_made for start_tls (asyncio's rule), and no data
        // before the caller had the transport.
        assert!(new.events().is_empty());
        new.adopt(&tls);
        new.until_lost().await;
        assert_eq!(&*new.data.borrow(), b"ping over tls");
        assert_eq!(new.lost_outcome(), Some(None));
        assert_eq!(peer.join().unwrap().unwrap(), b"ping over tls");
        // The old transport handed over everything and says nothing more.
        assert!(plain.is_closing());
        assert_eq!(plain.fd(), None);
        plain.write(b"dropped").unwrap();
        assert_eq!(plain.writes_after_lost(), 1);
        assert!(
            !old.is_lost(),
            "the old protocol's connection went on as TLS"
        );
    });
}

#[test]
fn start_tls_as_client_reads_server_bytes_already_in_the_socket() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server_config = pki.server_config();
        let peer = thread::spawn(move || -> io::Result<()> {
            let (mut sock, _) = listener.accept()?;
            sock.write_all(b"220 ready\r\n")?;
            let mut line = [0u8; 10];
            sock.read_exact(&mut line)?;
            sock.write_all(b"OK\r\n")?;
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // Data right behind the handshake, before the client asks.
            tls.write_all(b"greetings")?;
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest)?;
            assert_eq!(rest, b"bye");
            tls.conn.send_close_notify();
            tls.flush()?;
            Ok(())
        });
        let (plain, _h, old) = rec_client(&l, port, Default::default()).await;
        old.until_data_or_lost(11).await;
        plain.write(b"STARTTLS\r\n").unwrap();
        old.until_data_or_lost(15).await;
        assert_eq!(&*old.data.borrow(), b"220 ready\r\nOK\r\n");
        let new = Recorder::new();
        let tls = l
            .start_tls(
                &plain,
                ProtocolHandle::new(RecordingProtocol::new(&new, Hooks::none())),
                client_opts(&pki),
            )
            .await
            .unwrap();
        new.adopt(&tls);
        new.until_data_or_lost(9).await;
        assert_eq!(&*new.data.borrow(), b"greetings");
        tls.write(b"bye").unwrap();
        tls.write_eof().unwrap();
        new.until_lost().await;
        assert_eq!(new.lost_outcome(), Some(None));
        peer.join().unwrap().unwrap();
        // A TLS transport cannot be upgraded again.
        let err = l
            .start_tls(
                &tls,
                ProtocolHandle::new(RecordingProtocol::new(&Recorder::new(), Hooks::none())),
                client_opts(&pki),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn start_tls_while_writing_is_paused_hands_over_paired_flow_control() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        // Small socket buffers on both ends, so that the write stays
        // mostly in the transport's buffer.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
        let addr = listener.local_addr().unwrap();
        let server_config = pki.server_config();
        const PLAIN: usize = 2 * MIB;
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let peer = thread::spawn(move || -> io::Result<()> {
            let (mut sock, _) = listener.accept()?;
            go_rx.recv().unwrap(); // start_tls is under way
            let mut plain = vec![0u8; PLAIN];
            sock.read_exact(&mut plain)?;
            assert!(plain == pattern(PLAIN), "plain bytes before the upgrade");
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut msg = [0u8; 5];
            tls.read_exact(&mut msg)?;
            tls.write_all(&msg)?;
            tls.conn.send_close_notify();
            tls.flush()?;
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
            Ok(())
        });
        // One protocol, before and after the upgrade (the usual case).
        let log = Recorder::new();
        let proto = ProtocolHandle::new(RecordingProtocol::new(&log, Hooks::none()));
        let p = proto.clone();
        let sock = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&sock, 4096).unwrap();
        rustix::net::connect(&sock, &addr).unwrap();
        let (plain, _h) = l
            .create_connection(
                move || p,
                None,
                0,
                ConnectOptions {
                    sock: Some(sock),
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap();
        plain.set_write_buffer_limits(Some(4096), None).unwrap();
        plain.write(&pattern(PLAIN)).unwrap();
        assert_eq!(
            log.events(),
            vec![Ev::Made, Ev::Pause],
            "paused by the write"
        );
        let mut upgrade = Box::pin(l.start_tls(&plain, proto.clone(), client_opts(&pki)));
        assert!(futures_lite::future::poll_once(&mut upgrade)
            .await
            .is_none());
        assert!(!plain.is_reading(), "reading stops at once");
        go_tx.send(()).unwrap();
        let tls = upgrade.await.unwrap();
        // The old transport resumed the protocol before handing over.
        assert_eq!(log.events(), vec![Ev::Made, Ev::Pause, Ev::Resume]);
        assert_eq!(tls.get_write_buffer_limits(), (1024, 4096));
        *log.transport.borrow_mut() = Some(tls.clone());
        tls.write(b"hello").unwrap();
        log.until_lost().await;
        assert_eq!(&log.data.borrow()[..], b"hello");
        assert_eq!(
            log.count(&Ev::Pause),
            log.count(&Ev::Resume),
            "{:?}",
            log.events()
        );
        peer.join().unwrap().unwrap();
    });
}

/// Pauses reading inside every `data_received` and resumes from a
/// callback of the next iteration: the undelivered rest of each read waits
/// in the transport, in order.
fn stutter(lp: &EventLoop) -> Hooks {
    let lp = lp.clone();
    Hooks::none().on_data(move |t, _, _| {
        t.pause_reading();
        assert!(!t.is_reading());
        let t = t.clone();
        lp.call_soon(move || t.resume_reading()).unwrap();
    })
}

#[test]
fn pausing_inside_data_received_keeps_every_byte_in_order() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = echo_server(&l, &acc, TlsServerOptions::new(pki.server_config())).await;
        let log = Recorder::new();
        let (lg, lp2) = (log.clone(), l.clone());
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, stutter(&lp2)),
                Some("127.0.0.1"),
                port_of(&server),
                connect_tls(client_opts(&pki)),
            )
            .await
            .unwrap();
        let data = pattern(MIB);
        t.write(&data).unwrap();
        log.until_data_or_lost(MIB).await;
        assert!(*log.data.borrow() == data, "bytes lost or reordered");
        // Each delivery is at most one decrypted record.
        assert!(log.events().len() > MIB / (16 * 1024));
        t.close();
        log.until_lost().await;
        assert_eq!(log.lost_outcome(), Some(None));
        server.close();
        server.wait_closed().await;
    });
    finish(&lp, &seen);
}

/// A server protocol that answers the first bytes and then closes (or
/// aborts) from inside `data_received`.
fn answer_then_end(abort: bool) -> Hooks {
    Hooks::none().on_data(move |t, _, _| {
        t.write(b"bye").unwrap();
        if abort {
            t.abort();
        } else {
            t.close();
        }
        // Everything after is ignored, never an error or a panic.
        t.write(b"late").unwrap();
        t.close();
        t.abort();
        assert!(t.is_closing());
    })
}

#[test]
fn close_and_abort_from_inside_data_received_end_the_connection_once() {
    for abort in [false, true] {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        run(&lp, async move {
            let pki = Pki::new(&["localhost"]);
            let srv = Recorder::new();
            let s = srv.clone();
            let server = l
                .create_server(
                    move || RecordingProtocol::new(&s, answer_then_end(abort)),
                    &["127.0.0.1"],
                    0,
                    serve_tls(TlsServerOptions::new(pki.server_config())),
                )
                .await
                .unwrap();
            let (t, _h, log) = rec_tls_client(&l, &server, &pki).await;
            t.write(b"hello").unwrap();
            log.until_lost().await;
            srv.until_lost().await;
            assert_eq!(srv.count(&Ev::Made), 1);
            assert_eq!(
                srv.events()
                    .iter()
                    .filter(|e| matches!(e, Ev::Lost(_)))
                    .count(),
                1
            );
            assert_eq!(srv.lost_outcome(), Some(None));
            if abort {
                // No close_notify: the client sees a truncation.
                assert!(log.data.borrow().is_empty() || &*log.data.borrow() == b"bye");
                assert!(matches!(log.lost_outcome(), Some(Some(_))));
            } else {
                assert_eq!(&*log.data.borrow(), b"bye");
                assert!(log.events().contains(&Ev::Eof));
                assert_eq!(log.lost_outcome(), Some(None));
            }
            server.close();
            server.wait_closed().await;
        });
        finish(&lp, &seen);
    }
}

// ---------------------------------------------------------------------------
// LESSONS 2 (docs/LESSONS.md): every path that grows a buffer pauses

/// One TLS entry point that grows the write buffer (`write` or
/// `writelines`): with a peer that does not read yet, `pause_writing` comes
/// right after the call that put the buffer above the high-water mark, and
/// `resume_writing` once the peer reads and the buffer is at or below the
/// low-water mark; every byte arrives, in order.
fn tls_write_path_pauses_above_high_and_resumes_at_low(grow: fn(&Transport, &[u8])) {
    const N: usize = 4 * MIB;
    const HIGH: usize = 64 * 1024;
    const LOW: usize = 16 * 1024;
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
        let addr = listener.local_addr().unwrap();
        let server_config = pki.server_config();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        // The peer completes the handshake, then reads nothing until told.
        let peer = thread::spawn(move || -> io::Result<Vec<u8>> {
            let (sock, _) = listener.accept()?;
            sock.set_read_timeout(Some(crate::util::LIMIT))?;
            sock.set_write_timeout(Some(crate::util::LIMIT))?;
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            go_rx.recv().unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got)?;
            Ok(got)
        });
        let sock = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&sock, 4096).unwrap();
        rustix::net::connect(&sock, &addr).unwrap();
        let log = Recorder::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                None,
                0,
                ConnectOptions {
                    sock: Some(sock),
                    tls: Some(client_opts(&pki)),
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap();
        t.set_write_buffer_limits(Some(HIGH), Some(LOW)).unwrap();
        assert_eq!(log.events(), vec![Ev::Made]);
        let data = pattern(N);
        grow(&t, &data);
        assert!(t.get_write_buffer_size() > HIGH, "the peer reads nothing");
        assert_eq!(
            log.events(),
            vec![Ev::Made, Ev::Pause],
            "pause_writing right after the call that crossed the high-water mark"
        );
        go_tx.send(()).unwrap();
        log.until(|l| l.count(&Ev::Resume) > 0).await;
        assert!(
            t.get_write_buffer_size() <= LOW,
            "resumed with {} bytes buffered",
            t.get_write_buffer_size()
        );
        assert_eq!(log.count(&Ev::Pause), 1);
        assert_eq!(log.count(&Ev::Resume), 1);
        t.close();
        log.until_lost().await;
        assert_eq!(
            log.lost_outcome(),
            Some(None),
            "{:?}",
            log.lost_error.borrow()
        );
        let got = peer.join().unwrap().unwrap();
        assert!(got == data, "TLS plaintext lost or reordered");
    });
}

#[test]
fn tls_write_pauses_above_high_and_resumes_at_low() {
    tls_write_path_pauses_above_high_and_resumes_at_low(|t, data| t.write(data).unwrap());
}

#[test]
fn tls_writelines_pauses_above_high_and_resumes_at_low() {
    tls_write_path_pauses_above_high_and_resumes_at_low(|t, data| {
        let chunks: Vec<&[u8]> = data.chunks(100_003).collect();
        t.writelines(&chunks).unwrap();
    });
}
