//! Sharing a primitive with a group: a primitive created by one user
//! with a group mode (`0o660`) is usable by another user of that group, whatever the
//! umask of either.
//!
//! Runs as root (CI does): the test process creates each primitive under umask 022 in a
//! directory the group may enter and write, then runs children that give up root for
//! another user: a uid of their own, a primary group of their own, and the primitive's
//! group as a supplementary group, as a user in a shared group is. `CommandExt::groups`
//! is unstable, so a child drops its credentials itself, first thing, in the thread that
//! runs its role (Linux credentials are per thread; the kernel checks that thread's for
//! every file access the role makes). Not root: each test prints "SKIPPED: needs root"
//! and passes, unless `FILEIPC_REQUIRE_ROOT_TESTS` is set.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{PATIENCE, Proc, say};
use fileipc::{
    Event, EventOptions, MessageQueue, Mutex, PidFile, PidStatus, QueueOptions, Semaphore,
    SharedData,
};

/// The users the children become (any unused IDs do: no account is needed).
const ALICE: u32 = 61_001;
const BOB: u32 = 61_002;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| {
        let (who, rest) = args.split_at(2);
        become_member(who[0].parse().unwrap(), who[1].parse().unwrap());
        let r = match role {
            "queue_alice" => queue_alice(rest),
            "queue_bob" => queue_bob(rest),
            "mutex" => mutex_child(rest),
            "semaphore" => semaphore_child(rest),
            "shared_data" => shared_data_child(rest),
            "pid_file" => pid_file_child(rest),
            "event" => event_child(rest),
            other => panic!("unknown role {other}"),
        };
        match r {
            Ok(()) => say("ok"),
            Err(e) => say(format!("error: {e}")),
        }
    });
}

/// Whether the test can run; prints the skip line (or panics, in CI) if not.
fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("FILEIPC_REQUIRE_ROOT_TESTS").is_none(),
        "{test} needs root, and FILEIPC_REQUIRE_ROOT_TESTS is set"
    );
    // Straight to the descriptor: the test harness captures `eprintln!` of a test that
    // passes.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: needs root: {test} (a second uid in the group)"
    );
    false
}

/// In a child: becomes user `uid` with primary group `uid` (a group of its own) and the
/// supplementary group `group`, for good (real, effective and saved IDs).
fn become_member(uid: u32, group: u32) {
    use rustix::process::{Gid, Uid};
    rustix::thread::set_thread_groups(&[Gid::from_raw(group)]).unwrap();
    let g = Gid::from_raw(uid);
    rustix::thread::set_thread_res_gid(g, g, g).unwrap();
    let u = Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(u, u, u).unwrap();
    assert_eq!(rustix::process::geteuid().as_raw(), uid);
}

/// The test's directory, owned by root and group 0 with mode `0o770` (the group may
/// enter it and create files: PID files and events need that; a queue only enters it),
/// the umask 022, and the group the children get: the group of what root creates
/// there, 0.
fn setup() -> (tempfile::TempDir, u32) {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let t = common::tempdir();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let group = std::fs::metadata(t.path()).unwrap().gid();
    (t, group)
}

/// Spawns `role` as `uid` in `group`, with `args`.
fn spawn_as(role: &str, uid: u32, group: u32, args: &[&Path]) -> Proc {
    let (uid, group) = (uid.to_string(), group.to_string());
    let mut all = vec![uid.as_str(), group.as_str()];
    all.extend(args.iter().map(|p| p.to_str().unwrap()));
    Proc::spawn(role, &all)
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn gid_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().gid()
}

/// In a child: waits (bounded) until the parent creates `path`.
fn wait_for(path: &Path) {
    common::eventually(PATIENCE, "the parent's go-ahead", || path.exists());
}

fn go(path: &Path) {
    std::fs::write(path, b"").unwrap();
}

type R = Result<(), String>;

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

// --- message queue ----------------------------------------------------------------------

const SEGMENT: u64 = 64 << 10;

fn group_queue(dir: &Path) -> fileipc::Result<MessageQueue> {
    QueueOptions::new()
        .mode(0o660)
        .segment_size(SEGMENT)
        .open(dir)
}

/// args: queue dir. Receives root's message, then sends four of 30 KiB: they fill
/// segment 0 and create segment 1.
fn queue_alice(args: &[String]) -> R {
    let q = group_queue(Path::new(&args[0])).map_err(e)?;
    let m = q.try_recv().map_err(e)?.ok_or("no message from root")?;
    if m != "from root" {
        return Err(format!("got {m:?}"));
    }
    for i in 0..4u8 {
        q.send(vec![i; 30 << 10]).map_err(e)?;
    }
    Ok(())
}

