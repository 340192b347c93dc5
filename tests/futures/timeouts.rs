//! `wait_for` and the `timeout` scope (asyncio.wait_for / asyncio.timeout,
//! CPython's test_waitfor.py and test_timeouts.py where they apply): the
//! result in time, the inner work cancelled on expiry and waited for, a
//! result ready at the deadline winning, a cancellation handled inside
//! giving its value, an error raised while cancelling passed through,
//! cancelling the awaiting task cancelling the inner task.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::util::*;
use aioloop::{timeout, timeout_at, wait_for, ErrorKind, EventLoop, LoopError, VirtualClock};

const LONG: Duration = Duration::from_secs(3600);

/// A loop on a virtual clock: timers fire at once, in deadline order.
fn virtual_loop() -> EventLoop {
    EventLoop::builder()
        .virtual_clock(VirtualClock::new())
        .build()
        .unwrap()
}

#[test]
fn wait_for_gives_the_result_when_it_comes_in_time() {
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let out = run(&lp, async move {
        let fut = lp2.create_future::<&str>();
        let f = fut.clone();
        lp2.call_later(Duration::from_millis(10), move || {
            f.set_result("done").unwrap()
        })?;
        wait_for(fut, Duration::from_secs(1)).await
    });
    assert_eq!(out.unwrap(), "done");
    lp.close().unwrap();
}

