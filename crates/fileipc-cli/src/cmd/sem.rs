//! `fileipc sem ...`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fileipc::Semaphore;

/// Opens the semaphore at `path` (creating it with `mode` if given): with `--initial N`,
/// creating it with N permits or checking that an existing one has capacity N (the
/// library refuses another, naming both values); without, an existing one as it is, or
/// a new one of 1 permit.
fn open(path: &Path, initial: Option<u32>, mode: Option<u32>) -> fileipc::Result<Semaphore> {
    let mut options = Semaphore::options();
    if let Some(n) = initial {
        options = options.initial(n);
    }
    if let Some(m) = mode {
        options = options.mode(m);
    }
    options.open(path)
}

fn deadline(limit: Option<Duration>) -> Option<Instant> {
    limit.and_then(|l| Instant::now().checked_add(l))
}

/// A permit taken from the shell must outlive this process (the script gives it back
/// later with `release`), so it is taken detached: not recorded against our PID, and so
/// not reclaimed when we exit.
pub(crate) fn acquire(
    path: &Path,
    initial: Option<u32>,
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
            "fileipc: {}: no permit free after {}",
            path.display(),
            super::human(limit.unwrap_or_default())
        );
    }
    Ok(crate::yes(got))
}

pub(crate) fn release(
    path: &Path,
    initial: Option<u32>,
    mode: Option<u32>,
) -> anyhow::Result<ExitCode> {
    open(path, initial, mode)?.release()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn value(path: &Path, initial: Option<u32>) -> anyhow::Result<ExitCode> {
    // A query: never creates; `--initial`, if given, must match.
    let s = Semaphore::open_existing(path)?;
    if let Some(n) = initial.filter(|&n| n != s.capacity()) {
        anyhow::bail!(
            "{}: the semaphore exists with capacity {}, not the {n} asked for",
            path.display(),
            s.capacity()
        );
    }
    println!("{}", s.value()?);
    Ok(ExitCode::SUCCESS)
}

/// Holds one permit while `cmd` runs. The command inherits the descriptor that keeps
/// this process's ownership alive (`FILEIPC_LOCK_FD`), so the permit stays held until the
/// command and whatever kept the descriptor are gone, even if `fileipc` is killed; it
/// comes back to the others then (waiters notice within about 10 ms).
pub(crate) fn run(
    path: &Path,
    initial: Option<u32>,
    limit: Option<Duration>,
    conflict_exit_code: u8,
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
            "fileipc: {}: no permit free after {}",
            path.display(),
            super::human(limit.unwrap_or_default())
        );
        return Ok(ExitCode::from(conflict_exit_code));
    }
    if crate::is_remote(path) {
        // A permit on a server has no descriptor: this process renews its lease while
        // the command runs, and gives it back after.
        let result = crate::run::run(cmd, None, s.last_fence());
        s.release()?;
        return result;
    }
    let fd = s.share_with_children()?;
    // No release: the permit is the command's as much as ours, and goes back when the
    // last process holding the descriptor exits (this one included).
    crate::run::run(cmd, Some(fd), s.last_fence())
}
