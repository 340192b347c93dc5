//! [`Driver`]: polls one connection's future inline, from the protocol
//! callbacks that make it ready.
//!
//! A task of the loop is woken by a waker, and a woken task runs in the
//! loop's *next* iteration (asyncio's order: work scheduled by a callback
//! runs in the following batch). For a served HTTP/1 connection that is one
//! more poll of the reactor per request than needed: the bytes arrive in
//! iteration N (`data_received`), hyper would only see them in N+1. The
//! driver instead polls hyper's connection future right inside the
//! protocol callback (`data_received`, `eof_received`, `resume_writing`,
//! `connection_lost`), as tokio polls a task right after its readiness
//! event.
//!
//! # Rules
//! - The future is polled only on the loop thread. A poll asked for while
//!   one runs (hyper's `resume_reading` delivering data at once) is not
//!   nested: it marks the driver and the running poll polls again.
//! - hyper's own wake-ups (its yields, a timer, a body channel) go through
//!   the driver's `Send + Sync` waker: `call_soon` on the loop thread,
//!   `call_soon_threadsafe` elsewhere, at most one queued at a time; the
//!   queued callback finds the driver through a thread-local map by id
//!   (a `Send` waker cannot hold the `Rc`).
//! - Polling happens inside a protocol callback: the protocol's own cell is
//!   borrowed, so the I/O state hyper reads and writes lives outside it
//!   (see io.rs), and transport calls made by hyper are the re-entrant calls
//!   loop-net allows from a protocol callback.
//! - A panic of the future unwinds to the callback boundary (reported by the
//!   transport, which aborts the connection); the driver drops the future
//!   first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loop_core::LoopHandle;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
/// Polling, and asked to poll again when done.
const NOTIFIED: u8 = 2;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static DRIVERS: RefCell<HashMap<u64, Weak<Driver>>> = RefCell::new(HashMap::new());
}

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// One connection's future, polled inline (see the module docs).
pub(crate) struct Driver {
    id: u64,
    fut: RefCell<Option<BoxFuture>>,
    state: Cell<u8>,
    waker: Waker,
}

/// The driver's waker: schedules a poll on the loop.
struct DriverWake {
    id: u64,
    queued: AtomicBool,
    handle: LoopHandle,
}

impl Wake for DriverWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let poll = move || {
            me.queued.store(false, Ordering::Release);
            let driver = DRIVERS.with(|m| m.borrow().get(&me.id).and_then(Weak::upgrade));
            if let Some(d) = driver {
                d.poll_now();
            }
        };
        // A closed loop runs nothing more: the connection is gone with it.
        let _ = match self.handle.running_here() {
            Some(lp) => lp.call_soon(poll).map(drop),
            None => self.handle.call_soon_threadsafe(poll),
        };
    }
}

impl Driver {
    /// A driver for `fut` on the loop of `handle` (not polled yet).
    pub(crate) fn new(handle: LoopHandle, fut: impl Future<Output = ()> + 'static) -> Rc<Driver> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let waker = Waker::from(Arc::new(DriverWake {
            id,
            queued: AtomicBool::new(false),
            handle,
        }));
        let driver = Rc::new(Driver {
            id,
            fut: RefCell::new(Some(Box::pin(fut))),
            state: Cell::new(IDLE),
            waker,
        });
        DRIVERS.with(|m| m.borrow_mut().insert(id, Rc::downgrade(&driver)));
        driver
    }

    /// Polls the future now (again, until nobody asked for another poll),
    /// or, if a poll is running, asks it to poll once more.
    pub(crate) fn poll_now(&self) {
        match self.state.get() {
            IDLE => {}
            _ => {
                self.state.set(NOTIFIED);
                return;
            }
        }
        /// Ends the poll even on unwind; drops the future if it panicked.
        struct Reset<'a>(&'a Driver, bool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let fut = self.0.fut.borrow_mut().take();
                    drop(fut);
                }
                self.0.state.set(IDLE);
            }
        }
        let mut reset = Reset(self, false);
        loop {
            self.state.set(POLLING);
            let done = {
                let mut slot = self.fut.borrow_mut();
                let Some(fut) = slot.as_mut() else {
                    break;
                };
                let mut cx = Context::from_waker(&self.waker);
                matches!(fut.as_mut().poll(&mut cx), Poll::Ready(()))
            };
            if done {
                let fut = self.fut.borrow_mut().take();
                drop(fut);
                break;
            }
            if self.state.get() != NOTIFIED {
                break;
            }
        }
        reset.1 = true;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let id = self.id;
        let _ = DRIVERS.try_with(|m| {
            if let Ok(mut m) = m.try_borrow_mut() {
                m.remove(&id);
            }
        });
    }
}
