#![cfg(feature = "process")]
//! Unix signal handlers (`add_signal_handler` / `remove_signal_handler`).
//!
//! Signals are process-global, so every signal test lives in this one test
//! binary and takes `SERIAL` first. Signals are sent from other threads (or
//! another process) while the loop runs; nothing sleeps to synchronise.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use aioloop::prelude::*;
use rustix::process::{getpid, kill_process, Signal};
use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the test binary's signal lock. The first call also starts the
/// keeper: a thread with a loop (never run) that handles SIGUSR1 and
/// SIGUSR2 for the binary's whole life. A sender thread of a test may
/// deliver its signal after that test removed its handler; once a
/// signal's last aioloop handler is gone, the default action comes back
/// (which would end the test binary), so the keeper makes sure one always
/// remains. The tests of the default dispositions run in child processes,
/// before taking this lock.
fn serial() -> MutexGuard<'static, ()> {
    static KEEPER: std::sync::Once = std::sync::Once::new();
    KEEPER.call_once(|| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let lp = new_loop();
            lp.add_signal_handler(USR1, || {}).unwrap();
            lp.add_signal_handler(USR2, || {}).unwrap();
            tx.send(()).unwrap();
            loop {
                thread::park();
            }
        });
        rx.recv_timeout(LIMIT).expect("the keeper's handlers");
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const USR1: i32 = Signal::USR1.as_raw();
const USR2: i32 = Signal::USR2.as_raw();

fn send(sig: Signal) {
    kill_process(getpid(), sig).expect("kill");
}

/// Sends `sig` from a new thread once the loop runs.
fn send_when_running(lp: &EventLoop, sig: Signal) {
    lp.call_soon(move || {
        thread::spawn(move || send(sig));
    })
    .unwrap();
}

