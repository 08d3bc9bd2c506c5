//! Claim/ack on a message queue: at-least-once delivery, redelivery after a claimer's
//! death (at once), a nack, a drop or a lease that ran out, dead letters, fences; with
//! real processes killed and stopped.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, eventually, say};
use fileipc::{MessageQueue, QueueOptions};
use rustix::process::Signal;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| {
        let dir = PathBuf::from(&args[0]);
        match role {
            "hold" => hold(&dir),
            "hold_then_ack" => hold_then_ack(&dir, &args[1]),
            "claim_and_die" => claim_and_die(&dir),
            "storm_producer" => storm_producer(&dir, &args[1], args[2].parse().unwrap()),
            "storm_claimer" => storm_claimer(&dir, &args[1]),
            other => panic!("unknown role {other}"),
        }
    });
}

fn small(dir: &Path) -> MessageQueue {
    QueueOptions::new()
        .segment_size(64 << 10)
        .open(dir)
        .unwrap()
}

#[test]
fn claim_ack_counts_and_fences() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send_all(["a", "b", "c"]).unwrap();
    let a = q.claim().unwrap().unwrap();
    assert_eq!((a.bytes(), a.attempt()), (&b"a"[..], 1));
    assert_eq!(
        q.count().unwrap(),
        3,
        "an unacknowledged claim still counts"
    );
    let st = q.stats().unwrap();
    assert_eq!((st.count, st.ready, st.in_flight), (3, 2, 1));
    let b = q.claim().unwrap().unwrap();
    assert_eq!(b.bytes(), b"b");
    assert!(b.fence() > a.fence(), "fences grow");
    a.ack().unwrap();
    b.ack().unwrap();
    assert_eq!(q.count().unwrap(), 1);
    assert_eq!(
        q.recv().unwrap().unwrap(),
        "c",
        "plain recv on the same queue"
    );
    assert!(q.is_empty().unwrap());
    assert!(q.try_claim().unwrap().is_none());
}

#[test]
fn a_dropped_claim_comes_back_at_once_before_newer_messages() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send_all(["first", "second"]).unwrap();
    drop(q.try_claim().unwrap().unwrap());
    let again = q.try_claim().unwrap().unwrap();
    assert_eq!((again.bytes(), again.attempt()), (&b"first"[..], 2));
    // Plain receivers never see a message given back for redelivery.
    again.nack(Duration::ZERO).unwrap();
    assert_eq!(q.try_recv().unwrap().unwrap(), "second");
    assert!(q.try_recv().unwrap().is_none());
    let third = q.try_claim().unwrap().unwrap();
    assert_eq!((third.bytes(), third.attempt()), (&b"first"[..], 3));
    third.ack().unwrap();
    assert_eq!(q.count().unwrap(), 0);
}

#[test]
fn a_nacked_message_is_invisible_for_its_delay() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send("later").unwrap();
    let delay = Duration::from_millis(300);
    let t = Instant::now();
    q.try_claim().unwrap().unwrap().nack(delay).unwrap();
    assert!(q.try_claim().unwrap().is_none(), "still within its delay");
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    assert!(t.elapsed() >= delay, "came back after {:?}", t.elapsed());
    assert_eq!(m.attempt(), 2);
    m.ack().unwrap();
}

#[test]
fn an_expired_lease_is_lost_and_a_late_ack_says_so() {
    let d = common::tempdir();
    let q = QueueOptions::new()
        .lease(Duration::from_millis(200))
        .open(d.path())
        .unwrap();
    q.send("job").unwrap();
    let mut slow = q.try_claim().unwrap().unwrap();
    slow.extend(Duration::from_millis(300)).unwrap();
    let t = Instant::now();
    let fast = q.claim_timeout(PATIENCE).unwrap().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "the extension held"
    );
    assert_eq!((fast.bytes(), fast.attempt()), (&b"job"[..], 2));
    assert!(fast.fence() > slow.fence());
    let e = slow.extend(Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().contains("lost lease"), "{e}");
    fast.ack().unwrap();
    let e = slow.ack().unwrap_err();
    assert!(e.to_string().contains("lost lease"), "{e}");
    assert!(
        e.to_string().contains(&d.path().display().to_string()),
        "{e}"
    );
    assert_eq!(q.count().unwrap(), 0);
}

