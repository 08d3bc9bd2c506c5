//! The Redis engine under faults: connections killed by the server, a server that stops
//! answering for longer than a lease, a server restart that loses every key, and a
//! mutual-exclusion checker whose holders are killed at random, a claim/ack kill
//! storm, and plain receivers racing claimers on one queue.
//!
//! Each test starts its own `redis-server` (see `common::redis`); without one it skips
//! loudly, and fails where `FILEIPC_REQUIRE_REDIS_TESTS` is set.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{PATIENCE, Proc, say};
use fileipc::{Error, MessageQueue, Mutex, QueueOptions, SharedData};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "checker" => checker(&args),
        "hold" => hold(&args),
        "wait-event" => {
            let e = fileipc::Event::open(&args[0]).unwrap();
            e.wait_forever().unwrap();
            say("woke");
        }
        "storm-producer" => storm_producer(&args),
        "storm-claimer" => storm_claimer(&args),
        "claim-then-ack" => claim_then_ack(&args),
        "mixed-worker" => mixed_worker(&args),
        "recv" => {
            let q = MessageQueue::open(&args[0]).unwrap();
            assert!(q.try_recv().unwrap().is_none(), "the queue starts empty");
            say("waiting");
            let m = q.recv_timeout(PATIENCE * 2).unwrap();
            say(format!("got {:?}", m.map(|m| m.into_string().unwrap())));
        }
        other => panic!("unknown role {other}"),
    });
}

/// Child: takes what `args[0]` names (`mutex`, `semaphore`, `pidfile`, `transaction`) at
/// `args[1]`, says "held", and waits to be killed.
fn hold(args: &[String]) {
    let url = &args[1];
    let mut _keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    match args[0].as_str() {
        "mutex" => {
            let m = Mutex::open(url).unwrap();
            assert!(m.lock_timeout(PATIENCE).unwrap());
            _keep.push(Box::new(m));
        }
        "semaphore" => {
            let s = fileipc::Semaphore::open(url, 1).unwrap();
            assert!(s.acquire_timeout(PATIENCE).unwrap());
            _keep.push(Box::new(s));
        }
        "pidfile" => {
            let mut p = fileipc::PidFile::open(url).unwrap();
            assert!(p.create().unwrap());
            _keep.push(Box::new(p));
        }
        "transaction" => {
            let d = SharedData::open(url).unwrap();
            d.transaction(|tx| {
                tx.set("half", &1)?;
                say("held");
                std::thread::park_timeout(PATIENCE * 2);
                Ok(())
            })
            .unwrap();
        }
        other => panic!("{other}"),
    }
    say("held");
    std::thread::park_timeout(PATIENCE * 2);
}

#[test]
fn a_killed_holder_on_the_same_host_is_reclaimed_long_before_its_lease() {
    let Some(s) =
        RedisServer::start("a_killed_holder_on_the_same_host_is_reclaimed_long_before_its_lease")
    else {
        return;
    };
    // A lease of a minute: anything back within a few seconds was reclaimed because the
    // holder was proven dead, not because its lease ran out.
    for kind in ["mutex", "semaphore", "pidfile", "transaction"] {
        let url = s.url(kind, "lease=60s");
        let mut holder = Proc::spawn("hold", &[kind, &url]);
        holder.expect("held");
        holder.kill_and_reap();
        let start = Instant::now();
        match kind {
            "mutex" => assert!(Mutex::open(&url).unwrap().lock_timeout(PATIENCE).unwrap()),
            "semaphore" => {
                let sem = fileipc::Semaphore::open(&url, 1).unwrap();
                assert!(sem.acquire_timeout(PATIENCE).unwrap());
            }
            "pidfile" => {
                let mut p = fileipc::PidFile::open(&url).unwrap();
                assert!(p.create().unwrap());
            }
            _ => {
                let d = SharedData::open(&url).unwrap();
                d.set("after", &2).unwrap();
                assert_eq!(
                    d.get::<i64>("half").unwrap(),
                    None,
                    "the dead transaction wrote nothing"
                );
            }
        }
        let took = start.elapsed();
        eprintln!("{kind} of a killed holder (lease 60 s) back after {took:?}");
        assert!(took < Duration::from_secs(5), "{kind}: {took:?}");
    }
}

