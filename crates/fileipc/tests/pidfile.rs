//! PidFile across real processes: one live owner at a time, a killed owner's stale file
//! taken over, liveness from the lock and not the PID, the owner's PID never truncated,
//! symbolic links never followed, `remove` and drop removing only the owner's file,
//! modes, and the checks before taking over a stale file.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{PATIENCE, Proc, say};
use fileipc::{Error, Event, PidFile, PidFileOptions, PidStatus};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "owner" => owner(&args),
        "create_with_umask" => create_with_umask(&args),
        other => panic!("unknown role {other}"),
    });
}

/// Tries to own `args[0]`, says the result, then holds on until the event `args[1]` is
/// set (or the patience runs out) and exits normally, dropping the handle.
fn owner(args: &[String]) {
    let mut p = PidFile::open(&args[0]).unwrap();
    let got = p.create().unwrap();
    say(format!("created {got}"));
    let done = Event::open(&args[1]).unwrap();
    assert!(done.wait_timeout(PATIENCE).unwrap());
    say("exiting");
}

/// Creates `args[0]` with the default mode under umask 077, says its mode, removes it.
fn create_with_umask(args: &[String]) {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let mut p = PidFile::open(&args[0]).unwrap();
    assert!(p.create().unwrap());
    say(format!("{:o}", mode_of(Path::new(&args[0]))));
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A PID no process has: a child's, once it is reaped (reused only after the kernel
/// cycles through the PID space).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

#[test]
fn create_is_false_while_a_live_process_owns_it_and_its_pid_stays_readable() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    let done = dir.path().join("done");
    let mut child = Proc::spawn("owner", &[s(&p), s(&done)]);
    child.expect("created true");
    let want = format!("{}\n", child.pid);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), want);

    let mut mine = PidFile::open(&p).unwrap();
    for _ in 0..3 {
        assert!(!mine.create().unwrap());
        // Never truncated or rewritten by the failed attempt.
        assert_eq!(std::fs::read_to_string(&p).unwrap(), want);
    }
    assert!(!mine.is_owner().unwrap());
    assert_eq!(mine.read().unwrap(), Some(child.pid));
    assert_eq!(
        mine.status().unwrap(),
        PidStatus::Running {
            pid: Some(child.pid)
        }
    );

    // The owner exits normally: its handle's drop removes the file.
    Event::open(&done).unwrap().set().unwrap();
    child.expect("exiting");
    child.wait_success();
    assert!(!p.exists(), "an owner's drop must remove the file");
    assert_eq!(mine.read().unwrap(), None);
    assert!(mine.create().unwrap());
    assert_eq!(mine.read().unwrap(), Some(std::process::id()));
}

#[test]
fn a_sigkilled_owners_stale_file_is_taken_over() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    let done = dir.path().join("done");
    let mut child = Proc::spawn("owner", &[s(&p), s(&done)]);
    child.expect("created true");
    child.kill_and_reap();
    // The file stays, naming the dead owner, but nobody holds its lock any more.
    let probe = PidFile::open(&p).unwrap();
    assert_eq!(
        probe.status().unwrap(),
        PidStatus::Stale {
            pid: Some(child.pid)
        }
    );

    let mut mine = PidFile::open(&p).unwrap();
    assert!(mine.create().unwrap());
    assert!(mine.is_owner().unwrap());
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("{}\n", std::process::id())
    );
    assert_eq!(
        probe.status().unwrap(),
        PidStatus::Running {
            pid: Some(std::process::id())
        }
    );
}

/// Liveness of an owner is the lock, not the PID: a file naming a live process (PID 1
/// always runs) that does not hold the lock is never read as running, and, as another
/// program's PID file, is taken over only by `create_force`.
#[test]
fn a_live_pid_without_the_lock_never_reads_as_running() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    std::fs::write(&p, "1\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut mine = PidFile::open(&p).unwrap();
    let status = mine.status().unwrap();
    assert_eq!(status, PidStatus::AliveUnlocked { pid: 1 });
    assert!(!status.is_running());
    assert!(!mine.create().unwrap());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "1\n");
    assert!(mine.create_force().unwrap());
    assert_eq!(mine.read().unwrap(), Some(std::process::id()));
}

#[test]
fn exactly_one_of_racing_processes_owns_it() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    let done = dir.path().join("done");
    let mut kids: Vec<Proc> = (0..4)
        .map(|_| Proc::spawn("owner", &[s(&p), s(&done)]))
        .collect();
    let winners: Vec<u32> = kids
        .iter_mut()
        .filter_map(|k| (k.expect_line(PATIENCE) == "created true").then_some(k.pid))
        .collect();
    assert_eq!(winners.len(), 1, "owners: {winners:?}");
    assert_eq!(PidFile::open(&p).unwrap().read().unwrap(), Some(winners[0]));
    Event::open(&done).unwrap().set().unwrap();
    for k in &mut kids {
        k.expect("exiting");
        k.wait_success();
    }
    assert!(!p.exists());
    // No temporary file is left behind by the losers.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1); // "done"
}

