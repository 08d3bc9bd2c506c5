//! Ownership where `/proc` cannot tell who is alive. For the semaphore, the queue's
//! producer and consumer locks, the mutex (its lock and its waiter registry) and
//! SharedData's request board, a holder is never taken for dead while it lives, and what
//! it held is recovered within 100 ms after it is SIGKILLed:
//!
//! - *PID namespace*: the holder runs under `unshare --pid --fork --mount-proc` (a
//!   container on a shared volume). The PIDs and thread IDs it knows itself by name
//!   nothing, or an unrelated process, in the checker's namespace.
//! - *hidepid*: the checker runs as another user (uid 61001; the files' group, 61000, as
//!   a supplementary group) under a `/proc` mounted with `hidepid=2`, so it cannot see
//!   the holder's `/proc` entry at all.
//!
//! One test per primitive and scenario, all driven by [`run`]. The parent creates the
//! primitive (mode `0o660`, in a set-group-ID directory of group 61000), starts the
//! holder, then a checker process. For each *stage* (a holder to outlive; the mutex has
//! two) the checker watches the holder's hold for at least 300 ms and says `respected`
//! (or `stolen: ...`), says `waiting` as it starts the call that needs what the holder
//! has, and `recovered T` when that call got it (T: `CLOCK_MONOTONIC` in ns, the same
//! clock in every PID namespace). The parent sees no line for 200 ms more (the call is
//! still blocked), SIGKILLs the holder process itself (in a PID namespace: the child of
//! `unshare`, by its PID here), and checks that T falls within 100 ms after the kill.
//!
//! Needs root (CI runs as root): without it each test is skipped ([`common::skip`], a
//! failure under `FILEIPC_REQUIRE_ROOT_TESTS`).

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{TryRecvError, channel};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{MessageQueue, Mutex, QueueOptions, Semaphore, SharedData};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "hold" => hold(&args),
        "wait_mutex" => wait_mutex(&args),
        "check" => check(&args),
        other => panic!("unknown role {other}"),
    });
}

/// How long the checker watches a live holder's hold before it starts waiting for it.
const WATCH: Duration = Duration::from_millis(300);
/// The checker's pace while watching.
const PROBE: Duration = Duration::from_millis(10);
/// How long the parent sees the checker's waiting call still blocked before the kill.
const STILL_BLOCKED: Duration = Duration::from_millis(200);
/// The recovery bound: from the SIGKILL of the holder to the checker's call returning.
const RECOVERY: Duration = Duration::from_millis(100);
/// How long the checker's waiting call may take before the checker reports it failed
/// (far beyond [`RECOVERY`], so that the figure is reported rather than a timeout).
const GIVE_UP: Duration = Duration::from_secs(5);

/// The user the checker becomes under `hidepid=2` (any unused ID does) and the group the
/// files are shared with. Not group 0: `hidepid` exempts the members of its `gid=` group,
/// which is 0 when the mount names none.
const OTHER_UID: u32 = 61_001;
const SHARED_GID: u32 = 61_000;

/// Runs a role in a new PID namespace, as its init, with a `/proc` of that namespace;
/// the role dies with the `unshare` process.
const PID_NAMESPACE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];
/// Runs a role in a new mount namespace whose `/proc` is mounted with `hidepid=2`.
const HIDEPID: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -t proc -o hidepid=2 proc /proc && exec \"$0\" \"$@\"",
];

/// Queue control file offsets (docs/FORMAT.md, "Common header" and "Control file").
const VERSION: u64 = 12;
const P_LOCK: u64 = 128;
const C_LOCK: u64 = 256;

/// Board layout (docs/FORMAT.md, "SharedData request board").
const SLOTS: usize = 64;
const SLOTS_AT: u64 = 128;
const SLOT_LEN: usize = 256;
const SLOT_OWNER: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Primitive {
    Semaphore,
    Producer,
    Consumer,
    Mutex,
    Board,
}

