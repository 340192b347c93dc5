//! Fd claims: the fds that a transport, a server or a pipe owns.
//!
//! asyncio refuses `add_reader`/`add_writer`/`remove_*` on the fd of a live
//! transport ("File descriptor 7 is used by transport <...>",
//! `_ensure_fd_no_transport`): replacing or removing the transport's own
//! watcher would silently break it. Here the owner *claims* its fd when it
//! takes it ([`EventLoop::claim_fd`]) and registers its watchers through
//! the returned [`FdClaim`]; the user's calls on a claimed fd get an
//! [`ErrorKind::InvalidState`] error naming the owner. Dropping the claim
//! (when the owner closes the fd) releases it.
//!
//! # Invariants
//! - **One owner per fd.** A claim on an fd that is claimed already (an fd
//!   number reused before the old owner let go of its claim) replaces the
//!   old claim; each claim carries a unique id, and releasing an old claim
//!   leaves a newer one in place.
//! - **Cheap when unused.** The check is one `HashMap` lookup, skipped while
//!   nothing is claimed; an owner's own calls skip it by id.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::event_loop::{EventLoop, WeakEventLoop};
use crate::io::Direction;
use crate::{ErrorKind, LoopError};

/// The claims of one loop: fd -> (claim id, owner's description).
#[derive(Default)]
pub(crate) struct Claims {
    by_fd: HashMap<RawFd, (u64, Rc<str>)>,
    next_id: u64,
}

impl Claims {
    /// Refuses the call unless `fd` is unclaimed or `claim` is its claim.
    pub(crate) fn check(&self, fd: RawFd, claim: Option<u64>) -> Result<(), LoopError> {
        if self.by_fd.is_empty() {
            return Ok(());
        }
        match self.by_fd.get(&fd) {
            Some((id, owner)) if Some(*id) != claim => Err(LoopError::new(
                ErrorKind::InvalidState,
                format!("File descriptor {fd} is used by {owner}"),
            )),
            _ => Ok(()),
        }
    }

    fn claim(&mut self, fd: RawFd, owner: Rc<str>) -> u64 {
        self.next_id += 1;
        self.by_fd.insert(fd, (self.next_id, owner));
        self.next_id
    }

    fn release(&mut self, fd: RawFd, id: u64) {
        if self.by_fd.get(&fd).is_some_and(|(mine, _)| *mine == id) {
            self.by_fd.remove(&fd);
        }
    }
}

impl EventLoop {
    /// Claims `fd` for `owner` until the returned [`FdClaim`] is dropped:
    /// meanwhile [`add_reader`](Self::add_reader), [`add_writer`](Self::add_writer)
    /// and the removals on `fd` are refused with an
    /// [`ErrorKind::InvalidState`] error, "File descriptor {fd} is used by
    /// {owner}" (asyncio's words, with `owner` such as `"transport <TCP
    /// transport fd=7>"`), and the owner registers through the claim. For
    /// the crates that build transports on the loop (loop-net): a transport,
    /// a server or a pipe claims its fd when it takes it and drops the claim
    /// when it closes the fd.
    pub fn claim_fd(&self, fd: RawFd, owner: impl Into<String>) -> FdClaim {
        let owner: Rc<str> = owner.into().into();
        let id = self.inner.io.borrow_mut().claims.claim(fd, owner.clone());
        FdClaim {
            lp: self.downgrade(),
            fd,
            id,
            owner,
        }
    }
}

/// An owner's hold on its fd (see [`EventLoop::claim_fd`]): the one way to
/// add and remove watchers on it. Dropping it releases the fd. It holds the
/// loop weakly: once the loop is gone, adding answers
/// [`ErrorKind::Closed`] and removing `Ok(false)`.
pub struct FdClaim {
    lp: WeakEventLoop,
    fd: RawFd,
    id: u64,
    owner: Rc<str>,
}

impl FdClaim {
    /// The claimed fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The loop, while it exists.
    pub(crate) fn event_loop(&self) -> Option<EventLoop> {
        self.lp.upgrade()
    }

    /// [`EventLoop::add_reader`] on the claimed fd, for its owner.
    pub fn add_reader(&self, callback: impl FnMut() + 'static) -> Result<(), LoopError> {
        self.add(Direction::Read, callback)
    }

    /// [`add_reader`](Self::add_reader), edge-triggered where the backend
    /// allows it (epoll); returns whether it is.
    ///
    /// Edge-triggered, the callback runs when the fd *becomes* readable
    /// instead of in every iteration while it stays readable: the kernel
    /// does not look at the fd again in each wait (a few percent of a
    /// busy server's CPU). The owner must then read again itself (say with
    /// [`call_soon`](EventLoop::call_soon)) after a read that filled its
    /// buffer or was interrupted, since no new report comes for data left
    /// unread. A report of a hang-up or an error turns the registration
    /// level-triggered for good, so that an EOF queued behind data is still
    /// reported; so does a writer registered on the same fd, while it is.
    /// Removing and adding the reader again (pausing) is safe: adding looks
    /// at the fd and reports it if it is readable.
    pub fn add_reader_edge(&self, callback: impl FnMut() + 'static) -> Result<bool, LoopError> {
        let lp = self.lp.upgrade().ok_or_else(LoopError::closed)?;
        lp.add_watcher_mode(self.fd, Direction::Read, callback, Some(self.id), true)
    }

    /// [`EventLoop::add_writer`] on the claimed fd, for its owner.
    pub fn add_writer(&self, callback: impl FnMut() + 'static) -> Result<(), LoopError> {
        self.add(Direction::Write, callback)
    }

    /// [`EventLoop::remove_reader`] on the claimed fd, for its owner.
    pub fn remove_reader(&self) -> Result<bool, LoopError> {
        self.remove(Direction::Read)
    }

    /// [`EventLoop::remove_writer`] on the claimed fd, for its owner.
    pub fn remove_writer(&self) -> Result<bool, LoopError> {
        self.remove(Direction::Write)
    }

    fn add(&self, dir: Direction, callback: impl FnMut() + 'static) -> Result<(), LoopError> {
        let lp = self.lp.upgrade().ok_or_else(LoopError::closed)?;
        lp.add_watcher(self.fd, dir, callback, Some(self.id))
    }

    fn remove(&self, dir: Direction) -> Result<bool, LoopError> {
        match self.lp.upgrade() {
            Some(lp) => lp.remove_watcher(self.fd, dir, Some(self.id)),
            None => Ok(false),
        }
    }
}

impl Drop for FdClaim {
    fn drop(&mut self) {
        if let Some(lp) = self.lp.upgrade() {
            if let Ok(mut io) = lp.inner.io.try_borrow_mut() {
                io.claims.release(self.fd, self.id);
            }
        }
    }
}

impl fmt::Debug for FdClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdClaim")
            .field("fd", &self.fd)
            .field("owner", &self.owner)
            .finish()
    }
}
