//! [`SignalLoopExt`]: asyncio's `add_signal_handler` / `remove_signal_handler`
//! as an extension trait of [`EventLoop`].
//!
//! # Design
//! asyncio uses one `signal.set_wakeup_fd` per process, which only works on
//! the main thread and gives a signal to one loop (bpo-34679). Here every
//! (loop, signal) pair has its own registration in signal-hook's process-wide
//! registry: a socketpair whose write end belongs to the signal-hook action
//! (the action, run inside the signal handler, only `send`s one byte with
//! `MSG_DONTWAIT`; a full buffer just coalesces) and whose read end is an
//! `add_reader` fd of the loop. So a signal wakes a sleeping loop at once,
//! the callback runs on the loop thread, every loop that registered the
//! signal gets it (fan-out), and any thread may register. Creating a loop
//! touches no signal state; only `add_signal_handler` does.
//!
//! The reader drains its socket (a bounded number of reads per iteration:
//! the fd is level-triggered, so a storm cannot starve the loop) and calls
//! the callback once per batch.
//!
//! Ownership: the reader closure owns the signal-hook registration (a guard
//! that unregisters on drop) and the entry holding the callback and the
//! read end. So whatever drops the reader (its removal, `close()` clearing
//! every watcher, the loop being dropped) also removes the process-wide
//! action and closes the socketpair, at once. A thread-local table maps
//! (loop, signal) to the entry, for replacing and removing; it holds weak
//! references only (to the loop and to the entry), and entries of closed
//! or dropped loops are pruned on every call.
//!
//! The callback lives in a `RefCell<Option<Box<dyn FnMut()>>>` and is taken
//! out while it runs (put back by a drop guard, panics included), so a
//! callback may replace or remove its own handler. Nothing of this module is
//! borrowed while user code (callbacks, their `Drop`) runs.
//!
//! The previous disposition: signal-hook never reinstalls the default
//! disposition when its last action goes (and a raw `sigaction(SIG_DFL)`
//! behind its back would break later registrations); with no action left,
//! its handler chains to the handler it replaced, or does nothing. So, for
//! a signal whose disposition was the default when aioloop first
//! registered it, aioloop also registers one `register_conditional_default`
//! action, enabled whenever no aioloop handler for that signal remains: the
//! signal then does what its default does again (SIGINT and SIGTERM
//! terminate, SIGTSTP stops, SIGCHLD is ignored), as asyncio's
//! `remove_signal_handler` restores `SIG_DFL` (and `default_int_handler`
//! for SIGINT). A signal that was ignored stays ignored (signal-hook saw
//! `SIG_IGN`), one with another handler goes on reaching it. Real-time
//! signals are not in signal-hook's table of defaults: once handled and
//! removed, they are ignored.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use loop_core::{ErrorKind, EventLoop, LoopError};
use signal_hook::SigId;

mod sealed {
    pub trait Sealed {}
    impl Sealed for loop_core::EventLoop {}
}

/// The largest signal number accepted (Linux has 64 signals, real-time ones
/// included).
const MAX_SIGNAL: i32 = 64;

/// Reads of the self-pipe per loop iteration, at most (the reader is
/// level-triggered: what is left is read in the next iteration).
const MAX_READS_PER_BATCH: usize = 16;

type Callback = Box<dyn FnMut()>;

