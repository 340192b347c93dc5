//! asyncio `Task` on aioloop: scheduling, names, results, cancellation
//! (cancel/cancelling/uncancel, before the first run, at the end, at close),
//! panics, "never retrieved" and "destroyed but pending" reports, the task
//! factory, all_tasks/current_task, done callbacks, re-entrancy, and a
//! 10 000-task smoke test.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::util::*;
use aioloop::{current_task, ErrorKind, EventLoop, Future, LoopError, Task, TaskBody, TaskRef};

const NEVER_RETRIEVED: &str = "Task exception was never retrieved";
const DESTROYED_PENDING: &str = "Task was destroyed but it is pending!";

/// A task that waits for `fut` forever (unless someone sets it), holding a
/// drop guard in its future so the test sees when the future is dropped.
/// It propagates what the await gives, so a cancellation ends it cancelled.
fn blocked_task(
    lp: &EventLoop,
    fut: &Future<u32>,
    drops: &Rc<Cell<usize>>,
) -> Task<Result<u32, LoopError>> {
    let (f, guard) = (fut.clone(), DropCount(drops.clone()));
    lp.create_task(async move {
        let _guard = guard;
        f.await
    })
    .unwrap()
}

/// Runs a task to its end under a watchdog: its output, or its error (a task
/// that ended cancelled makes `run_until_complete` give the cancellation).
fn run_task<T: 'static>(lp: &EventLoop, task: Task<T>) -> Result<T, LoopError> {
    let dog = Watchdog::start(lp);
    let out = lp.run_until_complete(task);
    dog.disarm();
    out.and_then(|r| r)
}

/// A value the optimiser cannot see through, so that a `panic!` in an async
/// block does not make the rest of it unreachable.
fn yes() -> bool {
    std::hint::black_box(true)
}

// ---------------------------------------------------------------------------
// Scheduling, names, results

#[test]
fn create_task_runs_the_future_on_the_next_iteration_not_synchronously() {
    let lp = new_loop();
    let ran = counter();
    let r = ran.clone();
    let task = lp
        .create_task(async move {
            bump(&r);
            "out"
        })
        .unwrap();
    assert_eq!(ran.get(), 0, "the body ran inside create_task");
    assert!(!task.done());
    assert_eq!(lp.ready_len(), 1, "its first poll is queued");
    one_iteration(&lp);
    assert_eq!(ran.get(), 1);
    assert!(task.done());
    assert!(!task.cancelled());
    assert_eq!(task.result().unwrap(), "out");
    lp.close().unwrap();
}

#[test]
fn names_default_to_task_n_and_can_be_set() {
    let lp = new_loop();
    let named = lp.create_task_named(async {}, "worker").unwrap();
    assert_eq!(named.get_name(), "worker");
    assert_eq!(named.as_task_ref().get_name(), "worker");
    assert_eq!(format!("{named:?}"), "<Task pending name=\"worker\">");
    named.set_name("renamed");
    assert_eq!(named.get_name(), "renamed");
    assert_eq!(named.as_task_ref().get_name(), "renamed");

    let a = lp.create_task(async {}).unwrap();
    let b = lp.create_task(async {}).unwrap();
    assert_eq!(a.get_name(), format!("Task-{}", a.id()));
    assert_eq!(b.get_name(), format!("Task-{}", b.id()));
    assert_ne!(a.id(), b.id());
    assert!(a.as_task_ref().ptr_eq(&a.clone().as_task_ref()));
    assert!(!a.as_task_ref().ptr_eq(&b.as_task_ref()));
    assert!(a.get_loop().ptr_eq(&lp));
    one_iteration(&lp);
    assert_eq!(
        format!("{a:?}"),
        format!("<Task finished name=\"Task-{}\">", a.id())
    );
    lp.close().unwrap();
}

#[test]
fn result_and_exception_are_invalid_state_until_the_task_is_done() {
    let lp = new_loop();
    let task = lp.create_task(async { vec![1u8, 2] }).unwrap();
    assert_kind(task.result(), ErrorKind::InvalidState);
    assert_kind(task.exception(), ErrorKind::InvalidState);
    assert_kind(task.take_result(), ErrorKind::InvalidState);
    one_iteration(&lp);
    assert_eq!(task.result().unwrap(), [1, 2]);
    assert_eq!(task.result().unwrap(), [1, 2], "result() clones");
    assert!(task.exception().unwrap().is_none());
    assert_eq!(task.take_result().unwrap(), [1, 2]);
    let e = assert_kind(task.result(), ErrorKind::InvalidState);
    assert!(e.message().contains("moved out"), "{e}");
    lp.close().unwrap();
}

