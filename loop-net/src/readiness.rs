//! The engine under every `sock_*` method: try the syscall, and on `EAGAIN`
//! wait for the loop to report the fd ready, then try again.
//!
//! # Design
//! An [`FdIo`] belongs to one `sock_*` call and watches one fd in one
//! direction. Its [`run`](FdIo::run) future tries a non-blocking syscall
//! first; only when that would block does it register a reader or writer with
//! the loop (`add_reader`/`add_writer`, level-triggered). The watcher only
//! sets a flag and wakes the task: the syscall itself always runs in the
//! future, so a stale watcher can never consume data meant for someone else.
//!
//! The registration stays while the call lasts (a `sock_sendall` that waits
//! many times registers once) and is removed synchronously when the
//! [`FdIo`] is dropped: on completion, on error, and when the future is
//! dropped half-way (cancelled). So "cancel, then retry on the same socket"
//! finds the fd unwatched (lesson 23 of the design notes).
//!
//! Ownership of the registration: the watcher closure holds an
//! `Rc<Waiter>`, as does the `FdIo`. When someone else replaces our reader
//! (a second `sock_recv` on the same socket) or the loop closes, the loop
//! drops our closure, so the `Rc` count falls to one. We then never remove
//! the newer watcher, and our own pending operation is woken (the closure's
//! drop wakes it) and fails with `ResourceBusy` instead of hanging.
//!
//! # Cancellation
//! Every poll first checks for the cancellation delivered to the task
//! awaiting the call (`loop_core::check_await`): the call then fails with an
//! `io::Error` of kind `Other` whose inner error is the `Cancelled`
//! `LoopError` (so `?` keeps it and the task ends cancelled), and dropping
//! it removes the watcher as above.
//!
//! # Fairness
//! A socket that is always ready would let a task loop on `sock_recv` without
//! ever returning `Pending`, starving every other callback and timer (tokio
//! issue 5946, lesson 25). A per-thread budget counts syscalls that completed
//! without waiting; when it runs out, the next operation first yields once
//! through the loop (wakes itself and returns `Pending`, so it runs again in
//! the next iteration, after I/O polling and due timers). Any real wait
//! refills the budget.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use loop_core::{EventLoop, LoopError};

/// Syscalls that may complete without waiting before an operation yields
/// through the loop once.
pub(crate) const OPS_PER_YIELD: u32 = 64;

thread_local! {
    static BUDGET: Cell<u32> = const { Cell::new(OPS_PER_YIELD) };
}

fn budget_exhausted() -> bool {
    BUDGET.with(|b| b.get() == 0)
}

fn budget_spend() {
    BUDGET.with(|b| b.set(b.get().saturating_sub(1)));
}

fn budget_refill() {
    BUDGET.with(|b| b.set(OPS_PER_YIELD));
}

/// Which readiness an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// Shared between an [`FdIo`] and the watcher it registered.
#[derive(Default)]
struct Waiter {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Waiter {
    fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake(&self) {
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What the watcher closure captures. Dropped by the loop when the watcher is
/// removed or replaced: a waiting operation is then woken to notice.
struct Armed(Rc<Waiter>);

impl Drop for Armed {
    fn drop(&mut self) {
        self.0.wake();
    }
}

/// One fd, one direction, for the length of one `sock_*` call.
pub(crate) struct FdIo<'a> {
    lp: &'a EventLoop,
    fd: BorrowedFd<'a>,
    dir: Direction,
    what: &'static str,
    waiter: Option<Rc<Waiter>>,
}

impl<'a> FdIo<'a> {
    pub(crate) fn new(
        lp: &'a EventLoop,
        fd: BorrowedFd<'a>,
        dir: Direction,
        what: &'static str,
    ) -> Self {
        FdIo {
            lp,
            fd,
            dir,
            what,
            waiter: None,
        }
    }

    /// Runs `attempt` (a non-blocking syscall) until it does not report
    /// `WouldBlock`, waiting for readiness in between. `Interrupted` is
    /// retried at once.
    pub(crate) fn run<'s, T, F>(
        &'s mut self,
        mut attempt: F,
    ) -> impl Future<Output = io::Result<T>> + use<'s, 'a, T, F>
    where
        F: FnMut() -> io::Result<T> + 's,
    {
        let mut waiting = false;
        let mut yielded = false;
        std::future::poll_fn(move |cx| self.poll_run(cx, &mut attempt, &mut waiting, &mut yielded))
    }

