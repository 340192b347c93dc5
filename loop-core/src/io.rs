//! File descriptor readiness: `add_reader`, `add_writer` and their removal.
//!
//! # Design
//! Each watched fd has one slot in a slab; the slab index is the poller key.
//! A slot holds at most one reader and one writer, each an `Rc<dyn Watcher>`
//! (one allocation: the closure plus a `cancelled` flag). The poller is
//! level-triggered, so a reader runs in every iteration while its fd stays
//! readable, as in asyncio; nothing is re-armed per event.
//!
//! # Edge-triggered readers
//! An owner may register its reader edge-triggered
//! ([`FdClaim::add_reader_edge`](crate::FdClaim::add_reader_edge); the
//! socket transport does): on epoll the kernel then skips the re-check of
//! the fd in every wait while it stays readable. The registration is
//! level-triggered again while a writer shares the fd, and for good once a
//! report says the peer hung up or the fd has an error (`dispatch` turns
//! it, before the reader runs), so that an EOF queued behind data is still
//! reported. The user's `add_reader` is always level-triggered.
//!
//! When the poll reports a slot ready, the loop clones the watcher `Rc` into
//! the ready queue; it runs in step 4 of the iteration with every other ready
//! callback. Removing or replacing a watcher cancels the old `Rc`, so a
//! readiness report already queued for it is skipped, exactly as asyncio
//! cancels the old `Handle`. The registry's `RefCell` is never borrowed while
//! a watcher runs, so a callback may add or remove any watcher, its own
//! included.
//!
//! An fd that a transport, a server or a pipe owns is *claimed* (see
//! `fd_claim.rs`): the user's `add_*`/`remove_*` on it are refused, as
//! asyncio's `_ensure_fd_no_transport` refuses them; the owner registers
//! through its [`FdClaim`](crate::FdClaim).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

use crate::event_loop::EventLoop;
use crate::reactor::{Interest, Readiness};
use crate::ready_queue::Ready;
use crate::{ErrorKind, LoopError};

/// A registered reader or writer callback.
pub(crate) trait Watcher {
    fn fire(&self);
    fn cancel(&self);
    fn is_cancelled(&self) -> bool;
}

struct WatcherCell<F> {
    cancelled: Cell<bool>,
    f: RefCell<Option<F>>,
}

impl<F: FnMut()> Watcher for WatcherCell<F> {
    #[inline]
    fn fire(&self) {
        if self.cancelled.get() {
            return;
        }
        // A callback cannot re-enter itself (running the loop from a callback
        // is refused), so the borrow only fails in that impossible case.
        if let Ok(mut f) = self.f.try_borrow_mut() {
            if let Some(f) = f.as_mut() {
                f();
            }
        }
    }

    fn cancel(&self) {
        self.cancelled.set(true);
        // Drop the closure now unless it is the one running (a callback that
        // removes its own fd); then it goes with the last `Rc`.
        let old = self.f.try_borrow_mut().ok().and_then(|mut f| f.take());
        drop(old);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }
}

type WatcherRc = Rc<dyn Watcher>;

/// What `take_all` hands back per fd: the fd, its poller key, its watchers.
pub(crate) type Registration = (RawFd, usize, Vec<WatcherRc>);

/// The file descriptor argument of `add_reader` and friends: a raw fd number
/// (asyncio takes an int), a [`BorrowedFd`], or a *reference* to anything
/// with an fd (`&TcpStream`, `&UnixStream`, `&OwnedFd`...).
///
/// Owned sockets are deliberately not accepted by value: moving one into
/// `add_reader` would close it at the end of the call while still registered.
pub trait FileDescriptor {
    /// The fd number.
    fn raw_fd(&self) -> RawFd;
}

impl FileDescriptor for RawFd {
    fn raw_fd(&self) -> RawFd {
        *self
    }
}

impl FileDescriptor for BorrowedFd<'_> {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl<T: AsRawFd + ?Sized> FileDescriptor for &T {
    fn raw_fd(&self) -> RawFd {
        (**self).as_raw_fd()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Direction {
    Read,
    Write,
}

struct FdEntry {
    fd: RawFd,
    reader: Option<Rc<dyn Watcher>>,
    writer: Option<Rc<dyn Watcher>>,
    /// The reader asked for edge triggering and the backend honours it.
    edge: bool,
    /// An edge-triggered report said the peer hung up (or an error): the
    /// registration stays level-triggered from then on.
    hup: bool,
}

impl FdEntry {
    fn new(fd: RawFd) -> FdEntry {
        FdEntry {
            fd,
            reader: None,
            writer: None,
            edge: false,
            hup: false,
        }
    }

    fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
            edge: self.edge && self.reader.is_some() && self.writer.is_none() && !self.hup,
        }
    }

    fn slot(&mut self, dir: Direction) -> &mut Option<Rc<dyn Watcher>> {
        match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }
}