impl Primitive {
    const ALL: [Primitive; 5] = [
        Primitive::Semaphore,
        Primitive::Producer,
        Primitive::Consumer,
        Primitive::Mutex,
        Primitive::Board,
    ];

    fn name(self) -> &'static str {
        match self {
            Primitive::Semaphore => "semaphore",
            Primitive::Producer => "producer",
            Primitive::Consumer => "consumer",
            Primitive::Mutex => "mutex",
            Primitive::Board => "board",
        }
    }

    fn from_name(name: &str) -> Primitive {
        *Primitive::ALL
            .iter()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("unknown primitive {name}"))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The holder in another PID namespace; the checker root, in the first one.
    PidNamespace,
    /// The holder root; the checker another user under a `hidepid=2` `/proc`.
    Hidepid,
}

type R<T = ()> = Result<T, String>;

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between processes (PID and mount
/// namespaces share it).
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn queue(dir: &Path) -> fileipc::Result<MessageQueue> {
    QueueOptions::new()
        .mode(0o660)
        .segment_size(64 << 10)
        .open(dir)
}

fn store(path: &Path) -> fileipc::Result<SharedData> {
    SharedData::options().mode(0o660).open(path)
}

fn semaphore(path: &Path) -> fileipc::Result<Semaphore> {
    Semaphore::options().mode(0o660).initial(1).open(path)
}

fn mutex(path: &Path) -> fileipc::Result<Mutex> {
    Mutex::options().mode(0o660).open(path)
}

// --- the parent ---------------------------------------------------------------------------

/// A role run on the holder's side, and the PID of the process that runs it in the
/// parent's namespace (under [`PID_NAMESPACE`]: the child of `unshare`).
struct OtherSide {
    proc: Proc,
    pid: u32,
}

impl OtherSide {
    /// Starts `role` under `wrapper` and waits until it says "holding".
    fn start(wrapper: &[&str], role: &str, args: &[&str]) -> OtherSide {
        let mut proc = Proc::spawn_under(wrapper, role, args);
        proc.expect("holding");
        let pid = if wrapper == PID_NAMESPACE {
            let u = proc.pid;
            let kids = std::fs::read_to_string(format!("/proc/{u}/task/{u}/children")).unwrap();
            let kids: Vec<u32> = kids
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
            assert_eq!(kids.len(), 1, "children of unshare {u}: {kids:?}");
            let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
            assert_ne!(
                ns(&kids[0].to_string()),
                ns("self"),
                "not in a PID namespace"
            );
            kids[0]
        } else {
            proc.pid
        };
        OtherSide { proc, pid }
    }
}

/// Whether `wrapper` (if any) runs a program here (root in a container may lack the
/// privileges for new namespaces and mounts).
fn runs_here(wrapper: &[&str]) -> R {
    if wrapper.is_empty() {
        return Ok(());
    }
    let out = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg("true")
        .output()
        .map_err(|err| format!("{}: {err}", wrapper[0]))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{wrapper:?} true: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A directory of group [`SHARED_GID`], mode `0o2770` (what is created in it gets its
/// group), with the umask letting the group read and write what the parent creates.
fn shared_dir() -> tempfile::TempDir {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o007));
    let t = common::tempdir();
    std::os::unix::fs::chown(t.path(), None, Some(SHARED_GID)).unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o2770)).unwrap();
    t
}

/// Creates the primitive in `dir`; returns its path.
fn create(p: Primitive, dir: &Path) -> PathBuf {
    let path = dir.join(p.name());
    if matches!(p, Primitive::Producer | Primitive::Consumer) {
        // Made here, in the set-group-ID directory, it is one too, so the files made in
        // it get the shared group (a queue directory the library makes gets exactly the
        // queue's mode, without that bit).
        std::fs::create_dir(&path).unwrap();
    }
    match p {
        Primitive::Semaphore => drop(semaphore(&path).unwrap()),
        Primitive::Mutex => drop(mutex(&path).unwrap()),
        Primitive::Producer => drop(queue(&path).unwrap()),
        Primitive::Consumer => {
            // A damaged record at the head: receiving needs the consumer lock (to skip
            // it), which the holder has.
            let q = queue(&path).unwrap();
            q.send("damaged").unwrap();
            q.send("next").unwrap();
            // The first record's length field (offset 8 of its header): its header
            // checksum fails.
            let seg = OpenOptions::new()
                .write(true)
                .open(path.join("seg-0000000000000000.log"))
                .unwrap();
            seg.write_at(&[0xff], 8).unwrap();
        }
        Primitive::Board => drop(store(&path).unwrap()),
    }
    path
}

