//! `cargo xtask ci`: the ordered list of checks that gate every change.

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One CI step: a cargo invocation with extra environment variables.
struct Step {
    /// Printed in `==> name` and `name: ok in 1.2s`.
    name: &'static str,
    /// Arguments to `cargo`.
    args: &'static [&'static str],
    /// Extra environment for this step only.
    env: &'static [(&'static str, &'static str)],
}

/// Every step, in order; the first failure stops the run.
const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        args: &["fmt", "--all", "--check"],
        env: &[],
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "test (default backend)",
        args: &["test", "--workspace"],
        env: &[],
    },
    Step {
        name: "test (AIOLOOP_BACKEND=polling)",
        args: &["test", "--workspace"],
        env: &[("AIOLOOP_BACKEND", "polling")],
    },
    Step {
        name: "test (AIOLOOP_DEBUG=1)",
        args: &["test", "--workspace"],
        env: &[("AIOLOOP_DEBUG", "1")],
    },
    Step {
        name: "doc",
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
];

/// Runs every step; exit code 1 at the first failure.
pub fn run(args: &[String]) -> ExitCode {
    if let Some(extra) = args.first() {
        return crate::usage_error(&format!("`ci` takes no arguments (got `{extra}`)"));
    }
    let total = Instant::now();
    for step in STEPS {
        println!("==> {}", step.name);
        let started = Instant::now();
        let mut cmd = crate::cargo();
        cmd.args(step.args);
        for (k, v) in step.env {
            cmd.env(k, v);
        }
        let ok = match cmd.status() {
            Ok(status) => status.success(),
            Err(e) => {
                eprintln!("xtask: cannot run cargo: {e}");
                false
            }
        };
        let took = secs(started.elapsed());
        if !ok {
            println!("{}: FAILED in {took}", step.name);
            println!(
                "ci: FAILED at `{}` after {}",
                step.name,
                secs(total.elapsed())
            );
            return ExitCode::FAILURE;
        }
        println!("{}: ok in {took}", step.name);
    }
    println!(
        "ci: all {} steps ok in {}",
        STEPS.len(),
        secs(total.elapsed())
    );
    ExitCode::SUCCESS
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
