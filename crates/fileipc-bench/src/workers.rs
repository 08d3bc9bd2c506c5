//! The worker processes: `EXE __bench-worker --role ROLE --imp IMPL ...`, where EXE is the
//! program that runs the harness (`fileipc`), re-executed.
//!
//! A worker opens its implementation, prints `ready`, waits for the start word of the run's
//! shared file [`RUN_SHM`] (one futex wake releases all the workers of a run at once),
//! runs its loop, and prints one `result k=v ...` line.
//! Times are CLOCK_MONOTONIC nanoseconds, comparable across processes. The same loop times
//! every implementation of a workload; only the object behind the trait differs.

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::baselines::{Env, open_event, open_kv, open_lock, open_queue};
use crate::hist::Hist;
use crate::sys::{self, NamedSem, Shm, now_ns};

/// The name of the hidden subcommand the harness re-executes its program with; the
/// program passes that subcommand's arguments ([`WorkerArgs`]) to [`worker`].
pub const WORKER_SUBCOMMAND: &str = "__bench-worker";

/// Arguments of the hidden worker role the benchmark re-executes itself in.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// What this process does (q-send, q-recv, q-ping, q-pong, lock-unc, lock-cont,
    /// lock-handoff, sem-pingpong, kv-set, kv-get, kv-incr, event; or load: a busy loop
    /// beside the workers, until killed).
    #[arg(long)]
    role: String,
    /// The implementation under test (ours, posix_mq, pipe, flock, sqlite, ...).
    #[arg(long)]
    imp: String,
    /// The run's private directory.
    #[arg(long)]
    dir: PathBuf,
    /// Prefix of the run's POSIX IPC names.
    #[arg(long)]
    tag: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// POSIX mq capacity.
    #[arg(long, default_value_t = 10)]
    depth: usize,
    /// Operations (messages, cycles, samples) to do at most.
    #[arg(long, default_value_t = 1000)]
    n: u64,
    /// Time cap in milliseconds after `go`.
    #[arg(long, default_value_t = 1000)]
    cap_ms: u64,
    /// This worker's index among its peers of the same role.
    #[arg(long, default_value_t = 0)]
    id: u32,
    /// Number of producer (or contending) processes.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Number of consumer processes.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// The Redis server of a `--redis` run (a URL naming the server only).
    #[arg(long)]
    redis: Option<String>,
    /// The harness's process id (load processes exit when it is no longer their parent).
    #[arg(long)]
    parent: Option<u32>,
}

/// The result line a worker prints, built up key by key.
#[derive(Debug, Default)]
struct Report(String);

impl Report {
    fn put(&mut self, key: &str, v: impl std::fmt::Display) -> &mut Self {
        self.0.push_str(&format!(" {key}={v}"));
        self
    }
}

/// Runs one worker role; the exit code is 0 when it printed its result.
pub fn worker(a: WorkerArgs) -> Result<std::process::ExitCode> {
    if a.role == "load" {
        load(a.parent);
    }
    let env = Env {
        dir: a.dir.clone(),
        tag: a.tag.clone(),
        size: a.size,
        depth: a.depth,
        producers: a.producers,
        consumers: a.consumers,
        deadline: Rc::new(Cell::new(u64::MAX)),
        redis: a.redis.clone(),
    };
    let mut rep = Report::default();
    let role = a.role.as_str();
    match role {
        "q-send" => q_send(&a, &env, &mut rep),
        "q-recv" => q_recv(&a, &env, &mut rep),
        "q-ping" => q_ping(&a, &env, &mut rep),
        "q-pong" => q_pong(&a, &env, &mut rep),
        "lock-unc" => lock_uncontended(&a, &env, &mut rep),
        "lock-cont" => lock_contended(&a, &env, &mut rep),
        "lock-handoff" => lock_handoff(&a, &env, &mut rep),
        "sem-pingpong" => sem_pingpong(&a, &env, &mut rep),
        "kv-set" | "kv-get" => kv_single(&a, &env, &mut rep),
        "kv-incr" => kv_incr(&a, &env, &mut rep),
        "event" => event(&a, &env, &mut rep),
        other => bail!("unknown worker role {other:?}"),
    }
    .with_context(|| format!("worker {role} {} #{}", a.imp, a.id))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "result{}", rep.0)?;
    out.flush()?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// A load process: says `ready`, then spins on the CPU until killed (the harness kills
