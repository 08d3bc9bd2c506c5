//! Opening a store: the local handle's `open` (the registry reference, the lock file, the
//! SQLite connection and its settings, the board), and what it rests on: the sidecar
//! file names, opening or creating a file safely, refusing a file that is not a store
//! of this version from its header, and initialising or validating the schema.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::board::{self, Board};
use super::local::{Inner, LocalSharedData, WalSize, in_write, reentrant};
use super::registry;
use super::settle::BatchIds;
use super::{APPLICATION_ID, SCHEMA_VERSION, SharedDataOptions};
use crate::error::{Error, IoResultExt, Result};
use crate::state::MAGIC;
use crate::sys;

pub(crate) const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Appended to a store's path, the name of its writers' lock file.
pub(crate) const LOCK_SUFFIX: &str = "-lock";
pub(super) const EXPECTED: &str = "fileipc shared data store";
/// `batch`: the id of the combined batch that last changed the row (`settle`), or NULL.
const SCHEMA: &str = "CREATE TABLE kv (\n    key   TEXT PRIMARY KEY NOT NULL,\n    \
                      value TEXT NOT NULL,\n    batch INTEGER\n) WITHOUT ROWID";
/// Upgrades a version-1 store to version 2 (inside a transaction).
const UPGRADE_1_TO_2: &str = "ALTER TABLE kv ADD COLUMN batch INTEGER";
/// The oldest schema version this library opens (older ones it upgrades when it opens
/// them for writing; read-only handles read them as they are).
pub(super) const OLDEST_READABLE: i32 = 1;

/// The highest fence seen per key by fenced writes (`SharedData::set_fenced`).
const FENCES_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS fileipc_fences (\n    \
                             key   TEXT PRIMARY KEY NOT NULL,\n    \
                             fence INTEGER NOT NULL\n) WITHOUT ROWID";

/// How long SQLite's own busy handler may wait before reporting "busy". fileipc writers
/// never make each other wait there (they queue on the lock file or the board); this
/// covers WAL recovery after a crash and foreign writers.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pages of WAL after which the committing writer copies them back into the database
/// (SQLite's default, stated so the choice is visible).
const WAL_AUTOCHECKPOINT: i32 = 1000;

/// The size SQLite trims the WAL file back to when it starts it over (`journal_size_limit`):
/// about what `WAL_AUTOCHECKPOINT` pages take, so one large transaction does not leave a
/// large file behind.
const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

impl LocalSharedData {
    /// Opens the store at `path` with `opts`; see [`SharedData::open`](super::SharedData::open).
    /// `create`: whether a missing store file is created (the lock file and the board,
    /// beside an existing store, are created either way).
    pub(super) fn open(
        path: &Path,
        opts: SharedDataOptions,
        create: bool,
    ) -> Result<LocalSharedData> {
        check_path_len(path)?;
        let store_id = if create {
            registry::acquire(path, opts.mode)?
        } else {
            crate::state::without_creating(|| registry::acquire(path, opts.mode))?
        };
        match Self::open_registered(path, opts, store_id) {
            Ok(d) => Ok(d),
            Err(e) => {
                registry::release(store_id);
                Err(e)
            }
        }
    }

    fn open_registered(
        path: &Path,
        opts: SharedDataOptions,
        store_id: (u64, u64),
    ) -> Result<LocalSharedData> {
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
        let mut conn = Connection::open_with_flags(path, flags).map_err(sq)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
        conn.set_prepared_statement_cache_capacity(32);
        let board_path = sidecar(path, "-board");
        {
            sys::lock_exclusive(&lock).at("lock", &lock_path)?;
            let r = init_or_validate(&conn, path, &board_path, opts.mode);
            let u = sys::unlock(&lock).at("unlock", &lock_path);
            r?;
            u?;
        }
        let sync = if opts.durable { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync).map_err(sq)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sq)?;
        // In place of SQLite's autocheckpoint hook (same passive checkpoint), noting the
        // WAL's length for `bound_wal`.
        let wal = Arc::new(WalSize::new());
        let seen = Arc::clone(&wal);
        conn.wal_hook(Some(move |w: &mut rusqlite::hooks::Wal, pages| {
            if pages >= WAL_AUTOCHECKPOINT {
                let _ = w.checkpoint();
            }
            seen.note(pages);
            Ok(())
        }))
        .map_err(sq)?;
        let board = Board::open(&board_path, opts.mode)?;
        let me = board::owner_ident(&board)?;
        // Requests published while we held the lock above wait for a combiner.
        board.kick(0);
        Ok(LocalSharedData {
            path: path.to_owned(),
            lock_path,
            lock_id,
            store_id,
            owner_pid: std::process::id(),
            opts,
            inner: StdMutex::new(Some(Inner {
                conn,
                lock,
                board,
                slot: None,
                seq: 0,
                me,
                wal,
                batch_ids: BatchIds::new(),
            })),
        })
    }
}

/// The longest path SQLite's Unix VFS opens (`MAX_PATHNAME`), as an absolute path.
const SQLITE_MAX_PATH: usize = 512;