#[test]
fn wakes_a_blocked_loop_and_runs_on_the_loop_thread() {
    let _g = serial();
    let lp = new_loop();
    let ran_on = Rc::new(Cell::new(None));
    let sent_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (r, l) = (ran_on.clone(), lp.clone());
    let latency = Rc::new(Cell::new(None));
    let (lat, sent) = (latency.clone(), sent_at.clone());
    lp.add_signal_handler(USR1, move || {
        r.set(Some(thread::current().id()));
        lat.set(sent.lock().unwrap().map(|t: Instant| t.elapsed()));
        l.stop();
    })
    .unwrap();
    // Nothing else to do: the loop blocks in the poller with no timeout
    // (the watchdog is another thread) until the signal arrives.
    lp.call_soon(move || {
        thread::spawn(move || {
            *sent_at.lock().unwrap() = Some(Instant::now());
            send(Signal::USR1);
        });
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(ran_on.get(), Some(thread::current().id()));
    let latency = latency.get().expect("sent before the callback ran");
    assert!(latency < Duration::from_secs(5), "woken after {latency:?}");
    assert!(lp.remove_signal_handler(USR1).unwrap());
    lp.close().unwrap();
}

#[test]
fn adding_again_replaces_and_remove_reports() {
    let _g = serial();
    let lp = new_loop();
    let (first, second) = (counter(), counter());
    let f = first.clone();
    lp.add_signal_handler(USR1, move || bump(&f)).unwrap();
    let (s, l) = (second.clone(), lp.clone());
    lp.add_signal_handler(USR1, move || {
        bump(&s);
        l.stop();
    })
    .unwrap();
    send_when_running(&lp, Signal::USR1);
    run_bounded(&lp);
    assert_eq!((first.get(), second.get()), (0, 1));
    assert!(lp.remove_signal_handler(USR1).unwrap());
    assert!(!lp.remove_signal_handler(USR1).unwrap());
    assert_eq!(lp.remove_all_signal_handlers(), 0);
    lp.close().unwrap();
}

#[test]
fn invalid_and_uncatchable_signals_are_refused() {
    let _g = serial();
    let lp = new_loop();
    for sig in [Signal::KILL.as_raw(), Signal::STOP.as_raw(), 0, -1, 65, 100] {
        let err = lp.add_signal_handler(sig, || {}).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidArgument,
            "signal {sig}: {err}"
        );
    }
    for sig in [0, 100] {
        let err = lp.remove_signal_handler(sig).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
    assert!(!lp.remove_signal_handler(Signal::KILL.as_raw()).unwrap());
    lp.close().unwrap();
    let err = lp.add_signal_handler(USR1, || {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(!lp.remove_signal_handler(USR1).unwrap());
}

/// Runs a loop on a new thread with a handler for each of `signals` that
/// stops the loop once all of them arrived; reports readiness on `ready`
/// and returns which signals it saw.
fn loop_thread(
    signals: Vec<i32>,
    remove_first: Option<i32>,
    ready: mpsc::Sender<()>,
) -> thread::JoinHandle<Vec<i32>> {
    thread::spawn(move || {
        let lp = new_loop();
        if let Some(sig) = remove_first {
            lp.add_signal_handler(sig, || panic!("removed handler ran"))
                .unwrap();
            assert!(lp.remove_signal_handler(sig).unwrap());
        }
        let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
        for &sig in &signals {
            let (seen, l, want) = (seen.clone(), lp.clone(), signals.len());
            lp.add_signal_handler(sig, move || {
                if !seen.borrow().contains(&sig) {
                    seen.borrow_mut().push(sig);
                }
                if seen.borrow().len() == want {
                    l.stop();
                }
            })
            .unwrap();
        }
        lp.call_soon(move || ready.send(()).unwrap()).unwrap();
        run_bounded(&lp);
        assert_eq!(lp.remove_all_signal_handlers(), signals.len());
        lp.close().unwrap();
        let mut seen = seen.borrow().clone();
        seen.sort();
        seen
    })
}

#[test]
fn two_loops_on_two_threads_with_different_signals() {
    let _g = serial();
    let (tx, rx) = mpsc::channel();
    let a = loop_thread(vec![USR1], None, tx.clone());
    let b = loop_thread(vec![USR2], None, tx);
    for _ in 0..2 {
        rx.recv_timeout(LIMIT).expect("both loops running");
    }
    send(Signal::USR1);
    send(Signal::USR2);
    assert_eq!(a.join().unwrap(), vec![USR1]);
    assert_eq!(b.join().unwrap(), vec![USR2]);
}

#[test]
fn every_loop_that_registered_a_signal_gets_it() {
    let _g = serial();
    let (tx, rx) = mpsc::channel();
    // The third loop adds and removes its USR1 handler first: that must not
    // disturb the other two.
    let a = loop_thread(vec![USR1], None, tx.clone());
    let b = loop_thread(vec![USR1], Some(USR1), tx.clone());
    let c = loop_thread(vec![USR2], Some(USR1), tx);
    for _ in 0..3 {
        rx.recv_timeout(LIMIT).expect("all loops running");
    }
    send(Signal::USR1);
    assert_eq!(a.join().unwrap(), vec![USR1]);
    assert_eq!(b.join().unwrap(), vec![USR1]);
    send(Signal::USR2);
    assert_eq!(c.join().unwrap(), vec![USR2]);
}

#[test]
fn kill_command_from_another_process() {
    let _g = serial();
    let lp = new_loop();
    let got = counter();
    let (g, l) = (got.clone(), lp.clone());
    lp.add_signal_handler(USR2, move || {
        bump(&g);
        l.stop();
    })
    .unwrap();
    let pid = std::process::id().to_string();
    lp.call_soon(move || {
        thread::spawn(move || {
            let status = std::process::Command::new("kill")
                .args(["-USR2", &pid])
                .status()
                .expect("running kill");
            assert!(status.success());
        });
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(got.get(), 1);
    assert!(lp.remove_signal_handler(USR2).unwrap());
    lp.close().unwrap();
}

#[test]
fn a_signal_storm_is_coalesced_and_survived() {
    const STORM: usize = 10_000;
    let _g = serial();
    let lp = new_loop();
    let during = counter();
    let d = during.clone();
    lp.add_signal_handler(USR1, move || bump(&d)).unwrap();
    let after = Arc::new(AtomicUsize::new(0));
    let a = after.clone();
    let handle = lp.handle();
    lp.call_soon(move || {
        thread::spawn(move || {
            for _ in 0..STORM {
                send(Signal::USR1);
            }
            // The storm is over: on the loop, a new callback (which stops
            // the loop), then one more signal.
            handle
                .call_soon_threadsafe(move || {
                    let lp = running_loop().expect("on the loop");
                    let l = lp.clone();
                    lp.add_signal_handler(USR1, move || {
                        a.fetch_add(1, Ordering::SeqCst);
                        l.stop();
                    })
                    .unwrap();
                    send_when_running(&lp, Signal::USR1);
                })
                .unwrap();
        });
    })
    .unwrap();
    run_bounded(&lp);
    let n = during.get();
    assert!((1..=STORM).contains(&n), "callback ran {n} times");
    assert!(after.load(Ordering::SeqCst) >= 1);
    assert!(lp.remove_signal_handler(USR1).unwrap());
    lp.close().unwrap();
}

#[test]
fn callback_may_remove_itself_and_close_releases() {
    let _g = serial();
    let lp = new_loop();
    let ran = counter();
    let (r, l) = (ran.clone(), lp.clone());
    lp.add_signal_handler(USR2, move || {
        bump(&r);
        assert!(l.remove_signal_handler(USR2).unwrap());
        l.stop();
    })
    .unwrap();
    send_when_running(&lp, Signal::USR2);
    run_bounded(&lp);
    assert_eq!(ran.get(), 1);
    assert!(!lp.remove_signal_handler(USR2).unwrap());

    // Closing the loop releases its handlers; another loop still works.
    lp.add_signal_handler(USR2, || panic!("closed loop's handler ran"))
        .unwrap();
    lp.close().unwrap();
    assert!(!lp.remove_signal_handler(USR2).unwrap());
    let lp2 = new_loop();
    let l = lp2.clone();
    lp2.add_signal_handler(USR2, move || l.stop()).unwrap();
    send_when_running(&lp2, Signal::USR2);
    run_bounded(&lp2);
    assert_eq!(lp2.remove_all_signal_handlers(), 1);
    lp2.close().unwrap();
}

#[test]
fn a_panicking_callback_is_reported_and_stays_installed() {
    let _g = serial();
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let ran = counter();
    let (r, l) = (ran.clone(), lp.clone());
    lp.add_signal_handler(USR1, move || {
        bump(&r);
        if r.get() == 1 {
            send_when_running(&l, Signal::USR1);
            panic!("boom");
        }
        l.stop();
    })
    .unwrap();
    send_when_running(&lp, Signal::USR1);
    run_bounded(&lp);
    assert_eq!(ran.get(), 2);
    assert_eq!(seen.borrow().len(), 1);
    assert!(lp.remove_signal_handler(USR1).unwrap());
    lp.close().unwrap();
}

/// In a child process (this test binary, running only this test): after the
/// last SIGINT handler is removed, SIGINT terminates the process again.
#[test]
fn sigint_default_is_restored_after_the_last_handler() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "AIOLOOP_SIGINT_CHILD";
    let sigint = Signal::INT.as_raw();
    if std::env::var_os(CHILD).is_some() {
        let lp = new_loop();
        let l = lp.clone();
        lp.add_signal_handler(sigint, move || l.stop()).unwrap();
        send_when_running(&lp, Signal::INT);
        run_bounded(&lp);
        assert!(lp.remove_signal_handler(sigint).unwrap());
        send(Signal::INT);
        // The signal is pending or handled by now on some thread; if it
        // was not fatal, say so in the exit status.
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            thread::yield_now();
        }
        std::process::exit(3);
    }
    let _g = serial();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigint_default_is_restored_after_the_last_handler",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running the child");
    assert_eq!(status.signal(), Some(sigint), "child ended with {status:?}");
}

/// The number of fds this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// asyncio's `close()` of a Unix loop removes its signal handlers: here in
/// a child process (this test binary, started by Python with SIGUSR2
/// ignored, running only this test), closing a loop with handlers for
/// SIGUSR1, SIGUSR2 and SIGTERM closes their descriptors at once, and each
/// signal behaves as before: SIGUSR2 is still ignored, SIGUSR1 terminates
/// the process again (its default).
#[test]
fn close_removes_the_handlers_closes_their_fds_and_restores_dispositions() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "AIOLOOP_CLOSE_SIGNALS_CHILD";
    const NAME: &str = "close_removes_the_handlers_closes_their_fds_and_restores_dispositions";
    if std::env::var_os(CHILD).is_some() {
        let (_, ignored) = process_dispositions();
        let ignored = u64::from_str_radix(&ignored, 16).unwrap();
        assert_ne!(
            ignored & (1 << (USR2 - 1)),
            0,
            "SIGUSR2 is not ignored here"
        );
        // Counted before the loop exists: close() releases the loop's own
        // poller and wake-up descriptors as well as the handlers'.
        let before = open_fds();
        let lp = new_loop();
        let l = lp.clone();
        lp.add_signal_handler(USR1, move || l.stop()).unwrap();
        lp.add_signal_handler(USR2, || panic!("a closed loop's handler ran"))
            .unwrap();
        lp.add_signal_handler(Signal::TERM.as_raw(), || {}).unwrap();
        send_when_running(&lp, Signal::USR1);
        run_bounded(&lp);
        assert!(open_fds() > before);
        lp.close().unwrap();
        assert_eq!(
            open_fds(),
            before,
            "the handlers' and the loop's descriptors are closed"
        );
        // Ignored before: still ignored.
        send(Signal::USR2);
        // The default before: terminates the process.
        send(Signal::USR1);
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            thread::yield_now();
        }
        std::process::exit(3);
    }
    let _g = serial();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, signal, sys\n\
             signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n\
             os.execv(sys.argv[1], sys.argv[1:])",
        )
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("running the child");
    assert_eq!(
        out.status.signal(),
        Some(USR1),
        "child ended with {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------
// LESSONS 18 (docs/LESSONS.md): other code's signal handlers, and loops on
// worker threads

/// The signal masks of the process (`/proc/self/status`): caught, ignored.
fn process_dispositions() -> (String, String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("SigCgt:"), field("SigIgn:"))
}

/// LESSONS 18: creating, running and closing a loop on a worker thread
/// (callbacks, timers, a wake-up from another thread, an executor job)
/// leaves the process-wide signal dispositions exactly as they were; only
/// `add_signal_handler` touches them.
#[test]
fn a_loop_on_a_worker_thread_never_touches_process_signal_state() {
    let _g = serial();
    let before = process_dispositions();
    thread::spawn(|| {
        let lp = new_loop();
        let l = lp.clone();
        let h = lp.handle();
        let out = lp
            .run_until_complete(async move {
                l.sleep(Duration::from_millis(1)).await.unwrap();
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    h.call_soon_threadsafe(move || tx.send(()).unwrap())
                        .unwrap()
                });
                let v = l.run_in_executor(|| 6 * 7).unwrap().await.unwrap();
                while rx.try_recv().is_err() {
                    l.sleep(Duration::from_millis(1)).await.unwrap();
                }
                v
            })
            .unwrap();
        assert_eq!(out, 42);
        lp.close().unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(process_dispositions(), before);
}

static FOREIGN_WINCH: AtomicUsize = AtomicUsize::new(0);

extern "C" fn foreign_winch(_sig: i32) {
    FOREIGN_WINCH.fetch_add(1, Ordering::SeqCst);
}

extern "C" {
    /// The C library's `signal(2)` (BSD semantics in glibc and musl: the
    /// handler stays installed).
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// Waits (bounded) until the non-aioloop handler has run `n` times.
fn until_foreign(n: usize) {
    let deadline = Instant::now() + LIMIT;
    while FOREIGN_WINCH.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the non-aioloop handler never ran"
        );
        thread::yield_now();
    }
}

