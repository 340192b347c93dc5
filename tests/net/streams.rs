//! asyncio's high-level streams (`StreamReader`, `StreamWriter`,
//! `FlowControl`, `StreamReaderProtocol`, `open_connection`, `start_server`
//! and the Unix forms) and their `futures-io` side (`StreamPair`), on real
//! loopback sockets and pipes: echoes over TCP and Unix, asyncio's exact
//! `readline` / `readuntil` / `readexactly` / `read` semantics (including
//! `IncompleteReadError` and `LimitOverrunError`), EOF and half-close,
//! `set_exception`, the one-waiter rule, reader backpressure
//! (`pause_reading` past twice the limit), `drain` while paused, a Python
//! asyncio client, a WebSocket echo with `async-tungstenite` (a crates.io
//! crate written against `futures-io`) running on aioloop, and a
//! `StreamWriter` over a pipe transport fed by a protocol of its own.
//!
//! No test sleeps to synchronise: waits are on events, loop iterations, or a
//! peer thread's channel; every test runs under a watchdog.
#![cfg(feature = "net")]

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use aioloop::{ClientTaskOutput, IncompleteReadError, StreamReaderProtocol};
use futures_lite::future::{block_on, poll_once};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::StreamExt;

/// Runs `test` on a new loop under the watchdog, then checks that the
/// exception handler saw nothing and closes the loop.
fn on_loop<F: Future<Output = ()> + 'static>(test: impl FnOnce(EventLoop) -> F) {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    run(&lp, test(lp.clone()));
    finish(&lp, &seen);
}

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_inet().unwrap().port()
}

/// A stream server on an ephemeral port of 127.0.0.1 with default options.
async fn serve<C, Fut>(l: &EventLoop, client_connected: C) -> Server
where
    C: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: ClientTaskOutput,
{
    l.start_server(
        client_connected,
        &["127.0.0.1"],
        0,
        ServerOptions::default(),
    )
    .await
    .unwrap()
}

/// A connection to `server` (of [`serve`]) through `open_connection`.
async fn open(l: &EventLoop, server: &Server) -> (StreamReader, StreamWriter) {
    l.open_connection("127.0.0.1", port_of(server))
        .await
        .unwrap()
}

/// A connection to `listener` (a plain socket of this thread) with a reader
/// of `limit`: the reader, the writer and the peer's end.
async fn connect_to(
    l: &EventLoop,
    listener: &TcpListener,
    limit: usize,
) -> (StreamReader, StreamWriter, TcpStream) {
    let port = listener.local_addr().unwrap().port();
    let (r, w) = l
        .open_connection_with(Some("127.0.0.1"), port, ConnectOptions::default(), limit)
        .await
        .unwrap();
    let (theirs, _) = listener.accept().unwrap();
    (r, w, theirs)
}

/// [`connect_to`] a new listener.
async fn connected(l: &EventLoop, limit: usize) -> (StreamReader, StreamWriter, TcpStream) {
    let (listener, _) = std_listener("127.0.0.1:0");
    connect_to(l, &listener, limit).await
}

/// The echo handler of the servers below: read, write, drain until EOF,
/// then close and wait for the close.
async fn echo(r: StreamReader, w: StreamWriter) -> io::Result<()> {
    loop {
        let data = r.read(65536).await?;
        if data.is_empty() {
            break;
        }
        w.write(&data)?;
        w.drain().await?;
    }
    w.close();
    w.wait_closed().await
}

/// Writes `data` in chunks with a drain after each, then `write_eof`, on a
/// task, while this task reads until EOF; returns what came back.
async fn echo_through(lp: &EventLoop, r: StreamReader, w: StreamWriter, data: Vec<u8>) -> Vec<u8> {
    let sender = lp
        .create_task(async move {
            for chunk in data.chunks(50_000 + 7) {
                w.write(chunk)?;
                w.drain().await?;
            }
            w.write_eof()?;
            Ok::<_, io::Error>(w)
        })
        .unwrap();
    let got = r.read_to_end().await.unwrap();
    let w = sender.await.unwrap().unwrap();
    assert!(r.at_eof());
    w.close();
    w.wait_closed().await.unwrap();
    got
}