/// Watches `check` for `span`, polling every 50 ms; panics naming `what` if it fails.
fn holds_for(span: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < span {
        assert!(
            check(),
            "{what} stopped holding after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_waiter_stays_subscribed_between_naps_and_wakes_on_the_message() {
    let Some(s) =
        RedisServer::start("a_waiter_stays_subscribed_between_naps_and_wakes_on_the_message")
    else {
        return;
    };
    let url = s.url("ev", "");
    let mut waiter = Proc::spawn("wait-event", &[&url]);
    let subscribed = || {
        s.cli(&["PUBSUB", "NUMSUB", "fileipc:ev:wake"])
            .ends_with('1')
    };
    common::eventually(PATIENCE, "the waiter to subscribe", subscribed);
    // Over three naps (500 ms each) the subscription never lapses: a message published
    // between two naps is not lost.
    holds_for(Duration::from_millis(1600), "the subscription", subscribed);
    fileipc::Event::open(&url).unwrap().set().unwrap();
    waiter.expect("woke");
    waiter.wait_success();
}

#[test]
fn client_kill_does_not_lose_a_renewed_lease() {
    let Some(s) = RedisServer::start("client_kill_does_not_lose_a_renewed_lease") else {
        return;
    };
    let name = s.url("m", "lease=1s");
    let m = Mutex::open(&name).unwrap();
    let other = Mutex::open(&name).unwrap();
    let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
    let killed = s.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert_ne!(killed, "0", "CLIENT KILL killed no connection");
    // Three leases later the lock is still held: the keeper reconnected and renewed.
    holds_for(
        Duration::from_secs(3),
        "the lease after CLIENT KILL",
        || !g.is_lost() && !other.try_lock().unwrap(),
    );
    // The handle's own connection was killed too: a read reconnects it.
    assert!(m.is_locked().unwrap());
    g.unlock().unwrap();
    assert!(other.try_lock().unwrap());
}

#[test]
fn a_paused_server_makes_the_holder_report_its_lease_lost_before_a_successor_gets_it() {
    let Some(s) = RedisServer::start(
        "a_paused_server_makes_the_holder_report_its_lease_lost_before_a_successor_gets_it",
    ) else {
        return;
    };
    let name = s.url("m", "lease=1s");
    let m = Mutex::open(&name).unwrap();
    let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
    // No command is answered (renewals stall) for twice the lease.
    s.cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
    let paused = Instant::now();
    common::eventually(
        Duration::from_secs(5),
        "the holder to report its lease lost",
        || g.is_lost(),
    );
    let lost_after = paused.elapsed();
    eprintln!("lease reported lost {lost_after:?} into the pause");
    assert!(
        lost_after < Duration::from_secs(1),
        "reported after {lost_after:?}, past the lease"
    );
    // A successor gets the lock once the server answers and the key expires; at that
    // instant the old holder already knows.
    let successor = Mutex::open(&name).unwrap();
    assert!(successor.lock_timeout(PATIENCE).unwrap());
    assert!(g.is_lost(), "once lost, always lost");
    assert!(matches!(g.unlock(), Err(Error::LeaseLost { .. })));
    assert!(
        successor.is_locked().unwrap(),
        "the late unlock released nothing"
    );
    successor.unlock().unwrap();
}

#[test]
fn a_server_restart_signals_leases_lost_and_data_is_what_the_server_kept() {
    let Some(mut s) =
        RedisServer::start("a_server_restart_signals_leases_lost_and_data_is_what_the_server_kept")
    else {
        return;
    };
    let name = s.url("m", "lease=1s");
    let m = Mutex::open(&name).unwrap();
    let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
    let before = g.fence();
    s.restart();
    common::eventually(
        Duration::from_secs(5),
        "the lease to be reported lost",
        || g.is_lost(),
    );
    assert!(matches!(g.unlock(), Err(Error::LeaseLost { .. })));
    // The server kept nothing (no persistence): a new mutex, free, whose fences still
    // only grow (seeded from the server's clock).
    let again = Mutex::open(&name).unwrap();
    let g2 = again.try_guard().unwrap().expect("free after the restart");
    assert!(g2.fence() > before, "{} after {before}", g2.fence());
    drop(g2);
    let d = SharedData::open(s.url("kv", "")).unwrap();
    d.set("k", &1).unwrap();
    assert_eq!(d.get::<i64>("k").unwrap(), Some(1));
}

/// Child: claims a message of `args[0]` with a lease of 500 ms, says "claimed", waits
/// (bounded) for the file `args[1]`, then acks and says what the ack returned.
fn claim_then_ack(args: &[String]) {
    let q = QueueOptions::new()
        .lease(Duration::from_millis(500))
        .open(&args[0])
        .unwrap();
    let m = q.claim_timeout(PATIENCE).unwrap().unwrap();
    say("claimed");
    let go = std::path::Path::new(&args[1]);
    common::eventually(PATIENCE, "the go file", || go.exists());
    match m.ack() {
        Err(e) if e.to_string().contains("lost lease") => say("ack-refused"),
        other => say(format!("ack-gave {other:?}")),
    }
}

#[test]
fn a_claimer_stopped_past_its_lease_loses_the_claim_and_its_late_ack_errs() {
    let Some(s) = RedisServer::start(
        "a_claimer_stopped_past_its_lease_loses_the_claim_and_its_late_ack_errs",
    ) else {
        return;
    };
    let url = s.url("q", "");
    let q = QueueOptions::new()
        .lease(Duration::from_millis(500))
        .open(&url)
        .unwrap();
    q.send("job").unwrap();
    let d = common::tempdir();
    let go = d.path().join("go");
    let mut child = Proc::spawn("claim-then-ack", &[&url, go.to_str().unwrap()]);
    child.expect("claimed");
    common::signal(child.pid, rustix::process::Signal::STOP);
    let start = Instant::now();
    let m = q
        .claim_timeout(PATIENCE)
        .unwrap()
        .expect("the stopped claimer's message after its lease");
    eprintln!("taken over {:?} after the claimer stopped", start.elapsed());
    assert_eq!((m.bytes(), m.attempt()), (&b"job"[..], 2));
    std::fs::write(&go, "").unwrap();
    common::signal(child.pid, rustix::process::Signal::CONT);
    child.expect("ack-refused");
    child.wait_success();
    assert_eq!(q.count().unwrap(), 1, "the late ack removed nothing");
    m.ack().unwrap();
    assert_eq!(q.count().unwrap(), 0);
    assert!(
        q.try_claim().unwrap().is_none(),
        "processed exactly once after"
    );
}

// --- the claim/ack kill storm ------------------------------------------------------------

const STORM_PRODUCERS: usize = 2;
const STORM_CLAIMERS: usize = 4;
const STORM_MESSAGES: usize = 5_000;
/// Short, so a killed claimer's message comes back soon.
const STORM_LEASE: Duration = Duration::from_secs(1);
const STORM_MAX_DELIVERIES: u32 = 4;

fn storm_queue(url: &str) -> MessageQueue {
    QueueOptions::new()
        .lease(STORM_LEASE)
        .max_deliveries(STORM_MAX_DELIVERIES)
        .open(url)
        .unwrap()
}

/// Child: sends `args[2]` messages `NAME:i` (`args[1]` = NAME) in batches.
fn storm_producer(args: &[String]) {
    let q = storm_queue(&args[0]);
    let n: usize = args[2].parse().unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        q.send_all(chunk.iter().map(|i| format!("{}:{i}", args[1])))
            .unwrap();
    }
    say("done");
}

/// Child: claims, appends "id attempt" to its log `args[1]` (one `write` of an
/// `O_APPEND` file), then acks (or gives one message in 50 back unprocessed on its first
/// delivery); a late ack refused as a lost lease appends "lost id". Until the file
/// `args[2]` exists and nothing is left.
fn storm_claimer(args: &[String]) {
    use std::io::Write;
    let q = storm_queue(&args[0]);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[1])
        .unwrap();
    let stop = std::path::Path::new(&args[2]);
    say("ready");
    loop {
        match q.claim_timeout(Duration::from_millis(50)).unwrap() {
            Some(m) if m.attempt() == 1 && m.seq() % 50 == 7 => drop(m),
            Some(m) => {
                let id = m.to_str().unwrap().to_owned();
                out.write_all(format!("{id} {}\n", m.attempt()).as_bytes())
                    .unwrap();
                if let Err(e) = m.ack() {
                    assert!(e.to_string().contains("lost lease"), "{e}");
                    out.write_all(format!("lost {id}\n").as_bytes()).unwrap();
                }
            }
            None if stop.exists() => return,
            None => {}
        }
    }
}

