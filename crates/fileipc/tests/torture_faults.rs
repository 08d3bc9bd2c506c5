//! Faults that are not kills: processes stopped with SIGSTOP
//! while holding or receiving, and a full file system.

mod common;
mod torture_util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Event, MessageQueue, Mutex, QueueOptions, SharedData};
use rustix::process::Signal;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "fill-queue" => fill_queue(&args),
        "fill-kv" => fill_kv(&args),
        "holder" => holder(&args),
        "contender" => contender(&args),
        "big-consumer" => big_consumer(&args),
        other => panic!("unknown role {other}"),
    });
}

// --- full disk -------------------------------------------------------------------------

/// Fills the file system at `dir` with a file until ENOSPC; returns its path.
fn fill(dir: &Path, leave: usize) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0xaau8; 4096];
    loop {
        if let Err(e) = f.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
            break;
        }
    }
    drop(f);
    // Give some back, so there is room for a little more than the setup.
    let len = std::fs::metadata(&p).unwrap().len();
    let keep = len.saturating_sub(leave as u64);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(keep)
        .unwrap();
    p
}

fn queue_opts() -> QueueOptions {
    QueueOptions::new().segment_size(64 << 10)
}

/// args: queue dir. Sends 1 KiB messages until a send fails; says how it failed.
fn fill_queue(args: &[String]) {
    let q = queue_opts().open(&args[0]).unwrap();
    for i in 0u64.. {
        let msg = format!("{i:08} {}", "m".repeat(1000));
        if let Err(e) = q.send(&msg) {
            say(format!("failed after {i}: {:?}: {e}", e.io_kind()));
            return;
        }
        if i > 100_000 {
            say("never failed");
            return;
        }
    }
}

#[test]
fn full_disk_queue_send_fails_clearly_and_recovers() {
    let Some(fs) = common::Tmpfs::mount("full-disk test", "2m") else {
        return;
    };
    let qdir = fs.dir.join("q");
    let q = queue_opts().open(&qdir).unwrap();
    for i in 0..20 {
        q.send(format!("kept {i}")).unwrap();
    }
    let filler = fill(&fs.dir, 100 << 10);
    // In a child: a page fault on a mapped page the file system cannot allocate is a
    // SIGBUS, which must never happen; the send must fail with an error instead.
    let mut child = Proc::spawn("fill-queue", &[qdir.to_str().unwrap()]);
    let st = child.wait(PATIENCE);
    let line = child
        .remaining_lines(PATIENCE)
        .into_iter()
        .next()
        .unwrap_or_default();
    assert!(
        st.success(),
        "the sender died with {st} (signal {:?}; 7 is SIGBUS) instead of getting an error",
        st.signal()
    );
    eprintln!("queue on a full tmpfs: {line}");
    assert!(
        line.contains("Some(StorageFull)") && line.contains("seg-"),
        "not a clear ENOSPC error naming the segment: {line}"
    );
    // Nothing stored was damaged: the 20 messages come out first, intact, then the
    // sender's messages that were acknowledged.
    for i in 0..20 {
        assert_eq!(q.try_recv().unwrap().unwrap(), format!("kept {i}").as_str());
    }
    let n: u64 = line["failed after ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..n {
        let m = q
            .try_recv()
            .unwrap()
            .expect("an acknowledged message is missing");
        assert!(
            m.starts_with(format!("{i:08} ").as_bytes()),
            "message {i} damaged"
        );
    }
    assert!(q.try_recv().unwrap().is_none());
    // Space freed: everything works again.
    std::fs::remove_file(filler).unwrap();
    for i in 0..200 {
        q.send(format!("{i:08} {}", "z".repeat(1000))).unwrap();
    }
    for i in 0..200 {
        let m = q.try_recv().unwrap().unwrap();
        assert!(m.starts_with(format!("{i:08} ").as_bytes()));
    }
}

/// args: store path. Sets 4 KiB values until a set fails; says how it failed.
fn fill_kv(args: &[String]) {
    let kv = SharedData::open(&args[0]).unwrap();
    for i in 0u64.. {
        if let Err(e) = kv.set(&format!("fill{i}"), &"v".repeat(4000)) {
            say(format!("failed after {i}: {e:?}: {e}"));
            return;
        }
        if i > 100_000 {
            say("never failed");
            return;
        }
    }
}