#[test]
fn max_deliveries_moves_a_message_to_the_dead_letters() {
    let d = common::tempdir();
    let q = QueueOptions::new()
        .max_deliveries(3)
        .open(d.path())
        .unwrap();
    q.send_all(["poison", "fine"]).unwrap();
    for attempt in 1..=3 {
        let m = q.try_claim().unwrap().unwrap();
        assert_eq!((m.bytes(), m.attempt()), (&b"poison"[..], attempt));
        m.nack(Duration::ZERO).unwrap();
    }
    let m = q.try_claim().unwrap().unwrap();
    assert_eq!(m.bytes(), b"fine");
    m.ack().unwrap();
    assert!(q.try_claim().unwrap().is_none());
    assert!(q.try_recv().unwrap().is_none());
    assert_eq!(q.count().unwrap(), 0);
    let dead = q.dead_letters().unwrap();
    let m = dead.try_recv().unwrap().unwrap();
    assert_eq!((&*m, m.dead_letter_attempts()), (&b"poison"[..], 3));
    assert!(dead.try_recv().unwrap().is_none());
    q.destroy().unwrap();
    assert!(!d.path().exists(), "destroy removes the dead letters too");
}

#[test]
fn segments_stay_while_a_claim_points_into_them() {
    let d = common::tempdir();
    let q = small(d.path());
    let payload = vec![7u8; 1000];
    q.send(&payload).unwrap();
    let held = q.try_claim().unwrap().unwrap();
    // Three segments' worth behind it, all received.
    let n = 3 * (64 << 10) / 1000;
    q.send_all(std::iter::repeat_n(&payload, n)).unwrap();
    assert_eq!(q.recv_many(n + 1, PATIENCE).unwrap().len(), n);
    assert!(
        q.stats().unwrap().segments >= 3,
        "the claimed message's segment was kept"
    );
    drop(held);
    let again = q.try_claim().unwrap().unwrap();
    assert_eq!((again.bytes(), again.attempt()), (&payload[..], 2));
    again.ack().unwrap();
    assert_eq!(q.stats().unwrap().segments, 1, "removed once acknowledged");
}

#[test]
fn fences_grow_across_a_recreated_queue() {
    let d = common::tempdir();
    let path = d.path().join("q");
    let q = MessageQueue::open(&path).unwrap();
    q.send("x").unwrap();
    let f1 = q.try_claim().unwrap().unwrap().fence();
    q.destroy().unwrap();
    let q = MessageQueue::open(&path).unwrap();
    q.send("x").unwrap();
    let f2 = q.try_claim().unwrap().unwrap().fence();
    assert!(f2 > f1, "{f2} after {f1}");
}

// --- real processes ----------------------------------------------------------------------

/// Claims a message, says so, and holds it until killed.
fn hold(dir: &Path) {
    let q = MessageQueue::open(dir).unwrap();
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    say(format!("claimed {}", m.to_str().unwrap()));
    std::thread::sleep(PATIENCE * 2);
    drop(m);
}

/// Claims with a short lease, says so, and once `go` exists (it was stopped past its
/// lease meanwhile) acks and says how that went.
fn hold_then_ack(dir: &Path, go: &str) {
    let q = QueueOptions::new()
        .lease(Duration::from_millis(200))
        .open(dir)
        .unwrap();
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    say(format!("claimed {} {}", m.to_str().unwrap(), m.fence()));
    eventually(PATIENCE, "the go file", || Path::new(go).exists());
    match m.ack() {
        Ok(()) => say("ack ok"),
        Err(e) => say(format!("ack failed: {e}")),
    }
}

