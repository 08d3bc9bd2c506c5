//! [`SharedData`]: a key-value store many processes read and write, with atomic updates.
//!
//! # Design
//!
//! The store is an SQLite database (the `bundled` SQLite of `rusqlite`) in WAL mode, one
//! table `kv(key TEXT PRIMARY KEY, value TEXT)` whose values are JSON text, so any
//! language's SQLite binding can read it (`sqlite3 PATH 'select * from kv'`). The layout,
//! its version and the crash-consistency argument are in `docs/FORMAT.md`.
//!
//! Readers never wait for writers (WAL gives each read a snapshot) and take no lock of
//! ours: a `get` is one cached prepared statement.
//!
//! Writers are serialised *before* they reach SQLite, on an exclusive `flock` of a
//! sidecar lock file `PATH-lock`. SQLite's own busy handler would make a writer that
//! finds the database locked sleep in steps of milliseconds; a blocked `flock` sleeps in
//! the kernel instead and is woken the moment the holder releases, so contended writers
//! hand off in microseconds. Because every fileipc writer holds that lock around its
//! whole write transaction (`BEGIN IMMEDIATE ... COMMIT`), SQLite never finds another
//! fileipc writer in the way and never reports "busy". A busy timeout is still set as a
//! safety net for the rare moments SQLite itself needs exclusive access (WAL recovery
//! after a crash, a foreign writer such as the `sqlite3` shell).
//!
//! # Combining contended increments
//!
//! Most of a small write's cost is its commit (appending to the WAL, the WAL index, the
//! POSIX locks), and commits are serial. So [`SharedData::increment`] does not queue for
//! the lock: it publishes its request in its own slot of a mapped *request board*
//! `PATH-board` and tries the lock without blocking. Whoever gets the lock is the
//! *combiner*: it applies every pending request (all increments of one key with one read
//! and one write) in one transaction, hands each owner its result through its slot and
//! wakes it if it sleeps. The others wait on their slot's word until their result is
//! there, or until the lock is free for one of them to combine: they spin for up to
//! 100 us (yielding the CPU every few iterations), then sleep on it as a futex, because
//! an owner that is awake publishes its next request in time for the next batch while
//! one that sleeps takes tens of microseconds to wake. After a batch the combiner holds
//! a 30 us *lease*: the others leave the lock to it, and it comes back for its own next
//! request and combines theirs with it, with its SQLite page cache still warm. Any
//! number of contended increments then share one commit. Exactly-once survives `SIGKILL`
//! of a combiner at any point because the sequence number and outcome of every request
//! applied for another process is recorded in the same transaction (table
//! `fileipc_applied`); see the module `board` and `docs/FORMAT.md`.
//!
//! # Process death
//!
//! A writer killed in the middle of a transaction leaves its WAL frames uncommitted;
//! SQLite ignores them, so the transaction is wholly absent. The kernel releases its
//! `flock` when its last descriptor closes, so the next writer proceeds at once.
//!
//! A process killed while its `increment` waits on the board leaves the request there:
//! the next combiner applies it (it was never acknowledged, so either outcome is
//! allowed; it is applied at most once), and a later opener reuses the slot. A combiner
//! killed before its commit leaves the requests pending for the next one; killed after
//! it, the record tells the next one not to apply them again, only to hand out the
//! recorded results.
//!
//! # Durability
//!
//! By default the store uses `synchronous=NORMAL`: a committed write survives the crash
//! of any process, but a power loss or kernel crash may lose the last transactions
//! (never corrupt the store). [`SharedDataOptions::durable`] selects `synchronous=FULL`,
//! which syncs the WAL at every commit.
//!
//! # Threads, handles and fork
//!
//! A [`SharedData`] is `Send + Sync`: its SQLite connection sits behind a mutex, so the
//! threads sharing one handle take turns. Several handles on one store, in one process
//! or many, each have their own connection and lock-file descriptor and exclude each
//! other like processes do.
//!
//! An SQLite connection must not cross `fork()`: a handle used in a forked child returns
//! [`Error::Invalid`], and dropping it there leaks the connection instead of closing it
//! (closing it would release the parent's SQLite locks). Open the store in the child
//! after `exec` (as `std::process::Command` does).

use std::any::type_name;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex as StdMutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, IoResultExt, Result};
use crate::state::{DEFAULT_MODE, MAGIC};
use crate::sys;

mod board;

use board::{Applied, Board};

/// `PRAGMA application_id` of a fileipc store: `"FIPC"` read as a big-endian `i32`.
pub(crate) const APPLICATION_ID: i32 = 0x4649_5043;
/// `PRAGMA user_version` of the current schema.
pub(crate) const SCHEMA_VERSION: i32 = 1;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const EXPECTED: &str = "fileipc shared data store";
const SCHEMA: &str = "CREATE TABLE kv (\n    key   TEXT PRIMARY KEY NOT NULL,\n    \
                      value TEXT NOT NULL\n) WITHOUT ROWID";
/// The record of combined requests applied (see `board`), one row `id = 1`.
const APPLIED_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS fileipc_applied (\n    \
                              id    INTEGER PRIMARY KEY,\n    \
                              slots BLOB NOT NULL\n)";

/// How long SQLite's own busy handler may wait before reporting "busy". fileipc writers
/// never make each other wait there (they queue on the lock file or the board); this
/// covers WAL recovery after a crash and foreign writers.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pages of WAL after which the committing writer copies them back into the database
/// (SQLite's default, stated so the choice is visible).
const WAL_AUTOCHECKPOINT: u32 = 1000;

// ---------------------------------------------------------------------------------------
// Options

/// Options for opening a [`SharedData`] store; [`SharedData::open`] uses the defaults.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// use std::os::unix::fs::PermissionsExt;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("state");
/// let d = fileipc::SharedData::options().mode(0o640).durable(true).open(&path)?;
/// d.set("k", &1)?;
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedDataOptions {
    mode: u32,
    durable: bool,
}

