//! `fileipc demo`: all six primitives working together across real worker processes,
//! one of which is killed with SIGKILL mid-run.
//!
//! The coordinator (this process) holds a [`PidFile`] for the run, spawns producers and
//! consumers (this binary re-executed as `fileipc __demo-worker ROLE ...`), and starts
//! them all at once with an [`Event`]. Producers fill a [`MessageQueue`]; consumers
//! drain it in batches. Each batch is processed (written to the consumer's own file)
//! while holding one of a [`Semaphore`]'s permits (a bounded pool), then counted with
//! [`SharedData::increment`] under the consumer's own key, then added to a plain text
//! file, `tally.txt`, by a read-modify-write under a [`Mutex`] (what `flock(1)` users do).
//!
//! Once a third of the messages are counted, the coordinator kills one consumer with
//! SIGKILL. At the end it reports what survived: no message delivered twice; the ones
//! lost are the batch the dead consumer had taken (at most one); every permit can be
//! taken again; the mutex is free; the counts add up. `--keep` leaves the directory for
//! `fileipc stat`.

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
/// The consumer killed mid-run.
const VICTIM: u32 = 1;

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
        self.dir.join("tally.lock")
    }
    fn tally(&self) -> PathBuf {
        self.dir.join("tally.txt")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state.db")
    }
    fn count_key(id: u32) -> String {
        format!("consumer.{id}")
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

/// The sum of the consumers' counts.
fn counted(state: &SharedData) -> anyhow::Result<u64> {
    let mut sum = 0;
    for id in 0..CONSUMERS {
        sum += state.get::<u64>(&Paths::count_key(id))?.unwrap_or(0);
    }
    Ok(sum)
}

/// Thousands separated by commas: 1,000,000.
fn n(x: u64) -> String {
    let digits = x.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn run(keep: bool) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::Builder::new()
        .prefix("fileipc-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let p = Paths {
        dir: tmp.path().to_owned(),
    };
    println!("fileipc demo in {}", p.dir.display());
    let total = u64::from(PRODUCERS * PER_PRODUCER);

    let mut pid = PidFile::open(p.pidfile())?;
    ensure!(
        pid.create()?,
        "another demo holds {}",
        p.pidfile().display()
    );
    let mut second = PidFile::open(p.pidfile())?;
    ensure!(!second.create()?, "the pid file let a second owner in");
    println!("  PidFile       demo.pid guards this run (a second instance was refused)");

    let start = Event::open(p.start())?;
    let jobs = MessageQueue::open(p.jobs())?;
    let pool = Semaphore::open(p.pool(), POOL)?;
    let ready = Semaphore::open(p.ready(), 0)?;
    let lock = Mutex::open(p.lock())?;
    std::fs::write(p.tally(), "0\n")?;
    let state = SharedData::open(p.state())?;
    println!(
        "  Event         start: the {} workers wait on it and start together",
        PRODUCERS + CONSUMERS
    );
    println!(
        "  MessageQueue  jobs: {PRODUCERS} producers x {} messages -> {CONSUMERS} consumers, \
         in batches of up to {BATCH}",
        n(u64::from(PER_PRODUCER))
    );
    println!(
        "  Semaphore     pool: {POOL} permits, so at most {POOL} consumers process a batch at once"
    );
    println!("  SharedData    state.db: each consumer's count, by SharedData::increment");
    println!("  Mutex         tally.lock: guards a read-modify-write of the plain file tally.txt");

    let mut workers = Vec::new();
    for id in 0..PRODUCERS {
        workers.push(("producer", id, spawn("producer", &p.dir, id)?));
    }
    for id in 0..CONSUMERS {
        workers.push(("consumer", id, spawn("consumer", &p.dir, id)?));
    }

    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "  {bar:40.cyan/blue} {pos:>7}/{len} counted  {per_sec}  {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
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

    // Progress: the shared counts, read (not waited on) a few times a second.
    let mut killed: Option<(u32, u64)> = None;
    let mut stopped = false;
    let limit = Duration::from_secs(120);
    loop {
        let counted_now = counted(&state)?;
        bar.set_position(counted_now);
        if killed.is_none() && counted_now >= total / 3 {
            let (_, _, victim) = workers
                .iter_mut()
                .find(|(role, id, _)| *role == "consumer" && *id == VICTIM)
                .context("no victim")?;
            victim.kill().context("killing a consumer")?;
            victim.wait()?;
            let at: u64 = state.get(&Paths::count_key(VICTIM))?.unwrap_or(0);
            bar.suspend(|| {
                println!(
                    "  kill -9       consumer {VICTIM} (PID {}) killed mid-run, after it had \
                     counted {} messages",
                    victim.id(),
                    n(at)
                );
            });
            killed = Some((victim.id(), at));
        }
        let mut producers = 0;
        let mut consumers = 0;
        for (role, id, child) in workers.iter_mut() {
            let dead_victim = *role == "consumer" && *id == VICTIM && killed.is_some();
            match child.try_wait()? {
                Some(st) if !dead_victim => {
                    ensure!(st.success(), "{role} {id} failed: {st}");
                }
                Some(_) => {}
                None if *role == "producer" => producers += 1,
                None => consumers += 1,
            }
        }
        // The STOPs go out once the victim is dead: it would take one with it otherwise.
        if !stopped && producers == 0 && killed.is_some() {
            for _ in 0..CONSUMERS - 1 {
                jobs.send(b"STOP")?;
            }
            stopped = true;
        }
        if stopped && consumers == 0 {
            break;
        }
        if t0.elapsed() > limit {
            bail!("the workers did not finish within {}", super::human(limit));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = t0.elapsed();
    bar.set_position(counted(&state)?);
    bar.finish();
    let (victim_pid, _) = killed.context("the victim was never killed")?;

    // Delivered once: every (producer, seq) in at most one consumer's file.
    let mut seen = vec![0u8; total as usize];
    let mut in_files = vec![0u64; CONSUMERS as usize];
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
            in_files[id as usize] += 1;
        }
    }
    let lost = seen.iter().filter(|&&c| c == 0).count() as u64;
    let dup = seen.iter().filter(|&&c| c > 1).count() as u64;
    let counts: Vec<u64> = (0..CONSUMERS)
        .map(|id| Ok(state.get::<u64>(&Paths::count_key(id))?.unwrap_or(0)))
        .collect::<anyhow::Result<_>>()?;
    let sum: u64 = counts.iter().sum();
    // Written to the victim's file but not yet counted when it died.
    let uncounted = in_files[VICTIM as usize].saturating_sub(counts[VICTIM as usize]);
    let survivors_exact = (0..CONSUMERS)
        .filter(|&id| id != VICTIM)
        .all(|id| in_files[id as usize] == counts[id as usize]);
    let adds_up = sum + uncounted + lost == total && survivors_exact;
    let in_hand_ok = lost + uncounted <= BATCH as u64;

    // What the dead consumer held comes back: every permit can be taken again, and
    // the mutex is free.
    let mut permits = 0;
    for _ in 0..POOL {
        if pool.acquire_timeout(Duration::from_secs(5))? {
            permits += 1;
        }
    }
    for _ in 0..permits {
        pool.release()?;
    }
    let mutex_free = !lock.is_locked()?;
    let tally: u64 = std::fs::read_to_string(p.tally())?.trim().parse()?;
    let tally_ok = tally <= sum && sum - tally <= BATCH as u64;

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

    let moved = total - lost;
    println!();
    println!(
        "  messages moved        {} in {:.2} s ({} msg/s end to end)",
        n(moved),
        elapsed.as_secs_f64(),
        n((moved as f64 / elapsed.as_secs_f64()) as u64)
    );
    if let (Some(first), Some(last)) = (wakes.first(), wakes.last()) {
        println!(
            "  start event wake-up   {} workers woke {:.0}-{:.0} us after set()",
            wakes.len(),
            *first as f64 / 1e3,
            *last as f64 / 1e3
        );
    }
    println!(
        "  queue round trip      median {:.1} us (ping-pong through two queues)",
        rtt / 1e3
    );
    println!("  what survived the kill -9 of consumer {VICTIM} (PID {victim_pid}):");
    // A message is delivered once, to the receiver that takes it: the batch the victim
    // had taken and not yet processed died with it.
    println!(
        "    MessageQueue  {dup} duplicated, {lost} lost ({})",
        if lost == 0 {
            format!("consumer {VICTIM} had no message in hand when it died")
        } else {
            format!("taken by consumer {VICTIM}, not yet processed when it died")
        }
    );
    let parts: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(id, c)| {
            let dead = if id as u32 == VICTIM { ", killed" } else { "" };
            format!("{} (consumer {id}{dead})", n(*c))
        })
        .collect();
    println!(
        "    SharedData    counted {} = {}",
        n(sum),
        parts.join(" + ")
    );
    println!(
        "                  counted {} + processed but not counted {uncounted} + lost {lost} = \
         {} sent: {}",
        n(sum),
        n(total),
        if adds_up {
            "the counts add up"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "    Semaphore     {permits} of {POOL} permits could be taken at the end (a dead \
         holder's permit comes back)"
    );
    println!(
        "    Mutex         {}; tally.txt says {} ({})",
        if mutex_free { "free" } else { "STILL LOCKED" },
        n(tally),
        if tally == sum {
            "equal to the counts".to_owned()
        } else {
            format!(
                "{} behind: consumer {VICTIM} died between counting and the tally",
                n(sum.saturating_sub(tally))
            )
        }
    );
    let ok = dup == 0 && adds_up && in_hand_ok && permits == POOL && mutex_free && tally_ok;
    println!(
        "  check                 {}",
        if ok { "OK" } else { "FAILED" }
    );
    pid.remove()?;

    println!();
    println!("Try next:");
    if keep {
        let dir = tmp.keep();
        println!("  fileipc stat {}/jobs", dir.display());
        println!("  fileipc stat {}/pool", dir.display());
        println!("  fileipc kv dump {}/state.db", dir.display());
        println!("  rm -r {}        # when done", dir.display());
    } else {
        println!("  fileipc demo --keep, then fileipc stat on what it leaves");
        drop(tmp);
    }
    println!("  fileipc queue send /tmp/jobs hello && fileipc queue recv /tmp/jobs");
    println!("  fileipc sem run /tmp/pool --initial 2 -- sleep 10    # in three terminals");
    println!("  fileipc --help, and docs/GUIDE.md: timeouts, shutdown, cleanup, sharing");
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
    let key = Paths::count_key(id);
    let mut out = std::fs::File::create(p.received(id))?;
    wait_start(p, 100 + id)?;
    loop {
        let batch = q.recv_many(BATCH, Duration::from_secs(30))?;
        ensure!(!batch.is_empty(), "consumer {id}: no message for 30 s");
        let stops = batch.iter().filter(|m| &m[..] == b"STOP").count();
        let mut records = Vec::with_capacity(batch.len() * 8);
        for m in batch.iter().filter(|m| &m[..] != b"STOP") {
            records.extend_from_slice(&m[..]);
        }
        let n = (records.len() / 8) as i64;
        if n > 0 {
            // Processing: one write, holding a permit of the pool.
            let permit = pool
                .permit_timeout(Duration::from_secs(30))?
                .context("no permit for 30 s")?;
            out.write_all(&records)?;
            drop(permit);
            state.increment(&key, n)?;
            ensure!(
                lock.lock_timeout(Duration::from_secs(30))?,
                "mutex not free for 30 s"
            );
            let tally: i64 = std::fs::read_to_string(p.tally())?.trim().parse()?;
            // Replaced by a rename: a kill mid-write leaves the old tally, never half.
            let tmp = p.tally().with_extension("tmp");
            std::fs::write(&tmp, format!("{}\n", tally + n))?;
            std::fs::rename(&tmp, p.tally())?;
            lock.unlock()?;
        }
        if stops > 0 {
            // One STOP is ours; pass any other on to the consumers it was meant for.
            for _ in 1..stops {
                q.send(b"STOP")?;
            }
            return Ok(());
        }
    }
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
