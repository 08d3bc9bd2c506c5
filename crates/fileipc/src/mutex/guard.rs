//! [`MutexGuard`]: a grant of a [`Mutex`] that unlocks when dropped, and its fence.

use super::Mutex;
use crate::error::Result;

/// Holds a [`Mutex`] locked; unlocks it when dropped.
///
/// Made by [`Mutex::guard`] and its variants. Dropping ignores errors; use
/// [`unlock`](MutexGuard::unlock) to see them.
#[must_use = "the mutex is unlocked as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct MutexGuard<'a> {
    pub(super) mutex: &'a Mutex,
    pub(super) fence: u64,
}

impl MutexGuard<'_> {
    /// Unlocks the mutex, reporting errors (dropping the guard ignores them).
    ///
    /// # Errors
    ///
    /// As [`Mutex::unlock`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// let g = m.guard_forever()?;
    /// g.unlock()?;
    /// assert!(!m.is_locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(self) -> Result<()> {
        let m = self.mutex;
        std::mem::forget(self);
        m.unlock()
    }

    /// Whether the lock was lost before this guard released it (see
    /// [`Mutex::is_lost`]): check it before an action that needs exclusion.
    pub fn is_lost(&self) -> bool {
        self.mutex.is_lost()
    }

    /// This grant's fencing token (see [`Mutex::fence`]): higher than every earlier
    /// grant's, never reused.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &Mutex {
        self.mutex
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        let _ = self.mutex.unlock();
    }
}
