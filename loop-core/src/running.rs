//! The loop running on this thread.
//!
//! While `run_forever` or `run_until_complete` runs, the loop is recorded in a
//! thread-local. It serves three purposes: [`running_loop`] (asyncio's
//! `_get_running_loop`, on which the policy crate builds
//! `get_running_loop`), refusing a second loop on the same thread, and the
//! fast path of task wake-ups, which push straight onto the running loop's
//! ready queue instead of going through the thread-safe queue.

use std::cell::RefCell;

use crate::event_loop::EventLoop;
use crate::ready_queue::Ready;
use crate::tasks::Runnable;

thread_local! {
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
}

/// The loop running on the current thread, if any.
///
/// Set for the duration of [`EventLoop::run_forever`] and
/// [`EventLoop::run_until_complete`], so it is `Some` inside every callback
/// and task the loop runs.
///
/// ```
/// use loop_core::{running_loop, EventLoop};
/// assert!(running_loop().is_none());
/// let lp = EventLoop::new().unwrap();
/// let inside = lp.run_until_complete(async { running_loop() }).unwrap();
/// assert!(inside.unwrap().ptr_eq(&lp));
/// ```
#[doc(alias = "_get_running_loop")]
#[doc(alias = "get_running_loop")]
pub fn running_loop() -> Option<EventLoop> {
    RUNNING
        .try_with(|r| r.try_borrow().ok().and_then(|r| r.clone()))
        .ok()
        .flatten()
}

pub(crate) fn set_running(lp: Option<EventLoop>) {
    let old = RUNNING.try_with(|r| r.replace(lp)).ok().flatten();
    drop(old);
}

/// Queues `runnable` on the running loop if it is the task's loop;
/// otherwise hands it back.
#[inline]
pub(crate) fn schedule_local(runnable: Runnable) -> Result<(), Runnable> {
    let mut slot = Some(runnable);
    let _ = RUNNING.try_with(|r| {
        let Ok(r) = r.try_borrow() else { return };
        let Some(lp) = r.as_ref() else { return };
        let ours = |run: &Runnable| lp.inner.shared.id == run.metadata().loop_id;
        if !slot.as_ref().is_some_and(ours) {
            return;
        }
        let Ok(mut ready) = lp.inner.ready.try_borrow_mut() else {
            return;
        };
        if let Some(runnable) = slot.take() {
            ready.push(Ready::Task(runnable));
        }
    });
    match slot {
        None => Ok(()),
        Some(r) => Err(r),
    }
}
