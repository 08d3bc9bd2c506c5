//! [`SemaphorePermit`]: a permit of a [`Semaphore`] that is released when dropped, and
//! its fence.

use super::Semaphore;
use crate::error::Result;

/// A permit of a [`Semaphore`], released when dropped.
///
/// Made by [`Semaphore::permit`] and its variants. Dropping ignores errors; use
/// [`release`](SemaphorePermit::release) to see them.
#[must_use = "the permit is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    pub(super) sem: &'a Semaphore,
    pub(super) fence: u64,
}

impl SemaphorePermit<'_> {
    /// Releases the permit, reporting errors (dropping the guard ignores them).
    ///
    /// # Errors
    ///
    /// As [`Semaphore::release`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// let p = s.permit_forever()?;
    /// p.release()?;
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(self) -> Result<()> {
        let s = self.sem;
        std::mem::forget(self);
        s.release()
    }

    /// This permit's fencing token: higher than the fence of every permit of this
    /// semaphore taken before it (by any process, and on a semaphore destroyed and made
    /// again at the same path: the counter starts from the wall clock), never reused.
    /// Pass it to the resource the permit guards, which refuses tokens lower than the
    /// highest it has seen ([`SharedData::set_fenced`](crate::SharedData::set_fenced),
    /// or `UPDATE ... WHERE last_fence < $fence`).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The semaphore this permit belongs to.
    pub fn semaphore(&self) -> &Semaphore {
        self.sem
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        let _ = self.sem.release();
    }
}