#[test]
fn wait_for_times_out_and_cancels_the_inner_task() {
    // asyncio's test_wait_for.
    let lp = virtual_loop();
    let running = Rc::new(Cell::new(false));
    struct Finally(Rc<Cell<bool>>);
    impl Drop for Finally {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    let (lp2, r) = (lp.clone(), running.clone());
    let inner = lp
        .create_task(async move {
            r.set(true);
            let _finally = Finally(r.clone());
            lp2.sleep(LONG).await?;
            Ok::<_, LoopError>("done")
        })
        .unwrap();
    let i = inner.clone();
    let start = lp.time();
    let out = run(
        &lp,
        async move { wait_for(i, Duration::from_millis(100)).await },
    );
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert!(lp.time() - start < LONG);
    assert!(inner.done());
    assert!(inner.cancelled(), "the inner task was cancelled");
    assert!(!running.get());
    lp.close().unwrap();
}

#[test]
fn a_result_ready_at_the_deadline_beats_the_timeout() {
    let lp = virtual_loop();
    let fut = lp.create_future::<&str>();
    let f = fut.clone();
    // Due at the same instant as the timeout below, and scheduled first.
    lp.call_later(Duration::from_millis(100), move || {
        f.set_result("ok").unwrap()
    })
    .unwrap();
    let out = run(&lp, wait_for(fut.clone(), Duration::from_millis(100)));
    assert_eq!(out.unwrap(), "ok");
    assert!(!fut.cancelled());
    lp.close().unwrap();
}

#[test]
fn a_cancellation_handled_inside_gives_its_value_instead_of_a_timeout() {
    // asyncio's test_wait_for_cancel_suppressed (GH-86296) and
    // test_wait_for_cancellation_race_condition.
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let out = run(&lp, async move {
        let inner = async move {
            match lp2.sleep(LONG).await {
                Err(e) if e.kind() == ErrorKind::Cancelled => Ok::<_, LoopError>(42),
                _ => Ok(0),
            }
        };
        wait_for(inner, Duration::from_millis(100)).await
    });
    assert_eq!(out.unwrap(), 42);
    lp.close().unwrap();
}

#[test]
fn wait_for_waits_for_the_inner_task_to_finish_its_cancellation() {
    // asyncio's test_wait_for_waits_for_task_cancellation.
    let lp = virtual_loop();
    let task_done = Rc::new(Cell::new(false));
    let (lp2, d) = (lp.clone(), task_done.clone());
    let inner = lp
        .create_task(async move {
            let r = lp2.sleep(LONG).await;
            if r.is_err() {
                lp2.sleep(Duration::from_millis(1)).await.ok();
            }
            d.set(true);
            r
        })
        .unwrap();
    let out = run(&lp, wait_for(inner.clone(), Duration::from_millis(1)));
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert!(
        task_done.get(),
        "wait_for returned before the task finished"
    );
    assert!(inner.cancelled());
    lp.close().unwrap();
}

#[derive(Debug)]
enum TestError {
    Loop(#[allow(dead_code)] LoopError),
    Foo,
}

impl From<LoopError> for TestError {
    fn from(e: LoopError) -> Self {
        TestError::Loop(e)
    }
}

#[test]
fn an_error_raised_while_cancelling_is_passed_through() {
    // asyncio's test_wait_for_reraises_exception_during_cancellation.
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let out = run(&lp, async move {
        let inner = async move {
            lp2.sleep(Duration::from_millis(200)).await?;
            Err::<(), _>(TestError::Foo)
        };
        let inner = async move {
            match inner.await {
                Err(TestError::Loop(_)) => Err(TestError::Foo),
                other => other,
            }
        };
        wait_for(inner, Duration::from_millis(1)).await
    });
    assert!(matches!(out, Err(TestError::Foo)), "{out:?}");
    lp.close().unwrap();
}

#[test]
fn cancelling_the_task_awaiting_wait_for_cancels_the_inner_task() {
    // asyncio's test_cancel_wait_for (Python issue #23219).
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let blocking = lp
        .create_task(async move { lp2.create_future::<()>().await })
        .unwrap();
    let b = blocking.clone();
    let waiting = lp
        .create_task(async move { wait_for(b, Duration::from_secs(60)).await })
        .unwrap();
    let w = waiting.clone();
    lp.call_soon(move || {
        w.cancel(None);
    })
    .unwrap();
    let out = lp.run_until_complete(waiting.clone());
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Cancelled);
    assert!(waiting.cancelled());
    assert!(blocking.cancelled());
    lp.close().unwrap();
}

#[test]
fn a_timeout_scope_bounds_several_awaits() {
    let lp = virtual_loop();
    let steps = counter();
    let (lp2, s) = (lp.clone(), steps.clone());
    let start = lp.time();
    let out = run(&lp, async move {
        timeout(Duration::from_millis(100), async move {
            for _ in 0..10 {
                lp2.sleep(Duration::from_millis(30)).await?;
                bump(&s);
            }
            Ok::<_, LoopError>(())
        })
        .await
    });
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(steps.get(), 3);
    assert_eq!(lp.time() - start, Duration::from_millis(100));
    lp.close().unwrap();
}

#[test]
fn timeout_at_uses_a_loop_time_deadline() {
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let deadline = lp.time() + Duration::from_millis(50);
    let out = run(
        &lp,
        async move { timeout_at(deadline, lp2.sleep(LONG)).await },
    );
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(lp.time(), deadline);
    lp.close().unwrap();
}

#[test]
fn a_timeout_around_a_foreign_future_drops_it_and_times_out() {
    let lp = virtual_loop();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let out = run(&lp, async move {
        let foreign = async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, LoopError>(())
        };
        timeout(Duration::from_millis(10), foreign).await
    });
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

#[test]
fn wait_for_with_zero_timeout_on_a_done_future_gives_its_result() {
    // asyncio's test_wait_for_timeout_less_then_0_or_0_future_done.
    let lp = virtual_loop();
    let fut = lp.create_future::<&str>();
    fut.set_result("done").unwrap();
    let out = run(&lp, wait_for(fut, Duration::ZERO));
    assert_eq!(out.unwrap(), "done");
    lp.close().unwrap();
}

#[test]
fn an_outer_cancellation_wins_over_the_timeout() {
    let lp = virtual_loop();
    let lp2 = lp.clone();
    let task = lp
        .create_task(async move { timeout(Duration::from_millis(10), lp2.sleep(LONG)).await })
        .unwrap();
    one_iteration(&lp);
    task.cancel(Some("outer"));
    let e = lp.run_until_complete(task.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "outer");
    lp.close().unwrap();
}

#[test]
fn timeout_polled_outside_a_running_loop_is_an_error() {
    let out = futures_lite::future::block_on(timeout(
        Duration::from_millis(1),
        std::future::pending::<Result<(), LoopError>>(),
    ));
    let e = out.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert!(e.message().contains("no running event loop"), "{e}");
}
