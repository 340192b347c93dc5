//! The loop itself (loop-core): callbacks, timers, fd readiness, the
//! lifecycle, re-entrancy, the thread-safe door, executors and `run`.
//!
//! One test binary for the area: each file is a module, added with one
//! `mod` line below. Where a new test goes, and which tests must stay in
//! binaries of their own, is written in `tests/README.md`.

#[cfg(feature = "net")]
#[path = "../net_util/mod.rs"]
mod net_util;
#[path = "../util/mod.rs"]
mod util;

mod callbacks;
mod core_behaviours;
mod executor;
mod lifecycle;
mod readiness;
mod reentrancy;
mod run;
mod threadsafe;
mod timer_slots;
mod timers;
mod uring;
