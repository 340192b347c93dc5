//! `PerThreadLoop`: a `Send + Sync` slot that holds one current loop per
//! thread.
//!
//! A policy is process-wide (`Send + Sync`), but an [`EventLoop`] is `!Send`:
//! it must never leave the thread that made it. So the loops themselves live
//! in a thread-local table, and a `PerThreadLoop` only holds a key into it
//! (CPython's default policy keeps its loop in a `threading.local` for the
//! same reason). Each slot has its own key, so two policies never see each
//! other's loops.
//!
//! Each thread's table is a short list of `(key, owner, loop)` entries. No
//! borrow of it is held while user code can run: a replaced loop, or the
//! loops of slots that no longer exist, are taken out first and dropped after
//! the borrow ends, so a `Drop` of something such a loop held may call back
//! into any slot.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use loop_core::EventLoop;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

struct Entry {
    key: u64,
    /// Dead once the slot was dropped: the entry is then garbage.
    owner: Weak<()>,
    lp: EventLoop,
}

thread_local! {
    static CURRENT: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// One current [`EventLoop`] per thread, in a value that can be shared
/// between threads.
///
/// This is the storage of [`DefaultEventLoopPolicy`](crate::DefaultEventLoopPolicy),
/// public so that custom policies can keep a per-thread loop too. Setting a
/// loop in one thread changes nothing in the others; a thread that never set
/// one sees `None`.
///
/// A loop stays referenced by the slot until it is replaced or cleared in
/// its thread, or the thread ends. When the slot itself is dropped, its loop
/// in the dropping thread goes at once; those in other threads go at their
/// next `set` on any slot, or when they end. A slot never closes a loop
/// itself; but if it was given a loop's owning handle (the one
/// [`EventLoop::new`] returned, not a clone), letting go of it closes that
/// loop, as dropping an owning handle always does.
///
/// ```
/// use loop_core::EventLoop;
/// use loop_policy::PerThreadLoop;
/// use std::sync::Arc;
///
/// let slot = Arc::new(PerThreadLoop::new());
/// let lp = EventLoop::new()?;
/// slot.set(Some(lp.clone()));
/// assert!(slot.get().unwrap().ptr_eq(&lp));
///
/// let other = slot.clone();
/// std::thread::spawn(move || assert!(other.get().is_none())).join().unwrap();
///
/// assert!(slot.take().unwrap().ptr_eq(&lp));
/// assert!(slot.get().is_none());
/// # Ok::<(), loop_core::LoopError>(())
/// ```
pub struct PerThreadLoop {
    key: u64,
    alive: Arc<()>,
}

impl PerThreadLoop {
    /// A new slot, empty in every thread.
    pub fn new() -> Self {
        PerThreadLoop {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
        }
    }

    /// The loop set in this thread, if any.
    pub fn get(&self) -> Option<EventLoop> {
        CURRENT
            .try_with(|table| {
                let table = table.try_borrow().ok()?;
                table
                    .iter()
                    .find(|e| e.key == self.key)
                    .map(|e| e.lp.clone())
            })
            .ok()
            .flatten()
    }

    /// Makes `lp` this thread's loop (`None` clears it). The loop it
    /// replaces is dropped, not closed.
    pub fn set(&self, lp: Option<EventLoop>) {
        // Everything removed is dropped after the borrow ends.
        let _removed = self.replace(lp);
    }

    /// Clears this thread's loop and returns it.
    pub fn take(&self) -> Option<EventLoop> {
        self.replace(None)
            .into_iter()
            .find(|e| e.key == self.key)
            .map(|e| e.lp)
    }

    /// Puts `lp` in this thread's entry and returns what was removed: the
    /// old entry of this slot, and the entries of dropped slots.
    fn replace(&self, lp: Option<EventLoop>) -> Vec<Entry> {
        let mut lp = lp;
        let removed = CURRENT.try_with(|table| {
            let Ok(mut table) = table.try_borrow_mut() else {
                // Only reachable from a drop inside this module, which runs
                // with no borrow held; refuse quietly rather than panic.
                return Vec::new();
            };
            let mut removed = Vec::new();
            let mut i = 0;
            while i < table.len() {
                let e = &table[i];
                if e.key == self.key || e.owner.strong_count() == 0 {
                    removed.push(table.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if let Some(lp) = lp.take() {
                table.push(Entry {
                    key: self.key,
                    owner: Arc::downgrade(&self.alive),
                    lp,
                });
            }
            removed
        });
        // During thread teardown the table is gone: nothing to replace, and
        // `lp` (if still here) is dropped by the caller's frame.
        removed.unwrap_or_default()
    }
}

impl Default for PerThreadLoop {
    fn default() -> Self {
        PerThreadLoop::new()
    }
}

impl Drop for PerThreadLoop {
    fn drop(&mut self) {
        // `alive` is dropped after this body, so the entry is still owned
        // here; remove this thread's entry explicitly.
        let _removed = self.replace(None);
    }
}

impl fmt::Debug for PerThreadLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerThreadLoop")
            .field("key", &self.key)
            .field("here", &self.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn new_loop() -> EventLoop {
        EventLoop::new().expect("creating a loop")
    }

    #[test]
    fn starts_empty_and_keeps_what_was_set() {
        let slot = PerThreadLoop::new();
        assert!(slot.get().is_none());
        let a = new_loop();
        slot.set(Some(a.clone()));
        assert!(slot.get().unwrap().ptr_eq(&a));
        let b = new_loop();
        slot.set(Some(b.clone()));
        assert!(slot.get().unwrap().ptr_eq(&b));
        slot.set(None);
        assert!(slot.get().is_none());
        assert!(slot.take().is_none());
    }

    #[test]
    fn two_slots_are_independent() {
        let one = PerThreadLoop::new();
        let two = PerThreadLoop::new();
        let a = new_loop();
        one.set(Some(a.clone()));
        assert!(two.get().is_none());
        let b = new_loop();
        two.set(Some(b.clone()));
        assert!(one.get().unwrap().ptr_eq(&a));
        assert!(two.get().unwrap().ptr_eq(&b));
        assert!(one.take().unwrap().ptr_eq(&a));
        assert!(two.get().unwrap().ptr_eq(&b));
    }

    #[test]
    fn each_thread_has_its_own_loop() {
        let slot = Arc::new(PerThreadLoop::new());
        let here = new_loop();
        slot.set(Some(here.clone()));
        let there = slot.clone();
        let ok = std::thread::spawn(move || {
            let empty = there.get().is_none();
            let lp = new_loop();
            there.set(Some(lp.clone()));
            let own = there.get().is_some_and(|l| l.ptr_eq(&lp));
            empty && own
        })
        .join()
        .unwrap();
        assert!(ok);
        assert!(slot.get().unwrap().ptr_eq(&here));
    }

    #[test]
    fn the_slot_lets_go_of_replaced_and_orphaned_loops() {
        // A loop's ready callbacks are dropped with it: use one as a probe.
        struct Probe(Rc<Cell<bool>>);
        impl Drop for Probe {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let probe_loop = |flag: &Rc<Cell<bool>>| {
            let lp = new_loop();
            let p = Probe(flag.clone());
            lp.call_soon(move || drop(p)).unwrap();
            lp
        };

        let replaced = Rc::new(Cell::new(false));
        let slot = PerThreadLoop::new();
        slot.set(Some(probe_loop(&replaced)));
        assert!(!replaced.get());
        slot.set(Some(new_loop()));
        assert!(replaced.get(), "the replaced loop was not dropped");

        // A dropped slot's loop goes with it in this thread.
        let dropped = Rc::new(Cell::new(false));
        let gone = PerThreadLoop::new();
        gone.set(Some(probe_loop(&dropped)));
        drop(gone);
        assert!(dropped.get(), "a dropped slot kept its loop");
    }

    #[test]
    fn a_drop_run_by_a_replaced_loop_may_use_the_slot() {
        // The replaced loop holds a callback whose captured value, when
        // dropped, reads and writes the same slot: no borrow is held then.
        struct Reenter(Arc<PerThreadLoop>, Rc<Cell<bool>>);
        impl Drop for Reenter {
            fn drop(&mut self) {
                let seen = self.0.get();
                self.0.set(None);
                self.1.set(seen.is_some());
            }
        }
        let slot = Arc::new(PerThreadLoop::new());
        let saw_new = Rc::new(Cell::new(false));
        let first = new_loop();
        let r = Reenter(slot.clone(), saw_new.clone());
        first.call_soon(move || drop(r)).unwrap();
        slot.set(Some(first));
        slot.set(Some(new_loop()));
        assert!(saw_new.get(), "the drop did not see the new loop");
        assert!(slot.get().is_none(), "the drop's set(None) was lost");
    }
}
