//! `bench-process`: the process suite of `cargo xtask bench`, one case for
//! one system per process.
//!
//! ```text
//! bench-process --system <aioloop|aioloop-process|tokio> --case <spawn_seq|spawn_16|pipe_256m>
//! bench-process --system <aioloop-copy|aioloop-process-copy> --case pipe_256m
//!               [--quick] [--n N]
//! ```
//!
//! Cases (each system does its closest equivalent; runtime construction and
//! the warm-up are never timed):
//! - `spawn_seq`: N spawns of `/bin/true` one after another, each awaited
//!   to its exit status (which must be 0). stdin, stdout and stderr are
//!   `/dev/null` for every system, so the case is spawn + reap.
//! - `spawn_16`: the same N spawns with 16 in flight at once: 16 workers
//!   take the next spawn from a shared counter until N were started (a
//!   window of 16, what a semaphore of 16 gives).
//! - `pipe_256m`: `/bin/cat` with stdin and stdout pipes (stderr
//!   `/dev/null`): 256 MiB written to its stdin in 256 KiB chunks with flow
//!   control while its stdout is read to the end; the bytes read must equal
//!   the bytes written. `--n` (and `--quick`) give the MiB.
//!
//! Every spawn case first makes `WARMUP` spawns, untimed. Result lines per
//! case: spawns/s, wall µs per spawn and the parent's CPU µs per spawn
//! (`spawn_*`); MB/s (10^6 bytes, one direction) and the parent's CPU ms per
//! 10^9 bytes (`pipe_256m`). CPU time is `CLOCK_PROCESS_CPUTIME_ID` (every
//! thread of this process, exited ones too; not the children's).
//!
//! - `aioloop`: `loop.subprocess_exec` with a [`SubprocessProtocol`];
//!   spawns await `transport.wait()`. `pipe_256m`: the protocol writes
//!   chunks to the stdin pipe transport until the transport's buffer is over
//!   its high-water mark (or `pause_writing` came), continues on
//!   `resume_writing`, `write_eof`s at the end, and counts
//!   `pipe_data_received` bytes (64 KiB reads); done at `connection_lost`.
//!   The chunk is one `Rc<[u8]>` given to `write_owned` (kept, not copied,
//!   by the pipe: what uvloop does with a `bytes` object). `aioloop-copy`
//!   writes it with `write(&[u8])` instead (the rest the pipe does not take
//!   at once is copied into the transport's buffer).
//! - `aioloop-process`: `loop.create_subprocess_exec` (the high-level
//!   `Process`, asyncio's `asyncio.create_subprocess_exec`), written as
//!   `bench/python/process_bench.py` does for asyncio and uvloop: spawns
//!   await `process.wait()`; `pipe_256m` runs a writer task
//!   (`stdin.write_owned(chunk)`, or `stdin.write(&chunk)` as
//!   `aioloop-process-copy`, + `drain().await`, then `close()`) and a reader
//!   task (`stdout.read(256 KiB)` until it is empty) side by side.
//! - `tokio`: a current-thread runtime, the body in a `spawn_local`'d task
//!   of a `LocalSet` (as bench-futures), `tokio::process::Command` (pidfd
//!   reaper); spawns await `child.wait()`. `pipe_256m`: `write_all` of each
//!   chunk to `ChildStdin` (then dropped: EOF) joined with `read`s of 64 KiB
//!   from `ChildStdout` (`tokio::join!`).

