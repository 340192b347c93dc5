//! `bench-futures`: the futures suite of `cargo xtask bench`, one case for one
//! system per process.
//!
//! ```text
//! bench-futures --system <aioloop|tokio|tokio-spawn>
//!               --case <task_spawn_await|task_spawn_batch|future_callbacks|pingpong>
//!               [--quick] [--n N]
//! ```
//!
//! Cases (each system does its closest equivalent; only the work itself is
//! timed, never runtime construction):
//! - `task_spawn_await`: N times, create a trivial task (`async { i }`) and
//!   await it before creating the next.
//! - `task_spawn_batch`: create N trivial tasks, then await them all in order.
//! - `future_callbacks`: N futures, each created, given one done callback
//!   (which adds the result to a sum and bumps a counter) and resolved; the
//!   loop runs until the counter reaches N.
//! - `pingpong`: N round trips between two tasks; each round, A resolves a
//!   future that B awaits and B resolves a future that A awaits (new futures
//!   every round).
//!
//! `tokio` is a current-thread runtime with `spawn_local` in a `LocalSet`
//! (tasks need not be `Send`, like aioloop's); `tokio-spawn` is the same
//! runtime with plain `tokio::spawn` (task cases and `pingpong` only). Each
//! tokio body runs in a spawned task, like the task aioloop's
//! `run_until_complete` wraps its future in (see `tokio_local`). tokio
//! has no done callbacks: in `future_callbacks` each future is a
//! `tokio::sync::oneshot` whose receiver a `spawn_local`'d task awaits before
//! doing the callback's work; in `pingpong` each future is a oneshot channel
//! too (the sender standing for the resolving side).

use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use aioloop_bench::{ns_per_op, report, Args};
use loop_core::EventLoop;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::LocalSet;

/// `Send + Sync` so that the `tokio-spawn` task bodies can return it.
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Full-size operation counts (`--quick` divides them by 10).
const N_TASK_SPAWN_AWAIT: u64 = 1_000_000;
const N_TASK_SPAWN_BATCH: u64 = 1_000_000;
const N_FUTURE_CALLBACKS: u64 = 1_000_000;
const N_PINGPONG: u64 = 100_000;

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// aioloop, `EventLoop::new()` (default backend, honours AIOLOOP_BACKEND).
    Aioloop,
    /// tokio current-thread runtime, `spawn_local` in a `LocalSet`.
    Tokio,
    /// tokio current-thread runtime, plain `tokio::spawn`.
    TokioSpawn,
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-futures: {e}");
            return ExitCode::from(2);
        }
    };
    let system = match args.system.as_str() {
        "aioloop" => System::Aioloop,
        "tokio" => System::Tokio,
        "tokio-spawn" => System::TokioSpawn,
        other => {
            eprintln!("bench-futures: unknown system `{other}`");
            return ExitCode::from(2);
        }
    };
    match run(&args, system) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-futures: {} / {} failed: {e}", args.case, args.system);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, system: System) -> Res<()> {
    let name = args.system.as_str();
    match args.case.as_str() {
        "task_spawn_await" => {
            let n = args.count(N_TASK_SPAWN_AWAIT);
            let ns = match system {
                System::Aioloop => task_spawn_await_aioloop(&EventLoop::new()?, n)?,
                System::Tokio => task_spawn_await_tokio(n)?,
                System::TokioSpawn => task_spawn_await_tokio_spawn(n)?,
            };
            report("task_spawn_await", name, ns, "ns/op", n);
        }
        "task_spawn_batch" => {
            let n = args.count(N_TASK_SPAWN_BATCH);
            let ns = match system {
                System::Aioloop => task_spawn_batch_aioloop(&EventLoop::new()?, n)?,
                System::Tokio => task_spawn_batch_tokio(n)?,
                System::TokioSpawn => task_spawn_batch_tokio_spawn(n)?,
            };
            report("task_spawn_batch", name, ns, "ns/op", n);
        }
        "future_callbacks" => {
            let n = args.count(N_FUTURE_CALLBACKS);
            if n == 0 {
                return Err("future_callbacks needs n > 0".into());
            }
            let ns = match system {
                System::Aioloop => future_callbacks_aioloop(&EventLoop::new()?, n)?,
                System::Tokio => future_callbacks_tokio(n)?,
                System::TokioSpawn => {
                    return Err("future_callbacks has no tokio-spawn variant".into())
                }
            };
            report("future_callbacks", name, ns, "ns/op", n);
        }
        "pingpong" => {
            let n = args.count(N_PINGPONG);
            let ns = match system {
                System::Aioloop => pingpong_aioloop(&EventLoop::new()?, n)?,
                System::Tokio => pingpong_tokio(n)?,
                System::TokioSpawn => pingpong_tokio_spawn(n)?,
            };
            report("pingpong", name, ns, "ns/op", n);
        }
        other => return Err(format!("unknown case `{other}`").into()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers

fn tokio_rt() -> Res<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `body` in a `spawn_local`'d task of a fresh runtime's `LocalSet`.
///
/// Every tokio body runs in a task, not as the `block_on` future itself:
/// aioloop's `run_until_complete` wraps its future in a task too, and tokio
/// treats the `block_on` future specially (after each of its `Pending`s the
/// scheduler polls the I/O driver, an `epoll_wait` per await, which would
/// double tokio's `task_spawn_await` time).
fn tokio_local<F>(body: F) -> Res<f64>
where
    F: Future<Output = Res<f64>> + 'static,
{
    let rt = tokio_rt()?;
    LocalSet::new().block_on(&rt, async move { tokio::task::spawn_local(body).await? })
}

/// Runs `body` in a `tokio::spawn`'d task of a fresh runtime (see [`tokio_local`]).
fn tokio_spawned<F>(body: F) -> Res<f64>
where
    F: Future<Output = Res<f64>> + Send + 'static,
{
    let rt = tokio_rt()?;
    rt.block_on(async move { tokio::spawn(body).await? })
}

fn ensure(cond: bool, what: &str) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// The sum of `0..n`: what every case's results add up to.
fn expected_sum(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        n * (n - 1) / 2
    }
}

// ---------------------------------------------------------------------------
// (a) task_spawn_await: create a trivial task and await it, N times

fn task_spawn_await_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let l = lp.clone();
    let (sum, elapsed) = lp.run_until_complete(async move {
        let mut sum = 0u64;
        let start = Instant::now();
        for i in 0..n {
            sum += l.create_task(async move { i })?.await?;
        }
        Ok::<_, loop_core::LoopError>((sum, start.elapsed()))
    })??;
    ensure(sum == expected_sum(n), "wrong sum of task outputs")?;
    lp.close()?;
    Ok(ns_per_op(elapsed, n))
}

