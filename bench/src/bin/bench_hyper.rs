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
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aioloop_bench::load::{
    announce_and_serve, exit_now, exit_on_stdin_eof, measure, tokio_accept_loop, Counters,
};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use loop_core::EventLoop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn Error>>;

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
        announce_and_serve(server).await
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
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new());
        let builder = Arc::new(builder);
        tokio_accept_loop(listener, "bench-hyper server tokio", |sock| {
            let builder = builder.clone();
            async move {
                let io = TokioIo::new(sock);
                let _ = builder
                    .serve_connection(io, hyper::service::service_fn(hello))
                    .await;
            }
        })
        .await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Load generator

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
async fn requests(mut sock: TcpStream, counters: Counters) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    while !counters.stop.load(Ordering::Relaxed) {
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
        counters.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn client(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    let system = o.system.as_deref().unwrap_or("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counters = Counters::default();
    let window = rt.block_on(async {
        let mut tasks = Vec::with_capacity(o.conns);
        for _ in 0..o.conns {
            let sock = TcpStream::connect(addr).await?;
            sock.set_nodelay(true)?;
            tasks.push(tokio::spawn(requests(sock, counters.clone())));
        }
        measure(
            &counters,
            tasks,
            o.warmup,
            o.duration,
            o.server_pid,
            "request",
        )
        .await
    })?;
    window.report(&o.case, system, "req", "req/s", false);
    exit_now();
}
