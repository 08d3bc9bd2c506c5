//! `fileipc pidfile ...`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use fileipc::{PidFile, PidStatus};

pub(crate) fn run(
    path: &Path,
    force: bool,
    mode: Option<u32>,
    cmd: &[OsString],
) -> anyhow::Result<ExitCode> {
    let mut p = match mode {
        Some(mode) => PidFile::options().mode(mode).open(path)?,
        None => PidFile::open(path)?,
    };
    let created = if force {
        p.create_force()?
    } else {
        p.create()?
    };
    if !created {
        match p.status()? {
            PidStatus::AliveUnlocked { pid } => eprintln!(
                "fileipc: {}: {}; not taking it over (--force takes it)",
                path.display(),
                alive_unlocked(pid)
            ),
            status => match status.pid() {
                Some(pid) => eprintln!("fileipc: {}: already running as PID {pid}", path.display()),
                None => eprintln!("fileipc: {}: already running", path.display()),
            },
        }
        return Ok(crate::NO);
    }
    // The command inherits the locked descriptor: killing `fileipc` alone leaves the
    // PID file locked until the command (and what kept the descriptor) is gone.
    // An entry on a server has no descriptor: this process renews its lease meanwhile.
    let fd = match crate::is_remote(path) {
        true => None,
        false => Some(p.share_with_children()?),
    };
    let result = crate::run::run(cmd, fd, p.generation());
    p.remove()?;
    result
}

pub(crate) fn check(path: &Path) -> anyhow::Result<ExitCode> {
    match PidFile::open(path)?.status()? {
        PidStatus::Absent => {
            eprintln!("fileipc: {}: not found (no pid file)", path.display());
            Ok(crate::NO)
        }
        PidStatus::AliveUnlocked { pid } => {
            println!("{pid}");
            eprintln!("fileipc: {}: {}", path.display(), alive_unlocked(pid));
            Ok(ExitCode::SUCCESS)
        }
        PidStatus::Running { pid } => {
            match pid {
                Some(pid) => println!("{pid}"),
                None => println!("?"),
            }
            Ok(ExitCode::SUCCESS)
        }
        status => {
            let pid = status.pid();
            let pid = pid.map_or("?".to_owned(), |p| p.to_string());
            println!("{pid}");
            eprintln!(
                "fileipc: {}: PID {pid} is not running (stale file)",
                path.display()
            );
            Ok(crate::NO)
        }
    }
}

/// What a PID file naming a live process that holds no lock on it means.
fn alive_unlocked(pid: u32) -> String {
    format!(
        "PID {pid} is alive but does not hold the lock (a PID file written by another \
         program, or a reused PID)"
    )
}
