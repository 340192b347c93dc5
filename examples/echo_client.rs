//! An echo client on aioloop: ping-pong with an echo server, checking every
//! byte.
//!
//! ```text
//! cargo run --example echo_client -- (--tcp HOST:PORT | --unix PATH) [--count N] [--size BYTES]
//! ```
//!
//! Connects, then sends `N` messages (default 1) of `BYTES` patterned bytes
//! (default 1024) one at a time, waiting for each echo and checking it byte
//! for byte before sending the next. Prints `ok: N messages of SIZE bytes in
//! X ms` (the time from the first send to the last check) and exits 0; a
//! mismatch or any error prints a message on stderr and exits 1; bad
//! arguments print the usage on stderr and exit 2.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aioloop::net::{BaseProtocol, ConnectOptions, Protocol, StreamLoopExt};
use aioloop::prelude::*;

const USAGE: &str = "\
usage: echo_client (--tcp HOST:PORT | --unix PATH) [--count N] [--size BYTES]
  --tcp HOST:PORT  connect over TCP (IPv6 as [::1]:PORT)
  --unix PATH      connect to a Unix socket
  --count N        messages to send, one at a time (default 1)
  --size BYTES     bytes per message, at least 1 (default 1024)";

#[derive(Clone)]
enum Target {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

struct Args {
    target: Target,
    count: u64,
    size: usize,
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("echo_client: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(elapsed) => println!(
            "ok: {} messages of {} bytes in {:.1} ms",
            args.count,
            args.size,
            elapsed.as_secs_f64() * 1000.0
        ),
        Err(msg) => {
            eprintln!("echo_client: {msg}");
            std::process::exit(1);
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut target, mut count, mut size) = (None, 1, 1024);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--tcp" | "--unix" if target.is_some() => {
                return Err("give one of --tcp and --unix, once".into())
            }
            "--tcp" => {
                let (host, port) = parse_host_port(&value()?)?;
                target = Some(Target::Tcp { host, port });
            }
            "--unix" => target = Some(Target::Unix(PathBuf::from(value()?))),
            "--count" => {
                let v = value()?;
                count = v.parse().map_err(|e| format!("bad --count {v:?}: {e}"))?;
            }
            "--size" => {
                let v = value()?;
                size = v.parse().map_err(|e| format!("bad --size {v:?}: {e}"))?;
                if size == 0 {
                    return Err("--size must be at least 1".into());
                }
            }
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let target = target.ok_or("one of --tcp and --unix is required")?;
    Ok(Args {
        target,
        count,
        size,
    })
}

/// `HOST:PORT`, with an IPv6 host in brackets (`[::1]:8080`).
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected HOST:PORT, got {s:?}"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("no host in {s:?}"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|e| format!("bad port in {s:?}: {e}"))?;
    Ok((host.to_string(), port))
}

/// Byte `i` of message `k`: differs from message to message, so a stale or
/// misplaced echo does not pass for the right one.
fn fill(msg: &mut [u8], k: u64) {
    for (i, b) in msg.iter_mut().enumerate() {
        *b = ((k as usize).wrapping_mul(7).wrapping_add(i) % 251) as u8;
    }
}

/// The protocol: collects the echo of the message in flight and completes
/// `waiter` once `expect` bytes are in.
#[derive(Default)]
struct Client {
    received: Vec<u8>,
    expect: usize,
    waiter: Option<aioloop::Future<()>>,
    /// `Some` once the connection is lost: the error's text, if any.
    lost: Option<Option<String>>,
    closed: Option<aioloop::Future<()>>,
}

impl BaseProtocol for Client {
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let why = match &error {
            Some(e) => format!("the connection was lost: {e}"),
            None => "the server closed the connection".to_string(),
        };
        self.lost = Some(error.map(|e| e.to_string()));
        if let Some(w) = self.waiter.take() {
            let _ = w.set_exception(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
        if let Some(c) = self.closed.take() {
            let _ = c.set_result(());
        }
    }
}

impl Protocol for Client {
    fn data_received(&mut self, data: &[u8]) {
        self.received.extend_from_slice(data);
        if self.received.len() >= self.expect {
            if let Some(w) = self.waiter.take() {
                let _ = w.set_result(());
            }
        }
    }
}

fn run(args: &Args) -> Result<Duration, String> {
    let lp = EventLoop::new().map_err(|e| format!("cannot create a loop: {e}"))?;
    let lp2 = lp.clone();
    let (target, count, size) = (args.target.clone(), args.count, args.size);
    let elapsed = lp
        .run_until_complete(async move { ping_pong(&lp2, &target, count, size).await })
        .map_err(|e| format!("the loop failed: {e}"))??;
    lp.close().map_err(|e| format!("closing the loop: {e}"))?;
    Ok(elapsed)
}

async fn ping_pong(
    lp: &EventLoop,
    target: &Target,
    count: u64,
    size: usize,
) -> Result<Duration, String> {
    let closed = lp.create_future::<()>();
    let for_client = closed.clone();
    let protocol = move || Client {
        closed: Some(for_client),
        ..Client::default()
    };
    let (transport, client) = match target {
        Target::Tcp { host, port } => {
            lp.create_connection(protocol, Some(host), *port, ConnectOptions::default())
                .await
        }
        Target::Unix(path) => lp.create_unix_connection(protocol, path).await,
    }
    .map_err(|e| format!("cannot connect to {target}: {e}"))?;

    let start = Instant::now();
    let mut msg = vec![0u8; size];
    for k in 0..count {
        fill(&mut msg, k);
        let echoed = lp.create_future::<()>();
        let lost = client.with_mut(|c| {
            if c.lost.is_some() {
                return true;
            }
            c.received.clear();
            c.expect = size;
            c.waiter = Some(echoed.clone());
            false
        });
        if lost {
            return Err(format!("message {k}: the connection is already lost"));
        }
        transport
            .write(&msg)
            .map_err(|e| format!("message {k}: write failed: {e}"))?;
        echoed
            .await
            .map_err(|e| format!("message {k}: no complete echo: {e}"))?;
        client.with(|c| {
            if c.received.len() != size {
                return Err(format!(
                    "message {k}: {} bytes came back for {size} sent",
                    c.received.len()
                ));
            }
            if let Some(i) = c.received.iter().zip(&msg).position(|(a, b)| a != b) {
                return Err(format!(
                    "message {k}: the echo differs at byte {i} (got {}, sent {})",
                    c.received[i], msg[i]
                ));
            }
            Ok(())
        })?;
    }
    let elapsed = start.elapsed();
    transport.close();
    let _ = closed.await;
    if let Some(e) = client.with(|c| {
        c.lost
            .as_ref()
            .and_then(|l| l.as_ref().map(|e| e.to_string()))
    }) {
        return Err(format!("the connection ended with an error: {e}"));
    }
    Ok(elapsed)
}
