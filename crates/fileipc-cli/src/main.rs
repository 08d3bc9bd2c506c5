//! The `fileipc` command.

use std::process::ExitCode;

use clap::Parser;

/// Inter-process communication through the file system, from the shell.
#[derive(Debug, Parser)]
#[command(name = "fileipc", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
