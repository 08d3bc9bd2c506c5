//! A robust inter-process lock on a word of a shared mapping, for short critical sections.
//!
//! The lock word holds the owner's kernel thread ID (bits 0..30) and a `CONTENDED` bit
//! (bit 31) set by anyone who goes to sleep on it; a second word (the *ident*, u64) holds
//! what the owner recorded about itself (thread ID and start time, see
//! [`sys::owner_ident`]) so a recycled thread ID is not taken for the owner.
//!
//! - lock: `CAS 0 -> tid` (the fast path, no system call); on failure, spin about 2 us
//!   (a running holder leaves within a microsecond), yield a few times (on a 2-CPU
//!   machine the holder may be preempted, waiting for our CPU), then set `CONTENDED` and
//!   sleep on the word ([`wait::sleep`]) in slices of [`wait::LOCK_WORD_SLICE`].
//! - unlock: `swap(0)`; only if `CONTENDED` was set, wake one sleeper ([`wait::wake`]).
//! - owner death: when a slice passes and the word still holds the same owner, the waiter
//!   asks the OS whether that thread is alive ([`sys::owner_alive`]); if not, it takes the
//!   lock over with a CAS from that exact value and is told so ([`Acquired::TakenOver`]),
//!   so that it repairs whatever the dead owner left half done before relying on it.
//!
//! Callers keep critical sections short and make them repairable: every critical section
//! publishes its effect with one final store (see the queue's crash-consistency argument
//! in `docs/FORMAT.md`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys;
use crate::wait::{self, LOCK_WORD_SLICE};

/// Set in the lock word when a thread sleeps (or is about to sleep) on it.
const CONTENDED: u32 = 1 << 31;
const TID_MASK: u32 = !CONTENDED;

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

/// How long a waiter trusts a lock word whose owner cannot be verified: the word names a
/// live thread, but the ident names another one. An owner records its ident right after
/// taking the word, so this lasts nanoseconds for a real owner; lasting this long, the
/// word was damaged (e.g. a flipped bit naming some unrelated live thread) and is taken
/// over rather than waited on forever.
const UNVERIFIED_GRACE: Duration = Duration::from_secs(1);

/// What a caller polling a lock in its own loop ([`RobustLock::try_lock_watching`])
/// remembers between attempts: the word value it last saw held, and since when.
#[derive(Debug, Default)]
pub(crate) struct Watch(Option<(u32, Instant)>);

/// How the lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Released by its previous owner (or never held): the protected state is consistent.
    Normal,
    /// Taken from an owner that died holding it: the caller must repair the state.
    TakenOver,
}

/// A lock word and its owner ident, both in a shared mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RobustLock<'a> {
    word: &'a AtomicU32,
    ident: &'a AtomicU64,
}

fn me() -> (u32, u64) {
    let ident = sys::owner_ident();
    ((ident >> 32) as u32 & TID_MASK, ident)
}

