#![cfg(feature = "process")]
//! A child's life through its transport: signals (`kill`, `terminate`,
//! `send_signal`, the `kill` command from another process, a child killing
//! itself), return codes (minus the signal), no-op signals between the
//! exit and `connection_lost`, `ProcessLookupError` (ESRCH) after it, `close` (kills and reaps), `wait`, and reaping in every
//! case: after close, after the handles are dropped, after the spawning
//! future is dropped, after the loop is closed (the orphan reaper), with
//! SIGCHLD ignored (LESSONS 16), and 500 children in flight.
//!
//! Every wait is bounded (the watchdog, or a deadline of `LIMIT` while
//! polling `/proc` for a pid to disappear); children are released through
//! their pipes, never by sleeping.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use crate::process_util::*;
use crate::util::*;
use aioloop::prelude::*;
use aioloop::{Stdio, SubprocessInfo};

const ESRCH: i32 = 3;

fn quiet() -> SubprocessOptions {
    SubprocessOptions::new()
        .stdin(Stdio::DevNull)
        .stdout(Stdio::DevNull)
        .stderr(Stdio::DevNull)
}

/// Spawns `sleep 30` (no pipes) and returns its transport.
fn sleeper(lp: &EventLoop) -> SubprocessTransport {
    let l = lp.clone();
    run(lp, async move {
        let (t, _p) = l
            .subprocess_exec(Rec::dummy, "sleep", ["30"], quiet())
            .await
            .unwrap();
        t
    })
}

fn wait(lp: &EventLoop, t: &SubprocessTransport) -> i32 {
    let w = t.wait();
    run(lp, w).unwrap()
}

#[test]
fn kill_terminate_and_signals_after_exit() {
    let lp = new_loop();
    let t = sleeper(&lp);
    assert_eq!(t.get_returncode(), None);
    assert!(matches!(t.get_extra_info("pid"), Some(SubprocessInfo::Pid(p)) if p == t.get_pid()));
    t.kill().unwrap();
    assert_eq!(wait(&lp, &t), -9);
    assert_eq!(t.get_returncode(), Some(-9));
    // The child is gone: asyncio's ProcessLookupError, nothing sent.
    for r in [t.kill(), t.terminate(), t.send_signal(10)] {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(ESRCH));
    }
    assert!(
        t.get_extra_info("pidfd").is_none(),
        "the pidfd is closed once reaped"
    );
    assert_reaped_soon(t.get_pid());

    let t = sleeper(&lp);
    t.terminate().unwrap();
    assert_eq!(wait(&lp, &t), -15);

    let t = sleeper(&lp);
    // Bad numbers are refused before anything is sent.
    for bad in [0, -1, 65, 1000] {
        let err = t.send_signal(bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}: {err}");
    }
    assert_eq!(t.get_returncode(), None);
    // A real-time signal kills `sleep` (default action).
    t.send_signal(40).unwrap();
    assert_eq!(wait(&lp, &t), -40);
}

/// asyncio's `send_signal` after the exit but before `connection_lost`
/// returned (`_proc` still set; `os.kill`'s `ProcessLookupError` ignored):
/// `kill`, `terminate` and `send_signal` do nothing and succeed, in
/// `process_exited` and in `connection_lost` itself; once `connection_lost`
/// returned (`_proc = None`, `_check_proc`), they are `ProcessLookupError`
/// (ESRCH). Nothing is ever sent to the reaped pid.
#[test]
fn signals_between_exit_and_connection_lost_are_no_ops() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let results: Log<(Ev, Vec<Option<i32>>)> = log();
    let res = results.clone();
    let f = r.factory_with(move |ev, t| {
        if matches!(ev, Ev::Exited(_) | Ev::Lost) {
            let got = [t.kill(), t.terminate(), t.send_signal(10)]
                .into_iter()
                .map(|r| r.err().map(|e| e.raw_os_error().unwrap_or(-1)))
                .collect();
            res.borrow_mut().push((ev.clone(), got));
        }
    });
    let (l, done) = (lp.clone(), r.done.clone());
    let t = run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(
                f,
                "sh",
                ["-c", "echo out; exit 4"],
                SubprocessOptions::new(),
            )
            .await
            .unwrap();
        done.await.unwrap();
        t
    });
    assert_eq!(
        *results.borrow(),
        vec![
            (Ev::Exited(Some(4)), vec![None, None, None]),
            (Ev::Lost, vec![None, None, None]),
        ]
    );
    for r in [t.kill(), t.terminate(), t.send_signal(10)] {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(ESRCH));
    }
}

