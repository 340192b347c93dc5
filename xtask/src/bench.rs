//! `cargo xtask bench [SUITE]`: side-by-side benchmarks of aioloop and tokio.
//!
//! Each benchmark case runs in its own process (one case, one system per
//! invocation of the `aioloop-bench` binaries), rounds interleave the systems,
//! and the report gives medians plus tokio/aioloop ratios. Results are written
//! to `target/bench/<suite>.json`.
//!
//! Suites: `core` (callbacks, timers, cross-thread wake-ups; `bench-core`),
//! `futures` (tasks, futures and their continuations; `bench-futures`),
//! `net` (echo servers of aioloop, tokio, asyncio and uvloop under one load
//! generator; `bench-net`, see `bench/net.rs`) and `process` (spawning and
//! reaping children, a pipe through `cat`: aioloop, tokio, asyncio and
//! uvloop; `bench-process`, see `bench/process.rs`) and `hyper` (hyper 1.x
//! HTTP/1.1 on aioloop against hyper on tokio; `bench-hyper`, see
//! `bench/net_hyper.rs`).

mod compare;
mod net;
mod proc;
mod process;
mod strace;

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::json::Json;

/// Every suite, in the order `cargo xtask bench` runs them.
const SUITES: &[&str] = &["core", "futures", "net", "process", "hyper"];

/// Kill a benchmark process that runs longer than this.
const TIMEOUT: Duration = Duration::from_secs(120);

/// One case of a suite and the systems it runs on.
struct Case {
    /// The `--case` argument of the suite's binary.
    name: &'static str,
    /// The `--system` arguments, in the order each round runs them.
    systems: &'static [&'static str],
    /// Run under `taskset` on one CPU, reporting the case as `<name>_1cpu`:
    /// cross-CPU wake-ups on small VMs are bimodal (a 6x spread between
    /// processes), which makes the unpinned medians noisy.
    pinned: bool,
}

/// The core suite: callbacks, timers and cross-thread wake-ups.
const CORE: &[Case] = &[
    Case {
        name: "call_soon",
        systems: &["aioloop", "tokio", "tokio-spawn"],
        pinned: false,
    },
    Case {
        name: "chain",
        systems: &["aioloop", "tokio", "tokio-spawn"],
        pinned: false,
    },
    Case {
        name: "timer_cancel",
        systems: &["aioloop", "tokio"],
        pinned: false,
    },
    Case {
        name: "cancel_iteration",
        systems: &["aioloop", "tokio"],
        pinned: false,
    },
    Case {
        name: "timer_churn",
        systems: &["aioloop", "tokio"],
        pinned: false,
    },
    Case {
        name: "timers",
        systems: &["aioloop", "aioloop-uring", "tokio"],
        pinned: false,
    },
    Case {
        name: "wake",
        systems: &["aioloop-epoll", "aioloop-polling", "aioloop-uring", "tokio"],
        pinned: false,
    },
    Case {
        name: "wake",
        systems: &["aioloop-epoll", "aioloop-polling", "aioloop-uring", "tokio"],
        pinned: true,
    },
];

/// The futures suite: tasks, futures and their continuations.
const FUTURES: &[Case] = &[
    Case {
        name: "task_spawn_await",
        systems: &["aioloop", "tokio", "tokio-spawn"],
        pinned: false,
    },
    Case {
        name: "task_spawn_batch",
        systems: &["aioloop", "tokio", "tokio-spawn"],
        pinned: false,
    },
    Case {
        name: "future_callbacks",
        systems: &["aioloop", "tokio"],
        pinned: false,
    },
    Case {
        name: "pingpong",
        systems: &["aioloop", "tokio", "tokio-spawn"],
        pinned: false,
    },
];

