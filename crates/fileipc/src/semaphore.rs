//! A counting semaphore shared by processes through a file.
//!
//! # Design
//!
//! The file holds a `capacity` (the initial value plus every release made by a process
//! that held no permit) and a table of holders: one slot per process holding permits,
//! naming it by PID *and start time* and counting its permits. The value is
//! `capacity - sum(held)`. Permits belong to a process: all its threads and handles
//! share its slot, and when it dies its permits come back.
//!
//! Taking a permit (and claiming a slot, raising the capacity, reclaiming a dead
//! process's slot) happens in a short critical section under an exclusive `flock` on
//! the file, plus an in-process lock for threads sharing a handle. Returning a permit
//! needs no lock: a process's slot is written only by that process (or, once it is dead,
//! by a reclaimer), and its owner and count live in one 64-bit word changed by one
//! compare-and-swap. Every change is a single store of one word, so a process killed
//! between any two stores leaves a consistent table (see `docs/FORMAT.md`).
//!
//! *Hand-off.* A waiting thread queues in a table of *waiter entries* (one word each,
//! with a ticket for first-come-first-served order) and sleeps on its entry's word. A
//! release while someone waits hands the permit straight over: it marks the oldest
//! waiting entry *given* and wakes that one thread, which returns without entering the
//! critical section (the entry now holds the permit for its process). So a hand-off
//! costs one wake-up and no `flock`, and a released permit cannot be taken by a process
//! that came later. A gift moves a permit between two records of the table with two
//! stores; it announces itself in the file, so that a concurrent scan in the critical
//! section never counts the permit twice as free (see `settled_scan`).
//!
//! Waiters sleep in bounded slices of 10 ms (on their entry, or on a futex doorbell
//! rung by releases if the entry table is full). A dead holder cannot release, so every
//! slice a waiter checks the holders' liveness and reclaims the permits of dead ones
//! (and of dead waiters' entries), handing them on: a killed holder's permits come back
//! within about one slice.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, IoResultExt, Result};
use crate::state::{self, HEADER_LEN, Kind, Layout, StateFile};
use crate::sys::{self, ProcessId};

/// How long a waiter sleeps before it checks for dead holders on its own.
const SLICE: Duration = Duration::from_millis(10);

// The layout of a semaphore file (version 2), offsets from the start of the file; see
// docs/FORMAT.md.
const VERSION: u32 = 2;
const SEQ: usize = HEADER_LEN; // u32 doorbell, incremented by every release
const WAITERS: usize = HEADER_LEN + 4; // u32 registered waiters
const CAPACITY: usize = HEADER_LEN + 8; // u32 initial + releases without holding
const HIGH: usize = HEADER_LEN + 12; // u32 slots in use are below this index
const GIFT: usize = HEADER_LEN + 16; // u64 gift in progress: gifter pid << 32 | start low bits
const GIFTS: usize = HEADER_LEN + 24; // u32 gifts begun (wrapping)
const TICKETS: usize = HEADER_LEN + 28; // u32 next waiter ticket (wrapping)
const WHIGH: usize = HEADER_LEN + 32; // u32 waiter entries in use are below this index
const SLOTS: usize = 128; // the holder table
const SLOT_LEN: usize = 16; // u64 owner pid << 32 | held, u64 owner start time
const TABLE_END: usize = 4096;
const WAITS: usize = TABLE_END; // the waiter table
const WAIT_LEN: usize = 16; // u32 ticket << 2 | state, u32 pid, u64 start time
const MAX_WAITS: usize = 256;
const LEN: usize = WAITS + MAX_WAITS * WAIT_LEN;
/// How many processes can hold permits at the same time.
pub(crate) const MAX_HOLDERS: usize = (TABLE_END - SLOTS) / SLOT_LEN;

// The table starts after the fixed fields and fits the file; the docs promise 248 slots.
const _: () = assert!(SLOTS >= WHIGH + 4 && SLOTS + MAX_HOLDERS * SLOT_LEN <= TABLE_END);
const _: () = assert!(MAX_HOLDERS == 248 && LEN == 8192);

// States of a waiter entry (the low two bits of its word; the rest is its ticket).
const W_FREE: u32 = 0;
/// A thread sleeps on the entry, waiting for a permit.
const W_WAITING: u32 = 1;
/// A permit was handed to the waiter: the entry holds it for the entry's process.
const W_GIVEN: u32 = 2;
const W_STATE: u32 = 3;

const LAYOUT: Layout = Layout {
    kind: Kind::Semaphore,
    version: VERSION,
    len: LEN,
};

// --- The slot's owner word (pure logic, unit-tested below): 0 = free slot.

fn word(pid: u32, held: u32) -> u64 {
    (u64::from(pid) << 32) | u64::from(held)
}

