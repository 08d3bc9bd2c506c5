//! [`MutexOptions`]: how a [`Mutex`] is opened (the creation mode), ending in `open`,
//! which builds the handle's engine.

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
}

impl Default for MutexOptions {
    fn default() -> MutexOptions {
        MutexOptions {
            mode: state::DEFAULT_MODE,
        }
    }
}

impl MutexOptions {
    /// The default options: mode `0o600`.
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
            crate::location::Location::Path(p) => Engine::Local(LocalMutex::open(&p, self.mode)?),
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
