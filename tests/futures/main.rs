//! Futures and tasks (loop-futures): `Future`, `Task`, cancellation,
//! `gather`/`wait`/`shield`, `wait_for`/`timeout`, async generators.
//!
//! One test binary for the area: each file is a module, added with one
//! `mod` line below. Where a new test goes, and which tests must stay in
//! binaries of their own, is written in `tests/README.md`.

#[path = "../util/mod.rs"]
mod util;

mod asyncgens;
mod cancellation;
mod futures;
mod gather;
mod tasks;
mod timeouts;
mod unretrieved_outputs;