#[test]
fn full_disk_shared_data_set_fails_clearly_and_recovers() {
    let Some(fs) = common::Tmpfs::mount("full-disk test", "2m") else {
        return;
    };
    let path = fs.dir.join("kv");
    let kv = SharedData::open(&path).unwrap();
    for i in 0..20 {
        kv.set(&format!("kept{i}"), &i).unwrap();
    }
    let filler = fill(&fs.dir, 64 << 10);
    let mut child = Proc::spawn("fill-kv", &[path.to_str().unwrap()]);
    let line = child.expect_line(PATIENCE);
    let st = child.wait(PATIENCE);
    assert!(st.success(), "the writer died with {st}");
    eprintln!("SharedData on a full tmpfs: {line}");
    assert!(
        (line.contains("DiskFull") || line.contains("StorageFull")) && line.contains("/kv"),
        "not a clear disk-full error naming the store: {line}"
    );
    // From this process too (the failed writer is gone).
    let e = kv.set("big", &"w".repeat(200_000)).unwrap_err();
    eprintln!("SharedData set on a full tmpfs: {e}");
    for i in 0..20 {
        assert_eq!(kv.get::<i64>(&format!("kept{i}")).unwrap(), Some(i));
    }
    std::fs::remove_file(filler).unwrap();
    kv.set("big", &"w".repeat(200_000)).unwrap();
    assert_eq!(kv.get::<String>("big").unwrap().unwrap().len(), 200_000);
    kv.increment("n", 1).unwrap();
    drop(kv);
    let kv = SharedData::open(&path).unwrap();
    assert_eq!(kv.get::<i64>("kept7").unwrap(), Some(7));
}

#[test]
fn full_disk_other_primitives_fail_clearly() {
    let Some(fs) = common::Tmpfs::mount("full-disk test", "1m") else {
        return;
    };
    let filler = fill(&fs.dir, 0);
    let e = Mutex::open(fs.dir.join("m")).unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull), "{e}");
    assert!(e.to_string().contains("/m"), "{e}");
    let e = fileipc::Semaphore::open(fs.dir.join("s"), 1).unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull), "{e}");
    let e = MessageQueue::open(fs.dir.join("q")).unwrap_err();
    eprintln!("mutex / semaphore / queue open on a full tmpfs: {e}");
    // An event is a directory entry: tmpfs needs no block for an empty file.
    let ev = Event::open(fs.dir.join("ev")).unwrap();
    let _ = ev.set();
    std::fs::remove_file(filler).unwrap();
    let m = Mutex::open(fs.dir.join("m")).unwrap();
    assert!(m.try_lock().unwrap());
}

// --- stops -----------------------------------------------------------------------------

/// args: mutex path, event path. Locks, says so, holds until the event is set.
fn holder(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    assert!(m.lock_timeout(PATIENCE).unwrap());
    say("locked");
    assert!(
        Event::open(&args[1])
            .unwrap()
            .wait_timeout(PATIENCE)
            .unwrap()
    );
    m.unlock().unwrap();
    say("unlocked");
}

/// args: mutex path, millis. Tries to lock for that long, says whether it got it.
fn contender(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let ms: u64 = args[1].parse().unwrap();
    say("ready");
    let got = m.lock_timeout(Duration::from_millis(ms)).unwrap();
    say(if got { "got" } else { "timeout" });
    if got {
        m.unlock().unwrap();
    }
}

#[test]
fn a_stopped_mutex_holder_is_waited_for_not_robbed() {
    let dir = common::tempdir();
    let m = dir.path().join("m");
    let go = dir.path().join("go");
    let mut h = Proc::spawn("holder", &[m.to_str().unwrap(), go.to_str().unwrap()]);
    h.expect("locked");
    common::signal(h.pid, Signal::STOP);
    let stopped = Instant::now();
    let mut cs: Vec<Proc> = (0..3)
        .map(|_| Proc::spawn("contender", &[m.to_str().unwrap(), "1500"]))
        .collect();
    for c in &mut cs {
        c.expect("ready");
    }
    // While the holder is stopped nobody steals the lock (the kernel keeps a stopped
    // process's flock; the holder-death checks see it alive).
    for c in &mut cs {
        c.expect("timeout");
    }
    let probe = Mutex::open(&m).unwrap();
    assert!(
        !probe.try_lock().unwrap(),
        "the lock was free while its holder was stopped"
    );
    let holder = probe.holder().unwrap().expect("holder recorded");
    assert_eq!(holder.pid, h.pid);
    // Stopped for 2 s in all, then resumed: it still holds, then unlocks normally.
    let rest = Duration::from_secs(2).saturating_sub(stopped.elapsed());
    let mut late: Vec<Proc> = (0..2)
        .map(|_| Proc::spawn("contender", &[m.to_str().unwrap(), "30000"]))
        .collect();
    for c in &mut late {
        c.expect("ready");
    }
    std::thread::sleep(rest); // the length of the stop is the point of the test
    common::signal(h.pid, Signal::CONT);
    Event::open(&go).unwrap().set().unwrap();
    h.expect("unlocked");
    for c in &mut late {
        c.expect("got");
    }
    h.wait_success();
}

