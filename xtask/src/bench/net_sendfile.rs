//! The `sendfile_256m` case of `cargo xtask bench net`: a 256 MiB file over
//! loopback TCP to a receiver that only counts bytes (`bench-net sendfile`,
//! see its `bench_net/sendfile.rs`).
//!
//! Systems: `aioloop-sendfile` (`loop.sendfile`, `sendfile(2)`),
//! `aioloop-copy` (the same call with the fallback forced: `pread` on the
//! executor + `transport.write`) and `tokio` (tokio has no sendfile: `pread`
//! in `spawn_blocking`, one block read ahead, `write_all` to the
//! `TcpStream`). One process per run; the systems' order rotates each round.
//! Metrics: MB/s (payload, 10^6 bytes) and the sender's CPU ms per 10^9
//! bytes. The file is made once under `target/bench/` and reused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::super::{fmt_num, fmt_ratio, median, proc, Results};
use crate::json::Json;

/// The case's name (the prefix of its result cases).
pub(super) const CASE: &str = "sendfile_256m";

/// The file's size.
const SIZE: u64 = 256 * 1024 * 1024;

/// Measured sends of the file per run (after one warm-up send).
const REPS: usize = 8;
const REPS_QUICK: usize = 1;

pub(super) const SYSTEMS: &[&str] = &["aioloop-sendfile", "aioloop-copy", "tokio"];

/// What the report and the JSON say about the case.
pub(super) const NOTE: &str =
    "sendfile_256m: a 256 MiB file (page-cached) over loopback TCP to a receiver thread that \
     discards with MSG_TRUNC; 1 warm-up + N sends per process. aioloop-sendfile = loop.sendfile \
     (sendfile(2)); aioloop-copy = loop.sendfile with SendfileFallback::Forced (pread of 256 KiB \
     blocks on the executor, one ahead, transport.write); tokio = pread in spawn_blocking, one \
     ahead, write_all (tokio has no sendfile). MB/s over the measured sends; CPU ms/GB = CPU time \
     of every thread but the receiver's (schedstat) per 10^9 bytes. Loopback leaves the kernel's \
     TCP work in every row, so the MB/s ratio understates what sendfile saves; the CPU column \
     shows the copies it avoids";

/// One run of `system`: its result lines.
pub(super) fn run(
    bin: &Path,
    scratch: &Path,
    system: &str,
    quick: bool,
) -> Result<Vec<proc::ResultLine>, String> {
    let file = scratch.join("sendfile-256m.bin");
    let reps = if quick { REPS_QUICK } else { REPS };
    let mut cmd = Command::new(bin);
    cmd.arg("sendfile")
        .args(["--system", system])
        .arg("--file")
        .arg(&file)
        .args(["--size", &SIZE.to_string()])
        .args(["--reps", &reps.to_string()])
        .args(["--case", CASE]);
    proc::run_bench(cmd, Duration::from_secs(120))
}

fn med(results: &Results, metric: &str, system: &str) -> f64 {
    let case = format!("{CASE}_{metric}");
    results
        .series
        .iter()
        .find(|s| s.case == case && s.system == system)
        .map(|s| median(&s.runs))
        .unwrap_or(f64::NAN)
}

/// The comparisons of the case: (label, numerator, denominator).
const PAIRS: &[(&str, &str, &str)] = &[
    ("sendfile vs copy loop", "aioloop-sendfile", "aioloop-copy"),
    ("sendfile vs tokio", "aioloop-sendfile", "tokio"),
    ("copy loop vs tokio", "aioloop-copy", "tokio"),
];

/// (MB/s ratio, CPU ratio) of `a` against `b`, > 1 when `a` is better.
fn ratio(results: &Results, a: &str, b: &str) -> (f64, f64) {
    (
        med(results, "mb_per_s", a) / med(results, "mb_per_s", b),
        med(results, "cpu_ms_per_gb", b) / med(results, "cpu_ms_per_gb", a),
    )
}

fn cell(r: f64) -> String {
    if r.is_finite() {
        fmt_ratio(r)
    } else {
        "-".into()
    }
}

pub(super) fn print_report(results: &Results) {
    let case = format!("{CASE}_mb_per_s");
    if !results.series.iter().any(|s| s.case == case) {
        return;
    }
    println!();
    println!("{CASE} (medians; ratios > 1 mean the first system is better):");
    println!("  {NOTE}");
    println!("{:<17} | {:>9} | {:>11}", "system", "MB/s", "CPU ms/GB");
    println!("{}", "-".repeat(43));
    for sys in SYSTEMS {
        println!(
            "{:<17} | {:>9} | {:>11}",
            sys,
            fmt_num(med(results, "mb_per_s", sys)),
            fmt_num(med(results, "cpu_ms_per_gb", sys))
        );
    }
    for (label, a, b) in PAIRS {
        let (t, c) = ratio(results, a, b);
        println!("  {label:<22} MB/s x{}  CPU per byte x{}", cell(t), cell(c));
    }
    for metric in ["mb_per_s", "cpu_ms_per_gb"] {
        let name = format!("{CASE}_{metric}");
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
        println!("  spread {name}: {}", cells.join("; "));
    }
}

/// The JSON field `sendfile`: the comparisons (> 1: the first system is better).
pub(super) fn json(results: &Results) -> Json {
    let rows = PAIRS
        .iter()
        .map(|(label, a, b)| {
            let (t, c) = ratio(results, a, b);
            Json::obj([
                ("comparison", Json::str(*label)),
                ("system", Json::str(*a)),
                ("reference", Json::str(*b)),
                ("mb_per_s_ratio", Json::Num(t)),
                ("cpu_per_byte_ratio", Json::Num(c)),
            ])
        })
        .collect();
    Json::obj([
        ("case", Json::str(CASE)),
        (
            "systems",
            Json::Arr(SYSTEMS.iter().map(|s| Json::str(*s)).collect()),
        ),
        ("ratios", Json::Arr(rows)),
        ("note", Json::str(NOTE)),
    ])
}
