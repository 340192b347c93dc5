//! `aioloop::run` (asyncio.run): a new loop per call, the main future as a
//! task, its output without `??`, and the shutdown: leftover tasks
//! cancelled and run to their end, the default executor waited for, the
//! loop closed and dropped.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;
use aioloop::{current_task, run, run_with, ErrorKind, EventLoop, LoopError, WeakEventLoop};

#[test]
fn run_returns_the_main_futures_output() {
    let out = run(|lp| async move {
        let task = lp.create_task(async { 20 + 1 })?;
        let blocking = lp.run_in_executor(|| 21)?;
        lp.sleep(Duration::from_millis(1)).await?;
        Ok::<_, LoopError>(task.await? + blocking.await?)
    });
    assert_eq!(out.unwrap(), 42);
}

#[test]
fn run_converts_loop_errors_into_the_main_error_type() {
    // An io::Error main: `?` on LoopErrors inside, no `??` outside.
    let out: io::Result<u8> = run(|lp| async move {
        lp.sleep(Duration::ZERO).await?;
        Ok(7)
    });
    assert_eq!(out.unwrap(), 7);
}

#[test]
fn run_cancels_leftover_tasks_and_lets_them_finish_before_it_returns() {
    let steps: Log<&'static str> = log();
    let s = steps.clone();
    type Leftover = Option<aioloop::Task<Result<(), LoopError>>>;
    let leftover: Rc<RefCell<Leftover>> = Rc::default();
    let l = leftover.clone();
    run(move |lp| async move {
        let lp2 = lp.clone();
        let t = lp.create_task(async move {
            match lp2.sleep(Duration::from_secs(3600)).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    s.borrow_mut().push("cancelled");
                    lp2.sleep(Duration::from_millis(1)).await?;
                    s.borrow_mut().push("cleaned up");
                    Err(e)
                }
            }
        })?;
        *l.borrow_mut() = Some(t);
        lp.sleep(Duration::ZERO).await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert_eq!(*steps.borrow(), ["cancelled", "cleaned up"]);
    let t = leftover.borrow_mut().take().unwrap();
    assert!(t.cancelled());
}

#[test]
fn run_closes_and_drops_its_loop() {
    let weak: Rc<RefCell<Option<WeakEventLoop>>> = Rc::default();
    let w = weak.clone();
    run(move |lp| async move {
        *w.borrow_mut() = Some(lp.downgrade());
        // Work left behind of every kind.
        let lp2 = lp.clone();
        lp.create_task(async move { lp2.sleep(Duration::from_secs(3600)).await })?;
        lp.call_later(Duration::from_secs(3600), || {})?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    let weak = weak.borrow_mut().take().unwrap();
    assert!(weak.upgrade().is_none(), "the loop outlived run()");
}

#[test]
fn run_waits_for_the_default_executors_jobs() {
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    run(move |lp| async move {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        // Started and not awaited: run's shutdown waits for it.
        let _job = lp.run_in_executor(move || {
            started_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            f.store(true, Ordering::SeqCst);
        })?;
        let _ = started_rx.recv_timeout(LIMIT);
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn run_inside_a_running_loop_is_refused() {
    let inner = run(|_lp| async move {
        let nested = run(|_lp| async { Ok::<_, LoopError>(()) });
        Ok::<_, LoopError>(nested.unwrap_err().kind())
    })
    .unwrap();
    assert_eq!(inner, ErrorKind::AlreadyRunning);
}

#[test]
fn a_cancelled_main_task_makes_run_give_the_cancellation() {
    let out = run(|lp| async move {
        current_task().unwrap().cancel(Some("stop main"));
        lp.sleep(Duration::from_secs(3600)).await?;
        Ok::<_, LoopError>(())
    });
    let e = out.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(e.message(), "stop main");
}

#[test]
fn run_reports_a_leftover_task_that_fails_while_cancelled() {
    let seen: Rc<RefCell<Option<Log<Seen>>>> = Rc::default();
    let s = seen.clone();
    run_with(EventLoop::builder(), move |lp| async move {
        *s.borrow_mut() = Some(record_exceptions(&lp));
        let lp2 = lp.clone();
        lp.create_task_named(
            async move {
                if lp2.sleep(Duration::from_secs(3600)).await.is_err() && std::hint::black_box(true)
                {
                    panic!("cleanup failed");
                }
            },
            "fragile",
        )?;
        lp.sleep(Duration::ZERO).await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    let seen = seen.borrow_mut().take().unwrap();
    let reports: Vec<Seen> = seen
        .borrow()
        .iter()
        .filter(|s| s.message == "unhandled exception during run() shutdown")
        .cloned()
        .collect();
    assert_eq!(reports.len(), 1, "{:?}", seen.borrow());
    assert_eq!(reports[0].panic.as_deref(), Some("cleanup failed"));
    assert!(reports[0]
        .extra
        .iter()
        .any(|(k, v)| k == "task" && v == "fragile"));
}

#[test]
fn run_with_uses_the_builders_loop() {
    let clock = aioloop::VirtualClock::new();
    let (debug, waited) = run_with(
        EventLoop::builder().debug(true).virtual_clock(clock),
        |lp| async move {
            let start = lp.time();
            lp.sleep(Duration::from_secs(3600)).await?;
            Ok::<_, LoopError>((lp.get_debug(), lp.time() - start))
        },
    )
    .unwrap();
    assert!(debug);
    assert!(waited >= Duration::from_secs(3600));
}
