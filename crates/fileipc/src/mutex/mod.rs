//! A mutual-exclusion lock shared by processes through a file: the public front
//! ([`Mutex`], [`MutexGuard`], [`MutexHolder`]), which dispatches to its engine.
//!
//! The engine is the local file-system one ([`local`]): an `flock` (or, in word mode, an
//! owner id in a lock word) for ownership, a futex doorbell for waiting, and a hand-off
//! word for eventual fairness ([`handoff`]). Its design and the proof that no wake-up is
//! lost are in those files.

mod guard;
mod handoff;
mod local;
mod options;
#[cfg(feature = "redis")]
mod redis;

use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

pub use self::guard::MutexGuard;
use self::local::LocalMutex;
pub use self::options::MutexOptions;

/// Who holds a [`Mutex`], as recorded in its file: see [`Mutex::holder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MutexHolder {
    /// The holder's process ID.
    pub pid: u32,
    /// When that process started (clock ticks since boot on Linux, 0 where unknown), so
    /// that a recycled PID can be told apart.
    pub start_time: u64,
    /// The kernel thread ID of the thread that took the lock.
    pub tid: u32,
}

/// A mutual-exclusion lock between processes (and threads), named by a file path.
///
/// Each handle is one potential holder: two handles on the same path exclude each
/// other, whether they live in different processes or in the same one. Threads that
/// share one handle (it is `Send + Sync`; put it in an `Arc`) also exclude each other:
/// the handle holds the lock on behalf of whichever thread took it, and any of them may
/// unlock it.
///
/// The lock is released when the holder calls [`unlock`](Mutex::unlock), drops its
/// [`MutexGuard`], drops the handle, or dies — the kernel releases the underlying
/// `flock` of a killed process, and waiters notice within 10 ms.
///
/// # With `flock(1)`
///
/// The lock is an exclusive `flock` on the lock file itself, so `flock(1)` (and any
/// program that `flock`s the file) and this mutex exclude each other on the same path.
/// An empty file at the path, as `flock(1)` or `touch` make them, is adopted by
/// [`open`](Mutex::open): the mutex's header is written into it in place (same inode,
/// owner and mode), even while a `flock(1)` holds it. A waiter notices a `flock(1)`
/// holder's release within 10 ms (it rings no doorbell), and [`holder`](Mutex::holder)
/// knows nothing of it. Scripts must open the lock file without truncating it
/// (`flock FILE cmd`, `9>>FILE`, not `9>FILE`): truncating a mapped lock file makes
/// its handles fail with `SIGBUS`.
///
/// A lock file created in *word mode*
/// ([`MutexOptions::flock_compatible`]`(false)`) is not an `flock`: `flock(1)` on it
/// excludes nothing (and an empty file is always adopted in flock mode).
///
/// Do not delete the lock file while the mutex is in use: a process opening the path
/// afterwards gets a new, unrelated lock. A handle must not be used in a child created
/// by `fork` (the child shares the parent's lock).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("my_mutex");
/// use fileipc::Mutex;
///
/// let mutex = Mutex::open(&path)?;
/// {
///     let _guard = mutex.guard_forever()?; // waits as long as it takes
///     println!("in critical section");
/// } // unlocked here
///
/// // With a bound on the wait: check the answer.
/// if mutex.lock_timeout(std::time::Duration::from_millis(1000))? {
///     println!("in critical section");
///     mutex.unlock()?;
/// } else {
///     println!("could not acquire lock");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Mutex {
    engine: Engine,
}

/// The engine behind a [`Mutex`] handle.
#[derive(Debug)]
enum Engine {
    /// The lock file on the local file system.
    Local(LocalMutex),
    /// A key on a Redis server, held under a lease.
    #[cfg(feature = "redis")]
    Redis(Box<self::redis::RedisMutex>),
}