/// Claims a message and exits without acknowledging it (a worker that always fails).
fn claim_and_die(dir: &Path) {
    let q = QueueOptions::new().max_deliveries(3).open(dir).unwrap();
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    say(format!("attempt {}", m.attempt()));
    std::process::exit(3);
}

#[test]
fn a_killed_claimers_message_is_redelivered_at_once() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap(); // lease: 30 s
    q.send("job").unwrap();
    let mut child = Proc::spawn("hold", &[d.path().to_str().unwrap()]);
    child.expect("claimed job");
    let waiter = {
        let path = d.path().to_owned();
        std::thread::spawn(move || {
            let q = MessageQueue::open(&path).unwrap();
            let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
            let at = Instant::now();
            assert_eq!((m.bytes(), m.attempt()), (&b"job"[..], 2));
            m.ack().unwrap();
            at
        })
    };
    // The waiter is asleep in `claim` (nothing to take) before the kill.
    eventually(PATIENCE, "the waiter asleep", || {
        q.stats().unwrap().waiting_consumers == 1
    });
    let killed = Instant::now();
    child.kill();
    let got = waiter.join().unwrap();
    let took = got.duration_since(killed);
    eprintln!("redelivered {took:?} after the SIGKILL (lease 30 s)");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    child.wait(PATIENCE);
    assert_eq!(q.count().unwrap(), 0);
}

#[test]
fn a_claimer_stopped_past_its_lease_loses_the_claim() {
    let d = common::tempdir();
    let q = QueueOptions::new()
        .lease(Duration::from_millis(200))
        .open(d.path())
        .unwrap();
    q.send("job").unwrap();
    let go = d.path().join("go");
    let mut child = Proc::spawn(
        "hold_then_ack",
        &[d.path().to_str().unwrap(), go.to_str().unwrap()],
    );
    let said = child.expect_line(PATIENCE);
    let stale_fence: u64 = said.strip_prefix("claimed job ").unwrap().parse().unwrap();
    common::signal(child.pid, Signal::STOP);
    // Stopped, alive: taken only once its lease ran out.
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!((m.bytes(), m.attempt()), (&b"job"[..], 2));
    assert!(m.fence() > stale_fence, "the successor's fence is higher");
    m.ack().unwrap();
    std::fs::write(&go, "").unwrap();
    common::signal(child.pid, Signal::CONT);
    let said = child.expect_line(PATIENCE);
    assert!(said.starts_with("ack failed: "), "{said}");
    assert!(said.contains("lost lease"), "{said}");
    child.wait_success();
    assert!(q.try_claim().unwrap().is_none(), "processed exactly once");
    assert_eq!(q.count().unwrap(), 0);
}

#[test]
fn a_worker_that_always_dies_sends_the_message_to_the_dead_letters() {
    let d = common::tempdir();
    let q = QueueOptions::new()
        .max_deliveries(3)
        .open(d.path())
        .unwrap();
    q.send("poison").unwrap();
    for attempt in 1..=3 {
        let mut w = Proc::spawn("claim_and_die", &[d.path().to_str().unwrap()]);
        w.expect(&format!("attempt {attempt}"));
        assert_eq!(w.wait(PATIENCE).code(), Some(3));
    }
    assert!(q.try_claim().unwrap().is_none());
    assert!(q.try_recv().unwrap().is_none());
    assert_eq!(q.count().unwrap(), 0);
    let m = q.dead_letters().unwrap().try_recv().unwrap().unwrap();
    assert_eq!((&*m, m.dead_letter_attempts()), (&b"poison"[..], 3));
}

// --- the kill storm ----------------------------------------------------------------------

const STORM_PRODUCERS: usize = 4;
const STORM_CLAIMERS: usize = 4;
const STORM_MESSAGES: usize = 100_000;

fn storm_producer(dir: &Path, name: &str, n: usize) {
    let q = small(dir);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        q.send_all(chunk.iter().map(|i| format!("{name}:{i}")))
            .unwrap();
    }
    say("done");
}

