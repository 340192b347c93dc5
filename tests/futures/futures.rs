//! asyncio `Future` on aioloop: states and their typed errors, done callbacks
//! (scheduled with call_soon, in order, removable), awaiting from tasks (the
//! value moves out once), futures_lite combinators, and the "Future exception
//! was never retrieved" report.

use std::cell::{Cell, RefCell};
use std::error::Error as _;
use std::fmt;
use std::rc::Rc;

use crate::util::*;
use aioloop::{ErrorKind, Future, LoopError};

/// An error type of the test's own, to check that any std error is kept.
#[derive(Debug, Clone, PartialEq)]
struct MyError(u32);

impl fmt::Display for MyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "my error {}", self.0)
    }
}

impl std::error::Error for MyError {}

const NEVER_RETRIEVED: &str = "Future exception was never retrieved";

// ---------------------------------------------------------------------------
// States and their errors

#[test]
fn a_new_future_is_pending_and_its_result_is_an_invalid_state() {
    let lp = new_loop();
    let fut: Future<u32> = lp.create_future();
    assert!(!fut.done());
    assert!(!fut.cancelled());
    assert_kind(fut.result(), ErrorKind::InvalidState);
    assert_kind(fut.exception(), ErrorKind::InvalidState);
    assert_kind(fut.take_result(), ErrorKind::InvalidState);
    // Asking did not change anything.
    assert!(!fut.done());
    assert_eq!(format!("{fut:?}"), "<Future pending>");
    fut.set_result(1).unwrap();
    assert_eq!(fut.result().unwrap(), 1);
    lp.close().unwrap();
}

#[test]
fn set_result_makes_the_value_readable_any_number_of_times() {
    let lp = new_loop();
    let fut = lp.create_future::<String>();
    fut.set_result("hello".to_string()).unwrap();
    assert!(fut.done());
    assert!(!fut.cancelled());
    for _ in 0..3 {
        assert_eq!(fut.result().unwrap(), "hello");
    }
    assert!(fut.exception().unwrap().is_none());
    assert_eq!(format!("{fut:?}"), "<Future finished>");
    lp.close().unwrap();
}

#[test]
fn completing_a_done_future_again_is_an_invalid_state() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    fut.set_result(1).unwrap();
    let e = assert_kind(fut.set_result(2), ErrorKind::InvalidState);
    assert!(e.message().contains("set_result"), "{e}");
    let e = assert_kind(fut.set_exception(MyError(1)), ErrorKind::InvalidState);
    assert!(e.message().contains("set_exception"), "{e}");
    assert!(!fut.cancel(Some("too late")), "cancel of a done future");
    assert!(!fut.cancelled());
    assert_eq!(fut.result().unwrap(), 1, "the first result stays");

    let failed = lp.create_future::<u32>();
    failed.set_exception(MyError(2)).unwrap();
    assert_kind(failed.set_result(3), ErrorKind::InvalidState);
    assert_kind(failed.set_exception(MyError(3)), ErrorKind::InvalidState);
    assert!(!failed.cancel(None));
    assert_eq!(failed.exception().unwrap().unwrap().message(), "my error 2");

    let cancelled = lp.create_future::<u32>();
    assert!(cancelled.cancel(None));
    assert_kind(cancelled.set_result(4), ErrorKind::InvalidState);
    assert_kind(cancelled.set_exception(MyError(4)), ErrorKind::InvalidState);
    assert!(cancelled.cancelled());
    lp.close().unwrap();
}

