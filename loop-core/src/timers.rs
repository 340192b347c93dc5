//! The timer queue: a binary min-heap of `(deadline, sequence)` entries.
//!
//! # Invariants
//! - **Order.** Entries leave the heap in deadline order; equal deadlines leave
//!   in the order they were scheduled (the sequence number breaks ties), so
//!   `call_at(t, a); call_at(t, b)` runs `a` before `b`, as in asyncio.
//! - **Never early.** An entry is due only when `deadline <= now`, with `now`
//!   read after the poll returned. The poll timeout is rounded *up* to the
//!   poller's granularity (milliseconds for epoll), so a wake-up never comes
//!   before the deadline; if one did, the entry would simply wait one more
//!   iteration.
//! - **O(1) cancel, bounded garbage.** Cancelling flags the entry (see
//!   `handle.rs`) and counts it; cancelled entries at the head are dropped as
//!   they surface. When more than [`MIN_COMPACT`] entries are cancelled *and*
//!   they are more than half the heap, the heap is rebuilt without them
//!   (asyncio's rule from `base_events.py`), so a program that schedules and
//!   cancels far-future timeouts in a loop keeps a bounded heap.
//! - **No user code under a borrow.** Dropping a cancelled entry runs no user
//!   code (its closure was dropped at cancel time). [`TimerQueue::take_all`]
//!   hands live entries back to the caller, who drops them outside any borrow.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::Instant;

use crate::handle::{Callback, TimerStats};

/// Compaction needs at least this many cancelled entries (asyncio's
/// `_MIN_SCHEDULED_TIMER_HANDLES`).
pub(crate) const MIN_COMPACT: usize = 100;

