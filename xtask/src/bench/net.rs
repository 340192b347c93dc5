//! `cargo xtask bench net`: echo servers under one load generator.
//!
//! Servers: aioloop's `Protocol` echo and a tokio current-thread echo
//! (`bench-net server`), and, when Python is present, asyncio's and uvloop's
//! `Protocol` echo (`bench/python/echo_server.py`, uvloop from a venv under
//! `target/bench-venv`). The load generator is always `bench-net client` (a
//! tokio current-thread client; the same for every server).
//!
//! Each run starts a fresh server process, runs the client against it and
//! stops the server by closing its stdin; rounds interleave the systems
//! (rotating their order). Per server and case: messages/s, MB/s and the
//! server process's own user+sys CPU time per message (`/proc/<pid>/stat`
//! over the client's measurement window); bytes of server RSS per idle
//! connection; syscalls per echoed message (`strace -c -f -p` attached for
//! a bounded window of the 1 KiB x 50 load, divided by the messages the
//! client counted in that window). The `sendfile_256m` case (net_sendfile.rs)
//! sends a 256 MiB file with `loop.sendfile`, with its forced copy loop, and
//! with tokio's best equivalent. The `tls_1k_x10` case (net_tls.rs) is TLS
//! echo: aioloop's TLS transport against tokio + tokio-rustls. The
//! `udp_1k_x10` case (net_udp.rs) is UDP echo on every system. The
//! `idle_rss` case (net_memory.rs) is the fixed memory of an idle server:
//! the echo_server example against two tokio echo servers, each its own binary.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::compare::{self, cell_ratio, fill_missing_syscalls, series_median};
use super::{fmt_num, pin_prefix, print_round, proc, spread, strace};
use super::{Options, Results};
use crate::json::Json;

#[path = "net_sendfile.rs"]
mod sendfile;

#[path = "net_tls.rs"]
mod tls;

#[path = "net_hyper.rs"]
pub(super) mod hyper;

#[path = "net_udp.rs"]
mod udp;

#[path = "net_memory.rs"]
mod memory;

/// Rounds when `--rounds` is not given (each round runs every case on every
/// system: about two minutes on a 2-core machine).
const DEFAULT_ROUNDS: usize = 3;

/// Seconds each load run is measured (after its warm-up); `--duration` overrides.
const DURATION: f64 = 3.0;
const DURATION_QUICK: f64 = 0.5;
const WARMUP: f64 = 0.5;
const WARMUP_QUICK: f64 = 0.2;

/// Idle connections of the memory case.
const IDLE_CONNS: usize = 5000;
const IDLE_CONNS_QUICK: usize = 500;

/// Seconds strace stays attached to a server under the 1 KiB x 50 load.
const STRACE_WINDOW: f64 = 2.0;
const STRACE_WINDOW_QUICK: f64 = 0.5;

/// The suffix of the cases whose server and client share one CPU.
const PINNED_SUFFIX: &str = "_1cpu";

/// The case that is also run under strace.
const STRACE_CASE: &str = "1k_x50";

/// The reference systems of the ratio columns.
const REFS: &[&str] = &["tokio", "uvloop"];

/// One ping-pong load.
struct Load {
    name: &'static str,
    conns: usize,
    size: usize,
    pinned: bool,
}

const LOADS: &[Load] = &[
    Load {
        name: "1k_x1",
        conns: 1,
        size: 1024,
        pinned: true,
    },
    Load {
        name: "1k_x1",
        conns: 1,
        size: 1024,
        pinned: false,
    },
    Load {
        name: "1k_x50",
        conns: 50,
        size: 1024,
        pinned: false,
    },
    Load {
        name: "1k_x50",
        conns: 50,
        size: 1024,
        pinned: true,
    },
    Load {
        name: "64k_x10",
        conns: 10,
        size: 64 * 1024,
        pinned: false,
    },
    Load {
        name: "64k_x10",
        conns: 10,
        size: 64 * 1024,
        pinned: true,
    },
];

