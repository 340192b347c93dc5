//! The loop thread's queue of [`LoopSleep`](crate::LoopSleep)s: one loop
//! timer per loop for all the sleeps polled on the loop's own thread.
//!
//! # Why
//! hyper arms its header-read timeout for every request on a kept-alive
//! connection: a sleep made, polled once (pending) and dropped as soon as
//! the next request's head arrives, 30 s before its deadline. A loop timer
//! per sleep (a thread-safe one: hyper's sleeps must be `Send + Sync`) cost
//! five allocations, a map entry and a heap entry that stayed until the
//! heap's purge reached it: more than tokio's whole timer wheel per request
//! (`cargo xtask bench hyper`, issue 13). tokio unlinks a dropped sleep from
//! its wheel in O(1); this queue gives the same to sleeps on the loop
//! thread, without a loop timer per sleep.
//!
//! # Design
//! - A sleep is a slot (`slots[index]`, reused through `free`, with a
//!   generation so that a stale key never reaches a reused slot) holding
//!   its waker, and an entry `(when, index, generation)` in a min-heap of
//!   plain values (no allocation per sleep once the vectors have grown).
//! - Disarming (the sleep dropped, reset, or moved to another thread) frees
//!   the slot at once and drops its waker; its heap entry becomes stale.
//!   When stale entries are more than [`MIN_PURGE`] and more than twice the
//!   live ones, the heap is rebuilt from the live entries (O(n) for at
//!   least 2n/3 disarms: O(1) amortised, and the heap stays within three
//!   times the live sleeps plus [`MIN_PURGE`]).
//! - One loop timer (`timer`) is scheduled at or before the earliest live
//!   deadline. A sleep with a later deadline (hyper's are always later: the
//!   same timeout from a later now) schedules nothing. When the timer runs
//!   it wakes the due sleeps, then schedules itself again for the earliest
//!   deadline left. A timer whose sleeps were all dropped is left to lapse
//!   (it runs nothing then): cancelling it for the next request to schedule
//!   another would cost a loop timer per request again. So a loop keeps at
//!   most one such timer, until the deadline of the sleep that armed it.
//! - Deadlines are on the loop's clock (a virtual clock too): a sleep's
//!   deadline is converted when it is armed, as a loop timer's delay is.
//!   A sleep never wakes before its deadline by that clock.
//! - The queues live in a thread-local table, one per loop, keyed by a
//!   [`WeakEventLoop`] (to arm) and by an id unique across threads (which a
//!   sleep's key carries: finding its queue in this thread's table is what
//!   says the sleep is on its loop's thread); a queue leaves the table when
//!   it holds no sleep and no timer, and queues of closed or dropped loops
//!   are dropped when the next queue is made.
//! - Wakers are woken, and the loop's timer scheduled, with no borrow of a
//!   queue held.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;
use std::time::Instant;

use loop_core::{EventLoop, TimerHandle, WeakEventLoop};

/// Stale heap entries tolerated before a purge (and at most twice as many
/// as the live ones).
pub(crate) const MIN_PURGE: usize = 128;

/// A sleep's place in its loop's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SleepKey {
    /// The queue's id: unique across threads, so a queue found by it in
    /// this thread's table proves that this is the loop's thread.
    queue: u64,
    index: u32,
    generation: u32,
}

/// What [`poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    /// The deadline passed: the slot is freed.
    Fired,
    /// Still waiting (the waker was updated).
    Pending,
    /// The key's queue is not on this thread (another thread, or the
    /// queue was dropped with its closed loop): arm again.
    Elsewhere,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    state: SlotState,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Free,
    Armed(Option<Waker>),
    Fired,
}

/// One loop's sleeps.
struct Queue {
    id: u64,
    lp: WeakEventLoop,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// `(when, index, generation)`, earliest first; entries whose slot was
    /// disarmed stay until popped or purged.
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Slots not free (armed or fired and not yet polled).
    in_use: usize,
    /// Armed slots: the heap's live entries.
    armed_slots: usize,
    /// The loop timer and its deadline.
    timer: Option<(Instant, TimerHandle)>,
    /// Loop timers scheduled so far (for the tests: how many sleeps shared one).
    timers_scheduled: u64,
}

type QueueRef = Rc<RefCell<Queue>>;

static NEXT_QUEUE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's queues, one per loop: (loop, queue id, queue).
    static QUEUES: RefCell<Vec<(WeakEventLoop, u64, QueueRef)>> = const { RefCell::new(Vec::new()) };
}

impl Queue {
    fn is_live(&self, index: u32, generation: u32) -> bool {
        let slot = &self.slots[index as usize];
        slot.generation == generation && matches!(slot.state, SlotState::Armed(_))
    }

