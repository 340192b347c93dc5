#![cfg(feature = "process")]
//! Subprocesses through the facade (`subprocess_exec`, `subprocess_shell`,
//! `SubprocessTransport`, `SubprocessProtocol`), with real children: `sh`,
//! `echo`, `cat`, `head`, `sleep`, `env`, Python, and the `kill` command.
//!
//! - the protocol's order: `connection_made` first, output per fd,
//!   `pipe_connection_lost` per pipe, `process_exited`, and `connection_lost`
//!   exactly once, last, after the exit and every pipe;
//! - options: PIPE / DEVNULL / inherit / an fd / stderr merged into stdout,
//!   env (set, clear), cwd, process group, new session, no inherited fds
//!   but `pass_fds`;
//! - return codes: exit status, minus the signal (kill, terminate,
//!   send_signal, the `kill` command from another process); signals after
//!   the exit are never sent (no-ops until `connection_lost` returned, then
//!   `ESRCH`, ProcessLookupError);
//! - faults: a program that does not exist (typed error, no fd leaked), a
//!   child that closes stdout early, a child that exits while we write to
//!   its stdin (BrokenPipe on pipe 0, no panic), a grandchild holding the
//!   pipes, a panicking protocol;
//! - reaping: no zombie after close, after dropping the transport, after
//!   closing the loop (the orphan reaper); 500 children in flight.
//!
//! No sleeps as synchronisation: the loop is awaited on protocol events,
//! children are released through pipes and FIFOs, and every wait is bounded
//! by the watchdog.
//!
//! Its own test binary: two tests count the descriptors of the whole process
//! (`/proc/self/fd`) under `process_util::exclusive()`, which only the tests
//! of this binary take.

mod process_util;
mod util;

use std::io;
use std::os::fd::AsRawFd;

use aioloop::prelude::*;
use aioloop::{Stdio, SubprocessInfo};
use process_util::*;
use util::*;

#[test]
fn exec_delivers_output_then_exit_then_connection_lost_once() {
    let _guard = shared();
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let t = run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(f, "echo", ["hello", "child"], SubprocessOptions::new())
            .await
            .unwrap();
        done.await.unwrap();
        t
    });
    let evs = r.evs.borrow().clone();
    assert_eq!(output(&evs, 1), b"hello child\n");
    assert_eq!(output(&evs, 2), b"");
    let shape = shape(&evs);
    assert_eq!(shape.first(), Some(&Ev::Made));
    assert_eq!(shape.last(), Some(&Ev::Lost));
    assert_eq!(shape.iter().filter(|e| **e == Ev::Lost).count(), 1);
    for fd in [0, 1, 2] {
        assert_eq!(
            shape
                .iter()
                .filter(|e| matches!(e, Ev::PipeLost(f, None) if *f == fd))
                .count(),
            1,
            "pipe {fd} lost once: {shape:?}"
        );
    }
    assert!(shape.contains(&Ev::Exited(Some(0))), "{shape:?}");
    assert_eq!(t.get_returncode(), Some(0));
    // After connection_lost the pipes are released.
    assert!(t.get_pipe_transport(1).is_none());
    assert_reaped_soon(t.get_pid());
}

#[test]
fn shell_gives_exit_status_and_separate_stderr() {
    let _guard = shared();
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let t = run(&lp, async move {
        let (t, _p) = l
            .subprocess_shell(
                f,
                "echo out; echo err >&2; exit 3",
                SubprocessOptions::new(),
            )
            .await
            .unwrap();
        done.await.unwrap();
        t
    });
    let evs = r.evs.borrow().clone();
    assert_eq!(output(&evs, 1), b"out\n");
    assert_eq!(output(&evs, 2), b"err\n");
    assert_eq!(t.get_returncode(), Some(3));
    match t.get_extra_info("args") {
        Some(SubprocessInfo::Args(a)) => assert_eq!(a[0], "/bin/sh"),
        other => panic!("args: {other:?}"),
    }
}

#[test]
fn stderr_merged_into_stdout_arrives_as_fd_1() {
    let _guard = shared();
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let t = run(&lp, async move {
        let opts = SubprocessOptions::new()
            .stdin(Stdio::DevNull)
            .stderr(Stdio::Stdout);
        let (t, _p) = l
            .subprocess_shell(f, "echo one; echo two >&2; echo three", opts)
            .await
            .unwrap();
        assert!(t.get_pipe_transport(0).is_none());
        assert!(t.get_pipe_transport(2).is_none());
        assert!(t.get_pipe_transport(1).is_some());
        done.await.unwrap();
        t
    });
    let evs = r.evs.borrow().clone();
    assert_eq!(output(&evs, 1), b"one\ntwo\nthree\n");
    assert!(!evs
        .iter()
        .any(|e| matches!(e, Ev::Data(2, _) | Ev::PipeLost(2, _))));
    assert_eq!(t.get_returncode(), Some(0));
}

