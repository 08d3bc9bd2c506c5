//! The process-wide registry of open store files: one descriptor of each store file this
//! process has handles on, kept until its last handle is gone, so that closing a
//! descriptor never drops the POSIX locks SQLite holds through another.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex as StdMutex, MutexGuard, OnceLock, PoisonError};

use super::open::{check_header, open_or_create};
use crate::error::{IoResultExt, Result};
use crate::sys;

/// One open descriptor of each store file this process has handles on.
///
/// POSIX record locks, which SQLite uses, belong to the process and are all dropped when
/// the process closes *any* descriptor of the file. Opening a store reads its header
/// through a descriptor of our own; if we closed it while another handle's connection
/// in this process held a lock, that lock would silently vanish. So the first opener
/// keeps its descriptor here, later openers of the same file read the header through
/// it, and it is closed only when the last handle (and its connection) is gone.
struct Entry {
    files: Vec<File>,
    refs: usize,
}

fn registry() -> MutexGuard<'static, HashMap<(u64, u64), Entry>> {
    static REGISTRY: OnceLock<StdMutex<HashMap<(u64, u64), Entry>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Validates the header of the store file at `path` (creating it if missing) and takes
/// a reference on its registry entry; returns the entry's key.
pub(super) fn acquire(path: &Path, mode: u32) -> Result<(u64, u64)> {
    let mut reg = registry();
    if let Ok(m) = std::fs::symlink_metadata(path) {
        let id = (m.dev(), m.ino());
        if let Some(entry) = reg.get_mut(&id)
            && m.file_type().is_file()
            && let Some(f) = entry.files.first()
        {
            check_header(path, f)?;
            entry.refs += 1;
            return Ok(id);
        }
    }
    let file = open_or_create(path, mode)?;
    let id = sys::file_id(&file).at("stat", path)?;
    match reg.get_mut(&id) {
        Some(entry) => {
            // The name moved between the stat and the open: this descriptor must not be
            // closed while the entry's connections live either.
            check_header(path, &file)?;
            entry.files.push(file);
            entry.refs += 1;
        }
        None => {
            // No handle of this process has the file open, so closing `file` on
            // refusal releases no lock of ours.
            check_header(path, &file)?;
            reg.insert(
                id,
                Entry {
                    files: vec![file],
                    refs: 1,
                },
            );
        }
    }
    Ok(id)
}

/// Drops a reference taken by [`acquire`], after the handle's connection closed.
pub(super) fn release(id: (u64, u64)) {
    let mut reg = registry();
    if let Some(entry) = reg.get_mut(&id) {
        entry.refs -= 1;
        if entry.refs == 0 {
            reg.remove(&id);
        }
    }
}
