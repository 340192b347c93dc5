//! An echo server on aioloop: every byte a client sends comes back.
//!
//! ```text
//! cargo run --example echo_server -- [--tcp HOST:PORT]... [--unix PATH]... [--udp HOST:PORT]...
//! ```
//!
//! With no flag it listens on `127.0.0.1:0` (an ephemeral port). It
//! prints one line per listening socket, `listening on tcp://IP:PORT` (IPv6
//! as `tcp://[::1]:PORT`), `listening on unix://PATH` or
//! `listening on udp://IP:PORT` (a datagram endpoint that sends every
//! datagram back to its sender), then serves until its
//! standard input closes (Ctrl-D, or the parent closing the pipe) or it gets
//! SIGINT (Ctrl-C) or SIGTERM: it stops listening, closes every client (each
//! flushes first; a client that does not take its echoes within 5 s is
//! aborted), and exits 0. On a signal it first prints `shutting down`. Bad
//! arguments print the usage on stderr and exit 2.
//!
//! `--tls CERT KEY` (PEM files: the certificate chain and its private key;
//! needs the `tls` feature) serves TLS on the TCP listeners, which are then
//! printed as `listening on tls://IP:PORT`; with no `--tcp` it listens on
//! the default TCP address too (next to any `--unix` or `--udp`), so TLS is
//! never silently unused.
//!
//! The signals go through aioloop's own handlers
//! (`aioloop::SignalLoopExt::add_signal_handler`, feature `process`): the
//! callback runs on the loop thread, as an ordinary callback, and completes
//! the same shutdown future as the end of stdin. They are installed before
//! the first `listening on` line, so a signal sent as soon as that line is
//! read is handled, and removed before the loop closes.

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use aioloop::net::{
    BaseProtocol, DatagramLoopExt, DatagramOptions, DatagramProtocol, DatagramTransport, Protocol,
    ServerOptions, SockAddr, StreamLoopExt, Transport,
};
use aioloop::prelude::*;

const USAGE: &str = "\
usage: echo_server [--tcp HOST:PORT]... [--unix PATH]... [--udp HOST:PORT]...
  --tcp HOST:PORT  listen on a TCP address (port 0: an ephemeral port;
                   IPv6 as [::1]:PORT); the default is 127.0.0.1:0
  --unix PATH      listen on a Unix socket
  --tls CERT KEY   serve TLS on the TCP listeners (PEM certificate chain
                   and private key); they print as tls://IP:PORT; without
                   --tcp, TLS is served on the default TCP address
  --udp HOST:PORT  echo datagrams on a UDP address (port 0: ephemeral)
Prints `listening on tcp://IP:PORT`, `listening on unix://PATH` or
`listening on udp://IP:PORT` per socket, echoes every byte (every datagram),
and exits 0 when its standard input closes, or, after printing
`shutting down`, on SIGINT or SIGTERM.";

/// How long the clients get to flush their echoes at shutdown before they
/// are aborted (a peer that never reads could otherwise hold the exit).
const FLUSH_GRACE: Duration = Duration::from_secs(5);

enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
    Udp { host: String, port: u16 },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } | Endpoint::Udp { host, port } if host.contains(':') => {
                write!(f, "[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } | Endpoint::Udp { host, port } => {
                write!(f, "{host}:{port}")
            }
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

fn main() {
    let (args, tls) = match split_tls(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("echo_server: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let endpoints = match parse_args(args.into_iter(), tls.is_some()) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("echo_server: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(endpoints, tls) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

/// The endpoints to serve. `tls`: `--tls` was given, so there must be a
/// TCP listener to serve it on (the default one when no `--tcp` names one).
fn parse_args(mut args: impl Iterator<Item = String>, tls: bool) -> Result<Vec<Endpoint>, String> {
    let mut endpoints = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--tcp" => {
                let (host, port) = parse_host_port(&value()?)?;
                endpoints.push(Endpoint::Tcp { host, port });
            }
            "--unix" => endpoints.push(Endpoint::Unix(PathBuf::from(value()?))),
            "--udp" => {
                let (host, port) = parse_host_port(&value()?)?;
                endpoints.push(Endpoint::Udp { host, port });
            }
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let has_tcp = endpoints.iter().any(|e| matches!(e, Endpoint::Tcp { .. }));
    if endpoints.is_empty() || (tls && !has_tcp) {
        endpoints.insert(
            0,
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            },
        );
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

/// The datagram protocol: sends every datagram back to its sender.
struct UdpEcho {
    transport: Option<DatagramTransport>,
    /// Set while the endpoint's send queue is above its high-water mark.
    paused: bool,
    /// Completed by `connection_lost`.
    lost: aioloop::Future<()>,
}

impl DatagramProtocol for UdpEcho {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
        // While the kernel does not take our echoes, drop the new ones
        // instead of queueing them: datagrams may be lost anyway, and the
        // memory stays bounded.
        if let (Some(t), false) = (&self.transport, self.paused) {
            // Only errs for an address it cannot send to, which the
            // sender's own address is not.
            let _ = t.sendto(data, Some(addr));
        }
    }

    // Send errors (an ICMP error from a client that went away, ...) leave
    // the endpoint working: the default error_received ignores them.

    fn pause_writing(&mut self) {
        self.paused = true;
    }

    fn resume_writing(&mut self) {
        self.paused = false;
    }

    fn connection_lost(&mut self, _error: Option<io::Error>) {
        self.transport = None;
        let _ = self.lost.set_result(());
    }
}

/// What asked for the shutdown.
enum Shutdown {
    StdinClosed,
    Signal,
}

thread_local! {
    /// The shutdown future, for the stdin thread: it cannot hold the loop's
    /// `Future` (it is `!Send`); its thread-safe callback runs on the loop
    /// thread and finds it here.
    static SHUTDOWN: RefCell<Option<aioloop::Future<Shutdown>>> = const { RefCell::new(None) };
}

fn run(endpoints: Vec<Endpoint>, tls: Option<TlsFiles>) -> Result<(), Box<dyn std::error::Error>> {
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    let served = lp.run_until_complete(serve(lp2, endpoints, tls));
    // Also after a failed start: the handlers hold the shutdown future, and
    // with them gone SIGINT has its default action again.
    lp.remove_all_signal_handlers();
    SHUTDOWN.with(|s| s.borrow_mut().take());
    served??;
    lp.close()?;
    Ok(())
}

async fn serve(lp: EventLoop, endpoints: Vec<Endpoint>, tls: Option<TlsFiles>) -> io::Result<()> {
    // Serve until stdin closes or SIGINT/SIGTERM arrives, whichever comes
    // first (a later one finds the future done and changes nothing). The
    // handlers go in before any `listening on` line is printed: whoever
    // reads that line may signal at once.
    let shutdown = lp.create_future::<Shutdown>();
    for (signal, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
        let s = shutdown.clone();
        lp.add_signal_handler(signal, move || {
            let _ = s.set_result(Shutdown::Signal);
        })
        .map_err(|e| io::Error::other(format!("cannot handle {name}: {e}")))?;
    }

    // Checked once up front; made again for each listener (a
    // `ServerOptions` may hold a socket, so it is not `Clone`).
    tcp_server_options(tls.as_ref())?;
    let scheme = if tls.is_some() { "tls" } else { "tcp" };
    let mut servers = Vec::new();
    let mut datagram_endpoints: Vec<(DatagramTransport, aioloop::Future<()>)> = Vec::new();
    for endpoint in &endpoints {
        let server = match endpoint {
            Endpoint::Tcp { host, port } => {
                let hosts = [host.as_str()];
                let options = tcp_server_options(tls.as_ref())?;
                lp.create_server(Echo::default, &hosts, *port, options)
                    .await
            }
            Endpoint::Unix(path) => {
                lp.create_unix_server(Echo::default, path, ServerOptions::default())
                    .await
            }
            Endpoint::Udp { host, port } => {
                let lost = lp.create_future::<()>();
                let l = lost.clone();
                let factory = move || UdpEcho {
                    transport: None,
                    paused: false,
                    lost: l,
                };
                let options = DatagramOptions::default().with_local_addr((host.as_str(), *port));
                let (t, _) = lp
                    .create_datagram_endpoint(factory, options)
                    .await
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot listen on {endpoint}: {e}"))
                    })?;
                if let Some(a) = t.sockname().and_then(|a| a.as_inet()) {
                    let mut out = io::stdout().lock();
                    writeln!(out, "listening on udp://{a}")?;
                    out.flush()?;
                }
                datagram_endpoints.push((t, lost));
                continue;
            }
        }
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {endpoint}: {e}")))?;
        let mut out = io::stdout().lock();
        for addr in server.sockets() {
            if let Some(a) = addr.as_inet() {
                writeln!(out, "listening on {scheme}://{a}")?; // SocketAddr prints [::1]:PORT
            } else if let Some(p) = addr.as_unix() {
                writeln!(out, "listening on unix://{}", p.display())?;
            }
        }
        out.flush()?;
        servers.push(server);
    }

    // The end of stdin: a helper thread reads it to EOF, then wakes the loop
    // through its thread-safe handle. (After a signal the process exits
    // with this thread still blocked in its read.)
    SHUTDOWN.with(|s| *s.borrow_mut() = Some(shutdown.clone()));
    let handle = lp.handle();
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        let _ = handle.call_soon_threadsafe(|| {
            if let Some(f) = SHUTDOWN.with(|s| s.borrow_mut().take()) {
                let _ = f.set_result(Shutdown::StdinClosed);
            }
        });
    });
    let cause = shutdown.await.map_err(io::Error::from)?;
    SHUTDOWN.with(|s| s.borrow_mut().take());
    if let Shutdown::Signal = cause {
        // Best effort: a closed stdout must not keep the clients open.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "shutting down").and_then(|()| out.flush());
    }

    // Shut down: stop listening, close the clients (each flushes its
    // echoes, then its connection_lost runs), and wait until they are gone.
    for s in &servers {
        s.close();
        s.close_clients();
    }
    for (t, _) in &datagram_endpoints {
        t.close();
    }
    let stragglers = servers.clone();
    let datagram_stragglers: Vec<DatagramTransport> =
        datagram_endpoints.iter().map(|(t, _)| t.clone()).collect();
    let abort = lp
        .call_later(FLUSH_GRACE, move || {
            for s in &stragglers {
                s.abort_clients();
            }
            for t in &datagram_stragglers {
                t.abort();
            }
        })
        .map_err(io::Error::from)?;
    for s in &servers {
        s.wait_closed().await;
    }
    for (_, lost) in datagram_endpoints {
        let _ = lost.await;
    }
    abort.cancel();
    Ok(())
}

