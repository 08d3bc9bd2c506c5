//! [`MutexOptions`]: how a [`Mutex`] is opened (the creation mode, flock or word
//! ownership), ending in `open`, which builds the handle's engine.

use std::path::Path;

use super::local::LocalMutex;
use super::{Engine, Mutex};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::state;

/// Options for opening a [`Mutex`]: `MutexOptions::new().mode(0o660).open(path)` (or
/// `Mutex::options()`), in the builder style shared by the six primitives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutexOptions {
    mode: u32,
    flock_compatible: bool,
}

impl Default for MutexOptions {
    fn default() -> MutexOptions {
        MutexOptions {
            mode: state::DEFAULT_MODE,
            flock_compatible: true,
        }
    }
}

impl MutexOptions {
    /// The default options: mode `0o600`, flock-compatible.
    pub fn new() -> MutexOptions {
        MutexOptions::default()
    }

    /// The permission bits the lock file is created with if it does not exist yet
    /// (default `0o600`, owner only; `0o660` lets a group share it). An existing file
    /// keeps its mode.
    pub fn mode(mut self, mode: u32) -> MutexOptions {
        self.mode = mode & 0o7777;
        self
    }

    /// Whether a lock file created by this open excludes `flock(1)` (default `true`).
    ///
    /// `true` (*flock mode*): ownership is an exclusive `flock` on the lock file, so
    /// `flock(1)` and this mutex exclude each other; each lock and unlock is a system
    /// call (about 0.2 us each).
    ///
    /// `false` (*word mode*): ownership is the holder's owner id in a word of the file's
    /// mapping, taken and released with one atomic operation each, as fast as a
    /// process-shared robust pthread mutex when uncontended; a holder killed with
    /// `SIGKILL` is found dead through the kernel and its lock taken over by a waiter
    /// within about 10 ms, as in flock mode. **`flock(1)` on a word-mode file does not
    /// exclude anything**: use this only where every user of the path goes through
    /// fileipc.
    ///
    /// The mode is recorded in the file when it is created, and every handle on the file
    /// uses the file's mode, whatever its options say: an existing file keeps its mode,
    /// and an empty file (made by `flock(1)` or `touch`) is always adopted in flock mode.
    /// [`Mutex::is_flock_compatible`] tells which mode a handle got.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let fast = fileipc::Mutex::options().flock_compatible(false).open(&path)?;
    /// assert!(!fast.is_flock_compatible());
    /// // Later openers get the file's mode.
    /// assert!(!fileipc::Mutex::open(&path)?.is_flock_compatible());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flock_compatible(mut self, yes: bool) -> MutexOptions {
        self.flock_compatible = yes;
        self
    }

    /// Opens the mutex at `path`, creating the lock file if it is missing and adopting
    /// it if it is empty (a `flock(1)` or `touch` lock file; see
    /// [`Mutex`](crate::Mutex#with-flock1)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be created or opened, [`Error::Symlink`] if a
    /// symbolic link stands at `path`, [`Error::Format`] if the file is not a fileipc
    /// mutex file (garbage, another primitive's file, another format version),
    /// [`Error::Invalid`] if an existing file belongs to another user (with a private
    /// mode) or is writable by group or others beyond the mode asked for.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::options().mode(0o660).open(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Mutex> {
        let engine = match crate::location::Location::parse(path.as_ref())? {
            crate::location::Location::Path(p) => {
                Engine::Local(LocalMutex::open(&p, self.mode, self.flock_compatible)?)
            }
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(Box::new(super::redis::RedisMutex::open(u)?)));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?}")
            })?,
        };
        Ok(Mutex { engine })
    }

    /// Opens the existing mutex at `path` with these options; never creates anything.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `path` if there is no file; otherwise as
    /// [`open`](MutexOptions::open).
    pub fn open_existing(&self, path: impl AsRef<Path>) -> Result<Mutex> {
        state::without_creating(|| self.open(path))
    }
}
