//! `fileipc completions SHELL` and `fileipc man [DIR]`: shell completion scripts and
//! manual pages generated from the command-line definitions.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// Writes the completion script for `shell` to standard output.
pub(crate) fn completions(
    shell: clap_complete::Shell,
    cli: clap::Command,
) -> anyhow::Result<ExitCode> {
    // Generated into memory: `generate` panics on a write error (a closed pipe).
    let mut script = Vec::new();
    let mut cli = without_hidden(cli);
    clap_complete::generate(shell, &mut cli, "fileipc", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        // The reader had what it wanted (`| head`).
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => {
            r.context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cli` without its hidden (internal) subcommands, which the completion generators
/// would offer.
fn without_hidden(cli: clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut out = clap::Command::new("fileipc")
        .version(env!("CARGO_PKG_VERSION"))
        .args(cli.get_arguments().cloned())
        .subcommands(visible)
        .subcommand_required(cli.is_subcommand_required_set());
    if let Some(about) = cli.get_about() {
        out = out.about(about.clone());
    }
    out
}

/// Without `dir`, writes fileipc(1) to standard output; with it, writes one page per
/// visible command (`fileipc.1`, `fileipc-queue.1`, `fileipc-queue-send.1`, ...) there,
/// creating the directory if missing, and prints each file's path.
pub(crate) fn man(cli: clap::Command, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(dir) = dir else {
        clap_mangen::Man::new(cli)
            .render(&mut std::io::stdout().lock())
            .context("writing the manual page")?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: creating", dir.display()))?;
    let mut pages = Vec::new();
    write_pages(cli.disable_help_subcommand(true), dir, &mut pages)?;
    pages.sort();
    for p in pages {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and of each of its visible subcommands into `dir`.
fn write_pages(
    mut cmd: clap::Command,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> anyhow::Result<()> {
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd);
    let path = page
        .generate_to(dir)
        .with_context(|| format!("{}: writing a manual page", dir.display()))?;
    written.push(path);
    Ok(())
}