impl Default for SharedDataOptions {
    fn default() -> Self {
        SharedDataOptions {
            mode: DEFAULT_MODE,
            durable: false,
        }
    }
}

impl SharedDataOptions {
    /// The default options: mode 0600, `synchronous=NORMAL`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The permission bits the store and its lock file get when this call creates them,
    /// exactly (not filtered by the umask); SQLite gives its `-wal` and `-shm` files the
    /// store's mode. Bits outside `0o777` are ignored. Existing files keep their mode.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Whether every commit is synced to storage (`synchronous=FULL`), so that it also
    /// survives a power loss; slower. The default (`false`, `synchronous=NORMAL`)
    /// survives any process crash but may lose the last commits on a power loss.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Opens the store at `path` with these options; see [`SharedData::open`].
    ///
    /// # Errors
    ///
    /// As [`SharedData::open`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<SharedData> {
        SharedData::open_with(path.as_ref(), self)
    }
}

// ---------------------------------------------------------------------------------------
// The handle

/// A key-value store shared by processes through one file, with atomic updates.
///
/// Keys are non-empty strings; values are anything `serde` can turn into JSON and back
/// (numbers, strings, `bool`, `Option`, vectors, maps, your own `#[derive(Serialize,
/// Deserialize)]` types, [`serde_json::Value`]). Every method is atomic: a reader sees
/// each write wholly or not at all. Read-modify-write without races is
/// [`update`](SharedData::update), [`increment`](SharedData::increment),
/// [`compare_and_swap`](SharedData::compare_and_swap), or several operations in one
/// [`transaction`](SharedData::transaction).
///
/// Do not call a handle of a store from inside a closure running a write of the same
/// store (`update`, `transaction`): it would wait for itself. fileipc detects that on the
/// same thread and returns [`Error::Invalid`]; use the [`Transaction`] passed in instead.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// use fileipc::SharedData;
/// let dir = tempfile::tempdir().unwrap();
/// let d = SharedData::open(dir.path().join("shared_state"))?;
/// d.set("counter", &0)?;
/// d.set("status", &"running")?;
/// assert_eq!(d.get::<i64>("counter")?, Some(0));
///
/// // Atomic read-modify-write, safe against other processes doing the same:
/// d.update("counter", |v: Option<i64>| Some(v.unwrap_or(0) + 1))?;
/// assert_eq!(d.increment("counter", 1)?, 2);
/// assert!(d.compare_and_swap("status", Some(&"running"), &"done")?);
///
/// assert_eq!(d.keys()?, ["counter", "status"]);
/// assert!(d.delete("status")?);
/// assert_eq!(d.dump()?, serde_json::json!({"counter": 2}).as_object().unwrap().clone());
/// # Ok(())
/// # }
/// ```
pub struct SharedData {
    path: PathBuf,
    lock_path: PathBuf,
    /// Device and inode of the lock file: which store a thread is writing.
    lock_id: (u64, u64),
    /// Key of this handle's reference in the process-wide [`registry`].
    store_id: (u64, u64),
    /// The process that opened the handle; any other one is a forked child.
    owner_pid: u32,
    inner: StdMutex<Option<Inner>>,
}

struct Inner {
    conn: Connection,
    lock: File,
    board: Board,
    /// This handle's slot on the board, once claimed, and the last sequence number
    /// it used there.
    slot: Option<usize>,
    seq: u64,
    /// The owner identity this process writes into the slots it claims.
    me: u64,
}

