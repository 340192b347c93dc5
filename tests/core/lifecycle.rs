//! Lifecycle of an `EventLoop`: run_forever/stop, run_until_complete, nested and
//! second-loop runs, closing (and what a closed loop refuses), is_running /
//! is_closed, running_loop(), and what close releases.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;
use aioloop::{running_loop, ErrorKind, EventLoop, Executor, Job};

#[test]
fn run_forever_runs_until_a_callback_stops_it() {
    let lp = new_loop();
    let ticks = counter();
    fn tick(lp: EventLoop, ticks: Rc<Cell<usize>>) {
        bump(&ticks);
        if ticks.get() == 10 {
            lp.stop();
        } else {
            let lp2 = lp.clone();
            lp.call_soon(move || tick(lp2, ticks)).unwrap();
        }
    }
    let (lp2, t) = (lp.clone(), ticks.clone());
    lp.call_soon(move || tick(lp2, t)).unwrap();
    run_bounded(&lp);
    assert_eq!(ticks.get(), 10);
    assert!(!lp.is_running());
    assert_eq!(lp.ready_len(), 0, "the last tick scheduled nothing");
    lp.close().unwrap();
}

#[test]
fn stop_before_run_forever_runs_exactly_one_iteration() {
    let lp = new_loop();
    let order = log::<&str>();
    let (lp2, o) = (lp.clone(), order.clone());
    lp.call_soon(move || {
        o.borrow_mut().push("first");
        let o2 = o.clone();
        lp2.call_soon(move || o2.borrow_mut().push("scheduled inside"))
            .unwrap();
    })
    .unwrap();
    let o = order.clone();
    lp.call_soon(move || o.borrow_mut().push("second")).unwrap();

    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["first", "second"]);
    assert_eq!(
        lp.ready_len(),
        1,
        "the inner callback waits for the next run"
    );

    // The stop request was consumed: the loop can run again, normally.
    let answer = lp.run_until_complete(async { 42 }).unwrap();
    assert_eq!(answer, 42);
    assert_eq!(*order.borrow(), ["first", "second", "scheduled inside"]);
    lp.close().unwrap();
}

#[test]
fn stop_from_a_callback_lets_the_rest_of_the_batch_run() {
    let lp = new_loop();
    let order = log::<u32>();
    let (lp2, o) = (lp.clone(), order.clone());
    lp.call_soon(move || {
        o.borrow_mut().push(1);
        lp2.stop();
        let o2 = o.clone();
        lp2.call_soon(move || o2.borrow_mut().push(3)).unwrap();
    })
    .unwrap();
    let o = order.clone();
    lp.call_soon(move || o.borrow_mut().push(2)).unwrap();
    run_bounded(&lp);
    assert_eq!(*order.borrow(), [1, 2]);
    one_iteration(&lp);
    assert_eq!(*order.borrow(), [1, 2, 3]);
    lp.close().unwrap();
}

#[test]
fn run_until_complete_returns_the_output() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let out = lp
        .run_until_complete(async move {
            lp2.sleep(Duration::from_millis(1)).await.unwrap();
            String::from("done")
        })
        .unwrap();
    assert_eq!(out, "done");
    // Twice in a row on the same loop.
    assert_eq!(lp.run_until_complete(async { 7u8 }).unwrap(), 7);
    assert!(!lp.is_running());
    lp.close().unwrap();
}

