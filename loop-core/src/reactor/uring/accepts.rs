//! The completion path's listening sockets: one multishot `ACCEPT` per
//! listener, whose completions each carry a new connection's fd. The public
//! face is [`UringAccept`](crate::UringAccept) (uring_accept.rs); this is
//! the table behind it, borrowed only inside one reactor call.
//!
//! # One slot per listener
//! A slot of ops.rs's table holds the listener's fd, its handler (the
//! server), whether it wants to accept, and its accept in flight (at most
//! one). The next wait
//! arms a queued slot's `ACCEPT` (`IORING_ACCEPT_MULTISHOT`, the new fds
//! non-blocking and close-on-exec) in the same `io_uring_enter`. The
//! kernel then accepts every connection that arrives, one completion each,
//! until it ends the operation (a completion without `IORING_CQE_F_MORE`):
//! after a new fd (the completion ring was full, say) the slot re-arms
//! itself; after an error it waits for its handler, who hears of the error
//! and says when to accept again ([`start`](State::accept_start)), so the
//! server keeps asyncio's rules (a transient error is skipped, running out
//! of descriptors is reported once and retried a second later).
//!
//! # `user_data`
//! `generation << 32 | OP_TAG | ACCEPT_TAG | slot` (ops.rs): bit 31 marks
//! an operation (streams.rs), bit 29 an accept (slots stay below 2^28: bit
//! 28 marks a datagram receive, datagrams.rs),
//! the generation (never 0 or `u32::MAX`) a slot's listeners from each
//! other.
//!
//! # Who owns an accepted fd (no descriptor leaks)
//! The kernel installs the new fd in the process's table before it posts
//! the completion; from then on the fd is ours and exactly one place owns
//! it: the completion while it is queued as ready work, then the handler
//! ([`accepted`](crate::AcceptHandler::accepted) takes it as an `OwnedFd`).
//! Wherever nobody will take it, it is closed: reaped for a released
//! listener, delivered after its listener was released, still queued when
//! the loop closes (event_loop.rs discards it), or reaped by the loop's
//! close while it waits for the cancelled operations.
//!
//! # Release
//! Releasing a listener (its server closes the fd next) cancels its accept
//! and submits the cancellation at once, running the kernel's pending task
//! work: the operation holds a reference on the listening socket's file,
//! and the socket must really close with the fd (connections still in its
//! backlog are reset then, and no new connection completes). The slot
//! lives until the accept's final completion is reaped; fds it carries
//! meanwhile are closed. An accept points at no memory of ours, so nothing
//! else is at stake in the kernel.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use io_uring::{opcode, types};
use rustix::io::Errno;

use super::ops::Table;
use super::streams::OP_TAG;
use super::State;
use crate::reactor::Completed;
use crate::uring_accept::AcceptHandler;

/// Bit 29 of `user_data` (with [`OP_TAG`]): an accept's completion.
pub(super) const ACCEPT_TAG: u64 = 1 << 29;

/// The listeners (see the module docs).
pub(super) struct Accepts {
    pub(super) table: Table<dyn AcceptHandler, ()>,
    /// Whether the kernel has multishot accepts (probed once).
    supported: Option<bool>,
}

impl Default for Accepts {
    fn default() -> Self {
        Accepts {
            table: Table::new(OP_TAG | ACCEPT_TAG),
            supported: None,
        }
    }
}

impl Completed {
    /// Whether this is an accept's completion (accepts.rs).
    pub(crate) fn is_accept(&self) -> bool {
        is_accept(self.user_data)
    }
}

/// Whether `ud` is an accept's `user_data`.
pub(super) fn is_accept(ud: u64) -> bool {
    ud & (OP_TAG | ACCEPT_TAG) == OP_TAG | ACCEPT_TAG
}

/// Closes the fd a completion carries, when nobody will take it.
pub(crate) fn close_accepted(res: i32) {
    if res >= 0 {
        // SAFETY: a successful accept's result is a new fd the kernel
        // installed in this process for us; nothing else knows its number
        // (module docs: the one owner is the completion, which is dropped
        // here without being delivered).
        drop(unsafe { OwnedFd::from_raw_fd(res) });
    }
}

impl Accepts {
    /// Books one completion of an accept; appends it to `done` when its
    /// handler must hear of it, closes the fd it carries when none will.
    pub(super) fn reap_op(&mut self, ud: u64, res: i32, flags: u32, done: &mut Vec<Completed>) {
        let Some(r) = self.table.reap(ud, flags) else {
            close_accepted(res);
            return;
        };
        let canceled = res == -Errno::CANCELED.raw_os_error();
        if r.live && !canceled {
            done.push(Completed {
                user_data: ud,
                res,
                flags,
            });
        } else {
            close_accepted(res);
        }
        // After a new fd (the kernel ended the accept: a full completion
        // ring, say) or a cancellation, armed again; after an error, the
        // handler says when.
        let error = res < 0 && !canceled;
        self.table.after_reap(&r, !error, error);
    }
}

impl State {
    /// Takes a slot for the listening socket `fd` after probing, once, that
    /// the kernel has multishot accepts. Returns `(slot, generation)`.
    pub(crate) fn accept_open(
        &mut self,
        fd: RawFd,
        handler: Rc<dyn AcceptHandler>,
    ) -> io::Result<(u32, u32)> {
        if self.accepts.supported.is_none() {
            // Multishot accepts came with Linux 5.19, as did
            // `IORING_OP_SOCKET`, which the register probe can tell
            // (the multishot flag itself it cannot).
            let mut probe = io_uring::Probe::new();
            self.ring.submitter().register_probe(&mut probe)?;
            self.accepts.supported = Some(probe.is_supported(opcode::Socket::CODE));
        }
        if self.accepts.supported != Some(true) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks multishot accepts (Linux 5.19)",
            ));
        }
        self.accepts.table.open(fd, handler, ())
    }

    /// Starts accepting: the next wait arms the multishot accept (unless
    /// one is in the kernel).
    pub(crate) fn accept_start(&mut self, slot: u32, gen: u32) {
        self.accepts.table.start(slot, gen);
    }

    /// Whether the listener's accept is in the kernel or queued for it.
    pub(crate) fn accept_armed(&mut self, slot: u32, gen: u32) -> bool {
        self.accepts.table.armed(slot, gen)
    }

    /// Lets go of the listener (module docs, ops.rs).
    pub(crate) fn accept_release(
        &mut self,
        slot: u32,
        gen: u32,
    ) -> (Option<Rc<dyn AcceptHandler>>, io::Result<()>) {
        self.release_op(|st| &mut st.accepts.table, slot, gen)
    }

    /// The handler of an accept's completion; `None` when its listener was
    /// released since (the caller closes the fd).
    pub(crate) fn accept_delivery(&mut self, c: &Completed) -> Option<Rc<dyn AcceptHandler>> {
        self.accepts.table.slot_of(c.user_data)?.handler.clone()
    }

    /// Every accept handler, for the loop's close to drop outside the
    /// borrow (the accepts are cancelled when the reactor drops).
    pub(crate) fn accept_take_handlers(&mut self) -> Vec<Rc<dyn AcceptHandler>> {
        self.accepts.table.forget_handlers()
    }

    /// Writes the `ACCEPT` SQEs the queued slots need (called by the wait
    /// before it submits).
    pub(super) fn arm_accepts(&mut self) -> io::Result<()> {
        let flags =
            (rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC).bits() as i32;
        self.arm_table(
            |st| &mut st.accepts.table,
            |fd, ()| opcode::AcceptMulti::new(types::Fd(fd)).flags(flags).build(),
        )
    }
}
