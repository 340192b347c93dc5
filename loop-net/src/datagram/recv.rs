//! A datagram endpoint's read path (a child module of `datagram`) by
//! readiness; on the io_uring backend the endpoint reads by completion
//! instead (completion.rs), with the same rules.
//!
//! The socket is watched level-triggered while the endpoint is open. Each
//! readiness does at most 16 `recvmsg` calls, stopping at `EAGAIN` (bounded
//! work per loop iteration, so a flooding peer cannot starve timers and
//! other callbacks, without one poll per datagram under load) into a 64 KiB
//! buffer shared by every datagram endpoint of the thread (taken out of its
//! slot for the call and put back after): no allocation per datagram. The
//! protocol gets `datagram_received(&buf[..n], addr)`. A datagram longer than
//! the buffer (possible on Unix sockets only: a UDP payload is at most 65,527
//! bytes) is dropped and reported to `error_received` as `EMSGSIZE` rather
//! than delivered truncated. A receive error goes to `error_received`. The
//! protocol is free whenever the loop dispatches (no borrow of it lives
//! between callbacks); should a readiness find it in use, nothing is read,
//! the socket is unwatched (a level-triggered reader would spin) and
//! watched again right after the protocol is free.
//!

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvFlags, ReturnFlags};

use crate::addr::SockAddr;

use super::{Endpoint, State};

/// The largest datagram delivered whole; longer ones are dropped and
/// reported as `EMSGSIZE`.
pub(crate) const DATAGRAM_READ_SIZE: usize = 64 * 1024;

/// The most datagrams delivered per readiness (then the loop moves on).
const DATAGRAMS_PER_READINESS: usize = 16;

thread_local! {
    /// The receive buffer shared by every datagram endpoint of this thread.
    static DATAGRAM_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Endpoint {
    pub(super) fn on_readable(self: &Rc<Self>) {
        if self.life.state() != State::Open || !self.reading.get() {
            return;
        }
        let protocol = self.life.protocol();
        if protocol.in_use() {
            self.stop_reading();
            let me = self.clone();
            protocol.when_free(move || {
                if me.life.state() == State::Open {
                    me.start_reading();
                }
            });
            return;
        }
        let mut buf = DATAGRAM_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < DATAGRAM_READ_SIZE {
            buf.resize(DATAGRAM_READ_SIZE, 0);
        }
        // Up to DATAGRAMS_PER_READINESS datagrams per readiness: bounded
        // work per iteration (a flood cannot starve timers), without one
        // poll per datagram under load. One call into the protocol per
        // datagram, so that what it owes is delivered in between.
        let mut outcome = Ok(());
        let mut what = "";
        for _ in 0..DATAGRAMS_PER_READINESS {
            if self.life.state() != State::Open || !self.reading.get() {
                break;
            }
            let got = self.recv_one(&mut buf);
            let more = matches!(got, Ok(Some(_)));
            if matches!(got, Ok(None)) {
                break;
            }
            what = if more {
                "datagram_received"
            } else {
                "error_received"
            };
            let current = self.life.protocol();
            outcome = catch_unwind(AssertUnwindSafe(|| {
                current.try_call(|p| match got {
                    Ok(Some((n, addr))) => p.datagram_received(&buf[..n], addr),
                    Ok(None) => {}
                    Err(e) => p.error_received(e),
                })
            }))
            .map(drop);
            if outcome.is_err() || !more {
                break;
            }
        }
        drop(protocol);
        DATAGRAM_BUF.with(|b| {
            let mut slot = b.borrow_mut();
            if slot.is_empty() {
                *slot = buf;
            }
        });
        if let Err(payload) = outcome {
            self.report_panic(what, payload);
        }
        self.drain_deferred();
    }

    /// One `recvmsg`: the datagram's length and sender, `None` when there
    /// is nothing to read.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SockAddr)>> {
        loop {
            let got = self.with_fd(|fd| {
                let mut iov = [IoSliceMut::new(&mut *buf)];
                rustix::net::recvmsg(
                    fd,
                    &mut iov,
                    &mut RecvAncillaryBuffer::default(),
                    RecvFlags::empty(),
                )
            });
            return match got {
                // The socket is gone (closed while we were called).
                None => Ok(None),
                Some(Ok(msg)) => {
                    if msg.flags.contains(ReturnFlags::TRUNC) {
                        // Longer than the buffer: dropped, not delivered cut.
                        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
                    }
                    let addr = msg
                        .address
                        .map_or_else(|| self.unnamed.clone(), SockAddr::from_raw);
                    Ok(Some((msg.bytes, addr)))
                }
                Some(Err(Errno::INTR)) => continue,
                Some(Err(Errno::AGAIN)) => Ok(None),
                Some(Err(e)) => Err(e.into()),
            };
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{SocketAddr, UdpSocket};

    use loop_core::EventLoop;

    use crate::addr::SockAddr;
    use crate::datagram::ext::{DatagramLoopExt, DatagramOptions};
    use crate::datagram::{DatagramProtocol, DatagramTransport};
    use crate::protocol::ProtocolHandle;

    /// Records the datagrams it gets (also completion.rs's test).
    #[derive(Default)]
    pub(in crate::datagram) struct Rec {
        pub(in crate::datagram) got: Vec<Vec<u8>>,
    }

    impl DatagramProtocol for Rec {
        fn datagram_received(&mut self, data: &[u8], _addr: SockAddr) {
            self.got.push(data.to_vec());
        }
    }

    /// A [`Rec`] endpoint on 127.0.0.1.
    pub(in crate::datagram) fn open(lp: &EventLoop) -> (DatagramTransport, ProtocolHandle<Rec>) {
        let l = lp.clone();
        lp.run_until_complete(async move {
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            l.create_datagram_endpoint(
                Rec::default,
                DatagramOptions::default().with_local_addr(any),
            )
            .await
        })
        .unwrap()
        .unwrap()
    }

    /// As the stream transport's test (stream/input.rs): a readiness that
    /// finds the protocol in use reads nothing, unwatches the socket (no
    /// spin) and reads again once it is free (nothing lost).
    #[test]
    fn a_readiness_that_finds_the_protocol_in_use_unwatches_until_it_is_free() {
        let lp = EventLoop::new().unwrap();
        let (t, h) = open(&lp);
        let to = t.sockname().unwrap().as_inet().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(t.inner.reading.get());
        peer.send_to(b"one", to).unwrap();
        h.with_mut(|p| {
            t.inner.on_readable();
            assert!(p.got.is_empty(), "re-entered");
            assert!(!t.inner.reading.get(), "still watched while in use");
        });
        assert!(t.inner.reading.get(), "not watched again once free");
        let h2 = h.clone();
        let got = lp
            .run_until_complete(
                async move { h2.wait_until(|p: &Rec| p.got.first().cloned()).await },
            )
            .unwrap();
        assert_eq!(got, b"one");
        t.close();
        lp.run_until_complete(async {}).unwrap();
        lp.close().unwrap();
    }
}