#[test]
fn set_exception_takes_any_std_error_and_keeps_it_as_the_source() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    fut.set_exception(MyError(7)).unwrap();
    assert!(fut.done());
    assert!(!fut.cancelled());
    let e = assert_kind(fut.result(), ErrorKind::Exception);
    assert_eq!(e.message(), "my error 7");
    assert_eq!(e.to_string(), "my error 7");
    let source = e.source().expect("the original error is the source");
    assert_eq!(source.downcast_ref::<MyError>(), Some(&MyError(7)));
    // exception() gives the same error, as a value.
    let e2 = fut.exception().unwrap().expect("an error");
    assert_eq!(e2.kind(), ErrorKind::Exception);
    assert_eq!(e2.message(), "my error 7");
    // And again: reading does not consume it.
    assert_kind(fut.result(), ErrorKind::Exception);
    assert_kind(fut.take_result(), ErrorKind::Exception);
    assert_kind(fut.take_result(), ErrorKind::Exception);

    let io = lp.create_future::<()>();
    io.set_exception(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"))
        .unwrap();
    let e = io.exception().unwrap().unwrap();
    assert_eq!(e.kind(), ErrorKind::Exception);
    assert_eq!(e.message(), "gone");
    let source = e
        .source()
        .unwrap()
        .downcast_ref::<std::io::Error>()
        .unwrap();
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    lp.close().unwrap();
}

#[test]
fn set_exception_keeps_a_loop_error_as_it_is() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    fut.set_exception(LoopError::new(ErrorKind::Timeout, "too slow"))
        .unwrap();
    let e = assert_kind(fut.result(), ErrorKind::Timeout);
    assert_eq!(e.message(), "too slow");
    assert!(e.source().is_none(), "not wrapped: {e:?}");
    let e = fut.exception().unwrap().unwrap();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(!fut.cancelled());
    lp.close().unwrap();
}

#[test]
fn cancel_carries_its_message() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    assert!(fut.cancel(Some("stop it")));
    assert!(fut.done());
    assert!(fut.cancelled());
    let e = assert_kind(fut.result(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "stop it");
    let e = assert_kind(fut.exception(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "stop it");
    let e = assert_kind(fut.take_result(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "stop it");
    assert!(!fut.cancel(Some("again")), "a second cancel does nothing");
    assert_eq!(fut.result().unwrap_err().message(), "stop it");
    assert_eq!(format!("{fut:?}"), "<Future cancelled>");

    let quiet = lp.create_future::<u32>();
    assert!(quiet.cancel(None));
    assert_eq!(quiet.result().unwrap_err().message(), "");
    lp.close().unwrap();
}

#[test]
fn take_result_moves_the_value_out_once() {
    let lp = new_loop();
    // A value that is not Clone.
    #[derive(Debug)]
    struct NotClone(u32);
    let fut = lp.create_future::<NotClone>();
    fut.set_result(NotClone(9)).unwrap();
    assert_eq!(fut.take_result().unwrap().0, 9);
    let e = assert_kind(fut.take_result(), ErrorKind::InvalidState);
    assert!(e.message().contains("moved out"), "{e}");
    assert!(fut.done(), "still done after the value moved out");
    assert!(!fut.cancelled());
    assert!(fut.exception().unwrap().is_none());

    // After take_result, result() of a Clone value is an InvalidState too.
    let s = lp.create_future::<String>();
    s.set_result("x".into()).unwrap();
    assert_eq!(s.result().unwrap(), "x");
    assert_eq!(s.take_result().unwrap(), "x");
    assert_kind(s.result(), ErrorKind::InvalidState);
    lp.close().unwrap();
}

#[test]
fn get_loop_is_the_loop_that_created_the_future() {
    let lp = new_loop();
    let other = new_loop();
    let fut = lp.create_future::<()>();
    assert!(fut.get_loop().ptr_eq(&lp));
    assert!(!fut.get_loop().ptr_eq(&other));
    assert!(fut.ptr_eq(&fut.clone()));
    assert!(!fut.ptr_eq(&lp.create_future()));
    lp.close().unwrap();
    other.close().unwrap();
}

// ---------------------------------------------------------------------------
// Done callbacks

#[test]
fn done_callbacks_are_scheduled_with_call_soon_not_run_inside_set_result() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    fut.add_done_callback(move |f| s.set(Some(f.result().unwrap())));
    assert_eq!(lp.ready_len(), 0);
    fut.set_result(5).unwrap();
    assert_eq!(seen.get(), None, "the callback ran inside set_result");
    assert_eq!(lp.ready_len(), 1, "the callback was not scheduled");
    one_iteration(&lp);
    assert_eq!(seen.get(), Some(5));
    lp.close().unwrap();
}

#[test]
fn done_callbacks_run_for_set_exception_and_cancel_too() {
    let lp = new_loop();
    let kinds = log::<ErrorKind>();
    let failed = lp.create_future::<u32>();
    let k = kinds.clone();
    failed.add_done_callback(move |f| k.borrow_mut().push(f.result().unwrap_err().kind()));
    let cancelled = lp.create_future::<u32>();
    let k = kinds.clone();
    cancelled.add_done_callback(move |f| {
        assert!(f.cancelled());
        k.borrow_mut().push(f.exception().unwrap_err().kind())
    });
    failed.set_exception(MyError(1)).unwrap();
    assert!(cancelled.cancel(Some("c")));
    assert!(kinds.borrow().is_empty(), "callbacks ran synchronously");
    one_iteration(&lp);
    assert_eq!(
        *kinds.borrow(),
        vec![ErrorKind::Exception, ErrorKind::Cancelled]
    );
    lp.close().unwrap();
}

#[test]
fn done_callbacks_run_in_registration_order_within_the_call_soon_queue() {
    let lp = new_loop();
    let order = log::<String>();
    let o = order.clone();
    lp.call_soon(move || o.borrow_mut().push("before".into()))
        .unwrap();
    let fut = lp.create_future::<u32>();
    for i in 0..5 {
        let o = order.clone();
        fut.add_done_callback(move |f| {
            o.borrow_mut()
                .push(format!("cb{i}={}", f.result().unwrap()))
        });
    }
    fut.set_result(3).unwrap();
    let o = order.clone();
    lp.call_soon(move || o.borrow_mut().push("after".into()))
        .unwrap();
    one_iteration(&lp);
    assert_eq!(
        *order.borrow(),
        ["before", "cb0=3", "cb1=3", "cb2=3", "cb3=3", "cb4=3", "after"]
    );
    lp.close().unwrap();
}

#[test]
fn a_callback_added_after_completion_is_scheduled_at_once() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    fut.set_result(8).unwrap();
    let ran = Rc::new(Cell::new(0));
    let r = ran.clone();
    fut.add_done_callback(move |f| r.set(f.result().unwrap()));
    assert_eq!(ran.get(), 0, "run synchronously by add_done_callback");
    assert_eq!(lp.ready_len(), 1, "scheduled at once");
    one_iteration(&lp);
    assert_eq!(ran.get(), 8);
    lp.close().unwrap();
}