/// args: queue dir. Receives until "stop", saying every message's tag.
fn big_consumer(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    say("ready");
    loop {
        let Some(m) = q.recv_timeout(PATIENCE).unwrap() else {
            panic!("no message within {PATIENCE:?}");
        };
        if &m[..] == b"stop" {
            say("stopped");
            return;
        }
        say(format!("got {}", m[0]));
    }
}

#[test]
fn a_frozen_consumer_does_not_block_the_others_forever() {
    let dir = common::tempdir();
    let qd = dir.path().join("q");
    let q = MessageQueue::open(&qd).unwrap();
    // An idle consumer frozen in recv: the others receive while it stays frozen.
    let mut frozen = Proc::spawn("big-consumer", &[qd.to_str().unwrap()]);
    frozen.expect("ready");
    let mut other = Proc::spawn("big-consumer", &[qd.to_str().unwrap()]);
    other.expect("ready");
    common::signal(frozen.pid, Signal::STOP);
    // Stopped before the first send: a consumer still running (spinning for a message)
    // for the microseconds a stop takes to land could take one of the 20 meant for the
    // other consumer.
    common::eventually(PATIENCE, "the consumer to stop", || {
        torture_util::stopped(frozen.pid)
    });
    for i in 0..20u8 {
        q.send([i]).unwrap();
    }
    let mut got = 0;
    while got < 20 {
        let l = other.expect_line(PATIENCE);
        assert!(l.starts_with("got "), "{l}");
        got += 1;
    }
    // Frozen mid-receive: big messages take milliseconds to copy and check, so stops
    // land in the middle of a receive too (consumers hold no lock while receiving). While
    // it is stopped, the other consumer must still progress: it receives a message, or
    // nothing is left that the stopped one has not taken. After every resume, every
    // message arrives exactly once.
    common::signal(frozen.pid, Signal::CONT);
    let big = vec![7u8; 4 << 20];
    let mut tags = std::collections::HashMap::<u8, u32>::new();
    for round in 0..6u8 {
        for k in 0..4u8 {
            let mut m = big.clone();
            m[0] = round * 4 + k;
            q.send(&m).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2 + u64::from(round) * 3)); // stop at varied points
        common::signal(frozen.pid, Signal::STOP);
        common::eventually(PATIENCE, "the consumer to stop", || {
            torture_util::stopped(frozen.pid)
        });
        common::eventually(PATIENCE, "the other consumer to progress", || {
            if let Some(l) = other.try_line() {
                *tags.entry(l[4..].parse().unwrap()).or_default() += 1;
                return true;
            }
            q.count().unwrap() == 0
        });
        assert!(
            torture_util::stopped(frozen.pid),
            "round {round}: resumed early"
        );
        common::signal(frozen.pid, Signal::CONT);
    }
    q.send("stop").unwrap();
    q.send("stop").unwrap();
    let deadline = Instant::now() + PATIENCE;
    for p in [&mut other, &mut frozen] {
        loop {
            assert!(Instant::now() < deadline, "consumers never finished");
            let l = p.expect_line(PATIENCE);
            if l == "stopped" {
                break;
            }
            *tags.entry(l[4..].parse().unwrap()).or_default() += 1;
        }
    }
    for t in 0..24u8 {
        assert_eq!(
            tags.get(&t),
            Some(&1),
            "message {t} delivered {:?} times",
            tags.get(&t)
        );
    }
    other.wait_success();
    frozen.wait_success();
}
