//! MessageQueue producers stopped (`SIGSTOP`) inside and outside their critical section,
//! with real processes: a live holder of the producer lock is waited for however long it
//! is stopped (no timer takes the lock from it), the others proceed as soon as it lets
//! go, nothing it sent is lost and every counter stays exact. Control file offsets are
//! those of docs/FORMAT.md ("Control file", "Owners").

mod common;
mod torture_util;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::MessageQueue;
use rustix::process::Signal;
use torture_util::{Rng, stopped};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "producer" => producer(&args),
        "consumer" => consumer(&args),
        "stopped_holder" => stopped_holder(&args),
        "send_one" => send_one(&args),
        other => panic!("unknown role {other}"),
    });
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Control file offsets (docs/FORMAT.md).
const NEXT_ID: u64 = 20;
const P_LOCK: u64 = 128;
const TAIL: u64 = 144;
const SENT: u64 = 152;
const JOURNAL_TAIL: u64 = 160;
const JOURNAL_SENT: u64 = 168;
const RECEIVED: u64 = 280;
/// Bit 31 of a lock word marks it contended; the rest is the holder's owner id.
const ID_MASK: u32 = 0x7fff_ffff;

/// The producer number of the probe sends the test process makes itself.
const PROBE: u64 = 0xffff;
const STOP: &[u8] = b"STOP";

fn numbered(producer: u64, seq: u64) -> [u8; 8] {
    ((producer << 32) | seq).to_le_bytes()
}

// --- child roles --------------------------------------------------------------------

/// args: dir, producer number, stop file. Sends "number:seq" for seq = 0, 1, ... (8
/// bytes), says "ready" after the first send, and stops once the stop file exists
/// (checked every 256 sends, so that nearly all its time is spent in `send`); then says
/// "finished N": every one of its N sends returned Ok (acknowledged).
fn producer(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    let p: u64 = args[1].parse().unwrap();
    let stop = Path::new(&args[2]);
    q.send(numbered(p, 0)).unwrap();
    let mut seq = 1;
    say("ready");
    while !stop.exists() {
        for _ in 0..256 {
            q.send(numbered(p, seq)).unwrap();
            seq += 1;
        }
    }
    say(format!("finished {seq}"));
}

/// args: dir, log file. Receives until a STOP message, appending every 8-byte message to
/// the log in the order received; says every error it gets ("error ..."), then
/// "stopped".
fn consumer(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    let mut log = BufWriter::new(File::create(&args[1]).unwrap());
    let mut errors = 0;
    say("ready");
    loop {
        match q.recv_forever() {
            Ok(m) if &m[..] == STOP => break,
            Ok(m) => log.write_all(&m).unwrap(),
            Err(e) => {
                say(format!("error {e}"));
                errors += 1;
                if errors > 100 {
                    break;
                }
            }
        }
    }
    log.flush().unwrap();
    say("stopped");
}

/// args: dir, "release" or "die". Plays a producer stopped right after its lock word
/// changed: like the library, it registers an owner id (an open-file-description lock
/// on the id's byte of the control file, through a description of its own), writes the
/// id into the free producer lock word and nothing else, says "holding" and stops itself
/// (`SIGSTOP`). Once continued, with "release" it clears the word as an unlock does (the
/// word must still name it) and says "released"; with "die" it is killed while stopped.
fn stopped_holder(args: &[String]) {
    let dir = Path::new(&args[0]);
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("control"))
        .unwrap();
    let id = 0x4000_0000 | std::process::id();
    common::hold_owner_id(&ctl, id);
    assert_eq!(read_u32(&ctl, P_LOCK), 0, "the producer lock is not free");
    ctl.write_at(&id.to_le_bytes(), P_LOCK).unwrap();
    say("holding");
    // Raised on this thread (`tgkill`): a `kill` of the process would be taken by the
    // main thread, and this one could run on (and exit) before the group stop reached it.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Continued.
    if args[1] == "release" {
        let w = read_u32(&ctl, P_LOCK);
        assert_eq!(w & ID_MASK, id, "the lock was taken from a live holder");
        ctl.write_at(&0u32.to_le_bytes(), P_LOCK).unwrap();
        say("released");
    } else {
        std::thread::sleep(PATIENCE);
    }
}

