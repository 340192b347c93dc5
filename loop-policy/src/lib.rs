//! Event loop policies for aioloop.
//!
//! # Should I be using this crate?
//!
//! Not yet. This crate is where asyncio's `get_event_loop`, `set_event_loop`,
//! `new_event_loop`, `get_running_loop` and the `EventLoopPolicy` trait land.
//! Until then it has no public items; `loop-core` already records the loop that
//! runs on each thread (`loop_core::running_loop`).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