/// it at the end of the workload; the kernel kills it if the harness dies first).
fn load(parent: Option<u32>) -> ! {
    let orphaned = sys::die_with_parent().is_err()
        || parent.is_some_and(|p| p != std::os::unix::process::parent_id());
    if orphaned {
        std::process::exit(1);
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    let mut x = 1u64;
    loop {
        x = std::hint::black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
}

/// The run's shared file (in the run directory): word 0 is the start word (the harness
/// moves it to 1 and wakes every worker with one `futex_wake`); word 1 counts the
/// producers that finished sending.
pub(crate) const RUN_SHM: &str = "run.shm";
const RUN_SHM_LEN: usize = 64;

/// Maps the run's shared file.
pub(crate) fn run_shm(dir: &std::path::Path) -> Result<Shm> {
    Shm::open(&dir.join(RUN_SHM), RUN_SHM_LEN).context("mapping the run's shared file")
}

/// Releases every worker of a run waiting in [`ready_go`].
pub(crate) fn start_all(shm: &Shm) {
    shm.u32(0).store(1, Ordering::Release);
    sys::futex_wake(shm.u32(0), u32::MAX);
}

/// Tells the harness this worker is set up, and waits for the start signal. Returns the
/// start time and sets the polling deadline `cap_ms` after it.
///
/// One wake releases all: a `go` written to each worker's stdin in turn lets the first
/// workers started take both CPUs, and the harness then often loses its CPU for a
/// scheduler tick, so the later workers of a 4+4 run start about 3 ms late.
fn ready_go(a: &WorkerArgs, env: &Env) -> Result<u64> {
    let shm = run_shm(&env.dir)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let give_up = now_ns() + 120_000_000_000;
    let start = shm.u32(0);
    while start.load(Ordering::Acquire) == 0 {
        ensure!(now_ns() < give_up, "no start signal from the harness");
        sys::futex_wait(start, 0, Some(Duration::from_millis(100)));
    }
    let t0 = now_ns();
    env.deadline.set(t0 + a.cap_ms * 1_000_000);
    Ok(t0)
}

// ---------------------------------------------------------------------------------------
// Queues

/// Producer id marking a stop frame.
const STOP: u32 = u32::MAX;

fn frame(buf: &mut [u8], producer: u32, seq: u64) {
    buf[..4].copy_from_slice(&producer.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
}

fn parse_frame(buf: &[u8]) -> Result<(u32, u64)> {
    ensure!(
        buf.len() >= 12,
        "message of {} bytes is too short",
        buf.len()
    );
    let p = u32::from_le_bytes(buf[..4].try_into()?);
    let s = u64::from_le_bytes(buf[4..12].try_into()?);
    Ok((p, s))
}

/// Sends `n` messages (or until the cap); the last producer to finish then sends every
/// consumer its stop frame. (Stop frames sent by each producer as it finishes would let
/// consumers quit while other producers are still sending: a 4+4 run would end with
/// fewer consumers than producers, which is not the workload named.)
fn q_send(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut q = open_queue(&a.imp, env, "q")?;
    let mut msg = vec![0x5a_u8; a.size.max(12)];
    let t0 = ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let deadline = env.deadline.get();
    let mut sent = 0;
    while sent < a.n {
        if sent % 16 == 0 && now_ns() >= deadline {
            break;
        }
        frame(&mut msg, a.id, sent);
        q.send(&msg)?;
        sent += 1;
    }
    let t1 = now_ns();
    let finished = run_shm(&env.dir)?.u32(4).fetch_add(1, Ordering::AcqRel) + 1;
    if finished == a.producers {
        for _ in 0..a.consumers {
            frame(&mut msg, STOP, 0);
            q.send(&msg)?;
        }
    }
    let cpu = sys::cpu_self_ns() - cpu0;
    rep.put("t0", t0)
        .put("t1", t1)
        .put("sent", sent)
        .put("cpu", cpu);
    Ok(())
}

/// Receives until a stop frame, checking every frame. (Producers stop at the cap; the
/// consumers drain what was sent. Only a polling design gives up, when it finds nothing
/// after the cap.)
fn q_recv(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut q = open_queue(&a.imp, env, "q")?;
    let mut buf = Vec::with_capacity(a.size.max(12));
    let mut last = vec![None::<u64>; a.producers as usize];
    let t0 = ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let (mut got, mut t1, mut capped) = (0u64, t0, false);
    loop {
        buf.clear();
        buf.resize(a.size.max(12), 0);
        if !q.recv(&mut buf)? {
            capped = true;
            break;
        }
        ensure!(
            buf.len() == a.size.max(12),
            "received {} bytes, sent {}",
            buf.len(),
            a.size.max(12)
        );
        let (p, s) = parse_frame(&buf)?;
        if p == STOP {
            break;
        }
        let slot = last
            .get_mut(p as usize)
            .with_context(|| format!("message from unknown producer {p}"))?;
        ensure!(
            slot.is_none_or(|l| s > l),
            "producer {p}: message {s} after {slot:?} (out of order or duplicate)"
        );
        *slot = Some(s);
        got += 1;
        t1 = now_ns();
    }
    rep.put("t0", t0)
        .put("t1", t1)
        .put("got", got)
        .put("capped", u8::from(capped))
        .put("cpu", sys::cpu_self_ns() - cpu0);
    Ok(())
}

/// Round trips: send on `ping`, wait for the answer on `pong`.
fn q_ping(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut ping = open_queue(&a.imp, env, "ping")?;
    let mut pong = open_queue(&a.imp, env, "pong")?;
    let mut msg = vec![0x5a_u8; a.size.max(12)];
    let mut buf = Vec::with_capacity(msg.len());
    let mut hist = Hist::default();
    ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let warmup = (a.n / 10).clamp(1, 1000);
    let mut i = 0;
    while i < warmup + a.n {
        frame(&mut msg, 0, i);
        buf.clear();
        buf.resize(msg.len(), 0);
        let t = now_ns();
        ping.send(&msg)?;
        ensure!(pong.recv(&mut buf)?, "no answer within the timeout");
        let rtt = now_ns() - t;
        if i >= warmup {
            hist.add(rtt);
        }
        i += 1;
        // The cap ends the loop only once a sample is taken (a loaded machine can spend
        // the whole cap in the warm-up).
        if i % 16 == 0 && i > warmup && now_ns() >= env.deadline.get() {
            break;
        }
    }
    let cpu = sys::cpu_self_ns() - cpu0;
    frame(&mut msg, STOP, 0);
    ping.send(&msg)?;
    rep.put("samples", hist.count())
        .put("hist", hist.encode())
        .put("trips", i)
        .put("cpu", cpu);
    Ok(())
}

/// Answers each `ping` on `pong` until a stop frame.
fn q_pong(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut ping = open_queue(&a.imp, env, "ping")?;
    let mut pong = open_queue(&a.imp, env, "pong")?;
    let mut buf = Vec::with_capacity(a.size.max(12));
    ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let mut answered = 0u64;
    loop {
        buf.clear();
        buf.resize(a.size.max(12), 0);
        ensure!(ping.recv(&mut buf)?, "no ping within the timeout");
        if parse_frame(&buf)?.0 == STOP {
            break;
        }
        pong.send(&buf)?;
        answered += 1;
    }
    rep.put("answered", answered)
        .put("cpu", sys::cpu_self_ns() - cpu0);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Locks

/// Lock + unlock pairs in one process, nobody else around.
fn lock_uncontended(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut l = open_lock(&a.imp, env)?;
    let start = ready_go(a, env)?;
    // Warm-up: a tenth of the count, at most a fifth of the time cap.
    let warm_until = start + a.cap_ms * 200_000;
    for i in 0..(a.n / 10).clamp(1, 10_000) {
        l.lock()?;
        l.unlock()?;
        if i % 16 == 15 && now_ns() >= warm_until {
            break;
        }
    }
    env.deadline.set(now_ns() + a.cap_ms * 1_000_000);
    let cpu0 = sys::cpu_self_ns();
    let t0 = now_ns();
    let mut done = 0;
    while done < a.n {
        l.lock()?;
        l.unlock()?;
        done += 1;
        if done % 64 == 0 && now_ns() >= env.deadline.get() {
            break;
        }
    }
    let t1 = now_ns();
    let cpu = sys::cpu_self_ns() - cpu0;
    rep.put("t0", t0)
        .put("t1", t1)
        .put("ops", done)
        .put("cpu", cpu);
    Ok(())
}

/// Tight lock / increment a shared counter / unlock cycles against the other workers until
/// the cap; records the wait for each acquisition and the highest counter value written.
fn lock_contended(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut l = open_lock(&a.imp, env)?;
    let shm = Shm::open(&env.dir.join("counter.shm"), 64)?;
    let counter = shm.u64(0);
    let mut hist = Hist::default();
    let t0 = ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let deadline = env.deadline.get();
    let (mut cycles, mut max) = (0u64, 0u64);
    loop {
        let t = now_ns();
        l.lock()?;
        hist.add(now_ns() - t);
        // Deliberately not atomic as a read-modify-write: if the lock fails to exclude,
        // increments get lost and the final check (max == total cycles) fails.
        let v = counter.load(Ordering::Relaxed) + 1;
        counter.store(v, Ordering::Relaxed);
        max = max.max(v);
        l.unlock()?;
        cycles += 1;
        if cycles >= a.n || now_ns() >= deadline {
            break;
        }
    }
    let t1 = now_ns();
    rep.put("t0", t0)
        .put("t1", t1)
        .put("ops", cycles)
        .put("max", max)
        .put("hist", hist.encode())
        .put("cpu", sys::cpu_self_ns() - cpu0);
    Ok(())
}

/// Unlock-to-acquire hand-off between two processes, alternating roles each iteration:
/// the holder locks, lets the waiter block in `lock`, sleeps 1 ms (so the waiter is asleep
/// in the kernel), stamps the time and unlocks; the waiter stamps when it gets the lock.
/// The coordination (a futex word in a shared file) is outside the measured interval.
fn lock_handoff(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut l = open_lock(&a.imp, env)?;
    let shm = Shm::open(&env.dir.join("handoff.shm"), 64)?;
    let (state, stamp) = (shm.u32(0), shm.u64(8));
    let mut hist = Hist::default();
    ready_go(a, env)?;
    let wait_for = |want: u32| wait_state(state, want, "hand-off");
    let advance = |to: u32| advance_state(state, to);
    let warmup = 2;
    let total = a.n + warmup;
    let mut k = 0u64;
    while k < total {
        let base = (k as u32).wrapping_mul(3);
        if (k % 2) as u32 == a.id {
            wait_for(base)?;
            l.lock()?;
            advance(base + 1);
            wait_for(base + 2)?;
            std::thread::sleep(Duration::from_millis(1));
            stamp.store(now_ns(), Ordering::Release);
            l.unlock()?;
        } else {
            wait_for(base + 1)?;
            advance(base + 2);
            l.lock()?;
            let t = now_ns();
            let lat = t.saturating_sub(stamp.load(Ordering::Acquire));
            if k >= warmup {
                hist.add(lat);
            }
            l.unlock()?;
            // Both peers stop after the same iteration: decide here and publish it.
            let stop = k + 1 >= total || (k >= warmup && now_ns() >= env.deadline.get());
            shm.u32(4).store(u32::from(stop), Ordering::Release);
            advance(base + 3);
            if stop {
                break;
            }
        }
        if (k % 2) as u32 == a.id {
            wait_for(base + 3)?;
            if shm.u32(4).load(Ordering::Acquire) == 1 {
                break;
            }
        }
        k += 1;
    }
    rep.put("samples", hist.count()).put("hist", hist.encode());
    Ok(())
}

/// The reference for hand-off: two POSIX named semaphores bounced between two processes;
/// the sample is half a round trip.
fn sem_pingpong(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let sa = NamedSem::open(&format!("/{}-a", env.tag), 0)?;
    let sb = NamedSem::open(&format!("/{}-b", env.tag), 0)?;
    let mut hist = Hist::default();
    ready_go(a, env)?;
    let warmup = (a.n / 10).clamp(1, 1000);
    // Fixed count on both sides (no cap) so the two stay in step.
    for i in 0..warmup + a.n {
        if a.id == 0 {
            let t = now_ns();
            sa.post()?;
            sb.wait()?;
            if i >= warmup {
                hist.add((now_ns() - t) / 2);
            }
        } else {
            sa.wait()?;
            sb.post()?;
        }
    }
    rep.put("samples", hist.count()).put("hist", hist.encode());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Key-value

/// The keys of the kv workloads.
fn key(i: u64) -> String {
    format!("key{:04}", i % 1000)
}

/// A JSON value that serialises to exactly 64 bytes.
fn value(i: u64) -> serde_json::Value {
    let mut v = serde_json::json!({"id": i % 1_000_000, "payload": ""});
    let len = serde_json::to_string(&v).map(|s| s.len()).unwrap_or(0);
    v["payload"] = "x".repeat(64usize.saturating_sub(len)).into();
    v
}

/// Single-process `set` or `get` over 1,000 keys (the store filled beforehand).
fn kv_single(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut kv = open_kv(&a.imp, env)?;
    let entries: Vec<_> = (0..1000).map(|i| (key(i), value(i))).collect();
    kv.fill(&entries)?;
    ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let t0 = now_ns();
    let mut done = 0;
    while done < a.n {
        let k = key(done);
        if a.role == "kv-set" {
            kv.set(&k, &value(done))?;
        } else {
            let v = kv.get(&k)?.with_context(|| format!("{k} missing"))?;
            ensure!(v.get("payload").is_some(), "{k}: unexpected value {v}");
        }
        done += 1;
        if done % 16 == 0 && now_ns() >= env.deadline.get() {
            break;
        }
    }
    let t1 = now_ns();
    let cpu = sys::cpu_self_ns() - cpu0;
    rep.put("t0", t0)
        .put("t1", t1)
        .put("ops", done)
        .put("cpu", cpu);
    Ok(())
}

/// Contended `increment` of one key by several processes, with per-operation latency.
fn kv_incr(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut kv = open_kv(&a.imp, env)?;
    let mut hist = Hist::default();
    let t0 = ready_go(a, env)?;
    let cpu0 = sys::cpu_self_ns();
    let deadline = env.deadline.get();
    let (mut ops, mut max) = (0u64, 0i64);
    while ops < a.n {
        let t = now_ns();
        let v = kv.increment("counter", 1)?;
        hist.add(now_ns() - t);
        max = max.max(v);
        ops += 1;
        if now_ns() >= deadline {
            break;
        }
    }
    let t1 = now_ns();
    rep.put("t0", t0)
        .put("t1", t1)
        .put("ops", ops)
        .put("max", max)
        .put("hist", hist.encode())
        .put("cpu", sys::cpu_self_ns() - cpu0);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Events

/// Set-to-wake latency: worker 0 waits, worker 1 sets 1 ms after the waiter is armed,
/// stamping the time just before `set`.
fn event(a: &WorkerArgs, env: &Env, rep: &mut Report) -> Result<()> {
    let mut ev = open_event(&a.imp, env)?;
    let shm = Shm::open(&env.dir.join("event.shm"), 64)?;
    let (state, stamp, stop) = (shm.u32(0), shm.u64(8), shm.u32(4));
    let mut hist = Hist::default();
    ready_go(a, env)?;
    let wait_for = |want: u32| wait_state(state, want, "event");
    let advance = |to: u32| advance_state(state, to);
    let warmup = 2;
    let mut k = 0u32;
    loop {
        let base = k.wrapping_mul(2);
        if a.id == 0 {
            ev.clear()?;
            advance(base + 1);
            ensure!(ev.wait()?, "event wait timed out");
            let t = now_ns();
            if u64::from(k) >= warmup {
                hist.add(t.saturating_sub(stamp.load(Ordering::Acquire)));
            }
            let done = u64::from(k) + 1 >= a.n + warmup
                || (u64::from(k) >= warmup && t >= env.deadline.get());
            stop.store(u32::from(done), Ordering::Release);
            advance(base + 2);
            if done {
                break;
            }
        } else {
            wait_for(base + 1)?;
            std::thread::sleep(Duration::from_millis(1));
            stamp.store(now_ns(), Ordering::Release);
            ev.set()?;
            wait_for(base + 2)?;
            if stop.load(Ordering::Acquire) == 1 {
                break;
            }
        }
        k += 1;
    }
    rep.put("samples", hist.count()).put("hist", hist.encode());
    Ok(())
}

/// Waits (at most 10 s) until the two-process protocol word `state` reaches `want`.
/// Peers only move the state forward, and may move it past `want`.
fn wait_state(state: &AtomicU32, want: u32, who: &str) -> Result<()> {
    let give_up = now_ns() + 10_000_000_000;
    loop {
        let v = state.load(Ordering::Acquire);
        if v >= want {
            return Ok(());
        }
        ensure!(
            now_ns() < give_up,
            "{who} peer stuck at state {v}, want {want}"
        );
        sys::futex_wait(state, v, Some(Duration::from_millis(100)));
    }
}

/// Moves the protocol word `state` to `to` and wakes the peer.
fn advance_state(state: &AtomicU32, to: u32) {
    state.store(to, Ordering::Release);
    sys::futex_wake(state, 1);
}
