//! The completion path's datagram sockets: one multishot `RECVMSG` per
//! socket into a buffer ring of their own, each completion one datagram
//! with its sender's address. The public face is
//! [`UringDatagram`](crate::UringDatagram) (uring_datagram.rs); this is the
//! table behind it, borrowed only inside one reactor call.
//!
//! # One slot per socket
//! A slot of ops.rs's table holds the socket's fd, its handler (the endpoint), whether it
//! wants to receive, its receive in flight (at most one: a new one is
//! armed only after the final completion of the last, so datagrams arrive
//! in order) and the `msghdr` the receive was armed with. The next wait
//! arms a queued slot's receive in the same `io_uring_enter`. The kernel
//! ends a multishot receive when the ring has no free buffer (`ENOBUFS`:
//! the datagram waits in the socket), on an error (`ECONNREFUSED` after an
//! ICMP port unreachable on a connected socket) and on cancellation; the
//! slot re-arms itself with the next wait while it wants to receive
//! (asyncio's endpoint keeps reading after `error_received`).
//!
//! # Why a buffer group of its own
//! A completion's buffer holds `struct io_uring_recvmsg_out` (16 bytes),
//! then the name field (the `msg_namelen` the receive was armed with:
//! [`NAME_LEN`], a `sockaddr_storage`), then the payload. With the streams'
//! 64 KiB buffers (bufs.rs) a UDP datagram over 65,392 bytes would come
//! truncated, where the readiness path (recv.rs in loop-net: one 64 KiB
//! buffer) delivers every datagram up to 64 KiB whole and reports a longer
//! one as `EMSGSIZE`. So datagrams get group [`GROUP`], whose buffers are
//! 64 KiB *plus* the header and the name: the payload room is exactly the
//! readiness path's, and a datagram longer than it comes with `MSG_TRUNC`
//! (the kernel then reports its full length), which the endpoint turns into
//! the same `EMSGSIZE`. Made at the first datagram socket, [`COUNT`]
//! buffers (as the streams' ring: their total is the receive path's cache
//! footprint, and untouched pages cost nothing).
//!
//! # `user_data`
//! `generation << 32 | OP_TAG | DGRAM_TAG | slot`: bit 31 marks an
//! operation (streams.rs), bit 28 a datagram receive (bit 29 clear: not an
//! accept, accepts.rs; stream and accept slots stay below 2^28).
//!
//! # Ownership and safety
//! - A buffer is the kernel's while in the ring and ours from the
//!   completion that names it until it is given back: after the handler saw
//!   it (uring_datagram.rs, also if it panics), or at once when nobody will
//!   (released socket, stale completion). bufs.rs has the ring's rules.
//! - The `msghdr` the `RECVMSG` points at is boxed in the slot, unmoved,
//!   until the receive's final completion is reaped (the kernel copies it
//!   when it takes the SQE; keeping it longer costs nothing).
//! - Releasing a socket (its endpoint closes the fd next) cancels its
//!   receive and submits the cancellation at once, as a stream's release
//!   does, so the socket really closes with the fd; the slot (and its
//!   `msghdr`) lives until the final completion is reaped. Datagrams that
//!   raced the cancellation are given back undelivered.
//! - At the loop's close, the receives are cancelled and waited for with
//!   the streams' (streams.rs): the ring is dropped before this group's
//!   buffers, which are leaked rather than unmapped if the wait times out.

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use io_uring::{cqueue, opcode, types};
use rustix::io::Errno;
use rustix::io_uring::MsgHdr;

use super::bufs::BufRing;
use super::ops::Table;
use super::streams::OP_TAG;
use super::State;
use crate::reactor::Completed;
use crate::uring_datagram::DatagramHandler;

/// Bit 28 of `user_data` (with [`OP_TAG`], bit 29 clear): a datagram
/// receive's completion.
pub(super) const DGRAM_TAG: u64 = 1 << 28;
const KIND_MASK: u64 = OP_TAG | (1 << 29) | DGRAM_TAG;

/// The buffer group of the datagram ring (the streams' is 0).
pub(crate) const GROUP: u16 = 1;
/// Buffers in the datagram ring (a power of two).
pub(crate) const COUNT: u16 = 16;
/// `struct io_uring_recvmsg_out`: four `u32`s.
pub(crate) const OUT_HEADER: usize = 16;
/// The name field of every completion: a `sockaddr_storage`.
pub(crate) const NAME_LEN: usize = std::mem::size_of::<rustix::net::addr::SocketAddrStorage>();
/// The payload room: the readiness path's buffer (64 KiB).
pub(crate) const PAYLOAD: usize = 64 * 1024;
/// One buffer: header, name, payload.
pub(crate) const BUF_SIZE: usize = OUT_HEADER + NAME_LEN + PAYLOAD;

/// The datagram sockets (see the module docs).
pub(super) struct Datagrams {
    /// Each slot keeps the `msghdr` its receive points at (module docs).
    pub(super) table: Table<dyn DatagramHandler, Box<MsgHdr>>,
    /// The datagram buffer ring, made at the first socket.
    pub(super) bufs: Option<Rc<BufRing>>,
    /// The kernel refused the path once: every endpoint uses readiness.
    unavailable: bool,
}

