//! Threads: the kill storms' invariants with 16 threads in one
//! process, half sharing one handle (in an `Arc`), half with handles of their own
//! (cloned or opened again). Each test runs `FILEIPC_TORTURE_SECS / 2` seconds
//! (default 4 s); every wait is bounded.

mod common;
mod torture_util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fileipc::{MessageQueue, Mutex, QueueOptions, Semaphore, SharedData};
use torture_util::{OP_BOUND, storm_duration};

const THREADS: usize = 16;

/// What one consumer thread received: (producer, sequence number) in order.
type Received = Vec<(usize, u64)>;

fn duration() -> Duration {
    storm_duration() / 2
}

/// Runs `f(thread index)` on 16 threads until `duration()` passes; each returns its
/// cycle count. Panics propagate (a violated invariant fails the test).
fn run<F>(f: F) -> u64
where
    F: Fn(usize, &AtomicBool) -> u64 + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (f, stop, start) = (f.clone(), stop.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                f(i, &stop)
            })
        })
        .collect();
    start.wait();
    // The run's length is the workload, not synchronisation.
    std::thread::sleep(duration());
    stop.store(true, Ordering::SeqCst);
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn threads_mutex_never_two_holders() {
    threads_mutex_never_two_holders_in(false);
}

/// The same on a lock file in word mode.
#[test]
fn threads_mutex_never_two_holders_word_mode() {
    threads_mutex_never_two_holders_in(true);
}

fn threads_mutex_never_two_holders_in(word: bool) {
    let dir = common::tempdir();
    let shared = Arc::new(
        Mutex::options()
            .flock_compatible(!word)
            .open(dir.path().join("m"))
            .unwrap(),
    );
    assert_eq!(shared.is_flock_compatible(), !word);
    let inside = Arc::new(AtomicU32::new(0));
    let path = dir.path().join("m");
    let cycles = run(move |i, stop| {
        let own;
        let m: &Mutex = if i % 2 == 0 {
            &shared
        } else {
            own = if i % 4 == 1 {
                shared.try_clone().unwrap()
            } else {
                Mutex::open(&path).unwrap()
            };
            &own
        };
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let g = m.guard_timeout(OP_BOUND).unwrap().expect("lock timed out");
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(now, 1, "VIOLATION: {now} holders of the mutex");
            std::thread::yield_now();
            inside.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            n += 1;
        }
        n
    });
    assert!(cycles > 0);
    eprintln!("[torture] threads mutex: {cycles} cycles by {THREADS} threads, violations: 0");
}

#[test]
fn threads_semaphore_never_more_than_initial() {
    const INITIAL: u32 = 3;
    let dir = common::tempdir();
    let path = dir.path().join("s");
    let shared = Arc::new(Semaphore::open(&path, INITIAL).unwrap());
    let inside = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let (sh, ins, mx) = (shared.clone(), inside.clone(), max_seen.clone());
    let cycles = run(move |i, stop| {
        let own;
        let s: &Semaphore = if i % 2 == 0 {
            &sh
        } else {
            own = if i % 4 == 1 {
                sh.try_clone().unwrap()
            } else {
                Semaphore::open(&path, INITIAL).unwrap()
            };
            &own
        };
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let p = s
                .permit_timeout(OP_BOUND)
                .unwrap()
                .expect("acquire timed out");
            let now = ins.fetch_add(1, Ordering::SeqCst) + 1;
            mx.fetch_max(now, Ordering::SeqCst);
            assert!(
                now <= INITIAL,
                "VIOLATION: {now} holders of a semaphore of {INITIAL}"
            );
            std::thread::yield_now();
            ins.fetch_sub(1, Ordering::SeqCst);
            p.release().unwrap();
            n += 1;
        }
        n
    });
    assert_eq!(shared.value().unwrap(), INITIAL, "permits lost");
    eprintln!(
        "[torture] threads semaphore: {cycles} cycles, at most {} holders at once \
         (limit {INITIAL}), value back to {INITIAL}, violations: 0",
        max_seen.load(Ordering::SeqCst)
    );
}

#[test]
fn threads_queue_fifo_no_loss_no_duplicate() {
    let dir = common::tempdir();
    let path = dir.path().join("q");
    let opts = QueueOptions::new().segment_size(64 << 10);
    let shared = Arc::new(opts.open(&path).unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let producers_done = Arc::new(AtomicU32::new(0));
    let log: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
    let (sh, snt, pd, lg) = (
        shared.clone(),
        sent.clone(),
        producers_done.clone(),
        log.clone(),
    );
    let cycles = run(move |i, stop| {
        let own;
        let q: &MessageQueue = if i % 4 < 2 {
            &sh
        } else {
            own = opts.open(&path).unwrap();
            &own
        };
        let mut n = 0;
        if i < THREADS / 2 {
            // Producer `i`.
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                q.send(format!("{i} {seq}")).unwrap();
                seq += 1;
                n += 1;
            }
            snt.fetch_add(seq, Ordering::SeqCst);
            pd.fetch_add(1, Ordering::SeqCst);
        } else {
            let mut got = Vec::new();
            let mut last: HashMap<usize, u64> = HashMap::new();
            loop {
                let all_sent = pd.load(Ordering::SeqCst) == (THREADS / 2) as u32;
                match q.recv_timeout(Duration::from_millis(20)).unwrap() {
                    Some(m) => {
                        let s = std::str::from_utf8(&m).unwrap();
                        let (p, seq) = s.split_once(' ').unwrap();
                        let (p, seq): (usize, u64) = (p.parse().unwrap(), seq.parse().unwrap());
                        if let Some(&prev) = last.get(&p) {
                            assert!(seq > prev, "VIOLATION: producer {p}: {seq} after {prev}");
                        }
                        last.insert(p, seq);
                        got.push((p, seq));
                        n += 1;
                    }
                    None if all_sent => break,
                    None => {}
                }
            }
            lg.lock().unwrap().push(got);
        }
        n
    });
    let _ = cycles;
    let mut all: Vec<(usize, u64)> = log.lock().unwrap().concat();
    let total = all.len() as u64;
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, total, "VIOLATION: duplicates");
    assert_eq!(
        total,
        sent.load(Ordering::SeqCst),
        "VIOLATION: messages lost"
    );
    assert!(shared.is_empty().unwrap());
    eprintln!(
        "[torture] threads queue: {total} messages by 8 producer and 8 consumer threads, \
         0 lost, 0 duplicates, FIFO per producer, violations: 0"
    );
}

#[test]
fn threads_shared_data_increments_add_up() {
    let dir = common::tempdir();
    let path = dir.path().join("kv");
    let shared = Arc::new(SharedData::open(&path).unwrap());
    let sh = shared.clone();
    let cycles = run(move |i, stop| {
        let own;
        let kv: &SharedData = if i % 2 == 0 {
            &sh
        } else {
            own = SharedData::open(&path).unwrap();
            &own
        };
        let mut n = 0u64;
        let t = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            kv.increment("total", 1).unwrap();
            n += 1;
            assert!(t.elapsed() < Duration::from_secs(120), "never stopped");
        }
        n
    });
    let total: u64 = shared.get("total").unwrap().unwrap();
    assert_eq!(total, cycles, "VIOLATION: increments lost or doubled");
    eprintln!("[torture] threads shared_data: {total} increments, all counted, violations: 0");
}
