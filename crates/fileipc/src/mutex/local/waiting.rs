//! The waiter's side of the local mutex: the waiter registry (who waits, reaped when
//! they die), word mode's short spin, and the doorbell loop with the proof that no
//! wake-up is lost.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::super::handoff;
use super::{Attempt, LocalMutex, OVERFLOW, SLOT_COUNT, SLOTS, SPIN, TOMBSTONE, WORD};
use crate::error::{IoResultExt, Result};
use crate::wait::{self, WAITER_SLICE};

impl LocalMutex {
    fn slot(&self, i: usize) -> &AtomicU32 {
        self.state.map.u32(SLOTS + 4 * i)
    }

    /// Registers the calling thread as a waiter: its owner id in a free slot, then the
    /// slot's bit in the mask (so that a registration killed halfway holds a slot with a
    /// dead id and no bit, which the reaper frees). `None` if every slot is taken: the
    /// caller then sets [`OVERFLOW`] before each sleep.
    fn register(&self) -> Result<Option<usize>> {
        let id = self.owners.thread_id()?;
        let slot = (0..SLOT_COUNT).find(|&i| {
            self.slot(i)
                .compare_exchange(0, id, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(i) = slot {
            self.waiters().fetch_or(1 << i, Ordering::SeqCst);
        }
        Ok(slot)
    }

    /// Undoes [`register`](Self::register): the bit first, then the slot.
    fn unregister(&self, slot: Option<usize>) {
        if let Some(i) = slot {
            self.waiters().fetch_and(!(1 << i), Ordering::SeqCst);
            self.slot(i).store(0, Ordering::SeqCst);
        }
    }

    /// Frees the registrations of waiters whose owner id is dead (killed while waiting,
    /// or while registering). A reaper marks the slot [`TOMBSTONE`] first, so that no
    /// new waiter can claim it before its bit is cleared: the bit cleared is always the
    /// dead waiter's. A reaper killed halfway leaves a tombstone, which the next one
    /// finishes.
    pub(super) fn reap_dead_waiters(&self) {
        for i in 0..SLOT_COUNT {
            let slot = self.slot(i);
            let id = slot.load(Ordering::SeqCst);
            if id == 0 || (id != TOMBSTONE && self.owners.is_alive(id)) {
                continue;
            }
            if id != TOMBSTONE
                && slot
                    .compare_exchange(id, TOMBSTONE, Ordering::SeqCst, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            self.waiters().fetch_and(!(1 << i), Ordering::SeqCst);
            let _ = slot.compare_exchange(TOMBSTONE, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: without limit); `false` if it
    /// could not.
    pub(in crate::mutex) fn lock_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.attempt(None, false)? == Attempt::Acquired {
            return Ok(true);
        }
        self.lock_slow(deadline)
    }

    /// Takes the lock, waiting at most `timeout`; `false` if it could not. The clock is
    /// read only if the first attempt fails.
    #[inline]
    pub(in crate::mutex) fn lock_within(&self, timeout: std::time::Duration) -> Result<bool> {
        if self.attempt(None, false)? == Attempt::Acquired {
            return Ok(true);
        }
        self.lock_slow(crate::deadline_after(timeout))
    }

    /// [`lock_until`](Self::lock_until) after a first attempt failed.
    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.word_id != 0 && self.spin(deadline)? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        let slot = self.register()?;
        let reg = self.bell().seen();
        let r = self.wait_loop(reg, slot.is_none(), deadline);
        self.unregister(slot);
        if !matches!(r, Ok(true)) {
            // Leaving without the lock: a hand-off we were entitled to may be waiting
            // for us, with the lock free and others asleep behind it. Withdraw it and
            // ring so they retry.
            let h = self.handoff().load(Ordering::Acquire);
            if h != 0 && handoff::eligible(reg, h) && self.withdraw(h) {
                self.ring();
            }
        }
        r
    }

    /// Word mode: re-tries while a running holder may leave within microseconds, before
    /// the caller registers and sleeps; `true` if it took the lock.
    #[cold]
    fn spin(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut spin = wait::Spinner::new(SPIN);
        let word = self.state.map.u32(WORD);
        while spin.step(deadline) {
            if word.load(Ordering::Relaxed) == 0 && self.attempt(None, false)? == Attempt::Acquired
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The waiter's side of the doorbell protocol.
    ///
    /// No wake-up can be lost. The waiter (1) has registered (its bit in the mask, or,
    /// `unregistered`, [`OVERFLOW`] set anew in each round before (2)), then in each
    /// round (2) reads `seq` as `s`, (3) tries the lock, and (4) sleeps only while
    /// `seq == s` (the kernel compares atomically with queueing it). The unlocker
    /// (a) releases the `flock`, (b) increments `seq`, (c) reads the mask and wakes
    /// one sleeper if it is not zero. If (3) failed because the lock was held, (a)
    /// comes after (3), so (b) comes after (2): either (b) precedes (4), and the kernel
    /// refuses to sleep because `seq != s`, or the waiter is queued before (b) and
    /// (c), which follows (1), sees the mask non-zero and wakes a sleeper. An unlocker
    /// that woke nobody clears `OVERFLOW` after (b): an unregistered waiter is then not
    /// asleep, so its (4) is still to come, and it either read `s` before (b) (the
    /// kernel refuses the sleep and the next round sets the bit again) or after (b),
    /// when the lock was already free for its (3). A reaper clears only the bits of
    /// dead waiters. If (3) failed
    /// because of a hand-off posted for earlier waiters, one of those is woken by the
    /// same (c), and its own unlock rings again. A holder killed before (a) cannot ring:
    /// that case alone is covered by the bounded slice (in word mode, an attempt after
    /// a slice without a ring also asks the kernel whether the holder is gone).
    fn wait_loop(&self, reg: u32, unregistered: bool, deadline: Option<Instant>) -> Result<bool> {
        let bell = self.bell();
        let mut woken = false;
        // Slept a whole slice without a ring (word mode: the holder may have died).
        let mut suspect = false;
        loop {
            if unregistered {
                self.waiters().fetch_or(OVERFLOW, Ordering::SeqCst);
            }
            let s = bell.seen();
            match self.attempt(Some(reg), suspect)? {
                Attempt::Acquired => return Ok(true),
                Attempt::Barred if woken => {
                    // We took a wake-up meant for an earlier waiter: pass it on.
                    let _ = wait::wake(bell.seq, 1);
                }
                _ => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            bell.sleep(s, wait::slice_end(deadline, WAITER_SLICE))
                .at("wait", self.path())?;
            woken = bell.rang_since(s);
            suspect = !woken;
        }
    }
}