#[test]
fn remove_done_callback_returns_one_then_zero_and_the_callback_never_runs() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let order = log::<u32>();
    let drops = counter();
    let ids: Vec<_> = (0..3)
        .map(|i| {
            let o = order.clone();
            let guard = DropCount(drops.clone());
            fut.add_done_callback(move |_| {
                let _g = &guard;
                o.borrow_mut().push(i)
            })
        })
        .collect();
    assert_eq!(fut.remove_done_callback(ids[1]), 1);
    assert_eq!(drops.get(), 1, "the removed closure is released at once");
    assert_eq!(fut.remove_done_callback(ids[1]), 0);
    fut.set_result(0).unwrap();
    one_iteration(&lp);
    assert_eq!(*order.borrow(), [0, 2]);
    assert_eq!(drops.get(), 3);
    lp.close().unwrap();
}

#[test]
fn remove_done_callback_after_completion_removes_nothing() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let ran = counter();
    let r = ran.clone();
    let id = fut.add_done_callback(move |_| bump(&r));
    fut.set_result(0).unwrap();
    // Already scheduled: too late to remove (asyncio clears its list too).
    assert_eq!(fut.remove_done_callback(id), 0);
    one_iteration(&lp);
    assert_eq!(ran.get(), 1);
    lp.close().unwrap();
}