use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioloop_bench::{report, Args};
use loop_core::EventLoop;
use loop_net::Transport;
use loop_process::{
    Stdio as LoopStdio, SubprocessLoopExt, SubprocessOptions, SubprocessProtocol,
    SubprocessTransport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::LocalSet;

type Res<T> = Result<T, Box<dyn Error>>;

/// Full-size spawn counts (`--quick` divides them by 10).
const N_SPAWN_SEQ: u64 = 500;
const N_SPAWN_16: u64 = 500;
/// MiB through `cat` (`--quick` divides it by 10).
const PIPE_MIB: u64 = 256;

/// Untimed spawns before a spawn case's measurement.
const WARMUP: u64 = 20;
/// Spawns in flight at once in `spawn_16`.
const WINDOW: u64 = 16;
/// Bytes per write to the child's stdin.
const CHUNK: usize = 256 * 1024;
/// Bytes per read of the child's stdout (tokio; aioloop's read pipes read
/// 64 KiB): a default pipe holds 64 KiB.
const READ: usize = 64 * 1024;
/// Most bytes per `StreamReader::read` (aioloop-process, as the Python side's
/// `stdout.read(256 KiB)`): it returns what is buffered, up to this.
const STREAM_READ: usize = 256 * 1024;

const TRUE: &str = "/bin/true";
const CAT: &str = "/bin/cat";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// `subprocess_exec` + a `SubprocessProtocol` (`copy`: the `-copy`
    /// variant, `write(&[u8])`, `pipe_256m` only).
    Aioloop {
        copy: bool,
    },
    /// `create_subprocess_exec` + `Process` streams (`copy` as above).
    AioloopProcess {
        copy: bool,
    },
    Tokio,
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-process: {e}");
            return ExitCode::from(2);
        }
    };
    let system = match args.system.as_str() {
        "aioloop" => System::Aioloop { copy: false },
        "aioloop-copy" => System::Aioloop { copy: true },
        "aioloop-process" => System::AioloopProcess { copy: false },
        "aioloop-process-copy" => System::AioloopProcess { copy: true },
        "tokio" => System::Tokio,
        other => {
            eprintln!(
                "bench-process: unknown system `{other}` (aioloop, aioloop-copy, aioloop-process, \
                 aioloop-process-copy, tokio)"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args, system) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-process: {} / {} failed: {e}", args.case, args.system);
            ExitCode::FAILURE
        }
    }
}

/// What one measured run took: wall time and this process's CPU time.
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn run(args: &Args, system: System) -> Res<()> {
    let name = args.system.as_str();
    match args.case.as_str() {
        case @ ("spawn_seq" | "spawn_16") => {
            let (n, window) = if case == "spawn_seq" {
                (args.count(N_SPAWN_SEQ), 1)
            } else {
                (args.count(N_SPAWN_16), WINDOW)
            };
            let took = match system {
                System::Aioloop { copy: false } => spawn_aioloop(n, window, false)?,
                System::AioloopProcess { copy: false } => spawn_aioloop(n, window, true)?,
                System::Tokio => spawn_tokio(n, window)?,
                _ => return Err(format!("`{name}` runs pipe_256m only").into()),
            };
            let per = n.max(1) as f64;
            let secs = took.wall.as_secs_f64();
            let per_s = if secs > 0.0 { n as f64 / secs } else { 0.0 };
            report(&format!("{case}_per_s"), name, per_s, "spawn/s", n);
            let us = secs * 1e6 / per;
            report(&format!("{case}_us_per_spawn"), name, us, "us/spawn", n);
            let cpu = took.cpu.as_secs_f64() * 1e6 / per;
            report(
                &format!("{case}_cpu_us_per_spawn"),
                name,
                cpu,
                "us/spawn",
                n,
            );
        }
        "pipe_256m" => {
            let mib = args.count(PIPE_MIB);
            let bytes = mib * 1024 * 1024;
            let took = match system {
                System::Aioloop { copy } => pipe_aioloop(bytes, copy)?,
                System::AioloopProcess { copy } => pipe_aioloop_process(bytes, copy)?,
                System::Tokio => pipe_tokio(bytes)?,
            };
            let secs = took.wall.as_secs_f64().max(1e-9);
            report(
                "pipe_256m_mb_per_s",
                name,
                bytes as f64 / 1e6 / secs,
                "MB/s",
                mib,
            );
            let gb = (bytes as f64 / 1e9).max(1e-9);
            let cpu_ms = took.cpu.as_secs_f64() * 1e3;
            report("pipe_256m_cpu_ms_per_gb", name, cpu_ms / gb, "ms/GB", mib);
        }
        other => return Err(format!("unknown case `{other}`").into()),
    }
    Ok(())
}

/// This process's CPU time so far (every thread, exited ones included).
fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Times `body` (wall and CPU).
async fn timed<F: Future<Output = Res<()>>>(body: F) -> Res<Took> {
    let (cpu0, t0) = (cpu_now(), Instant::now());
    body.await?;
    Ok(Took {
        wall: t0.elapsed(),
        cpu: cpu_now().saturating_sub(cpu0),
    })
}

