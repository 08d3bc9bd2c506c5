//! The `fileipc` command: a thin shell over the `fileipc` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;

/// Inter-process communication through the file system, from the shell.
#[derive(Debug, Parser)]
#[command(name = "fileipc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure every primitive beside its baseline.
    Bench(bench::BenchArgs),
    /// Internal: a benchmark worker process.
    #[command(name = "__bench-worker", hide = true)]
    BenchWorker(bench::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(a) => bench::run(a),
        Command::BenchWorker(a) => bench::worker(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fileipc: {e:#}");
            ExitCode::from(3)
        }
    }
}