    fn stale(&self) -> usize {
        self.heap.len() - self.armed_slots
    }

    /// Frees slot `index`.
    fn release(&mut self, index: u32) -> SlotState {
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let state = std::mem::take(&mut slot.state);
        self.free.push(index);
        self.in_use -= 1;
        if matches!(state, SlotState::Armed(_)) {
            self.armed_slots -= 1;
        }
        state
    }

    /// Rebuilds the heap from its live entries once stale ones dominate.
    fn maybe_purge(&mut self) {
        let stale = self.stale();
        if stale > MIN_PURGE && stale > 2 * self.armed_slots {
            let heap = std::mem::take(&mut self.heap);
            let mut live = heap.into_vec();
            live.retain(|Reverse((_, i, g))| self.is_live(*i, *g));
            self.heap = BinaryHeap::from(live);
        }
    }

    /// Drops stale entries off the top; the earliest live deadline.
    fn earliest(&mut self) -> Option<Instant> {
        while let Some(Reverse((when, i, g))) = self.heap.peek().copied() {
            if self.is_live(i, g) {
                return Some(when);
            }
            self.heap.pop();
        }
        None
    }

    /// Whether the queue may leave the table.
    fn idle(&self) -> bool {
        self.in_use == 0 && self.timer.is_none()
    }
}

/// The queue of `lp`, made if needed.
fn queue_of(lp: &EventLoop) -> QueueRef {
    QUEUES.with(|qs| {
        let mut qs = qs.borrow_mut();
        if let Some((_, _, q)) = qs.iter().find(|(w, _, _)| w.is(lp)) {
            return q.clone();
        }
        // Rare (a loop's first sleep): drop the queues of loops gone or closed.
        qs.retain(|(w, _, _)| w.upgrade().is_some_and(|l| !l.is_closed()));
        let id = NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed);
        let q = Rc::new(RefCell::new(Queue {
            id,
            lp: lp.downgrade(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            in_use: 0,
            armed_slots: 0,
            timer: None,
            timers_scheduled: 0,
        }));
        qs.push((lp.downgrade(), id, q.clone()));
        q
    })
}

/// The queue `id` if it is on this thread.
fn queue_by_id(id: u64) -> Option<QueueRef> {
    QUEUES.with(|qs| {
        qs.borrow()
            .iter()
            .find(|(_, i, _)| *i == id)
            .map(|(_, _, q)| q.clone())
    })
}

/// Takes `q` out of the table if it holds nothing.
fn retire_if_idle(q: &QueueRef) {
    if !q.borrow().idle() {
        return;
    }
    let _ = QUEUES.try_with(|qs| {
        if let Ok(mut qs) = qs.try_borrow_mut() {
            qs.retain(|(_, _, other)| !Rc::ptr_eq(other, q));
        }
    });
}

/// Arms a sleep due at `when` (the loop's clock) on `lp`, which runs on
/// this thread; `Err` if the loop is closed.
pub(crate) fn arm(lp: &EventLoop, when: Instant, waker: &Waker) -> Result<SleepKey, ()> {
    if lp.is_closed() {
        return Err(());
    }
    let q = queue_of(lp);
    let (key, reschedule) = {
        let mut qb = q.borrow_mut();
        let index = match qb.free.pop() {
            Some(i) => i,
            None => {
                qb.slots.push(Slot::default());
                (qb.slots.len() - 1) as u32
            }
        };
        let slot = &mut qb.slots[index as usize];
        slot.state = SlotState::Armed(Some(waker.clone()));
        let generation = slot.generation;
        qb.in_use += 1;
        qb.armed_slots += 1;
        qb.heap.push(Reverse((when, index, generation)));
        qb.maybe_purge();
        let reschedule = qb.timer.as_ref().is_none_or(|(at, _)| when < *at);
        let key = SleepKey {
            queue: qb.id,
            index,
            generation,
        };
        (key, reschedule)
    };
    if reschedule {
        schedule(lp, &q, when);
    }
    Ok(key)
}

/// (Re)schedules the queue's loop timer at `when`; the old one is cancelled.
fn schedule(lp: &EventLoop, q: &QueueRef, when: Instant) {
    let queue = q.clone();
    let timer = lp.call_at(when, move || fire(&queue)).ok();
    let old = {
        let mut qb = q.borrow_mut();
        qb.timers_scheduled += 1;
        std::mem::replace(&mut qb.timer, timer.map(|t| (when, t)))
    };
    if let Some((_, t)) = old {
        t.cancel();
    }
}

