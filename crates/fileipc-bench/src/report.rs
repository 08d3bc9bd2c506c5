//! From samples to result lines: medians, ratios, the goals, the table and the JSON lines.
//!
//! `ours` and `baseline_value` are medians over the rounds; `ratio` is the median over
//! rounds of ours / baseline measured in the same round (a median of ratios), which
//! cancels most of the machine's drift between rounds. It is ours / baseline for rates and
//! latencies alike; `goal` says which way is better.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::harness::{PerContender, Sample, Setup};
use crate::workloads::{Metric, Workload};

/// One result line.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    bench: String,
    unit: &'static str,
    ours: Option<f64>,
    baseline: String,
    baseline_value: Option<f64>,
    ratio: Option<f64>,
    goal: Option<String>,
    met: Option<bool>,
    /// "higher" or "lower": which way is better for this line's unit.
    better: &'static str,
    fs: String,
}

/// A goal on one result line.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// ratio >= x
    RatioMin(f64),
    /// ratio <= x
    RatioMax(f64),
    /// ours >= x (in the line's unit), with its text
    AbsMin(f64, &'static str),
    /// ours <= x (in the line's unit), with its text
    AbsMax(f64, &'static str),
    /// ratio >= 1/x: a rate within x times the baseline's
    RateWithin(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::RatioMin(x) => format!(">= {x}"),
            Goal::RatioMax(x) => format!("<= {x}"),
            Goal::RateWithin(x) => format!(">= 1/{x}"),
            Goal::AbsMin(_, t) | Goal::AbsMax(_, t) => t.to_owned(),
        }
    }

    fn met(self, ours: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Goal::RatioMin(x) => ratio.map(|r| r >= x),
            Goal::RatioMax(x) => ratio.map(|r| r <= x),
            Goal::RateWithin(x) => ratio.map(|r| r * x >= 1.0),
            Goal::AbsMin(x, _) => Some(ours >= x),
            Goal::AbsMax(x, _) => Some(ours <= x),
        }
    }
}

/// The goals, by (result line, baseline).
fn goal(bench: &str, baseline: &str) -> Option<Goal> {
    use Goal::*;
    Some(match (bench, baseline) {
        ("queue.1p1c.64B", "posix_mq") => RatioMin(2.0),
        ("queue.1p1c.64B", "seed_files") => RatioMin(100.0),
        ("queue.pingpong.64B", "posix_mq") => RatioMax(1.5),
        ("queue.4p4c.64B", "ours:queue.1p1c.64B") => RatioMin(1.0),
        ("queue.claim.1p1c.64B", "posix_mq") => RatioMin(1.0),
        ("queue.durable.4p.64B", "ours:queue.durable.1p.64B") => RatioMin(3.0),
        ("mutex.uncontended", "flock") => RatioMax(1.5),
        ("mutex.contended4.wait_p99", "flock") => AbsMax(10_000.0, "<= 10 ms"),
        ("mutex.handoff", "posix_sem_pingpong") => RatioMax(2.0),
        ("semaphore.uncontended", "flock") => RatioMax(2.0),
        ("semaphore.uncontended", "posix_sem") => RatioMax(4.0),
        ("semaphore.handoff", "posix_sem_pingpong") => RatioMax(2.0),
        ("kv.get", "sqlite") => AbsMin(200_000.0, ">= 200000 ops/s"),
        ("kv.set", "seed_json") => RatioMin(10.0),
        ("kv.incr4", "sqlite") => RatioMin(2.0),
        ("kv.incr4.p99", "sqlite") => AbsMax(5_000.0, "<= 5 ms"),
        ("event.wake", "inotify") => RatioMax(1.5),
        ("event.wake", "poll10ms") => RatioMax(0.05),
        ("redis.mutex.uncontended", "redis_set_nx_px+lua") => RatioMax(1.5),
        ("redis.queue.1p1c.64B", "redis_lpush_brpop") => RateWithin(1.5),
        _ => return None,
    })
}

/// Comparisons of ours with ours on another workload (no baseline of their own).
const DERIVED: [(&str, &str); 2] = [
    ("queue.4p4c.64B", "queue.1p1c.64B"),
    ("queue.durable.4p.64B", "queue.durable.1p.64B"),
];

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Per-round values of `metric` for a contender.
fn series(samples: &[Option<Sample>], metric: &Metric) -> Vec<Option<f64>> {
    samples
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.get(metric.key).copied()))
        .collect()
}