/// asyncio's Unix signal handlers on [`EventLoop`]: `add_signal_handler`,
/// `remove_signal_handler`.
///
/// Bring it into scope (`use loop_process::SignalLoopExt;`, or
/// `use aioloop::prelude::*;`).
///
/// # Semantics
///
/// - **The callback runs on the loop**, in an ordinary iteration, never
///   inside the signal handler, so it may do anything a callback may do. A
///   sleeping loop is woken at once.
/// - **Coalescing.** Signals that arrive before the loop gets to them run the
///   callback once (as with asyncio's wakeup fd and, at the OS level, with
///   any non-real-time signal): at least once after each delivery, never more
///   often than the signal was delivered.
/// - **Any thread, any number of loops.** Unlike asyncio, a loop on any
///   thread may add handlers, and every loop that registered a signal gets
///   it (fan-out). Removing one loop's handler never disturbs another loop's,
///   nor signal-hook actions of other code, which keep running alongside.
/// - **Creating a loop touches no signal state**; the first
///   `add_signal_handler` for a signal installs signal-hook's process-wide
///   handler for it (chaining to whatever handler was there before).
/// - **Cleanup.** As asyncio's `close()`, [`close`](EventLoop::close)
///   removes the loop's signal handlers: their process-wide registrations
///   and their descriptors go at once (its readers own them), and each
///   signal behaves as before (next point). So do
///   [`remove_signal_handler`](Self::remove_signal_handler) and
///   [`remove_all_signal_handlers`](Self::remove_all_signal_handlers).
/// - **The previous disposition comes back.** When the last aioloop handler
///   for a signal in the process is removed, the signal behaves as it did
///   before aioloop first handled it: the default action if that was the
///   disposition (`SIGINT` and `SIGTERM` terminate the process again;
///   asyncio restores `SIG_DFL`, and Python's `default_int_handler` for
///   `SIGINT`), nothing if it was ignored, the earlier handler if there was
///   one. Limits: real-time signals (`SIGRTMIN` and up) whose disposition
///   was the default are ignored afterwards instead (signal-hook knows no
///   default action for them); and the default action comes back even if
///   other code registered its own signal-hook action for that signal
///   after aioloop first did.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_process::SignalLoopExt;
/// use rustix::process::{getpid, kill_process, Signal};
///
/// let lp = EventLoop::new()?;
/// let stopper = lp.clone();
/// lp.add_signal_handler(Signal::USR1.as_raw(), move || stopper.stop())?;
/// std::thread::spawn(|| kill_process(getpid(), Signal::USR1));
/// lp.run_forever()?;
/// assert!(lp.remove_signal_handler(Signal::USR1.as_raw())?);
/// assert!(!lp.remove_signal_handler(Signal::USR1.as_raw())?);
/// # Ok::<(), loop_core::LoopError>(())
/// ```
pub trait SignalLoopExt: sealed::Sealed {
    /// Runs `callback` on the loop whenever `signal` is delivered to the
    /// process (asyncio's `loop.add_signal_handler(sig, callback)`).
    ///
    /// Adding a handler for a signal this loop already handles replaces the
    /// callback (also from inside the running callback).
    ///
    /// Errors: [`ErrorKind::InvalidArgument`] for a number outside `1..=64`,
    /// for a signal that cannot be handled (`SIGKILL`, `SIGSTOP`, and the
    /// ones signal-hook refuses: `signal_hook::consts::FORBIDDEN`) or that
    /// the system rejects (`EINVAL`); [`ErrorKind::Closed`] on a closed loop;
    /// [`ErrorKind::Io`] if the socketpair cannot be made.
    #[doc(alias = "loop.add_signal_handler")]
    fn add_signal_handler(
        &self,
        signal: i32,
        callback: impl FnMut() + 'static,
    ) -> Result<(), LoopError>;

    /// Removes this loop's handler for `signal`; returns whether one was
    /// installed (asyncio's `loop.remove_signal_handler(sig)`).
    ///
    /// Only this loop's signal-hook action is unregistered; other loops'
    /// handlers for the same signal keep working. Safe to call from inside
    /// the handler itself. On a closed loop it returns `Ok(false)`. A number
    /// outside `1..=64` is an [`ErrorKind::InvalidArgument`] error.
    #[doc(alias = "loop.remove_signal_handler")]
    fn remove_signal_handler(&self, signal: i32) -> Result<bool, LoopError>;

    /// Removes every signal handler of this loop and returns how many there
    /// were (what asyncio's `loop.close()` does for a Unix loop, and what
    /// [`close`](EventLoop::close) does here too).
    fn remove_all_signal_handlers(&self) -> usize;