impl Load {
    fn case(&self) -> String {
        let suffix = if self.pinned { PINNED_SUFFIX } else { "" };
        format!("{}{suffix}", self.name)
    }
}

/// How to start one system's echo server.
#[derive(Clone)]
enum Server {
    /// `bench-net server --system NAME`.
    Rust(&'static str),
    /// `python echo_server.py [--uvloop]`.
    Python { python: PathBuf, uvloop: bool },
}

#[derive(Clone)]
struct System {
    name: &'static str,
    server: Server,
}

/// The suite's fixed parameters, from the options.
struct Plan {
    rounds: usize,
    duration: f64,
    warmup: f64,
    idle_conns: usize,
    strace_window: f64,
    bin: PathBuf,
    script: PathBuf,
    pin: Option<Vec<String>>,
    strace: Option<PathBuf>,
}

/// Runs the net suite; `Ok(false)` if some runs failed (the report is still written).
pub(super) fn run(opts: &Options) -> Result<bool, String> {
    let bin = super::bench_bin("bench-net")?;
    memory::build()?;
    let script = crate::workspace_root().join("bench/python/echo_server.py");
    let pin = pin_prefix();
    let pin_note = match &pin {
        Some(p) => format!(
            "`{PINNED_SUFFIX}` cases run server AND client under `{}`; the others are unpinned",
            p.join(" ")
        ),
        None => format!("`{PINNED_SUFFIX}` cases skipped: `taskset` is not on PATH"),
    };
    let strace_bin = if opts.strace { strace::find() } else { None };
    let strace_note = match (&strace_bin, opts.strace) {
        (_, false) => "skipped (--no-strace)".to_string(),
        (None, true) => "skipped: `strace` is not on PATH".to_string(),
        (Some(_), true) => String::new(),
    };
    let plan = Plan {
        rounds: opts.rounds_given.unwrap_or(DEFAULT_ROUNDS),
        duration: opts
            .duration
            .unwrap_or(if opts.quick { DURATION_QUICK } else { DURATION }),
        warmup: if opts.quick { WARMUP_QUICK } else { WARMUP },
        idle_conns: if opts.quick {
            IDLE_CONNS_QUICK
        } else {
            IDLE_CONNS
        },
        strace_window: if opts.quick {
            STRACE_WINDOW_QUICK
        } else {
            STRACE_WINDOW
        },
        bin,
        script,
        pin,
        strace: strace_bin,
    };

    let mut systems = vec![
        System {
            name: "aioloop",
            server: Server::Rust("aioloop"),
        },
        // The io_uring backend: its completion path for the stream sockets
        // (issue 14).
        System {
            name: "aioloop-uring",
            server: Server::Rust("aioloop-uring"),
        },
        System {
            name: "tokio",
            server: Server::Rust("tokio"),
        },
    ];
    let py = python_setup(opts.python);
    println!("note: python: {}", py.note);
    if let Some(python) = &py.python {
        systems.push(System {
            name: "asyncio",
            server: Server::Python {
                python: python.clone(),
                uvloop: false,
            },
        });
        if py.uvloop {
            systems.push(System {
                name: "uvloop",
                server: Server::Python {
                    python: python.clone(),
                    uvloop: true,
                },
            });
        }
    }
    println!("note: {pin_note}");
    let names: Vec<&str> = systems.iter().map(|s| s.name).collect();
    println!(
        "net suite: systems {names:?}; {} round(s); {} s per load run after {} s warm-up; {} idle connections",
        plan.rounds, plan.duration, plan.warmup, plan.idle_conns
    );

    let mut results = Results::default();
    let mut failures = Vec::new();
    let scratch = super::target_dir().join("bench");
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;

    for round in 1..=plan.rounds {
        print_round(round, plan.rounds, opts.quick);
        // Rotate the systems' order each round so that none always runs first.
        let mut order = systems.clone();
        let len = order.len();
        order.rotate_left((round - 1) % len);
        for load in LOADS {
            if load.pinned && plan.pin.is_none() {
                continue;
            }
            for sys in &order {
                let label = format!("{} {}", load.case(), sys.name);
                record(
                    &mut results,
                    &mut failures,
                    round,
                    &label,
                    run_load(&plan, sys, load),
                );
            }
        }
        let mut sendfile_order = sendfile::SYSTEMS.to_vec();
        let n = sendfile_order.len();
        sendfile_order.rotate_left((round - 1) % n);
        for sys in sendfile_order {
            let label = format!("{} {sys}", sendfile::CASE);
            record(
                &mut results,
                &mut failures,
                round,
                &label,
                sendfile::run(&plan.bin, &scratch, sys, opts.quick),
            );
        }
        let mut tls_order = tls::SYSTEMS.to_vec();
        tls_order.rotate_left((round - 1) % tls::SYSTEMS.len());
        for sys in tls_order {
            let label = format!("{} {sys}", tls::CASE);
            record(
                &mut results,
                &mut failures,
                round,
                &label,
                tls::run(&plan, &scratch, sys),
            );
        }
        for sys in &order {
            let label = format!("{} {}", udp::CASE, sys.name);
            record(
                &mut results,
                &mut failures,
                round,
                &label,
                udp::run(&plan, sys),
            );
        }
        let idle_case = format!("idle_{}", plan.idle_conns);
        for sys in &order {
            let label = format!("{idle_case} {}", sys.name);
            match run_idle(&plan, sys) {
                Ok(bytes) => {
                    println!("    {label:<28} {:>12} bytes/conn", fmt_num(bytes));
                    let case = format!("{idle_case}_bytes_per_conn");
                    results.push(&case, sys.name, "bytes/conn", bytes);
                }
                Err(e) => {
                    println!("    {label:<28} FAILED: {e}");
                    failures.push(format!("round {round}: {label}: {e}"));
                }
            }
        }
        let mut memory_order = memory::SYSTEMS.to_vec();
        memory_order.rotate_left((round - 1) % memory::SYSTEMS.len());
        for sys in memory_order {
            let label = format!("{} {sys}", memory::CASE);
            record(&mut results, &mut failures, round, &label, memory::run(sys));
        }
        if let Some(strace_bin) = &plan.strace {
            let load = LOADS
                .iter()
                .find(|l| l.name == STRACE_CASE && !l.pinned)
                .expect("the strace load");
            for sys in &order {
                let label = format!("{} {} (strace)", load.case(), sys.name);
                let out = scratch.join(format!("strace-net-{}.txt", sys.name));
                match run_strace(&plan, strace_bin, sys, load, &out) {
                    Ok(per_msg) => {
                        let total = per_msg.get("total").copied().unwrap_or(f64::NAN);
                        println!("    {label:<28} {:>12} syscalls/msg", fmt_num(total));
                        for (name, v) in per_msg {
                            let case = if name == "total" {
                                format!("{}_syscalls_per_msg", load.case())
                            } else {
                                format!("{}_syscalls_per_msg:{name}", load.case())
                            };
                            results.push(&case, sys.name, "syscalls/msg", v);
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

    fill_missing_syscalls(&mut results, "_syscalls_per_msg");
    println!();
    print_report(&results, &plan, opts.quick, &names);
    sendfile::print_report(&results);
    tls::print_report(&results);
    udp::print_report(&results, &names);
    memory::print_report(&results);
    println!("{pin_note}");
    if !strace_note.is_empty() {
        println!("syscalls per message: {strace_note}");
    }
    println!("python: {}", py.note);

    let notes = Json::Arr(NOTES.iter().map(|n| Json::str(*n)).collect());
    let strace = if strace_note.is_empty() {
        Json::str(format!(
            "strace -c -f -p <server> attached for {} s of the {} load, divided by the messages \
             the client counted in that window",
            plan.strace_window, STRACE_CASE
        ))
    } else {
        Json::str(strace_note)
    };
    let extra = vec![
        (
            "systems",
            Json::Arr(names.iter().map(|n| Json::str(*n)).collect()),
        ),
        ("duration_s", Json::Num(plan.duration)),
        ("warmup_s", Json::Num(plan.warmup)),
        ("idle_conns", Json::Num(plan.idle_conns as f64)),
        ("pinning", Json::str(pin_note)),
        ("strace", strace),
        ("python", Json::str(py.note)),
        ("notes", notes),
        ("sendfile", sendfile::json(&results)),
        ("tls", tls::json(&results)),
        ("udp", udp::json(&results, &names)),
        ("idle_rss", memory::json(&results)),
    ];
    let report = compare::Report {
        suite: "net",
        rounds: plan.rounds,
        quick: opts.quick,
        refs: REFS,
        systems: &names,
        higher: higher_is_better,
    };
    let json = compare::report_json(&report, &results, extra, &failures);
    super::finish("net", json, &failures)
}

/// What the report and the JSON say about the method.
const NOTES: &[&str] = &[
    "one load generator for every server: `bench-net client`, a tokio current-thread runtime, \
     TCP_NODELAY; each connection sends SIZE bytes, waits until SIZE bytes came back, repeats",
    "msgs/s = echoed messages per second; MB/s = msgs/s x SIZE / 10^6 (payload, one direction)",
    "server CPU us/msg = the server process's user+sys time (/proc/<pid>/stat) over the \
     measurement window / messages: on a 2-core machine the client shares the CPUs, so \
     throughput ratios compress toward 1 and CPU per message is what separates the loops; \
     the sys part includes the kernel's loopback TCP work done in the server's send calls \
     (the same for every server); the user part is tick-sampled, so coarser",
    "idle bytes/conn = server VmRSS after N idle connections (each echoed one byte) minus VmRSS \
     before, / N; the tokio server's per-connection task holds a 64 KiB read buffer",
    "1k_x1 measures the scheduler's wake-up latency more than the loop: reported, not judged",
    "ratios: > 1 means the row's system beats the reference (throughput: system/ref; CPU, \
     syscalls and memory: ref/system)",
    "aioloop-uring = the same aioloop server on the io_uring backend (Backend::Uring): the \
     socket transport on the completion path (multishot recv into the loop's buffer ring, \
     the echoes of an iteration sent with the next wait in one io_uring_enter), the \
     listener's accepts by one multishot accept, UDP receives by one multishot recvmsg \
     (sendto stays a system call), TLS over the same stream path",
];

// ---------------------------------------------------------------------------
// Python

pub(super) struct Python {
    /// The interpreter for asyncio (and uvloop when `uvloop`).
    pub(super) python: Option<PathBuf>,
    pub(super) uvloop: bool,
    pub(super) note: String,
}

/// Finds python3 and makes (or reuses) `target/bench-venv` with uvloop
/// (also used by the process suite).
pub(super) fn python_setup(enabled: bool) -> Python {
    if !enabled {
        return Python {
            python: None,
            uvloop: false,
            note: "skipped (--no-python)".into(),
        };
    }
    // The real interpreter (not a pyenv shim) so that the server's pid is python's.
    let Some(system_python) = real_python(Path::new("python3")) else {
        return Python {
            python: None,
            uvloop: false,
            note: "python3 not found: no asyncio or uvloop rows".into(),
        };
    };
    let venv = super::target_dir().join("bench-venv");
    let venv_python = venv.join("bin").join("python");
    let version = |py: &Path| -> Option<String> {
        let out = Command::new(py)
            .args([
                "-c",
                "import uvloop, sys; print(uvloop.__version__, sys.version.split()[0])",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if !venv_python.exists() {
        println!("==> {} -m venv {}", system_python.display(), venv.display());
        let out = Command::new(&system_python)
            .args(["-m", "venv"])
            .arg(&venv)
            .output();
        if let Err(why) = command_failed(out) {
            return Python {
                python: Some(system_python),
                uvloop: false,
                note: format!("cannot create the venv ({why}): asyncio only, no uvloop row"),
            };
        }
    }
    if version(&venv_python).is_none() {
        println!("==> {} -m pip install uvloop", venv_python.display());
        let out = Command::new(&venv_python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "uvloop",
            ])
            .output();
        if let Err(why) = command_failed(out) {
            let python = real_python(&venv_python).unwrap_or(system_python);
            return Python {
                python: Some(python),
                uvloop: false,
                note: format!("pip install uvloop failed ({why}): asyncio only, no uvloop row"),
            };
        }
    }
    match version(&venv_python) {
        Some(v) => {
            let (uv, py) = v.split_once(' ').unwrap_or((v.as_str(), "?"));
            Python {
                python: Some(venv_python.clone()),
                uvloop: true,
                note: format!(
                    "CPython {py}, uvloop {uv} (venv {}): asyncio and uvloop rows",
                    venv.display()
                ),
            }
        }
        None => Python {
            python: Some(system_python),
            uvloop: false,
            note: "uvloop does not import after pip install: asyncio only".into(),
        },
    }
}

/// `sys.executable` of `python` (resolves pyenv shims), if it runs.
fn real_python(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// `Ok` if the command ran and succeeded, else the reason (its last stderr line).
fn command_failed(out: std::io::Result<std::process::Output>) -> Result<(), String> {
    match out {
        Err(e) => Err(e.to_string()),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("{}: {}", o.status, last.trim()))
        }
    }
}

// ---------------------------------------------------------------------------
// Processes

/// Lines of a child's output, read by a thread.
struct Lines(Receiver<String>);

impl Lines {
    fn new(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The rest of the first line starting with `prefix`; other lines are skipped.
    fn expect(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.expect_by(prefix, timeout, |line| line.strip_prefix(prefix))
    }

    /// The first line for which `pick` gives `Some`, trimmed; `what` names
    /// the line in the error.
    fn expect_by(
        &self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<&str>,
    ) -> Result<String, String> {
        let prefix = what;
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = pick(line.trim()) {
                        return Ok(rest.trim().to_string());
                    }
                    last = line;
                }
                Err(e) => {
                    let what = match e {
                        RecvTimeoutError::Timeout => {
                            format!("no `{prefix}` line within {}s", timeout.as_secs())
                        }
                        RecvTimeoutError::Disconnected => {
                            format!("exited before printing `{prefix}`")
                        }
                    };
                    return Err(if last.is_empty() {
                        what
                    } else {
                        format!("{what} (last line: `{}`)", last.trim())
                    });
                }
            }
        }
    }
}

/// A child process with piped stdin and stdout; stopped (stdin closed, then
/// killed if it lingers) when dropped.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines,
}

impl Proc {
    fn start(mut cmd: Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
        let stdin = child.stdin.take();
        let out = Lines::new(child.stdout.take().expect("stdout is piped"));
        Ok(Proc { child, stdin, out })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin is closed")?;
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("cannot write to the child: {e}"))
    }

    /// Closes stdin and waits up to `grace` for the exit, then kills the group.
    fn stop(&mut self, grace: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => thread::sleep(Duration::from_millis(5)),
            }
        }
        kill_group(self.child.id(), "-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// `kill SIGNAL -- -pgid`.
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// `cmd` prefixed with the pinning command when `pinned`.
/// Prints and keeps the result lines of one run, or notes its failure.
fn record(
    results: &mut Results,
    failures: &mut Vec<String>,
    round: usize,
    label: &str,
    outcome: Result<Vec<proc::ResultLine>, String>,
) {
    match outcome {
        Ok(lines) => {
            for r in lines {
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

fn command(plan: &Plan, pinned: bool, program: &Path) -> Command {
    match (&plan.pin, pinned) {
        (Some(pin), true) => {
            let mut c = Command::new(&pin[0]);
            c.args(&pin[1..]).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// Starts `sys`'s echo server; returns it and its port.
fn start_server(plan: &Plan, sys: &System, pinned: bool) -> Result<(Proc, u16), String> {
    let mut cmd = match &sys.server {
        Server::Rust(name) => {
            let mut c = command(plan, pinned, &plan.bin);
            c.args(["server", "--system", name]);
            c
        }
        Server::Python { python, uvloop } => {
            let mut c = command(plan, pinned, python);
            c.arg(&plan.script);
            if *uvloop {
                c.arg("--uvloop");
            }
            c
        }
    };
    cmd.args(["--addr", "127.0.0.1:0"]);
    let server = Proc::start(cmd).map_err(|e| format!("server: {e}"))?;
    let port = server
        .out
        .expect("listening on ", Duration::from_secs(30))
        .map_err(|e| format!("server: {e}"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("server: bad port `{port}`"))?;
    Ok((server, port))
}

/// One load run against a fresh server: the client's result lines.
fn run_load(plan: &Plan, sys: &System, load: &Load) -> Result<Vec<proc::ResultLine>, String> {
    let (mut server, port) = start_server(plan, sys, load.pinned)?;
    let mut cmd = command(plan, load.pinned, &plan.bin);
    cmd.arg("client")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--conns", &load.conns.to_string()])
        .args(["--size", &load.size.to_string()])
        .args(["--duration", &plan.duration.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--case", &load.case()])
        .args(["--system", sys.name]);
    let timeout = Duration::from_secs_f64(plan.warmup + plan.duration + 60.0);
    let lines = proc::run_bench(cmd, timeout).map_err(|e| format!("client: {e}"));
    server.stop(Duration::from_secs(5));
    lines
}

/// `VmRSS` of `pid` in bytes.
fn vm_rss(pid: u32) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The idle case: server RSS bytes per idle connection.
fn run_idle(plan: &Plan, sys: &System) -> Result<f64, String> {
    let (mut server, port) = start_server(plan, sys, false)?;
    // Let the interpreter (or runtime) settle before the baseline.
    thread::sleep(Duration::from_millis(200));
    let before = vm_rss(server.pid())?;
    let mut cmd = Command::new(&plan.bin);
    cmd.arg("idle")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--conns", &plan.idle_conns.to_string()]);
    let mut client = Proc::start(cmd).map_err(|e| format!("idle client: {e}"))?;
    let n = client
        .out
        .expect("ready ", Duration::from_secs(120))
        .map_err(|e| format!("idle client: {e}"))?;
    thread::sleep(Duration::from_millis(100));
    let after = vm_rss(server.pid())?;
    // The server goes first, so that TIME_WAIT lands on its side, not on the
    // client's ephemeral ports.
    server.stop(Duration::from_secs(10));
    client.stop(Duration::from_secs(10));
    let n: f64 = n.parse().map_err(|_| format!("bad ready count `{n}`"))?;
    Ok((after as f64 - before as f64) / n.max(1.0))
}

/// The strace case: syscalls per echoed message, per syscall and `total`.
fn run_strace(
    plan: &Plan,
    strace_bin: &Path,
    sys: &System,
    load: &Load,
    out: &Path,
) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let (server, port) = start_server(plan, sys, false)?;
    let mut cmd = Command::new(&plan.bin);
    // Long enough for attach + window + detach; `stop` ends it earlier.
    let duration = plan.strace_window + 60.0;
    cmd.arg("client")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--conns", &load.conns.to_string()])
        .args(["--size", &load.size.to_string()])
        .args(["--duration", &duration.to_string()])
        .args(["--warmup", "0"])
        .args(["--case", &load.case()])
        .args(["--system", sys.name]);
    let mut client = Proc::start(cmd).map_err(|e| format!("client: {e}"))?;
    client
        .out
        .expect("connected ", Duration::from_secs(30))
        .map_err(|e| format!("client: {e}"))?;
    thread::sleep(Duration::from_secs_f64(plan.warmup));

    let _ = fs::remove_file(out);
    let mut tracer = Command::new(strace_bin)
        .args(["-c", "-f", "-p", &server.pid().to_string(), "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start strace: {e}"))?;
    let tracer_err = Lines::new(tracer.stderr.take().expect("stderr is piped"));
    // `<argv0>: Process <pid> attached [with N threads]`.
    let attached = tracer_err.expect_by("Process ... attached", Duration::from_secs(10), |l| {
        l.contains(" attached").then_some(l)
    });
    let marks = attached.and_then(|_| {
        client.send("mark")?;
        let a = client.out.expect("mark ", Duration::from_secs(10))?;
        thread::sleep(Duration::from_secs_f64(plan.strace_window));
        client.send("mark")?;
        let b = client.out.expect("mark ", Duration::from_secs(10))?;
        match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) if b > a => Ok(b - a),
            _ => Err(format!("bad marks `{a}`, `{b}`")),
        }
    });
    // SIGINT: strace detaches and writes its summary.
    let _ = Command::new("kill")
        .args(["-INT", &tracer.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tracer.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = tracer.kill();
                let _ = tracer.wait();
                break;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
        }
    }
    let _ = client.send("stop");
    drop(client);
    drop(server);
    let msgs = marks?;
    let text = fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let counts = strace::parse_summary(&text)?;
    Ok(strace::net_per_op(&counts, &Default::default(), msgs))
}

// ---------------------------------------------------------------------------
// Report

/// Whether a larger value of the metric is better.
fn higher_is_better(case: &str) -> bool {
    case.ends_with("_msgs_per_s") || case.ends_with("_mb_per_s")
}

/// `system` against `reference` for this suite's metrics, > 1 when `system`
/// is better.
fn better_ratio(results: &Results, case: &str, system: &str, reference: &str) -> f64 {
    compare::better_ratio(results, case, system, reference, higher_is_better)
}

fn print_report(results: &Results, plan: &Plan, quick: bool, systems: &[&str]) {
    println!(
        "net suite: medians of {} round(s){}, {} s per load run; ratios > 1 mean the row's \
         system beats the reference",
        plan.rounds,
        if quick { ", QUICK" } else { "" },
        plan.duration
    );
    println!("(throughput: system/ref msgs/s; cpu: ref/system server CPU per message).");
    for note in NOTES {
        println!("  {note}");
    }
    println!();
    println!(
        "{:<13} | {:<13} | {:>9} | {:>8} | {:>14} | {:>12} | {:>12} | {:>13} | {:>13}",
        "case",
        "system",
        "msgs/s",
        "MB/s",
        "srv CPU us/msg",
        "(user part)",
        "syscalls/msg",
        "vs tokio t|c",
        "vs uvloop t|c"
    );
    println!("{}", "-".repeat(132));
    let mut loads: Vec<String> = Vec::new();
    for load in LOADS {
        let case = load.case();
        if !loads.contains(&case) {
            loads.push(case);
        }
    }
    for case in &loads {
        let msgs = format!("{case}_msgs_per_s");
        if !results.series.iter().any(|s| s.case == msgs) {
            continue;
        }
        for sys in systems {
            let m = |metric: &str| series_median(results, &format!("{case}_{metric}"), sys);
            let vs = |reference: &str| {
                if *sys == reference {
                    return "-".to_string();
                }
                let t = better_ratio(results, &msgs, sys, reference);
                let c = better_ratio(results, &format!("{case}_cpu_us_per_msg"), sys, reference);
                format!("{}|{}", cell_ratio(t), cell_ratio(c))
            };
            let sc = m("syscalls_per_msg");
            println!(
                "{:<13} | {:<13} | {:>9} | {:>8} | {:>14} | {:>12} | {:>12} | {:>13} | {:>13}",
                case,
                sys,
                fmt_num(m("msgs_per_s")),
                fmt_num(m("mb_per_s")),
                fmt_num(m("cpu_us_per_msg")),
                fmt_num(m("cpu_user_us_per_msg")),
                if sc.is_finite() {
                    fmt_num(sc)
                } else {
                    "".into()
                },
                vs(REFS[0]),
                vs(REFS[1]),
            );
        }
    }
    // Idle memory.
    let idle = format!("idle_{}_bytes_per_conn", plan.idle_conns);
    if results.series.iter().any(|s| s.case == idle) {
        println!();
        println!(
            "{:<13} | {:<13} | {:>14} | {:>8} | {:>9}",
            "case", "system", "bytes/conn", "vs tokio", "vs uvloop"
        );
        println!("{}", "-".repeat(71));
        for sys in systems {
            let r = |reference: &str| {
                if *sys == reference {
                    "-".to_string()
                } else {
                    cell_ratio(better_ratio(results, &idle, sys, reference))
                }
            };
            println!(
                "{:<13} | {:<13} | {:>14} | {:>8} | {:>9}",
                format!("idle_{}", plan.idle_conns),
                sys,
                fmt_num(series_median(results, &idle, sys)),
                r(REFS[0]),
                r(REFS[1])
            );
        }
    }
    // Syscall breakdown.
    let total_case = format!("{STRACE_CASE}_syscalls_per_msg");
    if results.series.iter().any(|s| s.case == total_case) {
        println!();
        println!("syscalls per echoed message on {STRACE_CASE} (strace -c -f -p <server>):");
        for sys in systems {
            let (total, list) = compare::syscall_breakdown(results, &total_case, sys, 8);
            println!("  {sys:<13} {total:>6} total: {list}");
        }
    }
    // Spread of the headline metric.
    println!();
    println!("spread (min..max over rounds) of msgs/s and server CPU us/msg:");
    for case in &loads {
        for metric in ["msgs_per_s", "cpu_us_per_msg"] {
            let name = format!("{case}_{metric}");
            if let Some(cells) = spread(results, &name) {
                println!("  {name:<26} {cells}");
            }
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
        r.push("1k_x50_msgs_per_s", "aioloop", "msg/s", 200.0);
        r.push("1k_x50_msgs_per_s", "tokio", "msg/s", 100.0);
        r.push("1k_x50_cpu_us_per_msg", "aioloop", "us/msg", 2.0);
        r.push("1k_x50_cpu_us_per_msg", "tokio", "us/msg", 4.0);
        assert_eq!(
            better_ratio(&r, "1k_x50_msgs_per_s", "aioloop", "tokio"),
            2.0
        );
        assert_eq!(
            better_ratio(&r, "1k_x50_cpu_us_per_msg", "aioloop", "tokio"),
            2.0
        );
        assert!(better_ratio(&r, "1k_x50_msgs_per_s", "aioloop", "uvloop").is_nan());
    }

    #[test]
    fn pads_missing_syscalls() {
        let mut r = Results::default();
        r.push("1k_x50_syscalls_per_msg", "tokio", "syscalls/msg", 3.0);
        r.push("1k_x50_syscalls_per_msg", "tokio", "syscalls/msg", 3.0);
        r.push(
            "1k_x50_syscalls_per_msg:recvfrom",
            "tokio",
            "syscalls/msg",
            1.0,
        );
        r.push(
            "1k_x50_syscalls_per_msg:mmap",
            "tokio",
            "syscalls/msg",
            0.001,
        );
        fill_missing_syscalls(&mut r, "_syscalls_per_msg");
        let recv = r
            .series
            .iter()
            .find(|s| s.case.ends_with(":recvfrom"))
            .unwrap();
        assert_eq!(recv.runs, vec![1.0, 0.0]);
        assert!(!r.series.iter().any(|s| s.case.ends_with(":mmap")));
    }
}
