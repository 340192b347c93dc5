//! `cargo xtask ci`: the ordered list of checks that gate every change.

use std::io::{BufRead, BufReader, Write};
use std::process::{ExitCode, Stdio};
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
            // The optional `hyper` feature (off by default) is built and
            // tested too: its module, example and tests/ecosystem/hyper_on_loop.rs.
            "--features",
            "hyper",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "check (no default features: the core loop alone)",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "test (default backend)",
        args: &["test", "--workspace", "--features", "hyper"],
        env: &[],
    },
    Step {
        name: "test (AIOLOOP_BACKEND=polling)",
        args: &["test", "--workspace", "--features", "hyper"],
        env: &[("AIOLOOP_BACKEND", "polling")],
    },
    Step {
        // The io_uring backend (tests/core/uring.rs checks that the kernel
        // offers it, so this run cannot silently test epoll instead).
        name: "test (AIOLOOP_BACKEND=uring)",
        args: &["test", "--workspace", "--features", "hyper"],
        env: &[("AIOLOOP_BACKEND", "uring")],
    },
    Step {
        name: "test (AIOLOOP_DEBUG=1)",
        args: &["test", "--workspace", "--features", "hyper"],
        env: &[("AIOLOOP_DEBUG", "1")],
    },
    Step {
        name: "doc",
        args: &["doc", "--workspace", "--no-deps", "--features", "hyper"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    Step {
        // Reads target/doc's search index, so it runs after `doc`.
        name: "api-check",
        args: &["xtask", "api-check"],
        env: &[],
    },
];

/// Runs every step; exit code 1 at the first failure.
pub fn run(args: &[String]) -> ExitCode {
    if let Some(extra) = args.first() {
        return crate::usage_error(&format!("`ci` takes no arguments (got `{extra}`)"));
    }
    let total = Instant::now();
    let mut counts = TestCounts::default();
    for step in STEPS {
        println!("==> {}", step.name);
        let started = Instant::now();
        let mut cmd = crate::cargo();
        cmd.args(step.args);
        for (k, v) in step.env {
            cmd.env(k, v);
        }
        let ok = if step.args.first() == Some(&"test") {
            run_counting(cmd, &mut counts)
        } else {
            match cmd.status() {
                Ok(status) => status.success(),
                Err(e) => {
                    eprintln!("xtask: cannot run cargo: {e}");
                    false
                }
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
            println!(
                "tests: {} passed, {} failed",
                counts.passed,
                counts.failed.max(1)
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
    // The closing line, summed over every test run of every step.
    println!("tests: {} passed, {} failed", counts.passed, counts.failed);
    ExitCode::SUCCESS
}

/// Totals of the `test result:` lines of every `cargo test` step.
#[derive(Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
}

impl TestCounts {
    /// Adds the counts of one `test result: ok. 12 passed; 0 failed; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let (number, label) = match words.as_slice() {
                [.., n, label] => (n.parse::<u64>().ok(), *label),
                _ => (None, ""),
            };
            match (number, label) {
                (Some(n), "passed") => self.passed += n,
                (Some(n), "failed") => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs a `cargo test` step, echoing its stdout and counting its results.
fn run_counting(mut cmd: std::process::Command, counts: &mut TestCounts) -> bool {
    cmd.stdout(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            return false;
        }
    };
    if let Some(out) = child.stdout.take() {
        let stdout = std::io::stdout();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            counts.add_line(&line);
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{line}");
        }
    }
    matches!(child.wait(), Ok(status) if status.success())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_sum_over_result_lines() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 5 tests");
        assert_eq!((c.passed, c.failed), (15, 2));
    }
}
