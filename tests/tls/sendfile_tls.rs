//! `loop.sendfile(transport, file, offset, count, fallback=)` over TLS
//! transports, where zero-copy cannot encrypt and asyncio's read-and-write
//! path serves (`_sendfile_fallback`):
//! - multi-MiB ranges (offset and count) byte-exact in both directions
//!   between aioloop peers (TLS 1.3 and 1.2), to Python's `ssl` (a sink
//!   server, tests/python/tls_peer.py) and to `openssl s_client`; the file
//!   position left at `offset + sent`; writes during the call refused;
//!   flow-control notices held and paired;
//! - `fallback=false`: `SendfileNotAvailableError`, nothing sent, the
//!   transport untouched and usable; a second call at once and a call after
//!   `write_eof` refused;
//! - a peer that stops reading: the call waits with the transport's buffer
//!   bounded (low-water mark + one block), and completes once it reads;
//! - `close()`, `abort()` and the peer's abort during the call end it with
//!   an error, no hang; a dropped call restores the transport;
//!   `set_protocol` during the call hands the flow-control state over.
//!
//! Nothing sleeps to synchronise: the stalled-peer test watches the call
//! for a while to see that it does not finish, and every test runs under a
//! watchdog.
#![cfg(feature = "tls")]

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use crate::net_util::{Accepted, Ev, Hooks, Recorder, RecordingProtocol};
use crate::tls_util::*;
use crate::util::{finish, new_loop, on_loop, record_exceptions, run, Notify};
use aioloop::prelude::*;
use aioloop::rustls;
use aioloop::{SendfileFallback, SendfileNotAvailableError};
use futures_lite::future::poll_once;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The fallback's block (sendfile/transport.rs), plus the record overhead
/// of encrypting it (at most 16 records of 16 KiB, < 32 bytes each).
const BLOCK_CIPHERTEXT: usize = 256 * KIB + 16 * 32;

