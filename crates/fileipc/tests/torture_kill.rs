//! Kill storms: for each primitive, 8 worker processes run its typical
//! cycle while the test process, acting as killer and supervisor, SIGKILLs a random
//! worker every 1-20 ms, reaps it and starts a new generation in its place, for
//! `FILEIPC_TORTURE_SECS` seconds (default 8). Workers check the invariants inside their
//! cycle and panic on a violation (the supervisor fails the run when a worker exits by
//! itself); the test checks them again at the end from the logs the workers left.

mod common;
mod torture_util;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Event, Mutex, PidFile, PidStatus, QueueOptions, Semaphore, SharedData};
use torture_util::{
    OP_BOUND, Record, Rng, alive, append_file, append_line, complete_lines, kill_storm, me,
    storm_duration,
};

const WORKERS: usize = 8;
/// Progress is reported every this many cycles.
const REPORT_EVERY: u64 = 16;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| {
        let dir = PathBuf::from(&args[0]);
        let slot: usize = args[1].parse().unwrap();
        let gen_: u64 = args[2].parse().unwrap();
        match role {
            "mutex" => mutex_worker(&dir),
            "semaphore" => semaphore_worker(&dir),
            "producer" => producer(&dir, slot, gen_),
            "consumer" => consumer(&dir, slot, gen_),
            "kv" => kv_worker(&dir, slot, gen_),
            "pidfile" => pidfile_worker(&dir),
            "setter" => event_setter(&dir, gen_),
            "waiter" => event_waiter(&dir),
            other => panic!("unknown role {other}"),
        }
    });
}

fn spawn(role: &str, dir: &Path, slot: usize, gen_: u64) -> Proc {
    Proc::spawn(
        role,
        &[dir.to_str().unwrap(), &slot.to_string(), &gen_.to_string()],
    )
}

struct Progress(u64);

impl Progress {
    fn tick(&mut self) {
        self.0 += 1;
        if self.0.is_multiple_of(REPORT_EVERY) {
            say(format!("c {REPORT_EVERY}"));
        }
    }
}

fn print_report(name: &str, r: &torture_util::StormReport, extra: &str) {
    eprintln!(
        "[torture] {name}: {:.1} s, {} workers, {} kills survived, {} cycles, {extra}, \
         violations: 0",
        r.elapsed.as_secs_f64(),
        WORKERS,
        r.kills,
        r.cycles
    );
}

// --- mutex ---------------------------------------------------------------------------

fn mutex_worker(dir: &Path) {
    let m = Mutex::open(dir.join("m")).unwrap();
    let rec = Record::open(&dir.join("inside"));
    let mut p = Progress(0);
    let mut rng = Rng::new(u64::from(std::process::id()));
    loop {
        let g = match rng.below(3) {
            0 => {
                assert!(m.lock_timeout(OP_BOUND).unwrap(), "lock timed out");
                None
            }
            1 => Some(m.guard_timeout(OP_BOUND).unwrap().expect("guard timed out")),
            _ => {
                if !m.try_lock().unwrap() {
                    assert!(m.lock_timeout(OP_BOUND).unwrap(), "lock timed out");
                }
                None
            }
        };
        rec.enter("mutex");
        for _ in 0..rng.range(0, 4) {
            std::thread::yield_now();
        }
        rec.leave("mutex");
        match g {
            Some(g) => g.unlock().unwrap(),
            None => m.unlock().unwrap(),
        }
        p.tick();
    }
}

#[test]
fn kill_storm_mutex() {
    kill_storm_mutex_in(false);
}

/// The same storm on a lock file in word mode (ownership in the lock word: a killed
/// holder's lock is taken over through the kernel's word on its owner id).
#[test]
fn kill_storm_mutex_word_mode() {
    kill_storm_mutex_in(true);
}