pub(crate) struct Entry {
    when: Instant,
    seq: u64,
    cb: Rc<dyn Callback>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.when == other.when && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

pub(crate) struct TimerQueue {
    heap: BinaryHeap<Entry>,
    seq: u64,
    stats: Rc<TimerStats>,
}

impl TimerQueue {
    pub(crate) fn new(stats: Rc<TimerStats>) -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            stats,
        }
    }

    pub(crate) fn push(&mut self, when: Instant, cb: Rc<dyn Callback>) {
        cb.mark_in_heap(true);
        self.seq += 1;
        self.heap.push(Entry {
            when,
            seq: self.seq,
            cb,
        });
    }

    /// Number of entries, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Rebuilds the heap without cancelled entries when they dominate, then
    /// drops cancelled entries from the head; returns the earliest live
    /// deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        let cancelled = self.stats.cancelled_in_heap.get();
        if cancelled > MIN_COMPACT && cancelled * 2 > self.heap.len() {
            self.heap.retain(|e| !e.cb.is_cancelled());
            self.stats.cancelled_in_heap.set(0);
        }
        while let Some(head) = self.heap.peek() {
            if !head.cb.is_cancelled() {
                return Some(head.when);
            }
            self.heap.pop();
            let c = self.stats.cancelled_in_heap.get();
            self.stats.cancelled_in_heap.set(c.saturating_sub(1));
        }
        None
    }

    /// Moves every live entry due at `now` to `out`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant, mut out: impl FnMut(Rc<dyn Callback>)) {
        while let Some(head) = self.heap.peek() {
            if head.when > now {
                break;
            }
            let Some(entry) = self.heap.pop() else { break };
            entry.cb.mark_in_heap(false);
            if entry.cb.is_cancelled() {
                let c = self.stats.cancelled_in_heap.get();
                self.stats.cancelled_in_heap.set(c.saturating_sub(1));
            } else {
                out(entry.cb);
            }
        }
    }

    /// Empties the queue; the caller drops the entries outside any borrow.
    pub(crate) fn take_all(&mut self) -> Vec<Rc<dyn Callback>> {
        self.stats.cancelled_in_heap.set(0);
        self.heap
            .drain()
            .map(|e| {
                e.cb.mark_in_heap(false);
                e.cb
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::{CallbackCell, Handle, TimerHandle};
    use std::cell::RefCell;
    use std::panic::Location;
    use std::time::Duration;

    fn timer(
        q: &mut TimerQueue,
        when: Instant,
        log: &Rc<RefCell<Vec<u32>>>,
        id: u32,
    ) -> TimerHandle {
        let log = log.clone();
        let cell = CallbackCell::new_rc(move || log.borrow_mut().push(id), Location::caller());
        q.push(when, cell.clone());
        TimerHandle {
            handle: Handle { cell },
            when,
            stats: q.stats.clone(),
        }
    }

    fn run_due(q: &mut TimerQueue, now: Instant) {
        let mut due = Vec::new();
        q.pop_due(now, |cb| due.push(cb));
        for cb in due {
            cb.run();
        }
    }

    #[test]
    fn deadline_order_with_fifo_ties() {
        let mut q = TimerQueue::new(Rc::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        timer(&mut q, t0 + Duration::from_millis(20), &log, 3);
        timer(&mut q, t0 + Duration::from_millis(10), &log, 1);
        timer(&mut q, t0 + Duration::from_millis(10), &log, 2);
        timer(&mut q, t0 + Duration::from_millis(30), &log, 4);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        run_due(&mut q, t0 + Duration::from_millis(9));
        assert!(log.borrow().is_empty(), "never early");
        run_due(&mut q, t0 + Duration::from_millis(20));
        assert_eq!(*log.borrow(), vec![1, 2, 3]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn cancelled_head_is_skipped_and_counted() {
        let mut q = TimerQueue::new(Rc::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let a = timer(&mut q, t0 + Duration::from_millis(1), &log, 1);
        timer(&mut q, t0 + Duration::from_millis(2), &log, 2);
        a.cancel();
        a.cancel();
        assert_eq!(q.stats.cancelled_in_heap.get(), 1);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(2)));
        assert_eq!(q.stats.cancelled_in_heap.get(), 0);
        run_due(&mut q, t0 + Duration::from_secs(1));
        assert_eq!(*log.borrow(), vec![2]);
    }

    #[test]
    fn cancelling_after_firing_does_not_count() {
        let mut q = TimerQueue::new(Rc::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let a = timer(&mut q, t0, &log, 1);
        run_due(&mut q, t0);
        a.cancel();
        assert_eq!(q.stats.cancelled_in_heap.get(), 0);
    }

    #[test]
    fn compaction_keeps_the_heap_bounded() {
        let mut q = TimerQueue::new(Rc::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let keep = timer(&mut q, t0 + Duration::from_secs(1), &log, 0);
        for round in 0..50u32 {
            let handles: Vec<_> = (0..1000)
                .map(|i: u64| timer(&mut q, t0 + Duration::from_secs(3600 + i), &log, round))
                .collect();
            for h in &handles {
                h.cancel();
            }
            q.next_deadline();
            assert!(q.len() <= 2 * MIN_COMPACT + 2, "heap grew to {}", q.len());
        }
        assert!(!keep.cancelled());
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
    }

    /// A model check: random pushes, cancels and advances against a sorted
    /// list, with a fixed-seed generator.
    #[test]
    fn matches_a_simple_model() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut q = TimerQueue::new(Rc::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let mut now = t0;
        let mut model: Vec<(Instant, u32, TimerHandle)> = Vec::new();
        let mut expected = Vec::new();
        for id in 0..5000u32 {
            match next() % 4 {
                0 | 1 => {
                    let when = now + Duration::from_millis(next() % 50);
                    let h = timer(&mut q, when, &log, id);
                    model.push((when, id, h));
                }
                2 => {
                    if !model.is_empty() {
                        let i = (next() as usize) % model.len();
                        let (_, _, h) = model.remove(i);
                        h.cancel();
                    }
                }
                _ => {
                    now += Duration::from_millis(next() % 20);
                    q.next_deadline();
                    run_due(&mut q, now);
                    model.sort_by_key(|(w, id, _)| (*w, *id));
                    let split = model.partition_point(|(w, _, _)| *w <= now);
                    expected.extend(model.drain(..split).map(|(_, id, _)| id));
                }
            }
        }
        assert_eq!(*log.borrow(), expected);
    }
}
