//! `loop.sendfile(transport, file, offset, count, fallback=)` through the
//! facade, on real loopback TCP and Unix stream transports:
//! - native `sendfile(2)`: byte-exact, offset/count exact, the file position
//!   left at `offset + sent`, files larger than 2 GiB (a sparse 3 GiB file,
//!   a range crossing 2 GiB);
//! - bytes buffered before the call go first; writes during it are refused;
//! - the fallback (forced, and for real: `sendfile(2)` refusing an
//!   `O_APPEND` socket with `EINVAL`), with its buffer kept bounded, and
//!   `SendfileNotAvailableError` when fallback is disabled;
//! - reading paused during the call and restored after (also when the
//!   future is dropped half-way); flow-control notices held and paired;
//! - refusals: count 0, a pipe or a write-only file as the file, a closing
//!   transport, a second sendfile at once, another loop's transport, a
//!   transport kind without sendfile support (a write pipe); the transport
//!   closing during the call; `set_protocol` during the call.
#![cfg(feature = "net")]

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};

use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::pin::pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::JoinHandle;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use aioloop::{SendfileFallback, SendfileNotAvailableError};
use futures_lite::future::poll_once;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const GIB: u64 = 1024 * 1024 * 1024;

/// A file removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "aioloop-transport-sendfile-{}-{tag}",
            std::process::id()
        ))
    }

    /// A file holding `data`, opened for reading.
    fn with(tag: &str, data: &[u8]) -> TempFile {
        let path = TempFile::path(tag);
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

/// A TCP transport (recording protocol) and its std peer.
async fn connect_tcp(lp: &EventLoop) -> (Transport, Rc<Recorder>, TcpStream) {
    connect_to_std_peer(lp, Hooks::none()).await
}

/// A peer thread that waits for the go signal (if any), optionally writes
/// `say`, then reads to EOF.
fn reader(mut s: TcpStream, say: &'static [u8]) -> (mpsc::Sender<()>, JoinHandle<Vec<u8>>) {
    let (go, wait) = mpsc::channel::<()>();
    bounded(&s);
    let h = std::thread::spawn(move || {
        let _ = wait.recv_timeout(LIMIT);
        if !say.is_empty() {
            s.write_all(say).unwrap();
        }
        let (got, err) = read_to_end_or_reset(&mut s);
        assert_eq!(err, None, "the peer's read failed");
        got
    });
    (go, h)
}

/// Gives the transport's socket a large kernel send buffer again, after a
/// [`small_send_buffer`] made it block early: a 4 KiB send buffer makes
/// loopback TCP crawl (each send waits for an ACK that the peer delays).
fn roomy_send_buffer(t: &Transport) {
    send_buffer(t, 4 * MIB);
}

/// Sets the kernel send buffer of the transport's socket.
fn send_buffer(t: &Transport, size: usize) {
    let fd = dup_fd(t.fd().expect("the transport has a socket"));
    rustix::net::sockopt::set_socket_send_buffer_size(&fd, size).unwrap();
}

/// Closes `t` and waits for connection_lost.
async fn close_and_wait(t: &Transport, rec: &Rc<Recorder>) {
    t.close();
    rec.until_lost().await;
}

/// The `LoopError` kind inside an io::Error, if any.
fn loop_kind(e: &std::io::Error) -> Option<ErrorKind> {
    e.get_ref()?.downcast_ref::<LoopError>().map(|l| l.kind())
}

// ---------------------------------------------------------------------------
// Native sendfile

#[test]
fn sends_a_file_byte_exact_over_tcp() {
    let data = pattern(4 * MIB + 123, 1);
    let tmp = Rc::new(TempFile::with("tcp", &data));
    let tmp2 = tmp.clone();
    let (got, sent) = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();
        assert!(t.is_reading());
        let sent = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap();
        assert!(t.is_reading(), "reading is restored");
        assert_eq!(tmp2.pos(), sent, "the file position is offset + sent");
        close_and_wait(&t, &rec).await;
        rec.assert_clean_life();
        assert_eq!(rec.count(&Ev::Pause), 0);
        (peer.join().unwrap(), sent)
    });
    assert_eq!(sent, data.len() as u64);
    assert!(
        got == data,
        "the peer got {} bytes, not the file",
        got.len()
    );
}

