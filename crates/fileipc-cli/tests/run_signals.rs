//! Signals and the `run` wrappers (`mutex run`, `sem run`, `pidfile run`), with real
//! processes: one Ctrl-C on a real terminal reaches the command once, and every catchable
//! signal that would terminate the wrapper is forwarded instead of killing it.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

const PATIENCE: Duration = Duration::from_secs(30);

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fileipc-cli-sig-")
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

fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("the wrapper did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, sig: Signal) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), sig).unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A command that logs every SIGINT it receives to `log` and exits 0 on SIGTERM.
fn counting_script(log: &Path, ready: &Path) -> String {
    format!(
        "trap 'echo int >> {log}' INT; trap 'echo term >> {log}; exit 0' TERM; \
         echo ready > {ready}; while :; do sleep 0.1; done",
        log = s(log),
        ready = s(ready)
    )
}

/// One Ctrl-C typed on a real terminal: the terminal sends SIGINT to the whole
/// foreground process group, wrapper and command alike. The command must see it once,
/// not once from the terminal and once more forwarded by the wrapper.
#[test]
fn one_ctrl_c_on_a_terminal_reaches_the_command_once() {
    for kind in ["mutex", "sem", "pidfile"] {
        let dir = tmp();
        let log = dir.path().join("log");
        let ready = dir.path().join("ready");
        let target = dir.path().join("target");
        let script = counting_script(&log, &ready);

        // A pseudo-terminal; the wrapper becomes the leader of a new session whose
        // controlling terminal it is (`setsid -c`), so its process group is the
        // terminal's foreground group, as under an interactive shell.
        let master = rustix::pty::openpt(
            rustix::pty::OpenptFlags::RDWR
                | rustix::pty::OpenptFlags::NOCTTY
                | rustix::pty::OpenptFlags::CLOEXEC,
        )
        .unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let mut master = std::fs::File::from(master);

        let mut args: Vec<&str> = vec!["-c", env!("CARGO_BIN_EXE_fileipc"), kind, "run"];
        args.push(s(&target));
        if kind == "sem" {
            args.extend(["--initial", "1"]);
        }
        args.extend(["--", "sh", "-c", &script]);
        let mut wrapper = Command::new("setsid")
            .args(&args)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap();
        // Drain the terminal so nothing written to it can block.
        let mut drain = master.try_clone().unwrap();
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = drain.read(&mut buf) {
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        eventually("the command to start", || {
            let gone = wrapper.try_wait().unwrap();
            assert!(
                gone.is_none(),
                "{kind} run exited ({gone:?}): {}",
                String::from_utf8_lossy(&shown.lock().unwrap())
            );
            ready.exists()
        });

        master.write_all(&[0x03]).unwrap(); // Ctrl-C
        eventually("the command to see SIGINT", || read(&log).contains("int"));
        // A forwarded duplicate would follow within microseconds; SIGTERM, sent after
        // the command has handled the terminal's SIGINT, ends the command.
        signal(wrapper.id(), Signal::TERM);
        let st = wait_exit(&mut wrapper);
        let got = read(&log);
        let ints = got.lines().filter(|l| *l == "int").count();
        assert_eq!(
            ints, 1,
            "{kind} run: one Ctrl-C reached the command {ints} times (log: {got:?})"
        );
        assert!(got.ends_with("term\n"), "{kind} run: log {got:?}");
        assert_eq!(st.code(), Some(0), "{kind} run: {st:?}");
    }
}

/// Every catchable signal whose default action would terminate the wrapper, sent to the
/// PID in `pidfile run`'s PID file (the wrapper), reaches the command; the wrapper and
/// the command keep running and the PID file stays valid.
#[test]
fn pidfile_run_forwards_terminating_signals_and_survives_them() {
    let signals = [
        ("HUP", Signal::HUP),
        ("QUIT", Signal::QUIT),
        ("USR1", Signal::USR1),
        ("USR2", Signal::USR2),
        ("ALRM", Signal::ALARM),
        ("PIPE", Signal::PIPE),
        ("VTALRM", Signal::VTALARM),
        ("PROF", Signal::PROF),
        ("IO", Signal::IO),
        ("PWR", Signal::POWER),
        ("XCPU", Signal::XCPU),
        ("XFSZ", Signal::XFSZ),
        ("STKFLT", Signal::STKFLT),
        ("INT", Signal::INT),
    ];
    let dir = tmp();
    let log = dir.path().join("log");
    let ready = dir.path().join("ready");
    let pidfile = dir.path().join("app.pid");
    let mut script = String::new();
    // By number: `dash` does not know every name (`STKFLT` is a "bad trap" there).
    for (name, sig) in &signals {
        script += &format!("trap 'echo {name} >> {}' {}; ", s(&log), sig.as_raw());
    }
    script += &format!(
        "trap 'echo TERM >> {log}; exit 0' TERM; echo ready > {ready}; \
         while :; do sleep 0.1; done",
        log = s(&log),
        ready = s(&ready)
    );
    let mut wrapper = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["pidfile", "run", s(&pidfile), "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the command to start", || ready.exists());
    let pid: u32 = read(&pidfile).trim().parse().unwrap();
    assert_eq!(pid, wrapper.id(), "the PID file names the wrapper");

    for (i, (name, sig)) in signals.iter().enumerate() {
        signal(pid, *sig);
        eventually(&format!("the command to log SIG{name}"), || {
            read(&log).lines().count() > i || wrapper.try_wait().unwrap().is_some()
        });
        assert!(
            wrapper.try_wait().unwrap().is_none(),
            "SIG{name} sent to the wrapper killed it (log: {:?})",
            read(&log)
        );
        let got = read(&log);
        assert_eq!(got.lines().nth(i), Some(*name), "log: {got:?}");
        assert_eq!(read(&pidfile).trim(), pid.to_string(), "PID file intact");
    }
    let st = Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(["pidfile", "check", s(&pidfile)])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0), "pidfile check: {st:?}");

    signal(pid, Signal::TERM);
    let st = wait_exit(&mut wrapper);
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(
        !pidfile.exists(),
        "the PID file is removed when the command ends"
    );
}
