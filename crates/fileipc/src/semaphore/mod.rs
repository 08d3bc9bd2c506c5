//! A counting semaphore shared by processes through a file: the public front
//! ([`Semaphore`], [`SemaphorePermit`], [`SemaphoreHolder`]), which dispatches to its
//! engine.
//!
//! The engine is the local file-system one ([`local`]: the critical section, the
//! acquire and release paths, waiting) over the semaphore file's tables ([`table`]: who
//! holds and who waits, and how a permit moves between them). Their design and the
//! proofs are in those files.

mod local;
mod options;
mod permit;
#[cfg(feature = "redis")]
mod redis;
mod table;

use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

use self::local::{LocalSemaphore, Patience};
pub use self::options::SemaphoreOptions;
pub use self::permit::SemaphorePermit;

/// A counting semaphore between processes, named by a file path.
///
/// [`acquire`](Semaphore::acquire) takes a permit, waiting while none is left;
/// [`release`](Semaphore::release) returns one. Permits belong to the calling
/// *process*, not to the handle or thread: any thread may release a permit another
/// thread of the process acquired, dropping a handle does not return permits, and a
/// process that dies gets its permits returned for it (noticed by waiters within about
/// 10 ms, and by every [`value`](Semaphore::value)). A release by a process that holds
/// no permit adds one to the semaphore (signalling). Up to 504 processes can hold
/// permits at the same time (248 in the holder table, 256 more in waiter entries; threads
/// of one process count once); beyond that a taker waits for a holder to return a permit,
/// as if none were free.
///
/// Taking a permit goes through a short critical section shared by all processes (a
/// robust lock on a word of the file: one atomic operation to enter and one to leave, no
/// system call; a process killed inside it loses it to the next caller, which first
/// returns the dead processes' permits). A process stopped inside it (`SIGSTOP`, a
/// debugger) delays the others only within their bounds: the `acquire` family waits for it
/// until its deadline, [`try_acquire`](Semaphore::try_acquire) and
/// [`value`](Semaphore::value) at most 10 ms, and a release of a permit the process
/// holds at most 10 ms too (it enters only to wake a waiter that is about to sleep).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("my_sem");
/// use fileipc::Semaphore;
///
/// let sem = Semaphore::open(&path, 3)?;
/// assert_eq!(sem.value()?, 3);
/// {
///     let _permit = sem.permit_forever()?; // waits as long as it takes
///     assert_eq!(sem.value()?, 2);
///     if sem.try_acquire()? {
///         println!("got a second permit");
///         sem.release()?;
///     }
/// } // released here
/// assert_eq!(sem.value()?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    engine: Engine,
    /// The fence of the latest permit taken through this handle, 0 before the first.
    last_fence: std::sync::atomic::AtomicU64,
}

/// The engine behind a [`Semaphore`] handle.
#[derive(Debug)]
enum Engine {
    /// The semaphore file on the local file system.
    Local(LocalSemaphore),
    /// Counters and leased permits on a Redis server.
    #[cfg(feature = "redis")]
    Redis(Box<self::redis::RedisSemaphore>),
}

