//! The `udp_1k_x10` case of `cargo xtask bench net`: UDP echo, 1 KiB
//! datagrams ping-ponged on 10 sockets, against every system of the suite.
//!
//! Servers: `bench-net udp-server --system aioloop|tokio` (aioloop's
//! `DatagramProtocol` echo; a tokio current-thread `recv_from` / `send_to`
//! loop) and `bench/python/udp_echo_server.py [--uvloop]` (asyncio's
//! `DatagramProtocol` echo). The load generator is `bench-net udp-client`
//! (tokio current-thread; a datagram not echoed within 200 ms counts as lost
//! and the socket sends the next one). Each run starts a fresh server; the
//! rounds rotate the systems' order as the TCP loads do. Result cases:
//! `udp_1k_x10_msgs_per_s`, `_cpu_us_per_msg`, `_cpu_user_us_per_msg` and
//! `_lost` (datagrams lost in the window), in the suite's `results` and
//! `ratios`.

use std::time::Duration;

use super::super::{fmt_num, median, proc, Results};
use super::{better_ratio, cell_ratio, command, series_median, Plan, Proc, Server, System, REFS};
use crate::json::Json;

/// The case's name (the prefix of its result cases).
pub(super) const CASE: &str = "udp_1k_x10";
const SOCKETS: usize = 10;
const SIZE: usize = 1024;

/// What the report and the JSON say about the case.
pub(super) const NOTE: &str =
    "udp_1k_x10: UDP echo, 1 KiB datagrams ping-ponged on 10 connected client sockets \
     (`bench-net udp-client`, tokio current-thread; an echo missing after 200 ms counts as lost \
     and the next datagram is sent); servers: aioloop's DatagramProtocol echo \
     (datagram_received -> sendto(data, addr)), tokio current-thread with one UdpSocket \
     (recv_from / send_to loop), asyncio and uvloop DatagramProtocol echo \
     (bench/python/udp_echo_server.py); server CPU us/msg from /proc/<pid>/stat over the window";

/// One run of `sys`: its result lines.
pub(super) fn run(plan: &Plan, sys: &System) -> Result<Vec<proc::ResultLine>, String> {
    let mut cmd = match &sys.server {
        Server::Rust(name) => {
            let mut c = command(plan, false, &plan.bin);
            c.args(["udp-server", "--system", name]);
            c
        }
        Server::Python { python, uvloop } => {
            let mut c = command(plan, false, python);
            c.arg(crate::workspace_root().join("bench/python/udp_echo_server.py"));
            if *uvloop {
                c.arg("--uvloop");
            }
            c
        }
    };
    cmd.args(["--addr", "127.0.0.1:0"]);
    let mut server = Proc::start(cmd).map_err(|e| format!("server: {e}"))?;
    let port = server
        .out
        .expect("listening on ", Duration::from_secs(30))
        .map_err(|e| format!("server: {e}"))?;
    let mut cmd = command(plan, false, &plan.bin);
    cmd.arg("udp-client")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--conns", &SOCKETS.to_string()])
        .args(["--size", &SIZE.to_string()])
        .args(["--duration", &plan.duration.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--case", CASE])
        .args(["--system", sys.name]);
    let timeout = Duration::from_secs_f64(plan.warmup + plan.duration + 60.0);
    let lines = proc::run_bench(cmd, timeout).map_err(|e| format!("client: {e}"));
    server.stop(Duration::from_secs(5));
    lines
}

pub(super) fn print_report(results: &Results, systems: &[&str]) {
    let msgs = format!("{CASE}_msgs_per_s");
    if !results.series.iter().any(|s| s.case == msgs) {
        return;
    }
    let cpu = format!("{CASE}_cpu_us_per_msg");
    println!();
    println!("{CASE} (medians; ratios > 1: the row's system is better; t = msgs/s, c = CPU/msg):");
    println!("  {NOTE}");
    println!(
        "{:<13} | {:>9} | {:>14} | {:>11} | {:>7} | {:>13} | {:>13} | spread msgs/s",
        "system",
        "msgs/s",
        "srv CPU us/msg",
        "(user part)",
        "lost",
        "vs tokio t|c",
        "vs uvloop t|c"
    );
    println!("{}", "-".repeat(117));
    for sys in systems {
        let m = |metric: &str| series_median(results, &format!("{CASE}_{metric}"), sys);
        let vs = |reference: &str| {
            if *sys == reference {
                return "-".to_string();
            }
            let t = better_ratio(results, &msgs, sys, reference);
            let c = better_ratio(results, &cpu, sys, reference);
            format!("{}|{}", cell_ratio(t), cell_ratio(c))
        };
        let spread = results
            .series
            .iter()
            .find(|s| s.case == msgs && s.system == *sys)
            .map(|s| {
                let min = s.runs.iter().copied().fold(f64::INFINITY, f64::min);
                let max = s.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{}..{}", fmt_num(min), fmt_num(max))
            })
            .unwrap_or_default();
        println!(
            "{:<13} | {:>9} | {:>14} | {:>11} | {:>7} | {:>13} | {:>13} | {}",
            sys,
            fmt_num(m("msgs_per_s")),
            fmt_num(m("cpu_us_per_msg")),
            fmt_num(m("cpu_user_us_per_msg")),
            fmt_num(m("lost")),
            vs(REFS[0]),
            vs(REFS[1]),
            spread
        );
    }
}

/// The case's summary for the JSON report (the medians and ratios are also
/// in its `results` and `ratios`).
pub(super) fn json(results: &Results, systems: &[&str]) -> Json {
    let rows = systems
        .iter()
        .map(|sys| {
            let m = |metric: &str| {
                let case = format!("{CASE}_{metric}");
                results
                    .series
                    .iter()
                    .find(|s| s.case == case && s.system == *sys)
                    .map(|s| median(&s.runs))
                    .unwrap_or(f64::NAN)
            };
            Json::obj([
                ("system", Json::str(*sys)),
                ("msgs_per_s", Json::Num(m("msgs_per_s"))),
                ("cpu_us_per_msg", Json::Num(m("cpu_us_per_msg"))),
                ("lost", Json::Num(m("lost"))),
            ])
        })
        .collect();
    Json::obj([
        ("case", Json::str(CASE)),
        ("sockets", Json::Num(SOCKETS as f64)),
        ("size", Json::Num(SIZE as f64)),
        ("medians", Json::Arr(rows)),
        ("note", Json::str(NOTE)),
    ])
}
