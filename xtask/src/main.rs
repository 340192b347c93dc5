//! `cargo xtask`: project automation for aioloop (std only).
//!
//! Commands: `ci` (the full check suite), `api-check` (docs/API.md coverage) and `bench [SUITE]` (side-by-side
//! benchmarks against tokio, and asyncio/uvloop for `net` and `process`). Run `cargo xtask help` for the usage text.

mod api_check;
mod bench;
mod ci;
mod json;

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  ci                      fmt --check, clippy -D warnings, test (default backend,
                          AIOLOOP_BACKEND=polling, AIOLOOP_BACKEND=uring,
                          AIOLOOP_DEBUG=1), doc -D warnings, api-check
  api-check               docs/api-entries.txt vs docs/API.md rows, doc aliases
                          (target/doc search index, else sources) and named tests
  bench [SUITE] [OPTIONS] run benchmark suites side by side with tokio
                          SUITE: core, futures, net, process (default: all suites)
      --rounds N          rounds per suite (default 5, net 3; env AIOLOOP_BENCH_ROUNDS)
      --quick             10x smaller workloads (smoke test of the harness)
      --no-strace         skip the strace syscall counts (core: wake; net: 1k_x50;
                          process: spawn_seq, pipe_256m)
      --duration SECS     net: seconds measured per load run (default 3, quick 0.5)
      --no-python         net, process: no asyncio/uvloop rows (no venv, no pip)
  help                    print this text
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "ci" => ci::run(rest),
        "api-check" => api_check::run(rest),
        "bench" => bench::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("xtask: unknown command `{other}`\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A `cargo` command (honouring `$CARGO`) that runs in the workspace root.
pub fn cargo() -> Command {
    let bin = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(bin);
    cmd.current_dir(workspace_root());
    cmd
}

/// Prints an error for a bad command-line argument and returns exit code 2.
pub fn usage_error(msg: &str) -> ExitCode {
    eprintln!("xtask: {msg}\n");
    eprint!("{USAGE}");
    ExitCode::from(2)
}