impl Semaphore {
    /// Opens the semaphore at `path`, creating it (mode `0o600`) with `initial`
    /// permits if it is missing. An existing semaphore keeps its state.
    ///
    /// # Errors
    ///
    /// As [`SemaphoreOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let a = fileipc::Semaphore::open(&path, 3)?;
    /// let b = fileipc::Semaphore::open(&path, 3)?; // the same semaphore
    /// assert_eq!(b.value()?, 3);
    /// // Created with 3: asking for 10 is an error naming both values.
    /// let e = fileipc::Semaphore::open(&path, 10).unwrap_err();
    /// assert!(e.to_string().contains("capacity 3, not the 10"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, initial: u32) -> Result<Semaphore> {
        SemaphoreOptions::new().initial(initial).open(path)
    }

    /// Opens the existing semaphore at `path` with the capacity it has; never creates
    /// anything. For queries on a path that may be mistyped, and for a semaphore whose
    /// capacity signalling releases have raised.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `path` if nothing exists there (or its
    /// directory does not exist); otherwise as [`SemaphoreOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("sem");
    /// let e = fileipc::Semaphore::open_existing(&path).unwrap_err();
    /// assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    /// fileipc::Semaphore::open(&path, 4)?;
    /// assert_eq!(fileipc::Semaphore::open_existing(&path)?.capacity(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Semaphore> {
        SemaphoreOptions::default().open_existing(path)
    }

    /// The capacity stored in the file: the `initial` value it was created with, plus
    /// every release made by a process holding no permit (a signalling release). With
    /// no permit held, [`value`](Semaphore::value) equals it. On Redis, read from the
    /// server (the one read at open if the server cannot be reached now).
    pub fn capacity(&self) -> u32 {
        match &self.engine {
            Engine::Local(e) => e.capacity(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.capacity(),
        }
    }

    /// Options for opening a semaphore (the creation mode, the initial permits).
    pub fn options() -> SemaphoreOptions {
        SemaphoreOptions::default()
    }

    /// A new handle on the same path (opened again, with the same options). Permits are
    /// the process's, so it shares them with this one.
    ///
    /// # Errors
    ///
    /// As [`SemaphoreOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let a = fileipc::Semaphore::open(&path, 1)?;
    /// let b = a.try_clone()?;
    /// assert!(a.try_acquire()?);
    /// assert!(!b.try_acquire()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<Semaphore> {
        match &self.engine {
            Engine::Local(e) => Ok(Semaphore {
                last_fence: Default::default(),
                engine: Engine::Local(e.try_clone()?),
            }),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Ok(Semaphore {
                last_fence: Default::default(),
                engine: Engine::Redis(Box::new(e.try_clone()?)),
            }),
        }
    }

    /// Removes the semaphore file, if the file at the path is still the one this handle
    /// opened, without waiting: as [`Mutex::destroy`](crate::Mutex::destroy), the handles
    /// that have it open keep their permits and keep working on the removed file; a handle
    /// opened at the path afterwards creates a new semaphore.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be removed.
    pub fn destroy(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.destroy(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.destroy(),
        }
    }

    /// The path of the semaphore file.
    pub fn path(&self) -> &Path {
        match &self.engine {
            Engine::Local(e) => e.path(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        }
    }

    /// Takes a permit, waiting at most [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)
    /// (5 s); `false` if none became free.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a system call on the file fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// assert!(s.acquire()?);
    /// s.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means no permit was taken (the wait timed out); `permit_forever` waits as long as it takes"]
    pub fn acquire(&self) -> Result<bool> {
        self.acquire_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Takes a permit, waiting at most `timeout` (for a free permit, and for the critical
    /// section while another process is stopped inside it); `false` if none became free.
    /// A timeout too large to represent waits forever.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// use std::time::Duration;
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// assert!(s.acquire_timeout(Duration::from_millis(100))?);
    /// assert!(!s.acquire_timeout(Duration::from_millis(20))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means no permit was taken (the wait timed out); `permit_forever` waits as long as it takes"]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(self.grant(Patience::For(timeout))?.is_some())
    }

    /// Takes a permit, waiting until `deadline` at most; `false` if none became free.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// use std::time::{Duration, Instant};
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// assert!(s.acquire_deadline(Instant::now() + Duration::from_secs(1))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means no permit was taken (the wait timed out); `permit_forever` waits as long as it takes"]
    pub fn acquire_deadline(&self, deadline: Instant) -> Result<bool> {
        Ok(self.grant(Patience::Until(Some(deadline)))?.is_some())
    }

    /// Takes a permit, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// s.acquire_forever()?;
    /// assert_eq!(s.value()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn acquire_forever(&self) -> Result<()> {
        self.grant(Patience::Until(None)).map(drop)
    }

    /// Takes a permit if one is free now; `false` otherwise. When none is free, first
    /// returns the permits of holders that died.
    ///
    /// Waits at most 10 ms for the critical section (see [`Semaphore`]), then returns
    /// `false`: a process stopped inside it keeps every permit from being taken.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// assert!(s.try_acquire()?);
    /// assert!(!s.try_acquire()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "`false` means no permit was taken (the wait timed out); `permit_forever` waits as long as it takes"]
    pub fn try_acquire(&self) -> Result<bool> {
        Ok(self.try_grant()?.is_some())
    }

    /// The fence of the latest permit taken through this handle (by `acquire`, `permit`
    /// or their variants, from any thread), `None` before the first: for the bool API;
    /// a [`SemaphorePermit`] carries its own ([`SemaphorePermit::fence`]). It stays
    /// readable after the permit is released.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 2)?;
    /// assert_eq!(s.last_fence(), None);
    /// assert!(s.acquire()?);
    /// let first = s.last_fence().unwrap();
    /// let p = s.permit_forever()?;
    /// assert!(p.fence() > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_fence(&self) -> Option<u64> {
        let f = self.last_fence.load(std::sync::atomic::Ordering::Relaxed);
        (f != 0).then_some(f)
    }

    /// One attempt; the fence of the permit taken.
    fn try_grant(&self) -> Result<Option<u64>> {
        let f = match &self.engine {
            Engine::Local(e) => e.try_acquire()?,
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.try_acquire()?,
        };
        Ok(self.note(f))
    }

    /// Records the fence of a permit just taken as the handle's latest.
    fn note(&self, f: Option<u64>) -> Option<u64> {
        if let Some(f) = f {
            self.last_fence
                .fetch_max(f, std::sync::atomic::Ordering::Relaxed);
        }
        f
    }

    /// The last fence granted on this semaphore by any process (0 if none was): what
    /// `fileipc stat` shows. The next grant gets a higher one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) (or a Redis error) if it cannot be read.
    pub fn last_granted_fence(&self) -> Result<u64> {
        match &self.engine {
            Engine::Local(e) => Ok(e.last_granted_fence()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.last_granted_fence(),
        }
    }

    /// Returns a permit: one this process holds if it holds any, otherwise adds one to
    /// the semaphore (so a process can signal another). Wakes a waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if the process holds no permit and the value would pass
    /// `u32::MAX`; [`Error::Io`] if a system call on the file fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 0)?;
    /// s.release()?; // signalling: nobody held a permit
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.release(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.release(),
        }
    }

    /// Lets the programs this process runs from now on inherit the descriptor that keeps
    /// this process's ownership in the semaphore alive (its close-on-exec flag is
    /// cleared), and returns its number. The permits this process holds then stay held
    /// while it or any program that kept the descriptor runs, even if this process is
    /// killed, as with `flock(1)`; they come back once the last of them is gone (noticed
    /// by waiters within about 10 ms). A [`release`](Semaphore::release) by this process
    /// still returns a permit at once. A program that must not keep the permits held
    /// closes the descriptor (in a shell: `exec {fd}>&-` with the number this returned,
    /// which `fileipc sem run` passes as `FILEIPC_LOCK_FD`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a handle inherited across `fork`; [`Error::Io`] if the
    /// descriptor's flags cannot be changed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let s = fileipc::Semaphore::open(dir.path().join("encoders"), 4)?;
    /// s.acquire_forever()?;
    /// let fd = s.share_with_children()?;
    /// let status = std::process::Command::new("true").status()?; // inherits `fd`
    /// assert!(status.success() && fd > 2);
    /// s.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn share_with_children(&self) -> Result<std::os::fd::RawFd> {
        match &self.engine {
            Engine::Local(e) => e.share_with_children(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.share_with_children(),
        }
    }

    /// Turns one permit the calling process holds into a permit no process holds: it
    /// stays taken after this process exits, until some process calls
    /// [`release`](Semaphore::release). This is what a shell script needs when one
    /// command takes a permit and a later one gives it back (`fileipc sem acquire`).
    ///
    /// Returns `false` (and changes nothing) if the process holds no permit. If the
    /// process dies during the call, the permit is returned as for any dead holder.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a system call on the file fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 2)?;
    /// assert!(s.try_acquire()?);
    /// assert!(s.detach()?);
    /// assert_eq!((s.held()?, s.value()?), (0, 1));
    /// s.release()?; // any process may give it back
    /// assert_eq!(s.value()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`false` means this handle held no permit, and nothing was detached"]
    pub fn detach(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.detach(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.detach(),
        }
    }

    /// The processes holding permits now, as recorded in the holder table (permits taken
    /// with [`detach`](Semaphore::detach) belong to no process and are not listed). A
    /// holder listed with `alive: false` died; its permits return at the next
    /// [`value`](Semaphore::value) or wait.
    ///
    /// # Errors
    ///
    /// None at present; the `Result` leaves room for checks of the file.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 3)?;
    /// s.acquire_forever()?;
    /// let h = s.holders()?;
    /// assert_eq!((h[0].pid, h[0].permits, h[0].alive), (std::process::id(), 1, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn holders(&self) -> Result<Vec<SemaphoreHolder>> {
        match &self.engine {
            Engine::Local(e) => e.holders(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.holders(),
        }
    }

    /// The number of permits free now, after returning those of holders that died.
    ///
    /// If another process stays in the critical section (see [`Semaphore`]) for 10 ms,
    /// returns the value read from the file without it: the permits of holders that died
    /// are counted as free, but not returned (no permit can be taken meanwhile anyway).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a system call on the file fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 3)?;
    /// assert_eq!(s.value()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn value(&self) -> Result<u32> {
        match &self.engine {
            Engine::Local(e) => e.value(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.value(),
        }
    }

    /// How many permits the calling process holds (through any handle or thread).
    ///
    /// # Errors
    ///
    /// None at present; the `Result` leaves room for checks of the file.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 3)?;
    /// s.acquire_forever()?;
    /// s.acquire_forever()?;
    /// assert_eq!(s.held()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn held(&self) -> Result<u32> {
        match &self.engine {
            Engine::Local(e) => e.held(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.held(),
        }
    }

    /// How many threads (of any process) wait in the semaphore's queue of waiter
    /// entries, for diagnostics: exact for live waiters (a waiter killed while waiting
    /// stops counting at once: its owner id is dead), up to the 256 entries the file
    /// holds (waiters beyond them wait uncounted).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 3)?;
    /// assert_eq!(s.waiting(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn waiting(&self) -> u32 {
        match &self.engine {
            Engine::Local(e) => e.waiting(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.waiting(),
        }
    }

    /// [`acquire`](Semaphore::acquire) returning a permit that is released when
    /// dropped; `None` at the timeout.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// if let Some(permit) = s.permit()? {
    ///     assert_eq!(s.value()?, 0);
    ///     permit.release()?;
    /// }
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means no permit was taken; a permit dropped at once is released at once"]
    pub fn permit(&self) -> Result<Option<SemaphorePermit<'_>>> {
        self.permit_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// [`acquire_timeout`](Semaphore::acquire_timeout) returning a permit guard.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// let p = s.permit_timeout(std::time::Duration::from_secs(1))?;
    /// assert!(p.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means no permit was taken; a permit dropped at once is released at once"]
    pub fn permit_timeout(&self, timeout: Duration) -> Result<Option<SemaphorePermit<'_>>> {
        Ok(self
            .grant(Patience::For(timeout))?
            .map(|fence| SemaphorePermit { sem: self, fence }))
    }

    /// [`acquire_deadline`](Semaphore::acquire_deadline) returning a permit guard.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    /// assert!(s.permit_deadline(deadline)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means no permit was taken; a permit dropped at once is released at once"]
    pub fn permit_deadline(&self, deadline: Instant) -> Result<Option<SemaphorePermit<'_>>> {
        Ok(self
            .grant(Patience::Until(Some(deadline)))?
            .map(|fence| SemaphorePermit { sem: self, fence }))
    }

    /// [`try_acquire`](Semaphore::try_acquire) returning a permit guard.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// let p = s.try_permit()?.expect("one is free");
    /// assert!(s.try_permit()?.is_none());
    /// drop(p);
    /// assert_eq!(s.value()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "`None` means no permit was taken; a permit dropped at once is released at once"]
    pub fn try_permit(&self) -> Result<Option<SemaphorePermit<'_>>> {
        Ok(self
            .try_grant()?
            .map(|fence| SemaphorePermit { sem: self, fence }))
    }

    /// [`acquire_forever`](Semaphore::acquire_forever) returning a permit guard.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("sem");
    /// let s = fileipc::Semaphore::open(&path, 1)?;
    /// let p = s.permit_forever()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn permit_forever(&self) -> Result<SemaphorePermit<'_>> {
        let fence = self.grant(Patience::Until(None))?.unwrap_or_default();
        Ok(SemaphorePermit { sem: self, fence })
    }

    /// Takes a permit, waiting as long as `patience` allows (a timeout counts from the
    /// first moment the call has to wait: the uncontended path reads no clock); its
    /// fence, or `None` if none became free.
    #[inline]
    fn grant(&self, patience: Patience) -> Result<Option<u64>> {
        let f = match &self.engine {
            Engine::Local(e) => e.acquire(patience)?,
            #[cfg(feature = "redis")]
            Engine::Redis(e) => {
                let mut patience = patience;
                e.acquire_until(patience.deadline())?
            }
        };
        Ok(self.note(f))
    }
}

