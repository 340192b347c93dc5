//! The table shared by the completion path's sockets that keep one
//! multishot operation each: listeners (accepts.rs) and datagram sockets
//! (datagrams.rs). Each kind has its own table, with its own handler type
//! and its own `user_data` tag.
//!
//! # One slot per socket
//! A slot holds the socket's fd, its handler, whether it wants its
//! operation, the operation in the kernel (at most one: a new one is armed
//! only after the final completion of the last, so completions arrive in
//! order) and what the kind keeps beside it (`extra`). The next wait arms
//! the queued slots ([`State::arm_table`]) in its own `io_uring_enter`.
//! After the kernel ends an operation (a completion without
//! `IORING_CQE_F_MORE`), the kind decides whether the slot is armed again
//! ([`Table::after_reap`]).
//!
//! # `user_data`
//! `generation << 32 | tag | slot`, the tag holding bit 31 (an operation,
//! streams.rs) and the kind's bit; slots stay below 2^28, clear of every
//! kind's bit. The generation (never 0 or `u32::MAX`) tells a slot's
//! sockets from each other.
//!
//! # Release
//! Releasing a socket (its owner closes the fd next) hands back the
//! handler, cancels the operation and submits the cancellation at once
//! ([`State::release_op`]): the operation holds a reference on the
//! socket's file, and the socket must really close with the fd. The slot,
//! with its `extra`, lives until the operation's final completion is reaped.

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use io_uring::{cqueue, opcode, squeue};
use rustix::io::Errno;

use super::{State, IGNORED};

/// Slots stay below 2^28: bits 28 to 30 tell the kinds apart.
const MAX_SLOT: u64 = (1 << 28) - 1;

pub(super) struct Slot<H: ?Sized, X> {
    gen: u32,
    pub(super) fd: RawFd,
    /// `None` once released (only the operation in flight remains).
    pub(super) handler: Option<Rc<H>>,
    pub(super) wanted: bool,
    /// The operation in the kernel.
    pub(super) op: Option<u64>,
    /// Its cancellation is submitted.
    cancelled: bool,
    /// The slot is in `Table::queued`.
    queued: bool,
    /// What the kind keeps beside the operation.
    pub(super) extra: X,
}

/// One kind's table (see the module docs).
pub(super) struct Table<H: ?Sized, X> {
    slots: Vec<Option<Slot<H, X>>>,
    free: Vec<u32>,
    next_gen: u32,
    /// Slots whose operation the next wait arms.
    queued: Vec<u32>,
    /// Slots in use.
    live: usize,
    /// The kind's `user_data` bits.
    tag: u64,
}

/// A completion booked by [`Table::reap`].
pub(super) struct Reaped {
    pub(super) slot: u32,
    /// The kernel ended the operation.
    pub(super) last: bool,
    /// The socket's handler still listens.
    pub(super) live: bool,
}

