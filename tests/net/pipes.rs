#![cfg(feature = "net")]
//! Pipe transports through the facade (`connect_read_pipe`,
//! `connect_write_pipe`), against real peers: anonymous pipes, child
//! processes (`sh`, `cat`, `wc`, `head`), a FIFO, character devices and a
//! Unix socket pair.
//! - read pipe: data exact, EOF → `eof_received` then `connection_lost(None)`
//!   exactly once; pause/resume reading; a `BufferedProtocol`; the write API
//!   refused with `InvalidState`;
//! - write pipe: write first, buffer the rest (copied, or the caller's own
//!   buffer with `write_owned`); `write_eof`/`close` flush then
//!   lose the connection; `pause_writing` above the high-water mark and
//!   `resume_writing` at the low one (LESSONS A2); the reader going away,
//!   with and without bytes pending (`BrokenPipe`), never a hang or a panic;
//! - what is refused: a regular file, a wrong direction, a closed loop;
//! - re-entrancy: write / close / abort / pause from inside data_received,
//!   pause_writing, resume_writing (gh-156512, LESSONS A3), connection_made
//!   and connection_lost, with `connection_lost` exactly once (DESIGN).
//!
//! No sleeps: peers are threads released by channels, and the loop is
//! awaited on protocol events; every wait is bounded by the watchdog.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use rustix::fs::OFlags;
use rustix::pipe::{pipe_with, PipeFlags};

const MIB: usize = 1 << 20;

/// A pipe whose ends are closed in children spawned meanwhile by other
/// tests (a leaked write end would keep a reader from seeing EOF).
fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
    pipe_with(PipeFlags::CLOEXEC).expect("pipe2")
}

async fn read_pipe(
    lp: &EventLoop,
    pipe: impl Into<OwnedFd>,
    hooks: Hooks,
) -> (Transport, Rc<Recorder>) {
    let rec = Recorder::new();
    let r = rec.clone();
    let (t, _h) = lp
        .connect_read_pipe(move || RecordingProtocol::new(&r, hooks), pipe)
        .await
        .expect("connect_read_pipe");
    assert!(
        rec.is_made(),
        "connect_read_pipe returned before connection_made"
    );
    (t, rec)
}

async fn write_pipe(
    lp: &EventLoop,
    pipe: impl Into<OwnedFd>,
    hooks: Hooks,
) -> (Transport, Rc<Recorder>) {
    let rec = Recorder::new();
    let r = rec.clone();
    let (t, _h) = lp
        .connect_write_pipe(move || RecordingProtocol::new(&r, hooks), pipe)
        .await
        .expect("connect_write_pipe");
    assert!(
        rec.is_made(),
        "connect_write_pipe returned before connection_made"
    );
    (t, rec)
}

/// A thread that reads `fd` to EOF once told to start.
fn reader_on_signal(fd: OwnedFd) -> (mpsc::Sender<()>, JoinHandle<Vec<u8>>) {
    let (go, wait) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let _ = wait.recv_timeout(LIMIT);
        let mut f = File::from(fd);
        let (got, err) = read_to_end_or_reset(&mut f);
        assert_eq!(err, None, "the reader's read failed");
        got
    });
    (go, h)
}

/// The `pipe` fd of a pipe transport.
fn pipe_fd(t: &Transport) -> Option<std::os::fd::RawFd> {
    match t.get_extra_info("pipe")? {
        ExtraInfo::Fd(fd) => Some(fd),
        _ => None,
    }
}

fn is_nonblocking(probe: &OwnedFd) -> bool {
    rustix::fs::fcntl_getfl(probe)
        .unwrap()
        .contains(OFlags::NONBLOCK)
}

/// `cat` writing what it reads to a temporary file: the child, its stdin
/// and the file.
fn cat_to_file(name: &str) -> (Child, std::process::ChildStdin, TempPath) {
    let out = TempPath::new(name);
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(File::create(&out.0).unwrap())
        .spawn()
        .expect("cat");
    let stdin = child.stdin.take().unwrap();
    (child, stdin, out)
}

/// `cat` (from [`cat_to_file`]) ends well, having written `expected`.
fn assert_cat_wrote(child: Child, out: &TempPath, expected: &[u8]) {
    assert!(wait_child(child).success());
    assert!(
        std::fs::read(&out.0).unwrap() == expected,
        "cat wrote other bytes"
    );
}

fn wait_child(mut child: Child) -> std::process::ExitStatus {
    // The child's input is closed by now, so it ends on its own.
    child.wait().expect("waiting for the child")
}

/// `n` lines of 64 bytes, as the shell loop of `lines_script` prints them.
fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{i:063}\n").into_bytes())
        .collect()
}

fn lines_script(n: usize) -> String {
    format!("i=0; while [ $i -lt {n} ]; do printf '%063d\\n' $i; i=$((i+1)); done")
}

// ---------------------------------------------------------------------------
// The read pipe

