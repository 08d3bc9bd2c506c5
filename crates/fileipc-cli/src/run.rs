//! Running a command while holding something: `mutex run`, `sem run`, `pidfile run`.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

/// Runs `argv` as a child and returns its exit code (128 + N if killed by signal N).
///
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to `fileipc` are forwarded to the child, so
/// `kill PID` on the guard stops the command and the guard then releases what it holds.
///
/// `held` is the descriptor that holds the lock or permit the command runs under, made
/// inheritable by the caller: the command (and whatever it starts that keeps the
/// descriptor) holds it too, so it stays held if `fileipc` itself is killed, as with
/// `flock(1)`, and the command's environment names it in `FILEIPC_LOCK_FD` for a script
/// that wants to close it. Without one (`None`), the child gets SIGKILL if `fileipc`
/// dies (on Linux), since it would otherwise go on unprotected.
pub(crate) fn run(argv: &[OsString], held: Option<i32>) -> anyhow::Result<ExitCode> {
    let (program, args) = argv.split_first().context("no command given after --")?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("installing signal handlers")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    match held {
        Some(fd) => {
            cmd.env("FILEIPC_LOCK_FD", fd.to_string());
        }
        None => die_with_parent(&mut cmd),
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let pid = child.id();
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for sig in signals.forever() {
            if let (Some(p), Some(s)) = (
                rustix::process::Pid::from_raw(pid as i32),
                rustix::process::Signal::from_named_raw(sig),
            ) {
                let _ = rustix::process::kill_process(p, s);
            }
        }
    });
    let status = child.wait().context("waiting for the command")?;
    handle.close();
    let _ = forwarder.join();
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe operations are allowed: it makes two system calls (prctl and
    // getppid) through rustix, which neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died before prctl took effect.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
