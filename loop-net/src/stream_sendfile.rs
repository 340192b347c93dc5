//! The socket stream transport's side of `loop.sendfile` (the sequence is in
//! transport_sendfile.rs). A child module of `stream`, so that it reaches
//! the transport's state without widening it.
//!
//! # Invariants
//! - While a sendfile runs (`active`), the protocol's `write`/`writelines`
//!   are refused (asyncio's "unable to write; sendfile is in progress"); the
//!   fallback writes through [`SendfileSupport::sendfile_write`], which is
//!   not.
//! - While it runs, `pause_writing`/`resume_writing` are not delivered
//!   (`Stream::notify` drops them; `protocol_paused` still tracks the
//!   buffer). `told_paused` is what the current protocol was last told:
//!   the state at `sendfile_begin`, or "not paused" for a protocol installed
//!   meanwhile. `sendfile_end` delivers the one notice that brings the
//!   protocol to the transport's state, so every notice stays paired.
//! - The sendfile task's waker is woken whenever what it waits for may have
//!   changed: bytes left the buffer (`after_drain`), the transport started
//!   closing (`close_impl`, `force_close`) or was lost (`finish_lost`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll, Waker};

use loop_core::LoopError;

use super::{Notice, State, Stream};
use crate::transport_sendfile::{closed_during_sendfile, write_refused, SendfileSupport};

/// A stream transport's sendfile state.
#[derive(Default)]
pub(super) struct SendfileState {
    active: Cell<bool>,
    told_paused: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl SendfileState {
    /// Refuses the protocol's writes while a sendfile runs.
    pub(super) fn check_write(&self) -> Result<(), LoopError> {
        if self.active.get() {
            Err(write_refused())
        } else {
            Ok(())
        }
    }

    /// Whether flow-control notices are held back now.
    pub(super) fn holds_notices(&self) -> bool {
        self.active.get()
    }

    /// `set_protocol` ran: the new protocol has been told nothing.
    pub(super) fn protocol_replaced(&self) {
        self.told_paused.set(false);
    }

    /// Wakes the sendfile task, if one waits.
    pub(super) fn wake(&self) {
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl SendfileSupport for Stream {
    fn native_socket(&self) -> Option<io::Result<OwnedFd>> {
        let fd = self.fd.borrow();
        Some(match fd.as_ref() {
            Some(fd) => fd.try_clone(),
            None => Err(closed_during_sendfile()),
        })
    }

    fn sendfile_begin(&self) -> Result<(), LoopError> {
        let s = &self.sendfile;
        if s.active.get() {
            return Err(LoopError::new(
                loop_core::ErrorKind::InvalidState,
                "sendfile is already in progress on this transport",
            ));
        }
        s.active.set(true);
        s.told_paused.set(self.flow.is_paused());
        Ok(())
    }

    fn sendfile_end(&self) {
        let s = &self.sendfile;
        if !s.active.replace(false) {
            return;
        }
        drop(s.waker.borrow_mut().take());
        if self.lost_scheduled.get() || self.state.get() == State::Lost {
            return;
        }
        let paused = self.flow.is_paused();
        if paused != s.told_paused.get() {
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
        if self.state.get() != State::Open || self.lost_scheduled.get() {
            return Poll::Ready(Err(closed_during_sendfile()));
        }
        if let Some(n) = at_most {
            if self.buffer.borrow().len() <= n {
                return Poll::Ready(Ok(()));
            }
        }
        let mut slot = self.sendfile.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn sendfile_write(&self, data: &[u8]) -> Result<(), LoopError> {
        self.rc().write_impl(&[data])
    }
}