/// What the futures suite's tokio systems do in place of aioloop's API; the
/// report prints these lines and the JSON keeps them as `notes`.
const FUTURES_NOTES: &[&str] = &[
    "tokio = current-thread runtime + LocalSet (spawn_local: tasks need not be Send, like aioloop's); \
     tokio-spawn = the same runtime with plain tokio::spawn; each tokio body runs in a spawned \
     task, as run_until_complete runs aioloop's in a task (tokio's block_on future would poll \
     the I/O driver after each of its awaits)",
    "task_spawn_await: create_task(async { i }) then .await it, N times | tokio: spawn_local(..).await \
     on the JoinHandle",
    "task_spawn_batch: create N tasks, then .await them in order | tokio: N spawn_local JoinHandles, \
     awaited in order",
    "future_callbacks: create_future + add_done_callback (reads the result, bumps a counter) + \
     set_result, N times, run until the counter is N | tokio has no done callbacks: a \
     tokio::sync::oneshot per item whose receiver a spawn_local'd task awaits and then does the \
     callback's work (no tokio-spawn variant)",
    "pingpong (ns per round trip): tasks A and B; each round A resolves a new Future that B awaits \
     and B resolves a new Future that A awaits | tokio: a new tokio::sync::oneshot per hop (chosen \
     over Notify as the closest to a one-shot Future), the sender travelling in the message",
];

/// The suffix of the result case names of pinned cases.
const PINNED_SUFFIX: &str = "_1cpu";

/// The case whose processes are also run under `strace -f -c`.
const STRACE_CASE: &str = "wake";

/// Command-line options of `bench`.
struct Options {
    suites: Vec<&'static str>,
    /// Rounds of the core and futures suites.
    rounds: usize,
    /// `--rounds` or `AIOLOOP_BENCH_ROUNDS`, if given (the net suite has its own default).
    rounds_given: Option<usize>,
    quick: bool,
    strace: bool,
    /// `--duration SECS`: seconds per load run of the net suite.
    duration: Option<f64>,
    /// `--no-python` turns off the asyncio and uvloop rows of the net and process suites.
    python: bool,
}

/// Entry point of `cargo xtask bench`.
pub fn run(args: &[String]) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(msg) => return crate::usage_error(&msg),
    };
    // One build for every suite: the package holds all the suite binaries.
    if let Err(msg) = build_bench() {
        eprintln!("xtask bench: {msg}");
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    for suite in &opts.suites {
        let result = match *suite {
            "core" => run_core(&opts),
            "futures" => run_futures(&opts),
            "net" => net::run(&opts),
            "process" => process::run(&opts),
            "hyper" => net::hyper::run(&opts),
            _ => unreachable!("suite names are validated by parse_args"),
        };
        match result {
            Ok(true) => {}
            Ok(false) => ok = false,
            Err(msg) => {
                eprintln!("xtask bench {suite}: {msg}");
                return ExitCode::FAILURE;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        suites: Vec::new(),
        rounds: 5,
        rounds_given: None,
        quick: false,
        strace: true,
        duration: None,
        python: true,
    };
    if let Ok(v) = env::var("AIOLOOP_BENCH_ROUNDS") {
        opts.rounds_given = Some(parse_rounds(&v)?);
    }
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--no-strace" => opts.strace = false,
            "--no-python" => opts.python = false,
            "--rounds" => {
                let v = it.next().ok_or("--rounds needs a value")?;
                opts.rounds_given = Some(parse_rounds(v)?);
            }
            s if s.starts_with("--rounds=") => opts.rounds_given = Some(parse_rounds(&s[9..])?),
            "--duration" => {
                let v = it.next().ok_or("--duration needs a value")?;
                opts.duration = Some(parse_duration(v)?);
            }
            s if s.starts_with("--duration=") => opts.duration = Some(parse_duration(&s[11..])?),
            "all" => opts.suites.extend_from_slice(SUITES),
            s if s.starts_with('-') => return Err(format!("unknown bench option `{s}`")),
            s => match SUITES.iter().find(|name| **name == s) {
                Some(name) => opts.suites.push(name),
                None => return Err(format!("unknown bench suite `{s}` (suites: {SUITES:?})")),
            },
        }
    }
    if opts.suites.is_empty() {
        opts.suites.extend_from_slice(SUITES);
    }
    opts.suites.dedup();
    if let Some(n) = opts.rounds_given {
        opts.rounds = n;
    }
    Ok(opts)
}

fn parse_duration(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!("bad duration `{v}` (want positive seconds)")),
    }
}

fn parse_rounds(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("bad round count `{v}` (want a positive integer)")),
    }
}

/// All runs of one (result case, system) pair.
struct Series {
    case: String,
    system: String,
    unit: String,
    runs: Vec<f64>,
}

/// Series in first-seen order.
#[derive(Default)]
struct Results {
    series: Vec<Series>,
}

