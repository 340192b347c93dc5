//! `gather`, `wait` and `shield` (asyncio.gather / asyncio.wait /
//! asyncio.shield, CPython's test_tasks.py where it applies): results in
//! order, the first error, `return_exceptions`, cancelling the gather
//! cancelling its children, the three `ReturnWhen`s and the timeout of
//! `wait`, and a shielded task surviving the cancellation of its awaiter.

use std::time::Duration;

use crate::util::*;
use aioloop::{
    gather, shield, wait, wait_for, ErrorKind, EventLoop, Future, LoopError, ReturnWhen, Shield,
    Task, VirtualClock,
};

/// A boxed child, for lists of different futures.
type Child = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, LoopError>>>>;

fn virtual_loop() -> EventLoop {
    EventLoop::builder()
        .virtual_clock(VirtualClock::new())
        .build()
        .unwrap()
}

/// A child that sleeps `ms` then gives `v`.
fn after(
    lp: &EventLoop,
    ms: u64,
    v: u32,
) -> impl std::future::Future<Output = Result<u32, LoopError>> {
    let lp = lp.clone();
    async move {
        lp.sleep(Duration::from_millis(ms)).await?;
        Ok(v)
    }
}

// ---------------------------------------------------------------------------
// gather

#[test]
fn gather_gives_the_results_in_order_whatever_order_they_finish_in() {
    let lp = virtual_loop();
    let children = vec![after(&lp, 30, 1), after(&lp, 10, 2), after(&lp, 20, 3)];
    let out = run(&lp, gather(children));
    assert_eq!(out.unwrap(), [1, 2, 3]);
    lp.close().unwrap();
}

#[test]
fn gather_runs_its_children_as_tasks_before_it_is_awaited() {
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let started = counter();
    let s = started.clone();
    let out = run(&lp, async move {
        let children = (0..3).map(|i| {
            let s = s.clone();
            async move {
                bump(&s);
                Ok::<_, LoopError>(i)
            }
        });
        let g = gather(children);
        lp2.sleep(Duration::ZERO).await?;
        assert_eq!(s.get(), 3, "the children did not run meanwhile");
        g.await
    });
    assert_eq!(out.unwrap(), [0, 1, 2]);
    assert_eq!(started.get(), 3);
    lp.close().unwrap();
}

#[test]
fn gather_fails_with_the_first_error_and_the_other_children_keep_running() {
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let slow_done = counter();
    let sd = slow_done.clone();
    let out = run(&lp, async move {
        let lp3 = lp2.clone();
        let children: Vec<Child> = vec![
            Box::pin(async move {
                lp3.sleep(Duration::from_millis(50)).await?;
                bump(&sd);
                Ok(1)
            }),
            Box::pin(async { Err(LoopError::new(ErrorKind::InvalidArgument, "bad child")) }),
        ];
        let r = gather(children).await;
        // The slow child was not cancelled: it finishes.
        lp2.sleep(Duration::from_millis(100)).await?;
        r
    });
    assert_eq!(out.unwrap_err().message(), "bad child");
    assert_eq!(slow_done.get(), 1);
    lp.close().unwrap();
}

#[test]
fn gather_return_exceptions_gives_every_outcome_in_order() {
    let lp = virtual_loop();
    let fut = lp.create_future::<u32>();
    let f = fut.clone();
    lp.call_soon(move || {
        f.cancel(Some("child cancelled"));
    })
    .unwrap();
    let children: Vec<Child> = vec![
        Box::pin(after(&lp, 5, 1)),
        Box::pin(async { Err(LoopError::new(ErrorKind::InvalidArgument, "bad")) }),
        Box::pin(fut),
    ];
    let gathered = gather(children).return_exceptions();
    let task = lp.create_task(gathered).unwrap();
    let out = run(&lp, task.clone()).unwrap().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(*out[0].as_ref().unwrap(), 1);
    assert_eq!(out[1].as_ref().unwrap_err().message(), "bad");
    assert_eq!(out[2].as_ref().unwrap_err().kind(), ErrorKind::Cancelled);
    assert!(
        !task.cancelled(),
        "a cancelled child's error kept as a value"
    );
    lp.close().unwrap();
}