/// A file removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    /// A file holding `data`, opened for reading.
    fn with(tag: &str, data: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("aioloop-tls-sendfile-{}-{tag}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        TempFile { path, file }
    }

    /// The file's position.
    fn pos(&self) -> u64 {
        (&self.file).stream_position().unwrap()
    }

    fn seek(&self, to: u64) {
        (&self.file).seek(SeekFrom::Start(to)).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An owned duplicate of a transport's socket (taken with `pidfd_getfd`,
/// so that no test needs `unsafe`).
fn dup_fd(fd: RawFd) -> OwnedFd {
    use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd_open(self)");
    pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()).expect("pidfd_getfd(self)")
}

/// Sets the kernel send buffer of the transport's socket (so that the
/// transport has to buffer: loopback may autotune it to MiBs).
fn send_buffer(t: &Transport, size: usize) {
    let fd = dup_fd(t.fd().expect("the transport has a socket"));
    rustix::net::sockopt::set_socket_send_buffer_size(&fd, size).unwrap();
}

/// Sets the kernel receive buffer of the transport's socket.
fn recv_buffer(t: &Transport, size: usize) {
    let fd = dup_fd(t.fd().expect("the transport has a socket"));
    rustix::net::sockopt::set_socket_recv_buffer_size(&fd, size).unwrap();
}

/// The `LoopError` kind inside an io::Error, if any.
fn loop_kind(e: &std::io::Error) -> Option<ErrorKind> {
    e.get_ref()?.downcast_ref::<LoopError>().map(|l| l.kind())
}

/// Every `pause_writing` is followed by one `resume_writing` before the
/// next, and the protocol ends resumed.
fn assert_notices_paired(log: &Recorder, who: &str) {
    let mut paused = false;
    for e in log.events() {
        match e {
            Ev::Pause => {
                assert!(!paused, "{who}: pause_writing twice: {:?}", log.events());
                paused = true;
            }
            Ev::Resume => {
                assert!(paused, "{who}: unpaired resume_writing: {:?}", log.events());
                paused = false;
            }
            _ => {}
        }
    }
    assert!(!paused, "{who}: left paused: {:?}", log.events());
}

/// A TLS connection between an aioloop client and an aioloop server, both
/// with recording protocols.
struct Pair {
    server: Server,
    client: Transport,
    clog: Rc<Recorder>,
    /// The server side's transport, and its log.
    served: Transport,
    slog: Rc<Recorder>,
}

impl Pair {
    async fn connect(
        lp: &EventLoop,
        pki: &Pki,
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> Pair {
        let acc = Accepted::new();
        let tls = TlsServerOptions::new(pki.server_config_with(&[], version));
        let server = lp
            .create_server(acc.factory(Hooks::none), &["127.0.0.1"], 0, serve_tls(tls))
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let clog = Recorder::new();
        let lg = clog.clone();
        let opts = TlsClientOptions::new(pki.client_config_with(&[], version))
            .server_hostname("localhost");
        let (client, _h) = lp
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                Some("127.0.0.1"),
                port,
                connect_tls(opts),
            )
            .await
            .unwrap();
        acc.until_count(1).await;
        let slog = acc.get(0);
        slog.until(|l| l.events().contains(&Ev::Made)).await;
        let served = slog.transport();
        Pair {
            server,
            client,
            clog,
            served,
            slog,
        }
    }

    /// Makes the client's sends block early: the server stops reading, and
    /// small kernel buffers on both ends (loopback may autotune them to
    /// MiBs) hold a few hundred KiB at most. [`Pair::unthrottle`] lets the
    /// server read again.
    fn throttle(&self) {
        self.served.pause_reading();
        send_buffer(&self.client, 128 * KIB);
        recv_buffer(&self.served, 128 * KIB);
    }

    fn unthrottle(&self) {
        self.served.resume_reading();
    }

    /// Closes the client, waits until both sides are lost and the server
    /// has closed.
    async fn close(&self) {
        self.client.close();
        self.clog.until_lost().await;
        self.slog.until_lost().await;
        self.server.close();
        self.server.wait_closed().await;
    }
}

/// Polls `call` until it completes or `d` has passed on the loop's clock
/// (`None` then), noting the transport's largest write buffer in `max`
/// after every poll.
async fn drive_for<F: Future>(
    lp: &EventLoop,
    mut call: Pin<&mut F>,
    t: &Transport,
    max: &mut usize,
    d: Duration,
) -> Option<F::Output> {
    let mut timer = pin!(lp.sleep(d));
    std::future::poll_fn(|cx| {
        let p = call.as_mut().poll(cx);
        *max = (*max).max(t.get_write_buffer_size());
        if let Poll::Ready(v) = p {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

// ---------------------------------------------------------------------------
// Byte-exact

/// Client to server with an offset and a count (TLS 1.3 with the default
/// fallback, TLS 1.2 with it forced), bytes written before and after going
/// around the file; then server to client from an offset to the end.
#[test]
fn a_file_range_goes_byte_exact_between_aioloop_tls_peers() {
    let data = pattern(6 * MIB + 11);
    let tmp = Rc::new(TempFile::with("range", &data));
    let tmp2 = tmp.clone();
    let data2 = data.clone();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        for (version, fallback) in [
            (&rustls::version::TLS13, SendfileFallback::Allowed),
            (&rustls::version::TLS12, SendfileFallback::Forced),
        ] {
            let pair = Pair::connect(&l, &pki, Some(version)).await;
            let (offset, count) = (100_003u64, 4 * MIB as u64 + 5);
            tmp2.seek(17);
            pair.client.write(b"<").unwrap();
            let mut call =
                pin!(l.sendfile(&pair.client, &tmp2.file, offset, Some(count), fallback));
            // More than loopback takes at once while the server, on this
            // loop, cannot read.
            assert!(poll_once(&mut call).await.is_none());
            let e = pair.client.write(b"x").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
            assert!(e.to_string().contains("sendfile is in progress"), "{e}");
            assert!(!pair.client.is_reading(), "reading is paused meanwhile");
            pair.unthrottle();
            assert_eq!(call.await.unwrap(), count, "{version:?}");
            assert_eq!(tmp2.pos(), offset + count, "asyncio's file position");
            assert!(pair.client.is_reading());
            pair.client.write(b">").unwrap();

            // And back, from the server's transport, to the end of the file.
            let back = l
                .sendfile(&pair.served, &tmp2.file, 7, None, true)
                .await
                .expect("the server's sendfile");
            assert_eq!(back, data2.len() as u64 - 7);
            pair.clog.until_data_or_lost(data2.len() - 7).await;

            let mut want = b"<".to_vec();
            want.extend_from_slice(&data2[offset as usize..(offset + count) as usize]);
            want.push(b'>');
            pair.slog.until_data_or_lost(want.len()).await;
            assert!(
                *pair.slog.data.borrow() == want,
                "{version:?}: the server got {} bytes, not the range",
                pair.slog.data.borrow().len()
            );
            assert!(
                *pair.clog.data.borrow() == data2[7..],
                "{version:?}: the client got {} bytes, not the file's tail",
                pair.clog.data.borrow().len()
            );
            let (clog, slog) = (pair.clog.clone(), pair.slog.clone());
            pair.close().await;
            assert_eq!(
                clog.lost_outcome(),
                Some(None),
                "{:?}",
                clog.lost_error.borrow()
            );
            assert_notices_paired(&clog, "client");
            assert_notices_paired(&slog, "server");
        }
    });
}

/// An aioloop client sends a range to Python's asyncio `ssl` server, which
/// writes what it receives to a file.
#[test]
fn a_file_range_goes_byte_exact_to_a_python_ssl_server() {
    let test = "a_file_range_goes_byte_exact_to_a_python_ssl_server";
    if !have("python3", "--version", test) {
        return;
    }
    let pki = Pki::new(&["localhost"]);
    let out = pki.dir.join("received.bin");
    let mut child = Command::new("python3")
        .arg(tls_peer_script())
        .args([
            "sink",
            &pki.path("server.pem"),
            &pki.path("server.key"),
            &out.to_string_lossy(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning python3");
    let port = first_line_matching(&mut child, "tls_peer.py sink", |line| {
        line.strip_prefix("port ").and_then(|p| p.parse().ok())
    });
    let reaper = Reaper(Some(child));

    let data = pattern(5 * MIB + 3);
    let tmp = Rc::new(TempFile::with("python", &data));
    let (offset, count) = (65_537u64, 3 * MIB as u64 + 1);
    let tmp2 = tmp.clone();
    let opts = client_opts(&pki);
    on_loop(|l| async move {
        let log = Recorder::new();
        let lg = log.clone();
        let (t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&lg, Hooks::none()),
                Some("127.0.0.1"),
                port,
                connect_tls(opts),
            )
            .await
            .expect("TLS connection to Python");
        t.write(b"head").unwrap();
        let sent = l
            .sendfile(&t, &tmp2.file, offset, Some(count), true)
            .await
            .unwrap();
        assert_eq!(sent, count);
        assert_eq!(tmp2.pos(), offset + count);
        t.write(b"tail").unwrap();
        t.close();
        log.until_lost().await;
        assert_eq!(
            log.lost_outcome(),
            Some(None),
            "{:?}",
            log.lost_error.borrow()
        );
        assert_notices_paired(&log, "client");
    });
    let (status, text) = wait_bounded(reaper.take(), "tls_peer.py sink");
    assert!(status.success(), "tls_peer.py sink failed: {text}");
    let mut got = Vec::new();
    File::open(&out).unwrap().read_to_end(&mut got).unwrap();
    let mut want = b"head".to_vec();
    want.extend_from_slice(&data[offset as usize..(offset + count) as usize]);
    want.extend_from_slice(b"tail");
    assert_eq!(got.len(), want.len(), "Python received {} bytes", got.len());
    assert!(got == want, "Python received other bytes");
}

/// An aioloop TLS server sends a file to `openssl s_client`, whose stdout
/// is the received plaintext.
#[test]
fn an_aioloop_tls_server_sends_a_file_to_openssl_s_client() {
    let test = "an_aioloop_tls_server_sends_a_file_to_openssl_s_client";
    if !have("openssl", "version", test) {
        return;
    }
    let pki = Pki::new(&["localhost"]);
    let data = pattern(4 * MIB + 2_000);
    let tmp = Rc::new(TempFile::with("openssl", &data));
    let (offset, count) = (1_000u64, 4 * MIB as u64);
    let tmp2 = tmp.clone();
    let ca = pki.path("ca.pem");
    let tls = TlsServerOptions::new(pki.server_config());
    let got = on_loop(|l| async move {
        let acc = Accepted::new();
        let server = l
            .create_server(acc.factory(Hooks::none), &["127.0.0.1"], 0, serve_tls(tls))
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let driver = l
            .run_in_executor(move || -> Result<Vec<u8>, String> {
                let mut child = Command::new("openssl")
                    .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                    .args(["-CAfile", &ca, "-servername", "localhost"])
                    .args(["-verify_return_error", "-quiet", "-ign_eof"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("spawning openssl s_client: {e}"))?;
                let mut stdout = child.stdout.take().unwrap();
                let mut got = Vec::new();
                let read = stdout.read_to_end(&mut got);
                let (status, out) = wait_bounded(child, "openssl s_client");
                read.map_err(|e| format!("reading s_client's output: {e}; it said: {out}"))?;
                if !status.success() {
                    return Err(format!("s_client exited with {status}: {out}"));
                }
                Ok(got)
            })
            .unwrap();
        acc.until_count(1).await;
        let log = acc.get(0);
        log.until(|l| l.events().contains(&Ev::Made)).await;
        let t = log.transport();
        let sent = l
            .sendfile(&t, &tmp2.file, offset, Some(count), true)
            .await
            .unwrap();
        assert_eq!(sent, count);
        assert_eq!(tmp2.pos(), offset + count);
        t.close();
        let got = driver.await.unwrap().unwrap();
        log.until_lost().await;
        assert_notices_paired(&log, "server");
        server.close();
        server.wait_closed().await;
        got
    });
    let want = &data[offset as usize..(offset + count) as usize];
    assert_eq!(
        got.len(),
        want.len(),
        "s_client received {} bytes",
        got.len()
    );
    assert!(got == want, "s_client received other bytes");
}

// ---------------------------------------------------------------------------
// Refusals

/// `fallback=false` on TLS: a `SendfileNotAvailableError` (asyncio raises a
/// RuntimeError), nothing sent, the file position and the transport as they
/// were; `Forced` copies as `Allowed` does.
#[test]
fn fallback_disabled_is_not_available_and_the_tls_transport_stays_usable() {
    let data = pattern(300 * KIB + 1);
    let tmp = Rc::new(TempFile::with("disabled", &data));
    let tmp2 = tmp.clone();
    let data2 = data.clone();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let pair = Pair::connect(&l, &pki, None).await;
        tmp2.seek(3);
        for fallback in [SendfileFallback::Disabled, SendfileFallback::from(false)] {
            let e = l
                .sendfile(&pair.client, &tmp2.file, 0, None, fallback)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
            let na = SendfileNotAvailableError::from_io(&e).expect("SendfileNotAvailableError");
            assert!(na.to_string().contains("fallback is disabled"), "{na}");
            assert_eq!(tmp2.pos(), 3, "the file position is untouched");
            assert!(pair.client.is_reading(), "reading is as it was");
            assert_eq!(pair.client.get_write_buffer_size(), 0);
        }
        // Still usable both ways.
        pair.client.write(b"ping").unwrap();
        pair.slog.until_data_or_lost(4).await;
        assert_eq!(*pair.slog.data.borrow(), b"ping");
        pair.served.write(b"pong").unwrap();
        pair.clog.until_data_or_lost(4).await;
        assert_eq!(*pair.clog.data.borrow(), b"pong");
        // Forced: the copy, as for every TLS transport.
        let sent = l
            .sendfile(&pair.client, &tmp2.file, 10, None, SendfileFallback::Forced)
            .await
            .unwrap();
        assert_eq!(sent, data2.len() as u64 - 10);
        assert_eq!(tmp2.pos(), data2.len() as u64);
        let mut want = b"ping".to_vec();
        want.extend_from_slice(&data2[10..]);
        pair.slog.until_data_or_lost(want.len()).await;
        assert!(*pair.slog.data.borrow() == want);
        let (clog, slog) = (pair.clog.clone(), pair.slog.clone());
        pair.close().await;
        assert_eq!(clog.lost_outcome(), Some(None));
        assert!(clog.count(&Ev::Pause) == 0 && slog.count(&Ev::Pause) == 0);
    });
}

/// One sendfile at a time per TLS transport; none after `write_eof` (our
/// `close_notify` is out: nothing may follow), refused before anything is
/// read.
#[test]
fn a_second_tls_sendfile_and_one_after_write_eof_are_refused() {
    let data = pattern(4 * MIB);
    let tmp = Rc::new(TempFile::with("second", &data));
    let tmp2 = tmp.clone();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let pair = Pair::connect(&l, &pki, Some(&rustls::version::TLS13)).await;
        pair.throttle();
        let mut first = pin!(l.sendfile(&pair.client, &tmp2.file, 0, None, true));
        assert!(poll_once(&mut first).await.is_none());
        let e = l
            .sendfile(&pair.client, &tmp2.file, 0, None, true)
            .await
            .unwrap_err();
        assert_eq!(loop_kind(&e), Some(ErrorKind::InvalidState), "{e}");
        assert!(e.to_string().contains("already in progress"), "{e}");
        pair.unthrottle();
        assert_eq!(first.await.unwrap(), data.len() as u64);
        pair.slog.until_data_or_lost(data.len()).await;
        assert!(*pair.slog.data.borrow() == data);

        pair.client.write_eof().unwrap();
        tmp2.seek(5);
        let e = l
            .sendfile(&pair.client, &tmp2.file, 0, None, true)
            .await
            .unwrap_err();
        assert_eq!(loop_kind(&e), Some(ErrorKind::InvalidState), "{e}");
        assert!(e.to_string().contains("write_eof"), "{e}");
        assert_eq!(tmp2.pos(), 5);
        pair.slog.until(|l| l.events().contains(&Ev::Eof)).await;
        assert_eq!(pair.slog.data.borrow().len(), data.len());
        pair.close().await;
    });
}

// ---------------------------------------------------------------------------
// Flow control, closing, dropping

/// The server stops reading: the call waits, the client's write buffer
/// never above its low-water mark plus one encrypted block, no notice
/// reaches the protocol meanwhile; once the server reads again the file
/// arrives whole.
#[test]
fn a_tls_peer_that_stops_reading_holds_the_buffer_bounded() {
    let data = pattern(16 * MIB + 5);
    let tmp = Rc::new(TempFile::with("stalled", &data));
    let tmp2 = tmp.clone();
    let data2 = data.clone();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let pair = Pair::connect(&l, &pki, None).await;
        pair.throttle();
        let t = &pair.client;
        let (low, _high) = t.get_write_buffer_limits();
        let bound = low + BLOCK_CIPHERTEXT;
        let mut call = pin!(l.sendfile(t, &tmp2.file, 0, None, true));
        let mut max = 0;
        // Until the copy waits for the buffer to drain...
        while t.get_write_buffer_size() <= low {
            let r = drive_for(&l, call.as_mut(), t, &mut max, Duration::from_millis(10)).await;
            assert!(r.is_none(), "16 MiB went to a peer that does not read");
        }
        // ... and keeps waiting.
        let r = drive_for(&l, call.as_mut(), t, &mut max, Duration::from_millis(200)).await;
        assert!(r.is_none(), "16 MiB went to a peer that does not read");
        assert!(
            max <= bound,
            "the write buffer reached {max} bytes (bound {bound})"
        );
        assert!(
            pair.slog.data.borrow().len() < 4 * MIB,
            "the server read while paused"
        );
        assert_eq!(pair.clog.count(&Ev::Pause), 0, "notices are held");
        pair.unthrottle();
        let sent = drive_for(&l, call.as_mut(), t, &mut max, Duration::from_secs(3600))
            .await
            .expect("the call completes")
            .unwrap();
        assert_eq!(sent, data2.len() as u64);
        assert!(
            max <= bound,
            "the write buffer reached {max} bytes (bound {bound})"
        );
        assert!(pair.clog.count(&Ev::Pause) <= 1, "{:?}", pair.clog.events());
        pair.slog.until_data_or_lost(data2.len()).await;
        assert!(
            *pair.slog.data.borrow() == data2,
            "the server's bytes differ"
        );
        pair.clog
            .until(|l| l.count(&Ev::Pause) == l.count(&Ev::Resume))
            .await;
        let clog = pair.clog.clone();
        pair.close().await;
        assert_notices_paired(&clog, "client");
    });
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Close,
    Abort,
    PeerAbort,
}

