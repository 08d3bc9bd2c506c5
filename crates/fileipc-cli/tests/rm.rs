//! `fileipc rm`: removes every kind of primitive (a store with its side files), refuses
//! anything else untouched (exit 3), reports a missing path (exit 1).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fileipc::{Event, MessageQueue, Mutex, PidFile, Semaphore, SharedData};

fn fileipc(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .arg("rm")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
fn rm_removes_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    MessageQueue::open(p("q")).unwrap().send("x").unwrap();
    Mutex::open(p("m")).unwrap();
    Semaphore::options()
        .mode(0o660)
        .initial(3)
        .open(p("s"))
        .unwrap();
    Event::open(p("e")).unwrap().set().unwrap();
    let d = SharedData::open(p("d")).unwrap();
    d.set("k", &1).unwrap();
    assert_eq!(d.increment("n", 1).unwrap(), 1);
    drop(d);
    // A PID file whose owner (`fileipc pidfile run` and its command, which inherits the
    // lock) runs in its own process group, so that it can be killed as a whole.
    let mut owner = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["pidfile", "run"])
        .arg(p("pid"))
        .args(["--", "sleep", "60"])
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !PidFile::open(p("pid"))
        .unwrap()
        .status()
        .unwrap()
        .is_running()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the owner never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = fileipc(&[&p("pid")]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "a running owner's file: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("running"), "{}", stderr(&o));
    assert!(p("pid").exists());
    // Killed: the file stays, stale, and `rm` takes it over to remove it.
    let group = format!("-{}", owner.id());
    let killed = Command::new("kill").args(["-KILL", "--", &group]).status();
    assert!(killed.unwrap().success());
    owner.wait().unwrap();
    while PidFile::open(p("pid"))
        .unwrap()
        .status()
        .unwrap()
        .is_running()
    {
        assert!(std::time::Instant::now() < deadline, "the owner never died");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(p("pid").exists());

    let all = ["q", "m", "s", "e", "d", "pid"].map(p);
    let args: Vec<&Path> = all.iter().map(|p| p.as_path()).collect();
    let o = fileipc(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[test]
fn rm_refuses_what_is_not_a_primitive_and_reports_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let foreign = p("hosts");
    std::fs::copy("/etc/hosts", &foreign).unwrap();
    let before = std::fs::read(&foreign).unwrap();
    std::fs::create_dir(p("plain-dir")).unwrap();
    std::os::unix::fs::symlink(p("m"), p("link")).unwrap();
    Mutex::open(p("m")).unwrap();
    SharedData::open(p("d")).unwrap().set("k", &1).unwrap();

    for refused in [foreign.clone(), p("plain-dir"), p("link"), p("d-lock")] {
        let o = fileipc(&[&refused]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}: {}",
            refused.display(),
            stderr(&o)
        );
        assert!(stderr(&o).contains("not removed"), "{}", stderr(&o));
        assert!(refused.symlink_metadata().is_ok(), "{}", refused.display());
    }
    assert_eq!(std::fs::read(&foreign).unwrap(), before);

    let o = fileipc(&[&p("missing")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));

    // Several paths: each is handled, the status is the worst.
    let o = fileipc(&[&p("missing"), &p("m"), &foreign]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!p("m").exists());
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
}
