//! The `tls_1k_x10` case of `cargo xtask bench net`: TLS echo, 1 KiB
//! messages over 10 connections, aioloop's TLS transport
//! (`bench-net server --system aioloop-tls`) against tokio with tokio-rustls
//! (`--system tokio-rustls`), both rustls with the ring provider, under the
//! one load generator (`bench-net client --tls-dir`, tokio-rustls).
//!
//! Each run starts a fresh server, which writes its self-signed certificate
//! under `target/bench/tls-<system>/` for the client to trust. Metrics, as
//! for the plain loads: msgs/s and the server's CPU time per message; the
//! ratio is aioloop-tls against tokio-rustls (> 1: aioloop is better).

use std::path::Path;
use std::time::Duration;

use super::super::{fmt_num, fmt_ratio, median, proc, Results};
use super::{command, Plan, Proc};
use crate::json::Json;

/// The case's name (the prefix of its result cases).
pub(super) const CASE: &str = "tls_1k_x10";
const CONNS: usize = 10;
const SIZE: usize = 1024;

/// The first two are the ratio's pair; `aioloop-tls-uring` is the same
/// server on the io_uring backend.
pub(super) const SYSTEMS: &[&str] = &["aioloop-tls", "tokio-rustls", "aioloop-tls-uring"];

/// What the report and the JSON say about the case.
pub(super) const NOTE: &str =
    "tls_1k_x10: TLS echo, 1 KiB messages ping-ponged on 10 connections; the client is \
     `bench-net client --tls-dir` (tokio current-thread + tokio-rustls); servers: aioloop's \
     Protocol echo behind ServerOptions::tls, and tokio + tokio-rustls (a task per connection, \
     read / write_all / flush); both rustls 0.23 with ring, default versions and suites \
     (TLS 1.3). Server CPU us/msg from /proc/<pid>/stat over the window";

/// One run of `system`: its result lines.
pub(super) fn run(
    plan: &Plan,
    scratch: &Path,
    system: &str,
) -> Result<Vec<proc::ResultLine>, String> {
    let dir = scratch.join(format!("tls-{system}"));
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut cmd = command(plan, false, &plan.bin);
    cmd.args(["server", "--system", system, "--tls-dir", &dir_arg])
        .args(["--addr", "127.0.0.1:0"]);
    let mut server = Proc::start(cmd).map_err(|e| format!("server: {e}"))?;
    let port = server
        .out
        .expect("listening on ", Duration::from_secs(30))
        .map_err(|e| format!("server: {e}"))?;
    let mut cmd = command(plan, false, &plan.bin);
    cmd.arg("client")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--conns", &CONNS.to_string()])
        .args(["--size", &SIZE.to_string()])
        .args(["--duration", &plan.duration.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--case", CASE])
        .args(["--system", system])
        .args(["--tls-dir", &dir_arg]);
    let timeout = Duration::from_secs_f64(plan.warmup + plan.duration + 60.0);
    let lines = proc::run_bench(cmd, timeout).map_err(|e| format!("client: {e}"));
    server.stop(Duration::from_secs(5));
    lines
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

/// (throughput ratio, CPU-per-message ratio) of aioloop-tls against
/// tokio-rustls; > 1 means aioloop is better.
fn ratios(results: &Results) -> (f64, f64) {
    let (a, b) = (SYSTEMS[0], SYSTEMS[1]);
    (
        med(results, "msgs_per_s", a) / med(results, "msgs_per_s", b),
        med(results, "cpu_us_per_msg", b) / med(results, "cpu_us_per_msg", a),
    )
}

pub(super) fn print_report(results: &Results) {
    let case = format!("{CASE}_msgs_per_s");
    if !results.series.iter().any(|s| s.case == case) {
        return;
    }
    println!();
    println!("{CASE} (medians):");
    println!("  {NOTE}");
    println!(
        "{:<18} | {:>10} | {:>15}",
        "system", "msgs/s", "server CPU us/msg"
    );
    println!("{}", "-".repeat(50));
    for sys in SYSTEMS {
        println!(
            "{:<18} | {:>10} | {:>15}",
            sys,
            fmt_num(med(results, "msgs_per_s", sys)),
            fmt_num(med(results, "cpu_us_per_msg", sys))
        );
    }
    let (t, c) = ratios(results);
    println!(
        "  aioloop-tls vs tokio-rustls: msgs/s x{}  CPU per msg x{}  (target >= 0.95)",
        fmt_ratio(t),
        fmt_ratio(c)
    );
}

pub(super) fn json(results: &Results) -> Json {
    let (t, c) = ratios(results);
    Json::obj([
        ("case", Json::str(CASE)),
        (
            "systems",
            Json::Arr(SYSTEMS.iter().map(|s| Json::str(*s)).collect()),
        ),
        ("msgs_per_s_ratio", Json::Num(t)),
        ("cpu_per_msg_ratio", Json::Num(c)),
        ("note", Json::str(NOTE)),
    ])
}