impl fmt::Debug for SharedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedData")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SharedData {
    /// Opens the store at `path`, creating it (mode 0600) if it is missing or an empty
    /// file. The lock file `PATH-lock` and the request board `PATH-board` (see
    /// [`increment`](SharedData::increment)) are created beside it; SQLite adds `PATH-wal`
    /// and `PATH-shm` while the store is in use.
    ///
    /// An existing file is checked before anything is written to it: a file that is not
    /// a fileipc store (garbage, an SQLite database of another application or schema,
    /// another fileipc primitive's file, a store of a newer format version) is refused
    /// and left untouched.
    ///
    /// # Errors
    ///
    /// - [`Error::Format`] naming `path` if the file is not a fileipc store of this version.
    /// - [`Error::Symlink`] if `path` or its lock file is a symbolic link (never followed).
    /// - [`Error::Io`] if a file cannot be opened or created (`NotFound` for a missing
    ///   directory, `PermissionDenied`).
    /// - [`Error::Sqlite`] if SQLite fails to open or initialise the store.
    /// - [`Error::Invalid`] if this thread is inside a write of the same store; if the
    ///   store or its lock file belongs to another user (with a private mode) or is
    ///   writable by group or others beyond the mode asked for; if the absolute path is
    ///   longer than SQLite accepts (512 bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("shared_state"))?;
    /// assert!(d.is_empty()?);
    ///
    /// std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    /// let err = fileipc::SharedData::open(dir.path().join("notes.txt")).unwrap_err();
    /// assert!(matches!(err, fileipc::Error::Format { .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<SharedData> {
        SharedData::open_with(path.as_ref(), SharedDataOptions::default())
    }

    /// Options to open a store with (another mode, durable commits); see
    /// [`SharedDataOptions`].
    pub fn options() -> SharedDataOptions {
        SharedDataOptions::default()
    }

    fn open_with(path: &Path, opts: SharedDataOptions) -> Result<SharedData> {
        check_path_len(path)?;
        let store_id = registry_acquire(path, opts.mode)?;
        match Self::open_registered(path, opts, store_id) {
            Ok(d) => Ok(d),
            Err(e) => {
                registry_release(store_id);
                Err(e)
            }
        }
    }

    fn open_registered(
        path: &Path,
        opts: SharedDataOptions,
        store_id: (u64, u64),
    ) -> Result<SharedData> {
        let lock_path = lock_path_of(path);
        let lock = open_or_create(&lock_path, opts.mode)?;
        let lock_id = sys::file_id(&lock).at("stat", &lock_path)?;
        if in_write(lock_id) {
            return Err(reentrant(path));
        }
        let sq = |e| Error::Sqlite {
            path: path.to_owned(),
            source: e,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_EXRESCODE;
        let conn = Connection::open_with_flags(path, flags).map_err(sq)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
        conn.set_prepared_statement_cache_capacity(32);
        {
            sys::lock_exclusive(&lock).at("lock", &lock_path)?;
            let r = init_or_validate(&conn, path);
            let u = sys::unlock(&lock).at("unlock", &lock_path);
            r?;
            u?;
        }
        let sync = if opts.durable { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync).map_err(sq)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)
            .map_err(sq)?;
        let board = Board::open(&sidecar(path, "-board"), opts.mode)?;
        // Requests published while we held the lock above wait for a combiner.
        board.kick(0);
        Ok(SharedData {
            path: path.to_owned(),
            lock_path,
            lock_id,
            store_id,
            owner_pid: std::process::id(),
            inner: StdMutex::new(Some(Inner {
                conn,
                lock,
                board,
                slot: None,
                seq: 0,
                me: board::owner_ident(),
            })),
        })
    }

    /// The path of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // -----------------------------------------------------------------------------------
    // Reading

    /// The value of `key`, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// - [`Error::Value`] naming the key and `T` if the stored value does not
    ///   deserialise into `T`.
    /// - [`Error::Invalid`] if `key` is empty (or see [`SharedData`] on re-entry and fork).
    /// - [`Error::Sqlite`] if SQLite fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("point", &(1, 2))?;
    /// assert_eq!(d.get::<(i32, i32)>("point")?, Some((1, 2)));
    /// assert_eq!(d.get::<serde_json::Value>("point")?, Some(serde_json::json!([1, 2])));
    /// assert_eq!(d.get::<i32>("missing")?, None);
    /// assert!(matches!(d.get::<String>("point"), Err(fileipc::Error::Value { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read(|ops| ops.get(key))
    }

    /// The stored JSON text of `key`, as any SQLite reader sees it.
    ///
    /// # Errors
    ///
    /// As [`get`](SharedData::get), except that any stored text is returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("k", &vec!["a", "b"])?;
    /// assert_eq!(d.get_json("k")?.as_deref(), Some(r#"["a","b"]"#));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_json(&self, key: &str) -> Result<Option<String>> {
        self.read(|ops| ops.get_raw(key, |b| Ok(String::from_utf8_lossy(b).into_owned())))
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an empty key, [`Error::Sqlite`] if SQLite fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("k", &())?; // stored as JSON null: present
    /// assert!(d.contains_key("k")?);
    /// assert!(!d.contains_key("other")?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn contains_key(&self, key: &str) -> Result<bool> {
        self.read(|ops| ops.contains_key(key))
    }

    /// All keys, in ascending byte order.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if SQLite fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("b", &1)?;
    /// d.set("a", &2)?;
    /// assert_eq!(d.keys()?, ["a", "b"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn keys(&self) -> Result<Vec<String>> {
        self.read(|ops| ops.keys())
    }

    /// The number of keys.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if SQLite fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("a", &1)?;
    /// assert_eq!(d.len()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.read(|ops| ops.len())
    }

    /// Whether the store holds no key.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if SQLite fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// assert!(d.is_empty()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Everything in the store as one JSON object, read from one consistent snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if a stored value is not JSON (written by another program),
    /// [`Error::Sqlite`] if SQLite fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("n", &1)?;
    /// d.set("s", &"x")?;
    /// let all = serde_json::Value::Object(d.dump()?);
    /// assert_eq!(all, serde_json::json!({"n": 1, "s": "x"}));
    /// # Ok(())
    /// # }
    /// ```
    pub fn dump(&self) -> Result<Map<String, Value>> {
        self.read(|ops| ops.dump())
    }

    // -----------------------------------------------------------------------------------
    // Writing

    /// Stores `value` under `key`, replacing any previous value.
    ///
    /// # Errors
    ///
    /// - [`Error::Value`] if `value` cannot be encoded as JSON (a map with non-string
    ///   keys, a failing `Serialize` implementation).
    /// - [`Error::Invalid`] for an empty key (or see [`SharedData`] on re-entry and fork).
    /// - [`Error::Io`] if the lock file cannot be locked, [`Error::Sqlite`] if SQLite
    ///   fails (e.g. the disk is full).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("config", &serde_json::json!({"workers": 4, "debug": false}))?;
    /// assert_eq!(d.get::<serde_json::Value>("config")?.unwrap()["workers"], 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(&self.path, key)?;
        let json = encode(&self.path, key, value)?;
        self.write(false, |ops| ops.put(key, &json))
    }

    /// Removes `key`; whether it had a value.
    ///
    /// # Errors
    ///
    /// As [`set`](SharedData::set).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("k", &1)?;
    /// assert!(d.delete("k")?);
    /// assert!(!d.delete("k")?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(&self.path, key)?;
        self.write(false, |ops| ops.delete(key))
    }

    /// Removes every key.
    ///
    /// # Errors
    ///
    /// As [`set`](SharedData::set).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// d.set("a", &1)?;
    /// d.clear()?;
    /// assert!(d.is_empty()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.write(false, |ops| ops.clear())
    }

    /// Atomically replaces the value of `key` by `f(current)`: `Some(v)` stores `v`,
    /// `None` deletes the key. No other writer runs between the read and the write.
    /// Returns what `f` returned.
    ///
    /// `f` runs while this store's writers are locked out: keep it short, and do not
    /// use this store's handles inside it.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the current value does not deserialise into `T` (then `f` is
    /// not called) or the new one cannot be encoded; otherwise as
    /// [`set`](SharedData::set). On error nothing is changed.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// let v = d.update("visitors", |v: Option<Vec<String>>| {
    ///     let mut v = v.unwrap_or_default();
    ///     v.push("ann".into());
    ///     Some(v)
    /// })?;
    /// assert_eq!(v, Some(vec!["ann".to_string()]));
    /// d.update("visitors", |_: Option<Vec<String>>| None)?;
    /// assert!(!d.contains_key("visitors")?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        check_key(&self.path, key)?;
        self.write(true, |ops| ops.update(key, f))
    }

    /// Atomically adds `by` to the integer at `key` (a missing key counts as 0) and
    /// returns the new value.
    ///
    /// Concurrent increments from any processes are combined: one of the callers applies
    /// all that are waiting in a single transaction (the request board of
    /// `docs/FORMAT.md`), so that they share one commit. Each is applied exactly once; the
    /// values returned to concurrent callers are distinct steps of one serial order.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if the current value is not an integer in `i64` range or the sum
    /// overflows `i64` (nothing is changed); otherwise as [`set`](SharedData::set).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// assert_eq!(d.increment("hits", 1)?, 1);
    /// assert_eq!(d.increment("hits", 10)?, 11);
    /// assert_eq!(d.increment("hits", -11)?, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn increment(&self, key: &str, by: i64) -> Result<i64> {
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

    /// Atomically stores `new` under `key` if the current value equals `expected`
    /// (`None`: if the key is absent); whether it did. Values are compared as JSON
    /// values, so formatting and object key order do not matter (but `1` and `1.0` differ).
    ///
    /// # Errors
    ///
    /// [`Error::Value`] if a value cannot be encoded or the stored one is not JSON;
    /// otherwise as [`set`](SharedData::set).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("s"))?;
    /// assert!(d.compare_and_swap("status", None, &"idle")?);
    /// assert!(d.compare_and_swap("status", Some(&"idle"), &"running")?);
    /// assert!(!d.compare_and_swap("status", Some(&"idle"), &"running")?);
    /// assert_eq!(d.get::<String>("status")?.as_deref(), Some("running"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        check_key(&self.path, key)?;
        let expected = match expected {
            Some(e) => Some(to_value(&self.path, key, e)?),
            None => None,
        };
        let new = encode(&self.path, key, new)?;
        self.write(true, |ops| {
            ops.compare_and_swap(key, expected.as_ref(), &new)
        })
    }

    /// Runs `f` as one atomic transaction: other processes see all of its writes or
    /// none, and no other writer runs between its reads and its writes. If `f` returns
    /// an error (or panics) everything it wrote is rolled back.
    ///
    /// `f` runs while this store's writers are locked out: keep it short, and use only
    /// the [`Transaction`] inside it, not this store's handles.
    ///
    /// # Errors
    ///
    /// Whatever `f` returns, or as [`set`](SharedData::set) for the commit.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("bank"))?;
    /// d.set("alice", &100)?;
    /// // Move 30 from alice to bob, both or neither:
    /// d.transaction(|tx| {
    ///     let a: i64 = tx.get("alice")?.unwrap_or(0);
    ///     tx.set("alice", &(a - 30))?;
    ///     tx.increment("bob", 30)?;
    ///     Ok(())
    /// })?;
    /// assert_eq!(d.get::<i64>("alice")?, Some(70));
    /// assert_eq!(d.get::<i64>("bob")?, Some(30));
    /// # Ok(())
    /// # }
    /// ```
    pub fn transaction<R>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<R>) -> Result<R> {
        self.write(true, |ops| f(&Transaction { ops: *ops }))
    }

    // -----------------------------------------------------------------------------------
    // Combining (see `board`)

    /// Publishes the increment on the board and waits until a combiner (possibly this
    /// thread) applied it; `None` if it must be done the ordinary way.
    fn increment_combined(&self, inner: &mut Inner, key: &str, by: i64) -> Result<Option<i64>> {
        let slot = match inner.slot {
            Some(s) => s,
            None => match self.claim_slot(inner)? {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        inner.seq += 1;
        inner.board.publish(slot, inner.seq, key, by);
        let inner = &*inner;
        loop {
            let seen = inner.board.observe(slot);
            if let Some(done) = inner.board.take_done(slot) {
                return Ok(done.ok());
            }
            // A combiner that just finished a batch comes back for its own next
            // request within its lease and combines ours with it.
            if let Some(left) = inner.board.lease_left(slot) {
                if let Err(e) = inner.board.wait(slot, seen, Some(left)) {
                    return self.abandon(inner, slot, e);
                }
                continue;
            }
            let step = match sys::try_lock_exclusive(&inner.lock).at("lock", &self.lock_path) {
                Ok(true) => {
                    let mut finished = Vec::new();
                    let r = self.combine(inner, slot, &mut finished);
                    if r.is_ok() {
                        inner.board.renew_lease(slot);
                    }
                    // As for any writer, an unlock error is ignored (the kernel drops
                    // the lock with the descriptor at the latest).
                    let _ = sys::unlock(&inner.lock);
                    for &(s, sleeping) in &finished {
                        if sleeping {
                            inner.board.wake(s);
                        }
                    }
                    inner.board.kick(slot + 1);
                    if !finished.is_empty() {
                        // An owner sharing our CPU cannot see its result, nor publish
                        // its next request in time for our next batch, until we let it
                        // run.
                        std::thread::yield_now();
                    }
                    match r {
                        Ok(Some(done)) => return Ok(done.ok()),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Ok(false) => inner.board.wait(slot, seen, None),
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                return self.abandon(inner, slot, e);
            }
        }
    }

    /// Claims a slot on the board for this handle; `None` if none is free.
    fn claim_slot(&self, inner: &mut Inner) -> Result<Option<usize>> {
        let Some((slot, board_seq)) = inner.board.claim(inner.me) else {
            return Ok(None);
        };
        // The record cannot move for a slot no request is pending in; continuing from
        // it keeps sequence numbers increasing even if the board file was recreated.
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        match ops.load_record() {
            Ok(rec) => {
                inner.slot = Some(slot);
                inner.seq = board_seq.max(Applied::read(&rec, slot).seq);
                Ok(Some(slot))
            }
            Err(e) => {
                inner.board.release(slot, inner.me);
                Err(e)
            }
        }
    }

    /// After an error while a request is pending: settles it under the writers' lock
    /// (done: its result; else withdrawn), so that an increment reported as failed is
    /// never applied later.
    fn abandon(&self, inner: &Inner, slot: usize, e: Error) -> Result<Option<i64>> {
        sys::lock_exclusive(&inner.lock).at("lock", &self.lock_path)?;
        let done = inner.board.take_done(slot);
        if done.is_none() {
            inner.board.withdraw(slot);
        }
        let _ = sys::unlock(&inner.lock);
        inner.board.kick(slot + 1);
        match done {
            Some(Ok(v)) => Ok(Some(v)),
            _ => Err(e),
        }
    }

    /// Holding the writers' lock: applies every pending request on the board in one
    /// transaction, then marks the others' requests done, noting in `finished` each of
    /// their slots and whether its owner sleeps (to be woken once the lock is released).
    /// Returns the outcome of our own request (slot `own`) if it was pending.
    ///
    /// Others' requests are recorded in `fileipc_applied` in the same transaction (so a
    /// combiner killed between commit and marking never makes its successor apply them
    /// twice). Our own needs no record: it is withdrawn from the board before the
    /// commit, so after a crash nobody finds it pending.
    fn combine(
        &self,
        inner: &Inner,
        own: usize,
        finished: &mut Vec<(usize, bool)>,
    ) -> Result<Option<Outcome>> {
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        let _rollback = Rollback(&inner.conn);
        ops.exec("BEGIN IMMEDIATE")?;
        let mut seen = [false; board::SLOTS];
        let mut record: Option<Vec<u8>> = None;
        let mut outcomes: Vec<(usize, Applied)> = Vec::new();
        // Current value of each key touched: `None` if it is not an integer.
        let mut values: Vec<(String, Option<i64>, bool)> = Vec::new();
        // Requests published while we work join the batch: they cost a statement or
        // two, the commit they would otherwise need costs far more.
        loop {
            let batch = inner.board.pending(&seen);
            if batch.is_empty() {
                break;
            }
            for r in batch {
                seen[r.slot] = true;
                if r.slot == own {
                    inner.board.withdraw(own);
                }
                // A request another combiner read may be in its commit already: look it
                // up in the record (always for others' requests, whose owners count on
                // it; for our own only then).
                if r.slot != own || r.taken {
                    let record = match &mut record {
                        Some(rec) => rec,
                        None => record.insert(ops.load_record()?),
                    };
                    let prev = Applied::read(record, r.slot);
                    if r.seq <= prev.seq {
                        // Applied by a combiner that died before marking it done
                        // (equal), or older than the record (a recreated board): never
                        // apply twice.
                        let status = if r.seq == prev.seq {
                            prev.status
                        } else {
                            board::STATUS_BAD_REQUEST
                        };
                        outcomes.push((r.slot, Applied { status, ..prev }));
                        continue;
                    }
                }
                let (result, status) = match r.key {
                    None => (0, board::STATUS_BAD_REQUEST),
                    Some(key) => {
                        let at = match values.iter().position(|v| v.0 == key) {
                            Some(at) => at,
                            None => {
                                let cur = match ops.get::<i64>(&key) {
                                    Ok(v) => Some(v.unwrap_or(0)),
                                    Err(Error::Value { .. }) => None,
                                    Err(e) => return Err(e),
                                };
                                values.push((key, cur, false));
                                values.len() - 1
                            }
                        };
                        let v = &mut values[at];
                        match v.1.map(|c| c.checked_add(r.delta)) {
                            None => (0, board::STATUS_NOT_INTEGER),
                            Some(None) => (0, board::STATUS_OVERFLOW),
                            Some(Some(n)) => {
                                v.1 = Some(n);
                                v.2 = true;
                                (n, board::STATUS_OK)
                            }
                        }
                    }
                };
                outcomes.push((
                    r.slot,
                    Applied {
                        seq: r.seq,
                        result,
                        status,
                    },
                ));
            }
        }
        if outcomes.is_empty() {
            return Ok(None);
        }
        for (key, cur, changed) in &values {
            if let (Some(v), true) = (cur, changed) {
                ops.put(key, &v.to_string())?;
            }
        }
        if let Some(record) = &mut record
            && outcomes.iter().any(|(slot, _)| *slot != own)
        {
            for (slot, a) in &outcomes {
                if *slot != own {
                    a.write(record, *slot);
                }
            }
            ops.store_record(record)?;
        }
        ops.exec("COMMIT")?;
        let mut mine = None;
        for (slot, a) in outcomes {
            if slot == own {
                mine = Some(if a.status == board::STATUS_OK {
                    Ok(a.result)
                } else {
                    Err(a.status)
                });
            } else {
                finished.push((slot, inner.board.finish(slot, a)));
            }
        }
        Ok(mine)
    }

    // -----------------------------------------------------------------------------------
    // Plumbing

    /// The connection, after the checks every operation makes.
    fn inner(&self) -> Result<MutexGuard<'_, Option<Inner>>> {
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
    fn write<R>(&self, txn: bool, f: impl FnOnce(&Ops<'_>) -> Result<R>) -> Result<R> {
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
        IN_WRITE.with_borrow_mut(|v| v.push(self.lock_id));
        if txn {
            ops.exec("BEGIN IMMEDIATE")?;
        }
        let r = f(&ops)?;
        if txn {
            ops.exec("COMMIT")?;
        }
        drop(held);
        Ok(r)
    }
}

impl Drop for SharedData {
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
        registry_release(self.store_id);
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

/// The outcome of a combined request: the new value, or a refusal status.
type Outcome = std::result::Result<i64, u32>;

/// Rolls back an open transaction on drop, also on error or unwinding.
struct Rollback<'a>(&'a Connection);

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
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

fn in_write(lock_id: (u64, u64)) -> bool {
    IN_WRITE.with_borrow(|v| v.contains(&lock_id))
}

fn reentrant(path: &Path) -> Error {
    Error::invalid(
        path,
        "store used from inside one of its own write transactions on the same thread \
         (it would wait for itself); use the transaction handle passed to the closure",
    )
}

// ---------------------------------------------------------------------------------------
// Transactions

/// The operations of one atomic transaction, passed to the closure of
/// [`SharedData::transaction`]. Reads see the transaction's own writes.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let d = fileipc::SharedData::open(dir.path().join("s"))?;
/// let n = d.transaction(|tx| {
///     tx.set("a", &1)?;
///     tx.set("b", &2)?;
///     tx.len()
/// })?;
/// assert_eq!(n, 2);
/// # Ok(())
/// # }
/// ```
pub struct Transaction<'a> {
    ops: Ops<'a>,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("path", &self.ops.path)
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    /// As [`SharedData::get`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::get`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.ops.get(key)
    }

    /// As [`SharedData::set`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::set`].
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(self.ops.path, key)?;
        let json = encode(self.ops.path, key, value)?;
        self.ops.put(key, &json)
    }

    /// As [`SharedData::delete`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::delete`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(self.ops.path, key)?;
        self.ops.delete(key)
    }

    /// As [`SharedData::contains_key`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::contains_key`].
    pub fn contains_key(&self, key: &str) -> Result<bool> {
        self.ops.contains_key(key)
    }

    /// As [`SharedData::keys`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::keys`].
    pub fn keys(&self) -> Result<Vec<String>> {
        self.ops.keys()
    }

    /// As [`SharedData::len`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::len`].
    pub fn len(&self) -> Result<usize> {
        self.ops.len()
    }

    /// As [`SharedData::is_empty`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::is_empty`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.ops.len()? == 0)
    }

    /// As [`SharedData::clear`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::clear`].
    pub fn clear(&self) -> Result<()> {
        self.ops.clear()
    }

    /// As [`SharedData::update`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::update`].
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        check_key(self.ops.path, key)?;
        self.ops.update(key, f)
    }

    /// As [`SharedData::increment`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::increment`].
    pub fn increment(&self, key: &str, by: i64) -> Result<i64> {
        check_key(self.ops.path, key)?;
        self.ops.increment(key, by)
    }

    /// As [`SharedData::compare_and_swap`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::compare_and_swap`].
    pub fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        check_key(self.ops.path, key)?;
        let expected = match expected {
            Some(e) => Some(to_value(self.ops.path, key, e)?),
            None => None,
        };
        let new = encode(self.ops.path, key, new)?;
        self.ops.compare_and_swap(key, expected.as_ref(), &new)
    }

    /// As [`SharedData::dump`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::dump`].
    pub fn dump(&self) -> Result<Map<String, Value>> {
        self.ops.dump()
    }
}

