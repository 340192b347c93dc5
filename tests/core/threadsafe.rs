//! The thread-safe door: call_soon_threadsafe waking a blocked loop, many
//! sender threads with per-thread order, LoopHandle::stop, closed loops, the
//! Send + Sync bound, and tasks woken from other threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::util::*;
use aioloop::{running_loop, ErrorKind, LoopHandle};

// LoopHandle crosses threads; checked at compile time.
const _: () = {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn check() {
        send_sync::<LoopHandle>();
    }
    let _ = check;
};

#[test]
fn call_soon_threadsafe_wakes_a_loop_blocked_with_nothing_to_do() {
    // Ping-pong: a loop callback hands a token to a thread; the thread sends
    // the next callback back. Between the two the loop has no ready work and
    // no timer, so it blocks in the poller with no timeout; only the wake-up
    // of call_soon_threadsafe can get it going again.
    const ROUNDS: usize = 200;
    let lp = new_loop();
    let handle = lp.handle();
    let (to_thread, from_loop) = mpsc::channel::<usize>();
    let back = to_thread.clone();
    let pinger = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            let n = from_loop.recv().unwrap();
            let back = back.clone();
            handle
                .call_soon_threadsafe(move || {
                    if n + 1 == ROUNDS {
                        running_loop().expect("runs on the loop").stop();
                    } else {
                        back.send(n + 1).unwrap();
                    }
                })
                .unwrap();
        }
    });
    let start = Instant::now();
    lp.call_soon(move || to_thread.send(0).unwrap()).unwrap();
    run_bounded(&lp);
    pinger.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{ROUNDS} wake-ups took {:?}",
        start.elapsed()
    );
    lp.close().unwrap();
}

