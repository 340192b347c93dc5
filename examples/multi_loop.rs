//! Multi-core scaling the aioloop way: N event loops on N threads, each with
//! its own listener on one shared port (`SO_REUSEPORT`).
//!
//! ```text
//! cargo run --release --example multi_loop -- [--loops N] [--conns M]
//! ```
//!
//! An [`EventLoop`] belongs to one thread, so a server that should use
//! several cores runs several loops. Thread 0 binds the first echo server
//! on `127.0.0.1:0` with `reuse_port: true` and reports the port it got;
//! threads 1..N bind their own servers on that same port. The kernel then
//! spreads incoming connections over the N listening sockets (on Linux, by
//! a hash of each connection's addresses and ports). Each loop's protocol
//! echoes and counts the connections its loop accepted.
//!
//! A client thread then opens M connections with plain `std::net`: each
//! connects, writes a short message, reads the echo back, and closes. The
//! program prints `loop K accepted X connections` per loop and
//! `M connections spread over N loops`, then stops every loop through its
//! thread-safe [`LoopHandle`] (close the server, then stop) and joins the
//! threads. It exits 0 only if every echo matched, the counts add up to M,
//! and, when there are enough connections for it to be a near certainty
//! (N >= 2, M >= 50 and M >= 25 N), every loop accepted at least one.
//! A watchdog fails the run after 30 s.
//!
//! N defaults to the available parallelism, at least 2 and at most 8 (with
//! many more loops than that, 200 connections no longer reach every loop
//! reliably); M defaults to 200. Bad arguments print the usage and exit 2.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use aioloop::prelude::*;

const USAGE: &str = "\
usage: multi_loop [--loops N] [--conns M]
  --loops N  event loops (threads) sharing one port with SO_REUSEPORT;
             default: the available parallelism, clamped to 2..=8
  --conns M  client connections to open (default 200)";

/// The whole run must finish within this, or the program fails.
const WATCHDOG: Duration = Duration::from_secs(30);

/// How long a client waits on a single read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let (loops, conns) = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("multi_loop: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    thread::spawn(|| {
        thread::sleep(WATCHDOG);
        eprintln!("multi_loop: watchdog: not done after {WATCHDOG:?}");
        std::process::exit(1);
    });
    match run(loops, conns) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("multi_loop: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(usize, usize), String> {
    let mut loops = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let mut conns = 200;
    while let Some(arg) = args.next() {
        let mut value = || -> Result<usize, String> {
            let v = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{arg} needs a positive number, got {v:?}")),
            }
        };
        match arg.as_str() {
            "--loops" => loops = value()?,
            "--conns" => conns = value()?,
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((loops, conns))
}

/// The protocol: counts its connection, then writes back whatever arrives.
struct Echo {
    accepted: Arc<AtomicUsize>,
    transport: Option<Transport>,
}

impl BaseProtocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.transport = Some(transport);
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // Only errs after write_eof, which this protocol never calls.
            let _ = t.write(data);
        }
    }
    // eof_received: the default (false) closes once the echo is flushed.
}

