//! Semaphore across real processes.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::measure::mono_ns;
use common::{PATIENCE, Proc, say};
use fileipc::{Error, Semaphore};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "cycler" => cycler(&args),
        "holder" => holder(&args),
        "waiter" => waiter(&args),
        "lock_word_holder" => lock_word_holder(&args),
        "hold_until" => hold_until(&args),
        other => panic!("unknown role {other}"),
    });
}

/// Child: `n` acquire/release cycles through every entry point. After each acquire it
/// appends `+` to the log and before each release `-` (one `O_APPEND` write each, so
/// the log's order is the order of the writes): a prefix of the log with more `+` than
/// `-` by more than the permits means that many processes held one at once.
fn cycler(args: &[String]) {
    let s = Semaphore::open(&args[0], 3).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&args[1])
        .unwrap();
    let n: u32 = args[2].parse().unwrap();
    let pid = std::process::id();
    say("ready");
    for i in 0..n {
        let permit = match i % 4 {
            0 => {
                assert!(s.acquire_timeout(PATIENCE).unwrap());
                None
            }
            1 => Some(s.permit_forever().unwrap()),
            2 => {
                if !s.try_acquire().unwrap() {
                    assert!(s.acquire_timeout(PATIENCE).unwrap());
                }
                None
            }
            _ => Some(s.permit_timeout(PATIENCE).unwrap().unwrap()),
        };
        log.write_all(format!("+{pid}\n").as_bytes()).unwrap();
        log.write_all(format!("-{pid}\n").as_bytes()).unwrap();
        match permit {
            Some(p) => p.release().unwrap(),
            None => s.release().unwrap(),
        }
    }
    assert_eq!(s.held().unwrap(), 0);
    say("done");
}

/// Child: takes `args[1]` permits, reports, and holds them until killed.
fn holder(args: &[String]) {
    let s = Semaphore::open_existing(&args[0]).unwrap();
    let k: u32 = args[1].parse().unwrap();
    for _ in 0..k {
        assert!(s.try_acquire().unwrap(), "a permit should be free");
    }
    say("held");
    loop {
        std::thread::park();
    }
}

/// Child: finds no permit, waits for one, reports when it got it, returns it.
fn waiter(args: &[String]) {
    let s = Semaphore::open_existing(&args[0]).unwrap();
    assert!(!s.try_acquire().unwrap(), "no permit should be free");
    say("busy");
    assert!(s.acquire_timeout(PATIENCE).unwrap());
    let t = mono_ns();
    say(format!("got {t}"));
    s.release().unwrap();
}

/// 6 processes x 2,000 cycles on a 3-permit semaphore never see more than 3
/// holders at once, and the value ends at 3.
#[test]
fn six_processes_never_exceed_three_holders() {
    let dir = common::tempdir();
    let sem = dir.path().join("sem");
    let log = dir.path().join("log");
    std::fs::write(&log, b"").unwrap();
    Semaphore::open(&sem, 3).unwrap();
    let (s, l) = (sem.to_str().unwrap(), log.to_str().unwrap());
    let mut kids: Vec<Proc> = (0..6)
        .map(|_| Proc::spawn("cycler", &[s, l, "2000"]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.expect("done");
        k.wait_success();
    }
    let log = std::fs::read_to_string(&log).unwrap();
    let (mut inside, mut most, mut cycles) = (0i64, 0i64, 0);
    for line in log.lines() {
        match &line[..1] {
            "+" => {
                inside += 1;
                cycles += 1;
            }
            "-" => inside -= 1,
            _ => panic!("bad log line {line:?}"),
        }
        most = most.max(inside);
        assert!(inside <= 3, "{inside} holders at once");
    }
    assert_eq!(cycles, 6 * 2000);
    assert_eq!(inside, 0);
    eprintln!("at most {most} holders at once");
    assert_eq!(Semaphore::open(&sem, 3).unwrap().value().unwrap(), 3);
}

/// A release by a process holding no permit is a plain increment, and it
/// wakes a waiter in another process (signalling).
#[test]
fn release_without_holding_signals() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 0).unwrap();
    assert_eq!(s.value().unwrap(), 0);
    let mut w = Proc::spawn("waiter", &[path.to_str().unwrap()]);
    w.expect("busy");
    common::eventually(PATIENCE, "the waiter to register", || s.waiting() == 1);
    s.release().unwrap();
    assert!(w.expect_line(PATIENCE).starts_with("got "));
    w.wait_success();
    // The waiter took the permit and released it (it held one): the value stays 1.
    assert_eq!(s.value().unwrap(), 1);
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.value().unwrap(), 3);
    assert_eq!(s.held().unwrap(), 0);
}

