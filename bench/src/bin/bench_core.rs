//! `bench-core`: the core suite of `cargo xtask bench`, one case for one system
//! per process.
//!
//! ```text
//! bench-core --system <aioloop|aioloop-epoll|aioloop-polling|aioloop-uring|tokio|tokio-spawn>
//!            --case <call_soon|chain|timer_cancel|cancel_iteration|timer_churn|timers|wake>
//!            [--quick] [--n N]
//! ```
//!
//! Cases (each system does its closest equivalent; only the work itself is
//! timed, never runtime construction):
//! - `call_soon`: schedule N callbacks that bump a counter, then run them all.
//! - `chain`: N callbacks, each scheduling the next.
//! - `timer_cancel`: N timers 1-10 s out, all cancelled, then one iteration.
//! - `cancel_iteration`: N timers 1-10 s out, all cancelled and their handles
//!   dropped (untimed); then the loop's next iterations are timed one by one
//!   until the timer structure is empty (at least [`MIN_TIMED_ITERATIONS`]).
//!   Reports the worst iteration in wall time and in the thread's CPU time
//!   (ms; the CPU time leaves out preemption by other processes, which on a
//!   shared machine dominates the wall-time worst case), and the time until
//!   every cancelled entry was reclaimed (ms). tokio: N `sleep`s created,
//!   polled once and dropped, then one timed `yield_now` (the worst
//!   iteration), and drop + `yield_now` as the reclaim time.
//! - `timer_churn`: N (10,000,000) schedule + cancel pairs, 1-10 s out, a
//!   thousand per loop iteration (tokio: `sleep` created, polled once,
//!   dropped); ns per pair, and for aioloop the largest timer heap seen
//!   (entries: the memory bound under churn).
//! - `timers`: N timers 0-200 ms out; extra wall time and worst lateness.
//! - `wake`: N wake-ups of a sleeping loop from another thread.
//!
//! `tokio` is a current-thread runtime with `spawn_local` in a `LocalSet`
//! (callbacks need not be `Send`, like aioloop's); `tokio-spawn` is the same
//! runtime with plain `tokio::spawn`.

use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use aioloop_bench::{ms, ns_per_op, report, Args, XorShift, SEED};
use loop_core::{Backend, EventLoop};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::LocalSet;

type Res<T> = Result<T, Box<dyn Error>>;

/// Full-size operation counts (`--quick` divides them by 10).
const N_CALL_SOON: u64 = 1_000_000;
const N_CHAIN: u64 = 1_000_000;
const N_TIMER_CANCEL: u64 = 1_000_000;
const N_CANCEL_ITERATION: u64 = 1_000_000;
const N_TIMER_CHURN: u64 = 10_000_000;
/// `timer_churn` pairs per loop iteration.
const CHURN_BATCH: u64 = 1000;
const N_TIMERS: u64 = 200_000;
const N_WAKE: u64 = 10_000;

/// Delay ranges.
const CANCEL_MIN: Duration = Duration::from_secs(1);
const CANCEL_MAX: Duration = Duration::from_secs(10);
const TIMERS_SPAN: Duration = Duration::from_millis(200);

/// `cancel_iteration` times at least this many loop iterations.
const MIN_TIMED_ITERATIONS: u32 = 4;

