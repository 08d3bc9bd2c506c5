//! `fileipc pidfile ...`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use fileipc::PidFile;

pub(crate) fn run(path: &Path, cmd: &[OsString]) -> anyhow::Result<ExitCode> {
    let mut p = PidFile::open(path)?;
    if !p.create()? {
        match p.read()? {
            Some(pid) => eprintln!("fileipc: {}: already running as PID {pid}", path.display()),
            None => eprintln!("fileipc: {}: already running", path.display()),
        }
        return Ok(crate::NO);
    }
    let result = crate::run::run(cmd);
    p.remove()?;
    result
}

pub(crate) fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let p = PidFile::open(path)?;
    let Some(pid) = p.read()? else {
        eprintln!("fileipc: {}: no pid file", path.display());
        return Ok(crate::NO);
    };
    println!("{pid}");
    Ok(crate::yes(PidFile::is_running(path)?))
}