#[test]
fn a_done_callback_completing_another_future_runs_its_callbacks_next_iteration() {
    let lp = new_loop();
    let order = log::<String>();
    let first = lp.create_future::<u32>();
    let second = lp.create_future::<u32>();
    for name in ["a", "b"] {
        let o = order.clone();
        second.add_done_callback(move |f| {
            o.borrow_mut()
                .push(format!("second.{name}={}", f.result().unwrap()))
        });
    }
    let (o, s) = (order.clone(), second.clone());
    first.add_done_callback(move |f| {
        let v = f.result().unwrap();
        s.set_result(v * 10).unwrap();
        // set_result from inside a callback does not run the others inline.
        o.borrow_mut().push(format!("first={v}"));
        assert_kind(s.set_result(0), ErrorKind::InvalidState);
    });
    let o = order.clone();
    first.add_done_callback(move |_| o.borrow_mut().push("first.2".into()));
    first.set_result(4).unwrap();
    one_iteration(&lp);
    assert_eq!(*order.borrow(), ["first=4", "first.2"]);
    assert!(second.done());
    one_iteration(&lp);
    assert_eq!(
        *order.borrow(),
        ["first=4", "first.2", "second.a=40", "second.b=40"]
    );
    lp.close().unwrap();
}

#[test]
fn a_done_callback_may_cancel_another_future_and_read_its_own() {
    let lp = new_loop();
    let a = lp.create_future::<u32>();
    let b = lp.create_future::<u32>();
    let b2 = b.clone();
    a.add_done_callback(move |a| {
        assert!(a.done());
        assert!(b2.cancel(Some(&format!("a was {}", a.result().unwrap()))));
    });
    let msg = Rc::new(RefCell::new(String::new()));
    let m = msg.clone();
    b.add_done_callback(move |b| *m.borrow_mut() = b.result().unwrap_err().message().to_string());
    a.set_result(1).unwrap();
    one_iteration(&lp);
    assert!(b.cancelled());
    one_iteration(&lp);
    assert_eq!(*msg.borrow(), "a was 1");
    lp.close().unwrap();
}

#[test]
fn done_callbacks_of_a_future_completed_after_close_are_dropped_unrun() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let ran = counter();
    let drops = counter();
    let (r, g) = (ran.clone(), DropCount(drops.clone()));
    fut.add_done_callback(move |_| {
        let _g = &g;
        bump(&r)
    });
    lp.close().unwrap();
    fut.set_result(1).unwrap();
    assert_eq!(drops.get(), 1, "the callback was released");
    assert_eq!(ran.get(), 0);
    assert_eq!(fut.result().unwrap(), 1);
}

// ---------------------------------------------------------------------------
// Awaiting

#[test]
fn awaiting_a_future_from_a_task_gets_the_value() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let f = fut.clone();
    let task = lp
        .create_task(async move { f.await.map(|v| v + 1) })
        .unwrap();
    one_iteration(&lp);
    assert!(!task.done(), "the task waits for the future");
    let setter = fut.clone();
    lp.call_soon(move || setter.set_result(41).unwrap())
        .unwrap();
    assert_eq!(run(&lp, task).unwrap().unwrap(), 42);
    lp.close().unwrap();
}

#[test]
fn a_future_set_while_the_loop_is_not_running_wakes_its_task() {
    let lp = new_loop();
    let fut = lp.create_future::<&'static str>();
    // The task's future is the Future itself: the task awaits it.
    let task = lp.create_task(fut.clone()).unwrap();
    one_iteration(&lp);
    assert!(!task.done());
    fut.set_result("later").unwrap(); // between runs: no loop is running
    assert_eq!(run(&lp, task).unwrap().unwrap(), "later");
    lp.close().unwrap();
}

#[test]
fn run_until_complete_accepts_a_future() {
    let lp = new_loop();
    let fut = lp.create_future::<u32>();
    let setter = fut.clone();
    lp.call_soon(move || setter.set_result(6).unwrap()).unwrap();
    assert_eq!(run(&lp, fut.clone()).unwrap(), 6);
    assert!(fut.done());
    lp.close().unwrap();
}

#[test]
fn awaiting_twice_moves_the_value_out_once() {
    let lp = new_loop();
    let fut = lp.create_future::<String>();
    let (f1, f2) = (fut.clone(), fut.clone());
    let t1 = lp.create_task(f1).unwrap();
    let t2 = lp.create_task(f2).unwrap();
    one_iteration(&lp);
    fut.set_result("once".into()).unwrap();
    let (r1, r2) = run(&lp, futures_lite::future::zip(t1, t2));
    // Both tasks were woken; the first one polled got the value, the other
    // the "moved out" error.
    assert_eq!(r1.unwrap().unwrap(), "once");
    let e = assert_kind(r2.unwrap(), ErrorKind::InvalidState);
    assert!(e.message().contains("moved out"), "{e}");
    // The value is gone for result() too; the future stays done.
    assert_kind(fut.result(), ErrorKind::InvalidState);
    assert!(fut.done());
    lp.close().unwrap();
}

