//! The timer queue: an exact `(deadline, sequence)` min-heap whose purge of
//! cancelled entries is spread over loop iterations and scheduling calls.
//!
//! # Design (issue 16)
//! The queue used to compact its heap in one go (`retain`, then a rebuild)
//! when cancelled entries dominated: 32 ms in the iteration after 1,000,000
//! cancellations. Three ways out were weighed:
//! - an indexed heap, removing at cancel time in O(log n): every sift must
//!   then write the new position back into a callback cell (a cache miss per
//!   level), and cancel would need the queue;
//! - a hierarchical wheel as tokio's: a wheel's cascade moves a whole slot at
//!   once, the same spike unless entries are unlinked at cancel time
//!   (tokio's intrusive lists). A variant with coarse far buckets (`Vec`s in
//!   a `BTreeMap`) in front of an exact near heap was built and measured:
//!   scheduling cost twice as much (hundreds of bucket `Vec`s growing at
//!   once) and a purge visited the cells no faster, so it was dropped;
//! - the heap kept as it is, with its purge made incremental. Kept: it leaves
//!   scheduling an O(log n) push (O(1) on average for random deadlines) and
//!   cancel a flag, and bounds each iteration's share of the bookkeeping.
//!
//! How the purge works: `near` is the heap that new entries join. While
//! cancelled entries are more than [`MIN_COMPACT`] and more than half of all
//! entries (asyncio's rule), a purge pass moves `near` aside as `old` and
//! drains `old` from its tail, a chunk at a time: cancelled entries are
//! dropped, live ones pushed back into `near`. Any prefix of a heap array is
//! a heap, so `old` stays ordered while it shrinks, and the next entry due is
//! the smaller of the two heads. Each [`next_deadline`](TimerQueue::next_deadline)
//! drains [`ITERATION_BUDGET`] entries and answers [`Next::Busy`] (poll with
//! a zero timeout, continue next iteration) while cancelled entries still
//! dominate; each [`push`](TimerQueue::push) drains [`PUSH_BUDGET`] more, so
//! that churn bounds the heap even when the loop never iterates.
//!
//! What an entry holds: the deadline and a counted reference to the timer's
//! slot in the loop's timer slab (`timer_slab.rs`: the closure, the flags,
//! the sequence number and the deadline again, for the handle). 24 bytes;
//! sifting compares the entries' own deadlines and reads a slot only on a
//! tie. A 16-byte entry with a `u64` deadline was tried: converting
//! `Instant`s cost ~55 more instructions per timer, and it measured slower.
//!
//! # Invariants
//! - **Order.** An entry fires only as the smallest `(deadline, sequence)`
//!   of `near` and `old`, which hold every entry. So entries leave in
//!   deadline order, equal deadlines in scheduling order (`call_at(t, a);
//!   call_at(t, b)` runs `a` before `b`, as in asyncio).
//! - **Never early.** An entry is due only when `deadline <= now`, with `now`
//!   read after the poll returned. The poll timeout is rounded *up* to the
//!   poller's granularity, so a wake-up never comes before the deadline; if
//!   one did, the entry would simply wait one more iteration.
//! - **O(1) cancel, bounded garbage.** Cancelling flags the timer's slot
//!   (see `timer_slab.rs`) and counts it in the slab's `cancelled_in_heap`;
//!   the entry stays where it is until a purge
//!   pass or the head of the heap reaches it. Once cancelled entries
//!   dominate, passes run until they no longer do, so the heap holds at most
//!   about twice the live timers plus [`MIN_COMPACT`] and a budget's worth;
//!   the drained array's memory is given back as it drains.
//! - **Bounded iterations.** One `next_deadline` or `pop_due` spends at most
//!   [`ITERATION_BUDGET`] units on cancelled entries (a purged entry is one
//!   unit, a cancelled head popped [`HEAD_COST`]); `pop_due` leaves cancelled
//!   heads alone unless they hide a due entry. Only the live due entries it
//!   hands out are unbudgeted: their callbacks run in that iteration anyway.
//! - **Infinite timers stay out of the heap.** A delay too large for the
//!   clock (`call_later(Duration::MAX, ..)`, asyncio's `inf`) can never be
//!   due: its callback is kept in the `never` list (so that it lives until it
//!   is cancelled or the loop closes, as asyncio keeps such a handle in its
//!   heap) and takes no part in ordering, timeouts or [`len`](TimerQueue::len),
//!   so it neither wakes the loop nor keeps `run_forever` from blocking. The
//!   list drops its cancelled entries whenever it doubles.
//! - **No user code under a borrow.** Dropping a cancelled entry runs no user
//!   code (its closure was dropped at cancel time). [`TimerQueue::take_all`]
//!   hands live entries back to the caller, who drops them outside any borrow.