/// Runs one test: `p` held across `scenario`. See the module documentation.
fn run(test: &str, p: Primitive, scenario: Scenario) {
    if !rustix::process::geteuid().is_root() {
        common::skip(test, "needs root (namespaces, a /proc mount, another uid)");
        return;
    }
    let (holder_side, checker_side, how) = match scenario {
        Scenario::PidNamespace => (PID_NAMESPACE, &[][..], "in another PID namespace"),
        Scenario::Hidepid => (&[][..], HIDEPID, "unseen by another user under hidepid=2"),
    };
    for wrapper in [holder_side, checker_side] {
        if let Err(why) = runs_here(wrapper) {
            common::skip(test, why);
            return;
        }
    }
    let t = shared_dir();
    let path = create(p, t.path());
    let path = path.to_str().unwrap();
    let mut holder = OtherSide::start(holder_side, "hold", &[p.name(), path]);
    let hidden = if scenario == Scenario::Hidepid {
        "1"
    } else {
        "0"
    };
    let mut checker = Proc::spawn_under(
        checker_side,
        "check",
        &[p.name(), path, &holder.pid.to_string(), hidden],
    );
    run_stage(
        &mut checker,
        &mut holder,
        &format!("{} holder {how}", p.name()),
    );
    if p == Primitive::Mutex {
        // The checker holds the mutex now; a waiter on the holder's side registers.
        let mut waiter = OtherSide::start(holder_side, "wait_mutex", &[path]);
        run_stage(&mut checker, &mut waiter, &format!("mutex waiter {how}"));
    }
    let last = checker.expect_line(PATIENCE);
    assert_eq!(last, "done", "{test}: the checker's last word");
    checker.wait_success();
}

/// One stage of [`run`]: the checker respects the live holder, still waits 200 ms after
/// it started waiting, and gets what the holder had within [`RECOVERY`] after its kill.
fn run_stage(checker: &mut Proc, holder: &mut OtherSide, what: &str) {
    let line = checker.expect_line(PATIENCE);
    assert!(
        line == "respected",
        "{what}: while the holder lived, the checker reported: {line}"
    );
    checker.expect("waiting");
    if let Some(line) = checker.line_within(STILL_BLOCKED) {
        panic!("{what}: while the holder lived, the checker reported: {line}");
    }
    let killed = mono_ns();
    common::signal(holder.pid, rustix::process::Signal::KILL);
    let line = checker.expect_line(PATIENCE);
    let at: u64 = line
        .strip_prefix("recovered ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{what}: after the SIGKILL, the checker reported: {line}"));
    assert!(
        at >= killed,
        "{what}: recovered before the holder was killed"
    );
    let took = Duration::from_nanos(at - killed);
    eprintln!("{what}: recovered {took:.1?} after the SIGKILL");
    assert!(
        took < RECOVERY,
        "{what}: recovered {took:?} after the SIGKILL (bound {RECOVERY:?})"
    );
    holder.proc.wait(PATIENCE);
}

// --- the holder's side --------------------------------------------------------------------