#[test]
fn awaiting_a_task_from_another_task_yields_its_output() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let f = fut.clone();
    let inner = lp.create_task(async move { f.await.unwrap() * 2 }).unwrap();
    let i = inner.clone();
    let outer = lp
        .create_task(async move { i.await.map(|v| format!("got {v}")) })
        .unwrap();
    one_iteration(&lp);
    assert!(!inner.done() && !outer.done());
    fut.set_result(21).unwrap();
    assert_eq!(run(&lp, outer.clone()).unwrap().unwrap(), "got 42");
    // The await moved the inner task's output out.
    assert!(inner.done());
    assert_kind(inner.result(), ErrorKind::InvalidState);
    lp.close().unwrap();
}

#[test]
fn run_until_complete_accepts_a_future_a_task_and_an_async_block() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let setter = fut.clone();
    lp.call_soon(move || setter.set_result(1).unwrap()).unwrap();
    assert_eq!(run(&lp, fut).unwrap(), 1);

    let task = lp.create_task(async { 2 }).unwrap();
    assert_eq!(run(&lp, task.clone()).unwrap(), 2);
    assert!(task.done());

    let lp2 = lp.clone();
    let out = run(&lp, async move {
        let t = lp2.create_task(async { 3 }).unwrap();
        let f = lp2.create_future::<u32>();
        f.set_result(4).unwrap();
        t.await.unwrap() + f.await.unwrap()
    });
    assert_eq!(out, 7);
    lp.close().unwrap();
}