/// The slab of watched fds.
#[derive(Default)]
pub(crate) struct FdRegistry {
    slots: Vec<Option<FdEntry>>,
    free: Vec<usize>,
    by_fd: HashMap<RawFd, usize>,
    /// The fds that a transport, a server or a pipe owns (see `fd_claim.rs`).
    pub(crate) claims: crate::fd_claim::Claims,
}

impl FdRegistry {
    /// Number of fds registered with the poller.
    pub(crate) fn len(&self) -> usize {
        self.by_fd.len()
    }

    /// Queues the watchers of every readiness report. An edge-triggered
    /// registration whose report says the peer hung up turns
    /// level-triggered here (one `epoll_ctl`, once per connection).
    pub(crate) fn dispatch(
        &mut self,
        events: &[Readiness],
        reactor: &crate::reactor::Reactor,
        mut push: impl FnMut(Ready),
    ) {
        for ev in events {
            let Some(Some(entry)) = self.slots.get_mut(ev.key) else {
                continue;
            };
            if ev.hup && entry.interest().edge {
                entry.hup = true;
                // Should this fail (the fd closed behind our back), the
                // reader still runs now and meets the error.
                let _ = reactor.modify(entry.fd, ev.key, entry.interest());
            }
            if ev.readable {
                if let Some(w) = &entry.reader {
                    push(Ready::Io(w.clone()));
                }
            }
            if ev.writable {
                if let Some(w) = &entry.writer {
                    push(Ready::Io(w.clone()));
                }
            }
        }
    }

    /// Empties the registry; the caller deletes the fds from the poller and
    /// drops the watchers outside the borrow.
    pub(crate) fn take_all(&mut self) -> Vec<Registration> {
        self.by_fd.clear();
        self.free.clear();
        self.slots
            .drain(..)
            .enumerate()
            .filter_map(|(key, e)| Some((key, e?)))
            .map(|(key, e)| (e.fd, key, e.reader.into_iter().chain(e.writer).collect()))
            .collect()
    }
}

fn check_fd(fd: RawFd, what: &str) -> Result<(), LoopError> {
    if fd < 0 {
        return Err(LoopError::new(
            ErrorKind::InvalidArgument,
            format!("{what}: invalid file descriptor {fd}"),
        ));
    }
    Ok(())
}

impl EventLoop {
    /// Runs `callback` on the loop whenever `fd` is readable, until
    /// [`remove_reader`](Self::remove_reader).
    ///
    /// Level-triggered, like asyncio: the callback runs once in every loop
    /// iteration while the fd stays readable, so it need not drain the fd.
    /// Adding a reader for an fd that has one replaces the callback. `fd` is a
    /// raw fd number or a reference to a socket ([`FileDescriptor`]). The fd
    /// stays owned by the caller, who must remove the reader before closing it
    /// (as in asyncio). An fd that a transport, a server or a pipe owns is
    /// refused with [`ErrorKind::InvalidState`] ("File descriptor 7 is used
    /// by transport ..."), as are `remove_*` on it, until it closes. An fd
    /// that is not open gives an [`ErrorKind::Io`]
    /// error (`EBADF`); one that cannot be polled (a regular file) gives
    /// `EPERM`; a negative one gives [`ErrorKind::InvalidArgument`].
    ///
    /// ```
    /// use loop_core::EventLoop;
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// let lp = EventLoop::new().unwrap();
    /// let (mut a, b) = UnixStream::pair().unwrap();
    /// b.set_nonblocking(true).unwrap();
    /// a.write_all(b"ping").unwrap();
    /// let lp2 = lp.clone();
    /// let mut b2 = b.try_clone().unwrap();
    /// lp.add_reader(b.as_raw_fd(), move || {
    ///     let mut buf = [0u8; 4];
    ///     assert_eq!(b2.read(&mut buf).unwrap(), 4);
    ///     lp2.remove_reader(b2.as_raw_fd()).unwrap();
    ///     lp2.stop();
    /// }).unwrap();
    /// lp.run_forever().unwrap();
    /// ```
    #[doc(alias = "loop.add_reader")]
    pub fn add_reader(
        &self,
        fd: impl FileDescriptor,
        callback: impl FnMut() + 'static,
    ) -> Result<(), LoopError> {
        self.add_watcher(fd.raw_fd(), Direction::Read, callback, None)
    }

