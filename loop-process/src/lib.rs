//! Subprocesses and Unix signal handlers for aioloop.
//!
//! # Should I be using this crate?
//!
//! Not yet. This crate is where asyncio's `subprocess_exec`, `subprocess_shell`,
//! the subprocess transport and protocol, and `add_signal_handler` /
//! `remove_signal_handler` land. Until then it has no public items.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
