//! TLS (loop-net with feature `tls`): transports between aioloop peers
//! and scripted peers, PEM options, OpenSSL and Python peers, sendfile over
//! TLS.
//!
//! One test binary for the area: each file is a module, added with one
//! `mod` line below. Where a new test goes, and which tests must stay in
//! binaries of their own, is written in `tests/README.md`.
#![cfg(feature = "tls")]

#[path = "../net_util/mod.rs"]
mod net_util;
#[path = "../tls_util/mod.rs"]
mod tls_util;
#[path = "../util/mod.rs"]
mod util;

mod sendfile_tls;
mod tls;
mod tls_peers;
mod tls_pem;
mod tls_uring;
