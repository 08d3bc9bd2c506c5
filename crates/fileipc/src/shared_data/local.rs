//! `LocalSharedData`: the local engine's handle on one store. Reads run on the handle's
//! SQLite connection; writes take the writers' lock (an exclusive `flock` of `PATH-lock`)
//! around their transaction and kick the request board when they release it. The handle
//! refuses use from a forked child and re-entry from inside its own write on the same
//! thread, and gives its board slot, connection and registry reference back on drop.
//! Opening is in `open`, combined increments in `combining`.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Transaction;
use super::board::{self, Board};
use super::open::BUSY_TIMEOUT;
use super::options::SharedDataOptions;
use super::registry;
use super::settle::{BatchIds, settle};
use super::sql::{Ops, cas_operands, check_key, encode};
use crate::error::{Error, IoResultExt, Result};
use crate::sys;

/// The local engine's handle on one store.
pub(super) struct LocalSharedData {
    pub(super) path: PathBuf,
    pub(super) lock_path: PathBuf,
    /// Device and inode of the lock file: which store a thread is writing.
    pub(super) lock_id: (u64, u64),
    /// Key of this handle's reference in the process-wide registry (`registry`).
    pub(super) store_id: (u64, u64),
    /// The process that opened the handle; any other one is a forked child.
    pub(super) owner_pid: u32,
    /// The options this handle was opened with (for `try_clone`).
    pub(super) opts: SharedDataOptions,
    pub(super) inner: StdMutex<Option<Inner>>,
}

/// What a handle uses under its mutex: the connection, the lock file, the board.
pub(super) struct Inner {
    pub(super) conn: Connection,
    pub(super) lock: File,
    pub(super) board: Board,
    /// This handle's slot on the board, once claimed, and the last sequence number
    /// it used there.
    pub(super) slot: Option<usize>,
    pub(super) seq: u64,
    /// The owner identity this process writes into the slots it claims.
    pub(super) me: u64,
    /// The WAL's length at this connection's last commit (`bound_wal`).
    pub(super) wal: Arc<WalSize>,
    /// The ids of this handle's combined batches.
    pub(super) batch_ids: BatchIds,
}

/// WAL frames (pages) after which a writer, still under the writers' lock, checkpoints
/// and truncates the WAL (`bound_wal`): about 8 MB with 4 KiB pages.
pub(super) const WAL_TRUNCATE_PAGES: i32 = 2000;
/// After a truncation that readers prevented, how many more frames before trying again.
const WAL_RETRY_PAGES: i32 = 250;
/// How long that truncation waits for readers still reading from the WAL.
const WAL_TRUNCATE_WAIT: Duration = Duration::from_millis(200);

/// The WAL's length in frames as this connection's commits saw it (set by its WAL hook),
/// and the length at which `bound_wal` truncates it next.
pub(super) struct WalSize {
    pages: AtomicI32,
    next: AtomicI32,
}

impl WalSize {
    pub(super) fn new() -> WalSize {
        WalSize {
            pages: AtomicI32::new(0),
            next: AtomicI32::new(WAL_TRUNCATE_PAGES),
        }
    }

    /// From the WAL hook, at each commit: the WAL holds `pages` frames.
    pub(super) fn note(&self, pages: i32) {
        self.pages.store(pages, Ordering::Relaxed);
    }
}

/// Under the writers' lock, after a commit: once the WAL has grown past
/// `WAL_TRUNCATE_PAGES` frames, checkpoints it and truncates it to nothing.
///
/// SQLite's passive autocheckpoint copies frames back but starts the WAL over only when
/// no reader is reading from it at the next write: with readers overlapping a steady
/// writer that moment never comes and the WAL grows without bound. A TRUNCATE
/// checkpoint keeps SQLite's write lock (no frame is added) while it waits for the
/// readers of the WAL to finish; readers starting meanwhile read the database file.
/// It waits at most `WAL_TRUNCATE_WAIT` (a stopped reader must not stall writers),
/// then tries again `WAL_RETRY_PAGES` frames later.
pub(super) fn bound_wal(conn: &Connection, wal: &WalSize) {
    let pages = wal.pages.load(Ordering::Relaxed);
    if pages < wal.next.load(Ordering::Relaxed) {
        return;
    }
    let _ = conn.busy_timeout(WAL_TRUNCATE_WAIT);
    let r = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::TRUNCATE);
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    if r.is_ok() {
        wal.pages.store(0, Ordering::Relaxed);
        wal.next.store(WAL_TRUNCATE_PAGES, Ordering::Relaxed);
    } else {
        wal.next
            .store(pages.saturating_add(WAL_RETRY_PAGES), Ordering::Relaxed);
    }
}

impl LocalSharedData {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    // -----------------------------------------------------------------------------------
    // Reading

