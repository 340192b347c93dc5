//! The TLS transport's write path (a child module of `tls_stream`):
//! plaintext in, records out through the sink, and the flow control of
//! the write buffer.
//!
//! `write()` encrypts at once (rustls' own buffer limit is off) and moves
//! every record rustls has to send into the socket through a sink that
//! sends first and buffers only what the socket did not take; so
//! the transport's write buffer holds all pending ciphertext and the water
//! marks see it (plus, before the handshake completes, the plaintext
//! rustls holds for it). One `sendmsg` per flush. Every path that grows
//! the buffer calls `maybe_pause_protocol` (`flush_tls`); every path that
//! shrinks it `maybe_resume_protocol`. Handshake replies, alerts and key
//! updates leave the same way. On the completion path the sink hands the
//! records to the loop instead (ring.rs's write rule), which holds them,
//! counted by the water marks, until the kernel took them; each send
//! completion runs `after_drain` (tls/stream/completion.rs).

use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use loop_core::{ErrorKind, LoopError};
use rustix::net::{SendAncillaryBuffer, SendFlags, Shutdown};

use super::{State, TlsStream};
use crate::flow::{FlowOwner, Notice, WriteFlow};

impl TlsStream {
    /// Moves everything rustls has to send into the socket (or, for what it
    /// does not take, the write buffer). False when a send failed and the
    /// connection was failed.
    pub(super) fn flush_tls(self: &Rc<Self>) -> bool {
        loop {
            let mut conn = self.conn.borrow_mut();
            if !conn.wants_write() {
                break;
            }
            let mut sink = Sink { stream: self };
            if conn.write_tls(&mut sink).is_err() {
                break;
            }
        }
        let error = self.write_error.borrow_mut().take();
        if let Some(e) = error {
            self.fail(e);
            return false;
        }
        if self.out_pending() > 0 && !self.dead() {
            if !self.ring.is_on() {
                self.start_writing();
            }
            self.maybe_pause_protocol();
        }
        true
    }

    fn sendmsg(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let r = self
                .with_fd(|fd| {
                    if bufs.len() == 1 {
                        rustix::net::send(fd, &bufs[0], SendFlags::NOSIGNAL)
                    } else {
                        rustix::net::sendmsg(
                            fd,
                            bufs,
                            &mut SendAncillaryBuffer::default(),
                            SendFlags::NOSIGNAL,
                        )
                    }
                })
                .unwrap_or(Ok(0));
            match r {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) fn write_impl(self: &Rc<Self>, chunks: &[&[u8]]) -> Result<(), LoopError> {
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.dead() || !matches!(self.state(), State::Handshaking | State::Open) {
            // Closing sent (or is sending) close_notify: nothing may follow.
            self.writes_after_lost.set(self.writes_after_lost.get() + 1);
            return Ok(());
        }
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let written = {
            let mut conn = self.conn.borrow_mut();
            let mut writer = conn.writer();
            chunks.iter().try_for_each(|c| writer.write_all(c))
        };
        if let Err(e) = written {
            self.fatal(e);
            return Ok(());
        }
        if self.state() == State::Handshaking {
            // rustls sends it when the handshake completes.
            self.pre_handshake.set(self.pre_handshake.get() + total);
            self.maybe_pause_protocol();
            return Ok(());
        }
        self.flush_tls();
        Ok(())
    }

    pub(super) fn on_writable(self: &Rc<Self>) {
        if !self.writing.get() {
            return;
        }
        let sent = self.buffer.borrow().send_pending(|buffer| {
            let (a, b) = buffer.as_slices();
            self.sendmsg(&[IoSlice::new(a), IoSlice::new(b)])
        });
        match sent {
            Ok(n) => {
                self.buffer.borrow_mut().consume(n);
                self.after_drain();
            }
            Err(e) => self.fail(e),
        }
        self.drain_deferred();
    }

    pub(super) fn after_drain(self: &Rc<Self>) {
        self.sendfile.wake();
        self.maybe_resume_protocol();
        if self.out_pending() > 0 {
            return;
        }
        self.stop_writing();
        match self.state() {
            State::Closing if !self.life.lost_claimed() => self.flushed_on_close(),
            State::Open if self.eof.get() => self.shutdown_write(),
            _ => {}
        }
    }

    pub(super) fn shutdown_write(&self) {
        if !self.shut_wr.replace(true) {
            let _ = self.with_fd(|fd| rustix::net::shutdown(fd, Shutdown::Write));
        }
    }

    pub(super) fn write_buffer_len(&self) -> usize {
        self.out_pending() + self.pre_handshake.get()
    }

    /// Ciphertext not yet taken by the kernel: the write buffer's, or on
    /// the completion path the loop's (in flight too).
    pub(super) fn out_pending(&self) -> usize {
        match self.ring.buffered() {
            Some(n) => n,
            None => self.buffer.borrow().len(),
        }
    }

    /// Runs `f`, then kicks, once the protocol is free (right after its
    /// running method or `with_mut` closure returns); one pending deferral
    /// (shared with the notices, flow.rs) drains and kicks everything.
    pub(super) fn when_protocol_free(&self, f: impl FnOnce(&Rc<TlsStream>) + 'static) {
        let me = self.rc();
        let protocol = self.life.protocol();
        self.flow.drain_when_free(
            |job| protocol.when_free(job),
            move || {
                f(&me);
                me.kick();
            },
        );
    }
}

impl FlowOwner for TlsStream {
    fn flow(&self) -> &WriteFlow<Notice> {
        &self.flow
    }
    fn buffered(&self) -> usize {
        self.write_buffer_len()
    }
    fn drain_deferred(&self) {
        if !self
            .flow
            .drain_to(&self.life, || format!("fd={} (TLS)", self.raw))
        {
            self.when_protocol_free(|me| me.drain_deferred());
        }
    }
    /// Not before the protocol may be given anything.
    fn may_pause(&self) -> bool {
        self.life.is_made()
    }
    /// Held while a sendfile runs (tls/stream/sendfile.rs).
    fn holds_notices(&self) -> bool {
        self.sendfile.holds_notices()
    }
}

/// rustls' `write_tls` target: sends at once, buffers only what the socket
/// did not take; it always accepts everything, so rustls' own queue is empty
/// after each flush. A send error is kept for `flush_tls` to act on.
struct Sink<'a> {
    stream: &'a TlsStream,
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(data)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let s = self.stream;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if s.dead() || s.write_error.borrow().is_some() {
            return Ok(total);
        }
        if s.ring.is_on() {
            // rustls hands a few records at a time: no allocation for them.
            let mut few: [&[u8]; 8] = [&[]; 8];
            let many: Vec<&[u8]>;
            let chunks: &[&[u8]] = if bufs.len() <= few.len() {
                for (slot, b) in few.iter_mut().zip(bufs) {
                    *slot = b;
                }
                &few[..bufs.len()]
            } else {
                many = bufs.iter().map(|b| &b[..]).collect();
                &many
            };
            // `send_now` is given these very chunks: send the slices.
            let written = s.ring.write(chunks, s.urgent.get(), |_| s.sendmsg(bufs));
            if let Some(Err(e)) = written {
                *s.write_error.borrow_mut() = Some(e);
            }
            return Ok(total);
        }
        let mut skip = 0;
        if s.buffer.borrow().is_empty() {
            match s.sendmsg(bufs) {
                Ok(n) => skip = n,
                Err(e) => {
                    *s.write_error.borrow_mut() = Some(e);
                    return Ok(total);
                }
            }
        }
        if skip < total {
            s.buffer.borrow_mut().extend_unsent(bufs, skip);
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