/// args: primitive, path. Holds the primitive, says "holding", and stays alive until
/// killed.
fn hold(args: &[String]) {
    let path = Path::new(&args[1]);
    let _held: Box<dyn std::any::Any> = match Primitive::from_name(&args[0]) {
        Primitive::Semaphore => {
            let s = semaphore(path).unwrap();
            assert!(s.acquire().unwrap());
            Box::new(s)
        }
        Primitive::Mutex => {
            let m = mutex(path).unwrap();
            assert!(m.lock().unwrap());
            Box::new(m)
        }
        // The queue's locks are taken only for a moment, inside calls; the holder plays
        // one in the middle of such a call.
        Primitive::Producer => Box::new(hold_lock_word(path, P_LOCK)),
        Primitive::Consumer => Box::new(hold_lock_word(path, C_LOCK)),
        // The first increment claims a slot; it stays claimed while the handle lives.
        Primitive::Board => {
            let d = store(path).unwrap();
            d.increment("k", 1).unwrap();
            Box::new(d)
        }
    };
    say("holding");
    std::thread::sleep(PATIENCE);
}

/// args: mutex path. Says "holding" and waits for the mutex (registered as a waiter)
/// until killed.
fn wait_mutex(args: &[String]) {
    let m = mutex(Path::new(&args[0])).unwrap();
    say("holding");
    let _ = m.lock_timeout(PATIENCE);
    std::thread::sleep(PATIENCE);
}

/// Marks the lock word at `word` of the queue `dir` as held by the calling thread, as
/// the library writes it while holding that lock; returns the control file, which must
/// stay open while the hold lasts.
fn hold_lock_word(dir: &Path, word: u64) -> File {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("control"))
        .unwrap();
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let mut version = [0u8; 4];
    ctl.read_exact_at(&mut version, VERSION).unwrap();
    match u32::from_le_bytes(version) {
        3..=5 => {
            // A live owner id of this process: its byte locked through this
            // description, then the id in the word.
            let id = 0x4000_0000 | tid;
            common::hold_owner_id(&ctl, id);
            ctl.write_at(&id.to_le_bytes(), word).unwrap();
        }
        2 => {
            // Version 2, before owner ids (the code these tests were shown to fail on):
            // the thread ID in the word, and at `word + 8` the owner's ident, thread ID
            // << 32 | the low half of the thread's start time in this `/proc`.
            let ident = u64::from(tid) << 32 | (thread_start_time() & 0xffff_ffff);
            ctl.write_at(&ident.to_le_bytes(), word + 8).unwrap();
            ctl.write_at(&tid.to_le_bytes(), word).unwrap();
        }
        v => panic!("queue control file version {v}"),
    }
    ctl
}

/// The calling thread's start time (field 22 of its `stat`).
fn thread_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

// --- the checker ----------------------------------------------------------------------------

/// args: primitive, path, the holder's PID, "1" to become [`OTHER_UID`] first (and check
/// that `/proc` hides the holder). Runs the stages of the primitive, then says "done"
/// (or "error: ...").
fn check(args: &[String]) {
    if args[3] == "1" {
        become_other_user();
        let stat = format!("/proc/{}/stat", args[2]);
        if std::fs::read(&stat).is_ok() {
            say(format!(
                "error: {stat} is readable: /proc does not hide the holder"
            ));
            return;
        }
    }
    let path = Path::new(&args[1]);
    let r = match Primitive::from_name(&args[0]) {
        Primitive::Semaphore => check_semaphore(path),
        Primitive::Producer => check_producer(path),
        Primitive::Consumer => check_consumer(path),
        Primitive::Mutex => check_mutex(path),
        Primitive::Board => check_board(path),
    };
    match r {
        Ok(()) => say("done"),
        Err(e) => say(format!("error: {e}")),
    }
}

/// In the checker: becomes user [`OTHER_UID`] with a primary group of its own and
/// [`SHARED_GID`] as a supplementary group, for good. Credentials are per thread on
/// Linux: this is the thread that runs the role, and the threads it starts inherit them.
fn become_other_user() {
    use rustix::process::{Gid, Uid};
    rustix::thread::set_thread_groups(&[Gid::from_raw(SHARED_GID)]).unwrap();
    let g = Gid::from_raw(OTHER_UID);
    rustix::thread::set_thread_res_gid(g, g, g).unwrap();
    let u = Uid::from_raw(OTHER_UID);
    rustix::thread::set_thread_res_uid(u, u, u).unwrap();
    assert_eq!(rustix::process::geteuid().as_raw(), OTHER_UID);
}