fn kill_storm_mutex_in(word: bool) {
    let dir = common::tempdir();
    let d = dir.path().to_owned();
    let created = Mutex::options()
        .flock_compatible(!word)
        .open(d.join("m"))
        .unwrap();
    assert_eq!(created.is_flock_compatible(), !word);
    drop(created);
    let r = kill_storm("mutex", WORKERS, storm_duration(), |slot, g| {
        spawn("mutex", &d, slot, g)
    });
    // After every worker died the lock comes back to a newcomer promptly: the kernel
    // released the flock at once (in word mode, the newcomer finds the holder's id dead
    // after one 10 ms slice); a hand-off the last unlocker reserved for a waiter
    // that was killed too bars newcomers until it expires (its TTL, at most 21 ms), so
    // the bound is the "within 100 ms", not "at once".
    let m = Mutex::open(d.join("m")).unwrap();
    let t = std::time::Instant::now();
    assert!(
        m.lock_timeout(std::time::Duration::from_millis(100))
            .unwrap(),
        "mutex still held 100 ms after all holders died"
    );
    eprintln!(
        "[torture] mutex: free {:?} after the last worker died",
        t.elapsed()
    );
    m.unlock().unwrap();
    assert!(r.cycles > 0, "no worker completed a cycle");
    print_report("mutex", &r, "two-holder checks on every entry and exit");
}

// --- semaphore -------------------------------------------------------------------------

const SEM_INITIAL: u32 = 3;

/// Holders record themselves as files `h/PID-START` while they hold a permit; every
/// holder counts the live ones and there must never be more than the initial value.
fn semaphore_worker(dir: &Path) {
    let s = Semaphore::open(dir.join("s"), SEM_INITIAL).unwrap();
    let hdir = dir.join("h");
    let (pid, start) = me();
    let mine = hdir.join(format!("{pid}-{start}"));
    let mut p = Progress(0);
    let mut rng = Rng::new(u64::from(pid));
    loop {
        let permit = if rng.below(2) == 0 {
            assert!(s.acquire_timeout(OP_BOUND).unwrap(), "acquire timed out");
            None
        } else {
            Some(
                s.permit_timeout(OP_BOUND)
                    .unwrap()
                    .expect("permit timed out"),
            )
        };
        std::fs::write(&mine, b"").unwrap();
        let mut live = 0;
        for e in std::fs::read_dir(&hdir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let Some((p, s)) = name.split_once('-') else {
                continue;
            };
            let (p, s): (u32, u64) = (p.parse().unwrap(), s.parse().unwrap());
            if alive(p, s) {
                live += 1;
            } else {
                let _ = std::fs::remove_file(hdir.join(&name));
            }
        }
        assert!(
            live <= SEM_INITIAL,
            "VIOLATION semaphore: {live} live holders of a semaphore of {SEM_INITIAL}"
        );
        std::fs::remove_file(&mine).unwrap();
        match permit {
            Some(g) => g.release().unwrap(),
            None => s.release().unwrap(),
        }
        p.tick();
    }
}

#[test]
fn kill_storm_semaphore() {
    let dir = common::tempdir();
    let d = dir.path().to_owned();
    std::fs::create_dir(d.join("h")).unwrap();
    let r = kill_storm("semaphore", WORKERS, storm_duration(), |slot, g| {
        spawn("semaphore", &d, slot, g)
    });
    // Every holder is dead: the value returns to the initial one.
    let s = Semaphore::open(d.join("s"), SEM_INITIAL).unwrap();
    assert_eq!(
        s.value().unwrap(),
        SEM_INITIAL,
        "permits of dead holders lost"
    );
    assert!(r.cycles > 0, "no worker completed a cycle");
    print_report(
        "semaphore",
        &r,
        &format!("value back to {SEM_INITIAL} after all died"),
    );
}

// --- queue -----------------------------------------------------------------------------

const PRODUCERS: usize = 4;

fn queue_opts() -> QueueOptions {
    // Small segments: the storm crosses, creates and removes many of them.
    QueueOptions::new().segment_size(64 << 10)
}

