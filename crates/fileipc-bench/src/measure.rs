//! Helpers of the stand-alone measurements in `examples/` (the mutex, semaphore and event
//! measurements): medians, per-call timing, the in-process hand-off protocol with its bare
//! futex floor, and child processes that are the example re-executed in a role.
//!
//! Speed is never asserted: each example prints its figures beside their baselines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Barrier, Mutex as StdMutex};
use std::time::{Duration, Instant};

use crate::sys;

/// How long a parent waits for a line from a child before giving up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
pub fn mono_ns() -> u64 {
    sys::now_ns()
}

/// The upper median (the element at `len / 2` once sorted); `v` must not be empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `p` quantile (0..=1) of `v`, the element at `(len - 1) * p` once sorted.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
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
pub fn raw_flock_pair(f: &std::fs::File) {
    sys::flock_try_lock(f).expect("flock(LOCK_EX|LOCK_NB)");
    sys::flock_unlock(f).expect("flock(LOCK_UN)");
}

/// What [`handoff_us`] measures: thread A (`hold`, then `release` at t0) hands over to
/// thread B, blocked in `acquire` (returning at t1); `after` runs in B once timed.
#[allow(missing_debug_implementations)]
pub struct Handoff<'a> {
    /// A takes what it will hand over.
    pub hold: &'a (dyn Fn() + Sync),
    /// How many waiters A sees (non-zero once B is registered as one).
    pub waiting: &'a (dyn Fn() -> u32 + Sync),
    /// A hands over.
    pub release: &'a (dyn Fn() + Sync),
    /// B blocks until it has what A released.
    pub acquire: &'a (dyn Fn() + Sync),
    /// B, after the sample is taken.
    pub after: &'a (dyn Fn() + Sync),
}

/// Median hand-off latency in microseconds over `rounds`. A waits until B is registered
/// as a waiter (or, for the floor, parked on the futex), spins 300 us more so B is
/// asleep, then releases. With `ops` `None`, the floor: the same protocol over a bare
/// futex word.
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
                        sys::futex_wake(&word, 1);
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
                        while word.load(SeqCst) == 0 {
                            sys::futex_wait(&word, 0, None);
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

/// In a child: says one line to the parent (stdout, flushed).
pub fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{msg}").expect("writing to the parent");
    out.flush().expect("writing to the parent");
}

/// In a child: says "ready" to the parent and waits for its go ([`Child::go`]), so that
/// every child of a timed run has done its setup before the clock starts.
pub fn wait_go() {
    say("ready");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("reading the parent's go");
}

/// A child process: this program re-executed with `args` (its role first), whose lines
/// the parent reads with a timeout. Killed when dropped.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    lines: Receiver<String>,
}

impl Child {
    /// Starts `current_exe ARGS...` with its stdin and stdout piped to the parent.
    pub fn spawn(args: &[&str]) -> Child {
        let exe = std::env::current_exe().expect("locating this program");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning a child");
        let stdout = child.stdout.take().expect("the child's stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Child { child, lines }
    }

    /// The next line the child said, waiting at most `timeout`; panics on timeout or if
    /// the child exited without saying one.
    pub fn expect_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("child {} said nothing within {timeout:?}", self.child.id())
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("child {} exited without saying a line", self.child.id())
            }
        }
    }

    /// Waits for a line equal to `want`, panicking on anything else or on timeout.
    pub fn expect(&mut self, want: &str) {
        let got = self.expect_line(PATIENCE);
        assert_eq!(got, want, "child {} said {got:?}", self.child.id());
    }

    /// Tells a child waiting in [`wait_go`] to start.
    pub fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("the child's stdin");
        stdin.write_all(b"go\n").expect("telling a child to go");
        stdin.flush().expect("telling a child to go");
    }

    /// Waits for the child to exit and panics unless it succeeded.
    pub fn wait_success(&mut self) {
        let st = self.child.wait().expect("waiting for a child");
        assert!(st.success(), "child {} failed: {st}", self.child.id());
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