/// `close()`, `abort()` and the peer's abort during the call end it with
/// `ConnectionAborted`, not a hang; `connection_lost` comes once; what the
/// server got is a prefix of the file (after `close()`, exactly the bytes
/// counted: the file position says how far it got).
#[test]
fn closing_a_tls_transport_mid_send_ends_the_call() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let data = pattern(16 * MIB);
    let tmp = Rc::new(TempFile::with("close-during", &data));
    for stop in [Stop::Close, Stop::Abort, Stop::PeerAbort] {
        let l = lp.clone();
        let tmp2 = tmp.clone();
        let data = data.clone();
        run(&lp, async move {
            let pki = Pki::new(&["localhost"]);
            let pair = Pair::connect(&l, &pki, None).await;
            tmp2.seek(0);
            pair.throttle();
            let mut call = pin!(l.sendfile(&pair.client, &tmp2.file, 0, None, true));
            assert!(poll_once(&mut call).await.is_none());
            pair.unthrottle();
            match stop {
                Stop::Close => pair.client.close(),
                Stop::Abort => pair.client.abort(),
                Stop::PeerAbort => pair.served.abort(),
            }
            let e = call.await.unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionAborted,
                "{stop:?}: {e}"
            );
            pair.clog.until_lost().await;
            pair.slog.until_lost().await;
            let lost = pair
                .clog
                .events()
                .iter()
                .filter(|e| matches!(e, Ev::Lost(_)))
                .count();
            assert_eq!(lost, 1, "{stop:?}: connection_lost once");
            let got = pair.slog.data.borrow().clone();
            let pos = tmp2.pos() as usize;
            assert!(got.len() < data.len(), "{stop:?}");
            assert!(got == data[..got.len()], "{stop:?}: a prefix of the file");
            assert!(
                got.len() <= pos,
                "{stop:?}: {} bytes got, position {pos}",
                got.len()
            );
            if let Stop::Close = stop {
                assert_eq!(got.len(), pos, "close() flushes every byte counted");
            }
            pair.server.close();
            pair.server.wait_closed().await;
        });
    }
    finish(&lp, &seen);
}

