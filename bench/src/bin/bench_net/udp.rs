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
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aioloop_bench::report;
use loop_net::{DatagramLoopExt, DatagramOptions, DatagramProtocol, DatagramTransport, SockAddr};
use tokio::net::UdpSocket;

use aioloop_bench::load::{exit_now, measure, Counters};

use super::{exit_on_stdin_eof, say, Opts, Res};

/// How long a socket of the client waits for an echo before it counts the
/// datagram as lost and sends the next one.
const TIMEOUT: Duration = Duration::from_millis(200);

/// The bytes of the sequence number at the start of every datagram.
const SEQ: usize = 8;

pub(super) fn server(o: &Opts) -> Res<()> {
    let addr: SocketAddr = o.addr.parse()?;
    exit_on_stdin_eof();
    match o.system.as_deref() {
        Some(s @ ("aioloop" | "aioloop-uring")) => server_aioloop(addr, s),
        Some("tokio") => server_tokio(addr),
        Some(other) => {
            Err(format!("unknown system `{other}` (aioloop, aioloop-uring, tokio)").into())
        }
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

fn server_aioloop(addr: SocketAddr, system: &str) -> Res<()> {
    let lp = aioloop_bench::aioloop_loop(aioloop_bench::backend_of_system(system))?;
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
async fn ping_pong(sock: UdpSocket, size: usize, counters: Counters) -> io::Result<()> {
    let mut msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size + 64];
    let mut seq: u64 = 0;
    while !counters.stop.load(Ordering::Relaxed) {
        seq += 1;
        let tag = seq.to_le_bytes();
        msg[..SEQ].copy_from_slice(&tag);
        sock.send(&msg).await?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    counters.lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(n)) if n == size && buf[..SEQ] == tag => {
                    counters.done.fetch_add(1, Ordering::Relaxed);
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
    let counters = Counters::default();
    let window = rt.block_on(async {
        let mut tasks = Vec::with_capacity(o.conns);
        for _ in 0..o.conns {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(addr).await?;
            tasks.push(tokio::spawn(ping_pong(sock, o.size, counters.clone())));
        }
        measure(
            &counters,
            tasks,
            o.warmup,
            o.duration,
            o.server_pid,
            "datagram",
        )
        .await
    })?;
    window.report(&o.case, system, "msg", "msg/s", true);
    let lost = window.lost as f64;
    report(
        &format!("{}_lost", o.case),
        system,
        lost,
        "datagrams",
        window.done,
    );
    exit_now();
}
