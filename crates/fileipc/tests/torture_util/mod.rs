//! Shared pieces of the torture suite: a seeded random generator, the run length, an
//! exclusive-holder record that detects two holders at once, process liveness that a
//! recycled PID cannot fool, and the kill-storm driver (killer and supervisor).

#![allow(dead_code, unreachable_pub)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Proc};

/// A xorshift64* generator: tiny, seeded, good enough to pick victims and offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The seed of this run: `FILEIPC_TORTURE_SEED`, or one taken from the clock (printed,
/// so a failing run can be replayed).
pub fn seed(what: &str) -> u64 {
    let s = std::env::var("FILEIPC_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("[torture] {what}: seed {s} (replay with FILEIPC_TORTURE_SEED={s})");
    s
}

/// How long each kill storm runs: `FILEIPC_TORTURE_SECS` (default 8 s, sized so the
/// whole suite stays within the CI budget on 2 cores).
pub fn storm_duration() -> Duration {
    let secs: f64 = std::env::var("FILEIPC_TORTURE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8.0);
    Duration::from_secs_f64(secs)
}

/// Scale for the number of random cases of the corruption tests
/// (`FILEIPC_TORTURE_CASES`, default 1).
pub fn case_scale() -> usize {
    std::env::var("FILEIPC_TORTURE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// `(state, flags, start time)` of a process from `/proc/PID/stat`, `None` if gone.
fn proc_stat(pid: u32) -> Option<(char, u64, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// As [`proc_stat`], for thread `tid` of process `pid`.
fn proc_stat_of(pid: u32, tid: u32) -> Option<(char, u64, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

fn parse_stat(s: &str) -> Option<(char, u64, u64)> {
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields after the command: 3 state, 9 flags, 22 start time (1-based in proc(5)).
    Some((
        f.first()?.chars().next()?,
        f.get(6)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// Whether every thread of process `pid` is stopped by a signal (state `T` in
/// `/proc/PID/task/*/stat`): a `SIGSTOP` takes effect some time after `kill` returns,
/// and thread by thread: the thread that takes the signal (a child's main thread, asleep
/// while its test thread works) stops the others after itself, so the main thread's state
/// alone does not show that the thread doing the work stopped.
pub fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut threads = 0;
    for t in tasks {
        let Some(tid) = t.ok().and_then(|t| t.file_name().to_str()?.parse().ok()) else {
            return false;
        };
        if proc_stat_of(pid, tid).is_none_or(|s| s.0 != 'T') {
            return false;
        }
        threads += 1;
    }
    threads > 0
}

/// This process, as a `(pid, start time)` pair a recycled PID cannot impersonate.
pub fn me() -> (u32, u64) {
    let pid = std::process::id();
    (pid, proc_stat(pid).map_or(0, |s| s.2))
}

/// Whether process `(pid, start)` is running and not on its way out: a zombie, or a
/// process inside `exit` (`PF_EXITING`, set before the kernel closes its files and
/// so releases its locks), counts as dead.
pub fn alive(pid: u32, start: u64) -> bool {
    const PF_EXITING: u64 = 0x4;
    match proc_stat(pid) {
        None => false,
        Some((state, flags, st)) => {
            st == start && state != 'Z' && state != 'X' && flags & PF_EXITING == 0
        }
    }
}

/// Whether `(pid, start)` is dead, waiting a little for a process that is exiting: the
/// kernel may release its locks a moment before `/proc` shows it gone.
pub fn dead_soon(pid: u32, start: u64) -> bool {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        if !alive(pid, start) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

/// A file recording who is inside a critical section, checked on entry and exit: an
/// entrant must find it empty or naming a dead process; a leaver must find itself.
/// Either check failing means two processes were inside at once.
pub struct Record {
    file: File,
    path: PathBuf,
}

const RECORD_LEN: usize = 48;

impl Record {
    pub fn open(path: &Path) -> Record {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        Record {
            file,
            path: path.to_owned(),
        }
    }

    fn read(&self) -> Option<(u32, u64)> {
        let mut b = [0u8; RECORD_LEN];
        let n = self.file.read_at(&mut b, 0).unwrap();
        let s = std::str::from_utf8(&b[..n])
            .ok()?
            .trim_matches(['\0', ' ', '\n']);
        let mut it = s.split(' ');
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.parse().ok()?;
        Some((pid, start))
    }

    fn write(&self, v: Option<(u32, u64)>) {
        let mut b = [b' '; RECORD_LEN];
        if let Some((p, s)) = v {
            let t = format!("{p} {s}");
            b[..t.len()].copy_from_slice(t.as_bytes());
        }
        self.file.write_all_at(&b, 0).unwrap();
    }

    /// Enters: panics (a violation) if a live process is recorded inside.
    pub fn enter(&self, what: &str) {
        let me = me();
        if let Some((pid, start)) = self.read() {
            assert!(
                (pid, start) != me,
                "VIOLATION {what}: {} already records this process inside",
                self.path.display()
            );
            assert!(
                dead_soon(pid, start),
                "VIOLATION {what}: two holders at once: process {pid} is inside and alive \
                 while process {} entered",
                me.0
            );
        }
        self.write(Some(me));
    }

    /// Leaves: panics if another process took our place meanwhile.
    pub fn leave(&self, what: &str) {
        let me = me();
        let got = self.read();
        assert!(
            got == Some(me),
            "VIOLATION {what}: process {} left but the record says {got:?}: another holder \
             entered meanwhile",
            me.0
        );
        self.write(None);
    }
}

/// Appends one line with a single `write` (a killed writer leaves at worst a partial
/// last line, which readers skip).
pub fn append_line(file: &mut File, line: &str) {
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

pub fn append_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// The complete lines of a file (a partial last line, from a killed writer, is dropped).
pub fn complete_lines(path: &Path) -> Vec<String> {
    let Ok(s) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut lines: Vec<String> = s.split('\n').map(str::to_owned).collect();
    lines.pop(); // after the last '\n': empty, or a partial line
    lines
}

/// What a kill storm did.
#[derive(Debug, Default, Clone)]
pub struct StormReport {
    pub kills: u64,
    /// Kills per worker slot (including the final kill of every worker).
    pub kills_per_slot: Vec<u64>,
    /// Generations started per slot (restarts + 1).
    pub generations: Vec<u64>,
    /// Sum of the `c N` progress lines the workers said.
    pub cycles: u64,
    pub elapsed: Duration,
}

/// Runs a kill storm: `n` workers started by `spawn(slot, generation)`; every 1-20 ms a
/// random one is SIGKILLed, reaped and restarted with the next generation, until
/// `duration` has passed; then every worker is killed. A worker that exits on its own
/// (a panic: a violated invariant) fails the storm at once. Workers report progress
/// with lines `c N` (N cycles done since their last report).
pub fn kill_storm(
    name: &str,
    n: usize,
    duration: Duration,
    mut spawn: impl FnMut(usize, u64) -> Proc,
) -> StormReport {
    let mut rng = Rng::new(seed(name));
    let start = Instant::now();
    let mut report = StormReport {
        kills_per_slot: vec![0; n],
        generations: vec![1; n],
        ..StormReport::default()
    };
    let mut workers: Vec<Proc> = (0..n).map(|i| spawn(i, 0)).collect();
    let drain = |p: &mut Proc, cycles: &mut u64| {
        while let Some(l) = p.try_line() {
            if let Some(c) = l.strip_prefix("c ") {
                *cycles += c.parse::<u64>().unwrap_or(0);
            }
        }
    };
    let check_exit = |p: &mut Proc, slot: usize| {
        if let Some(st) = p.try_wait() {
            panic!(
                "{name}: worker {slot} (pid {}) exited by itself with {st}: an invariant \
                 was violated (see its panic message above)",
                p.pid
            );
        }
    };
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(rng.range(1, 21)));
        for (slot, p) in workers.iter_mut().enumerate() {
            drain(p, &mut report.cycles);
            check_exit(p, slot);
        }
        let victim = rng.below(n);
        let p = &mut workers[victim];
        let st = p.kill_and_reap();
        drain(p, &mut report.cycles);
        assert!(
            st.signal() == Some(9),
            "{name}: worker {victim} (pid {}) had exited with {st} before the kill: an \
             invariant was violated (see its panic message above)",
            p.pid
        );
        report.kills += 1;
        report.kills_per_slot[victim] += 1;
        let g = report.generations[victim];
        report.generations[victim] += 1;
        workers[victim] = spawn(victim, g);
    }
    for (slot, p) in workers.iter_mut().enumerate() {
        let st = p.kill_and_reap();
        drain(p, &mut report.cycles);
        assert!(
            st.signal() == Some(9),
            "{name}: worker {slot} (pid {}) had exited with {st} before the final kill",
            p.pid
        );
        report.kills += 1;
        report.kills_per_slot[slot] += 1;
    }
    report.elapsed = start.elapsed();
    report
}

/// A bound for single operations inside workers: long enough for a loaded 2-core
/// machine, short enough that a lost wake-up or a stuck lock fails the storm.
pub const OP_BOUND: Duration = Duration::from_secs(20);

/// Fails unless `f` finishes within `PATIENCE`.
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {PATIENCE:?} (a hang)"),
    }
}
