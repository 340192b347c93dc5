//! The TLS transport's handshake (a child module of `tls_stream`): its
//! completion, its timeout and failure, and `connection_made` after it.
//! The `Handshaking` state is described in tls/stream.rs.

use std::io;
use std::rc::Rc;

use loop_core::ExceptionContext;

use crate::flow::FlowOwner;
use crate::lifecycle;
use crate::transport::Transport;

use super::{State, TlsStream};

impl TlsStream {
    pub(super) fn handshake_complete(self: &Rc<Self>) {
        if let Some(t) = self.handshake_timer.borrow_mut().take() {
            t.cancel();
        }
        self.set_state(State::Open);
        self.pre_handshake.set(0);
        // Nothing is read until the protocol may be given data.
        self.stop_reading();
        let me = self.clone();
        let scheduled = if self.announce {
            let t = Transport {
                inner: self.clone(),
            };
            lifecycle::schedule_made(&me, t)
        } else {
            // start_tls: its caller resumes first (its wake-up is queued
            // now), then delivery starts.
            self.set_ready();
            self.life
                .lp()
                .call_soon(move || {
                    me.life.set_made();
                    me.maybe_pause_protocol();
                    me.kick();
                })
                .map(drop)
        };
        if scheduled.is_err() {
            self.finish_lost();
        }
    }

    pub(super) fn on_handshake_timeout(self: &Rc<Self>) {
        self.handshake_timer.borrow_mut().take();
        if self.state() == State::Handshaking {
            self.handshake_failed(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "SSL handshake is taking longer than {} seconds: aborting the connection",
                    super::asyncio_seconds(self.handshake_timeout)
                ),
            ));
        }
    }

    /// The handshake failed: close everything, tell the waiter (or, for a
    /// server's connection, the exception handler in debug mode).
    pub(super) fn handshake_failed(self: &Rc<Self>, error: io::Error) {
        self.end_handshake(error, true);
    }

    /// [`handshake_failed`](Self::handshake_failed); `report: false` when
    /// the user ended it (`close`, `abort`, `Server::close_clients`).
    pub(super) fn end_handshake(self: &Rc<Self>, error: io::Error, report: bool) {
        if self.state() != State::Handshaking {
            return;
        }
        // Ended: a call the report below leads to finds it so.
        self.set_state(State::Closing);
        self.life.claim_lost();
        if self.report_failure {
            if report && self.life.lp().get_debug() {
                let peer = self
                    .peername
                    .as_ref()
                    .map(|a| format!("{a:?}"))
                    .unwrap_or_default();
                self.life.lp().call_exception_handler(
                    ExceptionContext::new("SSL handshake failed")
                        .with_error(error)
                        .with("peername", peer)
                        .with("transport", format!("fd={}", self.raw)),
                );
            }
        } else {
            *self.failure.borrow_mut() = Some(error);
        }
        self.finish_lost();
    }

    /// A failure: of the handshake, or of the open connection.
    pub(super) fn fail(self: &Rc<Self>, error: io::Error) {
        if self.state() == State::Handshaking {
            self.handshake_failed(error);
        } else {
            self.fatal(error);
        }
    }
}
