//! The `sock_*` methods through the facade, on real loopback sockets:
//! connect / accept, sendall / recv / recv_into, recvfrom / sendto (UDP),
//! sendfile (native, offset/count, forced fallback), the refusal of blocking
//! sockets, ECONNREFUSED, cancellation that unregisters at once (lesson 23),
//! and fairness on always-ready sockets (lesson 25).
#![cfg(feature = "net")]

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;
use aioloop::prelude::*;
use aioloop::{SendfileNotAvailableError, SockAddr};
use futures_lite::future::poll_once;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};

/// A non-blocking listener on an ephemeral loopback port.
fn listener(addr: &str) -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind(addr).unwrap();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A fresh, unconnected, non-blocking TCP socket.
fn tcp_socket(family: AddressFamily) -> OwnedFd {
    rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A connected loopback pair: the first end non-blocking (for the loop), the
/// second blocking (for a peer thread or direct use).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (theirs, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (ours, theirs)
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect()
}

fn is_nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

/// Whether `fd` is watched by the loop for readability: `remove_reader`
/// answers (and, if it was, unwatches it).
fn reader_was_registered(lp: &EventLoop, fd: &impl AsRawFd) -> bool {
    lp.remove_reader(fd.as_raw_fd()).unwrap()
}

#[test]
fn connect_then_accept() {
    let lp = new_loop();
    let (l, addr) = listener("127.0.0.1:0");
    let client = tcp_socket(AddressFamily::INET);
    let lp2 = lp.clone();
    let (conn, peer, client) = run(&lp, async move {
        lp2.sock_connect(&client, addr).await.unwrap();
        let (conn, peer) = lp2.sock_accept(&l).await.unwrap();
        (conn, peer, client)
    });
    let local = rustix::net::getsockname(&client).unwrap();
    assert_eq!(peer, SockAddr::Inet(SocketAddr::try_from(local).unwrap()));
    assert!(is_nonblocking(&conn), "accepted sockets are non-blocking");
    let fd_flags = rustix::io::fcntl_getfd(&conn).unwrap();
    assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));
    // The two ends talk.
    let mut conn = TcpStream::from(conn);
    conn.set_nonblocking(false).unwrap();
    conn.write_all(b"hi").unwrap();
    let lp2 = lp.clone();
    let got = run(&lp, async move { lp2.sock_recv(&client, 8).await });
    assert_eq!(got.unwrap(), b"hi");
    lp.close().unwrap();
}

/// asyncio's `sock_connect(sock, (host, port))`: a host name is resolved
/// first (`_ensure_resolved`, with the socket's family), then connected;
/// a socket of another family is refused.
#[test]
fn sock_connect_resolves_a_host_name_first() {
    let lp = new_loop();
    let (l, addr) = listener("127.0.0.1:0");
    let client = tcp_socket(AddressFamily::INET);
    let lp2 = lp.clone();
    let (peer, client, refused) = run(&lp, async move {
        lp2.sock_connect_host(&client, "localhost", addr.port())
            .await
            .unwrap();
        let (_conn, peer) = lp2.sock_accept(&l).await.unwrap();
        let (unix, _other) = UnixStream::pair().unwrap();
        unix.set_nonblocking(true).unwrap();
        let refused = lp2
            .sock_connect_host(&unix, "localhost", addr.port())
            .await
            .unwrap_err();
        (peer, client, refused)
    });
    let local = rustix::net::getsockname(&client).unwrap();
    assert_eq!(peer, SockAddr::Inet(SocketAddr::try_from(local).unwrap()));
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput, "{refused}");
    assert!(refused.to_string().contains("AF_INET"), "{refused}");
    lp.close().unwrap();
}