use std::mem;
use std::panic::Location;
use std::time::Instant;

use crate::timer_slab::{Slab, SlabShared, SlotRef};

/// The purge runs only while more than this many entries are cancelled
/// (asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`).
pub(crate) const MIN_COMPACT: usize = 100;

/// Units of work that one `next_deadline` or one `pop_due` may spend on
/// cancelled entries: a unit is one entry of the purge (a cache miss and a
/// free), dropping a cancelled head costs [`HEAD_COST`]. Measured with
/// `cargo xtask bench core` (`iteration_after_cancels_cpu`) on a 2-CPU VM
/// loaded by other builds: the worst iteration after 1,000,000 cancellations
/// takes 0.3-0.5 ms of CPU with 2048 units (4096 took twice that).
/// (Unit tests use a small budget, so that the model check runs out of it
/// often.)
#[cfg(not(test))]
pub(crate) const ITERATION_BUDGET: usize = 2048;
#[cfg(test)]
pub(crate) const ITERATION_BUDGET: usize = 64;

/// The budget units of dropping a cancelled head: a pop sifts down through
/// ~log2(n) levels, the lower ones likely cache misses in a large heap (an
/// estimate: ~20 levels of a million-entry heap, plus the entry itself).
pub(crate) const HEAD_COST: usize = 32;

/// Entries that one `push` sweeps while cancelled entries dominate.
pub(crate) const PUSH_BUDGET: usize = 2;

/// A heap entry: 24 bytes, the deadline (a copy of the slot's, so that
/// sifting reads no slot) and the slot. Its sequence number, the tie-break
/// of equal deadlines, lives in the slot's state word (read only on ties).
pub(crate) struct Entry {
    when: Instant,
    slot: SlotRef,
}

impl Entry {
    #[inline]
    fn before(&self, other: &Entry) -> bool {
        match self.when.cmp(&other.when) {
            std::cmp::Ordering::Equal => self.slot.seq() < other.slot.seq(),
            o => o.is_lt(),
        }
    }
}

/// A binary min-heap on `(deadline, sequence)`; unlike `BinaryHeap` its
/// array is open to the purge, which drains a chunk off its tail (what is
/// left is still a heap).
#[derive(Default)]
struct Heap {
    v: Vec<Entry>,
}

impl Heap {
    fn push(&mut self, e: Entry) {
        // Find the new entry's place first, moving parents down, then write
        // it once (random deadlines rarely climb: ~1.6 levels on average).
        let mut i = self.v.len();
        while i > 0 {
            let parent = (i - 1) / 2;
            if !e.before(&self.v[parent]) {
                break;
            }
            i = parent;
        }
        self.v.push(e);
        let last = self.v.len() - 1;
        if i < last {
            // Rotate the path from `i` down to the new leaf by one.
            let mut j = last;
            while j > i {
                let parent = (j - 1) / 2;
                self.v.swap(j, parent);
                j = parent;
            }
        }
    }

    fn peek(&self) -> Option<&Entry> {
        self.v.first()
    }

