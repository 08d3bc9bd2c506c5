//! Read-only queries through the real `fileipc` binary: they never create anything (no
//! primitive, no parent directory) and report a missing path as "not found" with exit 1;
//! a semaphore's stored capacity is checked against `--initial`; the event commands
//! agree on what a directory at the path is.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fileipc::{MessageQueue, Mutex, Semaphore, SharedData};

const PATIENCE: Duration = Duration::from_secs(30);

fn fileipc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every entry under `dir`, recursively, as sorted relative paths.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Polls `f` (observing other processes' effects) until true; panics after `PATIENCE`.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("a child did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts exit 1 with "not found" naming `path` on stderr.
#[track_caller]
fn assert_not_found(o: &Output, path: &Path) {
    assert_eq!(code(o), 1, "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    assert!(
        err.contains("not found") && err.contains(s(path)),
        "stderr: {err}"
    );
}

/// The issue's scenario: a monitoring `sem value ./encoders` before the README's
/// `sem run --initial 4` loop used to create the semaphore with 1 permit, so the loop
/// then ran one job at a time. The query now creates nothing, and 4 jobs run at once.
#[test]
fn sem_value_on_missing_path_creates_nothing_and_initial_4_runs_4() {
    let dir = tempfile::tempdir().unwrap();
    let sem = dir.path().join("encoders");
    assert_not_found(&fileipc(&["sem", "value", s(&sem)]), &sem);
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));

    let go = dir.path().join("go");
    let mut jobs: Vec<Child> = (0..5)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_fileipc"))
                .args(["sem", "run", s(&sem), "--initial", "4", "--forever", "--"])
                .args([
                    "sh",
                    "-c",
                    "touch \"$1.$2\"; while [ ! -e \"$3\" ]; do sleep 0.01; done",
                ])
                .args(["sh", s(&dir.path().join("running")), &i.to_string(), s(&go)])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let running = || {
        tree(dir.path())
            .iter()
            .filter(|n| n.starts_with("running."))
            .count()
    };
    eventually("4 jobs to run at once", || running() == 4);
    assert_eq!(stdout(&fileipc(&["sem", "value", s(&sem)])).trim(), "0");
    std::fs::write(&go, "").unwrap();
    for j in &mut jobs {
        assert!(wait_exit(j).success());
    }
    assert_eq!(running(), 5);
    assert_eq!(Semaphore::open_existing(&sem).unwrap().value().unwrap(), 4);
}

/// `--initial` that disagrees with the stored capacity is an error naming both values
/// (exit 3), for `run` and for `value`; without `--initial` the stored capacity is used;
/// `stat` shows it.
#[test]
fn initial_disagreeing_with_the_stored_capacity_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sem = dir.path().join("encoders");
    Semaphore::open(&sem, 1).unwrap();
    let o = fileipc(&["sem", "run", s(&sem), "--initial", "4", "--", "true"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("capacity 1") && err.contains("the 4 asked for") && err.contains(s(&sem)),
        "{err}"
    );
    let o = fileipc(&["sem", "value", s(&sem), "--initial", "4"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("capacity 1"), "{}", stderr(&o));

    assert_eq!(code(&fileipc(&["sem", "run", s(&sem), "--", "true"])), 0);
    assert_eq!(
        code(&fileipc(&[
            "sem",
            "run",
            s(&sem),
            "--initial",
            "1",
            "--",
            "true"
        ])),
        0
    );
    let o = fileipc(&["stat", s(&sem), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["capacity"], 1, "{v}");

    // Without `--initial`, a missing semaphore is still created, with 1 permit.
    let fresh = dir.path().join("fresh");
    assert_eq!(code(&fileipc(&["sem", "run", s(&fresh), "--", "true"])), 0);
    assert_eq!(Semaphore::open_existing(&fresh).unwrap().capacity(), 1);
}

/// Every read-only query on a missing path (and on a path whose directories are
/// missing) exits 1 with "not found" naming the path, and creates nothing.
#[test]
fn queries_on_missing_paths_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let queries: &[&[&str]] = &[
        &["sem", "value"],
        &["mutex", "status"],
        &["kv", "get", "@", "k"],
        &["kv", "keys"],
        &["kv", "dump"],
        &["queue", "count"],
        &["pidfile", "check"],
        &["stat"],
        &["event", "status"],
    ];
    for q in queries {
        for rel in ["x", "a/b/x"] {
            if q[0] == "event" && rel == "x" {
                // An event whose file is missing is clear: that is its answer.
                continue;
            }
            let path = dir.path().join(rel);
            let mut args: Vec<&str> = q.iter().copied().filter(|a| *a != "@").collect();
            let at = if q.contains(&"@") { 2 } else { args.len() };
            args.insert(at, s(&path));
            let o = fileipc(&args);
            assert_not_found(&o, &path);
            assert!(
                tree(dir.path()).is_empty(),
                "{args:?} created {:?}",
                tree(dir.path())
            );
        }
    }
    // `stat /nonexistent/x` too.
    let o = fileipc(&["stat", "/nonexistent-fileipc-dir/x"]);
    assert_not_found(&o, Path::new("/nonexistent-fileipc-dir/x"));
}

/// The queries still answer on existing primitives (exit codes unchanged).
#[test]
fn queries_on_existing_primitives_answer() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    Semaphore::open(p("sem"), 3).unwrap();
    Mutex::open(p("lock")).unwrap();
    SharedData::open(p("kv")).unwrap().set("k", &7).unwrap();
    MessageQueue::open(p("q")).unwrap().send("m").unwrap();
    assert_eq!(
        stdout(&fileipc(&["sem", "value", s(&p("sem"))])).trim(),
        "3"
    );
    assert_eq!(code(&fileipc(&["mutex", "status", s(&p("lock"))])), 1);
    assert_eq!(
        stdout(&fileipc(&["kv", "get", s(&p("kv")), "k"])).trim(),
        "7"
    );
    assert_eq!(code(&fileipc(&["kv", "get", s(&p("kv")), "nokey"])), 1);
    assert_eq!(stdout(&fileipc(&["kv", "keys", s(&p("kv"))])).trim(), "k");
    assert_eq!(
        stdout(&fileipc(&["queue", "count", s(&p("q"))])).trim(),
        "1"
    );
    // An empty directory holds no queue: not found, and it stays empty.
    std::fs::create_dir(p("empty")).unwrap();
    assert_not_found(&fileipc(&["queue", "count", s(&p("empty"))]), &p("empty"));
    assert!(tree(&p("empty")).is_empty());
}