#[test]
fn an_accept_waits_for_a_connection() {
    let lp = new_loop();
    let (l, addr) = listener("[::1]:0");
    let lp2 = lp.clone();
    let accepting = lp
        .create_task(async move { lp2.sock_accept(&l).await })
        .unwrap();
    let client = tcp_socket(AddressFamily::INET6);
    let lp2 = lp.clone();
    let (conn, peer) = run(&lp, async move {
        // The accept task runs first and has to wait: nobody connected yet.
        lp2.sock_connect(&client, addr).await.unwrap();
        let accepted = accepting.await.unwrap();
        drop(client);
        accepted
    })
    .unwrap();
    assert!(matches!(peer, SockAddr::Inet(SocketAddr::V6(a)) if a.ip().is_loopback()));
    drop(conn);
    lp.close().unwrap();
}

#[test]
fn a_refused_connection_is_econnrefused() {
    let lp = new_loop();
    let addr = {
        let (l, addr) = listener("127.0.0.1:0");
        drop(l);
        addr
    };
    let client = tcp_socket(AddressFamily::INET);
    let lp2 = lp.clone();
    let err = run(&lp, async move { lp2.sock_connect(&client, addr).await }).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::CONNREFUSED.raw_os_error())
    );
    lp.close().unwrap();
}

#[test]
fn sendall_of_one_mebibyte_arrives_intact() {
    let lp = new_loop();
    let (ours, theirs) = tcp_pair();
    // A small send buffer: the send has to wait for the reader many times.
    // (Not smaller, nor a small receive buffer too: then loopback TCP itself
    // crawls, blocking writes included.)
    rustix::net::sockopt::set_socket_send_buffer_size(&ours, 32 * 1024).unwrap();
    let reader = thread::spawn(move || {
        let mut theirs = theirs;
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        got
    });
    let data = pattern(1 << 20, 7);
    let sent = data.clone();
    let lp2 = lp.clone();
    run(&lp, async move {
        lp2.sock_sendall(&ours, &sent).await.unwrap();
        ours.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes arrive in order, unchanged");
    lp.close().unwrap();
}

#[test]
fn recv_and_recv_into() {
    let lp = new_loop();
    let (ours, mut theirs) = tcp_pair();
    theirs.write_all(b"hello").unwrap();
    let ours = Rc::new(ours);
    let (lp2, o) = (lp.clone(), ours.clone());
    let got = run(&lp, async move { lp2.sock_recv(&*o, 1024).await }).unwrap();
    assert_eq!(got, b"hello");
    // sock_recv never returns more than asked.
    theirs.write_all(b"abcdef").unwrap();
    let (lp2, o) = (lp.clone(), ours.clone());
    let got = run(&lp, async move {
        let a = lp2.sock_recv(&*o, 4).await?;
        let mut buf = [0u8; 16];
        let n = lp2.sock_recv_into(&*o, &mut buf).await?;
        Ok::<_, io::Error>((a, buf[..n].to_vec()))
    })
    .unwrap();
    assert_eq!(got, (b"abcd".to_vec(), b"ef".to_vec()));
    // A receive that must wait: the data is written only after it started.
    let (lp2, o) = (lp.clone(), ours.clone());
    let waiting = lp
        .create_task(async move {
            let mut buf = [0u8; 16];
            let n = lp2.sock_recv_into(&*o, &mut buf).await?;
            Ok::<_, io::Error>(buf[..n].to_vec())
        })
        .unwrap();
    let mut writer = theirs.try_clone().unwrap();
    lp.call_soon(move || writer.write_all(b"later").unwrap())
        .unwrap();
    assert_eq!(run(&lp, waiting).unwrap().unwrap(), b"later");
    // End of stream: empty / zero.
    drop(theirs);
    let (lp2, o) = (lp.clone(), ours.clone());
    let eof = run(&lp, async move {
        let v = lp2.sock_recv(&*o, 16).await?;
        let mut buf = [0u8; 4];
        let n = lp2.sock_recv_into(&*o, &mut buf).await?;
        Ok::<_, io::Error>((v, n))
    })
    .unwrap();
    assert_eq!(eof, (Vec::new(), 0));
    assert!(
        !reader_was_registered(&lp, &*ours),
        "nothing left registered"
    );
    lp.close().unwrap();
}

#[test]
fn blocking_sockets_are_refused() {
    let lp = new_loop();
    let (ours, mut theirs) = tcp_pair();
    ours.set_nonblocking(false).unwrap();
    theirs.write_all(b"keep").unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let unconnected = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    let addr = l.local_addr().unwrap();
    let lp2 = lp.clone();
    let errors = run(&lp, async move {
        let mut buf = [0u8; 4];
        let errs = vec![
            lp2.sock_recv(&ours, 4).await.unwrap_err(),
            lp2.sock_recv_into(&ours, &mut buf).await.unwrap_err(),
            lp2.sock_sendall(&ours, b"x").await.unwrap_err(),
            lp2.sock_accept(&l).await.unwrap_err(),
            lp2.sock_connect(&unconnected, addr).await.unwrap_err(),
        ];
        (errs, ours)
    });
    let (errs, mut ours) = errors;
    for e in &errs {
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("must be non-blocking"), "{e}");
    }
    // Nothing was consumed.
    let mut buf = [0u8; 4];
    ours.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"keep");
    lp.close().unwrap();
}