    /// Stops watching `fd` for readability; returns whether a reader was
    /// registered. Safe to call from inside the reader itself. On a closed
    /// loop it returns `Ok(false)`.
    #[doc(alias = "loop.remove_reader")]
    pub fn remove_reader(&self, fd: impl FileDescriptor) -> Result<bool, LoopError> {
        self.remove_watcher(fd.raw_fd(), Direction::Read, None)
    }

    /// Runs `callback` on the loop whenever `fd` is writable, until
    /// [`remove_writer`](Self::remove_writer). Level-triggered; the same rules
    /// as [`add_reader`](Self::add_reader).
    #[doc(alias = "loop.add_writer")]
    pub fn add_writer(
        &self,
        fd: impl FileDescriptor,
        callback: impl FnMut() + 'static,
    ) -> Result<(), LoopError> {
        self.add_watcher(fd.raw_fd(), Direction::Write, callback, None)
    }

    /// Stops watching `fd` for writability; returns whether a writer was
    /// registered.
    #[doc(alias = "loop.remove_writer")]
    pub fn remove_writer(&self, fd: impl FileDescriptor) -> Result<bool, LoopError> {
        self.remove_watcher(fd.raw_fd(), Direction::Write, None)
    }

    /// Whether a reader is registered for `fd` (for tests and diagnostics:
    /// it asks without touching anything, on a claimed fd too).
    pub fn has_reader(&self, fd: impl FileDescriptor) -> bool {
        self.has_watcher(fd.raw_fd(), Direction::Read)
    }

    /// Whether a writer is registered for `fd` (for tests and diagnostics,
    /// as [`has_reader`](Self::has_reader)).
    pub fn has_writer(&self, fd: impl FileDescriptor) -> bool {
        self.has_watcher(fd.raw_fd(), Direction::Write)
    }

    fn has_watcher(&self, fd: RawFd, dir: Direction) -> bool {
        let reg = self.inner.io.borrow();
        let Some(Some(entry)) = reg.by_fd.get(&fd).map(|&key| &reg.slots[key]) else {
            return false;
        };
        match dir {
            Direction::Read => entry.reader.is_some(),
            Direction::Write => entry.writer.is_some(),
        }
    }

    /// `claim`: the id of the caller's claim on `fd` (an owner registering
    /// its own fd), `None` for the user's calls, refused on a claimed fd.
    pub(crate) fn add_watcher(
        &self,
        fd: RawFd,
        dir: Direction,
        callback: impl FnMut() + 'static,
        claim: Option<u64>,
    ) -> Result<(), LoopError> {
        self.add_watcher_mode(fd, dir, callback, claim, false)
            .map(|_| ())
    }

    /// [`add_watcher`](Self::add_watcher), edge-triggered if `edge` (a
    /// reader only) and the backend honours it; returns whether it does.
    pub(crate) fn add_watcher_mode(
        &self,
        fd: RawFd,
        dir: Direction,
        callback: impl FnMut() + 'static,
        claim: Option<u64>,
        edge: bool,
    ) -> Result<bool, LoopError> {
        let watcher: WatcherRc = Rc::new(WatcherCell {
            cancelled: Cell::new(false),
            f: RefCell::new(Some(callback)),
        });
        self.add_watcher_rc(fd, dir, watcher, claim, edge)
    }