/// args: dir, text. Opens the queue (after the lock was taken), sends one message.
fn send_one(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    say("opened");
    q.send(&args[1]).unwrap();
    say("sent");
}

// --- helpers ------------------------------------------------------------------------

fn read_u32(f: &File, off: u64) -> u32 {
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, off).unwrap();
    u32::from_le_bytes(b)
}

fn read_u64(f: &File, off: u64) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_le_bytes(b)
}

/// The control file, for reading the lock word and counters the way another process
/// sees them (the page cache the mappings share), without taking anything.
fn control(dir: &Path) -> File {
    File::open(dir.join("control")).unwrap()
}

/// Stops `pid` and waits until the kernel shows every thread of it stopped.
fn stop(pid: u32) -> Instant {
    common::signal(pid, Signal::STOP);
    common::eventually(PATIENCE, "the process to stop", || stopped(pid));
    Instant::now()
}

/// The test process's own sender: sends one numbered probe message per request, in a
/// thread of its own (so the test can watch it not completing), and answers with the
/// instant the send returned.
struct Prober {
    requests: Sender<u64>,
    done: Receiver<(u64, Instant)>,
    sent: u64,
}

impl Prober {
    fn new(dir: &Path) -> Prober {
        let (requests, rx) = channel::<u64>();
        let (tx, done) = channel();
        let q = MessageQueue::open(dir).unwrap();
        std::thread::spawn(move || {
            for k in rx {
                q.send(numbered(PROBE, k)).unwrap();
                if tx.send((k, Instant::now())).is_err() {
                    break;
                }
            }
        });
        Prober {
            requests,
            done,
            sent: 0,
        }
    }

    /// Starts the next probe send.
    fn start(&mut self) -> u64 {
        let k = self.sent;
        self.requests.send(k).unwrap();
        self.sent += 1;
        k
    }