#[test]
fn a_read_pipe_gets_the_data_then_eof_then_connection_lost_once() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let probe = r.try_clone().unwrap();
        assert!(!is_nonblocking(&probe));
        let raw = r.as_raw_fd();
        let (t, rec) = read_pipe(&l, r, Hooks::none()).await;
        assert!(is_nonblocking(&probe), "O_NONBLOCK was not set");
        assert_eq!(pipe_fd(&t), Some(raw));
        assert_eq!(t.get_extra_info("socket"), None);
        assert!(t.is_reading() && !t.is_closing());

        let mut w = File::from(w);
        w.write_all(b"hello, ").unwrap();
        rec.until_data(7).await;
        w.write_all(b"pipe").unwrap();
        drop(w); // EOF
        rec.until_lost().await;
        assert_eq!(rec.bytes(), b"hello, pipe");
        let ev = rec.events();
        assert_eq!(
            ev[ev.len() - 2..],
            [Ev::Eof, Ev::Lost(None)],
            "eof_received then connection_lost(None): {ev:?}"
        );
        rec.assert_clean_life();
        assert!(t.is_closing() && !t.is_reading());
        assert_eq!(
            pipe_fd(&t),
            None,
            "the fd is released after connection_lost"
        );
        // Nothing more comes, whatever is called now.
        t.close();
        t.abort();
        t.resume_reading();
        iterations(3).await;
        assert_eq!(rec.lost.get(), 1);
    });
}

#[test]
fn a_read_pipe_refuses_the_write_api() {
    on_loop(|l| async move {
        let (r, _w) = cloexec_pipe();
        let (t, rec) = read_pipe(&l, r, Hooks::none()).await;
        for err in [
            t.write(b"x").unwrap_err(),
            t.writelines(&[b"x", b"y"]).unwrap_err(),
            t.write_eof().unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
            assert!(err.to_string().contains("read pipe"), "{err}");
        }
        assert!(!t.can_write_eof());
        assert_eq!(t.get_write_buffer_size(), 0);
        assert!(!t.is_closing(), "a refused write does not close");
        t.close();
        assert!(t.is_closing());
        assert_eq!(rec.lost.get(), 0, "connection_lost is never synchronous");
        rec.until_lost().await;
        assert_eq!(rec.events(), [Ev::Made, Ev::Lost(None)]);
        rec.assert_clean_life();
    });
}

#[test]
fn a_read_pipe_reads_a_child_stdout_of_one_mebibyte_exactly() {
    let n = MIB / 64;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(lines_script(n))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let stdout = child.stdout.take().unwrap();
    let rec = on_loop(|l| async move {
        let (_t, rec) = read_pipe(&l, stdout, Hooks::none()).await;
        rec.until_lost().await;
        rec
    });
    assert!(wait_child(child).success());
    let expected = lines(n);
    assert_eq!(rec.data_len(), MIB);
    assert!(rec.bytes() == expected, "the bytes differ");
    assert_eq!(rec.count(&Ev::Eof), 1);
    assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
    rec.assert_clean_life();
}

#[test]
fn a_read_pipe_with_a_buffered_protocol_gets_every_byte() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let data = pattern(300_000, 1);
        let sent = data.clone();
        let writer = std::thread::spawn(move || File::from(w).write_all(&sent).unwrap());
        let rec = Recorder::new();
        let rr = rec.clone();
        let (_t, _h) = l
            .connect_read_pipe(
                move || aioloop::Buffered(RecordingBuffered::new(&rr, Hooks::none(), 1000)),
                r,
            )
            .await
            .unwrap();
        rec.until_lost().await;
        writer.join().unwrap();
        assert!(rec.bytes() == data);
        assert_eq!(rec.count(&Ev::Eof), 1);
        rec.assert_clean_life();
    });
}

/// A `BufferedProtocol` whose `get_vec_buffer` gives the read pipe its own
/// vector: every read is appended to it (not zeroed first), and
/// `buffer_updated` follows each read with its count.
#[test]
fn a_buffered_protocol_with_get_vec_buffer_gets_the_reads_appended_to_its_vector() {
    struct Append {
        vec: Vec<u8>,
        updated: Rc<Cell<usize>>,
        done: Rc<Cell<bool>>,
        out: Rc<std::cell::RefCell<Vec<u8>>>,
    }
    impl BaseProtocol for Append {
        fn connection_lost(&mut self, _: Option<io::Error>) {
            *self.out.borrow_mut() = std::mem::take(&mut self.vec);
            self.done.set(true);
        }
    }
    impl BufferedProtocol for Append {
        fn get_buffer(&mut self, _: usize) -> &mut [u8] {
            unreachable!("a read pipe uses get_vec_buffer when it is given")
        }
        fn buffer_updated(&mut self, n: usize) {
            self.updated.set(self.updated.get() + n);
        }
        fn get_vec_buffer(&mut self, _: usize) -> Option<&mut Vec<u8>> {
            Some(&mut self.vec)
        }
    }
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let data = pattern(300_000, 2);
        let sent = data.clone();
        let writer = std::thread::spawn(move || File::from(w).write_all(&sent).unwrap());
        let (updated, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
        let out = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (u, d, o) = (updated.clone(), done.clone(), out.clone());
        let (_t, h) = l
            .connect_read_pipe(
                move || {
                    aioloop::Buffered(Append {
                        vec: Vec::new(),
                        updated: u,
                        done: d,
                        out: o,
                    })
                },
                r,
            )
            .await
            .unwrap();
        h.wait_until(|_: &Append| done.get()).await;
        writer.join().unwrap();
        assert!(*out.borrow() == data, "the vector holds other bytes");
        assert_eq!(updated.get(), data.len());
    });
}

