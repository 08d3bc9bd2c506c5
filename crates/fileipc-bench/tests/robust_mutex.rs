//! The `pthread_robust` baseline (`sys::RobustMutex`): a process-shared robust pthread
//! mutex in a file mapping, taken over by the next locker when its holder is SIGKILLed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fileipc_bench::sys::RobustMutex;

const HOLDER: &str = "FILEIPC_BENCH_ROBUST_HOLDER";
const TEST: &str = "a_holder_killed_while_holding_is_recovered";

/// A process locks the mutex and is SIGKILLed holding it: the next `lock` succeeds
/// (`EOWNERDEAD`, then `pthread_mutex_consistent`), counts one recovery, and the mutex
/// works normally afterwards.
#[test]
fn a_holder_killed_while_holding_is_recovered() {
    if let Some(path) = std::env::var_os(HOLDER) {
        // The child: hold the mutex until killed.
        let mut m = RobustMutex::open(std::path::Path::new(&path)).expect("open");
        m.lock().expect("lock");
        let mut out = std::io::stdout().lock();
        writeln!(out, "\nHOLDER-LOCKED").unwrap();
        out.flush().unwrap();
        drop(out);
        loop {
            std::thread::park();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pthread.shm");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(HOLDER, &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the holder");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test NAME ... " before it, on the same line.
            if line.contains("HOLDER-LOCKED") {
                let _ = tx.send(());
            }
        }
    });
    let held = rx.recv_timeout(Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    held.expect("the holder never said it locked the mutex");

    // Locking in a thread bounds the wait: a lock that never returns fails the test.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut m = RobustMutex::open(&path).expect("open");
        m.lock().expect("lock after the holder died");
        let first = m.recovered();
        m.unlock().expect("unlock");
        m.lock().expect("lock again");
        m.unlock().expect("unlock again");
        let _ = tx.send((first, m.recovered()));
    });
    let (first, after) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("lock did not return after the holder was killed");
    assert_eq!(
        first, 1,
        "the dead holder's lock was not reported as recovered"
    );
    assert_eq!(after, 1, "a normal lock counted as a recovery");
}