    /// The deliveries of `signal` to this loop as something to await: each
    /// [`SignalStream::recv`] resolves once the signal arrived since the
    /// previous one returned (deliveries in between coalesce, as with any
    /// handler). It is this loop's handler for `signal` (as
    /// [`add_signal_handler`](Self::add_signal_handler) installs one), and
    /// dropping the stream removes it.
    ///
    /// One handler per loop and signal: a later `signal` or
    /// `add_signal_handler` for the same signal replaces this one, and this
    /// stream then ends (`recv` gives `None`). Errors as
    /// [`add_signal_handler`](Self::add_signal_handler).
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use loop_process::{SignalLoopExt, SIGUSR2};
    ///
    /// let lp = EventLoop::new()?;
    /// let mut usr2 = lp.signal(SIGUSR2)?;
    /// std::thread::spawn(|| {
    ///     rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::USR2)
    /// });
    /// let got = lp.run_until_complete(async move { usr2.recv().await })?;
    /// assert_eq!(got, Some(()));
    /// # Ok::<(), loop_core::LoopError>(())
    /// ```
    fn signal(&self, signal: i32) -> Result<SignalStream, LoopError>;
}

/// One signal's deliveries to one loop, from [`SignalLoopExt::signal`]:
/// await [`recv`](Self::recv), or use it as a `futures` `Stream` of `()`.
/// Dropping it removes the loop's handler for the signal (unless another
/// handler replaced it meanwhile).
pub struct SignalStream {
    lp: EventLoop,
    signal: i32,
    state: Rc<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// A delivery arrived that no `recv` has returned yet.
    arrived: Cell<bool>,
    /// The handler was replaced or removed: no more deliveries.
    ended: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// Owned by the stream's callback: when the callback is dropped (replaced,
/// removed), the stream ends and its waiting `recv` is woken.
struct EndOnDrop(Rc<StreamState>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.ended.set(true);
        if let Some(w) = self.0.waker.take() {
            w.wake();
        }
    }
}

impl SignalStream {
    /// The signal number.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// Waits for the next delivery: `Some(())` once the signal arrived since
    /// the last `recv` returned (at once if it already did), `None` once the
    /// handler was replaced or removed.
    pub fn recv(&mut self) -> impl Future<Output = Option<()>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }

    /// [`recv`](Self::recv) as a poll function.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if self.state.arrived.replace(false) {
            return Poll::Ready(Some(()));
        }
        if self.state.ended.get() {
            return Poll::Ready(None);
        }
        self.state.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl futures_lite::Stream for SignalStream {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.get_mut().poll_recv(cx)
    }
}

impl fmt::Debug for SignalStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalStream")
            .field("signal", &self.signal)
            .field("ended", &self.state.ended.get())
            .finish()
    }
}

impl Drop for SignalStream {
    fn drop(&mut self) {
        let ours = Rc::as_ptr(&self.state) as usize;
        if find(&self.lp, self.signal).is_some_and(|e| e.owner.get() == ours) {
            let _ = self.lp.remove_signal_handler(self.signal);
        }
    }
}

impl SignalLoopExt for EventLoop {
    fn add_signal_handler(
        &self,
        signal: i32,
        callback: impl FnMut() + 'static,
    ) -> Result<(), LoopError> {
        add_handler(self, signal, Box::new(callback), 0)
    }

    fn signal(&self, signal: i32) -> Result<SignalStream, LoopError> {
        let state = Rc::new(StreamState::default());
        let owner = Rc::as_ptr(&state) as usize;
        let ender = EndOnDrop(Rc::clone(&state));
        add_handler(
            self,
            signal,
            Box::new(move || {
                let state = &ender.0;
                state.arrived.set(true);
                if let Some(w) = state.waker.take() {
                    w.wake();
                }
            }),
            owner,
        )?;
        Ok(SignalStream {
            lp: self.clone(),
            signal,
            state,
        })
    }

    fn remove_signal_handler(&self, signal: i32) -> Result<bool, LoopError> {
        check_signal(signal, "remove_signal_handler")?;
        drop(prune_closed());
        let entry = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let pos = t.iter().position(|l| l.lp.is(self))?;
            let entry = t[pos].signals.remove(&signal);
            let emptied = t[pos].signals.is_empty().then(|| t.swap_remove(pos));
            Some((entry?, emptied))
        });
        // Dropped here, after the table's borrow: the loop handle, the
        // callback and the reader (with the registration) may run user code.
        let Some((entry, _emptied)) = entry else {
            return Ok(false);
        };
        match entry.upgrade() {
            Some(entry) => {
                entry.release(self);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn remove_all_signal_handlers(&self) -> usize {
        drop(prune_closed());
        let removed = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let pos = t.iter().position(|l| l.lp.is(self));
            pos.map(|pos| t.swap_remove(pos))
        });
        let Some(removed) = removed else { return 0 };
        let mut n = 0;
        for entry in removed.signals.into_values() {
            if let Some(entry) = entry.upgrade() {
                entry.release(self);
                n += 1;
            }
        }
        n
    }
}

