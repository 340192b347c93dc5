//! The TLS transport's side of `loop.sendfile` (the sequence is in
//! sendfile/transport.rs; a child module of `tls_stream`).
//!
//! Zero-copy cannot encrypt, so a TLS transport has no native path
//! (asyncio's `_SSLProtocolTransport` is `_SendfileMode.FALLBACK`): the
//! file is read in blocks and each block goes through the transport's own
//! write path, encrypted at once, the ciphertext sent or kept in the write
//! buffer that the water marks watch.
//!
//! # Invariants
//! - Sendfile mode needs an open connection whose writing side is open: not
//!   while handshaking (no user holds such a transport), not after
//!   `write_eof` (nothing may follow our `close_notify`).
//! - While a sendfile runs, the protocol's `write`/`writelines` are refused
//!   and its `pause_writing`/`resume_writing` held (`notify` drops them; the
//!   flow control still tracks the buffer); `sendfile_end` delivers the one
//!   notice that brings the protocol to the transport's state.
//! - The sendfile task is woken whenever what it waits for may have
//!   changed: ciphertext left the buffer (`after_drain`), the transport
//!   started closing (`close_impl`, `force_close`, `schedule_lost`) or was
//!   lost (`finish_lost`).

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};

use loop_core::{ErrorKind, LoopError};

use super::{State, TlsStream};
use crate::flow::FlowOwner;
use crate::flow::Notice;
use crate::sendfile::transport::{closed_during_sendfile, SendfileSupport};

impl SendfileSupport for TlsStream {
    fn native_socket(&self) -> Option<io::Result<OwnedFd>> {
        None
    }

    fn sendfile_begin(&self) -> Result<(), LoopError> {
        match self.state() {
            State::Open if !self.dead() => {}
            State::Handshaking => {
                return Err(LoopError::new(
                    ErrorKind::InvalidState,
                    "sendfile: the TLS handshake has not completed",
                ))
            }
            _ => {
                return Err(LoopError::new(
                    ErrorKind::InvalidState,
                    "Transport is closing",
                ))
            }
        }
        if self.eof.get() {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "Cannot call write() after write_eof()",
            ));
        }
        self.sendfile.begin(self.flow.is_paused())
    }

    fn sendfile_end(&self) {
        let Some(told_paused) = self.sendfile.end() else {
            return;
        };
        if self.dead() {
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
        if self.state() != State::Open || self.dead() {
            return Poll::Ready(Err(closed_during_sendfile()));
        }
        if let Some(n) = at_most {
            if self.write_buffer_len() <= n {
                return Poll::Ready(Ok(()));
            }
        }
        self.sendfile.wait(cx)
    }

    fn sendfile_write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.rc().write_impl(&[data])
    }
}
