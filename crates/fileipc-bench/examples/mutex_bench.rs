//! Mutex measurements beside their baselines, printed, never asserted:
//! - uncontended `try_lock` + `unlock` in one thread against a raw
//!   `flock(LOCK_EX|LOCK_NB)` + `flock(LOCK_UN)` pair (goal: <= 1.5x);
//! - the same in word mode (`MutexOptions::flock_compatible(false)`) against a
//!   process-shared robust pthread mutex in a shared mapping, the natural limit (goal:
//!   <= 2x), `lock`+`unlock` and `try_lock`+`unlock`;
//! - hand-off between two threads of one process (unlock at t0, the blocked `lock_timeout`
//!   returns at t1) against the same protocol over a bare futex word;
//! - 4 processes in lock / 2 us critical section / unlock cycles against a raw blocking
//!   `flock`: cycles/s and the wait for each acquisition (goal: p99 <= 10 ms).
//!
//! ```text
//! cargo run --release -p fileipc-bench --example mutex_bench
//! ```
//!
//! `fileipc bench mutex` measures the same quantities across processes; this program
//! adds the in-process hand-off and its futex floor. The contending processes are this
//! program re-executed with the role `contender`.

use std::path::Path;
use std::time::{Duration, Instant};

use fileipc::Mutex;
use fileipc_bench::measure::{
    self, Child, Handoff, PATIENCE, median, per_call, percentile, raw_flock_pair, say,
};
use fileipc_bench::sys;

/// Child: `n` cycles of lock / tiny critical section / unlock, through our mutex or a
/// raw blocking flock; prints p50 and p99 of the time spent waiting for the lock (us).
fn contender(args: &[String]) {
    let n: usize = args[2].parse().unwrap();
    let m = Mutex::open(&args[0]).unwrap();
    let raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args[0])
        .unwrap();
    let ours = args[1] == "ours";
    let mut waits = Vec::with_capacity(n);
    say("ready");
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        if ours {
            m.lock_forever().unwrap();
        } else {
            sys::flock_lock(&raw, true).unwrap();
        }
        waits.push(t.elapsed().as_secs_f64() * 1e6);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_micros(2) {
            std::hint::spin_loop();
        }
        if ours {
            m.unlock().unwrap();
        } else {
            sys::flock_unlock(&raw).unwrap();
        }
    }
    let total = start.elapsed().as_secs_f64();
    let p50 = percentile(&mut waits, 0.5);
    let p99 = percentile(&mut waits, 0.99);
    let max = percentile(&mut waits, 1.0);
    say(format!("{p50} {p99} {max} {total}"));
}

/// 4 contending processes of `n` cycles each: median p50, highest p99 and max wait
/// (us), and cycles/s.
fn contended(path: &Path, which: &str, n: usize) -> (f64, f64, f64, f64) {
    let p = path.to_str().unwrap();
    let ns = n.to_string();
    let mut kids: Vec<Child> = (0..4)
        .map(|_| Child::spawn(&["contender", p, which, &ns]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    let (mut p50, mut p99, mut max, mut total) = (Vec::new(), Vec::new(), 0f64, 0f64);
    for k in &mut kids {
        let line = k.expect_line(PATIENCE);
        let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        p50.push(v[0]);
        p99.push(v[1]);
        max = max.max(v[2]);
        total = total.max(v[3]);
        k.wait_success();
    }
    let cycles_per_s = (4 * n) as f64 / total;
    (
        median(&mut p50),
        p99.into_iter().fold(0.0, f64::max),
        max,
        cycles_per_s,
    )
}

/// Hand-off latency: thread A holds the lock through one handle, thread B blocks in
/// `lock_timeout` through another; A unlocks at t0, B returns at t1. Median of t1 - t0
/// in microseconds; with `bare_futex`, the same protocol over a bare futex word.
fn handoff_us(path: &Path, rounds: usize, bare_futex: bool) -> f64 {
    let a = Mutex::open(path).unwrap();
    let b = Mutex::open(path).unwrap();
    let ops = Handoff {
        hold: &|| a.lock_forever().unwrap(),
        waiting: &|| a.waiting(),
        release: &|| a.unlock().unwrap(),
        acquire: &|| assert!(b.lock_timeout(PATIENCE).unwrap()),
        after: &|| b.unlock().unwrap(),
    };
    measure::handoff_us(rounds, (!bare_futex).then_some(&ops))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("contender") {
        return contender(&args[1..]);
    }
    let dir = tempfile::Builder::new()
        .prefix("fileipc-mutex-bench-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("lock");
    let m = Mutex::open(&path).unwrap();
    let raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let n = 200_000;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        base.push(per_call(n, || raw_flock_pair(&raw)));
        ours.push(per_call(n, || {
            assert!(m.try_lock().unwrap());
            m.unlock().unwrap();
        }));
    }
    let (o, b) = (median(&mut ours), median(&mut base));
    println!(
        "mutex uncontended lock+unlock: ours {o:.0} ns, raw flock pair {b:.0} ns, ratio {:.2} (goal <= 1.5)",
        o / b
    );

    let word = Mutex::options()
        .flock_compatible(false)
        .open(dir.path().join("word"))
        .unwrap();
    let mut robust = sys::RobustMutex::open(&dir.path().join("pthread")).unwrap();
    let n = 2_000_000;
    let (mut lock, mut try_lock, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        base.push(per_call(n, || {
            robust.lock().unwrap();
            robust.unlock().unwrap();
        }));
        lock.push(per_call(n, || {
            assert!(word.lock().unwrap());
            word.unlock().unwrap();
        }));
        try_lock.push(per_call(n, || {
            assert!(word.try_lock().unwrap());
            word.unlock().unwrap();
        }));
    }
    let (l, t, b) = (median(&mut lock), median(&mut try_lock), median(&mut base));
    println!(
        "mutex word mode uncontended: lock+unlock {l:.1} ns, try_lock+unlock {t:.1} ns, robust pthread mutex {b:.1} ns, ratios {:.2} {:.2} (goal <= 2)",
        l / b,
        t / b
    );

    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base.push(handoff_us(&path, 300, true));
        ours.push(handoff_us(&path, 300, false));
    }
    let (o, b) = (median(&mut ours), median(&mut base));
    println!(
        "mutex hand-off unlock->acquire median: ours {o:.1} us, bare futex wake {b:.1} us, ratio {:.2} (goal < 100 us)",
        o / b
    );

    for round in 0..2 {
        for which in ["ours", "flock"] {
            let (p50, p99, max, rate) = contended(&path, which, 20_000);
            println!(
                "mutex contended 4 procs round {round} {which:5}: {rate:.0} cycles/s, wait p50 {p50:.1} us, p99 {p99:.1} us, max {max:.0} us (goal p99 <= 10000 us)"
            );
        }
    }
}
