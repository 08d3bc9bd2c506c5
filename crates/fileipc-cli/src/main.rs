//! The `fileipc` command: a thin shell over the `fileipc` library.
//!
//! Exit codes: 0 success; 1 timeout, not acquired, not found, or a check that is false;
//! 2 usage error; 3 any other error, with a one-line message on stderr naming the path
//! and the cause. `run` subcommands pass the command's exit code through.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod args;
mod cmd;
mod run;

use args::{Mode, Wait};

/// Inter-process communication through the file system, from the shell.
///
/// Every primitive is named by a path; Rust programs using the `fileipc` library on the
/// same path see the same queue, lock, semaphore, event, pid file or store.
#[derive(Debug, Parser)]
#[command(
    name = "fileipc",
    version,
    about,
    after_help = "Examples:\n  \
        fileipc queue send /tmp/jobs 'resize a.png'\n  \
        fileipc queue recv /tmp/jobs --timeout 2s\n  \
        fileipc mutex run /tmp/backup.lock -- rsync -a src/ dst/\n  \
        fileipc sem run /tmp/pool --initial 4 -- ./work.sh item\n  \
        fileipc event wait /tmp/ready --timeout 30s\n  \
        fileipc demo\n\n\
        Waiting commands wait without limit unless given --timeout (30, 500ms, 30s, 1h30m).\n\
        Exit codes: 0 success, 1 timeout/not found/false, 2 usage error, 3 other error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A message queue in a directory.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// A counting semaphore in a file.
    #[command(subcommand)]
    Sem(SemCmd),
    /// A mutex in a file.
    #[command(subcommand)]
    Mutex(MutexCmd),
    /// A shared key-value store (SQLite, values are JSON).
    #[command(subcommand)]
    Kv(KvCmd),
    /// A pid file guarding a single instance.
    #[command(subcommand)]
    Pidfile(PidfileCmd),
    /// An event: set while the file exists.
    #[command(subcommand)]
    Event(EventCmd),
    /// What PATH is and its live state; exit 1 if nothing is there.
    #[command(after_help = "Example:\n  fileipc stat /tmp/jobs --json")]
    Stat {
        /// Any fileipc path (or any path at all).
        path: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove primitives of any kind (a store with its side files); refuses other files.
    #[command(
        after_help = "Exit status: 0 all removed, 1 a path was not found, 3 a path is not a \
                      fileipc primitive (left untouched) or could not be removed.\n\n\
                      Example:\n  fileipc rm /tmp/jobs /tmp/jobs.lock /tmp/state.db"
    )]
    Rm {
        /// The primitives: a queue's directory, a mutex, semaphore, event, PID file or
        /// SharedData store.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run all six primitives together across real worker processes.
    #[command(after_help = "Examples:\n  cargo run --release -- demo\n  fileipc demo --keep")]
    Demo {
        /// Leave the demo's directory (its queue, semaphore, store...) for `fileipc stat`.
        #[arg(long)]
        keep: bool,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        fileipc completions bash > /etc/bash_completion.d/fileipc\n  \
        fileipc completions zsh > \"${fpath[1]}/_fileipc\"\n  \
        fileipc completions fish > ~/.config/fish/completions/fileipc.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or write every command's page into DIR.
    #[command(after_help = "Examples:\n  fileipc man | man -l -\n  \
        fileipc man /usr/local/share/man/man1")]
    Man {
        /// A directory for fileipc.1, fileipc-queue.1, fileipc-queue-send.1, ...
        dir: Option<PathBuf>,
    },
    /// Measure every primitive beside its baseline.
    #[cfg(feature = "bench")]
    Bench(fileipc_bench::BenchArgs),
    /// Measure every primitive beside its baseline (not in this build).
    #[cfg(not(feature = "bench"))]
    Bench {
        /// Ignored: this build has no benchmarks.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<OsString>,
    },
    /// Internal: a benchmark worker process.
    #[cfg(feature = "bench")]
    #[command(name = fileipc_bench::WORKER_SUBCOMMAND, hide = true)]
    BenchWorker(fileipc_bench::WorkerArgs),
    /// Internal: a demo worker process.
    #[command(name = "__demo-worker", hide = true)]
    DemoWorker(cmd::demo::WorkerArgs),
}

#[derive(Debug, Subcommand)]
enum QueueCmd {
    /// Send messages: each MSG, or one message per line of stdin.
    #[command(
        after_help = "Examples:\n  fileipc queue send /tmp/jobs 'job 1' 'job 2'\n  \
        ls *.png | fileipc queue send /tmp/jobs\n  \
        find . -name '*.png' -print0 | fileipc queue send /tmp/jobs -0 --mode 660\n\n\
        Standard input is read as it comes: a message too large (over 64 MiB) or a failed\n\
        send stops with an error saying how many messages were sent before it."
    )]
    Send {
        /// The queue directory (created if missing).
        dir: PathBuf,
        /// Messages; none: one message per line of standard input.
        msg: Vec<OsString>,
        #[command(flatten)]
        framing: args::Framing,
        #[command(flatten)]
        create: args::QueueCreate,
    },
    /// Receive messages and print each followed by a newline; exit 1 if none came.
    #[command(
        after_help = "Examples:\n  fileipc queue recv /tmp/jobs --timeout 2s\n  \
        fileipc queue recv /tmp/jobs -n 10\n  fileipc queue recv /tmp/jobs --all\n  \
        fileipc queue recv /tmp/blobs --framed --timeout 0 > blobs.bin"
    )]
    Recv {
        /// The queue directory.
        dir: PathBuf,
        #[command(flatten)]
        wait: Wait,
        /// Receive up to COUNT messages (default 1), waiting for each until the time is up.
        #[arg(short = 'n', long, value_name = "COUNT", conflicts_with = "all")]
        count: Option<u64>,
        /// Wait for a first message, then take every message queued.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        framing: args::Framing,
        #[command(flatten)]
        mode: Mode,
    },
    /// Print the number of pending messages.
    #[command(after_help = "Example:\n  fileipc queue count /tmp/jobs")]
    Count {
        /// The queue directory.
        dir: PathBuf,
    },
    /// Remove every pending message.
    #[command(after_help = "Example:\n  fileipc queue clear /tmp/jobs")]
    Clear {
        /// The queue directory.
        dir: PathBuf,
    },
    /// Remove the queue directory.
    #[command(after_help = "Example:\n  fileipc queue destroy /tmp/jobs")]
    Destroy {
        /// The queue directory.
        dir: PathBuf,
    },
    /// Claim a message and run CMD with it on standard input: acknowledge it if CMD exits
    /// 0, give it back otherwise (or if CMD is killed, or fileipc is). Exit with CMD's
    /// status; 1 if no message came.
    #[command(after_help = "Example (a worker pool in one line per worker):\n  \
        while fileipc queue claim /tmp/jobs --forever -- ./work.sh; do :; done")]
    Claim {
        /// The queue directory.
        dir: PathBuf,
        #[command(flatten)]
        wait: Wait,
        /// How long the message stays invisible to other claimers if this one stops
        /// (renewed while CMD runs); a claimer that dies gives it back at once.
        #[arg(long, value_name = "T", value_parser = args::parse_duration, default_value = "30s")]
        lease: std::time::Duration,
        /// Move a message to the dead letters after N failed deliveries (0: no limit).
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_deliveries: u32,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// List the dead letters (messages that had their --max-deliveries), each as
    /// "ATTEMPTS<TAB>MESSAGE"; with --drain, remove them as they are printed.
    #[command(after_help = "Examples:\n  fileipc queue dead /tmp/jobs\n  \
        fileipc queue dead /tmp/jobs --drain > failed.txt")]
    Dead {
        /// The queue directory.
        dir: PathBuf,
        /// Remove each dead letter once it is written out.
        #[arg(long)]
        drain: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct SemOpts {
    /// The semaphore file (created with the initial value if missing; `value` never
    /// creates it).
    path: PathBuf,
    /// Permits of a new semaphore (default 1). An existing semaphore of another
    /// capacity is an error (exit 3); without `--initial`, it is used as it is.
    #[arg(long, value_name = "N")]
    initial: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum SemCmd {
    /// Take a permit and keep it after exit (give it back with `release`); exit 1 on timeout.
    #[command(after_help = "Example:\n  fileipc sem acquire /tmp/pool --initial 3 --timeout 10s")]
    Acquire {
        #[command(flatten)]
        sem: SemOpts,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        mode: Mode,
    },
    /// Give a permit back.
    #[command(after_help = "Example:\n  fileipc sem release /tmp/pool")]
    Release {
        #[command(flatten)]
        sem: SemOpts,
        #[command(flatten)]
        mode: Mode,
    },
    /// Print the number of free permits (never creates; exit 1 if not found).
    #[command(after_help = "Example:\n  fileipc sem value /tmp/pool")]
    Value {
        #[command(flatten)]
        sem: SemOpts,
    },
    /// Run CMD holding one permit; exit 1 (or -E N) if none came in time, 127/126 if CMD
    /// is not found / not executable.
    ///
    /// CMD gets the permit's fencing token in FILEIPC_FENCE.
    #[command(after_help = "Example (at most 4 at once):\n  \
        for f in *.wav; do fileipc sem run /tmp/enc --initial 4 -- flac \"$f\" & done; wait")]
    Run {
        #[command(flatten)]
        sem: SemOpts,
        #[command(flatten)]
        wait: Wait,
        /// The exit code when no permit was acquired in time, as flock(1)'s `-E`.
        #[arg(short = 'E', long, value_name = "N", default_value_t = 1)]
        conflict_exit_code: u8,
        #[command(flatten)]
        mode: Mode,
        /// The command and its arguments (`--` before it is needed only if it starts
        /// with `-`).
        #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum MutexCmd {
    /// Run CMD holding the mutex, like flock(1); exit 1 (or -E N) if it was not free in
    /// time, 127/126 if CMD is not found / not executable.
    ///
    /// CMD gets the grant's fencing token in FILEIPC_FENCE.
    #[command(
        after_help = "Example:\n  fileipc mutex run /tmp/backup.lock --timeout 0 -- ./backup.sh"
    )]
    Run {
        /// The mutex file (created if missing; an empty one, as flock(1) and touch make,
        /// is adopted).
        path: PathBuf,
        #[command(flatten)]
        wait: Wait,
        /// The exit code when the lock was not acquired in time, as flock(1)'s `-E`.
        #[arg(short = 'E', long, value_name = "N", default_value_t = 1)]
        conflict_exit_code: u8,
        #[command(flatten)]
        mode: Mode,
        /// The command and its arguments (`--` before it is needed only if it starts
        /// with `-`).
        #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Exit 0 if locked, 1 if free (or not found: it never creates the lock file).
    #[command(after_help = "Example:\n  fileipc mutex status /tmp/backup.lock && echo busy")]
    Status {
        /// The mutex file.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KvCmd {
    /// Print the JSON value of KEY; exit 1 if absent.
    #[command(after_help = "Examples:\n  fileipc kv get /tmp/state counter\n  \
        cd \"$(fileipc kv get /tmp/state workdir --raw)\"")]
    Get {
        /// The store file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Print a string value as its bare text (no JSON quotes or escapes); other
        /// values print as JSON.
        #[arg(long)]
        raw: bool,
    },
    /// Set KEY to a JSON value.
    #[command(
        after_help = "Examples:\n  fileipc kv set /tmp/state status '\"running\"'\n  \
        fileipc kv set /tmp/state config '{\"workers\": 4}'\n  \
        fileipc kv set /tmp/state motd --raw - < /etc/motd\n  \
        curl -s https://example.org/config.json | fileipc kv set /tmp/state config -"
    )]
    Set {
        /// The store file (created if missing).
        path: PathBuf,
        /// The key.
        key: String,
        /// The value, as JSON (a string needs its quotes: '"text"'); `-`: read it from
        /// standard input (a JSON text, or the raw bytes with --raw).
        json: String,
        /// Store the value as a string, exactly as given (no JSON quotes needed).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        create: args::KvCreate,
    },
    /// Delete KEY; exit 1 if it was absent.
    #[command(after_help = "Example:\n  fileipc kv delete /tmp/state status")]
    Delete {
        /// The store file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// Add DELTA (default 1) to an integer KEY atomically and print the new value.
    #[command(after_help = "Example:\n  fileipc kv incr /tmp/state jobs_done")]
    Incr {
        /// The store file (created if missing).
        path: PathBuf,
        /// The key (created at 0).
        key: String,
        /// The amount to add.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        #[command(flatten)]
        create: args::KvCreate,
    },
    /// Print every key, one per line.
    #[command(after_help = "Example:\n  fileipc kv keys /tmp/state")]
    Keys {
        /// The store file.
        path: PathBuf,
    },
    /// Delete every key.
    #[command(after_help = "Example:\n  fileipc kv clear /tmp/state")]
    Clear {
        /// The store file.
        path: PathBuf,
    },
    /// Print everything as one JSON object.
    #[command(after_help = "Example:\n  fileipc kv dump /tmp/state | jq .")]
    Dump {
        /// The store file.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PidfileCmd {
    /// Run CMD holding PATH; exit 1 if a live owner holds it, 127/126 if CMD is not
    /// found / not executable.
    ///
    /// CMD gets the ownership's generation (a fencing token) in FILEIPC_FENCE.
    #[command(after_help = "Example (crontab):\n  \
        */5 * * * * fileipc pidfile run /tmp/sync.pid -- /usr/local/bin/sync-mail")]
    Run {
        /// The pid file.
        path: PathBuf,
        /// Also take over a file that names a live process holding no lock on it (a PID
        /// file written by another program, or a reused PID); never one a live owner holds.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        mode: Mode,
        /// The command and its arguments (`--` before it is needed only if it starts
        /// with `-`).
        #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Print the owner's PID; exit 0 if it is alive, 1 if not (or no file).
    ///
    /// A file whose PID names a live process that holds no lock on it (written by another
    /// program) prints that PID, says so on stderr, and exits 0.
    #[command(after_help = "Example:\n  fileipc pidfile check /tmp/sync.pid")]
    Check {
        /// The pid file.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EventCmd {
    /// Set the event (create the file).
    #[command(after_help = "Example:\n  fileipc event set /tmp/ready")]
    Set {
        /// The event file.
        path: PathBuf,
        #[command(flatten)]
        mode: Mode,
    },
    /// Clear the event (remove the file).
    #[command(after_help = "Example:\n  fileipc event clear /tmp/ready")]
    Clear {
        /// The event file.
        path: PathBuf,
    },
    /// Print "set" or "clear"; exit 0 if set, 1 if clear.
    #[command(after_help = "Example:\n  fileipc event status /tmp/ready")]
    Status {
        /// The event file.
        path: PathBuf,
    },
    /// Wait until the event is set; exit 0 when set, 1 on timeout.
    #[command(after_help = "Example:\n  fileipc event wait /tmp/ready --timeout 30s && ./start.sh")]
    Wait {
        /// The event file.
        path: PathBuf,
        #[command(flatten)]
        wait: Wait,
    },
}

/// Exit status 1: the operation ran, and its answer is "no" (timeout, absent, false).
pub(crate) const NO: ExitCode = ExitCode::FAILURE;

/// 0 for true, 1 for false.
pub(crate) fn yes(b: bool) -> ExitCode {
    if b { ExitCode::SUCCESS } else { NO }
}

/// Whether `path` names a primitive on a server (a `redis://` URL) rather than a file.
pub(crate) fn is_remote(path: &std::path::Path) -> bool {
    matches!(
        fileipc::Location::parse(path),
        Ok(fileipc::Location::Redis(_))
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Not found is exit 1, as for every query that finds nothing.
            if let Some(fe) = e.downcast_ref::<fileipc::Error>()
                && fe.io_kind() == Some(std::io::ErrorKind::NotFound)
            {
                // The path once, the operating system's reason once.
                let reason = e
                    .chain()
                    .last()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                eprintln!("fileipc: {}: not found ({reason})", fe.path().display());
                return NO;
            }
            // One line: the cause chain joined; the library's messages name the path.
            eprintln!("fileipc: {e:#}");
            if e.is::<cmd::Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(3)
            }
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    use cmd::*;
    match command {
        Command::Queue(c) => match c {
            QueueCmd::Send {
                dir,
                msg,
                framing,
                create,
            } => queue::send(&dir, msg, framing.get(), create.get()),
            QueueCmd::Recv {
                dir,
                wait,
                count,
                all,
                framing,
                mode,
            } => queue::recv(&dir, wait.limit(), count, all, framing.get(), mode.mode),
            QueueCmd::Count { dir } => queue::count(&dir),
            QueueCmd::Clear { dir } => queue::clear(&dir),
            QueueCmd::Destroy { dir } => queue::destroy(&dir),
            QueueCmd::Claim {
                dir,
                wait,
                lease,
                max_deliveries,
                cmd,
            } => queue::claim(&dir, wait.limit(), lease, max_deliveries, &cmd),
            QueueCmd::Dead { dir, drain } => queue::dead(&dir, drain),
        },
        Command::Sem(c) => match c {
            SemCmd::Acquire { sem, wait, mode } => {
                sem::acquire(&sem.path, sem.initial, wait.limit(), mode.mode)
            }
            SemCmd::Release { sem, mode } => sem::release(&sem.path, sem.initial, mode.mode),
            SemCmd::Value { sem } => sem::value(&sem.path, sem.initial),
            SemCmd::Run {
                sem,
                wait,
                conflict_exit_code,
                mode,
                cmd,
            } => sem::run(
                &sem.path,
                sem.initial,
                wait.limit(),
                conflict_exit_code,
                mode.mode,
                &cmd,
            ),
        },
        Command::Mutex(c) => match c {
            MutexCmd::Run {
                path,
                wait,
                conflict_exit_code,
                mode,
                cmd,
            } => mutex::run(&path, wait.limit(), conflict_exit_code, mode.mode, &cmd),
            MutexCmd::Status { path } => mutex::status(&path),
        },
        Command::Kv(c) => match c {
            KvCmd::Get { path, key, raw } => kv::get(&path, &key, raw),
            KvCmd::Set {
                path,
                key,
                json,
                raw,
                create,
            } => kv::set(&path, &key, &json, raw, create.get()),
            KvCmd::Delete { path, key } => kv::delete(&path, &key),
            KvCmd::Incr {
                path,
                key,
                delta,
                create,
            } => kv::incr(&path, &key, delta, create.get()),
            KvCmd::Keys { path } => kv::keys(&path),
            KvCmd::Clear { path } => kv::clear(&path),
            KvCmd::Dump { path } => kv::dump(&path),
        },
        Command::Pidfile(c) => match c {
            PidfileCmd::Run {
                path,
                force,
                mode,
                cmd,
            } => pidfile::run(&path, force, mode.mode, &cmd),
            PidfileCmd::Check { path } => pidfile::check(&path),
        },
        Command::Event(c) => match c {
            EventCmd::Set { path, mode } => event::set(&path, mode.mode),
            EventCmd::Clear { path } => event::clear(&path),
            EventCmd::Status { path } => event::status(&path),
            EventCmd::Wait { path, wait } => event::wait(&path, wait.limit()),
        },
        Command::Stat { path, json } => stat::stat(&path, json),
        Command::Rm { paths } => rm::rm(&paths),
        Command::Demo { keep } => demo::run(keep),
        Command::Completions { shell } => docs::completions(shell, Cli::command()),
        Command::Man { dir } => docs::man(Cli::command(), dir.as_deref()),
        Command::DemoWorker(a) => demo::worker(a),
        #[cfg(feature = "bench")]
        Command::Bench(a) => {
            use anyhow::Context as _;
            // Every worker is this binary again, as `fileipc __bench-worker ...`.
            let exe = std::env::current_exe().context("locating the fileipc binary")?;
            fileipc_bench::run(&a, &exe)
        }
        #[cfg(not(feature = "bench"))]
        Command::Bench { .. } => Err(cmd::Usage(
            "this fileipc was built without benchmarks (cargo feature `bench` of fileipc-cli)"
                .into(),
        )
        .into()),
        #[cfg(feature = "bench")]
        Command::BenchWorker(a) => fileipc_bench::worker(a),
    }
}