/// `--tls CERT KEY`: the PEM files of the certificate chain and its key.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// Takes `--tls CERT KEY` out of the arguments.
fn split_tls(args: Vec<String>) -> Result<(Vec<String>, Option<TlsFiles>), String> {
    let mut rest = Vec::new();
    let mut tls = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--tls" {
            let (Some(cert), Some(key)) = (it.next(), it.next()) else {
                return Err("--tls needs CERT and KEY".into());
            };
            tls = Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            });
        } else {
            rest.push(arg);
        }
    }
    Ok((rest, tls))
}

/// The options of the TCP listeners: TLS with the given files, if any.
#[cfg(feature = "tls")]
fn tcp_server_options(tls: Option<&TlsFiles>) -> io::Result<ServerOptions> {
    let Some(files) = tls else {
        return Ok(ServerOptions::default());
    };
    let tls = aioloop::TlsServerOptions::from_pem_files(&files.cert, &files.key).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot use {} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ),
        )
    })?;
    Ok(ServerOptions {
        tls: Some(tls),
        ..ServerOptions::default()
    })
}

#[cfg(not(feature = "tls"))]
fn tcp_server_options(tls: Option<&TlsFiles>) -> io::Result<ServerOptions> {
    match tls {
        None => Ok(ServerOptions::default()),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--tls needs echo_server built with the `tls` feature",
        )),
    }
}