/// Raising the value past u32::MAX is an error naming the path.
#[test]
fn release_overflow_is_an_error() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, u32::MAX - 1).unwrap();
    s.release().unwrap();
    assert_eq!(s.value().unwrap(), u32::MAX);
    let e = s.release().unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert_eq!(e.path(), path);
    assert!(e.to_string().contains("u32::MAX"), "{e}");
    assert_eq!(s.value().unwrap(), u32::MAX);
    // A process holding a permit can still return it.
    assert!(s.try_acquire().unwrap());
    s.release().unwrap();
    assert_eq!(s.value().unwrap(), u32::MAX);
}

/// A waiter blocked in acquire_timeout gets the permits of a SIGKILLed holder
/// within 100 ms of the kill (measured from the kill to the return of acquire_timeout
/// in the waiter, both on CLOCK_MONOTONIC; design bound: one 10 ms slice plus the
/// liveness check and scheduling).
#[test]
fn killed_holder_permits_come_back_within_100ms() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 2).unwrap();
    let p = path.to_str().unwrap();
    let mut holder = Proc::spawn("holder", &[p, "2"]);
    holder.expect("held");
    assert_eq!(s.value().unwrap(), 0);
    let mut waiter = Proc::spawn("waiter", &[p]);
    waiter.expect("busy");
    common::eventually(PATIENCE, "the waiter to register", || s.waiting() == 1);
    let killed_at = mono_ns();
    holder.kill();
    let line = waiter.expect_line(PATIENCE);
    let got_at: u64 = line.strip_prefix("got ").unwrap().parse().unwrap();
    waiter.wait_success();
    let after = Duration::from_nanos(got_at.saturating_sub(killed_at));
    eprintln!("waiter got a permit {after:?} after the kill");
    assert!(
        got_at > killed_at,
        "waiter got a permit before the holder died"
    );
    assert!(after < Duration::from_millis(100), "took {after:?}");
    holder.wait(PATIENCE);
    assert_eq!(s.value().unwrap(), 2);
}

/// Once every holder is dead, value() is back at the initial value.
#[test]
fn value_returns_to_initial_when_holders_die() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 3).unwrap();
    let p = path.to_str().unwrap();
    let mut a = Proc::spawn("holder", &[p, "2"]);
    a.expect("held");
    let mut b = Proc::spawn("holder", &[p, "1"]);
    b.expect("held");
    assert_eq!(s.value().unwrap(), 0);
    assert!(!s.try_acquire().unwrap());
    a.kill_and_reap();
    assert_eq!(s.value().unwrap(), 2);
    b.kill_and_reap();
    assert_eq!(s.value().unwrap(), 3);
    // try_acquire reclaims too.
    let mut c = Proc::spawn("holder", &[p, "3"]);
    c.expect("held");
    c.kill_and_reap();
    assert!(s.try_acquire().unwrap());
    assert_eq!(s.held().unwrap(), 1);
}

/// The initial value applies when the file is created; opening an existing semaphore
/// with another capacity is an error naming both values and changes nothing;
/// `open_existing` takes the stored capacity and never creates.
#[test]
fn initial_applies_only_on_creation() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let e = Semaphore::open_existing(&path).unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound), "{e}");
    assert_eq!(e.path(), path);
    assert!(!path.exists());
    let a = Semaphore::open(&path, 3).unwrap();
    assert_eq!(a.capacity(), 3);
    assert!(a.try_acquire().unwrap());
    let e = Semaphore::open(&path, 7).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("capacity 3") && msg.contains("the 7 asked for"),
        "{msg}"
    );
    let b = Semaphore::open_existing(&path).unwrap();
    assert_eq!(b.capacity(), 3);
    assert_eq!(b.value().unwrap(), 2);
    // Permits are the process's: another handle of it sees and returns them.
    assert_eq!(b.held().unwrap(), 1);
    b.release().unwrap();
    assert_eq!(a.value().unwrap(), 3);
}

