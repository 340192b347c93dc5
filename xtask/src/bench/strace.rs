//! Finding `strace` and parsing its `-c` summary table.

use std::collections::BTreeMap;
use std::env;
use std::path::PathBuf;

/// The `strace` binary on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join("strace"))
        .find(|p| p.is_file())
}

/// Parses the table written by `strace -c` into syscall -> calls, with the
/// summary row under the key `total`.
///
/// ```text
/// % time     seconds  usecs/call     calls    errors syscall
/// ------ ----------- ----------- --------- --------- ----------------
///  60.00    0.000006           0        12         1 epoll_wait
/// ------ ----------- ----------- --------- --------- ----------------
/// 100.00    0.000010           0        20         1 total
/// ```
pub fn parse_summary(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut counts = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("% time") {
            in_table = true;
            continue;
        }
        if !in_table || trimmed.is_empty() || trimmed.starts_with("---") {
            continue;
        }
        let cols: Vec<&str> = trimmed.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if cols.len() < 5 {
            continue;
        }
        let name = cols[cols.len() - 1];
        let Ok(calls) = cols[3].parse::<u64>() else {
            continue;
        };
        *counts.entry(name.to_string()).or_insert(0) += calls;
    }
    if !counts.contains_key("total") {
        return Err("no `total` row in the strace summary".into());
    }
    Ok(counts)
}

/// `(full - baseline) / n` per syscall (negative differences clamp to 0).
pub fn net_per_op(
    full: &BTreeMap<String, u64>,
    baseline: &BTreeMap<String, u64>,
    n: u64,
) -> BTreeMap<String, f64> {
    let n = n.max(1) as f64;
    full.iter()
        .map(|(name, calls)| {
            let base = baseline.get(name).copied().unwrap_or(0);
            (name.clone(), calls.saturating_sub(base) as f64 / n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.000006           0     20012         1 epoll_wait
 30.00    0.000003           0     10000           write
 10.00    0.000001           0         3           mmap
------ ----------- ----------- --------- --------- ----------------
100.00    0.000010           0     30015         1 total
";

    #[test]
    fn parses_and_nets() {
        let full = parse_summary(SAMPLE).unwrap();
        assert_eq!(full["epoll_wait"], 20012);
        assert_eq!(full["write"], 10000);
        assert_eq!(full["total"], 30015);
        let mut base = BTreeMap::new();
        base.insert("epoll_wait".to_string(), 12);
        base.insert("mmap".to_string(), 5);
        base.insert("total".to_string(), 17);
        let net = net_per_op(&full, &base, 10_000);
        assert_eq!(net["epoll_wait"], 2.0);
        assert_eq!(net["write"], 1.0);
        assert_eq!(net["mmap"], 0.0);
        assert!((net["total"] - 2.9998).abs() < 1e-9);
        assert!(parse_summary("garbage").is_err());
    }
}