#[test]
fn a_panicking_future_is_an_error_and_the_loop_stays_usable() {
    let lp = new_loop();
    let err = lp
        .run_until_complete(async {
            if true {
                panic!("future went wrong");
            }
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(err.panic().unwrap().message(), "future went wrong");
    assert!(err.to_string().contains("future went wrong"));
    assert!(!lp.is_running());
    assert!(running_loop().is_none());

    let ran = counter();
    let r = ran.clone();
    lp.call_soon(move || bump(&r)).unwrap();
    assert_eq!(lp.run_until_complete(async { 5 }).unwrap(), 5);
    assert_eq!(ran.get(), 1);
    lp.close().unwrap();
}

#[test]
fn a_future_pending_when_the_loop_stops_gives_stopped_and_is_dropped() {
    let lp = new_loop();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let lp2 = lp.clone();
    lp.call_soon(move || lp2.stop()).unwrap();
    let err = lp
        .run_until_complete(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Stopped);
    assert_eq!(drops.get(), 1, "the unfinished future was dropped");
    assert!(!lp.is_running());

    // Still usable.
    assert_eq!(lp.run_until_complete(async { 1 }).unwrap(), 1);
    lp.close().unwrap();
}

#[test]
fn nested_runs_from_a_callback_or_task_are_refused() {
    let lp = new_loop();
    let results = log::<ErrorKind>();
    let (lp2, r) = (lp.clone(), results.clone());
    lp.call_soon(move || {
        r.borrow_mut().push(lp2.run_forever().unwrap_err().kind());
        r.borrow_mut()
            .push(lp2.run_until_complete(async {}).unwrap_err().kind());
        assert!(
            lp2.is_running(),
            "a refused nested run leaves the loop running"
        );
    })
    .unwrap();
    let (lp2, r) = (lp.clone(), results.clone());
    lp.run_until_complete(async move {
        r.borrow_mut().push(lp2.run_forever().unwrap_err().kind());
        r.borrow_mut()
            .push(lp2.run_until_complete(async {}).unwrap_err().kind());
    })
    .unwrap();
    assert_eq!(*results.borrow(), [ErrorKind::AlreadyRunning; 4]);
    assert!(!lp.is_running());
    lp.close().unwrap();
}

#[test]
fn a_second_loop_cannot_run_inside_a_running_loop() {
    let outer = new_loop();
    let inner = new_loop();
    let results = log::<ErrorKind>();
    let (o, i, r) = (outer.clone(), inner.clone(), results.clone());
    outer
        .call_soon(move || {
            r.borrow_mut().push(i.run_forever().unwrap_err().kind());
            r.borrow_mut()
                .push(i.run_until_complete(async { 1 }).unwrap_err().kind());
            assert!(!i.is_running());
            assert!(running_loop().unwrap().ptr_eq(&o), "still the outer loop");
        })
        .unwrap();
    one_iteration(&outer);
    assert_eq!(*results.borrow(), [ErrorKind::AlreadyRunning; 2]);
    // Neither loop was damaged by the refusal.
    assert_eq!(inner.run_until_complete(async { 2 }).unwrap(), 2);
    assert_eq!(outer.run_until_complete(async { 3 }).unwrap(), 3);
    inner.close().unwrap();
    outer.close().unwrap();
}

struct DropJobs;
impl Executor for DropJobs {
    fn execute(&self, job: Job) {
        drop(job);
    }
}

#[test]
fn every_scheduling_or_run_call_on_a_closed_loop_is_refused() {
    let lp = new_loop();
    let handle = lp.handle();
    lp.close().unwrap();
    assert!(lp.is_closed());
    assert!(handle.is_closed());

    let closed = |r: Result<(), aioloop::LoopError>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::Closed, "{what}: {e}");
        assert_eq!(e.to_string(), "Event loop is closed");
    };
    closed(lp.call_soon(|| {}).map(drop), "call_soon");
    closed(
        lp.call_later(Duration::from_millis(1), || {}).map(drop),
        "call_later",
    );
    closed(lp.call_at(lp.time(), || {}).map(drop), "call_at");
    let (a, _b) = UnixStream::pair().unwrap();
    closed(lp.add_reader(a.as_raw_fd(), || {}), "add_reader");
    closed(lp.add_writer(a.as_raw_fd(), || {}), "add_writer");
    closed(lp.run_in_executor(|| 1).map(drop), "run_in_executor");
    closed(
        lp.run_in_executor_on(&DropJobs, || 1).map(drop),
        "run_in_executor_on",
    );
    closed(lp.run_forever(), "run_forever");
    closed(lp.run_until_complete(async {}), "run_until_complete");
    closed(
        lp.track_async_gen(futures_lite::stream::iter([1, 2]))
            .map(drop),
        "track_async_gen",
    );
    closed(lp.call_soon_threadsafe(|| {}), "call_soon_threadsafe");
    closed(
        handle.call_soon_threadsafe(|| {}),
        "LoopHandle::call_soon_threadsafe",
    );
    closed(handle.stop(), "LoopHandle::stop");
    closed(
        futures_lite::future::block_on(lp.shutdown_default_executor(None)),
        "shutdown_default_executor",
    );
    closed(
        futures_lite::future::block_on(lp.sleep(Duration::ZERO)),
        "sleep",
    );
    // Removing is not scheduling: it reports that nothing was registered.
    assert!(!lp.remove_reader(a.as_raw_fd()).unwrap());
    assert!(!lp.remove_writer(a.as_raw_fd()).unwrap());
    assert!(!lp.is_running());
}