#[test]
fn result_does_not_consume_but_an_await_does() {
    let lp = new_loop();
    let fut = lp.create_future::<Vec<u8>>();
    fut.set_result(vec![1, 2]).unwrap();
    assert_eq!(fut.result().unwrap(), [1, 2]);
    assert_eq!(fut.result().unwrap(), [1, 2]);
    assert_eq!(run(&lp, fut.clone()).unwrap(), [1, 2]);
    assert_kind(fut.result(), ErrorKind::InvalidState);
    let e = assert_kind(run(&lp, fut.clone()), ErrorKind::InvalidState);
    assert!(e.message().contains("moved out"), "{e}");
    lp.close().unwrap();
}

#[test]
fn every_awaiter_of_a_failed_or_cancelled_future_gets_the_error() {
    let lp = new_loop();
    let failed = lp.create_future::<u32>();
    let cancelled = lp.create_future::<u32>();
    let tasks: Vec<_> = (0..3)
        .flat_map(|_| [failed.clone(), cancelled.clone()])
        .map(|f| lp.create_task(f).unwrap())
        .collect();
    one_iteration(&lp);
    failed.set_exception(MyError(5)).unwrap();
    cancelled.cancel(Some("nope"));
    // A task awaiting the cancelled future ends cancelled itself (its body
    // propagates the cancellation): awaiting it gives the cancellation.
    // Kept as (kind, message), not as the errors: a body that kept a
    // cancellation in its output would end cancelled too (the task module's
    // cancellation rule).
    let outs = run(&lp, async move {
        let mut outs = Vec::new();
        for t in tasks {
            let e = t.await.and_then(|r| r).unwrap_err();
            outs.push((e.kind(), e.message().to_string()));
        }
        outs
    });
    assert_eq!(outs.len(), 6);
    for (i, (kind, message)) in outs.into_iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(kind, ErrorKind::Exception);
            assert_eq!(message, "my error 5");
        } else {
            assert_eq!(kind, ErrorKind::Cancelled);
            assert_eq!(message, "nope");
        }
    }
    // The errors stay readable after the awaits.
    assert_eq!(failed.result().unwrap_err().message(), "my error 5");
    assert!(cancelled.cancelled());
    lp.close().unwrap();
}

#[test]
fn futures_work_with_futures_lite_or_and_zip() {
    use futures_lite::future;
    let lp = new_loop();
    let (a, b) = (lp.create_future::<u32>(), lp.create_future::<u32>());
    let setter = b.clone();
    lp.call_soon(move || setter.set_result(2).unwrap()).unwrap();
    // `or`: the first to complete wins; the other stays pending.
    let winner = run(&lp, future::or(a.clone(), b.clone())).unwrap();
    assert_eq!(winner, 2);
    assert!(!a.done());

    let (c, d) = (lp.create_future::<u32>(), lp.create_future::<&str>());
    let (sc, sd) = (c.clone(), d.clone());
    lp.call_soon(move || sd.set_result("d").unwrap()).unwrap();
    lp.call_soon(move || {
        let sc2 = sc.clone();
        // c completes one iteration later than d.
        sc.get_loop()
            .call_soon(move || sc2.set_result(3).unwrap())
            .unwrap();
    })
    .unwrap();
    let (rc, rd) = run(&lp, future::zip(c, d));
    assert_eq!((rc.unwrap(), rd.unwrap()), (3, "d"));

    // poll_once on a pending future: nothing, and it stays usable.
    let lp2 = lp.clone();
    let (got, later) = run(&lp, async move {
        let e = lp2.create_future::<u32>();
        let got = future::poll_once(e.clone()).await;
        e.set_result(1).unwrap();
        (got, future::poll_once(e).await)
    });
    assert!(got.is_none());
    assert_eq!(later.unwrap().unwrap(), 1);
    a.cancel(None);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// "Future exception was never retrieved"

#[test]
fn an_unretrieved_exception_is_reported_when_the_last_handle_drops() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let fut = lp.create_future::<u32>();
    let other_handle = fut.clone();
    fut.set_exception(MyError(3)).unwrap();
    drop(fut);
    assert!(
        reports(&seen, NEVER_RETRIEVED).is_empty(),
        "reported while a handle lives"
    );
    drop(other_handle);
    let r = reports(&seen, NEVER_RETRIEVED);
    assert_eq!(r.len(), 1, "{:?}", seen.borrow());
    assert_eq!(r[0].kind, Some(ErrorKind::Exception));
    assert_eq!(r[0].error.as_deref(), Some("my error 3"));
    lp.close().unwrap();
}

