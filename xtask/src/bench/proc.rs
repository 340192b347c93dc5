//! Running one benchmark process with a timeout and parsing its result lines.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// One `result case=.. system=.. value=.. unit=.. [n=..]` line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultLine {
    pub case: String,
    pub system: String,
    pub value: f64,
    pub unit: String,
    /// Operation count of the run (0 if the line did not say).
    pub n: u64,
}

/// Runs `cmd` (stdout captured, stderr inherited), killing its whole process
/// group after `timeout`; returns its result lines, or an error if it failed,
/// timed out or printed none.
pub fn run_bench(mut cmd: Command, timeout: Duration) -> Result<Vec<ResultLine>, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                // The child leads its own process group: kill all of it (for
                // strace runs that includes the traced benchmark).
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!("timed out after {}s, killed", timeout.as_secs()));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let lines: Vec<ResultLine> = out.lines().filter_map(parse_line).collect();
    if lines.is_empty() {
        return Err("printed no result line".into());
    }
    Ok(lines)
}

/// Parses `result key=value ...`; other lines give `None`.
pub fn parse_line(line: &str) -> Option<ResultLine> {
    let mut words = line.split_whitespace();
    if words.next()? != "result" {
        return None;
    }
    let (mut case, mut system, mut value, mut unit, mut n) = (None, None, None, None, 0);
    for word in words {
        let (k, v) = word.split_once('=')?;
        match k {
            "case" => case = Some(v.to_string()),
            "system" => system = Some(v.to_string()),
            "value" => value = v.parse::<f64>().ok(),
            "unit" => unit = Some(v.to_string()),
            "n" => n = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(ResultLine {
        case: case?,
        system: system?,
        value: value?,
        unit: unit?,
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn parses_result_lines() {
        let r = parse_line("result case=call_soon system=aioloop value=12.5 unit=ns/op n=1000")
            .unwrap();
        assert_eq!(r.case, "call_soon");
        assert_eq!(r.system, "aioloop");
        assert_eq!(r.value, 12.5);
        assert_eq!(r.unit, "ns/op");
        assert_eq!(r.n, 1000);
        assert!(parse_line("note something").is_none());
        assert!(parse_line("result case=x system=y value=nope unit=ms").is_none());
    }
}
