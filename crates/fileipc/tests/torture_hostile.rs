//! Hostile paths: symbolic links planted at state paths, state files
//! of another user or writable by others, and strange path names.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use fileipc::{
    Error, Event, MessageQueue, Mutex, PidFile, QueueOptions, Semaphore, SharedData,
    SharedDataOptions,
};

const VICTIM: &[u8] = b"precious data the attacker wants clobbered\n";

/// Every way a primitive can touch the file at `path` when first used.
fn use_mutex(p: &Path) -> fileipc::Result<()> {
    let m = Mutex::open(p)?;
    assert!(m.try_lock()?);
    m.unlock()
}
fn use_semaphore(p: &Path) -> fileipc::Result<()> {
    let s = Semaphore::open(p, 2)?;
    assert!(s.try_acquire()?);
    s.release()
}
fn use_queue(p: &Path) -> fileipc::Result<()> {
    let q = QueueOptions::new().segment_size(64 << 10).open(p)?;
    q.send("hello")?;
    assert_eq!(q.try_recv()?.unwrap(), "hello");
    Ok(())
}
fn use_kv(p: &Path) -> fileipc::Result<()> {
    let kv = SharedData::open(p)?;
    kv.set("k", &1)?;
    assert_eq!(kv.get::<i64>("k")?, Some(1));
    Ok(())
}
fn use_pidfile(p: &Path) -> fileipc::Result<()> {
    let mut pf = PidFile::open(p)?;
    assert!(pf.create()?);
    assert_eq!(pf.read()?, Some(std::process::id()));
    pf.remove()
}
fn use_event(p: &Path) -> fileipc::Result<()> {
    let ev = Event::open(p)?;
    ev.set()?;
    assert!(ev.is_set()?);
    ev.clear()
}

type Use = fn(&Path) -> fileipc::Result<()>;

/// The state paths of each primitive rooted at `base`: (primitive, path handed to
/// `open`, files it keeps there, user).
fn primitives() -> Vec<(&'static str, &'static str, Vec<&'static str>, Use)> {
    vec![
        ("mutex", "m", vec!["m"], use_mutex as Use),
        ("semaphore", "s", vec!["s"], use_semaphore),
        (
            "queue",
            "q",
            vec!["q/control", "q/seg-0000000000000000.log"],
            use_queue,
        ),
        (
            "shared_data",
            "kv",
            vec!["kv", "kv-lock", "kv-wal", "kv-shm"],
            use_kv,
        ),
        ("pidfile", "app.pid", vec!["app.pid"], use_pidfile),
        ("event", "ev", vec!["ev"], use_event),
    ]
}

#[test]
fn a_symlink_planted_at_any_state_path_is_never_followed() {
    for (name, open_at, files, use_it) in primitives() {
        for file in files {
            for dangling in [false, true] {
                let dir = common::tempdir();
                let base = dir.path();
                let victim = base.join("victim");
                if !dangling {
                    std::fs::write(&victim, VICTIM).unwrap();
                    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                }
                if file.starts_with("q/seg") {
                    // Segment files live in an existing queue.
                    QueueOptions::new()
                        .segment_size(64 << 10)
                        .open(base.join("q"))
                        .unwrap();
                }
                let link = base.join(file);
                if let Some(parent) = link.parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                symlink(&victim, &link).unwrap();
                let r = use_it(&base.join(open_at));
                // Whatever happened, the target is untouched (or still absent).
                if dangling {
                    assert!(
                        std::fs::symlink_metadata(&victim).is_err(),
                        "{name}: a dangling link at {file} made {} appear",
                        victim.display()
                    );
                } else {
                    assert_eq!(
                        std::fs::read(&victim).unwrap(),
                        VICTIM,
                        "{name}: the target of a link at {file} was changed ({r:?})"
                    );
                    let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o644, "{name}: target's mode changed");
                }
                match (&r, name) {
                    // The event is set exactly while an entry exists at its path: a link
                    // there reads as "set" and clearing removes the link itself.
                    (Ok(()), "event") => {}
                    // SQLite opens its -wal and -shm files itself: it refuses to follow a
                    // link (O_NOFOLLOW) or unlinks a stale -wal and creates its own; the
                    // target is untouched either way (checked above).
                    (_, "shared_data") if file.ends_with("-wal") || file.ends_with("-shm") => {}
                    (Err(Error::Symlink { path }), _) => {
                        assert!(
                            path.ends_with(file),
                            "{name}: {path:?} for a link at {file}"
                        )
                    }
                    (r, _) => panic!("{name}: a link at {file} gave {r:?}, not Error::Symlink"),
                }
                eprintln!("{name}: link at {file} (dangling: {dangling}): {r:?}");
            }
        }
    }
}

#[test]
fn a_symlink_at_the_queue_directory_is_never_followed() {
    let dir = common::tempdir();
    let target = dir.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    let link = dir.path().join("q");
    symlink(&target, &link).unwrap();
    let r = MessageQueue::open(&link);
    assert!(
        matches!(r, Err(Error::Symlink { .. })),
        "a queue opened through a link: {r:?}"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), None).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn refused(name: &str, what: &str, r: fileipc::Result<()>) {
    match r {
        Err(Error::Invalid { path, detail }) => {
            eprintln!("{name} ({what}): refused: {}: {detail}", path.display())
        }
        other => panic!("{name}: a state file {what} was accepted: {other:?}"),
    }
}

