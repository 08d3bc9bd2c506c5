//! Corruption: every on-disk file of every primitive is truncated,
//! extended with garbage or bit-flipped at random offsets (seeded), then opened and
//! operated on in a fresh child process. Each case must give correct data or a clear
//! error: a panic, a signal (SIGBUS) or a hang (every case is bounded) fails the test.
//! `FILEIPC_TORTURE_CASES` multiplies the number of cases; `FILEIPC_TORTURE_SEED`
//! replays a run.

mod common;
mod torture_util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{PATIENCE, Proc, say};
use fileipc::{Error, Event, Mutex, PidFile, QueueOptions, Semaphore, SharedData};
use torture_util::{Rng, case_scale, seed};

/// Cases per primitive in a default run.
const CASES: usize = 300;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "cases" => run_cases(&args),
        "mapped" => mapped_holder(&args),
        other => panic!("unknown role {other}"),
    });
}

fn queue_opts() -> QueueOptions {
    QueueOptions::new().segment_size(64 << 10)
}

/// The message `i` of the queue's golden state: its size varies, some cross segments.
fn qmsg(i: usize) -> String {
    format!("msg {i:04} {}", "q".repeat((i * 397) % 3000))
}

const Q_SENT: usize = 60;
const Q_RECEIVED: usize = 10;