/// Sends `slot gen seq` messages; after each `send` returns, appends `seq` to its ack
/// file `ack-SLOT-GEN`.
fn producer(dir: &Path, slot: usize, gen_: u64) {
    let q = queue_opts().open(dir.join("q")).unwrap();
    let mut ack = append_file(&dir.join(format!("ack-{slot}-{gen_}")));
    let mut p = Progress(0);
    for seq in 0u64.. {
        // Sometimes a payload bigger than the rest of a segment, to cross boundaries.
        let pad = if seq % 97 == 13 {
            70_000
        } else {
            seq as usize % 40
        };
        let msg = format!("{slot} {gen_} {seq} {}", "x".repeat(pad));
        q.send(msg).unwrap();
        append_line(&mut ack, &seq.to_string());
        p.tick();
    }
}

fn parse_msg(m: &[u8]) -> (usize, u64, u64) {
    let s = std::str::from_utf8(m).expect("message is not the UTF-8 that was sent");
    let mut it = s.split(' ');
    let mut next = || it.next().expect("truncated message");
    let slot = next().parse().unwrap();
    let g = next().parse().unwrap();
    let seq = next().parse().unwrap();
    (slot, g, seq)
}

/// Receives, checks FIFO per producer as it goes, and appends `slot gen seq` of each
/// message to `recv-SLOT-GEN`.
fn consumer(dir: &Path, slot: usize, gen_: u64) {
    let q = queue_opts().open(dir.join("q")).unwrap();
    let mut log = append_file(&dir.join(format!("recv-{slot}-{gen_}")));
    let mut last: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut p = Progress(0);
    loop {
        let Some(m) = q.recv_timeout(Duration::from_millis(200)).unwrap() else {
            continue;
        };
        let (ps, pg, seq) = parse_msg(&m);
        if let Some(&prev) = last.get(&ps) {
            assert!(
                (pg, seq) > prev,
                "VIOLATION queue: producer {ps} message {pg}/{seq} received after {prev:?} \
                 (FIFO per producer broken or duplicate)"
            );
        }
        last.insert(ps, (pg, seq));
        append_line(&mut log, &format!("{ps} {pg} {seq}"));
        p.tick();
    }
}

#[test]
fn kill_storm_queue() {
    let dir = common::tempdir();
    let d = dir.path().to_owned();
    let r = kill_storm("queue", WORKERS, storm_duration(), |slot, g| {
        let role = if slot < PRODUCERS {
            "producer"
        } else {
            "consumer"
        };
        spawn(role, &d, slot, g)
    });
    // Drain what is left, as one more consumer.
    let q = queue_opts().open(d.join("q")).unwrap();
    let mut received: Vec<(usize, u64, u64)> = Vec::new();
    let mut drained = 0;
    let start = Instant::now();
    while let Some(m) = q.try_recv().unwrap() {
        received.push(parse_msg(&m));
        drained += 1;
        assert!(start.elapsed() < PATIENCE, "draining never ends");
    }
    assert_eq!(q.count().unwrap(), 0);
    let stats = q.stats().unwrap();
    assert_eq!(stats.sent, stats.received, "counters disagree: {stats:?}");
    for e in std::fs::read_dir(&d).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("recv-") {
            for l in complete_lines(&d.join(&name)) {
                let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
                received.push((v[0] as usize, v[1], v[2]));
            }
        }
    }
    // No duplicate.
    let mut seen = HashSet::new();
    for m in &received {
        assert!(
            seen.insert(*m),
            "VIOLATION queue: message {m:?} received twice"
        );
    }
    // No loss of an acknowledged message beyond one per killed consumer; nothing
    // received that was not sent (at most the one unacknowledged send of a killed
    // producer generation).
    let consumer_kills: u64 = r.kills_per_slot[PRODUCERS..].iter().sum();
    let mut acked_total = 0u64;
    let mut lost = Vec::new();
    let mut by_producer: HashMap<(usize, u64), Vec<u64>> = HashMap::new();
    for &(s, g, q) in &received {
        by_producer.entry((s, g)).or_default().push(q);
    }
    for slot in 0..PRODUCERS {
        for g in 0..r.generations[slot] {
            let acked: Option<u64> = complete_lines(&d.join(format!("ack-{slot}-{g}")))
                .iter()
                .map(|l| l.parse().unwrap())
                .max();
            let got: HashSet<u64> = by_producer
                .get(&(slot, g))
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let limit = acked.map_or(0, |a| a + 1);
            for &q in &got {
                assert!(
                    q <= limit,
                    "VIOLATION queue: received {slot}/{g}/{q} but only {acked:?} was sent"
                );
            }
            if let Some(a) = acked {
                acked_total += a + 1;
                for q in 0..=a {
                    if !got.contains(&q) {
                        lost.push((slot, g, q));
                    }
                }
            }
        }
    }
    assert!(
        lost.len() as u64 <= consumer_kills,
        "VIOLATION queue: {} acknowledged messages lost with only {consumer_kills} consumer \
         kills: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(acked_total > 0, "no message was sent");
    print_report(
        "queue",
        &r,
        &format!(
            "{acked_total} messages acknowledged, {} received ({drained} drained at the \
             end), {} lost to {consumer_kills} consumer kills (bound: 1 per kill), 0 \
             duplicates",
            received.len(),
            lost.len()
        ),
    );
}

