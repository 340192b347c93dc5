//! [`UringSlot`]: what each handle of the completion path
//! ([`UringStream`](crate::UringStream), [`UringAccept`](crate::UringAccept),
//! [`UringDatagram`](crate::UringDatagram)) holds: its loop (weakly), its
//! slot and generation in the io_uring backend's tables, and its fd. One
//! way to open a slot (the backend missing or refusing: one debug line,
//! readiness instead), to run a call on the backend's state, and to release
//! it with the handler dropped after the borrow ends.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use crate::event_loop::WeakEventLoop;
use crate::fd_claim::FdClaim;
use crate::uring_stream::with_state;

/// The io_uring backend's state, as the completion path's calls see it.
#[cfg(target_os = "linux")]
pub(crate) type UringState = crate::reactor::uring::State;
/// The io_uring backend's state, as the completion path's calls see it.
#[cfg(not(target_os = "linux"))]
pub(crate) type UringState = ();

/// A handle's place in the backend's tables (see the module docs).
pub(crate) struct UringSlot {
    lp: WeakEventLoop,
    slot: u32,
    gen: u32,
    fd: RawFd,
}

impl UringSlot {
    /// Opens a slot for `claim`'s fd with `open`; `None` when the loop
    /// does not run the io_uring backend, or (with one debug line saying
    /// that `what` is unavailable) when `open` fails.
    pub(crate) fn open(
        claim: &FdClaim,
        what: &str,
        open: impl FnOnce(&mut UringState, RawFd) -> io::Result<(u32, u32)>,
    ) -> Option<UringSlot> {
        let lp = claim.event_loop()?;
        let fd = claim.fd();
        match with_state(&lp, |st| open(st, fd))? {
            Ok((slot, gen)) => Some(UringSlot {
                lp: lp.downgrade(),
                slot,
                gen,
                fd,
            }),
            Err(e) => {
                crate::debug::debug_line(
                    lp.get_debug(),
                    &format!("io_uring {what} unavailable ({e}); using readiness"),
                );
                None
            }
        }
    }

    /// Runs `f` on the backend's state with this slot; `None` once the
    /// loop is gone.
    pub(crate) fn call<R>(&self, f: impl FnOnce(&mut UringState, u32, u32) -> R) -> Option<R> {
        let lp = self.lp.upgrade()?;
        with_state(&lp, |st| f(st, self.slot, self.gen))
    }

    /// Releases the slot with `f`, which returns what the loop let go of
    /// (the handler) and the outcome: that is dropped after the borrow
    /// ends, since dropping a handler may run user code. `Ok` once the
    /// loop is gone.
    pub(crate) fn release<T>(
        &self,
        f: impl FnOnce(&mut UringState, u32, u32) -> (T, io::Result<()>),
    ) -> io::Result<()> {
        let Some((released, res)) = self.call(f) else {
            return Ok(());
        };
        drop(released);
        res
    }

    /// The handle's `Debug`: its name, fd and slot.
    pub(crate) fn fmt(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("fd", &self.fd)
            .field("slot", &self.slot)
            .finish()
    }
}
