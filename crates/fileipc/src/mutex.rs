//! A mutual-exclusion lock shared by processes through a file.
//!
//! # Design
//!
//! *Ownership* is an exclusive `flock` on the handle's own open file description of the
//! lock file. The kernel releases it the moment the holder's last descriptor closes,
//! including when the holder is killed, so a dead holder never keeps the lock.
//!
//! *Waiting* happens in the kernel on a futex "doorbell" in the file's shared mapping:
//! a sequence number that every unlock increments, plus a count of waiters so that an
//! unlock makes the wake-up system call only when someone waits. A holder killed with
//! `SIGKILL` cannot ring the doorbell, so waiters sleep in bounded slices of
//! [`SLICE`] (10 ms) and retry the `flock` after each: the death of a holder is noticed
//! within one slice. Unlocks by live holders wake a waiter at once.
//!
//! *Fairness.* `flock` alone lets a process that unlocks and immediately locks again
//! starve the waiters (it is running, they still have to be scheduled). So an unlock
//! that sees waiters posts a *hand-off* in the mapping: a mark naming the doorbell
//! sequence number at the unlock and a deadline [`HANDOFF_TTL`] (10 ms) ahead. While it
//! is pending, only waiters that registered before it was posted may take the lock;
//! anyone else queues up behind them. The taker clears the mark. A hand-off that nobody
//! takes (the woken waiter died or was stopped) expires at its deadline, one that no
//! process sleeps for is withdrawn at once, and a waiter that gives up while it could
//! take one withdraws it and rings the doorbell, so nothing stalls on it.
//!
//! The mapping also records the holder (PID, process start time, thread ID) for
//! diagnostics: [`Mutex::holder`].

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, IoResultExt, Result};
use crate::state::{self, HEADER_LEN, Kind, Layout, StateFile};
use crate::sys::{self, ProcessId};

/// How long a waiter sleeps before it retries the lock on its own, in case the holder
/// died without ringing the doorbell: the bound on noticing a killed holder.
pub(crate) const SLICE: Duration = Duration::from_millis(10);

/// How long a posted hand-off stays reserved for the waiters it was posted for, in
/// milliseconds.
pub(crate) const HANDOFF_TTL_MS: u32 = 10;

/// [`HANDOFF_TTL_MS`] as a duration, for the documentation.
#[allow(dead_code)]
pub(crate) const HANDOFF_TTL: Duration = Duration::from_millis(HANDOFF_TTL_MS as u64);

// The layout of a mutex file (version 1), offsets from the start of the file; see
// docs/FORMAT.md.
const VERSION: u32 = 1;
const SEQ: usize = HEADER_LEN; // u32 doorbell: incremented by every unlock
const WAITERS: usize = HEADER_LEN + 4; // u32 number of registered waiters
const OWNER_PID: usize = HEADER_LEN + 8; // u32 holder's PID, 0 when not held
const OWNER_TID: usize = HEADER_LEN + 12; // u32 holder's thread ID
const OWNER_START: usize = HEADER_LEN + 16; // u64 holder's process start time
const HANDOFF: usize = HEADER_LEN + 24; // u64 pending hand-off, 0 when none
const LEN: usize = HEADER_LEN + 64;

const LAYOUT: Layout = Layout {
    kind: Kind::Mutex,
    version: VERSION,
    len: LEN,
};

// States of `Mutex::held`, the in-process half of the lock.
const FREE: u32 = 0;
const HELD: u32 = 1;
/// Transient: an unlock or a probe is in progress on this handle.
const BUSY: u32 = 2;

// --- The hand-off word (pure logic, unit-tested below).
//
// 0 = no hand-off. Otherwise bits 63..32 hold the doorbell sequence number read by the
// unlocker before it rang, bit 31 is set, and bits 30..0 hold the deadline in
// milliseconds of the shared monotonic clock, modulo 2^31.

const MS_MASK: u32 = 0x7fff_ffff;

fn handoff_encode(seq: u32, deadline_ms: u32) -> u64 {
    (u64::from(seq) << 32) | 0x8000_0000 | u64::from(deadline_ms & MS_MASK)
}

fn handoff_seq(h: u64) -> u32 {
    (h >> 32) as u32
}

/// Whether the hand-off `h` has expired at `now_ms` (same clock, any wrap).
///
/// A hand-off is posted with a deadline [`HANDOFF_TTL_MS`] + 1 ms ahead, so a deadline
/// reached, in the past, or further ahead than that (plus a margin for processes that
/// read the clock a moment apart) has expired: a garbage word, or one left by a machine
/// that crashed and rebooted (the monotonic clock restarts), bars nobody for long.
fn handoff_expired(h: u64, now_ms: u32) -> bool {
    let deadline = (h as u32) & MS_MASK;
    let ahead = deadline.wrapping_sub(now_ms) & MS_MASK;
    ahead == 0 || ahead > 2 * HANDOFF_TTL_MS + 1
}