/// Claims, appends "id attempt" to its own log (one `write` of an `O_APPEND` file), then
/// acks (or gives one message in 50 back unprocessed on its first delivery); until the
/// `stop` file exists and nothing is left.
fn storm_claimer(dir: &Path, log: &str) {
    let q = small(dir);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    say("ready");
    let stop = dir.join("stop");
    loop {
        match q.claim_timeout(Duration::from_millis(50)).unwrap() {
            // One message in 50 is given back on its first delivery (not processed).
            Some(m) if m.attempt() == 1 && m.seq() % 50 == 7 => drop(m),
            Some(m) => {
                let line = format!("{} {}\n", m.to_str().unwrap(), m.attempt());
                out.write_all(line.as_bytes()).unwrap();
                m.ack().unwrap();
            }
            None if stop.exists() => return,
            None => {}
        }
    }
}

#[test]
fn kill_storm_every_message_acked_once_or_redelivered_only_after_a_death() {
    let d = common::tempdir();
    let qdir = d.path().join("q");
    let q = small(&qdir);
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let qs = qdir.to_str().unwrap().to_owned();
    let per = STORM_MESSAGES / STORM_PRODUCERS;
    let mut producers: Vec<Proc> = (0..STORM_PRODUCERS)
        .map(|p| Proc::spawn("storm_producer", &[&qs, &format!("p{p}"), &per.to_string()]))
        .collect();
    let mut generation = 0usize;
    let spawn_claimer = |generation: &mut usize| {
        *generation += 1;
        let log = logs.join(format!("{generation}.log"));
        (
            *generation,
            Proc::spawn("storm_claimer", &[&qs, log.to_str().unwrap()]),
        )
    };
    let mut claimers: Vec<(usize, Proc)> = (0..STORM_CLAIMERS)
        .map(|_| spawn_claimer(&mut generation))
        .collect();
    let mut killed: HashSet<usize> = HashSet::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let start = Instant::now();
    let mut producers_done = 0;
    let mut kills = 0;
    loop {
        assert!(start.elapsed() < 3 * PATIENCE, "storm did not finish");
        for p in &mut producers {
            if p.try_line().is_some() {
                producers_done += 1;
            }
        }
        if producers_done == STORM_PRODUCERS && q.count().unwrap() == 0 {
            break;
        }
        // Kill a random claimer that got going, and start another.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = (rng % STORM_CLAIMERS as u64) as usize;
        if let Some(st) = claimers[i].1.try_wait() {
            panic!("claimer {} exited by itself: {st}", claimers[i].0);
        }
        if claimers[i].1.try_line().is_some() {
            claimers[i].1.kill_and_reap();
            killed.insert(claimers[i].0);
            kills += 1;
            claimers[i] = spawn_claimer(&mut generation);
        }
        std::thread::sleep(Duration::from_millis(3)); // the storm's pace, not a sync
    }
    std::fs::write(qdir.join("stop"), "").unwrap();
    for (_, c) in &mut claimers {
        c.wait_success();
    }
    for p in &mut producers {
        p.wait_success();
    }
    assert_eq!(q.count().unwrap(), 0);
    let st = q.stats().unwrap();
    assert_eq!((st.ready, st.in_flight), (0, 0));
    eprintln!(
        "kill storm: {STORM_MESSAGES} messages, {kills} claimers killed, {:?}",
        start.elapsed()
    );

    // Every message processed; a second processing only after its first processor was
    // killed while holding it (its last line: one claim at a time, logged before ack).
    let mut seen: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
    for g in 1..=generation {
        let text = std::fs::read_to_string(logs.join(format!("{g}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (k, line) in lines.iter().enumerate() {
            let (id, attempt) = line.rsplit_once(' ').unwrap();
            let attempt: u32 = attempt.parse().unwrap();
            assert!(attempt >= 1);
            let last_of_killed = killed.contains(&g) && k + 1 == lines.len();
            seen.entry(id.to_owned())
                .or_default()
                .push((g, last_of_killed));
        }
    }
    assert_eq!(seen.len(), STORM_MESSAGES, "messages lost");
    let mut redelivered = 0;
    for (id, times) in &seen {
        let survivors = times.iter().filter(|(_, dead)| !dead).count();
        assert!(
            survivors <= 1,
            "{id} processed {} times, by {times:?} (killed: last line of a killed claimer)",
            times.len()
        );
        redelivered += times.len() - 1;
    }
    eprintln!("kill storm: {redelivered} messages processed again after their claimer died");
    assert!(q.dead_letters().unwrap().is_empty().unwrap());
}

// --- a claimer killed inside the claim lock --------------------------------------------

/// Control file offsets (docs/FORMAT.md, "Claim and ack").
const CLAIM_LOCK: u64 = 264;
const SLOTS_USED: u64 = 1536;
const SLOT0: u64 = 4096;
/// An owner id never handed out: nobody holds its byte lock, so it reads as dead.
const DEAD: u64 = 0x7ff0_0001;
/// Slot 0 *reserving* for `DEAD`, first delivery (owner | tag 1 << 31 | 1 << 34).
const RESERVING_DEAD: u64 = DEAD | 1 << 31 | 1 << 34;

fn write_at(dir: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("control"))
        .unwrap();
    f.write_at(bytes, off).unwrap();
}

/// What a claimer killed after reserving its slot and before its head exchange leaves:
/// the lock word and a *reserving* slot naming it. The message was not taken.
#[test]
fn a_claimer_killed_before_its_head_exchange_leaves_the_message_in_place() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send("a").unwrap();
    write_at(d.path(), SLOT0 + 8, &0u64.to_le_bytes()); // the head's position
    write_at(d.path(), SLOTS_USED, &1u32.to_le_bytes());
    write_at(d.path(), SLOT0, &RESERVING_DEAD.to_le_bytes());
    write_at(d.path(), CLAIM_LOCK, &(DEAD as u32).to_le_bytes());
    assert_eq!(q.count().unwrap(), 1);
    let m = q.try_claim().unwrap().unwrap();
    assert_eq!((m.bytes(), m.attempt()), (&b"a"[..], 1), "delivered once");
    m.ack().unwrap();
    assert!(q.try_claim().unwrap().is_none());
    assert_eq!(q.count().unwrap(), 0);
}

