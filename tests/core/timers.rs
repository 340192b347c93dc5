//! Timers: call_later / call_at ordering and ties, never firing early on the
//! real clock, TimerHandle::when and cancel, O(1) cancel with a purge spread
//! over iterations, churn with a bounded heap, a mass cancel under the
//! virtual clock, far deadlines with the VirtualClock and on the real clock,
//! and sleep() (overflowing delays: core_behaviours.rs).

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::util::*;
use aioloop::{EventLoop, TimerHandle, VirtualClock};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn virtual_loop() -> (EventLoop, VirtualClock) {
    let clock = VirtualClock::new();
    let lp = EventLoop::builder()
        .virtual_clock(clock.clone())
        .build()
        .unwrap();
    (lp, clock)
}

/// Schedules a timer that stops the loop after `delay`.
fn stop_after(lp: &EventLoop, delay: Duration) -> TimerHandle {
    let lp2 = lp.clone();
    lp.call_later(delay, move || lp2.stop()).unwrap()
}

#[test]
fn timers_run_in_deadline_order() {
    let (lp, _clock) = virtual_loop();
    let order = log::<u64>();
    let t0 = lp.time();
    for (i, ms) in [50u64, 10, 30, 20, 40, 0, 5].into_iter().enumerate() {
        let o = order.clone();
        let cb = move || o.borrow_mut().push(ms);
        if i % 2 == 0 {
            lp.call_later(Duration::from_millis(ms), cb).unwrap();
        } else {
            lp.call_at(t0 + Duration::from_millis(ms), cb).unwrap();
        }
    }
    stop_after(&lp, Duration::from_millis(51));
    run_bounded(&lp);
    assert_eq!(*order.borrow(), [0, 5, 10, 20, 30, 40, 50]);
    assert!(lp.time() - t0 >= Duration::from_millis(51));
    lp.close().unwrap();
}

#[test]
fn equal_deadlines_run_in_scheduling_order() {
    let (lp, _clock) = virtual_loop();
    let order = log::<u32>();
    let when = lp.time() + Duration::from_millis(5);
    for i in 0..100u32 {
        let o = order.clone();
        let cb = move || o.borrow_mut().push(i);
        // call_later on a virtual clock that has not moved gives the same
        // deadline as call_at(when).
        if i % 3 == 0 {
            lp.call_later(Duration::from_millis(5), cb).unwrap();
        } else {
            lp.call_at(when, cb).unwrap();
        }
    }
    stop_after(&lp, Duration::from_millis(5));
    run_bounded(&lp);
    assert_eq!(*order.borrow(), (0..100).collect::<Vec<_>>());
    lp.close().unwrap();
}

#[test]
fn timers_never_fire_early_on_the_real_clock() {
    let lp = new_loop();
    let fired = counter();
    let early = log::<(usize, Duration)>();
    const N: usize = 200;
    for i in 0..N {
        // Delays from 0 to 20 ms in 100 µs steps: most are not whole ms.
        let delay = Duration::from_micros(i as u64 * 100);
        let (f, e, lp2) = (fired.clone(), early.clone(), lp.clone());
        let handle: Rc<Cell<Option<Instant>>> = Rc::default();
        let h = handle.clone();
        let t = lp
            .call_later(delay, move || {
                let now = Instant::now();
                let when = h.get().unwrap();
                if now < when {
                    e.borrow_mut().push((i, when - now));
                }
                assert!(lp2.time() >= when);
                bump(&f);
                if f.get() == N {
                    lp2.stop();
                }
            })
            .unwrap();
        handle.set(Some(t.when()));
    }
    run_bounded(&lp);
    assert_eq!(fired.get(), N);
    assert!(
        early.borrow().is_empty(),
        "fired early: {:?}",
        early.borrow()
    );
    lp.close().unwrap();
}

