//! Write flow control and re-entrancy of the stream transport, against real
//! loopback peers that read only when told to:
//! - `pause_writing` above the high-water mark from every entry point that
//!   grows the buffer (`write`, `writelines`, lowering the mark), and
//!   `resume_writing` at or below the low one (LESSONS A2);
//! - the buffer stays bounded when the protocol respects `pause_writing`,
//!   whether it produces from a task or from `resume_writing` (and closing
//!   there after the last chunk loses the connection once: CPython
//!   gh-156512, LESSONS A3);
//! - `set_protocol` while paused hands the pause over (LESSONS C6);
//! - write / close / abort / pause_reading / set_protocol called from inside
//!   data_received, pause_writing, resume_writing, eof_received and
//!   connection_lost: no panic, `connection_lost` exactly once (DESIGN).
#![cfg(feature = "net")]

use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;

/// A transport to a std peer that does not read; waits for connection_made.
async fn connect_quiet(lp: &EventLoop, hooks: Hooks) -> (Transport, Rc<Recorder>, TcpStream) {
    let (t, rec, theirs) = connect_to_std_peer(lp, hooks).await;
    small_send_buffer(&t);
    (t, rec, theirs)
}

/// A peer thread that waits for the go signal, then reads to EOF.
fn reader_on_signal(s: TcpStream) -> (mpsc::Sender<()>, std::thread::JoinHandle<Vec<u8>>) {
    let (go, wait) = mpsc::channel::<()>();
    let h = peer(s, move |mut s| {
        let _ = wait.recv_timeout(LIMIT);
        let (got, err) = read_to_end_or_reset(&mut s);
        assert_eq!(err, None, "the peer's read failed");
        got
    });
    (go, h)
}

const CHUNK: usize = 16 * 1024;

/// Grows the buffer through `grow` until pause_writing fires; checks the
/// marks on both sides of the pause; then lets the peer read and checks
/// resume_writing and the bytes.
fn pause_then_resume(grow: fn(&Transport, &[u8])) {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_quiet(&l, Hooks::none()).await;
        let (low, high) = t.get_write_buffer_limits();
        let (go, reader) = reader_on_signal(theirs);
        let mut sent = Vec::new();
        let mut i = 0;
        while !rec.paused.get() {
            let chunk = pattern(CHUNK, i);
            i += 1;
            grow(&t, &chunk);
            sent.extend_from_slice(&chunk);
            assert!(sent.len() < 256 << 20, "pause_writing never fired");
            if t.get_write_buffer_size() > high {
                // pause_writing is synchronous when the protocol is idle.
                assert!(
                    rec.paused.get(),
                    "buffer {} > high {high}, not paused",
                    t.get_write_buffer_size()
                );
            }
        }
        assert_eq!(rec.count(&Ev::Pause), 1);
        assert!(rec.pause_sizes.borrow()[0] > high, "{:?}", rec.pause_sizes);
        // More writes while paused do not pause again.
        grow(&t, b"while paused");
        sent.extend_from_slice(b"while paused");
        assert_eq!(rec.count(&Ev::Pause), 1);
        go.send(()).unwrap();
        rec.until(|r| !r.paused.get()).await;
        assert_eq!(rec.count(&Ev::Resume), 1);
        assert!(
            rec.resume_sizes.borrow()[0] <= low,
            "{:?}",
            rec.resume_sizes
        );
        t.close();
        rec.until_lost().await;
        let got = reader.join().unwrap();
        assert!(
            got == sent,
            "the peer got {} of {} bytes, or other bytes",
            got.len(),
            sent.len()
        );
        rec.assert_clean_life();
    });
}

#[test]
fn write_pauses_above_high_and_resumes_at_low() {
    pause_then_resume(|t, chunk| t.write(chunk).unwrap());
}

#[test]
fn writelines_pauses_above_high_and_resumes_at_low() {
    pause_then_resume(|t, chunk| {
        let (a, b) = chunk.split_at(chunk.len() / 3);
        t.writelines(&[a, &[], b]).unwrap()
    });
}

