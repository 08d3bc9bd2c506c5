//! `fileipc stat PATH`

use std::path::Path;
use std::process::ExitCode;

pub(crate) fn stat(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let _ = (path, json);
    anyhow::bail!("stat: not yet")
}
