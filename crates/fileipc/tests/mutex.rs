//! Mutex across real processes and threads.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::measure::mono_ns;
use common::{PATIENCE, Proc, say};
use fileipc::{Error, Mutex};

/// Runs a test body (a function of `word: bool`) once per ownership mode, as
/// `<name>::flock` and `<name>::word`. The body creates the lock file in that mode with
/// [`create`] first; every handle opened on it afterwards, in children too, uses the
/// file's mode.
macro_rules! in_both_modes {
    ($name:ident) => {
        mod $name {
            #[test]
            fn flock() {
                super::$name(false)
            }
            #[test]
            fn word() {
                super::$name(true)
            }
        }
    };
}

/// Creates the lock file at `lock` in word mode or flock mode.
fn create(lock: &Path, word: bool) {
    let m = Mutex::options().flock_compatible(!word).open(lock).unwrap();
    assert_eq!(m.is_flock_compatible(), !word);
}

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "counter" => counter(&args),
        "holder" => holder(&args),
        "waiter" => waiter(&args),
        "drop-holder" => drop_holder(&args),
        "blocked-waiter" => blocked_waiter(&args),
        other => panic!("unknown role {other}"),
    });
}

/// Adds one to the decimal number in `path` by reading and rewriting the file: a
/// read-modify-write that loses updates unless callers exclude each other.
fn bump(path: &Path) {
    let n: u64 = std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(path, format!("{}\n", n + 1)).unwrap();
}

fn read_counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Child: `n` lock/increment/unlock cycles, through every locking entry point.
fn counter(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let file = Path::new(&args[1]);
    let n: u32 = args[2].parse().unwrap();
    say("ready");
    for i in 0..n {
        match i % 4 {
            0 => {
                assert!(m.lock_timeout(PATIENCE).unwrap());
                bump(file);
                m.unlock().unwrap();
            }
            1 => {
                let g = m.guard_forever().unwrap();
                bump(file);
                drop(g);
            }
            2 => {
                if !m.try_lock().unwrap() {
                    assert!(m.lock_timeout(PATIENCE).unwrap());
                }
                bump(file);
                m.unlock().unwrap();
            }
            _ => {
                let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
                bump(file);
                g.unlock().unwrap();
            }
        }
    }
    say("done");
}

/// Child: takes the lock, reports, and holds it until killed.
fn holder(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    assert!(m.lock().unwrap());
    say("locked");
    loop {
        std::thread::park();
    }
}

/// Child: finds the lock taken, then waits for it and reports when it got it.
fn waiter(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    assert!(!m.try_lock().unwrap(), "the holder should hold the lock");
    say("busy");
    assert!(m.lock_timeout(PATIENCE).unwrap());
    let t = mono_ns();
    say(format!("locked {t}"));
    m.unlock().unwrap();
}

/// Child: locks, then once the file `args[1]` exists drops the handle (without
/// unlocking) and keeps running.
fn drop_holder(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    assert!(m.lock().unwrap());
    say("locked");
    let go = Path::new(&args[1]);
    common::eventually(PATIENCE, "the go file", || go.exists());
    drop(m);
    say("dropped");
    loop {
        std::thread::park();
    }
}

