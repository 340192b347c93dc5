//! Cancellation as asyncio delivers it (CPython's test_tasks.py, where it
//! applies): `task.cancel(msg)` reaches the aioloop awaitable the task is
//! suspended on (a Future, a Task, sleep, an executor job, sock_*, a stream
//! read, drain), which returns a `Cancelled` error at the await; the body may
//! handle it and go on, or propagate it and end the task cancelled. A body
//! suspended on something else is dropped, as before. Also: awaiting itself
//! or another loop's future fails at once, and `close()` runs the cancelled
//! tasks to completion, within a bound.

use std::cell::RefCell;
use std::fmt;
use std::future::Future as StdFuture;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::util::*;
use aioloop::{ErrorKind, EventLoop, Future, LoopError, Task, VirtualClock};

/// `run_until_complete` under a watchdog; panics if the loop errs or hangs.
fn assert_cancelled<T: fmt::Debug>(r: Result<T, LoopError>, message: &str) {
    match r {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Cancelled, "unexpected error {e:?}");
            assert_eq!(e.message(), message);
        }
        Ok(v) => panic!("expected a Cancelled error, got Ok({v:?})"),
    }
}

/// Records, in the body, what an await gave: the body saw it.
fn saw<T, E: fmt::Display>(seen: &Log<String>, r: &Result<T, E>) {
    seen.borrow_mut().push(match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err: {e}"),
    });
}

/// A task's outcome through `run_until_complete`: a task that ended
/// cancelled makes `run_until_complete` itself give the cancellation.
fn flat<T>(r: Result<Result<T, LoopError>, LoopError>) -> Result<T, LoopError> {
    r.and_then(|x| x)
}

fn is_cancelled<T>(r: &Result<T, LoopError>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::Cancelled)
}

/// Where a task's body finds its own handle.
type Slot<T> = Rc<RefCell<Option<Task<T>>>>;

/// A task awaiting `fut` and propagating whatever it gives (`?`).
fn awaiting(lp: &EventLoop, fut: &Future<u32>) -> Task<Result<u32, LoopError>> {
    let f = fut.clone();
    lp.create_task(async move { Ok(f.await? + 1) }).unwrap()
}

/// A future that is never ready and is not an aioloop awaitable.
struct Foreign(#[allow(dead_code)] DropCount);

impl StdFuture for Foreign {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------
// What the cancelled task is suspended on is cancelled

#[test]
fn cancelling_a_task_cancels_the_future_it_awaits() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let task = awaiting(&lp, &fut);
    one_iteration(&lp);
    assert!(task.cancel(Some("stop")));
    assert!(!task.done());
    one_iteration(&lp);
    assert!(fut.cancelled(), "the awaited future was not cancelled");
    assert_cancelled(fut.result(), "stop");
    assert!(task.done());
    assert!(task.cancelled(), "the task propagated its cancellation");
    assert_cancelled(task.result(), "stop");
    lp.close().unwrap();
}

#[test]
fn cancelling_an_outer_task_cancels_the_inner_tasks_it_awaits_recursively() {
    // asyncio's test_cancel_nested (shape) and _fut_waiter chains.
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let inner = awaiting(&lp, &fut);
    let i = inner.clone();
    let middle = lp
        .create_task(async move { Ok::<_, LoopError>(i.await?? + 1) })
        .unwrap();
    let m = middle.clone();
    let outer = lp
        .create_task(async move { Ok::<_, LoopError>(m.await?? + 1) })
        .unwrap();
    one_iteration(&lp);
    assert!(outer.cancel(Some("from the top")));
    assert_cancelled(flat(try_run(&lp, outer.clone())), "from the top");
    assert!(fut.cancelled());
    for (name, t) in [("inner", &inner), ("middle", &middle), ("outer", &outer)] {
        assert!(t.cancelled(), "{name} was not cancelled");
        assert_cancelled(t.result().map(|_| ()), "from the top");
        assert_eq!(t.cancelling(), 1, "{name} got one request");
    }
    lp.close().unwrap();
}

#[test]
fn an_inner_task_that_handles_its_cancellation_gives_the_outer_its_value_and_the_outer_goes_on() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let f = fut.clone();
    let inner = lp
        .create_task(async move {
            match f.await {
                Err(e) if e.kind() == ErrorKind::Cancelled => 42,
                other => panic!("unexpected {other:?}"),
            }
        })
        .unwrap();
    let went_on = counter();
    let (i, w) = (inner.clone(), went_on.clone());
    let outer = lp
        .create_task(async move {
            let v = i.await?;
            bump(&w);
            Ok::<_, LoopError>(v + 1)
        })
        .unwrap();
    one_iteration(&lp);
    assert!(outer.cancel(None));
    assert_eq!(try_run(&lp, outer.clone()).unwrap().unwrap().unwrap(), 43);
    assert_eq!(went_on.get(), 1);
    assert!(!outer.cancelled());
    assert!(inner.done() && !inner.cancelled());
    assert!(fut.cancelled());
    assert_eq!(outer.cancelling(), 1, "the request is still counted");
    lp.close().unwrap();
}

