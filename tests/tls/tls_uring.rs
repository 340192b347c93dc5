//! The TLS transport on io_uring's completion path (issue 14): every test
//! builds its loop with `Backend::Uring` itself (`util::on_uring_loop`), so
//! it runs the path in every CI configuration, and skips where the kernel
//! refuses io_uring. Each test also checks that the path is the one used: a
//! TLS transport on readiness registers its socket for reading
//! (`has_reader`), one on the completion path does not. Real TLS peers
//! (rustls on blocking sockets in threads, or aioloop's own TLS server):
//! - an echo of many messages of many sizes;
//! - 8 MiB each way between an aioloop client that reads slowly and an
//!   aioloop server that echoes with flow control: `pause_writing` on both
//!   sides, `pause_reading`/`resume_reading` on both, every byte in order;
//! - `close` with megabytes buffered: all of them reach the peer, then our
//!   `close_notify`; `abort` with a send in flight: the peer sees the end
//!   at once, not the rest;
//! - a handshake that fails on the certificate's name: the error goes to
//!   the waiter, no protocol callback runs, and nothing ever waited on
//!   readiness;
//! - `start_tls` on a plain transport of the completion path whose stash
//!   already holds the peer's ClientHello;
//! - `pause_reading` while records keep coming: nothing delivered while
//!   paused, everything after `resume_reading`, in order; `close` while
//!   paused with records kept still ends cleanly;
//! - server handshakes failing in one delivery of several: each client gets
//!   its alert before the end.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::net_util::{
    bounded, iterations, nothing_while_paused, read_to_end_or_reset, small_send_buffer,
    write_until_in_flight, Accepted, Ev, Hooks, Recorder, RecordingProtocol,
};
use crate::tls::rustls_server_thread;
use crate::tls_util::*;
use crate::util::{on_uring_loop, LIMIT};
use aioloop::prelude::*;
use aioloop::rustls;

const MIB: usize = 1 << 20;

/// Asserts that `t` reads by completion: it is reading, and its socket is
/// not registered for readiness.
fn assert_on_completion_path(lp: &EventLoop, t: &Transport) {
    let fd = t.fd().expect("a socket");
    assert!(t.is_reading(), "the transport is not reading");
    assert!(
        !lp.has_reader(fd),
        "the TLS transport reads through readiness, not by completion"
    );
}

/// Waits, off the loop, for a peer thread to end; its result.
async fn joined<T: Send + 'static>(lp: &EventLoop, h: thread::JoinHandle<T>) -> T {
    match lp.run_in_executor(move || h.join()).unwrap().await.unwrap() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Waits, off the loop, for one value from a peer thread (bounded).
async fn received<T: Send + 'static>(lp: &EventLoop, rx: mpsc::Receiver<T>) -> T {
    lp.run_in_executor(move || rx.recv_timeout(LIMIT).expect("the peer thread went quiet"))
        .unwrap()
        .await
        .unwrap()
}

/// A TLS server on 127.0.0.1 with `config` whose connections use `hooks`.
async fn tls_server(
    lp: &EventLoop,
    acc: &Rc<Accepted>,
    config: std::sync::Arc<rustls::ServerConfig>,
    hooks: fn() -> Hooks,
) -> Server {
    lp.create_server(
        acc.factory(hooks),
        &["127.0.0.1"],
        0,
        serve_tls(TlsServerOptions::new(config)),
    )
    .await
    .unwrap()
}

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_inet().unwrap().port()
}

/// A recording TLS client to 127.0.0.1:`port` with `hooks`.
async fn tls_client(
    lp: &EventLoop,
    port: u16,
    pki: &Pki,
    hooks: Hooks,
) -> (Transport, Rc<Recorder>) {
    let rec = Recorder::new();
    let r = rec.clone();
    let (t, _h) = lp
        .create_connection(
            move || RecordingProtocol::new(&r, hooks),
            Some("127.0.0.1"),
            port,
            connect_tls(client_opts(pki)),
        )
        .await
        .unwrap();
    rec.until_made().await;
    (t, rec)
}

#[test]
fn an_echo_of_many_messages_runs_on_the_completion_path() {
    const MESSAGES: usize = 2000;
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = tls_server(&l, &acc, pki.server_config(), Hooks::echo).await;
        let port = port_of(&server);
        let config = pki.client_config();
        let client = thread::spawn(move || {
            let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            bounded(&sock);
            let conn =
                rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            for i in 0..MESSAGES {
                let msg = pattern(1 + (i * 7919) % 9000);
                tls.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                tls.read_exact(&mut back).unwrap();
                assert!(back == msg, "message {i} came back different");
            }
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).unwrap();
            rest
        });
        acc.until_made(1).await;
        let rec = acc.get(0);
        assert_on_completion_path(&l, &rec.transport());
        let rest = joined(&l, client).await;
        assert!(rest.is_empty());
        rec.until_lost().await;
        assert_eq!(rec.lost_outcome(), Some(None));
        rec.assert_clean_life();
        server.close();
        server.wait_closed().await;
    });
}

