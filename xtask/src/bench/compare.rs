//! What the suites that compare several systems against reference systems
//! (net, process) share: medians by (case, system), ratios that point the
//! right way, the per-syscall breakdown padding, and the JSON report.
//!
//! A suite supplies `higher`: whether a larger value of a case's metric is
//! better (msgs/s, MB/s, spawns/s) or worse (CPU, syscalls, µs).

use super::{fmt_num, fmt_ratio, median, series_json, Results};
use crate::json::Json;

/// The median of one (case, system) series; NaN if there is none.
pub(super) fn series_median(results: &Results, case: &str, system: &str) -> f64 {
    results
        .series
        .iter()
        .find(|s| s.case == case && s.system == system)
        .map(|s| median(&s.runs))
        .unwrap_or(f64::NAN)
}

/// `system` against `reference`, > 1 when `system` is better; NaN if
/// either is missing.
pub(super) fn better_ratio(
    results: &Results,
    case: &str,
    system: &str,
    reference: &str,
    higher: fn(&str) -> bool,
) -> f64 {
    let (s, r) = (
        series_median(results, case, system),
        series_median(results, case, reference),
    );
    let ratio = if higher(case) { s / r } else { r / s };
    if ratio.is_finite() && ratio > 0.0 {
        ratio
    } else {
        f64::NAN
    }
}

/// `<total> total: <name> <median>, ...` for `system`'s per-syscall series
/// of `total_case` (the `top` most frequent, at least 0.01 per operation).
pub(super) fn syscall_breakdown(
    results: &Results,
    total_case: &str,
    system: &str,
    top: usize,
) -> (String, String) {
    let prefix = format!("{total_case}:");
    let mut parts: Vec<(&str, f64)> = results
        .series
        .iter()
        .filter(|s| s.system == system && s.case.starts_with(&prefix))
        .map(|s| (&s.case[prefix.len()..], median(&s.runs)))
        .filter(|(_, m)| *m >= 0.01)
        .collect();
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    let list: Vec<String> = parts
        .iter()
        .take(top)
        .map(|(n, m)| format!("{n} {}", fmt_num(*m)))
        .collect();
    (
        fmt_num(series_median(results, total_case, system)),
        list.join(", "),
    )
}

/// A ratio for a table cell, `-` when there is none.
pub(super) fn cell_ratio(r: f64) -> String {
    if r.is_finite() {
        fmt_ratio(r)
    } else {
        "-".into()
    }
}

/// The per-syscall series (`<total case>:<name>`) of the totals whose case
/// ends with `total_suffix`: those that never reach 0.01 per operation are
/// dropped, the others padded with zeros to as many runs as their total
/// (a syscall absent from one round's strace was made 0 times).
pub(super) fn fill_missing_syscalls(results: &mut Results, total_suffix: &str) {
    let totals: Vec<(String, String, usize)> = results
        .series
        .iter()
        .filter(|s| s.case.ends_with(total_suffix))
        .map(|s| (s.case.clone(), s.system.clone(), s.runs.len()))
        .collect();
    let part = format!("{total_suffix}:");
    results
        .series
        .retain(|s| !s.case.contains(&part) || s.runs.iter().any(|v| *v >= 0.01));
    for s in &mut results.series {
        if let Some((total_case, _)) = s.case.split_once(':') {
            let want = totals
                .iter()
                .find(|(c, sys, _)| c == total_case && *sys == s.system)
                .map(|t| t.2)
                .unwrap_or(0);
            while s.runs.len() < want {
                s.runs.push(0.0);
            }
        }
    }
}

/// What a suite's JSON report says besides its results.
pub(super) struct Report<'a> {
    pub(super) suite: &'a str,
    pub(super) rounds: usize,
    pub(super) quick: bool,
    pub(super) refs: &'a [&'a str],
    pub(super) systems: &'a [&'a str],
    pub(super) higher: fn(&str) -> bool,
}

/// The suite's JSON: every series with its median and runs, the ratio of
/// every system against every reference for each case (per-syscall series
/// excepted), then `extra` fields and the failures.
pub(super) fn report_json(
    report: &Report<'_>,
    results: &Results,
    extra: Vec<(&str, Json)>,
    failures: &[String],
) -> Json {
    let rows = series_json(results);
    let mut cases: Vec<&str> = Vec::new();
    for s in &results.series {
        if !cases.contains(&s.case.as_str()) && !s.case.contains(':') {
            cases.push(&s.case);
        }
    }
    let mut ratio_rows = Vec::new();
    for case in cases {
        for reference in report.refs {
            for sys in report.systems.iter().filter(|s| *s != reference) {
                let r = better_ratio(results, case, sys, reference, report.higher);
                if !r.is_finite() {
                    continue;
                }
                let (num, den) = if (report.higher)(case) {
                    (*sys, *reference)
                } else {
                    (*reference, *sys)
                };
                ratio_rows.push(Json::obj([
                    ("case", Json::str(case)),
                    ("system", Json::str(*sys)),
                    ("reference", Json::str(*reference)),
                    ("numerator", Json::str(num)),
                    ("denominator", Json::str(den)),
                    ("ratio", Json::Num(r)),
                ]));
            }
        }
    }
    let mut fields = vec![
        ("suite", Json::str(report.suite)),
        ("rounds", Json::Num(report.rounds as f64)),
        ("quick", Json::Bool(report.quick)),
        ("results", Json::Arr(rows)),
        ("ratios", Json::Arr(ratio_rows)),
    ];
    fields.extend(extra);
    fields.push((
        "failures",
        Json::Arr(failures.iter().map(|f| Json::str(f.as_str())).collect()),
    ));
    Json::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}