/// asyncio's `_wait` (what `Process.wait()` awaits): a waiter registered
/// while the child runs is woken by `_call_connection_lost`, so after
/// the child's exit it still waits for the pipes a grandchild holds open,
/// and `connection_lost` has run when it resolves.
#[test]
fn wait_resolves_after_connection_lost() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let evs = r.evs.clone();
    // At the exit, the grandchild still holds stdin and stdout: closing
    // stdin lets it finish, which closes stdout.
    let f = r.factory_with(|ev, t| {
        if let Ev::Exited(_) = ev {
            t.get_pipe_transport(0).unwrap().close();
        }
    });
    let l = lp.clone();
    let (code, seen) = run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(
                f,
                "sh",
                ["-c", "(cat <&0 >/dev/null; echo late) & exit 5"],
                SubprocessOptions::new(),
            )
            .await
            .unwrap();
        let code = t.wait().await.unwrap();
        (code, shape(&evs.borrow()))
    });
    assert_eq!(code, 5);
    assert_eq!(seen.first(), Some(&Ev::Made));
    assert_eq!(seen.last(), Some(&Ev::Lost), "{seen:?}");
    assert_eq!(output(&r.evs.borrow(), 1), b"late\n");
}

#[test]
fn send_signal_reaches_a_python_handler() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let evs = r.evs.clone();
    let code = "import signal, sys\n\
                signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\n\
                print('ready', flush=True)\n\
                while True: signal.pause()";
    let t = run(&lp, async move {
        let (t, p) = l
            .subprocess_exec(f, "python3", ["-c", code], SubprocessOptions::new())
            .await
            .unwrap();
        // Wait for "ready" on stdout: the handler is installed.
        p.wait_until(|_: &Rec| output(&evs.borrow(), 1) == b"ready\n")
            .await;
        t.send_signal(rustix::process::Signal::USR1.as_raw())
            .unwrap();
        done.await.unwrap();
        t
    });
    assert_eq!(t.get_returncode(), Some(7));
}

#[test]
fn the_kill_command_from_another_process() {
    let lp = new_loop();
    let t = sleeper(&lp);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &t.get_pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(wait(&lp, &t), -15);
}

#[test]
fn a_child_that_kills_itself() {
    let lp = new_loop();
    let (_, code) = python(
        &lp,
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        SubprocessOptions::new(),
    );
    assert_eq!(code, Some(-9));
}

#[test]
fn close_kills_reaps_and_ends_the_protocol() {
    let lp = new_loop();
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    let t = run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(f, "sleep", ["30"], SubprocessOptions::new())
            .await
            .unwrap();
        assert!(!t.is_closing());
        t.close();
        assert!(t.is_closing());
        t.close(); // idempotent
        done.await.unwrap();
        t
    });
    assert_eq!(t.get_returncode(), Some(-9));
    let s = shape(&r.evs.borrow());
    assert_eq!(s.first(), Some(&Ev::Made));
    assert_eq!(s.last(), Some(&Ev::Lost));
    assert!(s.contains(&Ev::Exited(Some(-9))));
    assert_eq!(
        s.iter().filter(|e| matches!(e, Ev::PipeLost(..))).count(),
        3
    );
    assert_reaped_soon(t.get_pid());

    // close after the exit sends nothing and changes nothing.
    let t = sleeper(&lp);
    t.kill().unwrap();
    assert_eq!(wait(&lp, &t), -9);
    t.close();
    assert!(t.is_closing());
    assert_eq!(t.get_returncode(), Some(-9));
}

