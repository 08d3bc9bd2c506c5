//! [`SemaphoreOptions`]: how a [`Semaphore`] is opened (the creation mode, the initial
//! permits), ending in `open`, which builds the handle's engine.

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
    /// The capacity asked for explicitly, if any.
    initial: Option<u32>,
}

impl Default for SemaphoreOptions {
    fn default() -> SemaphoreOptions {
        SemaphoreOptions {
            mode: state::DEFAULT_MODE,
            initial: None,
        }
    }
}

/// What an open does with the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Capacity {
    /// Create with this many permits if missing; an existing semaphore must have it.
    Exactly(u32),
    /// Create with 1 permit if missing; an existing one keeps its capacity.
    Default,
    /// Never create: the semaphore must exist (with any capacity).
    Existing,
}

impl SemaphoreOptions {
    /// The default options: mode `0o600`, no capacity asked for (a semaphore this call
    /// creates gets 1 permit; an existing one keeps its capacity).
    pub fn new() -> SemaphoreOptions {
        SemaphoreOptions::default()
    }

    /// The permission bits the file is created with if it does not exist yet (default
    /// `0o600`, owner only; `0o660` lets a group share it).
    pub fn mode(mut self, mode: u32) -> SemaphoreOptions {
        self.mode = mode & 0o7777;
        self
    }

    /// How many permits the semaphore has: a semaphore this call creates starts with
    /// them, and an existing one must have this capacity (else `open` fails naming both
    /// values). Without it, a created semaphore gets 1 permit and an existing one keeps
    /// its capacity.
    pub fn initial(mut self, permits: u32) -> SemaphoreOptions {
        self.initial = Some(permits);
        self
    }

    /// Opens the semaphore at `path`, creating it with the [`initial`](Self::initial)
    /// permits (1 if none was asked for) if it is missing. An existing semaphore keeps
    /// its state; a capacity asked for with `initial` must be its capacity: a semaphore
    /// created with another one is refused rather than silently used with a capacity
    /// the caller did not ask for. To open a semaphore with whatever capacity it has (or
    /// one whose capacity signalling releases have raised), leave `initial` unset or use
    /// [`open_existing`](SemaphoreOptions::open_existing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be created or opened, [`Error::Symlink`] if a
    /// symbolic link stands at `path`, [`Error::Format`] if the file is not a fileipc
    /// semaphore file, [`Error::Invalid`] if an existing file belongs to another user
    /// (with a private mode) or is writable by group or others beyond the mode asked
    /// for, or if its capacity is not the [`initial`](Self::initial) asked for.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::options().initial(2).mode(0o660).open(&path)?;
    /// assert_eq!(s.value()?, 2);
    /// let shared = fileipc::Semaphore::options().mode(0o660);
    /// assert!(shared.initial(3).open(&path).is_err()); // exists with 2
    /// assert_eq!(shared.open(&path)?.capacity(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Semaphore> {
        let capacity = match self.initial {
            Some(n) => Capacity::Exactly(n),
            None => Capacity::Default,
        };
        self.open_as(path.as_ref(), capacity)
    }

    /// Opens the existing semaphore at `path` with these options and the capacity it
    /// has; never creates anything (a capacity asked for with `initial` is ignored).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `path` if there is no file; otherwise as
    /// [`open`](SemaphoreOptions::open).
    pub fn open_existing(&self, path: impl AsRef<Path>) -> Result<Semaphore> {
        self.open_as(path.as_ref(), Capacity::Existing)
    }

    /// Opens the semaphore the path names, treating its capacity as `capacity` says.
    pub(super) fn open_as(&self, path: &Path, capacity: Capacity) -> Result<Semaphore> {
        let engine = match crate::location::Location::parse(path)? {
            crate::location::Location::Path(p) => Engine::Local(match capacity {
                Capacity::Existing => {
                    state::without_creating(|| LocalSemaphore::open(&p, self.mode, capacity))?
                }
                _ => LocalSemaphore::open(&p, self.mode, capacity)?,
            }),
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(Box::new(super::redis::RedisSemaphore::open(
                    u, capacity,
                )?)));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?} {capacity:?}")
            })?,
        };
        Ok(Semaphore {
            engine,
            last_fence: Default::default(),
        })
    }
}
