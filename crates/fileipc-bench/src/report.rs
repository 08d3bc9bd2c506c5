//! From samples to result lines: medians, ratios, the goals, the table and the JSON lines.
//!
//! `ours` and `baseline_value` are medians over the rounds; `ratio` is the median over
//! rounds of ours / baseline measured in the same round (a median of ratios), which
//! cancels most of the machine's drift between rounds. It is ours / baseline for rates and
//! latencies alike; `goal` says which way is better. `cpu_ours_ns` and `cpu_baseline_ns`
//! are medians over rounds of the workers' CPU time (user + system) per operation.
//!
//! Goals belong to a regime: those of a quiet machine are decided in runs without
//! `--load`, those of a loaded machine (marked "under load") in runs with it. With
//! `--repeat N`, summary lines give per line the median, min and max of the N runs'
//! ratios and decide the goal on the medians.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::harness::{PerContender, Sample, Setup};
use crate::workloads::{Metric, Workload};

/// One result line of a run, or (`summary`) of the runs of a `--repeat`.
#[derive(Debug, Clone, Serialize)]
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
    /// Workers' CPU time (user + system) per operation, ns: ours, and the baseline's
    /// (on the workload's main line; `None` on its other lines and where not measured).
    cpu_ours_ns: Option<f64>,
    cpu_baseline_ns: Option<f64>,
    /// Load processes running beside every contender (`--load`).
    load: usize,
    /// The mean share of a CPU each load process got during the workload (`None`
    /// without load).
    load_busy: Option<f64>,
    /// Which run of a `--repeat` (1-based); `None` on summary lines.
    run: Option<usize>,
    /// A summary line of a `--repeat`: `ours`, `baseline_value`, `ratio`, the CPU figures
    /// and `load_busy` are medians over the runs.
    summary: bool,
    /// On summary lines: the smallest and largest ratio of the runs, and how many runs
    /// had one.
    ratio_min: Option<f64>,
    ratio_max: Option<f64>,
    runs: Option<usize>,
    #[serde(skip)]
    g: Option<Goal>,
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
    fn text(self, loaded: bool) -> String {
        let t = match self {
            Goal::RatioMin(x) => format!(">= {x}"),
            Goal::RatioMax(x) => format!("<= {x}"),
            Goal::RateWithin(x) => format!(">= 1/{x}"),
            Goal::AbsMin(_, t) | Goal::AbsMax(_, t) => t.to_owned(),
        };
        if loaded { format!("{t} under load") } else { t }
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

/// The goal of (result line, baseline) in a run with `load` load processes: the goals of
/// a quiet machine without load, those of a loaded machine with it.
fn goal(bench: &str, baseline: &str, load: usize) -> Option<Goal> {
    if load > 0 {
        load_goal(bench, baseline)
    } else {
        quiet_goal(bench, baseline)
    }
}

/// The goals on a quiet machine, by (result line, baseline).
fn quiet_goal(bench: &str, baseline: &str) -> Option<Goal> {
    use Goal::*;
    Some(match (bench, baseline) {
        ("queue.1p1c.64B", "posix_mq") => RatioMin(2.0),
        ("queue.1p1c.64B", "seed_files") => RatioMin(100.0),
        ("queue.1p1c.4KiB" | "queue.4p4c.4KiB", "posix_mq") => RatioMin(1.5),
        ("queue.1p1c.4KiB" | "queue.4p4c.4KiB", "pipe") => RatioMin(1.0),
        ("queue.1p1c.64KiB", "posix_mq" | "pipe") => RatioMin(1.0),
        ("queue.4p4c.64KiB", "posix_mq" | "posix_mq+flock" | "pipe+flock") => RatioMin(1.0),
        ("queue.pingpong.64B", "posix_mq") => RatioMax(1.5),
        ("queue.4p4c.64B", "ours:queue.1p1c.64B") => RatioMin(1.2),
        ("queue.claim.1p1c.64B", "posix_mq") => RatioMin(1.0),
        ("queue.durable.4p.64B", "ours:queue.durable.1p.64B") => RatioMin(3.0),
        ("mutex.uncontended" | "mutex.uncontended.word", "flock") => RatioMax(1.5),
        ("mutex.uncontended" | "mutex.uncontended.word", "pthread_robust") => RatioMax(2.0),
        ("mutex.contended4" | "mutex.contended4.word", "flock") => RatioMin(0.5),
        ("mutex.contended4.wait_p99" | "mutex.contended4.word.wait_p99", "flock") => {
            AbsMax(10_000.0, "<= 10 ms")
        }
        ("mutex.contended4.wait_max" | "mutex.contended4.word.wait_max", "flock") => RatioMax(1.0),
        ("mutex.contended4.fairness" | "mutex.contended4.word.fairness", "flock") => {
            AbsMin(0.8, ">= 0.8")
        }
        ("mutex.handoff", "posix_sem_pingpong") => RatioMax(2.0),
        ("semaphore.uncontended", "flock") => RatioMax(2.0),
        ("semaphore.uncontended", "posix_sem") => RatioMax(4.0),
        ("semaphore.handoff", "posix_sem_pingpong") => RatioMax(2.0),
        ("kv.get", "sqlite") => AbsMin(200_000.0, ">= 200000 ops/s"),
        ("kv.set", "seed_json") => RatioMin(10.0),
        ("kv.incr4", "sqlite") => RatioMin(2.5),
        ("kv.incr4.p99", "sqlite") => AbsMax(1_000.0, "<= 1 ms"),
        ("event.wake", "inotify") => RatioMax(1.5),
        ("event.wake", "poll10ms") => RatioMax(0.05),
        ("redis.mutex.uncontended", "redis_set_nx_px+lua") => RatioMax(1.5),
        ("redis.queue.1p1c.64B", "redis_lpush_brpop") => RateWithin(1.5),
        _ => return None,
    })
}

/// The goals on a machine with `--load 1` or `--load 2` busy processes beside every
/// contender, by (result line, baseline).
fn load_goal(bench: &str, baseline: &str) -> Option<Goal> {
    use Goal::*;
    Some(match (bench, baseline) {
        ("queue.1p1c.64B", "posix_mq") => RatioMin(2.0),
        ("queue.pingpong.64B", "posix_mq") => RatioMax(1.5),
        ("kv.incr4", "sqlite") => RatioMin(1.5),
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

/// Per-round values of the measurement `key` for a contender.
fn series(samples: &[Option<Sample>], key: &str) -> Vec<Option<f64>> {
    samples
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.get(key).copied()))
        .collect()
}

/// One contender's per-round values: of the line's metric, and of CPU per operation (on
/// a workload's main line only).
struct Series {
    value: Vec<Option<f64>>,
    cpu: Vec<Option<f64>>,
}

impl Series {
    fn of(samples: &[Option<Sample>], m: &Metric) -> Series {
        Series {
            value: series(samples, m.key),
            cpu: if m.suffix.is_empty() {
                series(samples, "cpu")
            } else {
                Vec::new()
            },
        }
    }
}

/// A run's line of `bench` against `baseline`, where the load processes got `load_busy`.
struct Line<'a> {
    bench: String,
    m: &'a Metric,
    ours: Series,
    baseline: String,
    base: Series,
    load_busy: Option<f64>,
}

fn row(setup: &Setup, run: usize, l: Line<'_>) -> Row {
    let med = |v: &[Option<f64>]| median(v.iter().flatten().copied().collect());
    let o = med(&l.ours.value);
    let b = med(&l.base.value);
    let ratio = median(
        l.ours
            .value
            .iter()
            .zip(&l.base.value)
            .filter_map(|(o, b)| Some(o.as_ref()? / b.as_ref()?))
            .collect(),
    );
    let g = goal(&l.bench, &l.baseline, setup.load);
    let met = match (g, o) {
        (Some(g), Some(o)) => g.met(o, ratio),
        _ => None,
    };
    Row {
        bench: l.bench,
        unit: l.m.unit,
        ours: o,
        baseline: l.baseline,
        baseline_value: b,
        ratio,
        goal: g.map(|g| g.text(setup.load > 0)),
        met,
        better: if l.m.higher_is_better {
            "higher"
        } else {
            "lower"
        },
        fs: setup.fs.clone(),
        cpu_ours_ns: med(&l.ours.cpu),
        cpu_baseline_ns: med(&l.base.cpu),
        load: setup.load,
        load_busy: l.load_busy,
        run: Some(run),
        summary: false,
        ratio_min: None,
        ratio_max: None,
        runs: None,
        g,
    }
}

/// A workload's rounds, and the share of a CPU its load processes got.
pub(crate) type Measured<'a> = (&'a Workload, PerContender, Option<f64>);

