//! Removing primitives: `destroy`/`remove` on each kind (SharedData with its side
//! files), what a live holder in another process sees, and `Namespace`.

mod common;

use std::path::Path;

use common::{PATIENCE, Proc, say};
use fileipc::{Event, MessageQueue, Mutex, Namespace, PidFile, Semaphore, SharedData};

type R = Result<(), Box<dyn std::error::Error>>;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "hold-mutex" => {
            let m = Mutex::open(&args[0]).unwrap();
            let g = m.guard_forever().unwrap();
            say("locked");
            common::eventually(PATIENCE, "go", || Path::new(&args[1]).exists());
            // The lock file was removed meanwhile: the lock is still ours to release.
            assert!(m.is_locked().unwrap());
            g.unlock().unwrap();
            say("unlocked");
        }
        "write-store" => {
            let d = SharedData::open(&args[0]).unwrap();
            d.set("k", &1).unwrap();
            say("ready");
            common::eventually(PATIENCE, "go", || Path::new(&args[1]).exists());
            let e = d.set("k", &2).unwrap_err();
            assert!(e.to_string().contains(&args[0]), "{e}");
            assert_eq!(d.get::<i64>("k").unwrap(), Some(1));
            say("refused");
        }
        "namespace" => {
            let ns = Namespace::new_in(&args[0]).unwrap();
            let q = ns.queue("q").unwrap();
            q.send("x").unwrap();
            let m = ns.mutex("m").unwrap();
            let _g = m.guard_forever().unwrap();
            let s = ns.semaphore("s", 2).unwrap();
            let _p = s.permit_forever().unwrap();
            ns.event("e").unwrap().set().unwrap();
            let mut pid = ns.pid_file("pid").unwrap();
            assert!(pid.create().unwrap());
            let d = ns.shared_data("d").unwrap();
            d.set("k", &1).unwrap();
            say(ns.path().display());
            common::eventually(PATIENCE, "go", || Path::new(&args[1]).exists());
            // Dropped while every handle is still open.
            drop(ns);
            say("dropped");
        }
        other => panic!("unknown role {other}"),
    });
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_primitive_can_be_removed_with_all_its_files() -> R {
    let dir = common::tempdir();
    let p = |n: &str| dir.path().join(n);
    let m = Mutex::open(p("m"))?;
    let _g = m.guard_forever()?;
    let s = Semaphore::open(p("s"), 2)?;
    let _permit = s.permit_forever()?;
    let e = Event::open(p("e"))?;
    e.set()?;
    let q = MessageQueue::open(p("q"))?;
    q.send("x")?;
    let mut pid = PidFile::open(p("pid"))?;
    assert!(pid.create()?);
    let d = SharedData::open(p("d"))?;
    d.set("k", &1)?;
    assert_eq!(d.increment("n", 1)?, 1);
    let before = names(dir.path());
    for side in ["d-wal", "d-shm", "d-lock", "d-board"] {
        assert!(before.iter().any(|n| n == side), "{side} in {before:?}");
    }

    m.destroy()?;
    s.destroy()?;
    e.destroy()?;
    q.destroy()?;
    pid.remove()?;
    d.destroy()?;
    assert_eq!(
        names(dir.path()),
        Vec::<String>::new(),
        "before: {before:?}"
    );
    // Destroying what is gone already is not an error.
    m.destroy()?;
    s.destroy()?;
    e.destroy()?;
    Ok(())
}

/// A destroy removes a file another process holds a lock on: that holder keeps its lock
/// and releases it normally; a handle opened at the path afterwards is a new mutex.
#[test]
fn a_live_mutex_holder_is_unaffected_by_destroy() -> R {
    let dir = common::tempdir();
    let (path, go) = (dir.path().join("m"), dir.path().join("go"));
    let mut child = Proc::spawn(
        "hold-mutex",
        &[path.to_str().unwrap(), go.to_str().unwrap()],
    );
    child.expect("locked");
    let m = Mutex::open(&path)?;
    assert!(m.is_locked()?);
    m.destroy()?;
    assert!(!path.exists());
    let fresh = Mutex::open(&path)?;
    assert!(fresh.try_lock()?, "a new mutex at the path");
    std::fs::write(&go, "")?;
    child.expect("unlocked");
    child.wait_success();
    fresh.unlock()?;
    Ok(())
}

/// After a destroy, a handle another process opened before cannot write (its writes
/// would go to a removed file), still reads what it had, and closing it does not remove
/// the side files of a new store created at the path meanwhile.
#[test]
fn a_live_shared_data_handle_is_refused_after_destroy() -> R {
    let dir = common::tempdir();
    let (path, go) = (dir.path().join("d"), dir.path().join("go"));
    let mut child = Proc::spawn(
        "write-store",
        &[path.to_str().unwrap(), go.to_str().unwrap()],
    );
    child.expect("ready");
    SharedData::open(&path)?.destroy()?;
    assert_eq!(names(dir.path()), Vec::<String>::new());
    let fresh = SharedData::open(&path)?;
    fresh.set("k", &5)?;
    std::fs::write(&go, "")?;
    child.expect("refused");
    child.wait_success();
    // The child closed its handle on the removed store: the new store's WAL, named as
    // the old one's was, must survive (SQLite checkpoints and deletes the WAL on close
    // only while the database file is linked), and a handle opened now sees it.
    assert!(dir.path().join("d-wal").exists());
    assert_eq!(SharedData::open(&path)?.get::<i64>("k")?, Some(5));
    fresh.set("k", &6)?;
    drop(fresh);
    assert_eq!(SharedData::open(&path)?.get::<i64>("k")?, Some(6));
    Ok(())
}

/// A namespace dropped in another process removes its directory and every primitive in
/// it, even with their handles still open.
#[test]
fn a_namespace_is_removed_on_drop() {
    let parent = common::tempdir();
    let go = parent.path().join("go");
    let mut child = Proc::spawn(
        "namespace",
        &[parent.path().to_str().unwrap(), go.to_str().unwrap()],
    );
    let ns = std::path::PathBuf::from(child.expect_line(PATIENCE));
    assert!(ns.starts_with(parent.path()), "{}", ns.display());
    let inside = names(&ns);
    for n in ["d", "e", "m", "pid", "q", "s"] {
        assert!(inside.iter().any(|i| i == n), "{n} in {inside:?}");
    }
    std::fs::write(&go, "").unwrap();
    child.expect("dropped");
    assert!(!ns.exists(), "{} left behind", ns.display());
    child.wait_success();
    assert_eq!(names(parent.path()), vec!["go".to_owned()]);
}

#[test]
fn a_kept_namespace_stays_and_close_removes() -> R {
    let parent = common::tempdir();
    let ns = Namespace::new_in(parent.path())?;
    ns.mutex("m")?;
    let kept = ns.keep();
    assert!(kept.join("m").exists());
    let ns = Namespace::new_in(parent.path())?;
    let path = ns.path().to_owned();
    ns.event("e")?.set()?;
    ns.close()?;
    assert!(!path.exists());
    Ok(())
}
