//! `fork` without `exec`: a child is an owner of its own from the moment it touches a
//! handle, and never releases, deletes or keeps alive what its parent owns.
//!
//! Each test runs in a child process of its own (a role of this binary), which forks:
//! the forking process then has only the threads the role started.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Error, Event, MessageQueue, Mutex, PidFile, Semaphore, SharedData};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "pidfile" => pidfile_role(&args),
        "queue" => queue_role(&args),
        "mutex" => mutex_role(&args),
        "queue_senders" => queue_senders_role(&args),
        "queue_receivers" => queue_receivers_role(&args),
        "queue_claim_held" => queue_claim_held_role(&args),
        "queue_nested" => queue_nested_role(&args),
        "queue_sleepers" => queue_sleepers_role(&args),
        "inherited_locks" => inherited_locks_role(&args),
        "shared_data" => shared_data_role(&args),
        "event" => event_role(&args),
        "pidfile_race" => pidfile_race_role(&args),
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

// --- several forked children using one inherited handle at the same time -------------

/// Forks `n` children that each wait for the gate file `gate`, then run `f(i)` (their
/// exit code); creates the gate once all are forked, so that they start together, and
/// asserts that every child exits 0 within [`PATIENCE`].
fn fork_together(gate: &Path, n: usize, f: impl Fn(usize) -> i32) {
    let children: Vec<Pid> = (0..n)
        .map(|i| {
            common::spawn_forked(|| {
                let t = Instant::now();
                while !gate.exists() {
                    if t.elapsed() > PATIENCE {
                        return 3;
                    }
                    std::hint::spin_loop();
                }
                f(i)
            })
        })
        .collect();
    std::fs::write(gate, b"go").unwrap();
    for c in children {
        assert_eq!(wait_exit(c), WaitStatus::Exited(c, 0), "child {c}");
    }
    std::fs::remove_file(gate).unwrap();
}

/// Drains `q` and checks it held exactly the messages `c<child>-<i>` for `children`
/// children and `sends` messages each, each once (any order).
fn expect_each_once(q: &MessageQueue, children: usize, sends: usize, trial: usize) {
    let mut seen = std::collections::HashSet::new();
    while let Some(m) = q.try_recv().unwrap() {
        let m = String::from_utf8(m.to_vec()).unwrap();
        // The name, without the padding.
        let m = m.split('|').next().unwrap().to_owned();
        assert!(seen.insert(m.clone()), "trial {trial}: {m} received twice");
    }
    let missing: Vec<String> = (0..children)
        .flat_map(|c| (0..sends).map(move |i| format!("c{c}-{i}")))
        .filter(|m| !seen.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "trial {trial}: {} of {} messages lost (first: {:?}), {} received",
        missing.len(),
        children * sends,
        missing.first(),
        seen.len()
    );
    assert_eq!(
        seen.len(),
        children * sends,
        "trial {trial}: unexpected messages"
    );
    assert_eq!(q.count().unwrap(), 0);
}

/// Role: `args[1]` trials; in each, `args[2]` forked children send `args[3]` messages
/// of `args[4]` bytes each at the same time through the queue handle they inherited
/// (used in the parent before the fork); every message arrives exactly once.
fn queue_senders_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let [trials, children, sends, size] = [1, 2, 3, 4].map(|i| args[i].parse::<usize>().unwrap());
    let q = MessageQueue::open(dir.join("q")).unwrap();
    q.send("warm").unwrap();
    assert_eq!(&*q.recv().unwrap().unwrap(), b"warm");
    let gate = dir.join("gate");
    let t = Instant::now();
    for trial in 0..trials {
        fork_together(&gate, children, |c| {
            for i in 0..sends {
                let mut m = format!("c{c}-{i}|").into_bytes();
                m.resize(size.max(m.len()), b'.');
                q.send(m).unwrap();
            }
            0
        });
        expect_each_once(&q, children, sends, trial);
        assert!(t.elapsed() < PATIENCE, "trial {trial}: too slow");
    }
    say("ok");
}

fn run_role(role: &str, args: &[&str]) {
    let mut p = Proc::spawn(role, args);
    let line = p.expect_line(PATIENCE * 2);
    assert_eq!(line, "ok");
    p.wait_success();
}