    /// The instant probe `k` returned, waiting at most `timeout`; `None` on timeout.
    fn finished(&self, k: u64, timeout: Duration) -> Option<Instant> {
        match self.done.recv_timeout(timeout) {
            Ok((got, at)) => {
                assert_eq!(got, k);
                Some(at)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the probe sender died"),
        }
    }
}

// --- tests --------------------------------------------------------------------------

/// Three producer processes send numbered messages in a loop; two consumers receive
/// them. Many times, a random producer is stopped (`SIGSTOP`) at a random moment; from
/// the lock word and the owner id it registered, the test knows whether it was stopped
/// holding the producer lock (inside its critical section: about a fifth of the stops
/// here, spread over every step of the commit) or not. Holding: no other send completes while it is stopped (the probe send
/// of the test process waits, `tail` and `sent` do not move, the word keeps naming it),
/// for 3 s in several rounds; and everything proceeds once it is continued. Not holding:
/// the others' sends complete while it is stopped. At the end every acknowledged
/// message was received exactly once, in per-producer order, no receive failed, and
/// `count()`, `sent` and `received` are exact.
#[test]
fn producers_stopped_inside_the_critical_section_are_waited_for_and_lose_nothing() {
    const PRODUCERS: usize = 3;
    const CONSUMERS: usize = 2;
    const LONG: Duration = Duration::from_secs(3);
    /// 3 s stops of a producer holding the lock, and of one not holding it.
    const LONG_HELD: usize = 4;
    const LONG_FREE: usize = 1;
    /// Rounds go on for this long at least (and until the 3 s quotas are met)...
    const TARGET: Duration = Duration::from_secs(25);
    /// ... and must have been at least this many.
    const MIN_ROUNDS: usize = 40;
    const BUDGET: Duration = Duration::from_secs(150);

    let t = common::tempdir();
    let dir = t.path().join("q");
    let q = MessageQueue::open(&dir).unwrap();
    let ctl = control(&dir);
    let stop_file = t.path().join("stop");
    let mut rng = Rng::new(torture_util::seed("queue stops"));

    // The test process's own owner ids first (its main thread's and the probe thread's),
    // so that the counter read after each producer's first send is that producer's
    // thread id: the value its lock word holds.
    q.send("warm-up").unwrap();
    let mut prober = Prober::new(&dir);
    let k = prober.start();
    prober.finished(k, PATIENCE).expect("the first probe send");
    let mut warm = 0;
    while let Some(m) = q.try_recv().unwrap() {
        assert!(&m[..] == b"warm-up" || m[..] == numbered(PROBE, 0));
        warm += 1;
    }
    assert_eq!(warm, 2);
    let probe_first = prober.sent;

    let mut producers = Vec::new();
    let mut ids = Vec::new();
    for p in 0..PRODUCERS {
        let mut proc = Proc::spawn("producer", &[arg(&dir), &p.to_string(), arg(&stop_file)]);
        proc.expect("ready");
        ids.push(lock_word_id(&ctl));
        producers.push(proc);
    }
    eprintln!("producer owner ids {ids:?}");
    let mut consumers: Vec<(Proc, PathBuf)> = (0..CONSUMERS)
        .map(|c| {
            let log = t.path().join(format!("log{c}"));
            let mut proc = Proc::spawn("consumer", &[arg(&dir), arg(&log)]);
            proc.expect("ready");
            (proc, log)
        })
        .collect();

    let began = Instant::now();
    let (mut rounds, mut held_rounds, mut long_held, mut long_free) = (0usize, 0usize, 0, 0);
    let mut last_sent = 0u64;
    let mut free_latency = Duration::ZERO;
    let mut release_latency = Duration::ZERO;
    // Where in the critical section the stops that held the lock landed, from the
    // producer journal: before the journal write (or after the whole commit), between
    // the journal and the tail store, between the tail store and the `sent` store.
    let mut phases = [0usize; 3];
    // `sent` never goes backwards, and `received` (read first) never passes it by more
    // than the one message of a producer stopped between its tail store (after which
    // the message can be received) and its `sent` store.
    let mut ahead = 0;
    let mut watch_counters = || {
        let received = read_u64(&ctl, RECEIVED);
        let sent = read_u64(&ctl, SENT);
        assert!(
            sent >= last_sent,
            "sent went backwards: {last_sent} -> {sent}"
        );
        assert!(received <= sent + 1, "received {received}, sent {sent}");
        ahead += usize::from(received > sent);
        last_sent = sent;
    };
    while long_held < LONG_HELD || long_free < LONG_FREE || began.elapsed() < TARGET {
        assert!(
            began.elapsed() < BUDGET,
            "after {rounds} rounds in {BUDGET:?}, only {held_rounds} stops landed inside \
             the critical section ({long_held} of them for 3 s)"
        );
        for p in &mut producers {
            assert!(p.try_wait().is_none(), "producer {} exited", p.pid);
        }
        // Let everyone run a random while (observed as messages sent), then stop a
        // random producer wherever it is.
        let v = rng.below(PRODUCERS);
        let target = read_u64(&ctl, SENT) + rng.range(1, 400);
        common::eventually(PATIENCE, "the producers to send", || {
            read_u64(&ctl, SENT) >= target
        });
        let stopped_at = stop(producers[v].pid);
        let word = read_u32(&ctl, P_LOCK);
        let held = word & ID_MASK == ids[v];
        let (tail0, sent0) = (read_u64(&ctl, TAIL), read_u64(&ctl, SENT));
        watch_counters();
        let long = if held && long_held < LONG_HELD {
            long_held += 1;
            true
        } else if !held && long_free < LONG_FREE {
            long_free += 1;
            true
        } else {
            false
        };
        let length = if long {
            LONG
        } else {
            Duration::from_millis(rng.range(10, 150))
        };
        let until = stopped_at + length;
        let k = prober.start();
        if held {
            held_rounds += 1;
            let (jtail, jsent) = (read_u64(&ctl, JOURNAL_TAIL), read_u64(&ctl, JOURNAL_SENT));
            phases[if jtail != tail0 {
                1
            } else if jsent != sent0 {
                2
            } else {
                0
            }] += 1;
            // Nothing commits while it is stopped: neither the probe nor the other
            // producers; the word keeps naming it; stats() takes nothing from it.
            let st = q.stats().unwrap();
            assert_eq!((st.tail, st.sent), (tail0, sent0));
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                let slice = (until - now).min(Duration::from_millis(10));
                if let Some(at) = prober.finished(k, slice) {
                    panic!(
                        "round {rounds}: a send completed {:?} into the stop of producer {v}, \
                         which held the producer lock (word {word:#x})",
                        at - stopped_at
                    );
                }
                let w = read_u32(&ctl, P_LOCK);
                assert_eq!(
                    w & ID_MASK,
                    ids[v],
                    "round {rounds}: the lock was taken from stopped producer {v} after {:?}",
                    stopped_at.elapsed()
                );
                assert_eq!(
                    (read_u64(&ctl, TAIL), read_u64(&ctl, SENT)),
                    (tail0, sent0),
                    "round {rounds}: a send committed while producer {v} held the lock"
                );
                assert!(stopped(producers[v].pid));
            }
            common::signal(producers[v].pid, Signal::CONT);
            let resumed = Instant::now();
            let at = prober
                .finished(k, PATIENCE)
                .expect("the probe send after the holder was continued");
            release_latency = release_latency.max(at.saturating_duration_since(resumed));
        } else {
            // The lock is free or another producer's: the probe send completes, and so
            // do the other producers' sends, while this one stays stopped.
            let at = prober
                .finished(k, PATIENCE)
                .expect("a send behind a stopped producer that did not hold the lock");
            free_latency = free_latency.max(at.saturating_duration_since(stopped_at));
            common::eventually(PATIENCE, "the other producers to send", || {
                read_u64(&ctl, SENT) >= sent0 + 2
            });
            assert!(stopped(producers[v].pid));
            while Instant::now() < until {
                // Holding the stop for the round's length, watching that it lasts.
                std::thread::sleep(Duration::from_millis(5));
                assert!(stopped(producers[v].pid));
            }
            common::signal(producers[v].pid, Signal::CONT);
        }
        watch_counters();
        rounds += 1;
    }
    eprintln!(
        "{rounds} stops in {:?}: {held_rounds} inside the critical section ({long_held} \
         for 3 s; {} before the journal write, {} between journal and tail, {} between \
         tail and sent; received one ahead of sent in {ahead} readings), {long_free} of 3 s outside; slowest probe send behind a stopped \
         non-holder {free_latency:?}, after a holder was continued {release_latency:?}",
        began.elapsed(),
        phases[0],
        phases[1],
        phases[2],
    );
    assert!(rounds >= MIN_ROUNDS, "only {rounds} rounds");