#[test]
fn claim_kill_storm_every_message_acked_once_or_dead_lettered() {
    let Some(s) = RedisServer::start("claim_kill_storm_every_message_acked_once_or_dead_lettered")
    else {
        return;
    };
    let url = s.url("q", "");
    let q = storm_queue(&url);
    let d = common::tempdir();
    let stop = d.path().join("stop");
    let stop_s = stop.display().to_string();
    let per = STORM_MESSAGES / STORM_PRODUCERS;
    let mut producers: Vec<Proc> = (0..STORM_PRODUCERS)
        .map(|p| {
            Proc::spawn(
                "storm-producer",
                &[&url, &format!("p{p}"), &per.to_string()],
            )
        })
        .collect();
    let mut generation = 0usize;
    let spawn_claimer = |generation: &mut usize| {
        *generation += 1;
        let log = d.path().join(format!("{generation}.log"));
        let mut p = Proc::spawn("storm-claimer", &[&url, log.to_str().unwrap(), &stop_s]);
        p.expect("ready");
        (*generation, p)
    };
    let mut claimers: Vec<(usize, Proc)> = (0..STORM_CLAIMERS)
        .map(|_| spawn_claimer(&mut generation))
        .collect();
    let mut killed: HashSet<usize> = HashSet::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let start = Instant::now();
    let (mut producers_done, mut kills) = (0, 0);
    loop {
        assert!(start.elapsed() < 6 * PATIENCE, "storm did not finish");
        for p in &mut producers {
            if p.try_line().is_some() {
                producers_done += 1;
            }
        }
        if producers_done == STORM_PRODUCERS && q.count().unwrap() == 0 {
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kills go on until every message is acknowledged or dead-lettered; a victim's
        // message comes back after its lease.
        {
            let i = (rng % STORM_CLAIMERS as u64) as usize;
            if let Some(st) = claimers[i].1.try_wait() {
                panic!("claimer {} exited by itself: {st}", claimers[i].0);
            }
            claimers[i].1.kill_and_reap();
            killed.insert(claimers[i].0);
            kills += 1;
            claimers[i] = spawn_claimer(&mut generation);
        }
        std::thread::sleep(Duration::from_millis(20)); // the storm's pace, not a sync
    }
    std::fs::write(&stop, "").unwrap();
    for (_, c) in &mut claimers {
        c.wait_success();
    }
    for p in &mut producers {
        p.wait_success();
    }
    assert_eq!(q.count().unwrap(), 0);
    let st = q.stats().unwrap();
    assert_eq!((st.ready, st.in_flight), (0, 0));

    let mut dead: HashMap<String, u32> = HashMap::new();
    let dq = q.dead_letters().unwrap();
    while let Some(m) = dq.try_recv().unwrap() {
        assert_eq!(m.dead_letter_attempts(), STORM_MAX_DELIVERIES);
        dead.insert(m.to_str().unwrap().to_owned(), m.dead_letter_attempts());
    }
    // Every message processed or dead-lettered; processed by a survivor at most once
    // (a second time only after its first processor was killed holding it, or lost
    // its lease: its late ack said so).
    let mut seen: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
    let mut lost: HashSet<String> = HashSet::new();
    let mut later_deliveries = 0;
    for g in 1..=generation {
        let text = std::fs::read_to_string(d.path().join(format!("{g}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("lost ")).collect();
        lost.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("lost ").map(str::to_owned)),
        );
        for (k, line) in lines.iter().enumerate() {
            let (id, attempt) = line.rsplit_once(' ').unwrap();
            if attempt != "1" {
                later_deliveries += 1;
            }
            let last_of_killed = killed.contains(&g) && k + 1 == lines.len();
            seen.entry(id.to_owned())
                .or_default()
                .push((g, last_of_killed));
        }
    }
    let mut redelivered = 0;
    for p in 0..STORM_PRODUCERS {
        for i in 0..per {
            let id = format!("p{p}:{i}");
            let times = seen.get(&id).map_or(&[][..], Vec::as_slice);
            let survivors = times.iter().filter(|(_, k)| !k).count();
            if dead.contains_key(&id) {
                assert_eq!(survivors, 0, "{id} dead-lettered and acked: {times:?}");
            } else {
                assert!(!times.is_empty(), "{id} lost");
                assert!(
                    survivors <= 1 || lost.contains(&id),
                    "{id} processed {} times, by {times:?}",
                    times.len()
                );
            }
            redelivered += times.len().saturating_sub(1);
        }
    }
    eprintln!(
        "claim kill storm: {STORM_MESSAGES} messages, {kills} claimers killed, {redelivered} \
         processed again, {later_deliveries} processed on a later delivery, {} dead-lettered, {} late acks refused, {:?}",
        dead.len(),
        lost.len(),
        start.elapsed()
    );
    assert!(kills > 10, "only {kills} kills");
}

/// Child: takes messages from the queue `args[0]` until the file `args[3]` exists and
/// nothing is left, appending each message it took to its log `args[2]`: with plain
/// `recv` if `args[1]` is "recv"; else it claims and acks, giving one message in 25
/// back unprocessed on its first delivery.
fn mixed_worker(args: &[String]) {
    use std::io::Write;
    let q = MessageQueue::open(&args[0]).unwrap();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[2])
        .unwrap();
    let stop = std::path::Path::new(&args[3]);
    say("ready");
    let wait = Duration::from_millis(50);
    loop {
        let took = if args[1] == "recv" {
            q.recv_timeout(wait)
                .unwrap()
                .map(|m| m.into_string().unwrap())
        } else {
            match q.claim_timeout(wait).unwrap() {
                Some(m) if m.attempt() == 1 && m.seq() % 25 == 3 => {
                    m.nack(Duration::ZERO).unwrap();
                    continue;
                }
                Some(m) => {
                    let id = m.to_str().unwrap().to_owned();
                    m.ack().unwrap();
                    Some(id)
                }
                None => None,
            }
        };
        match took {
            Some(id) => out.write_all(format!("{id}\n").as_bytes()).unwrap(),
            None if stop.exists() => return,
            None => {}
        }
    }
}

/// Plain receivers and claimers on one queue: every message is taken once, by one of
/// them, and the counts stay exact while plain receives leave entries behind among
/// claimed ones (the Redis engine removes those in its trims, which must spare what
/// is claimed or given back).
#[test]
fn plain_receivers_and_claimers_take_each_message_once() {
    let Some(s) = RedisServer::start("plain_receivers_and_claimers_take_each_message_once") else {
        return;
    };
    let url = s.url("q", "");
    let q = MessageQueue::open(&url).unwrap();
    let d = common::tempdir();
    let stop = d.path().join("stop");
    let (producers_n, per) = (2, 1500);
    let mut workers: Vec<Proc> = ["recv", "recv", "claim", "claim"]
        .iter()
        .enumerate()
        .map(|(i, how)| {
            let log = d.path().join(format!("{i}.log"));
            let mut p = Proc::spawn(
                "mixed-worker",
                &[&url, how, log.to_str().unwrap(), stop.to_str().unwrap()],
            );
            p.expect("ready");
            p
        })
        .collect();
    let mut producers: Vec<Proc> = (0..producers_n)
        .map(|p| {
            Proc::spawn(
                "storm-producer",
                &[&url, &format!("p{p}"), &per.to_string()],
            )
        })
        .collect();
    for p in &mut producers {
        p.wait_success();
    }
    let start = Instant::now();
    while q.count().unwrap() > 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "the workers did not drain the queue"
        );
        std::thread::sleep(Duration::from_millis(10)); // polling the count, not a sync
    }
    std::fs::write(&stop, "").unwrap();
    for w in &mut workers {
        w.wait_success();
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut by_kind = [0usize; 2];
    for i in 0..4 {
        let text = std::fs::read_to_string(d.path().join(format!("{i}.log"))).unwrap();
        for id in text.lines() {
            *seen.entry(id.to_owned()).or_default() += 1;
            by_kind[i / 2] += 1;
        }
    }
    for p in 0..producers_n {
        for i in 0..per {
            let id = format!("p{p}:{i}");
            assert_eq!(
                seen.get(&id),
                Some(&1),
                "{id} taken {:?} times",
                seen.get(&id)
            );
        }
    }
    assert_eq!(seen.len(), producers_n * per);
    let st = q.stats().unwrap();
    let total = (producers_n * per) as u64;
    assert_eq!(
        (st.sent, st.received, st.count, st.in_flight),
        (total, total, 0, 0)
    );
    eprintln!(
        "mixed receivers: {} by plain recv, {} by claim + ack, {:?}",
        by_kind[0],
        by_kind[1],
        start.elapsed()
    );
    assert!(by_kind[0] > 0 && by_kind[1] > 0, "{by_kind:?}");
}

