//! Fenced writes of [`SharedData`]: [`SharedData::set_fenced`] and
//! [`SharedData::compare_and_swap_fenced`], which refuse a write whose fencing token is
//! lower than the highest one seen for that key (local engine: table `fileipc_fences`;
//! Redis: hash `{p}:fences`).

use std::path::Path;

use serde::Serialize;

use super::sql::{cas_operands, check_key, encode};
use super::{Engine, SharedData};
use crate::error::{Error, Result};

/// A fence as SQLite stores it (a signed 64-bit integer): fences above `i64::MAX` are
/// refused (clock-seeded fences are about 2^60 today).
pub(super) fn as_sql(path: &Path, fence: u64) -> Result<i64> {
    i64::try_from(fence)
        .map_err(|_| Error::invalid(path, format!("fence {fence} is above 2^63 - 1")))
}

impl SharedData {
    /// Stores `value` under `key` unless a write fenced with a *higher* token than
    /// `fence` was made to that key before: `Ok(true)` if written, `Ok(false)` (and
    /// nothing written) if `fence` is stale. The store keeps the highest fence seen per
    /// key (kept across `delete` and `clear`, gone with `destroy`); an equal fence is
    /// accepted, so one holder may write several times.
    ///
    /// This makes the store a resource that checks fencing tokens: take the token from
    /// the lock that guards the work ([`MutexGuard::fence`](crate::MutexGuard::fence),
    /// [`SemaphorePermit::fence`](crate::SemaphorePermit::fence),
    /// [`Claimed::fence`](crate::Claimed::fence),
    /// [`PidFile::generation`](crate::PidFile::generation)) and pass it with every
    /// write; a holder that lost its lock without knowing it (stopped past its lease,
    /// paused by a debugger, or simply slow after a successor took over) is refused
    /// here instead of overwriting its successor's work. Plain writes (`set`,
    /// `update`...) are not checked.
    ///
    /// For a resource outside fileipc, do the same there: keep the highest fence with
    /// the data and make every write conditional on it, in the same atomic step, e.g.
    /// in SQL `UPDATE jobs SET result = $r, last_fence = $fence WHERE id = $id AND
    /// last_fence <= $fence` (0 rows updated: stale, give up), or in a file store a
    /// compare-and-swap on a record that holds the fence.
    ///
    /// # Errors
    ///
    /// As [`set`](SharedData::set); [`Error::Invalid`] for a fence above `i64::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = fileipc::Mutex::open(dir.path().join("lock"))?;
    /// let d = fileipc::SharedData::open(dir.path().join("store"))?;
    /// let old = lock.guard_forever()?.fence(); // a holder that lost the lock since
    /// let g = lock.guard_forever()?;            // its successor
    /// assert!(d.set_fenced("report", &"new", g.fence())?);
    /// assert!(!d.set_fenced("report", &"old", old)?); // refused: stale
    /// assert_eq!(d.get::<String>("report")?.as_deref(), Some("new"));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use = "`false` means the fence was stale and nothing was written"]
    pub fn set_fenced<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        fence: u64,
    ) -> Result<bool> {
        check_key(self.path(), key)?;
        let json = encode(self.path(), key, value)?;
        match &self.engine {
            Engine::Local(e) => e.write_fenced(key, None, &json, fence),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.write_fenced(key, None, &json, fence),
        }
    }

    /// [`compare_and_swap`](SharedData::compare_and_swap) checked as
    /// [`set_fenced`](SharedData::set_fenced): stores `new` if the current value equals
    /// `expected` *and* `fence` is not lower than the highest fence seen for `key`;
    /// `Ok(false)` (nothing written, no fence recorded) if either fails. Tell the two
    /// apart, when it matters, by reading the value.
    ///
    /// # Errors
    ///
    /// As [`compare_and_swap`](SharedData::compare_and_swap) and
    /// [`set_fenced`](SharedData::set_fenced).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let d = fileipc::SharedData::open(dir.path().join("store"))?;
    /// assert!(d.compare_and_swap_fenced("state", None, &"started", 10)?);
    /// assert!(!d.compare_and_swap_fenced("state", Some(&"started"), &"done", 9)?);
    /// assert!(d.compare_and_swap_fenced("state", Some(&"started"), &"done", 11)?);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use = "`false` means the value was not the expected one or the fence was stale, and nothing was written"]
    pub fn compare_and_swap_fenced<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
        fence: u64,
    ) -> Result<bool> {
        let (expected, json) = cas_operands(self.path(), key, expected, new)?;
        match &self.engine {
            Engine::Local(e) => e.write_fenced(key, Some(expected.as_ref()), &json, fence),
            Engine::ReadOnly(e) => Err(e.refuse()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.write_fenced(key, Some(expected.as_ref()), &json, fence),
        }
    }
}