/// What a claimer killed after its head exchange and before marking its slot claimed
/// leaves: the head past the message, the slot still *reserving*. The message must come
/// back (not be lost with the claimer).
#[test]
fn a_claimer_killed_after_its_head_exchange_has_the_message_redelivered() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send("a").unwrap();
    // A real claim moves the head and fills slot 0; then it is made to look like the
    // dead claimer's, caught between the two stores.
    std::mem::forget(q.try_claim().unwrap().unwrap());
    write_at(d.path(), SLOT0, &RESERVING_DEAD.to_le_bytes());
    write_at(d.path(), CLAIM_LOCK, &(DEAD as u32).to_le_bytes());
    assert!(q.try_recv().unwrap().is_none(), "taken from the log");
    assert_eq!(q.count().unwrap(), 1, "repaired: in flight, not lost");
    let m = q.try_claim().unwrap().unwrap();
    assert_eq!((m.bytes(), m.attempt()), (&b"a"[..], 2));
    m.ack().unwrap();
    assert_eq!(q.count().unwrap(), 0);
}

#[test]
fn a_full_in_flight_table_holds_claims_back_but_not_plain_receives() {
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send_all((0..1026).map(|i| i.to_string())).unwrap();
    let held: Vec<_> = (0..1024).map(|_| q.try_claim().unwrap().unwrap()).collect();
    assert!(q.try_claim().unwrap().is_none(), "1024 in flight at most");
    assert_eq!(q.try_recv().unwrap().unwrap(), "1024");
    let st = q.stats().unwrap();
    assert_eq!((st.ready, st.in_flight), (1, 1024));
    let mut held = held.into_iter();
    held.next().unwrap().ack().unwrap();
    assert_eq!(q.try_claim().unwrap().unwrap().bytes(), b"1025");
    drop(held);
    assert_eq!(q.count().unwrap(), 1024, "dropped claims come back");
}