#[test]
fn devnull_stdin_and_an_fd_for_stdout() {
    let _guard = shared();
    let lp = new_loop();
    let dir = std::env::temp_dir().join(format!("aioloop-sub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.txt");
    let file = std::fs::File::create(&path).unwrap();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let t = run(&lp, async move {
        let opts = SubprocessOptions::new()
            .stdin(Stdio::DevNull)
            .stdout(file)
            .stderr(Stdio::DevNull);
        // cat with /dev/null as stdin ends at once, writing nothing; then
        // echo writes to the file.
        let (t, _p) = l
            .subprocess_shell(f, "cat; echo into-the-file", opts)
            .await
            .unwrap();
        for fd in 0..3 {
            assert!(t.get_pipe_transport(fd).is_none());
        }
        done.await.unwrap();
        t
    });
    assert_eq!(t.get_returncode(), Some(0));
    assert_eq!(std::fs::read(&path).unwrap(), b"into-the-file\n");
    // No pipe: connection_made, process_exited, connection_lost.
    assert_eq!(
        shape(&r.evs.borrow()),
        vec![Ev::Made, Ev::Exited(Some(0)), Ev::Lost]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cat_echoes_four_mebibytes_through_stdin_and_stdout() {
    let _guard = shared();
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sent = data.clone();
    let t = run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(f, "cat", Vec::<&str>::new(), SubprocessOptions::new())
            .await
            .unwrap();
        let stdin = t.get_pipe_transport(0).unwrap();
        stdin.write(&sent).unwrap();
        stdin.write_eof().unwrap();
        done.await.unwrap();
        t
    });
    let evs = r.evs.borrow().clone();
    assert!(
        output(&evs, 1) == data,
        "cat's output differs from its input"
    );
    assert_eq!(t.get_returncode(), Some(0));
    // 4 MiB into a 64 KiB pipe crossed the high-water mark: paused, then
    // resumed, in that order.
    let s = shape(&evs);
    let pause = s.iter().position(|e| *e == Ev::Pause);
    let resume = s.iter().position(|e| *e == Ev::Resume);
    assert!(
        pause.is_some() && resume.is_some() && pause < resume,
        "{s:?}"
    );
}

#[test]
fn env_and_cwd() {
    let _guard = shared();
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    run(&lp, async move {
        let opts = SubprocessOptions::new()
            .env("AIOLOOP_TEST_VAR", "forty two")
            .env_remove("HOME")
            .cwd("/");
        let (_t, _p) = l
            .subprocess_shell(
                f,
                "echo \"$AIOLOOP_TEST_VAR\"; echo \"${HOME-unset}\"; pwd",
                opts,
            )
            .await
            .unwrap();
        done.await.unwrap();
    });
    assert_eq!(output(&r.evs.borrow(), 1), b"forty two\nunset\n/\n");

    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    run(&lp, async move {
        let opts = SubprocessOptions::new().env_clear().env("ONLY", "this");
        let (_t, _p) = l
            .subprocess_exec(f, "/usr/bin/env", Vec::<&str>::new(), opts)
            .await
            .unwrap();
        done.await.unwrap();
    });
    assert_eq!(output(&r.evs.borrow(), 1), b"ONLY=this\n");
}

#[test]
fn new_session_and_process_group() {
    let _guard = shared();
    let lp = new_loop();
    let probe = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))";
    let ids = |s: &str| -> Vec<i64> { s.split_whitespace().map(|x| x.parse().unwrap()).collect() };

    let (out, code) = python(&lp, probe, SubprocessOptions::new().start_new_session(true));
    assert_eq!(code, Some(0));
    let v = ids(&out);
    assert_eq!(
        (v[1], v[2]),
        (v[0], v[0]),
        "session and group led by the child"
    );

    let (out, _) = python(&lp, probe, SubprocessOptions::new().process_group(0));
    let v = ids(&out);
    assert_eq!(v[1], v[0], "own process group");
    assert_ne!(v[2], v[0], "same session as the parent");

    let (out, _) = python(&lp, probe, SubprocessOptions::new());
    let v = ids(&out);
    assert_ne!(v[1], v[0], "the parent's process group by default");
}

/// The fds a `python3` child has open, in order (its `listdir` fd
/// included).
fn child_fds(lp: &EventLoop, opts: SubprocessOptions) -> Vec<i32> {
    let (out, code) = python(
        lp,
        "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))",
        opts,
    );
    assert_eq!(code, Some(0));
    out.trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|x| x.parse().unwrap())
        .collect()
}

