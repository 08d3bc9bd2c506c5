//! The local engine of the mutex: a lock file on the local file system.
//!
//! *Ownership* depends on the file's mode, fixed when it is created and recorded in it:
//!
//! - **flock mode** (the default): an exclusive `flock` on the handle's own open file
//!   description of the lock file, the lock `flock(1)` takes. The kernel releases it the
//!   moment the holder's last descriptor closes, including when the holder is killed, so
//!   a dead holder never keeps the lock.
//! - **word mode**: the holder's owner id (`owner.rs`) in a lock word of the mapping,
//!   taken and released with one atomic operation each ([`RobustLock::try_take`]), no
//!   system call. Each handle registers one id when it opens, whose byte lock lives on
//!   the handle's own description, so the id dies exactly when the `flock` would be
//!   released. A waiter that slept a whole slice without a ring suspects the holder
//!   died, asks the kernel ([`RobustLock::take_from_dead`]) and takes the lock over if
//!   so. `flock(1)` does not see this lock.
//!
//! *Waiting* happens in the kernel on a futex "doorbell" in the file's shared mapping
//! ([`wait::CountedBell`]): a sequence number that every unlock increments, plus the
//! waiter registry, so that an unlock makes the wake-up system call only when someone
//! waits. The registry is a mask word with one bit per slot of 31 (bit 31 stands for
//! waiters beyond them) and the slots, each holding its waiter's owner id (`owner.rs`):
//! a waiter killed while waiting is found dead by the kernel's word and its registration
//! reaped (see [`LocalMutex::reap_dead_waiters`]), so the count stays exact. A
//! holder killed with `SIGKILL` cannot ring the doorbell, so waiters sleep in bounded
//! slices of [`wait::WAITER_SLICE`] (10 ms) and retry the `flock` after each: the death
//! of a holder is noticed within one slice. Unlocks by live holders wake a waiter at
//! once. The proof that no wake-up is lost is on [`LocalMutex::wait_loop`].
//!
//! *Fairness* comes from the hand-off word (`handoff.rs`): an unlock that sees waiters
//! and finds a fair unlock due (at most every 0.5 ms) reserves the lock for them for a
//! few milliseconds; other unlocks let it be barged and wake one sleeper.
//!
//! The mapping also records the holder (PID, process start time, thread ID) for
//! diagnostics: [`Mutex::holder`](super::Mutex::holder).

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::MutexHolder;
use super::handoff::{self, FAIR_INTERVAL_US, HANDOFF_TTL_MS};
use crate::error::{Error, IoResultExt, Result};
use crate::owner::Owners;
use crate::robust::RobustLock;
use crate::state::{self, HEADER_LEN, Kind, Layout, StateFile};
use crate::sys::{self, ProcessId};
use crate::wait::{self, CountedBell};

mod waiting;

// The layout of a mutex file (version 4), offsets from the start of the file; see
// docs/FORMAT.md. Version 3 is version 4 in flock mode (its MODE, WORD and FAIR_AT bytes
// were reserved, zero) and is opened as it is. Version 1 counted waiters in a plain
// number (a killed waiter stayed counted); version 2 had no fence counter.
const VERSION: u32 = 4;
const SEQ: usize = HEADER_LEN; // u32 doorbell: incremented by every unlock
const WAITERS: usize = HEADER_LEN + 4; // u32 waiter mask: bit i = slot i registered, bit 31 = unregistered waiters
const OWNER_PID: usize = HEADER_LEN + 8; // u32 holder's PID, 0 when not held
const OWNER_TID: usize = HEADER_LEN + 12; // u32 holder's thread ID
const OWNER_START: usize = HEADER_LEN + 16; // u64 holder's process start time
const HANDOFF: usize = HEADER_LEN + 24; // u64 pending hand-off, 0 when none
const FENCE: usize = HEADER_LEN + 32; // u64 last fence granted; 0 until seeded from the wall clock
const MODE: usize = HEADER_LEN + 40; // u32 ownership mode, fixed at creation: MODE_FLOCK or MODE_WORD
const WORD: usize = HEADER_LEN + 44; // u32 word mode's lock word: the holder's owner id, 0 when free
const FAIR_AT: usize = HEADER_LEN + 48; // u32 when the next fair unlock is due, us of the monotonic clock
const SLOTS: usize = HEADER_LEN + 64; // 31 x u32: the owner id of each registered waiter
/// Waiter slots, one bit each in the mask.
const SLOT_COUNT: usize = 31;
/// The mask's bit for waiters that found every slot taken.
const OVERFLOW: u32 = 1 << 31;
/// A slot being freed by a reaper: nobody may claim it until it is 0 again.
const TOMBSTONE: u32 = u32::MAX;
const LEN: usize = HEADER_LEN + 192;