#[test]
fn timer_handle_when_is_the_deadline() {
    let (lp, clock) = virtual_loop();
    let t0 = lp.time();
    assert_eq!(t0, clock.now());
    let a = lp.call_later(Duration::from_secs(3), || {}).unwrap();
    assert_eq!(a.when(), t0 + Duration::from_secs(3));
    let at = t0 + Duration::from_millis(1234);
    let b = lp.call_at(at, || {}).unwrap();
    assert_eq!(b.when(), at);
    clock.advance(Duration::from_secs(10));
    let c = lp.call_later(Duration::from_secs(1), || {}).unwrap();
    assert_eq!(
        c.when(),
        t0 + Duration::from_secs(11),
        "from the clock's now"
    );
    assert!(format!("{c:?}").contains(file!()));
    lp.close().unwrap();

    // On the real clock: within the window of the call.
    let lp = new_loop();
    let before = lp.time();
    let t = lp.call_later(Duration::from_millis(250), || {}).unwrap();
    let after = lp.time();
    assert!(t.when() >= before + Duration::from_millis(250));
    assert!(t.when() <= after + Duration::from_millis(250));
    lp.close().unwrap();
}

#[test]
fn cancelled_timers_do_not_run_and_release_their_closures() {
    let (lp, _clock) = virtual_loop();
    let ran = log::<u32>();
    let drops = counter();
    let mut handles = Vec::new();
    for i in 0..10u32 {
        let (r, g) = (ran.clone(), DropCount(drops.clone()));
        handles.push(
            lp.call_later(Duration::from_millis(u64::from(i)), move || {
                let _g = &g;
                r.borrow_mut().push(i);
            })
            .unwrap(),
        );
    }
    for h in handles.iter().skip(1).step_by(2) {
        h.cancel();
        assert!(h.cancelled());
    }
    assert_eq!(drops.get(), 5, "cancel dropped the closures at once");
    // One due timer cancels a later one that is due in the same iteration.
    let victim: Rc<Cell<Option<TimerHandle>>> = Rc::default();
    let v = victim.clone();
    lp.call_later(Duration::from_millis(20), move || {
        v.take().unwrap().cancel();
    })
    .unwrap();
    let r = ran.clone();
    victim.set(Some(
        lp.call_later(Duration::from_millis(20), move || r.borrow_mut().push(99))
            .unwrap(),
    ));
    stop_after(&lp, Duration::from_millis(30));
    run_bounded(&lp);
    assert_eq!(*ran.borrow(), [0, 2, 4, 6, 8]);
    lp.close().unwrap();
}

/// Cancel only flags; the purge of a mass cancel is spread over iterations
/// (a budget of a few thousand entries each), never done in one go, and it
/// goes on while the loop has nothing else to do.
#[test]
fn cancel_is_lazy_and_the_purge_is_spread_over_iterations() {
    let lp = new_loop();
    let far = Duration::from_secs(3600);
    let keep = lp.call_later(far * 2, || {}).unwrap();
    let handles: Vec<TimerHandle> = (0..100_000)
        .map(|i| {
            lp.call_later(far + Duration::from_millis(i), || {})
                .unwrap()
        })
        .collect();
    assert_eq!(lp.timer_heap_len(), 100_001);
    for h in &handles {
        h.cancel();
    }
    assert_eq!(
        lp.timer_heap_len(),
        100_001,
        "cancel is O(1): it flags, the heap is untouched"
    );
    drop(handles);
    one_iteration(&lp);
    let after_one = lp.timer_heap_len();
    assert!(
        (90_000..100_001).contains(&after_one),
        "one iteration purges a budget's worth, not everything: {after_one} left"
    );
    // An idle loop goes on purging (zero poll timeouts) instead of sleeping
    // until its one live timer, two hours away.
    let mut iterations = 1;
    while lp.timer_heap_len() > 1 + 100 {
        one_iteration(&lp);
        iterations += 1;
        assert!(iterations < 1000, "{} left", lp.timer_heap_len());
    }
    assert!(iterations > 10, "spread over {iterations} iterations");
    assert!(!keep.cancelled());
    lp.close().unwrap();
}

