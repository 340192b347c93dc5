//! `cargo xtask bench hyper`: hyper 1.x HTTP/1.1 "hello" on aioloop
//! (`aioloop::hyper::serve_http1`) against hyper on a tokio current-thread
//! runtime (hyper-util's `TokioIo` and `TokioTimer`), under one load
//! generator (`bench-hyper client`, see `bench/src/bin/bench_hyper.rs`).
//!
//! Loads: 1 and 50 keep-alive connections, server and client pinned to the
//! same CPU (`taskset`, as the net suite's `_1cpu` cases: on a small VM the
//! cross-CPU wake-ups are bimodal, which makes unpinned medians noisy).
//! Each run starts a fresh server; rounds interleave the systems, rotating
//! their order. Metrics: requests/s and the server process's user+sys CPU
//! time per request (`/proc/<pid>/stat` over the client's window); ratios
//! are aioloop against tokio, > 1 when aioloop is better.

use std::fs;
use std::time::Duration;

use super::super::{fmt_num, fmt_ratio, pin_prefix, print_round, proc, Options, Results};
use super::{command, compare, record, Plan, Proc};
use crate::json::Json;

const SYSTEMS: &[&str] = &["aioloop", "tokio"];

/// (case name, keep-alive connections).
const LOADS: &[(&str, usize)] = &[("hello_x1_1cpu", 1), ("hello_x50_1cpu", 50)];

const DEFAULT_ROUNDS: usize = 5;

const NOTE: &str = "hyper 1.x HTTP/1.1 server answering every GET with 200 `hello` (Full<Bytes>); \
     aioloop: aioloop::hyper::serve_http1 (HyperStream, LoopTimer); tokio: current-thread runtime, \
     accept loop + tokio::spawn(serve_connection(TokioIo, ..)) with hyper-util's TokioTimer; both \
     with hyper's default 30 s header-read timeout (a sleep per request) and TCP_NODELAY. Client: \
     `bench-hyper client` (tokio current-thread), N keep-alive connections each sending a request \
     and reading the whole response before the next. Server and client pinned to one CPU. \
     Server CPU us/req from /proc/<pid>/stat over the window";

/// Runs the hyper suite; `Ok(false)` if some runs failed.
pub(in super::super) fn run(opts: &Options) -> Result<bool, String> {
    let bin = super::super::bench_bin("bench-hyper")?;
    let Some(pin) = pin_prefix() else {
        return Err(
            "the hyper suite pins server and client with `taskset`, which is not on PATH".into(),
        );
    };
    let plan = Plan {
        rounds: opts.rounds_given.unwrap_or(DEFAULT_ROUNDS),
        duration: opts.duration.unwrap_or(if opts.quick {
            super::DURATION_QUICK
        } else {
            super::DURATION
        }),
        warmup: if opts.quick {
            super::WARMUP_QUICK
        } else {
            super::WARMUP
        },
        idle_conns: 0,
        strace_window: 0.0,
        bin,
        script: Default::default(),
        pin: Some(pin.clone()),
        strace: None,
    };
    println!(
        "hyper suite: systems {SYSTEMS:?}; {} round(s); {} s per run after {} s warm-up; \
         server and client under `{}`",
        plan.rounds,
        plan.duration,
        plan.warmup,
        pin.join(" ")
    );
    let scratch = super::super::target_dir().join("bench");
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut results = Results::default();
    let mut failures = Vec::new();
    for round in 1..=plan.rounds {
        print_round(round, plan.rounds, opts.quick);
        let mut order = SYSTEMS.to_vec();
        order.rotate_left((round - 1) % SYSTEMS.len());
        for (case, conns) in LOADS {
            for sys in &order {
                let label = format!("{case} {sys}");
                record(
                    &mut results,
                    &mut failures,
                    round,
                    &label,
                    run_once(&plan, sys, case, *conns),
                );
            }
        }
    }
    println!();
    print_report(&results);
    let (ratios, cases) = ratio_json(&results);
    let extra = vec![
        (
            "systems",
            Json::Arr(SYSTEMS.iter().map(|s| Json::str(*s)).collect()),
        ),
        ("duration_s", Json::Num(plan.duration)),
        ("warmup_s", Json::Num(plan.warmup)),
        ("pinning", Json::str(pin.join(" "))),
        ("note", Json::str(NOTE)),
        ("summary", Json::Arr(ratios)),
        ("cases", Json::Arr(cases)),
    ];
    let report = compare::Report {
        suite: "hyper",
        rounds: plan.rounds,
        quick: opts.quick,
        refs: &["tokio"],
        systems: SYSTEMS,
        higher: higher_is_better,
    };
    let json = compare::report_json(&report, &results, extra, &failures);
    super::super::finish("hyper", json, &failures)
}

