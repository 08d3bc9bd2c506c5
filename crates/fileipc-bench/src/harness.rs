//! The harness of `fileipc bench`: runs the workloads in rounds (A B C, B C A, ...), each
//! run of a contender in fresh worker processes, and turns the workers' reports into the
//! figures the report prints.
//!
//! Every run gets a fresh directory under `--dir` and fresh POSIX IPC names, so nothing
//! carries over between runs. With `--load N`, N busy-looping processes run beside every
//! contender of a workload (started before its first round, killed after its last), and
//! the CPU they got is reported. With `--repeat N`, the whole selection runs N times and
//! a summary gives, per line, the median, min and max of the N runs' ratios. Workers validate what they do (every message received once
//! and in per-producer order, a lock's shared counter never losing an increment, every
//! increment of the store counted) and a failure aborts the benchmark with the reason.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::hist::Hist;
use crate::report::{self, Row};
use crate::workloads::{Contender, Kind, Which, Workload, redis_workloads, workloads};
use crate::{baselines, redis_env, sys, workers};

/// Options of `fileipc bench`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  fileipc bench all\n  fileipc bench queue --dir /dev/shm\n  \
                        fileipc bench all --quick --json\n  \
                        fileipc bench queue --load 2\n  \
                        fileipc bench all --repeat 5\n  \
                        fileipc bench all --redis redis://127.0.0.1:6379\n  \
                        fileipc bench mutex --redis"
)]
pub struct BenchArgs {
    /// The workloads to run.
    #[arg(value_enum, default_value_t = Which::All)]
    which: Which,
    /// Tiny counts and 3 rounds: a smoke test that finishes in seconds.
    #[arg(long)]
    quick: bool,
    /// One JSON object per result line on stdout (the environment goes to stderr).
    #[arg(long)]
    json: bool,
    /// Directory on the file system to measure (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Rounds per workload (default 5, or 3 with --quick); medians are taken over rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Measure the Redis engine instead, each primitive beside raw redis-rs doing the same
    /// job, on the server at URL (`redis+unix:///SOCKET`, `redis://HOST[:PORT]`; the
    /// benchmark chooses the names). Without URL: a private redis-server on a unix socket.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    redis: Option<String>,
    /// N CPU-bound processes (busy loops, at the harness's nice value) running beside every
    /// contender for the whole of each workload; the goals decided are then those set for
    /// a loaded machine.
    #[arg(long, value_name = "N", default_value_t = 0)]
    load: usize,
    /// Runs the whole selection N times (each with its rounds) and ends with a summary:
    /// per line, the median, min and max of the N runs' ratios, the goal decided on the
    /// median.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
}

/// Facts about the run, printed with the results.
#[derive(Debug)]
pub(crate) struct Setup {
    /// The executable the workers run as (`EXE __bench-worker ...`).
    pub(crate) exe: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) fs: String,
    /// POSIX mq capacity by mq message size, smallest size first.
    pub(crate) mq_depth: Vec<(usize, usize)>,
    pub(crate) mq_note: String,
    pub(crate) rounds: usize,
    pub(crate) quick: bool,
    /// The Redis server of a `--redis` run, and its description for the header.
    pub(crate) redis: Option<(String, String)>,
    /// Load processes beside every contender (`--load`).
    pub(crate) load: usize,
    /// Full runs of the selection (`--repeat`).
    pub(crate) repeat: usize,
}

impl Setup {
    /// The POSIX mq capacity for mq messages of `size` bytes.
    fn mq_depth_for(&self, size: usize) -> usize {
        self.mq_depth
            .iter()
            .find(|(s, _)| *s >= size)
            .or(self.mq_depth.last())
            .map_or(10, |(_, d)| *d)
    }
}