/// One stage in the checker: calls `held` every [`PROBE`] for at least [`WATCH`] (it
/// says what was taken from the holder, if anything), says "respected" and "waiting",
/// then calls `take`, which waits (at most [`GIVE_UP`]) until it gets what the holder
/// had and returns when (see [`mono_ns`]); says "recovered <that time>". An error ends
/// the stage with a line saying what happened.
fn stage(mut held: impl FnMut() -> R, take: impl FnOnce() -> R<u64>) -> R {
    let start = Instant::now();
    loop {
        if let Err(e) = held() {
            say(format!(
                "stolen: {e} ({:.0?} into the watch)",
                start.elapsed()
            ));
            return Err("stolen".into());
        }
        if start.elapsed() >= WATCH {
            break;
        }
        std::thread::sleep(PROBE);
    }
    say("respected");
    say("waiting");
    match take() {
        Ok(at) => {
            say(format!("recovered {at}"));
            Ok(())
        }
        Err(e) => {
            say(format!("not recovered: {e}"));
            Err("not recovered".into())
        }
    }
}

/// Calls `f` every millisecond until it returns true; the time it did, or an error after
/// [`GIVE_UP`].
fn poll(what: &str, mut f: impl FnMut() -> R<bool>) -> R<u64> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(mono_ns());
        }
        if start.elapsed() >= GIVE_UP {
            return Err(format!("{what}: not within {GIVE_UP:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The holder has the only permit: `try_acquire` fails and `value` is 0; once it is
/// killed, `acquire_timeout` gets the permit.
fn check_semaphore(path: &Path) -> R {
    let s = semaphore(path).map_err(e)?;
    stage(
        || {
            if s.try_acquire().map_err(e)? {
                return Err("try_acquire() took a permit".into());
            }
            match s.value().map_err(e)? {
                0 => Ok(()),
                v => Err(format!("value() is {v}")),
            }
        },
        || match s.acquire_timeout(GIVE_UP).map_err(e)? {
            true => Ok(mono_ns()),
            false => Err(format!("acquire_timeout({GIVE_UP:?}) timed out")),
        },
    )?;
    s.release().map_err(e)
}

/// The holder has the producer lock: a `send` (in a thread) stays blocked; once the
/// holder is killed, it completes and the message can be received.
fn check_producer(dir: &Path) -> R {
    let q = queue(dir).map_err(e)?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(q.send("after the holder").map(|()| mono_ns()).map_err(e));
    });
    stage(
        || match rx.try_recv() {
            Err(TryRecvError::Empty) => Ok(()),
            Ok(r) => Err(format!("send() returned {r:?}")),
            Err(TryRecvError::Disconnected) => Err("the sending thread died".into()),
        },
        || {
            rx.recv_timeout(GIVE_UP)
                .map_err(|_| format!("send() still blocked after {GIVE_UP:?}"))?
        },
    )?;
    let got = queue(dir).map_err(e)?.try_recv().map_err(e)?;
    match got {
        Some(m) if m == "after the holder" => Ok(()),
        other => Err(format!("received {other:?} after the send")),
    }
}

/// The holder has the consumer lock and the head record is damaged: a receive (in a
/// thread) cannot skip it and stays blocked; once the holder is killed, it skips the
/// record (reporting the damage), and the next message can be received.
fn check_consumer(dir: &Path) -> R {
    let q = queue(dir).map_err(e)?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let got = q.recv_timeout(PATIENCE);
        let _ = tx.send((mono_ns(), format!("{got:?}"), got.ok().flatten()));
    });
    let mut first = None;
    stage(
        || match rx.try_recv() {
            Err(TryRecvError::Empty) => Ok(()),
            Ok((_, got, _)) => Err(format!("recv_timeout() returned {got}")),
            Err(TryRecvError::Disconnected) => Err("the receiving thread died".into()),
        },
        || {
            let (at, got, message) = rx
                .recv_timeout(GIVE_UP)
                .map_err(|_| format!("recv_timeout() still blocked after {GIVE_UP:?}"))?;
            first = Some((got, message));
            Ok(at)
        },
    )?;
    // The receive reports the damage it skipped; the message after it is next.
    let (got, message) = first.unwrap();
    let next = match message {
        Some(m) => Some(m),
        None => queue(dir).map_err(e)?.try_recv().map_err(e)?,
    };
    match next {
        Some(m) if m == "next" => Ok(()),
        other => Err(format!("after {got}, received {other:?}")),
    }
}