fn ensure(cond: bool, what: impl Into<String>) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// The 256 KiB chunk every system writes (not all zeros, not that it matters
/// to `cat`).
fn chunk() -> Vec<u8> {
    (0..CHUNK).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------
// aioloop

/// A protocol that ignores everything (every stream is /dev/null).
struct Quiet;

impl SubprocessProtocol for Quiet {}

/// One `/bin/true` to its exit status.
async fn spawn_one_aioloop(lp: EventLoop) -> Res<()> {
    let opts = SubprocessOptions::new()
        .stdin(LoopStdio::DevNull)
        .stdout(LoopStdio::DevNull)
        .stderr(LoopStdio::DevNull);
    let (transport, _protocol) = lp
        .subprocess_exec(|| Quiet, TRUE, [] as [&str; 0], opts)
        .await?;
    let code = transport.wait().await?;
    ensure(code == 0, format!("{TRUE} exited with {code}"))
}

/// One `/bin/true` to its exit status, through the high-level `Process`.
async fn spawn_one_process(lp: EventLoop) -> Res<()> {
    let opts = SubprocessOptions::new()
        .stdin(LoopStdio::DevNull)
        .stdout(LoopStdio::DevNull)
        .stderr(LoopStdio::DevNull);
    let process = lp
        .create_subprocess_exec(TRUE, [] as [&str; 0], opts)
        .await?;
    let code = process.wait().await?;
    ensure(code == 0, format!("{TRUE} exited with {code}"))
}

/// Spawns until the shared counter reaches `n`, one at a time
/// (`high_level`: with `create_subprocess_exec`).
async fn spawn_worker_aioloop(
    lp: EventLoop,
    next: Rc<Cell<u64>>,
    n: u64,
    high_level: bool,
) -> Res<()> {
    while next.get() < n {
        next.set(next.get() + 1);
        if high_level {
            spawn_one_process(lp.clone()).await?;
        } else {
            spawn_one_aioloop(lp.clone()).await?;
        }
    }
    Ok(())
}

fn spawn_aioloop(n: u64, window: u64, high_level: bool) -> Res<Took> {
    let lp = EventLoop::new()?;
    let l = lp.clone();
    let took = lp.run_until_complete(async move {
        let warmup = Rc::new(Cell::new(0u64));
        spawn_worker_aioloop(l.clone(), warmup, WARMUP, high_level).await?;
        let next = Rc::new(Cell::new(0u64));
        timed(async {
            if window == 1 {
                return spawn_worker_aioloop(l.clone(), next.clone(), n, high_level).await;
            }
            let mut workers = Vec::new();
            for _ in 0..window {
                let worker = spawn_worker_aioloop(l.clone(), next.clone(), n, high_level);
                workers.push(l.create_task(worker)?);
            }
            for w in workers {
                w.await??;
            }
            Ok(())
        })
        .await
    })??;
    lp.close()?;
    Ok(took)
}

/// Feeds `cat` and counts what comes back (see the module docs).
struct Feed {
    stdin: Option<Transport>,
    chunk: Rc<[u8]>,
    copy: bool,
    chunks_left: u64,
    paused: bool,
    received: u64,
    done: loop_core::Future<u64>,
}

impl Feed {
    /// Writes chunks until the transport is over its high-water mark (its
    /// `pause_writing` is delivered after the protocol method that caused it
    /// returns, so the buffer is checked too), then `write_eof` once all are
    /// written.
    fn pump(&mut self) {
        let Some(t) = &self.stdin else { return };
        let high = t.get_write_buffer_limits().0;
        while !self.paused && self.chunks_left > 0 && t.get_write_buffer_size() <= high {
            let written = if self.copy {
                t.write(&self.chunk)
            } else {
                t.write_owned(self.chunk.clone())
            };
            if written.is_err() {
                self.chunks_left = 0;
                break;
            }
            self.chunks_left -= 1;
        }
        if self.chunks_left == 0 {
            let _ = t.write_eof();
            self.stdin = None;
        }
    }
}

impl SubprocessProtocol for Feed {
    fn connection_made(&mut self, transport: SubprocessTransport) {
        self.stdin = transport.get_pipe_transport(0);
        self.pump();
    }

    fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
        self.received += data.len() as u64;
    }

    fn pause_writing(&mut self) {
        self.paused = true;
    }

    fn resume_writing(&mut self) {
        self.paused = false;
        self.pump();
    }

    fn connection_lost(&mut self, _error: Option<std::io::Error>) {
        let _ = self.done.set_result(self.received);
    }
}

fn pipe_aioloop(bytes: u64, copy: bool) -> Res<Took> {
    let lp = EventLoop::new()?;
    let l = lp.clone();
    let chunk: Rc<[u8]> = chunk().into();
    let took = lp.run_until_complete(async move {
        let done = l.create_future::<u64>();
        let d = done.clone();
        let chunks = bytes / CHUNK as u64;
        let took = timed(async move {
            let opts = SubprocessOptions::new().stderr(LoopStdio::DevNull);
            let feed = move || Feed {
                stdin: None,
                chunk,
                copy,
                chunks_left: chunks,
                paused: false,
                received: 0,
                done: d,
            };
            let (transport, _protocol) =
                l.subprocess_exec(feed, CAT, [] as [&str; 0], opts).await?;
            let got = done.await?;
            let code = transport.wait().await?;
            ensure(code == 0, format!("{CAT} exited with {code}"))?;
            ensure(got == bytes, format!("read {got} of {bytes} bytes"))
        })
        .await?;
        Ok::<_, Box<dyn Error>>(took)
    })??;
    lp.close()?;
    Ok(took)
}