/// The queue's loop timer ran: wakes the due sleeps, schedules the next.
fn fire(q: &QueueRef) {
    let Some(lp) = q.borrow().lp.upgrade() else {
        return;
    };
    let now = lp.time();
    let mut wake = Vec::new();
    let next = {
        let mut qb = q.borrow_mut();
        qb.timer = None;
        while let Some(Reverse((when, i, g))) = qb.heap.peek().copied() {
            if when > now {
                break;
            }
            qb.heap.pop();
            if qb.is_live(i, g) {
                qb.armed_slots -= 1;
                let slot = &mut qb.slots[i as usize];
                if let SlotState::Armed(w) = std::mem::replace(&mut slot.state, SlotState::Fired) {
                    wake.extend(w);
                }
            }
        }
        qb.earliest()
    };
    match next {
        Some(when) => schedule(&lp, q, when),
        None => retire_if_idle(q),
    }
    wake.into_iter().for_each(Waker::wake);
}

/// Whether the sleep of `key` fired; else its waker becomes `waker`.
pub(crate) fn poll(key: SleepKey, waker: &Waker) -> Polled {
    let Some(q) = queue_by_id(key.queue) else {
        return Polled::Elsewhere;
    };
    {
        let mut qb = q.borrow_mut();
        let Some(slot) = qb.slots.get_mut(key.index as usize) else {
            return Polled::Elsewhere;
        };
        if slot.generation != key.generation {
            return Polled::Elsewhere;
        }
        match &mut slot.state {
            SlotState::Armed(w) => {
                let replaced = match w {
                    Some(w) if w.will_wake(waker) => None,
                    other => other.replace(waker.clone()),
                };
                drop(qb);
                // A waker's drop may drop its task (and with it other
                // sleeps of this queue): never under the queue's borrow.
                drop(replaced);
                return Polled::Pending;
            }
            SlotState::Free => return Polled::Elsewhere,
            SlotState::Fired => {}
        }
        qb.release(key.index);
    }
    retire_if_idle(&q);
    Polled::Fired
}

/// Frees the sleep of `key` (dropped, reset or moved off the loop thread):
/// its waker is dropped now, its heap entry goes stale. `false` if the
/// key's queue is not on this thread (see [`Polled::Elsewhere`]).
pub(crate) fn disarm(key: SleepKey) -> bool {
    let Some(q) = queue_by_id(key.queue) else {
        return false;
    };
    let state = {
        let mut qb = q.borrow_mut();
        match qb.slots.get(key.index as usize) {
            Some(s) if s.generation == key.generation && !matches!(s.state, SlotState::Free) => {}
            _ => return true,
        }
        let state = qb.release(key.index);
        qb.maybe_purge();
        state
    };
    retire_if_idle(&q);
    // The waker is dropped with no borrow held.
    drop(state);
    true
}

/// For the tests: (heap entries, slots in use, loop timers scheduled so
/// far) of `lp`'s queue, if it has one.
#[cfg(test)]
pub(crate) fn stats(lp: &EventLoop) -> Option<(usize, usize, u64)> {
    let id = QUEUES.with(|qs| qs.borrow().iter().find(|(w, _, _)| w.is(lp)).map(|e| e.1));
    id.and_then(queue_by_id).map(|q| {
        let q = q.borrow();
        (q.heap.len(), q.in_use, q.timers_scheduled)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::Wake;
    use std::time::Duration;

    /// A waker whose last drop disarms another sleep of the same queue, as
    /// dropping a task's waker may drop the task and the sleeps it holds.
    struct DisarmsOnDrop(Mutex<Option<SleepKey>>);

    impl Wake for DisarmsOnDrop {
        fn wake(self: Arc<Self>) {}
    }

    impl Drop for DisarmsOnDrop {
        fn drop(&mut self) {
            if let Some(key) = self.0.lock().unwrap().take() {
                assert!(disarm(key));
            }
        }
    }

    #[test]
    fn a_replaced_waker_is_dropped_with_no_borrow_of_the_queue_held() {
        let lp = EventLoop::new().unwrap();
        let when = lp.time() + Duration::from_secs(3600);
        let noop = Waker::noop().clone();
        let other = arm(&lp, when, &noop).unwrap();
        let dropper = Waker::from(Arc::new(DisarmsOnDrop(Mutex::new(Some(other)))));
        let key = arm(&lp, when, &dropper).unwrap();
        drop(dropper);
        // The sleep holds the last reference: a poll with another waker
        // replaces it, and its drop disarms `other` in the same queue.
        assert!(matches!(poll(key, &noop), Polled::Pending));
        assert!(matches!(poll(other, &noop), Polled::Elsewhere));
        assert!(disarm(key));
        lp.close().unwrap();
    }
}