thread_local! {
    /// This thread's server. A `Server` is `!Send`, so the thread-safe
    /// shutdown callback (which must be `Send`) finds it here.
    static SERVER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

/// A running loop thread: its handle, its count, and its join handle.
struct LoopThread {
    handle: LoopHandle,
    accepted: Arc<AtomicUsize>,
    join: thread::JoinHandle<Result<(), String>>,
}

/// Starts loop `k`: a thread with its own `EventLoop` and an echo server on
/// `127.0.0.1:port` (`port` 0: an ephemeral one) with `reuse_port`. Returns
/// once the server listens, with the port it is bound to.
fn start_loop(k: usize, port: u16) -> Result<(LoopThread, u16), String> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(LoopHandle, u16), String>>();
    let join = thread::Builder::new()
        .name(format!("loop-{k}"))
        .spawn(move || -> Result<(), String> {
            let fail = |what: &str, e: &dyn std::fmt::Display| format!("loop {k}: {what}: {e}");
            let lp = match EventLoop::new() {
                Ok(lp) => lp,
                Err(e) => {
                    let msg = fail("cannot create the loop", &e);
                    let _ = ready_tx.send(Err(msg.clone()));
                    return Err(msg);
                }
            };
            let l = lp.clone();
            let factory = move || Echo {
                accepted: count.clone(),
                transport: None,
            };
            let opts = ServerOptions {
                reuse_port: true,
                ..ServerOptions::default()
            };
            let created = lp.run_until_complete(async move {
                l.create_server(factory, &["127.0.0.1"], port, opts).await
            });
            let server = match created {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let msg = fail(&format!("cannot listen on 127.0.0.1:{port}"), &e);
                    let _ = ready_tx.send(Err(msg.clone()));
                    return Err(msg);
                }
                Err(e) => {
                    let msg = fail("create_server", &e);
                    let _ = ready_tx.send(Err(msg.clone()));
                    return Err(msg);
                }
            };
            let bound = server
                .sockets()
                .first()
                .and_then(|a| a.as_inet())
                .map(|a| a.port())
                .unwrap_or(0);
            SERVER.with(|s| *s.borrow_mut() = Some(server.clone()));
            let _ = ready_tx.send(Ok((lp.handle(), bound)));

            // Serve until the main thread closes the server and stops us.
            lp.run_forever().map_err(|e| fail("run_forever", &e))?;
            // Let the accepted connections finish (the clients have closed
            // theirs already), then close the loop.
            server.close();
            server.close_clients();
            let s = server.clone();
            lp.run_until_complete(async move { s.wait_closed().await })
                .map_err(|e| fail("wait_closed", &e))?;
            drop(server);
            lp.close().map_err(|e| fail("close", &e))
        })
        .map_err(|e| format!("loop {k}: cannot spawn its thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok((handle, bound))) => Ok((
            LoopThread {
                handle,
                accepted,
                join,
            },
            bound,
        )),
        Ok(Err(msg)) => {
            let _ = join.join();
            Err(msg)
        }
        Err(_) => {
            let _ = join.join();
            Err(format!("loop {k}: its thread ended before listening"))
        }
    }
}

/// One client connection: connect, send, read the echo, close.
fn echo_once(port: u16, i: usize) -> io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let msg = format!("hello from connection {i}\n");
    s.write_all(msg.as_bytes())?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg.as_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "connection {i}: echo differs: {:?}",
                String::from_utf8_lossy(&back)
            ),
        ));
    }
    Ok(())
}

fn run(n: usize, m: usize) -> Result<bool, String> {
    // Thread 0 picks the port; the others join it.
    let mut loops = Vec::with_capacity(n);
    let (first, port) = start_loop(0, 0)?;
    loops.push(first);
    let mut started = Ok(());
    for k in 1..n {
        match start_loop(k, port) {
            Ok((t, _)) => loops.push(t),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }

    // The load: M sequential connections from one client thread.
    let load = if started.is_ok() {
        thread::Builder::new()
            .name("client".into())
            .spawn(move || -> Result<(), String> {
                (0..m).try_for_each(|i| {
                    echo_once(port, i).map_err(|e| format!("connection {i}: {e}"))
                })
            })
            .map_err(|e| format!("cannot spawn the client thread: {e}"))
            .and_then(|j| {
                j.join()
                    .unwrap_or_else(|_| Err("the client thread panicked".into()))
            })
    } else {
        Ok(())
    };

    // Shut down: on each loop's own thread, close its server, then stop.
    for t in &loops {
        let _ = t.handle.call_soon_threadsafe(|| {
            if let Some(s) = SERVER.with(|s| s.borrow_mut().take()) {
                s.close();
            }
        });
        let _ = t.handle.stop();
    }
    let mut ok = true;
    let mut counts = Vec::with_capacity(loops.len());
    for (k, t) in loops.into_iter().enumerate() {
        match t.join.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("multi_loop: {e}");
                ok = false;
            }
            Err(_) => {
                eprintln!("multi_loop: loop {k}: its thread panicked");
                ok = false;
            }
        }
        counts.push(t.accepted.load(Ordering::Relaxed));
    }
    started?;
    if let Err(e) = load {
        eprintln!("multi_loop: {e}");
        ok = false;
    }

    for (k, c) in counts.iter().enumerate() {
        println!("loop {k} accepted {c} connections");
    }
    let total: usize = counts.iter().sum();
    println!("{total} connections spread over {n} loops");
    if total != m {
        eprintln!("multi_loop: the loops accepted {total} connections, expected {m}");
        ok = false;
    }
    if n >= 2 && m >= 50 && m >= 25 * n {
        for (k, c) in counts.iter().enumerate() {
            if *c == 0 {
                eprintln!("multi_loop: loop {k} accepted no connection");
                ok = false;
            }
        }
    }
    Ok(ok)
}
