//! Running a command while holding something: `mutex run`, `sem run`, `pidfile run`.
//!
//! # Signals
//!
//! The wrapper stays in the shell's process group and the command runs in that same
//! group (job control, terminal reads and Ctrl-Z work as for any foreground command).
//! Every catchable signal whose default action would terminate the wrapper is caught, so
//! the wrapper (the PID in `pidfile run`'s file, the holder of the lock) outlives it, and
//! is forwarded to the command **unless the command has already received it**:
//!
//! - A signal the kernel generated for the terminal (Ctrl-C's SIGINT, Ctrl-\'s SIGQUIT,
//!   a hangup's SIGHUP: `si_code == SI_KERNEL`) went to the whole foreground process
//!   group, command included; forwarding it too would deliver one Ctrl-C twice, and many
//!   programs take a second Ctrl-C as "force quit, skip cleanup". It is forwarded only if
//!   the command has left the wrapper's process group (then the terminal did not reach it).
//! - A signal the kernel raised about the wrapper itself (SIGPIPE or SIGXFSZ from its own
//!   write, SIGXCPU from its own CPU limit) concerns the wrapper, not the command: not
//!   forwarded, and ignoring it is harmless (the write fails with an error instead).
//! - A signal another process sent (`kill`, `sigqueue`: `SI_USER`, `SI_QUEUE`, ...) is
//!   forwarded. A `kill -INT -PGID` to the whole group does reach the command twice: the
//!   wrapper cannot tell a group kill from a kill of its own PID. Signal one PID.
//!
//! The alternative, the command in a process group of its own with everything
//! forwarded, would make the command a background job of its terminal: it would be
//! stopped by SIGTTIN when it reads the terminal and Ctrl-Z would stop only the wrapper.
//!
//! Not caught: SIGKILL and SIGSTOP (cannot be), the stop signals SIGTSTP, SIGTTIN and
//! SIGTTOU (job control acts on the whole group, the command included), the signals
//! ignored by default (SIGCHLD, SIGCONT, SIGURG, SIGWINCH: the terminal's SIGWINCH reaches
//! the command directly), and the fault signals SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
//! SIGABRT and SIGSYS, which report a fault in the wrapper itself (or a debugger's or
//! seccomp's action on it) and must keep their default action. The real-time signals
//! (SIGRTMIN..SIGRTMAX, numbered at run time by the C library) are not caught either.
//!
//! `pidfile run` keeps the wrapper's PID in the PID file: the wrapper is what created and
//! locked the file and removes it when the command ends, `PidFile::create` records the
//! caller, and since it forwards every terminating signal, `kill -SIG $(cat app.pid)`
//! reaches the command as it would if the file named it.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use anyhow::Context;
use rustix::process::{Pid, Signal};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook::low_level::siginfo::{Cause, Origin};

/// The signals the wrapper catches and forwards: every catchable signal whose default
/// action terminates the process, except the fault signals (see the module docs).
const FORWARDED: [Signal; 15] = [
    Signal::HUP,
    Signal::INT,
    Signal::QUIT,
    Signal::TERM,
    Signal::USR1,
    Signal::USR2,
    Signal::ALARM,
    Signal::PIPE,
    Signal::VTALARM,
    Signal::PROF,
    Signal::IO,
    Signal::POWER,
    Signal::XCPU,
    Signal::XFSZ,
    Signal::STKFLT,
];

/// Whether the signal described by `origin`, received by the wrapper, must be sent to
/// the command (`child`): see the module docs.
fn must_forward(origin: &Origin, child: Pid) -> bool {
    match origin.cause {
        Cause::Kernel => {
            let terminal = [Signal::INT, Signal::QUIT, Signal::HUP]
                .iter()
                .any(|s| s.as_raw() == origin.signal);
            // The terminal signalled the wrapper's whole process group: the command got
            // it too unless it moved to another group.
            terminal
                && rustix::process::getpgid(Some(child))
                    .is_ok_and(|g| g != rustix::process::getpgrp())
        }
        // Sent by the wrapper to itself: the kernel's SIGPIPE or SIGXFSZ for one of its
        // own writes is reported as sent by the writer.
        _ => origin
            .process
            .is_none_or(|p| p.pid != rustix::process::getpid().as_raw_nonzero().get()),
    }
}

/// Runs `argv` as a child and returns its exit code (128 + N if killed by signal N;
/// 127 if the command is not found, 126 if it cannot be executed, with a message naming
/// it).
///
/// Signals sent to `fileipc` that would otherwise terminate it are forwarded to the
/// child, so `kill PID` or `kill -USR1 PID` on the guard reaches the command and
/// `fileipc` keeps running (and holding) until the command ends; a Ctrl-C on the
/// terminal reaches the command once (see the module docs).
///
/// `held` is the descriptor that holds the lock or permit the command runs under, made
/// inheritable by the caller: the command (and whatever it starts that keeps the
/// descriptor) holds it too, so it stays held if `fileipc` itself is killed, as with
/// `flock(1)`, and the command's environment names it in `FILEIPC_LOCK_FD` for a script
/// that wants to close it. `None` for a lock or permit on a server (Redis): no
/// descriptor holds it, `fileipc` keeps renewing its lease while the command runs.
/// `fence` is the fencing token of that grant, exported as `FILEIPC_FENCE`.
pub(crate) fn run(
    argv: &[OsString],
    held: Option<i32>,
    fence: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let (program, args) = argv.split_first().context("no command given after --")?;
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARDED.map(Signal::as_raw))
        .context("installing signal handlers")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(fd) = held {
        cmd.env("FILEIPC_LOCK_FD", fd.to_string());
    }
    if let Some(f) = fence {
        cmd.env("FILEIPC_FENCE", f.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            // As a shell reports it: 127 when the command is not found, 126 when it is
            // found but cannot be executed.
            let name = program.to_string_lossy();
            let (code, what) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "command not found".to_owned()),
                _ => (126, format!("cannot execute: {e}")),
            };
            eprintln!("fileipc: {name}: {what}");
            return Ok(ExitCode::from(code));
        }
    };
    let pid = Pid::from_raw(child.id() as i32).context("the command has no PID")?;
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for origin in signals.forever() {
            if must_forward(&origin, pid)
                && let Some(s) = Signal::from_named_raw(origin.signal)
            {
                let _ = rustix::process::kill_process(pid, s);
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