#[test]
fn cancelling_the_task_awaiting_gather_cancels_the_children() {
    let lp = virtual_loop();
    let (a, b) = (lp.create_future::<u32>(), lp.create_future::<u32>());
    let (a2, b2) = (a.clone(), b.clone());
    let task = lp
        .create_task(async move { gather(vec![a2, b2]).await })
        .unwrap();
    one_iteration(&lp);
    one_iteration(&lp);
    task.cancel(Some("stop all"));
    let e = lp.run_until_complete(task.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "stop all");
    assert!(task.cancelled());
    assert!(
        a.cancelled() && b.cancelled(),
        "the children were not cancelled"
    );
    lp.close().unwrap();
}

#[test]
fn a_child_cancelled_from_outside_ends_the_gather_cancelled() {
    let lp = virtual_loop();
    let fut = lp.create_future::<u32>();
    let f = fut.clone();
    let task = lp
        .create_task(async move { gather(vec![f, lp_future_set_later()]).await })
        .unwrap();
    fn lp_future_set_later() -> Future<u32> {
        let lp = aioloop::running_loop().unwrap();
        lp.create_future()
    }
    one_iteration(&lp);
    fut.cancel(Some("from outside"));
    let e = lp.run_until_complete(task.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "from outside");
    assert!(task.cancelled());
    lp.close().unwrap();
}

#[test]
fn gather_of_nothing_is_an_empty_vec() {
    let lp = virtual_loop();
    let none: Vec<Future<u32>> = Vec::new();
    assert!(run(&lp, gather(none)).unwrap().is_empty());
    lp.close().unwrap();
}