/// All result lines of run `run`: for each workload, metric and baseline one line, then
/// the derived ours-versus-ours lines.
pub(crate) fn rows(setup: &Setup, results: &[Measured<'_>], run: usize) -> Vec<Row> {
    let mut out = Vec::new();
    for (w, per, busy) in results {
        let ours = per.iter().find(|(c, _)| c.ours);
        for m in &w.metrics {
            let bench = format!("{}{}", w.name, m.suffix);
            for (c, samples) in per.iter().filter(|(c, _)| !c.ours) {
                let base = Series::of(samples, m);
                let ours = match ours {
                    Some((_, s)) => Series::of(s, m),
                    None => Series {
                        value: vec![None; base.value.len()],
                        cpu: Vec::new(),
                    },
                };
                let line = Line {
                    bench: bench.clone(),
                    m,
                    ours,
                    baseline: c.label.to_owned(),
                    base,
                    load_busy: *busy,
                };
                out.push(row(setup, run, line));
            }
        }
    }
    for (hi, lo) in DERIVED {
        let find = |name: &str| results.iter().find(|(w, _, _)| w.name == name);
        if let (Some((wh, ph, busy)), Some((_, pl, _))) = (find(hi), find(lo)) {
            let m = &wh.metrics[0];
            let of = |p: &PerContender| {
                p.iter()
                    .find(|(c, _)| c.ours)
                    .map(|(_, s)| Series::of(s, m))
                    .unwrap_or(Series {
                        value: Vec::new(),
                        cpu: Vec::new(),
                    })
            };
            let line = Line {
                bench: hi.to_owned(),
                m,
                ours: of(ph),
                baseline: format!("ours:{lo}"),
                base: of(pl),
                load_busy: *busy,
            };
            out.push(row(setup, run, line));
        }
    }
    out
}

/// The summary lines of the runs of a `--repeat`: per (line, baseline), in the order of
/// the first run, medians over the runs, and the smallest and largest ratio.
pub(crate) fn summary(runs: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|r0| {
            let same: Vec<&Row> = runs
                .iter()
                .filter_map(|rows| {
                    rows.iter()
                        .find(|r| r.bench == r0.bench && r.baseline == r0.baseline)
                })
                .collect();
            let med =
                |f: fn(&Row) -> Option<f64>| median(same.iter().filter_map(|r| f(r)).collect());
            let ratios: Vec<f64> = same.iter().filter_map(|r| r.ratio).collect();
            let ours = med(|r| r.ours);
            let ratio = med(|r| r.ratio);
            let met = match (r0.g, ours) {
                (Some(g), Some(o)) => g.met(o, ratio),
                _ => None,
            };
            Row {
                ours,
                baseline_value: med(|r| r.baseline_value),
                ratio,
                met,
                cpu_ours_ns: med(|r| r.cpu_ours_ns),
                cpu_baseline_ns: med(|r| r.cpu_baseline_ns),
                load_busy: med(|r| r.load_busy),
                run: None,
                summary: true,
                ratio_min: ratios.iter().copied().min_by(f64::total_cmp),
                ratio_max: ratios.iter().copied().max_by(f64::total_cmp),
                runs: Some(ratios.len()),
                ..r0.clone()
            }
        })
        .collect()
}