/// Runs the loop until `pid` is reaped (checked every 10 ms), bounded.
fn run_until_reaped(lp: &EventLoop, pid: u32) {
    let l = lp.clone();
    run(lp, async move {
        while !reaped(pid) {
            l.sleep(Duration::from_millis(10)).await.unwrap();
        }
    });
}

#[test]
fn dropped_handles_still_get_the_child_reaped() {
    let lp = new_loop();
    let l = lp.clone();
    let pid = run(&lp, async move {
        let (t, p) = l
            .subprocess_shell(Rec::dummy, "read x; exit 5", SubprocessOptions::new())
            .await
            .unwrap();
        let pid = t.get_pid();
        // Let it go: write its line, then drop every handle.
        let stdin = t.get_pipe_transport(0).unwrap();
        stdin.write(b"go\n").unwrap();
        drop((t, p, stdin));
        pid
    });
    run_until_reaped(&lp, pid);
}

#[test]
fn dropping_the_spawning_future_kills_the_child() {
    let lp = new_loop();
    let l = lp.clone();
    let pid = run(&lp, async move {
        let mut fut =
            Box::pin(l.subprocess_exec(Rec::dummy, "sleep", ["30"], SubprocessOptions::new()));
        // The first poll starts the child (it then connects the pipes);
        // the future is dropped before it completes.
        assert!(futures_lite::future::poll_once(&mut fut).await.is_none());
        let pid = my_children();
        drop(fut);
        pid
    });
    assert_eq!(pid.len(), 1, "one child: {pid:?}");
    let pid = pid[0];
    run_until_reaped(&lp, pid);
}

/// The children this thread started (`/proc/thread-self/children`).
fn my_children() -> Vec<u32> {
    std::fs::read_to_string("/proc/thread-self/children")
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn a_child_outliving_its_loop_goes_to_the_orphan_reaper() {
    let lp = new_loop();
    let l = lp.clone();
    let (t, stdin) = run(&lp, async move {
        let (t, _p) = l
            .subprocess_shell(Rec::dummy, "read x", SubprocessOptions::new())
            .await
            .unwrap();
        // Keep a duplicate of the child's stdin so that it can be released
        // after the loop is gone.
        let fd = match t.get_pipe_transport(0).unwrap().get_extra_info("pipe") {
            Some(ExtraInfo::Fd(fd)) => fd,
            other => panic!("stdin pipe's fd: {other:?}"),
        };
        // SAFETY: `fd` is the open stdin pipe of the transport, which lives
        // for this call; it is duplicated, not taken.
        let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .unwrap();
        (t, dup)
    });
    let pid = t.get_pid();
    lp.close().unwrap();
    drop(lp);
    assert!(!reaped(pid), "still running: nothing killed it");
    // Its loop is gone: no signal may be sent by pid any more (the reaper
    // could reap it at any time and the pid be reused).
    let err = t.kill().unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<LoopError>());
    assert_eq!(inner.map(|e| e.kind()), Some(ErrorKind::Closed), "{err}");
    assert_eq!(t.get_returncode(), None);
    drop(t);
    // Release the child: it exits, and the reaper thread reaps it.
    let mut w = std::fs::File::from(stdin);
    std::io::Write::write_all(&mut w, b"bye\n").unwrap();
    drop(w);
    assert_reaped_soon(pid);
}

