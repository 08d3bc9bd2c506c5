//! The CLI's error lines: the path and the OS reason once each, no temporary file
//! names, durations as people write them.

use std::process::{Command, Output, Stdio};

use fileipc::{Mutex, Semaphore};

fn fileipc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_os_error_is_printed_once_without_temporary_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("lock");
    let p = path.to_str().unwrap();
    for args in [
        &["mutex", "run", p, "--", "true"][..],
        &["sem", "run", p, "--", "true"][..],
        &["kv", "set", p, "k", "1"][..],
        &["event", "set", p][..],
    ] {
        let o = fileipc(args);
        let err = stderr(&o);
        // A missing directory is "not found": exit 1, as everywhere.
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: {err}"
        );
        assert_eq!(err.matches(p).count(), 1, "{args:?}: {err}");
        // The temporary file the primitive is written under is `.lock.XXXXXX.tmp`.
        assert!(!err.contains("/.lock."), "{args:?}: {err}");
    }
}

#[test]
fn timeouts_are_reported_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    let held = Mutex::open(&m).unwrap();
    held.lock_forever().unwrap();
    let o = fileipc(&[
        "mutex",
        "run",
        m.to_str().unwrap(),
        "-t",
        "150ms",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("after 150ms"), "{}", stderr(&o));

    let s = dir.path().join("s");
    let sem = Semaphore::open(&s, 1).unwrap();
    sem.acquire_forever().unwrap();
    let o = fileipc(&[
        "sem",
        "run",
        s.to_str().unwrap(),
        "-t",
        "1500ms",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("after 1.5s"), "{}", stderr(&o));
}
