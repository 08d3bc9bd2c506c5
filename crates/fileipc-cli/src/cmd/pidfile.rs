//! `fileipc pidfile ...`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use fileipc::{PidFile, PidStatus};

pub(crate) fn run(path: &Path, mode: Option<u32>, cmd: &[OsString]) -> anyhow::Result<ExitCode> {
    let mut p = match mode {
        Some(mode) => PidFile::options().mode(mode).open(path)?,
        None => PidFile::open(path)?,
    };
    if !p.create()? {
        match p.read()? {
            Some(pid) => eprintln!("fileipc: {}: already running as PID {pid}", path.display()),
            None => eprintln!("fileipc: {}: already running", path.display()),
        }
        return Ok(crate::NO);
    }
    // The command inherits the locked descriptor: killing `fileipc` alone leaves the
    // PID file locked until the command (and what kept the descriptor) is gone.
    let fd = p.share_with_children()?;
    let result = crate::run::run(cmd, fd);
    p.remove()?;
    result
}

pub(crate) fn check(path: &Path) -> anyhow::Result<ExitCode> {
    match PidFile::open(path)?.status()? {
        PidStatus::Absent => {
            eprintln!("fileipc: {}: no pid file", path.display());
            Ok(crate::NO)
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