/// Mode 0600 by default, the builder's mode otherwise.
#[test]
fn semaphore_file_mode() {
    let dir = common::tempdir();
    let p = dir.path().join("sem");
    Semaphore::open(&p, 1).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let q = dir.path().join("group");
    Semaphore::options()
        .mode(0o640)
        .initial(1)
        .open(&q)
        .unwrap();
    let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

/// Symlinks, garbage and other primitives' files are refused, untouched.
#[test]
fn refuses_symlinks_garbage_and_other_kinds() {
    let dir = common::tempdir();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("sem");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = Semaphore::open(&link, 1).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    assert_eq!(e.path(), link);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    let e = Semaphore::open(&target, 1).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(
        e.to_string().contains("not a fileipc semaphore file"),
        "{e}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    let m = dir.path().join("mutex");
    fileipc::Mutex::open(&m).unwrap();
    let e = Semaphore::open(&m, 1).unwrap_err();
    assert!(e.to_string().contains("it is a fileipc mutex file"), "{e}");

    // A truncated semaphore file is refused, not mapped short.
    let t = dir.path().join("truncated");
    Semaphore::open(&t, 1).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&t).unwrap();
    f.set_len(100).unwrap();
    let e = Semaphore::open(&t, 1).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
}

/// Threads of one process with their own handles share the process's permits.
#[test]
fn cloned_handles_in_threads_respect_the_count() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 2).unwrap();
    let inside = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.try_clone().unwrap();
            let inside = inside.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    let p = s.permit_timeout(PATIENCE).unwrap().unwrap();
                    let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(n < 2, "{} holders", n + 1);
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(p);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.value().unwrap(), 2);
    assert!(Path::new(&path).exists());
}

/// Hand-off: a release while processes wait gives the permit to the one that has waited
/// longest (no barging), and each then returns it to the next.
#[test]
fn release_hands_the_permit_to_the_longest_waiter() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 1).unwrap();
    assert!(s.try_acquire().unwrap());
    let p = path.to_str().unwrap();
    let mut first = Proc::spawn("waiter", &[p]);
    first.expect("busy");
    common::eventually(PATIENCE, "the first waiter to register", || {
        s.waiting() == 1
    });
    let mut second = Proc::spawn("waiter", &[p]);
    second.expect("busy");
    common::eventually(PATIENCE, "the second waiter to register", || {
        s.waiting() == 2
    });
    s.release().unwrap();
    let got = |w: &mut Proc| -> u64 {
        let line = w.expect_line(PATIENCE);
        line.strip_prefix("got ").unwrap().parse().unwrap()
    };
    let (t1, t2) = (got(&mut first), got(&mut second));
    assert!(t1 < t2, "the later waiter got the permit first");
    first.wait_success();
    second.wait_success();
    assert_eq!(s.value().unwrap(), 1);
    assert_eq!(s.held().unwrap(), 0);
    assert!(s.holders().unwrap().is_empty());
}

