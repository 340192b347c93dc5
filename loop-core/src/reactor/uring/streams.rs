//! The completion path of the io_uring backend: the table of stream
//! sockets whose bytes move by completion (multishot receive into the
//! provided-buffer ring, one send per stream per iteration), and the
//! operations each has in flight. The public face is
//! [`UringStream`](crate::UringStream) (uring_stream.rs); this is the
//! bookkeeping behind it, borrowed only inside one reactor call.
//!
//! # One slot per stream
//! A slot holds the stream's fd, its handler (the transport), whether it
//! wants to receive, its receive in flight (at most one: a new multishot
//! receive is armed only after the final completion of the previous one,
//! so completions of one stream arrive in order), its *pending* bytes
//! (written during this iteration, owned here) and its *flight* (the bytes
//! of the one send in flight, or queued for the next submission, with how
//! many of them went out). The next wait moves the pending bytes into the
//! flight when there is none and submits one `SEND` for all of them, so
//! the writes of one iteration leave in one send (coalescing), together
//! with the wait, in one `io_uring_enter`. A partial send is resubmitted
//! for the rest by the next wait; the pending bytes wait behind it.
//!
//! # `user_data`
//! `generation << 32 | OP_TAG | kind | slot`: bit 31 ([`OP_TAG`]) tells a
//! completion operation from a readiness poll (whose keys stay below
//! 2^31), bit 30 a send from a receive, the generation (new each time a
//! slot is taken, never 0 or `u32::MAX`) a slot's streams from each other.
//! `WAKE` and `IGNORED` (all ones in the low half) are checked first, and
//! accepts (bit 29, accepts.rs) and datagram receives (bit 28,
//! datagrams.rs) before streams: stream slots stay below 2^28.
//!
//! # Ownership and safety
//! - A flight's bytes are a `Vec` owned by the slot; the kernel reads them
//!   from the `SEND`'s submission until its completion. The `Vec` is not
//!   touched (not grown, not dropped) in between: writes go to `pending`,
//!   a release or a discard *cancels* the send and leaves the flight in the
//!   slot until the completion (`ECANCELED` or not) comes. A slot is freed
//!   only when nothing of it is in the kernel.
//! - Receive buffers belong to the kernel while in the ring; a completion
//!   hands one to us (bufs.rs has the rules), and it goes back after the
//!   handler saw it (uring_stream.rs) or at once when nobody will.
//! - Releasing a stream (its transport closes the fd next) cancels its
//!   operations *and submits the cancellations before it returns*: an
//!   operation in flight holds a reference on the socket's file, and the
//!   socket must really close when the fd does (the peer waits for the FIN
//!   or the reset), as the readiness `delete` ensures for polls.
//! - At the loop's close, every operation is cancelled and the reactor
//!   waits (bounded) for every final completion before the ring is
//!   dropped, and the buffer ring after it. What is still in flight after
//!   that bound is leaked, never freed under the kernel.

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use io_uring::{cqueue, opcode, types};
use rustix::io::Errno;

use super::bufs::{BufRing, GROUP};
use super::{State, IGNORED};
use crate::reactor::Completed;
use crate::uring_stream::StreamHandler;

/// Bit 31 of `user_data`: a completion operation, not a readiness poll.
pub(super) const OP_TAG: u64 = 1 << 31;
/// Bit 30: a send (else a receive).
const OP_SEND: u64 = 1 << 30;
const SLOT_MASK: u64 = OP_SEND - 1;
/// The highest stream slot: bits 28 and 29 stay clear (bit 29 marks an
/// accept, accepts.rs; bit 28 a datagram receive, datagrams.rs).
const MAX_SLOT: u64 = (1 << 28) - 1;

/// How long the loop's close waits for the operations it cancelled.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A send in flight (or queued for the next submission).
struct Flight {
    buf: Vec<u8>,
    /// Bytes of `buf` the kernel took so far.
    done: usize,
    /// The `SEND` in the kernel, if submitted.
    ud: Option<u64>,
}

struct Slot {
    gen: u32,
    fd: RawFd,
    /// `None` once the stream was released (only operations remain).
    handler: Option<Rc<dyn StreamHandler>>,
    recv_wanted: bool,
    /// The multishot receive in the kernel.
    recv: Option<u64>,
    /// Its cancellation is queued or submitted.
    recv_cancelled: bool,
    pending: Vec<u8>,
    flight: Option<Flight>,
    /// Bytes the kernel took whose `sent` the handler has not heard yet:
    /// still counted as buffered, so the transport sees its buffer shrink
    /// when it is told, not before (a task polled between the reap and the
    /// delivery would see an empty buffer with `resume_writing` not yet
    /// owed).
    unseen: usize,
    /// The slot is in `Streams::queued`.
    queued: bool,
}

