//! The socket stream transport on io_uring's completion path (a child
//! module of `stream`): used instead of readiness when the loop runs
//! `Backend::Uring` (loop-core's `UringStream` says what the loop does).
//! The parts the TLS transport's completion path shares with this one (the
//! loop's stream, the write rule, the stash, the release before the fd
//! closes) are in ring.rs.
//!
//! # Read path
//! One multishot receive per transport while it reads. `data_received`
//! gets the bytes straight from the loop's ring buffer (no copy); a
//! `BufferedProtocol` gets them copied into its `get_buffer()`, as many
//! buffers as they need. `pause_reading` cancels the receive, but bytes
//! the kernel received before the cancellation took effect still come:
//! they are kept in the *stash* (as is an EOF behind them) and delivered,
//! in order and before anything newer, right after `resume_reading`
//! (through `call_soon`, not from inside it). So no `data_received` while
//! paused, and nothing lost. A protocol found in use keeps its bytes the
//! same way until it is free.
//!
//! # Write path
//! A `write()` made while a completion is delivered (from `data_received`,
//! `resume_writing`, `eof_received`: an echo, a request answered), in an
//! iteration that delivers several, hands the bytes to the loop, which
//! sends what the iteration wrote in one `SEND`, submitted with the next
//! wait: no system call in `write()`, one `io_uring_enter` for every
//! stream's sends. With one completion alone, queueing saves nothing: the
//! send's own completion would end the next wait before the peer answers,
//! one more wake-up than a `send` now (1 KiB ping-pong on one connection:
//! ~15% more CPU per message than epoll that way). A `write()` made anywhere
//! else (a task, a timer: code that may go on to block, or wait on
//! something the loop does not see), and a large one anywhere (16 KiB and
//! more: queueing would copy it, which costs more than the system call it
//! saves), keeps the readiness path's rule, write first: with nothing
//! queued, the socket is tried at once and only the rest is queued
//! (`ring::QUEUE_BELOW`). Either way the bytes leave in order: once
//! something is queued, every later write queues behind it.
//! `get_write_buffer_size()` counts the queued bytes until the transport
//! is told the kernel took them (in flight too). Each send completion runs the same
//! `after_drain` as a readiness write: `resume_writing` at the low-water
//! mark, and once nothing is left the pending `close` (then
//! `connection_lost`) or `write_eof` (`shutdown(SHUT_WR)`). A send error
//! (`EPIPE`, `ECONNRESET`) is fatal, as a failed `send` is.
//!
//! # The end
//! `abort()` (and a fatal error) drops the bytes not yet sent and cancels
//! the send in flight; `connection_lost` then releases the loop's stream
//! (its cancellations submitted at once) *before* the fd is closed, so the
//! socket closes with the fd. `start_tls` leaves the path (upgrade.rs):
//! reading stops, and once the receive has ended and the buffer drained,
//! the stash goes to the TLS transport with the socket (which feeds it to
//! rustls first and goes on by completion: tls/stream/completion.rs).
//! `loop.sendfile` needs nothing of its own: it waits for the buffer to
//! drain and writes on a duplicate of the socket. Datagram endpoints have a
//! completion path of their own (datagram/completion.rs).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::StreamHandler;

use super::{State, Stream};

use crate::flow::FlowOwner;
use crate::lifecycle::LifecycleOwner;
use crate::protocol::AnyProtocol;

impl Stream {
    /// Opens the completion path if the loop offers it (called once, at
    /// creation).
    pub(super) fn open_completion(self: &Rc<Self>) {
        let handler: Rc<dyn StreamHandler> = self.clone();
        self.ring.open(self.life.lp(), self.raw, handler);
    }

    /// `start_reading` on the completion path.
    pub(super) fn ring_start_reading(self: &Rc<Self>) {
        self.reading.set(true);
        if self.stash.holds_anything() {
            let me = self.clone();
            let _ = self.life.lp().call_soon(move || me.flush_stash());
        }
        if let Err(e) = self.ring.start_recv() {
            self.fatal(e);
        }
    }