#[test]
fn a_task_catching_its_cancellation_returns_a_value_and_is_not_cancelled() {
    // asyncio's test_cancel_task_catching.
    let lp = new_loop();
    let (fut1, fut2) = (lp.create_future::<()>(), lp.create_future::<()>());
    let (f1, f2) = (fut1.clone(), fut2.clone());
    let task = lp
        .create_task(async move {
            f1.await.unwrap();
            match f2.await {
                Err(e) if e.kind() == ErrorKind::Cancelled => 42,
                _ => 0,
            }
        })
        .unwrap();
    one_iteration(&lp);
    fut1.set_result(()).unwrap();
    one_iteration(&lp);
    assert!(task.cancel(None));
    assert_eq!(try_run(&lp, task.clone()).unwrap().unwrap(), 42);
    assert!(fut2.cancelled());
    assert!(!task.cancelled());
    lp.close().unwrap();
}

#[test]
fn a_task_ignoring_its_cancellation_goes_on_to_its_next_await() {
    // asyncio's test_cancel_task_ignoring.
    let lp = new_loop();
    let futs: Vec<Future<u32>> = (0..3).map(|_| lp.create_future()).collect();
    let f = futs.clone();
    let task = lp
        .create_task(async move {
            f[0].clone().await?;
            let _ = f[1].clone().await; // ignored
            f[2].clone().await
        })
        .unwrap();
    one_iteration(&lp);
    futs[0].set_result(0).unwrap();
    one_iteration(&lp);
    assert!(task.cancel(None));
    one_iteration(&lp);
    assert!(futs[1].cancelled());
    assert!(!task.done());
    futs[2].set_result(42).unwrap();
    assert_eq!(try_run(&lp, task.clone()).unwrap().unwrap().unwrap(), 42);
    assert!(!futs[2].cancelled());
    assert!(!task.cancelled());
    lp.close().unwrap();
}

#[test]
fn a_task_propagating_its_cancellation_with_question_mark_ends_cancelled_with_the_message() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let after = counter();
    let seen: Log<String> = log();
    let (f, a, s) = (fut.clone(), after.clone(), seen.clone());
    let task = lp
        .create_task(async move {
            let r = f.await;
            saw(&s, &r);
            let v = r?;
            bump(&a);
            Ok::<_, LoopError>(v)
        })
        .unwrap();
    one_iteration(&lp);
    task.cancel(Some("bye"));
    assert_cancelled(flat(try_run(&lp, task.clone())), "bye");
    assert!(task.cancelled());
    assert_eq!(*seen.borrow(), vec!["err: bye".to_string()]);
    assert_eq!(after.get(), 0);
    assert_cancelled(task.exception().map(|_| ()), "bye");
    lp.close().unwrap();
}

