//! Write flow control, shared by every transport that buffers writes (the
//! socket stream, the TLS stream, the write pipe, the datagram endpoint):
//! the water marks, and the queue of notices owed to the protocol
//! (`pause_writing`, `resume_writing`; for a datagram endpoint also
//! `error_received`).
//!
//! # Rules
//! - `pause_writing` is owed when the buffer goes above the high-water mark
//!   while the protocol is not paused; `resume_writing` when it drops to the
//!   low-water mark or below while it is. So every pause is paired with one
//!   resume. Each transport measures its own buffer (bytes, bytes plus
//!   rustls' pending plaintext, datagrams plus their overhead).
//! - Notices are delivered in order: at once when the protocol is free,
//!   else kept. A protocol is busy when it is the caller of `write()` (the
//!   dispatcher running its callback drains the queue right after it
//!   returns) or when a task holds its borrow across an await (a retry
//!   [`RETRY_DELAY`] later covers that: not `call_soon`, which would spin
//!   the loop for as long as the borrow lasts). One retry is pending at most.
//! - A drain started from inside a notice's callback (a `write` inside
//!   `resume_writing`) does nothing: the outer drain delivers what the
//!   callback queued, after the current notice. A protocol is never
//!   re-entered, and no borrow of the queue is held while user code runs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use loop_core::{EventLoop, ExceptionContext, LoopError};

use crate::protocol::AnyProtocol;
use crate::write_buffer::WriteBufferLimits;

/// How soon a delivery to a protocol that was busy is tried again (every
/// transport's `connection_made`, `connection_lost` and notices).
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(1);

/// A flow-control notice for a stream-like protocol ([`AnyProtocol`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Notice {
    /// `pause_writing`.
    Pause,
    /// `resume_writing`.
    Resume,
}

impl Notice {
    /// The protocol method it calls, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Notice::Pause => "pause_writing",
            Notice::Resume => "resume_writing",
        }
    }

    /// Calls the notice's method on `protocol`, catching a panic and
    /// reporting it to the exception handler (with what `transport` names,
    /// if anything, as context; asked only then). Hands the notice back
    /// when the protocol is busy.
    pub(crate) fn deliver(
        self,
        lp: &EventLoop,
        protocol: &AnyProtocol,
        transport: impl FnOnce() -> Option<String>,
    ) -> Option<Notice> {
        let delivered = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_with_base(|p| match self {
                Notice::Pause => p.pause_writing(),
                Notice::Resume => p.resume_writing(),
            })
        }));
        match delivered {
            Ok(true) => None,
            Ok(false) => Some(self),
            Err(payload) => {
                let what = self.name();
                let name = protocol.type_name();
                let mut context = ExceptionContext::new(format!("protocol.{what}() failed"))
                    .with_error(LoopError::panicked(format!("{name}.{what}()"), payload))
                    .with("protocol", name);
                if let Some(t) = transport() {
                    context = context.with("transport", t);
                }
                lp.call_exception_handler(context);
                None
            }
        }
    }
}

/// A transport's write flow control: its water marks, whether its protocol
/// is paused, and the notices (`N`) it is owed (see the module docs).
#[derive(Debug)]
pub(crate) struct WriteFlow<N = Notice> {
    limits: Cell<WriteBufferLimits>,
    /// The protocol was told `pause_writing` (or it is queued).
    paused: Cell<bool>,
    pending: RefCell<VecDeque<N>>,
    /// A drain is running (a protocol method it called re-entered).
    draining: Cell<bool>,
    /// A retry is scheduled (shared with the closure that runs it).
    retry_pending: Rc<Cell<bool>>,
}

impl<N> WriteFlow<N> {
    /// Flow control with these water marks, not paused, nothing owed.
    pub(crate) fn new(limits: WriteBufferLimits) -> Self {
        WriteFlow {
            limits: Cell::new(limits),
            paused: Cell::new(false),
            pending: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
            retry_pending: Rc::new(Cell::new(false)),
        }
    }

    /// The water marks.
    pub(crate) fn limits(&self) -> WriteBufferLimits {
        self.limits.get()
    }

