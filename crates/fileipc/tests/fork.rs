//! `fork` without `exec`: a child is an owner of its own from the moment it touches a
//! handle, and never releases, deletes or keeps alive what its parent owns.
//!
//! Each test runs in a child process of its own (a role of this binary), which forks:
//! the forking process then has only the threads the role started.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Error, MessageQueue, Mutex, PidFile};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "pidfile" => pidfile_role(&args),
        "queue" => queue_role(&args),
        "mutex" => mutex_role(&args),
        other => panic!("unknown role {other}"),
    });
}

fn wait_exit(pid: Pid) -> WaitStatus {
    waitpid(pid, None).expect("waitpid")
}

/// Role: creates a PID file, forks a child that drops its copy of the handle and exits,
/// then checks the file is still there, still locked, and still names this process.
fn pidfile_role(args: &[String]) {
    let path = Path::new(&args[0]);
    let mut p = PidFile::open(path).unwrap();
    assert!(p.create().unwrap());
    // The child takes the handle out and drops it; in the parent it stays in place.
    let mut slot = Some(p);
    let child = common::spawn_forked(|| {
        let p = slot.take().unwrap();
        assert!(!p.is_owner().unwrap(), "a forked child owns nothing");
        drop(p);
        0
    });
    assert_eq!(wait_exit(child), WaitStatus::Exited(child, 0));
    assert!(
        path.exists(),
        "the child's drop removed the parent's PID file"
    );
    let mut second = PidFile::open(path).unwrap();
    assert!(
        !second.create().unwrap(),
        "a second instance got the PID file"
    );
    assert_eq!(second.read().unwrap(), Some(std::process::id()));
    assert!(slot.as_ref().unwrap().is_owner().unwrap());
    say("ok");
}

#[test]
fn a_forked_childs_pidfile_drop_leaves_the_parents_file() {
    let dir = common::tempdir();
    let path = dir.path().join("app.pid");
    let mut role = Proc::spawn("pidfile", &[path.to_str().unwrap()]);
    role.expect("ok");
    role.wait_success();
}

/// Role: forked children send through the parent's queue handle in a loop and are
/// SIGKILLed at random moments (often inside the producer's critical section); after
/// each kill the parent sends and receives within a bound, and at the end every message
/// reads back intact.
fn queue_role(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    let rounds: u32 = args[1].parse().unwrap();
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let before = q.count().unwrap();
        let child = common::spawn_forked(|| {
            loop {
                q.send("from the child").unwrap();
            }
        });
        let t = Instant::now();
        while q.count().unwrap() < before + 1000 {
            assert!(t.elapsed() < PATIENCE, "the child sends nothing");
        }
        // A few microseconds more, so the kill lands at different points of a send.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_micros(u64::from(round % 7) * 13) {}
        kill(child, Signal::SIGKILL).unwrap();
        wait_exit(child);
        let t = Instant::now();
        q.send("from the parent").unwrap();
        worst = worst.max(t.elapsed());
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "send took {:?}",
            t.elapsed()
        );
    }
    let mut parents = 0;
    loop {
        match q.try_recv() {
            Ok(Some(m)) if &*m == b"from the parent" => parents += 1,
            Ok(Some(m)) => assert_eq!(&*m, b"from the child"),
            Ok(None) => break,
            Err(e) => panic!("damage after a child was killed: {e}"),
        }
    }
    assert_eq!(parents, rounds);
    assert_eq!(q.count().unwrap(), 0);
    say(format!("ok worst {worst:?}"));
}

#[test]
fn a_forked_child_killed_inside_send_blocks_no_sender() {
    let dir = common::tempdir();
    let q = dir.path().join("q");
    let mut role = Proc::spawn("queue", &[q.to_str().unwrap(), "20"]);
    let line = role.expect_line(PATIENCE * 2);
    eprintln!("{line}");
    assert!(line.starts_with("ok"), "{line}");
    role.wait_success();
}

/// Role: a forked child cannot use the parent's mutex handle (it would share the
/// parent's lock); it opens the mutex again, locks it and is SIGKILLed holding it: the
/// parent gets the lock within 100 ms of the kill.
fn mutex_role(args: &[String]) {
    let path = Path::new(&args[0]);
    let marker = Path::new(&args[1]).to_owned();
    let m = Mutex::open(path).unwrap();
    let child = common::spawn_forked(|| {
        match m.try_lock() {
            Err(Error::Invalid { .. }) => {}
            other => panic!("the parent's handle in a forked child: {other:?}"),
        }
        let own = Mutex::open(path).unwrap();
        assert!(own.lock().unwrap());
        std::fs::write(&marker, b"locked").unwrap();
        loop {
            std::thread::park();
        }
    });
    common::eventually(PATIENCE, "the child to lock", || marker.exists());
    assert!(!m.try_lock().unwrap());
    kill(child, Signal::SIGKILL).unwrap();
    wait_exit(child);
    let t = Instant::now();
    assert!(m.lock_timeout(PATIENCE).unwrap());
    let took = t.elapsed();
    assert!(took < Duration::from_millis(100), "took {took:?}");
    m.unlock().unwrap();
    say(format!("ok {took:?}"));
}

#[test]
fn a_forked_child_killed_holding_a_mutex_blocks_nobody() {
    let dir = common::tempdir();
    let m = dir.path().join("m");
    let marker = dir.path().join("locked");
    let mut role = Proc::spawn("mutex", &[m.to_str().unwrap(), marker.to_str().unwrap()]);
    let line = role.expect_line(PATIENCE * 2);
    eprintln!("{line}");
    assert!(line.starts_with("ok"), "{line}");
    role.wait_success();
}
