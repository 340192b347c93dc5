//! Timer handles and the slots behind them (loop-core's timer slab, issue
//! 16): handles that outlive their loop, closures of every size, closures
//! whose drop panics or schedules and cancels other timers, cancel from
//! inside a callback, and the reports that name a timer.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::util::*;
use aioloop::{EventLoop, TimerHandle, VirtualClock};

fn virtual_loop() -> EventLoop {
    EventLoop::builder()
        .virtual_clock(VirtualClock::new())
        .build()
        .unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Handles kept after `close()` and after the loop itself is gone still
/// answer (`when`, `cancelled`, `location`, `Debug`) and cancel harmlessly;
/// closing dropped the closures of the timers still pending.
#[test]
fn timer_handles_outlive_their_loop() {
    let drops = counter();
    let ran = counter();
    let mut kept = Vec::new();
    for closed_first in [true, false] {
        let lp = virtual_loop();
        let t0 = lp.time();
        let (g, r) = (DropCount(drops.clone()), ran.clone());
        let fired = lp
            .call_later(ms(1), move || {
                let _g = &g;
                r.set(r.get() + 1);
            })
            .unwrap();
        let g = DropCount(drops.clone());
        let pending = lp.call_later(ms(3_600_000), move || drop(g)).unwrap();
        let g = DropCount(drops.clone());
        let cancelled = lp.call_at(t0 + ms(5), move || drop(g)).unwrap();
        cancelled.cancel();
        let g = DropCount(drops.clone());
        let never = lp.call_later(Duration::MAX, move || drop(g)).unwrap();
        let l = lp.clone();
        lp.call_later(ms(2), move || l.stop()).unwrap();
        run_bounded(&lp);
        assert_eq!(ran.get(), if closed_first { 1 } else { 2 });
        if closed_first {
            lp.close().unwrap();
        }
        drop(lp); // closes it otherwise
        for (h, offset) in [(&fired, 1), (&pending, 3_600_000), (&cancelled, 5)] {
            assert_eq!(h.when() - t0, ms(offset));
        }
        assert!(never.when() > pending.when());
        assert!(!fired.cancelled());
        assert!(pending.cancelled(), "close() cancels what is pending");
        assert!(never.cancelled());
        assert!(format!("{pending:?}").starts_with("<TimerHandle cancelled when="));
        assert!(pending.location().file().ends_with("timer_slots.rs"));
        for h in [&fired, &pending, &cancelled, &never] {
            h.cancel();
        }
        assert!(fired.cancelled());
        kept.extend([fired, pending.clone(), cancelled, never, pending]);
    }
    assert_eq!(drops.get(), 8, "every closure dropped, once");
    // The loops' slabs go with the last handles.
    drop(kept);
}

/// Zero-sized, small, large (boxed) and over-aligned closures all run in
/// deadline order, once, and release what they captured.
#[test]
fn closures_of_every_size_run_once_in_order() {
    #[repr(align(64))]
    struct Aligned(u32);
    let lp = virtual_loop();
    let order = log::<u32>();
    let token = Rc::new(());
    let o = order.clone();
    let big = [3u32; 64];
    let t = token.clone();
    lp.call_later(ms(3), move || {
        let _t = &t;
        o.borrow_mut().push(big.iter().sum());
    })
    .unwrap();
    let o = order.clone();
    let aligned = Aligned(4);
    lp.call_later(ms(4), move || {
        let a = &aligned;
        assert_eq!(a as *const Aligned as usize % 64, 0);
        o.borrow_mut().push(a.0);
    })
    .unwrap();
    let o = order.clone();
    let t = token.clone();
    lp.call_later(ms(1), move || {
        let _t = &t;
        o.borrow_mut().push(1);
    })
    .unwrap();
    fn nothing() {}
    lp.call_later(ms(2), nothing).unwrap();
    let l = lp.clone();
    lp.call_later(ms(2), move || l.call_soon(nothing).map(drop).unwrap())
        .unwrap();
    let l = lp.clone();
    lp.call_later(ms(10), move || l.stop()).unwrap();
    run_bounded(&lp);
    assert_eq!(*order.borrow(), [1, 192, 4]);
    assert_eq!(Rc::strong_count(&token), 1, "run closures are dropped");
    lp.close().unwrap();
}

/// A closure whose drop schedules a timer and cancels another, dropped by
/// a cancel (alone, and among thousands cancelled at once, whose entries
/// the loop then purges) and by `close()`: the loop's timer state stays
/// consistent and the timer it scheduled runs (or, from `close()`, is
/// refused with an error).
#[test]
fn a_closure_dropped_may_schedule_and_cancel_timers() {
    struct OnDrop(Option<Box<dyn FnOnce()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    let lp = virtual_loop();
    let order = log::<&'static str>();
    let refused = counter();
    let victim: Rc<RefCell<Option<TimerHandle>>> = Rc::default();
    let o = order.clone();
    victim.replace(Some(
        lp.call_later(ms(5), move || o.borrow_mut().push("victim"))
            .unwrap(),
    ));
    let (l, o, v) = (lp.clone(), order.clone(), victim.clone());
    let guard = OnDrop(Some(Box::new(move || {
        if let Some(h) = v.borrow_mut().take() {
            h.cancel();
        }
        let o2 = o.clone();
        l.call_later(ms(1), move || o2.borrow_mut().push("scheduled from a drop"))
            .unwrap();
    })));
    let h = lp.call_later(ms(2), move || drop(guard)).unwrap();
    h.cancel();
    // Many more, each scheduling and cancelling from its drop: enough
    // cancelled entries for the purge to run over the next iterations.
    let handles: Vec<_> = (0..3000u64)
        .map(|i| {
            let l = lp.clone();
            let guard = OnDrop(Some(Box::new(move || {
                let t = l.call_later(ms(3_600_000 + i), || {}).unwrap();
                t.cancel();
            })));
            lp.call_later(ms(3_600_000 + i), move || drop(guard))
                .unwrap()
        })
        .collect();
    handles.iter().for_each(TimerHandle::cancel);
    drop(handles);
    let l = lp.clone();
    lp.call_later(ms(20), move || l.stop()).unwrap();
    run_bounded(&lp);
    assert_eq!(*order.borrow(), ["scheduled from a drop"]);
    // Dropped by close(): scheduling is refused, nothing panics.
    let (l, r) = (lp.clone(), refused.clone());
    let guard = OnDrop(Some(Box::new(move || {
        if l.call_later(ms(1), || {}).is_err() {
            r.set(r.get() + 1);
        }
    })));
    let pending = lp.call_later(ms(50), move || drop(guard)).unwrap();
    lp.close().unwrap();
    assert_eq!(refused.get(), 1);
    assert!(pending.cancelled());
}

/// A closure whose drop panics: a cancel unwinds to its caller (the timer
/// stays cancelled), `close()` reports the panic through the exception
/// handler, and the loop's timers keep working in between.
#[test]
fn a_closure_whose_drop_panics() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("dropping the closure");
        }
    }
    let lp = virtual_loop();
    let seen = record_exceptions(&lp);
    let p = PanicOnDrop;
    let h = lp.call_later(ms(1), move || drop(p)).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.cancel()));
    assert!(caught.is_err());
    assert!(h.cancelled());
    h.cancel(); // nothing left to drop
    let ran = counter();
    let r = ran.clone();
    lp.call_later(ms(2), move || r.set(r.get() + 1)).unwrap();
    let l = lp.clone();
    lp.call_later(ms(3), move || l.stop()).unwrap();
    run_bounded(&lp);
    assert_eq!(ran.get(), 1);
    assert_no_exceptions(&seen);
    let p = PanicOnDrop;
    let pending = lp.call_later(ms(100), move || drop(p)).unwrap();
    lp.close().unwrap();
    assert!(pending.cancelled());
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].message.contains("while being dropped by close()"));
}

