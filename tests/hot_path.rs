//! The stream transport's write path on its fast path (issue 12, part 6):
//! `write`/`writelines` that the socket takes whole allocate nothing, and
//! `writelines` takes any number of buffers; and a done callback is
//! scheduled with one allocation, a timer with none once its loop's timer
//! slab has room (issue 16).
//!
//! Its own test binary: it installs a global allocator that counts the
//! allocations of each thread.
#![cfg(feature = "net")]

mod net_util;
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use aioloop::prelude::*;
use aioloop::{BaseProtocol, Protocol, Transport};
use net_util::*;
use util::*;

/// The system allocator, counting the allocations made by each thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the thread-local may be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting touches only a
// const-initialised thread-local `Cell` (no allocation, no re-entry).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded as given (the caller upholds `alloc`'s contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: as in `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// How many allocations this thread made while running `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// A protocol that ignores everything but `connection_lost`.
struct Quiet(Rc<Cell<bool>>);

impl BaseProtocol for Quiet {
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.0.set(true);
    }
}

impl Protocol for Quiet {
    fn data_received(&mut self, _: &[u8]) {}
}

/// A connected client transport, the blocking peer socket it talks to,
/// and whether its `connection_lost` ran.
fn connected(lp: &EventLoop) -> (Transport, std::net::TcpStream, Rc<Cell<bool>>) {
    let (listener, addr) = std_listener("127.0.0.1:0");
    let c = lp.clone();
    let lost = Rc::new(Cell::new(false));
    let l = lost.clone();
    let (t, _) = run(lp, async move {
        c.create_connection(
            move || Quiet(l),
            Some("127.0.0.1"),
            addr.port(),
            ConnectOptions::default(),
        )
        .await
    })
    .unwrap();
    let (peer, _) = listener.accept().unwrap();
    bounded(&peer);
    (t, peer, lost)
}

#[test]
fn write_and_writelines_taken_whole_by_the_socket_allocate_nothing() {
    let lp = new_loop();
    let (t, mut peer, _) = connected(&lp);
    // Warm up: the first calls may initialise thread-locals.
    t.write(b"w").unwrap();
    t.writelines(&[b"a", b"b"]).unwrap();
    let chunks: [&[u8]; 5] = [b"one ", b"two ", b"three ", b"four ", b"five"];
    let n = allocations_in(|| {
        t.write(b"0123456789").unwrap();
        t.writelines(&chunks).unwrap();
        t.writelines(&[&b"x"[..]; 40]).unwrap();
    });
    assert_eq!(n, 0, "write/writelines allocated {n} times");
    assert_eq!(t.get_write_buffer_size(), 0, "the socket took it all");
    let mut expected = b"wab0123456789".to_vec();
    expected.extend_from_slice(&chunks.concat());
    expected.extend_from_slice(&[b'x'; 40]);
    let mut got = vec![0u8; expected.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, expected);
    t.close();
    lp.close().unwrap();
}

#[test]
fn writelines_takes_more_buffers_than_one_system_call_can() {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    let (t, peer, lost) = connected(&lp);
    // More than IOV_MAX (1024 on Linux): one sendmsg cannot take them all.
    let data = pattern(3000 * 7, 5);
    let chunks: Vec<&[u8]> = data.chunks(7).collect();
    t.writelines(&chunks).unwrap();
    assert!(!t.is_closing(), "writelines failed the connection");
    t.close();
    let reader = std::thread::spawn(move || {
        let mut peer = peer;
        read_to_end_or_reset(&mut peer)
    });
    // Flushed, then connection_lost, then the socket closes.
    let deadline = std::time::Instant::now() + LIMIT;
    while !lost.get() {
        one_iteration(&lp);
        assert!(std::time::Instant::now() < deadline, "never flushed");
    }
    let (got, err) = reader.join().unwrap();
    assert_eq!(err, None);
    assert!(
        got == data,
        "the peer got {} of {} bytes",
        got.len(),
        data.len()
    );
    assert!(seen.borrow().is_empty(), "{:#?}", seen.borrow());
    lp.close().unwrap();
}

/// A done callback costs one allocation when its future completes: the
/// loop's callback cell, with the closure stored in it (before, the closure
/// was boxed once more on its way to `call_soon`).
#[test]
fn scheduling_a_done_callback_allocates_once() {
    let lp = new_loop();
    let ran = Rc::new(Cell::new(0u32));
    // A few rounds first, so that nothing is allocated for the first time.
    for _ in 0..2 {
        let fut = lp.create_future::<u32>();
        let r = ran.clone();
        fut.add_done_callback(move |f| r.set(r.get() + f.result().unwrap()));
        fut.set_result(1).unwrap();
        one_iteration(&lp);
    }
    let fut = lp.create_future::<u32>();
    let r = ran.clone();
    fut.add_done_callback(move |f| r.set(r.get() + f.result().unwrap()));
    // Each run hands the ready queue a fresh deque: give it its capacity.
    lp.call_soon(|| ()).unwrap();
    let before = ALLOCATIONS.with(Cell::get);
    fut.set_result(1).unwrap();
    let after = ALLOCATIONS.with(Cell::get);
    one_iteration(&lp);
    assert_eq!(ran.get(), 3);
    assert_eq!(after - before, 1, "allocations made by set_result");
}

/// A timer with a closure of up to 16 bytes allocates nothing once its
/// loop's timer slab and heap have grown (issue 16): the slot comes from the
/// slab's free list, the heap entry from the heap's capacity (before: one
/// `Rc` cell per timer). A closure too large for a slot is boxed: one
/// allocation.
#[test]
fn scheduling_a_timer_allocates_nothing_once_warm() {
    let lp = new_loop();
    let ran = Rc::new(Cell::new(0u64));
    let ms = std::time::Duration::from_millis;
    let mut handles = Vec::with_capacity(1000);
    for round in 0..3u64 {
        let r = ran.clone();
        let made = allocations_in(|| {
            for i in 0..500 {
                // 16 bytes of captures: the most a slot holds inline.
                let r = r.clone();
                let closure = move || {
                    r.set(r.get() + 1);
                    std::hint::black_box(i);
                };
                assert_eq!(std::mem::size_of_val(&closure), 16);
                handles.push(lp.call_later(ms(i % 3), closure).unwrap());
            }
        });
        if round > 0 {
            assert_eq!(made, 0, "allocations for 500 timers in round {round}");
        }
        let big = [1u64; 8];
        let r = ran.clone();
        let made = allocations_in(|| {
            handles.push(
                lp.call_later(ms(1), move || r.set(r.get() + big.iter().sum::<u64>()))
                    .unwrap(),
            );
        });
        if round > 0 {
            assert_eq!(made, 1, "a 72-byte closure is boxed");
        }
        let l = lp.clone();
        lp.call_later(ms(5), move || l.stop()).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(ran.get(), (round + 1) * 508);
        handles.clear();
    }
    lp.close().unwrap();
}