/// A process holding permits of a [`Semaphore`] (see [`Semaphore::holders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreHolder {
    /// The holder's process ID.
    pub pid: u32,
    /// When that process started (clock ticks since boot on Linux, 0 where unknown).
    pub start_time: u64,
    /// How many permits it holds.
    pub permits: u32,
    /// Whether that very process (PID and start time) is still running.
    pub alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn semaphore_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Semaphore>();
        check::<SemaphorePermit<'_>>();
    }

    /// Regression: a permit built eagerly for a failed attempt and dropped at once
    /// released a permit the process held.
    #[test]
    fn failed_try_permit_does_not_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 1).unwrap();
        let p = s.try_permit().unwrap().unwrap();
        assert!(s.try_permit().unwrap().is_none());
        assert!(
            s.permit_timeout(Duration::from_millis(1))
                .unwrap()
                .is_none()
        );
        assert_eq!(s.held().unwrap(), 1);
        assert_eq!(s.value().unwrap(), 0);
        p.release().unwrap();
        assert_eq!(s.value().unwrap(), 1);
    }

    #[test]
    fn threads_share_the_process_permits() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Semaphore::open(dir.path().join("s"), 2).unwrap());
        let inside = std::sync::Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, inside) = (s.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        let p = s.permit_forever().unwrap();
                        assert!(inside.fetch_add(1, Ordering::SeqCst) < 2);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        p.release().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.value().unwrap(), 2);
        assert_eq!(s.held().unwrap(), 0);
        assert_eq!(s.waiting(), 0);
    }
}