/// A client that reads slowly: it pauses reading at every delivery and
/// resumes a millisecond later.
fn slow_reader(lp: &EventLoop) -> Hooks {
    let lp = lp.clone();
    Hooks::none().on_data(move |t, _, _| {
        t.pause_reading();
        let t = t.clone();
        lp.call_later(Duration::from_millis(1), move || t.resume_reading())
            .unwrap();
    })
}

#[test]
fn eight_mib_each_way_with_a_slow_reader_pauses_and_resumes_both_sides() {
    const TOTAL: usize = 8 * MIB;
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        let server = tls_server(&l, &acc, pki.server_config(), Hooks::echo_paced).await;
        let (t, rec) = tls_client(&l, port_of(&server), &pki, slow_reader(&l)).await;
        acc.until_made(1).await;
        let srec = acc.get(0);
        assert_on_completion_path(&l, &t);
        assert_on_completion_path(&l, &srec.transport());
        let data = pattern(TOTAL);
        for c in data.chunks(256 << 10) {
            t.write(c).unwrap();
        }
        // The kernel cannot take 8 MiB at once: the rest is counted.
        assert!(rec.count(&Ev::Pause) >= 1, "pause_writing never came");
        rec.until_data(TOTAL).await;
        assert!(rec.bytes() == data, "the echo differs");
        for r in [&rec, &srec] {
            let pauses = r.count(&Ev::Pause);
            assert!(pauses >= 1, "pause_writing never came");
            assert_eq!(r.count(&Ev::Resume), pauses, "every pause resumed");
            let (low, high) = r.transport().get_write_buffer_limits();
            assert!(r.pause_sizes.borrow().iter().all(|&n| n > high));
            assert!(r.resume_sizes.borrow().iter().all(|&n| n <= low));
        }
        t.close();
        rec.until_lost().await;
        srec.until_lost().await;
        assert_eq!(rec.lost_outcome(), Some(None));
        assert_eq!(srec.lost_outcome(), Some(None));
        server.close();
        server.wait_closed().await;
    });
}

/// An aioloop client to a rustls server thread that, once the handshake is
/// done, waits for a word from the test, then runs `then`.
async fn client_to_waiting_peer<T: Send + 'static>(
    l: &EventLoop,
    pki: &Pki,
    then: impl FnOnce(rustls::ServerConnection, TcpStream) -> T + Send + 'static,
) -> (
    Transport,
    Rc<Recorder>,
    mpsc::Sender<()>,
    thread::JoinHandle<T>,
) {
    let (go_tx, go) = mpsc::channel::<()>();
    let (port, peer) = rustls_server_thread(pki.server_config(), move |conn, sock| {
        bounded(&sock);
        go.recv_timeout(LIMIT).expect("the test gave no word");
        then(conn, sock)
    });
    let (t, rec) = tls_client(l, port, pki, Hooks::none()).await;
    assert_on_completion_path(l, &t);
    small_send_buffer(&t);
    (t, rec, go_tx, peer)
}

#[test]
fn close_with_megabytes_buffered_delivers_them_all_then_close_notify() {
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (t, rec, go, peer) = client_to_waiting_peer(&l, &pki, |conn, sock| {
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut got = Vec::new();
            // Ok only after our close_notify (a bare EOF is an error).
            tls.read_to_end(&mut got).unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            got
        })
        .await;
        let data = pattern(4 * MIB);
        write_until_in_flight(&t, &data).await;
        t.close();
        assert!(t.is_closing());
        go.send(()).unwrap();
        rec.until_lost().await;
        let got = joined(&l, peer).await;
        assert!(got == data, "not every byte arrived");
        assert_eq!(rec.lost_outcome(), Some(None));
        rec.assert_clean_life();
    });
}

#[test]
fn abort_with_a_send_in_flight_ends_the_connection_at_once() {
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (t, rec, go, peer) = client_to_waiting_peer(&l, &pki, |_conn, mut sock| {
            // The ciphertext as it comes, until the end (EOF or reset).
            let started = Instant::now();
            let (got, err) = read_to_end_or_reset(&mut sock);
            (got.len(), err, started.elapsed())
        })
        .await;
        let data = pattern(4 * MIB);
        write_until_in_flight(&t, &data).await;
        t.abort();
        rec.until_lost().await;
        assert_eq!(rec.lost_outcome(), Some(None));
        assert_eq!(t.get_write_buffer_size(), 0);
        go.send(()).unwrap();
        let (got, err, took) = joined(&l, peer).await;
        assert!(
            matches!(err, None | Some(std::io::ErrorKind::ConnectionReset)),
            "the peer's read ended with {err:?} after {took:?}"
        );
        assert!(got < data.len(), "everything went out after abort");
        rec.assert_clean_life();
    });
}

