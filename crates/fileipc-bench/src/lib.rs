//! The benchmarks of fileipc: every primitive beside its baselines, measured in one run
//! across real processes. `fileipc bench` is a thin command over [`run`] and [`worker`].
//!
//! Layout:
//! - `harness.rs`: the command's options, and the harness that runs the workloads in
//!   rounds (A B C, B C A, ...), each run in fresh worker processes, and computes the
//!   figures from their reports;
//! - `workloads.rs`: the workloads, their contenders, metrics, counts and time caps;
//! - `workers.rs`: the worker processes (`EXE __bench-worker`), one loop per workload,
//!   written once against the traits of `api.rs`;
//! - `baselines/`: the baselines behind those traits (POSIX mq, pipes, futex, flock, POSIX
//!   semaphores, SQLite, inotify, and the seed's designs), one file per kind of primitive;
//! - `ours.rs`: the `fileipc` primitives behind the same traits;
//! - `redis_env.rs`: the server of `--redis` runs (given, or a private `redis-server`),
//!   the run's names on it, and the removal of a run's keys;
//! - `report.rs`: medians, ratios, goals, the table and the JSON lines;
//! - `hist.rs`: latency histograms;
//! - [`sys`]: the raw system calls, the only module allowed `unsafe`;
//! - [`measure`]: helpers of the stand-alone measurements in `examples/`.
//!
//! The program that calls [`run`] is re-executed for every worker as
//! `EXE __bench-worker ARGS...` ([`WORKER_SUBCOMMAND`]); it must pass those arguments,
//! parsed as [`WorkerArgs`], to [`worker`].

mod api;
mod baselines;
mod harness;
mod hist;
mod ours;
mod redis_env;
mod report;
mod workers;
mod workloads;

pub mod measure;
pub mod sys;

pub use harness::{BenchArgs, run};
pub use workers::{WORKER_SUBCOMMAND, WorkerArgs, worker};
