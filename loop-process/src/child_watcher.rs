//! Child watching: learning that a child exited, reaping it, and nothing
//! else.
//!
//! # Rules
//! - **Only our own children.** Every wait names one child (`waitid` on its
//!   pidfd, or `waitpid(pid)`); `waitpid(-1)` is never called, so children
//!   started by other code in the process are never reaped.
//! - **Reap and publish in one step.** The wait runs on the loop thread, and
//!   the callback that records the return code runs right after it, before
//!   anything else on that thread; signals are sent from the loop thread too,
//!   and only while no return code is recorded, so a signal never reaches a
//!   recycled pid (LESSONS 13). With a pidfd the kernel guarantees it anyway.
//! - **No SIGCHLD dependency with pidfds** (LESSONS 16, 17): a pidfd turns
//!   readable when the child exits whatever SIGCHLD's disposition, and users
//!   may register SIGCHLD handlers of their own. `ECHILD` (someone else
//!   reaped it, or SIGCHLD is ignored and the kernel did) is "exited, status
//!   unknown": return code 255, as asyncio reports it.
//!
//! # The two watchers
//! - [`Watcher::Pidfd`] (Linux 5.3+, the epoll backend): `pidfd_open` right
//!   after the spawn (the child cannot be reaped in between: we are the only
//!   ones who wait for it); the pidfd is an `add_reader` fd of the loop;
//!   when readable, `waitid(P_PIDFD, WEXITED | WNOHANG)`.
//! - [`Watcher::Sigchld`] (other Unix, the polling backend, kernels without
//!   pidfds): one signal-hook SIGCHLD registration per loop, installed
//!   before the first spawn, writing to a socketpair that the loop reads; at
//!   each batch, `waitpid(pid, WNOHANG)` for each of the loop's children.
//!   signal-hook chains actions, so users' SIGCHLD handlers still run.
//!
//! # Orphans
//! A child whose transport is dropped while the loop lives stays watched by
//! the loop (the reader owns the transport's state) and is reaped when it
//! exits. A child still running when its loop closes (or whose state is
//! dropped after that) goes to the process-wide orphan reaper: one thread,
//! started on first use, that polls the orphans' pidfds (or `waitpid(pid,
//! WNOHANG)` every 100 ms without pidfds) until each has exited and been
//! reaped. No zombie remains (LESSONS 15).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use loop_core::{Backend, EventLoop, WeakEventLoop};
use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions};

/// The return code of a child that exited with an unknown status.
pub(crate) const UNKNOWN_STATUS: i32 = 255;

/// How a child is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watcher {
    Pidfd,
    Sigchld,
}

/// The watcher for children of `lp`: pidfds on the epoll and io_uring
/// backends when the kernel has them, SIGCHLD otherwise (the `polling`
/// backend keeps the SIGCHLD path tested).
pub(crate) fn choose(lp: &EventLoop) -> Watcher {
    static PIDFD_WORKS: OnceLock<bool> = OnceLock::new();
    let works = *PIDFD_WORKS.get_or_init(|| {
        cfg!(target_os = "linux") && crate::pidfd::open(rustix::process::getpid()).is_ok()
    });
    if works && matches!(lp.backend(), Backend::Epoll | Backend::Uring) {
        Watcher::Pidfd
    } else {
        Watcher::Sigchld
    }
}

/// Reaps the child behind `pidfd` if it exited: `Some(code)`, or `None`
/// while it runs.
pub(crate) fn try_reap_pidfd(pidfd: BorrowedFd<'_>) -> Option<i32> {
    crate::pidfd::try_reap(pidfd, UNKNOWN_STATUS)
}

/// Reaps child `pid` if it exited: `Some(code)`, or `None` while it runs.
pub(crate) fn try_reap_pid(pid: Pid) -> Option<i32> {
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        Ok(Some((_, status))) if status.exited() || status.signaled() => {
            Some(match (status.exit_status(), status.terminating_signal()) {
                (Some(code), _) => code,
                (None, Some(sig)) => -sig,
                (None, None) => UNKNOWN_STATUS,
            })
        }
        Ok(_) => None,
        Err(Errno::INTR) => None,
        Err(_) => Some(UNKNOWN_STATUS),
    }
}

/// What runs when a watched child has been reaped.
pub(crate) type OnExit = Box<dyn FnOnce(i32)>;

/// Starts watching `pidfd` on `lp`; `on_exit` runs on the loop once the
/// child was reaped. The reader owns `on_exit` (and what it captures) until
/// then, and drops it if the loop closes first.
pub(crate) fn watch_pidfd(lp: &EventLoop, raw: RawFd, on_exit: OnExit) -> io::Result<()> {
    // The reader needs the fd to wait on; a duplicate would be another
    // open file, so it borrows by number: the state behind `on_exit` owns
    // the pidfd and drops it only after this reader is removed.
    let mut on_exit = Some(on_exit);
    let l = lp.clone();
    lp.add_reader(raw, move || {
        // SAFETY: `raw` is the pidfd held by the subprocess state, which
        // `on_exit` keeps alive until this reader is removed below (and the
        // loop drops the reader before the state when it closes).
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let Some(code) = try_reap_pidfd(fd) else {
            return;
        };
        let _ = l.remove_reader(raw);
        if let Some(f) = on_exit.take() {
            f(code);
        }
    })
    .map_err(io::Error::from)
}

