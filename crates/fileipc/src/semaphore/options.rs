//! [`SemaphoreOptions`]: how a [`Semaphore`] is opened (the creation mode), ending in
//! `open`, which builds the handle's engine.

use std::path::Path;

use super::local::LocalSemaphore;
use super::{Engine, Semaphore};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::state;

/// Options for opening a [`Semaphore`]: `Semaphore::options().mode(0o660).open(path, 3)`.
#[derive(Debug, Clone)]
pub struct SemaphoreOptions {
    mode: u32,
}

impl Default for SemaphoreOptions {
    fn default() -> SemaphoreOptions {
        SemaphoreOptions {
            mode: state::DEFAULT_MODE,
        }
    }
}

impl SemaphoreOptions {
    /// The permission bits the file is created with if it does not exist yet (default
    /// `0o600`, owner only; `0o660` lets a group share it).
    pub fn mode(&mut self, mode: u32) -> &mut SemaphoreOptions {
        self.mode = mode & 0o7777;
        self
    }

    /// Opens the semaphore at `path`, creating it with `initial` permits if it is
    /// missing. An existing semaphore keeps its state, and its capacity must be
    /// `initial`: a semaphore created with another capacity is refused rather than
    /// silently used with a capacity the caller did not ask for. To open a semaphore
    /// with whatever capacity it has (or one whose capacity signalling releases have
    /// raised), use [`open_existing`](SemaphoreOptions::open_existing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be created or opened, [`Error::Symlink`] if a
    /// symbolic link stands at `path`, [`Error::Format`] if the file is not a fileipc
    /// semaphore file, [`Error::Invalid`] if an existing file belongs to another user
    /// (with a private mode) or is writable by group or others beyond the mode asked for,
    /// or if its capacity is not `initial` (the message names both values).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::options().mode(0o660).open(&path, 2)?;
    /// assert_eq!(s.value()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(&self, path: impl AsRef<Path>, initial: u32) -> Result<Semaphore> {
        self.open_as(path.as_ref(), Some(initial))
    }

    /// Opens the existing semaphore at `path` with these options and the capacity it
    /// has; never creates anything.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `path` if there is no file; otherwise as
    /// [`open`](SemaphoreOptions::open).
    pub fn open_existing(&self, path: impl AsRef<Path>) -> Result<Semaphore> {
        self.open_as(path.as_ref(), None)
    }

    /// Opens the semaphore at `path`: creating it with `initial` permits, or, with
    /// `None`, only if it exists.
    fn open_as(&self, path: &Path, initial: Option<u32>) -> Result<Semaphore> {
        let engine = match crate::location::Location::parse(path)? {
            crate::location::Location::Path(p) => Engine::Local(match initial {
                Some(_) => LocalSemaphore::open(&p, self.mode, initial)?,
                None => state::without_creating(|| LocalSemaphore::open(&p, self.mode, None))?,
            }),
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(Box::new(super::redis::RedisSemaphore::open(
                    u, initial,
                )?)));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?} {initial:?}")
            })?,
        };
        Ok(Semaphore { engine })
    }
}