    // Everyone finishes; every send that returned was acknowledged.
    File::create(&stop_file).unwrap();
    let mut acked = Vec::new();
    for p in &mut producers {
        let line = p.expect_line(PATIENCE);
        let n: u64 = line
            .strip_prefix("finished ")
            .unwrap_or_else(|| panic!("producer said {line:?}"))
            .parse()
            .unwrap();
        p.wait_success();
        acked.push(n);
    }
    let probes = prober.sent - probe_first;
    drop(prober);
    let total: u64 = acked.iter().sum::<u64>() + probes;
    common::eventually(PATIENCE, "the consumers to drain the queue", || {
        q.is_empty().unwrap()
    });
    q.send_all(std::iter::repeat_n(STOP, CONSUMERS)).unwrap();
    for (c, _) in &mut consumers {
        c.expect("stopped");
        c.wait_success();
    }
    // Quiescent (every consumer raised `received` before it exited): exact counters.
    let all = total + warm + CONSUMERS as u64;
    let st = q.stats().unwrap();
    assert_eq!(q.count().unwrap(), 0);
    assert_eq!(
        (st.sent, st.received, st.head),
        (all, all, st.tail),
        "counters after {total} messages (+{warm} warm-up, {CONSUMERS} STOP): {st:?}"
    );

