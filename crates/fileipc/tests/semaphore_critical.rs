//! The semaphore's critical section (a robust lock on a word of the file) with processes
//! killed inside it: the lock is taken over, the dead holders' permits come back, and the
//! value returns to the capacity. File offsets are those of docs/FORMAT.md ("Semaphore
//! file", "Owners").

mod common;
mod torture_util;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say, sem_lock_word, take_sem_lock_word};
use fileipc::Semaphore;
use rustix::process::Signal;
use torture_util::{Rng, stopped};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "cycler" => cycler(&args),
        "holder_inside" => holder_inside(&args),
        other => panic!("unknown role {other}"),
    });
}

/// Bit 31 of a lock word marks it contended; the rest is the holder's owner id.
const ID_MASK: u32 = 0x7fff_ffff;

/// Child: args path, capacity. Takes and returns permits through every entry point as
/// fast as it can (most of its time in the library, much of it in the critical
/// section), until killed; says "running" after its first cycle.
fn cycler(args: &[String]) {
    let s = Semaphore::open(&args[0], args[1].parse().unwrap()).unwrap();
    let mut rng = Rng::new(u64::from(std::process::id()));
    let mut first = true;
    loop {
        match rng.below(4) {
            0 => {
                if s.try_acquire().unwrap() {
                    s.release().unwrap();
                }
            }
            1 => {
                assert!(s.acquire_timeout(PATIENCE).unwrap(), "acquire timed out");
                s.release().unwrap();
            }
            2 => {
                let p = s
                    .permit_timeout(PATIENCE)
                    .unwrap()
                    .expect("permit timed out");
                drop(p);
            }
            _ => {
                let _ = s.value().unwrap();
            }
        }
        if first {
            say("running");
            first = false;
        }
    }
}

/// Child: args path, capacity. Takes one permit, then enters the critical section the
/// way the library does (an owner id of its own, alive through its byte lock, written
/// into the free lock word), says "inside" and stays there until killed.
fn holder_inside(args: &[String]) {
    let s = Semaphore::open(&args[0], args[1].parse().unwrap()).unwrap();
    assert!(s.try_acquire().unwrap());
    let _held = take_sem_lock_word(Path::new(&args[0]));
    say("inside");
    loop {
        std::thread::park();
    }
}

/// A holder of a permit killed while inside the critical section: while it lives, it is
/// never robbed (`try_acquire` gives up after its 10 ms); once it is dead, the next
/// caller takes the lock over at once, returns the dead holder's permit, and leaves the
/// lock free.
#[test]
fn a_process_killed_inside_the_critical_section_is_taken_over() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 2).unwrap();
    let mut child = Proc::spawn("holder_inside", &[path.to_str().unwrap(), "2"]);
    child.expect("inside");
    let id = 0x4000_0000 | child.pid;
    let t = Instant::now();
    assert!(!s.try_acquire().unwrap(), "entered a live holder's section");
    assert!(
        t.elapsed() >= Duration::from_millis(10),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        sem_lock_word(&path) & ID_MASK,
        id,
        "a live holder was robbed"
    );
    // value() is read without the critical section: the live holder's permit is held.
    assert_eq!(s.value().unwrap(), 1);

    child.kill_and_reap();
    let t = Instant::now();
    assert!(s.try_acquire().unwrap());
    let took = t.elapsed();
    eprintln!("try_acquire after the kill: {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(sem_lock_word(&path), 0, "the lock was not left free");
    // The dead child's permit came back: we hold one, one is free.
    assert_eq!((s.held().unwrap(), s.value().unwrap()), (1, 1));
    s.release().unwrap();
    assert_eq!(s.value().unwrap(), 2);
}

/// Kill storms that land inside the critical section. Each round, four processes cycle
/// through every entry point on a semaphore of 2 (so some wait); the test stops them all
/// (`SIGSTOP`), notes whether one of them is inside the critical section (the lock word
/// is held), kills them all (`SIGKILL`) and checks that a new handle finds the value
/// back at the capacity at once and leaves the lock free. Rounds go on until 5 of them
/// killed a process inside the critical section (at most 200 rounds).
#[test]
fn kill_storms_inside_the_critical_section_leave_the_value_at_capacity() {
    const WORKERS: usize = 4;
    const CAPACITY: u32 = 2;
    const WANTED: usize = 5;
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let p = path.to_str().unwrap();
    let cap = CAPACITY.to_string();
    let mut inside = 0;
    let mut rounds = 0;
    let mut rng = Rng::new(0x5e3a);
    while inside < WANTED && rounds < 200 {
        rounds += 1;
        let mut kids: Vec<Proc> = (0..WORKERS)
            .map(|_| Proc::spawn("cycler", &[p, &cap]))
            .collect();
        for k in &mut kids {
            k.expect("running");
        }
        // Let them run for a moment (any length does: the stop lands where it lands).
        std::thread::sleep(Duration::from_micros(200 + rng.below(3000) as u64));
        for k in &kids {
            common::signal(k.pid, Signal::STOP);
        }
        for k in &kids {
            common::eventually(PATIENCE, "the worker stopped", || stopped(k.pid));
        }
        let held = sem_lock_word(&path) != 0;
        for k in &mut kids {
            k.kill_and_reap();
        }
        if held {
            inside += 1;
            // Nobody is alive: the word still names the dead holder.
            assert_ne!(sem_lock_word(&path), 0);
        }
        let t = Instant::now();
        let s = Semaphore::open(&path, CAPACITY).unwrap();
        assert_eq!(
            s.value().unwrap(),
            CAPACITY,
            "round {rounds}: permits of killed holders lost (lock word was held: {held})"
        );
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "round {rounds}: {took:?}"
        );
        assert_eq!(
            sem_lock_word(&path),
            0,
            "round {rounds}: the lock was left held"
        );
        assert!(s.try_acquire().unwrap());
        s.release().unwrap();
        assert_eq!(s.value().unwrap(), CAPACITY);
    }
    eprintln!("{rounds} rounds, {inside} killed a process inside the critical section");
    assert!(
        inside >= WANTED,
        "only {inside} of {rounds} rounds stopped a process inside the critical section"
    );
}

/// A version-4 semaphore file (its critical section an `flock`, which this library's
/// processes would not take) is refused, not migrated, with an error naming both
/// versions.
#[test]
fn a_version_4_file_is_refused_naming_the_version() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    drop(Semaphore::open(&path, 2).unwrap());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&4u32.to_le_bytes(), 12).unwrap();
    let e = Semaphore::open(&path, 2).unwrap_err().to_string();
    assert!(
        e.contains("format version 4, this library reads version 5"),
        "{e}"
    );
}