const LAYOUT: Layout = Layout {
    kind: Kind::Mutex,
    version: VERSION,
    len: LEN,
};
/// Version 3 files, opened in flock mode.
const LAYOUT_V3: Layout = Layout {
    version: 3,
    ..LAYOUT
};
/// [`MODE`]: ownership is the `flock` (`flock(1)` excludes and is excluded).
const MODE_FLOCK: u32 = 0;
/// [`MODE`]: ownership is the owner id in [`WORD`].
const MODE_WORD: u32 = 1;

/// A waiter's busy phase in word mode before it registers and sleeps: the lock word is
/// checked a few times a pause apart, and that is all. No yields: with more lockers than
/// CPUs a yielding waiter stays runnable and competes for the CPU with the waiter a fair
/// unlock just woke, and waits then run to whole scheduler ticks (4 processes on 2
/// vCPUs, `fileipc bench mutex --repeat 5`: the worst wait went from 1.13x raw flock's
/// to 0.83x, docs/BENCHMARKS.md "Issue 18, session 7").
const SPIN: wait::Spin = wait::Spin::Counted {
    checks: 40,
    yields: 0,
};

// States of `LocalMutex::held`, the in-process half of the lock.
const FREE: u32 = 0;
const HELD: u32 = 1;
/// Transient: an unlock or a probe is in progress on this handle.
const BUSY: u32 = 2;

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

/// A [`Mutex`](super::Mutex) handle's engine: its lock file, mapped.
#[derive(Debug)]
pub(super) struct LocalMutex {
    state: StateFile,
    mode: u32,
    me: ProcessId,
    /// Who the registered waiters are, and whether they live.
    owners: Arc<Owners>,
    /// FREE, HELD or BUSY: whether this handle holds the lock.
    held: AtomicU32,
    /// Whether programs this process runs inherit the descriptor that holds the lock
    /// ([`LocalMutex::share_with_children`]): an unlock then leaves the `flock` to them.
    shared: std::sync::atomic::AtomicBool,
    /// The [`sys::fork_epoch`] of the process that opened the handle. A child forked
    /// without `exec` shares the handle's open file description, and so its `flock`,
    /// with the parent: it must open the mutex again to be an owner of its own.
    epoch: u64,
    /// The fence of the grant this handle holds (meaningful while `held` is HELD).
    fence: AtomicU64,
    /// Word mode: this handle's owner id (alive as long as the handle's description),
    /// written into [`WORD`] while it holds the lock. 0 in flock mode.
    word_id: u32,
}

