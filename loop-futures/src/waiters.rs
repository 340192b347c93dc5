//! [`WaiterList`]: the tasks waiting for one event, woken together.
//!
//! # Invariants
//! - A waker is registered only if no registered waker would already wake
//!   the same task ([`Waker::will_wake`]): a future polled again and again
//!   before its event (a task woken by something else, a `select`) keeps one
//!   entry, so the list is bounded by the number of waiting tasks, not by
//!   the number of polls.
//! - Waking takes the whole list out first, then wakes each waker with no
//!   borrow of the list held: a waker may run code (a local task's wake-up
//!   schedules it; a foreign waker may do anything) that registers again or
//!   wakes the same list.
//! - The list is `Send` (a `Waker` is), so a `Mutex<WaiterList>` serves
//!   waiters on other threads; take the list under the lock
//!   ([`take`](WaiterList::take)) and wake it after the guard is dropped.

use std::cell::RefCell;
use std::fmt;
use std::task::Waker;

/// The wakers of the tasks waiting for one event (see the module docs).
#[derive(Default)]
pub struct WaiterList {
    wakers: RefCell<Vec<Waker>>,
}

impl WaiterList {
    /// An empty list.
    pub const fn new() -> WaiterList {
        WaiterList {
            wakers: RefCell::new(Vec::new()),
        }
    }

    /// Registers `waker`, unless a registered waker would already wake its
    /// task.
    pub fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Takes every registered waker out, leaving the list empty: wake the
    /// returned list with [`wake_all`](Self::wake_all) once no lock or
    /// borrow is held.
    pub fn take(&self) -> WaiterList {
        WaiterList {
            wakers: RefCell::new(std::mem::take(&mut *self.wakers.borrow_mut())),
        }
    }

    /// Wakes every registered waker and empties the list (the list is taken
    /// out before the first waker runs).
    pub fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// How many wakers are registered.
    pub fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// Whether no waker is registered.
    pub fn is_empty(&self) -> bool {
        self.wakers.borrow().is_empty()
    }
}

impl fmt::Debug for WaiterList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaiterList")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// Counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_waker_polled_twice_is_registered_once() {
        let list = WaiterList::new();
        let (count, waker) = counter();
        list.register(&waker);
        list.register(&waker.clone());
        assert_eq!(list.len(), 1);
        list.wake_all();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wake_all_wakes_every_task_and_empties_the_list() {
        let list = WaiterList::new();
        let (a, wa) = counter();
        let (b, wb) = counter();
        list.register(&wa);
        list.register(&wb);
        assert_eq!(list.len(), 2);
        list.wake_all();
        assert!(list.is_empty());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        // Taken: a second wake reaches nobody.
        list.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn take_leaves_the_list_empty_and_keeps_the_wakers() {
        let list = WaiterList::new();
        let (a, wa) = counter();
        list.register(&wa);
        let taken = list.take();
        assert!(list.is_empty());
        assert_eq!(taken.len(), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
        taken.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
    }

    thread_local! {
        static LIST: WaiterList = const { WaiterList::new() };
    }

    /// A waker that registers itself again on `LIST` while it is woken (a
    /// task polled at once that still waits).
    struct Again(AtomicUsize);

    impl Wake for Again {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            let waker = Waker::from(self.clone());
            LIST.with(|l| l.register(&waker));
        }
    }

    #[test]
    fn a_waker_may_register_again_while_it_is_woken() {
        let again = Arc::new(Again(AtomicUsize::new(0)));
        LIST.with(|l| l.register(&Waker::from(again.clone())));
        // No borrow of the list is held while the waker runs.
        LIST.with(WaiterList::wake_all);
        assert_eq!(again.0.load(Ordering::SeqCst), 1);
        assert_eq!(LIST.with(WaiterList::len), 1);
        // Under a lock: taken with the guard held, woken after.
        let locked = std::sync::Mutex::new(WaiterList::new());
        let (c, w) = counter();
        locked.lock().unwrap().register(&w);
        let taken = locked.lock().unwrap().take();
        taken.wake_all();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert!(locked.lock().unwrap().is_empty());
    }
}