#[test]
fn create_task_on_a_closed_loop_is_refused() {
    let lp = new_loop();
    lp.close().unwrap();
    let ran = counter();
    let r = ran.clone();
    let err = lp.create_task(async move { bump(&r) }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(ran.get(), 0);
}

// ---------------------------------------------------------------------------
// Cancellation

#[test]
fn cancelling_a_pending_task_drops_its_future_and_ends_it_cancelled() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let task = blocked_task(&lp, &fut, &drops);
    one_iteration(&lp);
    assert!(!task.done());
    assert!(task.cancel(Some("shutting down")));
    assert_eq!(task.cancelling(), 1);
    assert!(!task.cancelled(), "cancellation happens at the next poll");
    assert!(!task.done());
    assert_eq!(drops.get(), 0);
    one_iteration(&lp);
    assert!(task.done());
    assert!(task.cancelled());
    assert_eq!(drops.get(), 1, "the future was dropped");
    let e = assert_kind(task.result(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "shutting down");
    let e = assert_kind(task.exception(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "shutting down");
    assert!(!task.cancel(Some("again")), "cancel of a done task");
    // Awaiting it gives the cancellation.
    let e = assert_kind(run_task(&lp, task.clone()), ErrorKind::Cancelled);
    assert_eq!(e.message(), "shutting down");
    assert!(task.cancelled());
    assert_eq!(
        format!("{task:?}"),
        format!("<Task cancelled name=\"{}\">", task.get_name())
    );
    lp.close().unwrap();
}

#[test]
fn awaiting_a_task_cancelled_meanwhile_gives_cancelled() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let task = blocked_task(&lp, &fut, &drops);
    let t = task.clone();
    let waiter = lp.create_task(t).unwrap();
    one_iteration(&lp);
    task.cancel(Some("gone"));
    let e = assert_kind(run_task(&lp, waiter), ErrorKind::Cancelled);
    assert_eq!(e.message(), "gone");
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

#[test]
fn cancel_on_a_done_task_returns_false() {
    let lp = new_loop();
    let task = lp.create_task(async { 1 }).unwrap();
    one_iteration(&lp);
    assert!(task.done());
    assert!(!task.cancel(Some("late")));
    assert!(!task.as_task_ref().cancel(None));
    assert_eq!(task.cancelling(), 0);
    assert!(!task.cancelled());
    assert_eq!(task.result().unwrap(), 1);
    lp.close().unwrap();
}

#[test]
fn a_task_cancelled_before_its_first_run_never_runs_its_body() {
    let lp = new_loop();
    let ran = counter();
    let drops = counter();
    let (r, guard) = (ran.clone(), DropCount(drops.clone()));
    let task = lp
        .create_task(async move {
            let _guard = guard;
            bump(&r);
        })
        .unwrap();
    assert!(task.cancel(None));
    one_iteration(&lp);
    assert_eq!(ran.get(), 0, "the body ran");
    assert_eq!(drops.get(), 1, "the future was dropped");
    assert!(task.cancelled());
    assert_eq!(task.result().unwrap_err().message(), "");
    lp.close().unwrap();
}

#[test]
fn cancelling_counts_requests_and_uncancel_withdraws_them() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let task = blocked_task(&lp, &fut, &drops);
    one_iteration(&lp);
    assert_eq!(task.cancelling(), 0);
    assert!(task.cancel(Some("a")));
    assert!(task.as_task_ref().cancel(Some("b")));
    assert_eq!(task.cancelling(), 2);
    assert_eq!(task.as_task_ref().cancelling(), 2);
    assert_eq!(task.uncancel(), 1);
    assert_eq!(task.uncancel(), 0);
    assert_eq!(task.uncancel(), 0, "never below zero");
    // Every request withdrawn before the next poll: the task carries on.
    one_iteration(&lp);
    assert!(!task.done());
    assert_eq!(drops.get(), 0);
    fut.set_result(5).unwrap();
    assert_eq!(run(&lp, task.clone()).unwrap().unwrap(), 5);
    assert!(!task.cancelled());
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

#[test]
fn a_partly_withdrawn_cancellation_still_cancels_with_the_last_message() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let task = blocked_task(&lp, &fut, &drops);
    one_iteration(&lp);
    task.cancel(Some("first"));
    task.cancel(Some("second"));
    assert_eq!(task.uncancel(), 1);
    one_iteration(&lp);
    assert!(task.cancelled());
    assert_eq!(task.result().unwrap_err().message(), "second");
    assert_eq!(task.cancelling(), 1);
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

#[test]
fn a_task_cancelling_itself_stops_at_its_next_await() {
    // asyncio's test_cancel_current_task.
    let lp = new_loop();
    let after = counter();
    let (lp2, a) = (lp.clone(), after.clone());
    let task = lp
        .create_task(async move {
            let me = lp2.current_task().expect("inside a task");
            assert!(me.cancel(Some("myself")));
            lp2.create_future::<()>().await?;
            bump(&a);
            Ok::<_, LoopError>(12)
        })
        .unwrap();
    let e = assert_kind(run_task(&lp, task.clone()), ErrorKind::Cancelled);
    assert_eq!(e.message(), "myself");
    assert!(task.cancelled());
    assert_eq!(after.get(), 0, "code after the await ran");
    assert!(!task.cancel(None));
    lp.close().unwrap();
}

#[test]
fn a_task_cancelled_right_before_it_returns_ends_cancelled() {
    // asyncio's test_cancel_at_end: cancel() returned true, so the task must
    // end cancelled even though its coroutine returned in the same step.
    let lp = new_loop();
    let lp2 = lp.clone();
    let task = lp
        .create_task(async move {
            assert!(lp2.current_task().unwrap().cancel(Some("at the end")));
            12
        })
        .unwrap();
    let out = run_task(&lp, task.clone());
    assert!(task.done());
    assert!(
        task.cancelled(),
        "the task returned {out:?} after cancel() accepted"
    );
    let e = assert_kind(out, ErrorKind::Cancelled);
    assert_eq!(e.message(), "at the end");
    assert!(!task.cancel(None));
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Panics and reports

#[test]
fn a_panicking_task_completes_with_panicked_and_the_loop_keeps_running() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let task = lp
        .create_task_named(
            async {
                if yes() {
                    panic!("boom {}", 7);
                }
                1u32
            },
            "bad",
        )
        .unwrap();
    let after = counter();
    let a = after.clone();
    lp.call_soon(move || bump(&a)).unwrap();
    one_iteration(&lp);
    assert_eq!(after.get(), 1, "the callback after the task still ran");
    assert!(task.done());
    assert!(!task.cancelled());
    let e = task
        .exception()
        .unwrap()
        .expect("the panic is the task's error");
    assert_eq!(e.kind(), ErrorKind::Panicked);
    assert_eq!(e.panic().unwrap().message(), "boom 7");
    assert!(e.message().contains("bad"), "{e}");
    assert!(e.message().contains("boom 7"), "{e}");
    assert_kind(task.result(), ErrorKind::Panicked);

    // Awaiting it from another task yields the same error.
    let awaiter = lp.create_task(task.clone()).unwrap();
    let out = run(&lp, awaiter.clone());
    assert!(!awaiter.cancelled(), "the awaiting task itself succeeded");
    let e = assert_kind(out.unwrap(), ErrorKind::Panicked);
    assert_eq!(e.panic().unwrap().message(), "boom 7");
    // And the loop runs further tasks.
    assert_eq!(run(&lp, lp.create_task(async { 2 }).unwrap()).unwrap(), 2);
    assert!(
        seen.borrow().iter().all(|s| s.message != NEVER_RETRIEVED),
        "{:?}",
        seen.borrow()
    );
    drop(task);
    assert!(reports(&seen, NEVER_RETRIEVED).is_empty());
    lp.close().unwrap();
}

#[test]
fn an_uninspected_panicked_task_is_reported_when_its_last_handle_drops() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let task = lp
        .create_task_named(
            async {
                if yes() {
                    panic!("unseen");
                }
            },
            "lost",
        )
        .unwrap();
    let other = task.clone();
    one_iteration(&lp);
    assert!(task.done());
    drop(task);
    assert!(reports(&seen, NEVER_RETRIEVED).is_empty(), "a handle lives");
    drop(other);
    let r = reports(&seen, NEVER_RETRIEVED);
    assert_eq!(r.len(), 1, "{:?}", seen.borrow());
    assert_eq!(r[0].kind, Some(ErrorKind::Panicked));
    assert_eq!(r[0].panic.as_deref(), Some("unseen"));
    lp.close().unwrap();
}

#[test]
fn a_fire_and_forget_task_that_panics_is_reported_when_it_ends() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    drop(
        lp.create_task(async {
            if yes() {
                panic!("nobody listens");
            }
        })
        .unwrap(),
    );
    one_iteration(&lp);
    let r = reports(&seen, NEVER_RETRIEVED);
    assert_eq!(r.len(), 1, "{:?}", seen.borrow());
    assert_eq!(r[0].panic.as_deref(), Some("nobody listens"));
    lp.close().unwrap();
}