impl Slot {
    fn in_kernel(&self) -> bool {
        self.recv.is_some() || self.flight.as_ref().is_some_and(|f| f.ud.is_some())
    }

    fn buffered(&self) -> usize {
        self.pending.len() + self.flight.as_ref().map_or(0, |f| f.buf.len() - f.done) + self.unseen
    }
}

/// The table (see the module docs).
#[derive(Default)]
pub(super) struct Streams {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    next_gen: u32,
    /// Slots whose receive to arm or send to submit the next wait looks at.
    queued: Vec<u32>,
    /// A spare buffer for the next flight (keeps an allocation per loop).
    spare: Vec<u8>,
    /// The provided-buffer ring, made at the first stream.
    pub(super) bufs: Option<Rc<BufRing>>,
    /// Slots in use (a stream, or operations of a released one).
    live: usize,
    /// The kernel refused the path once: every stream uses readiness.
    unavailable: bool,
}

impl Completed {
    /// Whether this is a send's completion (else a receive's).
    pub(crate) fn is_send(&self) -> bool {
        self.user_data & OP_SEND != 0
    }
}

fn ud_of(slot: u32, gen: u32, send: bool) -> u64 {
    (u64::from(gen) << 32) | OP_TAG | if send { OP_SEND } else { 0 } | u64::from(slot)
}

fn decode(ud: u64) -> (u32, u32, bool) {
    (
        (ud & SLOT_MASK) as u32,
        (ud >> 32) as u32,
        ud & OP_SEND != 0,
    )
}

impl Streams {
    fn get(&self, slot: u32, gen: u32) -> Option<&Slot> {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .filter(|s| s.gen == gen)
    }

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

    /// Frees `slot` if its stream was released and nothing of it is in the
    /// kernel.
    fn free_if_done(&mut self, slot: u32) {
        let done = matches!(
            self.slots.get(slot as usize),
            Some(Some(s)) if s.handler.is_none() && !s.in_kernel()
        );
        if done {
            self.slots[slot as usize] = None;
            self.free.push(slot);
            self.live -= 1;
        }
    }

    /// Books one completion of an operation and, when its stream's handler
    /// must hear of it, appends it to `done`.
    pub(super) fn reap_op(&mut self, ud: u64, res: i32, flags: u32, done: &mut Vec<Completed>) {
        let (slot, gen, send) = decode(ud);
        let bid = cqueue::buffer_select(flags);
        let give_back = |bufs: &Option<Rc<BufRing>>| {
            if let (Some(bid), Some(bufs)) = (bid, bufs) {
                bufs.give_back(bid);
            }
        };
        let Streams {
            slots, bufs, spare, ..
        } = self;
        let Some(s) = slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.gen == gen)
        else {
            // Cannot be (a slot lives while it has operations); keep the
            // buffer in the ring anyway.
            give_back(bufs);
            return;
        };
        let c = Completed {
            user_data: ud,
            res,
            flags,
        };
        if send {
            if s.flight.as_ref().and_then(|f| f.ud) != Some(ud) {
                return;
            }
            let mut requeue = false;
            if res >= 0 {
                let f = s.flight.as_mut().expect("checked");
                f.done += res as usize;
                f.ud = None;
                if f.done >= f.buf.len() {
                    let f = s.flight.take().expect("checked");
                    if spare.capacity() < f.buf.capacity() {
                        *spare = f.buf;
                    }
                    requeue = !s.pending.is_empty();
                } else {
                    requeue = true;
                }
            } else {
                s.flight = None;
            }
            let tell = s.handler.is_some() && res != -Errno::CANCELED.raw_os_error();
            if tell {
                s.unseen += res.max(0) as usize;
                done.push(c);
            }
            if requeue && s.handler.is_some() {
                self.queue(slot);
            }
        } else {
            if s.recv != Some(ud) {
                give_back(bufs);
                return;
            }
            let more = cqueue::more(flags);
            if !more {
                s.recv = None;
            }
            let live = s.handler.is_some();
            let rearm;
            if res > 0 {
                if live && bid.is_some() {
                    done.push(c);
                } else {
                    give_back(bufs);
                }
                rearm = !more;
            } else {
                give_back(bufs);
                if res == -Errno::NOBUFS.raw_os_error() || res == -Errno::CANCELED.raw_os_error() {
                    rearm = !more;
                    if !more && !s.recv_wanted && live {
                        // Stopped: its handler hears that it ended.
                        done.push(c);
                    }
                } else {
                    // The peer's EOF (0) or an error: reported, not re-armed.
                    if live {
                        done.push(c);
                    }
                    s.recv_wanted = false;
                    rearm = false;
                }
            }
            if rearm && s.recv_wanted && s.recv.is_none() && live {
                self.queue(slot);
            }
        }
        self.free_if_done(slot);
    }

    /// Whether any slot is in use (the loop must poll for its completions).
    pub(super) fn is_busy(&self) -> bool {
        self.live > 0
    }
}