/// A call dropped half-way leaves the transport as it was (reading on,
/// writes accepted) and the file position at `offset + sent`: what the
/// server gets is exactly the file up to there, then what is written next.
#[test]
fn a_dropped_tls_sendfile_restores_the_transport() {
    let data = pattern(8 * MIB);
    let tmp = Rc::new(TempFile::with("dropped", &data));
    let tmp2 = tmp.clone();
    let data2 = data.clone();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let pair = Pair::connect(&l, &pki, None).await;
        pair.throttle();
        let t = &pair.client;
        let (low, _high) = t.get_write_buffer_limits();
        {
            let mut call = pin!(l.sendfile(t, &tmp2.file, 0, None, true));
            let mut max = 0;
            // Until the copy waits for the buffer to drain, then dropped.
            while t.get_write_buffer_size() <= low {
                let r = drive_for(&l, call.as_mut(), t, &mut max, Duration::from_millis(10)).await;
                assert!(r.is_none(), "8 MiB went to a peer that does not read");
            }
            assert!(!t.is_reading());
        }
        pair.unthrottle();
        let pos = tmp2.pos() as usize;
        assert!(pos > 0 && pos < data2.len(), "position {pos}");
        assert!(pair.client.is_reading());
        pair.client.write(b"after").unwrap();
        let mut want = data2[..pos].to_vec();
        want.extend_from_slice(b"after");
        pair.slog.until_data_or_lost(want.len()).await;
        assert!(
            *pair.slog.data.borrow() == want,
            "the file up to its position, then the write"
        );
        pair.served.write(b"reply").unwrap();
        pair.clog.until_data_or_lost(5).await;
        let clog = pair.clog.clone();
        pair.close().await;
        assert_notices_paired(&clog, "client");
    });
}

