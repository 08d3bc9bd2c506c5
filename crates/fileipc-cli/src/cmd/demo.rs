//! `fileipc demo`: all six primitives working together across real worker processes.
//!
//! The coordinator (this process) holds a [`PidFile`] for the run, spawns producers and
//! consumers (this binary re-executed as `fileipc __demo-worker ROLE ...`), and starts
//! them all at once with an [`Event`]. Producers fill a [`MessageQueue`]; consumers
//! drain it in batches, each batch processed while holding one of a [`Semaphore`]'s
//! permits (a bounded pool), and add their batch to a [`SharedData`] counter inside a
//! [`Mutex`] (the original `@stdlib/ipc` "shared state coordination" pattern, made
//! correct by the lock). Every consumer records what it received in its own file; at the
//! end the coordinator checks that every message arrived exactly once and that the
//! shared counter agrees.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fileipc::{Event, MessageQueue, Mutex, PidFile, Semaphore, SharedData};

const PRODUCERS: u32 = 2;
const CONSUMERS: u32 = 3;
const PER_PRODUCER: u32 = 500_000;
const POOL: u32 = 2;
const BATCH: usize = 512;
const PINGS: usize = 200;

/// Arguments of the hidden demo worker role.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// producer, consumer or echo.
    role: String,
    /// The demo's working directory.
    dir: PathBuf,
    /// The worker's number.
    id: u32,
}

/// CLOCK_MONOTONIC in nanoseconds, comparable between processes (unlike `Instant`).
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn pidfile(&self) -> PathBuf {
        self.dir.join("demo.pid")
    }
    fn start(&self) -> PathBuf {
        self.dir.join("start")
    }
    fn jobs(&self) -> PathBuf {
        self.dir.join("jobs")
    }
    fn ping(&self) -> PathBuf {
        self.dir.join("ping")
    }
    fn pong(&self) -> PathBuf {
        self.dir.join("pong")
    }
    fn ready(&self) -> PathBuf {
        self.dir.join("ready")
    }
    fn pool(&self) -> PathBuf {
        self.dir.join("pool")
    }
    fn lock(&self) -> PathBuf {
        self.dir.join("state.lock")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state.db")
    }
    fn received(&self, id: u32) -> PathBuf {
        self.dir.join(format!("received-{id}"))
    }
    fn woke(&self, id: u32) -> PathBuf {
        self.dir.join(format!("woke-{id}"))
    }
}

fn spawn(role: &str, dir: &Path, id: u32) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the fileipc binary")?;
    Command::new(exe)
        .args(["__demo-worker", role])
        .arg(dir)
        .arg(id.to_string())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning the {role} worker"))
}

