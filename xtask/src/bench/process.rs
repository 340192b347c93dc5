//! `cargo xtask bench process`: child processes, spawned and reaped, and a
//! pipe through `cat`.
//!
//! Systems: aioloop (`loop.subprocess_exec` with a protocol),
//! aioloop-process (`loop.create_subprocess_exec`, the high-level `Process`
//! with streams) and tokio (`tokio::process`, current-thread runtime), all
//! `bench-process`; when Python is present,
//! asyncio and uvloop (`asyncio.create_subprocess_exec`,
//! `bench/python/process_bench.py`, uvloop from the net suite's venv under
//! `target/bench-venv`). Cases: `spawn_seq` (500 spawns of `/bin/true`, one
//! at a time), `spawn_16` (the same with 16 in flight) and `pipe_256m`
//! (256 MiB through `cat`'s stdin and stdout); see the binaries' headers.
//!
//! One process per (case, system) run; rounds interleave the systems,
//! rotating their order. Per case: spawns/s, wall and parent-CPU µs per
//! spawn; MB/s and parent-CPU ms per GB; and, under `strace -c`, syscalls
//! per spawn (`spawn_seq`, `-f`: the children's own syscalls included) and
//! per MiB (`pipe_256m`, main thread only), net of a run with N = 0.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::compare::{self, cell_ratio, fill_missing_syscalls, series_median};
use super::{fmt_num, print_round, proc, spread, strace, Options, Results, TIMEOUT};
use crate::json::Json;

/// The cases, in the order each round runs them.
const CASES: &[&str] = &["spawn_seq", "spawn_16", "pipe_256m"];

/// The case that also runs pinned to one CPU (`taskset`, inherited by
/// `cat`), reported as `pipe_256m_1cpu`: unpinned, its figures depend on
/// whether the scheduler puts the parent and `cat` on one CPU or two (how
/// much each pipe wake-up carries), which varies from run to run.
const PINNED_CASE: &str = "pipe_256m";

/// The suffix of the pinned case's name.
const PINNED_SUFFIX: &str = "_1cpu";

/// A case that is also run under `strace -c`.
struct Traced {
    case: &'static str,
    /// `-f`: follow threads and children.
    follow: bool,
    /// What the per-op counts are per.
    unit: &'static str,
}

const TRACED: &[Traced] = &[
    Traced {
        case: "spawn_seq",
        follow: true,
        unit: "syscalls/spawn",
    },
    Traced {
        case: "pipe_256m",
        follow: false,
        unit: "syscalls/MiB",
    },
];

/// The reference systems of the ratio columns.
const REFS: &[&str] = &["tokio", "uvloop"];

/// What the report and the JSON say about the method.
const NOTES: &[&str] = &[
    "spawn_seq: 500 spawns of /bin/true one after another, each awaited to its exit status; \
     stdin/stdout/stderr /dev/null on every system (so: spawn + reap); 20 untimed warm-up spawns \
     first | spawn_16: the same 500 with 16 workers taking the next spawn from a shared counter \
     (16 in flight)",
    "aioloop = loop.subprocess_exec + a no-op SubprocessProtocol, transport.wait() | \
     aioloop-process = loop.create_subprocess_exec (the high-level Process) + process.wait(), \
     the line-for-line counterpart of the asyncio and uvloop rows | tokio = \
     current-thread runtime, body in a spawn_local'd task, tokio::process::Command + child.wait() \
     (pidfd reaper) | asyncio, uvloop = asyncio.create_subprocess_exec(stdin/stdout/stderr=DEVNULL) \
     + proc.wait(); asyncio on CPython <= 3.11 reaps with its default ThreadedChildWatcher (a thread \
     per child in waitpid)",
    "pipe_256m: /bin/cat with stdin and stdout pipes, 256 MiB written in 256 KiB chunks with flow \
     control while stdout is read to the end (byte count checked), spawn to exit timed | aioloop = \
     the protocol writes to the stdin pipe transport while its buffer is <= the high-water mark \
     (and not paused), resumes on resume_writing, write_eof at the end, counts pipe_data_received \
     (64 KiB reads) | tokio = write_all per chunk to ChildStdin joined with 64 KiB reads of \
     ChildStdout | aioloop-process, asyncio, uvloop = create_subprocess_exec, a writer task \
     (stdin.write + await drain(), then close()) and a reader task (await stdout.read(256 KiB) to \
     EOF) side by side (not communicate(), which buffers everything) | aioloop and \
     aioloop-process write the chunk, one Rc<[u8]>, with write_owned (the pipe keeps it, as \
     uvloop keeps a bytes object); the -copy rows (pipe_256m only) write it with write(&[u8]) \
     (the rest the pipe does not take at once is copied into the transport's buffer)",
    "pipe_256m_1cpu: the same, the benchmark process (and so cat) pinned to one CPU with \
     taskset: unpinned, pipe figures swing with whether the scheduler runs the parent and cat on \
     one CPU or two (how much each wake-up moves), from run to run",
    "CPU = the parent process's CLOCK_PROCESS_CPUTIME_ID (all its threads, not the children's) \
     over the timed part; spawn/s and MB/s are wall-clock (MB = 10^6 bytes, one direction); \
     every run has LD_LIBRARY_PATH removed (cargo sets it; each exec'd child's dynamic linker \
     would search its directories)",
    "syscalls: strace -c net of an N=0 run of the same system; spawn_seq with -f (the parent, its \
     threads AND each child up to /bin/true's exit: the exec'd /bin/true's own ~30 syscalls are \
     in every row), pipe_256m without -f (the parent's main thread: cat is not counted)",
    "ratios: > 1 means the row's system beats the reference (spawn/s, MB/s: system/ref; time, CPU \
     and syscalls: ref/system)",
];