    /// Sets the water marks; the caller then checks the high one.
    pub(crate) fn set_limits(&self, limits: WriteBufferLimits) {
        self.limits.set(limits);
    }

    /// Whether the protocol is paused (told, or about to be told,
    /// `pause_writing` without its `resume_writing` yet).
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.get()
    }

    /// A buffer of `size` pauses the protocol if it is above the high-water
    /// mark and the protocol is not paused yet: true when `pause_writing`
    /// is now owed.
    pub(crate) fn pause_if_above(&self, size: usize) -> bool {
        if !self.paused.get() && size > self.limits.get().high {
            self.paused.set(true);
            return true;
        }
        false
    }

    /// A buffer of `size` resumes the paused protocol if it is at or below
    /// the low-water mark: true when `resume_writing` is now owed.
    pub(crate) fn resume_if_at_or_below(&self, size: usize) -> bool {
        if self.paused.get() && size <= self.limits.get().low {
            self.paused.set(false);
            return true;
        }
        false
    }

    /// Queues a notice, after those already owed.
    pub(crate) fn push(&self, notice: N) {
        self.pending.borrow_mut().push_back(notice);
    }

    /// Whether no notice is owed (used by the TLS upgrade's detach).
    #[cfg(any(test, feature = "tls"))]
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.borrow().is_empty()
    }

    /// Forgets the notices owed (the protocol is gone).
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.pending.borrow_mut());
        drop(dropped);
    }

    /// Delivers the owed notices in order through `deliver`, which hands a
    /// notice back when the protocol is busy: it then stays first, and the
    /// drain returns false (the caller schedules a retry). Inside a running
    /// drain (re-entered from a notice's callback) it does nothing and
    /// returns true.
    pub(crate) fn drain(&self, mut deliver: impl FnMut(N) -> Option<N>) -> bool {
        if self.draining.replace(true) {
            return true;
        }
        let mut done = true;
        loop {
            let Some(notice) = self.pending.borrow_mut().pop_front() else {
                break;
            };
            if let Some(notice) = deliver(notice) {
                self.pending.borrow_mut().push_front(notice);
                done = false;
                break;
            }
        }
        self.draining.set(false);
        done
    }

    /// Runs `f` [`RETRY_DELAY`] from now, unless a retry is already
    /// pending (that one covers everything).
    pub(crate) fn retry_later(&self, lp: &EventLoop, f: impl FnOnce() + 'static) {
        if self.retry_pending.replace(true) {
            return;
        }
        let pending = self.retry_pending.clone();
        let scheduled = lp.call_later(RETRY_DELAY, move || {
            pending.set(false);
            f();
        });
        if scheduled.is_err() {
            self.retry_pending.set(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pause_is_paired_with_one_resume() {
        let flow: WriteFlow = WriteFlow::new(WriteBufferLimits { high: 10, low: 4 });
        assert!(!flow.pause_if_above(10), "at the mark is not above it");
        assert!(flow.pause_if_above(11));
        assert!(!flow.pause_if_above(20), "already paused");
        assert!(!flow.resume_if_at_or_below(5));
        assert!(flow.resume_if_at_or_below(4));
        assert!(!flow.resume_if_at_or_below(0), "already resumed");
        assert!(!flow.is_paused());
    }

    #[test]
    fn a_busy_protocol_keeps_its_notice_first_and_a_nested_drain_does_nothing() {
        let flow: WriteFlow<u32> = WriteFlow::new(WriteBufferLimits::default());
        flow.push(1);
        flow.push(2);
        let mut got = Vec::new();
        assert!(!flow.drain(|n| if n == 2 {
            Some(n)
        } else {
            got.push(n);
            None
        }));
        assert_eq!(got, [1]);
        flow.push(3);
        let mut got = Vec::new();
        assert!(flow.drain(|n| {
            assert!(flow.drain(|_| panic!("re-entered")));
            got.push(n);
            None
        }));
        assert_eq!(got, [2, 3]);
        assert!(flow.is_empty());
    }
}
