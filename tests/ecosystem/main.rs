//! aioloop with other programs and crates: the examples run as processes,
//! Python's asyncio as a peer, futures-io crates, and hyper (feature
//! `hyper`).
//!
//! One test binary for the area: each file is a module, added with one
//! `mod` line below. Where a new test goes, and which tests must stay in
//! binaries of their own, is written in `tests/README.md`.

#[cfg(feature = "net")]
#[path = "../net_util/mod.rs"]
mod net_util;
#[cfg(feature = "net")]
#[path = "../util/mod.rs"]
mod util;

mod examples;
mod futures_io_crates;
mod hyper_on_loop;
mod python_peers;
