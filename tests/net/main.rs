//! Networking (loop-net) without TLS: TCP and Unix stream transports and
//! servers, datagrams, `sock_*`, flow control, faults, high-level streams,
//! pipes, sendfile, DNS, and the prelude.
//!
//! One test binary for the area: each file is a module, added with one
//! `mod` line below. Where a new test goes, and which tests must stay in
//! binaries of their own, is written in `tests/README.md`.
#![cfg(feature = "net")]

#[path = "../net_util/mod.rs"]
mod net_util;
#[cfg(feature = "tls")]
#[path = "../tls_util/mod.rs"]
mod tls_util;
#[path = "../util/mod.rs"]
mod util;

mod connect_options;
mod datagram;
mod dns;
mod edge_reads;
mod flow_control;
mod pipes;
mod prelude;
mod sendfile;
mod sock;
mod stream_faults;
mod streams;
mod tcp;
mod unix;
mod uring_accept;
mod uring_datagrams;
mod uring_streams;
