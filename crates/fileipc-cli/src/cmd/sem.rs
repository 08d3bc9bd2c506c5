//! `fileipc sem ...`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fileipc::Semaphore;

/// Opens (creating if missing, with `mode` if given) the semaphore at `path`.
fn open(path: &Path, initial: u32, mode: Option<u32>) -> fileipc::Result<Semaphore> {
    match mode {
        Some(mode) => Semaphore::options().mode(mode).open(path, initial),
        None => Semaphore::open(path, initial),
    }
}

fn deadline(limit: Option<Duration>) -> Option<Instant> {
    limit.and_then(|l| Instant::now().checked_add(l))
}

/// A permit taken from the shell must outlive this process (the script gives it back
/// later with `release`), so it is taken detached: not recorded against our PID, and so
/// not reclaimed when we exit.
pub(crate) fn acquire(
    path: &Path,
    initial: u32,
    limit: Option<Duration>,
    mode: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let s = open(path, initial, mode)?;
    let got = match deadline(limit) {
        Some(d) => s.acquire_deadline(d)?,
        None => {
            s.acquire_forever()?;
            true
        }
    };
    if got {
        s.detach()?;
    } else {
        eprintln!(
            "fileipc: {}: no permit free after {limit:?}",
            path.display()
        );
    }
    Ok(crate::yes(got))
}

pub(crate) fn release(path: &Path, initial: u32, mode: Option<u32>) -> anyhow::Result<ExitCode> {
    open(path, initial, mode)?.release()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn value(path: &Path, initial: u32) -> anyhow::Result<ExitCode> {
    println!("{}", Semaphore::open(path, initial)?.value()?);
    Ok(ExitCode::SUCCESS)
}

/// Holds one permit while `cmd` runs. The command inherits the descriptor that keeps
/// this process's ownership alive (`FILEIPC_LOCK_FD`), so the permit stays held until the
/// command and whatever kept the descriptor are gone, even if `fileipc` is killed; it
/// comes back to the others then (waiters notice within about 10 ms).
pub(crate) fn run(
    path: &Path,
    initial: u32,
    limit: Option<Duration>,
    mode: Option<u32>,
    cmd: &[OsString],
) -> anyhow::Result<ExitCode> {
    let s = open(path, initial, mode)?;
    let got = match limit {
        Some(t) => s.acquire_timeout(t)?,
        None => {
            s.acquire_forever()?;
            true
        }
    };
    if !got {
        eprintln!(
            "fileipc: {}: no permit free after {limit:?}",
            path.display()
        );
        return Ok(crate::NO);
    }
    let fd = s.share_with_children()?;
    // No release: the permit is the command's as much as ours, and goes back when the
    // last process holding the descriptor exits (this one included).
    crate::run::run(cmd, fd)
}