/// A callback that cancels its own timer, and one that cancels a timer due
/// in the same iteration after it; a panicking timer callback is reported
/// with its handle's name.
#[test]
fn cancel_from_inside_a_callback() {
    let lp = virtual_loop();
    let seen = record_exceptions(&lp);
    let order = log::<u32>();
    let own: Rc<RefCell<Option<TimerHandle>>> = Rc::default();
    let (o, me) = (order.clone(), own.clone());
    own.replace(Some(
        lp.call_later(ms(1), move || {
            let h = me.borrow_mut().take().unwrap();
            h.cancel();
            assert!(h.cancelled());
            o.borrow_mut().push(1);
        })
        .unwrap(),
    ));
    let later = Rc::new(Cell::new(None::<TimerHandle>));
    let (o, l2) = (order.clone(), later.clone());
    lp.call_later(ms(2), move || {
        l2.take().unwrap().cancel();
        o.borrow_mut().push(2);
    })
    .unwrap();
    let o = order.clone();
    later.set(Some(
        lp.call_later(ms(2), move || o.borrow_mut().push(3))
            .unwrap(),
    ));
    let boom = lp.call_later(ms(3), || panic!("timer callback")).unwrap();
    let l = lp.clone();
    lp.call_later(ms(4), move || l.stop()).unwrap();
    run_bounded(&lp);
    assert_eq!(*order.borrow(), [1, 2]);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let name = seen[0].handle.as_deref().unwrap_or_default();
    assert!(
        name.starts_with("<TimerHandle when=") && name.contains("timer_slots.rs"),
        "{name}"
    );
    assert!(!boom.cancelled());
    drop(seen);
    lp.close().unwrap();
}

/// `close()` cancels the thread-safe timers still pending, as it cancels
/// `TimerHandle`s: their handles say so and their callbacks are dropped,
/// whatever handles still exist.
#[test]
fn close_cancels_pending_threadsafe_timers() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    struct SendDrop(Arc<AtomicUsize>);
    impl Drop for SendDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let lp = virtual_loop();
    let drops = Arc::new(AtomicUsize::new(0));
    let handle = lp.handle();
    // Sent from another thread: it reaches the heap when the loop runs.
    let d = SendDrop(drops.clone());
    let h = handle.clone();
    let sent = std::thread::spawn(move || {
        h.call_later_threadsafe(ms(3_600_000), move || drop(d))
            .unwrap()
    })
    .join()
    .unwrap();
    let l = lp.clone();
    let d = drops.clone();
    let local = lp
        .run_until_complete(async move {
            let (d1, d2) = (SendDrop(d.clone()), SendDrop(d));
            let h = l.handle();
            let far = h
                .call_later_threadsafe(ms(3_600_000), move || drop(d1))
                .unwrap();
            let never = h
                .call_later_threadsafe(Duration::MAX, move || drop(d2))
                .unwrap();
            (far, never)
        })
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    lp.close().unwrap();
    for t in [&sent, &local.0, &local.1] {
        assert!(t.cancelled(), "{t:?}");
        assert!(!t.fired());
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "callbacks dropped by close()"
    );
}