#[test]
fn the_child_inherits_no_fd_of_the_loop() {
    let _guard = shared();
    let lp = new_loop();
    // The parent has the loop's epoll and eventfd, and a few sockets.
    let _keep: Vec<_> = (0..4)
        .map(|_| std::os::unix::net::UnixStream::pair().unwrap())
        .collect();
    // 0, 1, 2 and listdir's own fd: not even an fd this test process
    // inherited without O_CLOEXEC from whoever started it.
    assert_eq!(child_fds(&lp, SubprocessOptions::new()), [0, 1, 2, 3]);
}

/// asyncio's `close_fds=True` and `pass_fds=`: the child gets 0, 1, 2 and
/// the passed fds (at their numbers), never an fd the parent left without
/// O_CLOEXEC.
#[test]
fn the_child_inherits_only_stdio_and_pass_fds_even_without_cloexec() {
    let _guard = exclusive();
    let lp = new_loop();
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // Inheritable copies (`dup` does not copy O_CLOEXEC).
    let leaky = rustix::io::dup(&w).unwrap();
    let passed = rustix::io::dup(&r).unwrap();
    assert!(!rustix::io::fcntl_getfd(&leaky)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    let (leaky_n, passed_n) = (leaky.as_raw_fd(), passed.as_raw_fd());

    let fds = child_fds(&lp, SubprocessOptions::new());
    assert!(!fds.contains(&leaky_n), "{fds:?} has {leaky_n}");
    assert_eq!(fds, [0, 1, 2, 3]);

    // The passed fd works in the child, at its number; the parent keeps it.
    rustix::io::write(&w, b"through pass_fds").unwrap();
    drop(w);
    let (out, code) = python(
        &lp,
        &format!(
            "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd'))); \
             print(os.read({passed_n}, 100).decode())"
        ),
        SubprocessOptions::new().pass_fds([passed_n, 1]),
    );
    assert_eq!(code, Some(0));
    let mut expect = vec![0, 1, 2, 3, passed_n];
    expect.sort();
    assert_eq!(out, format!("{expect:?}\nthrough pass_fds\n"));
    assert!(
        rustix::io::fcntl_getfd(&passed).is_ok(),
        "the parent's copy stays"
    );
    assert!(!rustix::io::fcntl_getfd(&passed)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    drop((r, passed, leaky));

    // An fd that is not open is refused before anything is spawned.
    let l = lp.clone();
    let err = run(&lp, async move {
        l.subprocess_exec(
            Rec::dummy,
            "true",
            [""; 0],
            SubprocessOptions::new().pass_fds([passed_n]),
        )
        .await
        .unwrap_err()
    });
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn bad_options_are_typed_errors() {
    let _guard = exclusive();
    let fds = open_fds();
    let lp = new_loop();
    let l = lp.clone();
    run(&lp, async move {
        for opts in [
            SubprocessOptions::new().stdin(Stdio::Stdout),
            SubprocessOptions::new().stdout(Stdio::Stdout),
            SubprocessOptions::new()
                .process_group(0)
                .start_new_session(true),
            SubprocessOptions::new().process_group(-5),
        ] {
            let err = l
                .subprocess_exec(Rec::dummy, "true", Vec::<&str>::new(), opts)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
    });
    lp.close().unwrap();
    drop(lp);
    assert_eq!(open_fds(), fds, "no fd leaked");
}

#[test]
fn a_program_that_does_not_exist_is_not_found_and_leaks_nothing() {
    let _guard = exclusive();
    let before = open_fds();
    let lp = new_loop();
    let l = lp.clone();
    run(&lp, async move {
        // A directory is not a program: PermissionDenied, as Popen's EACCES.
        for (program, kind) in [
            (
                "/nonexistent/aioloop-no-such-program",
                io::ErrorKind::NotFound,
            ),
            ("aioloop-no-such-program-in-path", io::ErrorKind::NotFound),
            ("/", io::ErrorKind::PermissionDenied),
        ] {
            let err = l
                .subprocess_exec(Rec::dummy, program, ["x"], SubprocessOptions::new())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), kind, "{program}: {err}");
        }
    });
    lp.close().unwrap();
    drop(lp);
    assert_eq!(open_fds(), before, "no fd leaked");
}

#[test]
fn closed_loop_is_refused() {
    let _guard = shared();
    let lp = new_loop();
    lp.close().unwrap();
    let fut = lp.subprocess_exec(
        Rec::dummy,
        "true",
        Vec::<&str>::new(),
        SubprocessOptions::new(),
    );
    let err = futures_lite::future::block_on(fut).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<LoopError>());
    assert_eq!(inner.map(|e| e.kind()), Some(ErrorKind::Closed), "{err}");
}