/// args: queue dir. Receives alice's four messages (from a segment alice created), then
/// sends one.
fn queue_bob(args: &[String]) -> R {
    let q = group_queue(Path::new(&args[0])).map_err(e)?;
    for i in 0..4u8 {
        let m = q.try_recv().map_err(e)?.ok_or("alice's message missing")?;
        if m[..] != vec![i; 30 << 10][..] {
            return Err(format!("alice's message {i} damaged"));
        }
    }
    q.send("from bob").map_err(e)?;
    Ok(())
}

/// Root creates a group queue (`0o660`) under umask 022; alice receives from it and
/// sends into a segment she creates; bob receives that and sends back. The directory is
/// exactly `0o770` and every file `0o660`, in the queue's group.
#[test]
fn a_queue_is_shared_with_its_group() {
    if !root_or_skip("a_queue_is_shared_with_its_group") {
        return;
    }
    let (t, group) = setup();
    let dir = t.path().join("q");
    let q = group_queue(&dir).unwrap();
    q.send("from root").unwrap();
    let seg = |k: u64| dir.join(format!("seg-{k:016x}.log"));
    let mut alice = spawn_as("queue_alice", ALICE, group, &[&dir]);
    alice.expect("ok");
    alice.wait_success();
    let mut bob = spawn_as("queue_bob", BOB, group, &[&dir]);
    bob.expect("ok");
    bob.wait_success();
    assert_eq!(q.try_recv().unwrap().unwrap(), "from bob");
    assert_eq!(mode_of(&dir), 0o770, "queue directory");
    assert_eq!(mode_of(&dir.join("control")), 0o660, "control file");
    let s1 = seg(1);
    assert_eq!(mode_of(&s1), 0o660, "segment created by alice");
    assert_eq!(gid_of(&s1), group, "segment created by alice");
    assert_eq!(std::fs::metadata(&s1).unwrap().uid(), ALICE);
    q.send("root again").unwrap();
    assert_eq!(q.try_recv().unwrap().unwrap(), "root again");
}

// --- mutex ------------------------------------------------------------------------------

/// args: mutex path, go file. Locks, says "locked", unlocks once the parent says go.
fn mutex_child(args: &[String]) -> R {
    let m = Mutex::options().mode(0o660).open(&args[0]).map_err(e)?;
    if !m.lock_timeout(PATIENCE).map_err(e)? {
        return Err("lock timed out".into());
    }
    say("locked");
    wait_for(Path::new(&args[1]));
    m.unlock().map_err(e)
}

#[test]
fn a_mutex_is_shared_with_its_group() {
    if !root_or_skip("a_mutex_is_shared_with_its_group") {
        return;
    }
    let (t, group) = setup();
    let (path, go_file) = (t.path().join("m"), t.path().join("go"));
    let m = Mutex::options().mode(0o660).open(&path).unwrap();
    assert_eq!(mode_of(&path), 0o660);
    let mut child = spawn_as("mutex", ALICE, group, &[&path, &go_file]);
    child.expect("locked");
    assert!(!m.try_lock().unwrap(), "the group member holds it");
    go(&go_file);
    child.expect("ok");
    child.wait_success();
    assert!(m.lock_timeout(Duration::from_secs(5)).unwrap());
    m.unlock().unwrap();
}

// --- semaphore --------------------------------------------------------------------------

/// args: semaphore path, go file. Takes a permit, says "acquired", releases it once the
/// parent says go.
fn semaphore_child(args: &[String]) -> R {
    let s = Semaphore::options()
        .mode(0o660)
        .initial(1)
        .open(&args[0])
        .map_err(e)?;
    if !s.acquire_timeout(PATIENCE).map_err(e)? {
        return Err("acquire timed out".into());
    }
    say("acquired");
    wait_for(Path::new(&args[1]));
    s.release().map_err(e)
}

#[test]
fn a_semaphore_is_shared_with_its_group() {
    if !root_or_skip("a_semaphore_is_shared_with_its_group") {
        return;
    }
    let (t, group) = setup();
    let (path, go_file) = (t.path().join("s"), t.path().join("go"));
    let s = Semaphore::options()
        .mode(0o660)
        .initial(1)
        .open(&path)
        .unwrap();
    assert_eq!(mode_of(&path), 0o660);
    let mut child = spawn_as("semaphore", ALICE, group, &[&path, &go_file]);
    child.expect("acquired");
    assert_eq!(s.value().unwrap(), 0, "the group member holds the permit");
    go(&go_file);
    child.expect("ok");
    child.wait_success();
    assert_eq!(s.value().unwrap(), 1);
    assert!(s.try_acquire().unwrap());
    s.release().unwrap();
}

// --- SharedData -------------------------------------------------------------------------