    pub(super) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read(|ops| ops.get(key))
    }

    pub(super) fn get_json(&self, key: &str) -> Result<Option<String>> {
        self.read(|ops| ops.get_raw(key, |b| Ok(String::from_utf8_lossy(b).into_owned())))
    }

    pub(super) fn contains_key(&self, key: &str) -> Result<bool> {
        self.read(|ops| ops.contains_key(key))
    }

    pub(super) fn keys(&self) -> Result<Vec<String>> {
        self.read(|ops| ops.keys())
    }

    pub(super) fn len(&self) -> Result<usize> {
        self.read(|ops| ops.len())
    }

    pub(super) fn dump(&self) -> Result<Map<String, Value>> {
        self.read(|ops| ops.dump())
    }

    // -----------------------------------------------------------------------------------
    // Writing

    pub(super) fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(&self.path, key)?;
        let json = encode(&self.path, key, value)?;
        self.write(false, |ops| ops.put(key, &json))
    }

    pub(super) fn delete(&self, key: &str) -> Result<bool> {
        check_key(&self.path, key)?;
        self.write(false, |ops| ops.delete(key))
    }

    pub(super) fn clear(&self) -> Result<()> {
        self.write(false, |ops| ops.clear())
    }

    pub(super) fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        check_key(&self.path, key)?;
        self.write(true, |ops| ops.update(key, f))
    }

    /// Combined on the board when a slot is free and the key fits one (`combining`);
    /// otherwise, or when the combiner refused the request, under the writers' lock.
    pub(super) fn increment(&self, key: &str, by: i64) -> Result<i64> {
        check_key(&self.path, key)?;
        if key.len() <= board::KEY_MAX {
            let mut guard = self.inner()?;
            let Some(inner) = guard.as_mut() else {
                return Err(Error::invalid(&self.path, "handle already closed"));
            };
            if let Some(v) = self.increment_combined(inner, key, by)? {
                return Ok(v);
            }
        }
        // No slot free, a key too long for a slot, or a request the combiner refused
        // (to produce the error here, with its detail): take the lock ourselves.
        self.write(true, |ops| ops.increment(key, by))
    }

    pub(super) fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        let (expected, new) = cas_operands(&self.path, key, expected, new)?;
        self.write(true, |ops| {
            ops.compare_and_swap(key, expected.as_ref(), &new)
        })
    }

    /// [`SharedData::set_fenced`](super::SharedData::set_fenced) and
    /// [`compare_and_swap_fenced`](super::SharedData::compare_and_swap_fenced)
    /// (`expected`: `None` for a plain set): in one write transaction, the fence check,
    /// the compare, the write and the fence's record.
    pub(super) fn write_fenced(
        &self,
        key: &str,
        expected: Option<Option<&Value>>,
        json: &str,
        fence: u64,
    ) -> Result<bool> {
        let fence = super::fenced::as_sql(&self.path, fence)?;
        self.write(true, |ops| {
            if !ops.fence_admits(key, fence)? {
                return Ok(false);
            }
            if let Some(expected) = expected {
                let cur: Option<Value> = ops.get(key)?;
                if cur.as_ref() != expected {
                    return Ok(false);
                }
            }
            ops.put(key, json)?;
            ops.record_fence(key, fence)?;
            Ok(true)
        })
    }

    pub(super) fn transaction<R>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        self.write(true, |ops| f(&Transaction::local(*ops)))
    }

    // -----------------------------------------------------------------------------------
    // Plumbing

    /// The connection, after the checks every operation makes.
    pub(super) fn inner(&self) -> Result<MutexGuard<'_, Option<Inner>>> {
        if std::process::id() != self.owner_pid {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "handle opened by process {} used in a forked child; an SQLite \
                     connection cannot cross fork, open the store again after exec",
                    self.owner_pid
                ),
            ));
        }
        if in_write(self.lock_id) {
            return Err(reentrant(&self.path));
        }
        // A panic inside a user closure poisons the mutex after the transaction guard
        // rolled back and unlocked: the connection is consistent, so carry on.
        Ok(self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Before a write, holding the writers' lock: fails, naming the path, if the file at
    /// the path is no longer the store this handle opened (deleted, or replaced by
    /// another file): its writes would go to a file no other handle sees. One `lstat`.
    pub(super) fn check_still_at_path(&self) -> Result<()> {
        let why = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.store_id => return Ok(()),
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == io::ErrorKind::NotFound => "deleted",
            Err(e) => return Err(Error::io("stat", &self.path, e)),
        };
        Err(Error::invalid(
            &self.path,
            format!(
                "the store was {why} while this handle was open; writes through it would \
                 be lost to every other handle, so they are refused: open the store again"
            ),
        ))
    }

    fn read<R>(&self, f: impl FnOnce(&Ops<'_>) -> Result<R>) -> Result<R> {
        let guard = self.inner()?;
        let Some(inner) = guard.as_ref() else {
            return Err(Error::invalid(&self.path, "handle already closed"));
        };
        f(&Ops {
            conn: &inner.conn,
            path: &self.path,
        })
    }

    /// Runs `f` holding the writers' lock; inside `BEGIN IMMEDIATE ... COMMIT` if `txn`
    /// (otherwise `f` must be a single statement, atomic on its own).
    pub(super) fn write<R>(&self, txn: bool, f: impl FnOnce(&Ops<'_>) -> Result<R>) -> Result<R> {
        let guard = self.inner()?;
        let Some(inner) = guard.as_ref() else {
            return Err(Error::invalid(&self.path, "handle already closed"));
        };
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        lock_writers(&inner.lock).at("lock", &self.lock_path)?;
        let held = WriteLock {
            conn: &inner.conn,
            lock: &inner.lock,
            board: &inner.board,
            lock_id: self.lock_id,
        };
        self.check_still_at_path()?;
        // Before writing anything: a batch a killed combiner left in doubt is settled
        // while the rows it changed still carry its mark.
        settle(&ops, &inner.board, None)?;
        IN_WRITE.with_borrow_mut(|v| v.push(self.lock_id));
        if txn {
            ops.exec("BEGIN IMMEDIATE")?;
        }
        let r = f(&ops)?;
        if txn {
            // `f` may have handled the error of an operation that ended the
            // transaction (see `Ops::check_in_transaction`): then nothing commits.
            ops.check_in_transaction()?;
            ops.exec("COMMIT")?;
        }
        bound_wal(&inner.conn, &inner.wal);
        drop(held);
        Ok(r)
    }
}

impl LocalSharedData {
    /// [`SharedData::destroy`](super::SharedData::destroy).
    pub(super) fn destroy(&self) -> Result<()> {
        let guard = self.inner()?;
        let Some(inner) = guard.as_ref() else {
            return Err(Error::invalid(&self.path, "handle already closed"));
        };
        lock_writers(&inner.lock).at("lock", &self.lock_path)?;
        let removed = self.remove_files(&inner.lock);
        let _ = sys::unlock(&inner.lock);
        inner.board.kick(0);
        removed
    }

    /// Removes the store, its side files and its lock file (last), holding the writers'
    /// lock `lock`; nothing if the store at the path is not this handle's.
    fn remove_files(&self, lock: &File) -> Result<()> {
        let remove = |path: &Path| match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        };
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.store_id => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", &self.path, e)),
        }
        // The WAL before the store: a destroy killed in between leaves the store as its
        // last checkpoint made it, never an old WAL beside a new store created at the
        // path (SQLite would replay it into that store). No write runs meanwhile (the
        // writers' lock is held), and once the store is gone every handle's next write
        // fails (`check_still_at_path`).
        for suffix in ["-wal", "-shm", "-journal"] {
            remove(&super::open::sidecar(&self.path, suffix))?;
        }
        remove(&self.path)?;
        remove(&super::open::sidecar(&self.path, "-board"))?;
        if sys::is_same_file(lock, &self.lock_path).at("stat", &self.lock_path)? {
            remove(&self.lock_path)?;
        }
        Ok(())
    }
}