#[test]
fn a_task_whose_awaited_future_is_cancelled_ends_cancelled() {
    // asyncio's test_cancel_inner_future.
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let task = awaiting(&lp, &fut);
    one_iteration(&lp);
    fut.cancel(Some("inner"));
    assert_cancelled(flat(try_run(&lp, task.clone())), "inner");
    assert!(task.cancelled());
    assert!(fut.cancelled());
    lp.close().unwrap();
}

#[test]
fn cancelling_both_the_task_and_its_future_ends_the_task_cancelled() {
    // asyncio's test_cancel_both_task_and_inner_future.
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let seen: Log<String> = log();
    let (f, s) = (fut.clone(), seen.clone());
    let task = lp
        .create_task(async move {
            let r = f.await;
            saw(&s, &r);
            r
        })
        .unwrap();
    one_iteration(&lp);
    fut.cancel(Some("future"));
    task.cancel(Some("task"));
    assert!(is_cancelled(&flat(try_run(&lp, task.clone()))));
    assert_eq!(seen.borrow().len(), 1, "the body saw the cancellation");
    assert!(task.done());
    assert!(fut.cancelled());
    assert!(task.cancelled());
    lp.close().unwrap();
}

#[test]
fn run_until_complete_of_a_cancelled_future_is_a_cancelled_error() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let f = fut.clone();
    lp.call_soon(move || {
        f.cancel(Some("gone"));
    })
    .unwrap();
    assert_cancelled(try_run(&lp, fut), "gone");
    lp.close().unwrap();
}

#[test]
fn awaiting_a_done_future_after_cancel_gives_cancelled_and_leaves_its_value() {
    // asyncio's _must_cancel: the CancelledError is thrown at the await even
    // though the awaited future is done.
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let seen: Log<String> = log();
    let (f, s) = (fut.clone(), seen.clone());
    let task = lp
        .create_task(async move {
            let r = f.await;
            saw(&s, &r);
            r
        })
        .unwrap();
    one_iteration(&lp);
    fut.set_result(7).unwrap();
    task.cancel(Some("late"));
    assert_cancelled(flat(try_run(&lp, task.clone())), "late");
    assert!(task.cancelled());
    assert_eq!(*seen.borrow(), vec!["err: late".to_string()]);
    assert_eq!(fut.result().unwrap(), 7, "the value was not moved out");
    lp.close().unwrap();
}

#[test]
fn a_task_cancelling_itself_then_awaiting_a_nested_task_cancels_the_nested_task() {
    // asyncio's test_cancel_awaited_task (bpo-34872).
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let nested = awaiting(&lp, &fut);
    let me: Slot<Result<u32, LoopError>> = Rc::default();
    let (m, n, lp2) = (me.clone(), nested.clone(), lp.clone());
    let task = lp
        .create_task(async move {
            lp2.sleep(Duration::ZERO).await?;
            m.borrow().as_ref().unwrap().cancel(None);
            n.await?
        })
        .unwrap();
    *me.borrow_mut() = Some(task.clone());
    assert!(is_cancelled(&flat(try_run(&lp, task.clone()))));
    assert!(task.cancelled());
    assert!(nested.cancelled());
    assert!(fut.cancelled());
    me.borrow_mut().take();
    lp.close().unwrap();
}

#[test]
fn sleep_observes_the_cancellation_at_its_await() {
    let lp = new_loop();
    let seen: Log<String> = log();
    let (s, lp2) = (seen.clone(), lp.clone());
    let task = lp
        .create_task(async move {
            let r = lp2.sleep(Duration::from_secs(3600)).await;
            s.borrow_mut()
                .push(format!("{:?}", r.as_ref().map_err(|e| e.kind())));
            r
        })
        .unwrap();
    one_iteration(&lp);
    task.cancel(Some("wake up"));
    assert_cancelled(flat(try_run(&lp, task.clone())), "wake up");
    assert_eq!(*seen.borrow(), vec!["Err(Cancelled)".to_string()]);
    assert!(task.cancelled());
    lp.close().unwrap();
}