/// Child: forever, lock, append `+PID` and `-PID` lines to the log, unlock.
fn checker(args: &[String]) {
    use std::io::Write;
    let m = Mutex::open(&args[0]).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&args[1])
        .unwrap();
    let me = std::process::id();
    say("running");
    loop {
        let g = m
            .guard_timeout(PATIENCE)
            .unwrap()
            .expect("lock within PATIENCE");
        log.write_all(format!("+{me}\n").as_bytes()).unwrap();
        log.write_all(format!("-{me}\n").as_bytes()).unwrap();
        drop(g);
    }
}

#[test]
fn eight_holders_killed_at_random_never_overlap() {
    let Some(s) = RedisServer::start("eight_holders_killed_at_random_never_overlap") else {
        return;
    };
    let name = s.url("m", "lease=1s");
    let dir = common::tempdir();
    let log = dir.path().join("log");
    std::fs::write(&log, "").unwrap();
    let l = log.display().to_string();
    let mut kids: Vec<Proc> = (0..8)
        .map(|_| Proc::spawn("checker", &[&name, &l]))
        .collect();
    for k in &mut kids {
        k.expect("running");
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = Instant::now();
    let mut kills = 0;
    while start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(100 + next() % 200));
        let i = (next() % 8) as usize;
        kids[i].kill();
        // Logged right after the SIGKILL: a successor can take the lock only when the
        // victim's lease runs out, a second later.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, format!("k{}\n", kids[i].pid).as_bytes())
            })
            .unwrap();
        kids[i].kill_and_reap();
        kills += 1;
        kids[i] = Proc::spawn("checker", &[&name, &l]);
        kids[i].expect("running");
    }
    for k in &mut kids {
        k.kill_and_reap();
    }
    // A `+Q` while P holds the lock (P's `+` without its `-`) is legal only after P
    // was killed (`kP`), which the parent logs right after the SIGKILL.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut holder: Option<(&str, bool)> = None;
    let (mut cycles, mut interrupted) = (0, 0);
    for line in text.lines() {
        let (sign, pid) = line.split_at(1);
        match (sign, holder) {
            ("k", Some((h, _))) if h == pid => holder = Some((h, true)),
            ("k", _) => {}
            ("+", None) => holder = Some((pid, false)),
            ("+", Some((h, killed))) => {
                assert!(killed, "+{pid} while {h}, alive, held the lock");
                interrupted += 1;
                holder = Some((pid, false));
            }
            ("-", Some((h, _))) => {
                assert_eq!(h, pid, "{pid} released while {h} held the lock");
                holder = None;
                cycles += 1;
            }
            ("-", None) => panic!("-{pid} without a +"),
            _ => unreachable!("{line}"),
        }
    }
    eprintln!("{cycles} cycles, {kills} kills, {interrupted} holders killed inside");
    assert!(cycles > 100, "only {cycles} cycles");
}