/// args: store path. Reads root's key, sets one and increments a counter.
fn shared_data_child(args: &[String]) -> R {
    let d = SharedData::options()
        .mode(0o660)
        .open(&args[0])
        .map_err(e)?;
    let v: Option<String> = d.get("from root").map_err(e)?;
    if v.as_deref() != Some("hello") {
        return Err(format!("read {v:?}"));
    }
    d.set("from child", "hi").map_err(e)?;
    d.increment("n", 1).map_err(e)?;
    Ok(())
}

#[test]
fn shared_data_is_shared_with_its_group() {
    if !root_or_skip("shared_data_is_shared_with_its_group") {
        return;
    }
    let (t, group) = setup();
    let path = t.path().join("d");
    let d = SharedData::options().mode(0o660).open(&path).unwrap();
    d.set("from root", "hello").unwrap();
    d.increment("n", 1).unwrap();
    for f in std::fs::read_dir(t.path()).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode_of(&f), 0o660, "{}", f.display());
    }
    let mut child = spawn_as("shared_data", ALICE, group, &[&path]);
    child.expect("ok");
    child.wait_success();
    assert_eq!(
        d.get::<String>("from child").unwrap().as_deref(),
        Some("hi")
    );
    assert_eq!(d.increment("n", 1).unwrap(), 3);
}

// --- PID file ---------------------------------------------------------------------------

/// args: root's PID file, the child's PID file, go file. Sees root's file as running
/// with root's PID (said first), creates its own, says "created", removes it on go.
fn pid_file_child(args: &[String]) -> R {
    let theirs = PidFile::options().mode(0o640).open(&args[0]).map_err(e)?;
    say(format!("{:?}", theirs.status().map_err(e)?));
    let mut mine = PidFile::options().mode(0o640).open(&args[1]).map_err(e)?;
    if !mine.create().map_err(e)? {
        return Err("create found a live owner".into());
    }
    say("created");
    wait_for(Path::new(&args[2]));
    mine.remove().map_err(e)
}

#[test]
fn a_pid_file_is_shared_with_its_group() {
    if !root_or_skip("a_pid_file_is_shared_with_its_group") {
        return;
    }
    let (t, group) = setup();
    let (root_path, child_path, go_file) = (
        t.path().join("root.pid"),
        t.path().join("child.pid"),
        t.path().join("go"),
    );
    let mut root = PidFile::options().mode(0o640).open(&root_path).unwrap();
    assert!(root.create().unwrap());
    assert_eq!(mode_of(&root_path), 0o640);
    let mut child = spawn_as(
        "pid_file",
        ALICE,
        group,
        &[&root_path, &child_path, &go_file],
    );
    assert_eq!(
        child.expect_line(PATIENCE),
        format!(
            "{:?}",
            PidStatus::Running {
                pid: Some(std::process::id())
            }
        )
    );
    child.expect("created");
    assert_eq!(mode_of(&child_path), 0o640);
    let theirs = PidFile::open(&child_path).unwrap();
    assert_eq!(
        theirs.status().unwrap(),
        PidStatus::Running {
            pid: Some(child.pid)
        }
    );
    go(&go_file);
    child.expect("ok");
    child.wait_success();
    assert_eq!(theirs.status().unwrap(), PidStatus::Absent);
    root.remove().unwrap();
}

// --- event ------------------------------------------------------------------------------

/// args: event path, go file. Says "waiting", waits for root to set the event, clears
/// it, says "cleared", sets it again on go.
fn event_child(args: &[String]) -> R {
    let ev = EventOptions::new().mode(0o660).open(&args[0]).map_err(e)?;
    say("waiting");
    if !ev.wait_timeout(PATIENCE).map_err(e)? {
        return Err("never set".into());
    }
    ev.clear().map_err(e)?;
    say("cleared");
    wait_for(Path::new(&args[1]));
    ev.set().map_err(e)
}

#[test]
fn an_event_is_shared_with_its_group() {
    if !root_or_skip("an_event_is_shared_with_its_group") {
        return;
    }
    let (t, group) = setup();
    let (path, go_file) = (t.path().join("e"), t.path().join("go"));
    let ev = EventOptions::new().mode(0o660).open(&path).unwrap();
    let mut child = spawn_as("event", ALICE, group, &[&path, &go_file]);
    child.expect("waiting");
    ev.set().unwrap();
    // The waiting child may clear it (remove the file) at once: check the mode only if
    // the file is still there.
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        assert_eq!(m.mode() & 0o7777, 0o660);
    }
    child.expect("cleared");
    assert!(!ev.is_set().unwrap());
    go(&go_file);
    child.expect("ok");
    child.wait_success();
    assert!(Event::open(&path).unwrap().is_set().unwrap());
    assert_eq!(mode_of(&path), 0o660);
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), ALICE);
}
