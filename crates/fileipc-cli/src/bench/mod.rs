//! `fileipc bench`: every primitive beside its baseline, measured in one run.

use std::process::ExitCode;

/// Options of `fileipc bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

/// Arguments of the hidden worker role the benchmark re-executes itself in.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {}

pub(crate) fn run(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

pub(crate) fn worker(_args: WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
