//! The reactor: the poller behind the loop, as a small set of backends.
//!
//! # Why three backends
//! The `polling` crate is portable, but on Linux its `wait` costs three or four
//! syscalls more than needed: it re-arms its notify eventfd each time and, with
//! a timeout, programs a timerfd; its default registration mode is oneshot (one
//! more `epoll_ctl` per event). The loop calls `wait` once per iteration, so on
//! Linux it uses [`epoll`] directly through rustix: one `epoll_wait` per
//! iteration with the timeout in the call (rounded *up* to whole milliseconds,
//! so timers never fire early), registrations level-triggered (asyncio's
//! semantics: a reader runs every iteration while its fd stays readable) and
//! never re-armed, and the wake-up eventfd read only when it fired.
//! Elsewhere, and on Linux when forced (`Backend::Polling`, or
//! `AIOLOOP_BACKEND=polling`), the [`portable`] backend uses `polling` in level
//! mode. The third, [`uring`] (`Backend::Uring`, Linux, opt-in), takes
//! readiness through io_uring: registration changes are queued in the
//! submission ring and go to the kernel with the next wait, in one
//! `io_uring_enter` whose own argument is the timeout; its module doc has
//! its invariants. It is probed when the loop is created and, where the
//! kernel refuses it, the loop runs the platform default instead, with one
//! debug line. The whole test suite runs on all three (`cargo xtask ci`
//! does every run).
//!
//! # Waking the loop from another thread
//! [`Notifier`] is the `Send + Sync` half. The loop sets `parked` just before it
//! may block and clears it after; a notifier writes the eventfd only when the
//! loop is parked and no earlier notification is still pending (`notified`),
//! so a burst of `call_soon_threadsafe` calls costs one write and the loop one
//! read. An eventfd coalesces and cannot fill up, unlike a self-pipe.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

#[cfg(target_os = "linux")]
pub(crate) mod epoll;
pub(crate) mod portable;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

/// Which poller a loop uses.
///
/// The default is [`Backend::Epoll`] on Linux and [`Backend::Polling`]
/// elsewhere; the environment variable `AIOLOOP_BACKEND` (`epoll`,
/// `polling` or `uring`) overrides the default for loops built without an
/// explicit [`Builder::backend`](crate::Builder::backend).
/// [`EventLoop::backend`](crate::EventLoop::backend) tells which one a loop
/// actually runs (a loop asked for [`Backend::Uring`] may run epoll).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// epoll through rustix, level-triggered, one `epoll_wait` per iteration
    /// (Linux only).
    Epoll,
    /// The portable `polling` crate in level mode (every platform it supports).
    Polling,
    /// io_uring (Linux only), level-triggered through oneshot polls that are
    /// re-armed in the same `io_uring_enter` as the wait. Probed when the loop
    /// is created: where io_uring is unavailable (an old kernel, the
    /// `kernel.io_uring_disabled` sysctl, a seccomp policy, another platform)
    /// the loop falls back to the platform default and logs one debug line.
    Uring,
}

impl Backend {
    /// The backend for this platform, unless `AIOLOOP_BACKEND` says otherwise.
    pub(crate) fn from_env() -> Result<Backend, String> {
        match std::env::var("AIOLOOP_BACKEND") {
            Ok(v) if v.eq_ignore_ascii_case("epoll") => Ok(Backend::Epoll),
            Ok(v) if v.eq_ignore_ascii_case("polling") => Ok(Backend::Polling),
            Ok(v) if v.eq_ignore_ascii_case("uring") => Ok(Backend::Uring),
            Ok(v) if v.is_empty() => Ok(Backend::platform_default()),
            Ok(v) => Err(format!(
                "AIOLOOP_BACKEND={v:?} is not a backend: use \"epoll\", \"polling\" or \"uring\""
            )),
            Err(_) => Ok(Backend::platform_default()),
        }
    }

    fn platform_default() -> Backend {
        if cfg!(target_os = "linux") {
            Backend::Epoll
        } else {
            Backend::Polling
        }
    }
}

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Interest {
    pub(crate) read: bool,
    pub(crate) write: bool,
    /// Edge-triggered: report the fd when it *becomes* ready, not in every
    /// wait while it stays ready (see `io.rs`, "Edge-triggered readers").
    /// Only the epoll backend honours it; the others stay level-triggered,
    /// which is always correct for such a reader (it only reads more often
    /// than it must).
    pub(crate) edge: bool,
}

