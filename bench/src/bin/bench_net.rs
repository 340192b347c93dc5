//! `bench-net`: the echo servers and the load generator of `cargo xtask bench net`.
//!
//! ```text
//! bench-net server --system aioloop|tokio [--addr 127.0.0.1:0]
//! bench-net client --addr HOST:PORT --conns N --size BYTES --duration SECS
//!                  [--warmup SECS] [--server-pid PID] [--case NAME] [--system NAME]
//! bench-net idle   --addr HOST:PORT --conns N
//! bench-net server --system aioloop-tls|tokio-rustls --tls-dir DIR [--addr ...]
//! bench-net client --tls-dir DIR ...   (TLS clients, tokio-rustls)
//! bench-net sendfile --system aioloop-sendfile|aioloop-copy|tokio --file PATH --size BYTES
//!                    [--reps N] [--case NAME]
//! bench-net udp-server|udp-client ...   (UDP echo: see `bench_net/udp.rs`)
//! ```
//!
//! - `server` prints `listening on PORT` (flushed) and echoes every byte back
//!   until its stdin closes. `aioloop`: a [`Protocol`] whose `data_received`
//!   calls `transport.write(data)`, default [`ServerOptions`]. `tokio`: a
//!   current-thread runtime whose accept loop spawns a task per connection
//!   that reads into a 64 KiB buffer and `write_all`s it back. Both set
//!   `TCP_NODELAY` (aioloop does so on every accepted TCP socket).
//! - `client` is the one load generator every server gets (a tokio
//!   current-thread runtime, `TCP_NODELAY`): N connections, each sending
//!   SIZE bytes, waiting until SIZE bytes came back, and repeating. After
//!   `--warmup` (default 0.5 s) it counts the messages echoed over
//!   `--duration` seconds and prints `result` lines: messages/s, MB/s
//!   (payload echoed, one direction, 10^6 bytes) and, with `--server-pid`,
//!   the server process's user+sys CPU time per message from
//!   `/proc/<pid>/stat` over the same window (and its user part alone). It prints `connected N` once
//!   every connection is open; on stdin, the line `mark` makes it print
//!   `mark <messages so far>` and the line `stop` ends it at once (the strace
//!   window of `cargo xtask bench net`).
//! - `idle` opens N connections (64 connects in flight at a time), echoes one
//!   byte on each so the server has surely accepted and set it up, prints
//!   `ready N` and holds them until its stdin closes.
//!
//! - `sendfile`: a file over loopback to a receiver that counts bytes (see
//!   `bench_net/sendfile.rs`).
//!
//! Every subcommand raises its soft `RLIMIT_NOFILE` to the hard limit.

use std::error::Error;
use std::io::{self, BufRead, Read};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use aioloop_bench::load::{
    announce_and_serve, exit_now, exit_on_stdin_eof, measure, say, tokio_accept_loop, Counters,
};
use aioloop_bench::report;
use loop_net::{BaseProtocol, Protocol, ServerOptions, StreamLoopExt, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "bench_net/sendfile.rs"]
mod sendfile;

#[path = "bench_net/tls.rs"]
mod tls;

#[path = "bench_net/udp.rs"]
mod udp;

type Res<T> = Result<T, Box<dyn Error>>;

/// Connects in flight at once while `idle` opens its connections (below
/// every server's accept backlog).
const IDLE_CONNECTS_IN_FLIGHT: usize = 64;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!(
            "usage: bench-net server|client|idle|sendfile [options] (see the source's header)"
        );
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-net: {e}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let result = match cmd.as_str() {
        "server" => server(&opts),
        "client" => client(&opts),
        "idle" => idle(&opts),
        "sendfile" => sendfile::run(&opts),
        "udp-server" => udp::server(&opts),
        "udp-client" => udp::client(&opts),
        other => Err(format!("unknown subcommand `{other}`").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-net {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options of every subcommand (each uses some of them).
#[derive(Debug)]
struct Opts {
    system: Option<String>,
    addr: String,
    conns: usize,
    size: usize,
    duration: f64,
    warmup: f64,
    server_pid: Option<u32>,
    case: String,
    /// `sendfile`: the file to send, and how many measured sends.
    file: Option<String>,
    reps: usize,
    /// TLS servers and clients: where the server's certificate goes.
    tls_dir: Option<String>,
}

impl Opts {
    fn parse(args: impl Iterator<Item = String>) -> Res<Opts> {
        let mut o = Opts {
            system: None,
            addr: "127.0.0.1:0".into(),
            conns: 1,
            size: 1024,
            duration: 3.0,
            warmup: 0.5,
            server_pid: None,
            case: "net".into(),
            file: None,
            reps: 3,
            tls_dir: None,
        };
        let mut it = args;
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--system" => o.system = Some(value()?),
                "--addr" => o.addr = value()?,
                "--conns" => o.conns = value()?.parse()?,
                "--size" => o.size = value()?.parse()?,
                "--duration" => o.duration = value()?.parse()?,
                "--warmup" => o.warmup = value()?.parse()?,
                "--server-pid" => o.server_pid = Some(value()?.parse()?),
                "--case" => o.case = value()?,
                "--file" => o.file = Some(value()?),
                "--reps" => o.reps = value()?.parse()?,
                "--tls-dir" => o.tls_dir = Some(value()?),
                other => return Err(format!("unknown argument `{other}`").into()),
            }
        }
        if o.size == 0 || o.conns == 0 {
            return Err("--size and --conns must be positive".into());
        }
        Ok(o)
    }
}

/// Raises the soft limit on open files to the hard limit (5,000 idle
/// connections need more than the usual 1,024).
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
}