#[test]
fn sends_a_file_over_unix_sockets() {
    let data = pattern(MIB + 5, 2);
    let tmp = Rc::new(TempFile::with("unix", &data));
    let path = TempPath::new("sendfile");
    let listener = UnixListener::bind(&path.0).unwrap();
    let p = path.0.clone();
    let tmp2 = tmp.clone();
    let got = on_loop(|l| async move {
        let rec = Recorder::new();
        let r = rec.clone();
        let (t, _h) = l
            .create_unix_connection(move || RecordingProtocol::new(&r, Hooks::none()), &p)
            .await
            .unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        theirs.set_read_timeout(Some(LIMIT)).unwrap();
        let peer = std::thread::spawn(move || {
            let mut got = Vec::new();
            UnixStream::read_to_end(&mut theirs, &mut got).unwrap();
            got
        });
        rec.until_made().await;
        let sent = l.sendfile(&t, &tmp2.file, 5, None, true).await.unwrap();
        assert_eq!(sent, MIB as u64);
        assert_eq!(tmp2.pos(), 5 + MIB as u64);
        close_and_wait(&t, &rec).await;
        peer.join().unwrap()
    });
    assert!(got == data[5..], "the peer got {} bytes", got.len());
}

#[test]
fn offset_and_count_are_exact() {
    let len = 3 * MIB + 17;
    let data = pattern(len, 3);
    let tmp = Rc::new(TempFile::with("range", &data));
    let tmp2 = tmp.clone();
    let d = data.clone();
    let cases: Vec<(u64, Option<u64>, SendfileFallback)> =
        [SendfileFallback::Allowed, SendfileFallback::Forced]
            .into_iter()
            .flat_map(|fb| {
                [
                    (0, Some(1), fb),
                    (1000, Some(5000), fb),
                    (MIB as u64 - 3, Some(2 * MIB as u64 + 11), fb),
                    (len as u64 - 10, Some(100), fb),
                    (100, None, fb),
                    (len as u64 + 5, None, fb),
                    (len as u64, Some(7), fb),
                ]
            })
            .collect();
    let (got, expected) = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();
        let mut expected = Vec::new();
        for (offset, count, fb) in cases {
            let start = offset.min(len as u64) as usize;
            let end = count.map_or(len, |c| (offset + c).min(len as u64) as usize);
            let want = &d[start..end.max(start)];
            // A position the call must leave alone if it sends nothing.
            tmp2.seek(42);
            let sent = l.sendfile(&t, &tmp2.file, offset, count, fb).await.unwrap();
            assert_eq!(
                sent,
                want.len() as u64,
                "offset {offset} count {count:?} {fb:?}"
            );
            let pos = if sent > 0 { offset + sent } else { 42 };
            assert_eq!(tmp2.pos(), pos, "offset {offset} count {count:?} {fb:?}");
            expected.extend_from_slice(want);
            // A marker between the ranges proves the order on the wire.
            t.write(b"|").unwrap();
            expected.push(b'|');
        }
        close_and_wait(&t, &rec).await;
        (peer.join().unwrap(), expected)
    });
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the bytes differ");
}