impl Interest {
    pub(crate) fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// One readiness report: the registration's key and what it is ready for.
/// Errors and hang-ups are reported as both readable and writable, as Python's
/// `selectors` does, so that the callback that handles them runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    pub(crate) key: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer hung up or the fd has an error (epoll's `RDHUP`, `HUP` or
    /// `ERR`): an edge-triggered registration must fall back to level
    /// triggering, or an EOF queued behind data would never be reported.
    pub(crate) hup: bool,
}

/// One completion of the io_uring backend's completion path
/// (uring/streams.rs) that its stream's handler must hear of: queued as
/// ready work and delivered in step 4 (uring_stream.rs). 16 bytes, so that
/// the ready queue's items stay small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completed {
    pub(crate) user_data: u64,
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

/// The loop's poller: one backend until [`close`](Reactor::close) releases
/// it (its epoll fd or `polling` instance goes at once, whatever handles on
/// the loop still exist).
pub(crate) struct Reactor {
    backend: Backend,
    /// `None` once closed. Borrowed only for one poller call, never across
    /// user code.
    kind: RefCell<Option<ReactorKind>>,
}

enum ReactorKind {
    #[cfg(target_os = "linux")]
    Epoll(epoll::EpollReactor),
    Portable(portable::PortableReactor),
    /// Boxed: the ring's handle is ten times the size of the others.
    #[cfg(target_os = "linux")]
    Uring(Box<uring::UringReactor>),
}

/// The error of a call on a closed reactor (the loop refuses such calls
/// before they get here; this is the backstop).
fn closed() -> io::Error {
    rustix::io::Errno::BADF.into()
}

impl Reactor {
    /// A reactor of `backend` and the notifier that wakes it. A
    /// [`Backend::Uring`] that is unavailable falls back to the platform
    /// default, with one debug line (to the `log` crate when a logger is
    /// installed, to stderr when `debug` is on); the reactor's
    /// [`backend`](Self::backend) is the one that runs.
    pub(crate) fn new(backend: Backend, debug: bool) -> io::Result<(Reactor, Notifier)> {
        let (backend, kind, notifier) = match backend {
            Backend::Uring => match Self::uring() {
                Ok((kind, notifier)) => (Backend::Uring, kind, notifier),
                Err(e) => {
                    let fallback = Backend::platform_default();
                    crate::debug::debug_line(
                        debug,
                        &format!(
                            "io_uring is unavailable ({}); using the {fallback:?} backend",
                            uring_unavailable_reason(&e)
                        ),
                    );
                    let (kind, notifier) = Self::make(fallback)?;
                    (fallback, kind, notifier)
                }
            },
            other => {
                let (kind, notifier) = Self::make(other)?;
                (other, kind, notifier)
            }
        };
        let reactor = Reactor {
            backend,
            kind: RefCell::new(Some(kind)),
        };
        Ok((reactor, Notifier::new(notifier)))
    }

    #[cfg(target_os = "linux")]
    fn uring() -> io::Result<(ReactorKind, NotifierKind)> {
        let (r, n) = uring::UringReactor::new()?;
        Ok((ReactorKind::Uring(Box::new(r)), NotifierKind::Eventfd(n)))
    }

