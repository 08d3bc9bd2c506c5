//! [`inspect`]: which fileipc file, if any, is at a path, told from what is on disk
//! without creating, changing or locking anything. The recognition rules are in the
//! documentation of [`inspect`]; the formats in `docs/FORMAT.md`.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state;
use crate::sys;

use crate::queue::CONTROL as QUEUE_CONTROL;
use crate::shared_data::{LOCK_SUFFIX as STORE_LOCK_SUFFIX, SQLITE_MAGIC};
/// Where SQLite's header keeps `PRAGMA user_version` and `PRAGMA application_id`
/// (big-endian 32-bit integers).
const SQLITE_USER_VERSION_AT: usize = 60;
const SQLITE_APPLICATION_ID_AT: usize = 68;
/// How many bytes of a file are read: SQLite's header, which is longer than the common
/// header of state files and than any valid PID file.
const HEAD_LEN: usize = 100;
/// How many times an entry that changes while it is inspected is looked at again.
const ATTEMPTS: usize = 8;

/// What [`inspect`] found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The path inspected, as given.
    pub path: PathBuf,
    /// What is there.
    pub kind: FileKind,
    /// The format version recorded in the file's header, whether or not this library
    /// reads that version: the common header's version field for state files (for a
    /// queue, its control file's), `PRAGMA user_version` for a SharedData store. `None`
    /// for kinds without a header (events, PID files, lock files, segments,
    /// directories, ...) and for a queue whose control file is not a readable queue
    /// control file.
    pub version: Option<u32>,
    /// Figures the engine keeps beside the state, by name, for people debugging: for a
    /// name on Redis, the lease left to the holder (`lease_left_ms`), the last fence
    /// granted (`fence`), the backlog and messages in flight of a queue. Empty for files.
    pub details: Vec<(String, String)>,
}

/// The kinds of things [`inspect`] tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// Nothing at the path (an [`Event`](crate::Event) there reads as clear).
    Missing,
    /// A symbolic link. fileipc never follows one at a state path; `target` is what it
    /// points to, unresolved.
    Symlink {
        /// The link's content.
        target: PathBuf,
    },
    /// A directory that is not a queue (it holds no `control` entry).
    Directory,
    /// A [`MessageQueue`](crate::MessageQueue): a directory holding a `control` entry.
    Queue,
    /// The control file of a queue (`DIR/control`, state file kind 3).
    QueueControl,
    /// A segment file of a queue (`DIR/seg-<16 hex digits>.log` beside a control file).
    QueueSegment,
    /// A [`Mutex`](crate::Mutex) file (state file kind 1).
    Mutex,
    /// A [`Semaphore`](crate::Semaphore) file (state file kind 2).
    Semaphore,
    /// A [`SharedData`](crate::SharedData) store: an SQLite database with fileipc's
    /// `application_id`.
    SharedData,
    /// The writers' lock file `PATH-lock` of the SharedData store `PATH` (empty).
    SharedDataLock,
    /// The request board `PATH-board` of a SharedData store (state file kind 4).
    SharedDataBoard,
    /// A [`PidFile`](crate::PidFile), or any file holding one process ID in its
    /// format. Whether its owner runs is a question for [`PidFile::status`](crate::PidFile::status).
    PidFile {
        /// The process ID the file names.
        pid: u32,
    },
    /// An empty regular file: a set [`Event`](crate::Event). (An empty PID file, left
    /// by an owner killed while rewriting it, looks the same.)
    Event,
    /// A file with fileipc's common header and a kind code this library does not know
    /// (a newer release's state file).
    UnknownState {
        /// The kind field of the header.
        code: u32,
    },
    /// An SQLite database that is not a fileipc store (another `application_id`).
    Sqlite {
        /// Its `PRAGMA application_id`.
        application_id: u32,
    },
    /// Anything else, described: a file fileipc did not write, a FIFO, socket or device.
    /// An [`Event`](crate::Event) at such a path reads as set.
    Other(String),
}