#[test]
fn a_cancelled_recv_unregisters_at_once_and_a_retry_gets_the_data() {
    let lp = new_loop();
    let (ours, mut theirs) = tcp_pair();
    let lp2 = lp.clone();
    let got = run(&lp, async move {
        let mut buf = [0u8; 16];
        {
            // A pending receive waits through a reader on the loop.
            let mut pending = pin!(lp2.sock_recv_into(&ours, &mut buf));
            assert!(poll_once(pending.as_mut()).await.is_none(), "no data yet");
            assert!(
                lp2.remove_reader(ours.as_raw_fd()).unwrap(),
                "a reader is registered while it waits"
            );
        }
        {
            let mut pending = pin!(lp2.sock_recv_into(&ours, &mut buf));
            assert!(poll_once(pending.as_mut()).await.is_none(), "no data yet");
        } // Dropped here: cancelled.
        assert!(
            !lp2.remove_reader(ours.as_raw_fd()).unwrap(),
            "dropping the future removed its reader synchronously"
        );
        // Retry at once on the same socket.
        theirs.write_all(b"after cancel").unwrap();
        let n = lp2.sock_recv_into(&ours, &mut buf).await.unwrap();
        buf[..n].to_vec()
    });
    assert_eq!(got, b"after cancel");
    lp.close().unwrap();
}

#[test]
fn a_displaced_wait_fails_instead_of_hanging_and_does_not_unregister_the_newer_one() {
    let lp = new_loop();
    let (ours, mut theirs) = tcp_pair();
    let lp2 = lp.clone();
    let (busy, dropped_case, awaited_case) = run(&lp, async move {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        // Dropping a displaced wait leaves the newer one registered.
        let mut first = Box::pin(lp2.sock_recv_into(&ours, &mut a));
        assert!(poll_once(first.as_mut()).await.is_none());
        let mut second = Box::pin(lp2.sock_recv_into(&ours, &mut b));
        assert!(poll_once(second.as_mut()).await.is_none());
        drop(first);
        theirs.write_all(b"one").unwrap();
        let n = second.await.unwrap();
        let dropped_case = b[..n].to_vec();
        // Polling a displaced wait fails with ResourceBusy, and finishing it
        // leaves the newer one registered too.
        let mut first = Box::pin(lp2.sock_recv_into(&ours, &mut a));
        assert!(poll_once(first.as_mut()).await.is_none());
        let mut second = Box::pin(lp2.sock_recv_into(&ours, &mut b));
        assert!(poll_once(second.as_mut()).await.is_none());
        let busy = first.await.unwrap_err();
        theirs.write_all(b"two").unwrap();
        let n = second.await.unwrap();
        (busy, dropped_case, b[..n].to_vec())
    });
    assert_eq!(busy.kind(), io::ErrorKind::ResourceBusy, "{busy}");
    assert_eq!(dropped_case, b"one");
    assert_eq!(awaited_case, b"two");
    lp.close().unwrap();
}