impl Results {
    fn push(&mut self, case: &str, system: &str, unit: &str, value: f64) {
        if let Some(s) = self
            .series
            .iter_mut()
            .find(|s| s.case == case && s.system == system)
        {
            s.runs.push(value);
            return;
        }
        self.series.push(Series {
            case: case.to_string(),
            system: system.to_string(),
            unit: unit.to_string(),
            runs: vec![value],
        });
    }
}

/// The target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => crate::workspace_root().join(dir),
        None => crate::workspace_root().join("target"),
    }
}

/// Builds the `aioloop-bench` binaries (release profile).
fn build_bench() -> Result<(), String> {
    println!("==> cargo build --release -p aioloop-bench");
    let status = crate::cargo()
        .args(["build", "--release", "-p", "aioloop-bench"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building aioloop-bench failed".into());
    }
    Ok(())
}

/// The path of a built benchmark binary.
fn bench_bin(name: &str) -> Result<PathBuf, String> {
    let bin = target_dir().join("release").join(name);
    if !bin.exists() {
        return Err(format!("{} was not built", bin.display()));
    }
    Ok(bin)
}

/// Runs every system of `case` once (one process each), printing and
/// recording the result lines; a failed run is printed and added to `failures`.
fn run_case(
    bin: &Path,
    case: &Case,
    pin: Option<&[String]>,
    opts: &Options,
    round: usize,
    results: &mut Results,
    failures: &mut Vec<String>,
) {
    let suffix = if case.pinned { PINNED_SUFFIX } else { "" };
    let cmd_for = |system: &str| -> Option<Command> {
        let mut cmd = if case.pinned {
            let pin = pin?;
            let mut c = Command::new(&pin[0]);
            c.args(&pin[1..]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(["--system", system, "--case", case.name]);
        if opts.quick {
            cmd.arg("--quick");
        }
        Some(cmd)
    };
    for system in case.systems {
        let Some(cmd) = cmd_for(system) else { continue };
        let label = format!("{}{suffix} {system}", case.name);
        match proc::run_bench(cmd, TIMEOUT) {
            Ok(mut lines) => {
                for r in &mut lines {
                    r.case.push_str(suffix);
                    println!(
                        "    {:<28} {:>12} {}",
                        format!("{} {}", r.case, r.system),
                        fmt_num(r.value),
                        r.unit
                    );
                    results.push(&r.case, &r.system, &r.unit, r.value);
                }
            }
            Err(e) => {
                println!("    {label:<28} FAILED: {e}");
                failures.push(format!("round {round}: {label}: {e}"));
            }
        }
    }
}

/// Prints the `==> round` line.
fn print_round(round: usize, rounds: usize, quick: bool) {
    println!(
        "==> round {round}/{rounds}{}",
        if quick { " (quick)" } else { "" }
    );
}

/// Writes `target/bench/<suite>.json` and prints the failures; `Ok(false)` if
/// there were some.
fn finish(suite: &str, json: Json, failures: &[String]) -> Result<bool, String> {
    let scratch = target_dir().join("bench");
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let json_path = scratch.join(format!("{suite}.json"));
    fs::write(&json_path, json.pretty()).map_err(|e| format!("{}: {e}", json_path.display()))?;
    println!("\nwrote {}", json_path.display());
    if !failures.is_empty() {
        println!("\n{} run(s) FAILED:", failures.len());
        for f in failures {
            println!("  {f}");
        }
        return Ok(false);
    }
    Ok(true)
}

/// Runs the futures suite; `Ok(false)` if some runs failed (the report is still written).
fn run_futures(opts: &Options) -> Result<bool, String> {
    let bin = bench_bin("bench-futures")?;
    println!("futures suite: aioloop's tasks and futures against their closest tokio equivalents:");
    for note in FUTURES_NOTES {
        println!("note: {note}");
    }
    let mut results = Results::default();
    let mut failures = Vec::new();
    for round in 1..=opts.rounds {
        print_round(round, opts.rounds, opts.quick);
        for case in FUTURES {
            run_case(&bin, case, None, opts, round, &mut results, &mut failures);
        }
    }

    println!();
    print_header("futures", opts);
    println!("so ratio tokio/aioloop > 1 means aioloop is faster.");
    for note in FUTURES_NOTES {
        println!("  {note}");
    }
    println!();
    print_table(&results);

    let notes = Json::Arr(FUTURES_NOTES.iter().map(|n| Json::str(*n)).collect());
    let json = report_json("futures", &results, opts, vec![("notes", notes)], &failures);
    finish("futures", json, &failures)
}

/// Runs the core suite; `Ok(false)` if some runs failed (the report is still written).
fn run_core(opts: &Options) -> Result<bool, String> {
    let bin = bench_bin("bench-core")?;
    let strace_bin = if opts.strace { strace::find() } else { None };
    let strace_note = match (&strace_bin, opts.strace) {
        (_, false) => Some("skipped (--no-strace)".to_string()),
        (None, true) => Some("skipped: `strace` is not on PATH".to_string()),
        (Some(_), true) => None,
    };

    let pin = pin_prefix();
    let pin_note = match &pin {
        Some(p) => format!("`{}` cases run under `{}`", PINNED_SUFFIX, p.join(" ")),
        None => format!("`{PINNED_SUFFIX}` cases skipped: `taskset` is not on PATH"),
    };
    println!("note: {pin_note}");

    let mut results = Results::default();
    let mut failures = Vec::new();
    let scratch = target_dir().join("bench");
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    // Per system: syscall counts of a run with no wake-ups, subtracted from each
    // strace run so that only the wake-ups themselves are counted.
    let mut baselines: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();

    for round in 1..=opts.rounds {
        print_round(round, opts.rounds, opts.quick);
        for case in CORE {
            let pin = pin.as_deref();
            run_case(&bin, case, pin, opts, round, &mut results, &mut failures);
        }
        if let Some(strace_bin) = &strace_bin {
            let case = CORE
                .iter()
                .find(|c| c.name == STRACE_CASE && !c.pinned)
                .expect("strace case");
            for system in case.systems {
                let label = format!("{} {system} (strace)", case.name);
                let run = |n: Option<u64>, tag: &str| {
                    let out = scratch.join(format!("strace-{system}-{tag}.txt"));
                    strace_run(strace_bin, &bin, system, case.name, opts.quick, n, &out)
                };
                if !baselines.contains_key(system) {
                    match run(Some(0), "baseline") {
                        Ok((counts, _)) => {
                            baselines.insert(system, counts);
                        }
                        Err(e) => {
                            println!("    {label:<28} baseline FAILED: {e}");
                            failures.push(format!("round {round}: {label} baseline: {e}"));
                            continue;
                        }
                    }
                }
                match run(None, "full") {
                    Ok((counts, n)) => {
                        let base = &baselines[system];
                        let per_wake = strace::net_per_op(&counts, base, n);
                        let total = per_wake.get("total").copied().unwrap_or(0.0);
                        println!("    {label:<28} {:>12} syscalls/wake", fmt_num(total));
                        for (name, v) in per_wake {
                            let case_name = if name == "total" {
                                "wake_syscalls".to_string()
                            } else {
                                format!("wake_syscalls:{name}")
                            };
                            results.push(&case_name, system, "syscalls/wake", v);
                        }
                    }
                    Err(e) => {
                        println!("    {label:<28} FAILED: {e}");
                        failures.push(format!("round {round}: {label}: {e}"));
                    }
                }
            }
        }
    }

    // Breakdown rows are only kept for syscalls that matter; a syscall that
    // shows up in only some rounds gets zeros for the others.
    fill_missing_syscalls(&mut results, opts.rounds);
    print_report(&results, opts, strace_note.as_deref(), &pin_note);

    let strace = match strace_note.as_deref() {
        Some(n) => Json::str(n),
        None => Json::str("strace -f -c, both threads, net of a 0-wake baseline run"),
    };
    let extra = vec![
        ("strace", strace),
        ("pinning", Json::str(pin_note.as_str())),
    ];
    let json = report_json("core", &results, opts, extra, &failures);
    finish("core", json, &failures)
}

/// Runs one benchmark process under `strace -f -c`; returns the per-syscall
/// call counts (plus `total`) and the operation count the process reported.
fn strace_run(
    strace_bin: &Path,
    bin: &Path,
    system: &str,
    case: &str,
    quick: bool,
    n: Option<u64>,
    out: &Path,
) -> Result<(BTreeMap<String, u64>, u64), String> {
    let _ = fs::remove_file(out);
    let mut cmd = Command::new(strace_bin);
    cmd.arg("-f")
        .arg("-c")
        .arg("-o")
        .arg(out)
        .arg("--")
        .arg(bin);
    cmd.args(["--system", system, "--case", case]);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(n) = n {
        cmd.args(["--n", &n.to_string()]);
    }
    let lines = proc::run_bench(cmd, TIMEOUT)?;
    let reported = lines
        .iter()
        .find(|r| r.case == case)
        .map(|r| r.n)
        .ok_or("no result line")?;
    let text = fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let counts = strace::parse_summary(&text)?;
    Ok((counts, reported))
}

/// Syscall breakdown rows: keep those whose largest median is >= 0.01/wake,
/// and pad series that missed some rounds with zeros.
fn fill_missing_syscalls(results: &mut Results, rounds: usize) {
    let total_runs: BTreeMap<String, usize> = results
        .series
        .iter()
        .filter(|s| s.case == "wake_syscalls")
        .map(|s| (s.system.clone(), s.runs.len()))
        .collect();
    results
        .series
        .retain(|s| !s.case.starts_with("wake_syscalls:") || s.runs.iter().any(|v| *v >= 0.01));
    for s in &mut results.series {
        if s.case.starts_with("wake_syscalls:") {
            let want = total_runs.get(&s.system).copied().unwrap_or(rounds);
            while s.runs.len() < want {
                s.runs.push(0.0);
            }
        }
    }
}

/// `taskset -c <first allowed CPU>`, if `taskset` is on PATH.
fn pin_prefix() -> Option<Vec<String>> {
    let path = env::var_os("PATH")?;
    let taskset = env::split_paths(&path)
        .map(|dir| dir.join("taskset"))
        .find(|p| p.is_file())?;
    // The first CPU this process may run on, from e.g. "Cpus_allowed_list: 0-3,8".
    let cpu = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))?;
            let first = line.split(':').nth(1)?.trim().split([',', '-']).next()?;
            first.parse::<u32>().ok()
        })
        .unwrap_or(0);
    Some(vec![
        taskset.display().to_string(),
        "-c".to_string(),
        cpu.to_string(),
    ])
}

