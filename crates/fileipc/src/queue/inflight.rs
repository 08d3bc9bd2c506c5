//! The in-flight table of claim/ack: one slot per claimed message (and per released one
//! awaiting redelivery), in the control file from offset [`control::TABLE`].
//!
//! A slot is 32 bytes: a state word, the claimed record's log position, a deadline
//! (nanoseconds of the boot clock, [`sys::boot_nanos`]: the lease's end while claimed,
//! the moment it becomes visible again once released) and the fence of the last grant.
//! The state word packs the owner id (bits 0..31: the claimer's process id in the control
//! file, see `owner.rs`), a tag (bits 31..34), the delivery count (bits 34..50) and a
//! generation (bits 50..64) bumped by every transition, so that a compare-and-swap from a
//! state read earlier fails if anything happened to the slot meanwhile.
//!
//! | tag | meaning | who moves it on |
//! |---|---|---|
//! | `FREE` | unused | a claimer holding the claim lock (reserve) |
//! | `RESERVING` | reserved for the record at `pos`, whose head exchange may or may not have happened | its claimer (still holding the claim lock), or whoever takes the lock over from it |
//! | `CLAIMED` | delivered to `owner` until `deadline` | its owner (ack, nack, extend); anyone once the owner is dead or the deadline passed |
//! | `TAKING` | `owner` is changing the other fields | its owner; anyone once the owner is dead |
//! | `READY` | released, visible again from `deadline` | any claimer |

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use super::control;
use super::open::LocalQueue;
use crate::sys;

pub(super) const FREE: u64 = 0;
pub(super) const RESERVING: u64 = 1;
pub(super) const CLAIMED: u64 = 2;
pub(super) const TAKING: u64 = 3;
pub(super) const READY: u64 = 4;

const OWNER_MASK: u64 = 0x7fff_ffff;
const TAG_SHIFT: u32 = 31;
const ATTEMPT_SHIFT: u32 = 34;
const ATTEMPT_MASK: u64 = 0xffff;
const GEN_SHIFT: u32 = 50;

/// The largest delivery count a slot records (it saturates there).
pub(super) const MAX_ATTEMPT: u32 = ATTEMPT_MASK as u32;

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct State(pub(super) u64);

impl State {
    pub(super) fn owner(self) -> u32 {
        (self.0 & OWNER_MASK) as u32
    }
    pub(super) fn tag(self) -> u64 {
        (self.0 >> TAG_SHIFT) & 7
    }
    pub(super) fn attempt(self) -> u32 {
        ((self.0 >> ATTEMPT_SHIFT) & ATTEMPT_MASK) as u32
    }
    fn generation(self) -> u64 {
        self.0 >> GEN_SHIFT
    }
    /// The state after this one: `tag`, `owner`, `attempt`, and the next generation.
    pub(super) fn next(self, tag: u64, owner: u32, attempt: u32) -> State {
        let generation = (self.generation() + 1) & ((1 << (64 - GEN_SHIFT)) - 1);
        State(
            u64::from(owner) & OWNER_MASK
                | tag << TAG_SHIFT
                | (u64::from(attempt.min(MAX_ATTEMPT)) & ATTEMPT_MASK) << ATTEMPT_SHIFT
                | generation << GEN_SHIFT,
        )
    }
}

/// The words of one slot.
pub(super) struct Slot<'a> {
    pub(super) state: &'a AtomicU64,
    pub(super) pos: &'a AtomicU64,
    pub(super) deadline: &'a AtomicU64,
    pub(super) fence: &'a AtomicU64,
}

impl Slot<'_> {
    pub(super) fn load(&self) -> State {
        State(self.state.load(SeqCst))
    }
    /// Moves the slot from `from` to `to`; `false` if it was not in state `from`.
    pub(super) fn cas(&self, from: State, to: State) -> bool {
        self.state
            .compare_exchange(from.0, to.0, SeqCst, SeqCst)
            .is_ok()
    }
}

/// What the in-flight table holds, for `count` and `stats`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct InFlight {
    /// Delivered and not yet acknowledged or given back.
    pub(super) claimed: u64,
    /// Given back (or whose claimer died or let its lease expire), awaiting redelivery.
    pub(super) released: u64,
}

