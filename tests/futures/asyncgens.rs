//! track_async_gen / shutdown_asyncgens: live streams are finalised (their
//! Drop runs) and then yield None, a panicking Drop is reported while the
//! others are still finalised, no tracking after shutdown, aclose, and a
//! tracked stream behaving as a normal Stream.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::util::*;
use aioloop::{AsyncGen, ErrorKind, EventLoop};
use futures_lite::{stream, Stream, StreamExt};

/// An endless stream 0, 1, 2, ... that owns a guard (its "finally:" block).
struct Counting {
    next: u32,
    _guard: DropCount,
}

impl Stream for Counting {
    type Item = u32;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<u32>> {
        let n = self.next;
        self.next += 1;
        Poll::Ready(Some(n))
    }
}

fn counting(drops: &Rc<std::cell::Cell<usize>>) -> Counting {
    Counting {
        next: 0,
        _guard: DropCount(drops.clone()),
    }
}

/// A stream whose Drop panics.
struct PanicsOnDrop;
impl Stream for PanicsOnDrop {
    type Item = ();
    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<()>> {
        Poll::Pending
    }
}
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("stream finaliser failed");
        }
    }
}

#[test]
fn shutdown_asyncgens_finalises_live_streams() {
    let lp = new_loop();
    let drops = counter();
    let mut a = lp.track_async_gen(counting(&drops)).unwrap();
    let mut b = lp.track_async_gen(counting(&drops)).unwrap();
    let finished = lp.track_async_gen(stream::iter([1, 2])).unwrap();
    drop(finished); // already gone: nothing to finalise
    assert_eq!(lp.async_gens_alive(), 2);

    let lp2 = lp.clone();
    let (d, outcome) = (drops.clone(), log::<Option<u32>>());
    let o = outcome.clone();
    lp.run_until_complete(async move {
        // Half-way through: started, not finished.
        assert_eq!(a.next().await, Some(0));
        assert_eq!(a.next().await, Some(1));
        assert_eq!(b.next().await, Some(0));
        assert_eq!(d.get(), 0);
        lp2.shutdown_asyncgens().await.unwrap();
        assert_eq!(d.get(), 2, "both streams were dropped, now");
        assert!(a.is_closed() && b.is_closed());
        let (after_a, after_b) = (a.next().await, b.next().await);
        o.borrow_mut().extend([after_a, after_b]);
        assert_eq!(lp2.async_gens_alive(), 0, "the registry forgot them");
    })
    .unwrap();
    assert_eq!(*outcome.borrow(), [None, None]);
    lp.close().unwrap();
}

#[test]
fn a_panicking_finaliser_is_reported_and_the_others_still_run() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let drops = counter();
    let first = lp.track_async_gen(counting(&drops)).unwrap();
    let bad = lp.track_async_gen(PanicsOnDrop).unwrap();
    let last = lp.track_async_gen(counting(&drops)).unwrap();
    let lp2 = lp.clone();
    lp.run_until_complete(async move { lp2.shutdown_asyncgens().await })
        .unwrap()
        .unwrap();
    assert_eq!(
        drops.get(),
        2,
        "the streams around the bad one were finalised"
    );
    assert!(first.is_closed() && bad.is_closed() && last.is_closed());
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].message.contains("asynchronous generator"),
        "{}",
        seen[0].message
    );
    assert_eq!(seen[0].kind, Some(ErrorKind::Panicked));
    assert_eq!(seen[0].panic.as_deref(), Some("stream finaliser failed"));
    drop(seen);
    drop((first, bad, last));
    lp.close().unwrap();
}