/// The system under test.
#[derive(Debug, Clone, Copy)]
enum System {
    /// aioloop; `None` = `EventLoop::new()` (default backend, honours AIOLOOP_BACKEND).
    Aioloop(Option<Backend>),
    /// tokio current-thread runtime, `spawn_local` in a `LocalSet`.
    Tokio,
    /// tokio current-thread runtime, plain `tokio::spawn`.
    TokioSpawn,
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-core: {e}");
            return ExitCode::from(2);
        }
    };
    let system = match args.system.as_str() {
        "aioloop" => System::Aioloop(None),
        "aioloop-epoll" => System::Aioloop(Some(Backend::Epoll)),
        "aioloop-polling" => System::Aioloop(Some(Backend::Polling)),
        "aioloop-uring" => System::Aioloop(Some(Backend::Uring)),
        "tokio" => System::Tokio,
        "tokio-spawn" => System::TokioSpawn,
        other => {
            eprintln!("bench-core: unknown system `{other}`");
            return ExitCode::from(2);
        }
    };
    match run(&args, system) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-core: {} / {} failed: {e}", args.case, args.system);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, system: System) -> Res<()> {
    let name = args.system.as_str();
    match args.case.as_str() {
        "call_soon" => {
            let n = args.count(N_CALL_SOON);
            let ns = match system {
                System::Aioloop(b) => call_soon_aioloop(&make_loop(b)?, n)?,
                System::Tokio => call_soon_tokio(n)?,
                System::TokioSpawn => call_soon_tokio_spawn(n)?,
            };
            report("call_soon", name, ns, "ns/op", n);
        }
        "chain" => {
            let n = args.count(N_CHAIN);
            let ns = match system {
                System::Aioloop(b) => chain_aioloop(&make_loop(b)?, n)?,
                System::Tokio => chain_tokio(n)?,
                System::TokioSpawn => chain_tokio_spawn(n)?,
            };
            report("chain", name, ns, "ns/op", n);
        }
        "timer_cancel" => {
            let n = args.count(N_TIMER_CANCEL);
            let ns = match system {
                System::Aioloop(b) => timer_cancel_aioloop(&make_loop(b)?, n)?,
                System::Tokio | System::TokioSpawn => timer_cancel_tokio(n)?,
            };
            report("timer_cancel", name, ns, "ns/op", n);
        }
        "cancel_iteration" => {
            let n = args.count(N_CANCEL_ITERATION);
            let c = match system {
                System::Aioloop(b) => cancel_iteration_aioloop(&make_loop(b)?, n)?,
                System::Tokio | System::TokioSpawn => cancel_iteration_tokio(n)?,
            };
            report("iteration_after_cancels", name, ms(c.worst), "ms", n);
            report(
                "iteration_after_cancels_cpu",
                name,
                ms(c.worst_cpu),
                "ms",
                n,
            );
            report("cancel_reclaim", name, ms(c.reclaim), "ms", n);
        }
        "timer_churn" => {
            let n = args.count(N_TIMER_CHURN);
            let ns = match system {
                System::Aioloop(b) => {
                    let (ns, max_heap) = timer_churn_aioloop(&make_loop(b)?, n)?;
                    report("timer_churn_max_heap", name, max_heap as f64, "entries", n);
                    ns
                }
                System::Tokio | System::TokioSpawn => timer_churn_tokio(n)?,
            };
            report("timer_churn", name, ns, "ns/op", n);
        }
        "timers" => {
            let n = args.count(N_TIMERS);
            let t = match system {
                System::Aioloop(b) => timers_aioloop(&make_loop(b)?, n)?,
                System::Tokio => timers_tokio(n)?,
                System::TokioSpawn => return Err("timers has no tokio-spawn variant".into()),
            };
            if t.early > 0 {
                eprintln!("bench-core: WARNING: {} timers fired early", t.early);
            }
            let extra = ms(t.wall) - ms(TIMERS_SPAN);
            report("timers_extra_wall", name, extra, "ms", n);
            report("timers_worst_late", name, ms(t.worst_late), "ms", n);
        }
        "wake" => {
            let n = args.count(N_WAKE);
            let ns = match system {
                System::Aioloop(b) => wake_aioloop(&make_loop(b)?, n)?,
                System::Tokio | System::TokioSpawn => wake_tokio(n)?,
            };
            report("wake", name, ns, "ns/op", n);
        }
        other => return Err(format!("unknown case `{other}`").into()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Construction

fn make_loop(backend: Option<Backend>) -> Res<EventLoop> {
    aioloop_bench::aioloop_loop(backend)
}

fn tokio_rt() -> Res<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn ensure(cond: bool, what: &str) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(what.into())
    }
}

