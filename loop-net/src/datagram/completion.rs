//! A datagram endpoint's read path on io_uring's completion path (a child
//! module of `datagram`): used instead of readiness (recv.rs) when the loop
//! runs `Backend::Uring` (loop-core's `UringDatagram` says what the loop
//! does).
//!
//! One multishot receive per endpoint while it is open. Each datagram comes
//! as one completion: `datagram_received(data, addr)` gets the payload
//! straight from the loop's ring buffer (no copy). The rules are the
//! readiness path's: a datagram longer than 64 KiB (the payload room of a
//! ring buffer, the readiness path's buffer size; possible on Unix sockets
//! only) is dropped and reported to `error_received` as `EMSGSIZE`, not
//! delivered cut; a receive error (`ECONNREFUSED` after an ICMP port
//! unreachable on a connected endpoint) goes to `error_received`, and the
//! endpoint keeps receiving. Datagram transports have no `pause_reading`
//! (asyncio's have none either).
//!
//! `close()` and `abort()` stop reading at once: the receive is released
//! (cancelled, the cancellation submitted before the fd can close), and a
//! datagram that raced it is not delivered. Should a completion find the
//! protocol in use (a borrow held by the user across the loop's dispatch,
//! which the loop never does itself), the datagram is copied aside and
//! delivered, in order, once the protocol is free: a completion cannot be
//! left in the socket as a readiness can.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::DatagramHandler;
use rustix::net::SocketAddrAny;

use crate::addr::SockAddr;

use super::{Endpoint, State};

/// A datagram (or a receive error) copied aside while the protocol was in
/// use.
pub(super) type Stashed = io::Result<(Vec<u8>, SockAddr)>;

impl Endpoint {
    /// Opens the completion path if the loop offers it (called once, at
    /// creation).
    pub(super) fn open_completion(self: &Rc<Self>) {
        let handler: Rc<dyn DatagramHandler> = self.clone();
        let ring = self.life.lp().uring_datagram(self.raw, handler);
        *self.ring.borrow_mut() = ring;
    }

    /// `start_reading` on the completion path; false when not on it.
    pub(super) fn ring_start_reading(&self) -> bool {
        match &*self.ring.borrow() {
            Some(ring) => {
                ring.start();
                true
            }
            None => false,
        }
    }

    /// Stops reading for good (close, abort, the end): the receive is
    /// released before the fd closes; false when not on the path.
    pub(super) fn ring_release(&self) -> bool {
        let ring = self.ring.borrow_mut().take();
        match ring {
            Some(ring) => {
                let _ = ring.release();
                true
            }
            None => false,
        }
    }

    /// One datagram or error for the protocol, now or (in use) once free.
    fn deliver(self: &Rc<Self>, got: io::Result<(&[u8], SockAddr)>) {
        let protocol = self.life.protocol();
        if protocol.in_use() || !self.stash.borrow().is_empty() {
            let first = self.stash.borrow().is_empty();
            self.stash
                .borrow_mut()
                .push_back(got.map(|(d, a)| (d.to_vec(), a)));
            if first {
                let me = self.clone();
                protocol.when_free(move || me.flush_stash());
            }
            return;
        }
        self.call_protocol(&protocol, got);
    }

    fn call_protocol(
        self: &Rc<Self>,
        protocol: &super::DynProtocol,
        got: io::Result<(&[u8], SockAddr)>,
    ) {
        let what = if got.is_ok() {
            "datagram_received"
        } else {
            "error_received"
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_call(|p| match got {
                Ok((data, addr)) => p.datagram_received(data, addr),
                Err(e) => p.error_received(e),
            })
        }));
        if let Err(payload) = outcome {
            self.report_panic(what, payload);
        }
        self.drain_deferred();
    }

    /// Delivers what was copied aside, in order, while the endpoint reads
    /// and the protocol is free.
    fn flush_stash(self: &Rc<Self>) {
        loop {
            if self.life.state() != State::Open || !self.reading.get() {
                self.stash.borrow_mut().clear();
                return;
            }
            let protocol = self.life.protocol();
            if protocol.in_use() {
                let me = self.clone();
                protocol.when_free(move || me.flush_stash());
                return;
            }
            let Some(next) = self.stash.borrow_mut().pop_front() else {
                return;
            };
            match next {
                Ok((data, addr)) => self.call_protocol(&protocol, Ok((&data, addr))),
                Err(e) => self.call_protocol(&protocol, Err(e)),
            }
        }
    }
}

impl DatagramHandler for Endpoint {
    fn received(&self, data: &[u8], from: Option<SocketAddrAny>, truncated: bool) {
        if self.life.state() != State::Open || !self.reading.get() {
            return; // closing: nothing is delivered after close()
        }
        let me = self.rc();
        if truncated {
            // Longer than the buffer: dropped, not delivered cut (recv.rs).
            me.deliver(Err(io::Error::from_raw_os_error(libc::EMSGSIZE)));
            return;
        }
        let addr = from.map_or_else(|| self.unnamed.clone(), SockAddr::from_raw);
        me.deliver(Ok((data, addr)));
    }

    fn recv_failed(&self, error: io::Error) {
        if self.life.state() != State::Open || !self.reading.get() {
            return;
        }
        self.rc().deliver(Err(error));
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use loop_core::{Backend, DatagramHandler, EventLoop};

    use crate::datagram::recv::tests::{open, Rec};

    /// As recv.rs's test for readiness: a completion that finds the
    /// protocol in use copies the datagram aside and delivers it, in order
    /// before the ones after it, once the protocol is free.
    #[test]
    fn a_completion_that_finds_the_protocol_in_use_is_delivered_once_free() {
        let lp = EventLoop::builder()
            .backend(Backend::Uring)
            .build()
            .unwrap();
        if lp.backend() != Backend::Uring {
            return; // io_uring unavailable here
        }
        let (t, h) = open(&lp);
        assert!(
            t.inner.ring.borrow().is_some(),
            "not on the completion path"
        );
        h.with_mut(|p| {
            t.inner.received(b"one", None, false);
            t.inner.received(b"two", None, false);
            assert!(p.got.is_empty(), "re-entered");
        });
        let to = t.sockname().unwrap().as_inet().unwrap();
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"three", to)
            .unwrap();
        let h2 = h.clone();
        let got = lp
            .run_until_complete(async move {
                h2.wait_until(|p: &Rec| (p.got.len() == 3).then(|| p.got.clone()))
                    .await
            })
            .unwrap();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
        t.close();
        lp.run_until_complete(async {}).unwrap();
        lp.close().unwrap();
    }
}