#[test]
fn a_handshake_failing_on_the_name_reaches_the_waiter_and_no_protocol() {
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = pki.server_config();
        let (hello_tx, hello) = mpsc::channel::<()>();
        let (go_tx, go) = mpsc::channel::<()>();
        // The peer reads the ClientHello, lets the test look at the loop
        // mid-handshake, then answers with a certificate for "localhost".
        let peer = thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            bounded(&sock);
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            while conn.is_handshaking() && !conn.wants_write() {
                conn.read_tls(&mut sock).unwrap();
                conn.process_new_packets().unwrap();
            }
            hello_tx.send(()).unwrap();
            go.recv_timeout(LIMIT).unwrap();
            // The client rejects the certificate: an alert, then the end.
            let _ = conn.complete_io(&mut sock);
            let (_, _) = read_to_end_or_reset(&mut sock);
        });
        let rec = Recorder::new();
        let r = rec.clone();
        let l2 = l.clone();
        let connect = l
            .create_task(async move {
                let made = l2
                    .create_connection(
                        move || RecordingProtocol::new(&r, Hooks::none()),
                        Some("127.0.0.1"),
                        port,
                        connect_tls(client_opts(&pki).server_hostname("example.org")),
                    )
                    .await;
                Ok::<_, LoopError>(made.map(drop))
            })
            .unwrap();
        received(&l, hello).await;
        // Mid-handshake: on readiness the client's socket would be watched.
        assert!(
            (0..4096).all(|fd| !l.has_reader(fd)),
            "the handshake waits on readiness"
        );
        go_tx.send(()).unwrap();
        let err = connect.await.unwrap().unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert_not_valid_for_name(&err);
        assert!(rec.events().is_empty(), "a protocol callback ran");
        joined(&l, peer).await;
    });
}

#[test]
fn start_tls_on_the_completion_path_takes_the_stashed_client_hello() {
    // One ring buffer's worth of plain bytes, then the ClientHello: the
    // kernel posts them as two receives at once.
    const PREAMBLE: usize = 64 * 1024;
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut conn =
            rustls::ClientConnection::new(pki.client_config(), "localhost".try_into().unwrap())
                .unwrap();
        let mut first = pattern(PREAMBLE);
        conn.write_tls(&mut first).unwrap();
        // In the socket before the transport exists (no race).
        theirs.write_all(&first).unwrap();
        let peer = thread::spawn(move || {
            theirs.set_read_timeout(Some(LIMIT)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, theirs);
            tls.write_all(b"ping over tls").unwrap();
            let mut echo = [0u8; 13];
            tls.read_exact(&mut echo).unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).unwrap();
            echo
        });
        let old = Recorder::new();
        let o = old.clone();
        // The plain protocol pauses once it has the preamble: the
        // ClientHello behind it races the cancellation into the stash.
        let hooks = Hooks::none().on_data(|t, rec, _| {
            if rec.data_len() >= PREAMBLE {
                t.pause_reading();
            }
        });
        let (plain, _h) = l
            .connect_accepted_socket(
                move || RecordingProtocol::new(&o, hooks),
                OwnedFd::from(ours),
            )
            .await
            .unwrap();
        old.until_data(PREAMBLE).await;
        assert!(
            !l.has_reader(plain.fd().unwrap()),
            "the plain transport is on readiness"
        );
        assert_eq!(
            old.data_len(),
            PREAMBLE,
            "the ClientHello reached the plain protocol"
        );
        let new = Recorder::new();
        let tls = l
            .start_tls_with_data(
                &plain,
                ProtocolHandle::new(RecordingProtocol::new(&new, Hooks::echo())),
                TlsServerOptions::new(pki.server_config()),
                Vec::new(),
            )
            .await
            .unwrap();
        new.adopt(&tls);
        new.until_data(13).await;
        assert_on_completion_path(&l, &tls);
        new.until_lost().await;
        assert_eq!(&new.bytes(), b"ping over tls");
        assert_eq!(new.lost_outcome(), Some(None));
        assert_eq!(&joined(&l, peer).await, b"ping over tls");
    });
}