/// How to run one system.
#[derive(Clone)]
enum Runner {
    /// `bench-process --system NAME`.
    Rust,
    /// `python process_bench.py --system NAME`.
    Python(PathBuf),
}

#[derive(Clone)]
struct System {
    name: &'static str,
    runner: Runner,
    /// Runs `pipe_256m` only (a variant of another system's pipe writes).
    pipe_only: bool,
}

/// The suite's fixed parameters.
struct Plan {
    bin: PathBuf,
    script: PathBuf,
    quick: bool,
}

impl Plan {
    /// The argv of one run of `case` on `sys` (`n`: `--n`).
    fn argv(&self, sys: &System, case: &str, n: Option<u64>) -> Vec<OsString> {
        let mut argv: Vec<OsString> = match &sys.runner {
            Runner::Rust => vec![self.bin.clone().into()],
            Runner::Python(python) => vec![python.clone().into(), self.script.clone().into()],
        };
        argv.extend(["--system", sys.name, "--case", case].map(OsString::from));
        if self.quick {
            argv.push("--quick".into());
        }
        if let Some(n) = n {
            argv.push("--n".into());
            argv.push(n.to_string().into());
        }
        argv
    }
}

/// Runs the process suite; `Ok(false)` if some runs failed (the report is still written).
pub(super) fn run(opts: &Options) -> Result<bool, String> {
    let plan = Plan {
        bin: super::bench_bin("bench-process")?,
        script: crate::workspace_root().join("bench/python/process_bench.py"),
        quick: opts.quick,
    };
    let strace_bin = if opts.strace { strace::find() } else { None };
    let strace_note = match (&strace_bin, opts.strace) {
        (_, false) => "skipped (--no-strace)".to_string(),
        (None, true) => "skipped: `strace` is not on PATH".to_string(),
        (Some(_), true) => String::new(),
    };

    let mut systems = vec![
        System {
            name: "aioloop",
            runner: Runner::Rust,
            pipe_only: false,
        },
        System {
            name: "aioloop-copy",
            runner: Runner::Rust,
            pipe_only: true,
        },
        System {
            name: "aioloop-process",
            runner: Runner::Rust,
            pipe_only: false,
        },
        System {
            name: "aioloop-process-copy",
            runner: Runner::Rust,
            pipe_only: true,
        },
        System {
            name: "tokio",
            runner: Runner::Rust,
            pipe_only: false,
        },
    ];
    let py = super::net::python_setup(opts.python);
    println!("note: python: {}", py.note);
    if let Some(python) = &py.python {
        systems.push(System {
            name: "asyncio",
            runner: Runner::Python(python.clone()),
            pipe_only: false,
        });
        if py.uvloop {
            systems.push(System {
                name: "uvloop",
                runner: Runner::Python(python.clone()),
                pipe_only: false,
            });
        }
    }
    let names: Vec<&str> = systems.iter().map(|s| s.name).collect();
    let pin = super::pin_prefix();
    let pin_note = match &pin {
        Some(p) => format!(
            "`{PINNED_CASE}{PINNED_SUFFIX}` runs under `{}`",
            p.join(" ")
        ),
        None => format!("`{PINNED_CASE}{PINNED_SUFFIX}` skipped: `taskset` is not on PATH"),
    };
    println!("note: {pin_note}");
    println!(
        "process suite: systems {names:?}; cases {CASES:?} + {PINNED_CASE}{PINNED_SUFFIX}; {} \
         round(s)",
        opts.rounds
    );

    let mut results = Results::default();
    let mut failures = Vec::new();
    let scratch = super::target_dir().join("bench");
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    // Per (case, system): the strace counts of its N = 0 run.
    let mut baselines: BTreeMap<(&str, &str), BTreeMap<String, u64>> = BTreeMap::new();

    for round in 1..=opts.rounds {
        print_round(round, opts.rounds, opts.quick);
        let mut order = systems.clone();
        let len = order.len();
        order.rotate_left((round - 1) % len);
        let pinned = pin.as_ref().map(|p| (PINNED_CASE, Some(p.as_slice())));
        let runs = CASES.iter().map(|c| (*c, None)).chain(pinned);
        for (case, pin) in runs {
            let suffix = if pin.is_some() { PINNED_SUFFIX } else { "" };
            for sys in order.iter().filter(|s| !s.pipe_only || case == PINNED_CASE) {
                let label = format!("{case}{suffix} {}", sys.name);
                let mut argv = plan.argv(sys, case, None);
                if let Some(pin) = pin {
                    let mut pinned: Vec<OsString> = pin.iter().map(OsString::from).collect();
                    pinned.append(&mut argv);
                    argv = pinned;
                }
                let mut cmd = command(&argv[0]);
                cmd.args(&argv[1..]);
                match proc::run_bench(cmd, TIMEOUT) {
                    Ok(lines) => {
                        for mut r in lines {
                            if let Some(metric) = r.case.strip_prefix(case) {
                                r.case = format!("{case}{suffix}{metric}");
                            }
                            println!(
                                "    {:<34} {:>12} {}",
                                format!("{} {}", r.case, r.system),
                                fmt_num(r.value),
                                r.unit
                            );
                            results.push(&r.case, &r.system, &r.unit, r.value);
                        }
                    }
                    Err(e) => {
                        println!("    {label:<34} FAILED: {e}");
                        failures.push(format!("round {round}: {label}: {e}"));
                    }
                }
            }
        }
        let Some(strace_bin) = &strace_bin else {
            continue;
        };
        for traced in TRACED {
            for sys in order
                .iter()
                .filter(|s| !s.pipe_only || traced.case == PINNED_CASE)
            {
                let label = format!("{} {} (strace)", traced.case, sys.name);
                let run = |n: Option<u64>, tag: &str| {
                    let out = scratch.join(format!(
                        "strace-process-{}-{}-{tag}.txt",
                        traced.case, sys.name
                    ));
                    strace_run(strace_bin, traced, plan.argv(sys, traced.case, n), &out)
                };
                let key = (traced.case, sys.name);
                if let Entry::Vacant(slot) = baselines.entry(key) {
                    match run(Some(0), "baseline") {
                        Ok((counts, _)) => {
                            slot.insert(counts);
                        }
                        Err(e) => {
                            println!("    {label:<34} baseline FAILED: {e}");
                            failures.push(format!("round {round}: {label} baseline: {e}"));
                            continue;
                        }
                    }
                }
                match run(None, "full") {
                    Ok((counts, n)) => {
                        let per_op = strace::net_per_op(&counts, &baselines[&key], n);
                        let total = per_op.get("total").copied().unwrap_or(f64::NAN);
                        println!("    {label:<34} {:>12} {}", fmt_num(total), traced.unit);
                        for (name, v) in per_op {
                            let case = if name == "total" {
                                format!("{}_syscalls", traced.case)
                            } else {
                                format!("{}_syscalls:{name}", traced.case)
                            };
                            results.push(&case, sys.name, traced.unit, v);
                        }
                    }
                    Err(e) => {
                        println!("    {label:<34} FAILED: {e}");
                        failures.push(format!("round {round}: {label}: {e}"));
                    }
                }
            }
        }
    }

    fill_missing_syscalls(&mut results, "_syscalls");
    println!();
    print_report(&results, opts, &names);
    println!("{pin_note}");
    if !strace_note.is_empty() {
        println!("syscalls: {strace_note}");
    }
    println!("python: {}", py.note);

    let strace = if strace_note.is_empty() {
        Json::str(
            "strace -c net of an N=0 run; spawn_seq with -f (children included), pipe_256m \
             without -f (the parent's main thread)",
        )
    } else {
        Json::str(strace_note)
    };
    let extra = vec![
        (
            "systems",
            Json::Arr(names.iter().map(|n| Json::str(*n)).collect()),
        ),
        ("pinning", Json::str(pin_note)),
        ("strace", strace),
        ("python", Json::str(py.note)),
        (
            "notes",
            Json::Arr(NOTES.iter().map(|n| Json::str(*n)).collect()),
        ),
    ];
    let report = compare::Report {
        suite: "process",
        rounds: opts.rounds,
        quick: opts.quick,
        refs: REFS,
        systems: &names,
        higher: higher_is_better,
    };
    let json = compare::report_json(&report, &results, extra, &failures);
    super::finish("process", json, &failures)
}

