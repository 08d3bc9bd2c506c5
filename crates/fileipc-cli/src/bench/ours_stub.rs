//! Stand-in for `ours.rs` while the primitives are not merged: nothing is available, and
//! the harness reports "ours" as not measured (`null` in `--json`).
//!
//! To measure the `fileipc` primitives, replace in `bench/mod.rs`
//! `#[path = "ours_stub.rs"] mod ours;` by `mod ours;` (see the comment there).

use std::path::Path;

use anyhow::{Result, bail};

use super::api::{EventFlag, Kv, Lock, QueueEnd};

/// Whether the `fileipc` primitives are compiled into the benchmark.
pub(crate) const AVAILABLE: bool = false;

fn missing<T>() -> Result<T> {
    bail!("the fileipc primitives are not compiled into this benchmark (see bench/ours_stub.rs)")
}

pub(crate) fn queue(_dir: &Path, _durable: bool) -> Result<Box<dyn QueueEnd>> {
    missing()
}

pub(crate) fn mutex(_path: &Path) -> Result<Box<dyn Lock>> {
    missing()
}

pub(crate) fn semaphore(_path: &Path) -> Result<Box<dyn Lock>> {
    missing()
}

pub(crate) fn kv(_path: &Path) -> Result<Box<dyn Kv>> {
    missing()
}

pub(crate) fn event(_path: &Path) -> Result<Box<dyn EventFlag>> {
    missing()
}
