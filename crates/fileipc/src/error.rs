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
/// `Display` names the path and what went wrong at the fileipc level; the underlying
/// error (the operating system's reason, SQLite's error, the error that stopped a
/// batch) is not repeated there but returned by [`source`](std::error::Error::source),
/// so a report that prints the chain (`anyhow`'s `{:#}`, `eyre`) shows each cause once:
/// `open /run/app/lock: Permission denied (os error 13)`. To print one error with its
/// causes without such a crate, follow `source()`. No message ever names a temporary
/// file: errors met while writing one name the final path.
///
/// Expected outcomes are not errors: a timeout is `Ok(false)` or `Ok(None)`, an empty
/// queue is `Ok(None)`. Errors are for what the caller did not expect: the file system
/// refused, a file holds something else than the primitive expected, a rule of the
/// primitive was broken (unlocking a mutex one does not hold).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    #[error("{op} {}", path.display())]
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
    #[error("{}: sqlite", path.display())]
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
    #[error("{}: failed after {completed} items took effect", path.display())]
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
    /// An OS error wrapped with a file name (the `tempfile` crate adds the temporary
    /// file's) is reduced to the bare OS error: the path named is `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        let source = bare_os_error(source);
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

/// `e` without the file name a wrapper added to its message (`tempfile` writes
/// `"<os error> at path \"<temporary name>\""` and hides the OS code): the OS error
/// itself when its code is in the message, else the message up to the name.
fn bare_os_error(e: io::Error) -> io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let Some(inner) = e.get_ref() else {
        return e;
    };
    let msg = inner.to_string();
    let Some(at) = msg.find(" at path ") else {
        return e;
    };
    let reason = &msg[..at];
    let code = reason
        .rsplit_once("(os error ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<i32>().ok());
    match code {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), reason.to_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of `e` and of each of its sources, outermost first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            out.push(s.to_string());
            next = s.source();
        }
        out
    }

    /// No level of the chain repeats the message of the level below it, and the OS
    /// reason appears exactly once in the chain printed as `anyhow` prints it.
    fn check_once(e: &Error, reason: &str) {
        let c = chain(e);
        for pair in c.windows(2) {
            assert!(!pair[0].contains(&pair[1]), "{c:?}");
        }
        let joined = c.join(": ");
        assert_eq!(joined.matches(reason).count(), 1, "{joined}");
        assert_eq!(joined.matches("/the/path").count(), 1, "{joined}");
    }

    fn enoent() -> io::Error {
        io::Error::from_raw_os_error(2)
    }

    #[test]
    fn every_wrapping_variant_prints_its_cause_once() {
        let reason = enoent().to_string();
        let io = Error::io("open", "/the/path", enoent());
        assert_eq!(io.to_string(), "open /the/path");
        check_once(&io, &reason);

        let partial = Error::Partial {
            path: "/the/path".into(),
            completed: 3,
            source: Box::new(Error::io("write", "/the/path/seg", enoent())),
        };
        assert_eq!(
            partial.to_string(),
            "/the/path: failed after 3 items took effect"
        );
        let c = chain(&partial);
        assert_eq!(c.join(": ").matches(&reason).count(), 1, "{c:?}");
        assert!(!c[0].contains(&c[1]), "{c:?}");

        let sqlite = Error::Sqlite {
            path: "/the/path".into(),
            source: rusqlite::Error::InvalidQuery,
        };
        assert_eq!(sqlite.to_string(), "/the/path: sqlite");
        let c = chain(&sqlite);
        assert_eq!(c.len(), 2, "{c:?}");

        // Converted to io::Error, the chain still has the reason once.
        let as_io: io::Error = Error::io("open", "/the/path", enoent()).into();
        let c = chain(&as_io);
        assert_eq!(c.join(": ").matches(&reason).count(), 1, "{c:?}");
    }

    /// The variants without an underlying error name the path once and have no source.
    #[test]
    fn the_other_variants_name_the_path_once() {
        let all = [
            Error::Symlink {
                path: "/the/path".into(),
            },
            Error::format("/the/path", "fileipc mutex file", "no fileipc header"),
            Error::Corrupt {
                path: "/the/path".into(),
                offset: 8,
                detail: "bad checksum".into(),
            },
            Error::invalid("/the/path", "not locked by this handle"),
            Error::Destroyed {
                path: "/the/path".into(),
            },
            Error::Value {
                path: "/the/path".into(),
                key: "k".into(),
                detail: "expected i64".into(),
            },
        ];
        for e in all {
            let c = chain(&e);
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!(c[0].matches("/the/path").count(), 1, "{c:?}");
        }
    }

    /// The `tempfile` crate's errors name the temporary file; they must not show.
    #[test]
    fn a_temporary_file_name_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let raw = tempfile::Builder::new()
            .prefix(".lock.")
            .suffix(".tmp")
            .tempfile_in(&missing)
            .unwrap_err();
        assert!(raw.to_string().contains(".tmp"), "premise: {raw}");
        let e = Error::io("create", "/the/path", raw);
        let joined = chain(&e).join(": ");
        assert!(!joined.contains(".tmp"), "{joined}");
        assert!(!joined.contains(".lock."), "{joined}");
        check_once(&e, &enoent().to_string());
        assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
    }
}