/// One loop's SIGCHLD watch: the children to check at each batch.
struct SigchldWatch {
    children: RefCell<HashMap<i32, OnExit>>,
}

thread_local! {
    /// The SIGCHLD watch of each loop of this thread (weak: the loop's reader
    /// owns it, so closing the loop drops it and its children's state).
    static SIGCHLD_WATCHES: RefCell<Vec<(WeakEventLoop, Weak<SigchldWatch>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Makes sure `lp` has a SIGCHLD watch, installed before any child is
/// spawned (a SIGCHLD that arrives before the registration would be lost).
pub(crate) fn prepare_sigchld(lp: &EventLoop) -> io::Result<()> {
    if sigchld_watch(lp).is_some() {
        return Ok(());
    }
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let id = signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, write)?;
    let guard = Registration(id);
    let watch = Rc::new(SigchldWatch {
        children: RefCell::new(HashMap::new()),
    });
    let w = watch.clone();
    let mut read_end = read;
    let raw = read_end.as_raw_fd();
    lp.add_reader(raw, move || {
        let _registered = &guard;
        let mut buf = [0u8; 256];
        while matches!(read_end.read(&mut buf), Ok(n) if n > 0) {}
        check_children(&w);
    })
    .map_err(io::Error::from)?;
    SIGCHLD_WATCHES.with(|ws| {
        let mut ws = ws.borrow_mut();
        ws.retain(|(_, w)| w.strong_count() > 0);
        ws.push((lp.downgrade(), Rc::downgrade(&watch)));
    });
    Ok(())
}

fn sigchld_watch(lp: &EventLoop) -> Option<Rc<SigchldWatch>> {
    SIGCHLD_WATCHES.with(|ws| {
        ws.borrow()
            .iter()
            .find(|(l, _)| l.is(lp))
            .and_then(|(_, w)| w.upgrade())
    })
}

/// Adds child `pid` to `lp`'s SIGCHLD watch (prepared before the spawn)
/// and checks it at once, in case it already exited.
pub(crate) fn watch_sigchld(lp: &EventLoop, pid: Pid, on_exit: OnExit) -> io::Result<()> {
    let watch = sigchld_watch(lp).ok_or_else(|| {
        io::Error::from(loop_core::LoopError::new(
            loop_core::ErrorKind::Closed,
            "the loop's SIGCHLD watch is gone (closed loop)",
        ))
    })?;
    watch
        .children
        .borrow_mut()
        .insert(pid.as_raw_nonzero().get(), on_exit);
    check_children(&watch);
    Ok(())
}

/// Reaps every exited child of one watch, then runs their callbacks (no
/// borrow held while they run).
fn check_children(watch: &SigchldWatch) {
    let pids: Vec<i32> = watch.children.borrow().keys().copied().collect();
    let mut exited = Vec::new();
    for pid in pids {
        let code = match Pid::from_raw(pid) {
            Some(p) => try_reap_pid(p),
            None => Some(UNKNOWN_STATUS),
        };
        if let Some(code) = code {
            if let Some(on_exit) = watch.children.borrow_mut().remove(&pid) {
                exited.push((on_exit, code));
            }
        }
    }
    for (on_exit, code) in exited {
        on_exit(code);
    }
}

/// A signal-hook registration; unregisters when dropped.
struct Registration(signal_hook::SigId);

impl Drop for Registration {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.0);
    }
}

/// A child handed to the orphan reaper.
#[derive(Debug)]
pub(crate) struct Orphan {
    pub(crate) pid: Pid,
    pub(crate) pidfd: Option<OwnedFd>,
}

/// Hands a child that still runs to the process-wide orphan reaper.
pub(crate) fn adopt(orphan: Orphan) {
    static REAPER: OnceLock<Mutex<Sender<Orphan>>> = OnceLock::new();
    let tx = REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("aioloop-reaper".into())
            .spawn(move || reap_orphans(rx));
        if spawned.is_err() {
            // Without a thread the orphans cannot be waited for; the channel
            // is closed by dropping the receiver with the failed closure.
        }
        Mutex::new(tx)
    });
    if let Ok(tx) = tx.lock() {
        let _ = tx.send(orphan);
    }
}

fn reap_orphans(rx: Receiver<Orphan>) {
    let mut orphans: Vec<Orphan> = Vec::new();
    loop {
        if orphans.is_empty() {
            match rx.recv() {
                Ok(o) => orphans.push(o),
                Err(_) => return,
            }
        }
        while let Ok(o) = rx.try_recv() {
            orphans.push(o);
        }
        orphans.retain(|o| {
            let reaped = match &o.pidfd {
                Some(fd) => try_reap_pidfd(fd.as_fd()),
                None => try_reap_pid(o.pid),
            };
            reaped.is_none()
        });
        if orphans.is_empty() {
            continue;
        }
        if orphans.iter().all(|o| o.pidfd.is_some()) {
            let mut fds: Vec<rustix::event::PollFd<'_>> = orphans
                .iter()
                .filter_map(|o| o.pidfd.as_ref())
                .map(|fd| rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN))
                .collect();
            let timeout = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