fn word_pid(w: u64) -> u32 {
    (w >> 32) as u32
}

fn word_held(w: u64) -> u32 {
    w as u32
}

/// The owner word after returning one permit: the slot is freed with the last one.
fn word_after_release(w: u64) -> u64 {
    if word_held(w) <= 1 { 0 } else { w - 1 }
}

/// The value of a semaphore of `capacity` whose holders hold `held` in all.
fn value_of(capacity: u32, held: u64) -> u32 {
    u64::from(capacity).saturating_sub(held) as u32
}

/// Whether the ticket of entry word `a` comes before that of `b` (30-bit tickets,
/// compared modulo 2^30).
fn ticket_before(a: u32, b: u32) -> bool {
    let d = (b >> 2).wrapping_sub(a >> 2) & 0x3fff_ffff;
    d != 0 && d < 0x2000_0000
}

/// Whether the gifter named by `gift` word `g` (pid << 32 | low bits of its start time)
/// is no longer running.
fn gifter_dead(g: u64) -> bool {
    !sys::is_alive_low((g >> 32) as u32, g as u32)
}

/// Outcome of [`Semaphore::give`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gift {
    /// Handed to a waiter, who was woken.
    Given,
    /// Returned to the semaphore (nobody to hand it to): waiters must be woken.
    Returned,
    /// This process held no permit: nothing changed.
    NotHeld,
}

/// What a scan of the holder table found.
#[derive(Debug, Default)]
struct Scan {
    /// Permits held in all (slots and waiter entries holding a handed-over permit).
    held: u64,
    /// This process's slot and its owner word.
    mine: Option<(usize, u64)>,
    /// Permits this process holds in waiter entries.
    mine_given: u32,
    /// The first free slot below the high-water mark.
    free: Option<usize>,
    /// The high-water mark (clamped to the table).
    high: usize,
}

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
        let state = state::open_or_create(path.as_ref(), LAYOUT, self.mode, |region| {
            let at = CAPACITY - HEADER_LEN;
            region[at..at + 4].copy_from_slice(&initial.to_le_bytes());
        })?;
        Ok(Semaphore {
            state,
            mode: self.mode,
            me: ProcessId::current(),
            local: std::sync::Mutex::new(()),
        })
    }
}