impl Mutex {
    /// Opens the mutex at `path`, creating the lock file (mode `0o600`) if it is
    /// missing, adopting it if it is empty (a `flock(1)` or `touch` lock file: see
    /// [With `flock(1)`](Mutex#with-flock1)). Opening does not lock.
    ///
    /// # Errors
    ///
    /// As [`MutexOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert!(!m.is_locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Mutex> {
        MutexOptions::default().open(path)
    }

    /// Opens the existing mutex at `path`; never creates anything. The same as
    /// [`open`](Mutex::open) otherwise. For queries (is it locked, who holds it) on a
    /// path that may be mistyped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `path` if nothing exists there (or its
    /// directory does not exist); otherwise as [`MutexOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("lock");
    /// let e = fileipc::Mutex::open_existing(&path).unwrap_err();
    /// assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Mutex> {
        MutexOptions::default().open_existing(path)
    }

    /// Options for opening a mutex (the creation mode).
    pub fn options() -> MutexOptions {
        MutexOptions::default()
    }

    /// A new, independent handle on the same path (opened again, with the same
    /// options): it excludes this one like a handle of another process would.
    ///
    /// # Errors
    ///
    /// As [`MutexOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let a = fileipc::Mutex::open(&path)?;
    /// let b = a.try_clone()?;
    /// assert!(a.try_lock()?);
    /// assert!(!b.try_lock()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<Mutex> {
        match &self.engine {
            Engine::Local(e) => Ok(Mutex {
                engine: Engine::Local(e.try_clone()?),
            }),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Ok(Mutex {
                engine: Engine::Redis(Box::new(e.try_clone()?)),
            }),
        }
    }

    /// Removes the lock file, if the file at the path is still the one this handle
    /// opened (a file that replaced it is left alone; nothing there is not an error).
    ///
    /// It neither waits for the lock nor takes it from anyone: the handles that have the
    /// removed file open (this one included) keep working on it, a live holder keeps
    /// holding it and its waiters keep waiting for it, until they are dropped; a handle
    /// opened at the path afterwards creates a new mutex, which does not exclude them.
    /// So remove a mutex once the processes using it are done (`fileipc rm` does this
    /// from the shell, [`Namespace`](crate::Namespace) for a whole directory).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be removed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// m.destroy()?;
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn destroy(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.destroy(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.destroy(),
        }
    }

    /// Whether `flock(1)` on the lock file and this mutex exclude each other: `true` for
    /// a file in flock mode (the default), `false` in word mode (see
    /// [`MutexOptions::flock_compatible`]) and on Redis.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = fileipc::Mutex::open(dir.path().join("lock"))?;
    /// assert!(m.is_flock_compatible());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_flock_compatible(&self) -> bool {
        match &self.engine {
            Engine::Local(e) => e.is_flock_compatible(),
            #[cfg(feature = "redis")]
            Engine::Redis(_) => false,
        }
    }

    /// The path of the lock file.
    pub fn path(&self) -> &Path {
        match &self.engine {
            Engine::Local(e) => e.path(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        }
    }

    /// Takes the lock, waiting at most [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)
    /// (5 s). Returns `false` if it is still held by someone else then.
    ///
    /// A handle that already holds the lock waits too (the lock is not re-entrant), and
    /// returns `false` at the timeout unless another thread of it unlocks meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a system call on the lock file fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert!(m.lock()?);
    /// m.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means the lock was not taken (the wait timed out): the critical section must not run; `guard_forever` waits as long as it takes"]
    pub fn lock(&self) -> Result<bool> {
        self.lock_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Takes the lock, waiting at most `timeout`; `false` if it could not. A timeout too
    /// large to represent waits forever.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// use std::time::Duration;
    /// let a = fileipc::Mutex::open(&path)?;
    /// let b = fileipc::Mutex::open(&path)?;
    /// assert!(a.lock_timeout(Duration::from_millis(100))?);
    /// assert!(!b.lock_timeout(Duration::from_millis(20))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means the lock was not taken (the wait timed out): the critical section must not run; `guard_forever` waits as long as it takes"]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.lock_within(timeout),
            #[cfg(feature = "redis")]
            Engine::Redis(_) => self.lock_until(crate::deadline_after(timeout)),
        }
    }

    /// Takes the lock, waiting until `deadline` at most; `false` if it could not.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// use std::time::{Duration, Instant};
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert!(m.lock_deadline(Instant::now() + Duration::from_secs(1))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means the lock was not taken (the wait timed out): the critical section must not run; `guard_forever` waits as long as it takes"]
    pub fn lock_deadline(&self, deadline: Instant) -> Result<bool> {
        self.lock_until(Some(deadline))
    }

    /// Takes the lock, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// m.lock_forever()?;
    /// assert!(m.is_locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn lock_forever(&self) -> Result<()> {
        self.lock_until(None).map(drop)
    }

    /// Takes the lock if it is free now; `false` otherwise, without waiting. While a
    /// hand-off to a waiting process is pending (for at most 10 ms after an unlock),
    /// the lock counts as taken. In word mode a lock whose holder died counts as free
    /// (a failed attempt asks the kernel whether the holder lives).
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert!(m.try_lock()?);
    /// assert!(!m.try_lock()?); // not re-entrant
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means the lock was not taken (the wait timed out): the critical section must not run; `guard_forever` waits as long as it takes"]
    pub fn try_lock(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.try_lock(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.try_lock(),
        }
    }

    /// Releases the lock this handle holds.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if this handle does not hold the lock (never locked, already
    /// unlocked); [`Error::Io`] if releasing the file lock fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert!(m.unlock().is_err());
    /// assert!(m.try_lock()?);
    /// m.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn unlock(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.unlock(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.unlock(),
        }
    }

    /// Lets the programs this process runs from now on inherit the descriptor that holds
    /// the lock (its close-on-exec flag is cleared), and returns its number. The mutex
    /// then stays locked while this process or any program that kept the descriptor
    /// runs, even if this process is killed, as with `flock(1)`; [`unlock`](Mutex::unlock)
    /// (or dropping the handle) then leaves the lock to them: it is free once this handle
    /// is dropped and the last of them has exited (waiters notice within 10 ms). A
    /// program that must not keep
    /// the lock closes the descriptor (in a shell: `exec {fd}>&-` with the number this
    /// returned, which `fileipc mutex run` passes as `FILEIPC_LOCK_FD`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if this handle does not hold the lock; [`Error::Io`] if the
    /// descriptor's flags cannot be changed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let m = fileipc::Mutex::open(dir.path().join("lock"))?;
    /// m.lock_forever()?;
    /// let fd = m.share_with_children()?;
    /// let status = std::process::Command::new("true").status()?; // inherits `fd`
    /// assert!(status.success() && fd > 2);
    /// m.unlock()?;
    /// drop(m); // the child is gone: the lock is free now
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn share_with_children(&self) -> Result<std::os::fd::RawFd> {
        match &self.engine {
            Engine::Local(e) => e.share_with_children(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.share_with_children(),
        }
    }

    /// Whether the mutex is held by anyone (this handle included) right now.
    ///
    /// If this handle holds the lock the answer is immediate; otherwise a non-blocking
    /// shared `flock` probe is made (the file's holder record is not trusted alone: a
    /// `flock(1)` holder writes none), which fails at once without taking anything
    /// when someone holds the lock, and otherwise holds a shared lock for a few
    /// microseconds, during which a concurrent `try_lock` may return `false` (waiters
    /// are rung after it). A holder of a *shared* `flock` (`flock -s`) is not seen.
    /// Like any such query the answer may be stale by the time it is used.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the probe fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let a = fileipc::Mutex::open(&path)?;
    /// let b = fileipc::Mutex::open(&path)?;
    /// assert!(!b.is_locked()?);
    /// let _guard = a.guard_forever()?;
    /// assert!(b.is_locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.is_locked(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.is_locked(),
        }
    }

    /// Who holds the mutex according to its file, `None` if nobody does. Checked like
    /// [`is_locked`](Mutex::is_locked): a holder that died is not reported.
    ///
    /// # Errors
    ///
    /// As [`is_locked`](Mutex::is_locked).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert_eq!(m.holder()?, None);
    /// let _guard = m.guard_forever()?;
    /// assert_eq!(m.holder()?.map(|h| h.pid), Some(std::process::id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn holder(&self) -> Result<Option<MutexHolder>> {
        match &self.engine {
            Engine::Local(e) => e.holder(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.holder(),
        }
    }

    /// Whether the lock this handle holds was lost before it was released: on Redis,
    /// its lease ran out (the holder stopped renewing it for longer than the lease, e.g.
    /// a stopped process or a cut link), so someone else may hold it now. Always `false`
    /// on the local engine, where a live holder never loses a lock, and when this handle
    /// holds nothing. A lost lock's [`unlock`](Mutex::unlock) fails with
    /// [`Error::LeaseLost`].
    pub fn is_lost(&self) -> bool {
        match &self.engine {
            Engine::Local(_) => false,
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.is_lost(),
        }
    }

    /// How many lockers (threads of any process) are registered as waiting for the
    /// mutex, for diagnostics. Exact for up to 31 waiters (those beyond wait without a
    /// slot and are not counted): a waiter killed while waiting stops counting at the
    /// next call of this method or the next unlock, whichever comes first.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert_eq!(m.waiting(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn waiting(&self) -> u32 {
        match &self.engine {
            Engine::Local(e) => e.waiting(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.waiting(),
        }
    }

    /// Takes the lock like [`lock`](Mutex::lock) and returns a guard that releases it
    /// when dropped; `None` at the timeout.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// if let Some(guard) = m.guard()? {
    ///     // critical section
    ///     guard.unlock()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means the lock was not taken; a guard dropped at once unlocks at once"]
    pub fn guard(&self) -> Result<Option<MutexGuard<'_>>> {
        self.guard_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// [`lock_timeout`](Mutex::lock_timeout) returning a guard; `None` at the timeout.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// let g = m.guard_timeout(std::time::Duration::from_secs(1))?;
    /// assert!(g.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means the lock was not taken; a guard dropped at once unlocks at once"]
    pub fn guard_timeout(&self, timeout: Duration) -> Result<Option<MutexGuard<'_>>> {
        Ok(self.lock_timeout(timeout)?.then(|| self.new_guard()))
    }

    /// [`lock_deadline`](Mutex::lock_deadline) returning a guard; `None` at the deadline.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    /// assert!(m.guard_deadline(deadline)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means the lock was not taken; a guard dropped at once unlocks at once"]
    pub fn guard_deadline(&self, deadline: Instant) -> Result<Option<MutexGuard<'_>>> {
        Ok(self.lock_deadline(deadline)?.then(|| self.new_guard()))
    }

    /// [`try_lock`](Mutex::try_lock) returning a guard; `None` if the lock is taken.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// let g = m.try_guard()?.expect("free");
    /// assert!(m.try_guard()?.is_none());
    /// drop(g);
    /// assert!(m.try_guard()?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means the lock was not taken; a guard dropped at once unlocks at once"]
    pub fn try_guard(&self) -> Result<Option<MutexGuard<'_>>> {
        Ok(self.try_lock()?.then(|| self.new_guard()))
    }

    /// [`lock_forever`](Mutex::lock_forever) returning a guard.
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// let g = m.guard_forever()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn guard_forever(&self) -> Result<MutexGuard<'_>> {
        self.lock_forever()?;
        Ok(self.new_guard())
    }

    /// The fencing token of the grant this handle holds, `None` when it holds nothing
    /// (for the bool API; a [`MutexGuard`] carries its own: [`MutexGuard::fence`]).
    ///
    /// Every grant of the lock gets a number higher than every grant before it, by any
    /// process, also on a mutex destroyed and made again at the same name: the counter
    /// starts from the clock (wall clock in ns on files, Redis server time in us).
    /// Pass it to the resource the lock guards, which refuses tokens lower than the
    /// highest it has seen ([`SharedData::set_fenced`](crate::SharedData::set_fenced),
    /// or `UPDATE ... WHERE last_fence < $fence` in a database): a holder that lost
    /// the lock without knowing it (stopped past its Redis lease) is refused there.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("lock");
    /// let m = fileipc::Mutex::open(&path)?;
    /// assert_eq!(m.fence(), None);
    /// let first = m.guard_forever()?.fence();
    /// assert!(m.lock()?);
    /// assert!(m.fence().unwrap() > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fence(&self) -> Option<u64> {
        match &self.engine {
            Engine::Local(e) => e.fence(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.fence(),
        }
    }

    /// The last fence granted on this mutex by any process (0 if none was): what
    /// `fileipc stat` shows. The next grant gets a higher one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) (or a Redis error) if it cannot be read.
    pub fn last_granted_fence(&self) -> Result<u64> {
        match &self.engine {
            Engine::Local(e) => Ok(e.last_fence()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.last_fence(),
        }
    }

    /// The guard of the grant this handle just took.
    fn new_guard(&self) -> MutexGuard<'_> {
        MutexGuard {
            mutex: self,
            fence: self.fence().unwrap_or_default(),
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: without limit); `false` if it
    /// could not.
    #[inline]
    fn lock_until(&self, deadline: Option<Instant>) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.lock_until(deadline),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.lock_until(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutex_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Mutex>();
        check::<MutexGuard<'_>>();
    }

    /// Regression: a guard built eagerly for a failed attempt and dropped at once
    /// unlocked the lock the handle held.
    #[test]
    fn failed_try_guard_does_not_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mutex::open(dir.path().join("m")).unwrap();
        let g = m.try_guard().unwrap().unwrap();
        assert!(m.try_guard().unwrap().is_none());
        assert!(m.guard_timeout(Duration::from_millis(1)).unwrap().is_none());
        assert!(m.is_locked().unwrap());
        g.unlock().unwrap();
    }
}