fn task_spawn_await_tokio(n: u64) -> Res<f64> {
    tokio_local(async move {
        let mut sum = 0u64;
        let start = Instant::now();
        for i in 0..n {
            sum += tokio::task::spawn_local(async move { i }).await?;
        }
        let elapsed = start.elapsed();
        ensure(sum == expected_sum(n), "wrong sum of task outputs")?;
        Ok(ns_per_op(elapsed, n))
    })
}

fn task_spawn_await_tokio_spawn(n: u64) -> Res<f64> {
    tokio_spawned(async move {
        let mut sum = 0u64;
        let start = Instant::now();
        for i in 0..n {
            sum += tokio::spawn(async move { i }).await?;
        }
        let elapsed = start.elapsed();
        ensure(sum == expected_sum(n), "wrong sum of task outputs")?;
        Ok(ns_per_op(elapsed, n))
    })
}

// ---------------------------------------------------------------------------
// (a') task_spawn_batch: create N trivial tasks, then await them in order

fn task_spawn_batch_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let l = lp.clone();
    let (sum, elapsed) = lp.run_until_complete(async move {
        let mut tasks = Vec::with_capacity(n as usize);
        let mut sum = 0u64;
        let start = Instant::now();
        for i in 0..n {
            tasks.push(l.create_task(async move { i })?);
        }
        for t in tasks {
            sum += t.await?;
        }
        Ok::<_, loop_core::LoopError>((sum, start.elapsed()))
    })??;
    ensure(sum == expected_sum(n), "wrong sum of task outputs")?;
    lp.close()?;
    Ok(ns_per_op(elapsed, n))
}

fn task_spawn_batch_tokio(n: u64) -> Res<f64> {
    tokio_local(async move {
        let mut tasks = Vec::with_capacity(n as usize);
        let mut sum = 0u64;
        let start = Instant::now();
        for i in 0..n {
            tasks.push(tokio::task::spawn_local(async move { i }));
        }
        for t in tasks {
            sum += t.await?;
        }
        let elapsed = start.elapsed();
        ensure(sum == expected_sum(n), "wrong sum of task outputs")?;
        Ok(ns_per_op(elapsed, n))
    })
}

fn task_spawn_batch_tokio_spawn(n: u64) -> Res<f64> {
    tokio_spawned(async move {
        let mut tasks = Vec::with_capacity(n as usize);
        let mut sum = 0u64;
        let start = Instant::now();
        for i in 0..n {
            tasks.push(tokio::spawn(async move { i }));
        }
        for t in tasks {
            sum += t.await?;
        }
        let elapsed = start.elapsed();
        ensure(sum == expected_sum(n), "wrong sum of task outputs")?;
        Ok(ns_per_op(elapsed, n))
    })
}

// ---------------------------------------------------------------------------
// (b) future_callbacks: N futures, each resolved, each with one continuation

/// Shared state of the case (b) continuations.
struct Tally<D> {
    count: Cell<u64>,
    sum: Cell<u64>,
    target: u64,
    /// Signalled (with the time) by the continuation that reaches `target`.
    done: D,
}

impl<D> Tally<D> {
    fn new(target: u64, done: D) -> Self {
        Tally {
            count: Cell::new(0),
            sum: Cell::new(0),
            target,
            done,
        }
    }

