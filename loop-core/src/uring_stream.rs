//! The completion path for stream sockets on the io_uring backend:
//! [`UringStream`] and the [`StreamHandler`] it reports to. For the crates
//! that build transports on the loop (loop-net's socket transport); the
//! readiness API (`add_reader`...) is what everything else uses.
//!
//! # Why
//! Readiness through io_uring costs what epoll costs: one `recv` and one
//! `send` system call per echoed message. Here the kernel does the I/O:
//! one multishot receive per stream posts the bytes into the loop's
//! provided-buffer ring, and the bytes written during an iteration leave
//! in one `SEND` per stream, submitted with the next wait in the same
//! `io_uring_enter`. A busy loop then makes about one system call per
//! iteration, whatever the number of streams.
//!
//! # The contract
//! - [`FdClaim::uring_stream`] opens the path for the claimed fd when the
//!   loop runs the io_uring backend (`None` otherwise, or when the kernel
//!   lacks what it needs: the transport then uses readiness).
//! - Each completion is queued as ready work, in the order the kernel
//!   posted it, and delivered in step 4 of the iteration, with no borrow
//!   of the loop held: [`received`](StreamHandler::received) gets the bytes
//!   *borrowed from the ring buffer* for the call (the buffer goes back to
//!   the kernel right after it returns, also if it panics), then
//!   [`recv_ended`](StreamHandler::recv_ended) once for the peer's EOF or
//!   an error; [`sent`](StreamHandler::sent) for each send completion.
//! - [`stop_recv`](UringStream::stop_recv) cancels the receive, but bytes
//!   the kernel received before the cancellation took effect are still
//!   delivered: a handler that paused keeps them (nothing is lost).
//! - Written bytes are owned by the loop from [`write`](UringStream::write)
//!   until the kernel took them ([`buffered`](UringStream::buffered) counts
//!   them); a partial send is resubmitted for the rest.
//! - [`release`](UringStream::release) (and `Drop`) cancels everything and
//!   submits the cancellations at once, so the caller may close the fd
//!   right after and the socket really closes. The loop holds the handler
//!   (an `Rc`) until then, as it holds a reader's callback; the loop's
//!   close drops it too. The safety argument (who owns which bytes when)
//!   is in loop-core's `reactor/uring/streams.rs` and `bufs.rs`.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::rc::Rc;

use crate::event_loop::EventLoop;
use crate::fd_claim::FdClaim;
use crate::reactor::Completed;
use crate::uring_slot::{UringSlot, UringState};

thread_local! {
    /// A completion is being delivered on this thread's loop (see
    /// [`UringStream::in_delivery`]).
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
    /// How many completions this thread's loop found in its last poll.
    static BATCH: Cell<usize> = const { Cell::new(0) };
}

/// Records how many completions the iteration's poll found (event_loop.rs).
pub(crate) fn set_batch(n: usize) {
    BATCH.with(|b| b.set(n));
}

/// Clears [`DELIVERING`] when the delivery ends (or unwinds).
struct Delivering(bool);

impl Delivering {
    fn enter() -> Delivering {
        Delivering(DELIVERING.with(|d| d.replace(true)))
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        DELIVERING.with(|d| d.set(self.0));
    }
}

/// What a stream on the completion path is told (see the module docs).
/// Each method runs as the loop's ready work, never inside another
/// method of the same handler.
pub trait StreamHandler {
    /// Bytes the peer sent, borrowed from the loop's buffer ring for this
    /// call only.
    fn received(&self, data: &[u8]);
    /// The receive ended: the peer's EOF (`None`) or an error. Nothing more
    /// is received until [`UringStream::start_recv`].
    fn recv_ended(&self, error: Option<io::Error>);
    /// A receive stopped by [`UringStream::stop_recv`] has ended: nothing
    /// more comes from it ([`UringStream::recv_idle`] is true unless
    /// receiving started again).
    fn recv_stopped(&self) {}
    /// A send completed: the kernel took `n` bytes (more may follow), or
    /// the send failed (the pending bytes stay until the caller discards
    /// them).
    fn sent(&self, result: io::Result<usize>);
}

/// A stream socket on the completion path (see the module docs). Dropping
/// it releases the stream.
pub struct UringStream {
    slot: UringSlot,
}

impl FdClaim {
    /// Opens the completion path for the claimed fd (a connected stream
    /// socket), reporting to `handler`; `None` when the loop does not run
    /// the io_uring backend or the kernel lacks the provided-buffer ring
    /// (the caller then uses readiness).
    pub fn uring_stream(&self, handler: Rc<dyn StreamHandler>) -> Option<UringStream> {
        let slot = UringSlot::open(self, "completion path", |st, fd| {
            st.stream_open(fd, handler)
        })?;
        Some(UringStream { slot })
    }
}