#[test]
fn inspected_awaited_or_cancelled_tasks_are_not_reported() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let panicking = || async {
        if yes() {
            panic!("seen");
        }
    };
    let by_exception = lp.create_task(panicking()).unwrap();
    let by_result = lp.create_task(panicking()).unwrap();
    let by_await = lp.create_task(panicking()).unwrap();
    let by_callback = lp.create_task(panicking()).unwrap();
    by_callback.add_done_callback(|t| assert!(t.exception().unwrap().is_some()));
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let cancelled = blocked_task(&lp, &fut, &drops);
    one_iteration(&lp);
    cancelled.cancel(Some("fine"));
    assert!(by_exception.exception().unwrap().is_some());
    assert!(by_result.result().is_err());
    assert!(run(&lp, by_await).is_err());
    drop((by_exception, by_result, by_callback, cancelled));
    one_iteration(&lp);
    assert!(
        reports(&seen, NEVER_RETRIEVED).is_empty(),
        "{:?}",
        seen.borrow()
    );
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Task factory

#[test]
fn the_task_factory_is_called_once_per_create_task_and_can_wrap_the_body() {
    let lp = new_loop();
    assert!(lp.get_task_factory().is_none());
    let calls = log::<(String, u64)>();
    let events = log::<String>();
    let (c, ev, lp_seen) = (calls.clone(), events.clone(), lp.clone());
    lp.set_task_factory(
        move |factory_lp: &EventLoop, body: TaskBody, task: &TaskRef| {
            assert!(factory_lp.ptr_eq(&lp_seen));
            assert!(!task.done());
            c.borrow_mut().push((task.get_name(), task.id()));
            let (ev, name) = (ev.clone(), task.get_name());
            Box::pin(async move {
                ev.borrow_mut().push(format!("before {name}"));
                body.await;
                ev.borrow_mut().push(format!("after {name}"));
            }) as TaskBody
        },
    );
    assert!(lp.get_task_factory().is_some());

    let ev = events.clone();
    let named = lp
        .create_task_named(
            async move {
                ev.borrow_mut().push("body".into());
                5
            },
            "made",
        )
        .unwrap();
    assert_eq!(*calls.borrow(), [("made".to_string(), named.id())]);
    assert!(
        events.borrow().is_empty(),
        "the wrapped body ran synchronously"
    );
    let plain = lp.create_task(async { 6 }).unwrap();
    assert_eq!(calls.borrow().len(), 2);
    assert_eq!(
        calls.borrow()[1],
        (format!("Task-{}", plain.id()), plain.id())
    );
    // create_future does not go through the factory.
    let fut = lp.create_future::<u32>();
    assert_eq!(calls.borrow().len(), 2);

    assert_eq!(run(&lp, named).unwrap(), 5);
    assert_eq!(run(&lp, plain.clone()).unwrap(), 6);
    let plain_name = plain.get_name();
    // run_until_complete wraps its future in a task of its own, which goes
    // through the factory too (asyncio: ensure_future -> create_task); keep
    // only the events of the two tasks created above.
    let relevant: Vec<String> = events
        .borrow()
        .iter()
        .filter(|e| e.ends_with(" made") || e.ends_with(&plain_name) || *e == "body")
        .cloned()
        .collect();
    assert_eq!(
        relevant,
        [
            "before made".to_string(),
            "body".to_string(),
            "after made".to_string(),
            format!("before {plain_name}"),
            format!("after {plain_name}"),
        ]
    );
    assert_eq!(
        calls.borrow().len(),
        4,
        "two create_task, two run_until_complete"
    );

    lp.clear_task_factory();
    assert!(lp.get_task_factory().is_none());
    let t = lp.create_task(async { 7 }).unwrap();
    assert_eq!(run(&lp, t).unwrap(), 7);
    assert_eq!(
        calls.borrow().len(),
        4,
        "the factory was called after clear"
    );
    assert_eq!(events.borrow().len(), 9);
    fut.cancel(None);
    lp.close().unwrap();
}