    /// Waits until the fd is reported ready (without trying anything first).
    pub(crate) fn ready(&mut self) -> impl Future<Output = io::Result<()>> + use<'_, 'a> {
        let mut first = true;
        self.run(move || {
            if std::mem::take(&mut first) {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        })
    }

    fn poll_run<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: &mut impl FnMut() -> io::Result<T>,
        waiting: &mut bool,
        yielded: &mut bool,
    ) -> Poll<io::Result<T>> {
        // The cancellation of the task awaiting this call (its watcher is
        // removed when the `FdIo` is dropped), as an `io::Error` holding the
        // `LoopError`; also a task of another loop.
        if let Err(err) = loop_core::check_await(self.lp, self.what) {
            return Poll::Ready(Err(err.into()));
        }
        if *waiting {
            let Some(w) = &self.waiter else {
                return Poll::Ready(Err(self.lost_error()));
            };
            if !self.still_ours() {
                self.waiter = None;
                return Poll::Ready(Err(self.lost_error()));
            }
            if !w.fired.replace(false) {
                // Woken for another reason: keep waiting.
                w.set_waker(cx.waker());
                return Poll::Pending;
            }
        } else if !*yielded && budget_exhausted() {
            *yielded = true;
            budget_refill();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            match attempt() {
                Ok(v) => {
                    budget_spend();
                    return Poll::Ready(Ok(v));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget_refill();
                    if let Err(e) = self.register() {
                        return Poll::Ready(Err(e));
                    }
                    let w = self.waiter.as_ref().expect("registered");
                    // The fd is not ready now, whatever an earlier report said.
                    w.fired.set(false);
                    w.set_waker(cx.waker());
                    *waiting = true;
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Whether our watcher is still the one registered.
    fn still_ours(&self) -> bool {
        self.waiter
            .as_ref()
            .is_some_and(|w| Rc::strong_count(w) > 1)
    }

    fn register(&mut self) -> io::Result<()> {
        if self.still_ours() {
            return Ok(());
        }
        if self.lp.is_closed() {
            return Err(LoopError::closed().into());
        }
        let waiter = Rc::new(Waiter::default());
        let armed = Armed(waiter.clone());
        let callback = move || {
            armed.0.fired.set(true);
            armed.0.wake();
        };
        let fd = self.fd.as_raw_fd();
        match self.dir {
            Direction::Read => self.lp.add_reader(fd, callback),
            Direction::Write => self.lp.add_writer(fd, callback),
        }
        .map_err(io::Error::from)?;
        self.waiter = Some(waiter);
        Ok(())
    }

    /// The error of an operation whose watcher was removed or replaced by
    /// someone else while it waited.
    fn lost_error(&self) -> io::Error {
        if self.lp.is_closed() {
            return LoopError::closed().into();
        }
        let which = match self.dir {
            Direction::Read => "reader",
            Direction::Write => "writer",
        };
        io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{}: another {which} was registered for fd {} while this operation waited \
                 (only one operation per direction may wait on a socket at a time)",
                self.what,
                self.fd.as_raw_fd()
            ),
        )
    }
}

impl Drop for FdIo<'_> {
    fn drop(&mut self) {
        let Some(w) = self.waiter.take() else {
            return;
        };
        if Rc::strong_count(&w) > 1 {
            // Ours: remove it now, before the socket can be closed. Take the
            // waker first so that dropping the closure wakes nobody.
            drop(w.waker.borrow_mut().take());
            let fd = self.fd.as_raw_fd();
            let _ = match self.dir {
                Direction::Read => self.lp.remove_reader(fd),
                Direction::Write => self.lp.remove_writer(fd),
            };
        }
    }
}

/// Refuses a socket in blocking mode: a syscall on it could block the loop.
pub(crate) fn check_nonblocking(fd: BorrowedFd<'_>, what: &str) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if flags.contains(rustix::fs::OFlags::NONBLOCK) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what}: the socket must be non-blocking (fd {} has O_NONBLOCK clear; \
                 call set_nonblocking(true) first)",
                fd.as_raw_fd()
            ),
        ))
    }
}

/// The checks every `sock_*` call makes before its first syscall.
pub(crate) fn check_call(lp: &EventLoop, fd: BorrowedFd<'_>, what: &str) -> io::Result<()> {
    if lp.is_closed() {
        return Err(LoopError::closed().into());
    }
    check_nonblocking(fd, what)
}
