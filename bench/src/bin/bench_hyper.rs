//! `bench-hyper`: the HTTP servers and the load generator of `cargo xtask
//! bench hyper`.
//!
//! ```text
//! bench-hyper server --system aioloop|tokio [--addr 127.0.0.1:0]
//! bench-hyper client --addr HOST:PORT --conns N --duration SECS
//!                    [--warmup SECS] [--server-pid PID] [--case NAME] [--system NAME]
//! ```
//!
//! - `server` prints `listening on PORT` (flushed) and serves HTTP/1.1 with
//!   hyper 1.x until its stdin closes; every request gets `200 OK` with the
//!   body `hello` (a static `Full<Bytes>`). Both servers are configured
//!   alike: hyper's `http1::Builder` with keep-alive and a timer (so hyper's
//!   30 s header-read timeout runs on both: a sleep per request), and
//!   `TCP_NODELAY`. `aioloop`: `aioloop::hyper::serve_http1` (the loop's
//!   server, `HyperStream`, `LoopTimer`). `tokio`: a current-thread runtime
//!   whose accept loop spawns `serve_connection(TokioIo::new(sock), ...)`
//!   with hyper-util's `TokioTimer`, as hyper's own examples do.
//! - `client` is the one load generator both servers get: a tokio
//!   current-thread runtime, N keep-alive connections (`TCP_NODELAY`), each
//!   sending `GET / HTTP/1.1`, reading the whole response (its head and
//!   `content-length` bytes, status checked) and repeating. After
//!   `--warmup` it counts responses over `--duration` seconds and prints
//!   `result` lines: requests/s and, with `--server-pid`, the server
//!   process's user+sys CPU time per request from `/proc/<pid>/stat` over the
//!   same window.

use std::convert::Infallible;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aioloop_bench::report;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use loop_core::EventLoop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn Error>>;

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("usage: bench-hyper server|client [options] (see the source's header)");
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-hyper: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "server" => server(&opts),
        "client" => client(&opts),
        other => Err(format!("unknown subcommand `{other}`").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-hyper {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Opts {
    system: Option<String>,
    addr: String,
    conns: usize,
    duration: f64,
    warmup: f64,
    server_pid: Option<u32>,
    case: String,
}

impl Opts {
    fn parse(args: impl Iterator<Item = String>) -> Res<Opts> {
        let mut o = Opts {
            system: None,
            addr: "127.0.0.1:0".into(),
            conns: 1,
            duration: 3.0,
            warmup: 0.5,
            server_pid: None,
            case: "hello".into(),
        };
        let mut it = args;
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--system" => o.system = Some(value()?),
                "--addr" => o.addr = value()?,
                "--conns" => o.conns = value()?.parse()?,
                "--duration" => o.duration = value()?.parse()?,
                "--warmup" => o.warmup = value()?.parse()?,
                "--server-pid" => o.server_pid = Some(value()?.parse()?),
                "--case" => o.case = value()?,
                other => return Err(format!("unknown argument `{other}`").into()),
            }
        }
        if o.conns == 0 {
            return Err("--conns must be positive".into());
        }
        Ok(o)
    }
}