#[test]
fn forked_children_sending_at_once_through_an_inherited_queue_lose_nothing() {
    let dir = common::tempdir();
    run_role(
        "queue_senders",
        &[dir.path().to_str().unwrap(), "3", "4", "1000", "4096"],
    );
}

#[test]
fn forked_children_sending_one_message_each_through_an_inherited_queue_lose_nothing() {
    let dir = common::tempdir();
    run_role(
        "queue_senders",
        &[dir.path().to_str().unwrap(), "200", "4", "1", "65536"],
    );
}

/// Role: the parent sends `args[2] * args[3]` messages; `args[2]` forked children take
/// them at the same time through the inherited handle, with `recv` (`args[1]` = "recv")
/// or `claim` and `ack` ("claim"), and write what they got to a file each; every message
/// is taken exactly once.
fn queue_receivers_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let claim = args[1] == "claim";
    let [children, each] = [2, 3].map(|i| args[i].parse::<usize>().unwrap());
    let q = MessageQueue::open(dir.join("q")).unwrap();
    q.send("warm").unwrap();
    assert_eq!(&*q.recv().unwrap().unwrap(), b"warm");
    for c in 0..children {
        for i in 0..each {
            q.send(format!("c{c}-{i}")).unwrap();
        }
    }
    let total = children * each;
    let gate = dir.join("gate");
    let out = |c: usize| dir.join(format!("got-{c}"));
    fork_together(&gate, children, |c| {
        let mut got = Vec::new();
        loop {
            if claim {
                match q.try_claim().unwrap() {
                    Some(m) => {
                        got.push(m.to_str().unwrap().to_owned());
                        m.ack().unwrap();
                    }
                    None => break,
                }
            } else {
                match q.try_recv().unwrap() {
                    Some(m) => got.push(String::from_utf8(m.to_vec()).unwrap()),
                    None => break,
                }
            }
        }
        std::fs::write(out(c), got.join("\n")).unwrap();
        0
    });
    let mut seen = std::collections::HashMap::new();
    for c in 0..children {
        let text = std::fs::read_to_string(out(c)).unwrap();
        for m in text.lines() {
            if let Some(other) = seen.insert(m.to_owned(), c) {
                panic!("{m} taken by child {other} and child {c}");
            }
        }
    }
    assert_eq!(seen.len(), total, "messages lost");
    assert_eq!(q.count().unwrap(), 0);
    assert!(q.try_claim().unwrap().is_none(), "a message left in flight");
    say("ok");
}

#[test]
fn forked_children_receiving_at_once_through_an_inherited_queue_take_each_message_once() {
    let dir = common::tempdir();
    run_role(
        "queue_receivers",
        &[dir.path().to_str().unwrap(), "recv", "4", "1000"],
    );
}

#[test]
fn forked_children_claiming_at_once_through_an_inherited_queue_take_each_message_once() {
    let dir = common::tempdir();
    run_role(
        "queue_receivers",
        &[dir.path().to_str().unwrap(), "claim", "4", "300"],
    );
}

/// Role: the parent holds its mutex and one of its semaphore's two permits; forked
/// children using the inherited handles at the same time are all refused
/// (`Error::Invalid`), and the parent's lock and permit are intact afterwards.
fn inherited_locks_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let m = Mutex::open(dir.join("m")).unwrap();
    let s = Semaphore::open(dir.join("s"), 2).unwrap();
    assert!(m.lock().unwrap());
    assert!(s.acquire().unwrap());
    fork_together(&dir.join("gate"), 4, |_| {
        for _ in 0..100 {
            assert!(matches!(m.try_lock(), Err(Error::Invalid { .. })));
            assert!(matches!(m.unlock(), Err(Error::Invalid { .. })));
            assert!(matches!(s.try_acquire(), Err(Error::Invalid { .. })));
            assert!(matches!(s.release(), Err(Error::Invalid { .. })));
        }
        // Handles of their own work, and exclude the parent's lock.
        assert!(!Mutex::open(m.path()).unwrap().try_lock().unwrap());
        0
    });
    assert!(m.is_locked().unwrap());
    assert_eq!(s.value().unwrap(), 1);
    assert!(!Mutex::open(m.path()).unwrap().try_lock().unwrap());
    m.unlock().unwrap();
    s.release().unwrap();
    assert_eq!(s.value().unwrap(), 2);
    say("ok");
}