    fn pop(&mut self) -> Option<Entry> {
        let last = self.v.pop()?;
        if self.v.is_empty() {
            return Some(last);
        }
        let top = mem::replace(&mut self.v[0], last);
        let n = self.v.len();
        let mut i = 0;
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.v[r].before(&self.v[l]) {
                r
            } else {
                l
            };
            if !self.v[c].before(&self.v[i]) {
                break;
            }
            self.v.swap(i, c);
            i = c;
        }
        Some(top)
    }

    fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.v.len()
    }
}

/// What the loop should do about its timers when it computes its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// No live timer.
    Idle,
    /// The earliest live deadline.
    At(Instant),
    /// This iteration's budget ran out with bookkeeping left: poll without
    /// blocking and continue in the next iteration.
    Busy,
}

pub(crate) struct TimerQueue {
    /// The heap that new entries join.
    near: Heap,
    /// A heap being purged: drained from its tail into `near`.
    old: Heap,
    /// Entries held, cancelled ones included.
    len: usize,
    seq: u64,
    /// The slots of infinite timers (never due).
    never: Vec<SlotRef>,
    /// `never`'s length at which its cancelled entries are dropped.
    never_prune_at: usize,
    /// Where the timers' slots live (dropped last: the entries above hold
    /// slots of it; see `timer_slab.rs` for its lifetime).
    slab: Slab,
}