// ---------------------------------------------------------------------------
// (a) call_soon: N independent callbacks

fn call_soon_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let counter = Rc::new(Cell::new(0u64));
    let end = Rc::new(Cell::new(None::<Instant>));
    let start = Instant::now();
    for _ in 0..n {
        let c = counter.clone();
        lp.call_soon(move || c.set(c.get() + 1))?;
    }
    let (l, e) = (lp.clone(), end.clone());
    lp.call_soon(move || {
        e.set(Some(Instant::now()));
        l.stop();
    })?;
    lp.run_forever()?;
    let end = end.get().ok_or("the final callback did not run")?;
    ensure(counter.get() == n, "not every callback ran")?;
    lp.close()?;
    Ok(ns_per_op(end - start, n))
}

fn call_soon_tokio(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    LocalSet::new().block_on(&rt, async move {
        let counter = Rc::new(Cell::new(0u64));
        let (tx, rx) = oneshot::channel::<Instant>();
        let start = Instant::now();
        for _ in 0..n {
            let c = counter.clone();
            tokio::task::spawn_local(async move { c.set(c.get() + 1) });
        }
        // The local queue is FIFO: this task runs after all the others.
        tokio::task::spawn_local(async move {
            let _ = tx.send(Instant::now());
        });
        let end = rx.await?;
        ensure(counter.get() == n, "not every task ran before the last one")?;
        Ok(ns_per_op(end - start, n))
    })
}

thread_local! {
    /// The counter of the `tokio-spawn` variants (their tasks must be `Send`).
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

fn call_soon_tokio_spawn(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    rt.block_on(async move {
        let (tx, rx) = oneshot::channel::<Instant>();
        let start = Instant::now();
        for _ in 0..n {
            tokio::spawn(async move { COUNTER.with(|c| c.set(c.get() + 1)) });
        }
        tokio::spawn(async move {
            let _ = tx.send(Instant::now());
        });
        let end = rx.await?;
        ensure(
            COUNTER.with(|c| c.get()) == n,
            "not every task ran before the last one",
        )?;
        Ok(ns_per_op(end - start, n))
    })
}

// ---------------------------------------------------------------------------
// (b) chain: each callback schedules the next

fn chain_link(lp: EventLoop, left: u64, end: Rc<Cell<Option<Instant>>>) {
    if left <= 1 {
        end.set(Some(Instant::now()));
        lp.stop();
        return;
    }
    let next = lp.clone();
    if let Err(e) = lp.call_soon(move || chain_link(next, left - 1, end)) {
        eprintln!("bench-core: call_soon failed inside the chain: {e}");
        lp.stop();
    }
}

fn chain_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let end = Rc::new(Cell::new(None::<Instant>));
    let (l, e) = (lp.clone(), end.clone());
    let start = Instant::now();
    lp.call_soon(move || chain_link(l, n, e))?;
    lp.run_forever()?;
    let end = end.get().ok_or("the chain did not finish")?;
    lp.close()?;
    Ok(ns_per_op(end - start, n))
}

fn chain_local(left: u64, done: oneshot::Sender<Instant>) {
    tokio::task::spawn_local(async move {
        if left <= 1 {
            let _ = done.send(Instant::now());
        } else {
            chain_local(left - 1, done);
        }
    });
}

fn chain_tokio(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    LocalSet::new().block_on(&rt, async move {
        let (tx, rx) = oneshot::channel::<Instant>();
        let start = Instant::now();
        chain_local(n, tx);
        let end = rx.await?;
        Ok(ns_per_op(end - start, n))
    })
}

fn chain_spawn(left: u64, done: oneshot::Sender<Instant>) {
    tokio::spawn(async move {
        if left <= 1 {
            let _ = done.send(Instant::now());
        } else {
            chain_spawn(left - 1, done);
        }
    });
}