impl LocalMutex {
    /// Opens the lock file at `path`, creating it with `mode` (and in word mode unless
    /// `flock_compatible`) if it is missing, adopting it (in flock mode) if it is empty
    /// (a lock file of `flock(1)` or `touch`). An existing file keeps its mode.
    pub(super) fn open(path: &Path, mode: u32, flock_compatible: bool) -> Result<LocalMutex> {
        let init = |region: &mut [u8]| {
            if !flock_compatible {
                let at = MODE - HEADER_LEN;
                region[at..at + 4].copy_from_slice(&MODE_WORD.to_le_bytes());
            }
        };
        let state = match state::open_or_adopt_with(path, LAYOUT, mode, init) {
            Ok(s) => s,
            Err(e @ Error::Format { .. }) => match state::open_existing(path, LAYOUT_V3, mode) {
                Ok(Some(s)) => s,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let word_mode = match state.map.u32(MODE).load(Ordering::SeqCst) {
            MODE_FLOCK => false,
            MODE_WORD => true,
            m => {
                return Err(Error::format(
                    &state.path,
                    "mutex",
                    format!("unknown ownership mode {m}"),
                ));
            }
        };
        let owners = Owners::of(&state.file, &state.path)?;
        let word_id = match word_mode {
            true => owners.register_on(&state.file)?,
            false => 0,
        };
        // A file created or adopted here has a zero counter: seed it before any grant
        // (a seeder killed before the CAS leaves it to the next opener).
        let _ = state.map.u64(FENCE).compare_exchange(
            0,
            state::fence_seed(),
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
        Ok(LocalMutex {
            state,
            mode,
            me: ProcessId::current(),
            owners,
            held: AtomicU32::new(FREE),
            shared: std::sync::atomic::AtomicBool::new(false),
            epoch: sys::fork_epoch(),
            fence: AtomicU64::new(0),
            word_id,
        })
    }

    /// Whether the file is in flock mode (ownership is the `flock`), not word mode.
    pub(super) fn is_flock_compatible(&self) -> bool {
        self.word_id == 0
    }

    /// Word mode's lock word.
    fn word(&self) -> RobustLock<'_> {
        RobustLock::new(self.state.map.u32(WORD), &self.owners)
    }

    /// [`Mutex::fence`](super::Mutex::fence): the fence of the grant this handle holds.
    pub(super) fn fence(&self) -> Option<u64> {
        (self.held.load(Ordering::Acquire) == HELD).then(|| self.fence.load(Ordering::Relaxed))
    }

    /// The last fence granted on this file (for `stat`).
    pub(super) fn last_fence(&self) -> u64 {
        self.state.map.u64(FENCE).load(Ordering::SeqCst)
    }

    /// A new, independent handle on the same path, opened with the same mode.
    pub(super) fn try_clone(&self) -> Result<LocalMutex> {
        LocalMutex::open(&self.state.path, self.mode, self.is_flock_compatible())
    }

    /// [`Mutex::destroy`](super::Mutex::destroy).
    pub(super) fn destroy(&self) -> Result<()> {
        state::remove_if_same(&self.state.path, &self.state.file).map(drop)
    }

    /// [`Mutex::path`](super::Mutex::path).
    pub(super) fn path(&self) -> &Path {
        &self.state.path
    }

    /// One attempt, for a caller that did not register as a waiter.
    #[inline]
    pub(super) fn try_lock(&self) -> Result<bool> {
        // A word-mode holder that died releases nothing: an attempt that finds the word
        // taken asks the kernel whether its holder lives before failing.
        Ok(self.attempt(None, self.word_id != 0)? == Attempt::Acquired)
    }

    /// Refuses a handle inherited across `fork`: its `flock` is the parent's.
    #[inline]
    fn check_fork(&self) -> Result<()> {
        crate::owner::check_not_forked(self.epoch, self.path(), "mutex")
    }

    /// [`Mutex::unlock`](super::Mutex::unlock).
    pub(super) fn unlock(&self) -> Result<()> {
        self.check_fork()?;
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

    /// [`Mutex::share_with_children`](super::Mutex::share_with_children).
    pub(super) fn share_with_children(&self) -> Result<i32> {
        use std::os::fd::AsRawFd;
        if self.held.load(Ordering::Acquire) != HELD {
            return Err(Error::invalid(
                self.path(),
                "this handle does not hold the mutex; nothing to share",
            ));
        }
        sys::set_inherited(&self.state.file, true).at("fcntl", self.path())?;
        self.shared.store(true, Ordering::Release);
        Ok(self.state.file.as_raw_fd())
    }

    /// [`Mutex::is_locked`](super::Mutex::is_locked).
    pub(super) fn is_locked(&self) -> Result<bool> {
        if self.held.load(Ordering::Acquire) != FREE {
            return Ok(true);
        }
        // No shortcut on an empty holder record: a `flock(1)` holder records nothing.
        self.probe()
    }

    /// [`Mutex::holder`](super::Mutex::holder).
    pub(super) fn holder(&self) -> Result<Option<MutexHolder>> {
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

    /// [`Mutex::waiting`](super::Mutex::waiting).
    pub(super) fn waiting(&self) -> u32 {
        self.reap_dead_waiters();
        (self.waiters().load(Ordering::SeqCst) & !OVERFLOW).count_ones()
    }

    fn seq(&self) -> &AtomicU32 {
        self.state.map.u32(SEQ)
    }
    /// The doorbell: [`SEQ`] and [`WAITERS`].
    fn bell(&self) -> CountedBell<'_> {
        CountedBell {
            seq: self.seq(),
            waiters: self.waiters(),
        }
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
    fn fair_at(&self) -> &AtomicU32 {
        self.state.map.u32(FAIR_AT)
    }

    /// Whether this unlock (by the holder, with waiters registered) must hand the lock
    /// off fairly; if so, the next fair unlock is due [`FAIR_INTERVAL_US`] from now.
    /// Only the holder writes the word.
    fn fair_unlock_due(&self) -> bool {
        let now = sys::monotonic_micros();
        if !handoff::fair_due(self.fair_at().load(Ordering::Relaxed), now) {
            return false;
        }
        self.fair_at()
            .store(now.wrapping_add(FAIR_INTERVAL_US), Ordering::Relaxed);
        true
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
        self.check_fork()?;
        if self.word_id != 0 {
            return Ok(self.word().held_by_live_owner());
        }
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
    /// were woken (0 if nobody waited, 1 if the wake failed or the backend cannot tell).
    fn ring(&self) -> usize {
        self.bell().ring(1).unwrap_or(0)
    }

    /// Takes ownership (the `flock`, or the lock word, from a holder proven dead too if
    /// `suspect_death`); `false` if someone else has it.
    #[inline]
    fn take_ownership(&self, suspect_death: bool) -> std::io::Result<bool> {
        if self.word_id == 0 {
            return sys::try_lock_exclusive(&self.state.file);
        }
        let word = self.word();
        Ok(word.try_take(self.word_id) || (suspect_death && word.take_from_dead(self.word_id)))
    }

    /// Gives up what [`take_ownership`](Self::take_ownership) took.
    #[inline]
    fn give_up_ownership(&self) -> std::io::Result<()> {
        if self.word_id == 0 {
            return sys::unlock(&self.state.file);
        }
        self.word().release();
        Ok(())
    }

    /// One attempt to take the lock; `reg` is the doorbell value at which the caller
    /// registered as a waiter, `None` for a caller that did not register; in word mode,
    /// `suspect_death` also takes the lock from a holder the kernel says is gone.
    fn attempt(&self, reg: Option<u32>, suspect_death: bool) -> Result<Attempt> {
        self.check_fork()?;
        // In flock mode the handle's state is claimed first (the `flock` of one
        // description does not exclude its threads); in word mode the lock word excludes
        // them, so `held` is only read here and set once the word is taken (and set free
        // before the word is released, see `release`).
        let word_mode = self.word_id != 0;
        let busy = match word_mode {
            // Sequentially consistent, as the word's CAS: a waiter that finds another
            // thread of its handle holding registered before this read (see `release`).
            true => self.held.load(Ordering::SeqCst) != FREE,
            false => self
                .held
                .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                .is_err(),
        };
        if busy {
            return Ok(Attempt::Busy);
        }
        let unclaim = || {
            if !word_mode {
                self.held.store(FREE, Ordering::Release);
            }
        };
        // Do not barge in on a pending hand-off (checked again below, under the lock).
        if handoff::bars(self.handoff().load(Ordering::Acquire), reg) {
            unclaim();
            return Ok(Attempt::Barred);
        }
        match self.take_ownership(suspect_death) {
            Ok(true) => {}
            Ok(false) => {
                unclaim();
                return Ok(Attempt::Busy);
            }
            Err(e) => {
                unclaim();
                return Err(Error::io("lock", self.path(), e));
            }
        }
        // We hold the file lock; only a holder posts hand-offs, so the word is stable.
        let h = self.handoff().load(Ordering::Acquire);
        if h != 0 {
            if handoff::bars(h, reg) {
                // The previous holder posted it between our check and our flock: give
                // the lock back, and ring, since a waiter may have seen it taken by us.
                let _ = self.give_up_ownership();
                unclaim();
                self.ring();
                return Ok(Attempt::Barred);
            }
            // Ours (we are an eligible waiter) or expired: clear it.
            self.handoff().store(0, Ordering::Release);
        }
        self.owner_start().store(self.me.start, Ordering::Relaxed);
        self.owner_tid().store(cached_tid(), Ordering::Relaxed);
        self.owner_pid().store(self.me.pid, Ordering::Release);
        // Grants are serialised by the lock (only a holder writes the counter, so a load
        // and a store do); the counter is seeded at open.
        let fence = self.state.map.u64(FENCE);
        let f = fence.load(Ordering::Acquire).wrapping_add(1);
        fence.store(f, Ordering::Release);
        self.fence.store(f, Ordering::Relaxed);
        if word_mode {
            self.held.store(HELD, Ordering::Release);
        }
        Ok(Attempt::Acquired)
    }

    /// Releases the lock; the caller has moved `held` from HELD to BUSY.
    ///
    /// Order (the waiter side is in `wait_loop`): clear the holder record; if waiters
    /// are registered and a fair unlock is due, post a hand-off; release the `flock`;
    /// mark the handle free; ring the doorbell (increment `seq`, then wake one sleeper if
    /// `waiters > 0`). Without a hand-off the woken sleeper competes with everyone else
    /// (it sleeps again if it loses); it stays eligible for the next fair unlock.
    fn release(&self) -> Result<()> {
        if self.shared.load(Ordering::Acquire) && self.shared.swap(false, Ordering::AcqRel) {
            // The lock now lives as long as the programs that inherited the descriptor
            // (and this process): leave the `flock` and the holder record to them. They
            // release it by exiting, which rings nobody: waiters notice within a slice.
            sys::set_inherited(&self.state.file, false).at("fcntl", self.path())?;
            self.held.store(FREE, Ordering::Release);
            self.ring();
            return Ok(());
        }
        self.owner_pid().store(0, Ordering::Release);
        let registered = self.waiters().load(Ordering::SeqCst) > 0;
        let posted = if registered && self.fair_unlock_due() {
            let deadline = sys::monotonic_millis().wrapping_add(HANDOFF_TTL_MS + 1);
            let h = handoff::encode(self.seq().load(Ordering::SeqCst), deadline);
            self.handoff().store(h, Ordering::Release);
            Some(h)
        } else {
            None
        };
        if self.word_id != 0 {
            // Free before the word: another thread of this handle that saw `held` free
            // then finds the word taken until the store below (see `attempt`).
            self.held.store(FREE, Ordering::Release);
        }
        let unlocked = self.give_up_ownership();
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
        // In word mode `held` went FREE before the word, above, and must not be stored
        // again: another thread of this handle may have taken the word since and set it
        // HELD, and a second FREE would leave that thread holding the word with a handle
        // that says free; its unlock would then be refused and the lock stay taken
        // (found by the portable backend's torture run: 16 of 16 threads timed out).
        if self.word_id == 0 {
            self.held.store(FREE, Ordering::Release);
        }
        // In word mode the release is a sequentially consistent store: a waiter whose
        // attempt failed before it registered afterwards (its registration and attempt
        // are sequentially consistent too), so the mask read here sees it, or it saw the
        // lock free. Nobody registered: nothing to ring for (no system call, no
        // sequence bump).
        let woken = if self.word_id != 0 && self.waiters().load(Ordering::SeqCst) == 0 {
            0
        } else {
            self.ring()
        };
        if woken == 0 && registered {
            // Registered waiters, none asleep: they are between attempts (and will
            // retry on their own, see `wait_loop`), or dead. Unregistered waiters set
            // OVERFLOW again before each sleep, so it is cleared here.
            self.waiters().fetch_and(!OVERFLOW, Ordering::SeqCst);
        }
        // Nobody sleeps for the hand-off (the waiters left, or all are awake and will
        // retry on their own): withdraw it rather than let it expire, and ring again: a
        // newcomer that registered after the ring above may have found the lock barred
        // by it and gone to sleep. Then reap dead waiters' registrations (at most once
        // per fair interval: each costs a probe per slot), so that they do not keep
        // every unlock ringing.
        if woken == 0
            && let Some(h) = posted
        {
            if self.withdraw(h) {
                self.ring();
            }
            self.reap_dead_waiters();
        }
        Ok(())
    }

    /// Withdraws hand-off `h` if it is still the pending one.
    fn withdraw(&self, h: u64) -> bool {
        self.handoff()
            .compare_exchange(h, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

impl Drop for LocalMutex {
    fn drop(&mut self) {
        if self.epoch != sys::fork_epoch() {
            // A forked child's copy: the lock (if any) is the parent's.
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mutex;
    use crate::mutex::Engine;

    fn local(m: &Mutex) -> &LocalMutex {
        match &m.engine {
            Engine::Local(e) => e,
            #[cfg(feature = "redis")]
            Engine::Redis(_) => unreachable!("a local test opened a path"),
        }
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
        assert_eq!(local(&m).waiters().load(Ordering::Relaxed), 0);
        assert_eq!(local(&m).handoff().load(Ordering::Relaxed), 0);
    }
}