/// A sparse 3 GiB file with markers near 0, around 2 GiB and at the end;
/// ranges that cross 2 GiB and reach the end, native and copied.
#[test]
fn files_over_2_gib_and_ranges_crossing_it() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let path = TempFile::path("sparse");
    {
        let f = File::create(&path).unwrap();
        f.set_len(3 * GIB).unwrap();
        f.write_all_at(b"HEAD", 0).unwrap();
        f.write_all_at(b"<BEFORE-2G>", 2 * GIB - 11).unwrap();
        f.write_all_at(b"<AFTER-2G>", 2 * GIB).unwrap();
        f.write_all_at(b"<NEAR-END>", 3 * GIB - 4096).unwrap();
        f.write_all_at(b"TAIL", 3 * GIB - 4).unwrap();
    }
    let tmp = Rc::new(TempFile {
        file: File::open(&path).unwrap(),
        path,
    });
    // What the file holds in [start, start + len).
    let expect = |start: u64, len: usize| -> Vec<u8> {
        let mut v = vec![0u8; len];
        for (at, m) in [
            (0u64, &b"HEAD"[..]),
            (2 * GIB - 11, b"<BEFORE-2G>"),
            (2 * GIB, b"<AFTER-2G>"),
            (3 * GIB - 4096, b"<NEAR-END>"),
            (3 * GIB - 4, b"TAIL"),
        ] {
            for (i, b) in m.iter().enumerate() {
                let p = at + i as u64;
                if p >= start && p < start + len as u64 {
                    v[(p - start) as usize] = *b;
                }
            }
        }
        v
    };
    let cross = 2 * GIB - MIB as u64;
    let near_end = 3 * GIB - MIB as u64;
    // Each range twice: native, then copied.
    let once = [expect(cross, 2 * MIB), expect(near_end, MIB)].concat();
    let expected = [once.clone(), once].concat();
    let l = lp.clone();
    let tmp2 = tmp.clone();
    let got = run(&lp, async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();
        for fb in [SendfileFallback::Disabled, SendfileFallback::Forced] {
            let sent = l
                .sendfile(&t, &tmp2.file, cross, Some(2 * MIB as u64), fb)
                .await
                .unwrap();
            assert_eq!(sent, 2 * MIB as u64, "{fb:?}");
            assert_eq!(tmp2.pos(), 2 * GIB + MIB as u64, "{fb:?}");
            let sent = l
                .sendfile(&t, &tmp2.file, near_end, None, fb)
                .await
                .unwrap();
            assert_eq!(sent, MIB as u64, "{fb:?}");
            assert_eq!(tmp2.pos(), 3 * GIB, "{fb:?}");
        }
        close_and_wait(&t, &rec).await;
        peer.join().unwrap()
    });
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the markers are not where they belong");
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// Ordering with the transport's own writes

#[test]
fn buffered_bytes_go_first_and_writes_during_the_call_are_refused() {
    let data = pattern(2 * MIB + 9, 4);
    let before = vec![b'A'; MIB];
    let tmp = Rc::new(TempFile::with("order", &data));
    let tmp2 = tmp.clone();
    let b = before.clone();
    let got = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        small_send_buffer(&t);
        let (go, peer) = reader(theirs, b"");
        t.write(&b).unwrap();
        assert!(t.get_write_buffer_size() > 0, "the write must be buffered");
        let mut call = pin!(l.sendfile(&t, &tmp2.file, 0, None, true));
        // It waits for the buffer to drain; the peer is not reading yet.
        assert!(poll_once(&mut call).await.is_none());
        assert!(!t.is_reading(), "reading is paused during the call");
        let e = t.write(b"jump").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
        assert!(e.to_string().contains("sendfile is in progress"), "{e}");
        assert_eq!(
            t.writelines(&[b"x", b"y"]).unwrap_err().kind(),
            ErrorKind::InvalidState
        );
        go.send(()).unwrap();
        roomy_send_buffer(&t);
        let sent = call.await.unwrap();
        assert_eq!(sent, tmp2.pos());
        assert!(t.is_reading());
        t.write(b"after").unwrap();
        close_and_wait(&t, &rec).await;
        rec.assert_clean_life();
        peer.join().unwrap()
    });
    let mut expected = before;
    expected.extend_from_slice(&data);
    expected.extend_from_slice(b"after");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the bytes are out of order");
}

// ---------------------------------------------------------------------------
// The fallback