/// 4 processes x 5,000 cycles on a counter file end at exactly 20,000.
fn four_processes_count_exactly(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let file = dir.path().join("counter");
    std::fs::write(&file, "0\n").unwrap();
    let (l, f) = (lock.to_str().unwrap(), file.to_str().unwrap());
    let mut kids: Vec<Proc> = (0..4)
        .map(|_| Proc::spawn("counter", &[l, f, "5000"]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.expect("done");
        k.wait_success();
    }
    assert_eq!(read_counter(&file), 20_000);
    assert!(!Mutex::open(&lock).unwrap().is_locked().unwrap());
}
in_both_modes!(four_processes_count_exactly);

/// Threads sharing one handle and threads with their own (cloned)
/// handles, plus a child process, all exclude each other.
fn threads_sharing_and_cloning_handles_exclude_each_other(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let file = dir.path().join("counter");
    std::fs::write(&file, "0\n").unwrap();
    let mut kid = Proc::spawn(
        "counter",
        &[lock.to_str().unwrap(), file.to_str().unwrap(), "1000"],
    );
    let shared = Arc::new(Mutex::open(&lock).unwrap());
    let mut threads = Vec::new();
    for i in 0..6 {
        let m = if i % 2 == 0 {
            Arc::clone(&shared)
        } else {
            Arc::new(shared.try_clone().unwrap())
        };
        let file = file.clone();
        threads.push(std::thread::spawn(move || {
            for _ in 0..500 {
                let g = m.guard_timeout(PATIENCE).unwrap().expect("lock in time");
                bump(&file);
                drop(g);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    kid.expect("ready");
    kid.expect("done");
    kid.wait_success();
    assert_eq!(read_counter(&file), 6 * 500 + 1000);
}
in_both_modes!(threads_sharing_and_cloning_handles_exclude_each_other);

/// SIGKILL the holder; a blocked waiter gets the lock within 100 ms of the
/// kill. Measured from the kill to the moment `lock_timeout` returned in the waiter
/// (both on CLOCK_MONOTONIC). Design bound: one 10 ms wait slice plus scheduling; the
/// 100 ms the issue demands leaves room for a loaded CI machine.
fn killed_holder_releases_within_100ms(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let l = lock.to_str().unwrap();
    let mut holder = Proc::spawn("holder", &[l]);
    holder.expect("locked");
    let m = Mutex::open(&lock).unwrap();
    assert!(m.is_locked().unwrap());
    assert_eq!(m.holder().unwrap().map(|h| h.pid), Some(holder.pid));
    let mut waiter = Proc::spawn("waiter", &[l]);
    waiter.expect("busy");
    // Kill only once the waiter is blocked in the wait loop (registered as a waiter),
    // so that this measures the dead-holder path, not a fresh lock attempt.
    common::eventually(PATIENCE, "the waiter to register", || m.waiting() == 1);
    let killed_at = mono_ns();
    holder.kill();
    let line = waiter.expect_line(PATIENCE);
    let got_at: u64 = line.strip_prefix("locked ").unwrap().parse().unwrap();
    waiter.wait_success();
    let after = Duration::from_nanos(got_at.saturating_sub(killed_at));
    eprintln!("waiter got the lock {after:?} after the kill");
    assert!(
        got_at > killed_at,
        "waiter got the lock before the holder died"
    );
    assert!(after < Duration::from_millis(100), "took {after:?}");
    holder.wait(PATIENCE);
    assert!(!m.is_locked().unwrap());
    assert_eq!(m.holder().unwrap(), None);
}
in_both_modes!(killed_holder_releases_within_100ms);

/// A killed holder's lock is free for a `try_lock` at once
/// (kernel-released, not a timeout guess).
fn killed_holder_lock_is_free_immediately(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let mut holder = Proc::spawn("holder", &[lock.to_str().unwrap()]);
    holder.expect("locked");
    let m = Mutex::open(&lock).unwrap();
    assert!(!m.try_lock().unwrap());
    holder.kill_and_reap();
    assert!(m.try_lock().unwrap());
    assert_eq!(m.holder().unwrap().map(|h| h.pid), Some(std::process::id()));
    m.unlock().unwrap();
}
in_both_modes!(killed_holder_lock_is_free_immediately);

/// Unlocking without holding is an error naming the path.
fn unlock_without_holding_is_an_error(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let a = Mutex::open(&lock).unwrap();
    let b = Mutex::open(&lock).unwrap();
    let e = a.unlock().unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert_eq!(e.path(), lock);
    assert!(e.to_string().contains("does not hold"), "{e}");
    assert!(a.lock().unwrap());
    // Another handle (in the same process) does not hold it either.
    assert!(matches!(b.unlock(), Err(Error::Invalid { .. })));
    a.unlock().unwrap();
    assert!(matches!(a.unlock(), Err(Error::Invalid { .. })));
    // A guard's consuming unlock reports the error if the lock was released behind it.
    let g = a.try_guard().unwrap().unwrap();
    a.unlock().unwrap();
    assert!(g.unlock().is_err());
}
in_both_modes!(unlock_without_holding_is_an_error);

/// Dropping a handle that holds the lock releases it, in this process and in
/// another one (which keeps running).
fn dropping_a_holding_handle_releases(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let a = Mutex::open(&lock).unwrap();
    let b = Mutex::open(&lock).unwrap();
    assert!(a.try_lock().unwrap());
    assert!(!b.try_lock().unwrap());
    drop(a);
    assert!(b.try_lock().unwrap());
    b.unlock().unwrap();

    let go = dir.path().join("go");
    let mut kid = Proc::spawn(
        "drop-holder",
        &[lock.to_str().unwrap(), go.to_str().unwrap()],
    );
    kid.expect("locked");
    assert!(!b.try_lock().unwrap());
    std::fs::write(&go, b"").unwrap();
    kid.expect("dropped");
    assert!(b.try_lock().unwrap());
    b.unlock().unwrap();
}
in_both_modes!(dropping_a_holding_handle_releases);

/// Timeouts: a held lock makes the other handle's lock_timeout return false, not err.
fn lock_timeout_returns_false_while_held_elsewhere(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let mut holder = Proc::spawn("holder", &[lock.to_str().unwrap()]);
    holder.expect("locked");
    let m = Mutex::open(&lock).unwrap();
    assert!(!m.try_lock().unwrap());
    assert!(!m.lock_timeout(Duration::from_millis(30)).unwrap());
    assert!(!m.lock_deadline(std::time::Instant::now()).unwrap());
    assert!(m.try_guard().unwrap().is_none());
    assert!(m.is_locked().unwrap());
}
in_both_modes!(lock_timeout_returns_false_while_held_elsewhere);

/// Mode 0600 by default, the builder's mode otherwise.
#[test]
fn lock_file_mode() {
    let dir = common::tempdir();
    let p = dir.path().join("lock");
    Mutex::open(&p).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let q = dir.path().join("group");
    Mutex::options().mode(0o660).open(&q).unwrap();
    let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

/// Symlinks, garbage and other primitives' files are refused, untouched.
#[test]
fn refuses_symlinks_garbage_and_other_kinds() {
    let dir = common::tempdir();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("lock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = Mutex::open(&link).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    let e = Mutex::open(&target).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(e.to_string().contains("not a fileipc mutex file"), "{e}");
    assert_eq!(e.path(), target);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    // An empty file that group or others may write is not trusted, and not adopted.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = Mutex::open(&empty).unwrap_err();
    assert!(e.to_string().contains("writable by"), "{e}");
    assert_eq!(std::fs::read(&empty).unwrap(), b"");

    let sem = dir.path().join("sem");
    fileipc::Semaphore::open(&sem, 1).unwrap();
    let e = Mutex::open(&sem).unwrap_err();
    assert!(
        e.to_string().contains("it is a fileipc semaphore file"),
        "{e}"
    );

    let d = dir.path().join("a-directory");
    std::fs::create_dir(&d).unwrap();
    assert!(Mutex::open(&d).is_err());
}

/// Child: waits for the lock without limit (the test kills it while it waits).
fn blocked_waiter(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    say("waiting");
    let _ = m.lock_forever();
    say("locked");
}

/// Spawns `n` waiter processes behind the lock that `holder` holds, and returns once
/// all of them are registered as waiting.
fn registered_waiters(lock: &Path, holder: &Mutex, n: u32) -> Vec<Proc> {
    let kids: Vec<Proc> = (0..n)
        .map(|_| Proc::spawn("blocked-waiter", &[lock.to_str().unwrap()]))
        .collect();
    common::eventually(PATIENCE, "the waiters to register", || {
        holder.waiting() == n
    });
    kids
}

/// A waiter killed while waiting stops counting at once: `waiting()` (what `stat`
/// shows) reads 0 within 100 ms of the kills.
fn killed_waiters_stop_counting_within_100_ms(word: bool) {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let m = Mutex::open(&lock).unwrap();
    assert!(m.lock().unwrap());
    let mut kids = registered_waiters(&lock, &m, 3);
    for k in &mut kids {
        k.kill_and_reap();
    }
    let t = std::time::Instant::now();
    common::eventually(PATIENCE, "the killed waiters to stop counting", || {
        m.waiting() == 0
    });
    let took = t.elapsed();
    eprintln!("waiters counted 0 after {took:?}");
    assert!(took < Duration::from_millis(100), "took {took:?}");
    m.unlock().unwrap();
}
in_both_modes!(killed_waiters_stop_counting_within_100_ms);

/// After a waiter was killed while waiting, no locker sleeps on a free lock: in 10,000
/// lock/unlock cycles of two threads with their own handles, the lock never stays free
/// for a whole wait slice (10 ms) while one of them waits. (A waiter counted after its
/// death made every unlock post a hand-off that barred newcomers, then withdraw it
/// without waking them: they slept out their slice on a free lock.)
fn no_locker_sleeps_on_a_free_lock_after_a_killed_waiter(word: bool) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, word);
    let m = Mutex::open(&lock).unwrap();
    assert!(m.lock().unwrap());
    let mut kids = registered_waiters(&lock, &m, 1);
    kids[0].kill_and_reap();
    m.unlock().unwrap();
    let released = Arc::new(AtomicU64::new(mono_ns()));
    let worst = Arc::new(AtomicU64::new(0));
    let over_1ms = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (lock, released, worst, over_1ms) = (
                lock.clone(),
                released.clone(),
                worst.clone(),
                over_1ms.clone(),
            );
            std::thread::spawn(move || {
                let m = Mutex::open(&lock).unwrap();
                for _ in 0..5_000 {
                    let asked = mono_ns();
                    assert!(m.lock_timeout(PATIENCE).unwrap());
                    let got = mono_ns();
                    // How long the lock sat free while this locker waited for it.
                    let free_since = released.load(Ordering::SeqCst).max(asked);
                    let gap = got.saturating_sub(free_since);
                    worst.fetch_max(gap, Ordering::Relaxed);
                    if gap > 1_000_000 {
                        over_1ms.fetch_add(1, Ordering::Relaxed);
                    }
                    released.store(mono_ns(), Ordering::SeqCst);
                    m.unlock().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let worst = Duration::from_nanos(worst.load(Ordering::Relaxed));
    let over = over_1ms.load(Ordering::Relaxed);
    eprintln!("10,000 cycles: worst free-while-waiting {worst:?}, {over} over 1 ms");
    assert!(
        worst < Duration::from_millis(8),
        "a locker slept {worst:?} on a free lock ({over} cycles over 1 ms)"
    );
    assert_eq!(m.waiting(), 0);
}
in_both_modes!(no_locker_sleeps_on_a_free_lock_after_a_killed_waiter);

/// An empty lock file (as `touch` and `flock(1)` leave them) is adopted in place: same
/// inode, owner and mode, now a mutex file. Adopters racing on one empty file (threads
/// with handles of their own, each its own open file description, released together;
/// then processes) all open it, and their lock/increment/unlock cycles count exactly:
/// no adopter rewrote a file another had adopted and put to use.
#[test]
fn an_empty_lock_file_is_adopted_once_by_racing_openers() {
    use std::os::unix::fs::MetadataExt;
    let dir = common::tempdir();
    for round in 0..20 {
        let lock = dir.path().join(format!("lock{round}"));
        std::fs::write(&lock, b"").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        let inode = std::fs::metadata(&lock).unwrap().ino();
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let inside = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (lock, counter, inside, start) =
                    (lock.clone(), counter.clone(), inside.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let m = Mutex::open(&lock).unwrap();
                    for _ in 0..50 {
                        assert!(m.lock_timeout(PATIENCE).unwrap());
                        assert!(!inside.swap(true, std::sync::atomic::Ordering::SeqCst));
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        inside.store(false, std::sync::atomic::Ordering::SeqCst);
                        m.unlock().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 400);
        let meta = std::fs::metadata(&lock).unwrap();
        assert_eq!((meta.ino(), meta.mode() & 0o777), (inode, 0o644));
        assert_eq!(meta.len(), 256);
        assert_eq!(&std::fs::read(&lock).unwrap()[..8], b"FILEIPC\0");
    }

    let lock = dir.path().join("lock");
    let file = dir.path().join("counter");
    std::fs::write(&lock, b"").unwrap();
    std::fs::write(&file, "0\n").unwrap();
    let (l, f) = (lock.to_str().unwrap(), file.to_str().unwrap());
    let mut kids: Vec<Proc> = (0..4)
        .map(|_| Proc::spawn("counter", &[l, f, "500"]))
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        k.expect("done");
        k.wait_success();
    }
    assert_eq!(read_counter(&file), 2_000);
}

/// An opener that found the lock file empty, and waits for the adoption lock while
/// another adopter (here: the test, holding that lock) adopts the file and puts it to
/// use, writes nothing once it gets the lock: the file keeps what the first adopter
/// wrote (a doorbell value of 77 stands for "in use").
#[test]
fn a_late_adopter_does_not_rewrite_an_adopted_file() {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    use std::os::unix::fs::FileExt;
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    std::fs::write(&lock, b"").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    let blocker = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
        .unwrap();
    // The adoption lock: an open-file-description lock on byte 2^40 - 1 (FORMAT.md).
    let byte = |kind: libc::c_int| libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: (1i64 << 40) - 1,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(&blocker, FcntlArg::F_OFD_SETLK(&byte(libc::F_WRLCK))).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let opener = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            Mutex::open(&lock)
        })
    };
    let tid = rx.recv().unwrap();
    let in_fcntl = format!("{} ", libc::SYS_fcntl);
    common::eventually(PATIENCE, "the opener to wait for the adoption lock", || {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
            .is_ok_and(|s| s.starts_with(&in_fcntl))
    });

    let mut region = [0u8; 256];
    region[..8].copy_from_slice(b"FILEIPC\0");
    region[8..12].copy_from_slice(&1u32.to_le_bytes()); // kind: mutex
    region[12..16].copy_from_slice(&3u32.to_le_bytes()); // version
    region[16..20].copy_from_slice(&256u32.to_le_bytes()); // length
    region[64..68].copy_from_slice(&77u32.to_le_bytes()); // doorbell
    region[96..104].copy_from_slice(&5u64.to_le_bytes()); // fence counter, seeded
    blocker.write_all_at(&region, 0).unwrap();
    fcntl(&blocker, FcntlArg::F_OFD_SETLK(&byte(libc::F_UNLCK))).unwrap();

    let m = opener.join().unwrap().unwrap();
    // All as the first adopter left it but the owner id counter (offset 20), which the
    // late opener's registration advanced.
    let now = std::fs::read(&lock).unwrap();
    assert_eq!(now.len(), 256);
    assert_eq!(
        (&now[..20], &now[24..]),
        (&region[..20], &region[24..]),
        "the file was rewritten"
    );
    assert!(m.try_lock().unwrap());
    m.unlock().unwrap();
}

/// A lock file adopted from an empty file gets its fence counter seeded from the clock,
/// as a created one does; a version 2 file (no counter) is refused naming its version.
#[test]
fn adopted_file_fences_start_from_the_clock_and_version_2_is_refused() {
    use std::os::unix::fs::FileExt;
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    std::fs::File::create(&lock).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let m = Mutex::open(&lock).unwrap();
    let f = m.guard_forever().unwrap().fence();
    assert!(
        f > before,
        "fence {f} not seeded from the clock ({before} ns)"
    );
    drop(m);

    let old = dir.path().join("old");
    let mut region = [0u8; 256];
    region[..8].copy_from_slice(b"FILEIPC\0");
    region[8..12].copy_from_slice(&1u32.to_le_bytes()); // kind: mutex
    region[12..16].copy_from_slice(&2u32.to_le_bytes()); // version
    region[16..20].copy_from_slice(&256u32.to_le_bytes()); // length
    std::fs::File::create(&old)
        .unwrap()
        .write_all_at(&region, 0)
        .unwrap();
    let e = Mutex::open(&old).unwrap_err();
    assert!(e.to_string().contains("format version 2"), "{e}");
}

/// Writes a 256-byte mutex file of format `version` with `mode` in the mode field.
fn write_mutex_file(path: &Path, version: u32, mode: u32) {
    use std::os::unix::fs::FileExt;
    let mut region = [0u8; 256];
    region[..8].copy_from_slice(b"FILEIPC\0");
    region[8..12].copy_from_slice(&1u32.to_le_bytes()); // kind: mutex
    region[12..16].copy_from_slice(&version.to_le_bytes());
    region[16..20].copy_from_slice(&256u32.to_le_bytes()); // length
    region[104..108].copy_from_slice(&mode.to_le_bytes());
    let f = std::fs::File::create(path).unwrap();
    f.write_all_at(&region, 0).unwrap();
}

/// A version 3 file (the previous format) is opened as it is, in flock mode, whatever
/// the options ask: its version stays 3, so older binaries still open it. A file with
/// an unknown ownership mode is refused.
#[test]
fn version_3_files_open_in_flock_mode_and_unknown_modes_are_refused() {
    let dir = common::tempdir();
    let old = dir.path().join("old");
    write_mutex_file(&old, 3, 0);
    let a = Mutex::options().flock_compatible(false).open(&old).unwrap();
    let b = Mutex::open(&old).unwrap();
    assert!(a.is_flock_compatible() && b.is_flock_compatible());
    assert!(a.try_lock().unwrap());
    assert!(!b.try_lock().unwrap());
    a.unlock().unwrap();
    assert!(b.try_lock().unwrap());
    b.unlock().unwrap();
    assert_eq!(std::fs::read(&old).unwrap()[12..16], 3u32.to_le_bytes());

    let bad = dir.path().join("bad");
    write_mutex_file(&bad, 4, 7);
    let e = Mutex::open(&bad).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(e.to_string().contains("unknown ownership mode 7"), "{e}");
}

/// The mode is the file's: a word-mode file stays in word mode for every opener, a
/// flock-mode file in flock mode, and an empty file (a `flock(1)` lock file) is adopted
/// in flock mode even when word mode is asked for.
#[test]
fn the_ownership_mode_is_the_files() {
    let dir = common::tempdir();
    let w = dir.path().join("w");
    create(&w, true);
    assert!(!Mutex::open(&w).unwrap().is_flock_compatible());
    assert_eq!(std::fs::read(&w).unwrap()[12..16], 4u32.to_le_bytes());
    let f = dir.path().join("f");
    create(&f, false);
    let opened = Mutex::options().flock_compatible(false).open(&f).unwrap();
    assert!(opened.is_flock_compatible());
    let empty = dir.path().join("empty");
    std::fs::File::create(&empty).unwrap();
    let adopted = Mutex::options()
        .flock_compatible(false)
        .open(&empty)
        .unwrap();
    assert!(adopted.is_flock_compatible());
}

/// Word mode: a holder's lock, shared with a child program, stays held while the child
/// runs after the holder unlocked and dropped its handle (the handle's owner id lives
/// on the inherited descriptor), and is taken over once the child is gone.
#[test]
fn word_mode_lock_shared_with_a_child_lives_as_long_as_the_child() {
    let dir = common::tempdir();
    let lock = dir.path().join("lock");
    create(&lock, true);
    let m = Mutex::open(&lock).unwrap();
    m.lock_forever().unwrap();
    m.share_with_children().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    m.unlock().unwrap();
    drop(m);
    let other = Mutex::open(&lock).unwrap();
    assert!(other.is_locked().unwrap());
    assert!(!other.lock_timeout(Duration::from_millis(50)).unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(other.lock_timeout(PATIENCE).unwrap());
    other.unlock().unwrap();
}