/// Whether a waiter that registered when the doorbell read `reg` may take hand-off `h`:
/// it registered before the hand-off was posted (sequence numbers compared modulo 2^32).
fn handoff_eligible(reg: u32, h: u64) -> bool {
    handoff_seq(h).wrapping_sub(reg) as i32 >= 0
}

/// Whether the pending hand-off `h` keeps out a locker registered at `reg` (`None`: not
/// a registered waiter).
fn handoff_bars(h: u64, reg: Option<u32>) -> bool {
    h != 0
        && !reg.is_some_and(|r| handoff_eligible(r, h))
        && !handoff_expired(h, sys::monotonic_millis())
}

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's kernel thread ID, cached (a system call otherwise).
fn cached_tid() -> u32 {
    TID.with(|c| {
        if c.get() == 0 {
            c.set(sys::thread_id());
        }
        c.get()
    })
}

/// Outcome of one attempt to take the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Acquired,
    /// Another handle or another thread of this handle holds it.
    Busy,
    /// The lock is free but reserved by a hand-off for waiters that came earlier.
    Barred,
}

/// Options for opening a [`Mutex`]: `Mutex::options().mode(0o660).open(path)`.
#[derive(Debug, Clone)]
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
    /// The permission bits the lock file is created with if it does not exist yet
    /// (default `0o600`, owner only; `0o660` lets a group share it). An existing file
    /// keeps its mode.
    pub fn mode(&mut self, mode: u32) -> &mut MutexOptions {
        self.mode = mode & 0o7777;
        self
    }

    /// Opens the mutex at `path`, creating the lock file if it is missing.
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
        let state = state::open_or_create(path.as_ref(), LAYOUT, self.mode, |_| {})?;
        Ok(Mutex {
            state,
            mode: self.mode,
            me: ProcessId::current(),
            held: AtomicU32::new(FREE),
        })
    }
}

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
    state: StateFile,
    mode: u32,
    me: ProcessId,
    /// FREE, HELD or BUSY: whether this handle holds the lock.
    held: AtomicU32,
}

