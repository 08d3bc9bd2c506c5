//! Running a command while holding something: `mutex run`, `sem run`, `pidfile run`.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

/// Runs `argv` as a child and returns its exit code (128 + N if killed by signal N).
///
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to `fileipc` are forwarded to the child, so
/// `kill PID` on the guard stops the command.
///
/// `held` is the descriptor that holds the lock or permit the command runs under, made
/// inheritable by the caller: the command (and whatever it starts that keeps the
/// descriptor) holds it too, so it stays held if `fileipc` itself is killed, as with
/// `flock(1)`, and the command's environment names it in `FILEIPC_LOCK_FD` for a script
/// that wants to close it.
pub(crate) fn run(argv: &[OsString], held: i32) -> anyhow::Result<ExitCode> {
    let (program, args) = argv.split_first().context("no command given after --")?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("installing signal handlers")?;
    let mut cmd = Command::new(program);
    cmd.args(args).env("FILEIPC_LOCK_FD", held.to_string());
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