/// A permit handed to a waiter that was killed while waiting comes back: the next
/// waiter gets it within 100 ms (its bounded slice reclaims the dead waiter's entry).
#[test]
fn permit_handed_to_a_killed_waiter_comes_back_within_100ms() {
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = Semaphore::open(&path, 1).unwrap();
    assert!(s.try_acquire().unwrap());
    let p = path.to_str().unwrap();
    let mut doomed = Proc::spawn("waiter", &[p]);
    doomed.expect("busy");
    common::eventually(PATIENCE, "the first waiter to register", || {
        s.waiting() == 1
    });
    let mut next = Proc::spawn("waiter", &[p]);
    next.expect("busy");
    common::eventually(PATIENCE, "the second waiter to register", || {
        s.waiting() == 2
    });
    doomed.kill_and_reap();
    // The dead waiter is still the oldest in the queue: the release goes to it.
    let released_at = mono_ns();
    s.release().unwrap();
    let line = next.expect_line(PATIENCE);
    let got_at: u64 = line.strip_prefix("got ").unwrap().parse().unwrap();
    next.wait_success();
    let after = Duration::from_nanos(got_at.saturating_sub(released_at));
    eprintln!("the live waiter got the permit {after:?} after the release");
    assert!(after < Duration::from_millis(100), "took {after:?}");
    assert_eq!(s.value().unwrap(), 1);
    assert!(s.holders().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Deadlines behind a stopped process, and wake-ups.

/// Time this thread has spent on a CPU and runnable but waiting for one, in
/// nanoseconds (fields 1 and 2 of `/proc/thread-self/schedstat`); 0 where the kernel
/// does not report them. On a virtual machine, time the hypervisor took the virtual
/// CPU away (steal) counts as on a CPU.
fn cpu_and_run_queue_ns() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// This thread's page faults so far, minor plus major (`getrusage(RUSAGE_THREAD)`); 0
/// where the kernel does not report them. A write fault on a file mapping can sleep on
/// the kernel's locks or I/O: reported beside a late hand-over, so that such a sleep is
/// told from a lost wake-up.
fn page_faults() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(0, |u| {
        (u.minor_page_faults() + u.major_page_faults()).max(0) as u64
    })
}

/// Lost wake-up: 20,000 hand-overs of the one permit of a semaphore
/// from a releasing thread to a thread that starts `acquire_timeout` at about the same
/// moment (the release lands at varying points of the waiter's scan-then-sleep, which is
/// where the wake-up was lost). For each, how long the waiter still waited after both
/// `release` had returned (the permit free, or handed to it) and its call had begun,
/// minus the time it spent runnable but waiting for a CPU and the time it spent on a CPU
/// during the call: the time it slept. None may have slept >= 5 ms. Before the fix a
/// waiter that had scanned but not yet slept when the permit went back to the pool
/// slept out its 10 ms slice.
///
/// Not counted: the time a stall of the machine (`common::stalls`: the host not running
/// the virtual CPU) covers the hand-over on the CPU the waiter ran on after it. Such
/// stalls are invisible to the guest, which counts them as the waiter's sleep: a waiter
/// woken on a stalled virtual CPU looks asleep with the permit free. On the 2-vCPU test
/// machine this test failed in 2 of 7 fresh-clone CI runs with one hand-over each
/// (7.1 ms by the old measure, then 15.3 ms asleep with 26 us on a CPU), and the probe,
/// idle, saw 19 stalls of 5-9.4 ms a minute.
#[test]
fn no_waiter_sleeps_with_a_permit_free() {
    const ROUNDS: usize = 20_000;
    const LATE: Duration = Duration::from_millis(5);
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let releaser = Semaphore::open(&path, 1).unwrap();
    let waiter = Semaphore::open(&path, 1).unwrap();
    // The process holds the one permit at the start of every round: the releaser returns
    // it, the waiter takes it back for the process.
    assert!(releaser.try_acquire().unwrap());
    let barrier = std::sync::Barrier::new(2);
    let released_at = std::sync::atomic::AtomicU64::new(0);
    let probe = common::stalls::StallProbe::start();
    let mut rounds = Vec::new();
    std::thread::scope(|sc| {
        let w = sc.spawn(|| {
            let mut rounds = Vec::new();
            for _ in 0..ROUNDS {
                barrier.wait();
                let faults0 = page_faults();
                let (cpu0, rq0) = cpu_and_run_queue_ns();
                let called = mono_ns();
                assert!(waiter.acquire_timeout(PATIENCE).unwrap());
                let got = mono_ns();
                let on = rustix::thread::sched_getcpu();
                let (cpu1, rq1) = cpu_and_run_queue_ns();
                let faults = page_faults() - faults0;
                barrier.wait(); // the releaser has stored its time
                // From the later of the call and the end of the release.
                let from = called.max(released_at.load(std::sync::atomic::Ordering::SeqCst));
                rounds.push(Round {
                    from,
                    got,
                    run_queue: rq1 - rq0,
                    on_cpu: cpu1 - cpu0,
                    faults,
                    cpu: on,
                });
            }
            rounds
        });
        // A cheap pseudo-random delay of 0-63 us before each release.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..ROUNDS {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let delay = Duration::from_micros(u64::from(x % 64));
            barrier.wait();
            let t = std::time::Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
            releaser.release().unwrap();
            released_at.store(mono_ns(), std::sync::atomic::Ordering::SeqCst);
            barrier.wait();
        }
        rounds = w.join().unwrap();
    });
    let stalls = probe.finish();
    let nanos = Duration::from_nanos;
    let asleep = |r: &Round| {
        nanos(
            r.got
                .saturating_sub(r.from)
                .saturating_sub(r.run_queue)
                .saturating_sub(r.on_cpu),
        )
    };
    let stalled = |r: &Round| nanos(stalls.overlap(r.cpu, r.from, r.got));
    let (excused, slow): (Vec<&Round>, Vec<&Round>) = rounds
        .iter()
        .filter(|r| asleep(r) >= LATE)
        .partition(|r| asleep(r).saturating_sub(stalled(r)) < LATE);
    let show = |rs: &[&Round]| {
        rs.iter()
            .take(5)
            .map(|r| {
                format!(
                    "asleep {:?} (waited {:?} less {:?} in the run queue, {:?} on a CPU), \
                     {} page faults, on CPU {}, {:?} of it stalled",
                    asleep(r),
                    nanos(r.got.saturating_sub(r.from)),
                    nanos(r.run_queue),
                    nanos(r.on_cpu),
                    r.faults,
                    r.cpu,
                    stalled(r)
                )
            })
            .collect::<Vec<_>>()
    };
    let worst = rounds.iter().map(asleep).max().unwrap();
    eprintln!(
        "{ROUNDS} hand-overs: worst {worst:?} asleep after the release; {} asleep >= \
         {LATE:?}, {} of them excused by a stall of their CPU {:#?}; the probes (real-time \
         priority: {}) saw {} stalls >= {:?}, the longest {:?}",
        excused.len() + slow.len(),
        excused.len(),
        show(&excused),
        stalls.realtime,
        stalls.stalls.len(),
        common::stalls::MIN_STALL,
        nanos(stalls.longest()),
    );
    assert!(
        slow.is_empty(),
        "{} of {ROUNDS} waiters slept >= {LATE:?} with the permit free, not counting stalls \
         of the machine (first five: {:#?})",
        slow.len(),
        show(&slow)
    );
    assert_eq!((waiter.held().unwrap(), waiter.value().unwrap()), (1, 0));
}