/// The median (mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "n/a".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}")
    } else {
        format!("{r:.4}")
    }
}

/// tokio/aioloop ratios for one result case: every tokio* system against every aioloop* system.
fn ratios<'a>(results: &'a Results, case: &str) -> Vec<(&'a str, &'a str, f64)> {
    let in_case: Vec<&Series> = results.series.iter().filter(|s| s.case == case).collect();
    let mut out = Vec::new();
    for t in in_case.iter().filter(|s| s.system.starts_with("tokio")) {
        for a in in_case.iter().filter(|s| s.system.starts_with("aioloop")) {
            let (mt, ma) = (median(&t.runs), median(&a.runs));
            if ma > 0.0 && mt.is_finite() {
                out.push((t.system.as_str(), a.system.as_str(), mt / ma));
            }
        }
    }
    out
}

/// The first line of a suite's report.
fn print_header(suite: &str, opts: &Options) {
    println!(
        "{suite} suite: medians of {} round(s){}; every unit is lower-is-better,",
        opts.rounds,
        if opts.quick {
            ", QUICK (10x smaller workloads)"
        } else {
            ""
        }
    );
}

/// The table of medians (min..max) and tokio/aioloop ratios, case by case.
fn print_table(results: &Results) {
    println!(
        "{:<24} | {:<16} | {:>10} | {:<14} | {:>4} | min..max",
        "case", "system", "median", "unit", "runs"
    );
    println!("{}", "-".repeat(92));
    let mut cases: Vec<&str> = Vec::new();
    for s in &results.series {
        if !cases.contains(&s.case.as_str()) && !s.case.starts_with("wake_syscalls:") {
            cases.push(&s.case);
        }
    }
    for case in &cases {
        for s in results.series.iter().filter(|s| s.case == *case) {
            let min = s.runs.iter().copied().fold(f64::INFINITY, f64::min);
            let max = s.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "{:<24} | {:<16} | {:>10} | {:<14} | {:>4} | {}..{}",
                s.case,
                s.system,
                fmt_num(median(&s.runs)),
                s.unit,
                s.runs.len(),
                fmt_num(min),
                fmt_num(max)
            );
        }
        for (t, a, r) in ratios(results, case) {
            println!("{:<24} |   ratio {t}/{a} = {}", "", fmt_ratio(r));
        }
    }
}