/// `add_signal_handler` with the owner token of the callback (0: none; a
/// [`SignalStream`]'s state address).
fn add_handler(
    lp: &EventLoop,
    signal: i32,
    callback: Callback,
    owner: usize,
) -> Result<(), LoopError> {
    check_signal(signal, "add_signal_handler")?;
    if signal_hook::consts::FORBIDDEN.contains(&signal) {
        return Err(LoopError::new(
            ErrorKind::InvalidArgument,
            format!("add_signal_handler: signal {signal} cannot be caught"),
        ));
    }
    if lp.is_closed() {
        return Err(LoopError::closed());
    }
    drop(prune_closed());
    if let Some(entry) = find(lp, signal).filter(|e| e.active.get()) {
        // Replace. The old callback (None if it is the one running: the
        // running one is dropped by its guard, which sees the new one)
        // is dropped with no borrow held.
        entry.owner.set(owner);
        let old = entry.callback.replace(Some(callback));
        drop(old);
        return Ok(());
    }
    let entry = install(lp, signal, callback)?;
    entry.owner.set(owner);
    let weak = Rc::downgrade(&entry);
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        match t.iter_mut().find(|l| l.lp.is(lp)) {
            Some(l) => {
                l.signals.insert(signal, weak);
            }
            None => t.push(LoopSignals {
                lp: lp.downgrade(),
                signals: HashMap::from([(signal, weak)]),
            }),
        }
    });
    Ok(())
}

fn check_signal(signal: i32, what: &str) -> Result<(), LoopError> {
    if (1..=MAX_SIGNAL).contains(&signal) {
        Ok(())
    } else {
        Err(LoopError::new(
            ErrorKind::InvalidArgument,
            format!("{what}: invalid signal number {signal} (expected 1..={MAX_SIGNAL})"),
        ))
    }
}

/// One loop's handler for one signal: the callback and the read end of its
/// self-pipe. Owned by the reader closure; the table has a weak reference.
struct SignalEntry {
    callback: RefCell<Option<Callback>>,
    /// The [`SignalStream`] whose callback this is (its state's address),
    /// 0 for a callback of `add_signal_handler`: a dropped stream removes
    /// the handler only while it is still its own.
    owner: Cell<usize>,
    /// False once removed: a callback running at that moment is dropped
    /// afterwards, not put back.
    active: Cell<bool>,
    read: UnixStream,
}

impl SignalEntry {
    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Removes the handler: stops the reader (dropping the closure, and with
    /// it the signal-hook registration, unless it is running) and drops the
    /// callback. Called with no borrow of the table held.
    fn release(self: Rc<Self>, lp: &EventLoop) {
        self.active.set(false);
        let old = self.callback.borrow_mut().take();
        let _ = lp.remove_reader(self.fd());
        drop(old);
    }

    /// Drains the pipe (bounded) and runs the callback once if anything
    /// arrived.
    fn on_readable(&self) {
        let mut buf = [0u8; 1024];
        let mut got = false;
        for _ in 0..MAX_READS_PER_BATCH {
            match (&self.read).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got = true;
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !got || !self.active.get() {
            return;
        }
        let taken = self.callback.borrow_mut().take();
        if let Some(cb) = taken {
            let mut guard = PutBack {
                entry: self,
                cb: Some(cb),
            };
            if let Some(cb) = guard.cb.as_mut() {
                cb();
            }
        }
    }
}

/// Puts the running callback back in its slot when it returns or panics,
/// unless it was replaced or removed meanwhile (then it is dropped).
struct PutBack<'a> {
    entry: &'a SignalEntry,
    cb: Option<Callback>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        let leftover = {
            let mut slot = self.entry.callback.borrow_mut();
            if slot.is_none() && self.entry.active.get() {
                *slot = self.cb.take();
            }
            self.cb.take()
        };
        drop(leftover);
    }
}

/// A signal-hook registration of one (loop, signal); unregisters on drop.
/// Owned by the reader closure.
struct Registration {
    signal: i32,
    id: SigId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.id);
        release_signal(self.signal);
    }
}