// ---------------------------------------------------------------------------------------
// The SQL

/// The operations on an open connection, shared by [`SharedData`] and [`Transaction`].
#[derive(Clone, Copy)]
struct Ops<'a> {
    conn: &'a Connection,
    path: &'a Path,
}

impl Ops<'_> {
    fn sq(&self, e: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.to_owned(),
            source: e,
        }
    }

    fn exec(&self, sql: &str) -> Result<usize> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.sq(e))?;
        st.execute([]).map_err(|e| self.sq(e))
    }

    /// Calls `f` on the stored JSON bytes of `key`, if any.
    fn get_raw<R>(&self, key: &str, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<Option<R>> {
        check_key(self.path, key)?;
        let mut st = self
            .conn
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([key]).map_err(|e| self.sq(e))?;
        let Some(row) = rows.next().map_err(|e| self.sq(e))? else {
            return Ok(None);
        };
        let v = row.get_ref(0).map_err(|e| self.sq(e))?;
        with_json_bytes(v, f).map(Some)
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_raw(key, |b| decode(self.path, key, b))
    }

    fn put(&self, key: &str, json: &str) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .map_err(|e| self.sq(e))?;
        st.execute([key, json]).map_err(|e| self.sq(e))?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("DELETE FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        Ok(st.execute([key]).map_err(|e| self.sq(e))? > 0)
    }

    fn contains_key(&self, key: &str) -> Result<bool> {
        check_key(self.path, key)?;
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        st.exists([key]).map_err(|e| self.sq(e))
    }

    fn keys(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key FROM kv ORDER BY key")
            .map_err(|e| self.sq(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sq(e))
    }

    fn len(&self) -> Result<usize> {
        let mut st = self
            .conn
            .prepare_cached("SELECT count(*) FROM kv")
            .map_err(|e| self.sq(e))?;
        let n: i64 = st.query_row([], |r| r.get(0)).map_err(|e| self.sq(e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn clear(&self) -> Result<()> {
        self.exec("DELETE FROM kv").map(drop)
    }

    fn dump(&self) -> Result<Map<String, Value>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key, value FROM kv ORDER BY key")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([]).map_err(|e| self.sq(e))?;
        let mut out = Map::new();
        while let Some(row) = rows.next().map_err(|e| self.sq(e))? {
            let key: String = row.get(0).map_err(|e| self.sq(e))?;
            let v = row.get_ref(1).map_err(|e| self.sq(e))?;
            let value = with_json_bytes(v, |b| decode::<Value>(self.path, &key, b))?;
            out.insert(key, value);
        }
        Ok(out)
    }

    fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        let new = f(self.get::<T>(key)?);
        match &new {
            Some(v) => self.put(key, &encode(self.path, key, v)?)?,
            None => {
                self.delete(key)?;
            }
        }
        Ok(new)
    }

    fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let cur: i64 = self.get(key)?.unwrap_or(0);
        let new = cur.checked_add(by).ok_or_else(|| Error::Value {
            path: self.path.to_owned(),
            key: key.to_owned(),
            detail: format!("{cur} + {by} overflows i64"),
        })?;
        self.put(key, &new.to_string())?;
        Ok(new)
    }

    /// The record of combined requests applied: its entries up to the highest slot
    /// ever recorded (entries beyond read as zeros; the blob never shrinks, so that
    /// an entry once written stays).
    fn load_record(&self) -> Result<Vec<u8>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT slots FROM fileipc_applied WHERE id = 1")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([]).map_err(|e| self.sq(e))?;
        let mut rec = Vec::new();
        if let Some(row) = rows.next().map_err(|e| self.sq(e))?
            && let ValueRef::Blob(b) = row.get_ref(0).map_err(|e| self.sq(e))?
        {
            rec.extend_from_slice(&b[..b.len().min(board::RECORD_LEN)]);
        }
        Ok(rec)
    }

    fn store_record(&self, rec: &[u8]) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO fileipc_applied (id, slots) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET slots = excluded.slots",
            )
            .map_err(|e| self.sq(e))?;
        st.execute([rec]).map_err(|e| self.sq(e))?;
        Ok(())
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&Value>, new: &str) -> Result<bool> {
        let cur: Option<Value> = self.get(key)?;
        if cur.as_ref() != expected {
            return Ok(false);
        }
        self.put(key, new)?;
        Ok(true)
    }
}