#[test]
fn tracking_after_shutdown_is_invalid_state_and_on_a_closed_loop_closed() {
    let lp = new_loop();
    let lp2 = lp.clone();
    lp.run_until_complete(async move { lp2.shutdown_asyncgens().await })
        .unwrap()
        .unwrap();
    let drops = counter();
    let err = lp.track_async_gen(counting(&drops)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert_eq!(drops.get(), 1, "the refused stream was dropped");
    lp.close().unwrap();

    let lp = new_loop();
    lp.close().unwrap();
    let err = lp.track_async_gen(stream::empty::<()>()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[test]
fn aclose_drops_the_stream_now() {
    let lp = new_loop();
    let drops = counter();
    let mut g = lp.track_async_gen(counting(&drops)).unwrap();
    let d = drops.clone();
    let after = lp
        .run_until_complete(async move {
            assert_eq!(g.next().await, Some(0));
            assert!(!g.is_closed());
            g.aclose();
            assert!(g.is_closed());
            assert_eq!(d.get(), 1);
            g.aclose(); // twice: a no-op
            assert_eq!(d.get(), 1);
            g.next().await
        })
        .unwrap();
    assert_eq!(after, None);
    assert_eq!(lp.async_gens_alive(), 0);
    // shutdown_asyncgens after aclose: nothing left to finalise.
    let lp2 = lp.clone();
    lp.run_until_complete(async move { lp2.shutdown_asyncgens().await })
        .unwrap()
        .unwrap();
    assert_eq!(drops.get(), 1);
    lp.close().unwrap();
}

/// A stream that ticks on the loop's timers, like an async generator with
/// `await asyncio.sleep()` inside.
fn ticker(lp: &EventLoop, n: u32) -> impl Stream<Item = u32> + 'static {
    let lp = lp.clone();
    stream::unfold(0u32, move |i| {
        let lp = lp.clone();
        async move {
            if i == n {
                return None;
            }
            lp.sleep(Duration::from_millis(1)).await.unwrap();
            Some((i, i + 1))
        }
    })
}

#[test]
fn a_tracked_stream_works_as_a_normal_stream() {
    let lp = new_loop();
    let tracked: AsyncGen<_> = lp.track_async_gen(ticker(&lp, 5)).unwrap();
    let evens = lp.track_async_gen(stream::iter(0..10)).unwrap();
    let dog = Watchdog::start(&lp);
    let (ticks, evens) = lp
        .run_until_complete(async move {
            let ticks: Vec<u32> = tracked.collect().await;
            let evens: Vec<i32> = evens.filter(|x| x % 2 == 0).map(|x| x * 10).collect().await;
            (ticks, evens)
        })
        .unwrap();
    dog.disarm();
    assert_eq!(ticks, [0, 1, 2, 3, 4]);
    assert_eq!(evens, [0, 20, 40, 60, 80]);
    lp.close().unwrap();
}

#[test]
fn shutdown_asyncgens_while_a_stream_is_suspended_in_a_sleep() {
    // The stream is parked on a timer when it is finalised: its sleep (and
    // that timer) go with it, and the consumer sees the end.
    let lp = new_loop();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let lp_s = lp.clone();
    let slow = stream::unfold(guard, move |g| {
        let lp = lp_s.clone();
        async move {
            lp.sleep(Duration::from_secs(3600)).await.unwrap();
            Some((1u8, g))
        }
    });
    let mut tracked = lp.track_async_gen(slow).unwrap();
    let lp2 = lp.clone();
    let dog = Watchdog::start(&lp);
    let end = lp
        .run_until_complete(async move {
            let first = futures_lite::future::poll_once(tracked.next()).await;
            assert!(first.is_none(), "parked on its hour-long sleep");
            assert_eq!(lp2.timer_heap_len(), 1);
            lp2.shutdown_asyncgens().await.unwrap();
            tracked.next().await
        })
        .unwrap();
    dog.disarm();
    assert_eq!(end, None);
    assert_eq!(drops.get(), 1);
    one_iteration(&lp);
    assert_eq!(lp.timer_heap_len(), 0, "the sleep's timer was cancelled");
    lp.close().unwrap();
}

#[test]
fn shutdown_asyncgens_from_inside_a_tracked_stream() {
    // The stream finalises the registry while it is itself being polled: its
    // own drop is deferred until that poll returns.
    let lp = new_loop();
    let drops = counter();
    let guard = DropCount(drops.clone());
    let lp_s = lp.clone();
    let d = drops.clone();
    let selfish = stream::unfold(guard, move |g| {
        let (lp, d) = (lp_s.clone(), d.clone());
        async move {
            lp.shutdown_asyncgens().await.unwrap();
            assert_eq!(d.get(), 0, "not dropped while it runs");
            Some((7u8, g))
        }
    });
    let mut tracked = lp.track_async_gen(selfish).unwrap();
    let got = lp
        .run_until_complete(async move {
            let first = tracked.next().await;
            let second = tracked.next().await;
            (first, second)
        })
        .unwrap();
    assert_eq!(got, (Some(7), None));
    assert_eq!(
        drops.get(),
        1,
        "dropped right after the poll that closed it"
    );
    lp.close().unwrap();
}
