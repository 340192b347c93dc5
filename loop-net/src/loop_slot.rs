//! `LoopSlot`: a transport's hold on its loop, let go once
//! `connection_lost` has run (asyncio sets the transport's `_loop = None`).
//!
//! A `Transport` the user keeps after its connection was lost must not keep
//! the loop alive: a closed loop's state (and, with it, whatever that state
//! still references) would live as long as the transport handle. So a
//! transport holds its loop through this slot, and its `finish_lost`
//! releases it. The slot forwards the few loop methods the transports call,
//! under the same names, so a call site reads as a call on the loop; after
//! the release they answer as a closed loop does (`ErrorKind::Closed`,
//! `Ok(false)` for a removal, nothing reported).
//!
//! A transport made with [`LoopSlot::owning`] also holds the loop's claim on
//! its fd (`loop_core::FdClaim`, issue 15): the user's `add_reader` and
//! friends on that fd are refused, naming the transport, while the slot's
//! own forwarders register through the claim. The claim goes with the loop
//! at [`release`](LoopSlot::release), right after the transport closed its
//! fd.

use std::cell::RefCell;
use std::os::fd::RawFd;

use loop_core::{EventLoop, ExceptionContext, FdClaim, Handle, LoopError};

pub(crate) struct LoopSlot(RefCell<Option<EventLoop>>, RefCell<Option<FdClaim>>);

impl LoopSlot {
    /// The slot of a transport that owns no fd of its own (nothing is
    /// claimed).
    pub(crate) fn new(lp: &EventLoop) -> LoopSlot {
        LoopSlot(RefCell::new(Some(lp.clone())), RefCell::new(None))
    }

    /// The slot of a transport that owns `fd`: it claims the fd for
    /// `transport <{kind} fd={fd}>` (see the module docs).
    pub(crate) fn owning(lp: &EventLoop, fd: RawFd, kind: &str) -> LoopSlot {
        let claim = lp.claim_fd(fd, format!("transport <{kind} fd={fd}>"));
        LoopSlot(RefCell::new(Some(lp.clone())), RefCell::new(Some(claim)))
    }

    /// The loop, until [`release`](Self::release).
    #[inline]
    pub(crate) fn get(&self) -> Option<EventLoop> {
        self.0.borrow().clone()
    }

    /// Lets go of the fd's claim (the fd was just closed), keeping the loop.
    pub(crate) fn release_claim(&self) {
        let claim = self.1.borrow_mut().take();
        drop(claim);
    }

    /// Lets go of the loop and of the fd's claim (the transport's
    /// connection is lost, its fd closed).
    pub(crate) fn release(&self) {
        let claim = self.1.borrow_mut().take();
        drop(claim);
        let lp = self.0.borrow_mut().take();
        drop(lp);
    }

    /// The claim, when it is on `fd`.
    fn claim_on(&self, fd: RawFd) -> Option<std::cell::Ref<'_, FdClaim>> {
        std::cell::Ref::filter_map(self.1.borrow(), |c| c.as_ref().filter(|c| c.fd() == fd)).ok()
    }

    #[track_caller]
    pub(crate) fn call_soon(&self, f: impl FnOnce() + 'static) -> Result<Handle, LoopError> {
        self.get().ok_or_else(LoopError::closed)?.call_soon(f)
    }

    #[cfg(feature = "tls")]
    #[track_caller]
    pub(crate) fn call_later(
        &self,
        delay: std::time::Duration,
        f: impl FnOnce() + 'static,
    ) -> Result<loop_core::TimerHandle, LoopError> {
        self.get()
            .ok_or_else(LoopError::closed)?
            .call_later(delay, f)
    }

    pub(crate) fn add_reader(&self, fd: RawFd, f: impl FnMut() + 'static) -> Result<(), LoopError> {
        let lp = self.get().ok_or_else(LoopError::closed)?;
        match self.claim_on(fd) {
            Some(claim) => claim.add_reader(f),
            None => lp.add_reader(fd, f),
        }
    }

    /// [`add_reader`](Self::add_reader), edge-triggered where the backend
    /// allows it on a claimed fd (see loop-core's `FdClaim::add_reader_edge`);
    /// returns whether it is.
    pub(crate) fn add_reader_edge(
        &self,
        fd: RawFd,
        f: impl FnMut() + 'static,
    ) -> Result<bool, LoopError> {
        let lp = self.get().ok_or_else(LoopError::closed)?;
        match self.claim_on(fd) {
            Some(claim) => claim.add_reader_edge(f),
            None => lp.add_reader(fd, f).map(|()| false),
        }
    }

    pub(crate) fn add_writer(&self, fd: RawFd, f: impl FnMut() + 'static) -> Result<(), LoopError> {
        let lp = self.get().ok_or_else(LoopError::closed)?;
        match self.claim_on(fd) {
            Some(claim) => claim.add_writer(f),
            None => lp.add_writer(fd, f),
        }
    }

    pub(crate) fn remove_reader(&self, fd: RawFd) -> Result<bool, LoopError> {
        let Some(lp) = self.get() else {
            return Ok(false);
        };
        match self.claim_on(fd) {
            Some(claim) => claim.remove_reader(),
            None => lp.remove_reader(fd),
        }
    }

    pub(crate) fn remove_writer(&self, fd: RawFd) -> Result<bool, LoopError> {
        let Some(lp) = self.get() else {
            return Ok(false);
        };
        match self.claim_on(fd) {
            Some(claim) => claim.remove_writer(),
            None => lp.remove_writer(fd),
        }
    }

    /// The loop's completion path for the claimed `fd` (loop-core's
    /// `FdClaim::uring_stream`); `None` without a claim on it, on a
    /// released slot, or when the loop does not offer the path.
    pub(crate) fn uring_stream(
        &self,
        fd: RawFd,
        handler: std::rc::Rc<dyn loop_core::StreamHandler>,
    ) -> Option<loop_core::UringStream> {
        self.claim_on(fd)?.uring_stream(handler)
    }

    /// The loop's completion path for the claimed datagram socket `fd`
    /// (loop-core's `FdClaim::uring_datagram`); `None` as for
    /// [`uring_stream`](Self::uring_stream).
    pub(crate) fn uring_datagram(
        &self,
        fd: RawFd,
        handler: std::rc::Rc<dyn loop_core::DatagramHandler>,
    ) -> Option<loop_core::UringDatagram> {
        self.claim_on(fd)?.uring_datagram(handler)
    }

    #[cfg(feature = "tls")]
    pub(crate) fn get_debug(&self) -> bool {
        self.get().is_some_and(|lp| lp.get_debug())
    }

    pub(crate) fn call_exception_handler(&self, context: ExceptionContext) {
        if let Some(lp) = self.get() {
            lp.call_exception_handler(context);
        }
    }
}