#[test]
fn a_task_factory_that_drops_the_body_leaves_the_task_cancelled() {
    // Documented on TaskFactory: "A factory that drops the body without
    // polling it completes the task as cancelled."
    let lp = new_loop();
    lp.set_task_factory(|_: &EventLoop, body: TaskBody, _: &TaskRef| {
        drop(body);
        Box::pin(async {}) as TaskBody
    });
    let ran = counter();
    let drops = counter();
    let (r, guard) = (ran.clone(), DropCount(drops.clone()));
    let task = lp
        .create_task(async move {
            let _guard = guard;
            bump(&r);
        })
        .unwrap();
    assert_eq!(drops.get(), 1, "the user's future was dropped");
    one_iteration(&lp);
    assert_eq!(ran.get(), 0);
    assert!(task.done(), "the task never completes");
    assert!(task.cancelled());
    assert!(lp.all_tasks().is_empty(), "{:?}", lp.all_tasks());
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// all_tasks, current_task

fn ids(tasks: &[TaskRef]) -> Vec<u64> {
    let mut ids: Vec<u64> = tasks.iter().map(|t| t.id()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn all_tasks_lists_the_pending_tasks_only() {
    let lp = new_loop();
    assert!(lp.all_tasks().is_empty());
    let (f1, f2) = (lp.create_future::<u32>(), lp.create_future::<u32>());
    let drops = counter();
    let t1 = blocked_task(&lp, &f1, &drops);
    let t2 = blocked_task(&lp, &f2, &drops);
    let quick = lp.create_task(async { 0 }).unwrap();
    let mut expected = vec![t1.id(), t2.id(), quick.id()];
    expected.sort_unstable();
    assert_eq!(
        ids(&lp.all_tasks()),
        expected,
        "not yet started counts as pending"
    );
    one_iteration(&lp);
    assert!(quick.done());
    let mut expected = vec![t1.id(), t2.id()];
    expected.sort_unstable();
    let all = lp.all_tasks();
    assert_eq!(ids(&all), expected);
    assert!(all.iter().all(|t| !t.done()));
    f1.set_result(1).unwrap();
    assert_eq!(run(&lp, t1.clone()).unwrap().unwrap(), 1);
    assert_eq!(ids(&lp.all_tasks()), [t2.id()]);
    t2.cancel(None);
    one_iteration(&lp);
    assert!(lp.all_tasks().is_empty());
    // A handle from all_tasks can cancel (f2 was cancelled with t2, which
    // was waiting for it).
    assert!(f2.cancelled());
    let f3 = lp.create_future::<u32>();
    let t3 = blocked_task(&lp, &f3, &drops);
    one_iteration(&lp);
    let refs = lp.all_tasks();
    assert_eq!(ids(&refs), [t3.id()]);
    assert!(refs[0].cancel(Some("via TaskRef")));
    one_iteration(&lp);
    assert!(refs[0].done() && refs[0].cancelled());
    assert_eq!(t3.result().unwrap_err().message(), "via TaskRef");
    lp.close().unwrap();
}

#[test]
fn current_task_is_the_task_being_polled_and_none_elsewhere() {
    let lp = new_loop();
    assert!(lp.current_task().is_none());
    assert!(current_task().is_none());
    let (lp2, seen_inner) = (lp.clone(), Rc::new(Cell::new(0)));
    let si = seen_inner.clone();
    let outer = lp
        .create_task(async move {
            let me = lp2.current_task().expect("inside a task").id();
            assert_eq!(current_task().unwrap().id(), me);
            let lp3 = lp2.clone();
            let inner = lp2
                .create_task(async move { lp3.current_task().unwrap().id() })
                .unwrap();
            let inner_id = inner.id();
            si.set(inner.await.unwrap());
            assert_eq!(si.get(), inner_id);
            // Still this task after awaiting another one.
            assert_eq!(lp2.current_task().unwrap().id(), me);
            me
        })
        .unwrap();
    let in_callback = Rc::new(Cell::new(None));
    let (ic, lp2) = (in_callback.clone(), lp.clone());
    lp.call_soon(move || {
        ic.set(Some(
            lp2.current_task().is_none() && current_task().is_none(),
        ))
    })
    .unwrap();
    let in_done_callback = Rc::new(Cell::new(None));
    let (idc, lp2) = (in_done_callback.clone(), lp.clone());
    outer.add_done_callback(move |_| idc.set(Some(lp2.current_task().is_none())));
    let outer_id = outer.id();
    assert_eq!(run(&lp, outer.clone()).unwrap(), outer_id);
    one_iteration(&lp);
    assert_ne!(seen_inner.get(), 0);
    assert_ne!(seen_inner.get(), outer_id);
    assert_eq!(in_callback.get(), Some(true));
    assert_eq!(in_done_callback.get(), Some(true));
    assert!(lp.current_task().is_none());
    assert!(current_task().is_none());
    lp.close().unwrap();
}

#[test]
fn current_task_of_another_loop_is_none() {
    let lp = new_loop();
    let other = new_loop();
    let o = other.clone();
    let t = lp
        .create_task(async move { (o.current_task().is_none(), current_task().is_some()) })
        .unwrap();
    assert_eq!(run(&lp, t).unwrap(), (true, true));
    lp.close().unwrap();
    other.close().unwrap();
}

// ---------------------------------------------------------------------------
// Done callbacks

#[test]
fn task_done_callbacks_receive_the_task_and_run_via_call_soon_in_order() {
    let lp = new_loop();
    let task = lp.create_task(async { 3u32 }).unwrap();
    let order = log::<(usize, u64, u32)>();
    let mut ids = Vec::new();
    for i in 0..4 {
        let o = order.clone();
        ids.push(task.add_done_callback(move |t: &Task<u32>| {
            assert!(t.done());
            o.borrow_mut().push((i, t.id(), t.result().unwrap()))
        }));
    }
    assert_eq!(task.remove_done_callback(ids[2]), 1);
    assert_eq!(task.remove_done_callback(ids[2]), 0);
    one_iteration(&lp);
    assert!(task.done());
    assert!(order.borrow().is_empty(), "ran in the task's own step");
    one_iteration(&lp);
    let id = task.id();
    assert_eq!(*order.borrow(), [(0, id, 3), (1, id, 3), (3, id, 3)]);
    // Added after completion: scheduled at once, run next iteration.
    let o = order.clone();
    task.add_done_callback(move |t| o.borrow_mut().push((9, t.id(), 0)));
    assert_eq!(order.borrow().len(), 3);
    assert_eq!(lp.ready_len(), 1);
    one_iteration(&lp);
    assert_eq!(order.borrow()[3], (9, id, 0));
    lp.close().unwrap();
}

#[test]
fn done_callbacks_run_for_cancelled_and_panicked_tasks() {
    let lp = new_loop();
    let kinds = log::<ErrorKind>();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let cancelled = blocked_task(&lp, &fut, &drops);
    let k = kinds.clone();
    cancelled.add_done_callback(move |t| {
        assert!(t.cancelled());
        k.borrow_mut().push(t.result().unwrap_err().kind())
    });
    let panicked = lp
        .create_task(async {
            if yes() {
                panic!("cb");
            }
            0u32
        })
        .unwrap();
    let k = kinds.clone();
    panicked
        .add_done_callback(move |t| k.borrow_mut().push(t.exception().unwrap().unwrap().kind()));
    one_iteration(&lp);
    cancelled.cancel(None);
    one_iteration(&lp);
    one_iteration(&lp);
    assert_eq!(*kinds.borrow(), [ErrorKind::Panicked, ErrorKind::Cancelled]);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Closing with pending tasks

#[test]
fn tasks_pending_at_close_are_cancelled_and_their_futures_dropped() {
    let lp = new_loop();
    let (blocked_on, woken_by) = (lp.create_future::<u32>(), lp.create_future::<u32>());
    let drops = counter();
    // Polled once, waiting for a future nobody sets.
    let blocked = blocked_task(&lp, &blocked_on, &drops);
    // Polled once, then woken between runs: its wake-up is still queued.
    let woken = blocked_task(&lp, &woken_by, &drops);
    // Waiting for another task.
    let b = blocked.clone();
    let waiter_guard = DropCount(drops.clone());
    let waiter = lp
        .create_task(async move {
            let _guard = waiter_guard;
            b.await?
        })
        .unwrap();
    one_iteration(&lp);
    woken_by.set_result(1).unwrap();
    // Never polled at all.
    let ran = counter();
    let (r, guard) = (ran.clone(), DropCount(drops.clone()));
    let never_run = lp
        .create_task(async move {
            let _guard = guard;
            bump(&r);
        })
        .unwrap();
    assert_eq!(lp.all_tasks().len(), 4);
    assert_eq!(drops.get(), 0);

    lp.close().unwrap();
    assert_eq!(ran.get(), 0);
    assert_eq!(drops.get(), 4, "every pending task's future was dropped");
    for (name, done, cancelled) in [
        ("blocked", blocked.done(), blocked.cancelled()),
        ("woken", woken.done(), woken.cancelled()),
        ("waiter", waiter.done(), waiter.cancelled()),
        ("never_run", never_run.done(), never_run.cancelled()),
    ] {
        assert!(
            done && cancelled,
            "{name}: done={done} cancelled={cancelled}"
        );
    }
    assert_kind(blocked.result(), ErrorKind::Cancelled);
    assert!(lp.all_tasks().is_empty(), "{:?}", lp.all_tasks());
}

#[test]
fn closing_in_debug_mode_reports_destroyed_pending_tasks() {
    // close() cancels the pending tasks and runs them to their end; only a
    // task still pending after its bounded rounds is destroyed (dropped
    // unfinished), and debug mode reports that one.
    let lp = EventLoop::builder()
        .debug(true)
        .virtual_clock(aioloop::VirtualClock::new())
        .build()
        .unwrap();
    let seen = record_exceptions(&lp);
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let blocked = blocked_task(&lp, &fut, &drops);
    let (lp2, guard) = (lp.clone(), DropCount(drops.clone()));
    let stuck = lp
        .create_task_named(
            async move {
                let _guard = guard;
                loop {
                    // Swallows every cancellation.
                    let _ = lp2.sleep(std::time::Duration::from_secs(3600)).await;
                }
            },
            "stuck",
        )
        .unwrap();
    let finished = lp.create_task(async { 1 }).unwrap();
    one_iteration(&lp);
    assert!(finished.done());
    let never_run = lp.create_task_named(async {}, "unstarted").unwrap();
    lp.close().unwrap();
    let r = reports(&seen, DESTROYED_PENDING);
    assert_eq!(r.len(), 1, "{:?}", seen.borrow());
    let error = r[0].error.clone().unwrap_or_default();
    assert!(error.contains("stuck"), "{r:?}");
    // The report names where the task was created (its create_task call).
    let created = stuck.created_at();
    assert!(created.file().ends_with(file!()), "{created}");
    assert!(error.contains(&format!("created at {created}")), "{error}");
    assert!(blocked.cancelled() && never_run.cancelled() && stuck.cancelled());
    assert_eq!(drops.get(), 2);
}

#[test]
fn closing_outside_debug_mode_cancels_silently() {
    let lp = EventLoop::builder().debug(false).build().unwrap();
    let seen = record_exceptions(&lp);
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let blocked = blocked_task(&lp, &fut, &drops);
    one_iteration(&lp);
    lp.close().unwrap();
    assert!(blocked.cancelled());
    assert_eq!(drops.get(), 1);
    assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
}

// ---------------------------------------------------------------------------
// Re-entrancy

#[test]
fn a_done_callback_can_cancel_another_task() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let victim = blocked_task(&lp, &fut, &drops);
    let killer = lp.create_task(async { "done" }).unwrap();
    let v = victim.clone();
    killer.add_done_callback(move |k| {
        assert!(v.cancel(Some(&format!("killer was {}", k.result().unwrap()))));
    });
    let out = run_task(&lp, victim.clone());
    let e = assert_kind(out, ErrorKind::Cancelled);
    assert_eq!(e.message(), "killer was done");
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

#[test]
fn tasks_created_while_the_loop_is_stopping_run_on_the_next_run() {
    let lp = new_loop();
    let ran = log::<u32>();
    let children = Rc::new(RefCell::new(Vec::new()));
    let (lp2, r, ch) = (lp.clone(), ran.clone(), children.clone());
    let parent = lp
        .create_task(async move {
            lp2.stop();
            for i in 0..3 {
                let r = r.clone();
                ch.borrow_mut().push(
                    lp2.create_task(async move { r.borrow_mut().push(i) })
                        .unwrap(),
                );
            }
        })
        .unwrap();
    run_bounded(&lp);
    assert!(parent.done());
    assert!(
        ran.borrow().is_empty(),
        "children ran in the stopping iteration"
    );
    let pending = ids(&lp.all_tasks());
    let mut expected: Vec<u64> = children
        .borrow()
        .iter()
        .map(|t: &Task<()>| t.id())
        .collect();
    expected.sort_unstable();
    assert_eq!(pending, expected);
    one_iteration(&lp);
    assert_eq!(*ran.borrow(), [0, 1, 2]);
    assert!(children.borrow().iter().all(|t| t.done()));
    lp.close().unwrap();
}

#[test]
fn a_task_cannot_close_or_rerun_its_loop() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let task = lp
        .create_task(async move {
            let close = lp2.close().unwrap_err().kind();
            let rerun = lp2.run_until_complete(async {}).unwrap_err().kind();
            let forever = lp2.run_forever().unwrap_err().kind();
            (close, rerun, forever, lp2.is_closed(), lp2.is_running())
        })
        .unwrap();
    assert_eq!(
        run(&lp, task).unwrap(),
        (
            ErrorKind::Running,
            ErrorKind::AlreadyRunning,
            ErrorKind::AlreadyRunning,
            false,
            true
        )
    );
    // Still usable.
    assert_eq!(run(&lp, async { 1 }), 1);
    lp.close().unwrap();
}

#[test]
fn a_task_can_cancel_another_task_and_wait_for_it() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let drops = counter();
    let victim = blocked_task(&lp, &fut, &drops);
    let v = victim.clone();
    let boss = lp
        .create_task(async move {
            assert!(v.cancel(Some("from boss")));
            v.await
        })
        .unwrap();
    let e = assert_kind(run_task(&lp, boss), ErrorKind::Cancelled);
    assert_eq!(e.message(), "from boss");
    assert!(victim.cancelled());
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Scale

#[test]
fn ten_thousand_tasks_ping_pong_through_futures() {
    const N: u64 = 10_000;
    let lp = new_loop();
    let pings: Vec<Future<u64>> = (0..N).map(|_| lp.create_future()).collect();
    let pongs: Vec<Future<u64>> = (0..N).map(|_| lp.create_future()).collect();
    let players: Vec<Task<()>> = pings
        .iter()
        .zip(&pongs)
        .map(|(ping, pong)| {
            let (ping, pong) = (ping.clone(), pong.clone());
            lp.create_task(async move {
                let v = ping.await.unwrap();
                pong.set_result(v * 2).unwrap();
            })
            .unwrap()
        })
        .collect();
    // A relay: each task waits for the previous one's future.
    let chain: Vec<Future<u64>> = (0..=N).map(|_| lp.create_future()).collect();
    for i in 0..N as usize {
        let (from, to) = (chain[i].clone(), chain[i + 1].clone());
        lp.create_task(async move { to.set_result(from.await.unwrap() + 1).unwrap() })
            .unwrap();
    }
    let last = chain[N as usize].clone();
    let first = chain[0].clone();
    let lp2 = lp.clone();
    let total = run(&lp, async move {
        // Let every player reach its await, then serve.
        lp2.create_task(async {}).unwrap().await.unwrap();
        for (i, ping) in pings.iter().enumerate() {
            ping.set_result(i as u64).unwrap();
        }
        first.set_result(0).unwrap();
        let mut sum = 0;
        for pong in pongs {
            sum += pong.await.unwrap();
        }
        (sum, last.await.unwrap())
    });
    assert_eq!(total, (N * (N - 1), N));
    assert!(players.iter().all(|t| t.done() && t.result().is_ok()));
    assert!(lp.all_tasks().is_empty());
    lp.close().unwrap();
}

#[test]
fn run_until_complete_runs_its_future_as_a_task() {
    // asyncio wraps the future with ensure_future: current_task() and
    // all_tasks() see it.
    let lp = new_loop();
    let lp2 = lp.clone();
    let (current, listed) = lp
        .run_until_complete(async move {
            let me = lp2.current_task().expect("a current task");
            let listed = lp2.all_tasks().iter().any(|t| t.ptr_eq(&me));
            (me, listed)
        })
        .unwrap();
    assert!(listed);
    assert!(current.done());
    assert!(lp.all_tasks().is_empty());
    lp.close().unwrap();
}

/// LESSONS 24 (tokio users ask for `LocalRuntime`: `!Send` tasks without a
/// `LocalSet` layer): `create_task` takes a `!Send` future directly (this
/// one holds an `Rc` and a `RefCell` borrow-free shared state across
/// awaits, and captures a `*const` marker that is neither `Send` nor
/// `Sync`), runs it on the loop thread, and several such tasks share the
/// same `Rc` state with no synchronisation.
#[test]
fn create_task_takes_not_send_futures_directly() {
    let lp = new_loop();
    let l = lp.clone();
    let shared = Rc::new(RefCell::new(Vec::new()));
    let loop_thread = std::thread::current().id();
    let out = run(&lp, async move {
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (s, l2) = (shared.clone(), l.clone());
            let marker: *const () = std::ptr::null();
            tasks.push(
                l.create_task(async move {
                    let _not_send = marker;
                    s.borrow_mut().push(i);
                    l2.sleep(std::time::Duration::from_millis(1)).await.unwrap();
                    assert_eq!(std::thread::current().id(), loop_thread);
                    s.borrow_mut().push(10 + i);
                    Rc::strong_count(&s)
                })
                .unwrap(),
            );
        }
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.unwrap());
        }
        (counts, shared.borrow().clone())
    });
    assert!(out.0.iter().all(|&c| c >= 2), "{:?}", out.0);
    let mut seen = out.1;
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2, 10, 11, 12]);
    lp.close().unwrap();
}

