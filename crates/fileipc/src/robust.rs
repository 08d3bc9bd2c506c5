//! A robust inter-process lock on a word of a shared mapping, for short critical sections.
//!
//! The lock word holds the owner's id (bits 0..30, see `owner.rs`: an id whose life the
//! kernel vouches for) and a `CONTENDED` bit (bit 31) set by anyone who goes to sleep on
//! it.
//!
//! - lock: `CAS 0 -> id` (the fast path, no system call; the id is the calling thread's,
//!   registered before it is ever written); on failure, spin about 2 us (a running holder
//!   leaves within a microsecond), yield a few times (on a 2-CPU machine the holder may
//!   be preempted, waiting for our CPU), then set `CONTENDED` and sleep on the word
//!   ([`wait::sleep`]) in slices of [`wait::LOCK_WORD_SLICE`].
//! - unlock: `swap(0)`; only if `CONTENDED` was set, wake one sleeper ([`wait::wake`]).
//! - owner death: when a slice passes and the word still holds the same owner, the waiter
//!   asks the kernel whether that owner is alive ([`Owners::is_alive`]); if not, it takes
//!   the lock over with a CAS from that exact value and is told so
//!   ([`Acquired::TakenOver`]), so that it repairs whatever the dead owner left half done
//!   before relying on it. A live owner is waited for however long it holds the lock
//!   (stopped, traced, frozen): no timer takes a lock from it.
//! - damage: a word naming the caller's own id while the caller is trying to take it
//!   cannot be a real hold (a thread does not take a lock it holds), and a word naming an
//!   id never handed out names no live owner: both are taken over as from a dead owner.
//!
//! Callers keep critical sections short and make them repairable: every critical section
//! publishes its effect with one final store (see the queue's crash-consistency argument
//! in `docs/FORMAT.md`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::error::Result;
use crate::owner::Owners;
use crate::wait::{self, LOCK_WORD_SLICE};

/// Set in the lock word when a thread sleeps (or is about to sleep) on it.
const CONTENDED: u32 = 1 << 31;
const ID_MASK: u32 = !CONTENDED;

/// Checks of the lock word while spinning before a waiter starts yielding, two pauses
/// apart (about 2 us on the reference machine's 25 ns pause).
const SPINS: u32 = 40;
/// Yields before a waiter sleeps on the word.
const YIELDS: u32 = 8;

/// A waiter's busy phase before it sleeps on the word: [`SPINS`] checks two pauses
/// apart, then [`YIELDS`] checks a yield apart.
const SPIN: wait::Spin = wait::Spin::Counted {
    checks: SPINS,
    yields: YIELDS,
};

/// How the lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Released by its previous owner (or never held): the protected state is consistent.
    Normal,
    /// Taken from an owner that died holding it (or from a damaged word): the caller
    /// must repair the state.
    TakenOver,
}

/// A lock word in a shared mapping, and the owners of the file it lies in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RobustLock<'a> {
    word: &'a AtomicU32,
    owners: &'a Arc<Owners>,
}