/// A command for `program` without `LD_LIBRARY_PATH`: `cargo run` (so
/// `cargo xtask`) sets it to the target and toolchain directories, and the
/// dynamic linker of every `/bin/true` and `cat` would search them all (~45
/// more `openat`/`newfstatat` calls per exec).
fn command(program: &std::ffi::OsStr) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd
}

/// Runs `argv` under `strace -c [-f]`; returns the per-syscall call counts
/// (plus `total`) and the N the run reported.
fn strace_run(
    strace_bin: &Path,
    traced: &Traced,
    argv: Vec<OsString>,
    out: &Path,
) -> Result<(BTreeMap<String, u64>, u64), String> {
    let _ = fs::remove_file(out);
    let mut cmd = command(strace_bin.as_os_str());
    cmd.arg("-c");
    if traced.follow {
        cmd.arg("-f");
    }
    cmd.arg("-o").arg(out).arg("--").args(argv);
    let lines = proc::run_bench(cmd, TIMEOUT)?;
    let n = lines
        .iter()
        .find(|r| r.case.starts_with(traced.case))
        .map(|r| r.n)
        .ok_or("no result line")?;
    let text = fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((strace::parse_summary(&text)?, n))
}

/// Whether a larger value of the metric is better (spawn/s, MB/s).
fn higher_is_better(case: &str) -> bool {
    case.ends_with("_per_s")
}

