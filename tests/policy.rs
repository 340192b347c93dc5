//! Finding the loop: get_running_loop inside callbacks and tasks,
//! get_event_loop's running-loop-then-policy order, set_event_loop and
//! new_event_loop through the process-wide policy, custom policies, and one
//! current loop per thread with loops running in two threads at once.
//!
//! The policy is process-wide, so every test here takes `serial()` first:
//! tests of this binary never see each other's policy or current loop, and
//! each starts and ends with a fresh default policy.
#![cfg(feature = "policy")]

mod util;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard, PoisonError};

use aioloop::{
    get_event_loop, get_event_loop_policy, get_running_loop, new_event_loop, set_event_loop,
    set_event_loop_policy, DefaultEventLoopPolicy, ErrorKind, EventLoop, EventLoopPolicy,
    LoopError, PerThreadLoop,
};
use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the binary-wide lock; resets the policy (and so every current
/// loop) when taken and when released, even if the test panicked.
struct Serial {
    _lock: MutexGuard<'static, ()>,
}

fn serial() -> Serial {
    let lock = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    set_event_loop_policy(None);
    Serial { _lock: lock }
}

impl Drop for Serial {
    fn drop(&mut self) {
        set_event_loop_policy(None);
    }
}

fn assert_no_running_loop(err: LoopError) {
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert_eq!(err.to_string(), "no running event loop");
}

fn assert_no_current_loop(err: LoopError) {
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(
        err.to_string()
            .starts_with("There is no current event loop in thread "),
        "unexpected message: {err}"
    );
}

// ---------------------------------------------------------------------------
// get_running_loop

#[test]
fn get_running_loop_errs_outside_a_running_loop() {
    let _s = serial();
    assert_no_running_loop(get_running_loop().unwrap_err());
    // A loop that exists, is current, and has run is still not running.
    let lp = new_loop();
    set_event_loop(Some(lp.clone()));
    assert_no_running_loop(get_running_loop().unwrap_err());
    lp.run_until_complete(async {}).unwrap();
    assert_no_running_loop(get_running_loop().unwrap_err());
    lp.close().unwrap();
}

#[test]
fn get_running_loop_inside_a_callback_is_the_loop() {
    let _s = serial();
    let lp = new_loop();
    let seen: Log<bool> = log();
    let (s, stopper) = (seen.clone(), lp.clone());
    lp.call_soon(move || {
        let here = get_running_loop().expect("inside a callback");
        s.borrow_mut().push(here.ptr_eq(&stopper));
        stopper.stop();
    })
    .unwrap();
    run_bounded(&lp);
    assert_eq!(*seen.borrow(), [true]);
    assert_no_running_loop(get_running_loop().unwrap_err());
    lp.close().unwrap();
}

#[test]
fn get_running_loop_inside_a_task_and_after_an_await() {
    let _s = serial();
    let lp = new_loop();
    let expected = lp.clone();
    let task = lp
        .create_task(async move {
            let before = get_running_loop()?;
            expected.sleep(std::time::Duration::from_millis(1)).await?;
            let after = get_running_loop()?;
            Ok::<_, LoopError>(before.ptr_eq(&expected) && after.ptr_eq(&expected))
        })
        .unwrap();
    let dog = Watchdog::start(&lp);
    assert!(lp.run_until_complete(task).unwrap().unwrap().unwrap());
    dog.disarm();
    // And in the future given to run_until_complete itself.
    let inside = lp.run_until_complete(async { get_running_loop() }).unwrap();
    assert!(inside.unwrap().ptr_eq(&lp));
    lp.close().unwrap();
}

#[test]
fn get_running_loop_on_an_executor_thread_errs() {
    let _s = serial();
    let lp = new_loop();
    let l = lp.clone();
    let from_job = lp
        .run_until_complete(
            async move { l.run_in_executor(|| get_running_loop().map(|_| ()))?.await },
        )
        .unwrap()
        .unwrap();
    assert_no_running_loop(from_job.unwrap_err());
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// get_event_loop / set_event_loop / new_event_loop

#[test]
fn get_event_loop_errs_when_nothing_is_set_and_nothing_runs() {
    let _s = serial();
    // No implicit loop, not even on the test's thread (Python 3.14).
    assert_no_current_loop(get_event_loop().unwrap_err());
    assert_no_current_loop(get_event_loop().unwrap_err());
    assert_no_current_loop(get_event_loop_policy().get_event_loop().unwrap_err());
}

#[test]
fn get_event_loop_returns_the_set_loop_and_set_none_clears_it() {
    let _s = serial();
    let a = new_event_loop().unwrap();
    set_event_loop(Some(a.clone()));
    assert!(get_event_loop().unwrap().ptr_eq(&a));
    assert!(get_event_loop_policy().get_event_loop().unwrap().ptr_eq(&a));

    let b = new_event_loop().unwrap();
    set_event_loop(Some(b.clone()));
    assert!(get_event_loop().unwrap().ptr_eq(&b));
    assert!(!a.is_closed(), "replacing the current loop closed it");

    set_event_loop(None);
    assert_no_current_loop(get_event_loop().unwrap_err());
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn get_event_loop_prefers_the_running_loop() {
    let _s = serial();
    let current = new_event_loop().unwrap();
    set_event_loop(Some(current.clone()));
    let running = new_event_loop().unwrap();
    let seen: Log<(bool, bool)> = log();
    let (s, l) = (seen.clone(), running.clone());
    running
        .call_soon(move || {
            let got = get_event_loop().unwrap();
            s.borrow_mut().push((got.ptr_eq(&l), got.ptr_eq(&current)));
            l.stop();
        })
        .unwrap();
    run_bounded(&running);
    assert_eq!(*seen.borrow(), [(true, false)]);
    // Stopped: the policy's current loop is back.
    let back = get_event_loop().unwrap();
    assert!(!back.ptr_eq(&running));

    // Running with nothing set at all works the same, inside a task too.
    set_event_loop(None);
    let l = running.clone();
    let task = running
        .create_task(async move { get_event_loop().map(|got| got.ptr_eq(&l)) })
        .unwrap();
    assert!(running.run_until_complete(task).unwrap().unwrap().unwrap());
    assert_no_current_loop(get_event_loop().unwrap_err());
    running.close().unwrap();
    back.close().unwrap();
}

#[test]
fn set_event_loop_from_inside_a_callback() {
    let _s = serial();
    let lp = new_loop();
    let l = lp.clone();
    lp.call_soon(move || {
        set_event_loop(Some(l.clone()));
        l.stop();
    })
    .unwrap();
    run_bounded(&lp);
    assert!(get_event_loop().unwrap().ptr_eq(&lp));
    set_event_loop(None);
    lp.close().unwrap();
}

#[test]
fn a_closed_current_loop_is_still_returned() {
    // As asyncio: the policy does not look at the loop's state.
    let _s = serial();
    let lp = new_event_loop().unwrap();
    set_event_loop(Some(lp.clone()));
    lp.close().unwrap();
    let got = get_event_loop().unwrap();
    assert!(got.ptr_eq(&lp) && got.is_closed());
}

#[test]
fn new_event_loop_gives_distinct_loops_and_does_not_set_them() {
    let _s = serial();
    let loops: Vec<EventLoop> = (0..4).map(|_| new_event_loop().unwrap()).collect();
    for (i, a) in loops.iter().enumerate() {
        assert!(!a.is_running() && !a.is_closed());
        for b in &loops[i + 1..] {
            assert!(!a.ptr_eq(b));
        }
    }
    assert_no_current_loop(get_event_loop().unwrap_err());
    // Each one runs on its own.
    for lp in &loops {
        assert_eq!(lp.run_until_complete(async { 7 }).unwrap(), 7);
        lp.close().unwrap();
    }
}

#[test]
fn a_policy_given_the_owning_handle_keeps_the_loop_open_until_it_lets_go() {
    let _s = serial();
    let lp = new_event_loop().unwrap();
    let clone = lp.clone();
    set_event_loop(Some(lp)); // the owner moves into the policy
    let current = get_event_loop().unwrap();
    assert!(current.ptr_eq(&clone));
    assert!(!clone.is_closed(), "the policy holds the owner");
    assert_eq!(current.run_until_complete(async { 7 }).unwrap(), 7);
    drop(current);
    set_event_loop(None); // the policy drops the owner: the loop closes
    assert!(clone.is_closed());

    // Given a clone, the policy leaves ownership with the caller.
    let owner = new_event_loop().unwrap();
    set_event_loop(Some(owner.clone()));
    set_event_loop(None);
    assert!(!owner.is_closed());
    owner.close().unwrap();
}

// ---------------------------------------------------------------------------
// Custom policies

/// A policy that counts its calls and delegates to a default policy.
#[derive(Debug, Default)]
struct Counting {
    inner: DefaultEventLoopPolicy,
    gets: AtomicUsize,
    sets: AtomicUsize,
    news: AtomicUsize,
}

impl EventLoopPolicy for Counting {
    fn get_event_loop(&self) -> Result<EventLoop, LoopError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_event_loop()
    }
    fn set_event_loop(&self, lp: Option<EventLoop>) {
        self.sets.fetch_add(1, Ordering::SeqCst);
        self.inner.set_event_loop(lp);
    }
    fn new_event_loop(&self) -> Result<EventLoop, LoopError> {
        self.news.fetch_add(1, Ordering::SeqCst);
        self.inner.new_event_loop()
    }
}

impl Counting {
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.gets.load(Ordering::SeqCst),
            self.sets.load(Ordering::SeqCst),
            self.news.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn the_free_functions_go_through_the_installed_policy() {
    let _s = serial();
    let under_default = new_event_loop().unwrap();
    set_event_loop(Some(under_default.clone()));

    let counting = Arc::new(Counting::default());
    set_event_loop_policy(Some(counting.clone()));
    let installed = get_event_loop_policy();
    assert!(std::ptr::addr_eq(
        Arc::as_ptr(&installed),
        Arc::as_ptr(&counting)
    ));
    // The new policy has its own notion of "current": nothing yet.
    assert_no_current_loop(get_event_loop().unwrap_err());
    assert_eq!(counting.counts(), (1, 0, 0));

    let lp = new_event_loop().unwrap();
    assert_eq!(counting.counts(), (1, 0, 1));
    set_event_loop(Some(lp.clone()));
    assert_eq!(counting.counts(), (1, 1, 1));
    assert!(get_event_loop().unwrap().ptr_eq(&lp));
    assert_eq!(counting.counts(), (2, 1, 1));

    // A running loop answers get_event_loop without asking the policy.
    let running = new_loop();
    let r = running.clone();
    let seen = running
        .run_until_complete(async move { get_event_loop().map(|got| got.ptr_eq(&r)) })
        .unwrap();
    assert!(seen.unwrap());
    assert_eq!(counting.counts(), (2, 1, 1));

    // None restores a default policy (a fresh one: nothing is current).
    set_event_loop_policy(None);
    assert_no_current_loop(get_event_loop().unwrap_err());
    let other = new_event_loop().unwrap();
    set_event_loop(Some(other.clone()));
    assert!(get_event_loop().unwrap().ptr_eq(&other));
    assert_eq!(
        counting.counts(),
        (2, 1, 1),
        "the old policy was still used"
    );
    assert!(!std::ptr::addr_eq(
        Arc::as_ptr(&get_event_loop_policy()),
        Arc::as_ptr(&counting)
    ));
    for l in [under_default, lp, running, other] {
        l.close().unwrap();
    }
}

#[test]
fn a_policy_can_build_every_loop_in_debug_mode() {
    let _s = serial();
    set_event_loop_policy(Some(Arc::new(DefaultEventLoopPolicy::with_loop_factory(
        || EventLoop::builder().debug(true).build(),
    ))));
    let lp = new_event_loop().unwrap();
    assert!(lp.get_debug());
    set_event_loop_policy(None);
    let plain = new_event_loop().unwrap();
    // The default follows AIOLOOP_DEBUG, like EventLoop::new.
    assert_eq!(plain.get_debug(), EventLoop::new().unwrap().get_debug());
    lp.close().unwrap();
    plain.close().unwrap();
}

/// A policy that creates the loop on first use and calls back into the
/// crate's functions from its own methods.
#[derive(Debug, Default)]
struct Reentrant {
    current: PerThreadLoop,
    replace_me: AtomicUsize,
}

impl EventLoopPolicy for Reentrant {
    fn get_event_loop(&self) -> Result<EventLoop, LoopError> {
        if let Some(lp) = self.current.get() {
            return Ok(lp);
        }
        // Through the global functions: must not deadlock on the policy lock.
        let lp = new_event_loop()?;
        set_event_loop(Some(lp.clone()));
        Ok(lp)
    }
    fn set_event_loop(&self, lp: Option<EventLoop>) {
        let _ = get_event_loop_policy();
        self.current.set(lp);
    }
    fn new_event_loop(&self) -> Result<EventLoop, LoopError> {
        if self.replace_me.load(Ordering::SeqCst) == 1 {
            // Replaces itself from inside its own method.
            set_event_loop_policy(None);
        }
        EventLoop::new()
    }
}

#[test]
fn policy_methods_may_call_back_into_the_functions() {
    let _s = serial();
    let policy = Arc::new(Reentrant::default());
    set_event_loop_policy(Some(policy.clone()));
    let first = get_event_loop().unwrap();
    assert!(get_event_loop().unwrap().ptr_eq(&first));

    policy.replace_me.store(1, Ordering::SeqCst);
    let lp = new_event_loop().unwrap();
    assert!(!std::ptr::addr_eq(
        Arc::as_ptr(&get_event_loop_policy()),
        Arc::as_ptr(&policy)
    ));
    assert_no_current_loop(get_event_loop().unwrap_err());
    first.close().unwrap();
    lp.close().unwrap();
}

// ---------------------------------------------------------------------------
// Threads

#[test]
fn each_thread_has_its_own_current_loop() {
    let _s = serial();
    let main_loop = new_event_loop().unwrap();
    set_event_loop(Some(main_loop.clone()));
    let other = std::thread::spawn(|| {
        let before = get_event_loop().err().map(|e| e.kind());
        let lp = new_event_loop().unwrap();
        set_event_loop(Some(lp.clone()));
        let own = get_event_loop().unwrap().ptr_eq(&lp);
        set_event_loop(None);
        lp.close().unwrap();
        (before, own)
    })
    .join()
    .unwrap();
    assert_eq!(other, (Some(ErrorKind::InvalidState), true));
    // The other thread's set and clear did not touch this thread's loop.
    assert!(get_event_loop().unwrap().ptr_eq(&main_loop));
    main_loop.close().unwrap();
}

/// What one loop thread saw, checked on the test thread.
#[derive(Debug, PartialEq)]
struct ThreadReport {
    running_is_own: bool,
    event_loop_is_own: bool,
    current_after_run_is_own: bool,
}

#[test]
fn loops_in_two_threads_run_at_once_and_each_finds_its_own() {
    let _s = serial();
    // Both loops cross this barrier from inside a callback, so each is
    // inside run_forever while the other is too; the second barrier is
    // crossed with both loops stopped but still set as current.
    let running_together = Arc::new(Barrier::new(2));
    let both_set = Arc::new(Barrier::new(2));
    let (done_tx, done_rx) = mpsc::channel::<(usize, ThreadReport)>();

    let threads: Vec<_> = (0..2)
        .map(|n| {
            let running_together = running_together.clone();
            let both_set = both_set.clone();
            let done = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("policy-loop-{n}"))
                .spawn(move || {
                    let lp = new_event_loop().unwrap();
                    set_event_loop(Some(lp.clone()));
                    let seen: Rc<RefCell<Option<(bool, bool)>>> = Rc::default();
                    let (s, l) = (seen.clone(), lp.clone());
                    lp.call_soon(move || {
                        running_together.wait();
                        let running = get_running_loop().is_ok_and(|r| r.ptr_eq(&l));
                        let current = get_event_loop().is_ok_and(|r| r.ptr_eq(&l));
                        *s.borrow_mut() = Some((running, current));
                        l.stop();
                    })
                    .unwrap();
                    run_bounded(&lp);
                    both_set.wait();
                    let after = get_event_loop().is_ok_and(|r| r.ptr_eq(&lp));
                    let (running, current) = seen.take().expect("the callback ran");
                    set_event_loop(None);
                    lp.close().unwrap();
                    let report = ThreadReport {
                        running_is_own: running,
                        event_loop_is_own: current,
                        current_after_run_is_own: after,
                    };
                    done.send((n, report)).unwrap();
                })
                .unwrap()
        })
        .collect();
    drop(done_tx);

    // Bounded: a thread stuck at a barrier (its peer failed first) fails
    // the test instead of hanging it.
    let mut reports = Vec::new();
    for _ in 0..2 {
        match done_rx.recv_timeout(LIMIT) {
            Ok(r) => reports.push(r),
            Err(e) => panic!("a loop thread did not finish: {e:?}"),
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    reports.sort_by_key(|(n, _)| *n);
    let expected = ThreadReport {
        running_is_own: true,
        event_loop_is_own: true,
        current_after_run_is_own: true,
    };
    for (n, report) in reports {
        assert_eq!(report, expected, "thread {n}");
    }
    // Neither thread's loop leaked into this one.
    assert_no_current_loop(get_event_loop().unwrap_err());
}

#[test]
fn the_policy_is_shared_by_all_threads() {
    let _s = serial();
    let counting = Arc::new(Counting::default());
    set_event_loop_policy(Some(counting.clone()));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let lp = new_event_loop().unwrap();
                set_event_loop(Some(lp.clone()));
                let own = get_event_loop().unwrap().ptr_eq(&lp);
                set_event_loop(None);
                lp.close().unwrap();
                own
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    assert_eq!(counting.counts(), (4, 8, 4));
}