impl Drop for LocalSharedData {
    fn drop(&mut self) {
        let inner = self
            .inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if std::process::id() != self.owner_pid {
            // A forked child: closing the connection would release SQLite locks and
            // might delete the WAL the parent is using. Leak it.
            std::mem::forget(inner);
            return;
        }
        if let Some(inner) = inner {
            if let Some(slot) = inner.slot {
                inner.board.release(slot, inner.me);
            }
            // Closing the last connection checkpoints and deletes the WAL under SQLite's
            // exclusive lock; under ours too if it is free, so that no writer meets that
            // lock busy. Never wait for it here (a stopped writer would hang the drop, and
            // this thread may hold it already): if it is taken, SQLite's busy handler
            // covers the rare overlap.
            let locked =
                !in_write(self.lock_id) && sys::try_lock_exclusive(&inner.lock).unwrap_or(false);
            drop(inner.conn);
            if locked {
                let _ = sys::unlock(&inner.lock);
                inner.board.kick(0);
            }
        }
        registry::release(self.store_id);
    }
}

/// The writers' lock and the write transaction, released in that order on drop, also
/// on error or unwinding.
struct WriteLock<'a> {
    conn: &'a Connection,
    lock: &'a File,
    board: &'a Board,
    lock_id: (u64, u64),
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let _ = sys::unlock(self.lock);
        // Requests published while we held the lock wait for a combiner.
        self.board.kick(0);
        IN_WRITE.with_borrow_mut(|v| {
            if let Some(i) = v.iter().rposition(|&id| id == self.lock_id) {
                v.remove(i);
            }
        });
    }
}

/// Takes the writers' lock, sleeping in the kernel until the holder releases it (or
/// its process dies); the kernel wakes waiters at the release.
fn lock_writers(lock: &File) -> io::Result<()> {
    sys::lock_exclusive(lock)
}

thread_local! {
    /// Lock files (device, inode) whose writers' lock this thread holds.
    static IN_WRITE: RefCell<Vec<(u64, u64)>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn in_write(lock_id: (u64, u64)) -> bool {
    IN_WRITE.with_borrow(|v| v.contains(&lock_id))
}

pub(super) fn reentrant(path: &Path) -> Error {
    Error::invalid(
        path,
        "store used from inside one of its own write transactions on the same thread \
         (it would wait for itself); use the transaction handle passed to the closure",
    )
}
