//! `fileipc event ...`

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fileipc::Event;

pub(crate) fn set(path: &Path, mode: Option<u32>) -> anyhow::Result<ExitCode> {
    match mode {
        Some(mode) => Event::options().mode(mode).open(path)?,
        None => Event::open(path)?,
    }
    .set()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn clear(path: &Path) -> anyhow::Result<ExitCode> {
    Event::open(path)?.clear()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(path: &Path) -> anyhow::Result<ExitCode> {
    let set = Event::open_existing(path)?.is_set()?;
    println!("{}", if set { "set" } else { "clear" });
    Ok(crate::yes(set))
}

pub(crate) fn wait(path: &Path, limit: Option<Duration>) -> anyhow::Result<ExitCode> {
    let e = Event::open(path)?;
    let set = match limit {
        Some(t) => e.wait_timeout(t)?,
        None => {
            e.wait_forever()?;
            true
        }
    };
    if set {
        // What appeared is judged as `status` and `clear` judge it: a directory (or
        // another primitive's file) at the path is the same error, not "set".
        Event::open(path)?;
    }
    Ok(crate::yes(set))
}