fn higher_is_better(case: &str) -> bool {
    case.ends_with("_reqs_per_s")
}

/// One run of `system` under `conns` connections: the client's result lines.
fn run_once(
    plan: &Plan,
    system: &str,
    case: &str,
    conns: usize,
) -> Result<Vec<proc::ResultLine>, String> {
    let mut cmd = command(plan, true, &plan.bin);
    cmd.args(["server", "--system", system, "--addr", "127.0.0.1:0"]);
    let mut server = Proc::start(cmd).map_err(|e| format!("server: {e}"))?;
    let port = server
        .out
        .expect("listening on ", Duration::from_secs(30))
        .map_err(|e| format!("server: {e}"))?;
    let mut cmd = command(plan, true, &plan.bin);
    cmd.arg("client")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--conns", &conns.to_string()])
        .args(["--duration", &plan.duration.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--case", case])
        .args(["--system", system]);
    let timeout = Duration::from_secs_f64(plan.warmup + plan.duration + 60.0);
    let lines = proc::run_bench(cmd, timeout).map_err(|e| format!("client: {e}"));
    server.stop(Duration::from_secs(5));
    lines
}

/// (requests/s ratio, CPU-per-request ratio) of aioloop against tokio for
/// `case`; > 1 means aioloop is better.
fn ratios(results: &Results, case: &str) -> (f64, f64) {
    let reqs = format!("{case}_reqs_per_s");
    let cpu = format!("{case}_cpu_us_per_req");
    (
        compare::better_ratio(results, &reqs, "aioloop", "tokio", higher_is_better),
        compare::better_ratio(results, &cpu, "aioloop", "tokio", higher_is_better),
    )
}

fn print_report(results: &Results) {
    println!("hyper suite (medians):");
    println!("  {NOTE}");
    println!(
        "{:<16} | {:<8} | {:>10} | {:>17}",
        "case", "system", "req/s", "server CPU us/req"
    );
    println!("{}", "-".repeat(60));
    for (case, _) in LOADS {
        for sys in SYSTEMS {
            println!(
                "{:<16} | {:<8} | {:>10} | {:>17}",
                case,
                sys,
                fmt_num(compare::series_median(
                    results,
                    &format!("{case}_reqs_per_s"),
                    sys
                )),
                fmt_num(compare::series_median(
                    results,
                    &format!("{case}_cpu_us_per_req"),
                    sys
                )),
            );
        }
    }
    for (case, _) in LOADS {
        let (t, c) = ratios(results, case);
        println!(
            "  {case}: aioloop vs tokio: req/s x{}  CPU per req x{}  (target >= 1.0; > 1: aioloop better)",
            compare::cell_ratio(t),
            compare::cell_ratio(c)
        );
    }
}

/// The summary rows of the JSON, and the loads.
fn ratio_json(results: &Results) -> (Vec<Json>, Vec<Json>) {
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for (case, conns) in LOADS {
        let (t, c) = ratios(results, case);
        rows.push(Json::obj([
            ("case", Json::str(*case)),
            ("reqs_per_s_ratio", Json::Num(t)),
            ("cpu_per_req_ratio", Json::Num(c)),
            (
                "ratio_text",
                Json::str(format!("{} / {}", fmt_ratio(t), fmt_ratio(c))),
            ),
        ]));
        cases.push(Json::obj([
            ("case", Json::str(*case)),
            ("conns", Json::Num(*conns as f64)),
        ]));
    }
    (rows, cases)
}