/// Refuses, with an error that says why, a path SQLite would refuse with a bare
/// "unable to open database file".
pub(super) fn check_path_len(path: &Path) -> Result<()> {
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
    sidecar(path, LOCK_SUFFIX)
}

/// `path` with `suffix` appended to its last component.
pub(super) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens `path` read-write without following a link, creating it with exactly `mode`
/// if it is missing.
pub(super) fn open_or_create(path: &Path, mode: u32) -> Result<File> {
    loop {
        match sys::open_state_file(path, sys::Open::Existing) {
            Ok(f) => {
                let meta = f.metadata().at("stat", path)?;
                crate::state::check_trust(path, &meta, mode, EXPECTED)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => crate::state::check_may_create(path)?,
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
pub(super) fn check_header(path: &Path, file: &File) -> Result<()> {
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
    if !(OLDEST_READABLE..=SCHEMA_VERSION).contains(&version) {
        return Err(unreadable_version(path, version));
    }
    Ok(())
}

/// The error for a store of a schema version this library does not read.
fn unreadable_version(path: &Path, version: i32) -> Error {
    Error::format(
        path,
        EXPECTED,
        format!(
            "format version {version}, this library reads versions {OLDEST_READABLE} to \
             {SCHEMA_VERSION}"
        ),
    )
}

/// Checks, through SQLite and without writing, that the open database is a store of this
/// version (for a read-only connection, which cannot initialise or migrate one).
pub(super) fn validate_schema(conn: &Connection, path: &Path) -> Result<()> {
    let sq = |e| Error::Sqlite {
        path: path.to_owned(),
        source: e,
    };
    let pragma = |name: &str| -> Result<i32> {
        conn.pragma_query_value(None, name, |r| r.get(0))
            .map_err(sq)
    };
    let (app, version) = (pragma("application_id")?, pragma("user_version")?);
    if app != APPLICATION_ID {
        return Err(Error::format(
            path,
            EXPECTED,
            format!("an SQLite database of another application (application_id {app:#x})"),
        ));
    }
    if !(OLDEST_READABLE..=SCHEMA_VERSION).contains(&version) {
        return Err(unreadable_version(path, version));
    }
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
    Ok(())
}

/// Under the writers' lock: initialises an empty database, or checks (now through
/// SQLite, which also sees the WAL) that it is a store of a version this library reads,
/// upgrading a version-1 store in place; then makes sure it is in WAL mode. A new or
/// upgraded store gets a new board at `board` (mode `mode`) in place of any board there.
fn init_or_validate(conn: &Connection, path: &Path, board: &Path, mode: u32) -> Result<()> {
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
    let has_table = |name: &str| -> Result<bool> {
        conn.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")
            .and_then(|mut s| s.exists([name]))
            .map_err(sq)
    };
    if app == 0 && version == 0 && objects == 0 {
        // A board left beside a store file that was removed (or never made) must not
        // serve the new store: its slots may show another store's requests.
        Board::replace(board, mode)?;
        // Empty: one rollback-journal transaction, so that a creator killed half-way
        // leaves an empty database (the next opener rolls the journal back), never a
        // half-made store. WAL mode is switched on afterwards.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n\
             PRAGMA application_id = {APPLICATION_ID};\n\
             PRAGMA user_version = {SCHEMA_VERSION};\n\
             {SCHEMA};\n\
             {FENCES_SCHEMA};\n\
             COMMIT;"
        ))
        .map_err(sq)?;
    } else if app != APPLICATION_ID {
        return Err(Error::format(
            path,
            EXPECTED,
            format!("an SQLite database of another application (application_id {app:#x})"),
        ));
    } else if !(OLDEST_READABLE..=SCHEMA_VERSION).contains(&version) {
        return Err(unreadable_version(path, version));
    } else if !has_table("kv")? {
        return Err(Error::format(
            path,
            EXPECTED,
            "fileipc header but no table kv",
        ));
    } else if version == 1 {
        // Version 1 to 2: the column `batch`, and a board of version 3 (combiners of
        // this version note their batches there). The board first: processes of an
        // older library that have the old one mapped go on combining among themselves
        // on it, with its own record (`fileipc_applied`, left in place), and never
        // apply requests of this version's board. A replacement killed before the
        // commit below leaves a version-1 store, upgraded again by the next opener.
        Board::replace(board, mode)?;
        let fences = if has_table("fileipc_fences")? {
            ""
        } else {
            FENCES_SCHEMA
        };
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n\
             {UPGRADE_1_TO_2};\n\
             {fences};\n\
             PRAGMA user_version = {SCHEMA_VERSION};\n\
             COMMIT;"
        ))
        .map_err(sq)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_appends_suffix() {
        assert_eq!(lock_path_of(Path::new("/tmp/x")), Path::new("/tmp/x-lock"));
    }

    #[test]
    fn application_id_spells_fipc() {
        assert_eq!(&APPLICATION_ID.to_be_bytes(), b"FIPC");
    }
}