fn print_report(results: &Results, opts: &Options, strace_note: Option<&str>, pin_note: &str) {
    println!();
    print_header("core", opts);
    println!(
        "so ratio tokio/aioloop > 1 means aioloop is faster (or less late, or fewer syscalls)."
    );
    println!();
    print_table(results);
    println!("{pin_note}");
    println!();
    match strace_note {
        Some(note) => println!("syscalls per wake (strace -f -c): {note}"),
        None => {
            println!(
                "syscalls per wake (strace -f -c, both threads, net of a 0-wake baseline run):"
            );
            let systems: Vec<&str> = {
                let mut v: Vec<&str> = Vec::new();
                for s in results.series.iter().filter(|s| s.case == "wake_syscalls") {
                    v.push(&s.system);
                }
                v
            };
            for system in systems {
                let mut parts: Vec<(String, f64)> = results
                    .series
                    .iter()
                    .filter(|s| s.system == system && s.case.starts_with("wake_syscalls:"))
                    .map(|s| {
                        (
                            s.case["wake_syscalls:".len()..].to_string(),
                            median(&s.runs),
                        )
                    })
                    .filter(|(_, m)| *m >= 0.01)
                    .collect();
                parts.sort_by(|a, b| b.1.total_cmp(&a.1));
                let total = results
                    .series
                    .iter()
                    .find(|s| s.system == system && s.case == "wake_syscalls")
                    .map(|s| median(&s.runs))
                    .unwrap_or(f64::NAN);
                let list: Vec<String> = parts
                    .iter()
                    .take(8)
                    .map(|(n, m)| format!("{n} {}", fmt_num(*m)))
                    .collect();
                println!(
                    "  {system:<16} {:>6} total: {}",
                    fmt_num(total),
                    list.join(", ")
                );
            }
        }
    }
}

