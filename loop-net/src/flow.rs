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
//!   else kept. A protocol is in use only when the caller of `write()` is
//!   one of its own methods or a `with`/`with_mut` closure on it (no borrow
//!   lives between callbacks): the drain is then deferred on the protocol
//!   ([`WriteFlow::drain_when_free`]) and runs right after that method or
//!   closure returns, before anything else. One such deferral is pending at
//!   most; nothing is retried on a timer.
//! - A drain started from inside a notice's callback (a `write` inside
//!   `resume_writing`) does nothing: the outer drain delivers what the
//!   callback queued, after the current notice. A protocol is never
//!   re-entered, and no borrow of the queue is held while user code runs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use loop_core::{EventLoop, ExceptionContext, LoopError};

use crate::lifecycle::Lifecycle;
use crate::protocol::AnyProtocol;
use crate::write_buffer::WriteBufferLimits;

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
    /// when the protocol is in use.
    pub(crate) fn deliver(
        self,
        lp: &EventLoop,
        protocol: &AnyProtocol,
        transport: impl FnOnce() -> Option<String>,
    ) -> Option<Notice> {
        let delivered = catch_unwind(AssertUnwindSafe(|| {
            protocol.try_base(|p| match self {
                Notice::Pause => p.pause_writing(),
                Notice::Resume => p.resume_writing(),
            })
        }));
        match delivered {
            Ok(Some(())) => None,
            Ok(None) => Some(self),
            Err(payload) => {
                let what = self.name();
                let name = protocol.type_name();
                let mut context = ExceptionContext::new(format!("protocol.{what}() failed"))
                    .with_error(LoopError::panicked(format!("{name}.{what}()"), payload))
                    .with("protocol", name);
                if let Some(t) = transport() {
                    context = context.with("transport", t);
                }
                context = context.with("protocol", protocol.type_name());
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
    /// A drain is deferred until the protocol is free (shared with the
    /// closure that runs it).
    deferred: Rc<Cell<bool>>,
}

impl<N> WriteFlow<N> {
    /// Flow control with these water marks, not paused, nothing owed.
    pub(crate) fn new(limits: WriteBufferLimits) -> Self {
        WriteFlow {
            limits: Cell::new(limits),
            paused: Cell::new(false),
            pending: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
            deferred: Rc::new(Cell::new(false)),
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
    /// notice back when the protocol is in use: it then stays first, and the
    /// drain returns false (the caller defers the rest with
    /// [`drain_when_free`](Self::drain_when_free)). Inside a running
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

    /// Runs `f` (the transport's drain) once the protocol is free, through
    /// `when_free` (the protocol's [`AnyProtocol::when_free`], or its like
    /// for a datagram protocol), unless a deferred drain is already pending
    /// (that one covers everything).
    pub(crate) fn drain_when_free(
        &self,
        when_free: impl FnOnce(Box<dyn FnOnce()>),
        f: impl FnOnce() + 'static,
    ) {
        if self.deferred.replace(true) {
            return;
        }
        let pending = self.deferred.clone();
        when_free(Box::new(move || {
            pending.set(false);
            f();
        }));
    }
}

impl WriteFlow<Notice> {
    /// Owes `notice` unless `held` (a sendfile holds the notices: the
    /// protocol is told when it ends); true when the caller should drain.
    pub(crate) fn owe(&self, notice: Notice, held: bool) -> bool {
        if !held {
            self.push(notice);
        }
        !held
    }

    /// [`drain`](Self::drain) to the protocol of a stream-like transport's
    /// lifecycle (a panic reported with `transport` as context). Once the
    /// loop is released, what is owed is dropped.
    pub(crate) fn drain_to(
        &self,
        life: &Lifecycle<AnyProtocol>,
        transport: impl Fn() -> String,
    ) -> bool {
        self.drain(|notice| {
            let protocol = life.protocol();
            match life.get_loop() {
                Some(lp) => notice.deliver(&lp, &protocol, || Some(transport())),
                None => None,
            }
        })
    }

    /// After a [`drain_to`](Self::drain_to) that found the protocol in use:
    /// runs `again` (the transport's drain) once it is free, unless the
    /// loop is released.
    pub(crate) fn drain_later(
        &self,
        life: &Lifecycle<AnyProtocol>,
        again: impl FnOnce() + 'static,
    ) {
        if life.get_loop().is_some() {
            let protocol = life.protocol();
            self.drain_when_free(|job| protocol.when_free(job), again);
        }
    }
}

/// A transport whose writes a [`WriteFlow<Notice>`] controls: the
/// water-mark checks and the owing of notices, written once (the socket
/// stream, the TLS stream, the write pipe).
pub(crate) trait FlowOwner {
    fn flow(&self) -> &WriteFlow<Notice>;
    /// What counts against the water marks.
    fn buffered(&self) -> usize;
    /// Delivers what is owed, in order ([`WriteFlow::drain_to`]); for a
    /// protocol in use, the rest right after it is free, so no notice is
    /// stranded.
    fn drain_deferred(&self);
    /// Whether `pause_writing` may be owed now (TLS: once the protocol may
    /// be given anything).
    fn may_pause(&self) -> bool {
        true
    }
    /// Whether notices are held (a sendfile runs: the protocol is told
    /// when it ends).
    fn holds_notices(&self) -> bool {
        false
    }

    /// Every path that grows the buffer ends here.
    fn maybe_pause_protocol(&self) {
        if self.may_pause() && self.flow().pause_if_above(self.buffered()) {
            self.notify(Notice::Pause);
        }
    }

    /// Every path that shrinks the buffer ends here.
    fn maybe_resume_protocol(&self) {
        if self.flow().resume_if_at_or_below(self.buffered()) {
            self.notify(Notice::Resume);
        }
    }

    /// Delivers a notice now, or right after the protocol's running method
    /// (or `with_mut` closure) returns if it is in use.
    fn notify(&self, notice: Notice) {
        if self.flow().owe(notice, self.holds_notices()) {
            self.drain_deferred();
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
    fn a_protocol_in_use_keeps_its_notice_first_and_a_nested_drain_does_nothing() {
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