    /// Delivers the stash once reading resumed (then the EOF kept behind
    /// it).
    fn flush_stash(self: &Rc<Self>) {
        if !self.reading.get() || self.life.state() != State::Open {
            return;
        }
        let data = self.stash.take();
        if !data.is_empty() {
            self.deliver(&data);
        }
        let behind =
            self.stash.is_empty() && self.reading.get() && self.life.state() == State::Open;
        if !behind {
            return;
        }
        let error = self.stash.take_error();
        if let Some(e) = error {
            self.fatal(e);
        } else if self.stash.take_eof() {
            let protocol = self.life.protocol();
            self.on_eof(&protocol);
            self.drain_deferred();
        }
    }

    /// Bytes for the protocol, now.
    fn deliver(self: &Rc<Self>, data: &[u8]) {
        let protocol = self.life.protocol();
        self.reads.set(self.reads.get().wrapping_add(1));
        let outcome = catch_unwind(AssertUnwindSafe(|| self.deliver_to(&protocol, data)));
        match outcome {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => self.fatal(e),
            Ok(None) => {
                // In use: keep the bytes and read again once it is free.
                self.stash.push_front(data);
                self.stop_reading();
                let me = self.clone();
                protocol.when_free(move || {
                    if me.life.is_made() && !me.user_paused.get() {
                        me.start_reading();
                    }
                });
            }
            Err(payload) => self.protocol_failed("data_received", payload),
        }
        self.drain_deferred();
    }

    /// `data_received`, or `get_buffer`/`buffer_updated` as often as the
    /// bytes need; `None` when the protocol is in use. Bytes left when the
    /// protocol paused reading from inside go to the stash.
    fn deliver_to(&self, protocol: &AnyProtocol, data: &[u8]) -> Option<io::Result<()>> {
        match protocol {
            AnyProtocol::Streaming(p) => p.try_call(|p| {
                p.data_received(data);
                Ok(())
            }),
            AnyProtocol::Buffered(p) => p.try_call(|p| {
                let mut at = 0;
                while at < data.len() {
                    if !self.reading.get() || self.life.state() != State::Open {
                        self.stash.push_front(&data[at..]);
                        break;
                    }
                    let target = p.get_buffer(data.len() - at);
                    if target.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "get_buffer() returned an empty buffer",
                        ));
                    }
                    let n = target.len().min(data.len() - at);
                    target[..n].copy_from_slice(&data[at..at + n]);
                    p.buffer_updated(n);
                    at += n;
                }
                Ok(())
            }),
        }
    }
}

impl StreamHandler for Stream {
    fn received(&self, data: &[u8]) {
        self.upgrade.wake();
        if self.life.state() != State::Open || self.read_eof.get() {
            return; // closing: what comes in is not read (as with readiness)
        }
        if !self.reading.get() || !self.stash.is_empty() {
            self.stash.push(data);
            return;
        }
        self.rc().deliver(data);
    }

    fn recv_ended(&self, error: Option<io::Error>) {
        self.upgrade.wake();
        if self.life.state() != State::Open || self.read_eof.get() {
            return;
        }
        let me = self.rc();
        let behind = !self.reading.get() || !self.stash.is_empty();
        match error {
            // Not reading: met when reading resumes (or by the next send).
            Some(e) if behind => self.stash.set_error(e),
            Some(e) => me.fatal(e),
            None if behind => self.stash.set_eof(),
            None => {
                let protocol = self.life.protocol();
                me.on_eof(&protocol);
                me.drain_deferred();
            }
        }
    }

    fn recv_stopped(&self) {
        self.upgrade.wake();
    }

    fn sent(&self, result: io::Result<usize>) {
        if self.life.state() == State::Lost || self.life.lost_claimed() {
            return;
        }
        let me = self.rc();
        match result {
            Ok(_) => me.after_drain(),
            Err(e) => me.fatal(e),
        }
        me.drain_deferred();
    }
}
