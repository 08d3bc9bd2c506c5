//! `fileipc stat` counts waiters exactly: after every waiter was SIGKILLed it shows 0
//! waiting within 100 ms, for the queue (receivers blocked on an empty queue), the mutex
//! (lockers behind a holder) and the semaphore (acquirers on 0 permits). Waiters and
//! `stat` are the real `fileipc` binary; the holders are this process, through the
//! library.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fileipc::{MessageQueue, Mutex, Semaphore};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);
/// The bound `stat` must meet after the last kill.
const BOUND: Duration = Duration::from_millis(100);
const WAITERS: usize = 4;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fileipc-cli-")
        .tempdir()
        .unwrap()
}

/// `fileipc stat PATH --json`, parsed.
fn stat(path: &Path) -> Value {
    let o = bin()
        .args(["stat", s(path), "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "stat failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn waiting(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field:?} in {report}"))
}

fn kill(pid: u32) {
    let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
}

/// Kills the children still running when a test fails midway.
struct Waiters(Vec<Child>);

impl Drop for Waiters {
    fn drop(&mut self) {
        for c in &mut self.0 {
            kill(c.id());
            let _ = c.wait();
        }
    }
}

/// Starts [`WAITERS`] `fileipc ARGS` processes, waits until `stat` counts them all in
/// `field`, SIGKILLs them all, then runs `stat` until it shows 0 and checks that it did
/// within [`BOUND`] of the last kill.
fn killed_waiters_leave_the_count(path: &Path, field: &str, args: &[&str]) {
    let mut waiters = Waiters(
        (0..WAITERS)
            .map(|_| {
                bin()
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let start = Instant::now();
    let mut last = stat(path);
    while waiting(&last, field) != WAITERS as u64 {
        assert!(
            start.elapsed() < PATIENCE,
            "stat never counted {WAITERS} waiters: {last}"
        );
        for c in &mut waiters.0 {
            assert!(c.try_wait().unwrap().is_none(), "a waiter exited: {last}");
        }
        std::thread::sleep(Duration::from_millis(5));
        last = stat(path);
    }
    // A stat run with nobody killed, for scale.
    let t = Instant::now();
    assert_eq!(waiting(&stat(path), field), WAITERS as u64);
    let one_stat = t.elapsed();

    for c in &waiters.0 {
        kill(c.id());
    }
    let killed = Instant::now();
    let mut runs = 0;
    let (report, at) = loop {
        let r = stat(path);
        runs += 1;
        if waiting(&r, field) == 0 {
            break (r, killed.elapsed());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "stat still counts killed waiters 5 s after the kills: {r}"
        );
    };
    eprintln!(
        "{field} of {}: 0 after {at:?} since the last of {WAITERS} kills ({runs} stat \
         runs; one stat run takes {one_stat:?}): {report}",
        path.display()
    );
    for c in &mut waiters.0 {
        let st = c.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "a waiter was not killed by the signal but exited: {st}"
        );
    }
    assert!(
        at < BOUND,
        "stat showed 0 {field} only {at:?} after the waiters were killed ({runs} runs)"
    );
}

#[test]
fn queue_receivers_killed_while_blocked_leave_stat_within_100ms() {
    let d = tmp();
    let q = d.path().join("q");
    let lib = MessageQueue::open(&q).unwrap();
    killed_waiters_leave_the_count(
        &q,
        "waiting_consumers",
        &["queue", "recv", s(&q), "--forever"],
    );
    // Nothing was taken, and the queue works.
    lib.send("after").unwrap();
    assert_eq!(lib.count().unwrap(), 1);
    assert_eq!(lib.try_recv().unwrap().unwrap(), "after");
}

#[test]
fn mutex_lockers_killed_while_blocked_leave_stat_within_100ms() {
    let d = tmp();
    let m = d.path().join("m");
    let lib = Mutex::open(&m).unwrap();
    assert!(lib.try_lock().unwrap());
    killed_waiters_leave_the_count(
        &m,
        "waiting",
        &["mutex", "run", s(&m), "--forever", "--", "true"],
    );
    assert!(lib.is_locked().unwrap());
    lib.unlock().unwrap();
    let o = bin()
        .args(["mutex", "run", s(&m), "--timeout", "0", "--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn semaphore_acquirers_killed_while_blocked_leave_stat_within_100ms() {
    let d = tmp();
    let p = d.path().join("sem");
    let lib = Semaphore::open(&p, 1).unwrap();
    assert!(lib.try_acquire().unwrap());
    killed_waiters_leave_the_count(
        &p,
        "waiting",
        &["sem", "run", s(&p), "--forever", "--", "true"],
    );
    assert_eq!(lib.value().unwrap(), 0, "a killed waiter took a permit");
    lib.release().unwrap();
    assert_eq!(lib.value().unwrap(), 1);
    let o = bin()
        .args(["sem", "run", s(&p), "--timeout", "0", "--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