/// `StreamReader::feed_directly_from`: the read pipe appends to the
/// reader's buffer itself; the reader's backpressure pauses the pipe past
/// twice its limit and reading resumes it; every byte arrives in order,
/// then the reader's EOF; the protocol it replaced gets the end of the pipe
/// (`eof_received`, `connection_lost`) but no data.
#[test]
fn a_stream_reader_fed_directly_from_a_read_pipe_keeps_order_backpressure_and_the_end() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let data = pattern(MIB, 8);
        let sent = data.clone();
        let (first, first_written) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut f = File::from(w);
            // 64 KiB fit an empty pipe: written before the loop reads.
            f.write_all(&sent[..64 * 1024]).unwrap();
            first.send(()).unwrap();
            f.write_all(&sent[64 * 1024..]).unwrap();
        });
        first_written.recv_timeout(LIMIT).unwrap();
        let (t, rec) = read_pipe(&l, r, Hooks::none()).await;
        let limit = 16 * 1024;
        let reader = aioloop::StreamReader::with_limit(limit).unwrap();
        reader.feed_directly_from(&t);
        assert!(reader.transport().is_some_and(|x| x.ptr_eq(&t)));
        let mut bound = 0;
        while reader.buffered() == 0 {
            iterations(1).await;
            bound += 1;
            assert!(bound < 1_000_000, "the pipe was never read");
        }
        assert!(reader.buffered() > 2 * limit);
        assert!(!t.is_reading(), "past twice the limit: the pipe is paused");
        let held = reader.buffered();
        iterations(3).await;
        assert_eq!(reader.buffered(), held, "a paused pipe is not read");
        let got = reader.read_to_end().await.unwrap();
        assert!(got == data, "the reader got other bytes ({})", got.len());
        assert!(reader.at_eof());
        rec.until_lost().await;
        writer.join().unwrap();
        assert_eq!(
            rec.events(),
            [Ev::Made, Ev::Eof, Ev::Lost(None)],
            "the replaced protocol sees the end, not the data"
        );
    });
}

#[test]
fn pause_reading_stops_data_received_until_resume_reading() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let (r, w) = cloexec_pipe();
        let (t, rec) = read_pipe(&l, r, Hooks::none()).await;
        let mut w = File::from(w);
        t.pause_reading();
        t.pause_reading(); // idempotent
        assert!(!t.is_reading());
        w.write_all(b"held back").unwrap();
        // Many iterations, each one polls: nothing is delivered.
        iterations(20).await;
        assert_eq!(rec.data_len(), 0, "data_received while paused");
        t.resume_reading();
        assert!(t.is_reading());
        rec.until_data(9).await;
        assert_eq!(rec.bytes(), b"held back");
        // EOF while paused is seen only after resume.
        t.pause_reading();
        drop(w);
        iterations(20).await;
        assert!(!rec.saw_eof() && rec.lost.get() == 0);
        t.resume_reading();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        rec.assert_clean_life();
    });
    finish(&lp, &seen);
}

#[test]
fn pause_reading_inside_connection_made_holds_reading_back() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        File::from(w).write_all(b"waiting").unwrap(); // and EOF
        let hooks = Hooks::none().on_made(|t, _| {
            assert!(
                t.is_reading(),
                "reading is on before connection_made returns"
            );
            t.pause_reading();
        });
        let (t, rec) = read_pipe(&l, r, hooks).await;
        assert!(!t.is_reading());
        iterations(20).await;
        assert_eq!(rec.events(), [Ev::Made], "read while paused");
        t.resume_reading();
        rec.until_lost().await;
        assert_eq!(rec.bytes(), b"waiting");
        rec.assert_clean_life();
    });
}

/// asyncio's `_read_ready`: a read error other than EAGAIN (and EIO) is
/// `_fatal_error(exc, 'Fatal read error on pipe transport')`: reported to
/// the exception handler with the transport, and `connection_lost(exc)`.
#[test]
fn a_read_error_is_reported_and_loses_the_connection_with_the_error() {
    // A FIFO's write end given as a read pipe is refused up front; a read
    // error at run time comes from a socket reset instead.
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let s = seen.clone();
    run(&lp, async move {
        let (a, b) = std::net::TcpListener::bind("127.0.0.1:0")
            .map(|lst| {
                let c = std::net::TcpStream::connect(lst.local_addr().unwrap()).unwrap();
                let (s, _) = lst.accept().unwrap();
                (c, s)
            })
            .unwrap();
        let (_t, rec) = read_pipe(&l, a, Hooks::none()).await;
        set_linger_zero(&b);
        drop(b); // a reset
        rec.until_lost().await;
        assert_eq!(rec.lost_kind(), Some(io::ErrorKind::ConnectionReset));
        rec.assert_clean_life();
        let seen = std::mem::take(&mut *s.borrow_mut());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(seen[0].message, "Fatal read error on pipe transport");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset).to_string();
        let error = seen[0].error.clone().unwrap_or_default();
        assert!(error.contains("reset"), "{error} vs {reset}");
        assert!(
            seen[0]
                .extra
                .iter()
                .any(|(k, v)| k == "transport" && v.contains("read pipe")),
            "{:?}",
            seen[0].extra
        );
    });
    finish(&lp, &seen);
}