/// The environment: kernel, CPUs, file system, settings.
pub(crate) fn print_header(setup: &Setup, json: bool) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = if setup.load > 0 {
        format!(
            "load: {} CPU-bound processes (busy loops, nice {}) beside every contender; \
             goals of a loaded machine\n",
            setup.load,
            crate::sys::nice()
        )
    } else {
        "load: none (goals of a quiet machine)\n".to_owned()
    };
    let text = format!(
        "fileipc bench: kernel {kernel}, {cpus} CPUs, dir {} ({}), {} rounds{}{}\n\
         {load}\
         posix_mq: {}\n\
         sqlite: bundled, WAL, synchronous=NORMAL, busy_timeout 10 s, one upsert per op\n",
        setup.root.display(),
        setup.fs,
        setup.rounds,
        if setup.quick { ", quick" } else { "" },
        if setup.repeat > 1 {
            format!(", {} full runs", setup.repeat)
        } else {
            String::new()
        },
        setup.mq_note,
    );
    let text = match &setup.redis {
        // The file system, POSIX mq and SQLite play no part in a Redis run.
        Some((_, about)) => {
            let mut lines = text.lines();
            let first = lines.next().unwrap_or_default();
            let load = lines.next().unwrap_or_default();
            format!("{first}\n{load}\nredis: {about}\n")
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

fn met_text(r: &Row) -> &'static str {
    match (r.goal.is_some(), r.met) {
        (false, _) => "",
        (true, Some(true)) => "met",
        (true, Some(false)) => "NOT MET",
        (true, None) => "not measured",
    }
}

/// CPU per operation in microseconds, for the table.
fn fmt_cpu(ns: Option<f64>) -> String {
    match ns {
        Some(ns) => fmt(Some(ns / 1e3)),
        None => String::new(),
    }
}

fn ratio_text(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.3}"))
}

