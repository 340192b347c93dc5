//! The socket stream transport on io_uring's completion path (issue 14):
//! every test builds its loop with `Backend::Uring` itself, so it runs the
//! path in every CI configuration, and says so and returns where the
//! kernel refuses io_uring (the loop then runs epoll). Real loopback peers:
//! - the writes of one iteration leave in order (coalesced into one send);
//! - a 16 MiB echo through a slow reader: `pause_writing`/`resume_writing`
//!   on the sending side, `pause_reading`/`resume_reading` on the echoing
//!   side, every byte in order;
//! - `pause_reading` while bytes keep coming: no `data_received` while
//!   paused, nothing lost after `resume_reading`;
//! - `write_eof`, then the peer's EOF; `close` with unsent bytes (all of
//!   them arrive, then EOF); `abort` with a send in flight (the peer sees
//!   the end at once); a peer reset in the middle of a send;
//! - a 64 KiB x 10 echo, and a `BufferedProtocol` fed across small buffers.
#![cfg(feature = "net")]

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;

/// A transport to a std peer (not reading yet), after connection_made.
async fn connect_to_std(lp: &EventLoop, hooks: Hooks) -> (Transport, Rc<Recorder>, TcpStream) {
    let (t, rec, theirs) = connect_to_std_peer(lp, hooks).await;
    let fd = t.fd().expect("a socket");
    assert!(
        t.is_reading() && !lp.has_reader(fd),
        "the transport reads through readiness, not by completion"
    );
    (t, rec, theirs)
}

/// The bytes written from inside `data_received`, in an iteration that
/// delivers the data of two connections at once, wait for the next
/// submission and leave in one send per connection, in order.
#[test]
fn the_writes_of_one_iteration_arrive_in_order() {
    on_uring_loop(|l| async move {
        let sent = Rc::new(std::cell::RefCell::new(Vec::new()));
        let buffered_after = Rc::new(std::cell::RefCell::new(Vec::new()));
        let hooks = || {
            let s2 = sent.clone();
            let b2 = buffered_after.clone();
            Hooks::none().on_data(move |t, _, _| {
                let mut bytes = Vec::new();
                for i in 0..1000 {
                    let chunk = pattern(1 + i % 97, i);
                    if i % 3 == 0 {
                        t.writelines(&[&chunk[..1], &chunk[1..]]).unwrap();
                    } else {
                        t.write(&chunk).unwrap();
                    }
                    bytes.extend_from_slice(&chunk);
                }
                b2.borrow_mut()
                    .push((t.get_write_buffer_size(), bytes.len()));
                *s2.borrow_mut() = bytes;
            })
        };
        let (t1, rec1, mut theirs1) = connect_to_std(&l, hooks()).await;
        let (t2, rec2, mut theirs2) = connect_to_std(&l, hooks()).await;
        // Both peers' bytes are in the sockets before the loop polls again:
        // one poll finds both.
        theirs1.write_all(b"go").unwrap();
        theirs2.write_all(b"go").unwrap();
        rec1.until_data(2).await;
        rec2.until_data(2).await;
        let sent = sent.borrow().clone();
        // Nothing went out from inside the callbacks: the bytes waited for
        // the next submission, counted as buffered until the kernel took
        // them.
        for &(buffered, total) in buffered_after.borrow().iter() {
            assert_eq!(buffered, total, "a write inside the batch went out at once");
        }
        let n = sent.len();
        let readers: Vec<_> = [theirs1, theirs2]
            .into_iter()
            .map(|theirs| {
                peer(theirs, move |mut s| {
                    let mut got = vec![0u8; n];
                    s.read_exact(&mut got).unwrap();
                    got
                })
            })
            .collect();
        while t1.get_write_buffer_size() + t2.get_write_buffer_size() > 0 {
            iterations(1).await;
        }
        for r in readers {
            let got = r.join().unwrap();
            assert!(got == sent, "the bytes arrived out of order");
        }
        for (t, rec) in [(t1, rec1), (t2, rec2)] {
            t.close();
            rec.until_lost().await;
            rec.assert_clean_life();
        }
    });
}

