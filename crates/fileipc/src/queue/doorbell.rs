//! The doorbell idle receivers sleep on, and the registry of those receivers: how a
//! sender wakes them (once per sleep), how a receiver waits for data (spinning, then
//! sleeping), and how the registrations of receivers that died asleep are cleared.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control;
use super::open::{CONTROL, LocalQueue};
use crate::error::{Error, Result};
use crate::wait;

/// The most an idle receiver keeps checking before it sleeps (its learned budget is
/// shorter, see `wait::Spin::Adaptive`): a cross-CPU futex wake-up costs ~45 us on the
/// reference machine, a send on another CPU shows up in well under 1 us.
const SPIN: Duration = Duration::from_micros(100);

/// The doorbell's sleepers bit: set by a receiver about to sleep, cleared by the send that
/// wakes it.
const SLEEPERS: u32 = 1;

/// The doorbell value of the epoch after `v`, with the sleepers bit clear.
fn next_epoch(v: u32) -> u32 {
    (v & !SLEEPERS).wrapping_add(2)
}

impl LocalQueue {
    /// Wakes the sleeping receivers, if there are any, once per sleep: the first send
    /// after receivers went to sleep rings, the sends after it (while the woken receivers
    /// get a CPU) make no system call.
    ///
    /// The doorbell word holds an epoch (bits 1..32) and a *sleepers* bit (bit 0). No lost
    /// wake-up: a receiver (1) sets the sleepers bit (or sees it set) in the doorbell,
    /// (2) re-reads the tail, and sleeps only if the tail showed nothing new and the
    /// doorbell still holds the value of (1). A sender (a) stores the tail, then (b) reads
    /// the doorbell and, if the sleepers bit is set, moves it to the next epoch with the
    /// bit clear and wakes every sleeper. All are SeqCst, so in their single total order
    /// either (a) precedes (2) — the receiver sees the message and does not sleep — or
    /// (2) precedes (a), hence (1) precedes (b): the sender reads the value of (1) or a
    /// later one. If it reads (1)'s value, it advances the doorbell and wakes; if a later
    /// one, another sender advanced the doorbell after (1). Either way the receiver's
    /// sleep sees a changed word and returns at once, or is already asleep and is woken.
    pub(super) fn ring(&self) {
        let bell = self.a32(control::DOORBELL);
        let v = bell.load(Ordering::SeqCst);
        if v & SLEEPERS == 0 {
            return;
        }
        // Only senders clear the bit: if the exchange fails, another sender advanced the
        // epoch and wakes everyone who slept on it.
        if bell
            .compare_exchange(v, next_epoch(v), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            // A failed wake leaves the receivers to their slice's end
            // (`wait::RECEIVER_SLICE`).
            let _ = wait::wake_all(bell);
        }
    }

    /// Advances the doorbell to the next epoch whether or not the sleepers bit is set,
    /// and wakes every sleeper: after `destroy` marked the queue, so that receivers
    /// asleep in `recv` return with [`Error::Destroyed`].
    pub(super) fn wake_all_receivers(&self) {
        let bell = self.a32(control::DOORBELL);
        let _ = bell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(next_epoch(v)));
        let _ = wait::wake_all(bell);
    }

    /// Waits (spinning briefly, then sleeping on the doorbell) until the queue may hold a
    /// message or `deadline` passes; `Ok(false)` at the deadline.
    pub(super) fn wait_for_data(&self, deadline: Option<Instant>) -> Result<bool> {
        let head = self.a64(control::HEAD);
        let tail = self.a64(control::TAIL);
        let ready = || tail.load(Ordering::SeqCst) != head.load(Ordering::SeqCst);
        // Spin a moment, then sleep. Spinning pays when the sender runs on another CPU
        // (its message shows up within a microsecond), and only takes CPU from others
        // when it does not run: how long is learned from how recent waits ended (see
        // `wait::Spin::Adaptive`, which also says why it never yields).
        let mut spin = wait::Spinner::new(wait::Spin::Adaptive { limit: SPIN });
        loop {
            if ready() {
                spin.finish();
                return Ok(true);
            }
            if !spin.step(deadline) {
                break;
            }
        }
        spin.finish();
        // Sleep: register as a waiter, then re-check (see `ring` for the ordering).
        let slot = self.register_waiter();
        let bell = self.a32(control::DOORBELL);
        let mut b = bell.load(Ordering::SeqCst);
        while b & SLEEPERS == 0 {
            match bell.compare_exchange(b, b | SLEEPERS, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => b |= SLEEPERS,
                Err(v) => b = v,
            }
        }
        let mut woke = ready();
        if !woke && !self.destroyed() {
            let now = Instant::now();
            if deadline.is_none_or(|d| now < d) {
                // The queue is empty: the head's segment is the last one this handle
                // may need. Others may move the head on while we sleep, but only after
                // a send, whose ring wakes us to trim again.
                self.release_consumed_mappings();
                let until = wait::slice_end(deadline, wait::RECEIVER_SLICE);
                let r = wait::sleep(bell, b, until);
                woke = ready();
                if r.is_ok() && !woke && Some(until) != deadline && Instant::now() >= until {
                    // A whole slice without a ring: clear the registrations of waiters
                    // that died asleep (they count only in `stats`).
                    self.reap_dead_waiters(slot);
                }
                if let Err(e) = r {
                    self.unregister_waiter(slot);
                    return Err(Error::io("futex wait", self.dir.join(CONTROL), e));
                }
            }
        }
        self.unregister_waiter(slot);
        self.check_destroyed()?;
        Ok(woke || deadline.is_none_or(|d| Instant::now() < d))
    }

    /// Registers the calling thread as a sleeping receiver: its owner id in a free
    /// waiter slot. `None` if all are taken (the receiver then sleeps uncounted) or its
    /// id cannot be had. The id is registered before it is stored, so a slot never names
    /// an owner whose life cannot be checked.
    fn register_waiter(&self) -> Option<usize> {
        let id = u64::from(self.ctl.owners.thread_id().ok()?);
        (0..control::WAIT_SLOT_COUNT).find(|&i| {
            self.a64(control::WAIT_SLOTS + 8 * i)
                .compare_exchange(0, id, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        })
    }

    fn unregister_waiter(&self, slot: Option<usize>) {
        if let Some(i) = slot {
            self.a64(control::WAIT_SLOTS + 8 * i)
                .store(0, Ordering::SeqCst);
        }
    }

    /// Frees the waiter slots of receivers that died while registered (their owner ids
    /// are dead), except the caller's own `mine`.
    fn reap_dead_waiters(&self, mine: Option<usize>) {
        for i in (0..control::WAIT_SLOT_COUNT).filter(|&i| Some(i) != mine) {
            let slot = self.a64(control::WAIT_SLOTS + 8 * i);
            let id = slot.load(Ordering::SeqCst);
            if id == 0 || self.ctl.owners.is_alive(id as u32) {
                continue;
            }
            let _ = slot.compare_exchange(id, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    /// How many receivers sleep (or are about to) in waiter slots, after freeing the
    /// slots of dead ones: exact for up to 64 sleeping receivers.
    pub(super) fn waiting_receivers(&self) -> u32 {
        self.reap_dead_waiters(None);
        (0..control::WAIT_SLOT_COUNT)
            .filter(|&i| self.a64(control::WAIT_SLOTS + 8 * i).load(Ordering::SeqCst) != 0)
            .count() as u32
    }
}