#[test]
fn handles_in_one_process_exclude_each_other() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    let mut a = PidFile::open(&p).unwrap();
    let mut b = PidFile::open(&p).unwrap();
    assert!(a.create().unwrap());
    assert!(
        a.create().unwrap(),
        "the owner creating again is still the owner"
    );
    assert!(!b.create().unwrap());
    assert!(a.is_owner().unwrap() && !b.is_owner().unwrap());
    a.remove().unwrap();
    assert!(b.create().unwrap());
}

#[test]
fn a_symlink_is_refused_and_its_target_untouched() {
    let dir = common::tempdir();
    let target = dir.path().join("precious");
    std::fs::write(&target, "do not truncate me\n").unwrap();
    let p = dir.path().join("app.pid");
    std::os::unix::fs::symlink(&target, &p).unwrap();
    let mut h = PidFile::open(&p).unwrap();
    let e = h.create().unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    assert_eq!(e.path(), p);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "do not truncate me\n"
    );
    assert!(matches!(h.read().unwrap_err(), Error::Symlink { .. }));
    assert!(matches!(h.status().unwrap_err(), Error::Symlink { .. }));

    // A dangling link: its target is not created either.
    let missing = dir.path().join("missing");
    let q = dir.path().join("other.pid");
    std::os::unix::fs::symlink(&missing, &q).unwrap();
    assert!(matches!(
        PidFile::open(&q).unwrap().create().unwrap_err(),
        Error::Symlink { .. }
    ));
    assert!(!missing.exists());
}

#[test]
fn read_is_none_when_absent_and_an_error_naming_the_path_on_garbage() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    let h = PidFile::open(&p).unwrap();
    assert_eq!(h.read().unwrap(), None);
    std::fs::write(&p, "4242 \n").unwrap();
    assert_eq!(h.read().unwrap(), Some(4242));
    for garbage in ["hello\n", "42 43\n", "-5\n", "FILEIPC\0"] {
        std::fs::write(&p, garbage).unwrap();
        let e = h.read().unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(s(&p)) && msg.contains("PID file"), "{msg}");
    }
    // create() on garbage owned by nobody: not a PID file, so refused and left as it is
    // (only nothing, an empty file or a PID file becomes a PID file).
    let mut mine = PidFile::open(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(mine.create(), Err(Error::Format { .. })));
    assert_eq!(std::fs::read(&p).unwrap(), b"FILEIPC\0");
    // A stale PID file (a PID nobody holds the lock for) is taken over.
    std::fs::write(&p, "4242\n").unwrap();
    assert!(mine.create().unwrap());
    assert_eq!(mine.read().unwrap(), Some(std::process::id()));
}

#[test]
fn remove_only_when_owning_and_drop_removes() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    let done = dir.path().join("done");
    let mut child = Proc::spawn("owner", &[s(&p), s(&done)]);
    child.expect("created true");
    let mut other = PidFile::open(&p).unwrap();
    let e = other.remove().unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(!other.create().unwrap());
    assert!(
        other.remove().is_err(),
        "a failed create does not make an owner"
    );
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("{}\n", child.pid)
    );
    Event::open(&done).unwrap().set().unwrap();
    child.wait_success();
    assert!(!p.exists());

    let mut h = PidFile::open(&p).unwrap();
    assert!(h.create().unwrap());
    h.remove().unwrap();
    assert!(!p.exists());
    assert!(!h.is_owner().unwrap());
    assert!(matches!(h.remove().unwrap_err(), Error::Invalid { .. }));

    {
        let mut h = PidFile::open(&p).unwrap();
        assert!(h.create().unwrap());
        assert!(p.exists());
    }
    assert!(!p.exists(), "dropping an owning handle removes the file");

    // An owner whose file was replaced behind its back removes nothing of the
    // newcomer's.
    let mut h = PidFile::open(&p).unwrap();
    assert!(h.create().unwrap());
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, "1\n").unwrap();
    assert!(!h.is_owner().unwrap());
    h.remove().unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "1\n");
}

