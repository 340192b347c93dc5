//! `shutdown_asyncgens`: deterministic finalisation of the loop's async
//! streams.
//!
//! # The mapping
//! An asyncio async generator that is abandoned half-way still holds
//! resources (open files, connections, `finally:` blocks to run). Python can
//! only finalise it through the loop, because `aclose()` is a coroutine; so
//! the loop tracks every async generator first iterated on it, and
//! `await loop.shutdown_asyncgens()` closes the ones still alive before the
//! loop closes.
//!
//! Rust's counterpart of an async generator is a [`Stream`], and its
//! `finally:` blocks are `Drop` impls. A stream abandoned inside a task that
//! is itself leaked, or kept in a structure that outlives the loop, would run
//! its `Drop` late, on whatever thread drops it, possibly after the loop (and
//! the resources it registered there) is gone. [`EventLoop::track_async_gen`]
//! registers a stream with the loop and returns an [`AsyncGen`] wrapper;
//! [`EventLoop::shutdown_asyncgens`] drops every tracked stream that is still
//! alive, on the loop thread, now, and from then on each wrapper yields
//! `None`. A panic in a stream's `Drop` is caught and reported through the
//! exception handler ("an error occurred during closing of asynchronous
//! generator"), and the other streams are still finalised. After
//! `shutdown_asyncgens`, `track_async_gen` is refused with
//! [`ErrorKind::InvalidState`], where asyncio warns.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use futures_lite::Stream;

use crate::event_loop::EventLoop;
use crate::exception::ExceptionContext;
use crate::{ErrorKind, LoopError};

trait Finalize {
    /// Drops the stream now, unless it is being polled (then right after).
    fn finalize(&self);
}

struct GenCell<S> {
    stream: RefCell<Option<Pin<Box<S>>>>,
    close_requested: Cell<bool>,
}

impl<S> Finalize for GenCell<S> {
    fn finalize(&self) {
        self.close_requested.set(true);
        let old = self.stream.try_borrow_mut().ok().and_then(|mut s| s.take());
        drop(old);
    }
}

#[derive(Default)]
pub(crate) struct AsyncGenRegistry {
    gens: Vec<Weak<dyn Finalize>>,
    shut_down: bool,
    /// Live count after the last sweep; sweep dead entries when `gens` doubles.
    swept_len: usize,
}

/// An async stream tracked by its loop, finalised by
/// [`EventLoop::shutdown_asyncgens`] if still alive then.
///
/// # The mapping to asyncio
/// asyncio tracks the async generators first iterated on a loop so that
/// `shutdown_asyncgens()` can `aclose()` the abandoned ones, running their
/// `finally:` blocks, before the loop closes. Rust's async generators are
/// [`Stream`]s and their `finally:` blocks are `Drop` impls; a stream kept in
/// a leaked task or a long-lived structure would be dropped late, on any
/// thread, maybe after the loop is gone. Wrapping it with
/// [`EventLoop::track_async_gen`] lets `shutdown_asyncgens` drop it on the
/// loop thread, at a chosen moment; a panic in its `Drop` is reported to the
/// exception handler and does not stop the other finalisations.
///
/// It yields what the wrapped stream yields, until the stream ends, or until
/// it is closed ([`aclose`](Self::aclose) or `shutdown_asyncgens`), after
/// which it yields `None`.
pub struct AsyncGen<S> {
    cell: Rc<GenCell<S>>,
}

impl<S> AsyncGen<S> {
    /// Drops the wrapped stream now (asyncio's `agen.aclose()`); the wrapper
    /// then yields `None`.
    #[doc(alias = "agen.aclose")]
    pub fn aclose(&self) {
        self.cell.finalize();
    }

    /// Whether the stream was closed or finalised.
    pub fn is_closed(&self) -> bool {
        self.cell.close_requested.get()
    }
}

impl<S: Stream> Stream for AsyncGen<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let cell = &self.cell;
        let result = {
            let Ok(mut guard) = cell.stream.try_borrow_mut() else {
                return Poll::Ready(None);
            };
            match guard.as_mut() {
                None => return Poll::Ready(None),
                Some(s) => s.as_mut().poll_next(cx),
            }
        };
        if cell.close_requested.get() {
            // Closed while it was being polled: finish the job now.
            let old = cell.stream.borrow_mut().take();
            drop(old);
        }
        result
    }
}

impl<S> std::fmt::Debug for AsyncGen<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncGen")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl EventLoop {
    /// Registers `stream` with the loop so that
    /// [`shutdown_asyncgens`](Self::shutdown_asyncgens) finalises it if it is
    /// still alive (asyncio's first-iteration hook for async generators).
    ///
    /// Errors with [`ErrorKind::InvalidState`] after `shutdown_asyncgens`,
    /// and [`ErrorKind::Closed`] on a closed loop.
    #[doc(alias = "_asyncgen_firstiter_hook")]
    pub fn track_async_gen<S: Stream + 'static>(
        &self,
        stream: S,
    ) -> Result<AsyncGen<S>, LoopError> {
        self.check_open()?;
        let mut reg = self.inner.asyncgens.borrow_mut();
        if reg.shut_down {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "asynchronous generator registered after shutdown_asyncgens()",
            ));
        }
        let cell = Rc::new(GenCell {
            stream: RefCell::new(Some(Box::pin(stream))),
            close_requested: Cell::new(false),
        });
        let weak: Weak<dyn Finalize> = Rc::downgrade(&cell) as Weak<dyn Finalize>;
        reg.gens.push(weak);
        if reg.gens.len() > 2 * reg.swept_len.max(16) {
            reg.gens.retain(|w| w.strong_count() > 0);
            reg.swept_len = reg.gens.len();
        }
        Ok(AsyncGen { cell })
    }

    /// Number of tracked streams still alive.
    pub fn async_gens_alive(&self) -> usize {
        let reg = self.inner.asyncgens.borrow();
        reg.gens.iter().filter_map(|w| w.upgrade()).count()
    }

    /// Finalises every tracked stream still alive (drops it on this thread,
    /// now) and refuses new ones; see [`AsyncGen`] for how this maps to asyncio.
    ///
    /// Rust's finaliser, `Drop`, is synchronous, so the future completes on
    /// its first poll; it is a future to keep asyncio's shape
    /// (`lp.shutdown_asyncgens().await`).
    #[doc(alias = "loop.shutdown_asyncgens")]
    pub fn shutdown_asyncgens(&self) -> impl Future<Output = Result<(), LoopError>> + 'static {
        let lp = self.clone();
        async move {
            let gens = {
                let mut reg = lp.inner.asyncgens.borrow_mut();
                reg.shut_down = true;
                reg.swept_len = 0;
                std::mem::take(&mut reg.gens)
            };
            for gen in gens.into_iter().filter_map(|w| w.upgrade()) {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| gen.finalize())) {
                    lp.call_exception_handler(
                        ExceptionContext::new(
                            "an error occurred during closing of asynchronous generator",
                        )
                        .with_error(LoopError::panicked("the stream's drop", payload)),
                    );
                }
            }
            Ok(())
        }
    }
}
