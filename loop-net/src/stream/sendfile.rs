//! The socket stream transport's side of `loop.sendfile` (the sequence is in
//! sendfile/transport.rs). A child module of `stream`, so that it reaches
//! the transport's state without widening it.
//!
//! # Invariants
//! - While a sendfile runs, the protocol's `write`/`writelines` are refused
//!   (asyncio's "unable to write; sendfile is in progress"); the fallback
//!   writes through [`SendfileSupport::sendfile_write`], which is not.
//! - While it runs, `pause_writing`/`resume_writing` are not delivered
//!   (`Stream::notify` drops them; the flow control still tracks the
//!   buffer); `sendfile_end` delivers the one notice that brings the
//!   protocol to the transport's state (the shared `SendfileState`,
//!   sendfile/transport.rs), so every notice stays paired.
//! - The sendfile task's waker is woken whenever what it waits for may have
//!   changed: bytes left the buffer (`after_drain`), the transport started
//!   closing (`close_impl`, `force_close`) or was lost (`finish_lost`).

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};

use loop_core::{ErrorKind, LoopError};

use super::{Notice, State, Stream};
use crate::flow::FlowOwner;
use crate::sendfile::transport::{closed_during_sendfile, SendfileSupport};

impl SendfileSupport for Stream {
    fn native_socket(&self) -> Option<io::Result<OwnedFd>> {
        let fd = self.fd.borrow();
        Some(match fd.as_ref() {
            Some(fd) => fd.try_clone(),
            None => Err(closed_during_sendfile()),
        })
    }

    fn sendfile_begin(&self) -> Result<(), LoopError> {
        if self.upgrade.in_progress() {
            // The socket is about to become a TLS transport's.
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "sendfile: a start_tls is in progress on this transport",
            ));
        }
        self.sendfile.begin(self.flow.is_paused())
    }

    fn sendfile_end(&self) {
        let Some(told_paused) = self.sendfile.end() else {
            return;
        };
        if self.life.lost_claimed() || self.life.state() == State::Lost {
            return;
        }
        let paused = self.flow.is_paused();
        if paused != told_paused {
            self.notify(if paused {
                Notice::Pause
            } else {
                Notice::Resume
            });
        }
    }

    fn poll_sendfile_ready(
        &self,
        cx: &mut Context<'_>,
        at_most: Option<usize>,
    ) -> Poll<io::Result<()>> {
        if self.life.state() != State::Open || self.life.lost_claimed() {
            return Poll::Ready(Err(closed_during_sendfile()));
        }
        if let Some(n) = at_most {
            if self.buffered() <= n {
                return Poll::Ready(Ok(()));
            }
        }
        self.sendfile.wait(cx)
    }

    fn sendfile_write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.rc().write_impl(&[data])
    }
}
