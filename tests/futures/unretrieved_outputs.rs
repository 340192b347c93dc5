//! "Task exception was never retrieved" for a task whose *output* is an
//! error (`Result<(), E>` returning `Err`) that nobody awaited or looked at:
//! asyncio logs it when the task object is collected; aioloop when the task
//! has ended and its last handle is gone. Outputs that are not an error,
//! errors that someone retrieved, and cancellations are not reported.

use std::error::Error;
use std::io;
use std::time::Duration;

use crate::util::*;
use aioloop::{ErrorKind, EventLoop, LoopError};

const NEVER_RETRIEVED: &str = "Task exception was never retrieved";

/// Lets every task spawned so far run to its end (a few iterations).
fn settle(lp: &EventLoop) {
    let dog = Watchdog::start(lp);
    let l = lp.clone();
    lp.run_until_complete(async move {
        for _ in 0..4 {
            l.sleep(Duration::ZERO).await.unwrap();
        }
    })
    .expect("run_until_complete");
    dog.disarm();
}

#[test]
fn an_io_error_output_nobody_awaited_is_reported_with_its_text() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    drop(
        lp.create_task(async { Err::<(), io::Error>(io::Error::other("disk on fire")) })
            .unwrap(),
    );
    settle(&lp);
    let r = reports(&seen, NEVER_RETRIEVED);
    assert_eq!(r.len(), 1, "{:?}", seen.borrow());
    assert_eq!(r[0].kind, Some(ErrorKind::Io));
    assert!(
        r[0].error.as_deref().unwrap_or("").contains("disk on fire"),
        "{:?}",
        r[0]
    );
    lp.close().unwrap();
}

#[test]
fn every_documented_error_type_is_reported() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    drop(
        lp.create_task(async {
            Err::<(), LoopError>(LoopError::new(ErrorKind::InvalidState, "a"))
        })
        .unwrap(),
    );
    drop(
        lp.create_task(async { Err::<(), Box<dyn Error>>("b".into()) })
            .unwrap(),
    );
    drop(
        lp.create_task(async { Err::<(), Box<dyn Error + Send + Sync>>("c".into()) })
            .unwrap(),
    );
    drop(
        lp.create_task(async { Err::<(), String>("d".to_string()) })
            .unwrap(),
    );
    drop(
        lp.create_task(async { Err::<(), &'static str>("e") })
            .unwrap(),
    );
    settle(&lp);
    let mut texts: Vec<String> = reports(&seen, NEVER_RETRIEVED)
        .into_iter()
        .map(|s| s.error.unwrap_or_default())
        .collect();
    texts.sort();
    assert_eq!(texts.len(), 5, "{texts:?}");
    for (t, want) in texts.iter().zip(["a", "b", "c", "d", "e"]) {
        assert!(t.ends_with(want), "{t:?} should end with {want:?}");
    }
    lp.close().unwrap();
}

#[test]
fn the_report_waits_for_the_last_handle() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let task = lp
        .create_task(async { Err::<(), String>("late".into()) })
        .unwrap();
    settle(&lp);
    assert!(task.done());
    assert!(
        reports(&seen, NEVER_RETRIEVED).is_empty(),
        "reported while a handle lives"
    );
    drop(task);
    assert_eq!(reports(&seen, NEVER_RETRIEVED).len(), 1);
    lp.close().unwrap();
}

#[test]
fn an_error_output_someone_retrieved_is_not_reported() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    // Awaited by another task.
    let inner = lp
        .create_task(async { Err::<(), String>("awaited".into()) })
        .unwrap();
    let dog = Watchdog::start(&lp);
    let out = lp.run_until_complete(inner).unwrap();
    dog.disarm();
    assert!(matches!(out, Ok(Err(ref s)) if s == "awaited"));
    // Looked at with result().
    let looked = lp
        .create_task(async { Err::<(), String>("looked at".into()) })
        .unwrap();
    settle(&lp);
    assert!(matches!(looked.result(), Ok(Err(_))));
    drop(looked);
    assert!(
        reports(&seen, NEVER_RETRIEVED).is_empty(),
        "{:?}",
        seen.borrow()
    );
    lp.close().unwrap();
}

#[test]
fn ok_outputs_other_types_and_cancellations_are_not_reported() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    drop(lp.create_task(async { Ok::<(), io::Error>(()) }).unwrap());
    drop(lp.create_task(async { 7u32 }).unwrap());
    drop(
        lp.create_task(async { Err::<(), LoopError>(LoopError::cancelled("stop")) })
            .unwrap(),
    );
    settle(&lp);
    assert!(
        reports(&seen, NEVER_RETRIEVED).is_empty(),
        "{:?}",
        seen.borrow()
    );
    lp.close().unwrap();
}