// ---------------------------------------------------------------------------
// The write pipe

#[test]
fn a_write_pipe_feeds_a_child_stdin_one_mebibyte_then_write_eof() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let (child, stdin, out) = cat_to_file("pipe-cat");
    let data = pattern(MIB, 3);
    let sent = data.clone();
    let l = lp.clone();
    run(&lp, async move {
        let (t, rec) = write_pipe(&l, stdin, Hooks::none()).await;
        assert!(t.can_write_eof());
        assert!(!t.is_reading());
        t.pause_reading(); // a no-op on a write pipe
        t.resume_reading();
        assert!(!t.is_reading());
        t.write(&sent).unwrap();
        assert!(
            t.get_write_buffer_size() < MIB,
            "nothing was written at once"
        );
        t.write_eof().unwrap();
        assert!(t.is_closing());
        let err = t.write(b"late").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState);
        assert_eq!(t.write_eof().map_err(|e| e.kind()), Ok(()));
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        assert_eq!(t.get_write_buffer_size(), 0);
        rec.assert_clean_life();
    });
    assert_cat_wrote(child, &out, &data);
    finish(&lp, &seen);
}

#[test]
fn wc_counts_what_a_write_pipe_sends_and_a_read_pipe_gets_the_count() {
    let mut child = Command::new("wc")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wc");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let got = on_loop(|l| async move {
        let (_rt, out) = read_pipe(&l, stdout, Hooks::none()).await;
        let (t, rec) = write_pipe(&l, stdin, Hooks::none()).await;
        // writelines: one vectored write, the rest buffered.
        let chunks: Vec<Vec<u8>> = (0..16).map(|i| pattern(MIB / 16, i)).collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        t.writelines(&refs).unwrap();
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
        out.until_lost().await;
        out.assert_clean_life();
        out.bytes()
    });
    assert!(wait_child(child).success());
    let text = String::from_utf8(got).unwrap();
    assert_eq!(text.trim(), MIB.to_string());
}

#[test]
fn writelines_with_more_buffers_than_iov_max_sends_them_all_in_order() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        let chunks: Vec<Vec<u8>> = (0..3000).map(|i| pattern(7 + i % 50, i)).collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        t.writelines(&refs).unwrap();
        t.writelines(&refs).unwrap();
        go.send(()).unwrap();
        t.close();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        let mut want = chunks.concat();
        want.extend_from_slice(&chunks.concat());
        assert!(reader.join().unwrap() == want);
    });
}

#[test]
fn a_reader_that_exits_mid_write_is_a_broken_pipe_not_a_hang() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let mut child = Command::new("head")
        .args(["-c", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("head");
    let stdin = child.stdin.take().unwrap();
    let l = lp.clone();
    run(&lp, async move {
        let (t, rec) = write_pipe(&l, stdin, Hooks::none()).await;
        t.write(&pattern(MIB, 5)).unwrap();
        rec.until_lost().await;
        assert_eq!(
            rec.lost_kind(),
            Some(io::ErrorKind::BrokenPipe),
            "{:?}",
            rec.lost_error
        );
        assert_eq!(rec.lost_errno(), Some(32), "EPIPE");
        rec.assert_clean_life();
        // Writes after the loss are dropped and counted, never an error.
        t.write(b"more").unwrap();
        assert_eq!(t.writes_after_lost(), 1);
    });
    assert!(wait_child(child).success());
    finish(&lp, &seen);
}

#[test]
fn the_reader_closing_is_seen_with_and_without_bytes_pending() {
    on_loop(|l| async move {
        // Nothing pending: connection_lost(None), with no write at all.
        let (r, w) = cloexec_pipe();
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        iterations(3).await;
        assert_eq!(rec.lost.get(), 0);
        drop(r);
        rec.until_lost().await;
        assert_eq!(rec.events(), [Ev::Made, Ev::Lost(None)]);
        assert!(t.is_closing());

        // Bytes pending: connection_lost(Some(BrokenPipe)).
        let (r, w) = cloexec_pipe();
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        t.write(&pattern(200_000, 2)).unwrap();
        assert!(t.get_write_buffer_size() > 0);
        iterations(3).await;
        assert_eq!(rec.lost.get(), 0);
        drop(r);
        rec.until_lost().await;
        assert_eq!(rec.lost_kind(), Some(io::ErrorKind::BrokenPipe));
        assert_eq!(t.get_write_buffer_size(), 0, "the buffer is dropped");
        rec.assert_clean_life();
    });
}

const CHUNK: usize = 16 * 1024;

/// Grows the buffer through `grow` until pause_writing fires, with a reader
/// that does not read; then lets it read and checks resume_writing and the
/// bytes.
fn pause_then_resume(grow: fn(&Transport, &[u8])) {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        let (low, high) = t.get_write_buffer_limits();
        let mut sent = Vec::new();
        let mut i = 0;
        while !rec.paused.get() {
            let chunk = pattern(CHUNK, i);
            i += 1;
            grow(&t, &chunk);
            sent.extend_from_slice(&chunk);
            assert!(sent.len() < 64 * MIB, "pause_writing never fired");
            if t.get_write_buffer_size() > high {
                assert!(rec.paused.get(), "above the high-water mark, not paused");
            }
        }
        assert_eq!(rec.count(&Ev::Pause), 1);
        assert!(rec.pause_sizes.borrow()[0] > high);
        grow(&t, b"while paused");
        sent.extend_from_slice(b"while paused");
        assert_eq!(rec.count(&Ev::Pause), 1, "paused twice");
        go.send(()).unwrap();
        rec.until(|r| !r.paused.get()).await;
        assert_eq!(rec.count(&Ev::Resume), 1);
        assert!(rec.resume_sizes.borrow()[0] <= low);
        t.close();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        rec.assert_clean_life();
        let got = reader.join().unwrap();
        assert!(
            got == sent,
            "the reader got {} of {} bytes",
            got.len(),
            sent.len()
        );
    });
}

