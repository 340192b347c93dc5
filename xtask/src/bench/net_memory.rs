//! The `idle_rss` case of `cargo xtask bench net`: the fixed memory of an
//! idle echo server, the part that does not grow with connections (the
//! suite's `idle_N` case measures that part).
//!
//! Each system is its own small binary, built with the workspace's release
//! profile, so that the memory measured is the server's, not that of a
//! binary holding every system of the suite:
//! - `aioloop`: the echo_server example (`target/release/examples/`), as a
//!   user runs it (TCP on 127.0.0.1:0; TLS, Unix and UDP linked but unused);
//! - `tokio`: `tokio-echo`, the smallest tokio TCP echo server of the same
//!   shape (current-thread runtime, a task per connection, exit on stdin EOF
//!   read by a thread, or on SIGINT/SIGTERM);
//! - `tokio-full`: `tokio-echo-full`, the same plus what the example also
//!   links (TLS through tokio-rustls with ring, Unix, UDP), the like-for-like
//!   comparison.
//!
//! A run starts the server with its stdin a pipe held open, waits for its
//! `listening on` line and [`SETTLE`], then reads `VmRSS`, `RssAnon` and
//! `RssFile` from `/proc/<pid>/status`. `RssAnon` is the process's own
//! memory; `RssFile` is pages of the executable and of the shared libraries
//! mapped from the page cache (shared with any other process mapping them,
//! and dropped under memory pressure), which grows with the code a binary
//! holds: the kernel maps the cached pages around each page executed.

use std::process::Command;
use std::thread;
use std::time::Duration;

use super::super::{fmt_num, proc, Results};
use super::{better_ratio, cell_ratio, series_median, Proc};
use crate::json::Json;

/// The case's name (the prefix of its result cases).
pub(super) const CASE: &str = "idle_rss";

/// The systems, in the order of the first round.
pub(super) const SYSTEMS: &[&str] = &["aioloop", "tokio", "tokio-full"];

/// How long a server idles after its `listening on` line before it is
/// measured (the runtimes' lazy start-up work is done by then).
const SETTLE: Duration = Duration::from_millis(300);

/// The three figures read from `/proc/<pid>/status`, in kB.
const METRICS: &[(&str, &str)] = &[
    ("VmRSS", "kb"),
    ("RssAnon", "anon_kb"),
    ("RssFile", "file_kb"),
];

/// What the report and the JSON say about the case.
pub(super) const NOTE: &str =
    "idle_rss: one idle server process, VmRSS = RssAnon (its own memory) + RssFile (pages of \
     the executable and shared libraries mapped from the page cache: shared, reclaimable, and \
     growing with the code a binary holds); aioloop = the echo_server example, tokio = \
     tokio-echo (TCP echo only), tokio-full = tokio-echo-full (TCP, TLS via tokio-rustls, Unix, \
     UDP: what the example links); each its own binary, release profile, measured 300 ms after \
     its `listening on` line";

/// Builds the echo_server example (the bench package holds the tokio servers).
pub(super) fn build() -> Result<(), String> {
    println!("==> cargo build --release --example echo_server");
    let status = crate::cargo()
        .args(["build", "--release", "--example", "echo_server"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the echo_server example failed".into());
    }
    Ok(())
}

/// The binary of `system`.
fn binary(system: &str) -> Result<std::path::PathBuf, String> {
    match system {
        "aioloop" => {
            let bin = super::super::target_dir().join("release/examples/echo_server");
            if bin.exists() {
                Ok(bin)
            } else {
                Err(format!("{} was not built", bin.display()))
            }
        }
        "tokio" => super::super::bench_bin("tokio-echo"),
        "tokio-full" => super::super::bench_bin("tokio-echo-full"),
        other => Err(format!("no idle_rss server for `{other}`")),
    }
}

/// One run of `system`: its three result lines.
pub(super) fn run(system: &str) -> Result<Vec<proc::ResultLine>, String> {
    let mut server = Proc::start(Command::new(binary(system)?))?;
    server
        .out
        .expect("listening on ", Duration::from_secs(30))
        .map_err(|e| format!("server: {e}"))?;
    thread::sleep(SETTLE);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .map_err(|e| format!("/proc/{}/status: {e}", server.pid()));
    server.stop(Duration::from_secs(10));
    let status = status?;
    METRICS
        .iter()
        .map(|(field, suffix)| {
            Ok(proc::ResultLine {
                case: format!("{CASE}_{suffix}"),
                system: system.to_string(),
                value: status_kb(&status, field)?,
                unit: "kB".into(),
                n: 1,
            })
        })
        .collect()
}

/// The value of `field` (`VmRSS: 1234 kB`) in a `/proc/<pid>/status` text.
fn status_kb(status: &str, field: &str) -> Result<f64, String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no {field} in /proc/<pid>/status"))
}

pub(super) fn print_report(results: &Results) {
    let rss = format!("{CASE}_kb");
    if !results.series.iter().any(|s| s.case == rss) {
        return;
    }
    println!();
    println!("{CASE} (medians, kB; x = the row's figure / aioloop's: > 1 when aioloop uses less):");
    println!("  {NOTE}");
    println!(
        "{:<11} | {:>7} | {:>7} | {:>7} | {:>9} | {:>9} | {:>9}",
        "system", "VmRSS", "RssAnon", "RssFile", "x RSS", "x anon", "x file"
    );
    println!("{}", "-".repeat(80));
    for sys in SYSTEMS {
        let m = |suffix: &str| series_median(results, &format!("{CASE}_{suffix}"), sys);
        // How many times less aioloop uses than this row's system.
        let vs = |suffix: &str| {
            if *sys == "aioloop" {
                return "-".to_string();
            }
            let case = format!("{CASE}_{suffix}");
            cell_ratio(better_ratio(results, &case, "aioloop", sys))
        };
        println!(
            "{:<11} | {:>7} | {:>7} | {:>7} | {:>9} | {:>9} | {:>9}",
            sys,
            fmt_num(m("kb")),
            fmt_num(m("anon_kb")),
            fmt_num(m("file_kb")),
            vs("kb"),
            vs("anon_kb"),
            vs("file_kb"),
        );
    }
}

/// The case's summary for the JSON report (the medians are also in its
/// `results`).
pub(super) fn json(results: &Results) -> Json {
    let rows = SYSTEMS
        .iter()
        .map(|sys| {
            let m = |suffix: &str| series_median(results, &format!("{CASE}_{suffix}"), sys);
            Json::obj([
                ("system", Json::str(*sys)),
                ("vm_rss_kb", Json::Num(m("kb"))),
                ("rss_anon_kb", Json::Num(m("anon_kb"))),
                ("rss_file_kb", Json::Num(m("file_kb"))),
            ])
        })
        .collect();
    Json::obj([
        ("case", Json::str(CASE)),
        ("medians", Json::Arr(rows)),
        ("note", Json::str(NOTE)),
    ])
}

#[cfg(test)]
mod tests {
    use super::status_kb;

    #[test]
    fn status_fields_are_read_in_kb() {
        let status = "Name:\techo\nVmRSS:\t    3212 kB\nRssAnon:\t     228 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Ok(3212.0));
        assert_eq!(status_kb(status, "RssAnon"), Ok(228.0));
        assert!(status_kb(status, "RssFile").is_err());
        // A field whose name is a prefix of another is not confused with it.
        assert!(status_kb("VmRSSx:\t1 kB\n", "VmRSS").is_err());
    }
}
