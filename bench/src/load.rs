//! What the load generators and servers of `bench-net` (TCP, TLS, UDP) and
//! `bench-hyper` share: the stdout/stdin protocol with xtask, the server's
//! CPU time read from `/proc`, and the measurement window.
//!
//! A client spawns one tokio task per connection; each bumps
//! [`Counters::done`] per answered message and stops when
//! [`Counters::stop`] is set. [`measure`] waits out the warm-up, counts over
//! the window, and reads the server's CPU time at both ends of it.

use std::error::Error;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::report;

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

/// Prints `line` on stdout and flushes (stdout is a pipe to xtask).
pub fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Exits the process once stdin reaches end-of-file (or fails), from a
/// thread that stays blocked in `read` until then: how xtask stops a server.
pub fn exit_on_stdin_eof() {
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

/// (user, sys) CPU time of process `pid` in seconds, from `/proc/<pid>/stat`.
pub fn process_cpu_secs(pid: u32) -> io::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its closing ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let tick = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / USER_HZ)
            .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))
    };
    Ok((tick(11)?, tick(12)?))
}

/// The counters a client's connection tasks share.
#[derive(Clone, Default)]
pub struct Counters {
    /// Messages (or requests) answered.
    pub done: Arc<AtomicU64>,
    /// Messages given up on (UDP's lost datagrams).
    pub lost: Arc<AtomicU64>,
    /// Set when the window is over: the tasks return.
    pub stop: Arc<AtomicBool>,
}

/// What one measurement window saw.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Messages answered within the window.
    pub done: u64,
    /// Messages lost within the window.
    pub lost: u64,
    /// The window's length.
    pub secs: f64,
    /// The server's (user, sys) CPU seconds within the window, if its pid
    /// was given.
    pub cpu: Option<(f64, f64)>,
}

/// Waits `warmup` seconds, counts over `duration` seconds, stops the tasks,
/// and fails if one of them failed before the window closed (which would
/// invalidate the count). `what` names the unit in the "nothing answered"
/// error.
pub async fn measure(
    counters: &Counters,
    tasks: Vec<JoinHandle<io::Result<()>>>,
    warmup: f64,
    duration: f64,
    server_pid: Option<u32>,
    what: &str,
) -> Result<Window, Box<dyn Error>> {
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let cpu0 = server_pid.map(process_cpu_secs).transpose()?;
    let (n0, l0, t0) = (
        counters.done.load(Ordering::Relaxed),
        counters.lost.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    let cpu1 = server_pid.map(process_cpu_secs).transpose()?;
    let (n1, l1, secs) = (
        counters.done.load(Ordering::Relaxed),
        counters.lost.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    counters.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if t.is_finished() {
            t.await??;
        }
    }
    if n1 == n0 {
        return Err(format!("no {what} was answered in the window").into());
    }
    Ok(Window {
        done: n1 - n0,
        lost: l1 - l0,
        secs,
        cpu: cpu0.zip(cpu1).map(|(a, b)| (b.0 - a.0, b.1 - a.1)),
    })
}

impl Window {
    /// Reports `<case>_<per_s>` (answered per second, in `rate_unit`) and,
    /// with the server's CPU time, `<case>_cpu_us_per_<per>` (user + sys)
    /// and, if `user_too`, `<case>_cpu_user_us_per_<per>`.
    pub fn report(&self, case: &str, system: &str, per: &str, rate_unit: &str, user_too: bool) {
        let n = self.done;
        let rate = n as f64 / self.secs;
        report(&format!("{case}_{per}s_per_s"), system, rate, rate_unit, n);
        if let Some((user, sys)) = self.cpu {
            let unit = format!("us/{per}");
            let us = (user + sys) * 1e6 / n as f64;
            report(&format!("{case}_cpu_us_per_{per}"), system, us, &unit, n);
            if user_too {
                let us = user * 1e6 / n as f64;
                report(
                    &format!("{case}_cpu_user_us_per_{per}"),
                    system,
                    us,
                    &unit,
                    n,
                );
            }
        }
    }
}

/// Flushes stdout and ends the process without waiting for the
/// connections to wind down (the exit closes them).
pub fn exit_now() -> ! {
    let _ = io::stdout().flush();
    std::process::exit(0);
}

/// A server of the loop: prints `listening on PORT` (its first inet
/// socket's), then serves until the process ends.
pub async fn announce_and_serve(server: loop_net::Server) -> Result<(), Box<dyn Error>> {
    let port = server
        .sockets()
        .first()
        .and_then(|s| s.as_inet())
        .map(|a| a.port())
        .ok_or("the server has no inet socket")?;
    say(&format!("listening on {port}"));
    server.serve_forever().await?;
    Ok(())
}

/// A tokio server's accept loop: prints `listening on PORT`, then accepts
/// for ever, sets `TCP_NODELAY` and spawns `serve(sock)` per connection.
/// Accept errors (EMFILE and the like) are printed and backed off from, as
/// a real server would.
pub async fn tokio_accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    who: &str,
    serve: F,
) -> io::Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    say(&format!("listening on {}", listener.local_addr()?.port()));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{who}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        tokio::spawn(serve(sock));
    }
}