#[test]
fn write_pauses_above_high_and_resumes_at_low() {
    pause_then_resume(|t, c| t.write(c).unwrap());
}

#[test]
fn writelines_pauses_above_high_and_resumes_at_low() {
    pause_then_resume(|t, c| {
        let (a, b) = c.split_at(c.len() / 3);
        t.writelines(&[a, &[], b]).unwrap()
    });
}

#[test]
fn write_owned_pauses_above_high_and_resumes_at_low() {
    pause_then_resume(|t, c| t.write_owned(Rc::<[u8]>::from(c)).unwrap());
}

/// `write_owned` keeps the caller's buffer, uncopied, until its last byte
/// is written, in order with copied writes before and after it, and lets
/// go of it then; `cat` (a real child) gets every byte in order.
#[test]
fn write_owned_keeps_the_buffer_until_written_and_cat_gets_every_byte_in_order() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let (child, stdin, out) = cat_to_file("pipe-cat-owned");
    let big: Rc<[u8]> = pattern(MIB, 5).into();
    let b = big.clone();
    let l = lp.clone();
    run(&lp, async move {
        let (t, rec) = write_pipe(&l, stdin, Hooks::none()).await;
        let base = Rc::strong_count(&b);
        t.write(b"head ").unwrap();
        // A pipe takes 64 KiB at most: the rest is kept.
        t.write_owned(b.clone()).unwrap();
        assert_eq!(Rc::strong_count(&b), base + 1, "kept, not copied");
        let kept = t.get_write_buffer_size();
        assert!(kept > 0 && kept <= MIB, "{kept} bytes buffered");
        t.write(b" middle ").unwrap();
        t.write_owned(String::from(" short tail")).unwrap();
        t.writelines(&[b" lines", b" "]).unwrap();
        t.write_owned(b.clone()).unwrap();
        assert_eq!(Rc::strong_count(&b), base + 2);
        let small = b"x".repeat(100);
        assert_eq!(
            t.get_write_buffer_size(),
            kept + b" middle  short tail lines ".len() + MIB,
            "flow control counts every buffered byte"
        );
        t.write_eof().unwrap();
        assert_eq!(
            t.write_owned(small).map_err(|e| e.kind()),
            Err(ErrorKind::InvalidState)
        );
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        assert_eq!(Rc::strong_count(&b), base, "written buffers are let go");
        rec.assert_clean_life();
    });
    let expected = [
        &b"head "[..],
        &big,
        b" middle ",
        b" short tail",
        b" lines ",
        &big,
    ]
    .concat();
    assert_cat_wrote(child, &out, &expected);
    finish(&lp, &seen);
}

/// `abort` (and so any forced close) lets go of the buffers `write_owned`
/// kept at once; the reader sees EOF early.
#[test]
fn abort_lets_go_of_the_buffers_write_owned_kept() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        let big: Rc<[u8]> = pattern(MIB, 6).into();
        t.write_owned(big.clone()).unwrap();
        t.write_owned(big.clone()).unwrap();
        assert_eq!(Rc::strong_count(&big), 3);
        let buffered = t.get_write_buffer_size();
        assert!(buffered > MIB, "{buffered} bytes buffered");
        t.abort();
        assert_eq!(Rc::strong_count(&big), 1, "abort dropped them");
        assert_eq!(t.get_write_buffer_size(), 0);
        assert_eq!(t.dropped_on_loss(), buffered);
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        go.send(()).unwrap();
        assert!(reader.join().unwrap().len() < MIB);
        rec.assert_clean_life();
    });
}

#[test]
fn lowering_the_high_water_mark_pauses_and_set_protocol_hands_the_pause_over() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        let data = pattern(200_000, 9);
        t.write(&data).unwrap();
        assert!(rec.paused.get(), "200 kB over a 64 KiB pipe: paused");
        assert!(t.set_write_buffer_limits(Some(10), Some(20)).is_err());
        t.set_write_buffer_limits(Some(usize::MAX / 2), None)
            .unwrap();
        t.set_write_buffer_limits(Some(1000), Some(100)).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (100, 1000));
        // A new protocol inherits the pause: it gets pause_writing at once,
        // so that its resume_writing is paired.
        let adopted = Recorder::adopted(rec.notify.clone(), &t);
        t.set_protocol(ProtocolHandle::new(RecordingProtocol::new(
            &adopted,
            Hooks::none(),
        )));
        assert_eq!(adopted.events(), [Ev::Pause]);
        go.send(()).unwrap();
        adopted.until(|r| !r.paused.get()).await;
        t.close();
        adopted.until_lost().await;
        assert_eq!(
            adopted.events(),
            [Ev::Pause, Ev::Resume, Ev::Lost(None)],
            "the adopted protocol's life"
        );
        assert_eq!(rec.lost.get(), 0, "the replaced protocol is not called");
        assert!(reader.join().unwrap() == data);
    });
}

