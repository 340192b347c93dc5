//! Nothing outlives its owner (issue 12, part 1): a loop's descriptors go
//! when it is closed, whatever handles on it live, and a loop whose owning
//! handle is dropped without `close()` leaks nothing; a transport lets go
//! of its loop after `connection_lost`; a connect or accept future dropped
//! before it completes undoes what it started.
//!
//! Its own test binary, and every test takes one process-global lock: they
//! count the descriptors of the whole process (`/proc/self/fd`), which tests
//! running beside them on other threads would change.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aioloop::{Backend, ErrorKind, EventLoop};
use util::*;

static FDS: Mutex<()> = Mutex::new(());

/// The process-global lock of this binary's tests.
fn serial() -> MutexGuard<'static, ()> {
    FDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open descriptors of this process, with what each one is.
fn open_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// What the descriptors open now that were not in `before` are, counted by
/// kind (the `read_dir` of `/proc/self/fd` itself left out).
fn new_fds(before: &[(i32, String)]) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for (_, what) in open_fds().into_iter().filter(|fd| !before.contains(fd)) {
        if what.starts_with("/proc/") && what.ends_with("/fd") {
            continue;
        }
        match kinds.iter_mut().find(|(k, _)| *k == what) {
            Some((_, n)) => *n += 1,
            None => kinds.push((what, 1)),
        }
    }
    kinds
}

fn backends() -> [Backend; 2] {
    [Backend::Epoll, Backend::Polling]
}

fn build(backend: Backend) -> EventLoop {
    EventLoop::builder()
        .backend(backend)
        .build()
        .expect("creating an event loop")
}

// ---------------------------------------------------------------------------
// The loop itself

#[test]
fn loops_dropped_without_close_leak_no_descriptor() {
    let _serial = serial();
    for backend in backends() {
        let before = open_fds();
        for _ in 0..200 {
            let lp = build(backend);
            // A callback and a timer that each hold a handle on their loop,
            // both still queued when the loop is dropped: the cycle
            // loop -> callback -> loop.
            let a = lp.clone();
            lp.call_soon(move || a.stop()).unwrap();
            let b = lp.clone();
            lp.call_later(Duration::from_secs(3600), move || b.stop())
                .unwrap();
            let c = lp.clone();
            lp.call_soon(move || drop(c.call_soon(|| {}))).unwrap();
            lp.run_forever().unwrap();
            drop(lp);
        }
        assert_eq!(
            new_fds(&before),
            vec![],
            "{backend:?}: 200 loops dropped without close() left these open"
        );
    }
}

#[test]
fn a_loop_dropped_without_close_frees_its_memory_despite_callbacks_holding_it() {
    let _serial = serial();
    let lp = new_loop();
    let weak = lp.downgrade();
    let a = lp.clone();
    lp.call_later(Duration::from_secs(3600), move || a.stop())
        .unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let b = lp.clone();
    lp.add_reader(&sock, move || b.stop()).unwrap();
    let c = lp.clone();
    let task = lp.create_task(async move {
        c.sleep(Duration::from_secs(3600)).await.ok();
    });
    drop(task);
    drop(lp);
    assert!(
        weak.upgrade().is_none(),
        "the loop's callbacks kept it alive after its owner was dropped"
    );
}

#[test]
fn close_releases_the_poller_and_the_wakeup_fd_while_clones_and_handles_live() {
    let _serial = serial();
    for backend in backends() {
        let before = open_fds();
        let lp = build(backend);
        let clone = lp.clone();
        let handle = lp.handle();
        assert!(
            !new_fds(&before).is_empty(),
            "{backend:?}: a loop opens its poller"
        );
        lp.close().unwrap();
        assert_eq!(
            new_fds(&before),
            vec![],
            "{backend:?}: close() left these open while a clone and a LoopHandle live"
        );
        // And every later call, through any handle, gets Closed.
        assert!(clone.is_closed());
        assert_eq!(
            clone.call_soon(|| {}).unwrap_err().kind(),
            ErrorKind::Closed
        );
        assert_eq!(
            clone
                .call_later(Duration::from_millis(1), || {})
                .unwrap_err()
                .kind(),
            ErrorKind::Closed
        );
        assert_eq!(clone.run_forever().unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(
            clone.add_reader(0, || {}).unwrap_err().kind(),
            ErrorKind::Closed
        );
        let from_thread = std::thread::spawn(move || {
            (
                handle.is_closed(),
                handle.call_soon_threadsafe(|| {}).map_err(|e| e.kind()),
                handle.stop().map_err(|e| e.kind()),
            )
        })
        .join()
        .unwrap();
        assert_eq!(
            from_thread,
            (true, Err(ErrorKind::Closed), Err(ErrorKind::Closed))
        );
        drop((clone, lp));
    }
}

#[test]
fn dropping_the_owning_handle_closes_the_loop_for_its_clones() {
    let _serial = serial();
    let before = open_fds();
    let lp = new_loop();
    let clone = lp.clone();
    let handle = lp.handle();
    drop(lp);
    assert!(clone.is_closed(), "the owner's drop closes the loop");
    assert!(handle.is_closed());
    assert_eq!(
        clone.call_soon(|| {}).unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(new_fds(&before), vec![]);
}

#[test]
fn dropping_a_clone_leaves_the_loop_open() {
    let _serial = serial();
    let lp = new_loop();
    let clone = lp.clone();
    drop(clone);
    assert!(!lp.is_closed());
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.call_soon(move || r.set(true)).unwrap();
    one_iteration(&lp);
    assert!(ran.get());
}

#[test]
fn an_owner_dropped_while_its_loop_runs_closes_it_when_the_run_returns() {
    let _serial = serial();
    let before = open_fds();
    let lp = new_loop();
    let outside = lp.clone();
    let seen_open_inside = Rc::new(Cell::new(false));
    let seen = seen_open_inside.clone();
    let inside = lp.clone();
    // The owner moves into a callback, which drops it while the loop runs.
    outside
        .call_soon(move || {
            drop(lp);
            seen.set(!inside.is_closed());
            inside.stop();
        })
        .unwrap();
    let dog = Watchdog::start(&outside);
    outside.run_forever().unwrap();
    dog.disarm();
    assert!(
        seen_open_inside.get(),
        "the loop stays open for the rest of the run"
    );
    assert!(outside.is_closed(), "and closes when the run returns");
    assert_eq!(new_fds(&before), vec![]);
}
