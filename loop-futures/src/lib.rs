//! asyncio's `Future` and `Task`, for aioloop, and the error type every
//! aioloop crate shares.
//!
//! # Should I be using this crate?
//!
//! Through `loop-core` or the `aioloop` facade, which re-export what is here.
//! This crate holds [`LoopError`]; asyncio's `Future<T>` and `Task<T>` land
//! here with the "Futures, tasks and policies" work.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod error;

pub use error::{ErrorKind, LoopError, PanicError};