/// Tells what fileipc file, if any, is at `path`, from what is on disk, without
/// creating, changing or locking anything: no primitive is opened, no SQLite connection
/// is made (which would create `-wal` and `-shm` files), a symbolic link is reported, not
/// followed, and a FIFO, socket or device is not opened. A regular file is opened
/// read-only (`O_NOFOLLOW | O_NONBLOCK`) and its first 100 bytes are read, and so are
/// those of a queue directory's control file and of the store beside a lock file.
///
/// The rules, in the order they are applied (`docs/FORMAT.md` describes each format):
///
/// | what is at the path | [`FileKind`] |
/// |---|---|
/// | nothing | [`FileKind::Missing`] |
/// | a symbolic link | [`FileKind::Symlink`] |
/// | a directory holding an entry `control` | [`FileKind::Queue`] |
/// | any other directory | [`FileKind::Directory`] |
/// | a FIFO, socket or device | [`FileKind::Other`] |
/// | a file `seg-<16 hex digits>.log` beside a queue control file | [`FileKind::QueueSegment`] |
/// | a file starting with the common header of state files (`FILEIPC\0`), by its kind field | [`FileKind::Mutex`], [`FileKind::Semaphore`], [`FileKind::QueueControl`], [`FileKind::SharedDataBoard`], [`FileKind::UnknownState`] |
/// | a file starting with `SQLite format 3\0`, by its `application_id` | [`FileKind::SharedData`], [`FileKind::Sqlite`] |
/// | an empty file `PATH-lock` beside a SharedData store `PATH` | [`FileKind::SharedDataLock`] |
/// | any other empty file | [`FileKind::Event`] |
/// | a file holding one process ID, as a PID file does | [`FileKind::PidFile`] |
/// | any other file | [`FileKind::Other`] |
///
/// The answer describes the moment of the call; another process may change the path
/// right after. To read a primitive's live state, open it (which may create or repair
/// files, as opening does).
///
/// # Errors
///
/// [`Error::Io`] naming the path if its metadata or its first bytes cannot be read
/// (permission denied, a parent that is not a directory, ...), or if the entry kept
/// being replaced while it was inspected.
///
/// # Examples
///
/// ```
/// use fileipc::{FileKind, Mutex};
///
/// # fn main() -> fileipc::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("backup.lock");
/// assert_eq!(fileipc::inspect(&path)?.kind, FileKind::Missing);
///
/// Mutex::open(&path)?;
/// let found = fileipc::inspect(&path)?;
/// assert_eq!(found.kind, FileKind::Mutex);
/// assert_eq!(found.version, Some(4));
/// # Ok(())
/// # }
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection> {
    let path = path.as_ref();
    if let crate::location::Location::Redis(url) = crate::location::Location::parse(path)? {
        return crate::location::redis_engine(&url, |u| {
            #[cfg(feature = "redis")]
            {
                let (kind, version, details) = crate::remote::inspect::inspect(u)?;
                Ok(Inspection {
                    path: path.to_owned(),
                    kind,
                    version,
                    details,
                })
            }
            #[cfg(not(feature = "redis"))]
            unreachable!("{u:?}")
        });
    }
    for _ in 0..ATTEMPTS {
        if let Some((kind, version)) = look(path)? {
            return Ok(Inspection {
                path: path.to_owned(),
                kind,
                version,
                details: Vec::new(),
            });
        }
    }
    Err(Error::io(
        "inspect",
        path,
        io::Error::other("the entry keeps changing while it is inspected"),
    ))
}

/// One look at `path`; `None` if the entry changed between two steps of the look.
fn look(path: &Path) -> Result<Option<(FileKind, Option<u32>)>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some((FileKind::Missing, None)));
        }
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return match std::fs::read_link(path) {
            Ok(target) => Ok(Some((FileKind::Symlink { target }, None))),
            // Replaced by something else meanwhile.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io("readlink", path, e)),
        };
    }
    if file_type.is_dir() {
        return Ok(Some(
            match std::fs::symlink_metadata(path.join(QUEUE_CONTROL)) {
                Ok(_) => (FileKind::Queue, queue_version(path)),
                Err(_) => (FileKind::Directory, None),
            },
        ));
    }
    if !file_type.is_file() {
        return Ok(Some((
            FileKind::Other("not a regular file".to_owned()),
            None,
        )));
    }
    if is_segment_name(path) && is_queue_dir(&dir_of(path)) {
        return Ok(Some((FileKind::QueueSegment, None)));
    }
    let Some(head) = read_head(path, &meta)? else {
        return Ok(None);
    };
    Ok(Some(classify(path, &head)))
}