impl Default for Datagrams {
    fn default() -> Self {
        Datagrams {
            table: Table::new(OP_TAG | DGRAM_TAG),
            bufs: None,
            unavailable: false,
        }
    }
}

impl Completed {
    /// Whether this is a datagram receive's completion (datagrams.rs).
    pub(crate) fn is_datagram(&self) -> bool {
        is_datagram(self.user_data)
    }
}

/// Whether `ud` is a datagram receive's `user_data`.
pub(super) fn is_datagram(ud: u64) -> bool {
    ud & KIND_MASK == OP_TAG | DGRAM_TAG
}

/// A `msghdr` asking for the sender's name and no control data.
fn new_msghdr() -> Box<MsgHdr> {
    Box::new(MsgHdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: NAME_LEN as rustix::net::addr::SocketAddrLen,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: rustix::net::RecvFlags::empty(),
    })
}

impl Datagrams {
    fn give_back(&self, flags: u32) {
        if let (Some(bid), Some(bufs)) = (cqueue::buffer_select(flags), &self.bufs) {
            bufs.give_back(bid);
        }
    }

    /// Books one completion of a receive; appends it to `done` when its
    /// handler must hear of it, gives its buffer back when none will.
    pub(super) fn reap_op(&mut self, ud: u64, res: i32, flags: u32, done: &mut Vec<Completed>) {
        let Some(r) = self.table.reap(ud, flags) else {
            self.give_back(flags);
            return;
        };
        let quiet = res == -Errno::NOBUFS.raw_os_error() || res == -Errno::CANCELED.raw_os_error();
        if r.live && !quiet && (res < 0 || cqueue::buffer_select(flags).is_some()) {
            done.push(Completed {
                user_data: ud,
                res,
                flags,
            });
        } else {
            self.give_back(flags);
        }
        // Receiving goes on after anything (asyncio keeps reading after
        // `error_received`), with the next wait.
        self.table.after_reap(&r, true, false);
    }

    /// After the loop's close timed out waiting for the kernel: leaks what
    /// it may still use (the buffers and the `msghdr`s), never frees it.
    pub(super) fn leak(&mut self) {
        if let Some(bufs) = self.bufs.take() {
            std::mem::forget(bufs);
        }
        for msg in self.table.take_extras() {
            std::mem::forget(msg);
        }
    }
}

impl State {
    /// Takes a slot for the datagram socket `fd`, registering the datagram
    /// buffer ring first if this is the loop's first. Returns `(slot,
    /// generation)`.
    pub(crate) fn datagram_open(
        &mut self,
        fd: RawFd,
        handler: Rc<dyn DatagramHandler>,
    ) -> io::Result<(u32, u32)> {
        if self.datagrams.unavailable {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        if self.datagrams.bufs.is_none() {
            self.datagrams.unavailable = true;
            // Multishot `RECVMSG` came with Linux 6.0 too.
            self.check_multishot()?;
            let bufs = BufRing::register_group(&self.ring, GROUP, COUNT, BUF_SIZE)?;
            self.datagrams.bufs = Some(Rc::new(bufs));
            self.datagrams.unavailable = false;
        }
        self.datagrams.table.open(fd, handler, new_msghdr())
    }

    /// Starts receiving: the next wait arms the multishot receive.
    pub(crate) fn datagram_start(&mut self, slot: u32, gen: u32) {
        self.datagrams.table.start(slot, gen);
    }

    /// Lets go of the socket (module docs, ops.rs).
    pub(crate) fn datagram_release(
        &mut self,
        slot: u32,
        gen: u32,
    ) -> (Option<Rc<dyn DatagramHandler>>, io::Result<()>) {
        self.release_op(|st| &mut st.datagrams.table, slot, gen)
    }

    /// The handler of a receive's completion and the buffer ring; no
    /// handler when the socket was released since (the caller still gives
    /// the buffer back).
    pub(crate) fn datagram_delivery(
        &mut self,
        c: &Completed,
    ) -> (Option<Rc<dyn DatagramHandler>>, Option<Rc<BufRing>>) {
        let bufs = self.datagrams.bufs.clone();
        let handler = self
            .datagrams
            .table
            .slot_of(c.user_data)
            .and_then(|s| s.handler.clone());
        (handler, bufs)
    }

    /// Every datagram handler, for the loop's close to drop outside the
    /// borrow.
    pub(crate) fn datagram_take_handlers(&mut self) -> Vec<Rc<dyn DatagramHandler>> {
        self.datagrams.table.forget_handlers()
    }

    /// Writes the `RECVMSG` SQEs the queued slots need (called by the wait
    /// before it submits).
    pub(super) fn arm_datagrams(&mut self) -> io::Result<()> {
        self.arm_table(
            |st| &mut st.datagrams.table,
            |fd, msg| {
                // The SQE points at the slot's boxed `msghdr`, which stays,
                // unmoved, until this receive's final completion is reaped
                // (module docs; `State::push` relies on it); its buffers
                // come from the ring, registered for the loop's life.
                // rustix's `MsgHdr` is the kernel's `struct user_msghdr`,
                // which is what the kernel reads there (io-uring's
                // parameter names it `libc::msghdr`: the same layout).
                let msg: *const MsgHdr = &**msg;
                opcode::RecvMsgMulti::new(types::Fd(fd), msg.cast(), GROUP).build()
            },
        )
    }
}
