//! Helpers of the `#[ignore]`d in-test measurements (run in release with `--ignored
//! --nocapture`); speed is never asserted.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Barrier, Mutex as StdMutex};
use std::time::{Duration, Instant};

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per call of `f`, over `n` calls.
pub fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Baseline: one raw `flock(LOCK_EX|LOCK_NB)` + `flock(LOCK_UN)` pair.
#[allow(clippy::disallowed_methods)] // the baseline is the raw system call
pub fn raw_flock_pair(f: &std::fs::File) {
    use rustix::fs::{FlockOperation, flock};
    flock(f, FlockOperation::NonBlockingLockExclusive).unwrap();
    flock(f, FlockOperation::Unlock).unwrap();
}

/// What [`handoff_us`] measures: thread A (`hold`, then `release` at t0) hands over to
/// thread B, blocked in `acquire` (returning at t1); `after` runs in B once timed.
pub struct Handoff<'a> {
    pub hold: &'a (dyn Fn() + Sync),
    pub waiting: &'a (dyn Fn() -> u32 + Sync),
    pub release: &'a (dyn Fn() + Sync),
    pub acquire: &'a (dyn Fn() + Sync),
    pub after: &'a (dyn Fn() + Sync),
}

/// Median hand-off latency in microseconds over `rounds`. A waits until B is registered
/// as a waiter (or, for the floor, parked on the futex), spins 300 us more so B is
/// asleep, then releases. With `ops` `None`, the floor: the same protocol over a bare
/// futex word.
#[allow(clippy::disallowed_methods)] // the floor is the raw futex
pub fn handoff_us(rounds: usize, ops: Option<&Handoff<'_>>) -> f64 {
    let word = AtomicU32::new(0);
    let t0 = AtomicU64::new(0);
    let parked = AtomicU32::new(0);
    let barrier = Barrier::new(2);
    let out = StdMutex::new(Vec::new());
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for _ in 0..rounds {
                if let Some(o) = ops {
                    (o.hold)();
                }
                barrier.wait();
                while parked.load(SeqCst) == 0 && ops.is_none_or(|o| (o.waiting)() == 0) {
                    std::hint::spin_loop();
                }
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_micros(300) {
                    std::hint::spin_loop();
                }
                t0.store(mono_ns(), SeqCst);
                match ops {
                    Some(o) => (o.release)(),
                    None => {
                        word.store(1, SeqCst);
                        let flags = rustix::thread::futex::Flags::empty();
                        rustix::thread::futex::wake(&word, flags, 1).unwrap();
                    }
                }
                barrier.wait();
            }
        });
        sc.spawn(|| {
            for _ in 0..rounds {
                barrier.wait();
                match ops {
                    Some(o) => (o.acquire)(),
                    None => {
                        parked.store(1, SeqCst);
                        let flags = rustix::thread::futex::Flags::empty();
                        while word.load(SeqCst) == 0 {
                            let _ = rustix::thread::futex::wait(&word, flags, 0, None);
                        }
                    }
                }
                let t1 = mono_ns();
                out.lock()
                    .unwrap()
                    .push((t1 - t0.load(SeqCst)) as f64 / 1000.0);
                match ops {
                    Some(o) => (o.after)(),
                    None => {
                        word.store(0, SeqCst);
                        parked.store(0, SeqCst);
                    }
                }
                barrier.wait();
            }
        });
    });
    median(&mut out.into_inner().unwrap())
}