#[test]
fn modes_are_exact() {
    let dir = common::tempdir();
    let p = dir.path().join("app.pid");
    // Default 0644 even under umask 077 (in a child: the umask is per process).
    let mut child = Proc::spawn("create_with_umask", &[s(&p)]);
    child.expect("644");
    child.wait_success();
    assert!(!p.exists());

    let mut h = PidFileOptions::new().mode(0o600).open(&p).unwrap();
    assert!(h.create().unwrap());
    assert_eq!(mode_of(&p), 0o600);
    drop(h);

    // A stale file taken over gets the mode asked for.
    std::fs::write(&p, format!("{}\n", dead_pid())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut h = PidFile::open(&p).unwrap();
    assert!(h.create().unwrap());
    assert_eq!(mode_of(&p), 0o644);
}

#[test]
fn suspicious_stale_files_are_refused() {
    let dir = common::tempdir();

    // Not a regular file.
    let fifo = dir.path().join("fifo.pid");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let e = PidFile::open(&fifo).unwrap().create().unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    let sub = dir.path().join("dir.pid");
    std::fs::create_dir(&sub).unwrap();
    let e = PidFile::open(&sub).unwrap().create().unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");

    // Writable by group or others beyond the mode asked for.
    let p = dir.path().join("loose.pid");
    let stale = format!("{}\n", dead_pid());
    std::fs::write(&p, &stale).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = PidFile::open(&p).unwrap().create().unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("writable by"), "{e}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), stale);
    // ... unless the caller asked for that mode (a group shares it).
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
    let mut shared = PidFileOptions::new().mode(0o664).open(&p).unwrap();
    assert!(shared.create().unwrap());
    drop(shared);

    // Owned by another user (testable when running as root).
    if rustix::process::geteuid().is_root() {
        let q = dir.path().join("theirs.pid");
        std::fs::write(&q, "1\n").unwrap();
        std::os::unix::fs::chown(&q, Some(65534), Some(65534)).unwrap();
        let e = PidFile::open(&q).unwrap().create().unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        assert_eq!(std::fs::metadata(&q).unwrap().uid(), 65534);
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "1\n");
    }
}

#[test]
fn missing_directory_is_an_error_naming_the_path() {
    let dir = common::tempdir();
    let p = dir.path().join("nope").join("app.pid");
    let mut h = PidFile::open(&p).unwrap();
    let e = h.create().unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound), "{e}");
    assert_eq!(e.path(), p);
    assert_eq!(h.read().unwrap(), None);
}

/// Only nothing, an empty file or a PID file becomes a PID file: any other file at the
/// path (a SharedData store, a copy of `/etc/hosts`) is refused with a format error and
/// left byte-identical, even when no process holds it.
#[test]
fn create_refuses_a_file_that_is_not_a_pid_file_and_leaves_it_intact() {
    let dir = common::tempdir();
    let store = dir.path().join("store");
    fileipc::SharedData::open(&store)
        .unwrap()
        .set("k", &1)
        .unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
    for path in [&store, &hosts] {
        let before = std::fs::read(path).unwrap();
        let mut p = PidFile::open(path).unwrap();
        match p.create() {
            Err(fileipc::Error::Format { .. }) => {}
            other => panic!("{}: create gave {other:?}", path.display()),
        }
        drop(p);
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "{} changed",
            path.display()
        );
    }
    // An empty file is taken, as `touch` or `flock(1)` leave it.
    let empty = dir.path().join("empty.pid");
    std::fs::write(&empty, b"").unwrap();
    let mut p = PidFile::open(&empty).unwrap();
    assert!(p.create().unwrap());
    assert_eq!(p.read().unwrap(), Some(std::process::id()));
}

/// A PID file another program wrote without locking it (`sleep 100 & echo $! > f.pid`)
/// is reported as naming a live process and never taken over by `create` while that
/// process lives; once it has died, the file is stale and taken over.
#[test]
fn another_programs_pid_file_is_not_taken_over_while_its_process_lives() {
    let dir = common::tempdir();
    let p = dir.path().join("f.pid");
    let mut sleeper = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = sleeper.id();
    std::fs::write(&p, format!("{pid}\n")).unwrap();
    let mut mine = PidFile::open(&p).unwrap();
    assert_eq!(mine.status().unwrap(), PidStatus::AliveUnlocked { pid });
    assert!(!mine.create().unwrap());
    assert!(!mine.is_owner().unwrap());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{pid}\n"));

    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(mine.status().unwrap(), PidStatus::Stale { pid: Some(pid) });
    assert!(mine.create().unwrap());
    assert_eq!(mine.read().unwrap(), Some(std::process::id()));
}

/// The generation of a take-over is one more than the previous owner's (the file's
/// modification time) when the clock is behind it, so it never goes back.
#[test]
fn generation_never_goes_back_behind_a_slow_clock() {
    let dir = common::tempdir();
    let path = dir.path().join("app.pid");
    std::fs::write(&path, format!("{}\n", dead_pid())).unwrap();
    let future = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(4_000_000_000_000_000_007);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(future)
        .unwrap();
    let mut p = PidFile::open(&path).unwrap();
    assert!(p.create().unwrap());
    assert_eq!(p.generation(), Some(4_000_000_000_000_000_008));
    assert_eq!(p.last_generation().unwrap(), p.generation());
    assert_eq!(p.read().unwrap(), Some(std::process::id()));
}