impl State {
    /// Fails unless the kernel has multishot receives (Linux 6.0), which
    /// the streams' and the datagrams' completion paths need. The register
    /// probe cannot tell multishot itself, but `SEND_ZC` came with the
    /// same release; the buffer rings' registration needs 5.19.
    pub(super) fn check_multishot(&self) -> io::Result<()> {
        let mut probe = io_uring::Probe::new();
        self.ring.submitter().register_probe(&mut probe)?;
        if probe.is_supported(opcode::SendZc::CODE) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks multishot receives (Linux 6.0)",
            ))
        }
    }

    /// Takes a slot for `fd`, registering the buffer ring first if this is
    /// the loop's first stream. Returns `(slot, generation)`.
    pub(crate) fn stream_open(
        &mut self,
        fd: RawFd,
        handler: Rc<dyn StreamHandler>,
    ) -> io::Result<(u32, u32)> {
        if self.streams.unavailable {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        if self.streams.bufs.is_none() {
            self.streams.unavailable = true;
            self.check_multishot()?;
            self.streams.bufs = Some(Rc::new(BufRing::register(&self.ring)?));
            self.streams.unavailable = false;
        }
        let s = &mut self.streams;
        let slot = match s.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(s.slots.len())
                    .ok()
                    .filter(|&n| u64::from(n) <= MAX_SLOT)
                    .ok_or_else(|| io::Error::from(Errno::NOSPC))?;
                s.slots.push(None);
                slot
            }
        };
        s.next_gen = match s.next_gen.wrapping_add(1) {
            0 | u32::MAX => 1,
            g => g,
        };
        s.slots[slot as usize] = Some(Slot {
            gen: s.next_gen,
            fd,
            handler: Some(handler),
            recv_wanted: false,
            recv: None,
            recv_cancelled: false,
            pending: Vec::new(),
            flight: None,
            unseen: 0,
            queued: false,
        });
        s.live += 1;
        Ok((slot, s.next_gen))
    }

    /// Starts (`on`) or stops receiving. Starting arms a multishot receive
    /// with the next wait (after the final completion of one being
    /// cancelled); stopping queues the cancellation of the one in flight,
    /// whose racing completions are still delivered.
    pub(crate) fn stream_recv(&mut self, slot: u32, gen: u32, on: bool) -> io::Result<()> {
        let Some(s) = self.streams.get_mut(slot, gen) else {
            return Ok(());
        };
        s.recv_wanted = on;
        if on {
            if s.recv.is_none() {
                self.streams.queue(slot);
            }
            return Ok(());
        }
        match s.recv {
            Some(ud) if !s.recv_cancelled => {
                s.recv_cancelled = true;
                self.push(&opcode::AsyncCancel::new(ud).build().user_data(IGNORED))
            }
            _ => Ok(()),
        }
    }

    /// Appends `chunks` to the stream's pending bytes; the next wait sends
    /// them (with what else is written before it).
    pub(crate) fn stream_write(&mut self, slot: u32, gen: u32, chunks: &[&[u8]]) -> bool {
        let Some(s) = self.streams.get_mut(slot, gen) else {
            return false;
        };
        for c in chunks {
            s.pending.extend_from_slice(c);
        }
        if s.flight.is_none() {
            self.streams.queue(slot);
        }
        true
    }

    /// Whether no receive of the stream is in the kernel.
    pub(crate) fn stream_recv_idle(&self, slot: u32, gen: u32) -> bool {
        self.streams.get(slot, gen).is_none_or(|s| s.recv.is_none())
    }

    /// Bytes written and not yet taken by the kernel (pending and in flight).
    pub(crate) fn stream_buffered(&self, slot: u32, gen: u32) -> usize {
        self.streams.get(slot, gen).map_or(0, Slot::buffered)
    }

    /// Drops the pending bytes and cancels the send in flight (`abort`).
    pub(crate) fn stream_discard_sends(&mut self, slot: u32, gen: u32) -> io::Result<()> {
        let Some(s) = self.streams.get_mut(slot, gen) else {
            return Ok(());
        };
        s.pending = Vec::new();
        s.unseen = 0;
        match s.flight.as_ref().map(|f| f.ud) {
            Some(Some(ud)) => self.push(&opcode::AsyncCancel::new(ud).build().user_data(IGNORED)),
            Some(None) => {
                s.flight = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Lets go of the stream: its handler is returned (for the caller to
    /// drop outside any borrow), its operations are cancelled and the
    /// cancellations submitted now (module docs).
    pub(crate) fn stream_release(
        &mut self,
        slot: u32,
        gen: u32,
    ) -> (Option<Rc<dyn StreamHandler>>, io::Result<()>) {
        let Some(s) = self.streams.get_mut(slot, gen) else {
            return (None, Ok(()));
        };
        let handler = s.handler.take();
        s.recv_wanted = false;
        s.pending = Vec::new();
        s.unseen = 0;
        if s.flight.as_ref().is_some_and(|f| f.ud.is_none()) {
            s.flight = None;
        }
        let mut cancel = Vec::new();
        if let Some(ud) = s.recv {
            if !s.recv_cancelled {
                s.recv_cancelled = true;
                cancel.push(ud);
            }
        }
        if let Some(Some(ud)) = s.flight.as_ref().map(|f| f.ud) {
            cancel.push(ud);
        }
        let mut res = Ok(());
        // Submit also when an earlier cancellation (`stop_recv`'s) is only
        // queued: whatever is in the kernel must be told now.
        let any = s.in_kernel();
        for ud in cancel {
            if let Err(e) = self.push(&opcode::AsyncCancel::new(ud).build().user_data(IGNORED)) {
                res = Err(e);
            }
        }
        if any {
            if let Err(e) = self.submit() {
                res = Err(e);
            }
        }
        self.streams.free_if_done(slot);
        (handler, res)
    }

    /// The handler of a completion's stream, and the buffer ring; `None`
    /// when the stream was released since (the caller still gives back a
    /// buffer the completion carries).
    pub(crate) fn stream_delivery(
        &mut self,
        c: &Completed,
    ) -> (Option<Rc<dyn StreamHandler>>, Option<Rc<BufRing>>) {
        let (slot, gen, send) = decode(c.user_data);
        let Some(s) = self.streams.get_mut(slot, gen) else {
            return (None, self.streams.bufs.clone());
        };
        if send {
            // Told now (see `Slot::unseen`).
            s.unseen = s.unseen.saturating_sub(c.res.max(0) as usize);
        }
        (s.handler.clone(), self.streams.bufs.clone())
    }

    /// Every handler, for the loop's close to drop outside the borrow; the
    /// slots keep their operations (cancelled when the reactor drops).
    pub(crate) fn stream_take_handlers(&mut self) -> Vec<Rc<dyn StreamHandler>> {
        let mut out = Vec::new();
        for slot in self.streams.slots.iter_mut().flatten() {
            out.extend(slot.handler.take());
            slot.recv_wanted = false;
        }
        out
    }

    /// Writes the receive and send SQEs the queued slots need (called by
    /// the wait before it submits).
    pub(super) fn arm_streams(&mut self) -> io::Result<()> {
        let queued = std::mem::take(&mut self.streams.queued);
        let mut res = Ok(());
        for &slot in &queued {
            let Some(Some(s)) = self.streams.slots.get_mut(slot as usize) else {
                continue;
            };
            s.queued = false;
            if s.handler.is_none() {
                continue;
            }
            let (fd, gen) = (s.fd, s.gen);
            if s.recv_wanted && s.recv.is_none() {
                let ud = ud_of(slot, gen, false);
                let sqe = opcode::RecvMulti::new(types::Fd(fd), GROUP)
                    .build()
                    .user_data(ud);
                match self.push(&sqe) {
                    Ok(()) => {
                        if let Some(Some(s)) = self.streams.slots.get_mut(slot as usize) {
                            s.recv = Some(ud);
                            s.recv_cancelled = false;
                        }
                    }
                    Err(e) => res = Err(e),
                }
            }
            let Some(Some(s)) = self.streams.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.flight.is_none() && !s.pending.is_empty() {
                let mut buf = std::mem::take(&mut self.streams.spare);
                buf.clear();
                std::mem::swap(&mut buf, &mut s.pending);
                s.flight = Some(Flight {
                    buf,
                    done: 0,
                    ud: None,
                });
            }
            let Some(f) = s.flight.as_mut().filter(|f| f.ud.is_none()) else {
                continue;
            };
            let ud = ud_of(slot, gen, true);
            let rest = &f.buf[f.done..];
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            let sqe = opcode::Send::new(types::Fd(fd), rest.as_ptr(), len)
                .flags(libc_msg_nosignal())
                .build()
                .user_data(ud);
            // SAFETY (of the pointer in the SQE, which `push` requires to
            // stay valid until the completion): `rest` is inside the
            // flight's `Vec`, which the slot keeps, unmoved and unchanged,
            // until this send's completion is reaped (module docs).
            match self.push(&sqe) {
                Ok(()) => {
                    if let Some(Some(s)) = self.streams.slots.get_mut(slot as usize) {
                        if let Some(f) = s.flight.as_mut() {
                            f.ud = Some(ud);
                        }
                    }
                }
                Err(e) => res = Err(e),
            }
        }
        // Slots queued again meanwhile (a failed push) stay queued.
        let mut queued = queued;
        queued.clear();
        if self.streams.queued.is_empty() {
            self.streams.queued = queued;
        }
        res
    }

    /// At the loop's close (the reactor drops): cancels every operation and
    /// waits, at most [`CLOSE_WAIT`], for their final completions, so that
    /// the ring and the buffers can go. Leaks what is still in flight
    /// after that (module docs).
    pub(super) fn drain_streams(&mut self) {
        if !self.streams.is_busy()
            && !self.accepts.table.is_busy()
            && !self.datagrams.table.is_busy()
        {
            return;
        }
        // Accepted fds reaped from now on are closed (accepts.rs), datagram
        // buffers given back (datagrams.rs).
        drop(self.accepts.table.forget_handlers());
        drop(self.datagrams.table.forget_handlers());
        for slot in self.streams.slots.iter_mut().flatten() {
            slot.handler = None;
            slot.recv_wanted = false;
            slot.pending = Vec::new();
            if slot.flight.as_ref().is_some_and(|f| f.ud.is_none()) {
                slot.flight = None;
            }
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(IGNORED);
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        let _ = self.push(&cancel);
        let mut done = Vec::new();
        loop {
            let busy = self.streams.slots.iter().flatten().any(Slot::in_kernel)
                || self.accepts.table.in_kernel()
                || self.datagrams.table.in_kernel();
            if !busy || std::time::Instant::now() >= deadline {
                break;
            }
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let mut cq = self.ring.completion();
            cq.sync();
            let cqes: Vec<_> = cq
                .by_ref()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            drop(cq);
            for (ud, res, flags) in cqes {
                if ud == super::WAKE || ud == IGNORED {
                    continue;
                }
                if super::accepts::is_accept(ud) {
                    self.accepts.reap_op(ud, res, flags, &mut done);
                } else if super::datagrams::is_datagram(ud) {
                    self.datagrams.reap_op(ud, res, flags, &mut done);
                } else if ud & OP_TAG != 0 {
                    self.streams.reap_op(ud, res, flags, &mut done);
                }
            }
            // Nobody hears of these now; give their buffers back.
            for c in done.drain(..) {
                if let (Some(bid), Some(bufs)) =
                    (cqueue::buffer_select(c.flags), &self.streams.bufs)
                {
                    bufs.give_back(bid);
                }
            }
        }
        if self.datagrams.table.in_kernel() {
            self.datagrams.leak();
        }
        let leaked = self.streams.slots.iter().flatten().any(Slot::in_kernel);
        if leaked {
            // The kernel may still use these: never free them.
            if let Some(bufs) = self.streams.bufs.clone() {
                std::mem::forget(bufs);
            }
            for slot in self.streams.slots.iter_mut().flatten() {
                if let Some(f) = slot.flight.take() {
                    std::mem::forget(f.buf);
                }
            }
        }
    }
}

/// `MSG_NOSIGNAL`: a send to a reset peer fails with `EPIPE`, no SIGPIPE.
fn libc_msg_nosignal() -> i32 {
    rustix::net::SendFlags::NOSIGNAL.bits() as i32
}
