//! The API's common shape across the six primitives: one builder style, one rule for
//! parent directories, `try_clone`, and what the `_forever` calls return.

mod common;

use std::io::ErrorKind;
use std::path::Path;

use common::{PATIENCE, Proc, say};
use fileipc::{
    Event, EventOptions, MessageQueue, Mutex, MutexOptions, PidFile, PidFileOptions, QueueOptions,
    Semaphore, SemaphoreOptions, SharedData, SharedDataOptions,
};

type R = Result<(), Box<dyn std::error::Error>>;

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "set-event" => {
            let e = Event::open(&args[0]).unwrap();
            say("opened");
            common::eventually(PATIENCE, "the go file", || Path::new(&args[1]).exists());
            e.set().unwrap();
        }
        other => panic!("unknown role {other}"),
    });
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Each options type: `new()` equals `Default`, setters chain by value, `open(&self,
/// path)` can be called again with the same options.
#[test]
fn one_builder_style_for_all_six() -> R {
    let dir = common::tempdir();
    let p = |n: &str| dir.path().join(n);

    let o = MutexOptions::new().mode(0o640);
    assert_eq!(MutexOptions::new(), MutexOptions::default());
    o.open(p("m1"))?;
    o.open(p("m2"))?;
    assert_eq!(mode_of(&p("m1")), 0o640);

    let o = SemaphoreOptions::new().mode(0o640).initial(3);
    assert_eq!(SemaphoreOptions::new(), SemaphoreOptions::default());
    assert_eq!(o.open(p("s1"))?.value()?, 3);
    assert_eq!(o.open(p("s2"))?.value()?, 3);
    assert_eq!(SemaphoreOptions::new().open(p("s3"))?.value()?, 1);
    assert_eq!(mode_of(&p("s1")), 0o640);

    let o = EventOptions::new().mode(0o640);
    assert_eq!(EventOptions::new(), EventOptions::default());
    o.open(p("e1"))?.set()?;
    o.open(p("e2"))?.set()?;
    assert_eq!(mode_of(&p("e1")), 0o640);

    let o = PidFileOptions::new().mode(0o640);
    assert_eq!(PidFileOptions::new(), PidFileOptions::default());
    let mut first = o.open(p("p1"))?;
    let mut second = o.open(p("p2"))?;
    assert!(first.create()? && second.create()?);
    assert_eq!(mode_of(&p("p2")), 0o640);

    let o = QueueOptions::new().mode(0o640).durable(true);
    o.open(p("q1"))?.send("x")?;
    o.open(p("q2"))?.send("x")?;
    assert_eq!(mode_of(&p("q1").join("control")), 0o640);

    let o = SharedDataOptions::new().mode(0o640).durable(true);
    assert_eq!(SharedDataOptions::new(), SharedDataOptions::default());
    o.open(p("d1"))?.set("k", &1)?;
    o.open(p("d2"))?.set("k", &1)?;
    assert_eq!(mode_of(&p("d1")), 0o640);
    Ok(())
}

/// The rule: no primitive creates a missing parent directory; the error is `NotFound`
/// and names the primitive's path.
#[test]
fn no_primitive_creates_parent_directories() {
    let dir = common::tempdir();
    let missing = dir.path().join("missing");
    let p = |n: &str| missing.join(n);
    let check = |what: &str, r: fileipc::Result<()>, path: &Path| {
        let e = r.expect_err(what);
        assert_eq!(e.io_kind(), Some(ErrorKind::NotFound), "{what}: {e}");
        assert_eq!(e.path(), path, "{what}: {e}");
        assert!(!missing.exists(), "{what} created {}", missing.display());
    };
    check("mutex", Mutex::open(p("m")).map(drop), &p("m"));
    check("semaphore", Semaphore::open(p("s"), 1).map(drop), &p("s"));
    check("event", Event::open(p("e")).and_then(|e| e.set()), &p("e"));
    check(
        "pid file",
        PidFile::open(p("pid")).and_then(|mut f| f.create().map(drop)),
        &p("pid"),
    );
    check("queue", MessageQueue::open(p("q")).map(drop), &p("q"));
    check("shared data", SharedData::open(p("d")).map(drop), &p("d"));
}

/// `try_clone` on each primitive whose handle can be shared gives an independent
/// handle on the same path and options.
#[test]
fn try_clone_where_a_handle_can_be_shared() -> R {
    let dir = common::tempdir();
    let p = |n: &str| dir.path().join(n);

    let m = Mutex::options().mode(0o640).open(p("m"))?;
    let m2 = m.try_clone()?;
    let _g = m.try_guard()?.expect("free");
    assert!(!m2.try_lock()?);

    let s = Semaphore::open(p("s"), 1)?;
    let s2 = s.try_clone()?;
    let _permit = s.try_permit()?.expect("free");
    assert!(!s2.try_acquire()?);

    let e = Event::options().mode(0o640).open(p("e"))?;
    let e2 = e.try_clone()?;
    e2.set()?;
    assert!(e.is_set()?);
    assert_eq!(mode_of(&p("e")), 0o640);

    let q = QueueOptions::new().mode(0o640).open(p("q"))?;
    let q2 = q.try_clone()?;
    q.send("one")?;
    assert_eq!(q2.recv_forever()?, "one");

    let d = SharedData::options().mode(0o640).open(p("d"))?;
    let d2 = d.try_clone()?;
    d.set("k", &7)?;
    assert_eq!(d2.get::<i64>("k")?, Some(7));
    Ok(())
}

/// `Event::wait_forever` returns `()` once another process set the event, like the
/// other `_forever` calls.
#[test]
fn event_wait_forever_returns_unit_when_set_by_another_process() -> R {
    let dir = common::tempdir();
    let (path, go) = (dir.path().join("e"), dir.path().join("go"));
    let e = Event::open(&path)?;
    let mut child = Proc::spawn("set-event", &[path.to_str().unwrap(), go.to_str().unwrap()]);
    child.expect("opened");
    std::fs::write(&go, "")?;
    let () = e.wait_forever()?;
    assert!(e.is_set()?);
    child.wait_success();
    Ok(())
}