#[test]
fn forked_children_are_refused_the_parents_mutex_and_semaphore_handles() {
    let dir = common::tempdir();
    run_role("inherited_locks", &[dir.path().to_str().unwrap()]);
}

/// Role: forked children using the inherited handle at the same time are refused
/// (`Error::Invalid`: an SQLite connection cannot cross `fork`); with handles of their
/// own, they increment one key and set keys of their own at the same time, and no
/// update is lost.
fn shared_data_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let d = SharedData::open(dir.join("d")).unwrap();
    assert_eq!(d.increment("n", 0).unwrap(), 0);
    let (children, each) = (4, 200);
    fork_together(&dir.join("gate"), children, |c| {
        assert!(matches!(d.increment("n", 1), Err(Error::Invalid { .. })));
        assert!(matches!(d.set("x", &1), Err(Error::Invalid { .. })));
        let own = SharedData::open(d.path()).unwrap();
        for i in 0..each {
            own.increment("n", 1).unwrap();
            own.set(&format!("c{c}"), &i).unwrap();
        }
        0
    });
    assert_eq!(d.get::<i64>("n").unwrap(), Some((children * each) as i64));
    for c in 0..children {
        assert_eq!(d.get::<usize>(&format!("c{c}")).unwrap(), Some(each - 1));
    }
    say("ok");
}

#[test]
fn forked_children_are_refused_inherited_shared_data_and_lose_no_update_with_their_own() {
    let dir = common::tempdir();
    run_role("shared_data", &[dir.path().to_str().unwrap()]);
}

/// Role: the parent waits on its event (so its handle keeps a watch), then forked
/// children wait on the inherited handle at the same time; each wakes when the parent
/// sets the event, and the parent's own wait still works afterwards.
fn event_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let e = Event::open(dir.join("e")).unwrap();
    assert!(!e.wait_timeout(Duration::from_millis(1)).unwrap());
    let waiting = |c: usize| dir.join(format!("waiting-{c}"));
    let children: Vec<Pid> = (0..4)
        .map(|c| {
            common::spawn_forked(|| {
                assert!(!e.is_set().unwrap());
                std::fs::write(waiting(c), b"").unwrap();
                i32::from(!e.wait_timeout(PATIENCE).unwrap())
            })
        })
        .collect();
    common::eventually(PATIENCE, "the children to wait", || {
        (0..4).all(|c| waiting(c).exists())
    });
    e.set().unwrap();
    for c in children {
        assert_eq!(wait_exit(c), WaitStatus::Exited(c, 0), "child {c}");
    }
    e.clear().unwrap();
    assert!(!e.wait_timeout(Duration::from_millis(1)).unwrap());
    let setter = common::spawn_forked(|| {
        e.set().unwrap();
        0
    });
    assert!(e.wait_timeout(PATIENCE).unwrap());
    assert_eq!(wait_exit(setter), WaitStatus::Exited(setter, 0));
    say("ok");
}

#[test]
fn forked_children_waiting_on_an_inherited_event_all_wake() {
    let dir = common::tempdir();
    run_role("event", &[dir.path().to_str().unwrap()]);
}

