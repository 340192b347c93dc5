//! Loop-core behaviours of issue 15, each as asyncio has it:
//! - `call_soon_threadsafe` and `call_soon` share one FIFO order by time of
//!   call;
//! - a delay too large to represent (`Duration::MAX`) waits forever, until
//!   cancelled, as asyncio's `inf`; it keeps neither `run_forever` from
//!   blocking nor `run_until_complete` from finishing;
//! - `shutdown_default_executor(timeout)` returns when the timeout expires,
//!   with asyncio's warning, even while the executor's threads still run;
//! - `add_reader`/`add_writer`/`remove_*` on an fd that a transport, a
//!   server, a pipe or a datagram endpoint owns is refused, naming the
//!   owner; once it closes the fd is free again;
//! - a slow-callback report names a timer as a `TimerHandle` and a task step
//!   by the task's name.
//!
//! Peers are real (loopback TCP, pipes, threads released by channels); no
//! sleep synchronises anything, and every wait is bounded by a watchdog.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::*;
use aioloop::{ErrorKind, EventLoop, Executor, Job};

/// The order in which `Send` callbacks ran.
type SendLog = Arc<Mutex<Vec<&'static str>>>;

fn push(log: &SendLog, what: &'static str) -> impl FnOnce() + Send + 'static {
    let log = log.clone();
    move || log.lock().unwrap().push(what)
}

/// Runs `lp.sleep(d)` to its end under a watchdog.
fn sleep_on(lp: &EventLoop, d: Duration) {
    let l = lp.clone();
    let dog = Watchdog::start(lp);
    lp.run_until_complete(async move { l.sleep(d).await })
        .unwrap()
        .unwrap();
    dog.disarm();
}

// ---------------------------------------------------------------------------
// 1. One FIFO for call_soon_threadsafe and call_soon.

/// Sends `what` through `lp`'s thread-safe door from a new thread, and
/// returns once that call returned (the join orders it before what follows).
fn send_from_another_thread(lp: &EventLoop, log: &SendLog, what: &'static str) {
    let (handle, f) = (lp.handle(), push(log, what));
    std::thread::spawn(move || handle.call_soon_threadsafe(f).unwrap())
        .join()
        .unwrap();
}

#[test]
fn threadsafe_callback_from_another_thread_before_call_soon_runs_first() {
    let lp = new_loop();
    let log: SendLog = Arc::default();
    let (l, log2) = (lp.clone(), log.clone());
    lp.call_soon(move || {
        send_from_another_thread(&l, &log2, "threadsafe 1");
        l.call_soon(push(&log2, "soon 1")).unwrap();
        send_from_another_thread(&l, &log2, "threadsafe 2");
        l.call_soon(push(&log2, "soon 2")).unwrap();
        let l2 = l.clone();
        l.call_soon(move || l2.stop()).unwrap();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(
        *log.lock().unwrap(),
        ["threadsafe 1", "soon 1", "threadsafe 2", "soon 2"]
    );
    lp.close().unwrap();
}

#[test]
fn threadsafe_callback_from_the_loop_thread_keeps_its_place() {
    let lp = new_loop();
    let log: SendLog = Arc::default();
    let handle = lp.handle();
    handle.call_soon_threadsafe(push(&log, "a")).unwrap();
    lp.call_soon(push(&log, "b")).unwrap();
    lp.call_soon_threadsafe(push(&log, "c")).unwrap();
    lp.call_soon_threadsafe(push(&log, "d")).unwrap();
    lp.call_soon(push(&log, "e")).unwrap();
    one_iteration(&lp);
    assert_eq!(*log.lock().unwrap(), ["a", "b", "c", "d", "e"]);
    // The same while the loop runs, from a callback.
    log.lock().unwrap().clear();
    let (l, log2) = (lp.clone(), log.clone());
    lp.call_soon(move || {
        l.call_soon(push(&log2, "1")).unwrap();
        l.handle().call_soon_threadsafe(push(&log2, "2")).unwrap();
        l.call_soon(push(&log2, "3")).unwrap();
        let l2 = l.clone();
        l.call_soon(move || l2.stop()).unwrap();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(*log.lock().unwrap(), ["1", "2", "3"]);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// 2. A delay too large to represent waits forever.

#[test]
fn sleep_duration_max_waits_until_cancelled() {
    let lp = new_loop();
    let l = lp.clone();
    let outcome = Rc::new(Cell::new(None));
    let o = outcome.clone();
    let task = lp
        .create_task(async move {
            let r = l.sleep(Duration::MAX).await;
            o.set(Some(r.map_err(|e| e.kind())));
        })
        .unwrap();
    // Many iterations pass (a timer fires in each of them) without the
    // sleep ending.
    let l = lp.clone();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    lp.run_until_complete(async move {
        for _ in 0..20 {
            l.sleep(Duration::from_millis(1)).await.unwrap();
            t.set(t.get() + 1);
        }
    })
    .unwrap();
    assert_eq!(ticks.get(), 20);
    assert_eq!(outcome.get(), None, "sleep(Duration::MAX) ended early");
    assert!(!task.done());
    task.cancel(None);
    let dog = Watchdog::start(&lp);
    let _ = lp.run_until_complete(task).unwrap();
    dog.disarm();
    assert_eq!(outcome.get(), Some(Err(ErrorKind::Cancelled)));
    lp.close().unwrap();
}

#[test]
fn call_later_duration_max_is_pending_until_cancelled() {
    let lp = new_loop();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let timer = lp
        .call_later(Duration::MAX, move || {
            let _keep = &guard;
            panic!("an infinite timer ran");
        })
        .expect("call_later(Duration::MAX) schedules a timer that never fires");
    // asyncio's `when()` is `inf`; here the latest instant the clock holds.
    let century = Duration::from_secs(3600 * 24 * 365 * 100);
    assert!(timer.when() > lp.time() + century, "{timer:?}");
    // It keeps neither run_until_complete from finishing...
    sleep_on(&lp, Duration::from_millis(2));
    assert!(!timer.cancelled());
    assert_eq!(drops.get(), 0, "the loop keeps the callback alive");
    // ...nor run_forever from blocking: nothing is due, so the poll has no
    // timeout (a thread wakes the loop to stop it).
    assert_eq!(
        lp.timer_heap_len(),
        0,
        "an infinite timer is not in the heap"
    );
    let handle = lp.handle();
    let stopper = std::thread::spawn(move || handle.stop().unwrap());
    run_bounded(&lp);
    stopper.join().unwrap();
    timer.cancel();
    assert!(timer.cancelled());
    assert_eq!(drops.get(), 1, "cancelling drops the callback");
    lp.close().unwrap();
}

/// Replaces timers.rs's `an_unrepresentable_delay_is_an_invalid_argument`
/// (the old behaviour): on a virtual clock too, an infinite timer is never
/// the next deadline, so the clock is not jumped to it.
#[test]
fn a_virtual_clock_never_jumps_to_an_infinite_timer() {
    let clock = aioloop::VirtualClock::new();
    let lp = EventLoop::builder()
        .virtual_clock(clock.clone())
        .build()
        .unwrap();
    let start = lp.time();
    for delay in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        lp.call_later(delay, || panic!("an infinite timer ran"))
            .unwrap();
    }
    assert_eq!(lp.timer_heap_len(), 0);
    sleep_on(&lp, Duration::from_secs(3600));
    assert_eq!(lp.time() - start, Duration::from_secs(3600));
    lp.close().unwrap();
}

#[test]
fn infinite_timers_are_dropped_by_close() {
    let lp = new_loop();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let timer = lp.call_later(Duration::MAX, move || drop(guard)).unwrap();
    let at = lp
        .call_at(
            lp.time() + Duration::from_secs(3600 * 24 * 365 * 100),
            || {},
        )
        .unwrap();
    assert!(timer.when() > at.when());
    one_iteration(&lp);
    drop(timer);
    assert_eq!(
        drops.get(),
        0,
        "dropping the handle does not cancel the timer"
    );
    lp.close().unwrap();
    assert_eq!(drops.get(), 1, "close drops what the infinite timer held");
}

#[test]
fn wait_for_and_threadsafe_timers_accept_duration_max() {
    let lp = new_loop();
    let l = lp.clone();
    let out = lp
        .run_until_complete(async move {
            let never = l.handle().call_later_threadsafe(Duration::MAX, || {
                panic!("an infinite thread-safe timer ran")
            })?;
            let v = aioloop::wait_for(
                async {
                    l.sleep(Duration::from_millis(1)).await?;
                    Ok::<_, aioloop::LoopError>(7)
                },
                Duration::MAX,
            )
            .await?;
            assert!(!never.fired());
            never.cancel();
            Ok::<_, aioloop::LoopError>(v)
        })
        .unwrap();
    assert_eq!(out.unwrap(), 7);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// 3. shutdown_default_executor returns at its timeout.

const JOIN_WARNING: &str = "The executor did not finishing joining its threads within";

/// Runs `body` on a loop of its own thread and returns its result, or fails
/// the test (after `release`, so that nothing stays blocked) when it does not
/// finish within the watchdog's limit.
fn on_loop_thread<T: Send + 'static>(
    release: mpsc::Sender<()>,
    body: impl FnOnce(EventLoop) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let lp = new_loop();
        let out = body(lp.clone());
        let _ = tx.send(out);
        drop(lp);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => {
            t.join().unwrap();
            out
        }
        Err(_) => {
            let _ = release.send(());
            panic!("shutdown_default_executor did not return within {LIMIT:?}");
        }
    }
}

#[test]
fn shutdown_default_executor_returns_at_its_timeout_with_a_warning() {
    capture_warnings();
    let (release, blocked) = mpsc::channel::<()>();
    let blocked = Arc::new(Mutex::new(blocked));
    let b = blocked.clone();
    let (out, warnings, still_running) = on_loop_thread(release.clone(), move |lp| {
        let job = lp
            .run_in_executor(move || {
                let _ = b.lock().unwrap().recv();
            })
            .unwrap();
        let start = Instant::now();
        let out = lp
            .run_until_complete(lp.shutdown_default_executor(Some(Duration::from_millis(50))))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
        let still = lp.executor_jobs_in_flight();
        drop(job);
        (
            out.map_err(|e| e.to_string()),
            warnings_on_this_thread(),
            still,
        )
    });
    assert_eq!(out, Ok(()), "the timeout is a warning, not an error");
    assert_eq!(still_running, 1, "the job was still blocked");
    assert!(
        warnings
            .iter()
            .any(|w| w == &format!("{JOIN_WARNING} 0.05 seconds.")),
        "{warnings:?}"
    );
    release.send(()).unwrap();
}

/// An executor with threads of its own, joined by its shutdown (as
/// `ThreadPoolExecutor.shutdown(wait=True)`).
#[derive(Default)]
struct JoiningPool {
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    joined: Arc<AtomicUsize>,
}

impl Executor for JoiningPool {
    fn execute(&self, job: Job) {
        self.threads.lock().unwrap().push(std::thread::spawn(job));
    }

    fn join(&self) -> Option<Job> {
        let threads = self.threads.clone();
        let joined = self.joined.clone();
        Some(Box::new(move || {
            let all = std::mem::take(&mut *threads.lock().unwrap());
            for t in all {
                let _ = t.join();
                joined.fetch_add(1, Ordering::SeqCst);
            }
        }))
    }
}

#[test]
fn shutdown_default_executor_does_not_wait_past_its_timeout_for_the_join() {
    capture_warnings();
    let (release, blocked) = mpsc::channel::<()>();
    let joined = Arc::new(AtomicUsize::new(0));
    let j = joined.clone();
    let (out, warnings) = on_loop_thread(release.clone(), move |lp| {
        let pool = JoiningPool {
            joined: j,
            ..JoiningPool::default()
        };
        let threads = pool.threads.clone();
        lp.set_default_executor(pool);
        // Every job ends at once; one of the pool's threads lingers until
        // released: the join is what takes longer than the timeout.
        let job = lp.run_in_executor(|| 5).unwrap();
        assert_eq!(lp.run_until_complete(job).unwrap().unwrap(), 5);
        threads.lock().unwrap().push(std::thread::spawn(move || {
            let _ = blocked.recv();
        }));
        let out = lp
            .run_until_complete(lp.shutdown_default_executor(Some(Duration::from_millis(50))))
            .unwrap();
        (out.map_err(|e| e.to_string()), warnings_on_this_thread())
    });
    assert_eq!(out, Ok(()));
    assert!(
        warnings
            .iter()
            .any(|w| w == &format!("{JOIN_WARNING} 0.05 seconds.")),
        "{warnings:?}"
    );
    release.send(()).unwrap();
}

#[test]
fn shutdown_default_executor_waits_for_a_quick_join_without_warning() {
    capture_warnings();
    let (release, _blocked) = mpsc::channel::<()>();
    let joined = Arc::new(AtomicUsize::new(0));
    let j = joined.clone();
    let (out, warnings) = on_loop_thread(release, move |lp| {
        lp.set_default_executor(JoiningPool {
            joined: j,
            ..JoiningPool::default()
        });
        let job = lp.run_in_executor(|| 5).unwrap();
        assert_eq!(lp.run_until_complete(job).unwrap().unwrap(), 5);
        let out = lp
            .run_until_complete(lp.shutdown_default_executor(Some(LIMIT)))
            .unwrap();
        (out.map_err(|e| e.to_string()), warnings_on_this_thread())
    });
    assert_eq!(out, Ok(()));
    assert_eq!(
        joined.load(Ordering::SeqCst),
        1,
        "the pool's thread was joined"
    );
    assert!(
        !warnings.iter().any(|w| w.contains(JOIN_WARNING)),
        "{warnings:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Slow-callback reports name timers and tasks.

/// Works on the loop thread for `d`: the slow work being measured, not a
/// synchronisation.
fn busy_wait(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn slow_loop() -> EventLoop {
    let lp = EventLoop::builder().debug(true).build().unwrap();
    lp.set_slow_callback_duration(Duration::from_millis(20));
    lp
}

#[test]
fn a_slow_timer_callback_is_reported_as_a_timer_handle() {
    capture_warnings();
    let lp = slow_loop();
    let timer = lp
        .call_later(Duration::from_millis(1), || {
            busy_wait(Duration::from_millis(40))
        })
        .unwrap();
    let site = format!("{}:{}", timer.location().file(), timer.location().line());
    sleep_on(&lp, Duration::from_millis(5));
    let found: Vec<String> = warnings_on_this_thread()
        .into_iter()
        .filter(|w| w.contains(&site))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("Executing <TimerHandle when="),
        "{}",
        found[0]
    );
    assert!(found[0].contains(" seconds"), "{}", found[0]);
    lp.close().unwrap();
}

#[test]
fn a_slow_task_step_is_reported_by_the_task_name() {
    capture_warnings();
    let lp = slow_loop();
    let l = lp.clone();
    let task = lp
        .create_task_named(
            async move {
                l.sleep(Duration::from_millis(1)).await.unwrap();
                busy_wait(Duration::from_millis(40));
            },
            "slowpoke",
        )
        .unwrap();
    lp.run_until_complete(task).unwrap().unwrap();
    let found: Vec<String> = warnings_on_this_thread()
        .into_iter()
        .filter(|w| w.contains("slowpoke"))
        .collect();
    assert_eq!(found.len(), 1, "{:?}", warnings_on_this_thread());
    assert!(found[0].starts_with("Executing <Task "), "{}", found[0]);
    assert!(found[0].contains("name='slowpoke'"), "{}", found[0]);
    assert!(found[0].contains(" seconds"), "{}", found[0]);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// 4. The fd of a transport, a server or a pipe is not the user's to watch.

#[cfg(feature = "net")]
mod fd_claims {
    use std::cell::Cell;
    use std::os::fd::RawFd;
    use std::rc::Rc;

    use aioloop::prelude::*;
    use rustix::pipe::{pipe_with, PipeFlags};

    use crate::net_util::*;
    use crate::util::*;

    /// Every watcher call on `fd` is refused, naming `owner`.
    #[track_caller]
    fn assert_refused(lp: &EventLoop, fd: RawFd, owner: &str) {
        let results = [
            ("add_reader", lp.add_reader(fd, || {}).map(|_| false)),
            ("add_writer", lp.add_writer(fd, || {}).map(|_| false)),
            ("remove_reader", lp.remove_reader(fd)),
            ("remove_writer", lp.remove_writer(fd)),
        ];
        for (what, r) in results {
            let err = r.expect_err(what);
            assert_eq!(err.kind(), ErrorKind::InvalidState, "{what}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("File descriptor {fd} is used by {owner}")),
                "{what}: {text}"
            );
        }
    }

    /// The claim is gone: the fd is closed now, so watching it fails as for
    /// any closed fd (or succeeds, if another socket took the number), and
    /// never names the old owner.
    #[track_caller]
    fn assert_released(lp: &EventLoop, fd: RawFd) {
        match lp.add_reader(fd, || {}) {
            Ok(()) => {
                lp.remove_reader(fd).unwrap();
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Io, "{e}");
                assert!(!e.to_string().contains("is used by"), "{e}");
            }
        }
    }

    #[test]
    fn a_tcp_transport_and_a_server_own_their_fds() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        run(&lp, async move {
            let acc = Accepted::new();
            let server = l
                .create_server(
                    acc.factory(Hooks::none),
                    &["127.0.0.1"],
                    0,
                    ServerOptions::default(),
                )
                .await
                .unwrap();
            let listener = server.listener_fds()[0];
            assert_refused(&l, listener, "server");
            let port = server.sockets()[0].as_inet().unwrap().port();
            let rec = Recorder::new();
            let r = rec.clone();
            let (t, _) = l
                .create_connection(
                    move || RecordingProtocol::new(&r, Hooks::none()),
                    Some("127.0.0.1"),
                    port,
                    ConnectOptions::default(),
                )
                .await
                .unwrap();
            let fd = t.fd().unwrap();
            assert_refused(&l, fd, "transport");
            // The transport still works: the refused calls changed nothing.
            acc.until_made(1).await;
            t.write(b"ping").unwrap();
            let peer = acc.get(0);
            peer.until(|p| p.data_len() == 4).await;
            let peer_fd = peer.transport().fd().unwrap();
            assert_refused(&l, peer_fd, "transport");
            t.close();
            rec.until_lost().await;
            assert_released(&l, fd);
            server.close();
            server.abort_clients();
            server.wait_closed().await;
            assert_released(&l, listener);
        });
        finish(&lp, &seen);
    }

    /// What a protocol found when it was dropped: the user code that runs
    /// last in a transport's life, after its fd was closed.
    type Found = Rc<std::cell::RefCell<Option<Result<(), String>>>>;

    /// Watches, from its `Drop`, the fd number its transport had.
    struct WatchOnDrop {
        lp: EventLoop,
        fd: Cell<RawFd>,
        found: Found,
    }

    impl BaseProtocol for WatchOnDrop {
        fn connection_made(&mut self, t: Transport) {
            self.fd.set(t.fd().unwrap());
        }
    }

    impl Protocol for WatchOnDrop {}

    impl Drop for WatchOnDrop {
        fn drop(&mut self) {
            let fd = self.fd.get();
            let r = match self.lp.add_reader(fd, || {}) {
                Ok(()) => self
                    .lp
                    .remove_reader(fd)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) if e.to_string().contains("is used by") => Err(e.to_string()),
                Err(_) => Ok(()),
            };
            *self.found.borrow_mut() = Some(r);
        }
    }

    /// The claim goes with the fd: a protocol dropped after
    /// `connection_lost` (user code) may watch the fd number its transport
    /// had (another socket may have it by then) without being refused in
    /// the old transport's name.
    #[test]
    fn the_claim_is_released_before_the_protocol_is_dropped() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        let found: Found = Rc::default();
        let f = found.clone();
        run(&lp, async move {
            let acc = Accepted::new();
            let server = l
                .create_server(
                    acc.factory(Hooks::none),
                    &["127.0.0.1"],
                    0,
                    ServerOptions::default(),
                )
                .await
                .unwrap();
            let port = server.sockets()[0].as_inet().unwrap().port();
            let me = l.clone();
            let (t, _) = l
                .create_connection(
                    move || WatchOnDrop {
                        lp: me,
                        fd: Cell::new(-1),
                        found: f,
                    },
                    Some("127.0.0.1"),
                    port,
                    ConnectOptions::default(),
                )
                .await
                .unwrap();
            t.close();
            drop(t);
            server.close();
            server.abort_clients();
            server.wait_closed().await;
        });
        finish(&lp, &seen);
        let r = found.borrow_mut().take().expect("the protocol was dropped");
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn a_pipe_transport_owns_its_fd() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        run(&lp, async move {
            let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC).unwrap();
            let rec = Recorder::new();
            let r = rec.clone();
            let (t, _) = l
                .connect_read_pipe(move || RecordingProtocol::new(&r, Hooks::none()), read_end)
                .await
                .unwrap();
            let Some(ExtraInfo::Fd(fd)) = t.get_extra_info("pipe") else {
                panic!("a pipe transport's fd");
            };
            assert_refused(&l, fd, "transport");
            rustix::io::write(&write_end, b"x").unwrap();
            rec.until(|p| p.data_len() == 1).await;
            drop(write_end);
            rec.until_lost().await;
            assert_released(&l, fd);
        });
        finish(&lp, &seen);
    }

    /// Wakes `notify` when the endpoint's connection is lost.
    struct LostFlag(Rc<Cell<bool>>, Rc<Notify>);

    impl DatagramProtocol for LostFlag {
        fn connection_lost(&mut self, _: Option<std::io::Error>) {
            self.0.set(true);
            self.1.wake();
        }
    }

    #[test]
    fn a_datagram_transport_owns_its_fd() {
        let lp = new_loop();
        let seen = record_exceptions(&lp);
        let l = lp.clone();
        run(&lp, async move {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let (lost, notify) = (Rc::new(Cell::new(false)), Rc::new(Notify::default()));
            let (lo, no) = (lost.clone(), notify.clone());
            let (t, _) = l
                .create_datagram_endpoint(
                    move || LostFlag(lo, no),
                    DatagramOptions::default().with_sock(sock),
                )
                .await
                .unwrap();
            let fd = t.fd().unwrap();
            assert_refused(&l, fd, "transport");
            t.close();
            notify.until(|| lost.get()).await;
            assert_released(&l, fd);
        });
        finish(&lp, &seen);
    }
}