#[test]
fn pause_reading_while_records_keep_coming_delivers_nothing_until_resumed() {
    const TOTAL: usize = 4 * MIB;
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let data = pattern(TOTAL);
        let expect = data.clone();
        let (wrote_tx, wrote) = mpsc::channel::<usize>();
        let (port, peer) = rustls_server_thread(pki.server_config(), move |conn, sock| {
            bounded(&sock);
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // Small records, so that many arrive after the pause.
            let mut n = 0;
            for c in data.chunks(4096) {
                tls.write_all(c).unwrap();
                n += c.len();
                let _ = wrote_tx.send(n);
            }
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
        });
        let paused_at = Rc::new(std::cell::Cell::new(None::<usize>));
        let p = paused_at.clone();
        let hooks = Hooks::none().on_data(move |t, rec, _| {
            if p.get().is_none() {
                t.pause_reading();
                p.set(Some(rec.data_len()));
            }
        });
        let (t, rec) = tls_client(&l, port, &pki, hooks).await;
        assert_on_completion_path(&l, &t);
        rec.until_data(1).await;
        let at_pause = paused_at.get().expect("paused in the first data_received");
        assert!(!t.is_reading());
        // Let the peer write 256 KiB more while the loop turns (bounded).
        nothing_while_paused(&rec, at_pause, &wrote, 256 << 10).await;
        t.resume_reading();
        rec.until_data(TOTAL).await;
        assert!(rec.bytes() == expect, "bytes lost or reordered");
        rec.until_lost().await;
        assert_eq!(rec.lost_outcome(), Some(None));
        joined(&l, peer).await;
    });
}

/// Records that raced a paused receive are kept; `close` while paused
/// must still feed them to rustls before the peer's `close_notify`, or
/// rustls sees a gap in the stream (a decrypt error instead of a clean
/// end).
#[test]
fn close_while_paused_with_records_kept_still_ends_cleanly() {
    on_uring_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let (port, peer) = rustls_server_thread(pki.server_config(), move |conn, sock| {
            bounded(&sock);
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // Many records at once: the kernel posts several receives
            // before the client's pause takes effect.
            tls.write_all(&pattern(MIB)).unwrap();
            let mut rest = Vec::new();
            // Ok only after the client's close_notify.
            tls.read_to_end(&mut rest).unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            rest.len()
        });
        let hooks = Hooks::none().on_data(|t, _, _| t.pause_reading());
        let (t, rec) = tls_client(&l, port, &pki, hooks).await;
        assert_on_completion_path(&l, &t);
        rec.until_data(1).await;
        assert!(!t.is_reading());
        iterations(20).await;
        t.close();
        rec.until_lost().await;
        assert_eq!(
            rec.lost_outcome(),
            Some(None),
            "{:?}",
            rec.lost_error.borrow()
        );
        assert_eq!(joined(&l, peer).await, 0);
    });
}

/// A server's handshake that fails while the loop delivers the receives of
/// several connections at once: its alert is written inside the delivery,
/// where small writes wait for the next submission; the connection is
/// closed right after, so the alert must go out at once (as on readiness),
/// not be cancelled with the stream. Each client sees the alert, then the
/// end.
#[test]
fn a_failed_server_handshake_sends_its_alert_before_closing() {
    let Some(lp) = crate::util::uring_loop() else {
        return;
    };
    let seen = crate::util::record_exceptions(&lp);
    let l = lp.clone();
    crate::util::run(&lp, async move {
        let pki = Pki::new(&["localhost"]);
        let acc = Accepted::new();
        // TLS 1.3 only, against clients that offer TLS 1.2 only.
        let only13 = pki.server_config_with(&[], Some(&rustls::version::TLS13));
        let server = tls_server(&l, &acc, only13, Hooks::none).await;
        let port = port_of(&server);
        let config = pki.client_config_with(&[], Some(&rustls::version::TLS12));
        let mut hello = Vec::new();
        rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        let mut clients: Vec<TcpStream> = (0..4)
            .map(|_| {
                let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                bounded(&s);
                s
            })
            .collect();
        // Accepted and receiving (the server reads during the handshake).
        let start = Instant::now();
        while acc.len() < clients.len() {
            assert!(start.elapsed() < LIMIT, "the server accepted too few");
            iterations(1).await;
        }
        iterations(5).await;
        // Every hello is in the kernel before the loop polls again: one
        // poll delivers them all.
        for s in &mut clients {
            s.write_all(&hello).unwrap();
        }
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut s| thread::spawn(move || read_to_end_or_reset(&mut s)))
            .collect();
        for r in readers {
            let (got, err) = joined(&l, r).await;
            // A TLS record of type alert (21), level fatal (2).
            assert!(
                got.len() >= 7 && got[0] == 21 && got[5] == 2,
                "no alert before the end ({} bytes, {err:?})",
                got.len()
            );
        }
        assert!(
            acc.all().iter().all(|r| r.events().is_empty()),
            "a protocol callback ran"
        );
        server.close();
        server.wait_closed().await;
    });
    lp.close().unwrap();
    finish_allowing_handshake_reports(&lp, &seen);
}