/// The shares of a CPU the load processes got, as text ("" without load).
fn load_text(rows: &[Row]) -> String {
    let busy: Vec<f64> = rows.iter().filter_map(|r| r.load_busy).collect();
    let (Some(lo), Some(hi)) = (
        busy.iter().copied().min_by(f64::total_cmp),
        busy.iter().copied().max_by(f64::total_cmp),
    ) else {
        return String::new();
    };
    format!(
        "load processes got {:.0}% to {:.0}% of a CPU each, across workloads\n",
        lo * 100.0,
        hi * 100.0
    )
}

/// The table, or one JSON object per line. The `cpu us` columns are the workers' CPU time
/// per operation (ours, then the baseline's), on each workload's main line.
pub(crate) fn print(rows: &[Row], json: bool) -> Result<()> {
    write_rows(rows, json, None)
}

/// The summary of a `--repeat`: per line, the median of the runs' figures and ratios,
/// their smallest and largest ratio, the goal decided on the medians; or one JSON object
/// per line (`"summary": true`).
pub(crate) fn print_summary(rows: &[Row], json: bool) -> Result<()> {
    let runs = rows.iter().filter_map(|r| r.runs).max().unwrap_or(0);
    write_rows(rows, json, Some(runs))
}

/// One JSON object per row, or the table: with `summary_of` (a `--repeat` of that many
/// runs), a heading and the columns of the runs' least and greatest ratio; without it,
/// the load processes' share of a CPU after the table.
fn write_rows(rows: &[Row], json: bool, summary_of: Option<usize>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    let range = |min: &str, max: &str| match summary_of {
        Some(_) => format!(" {min:>7} {max:>7}"),
        None => String::new(),
    };
    if let Some(runs) = summary_of {
        write!(
            out,
            "\nsummary: median of {runs} runs (min and max of the runs' ratios)"
        )?;
    }
    writeln!(
        out,
        "\n{:<28} {:>9} {:<8} {:>7} {:<26} {:>9} {:>7} {:>7}{} {:<22} met?",
        "workload",
        "ours",
        "unit",
        "cpu us",
        "baseline",
        "value",
        "cpu us",
        "ratio",
        range("min", "max"),
        "goal"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<28} {:>9} {:<8} {:>7} {:<26} {:>9} {:>7} {:>7}{} {:<22} {}",
            r.bench,
            fmt(r.ours),
            r.unit,
            fmt_cpu(r.cpu_ours_ns),
            r.baseline,
            fmt(r.baseline_value),
            fmt_cpu(r.cpu_baseline_ns),
            ratio_text(r.ratio),
            range(&ratio_text(r.ratio_min), &ratio_text(r.ratio_max)),
            r.goal.as_deref().unwrap_or(""),
            met_text(r),
        )?;
    }
    if summary_of.is_none() {
        write!(out, "{}", load_text(rows))?;
    }
    Ok(())
}
