//! asyncio's `Future` and `Task`, for aioloop.
//!
//! # Should I be using this crate?
//!
//! Not yet. This crate is the home of asyncio's `Future<T>` (set_result,
//! set_exception, cancel, done callbacks) and `Task<T>` (named, cancellable
//! tasks). Those types land with the "Futures, tasks and policies" work; until
//! then the crate has no public items, and [`loop-core`]'s
//! `EventLoop::run_until_complete` accepts any Rust future directly.
//!
//! [`loop-core`]: https://docs.rs/loop-core
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