/// Calls `f` on the JSON bytes of a stored value. fileipc stores text; a number or
/// blob written by another program is passed on as its text.
fn with_json_bytes<R>(v: ValueRef<'_>, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => f(b),
        ValueRef::Integer(i) => f(i.to_string().as_bytes()),
        ValueRef::Real(x) => f(x.to_string().as_bytes()),
        ValueRef::Null => f(b"null"),
    }
}

fn check_key(path: &Path, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(path, "a key must not be empty"));
    }
    Ok(())
}

fn encode<T: Serialize + ?Sized>(path: &Path, key: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: format!("cannot encode {} as JSON: {e}", type_name::<T>()),
    })
}

fn to_value<T: Serialize + ?Sized>(path: &Path, key: &str, value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: format!("cannot encode {} as JSON: {e}", type_name::<T>()),
    })
}

fn decode<T: DeserializeOwned>(path: &Path, key: &str, json: &[u8]) -> Result<T> {
    serde_json::from_slice(json).map_err(|e| Error::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: format!("expected {}: {e}", type_name::<T>()),
    })
}

// ---------------------------------------------------------------------------------------
// Opening: files, validation, initialisation

/// The longest path SQLite's Unix VFS opens (`MAX_PATHNAME`), as an absolute path.
const SQLITE_MAX_PATH: usize = 512;