fn row(
    setup: &Setup,
    bench: String,
    m: &Metric,
    ours: &[Option<f64>],
    baseline: String,
    base: &[Option<f64>],
) -> Row {
    let o = median(ours.iter().flatten().copied().collect());
    let b = median(base.iter().flatten().copied().collect());
    let ratio = median(
        ours.iter()
            .zip(base)
            .filter_map(|(o, b)| Some(o.as_ref()? / b.as_ref()?))
            .collect(),
    );
    let g = goal(&bench, &baseline);
    let met = match (g, o) {
        (Some(g), Some(o)) => g.met(o, ratio),
        _ => None,
    };
    Row {
        bench,
        unit: m.unit,
        ours: o,
        baseline,
        baseline_value: b,
        ratio,
        goal: g.map(Goal::text),
        met,
        better: if m.higher_is_better {
            "higher"
        } else {
            "lower"
        },
        fs: setup.fs.clone(),
    }
}

/// All result lines: for each workload, metric and baseline one line, then the derived
/// ours-versus-ours lines.
pub(crate) fn rows(setup: &Setup, results: &[(&Workload, PerContender)]) -> Vec<Row> {
    let mut out = Vec::new();
    for (w, per) in results {
        let ours = per.iter().find(|(c, _)| c.ours);
        for m in &w.metrics {
            let bench = format!("{}{}", w.name, m.suffix);
            let o = ours.map(|(_, s)| series(s, m)).unwrap_or_default();
            for (c, samples) in per.iter().filter(|(c, _)| !c.ours) {
                let b = series(samples, m);
                let o = if o.is_empty() {
                    vec![None; b.len()]
                } else {
                    o.clone()
                };
                out.push(row(setup, bench.clone(), m, &o, c.label.to_owned(), &b));
            }
        }
    }
    for (hi, lo) in DERIVED {
        let find = |name: &str| results.iter().find(|(w, _)| w.name == name);
        if let (Some((wh, ph)), Some((_, pl))) = (find(hi), find(lo)) {
            let m = &wh.metrics[0];
            let of = |p: &PerContender| {
                p.iter()
                    .find(|(c, _)| c.ours)
                    .map(|(_, s)| series(s, m))
                    .unwrap_or_default()
            };
            let (h, l) = (of(ph), of(pl));
            out.push(row(setup, hi.to_owned(), m, &h, format!("ours:{lo}"), &l));
        }
    }
    out
}

/// The environment: kernel, CPUs, file system, settings.
pub(crate) fn print_header(setup: &Setup, json: bool) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let text = format!(
        "fileipc bench: kernel {kernel}, {cpus} CPUs, dir {} ({}), {} rounds{}\n\
         posix_mq: {}\n\
         sqlite: bundled, WAL, synchronous=NORMAL, busy_timeout 10 s, one upsert per op\n",
        setup.root.display(),
        setup.fs,
        setup.rounds,
        if setup.quick { ", quick" } else { "" },
        setup.mq_note,
    );
    let text = match &setup.redis {
        // The file system, POSIX mq and SQLite play no part in a Redis run.
        Some((_, about)) => {
            let first = text.lines().next().unwrap_or_default();
            format!("{first}\nredis: {about}\n")
        }
        None => text,
    };
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

/// Three significant digits with an SI suffix.
fn fmt(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    let (x, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{suffix}")
}

/// The table, or one JSON object per line.
pub(crate) fn print(rows: &[Row], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "\n{:<28} {:>9} {:<8} {:<26} {:>9} {:>7} {:<16} met?",
        "workload", "ours", "unit", "baseline", "value", "ratio", "goal"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<28} {:>9} {:<8} {:<26} {:>9} {:>7} {:<16} {}",
            r.bench,
            fmt(r.ours),
            r.unit,
            r.baseline,
            fmt(r.baseline_value),
            r.ratio.map_or("-".into(), |x| format!("{x:.3}")),
            r.goal.as_deref().unwrap_or(""),
            match (r.goal.is_some(), r.met) {
                (false, _) => "",
                (true, Some(true)) => "met",
                (true, Some(false)) => "NOT MET",
                (true, None) => "not measured",
            }
        )?;
    }
    Ok(())
}