/// What a regular file is, from its first bytes (and, for an empty file, its name).
fn classify(path: &Path, head: &[u8]) -> (FileKind, Option<u32>) {
    if head.starts_with(&state::MAGIC) {
        let Some((code, version)) = state::peek(head) else {
            return (
                FileKind::Other(format!("a fileipc header cut short ({} bytes)", head.len())),
                None,
            );
        };
        let kind = match state::Kind::from_u32(code) {
            Some(state::Kind::Mutex) => FileKind::Mutex,
            Some(state::Kind::Semaphore) => FileKind::Semaphore,
            Some(state::Kind::Queue) => FileKind::QueueControl,
            Some(state::Kind::SharedDataBoard) => FileKind::SharedDataBoard,
            Some(state::Kind::HostOwners) => FileKind::Other(
                "the host file where processes using the Redis engine register".into(),
            ),
            None => FileKind::UnknownState { code },
        };
        return (kind, version);
    }
    if head.starts_with(SQLITE_MAGIC) {
        return match sqlite_ids(head) {
            Some((app, version)) if app == crate::shared_data::APPLICATION_ID as u32 => {
                (FileKind::SharedData, Some(version))
            }
            Some((application_id, _)) => (FileKind::Sqlite { application_id }, None),
            None => (
                FileKind::Other(format!("an SQLite header cut short ({} bytes)", head.len())),
                None,
            ),
        };
    }
    if head.is_empty() {
        if is_store_lock(path) {
            return (FileKind::SharedDataLock, None);
        }
        return (FileKind::Event, None);
    }
    match crate::pidfile::parse_pid(head) {
        Ok(Some(pid)) => (FileKind::PidFile { pid }, None),
        _ => (FileKind::Other("not a fileipc file".to_owned()), None),
    }
}

/// `(application_id, user_version)` from an SQLite header, if it is long enough.
fn sqlite_ids(head: &[u8]) -> Option<(u32, u32)> {
    let be = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    Some((be(SQLITE_APPLICATION_ID_AT)?, be(SQLITE_USER_VERSION_AT)?))
}

/// The first [`HEAD_LEN`] bytes of the regular file at `path` that `lstat` described as
/// `seen`, opened read-only without following a link or blocking; `None` if it was
/// replaced meanwhile.
fn read_head(path: &Path, seen: &Metadata) -> Result<Option<Vec<u8>>> {
    let file = match sys::open_nofollow(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || sys::is_symlink_refusal(&e) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if meta.dev() != seen.dev() || meta.ino() != seen.ino() {
        return Ok(None);
    }
    read_prefix(&file)
        .map(Some)
        .map_err(|e| Error::io("read", path, e))
}

fn read_prefix(file: &File) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; HEAD_LEN];
    let n = state::read_prefix(file, &mut head)?;
    head.truncate(n);
    Ok(head)
}

/// The first bytes of a regular file that is not the one inspected (a queue's control
/// file, the store beside a lock file); `None` if there is none or it cannot be read.
/// Never follows a link or opens anything but a regular file.
fn peek_sibling(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    read_head(path, &meta).ok().flatten()
}

/// The format version of the queue in directory `dir`, from its control file.
fn queue_version(dir: &Path) -> Option<u32> {
    let head = peek_sibling(&dir.join(QUEUE_CONTROL))?;
    match state::peek(&head)? {
        (code, version) if state::Kind::from_u32(code) == Some(state::Kind::Queue) => version,
        _ => None,
    }
}

/// Whether `dir` holds a queue control file.
fn is_queue_dir(dir: &Path) -> bool {
    peek_sibling(&dir.join(QUEUE_CONTROL))
        .and_then(|head| state::peek(&head))
        .is_some_and(|(code, _)| state::Kind::from_u32(code) == Some(state::Kind::Queue))
}

/// The directory holding `path`.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Whether the file name of `path` is a queue segment's.
fn is_segment_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(crate::queue::parse_segment_name)
        .is_some()
}

/// Whether `path` is named `STORE-lock` beside a SharedData store `STORE`.
fn is_store_lock(path: &Path) -> bool {
    let Some(store) = path
        .as_os_str()
        .as_bytes()
        .strip_suffix(STORE_LOCK_SUFFIX.as_bytes())
    else {
        return false;
    };
    let store = Path::new(OsStr::from_bytes(store));
    if store.file_name().is_none() {
        return false;
    }
    peek_sibling(store).is_some_and(|head| {
        head.starts_with(SQLITE_MAGIC)
            && sqlite_ids(&head)
                .is_some_and(|(app, _)| app == crate::shared_data::APPLICATION_ID as u32)
    })
}
