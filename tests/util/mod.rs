//! Helpers shared by the integration tests: the harness ([`on_loop`]: a
//! loop with an exception recorder, the body run under a watchdog, the loop
//! closed and the reports checked), failure-guard watchdogs, drop counters
//! and one-iteration runs.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use aioloop::{ErrorKind, EventLoop, LoopError};

/// How long a test may run before its watchdog stops the loop. Generous: it
/// is a failure guard for a loaded 2-core machine, never a synchronisation.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A loop on the io_uring backend, or `None` (with the reason printed) where
/// the kernel refuses io_uring and the loop fell back to epoll: tests of the
/// completion path then skip.
pub fn uring_loop() -> Option<EventLoop> {
    let lp = EventLoop::builder()
        .backend(aioloop::Backend::Uring)
        .build()
        .expect("creating an event loop");
    if lp.backend() != aioloop::Backend::Uring {
        eprintln!("skipped: io_uring is unavailable here (the loop fell back to epoll)");
        return None;
    }
    Some(lp)
}

/// [`on_loop`] on a loop built with the io_uring backend; `None` (after
/// printing why) where the kernel refuses io_uring.
pub fn on_uring_loop<B, F>(body: B) -> Option<F::Output>
where
    B: FnOnce(EventLoop) -> F,
    F: Future + 'static,
    F::Output: 'static,
{
    let lp = uring_loop()?;
    let seen = record_exceptions(&lp);
    let out = run(&lp, body(lp.clone()));
    lp.close().expect("closing the loop");
    assert_no_exceptions(&seen);
    Some(out)
}

/// A new loop with the default backend (honours `AIOLOOP_BACKEND` and
/// `AIOLOOP_DEBUG`).
pub fn new_loop() -> EventLoop {
    EventLoop::new().expect("creating an event loop")
}

/// A failure guard on another thread: if the test does not disarm it within
/// [`LIMIT`], it records that it fired and stops the loop through its
/// thread-safe handle (which wakes a loop blocked with no timers, and works
/// with a virtual clock too).
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(lp: &EventLoop) -> Watchdog {
        Watchdog::with_limit(lp, LIMIT)
    }

    pub fn with_limit(lp: &EventLoop, limit: Duration) -> Watchdog {
        let handle = lp.handle();
        let (done, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                f.store(true, Ordering::SeqCst);
                let _ = handle.stop();
            }
        });
        Watchdog {
            done: Some(done),
            fired,
            thread: Some(thread),
        }
    }

    /// Stops the guard and asserts it never fired.
    pub fn disarm(mut self) {
        self.stop_thread();
        assert!(
            !self.fired.load(Ordering::SeqCst),
            "the watchdog fired: the test hung and was stopped after {LIMIT:?}"
        );
    }

    fn stop_thread(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// `run_forever` under a watchdog; panics if the loop errs or hangs.
pub fn run_bounded(lp: &EventLoop) {
    let dog = Watchdog::start(lp);
    let out = lp.run_forever();
    dog.disarm();
    out.expect("run_forever");
}

/// Runs `f` to completion on `lp` under a [`Watchdog`]: the test fails with
/// the watchdog's message instead of hanging, and with the loop's error if
/// `run_until_complete` refuses.
pub fn run<F>(lp: &EventLoop, f: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    try_run(lp, f).expect("run_until_complete")
}

/// [`run`] that returns `run_until_complete`'s error instead of failing
/// (the watchdog still fails the test if it fires).
pub fn try_run<F>(lp: &EventLoop, f: F) -> Result<F::Output, LoopError>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let dog = Watchdog::start(lp);
    let out = lp.run_until_complete(f);
    dog.disarm();
    out
}

/// Asserts the exception handler saw nothing, then closes the loop.
pub fn finish(lp: &EventLoop, seen: &Recorded) {
    assert_no_exceptions(seen);
    lp.close().unwrap();
}

/// Panics, listing them, if the exception handler recorded anything.
pub fn assert_no_exceptions(seen: &Recorded) {
    assert!(
        seen.borrow().is_empty(),
        "the exception handler was called: {:#?}",
        seen.borrow()
    );
}

/// The test harness: a new loop (default backend, honouring
/// `AIOLOOP_BACKEND` and `AIOLOOP_DEBUG`) with an exception recorder; runs
/// `body(loop)` to completion under a [`Watchdog`], closes the loop, and
/// asserts the exception handler was never called (before or during the
/// close). Returns the body's output.
///
/// ```ignore
/// on_loop(|lp| async move {
///     lp.sleep(Duration::ZERO).await;
/// });
/// ```
pub fn on_loop<B, F>(body: B) -> F::Output
where
    B: FnOnce(EventLoop) -> F,
    F: Future + 'static,
    F::Output: 'static,
{
    let (out, seen) = on_loop_recording(body);
    assert_no_exceptions(&seen);
    out
}

