//! The completion path's listening sockets: one multishot `ACCEPT` per
//! listener, whose completions each carry a new connection's fd. The public
//! face is [`UringAccept`](crate::UringAccept) (uring_accept.rs); this is
//! the table behind it, borrowed only inside one reactor call.
//!
//! # One slot per listener
//! A slot holds the listener's fd, its handler (the server), whether it
//! wants to accept, and its accept in flight (at most one). The next wait
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
//! `generation << 32 | OP_TAG | ACCEPT_TAG | slot`: bit 31 marks an
//! operation (streams.rs), bit 29 an accept (slots stay below 2^28: bit 28
//! marks a datagram receive, datagrams.rs),
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

use io_uring::{cqueue, opcode, types};
use rustix::io::Errno;

use super::streams::OP_TAG;
use super::{State, IGNORED};
use crate::reactor::Completed;
use crate::uring_accept::AcceptHandler;

/// Bit 29 of `user_data` (with [`OP_TAG`]): an accept's completion.
pub(super) const ACCEPT_TAG: u64 = 1 << 29;
const SLOT_MASK: u64 = ACCEPT_TAG - 1;
/// The highest accept slot: bit 28 stays clear (datagrams.rs).
const MAX_SLOT: u64 = (1 << 28) - 1;

struct Slot {
    gen: u32,
    fd: RawFd,
    /// `None` once released (only the accept in flight remains).
    handler: Option<Rc<dyn AcceptHandler>>,
    wanted: bool,
    /// The multishot accept in the kernel.
    op: Option<u64>,
    /// Its cancellation is submitted.
    cancelled: bool,
    /// The slot is in `Accepts::queued`.
    queued: bool,
}

/// The table (see the module docs).
#[derive(Default)]
pub(super) struct Accepts {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    next_gen: u32,
    /// Slots whose accept the next wait arms.
    queued: Vec<u32>,
    /// Slots in use.
    live: usize,
    /// The kernel lacks multishot accepts (probed once): `Some(false)`.
    supported: Option<bool>,
}

impl Completed {
    /// Whether this is an accept's completion (accepts.rs).
    pub(crate) fn is_accept(&self) -> bool {
        self.user_data & (OP_TAG | ACCEPT_TAG) == OP_TAG | ACCEPT_TAG
    }
}

/// Whether `ud` is an accept's `user_data`.
pub(super) fn is_accept(ud: u64) -> bool {
    ud & (OP_TAG | ACCEPT_TAG) == OP_TAG | ACCEPT_TAG
}

fn ud_of(slot: u32, gen: u32) -> u64 {
    (u64::from(gen) << 32) | OP_TAG | ACCEPT_TAG | u64::from(slot)
}