    // Exactly once, in per-producer order per consumer.
    let mut seen: HashMap<u64, Vec<bool>> = HashMap::new();
    for (p, &n) in acked.iter().enumerate() {
        seen.insert(p as u64, vec![false; n as usize]);
    }
    // Probe numbers below `probe_first` were the warm-up, received by the test itself.
    let mut probe_flags = vec![false; (probe_first + probes) as usize];
    probe_flags[..probe_first as usize].fill(true);
    seen.insert(PROBE, probe_flags);
    let mut received = 0u64;
    for (c, (_, log)) in consumers.iter().enumerate() {
        let bytes = std::fs::read(log).unwrap();
        assert_eq!(bytes.len() % 8, 0);
        let mut last: HashMap<u64, u64> = HashMap::new();
        for chunk in bytes.chunks_exact(8) {
            let m = u64::from_le_bytes(chunk.try_into().unwrap());
            let (p, seq) = (m >> 32, m & 0xffff_ffff);
            let flags = seen
                .get_mut(&p)
                .unwrap_or_else(|| panic!("consumer {c} received {m:#x}, sent by nobody"));
            let slot = flags
                .get_mut(seq as usize)
                .unwrap_or_else(|| panic!("consumer {c} received {p}:{seq}, never acked"));
            assert!(!*slot, "{p}:{seq} received twice");
            *slot = true;
            if let Some(prev) = last.insert(p, seq) {
                assert!(
                    prev < seq,
                    "consumer {c} received {p}:{seq} after {p}:{prev}"
                );
            }
            received += 1;
        }
    }
    for (p, flags) in &seen {
        let missing: Vec<usize> = (0..flags.len()).filter(|&i| !flags[i]).take(10).collect();
        assert!(missing.is_empty(), "producer {p}: lost {missing:?}...");
    }
    eprintln!(
        "{received} messages acknowledged and received exactly once: {acked:?} + {probes} probes"
    );
    assert_eq!(received, total);

    // count() is exact with a backlog too, and the queue goes on working.
    q.send_all((0..100u64).map(|i| numbered(7, i))).unwrap();
    assert_eq!(q.count().unwrap(), 100);
    let st = q.stats().unwrap();
    assert_eq!((st.sent, st.received), (all + 100, all));
}

/// The id a producer process's lock word holds: its main thread's owner id, the last id
/// the header's counter handed out when it said "ready" (it registered its process id
/// at open, then its thread's at its first send, and nobody registered since).
fn lock_word_id(ctl: &File) -> u32 {
    read_u32(ctl, NEXT_ID) & ID_MASK
}

/// A producer stopped right after its lock word changed (the one instant of a send
/// before which nothing is written): the holder has registered its owner id and written
/// it into the word, and is stopped for 3 s. Senders wait the whole 3 s (through a
/// handle opened before and through new handles, which take over dead holders' locks at
/// open), `count` and `stats` take nothing from it; once it is continued and clears the
/// word, every send completes and the queue holds exactly what was sent.
#[test]
fn a_producer_stopped_right_after_taking_the_lock_word_is_waited_for_then_released() {
    stopped_holder_test("release");
}

/// As above, but the stopped holder is then killed: the senders take the lock over and
/// complete, and the counters are exact.
#[test]
fn a_producer_stopped_right_after_taking_the_lock_word_is_waited_for_then_killed() {
    stopped_holder_test("die");
}

