//! The completion path for listening sockets on the io_uring backend:
//! [`UringAccept`] and the [`AcceptHandler`] it reports to. For the crates
//! that build servers on the loop (loop-net's `Server`).
//!
//! # Why
//! Through readiness, a connection costs a wake-up of the listener's
//! watcher and an `accept4` (plus one that fails with `EAGAIN` at the end
//! of each burst). Here one multishot accept per listener lets the kernel
//! accept every connection as it arrives: each new fd comes as a
//! completion, read with whatever else the loop's wait found, and no
//! system call is made per connection for accepting it.
//!
//! # The contract
//! - [`FdClaim::uring_accept`] opens the path for the claimed fd (a
//!   listening stream socket) when the loop runs the io_uring backend
//!   (`None` otherwise, or when the kernel lacks multishot accepts: the
//!   server then uses readiness).
//! - [`start`](UringAccept::start) arms the accept with the next wait.
//!   Each accepted connection is queued as ready work, in the order the
//!   kernel posted it, and delivered in step 4 with no borrow of the loop
//!   held: [`accepted`](AcceptHandler::accepted) takes the fd
//!   (non-blocking, close-on-exec). When the kernel ends the accept with
//!   an error, [`accept_failed`](AcceptHandler::accept_failed) hears it
//!   and nothing is accepted until the next `start`.
//! - [`release`](UringAccept::release) (and `Drop`) cancels the accept and
//!   submits the cancellation at once, so the caller may close the
//!   listening fd right after and the socket really closes. A connection
//!   the kernel accepted before the cancellation took effect is closed, as
//!   is one still queued when the loop closes: no fd leaks (the ownership
//!   argument is in loop-core's `reactor/uring/accepts.rs`).

use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;

use crate::event_loop::EventLoop;
use crate::fd_claim::FdClaim;
use crate::reactor::Completed;
use crate::uring_slot::{UringSlot, UringState};
use crate::uring_stream::with_state;

/// What a listener on the completion path is told (see the module docs).
/// Each method runs as the loop's ready work.
pub trait AcceptHandler {
    /// A new connection: its fd, non-blocking and close-on-exec, now the
    /// handler's.
    fn accepted(&self, fd: OwnedFd);
    /// The kernel ended the accept with `error` (`EMFILE`,
    /// `ECONNABORTED`...): nothing more is accepted until
    /// [`UringAccept::start`].
    fn accept_failed(&self, error: io::Error);
}

/// A listening socket on the completion path (see the module docs).
/// Dropping it releases the listener.
pub struct UringAccept {
    slot: UringSlot,
}

impl FdClaim {
    /// Opens the completion path for the claimed fd (a listening stream
    /// socket), reporting to `handler`; `None` when the loop does not run
    /// the io_uring backend or the kernel lacks multishot accepts (the
    /// caller then uses readiness).
    pub fn uring_accept(&self, handler: Rc<dyn AcceptHandler>) -> Option<UringAccept> {
        let slot = UringSlot::open(self, "multishot accept", |st, fd| open(st, fd, handler))?;
        Some(UringAccept { slot })
    }
}

#[cfg(target_os = "linux")]
fn open(st: &mut UringState, fd: RawFd, handler: Rc<dyn AcceptHandler>) -> io::Result<(u32, u32)> {
    st.accept_open(fd, handler)
}

#[cfg(not(target_os = "linux"))]
fn open(_: &mut UringState, _: RawFd, _: Rc<dyn AcceptHandler>) -> io::Result<(u32, u32)> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

impl UringAccept {
    /// Starts accepting (a multishot accept, armed by the next wait);
    /// nothing happens while one is armed.
    pub fn start(&self) {
        #[cfg(target_os = "linux")]
        self.slot.call(|st, slot, gen| st.accept_start(slot, gen));
    }

    /// Whether the accept is in the kernel or armed by the next wait.
    pub fn is_armed(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self
            .slot
            .call(|st, slot, gen| st.accept_armed(slot, gen))
            .unwrap_or(false);
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Releases the listener: its accept is cancelled (submitted now: the
    /// fd may be closed next), and the loop lets go of the handler.
    /// Idempotent.
    pub fn release(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        return self
            .slot
            .release(|st, slot, gen| st.accept_release(slot, gen));
        #[cfg(not(target_os = "linux"))]
        Ok(())
    }
}

impl Drop for UringAccept {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl fmt::Debug for UringAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.slot.fmt("UringAccept", f)
    }
}

impl EventLoop {
    /// Step 4's delivery of an accept's completion (module docs): the
    /// handler is cloned out, the borrow ends, then the handler runs; the
    /// fd is closed when its listener was released meanwhile.
    #[cfg(target_os = "linux")]
    pub(crate) fn deliver_accept(&self, c: Completed) {
        let handler = with_state(self, |st| st.accept_delivery(&c)).flatten();
        let Some(handler) = handler else {
            crate::reactor::uring::close_accepted(c.res);
            return;
        };
        if c.res >= 0 {
            // SAFETY: a successful accept's result is a new fd the kernel
            // installed for us, owned by this completion alone (accepts.rs),
            // which is consumed here.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(c.res) };
            handler.accepted(fd);
        } else {
            handler.accept_failed(io::Error::from_raw_os_error(-c.res));
        }
    }

    /// A completion the loop's close drops undelivered: an accepted fd in
    /// it is closed (accepts.rs).
    pub(crate) fn discard_completion(&self, c: Completed) {
        #[cfg(target_os = "linux")]
        if c.is_accept() {
            crate::reactor::uring::close_accepted(c.res);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = c;
    }

    /// Every accept handler, for `close` to drop outside the borrow.
    pub(crate) fn take_accept_handlers(&self) -> Vec<Rc<dyn AcceptHandler>> {
        #[cfg(target_os = "linux")]
        {
            with_state(self, |st| st.accept_take_handlers()).unwrap_or_default()
        }
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }
}