fn decode(ud: u64) -> (u32, u32) {
    ((ud & SLOT_MASK) as u32, (ud >> 32) as u32)
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
    fn get_mut(&mut self, slot: u32, gen: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.gen == gen)
    }

    fn queue(&mut self, slot: u32) {
        if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
            if !s.queued {
                s.queued = true;
                self.queued.push(slot);
            }
        }
    }

    fn free_if_done(&mut self, slot: u32) {
        let done = matches!(
            self.slots.get(slot as usize),
            Some(Some(s)) if s.handler.is_none() && s.op.is_none()
        );
        if done {
            self.slots[slot as usize] = None;
            self.free.push(slot);
            self.live -= 1;
        }
    }

    /// Books one completion of an accept; appends it to `done` when its
    /// handler must hear of it, closes the fd it carries when none will.
    pub(super) fn reap_op(&mut self, ud: u64, res: i32, flags: u32, done: &mut Vec<Completed>) {
        let (slot, gen) = decode(ud);
        let Some(s) = self.get_mut(slot, gen).filter(|s| s.op == Some(ud)) else {
            // Cannot be (a slot lives while its accept does).
            close_accepted(res);
            return;
        };
        let more = cqueue::more(flags);
        if !more {
            s.op = None;
            s.cancelled = false;
        }
        let live = s.handler.is_some();
        let mut rearm = false;
        if res >= 0 {
            if live {
                done.push(Completed {
                    user_data: ud,
                    res,
                    flags,
                });
            } else {
                close_accepted(res);
            }
            rearm = !more;
        } else if res != -Errno::CANCELED.raw_os_error() {
            // The kernel ended the accept with an error: the handler says
            // when to accept again.
            s.wanted = false;
            if live {
                done.push(Completed {
                    user_data: ud,
                    res,
                    flags,
                });
            }
        } else {
            rearm = true;
        }
        if rearm && live && s.wanted && s.op.is_none() {
            self.queue(slot);
        }
        self.free_if_done(slot);
    }

    /// Whether any slot is in use (the loop must poll for its completions).
    pub(super) fn is_busy(&self) -> bool {
        self.live > 0
    }

    /// Whether any accept is in the kernel.
    pub(super) fn in_kernel(&self) -> bool {
        self.slots.iter().flatten().any(|s| s.op.is_some())
    }

    /// Drops the handlers (the loop's close): what is reaped from now on
    /// is closed.
    pub(super) fn forget_handlers(&mut self) -> Vec<Rc<dyn AcceptHandler>> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut().flatten() {
            out.extend(s.handler.take());
            s.wanted = false;
        }
        out
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
        let a = &mut self.accepts;
        let slot = match a.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(a.slots.len())
                    .ok()
                    .filter(|&n| u64::from(n) <= MAX_SLOT)
                    .ok_or_else(|| io::Error::from(Errno::NOSPC))?;
                a.slots.push(None);
                slot
            }
        };
        a.next_gen = match a.next_gen.wrapping_add(1) {
            0 | u32::MAX => 1,
            g => g,
        };
        a.slots[slot as usize] = Some(Slot {
            gen: a.next_gen,
            fd,
            handler: Some(handler),
            wanted: false,
            op: None,
            cancelled: false,
            queued: false,
        });
        a.live += 1;
        Ok((slot, a.next_gen))
    }

    /// Starts accepting: the next wait arms the multishot accept (unless
    /// one is in the kernel).
    pub(crate) fn accept_start(&mut self, slot: u32, gen: u32) {
        let Some(s) = self.accepts.get_mut(slot, gen) else {
            return;
        };
        s.wanted = true;
        if s.op.is_none() {
            self.accepts.queue(slot);
        }
    }

    /// Whether the listener's accept is in the kernel or queued for it.
    pub(crate) fn accept_armed(&mut self, slot: u32, gen: u32) -> bool {
        self.accepts
            .get_mut(slot, gen)
            .is_some_and(|s| s.op.is_some() || (s.wanted && s.queued))
    }

    /// Lets go of the listener: its handler is returned (for the caller to
    /// drop outside any borrow), its accept cancelled and the cancellation
    /// submitted now (module docs).
    pub(crate) fn accept_release(
        &mut self,
        slot: u32,
        gen: u32,
    ) -> (Option<Rc<dyn AcceptHandler>>, io::Result<()>) {
        let Some(s) = self.accepts.get_mut(slot, gen) else {
            return (None, Ok(()));
        };
        let handler = s.handler.take();
        s.wanted = false;
        let mut res = Ok(());
        if let Some(ud) = s.op {
            let first = !s.cancelled;
            s.cancelled = true;
            if first {
                res = self.push(&opcode::AsyncCancel::new(ud).build().user_data(IGNORED));
            }
            if let Err(e) = self.submit() {
                res = Err(e);
            }
        }
        self.accepts.free_if_done(slot);
        (handler, res)
    }

    /// The handler of an accept's completion; `None` when its listener was
    /// released since (the caller closes the fd).
    pub(crate) fn accept_delivery(&mut self, c: &Completed) -> Option<Rc<dyn AcceptHandler>> {
        let (slot, gen) = decode(c.user_data);
        self.accepts.get_mut(slot, gen)?.handler.clone()
    }

    /// Every accept handler, for the loop's close to drop outside the
    /// borrow (the accepts are cancelled when the reactor drops).
    pub(crate) fn accept_take_handlers(&mut self) -> Vec<Rc<dyn AcceptHandler>> {
        self.accepts.forget_handlers()
    }

    /// Writes the `ACCEPT` SQEs the queued slots need (called by the wait
    /// before it submits).
    pub(super) fn arm_accepts(&mut self) -> io::Result<()> {
        if self.accepts.queued.is_empty() {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.accepts.queued);
        let mut res = Ok(());
        for &slot in &queued {
            let Some(Some(s)) = self.accepts.slots.get_mut(slot as usize) else {
                continue;
            };
            s.queued = false;
            if s.handler.is_none() || !s.wanted || s.op.is_some() {
                continue;
            }
            let (fd, ud) = (s.fd, ud_of(slot, s.gen));
            let flags = (rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC)
                .bits() as i32;
            let sqe = opcode::AcceptMulti::new(types::Fd(fd))
                .flags(flags)
                .build()
                .user_data(ud);
            match self.push(&sqe) {
                Ok(()) => {
                    if let Some(Some(s)) = self.accepts.slots.get_mut(slot as usize) {
                        s.op = Some(ud);
                        s.cancelled = false;
                    }
                }
                Err(e) => {
                    self.accepts.queue(slot);
                    res = Err(e);
                }
            }
        }
        let mut queued = queued;
        queued.clear();
        if self.accepts.queued.is_empty() {
            self.accepts.queued = queued;
        }
        res
    }
}