#[test]
fn run_until_complete_on_a_closed_loop_drops_the_future() {
    let lp = new_loop();
    lp.close().unwrap();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let err = lp
        .run_until_complete(async move {
            let _g = guard;
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(drops.get(), 1);
}

#[test]
fn close_while_running_is_refused_and_close_after_works() {
    let lp = new_loop();
    let seen = log::<ErrorKind>();
    let (lp2, s) = (lp.clone(), seen.clone());
    lp.call_soon(move || {
        let e = lp2.close().unwrap_err();
        s.borrow_mut().push(e.kind());
        assert!(!lp2.is_closed());
        assert!(lp2.is_running());
        // Still schedulable after the refused close.
        let lp3 = lp2.clone();
        lp2.call_soon(move || lp3.stop()).unwrap();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(*seen.borrow(), [ErrorKind::Running]);
    lp.close().unwrap();
    assert!(lp.is_closed());
}

#[test]
fn close_is_idempotent() {
    let lp = new_loop();
    lp.close().unwrap();
    lp.close().unwrap();
    lp.clone().close().unwrap();
    assert!(lp.is_closed());
    assert!(!lp.is_running());
}

#[test]
fn is_running_and_is_closed_inside_and_outside() {
    let lp = new_loop();
    assert!(!lp.is_running());
    assert!(!lp.is_closed());
    let inside = log::<(bool, bool)>();
    let (lp2, i) = (lp.clone(), inside.clone());
    lp.call_soon(move || i.borrow_mut().push((lp2.is_running(), lp2.is_closed())))
        .unwrap();
    let (lp2, i) = (lp.clone(), inside.clone());
    lp.run_until_complete(async move {
        i.borrow_mut().push((lp2.is_running(), lp2.is_closed()));
    })
    .unwrap();
    assert_eq!(*inside.borrow(), [(true, false), (true, false)]);
    assert!(!lp.is_running());
    lp.close().unwrap();
    assert!(lp.is_closed());
    assert!(!lp.is_running());
}

#[test]
fn running_loop_is_set_inside_callbacks_and_tasks_only() {
    assert!(running_loop().is_none());
    let lp = new_loop();
    assert!(running_loop().is_none(), "creating a loop does not run it");
    let hits = counter();
    let check = {
        let lp = lp.clone();
        let hits = hits.clone();
        move || {
            let current = running_loop().expect("a running loop inside the loop");
            assert!(current.ptr_eq(&lp));
            bump(&hits);
        }
    };
    let c = check.clone();
    lp.call_soon(c).unwrap();
    let c = check.clone();
    lp.call_later(Duration::from_millis(1), c).unwrap();
    let c = check.clone();
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        c();
        lp2.sleep(Duration::from_millis(2)).await.unwrap();
        c();
    })
    .unwrap();
    assert_eq!(hits.get(), 4);
    assert!(running_loop().is_none(), "cleared when run_* returns");

    // Cleared after a panicking run too.
    let _ = lp.run_until_complete(async { panic!("x") });
    assert!(running_loop().is_none());
    lp.close().unwrap();
}

#[test]
fn close_drops_pending_callbacks_timers_watchers_and_injected_work() {
    let lp = new_loop();
    let drops = counter();
    let payload = Rc::new(());

    // A call_soon whose handle is dropped, and one whose handle is kept.
    let (g, p) = (DropCount(drops.clone()), payload.clone());
    lp.call_soon(move || drop((g, p))).unwrap();
    let (g, p) = (DropCount(drops.clone()), payload.clone());
    let kept = lp.call_soon(move || drop((g, p))).unwrap();
    // Timers, with and without a kept handle.
    let (g, p) = (DropCount(drops.clone()), payload.clone());
    lp.call_later(Duration::from_secs(3600), move || drop((g, p)))
        .unwrap();
    let (g, p) = (DropCount(drops.clone()), payload.clone());
    let kept_timer = lp
        .call_at(lp.time() + Duration::from_secs(60), move || drop((g, p)))
        .unwrap();
    // A reader.
    let (a, _b) = UnixStream::pair().unwrap();
    let (g, p) = (DropCount(drops.clone()), payload.clone());
    lp.add_reader(a.as_raw_fd(), move || {
        let _ = (&g, &p);
    })
    .unwrap();
    // Work sent from another thread before the loop ran.
    let sent = Arc::new(AtomicUsize::new(0));
    let g = SendDropCount(sent.clone());
    std::thread::scope(|s| {
        let h = lp.handle();
        s.spawn(move || h.call_soon_threadsafe(move || drop(g)).unwrap());
    });

    assert_eq!(Rc::strong_count(&payload), 6);
    lp.close().unwrap();
    assert_eq!(drops.get(), 5, "every captured guard was dropped by close");
    assert_eq!(
        Rc::strong_count(&payload),
        1,
        "close released what the callbacks captured, kept handles or not"
    );
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert!(
        !lp.remove_reader(a.as_raw_fd()).unwrap(),
        "the reader is gone"
    );
    drop((kept, kept_timer));
}

/// A captured value whose `Drop` panics.
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{}", self.0);
        }
    }
}