// --- SharedData ------------------------------------------------------------------------

/// Each cycle increments `total` and sets `w.SLOT.GEN` to this generation's count in
/// one transaction, then appends the count to `kvack-SLOT-GEN`.
fn kv_worker(dir: &Path, slot: usize, gen_: u64) {
    let kv = SharedData::open(dir.join("kv")).unwrap();
    let key = format!("w.{slot}.{gen_}");
    let mut ack = append_file(&dir.join(format!("kvack-{slot}-{gen_}")));
    let mut p = Progress(0);
    for n in 1u64.. {
        kv.transaction(|tx| {
            tx.increment("total", 1)?;
            tx.set(&key, &n)
        })
        .unwrap();
        append_line(&mut ack, &n.to_string());
        p.tick();
    }
}

#[test]
fn kill_storm_shared_data() {
    let dir = common::tempdir();
    let d = dir.path().to_owned();
    let r = kill_storm("shared_data", WORKERS, storm_duration(), |slot, g| {
        spawn("kv", &d, slot, g)
    });
    let kv = SharedData::open(d.join("kv")).unwrap();
    let total: i64 = kv.get("total").unwrap().unwrap_or(0);
    let mut stored_sum = 0i64;
    let mut acked_sum = 0i64;
    let mut unacked = 0u64;
    for slot in 0..WORKERS {
        for g in 0..r.generations[slot] {
            let stored: i64 = kv.get(&format!("w.{slot}.{g}")).unwrap().unwrap_or(0);
            let acked: i64 = complete_lines(&d.join(format!("kvack-{slot}-{g}")))
                .iter()
                .map(|l| l.parse().unwrap())
                .max()
                .unwrap_or(0);
            // Every generation was killed once: at most its last increment committed
            // without being acknowledged.
            assert!(
                stored == acked || stored == acked + 1,
                "VIOLATION shared_data: worker {slot}.{g} acknowledged {acked} increments \
                 but {stored} are stored"
            );
            unacked += (stored - acked) as u64;
            stored_sum += stored;
            acked_sum += acked;
        }
    }
    assert_eq!(
        total, stored_sum,
        "VIOLATION shared_data: total {total} != sum of the per-worker counts {stored_sum}"
    );
    assert!(total > 0, "no increment was made");
    print_report(
        "shared_data",
        &r,
        &format!(
            "total {total} = {acked_sum} acknowledged + {unacked} committed by workers \
             killed before acknowledging (bound: 1 per kill)"
        ),
    );
}