/// How many clients the server has blocked (in `XREAD BLOCK` and the like).
fn blocked_clients(s: &RedisServer) -> u32 {
    let info = s.cli(&["INFO", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no blocked_clients in {info}"))
}

#[test]
fn a_receiver_cut_off_while_it_waits_takes_nothing() {
    let Some(s) = RedisServer::start("a_receiver_cut_off_while_it_waits_takes_nothing") else {
        return;
    };
    let url = s.url("q", "");
    let q = MessageQueue::open(&url).unwrap();
    let mut rx = Proc::spawn("recv", &[&url]);
    rx.expect("waiting");
    common::eventually(PATIENCE, "the receiver to block", || {
        blocked_clients(&s) == 1
    });
    // Stopped, the receiver cannot read what the server answers: its wait ends when the
    // message arrives, but nothing may be taken for it.
    common::signal(rx.pid, rustix::process::Signal::STOP);
    q.send("kept").unwrap();
    common::eventually(PATIENCE, "the wait to end", || blocked_clients(&s) == 0);
    assert_eq!(q.count().unwrap(), 1, "a waiting receiver took the message");
    rx.kill_and_reap();
    let m = q.try_recv().unwrap().expect("the message is still there");
    assert_eq!(m.to_str().unwrap(), "kept");
}

#[test]
fn destroy_wakes_a_blocked_receiver_and_later_ones_fail_at_once() {
    let Some(s) =
        RedisServer::start("destroy_wakes_a_blocked_receiver_and_later_ones_fail_at_once")
    else {
        return;
    };
    let url = s.url("q", "");
    let q = MessageQueue::open(&url).unwrap();
    let other = MessageQueue::open(&url).unwrap();
    assert!(other.try_recv().unwrap().is_none());
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        let r = other.recv_timeout(Duration::from_secs(50));
        let late = Instant::now();
        let again = other.recv_timeout(Duration::from_secs(50));
        (r, start.elapsed(), again, late.elapsed())
    });
    common::eventually(PATIENCE, "the receiver to block", || {
        blocked_clients(&s) == 1
    });
    q.destroy().unwrap();
    let (r, took, again, took_again) = waiter.join().unwrap();
    assert!(matches!(r, Err(Error::Destroyed { .. })), "{r:?}");
    assert!(matches!(again, Err(Error::Destroyed { .. })), "{again:?}");
    // Both long before the 50 s of their timeouts (and the 60 s of one XREAD block).
    let soon = Duration::from_secs(10);
    assert!(took < soon && took_again < soon, "{took:?} {took_again:?}");
    // Opening the name again makes a working queue: the mark is gone.
    let q = MessageQueue::open(&url).unwrap();
    q.send("new").unwrap();
    let m = MessageQueue::open(&url)
        .unwrap()
        .recv_timeout(PATIENCE)
        .unwrap()
        .expect("a message");
    assert_eq!(m.to_str().unwrap(), "new");
}