/// One hand-over of [`no_waiter_sleeps_with_a_permit_free`]: from the later of the call
/// and the release's return to the acquire's return (monotonic ns), the waiter's time in
/// the run queue and on a CPU meanwhile (ns), its page faults, and the CPU it ran on
/// after.
struct Round {
    from: u64,
    got: u64,
    run_queue: u64,
    on_cpu: u64,
    faults: u64,
    cpu: usize,
}

/// Child: takes the semaphore's critical section the way the library does (see
/// `common::take_sem_lock_word`), reports, and keeps it until killed.
fn lock_word_holder(args: &[String]) {
    let _held = common::take_sem_lock_word(Path::new(&args[0]));
    say("locked");
    loop {
        std::thread::park();
    }
}

/// Runs `f` on its own thread; its result and how long it took, or `None` if it has not
/// returned within 5 s (the thread is then left blocked).
fn timed<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<(T, std::time::Duration)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let r = f();
        let _ = tx.send((r, t.elapsed()));
    });
    rx.recv_timeout(Duration::from_secs(5)).ok()
}

/// A process stopped (SIGSTOP) inside the semaphore's critical section
/// does not make `try_acquire`, `acquire_timeout` or `value` wait past their bounds
/// (`try_acquire` and `value`: 10 ms to enter the critical section; `acquire_timeout`:
/// its timeout). Each call is timed on its own thread; the assertions allow 400 ms of
/// scheduling slack on a loaded machine, against the unbounded wait before the fix.
#[test]
fn a_stopped_process_in_the_critical_section_does_not_hold_up_deadlines() {
    const SLACK: Duration = Duration::from_millis(400);
    let dir = common::tempdir();
    let path = dir.path().join("sem");
    let s = std::sync::Arc::new(Semaphore::open(&path, 1).unwrap());
    let mut child = Proc::spawn("lock_word_holder", &[path.to_str().unwrap()]);
    child.expect("locked");
    common::signal(child.pid, rustix::process::Signal::STOP);
    let mut failures = Vec::new();
    let mut check = |what: &str, r: Option<(String, Duration)>, want: &str, bound: Duration| match r
    {
        Some((got, took)) => {
            eprintln!("{what}: {got} after {took:?}");
            if took >= bound || got != want {
                failures.push(format!(
                    "{what}: {got} after {took:?} (want {want} within {bound:?})"
                ));
            }
        }
        None => failures.push(format!("{what}: still blocked after 5 s")),
    };
    let s1 = s.clone();
    let r = timed(move || format!("{:?}", s1.try_acquire().map_err(|e| e.to_string())));
    check("try_acquire()", r, "Ok(false)", SLACK);
    let s1 = s.clone();
    let r = timed(move || {
        format!(
            "{:?}",
            s1.acquire_timeout(Duration::from_millis(100))
                .map_err(|e| e.to_string())
        )
    });
    check(
        "acquire_timeout(100 ms)",
        r,
        "Ok(false)",
        Duration::from_millis(100) + SLACK,
    );
    let s1 = s.clone();
    let r = timed(move || format!("{:?}", s1.value().map_err(|e| e.to_string())));
    check("value()", r, "Ok(1)", SLACK);
    // Once the stopped process is gone (killed inside the critical section), its lock is
    // taken over and the permit is there (and any blocked call ends).
    common::signal(child.pid, rustix::process::Signal::CONT);
    child.kill_and_reap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(s.try_acquire().unwrap());
    assert_eq!((s.held().unwrap(), s.value().unwrap()), (1, 0));
}

