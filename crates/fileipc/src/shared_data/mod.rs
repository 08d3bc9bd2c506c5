//! [`SharedData`]: a key-value store many processes read and write, with atomic updates.
//!
//! # Design
//!
//! The store is an SQLite database (the `bundled` SQLite of `rusqlite`) in WAL mode, one
//! table `kv(key TEXT PRIMARY KEY, value TEXT, batch INTEGER)` whose values are JSON text
//! (`batch` is combining's bookkeeping), so any language's SQLite binding can read it
//! (`sqlite3 PATH 'select key, value from kv'`). The layout,
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
//! of a combiner at any point because the combiner notes its batch in doubt on the board
//! before its commit and marks the rows it changes with the batch's id (column
//! `kv.batch`), and every writer settles a batch left in doubt before it writes; see the
//! modules `board` and `settle` and `docs/FORMAT.md`.
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
//!
//! # Where things are
//!
//! This module is the public front: [`SharedData`] and its docs dispatch every call to an
//! engine (`enum Engine`); [`Transaction`] does the same in `transaction`. The local
//! engine, SQLite files on this machine, is one mechanism per file:
//!
//! - `options`: [`SharedDataOptions`], which opens a store;
//! - `local`: `LocalSharedData`, the engine's handle: reads, writes through the writers'
//!   lock, its release on drop, re-entry and fork detection;
//! - `combining`: contended increments applied together by one combiner over the board;
//! - `board`: the mapped request board itself (slots, states, waiting, waking, lease);
//! - `transaction`: the [`Transaction`] front and its local part;
//! - `sql`: the statements on an open connection, and JSON encoding of values;
//! - `open`: opening a handle: the files, their validation, SQLite's initialisation;
//! - `registry`: the process-wide registry of open store files (POSIX locks).

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

mod board;
mod combining;
mod fenced;
mod finite;
mod local;
mod open;
pub(crate) use open::{LOCK_SUFFIX, SQLITE_MAGIC};
mod options;
mod readonly;
#[cfg(feature = "redis")]
mod redis;
mod registry;
mod settle;
mod sql;
mod transaction;

use local::LocalSharedData;
pub use options::SharedDataOptions;
use readonly::ReadOnlySharedData;
pub use transaction::Transaction;

// How a store file of the local engine identifies itself (checked by `open`).
/// `PRAGMA application_id` of a fileipc store: `"FIPC"` read as a big-endian `i32`.
pub(crate) const APPLICATION_ID: i32 = 0x4649_5043;
/// `PRAGMA user_version` of the current schema.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// A key-value store shared by processes through one file, with atomic updates.
///
/// Keys are non-empty strings; values are anything `serde` can turn into JSON and back
/// (numbers, strings, `bool`, `Option`, vectors, maps, your own `#[derive(Serialize,
/// Deserialize)]` types, [`serde_json::Value`]). Every method is atomic: a reader sees
/// each write wholly or not at all. Read-modify-write without races is
/// [`update`](SharedData::update), [`increment`](SharedData::increment),
/// [`compare_and_swap`](SharedData::compare_and_swap), or several operations in one
/// [`transaction`](SharedData::transaction). Writes guarded by a lock held elsewhere can
/// carry its fencing token ([`set_fenced`](SharedData::set_fenced),
/// [`compare_and_swap_fenced`](SharedData::compare_and_swap_fenced)): the store refuses
/// a holder's write once a later holder has written (the docs of `set_fenced` show the
/// same pattern for a database: `UPDATE ... WHERE last_fence <= $fence`).
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
    engine: Engine,
}

/// The engine behind a [`SharedData`] handle. One per handle, made once: the variants'
/// sizes do not matter.
#[cfg_attr(feature = "redis", allow(clippy::large_enum_variant))]
enum Engine {
    /// SQLite files on this machine.
    Local(LocalSharedData),
    /// A store this process may only read (read-only mount, no write permission).
    ReadOnly(ReadOnlySharedData),
    /// A hash of JSON texts on a Redis server.
    #[cfg(feature = "redis")]
    Redis(self::redis::RedisSharedData),
}