impl<H: ?Sized, X> Table<H, X> {
    pub(super) fn new(tag: u64) -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            next_gen: 0,
            queued: Vec::new(),
            live: 0,
            tag,
        }
    }

    fn ud_of(&self, slot: u32, gen: u32) -> u64 {
        (u64::from(gen) << 32) | self.tag | u64::from(slot)
    }

    fn decode(ud: u64) -> (u32, u32) {
        ((ud & MAX_SLOT) as u32, (ud >> 32) as u32)
    }

    fn get_mut(&mut self, slot: u32, gen: u32) -> Option<&mut Slot<H, X>> {
        self.slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.gen == gen)
    }

    /// The slot of a completion's `user_data`, if it is still that socket's.
    pub(super) fn slot_of(&mut self, ud: u64) -> Option<&mut Slot<H, X>> {
        let (slot, gen) = Self::decode(ud);
        self.get_mut(slot, gen)
    }

    /// Takes a slot for `fd`; returns `(slot, generation)`.
    pub(super) fn open(&mut self, fd: RawFd, handler: Rc<H>, extra: X) -> io::Result<(u32, u32)> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&n| u64::from(n) <= MAX_SLOT)
                    .ok_or_else(|| io::Error::from(Errno::NOSPC))?;
                self.slots.push(None);
                slot
            }
        };
        self.next_gen = match self.next_gen.wrapping_add(1) {
            0 | u32::MAX => 1,
            g => g,
        };
        self.slots[slot as usize] = Some(Slot {
            gen: self.next_gen,
            fd,
            handler: Some(handler),
            wanted: false,
            op: None,
            cancelled: false,
            queued: false,
            extra,
        });
        self.live += 1;
        Ok((slot, self.next_gen))
    }

    fn queue(&mut self, slot: u32) {
        if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
            if !s.queued {
                s.queued = true;
                self.queued.push(slot);
            }
        }
    }

    /// Wants the operation: the next wait arms it (unless one is in the
    /// kernel).
    pub(super) fn start(&mut self, slot: u32, gen: u32) {
        let Some(s) = self.get_mut(slot, gen) else {
            return;
        };
        s.wanted = true;
        if s.op.is_none() {
            self.queue(slot);
        }
    }

    /// Whether the operation is in the kernel or armed by the next wait.
    pub(super) fn armed(&mut self, slot: u32, gen: u32) -> bool {
        self.get_mut(slot, gen)
            .is_some_and(|s| s.op.is_some() || (s.wanted && s.queued))
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

    /// Books one completion: `None` when it is not the slot's operation
    /// (cannot be: a slot lives while its operation does).
    pub(super) fn reap(&mut self, ud: u64, flags: u32) -> Option<Reaped> {
        let (slot, gen) = Self::decode(ud);
        let s = self.get_mut(slot, gen).filter(|s| s.op == Some(ud))?;
        let last = !cqueue::more(flags);
        if last {
            s.op = None;
            s.cancelled = false;
        }
        Some(Reaped {
            slot,
            last,
            live: s.handler.is_some(),
        })
    }

    /// After a reaped completion: arms the slot again with the next wait
    /// when `rearm` (the kernel ended an operation still wanted); frees a
    /// released slot whose operation ended. `stop` drops the wish (the
    /// handler says when to start again).
    pub(super) fn after_reap(&mut self, r: &Reaped, rearm: bool, stop: bool) {
        if let Some(Some(s)) = self.slots.get_mut(r.slot as usize) {
            if stop {
                s.wanted = false;
            }
            if rearm && r.last && r.live && s.wanted && s.op.is_none() {
                self.queue(r.slot);
            }
        }
        self.free_if_done(r.slot);
    }

    /// Whether any slot is in use (the loop must poll for its completions).
    pub(super) fn is_busy(&self) -> bool {
        self.live > 0
    }

    /// Whether any operation is in the kernel.
    pub(super) fn in_kernel(&self) -> bool {
        self.slots.iter().flatten().any(|s| s.op.is_some())
    }

    /// Drops the handlers (the loop's close): what is reaped from now on
    /// nobody hears of.
    pub(super) fn forget_handlers(&mut self) -> Vec<Rc<H>> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut().flatten() {
            out.extend(s.handler.take());
            s.wanted = false;
        }
        out
    }

    /// Every slot's `extra`, taken (the loop's close, leaking what the
    /// kernel may still use).
    pub(super) fn take_extras(&mut self) -> Vec<X> {
        self.slots
            .iter_mut()
            .filter_map(Option::take)
            .map(|s| s.extra)
            .collect()
    }
}

impl State {
    /// Lets go of a socket of the table `which` picks: its handler is
    /// returned (for the caller to drop outside any borrow), its operation
    /// cancelled and the cancellation submitted now (module docs).
    pub(super) fn release_op<H: ?Sized, X>(
        &mut self,
        which: fn(&mut State) -> &mut Table<H, X>,
        slot: u32,
        gen: u32,
    ) -> (Option<Rc<H>>, io::Result<()>) {
        let Some(s) = which(self).get_mut(slot, gen) else {
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
        which(self).free_if_done(slot);
        (handler, res)
    }

    /// Writes the SQEs the queued slots of the table `which` picks need,
    /// built by `build(fd, extra)` (called by the wait before it submits).
    pub(super) fn arm_table<H: ?Sized, X>(
        &mut self,
        which: fn(&mut State) -> &mut Table<H, X>,
        build: impl Fn(RawFd, &X) -> squeue::Entry,
    ) -> io::Result<()> {
        if which(self).queued.is_empty() {
            return Ok(());
        }
        let mut queued = std::mem::take(&mut which(self).queued);
        let mut res = Ok(());
        for &slot in &queued {
            let table = which(self);
            let Some(Some(s)) = table.slots.get_mut(slot as usize) else {
                continue;
            };
            s.queued = false;
            if s.handler.is_none() || !s.wanted || s.op.is_some() {
                continue;
            }
            let gen = s.gen;
            let sqe = build(s.fd, &s.extra);
            let ud = table.ud_of(slot, gen);
            match self.push(&sqe.user_data(ud)) {
                Ok(()) => {
                    if let Some(Some(s)) = which(self).slots.get_mut(slot as usize) {
                        s.op = Some(ud);
                        s.cancelled = false;
                    }
                }
                Err(e) => {
                    which(self).queue(slot);
                    res = Err(e);
                }
            }
        }
        queued.clear();
        let table = which(self);
        if table.queued.is_empty() {
            table.queued = queued;
        }
        res
    }
}