    /// The body of [`add_watcher_mode`](Self::add_watcher_mode), once per
    /// program rather than once per callback type.
    fn add_watcher_rc(
        &self,
        fd: RawFd,
        dir: Direction,
        watcher: WatcherRc,
        claim: Option<u64>,
        edge: bool,
    ) -> Result<bool, LoopError> {
        let edge = edge && dir == Direction::Read && self.inner.reactor.supports_edge();
        let what = match dir {
            Direction::Read => "add_reader",
            Direction::Write => "add_writer",
        };
        self.check_open()?;
        check_fd(fd, what)?;
        self.inner.io.borrow().claims.check(fd, claim)?;
        let inner = &self.inner;
        // Whatever leaves the registry is dropped after the borrow ends.
        let outcome: Result<Option<WatcherRc>, (LoopError, WatcherRc)> = {
            let mut guard = inner.io.borrow_mut();
            let reg = &mut *guard;
            if let Some(&key) = reg.by_fd.get(&fd) {
                let entry = reg.slots[key].as_mut().expect("registered slot");
                let before = entry.interest();
                let old_edge = entry.edge;
                if dir == Direction::Read {
                    entry.edge = edge;
                }
                let old = entry.slot(dir).replace(watcher);
                let after = entry.interest();
                match (before != after).then(|| inner.reactor.modify(fd, key, after)) {
                    Some(Err(e)) => {
                        // Put things back as they were.
                        entry.edge = old_edge;
                        let new = std::mem::replace(entry.slot(dir), old).expect("just set");
                        Err((LoopError::io(format!("{what}(fd={fd})"), e), new))
                    }
                    _ => Ok(old),
                }
            } else {
                let key = reg.free.pop().unwrap_or(reg.slots.len());
                let mut entry = FdEntry::new(fd);
                entry.edge = edge;
                *entry.slot(dir) = Some(watcher);
                match inner.reactor.add(fd, key, entry.interest()) {
                    Err(e) => {
                        if key < reg.slots.len() {
                            reg.free.push(key);
                        }
                        let new = entry.slot(dir).take().expect("just set");
                        Err((LoopError::io(format!("{what}(fd={fd})"), e), new))
                    }
                    Ok(()) => {
                        if key == reg.slots.len() {
                            reg.slots.push(Some(entry));
                        } else {
                            reg.slots[key] = Some(entry);
                        }
                        reg.by_fd.insert(fd, key);
                        Ok(None)
                    }
                }
            }
        };
        let replaced = match outcome {
            Ok(replaced) => replaced,
            Err((err, rejected)) => {
                rejected.cancel();
                return Err(err);
            }
        };
        // Cancel (and drop) the replaced callback outside the borrow.
        if let Some(old) = replaced {
            old.cancel();
        }
        Ok(edge)
    }

    /// `claim` as for [`add_watcher`](Self::add_watcher).
    pub(crate) fn remove_watcher(
        &self,
        fd: RawFd,
        dir: Direction,
        claim: Option<u64>,
    ) -> Result<bool, LoopError> {
        if self.is_closed() {
            return Ok(false);
        }
        check_fd(
            fd,
            match dir {
                Direction::Read => "remove_reader",
                Direction::Write => "remove_writer",
            },
        )?;
        let inner = &self.inner;
        let (removed, orphan) = {
            let mut reg = inner.io.borrow_mut();
            let reg = &mut *reg;
            reg.claims.check(fd, claim)?;
            let Some(&key) = reg.by_fd.get(&fd) else {
                return Ok(false);
            };
            let entry = reg.slots[key].as_mut().expect("registered slot");
            let Some(old) = entry.slot(dir).take() else {
                return Ok(false);
            };
            if dir == Direction::Read {
                entry.edge = false;
            }
            let interest = entry.interest();
            let mut orphan = None;
            if interest.is_empty() {
                // The fd may already be closed (EBADF) or closed and gone from
                // the epoll set (ENOENT); either way it is no longer watched.
                let _ = inner.reactor.delete(fd, key);
                reg.slots[key] = None;
                reg.free.push(key);
                reg.by_fd.remove(&fd);
            } else if inner.reactor.modify(fd, key, interest).is_err() {
                // The fd was closed behind our back: forget it entirely.
                let _ = inner.reactor.delete(fd, key);
                orphan = reg.slots[key].take().and_then(|e| e.reader.or(e.writer));
                reg.free.push(key);
                reg.by_fd.remove(&fd);
            }
            (old, orphan)
        };
        removed.cancel();
        if let Some(other) = orphan {
            other.cancel();
        }
        Ok(true)
    }

    /// Deletes every fd from the poller and hands back every watcher, for
    /// close to cancel outside the borrow.
    pub(crate) fn clear_watchers(&self) -> Vec<Rc<dyn Watcher>> {
        let all = self.inner.io.borrow_mut().take_all();
        let mut out = Vec::with_capacity(all.len());
        for (fd, key, watchers) in all {
            let _ = self.inner.reactor.delete(fd, key);
            out.extend(watchers);
        }
        out
    }
}