/// Forced fallback through a small kernel buffer: byte-exact, the transport
/// buffer bounded (low-water mark + one 256 KiB block), and no flow-control
/// notice reaches the protocol during the call; what it missed arrives
/// paired afterwards.
#[test]
fn forced_fallback_is_exact_bounded_and_keeps_notices_paired() {
    let data = pattern(8 * MIB + 3, 5);
    let tmp = Rc::new(TempFile::with("fallback", &data));
    let tmp2 = tmp.clone();
    let got = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        // Small enough that the transport has to buffer, large enough not
        // to crawl.
        send_buffer(&t, 64 * KIB);
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();
        let (low, _high) = t.get_write_buffer_limits();
        let mut call = pin!(l.sendfile(&t, &tmp2.file, 0, None, SendfileFallback::Forced));
        let mut max = 0;
        let mut polls = 0;
        let sent = std::future::poll_fn(|cx| {
            polls += 1;
            let p = call.as_mut().poll(cx);
            max = max.max(t.get_write_buffer_size());
            p
        })
        .await
        .unwrap();
        assert_eq!(sent, data_len(&tmp2));
        assert!(polls > 1, "the copy had to wait");
        assert!(
            max <= low + 256 * KIB,
            "the transport buffer reached {max} bytes"
        );
        // Nothing was delivered during the call; at its end at most the one
        // notice that brings the protocol to the transport's state.
        assert_eq!(rec.count(&Ev::Resume), 0, "{:?}", rec.events());
        assert!(rec.count(&Ev::Pause) <= 1, "{:?}", rec.events());
        // What follows stays paired.
        rec.until(|r| !r.paused.get()).await;
        assert_eq!(rec.count(&Ev::Pause), rec.count(&Ev::Resume));
        close_and_wait(&t, &rec).await;
        rec.assert_clean_life();
        peer.join().unwrap()
    });
    assert!(got == data, "the peer got {} bytes", got.len());
}

fn data_len(t: &TempFile) -> u64 {
    t.file.metadata().unwrap().len()
}

/// A protocol paused before the call (its writes crossed the high-water
/// mark) gets its resume_writing when the call ends, not during it.
#[test]
fn a_paused_protocol_is_resumed_after_the_call() {
    let data = pattern(MIB, 6);
    let tmp = Rc::new(TempFile::with("paused", &data));
    let tmp2 = tmp.clone();
    let got = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        small_send_buffer(&t);
        let (go, peer) = reader(theirs, b"");
        t.write(&vec![b'B'; 512 * KIB]).unwrap();
        assert!(rec.paused.get(), "pause_writing above the high-water mark");
        let mut call = pin!(l.sendfile(&t, &tmp2.file, 0, None, true));
        assert!(poll_once(&mut call).await.is_none());
        go.send(()).unwrap();
        roomy_send_buffer(&t);
        let sent = call.await.unwrap();
        assert_eq!(sent, MIB as u64);
        // The buffer drained during the call, but the protocol was not told
        // then; it is told now, once.
        assert_eq!(rec.count(&Ev::Pause), 1);
        assert_eq!(rec.count(&Ev::Resume), 1);
        assert!(!rec.paused.get());
        close_and_wait(&t, &rec).await;
        rec.assert_clean_life();
        peer.join().unwrap()
    });
    let mut expected = vec![b'B'; 512 * KIB];
    expected.extend_from_slice(&data);
    assert!(got == expected);
}