#[test]
fn a_cancelled_sendall_unregisters_its_writer() {
    let lp = new_loop();
    let (ours, theirs) = tcp_pair();
    rustix::net::sockopt::set_socket_send_buffer_size(&ours, 4096).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&theirs, 4096).unwrap();
    let lp2 = lp.clone();
    run(&lp, async move {
        let big = vec![1u8; 4 << 20];
        {
            let mut pending = pin!(lp2.sock_sendall(&ours, &big));
            // Nobody reads: it fills the buffers and waits for writability.
            assert!(poll_once(pending.as_mut()).await.is_none());
        }
        assert!(
            !lp2.remove_writer(ours.as_raw_fd()).unwrap(),
            "dropping the future removed its writer synchronously"
        );
        drop(theirs);
    });
    lp.close().unwrap();
}

#[test]
fn udp_sendto_and_recvfrom() {
    let lp = new_loop();
    for host in ["127.0.0.1:0", "[::1]:0"] {
        let a = UdpSocket::bind(host).unwrap();
        let b = UdpSocket::bind(host).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let lp2 = lp.clone();
        let (one, two, three) = run(&lp, async move {
            // b waits first; a sends afterwards.
            let mut recv = pin!(lp2.sock_recvfrom(&b, 64));
            assert!(poll_once(recv.as_mut()).await.is_none());
            assert_eq!(lp2.sock_sendto(&a, b"datagram", b_addr).await.unwrap(), 8);
            let one = recv.await.unwrap();
            // A longer datagram than the buffer: the rest is discarded.
            lp2.sock_sendto(&a, b"0123456789", b_addr).await.unwrap();
            lp2.sock_sendto(&a, b"next", b_addr).await.unwrap();
            let mut small = [0u8; 4];
            let (n, from) = lp2.sock_recvfrom_into(&b, &mut small).await.unwrap();
            let two = (small[..n].to_vec(), from);
            let three = lp2.sock_recvfrom(&b, 64).await.unwrap();
            // A zero-size receive still takes the datagram off the queue.
            lp2.sock_sendto(&a, b"dropped", b_addr).await.unwrap();
            lp2.sock_sendto(&a, b"kept", b_addr).await.unwrap();
            let (empty, from) = lp2.sock_recvfrom(&b, 0).await.unwrap();
            assert!(empty.is_empty());
            assert_eq!(from, Some(SockAddr::Inet(a_addr)));
            assert_eq!(lp2.sock_recvfrom(&b, 64).await.unwrap().0, b"kept");
            (one, two, three)
        });
        let from_a = Some(SockAddr::Inet(a_addr));
        assert_eq!(one, (b"datagram".to_vec(), from_a.clone()));
        assert_eq!(two, (b"0123".to_vec(), from_a.clone()));
        assert_eq!(three, (b"next".to_vec(), from_a));
    }
    lp.close().unwrap();
}

#[test]
fn unix_stream_sockets_work_too() {
    let lp = new_loop();
    let path = std::env::temp_dir().join(format!("aioloop-sock-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    let client = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK,
        None,
    )
    .unwrap();
    let (lp2, p) = (lp.clone(), path.clone());
    let (peer, got) = run(&lp, async move {
        lp2.sock_connect(&client, p.as_path()).await.unwrap();
        let (conn, peer) = lp2.sock_accept(&l).await.unwrap();
        let conn = UnixStream::from(conn);
        lp2.sock_sendall(&client, b"over unix").await.unwrap();
        (peer, lp2.sock_recv(&conn, 64).await.unwrap())
    });
    assert_eq!(
        peer,
        SockAddr::Unix(PathBuf::new()),
        "the client is unnamed"
    );
    assert_eq!(got, b"over unix");
    std::fs::remove_file(&path).unwrap();
    lp.close().unwrap();
}

/// A file with `len` known bytes, removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
    data: Vec<u8>,
}

impl TempFile {
    fn new(tag: &str, len: usize) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("aioloop-sendfile-{}-{tag}", std::process::id()));
        let data = pattern(len, tag.len());
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        TempFile { path, file, data }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads everything the peer end receives until end of stream, on a thread.
fn drain(mut theirs: TcpStream) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        got
    })
}

