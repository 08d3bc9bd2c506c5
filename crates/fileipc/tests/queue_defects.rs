//! MessageQueue defects, each with real processes: timeouts behind a consumer that holds
//! the lock to skip a damaged record, `destroy` racing `open`, and durable mode after a
//! power loss. Control file offsets are those of docs/FORMAT.md.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Error, MessageQueue, QueueOptions};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "hold_consumer_lock" => hold_consumer_lock(&args),
        "destroy_loop" => destroy_loop(&args),
        "open_send_recv_loop" => open_send_recv_loop(&args),
        other => panic!("unknown role {other}"),
    });
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Control file offsets (docs/FORMAT.md, "Control file").
const C_LOCK: u64 = 256;
const BOOT_ID: u64 = 80;
const DESTROYED: u64 = 72;

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

// -------------------------------------------------------------------------------------

/// args: dir. Plays a consumer busy skipping a damaged record: marks the queue's consumer
/// lock as held by a live owner id of this process (its byte locked, so no waiter takes
/// it over while this process lives), then stays alive until killed.
fn hold_consumer_lock(args: &[String]) {
    let dir = Path::new(&args[0]);
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("control"))
        .unwrap();
    let id = 0x4000_0000 | std::process::id();
    common::hold_owner_id(&ctl, id);
    ctl.write_at(&id.to_le_bytes(), C_LOCK).unwrap();
    say("holding");
    std::thread::sleep(PATIENCE);
}

/// A queue in a new directory under `root` whose head record is damaged ("damaged",
/// then "next"), with a process holding its consumer lock.
fn damaged_head_behind_a_held_lock(root: &Path, name: &str) -> (std::path::PathBuf, Proc) {
    let dir = root.join(name);
    let q = MessageQueue::open(&dir).unwrap();
    q.send("damaged").unwrap();
    q.send("next").unwrap();
    // The first record's length field (offset 8 of its header): its header checksum fails.
    let seg = dir.join("seg-0000000000000000.log");
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_at(&[0xff], 8).unwrap();
    let mut holder = Proc::spawn("hold_consumer_lock", &[arg(&dir)]);
    holder.expect("holding");
    (dir, holder)
}