#[test]
fn a_run_in_executor_future_observes_the_cancellation() {
    let lp = new_loop();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let job = lp
        .run_in_executor(move || {
            let _ = gate_rx.recv_timeout(LIMIT);
            5
        })
        .unwrap();
    let seen: Log<String> = log();
    let s = seen.clone();
    let task = lp
        .create_task(async move {
            let r = job.await;
            saw(&s, &r);
            r
        })
        .unwrap();
    one_iteration(&lp);
    task.cancel(Some("no more"));
    assert_cancelled(flat(try_run(&lp, task.clone())), "no more");
    assert!(task.cancelled());
    assert_eq!(*seen.borrow(), vec!["err: no more".to_string()]);
    // The job may not have started yet (then it is skipped, and the
    // channel's receiver is gone).
    let _ = gate_tx.send(());
    lp.close().unwrap();
}

/// An executor that keeps its jobs until the test runs them.
#[derive(Clone, Default)]
struct Held(Rc<RefCell<Vec<aioloop::Job>>>);

impl aioloop::Executor for Held {
    fn execute(&self, job: aioloop::Job) {
        self.0.borrow_mut().push(job);
    }
}

#[test]
fn a_cancelled_executor_job_that_has_not_started_is_skipped() {
    let lp = new_loop();
    let held = Held::default();
    lp.set_default_executor(held.clone());
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = ran.clone();
    let job = lp
        .run_in_executor(move || r.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
        .unwrap();
    let task = lp.create_task(job).unwrap();
    one_iteration(&lp);
    task.cancel(None);
    assert!(is_cancelled(&flat(try_run(&lp, task.clone()))));
    let jobs: Vec<aioloop::Job> = held.0.borrow_mut().drain(..).collect();
    assert_eq!(jobs.len(), 1);
    for j in jobs {
        j();
    }
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the job ran"
    );
    assert_eq!(lp.executor_jobs_in_flight(), 0);
    lp.close().unwrap();
}

#[test]
fn a_body_suspended_on_a_foreign_future_is_dropped_at_its_next_poll() {
    let lp = new_loop();
    let drops = counter();
    let d = DropCount(drops.clone());
    let task = lp.create_task(Foreign(d)).unwrap();
    one_iteration(&lp);
    assert_eq!(drops.get(), 0);
    task.cancel(Some("foreign"));
    one_iteration(&lp);
    assert_eq!(drops.get(), 1, "the body was dropped");
    assert!(task.cancelled());
    assert_cancelled(task.result(), "foreign");
    lp.close().unwrap();
}

#[test]
fn uncancel_lets_a_task_handle_a_cancellation_and_be_cancelled_again() {
    // asyncio's test_uncancel_basic.
    let lp = new_loop();
    let me: Slot<Result<(), LoopError>> = Rc::default();
    let (m, lp2) = (me.clone(), lp.clone());
    let task = lp
        .create_task(async move {
            if let Err(e) = lp2.sleep(Duration::from_secs(10)).await {
                assert_eq!(e.kind(), ErrorKind::Cancelled);
                assert_eq!(m.borrow().as_ref().unwrap().uncancel(), 0);
                lp2.sleep(Duration::from_secs(10)).await?;
            }
            Ok(())
        })
        .unwrap();
    *me.borrow_mut() = Some(task.clone());
    one_iteration(&lp);
    assert!(task.cancel(None));
    assert_eq!(task.cancelling(), 1);
    assert!(!task.cancelled());
    one_iteration(&lp);
    assert_eq!(task.cancelling(), 0, "after uncancel()");
    assert!(!task.done(), "the task handled it and sleeps again");
    assert!(task.cancel(None));
    assert_eq!(task.cancelling(), 1);
    assert!(is_cancelled(&flat(try_run(&lp, task.clone()))));
    assert!(task.cancelled());
    task.uncancel();
    assert!(task.cancelled(), "uncancel() no longer matters once done");
    me.borrow_mut().take();
    lp.close().unwrap();
}

