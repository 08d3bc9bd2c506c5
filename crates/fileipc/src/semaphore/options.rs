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
    /// missing. An existing semaphore keeps its state; `initial` is then ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be created or opened, [`Error::Symlink`] if a
    /// symbolic link stands at `path`, [`Error::Format`] if the file is not a fileipc
    /// semaphore file, [`Error::Invalid`] if an existing file belongs to another user
    /// (with a private mode) or is writable by group or others beyond the mode asked for.
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
        let engine = match crate::location::Location::parse(path.as_ref())? {
            crate::location::Location::Path(p) => {
                Engine::Local(LocalSemaphore::open(&p, self.mode, initial)?)
            }
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(Box::new(super::redis::RedisSemaphore::open(
                    u, initial,
                )?)));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?} {initial}")
            })?,
        };
        Ok(Semaphore { engine })
    }
}