/// `sendfile(2)` refuses an `O_APPEND` destination with `EINVAL`: a real
/// "native path unavailable". Fallback allowed: the copy sends the file;
/// disabled: `SendfileNotAvailableError`, nothing sent, position unchanged.
#[test]
fn einval_from_sendfile_falls_back_or_is_not_available() {
    let data = pattern(3 * MIB + 1, 7);
    let tmp = Rc::new(TempFile::with("einval", &data));
    let tmp2 = tmp.clone();
    let got = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();
        let sock = dup_fd(t.fd().unwrap());
        let flags = rustix::fs::fcntl_getfl(&sock).unwrap();
        rustix::fs::fcntl_setfl(&sock, flags | rustix::fs::OFlags::APPEND).unwrap();
        // (The flag belongs to the open socket; the duplicate must not keep
        // the socket open after the transport closes it.)
        drop(sock);

        tmp2.seek(9);
        let e = l
            .sendfile(&t, &tmp2.file, 0, None, false)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
        let why = SendfileNotAvailableError::from_io(&e).expect("a SendfileNotAvailableError");
        assert!(why.reason().contains("sendfile"), "{}", why.reason());
        assert_eq!(tmp2.pos(), 9, "nothing sent, position unchanged");
        assert!(t.is_reading());

        let sent = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap();
        assert_eq!(sent, data_len(&tmp2));
        assert_eq!(tmp2.pos(), sent);
        close_and_wait(&t, &rec).await;
        rec.assert_clean_life();
        peer.join().unwrap()
    });
    assert!(got == data, "the peer got {} bytes", got.len());
}

// ---------------------------------------------------------------------------
// Refusals

#[test]
fn bad_arguments_are_refused() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let tmp = Rc::new(TempFile::with("args", b"some bytes"));
    let wo_path = TempFile::path("write-only");
    std::fs::write(&wo_path, b"x").unwrap();
    let write_only = Rc::new(TempFile {
        file: std::fs::OpenOptions::new()
            .write(true)
            .open(&wo_path)
            .unwrap(),
        path: wo_path,
    });
    let l = lp.clone();
    let tmp2 = tmp.clone();
    run(&lp, async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();

        let e = l
            .sendfile(&t, &tmp2.file, 0, Some(0), true)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "count must be a positive integer (got 0)");

        let (rx, _tx) = rustix::pipe::pipe().unwrap();
        let e = l.sendfile(&t, &rx, 0, None, true).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("regular file"), "{e}");

        let e = l
            .sendfile(&t, &write_only.file, 0, None, true)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("opened for reading"), "{e}");

        let dir = File::open(std::env::temp_dir()).unwrap();
        let e = l.sendfile(&t, &dir, 0, None, true).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);

        // None of these touched the transport.
        assert!(t.is_reading());
        t.write(b"ok").unwrap();
        close_and_wait(&t, &rec).await;

        // A closed transport is refused, as asyncio's "Transport is closing".
        let e = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap_err();
        assert_eq!(loop_kind(&e), Some(ErrorKind::InvalidState), "{e}");
        assert!(e.to_string().contains("Transport is closing"), "{e}");
        assert_eq!(peer.join().unwrap(), b"ok");
    });
    finish(&lp, &seen);
}

#[test]
fn a_closing_transport_is_refused() {
    let tmp = Rc::new(TempFile::with("closing", b"0123456789"));
    let tmp2 = tmp.clone();
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        t.close();
        let e = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap_err();
        assert_eq!(loop_kind(&e), Some(ErrorKind::InvalidState), "{e}");
        assert_eq!(tmp2.pos(), 0);
        go.send(()).unwrap();
        rec.until_lost().await;
        assert_eq!(peer.join().unwrap(), b"");
    });
}

#[test]
fn one_sendfile_at_a_time_and_only_on_its_own_loop() {
    let data = pattern(16 * MIB, 8);
    let tmp = Rc::new(TempFile::with("twice", &data));
    let other = new_loop();
    let o = other.clone();
    let tmp2 = tmp.clone();
    let got = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        small_send_buffer(&t);
        let (go, peer) = reader(theirs, b"");
        let mut first = pin!(l.sendfile(&t, &tmp2.file, 0, None, true));
        assert!(poll_once(&mut first).await.is_none());
        let e = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap_err();
        assert_eq!(loop_kind(&e), Some(ErrorKind::InvalidState), "{e}");
        assert!(e.to_string().contains("already in progress"), "{e}");
        let e = o.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        go.send(()).unwrap();
        roomy_send_buffer(&t);
        assert_eq!(first.await.unwrap(), data.len() as u64);
        close_and_wait(&t, &rec).await;
        peer.join().unwrap()
    });
    other.close().unwrap();
    assert!(got == tmp_data(&tmp));
}

