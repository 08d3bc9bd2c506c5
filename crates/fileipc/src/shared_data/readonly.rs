//! The read-only engine of a store: what [`SharedData`](super::SharedData) opens when the
//! read-write open is refused with `EROFS` (a read-only mount) or `EACCES` (no write
//! permission for the caller), so that the store can still be read. Reads run on a
//! read-only SQLite connection; every write fails with an error naming the path and
//! saying the store is read-only.
//!
//! SQLite reads a WAL store read-only through its `-shm` file. When that file can be
//! opened (a writer has the store open, or the caller may create it) the connection is
//! an ordinary `SQLITE_OPEN_READONLY` one and sees every commit. On a read-only mount
//! with no `-shm` (the store was closed cleanly before the remount), and only there, the
//! store is opened `immutable=1`: nothing can change a file on a read-only mount, so
//! SQLite may read it without locks or shared memory. A store whose caller lacks write
//! permission is never opened `immutable` (its owner may be writing it): without a
//! `-shm` to open, the open fails with an error saying so.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex as StdMutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::SharedDataOptions;
use super::open::{BUSY_TIMEOUT, EXPECTED, check_header, check_path_len, validate_schema};
use super::sql::Ops;
use crate::error::{Error, IoResultExt, Result};
use crate::sys;

/// Whether `e`, from the read-write open, is a refusal to write: a read-only file
/// system or no write permission. Then the store is opened read-only instead.
pub(super) fn refuses_writing(e: &Error) -> bool {
    matches!(
        e.io_kind(),
        Some(io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied)
    )
}

/// A store opened for reading only.
pub(super) struct ReadOnlySharedData {
    path: PathBuf,
    conn: StdMutex<Connection>,
    /// Why writes are refused (the read-write open's error kind).
    why: io::ErrorKind,
    /// The process that opened the connection (an SQLite connection cannot cross fork).
    owner_pid: u32,
    /// A descriptor of the store file, kept while the connection lives: closing a
    /// descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    /// included.
    _file: File,
}

impl ReadOnlySharedData {
    /// Opens the store at `path` read-only, after the read-write open failed with
    /// `refused` (see [`refuses_writing`]).
    pub(super) fn open(
        path: &Path,
        opts: SharedDataOptions,
        refused: &Error,
    ) -> Result<ReadOnlySharedData> {
        check_path_len(path)?;
        let why = refused.io_kind().unwrap_or(io::ErrorKind::PermissionDenied);
        let file = sys::open_nofollow(path, false).at("open", path)?;
        let meta = file.metadata().at("stat", path)?;
        if !meta.is_file() {
            return Err(Error::format(path, EXPECTED, "not a regular file"));
        }
        crate::state::check_trust(path, &meta, opts.mode, EXPECTED)?;
        check_header(path, &file)?;
        if meta.len() == 0 {
            return Err(Error::format(
                path,
                EXPECTED,
                "an empty file (a store not yet initialised), which a read-only open \
                 cannot initialise",
            ));
        }
        let sq = |e| Error::Sqlite {
            path: path.to_owned(),
            source: e,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_EXRESCODE;
        let plain = Connection::open_with_flags(path, flags)
            .map_err(sq)
            .and_then(|c| validate_schema(&c, path).map(|()| c));
        let conn = match plain {
            Ok(c) => c,
            Err(e) if why == io::ErrorKind::ReadOnlyFilesystem => {
                // No `-shm` to read through on a read-only mount: nothing can change the
                // file while it is mounted so, which is what `immutable` asks.
                let uri = immutable_uri(path).ok_or(e)?;
                let c = Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI)
                    .map_err(sq)?;
                validate_schema(&c, path)?;
                c
            }
            Err(e) => {
                return Err(Error::invalid(
                    path,
                    format!(
                        "cannot be written by this process ({}), and cannot be read \
                         read-only either: {e}; SQLite reads a store read-only through its \
                         PATH-shm file, which exists while a writer has the store open, or \
                         which the reader must be allowed to create in the directory",
                        io::Error::from(why)
                    ),
                ));
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
        Ok(ReadOnlySharedData {
            path: path.to_owned(),
            conn: StdMutex::new(conn),
            why,
            owner_pid: std::process::id(),
            _file: file,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The error every write returns: `Error::Io` of the read-write open's kind, naming
    /// the path and saying the store is read-only.
    pub(super) fn refuse(&self) -> Error {
        let reason = match self.why {
            io::ErrorKind::ReadOnlyFilesystem => "its file system is mounted read-only",
            _ => "this process has no write permission",
        };
        Error::io(
            "write",
            &self.path,
            io::Error::new(
                self.why,
                format!("the store is read-only ({reason}): writes are refused"),
            ),
        )
    }

    fn read<R>(&self, f: impl FnOnce(&Ops<'_>) -> Result<R>) -> Result<R> {
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
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&Ops {
            conn: &conn,
            path: &self.path,
        })
    }

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
}

/// `file:PATH?immutable=1` with the characters URIs reserve escaped; `None` for a path
/// that is not UTF-8.
fn immutable_uri(path: &Path) -> Option<String> {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut uri = String::from("file:");
    for c in abs.to_str()?.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Some(uri)
}