impl Mutex {
    /// Opens the mutex at `path`, creating the lock file (mode `0o600`) if it is
    /// missing. Opening does not lock.
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
        MutexOptions { mode: self.mode }.open(&self.state.path)
    }

    /// The path of the lock file.
    pub fn path(&self) -> &Path {
        &self.state.path
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
    pub fn lock_timeout(&self, timeout: Duration) -> Result<bool> {
        self.lock_until(crate::deadline_after(timeout))
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
    pub fn lock_forever(&self) -> Result<()> {
        self.lock_until(None).map(drop)
    }

    /// Takes the lock if it is free now; `false` otherwise, without waiting. While a
    /// hand-off to a waiting process is pending (for at most 10 ms after an unlock),
    /// the lock counts as taken.
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
    pub fn try_lock(&self) -> Result<bool> {
        Ok(self.attempt(None)? == Attempt::Acquired)
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
    pub fn unlock(&self) -> Result<()> {
        if self
            .held
            .compare_exchange(HELD, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::invalid(
                self.path(),
                "unlock of a mutex this handle does not hold",
            ));
        }
        self.release()
    }

    /// Whether the mutex is held by anyone (this handle included) right now.
    ///
    /// This does not disturb lockers: if this handle holds the lock the answer is
    /// immediate; if the file records no holder the answer is `false` from the mapping
    /// alone; only if it records one is a non-blocking shared `flock` probe made, which
    /// fails at once without taking anything when the holder is alive, and otherwise
    /// (the recorded holder died) holds the lock for a few microseconds, during which a
    /// concurrent `try_lock` may return `false`. Like any such query the answer may be
    /// stale by the time it is used.
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
    /// a.lock()?;
    /// assert!(b.is_locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        if self.held.load(Ordering::Acquire) != FREE {
            return Ok(true);
        }
        if self.owner_pid().load(Ordering::Acquire) == 0 {
            return Ok(false);
        }
        self.probe()
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
    /// m.lock()?;
    /// assert_eq!(m.holder()?.map(|h| h.pid), Some(std::process::id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn holder(&self) -> Result<Option<MutexHolder>> {
        let recorded = self.recorded_holder();
        if self.held.load(Ordering::Acquire) == HELD {
            return Ok(recorded);
        }
        if recorded.is_none() || !self.probe()? {
            return Ok(None);
        }
        // Re-read: the holder may have changed while we probed.
        Ok(self.recorded_holder())
    }

    /// How many lockers (threads of any process) are registered as waiting for the
    /// mutex, for diagnostics. Approximate: a waiter killed while waiting stays counted,
    /// which costs later unlocks one spare wake-up call each but is otherwise harmless.
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
        self.waiters().load(Ordering::Relaxed)
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
    pub fn guard_timeout(&self, timeout: Duration) -> Result<Option<MutexGuard<'_>>> {
        Ok(self
            .lock_timeout(timeout)?
            .then(|| MutexGuard { mutex: self }))
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
    pub fn guard_deadline(&self, deadline: Instant) -> Result<Option<MutexGuard<'_>>> {
        Ok(self
            .lock_deadline(deadline)?
            .then(|| MutexGuard { mutex: self }))
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
    pub fn try_guard(&self) -> Result<Option<MutexGuard<'_>>> {
        Ok(self.try_lock()?.then(|| MutexGuard { mutex: self }))
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
        Ok(MutexGuard { mutex: self })
    }

    // --- internals

    fn seq(&self) -> &AtomicU32 {
        self.state.map.u32(SEQ)
    }
    fn waiters(&self) -> &AtomicU32 {
        self.state.map.u32(WAITERS)
    }
    fn owner_pid(&self) -> &AtomicU32 {
        self.state.map.u32(OWNER_PID)
    }
    fn owner_tid(&self) -> &AtomicU32 {
        self.state.map.u32(OWNER_TID)
    }
    fn owner_start(&self) -> &AtomicU64 {
        self.state.map.u64(OWNER_START)
    }
    fn handoff(&self) -> &AtomicU64 {
        self.state.map.u64(HANDOFF)
    }

    fn recorded_holder(&self) -> Option<MutexHolder> {
        // The fields are written one by one (diagnostics only); re-read the PID to
        // avoid mixing two holders' fields in the common case.
        for _ in 0..4 {
            let pid = self.owner_pid().load(Ordering::Acquire);
            if pid == 0 {
                return None;
            }
            let tid = self.owner_tid().load(Ordering::Acquire);
            let start_time = self.owner_start().load(Ordering::Acquire);
            if self.owner_pid().load(Ordering::Acquire) == pid {
                return Some(MutexHolder {
                    pid,
                    start_time,
                    tid,
                });
            }
        }
        None
    }

    /// Whether some other open file description holds the file lock, by a non-blocking
    /// shared `flock`. Claims this handle's in-process state meanwhile, because a shared
    /// lock on our own description would be converted by a concurrent `try_lock` of
    /// another thread, and our unlock would then release that thread's lock.
    fn probe(&self) -> Result<bool> {
        if self
            .held
            .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Ok(true);
        }
        let r = sys::try_lock_shared(&self.state.file);
        let held_elsewhere = match r {
            Ok(true) => {
                let _ = sys::unlock(&self.state.file);
                false
            }
            Ok(false) => true,
            Err(_) => false,
        };
        self.held.store(FREE, Ordering::Release);
        if !held_elsewhere {
            // Someone may have found the lock taken by our probe and gone to sleep.
            self.ring();
        }
        r.map(|_| held_elsewhere).at("lock", self.path())
    }

    /// Increments the doorbell and wakes one sleeper if anyone waits. Returns how many
    /// were woken (0 if nobody waited).
    fn ring(&self) -> usize {
        self.seq().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) > 0 {
            sys::futex_wake(self.seq(), 1).unwrap_or(1)
        } else {
            0
        }
    }

    /// One attempt to take the lock; `reg` is the doorbell value at which the caller
    /// registered as a waiter, `None` for a caller that did not register.
    fn attempt(&self, reg: Option<u32>) -> Result<Attempt> {
        if self
            .held
            .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Ok(Attempt::Busy);
        }
        // Do not barge in on a pending hand-off (checked again below, under the lock).
        if handoff_bars(self.handoff().load(Ordering::Acquire), reg) {
            self.held.store(FREE, Ordering::Release);
            return Ok(Attempt::Barred);
        }
        match sys::try_lock_exclusive(&self.state.file) {
            Ok(true) => {}
            Ok(false) => {
                self.held.store(FREE, Ordering::Release);
                return Ok(Attempt::Busy);
            }
            Err(e) => {
                self.held.store(FREE, Ordering::Release);
                return Err(Error::io("lock", self.path(), e));
            }
        }
        // We hold the file lock; only a holder posts hand-offs, so the word is stable.
        let h = self.handoff().load(Ordering::Acquire);
        if h != 0 {
            if handoff_bars(h, reg) {
                // The previous holder posted it between our check and our flock: give
                // the lock back, and ring, since a waiter may have seen it taken by us.
                let _ = sys::unlock(&self.state.file);
                self.held.store(FREE, Ordering::Release);
                self.ring();
                return Ok(Attempt::Barred);
            }
            // Ours (we are an eligible waiter) or expired: clear it.
            self.handoff().store(0, Ordering::Release);
        }
        self.owner_start().store(self.me.start, Ordering::Relaxed);
        self.owner_tid().store(cached_tid(), Ordering::Relaxed);
        self.owner_pid().store(self.me.pid, Ordering::Release);
        Ok(Attempt::Acquired)
    }

    /// Releases the lock; the caller has moved `held` from HELD to BUSY.
    ///
    /// Order (the waiter side is in `wait_loop`): clear the holder record; if waiters
    /// are registered, post a hand-off; release the `flock`; mark the handle free; ring
    /// the doorbell (increment `seq`, then wake one sleeper if `waiters > 0`).
    fn release(&self) -> Result<()> {
        self.owner_pid().store(0, Ordering::Release);
        let posted = if self.waiters().load(Ordering::SeqCst) > 0 {
            let deadline = sys::monotonic_millis().wrapping_add(HANDOFF_TTL_MS + 1);
            let h = handoff_encode(self.seq().load(Ordering::SeqCst), deadline);
            self.handoff().store(h, Ordering::Release);
            Some(h)
        } else {
            None
        };
        let unlocked = sys::unlock(&self.state.file);
        if let Err(e) = unlocked {
            if let Some(h) = posted {
                let _ = self.withdraw(h);
            }
            // The file lock may still be held: keep the handle marked as holding it,
            // so that dropping the handle (closing the descriptor) releases it.
            self.owner_pid().store(self.me.pid, Ordering::Release);
            self.held.store(HELD, Ordering::Release);
            return Err(Error::io("unlock", self.path(), e));
        }
        self.held.store(FREE, Ordering::Release);
        let woken = self.ring();
        // Nobody sleeps for the hand-off (the waiters left, or all are awake and will
        // retry on their own): withdraw it rather than let it expire.
        if woken == 0
            && let Some(h) = posted
        {
            let _ = self.withdraw(h);
        }
        Ok(())
    }

    /// Withdraws hand-off `h` if it is still the pending one.
    fn withdraw(&self, h: u64) -> bool {
        self.handoff()
            .compare_exchange(h, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn lock_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.attempt(None)? == Attempt::Acquired {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let reg = self.seq().load(Ordering::SeqCst);
        let r = self.wait_loop(reg, deadline);
        let _ = self
            .waiters()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1));
        if !matches!(r, Ok(true)) {
            // Leaving without the lock: a hand-off we were entitled to may be waiting
            // for us, with the lock free and others asleep behind it. Withdraw it and
            // ring so they retry.
            let h = self.handoff().load(Ordering::Acquire);
            if h != 0 && handoff_eligible(reg, h) && self.withdraw(h) {
                self.ring();
            }
        }
        r
    }

    /// The waiter's side of the doorbell protocol.
    ///
    /// No wake-up can be lost. The waiter (1) has registered (`waiters += 1`), then in
    /// each round (2) reads `seq` as `s`, (3) tries the lock, and (4) sleeps only while
    /// `seq == s` (the kernel compares atomically with queueing it). The unlocker
    /// (a) releases the `flock`, (b) increments `seq`, (c) reads `waiters` and wakes
    /// one sleeper if it is not zero. If (3) failed because the lock was held, (a)
    /// comes after (3), so (b) comes after (2): either (b) precedes (4), and the kernel
    /// refuses to sleep because `seq != s`, or the waiter is queued before (b) and
    /// (c), which follows (1), sees `waiters > 0` and wakes a sleeper. If (3) failed
    /// because of a hand-off posted for earlier waiters, one of those is woken by the
    /// same (c), and its own unlock rings again. A holder killed before (a) cannot ring:
    /// that case alone is covered by the bounded slice.
    fn wait_loop(&self, reg: u32, deadline: Option<Instant>) -> Result<bool> {
        let mut woken = false;
        loop {
            let s = self.seq().load(Ordering::SeqCst);
            match self.attempt(Some(reg))? {
                Attempt::Acquired => return Ok(true),
                Attempt::Barred if woken => {
                    // We took a wake-up meant for an earlier waiter: pass it on.
                    let _ = sys::futex_wake(self.seq(), 1);
                }
                _ => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let slice_end = now + SLICE;
            let until = match deadline {
                Some(d) if d < slice_end => d,
                _ => slice_end,
            };
            sys::futex_wait(self.seq(), s, Some(until)).at("wait", self.path())?;
            woken = self.seq().load(Ordering::SeqCst) != s;
        }
    }
}