/// Role: the parent owns a PID file; forked children call `create` and `is_owner` on
/// the inherited handle at the same time, then drop it: none owns it, and the parent's
/// file is intact. Then, with the file removed, children race to `create` through the
/// inherited (now unowned) handle: exactly one wins.
fn pidfile_race_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let path = dir.join("app.pid");
    let mut p = PidFile::open(&path).unwrap();
    assert!(p.create().unwrap());
    let slot = std::sync::Mutex::new(Some(p));
    fork_together(&dir.join("gate"), 4, |_| {
        let mut p = slot.lock().unwrap().take().unwrap();
        assert!(!p.is_owner().unwrap());
        assert!(!p.create().unwrap(), "a child took the parent's PID file");
        drop(p);
        0
    });
    let mut p = slot.into_inner().unwrap().unwrap();
    assert!(p.is_owner().unwrap());
    assert_eq!(p.read().unwrap(), Some(std::process::id()));
    p.remove().unwrap();
    let won = |c: usize| dir.join(format!("won-{c}"));
    let hold = dir.join("hold");
    let children: Vec<Pid> = (0..4)
        .map(|c| {
            common::spawn_forked(|| {
                let t = Instant::now();
                while !hold.exists() {
                    assert!(t.elapsed() < PATIENCE);
                }
                let mut inherited = std::mem::replace(&mut p, PidFile::open(&path).unwrap());
                if inherited.create().unwrap() {
                    std::fs::write(won(c), b"").unwrap();
                    // Keep the file until the parent has counted.
                    while hold.exists() {
                        assert!(t.elapsed() < PATIENCE * 2);
                    }
                }
                0
            })
        })
        .collect();
    std::fs::write(&hold, b"").unwrap();
    common::eventually(PATIENCE, "a child to win", || {
        (0..4).any(|c| won(c).exists())
    });
    // The losers exit; the winner waits for `hold` to go (a second winner would too,
    // until its bound ends: it then fails).
    for (c, &pid) in children.iter().enumerate() {
        if !won(c).exists() {
            assert_eq!(wait_exit(pid), WaitStatus::Exited(pid, 0), "child {c}");
        }
    }
    assert_eq!((0..4).filter(|&c| won(c).exists()).count(), 1, "two owners");
    std::fs::remove_file(&hold).unwrap();
    for (c, pid) in children.into_iter().enumerate() {
        if won(c).exists() {
            assert_eq!(wait_exit(pid), WaitStatus::Exited(pid, 0));
        }
    }
    say("ok");
}

#[test]
fn forked_children_racing_to_create_through_an_inherited_pidfile_handle() {
    let dir = common::tempdir();
    run_role("pidfile_race", &[dir.path().to_str().unwrap()]);
}

/// Role: forked children each claim one message through the inherited queue handle and
/// hold it (a long lease) while the parent looks for more: a claim held by a live child
/// is never redelivered; once the children exit without
/// acknowledging, each message is redelivered once.
fn queue_claim_held_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let q = MessageQueue::options()
        .lease(PATIENCE * 4)
        .open(dir.join("q"))
        .unwrap();
    let children = 4;
    for c in 0..children {
        q.send(format!("m{c}")).unwrap();
    }
    let claimed = |c: usize| dir.join(format!("claimed-{c}"));
    let release = dir.join("release");
    let pids: Vec<Pid> = (0..children)
        .map(|c| {
            common::spawn_forked(|| {
                let m = q.claim_timeout(PATIENCE).unwrap().expect("a message");
                std::fs::write(claimed(c), m.bytes()).unwrap();
                let t = Instant::now();
                while !release.exists() {
                    assert!(t.elapsed() < PATIENCE);
                }
                std::mem::forget(m);
                0
            })
        })
        .collect();
    common::eventually(PATIENCE, "the children to claim", || {
        (0..children).all(|c| claimed(c).exists())
    });
    for _ in 0..50 {
        if let Some(m) = q.try_claim().unwrap() {
            panic!("a live child's claim of {:?} redelivered", m.to_str());
        }
    }
    std::fs::write(&release, b"").unwrap();
    for c in pids {
        assert_eq!(wait_exit(c), WaitStatus::Exited(c, 0), "child {c}");
    }
    let mut again = std::collections::HashSet::new();
    while let Some(m) = q.claim_timeout(Duration::from_secs(5)).unwrap() {
        assert!(again.insert(m.to_str().unwrap().to_owned()), "twice");
        m.ack().unwrap();
        if again.len() == children {
            break;
        }
    }
    assert_eq!(
        again.len(),
        children,
        "claims of dead children not redelivered"
    );
    say("ok");
}

#[test]
fn claims_held_by_live_forked_children_through_an_inherited_queue_are_not_redelivered() {
    let dir = common::tempdir();
    run_role("queue_claim_held", &[dir.path().to_str().unwrap()]);
}

