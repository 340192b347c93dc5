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

use std::cell::RefCell;
use std::os::fd::RawFd;

use loop_core::{EventLoop, ExceptionContext, Handle, LoopError};

pub(crate) struct LoopSlot(RefCell<Option<EventLoop>>);

impl LoopSlot {
    pub(crate) fn new(lp: &EventLoop) -> LoopSlot {
        LoopSlot(RefCell::new(Some(lp.clone())))
    }

    /// The loop, until [`release`](Self::release).
    #[inline]
    pub(crate) fn get(&self) -> Option<EventLoop> {
        self.0.borrow().clone()
    }

    /// Lets go of the loop (the transport's connection is lost).
    pub(crate) fn release(&self) {
        let lp = self.0.borrow_mut().take();
        drop(lp);
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
        self.get().ok_or_else(LoopError::closed)?.add_reader(fd, f)
    }

    pub(crate) fn add_writer(&self, fd: RawFd, f: impl FnMut() + 'static) -> Result<(), LoopError> {
        self.get().ok_or_else(LoopError::closed)?.add_writer(fd, f)
    }

    pub(crate) fn remove_reader(&self, fd: RawFd) -> Result<bool, LoopError> {
        self.get().map_or(Ok(false), |lp| lp.remove_reader(fd))
    }

    pub(crate) fn remove_writer(&self, fd: RawFd) -> Result<bool, LoopError> {
        self.get().map_or(Ok(false), |lp| lp.remove_writer(fd))
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