impl fmt::Debug for SharedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedData")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl SharedData {
    /// Opens the store at `path`, creating it (mode 0600) if it is missing or an empty
    /// file. The lock file `PATH-lock` and the request board `PATH-board` (see
    /// [`increment`](SharedData::increment)) are created beside it; SQLite adds `PATH-wal`
    /// and `PATH-shm` while the store is in use.
    ///
    /// A store this process cannot write (a read-only mount, `EROFS`; no write
    /// permission, `EACCES`) is opened read-only: reads work, and every write fails with
    /// an [`Error::Io`] of that kind naming the path and saying the store is read-only
    /// (see [`is_read_only`](SharedData::is_read_only)).
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
        SharedDataOptions::default().open(path)
    }

    /// Opens the existing store at `path`; never creates the store file (nor a
    /// directory). The lock file and the request board, which belong to the store, are
    /// created beside it if they are missing. For queries on a path that may be
    /// mistyped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `path` if there is no file there (or
    /// its directory does not exist); otherwise as [`open`](SharedData::open).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("state");
    /// let e = fileipc::SharedData::open_existing(&path).unwrap_err();
    /// assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    /// assert!(!path.exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_existing(path: impl AsRef<Path>) -> Result<SharedData> {
        SharedDataOptions::default().open_existing(path)
    }

    /// Options to open a store with (another mode, durable commits); see
    /// [`SharedDataOptions`].
    pub fn options() -> SharedDataOptions {
        SharedDataOptions::default()
    }

    /// Whether this handle only reads: the store was opened read-only because this
    /// process may not write it (see [`open`](SharedData::open)).
    pub fn is_read_only(&self) -> bool {
        matches!(self.engine, Engine::ReadOnly(_))
    }

    /// A new handle on the same store, opened again with the same options (its own
    /// SQLite connection). A handle holds nothing on behalf of its user (it is
    /// `Send + Sync`: an `Arc` shares one as well, its calls then take turns on one
    /// connection).
    ///
    /// # Errors
    ///
    /// As [`SharedData::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let a = fileipc::SharedData::open(dir.path().join("s"))?;
    /// let b = a.try_clone()?;
    /// a.set("k", &1)?;
    /// assert_eq!(b.get::<i64>("k")?, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone(&self) -> Result<SharedData> {
        match &self.engine {
            Engine::Local(e) => e.opts.open(&e.path),
            Engine::ReadOnly(e) => SharedDataOptions::new().open_existing(e.path()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => SharedDataOptions::new().open_existing(e.path()),
        }
    }

    /// Removes the store and its side files (`PATH-wal`, `PATH-shm`, `PATH-journal`,
    /// the store, `PATH-board`, then `PATH-lock`), if the store at the path is still the
    /// one this handle opened (else nothing is removed). It waits for a write in progress
    /// in any process (it takes the writers' lock); from then on every write through a
    /// handle opened before, this one included, fails naming the path, and reads see the
    /// store as it was; a handle opened at the path afterwards creates a new, empty store.
    /// A destroy killed midway leaves the store as its last checkpoint made it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be removed or locked.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("s");
    /// let d = fileipc::SharedData::open(&path)?;
    /// d.set("k", &1)?;
    /// d.destroy()?;
    /// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    /// assert!(d.set("k", &2).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn destroy(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.destroy(),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.destroy(),
        }
    }

    /// The path of the store.
    pub fn path(&self) -> &Path {
        match &self.engine {
            Engine::Local(e) => e.path(),
            Engine::ReadOnly(e) => e.path(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        }
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
        match &self.engine {
            Engine::Local(e) => e.get(key),
            Engine::ReadOnly(e) => e.get(key),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.get(key),
        }
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
        match &self.engine {
            Engine::Local(e) => e.get_json(key),
            Engine::ReadOnly(e) => e.get_json(key),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.get_json(key),
        }
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
        match &self.engine {
            Engine::Local(e) => e.contains_key(key),
            Engine::ReadOnly(e) => e.contains_key(key),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.contains_key(key),
        }
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
        match &self.engine {
            Engine::Local(e) => e.keys(),
            Engine::ReadOnly(e) => e.keys(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.keys(),
        }
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
        match &self.engine {
            Engine::Local(e) => e.len(),
            Engine::ReadOnly(e) => e.len(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.len(),
        }
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
        match &self.engine {
            Engine::Local(e) => e.dump(),
            Engine::ReadOnly(e) => e.dump(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.dump(),
        }
    }

    // -----------------------------------------------------------------------------------
    // Writing

    /// Stores `value` under `key`, replacing any previous value.
    ///
    /// # Errors
    ///
    /// - [`Error::Value`] if `value` cannot be encoded as JSON (a map with non-string
    ///   keys, a failing `Serialize` implementation, a NaN or infinite float: JSON has
    ///   no text for them). A stored double reads back exactly.
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
        match &self.engine {
            Engine::Local(e) => e.set(key, value),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.set(key, value),
        }
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
        match &self.engine {
            Engine::Local(e) => e.delete(key),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.delete(key),
        }
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
        match &self.engine {
            Engine::Local(e) => e.clear(),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.clear(),
        }
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
        match &self.engine {
            Engine::Local(e) => e.update(key, f),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.update(key, f),
        }
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
    /// An error means the increment was not applied and will not be, so a retry counts
    /// it once; an increment that another process's combiner applied for this call is
    /// reported as applied even if this call's own transaction then failed. (Only when
    /// the store cannot even be read, or its lock file not locked, while a failed call
    /// settles its request, is the outcome unknown.)
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
        match &self.engine {
            Engine::Local(e) => e.increment(key, by),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.increment(key, by),
        }
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
    #[must_use = "`false` means the stored value was not the expected one, and nothing was written"]
    pub fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.compare_and_swap(key, expected, new),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.compare_and_swap(key, expected, new),
        }
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
        match &self.engine {
            Engine::Local(e) => e.transaction(f),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.transaction(f),
        }
    }
}