/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`: writes to a closed write
/// pipe are dropped silently until the 5th, which logs "pipe closed by peer
/// or os.write(pipe, data) raised exception." (once here; asyncio repeats
/// it).
#[test]
fn the_fifth_write_after_close_logs_asyncios_warning_once() {
    capture_warnings();
    on_loop(|l| async move {
        let (_r, w) = cloexec_pipe();
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        t.close();
        rec.until_lost().await;
        let warned = || {
            warnings_on_this_thread()
                .iter()
                .filter(|m| *m == "pipe closed by peer or os.write(pipe, data) raised exception.")
                .count()
        };
        for i in 1..=12u64 {
            t.write(b"dropped").unwrap();
            assert_eq!(t.writes_after_lost(), i);
            assert_eq!(warned(), usize::from(i >= 5), "after {i} writes");
        }
    });
}

#[test]
fn close_flushes_and_abort_drops_the_buffer() {
    on_loop(|l| async move {
        // close: everything arrives, then connection_lost(None).
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        let data = pattern(MIB, 4);
        t.write(&data).unwrap();
        t.close();
        assert!(t.is_closing());
        t.write(b"dropped").unwrap();
        assert_eq!(t.writes_after_lost(), 1, "a write after close is counted");
        iterations(3).await;
        assert_eq!(rec.lost.get(), 0, "lost before the buffer drained");
        go.send(()).unwrap();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        assert!(reader.join().unwrap() == data);

        // abort: connection_lost(None) at once; the reader sees EOF early.
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let (t, rec) = write_pipe(&l, w, Hooks::none()).await;
        t.write(&data).unwrap();
        t.abort();
        assert_eq!(t.get_write_buffer_size(), 0);
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        go.send(()).unwrap();
        assert!(reader.join().unwrap().len() < data.len());
        rec.assert_clean_life();
    });
}

// ---------------------------------------------------------------------------
// FIFOs, character devices, sockets, refusals

#[test]
fn a_fifo_carries_data_between_a_write_pipe_and_a_read_pipe() {
    use rustix::fs::{mknodat, open, FileType, Mode, CWD};
    let path = TempPath::new("fifo");
    mknodat(CWD, &path.0, FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
    // The read end first, non-blocking (a blocking open would wait for a
    // writer); then the write end, which a reader lets open at once.
    let r = open(
        &path.0,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let w = open(&path.0, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let data = pattern(3 * MIB / 2, 6);
    let sent = data.clone();
    on_loop(|l| async move {
        let (_rt, got) = read_pipe(&l, File::from(r), Hooks::none()).await;
        let (t, rec) = write_pipe(&l, File::from(w), Hooks::none()).await;
        t.write(&sent).unwrap();
        t.write_eof().unwrap();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        got.until_lost().await;
        assert!(got.bytes() == sent);
        got.assert_clean_life();
        rec.assert_clean_life();
    });
}

#[test]
fn dev_null_takes_everything_at_once() {
    let null = File::options().write(true).open("/dev/null").unwrap();
    on_loop(|l| async move {
        let (t, rec) = write_pipe(&l, null, Hooks::none()).await;
        t.write(&pattern(MIB, 0)).unwrap();
        t.writelines(&[b"a", b"b"]).unwrap();
        assert_eq!(t.get_write_buffer_size(), 0);
        t.close();
        rec.until_lost().await;
        assert_eq!(rec.events(), [Ev::Made, Ev::Lost(None)]);
    });
}

#[test]
fn dev_zero_reads_until_paused_and_again_after_resume() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let zero = File::open("/dev/zero").unwrap();
    let limit = Rc::new(Cell::new(256 * 1024));
    let lim = limit.clone();
    let hooks = Hooks::none().on_data(move |t, r, _| {
        if r.data_len() >= lim.get() {
            t.pause_reading();
        }
    });
    let l = lp.clone();
    run(&lp, async move {
        let (t, rec) = read_pipe(&l, zero, hooks).await;
        rec.until_data(limit.get()).await;
        assert!(!t.is_reading());
        let held = rec.data_len();
        iterations(20).await;
        assert_eq!(rec.data_len(), held, "data_received while paused");
        limit.set(held + 256 * 1024);
        t.resume_reading();
        rec.until_data(limit.get()).await;
        assert!(!t.is_reading());
        t.close();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        assert!(rec.bytes().iter().all(|&b| b == 0));
        rec.assert_clean_life();
    });
    finish(&lp, &seen);
}

#[test]
fn a_unix_socket_pair_works_as_a_pipe_both_ways() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let (a, b) = UnixStream::pair().unwrap();
    let data = pattern(MIB, 8);
    let sent = data.clone();
    let l = lp.clone();
    run(&lp, async move {
        let (rt, got) = read_pipe(&l, b, Hooks::none()).await;
        let (t, rec) = write_pipe(&l, a, Hooks::none()).await;
        assert!(pipe_fd(&t).is_some() && pipe_fd(&rt).is_some());
        t.write(&sent).unwrap();
        t.close();
        rec.until_lost().await;
        assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
        got.until_lost().await;
        assert!(got.bytes() == sent);
        assert_eq!(got.count(&Ev::Eof), 1);
        got.assert_clean_life();
        rec.assert_clean_life();

        // The peer of a socket write pipe closing is seen as for a pipe.
        let (a, b) = UnixStream::pair().unwrap();
        let (_t, rec) = write_pipe(&l, a, Hooks::none()).await;
        drop(b);
        rec.until_lost().await;
        assert_eq!(rec.events(), [Ev::Made, Ev::Lost(None)]);
    });
    finish(&lp, &seen);
}

fn assert_refused(err: io::Error, what: &str) {
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains(what), "{err}");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<LoopError>())
        .expect("a LoopError inside");
    assert_eq!(inner.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn a_regular_file_and_a_wrong_direction_are_refused() {
    let path = TempPath::new("regular");
    std::fs::write(&path.0, b"not a pipe").unwrap();
    on_loop(|l| async move {
        let file = File::open(&path.0).unwrap();
        let err = l
            .connect_read_pipe(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                file,
            )
            .await
            .unwrap_err();
        assert_refused(err, "Pipe transport is for pipes/sockets only.");
        let file = File::options().write(true).open(&path.0).unwrap();
        let err = l
            .connect_write_pipe(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                file,
            )
            .await
            .unwrap_err();
        assert_refused(err, "Pipe transport is for pipes/sockets only.");

        let (r, w) = cloexec_pipe();
        let err = l
            .connect_read_pipe(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                w,
            )
            .await
            .unwrap_err();
        assert_refused(err, "not open for reading");
        let err = l
            .connect_write_pipe(
                || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
                r,
            )
            .await
            .unwrap_err();
        assert_refused(err, "not open for writing");
    });
}

#[test]
fn a_closed_loop_refuses_pipes() {
    let lp = new_loop();
    lp.close().unwrap();
    let (r, w) = cloexec_pipe();
    for result in [
        futures_lite::future::block_on(lp.connect_read_pipe(
            || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
            r,
        )),
        futures_lite::future::block_on(lp.connect_write_pipe(
            || RecordingProtocol::new(&Recorder::new(), Hooks::none()),
            w,
        )),
    ] {
        let err = result.unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<LoopError>())
            .expect("a LoopError inside");
        assert_eq!(inner.kind(), ErrorKind::Closed);
    }
}

// ---------------------------------------------------------------------------
// Re-entrancy

#[derive(Clone, Copy, Debug)]
enum Act {
    Write,
    Close,
    Abort,
    PauseResume,
}

/// From inside a read pipe's data_received: each call, then more data and
/// EOF; connection_lost exactly once, no panic, nothing reported.
#[test]
fn calls_from_inside_data_received_of_a_read_pipe() {
    for act in [Act::Write, Act::Close, Act::Abort, Act::PauseResume] {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let hooks = Hooks::none().on_data(move |t, _, _| match act {
            Act::Write => {
                assert_eq!(t.write(b"x").unwrap_err().kind(), ErrorKind::InvalidState);
            }
            Act::Close => {
                t.close();
                t.close();
            }
            Act::Abort => t.abort(),
            Act::PauseResume => {
                t.pause_reading();
                t.resume_reading();
                t.pause_reading();
                let t2 = t.clone();
                t.get_loop()
                    .unwrap()
                    .call_soon(move || t2.resume_reading())
                    .unwrap();
            }
        });
        run(&lp, async move {
            let (r, w) = cloexec_pipe();
            let (t, rec) = read_pipe(&l, r, hooks).await;
            let mut w = File::from(w);
            w.write_all(b"first").unwrap();
            rec.until_data(1).await;
            // After close/abort the read end may be closed already: EPIPE.
            let wrote = w.write_all(b"second");
            assert!(wrote.is_ok() || matches!(act, Act::Close | Act::Abort));
            drop(w);
            rec.until_lost().await;
            iterations(3).await;
            rec.assert_clean_life();
            assert!(t.is_closing());
            match act {
                Act::Close | Act::Abort => {
                    assert_eq!(
                        rec.events(),
                        [Ev::Made, Ev::Data(5), Ev::Lost(None)],
                        "{act:?}"
                    )
                }
                _ => {
                    assert_eq!(rec.bytes(), b"firstsecond", "{act:?}");
                    assert_eq!(rec.count(&Ev::Eof), 1, "{act:?}");
                }
            }
        });
        finish(&lp, &seen);
    }
}

/// From inside a write pipe's pause_writing: write more, close, abort.
#[test]
fn calls_from_inside_pause_writing() {
    for act in [Act::Write, Act::Close, Act::Abort] {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let hooks = Hooks::none().on_pause(move |t, _| match act {
            Act::Write => t.write(b"from pause_writing").unwrap(),
            Act::Close => t.close(),
            Act::Abort => t.abort(),
            Act::PauseResume => unreachable!(),
        });
        run(&lp, async move {
            let (r, w) = cloexec_pipe();
            let (go, reader) = reader_on_signal(r);
            let (t, rec) = write_pipe(&l, w, hooks).await;
            let data = pattern(300_000, 7);
            t.write(&data).unwrap();
            assert_eq!(rec.count(&Ev::Pause), 1, "{act:?}");
            if let Act::Write = act {
                t.close();
            }
            go.send(()).unwrap();
            rec.until_lost().await;
            iterations(3).await;
            rec.assert_clean_life();
            assert_eq!(rec.events().last(), Some(&Ev::Lost(None)), "{act:?}");
            let got = reader.join().unwrap();
            match act {
                Act::Write => {
                    let mut want = data.clone();
                    want.extend_from_slice(b"from pause_writing");
                    assert!(got == want, "{act:?}");
                }
                Act::Close => assert!(got == data, "{act:?}"),
                _ => assert!(got.len() < data.len(), "{act:?}"),
            }
        });
        finish(&lp, &seen);
    }
}

/// A producer that writes the next chunk from resume_writing and closes
/// after the last one (CPython gh-156512: connection_lost was delivered
/// twice); also abort from there.
#[test]
fn writing_and_closing_from_resume_writing_loses_the_connection_once() {
    for abort in [false, true] {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let chunks: Rc<Vec<Vec<u8>>> = Rc::new((0..12).map(|i| pattern(200_000, i)).collect());
        let next = Rc::new(Cell::new(1));
        let (c, n) = (chunks.clone(), next.clone());
        let hooks = Hooks::none().on_resume(move |t, _| {
            if abort {
                t.abort();
                return;
            }
            while n.get() < c.len() {
                let i = n.get();
                n.set(i + 1);
                t.write(&c[i]).unwrap();
                if t.get_write_buffer_size() > t.get_write_buffer_limits().1 {
                    return; // paused again
                }
            }
            t.close();
        });
        run(&lp, async move {
            let (r, w) = cloexec_pipe();
            let (go, reader) = reader_on_signal(r);
            let (t, rec) = write_pipe(&l, w, hooks).await;
            t.write(&chunks[0]).unwrap();
            assert!(rec.paused.get());
            go.send(()).unwrap();
            rec.until_lost().await;
            iterations(3).await;
            rec.assert_clean_life();
            assert_eq!(rec.events().last(), Some(&Ev::Lost(None)));
            let got = reader.join().unwrap();
            if abort {
                assert!(got.len() < 12 * 200_000);
            } else {
                assert_eq!(next.get(), 12);
                assert!(got == chunks.concat(), "the reader got other bytes");
                assert!(rec.count(&Ev::Pause) >= 2, "{:?}", rec.events());
            }
        });
        finish(&lp, &seen);
    }
}

/// From inside connection_made (write then close) and connection_lost
/// (write, close, abort): no panic, connection_lost once.
#[test]
fn calls_from_inside_connection_made_and_connection_lost() {
    on_loop(|l| async move {
        let (r, w) = cloexec_pipe();
        let (go, reader) = reader_on_signal(r);
        let data = Rc::new(pattern(200_000, 11));
        let d = data.clone();
        let hooks = Hooks::none()
            .on_made(move |t, _| {
                t.write(&d).unwrap();
                t.close();
            })
            .on_lost(|t, _, _| {
                t.write(b"after").unwrap();
                t.writelines(&[b"after"]).unwrap();
                t.close();
                t.abort();
                assert_eq!(t.write_eof().map_err(|e| e.kind()), Ok(()));
            });
        let (t, rec) = write_pipe(&l, w, hooks).await;
        assert!(t.is_closing());
        go.send(()).unwrap();
        rec.until_lost().await;
        iterations(3).await;
        rec.assert_clean_life();
        assert_eq!(t.writes_after_lost(), 2);
        assert!(reader.join().unwrap() == *data);

        // The read side: close and abort from connection_lost.
        let (r, w) = cloexec_pipe();
        let hooks = Hooks::none().on_lost(|t, _, _| {
            t.close();
            t.abort();
            t.pause_reading();
            t.resume_reading();
        });
        let (_t, rec) = read_pipe(&l, r, hooks).await;
        drop(w);
        rec.until_lost().await;
        iterations(3).await;
        rec.assert_clean_life();
    });
}

/// A protocol that panics in data_received is reported once and loses its
/// connection once.
#[test]
fn a_panicking_protocol_is_reported_and_loses_its_pipe_once() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    run(&lp, async move {
        let (r, w) = cloexec_pipe();
        let hooks = Hooks::none().on_data(|_, _, _| panic!("boom in data_received"));
        let (_t, rec) = read_pipe(&l, r, hooks).await;
        File::from(w).write_all(b"x").unwrap();
        rec.until_lost().await;
        iterations(3).await;
        assert_eq!(rec.lost.get(), 1);
        assert_eq!(rec.lost_kind(), Some(io::ErrorKind::Other));
    });
    let reports = seen.borrow().clone();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert!(reports[0].message.contains("data_received"), "{reports:#?}");
    seen.borrow_mut().clear();
    finish(&lp, &seen);
}