    /// The continuation's work; true when it was the last one.
    #[inline]
    fn add(&self, value: u64) -> bool {
        self.sum.set(self.sum.get() + value);
        let c = self.count.get() + 1;
        self.count.set(c);
        c == self.target
    }

    fn check(&self) -> Res<()> {
        ensure(
            self.count.get() == self.target,
            "not every continuation ran",
        )?;
        ensure(
            self.sum.get() == expected_sum(self.target),
            "wrong sum of results",
        )
    }
}

fn future_callbacks_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let l = lp.clone();
    let (tally, elapsed) = lp.run_until_complete(async move {
        let tally = Rc::new(Tally::new(n, l.create_future::<Instant>()));
        let start = Instant::now();
        for i in 0..n {
            let fut = l.create_future::<u64>();
            let t = tally.clone();
            fut.add_done_callback(move |f| {
                let value = f.result().unwrap_or(u64::MAX);
                if t.add(value) {
                    let _ = t.done.set_result(Instant::now());
                }
            });
            fut.set_result(i)?;
        }
        let end = tally.done.clone().await?;
        Ok::<_, loop_core::LoopError>((tally, end - start))
    })??;
    tally.check()?;
    lp.close()?;
    Ok(ns_per_op(elapsed, n))
}

fn future_callbacks_tokio(n: u64) -> Res<f64> {
    tokio_local(async move {
        let (done_tx, done_rx) = oneshot::channel::<Instant>();
        let tally = Rc::new(Tally::new(n, Cell::new(Some(done_tx))));
        let start = Instant::now();
        for i in 0..n {
            let (tx, rx) = oneshot::channel::<u64>();
            let t = tally.clone();
            // The "done callback": a local task whose continuation runs once
            // the oneshot is resolved.
            tokio::task::spawn_local(async move {
                let value = rx.await.unwrap_or(u64::MAX);
                if t.add(value) {
                    if let Some(tx) = t.done.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
            });
            tx.send(i).map_err(|_| "oneshot receiver dropped")?;
        }
        let end = done_rx.await?;
        tally.check()?;
        Ok(ns_per_op(end - start, n))
    })
}

// ---------------------------------------------------------------------------
// (c) pingpong: two tasks alternately resolving a future the other awaits

/// What travels in aioloop's pingpong: the future the receiver resolves next.
struct Ball(loop_core::Future<Ball>);

fn pingpong_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let l = lp.clone();
    let elapsed = lp.run_until_complete(async move {
        let start = Instant::now();
        let first = l.create_future::<Ball>();
        let la = l.clone();
        let mut to_b = first.clone();
        let a = l.create_task(async move {
            for _ in 0..n {
                let mine = la.create_future::<Ball>();
                to_b.set_result(Ball(mine.clone()))?;
                to_b = mine.await?.0;
            }
            Ok::<_, loop_core::LoopError>(())
        })?;
        let lb = l.clone();
        let mut mine = first;
        let b = l.create_task(async move {
            for _ in 0..n {
                let Ball(reply) = mine.await?;
                let next = lb.create_future::<Ball>();
                reply.set_result(Ball(next.clone()))?;
                mine = next;
            }
            Ok::<_, loop_core::LoopError>(())
        })?;
        a.await??;
        b.await??;
        Ok::<_, loop_core::LoopError>(start.elapsed())
    })??;
    lp.close()?;
    Ok(ns_per_op(elapsed, n))
}

/// What travels in tokio's pingpong: the sender of the oneshot the receiver
/// awaits next.
struct TokioBall(oneshot::Sender<TokioBall>);

async fn pingpong_a(n: u64, mut to_b: oneshot::Sender<TokioBall>) -> Result<(), String> {
    for _ in 0..n {
        let (tx, rx) = oneshot::channel();
        to_b.send(TokioBall(tx)).map_err(|_| "B is gone")?;
        to_b = rx.await.map_err(|_| "B dropped its reply")?.0;
    }
    Ok(())
}

async fn pingpong_b(n: u64, mut mine: oneshot::Receiver<TokioBall>) -> Result<(), String> {
    for _ in 0..n {
        let TokioBall(reply) = mine.await.map_err(|_| "A dropped its ball")?;
        let (tx, rx) = oneshot::channel();
        reply.send(TokioBall(tx)).map_err(|_| "A is gone")?;
        mine = rx;
    }
    Ok(())
}

fn pingpong_tokio(n: u64) -> Res<f64> {
    tokio_local(async move {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        let a = tokio::task::spawn_local(pingpong_a(n, tx));
        let b = tokio::task::spawn_local(pingpong_b(n, rx));
        a.await??;
        b.await??;
        Ok(ns_per_op(start.elapsed(), n))
    })
}

fn pingpong_tokio_spawn(n: u64) -> Res<f64> {
    tokio_spawned(async move {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        let a = tokio::spawn(pingpong_a(n, tx));
        let b = tokio::spawn(pingpong_b(n, rx));
        a.await??;
        b.await??;
        Ok(ns_per_op(start.elapsed(), n))
    })
}
