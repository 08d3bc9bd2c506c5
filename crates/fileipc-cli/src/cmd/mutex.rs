//! `fileipc mutex ...`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fileipc::Mutex;

pub(crate) fn run(
    path: &Path,
    limit: Option<Duration>,
    conflict_exit_code: u8,
    mode: Option<u32>,
    cmd: &[OsString],
) -> anyhow::Result<ExitCode> {
    let m = match mode {
        Some(mode) => Mutex::options().mode(mode).open(path)?,
        None => Mutex::open(path)?,
    };
    let locked = match limit {
        Some(t) => m.lock_timeout(t)?,
        None => {
            m.lock_forever()?;
            true
        }
    };
    if !locked {
        eprintln!(
            "fileipc: {}: still locked after {}",
            path.display(),
            super::human(limit.unwrap_or_default())
        );
        return Ok(ExitCode::from(conflict_exit_code));
    }
    // The command inherits the descriptor holding the lock: killing `fileipc` alone
    // leaves the lock held until the command (and what kept the descriptor) is gone.
    // A lock on a server has no descriptor: this process renews its lease meanwhile.
    let fd = match crate::is_remote(path) {
        true => None,
        false => Some(m.share_with_children()?),
    };
    let result = crate::run::run(cmd, fd, m.fence());
    m.unlock()?;
    result
}

pub(crate) fn status(path: &Path) -> anyhow::Result<ExitCode> {
    let locked = Mutex::open_existing(path)?.is_locked()?;
    println!("{}", if locked { "locked" } else { "free" });
    Ok(crate::yes(locked))
}