impl<'a> RobustLock<'a> {
    pub(crate) fn new(word: &'a AtomicU32, ident: &'a AtomicU64) -> RobustLock<'a> {
        RobustLock { word, ident }
    }

    /// The fast path: takes the lock if the word is 0, with no sleeper to account for.
    fn take_free(&self, tid: u32, ident: u64) -> bool {
        let free = self
            .word
            .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if free {
            self.ident.store(ident, Ordering::Relaxed);
        }
        free
    }

    /// Takes the lock if it is free right now (no liveness check of a holder).
    pub(crate) fn try_lock_free(&self) -> bool {
        let (tid, ident) = me();
        self.take_free(tid, ident)
    }

    /// Takes the lock if it is free right now, or if its owner is dead.
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        let (tid, ident) = me();
        if self.take_free(tid, ident) {
            return Some(Acquired::Normal);
        }
        let v = self.word.load(Ordering::Relaxed);
        if v != 0 && self.holder_dead(v) {
            return self.take_over(v, tid, ident);
        }
        None
    }

    /// Takes the lock, waiting until `deadline` (`None`: without limit). `None` only on
    /// timeout.
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Option<Acquired> {
        let (tid, ident) = me();
        if self.take_free(tid, ident) {
            return Some(Acquired::Normal);
        }
        self.lock_slow(tid, ident, deadline)
    }

    #[cold]
    fn lock_slow(&self, tid: u32, ident: u64, deadline: Option<Instant>) -> Option<Acquired> {
        // Phase 1: spin, then yield, while the word is held without sleepers. A holder
        // that runs leaves within a microsecond: spin about 2 us (a pause is 10-140 cycles
        // depending on the CPU; check the word every other one), then yield a few times
        // (the holder may be waiting for our CPU), then sleep.
        let mut spin = wait::Spinner::new(SPIN);
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                if self.take_free(tid, ident) {
                    return Some(Acquired::Normal);
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
        let mut first_seen: Option<Instant> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // Others may still sleep: take it as contended so our unlock wakes one.
                if self
                    .word
                    .compare_exchange(0, tid | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.ident.store(ident, Ordering::Relaxed);
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
            if v & TID_MASK != last_seen & TID_MASK {
                last_seen = v;
                seen_since = Some(now);
                first_seen = Some(now);
            } else if seen_since.is_some_and(|s| now.duration_since(s) >= LOCK_WORD_SLICE) {
                // The same owner for a whole slice: is it still alive (or, for long, not
                // an owner at all)?
                let unverified = first_seen
                    .is_some_and(|f| now.duration_since(f) >= UNVERIFIED_GRACE)
                    && self.holder_unverifiable(v);
                if unverified || self.holder_dead(v) {
                    if let Some(a) = self.take_over(v, tid | CONTENDED, ident) {
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

    fn holder_dead(&self, v: u32) -> bool {
        let ident = self.ident.load(Ordering::Relaxed);
        // Re-read the word: the ident must belong to the owner we judge.
        let tid = v & TID_MASK;
        !sys::owner_alive(tid, ident) && self.word.load(Ordering::Relaxed) & TID_MASK == tid
    }

    /// Whether the ident does not name the thread in the word (so its start time cannot
    /// be checked).
    fn holder_unverifiable(&self, v: u32) -> bool {
        let ident = self.ident.load(Ordering::Relaxed);
        (ident >> 32) as u32 != v & TID_MASK && self.word.load(Ordering::Relaxed) == v
    }

    fn take_over(&self, v: u32, new: u32, ident: u64) -> Option<Acquired> {
        match self
            .word
            .compare_exchange(v, new, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                self.ident.store(ident, Ordering::Relaxed);
                Some(Acquired::TakenOver)
            }
            Err(_) => None,
        }
    }

    /// [`try_lock`](Self::try_lock) for a caller that polls in its own loop: also takes
    /// over a word whose owner cannot be verified once `watch` has seen that same value
    /// for [`UNVERIFIED_GRACE`] (damage, not an owner; as [`lock`](Self::lock) does).
    pub(crate) fn try_lock_watching(&self, watch: &mut Watch) -> Option<Acquired> {
        if let Some(a) = self.try_lock() {
            return Some(a);
        }
        let v = self.word.load(Ordering::Relaxed);
        let since = match watch.0 {
            Some((w, t)) if w == v => t,
            _ => watch.0.insert((v, Instant::now())).1,
        };
        if v == 0 || since.elapsed() < UNVERIFIED_GRACE || !self.holder_unverifiable(v) {
            return None;
        }
        let (tid, ident) = me();
        self.take_over(v, tid | (v & CONTENDED), ident)
    }

    /// Whether some thread holds the lock now (a snapshot).
    pub(crate) fn is_held(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// If the lock is held by a thread that no longer runs, takes it over (for the
    /// caller to repair and unlock) instead of waiting a slice for it.
    pub(crate) fn take_if_abandoned(&self) -> Option<Acquired> {
        let v = self.word.load(Ordering::Relaxed);
        if v != 0 && self.holder_dead(v) {
            let (tid, ident) = me();
            return self.take_over(v, tid | (v & CONTENDED), ident);
        }
        None
    }

    /// Releases the lock; the caller must hold it.
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

    #[test]
    fn lock_unlock_and_take_over_a_dead_owner() {
        let w = AtomicU32::new(0);
        let id = AtomicU64::new(0);
        let l = RobustLock::new(&w, &id);
        assert_eq!(l.try_lock(), Some(Acquired::Normal));
        assert!(l.is_held());
        // Held by a live thread (ourselves): try_lock fails, take_if_abandoned too.
        assert_eq!(l.try_lock(), None);
        assert_eq!(l.take_if_abandoned(), None);
        l.unlock();
        assert!(!l.is_held());

        // A thread ID that cannot exist (above pid_max) stands for a dead owner.
        w.store(0x3fff_fff0, Ordering::Relaxed);
        id.store(0, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(l.lock(None), Some(Acquired::TakenOver));
        assert!(t.elapsed() < Duration::from_secs(5));
        l.unlock();
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_damaged_word_naming_an_unrelated_live_thread_is_taken_over() {
        // Our own process ID: a live thread, but the ident names another thread.
        let w = AtomicU32::new(std::process::id() | CONTENDED);
        let id = AtomicU64::new(u64::from(std::process::id() + 1) << 32);
        let l = RobustLock::new(&w, &id);
        let t = Instant::now();
        assert_eq!(
            l.lock(Some(t + Duration::from_secs(30))),
            Some(Acquired::TakenOver)
        );
        assert!(t.elapsed() >= UNVERIFIED_GRACE);
        l.unlock();
    }

    #[test]
    fn lock_times_out_behind_a_live_owner() {
        let w = AtomicU32::new(0);
        let id = AtomicU64::new(0);
        let l = RobustLock::new(&w, &id);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (tx2, rx2) = std::sync::mpsc::channel::<()>();
            let (w, id) = (&w, &id);
            s.spawn(move || {
                let l = RobustLock::new(w, id);
                assert_eq!(l.lock(None), Some(Acquired::Normal));
                tx.send(()).unwrap();
                rx2.recv().unwrap();
                l.unlock();
            });
            rx.recv().unwrap();
            let d = Instant::now() + Duration::from_millis(20);
            assert_eq!(l.lock(Some(d)), None);
            assert!(Instant::now() >= d);
            tx2.send(()).unwrap();
            assert_eq!(l.lock(None), Some(Acquired::Normal));
            l.unlock();
        });
    }
}