/// [`on_loop`] for tests that expect exception reports: the same run and
/// close, but the recorded reports are returned, unchecked, with the
/// body's output.
pub fn on_loop_recording<B, F>(body: B) -> (F::Output, Recorded)
where
    B: FnOnce(EventLoop) -> F,
    F: Future + 'static,
    F::Output: 'static,
{
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let out = run(&lp, body(lp.clone()));
    lp.close().expect("closing the loop");
    (out, seen)
}

/// The name libtest gives test `name` of the module `module` (pass
/// `module_path!()`): the module path without the crate's name, for tests
/// that run their own binary again with `--exact`. A test file's module
/// path depends on the binary it is grouped in, so it is never written out.
pub fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// Runs exactly one iteration (stop first, then `run_forever`).
pub fn one_iteration(lp: &EventLoop) {
    lp.stop();
    lp.run_forever().expect("one iteration");
}

/// What the exception handler saw, reduced to owned values.
#[derive(Debug, Clone)]
pub struct Seen {
    pub message: String,
    pub handle: Option<String>,
    pub kind: Option<ErrorKind>,
    pub panic: Option<String>,
    pub error: Option<String>,
    pub extra: Vec<(String, String)>,
}

/// What [`record_exceptions`] keeps: every context, in order.
pub type Recorded = Rc<RefCell<Vec<Seen>>>;

/// Installs an exception handler that records every context.
pub fn record_exceptions(lp: &EventLoop) -> Recorded {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_exception_handler(move |_lp, ctx| {
        let err = ctx.loop_error();
        s.borrow_mut().push(Seen {
            message: ctx.message.clone(),
            handle: ctx.handle.clone(),
            kind: err.map(|e| e.kind()),
            panic: err.and_then(|e| e.panic()).map(|p| p.message().to_string()),
            error: ctx.error.as_ref().map(|e| e.to_string()),
            extra: ctx.extra.clone(),
        });
    });
    seen
}

/// Wakers of everything waiting for a change (a protocol callback, a new
/// connection).
#[derive(Default)]
pub struct Notify(RefCell<Vec<Waker>>);

impl Notify {
    pub fn wake(&self) {
        let wakers = std::mem::take(&mut *self.0.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once `cond` holds; re-checked after every notification.
    pub fn until<'a>(
        &'a self,
        mut cond: impl FnMut() -> bool + 'a,
    ) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if cond() {
                return Poll::Ready(());
            }
            self.0.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// A value that counts its drops (single-threaded).
pub struct DropCount(pub Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A value that counts its drops (from any thread).
pub struct SendDropCount(pub Arc<AtomicUsize>);

impl Drop for SendDropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A shared, single-threaded event log.
pub type Log<T> = Rc<RefCell<Vec<T>>>;

pub fn log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// A counter shared by callbacks.
pub fn counter() -> Rc<Cell<usize>> {
    Rc::new(Cell::new(0))
}

pub fn bump(c: &Cell<usize>) {
    c.set(c.get() + 1);
}

/// The warnings logged (through the `log` crate) on the calling thread since
/// [`capture_warnings`] was first called in this test binary. Records are
/// kept per thread, so tests running side by side do not see each
/// other's.
pub fn warnings_on_this_thread() -> Vec<String> {
    let me = format!("{:?}", std::thread::current().id());
    WARNINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(t, _)| *t == me)
        .map(|(_, m)| m.clone())
        .collect()
}

static WARNINGS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

struct WarningCollector;

impl log::Log for WarningCollector {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn {
            let me = format!("{:?}", std::thread::current().id());
            WARNINGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((me, record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

/// Installs (once per test binary) a logger that keeps every warning, for
/// [`warnings_on_this_thread`].
pub fn capture_warnings() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&WarningCollector).expect("no other logger in this binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

/// The error of `r`, which must be of `kind` (the test fails otherwise).
#[track_caller]
pub fn assert_kind<T: std::fmt::Debug>(r: Result<T, LoopError>, kind: ErrorKind) -> LoopError {
    match r {
        Err(e) => {
            assert_eq!(e.kind(), kind, "unexpected error {e:?}");
            e
        }
        Ok(v) => panic!("expected a {kind:?} error, got Ok({v:?})"),
    }
}

/// The reports with `message`, out of everything the handler recorded (in
/// debug mode, e.g. with `AIOLOOP_DEBUG=1`, other reports may appear too).
pub fn reports(seen: &Log<Seen>, message: &str) -> Vec<Seen> {
    seen.borrow()
        .iter()
        .filter(|s| s.message == message)
        .cloned()
        .collect()
}