#[test]
fn a_task_cancelling_itself_in_its_first_step_then_suspending_on_a_foreign_future_ends_cancelled() {
    // The cancellation is requested before the task ever suspended: the task
    // must still be woken to meet it (here by the fallback: a foreign
    // awaitable cannot observe it, so the body is dropped).
    let lp = new_loop();
    let dropped = counter();
    let (lp2, d) = (lp.clone(), dropped.clone());
    struct Bump(Rc<Cell<usize>>);
    impl Drop for Bump {
        fn drop(&mut self) {
            bump(&self.0);
        }
    }
    let task = lp
        .create_task(async move {
            let _guard = Bump(d);
            assert!(lp2.current_task().unwrap().cancel(Some("first step")));
            std::future::pending::<()>().await;
            12
        })
        .unwrap();
    let e = assert_kind(run_task(&lp, task.clone()), ErrorKind::Cancelled);
    assert_eq!(e.message(), "first step");
    assert!(task.cancelled());
    assert_eq!(dropped.get(), 1, "the body was dropped");
    lp.close().unwrap();
}

#[test]
fn task_ids_are_unique_across_threads() {
    // Ids come from per-thread blocks: 4 threads x 3,000 tasks cross several
    // block boundaries on each thread.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let lp = new_loop();
                let mut ids = Vec::new();
                for _ in 0..3000 {
                    let t = lp.create_task(async {}).unwrap();
                    ids.push(t.id());
                }
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing per thread");
                lp.close().unwrap();
                ids
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "an id was given twice");
}