/// Many schedule + cancel pairs keep the heap bounded, whether each
/// iteration churns more than the purge budget or the pairs come with no
/// iteration at all (scheduling then pays for sweeping). 10,000,000 pairs
/// run in the benchmark (`cargo xtask bench core`, `timer_churn`); here
/// fewer, so that a debug build takes seconds.
#[test]
fn schedule_cancel_churn_keeps_the_heap_bounded() {
    let lp = new_loop();
    let live: Vec<TimerHandle> = (0..1000)
        .map(|i| lp.call_later(Duration::from_secs(7200 + i), || {}).unwrap())
        .collect();
    // 100 iterations of 5,000 pairs (more than a budget each).
    let max_len = Rc::new(Cell::new(0));
    let rounds = counter();
    fn churn(lp: &EventLoop, max_len: &Rc<Cell<usize>>, rounds: &Rc<Cell<usize>>) {
        for i in 0..5000u64 {
            lp.call_later(Duration::from_millis(1000 + i % 9000), || {})
                .unwrap()
                .cancel();
            max_len.set(max_len.get().max(lp.timer_heap_len()));
        }
        bump(rounds);
        if rounds.get() == 100 {
            lp.stop();
        } else {
            let (l, m, r) = (lp.clone(), max_len.clone(), rounds.clone());
            lp.call_soon(move || churn(&l, &m, &r)).unwrap();
        }
    }
    let (l, m, r) = (lp.clone(), max_len.clone(), rounds.clone());
    lp.call_soon(move || churn(&l, &m, &r)).unwrap();
    run_bounded(&lp);
    assert!(max_len.get() <= 20_000, "heap grew to {}", max_len.get());
    // 300,000 pairs with no iteration in between.
    let mut max_len = 0;
    for i in 0..300_000u64 {
        lp.call_later(Duration::from_millis(1000 + i % 9000), || {})
            .unwrap()
            .cancel();
        max_len = max_len.max(lp.timer_heap_len());
    }
    assert!(
        max_len <= 20_000,
        "heap grew to {max_len} without iterations"
    );
    assert!(live.iter().all(|h| !h.cancelled()));
    lp.close().unwrap();
}

/// With the virtual clock: thousands of timers over ten seconds, most of
/// them cancelled at once (the purge then runs over many iterations), and
/// cancels from inside due callbacks. The survivors fire in deadline order,
/// ties in scheduling order, never before their deadline.
#[test]
fn a_mass_cancel_keeps_order_and_never_early_with_the_virtual_clock() {
    let (lp, _clock) = virtual_loop();
    let t0 = lp.time();
    let fired = log::<u32>();
    let early = counter();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut timers: Vec<(Instant, u32, TimerHandle)> = Vec::new();
    for id in 0..30_000u32 {
        // Whole milliseconds: many equal deadlines.
        let when = t0 + Duration::from_millis(next() % 10_000);
        let (f, e, lp2) = (fired.clone(), early.clone(), lp.clone());
        let h = lp
            .call_at(when, move || {
                if lp2.time() < when {
                    bump(&e);
                }
                f.borrow_mut().push(id);
            })
            .unwrap();
        assert_eq!(h.when(), when);
        timers.push((when, id, h));
    }
    // Cancel 90% at once.
    let mut survivors = Vec::new();
    for (when, id, h) in timers {
        if next() % 10 == 0 {
            survivors.push((when, id, h));
        } else {
            h.cancel();
        }
    }
    // Cancels from inside due callbacks: a canceller due with (and
    // scheduled just before) its victim, so that both are due in the same
    // iteration; and a survivor cancelled by a canceller due before it.
    let mut victims = std::collections::HashSet::new();
    survivors.sort_by_key(|(w, id, _)| (*w, *id));
    for (i, (when, _, _)) in survivors.iter().enumerate().step_by(37) {
        let victim_id = 100_000 + i as u32;
        let slot: Rc<Cell<Option<TimerHandle>>> = Rc::default();
        let s2 = slot.clone();
        lp.call_at(*when, move || s2.take().unwrap().cancel())
            .unwrap();
        let v = fired.clone();
        slot.set(Some(
            lp.call_at(*when, move || v.borrow_mut().push(victim_id))
                .unwrap(),
        ));
        victims.insert(victim_id);
    }
    for i in (1..survivors.len()).step_by(53) {
        let (earlier, _, _) = survivors[i - 1];
        if earlier < survivors[i].0 {
            let victim = survivors[i].2.clone();
            victims.insert(survivors[i].1);
            lp.call_at(earlier, move || victim.cancel()).unwrap();
        }
    }
    let expected: Vec<u32> = survivors
        .iter()
        .map(|(_, id, _)| *id)
        .filter(|id| !victims.contains(id))
        .collect();
    stop_after(&lp, Duration::from_secs(11));
    run_bounded(&lp);
    assert_eq!(early.get(), 0, "fired early");
    let fired = fired.borrow();
    let first_diff = fired.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none() && fired.len() == expected.len(),
        "order differs at {first_diff:?} (fired {}, expected {})",
        fired.len(),
        expected.len()
    );
    assert!(lp.timer_heap_len() <= 101, "{} left", lp.timer_heap_len());
    lp.close().unwrap();
}