fn stopped_holder_test(mode: &str) {
    const HOLD: Duration = Duration::from_secs(3);
    let t = common::tempdir();
    let dir = t.path().join("q");
    let q = MessageQueue::open(&dir).unwrap();
    q.send("before").unwrap();
    let ctl = control(&dir);

    let mut holder = Proc::spawn("stopped_holder", &[arg(&dir), mode]);
    holder.expect("holding");
    common::eventually(PATIENCE, "the holder to stop", || stopped(holder.pid));
    let stopped_at = Instant::now();
    let word = read_u32(&ctl, P_LOCK);
    assert_ne!(word & ID_MASK, 0);
    let (tail0, sent0) = (read_u64(&ctl, TAIL), read_u64(&ctl, SENT));

    // A sender whose handle was opened before the lock was taken, and two processes
    // that open the queue while it is held.
    let (tx, done) = channel();
    let h = MessageQueue::open(&dir).unwrap();
    std::thread::spawn(move || {
        h.send("thread").unwrap();
        let _ = tx.send(Instant::now());
    });
    let mut senders: Vec<Proc> = ["one", "two"]
        .iter()
        .map(|text| Proc::spawn("send_one", &[arg(&dir), text]))
        .collect();
    for s in &mut senders {
        s.expect("opened");
    }
    let mut checks = 0;
    while stopped_at.elapsed() < HOLD {
        match done.recv_timeout(Duration::from_millis(10)) {
            Ok(at) => panic!(
                "a send completed {:?} into the stop of the lock's holder",
                at - stopped_at
            ),
            Err(RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("the sending thread died: {e}"),
        }
        for s in &mut senders {
            if let Some(l) = s.try_line() {
                panic!(
                    "sender {} said {l:?} {:?} into the stop of the lock's holder",
                    s.pid,
                    stopped_at.elapsed()
                );
            }
        }
        if checks % 20 == 0 {
            // Neither count() nor stats() takes the lock from a live holder.
            q.count().unwrap();
            let st = q.stats().unwrap();
            assert_eq!((st.tail, st.sent), (tail0, sent0));
        }
        checks += 1;
        let w = read_u32(&ctl, P_LOCK);
        assert_eq!(
            w & ID_MASK,
            word & ID_MASK,
            "the lock was taken from its stopped holder after {:?}",
            stopped_at.elapsed()
        );
        assert_eq!((read_u64(&ctl, TAIL), read_u64(&ctl, SENT)), (tail0, sent0));
        assert!(stopped(holder.pid), "the holder is no longer stopped");
    }
    eprintln!(
        "{mode}: no send completed and the word kept naming its holder for {:?}",
        stopped_at.elapsed()
    );

    // From the signal that lets it go: continued, it clears the word at once; killed,
    // the kernel drops its owner id's lock as it exits.
    let let_go = Instant::now();
    if mode == "release" {
        common::signal(holder.pid, Signal::CONT);
        holder.expect("released");
        holder.wait_success();
    } else {
        holder.kill_and_reap();
    }
    let at = done
        .recv_timeout(PATIENCE)
        .expect("the thread's send after the holder let go");
    let mut latest = at;
    for s in &mut senders {
        s.expect("sent");
        latest = latest.max(Instant::now());
        s.wait_success();
    }
    eprintln!(
        "{mode}: the thread's send completed {:?} after the holder let go, the last \
         process's within {:?}",
        at.saturating_duration_since(let_go),
        latest.saturating_duration_since(let_go)
    );
    assert!(
        at.saturating_duration_since(let_go) < Duration::from_secs(2),
        "the waiting send took {:?} after the holder let go",
        at.saturating_duration_since(let_go)
    );

    let mut got = Vec::new();
    while let Some(m) = q.try_recv().unwrap() {
        got.push(String::from_utf8(m.into_bytes()).unwrap());
    }
    assert_eq!(got[0], "before");
    let mut rest = got[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["one", "thread", "two"]);
    assert_eq!(q.count().unwrap(), 0);
    let st = q.stats().unwrap();
    assert_eq!((st.sent, st.received, st.head), (4, 4, st.tail));
}