#[test]
fn five_hundred_children_in_flight() {
    // Each child holds one pipe and one pidfd in the parent.
    raise_nofile(4096);
    let lp = new_loop();
    let l = lp.clone();
    let results = run(&lp, async move {
        let mut tasks = Vec::new();
        for i in 0..500u32 {
            let l2 = l.clone();
            tasks.push(l.create_task(async move {
                let out = Rc::new(std::cell::RefCell::new(Vec::new()));
                let o = out.clone();
                let opts = SubprocessOptions::new()
                    .stdin(Stdio::DevNull)
                    .stderr(Stdio::DevNull);
                let (t, _p) = l2
                    .subprocess_shell(
                        move || Collect(o),
                        format!("echo {i}; exit {}", i % 200),
                        opts,
                    )
                    .await
                    .unwrap();
                let code = t.wait().await.unwrap();
                // Output may still be in flight after the exit: wait for
                // the pipe's end.
                while t.get_pipe_transport(1).is_some_and(|p| !p.is_closing()) {
                    l2.sleep(Duration::from_millis(5)).await.unwrap();
                }
                let text = String::from_utf8(out.borrow().clone()).unwrap();
                (i, code, text)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.unwrap().await.unwrap());
        }
        results
    });
    assert_eq!(results.len(), 500);
    for (i, code, text) in results {
        assert_eq!(code, (i % 200) as i32);
        assert_eq!(text, format!("{i}\n"));
    }
}

/// Collects stdout.
struct Collect(Rc<std::cell::RefCell<Vec<u8>>>);

impl SubprocessProtocol for Collect {
    fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
        self.0.borrow_mut().extend_from_slice(data);
    }
}

/// LESSONS 16: with SIGCHLD ignored the kernel reaps children itself; a
/// watcher that depends on SIGCHLD would hang. This re-runs the test below
/// in a process that inherits SIGCHLD as ignored (`Python sets it, and it
/// survives `exec`).
#[test]
fn wait_returns_with_sigchld_ignored() {
    let exe = std::env::current_exe().unwrap();
    // Python sets SIGCHLD to SIG_IGN and execs the test binary, which
    // inherits the ignored disposition.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, signal, sys\n\
             signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
             os.execv(sys.argv[1], sys.argv[1:])",
        )
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            test_path(module_path!(), "sigchld_ignored_child").as_str(),
            "--nocapture",
        ])
        .env("AIOLOOP_SIGCHLD_IGNORED", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run by wait_returns_with_sigchld_ignored, in a process with SIGCHLD ignored"]
fn sigchld_ignored_child() {
    assert_eq!(std::env::var("AIOLOOP_SIGCHLD_IGNORED").as_deref(), Ok("1"));
    // SIGCHLD (17) is in the ignored set: bit 16 of SigIgn.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ign = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(ign & (1 << 16), 0, "SIGCHLD is not ignored here");
    let lp = new_loop();
    let l = lp.clone();
    let code = run(&lp, async move {
        let (t, _p) = l
            .subprocess_shell(Rec::dummy, "exit 3", quiet())
            .await
            .unwrap();
        t.wait().await.unwrap()
    });
    // With pidfds the kernel reaped it: status unknown (255, as asyncio).
    // The SIGCHLD watcher installs a handler, so the status is kept.
    assert!(code == 3 || code == 255, "{code}");
}

/// LESSONS 17: the subprocess machinery does not monopolise SIGCHLD. A
/// user's SIGCHLD handler on the same loop runs, and children are still
/// reaped with their status (pidfds need no SIGCHLD; the SIGCHLD watcher
/// chains with the user's action through signal-hook).
#[test]
fn a_user_sigchld_handler_coexists_with_child_watching() {
    let lp = new_loop();
    let seen = Rc::new(std::cell::Cell::new(0u32));
    let s = seen.clone();
    lp.add_signal_handler(rustix::process::Signal::CHILD.as_raw(), move || {
        s.set(s.get() + 1)
    })
    .unwrap();
    let l = lp.clone();
    let code = run(&lp, async move {
        let (t, _p) = l
            .subprocess_shell(Rec::dummy, "exit 6", quiet())
            .await
            .unwrap();
        let code = t.wait().await.unwrap();
        // The handler runs once the loop reads the signal's wake-up.
        while seen.get() == 0 {
            l.sleep(Duration::from_millis(5)).await.unwrap();
        }
        code
    });
    assert_eq!(code, 6);
    assert!(lp
        .remove_signal_handler(rustix::process::Signal::CHILD.as_raw())
        .unwrap());
}

/// Thousands of children alive at once on one loop: 2,000 `cat`s, each
/// blocked on its stdin pipe, all released together, all reaped with
/// their status (each holds a pipe and a pidfd in the parent).
#[test]
fn two_thousand_children_alive_at_once() {
    raise_nofile(8192);
    let lp = new_loop();
    let l = lp.clone();
    let codes = run(&lp, async move {
        let mut children = Vec::new();
        for _ in 0..2000 {
            let opts = SubprocessOptions::new()
                .stdout(Stdio::DevNull)
                .stderr(Stdio::DevNull);
            let (t, _p) = l
                .subprocess_exec(Rec::dummy, "cat", Vec::<&str>::new(), opts)
                .await
                .unwrap();
            children.push(t);
        }
        assert!(children.iter().all(|t| t.get_returncode().is_none()));
        for t in &children {
            t.get_pipe_transport(0).unwrap().close();
        }
        let mut codes = Vec::new();
        for t in &children {
            codes.push(t.wait().await.unwrap());
        }
        codes
    });
    assert_eq!(codes.len(), 2000);
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");
}

/// Raises the soft fd limit to `want` (or the hard limit) if it is lower.
fn raise_nofile(want: u64) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let (soft, hard) = (l.current.unwrap_or(u64::MAX), l.maximum.unwrap_or(u64::MAX));
    if soft < want {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(want.min(hard)),
                maximum: l.maximum,
            },
        )
        .unwrap();
    }
}