#[test]
fn schedule_and_cancel_cycles_keep_the_heap_bounded() {
    let lp = new_loop();
    let live = lp.call_later(Duration::from_secs(7200), || {}).unwrap();
    let mut max_after = 0;
    for _round in 0..50 {
        let hs: Vec<TimerHandle> = (0..1000)
            .map(|i| lp.call_later(Duration::from_secs(3600 + i), || {}).unwrap())
            .collect();
        hs.iter().for_each(TimerHandle::cancel);
        one_iteration(&lp);
        max_after = max_after.max(lp.timer_heap_len());
    }
    assert!(max_after <= 1, "heap kept {max_after} entries");
    live.cancel();
    lp.close().unwrap();
}

#[test]
fn twelve_days_and_one_year_with_the_virtual_clock() {
    let (lp, clock) = virtual_loop();
    let t0 = lp.time();
    let real_start = Instant::now();
    let order = log::<(&str, Duration)>();
    let year = 365 * DAY;
    for (name, delay) in [
        ("year", year),
        ("12 days", 12 * DAY),
        ("1 s", Duration::from_secs(1)),
    ] {
        let (o, lp2) = (order.clone(), lp.clone());
        let when = t0 + delay;
        lp.call_later(delay, move || {
            assert!(lp2.time() >= when, "never early, in virtual time too");
            o.borrow_mut().push((name, lp2.time() - t0));
            if name == "year" {
                lp2.stop();
            }
        })
        .unwrap();
    }
    run_bounded(&lp);
    let order = order.borrow();
    let names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["1 s", "12 days", "year"]);
    assert_eq!(order[1].1, 12 * DAY);
    assert_eq!(order[2].1, year);
    assert!(lp.time() - t0 >= year);
    assert_eq!(lp.time(), clock.now());
    assert!(
        real_start.elapsed() < Duration::from_secs(10),
        "no real waiting"
    );
    lp.close().unwrap();
}

#[test]
fn a_far_deadline_on_the_real_clock_does_not_break_the_poller() {
    // The loop's only timer is decades away, so the poll timeout is huge (far
    // beyond the i32 milliseconds of epoll_wait); a readable fd ends the wait.
    for years in [1u32, 100] {
        let lp = new_loop();
        let far = lp.call_later(365 * DAY * years, || {}).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, b"x").unwrap();
        let woke = counter();
        let (w, lp2, fd) = (woke.clone(), lp.clone(), b.as_raw_fd());
        lp.add_reader(fd, move || {
            bump(&w);
            lp2.remove_reader(fd).unwrap();
            lp2.stop();
        })
        .unwrap();
        run_bounded(&lp);
        assert_eq!(woke.get(), 1);
        assert!(!far.cancelled());
        lp.close().unwrap();
    }
}