/// A protocol paused before the call, replaced with `set_protocol` during
/// it: the old one hears nothing more (its `resume_writing` is not owed to
/// the new one); the new one hears nothing during the call, and after it at
/// most a `pause_writing` (the last block may leave the buffer above the
/// high-water mark) paired with its `resume_writing`.
#[test]
fn set_protocol_during_a_tls_sendfile_hands_over_the_flow_control_state() {
    let data = pattern(2 * MIB + 9);
    let tmp = Rc::new(TempFile::with("set-protocol", &data));
    let tmp2 = tmp.clone();
    let data2 = data.clone();
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let pair = Pair::connect(&l, &pki, None).await;
        pair.throttle();
        let before = vec![b'C'; 512 * KIB];
        pair.client.write(&before).unwrap();
        assert_eq!(pair.clog.events(), vec![Ev::Made, Ev::Pause]);
        let mut call = pin!(l.sendfile(&pair.client, &tmp2.file, 0, None, true));
        assert!(poll_once(&mut call).await.is_none());
        let new = Recorder::adopted(Rc::new(Notify::default()), &pair.client);
        pair.client
            .set_protocol(ProtocolHandle::new(RecordingProtocol::new(
                &new,
                Hooks::none(),
            )));
        pair.unthrottle();
        assert_eq!(call.await.unwrap(), data2.len() as u64);
        let told = new.events();
        assert!(told.is_empty() || told == [Ev::Pause], "{told:?}");
        assert_eq!(
            pair.clog.events(),
            vec![Ev::Made, Ev::Pause],
            "the old protocol is out"
        );
        let mut want = before;
        want.extend_from_slice(&data2);
        pair.slog.until_data_or_lost(want.len()).await;
        assert!(*pair.slog.data.borrow() == want);
        new.until(|l| l.count(&Ev::Pause) == l.count(&Ev::Resume))
            .await;
        pair.client.close();
        new.until_lost().await;
        assert_eq!(new.lost_outcome(), Some(None));
        assert_notices_paired(&new, "the new protocol");
        pair.slog.until_lost().await;
        pair.server.close();
        pair.server.wait_closed().await;
    });
}