#[test]
fn eight_threads_times_a_thousand_callbacks_all_arrive_in_per_thread_order() {
    const THREADS: usize = 8;
    const EACH: usize = 1000;
    let lp = new_loop();
    let seen = Arc::new(Mutex::new(Vec::with_capacity(THREADS * EACH)));
    let start = Arc::new(Barrier::new(THREADS));
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (h, seen, start) = (lp.handle(), seen.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let seen = seen.clone();
                    h.call_soon_threadsafe(move || {
                        let mut s = seen.lock().unwrap();
                        s.push((t, i));
                        if s.len() == THREADS * EACH {
                            running_loop().unwrap().stop();
                        }
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    run_bounded(&lp);
    for s in senders {
        s.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), THREADS * EACH);
    for t in 0..THREADS {
        let from_t: Vec<usize> = seen
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(
            from_t,
            (0..EACH).collect::<Vec<_>>(),
            "thread {t} out of order"
        );
    }
    drop(seen);
    lp.close().unwrap();
}

#[test]
fn loop_handle_stop_from_another_thread() {
    let lp = new_loop();
    let handle = lp.handle();
    let (go, wait) = mpsc::channel::<()>();
    let stopper = std::thread::spawn(move || {
        wait.recv().unwrap();
        handle.stop().unwrap();
    });
    // Tell the thread to stop us once the loop is running; then the loop
    // has nothing to do and blocks until the stop request wakes it.
    lp.call_soon(move || go.send(()).unwrap()).unwrap();
    run_bounded(&lp);
    stopper.join().unwrap();
    assert!(!lp.is_running());
    // The request was consumed: the next run goes on until its own stop.
    let ran = counter();
    let (r, lp2) = (ran.clone(), lp.clone());
    lp.call_soon(move || {
        bump(&r);
        let lp3 = lp2.clone();
        lp2.call_soon(move || lp3.stop()).unwrap();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(ran.get(), 1);
    lp.close().unwrap();
}

#[test]
fn call_soon_threadsafe_on_a_closed_loop_is_refused_and_drops_the_callback() {
    let lp = new_loop();
    let handle = lp.handle();
    lp.close().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let g = SendDropCount(drops.clone());
    let err = std::thread::spawn(move || {
        assert!(handle.is_closed());
        let e = handle.call_soon_threadsafe(move || drop(g)).unwrap_err();
        let s = handle.stop().unwrap_err();
        (e.kind(), s.kind())
    })
    .join()
    .unwrap();
    assert_eq!(err, (ErrorKind::Closed, ErrorKind::Closed));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the refused callback was dropped"
    );
    // The loop thread's own shortcut too.
    assert_eq!(
        lp.call_soon_threadsafe(|| {}).unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn call_soon_threadsafe_from_the_loop_thread_itself() {
    let lp = new_loop();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    lp.call_soon_threadsafe(move || {
        h.fetch_add(1, Ordering::SeqCst);
        running_loop().unwrap().stop();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    lp.close().unwrap();
}

#[test]
fn a_task_woken_by_an_executor_job_completes() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let (release, blocked) = mpsc::channel::<u64>();
    let out = lp
        .run_until_complete(async move {
            let job = lp2
                .run_in_executor(move || blocked.recv().unwrap() * 2)
                .unwrap();
            let mut job = std::pin::pin!(job);
            // The job waits for us, so the first poll is pending; release
            // it, and the worker thread's wake-up resumes this task.
            assert!(futures_lite::future::poll_once(job.as_mut())
                .await
                .is_none());
            release.send(21).unwrap();
            job.await.unwrap()
        })
        .unwrap();
    assert_eq!(out, 42);
    lp.close().unwrap();
}

/// A one-shot future completed by another thread through the waker it was
/// given: the wake comes from off the loop thread.
#[derive(Default)]
struct Shared {
    value: Option<u32>,
    waker: Option<Waker>,
}
struct OneShot(Arc<Mutex<Shared>>);

impl Future for OneShot {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        let mut s = self.0.lock().unwrap();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[test]
fn a_task_woken_from_another_thread_completes() {
    let lp = new_loop();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (go, wait) = mpsc::channel::<()>();
    let s = shared.clone();
    let waker_thread = std::thread::spawn(move || {
        for round in 0..50u32 {
            wait.recv().unwrap();
            let w = {
                let mut g = s.lock().unwrap();
                g.value = Some(round);
                g.waker.take()
            };
            w.expect("the task registered its waker").wake();
        }
    });
    let dog = Watchdog::start(&lp);
    let got = lp
        .run_until_complete(async move {
            let mut got = Vec::new();
            for _ in 0..50 {
                let fut = OneShot(shared.clone());
                let mut fut = std::pin::pin!(fut);
                // Register the waker first, then let the thread fire.
                assert!(futures_lite::future::poll_once(fut.as_mut())
                    .await
                    .is_none());
                go.send(()).unwrap();
                got.push(fut.await);
            }
            got
        })
        .unwrap();
    dog.disarm();
    waker_thread.join().unwrap();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    lp.close().unwrap();
}

#[test]
fn a_handle_outliving_its_loop_reports_it_closed() {
    let lp = new_loop();
    let handle = lp.handle();
    drop(lp); // dropped without close()
    let drops = Arc::new(AtomicUsize::new(0));
    let g = SendDropCount(drops.clone());
    let err = std::thread::spawn(move || {
        let r = handle.call_soon_threadsafe(move || drop(g));
        (handle.is_closed(), r.map_err(|e| e.kind()))
    })
    .join()
    .unwrap();
    assert_eq!(
        err,
        (true, Err(ErrorKind::Closed)),
        "work sent to a dropped loop would never run"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// LESSONS 21 (docs/LESSONS.md): a wake-up that cannot be sent is not
// swallowed

const WAKE_CHILD: &str = "AIOLOOP_WAKE_FAILURE_CHILD";

/// The eventfds of this process (`/proc/self/fd`).
fn eventfds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            (target.to_str()? == "anon_inode:[eventfd]")
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether thread `tid` of this process sleeps in the poller (state S, and
/// in epoll or io_uring_enter when the kernel says where).
fn asleep_in_the_poller(tid: &str) -> bool {
    let task = format!("/proc/self/task/{tid}");
    let Ok(stat) = std::fs::read_to_string(format!("{task}/stat")) else {
        return false;
    };
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    if !state.starts_with('S') {
        return false;
    }
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    let syscall = std::fs::read_to_string(format!("{task}/syscall")).unwrap_or_default();
    let nr = syscall.split_whitespace().next().unwrap_or("");
    // epoll_wait, epoll_pwait, epoll_pwait2; io_uring_enter (426) for the
    // io_uring backend.
    let in_epoll = wchan.contains("epoll")
        || wchan.contains("io_cqring_wait")
        || (cfg!(target_arch = "x86_64") && ["232", "281", "441", "426"].contains(&nr))
        || (cfg!(target_arch = "aarch64") && ["22", "441", "426"].contains(&nr));
    in_epoll || (wchan.is_empty() && nr.is_empty())
}

/// Waits (bounded) until thread `tid` sleeps in the poller.
fn until_asleep(tid: &str) {
    let deadline = Instant::now() + LIMIT;
    while !asleep_in_the_poller(tid) {
        assert!(Instant::now() < deadline, "the loop thread never slept");
        std::thread::yield_now();
    }
}

/// LESSONS 21 (CPython's `_write_to_self()` swallowed `OSError`, so a loop
/// whose wake-up write failed hung silently). Run in a child process: the
/// loop's wake-up eventfd is replaced behind its back by a read-only
/// `/dev/null` (every write to it fails with EBADF, as a seccomp denial
/// would). While the loop sleeps, with only a backstop timer to end the
/// sleep:
/// - `call_soon_threadsafe` returns the error, every time (not only the
///   first: a failed wake-up must not leave "already notified" behind);
/// - a task woken by an executor job (a waker has nowhere to return an
///   error) gets the failure reported through the exception handler, at the
///   latest when the loop next wakes.
///
/// With `AIOLOOP_BACKEND=polling` the check cannot be made: `polling`'s
/// `Poller::notify` ignores the write's result (polling 3.11 `epoll.rs`).
#[test]
fn a_wake_up_that_cannot_be_sent_is_reported_not_swallowed() {
    if std::env::var_os(WAKE_CHILD).is_some() {
        return wake_failure_child();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test_path(
                module_path!(),
                "a_wake_up_that_cannot_be_sent_is_reported_not_swallowed",
            )
            .as_str(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WAKE_CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wake_failure_child() {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    let before = eventfds();
    let lp = new_loop();
    if lp.backend() == aioloop::Backend::Polling {
        println!("skipped: polling's notify() ignores write errors");
        return;
    }
    let ours: Vec<i32> = eventfds()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    assert_eq!(ours.len(), 1, "the loop's wake-up eventfd: {ours:?}");
    // Break it: the fd number now names a read-only /dev/null.
    let devnull = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: the number is the loop's open eventfd; it is replaced in place
    // and never closed here (the loop still owns the number).
    let mut target = unsafe { OwnedFd::from_raw_fd(ours[0]) };
    rustix::io::dup2(&devnull, &mut target).unwrap();
    let _ = target.into_raw_fd();
    let seen = record_exceptions(&lp);
    let tid = std::fs::read_link("/proc/thread-self")
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    // call_soon_threadsafe while the loop sleeps: an error, every time.
    let (handle, t) = (lp.handle(), tid.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let sender = std::thread::spawn(move || {
        until_asleep(&t);
        let mut results = Vec::new();
        for _ in 0..2 {
            let r = r.clone();
            results.push(
                handle
                    .call_soon_threadsafe(move || {
                        r.fetch_add(1, Ordering::SeqCst);
                    })
                    .map_err(|e| e.to_string()),
            );
        }
        results
    });
    let l = lp.clone();
    lp.call_later(Duration::from_millis(500), move || l.stop())
        .unwrap();
    let dog = Watchdog::start(&lp);
    lp.run_forever().unwrap();
    dog.disarm();
    let results = sender.join().unwrap();
    for r in &results {
        let err = r.as_ref().map_err(|e| e.as_str()).expect_err(&format!(
            "a wake-up that failed was reported as sent: {results:?}"
        ));
        assert!(err.contains("waking the event loop"), "{err}");
    }
    // The callbacks stayed queued and ran once the timer woke the loop.
    assert_eq!(ran.load(Ordering::SeqCst), 2);

    // A task woken from an executor thread: reported, not swallowed. A
    // try counts when the wake-up was lost (the task resumed only after the
    // backstop timer); one where the job finished before the loop slept
    // needed no wake-up and is tried again.
    for attempt in 0.. {
        assert!(attempt < 10, "the job never finished while the loop slept");
        seen.borrow_mut().clear();
        let l = lp.clone();
        let t = tid.clone();
        let lost = lp
            .run_until_complete(async move {
                let backstop = l.call_later(Duration::from_millis(300), || {}).unwrap();
                let job = l.run_in_executor(move || until_asleep(&t)).unwrap();
                job.await.unwrap();
                backstop.cancel();
                // Resumed only once the backstop was due: the wake-up was lost.
                l.time() >= backstop.when()
            })
            .unwrap();
        if !lost {
            continue;
        }
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        let text = format!("{} {:?}", seen[0].message, seen[0].error);
        assert!(text.contains("wak"), "{text}");
        assert!(
            seen[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("Bad file descriptor"),
            "{text}"
        );
        break;
    }
    lp.close().unwrap();
}

/// A future that never completes and hands its waker out each poll.
struct Parked(Arc<Mutex<Option<Waker>>>);

impl Future for Parked {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *self.0.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn a_task_woken_on_its_thread_while_the_loop_is_not_running_runs_in_the_next_run() {
    let lp = new_loop();
    let slot = Arc::new(Mutex::new(None::<Waker>));
    let polls = Arc::new(AtomicUsize::new(0));
    let (s, p) = (slot.clone(), polls.clone());
    let task = lp
        .create_task(async move {
            let mut parked = Parked(s);
            std::future::poll_fn(|cx| {
                p.fetch_add(1, Ordering::SeqCst);
                Pin::new(&mut parked).poll(cx)
            })
            .await
        })
        .unwrap();
    one_iteration(&lp);
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    // The loop is not running: the wake-up finds the loop by its id and
    // queues the task through the thread-safe door.
    let waker = slot.lock().unwrap().take().expect("the task was polled");
    waker.wake();
    one_iteration(&lp);
    assert_eq!(
        polls.load(Ordering::SeqCst),
        2,
        "woken while idle, run next"
    );
    task.cancel(None);
    let t = task.clone();
    // The awaited task's cancellation cancels the awaiting one too.
    assert_kind(try_run(&lp, t), ErrorKind::Cancelled);
    assert!(task.cancelled());
    lp.close().unwrap();
}

#[test]
fn a_waker_woken_on_another_thread_after_its_loop_is_gone_does_nothing() {
    let slot = Arc::new(Mutex::new(None::<Waker>));
    {
        let lp = new_loop();
        let s = slot.clone();
        let _task = lp.create_task(Parked(s)).unwrap();
        one_iteration(&lp);
        lp.close().unwrap();
    } // the loop is dropped; the task's waker lives on
    let waker = slot.lock().unwrap().take().expect("the task was polled");
    let t = std::thread::spawn(move || {
        waker.wake_by_ref();
        waker.wake();
    });
    t.join()
        .expect("waking a task of a dropped loop must not panic");
}