fn chain_tokio_spawn(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    rt.block_on(async move {
        let (tx, rx) = oneshot::channel::<Instant>();
        let start = Instant::now();
        chain_spawn(n, tx);
        let end = rx.await?;
        Ok(ns_per_op(end - start, n))
    })
}

// ---------------------------------------------------------------------------
// (c) timer_cancel: N far timers, all cancelled, then one loop iteration

fn timer_cancel_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let fired = Rc::new(Cell::new(0u64));
    let mut rng = XorShift::new(SEED);
    let mut handles = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let d = rng.duration_between(CANCEL_MIN, CANCEL_MAX);
        let f = fired.clone();
        handles.push(lp.call_later(d, move || f.set(f.get() + 1))?);
    }
    for h in &handles {
        h.cancel();
    }
    let l = lp.clone();
    lp.call_soon(move || l.stop())?;
    lp.run_forever()?;
    drop(handles);
    let elapsed = start.elapsed();
    ensure(fired.get() == 0, "a cancelled timer fired")?;
    lp.close()?;
    Ok(ns_per_op(elapsed, n))
}

fn timer_cancel_tokio(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    // `unconstrained`: otherwise the coop budget makes `Sleep::poll` return
    // Pending without registering after 128 polls in one task poll.
    rt.block_on(tokio::task::unconstrained(async move {
        let mut rng = XorShift::new(SEED);
        let mut sleeps: Vec<Pin<Box<tokio::time::Sleep>>> = Vec::with_capacity(n as usize);
        let mut fired = 0u64;
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            for _ in 0..n {
                let d = rng.duration_between(CANCEL_MIN, CANCEL_MAX);
                let mut s = Box::pin(tokio::time::sleep(d));
                // The first poll registers the timer in the wheel.
                if s.as_mut().poll(cx).is_ready() {
                    fired += 1;
                }
                sleeps.push(s);
            }
            Poll::Ready(())
        })
        .await;
        drop(sleeps); // dropping a registered Sleep cancels it
        tokio::task::yield_now().await;
        let elapsed = start.elapsed();
        ensure(fired == 0, "a far timer completed at once")?;
        Ok(ns_per_op(elapsed, n))
    }))
}

// ---------------------------------------------------------------------------
// (c2) cancel_iteration: the loop iterations right after N cancellations

/// What `cancel_iteration` measures.
struct CancelIteration {
    /// The longest loop iteration after the cancellations.
    worst: Duration,
    /// The most CPU time (of this thread) one iteration took.
    worst_cpu: Duration,
    /// From the first iteration to the one that left the timer structure
    /// empty (tokio: dropping the sleeps plus the `yield_now`).
    reclaim: Duration,
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// What `iteration_probe` carries from one iteration to the next.
#[derive(Clone, Copy)]
struct ProbeState {
    start: Instant,
    prev: Instant,
    prev_cpu: Duration,
    count: u32,
    worst: Duration,
    worst_cpu: Duration,
}

/// One loop iteration's callback of `cancel_iteration`: records the time
/// since the previous one and schedules itself for the next iteration until
/// the timer structure is empty.
fn iteration_probe(lp: EventLoop, st: ProbeState, out: Rc<Cell<Option<CancelIteration>>>) {
    let (now, cpu) = (Instant::now(), thread_cpu());
    let st = ProbeState {
        worst: st.worst.max(now - st.prev),
        worst_cpu: st.worst_cpu.max(cpu.saturating_sub(st.prev_cpu)),
        prev: now,
        prev_cpu: cpu,
        count: st.count + 1,
        ..st
    };
    if lp.timer_heap_len() == 0 && st.count >= MIN_TIMED_ITERATIONS {
        out.set(Some(CancelIteration {
            worst: st.worst,
            worst_cpu: st.worst_cpu,
            reclaim: now - st.start,
        }));
        lp.stop();
        return;
    }
    let l = lp.clone();
    if let Err(e) = lp.call_soon(move || iteration_probe(l, st, out)) {
        eprintln!("bench-core: call_soon failed in cancel_iteration: {e}");
        lp.stop();
    }
}

fn cancel_iteration_aioloop(lp: &EventLoop, n: u64) -> Res<CancelIteration> {
    let fired = Rc::new(Cell::new(0u64));
    let mut rng = XorShift::new(SEED);
    let mut handles = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let d = rng.duration_between(CANCEL_MIN, CANCEL_MAX);
        let f = fired.clone();
        handles.push(lp.call_later(d, move || f.set(f.get() + 1))?);
    }
    for h in &handles {
        h.cancel();
    }
    // A server drops the handle with the connection it belonged to: the
    // loop then frees the cells when it reclaims the entries.
    drop(handles);
    let out = Rc::new(Cell::new(None));
    let (l, o) = (lp.clone(), out.clone());
    let start = Instant::now();
    let st = ProbeState {
        start,
        prev: start,
        prev_cpu: thread_cpu(),
        count: 0,
        worst: Duration::ZERO,
        worst_cpu: Duration::ZERO,
    };
    lp.call_soon(move || iteration_probe(l, st, o))?;
    lp.run_forever()?;
    ensure(fired.get() == 0, "a cancelled timer fired")?;
    let c = out.take().ok_or("the probe did not finish")?;
    lp.close()?;
    Ok(c)
}

