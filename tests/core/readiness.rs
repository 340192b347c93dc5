//! fd readiness: add_reader / add_writer / remove_*, level triggering,
//! replacement, removal from inside, hang-ups, bad fds, many fds at once, and
//! every backend (the suite also runs whole with AIOLOOP_BACKEND=polling and
//! with AIOLOOP_BACKEND=uring; tests/core/uring.rs has the io_uring cases).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use crate::util::*;
use aioloop::{Backend, ErrorKind, EventLoop};

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Bytes waiting on `s`, without consuming them.
fn peek_len(s: &UnixStream) -> usize {
    let mut buf = [0u8; 64];
    rustix::net::recv(s, &mut buf, rustix::net::RecvFlags::PEEK)
        .map(|(n, _)| n)
        .unwrap_or(0)
}

#[test]
fn a_reader_fires_when_data_arrives() {
    let lp = new_loop();
    let (a, b) = pair();
    let got = log::<u8>();
    let (g, lp2, fd) = (got.clone(), lp.clone(), b.as_raw_fd());
    let b = Rc::new(b);
    let b2 = b.clone();
    lp.add_reader(fd, move || {
        let mut buf = [0u8; 16];
        let n = (&*b2).read(&mut buf).unwrap();
        g.borrow_mut().extend_from_slice(&buf[..n]);
        assert!(lp2.remove_reader(fd).unwrap());
        lp2.stop();
    })
    .unwrap();
    // Nothing to read yet: an iteration runs nothing.
    one_iteration(&lp);
    assert!(got.borrow().is_empty());
    // Data arrives from a callback while the loop runs.
    let a = RefCell::new(a);
    lp.call_soon(move || a.borrow_mut().write_all(b"ping").unwrap())
        .unwrap();
    run_bounded(&lp);
    assert_eq!(*got.borrow(), b"ping");
    lp.close().unwrap();
}

#[test]
fn readers_are_level_triggered() {
    let lp = new_loop();
    let (mut a, b) = pair();
    a.write_all(b"xyz").unwrap();
    let runs = counter();
    let (r, lp2, fd) = (runs.clone(), lp.clone(), b.as_raw_fd());
    let b = Rc::new(b);
    let b2 = b.clone();
    lp.add_reader(fd, move || {
        bump(&r);
        assert_eq!(peek_len(&b2), 3, "nothing was consumed");
        if r.get() == 5 {
            lp2.remove_reader(fd).unwrap();
            lp2.stop();
        }
    })
    .unwrap();
    for i in 1..=4 {
        one_iteration(&lp);
        assert_eq!(runs.get(), i, "once per iteration while readable");
    }
    run_bounded(&lp);
    assert_eq!(runs.get(), 5);
    lp.close().unwrap();
}

#[test]
fn add_reader_twice_replaces_the_callback() {
    let lp = new_loop();
    let (mut a, b) = pair();
    let fd = b.as_raw_fd();
    let order = log::<&str>();
    let old_captured = Rc::new(());
    let (o, c) = (order.clone(), old_captured.clone());
    lp.add_reader(fd, move || {
        let _ = &c;
        o.borrow_mut().push("old");
    })
    .unwrap();
    assert_eq!(Rc::strong_count(&old_captured), 2);
    let (o, lp2) = (order.clone(), lp.clone());
    lp.add_reader(fd, move || {
        o.borrow_mut().push("new");
        if o.borrow().len() == 3 {
            lp2.remove_reader(fd).unwrap();
            lp2.stop();
        }
    })
    .unwrap();
    assert_eq!(
        Rc::strong_count(&old_captured),
        1,
        "the replaced callback was dropped"
    );
    a.write_all(b"!").unwrap();
    run_bounded(&lp);
    assert_eq!(*order.borrow(), ["new", "new", "new"]);
    lp.close().unwrap();
}