#[test]
fn sixteen_mib_through_a_slow_reader_pauses_and_resumes_both_sides() {
    const TOTAL: usize = 16 << 20;
    const CHUNK: usize = 64 * 1024;
    on_uring_loop(|l| async move {
        // The echoing side (aioloop on the completion path) pauses reading
        // while its writing is paused.
        let (go, wait) = mpsc::channel::<()>();
        let go = Cell::new(Some(go));
        let server_rec = Recorder::new();
        let sr = server_rec.clone();
        let hooks = Hooks::echo_paced().on_pause(move |t, _| {
            t.pause_reading();
            if let Some(go) = go.take() {
                let _ = go.send(());
            }
        });
        let hooks = Cell::new(Some(hooks));
        let server = l
            .create_server(
                move || RecordingProtocol::new(&sr, hooks.take().expect("one connection")),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        // The sending side: a std client whose reader waits until the echo
        // side paused, then reads (in small pieces).
        let data = pattern(TOTAL, 7);
        let expect = data.clone();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        bounded(&client);
        let mut writer = client.try_clone().unwrap();
        let w = std::thread::spawn(move || writer.write_all(&data).unwrap());
        let mut reader = client;
        let r = std::thread::spawn(move || {
            let _ = wait.recv_timeout(LIMIT);
            let mut got = vec![0u8; TOTAL];
            let mut at = 0;
            while at < TOTAL {
                let end = (at + CHUNK / 4).min(TOTAL);
                let n = reader.read(&mut got[at..end]).unwrap();
                assert!(n > 0, "EOF after {at} bytes");
                at += n;
            }
            got
        });
        server_rec.until_data(TOTAL).await;
        let got = r.join().unwrap();
        w.join().unwrap();
        assert!(got == expect, "the echo differs");
        let pauses = server_rec.count(&Ev::Pause);
        assert!(pauses >= 1, "pause_writing never came");
        assert_eq!(server_rec.count(&Ev::Resume), pauses, "every pause resumed");
        let t = server_rec.transport();
        assert!(
            !l.has_reader(t.fd().expect("a socket")),
            "the echoing transport reads through readiness"
        );
        let (low, high) = t.get_write_buffer_limits();
        assert!(server_rec.pause_sizes.borrow().iter().all(|&n| n > high));
        assert!(server_rec.resume_sizes.borrow().iter().all(|&n| n <= low));
        server.close();
        t.close();
        server_rec.until_lost().await;
    });
}

#[test]
fn pause_reading_while_bytes_keep_coming_delivers_nothing_until_resumed() {
    const TOTAL: usize = 4 << 20;
    on_uring_loop(|l| async move {
        let paused_at = Rc::new(Cell::new(None::<usize>));
        let p = paused_at.clone();
        let hooks = Hooks::none().on_data(move |t, rec, _| {
            if p.get().is_none() {
                t.pause_reading();
                p.set(Some(rec.data_len()));
            }
        });
        let (t, rec, theirs) = connect_to_std(&l, hooks).await;
        let data = pattern(TOTAL, 3);
        let expect = data.clone();
        let (wrote_tx, wrote) = mpsc::channel::<usize>();
        let writer = peer(theirs, move |mut s| {
            // Small writes, so that many arrive after the pause.
            let mut n = 0;
            for c in data.chunks(4096) {
                match s.write_all(c) {
                    Ok(()) => n += c.len(),
                    Err(_) => break,
                }
                let _ = wrote_tx.send(n);
            }
            s
        });
        rec.until_data(1).await;
        let at_pause = paused_at.get().expect("paused in the first data_received");
        assert!(!t.is_reading());
        // Let the peer write 256 KiB more while the loop turns (bounded).
        let mut written = 0;
        let start = std::time::Instant::now();
        while written < at_pause + (256 << 10) {
            assert!(start.elapsed() < LIMIT, "the peer stopped writing");
            iterations(1).await;
            while let Ok(n) = wrote.try_recv() {
                written = n;
            }
            assert_eq!(rec.data_len(), at_pause, "data_received while paused");
        }
        iterations(20).await;
        assert_eq!(rec.data_len(), at_pause, "data_received while paused");
        t.resume_reading();
        rec.until_data(TOTAL).await;
        let s = writer.join().unwrap();
        assert!(rec.bytes() == expect, "bytes lost or reordered");
        drop(s);
        rec.until_lost().await;
        rec.assert_clean_life();
    });
}

#[test]
fn write_eof_then_the_peers_eof_is_read() {
    on_uring_loop(|l| async move {
        let (t, rec, theirs) = connect_to_std(&l, Hooks::keep_open()).await;
        t.write(b"hello").unwrap();
        t.write_eof().unwrap();
        assert!(t.write(b"more").is_err(), "write after write_eof");
        let other = peer(theirs, |mut s| {
            let (got, err) = read_to_end_or_reset(&mut s);
            assert_eq!(err, None);
            s.write_all(b"bye").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            (got, s)
        });
        rec.until(|r| r.saw_eof()).await;
        let (got, s) = other.join().unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(rec.bytes(), b"bye");
        t.close();
        rec.until_lost().await;
        drop(s);
        rec.assert_clean_life();
    });
}

/// A transport whose peer does not read, with megabytes sent or buffered.
async fn stuffed(l: &EventLoop, hooks: Hooks) -> (Transport, Rc<Recorder>, TcpStream, Vec<u8>) {
    let (t, rec, theirs) = connect_to_std(l, hooks).await;
    small_send_buffer(&t);
    let data = pattern(4 << 20, 11);
    t.write(&data).unwrap();
    // Wait until the kernel took some (a send is in flight for the rest).
    while t.get_write_buffer_size() == data.len() {
        iterations(1).await;
    }
    assert!(t.get_write_buffer_size() > 0, "the peer took 4 MiB unread");
    (t, rec, theirs, data)
}

#[test]
fn close_with_unsent_bytes_sends_them_all_then_eof() {
    on_uring_loop(|l| async move {
        let (t, rec, theirs, data) = stuffed(&l, Hooks::none()).await;
        t.close();
        assert!(t.is_closing());
        let reader = peer(theirs, |mut s| read_to_end_or_reset(&mut s));
        rec.until_lost().await;
        let (got, err) = reader.join().unwrap();
        assert_eq!(err, None);
        assert!(got == data, "not every byte arrived");
        assert_eq!(rec.lost_outcome(), Some(None));
        rec.assert_clean_life();
    });
}

#[test]
fn abort_with_a_send_in_flight_ends_the_connection_at_once() {
    on_uring_loop(|l| async move {
        let (t, rec, theirs, data) = stuffed(&l, Hooks::none()).await;
        t.abort();
        rec.until_lost().await;
        assert_eq!(rec.lost_outcome(), Some(None));
        assert!(t.get_write_buffer_size() == 0);
        // The socket is closed: the peer reads what had arrived, then the
        // end (EOF or reset), without waiting for anything.
        let reader = peer(theirs, |mut s| read_to_end_or_reset(&mut s));
        let (got, _) = reader.join().unwrap();
        assert!(got.len() < data.len(), "everything went out after abort");
        assert!(got == data[..got.len()], "the bytes that arrived differ");
        rec.assert_clean_life();
    });
}

#[test]
fn a_peer_reset_in_the_middle_of_a_send_loses_the_connection_with_the_error() {
    on_uring_loop(|l| async move {
        let (t, rec, theirs, _) = stuffed(&l, Hooks::none()).await;
        set_linger_zero(&theirs);
        drop(theirs);
        rec.until_lost().await;
        let kind = rec.lost_kind().expect("connection_lost with an error");
        assert!(
            matches!(
                kind,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{kind:?}"
        );
        assert_eq!(rec.lost.get(), 1);
        drop(t);
    });
}

#[test]
fn an_echo_of_64_kib_messages_on_ten_connections_is_byte_exact() {
    const CONNS: usize = 10;
    const MSG: usize = 64 * 1024;
    const ROUNDS: usize = 20;
    on_uring_loop(|l| async move {
        let accepted = Accepted::new();
        let server = l
            .create_server(
                accepted.factory(Hooks::echo),
                &["127.0.0.1"],
                0,
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let port = server.sockets()[0].as_inet().unwrap().port();
        let clients: Vec<_> = (0..CONNS)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    bounded(&s);
                    for round in 0..ROUNDS {
                        let msg = pattern(MSG, c * 1000 + round);
                        s.write_all(&msg).unwrap();
                        let mut back = vec![0u8; MSG];
                        s.read_exact(&mut back).unwrap();
                        assert!(back == msg, "connection {c} round {round} differs");
                    }
                })
            })
            .collect();
        accepted.until_made(CONNS).await;
        for rec in accepted.all() {
            let fd = rec.transport().fd().expect("a socket");
            assert!(
                !l.has_reader(fd),
                "an accepted transport reads through readiness"
            );
        }
        // The loop serves while the clients run; join them off the loop.
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let ok = clients.into_iter().all(|c| c.join().is_ok());
            let _ = done_tx.send(ok);
        });
        let ok = loop {
            if let Ok(ok) = done.try_recv() {
                break ok;
            }
            l.sleep(std::time::Duration::from_millis(1)).await.unwrap();
        };
        assert!(ok, "a client failed");
        server.close();
        accepted.until_all_lost(CONNS).await;
    });
}

#[test]
fn a_buffered_protocol_gets_the_bytes_across_small_buffers() {
    const TOTAL: usize = 1 << 20;
    on_uring_loop(|l| async move {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let rec = Recorder::new();
        let r = rec.clone();
        let (t, _h) = l
            .connect_accepted_socket(
                move || aioloop::Buffered(RecordingBuffered::new(&r, Hooks::none(), 1000)),
                std::os::fd::OwnedFd::from(ours),
            )
            .await
            .unwrap();
        let fd = t.fd().expect("a socket");
        assert!(!l.has_reader(fd), "the transport reads through readiness");
        let data = pattern(TOTAL, 5);
        let expect = data.clone();
        let writer = std::thread::spawn(move || {
            let mut s = theirs;
            s.write_all(&data).unwrap();
            s
        });
        rec.until_data(TOTAL).await;
        assert!(rec.bytes() == expect);
        drop(writer.join().unwrap());
        rec.until_lost().await;
        drop(t);
    });
}