/// `fileipc bench`: runs the workloads `args` select and prints their result lines.
///
/// Every worker is a new process `worker_exe __bench-worker ARGS...` (see
/// [`WORKER_SUBCOMMAND`](crate::WORKER_SUBCOMMAND)): the program at `worker_exe` must hand
/// that subcommand's arguments to [`worker`](crate::worker).
pub fn run(args: &BenchArgs, worker_exe: &Path) -> Result<ExitCode> {
    let base_dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    ensure!(base_dir.is_dir(), "{}: not a directory", base_dir.display());
    let root = base_dir.join(format!("fileipc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = (|| {
        let private;
        let redis = match args.redis.as_deref() {
            None => None,
            Some("") => {
                private = redis_env::PrivateServer::start(&root)?;
                let version = redis_env::check(&private.url)?;
                let about = format!("private redis-server {version} on {}", private.url);
                Some((private.url.clone(), about))
            }
            Some(url) => {
                let version = redis_env::check(url)?;
                let about = format!("redis-server {version} at {}", redis_env::redact(url));
                Some((url.to_owned(), about))
            }
        };
        run_in(args, &root, worker_exe, redis)
    })();
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run_in(
    args: &BenchArgs,
    root: &Path,
    worker_exe: &Path,
    redis: Option<(String, String)>,
) -> Result<ExitCode> {
    let rlimit = sys::raise_mq_rlimit(64 << 20);
    let chunk = baselines::mq_chunk(BIG);
    let mq_depth: Vec<(usize, usize)> = [64, 4096, chunk]
        .into_iter()
        .map(|size| (size, probe_mq_depth(size)))
        .collect();
    let parts = BIG.div_ceil(chunk);
    let mq_note = format!(
        "mq_maxmsg {} for 64 B, {} for 4 KiB messages, {} for {chunk} B (msg_max {}, \
         msgsize_max {}, RLIMIT_MSGQUEUE {} bytes); {}",
        mq_depth[0].1,
        mq_depth[1].1,
        mq_depth[2].1,
        sys::mq_msg_max(),
        sys::mq_msgsize_max(),
        rlimit,
        if parts > 1 {
            format!(
                "a 64 KiB message travels as {parts} mq messages of {chunk} B (with an \
                 flock per message on each side in 4P/4C: posix_mq+flock)"
            )
        } else {
            "a 64 KiB message is one mq message".to_owned()
        },
    );
    let setup = Setup {
        exe: worker_exe.to_path_buf(),
        root: root.to_path_buf(),
        fs: if redis.is_some() {
            "redis".into()
        } else {
            sys::fs_type(root)
        },
        mq_depth,
        mq_note,
        rounds: args.rounds.unwrap_or(if args.quick { 3 } else { 5 }).max(1),
        quick: args.quick,
        redis,
        load: args.load,
        repeat: args.repeat.max(1),
    };
    let all = if setup.redis.is_some() {
        redis_workloads()
    } else {
        workloads()
    };
    let selected: Vec<Workload> = all
        .into_iter()
        .filter(|w| args.which == Which::All || w.group == args.which)
        .collect();
    report::print_header(&setup, args.json);
    let started = Instant::now();
    let mut runs: Vec<Vec<Row>> = Vec::new();
    for run in 1..=setup.repeat {
        if setup.repeat > 1 {
            eprintln!("run {run} of {}", setup.repeat);
        }
        let mut results = Vec::new();
        for w in &selected {
            eprint!("{:<24}", w.name);
            let t = Instant::now();
            let (per, busy) =
                measure_loaded(&setup, w).with_context(|| format!("workload {}", w.name))?;
            match busy {
                Some(b) => eprintln!(
                    " {:>6.1} s, load {:.0}% of a CPU each",
                    t.elapsed().as_secs_f64(),
                    b * 100.0
                ),
                None => eprintln!(" {:>6.1} s", t.elapsed().as_secs_f64()),
            }
            results.push((w, per, busy));
        }
        let rows: Vec<Row> = report::rows(&setup, &results, run);
        if setup.repeat > 1 && !args.json {
            println!("\nrun {run} of {}:", setup.repeat);
        }
        report::print(&rows, args.json)?;
        runs.push(rows);
    }
    if setup.repeat > 1 {
        report::print_summary(&report::summary(&runs), args.json)?;
    }
    eprintln!(
        "total {:.1} s; ratio = median over rounds of ours/baseline in the same round{}",
        started.elapsed().as_secs_f64(),
        if setup.repeat > 1 {
            "; summary = median (min, max) of the runs' ratios"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The message size of the big-message lines (64 KiB).
pub(crate) const BIG: usize = 64 << 10;

/// Runs every round of a workload with `setup.load` load processes beside it; also
/// returns the mean share of a CPU each load process got (`None` without load).
fn measure_loaded(setup: &Setup, w: &Workload) -> Result<(PerContender, Option<f64>)> {
    if setup.load == 0 {
        return Ok((measure(setup, w)?, None));
    }
    let load = Load::start(setup)?;
    let per = measure(setup, w);
    let busy = load.stop();
    Ok((per?, Some(busy?)))
}

/// Busy-looping processes (`EXE __bench-worker --role load`), killed and reaped (with
/// their CPU time, by `wait4`) by `stop`, or on drop if the workload failed.
struct Load {
    children: Vec<Child>,
    started: Instant,
}

impl Load {
    /// Starts `setup.load` load processes and waits until each says it runs.
    fn start(setup: &Setup) -> Result<Load> {
        let mut load = Load {
            children: Vec::new(),
            started: Instant::now(),
        };
        let parent = std::process::id().to_string();
        for _ in 0..setup.load {
            let mut child = Command::new(&setup.exe)
                .arg(workers::WORKER_SUBCOMMAND)
                .args(["--role", "load", "--imp", "load", "--tag", "load"])
                .arg("--dir")
                .arg(&setup.root)
                .args(["--parent", &parent])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                // Nothing to say: a load process never holds the caller's stderr open.
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawning a load process {}", setup.exe.display()))?;
            let stdout = child.stdout.take().context("load process stdout")?;
            load.children.push(child);
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .context("reading from a load process")?;
            ensure!(line.trim() == "ready", "a load process said {line:?}");
        }
        load.started = Instant::now();
        Ok(load)
    }

    /// Kills and reaps the load processes; the mean share of a CPU each got since all
    /// were running.
    fn stop(mut self) -> Result<f64> {
        let wall = self.started.elapsed().as_nanos() as f64;
        let children = std::mem::take(&mut self.children);
        // Every one is killed, even after a failure to stop another.
        let cpu: Vec<std::io::Result<u64>> = children
            .iter()
            .map(|c| sys::kill_and_reap(c.id()))
            .collect();
        let mut total = 0u64;
        for c in cpu {
            total += c.context("stopping a load process")?;
        }
        Ok(total as f64 / wall.max(1.0) / children.len().max(1) as f64)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &self.children {
            let _ = sys::kill_and_reap(c.id());
        }
    }
}

/// The POSIX mq capacity to use for messages of `size` bytes: the largest of 256, 128,
/// ... 10 that `msg_max` and `RLIMIT_MSGQUEUE` allow (this harness changes no sysctl; as
/// root, `echo 256 > /proc/sys/fs/mqueue/msg_max` lets the baseline use deeper queues).
fn probe_mq_depth(size: usize) -> usize {
    let msg_max = sys::mq_msg_max();
    let name = format!("/fileipc-bench-probe-{}", std::process::id());
    for depth in [256, 128, 64, 32, 16, 10] {
        if depth > msg_max && depth > 10 {
            continue;
        }
        let ok = sys::Mq::open(&name, depth, size.max(16)).is_ok();
        sys::Mq::unlink(&name);
        if ok {
            return depth;
        }
    }
    msg_max.min(10)
}

/// Measurements of one contender in one round: metric key -> value.
pub(crate) type Sample = std::collections::BTreeMap<&'static str, f64>;

/// Per contender, its samples over the rounds (`None` where not measured).
pub(crate) type PerContender = Vec<(Contender, Vec<Option<Sample>>)>;

/// Runs every round of a workload: contenders alternate within each round, and the
/// starting contender rotates from round to round so none always goes first.
fn measure(setup: &Setup, w: &Workload) -> Result<PerContender> {
    let mut per: PerContender = w
        .contenders
        .iter()
        .map(|c| (*c, vec![None; setup.rounds]))
        .collect();
    let k = per.len();
    for round in 0..setup.rounds {
        for i in 0..k {
            let idx = (i + round) % k;
            let c = per[idx].0;
            let s = run_once(setup, w, c, round)
                .with_context(|| format!("{} ({}), round {}", c.label, c.imp, round + 1))?;
            per[idx].1[round] = Some(s);
            eprint!(".");
        }
    }
    Ok(per)
}

/// One worker process to spawn.
#[derive(Debug, Clone)]
struct Spec {
    role: &'static str,
    id: u32,
    producers: u32,
    consumers: u32,
}

fn spec(role: &'static str, id: u32, producers: u32, consumers: u32) -> Spec {
    Spec {
        role,
        id,
        producers,
        consumers,
    }
}

/// A worker's result line, parsed.
#[derive(Debug, Default)]
struct Out {
    kv: std::collections::BTreeMap<String, String>,
}

impl Out {
    fn num(&self, key: &str) -> Result<u64> {
        self.kv
            .get(key)
            .with_context(|| format!("worker result lacks {key}"))?
            .parse()
            .with_context(|| format!("worker result {key} is not a number"))
    }

    fn hist(&self) -> Result<Hist> {
        Hist::decode(self.kv.get("hist").context("worker result lacks hist")?)
    }
}

static RUN_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One run of one contender: fresh directory, fresh names, fresh processes.
fn run_once(setup: &Setup, w: &Workload, c: Contender, round: usize) -> Result<Sample> {
    let seq = RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("fileipc-bench-{}-{seq}", std::process::id());
    let dir = setup.root.join(format!("{}-{}-{round}", w.name, c.label));
    std::fs::create_dir_all(&dir)?;
    let (mut n, cap_ms) = if setup.quick { w.quick } else { w.full };
    if let (Kind::Flow { p, .. }, "seed_files") = (w.kind, c.imp) {
        // Each of its receives lists the whole directory: a backlog of thousands would
        // take minutes to drain. A few hundred messages measure it well enough.
        n = n.min(if setup.quick { 60 } else { 600 }) / u64::from(p);
    }
    let size = match w.kind {
        Kind::Flow { size, .. } | Kind::PingPong { size } => size,
        _ => 64,
    };
    let imp = c.imp;
    let specs: Vec<Spec> = match w.kind {
        Kind::Flow { p, c, .. } => (0..p)
            .map(|i| spec("q-send", i, p, c))
            .chain((0..c).map(|i| spec("q-recv", i, p, c)))
            .collect(),
        Kind::PingPong { .. } => vec![spec("q-ping", 0, 1, 1), spec("q-pong", 0, 1, 1)],
        Kind::Durable { p } => (0..p).map(|i| spec("q-send", i, p, 0)).collect(),
        Kind::LockPair => vec![spec("lock-unc", 0, 1, 0)],
        Kind::LockContended => (0..4).map(|i| spec("lock-cont", i, 4, 0)).collect(),
        Kind::Handoff if imp == "sem_pingpong" => {
            vec![spec("sem-pingpong", 0, 2, 0), spec("sem-pingpong", 1, 2, 0)]
        }
        Kind::Handoff => vec![spec("lock-handoff", 0, 2, 0), spec("lock-handoff", 1, 2, 0)],
        Kind::KvSingle { role } => vec![spec(role, 0, 1, 0)],
        Kind::KvIncr => (0..4).map(|i| spec("kv-incr", i, 4, 0)).collect(),
        Kind::EventWake => vec![spec("event", 0, 2, 0), spec("event", 1, 2, 0)],
    };
    let common = Common {
        exe: &setup.exe,
        imp,
        dir: &dir,
        tag: &tag,
        size,
        depth: setup.mq_depth_for(baselines::mq_chunk(size)),
        n,
        cap_ms,
        redis: setup.redis.as_ref().map(|(url, _)| url.as_str()),
    };
    let outs = run_group(&common, &specs);
    baselines::unlink_names(&tag);
    let removed = common.redis.map_or(Ok(()), |url| {
        redis_env::remove_keys(url, &tag).context("removing the run's keys from Redis")
    });
    let _ = std::fs::remove_dir_all(&dir);
    let outs = outs?;
    removed?;
    compute(w.kind, &specs, &outs, c.imp == "seed_files")
}

/// Arguments every worker of a run gets.
struct Common<'a> {
    exe: &'a Path,
    imp: &'a str,
    dir: &'a Path,
    tag: &'a str,
    size: usize,
    depth: usize,
    n: u64,
    cap_ms: u64,
    redis: Option<&'a str>,
}

/// Turns the workers' reports into the workload's figures, validating them.
fn compute(kind: Kind, specs: &[Spec], outs: &[Out], may_cap: bool) -> Result<Sample> {
    let mut s = Sample::new();
    let span = |outs: &[&Out]| -> Result<f64> {
        let t0 = outs
            .iter()
            .map(|o| o.num("t0"))
            .collect::<Result<Vec<_>>>()?;
        let t1 = outs
            .iter()
            .map(|o| o.num("t1"))
            .collect::<Result<Vec<_>>>()?;
        let (a, b) = (
            t0.into_iter().min().unwrap_or(0),
            t1.into_iter().max().unwrap_or(0),
        );
        ensure!(b > a, "empty measurement interval");
        Ok((b - a) as f64 / 1e9)
    };
    let all: Vec<&Out> = outs.iter().collect();
    // CPU time (user + system) of every worker over its measured loop, per operation.
    let cpu_per = |ops: u64| -> Result<f64> {
        let cpu: u64 = outs.iter().map(|o| o.num("cpu")).sum::<Result<_>>()?;
        Ok(cpu as f64 / ops.max(1) as f64)
    };
    match kind {
        Kind::Flow { .. } => {
            let mut sent = 0;
            let mut got = 0;
            let mut capped = false;
            for (sp, o) in specs.iter().zip(outs) {
                if sp.role == "q-send" {
                    sent += o.num("sent")?;
                } else {
                    got += o.num("got")?;
                    capped |= o.num("capped")? == 1;
                }
            }
            if capped {
                ensure!(
                    may_cap,
                    "a consumer gave up waiting: {got} of {sent} received"
                );
                ensure!(got <= sent && got > 0, "received {got} of {sent}");
            } else {
                ensure!(got == sent, "sent {sent} messages but received {got}");
            }
            s.insert("rate", got as f64 / span(&all)?);
            s.insert("cpu", cpu_per(got)?);
        }
        Kind::Durable { .. } => {
            let sent: u64 = outs.iter().map(|o| o.num("sent")).sum::<Result<_>>()?;
            ensure!(sent > 0, "no message sent");
            s.insert("rate", sent as f64 / span(&all)?);
            s.insert("cpu", cpu_per(sent)?);
        }
        Kind::LockPair => {
            let ops = outs[0].num("ops")?;
            ensure!(ops > 0, "no operation done");
            s.insert("ns", span(&all)? * 1e9 / ops as f64);
            s.insert("cpu", cpu_per(ops)?);
        }
        Kind::KvSingle { .. } => {
            let ops = outs[0].num("ops")?;
            ensure!(ops > 0, "no operation done");
            s.insert("rate", ops as f64 / span(&all)?);
            s.insert("cpu", cpu_per(ops)?);
        }
        Kind::LockContended | Kind::KvIncr => {
            let total: u64 = outs.iter().map(|o| o.num("ops")).sum::<Result<_>>()?;
            let max = outs
                .iter()
                .map(|o| o.num("max"))
                .collect::<Result<Vec<_>>>()?;
            let max = max.into_iter().max().unwrap_or(0);
            ensure!(
                max == total,
                "{total} increments done under exclusion, but the counter reached {max} \
                 (lost or duplicated updates)"
            );
            let mut h = Hist::default();
            for o in outs {
                h.merge(&o.hist()?);
            }
            let per: Vec<u64> = outs.iter().map(|o| o.num("ops")).collect::<Result<_>>()?;
            let (lo, hi) = (
                per.iter().copied().min().unwrap_or(0),
                per.iter().copied().max().unwrap_or(1),
            );
            s.insert("rate", total as f64 / span(&all)?);
            s.insert("p50", h.quantile(0.5).unwrap_or(f64::NAN) / 1e3);
            s.insert("p99", h.quantile(0.99).unwrap_or(f64::NAN) / 1e3);
            s.insert("max", h.quantile(1.0).unwrap_or(f64::NAN) / 1e3);
            s.insert("fair", lo as f64 / hi.max(1) as f64);
            s.insert("cpu", cpu_per(total)?);
        }
        Kind::PingPong { .. } => {
            let mut h = Hist::default();
            let mut trips = 0;
            for o in outs {
                if o.kv.contains_key("hist") {
                    h.merge(&o.hist()?);
                    trips += o.num("trips")?;
                }
            }
            ensure!(h.count() > 0, "no latency sample");
            s.insert("p50", h.quantile(0.5).unwrap_or(f64::NAN) / 1e3);
            // Both ends' CPU per round trip.
            s.insert("cpu", cpu_per(trips)?);
        }
        Kind::Handoff | Kind::EventWake => {
            let mut h = Hist::default();
            for o in outs {
                if o.kv.contains_key("hist") {
                    h.merge(&o.hist()?);
                }
            }
            ensure!(h.count() > 0, "no latency sample");
            s.insert("p50", h.quantile(0.5).unwrap_or(f64::NAN) / 1e3);
        }
    }
    Ok(s)
}

/// Spawns the workers, waits until all are ready, starts them together, and collects
/// their result lines. Any failure or hang (bounded by the cap plus a margin) kills them.
fn run_group(common: &Common<'_>, specs: &[Spec]) -> Result<Vec<Out>> {
    let exe = common.exe;
    let mut children: Vec<Child> = Vec::new();
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let result = (|| -> Result<Vec<Out>> {
        let start = workers::run_shm(common.dir)?;
        for (i, sp) in specs.iter().enumerate() {
            let mut child = Command::new(exe)
                .arg(workers::WORKER_SUBCOMMAND)
                .args(["--role", sp.role, "--imp", common.imp, "--tag", common.tag])
                .arg("--dir")
                .arg(common.dir)
                .args(["--size", &common.size.to_string()])
                .args(["--depth", &common.depth.to_string()])
                .args(["--n", &common.n.to_string()])
                .args(["--cap-ms", &common.cap_ms.to_string()])
                .args(["--id", &sp.id.to_string()])
                .args(["--producers", &sp.producers.to_string()])
                .args(["--consumers", &sp.consumers.to_string()])
                .args(common.redis.iter().flat_map(|u| ["--redis", u]))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("spawning {}", exe.display()))?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send((i, Some(l))).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send((i, None));
            });
            children.push(child);
        }
        let setup_deadline = Instant::now() + Duration::from_secs(60);
        let mut ready = vec![false; specs.len()];
        while ready.iter().any(|r| !r) {
            let (i, line) = recv_until(&rx, setup_deadline, "workers to get ready")?;
            match line.as_deref() {
                Some("ready") => ready[i] = true,
                Some(other) => bail!("worker {i} said {other:?} before ready"),
                None => bail!("worker {} ({}) exited during setup", i, specs[i].role),
            }
        }
        workers::start_all(&start);
        let run_deadline = Instant::now() + Duration::from_millis(common.cap_ms * 3 + 30_000);
        let mut outs: Vec<Option<Out>> = specs.iter().map(|_| None).collect();
        let mut open = specs.len();
        while open > 0 {
            let (i, line) = recv_until(&rx, run_deadline, "workers to finish")?;
            match line {
                Some(l) if l.starts_with("result") => {
                    let mut o = Out::default();
                    for tok in l.split_ascii_whitespace().skip(1) {
                        if let Some((k, v)) = tok.split_once('=') {
                            o.kv.insert(k.to_owned(), v.to_owned());
                        }
                    }
                    outs[i] = Some(o);
                }
                Some(other) => bail!("worker {i} printed {other:?}"),
                None => open -= 1,
            }
        }
        for (i, c) in children.iter_mut().enumerate() {
            let st = c.wait()?;
            ensure!(
                st.success(),
                "worker {} ({}) failed: {st}",
                i,
                specs[i].role
            );
        }
        outs.into_iter()
            .enumerate()
            .map(|(i, o)| o.with_context(|| format!("worker {i} printed no result")))
            .collect()
    })();
    if result.is_err() {
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    result
}

fn recv_until<T>(rx: &mpsc::Receiver<T>, deadline: Instant, what: &str) -> Result<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(v) => Ok(v),
        Err(mpsc::RecvTimeoutError::Timeout) => bail!("timed out waiting for {what}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("lost the workers"),
    }
}