#[test]
fn gather_made_outside_a_running_loop_starts_its_children_when_awaited() {
    let lp = virtual_loop();
    let g = gather(vec![after(&lp, 2, 1), after(&lp, 1, 2)]);
    assert_eq!(run(&lp, g).unwrap(), [1, 2]);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// wait

fn sleeper(lp: &EventLoop, ms: u64, v: u32) -> Task<Result<u32, LoopError>> {
    lp.create_task(after(lp, ms, v)).unwrap()
}

#[test]
fn wait_all_completed_waits_for_every_task() {
    // asyncio's test_wait.
    let lp = virtual_loop();
    let (a, b) = (sleeper(&lp, 10, 1), sleeper(&lp, 15, 2));
    let start = lp.time();
    let (done, pending) = run(&lp, wait([b.clone(), a.clone()], ReturnWhen::AllCompleted)).unwrap();
    assert_eq!(done.len(), 2);
    assert!(pending.is_empty());
    assert!(done[0].ptr_eq(&b) && done[1].ptr_eq(&a), "the order given");
    assert_eq!(lp.time() - start, Duration::from_millis(15));
    lp.close().unwrap();
}

#[test]
fn wait_first_completed_returns_as_soon_as_one_is_done() {
    let lp = virtual_loop();
    let (a, b) = (sleeper(&lp, 10, 1), sleeper(&lp, 3_600_000, 2));
    let (done, pending) = run(
        &lp,
        wait([a.clone(), b.clone()], ReturnWhen::FirstCompleted),
    )
    .unwrap();
    assert_eq!(done.len(), 1);
    assert!(done[0].ptr_eq(&a));
    assert_eq!(pending.len(), 1);
    assert!(!b.done() && !b.cancelled(), "wait cancels nothing");
    lp.close().unwrap();
}

#[test]
fn wait_first_exception_returns_at_the_first_failure_not_at_a_cancellation() {
    let lp = virtual_loop();
    let cancelled = sleeper(&lp, 3_600_000, 0);
    let lp2 = lp.clone();
    let failing = lp
        .create_task(async move {
            lp2.sleep(Duration::from_millis(20)).await?;
            Err::<u32, _>(LoopError::new(ErrorKind::InvalidArgument, "boom"))
        })
        .unwrap();
    let slow = sleeper(&lp, 3_600_000, 2);
    let c = cancelled.clone();
    lp.call_later(Duration::from_millis(10), move || {
        c.cancel(None);
    })
    .unwrap();
    let (done, pending) = run(
        &lp,
        wait(
            [cancelled.clone(), failing.clone(), slow.clone()],
            ReturnWhen::FirstException,
        ),
    )
    .unwrap();
    assert_eq!(done.len(), 2, "the cancellation did not end the wait");
    assert!(done[1].ptr_eq(&failing));
    assert_eq!(pending.len(), 1);
    assert!(pending[0].ptr_eq(&slow));
    lp.close().unwrap();
}

#[test]
fn wait_with_a_timeout_gives_back_what_is_done_without_an_error() {
    let lp = virtual_loop();
    let (a, b) = (sleeper(&lp, 10, 1), sleeper(&lp, 3_600_000, 2));
    let (done, pending) = run(
        &lp,
        wait([a, b], ReturnWhen::AllCompleted).timeout(Duration::from_millis(50)),
    )
    .unwrap();
    assert_eq!((done.len(), pending.len()), (1, 1));
    lp.close().unwrap();
}

#[test]
fn wait_on_nothing_is_an_invalid_argument() {
    let lp = virtual_loop();
    let none: Vec<Future<u32>> = Vec::new();
    let e = run(&lp, wait(none, ReturnWhen::AllCompleted)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    lp.close().unwrap();
}

#[test]
fn cancelling_the_task_awaiting_wait_leaves_the_tasks_running() {
    let lp = virtual_loop();
    let child = sleeper(&lp, 100, 7);
    let c = child.clone();
    let waiter = lp
        .create_task(async move {
            wait([c], ReturnWhen::AllCompleted).await?;
            Ok::<_, LoopError>(())
        })
        .unwrap();
    one_iteration(&lp);
    waiter.cancel(None);
    assert_eq!(
        lp.run_until_complete(waiter.clone()).unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert!(!child.done());
    assert_eq!(run(&lp, child).unwrap().unwrap(), 7);
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// shield

#[test]
fn shield_gives_the_shielded_output() {
    let lp = virtual_loop();
    let out = run(&lp, shield(after(&lp, 5, 9)));
    assert_eq!(out.unwrap().unwrap(), 9);
    lp.close().unwrap();
}

#[test]
fn a_shielded_task_goes_on_when_the_awaiting_task_is_cancelled() {
    // asyncio's test_shield_effect.
    let lp = virtual_loop();
    let inner = sleeper(&lp, 100, 5);
    let i = inner.clone();
    let outer = lp
        .create_task(async move { Shield::from(i).await })
        .unwrap();
    one_iteration(&lp);
    outer.cancel(Some("not you"));
    let e = lp.run_until_complete(outer.clone()).unwrap_err();
    assert_eq!(e.message(), "not you");
    assert!(outer.cancelled());
    assert!(!inner.done() && !inner.cancelled());
    assert_eq!(run(&lp, inner).unwrap().unwrap(), 5);
    lp.close().unwrap();
}

#[test]
fn wait_for_of_a_shielded_task_times_out_and_leaves_the_task_running() {
    // asyncio's WaitForShieldTests.test_shielded_timeout.
    let lp = virtual_loop();
    let inner = sleeper(&lp, 100, 3);
    let i = inner.clone();
    let out = run(&lp, async move {
        wait_for(Shield::from(i), Duration::from_millis(10)).await
    });
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert!(!inner.done() && !inner.cancelled());
    assert_eq!(run(&lp, inner).unwrap().unwrap(), 3);
    lp.close().unwrap();
}
