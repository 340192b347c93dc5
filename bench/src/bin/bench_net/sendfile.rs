//! `bench-net sendfile`: a file over loopback TCP to a receiver that only
//! counts bytes (the `sendfile_*` case of `cargo xtask bench net`).
//!
//! ```text
//! bench-net sendfile --system aioloop-sendfile|aioloop-copy|tokio
//!                    --file PATH --size BYTES [--reps N] [--case NAME]
//! ```
//!
//! The file is created (pseudo-random bytes) if it is missing or not SIZE
//! bytes long, and read once so that every system reads it from the page
//! cache. The receiver is a thread with a blocking socket reading 256 KiB at
//! a time. The sender sends the whole file 1 + N times over one connection;
//! the first send is the warm-up. MB/s = N x SIZE / 10^6 over the time
//! between the receiver counting the end of the warm-up and the end of the
//! last send. The receiver discards with `MSG_TRUNC` (no copy out), so that
//! it costs little next to the sender. CPU ms/GB = the CPU time of every
//! thread but the receiver's (`/proc/self/task/*/schedstat`, which includes
//! the loopback softirq work done in the sender's sends) over the same
//! window, per 10^9 bytes.
//!
//! - `aioloop-sendfile`: `loop.sendfile(transport, file)` (`sendfile(2)`).
//! - `aioloop-copy`: the same call with `SendfileFallback::Forced`: `pread`
//!   of 256 KiB blocks on the default executor, one block read ahead, each
//!   written through the transport.
//! - `tokio`: tokio has no sendfile. A current-thread runtime, the file read
//!   with `pread` of 256 KiB blocks in `spawn_blocking` (what `tokio::fs`
//!   does, without its extra copy), one block read ahead, each
//!   `write_all`-ed to the `TcpStream`.

use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Instant;

use aioloop_bench::{report, XorShift, SEED};
use loop_core::EventLoop;
use loop_net::{BaseProtocol, Protocol, SendfileFallback, SendfileLoopExt, StreamLoopExt};
use rustix::net::RecvFlags;
use tokio::io::AsyncWriteExt;

use super::{Opts, Res};

/// Bytes per read of the copy loops.
const BLOCK: usize = 256 * 1024;

/// Bytes the receiver takes per `recv`.
const RECV_BLOCK: usize = 1024 * 1024;

pub(super) fn run(o: &Opts) -> Res<()> {
    let path = o.file.as_deref().ok_or("--file is required")?;
    let size = o.size as u64;
    ensure_file(Path::new(path), size)?;
    let reps = o.reps.max(1) as u64;
    let total = size * (reps + 1);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let done = Arc::new(Done::default());
    let done2 = done.clone();
    // The receiver: counts bytes; notes when the warm-up send has arrived
    // (time, and the CPU time of every other thread: the sender's).
    let receiver = thread::spawn(move || -> io::Result<(Sample, Sample)> {
        let (sock, _) = listener.accept()?;
        let mut buf = vec![0u8; RECV_BLOCK];
        let mut got = 0u64;
        let mut warm = None;
        while got < total {
            // MSG_TRUNC: TCP drops the bytes without copying them out, so
            // the receiver costs little and the sender is what is measured.
            let (n, _) = rustix::net::recv(&sock, &mut buf[..], RecvFlags::TRUNC)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the sender stopped after {got} of {total} bytes"),
                ));
            }
            got += n as u64;
            if warm.is_none() && got >= size {
                warm = Some(Sample::now());
            }
        }
        let end = Sample::now();
        done2.set();
        Ok((warm.expect("set"), end))
    });

    let system = o.system.as_deref().ok_or("--system is required")?;
    match system {
        "aioloop-sendfile" => send_aioloop(addr, path, reps + 1, SendfileFallback::Disabled, done)?,
        "aioloop-copy" => send_aioloop(addr, path, reps + 1, SendfileFallback::Forced, done)?,
        "tokio" => send_tokio(addr, path, reps + 1)?,
        other => {
            return Err(
                format!("unknown system `{other}` (aioloop-sendfile, aioloop-copy, tokio)").into(),
            )
        }
    }
    let (start, end) = receiver.join().map_err(|_| "the receiver panicked")??;
    let secs = end.at.duration_since(start.at).as_secs_f64();
    let bytes = (reps * size) as f64;
    report(
        &format!("{}_mb_per_s", o.case),
        system,
        bytes / 1e6 / secs,
        "MB/s",
        reps,
    );
    let cpu_ms = (end.sender_cpu_ns.saturating_sub(start.sender_cpu_ns)) as f64 / 1e6;
    report(
        &format!("{}_cpu_ms_per_gb", o.case),
        system,
        cpu_ms / (bytes / 1e9),
        "ms/GB",
        reps,
    );
    Ok(())
}