#[test]
fn sendfile_sends_the_asked_range() {
    let lp = new_loop();
    let tmp = Rc::new(TempFile::new("range", 3 * 1024 * 1024 + 123));
    for (offset, count) in [
        (1000u64, Some(2 * 1024 * 1024 + 7)),
        (0, None),
        (5, Some(10)),
        (3 * 1024 * 1024, Some(1 << 30)),
        (1 << 40, None),
    ] {
        let (ours, theirs) = tcp_pair();
        // Smaller than the file: sendfile has to wait for writability.
        rustix::net::sockopt::set_socket_send_buffer_size(&ours, 128 * 1024).unwrap();
        let reader = drain(theirs);
        let (lp2, t) = (lp.clone(), tmp.clone());
        let sent = run(&lp, async move {
            let sent = lp2
                .sock_sendfile(&ours, &t.file, offset, count, false)
                .await;
            ours.shutdown(std::net::Shutdown::Write).unwrap();
            sent
        })
        .unwrap();
        let len = tmp.data.len() as u64;
        let start = offset.min(len);
        let end = count.map_or(len, |c| (offset + c).min(len));
        let expected = &tmp.data[start as usize..end as usize];
        assert_eq!(
            sent,
            expected.len() as u64,
            "offset {offset} count {count:?}"
        );
        let got = reader.join().unwrap();
        assert!(
            got == expected,
            "offset {offset} count {count:?}: bytes differ"
        );
        // As in asyncio, the file position ends after what was sent.
        if sent > 0 {
            let pos = (&tmp.file).stream_position().unwrap();
            assert_eq!(pos, offset + sent);
        }
    }
    lp.close().unwrap();
}

#[test]
fn sendfile_falls_back_for_what_sendfile_cannot_read() {
    // A pipe is no regular file: the native path is unavailable.
    let lp = new_loop();
    let data = pattern(600 * 1024, 3);
    // fallback = false: a typed error, and nothing sent.
    let (rx, _tx) = rustix::pipe::pipe().unwrap();
    let (ours, theirs) = tcp_pair();
    let reader = drain(theirs);
    let lp2 = lp.clone();
    let err = run(&lp, async move {
        let r = lp2.sock_sendfile(&ours, &rx, 0, None, false).await;
        drop(ours);
        r
    })
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    let na = SendfileNotAvailableError::from_io(&err).expect("SendfileNotAvailableError");
    assert!(na.reason().contains("not a regular file"), "{na}");
    assert!(reader.join().unwrap().is_empty(), "nothing was sent");

    // fallback = true: read and send, up to `count` and up to end of file.
    for count in [Some(500 * 1024 + 1), None] {
        let (rx, tx) = rustix::pipe::pipe().unwrap();
        let to_write = data.clone();
        let writer = thread::spawn(move || {
            let mut tx = File::from(tx);
            // The reader may stop early (count): ignore EPIPE then.
            let _ = tx.write_all(&to_write);
        });
        let (ours, theirs) = tcp_pair();
        let reader = drain(theirs);
        let lp2 = lp.clone();
        let sent = run(&lp, async move {
            let sent = lp2.sock_sendfile(&ours, &rx, 0, count, true).await;
            drop(ours);
            drop(rx);
            sent
        })
        .unwrap();
        writer.join().unwrap();
        let expected = &data[..count.map_or(data.len(), |c| c as usize)];
        assert_eq!(sent, expected.len() as u64);
        assert!(
            reader.join().unwrap() == expected,
            "count {count:?}: bytes differ"
        );
    }
    lp.close().unwrap();
}

