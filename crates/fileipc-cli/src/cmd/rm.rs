//! `fileipc rm PATH...`: removes primitives of every kind, each the way its library
//! `destroy` does (a SharedData store with its side files), and refuses anything else.
//!
//! The kind comes from [`fileipc::inspect`]. Each primitive is opened with the mode its
//! file has (so a group-shared one passes the trust checks) and destroyed. Like
//! `rm(1)`, it goes on after a path it cannot remove; the exit status is the worst: 3 if
//! a path was refused or failed, else 1 if one was missing, else 0.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use fileipc::{
    Event, FileKind, MutexOptions, PidFile, QueueOptions, SemaphoreOptions, SharedDataOptions,
};

/// What became of one path.
enum Outcome {
    Removed,
    Missing,
}

pub(crate) fn rm(paths: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let mut worst = 0u8;
    for path in paths {
        match remove(path) {
            Ok(Outcome::Removed) => {}
            Ok(Outcome::Missing) => {
                eprintln!("fileipc: {}: not found", path.display());
                worst = worst.max(1);
            }
            Err(e) => {
                eprintln!("fileipc: {e:#}");
                worst = worst.max(3);
            }
        }
    }
    Ok(ExitCode::from(worst))
}

/// The permission bits of the file at `path`.
fn mode_of(path: &Path) -> anyhow::Result<u32> {
    let m = std::fs::symlink_metadata(path).map_err(|e| io_error("stat", path, e))?;
    Ok(m.permissions().mode() & 0o777)
}

fn io_error(op: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("{op} {}", path.display()))
}

fn remove(path: &Path) -> anyhow::Result<Outcome> {
    let kind = fileipc::inspect(path)?.kind;
    let p = path.display();
    let not_one = |what: &str| -> anyhow::Result<Outcome> {
        bail!("{p}: not a fileipc primitive ({what}); not removed")
    };
    match kind {
        FileKind::Missing => return Ok(Outcome::Missing),
        FileKind::Queue => {
            let mode = mode_of(&path.join("control"))?;
            QueueOptions::new().mode(mode).open(path)?.destroy()?;
        }
        FileKind::Mutex => MutexOptions::new()
            .mode(mode_of(path)?)
            .open(path)?
            .destroy()?,
        FileKind::Semaphore => SemaphoreOptions::new()
            .mode(mode_of(path)?)
            .open(path)?
            .destroy()?,
        FileKind::SharedData => SharedDataOptions::new()
            .mode(mode_of(path)?)
            .open(path)?
            .destroy()?,
        FileKind::PidFile { pid } => {
            let mut f = PidFile::open(path)?;
            if !f.create()? {
                bail!("{p}: PID file of running process {pid}; not removed");
            }
            f.remove()?;
        }
        FileKind::Event => Event::open(path)?.destroy()?,
        FileKind::Symlink { .. } => return not_one("a symbolic link"),
        FileKind::Directory => return not_one("a directory that is not a queue"),
        FileKind::QueueControl | FileKind::QueueSegment => {
            return not_one("a file inside a queue: remove the queue's directory");
        }
        FileKind::SharedDataLock | FileKind::SharedDataBoard => {
            return not_one("a side file of a SharedData store: remove the store");
        }
        FileKind::UnknownState { code } => {
            return not_one(&format!("a state file of unknown kind {code}"));
        }
        FileKind::Sqlite { .. } => return not_one("an SQLite database of another program"),
        FileKind::Other(what) => return not_one(&what),
        _ => return not_one("a kind this fileipc does not know"),
    }
    Ok(Outcome::Removed)
}
