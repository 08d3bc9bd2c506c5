//! [`SemaphoreOptions`]: how a [`Semaphore`] is opened (the creation mode), ending in
//! `open`, which builds the handle's engine.

use std::path::Path;

use super::local::LocalSemaphore;
use super::{Engine, Semaphore};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::state;

/// Options for opening a [`Semaphore`]:
/// `SemaphoreOptions::new().initial(3).mode(0o660).open(path)` (or
/// `Semaphore::options()`), in the builder style shared by the six primitives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemaphoreOptions {
    mode: u32,
    initial: u32,
}

impl Default for SemaphoreOptions {
    fn default() -> SemaphoreOptions {
        SemaphoreOptions {
            mode: state::DEFAULT_MODE,
            initial: 1,
        }
    }
}

impl SemaphoreOptions {
    /// The default options: mode `0o600`, 1 initial permit.
    pub fn new() -> SemaphoreOptions {
        SemaphoreOptions::default()
    }

    /// The permission bits the file is created with if it does not exist yet (default
    /// `0o600`, owner only; `0o660` lets a group share it).
    pub fn mode(mut self, mode: u32) -> SemaphoreOptions {
        self.mode = mode & 0o7777;
        self
    }

    /// How many permits a semaphore this call creates starts with (default 1).
    pub fn initial(mut self, permits: u32) -> SemaphoreOptions {
        self.initial = permits;
        self
    }

    /// Opens the semaphore at `path`, creating it with the [`initial`](Self::initial)
    /// permits if it is missing. An existing semaphore keeps its state; `initial` is
    /// then ignored.
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
    /// let s = fileipc::Semaphore::options().initial(2).mode(0o660).open(&path)?;
    /// assert_eq!(s.value()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Semaphore> {
        Ok(Semaphore {
            engine: Engine::Local(LocalSemaphore::open(
                path.as_ref(),
                self.mode,
                self.initial,
            )?),
        })
    }
}