impl Drop for Mutex {
    fn drop(&mut self) {
        if self
            .held
            .compare_exchange(HELD, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // Closing the descriptor would release the flock too, but without ringing
            // the doorbell, leaving waiters asleep until their slice ends.
            let _ = self.release();
        }
    }
}

/// Holds a [`Mutex`] locked; unlocks it when dropped.
///
/// Made by [`Mutex::guard`] and its variants. Dropping ignores errors; use
/// [`unlock`](MutexGuard::unlock) to see them.
#[must_use = "the mutex is unlocked as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct MutexGuard<'a> {
    mutex: &'a Mutex,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_word_round_trips() {
        let h = handoff_encode(0xdead_beef, 1234);
        assert_ne!(h, 0);
        assert_eq!(handoff_seq(h), 0xdead_beef);
        // A zero sequence number and a zero deadline still make a pending hand-off.
        assert_ne!(handoff_encode(0, 0), 0);
    }

    #[test]
    fn handoff_expiry_wraps() {
        let h = handoff_encode(1, 100);
        assert!(!handoff_expired(h, 90));
        assert!(handoff_expired(h, 100));
        assert!(handoff_expired(h, 5000));
        // Deadline just after the 31-bit clock wraps.
        let h = handoff_encode(1, 3);
        assert!(!handoff_expired(h, MS_MASK - 2));
        assert!(handoff_expired(h, 3));
        assert!(handoff_expired(h, 10));
        // The full 32-bit clock value works too (only 31 bits are kept).
        let now = u32::MAX - 1;
        let h = handoff_encode(1, now.wrapping_add(11));
        assert!(!handoff_expired(h, now));
        assert!(handoff_expired(h, now.wrapping_add(11)));
    }

    /// Found by the corruption suite (tests/corruption.rs): a flipped bit in the hand-off
    /// word put its deadline days ahead, and the free mutex refused every locker.
    #[test]
    fn a_garbage_handoff_deadline_expires_at_once() {
        let now = 1_000_000;
        for ahead in [2 * HANDOFF_TTL_MS + 2, 60_000, 0x3fff_ffff, 0x7fff_fffe] {
            let h = handoff_encode(0, now + ahead);
            assert!(handoff_expired(h, now), "{ahead} ms ahead");
        }
        // A bare flipped bit in the deadline bytes (bit 31 clear).
        assert!(handoff_expired(0x00ff_0000, now));
        assert!(!handoff_expired(
            handoff_encode(0, now + HANDOFF_TTL_MS + 1),
            now
        ));
    }

    #[test]
    fn eligibility_is_registration_before_post() {
        let h = handoff_encode(10, 0);
        assert!(handoff_eligible(9, h));
        assert!(handoff_eligible(10, h));
        assert!(!handoff_eligible(11, h));
        let h = handoff_encode(2, 0); // the doorbell wrapped
        assert!(handoff_eligible(u32::MAX, h));
        assert!(!handoff_eligible(3, h));
    }

    #[test]
    fn bars_only_strangers_before_expiry() {
        let now = sys::monotonic_millis();
        let h = handoff_encode(10, now.wrapping_add(HANDOFF_TTL_MS));
        assert!(handoff_bars(h, None));
        assert!(handoff_bars(h, Some(11)));
        assert!(!handoff_bars(h, Some(10)));
        assert!(!handoff_bars(0, None));
        let old = handoff_encode(10, now.wrapping_sub(1));
        assert!(!handoff_bars(old, None));
    }

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

    #[test]
    fn in_process_threads_share_one_handle() {
        let dir = tempfile::tempdir().unwrap();
        let m = std::sync::Arc::new(Mutex::open(dir.path().join("m")).unwrap());
        let counter = std::sync::Arc::new(AtomicU32::new(0));
        let inside = std::sync::Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (m, counter, inside) = (m.clone(), counter.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let g = m.guard_forever().unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        counter.fetch_add(1, Ordering::Relaxed);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        g.unlock().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 2000);
        assert!(!m.is_locked().unwrap());
        assert_eq!(m.waiters().load(Ordering::Relaxed), 0);
        assert_eq!(m.handoff().load(Ordering::Relaxed), 0);
    }
}