/// Claimers, plain receivers and producers on one queue, threads of one process, nobody
/// dying: every message is taken exactly once (acked, or received), none twice.
#[test]
fn claimers_and_plain_receivers_share_a_queue_exactly_once() {
    let d = common::tempdir();
    let path = d.path().to_owned();
    let per_producer = 20_000usize;
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let path = path.clone();
            std::thread::spawn(move || {
                let q = small(&path);
                for i in 0..per_producer {
                    q.send(format!("{p}:{i}")).unwrap();
                }
            })
        })
        .collect();
    let total = 2 * per_producer;
    let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let consumers: Vec<_> = (0..4)
        .map(|c| {
            let (path, taken) = (path.clone(), taken.clone());
            std::thread::spawn(move || {
                let q = small(&path);
                let start = Instant::now();
                loop {
                    assert!(start.elapsed() < PATIENCE, "messages missing");
                    let got = if c < 3 {
                        match q.claim_timeout(Duration::from_millis(200)).unwrap() {
                            // One in 20 given back once, to be redelivered.
                            Some(m) if m.attempt() == 1 && m.seq() % 20 == 3 => {
                                m.nack(Duration::ZERO).unwrap();
                                continue;
                            }
                            Some(m) => {
                                let s = m.to_str().unwrap().to_owned();
                                m.ack().unwrap();
                                Some(s)
                            }
                            None => None,
                        }
                    } else {
                        q.recv_timeout(Duration::from_millis(200))
                            .unwrap()
                            .map(|m| m.into_string().unwrap())
                    };
                    let mut t = taken.lock().unwrap();
                    match got {
                        Some(s) => t.push(s),
                        None if t.len() >= total => return,
                        None => {}
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for c in consumers {
        c.join().unwrap();
    }
    let taken = taken.lock().unwrap();
    let unique: HashSet<&String> = taken.iter().collect();
    assert_eq!((taken.len(), unique.len()), (total, total));
    let q = small(&path);
    assert_eq!(q.count().unwrap(), 0);
    assert_eq!(q.stats().unwrap().segments, 1, "consumed segments removed");
}

#[test]
fn a_claim_can_go_to_another_thread() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<fileipc::Claimed<'static>>();
    let d = common::tempdir();
    let q = MessageQueue::open(d.path()).unwrap();
    q.send("x").unwrap();
    let m = q.try_claim().unwrap().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || m.ack().unwrap());
    });
    assert_eq!(q.count().unwrap(), 0);
}

#[test]
fn a_detached_claim_stays_claimed_and_attaches_only_to_its_queue() {
    let d = common::tempdir();
    let q = small(&d.path().join("q"));
    let other = small(&d.path().join("other"));
    q.send("job").unwrap();
    let token = q.claim().unwrap().expect("a job").detach();
    // Detached, the message is still claimed: neither another handle nor this one gets it.
    let peer = small(&d.path().join("q"));
    assert!(peer.try_claim().unwrap().is_none());
    let err = token.attach(&other).unwrap_err();
    assert!(err.to_string().contains("another queue"), "{err}");

    q.send("second").unwrap();
    let mut job = q.claim().unwrap().expect("the second job");
    job.extend(PATIENCE).unwrap();
    let job = job.detach().attach(&peer).unwrap(); // a handle of the same queue
    assert_eq!((job.bytes(), job.attempt()), (&b"second"[..], 1));
    drop(job); // attached again, a drop gives it back
    let again = q.try_claim().unwrap().expect("given back");
    assert_eq!((again.bytes(), again.attempt()), (&b"second"[..], 2));
    again.ack().unwrap();
}