impl LocalQueue {
    pub(super) fn slot(&self, i: usize) -> Slot<'_> {
        let at = control::TABLE + i * control::SLOT_SIZE;
        Slot {
            state: self.a64(at),
            pos: self.a64(at + 8),
            deadline: self.a64(at + 16),
            fence: self.a64(at + 24),
        }
    }

    /// How many slots from the first were ever used (scans stop there).
    pub(super) fn slots_used(&self) -> usize {
        (self.a32(control::SLOTS_USED).load(SeqCst) as usize).min(control::SLOT_COUNT)
    }

    /// The next fence: higher than every fence handed out before on this queue file, and
    /// (seeded from the wall clock at creation) than those of an earlier file at its path.
    pub(super) fn next_fence(&self) -> u64 {
        self.a64(control::FENCE)
            .fetch_add(1, SeqCst)
            .wrapping_add(1)
    }

    /// Reserves a free slot for the record at `pos`, for `owner`, with the given lease
    /// deadline and fence; the caller holds the claim lock. Fields are written before the
    /// state word names the slot reserved, so whoever sees it reserved sees its position.
    /// `None` if the table is full.
    pub(super) fn reserve(
        &self,
        owner: u32,
        pos: u64,
        deadline: u64,
        fence: u64,
    ) -> Option<(usize, State)> {
        for i in 0..control::SLOT_COUNT {
            let slot = self.slot(i);
            let s = slot.load();
            if s.tag() != FREE {
                continue;
            }
            // Scans must reach this slot before it can hold anything.
            self.a32(control::SLOTS_USED)
                .fetch_max(i as u32 + 1, SeqCst);
            slot.pos.store(pos, SeqCst);
            slot.deadline.store(deadline, SeqCst);
            slot.fence.store(fence, SeqCst);
            let to = s.next(RESERVING, owner, 1);
            if slot.cas(s, to) {
                return Some((i, to));
            }
        }
        None
    }

    /// After taking the claim lock over from a dead holder: resolves the slot it left
    /// reserved (only a holder of the lock has one). If the head is still at the slot's
    /// record, its exchange did not happen: the slot is freed. Otherwise the record was
    /// taken (by it, or by a plain receiver that won the exchange: the two cannot be told
    /// apart, and the message is then delivered once more rather than lost) and the slot
    /// becomes a claim of the dead owner, redelivered at once.
    pub(super) fn repair_claims(&self) {
        let head = self.a64(control::HEAD).load(SeqCst);
        for i in 0..self.slots_used() {
            let slot = self.slot(i);
            let s = slot.load();
            if s.tag() != RESERVING {
                continue;
            }
            let to = if slot.pos.load(SeqCst) >= head {
                s.next(FREE, 0, 0)
            } else {
                s.next(CLAIMED, s.owner(), s.attempt())
            };
            slot.cas(s, to);
        }
    }

    /// Counts the claimed and the released slots.
    pub(super) fn in_flight(&self) -> InFlight {
        let mut n = InFlight::default();
        for i in 0..self.slots_used() {
            match self.slot(i).load().tag() {
                CLAIMED | TAKING => n.claimed += 1,
                READY => n.released += 1,
                _ => {}
            }
        }
        n
    }

    /// The lowest log position a slot points to (segments from there on must stay).
    pub(super) fn lowest_in_flight(&self) -> Option<u64> {
        (0..self.slots_used())
            .map(|i| self.slot(i))
            .filter(|s| s.load().tag() != FREE)
            .map(|s| s.pos.load(SeqCst))
            .min()
    }

    /// Frees the released slots (for `clear`): their messages are discarded with the
    /// waiting ones.
    pub(super) fn clear_released(&self) {
        for i in 0..self.slots_used() {
            let slot = self.slot(i);
            let s = slot.load();
            let dead = matches!(s.tag(), CLAIMED | TAKING) && !self.ctl.owners.is_alive(s.owner());
            if s.tag() == READY || dead {
                slot.cas(s, s.next(FREE, 0, 0));
            }
        }
    }
}

/// The boot clock now, in nanoseconds.
pub(super) fn now() -> u64 {
    sys::boot_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_round_trip_and_change_generation() {
        let s = State(0).next(CLAIMED, 0x7fff_fffe, 3);
        assert_eq!((s.tag(), s.owner(), s.attempt()), (CLAIMED, 0x7fff_fffe, 3));
        let t = s.next(CLAIMED, 0x7fff_fffe, 3);
        assert_ne!(s, t, "same fields, next generation");
        assert_eq!(t.next(READY, 0, 70_000).attempt(), MAX_ATTEMPT);
        let mut w = State(u64::MAX);
        for _ in 0..3 {
            w = w.next(FREE, 0, 0);
            assert_eq!(w.tag(), FREE);
        }
    }
}
