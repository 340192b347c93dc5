//! hyper 1.x on aioloop's event loop: everything hyper needs from a
//! runtime, built on the loop.
//!
//! # Should I be using this crate?
//! Depend on `aioloop` with feature `hyper` and use `aioloop::hyper`; this
//! crate is that module. It holds:
//!
//! | item | what it is |
//! |---|---|
//! | [`HyperStream`] | a TCP connection of the loop as hyper's `Read`/`Write` (a buffered protocol: one copy from the socket to hyper) |
//! | [`FuturesIo`] | hyper's `Read`/`Write` over any `futures-io` stream (a `StreamPair`, a TLS or compression layer) |
//! | [`LoopExecutor`] | hyper's `Executor`: spawns tasks on the loop, `!Send` futures welcome |
//! | [`LoopTimer`] | hyper's `Timer`: `Send + Sync` sleeps on the loop's timers, cancelled when dropped (header-read timeout, keep-alive) |
//! | [`serve_http1`], [`serve_http2`] (and `_with` forms) | listen and serve every connection on the loop (HTTP/1 polled straight from the connection's protocol callbacks, HTTP/2 in tasks) |
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::{body::Incoming, Request, Response};
//! use loop_core::EventLoop;
//!
//! let lp = EventLoop::new()?;
//! let l = lp.clone();
//! lp.run_until_complete(async move {
//!     let hello = hyper::service::service_fn(|_: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello\n")))
//!     });
//!     let server = loop_hyper::serve_http1(&l, "127.0.0.1:8080".parse().unwrap(), hello).await?;
//!     server.serve_forever().await.map_err(std::io::Error::from)
//! })??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What does not work
//! hyper's upgrades (`hyper::upgrade::on`, WebSocket over hyper) box the
//! connection as `Send`, and a connection of the loop is `!Send` (it lives
//! on the loop's thread): serve upgrades with a futures-io WebSocket crate
//! (async-tungstenite over a `StreamPair`) instead. hyper-util's
//! `TokioIo`/`TokioExecutor` and anything that needs tokio's reactor do not
//! apply; this crate replaces them.
#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

mod driver;
mod futures_io;
mod io;
mod rt;
mod serve;
mod sleep_queue;

pub use futures_io::FuturesIo;
pub use io::{HyperStream, MAX_BUFFERED};
pub use rt::{LoopExecutor, LoopSleep, LoopTimer};
pub use serve::{serve_http1, serve_http1_with, serve_http2, serve_http2_with};