/// Refuses, with an error that says why, a path SQLite would refuse with a bare
/// "unable to open database file".
fn check_path_len(path: &Path) -> Result<()> {
    let len = if path.is_absolute() {
        path.as_os_str().len()
    } else {
        let cwd = std::env::current_dir().at("getcwd", path)?;
        cwd.as_os_str().len() + 1 + path.as_os_str().len()
    };
    if len > SQLITE_MAX_PATH {
        return Err(Error::invalid(
            path,
            format!(
                "the absolute path is {len} bytes; SQLite opens paths of at most \
                 {SQLITE_MAX_PATH} bytes"
            ),
        ));
    }
    Ok(())
}

fn lock_path_of(path: &Path) -> PathBuf {
    sidecar(path, "-lock")
}

/// `path` with `suffix` appended to its last component.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens `path` read-write without following a link, creating it with exactly `mode`
/// if it is missing.
fn open_or_create(path: &Path, mode: u32) -> Result<File> {
    loop {
        match sys::open_state_file(path, sys::Open::Existing) {
            Ok(f) => {
                let meta = f.metadata().at("stat", path)?;
                crate::state::check_trust(path, &meta, mode, EXPECTED)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                return Err(Error::format(path, EXPECTED, "a directory"));
            }
            // `open_state_file` refuses a FIFO, socket or device with `Other`.
            Err(e) if e.kind() == io::ErrorKind::Other => {
                return Err(Error::format(path, EXPECTED, "not a regular file"));
            }
            Err(e) => return Err(Error::io("open", path, e)),
        }
        match sys::create_new_file(path, mode) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", path, e)),
        }
    }
}