#[test]
fn uncancel_to_zero_withdraws_an_undelivered_request() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let task = awaiting(&lp, &fut);
    one_iteration(&lp);
    task.cancel(None);
    assert_eq!(task.uncancel(), 0);
    one_iteration(&lp);
    assert!(!fut.cancelled(), "a withdrawn request was delivered");
    fut.set_result(1).unwrap();
    assert_eq!(try_run(&lp, task.clone()).unwrap().unwrap().unwrap(), 2);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Clear errors instead of hangs

#[test]
fn a_task_awaiting_itself_fails_at_once_with_a_clear_error() {
    let lp = new_loop();
    let me: Slot<Result<(), LoopError>> = Rc::default();
    let m = me.clone();
    let task = lp
        .create_task(async move {
            let this = m.borrow().clone().unwrap();
            match this.await {
                Err(e) => Err(e),
                Ok(_) => unreachable!(),
            }
        })
        .unwrap();
    *me.borrow_mut() = Some(task.clone());
    let err = try_run(&lp, task.clone()).unwrap().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err:?}");
    assert!(
        err.message().contains("Task cannot await on itself"),
        "{err}"
    );
    me.borrow_mut().take();
    lp.close().unwrap();
}

#[test]
fn a_task_awaiting_a_future_of_another_loop_fails_at_once() {
    let lp = new_loop();
    let other = new_loop();
    let fut = other.create_future::<u32>();
    let f = fut.clone();
    let task = lp.create_task(f).unwrap();
    let err = try_run(&lp, task).unwrap().unwrap().unwrap_err();
    assert!(
        err.message().contains("attached to a different loop"),
        "{err}"
    );
    // The foreign future is untouched.
    assert!(!fut.done());
    lp.close().unwrap();
    other.close().unwrap();
}

#[test]
fn awaiting_a_done_future_of_another_loop_gives_its_value() {
    // asyncio only checks the loop of a future the task has to wait for.
    let lp = new_loop();
    let other = new_loop();
    let fut = other.create_future::<u32>();
    fut.set_result(3).unwrap();
    let task = lp.create_task(fut).unwrap();
    assert_eq!(try_run(&lp, task).unwrap().unwrap().unwrap(), 3);
    lp.close().unwrap();
    other.close().unwrap();
}

#[test]
fn a_task_awaiting_a_task_of_another_loop_fails_at_once() {
    let lp = new_loop();
    let other = new_loop();
    let foreign = other.create_task(async { 1 }).unwrap();
    let f = foreign.clone();
    let task = lp.create_task(f).unwrap();
    let err = try_run(&lp, task).unwrap().unwrap().unwrap_err();
    assert!(
        err.message().contains("attached to a different loop"),
        "{err}"
    );
    lp.close().unwrap();
    other.close().unwrap();
}

#[test]
fn run_until_complete_given_another_loops_future_fails_at_once() {
    let lp = new_loop();
    let other = new_loop();
    let fut = other.create_future::<u32>();
    let out = try_run(&lp, fut.clone());
    let err = match out {
        Err(e) | Ok(Err(e)) => e,
        Ok(Ok(v)) => panic!("got {v}"),
    };
    assert!(
        err.message().contains("attached to a different loop"),
        "{err}"
    );
    lp.close().unwrap();
    other.close().unwrap();
}

// ---------------------------------------------------------------------------
// close() runs the cancelled tasks to completion

