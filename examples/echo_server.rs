//! An echo server on aioloop: every byte a client sends comes back.
//!
//! ```text
//! cargo run --example echo_server -- [--tcp HOST:PORT]... [--unix PATH]...
//! ```
//!
//! With neither flag it listens on `127.0.0.1:0` (an ephemeral port). It
//! prints one line per listening socket, `listening on tcp://IP:PORT` (IPv6
//! as `tcp://[::1]:PORT`) or `listening on unix://PATH`, then serves until its
//! standard input closes (Ctrl-D, or the parent closing the pipe): it stops
//! listening, closes every client (each flushes first), and exits 0. Bad
//! arguments print the usage on stderr and exit 2.
//!
//! SIGINT and SIGTERM are not handled yet: signal handlers land with the
//! subprocess and signals work (loop-process); until then they end the
//! process the default way, and closing stdin is the clean shutdown.

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use aioloop::net::{BaseProtocol, Protocol, ServerOptions, StreamLoopExt, Transport};
use aioloop::prelude::*;

const USAGE: &str = "\
usage: echo_server [--tcp HOST:PORT]... [--unix PATH]...
  --tcp HOST:PORT  listen on a TCP address (port 0: an ephemeral port;
                   IPv6 as [::1]:PORT); the default is 127.0.0.1:0
  --unix PATH      listen on a Unix socket
Prints `listening on tcp://IP:PORT` or `listening on unix://PATH` per socket,
echoes every byte, and exits 0 when its standard input closes.";

/// How long the clients get to flush their echoes at shutdown before they
/// are aborted (a peer that never reads could otherwise hold the exit).
const FLUSH_GRACE: Duration = Duration::from_secs(5);

enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

fn main() {
    let endpoints = match parse_args(std::env::args().skip(1)) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("echo_server: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(endpoints) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Vec<Endpoint>, String> {
    let mut endpoints = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--tcp" => {
                let (host, port) = parse_host_port(&value()?)?;
                endpoints.push(Endpoint::Tcp { host, port });
            }
            "--unix" => endpoints.push(Endpoint::Unix(PathBuf::from(value()?))),
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if endpoints.is_empty() {
        endpoints.push(Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        });
    }
    Ok(endpoints)
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

/// The protocol: writes back whatever arrives.
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl BaseProtocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    // A client that sends faster than it reads its echoes fills our write
    // buffer: stop reading from it until the buffer drains.
    fn pause_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.pause_reading();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // Only errs after write_eof, which this protocol never calls.
            let _ = t.write(data);
        }
    }
    // eof_received: the default (false) lets the transport close once the
    // echoes are flushed.
}

thread_local! {
    /// Completed on the loop thread when stdin closes. The stdin thread
    /// cannot hold the loop's `Future` (it is `!Send`); its thread-safe
    /// callback runs on the loop thread and finds it here.
    static STDIN_CLOSED: RefCell<Option<Future<()>>> = const { RefCell::new(None) };
}

fn run(endpoints: Vec<Endpoint>) -> Result<(), Box<dyn std::error::Error>> {
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    lp.run_until_complete(serve(lp2, endpoints))??;
    lp.close()?;
    Ok(())
}

async fn serve(lp: EventLoop, endpoints: Vec<Endpoint>) -> io::Result<()> {
    let mut servers = Vec::new();
    for endpoint in &endpoints {
        let server = match endpoint {
            Endpoint::Tcp { host, port } => {
                let hosts = [host.as_str()];
                lp.create_server(Echo::default, &hosts, *port, ServerOptions::default())
                    .await
            }
            Endpoint::Unix(path) => {
                lp.create_unix_server(Echo::default, path, ServerOptions::default())
                    .await
            }
        }
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {endpoint}: {e}")))?;
        let mut out = io::stdout().lock();
        for addr in server.sockets() {
            if let Some(a) = addr.as_inet() {
                writeln!(out, "listening on tcp://{a}")?; // SocketAddr prints [::1]:PORT
            } else if let Some(p) = addr.as_unix() {
                writeln!(out, "listening on unix://{}", p.display())?;
            }
        }
        out.flush()?;
        servers.push(server);
    }

    // Serve until stdin closes: a helper thread reads it to EOF, then wakes
    // the loop through its thread-safe handle.
    let stdin_closed = lp.create_future::<()>();
    STDIN_CLOSED.with(|s| *s.borrow_mut() = Some(stdin_closed.clone()));
    let handle = lp.handle();
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        let _ = handle.call_soon_threadsafe(|| {
            if let Some(f) = STDIN_CLOSED.with(|s| s.borrow_mut().take()) {
                let _ = f.set_result(());
            }
        });
    });
    let _ = stdin_closed.await;

    // Shut down: stop listening, close the clients (each flushes its
    // echoes, then its connection_lost runs), and wait until they are gone.
    for s in &servers {
        s.close();
        s.close_clients();
    }
    let stragglers = servers.clone();
    let abort = lp
        .call_later(FLUSH_GRACE, move || {
            for s in &stragglers {
                s.abort_clients();
            }
        })
        .map_err(io::Error::from)?;
    for s in &servers {
        s.wait_closed().await;
    }
    abort.cancel();
    Ok(())
}