#[test]
fn due_timers_join_the_ready_queue_after_call_soon_callbacks() {
    let lp = new_loop();
    let order = log::<&str>();
    let o = order.clone();
    lp.call_at(lp.time() - Duration::from_millis(5), move || {
        o.borrow_mut().push("past timer")
    })
    .unwrap();
    let (o, lp2) = (order.clone(), lp.clone());
    lp.call_soon(move || {
        o.borrow_mut().push("soon");
        let o2 = o.clone();
        // Zero delay from inside a callback: next iteration, not this one.
        lp2.call_later(Duration::ZERO, move || o2.borrow_mut().push("zero timer"))
            .unwrap();
    })
    .unwrap();
    one_iteration(&lp);
    assert_eq!(*order.borrow(), ["soon", "past timer"]);
    one_iteration(&lp);
    assert_eq!(*order.borrow(), ["soon", "past timer", "zero timer"]);
    lp.close().unwrap();
}

#[test]
fn sleep_inside_run_until_complete() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let start = Instant::now();
    let t0 = lp.time();
    lp.run_until_complete(async move {
        lp2.sleep(Duration::from_millis(20)).await.unwrap();
        lp2.sleep(Duration::ZERO).await.unwrap();
    })
    .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(lp.time() - t0 >= Duration::from_millis(20));
    lp.close().unwrap();

    // A day of virtual sleep, at once.
    let (lp, _clock) = virtual_loop();
    let lp2 = lp.clone();
    let t0 = lp.time();
    let real = Instant::now();
    lp.run_until_complete(async move { lp2.sleep(DAY).await })
        .unwrap()
        .unwrap();
    assert_eq!(lp.time() - t0, DAY);
    assert!(real.elapsed() < Duration::from_secs(10));
    lp.close().unwrap();
}

#[test]
fn dropping_a_sleep_cancels_its_timer() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let pending = lp
        .run_until_complete(async move {
            let mut sleep = Box::pin(lp2.sleep(Duration::from_secs(3600)));
            let first = futures_lite::future::poll_once(sleep.as_mut()).await;
            assert_eq!(lp2.timer_heap_len(), 1, "the first poll scheduled it");
            drop(sleep);
            first.is_none()
        })
        .unwrap();
    assert!(pending);
    // The cancelled entry is dropped when it reaches the head of the heap.
    one_iteration(&lp);
    assert_eq!(
        lp.timer_heap_len(),
        0,
        "the dropped sleep left no live timer"
    );
    lp.close().unwrap();
}

/// LESSONS 19, as the uvloop regression test measures it: `sleep(d)`
/// never returns before `d` has elapsed on the real clock (`Instant::now()`
/// read before the call and after the await), over many delays that are
/// not whole milliseconds, including delays asked for late in an iteration
/// (after a slow callback: a clock cached at the start of the iteration
/// would put the deadline in the past).
#[test]
fn sleep_never_returns_early_measured_against_the_clock() {
    let lp = new_loop();
    let l = lp.clone();
    let dog = Watchdog::start(&lp);
    let early = lp
        .run_until_complete(async move {
            let mut early = Vec::new();
            for i in 0..150u64 {
                let delay = Duration::from_micros(i * 70 % 3_000 + 1);
                if i % 3 == 0 {
                    // Spend a while in this step first (on the loop thread).
                    let busy = Instant::now();
                    while busy.elapsed() < Duration::from_micros(500) {
                        std::hint::spin_loop();
                    }
                }
                let start = Instant::now();
                l.sleep(delay).await.unwrap();
                let took = start.elapsed();
                if took < delay {
                    early.push((delay, took));
                }
            }
            early
        })
        .unwrap();
    dog.disarm();
    assert!(early.is_empty(), "returned early: {early:?}");
    lp.close().unwrap();
}