/// LESSONS 18: a handler installed by other code (not aioloop) keeps
/// working while a loop handles the same signal (both run: signal-hook
/// chains to the previous action) and after the loop removes its handler.
/// SIGWINCH: ignored by default, so a lost handler fails the test instead of
/// killing the process.
#[test]
fn a_handler_installed_by_other_code_survives_a_loop_handling_the_signal() {
    let _g = serial();
    let winch = Signal::WINCH.as_raw();
    // SAFETY: the handler only touches an atomic (async-signal-safe), and
    // no other test of this binary uses SIGWINCH.
    let _old = unsafe { signal(winch, foreign_winch) };
    send(Signal::WINCH);
    until_foreign(1);

    let lp = new_loop();
    let got = counter();
    let (g, l) = (got.clone(), lp.clone());
    lp.add_signal_handler(winch, move || {
        bump(&g);
        l.stop();
    })
    .unwrap();
    send_when_running(&lp, Signal::WINCH);
    run_bounded(&lp);
    assert_eq!(got.get(), 1, "the loop's handler ran");
    until_foreign(2);

    assert!(lp.remove_signal_handler(winch).unwrap());
    send(Signal::WINCH);
    until_foreign(3);
    lp.close().unwrap();
    send(Signal::WINCH);
    until_foreign(4);
    assert_eq!(got.get(), 1);
}