/// The smallest `never_prune_at`.
const NEVER_PRUNE_MIN: usize = 64;

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            near: Heap::default(),
            old: Heap::default(),
            len: 0,
            seq: 0,
            never: Vec::new(),
            never_prune_at: NEVER_PRUNE_MIN,
            slab: Slab::new(),
        }
    }

    #[inline]
    fn stats(&self) -> &SlabShared {
        self.slab.shared()
    }

    /// Cancelled entries still in the heap.
    pub(crate) fn cancelled(&self) -> usize {
        self.stats().cancelled_in_heap.get()
    }

    /// Schedules `f` at `when`, or (`never`) as a timer that is never due
    /// (see the module docs; `when` is then only what its handle reports).
    /// Returns the timer's slot for its handle.
    #[inline(always)]
    pub(crate) fn schedule<F: FnOnce() + 'static>(
        &mut self,
        when: Instant,
        never: bool,
        location: &'static Location<'static>,
        f: F,
    ) -> SlotRef {
        let slot = self.slab.shared().insert(when, location, f);
        if never {
            self.keep_never(slot.clone());
        } else {
            self.push(when, slot.clone());
        }
        slot
    }

    fn keep_never(&mut self, slot: SlotRef) {
        if self.never.len() >= self.never_prune_at {
            self.never.retain(|c| !c.is_cancelled());
            self.never_prune_at = (self.never.len() * 2).max(NEVER_PRUNE_MIN);
        }
        self.never.push(slot);
    }

    #[inline]
    fn push(&mut self, when: Instant, slot: SlotRef) {
        self.seq += 1;
        slot.enter_heap(self.seq);
        self.len += 1;
        self.near.push(Entry { when, slot });
        if self.garbage_dominates() {
            let mut budget = PUSH_BUDGET;
            self.purge(&mut budget);
        }
    }

    /// Number of entries, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn garbage_dominates(&self) -> bool {
        let cancelled = self.cancelled();
        cancelled > MIN_COMPACT && cancelled * 2 > self.len
    }

    /// Accounts for one cancelled entry dropped.
    #[inline]
    fn discarded(&mut self) {
        self.len -= 1;
        let c = &self.stats().cancelled_in_heap;
        c.set(c.get().saturating_sub(1));
    }

    /// Sweeps cancelled entries out while they dominate, within `budget`:
    /// a pass moves the whole `near` heap to `old` and drains `old` from its
    /// tail, dropping cancelled entries and pushing live ones back.
    fn purge(&mut self, budget: &mut usize) {
        let mut started = false;
        while *budget > 0 && self.garbage_dominates() {
            if self.old.is_empty() {
                if started {
                    break;
                }
                started = true;
                self.old = mem::take(&mut self.near);
                continue;
            }
            // A chunk off the tail: what is left of `old` is still a heap.
            let k = (*budget).min(self.old.v.len());
            *budget -= k;
            let at = self.old.v.len() - k;
            let mut removed = 0;
            for e in self.old.v.drain(at..) {
                if e.slot.is_cancelled() {
                    removed += 1;
                } else {
                    self.near.push(e);
                }
            }
            self.len -= removed;
            let c = &self.stats().cancelled_in_heap;
            c.set(c.get().saturating_sub(removed));
            // Give the drained memory back a chunk at a time: freeing a
            // large array at once costs milliseconds (its pages are unmapped).
            let v = &mut self.old.v;
            if v.capacity() - v.len() > 2 * k.max(1024) {
                v.shrink_to(v.len() + k);
            }
        }
    }

    /// The smaller head of `near` and `old`, and whether it is `old`'s.
    #[inline]
    fn head(&self) -> Option<(&Entry, bool)> {
        match (self.near.peek(), self.old.peek()) {
            (Some(n), Some(o)) if o.before(n) => Some((o, true)),
            (Some(n), _) => Some((n, false)),
            (None, Some(o)) => Some((o, true)),
            (None, None) => None,
        }
    }

    fn pop_head(&mut self, from_old: bool) -> Option<Entry> {
        if from_old {
            self.old.pop()
        } else {
            self.near.pop()
        }
    }

    /// Drops cancelled heads within `budget` (each costs [`HEAD_COST`]);
    /// returns the first live head's deadline and whether it is `old`'s,
    /// `Err(())` if the budget ran out first.
    fn live_head(&mut self, budget: &mut usize) -> Result<Option<(Instant, bool)>, ()> {
        loop {
            let Some((head, from_old)) = self.head() else {
                return Ok(None);
            };
            if !head.slot.is_cancelled() {
                return Ok(Some((head.when, from_old)));
            }
            if *budget < HEAD_COST {
                return Err(());
            }
            *budget -= HEAD_COST;
            drop(self.pop_head(from_old));
            self.discarded();
        }
    }

    /// Does this iteration's bookkeeping (within [`ITERATION_BUDGET`]) and
    /// tells when the loop must next look at its timers.
    pub(crate) fn next_deadline(&mut self) -> Next {
        let mut budget = ITERATION_BUDGET;
        self.purge(&mut budget);
        if self.garbage_dominates() {
            // The purge goes on next iteration, even if the loop has nothing
            // else to do: memory is reclaimed without waiting for a timer.
            return Next::Busy;
        }
        match self.live_head(&mut budget) {
            Err(()) => Next::Busy,
            Ok(None) => Next::Idle,
            Ok(Some((w, _))) => Next::At(w),
        }
    }

    /// Moves every live entry due at `now` to `out`, earliest first (within
    /// [`ITERATION_BUDGET`] for the cancelled entries met on the way).
    /// Hands every live due entry's slot to `out`, in order.
    pub(crate) fn pop_due(&mut self, now: Instant, mut out: impl FnMut(SlotRef)) {
        let mut budget = ITERATION_BUDGET;
        loop {
            // Nothing is due if the smallest deadline, cancelled or not, is
            // not: then cancelled heads are left to the purge.
            if self.head().is_none_or(|(e, _)| e.when > now) {
                return;
            }
            let Ok(Some((w, from_old))) = self.live_head(&mut budget) else {
                return;
            };
            if w > now {
                return;
            }
            if let Some(e) = self.pop_head(from_old) {
                self.len -= 1;
                e.slot.leave_heap();
                out(e.slot);
            }
        }
    }

    /// Empties the queue; the caller drops the entries outside any borrow.
    pub(crate) fn take_all(&mut self) -> Vec<SlotRef> {
        self.stats().cancelled_in_heap.set(0);
        self.len = 0;
        let near = mem::take(&mut self.near).v;
        let old = mem::take(&mut self.old).v;
        let never = mem::take(&mut self.never);
        near.into_iter()
            .chain(old)
            .map(|e| {
                e.slot.leave_heap();
                e.slot
            })
            .chain(never)
            .collect()
    }

    /// Entries in the `old` heap, the one being purged (for tests).
    #[cfg(test)]
    fn old_len(&self) -> usize {
        self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::TimerHandle;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    fn timer(
        q: &mut TimerQueue,
        when: Instant,
        log: &Rc<RefCell<Vec<u32>>>,
        id: u32,
    ) -> TimerHandle {
        let log = log.clone();
        let slot = q.schedule(when, false, Location::caller(), move || {
            log.borrow_mut().push(id)
        });
        TimerHandle { slot }
    }

    fn run_due(q: &mut TimerQueue, now: Instant) {
        let mut due = Vec::new();
        q.pop_due(now, |slot| due.push(slot));
        for slot in due {
            slot.run();
        }
    }

    /// Iterates as the loop does until the queue is neither busy nor holding
    /// a due entry; returns the iterations and the last answer.
    fn settle(q: &mut TimerQueue, now: Instant) -> (usize, Next) {
        for i in 1.. {
            let next = q.next_deadline();
            run_due(q, now);
            match next {
                Next::Busy => {}
                Next::At(w) if w <= now => {}
                other => return (i, other),
            }
        }
        unreachable!()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadline_order_with_fifo_ties() {
        let mut q = TimerQueue::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        // Close and far deadlines alike.
        timer(&mut q, t0 + ms(20), &log, 3);
        timer(&mut q, t0 + ms(10), &log, 1);
        timer(&mut q, t0 + ms(10), &log, 2);
        timer(&mut q, t0 + ms(30), &log, 4);
        timer(&mut q, t0 + ms(5000), &log, 6);
        timer(&mut q, t0 + ms(300), &log, 5);
        timer(&mut q, t0 + ms(5000), &log, 7);
        assert_eq!(q.next_deadline(), Next::At(t0 + ms(10)));
        run_due(&mut q, t0 + ms(9));
        assert!(log.borrow().is_empty(), "never early");
        run_due(&mut q, t0 + ms(20));
        assert_eq!(*log.borrow(), vec![1, 2, 3]);
        assert_eq!(q.len(), 4);
        assert_eq!(q.next_deadline(), Next::At(t0 + ms(30)));
        run_due(&mut q, t0 + ms(4999));
        assert_eq!(*log.borrow(), vec![1, 2, 3, 4, 5]);
        assert_eq!(q.next_deadline(), Next::At(t0 + ms(5000)));
        run_due(&mut q, t0 + ms(5000));
        assert_eq!(*log.borrow(), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(q.next_deadline(), Next::Idle);
        assert!(q.is_empty());
    }

    #[test]
    fn deadlines_before_the_queue_was_created_keep_their_order() {
        let t0 = Instant::now();
        std::thread::sleep(ms(2));
        let mut q = TimerQueue::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        timer(&mut q, t0 + Duration::from_micros(1500), &log, 2);
        timer(&mut q, t0, &log, 1);
        timer(&mut q, t0 + ms(60_000), &log, 3);
        assert_eq!(q.next_deadline(), Next::At(t0));
        run_due(&mut q, t0 + ms(2));
        assert_eq!(*log.borrow(), vec![1, 2]);
    }

    #[test]
    fn cancelled_head_is_skipped_and_counted() {
        let mut q = TimerQueue::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let a = timer(&mut q, t0 + ms(1), &log, 1);
        timer(&mut q, t0 + ms(2), &log, 2);
        a.cancel();
        a.cancel();
        assert_eq!(q.cancelled(), 1);
        assert_eq!(q.next_deadline(), Next::At(t0 + ms(2)));
        assert_eq!(q.cancelled(), 0);
        run_due(&mut q, t0 + Duration::from_secs(1));
        assert_eq!(*log.borrow(), vec![2]);
    }

    #[test]
    fn cancelling_after_firing_does_not_count() {
        let mut q = TimerQueue::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let a = timer(&mut q, t0, &log, 1);
        run_due(&mut q, t0);
        a.cancel();
        assert_eq!(q.cancelled(), 0);
    }

    /// After a mass cancel no call touches more than its budget, and the
    /// entries are all reclaimed over a bounded number of iterations; the
    /// live timers among them keep their order.
    #[test]
    fn a_mass_cancel_is_reclaimed_a_budget_at_a_time() {
        for far in [true, false] {
            let mut q = TimerQueue::new();
            let log = Rc::new(RefCell::new(Vec::new()));
            let t0 = Instant::now();
            let n = 5 * ITERATION_BUDGET as u64;
            // Far: spread over seconds; near: one deadline, due.
            let at = |i: u64| {
                if far {
                    t0 + ms(1000 + i % 9000)
                } else {
                    t0 + ms(5)
                }
            };
            let hs: Vec<_> = (0..n).map(|i| timer(&mut q, at(i), &log, 0)).collect();
            timer(&mut q, t0 + ms(5), &log, 1);
            timer(&mut q, t0 + ms(20_000), &log, 2);
            hs.iter().for_each(TimerHandle::cancel);
            drop(hs);
            let mut iterations = 0;
            let now = t0 + ms(6);
            loop {
                let before = q.len();
                let next = q.next_deadline();
                run_due(&mut q, now);
                iterations += 1;
                let touched = before - q.len();
                assert!(
                    touched <= 2 * ITERATION_BUDGET + 1,
                    "{touched} in one iteration"
                );
                if next != Next::Busy {
                    break;
                }
                assert!(iterations < 100, "not reclaimed: {} left", q.len());
            }
            assert!(iterations >= 3, "spread over iterations ({iterations})");
            assert!(q.len() <= 2 + MIN_COMPACT, "purged down to the threshold");
            assert_eq!(*log.borrow(), vec![1]);
            // The few cancelled entries left go as they reach the head.
            let mut next = q.next_deadline();
            for _ in 0..MIN_COMPACT {
                if next != Next::Busy {
                    break;
                }
                next = q.next_deadline();
            }
            assert_eq!(next, Next::At(t0 + ms(20_000)));
            assert_eq!(q.len(), 1);
        }
    }

    /// Schedule + cancel churn keeps the entries bounded, whether the loop
    /// iterates between the pairs or never does (the push then sweeps).
    #[test]
    fn churn_keeps_the_queue_bounded() {
        for iterate_every in [Some(1000u32), None] {
            let mut q = TimerQueue::new();
            let log = Rc::new(RefCell::new(Vec::new()));
            let t0 = Instant::now();
            let live: Vec<_> = (0..200)
                .map(|i| timer(&mut q, t0 + ms(3_600_000 + i), &log, 0))
                .collect();
            let mut max_len = 0;
            for i in 0..300_000u32 {
                let delay = ms(1000 + u64::from(i % 9000));
                timer(&mut q, t0 + delay, &log, 0).cancel();
                if iterate_every.is_some_and(|n| i % n == 0) {
                    q.next_deadline();
                    run_due(&mut q, t0);
                }
                max_len = max_len.max(q.len());
            }
            let bound = 4 * (live.len() + MIN_COMPACT) + 2 * ITERATION_BUDGET;
            assert!(
                max_len <= bound,
                "{max_len} entries for {} live",
                live.len()
            );
            assert!(live.iter().all(|h| !h.cancelled()));
            settle(&mut q, t0);
            assert!(q.len() <= 2 * (live.len() + MIN_COMPACT));
        }
    }

    /// A model check: random pushes (near, far, equal deadlines), cancels,
    /// mass cancels and advances against a sorted list, with a fixed-seed
    /// generator. Every answer of `next_deadline` is the model's earliest
    /// deadline, every fired timer the model's earliest due one, and the
    /// entry count is always live + counted cancelled, with the purge rule
    /// keeping it bounded.
    #[test]
    fn matches_a_simple_model() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut q = TimerQueue::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let mut now = t0;
        // (deadline, id, handle); ids grow with scheduling order.
        let mut model: Vec<(Instant, u32, TimerHandle)> = Vec::new();
        let mut last_when = t0;
        let (mut busy_seen, mut purges, mut passes_across_calls) = (0, 0, 0);
        let mut max_live = 0;
        let mut next_id = 0u32;
        for _ in 0..60_000u32 {
            max_live = max_live.max(model.len());
            match next() % 1024 {
                0..=699 => {
                    let when = match next() % 5 {
                        0 => now + Duration::from_micros(next() % 50_000),
                        1 => now + ms(next() % 3000),
                        2 => now + ms(3_600_000 + next() % 1000),
                        3 => last_when,
                        _ => now + Duration::from_micros(next() % 200_000),
                    };
                    last_when = when;
                    next_id += 1;
                    let h = timer(&mut q, when, &log, next_id);
                    model.push((when, next_id, h));
                }
                700..=709 => {
                    // A burst of close deadlines, more than a budget.
                    let start = now + ms(20 + next() % 100);
                    for _ in 0..(2 * ITERATION_BUDGET as u64 + next() % 100) {
                        let when = start + Duration::from_micros(next() % 16_000);
                        next_id += 1;
                        let h = timer(&mut q, when, &log, next_id);
                        model.push((when, next_id, h));
                    }
                }
                710..=849 => {
                    if !model.is_empty() {
                        let i = (next() as usize) % model.len();
                        let (_, _, h) = model.swap_remove(i);
                        h.cancel();
                    }
                }
                850 => {
                    // A mass cancel: the purge rule kicks in.
                    purges += 1;
                    let keep = model.len() / 10;
                    for (_, _, h) in model.drain(keep..) {
                        h.cancel();
                    }
                }
                _ => {
                    now += Duration::from_micros(next() % 40_000);
                    model.sort_by_key(|(w, id, _)| (*w, *id));
                    loop {
                        let answer = q.next_deadline();
                        match answer {
                            Next::Busy => busy_seen += 1,
                            Next::Idle => assert!(model.is_empty(), "Idle with live timers"),
                            Next::At(w) => assert_eq!(Some(w), model.first().map(|m| m.0)),
                        }
                        passes_across_calls += usize::from(q.old_len() > 0);
                        run_due(&mut q, now);
                        let fired: Vec<u32> = log.borrow_mut().drain(..).collect();
                        for id in fired {
                            let (w, first, _) = model.remove(0);
                            assert_eq!(id, first, "fired out of order");
                            assert!(w <= now, "fired early");
                        }
                        assert_eq!(q.len(), model.len() + q.cancelled());
                        let pending_due = model.first().is_some_and(|m| m.0 <= now);
                        if answer != Next::Busy && !pending_due {
                            break;
                        }
                    }
                    let bound = 2 * (model.len() + MIN_COMPACT) + 2 * ITERATION_BUDGET;
                    assert!(
                        q.len() <= bound,
                        "{} entries, {} live",
                        q.len(),
                        model.len()
                    );
                }
            }
        }
        assert!(
            purges > 20
                && busy_seen > 20
                && passes_across_calls > 20
                && max_live > 4 * ITERATION_BUDGET,
            "purges {purges}, busy {busy_seen}, passes across calls \
             {passes_across_calls}, max live {max_live}"
        );
    }
}