fn tmp_data(t: &TempFile) -> Vec<u8> {
    std::fs::read(&t.path).unwrap()
}

// ---------------------------------------------------------------------------
// Cancellation and closing during the call

/// Dropping the future half-way (blocked on a full socket) restores
/// reading, leaves the file position at what was sent and the transport
/// usable: a second sendfile sends the rest and the peer sees every byte
/// once, in order.
#[test]
fn a_dropped_sendfile_restores_the_transport() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let data = pattern(16 * MIB + 5, 9);
    let tmp = Rc::new(TempFile::with("cancel", &data));
    for fb in [SendfileFallback::Allowed, SendfileFallback::Forced] {
        let l = lp.clone();
        let tmp2 = tmp.clone();
        tmp.seek(0);
        let got = run(&lp, async move {
            let (t, rec, theirs) = connect_tcp(&l).await;
            small_send_buffer(&t);
            let probe = theirs.try_clone().unwrap();
            let (go, peer) = reader(theirs, b"ping");
            assert!(t.is_reading());
            {
                let mut call = pin!(l.sendfile(&t, &tmp2.file, 0, None, fb));
                // Poll until it has sent something and waits (the peer does
                // not read yet, so it must wait).
                std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                    Poll::Ready(r) => panic!("the call finished early: {r:?}"),
                    Poll::Pending if peer_has_data(&probe) => Poll::Ready(()),
                    Poll::Pending => Poll::Pending,
                })
                .await;
                assert!(!t.is_reading());
            } // dropped here
            assert!(t.is_reading(), "reading is restored after the drop");
            let sent = tmp2.pos();
            assert!(sent > 0 && sent < data_len(&tmp2), "sent {sent} ({fb:?})");
            // The transport works: reading (the peer's ping arrives) ...
            go.send(()).unwrap();
            roomy_send_buffer(&t);
            rec.until_data(4).await;
            assert_eq!(rec.bytes(), b"ping");
            // ... and writing: the rest of the file, then a tail.
            let rest = l.sendfile(&t, &tmp2.file, sent, None, fb).await.unwrap();
            assert_eq!(sent + rest, data_len(&tmp2));
            t.write(b"tail").unwrap();
            close_and_wait(&t, &rec).await;
            rec.assert_clean_life();
            peer.join().unwrap()
        });
        let mut expected = data.clone();
        expected.extend_from_slice(b"tail");
        assert_eq!(got.len(), expected.len(), "{fb:?}");
        assert!(got == expected, "{fb:?}: the bytes differ");
    }
    finish(&lp, &seen);
}

/// Whether bytes wait in `s`'s receive queue (a peek that does not block).
fn peer_has_data(s: &TcpStream) -> bool {
    use rustix::net::RecvFlags;
    matches!(
        rustix::net::recv(s, &mut [0u8; 1][..], RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Ok((1, _))
    )
}

/// close() and abort() during the call stop it with ConnectionAborted;
/// connection_lost comes once.
#[test]
fn closing_the_transport_stops_the_call() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let data = pattern(16 * MIB, 10);
    let tmp = Rc::new(TempFile::with("close-during", &data));
    for (abort, fb) in [
        (false, SendfileFallback::Allowed),
        (true, SendfileFallback::Allowed),
        (false, SendfileFallback::Forced),
        (true, SendfileFallback::Forced),
    ] {
        let l = lp.clone();
        let tmp2 = tmp.clone();
        let data = data.clone();
        run(&lp, async move {
            let (t, rec, theirs) = connect_tcp(&l).await;
            small_send_buffer(&t);
            let (go, peer) = reader(theirs, b"");
            let mut call = pin!(l.sendfile(&t, &tmp2.file, 0, None, fb));
            assert!(poll_once(&mut call).await.is_none());
            if abort {
                t.abort();
            } else {
                t.close();
            }
            let e = call.await.unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionAborted,
                "{e} (abort {abort}, {fb:?})"
            );
            go.send(()).unwrap();
            rec.until_lost().await;
            rec.assert_clean_life();
            let got = peer.join().unwrap();
            assert!(got.len() < data.len());
            assert!(got == data[..got.len()], "a prefix of the file");
        });
    }
    finish(&lp, &seen);
}

