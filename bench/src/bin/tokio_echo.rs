//! `tokio-echo`: the smallest tokio TCP echo server of the shape of
//! aioloop's echo_server example (127.0.0.1:0, `listening on tcp://ADDR`,
//! a task per connection, exit on stdin EOF, SIGINT or SIGTERM), for the
//! fixed idle memory comparison of `cargo xtask bench net` (`idle_rss`).
//! `tokio-echo-full` adds what the example also serves (TLS, Unix, UDP).

use tokio::net::TcpListener;

#[path = "tokio_echo/common.rs"]
mod common;

fn main() {
    common::run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!(
            "listening on tcp://{}",
            listener.local_addr().expect("local address")
        );
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(common::echo(s));
        }
    });
}