/// Runs `f` on the io_uring backend's state (also for uring_accept.rs and
/// uring_datagram.rs); `None` on another backend or a closed loop.
#[cfg(target_os = "linux")]
pub(crate) fn with_state<R>(
    lp: &EventLoop,
    f: impl FnOnce(&mut crate::reactor::uring::State) -> R,
) -> Option<R> {
    lp.inner.reactor.with_uring(f)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn with_state<R>(_: &EventLoop, _: impl FnOnce(&mut ()) -> R) -> Option<R> {
    None
}

impl UringStream {
    fn call<R>(&self, f: impl FnOnce(&mut UringState, u32, u32) -> R) -> Option<R> {
        self.slot.call(f)
    }

    /// Starts receiving (a multishot receive, armed by the next wait).
    pub fn start_recv(&self) -> io::Result<()> {
        self.call(|st, slot, gen| st.stream_recv(slot, gen, true))
            .unwrap_or(Ok(()))
    }

    /// Stops receiving: the receive is cancelled with the next submission;
    /// bytes that race the cancellation are still delivered.
    pub fn stop_recv(&self) -> io::Result<()> {
        self.call(|st, slot, gen| st.stream_recv(slot, gen, false))
            .unwrap_or(Ok(()))
    }

    /// Whether the caller runs inside a completion's delivery (a
    /// [`StreamHandler`] method, and the protocol code it calls). A write
    /// made there is best left to the next submission, which comes as soon
    /// as the iteration's ready work is done and takes the writes of every
    /// stream at once; a write made elsewhere (a task, a timer) may be
    /// followed by anything, and the transport may rather try the socket
    /// first (loop-net's socket transport does).
    pub fn in_delivery() -> bool {
        DELIVERING.with(Cell::get)
    }

    /// How many completions the current iteration delivers (its poll found
    /// them all at once); 0 outside a delivery. With one alone, a queued
    /// send would cost a wake-up of its own (its completion ends the next
    /// wait before the peer's answer comes): writing at once is cheaper.
    pub fn batch() -> usize {
        if Self::in_delivery() {
            BATCH.with(Cell::get)
        } else {
            0
        }
    }

    /// Whether no receive is in the kernel (none started, or the stopped
    /// one ended): nothing more is delivered until the next
    /// [`start_recv`](Self::start_recv).
    pub fn recv_idle(&self) -> bool {
        self.call(|st, slot, gen| st.stream_recv_idle(slot, gen))
            .unwrap_or(true)
    }

    /// Appends the bytes of `chunks` (copied) to what the next wait sends;
    /// false when the stream is released or the loop closed (nothing taken).
    pub fn write(&self, chunks: &[&[u8]]) -> bool {
        self.call(|st, slot, gen| st.stream_write(slot, gen, chunks))
            .unwrap_or(false)
    }

    /// Bytes written and not yet taken by the kernel.
    pub fn buffered(&self) -> usize {
        self.call(|st, slot, gen| st.stream_buffered(slot, gen))
            .unwrap_or(0)
    }

    /// Drops the bytes not yet sent and cancels the send in flight (its
    /// bytes stay with the loop until the kernel lets go of them).
    pub fn discard_sends(&self) -> io::Result<()> {
        self.call(|st, slot, gen| st.stream_discard_sends(slot, gen))
            .unwrap_or(Ok(()))
    }

    /// Releases the stream: everything in flight is cancelled (submitted
    /// now: the fd may be closed next), and the loop lets go of the
    /// handler. Idempotent.
    pub fn release(&self) -> io::Result<()> {
        self.slot
            .release(|st, slot, gen| st.stream_release(slot, gen))
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl fmt::Debug for UringStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.slot.fmt("UringStream", f)
    }
}

/// Gives a receive buffer back to the ring when dropped (after the
/// handler returned, or unwound).
#[cfg(target_os = "linux")]
pub(crate) struct GiveBack(pub(crate) Option<(Rc<crate::reactor::uring::BufRing>, u16)>);

#[cfg(target_os = "linux")]
impl Drop for GiveBack {
    fn drop(&mut self) {
        if let Some((bufs, bid)) = self.0.take() {
            bufs.give_back(bid);
        }
    }
}

impl EventLoop {
    /// Step 4's delivery of one completion to its stream's handler (module
    /// docs): the handler and the buffer ring are cloned out, the borrow
    /// ends, then the handler runs.
    #[cfg(target_os = "linux")]
    pub(crate) fn deliver_completion(&self, c: Completed) {
        if c.is_accept() {
            return self.deliver_accept(c);
        }
        if c.is_datagram() {
            return self.deliver_datagram(c);
        }
        let Some((handler, bufs)) = with_state(self, |st| st.stream_delivery(&c)) else {
            return;
        };
        let send = c.is_send();
        let bid = io_uring::cqueue::buffer_select(c.flags);
        let guard = GiveBack(bufs.clone().zip(bid));
        let _delivering = Delivering::enter();
        let Some(handler) = handler else {
            return; // released meanwhile: the guard gives the buffer back
        };
        if send {
            handler.sent(if c.res >= 0 {
                Ok(c.res as usize)
            } else {
                Err(io::Error::from_raw_os_error(-c.res))
            });
        } else if c.res > 0 {
            match (&bufs, bid) {
                (Some(bufs), Some(bid)) => handler.received(bufs.slice(bid, c.res as usize)),
                _ => handler.recv_ended(Some(io::Error::other("a receive without its buffer"))),
            }
        } else if c.res == 0 {
            handler.recv_ended(None);
        } else if c.res == -(rustix::io::Errno::CANCELED.raw_os_error())
            || c.res == -(rustix::io::Errno::NOBUFS.raw_os_error())
        {
            handler.recv_stopped();
        } else {
            handler.recv_ended(Some(io::Error::from_raw_os_error(-c.res)));
        }
        drop(guard);
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn deliver_completion(&self, _: Completed) {}

    /// Every completion stream's handler, for `close` to drop outside the
    /// borrow (their operations are cancelled when the reactor goes).
    pub(crate) fn take_stream_handlers(&self) -> Vec<Rc<dyn StreamHandler>> {
        with_state(self, |st| {
            #[cfg(target_os = "linux")]
            {
                st.stream_take_handlers()
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = st;
                Vec::new()
            }
        })
        .unwrap_or_default()
    }
}