#[test]
fn lowering_the_high_water_mark_pauses_at_once() {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_quiet(&l, Hooks::none()).await;
        let (go, reader) = reader_on_signal(theirs);
        // Fill under the default mark (64 KiB).
        let mut sent = Vec::new();
        let mut i = 0;
        while t.get_write_buffer_size() < 20_000 {
            let c = pattern(4096, i);
            i += 1;
            t.write(&c).unwrap();
            sent.extend_from_slice(&c);
        }
        assert!(!rec.paused.get());
        t.set_write_buffer_limits(Some(10_000), Some(1000)).unwrap();
        assert!(
            rec.paused.get(),
            "set_write_buffer_limits below the buffer did not pause"
        );
        assert_eq!(rec.count(&Ev::Pause), 1);
        go.send(()).unwrap();
        rec.until(|r| !r.paused.get()).await;
        assert!(rec.resume_sizes.borrow()[0] <= 1000);
        t.close();
        rec.until_lost().await;
        assert!(reader.join().unwrap() == sent);
        rec.assert_clean_life();
    });
}

#[test]
fn a_producer_task_that_respects_pause_writing_keeps_the_buffer_bounded() {
    on_loop(|l| async move {
        let (t, rec, theirs) = connect_quiet(&l, Hooks::none()).await;
        let (_, high) = t.get_write_buffer_limits();
        // The peer reads in small bites, as a slow consumer, and only once
        // the producer was first paused (a fast reader on an idle machine
        // could otherwise keep the buffer empty and nothing would be tested).
        let total = 8 << 20;
        let (go, wait) = mpsc::channel::<()>();
        let reader = peer(theirs, move |mut s| {
            use std::io::Read;
            let _ = wait.recv_timeout(LIMIT);
            let mut got = Vec::with_capacity(total);
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let mut max = 0;
        let mut sent = 0;
        let mut i = 0;
        let mut started = false;
        while sent < total {
            if rec.paused.get() && !started {
                started = true;
                let _ = go.send(());
            }
            rec.until(|r| !r.paused.get()).await;
            let c = pattern(CHUNK, i);
            i += 1;
            t.write(&c).unwrap();
            sent += c.len();
            max = max.max(t.get_write_buffer_size());
        }
        t.close();
        rec.until_lost().await;
        let got = reader.join().unwrap();
        assert_eq!(got.len(), total);
        for (i, c) in got.chunks(CHUNK).enumerate() {
            assert!(c == &pattern(CHUNK, i)[..], "chunk {i} differs");
        }
        assert!(
            max <= high + CHUNK,
            "the buffer grew to {max} (high {high})"
        );
        assert!(
            rec.count(&Ev::Pause) >= 1,
            "the slow reader never paused the producer"
        );
        assert_eq!(rec.count(&Ev::Pause), rec.count(&Ev::Resume));
        rec.assert_clean_life();
    });
}

/// A protocol that produces `total` bytes from connection_made and
/// resume_writing, stopping while the buffer is above the high-water mark,
/// and closes right after writing the last chunk: from inside
/// resume_writing (CPython gh-156512 delivered connection_lost twice).
struct Producer {
    total: usize,
    sent: Cell<usize>,
    max: Cell<usize>,
    closed_in_resume: Cell<bool>,
}

impl Producer {
    fn produce(&self, t: &Transport, r: &Recorder, in_resume: bool) {
        let (_, high) = t.get_write_buffer_limits();
        while self.sent.get() < self.total && !r.paused.get() && t.get_write_buffer_size() <= high {
            let i = self.sent.get() / CHUNK;
            t.write(&pattern(CHUNK, i)).unwrap();
            self.sent.set(self.sent.get() + CHUNK);
            self.max.set(self.max.get().max(t.get_write_buffer_size()));
            if self.sent.get() >= self.total {
                t.close();
                self.closed_in_resume.set(in_resume);
            }
        }
    }
}

#[test]
fn a_protocol_producing_from_resume_writing_and_closing_there_loses_once() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let l = lp.clone();
    let prod = Rc::new(Producer {
        total: 4 << 20,
        sent: Cell::new(0),
        max: Cell::new(0),
        closed_in_resume: Cell::new(false),
    });
    let (p1, p2) = (prod.clone(), prod.clone());
    let (l4, addr) = std_listener("127.0.0.1:0");
    let total = prod.total;
    // The peer reads everything, on a thread, as fast as it can -- but only
    // once the producer was paused, so that the rest of the data (and the
    // close) is written from resume_writing however fast the reader is.
    let (go, wait) = mpsc::channel::<()>();
    let acceptor = std::thread::spawn(move || {
        let (s, _) = l4.accept().unwrap();
        bounded(&s);
        let _ = wait.recv_timeout(LIMIT);
        read_to_end_or_reset(&mut { s })
    });
    let rec = run(&lp, async move {
        let rec = Recorder::new();
        let r = rec.clone();
        let hooks = Hooks::none()
            .on_made(move |t, r| {
                small_send_buffer(t);
                p1.produce(t, r, false)
            })
            .on_pause(move |_t, _r| {
                let _ = go.send(());
            })
            .on_resume(move |t, r| p2.produce(t, r, true));
        let (_t, _h) = l
            .create_connection(
                move || RecordingProtocol::new(&r, hooks),
                Some("127.0.0.1"),
                addr.port(),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        rec.until_lost().await;
        iterations(3).await;
        rec
    });
    let (got, err) = acceptor.join().unwrap();
    assert_eq!(err, None);
    assert_eq!(got.len(), total);
    for (i, c) in got.chunks(CHUNK).enumerate() {
        assert!(c == &pattern(CHUNK, i)[..], "chunk {i} differs");
    }
    assert!(
        prod.closed_in_resume.get(),
        "the last chunk was not written from resume_writing"
    );
    assert!(
        prod.max.get() <= 65536 + CHUNK,
        "buffer grew to {}",
        prod.max.get()
    );
    rec.assert_clean_life();
    assert_eq!(rec.lost_kind(), None);
    finish(&lp, &seen);
}

#[test]
fn set_protocol_while_paused_hands_the_pause_over() {
    on_loop(|l| async move {
        let (t, old, theirs) = connect_quiet(&l, Hooks::none()).await;
        let (go, reader) = reader_on_signal(theirs);
        let mut sent = Vec::new();
        let mut i = 0;
        while !old.paused.get() {
            let c = pattern(CHUNK, i);
            i += 1;
            t.write(&c).unwrap();
            sent.extend_from_slice(&c);
        }
        let new = Recorder::adopted(old.notify.clone(), &t);
        t.set_protocol(ProtocolHandle::new(RecordingProtocol::new(
            &new,
            Hooks::none(),
        )));
        // The new protocol is told at once that writing is paused...
        assert_eq!(new.events(), vec![Ev::Pause]);
        go.send(()).unwrap();
        // ... and gets the matching resume; the old one gets nothing more.
        new.until(|r| !r.paused.get()).await;
        assert_eq!(old.events().last(), Some(&Ev::Pause));
        t.close();
        new.until_lost().await;
        assert_eq!(old.lost.get(), 0);
        assert_eq!(new.events(), vec![Ev::Pause, Ev::Resume, Ev::Lost(None)]);
        assert!(reader.join().unwrap() == sent);
        assert!(old.violations.borrow().is_empty() && new.violations.borrow().is_empty());
    });
}

// ---------------------------------------------------------------------------
// Re-entrancy: every transport call from inside every callback.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cb {
    DataReceived,
    PauseWriting,
    ResumeWriting,
    EofReceived,
    ConnectionLost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Write,
    Close,
    Abort,
    PauseReading,
    SetProtocol,
}

const ACTS: [Act; 5] = [
    Act::Write,
    Act::Close,
    Act::Abort,
    Act::PauseReading,
    Act::SetProtocol,
];

/// Runs `act` on `t` from inside a callback; a protocol installed by
/// set_protocol is recorded in `adopted`.
fn perform(act: Act, t: &Transport, r: &Recorder, adopted: &RefCell<Option<Rc<Recorder>>>) {
    match act {
        Act::Write => t.write(b"from inside a callback").unwrap(),
        Act::Close => t.close(),
        Act::Abort => t.abort(),
        Act::PauseReading => t.pause_reading(),
        Act::SetProtocol => {
            let new = Recorder::adopted(r.notify.clone(), t);
            t.set_protocol(ProtocolHandle::new(RecordingProtocol::new(
                &new,
                Hooks::none(),
            )));
            *adopted.borrow_mut() = Some(new);
        }
    }
}

fn reentrancy_case(cb: Cb, act: Act) {
    on_loop(|l| async move {
        let done = Rc::new(Cell::new(false));
        let adopted: Rc<RefCell<Option<Rc<Recorder>>>> = Rc::new(RefCell::new(None));
        let once = {
            let (done, adopted) = (done.clone(), adopted.clone());
            move |here: Cb, t: &Transport, r: &Recorder| {
                if here == cb && !done.replace(true) {
                    perform(act, t, r, &adopted);
                }
            }
        };
        let (o1, o2, o3, o4, o5) = (once.clone(), once.clone(), once.clone(), once.clone(), once);
        let hooks = Hooks::none()
            .on_data(move |t, r, _| o1(Cb::DataReceived, t, r))
            .on_pause(move |t, r| o2(Cb::PauseWriting, t, r))
            .on_resume(move |t, r| o3(Cb::ResumeWriting, t, r))
            .on_eof(move |t, r| {
                o4(Cb::EofReceived, t, r);
                // Keep the connection open only where the test needs it.
                cb != Cb::ConnectionLost
            })
            .on_lost(move |t, r, _| o5(Cb::ConnectionLost, t, r));
        let (t, rec, theirs) = connect_quiet(&l, hooks).await;
        t.set_write_buffer_limits(Some(16 * 1024), None).unwrap();
        let (go, reader) = reader_on_signal(theirs.try_clone().unwrap());
        match cb {
            Cb::DataReceived => {
                (&theirs).write_all_now(b"some data");
            }
            Cb::PauseWriting => {
                t.write(&pattern(512 << 10, 1)).unwrap();
            }
            Cb::ResumeWriting => {
                t.write(&pattern(512 << 10, 2)).unwrap();
                assert!(rec.paused.get(), "512 KiB did not pause writing");
                go.send(()).unwrap();
            }
            Cb::EofReceived | Cb::ConnectionLost => {
                theirs.shutdown(std::net::Shutdown::Write).unwrap();
            }
        }
        let d = done.clone();
        rec.notify.until(move || d.get()).await;
        // Wind down: let the peer read to the end, then close our side.
        let _ = go.send(());
        t.close();
        let (r, a) = (rec.clone(), adopted.clone());
        rec.notify
            .until(move || r.lost.get() + a.borrow().as_ref().map_or(0, |n| n.lost.get()) > 0)
            .await;
        iterations(3).await;
        let new = adopted.borrow().clone();
        let total_lost = rec.lost.get() + new.as_ref().map_or(0, |n| n.lost.get());
        assert_eq!(total_lost, 1, "{cb:?}/{act:?}: connection_lost calls");
        assert!(rec.violations.borrow().is_empty(), "{:?}", rec.violations);
        if let Some(n) = &new {
            assert!(n.violations.borrow().is_empty(), "{:?}", n.violations);
            if cb != Cb::ConnectionLost {
                assert_eq!(
                    n.lost.get(),
                    1,
                    "the adopted protocol did not get connection_lost"
                );
            }
        }
        if (cb, act) == (Cb::ConnectionLost, Act::Write) {
            assert_eq!(
                t.writes_after_lost(),
                1,
                "a write after the loss was not counted"
            );
        }
        assert!(t.is_closing());
        drop(theirs);
        let _ = reader.join();
    });
}

trait WriteNow {
    fn write_all_now(self, data: &[u8]);
}

impl WriteNow for &TcpStream {
    fn write_all_now(mut self, data: &[u8]) {
        use std::io::Write;
        self.write_all(data).unwrap();
    }
}

fn reentrancy_from(cb: Cb) {
    for act in ACTS {
        reentrancy_case(cb, act);
    }
}

#[test]
fn transport_calls_from_inside_data_received() {
    reentrancy_from(Cb::DataReceived);
}

#[test]
fn transport_calls_from_inside_pause_writing() {
    reentrancy_from(Cb::PauseWriting);
}

#[test]
fn transport_calls_from_inside_resume_writing() {
    reentrancy_from(Cb::ResumeWriting);
}

#[test]
fn transport_calls_from_inside_eof_received() {
    reentrancy_from(Cb::EofReceived);
}

#[test]
fn transport_calls_from_inside_connection_lost() {
    reentrancy_from(Cb::ConnectionLost);
}