// --- PidFile ---------------------------------------------------------------------------

fn pidfile_worker(dir: &Path) {
    let mut pf = PidFile::open(dir.join("app.pid")).unwrap();
    let rec = Record::open(&dir.join("owner"));
    let mut p = Progress(0);
    let mut rng = Rng::new(u64::from(std::process::id()));
    loop {
        if pf.create().unwrap() {
            rec.enter("pidfile");
            assert!(pf.is_owner().unwrap());
            assert_eq!(pf.read().unwrap(), Some(std::process::id()));
            for _ in 0..rng.range(0, 50) {
                std::thread::yield_now();
            }
            assert!(pf.is_owner().unwrap(), "VIOLATION pidfile: ownership lost");
            rec.leave("pidfile");
            pf.remove().unwrap();
            p.tick();
        } else {
            // Someone owns it (or a prober held it for a moment).
            let _ = pf.status().unwrap();
            std::thread::yield_now();
        }
    }
}

#[test]
fn kill_storm_pidfile() {
    let dir = common::tempdir();
    let d = dir.path().to_owned();
    let r = kill_storm("pidfile", WORKERS, storm_duration(), |slot, g| {
        spawn("pidfile", &d, slot, g)
    });
    let mut pf = PidFile::open(d.join("app.pid")).unwrap();
    assert!(
        !pf.status().unwrap().is_running(),
        "a dead owner still reads as running"
    );
    // The dead owner's PID may name another process by now (PIDs wrap at 32768 here,
    // and the other storms start thousands): `create` then declines it as another
    // program's PID file, and `create_force` takes it, the lock being free.
    let taken = pf.create().unwrap()
        || (matches!(pf.status().unwrap(), PidStatus::AliveUnlocked { .. })
            && pf.create_force().unwrap());
    assert!(taken, "stale file not taken over");
    pf.remove().unwrap();
    assert!(r.cycles > 0, "no worker ever owned the file");
    print_report(
        "pidfile",
        &r,
        "one-owner checks on every take-over and release",
    );
}

// --- Event -----------------------------------------------------------------------------

const SETTERS: usize = 2;
/// A waiter that sleeps this long while setters set the event every few milliseconds
/// has missed wake-ups.
const MISS_BOUND: Duration = Duration::from_secs(5);

fn event_setter(dir: &Path, gen_: u64) {
    let ev = Event::open(dir.join("ev")).unwrap();
    let mut rng = Rng::new(u64::from(std::process::id()) ^ gen_);
    let mut p = Progress(0);
    loop {
        ev.set().unwrap();
        // The setter's schedule is the workload, not synchronisation.
        std::thread::sleep(Duration::from_micros(rng.range(200, 3000)));
        ev.clear().unwrap();
        std::thread::sleep(Duration::from_micros(rng.range(200, 3000)));
        p.tick();
    }
}

fn event_waiter(dir: &Path) {
    let ev = Event::open(dir.join("ev")).unwrap();
    let mut p = Progress(0);
    loop {
        let t = Instant::now();
        assert!(
            ev.wait_timeout(MISS_BOUND).unwrap(),
            "VIOLATION event: a waiter slept {:?} while the event was set every few ms",
            t.elapsed()
        );
        ev.clear().unwrap();
        p.tick();
    }
}

#[test]
fn kill_storm_event() {
    let dir = common::tempdir();
    let d = dir.path().to_owned();
    let r = kill_storm("event", WORKERS, storm_duration(), |slot, g| {
        let role = if slot < SETTERS { "setter" } else { "waiter" };
        spawn(role, &d, slot, g)
    });
    let ev = Event::open(d.join("ev")).unwrap();
    ev.set().unwrap();
    assert!(ev.wait_timeout(PATIENCE).unwrap());
    assert!(r.cycles > 0, "no wake-up happened");
    print_report(
        "event",
        &r,
        &format!("no waiter slept past a set (bound {MISS_BOUND:?})"),
    );
}
