//! `fileipc demo`: all six primitives together across real worker processes.

use std::process::ExitCode;

/// Arguments of the hidden demo worker role.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {}

pub(crate) fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo: not yet")
}

pub(crate) fn worker(_args: WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo: not yet")
}