pub(crate) fn run() -> anyhow::Result<ExitCode> {
    let tmp = tempfile::Builder::new()
        .prefix("fileipc-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let p = Paths {
        dir: tmp.path().to_owned(),
    };
    println!("fileipc demo in {}", p.dir.display());

    let mut pid = PidFile::open(p.pidfile())?;
    ensure!(
        pid.create()?,
        "another demo holds {}",
        p.pidfile().display()
    );
    let mut second = PidFile::open(p.pidfile())?;
    ensure!(!second.create()?, "the pid file let a second owner in");
    println!(
        "  pid file   {} guards this run (a second instance is refused)",
        p.pidfile().display()
    );

    let start = Event::open(p.start())?;
    let jobs = MessageQueue::open(p.jobs())?;
    Semaphore::open(p.pool(), POOL)?;
    let ready = Semaphore::open(p.ready(), 0)?;
    SharedData::open(p.state())?.set("processed", &0u64)?;

    let mut workers = Vec::new();
    for id in 0..PRODUCERS {
        workers.push(("producer", spawn("producer", &p.dir, id)?));
    }
    for id in 0..CONSUMERS {
        workers.push(("consumer", spawn("consumer", &p.dir, id)?));
    }
    let total = u64::from(PRODUCERS * PER_PRODUCER);
    println!(
        "  {PRODUCERS} producers x {PER_PRODUCER} messages -> queue -> {CONSUMERS} consumers, \
         pool of {POOL} permits, mutex-guarded counter"
    );

    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "  {bar:40.cyan/blue} {pos:>7}/{len} messages  {per_sec}  {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let state = SharedData::open(p.state())?;
    // Every worker signals the `ready` semaphore just before it waits for the start
    // event; once all have, one set() starts them together.
    for _ in 0..PRODUCERS + CONSUMERS {
        ensure!(
            ready.acquire_timeout(Duration::from_secs(30))?,
            "the workers did not get ready within 30 s"
        );
    }
    let set_at = now_ns();
    start.set()?;
    let t0 = Instant::now();

    // Progress: the shared counter, read (not waited on) a few times a second.
    let mut stopped = false;
    let limit = Duration::from_secs(60);
    loop {
        let processed: u64 = state.get("processed")?.unwrap_or(0);
        bar.set_position(processed);
        for (role, child) in workers.iter_mut() {
            if let Some(st) = child.try_wait()? {
                ensure!(st.success(), "a {role} worker failed: {st}");
            }
        }
        let alive = |role: &str, ws: &mut Vec<(&str, Child)>| -> anyhow::Result<usize> {
            let mut n = 0;
            for (r, c) in ws.iter_mut() {
                if *r == role && c.try_wait()?.is_none() {
                    n += 1;
                }
            }
            Ok(n)
        };
        if !stopped && alive("producer", &mut workers)? == 0 {
            for _ in 0..CONSUMERS {
                jobs.send(b"STOP")?;
            }
            stopped = true;
        }
        if stopped && alive("consumer", &mut workers)? == 0 {
            break;
        }
        if t0.elapsed() > limit {
            bail!("the workers did not finish within {}", super::human(limit));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = t0.elapsed();
    bar.set_position(state.get("processed")?.unwrap_or(0));
    bar.finish();

    // Exactly once: every (producer, seq) in exactly one consumer's file.
    let mut seen = vec![0u8; total as usize];
    let mut received = 0u64;
    for id in 0..CONSUMERS {
        let data = std::fs::read(p.received(id))?;
        for rec in data.chunks_exact(8) {
            let producer = u32::from_le_bytes(rec[..4].try_into()?);
            let seq = u32::from_le_bytes(rec[4..].try_into()?);
            ensure!(
                producer < PRODUCERS && seq < PER_PRODUCER,
                "a message that was never sent"
            );
            seen[(producer * PER_PRODUCER + seq) as usize] += 1;
            received += 1;
        }
    }
    let lost = seen.iter().filter(|&&c| c == 0).count();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    let counter: u64 = state.get("processed")?.unwrap_or(0);

    // Wake-up latency of the start event, per worker.
    let mut wakes: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(&p.dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("woke-") {
            let t: u64 = std::fs::read_to_string(entry.path())?.trim().parse()?;
            wakes.push(t.saturating_sub(set_at));
        }
    }
    wakes.sort_unstable();

    // Queue round trip: ping-pong with an echo worker through two queues.
    let rtt = ping_pong(&p)?;

    let rate = received as f64 / elapsed.as_secs_f64();
    println!();
    println!(
        "  messages moved       {received} in {:.2} s ({:.0} msg/s end to end)",
        elapsed.as_secs_f64(),
        rate
    );
    if let (Some(first), Some(last)) = (wakes.first(), wakes.last()) {
        println!(
            "  start event wake-up  {} workers woke {:.0}-{:.0} us after set()",
            wakes.len(),
            *first as f64 / 1e3,
            *last as f64 / 1e3
        );
    }
    println!(
        "  queue round trip     median {:.1} us (ping-pong through two queues)",
        rtt / 1e3
    );
    println!("  shared counter       {counter} (mutex-guarded read-modify-write)");
    let ok = lost == 0 && dup == 0 && received == total && counter == total;
    println!(
        "  check                {} lost, {} duplicated, counter {} -> {}",
        lost,
        dup,
        if counter == total {
            "matches"
        } else {
            "MISMATCH"
        },
        if ok { "OK" } else { "FAILED" }
    );
    pid.remove()?;
    drop(tmp);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn ping_pong(p: &Paths) -> anyhow::Result<f64> {
    let ping = MessageQueue::open(p.ping())?;
    let pong = MessageQueue::open(p.pong())?;
    let mut echo = spawn("echo", &p.dir, 0)?;
    let mut rtts = Vec::with_capacity(PINGS);
    for i in 0..PINGS + 20 {
        let t = Instant::now();
        ping.send(b"ping")?;
        ensure!(
            pong.recv_timeout(Duration::from_secs(5))?.is_some(),
            "the echo worker did not answer"
        );
        if i >= 20 {
            rtts.push(t.elapsed().as_nanos() as f64);
        }
    }
    ping.send(b"STOP")?;
    let st = echo.wait()?;
    ensure!(st.success(), "the echo worker failed: {st}");
    rtts.sort_by(f64::total_cmp);
    Ok(rtts[rtts.len() / 2])
}

pub(crate) fn worker(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let p = Paths { dir: a.dir };
    match a.role.as_str() {
        "producer" => producer(&p, a.id)?,
        "consumer" => consumer(&p, a.id)?,
        "echo" => echo(&p)?,
        other => bail!("unknown demo role {other}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn wait_start(p: &Paths, id: u32) -> anyhow::Result<()> {
    let start = Event::open(p.start())?;
    Semaphore::open_existing(p.ready())?.release()?;
    ensure!(
        start.wait_timeout(Duration::from_secs(30))?,
        "no start signal"
    );
    std::fs::write(p.woke(id), now_ns().to_string())?;
    Ok(())
}

fn producer(p: &Paths, id: u32) -> anyhow::Result<()> {
    let q = MessageQueue::open(p.jobs())?;
    wait_start(p, id)?;
    let mut batch = Vec::with_capacity(BATCH);
    for seq in 0..PER_PRODUCER {
        let mut m = [0u8; 8];
        m[..4].copy_from_slice(&id.to_le_bytes());
        m[4..].copy_from_slice(&seq.to_le_bytes());
        batch.push(m);
        if batch.len() == BATCH || seq + 1 == PER_PRODUCER {
            q.send_all(batch.drain(..))?;
        }
    }
    Ok(())
}

fn consumer(p: &Paths, id: u32) -> anyhow::Result<()> {
    let q = MessageQueue::open(p.jobs())?;
    let pool = Semaphore::open(p.pool(), POOL)?;
    let lock = Mutex::open(p.lock())?;
    let state = SharedData::open(p.state())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(p.received(id))?);
    wait_start(p, 100 + id)?;
    loop {
        let batch = q.recv_many(BATCH, Duration::from_secs(30))?;
        ensure!(!batch.is_empty(), "consumer {id}: no message for 30 s");
        let mut stops = 0;
        let mut n = 0u64;
        ensure!(
            pool.acquire_timeout(Duration::from_secs(30))?,
            "no permit for 30 s"
        );
        for m in &batch {
            if &m[..] == b"STOP" {
                stops += 1;
                continue;
            }
            out.write_all(&m[..])?;
            n += 1;
        }
        pool.release()?;
        if n > 0 {
            ensure!(
                lock.lock_timeout(Duration::from_secs(30))?,
                "mutex not free for 30 s"
            );
            let count: u64 = state.get("processed")?.unwrap_or(0);
            state.set("processed", &(count + n))?;
            lock.unlock()?;
        }
        if stops > 0 {
            // One STOP is ours; pass any other on to the consumers it was meant for.
            for _ in 1..stops {
                q.send(b"STOP")?;
            }
            break;
        }
    }
    out.flush()?;
    Ok(())
}

fn echo(p: &Paths) -> anyhow::Result<()> {
    let ping = MessageQueue::open(p.ping())?;
    let pong = MessageQueue::open(p.pong())?;
    loop {
        let m = ping
            .recv_timeout(Duration::from_secs(30))?
            .context("echo: no ping for 30 s")?;
        if &m[..] == b"STOP" {
            return Ok(());
        }
        pong.send(&m)?;
    }
}