/// Refuses, from its first bytes and without SQLite, a file that is not a fileipc store
/// of this version. An empty file passes (it is initialised); so does a store whose
/// header names fileipc's application id and this schema version.
fn check_header(path: &Path, file: &File) -> Result<()> {
    let mut h = [0u8; 100];
    let mut n = 0;
    while n < h.len() {
        match file.read_at(&mut h[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    let h = &h[..n];
    if h.is_empty() {
        return Ok(());
    }
    if h.starts_with(&MAGIC) {
        let kind = h
            .get(8..12)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
        return Err(Error::format(
            path,
            EXPECTED,
            format!("another fileipc primitive's state file (kind {kind})"),
        ));
    }
    if !h.starts_with(SQLITE_MAGIC) || h.len() < 100 {
        return Err(Error::format(path, EXPECTED, "not an SQLite database"));
    }
    let be = |at: usize| i32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let (app, version) = (be(68), be(60));
    if app != APPLICATION_ID {
        return Err(Error::format(
            path,
            EXPECTED,
            format!(
                "an SQLite database of another application (application_id {app:#x}, \
                 expected {APPLICATION_ID:#x})"
            ),
        ));
    }
    if version != SCHEMA_VERSION {
        return Err(Error::format(
            path,
            EXPECTED,
            format!("format version {version}, this library reads version {SCHEMA_VERSION}"),
        ));
    }
    Ok(())
}

/// Under the writers' lock: initialises an empty database, or checks (now through
/// SQLite, which also sees the WAL) that it is a store of this version; then makes sure
/// it is in WAL mode.
fn init_or_validate(conn: &Connection, path: &Path) -> Result<()> {
    let sq = |e| Error::Sqlite {
        path: path.to_owned(),
        source: e,
    };
    let pragma = |name: &str| -> Result<i32> {
        conn.pragma_query_value(None, name, |r| r.get(0))
            .map_err(sq)
    };
    let (app, version) = (pragma("application_id")?, pragma("user_version")?);
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sq)?;
    if app == 0 && version == 0 && objects == 0 {
        // Empty: one rollback-journal transaction, so that a creator killed half-way
        // leaves an empty database (the next opener rolls the journal back), never a
        // half-made store. WAL mode is switched on afterwards.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n\
             PRAGMA application_id = {APPLICATION_ID};\n\
             PRAGMA user_version = {SCHEMA_VERSION};\n\
             {SCHEMA};\n\
             {APPLIED_SCHEMA};\n\
             COMMIT;"
        ))
        .map_err(sq)?;
    } else if app != APPLICATION_ID {
        return Err(Error::format(
            path,
            EXPECTED,
            format!("an SQLite database of another application (application_id {app:#x})"),
        ));
    } else if version != SCHEMA_VERSION {
        return Err(Error::format(
            path,
            EXPECTED,
            format!("format version {version}, this library reads version {SCHEMA_VERSION}"),
        ));
    } else {
        let has_kv: bool = conn
            .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'kv'")
            .and_then(|mut s| s.exists([]))
            .map_err(sq)?;
        if !has_kv {
            return Err(Error::format(
                path,
                EXPECTED,
                "fileipc header but no table kv",
            ));
        }
        // Stores made before combining lack the record table: add it (once).
        let has_applied: bool = conn
            .prepare(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'fileipc_applied'",
            )
            .and_then(|mut s| s.exists([]))
            .map_err(sq)?;
        if !has_applied {
            conn.execute_batch(APPLIED_SCHEMA).map_err(sq)?;
        }
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sq)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Sqlite {
            path: path.to_owned(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(format!(
                    "could not switch to WAL mode (journal mode is {mode})"
                )),
            ),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The process-wide registry of store files

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
fn registry_acquire(path: &Path, mode: u32) -> Result<(u64, u64)> {
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

/// Drops a reference taken by [`registry_acquire`], after the handle's connection closed.
fn registry_release(id: (u64, u64)) {
    let mut reg = registry();
    if let Some(entry) = reg.get_mut(&id) {
        entry.refs -= 1;
        if entry.refs == 0 {
            reg.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_appends_suffix() {
        assert_eq!(lock_path_of(Path::new("/tmp/x")), Path::new("/tmp/x-lock"));
    }

    /// An owner identity no process has (PIDs stay below 2^22 on Linux).
    /// What a combiner killed after its commit leaves: key "k" set to 15 and the
    /// record saying request `seq` of `slot` was applied with result 15, committed in one
    /// transaction, while the board still shows the request pending.
    fn commit_as_killed_combiner(path: &Path, slot: usize, seq: u64) {
        let mut rec = Vec::new();
        Applied {
            seq,
            result: 15,
            status: board::STATUS_OK,
        }
        .write(&mut rec, slot);
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE kv SET value = '15' WHERE key = 'k'")
            .unwrap();
        conn.execute(
            "INSERT INTO fileipc_applied (id, slots) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET slots = excluded.slots",
            [&rec],
        )
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }

    fn ghost(n: u32) -> u64 {
        (u64::from((1 << 30) + n) << 32) | 1
    }

    #[test]
    fn combiner_killed_after_commit_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let d = SharedData::open(&path).unwrap();
        d.set("k", &10).unwrap();
        // A requester (a process since killed) published +5 on "k" ...
        let board = Board::open(&sidecar(&path, "-board"), 0o600).unwrap();
        let (slot, seq) = board.claim(ghost(0)).unwrap();
        board.publish(slot, seq + 1, "k", 5);
        // ... and a combiner applied it, committed, and was killed before marking it
        // done: the commit holds the change and the record, the board still says pending.
        commit_as_killed_combiner(&path, slot, seq + 1);
        // The next combiner marks it done with the recorded result, without applying
        // it again.
        assert_eq!(d.increment("k", 1).unwrap(), 16);
        assert_eq!(board.take_done(slot), Some(Ok(15)));
        assert_eq!(d.get::<i64>("k").unwrap(), Some(16));
    }

    #[test]
    fn own_request_applied_by_a_killed_combiner_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let d = SharedData::open(&path).unwrap();
        assert_eq!(d.increment("k", 10).unwrap(), 10); // claims a slot
        let mut guard = d.inner.lock().unwrap();
        let inner = guard.as_mut().unwrap();
        let slot = inner.slot.unwrap();
        inner.seq += 1;
        inner.board.publish(slot, inner.seq, "k", 5);
        // Another process's combiner read our request, applied it, committed, and was
        // killed before marking it done ...
        assert_eq!(inner.board.pending(&[false; board::SLOTS]).len(), 1);
        commit_as_killed_combiner(&path, slot, inner.seq);
        // ... so when we combine, our own request is found in the record.
        let mut finished = Vec::new();
        assert_eq!(d.combine(inner, slot, &mut finished).unwrap(), Some(Ok(15)));
        drop(guard);
        assert_eq!(d.get::<i64>("k").unwrap(), Some(15));
        assert_eq!(d.increment("k", 1).unwrap(), 16);
    }

    #[test]
    fn dead_owners_requests_are_applied_and_their_slots_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let d = SharedData::open(&path).unwrap();
        let board = Board::open(&sidecar(&path, "-board"), 0o600).unwrap();
        // Dead processes hold every slot; one left a request pending.
        let mut pending = None;
        for n in 0..board::SLOTS as u32 {
            let (slot, seq) = board.claim(ghost(n)).unwrap();
            if n == 7 {
                board.publish(slot, seq + 1, "k", 2);
                pending = Some(slot);
            }
        }
        // Our increment reclaims a dead owner's idle slot and, combining, applies the
        // pending request too.
        d.increment("k", 1).unwrap();
        assert_eq!(d.get::<i64>("k").unwrap(), Some(3));
        let slot = pending.unwrap();
        assert!(matches!(board.take_done(slot), Some(Ok(2 | 3))));
        assert!(d.inner.lock().unwrap().as_ref().unwrap().slot.is_some());
    }

    #[test]
    fn application_id_spells_fipc() {
        assert_eq!(&APPLICATION_ID.to_be_bytes(), b"FIPC");
    }
}