#[test]
fn state_files_of_another_user_or_writable_by_others_are_refused() {
    if !is_root() {
        common::skip(
            "state_files_of_another_user_or_writable_by_others_are_refused",
            "chown needs root",
        );
        return;
    }
    // (primitive, open path, file to tamper with, user)
    let cases: Vec<(&str, &str, &str, Use)> = vec![
        ("mutex", "m", "m", use_mutex),
        ("semaphore", "s", "s", use_semaphore),
        ("queue", "q", "q/control", use_queue),
        ("shared_data", "kv", "kv", use_kv),
        ("shared_data", "kv", "kv-lock", use_kv),
        ("pidfile", "app.pid", "app.pid", use_pidfile),
    ];
    for (name, open_at, file, use_it) in cases {
        for tamper in ["owned by uid 65534", "mode 0666", "mode 0620"] {
            let dir = common::tempdir();
            let p = dir.path().join(open_at);
            if name == "pidfile" {
                // A stale file (no owner holds its lock): the case the checks are for,
                // a live owner's file is never written.
                std::fs::write(&p, "12345\n").unwrap();
                chmod(&p, 0o644);
            } else {
                use_it(&p).unwrap();
            }
            let f = dir.path().join(file);
            match tamper {
                "owned by uid 65534" => chown(&f, 65534),
                "mode 0666" => chmod(&f, 0o666),
                _ => chmod(&f, 0o620),
            }
            refused(name, &format!("{file} {tamper}"), use_it(&p));
        }
    }
    // A group-shared mode expects files of other users of the group, not loose bits
    // beyond it.
    let dir = common::tempdir();
    let p = dir.path().join("m");
    Mutex::options().mode(0o660).open(&p).unwrap();
    chown(&p, 65534);
    let m = Mutex::options().mode(0o660).open(&p).unwrap();
    assert!(m.try_lock().unwrap());
    m.unlock().unwrap();
    chmod(&p, 0o666);
    refused(
        "mutex",
        "0666 opened with mode 0660",
        Mutex::options().mode(0o660).open(&p).map(drop),
    );
    let p = dir.path().join("kv");
    SharedDataOptions::new().mode(0o660).open(&p).unwrap();
    chown(&p, 65534);
    SharedDataOptions::new().mode(0o660).open(&p).unwrap();
}

// --- strange names ---------------------------------------------------------------------

fn strange_dirs(base: &Path) -> Vec<(String, PathBuf)> {
    let mut v = vec![
        ("spaces".to_owned(), base.join("with some spaces")),
        ("newline".to_owned(), base.join("new\nline")),
        (
            "non-UTF-8".to_owned(),
            base.join(OsStr::from_bytes(b"bytes\xff\xfe\x80")),
        ),
        ("leading dash".to_owned(), base.join("-rf")),
    ];
    // About 4,000 characters: nested directories of 200-character names.
    let mut deep = base.to_owned();
    while deep.as_os_str().len() < 3_700 {
        deep.push("d".repeat(200));
    }
    v.push((format!("{}-char", deep.as_os_str().len()), deep));
    v
}

#[test]
fn strange_paths_work() {
    let dir = common::tempdir();
    for (what, d) in strange_dirs(dir.path()) {
        std::fs::create_dir_all(&d).unwrap();
        for (name, open_at, _, use_it) in primitives() {
            let p = d.join(open_at);
            // The long path leaves ~300 characters for names, enough for every
            // primitive's files (the queue's control and segment names included).
            match use_it(&p) {
                Ok(()) => {
                    eprintln!(
                        "{name}: path with {what} ({} bytes): ok",
                        p.as_os_str().len()
                    )
                }
                // SQLite opens paths of at most 512 bytes: refused up front, saying so.
                Err(Error::Invalid { detail, .. })
                    if name == "shared_data" && p.as_os_str().len() > 512 =>
                {
                    assert!(detail.contains("SQLite opens paths of at most"), "{detail}");
                    eprintln!("{name}: path with {what}: refused clearly: {detail}");
                }
                Err(e) => panic!("{name} at a path with {what}: {e}"),
            }
        }
    }
}

#[test]
fn paths_over_the_limits_fail_clearly() {
    let dir = common::tempdir();
    // A file name of 255 bytes is allowed, but the temporary names some primitives
    // create beside it (".NAME.XXXXXX.tmp") are not: a clear error, never a panic.
    let long_name = dir.path().join("n".repeat(255));
    // A path longer than PATH_MAX (4096).
    let mut too_deep = dir.path().to_owned();
    while too_deep.as_os_str().len() < 4_000 {
        too_deep.push("d".repeat(200));
    }
    std::fs::create_dir_all(&too_deep).unwrap();
    let too_long = too_deep.join("x".repeat(200));
    for (i, p) in [long_name, too_long].into_iter().enumerate() {
        for (name, _, _, use_it) in primitives() {
            // A fresh directory per primitive so that they do not meet each other's files.
            let p = p
                .with_file_name(format!("{name}{i}"))
                .join(p.file_name().unwrap());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let r = use_it(&p);
            match &r {
                Ok(()) => eprintln!("{name}: {} bytes: works", p.as_os_str().len()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        e.io_kind().is_some() || matches!(e, Error::Invalid { .. }),
                        "{name}: unexpected error kind: {e:?}"
                    );
                    assert!(!msg.is_empty());
                    eprintln!(
                        "{name}: {} bytes: {:?}",
                        p.as_os_str().len(),
                        e.io_kind().map(|k| k.to_string()).unwrap_or(msg)
                    );
                }
            }
        }
    }
}