fn cancel_iteration_tokio(n: u64) -> Res<CancelIteration> {
    let rt = tokio_rt()?;
    rt.block_on(tokio::task::unconstrained(async move {
        let mut rng = XorShift::new(SEED);
        let mut sleeps: Vec<Pin<Box<tokio::time::Sleep>>> = Vec::with_capacity(n as usize);
        let mut fired = 0u64;
        std::future::poll_fn(|cx| {
            for _ in 0..n {
                let d = rng.duration_between(CANCEL_MIN, CANCEL_MAX);
                let mut s = Box::pin(tokio::time::sleep(d));
                if s.as_mut().poll(cx).is_ready() {
                    fired += 1;
                }
                sleeps.push(s);
            }
            Poll::Ready(())
        })
        .await;
        ensure(fired == 0, "a far timer completed at once")?;
        // Dropping a registered Sleep unlinks it from the wheel: tokio
        // reclaims at cancel time, so its iteration pays nothing.
        let start = Instant::now();
        drop(sleeps);
        let (iter_start, cpu_start) = (Instant::now(), thread_cpu());
        tokio::task::yield_now().await;
        let (end, cpu_end) = (Instant::now(), thread_cpu());
        Ok(CancelIteration {
            worst: end - iter_start,
            worst_cpu: cpu_end.saturating_sub(cpu_start),
            reclaim: end - start,
        })
    }))
}

// ---------------------------------------------------------------------------
// (c3) timer_churn: schedule + cancel pairs, a batch per loop iteration

/// State of the `timer_churn` batches.
struct Churn {
    left: Cell<u64>,
    max_heap: Cell<usize>,
    rng: Cell<XorShift>,
    fired: Cell<u64>,
}

fn churn_batch(lp: &EventLoop, st: &Rc<Churn>) {
    let mut rng = st.rng.replace(XorShift::new(SEED));
    let batch = st.left.get().min(CHURN_BATCH);
    for _ in 0..batch {
        let d = rng.duration_between(CANCEL_MIN, CANCEL_MAX);
        let s = st.clone();
        match lp.call_later(d, move || s.fired.set(s.fired.get() + 1)) {
            Ok(h) => h.cancel(),
            Err(e) => {
                eprintln!("bench-core: call_later failed in timer_churn: {e}");
                lp.stop();
                return;
            }
        }
    }
    st.rng.set(rng);
    st.max_heap.set(st.max_heap.get().max(lp.timer_heap_len()));
    st.left.set(st.left.get() - batch);
    if st.left.get() == 0 {
        lp.stop();
        return;
    }
    let (l, s) = (lp.clone(), st.clone());
    if let Err(e) = lp.call_soon(move || churn_batch(&l, &s)) {
        eprintln!("bench-core: call_soon failed in timer_churn: {e}");
        lp.stop();
    }
}

