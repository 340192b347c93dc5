//! The completion path for datagram sockets on the io_uring backend:
//! [`UringDatagram`] and the [`DatagramHandler`] it reports to. For the
//! crates that build datagram endpoints on the loop (loop-net's).
//!
//! # Why
//! Through readiness, each datagram costs a `recvmsg`, and each burst one
//! more that fails with `EAGAIN`, besides the wake-up. Here one multishot
//! receive per socket lets the kernel put every datagram, with its
//! sender's address, into a buffer of the loop's datagram ring; the loop
//! reads them with whatever else its wait found, and no system call is
//! made per datagram for receiving it.
//!
//! # The contract
//! - [`FdClaim::uring_datagram`] opens the path for the claimed fd (a UDP
//!   or Unix datagram socket) when the loop runs the io_uring backend
//!   (`None` otherwise, or when the kernel lacks multishot `RECVMSG`: the
//!   endpoint then uses readiness).
//! - [`start`](UringDatagram::start) arms the receive with the next wait.
//!   Each datagram is queued as ready work, in the order the kernel posted
//!   it, and delivered in step 4 with no borrow of the loop held:
//!   [`received`](DatagramHandler::received) gets the payload *borrowed
//!   from the ring buffer* for the call (the buffer goes back right after,
//!   also if it panics), the sender's address, and whether the datagram was
//!   longer than the payload room (64 KiB, the readiness path's buffer: the
//!   rest is cut off). A receive error goes to
//!   [`recv_failed`](DatagramHandler::recv_failed); receiving goes on.
//! - [`release`](UringDatagram::release) (and `Drop`) cancels the receive
//!   and submits the cancellation at once, so the caller may close the fd
//!   right after and the socket really closes; nothing is delivered after
//!   it. The buffers' ownership is argued in loop-core's
//!   `reactor/uring/datagrams.rs`.

use std::fmt;
use std::io;
use std::rc::Rc;

use rustix::net::SocketAddrAny;

use crate::event_loop::EventLoop;
use crate::fd_claim::FdClaim;
use crate::reactor::Completed;
use crate::uring_slot::UringSlot;
use crate::uring_stream::with_state;

/// What a datagram socket on the completion path is told (see the module
/// docs). Each method runs as the loop's ready work.
pub trait DatagramHandler {
    /// A datagram from `from` (`None`: the sender has no name, as an
    /// unnamed Unix socket's datagram on some kernels), borrowed from the
    /// loop's buffer ring for this call only; `truncated` when it was
    /// longer than `data`.
    fn received(&self, data: &[u8], from: Option<SocketAddrAny>, truncated: bool);
    /// A receive failed (`ECONNREFUSED`...); receiving goes on.
    fn recv_failed(&self, error: io::Error);
}

/// A datagram socket on the completion path (see the module docs).
/// Dropping it releases the socket.
pub struct UringDatagram {
    slot: UringSlot,
}

impl FdClaim {
    /// Opens the completion path for the claimed fd (a datagram socket),
    /// reporting to `handler`; `None` when the loop does not run the
    /// io_uring backend or the kernel lacks multishot `RECVMSG` (the caller
    /// then uses readiness).
    pub fn uring_datagram(&self, handler: Rc<dyn DatagramHandler>) -> Option<UringDatagram> {
        let slot = UringSlot::open(self, "datagram receive", |st, fd| {
            #[cfg(target_os = "linux")]
            return st.datagram_open(fd, handler);
            #[cfg(not(target_os = "linux"))]
            {
                let _ = (st, fd, handler);
                Err(io::Error::from(io::ErrorKind::Unsupported))
            }
        })?;
        Some(UringDatagram { slot })
    }
}

impl UringDatagram {
    /// Starts receiving (a multishot receive, armed by the next wait).
    pub fn start(&self) {
        #[cfg(target_os = "linux")]
        self.slot.call(|st, slot, gen| st.datagram_start(slot, gen));
    }

    /// Releases the socket: its receive is cancelled (submitted now: the
    /// fd may be closed next), and the loop lets go of the handler.
    /// Idempotent.
    pub fn release(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        return self
            .slot
            .release(|st, slot, gen| st.datagram_release(slot, gen));
        #[cfg(not(target_os = "linux"))]
        Ok(())
    }
}

impl Drop for UringDatagram {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl fmt::Debug for UringDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.slot.fmt("UringDatagram", f)
    }
}

/// One completion's buffer, parsed: `struct io_uring_recvmsg_out` (the
/// name's length, the control data's, the datagram's, the flags), then
/// the name field, then the payload (datagrams.rs).
#[cfg(target_os = "linux")]
fn parse(buf: &[u8]) -> Option<(&[u8], Option<SocketAddrAny>, bool)> {
    use crate::reactor::uring::{DGRAM_NAME_LEN, DGRAM_OUT_HEADER};
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            buf.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let (namelen, flags) = (word(0)? as usize, word(3)?);
    let start = DGRAM_OUT_HEADER + DGRAM_NAME_LEN;
    let payload = buf.get(start..)?;
    let truncated = flags & rustix::net::RecvFlags::TRUNC.bits() != 0;
    let namelen = namelen.min(DGRAM_NAME_LEN);
    // At least the family (`sa_family_t`, a `u16`).
    let from = (namelen >= std::mem::size_of::<u16>()).then(|| {
        let name = &buf[DGRAM_OUT_HEADER..DGRAM_OUT_HEADER + namelen];
        let mut storage = std::mem::MaybeUninit::<rustix::net::addr::SocketAddrStorage>::zeroed();
        // SAFETY: `namelen` bytes fit the storage (both are at most a
        // `sockaddr_storage`), and the source is the name the kernel wrote.
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr(), storage.as_mut_ptr().cast(), namelen);
        }
        // SAFETY: the storage holds the kernel's socket address, whose
        // first `namelen` bytes are initialized (all are: zeroed above);
        // `namelen` is between the family's size and the storage's.
        unsafe { SocketAddrAny::new(storage, namelen as rustix::net::addr::SocketAddrLen) }
    });
    Some((payload, from, truncated))
}

impl EventLoop {
    /// Step 4's delivery of a datagram receive's completion (module docs):
    /// the handler and the ring are cloned out, the borrow ends, then the
    /// handler runs; the buffer goes back after it.
    #[cfg(target_os = "linux")]
    pub(crate) fn deliver_datagram(&self, c: Completed) {
        let Some((handler, bufs)) = with_state(self, |st| st.datagram_delivery(&c)) else {
            return;
        };
        let bid = io_uring::cqueue::buffer_select(c.flags);
        let _guard = crate::uring_stream::GiveBack(bufs.clone().zip(bid));
        let Some(handler) = handler else {
            return; // released meanwhile: the guard gives the buffer back
        };
        if c.res < 0 {
            handler.recv_failed(io::Error::from_raw_os_error(-c.res));
            return;
        }
        let parsed = match (&bufs, bid) {
            (Some(bufs), Some(bid)) => parse(bufs.slice(bid, c.res as usize)),
            _ => None,
        };
        match parsed {
            Some((data, from, truncated)) => handler.received(data, from, truncated),
            None => handler.recv_failed(io::Error::other("a datagram receive without its buffer")),
        }
    }

    /// Every datagram handler, for `close` to drop outside the borrow.
    pub(crate) fn take_datagram_handlers(&self) -> Vec<Rc<dyn DatagramHandler>> {
        #[cfg(target_os = "linux")]
        {
            with_state(self, |st| st.datagram_take_handlers()).unwrap_or_default()
        }
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }
}
