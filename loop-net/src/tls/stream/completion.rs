//! The TLS transport on io_uring's completion path (a child module of
//! `tls_stream`): used instead of readiness when the loop offers it
//! (loop-core's `UringStream`; what the plain and TLS transports share,
//! the write rule, the stash and the release before the fd closes, is
//! ring.rs's).
//!
//! # Read path
//! One multishot receive while the state wants reading (as
//! `start_reading` decides for readiness). The ciphertext is fed to rustls
//! straight from the loop's ring buffer (`ingest`, no copy into a buffer
//! of ours): record batch by record batch, the plaintext delivered in
//! between, and what rustls or the protocol cannot take now kept in order
//! in `pending_in`, as on readiness. Bytes that arrive while the transport
//! is not reading (paused, `connection_made` not yet delivered, the
//! protocol in use: the receive's cancellation races them) or behind a
//! backlog go to `pending_in` too, and a receive error behind them waits
//! there: the next `kick` feeds them first. So no `data_received` while
//! paused, nothing lost, nothing reordered. While `Closing` or
//! `ShuttingDown`, what comes is fed and its plaintext discarded, which is
//! how the peer's `close_notify` is seen.
//!
//! # Write path
//! The records rustls produces go through `Ring::write` (ring.rs's write
//! rule: queued with the next wait inside a delivery of several, the
//! socket tried first otherwise). The loop owns them until the kernel took
//! them, and `get_write_buffer_size()` counts them until then (plus the
//! plaintext rustls holds before the handshake completes); each send
//! completion runs the same `after_drain` as a readiness write
//! (`resume_writing`, the flush of `close`, the half-close of
//! `write_eof`). A send error is fatal (or fails the handshake). The alert
//! rustls writes for a failure is sent at once wherever it is written
//! (`urgent`): the stream is released right after, which would cancel it
//! queued.
//!
//! # The end
//! `abort()` and fatal errors drop what is not sent and cancel the send in
//! flight; `close_resources` releases the loop's stream before the fd
//! closes, so the socket really closes with it.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::StreamHandler;

use super::{State, TlsStream};
use crate::flow::FlowOwner;
use crate::lifecycle::LifecycleOwner;

impl TlsStream {
    /// Opens the completion path if the loop offers it (once, at start).
    pub(super) fn open_completion(self: &Rc<Self>) {
        let handler: Rc<dyn StreamHandler> = self.clone();
        self.ring.open(self.life.lp(), self.raw, handler);
    }

    /// Feeds `pending_in`, then `data`, to rustls: closing, the records
    /// kept while reading was paused still come before what follows.
    pub(super) fn feed_backlog(self: &Rc<Self>, data: &[u8]) {
        if self.pending_in.is_empty() {
            if !data.is_empty() {
                self.ingest(data);
            }
            return;
        }
        let mut all = self.pending_in.take();
        all.extend_from_slice(data);
        self.stalled.set(false);
        self.ingest(&all);
    }

    /// Whether bytes received now must wait behind others (or until the
    /// protocol may be given them): see the module docs.
    fn must_wait(&self) -> bool {
        match self.state() {
            State::Handshaking => self.stalled.get() || !self.pending_in.is_empty(),
            State::Open => {
                self.stalled.get()
                    || !self.pending_in.is_empty()
                    || !self.reading.get()
                    || !self.life.is_made()
                    || self.app_paused.get()
            }
            _ => false,
        }
    }
}

impl StreamHandler for TlsStream {
    fn received(&self, data: &[u8]) {
        if self.state() == State::Lost || self.life.lost_claimed() {
            return;
        }
        let me = self.rc();
        if self.must_wait() {
            self.pending_in.push(data);
            self.stalled.set(true);
            return;
        }
        if self.state() == State::Open && self.life.protocol().in_use() {
            // Cannot be (the loop delivers between callbacks); kept, and
            // fed once the protocol is free.
            self.pending_in.push(data);
            self.stalled.set(true);
            self.stop_reading();
            self.when_protocol_free(|_| {});
            return;
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| me.feed_backlog(data))) {
            me.protocol_failed("data_received", payload);
        }
        me.drain_deferred();
    }

    fn recv_ended(&self, error: Option<io::Error>) {
        if self.state() == State::Lost || self.life.lost_claimed() {
            return;
        }
        let me = self.rc();
        let outcome = catch_unwind(AssertUnwindSafe(|| match error {
            // Behind a backlog, `on_tcp_eof` waits for it (input.rs).
            None => me.on_tcp_eof(),
            Some(e) if me.state() == State::Open && me.must_wait() => {
                me.stop_reading();
                me.pending_in.set_error(e);
            }
            Some(e) => me.fail(e),
        }));
        if let Err(payload) = outcome {
            me.protocol_failed("eof_received", payload);
        }
        me.drain_deferred();
    }

    fn sent(&self, result: io::Result<usize>) {
        if self.state() == State::Lost || self.life.lost_claimed() {
            return;
        }
        let me = self.rc();
        match result {
            Ok(_) => me.after_drain(),
            Err(e) => me.fail(e),
        }
        me.drain_deferred();
    }
}