/// Reading paused by the protocol before the call stays paused after it.
#[test]
fn reading_paused_by_the_user_stays_paused() {
    let tmp = Rc::new(TempFile::with("user-paused", &pattern(100 * KIB, 11)));
    let tmp2 = tmp.clone();
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        let (go, peer) = reader(theirs, b"");
        go.send(()).unwrap();
        t.pause_reading();
        let sent = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap();
        assert_eq!(sent, 100 * KIB as u64);
        assert!(!t.is_reading());
        let sent = l
            .sendfile(&t, &tmp2.file, 0, None, SendfileFallback::Forced)
            .await
            .unwrap();
        assert_eq!(sent, 100 * KIB as u64);
        assert!(!t.is_reading());
        close_and_wait(&t, &rec).await;
        assert_eq!(peer.join().unwrap().len(), 200 * KIB);
    });
}

/// A protocol installed with set_protocol during the call is told only what
/// concerns it: the old one was paused, the buffer drained during the call,
/// so the new one is never paused and gets no notice at all.
#[test]
fn set_protocol_during_the_call_hands_over_the_flow_control_state() {
    let data = pattern(MIB, 12);
    let tmp = Rc::new(TempFile::with("set-protocol", &data));
    let tmp2 = tmp.clone();
    let got = on_loop(|l| async move {
        let (t, rec, theirs) = connect_tcp(&l).await;
        small_send_buffer(&t);
        let (go, peer) = reader(theirs, b"");
        t.write(&vec![b'C'; 512 * KIB]).unwrap();
        assert!(rec.paused.get());
        let mut call = pin!(l.sendfile(&t, &tmp2.file, 0, None, true));
        assert!(poll_once(&mut call).await.is_none());
        let new = Recorder::adopted(rec.notify.clone(), &t);
        t.set_protocol(ProtocolHandle::new(RecordingProtocol::new(
            &new,
            Hooks::none(),
        )));
        go.send(()).unwrap();
        roomy_send_buffer(&t);
        assert_eq!(call.await.unwrap(), MIB as u64);
        assert_eq!(new.count(&Ev::Pause), 0, "{:?}", new.events());
        assert_eq!(new.count(&Ev::Resume), 0, "{:?}", new.events());
        assert_eq!(
            rec.count(&Ev::Resume),
            0,
            "the old protocol is out of the loop"
        );
        t.close();
        new.until_lost().await;
        assert!(new.violations.borrow().is_empty());
        peer.join().unwrap()
    });
    let mut expected = vec![b'C'; 512 * KIB];
    expected.extend_from_slice(&data);
    assert!(got == expected);
}

/// A transport kind that does not take part in sendfile (today: the write
/// pipe, asyncio's `_UnixWritePipeTransport`, which has no
/// `_sendfile_compatible` either) is refused with `Unsupported`, untouched.
#[test]
fn a_transport_without_sendfile_support_is_refused() {
    let tmp = Rc::new(TempFile::with("pipe", b"through a pipe"));
    let tmp2 = tmp.clone();
    on_loop(|l| async move {
        let (rx, tx) = rustix::pipe::pipe().unwrap();
        let rec = Recorder::new();
        let r = rec.clone();
        let (t, _h) = l
            .connect_write_pipe(move || RecordingProtocol::new(&r, Hooks::none()), tx)
            .await
            .unwrap();
        rec.until_made().await;
        let e = l.sendfile(&t, &tmp2.file, 0, None, true).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("not supported"), "{e}");
        assert!(SendfileNotAvailableError::from_io(&e).is_none());
        assert_eq!(tmp2.pos(), 0);
        t.write(b"still usable").unwrap();
        let mut buf = [0u8; 32];
        let n = rustix::io::read(&rx, &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"still usable");
        close_and_wait(&t, &rec).await;
    });
}