#[test]
fn a_signal_stream_yields_deliveries_ends_when_replaced_and_removes_its_handler_on_drop() {
    use futures_lite::StreamExt as _;
    let _g = serial();
    let lp = new_loop();
    // The named constants need no libc.
    assert_eq!(aioloop::SIGUSR1, USR1);
    let mut usr1 = lp.signal(aioloop::SIGUSR1).unwrap();
    assert_eq!(usr1.signal(), USR1);

    // Two deliveries, each awaited (once through recv, once as a Stream).
    send_when_running(&lp, Signal::USR1);
    let dog = Watchdog::start(&lp);
    let mut usr1 = lp
        .run_until_complete(async move {
            assert_eq!(usr1.recv().await, Some(()));
            usr1
        })
        .unwrap();
    send_when_running(&lp, Signal::USR1);
    let mut usr1 = lp
        .run_until_complete(async move {
            assert_eq!(usr1.next().await, Some(()));
            usr1
        })
        .unwrap();

    // Replaced by add_signal_handler: the stream ends, and dropping it
    // leaves the new handler alone.
    let hits = counter();
    let h = hits.clone();
    lp.add_signal_handler(USR1, move || bump(&h)).unwrap();
    let usr1 = lp
        .run_until_complete(async move {
            assert_eq!(usr1.recv().await, None);
            usr1
        })
        .unwrap();
    drop(usr1);
    let stopper = lp.clone();
    let h = hits.clone();
    lp.add_signal_handler(USR1, move || {
        bump(&h);
        stopper.stop();
    })
    .unwrap();
    send_when_running(&lp, Signal::USR1);
    lp.run_forever().unwrap();
    assert_eq!(hits.get(), 1);
    assert!(lp.remove_signal_handler(USR1).unwrap());

    // Dropped while it is the handler: the handler goes with it.
    let usr2 = lp.signal(USR2).unwrap();
    drop(usr2);
    assert!(!lp.remove_signal_handler(USR2).unwrap());
    dog.disarm();
    lp.close().unwrap();
}
