//! Semaphore measurements beside their baselines, printed, never asserted:
//! - uncontended `try_acquire` + `release`, and `acquire` + `release`, in one thread
//!   against a POSIX named semaphore's `sem_wait` + `sem_post` pair (goal: <= 4x) and a
//!   raw `flock(LOCK_EX|LOCK_NB)` + `flock(LOCK_UN)` pair;
//! - hand-off between two threads of one process (a signalling `release` at t0, the
//!   blocked `acquire_timeout` returns at t1) against the same protocol over a bare futex
//!   word.
//!
//! ```text
//! cargo run --release -p fileipc-bench --example semaphore_bench
//! ```
//!
//! `fileipc bench semaphore` measures the same quantities across processes; this program
//! adds the in-process hand-off and its futex floor.

use std::path::Path;

use fileipc::Semaphore;
use fileipc_bench::measure::{self, Handoff, PATIENCE, median, per_call, raw_flock_pair};
use fileipc_bench::sys::NamedSem;

/// Hand-off latency: thread B blocks in `acquire_timeout` on an empty semaphore,
/// thread A releases at t0 (a signalling release), B returns at t1. Median of t1 - t0
/// in microseconds; with `bare_futex`, the same protocol over a bare futex word.
fn handoff_us(path: &Path, rounds: usize, bare_futex: bool) -> f64 {
    let a = Semaphore::open(path, 0).unwrap();
    let b = Semaphore::open(path, 0).unwrap();
    let ops = Handoff {
        hold: &|| {},
        waiting: &|| a.waiting(),
        release: &|| a.release().unwrap(),
        acquire: &|| assert!(b.acquire_timeout(PATIENCE).unwrap()),
        // Keep the permit (the value stays 0): A and B are one process, so A's next
        // release returns it.
        after: &|| assert_eq!(b.value().unwrap(), 0),
    };
    measure::handoff_us(rounds, (!bare_futex).then_some(&ops))
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("fileipc-semaphore-bench-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 3).unwrap();
    let raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let name = format!("/fileipc-semaphore-bench-{}", std::process::id());
    NamedSem::unlink(&name);
    let posix = NamedSem::open(&name, 1).unwrap();
    NamedSem::unlink(&name);
    let n = 200_000;
    let (mut ours_try, mut ours, mut flock, mut sem) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        flock.push(per_call(n, || raw_flock_pair(&raw)));
        sem.push(per_call(n, || {
            posix.wait().unwrap();
            posix.post().unwrap();
        }));
        ours_try.push(per_call(n, || {
            assert!(s.try_acquire().unwrap());
            s.release().unwrap();
        }));
        ours.push(per_call(n, || {
            assert!(s.acquire().unwrap());
            s.release().unwrap();
        }));
    }
    let (t, o, f, p) = (
        median(&mut ours_try),
        median(&mut ours),
        median(&mut flock),
        median(&mut sem),
    );
    println!(
        "semaphore uncontended: try_acquire+release {t:.1} ns, acquire+release {o:.1} ns; \
         posix sem_wait+sem_post {p:.1} ns (ratios {:.2}, {:.2}; goal <= 4), \
         raw flock pair {f:.0} ns (ratios {:.3}, {:.3})",
        t / p,
        o / p,
        t / f,
        o / f
    );

    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for i in 0..3 {
        // A fresh semaphore each time: the signalling releases raise its capacity.
        let hpath = dir.path().join(format!("handoff{i}"));
        base.push(handoff_us(&hpath, 300, true));
        ours.push(handoff_us(&hpath, 300, false));
    }
    let (o, b) = (median(&mut ours), median(&mut base));
    println!(
        "semaphore hand-off release->acquire median: ours {o:.1} us, bare futex wake {b:.1} us, ratio {:.2} (goal < 100 us)",
        o / b
    );
}
