//! The crate's error type: [`Error`] (every case names its path), [`Result`], the
//! conversion to `io::Error`, and `IoResultExt::at`, which names the path of an
//! `io::Result`'s error.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A `Result` whose error is [`fileipc::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each case naming the path it concerns.
///
/// Expected outcomes are not errors: a timeout is `Ok(false)` or `Ok(None)`, an empty
/// queue is `Ok(None)`. Errors are for what the caller did not expect: the file system
/// refused, a file holds something else than the primitive expected, a rule of the
/// primitive was broken (unlocking a mutex one does not hold).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "lock", "read", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A symbolic link stands where a state file was expected; it is never followed.
    #[error("{}: is a symbolic link; refusing to follow it", path.display())]
    Symlink {
        /// The path of the link.
        path: PathBuf,
    },

    /// The file at `path` is not what the primitive expected (garbage, another
    /// primitive's file, an unknown format version).
    #[error("{}: not a {expected}: {detail}", path.display())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What was expected, e.g. "fileipc semaphore file".
        expected: &'static str,
        /// What was found instead.
        detail: String,
    },

    /// Data inside a valid file is damaged (a checksum mismatch, an impossible length).
    #[error("{}: corrupt data at offset {offset}: {detail}", path.display())]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// Byte offset of the damaged record or field.
        offset: u64,
        /// What is wrong.
        detail: String,
    },

    /// The operation breaks a rule of the primitive (unlocking a mutex this handle does
    /// not hold, releasing a semaphore past `u32::MAX`, a message over the size limit).
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The primitive's path.
        path: PathBuf,
        /// The rule that was broken.
        detail: String,
    },

    /// The primitive was destroyed (by this or another handle) and cannot be used.
    #[error("{}: destroyed", path.display())]
    Destroyed {
        /// The primitive's path.
        path: PathBuf,
    },

    /// A value could not be encoded or decoded (SharedData).
    #[error("{}: key {key:?}: {detail}", path.display())]
    Value {
        /// The store's path.
        path: PathBuf,
        /// The key concerned.
        key: String,
        /// What went wrong, e.g. "expected i64: invalid type: string".
        detail: String,
    },

    /// The embedded SQLite database reported an error (SharedData).
    #[error("{}: sqlite: {source}", path.display())]
    Sqlite {
        /// The store's path.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// The Redis server (or the connection to it) reported an error; `path` is the
    /// primitive's URL, password redacted.
    #[error("{}: redis: {source}", path.display())]
    Redis {
        /// The primitive's URL.
        path: PathBuf,
        /// The `redis` client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A holder's lease ran out before it released what it held (a lock, a permit, a
    /// claim on Redis): someone else may have been granted it since. Raised by the
    /// release that comes too late.
    #[error("{}: the lease ({lease:?}) was lost before the release: another holder may have been granted it since", path.display())]
    LeaseLost {
        /// The primitive's URL.
        path: PathBuf,
        /// The lease that ran out.
        lease: std::time::Duration,
    },

    /// A batch operation failed after part of it took effect: the first `completed`
    /// items did, the others did not (see the operation, e.g.
    /// [`MessageQueue::send_all`](crate::MessageQueue::send_all)). Retrying the whole
    /// batch would repeat those items; retry from item `completed` instead.
    #[error("{}: failed after {completed} items took effect: {source}", path.display())]
    Partial {
        /// The primitive's path.
        path: PathBuf,
        /// How many items, from the first, took effect.
        completed: usize,
        /// Why the rest did not.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The path the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Symlink { path }
            | Error::Format { path, .. }
            | Error::Corrupt { path, .. }
            | Error::Invalid { path, .. }
            | Error::Destroyed { path }
            | Error::Value { path, .. }
            | Error::Sqlite { path, .. }
            | Error::Redis { path, .. }
            | Error::LeaseLost { path, .. }
            | Error::Partial { path, .. } => path,
        }
    }

    /// The underlying OS error kind, if this is an I/O error (or an
    /// [`Error::Partial`] that stopped on one).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::Partial { source, .. } => source.io_kind(),
            _ => None,
        }
    }

    /// The `io::ErrorKind` this error converts to.
    fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::Symlink { .. } | Error::Invalid { .. } => io::ErrorKind::InvalidInput,
            Error::Format { .. } | Error::Corrupt { .. } | Error::Value { .. } => {
                io::ErrorKind::InvalidData
            }
            Error::Destroyed { .. } => io::ErrorKind::NotFound,
            Error::Sqlite { .. } | Error::Redis { .. } => io::ErrorKind::Other,
            Error::LeaseLost { .. } => io::ErrorKind::TimedOut,
            Error::Partial { source, .. } => source.kind(),
        }
    }

    /// Builds an [`Error::Io`], turning `O_NOFOLLOW`'s `ELOOP` into [`Error::Symlink`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if crate::sys::is_symlink_refusal(&source) {
            return Error::Symlink { path };
        }
        Error::Io { op, path, source }
    }

    pub(crate) fn format(
        path: impl Into<PathBuf>,
        expected: &'static str,
        detail: impl fmt::Display,
    ) -> Error {
        Error::Format {
            path: path.into(),
            expected,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, detail: impl fmt::Display) -> Error {
        Error::Invalid {
            path: path.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Adds the path to an `io::Result`.
pub(crate) trait IoResultExt<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