#[test]
fn sendfile_checks_its_arguments() {
    let lp = new_loop();
    let tmp = Rc::new(TempFile::new("args", 100));
    let (ours, _theirs) = tcp_pair();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let (lp2, t) = (lp.clone(), tmp.clone());
    let (zero, dgram) = run(&lp, async move {
        let zero = lp2.sock_sendfile(&ours, &t.file, 0, Some(0), true).await;
        let dgram = lp2.sock_sendfile(&udp, &t.file, 0, None, true).await;
        (zero.unwrap_err(), dgram.unwrap_err())
    });
    assert_eq!(zero.kind(), io::ErrorKind::InvalidInput, "{zero}");
    assert_eq!(dgram.kind(), io::ErrorKind::InvalidInput, "{dgram}");
    assert!(dgram.to_string().contains("SOCK_STREAM"), "{dgram}");
    lp.close().unwrap();
}

#[test]
fn a_closed_loop_refuses_socket_operations() {
    let lp = new_loop();
    let (ours, _theirs) = tcp_pair();
    lp.close().unwrap();
    let err = futures_lite::future::block_on(lp.sock_recv(&ours, 4)).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<LoopError>());
    assert_eq!(
        inner.map(LoopError::kind),
        Some(ErrorKind::Closed),
        "{err:?}"
    );
}

#[test]
fn an_always_ready_stream_does_not_starve_a_timer() {
    // A socket at end of stream is readable forever: a (buggy) loop on it
    // never waits. The 10 ms timer must still fire on time.
    let lp = new_loop();
    let (ours, theirs) = tcp_pair();
    theirs.shutdown(std::net::Shutdown::Write).unwrap();
    let stop = Rc::new(Cell::new(false));
    let spins = Rc::new(Cell::new(0u64));
    let (lp2, st, sp) = (lp.clone(), stop.clone(), spins.clone());
    let spinner = lp
        .create_task(async move {
            let mut buf = [0u8; 16];
            // Bounded even if the timer never gets to run (a starved loop
            // cannot be stopped by the watchdog).
            let started = Instant::now();
            while !st.get() && started.elapsed() < Duration::from_secs(5) {
                assert_eq!(lp2.sock_recv_into(&ours, &mut buf).await.unwrap(), 0);
                sp.set(sp.get() + 1);
            }
        })
        .unwrap();
    let when = lp.time() + Duration::from_millis(10);
    let fired = Rc::new(Cell::new(None));
    let (f, st) = (fired.clone(), stop.clone());
    lp.call_at(when, move || {
        f.set(Some(Instant::now()));
        st.set(true);
    })
    .unwrap();
    run(&lp, spinner).unwrap();
    let late = fired.get().expect("the timer fired") - when;
    // Starved, it would run only when the 5 s flood ends; the bound is
    // generous for a loaded machine.
    assert!(late < Duration::from_secs(2), "the timer was {late:?} late");
    assert!(
        spins.get() > 64,
        "the socket was always ready ({} receives)",
        spins.get()
    );
    drop(theirs);
    lp.close().unwrap();
}