/// LESSONS 14: the loop reaps only the children it spawned (never
/// `waitpid(-1)`). A child started by other code in the process (here
/// `std::process::Command`) exits while the loop spawns, watches and reaps
/// children of its own (with either watcher: the SIGCHLD one wakes on the
/// other child's SIGCHLD too); it stays a zombie for its owner, who then
/// gets its real status.
#[test]
fn a_child_spawned_by_other_code_is_never_reaped_by_the_loop() {
    let lp = new_loop();
    let l = lp.clone();
    // One child of ours first, so that the watcher is in place.
    let first = run(&lp, async move {
        let (t, _p) = l
            .subprocess_shell(Rec::dummy, "exit 4", quiet())
            .await
            .unwrap();
        t.wait().await.unwrap()
    });
    assert_eq!(first, 4);
    let mut foreign = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = foreign.id();
    // Bounded wait for it to exit: a zombie, our child, unreaped.
    let zombie = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while !zombie(pid) {
        assert!(std::time::Instant::now() < deadline, "{pid} never exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    // More children of the loop's, spawned and reaped after the other
    // child's exit (and its SIGCHLD).
    let l = lp.clone();
    let codes = run(&lp, async move {
        let mut codes = Vec::new();
        for i in 0..20 {
            let (t, _p) = l
                .subprocess_shell(Rec::dummy, format!("exit {i}"), quiet())
                .await
                .unwrap();
            codes.push(t.wait().await.unwrap());
        }
        codes
    });
    assert_eq!(codes, (0..20).collect::<Vec<i32>>());
    assert!(zombie(pid), "the loop reaped a child it did not spawn");
    assert_eq!(
        foreign.wait().unwrap().code(),
        Some(7),
        "its owner gets the status"
    );
    lp.close().unwrap();
}

/// LESSONS 13: with the epoll (or io_uring) backend on Linux a child is held by a pidfd
/// for its whole life (its signals go through it, so they can never reach
/// a recycled pid): the transport's pidfd names the child
/// (`/proc/self/fdinfo`), from the spawn until the reaping, which closes it
/// in the same step that publishes the return code; after that, signals are
/// refused (ESRCH) without a `kill(pid)`. The SIGCHLD watcher (other
/// backends) has no pidfd; there the return code is published by the same
/// loop-thread step that reaps, and the ESRCH rule is the same.
#[test]
fn a_child_is_held_by_its_pidfd_from_spawn_to_reaping() {
    let lp = new_loop();
    let t = sleeper(&lp);
    let pid = t.get_pid();
    match t.get_extra_info("pidfd") {
        Some(SubprocessInfo::Pidfd(fd)) => {
            assert!(
                matches!(
                    lp.backend(),
                    aioloop::Backend::Epoll | aioloop::Backend::Uring
                ),
                "{:?}",
                lp.backend()
            );
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            assert!(
                info.lines()
                    .any(|l| l.split_whitespace().eq(["Pid:", &pid.to_string()])),
                "pidfd {fd} does not name child {pid}: {info}"
            );
        }
        None => assert_eq!(
            lp.backend(),
            aioloop::Backend::Polling,
            "no pidfd with the epoll and io_uring backends"
        ),
        other => panic!("{other:?}"),
    }
    // Another process ends the child (not through the transport).
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(wait(&lp, &t), -15);
    // Reaped and published together: no pidfd, a return code, and no
    // signal can be sent any more.
    assert!(t.get_extra_info("pidfd").is_none());
    assert_eq!(t.get_returncode(), Some(-15));
    assert_eq!(t.send_signal(10).unwrap_err().raw_os_error(), Some(ESRCH));
    assert_reaped_soon(pid);
    lp.close().unwrap();
}

/// LESSONS 16, beyond one `wait`: with SIGCHLD ignored (inherited through
/// `exec`, as from a parent that set it) every way a child's life ends
/// still completes: many children with pipes in flight, `kill`, `close`,
/// dropped handles. The kernel reaps them itself, so a return code may be
/// 255 ("exited, status unknown", as asyncio) instead of the real one, but
/// nothing waits forever.
#[test]
fn every_child_path_completes_with_sigchld_ignored() {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, signal, sys\n\
             signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
             os.execv(sys.argv[1], sys.argv[1:])",
        )
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            test_path(module_path!(), "sigchld_ignored_every_path_child").as_str(),
            "--nocapture",
        ])
        .env("AIOLOOP_SIGCHLD_IGNORED", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run by every_child_path_completes_with_sigchld_ignored, with SIGCHLD ignored"]
fn sigchld_ignored_every_path_child() {
    assert_eq!(std::env::var("AIOLOOP_SIGCHLD_IGNORED").as_deref(), Ok("1"));
    let lp = new_loop();
    // Many children with a stdout pipe each, in flight together.
    let l = lp.clone();
    let results = run(&lp, async move {
        let mut children = Vec::new();
        for i in 0..50 {
            let out = Rc::new(std::cell::RefCell::new(Vec::new()));
            let o = out.clone();
            let opts = SubprocessOptions::new()
                .stdin(Stdio::DevNull)
                .stderr(Stdio::DevNull);
            let (t, _p) = l
                .subprocess_shell(
                    move || Collect(o),
                    format!("echo {i}; exit {}", i % 7),
                    opts,
                )
                .await
                .unwrap();
            children.push((i, t, out));
        }
        let mut results = Vec::new();
        for (i, t, out) in children {
            let code = t.wait().await.unwrap();
            while t.get_pipe_transport(1).is_some_and(|p| !p.is_closing()) {
                l.sleep(Duration::from_millis(5)).await.unwrap();
            }
            let text = String::from_utf8(out.borrow().clone()).unwrap();
            results.push((i, code, text));
        }
        results
    });
    for (i, code, text) in results {
        assert!(code == i % 7 || code == 255, "{i}: {code}");
        assert_eq!(text, format!("{i}\n"));
    }
    // kill, then wait.
    let t = sleeper(&lp);
    t.kill().unwrap();
    let code = wait(&lp, &t);
    assert!(code == -9 || code == 255, "{code}");
    // close: the protocol's connection_lost still comes.
    let r = Run::new(&lp);
    let (l, f, done) = (lp.clone(), r.factory(), r.done.clone());
    run(&lp, async move {
        let (t, _p) = l
            .subprocess_exec(f, "sleep", ["30"], SubprocessOptions::new())
            .await
            .unwrap();
        t.close();
        done.await.unwrap();
    });
    assert_eq!(shape(&r.evs.borrow()).last(), Some(&Ev::Lost));
    // Dropped handles: the child goes away once released.
    let l = lp.clone();
    let pid = run(&lp, async move {
        let (t, p) = l
            .subprocess_shell(Rec::dummy, "read x; exit 5", SubprocessOptions::new())
            .await
            .unwrap();
        let pid = t.get_pid();
        let stdin = t.get_pipe_transport(0).unwrap();
        stdin.write(b"go\n").unwrap();
        drop((t, p, stdin));
        pid
    });
    run_until_reaped(&lp, pid);
    lp.close().unwrap();
}