/// `system` against `reference` for this suite's metrics, > 1 when `system`
/// is better.
fn better_ratio(results: &Results, case: &str, system: &str, reference: &str) -> f64 {
    compare::better_ratio(results, case, system, reference, higher_is_better)
}

fn cell(x: f64) -> String {
    if x.is_finite() {
        fmt_num(x)
    } else {
        "".into()
    }
}

fn print_report(results: &Results, opts: &Options, systems: &[&str]) {
    println!(
        "process suite: medians of {} round(s){}; ratios > 1 mean the row's system beats the \
         reference",
        opts.rounds,
        if opts.quick {
            ", QUICK (10x smaller workloads)"
        } else {
            ""
        }
    );
    println!("(t: spawn/s or MB/s, system/ref; c: ref/system parent CPU per spawn or per GB).");
    for note in NOTES {
        println!("  {note}");
    }
    // The ratio cell of one row: throughput | CPU.
    let vs = |case: &str, sys: &str, reference: &str, thr: &str, cpu: &str| {
        if sys == reference {
            return "-".to_string();
        }
        let t = better_ratio(results, &format!("{case}_{thr}"), sys, reference);
        let c = better_ratio(results, &format!("{case}_{cpu}"), sys, reference);
        format!("{}|{}", cell_ratio(t), cell_ratio(c))
    };
    println!();
    println!(
        "{:<9} | {:<20} | {:>8} | {:>9} | {:>12} | {:>14} | {:>13} | {:>13}",
        "case",
        "system",
        "spawn/s",
        "us/spawn",
        "CPU us/spawn",
        "syscalls/spawn",
        "vs tokio t|c",
        "vs uvloop t|c"
    );
    println!("{}", "-".repeat(124));
    for case in ["spawn_seq", "spawn_16"] {
        if !results
            .series
            .iter()
            .any(|s| s.case == format!("{case}_per_s"))
        {
            continue;
        }
        for sys in systems {
            let m = |metric: &str| series_median(results, &format!("{case}_{metric}"), sys);
            if m("per_s").is_nan() {
                continue; // a system that runs pipe_256m only
            }
            println!(
                "{:<9} | {:<20} | {:>8} | {:>9} | {:>12} | {:>14} | {:>13} | {:>13}",
                case,
                sys,
                cell(m("per_s")),
                cell(m("us_per_spawn")),
                cell(m("cpu_us_per_spawn")),
                cell(m("syscalls")),
                vs(case, sys, REFS[0], "per_s", "cpu_us_per_spawn"),
                vs(case, sys, REFS[1], "per_s", "cpu_us_per_spawn"),
            );
        }
    }
    let pinned = format!("{PINNED_CASE}{PINNED_SUFFIX}");
    let pipes: Vec<&str> = [PINNED_CASE, pinned.as_str()]
        .into_iter()
        .filter(|case| {
            results
                .series
                .iter()
                .any(|s| s.case == format!("{case}_mb_per_s"))
        })
        .collect();
    if !pipes.is_empty() {
        println!();
        println!(
            "{:<14} | {:<20} | {:>8} | {:>9} | {:>12} | {:>13} | {:>13}",
            "case", "system", "MB/s", "CPU ms/GB", "syscalls/MiB", "vs tokio t|c", "vs uvloop t|c"
        );
        println!("{}", "-".repeat(112));
        for case in pipes {
            for sys in systems {
                let m = |metric: &str| series_median(results, &format!("{case}_{metric}"), sys);
                println!(
                    "{:<14} | {:<20} | {:>8} | {:>9} | {:>12} | {:>13} | {:>13}",
                    case,
                    sys,
                    cell(m("mb_per_s")),
                    cell(m("cpu_ms_per_gb")),
                    cell(m("syscalls")),
                    vs(case, sys, REFS[0], "mb_per_s", "cpu_ms_per_gb"),
                    vs(case, sys, REFS[1], "mb_per_s", "cpu_ms_per_gb"),
                );
            }
        }
    }
    // Syscall breakdowns.
    for traced in TRACED {
        let total_case = format!("{}_syscalls", traced.case);
        if !results.series.iter().any(|s| s.case == total_case) {
            continue;
        }
        println!();
        println!(
            "{} per op on {} (strace -c{}, net of an N=0 run):",
            traced.unit,
            traced.case,
            if traced.follow { " -f" } else { "" }
        );
        for sys in systems {
            if series_median(results, &total_case, sys).is_nan() {
                continue; // not traced in this case
            }
            let (total, list) = compare::syscall_breakdown(results, &total_case, sys, 10);
            println!("  {sys:<20} {total:>7} total: {list}");
        }
    }
    // Spread of the headline metrics.
    println!();
    println!("spread (min..max over rounds):");
    for name in [
        "spawn_seq_per_s",
        "spawn_seq_cpu_us_per_spawn",
        "spawn_16_per_s",
        "spawn_16_cpu_us_per_spawn",
        "pipe_256m_mb_per_s",
        "pipe_256m_cpu_ms_per_gb",
        "pipe_256m_1cpu_mb_per_s",
        "pipe_256m_1cpu_cpu_ms_per_gb",
    ] {
        if let Some(cells) = spread(results, name) {
            println!("  {name:<30} {cells}");
        }
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_point_the_right_way() {
        let mut r = Results::default();
        r.push("spawn_seq_per_s", "aioloop", "spawn/s", 2000.0);
        r.push("spawn_seq_per_s", "tokio", "spawn/s", 1000.0);
        r.push("spawn_seq_cpu_us_per_spawn", "aioloop", "us/spawn", 50.0);
        r.push("spawn_seq_cpu_us_per_spawn", "tokio", "us/spawn", 100.0);
        assert_eq!(better_ratio(&r, "spawn_seq_per_s", "aioloop", "tokio"), 2.0);
        assert_eq!(
            better_ratio(&r, "spawn_seq_cpu_us_per_spawn", "aioloop", "tokio"),
            2.0
        );
        assert!(better_ratio(&r, "spawn_seq_per_s", "aioloop", "uvloop").is_nan());
    }

    #[test]
    fn pads_missing_syscalls() {
        let mut r = Results::default();
        r.push("spawn_seq_syscalls", "tokio", "syscalls/spawn", 30.0);
        r.push("spawn_seq_syscalls", "tokio", "syscalls/spawn", 31.0);
        r.push("spawn_seq_syscalls:wait4", "tokio", "syscalls/spawn", 1.0);
        r.push("spawn_seq_syscalls:mmap", "tokio", "syscalls/spawn", 0.001);
        fill_missing_syscalls(&mut r, "_syscalls");
        let wait = r
            .series
            .iter()
            .find(|s| s.case.ends_with(":wait4"))
            .unwrap();
        assert_eq!(wait.runs, vec![1.0, 0.0]);
        assert!(!r.series.iter().any(|s| s.case.ends_with(":mmap")));
    }
}
