//! Subprocesses (loop-process): the high-level `Process`, children that
//! misbehave, and a child's life (signals, return codes, reaping).
//!
//! One test binary for the area: each file is a module, added with one
//! `mod` line below. Where a new test goes, and which tests must stay in
//! binaries of their own, is written in `tests/README.md`.
#![cfg(feature = "process")]

#[path = "../process_util/mod.rs"]
mod process_util;
#[path = "../util/mod.rs"]
mod util;

mod process;
mod subprocess_faults;
mod subprocess_lifecycle;