// ---------------------------------------------------------------------------
// start_tls and a zero-copy sendfile on the same plain transport

/// A plain TCP peer that reads nothing until `go`, then reads to the end;
/// returns how many bytes it got.
fn lazy_reader() -> (
    std::net::SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<usize>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let _ = go_rx.recv_timeout(Duration::from_secs(60));
        let mut all = Vec::new();
        sock.read_to_end(&mut all).unwrap();
        all.len()
    });
    (addr, go_tx, peer)
}

/// sendfile(2) writes plain bytes on its own duplicate of the socket until
/// it ends, and `start_tls` takes the socket over once the transport's
/// buffer drained: either one started while the other is under way would
/// mix plain bytes into the TLS stream. Each refuses while the other runs
/// (`InvalidState`), and the running one still completes.
#[test]
fn start_tls_and_a_zero_copy_sendfile_exclude_each_other() {
    on_loop(|l| async move {
        let pki = Pki::new(&["localhost"]);
        let file = TempFile::with("exclusive", &pattern(8 * MIB));

        // 1. A sendfile under way refuses start_tls.
        let (addr, go, peer) = lazy_reader();
        let log = Recorder::new();
        let (plain, proto) = l
            .create_connection(
                {
                    let log = log.clone();
                    move || RecordingProtocol::new(&log, Hooks::none())
                },
                Some("127.0.0.1"),
                addr.port(),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        send_buffer(&plain, 4096);
        let sending = l
            .create_task({
                let (l, plain) = (l.clone(), plain.clone());
                let f = file.file.try_clone().unwrap();
                async move { l.sendfile(&plain, &f, 0, None, false).await }
            })
            .unwrap();
        // sendfile pauses reading when it begins.
        while plain.is_reading() {
            l.sleep(Duration::from_millis(1)).await.unwrap();
        }
        let err = l
            .start_tls(&plain, proto.clone(), client_opts(&pki))
            .await
            .unwrap_err();
        assert_eq!(loop_kind(&err), Some(ErrorKind::InvalidState), "{err}");
        go.send(()).unwrap();
        assert_eq!(sending.await.unwrap().unwrap(), 8 * MIB as u64);
        plain.close();
        log.until_lost().await;
        assert_eq!(peer.join().unwrap(), 8 * MIB);

        // 2. A start_tls waiting for the buffer to drain refuses sendfile.
        let (addr, go, peer) = lazy_reader();
        let log = Recorder::new();
        let (plain, proto) = l
            .create_connection(
                {
                    let log = log.clone();
                    move || RecordingProtocol::new(&log, Hooks::none())
                },
                Some("127.0.0.1"),
                addr.port(),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        send_buffer(&plain, 4096);
        plain.write(&pattern(2 * MIB)).unwrap();
        let mut upgrade = Box::pin(l.start_tls(&plain, proto, client_opts(&pki)));
        assert!(
            poll_once(&mut upgrade).await.is_none(),
            "waits for the drain"
        );
        let err = l
            .sendfile(&plain, &file.file, 0, Some(1000), false)
            .await
            .unwrap_err();
        assert_eq!(loop_kind(&err), Some(ErrorKind::InvalidState), "{err}");
        // Giving up the upgrade lets the transport be used again.
        drop(upgrade);
        assert!(plain.is_reading(), "reading resumed");
        go.send(()).unwrap();
        plain.close();
        log.until_lost().await;
        assert_eq!(peer.join().unwrap(), 2 * MIB);
    });
}