/// Stage 1: the holder has the mutex: `try_lock` fails; once it is killed,
/// `lock_timeout` gets it. Stage 2 (holding it): a waiter on the holder's side
/// registers; `waiting()` counts it while it lives, and stops counting it once it is
/// killed.
fn check_mutex(path: &Path) -> R {
    let m = mutex(path).map_err(e)?;
    stage(
        || match m.try_lock().map_err(e)? {
            true => Err("try_lock() took the lock".into()),
            false => Ok(()),
        },
        || match m.lock_timeout(GIVE_UP).map_err(e)? {
            true => Ok(mono_ns()),
            false => Err(format!("lock_timeout({GIVE_UP:?}) timed out")),
        },
    )?;
    let start = Instant::now();
    while m.waiting() == 0 {
        if start.elapsed() >= PATIENCE {
            return Err("the waiter never registered".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stage(
        || match m.waiting() {
            1 => Ok(()),
            n => Err(format!("waiting() is {n} with one live waiter")),
        },
        || poll("waiting() back to 0", || Ok(m.waiting() == 0)),
    )?;
    m.unlock().map_err(e)
}

/// The owner words of the board's slots.
fn board_owners(store: &Path) -> R<Vec<u64>> {
    let board = File::open(format!("{}-board", store.display())).map_err(e)?;
    let mut b = vec![0u8; SLOTS * SLOT_LEN];
    board.read_exact_at(&mut b, SLOTS_AT).map_err(e)?;
    Ok((0..SLOTS)
        .map(|i| {
            let at = i * SLOT_LEN + SLOT_OWNER;
            u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
        })
        .collect())
}

/// The holder owns one board slot. The checker opens as many handles as there are
/// slots and increments through each (each claims a slot at its first increment): the
/// last finds none free, and keeps trying at every increment while the holder's slot
/// keeps the holder's owner word; once the holder is killed, its next increment claims
/// that slot.
fn check_board(path: &Path) -> R {
    let owners = board_owners(path)?;
    let taken: Vec<usize> = (0..SLOTS).filter(|&i| owners[i] != 0).collect();
    let [slot] = taken[..] else {
        return Err(format!("the holder should own one slot; taken: {taken:?}"));
    };
    let theirs = owners[slot];
    let handles = (0..SLOTS)
        .map(|_| store(path))
        .collect::<fileipc::Result<Vec<_>>>()
        .map_err(e)?;
    for h in &handles {
        h.increment("k", 1).map_err(e)?;
    }
    let last = &handles[SLOTS - 1];
    let owner_now = || -> R<u64> { Ok(board_owners(path)?[slot]) };
    stage(
        || {
            last.increment("k", 1).map_err(e)?;
            match owner_now()? {
                w if w == theirs => Ok(()),
                w => Err(format!("slot {slot} went from owner {theirs:#x} to {w:#x}")),
            }
        },
        || {
            poll("the holder's slot claimed", || {
                last.increment("k", 1).map_err(e)?;
                Ok(owner_now()? != theirs)
            })
        },
    )?;
    let owners = board_owners(path)?;
    if owners.iter().any(|&w| w != owners[0]) {
        return Err(format!("slots not all the checker's: {owners:x?}"));
    }
    Ok(())
}

// --- the tests --------------------------------------------------------------------------------

/// A semaphore permit held in another PID namespace is not taken (`try_acquire` false,
/// `value` 0) while its holder lives, and `acquire_timeout` gets it within 100 ms after
/// the holder is SIGKILLed.
#[test]
fn semaphore_holder_in_another_pid_namespace() {
    run(
        "semaphore_holder_in_another_pid_namespace",
        Primitive::Semaphore,
        Scenario::PidNamespace,
    );
}

/// The same as [`semaphore_holder_in_another_pid_namespace`], the checker another user
/// under a `hidepid=2` `/proc` and the holder in the first namespace.
#[test]
fn semaphore_holder_hidden_by_hidepid() {
    run(
        "semaphore_holder_hidden_by_hidepid",
        Primitive::Semaphore,
        Scenario::Hidepid,
    );
}

/// A queue's producer lock held in another PID namespace keeps a `send` blocked while
/// its holder lives; the send completes within 100 ms after the holder is SIGKILLed,
/// and its message is received.
#[test]
fn queue_producer_in_another_pid_namespace() {
    run(
        "queue_producer_in_another_pid_namespace",
        Primitive::Producer,
        Scenario::PidNamespace,
    );
}

/// The same as [`queue_producer_in_another_pid_namespace`], the sender another user
/// under a `hidepid=2` `/proc` and the holder in the first namespace.
#[test]
fn queue_producer_hidden_by_hidepid() {
    run(
        "queue_producer_hidden_by_hidepid",
        Primitive::Producer,
        Scenario::Hidepid,
    );
}

/// A queue's consumer lock held in another PID namespace, with a damaged record at the
/// head, keeps a receive from skipping the record while its holder lives; the receive
/// skips it within 100 ms after the holder is SIGKILLed, and the next message is
/// received.
#[test]
fn queue_consumer_in_another_pid_namespace() {
    run(
        "queue_consumer_in_another_pid_namespace",
        Primitive::Consumer,
        Scenario::PidNamespace,
    );
}

/// The same as [`queue_consumer_in_another_pid_namespace`], the receiver another user
/// under a `hidepid=2` `/proc` and the holder in the first namespace.
#[test]
fn queue_consumer_hidden_by_hidepid() {
    run(
        "queue_consumer_hidden_by_hidepid",
        Primitive::Consumer,
        Scenario::Hidepid,
    );
}

/// A mutex locked in another PID namespace: `try_lock` fails while the holder lives and
/// `lock_timeout` gets it within 100 ms after the holder is SIGKILLed. Then a waiter in
/// another PID namespace counts in `waiting()` while it lives and stops counting within
/// 100 ms after it is SIGKILLed.
#[test]
fn mutex_holder_and_waiter_in_another_pid_namespace() {
    run(
        "mutex_holder_and_waiter_in_another_pid_namespace",
        Primitive::Mutex,
        Scenario::PidNamespace,
    );
}

/// The same as [`mutex_holder_and_waiter_in_another_pid_namespace`], the checker another
/// user under a `hidepid=2` `/proc` and the holder and waiter in the first namespace.
#[test]
fn mutex_holder_and_waiter_hidden_by_hidepid() {
    run(
        "mutex_holder_and_waiter_hidden_by_hidepid",
        Primitive::Mutex,
        Scenario::Hidepid,
    );
}

/// A SharedData request-board slot owned by a handle in another PID namespace is never
/// claimed by another process while its owner lives, even when that process finds no
/// other slot free, and is claimed within 100 ms after the owner is SIGKILLed.
#[test]
fn board_slot_owner_in_another_pid_namespace() {
    run(
        "board_slot_owner_in_another_pid_namespace",
        Primitive::Board,
        Scenario::PidNamespace,
    );
}

/// The same as [`board_slot_owner_in_another_pid_namespace`], the claimant another user
/// under a `hidepid=2` `/proc` and the owner in the first namespace.
#[test]
fn board_slot_owner_hidden_by_hidepid() {
    run(
        "board_slot_owner_hidden_by_hidepid",
        Primitive::Board,
        Scenario::Hidepid,
    );
}
