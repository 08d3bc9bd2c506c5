//! Drives every `fileipc` subcommand as a real process, with its exit codes, and checks
//! that the shell and the library see the same primitives.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fileipc::{Event, MessageQueue, Mutex, PidFile, Semaphore, SharedData};

const PATIENCE: Duration = Duration::from_secs(30);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
}

fn fileipc(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

fn fileipc_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(
        code(&o),
        0,
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fileipc-cli-")
        .tempdir()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Polls `f` (observing another process's effect, not as a delay) until true; panics
/// after `PATIENCE`.
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
        assert!(start.elapsed() < PATIENCE, "child still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `fileipc ... run` guard whose command is a shell that records its PID and sleeps:
/// starts `fileipc ARGS -- sh -c ...` and returns once the command runs, with the
/// guard process and the command's PID.
fn start_guard(dir: &Path, args: &[&str]) -> (Child, u32) {
    let pidf = dir.join("cmd.pid");
    let script = format!("echo $$ > {}; exec sleep 60", s(&pidf));
    let mut all = args.to_vec();
    all.extend(["--", "sh", "-c", &script]);
    let guard = bin().args(&all).spawn().unwrap();
    eventually("the command to start", || {
        std::fs::read_to_string(&pidf).is_ok_and(|s| s.ends_with('\n'))
    });
    let cmd_pid = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (guard, cmd_pid)
}

fn kill(pid: u32) {
    let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
}

#[test]
fn queue_commands_and_exit_codes() {
    let d = tmp();
    let q = d.path().join("q");
    ok(fileipc(&["queue", "send", s(&q), "one", "two"]));
    ok(fileipc_stdin(&["queue", "send", s(&q)], b"three\nfour\n"));
    assert_eq!(ok(fileipc(&["queue", "count", s(&q)])), "4\n");
    assert_eq!(ok(fileipc(&["queue", "recv", s(&q)])), "one\n");
    assert_eq!(
        ok(fileipc(&["queue", "recv", s(&q), "-n", "2"])),
        "two\nthree\n"
    );
    assert_eq!(ok(fileipc(&["queue", "recv", s(&q), "--all"])), "four\n");
    let empty = fileipc(&["queue", "recv", s(&q), "--timeout", "100ms"]);
    assert_eq!(code(&empty), 1, "{}", stderr(&empty));
    assert_eq!(stdout(&empty), "");
    ok(fileipc(&["queue", "send", s(&q), "x"]));
    ok(fileipc(&["queue", "clear", s(&q)]));
    assert_eq!(ok(fileipc(&["queue", "count", s(&q)])), "0\n");
    ok(fileipc(&["queue", "destroy", s(&q)]));
    assert!(!q.exists());
}

#[test]
fn queue_shell_and_library_interoperate() {
    let d = tmp();
    let q = d.path().join("spool");
    ok(fileipc(&["queue", "send", s(&q), "from the shell"]));
    let lib = MessageQueue::open(&q).unwrap();
    let m = lib.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(&m[..], b"from the shell");
    lib.send("from rust").unwrap();
    assert_eq!(ok(fileipc(&["queue", "recv", s(&q)])), "from rust\n");

    // A blocked shell receiver is woken by a library send.
    let mut child = bin()
        .args(["queue", "recv", s(&q)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    lib.send("wake up").unwrap();
    let out = wait_exit(&mut child);
    assert!(out.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
    assert_eq!(text, "wake up\n");
}

#[test]
fn queue_path_that_is_a_file_is_an_error() {
    let d = tmp();
    let f = d.path().join("file");
    std::fs::write(&f, "hello").unwrap();
    let o = fileipc(&["queue", "send", s(&f), "x"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains(s(&f)), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
}

#[test]
fn mutex_run_and_status() {
    let d = tmp();
    let m = d.path().join("m");
    let out = ok(fileipc(&[
        "mutex",
        "run",
        s(&m),
        "--",
        "sh",
        "-c",
        "echo inside",
    ]));
    assert_eq!(out, "inside\n");
    let st = fileipc(&["mutex", "status", s(&m)]);
    assert_eq!(code(&st), 1);
    // Exit code passes through.
    let o = fileipc(&["mutex", "run", s(&m), "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7);

    let lib = Mutex::open(&m).unwrap();
    assert!(lib.try_lock().unwrap());
    assert_eq!(code(&fileipc(&["mutex", "status", s(&m)])), 0);
    let busy = fileipc(&["mutex", "run", s(&m), "--timeout", "50ms", "--", "true"]);
    assert_eq!(code(&busy), 1, "{}", stderr(&busy));
    lib.unlock().unwrap();
    assert_eq!(code(&fileipc(&["mutex", "status", s(&m)])), 1);
}

#[test]
fn mutex_run_releases_when_cmd_is_killed() {
    let d = tmp();
    let m = d.path().join("m");
    let (mut guard, cmd_pid) = start_guard(d.path(), &["mutex", "run", s(&m)]);
    let lib = Mutex::open(&m).unwrap();
    assert!(lib.is_locked().unwrap());
    kill(cmd_pid);
    let st = wait_exit(&mut guard);
    assert_eq!(st.code(), Some(128 + 9));
    assert!(lib.lock_timeout(PATIENCE).unwrap());
    lib.unlock().unwrap();
}

/// Killing `fileipc` alone changes nothing: the command inherited the descriptor that
/// holds the lock, so a second `mutex run --timeout 0` is refused until the command is
/// gone, then succeeds (as with `flock(1)`).
#[test]
fn mutex_run_keeps_the_lock_while_the_command_runs_after_fileipc_is_killed() {
    let d = tmp();
    let m = d.path().join("m");
    let (mut guard, cmd_pid) = start_guard(d.path(), &["mutex", "run", s(&m)]);
    kill(guard.id());
    wait_exit(&mut guard);
    let second = || fileipc(&["mutex", "run", s(&m), "--timeout", "0", "--", "true"]);
    let refused = second();
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    let lib = Mutex::open(&m).unwrap();
    assert!(!lib.lock_timeout(Duration::from_millis(100)).unwrap());
    assert!(lib.is_locked().unwrap());
    kill(cmd_pid);
    assert!(
        lib.lock_timeout(PATIENCE).unwrap(),
        "free once the command is gone"
    );
    lib.unlock().unwrap();
    assert_eq!(code(&second()), 0);
}

#[test]
fn sem_commands() {
    let d = tmp();
    let p = d.path().join("sem");
    // A query creates nothing.
    assert_eq!(
        code(&fileipc(&["sem", "value", s(&p), "--initial", "2"])),
        1
    );
    assert!(!p.exists());
    ok(fileipc(&["sem", "acquire", s(&p), "--initial", "2"]));
    // A permit taken from the shell outlives the process that took it.
    assert_eq!(ok(fileipc(&["sem", "value", s(&p)])), "1\n");
    ok(fileipc(&["sem", "acquire", s(&p)]));
    let none = fileipc(&["sem", "acquire", s(&p), "--timeout", "50ms"]);
    assert_eq!(code(&none), 1, "{}", stderr(&none));
    ok(fileipc(&["sem", "release", s(&p)]));
    ok(fileipc(&["sem", "release", s(&p)]));
    assert_eq!(ok(fileipc(&["sem", "value", s(&p)])), "2\n");
    let lib = Semaphore::open(&p, 2).unwrap();
    assert_eq!(lib.value().unwrap(), 2);
    let out = ok(fileipc(&["sem", "run", s(&p), "--", "sh", "-c", "echo hi"]));
    assert_eq!(out, "hi\n");
    assert_eq!(lib.value().unwrap(), 2);
}

/// Killing `fileipc` alone changes nothing: the command inherited the descriptor that
/// keeps the permit's owner alive, so with one permit a second `sem run --timeout 0` is
/// refused until the command is gone, then succeeds (two jobs never run at once).
#[test]
fn sem_run_keeps_the_permit_while_the_command_runs_after_fileipc_is_killed() {
    let d = tmp();
    let p = d.path().join("sem");
    let (mut guard, cmd_pid) = start_guard(d.path(), &["sem", "run", s(&p), "--initial", "1"]);
    kill(guard.id());
    wait_exit(&mut guard);
    let second = || {
        fileipc(&[
            "sem",
            "run",
            s(&p),
            "--initial",
            "1",
            "--timeout",
            "0",
            "--",
            "true",
        ])
    };
    let refused = second();
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    let lib = Semaphore::open(&p, 1).unwrap();
    assert_eq!(lib.value().unwrap(), 0);
    kill(cmd_pid);
    eventually("the permit to come back", || lib.value().unwrap() == 1);
    assert_eq!(code(&second()), 0);
}

#[test]
fn sem_run_releases_when_cmd_is_killed() {
    let d = tmp();
    let p = d.path().join("sem");
    let lib = Semaphore::open(&p, 1).unwrap();
    let (mut guard, cmd_pid) = start_guard(d.path(), &["sem", "run", s(&p)]);
    kill(cmd_pid);
    assert_eq!(wait_exit(&mut guard).code(), Some(137));
    assert_eq!(lib.value().unwrap(), 1);
}

#[test]
fn kv_commands() {
    let d = tmp();
    let p = d.path().join("kv");
    ok(fileipc(&["kv", "set", s(&p), "name", r#""fileipc""#]));
    ok(fileipc(&[
        "kv",
        "set",
        s(&p),
        "cfg",
        r#"{"workers": 4, "tags": ["a", "b"]}"#,
    ]));
    assert_eq!(ok(fileipc(&["kv", "get", s(&p), "name"])), "\"fileipc\"\n");
    assert_eq!(code(&fileipc(&["kv", "get", s(&p), "missing"])), 1);
    assert_eq!(ok(fileipc(&["kv", "incr", s(&p), "n"])), "1\n");
    assert_eq!(ok(fileipc(&["kv", "incr", s(&p), "n", "41"])), "42\n");
    assert_eq!(ok(fileipc(&["kv", "incr", s(&p), "n", "-2"])), "40\n");
    let keys = ok(fileipc(&["kv", "keys", s(&p)]));
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cfg", "n", "name"]);
    let dump: serde_json::Value =
        serde_json::from_str(&ok(fileipc(&["kv", "dump", s(&p)]))).unwrap();
    assert_eq!(dump["cfg"]["workers"], 4);
    assert_eq!(dump["n"], 40);
    let lib = SharedData::open(&p).unwrap();
    assert_eq!(
        lib.get::<String>("name").unwrap().as_deref(),
        Some("fileipc")
    );
    lib.set("from_rust", &[1, 2, 3]).unwrap();
    assert_eq!(ok(fileipc(&["kv", "get", s(&p), "from_rust"])), "[1,2,3]\n");
    ok(fileipc(&["kv", "delete", s(&p), "name"]));
    assert_eq!(code(&fileipc(&["kv", "delete", s(&p), "name"])), 1);
    ok(fileipc(&["kv", "clear", s(&p)]));
    assert_eq!(ok(fileipc(&["kv", "keys", s(&p)])), "");

    let bad = fileipc(&["kv", "set", s(&p), "k", "not json"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("not JSON"), "{}", stderr(&bad));
}

#[test]
fn pidfile_commands() {
    let d = tmp();
    let p = d.path().join("app.pid");
    assert_eq!(code(&fileipc(&["pidfile", "check", s(&p)])), 1);
    let out = ok(fileipc(&[
        "pidfile",
        "run",
        s(&p),
        "--",
        "sh",
        "-c",
        "echo running",
    ]));
    assert_eq!(out, "running\n");
    assert!(!p.exists(), "pidfile run removes its file");

    let mut lib = PidFile::open(&p).unwrap();
    assert!(lib.create().unwrap());
    let check = fileipc(&["pidfile", "check", s(&p)]);
    assert_eq!(code(&check), 0);
    assert_eq!(stdout(&check), format!("{}\n", std::process::id()));
    let refused = fileipc(&["pidfile", "run", s(&p), "--", "true"]);
    assert_eq!(code(&refused), 1);
    assert!(
        stderr(&refused).contains("already running"),
        "{}",
        stderr(&refused)
    );
    lib.remove().unwrap();
}

/// A PID file written by another program (`sleep 100 & echo $! > f.pid`): `check` says
/// the PID is alive but holds no lock, `run` refuses it and leaves it intact, `run
/// --force` takes it over; once its process has died, plain `run` takes it over.
#[test]
fn pidfile_written_by_another_program_is_reported_and_not_taken_over() {
    let d = tmp();
    let p = d.path().join("f.pid");
    let marker = d.path().join("ran");
    let sh = Command::new("sh")
        .arg("-c")
        .arg("sleep 100 & echo $! > \"$1\"")
        .arg("sh")
        .arg(&p)
        .status()
        .unwrap();
    assert!(sh.success());
    let content = std::fs::read_to_string(&p).unwrap();
    let pid: u32 = content.trim().parse().unwrap();
    let check = fileipc(&["pidfile", "check", s(&p)]);
    let killer = kill_on_drop(pid);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    assert_eq!(stdout(&check), format!("{pid}\n"));
    assert!(
        stderr(&check).contains(&format!("PID {pid} is alive but does not hold the lock")),
        "{}",
        stderr(&check)
    );

    let touch = ["--", "touch", s(&marker)];
    let run = |extra: &[&str]| {
        let mut args = vec!["pidfile", "run", s(&p)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&touch);
        fileipc(&args)
    };
    let refused = run(&[]);
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert!(!marker.exists(), "the command ran");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), content);

    let forced = run(&["--force"]);
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    assert!(marker.exists());
    assert!(!p.exists(), "pidfile run removes the file it took over");
    drop(killer);

    // The same kind of file naming a process that has died is stale: taken over.
    std::fs::remove_file(&marker).unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    std::fs::write(&p, format!("{}\n", dead.id())).unwrap();
    let check = fileipc(&["pidfile", "check", s(&p)]);
    assert_eq!(code(&check), 1);
    assert!(stderr(&check).contains("stale"), "{}", stderr(&check));
    let taken = run(&[]);
    assert_eq!(code(&taken), 0, "{}", stderr(&taken));
    assert!(marker.exists());
}

/// Kills the process `pid` (not our child: init reaps it) when dropped.
fn kill_on_drop(pid: u32) -> impl Drop {
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            kill(self.0);
        }
    }
    KillOnDrop(pid)
}

/// Killing `fileipc` alone leaves the PID file locked while the command runs (a second
/// `pidfile run` exits 1); once the command is gone the file is stale and a second run
/// takes it over.
#[test]
fn pidfile_run_stays_locked_while_the_command_runs_after_fileipc_is_killed() {
    let d = tmp();
    let p = d.path().join("app.pid");
    let (mut guard, cmd_pid) = start_guard(d.path(), &["pidfile", "run", s(&p)]);
    let check = fileipc(&["pidfile", "check", s(&p)]);
    assert_eq!(code(&check), 0);
    assert_eq!(stdout(&check), format!("{}\n", guard.id()));
    kill(guard.id());
    wait_exit(&mut guard);
    let running = fileipc(&["pidfile", "check", s(&p)]);
    assert_eq!(code(&running), 0, "{}", stderr(&running));
    let second = || fileipc(&["pidfile", "run", s(&p), "--", "true"]);
    assert_eq!(code(&second()), 1);
    kill(cmd_pid);
    eventually("the PID file to go stale", || {
        code(&fileipc(&["pidfile", "check", s(&p)])) == 1
    });
    assert_eq!(code(&second()), 0);
    assert!(!p.exists(), "removed by the second run");
}

/// `flock PATH sh -c 'echo held; exec cat'`: returns once flock(1) holds PATH; it
/// releases it when its standard input is closed.
fn flock_holder(path: &Path) -> Child {
    use std::io::BufRead;
    let mut child = Command::new("flock")
        .arg(path)
        .args(["sh", "-c", "echo held; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    child
}

/// A lock file `touch` made (empty) is adopted by `mutex run` in place (same inode),
/// where it was refused ("the file is empty").
#[test]
fn mutex_run_adopts_an_empty_lock_file() {
    use std::os::unix::fs::MetadataExt;
    let d = tmp();
    let m = d.path().join("touched.lock");
    std::fs::File::create(&m).unwrap();
    let inode = std::fs::metadata(&m).unwrap().ino();
    let o = fileipc(&["mutex", "run", s(&m), "--", "echo", "ran"]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "ran\n"),
        "{}",
        stderr(&o)
    );
    let meta = std::fs::metadata(&m).unwrap();
    assert_eq!((meta.ino(), meta.len()), (inode, 256));
    assert_eq!(code(&fileipc(&["mutex", "status", s(&m)])), 1);
}

/// flock(1) first, on a path it creates: `mutex run` adopts the file while flock(1)
/// holds it, is refused (exit 1, or `-E N`), and a waiting `mutex run` runs once
/// flock(1) lets go. Then `mutex run` first: `flock -n` and `flock -w` are refused until
/// it ends.
#[test]
fn flock1_and_mutex_run_exclude_each_other() {
    let d = tmp();
    let m = d.path().join("shared.lock");
    let marker = d.path().join("ran");
    let mut holder = flock_holder(&m);
    assert_eq!(
        std::fs::metadata(&m).unwrap().len(),
        0,
        "flock(1) made it empty"
    );
    let refused = fileipc(&[
        "mutex",
        "run",
        s(&m),
        "--timeout",
        "0",
        "--",
        "touch",
        s(&marker),
    ]);
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert_eq!(std::fs::metadata(&m).unwrap().len(), 256, "adopted");
    let refused = fileipc(&[
        "mutex",
        "run",
        "-E",
        "42",
        s(&m),
        "--timeout",
        "100ms",
        "true",
    ]);
    assert_eq!(code(&refused), 42, "{}", stderr(&refused));
    let long = fileipc(&[
        "mutex",
        "run",
        "--conflict-exit-code",
        "7",
        "--timeout",
        "0",
        s(&m),
        "true",
    ]);
    assert_eq!(code(&long), 7);
    assert_eq!(code(&fileipc(&["mutex", "status", s(&m)])), 0, "locked");
    let mut waiter = bin()
        .args([
            "mutex",
            "run",
            s(&m),
            "--timeout",
            "30s",
            "touch",
            s(&marker),
        ])
        .spawn()
        .unwrap();
    assert!(!marker.exists());
    drop(holder.stdin.take());
    assert!(wait_exit(&mut holder).success());
    assert!(wait_exit(&mut waiter).success());
    assert!(marker.exists());

    let (mut guard, cmd_pid) = start_guard(d.path(), &["mutex", "run", s(&m)]);
    let flock = |args: &[&str]| {
        let st = Command::new("flock")
            .args(args)
            .arg(&m)
            .arg("true")
            .status();
        st.unwrap().code()
    };
    assert_eq!(
        flock(&["-n"]),
        Some(1),
        "flock -n got the lock mutex run holds"
    );
    assert_eq!(flock(&["-w", "0.1"]), Some(1));
    kill(cmd_pid);
    wait_exit(&mut guard);
    assert_eq!(flock(&["-n"]), Some(0));
}

/// `sem run -E N` exits N when no permit came in time.
#[test]
fn sem_run_conflict_exit_code() {
    let d = tmp();
    let p = d.path().join("pool");
    let (mut guard, cmd_pid) = start_guard(d.path(), &["sem", "run", s(&p), "--initial", "1"]);
    let o = fileipc(&["sem", "run", s(&p), "--timeout", "0", "-E", "99", "true"]);
    assert_eq!(code(&o), 99, "{}", stderr(&o));
    let o = fileipc(&["sem", "run", s(&p), "--timeout", "0", "true"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    kill(cmd_pid);
    wait_exit(&mut guard);
    assert_eq!(
        code(&fileipc(&["sem", "run", s(&p), "-E", "99", "true"])),
        0
    );
}

/// Every `run` wrapper: a command that cannot be found exits 127, one found but not
/// executable 126, each with a message naming it; `--` is optional before a command
/// that does not start with `-` (its own options then pass through), and a command
/// starting with `-` without it is a usage error that says to add `--`.
#[test]
fn run_wrappers_exit_127_and_126_and_take_the_command_without_dashes() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    let script = d.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = d.path().join("no-such-command");
    for (i, wrapper) in [&["mutex", "run"][..], &["sem", "run"], &["pidfile", "run"]]
        .iter()
        .enumerate()
    {
        let path = d.path().join(format!("p{i}"));
        let run = |cmd: &[&str]| {
            let mut args = wrapper.to_vec();
            args.push(s(&path));
            args.extend_from_slice(cmd);
            fileipc(&args)
        };
        let o = run(&["--", s(&missing)]);
        assert_eq!(code(&o), 127, "{wrapper:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no-such-command: command not found"),
            "{}",
            stderr(&o)
        );
        let o = run(&["nonexistent-command-fileipc-test", "x"]);
        assert_eq!(code(&o), 127, "{wrapper:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("nonexistent-command-fileipc-test"),
            "{}",
            stderr(&o)
        );
        let o = run(&[s(&script)]);
        assert_eq!(code(&o), 126, "{wrapper:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not-executable.sh: cannot execute"),
            "{}",
            stderr(&o)
        );
        // Without `--`: the command's own options are its own.
        let o = run(&["sh", "-c", "echo $0-$1", "a", "--timeout"]);
        assert_eq!(
            (code(&o), stdout(&o).as_str()),
            (0, "a---timeout\n"),
            "{}",
            stderr(&o)
        );
        let o = run(&["-x"]);
        assert_eq!(code(&o), 2, "{wrapper:?}");
        assert!(stderr(&o).contains("'-- -x'"), "{}", stderr(&o));
    }
}

#[test]
fn event_commands() {
    let d = tmp();
    let p = d.path().join("ready");
    let st = fileipc(&["event", "status", s(&p)]);
    assert_eq!((code(&st), stdout(&st).as_str()), (1, "clear\n"));
    assert_eq!(
        code(&fileipc(&["event", "wait", s(&p), "--timeout", "50ms"])),
        1
    );
    let mut waiter = bin().args(["event", "wait", s(&p)]).spawn().unwrap();
    Event::open(&p).unwrap().set().unwrap();
    assert!(wait_exit(&mut waiter).success());
    assert_eq!(ok(fileipc(&["event", "status", s(&p)])), "set\n");
    ok(fileipc(&["event", "clear", s(&p)]));
    assert!(!p.exists());
    ok(fileipc(&["event", "set", s(&p)]));
    assert!(Event::open(&p).unwrap().is_set().unwrap());
}

#[test]
fn stat_reports_every_kind() {
    let d = tmp();
    let q = d.path().join("q");
    MessageQueue::open(&q).unwrap().send("x").unwrap();
    let m = d.path().join("m");
    Mutex::open(&m).unwrap();
    let sem = d.path().join("sem");
    Semaphore::open(&sem, 3).unwrap();
    let kv = d.path().join("kv");
    SharedData::open(&kv).unwrap().set("a", &1).unwrap();
    let pid = d.path().join("pid");
    let mut pf = PidFile::open(&pid).unwrap();
    assert!(pf.create().unwrap());
    let ev = d.path().join("ev");
    Event::open(&ev).unwrap().set().unwrap();
    let other = d.path().join("other");
    std::fs::write(&other, "just a file").unwrap();

    for (path, kind) in [
        (&q, "queue"),
        (&m, "mutex"),
        (&sem, "semaphore"),
        (&kv, "kv"),
        (&pid, "pidfile"),
        (&ev, "event"),
        (&other, "other"),
        (&d.path().join("missing"), "missing"),
    ] {
        // Nothing there: reported, with exit 1 (not found).
        let expect = if kind == "missing" { 1 } else { 0 };
        let o = fileipc(&["stat", s(path)]);
        assert_eq!(code(&o), expect, "{}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains(s(path)), "{text}");
        let o = fileipc(&["stat", s(path), "--json"]);
        assert_eq!(code(&o), expect, "{}", stderr(&o));
        let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(json["kind"], kind, "{json}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(fileipc(&["stat", s(&q), "--json"]))).unwrap();
    assert_eq!(json["count"], 1, "{json}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(fileipc(&["stat", s(&sem), "--json"]))).unwrap();
    assert_eq!(json["value"], 3, "{json}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(fileipc(&["stat", s(&pid), "--json"]))).unwrap();
    assert_eq!(json["pid"], std::process::id(), "{json}");
    assert_eq!(json["alive"], true, "{json}");
    pf.remove().unwrap();
}

#[test]
fn usage_errors_exit_2_without_panicking() {
    let d = tmp();
    for args in [
        &["queue", "send"][..],
        &["queue", "recv"],
        &["sem", "value", "/tmp/x", "--initial", "-3"],
        &["mutex", "run", "/tmp/x"],
        &["kv", "set", "/tmp/x", "k"],
        &["event", "wait", "/tmp/x", "--timeout", "soon"],
        &["nonsense"],
    ] {
        let o = fileipc(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    let _ = d;
}

#[test]
fn every_help_has_an_example() {
    let top = ok(fileipc(&["--help"]));
    assert!(top.contains("Examples:"), "{top}");
    for sub in [
        &["queue", "send"][..],
        &["queue", "recv"],
        &["queue", "count"],
        &["queue", "clear"],
        &["queue", "destroy"],
        &["sem", "acquire"],
        &["sem", "release"],
        &["sem", "value"],
        &["sem", "run"],
        &["mutex", "run"],
        &["mutex", "status"],
        &["kv", "get"],
        &["kv", "set"],
        &["kv", "delete"],
        &["kv", "incr"],
        &["kv", "keys"],
        &["kv", "clear"],
        &["kv", "dump"],
        &["pidfile", "run"],
        &["pidfile", "check"],
        &["event", "set"],
        &["event", "clear"],
        &["event", "status"],
        &["event", "wait"],
        &["stat"],
        &["demo"],
        &["completions"],
        &["man"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let text = ok(fileipc(&args));
        assert!(
            text.contains("Example"),
            "{sub:?} --help has no example:\n{text}"
        );
    }
}

#[test]
fn run_forwards_sigterm_to_the_command_and_releases() {
    let d = tmp();
    let m = d.path().join("m");
    let ready = d.path().join("ready");
    // The command reports TERM through its exit status, so forwarding is observable.
    let script = format!(
        "trap 'exit 42' TERM; touch {}; while :; do sleep 0.01; done",
        s(&ready)
    );
    let mut guard = bin()
        .args(["mutex", "run", s(&m), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    eventually("the command to start", || ready.exists());
    let p = rustix::process::Pid::from_raw(guard.id() as i32).unwrap();
    rustix::process::kill_process(p, rustix::process::Signal::TERM).unwrap();
    assert_eq!(wait_exit(&mut guard).code(), Some(42));
    assert!(!Mutex::open(&m).unwrap().is_locked().unwrap());
}

/// The numbers of a demo line, in order (`1,000,000` is one number).
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == ','))
        .map(|w| w.replace(',', ""))
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect()
}

/// The demo names all six primitives, kills a consumer mid-run with SIGKILL, reports
/// what survived with counts that add up, and says what to try next; with `--keep` its
/// directory stays for `fileipc stat`.
#[test]
fn demo_runs_and_checks_itself() {
    let o = fileipc(&["demo", "--keep"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}\n{}", stderr(&o));
    for name in [
        "PidFile",
        "Event",
        "MessageQueue",
        "Semaphore",
        "SharedData",
        "Mutex",
    ] {
        assert!(out.contains(&format!("  {name} ")), "{name}: {out}");
    }
    assert!(out.contains("SharedData::increment"), "{out}");
    assert!(out.contains("kill -9       consumer 1 (PID "), "{out}");
    assert!(
        out.contains("what survived the kill -9 of consumer 1"),
        "{out}"
    );
    assert!(out.contains(" 0 duplicated, "), "{out}");
    // counted S = a (consumer 0) + b (consumer 1, killed) + c (consumer 2)
    let line = out
        .lines()
        .find(|l| l.contains("SharedData    counted"))
        .unwrap();
    let v = numbers(line);
    assert_eq!(v.len(), 7, "{line}");
    assert_eq!(v[0], v[1] + v[3] + v[5], "{line}");
    assert!(line.contains("(consumer 1, killed)"), "{line}");
    // counted S + processed but not counted U + lost L = T sent
    let line = out
        .lines()
        .find(|l| l.contains("processed but not counted"))
        .unwrap();
    let v = numbers(line);
    assert_eq!(v[0] + v[1] + v[2], v[3], "{line}");
    assert_eq!(v[3], 1_000_000, "{line}");
    assert!(line.contains("the counts add up"), "{line}");
    assert!(out.contains("2 of 2 permits could be taken"), "{out}");
    assert!(out.contains("Mutex         free;"), "{out}");
    assert!(out.contains("check                 OK"), "{out}");
    assert!(out.contains("Try next:"), "{out}");

    let dir = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("fileipc demo in "))
        .unwrap()
        .to_owned();
    let dir = Path::new(&dir);
    let stat = ok(fileipc(&["stat", s(&dir.join("jobs"))]));
    assert!(stat.contains("message queue"), "{stat}");
    let stat = ok(fileipc(&["stat", s(&dir.join("pool"))]));
    assert!(stat.contains("semaphore"), "{stat}");
    assert!(
        out.contains(&format!("fileipc stat {}/jobs", dir.display())),
        "{out}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `pidfile run` on a path that holds something else (here a SharedData store, which
/// `pidfile check` already calls "not a PID file") refuses with exit 3, runs nothing and
/// leaves the file byte-identical.
#[test]
fn pidfile_run_refuses_a_file_that_is_not_a_pid_file() {
    let d = tmp();
    let store = d.path().join("store");
    fileipc::SharedData::open(&store)
        .unwrap()
        .set("k", &1)
        .unwrap();
    let before = std::fs::read(&store).unwrap();
    let marker = d.path().join("ran");
    let r = fileipc(&["pidfile", "run", s(&store), "--", "touch", s(&marker)]);
    assert_eq!(code(&r), 3, "{}", stderr(&r));
    assert!(!marker.exists(), "the command ran");
    assert_eq!(std::fs::read(&store).unwrap(), before);
}

/// Issue 19.4: `kv set` keeps a double's exact digits, refuses integers JSON numbers
/// in the store cannot hold exactly (beyond i64/u64) instead of rounding them to a
/// float, and `kv get` prints what was set.
#[test]
fn kv_numbers_round_trip_exactly() {
    let d = tmp();
    let p = d.path().join("kv");
    for x in [
        "0.9856906946328695",
        "0.011425316439999667",
        "1e300",
        "-0.5",
    ] {
        ok(fileipc(&["kv", "set", s(&p), "f", "--", x]));
        let back = ok(fileipc(&["kv", "get", s(&p), "f"]));
        assert_eq!(
            back.trim().parse::<f64>().unwrap().to_bits(),
            x.parse::<f64>().unwrap().to_bits(),
            "kv set f {x} then kv get printed {back}"
        );
    }
    ok(fileipc(&["kv", "set", s(&p), "f", "0.9856906946328695"]));
    assert_eq!(
        ok(fileipc(&["kv", "get", s(&p), "f"])),
        "0.9856906946328695\n"
    );
    for big in [
        "18446744073709551616",
        "-9223372036854775809",
        r#"{"a": [1, 123456789012345678901234567890]}"#,
    ] {
        ok(fileipc(&["kv", "set", s(&p), "big", "1"]));
        let r = fileipc(&["kv", "set", s(&p), "big", "--", big]);
        assert_eq!(code(&r), 2, "kv set big {big}: {}", stderr(&r));
        assert!(stderr(&r).contains("integer"), "{}", stderr(&r));
        assert_eq!(ok(fileipc(&["kv", "get", s(&p), "big"])), "1\n", "{big}");
    }
    // The largest integers that fit, and a string of digits, are kept exactly.
    for exact in [
        "18446744073709551615",
        "-9223372036854775808",
        r#""123456789012345678901234567890""#,
    ] {
        ok(fileipc(&["kv", "set", s(&p), "big", "--", exact]));
        assert_eq!(
            ok(fileipc(&["kv", "get", s(&p), "big"])),
            format!("{exact}\n")
        );
    }
}

/// `mutex run`, `sem run` and `pidfile run` give the command the grant's fencing token
/// in `FILEIPC_FENCE`, growing from one run to the next; `stat` shows the last one.
#[test]
fn runs_export_a_growing_fence_and_stat_shows_it() {
    let d = tmp();
    for (prim, path, extra) in [
        ("mutex", d.path().join("m"), None),
        ("sem", d.path().join("s"), Some("--initial=2")),
        ("pidfile", d.path().join("p"), None),
    ] {
        let fence = || -> u64 {
            let mut args = vec![prim, "run", s(&path)];
            args.extend(extra);
            args.extend(["--", "sh", "-c", "echo $FILEIPC_FENCE"]);
            let out = ok(fileipc(&args));
            out.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{prim} run exported {out:?}"))
        };
        let (first, second) = (fence(), fence());
        assert!(second > first, "{prim}: {first} then {second}");
        if prim == "pidfile" {
            continue; // removed after the run: nothing to stat
        }
        let json: serde_json::Value =
            serde_json::from_str(&ok(fileipc(&["stat", s(&path), "--json"]))).unwrap();
        assert_eq!(json["fence"], second, "{json}");
        let text = ok(fileipc(&["stat", s(&path)]));
        assert!(text.contains("fence"), "{text}");
    }
    // A PID file that stays: stat shows its generation.
    let pid = d.path().join("pid");
    let mut pf = PidFile::open(&pid).unwrap();
    assert!(pf.create().unwrap());
    let json: serde_json::Value =
        serde_json::from_str(&ok(fileipc(&["stat", s(&pid), "--json"]))).unwrap();
    assert_eq!(json["generation"], pf.generation().unwrap(), "{json}");
    pf.remove().unwrap();
}