    #[cfg(not(target_os = "linux"))]
    fn uring() -> io::Result<(ReactorKind, NotifierKind)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring exists only on Linux",
        ))
    }

    /// The poller of `backend`, which is not `Uring`.
    fn make(backend: Backend) -> io::Result<(ReactorKind, NotifierKind)> {
        Ok(match backend {
            #[cfg(target_os = "linux")]
            Backend::Epoll => {
                let (r, n) = epoll::EpollReactor::new()?;
                (ReactorKind::Epoll(r), NotifierKind::Eventfd(n))
            }
            #[cfg(not(target_os = "linux"))]
            Backend::Epoll => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the epoll backend exists only on Linux",
                ))
            }
            Backend::Polling | Backend::Uring => {
                let (r, n) = portable::PortableReactor::new()?;
                (ReactorKind::Portable(r), NotifierKind::Portable(n))
            }
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether [`Interest::edge`] is honoured (only epoll's is).
    pub(crate) fn supports_edge(&self) -> bool {
        self.backend == Backend::Epoll
    }

    /// Runs `f` on the open backend, or fails with `EBADF` once closed.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&ReactorKind) -> io::Result<R>) -> io::Result<R> {
        match &*self.kind.borrow() {
            Some(kind) => f(kind),
            None => Err(closed()),
        }
    }

    /// Starts watching `fd` under `key`. The caller guarantees `fd >= 0` and
    /// deletes the registration before the fd is closed (see `io.rs`).
    pub(crate) fn add(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        self.with(|kind| match kind {
            #[cfg(target_os = "linux")]
            ReactorKind::Epoll(r) => r.add(fd, key, interest),
            ReactorKind::Portable(r) => r.add(fd, key, interest),
            #[cfg(target_os = "linux")]
            ReactorKind::Uring(r) => r.add(fd, key, interest),
        })
    }

    pub(crate) fn modify(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()> {
        self.with(|kind| match kind {
            #[cfg(target_os = "linux")]
            ReactorKind::Epoll(r) => r.modify(fd, key, interest),
            ReactorKind::Portable(r) => r.modify(fd, key, interest),
            #[cfg(target_os = "linux")]
            ReactorKind::Uring(r) => r.modify(fd, key, interest),
        })
    }

    /// Stops watching `fd`, registered under `key`. Once this returns,
    /// nothing is reported for the registration and the poller holds no
    /// reference on the fd's file: the caller may close it.
    pub(crate) fn delete(&self, fd: RawFd, key: usize) -> io::Result<()> {
        self.with(|kind| match kind {
            #[cfg(target_os = "linux")]
            ReactorKind::Epoll(r) => r.delete(fd),
            ReactorKind::Portable(r) => r.delete(fd),
            #[cfg(target_os = "linux")]
            ReactorKind::Uring(r) => r.delete(fd, key),
        })
    }

    /// Waits up to `timeout` (`None`: until something happens) and appends the
    /// readiness reports to `out`. A notification ends the wait early and is
    /// consumed here. `EINTR` returns with no events.
    pub(crate) fn wait(
        &self,
        out: &mut Vec<Readiness>,
        done: &mut Vec<Completed>,
        timeout: Option<Duration>,
        notifier: &Notifier,
    ) -> io::Result<()> {
        self.with(|kind| match kind {
            #[cfg(target_os = "linux")]
            ReactorKind::Epoll(r) => r.wait(out, timeout, notifier),
            #[cfg(target_os = "linux")]
            ReactorKind::Uring(r) => r.wait(out, done, timeout, notifier),
            ReactorKind::Portable(r) => {
                let res = r.wait(out, timeout);
                // polling consumes its own notifications inside `wait`.
                notifier.clear_notified();
                res
            }
        })
    }

    /// Runs `f` on the io_uring backend's state, if this reactor is open
    /// and that backend (the completion path, uring_stream.rs); never
    /// across user code.
    #[cfg(target_os = "linux")]
    pub(crate) fn with_uring<R>(&self, f: impl FnOnce(&mut uring::State) -> R) -> Option<R> {
        match &*self.kind.borrow() {
            Some(ReactorKind::Uring(r)) => Some(r.with_state(f)),
            _ => None,
        }
    }

    /// Whether the completion path has streams or operations to wait for.
    pub(crate) fn has_streams(&self) -> bool {
        match &*self.kind.borrow() {
            #[cfg(target_os = "linux")]
            Some(ReactorKind::Uring(r)) => r.has_streams(),
            _ => false,
        }
    }

    /// Releases the poller (its fds close now). Later calls fail with
    /// `EBADF`. Idempotent.
    pub(crate) fn close(&self) {
        let kind = self.kind.borrow_mut().take();
        drop(kind);
    }
}

