//! UDP echo of `cargo xtask bench net` (the `udp_1k_x10` case).
//!
//! ```text
//! bench-net udp-server --system aioloop|tokio [--addr 127.0.0.1:0]
//! bench-net udp-client --addr HOST:PORT --conns N --size BYTES --duration SECS
//!                      [--warmup SECS] [--server-pid PID] [--case NAME] [--system NAME]
//! ```
//!
//! - `udp-server` prints `listening on PORT` (flushed) and sends every
//!   datagram back to its sender until its stdin closes. `aioloop`: a
//!   [`DatagramProtocol`] whose `datagram_received` calls
//!   `transport.sendto(data, Some(addr))`. `tokio`: a current-thread runtime,
//!   one `UdpSocket`, a `recv_from` / `send_to` loop.
//! - `udp-client` is the load generator (tokio current-thread): N UDP sockets,
//!   each connected to the server, each sending a SIZE-byte datagram (a
//!   sequence number in its first 8 bytes), waiting for its echo and
//!   repeating. An echo that does not come within [`TIMEOUT`] counts as lost
//!   and the socket sends the next one (a late echo of an older datagram is
//!   recognised by its sequence number and dropped). After `--warmup` it
//!   counts the echoes over `--duration` seconds and prints `result` lines:
//!   `CASE_msgs_per_s`, with `--server-pid` the server's user+sys CPU time
//!   per datagram `CASE_cpu_us_per_msg` (and `CASE_cpu_user_us_per_msg`),
//!   and `CASE_lost` (datagrams lost in the window).

use std::error::Error;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioloop_bench::report;
use loop_core::EventLoop;
use loop_net::{DatagramLoopExt, DatagramOptions, DatagramProtocol, DatagramTransport, SockAddr};
use tokio::net::UdpSocket;

use super::{exit_on_stdin_eof, process_cpu_secs, say, Opts, Res};

/// How long a socket of the client waits for an echo before it counts the
/// datagram as lost and sends the next one.
const TIMEOUT: Duration = Duration::from_millis(200);

/// The bytes of the sequence number at the start of every datagram.
const SEQ: usize = 8;

pub(super) fn server(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    exit_on_stdin_eof();
    match o.system.as_deref() {
        Some("aioloop") => server_aioloop(addr),
        Some("tokio") => server_tokio(addr),
        Some(other) => Err(format!("unknown system `{other}` (aioloop, tokio)").into()),
        None => Err("--system is required".into()),
    }
}

/// asyncio's datagram echo protocol.
#[derive(Default)]
struct Echo(Option<DatagramTransport>);

impl DatagramProtocol for Echo {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.0 = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: SockAddr) {
        if let Some(t) = &self.0 {
            let _ = t.sendto(data, Some(addr));
        }
    }
}

fn server_aioloop(addr: SocketAddr) -> Res<()> {
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        let (transport, _proto) = lp2
            .create_datagram_endpoint(
                Echo::default,
                DatagramOptions::default().with_local_addr(addr),
            )
            .await?;
        let port = transport
            .sockname()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
            .ok_or("the endpoint has no inet address")?;
        say(&format!("listening on {port}"));
        // Runs until stdin closes (`exit_on_stdin_eof` ends the process).
        std::future::pending::<()>().await;
        Ok::<(), Box<dyn Error>>(())
    })??;
    Ok(())
}

fn server_tokio(addr: SocketAddr) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sock = UdpSocket::bind(addr).await?;
        say(&format!("listening on {}", sock.local_addr()?.port()));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            let _ = sock.send_to(&buf[..n], from).await;
        }
    })
}

/// One socket's ping-pong until `stop`.
async fn ping_pong(
    sock: UdpSocket,
    size: usize,
    count: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size + 64];
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let tag = seq.to_le_bytes();
        msg[..SEQ].copy_from_slice(&tag);
        sock.send(&msg).await?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(n)) if n == size && buf[..SEQ] == tag => {
                    count.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                // A late echo of a datagram already counted as lost.
                Ok(Ok(_)) => {}
            }
        }
    }
    Ok(())
}

pub(super) fn client(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    if o.size < SEQ {
        return Err(format!("--size must be at least {SEQ}").into());
    }
    let system = o.system.as_deref().unwrap_or("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let count = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (msgs, lost_n, secs, cpu) = rt.block_on(async {
        let mut tasks = Vec::with_capacity(o.conns);
        for _ in 0..o.conns {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(addr).await?;
            let (count, lost, stop) = (count.clone(), lost.clone(), stop.clone());
            tasks.push(tokio::spawn(ping_pong(sock, o.size, count, lost, stop)));
        }
        tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
        let cpu0 = o.server_pid.map(process_cpu_secs).transpose()?;
        let (n0, l0, t0) = (
            count.load(Ordering::Relaxed),
            lost.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
        let cpu1 = o.server_pid.map(process_cpu_secs).transpose()?;
        let (n1, l1, secs) = (
            count.load(Ordering::Relaxed),
            lost.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        stop.store(true, Ordering::Relaxed);
        // A socket that failed before the window closed invalidates the run.
        for t in tasks {
            if t.is_finished() {
                t.await??;
            }
        }
        let cpu = cpu0.zip(cpu1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
        Ok::<_, Box<dyn Error>>((n1 - n0, l1 - l0, secs, cpu))
    })?;
    if msgs == 0 {
        return Err("no datagram was echoed in the window".into());
    }
    let case = &o.case;
    report(
        &format!("{case}_msgs_per_s"),
        system,
        msgs as f64 / secs,
        "msg/s",
        msgs,
    );
    if let Some((user, sys)) = cpu {
        let us = (user + sys) * 1e6 / msgs as f64;
        report(
            &format!("{case}_cpu_us_per_msg"),
            system,
            us,
            "us/msg",
            msgs,
        );
        let us = user * 1e6 / msgs as f64;
        report(
            &format!("{case}_cpu_user_us_per_msg"),
            system,
            us,
            "us/msg",
            msgs,
        );
    }
    report(
        &format!("{case}_lost"),
        system,
        lost_n as f64,
        "datagrams",
        msgs,
    );
    // Do not wait for the sockets' tasks: the process exit closes them.
    let _ = io::stdout().flush();
    std::process::exit(0);
}