/// Role: two forked children each fork two grandchildren; all six send at the same time
/// through the queue handle of the first process (grandchildren: the handle their parent
/// inherited, after their parent used it), odd grandchildren alternating with a handle
/// of their own opened first; every message arrives exactly once.
fn queue_nested_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let q = MessageQueue::open(dir.join("q")).unwrap();
    q.send("warm").unwrap();
    assert_eq!(&*q.recv().unwrap().unwrap(), b"warm");
    let sends = 500;
    let gate = dir.join("gate");
    let go = || {
        let t = Instant::now();
        while !gate.exists() {
            assert!(t.elapsed() < PATIENCE);
        }
    };
    let children: Vec<Pid> = (0..2)
        .map(|c| {
            common::spawn_forked(|| {
                q.send(format!("c{c}-first")).unwrap();
                let grandchildren: Vec<Pid> = (0..2)
                    .map(|g| {
                        common::spawn_forked(|| {
                            let own = (g % 2 == 1).then(|| MessageQueue::open(q.path()).unwrap());
                            go();
                            for i in 0..sends {
                                let m = format!("c{c}g{g}-{i}");
                                match &own {
                                    Some(own) if i % 2 == 0 => own.send(m).unwrap(),
                                    _ => q.send(m).unwrap(),
                                }
                            }
                            0
                        })
                    })
                    .collect();
                go();
                for i in 0..sends {
                    q.send(format!("c{c}-{i}")).unwrap();
                }
                for g in grandchildren {
                    assert_eq!(wait_exit(g), WaitStatus::Exited(g, 0));
                }
                0
            })
        })
        .collect();
    std::fs::write(&gate, b"go").unwrap();
    for c in children {
        assert_eq!(wait_exit(c), WaitStatus::Exited(c, 0), "child {c}");
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(m) = q.try_recv().unwrap() {
        let m = String::from_utf8(m.to_vec()).unwrap();
        assert!(seen.insert(m.clone()), "{m} received twice");
    }
    for c in 0..2 {
        assert!(seen.contains(&format!("c{c}-first")));
        for i in 0..sends {
            assert!(seen.contains(&format!("c{c}-{i}")), "c{c}-{i} lost");
            for g in 0..2 {
                assert!(seen.contains(&format!("c{c}g{g}-{i}")), "c{c}g{g}-{i} lost");
            }
        }
    }
    assert_eq!(seen.len(), 2 * (1 + 3 * sends));
    say("ok");
}

#[test]
fn forked_grandchildren_sending_through_an_inherited_queue_with_their_parent_lose_nothing() {
    let dir = common::tempdir();
    run_role("queue_nested", &[dir.path().to_str().unwrap()]);
}

/// Role: forked children block in `recv` on the inherited queue handle at the same time:
/// `stats` counts each as a live sleeping receiver (and frees none of their slots), and
/// one message per child, sent
/// then, wakes each and is received exactly once.
fn queue_sleepers_role(args: &[String]) {
    let dir = Path::new(&args[0]);
    let q = MessageQueue::open(dir.join("q")).unwrap();
    q.send("warm").unwrap();
    assert_eq!(&*q.recv().unwrap().unwrap(), b"warm");
    let children = 4;
    let out = |c: usize| dir.join(format!("got-{c}"));
    let pids: Vec<Pid> = (0..children)
        .map(|c| {
            common::spawn_forked(|| {
                let m = q.recv_timeout(PATIENCE).unwrap().expect("a message");
                std::fs::write(out(c), &*m).unwrap();
                0
            })
        })
        .collect();
    let t = Instant::now();
    while q.stats().unwrap().waiting_consumers < children as u32 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sleeping children counted: {} of {children}",
            q.stats().unwrap().waiting_consumers
        );
    }
    // Live sleepers stay counted: `stats` frees only the slots of dead owners. (The
    // portable backend's receivers poll, leaving their slot between naps, so there the
    // count is exact only while they sleep.)
    if fileipc::WAIT_BACKEND.starts_with("linux") {
        for _ in 0..20 {
            assert_eq!(q.stats().unwrap().waiting_consumers, children as u32);
        }
    }
    for c in 0..children {
        q.send(format!("m{c}")).unwrap();
    }
    for c in pids {
        assert_eq!(wait_exit(c), WaitStatus::Exited(c, 0), "child {c}");
    }
    let mut got: Vec<String> = (0..children)
        .map(|c| std::fs::read_to_string(out(c)).unwrap())
        .collect();
    got.sort();
    let want: Vec<String> = (0..children).map(|c| format!("m{c}")).collect();
    assert_eq!(got, want);
    assert_eq!(q.stats().unwrap().waiting_consumers, 0);
    say("ok");
}

#[test]
fn forked_children_sleeping_in_recv_on_an_inherited_queue_are_counted_and_woken() {
    let dir = common::tempdir();
    run_role("queue_sleepers", &[dir.path().to_str().unwrap()]);
}
