//! The alternatives every figure is compared with, written with raw system calls
//! (`sys.rs`) or the bare libraries, and the seed's own designs: one file per kind of
//! primitive (`queue.rs`, `lock.rs`, `kv.rs`, `event.rs`), and the raw redis-rs jobs of
//! `--redis` runs (`redis.rs`).
//!
//! Each `open_*` function maps an implementation name (the `--imp` of a worker) to an
//! object of the workload's trait; `"ours*"` names go to `ours.rs`.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::sys::{Mq, NamedSem};

mod event;
mod kv;
mod lock;
mod queue;
mod redis;

pub(crate) use event::open_event;
pub(crate) use kv::open_kv;
pub(crate) use lock::open_lock;
pub(crate) use queue::{mq_chunk, open_queue};

/// What a worker process knows about its run, shared by the implementations it opens.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The run's private directory (on the file system under test).
    pub(crate) dir: PathBuf,
    /// Prefix of this run's POSIX IPC names (`/TAG-...`), unique per run.
    pub(crate) tag: String,
    /// Message size in bytes.
    pub(crate) size: usize,
    /// POSIX mq capacity (`mq_maxmsg`).
    pub(crate) depth: usize,
    /// Number of producer processes sharing a queue.
    pub(crate) producers: u32,
    /// Number of consumer processes sharing a queue.
    pub(crate) consumers: u32,
    /// CLOCK_MONOTONIC ns after which polling implementations give up (u64::MAX: none).
    pub(crate) deadline: Rc<Cell<u64>>,
    /// The Redis server of `--redis` runs (a URL naming the server only).
    pub(crate) redis: Option<String>,
}

impl Env {
    /// fileipc's URL of the run's primitive `part` on the `--redis` server.
    pub(crate) fn redis_ours(&self, part: &str) -> Result<PathBuf> {
        let base = self
            .redis
            .as_deref()
            .context("a Redis implementation without --redis")?;
        let name = format!("{}-{part}", self.tag);
        Ok(PathBuf::from(crate::redis_env::ours_url(base, &name)))
    }
}

/// The seed's polling interval.
const SEED_POLL: Duration = Duration::from_millis(10);
/// The seed's default timeout for blocking calls.
const SEED_TIMEOUT_NS: u64 = 5_000_000_000;

/// Removes the POSIX IPC names a run with `tag` may have created.
pub(crate) fn unlink_names(tag: &str) {
    for chan in ["q", "ping", "pong"] {
        Mq::unlink(&format!("/{tag}-{chan}"));
    }
    for s in ["lock", "a", "b"] {
        NamedSem::unlink(&format!("/{tag}-{s}"));
    }
}
