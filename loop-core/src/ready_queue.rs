//! The ready queue: what runs in step 4 of the next loop iteration.
//!
//! # Invariants
//! - **FIFO.** Items run in the order they were queued: `call_soon` order,
//!   then readiness and due timers in the order the iteration found them.
//! - **One batch per iteration.** The loop swaps the whole queue out (an O(1)
//!   `mem::swap` with an empty deque that keeps its capacity) and runs exactly
//!   that batch. Anything queued while the batch runs (a callback scheduled
//!   from a callback, a task woken by a callback) lands in the fresh queue and
//!   runs in the next iteration: asyncio's `ntodo` snapshot, without holding a
//!   borrow while user code runs.
//! - **Three kinds of work, no boxing beyond the one allocation each already
//!   has:** a scheduled callback (`Rc<dyn Callback>`), an fd watcher
//!   (`Rc<dyn Watcher>`) and a task's `Runnable` from async-task.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::handle::Callback;
use crate::io::Watcher;

/// One unit of ready work.
pub(crate) enum Ready {
    /// A `call_soon` / due timer callback.
    Callback(Rc<dyn Callback>),
    /// A reader or writer whose fd was reported ready.
    Io(Rc<dyn Watcher>),
    /// A task to poll.
    Task(async_task::Runnable),
    /// A callback sent by `call_soon_threadsafe` (already boxed by its sender).
    Boxed(Box<dyn FnOnce() + 'static>),
}

impl Ready {
    /// Whether running it would do nothing (cancelled before its turn).
    pub(crate) fn is_cancelled(&self) -> bool {
        match self {
            Ready::Callback(c) => c.is_cancelled(),
            Ready::Io(w) => w.is_cancelled(),
            Ready::Task(_) | Ready::Boxed(_) => false,
        }
    }

    /// A short description for debug-mode reports.
    pub(crate) fn describe(&self) -> String {
        match self {
            Ready::Callback(c) => crate::handle::Handle::describe(&**c),
            Ready::Io(_) => "<reader/writer callback>".to_string(),
            Ready::Task(_) => "<task>".to_string(),
            Ready::Boxed(_) => "<call_soon_threadsafe callback>".to_string(),
        }
    }
}

/// The queue itself: a `VecDeque` that keeps its capacity across iterations.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    items: VecDeque<Ready>,
}

impl ReadyQueue {
    #[inline]
    pub(crate) fn push(&mut self, item: Ready) {
        self.items.push_back(item);
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

    /// Empties the queue; the caller drops the items outside any borrow.
    pub(crate) fn take_all(&mut self) -> VecDeque<Ready> {
        std::mem::take(&mut self.items)
    }
}
