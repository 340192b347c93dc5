//! The io_uring backend (`Backend::Uring`), on loops that ask for it
//! explicitly, so these run in every configuration of the suite (the suite
//! also runs whole with `AIOLOOP_BACKEND=uring`): how it is chosen and
//! reported, the fallback to epoll when io_uring is refused (a child process
//! under a seccomp filter), level triggering, errors at `add`, and the stale
//! completions a completion ring can hold (delete then re-add, close after
//! delete, read -> write).
//!
//! These tests need io_uring (Linux 5.13 or later, not disabled by
//! `kernel.io_uring_disabled` or a seccomp policy); `uring_loop` says so
//! plainly when the kernel refuses it.
#![cfg(target_os = "linux")]

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::util::*;
use aioloop::{Backend, ErrorKind, EventLoop};

fn uring_loop() -> EventLoop {
    let lp = EventLoop::builder()
        .backend(Backend::Uring)
        .build()
        .unwrap();
    assert_eq!(
        lp.backend(),
        Backend::Uring,
        "io_uring is unavailable on this machine (kernel.io_uring_disabled = {:?}); \
         the uring tests need it",
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default()
    );
    lp
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Runs `n` iterations (`one_iteration`: they do not block, and each
/// submits the registrations' polls and reads what completed).
fn iterations(lp: &EventLoop, n: usize) {
    for _ in 0..n {
        one_iteration(lp);
    }
}

/// Runs iterations until `cond` holds, for at most `LIMIT` of wall time.
fn iterate_until(lp: &EventLoop, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "the condition never held");
        one_iteration(lp);
    }
}

// ---------------------------------------------------------------------------
// Choosing the backend

const CHILD: &str = "AIOLOOP_URING_TEST_CHILD";