/// Builds the golden state of `kind` in `dir`; returns the files it consists of.
fn golden(kind: &str, dir: &Path) -> Vec<PathBuf> {
    match kind {
        "mutex" => {
            let m = Mutex::open(dir.join("m")).unwrap();
            assert!(m.try_lock().unwrap());
            m.unlock().unwrap();
            vec![dir.join("m")]
        }
        "semaphore" => {
            let s = Semaphore::open(dir.join("s"), 3).unwrap();
            assert!(s.try_acquire().unwrap());
            s.release().unwrap();
            vec![dir.join("s")]
        }
        "queue" => {
            let q = queue_opts().open(dir.join("q")).unwrap();
            for i in 0..Q_SENT {
                q.send(qmsg(i)).unwrap();
            }
            for i in 0..Q_RECEIVED {
                assert_eq!(q.try_recv().unwrap().unwrap(), qmsg(i).as_str());
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("q"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files
        }
        "shared_data" => {
            let kv = SharedData::open(dir.join("kv")).unwrap();
            for i in 0..40i64 {
                kv.set(&format!("k{i}"), &i).unwrap();
            }
            drop(kv);
            vec![dir.join("kv")]
        }
        "pidfile" => {
            // A stale file: written by an owner that is gone.
            std::fs::write(dir.join("app.pid"), "4242\n").unwrap();
            vec![dir.join("app.pid")]
        }
        "event" => {
            Event::open(dir.join("ev")).unwrap().set().unwrap();
            vec![dir.join("ev")]
        }
        _ => unreachable!(),
    }
}

/// Damages `file` in one of three ways; returns a description.
fn damage(file: &Path, rng: &mut Rng) -> String {
    let data = std::fs::read(file).unwrap();
    let len = data.len() as u64;
    match rng.below(3) {
        0 => {
            let to = if len == 0 { 0 } else { rng.range(0, len) };
            std::fs::OpenOptions::new()
                .write(true)
                .open(file)
                .unwrap()
                .set_len(to)
                .unwrap();
            format!("truncated to {to} of {len} bytes")
        }
        1 => {
            let n = rng.range(1, 5000) as usize;
            let garbage: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let mut d = data;
            d.extend_from_slice(&garbage);
            std::fs::write(file, d).unwrap();
            format!("extended by {n} garbage bytes")
        }
        _ => {
            let mut d = data;
            if d.is_empty() {
                return "empty file left as is".to_owned();
            }
            let flips = rng.range(1, 9);
            let mut at = Vec::new();
            for _ in 0..flips {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
                at.push(i);
            }
            std::fs::write(file, d).unwrap();
            format!("{flips} bit flips at {at:?}")
        }
    }
}

/// Opens and operates on the damaged state. `Ok(note)` if every result was correct,
/// `Err(clear error)` otherwise; panics on wrong data.
fn operate(kind: &str, dir: &Path) -> fileipc::Result<String> {
    match kind {
        "mutex" => {
            let m = Mutex::open(dir.join("m"))?;
            let _ = m.holder()?;
            // Nobody holds it: whatever the hints say, it is taken within their expiry.
            assert!(
                m.lock_timeout(Duration::from_secs(2))?,
                "WRONG: lock refused"
            );
            m.unlock()?;
            Ok("locked and unlocked".into())
        }
        "semaphore" => {
            let s = Semaphore::open_existing(dir.join("s"))?;
            let v = s.value()?;
            let got = s.acquire_timeout(Duration::from_millis(50))?;
            if got {
                s.release()?;
            }
            let v2 = s.value()?;
            assert_eq!(v, v2, "WRONG: acquire + release changed the value");
            Ok(format!("value {v}"))
        }
        "queue" => {
            let q = queue_opts().open(dir.join("q"))?;
            let mut last: Option<usize> = None;
            let mut got = 0;
            let mut errors = 0;
            for _ in 0..2 * Q_SENT {
                match q.try_recv() {
                    Ok(Some(m)) => {
                        let s = std::str::from_utf8(&m).expect("WRONG: not a message sent");
                        let i: usize = s[4..8].parse().expect("WRONG: not a message sent");
                        assert_eq!(s, qmsg(i), "WRONG: message {i} altered");
                        assert!(
                            last.is_none_or(|l| i > l),
                            "WRONG: message {i} after {last:?}"
                        );
                        last = Some(i);
                        got += 1;
                    }
                    Ok(None) => break,
                    Err(e @ (Error::Corrupt { .. } | Error::Io { .. })) => {
                        errors += 1;
                        if errors > 3 {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            q.send("after")?;
            let _ = q.count()?;
            Ok(format!("{got} messages, {errors} corrupt-record errors"))
        }
        "shared_data" => {
            let kv = SharedData::open(dir.join("kv"))?;
            let mut wrong = 0;
            for i in 0..40i64 {
                match kv.get::<i64>(&format!("k{i}")) {
                    Ok(Some(v)) if v == i => {}
                    // SQLite pages carry no checksum: a flipped bit inside a stored
                    // value or key reads back as another value. Counted, reported.
                    Ok(_) | Err(Error::Value { .. }) => wrong += 1,
                    Err(e) => return Err(e),
                }
            }
            kv.set("after", &1)?;
            Ok(if wrong > 0 {
                format!("UNDETECTED {wrong} altered values")
            } else {
                "all values".into()
            })
        }
        "pidfile" => {
            let mut pf = PidFile::open(dir.join("app.pid"))?;
            let r = pf.read();
            match &r {
                Ok(Some(4242)) | Ok(None) => {}
                Ok(Some(p)) => return Ok(format!("UNDETECTED pid {p} instead of 4242")),
                Err(Error::Format { .. }) => {}
                Err(e) => panic!("WRONG: unclear error {e}"),
            }
            let status = pf.status()?;
            assert!(!status.is_running(), "WRONG: a stale file reads as running");
            // A damaged PID may name a live process: then only a forced create takes the
            // unlocked file over.
            let taken = match status {
                fileipc::PidStatus::AliveUnlocked { .. } => pf.create_force()?,
                _ => pf.create()?,
            };
            assert!(taken, "WRONG: a stale file was not taken over");
            assert_eq!(pf.read()?, Some(std::process::id()));
            pf.remove()?;
            Ok(format!("read {r:?}"))
        }
        "event" => {
            let ev = Event::open(dir.join("ev"))?;
            assert!(ev.is_set()?, "WRONG: a set event with any content is set");
            ev.clear()?;
            assert!(!ev.is_set()?);
            Ok("set".into())
        }
        _ => unreachable!(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// args: kind, seed, count, scratch dir. Says `case I: ...` for every case, then `done`.
fn run_cases(args: &[String]) {
    let kind = args[0].as_str();
    let seed: u64 = args[1].parse().unwrap();
    let count: usize = args[2].parse().unwrap();
    let scratch = Path::new(&args[3]);
    let template = scratch.join("golden");
    std::fs::create_dir(&template).unwrap();
    let files = golden(kind, &template);
    for i in 0..count {
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let work = scratch.join(format!("case{i}"));
        copy_dir(&template, &work);
        let f = &files[rng.below(files.len())];
        let target = work.join(f.strip_prefix(&template).unwrap());
        let how = damage(&target, &mut rng);
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // Say what is about to run first, so a crash or hang names its case.
        say(format!("start {i}: {name} {how}"));
        let outcome = match operate(kind, &work) {
            Ok(note) => format!("ok: {note}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&*work.to_string_lossy()),
                    "error without the path: {msg}"
                );
                format!("error: {}", error_class(&e))
            }
        };
        say(format!("case {i}: {outcome}"));
        std::fs::remove_dir_all(&work).unwrap();
    }
    say("done");
}

fn error_class(e: &Error) -> String {
    match e {
        Error::Io { source, .. } => format!("Io({:?})", source.kind()),
        Error::Symlink { .. } => "Symlink".into(),
        Error::Format { .. } => "Format".into(),
        Error::Corrupt { .. } => "Corrupt".into(),
        Error::Invalid { .. } => "Invalid".into(),
        Error::Destroyed { .. } => "Destroyed".into(),
        Error::Value { .. } => "Value".into(),
        Error::Sqlite { .. } => "Sqlite".into(),
        _ => "other".into(),
    }
}

fn run_kind(kind: &str) {
    let seed = seed(&format!("corruption {kind}"));
    let count = CASES * case_scale();
    let dir = common::tempdir();
    let mut child = Proc::spawn(
        "cases",
        &[
            kind,
            &seed.to_string(),
            &count.to_string(),
            dir.path().to_str().unwrap(),
        ],
    );
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut current = String::from("setup");
    loop {
        let line = match child.lines_or_exit(&current) {
            Some(l) => l,
            None => {
                let st = child.wait(PATIENCE);
                panic!(
                    "{kind}: the child died with {st} (signal {:?}) in {current} (seed {seed})",
                    st.signal()
                );
            }
        };
        if line == "done" {
            break;
        }
        if let Some(rest) = line.strip_prefix("start ") {
            current = rest.to_owned();
            continue;
        }
        let outcome = line.split_once(": ").map_or(line.as_str(), |x| x.1);
        let class = if let Some(n) = outcome.strip_prefix("ok: ") {
            if n.starts_with("UNDETECTED") {
                "ok, undetected change".to_owned()
            } else {
                "ok, correct".to_owned()
            }
        } else {
            outcome.to_owned()
        };
        *outcomes.entry(class).or_default() += 1;
    }
    child.wait_success();
    eprintln!("[torture] corruption {kind}: {count} cases: {outcomes:?}");
}

trait LinesOrExit {
    fn lines_or_exit(&mut self, current: &str) -> Option<String>;
}

impl LinesOrExit for Proc {
    /// The next line, `None` if the child exited; a case taking over 30 s is a hang.
    fn lines_or_exit(&mut self, current: &str) -> Option<String> {
        let start = std::time::Instant::now();
        loop {
            if let Some(l) = self.try_line() {
                return Some(l);
            }
            if self.try_wait().is_some() {
                // Its last lines may still be on their way from the pipe.
                return self.line_or_eof(PATIENCE);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "a corruption case hung for 30 s: {current}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn corrupt_mutex_files() {
    run_kind("mutex");
}
#[test]
fn corrupt_semaphore_files() {
    run_kind("semaphore");
}
#[test]
fn corrupt_queue_files() {
    run_kind("queue");
}
#[test]
fn corrupt_shared_data_files() {
    run_kind("shared_data");
}
#[test]
fn corrupt_pid_files() {
    run_kind("pidfile");
}
#[test]
fn corrupt_event_files() {
    run_kind("event");
}

// --- a mapped file shrinking under a live handle -------------------------------------

/// args: mutex path. Opens (maps) the file, says so, waits for a line... then locks.
fn mapped_holder(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    say("mapped");
    // Wait until the parent truncated the file (it removes the flag file).
    let flag = PathBuf::from(format!("{}.flag", args[0]));
    let ev = Event::open(&flag).unwrap();
    assert!(ev.wait_timeout(PATIENCE).unwrap());
    let r = m.lock_timeout(Duration::from_secs(1));
    say(format!("lock: {r:?}"));
}

/// Documents what happens when another process truncates a state file under a live
/// mapping: the next access to the missing page raises SIGBUS in the handle's process
/// (no user-space code can prevent it). State files are 0600 and refused when others
/// can write them, so only their owner can do this. A mutex file truncated to nothing
/// is adopted again by the next `open` (FORMAT.md "Empty files are adopted").
#[test]
fn a_state_file_shrunk_under_a_live_mapping_raises_sigbus() {
    let dir = common::tempdir();
    let p = dir.path().join("m");
    Mutex::open(&p).unwrap();
    let mut child = Proc::spawn("mapped", &[p.to_str().unwrap()]);
    child.expect("mapped");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    Event::open(dir.path().join("m.flag"))
        .unwrap()
        .set()
        .unwrap();
    let st = child.wait(PATIENCE);
    let line = child.try_line();
    eprintln!("mutex file truncated under a live handle: child {st}, said {line:?}");
    assert!(
        st.signal() == Some(7) || st.success(),
        "neither SIGBUS nor a clean result: {st}"
    );
    // A fresh process reopening the file, empty now, adopts it as it adopts an empty
    // lock file of `flock(1)`: a working mutex again.
    let m = Mutex::open(&p).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 256);
    assert!(m.try_lock().unwrap());
    m.unlock().unwrap();
}

/// Regression (found by `corrupt_queue_files`): a flipped high bit in the queue's head
/// made `open` try to remove 2^24 or more segment files one index at a time (hours).
#[test]
fn a_damaged_queue_head_is_a_clear_error_at_once() {
    use std::os::unix::fs::FileExt;
    let dir = common::tempdir();
    let qd = dir.path().join("q");
    let q = queue_opts().open(&qd).unwrap();
    q.send("x").unwrap();
    drop(q);
    let ctl = std::fs::OpenOptions::new()
        .write(true)
        .open(qd.join("control"))
        .unwrap();
    ctl.write_all_at(&(1u64 << 60).to_le_bytes(), 272).unwrap();
    let qd2 = qd.clone();
    let r = torture_util::bounded("open with a damaged head", move || {
        queue_opts().open(&qd2).map(drop)
    });
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
}

// --- the fuzz corpus and seeded random inputs for the pure parsers --------------------

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect();
    v.sort();
    v
}

/// The bodies of `fuzz/fuzz_targets/queue_record.rs` and `pid_file.rs`.
fn fuzz_queue_record(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let pos = u64::from_le_bytes(data[..8].try_into().unwrap()) & !7;
    let rec = &data[8..];
    if let Some((len, _seq, ok)) = fileipc::__fuzz::queue_record(rec, pos) {
        assert!(!ok || rec.len() - 32 == len as usize);
        assert!(fileipc::__fuzz::queue_record(rec, pos ^ 8).is_none());
    }
}

fn fuzz_pid_file(data: &[u8]) {
    if let Ok(Some(pid)) = fileipc::__fuzz::pid_file(data) {
        assert!(pid > 0 && pid <= i32::MAX as u32);
    }
}

/// Runs the fuzz targets' bodies on the committed corpus and on mutations of it (seeded
/// random bit flips, truncations and splices), so CI exercises the parsers without
/// libFuzzer (which needs a nightly toolchain).
#[test]
fn fuzz_corpus_and_mutations_of_the_pure_parsers() {
    let mut rng = Rng::new(seed("parser mutations"));
    let n = 20_000 * case_scale();
    let mut valid = 0;
    for (target, f) in [
        ("queue_record", fuzz_queue_record as fn(&[u8])),
        ("pid_file", fuzz_pid_file),
    ] {
        let seeds = corpus(target);
        for (_, d) in &seeds {
            f(d);
        }
        for _ in 0..n {
            let mut d = seeds[rng.below(seeds.len())].1.clone();
            match rng.below(4) {
                0 if !d.is_empty() => {
                    let i = rng.below(d.len());
                    d[i] ^= 1 << rng.below(8);
                }
                1 if !d.is_empty() => d.truncate(rng.below(d.len())),
                2 => d.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
                _ => {
                    let other = &seeds[rng.below(seeds.len())].1;
                    let cut = rng.below(other.len() + 1);
                    d.extend_from_slice(&other[..cut]);
                }
            }
            f(&d);
        }
        valid += seeds.len();
    }
    // The valid records of the corpus decode.
    for (p, d) in corpus("queue_record") {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let pos = u64::from_le_bytes(d[..8].try_into().unwrap());
        let r = fileipc::__fuzz::queue_record(&d[8..], pos);
        assert_eq!(r.is_some_and(|r| r.2), name.starts_with("valid"), "{name}");
    }
    eprintln!(
        "[torture] parsers: {valid} corpus inputs and {} mutations, no panic",
        2 * n
    );
}

/// The state-file corpus opened as every primitive's file (the body of
/// `fuzz/fuzz_targets/state_file.rs`), each bounded so that nothing can hang the run.
#[test]
fn fuzz_corpus_state_files() {
    for (p, data) in corpus("state_file") {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        torture_util::bounded(&format!("state file {name}"), move || {
            let dir = common::tempdir();
            let p = |n: &str| dir.path().join(n);
            std::fs::write(p("m"), &data).unwrap();
            if let Ok(m) = Mutex::open(p("m"))
                && m.lock_timeout(Duration::from_millis(50)).unwrap_or(false)
            {
                m.unlock().unwrap();
            }
            std::fs::write(p("s"), &data).unwrap();
            if let Ok(s) = Semaphore::open_existing(p("s")) {
                let _ = s.value();
            }
            std::fs::create_dir(p("q")).unwrap();
            std::fs::write(p("q").join("control"), &data).unwrap();
            if let Ok(q) = fileipc::MessageQueue::open(p("q")) {
                let _ = q.try_recv();
                q.send("x").unwrap();
            }
            std::fs::write(p("app.pid"), &data).unwrap();
            let mut pf = PidFile::open(p("app.pid")).unwrap();
            let _ = pf.read();
            let _ = pf.create();
            std::fs::write(p("kv"), &data).unwrap();
            if let Ok(kv) = SharedData::open(p("kv")) {
                let _ = kv.dump();
            }
        });
    }
}