#[test]
fn close_survives_captured_values_whose_drop_panics() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let g = PanicOnDrop("ready callback drop");
    lp.call_soon(move || drop(g)).unwrap();
    let g = PanicOnDrop("timer drop");
    lp.call_later(Duration::from_secs(3600), move || drop(g))
        .unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let g = PanicOnDrop("reader drop");
    lp.add_reader(a.as_raw_fd(), move || {
        let _ = &g;
    })
    .unwrap();
    let after = counter();
    let a2 = after.clone();
    lp.call_soon(move || bump(&a2)).unwrap();

    lp.close().unwrap();
    assert!(lp.is_closed());
    let mut panics: Vec<String> = seen
        .borrow()
        .iter()
        .map(|s| {
            assert_eq!(s.kind, Some(ErrorKind::Panicked));
            s.panic.clone().unwrap()
        })
        .collect();
    panics.sort();
    assert_eq!(panics, ["reader drop", "ready callback drop", "timer drop"]);
    assert_eq!(after.get(), 0, "close runs nothing");
    assert!(!lp.remove_reader(a.as_raw_fd()).unwrap());
}

#[test]
fn a_stopped_future_whose_drop_panics_is_reported_not_raised() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let lp2 = lp.clone();
    lp.call_soon(move || lp2.stop()).unwrap();
    let g = PanicOnDrop("future drop");
    let err = lp
        .run_until_complete(async move {
            let _g = g;
            std::future::pending::<()>().await;
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Stopped);
    assert_eq!(seen.borrow().len(), 1);
    assert_eq!(seen.borrow()[0].panic.as_deref(), Some("future drop"));
    lp.close().unwrap();
}