/// A moment of the measurement: the time, and the CPU time (ns, from
/// `/proc/self/task/*/schedstat`) of every thread but the calling one (the
/// receiver's): the loop, its executor threads, or tokio's.
struct Sample {
    at: Instant,
    sender_cpu_ns: u64,
}

impl Sample {
    fn now() -> Sample {
        let me = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_os_string()));
        let mut sender_cpu_ns = 0;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                if Some(t.file_name()) == me {
                    continue;
                }
                let ns = std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
                sender_cpu_ns += ns.unwrap_or(0);
            }
        }
        Sample {
            at: Instant::now(),
            sender_cpu_ns,
        }
    }
}

/// Creates `path` with `size` pseudo-random bytes unless it already has
/// that size; then reads it once (into the page cache).
fn ensure_file(path: &Path, size: u64) -> Res<()> {
    let fresh = std::fs::metadata(path)
        .map(|m| m.len() != size)
        .unwrap_or(true);
    if fresh {
        let tmp = path.with_extension("partial");
        let mut f = File::create(&tmp)?;
        let mut rng = XorShift::new(SEED);
        let mut block = vec![0u8; BLOCK];
        let mut left = size;
        while left > 0 {
            for chunk in block.chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            let n = left.min(BLOCK as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    let mut f = File::open(path)?;
    let mut block = vec![0u8; BLOCK];
    while f.read(&mut block)? > 0 {}
    Ok(())
}

/// A protocol that ignores what it gets (the receiver sends nothing).
struct Quiet;

impl BaseProtocol for Quiet {}

impl Protocol for Quiet {
    fn data_received(&mut self, _: &[u8]) {}
}

/// Set by the receiver once it has every byte; wakes the sender's loop.
#[derive(Default)]
struct Done {
    flag: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Done {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.flag.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.flag.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

fn send_aioloop(
    addr: SocketAddr,
    path: &str,
    times: u64,
    fallback: SendfileFallback,
    done: Arc<Done>,
) -> Res<()> {
    let lp = EventLoop::new()?;
    let l = lp.clone();
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    lp.run_until_complete(async move {
        let host = addr.ip().to_string();
        let (t, _p) = l
            .create_connection(|| Quiet, Some(&host), addr.port(), Default::default())
            .await?;
        for _ in 0..times {
            let sent = l.sendfile(&t, &file, 0, None, fallback).await?;
            if sent != size {
                return Err(format!("sent {sent} of {size} bytes").into());
            }
        }
        // The copy loop may leave its last block in the transport's buffer:
        // keep the loop running until the receiver has everything.
        done.wait().await;
        t.close();
        Ok::<(), Box<dyn Error>>(())
    })??;
    lp.close()?;
    Ok(())
}

fn send_tokio(addr: SocketAddr, path: &str, times: u64) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let file = Arc::new(File::open(path)?);
    let size = file.metadata()?.len();
    rt.block_on(async move {
        let mut sock = tokio::net::TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let read = |buf: Vec<u8>, at: u64| {
            let f = file.clone();
            tokio::task::spawn_blocking(move || {
                let mut buf = buf;
                let want = (size - at).min(BLOCK as u64) as usize;
                let n = f.read_at(&mut buf[..want], at);
                (buf, n)
            })
        };
        let mut spare = Some(vec![0u8; BLOCK]);
        for _ in 0..times {
            let mut at = 0u64;
            let mut next = Some(read(vec![0u8; BLOCK], 0));
            while let Some(job) = next.take() {
                let (buf, n) = job.await?;
                let n = n?;
                if n == 0 {
                    break;
                }
                at += n as u64;
                if at < size {
                    next = Some(read(spare.take().unwrap_or_else(|| vec![0u8; BLOCK]), at));
                }
                sock.write_all(&buf[..n]).await?;
                spare = Some(buf);
            }
        }
        sock.shutdown().await?;
        Ok::<(), Box<dyn Error>>(())
    })
}