#[test]
fn close_cancels_pending_tasks_and_lets_them_clean_up_before_it_returns() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let steps: Log<&'static str> = log();
    let (f, s, lp2) = (fut.clone(), steps.clone(), lp.clone());
    let task = lp
        .create_task(async move {
            match f.await {
                Ok(v) => Ok(v),
                Err(e) => {
                    s.borrow_mut().push("cleanup started");
                    // An await during the cleanup still works.
                    lp2.sleep(Duration::from_millis(1)).await?;
                    s.borrow_mut().push("cleanup finished");
                    Err(e)
                }
            }
        })
        .unwrap();
    one_iteration(&lp);
    lp.close().unwrap();
    assert_eq!(*steps.borrow(), vec!["cleanup started", "cleanup finished"]);
    assert!(task.cancelled());
    assert!(fut.cancelled());
    assert!(lp.is_closed());
}

#[test]
fn close_gives_up_on_a_task_that_swallows_every_cancellation_and_reports_it() {
    let clock = VirtualClock::new();
    let lp = EventLoop::builder().virtual_clock(clock).build().unwrap();
    let seen = record_exceptions(&lp);
    let swallowed = counter();
    let (s, lp2) = (swallowed.clone(), lp.clone());
    let task = lp
        .create_task(async move {
            loop {
                if lp2.sleep(Duration::from_secs(3600)).await.is_err() {
                    bump(&s);
                }
            }
        })
        .unwrap();
    one_iteration(&lp);
    let dog = Watchdog::start(&lp);
    lp.close().unwrap();
    dog.disarm();
    assert!(swallowed.get() >= 1, "the cancellation was delivered");
    assert!(task.done());
    assert!(task.cancelled());
    let reports: Vec<Seen> = seen
        .borrow()
        .iter()
        .filter(|s| s.message.contains("still pending"))
        .cloned()
        .collect();
    assert_eq!(reports.len(), 1, "{:?}", seen.borrow());
}

#[test]
fn close_drops_a_task_suspended_on_a_foreign_future() {
    let lp = new_loop();
    let drops = counter();
    let task = lp.create_task(Foreign(DropCount(drops.clone()))).unwrap();
    one_iteration(&lp);
    lp.close().unwrap();
    assert_eq!(drops.get(), 1);
    assert!(task.cancelled());
}

#[test]
fn a_cancelled_task_that_was_never_polled_does_not_start_at_close() {
    let lp = new_loop();
    let ran = counter();
    let r = ran.clone();
    let task = lp.create_task(async move { bump(&r) }).unwrap();
    lp.close().unwrap();
    assert_eq!(ran.get(), 0);
    assert!(task.cancelled());
}

// ---------------------------------------------------------------------------
// sock_*, stream reads and drain (loop-net)

#[cfg(feature = "net")]
mod net {
    use super::*;
    use aioloop::prelude::*;
    use aioloop::{FlowControl, StreamReader};
    use std::io;
    use std::os::unix::net::UnixStream;

    fn loop_error_of(e: &io::Error) -> Option<&LoopError> {
        e.get_ref()?.downcast_ref::<LoopError>()
    }

    #[test]
    fn sock_recv_observes_the_cancellation_as_an_io_error_holding_the_loop_error() {
        let lp = new_loop();
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let seen: Log<String> = log();
        let (lp2, s) = (lp.clone(), seen.clone());
        let task = lp
            .create_task(async move {
                let r = lp2.sock_recv(&a, 10).await;
                saw(&s, &r);
                drop(a);
                r
            })
            .unwrap();
        one_iteration(&lp);
        task.cancel(Some("no data"));
        let out = try_run(&lp, task.clone());
        assert!(
            task.cancelled(),
            "the io::Error kept the cancellation: {out:?}"
        );
        let e = out.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert_eq!(e.message(), "no data");
        assert_eq!(*seen.borrow(), vec!["err: no data".to_string()]);
        lp.close().unwrap();
    }