// ---------------------------------------------------------------------------
// Servers

fn server(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    exit_on_stdin_eof();
    match o.system.as_deref() {
        Some(s @ ("aioloop" | "aioloop-uring")) => server_aioloop(addr, s),
        Some("tokio") => server_tokio(addr),
        Some(s @ ("aioloop-tls" | "aioloop-tls-uring")) => tls::server_aioloop(addr, o, s),
        Some("tokio-rustls") => tls::server_tokio(addr, o),
        Some(other) => Err(format!(
            "unknown system `{other}` (aioloop, aioloop-uring, tokio, aioloop-tls, \
             aioloop-tls-uring, tokio-rustls)"
        )
        .into()),
        None => Err("--system is required".into()),
    }
}

/// asyncio's canonical echo protocol.
struct Echo(Option<Transport>);

impl BaseProtocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            let _ = t.write(data);
        }
    }
}

fn server_aioloop(addr: SocketAddr, system: &str) -> Res<()> {
    let lp = aioloop_bench::aioloop_loop(aioloop_bench::backend_of_system(system))?;
    let lp2 = lp.clone();
    let host = addr.ip().to_string();
    lp.run_until_complete(async move {
        let hosts = [host.as_str()];
        let server = lp2
            .create_server(|| Echo(None), &hosts, addr.port(), ServerOptions::default())
            .await?;
        announce_and_serve(server).await
    })??;
    Ok(())
}

fn server_tokio(addr: SocketAddr) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        tokio_accept_loop(listener, "bench-net server tokio", |mut sock| async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if sock.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        })
        .await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Load generator

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    Ok(sock)
}

/// One connection's ping-pong until `stop`.
async fn ping_pong<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut sock: S,
    size: usize,
    counters: Counters,
) -> io::Result<()> {
    let msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size];
    while !counters.stop.load(Ordering::Relaxed) {
        sock.write_all(&msg).await?;
        let mut got = 0;
        while got < size {
            let n = sock.read(&mut buf[got..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            got += n;
        }
        counters.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Answers `mark` and `stop` lines on stdin (see the header).
fn serve_marks(count: Arc<AtomicU64>) {
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match line.trim() {
                "mark" => say(&format!("mark {}", count.load(Ordering::Relaxed))),
                "stop" => std::process::exit(0),
                _ => {}
            }
        }
    });
}

fn client(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    let system = o.system.as_deref().unwrap_or("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counters = Counters::default();
    serve_marks(counters.done.clone());
    let window = rt.block_on(async {
        let mut socks = Vec::with_capacity(o.conns);
        for _ in 0..o.conns {
            socks.push(connect(addr).await?);
        }
        // --tls-dir: every connection speaks TLS (tokio-rustls), handshake
        // done before the `connected` line.
        let connector = o.tls_dir.as_deref().map(tls::connector).transpose()?;
        let mut tls_socks = Vec::new();
        if let Some(c) = &connector {
            for sock in socks.drain(..) {
                let name = "localhost".try_into()?;
                tls_socks.push(c.connect(name, sock).await?);
            }
        }
        say(&format!("connected {}", o.conns));
        let mut tasks = Vec::with_capacity(o.conns);
        for sock in socks {
            tasks.push(tokio::spawn(ping_pong(sock, o.size, counters.clone())));
        }
        for sock in tls_socks {
            tasks.push(tokio::spawn(ping_pong(sock, o.size, counters.clone())));
        }
        measure(
            &counters,
            tasks,
            o.warmup,
            o.duration,
            o.server_pid,
            "message",
        )
        .await
    })?;
    window.report(&o.case, system, "msg", "msg/s", true);
    let mb = window.done as f64 / window.secs * o.size as f64 / 1e6;
    report(
        &format!("{}_mb_per_s", o.case),
        system,
        mb,
        "MB/s",
        window.done,
    );
    exit_now();
}

// ---------------------------------------------------------------------------
// Idle connections

fn idle(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let n = o.conns;
    let socks = rt.block_on(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(IDLE_CONNECTS_IN_FLIGHT));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let permit = gate.clone().acquire_owned().await?;
            tasks.push(tokio::spawn(async move {
                let mut sock = connect(addr).await?;
                sock.write_all(b"!").await?;
                let mut b = [0u8; 1];
                sock.read_exact(&mut b).await?;
                drop(permit);
                Ok::<_, io::Error>(sock)
            }));
        }
        let mut socks = Vec::with_capacity(n);
        for t in tasks {
            socks.push(t.await??);
        }
        Ok::<_, Box<dyn Error>>(socks)
    })?;
    say(&format!("ready {}", socks.len()));
    // Hold the connections until stdin closes.
    let mut sink = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut sink);
    drop(socks);
    drop(rt);
    Ok(())
}