/// A directory at an event's path is reported the same way (message and exit code) by
/// `event wait`, `event status` and `event clear`, including one that appears while
/// `wait` waits (it used to end the wait as "set", exit 0).
#[test]
fn event_path_that_is_a_directory_is_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("ready");
    let mut waiter = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["event", "wait", s(&ev), "--timeout", "60s"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The waiter may start before or after the directory appears: both must agree.
    std::fs::create_dir(&ev).unwrap();
    let st = wait_exit(&mut waiter);
    let mut wait_err = String::new();
    std::io::Read::read_to_string(&mut waiter.stderr.take().unwrap(), &mut wait_err).unwrap();
    let status = fileipc(&["event", "status", s(&ev)]);
    let clear = fileipc(&["event", "clear", s(&ev)]);
    let wait_again = fileipc(&["event", "wait", s(&ev), "--timeout", "1s"]);
    assert_eq!(st.code(), Some(3), "wait: {wait_err}");
    for o in [&status, &clear, &wait_again] {
        assert_eq!(code(o), 3, "{}", stderr(o));
        assert_eq!(stderr(o), wait_err);
    }
    assert!(
        wait_err.contains("is a directory") && wait_err.contains(s(&ev)),
        "{wait_err}"
    );
    assert!(ev.is_dir(), "clear must not remove a directory");
}

/// Mounts a tmpfs on `dir` (root only); `false`, with a loud skip (a failure under
/// `FILEIPC_REQUIRE_ROOT_TESTS`), where that is impossible.
fn mount_tmpfs(test: &str, dir: &Path) -> bool {
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
        .arg(dir)
        .output();
    if matches!(&o, Ok(o) if o.status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("FILEIPC_REQUIRE_ROOT_TESTS").is_none(),
        "{test} needs root (a tmpfs), and FILEIPC_REQUIRE_ROOT_TESTS is set: {o:?}"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: needs root: {test} (a tmpfs)");
    false
}

/// Unmounts on drop.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.0).status();
        if !matches!(ok, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

/// `kv get`, `kv keys`, `kv dump` and `stat` read a store on a read-only mount (they
/// failed with "Read-only file system", exit 3); `kv set` fails naming the path and
/// saying the store is read-only.
#[test]
fn kv_queries_and_stat_read_a_store_on_a_read_only_mount() {
    let parent = tempfile::tempdir().unwrap();
    let mnt = parent.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    if !mount_tmpfs(
        "kv_queries_and_stat_read_a_store_on_a_read_only_mount",
        &mnt,
    ) {
        return;
    }
    let _mounted = Mounted(&mnt);
    let kv = mnt.join("state");
    {
        let d = SharedData::open(&kv).unwrap();
        d.set("a", &1).unwrap();
        d.set("b", &"x").unwrap();
    }
    let o = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |args: &[&str]| {
        let o = fileipc(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(run(&["kv", "get", s(&kv), "a"]), "1\n");
    assert_eq!(run(&["kv", "keys", s(&kv)]), "a\nb\n");
    assert_eq!(run(&["kv", "dump", s(&kv)]).trim(), r#"{"a":1,"b":"x"}"#);
    let v: serde_json::Value = serde_json::from_str(&run(&["stat", s(&kv), "--json"])).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["keys"].as_u64()),
        (Some("kv"), Some(2)),
        "{v}"
    );
    let o = fileipc(&["kv", "set", s(&kv), "a", "2"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(s(&kv)) && stderr(&o).contains("read-only"),
        "{}",
        stderr(&o)
    );
    assert_eq!(run(&["kv", "get", s(&kv), "a"]), "1\n");
}
