//! Closing the TLS transport (a child module of `tls_stream`): `close()`
//! with its flush, `close_notify` and half-close under the shutdown timer,
//! `abort()` and fatal errors, and the one `connection_lost` (the
//! `Closing`, `ShuttingDown` and `Lost` states of tls/stream.rs; the rules
//! of `connection_lost` are lifecycle.rs's).

use std::io;
use std::rc::Rc;

use loop_core::{ExceptionContext, LoopError};

use crate::flow::FlowOwner;
use crate::lifecycle::{self, Lifecycle, LifecycleOwner};
use crate::protocol::AnyProtocol;

use super::{State, TlsStream};

impl TlsStream {
    pub(super) fn close_impl(self: &Rc<Self>) {
        match self.state() {
            State::Handshaking => self.end_handshake(
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the transport was closed during the TLS handshake",
                ),
                false,
            ),
            State::Open => {
                self.set_state(State::Closing);
                self.sendfile.wake();
                self.stop_reading();
                // `pending_in` stays: its records come before the peer's
                // close_notify, which is looked for once flushed.
                self.conn.borrow_mut().send_close_notify();
                let me = self.clone();
                if let Ok(t) = self
                    .life
                    .lp()
                    .call_later(self.shutdown_timeout, move || me.on_shutdown_timeout())
                {
                    *self.shutdown_timer.borrow_mut() = Some(t);
                }
                if !self.flush_tls() {
                    return;
                }
                if self.out_pending() == 0 && !self.life.lost_claimed() {
                    self.flushed_on_close();
                }
            }
            _ => {}
        }
    }

    /// Everything, our `close_notify` last, is in the kernel's hands.
    pub(super) fn flushed_on_close(self: &Rc<Self>) {
        self.shutdown_write();
        if self.peer_closed.get() || self.tcp_eof.get() {
            self.schedule_lost(None);
            return;
        }
        self.set_state(State::ShuttingDown);
        // The peer's close_notify may already sit in rustls, or in the
        // ciphertext kept while reading was paused.
        self.feed_backlog(&[]);
        if self.dead() {
            return;
        }
        self.discard_plaintext();
        if !self.life.lost_claimed() {
            self.start_reading();
        }
    }

    fn on_shutdown_timeout(self: &Rc<Self>) {
        self.shutdown_timer.borrow_mut().take();
        match self.state() {
            State::Closing => self.force_close(Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "SSL shutdown timed out: the data was not flushed within {} seconds",
                    super::asyncio_seconds(self.shutdown_timeout)
                ),
            ))),
            // Our side is done; the peer did not answer our close_notify:
            // asyncio's `_check_shutdown_timeout` (SHUTDOWN state) forces
            // the close with a TimeoutError, which `connection_lost` gets.
            State::ShuttingDown => self.force_close(Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "SSL shutdown timed out",
            ))),
            _ => {}
        }
    }

    pub(super) fn force_close(self: &Rc<Self>, error: Option<io::Error>) {
        if self.state() == State::Handshaking {
            // An error reaches here only from user code (a panicking
            // callback cannot run before the handshake): do not report it.
            let report = error.is_some();
            let error = error.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the transport was aborted during the TLS handshake",
                )
            });
            self.end_handshake(error, report);
            return;
        }
        if self.life.lost_claimed() {
            return;
        }
        self.dropped_on_loss.set(self.out_pending());
        self.buffer.borrow_mut().clear();
        self.ring.discard();
        self.pending_in.clear();
        self.stop_writing();
        self.stop_reading();
        self.cancel_timers();
        self.set_state(State::Closing);
        self.sendfile.wake();
        self.schedule_lost(error);
    }

    pub(super) fn fatal(self: &Rc<Self>, error: io::Error) {
        self.force_close(Some(error));
    }

    pub(super) fn schedule_lost(self: &Rc<Self>, error: Option<io::Error>) {
        lifecycle::schedule_lost(self, error);
    }

    /// Closes the socket and lets go of everything (lifecycle.rs).
    pub(super) fn finish_lost(&self) {
        lifecycle::finish_lost(self);
    }
}

impl LifecycleOwner for TlsStream {
    type Protocol = AnyProtocol;

    fn life(&self) -> &Lifecycle<AnyProtocol> {
        &self.life
    }

    fn made_delivered(&self) {
        self.set_ready();
    }

    fn after_made(self: &Rc<Self>) {
        self.drain_deferred();
        self.maybe_pause_protocol();
        if self.state() == State::Open {
            self.kick();
        }
    }

    fn protocol_failed(self: &Rc<Self>, what: &str, payload: Box<dyn std::any::Any + Send>) {
        let name = self.life.protocol().type_name();
        let err = LoopError::panicked(format!("{name}.{what}()"), payload);
        self.life.lp().call_exception_handler(
            ExceptionContext::new(format!("Fatal error: protocol.{what}() call failed."))
                .with_error(err.clone())
                .with("transport", format!("fd={} (TLS)", self.raw))
                .with("protocol", name),
        );
        self.force_close(Some(io::Error::other(err.to_string())));
    }

    fn lost_scheduled(self: &Rc<Self>) {
        self.sendfile.wake();
        self.stop_reading();
    }

    fn owes_lost(&self) -> bool {
        !self.announce || self.life.is_made()
    }

    fn deliver_lost(self: &Rc<Self>, protocol: &AnyProtocol, error: Option<io::Error>) {
        if let Some(lp) = self.life.get_loop() {
            let _ = protocol.deliver_connection_lost(&lp, error, "TLS transport");
        }
    }

    fn close_resources(&self) {
        self.sendfile.wake();
        self.cancel_timers();
        self.stop_reading();
        self.stop_writing();
        self.buffer.borrow_mut().clear();
        self.pending_in.clear();
        // Before the fd closes: the kernel lets go of the socket with it.
        self.ring.release();
        let fd = self.fd.borrow_mut().take();
        drop(fd);
        self.wake_waiters();
    }

    fn lost_hook(&self) {
        // Taken first: no borrow of ours is held while the hook runs.
        let hook = self.on_lost.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}