/// With a damaged record at the head and the consumer lock held by a
/// live process (one busy skipping that record, stopped there), every timed receive
/// returns at its deadline without burning the CPU, and `try_recv` returns at once.
/// Before the fix the timed-out lock attempt looped on the same damaged head (all CPU,
/// until the holder let go) and `try_recv` waited for the lock without limit.
#[test]
fn receives_honour_their_timeouts_behind_a_consumer_skipping_a_damaged_record() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    type Call = (&'static str, Duration, fn(&MessageQueue) -> String);
    let calls: [Call; 5] = [
        ("recv_timeout(200 ms)", TIMEOUT, |q| {
            format!("{:?}", q.recv_timeout(TIMEOUT))
        }),
        ("try_recv()", Duration::ZERO, |q| {
            format!("{:?}", q.try_recv())
        }),
        ("recv_many(10, 200 ms)", TIMEOUT, |q| {
            format!("{:?}", q.recv_many(10, TIMEOUT))
        }),
        ("recv_deadline(now + 200 ms)", TIMEOUT, |q| {
            format!("{:?}", q.recv_deadline(Instant::now() + TIMEOUT))
        }),
        ("recv_timeout(0)", Duration::ZERO, |q| {
            format!("{:?}", q.recv_timeout(Duration::ZERO))
        }),
    ];
    let t = common::tempdir();
    let mut failures = Vec::new();
    for (i, (name, timeout, call)) in calls.into_iter().enumerate() {
        let (dir, mut holder) = damaged_head_behind_a_held_lock(t.path(), &format!("q{i}"));
        let (tx, rx) = channel();
        let d = dir.clone();
        let worker = std::thread::spawn(move || {
            let q = MessageQueue::open(&d).unwrap();
            let (wall, cpu) = (Instant::now(), thread_cpu());
            let got = call(&q);
            let _ = tx.send((got, wall.elapsed(), thread_cpu() - cpu));
        });
        // A call still blocked after 5 s is a failure; releasing the lock (as the holder
        // does when its skip is done) lets it return, to report its figures.
        let (got, wall, cpu) = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                let ctl = OpenOptions::new()
                    .write(true)
                    .open(dir.join("control"))
                    .unwrap();
                ctl.write_at(&0u32.to_le_bytes(), C_LOCK).unwrap();
                rx.recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| {
                        panic!("{name} had not returned 10 s after the lock was released")
                    })
            }
            Err(e) => panic!("worker died: {e}"),
        };
        worker.join().unwrap();
        eprintln!("{name}: {got} after {wall:?} wall, {cpu:?} CPU");
        // The deadline plus a bound for a loaded 2-core machine; at most 50 ms of CPU
        // (sleeping in 2 ms slices costs microseconds per slice).
        let in_time = wall <= timeout + Duration::from_millis(300);
        if (got != "Ok(None)" && got != "Ok([])") || !in_time || cpu > Duration::from_millis(50) {
            failures.push(format!("{name}: {got} after {wall:?} wall, {cpu:?} CPU"));
        }
        // The holder dies: its lock is taken over, and the damage is reported and skipped.
        holder.kill_and_reap();
        let q = MessageQueue::open(&dir).unwrap();
        let mut rest = Vec::new();
        while let Some(r) = q.recv_timeout(Duration::ZERO).transpose() {
            rest.push(r.map(|m| String::from_utf8_lossy(&m).into_owned()));
        }
        let reported = rest
            .first()
            .is_some_and(|r| matches!(r, Err(Error::Corrupt { .. })));
        let next = rest
            .last()
            .is_some_and(|r| matches!(r, Ok(m) if m == "next"));
        if !(reported && next && rest.len() == 2) && got == "Ok(None)" {
            failures.push(format!("after {name}, the holder's death: {rest:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "receives overran their timeouts behind a held consumer lock: {failures:#?}"
    );
}

/// A dead holder does not stop `try_recv`: it takes the lock over at once (no slice to
/// wait) and reports the damage.
#[test]
fn try_recv_takes_over_the_lock_of_a_dead_consumer_at_a_damaged_record() {
    let t = common::tempdir();
    let (dir, mut holder) = damaged_head_behind_a_held_lock(t.path(), "q");
    holder.kill_and_reap();
    let q = MessageQueue::open(&dir).unwrap();
    assert!(matches!(q.try_recv(), Err(Error::Corrupt { .. })));
    assert_eq!(q.try_recv().unwrap().unwrap(), "next");
}

// -------------------------------------------------------------------------------------

/// args: dir, stop file. Opens and destroys the queue at `dir` until the stop file
/// exists; says "destroyed N errors E" with every unexpected error on its own line first.
fn destroy_loop(args: &[String]) {
    let dir = Path::new(&args[0]);
    let stop = Path::new(&args[1]);
    let (mut n, mut errors) = (0u64, 0u64);
    say("ready");
    while !stop.exists() {
        let r = MessageQueue::open(dir).and_then(|q| q.destroy());
        match r {
            Ok(()) => n += 1,
            // Another handle's destroy got there first: fine.
            Err(Error::Destroyed { .. }) => {}
            Err(e) => {
                errors += 1;
                say(format!("error {e}"));
            }
        }
    }
    say(format!("destroyed {n} errors {errors}"));
}

/// args: dir, rounds, tag. Each round opens the queue at `dir`, sends one message and
/// receives it on the same handle. A send that returned Ok must be received, unless the
/// queue was destroyed meanwhile (then the handle says so: `Error::Destroyed`). Says
/// every anomaly on its own line, then a summary.
fn open_send_recv_loop(args: &[String]) {
    let dir = Path::new(&args[0]);
    let rounds: u64 = args[1].parse().unwrap();
    let tag = &args[2];
    let (mut ok, mut destroyed, mut anomalies) = (0u64, 0u64, 0u64);
    say("ready");
    for i in 0..rounds {
        let msg = format!("{tag}:{i}");
        let q = match MessageQueue::open(dir) {
            Ok(q) => q,
            Err(e) => {
                anomalies += 1;
                say(format!("round {i}: open failed: {e}"));
                continue;
            }
        };
        match q.send(&msg) {
            Ok(()) => {}
            Err(Error::Destroyed { .. }) => {
                destroyed += 1;
                continue;
            }
            Err(e) => {
                anomalies += 1;
                say(format!("round {i}: send failed: {e}"));
                continue;
            }
        }
        match q.try_recv() {
            Ok(Some(m)) if *m == *msg.as_bytes() => ok += 1,
            Err(Error::Destroyed { .. }) => destroyed += 1,
            Ok(Some(m)) => {
                anomalies += 1;
                say(format!(
                    "round {i}: sent {msg:?}, received {:?}",
                    String::from_utf8_lossy(&m)
                ));
            }
            Ok(None) => {
                anomalies += 1;
                say(format!(
                    "round {i}: acknowledged {msg:?} lost (queue empty)"
                ));
            }
            Err(e) => {
                anomalies += 1;
                say(format!("round {i}: acknowledged {msg:?} lost: {e}"));
            }
        }
    }
    say(format!(
        "ok {ok} destroyed {destroyed} anomalies {anomalies}"
    ));
}

/// `destroy` racing `open` in other processes never loses a message
/// of the queue that `open` created and never leaves a queue that fails every receive:
/// a send that returned Ok is received, or the handle reports `Destroyed`. Before the fix
/// an `open` that found the destroyed flag finished the destroy and created a new queue
/// while the destroyer was still deleting files, the new queue's included.
#[test]
fn destroy_racing_open_loses_no_acknowledged_message() {
    let t = common::tempdir();
    let dir = t.path().join("q");
    let stop = t.path().join("stop");
    let rounds: u64 = std::env::var("FILEIPC_DESTROY_RACE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut destroyer = Proc::spawn("destroy_loop", &[arg(&dir), arg(&stop)]);
    destroyer.expect("ready");
    // One opener: the only receiver, so every message it receives is its own.
    let mut openers = [Proc::spawn(
        "open_send_recv_loop",
        &[arg(&dir), &rounds.to_string(), "a"],
    )];
    let mut report = Vec::new();
    let (mut ok, mut destroyed) = (0u64, 0u64);
    for o in &mut openers {
        o.expect("ready");
    }
    for o in &mut openers {
        loop {
            let l = o.expect_line(PATIENCE * 2);
            if let Some(rest) = l.strip_prefix("ok ") {
                let v: Vec<u64> = rest
                    .split_ascii_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                ok += v[0];
                destroyed += v[1];
                break;
            }
            report.push(l);
        }
        o.wait_success();
    }
    std::fs::write(&stop, "").unwrap();
    let summary = loop {
        let l = destroyer.expect_line(PATIENCE);
        if l.starts_with("destroyed ") {
            break l;
        }
        report.push(format!("destroyer: {l}"));
    };
    destroyer.wait_success();
    eprintln!(
        "{rounds} rounds: {ok} received, {destroyed} destroyed in between; destroyer: {summary}"
    );
    // Whatever the last destroy left, the path works as a queue.
    let last = MessageQueue::open(&dir).and_then(|q| {
        q.send("final")?;
        q.try_recv()
    });
    match last {
        Ok(Some(m)) if m == "final" => {}
        other => report.push(format!("after the race: {other:?}")),
    }
    assert!(
        report.is_empty(),
        "{} anomalies while destroy raced open: {report:#?}",
        report.len()
    );
    assert!(
        ok > 0 && destroyed > 0,
        "the race did not happen: {ok} / {destroyed}"
    );
}

/// A destroyer killed after setting the destroyed flag (the flag set by hand here, as it
/// leaves it: the control file is unlinked last) leaves a queue that the next `open`
/// finishes destroying and replaces with an empty one; the old handle stays destroyed.
#[test]
fn open_finishes_a_destroy_whose_destroyer_died() {
    let t = common::tempdir();
    let dir = t.path().join("q");
    let old = QueueOptions::new()
        .segment_size(64 << 10)
        .open(&dir)
        .unwrap();
    for i in 0..3000 {
        old.send(format!("old {i}")).unwrap();
    }
    let segments = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count()
    };
    assert!(segments(&dir) > 1);
    let ctl = OpenOptions::new()
        .write(true)
        .open(dir.join("control"))
        .unwrap();
    ctl.write_at(&1u32.to_le_bytes(), DESTROYED).unwrap();
    let q = MessageQueue::open(&dir).unwrap();
    assert!(matches!(old.send("x"), Err(Error::Destroyed { .. })));
    assert!(q.is_empty().unwrap());
    assert_eq!(
        segments(&dir),
        0,
        "the old queue's segments were not removed"
    );
    q.send("new").unwrap();
    assert_eq!(q.try_recv().unwrap().unwrap(), "new");
    // The old handle's destroy removes nothing of the new queue.
    assert!(matches!(old.destroy(), Err(Error::Destroyed { .. })));
    q.send("still here").unwrap();
    assert_eq!(q.try_recv().unwrap().unwrap(), "still here");
}

// -------------------------------------------------------------------------------------

/// Simulates a power loss after durable sends: the control page reached the disk with a
/// tail that covers records whose pages did not (they were committed by a handle that
/// never synced them, exactly as when a sync flushed the log up to its target and then
/// the control page, which already held a later tail). `lose` says which bytes of the
/// segment never reached the disk, given the durable and the final tail; `consumed`
/// messages are received first. Returns what a durable handle opened after the reboot
/// (or, without `reboot`, in the same boot) receives, errors included.
fn after_power_loss(
    consumed: usize,
    reboot: bool,
    lose: impl FnOnce(u64, u64) -> (u64, u64),
) -> Vec<String> {
    let t = common::tempdir();
    let dir = t.path().join("q");
    let durable = QueueOptions::new().durable(true).segment_size(64 << 10);
    {
        let qd = durable.open(&dir).unwrap();
        for i in 0..10 {
            qd.send(format!("durable {i}")).unwrap();
        }
        let synced_tail = qd.stats().unwrap().tail;
        let qn = MessageQueue::open(&dir).unwrap();
        for i in 0..10 {
            qn.send(format!("unsynced {i:03}")).unwrap();
        }
        let tail = qn.stats().unwrap().tail;
        for _ in 0..consumed {
            let _ = qn.try_recv().unwrap().unwrap();
        }
        let (from, to) = lose(synced_tail, tail);
        // The pages that never reached the disk read back as zeros.
        let seg = dir.join("seg-0000000000000000.log");
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_at(&vec![0u8; (to - from) as usize], from).unwrap();
    }
    // The reboot: the control file was last written in another boot.
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("control"))
        .unwrap();
    let mut b = [0u8; 8];
    ctl.read_exact_at(&mut b, BOOT_ID).unwrap();
    let other = match u64::from_le_bytes(b) {
        0 => 0x5eed_5eed_5eed_5eed,
        v => v ^ 1,
    };
    if reboot {
        ctl.write_at(&other.to_le_bytes(), BOOT_ID).unwrap();
    }
    let q = durable.open(&dir).unwrap();
    let mut got = Vec::new();
    loop {
        match q.try_recv() {
            Ok(Some(m)) => got.push(String::from_utf8_lossy(&m).into_owned()),
            Ok(None) => break,
            Err(e) => got.push(format!("error: {e}")),
        }
    }
    // The queue works on after recovery, and counts exactly.
    q.send("after").unwrap();
    q.send("after 2").unwrap();
    assert_eq!(q.count().unwrap(), 2);
    assert_eq!(q.try_recv().unwrap().unwrap(), "after");
    assert_eq!(q.try_recv().unwrap().unwrap(), "after 2");
    assert_eq!(q.count().unwrap(), 0);
    got
}

fn durable_messages() -> Vec<String> {
    (0..10).map(|i| format!("durable {i}")).collect()
}

/// After a power loss that lost every page beyond the synced tail,
/// the records there are not reported as damage (they were never acknowledged by a
/// sync): every synced message is delivered and nothing else, with no `Corrupt`.
#[test]
#[cfg(target_os = "linux")]
fn durable_queue_after_a_power_loss_reports_no_damage_for_unsynced_records() {
    let got = after_power_loss(0, true, |synced, tail| (synced, tail));
    assert_eq!(got, durable_messages(), "after the simulated power loss");
    // The same with every durable message consumed before (the queue ends up empty),
    // and with the head beyond the synced part (two unsynced records consumed too).
    assert_eq!(
        after_power_loss(10, true, |s, t| (s, t)),
        Vec::<String>::new()
    );
    let got = after_power_loss(12, true, |s, t| (s + 5 * 48, t));
    assert_eq!(got, ["unsynced 002", "unsynced 003", "unsynced 004"]);
    // Without a restart the same bytes are damage (a live sender may still be syncing
    // them), reported as before.
    let got = after_power_loss(0, false, |s, t| (s, t));
    assert!(got.last().unwrap().starts_with("error: "), "{got:#?}");
}

/// As above, with only a page in the middle of the unsynced records lost: the log ends
/// at the first record that did not survive; the unsynced records before it that did
/// survive are kept.
#[test]
#[cfg(target_os = "linux")]
fn durable_queue_after_a_power_loss_ends_the_log_at_the_first_lost_record() {
    // Each unsynced record is 32 + 12 bytes, padded to 48: lose the payload of the 4th.
    let got = after_power_loss(0, true, |synced, _| {
        (synced + 3 * 48 + 32, synced + 3 * 48 + 40)
    });
    let mut want = durable_messages();
    want.extend((0..3).map(|i| format!("unsynced {i:03}")));
    assert_eq!(got, want, "after the simulated power loss");
}

/// Damage below the synced tail is real damage, not a lost page: after the reboot it is
/// still reported (and skipped), never silently cut off.
#[test]
#[cfg(target_os = "linux")]
fn durable_queue_after_a_power_loss_still_reports_damage_to_synced_records() {
    // The payload of "durable 8" (records of 32 + 9 bytes, padded to 48).
    let got = after_power_loss(0, true, |synced, _| {
        (synced - 2 * 48 + 32, synced - 2 * 48 + 33)
    });
    let mut want = durable_messages();
    want.truncate(8);
    assert_eq!(&got[..8], &want[..], "{got:#?}");
    assert!(got[8].starts_with("error: "), "{got:#?}");
    assert_eq!(got[9], "durable 9");
    // The lost unsynced records beyond: nothing more (the whole simulated loss is the
    // payload byte above; every unsynced record reached the disk).
    assert_eq!(got.len(), 20, "{got:#?}");
}