#[test]
fn tcp_echo_over_open_connection_and_start_server() {
    on_loop(|l| async move {
        let server = serve(&l, echo).await;
        let (r, w) = open(&l, &server).await;
        assert!(matches!(
            w.get_extra_info("peername"),
            Some(ExtraInfo::Addr(_))
        ));
        assert!(w.can_write_eof());
        let data = pattern(1 << 20, 1);
        let got = echo_through(&l, r, w, data.clone()).await;
        assert!(
            got == data,
            "echo differs: {} bytes of {}",
            got.len(),
            data.len()
        );
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn unix_echo_over_open_unix_connection_and_start_unix_server() {
    let tmp = TempPath::new("streams");
    let path = tmp.0.clone();
    on_loop(|l| async move {
        let server = l
            .start_unix_server(echo, &path, ServerOptions::default(), DEFAULT_LIMIT)
            .await
            .unwrap();
        let (r, w) = l.open_unix_connection(&path, 1000).await.unwrap();
        assert_eq!(r.limit(), 1000);
        let data = pattern(300_000, 2);
        let got = echo_through(&l, r, w, data.clone()).await;
        assert!(got == data);
        server.close();
        server.wait_closed().await;
    });
}

const DEFAULT_LIMIT: usize = aioloop::net::DEFAULT_LIMIT;

/// A reader fed with `chunks`, then EOF.
fn fed(limit: usize, chunks: &[&[u8]]) -> StreamReader {
    let r = StreamReader::with_limit(limit).unwrap();
    for c in chunks {
        r.feed_data(c).unwrap();
    }
    r.feed_eof();
    r
}

/// A reader of `limit` holding `data`, not at EOF.
fn holding(limit: usize, data: &[u8]) -> StreamReader {
    let r = StreamReader::with_limit(limit).unwrap();
    r.feed_data(data).unwrap();
    r
}

/// Asserts that `readuntil(separator)` fails with a `LimitOverrunError` of
/// `consumed` bytes and `message`.
async fn assert_overrun(r: &StreamReader, separator: &[u8], consumed: usize, message: &str) {
    match r.readuntil(separator).await {
        Err(StreamError::LimitOverrun(e)) => {
            assert_eq!((e.consumed, e.message()), (consumed, message));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn readline_returns_lines_then_the_rest_then_empty() {
    let r = fed(DEFAULT_LIMIT, &[b"one\ntw", b"o\n\nthr", b"ee"]);
    block_on(async {
        assert_eq!(r.readline().await.unwrap(), b"one\n");
        assert_eq!(r.readline().await.unwrap(), b"two\n");
        assert_eq!(r.readline().await.unwrap(), b"\n");
        assert!(!r.at_eof());
        assert_eq!(r.readline().await.unwrap(), b"three");
        assert!(r.at_eof());
        assert_eq!(r.readline().await.unwrap(), b"");
    });
}

#[test]
fn readuntil_finds_a_separator_split_across_feeds_and_eof_is_incomplete_read() {
    let r = StreamReader::new();
    block_on(async {
        let read = r.readuntil(b"\r\n\r\n");
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none());
        r.feed_data(b"GET / HTTP/1.1\r\n").unwrap();
        r.feed_data(b"Host: x\r\n\r").unwrap();
        assert!(poll_once(&mut read).await.is_none());
        r.feed_data(b"\nbody").unwrap();
        assert_eq!(read.await.unwrap(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.buffered(), 4);
        // EOF before the separator: IncompleteReadError with the whole
        // buffer (part of the separator included), expected None, and the
        // buffer emptied.
        r.feed_data(b"\r\n").unwrap();
        r.feed_eof();
        match r.readuntil(b"\r\n\r\n").await {
            Err(StreamError::IncompleteRead(e)) => {
                assert_eq!(
                    e,
                    IncompleteReadError {
                        partial: b"body\r\n".to_vec(),
                        expected: None
                    }
                );
                assert_eq!(
                    e.to_string(),
                    "6 bytes read on a total of undefined expected bytes"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(r.at_eof());
    });
}

#[test]
fn readuntil_over_the_limit_is_limit_overrun_and_leaves_the_data() {
    block_on(async {
        // Not found within the limit: consumed = the bytes known not to
        // start the separator (buffer length + 1 - separator length).
        let r = holding(8, b"0123456789ab");
        assert_overrun(
            &r,
            b"--",
            11,
            "Separator is not found, and chunk exceed the limit",
        )
        .await;
        assert_eq!(r.buffered(), 12);
        // Found, but beyond the limit: consumed = where it starts.
        let r = holding(8, b"0123456789\nnext\n");
        assert_overrun(
            &r,
            b"\n",
            10,
            "Separator is found, but chunk is longer than limit",
        )
        .await;
        // The data is still there.
        assert_eq!(r.read(100).await.unwrap(), b"0123456789\nnext\n");
        // Exactly at the limit is fine (the limit does not count the separator).
        let r = holding(8, b"01234567\n");
        assert_eq!(r.readuntil(b"\n").await.unwrap(), b"01234567\n");
        // An empty separator is refused.
        assert!(matches!(
            r.readuntil(b"").await,
            Err(StreamError::InvalidArgument(_))
        ));
        let r = holding(1, b"abc");
        let err: io::Error = r.readuntil(b"\n").await.unwrap_err().into();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    });
}

#[test]
fn readline_over_the_limit_discards_as_asyncio_does() {
    block_on(async {
        // The newline is buffered: the long line goes through its newline,
        // and the next line reads normally.
        let r = holding(4, b"too long line\nok\n");
        match r.readline().await {
            Err(StreamError::LineTooLong(e)) => assert_eq!(e.consumed, 13),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.readline().await.unwrap(), b"ok\n");
        // No newline buffered: the whole buffer goes.
        let r = holding(4, b"0123456789");
        assert!(matches!(
            r.readline().await,
            Err(StreamError::LineTooLong(_))
        ));
        assert_eq!(r.buffered(), 0);
        r.feed_data(b"x\n").unwrap();
        assert_eq!(r.readline().await.unwrap(), b"x\n");
    });
}

#[test]
fn readexactly_reads_n_and_past_eof_is_incomplete_read() {
    let r = fed(4, &[b"abc", b"defgh", b"ij"]);
    block_on(async {
        assert_eq!(r.readexactly(0).await.unwrap(), b"");
        // Not bounded by the limit.
        assert_eq!(r.readexactly(7).await.unwrap(), b"abcdefg");
        match r.readexactly(5).await {
            Err(StreamError::IncompleteRead(e)) => {
                assert_eq!(e.partial, b"hij");
                assert_eq!(e.expected, Some(5));
                assert_eq!(e.to_string(), "3 bytes read on a total of 5 expected bytes");
                let io: io::Error = StreamError::IncompleteRead(e).into();
                assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
            }
            other => panic!("{other:?}"),
        }
        assert!(r.at_eof());
        // Past EOF with nothing left: an empty partial.
        match r.readexactly(1).await {
            Err(StreamError::IncompleteRead(e)) => assert!(e.partial.is_empty()),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn read_returns_what_is_there_up_to_n_and_empty_at_eof() {
    let r = StreamReader::new();
    block_on(async {
        assert_eq!(r.read(0).await.unwrap(), b"");
        let read = r.read(4);
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none());
        r.feed_data(b"ab").unwrap();
        assert_eq!(read.await.unwrap(), b"ab");
        r.feed_data(b"cdefgh").unwrap();
        assert_eq!(r.read(4).await.unwrap(), b"cdef");
        r.feed_eof();
        assert_eq!(r.read(100).await.unwrap(), b"gh");
        assert_eq!(r.read(100).await.unwrap(), b"");
        assert_eq!(r.read_to_end().await.unwrap(), b"");
    });
    // read_to_end collects everything in blocks of the limit.
    let r = fed(3, &[b"0123456789", b"abc"]);
    assert_eq!(block_on(r.read_to_end()).unwrap(), b"0123456789abc");
}

#[test]
fn set_exception_fails_the_waiting_read_and_every_later_one() {
    let r = StreamReader::new();
    block_on(async {
        let read = r.readline();
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none());
        r.feed_data(b"partial").unwrap();
        assert!(poll_once(&mut read).await.is_none());
        r.set_exception(io::Error::from_raw_os_error(
            rustix::io::Errno::CONNRESET.raw_os_error(),
        ));
        match read.await {
            Err(StreamError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
        // Later reads fail with a copy (same errno), buffered bytes or not.
        for _ in 0..2 {
            match r.read(10).await {
                Err(StreamError::Io(e)) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(rustix::io::Errno::CONNRESET.raw_os_error())
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(r.readexactly(1).await.is_err());
        assert!(r.readuntil(b"x").await.is_err());
        assert!(r.read_to_end().await.is_err());
        assert_eq!(
            r.exception().unwrap().kind(),
            io::ErrorKind::ConnectionReset
        );
    });
    // An error without an OS code keeps its kind and message.
    let r = StreamReader::new();
    r.set_exception(io::Error::new(io::ErrorKind::TimedOut, "slow peer"));
    let e = r.exception().unwrap();
    assert_eq!(
        (e.kind(), e.to_string()),
        (io::ErrorKind::TimedOut, "slow peer".to_string())
    );
    // The AsyncRead side fails too.
    let mut handle = r.clone();
    let mut buf = [0u8; 4];
    let e = block_on(AsyncReadExt::read(&mut handle, &mut buf)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn bad_inputs_are_typed_errors() {
    assert!(matches!(
        StreamReader::with_limit(0),
        Err(StreamError::InvalidArgument(_))
    ));
    let r = StreamReader::new();
    r.feed_eof();
    assert!(matches!(
        r.feed_data(b"late"),
        Err(StreamError::InvalidState(_))
    ));
    assert_eq!(r.buffered(), 0);
    r.feed_data(b"").unwrap_err();
    // A second transport is refused.
    on_loop(|l| async move {
        let server = serve(&l, echo).await;
        let (r, w) = open(&l, &server).await;
        assert!(matches!(
            r.set_transport(w.transport().clone()),
            Err(StreamError::InvalidState("Transport already set"))
        ));
        // A zero limit for the high-level functions is InvalidInput.
        let e = l
            .open_connection_with(
                Some("127.0.0.1"),
                port_of(&server),
                ConnectOptions::default(),
                0,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = l
            .start_server_with_limit(echo, &["127.0.0.1"], 0, ServerOptions::default(), 0)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        w.close();
        w.wait_closed().await.unwrap();
        server.close();
    });
}

#[test]
fn a_second_waiting_reader_is_already_waiting_until_the_first_is_done_or_dropped() {
    let r = StreamReader::new();
    block_on(async {
        let first = r.read(10);
        futures_lite::pin!(first);
        assert!(poll_once(&mut first).await.is_none());
        match r.readline().await {
            Err(StreamError::AlreadyWaiting { method }) => assert_eq!(method, "readuntil"),
            other => panic!("{other:?}"),
        }
        let e: io::Error = r.readexactly(3).await.unwrap_err().into();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        // The AsyncRead side of another handle is refused the same way.
        let mut other = r.clone();
        let mut buf = [0u8; 8];
        assert_eq!(
            AsyncReadExt::read(&mut other, &mut buf)
                .await
                .unwrap_err()
                .kind(),
            io::ErrorKind::ResourceBusy
        );
        // Data arrives: the first read gets it.
        r.feed_data(b"hello").unwrap();
        assert_eq!(first.await.unwrap(), b"hello");
    });
    // A dropped waiting read frees the slot.
    block_on(async {
        {
            let dropped = r.read(1);
            futures_lite::pin!(dropped);
            assert!(poll_once(&mut dropped).await.is_none());
        }
        let next = r.read(10);
        futures_lite::pin!(next);
        assert!(poll_once(&mut next).await.is_none());
        r.feed_data(b"x").unwrap();
        assert_eq!(next.await.unwrap(), b"x");
    });
}

#[test]
fn a_dropped_async_read_of_a_handle_does_not_block_that_handle() {
    let r = StreamReader::new();
    let mut h = r.clone();
    block_on(async {
        let mut buf = [0u8; 8];
        // futures-io read, pending, then dropped: its registration stays
        // behind (poll-based reads have no drop hook).
        assert!(poll_once(AsyncReadExt::read(&mut h, &mut buf))
            .await
            .is_none());
        // Another handle is refused while it is there...
        assert!(matches!(
            r.read(1).await,
            Err(StreamError::AlreadyWaiting { .. })
        ));
        // ...but the same handle takes over.
        {
            let next = h.read(8);
            futures_lite::pin!(next);
            assert!(poll_once(&mut next).await.is_none());
            r.feed_data(b"abc").unwrap();
            assert_eq!(next.await.unwrap(), b"abc");
        }
        // Dropping the handle releases a registration it left.
        assert!(poll_once(AsyncReadExt::read(&mut h, &mut buf))
            .await
            .is_none());
        drop(h);
        let read = r.read(8);
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none());
        r.feed_data(b"d").unwrap();
        assert_eq!(read.await.unwrap(), b"d");
    });
}

/// Waits (loop iterations, not time) until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        iterations(1).await;
    }
}

#[test]
fn the_reader_pauses_the_transport_past_twice_the_limit_and_resumes_at_the_limit() {
    const LIM: usize = 4096;
    on_loop(|l| async move {
        let (r, w, theirs) = connected(&l, LIM).await;
        let data = pattern(64 * 1024, 3);
        let sent = data.clone();
        let peer = peer(theirs, move |mut s| {
            s.write_all(&sent).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            read_to_end_or_reset(&mut s)
        });
        let t = r.transport().unwrap();
        assert!(t.ptr_eq(w.transport()));
        assert!(t.is_reading());
        until(|| !t.is_reading()).await;
        // Paused by the reader: more than twice the limit is buffered.
        assert!(r.buffered() > 2 * LIM, "{} buffered", r.buffered());
        // Reads that leave more than the limit keep it paused.
        let mut got = r.read(LIM / 2).await.unwrap();
        if r.buffered() > LIM {
            assert!(!t.is_reading());
        }
        while r.buffered() > LIM {
            got.extend(r.read(LIM / 2).await.unwrap());
        }
        // Down to the limit: resumed.
        assert!(t.is_reading());
        got.extend(r.read_to_end().await.unwrap());
        assert!(got == data);
        w.close();
        w.wait_closed().await.unwrap();
        let (back, _) = peer.join().unwrap();
        assert!(back.is_empty());
    });
}

#[test]
fn readexactly_above_the_limit_resumes_a_paused_transport_instead_of_deadlocking() {
    const LIM: usize = 1024;
    on_loop(|l| async move {
        let (r, w, theirs) = connected(&l, LIM).await;
        let data = pattern(100_000, 4);
        let sent = data.clone();
        let peer = peer(theirs, move |mut s| {
            s.write_all(&sent).unwrap();
            read_to_end_or_reset(&mut s)
        });
        assert_eq!(r.readexactly(100_000).await.unwrap(), data);
        w.close();
        w.wait_closed().await.unwrap();
        peer.join().unwrap();
    });
}

#[test]
fn drain_waits_while_a_peer_does_not_read_and_returns_once_it_does() {
    on_loop(|l| async move {
        let (listener, _) = std_listener("127.0.0.1:0");
        // Small kernel buffers on both sides: the kernel can absorb only a
        // few KiB while the peer does not read.
        rustix::net::sockopt::set_socket_recv_buffer_size(&listener, 4096).unwrap();
        let (r, w, theirs) = connect_to(&l, &listener, DEFAULT_LIMIT).await;
        let (go, wait) = mpsc::channel::<()>();
        let peer = peer(theirs, move |mut s| {
            wait.recv().unwrap();
            read_to_end_or_reset(&mut s)
        });
        small_send_buffer(w.transport());
        w.transport()
            .set_write_buffer_limits(Some(16 * 1024), None)
            .unwrap();
        // Write until the transport pauses us (the kernel's buffers fill
        // first; the peer does not read).
        let chunk = pattern(64 * 1024, 5);
        let mut total = 0;
        while !w.flow_control().is_paused() {
            w.write(&chunk).unwrap();
            total += chunk.len();
            assert!(total < 256 << 20, "never paused");
        }
        // Far more than those kernel buffers take, so the transport stays
        // paused (above its low-water mark) while the loop runs.
        w.write(&pattern(1 << 20, 6)).unwrap();
        total += 1 << 20;
        let drain = w.drain();
        futures_lite::pin!(drain);
        // Paused: the drain waits, however often it is polled.
        for _ in 0..3 {
            assert!(poll_once(&mut drain).await.is_none());
            iterations(1).await;
        }
        assert!(w.flow_control().is_paused());
        go.send(()).unwrap();
        drain.await.unwrap();
        assert!(!w.flow_control().is_paused());
        w.close();
        w.wait_closed().await.unwrap();
        assert!(r.read_to_end().await.unwrap().is_empty());
        let (got, err) = peer.join().unwrap();
        assert_eq!((got.len(), err), (total, None));
    });
}

#[test]
fn a_reset_fails_reads_drain_and_wait_closed_with_the_connection_error() {
    on_loop(|l| async move {
        let (r, w, theirs) = connected(&l, DEFAULT_LIMIT).await;
        set_linger_zero(&theirs);
        drop(theirs); // RST
        match r.read(10).await {
            Err(StreamError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.exception().unwrap().kind(),
            io::ErrorKind::ConnectionReset
        );
        // drain raises the reader's exception first, as asyncio.
        assert_eq!(
            w.drain().await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            w.wait_closed().await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert!(w.is_closing());
        assert!(w.flow_control().is_connection_lost());
        // The futures-io side reports it too.
        let mut pair = StreamPair::new(r, w);
        assert_eq!(
            pair.write(b"x").await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
    });
}

#[test]
fn writes_after_close_and_after_write_eof_and_drain_after_close() {
    on_loop(|l| async move {
        let (_r, w, theirs) = connected(&l, DEFAULT_LIMIT).await;
        let peer = peer(theirs, |mut s| read_to_end_or_reset(&mut s));
        w.write(b"before").unwrap();
        w.write_eof().unwrap();
        // asyncio: "Cannot call write() after write_eof()".
        let e = w.write(b"after eof").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
        assert_eq!(e.to_string(), "Cannot call write() after write_eof()");
        w.close();
        assert!(w.is_closing());
        // drain on a closing transport yields once, then fails once the
        // connection is lost (it is by then: nothing was buffered).
        assert_eq!(
            w.drain().await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        w.wait_closed().await.unwrap();
        assert_eq!(peer.join().unwrap(), (b"before".to_vec(), None));
    });

    // After close without write_eof: the bytes are dropped and counted, as
    // asyncio's transports do; the futures-io side refuses them.
    on_loop(|l| async move {
        let (r, w, theirs) = connected(&l, DEFAULT_LIMIT).await;
        let peer = peer(theirs, |mut s| read_to_end_or_reset(&mut s));
        w.close();
        w.wait_closed().await.unwrap();
        w.write(b"late").unwrap();
        assert_eq!(w.transport().writes_after_lost(), 1);
        let mut pair = StreamPair::new(r, w);
        assert!(pair.write(b"late").await.is_err());
        assert!(peer.join().unwrap().0.is_empty());
    });
}

#[test]
fn a_peer_eof_keeps_the_connection_half_open_for_the_reply() {
    on_loop(|l| async move {
        let (r, w, theirs) = connected(&l, DEFAULT_LIMIT).await;
        let peer = peer(theirs, |mut s| {
            write_all_then_shutdown(&mut s, b"question");
            read_to_end_or_reset(&mut s)
        });
        assert_eq!(r.read_to_end().await.unwrap(), b"question");
        assert!(r.at_eof());
        // eof_received returned true: still open for writing.
        assert!(!w.is_closing());
        w.write(b"answer").unwrap();
        w.drain().await.unwrap();
        w.close();
        w.wait_closed().await.unwrap();
        assert_eq!(peer.join().unwrap(), (b"answer".to_vec(), None));
    });
}

#[test]
fn dropping_the_writer_closes_the_connection() {
    on_loop(|l| async move {
        let (r, w, theirs) = connected(&l, DEFAULT_LIMIT).await;
        let peer = peer(theirs, |mut s| read_to_end_or_reset(&mut s));
        let flow = w.flow_control().clone();
        w.write(b"bye").unwrap();
        drop(w);
        flow.wait_closed().await.unwrap();
        assert_eq!(r.read(10).await.unwrap(), b"");
        assert_eq!(peer.join().unwrap(), (b"bye".to_vec(), None));
    });
}

#[test]
fn a_failing_client_task_is_reported_to_the_exception_handler() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let notify = Rc::new(Notify::default());
    let finished = Rc::new(std::cell::Cell::new(false));
    let (n, f) = (notify.clone(), finished.clone());
    run(&lp, async move {
        let server = serve(&l, move |r: StreamReader, w: StreamWriter| {
            let (n, f) = (n.clone(), f.clone());
            async move {
                let _keep = w;
                let res = r.readexactly(10).await.map(|_| ());
                f.set(true);
                n.wake();
                res
            }
        })
        .await;
        let stream = TcpStream::connect(("127.0.0.1", port_of(&server))).unwrap();
        let peer = peer(stream, |mut s| {
            write_all_then_shutdown(&mut s, b"short");
            read_to_end_or_reset(&mut s)
        });
        notify.until(|| finished.get()).await;
        server.close();
        server.wait_closed().await;
        assert_eq!(peer.join().unwrap(), (Vec::new(), None));
    });
    let seen_now = seen.borrow().clone();
    assert_eq!(seen_now.len(), 1, "{seen_now:#?}");
    assert_eq!(
        seen_now[0].message,
        "Unhandled error in a start_server client task"
    );
    assert!(seen_now[0]
        .error
        .as_deref()
        .unwrap()
        .contains("5 bytes read on a total of 10"));
    seen.borrow_mut().clear();
    finish(&lp, &seen);
    // Both kinds of output qualify.
    fn takes<T: ClientTaskOutput>() {}
    takes::<()>();
    takes::<io::Result<()>>();
    takes::<Result<(), StreamError>>();
}

#[test]
fn stream_reader_protocol_over_create_connection_by_hand() {
    on_loop(|l| async move {
        let server = serve(&l, echo).await;
        let reader = StreamReader::new();
        let flow = FlowControl::new();
        let protocol = StreamReaderProtocol::new(reader.clone(), flow.clone());
        let (t, handle) = l
            .create_connection(
                move || protocol,
                Some("127.0.0.1"),
                port_of(&server),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        assert!(handle.with(|p| p.reader().unwrap().ptr_eq(&reader)));
        let w = StreamWriter::new(t, flow, Some(reader.clone()));
        w.writelines(&[b"a", b"b", b"c\n"]).unwrap();
        assert_eq!(reader.readline().await.unwrap(), b"abc\n");
        w.close();
        w.wait_closed().await.unwrap();
        // The protocol let go of the reader at connection_lost.
        assert!(handle.with(|p| p.reader().is_none()));
        server.close();
    });
}

/// A protocol of another crate (a subprocess's stdin, say) that forwards its
/// flow-control callbacks to a `FlowControl`.
struct FeedsFlow(FlowControl);

impl BaseProtocol for FeedsFlow {
    fn pause_writing(&mut self) {
        self.0.pause_writing();
    }
    fn resume_writing(&mut self) {
        self.0.resume_writing();
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.0.connection_lost(error.as_ref());
    }
}

impl Protocol for FeedsFlow {
    fn data_received(&mut self, _data: &[u8]) {}
}

#[test]
fn a_stream_writer_over_a_write_pipe_with_its_own_flow_control() {
    on_loop(|l| async move {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let reader_thread = std::thread::spawn(move || {
            let mut f = std::fs::File::from(read_end);
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            got
        });
        let flow = FlowControl::new();
        let f = flow.clone();
        let (t, _) = l
            .connect_write_pipe(move || FeedsFlow(f), write_end)
            .await
            .unwrap();
        let w = StreamWriter::new(t, flow, None);
        let data = pattern(1 << 20, 6);
        w.write(&data).unwrap();
        // More than the pipe and the high-water mark hold: paused at once.
        assert!(w.flow_control().is_paused());
        w.drain().await.unwrap();
        assert!(!w.flow_control().is_paused());
        w.write_eof().unwrap();
        w.wait_closed().await.unwrap();
        let got = reader_thread.join().unwrap();
        assert!(got == data);
    });
}

#[test]
fn futures_io_copy_through_a_stream_pair() {
    on_loop(|l| async move {
        // A server written against futures-io only: copies its input back.
        let server = serve(&l, |r: StreamReader, w: StreamWriter| async move {
            let pair = StreamPair::new(r, w);
            let (reader, writer) = pair.into_parts();
            let mut writer = writer;
            futures_lite::io::copy(reader, &mut writer).await?;
            AsyncWriteExt::close(&mut writer).await
        })
        .await;
        let mut pair: StreamPair = open(&l, &server).await.into();
        let data = pattern(700_000, 7);
        let writer_side = data.clone();
        // Write everything (poll_write waits while paused), half-close,
        // then read the echo to the end.
        let (r, mut w) = pair.into_parts();
        let sender = l
            .create_task(async move {
                w.write_all(&writer_side).await?;
                w.flush().await?;
                w.write_eof().map_err(io::Error::from)?;
                Ok::<_, io::Error>(w)
            })
            .unwrap();
        let mut r2 = r.clone();
        let mut got = Vec::new();
        AsyncReadExt::read_to_end(&mut r2, &mut got).await.unwrap();
        let w = sender.await.unwrap().unwrap();
        assert!(got == data);
        pair = StreamPair::new(r, w);
        // poll_close closes and waits for connection_lost; then writes fail.
        pair.close().await.unwrap();
        assert!(pair.writer().flow_control().is_connection_lost());
        assert_eq!(
            pair.write(b"x").await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn futures_io_poll_write_is_pending_while_paused() {
    on_loop(|l| async move {
        let (_r, mut w, theirs) = connected(&l, DEFAULT_LIMIT).await;
        let (go, wait) = mpsc::channel::<()>();
        let peer = peer(theirs, move |mut s| {
            wait.recv().unwrap();
            read_to_end_or_reset(&mut s)
        });
        small_send_buffer(w.transport());
        let chunk = pattern(64 * 1024, 8);
        let mut total = 0;
        // StreamWriter's inherent write/close take precedence over the
        // futures-io extension methods: name the trait.
        while !w.flow_control().is_paused() {
            assert_eq!(
                AsyncWriteExt::write(&mut w, &chunk).await.unwrap(),
                chunk.len()
            );
            total += chunk.len();
        }
        // Paused: flush (drain semantics) and write both wait.
        assert!(poll_once(w.flush()).await.is_none());
        {
            let write = AsyncWriteExt::write(&mut w, b"more");
            futures_lite::pin!(write);
            assert!(poll_once(&mut write).await.is_none());
            go.send(()).unwrap();
            assert_eq!(write.await.unwrap(), 4);
        }
        total += 4;
        AsyncWriteExt::close(&mut w).await.unwrap();
        let (got, err) = peer.join().unwrap();
        assert_eq!((got.len(), err), (total, None));
    });
}

#[test]
fn websocket_echo_with_async_tungstenite_on_aioloop() {
    use async_tungstenite::tungstenite::Message;
    on_loop(|l| async move {
        let server = serve(&l, |r: StreamReader, w: StreamWriter| async move {
            let mut ws = async_tungstenite::accept_async(StreamPair::new(r, w)).await?;
            while let Some(msg) = ws.next().await {
                let msg = msg?;
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await?;
                }
            }
            Ok::<(), async_tungstenite::tungstenite::Error>(())
        })
        .await;
        let port = port_of(&server);
        let pair: StreamPair = l.open_connection("127.0.0.1", port).await.unwrap().into();
        let (mut ws, response) =
            async_tungstenite::client_async(format!("ws://127.0.0.1:{port}/echo"), pair)
                .await
                .unwrap();
        assert_eq!(response.status().as_u16(), 101);
        ws.send(Message::text("hello over aioloop")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("hello over aioloop")
        );
        // A message larger than the transport's high-water mark: the
        // writer pauses and resumes on the way.
        let big = pattern(600_000, 9);
        ws.send(Message::binary(big.clone())).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert!(b[..] == big[..]),
            other => panic!("{other:?}"),
        }
        ws.close(None).await.unwrap();
        // The server answers the close; then the stream ends.
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(_)) => {}
                Ok(other) => panic!("{other:?}"),
                Err(async_tungstenite::tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        server.close();
        server.wait_closed().await;
    });
}

/// `false` (after saying so) when there is no `python3` to run.
fn have_python(test: &str) -> bool {
    match Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("{test}: skipped: python3 is not on the PATH");
            false
        }
        Err(e) => panic!("cannot run python3: {e}"),
    }
}

/// An asyncio client: sends 500 lines of varying length, half-closes,
/// reads the reply to EOF and checks it is every line upper-cased. Bounded
/// by `wait_for`.
const PY_CLIENT: &str = r#"
import asyncio, sys
async def main(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    lines = [(f"line {i} " * (i % 9 + 1)).encode() + b"\n" for i in range(500)]
    for line in lines:
        w.write(line)
        await w.drain()
    w.write_eof()
    got = await r.read()
    w.close()
    await w.wait_closed()
    want = b"".join(l.upper() for l in lines)
    if got != want:
        print(f"mismatch: got {len(got)} bytes, want {len(want)}", file=sys.stderr)
        return 1
    print(f"ok: {len(lines)} lines")
    return 0
sys.exit(asyncio.run(asyncio.wait_for(main(int(sys.argv[1])), 30)))
"#;

/// Runs `python3 -c script args` and resolves with its output when it
/// exits: a helper thread waits for the process and wakes the loop task
/// (task wakers are `Send`).
fn python(
    script: &str,
    args: &[String],
) -> impl std::future::Future<Output = std::process::Output> {
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning python3");
    type Slot = Arc<Mutex<(Option<std::process::Output>, Option<Waker>)>>;
    let slot: Slot = Arc::default();
    let s = slot.clone();
    std::thread::spawn(move || {
        let out = child.wait_with_output().expect("waiting for python3");
        let mut g = s.lock().unwrap();
        g.0 = Some(out);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    });
    std::future::poll_fn(move |cx| {
        let mut g = slot.lock().unwrap();
        match g.0.take() {
            Some(out) => Poll::Ready(out),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
}

#[test]
fn a_python_asyncio_client_talks_to_start_server() {
    if !have_python("a_python_asyncio_client_talks_to_start_server") {
        return;
    }
    let served = Rc::new(std::cell::Cell::new(0usize));
    let s = served.clone();
    on_loop(|l| async move {
        let server = serve(&l, move |r: StreamReader, w: StreamWriter| {
            let s = s.clone();
            async move {
                loop {
                    let line = r.readline().await?;
                    if line.is_empty() {
                        break;
                    }
                    s.set(s.get() + 1);
                    w.write(&line.to_ascii_uppercase())?;
                    w.drain().await?;
                }
                w.close();
                w.wait_closed().await
            }
        })
        .await;
        let out = python(PY_CLIENT, &[port_of(&server).to_string()]).await;
        assert!(
            out.status.success(),
            "python: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok: 500 lines");
        server.close();
        server.wait_closed().await;
    });
    assert_eq!(served.get(), 500);
}

#[cfg(feature = "tls")]
#[test]
fn streams_over_tls_and_eof_closes_as_asyncio_does_over_tls() {
    use aioloop::{TlsClientOptions, TlsServerOptions};
    let pki = crate::tls_util::Pki::new(&["localhost"]);
    let closing_after_eof = Rc::new(std::cell::Cell::new(None));
    let c = closing_after_eof.clone();
    on_loop(|l| async move {
        let server = l
            .start_server(
                move |r: StreamReader, w: StreamWriter| {
                    let c = c.clone();
                    async move {
                        assert!(matches!(
                            w.get_extra_info("sslcontext"),
                            Some(ExtraInfo::TlsConfig(_))
                        ));
                        loop {
                            let line = r.readline().await?;
                            if line.is_empty() {
                                break;
                            }
                            w.write(&line.to_ascii_uppercase())?;
                            w.drain().await?;
                        }
                        // Over TLS, eof_received returns false: the
                        // transport closes itself after the peer's EOF.
                        c.set(Some(w.is_closing()));
                        w.wait_closed().await
                    }
                },
                &["127.0.0.1"],
                0,
                ServerOptions {
                    tls: Some(TlsServerOptions::new(pki.server_config())),
                    ..ServerOptions::default()
                },
            )
            .await
            .unwrap();
        let (r, w) = l
            .open_connection_with(
                Some("127.0.0.1"),
                port_of(&server),
                ConnectOptions {
                    tls: Some(
                        TlsClientOptions::new(pki.client_config()).server_hostname("localhost"),
                    ),
                    ..ConnectOptions::default()
                },
                DEFAULT_LIMIT,
            )
            .await
            .unwrap();
        w.write(b"secret line\n").unwrap();
        assert_eq!(r.readline().await.unwrap(), b"SECRET LINE\n");
        w.write_eof().unwrap(); // close_notify (TLS 1.3)
        assert_eq!(r.read_to_end().await.unwrap(), b"");
        w.close();
        w.wait_closed().await.unwrap();
        server.close();
        server.wait_closed().await;
    });
    assert_eq!(closing_after_eof.get(), Some(true));
}