fn install(lp: &EventLoop, signal: i32, callback: Callback) -> Result<Rc<SignalEntry>, LoopError> {
    let (read, write) =
        UnixStream::pair().map_err(|e| LoopError::io("add_signal_handler: socketpair", e))?;
    read.set_nonblocking(true)
        .map_err(|e| LoopError::io("add_signal_handler: O_NONBLOCK", e))?;
    // Counted before the action exists, so the SIGINT default switch is off
    // before our action can see a signal.
    acquire_signal(signal);
    let id = match signal_hook::low_level::pipe::register(signal, write) {
        Ok(id) => id,
        Err(e) => {
            release_signal(signal);
            let kind = if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) {
                ErrorKind::InvalidArgument
            } else {
                ErrorKind::Io
            };
            return Err(LoopError::new(
                kind,
                format!("add_signal_handler: cannot handle signal {signal}: {e}"),
            )
            .with_source(e));
        }
    };
    // Owned by the reader from here on: if `add_reader` fails, dropping the
    // closure unregisters it.
    let registration = Registration { signal, id };
    let entry = Rc::new(SignalEntry {
        callback: RefCell::new(Some(callback)),
        owner: Cell::new(0),
        active: Cell::new(true),
        read,
    });
    let for_reader = Rc::clone(&entry);
    lp.add_reader(entry.fd(), move || {
        let _registration = &registration;
        for_reader.on_readable();
    })?;
    Ok(entry)
}

/// This thread's loops with signal handlers (weak: the readers own the
/// entries, and nothing here keeps a loop alive).
struct LoopSignals {
    lp: loop_core::WeakEventLoop,
    signals: HashMap<i32, std::rc::Weak<SignalEntry>>,
}

thread_local! {
    static TABLE: RefCell<Vec<LoopSignals>> = const { RefCell::new(Vec::new()) };
}

fn find(lp: &EventLoop, signal: i32) -> Option<Rc<SignalEntry>> {
    TABLE.with(|t| {
        t.borrow()
            .iter()
            .find(|l| l.lp.is(lp))
            .and_then(|l| l.signals.get(&signal))
            .and_then(std::rc::Weak::upgrade)
    })
}

/// Takes the entries of closed or dropped loops out of the table (their
/// readers, and so their registrations and descriptors, went with
/// `close()`). The caller drops them with no borrow held.
fn prune_closed() -> Vec<LoopSignals> {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let mut pruned = Vec::new();
        let mut i = 0;
        while i < t.len() {
            if t[i].lp.upgrade().is_none_or(|lp| lp.is_closed()) {
                pruned.push(t.swap_remove(i));
            } else {
                i += 1;
            }
        }
        pruned
    })
}

/// The number of live aioloop registrations per signal, in the process.
static COUNTS: Mutex<[usize; MAX_SIGNAL as usize + 1]> = Mutex::new([0; MAX_SIGNAL as usize + 1]);

/// Per signal, its "behave as the default" switch, if the signal had the
/// default disposition when aioloop first registered it (`None` inside
/// otherwise, or for a signal signal-hook knows no default for).
static DEFAULTS: [OnceLock<Option<Arc<AtomicBool>>>; MAX_SIGNAL as usize + 1] =
    [const { OnceLock::new() }; MAX_SIGNAL as usize + 1];

fn acquire_signal(signal: i32) {
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let flag = DEFAULTS[signal as usize].get_or_init(|| {
        if !disposition_is_default(signal) {
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register_conditional_default(signal, Arc::clone(&flag))
            .ok()
            .map(|_| flag)
    });
    if let Some(flag) = flag {
        flag.store(false, Ordering::SeqCst);
    }
    counts[signal as usize] += 1;
}

fn release_signal(signal: i32) {
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let count = &mut counts[signal as usize];
    *count = count.saturating_sub(1);
    if *count == 0 {
        if let Some(Some(flag)) = DEFAULTS[signal as usize].get() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether `signal`'s current disposition is `SIG_DFL` (a query only).
fn disposition_is_default(signal: i32) -> bool {
    // SAFETY: a zeroed `sigaction` is a valid value of the plain C struct;
    // with a null `act`, `sigaction` only writes the current disposition
    // into `old` and changes nothing.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_DFL
    }
}