fn timer_churn_aioloop(lp: &EventLoop, n: u64) -> Res<(f64, usize)> {
    let st = Rc::new(Churn {
        left: Cell::new(n),
        max_heap: Cell::new(0),
        rng: Cell::new(XorShift::new(SEED)),
        fired: Cell::new(0),
    });
    let (l, s) = (lp.clone(), st.clone());
    let start = Instant::now();
    lp.call_soon(move || churn_batch(&l, &s))?;
    lp.run_forever()?;
    let elapsed = start.elapsed();
    ensure(st.left.get() == 0, "the churn did not finish")?;
    ensure(st.fired.get() == 0, "a cancelled timer fired")?;
    lp.close()?;
    Ok((ns_per_op(elapsed, n), st.max_heap.get()))
}

fn timer_churn_tokio(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    rt.block_on(tokio::task::unconstrained(async move {
        let mut rng = XorShift::new(SEED);
        let mut fired = 0u64;
        let mut left = n;
        let start = Instant::now();
        while left > 0 {
            let batch = left.min(CHURN_BATCH);
            std::future::poll_fn(|cx| {
                for _ in 0..batch {
                    let d = rng.duration_between(CANCEL_MIN, CANCEL_MAX);
                    let mut s = Box::pin(tokio::time::sleep(d));
                    if s.as_mut().poll(cx).is_ready() {
                        fired += 1;
                    }
                }
                Poll::Ready(())
            })
            .await;
            left -= batch;
            tokio::task::yield_now().await;
        }
        let elapsed = start.elapsed();
        ensure(fired == 0, "a far timer completed at once")?;
        Ok(ns_per_op(elapsed, n))
    }))
}

// ---------------------------------------------------------------------------
// (d) timers: N timers over 200 ms, lateness

/// What case (d) measures.
struct TimersOutcome {
    /// From the first scheduling to the last fire.
    wall: Duration,
    /// The largest `fire time - deadline`.
    worst_late: Duration,
    /// Timers that fired before their deadline (must be 0).
    early: u64,
}

/// Shared state of the case (d) callbacks.
struct TimersState<L> {
    remaining: Cell<u64>,
    worst_late: Cell<Duration>,
    early: Cell<u64>,
    last: Cell<Option<Instant>>,
    /// What to do after the last timer: stop the loop / signal the runtime.
    on_done: L,
}

impl<L> TimersState<L> {
    fn new(n: u64, on_done: L) -> Self {
        TimersState {
            remaining: Cell::new(n),
            worst_late: Cell::new(Duration::ZERO),
            early: Cell::new(0),
            last: Cell::new(None),
            on_done,
        }
    }

    /// Records one fire; true if it was the last one.
    #[inline]
    fn fired(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        match now.checked_duration_since(deadline) {
            Some(late) if late > self.worst_late.get() => self.worst_late.set(late),
            Some(_) => {}
            None => self.early.set(self.early.get() + 1),
        }
        let left = self.remaining.get() - 1;
        self.remaining.set(left);
        if left == 0 {
            self.last.set(Some(now));
        }
        left == 0
    }

    fn outcome(&self, start: Instant) -> Res<TimersOutcome> {
        let last = self.last.get().ok_or("not every timer fired")?;
        Ok(TimersOutcome {
            wall: last - start,
            worst_late: self.worst_late.get(),
            early: self.early.get(),
        })
    }
}