#[test]
fn remove_reader_returns_true_then_false() {
    let lp = new_loop();
    let (_a, b) = pair();
    let fd = b.as_raw_fd();
    assert!(!lp.remove_reader(fd).unwrap(), "never registered");
    lp.add_reader(fd, || {}).unwrap();
    assert!(!lp.remove_writer(fd).unwrap(), "a reader is not a writer");
    assert!(lp.remove_reader(fd).unwrap());
    assert!(!lp.remove_reader(fd).unwrap());
    // Re-adding after removal works.
    lp.add_reader(fd, || {}).unwrap();
    assert!(lp.remove_reader(fd).unwrap());
    assert_eq!(
        lp.remove_reader(-1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    lp.close().unwrap();
}

#[test]
fn a_reader_can_remove_itself() {
    let lp = new_loop();
    let (mut a, b) = pair();
    a.write_all(b"never drained").unwrap();
    let fd = b.as_raw_fd();
    let runs = counter();
    let (r, lp2) = (runs.clone(), lp.clone());
    lp.add_reader(fd, move || {
        bump(&r);
        assert!(lp2.remove_reader(fd).unwrap());
        assert!(!lp2.remove_reader(fd).unwrap());
    })
    .unwrap();
    for _ in 0..5 {
        one_iteration(&lp);
    }
    assert_eq!(
        runs.get(),
        1,
        "the fd stays readable but the reader is gone"
    );
    assert_eq!(peek_len(&b), 13);
    lp.close().unwrap();
}

#[test]
fn a_writer_fires_on_a_writable_socket() {
    let lp = new_loop();
    let (a, mut b) = pair();
    let fd = a.as_raw_fd();
    let a = Rc::new(a);
    let (a2, lp2) = (a.clone(), lp.clone());
    let runs = counter();
    let r = runs.clone();
    lp.add_writer(fd, move || {
        bump(&r);
        (&*a2).write_all(b"from writer").unwrap();
        assert!(lp2.remove_writer(fd).unwrap());
        lp2.stop();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(runs.get(), 1);
    let mut buf = [0u8; 32];
    let n = b.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from writer");
    assert!(!lp.remove_writer(fd).unwrap());
    lp.close().unwrap();
}

#[test]
fn reader_and_writer_on_one_fd_and_removing_either_keeps_the_other() {
    // Removing the writer keeps the reader.
    let lp = new_loop();
    let (a, b) = pair();
    let fd = b.as_raw_fd();
    let events = log::<&str>();
    let b = Rc::new(b);
    let (e, lp2, b2) = (events.clone(), lp.clone(), b.clone());
    lp.add_reader(fd, move || {
        let mut buf = [0u8; 8];
        let n = (&*b2).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        e.borrow_mut().push("read");
        lp2.remove_reader(fd).unwrap();
        lp2.stop();
    })
    .unwrap();
    let a = Rc::new(a);
    let (e, lp2, a2) = (events.clone(), lp.clone(), a.clone());
    lp.add_writer(fd, move || {
        e.borrow_mut().push("write");
        assert!(lp2.remove_writer(fd).unwrap());
        (&*a2).write_all(b"hello").unwrap();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(*events.borrow(), ["write", "read"]);
    lp.close().unwrap();

    // Removing the reader keeps the writer.
    let lp = new_loop();
    let (_a, b) = pair();
    let fd = b.as_raw_fd();
    let writes = counter();
    lp.add_reader(fd, || panic!("nothing is ever readable"))
        .unwrap();
    let (w, lp2) = (writes.clone(), lp.clone());
    lp.add_writer(fd, move || {
        bump(&w);
        if w.get() == 3 {
            lp2.remove_writer(fd).unwrap();
            lp2.stop();
        }
    })
    .unwrap();
    assert!(lp.remove_reader(fd).unwrap());
    run_bounded(&lp);
    assert_eq!(writes.get(), 3);
    lp.close().unwrap();
}

/// An fd number that is certainly not open: a dup placed high (above what
/// this test process otherwise uses), then closed.
fn closed_fd() -> RawFd {
    let (a, _b) = UnixStream::pair().unwrap();
    let high: OwnedFd = rustix::io::fcntl_dupfd_cloexec(a.as_fd(), 900).unwrap();
    let n = high.as_raw_fd();
    assert!(n >= 900);
    drop(high);
    n
}

#[test]
fn a_closed_fd_is_an_io_error_with_ebadf() {
    let lp = new_loop();
    let fd = closed_fd();
    let err = lp.add_reader(fd, || {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(
        err.io_error().and_then(|e| e.raw_os_error()),
        Some(9),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("fd={fd}")), "{err}");
    let err = lp.add_writer(fd, || {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    // Nothing was left registered.
    assert!(!lp.remove_reader(fd).unwrap());
    assert!(!lp.remove_writer(fd).unwrap());
    one_iteration(&lp);
    lp.close().unwrap();
}

#[test]
fn a_negative_fd_is_an_invalid_argument() {
    let lp = new_loop();
    for fd in [-1, -42, i32::MIN] {
        assert_eq!(
            lp.add_reader(fd, || {}).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            lp.add_writer(fd, || {}).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
    lp.close().unwrap();
}

#[test]
fn a_regular_file_cannot_be_watched() {
    let lp = new_loop();
    let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let drops = counter();
    let g = DropCount(drops.clone());
    let err = lp
        .add_reader(file.as_raw_fd(), move || {
            let _ = &g;
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(
        err.io_error().and_then(|e| e.raw_os_error()),
        Some(1),
        "EPERM: {err}"
    );
    assert_eq!(drops.get(), 1, "the refused callback was dropped");
    assert!(!lp.remove_reader(file.as_raw_fd()).unwrap());
    lp.close().unwrap();
}

#[test]
fn a_pipe_whose_writer_closes_wakes_the_reader() {
    let lp = new_loop();
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    let fd = rd.as_raw_fd();
    let saw_eof = counter();
    let (s, lp2) = (saw_eof.clone(), lp.clone());
    lp.add_reader(fd, move || {
        let mut buf = [0u8; 8];
        let n = rustix::io::read(&rd, &mut buf).unwrap();
        assert_eq!(n, 0, "hang-up reads as EOF");
        bump(&s);
        lp2.remove_reader(fd).unwrap();
        lp2.stop();
    })
    .unwrap();
    // Close the write end from inside the loop; the reader is not readable
    // before that.
    let mut wr = Some(wr);
    lp.call_soon(move || drop(wr.take())).unwrap();
    run_bounded(&lp);
    assert_eq!(saw_eof.get(), 1);
    lp.close().unwrap();
}

#[test]
fn two_hundred_socket_pairs_watched_at_once() {
    const N: usize = 200;
    let lp = new_loop();
    let pairs: Vec<(UnixStream, Rc<UnixStream>)> = (0..N)
        .map(|_| pair())
        .map(|(a, b)| (a, Rc::new(b)))
        .collect();
    let fired = Rc::new(RefCell::new(vec![0u32; N]));
    let total = counter();
    for (i, (_, b)) in pairs.iter().enumerate() {
        let (b2, f, t, lp2) = (b.clone(), fired.clone(), total.clone(), lp.clone());
        let fd = b.as_raw_fd();
        lp.add_reader(fd, move || {
            let mut buf = [0u8; 8];
            assert_eq!((&*b2).read(&mut buf).unwrap(), 1);
            assert_eq!(buf[0] as usize, i % 256);
            f.borrow_mut()[i] += 1;
            lp2.remove_reader(fd).unwrap();
            bump(&t);
            if t.get() == N {
                lp2.stop();
            }
        })
        .unwrap();
    }
    // Write in a scrambled order.
    for k in 0..N {
        let i = (k * 7) % N;
        (&pairs[i].0).write_all(&[(i % 256) as u8]).unwrap();
    }
    run_bounded(&lp);
    assert!(
        fired.borrow().iter().all(|&n| n == 1),
        "{:?}",
        fired.borrow()
    );
    lp.close().unwrap();
}

fn reader_round_trip(lp: &EventLoop) {
    let (mut a, b) = pair();
    let fd = b.as_raw_fd();
    let got = counter();
    let (g, lp2) = (got.clone(), lp.clone());
    let b = Rc::new(b);
    let b2 = b.clone();
    lp.add_reader(fd, move || {
        let mut buf = [0u8; 4];
        assert_eq!((&*b2).read(&mut buf).unwrap(), 4);
        bump(&g);
        lp2.remove_reader(fd).unwrap();
        lp2.stop();
    })
    .unwrap();
    a.write_all(b"abcd").unwrap();
    run_bounded(lp);
    assert_eq!(got.get(), 1);
}

#[test]
fn every_backend_chosen_explicitly_is_the_one_that_runs() {
    let mut backends = vec![Backend::Polling];
    if cfg!(target_os = "linux") {
        // io_uring too: the loop must report the backend it runs
        // (tests/core/uring.rs has the rest of the uring tests).
        backends.extend([Backend::Epoll, Backend::Uring]);
    }
    for backend in backends {
        let lp = EventLoop::builder().backend(backend).build().unwrap();
        assert_eq!(lp.backend(), backend);
        reader_round_trip(&lp);
        // And a thread-safe wake-up on a blocked loop.
        let h = lp.handle();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            wait.recv().unwrap();
            h.call_soon_threadsafe(|| aioloop::running_loop().unwrap().stop())
                .unwrap();
        });
        lp.call_soon(move || go.send(()).unwrap()).unwrap();
        run_bounded(&lp);
        t.join().unwrap();
        lp.close().unwrap();
    }
}

#[test]
fn the_default_backend_follows_aioloop_backend() {
    let lp = new_loop();
    let expected = match std::env::var("AIOLOOP_BACKEND").as_deref() {
        Ok("polling") => Backend::Polling,
        Ok("epoll") => Backend::Epoll,
        // io_uring where the kernel offers it (tests/core/uring.rs needs it).
        Ok("uring") => Backend::Uring,
        _ if cfg!(target_os = "linux") => Backend::Epoll,
        _ => Backend::Polling,
    };
    assert_eq!(lp.backend(), expected);
    lp.close().unwrap();
}

#[test]
fn an_always_readable_fd_does_not_starve_timers_or_callbacks() {
    let lp = new_loop();
    let (mut a, b) = pair();
    a.write_all(b"never drained").unwrap();
    let fd = b.as_raw_fd();
    let reads = counter();
    let r = reads.clone();
    lp.add_reader(fd, move || bump(&r)).unwrap();
    let fired = counter();
    let (f, lp2, r) = (fired.clone(), lp.clone(), reads.clone());
    let t0 = std::time::Instant::now();
    lp.call_later(std::time::Duration::from_millis(10), move || {
        bump(&f);
        assert!(r.get() > 0, "the reader ran meanwhile");
        lp2.stop();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(fired.get(), 1);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(10));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "the timer was held up by the flooding reader: {:?}",
        t0.elapsed()
    );
    lp.remove_reader(fd).unwrap();
    lp.close().unwrap();
}

#[test]
fn sockets_are_passed_by_reference_or_borrowed_fd() {
    let lp = new_loop();
    let (mut a, b) = pair();
    a.write_all(b"x").unwrap();
    let fired = Rc::new(RefCell::new(0));
    let f = fired.clone();
    // A reference to the socket: the socket stays ours (and open).
    lp.add_reader(&b, move || *f.borrow_mut() += 1).unwrap();
    one_iteration(&lp);
    assert_eq!(*fired.borrow(), 1);
    assert!(lp.remove_reader(&b).unwrap());
    // A BorrowedFd works the same way.
    let f = fired.clone();
    lp.add_reader(b.as_fd(), move || *f.borrow_mut() += 1)
        .unwrap();
    one_iteration(&lp);
    assert_eq!(*fired.borrow(), 2);
    assert!(lp.remove_reader(b.as_fd()).unwrap());
    // The socket is still open and usable after all this.
    let mut buf = [0u8; 1];
    assert_eq!((&b).read(&mut buf).unwrap(), 1);
    lp.close().unwrap();
}