/// Child: takes one permit of the semaphore `args[0]` (created with `args[1]`), reports
/// "got" (or the error), and holds it until the file `args[2]` exists (polled: 300
/// inotify watches would exceed the default limit of instances per user).
fn hold_until(args: &[String]) {
    let s = Semaphore::open(&args[0], args[1].parse().unwrap()).unwrap();
    match s.acquire_timeout(PATIENCE) {
        Ok(true) => say("got"),
        Ok(false) => say("timed out"),
        Err(e) => say(format!("error: {e}")),
    }
    common::eventually(PATIENCE, "the done file", || Path::new(&args[2]).exists());
}

/// 300 processes (more than the 248 slots of the holder table; threads of one process
/// share a slot, so processes) hold a permit each at the same time on a semaphore of 300:
/// all acquire, none fails with "holder table full" while permits are free.
#[test]
fn three_hundred_processes_hold_permits_at_once() {
    let dir = common::tempdir();
    let sem = dir.path().join("sem");
    let done = dir.path().join("done");
    let (p, d) = (sem.to_str().unwrap(), done.to_str().unwrap());
    let mut kids: Vec<Proc> = (0..300)
        .map(|_| Proc::spawn("hold_until", &[p, "300", d]))
        .collect();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for k in &mut kids {
        *outcomes.entry(k.expect_line(PATIENCE)).or_default() += 1;
    }
    let s = Semaphore::open(&sem, 300).unwrap();
    let value = s.value().unwrap();
    let holders: u32 = s.holders().unwrap().iter().map(|h| h.permits).sum();
    std::fs::write(&done, b"").unwrap();
    for k in &mut kids {
        k.wait_success();
    }
    assert_eq!(outcomes, [("got".to_owned(), 300)].into(), "{outcomes:?}");
    assert_eq!((value, holders), (0, 300));
    common::eventually(PATIENCE, "every permit back", || s.value().unwrap() == 300);
}