fn timers_aioloop(lp: &EventLoop, n: u64) -> Res<TimersOutcome> {
    if n == 0 {
        return Err("timers needs n > 0".into());
    }
    let st = Rc::new(TimersState::new(n, lp.clone()));
    let mut rng = XorShift::new(SEED);
    let start = Instant::now();
    for _ in 0..n {
        let deadline = lp.time() + rng.duration_between(Duration::ZERO, TIMERS_SPAN);
        let s = st.clone();
        lp.call_at(deadline, move || {
            if s.fired(deadline) {
                s.on_done.stop();
            }
        })?;
    }
    lp.run_forever()?;
    let out = st.outcome(start)?;
    lp.close()?;
    Ok(out)
}

fn timers_tokio(n: u64) -> Res<TimersOutcome> {
    if n == 0 {
        return Err("timers needs n > 0".into());
    }
    let rt = tokio_rt()?;
    LocalSet::new().block_on(&rt, async move {
        let (tx, rx) = oneshot::channel::<()>();
        let st = Rc::new(TimersState::new(n, Cell::new(Some(tx))));
        let mut rng = XorShift::new(SEED);
        let start = Instant::now();
        for _ in 0..n {
            let deadline =
                tokio::time::Instant::now() + rng.duration_between(Duration::ZERO, TIMERS_SPAN);
            let s = st.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until(deadline).await;
                if s.fired(deadline.into_std()) {
                    if let Some(tx) = s.on_done.take() {
                        let _ = tx.send(());
                    }
                }
            });
        }
        rx.await?;
        st.outcome(start)
    })
}

// ---------------------------------------------------------------------------
// (e) wake: N wake-ups of a sleeping loop from another thread

/// The helper thread's side of case (e): after `go`, send one wake-up through
/// `wake`, wait for its ack, repeat N times; returns the elapsed time. `wake`
/// gets the ack sender to move into the callback it schedules.
fn wake_helper(
    n: u64,
    go: mpsc::Receiver<()>,
    mut wake: impl FnMut(mpsc::Sender<()>) -> Res<()>,
) -> Res<Duration> {
    go.recv()?;
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let start = Instant::now();
    for _ in 0..n {
        wake(ack_tx.clone())?;
        ack_rx.recv()?;
    }
    Ok(start.elapsed())
}

fn wake_aioloop(lp: &EventLoop, n: u64) -> Res<f64> {
    let handle = lp.handle();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    // Sent once the loop runs, so that the first wake finds it running.
    lp.call_soon(move || {
        let _ = go_tx.send(());
    })?;
    let helper = thread::spawn(move || -> Result<Duration, String> {
        let result = wake_helper(n, go_rx, |ack| {
            handle.call_soon_threadsafe(move || {
                let _ = ack.send(());
            })?;
            Ok(())
        })
        .map_err(|e| e.to_string());
        // One more wake-up stops the loop (n = 0 is the baseline of the
        // strace runs: everything but the N wake-ups).
        if let Err(e) = handle.stop() {
            return Err(format!("LoopHandle::stop failed: {e}"));
        }
        result
    });
    lp.run_forever()?;
    let elapsed = helper.join().map_err(|_| "the helper thread panicked")??;
    lp.close()?;
    Ok(ns_per_op(elapsed, n))
}

fn wake_tokio(n: u64) -> Res<f64> {
    let rt = tokio_rt()?;
    let handle = rt.handle().clone();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let helper = thread::spawn(move || -> Result<Duration, String> {
        let result = wake_helper(n, go_rx, |ack| {
            // A task spawned from another thread: the injection queue plus an
            // unpark of the runtime's driver, like call_soon_threadsafe.
            handle.spawn(async move {
                let _ = ack.send(());
            });
            Ok(())
        })
        .map_err(|e| e.to_string());
        let _ = done_tx.send(());
        result
    });
    rt.block_on(async move {
        let _ = go_tx.send(());
        let _ = done_rx.await;
    });
    let elapsed = helper.join().map_err(|_| "the helper thread panicked")??;
    Ok(ns_per_op(elapsed, n))
}
