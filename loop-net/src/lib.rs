//! Transports, protocols, sockets and DNS for aioloop.
//!
//! # Should I be using this crate?
//!
//! Not yet. This crate is where asyncio's networking lands: `create_connection`,
//! `create_server`, the Unix socket variants, datagram endpoints, pipes,
//! `sendfile`, `start_tls` and the `sock_*` methods, with the `Transport` and
//! `Protocol` traits. Until then it has no public items. Raw file descriptors can
//! already be watched with `loop-core`'s `EventLoop::add_reader` and
//! `EventLoop::add_writer`.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