/// The `Send + Sync` half of the reactor: wakes a loop blocked in `wait`.
///
/// Shared with the loop's `LoopHandle`s on other threads, so the loop's
/// `close` cannot wait for them to drop it: [`close`](Notifier::close)
/// releases the wake-up fd (or the `polling` instance) at once. The lock
/// makes that safe against a `notify` on another thread: a writer holds the
/// read lock for its one write, so the fd is closed either after that write
/// or before the writer looks, never under it (a write into a recycled fd
/// number would land in someone else's file). The lock is taken only on the
/// slow path (the loop parked and not yet notified), at most once per
/// wake-up.
pub(crate) struct Notifier {
    /// `None` once closed.
    kind: RwLock<Option<NotifierKind>>,
    /// The loop may be blocked in `wait` (set just before, cleared just after).
    parked: AtomicBool,
    /// A wake-up was sent and the loop has not consumed it yet.
    notified: AtomicBool,
}

pub(crate) enum NotifierKind {
    /// The eventfd the epoll and io_uring backends watch.
    #[cfg(target_os = "linux")]
    Eventfd(std::os::fd::OwnedFd),
    Portable(std::sync::Arc<polling::Poller>),
}

impl Notifier {
    fn new(kind: NotifierKind) -> Self {
        Notifier {
            kind: RwLock::new(Some(kind)),
            parked: AtomicBool::new(false),
            notified: AtomicBool::new(false),
        }
    }

    /// Wakes the loop if it may be sleeping. Cheap when it is not. A closed
    /// notifier sends nothing (the loop is closed: nothing waits).
    pub(crate) fn notify(&self) -> io::Result<()> {
        if !self.parked.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.notified.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let kind = self.kind.read().unwrap_or_else(|e| e.into_inner());
        let res = match &*kind {
            #[cfg(target_os = "linux")]
            Some(NotifierKind::Eventfd(fd)) => epoll::write_eventfd(fd),
            Some(NotifierKind::Portable(p)) => p.notify(),
            None => Ok(()),
        };
        drop(kind);
        if res.is_err() {
            // Nothing was sent, so nothing will be consumed: the next
            // wake-up must try (and report) again instead of being skipped
            // as "already notified" (LESSONS 21).
            self.notified.store(false, Ordering::SeqCst);
        }
        res
    }

    /// Called by the loop around a blocking wait. The `SeqCst` pair with
    /// `notify` (store parked, then check the injection flag; store the flag,
    /// then check parked) guarantees one side sees the other.
    pub(crate) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
    }

    /// The loop consumed the pending wake-up.
    pub(crate) fn clear_notified(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }

    /// Releases the wake-up fd now, once no `notify` is writing to it; later
    /// `notify` calls send nothing. Idempotent.
    pub(crate) fn close(&self) {
        let kind = self.kind.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(kind);
    }
}

/// Why io_uring could not be used, for the fallback's debug line: the
/// usual causes of each errno that `io_uring_setup`, the register probe or
/// the first submission answer.
pub(crate) fn uring_unavailable_reason(e: &io::Error) -> String {
    let why = match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::NOSYS) => "the kernel or a seccomp policy refuses io_uring_setup",
        Some(rustix::io::Errno::PERM) | Some(rustix::io::Errno::ACCESS) => {
            "kernel.io_uring_disabled or a security policy forbids it"
        }
        Some(rustix::io::Errno::INVAL) => "the kernel is too old for what this backend uses",
        Some(rustix::io::Errno::NOMEM)
        | Some(rustix::io::Errno::MFILE)
        | Some(rustix::io::Errno::NFILE) => "out of memory or descriptors",
        _ => "",
    };
    if why.is_empty() {
        e.to_string()
    } else {
        format!("{why}: {e}")
    }
}

/// A `BorrowedFd` for a raw fd number that the caller vouches for.
///
/// # Safety
/// `fd` must be non-negative. It is used only for the one `epoll_ctl` (or
/// `polling`) call that follows, where the kernel itself checks the number
/// and answers `EBADF` for a closed one; the fd is never read, written or
/// closed through it.
#[inline]
pub(crate) unsafe fn borrow_fd<'a>(fd: RawFd) -> std::os::fd::BorrowedFd<'a> {
    debug_assert!(fd >= 0);
    // SAFETY: see the function's contract: non-negative, used for one syscall.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
