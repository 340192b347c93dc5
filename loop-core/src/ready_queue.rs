//! The ready queue: what runs in step 4 of the next loop iteration.
//!
//! # Invariants
//! - **FIFO.** Items run in the order they were queued: `call_soon` order,
//!   then readiness and due timers in the order the iteration found them.
//! - **One order for both doors (issue 15).** A callback sent through the
//!   thread-safe queue ([`LoopHandle::call_soon_threadsafe`](crate::LoopHandle::call_soon_threadsafe),
//!   from any thread, the loop's own included) takes its place in this queue
//!   before anything the loop thread queues after that call returned. The
//!   channel's receiver lives here, and every [`push`](ReadyQueue::push)
//!   first moves what the channel holds into the queue when the `pending`
//!   flag (set by the sender after its send) says there is something: so a
//!   `call_soon_threadsafe` that happened before a `call_soon` runs before
//!   it, as with asyncio's one deque. The iteration drains the channel
//!   right after its poll and then queues the ready fds and due timers it
//!   found without the check ([`push_found`](ReadyQueue::push_found)): what
//!   was sent during the poll goes first, as in asyncio, where it is in
//!   `_ready` before the events are appended. Calls that race (neither returned
//!   before the other began) may land in either order. An idle channel costs
//!   `push` one relaxed atomic load. A stop request from another thread
//!   queues [`Ready::Stop`], which stops the loop when its turn comes (as
//!   asyncio's `call_soon_threadsafe(loop.stop)`).
//! - **One batch per iteration.** The loop swaps the whole queue out (an O(1)
//!   `mem::swap` with an empty deque that keeps its capacity) and runs exactly
//!   that batch. Anything queued while the batch runs (a callback scheduled
//!   from a callback, a task woken by a callback) lands in the fresh queue and
//!   runs in the next iteration: asyncio's `ntodo` snapshot, without holding a
//!   borrow while user code runs.
//! - **Five kinds of work, no boxing beyond the one allocation each already
//!   has:** a scheduled callback (`Rc<dyn Callback>`), a due timer (its slot
//!   in the timer slab), an fd watcher (`Rc<dyn Watcher>`), a task's
//!   `Runnable` from async-task, and a completion of the io_uring completion
//!   path (16 bytes, no allocation). Items from other threads (boxed
//!   callbacks, stop requests) join them in the same order.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::handle::{Callback, Handle, TimerHandle};
use crate::io::Watcher;
use crate::threadsafe::{Injected, Shared};
use crate::timer_slab::SlotRef;

/// One unit of ready work.
pub(crate) enum Ready {
    /// A `call_soon` / due timer callback.
    Callback(Rc<dyn Callback>),
    /// A due timer (its slot holds the deadline that reports name).
    Timer(SlotRef),
    /// A reader or writer whose fd was reported ready.
    Io(Rc<dyn Watcher>),
    /// A task to poll.
    Task(crate::tasks::Runnable),
    /// A callback sent by `call_soon_threadsafe` (already boxed by its sender).
    Boxed(Box<dyn FnOnce() + 'static>),
    /// A stop request sent by [`LoopHandle::stop`](crate::LoopHandle::stop).
    Stop,
    /// A completion for a stream of the io_uring completion path
    /// (uring_stream.rs). Never skipped: it may carry a receive buffer
    /// that must go back to the ring.
    Completion(crate::reactor::Completed),
}

impl Ready {
    /// Whether running it would do nothing (cancelled before its turn).
    pub(crate) fn is_cancelled(&self) -> bool {
        match self {
            Ready::Callback(c) => c.is_cancelled(),
            Ready::Timer(t) => t.is_cancelled(),
            Ready::Io(w) => w.is_cancelled(),
            Ready::Task(_) | Ready::Boxed(_) | Ready::Stop | Ready::Completion(_) => false,
        }
    }

    /// A short description for debug-mode reports.
    pub(crate) fn describe(&self) -> String {
        match self {
            Ready::Callback(c) => Handle::describe(&**c),
            Ready::Timer(t) => TimerHandle::describe(t),
            Ready::Io(_) => "<reader/writer callback>".to_string(),
            Ready::Task(_) => "<Task step>".to_string(),
            Ready::Boxed(_) => "<call_soon_threadsafe callback>".to_string(),
            Ready::Stop => "<stop request>".to_string(),
            Ready::Completion(_) => "<stream completion>".to_string(),
        }
    }

    fn from_injected(item: Injected) -> Ready {
        match item {
            Injected::Callback(f) => Ready::Boxed(f),
            Injected::Task(r) => Ready::Task(r),
            Injected::Stop => Ready::Stop,
        }
    }
}

/// The queue itself: a `VecDeque` that keeps its capacity across iterations,
/// and the receiving end of the thread-safe channel (`None` once closed).
pub(crate) struct ReadyQueue {
    items: VecDeque<Ready>,
    shared: Arc<Shared>,
    inbox: Option<Receiver<Injected>>,
}

impl ReadyQueue {
    pub(crate) fn new(shared: Arc<Shared>, inbox: Receiver<Injected>) -> Self {
        ReadyQueue {
            items: VecDeque::new(),
            shared,
            inbox: Some(inbox),
        }
    }

    /// Queues `item` behind everything queued before, the thread-safe
    /// channel's contents included (see the module docs).
    #[inline(always)]
    pub(crate) fn push(&mut self, item: Ready) {
        if self.shared.has_pending_relaxed() {
            self.take_injected_now();
        }
        self.items.push_back(item);
    }

    /// Queues what the iteration found (ready fds, due timers) right after
    /// it drained the thread-safe channel: nothing sent later can have
    /// happened before, so no check (see the module docs).
    #[inline(always)]
    pub(crate) fn push_found(&mut self, item: Ready) {
        self.items.push_back(item);
    }

    /// Moves what other threads sent into the queue (one relaxed atomic
    /// load when nothing is pending).
    #[inline(always)]
    pub(crate) fn take_injected(&mut self) {
        if self.shared.has_pending_relaxed() {
            self.take_injected_now();
        }
    }

    /// The slow half of [`take_injected`](Self::take_injected): something
    /// is pending.
    #[cold]
    #[inline(never)]
    fn take_injected_now(&mut self) {
        let ReadyQueue {
            items,
            shared,
            inbox,
        } = self;
        if let Some(rx) = inbox {
            shared.drain(rx, |item| items.push_back(Ready::from_injected(item)));
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Swaps the queued items into `batch` (which must be empty), leaving this
    /// queue empty with `batch`'s old capacity.
    #[inline]
    pub(crate) fn swap_into(&mut self, batch: &mut VecDeque<Ready>) {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut self.items, batch);
    }

    /// Empties the queue and closes the channel: later sends fail. The
    /// caller drops the items outside any borrow.
    pub(crate) fn take_all(&mut self) -> (VecDeque<Ready>, Option<Receiver<Injected>>) {
        (std::mem::take(&mut self.items), self.inbox.take())
    }
}