/// A counting semaphore between processes, named by a file path.
///
/// [`acquire`](Semaphore::acquire) takes a permit, waiting while none is left;
/// [`release`](Semaphore::release) returns one. Permits belong to the calling
/// *process*, not to the handle or thread: any thread may release a permit another
/// thread of the process acquired, dropping a handle does not return permits, and a
/// process that dies gets its permits returned for it (noticed by waiters within about
/// 10 ms, and by every [`value`](Semaphore::value)). A release by a process that holds
/// no permit adds one to the semaphore (signalling). At most 248 processes can hold
/// permits at the same time.
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
/// sem.acquire()?;
/// assert_eq!(sem.value()?, 2);
/// if sem.try_acquire()? {
///     println!("got permit");
///     sem.release()?;
/// }
/// sem.release()?;
/// assert_eq!(sem.value()?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    state: StateFile,
    mode: u32,
    me: ProcessId,
    /// Excludes the threads sharing this handle from the critical section (the `flock`
    /// belongs to the open file description, which they share).
    local: std::sync::Mutex<()>,
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
    /// let b = fileipc::Semaphore::open(&path, 10)?; // already exists: stays at 3
    /// assert_eq!(b.value()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, initial: u32) -> Result<Semaphore> {
        SemaphoreOptions::default().open(path, initial)
    }

    /// Options for opening a semaphore (the creation mode).
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
        SemaphoreOptions { mode: self.mode }.open(&self.state.path, 0)
    }

    /// The path of the semaphore file.
    pub fn path(&self) -> &Path {
        &self.state.path
    }

    /// Takes a permit, waiting at most [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)
    /// (5 s); `false` if none became free.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a system call on the file fails; [`Error::Invalid`] if the
    /// holder table is full (more than 248 processes hold permits at once).
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
    pub fn acquire(&self) -> Result<bool> {
        self.acquire_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Takes a permit, waiting at most `timeout`; `false` if none became free. A
    /// timeout too large to represent waits forever.
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
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_until(crate::deadline_after(timeout))
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
    pub fn acquire_deadline(&self, deadline: Instant) -> Result<bool> {
        self.acquire_until(Some(deadline))
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
    pub fn acquire_forever(&self) -> Result<()> {
        self.acquire_until(None).map(drop)
    }

    /// Takes a permit if one is free now; `false` otherwise. When none is free, first
    /// returns the permits of holders that died.
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
    pub fn try_acquire(&self) -> Result<bool> {
        if self.take(false)? {
            return Ok(true);
        }
        self.take(true)
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
    pub fn release(&self) -> Result<()> {
        // Fast path, no lock: hand the permit straight to the longest waiter, or return
        // it from this process's records.
        if self.waiters().load(Ordering::SeqCst) > 0 {
            match self.give() {
                Gift::Given => return Ok(()),
                Gift::Returned => {
                    self.wake_released();
                    return Ok(());
                }
                Gift::NotHeld => {}
            }
        } else if self.return_own()? {
            self.wake_released();
            return Ok(());
        }
        let given = self.critical(|| {
            // This process may have acquired meanwhile (another thread or handle).
            if self.return_own()? {
                return Ok(false);
            }
            let cap = self.capacity().load(Ordering::SeqCst);
            if cap == u32::MAX {
                return Err(Error::invalid(
                    self.path(),
                    "release would raise the semaphore past u32::MAX",
                ));
            }
            self.capacity().store(cap + 1, Ordering::SeqCst);
            Ok(self.distribute() > 0)
        })?;
        if !given {
            self.wake_released();
        }
        Ok(())
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
    pub fn detach(&self) -> Result<bool> {
        self.critical(|| {
            // Our slot first, then the capacity: a death between the two stores leaves
            // the permit with nobody, as if we had died holding it (reclaimed), never a
            // permit lost for good.
            if !self.return_own()? {
                return Ok(false);
            }
            let cap = self.capacity().load(Ordering::SeqCst);
            self.capacity()
                .store(cap.saturating_sub(1), Ordering::SeqCst);
            Ok(true)
        })
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
    /// s.acquire()?;
    /// let h = s.holders()?;
    /// assert_eq!((h[0].pid, h[0].permits, h[0].alive), (std::process::id(), 1, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn holders(&self) -> Result<Vec<SemaphoreHolder>> {
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        let mut out = Vec::new();
        for i in 0..high {
            let w = self.owner(i).load(Ordering::SeqCst);
            if w == 0 || word_held(w) == 0 {
                continue;
            }
            let who = ProcessId {
                pid: word_pid(w),
                start: self.start(i).load(Ordering::SeqCst),
            };
            out.push(SemaphoreHolder {
                pid: who.pid,
                start_time: who.start,
                permits: word_held(w),
                alive: who.is_alive(),
            });
        }
        // Permits handed to waiters and still held in their waiter entries.
        for e in 0..self.wait_high() {
            if self.entry(e).load(Ordering::SeqCst) & W_STATE != W_GIVEN {
                continue;
            }
            let (pid, start_time) = (
                self.entry_pid(e).load(Ordering::SeqCst),
                self.entry_start(e).load(Ordering::SeqCst),
            );
            match out
                .iter_mut()
                .find(|h| h.pid == pid && h.start_time == start_time)
            {
                Some(h) => h.permits = h.permits.saturating_add(1),
                None => out.push(SemaphoreHolder {
                    pid,
                    start_time,
                    permits: 1,
                    alive: ProcessId {
                        pid,
                        start: start_time,
                    }
                    .is_alive(),
                }),
            }
        }
        Ok(out)
    }

    /// The number of permits free now, after returning those of holders that died.
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
        let (reclaimed, value) = self.critical(|| {
            let reclaimed = self.reclaim_dead();
            if reclaimed > 0 {
                self.distribute();
            }
            let scan = self.settled_scan();
            Ok((
                reclaimed,
                value_of(self.capacity().load(Ordering::SeqCst), scan.held),
            ))
        })?;
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        Ok(value)
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
    /// s.acquire()?;
    /// s.acquire()?;
    /// assert_eq!(s.held()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn held(&self) -> Result<u32> {
        let scan = self.scan();
        Ok(scan
            .mine
            .map_or(0, |(_, w)| word_held(w))
            .saturating_add(scan.mine_given))
    }

    /// How many threads (of any process) are registered as waiting, for diagnostics.
    /// Approximate: a waiter killed while waiting stays counted, which costs later
    /// releases one spare wake-up call each but is otherwise harmless.
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
        self.waiters().load(Ordering::Relaxed)
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
    pub fn permit_timeout(&self, timeout: Duration) -> Result<Option<SemaphorePermit<'_>>> {
        Ok(self
            .acquire_timeout(timeout)?
            .then(|| SemaphorePermit { sem: self }))
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
    pub fn permit_deadline(&self, deadline: Instant) -> Result<Option<SemaphorePermit<'_>>> {
        Ok(self
            .acquire_deadline(deadline)?
            .then(|| SemaphorePermit { sem: self }))
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
    pub fn try_permit(&self) -> Result<Option<SemaphorePermit<'_>>> {
        Ok(self.try_acquire()?.then(|| SemaphorePermit { sem: self }))
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
        self.acquire_forever()?;
        Ok(SemaphorePermit { sem: self })
    }

    // --- internals

    fn seq(&self) -> &AtomicU32 {
        self.state.map.u32(SEQ)
    }
    fn waiters(&self) -> &AtomicU32 {
        self.state.map.u32(WAITERS)
    }
    fn capacity(&self) -> &AtomicU32 {
        self.state.map.u32(CAPACITY)
    }
    fn high(&self) -> &AtomicU32 {
        self.state.map.u32(HIGH)
    }
    fn owner(&self, slot: usize) -> &AtomicU64 {
        self.state.map.u64(SLOTS + slot * SLOT_LEN)
    }
    fn start(&self, slot: usize) -> &AtomicU64 {
        self.state.map.u64(SLOTS + slot * SLOT_LEN + 8)
    }

    fn gift(&self) -> &AtomicU64 {
        self.state.map.u64(GIFT)
    }
    fn gifts(&self) -> &AtomicU32 {
        self.state.map.u32(GIFTS)
    }
    fn tickets(&self) -> &AtomicU32 {
        self.state.map.u32(TICKETS)
    }
    fn whigh(&self) -> &AtomicU32 {
        self.state.map.u32(WHIGH)
    }
    /// Waiter entries in use are below this index.
    fn wait_high(&self) -> usize {
        (self.whigh().load(Ordering::SeqCst) as usize).min(MAX_WAITS)
    }
    /// The word of waiter entry `e`: ticket << 2 | state; the futex its waiter sleeps on.
    fn entry(&self, e: usize) -> &AtomicU32 {
        self.state.map.u32(WAITS + e * WAIT_LEN)
    }
    fn entry_pid(&self, e: usize) -> &AtomicU32 {
        self.state.map.u32(WAITS + e * WAIT_LEN + 4)
    }
    fn entry_start(&self, e: usize) -> &AtomicU64 {
        self.state.map.u64(WAITS + e * WAIT_LEN + 8)
    }

    fn is_my_entry(&self, e: usize) -> bool {
        self.entry_pid(e).load(Ordering::SeqCst) == self.me.pid
            && self.entry_start(e).load(Ordering::SeqCst) == self.me.start
    }

    fn is_me(&self, slot: usize, w: u64) -> bool {
        word_pid(w) == self.me.pid && self.start(slot).load(Ordering::Acquire) == self.me.start
    }

    /// Runs `f` in the critical section: this handle's threads excluded by `local`,
    /// other handles and processes by an exclusive `flock` on the file (released by the
    /// kernel if this process dies inside).
    fn critical<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = &self.state.file;
        if !sys::try_lock_exclusive(file).at("lock", self.path())? {
            sys::lock_exclusive(file).at("lock", self.path())?;
        }
        let r = f();
        let u = sys::unlock(file).at("unlock", self.path());
        let v = r?;
        u?;
        Ok(v)
    }

    /// Reads the holder table and the waiter entries (after the slots). Loads are
    /// `SeqCst`: see `wait_loop`. Not a snapshot while a gift is in progress: see
    /// [`settled_scan`](Semaphore::settled_scan).
    fn scan(&self) -> Scan {
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        let mut s = Scan {
            high,
            ..Scan::default()
        };
        for i in 0..high {
            let w = self.owner(i).load(Ordering::SeqCst);
            if w == 0 {
                s.free.get_or_insert(i);
                continue;
            }
            s.held += u64::from(word_held(w));
            if s.mine.is_none() && self.is_me(i, w) {
                s.mine = Some((i, w));
            }
        }
        for e in 0..self.wait_high() {
            let w = self.entry(e).load(Ordering::SeqCst);
            if w & W_STATE == W_GIVEN {
                s.held += 1;
                if self.is_my_entry(e) {
                    s.mine_given += 1;
                }
            }
        }
        s
    }

    /// [`scan`](Semaphore::scan) that never counts fewer permits held than there are,
    /// for the critical section. A gift moves a permit between two records with two
    /// stores, so a scan overlapping one could miss it; the gifter announces itself in
    /// `gift` and counts in `gifts`, and a scan that saw neither change is exact. Else it
    /// is retried (a gift is a few stores), a dead gifter's mark is cleared, and as a
    /// last resort each overlapping gift is counted as one more permit held.
    fn settled_scan(&self) -> Scan {
        let mut attempt = 0u32;
        loop {
            let n1 = self.gifts().load(Ordering::SeqCst);
            let g1 = self.gift().load(Ordering::SeqCst);
            let mut s = self.scan();
            let g2 = self.gift().load(Ordering::SeqCst);
            let n2 = self.gifts().load(Ordering::SeqCst);
            if g1 == 0 && g2 == 0 && n1 == n2 {
                return s;
            }
            attempt += 1;
            if g1 != 0 && g1 == g2 && n1 == n2 && attempt > 4 && gifter_dead(g1) {
                // A gifter died mid-gift: its records are consistent (see FORMAT.md).
                let _ = self
                    .gift()
                    .compare_exchange(g1, 0, Ordering::SeqCst, Ordering::SeqCst);
                continue;
            }
            if attempt > 64 {
                s.held += 1 + u64::from(n2.wrapping_sub(n1));
                return s;
            }
            if attempt > 8 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Returns one permit this process holds (in a waiter entry or its slot); `false` if
    /// it holds none. Lock-free: only this process writes its records while it lives.
    fn return_own(&self) -> Result<bool> {
        for e in 0..self.wait_high() {
            let w = self.entry(e).load(Ordering::SeqCst);
            if w & W_STATE == W_GIVEN
                && self.is_my_entry(e)
                && self
                    .entry(e)
                    .compare_exchange(w, w & !W_STATE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Ok(true);
            }
        }
        loop {
            let Some((i, w)) = self.scan().mine else {
                return Ok(false);
            };
            if word_held(w) == 0 {
                return Ok(false);
            }
            let new = word_after_release(w);
            if self
                .owner(i)
                .compare_exchange(w, new, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// Hands a permit this process holds directly to the longest-waiting thread that
    /// sleeps on a waiter entry, and wakes that thread alone: it returns without entering
    /// the critical section. Lock-free. Order: announce the gift (`gift`, `gifts`),
    /// return our permit, mark the entry given, end the announcement, wake.
    fn give(&self) -> Gift {
        if self.oldest_waiting(None).is_none() {
            return match self.return_own() {
                Ok(true) => Gift::Returned,
                _ => Gift::NotHeld,
            };
        }
        let tag = (u64::from(self.me.pid) << 32) | (self.me.start & 0xffff_ffff);
        if self
            .gift()
            .compare_exchange(0, tag, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Another gift is in progress: return the permit the ordinary way.
            return match self.return_own() {
                Ok(true) => Gift::Returned,
                _ => Gift::NotHeld,
            };
        }
        self.gifts().fetch_add(1, Ordering::SeqCst);
        let outcome = if matches!(self.return_own(), Ok(true)) {
            let mut skip = None;
            loop {
                let Some((e, w)) = self.oldest_waiting(skip) else {
                    break Gift::Returned;
                };
                let given = (w & !W_STATE) | W_GIVEN;
                if self
                    .entry(e)
                    .compare_exchange(w, given, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.gift().store(0, Ordering::SeqCst);
                    let _ = sys::futex_wake(self.entry(e), 1);
                    return Gift::Given;
                }
                // That waiter left or was served: try the next one.
                skip = Some(w);
            }
        } else {
            Gift::NotHeld
        };
        self.gift().store(0, Ordering::SeqCst);
        outcome
    }

    /// The oldest waiting entry (smallest ticket), ignoring the one whose word is
    /// `skip` and those younger than it.
    fn oldest_waiting(&self, skip: Option<u32>) -> Option<(usize, u32)> {
        let mut best: Option<(usize, u32)> = None;
        for e in 0..self.wait_high() {
            let w = self.entry(e).load(Ordering::SeqCst);
            if w & W_STATE != W_WAITING || skip.is_some_and(|k| !ticket_before(k, w)) {
                continue;
            }
            if best.is_none_or(|(_, b)| ticket_before(w, b)) {
                best = Some((e, w));
            }
        }
        best
    }

    /// After a permit went back to the pool: wakes a sleeper on the doorbell and the
    /// oldest sleeper on a waiter entry, if any (they take it in the critical section).
    fn wake_released(&self) {
        // A waiter registers before it claims an entry and looks at the value: if
        // nobody is registered after our release, any later waiter sees the permit.
        if !self.ring(1) {
            return;
        }
        if let Some((e, _)) = self.oldest_waiting(None) {
            let _ = sys::futex_wake(self.entry(e), 1);
        }
    }

    /// Gives free permits to waiting entries, oldest first, and wakes them; in the
    /// critical section. Returns how many were given.
    fn distribute(&self) -> u32 {
        let scan = self.settled_scan();
        let mut free = value_of(self.capacity().load(Ordering::SeqCst), scan.held);
        let mut given = 0;
        while free > 0 {
            let Some((e, w)) = self.oldest_waiting(None) else {
                break;
            };
            if self
                .entry(e)
                .compare_exchange(
                    w,
                    (w & !W_STATE) | W_GIVEN,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
            {
                let _ = sys::futex_wake(self.entry(e), 1);
                free -= 1;
                given += 1;
            }
        }
        given
    }

    /// Claims a free waiter entry for the calling thread; in the critical section.
    /// Returns its index and word, `None` if the table is full.
    fn claim_entry(&self) -> Option<(usize, u32)> {
        let high = self.wait_high();
        let e = match (0..high).find(|&e| self.entry(e).load(Ordering::SeqCst) & W_STATE == W_FREE)
        {
            Some(e) => e,
            None if high < MAX_WAITS => {
                self.entry(high).store(0, Ordering::SeqCst);
                self.whigh().store(high as u32 + 1, Ordering::SeqCst);
                high
            }
            None => return None,
        };
        let ticket = self.tickets().fetch_add(1, Ordering::SeqCst);
        let w = (ticket << 2) | W_WAITING;
        self.entry_pid(e).store(self.me.pid, Ordering::SeqCst);
        self.entry_start(e).store(self.me.start, Ordering::SeqCst);
        self.entry(e).store(w, Ordering::SeqCst);
        Some((e, w))
    }

    /// One attempt to take a permit in the critical section; with `reclaim`, first
    /// returns the permits of dead holders (and wakes waiters if there were any).
    fn take(&self, reclaim: bool) -> Result<bool> {
        let (got, reclaimed) = self.critical(|| {
            let reclaimed = if reclaim { self.reclaim_dead() } else { 0 };
            let got = self.take_locked()?;
            if reclaimed > 0 {
                self.distribute();
            }
            Ok((got, reclaimed))
        })?;
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        Ok(got)
    }

    /// Takes a permit if the value is positive; in the critical section.
    fn take_locked(&self) -> Result<bool> {
        let scan = self.settled_scan();
        if value_of(self.capacity().load(Ordering::SeqCst), scan.held) == 0 {
            return Ok(false);
        }
        // Our own slot: only this process changes it outside the critical section
        // (returning permits), hence the compare-and-swap.
        if let Some((i, mut w)) = scan.mine {
            loop {
                match self
                    .owner(i)
                    .compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => return Ok(true),
                    Err(now) if word_pid(now) == self.me.pid => w = now,
                    // Freed by our own last release meanwhile: claim a slot afresh.
                    Err(_) => break,
                }
            }
        }
        let scan = self.scan();
        let slot = match scan.free {
            Some(i) => i,
            None if scan.high < MAX_HOLDERS => {
                // Raise the high-water mark first: a crash right after leaves an
                // empty slot in range, which is harmless.
                self.owner(scan.high).store(0, Ordering::SeqCst);
                self.high().store(scan.high as u32 + 1, Ordering::SeqCst);
                scan.high
            }
            None => {
                return Err(Error::invalid(
                    self.path(),
                    format!("holder table full: {MAX_HOLDERS} processes already hold permits"),
                ));
            }
        };
        // Claim: the start time first, then owner and count in one store.
        self.start(slot).store(self.me.start, Ordering::SeqCst);
        self.owner(slot)
            .store(word(self.me.pid, 1), Ordering::SeqCst);
        Ok(true)
    }

    /// Frees the slots and waiter entries of processes that are no longer running (PID
    /// and start time checked, zombies count as dead); in the critical section. Returns
    /// the number of permits returned.
    fn reclaim_dead(&self) -> u64 {
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        let mut reclaimed = 0;
        for i in 0..high {
            let w = self.owner(i).load(Ordering::SeqCst);
            if w == 0 || self.is_me(i, w) {
                continue;
            }
            let who = ProcessId {
                pid: word_pid(w),
                start: self.start(i).load(Ordering::SeqCst),
            };
            if !who.is_alive()
                && self
                    .owner(i)
                    .compare_exchange(w, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                reclaimed += u64::from(word_held(w));
            }
        }
        for e in 0..self.wait_high() {
            let w = self.entry(e).load(Ordering::SeqCst);
            if w & W_STATE == W_FREE || self.is_my_entry(e) {
                continue;
            }
            let who = ProcessId {
                pid: self.entry_pid(e).load(Ordering::SeqCst),
                start: self.entry_start(e).load(Ordering::SeqCst),
            };
            if !who.is_alive()
                && self
                    .entry(e)
                    .compare_exchange(w, w & !W_STATE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                && w & W_STATE == W_GIVEN
            {
                reclaimed += 1;
            }
        }
        let g = self.gift().load(Ordering::SeqCst);
        if g != 0 && gifter_dead(g) {
            let _ = self
                .gift()
                .compare_exchange(g, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        reclaimed
    }

    /// Increments the doorbell and wakes up to `n` sleepers if anyone waits. Returns
    /// whether anyone was registered as waiting.
    fn ring(&self, n: u32) -> bool {
        self.seq().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) > 0 {
            let _ = sys::futex_wake(self.seq(), n);
            true
        } else {
            false
        }
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.take(false)? {
            return Ok(true);
        }
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let mut entry = None;
        let mut woken = false;
        let mut r = self.wait_loop(deadline, &mut entry, &mut woken);
        if let Some((e, w)) = entry
            && !matches!(r, Ok(true))
        {
            // Leave the queue; a permit handed over meanwhile is ours after all.
            let left =
                self.entry(e)
                    .compare_exchange(w, w & !W_STATE, Ordering::SeqCst, Ordering::SeqCst);
            if left.is_err() {
                r = Ok(true);
            }
        }
        let _ = self
            .waiters()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1));
        if woken && !matches!(r, Ok(true)) {
            // We may have taken a wake-up meant for a release: pass it on.
            let _ = sys::futex_wake(self.seq(), 1);
        }
        r
    }

    /// The waiting side.
    ///
    /// A waiter claims a *waiter entry* (in the critical section, before it looks at
    /// the value) and sleeps on the entry's word; a releaser that holds a permit hands it
    /// over by marking the oldest waiting entry given and wakes that thread alone, which
    /// then returns without entering the critical section. Other permits (signalling
    /// releases, reclaimed ones) are given to entries in the critical section. A waiter
    /// that found the entry table full sleeps on the doorbell `seq` instead.
    ///
    /// No wake-up can be lost. The waiter (1) registers (`waiters += 1`), then in each
    /// round (2) reads `seq` as `s`, (3) in the critical section stores its entry as
    /// waiting and scans the table, finding the value 0, and (4) sleeps only while its
    /// entry (or `seq`) is unchanged. A releaser (a) changes the table, (b) reads
    /// `waiters`, the entries or `seq`: it either marks the entry given (the kernel
    /// refuses the sleep, or wakes it) or, finding no waiting entry, increments `seq`
    /// and wakes a sleeper on it and on the oldest waiting entry. All these accesses are
    /// sequentially consistent: if (3) saw the table before (a), (a) precedes the scan,
    /// so the entry stored before the scan is seen by (b). A dead holder cannot release:
    /// every [`SLICE`] the waiter reclaims dead holders' records.
    fn wait_loop(
        &self,
        deadline: Option<Instant>,
        entry: &mut Option<(usize, u32)>,
        woken: &mut bool,
    ) -> Result<bool> {
        // The first round reclaims dead holders at once: the fast path did not.
        let mut reclaim = true;
        let mut next_reclaim = Instant::now() + SLICE;
        loop {
            let s = self.seq().load(Ordering::SeqCst);
            let (got, reclaimed, extra) = self.critical(|| {
                let reclaimed = if reclaim { self.reclaim_dead() } else { 0 };
                match *entry {
                    Some((e, w)) if self.entry(e).load(Ordering::SeqCst) != w => {
                        // Given to us (nobody else frees a live waiter's entry).
                        *entry = None;
                        return Ok((true, reclaimed, false));
                    }
                    Some(_) => {}
                    None => *entry = self.claim_entry(),
                }
                if !self.take_locked()? {
                    if reclaimed > 0 {
                        self.distribute();
                    }
                    return Ok((false, reclaimed, false));
                }
                // Leave the queue. Given a permit meanwhile: we got two; return one of
                // the process's (permits are the process's: another thread may already
                // have released the one in our entry).
                let mut extra = false;
                if let Some((e, w)) = entry.take()
                    && self
                        .entry(e)
                        .compare_exchange(w, w & !W_STATE, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err()
                {
                    self.return_own()?;
                    extra = self.distribute() == 0;
                }
                if reclaimed > 0 {
                    self.distribute();
                }
                Ok((true, reclaimed, extra))
            })?;
            if reclaimed > 0 {
                self.ring(u32::MAX);
            } else if extra {
                self.wake_released();
            }
            if got {
                return Ok(true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let until = match deadline {
                Some(d) if d < next_reclaim => d,
                _ => next_reclaim,
            };
            match *entry {
                Some((e, w)) => {
                    sys::futex_wait(self.entry(e), w, Some(until)).at("wait", self.path())?;
                    if self.entry(e).load(Ordering::SeqCst) != w {
                        // Handed over: the entry holds our permit.
                        *entry = None;
                        return Ok(true);
                    }
                }
                None => {
                    sys::futex_wait(self.seq(), s, Some(until)).at("wait", self.path())?;
                    *woken = self.seq().load(Ordering::SeqCst) != s;
                }
            }
            let now = Instant::now();
            reclaim = now >= next_reclaim;
            if reclaim {
                next_reclaim = now + SLICE;
            }
        }
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

/// A permit of a [`Semaphore`], released when dropped.
///
/// Made by [`Semaphore::permit`] and its variants. Dropping ignores errors; use
/// [`release`](SemaphorePermit::release) to see them.
#[must_use = "the permit is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_word() {
        let w = word(4242, 3);
        assert_eq!(word_pid(w), 4242);
        assert_eq!(word_held(w), 3);
        assert_eq!(word_after_release(w), word(4242, 2));
        assert_eq!(word_after_release(word(4242, 1)), 0);
        assert_eq!(
            word_after_release(word(u32::MAX, u32::MAX)),
            word(u32::MAX, u32::MAX - 1)
        );
        assert_eq!(word(0, 0), 0);
    }

    #[test]
    fn values() {
        assert_eq!(value_of(3, 0), 3);
        assert_eq!(value_of(3, 3), 0);
        assert_eq!(value_of(3, 7), 0); // a damaged table never underflows
        assert_eq!(value_of(u32::MAX, 1), u32::MAX - 1);
    }

    #[test]
    fn semaphore_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Semaphore>();
        check::<SemaphorePermit<'_>>();
    }

    #[test]
    fn dead_slot_is_reclaimed_and_recycled_pid_is_not_mine() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        // A slot of a process that does not exist, and one with our PID but another
        // start time (a recycled PID): both are dead holders.
        s.high().store(2, Ordering::SeqCst);
        s.start(0).store(1, Ordering::SeqCst);
        s.owner(0).store(word(u32::MAX - 7, 1), Ordering::SeqCst);
        s.start(1)
            .store(s.me.start.wrapping_add(1), Ordering::SeqCst);
        s.owner(1).store(word(s.me.pid, 2), Ordering::SeqCst);
        assert_eq!(s.held().unwrap(), 0);
        let v = s.value().unwrap();
        if cfg!(all(target_os = "linux", not(feature = "force-portable"))) {
            assert_eq!(v, 3);
        } else {
            // Without start times the recycled PID looks alive.
            assert_eq!(v, 1);
        }
        assert_eq!(s.owner(0).load(Ordering::SeqCst), 0);
        assert!(s.try_acquire().unwrap());
        assert_eq!(s.held().unwrap(), 1);
    }

    #[test]
    fn full_table_is_a_clear_error() {
        let Some(init) = ProcessId::of_pid(1) else {
            return; // no process 1 to stand for a live holder
        };
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 1000).unwrap();
        s.high().store(MAX_HOLDERS as u32, Ordering::SeqCst);
        for i in 0..MAX_HOLDERS {
            s.start(i).store(init.start, Ordering::SeqCst);
            s.owner(i).store(word(1, 1), Ordering::SeqCst);
        }
        assert_eq!(s.value().unwrap(), 1000 - MAX_HOLDERS as u32);
        let e = s.try_acquire().unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("holder table full"), "{e}");
        // A slot freed by its holder is reused.
        s.owner(7).store(0, Ordering::SeqCst);
        assert!(s.try_acquire().unwrap());
        assert_eq!(word_pid(s.owner(7).load(Ordering::SeqCst)), s.me.pid);
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
    fn ticket_order_wraps() {
        let w = |t: u32| (t << 2) | W_WAITING;
        assert!(ticket_before(w(1), w(2)));
        assert!(!ticket_before(w(2), w(1)));
        assert!(!ticket_before(w(5), w(5)));
        // 30-bit tickets wrap.
        assert!(ticket_before(w(0x3fff_ffff), w(0)));
        assert!(!ticket_before(w(0), w(0x3fff_ffff)));
    }

    /// A thread waiting in the same process gets the permit handed over; the permit
    /// then lives in its waiter entry and is accounted like any other.
    #[test]
    fn hand_off_to_a_waiting_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Semaphore::open(dir.path().join("s"), 1).unwrap());
        assert!(s.try_acquire().unwrap());
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.acquire_timeout(Duration::from_secs(10)).unwrap())
        };
        let t0 = Instant::now();
        while s.waiting() == 0 || s.oldest_waiting(None).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "waiter never queued"
            );
            std::thread::yield_now();
        }
        s.release().unwrap();
        assert!(waiter.join().unwrap());
        // The process holds one permit, in a waiter entry.
        assert_eq!(s.scan().mine_given, 1);
        assert_eq!((s.held().unwrap(), s.value().unwrap()), (1, 0));
        s.release().unwrap();
        assert_eq!((s.held().unwrap(), s.value().unwrap()), (0, 1));
        assert_eq!(s.scan().mine_given, 0);
    }

    /// A gift left half done by a dead gifter is cleared; one still in progress makes
    /// the critical section's count conservative (never more free permits than exist).
    #[test]
    fn stuck_gift_marks() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        s.gift()
            .store(u64::from(u32::MAX - 7) << 32, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 3);
        assert_eq!(s.gift().load(Ordering::SeqCst), 0);
        // A live "gifter" (ourselves) that never finishes.
        let tag = (u64::from(s.me.pid) << 32) | (s.me.start & 0xffff_ffff);
        s.gift().store(tag, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 2);
        s.gift().store(0, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 3);
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