#[test]
fn an_unretrieved_loop_error_is_reported_with_its_kind() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let fut = lp.create_future::<u32>();
    fut.set_exception(LoopError::new(ErrorKind::Timeout, "late"))
        .unwrap();
    drop(fut);
    let r = reports(&seen, NEVER_RETRIEVED);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, Some(ErrorKind::Timeout));
    lp.close().unwrap();
}

#[test]
fn a_retrieved_exception_is_not_reported() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);

    let by_exception = lp.create_future::<u32>();
    by_exception.set_exception(MyError(1)).unwrap();
    assert!(by_exception.exception().unwrap().is_some());
    drop(by_exception);

    let by_result = lp.create_future::<u32>();
    by_result.set_exception(MyError(2)).unwrap();
    assert!(by_result.result().is_err());
    drop(by_result);

    let by_take = lp.create_future::<u32>();
    by_take.set_exception(MyError(3)).unwrap();
    assert!(by_take.take_result().is_err());
    drop(by_take);

    let by_await = lp.create_future::<u32>();
    by_await.set_exception(MyError(4)).unwrap();
    assert!(run(&lp, by_await).is_err());

    let by_callback = lp.create_future::<u32>();
    by_callback.add_done_callback(|f| assert!(f.exception().unwrap().is_some()));
    by_callback.set_exception(MyError(5)).unwrap();
    drop(by_callback);
    one_iteration(&lp); // the callback held the last handle

    assert!(
        reports(&seen, NEVER_RETRIEVED).is_empty(),
        "{:?}",
        seen.borrow()
    );
    lp.close().unwrap();
}

#[test]
fn success_cancel_and_pending_are_never_reported() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let ok = lp.create_future::<u32>();
    ok.set_result(1).unwrap();
    drop(ok);
    let cancelled = lp.create_future::<u32>();
    cancelled.cancel(Some("x"));
    drop(cancelled);
    drop(lp.create_future::<u32>());
    assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
    lp.close().unwrap();
}

#[test]
fn asking_for_the_result_before_the_exception_is_set_does_not_count_as_retrieving_it() {
    // asyncio sets `__log_traceback` in set_exception and clears it only in
    // a result()/exception() call on the *finished* future.
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let fut = lp.create_future::<u32>();
    assert_kind(fut.result(), ErrorKind::InvalidState);
    assert_kind(fut.exception(), ErrorKind::InvalidState);
    fut.set_exception(MyError(8)).unwrap();
    drop(fut);
    let r = reports(&seen, NEVER_RETRIEVED);
    assert_eq!(r.len(), 1, "{:?}", seen.borrow());
    assert_eq!(r[0].error.as_deref(), Some("my error 8"));
    lp.close().unwrap();
}

#[test]
fn an_unretrieved_exception_of_a_pending_callbacks_future_is_reported_after_they_run() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let fut = lp.create_future::<u32>();
    let ran = counter();
    let r = ran.clone();
    fut.add_done_callback(move |f| {
        assert!(f.done());
        bump(&r)
    });
    fut.set_exception(MyError(9)).unwrap();
    drop(fut);
    assert!(reports(&seen, NEVER_RETRIEVED).is_empty());
    one_iteration(&lp);
    assert_eq!(ran.get(), 1);
    assert_eq!(reports(&seen, NEVER_RETRIEVED).len(), 1);
    lp.close().unwrap();
}