/// Prints `line` on stdout and flushes (stdout is a pipe to xtask).
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Exits the process once stdin reaches end-of-file (or fails).
fn exit_on_stdin_eof() {
    thread::spawn(|| {
        let mut sink = [0u8; 256];
        let mut stdin = io::stdin().lock();
        while let Ok(n) = stdin.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
}

// ---------------------------------------------------------------------------
// Servers

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

fn server(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    exit_on_stdin_eof();
    match o.system.as_deref() {
        Some("aioloop") => server_aioloop(addr),
        Some("tokio") => server_tokio(addr),
        Some(other) => Err(format!("unknown system `{other}` (aioloop, tokio)").into()),
        None => Err("--system is required".into()),
    }
}

fn server_aioloop(addr: SocketAddr) -> Res<()> {
    let lp = EventLoop::new()?;
    let l = lp.clone();
    lp.run_until_complete(async move {
        let server = loop_hyper::serve_http1(&l, addr, hyper::service::service_fn(hello)).await?;
        let port = server
            .sockets()
            .first()
            .and_then(|s| s.as_inet())
            .map(|a| a.port())
            .ok_or("the server has no inet socket")?;
        say(&format!("listening on {port}"));
        server.serve_forever().await?;
        Ok::<(), Box<dyn Error>>(())
    })??;
    Ok(())
}

fn server_tokio(addr: SocketAddr) -> Res<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        say(&format!("listening on {}", listener.local_addr()?.port()));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let accept_loop = tokio::spawn(async move {
            loop {
                let (sock, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("bench-hyper server tokio: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let builder = builder.clone();
                tokio::spawn(async move {
                    let _ = builder
                        .serve_connection(TokioIo::new(sock), hyper::service::service_fn(hello))
                        .await;
                });
            }
        });
        accept_loop.await?;
        Ok::<(), Box<dyn Error>>(())
    })
}

// ---------------------------------------------------------------------------
// Load generator

/// (user, sys) CPU time of process `pid` in seconds, from `/proc/<pid>/stat`.
fn process_cpu_secs(pid: u32) -> io::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / USER_HZ)
            .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))
    };
    Ok((tick(11)?, tick(12)?))
}

/// The length of a complete response at the start of `buf` (head and
/// body), or `None` if more must be read; an error for anything but a
/// `200` with a `content-length`.
fn response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::other("a response head that is not UTF-8"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(io::Error::other(format!("unexpected response: {head}")));
    }
    let len = head
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| io::Error::other("a response without content-length"))?;
    let total = head_end + 4 + len;
    Ok((buf.len() >= total).then_some(total))
}

/// One keep-alive connection's request/response loop until `stop`.
async fn requests(
    mut sock: TcpStream,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        sock.write_all(REQUEST).await?;
        let mut filled = 0;
        loop {
            let n = sock.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            filled += n;
            if let Some(total) = response_len(&buf[..filled])? {
                if total != filled {
                    return Err(io::Error::other("bytes after the response"));
                }
                break;
            }
            if filled == buf.len() {
                return Err(io::Error::other("a response over 4 KiB"));
            }
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn client(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    let system = o.system.as_deref().unwrap_or("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (reqs, secs, cpu) = rt.block_on(async {
        let mut tasks = Vec::with_capacity(o.conns);
        for _ in 0..o.conns {
            let sock = TcpStream::connect(addr).await?;
            sock.set_nodelay(true)?;
            let (count, stop) = (count.clone(), stop.clone());
            tasks.push(tokio::spawn(requests(sock, count, stop)));
        }
        tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
        let cpu0 = o.server_pid.map(process_cpu_secs).transpose()?;
        let (n0, t0) = (count.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
        let cpu1 = o.server_pid.map(process_cpu_secs).transpose()?;
        let (n1, secs) = (count.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
        stop.store(true, Ordering::Relaxed);
        // A connection that failed before the window closed invalidates the run.
        for t in tasks {
            if t.is_finished() {
                t.await??;
            }
        }
        let cpu = cpu0.zip(cpu1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
        Ok::<_, Box<dyn Error>>((n1 - n0, secs, cpu))
    })?;
    if reqs == 0 {
        return Err("no request was answered in the window".into());
    }
    let case = &o.case;
    report(
        &format!("{case}_reqs_per_s"),
        system,
        reqs as f64 / secs,
        "req/s",
        reqs,
    );
    if let Some((user, sys)) = cpu {
        report(
            &format!("{case}_cpu_us_per_req"),
            system,
            (user + sys) * 1e6 / reqs as f64,
            "us/req",
            reqs,
        );
    }
    let _ = io::stdout().flush();
    std::process::exit(0);
}