    #[test]
    fn a_body_mapping_the_sock_error_sees_a_cancelled_loop_error_inside() {
        let lp = new_loop();
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let lp2 = lp.clone();
        let task = lp
            .create_task(async move {
                let e = lp2.sock_recv(&a, 10).await.unwrap_err();
                let inner = loop_error_of(&e).expect("a LoopError inside");
                (inner.kind(), inner.message().to_string())
            })
            .unwrap();
        one_iteration(&lp);
        task.cancel(Some("x"));
        let (kind, msg) = try_run(&lp, task).unwrap().unwrap();
        assert_eq!(kind, ErrorKind::Cancelled);
        assert_eq!(msg, "x");
        lp.close().unwrap();
    }

    #[test]
    fn a_stream_reader_read_observes_the_cancellation() {
        let lp = new_loop();
        let reader = StreamReader::new();
        let seen: Log<String> = log();
        let (r, s) = (reader.clone(), seen.clone());
        let task = lp
            .create_task(async move {
                let out = r.read(10).await;
                saw(&s, &out);
                out
            })
            .unwrap();
        one_iteration(&lp);
        task.cancel(Some("stop reading"));
        let out = try_run(&lp, task.clone());
        assert!(task.cancelled(), "{out:?}");
        assert_eq!(*seen.borrow(), vec!["err: stop reading".to_string()]);
        // The reader is free for the next read.
        reader.feed_data(b"hi").unwrap();
        let r = reader.clone();
        let again = try_run(&lp, async move { r.read(10).await }).unwrap();
        assert_eq!(again.unwrap(), b"hi");
        lp.close().unwrap();
    }

    #[test]
    fn drain_observes_the_cancellation() {
        let lp = new_loop();
        let flow = FlowControl::new();
        flow.pause_writing();
        let seen: Log<String> = log();
        let (f, s) = (flow.clone(), seen.clone());
        let task = lp
            .create_task(async move {
                let out = f.drain().await;
                saw(&s, &out);
                out
            })
            .unwrap();
        one_iteration(&lp);
        task.cancel(Some("no drain"));
        let out = try_run(&lp, task.clone());
        assert!(task.cancelled(), "{out:?}");
        assert_eq!(*seen.borrow(), vec!["err: no drain".to_string()]);
        assert_cancelled(out.map(|_| ()), "no drain");
        lp.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Process.wait (loop-process)

#[cfg(feature = "process")]
mod process {
    use super::*;
    use aioloop::prelude::*;

    #[test]
    fn process_wait_observes_the_cancellation_and_the_child_can_still_be_reaped() {
        let lp = new_loop();
        let lp2 = lp.clone();
        let seen: Log<String> = log();
        let s = seen.clone();
        let proc_slot: Rc<RefCell<Option<Process>>> = Rc::default();
        let p2 = proc_slot.clone();
        let task = lp
            .create_task(async move {
                let p = lp2
                    .create_subprocess_exec("sleep", ["30"], SubprocessOptions::new())
                    .await?;
                let wait = p.wait();
                *p2.borrow_mut() = Some(p);
                let r = wait.await;
                saw(&s, &r);
                r
            })
            .unwrap();
        // Until the child runs and the task waits for it.
        while proc_slot.borrow().is_none() && !task.done() {
            one_iteration(&lp);
        }
        assert!(!task.done(), "spawning failed: {:?}", task.take_result());
        one_iteration(&lp);
        task.cancel(Some("stop waiting"));
        let out = try_run(&lp, task.clone());
        assert!(task.cancelled(), "{out:?}");
        assert_eq!(*seen.borrow(), vec!["err: stop waiting".to_string()]);
        let p = proc_slot.borrow_mut().take().unwrap();
        p.kill().unwrap();
        let code = try_run(&lp, async move { p.wait().await })
            .unwrap()
            .unwrap();
        assert_eq!(code, -9);
        lp.close().unwrap();
    }
}