/// `pipe_256m` with `create_subprocess_exec`: a writer task and a reader
/// task, as the asyncio side does it.
fn pipe_aioloop_process(bytes: u64, copy: bool) -> Res<Took> {
    let lp = EventLoop::new()?;
    let l = lp.clone();
    let chunk: Rc<[u8]> = chunk().into();
    let took = lp.run_until_complete(async move {
        let chunks = bytes / CHUNK as u64;
        timed(async move {
            let opts = SubprocessOptions::new().stderr(LoopStdio::DevNull);
            let mut process = l.create_subprocess_exec(CAT, [] as [&str; 0], opts).await?;
            let stdin = process.stdin.take().ok_or("no stdin stream")?;
            let stdout = process.stdout.take().ok_or("no stdout stream")?;
            let writer = l.create_task(async move {
                for _ in 0..chunks {
                    if copy {
                        stdin.write(&chunk)?;
                    } else {
                        stdin.write_owned(chunk.clone())?;
                    }
                    stdin.drain().await?;
                }
                stdin.close();
                Ok::<_, Box<dyn Error>>(())
            })?;
            let reader = l.create_task(async move {
                let mut got = 0u64;
                loop {
                    let data = stdout.read(STREAM_READ).await?;
                    if data.is_empty() {
                        return Ok::<_, Box<dyn Error>>(got);
                    }
                    got += data.len() as u64;
                }
            })?;
            writer.await??;
            let got = reader.await??;
            let code = process.wait().await?;
            ensure(code == 0, format!("{CAT} exited with {code}"))?;
            ensure(got == bytes, format!("read {got} of {bytes} bytes"))
        })
        .await
    })??;
    lp.close()?;
    Ok(took)
}

// ---------------------------------------------------------------------------
// tokio

/// Runs `body` in a `spawn_local`'d task of a fresh current-thread runtime
/// (as bench-futures: not as the `block_on` future itself).
fn tokio_local<F>(body: F) -> Res<Took>
where
    F: Future<Output = Res<Took>> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&rt, async move { tokio::task::spawn_local(body).await? })
}

async fn spawn_one_tokio() -> Res<()> {
    let status = tokio::process::Command::new(TRUE)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?
        .wait()
        .await?;
    ensure(status.success(), format!("{TRUE} exited with {status}"))
}

async fn spawn_worker_tokio(next: Rc<Cell<u64>>, n: u64) -> Res<()> {
    while next.get() < n {
        next.set(next.get() + 1);
        spawn_one_tokio().await?;
    }
    Ok(())
}

fn spawn_tokio(n: u64, window: u64) -> Res<Took> {
    tokio_local(async move {
        for _ in 0..WARMUP {
            spawn_one_tokio().await?;
        }
        let next = Rc::new(Cell::new(0u64));
        timed(async {
            if window == 1 {
                return spawn_worker_tokio(next.clone(), n).await;
            }
            let mut workers = Vec::new();
            for _ in 0..window {
                workers.push(tokio::task::spawn_local(spawn_worker_tokio(
                    next.clone(),
                    n,
                )));
            }
            for w in workers {
                w.await??;
            }
            Ok(())
        })
        .await
    })
}

fn pipe_tokio(bytes: u64) -> Res<Took> {
    let chunk = chunk();
    let chunks = bytes / CHUNK as u64;
    tokio_local(timed(async move {
        let mut child = tokio::process::Command::new(CAT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let writer = async move {
            for _ in 0..chunks {
                stdin.write_all(&chunk).await?;
            }
            // Dropping the pipe closes it: cat sees end of file.
            drop(stdin);
            Ok::<_, std::io::Error>(())
        };
        let reader = async move {
            let mut buf = vec![0u8; READ];
            let mut got = 0u64;
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(got);
                }
                got += n as u64;
            }
        };
        let (written, got) = tokio::join!(writer, reader);
        written?;
        let got = got?;
        let status = child.wait().await?;
        ensure(status.success(), format!("{CAT} exited with {status}"))?;
        ensure(got == bytes, format!("read {got} of {bytes} bytes"))
    }))
}