/// A robust lock while it is held: unlocked when dropped (also when the code inside
/// panics).
pub(crate) struct Held<'a>(pub(crate) RobustLock<'a>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl<'a> RobustLock<'a> {
    pub(crate) fn new(word: &'a AtomicU32, owners: &'a Arc<Owners>) -> RobustLock<'a> {
        RobustLock { word, owners }
    }

    /// The fast path: takes the lock if the word is 0, with no sleeper to account for.
    #[inline]
    fn take_free(&self, id: u32) -> bool {
        self.word
            .compare_exchange(0, id, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock if it is free right now (no liveness check of a holder).
    #[inline]
    pub(crate) fn try_lock_free(&self) -> Result<bool> {
        Ok(self.take_free(self.owners.thread_id()?))
    }

    /// Takes the lock if it is free right now, or if its owner is dead.
    pub(crate) fn try_lock(&self) -> Result<Option<Acquired>> {
        let id = self.owners.thread_id()?;
        if self.take_free(id) {
            return Ok(Some(Acquired::Normal));
        }
        let v = self.word.load(Ordering::Relaxed);
        if v != 0 && self.holder_gone(v, id) {
            return Ok(self.take_over(v, id | (v & CONTENDED)));
        }
        Ok(None)
    }

    /// Takes the lock, waiting until `deadline` (`None`: without limit). `None` only on
    /// timeout.
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Option<Acquired>> {
        let id = self.owners.thread_id()?;
        if self.take_free(id) {
            return Ok(Some(Acquired::Normal));
        }
        Ok(self.lock_slow(id, deadline))
    }

    #[cold]
    fn lock_slow(&self, id: u32, deadline: Option<Instant>) -> Option<Acquired> {
        // Phase 1: spin, then yield, while the word is held without sleepers. A holder
        // that runs leaves within a microsecond: spin about 2 us (a pause is 10-140 cycles
        // depending on the CPU; check the word every other one), then yield a few times
        // (the holder may be waiting for our CPU), then sleep.
        let mut spin = wait::Spinner::new(SPIN);
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                if self.take_free(id) {
                    return Some(Acquired::Normal);
                }
                continue;
            }
            if v & ID_MASK == id {
                // Our own id in a word we do not hold: damage.
                if let Some(a) = self.take_over(v, id | (v & CONTENDED)) {
                    return Some(a);
                }
                continue;
            }
            if v & CONTENDED != 0 || !spin.step(deadline) {
                break;
            }
        }
        // Phase 2: sleep on the word in slices, checking the holder's life between them.
        let mut last_seen = 0u32;
        let mut seen_since: Option<Instant> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // Others may still sleep: take it as contended so our unlock wakes one.
                if self
                    .word
                    .compare_exchange(0, id | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(Acquired::Normal);
                }
                continue;
            }
            if v & CONTENDED == 0
                && self
                    .word
                    .compare_exchange(v, v | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let v = v | CONTENDED;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let fresh = v & ID_MASK != last_seen & ID_MASK;
            if fresh {
                last_seen = v;
                seen_since = Some(now);
            }
            // A newly seen holder is checked at once (damage, or a holder killed while we
            // spun); one seen before, once per slice.
            if fresh || seen_since.is_some_and(|s| now.duration_since(s) >= LOCK_WORD_SLICE) {
                if self.holder_gone(v, id) {
                    if let Some(a) = self.take_over(v, id | CONTENDED) {
                        return Some(a);
                    }
                    continue;
                }
                seen_since = Some(now);
            }
            // Errors of the sleep (none expected besides those it retries) only end it
            // early; the loop re-checks.
            let _ = wait::sleep(self.word, v, wait::slice_end(deadline, LOCK_WORD_SLICE));
        }
    }

    /// Whether the holder named by `v` is gone: dead, never handed out, or the caller's
    /// own id `me` (damage: the caller is trying to take it, so it does not hold it).
    fn holder_gone(&self, v: u32, me: u32) -> bool {
        let holder = v & ID_MASK;
        (holder == me || !self.owners.is_alive(holder))
            && self.word.load(Ordering::Relaxed) & ID_MASK == holder
    }

    fn take_over(&self, v: u32, new: u32) -> Option<Acquired> {
        self.word
            .compare_exchange(v, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Acquired::TakenOver)
    }

    /// Whether some thread holds the lock now (a snapshot).
    pub(crate) fn is_held(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// If the lock is held by an owner that is gone, takes it over (for the caller to
    /// repair and unlock) instead of waiting a slice for it.
    pub(crate) fn take_if_abandoned(&self) -> Result<Option<Acquired>> {
        let v = self.word.load(Ordering::Relaxed);
        if v == 0 {
            return Ok(None);
        }
        let id = self.owners.thread_id()?;
        if self.holder_gone(v, id) {
            return Ok(self.take_over(v, id | (v & CONTENDED)));
        }
        Ok(None)
    }

    /// Takes the lock for owner `id` if the word is 0, with no liveness check and no
    /// sleeper accounting: for a caller that keeps its own waiter registry and doorbell
    /// (the mutex's word mode). Sequentially consistent, so that a failed attempt
    /// ordered after the caller's registration and a release ordered before the
    /// releaser's read of the registry cannot both miss each other.
    #[inline]
    pub(crate) fn try_take(&self, id: u32) -> bool {
        self.word
            .compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Takes the lock for owner `id` if the word names an owner that is gone (dead,
    /// never handed out, or a damaged word); `false` if it is free or its owner lives.
    /// One liveness probe (a system call): for a caller that suspects the holder died.
    pub(crate) fn take_from_dead(&self, id: u32) -> bool {
        let v = self.word.load(Ordering::SeqCst);
        v != 0
            && !self.owners.is_alive(v)
            && self
                .word
                .compare_exchange(v, id, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the word names a live owner now (a snapshot; one liveness probe when it
    /// is not 0).
    pub(crate) fn held_by_live_owner(&self) -> bool {
        let v = self.word.load(Ordering::SeqCst);
        v != 0 && self.owners.is_alive(v)
    }

    /// Releases a lock taken by [`try_take`](Self::try_take) or
    /// [`take_from_dead`](Self::take_from_dead) (sequentially consistent; wakes nobody:
    /// such a caller rings its own doorbell).
    #[inline]
    pub(crate) fn release(&self) {
        self.word.store(0, Ordering::SeqCst);
    }

    /// Releases the lock; the caller must hold it.
    #[inline]
    pub(crate) fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) & CONTENDED != 0 {
            // A failed wake leaves the sleeper to its slice timeout: nothing to report.
            let _ = wait::wake(self.word, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{self, Kind, Layout};
    use std::time::Duration;

    fn owners(dir: &std::path::Path) -> Arc<Owners> {
        let layout = Layout {
            kind: Kind::Mutex,
            version: 1,
            len: 128,
        };
        let s = state::open_or_create(&dir.join("s"), layout, 0o600, |_| {}).unwrap();
        Owners::of(&s.file, &s.path).unwrap()
    }

    #[test]
    fn lock_unlock_and_take_over_a_dead_owner() {
        let dir = tempfile::tempdir().unwrap();
        let o = owners(dir.path());
        let w = AtomicU32::new(0);
        let l = RobustLock::new(&w, &o);
        assert_eq!(l.try_lock().unwrap(), Some(Acquired::Normal));
        assert!(l.is_held());
        // Held by a live owner (another thread of ours): try_lock fails, take_if_abandoned too.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(l.try_lock().unwrap(), None);
                assert_eq!(l.take_if_abandoned().unwrap(), None);
            });
        });
        l.unlock();
        assert!(!l.is_held());

        // An id never handed out stands for a dead owner.
        w.store(0x3fff_fff0, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(l.lock(None).unwrap(), Some(Acquired::TakenOver));
        assert!(t.elapsed() < Duration::from_secs(5));
        l.unlock();
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_damaged_word_naming_the_caller_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let o = owners(dir.path());
        let me = o.thread_id().unwrap();
        let w = AtomicU32::new(me | CONTENDED);
        let l = RobustLock::new(&w, &o);
        assert_eq!(
            l.lock(Some(Instant::now() + Duration::from_secs(30)))
                .unwrap(),
            Some(Acquired::TakenOver)
        );
        l.unlock();
    }

    #[test]
    fn a_live_owner_is_waited_for_however_long() {
        let dir = tempfile::tempdir().unwrap();
        let o = owners(dir.path());
        let w = AtomicU32::new(0);
        let l = RobustLock::new(&w, &o);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (tx2, rx2) = std::sync::mpsc::channel::<()>();
            s.spawn(move || {
                assert_eq!(l.lock(None).unwrap(), Some(Acquired::Normal));
                tx.send(()).unwrap();
                rx2.recv().unwrap();
                l.unlock();
            });
            rx.recv().unwrap();
            // Many slices pass: the holder is alive, so the lock is never taken from it.
            let d = Instant::now() + Duration::from_millis(50);
            assert_eq!(l.lock(Some(d)).unwrap(), None);
            assert!(Instant::now() >= d);
            tx2.send(()).unwrap();
            assert_eq!(l.lock(None).unwrap(), Some(Acquired::Normal));
            l.unlock();
        });
    }
}