#[test]
fn a_flooded_udp_socket_does_not_starve_a_timer() {
    let lp = new_loop();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let target = rx.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (primed_tx, primed) = mpsc::channel();
    let s = stop.clone();
    let flooder = thread::spawn(move || {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        // Bounded: until told to stop, at most 10 s.
        while !s.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
            let _ = tx.send_to(&[7u8; 32], target);
            sent += 1;
            if sent == 500 {
                primed_tx.send(()).unwrap();
            }
        }
        sent
    });
    primed.recv_timeout(LIMIT).expect("the flood started");

    let done = Rc::new(Cell::new(false));
    let received = Rc::new(Cell::new(0u64));
    let rx = Rc::new(rx);
    let (lp2, d, r, sock) = (lp.clone(), done.clone(), received.clone(), rx.clone());
    let receiver = lp
        .create_task(async move {
            let mut buf = [0u8; 64];
            let started = Instant::now();
            while !d.get() && started.elapsed() < Duration::from_secs(5) {
                let (n, _) = lp2.sock_recvfrom_into(&*sock, &mut buf).await.unwrap();
                assert_eq!(n, 32);
                r.set(r.get() + 1);
                // Much slower than the flooder, so the socket stays ready:
                // the ~280 datagrams its buffer holds last ~28 ms here even
                // if the flooder thread is not scheduled meanwhile.
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(100) {
                    std::hint::spin_loop();
                }
            }
        })
        .unwrap();
    let when = lp.time() + Duration::from_millis(10);
    let fired = Rc::new(Cell::new(None));
    let ready_when_fired = Rc::new(Cell::new(false));
    let (f, d, rw, sock) = (
        fired.clone(),
        done.clone(),
        ready_when_fired.clone(),
        rx.clone(),
    );
    lp.call_at(when, move || {
        f.set(Some(Instant::now()));
        let mut peek = [0u8; 1];
        rw.set(
            rustix::net::recv(&*sock, &mut peek[..], RecvFlags::PEEK | RecvFlags::DONTWAIT).is_ok(),
        );
        d.set(true);
    })
    .unwrap();
    run(&lp, receiver).unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    let late = fired.get().expect("the timer fired") - when;
    // Starved, it would run only when the 5 s flood ends; the bound is
    // generous for a loaded machine.
    assert!(late < Duration::from_secs(2), "the timer was {late:?} late");
    assert!(received.get() > 0 && sent > received.get());
    assert!(
        ready_when_fired.get(),
        "the socket was still flooded when the timer ran"
    );
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// LESSONS 23 (docs/LESSONS.md): accept, connect and recvfrom too

/// LESSONS 23, for the other waits (CPython fixed `sock_recv` and
/// `sock_sendall` first, `sock_accept` and `sock_connect` later): a pending
/// `sock_accept`, `sock_connect` or `sock_recvfrom` that is dropped removes
/// its reader or writer at once, and a retry right after works. The
/// cancelled connect's socket is closed at once too (the close-before-
/// unregister variant): the next socket, which usually gets the same fd
/// number, connects through the loop.
#[test]
fn cancelled_accept_connect_and_recvfrom_unregister_at_once_and_a_retry_works() {
    let lp = new_loop();
    let (l, addr) = listener("127.0.0.1:0");
    let (_hole, _fillers, hole) = crate::net_util::black_hole("127.0.0.1:0".parse().unwrap());
    let lp2 = lp.clone();
    let got = run(&lp, async move {
        // sock_accept.
        {
            let mut pending = pin!(lp2.sock_accept(&l));
            assert!(
                poll_once(pending.as_mut()).await.is_none(),
                "nobody connects yet"
            );
        }
        assert!(
            !lp2.remove_reader(l.as_raw_fd()).unwrap(),
            "the dropped accept left its reader"
        );
        let _client = TcpStream::connect(addr).unwrap();
        let (_conn, _) = lp2.sock_accept(&l).await.unwrap();

        // sock_connect, to an address that never answers.
        let s = tcp_socket(AddressFamily::INET);
        let raw = s.as_raw_fd();
        {
            let mut pending = pin!(lp2.sock_connect(&s, hole));
            assert!(
                poll_once(pending.as_mut()).await.is_none(),
                "still connecting"
            );
        }
        assert!(
            !lp2.remove_writer(raw).unwrap(),
            "the dropped connect left its writer"
        );
        drop(s);
        let s = tcp_socket(AddressFamily::INET);
        lp2.sock_connect(&s, addr).await.unwrap();
        let (_conn, _) = lp2.sock_accept(&l).await.unwrap();

        // sock_recvfrom.
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_nonblocking(true).unwrap();
        let to = u.local_addr().unwrap();
        {
            let mut pending = pin!(lp2.sock_recvfrom(&u, 64));
            assert!(
                poll_once(pending.as_mut()).await.is_none(),
                "nothing sent yet"
            );
        }
        assert!(
            !lp2.remove_reader(u.as_raw_fd()).unwrap(),
            "the dropped recvfrom left its reader"
        );
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"after cancel", to).unwrap();
        let (data, _) = lp2.sock_recvfrom(&u, 64).await.unwrap();
        data
    });
    assert_eq!(got, b"after cancel");
    lp.close().unwrap();
}
