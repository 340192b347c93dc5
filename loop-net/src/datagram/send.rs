//! A datagram endpoint's send queue (a child module of `datagram`): the
//! write path, its flow control, and the notices to the protocol.
//!
//! `sendto` tries the socket at once when nothing is queued; a datagram the
//! kernel does not take now (`EAGAIN`) is copied into the queue (a
//! `VecDeque` of datagrams with their destinations), and only then is the
//! socket watched for writability. Datagrams leave in order. The queue's
//! size counts each datagram's bytes plus 8 bytes of overhead (asyncio's
//! accounting, so that empty datagrams count too). Every path that grows the
//! queue checks the high-water mark (`pause_writing`); every path that
//! shrinks it checks the low-water mark (`resume_writing`). Every error
//! branch of the flush ends in exactly one of: still armed for writability
//! (datagrams left), or unarmed with an empty queue, the protocol resumed if
//! it was paused and a pending close finished (lesson 4 of the design notes:
//! no lost wake-up after a send error).
//!
//! # Notices to a protocol in use
//! `pause_writing`, `resume_writing` and `error_received` caused by a
//! `sendto` are synchronous, as in asyncio, except when the protocol is the
//! caller (one of its methods or a `with_mut` closure on it runs): then they
//! are queued and delivered right after that returns, in order
//! ([`ProtocolHandle::when_free`](crate::ProtocolHandle::when_free)). A protocol method is never
//! re-entered, and the endpoint holds no borrow of its own state while user
//! code runs. Pending notices are delivered before `connection_lost`.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::{ErrorKind, LoopError};
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketAddrAny};

use crate::addr::SockAddr;

use super::{Endpoint, Notice, Queued, State};

/// What each queued datagram adds to the write buffer size on top of its
/// bytes (asyncio's `_header_size`).
const DATAGRAM_OVERHEAD: usize = 8;

impl Endpoint {
    /// One send: `Ok(true)` sent, `Ok(false)` the kernel would block.
    fn send_one(&self, data: &[u8], addr: Option<&SocketAddrAny>) -> io::Result<bool> {
        loop {
            let r = self.with_fd(|fd| match addr {
                Some(a) => rustix::net::sendto(fd, data, SendFlags::NOSIGNAL, a),
                None => rustix::net::send(fd, data, SendFlags::NOSIGNAL),
            });
            return match r {
                None => Ok(true), // the socket is gone: nothing to send on
                Some(Ok(_)) => Ok(true),
                Some(Err(Errno::INTR)) => continue,
                Some(Err(Errno::AGAIN)) => Ok(false),
                Some(Err(e)) => Err(e.into()),
            };
        }
    }

    pub(super) fn sendto_impl(
        self: &Rc<Self>,
        data: &[u8],
        addr: Option<SockAddr>,
    ) -> Result<(), LoopError> {
        // The destination: asyncio's address rules first.
        let given = match (&self.remote, addr) {
            (Some(remote), Some(a)) if a != *remote => {
                return Err(LoopError::new(
                    ErrorKind::InvalidArgument,
                    format!("Invalid address: must be None or {}", addr_text(remote)),
                ));
            }
            (Some(_), _) => None,
            (None, Some(a)) => Some(a.to_raw().map_err(|e| {
                LoopError::new(ErrorKind::InvalidArgument, format!("Invalid address: {e}"))
            })?),
            (None, None) if self.connected => None,
            (None, None) => {
                return Err(LoopError::new(
                    ErrorKind::InvalidArgument,
                    "Invalid address: the endpoint has no remote address, so sendto() needs one",
                ));
            }
        };
        if self.life.state() != State::Open {
            crate::transport::count_dropped_write(
                &self.sends_after_close,
                "socket.send() raised exception.",
            );
            return Ok(());
        }
        let dest = given.as_ref().or(self.remote_raw.as_ref());
        if self.queue.borrow().is_empty() {
            match self.send_one(data, dest) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.notify(Notice::Error(e));
                    return Ok(());
                }
            }
        }
        let addr = match given {
            Some(a) => Some(a),
            None => self.remote_raw.clone(),
        };
        self.queue.borrow_mut().push_back(Queued {
            data: data.to_vec(),
            addr,
        });
        self.buffer_size
            .set(self.buffer_size.get() + data.len() + DATAGRAM_OVERHEAD);
        self.start_writing();
        self.maybe_pause_protocol();
        Ok(())
    }

    pub(super) fn on_writable(self: &Rc<Self>) {
        if !self.writing.get() {
            return;
        }
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some(q) = next else { break };
            match self.send_one(&q.data, q.addr.as_ref()) {
                Ok(false) => {
                    self.queue.borrow_mut().push_front(q);
                    break;
                }
                Ok(true) => self.sent(&q),
                Err(e) => {
                    // Reported, dropped, and the flush goes on.
                    self.sent(&q);
                    self.flow.push(Notice::Error(e));
                }
            }
        }
        self.maybe_resume_protocol();
        if self.queue.borrow().is_empty() {
            self.stop_writing();
            if self.life.state() == State::Closing {
                self.schedule_lost(None);
            }
        }
        self.drain_deferred();
    }

    fn sent(&self, q: &Queued) {
        self.buffer_size.set(
            self.buffer_size
                .get()
                .saturating_sub(q.data.len() + DATAGRAM_OVERHEAD),
        );
    }

    pub(super) fn maybe_pause_protocol(&self) {
        if self.flow.pause_if_above(self.buffer_size.get()) {
            self.notify(Notice::Pause);
        }
    }

    /// Queues `resume_writing` if owed; the caller drains.
    fn maybe_resume_protocol(&self) {
        if self.flow.resume_if_at_or_below(self.buffer_size.get()) {
            self.flow.push(Notice::Resume);
        }
    }

    /// Delivers a notice now, or right after the protocol's running method
    /// (or `with_mut` closure) returns if it is in use.
    pub(super) fn notify(&self, notice: Notice) {
        if self.life.state() == State::Lost {
            return;
        }
        self.flow.push(notice);
        self.drain_deferred();
    }

    /// Delivers the queued notices in order (flow.rs); for a protocol in
    /// use, the rest is delivered right after it is free, so no notice is
    /// stranded.
    pub(super) fn drain_deferred(&self) {
        let delivered = self.flow.drain(|notice| {
            if self.life.state() == State::Lost {
                return None; // the protocol is released: nothing is owed
            }
            let protocol = self.life.protocol();
            if protocol.in_use() {
                return Some(notice);
            }
            let what = notice.name();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                protocol.try_call(|p| match notice {
                    Notice::Pause => p.pause_writing(),
                    Notice::Resume => p.resume_writing(),
                    Notice::Error(e) => p.error_received(e),
                })
            }));
            drop(protocol);
            if let Err(payload) = outcome {
                self.report_panic(what, payload);
            }
            None
        });
        if !delivered && self.life.get_loop().is_some() {
            let me = self.rc();
            let protocol = self.life.protocol();
            self.flow
                .drain_when_free(|job| protocol.when_free(job), move || me.drain_deferred());
        }
    }
}

/// An address as asyncio would print it in a message.
fn addr_text(a: &SockAddr) -> String {
    match a {
        SockAddr::Inet(a) => a.to_string(),
        SockAddr::Unix(p) => format!("{:?}", p.display().to_string()),
        other => format!("{other:?}"),
    }
}