/// Every series of `results` as JSON: case, system, median, unit, runs.
fn series_json(results: &Results) -> Vec<Json> {
    results
        .series
        .iter()
        .map(|s| {
            Json::obj([
                ("case", Json::str(&s.case)),
                ("system", Json::str(&s.system)),
                ("median", Json::Num(median(&s.runs))),
                ("unit", Json::str(&s.unit)),
                (
                    "runs",
                    Json::Arr(s.runs.iter().map(|v| Json::Num(*v)).collect()),
                ),
            ])
        })
        .collect()
}

/// `system min..max; ...` over the rounds of every series of case `name`,
/// or `None` if it has none.
fn spread(results: &Results, name: &str) -> Option<String> {
    let cells: Vec<String> = results
        .series
        .iter()
        .filter(|s| s.case == name)
        .map(|s| {
            let min = s.runs.iter().copied().fold(f64::INFINITY, f64::min);
            let max = s.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{} {}..{}", s.system, fmt_num(min), fmt_num(max))
        })
        .collect();
    (!cells.is_empty()).then(|| cells.join("; "))
}

/// A suite's JSON report: `suite`, `rounds`, `quick`, `results`, `ratios`,
/// then the suite's `extra` fields, then `failures`.
fn report_json(
    suite: &str,
    results: &Results,
    opts: &Options,
    extra: Vec<(&str, Json)>,
    failures: &[String],
) -> Json {
    let rows = series_json(results);
    let mut cases: Vec<&str> = Vec::new();
    for s in &results.series {
        if !cases.contains(&s.case.as_str()) && !s.case.starts_with("wake_syscalls:") {
            cases.push(&s.case);
        }
    }
    let ratio_rows = cases
        .iter()
        .flat_map(|case| {
            ratios(results, case).into_iter().map(move |(t, a, r)| {
                Json::obj([
                    ("case", Json::str(*case)),
                    ("numerator", Json::str(t)),
                    ("denominator", Json::str(a)),
                    ("ratio", Json::Num(r)),
                ])
            })
        })
        .collect();
    let mut fields = vec![
        ("suite", Json::str(suite)),
        ("rounds", Json::Num(opts.rounds as f64)),
        ("quick", Json::Bool(opts.quick)),
        ("results", Json::Arr(rows)),
        ("ratios", Json::Arr(ratio_rows)),
    ];
    fields.extend(extra);
    fields.push((
        "failures",
        Json::Arr(failures.iter().map(|f| Json::str(f.as_str())).collect()),
    ));
    Json::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