/// Runs test `name` of this module alone in a child process with `env`,
/// the seccomp `filter` (if any) installed before `exec`; returns its
/// stdout and stderr.
fn run_child(name: &str, env: &[(&str, &str)], filter: Option<i32>) -> (String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        test_path(module_path!(), name).as_str(),
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1")
    .env_remove("AIOLOOP_BACKEND")
    .env_remove("AIOLOOP_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(errno) = filter {
        // SAFETY: the closure runs in the forked child before exec and only
        // makes two prctl calls on data built before the fork (no
        // allocation, no lock).
        let prog = seccomp::deny_io_uring_setup(errno);
        unsafe {
            cmd.pre_exec(move || seccomp::install(&prog));
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name}:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn aioloop_backend_uring_chooses_uring_for_new_loops() {
    if std::env::var_os(CHILD).is_some() {
        let lp = new_loop();
        assert_eq!(lp.backend(), Backend::Uring);
        println!("child backend {:?}", lp.backend());
        lp.close().unwrap();
        return;
    }
    let (stdout, _) = run_child(
        "aioloop_backend_uring_chooses_uring_for_new_loops",
        &[("AIOLOOP_BACKEND", "uring")],
        None,
    );
    assert!(stdout.contains("child backend Uring"), "{stdout}");
}

/// The child of the fallback test: io_uring_setup is refused by seccomp.
fn fallback_child() {
    let lp = EventLoop::builder()
        .backend(Backend::Uring)
        .debug(true)
        .build()
        .unwrap();
    assert_eq!(lp.backend(), Backend::Epoll, "fell back to epoll");
    // And the fallback loop works: a reader and a timer.
    let (mut a, b) = pair();
    let got = counter();
    let (g, lp2, b) = (got.clone(), lp.clone(), Rc::new(b));
    let b2 = b.clone();
    lp.add_reader(b.as_raw_fd(), move || {
        let mut buf = [0u8; 1];
        assert_eq!((&*b2).read(&mut buf).unwrap(), 1);
        bump(&g);
        lp2.remove_reader(b2.as_raw_fd()).unwrap();
        lp2.stop();
    })
    .unwrap();
    a.write_all(b"x").unwrap();
    run_bounded(&lp);
    assert_eq!(got.get(), 1);
    // Loops without debug mode (and no logger) fall back silently.
    let quiet = EventLoop::builder()
        .backend(Backend::Uring)
        .debug(false)
        .build()
        .unwrap();
    assert_eq!(quiet.backend(), Backend::Epoll);
    println!("child fell back to {:?}", lp.backend());
}

#[test]
fn where_seccomp_refuses_io_uring_the_loop_falls_back_to_epoll_with_one_debug_line() {
    if std::env::var_os(CHILD).is_some() {
        return fallback_child();
    }
    let name = "where_seccomp_refuses_io_uring_the_loop_falls_back_to_epoll_with_one_debug_line";
    // ENOSYS: what an old kernel or Docker's default profile answers;
    // EPERM: what kernel.io_uring_disabled (or an LSM) answers.
    for (errno, reason) in [
        (libc::ENOSYS, "refuses io_uring_setup"),
        (libc::EPERM, "io_uring_disabled"),
    ] {
        let (stdout, stderr) = run_child(name, &[], Some(errno));
        assert!(stdout.contains("child fell back to Epoll"), "{stdout}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("io_uring is unavailable"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one debug line, for the debug loop only: {stderr}"
        );
        assert!(lines[0].contains(reason), "{}", lines[0]);
        assert!(lines[0].contains("using the Epoll backend"), "{}", lines[0]);
    }
}

/// A seccomp filter that makes `io_uring_setup` fail with a chosen errno,
/// for the fallback test's child (no real kernel without io_uring is at
/// hand, and the sysctl is machine-wide).
mod seccomp {
    /// `io_uring_setup`'s number (the same in the generic table, x86_64's
    /// and aarch64's).
    const NR_IO_URING_SETUP: u32 = 425;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

    /// The program: load the syscall number; if it is io_uring_setup,
    /// return `errno`; else allow.
    pub(super) fn deny_io_uring_setup(errno: i32) -> Vec<libc::sock_filter> {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        vec![
            // offsetof(struct seccomp_data, nr) == 0
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
            jump(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                NR_IO_URING_SETUP,
                0,
                1,
            ),
            stmt(
                libc::BPF_RET | libc::BPF_K,
                SECCOMP_RET_ERRNO | (errno as u32 & 0xffff),
            ),
            stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_ALLOW),
        ]
    }

    /// Installs `prog` on the calling thread (in a child before exec).
    pub(super) fn install(prog: &[libc::sock_filter]) -> std::io::Result<()> {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: plain prctl calls; `fprog` points at `prog`, alive for
        // the call, which copies the program into the kernel.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Readiness semantics (the same as the epoll backend's)

#[test]
fn on_uring_a_reader_runs_every_iteration_while_its_fd_stays_readable() {
    let lp = uring_loop();
    let (mut a, b) = pair();
    a.write_all(b"never drained").unwrap();
    let runs = counter();
    let r = runs.clone();
    lp.add_reader(b.as_raw_fd(), move || bump(&r)).unwrap();
    iterations(&lp, 10);
    assert_eq!(runs.get(), 10, "once per iteration, level-triggered");
    // Drained: it stops running; new data: it runs again.
    let mut buf = [0u8; 64];
    let _ = (&b).read(&mut buf).unwrap();
    // The reader's poll was re-armed by each iteration; the first one after
    // draining may still carry the last completion.
    iterations(&lp, 2);
    let before = runs.get();
    iterations(&lp, 3);
    assert_eq!(runs.get(), before, "not readable: not run");
    a.write_all(b"more").unwrap();
    iterate_until(&lp, || runs.get() > before);
    lp.remove_reader(b.as_raw_fd()).unwrap();
    lp.close().unwrap();
}

#[test]
fn on_uring_a_writer_runs_every_iteration_while_its_fd_stays_writable() {
    let lp = uring_loop();
    let (a, _b) = pair();
    let runs = counter();
    let r = runs.clone();
    lp.add_writer(a.as_raw_fd(), move || bump(&r)).unwrap();
    iterations(&lp, 5);
    assert_eq!(runs.get(), 5);
    assert!(lp.remove_writer(a.as_raw_fd()).unwrap());
    iterations(&lp, 2);
    assert_eq!(runs.get(), 5, "removed: never again");
    lp.close().unwrap();
}

#[test]
fn on_uring_an_error_is_reported_to_the_reader_and_the_writer() {
    // A reader on a pipe's write end is never readable, until the read end
    // closes: then POLLERR, reported as readable and writable.
    let lp = uring_loop();
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    let fd = wr.as_raw_fd();
    let (reads, writes) = (counter(), counter());
    let r = reads.clone();
    lp.add_reader(fd, move || bump(&r)).unwrap();
    iterations(&lp, 2);
    assert_eq!(reads.get(), 0);
    drop(rd);
    iterate_until(&lp, || reads.get() > 0);
    let w = writes.clone();
    lp.add_writer(fd, move || bump(&w)).unwrap();
    iterate_until(&lp, || writes.get() > 0);
    lp.remove_reader(fd).unwrap();
    lp.remove_writer(fd).unwrap();
    lp.close().unwrap();
}

#[test]
fn on_uring_add_reports_bad_fds_at_once_as_epoll_does() {
    let lp = uring_loop();
    // A closed fd: EBADF.
    let (a, _b) = UnixStream::pair().unwrap();
    let high: OwnedFd = rustix::io::fcntl_dupfd_cloexec(a.as_fd(), 900).unwrap();
    let closed = high.as_raw_fd();
    drop(high);
    let err = lp.add_reader(closed, || {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(err.io_error().and_then(|e| e.raw_os_error()), Some(9));
    // A regular file: EPERM.
    let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let err = lp.add_writer(file.as_raw_fd(), || {}).unwrap_err();
    assert_eq!(err.io_error().and_then(|e| e.raw_os_error()), Some(1));
    assert!(!lp.remove_reader(closed).unwrap());
    assert!(!lp.remove_writer(file.as_raw_fd()).unwrap());
    one_iteration(&lp);
    lp.close().unwrap();
}

/// epoll answers `EPOLL_CTL_MOD` with ENOENT when the fd number now names
/// another file (the watched one was closed by a dup2 over it); so does
/// the uring backend, at once, and the registration is forgotten.
#[test]
fn on_uring_a_change_on_an_fd_that_now_names_another_file_fails_at_once() {
    let lp = uring_loop();
    let (_pa, a) = pair();
    let (_pb, b) = pair();
    let mut fd_a: OwnedFd = a.into();
    let n = fd_a.as_raw_fd();
    lp.add_reader(n, || {}).unwrap();
    one_iteration(&lp);
    rustix::io::dup2(&b, &mut fd_a).unwrap();
    let err = lp.add_writer(n, || {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(
        err.io_error().and_then(|e| e.raw_os_error()),
        Some(2),
        "ENOENT: {err}"
    );
    assert!(lp.has_reader(n), "the reader stays as it was");
    assert!(!lp.has_writer(n));
    one_iteration(&lp);
    lp.close().unwrap();
}

#[test]
fn on_uring_timers_never_fire_early() {
    let lp = uring_loop();
    let late = Rc::new(RefCell::new(Vec::new()));
    for ms in [1u64, 2, 3, 5, 8, 13] {
        let (l, lp2) = (late.clone(), lp.clone());
        let t0 = Instant::now();
        let delay = Duration::from_micros(ms * 700);
        lp.call_later(delay, move || {
            l.borrow_mut().push(t0.elapsed() >= delay);
            if l.borrow().len() == 6 {
                lp2.stop();
            }
        })
        .unwrap();
    }
    run_bounded(&lp);
    assert_eq!(*late.borrow(), vec![true; 6]);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Stale completions

/// A poll of fd A completes (A turns readable) but is not reaped before A's
/// reader is removed; B then takes A's registry key. A's completion must
/// not make B's reader run.
#[test]
fn on_uring_a_completion_of_a_deleted_registration_is_not_reported() {
    let lp = uring_loop();
    let (mut pa, a) = pair();
    let (_pb, b) = pair();
    let a_runs = counter();
    let r = a_runs.clone();
    lp.add_reader(a.as_raw_fd(), move || bump(&r)).unwrap();
    // Arm A's poll in the kernel (A is not readable yet).
    iterations(&lp, 1);
    assert_eq!(a_runs.get(), 0);
    // A turns readable: its completion is posted now, unreaped.
    pa.write_all(b"x").unwrap();
    assert!(lp.remove_reader(a.as_raw_fd()).unwrap());
    // B reuses A's key (the registry's free slot); B is never readable.
    let b_runs = counter();
    let r = b_runs.clone();
    lp.add_reader(b.as_raw_fd(), move || bump(&r)).unwrap();
    iterations(&lp, 3);
    assert_eq!(b_runs.get(), 0, "A's stale completion was reported for B");
    assert_eq!(a_runs.get(), 0, "A was removed before its completion");
    lp.remove_reader(b.as_raw_fd()).unwrap();
    lp.close().unwrap();
}

/// Delete, close the fd, and register a new socket that got the same fd
/// number: only the new socket's readiness is reported.
#[test]
fn on_uring_the_same_fd_number_registered_again_sees_only_its_new_file() {
    let lp = uring_loop();
    let (mut pa, a) = pair();
    let old_runs = counter();
    let r = old_runs.clone();
    let n = a.as_raw_fd();
    lp.add_reader(n, move || bump(&r)).unwrap();
    iterations(&lp, 1);
    pa.write_all(b"old").unwrap();
    assert!(lp.remove_reader(n).unwrap());
    // Number n now names a new socket: dup2 closes A's file and puts C's
    // in its place in one step (no other thread can take the number).
    let (mut pc, c) = pair();
    let mut fd_n: OwnedFd = a.into();
    rustix::io::dup2(&c, &mut fd_n).unwrap();
    assert_eq!(fd_n.as_raw_fd(), n);
    drop(c);
    let c = UnixStream::from(fd_n);
    let new_runs = counter();
    let r = new_runs.clone();
    lp.add_reader(n, move || bump(&r)).unwrap();
    iterations(&lp, 3);
    assert_eq!(new_runs.get(), 0, "the old file's data was reported");
    assert_eq!(old_runs.get(), 0);
    pc.write_all(b"new").unwrap();
    iterate_until(&lp, || new_runs.get() > 0);
    let mut buf = [0u8; 8];
    assert_eq!((&c).read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"new");
    lp.remove_reader(n).unwrap();
    lp.close().unwrap();
}

/// io_uring's poll holds a reference on the socket's file: after
/// `remove_reader` and `close` the socket must really close at once (the
/// peer sees EOF) without the loop running again.
#[test]
fn on_uring_a_socket_closed_after_remove_reader_closes_at_once() {
    let lp = uring_loop();
    let (peer, a) = pair();
    let runs = counter();
    let r = runs.clone();
    lp.add_reader(a.as_raw_fd(), move || bump(&r)).unwrap();
    // Arm the poll in the kernel.
    iterations(&lp, 1);
    assert!(lp.remove_reader(a.as_raw_fd()).unwrap());
    drop(a);
    // The loop does not run again: the peer must see EOF now.
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4];
    let t0 = Instant::now();
    let n = (&peer).read(&mut buf).unwrap();
    assert_eq!(n, 0, "EOF");
    assert!(t0.elapsed() < LIMIT);
    assert_eq!(runs.get(), 0);
    lp.close().unwrap();
}

/// The same after the registration changed in the same iteration (the
/// old poll's removal queued by the change, not yet submitted): a reader,
/// a writer added and removed, then the reader removed and the fd closed.
#[test]
fn on_uring_a_socket_closed_after_modify_and_remove_closes_at_once() {
    let lp = uring_loop();
    let (peer, a) = pair();
    let fd = a.as_raw_fd();
    lp.add_reader(fd, || {}).unwrap();
    iterations(&lp, 1);
    lp.add_writer(fd, || {}).unwrap();
    assert!(lp.remove_writer(fd).unwrap());
    assert!(lp.remove_reader(fd).unwrap());
    drop(a);
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!((&peer).read(&mut buf).unwrap(), 0, "EOF");
    lp.close().unwrap();
}

/// The same for the loop's `close()`: every watched socket is let go.
#[test]
fn on_uring_close_lets_go_of_every_watched_socket() {
    let lp = uring_loop();
    let (peer, a) = pair();
    lp.add_reader(a.as_raw_fd(), || {}).unwrap();
    iterations(&lp, 1);
    lp.close().unwrap();
    drop(a);
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!((&peer).read(&mut buf).unwrap(), 0, "EOF");
}

/// A reader turned into a writer (add_writer, then remove_reader): a read
/// completion of the old poll must not reach anything, and the writer runs.
#[test]
fn on_uring_modify_from_read_to_write_reports_only_writability() {
    let lp = uring_loop();
    let (mut peer, a) = pair();
    let fd = a.as_raw_fd();
    let (reads, writes) = (counter(), counter());
    let r = reads.clone();
    lp.add_reader(fd, move || bump(&r)).unwrap();
    iterations(&lp, 1);
    // Readable now (completion posted, unreaped), then read -> write.
    peer.write_all(b"data").unwrap();
    let w = writes.clone();
    lp.add_writer(fd, move || bump(&w)).unwrap();
    assert!(lp.remove_reader(fd).unwrap());
    iterations(&lp, 3);
    assert_eq!(reads.get(), 0, "the removed reader ran");
    assert_eq!(writes.get(), 3, "the writer runs every iteration");
    // And back: write -> read, with the data still there.
    let r = reads.clone();
    lp.add_reader(fd, move || bump(&r)).unwrap();
    assert!(lp.remove_writer(fd).unwrap());
    iterations(&lp, 2);
    assert_eq!(reads.get(), 2);
    assert_eq!(writes.get(), 3);
    lp.remove_reader(fd).unwrap();
    lp.close().unwrap();
}
