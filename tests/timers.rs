//! Timers: call_later / call_at ordering and ties, never firing early on the
//! real clock, TimerHandle::when and cancel, O(1) cancel with heap
//! compaction, far deadlines with the VirtualClock and on the real clock,
//! overflowing delays, and sleep().

mod util;

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioloop::{ErrorKind, EventLoop, TimerHandle, VirtualClock};
use util::*;

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
    assert!(format!("{c:?}").contains("tests/timers.rs"));
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

#[test]
fn cancel_is_lazy_and_the_heap_compacts() {
    let lp = new_loop();
    let far = Duration::from_secs(3600);
    let keep = lp.call_later(far * 2, || {}).unwrap();
    let handles: Vec<TimerHandle> = (0..100_000)
        .map(|_| lp.call_later(far, || {}).unwrap())
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
    one_iteration(&lp);
    assert!(
        lp.timer_heap_len() <= 1,
        "compacted to the live timer, got {}",
        lp.timer_heap_len()
    );
    assert!(!keep.cancelled());
    drop(handles);
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
fn an_unrepresentable_delay_is_an_invalid_argument() {
    for (lp, _) in [virtual_loop(), (new_loop(), VirtualClock::new())] {
        for delay in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let err = lp.call_later(delay, || {}).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
        assert_eq!(lp.timer_heap_len(), 0);
        let lp2 = lp.clone();
        let r = lp
            .run_until_complete(async move { lp2.sleep(Duration::MAX).await })
            .unwrap();
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidArgument);
        // The loop is unharmed.
        stop_after(&lp, Duration::from_millis(1));
        run_bounded(&lp);
        lp.close().unwrap();
    }
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
