//! The socket stream transport's read path (a child module of `stream`):
//! watching the socket for reading, one `recv` per readiness into the
//! thread's shared read buffer (or a `BufferedProtocol`'s own), and the
//! peer's EOF.
//!
//! # Edge-triggered
//! The reader is registered edge-triggered where the backend allows it
//! (epoll: the kernel does not look at the socket again in every wait while
//! it stays readable, which tokio's sockets also avoid). A report then means
//! "became readable", so the path keeps three rules:
//! - a `recv` that filled its buffer, or was interrupted, schedules another
//!   read with `call_soon` (the next iteration, as a level-triggered report
//!   would), unless some other read ran first;
//! - a report of the peer's hang-up (or an error) turns the registration
//!   level-triggered for good (loop-core does it), so an EOF queued behind
//!   data is still read;
//! - pausing removes the reader and resuming adds it again, and adding looks
//!   at the socket: data that came in between is reported at once.
//!
//! The protocol is free whenever the loop dispatches (no borrow of it lives
//! between callbacks). Should a readiness ever find it in use (a protocol
//! method that somehow runs the dispatch), nothing is read: the socket is
//! unwatched, so a level-triggered reader cannot spin, and watched again
//! right after the protocol is free, so nothing is lost.

use std::cell::RefCell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use rustix::net::RecvFlags;

use super::{io_error, State, Stream};
use crate::flow::FlowOwner;
use crate::lifecycle::LifecycleOwner;
use crate::protocol::AnyProtocol;

/// How much one `recv` asks for (asyncio's `max_size` is 256 KiB; 64 KiB
/// keeps the shared buffer in L2 and is what uvloop reads).
pub(crate) const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// The read buffer shared by every transport of this thread's loop.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Stream {
    pub(super) fn start_reading(self: &Rc<Self>) {
        if self.reading.get() || self.read_eof.get() || self.life.state() != State::Open {
            return;
        }
        if self.ring.is_on() {
            self.ring_start_reading();
            return;
        }
        let me = self.clone();
        match self
            .life
            .lp()
            .add_reader_edge(self.raw, move || me.on_readable())
        {
            Ok(edge) => {
                self.edge.set(edge);
                self.reading.set(true);
            }
            Err(e) => self.fatal(io_error(e)),
        }
    }

    pub(super) fn stop_reading(&self) {
        if self.reading.replace(false) {
            if self.ring.is_on() {
                self.ring.stop_recv();
            } else {
                let _ = self.life.lp().remove_reader(self.raw);
            }
        }
    }

    fn on_readable(self: &Rc<Self>) {
        if self.life.state() != State::Open || !self.reading.get() {
            return;
        }
        let protocol = self.life.protocol();
        self.reads.set(self.reads.get().wrapping_add(1));
        let outcome = catch_unwind(AssertUnwindSafe(|| self.read_into(&protocol)));
        match outcome {
            Ok(Some(Ok((0, _)))) => self.on_eof(&protocol),
            Ok(Some(Ok((_, full)))) => {
                if full {
                    self.read_again();
                }
            }
            Ok(None) => self.read_when_free(&protocol),
            Ok(Some(Err(e))) => match e.kind() {
                io::ErrorKind::WouldBlock => {}
                io::ErrorKind::Interrupted => self.read_again(),
                _ => self.fatal(e),
            },
            Err(payload) => self.protocol_failed("data_received", payload),
        }
        self.drain_deferred();
    }

    /// After a read that may have left data behind: an edge-triggered
    /// reader gets no new report for it, so read again next iteration
    /// (unless another read runs first). Level-triggered, the report comes.
    fn read_again(self: &Rc<Self>) {
        if !self.edge.get() {
            return;
        }
        let Some(lp) = self.life.lp().get() else {
            return;
        };
        let seen = self.reads.get();
        let me = self.clone();
        let _ = lp.call_soon(move || {
            if me.reads.get() == seen {
                me.on_readable();
            }
        });
    }

    /// The protocol is in use: stop watching the socket until it is free.
    fn read_when_free(self: &Rc<Self>, protocol: &AnyProtocol) {
        self.stop_reading();
        let me = self.clone();
        protocol.when_free(move || {
            if me.life.is_made() && !me.user_paused.get() {
                me.start_reading();
            }
        });
    }

    /// One `recv` into the protocol: the bytes read and whether they filled
    /// the buffer; `None` (nothing read) when the protocol is in use.
    fn read_into(&self, protocol: &AnyProtocol) -> Option<io::Result<(usize, bool)>> {
        match protocol {
            AnyProtocol::Streaming(p) => p.try_call(|p| {
                let mut buf = READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let got =
                    self.with_fd(|fd| rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()));
                let result = match got {
                    // The socket is gone (closed while we were called): nothing to read.
                    None => Err(io::ErrorKind::WouldBlock.into()),
                    Some(Ok((n, _))) => {
                        if n > 0 {
                            p.data_received(&buf[..n]);
                        }
                        Ok((n, n == buf.len()))
                    }
                    Some(Err(e)) => Err(io::Error::from(e)),
                };
                READ_BUF.with(|b| {
                    let mut slot = b.borrow_mut();
                    if slot.is_empty() {
                        *slot = buf;
                    }
                });
                result
            }),
            AnyProtocol::Buffered(p) => p.try_call(|p| {
                let target = p.get_buffer(READ_SIZE);
                if target.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "get_buffer() returned an empty buffer",
                    ));
                }
                let asked = target.len();
                let got =
                    self.with_fd(|fd| rustix::net::recv(fd, &mut *target, RecvFlags::empty()));
                match got {
                    // The socket is gone (closed while we were called).
                    None => Err(io::ErrorKind::WouldBlock.into()),
                    Some(Ok((n, _))) => {
                        if n > 0 {
                            p.buffer_updated(n);
                        }
                        Ok((n, n == asked))
                    }
                    Some(Err(e)) => Err(io::Error::from(e)),
                }
            }),
        }
    }

    pub(super) fn on_eof(self: &Rc<Self>, protocol: &AnyProtocol) {
        self.read_eof.set(true);
        let keep_open = catch_unwind(AssertUnwindSafe(|| protocol.try_eof_received()));
        match keep_open {
            Ok(Some(true)) => self.stop_reading(),
            // None: in use, which cannot be (the EOF was just read inside
            // a call to it): the default answer.
            Ok(Some(false)) | Ok(None) => self.close_impl(),
            Err(payload) => self.protocol_failed("eof_received", payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use loop_core::EventLoop;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    use crate::protocol::{AnyProtocol, ProtocolHandle};
    use crate::stream::Stream;
    use crate::test_protocol::{check_in_use_read, Rec};
    use crate::transport::Transport;

    /// See `check_in_use_read` (test_protocol.rs).
    #[test]
    fn a_readiness_that_finds_the_protocol_in_use_unwatches_until_it_is_free() {
        let lp = EventLoop::new().unwrap();
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let h = ProtocolHandle::new(Rec::default());
        let (t, stream): (Transport, Rc<Stream>) =
            Stream::start_rc(&lp, ours, AnyProtocol::from(h.clone()), None).unwrap();
        check_in_use_read(
            &lp,
            &h,
            |data| {
                rustix::io::write(&theirs, data).unwrap();
            },
            || stream.on_readable(),
            || stream.reading.get(),
        );
        t.abort();
        drop(theirs);
        lp.run_until_complete(async {}).unwrap();
        lp.close().unwrap();
    }
}
