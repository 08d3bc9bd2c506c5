//! The semaphore file and the protocol on its tables: who holds which permits, who
//! waits for one, and how a permit moves between them.
//!
//! The file holds a `capacity` (the initial value plus every release made by a process
//! that held no permit) and a table of holders: one slot per process holding permits,
//! naming it by its owner id (`owner.rs`: the kernel vouches for its life) and counting
//! its permits. The value is
//! `capacity - sum(held)`. Permits belong to a process: all its threads and handles
//! share its slot, and when it dies its permits come back.
//!
//! Taking a permit (and claiming a slot, raising the capacity, reclaiming a dead
//! process's slot) happens in the critical section (`local.rs`: a robust lock on the
//! file's `lock` word, [`Table::lock`]). Returning a permit
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
//! costs one wake-up and no lock, and a released permit cannot be taken by a process
//! that came later. A gift moves a permit between two records of the table with two
//! stores; it announces itself in the file, so that a concurrent scan in the critical
//! section never counts the permit twice as free (see [`Table::settled_scan`]).
//!
//! *More processes than slots.* A process that takes a permit from the pool while every
//! slot belongs to another process records it in a waiter entry marked given, as a gift
//! would (see [`Table::take_locked`]); with every entry taken too, it waits until a
//! holder returns a permit and so frees a record. So the holder table never refuses a
//! permit that is free: up to 248 processes hold permits in slots and up to 256 more in
//! entries.
//!
//! Methods documented "in the critical section" are called only inside it; the others
//! are lock-free.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::SemaphoreHolder;
use crate::error::Result;
use crate::owner::Owners;
use crate::robust::RobustLock;
use crate::state::{self, HEADER_LEN, Kind, Layout, StateFile};
use crate::sys;
use crate::wait;

// The layout of a semaphore file (version 5), offsets from the start of the file; see
// docs/FORMAT.md. Version 2 named holders by PID and start time, judged through `/proc`;
// version 3 had no fence counter; version 4 guarded the critical section by an `flock`
// on the file instead of the `LOCK` word.
const VERSION: u32 = 5;
const SEQ: usize = HEADER_LEN; // u32 doorbell, incremented by every release
const WAITERS: usize = HEADER_LEN + 4; // u32 registered waiters
const CAPACITY: usize = HEADER_LEN + 8; // u32 initial + releases without holding
const HIGH: usize = HEADER_LEN + 12; // u32 slots in use are below this index
const GIFT: usize = HEADER_LEN + 16; // u64 gift in progress: gifter's owner id << 32 | 1
const GIFTS: usize = HEADER_LEN + 24; // u32 gifts begun (wrapping)
const TICKETS: usize = HEADER_LEN + 28; // u32 next waiter ticket (wrapping)
const WHIGH: usize = HEADER_LEN + 32; // u32 waiter entries in use are below this index
const LOCK: usize = HEADER_LEN + 36; // u32 the critical section's robust lock word (`robust.rs`)
const FENCE: usize = HEADER_LEN + 40; // u64 last fence granted, seeded at creation from the wall clock
const SLOTS: usize = 128; // the holder table
const SLOT_LEN: usize = 16; // u64 owner id << 32 | held, u64 owner's PID (for display)
const TABLE_END: usize = 4096;
const WAITS: usize = TABLE_END; // the waiter table
const WAIT_LEN: usize = 16; // u32 ticket << 2 | state, u32 owner id, u64 PID (for display)
/// How many waiter entries the file has.
pub(super) const MAX_WAITS: usize = 256;
const LEN: usize = WAITS + MAX_WAITS * WAIT_LEN;
/// How many processes can hold permits at the same time.
pub(crate) const MAX_HOLDERS: usize = (TABLE_END - SLOTS) / SLOT_LEN;

// The table starts after the fixed fields and fits the file; the docs promise 248 slots.
const _: () = assert!(SLOTS >= FENCE + 8 && SLOTS + MAX_HOLDERS * SLOT_LEN <= TABLE_END);
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

// --- The slot's owner word (pure logic, unit-tested below): 0 = free slot; held 0 =
// idle, reserved by its process (see `Table::take_locked`).

pub(super) fn word(id: u32, held: u32) -> u64 {
    (u64::from(id) << 32) | u64::from(held)
}

pub(super) fn word_id(w: u64) -> u32 {
    (w >> 32) as u32
}

pub(super) fn word_held(w: u64) -> u32 {
    w as u32
}

/// The owner word after returning one permit (of at least one held): the slot stays
/// the process's with the last one returned (idle), so its next take is one
/// compare-and-swap of the word.
fn word_after_release(w: u64) -> u64 {
    w - 1
}

/// The value of a semaphore of `capacity` whose holders hold `held` in all.
pub(super) fn value_of(capacity: u32, held: u64) -> u32 {
    u64::from(capacity).saturating_sub(held) as u32
}

/// Whether the ticket of entry word `a` comes before that of `b` (30-bit tickets,
/// compared modulo 2^30).
fn ticket_before(a: u32, b: u32) -> bool {
    let d = (b >> 2).wrapping_sub(a >> 2) & 0x3fff_ffff;
    d != 0 && d < 0x2000_0000
}

/// Outcome of [`Table::give`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gift {
    /// Handed to a waiter, who was woken.
    Given,
    /// Returned to the semaphore (nobody to hand it to): waiters must be woken.
    Returned,
    /// This process held no permit: nothing changed.
    NotHeld,
}

/// What a scan of the holder table found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Permits held in all (slots and waiter entries holding a handed-over permit).
    pub(super) held: u64,
    /// This process's slot and its owner word.
    pub(super) mine: Option<(usize, u64)>,
    /// Permits this process holds in waiter entries.
    pub(super) mine_given: u32,
    /// The first free slot below the high-water mark.
    free: Option<usize>,
    /// The first idle slot (held 0) of another process, and its word.
    idle: Option<(usize, u64)>,
    /// The high-water mark (clamped to the table).
    high: usize,
    /// One past the last slot in use (`high` if the slot below it is taken).
    used: usize,
    /// One past the last waiter entry that is not free.
    used_entries: usize,
}

/// How [`Table::settled_scan`] waits for a gift it overlapped to end: a gift is a few
/// stores, so 8 checks two pauses apart, then 56 a yield apart; after these 64 it counts
/// conservatively.
const SETTLE_SPIN: wait::Spin = wait::Spin::Counted {
    checks: 8,
    yields: 56,
};

/// A semaphore file, mapped, seen by the calling process: its words and the protocol on
/// them.
#[derive(Debug)]
pub(super) struct Table {
    pub(super) state: StateFile,
    /// Who holds and waits, and whether they live.
    pub(super) owners: Arc<Owners>,
    /// The calling process, as its slot and waiter entries name it: its owner id.
    pub(super) me: u32,
    /// The calling process's PID, recorded beside its id for display.
    pid: u32,
    /// The slot this process was last seen to own (a hint: checked before use), so that
    /// a return finds it without a scan.
    hint: AtomicUsize,
}

impl Table {
    /// Opens the semaphore file at `path`, creating it with `mode` and `initial` permits
    /// if it is missing.
    pub(super) fn open(path: &Path, mode: u32, initial: u32) -> Result<Table> {
        let state = state::open_or_create(path, LAYOUT, mode, |region| {
            let at = CAPACITY - HEADER_LEN;
            region[at..at + 4].copy_from_slice(&initial.to_le_bytes());
            let at = FENCE - HEADER_LEN;
            region[at..at + 8].copy_from_slice(&state::fence_seed().to_le_bytes());
        })?;
        let owners = Owners::of(&state.file, &state.path)?;
        let me = owners.process_id()?;
        Ok(Table {
            state,
            owners,
            me,
            pid: std::process::id(),
            hint: AtomicUsize::new(0),
        })
    }

    /// The critical section's lock: a robust lock on the `lock` word.
    #[inline]
    pub(super) fn lock(&self) -> RobustLock<'_> {
        RobustLock::new(self.state.map.u32(LOCK), &self.owners)
    }
    pub(super) fn seq(&self) -> &AtomicU32 {
        self.state.map.u32(SEQ)
    }
    /// The fence counter: `fetch_add` one per permit taken.
    pub(super) fn fence(&self) -> &AtomicU64 {
        self.state.map.u64(FENCE)
    }
    pub(super) fn waiters(&self) -> &AtomicU32 {
        self.state.map.u32(WAITERS)
    }
    pub(super) fn capacity(&self) -> &AtomicU32 {
        self.state.map.u32(CAPACITY)
    }
    pub(super) fn high(&self) -> &AtomicU32 {
        self.state.map.u32(HIGH)
    }
    pub(super) fn owner(&self, slot: usize) -> &AtomicU64 {
        self.state.map.u64(SLOTS + slot * SLOT_LEN)
    }
    /// The PID of a slot's owner, for display.
    pub(super) fn holder_pid(&self, slot: usize) -> &AtomicU64 {
        self.state.map.u64(SLOTS + slot * SLOT_LEN + 8)
    }

    /// Whether owner id `id` is alive (the calling process's own ids are).
    pub(super) fn alive(&self, id: u32) -> bool {
        self.owners.is_alive(id)
    }

    /// Whether the gifter named by `gift` word `g` is gone.
    fn gifter_dead(&self, g: u64) -> bool {
        !self.alive((g >> 32) as u32)
    }

    pub(super) fn gift(&self) -> &AtomicU64 {
        self.state.map.u64(GIFT)
    }
    fn gifts(&self) -> &AtomicU32 {
        self.state.map.u32(GIFTS)
    }
    fn tickets(&self) -> &AtomicU32 {
        self.state.map.u32(TICKETS)
    }
    pub(super) fn whigh(&self) -> &AtomicU32 {
        self.state.map.u32(WHIGH)
    }
    /// Waiter entries in use are below this index.
    fn wait_high(&self) -> usize {
        (self.whigh().load(Ordering::SeqCst) as usize).min(MAX_WAITS)
    }
    /// The word of waiter entry `e`: ticket << 2 | state; the futex its waiter sleeps on.
    pub(super) fn entry(&self, e: usize) -> &AtomicU32 {
        self.state.map.u32(WAITS + e * WAIT_LEN)
    }
    /// The owner id of the process of waiter entry `e`.
    pub(super) fn entry_owner(&self, e: usize) -> &AtomicU32 {
        self.state.map.u32(WAITS + e * WAIT_LEN + 4)
    }
    /// The PID of the process of waiter entry `e`, for display.
    fn entry_pid(&self, e: usize) -> &AtomicU64 {
        self.state.map.u64(WAITS + e * WAIT_LEN + 8)
    }

    fn is_my_entry(&self, e: usize) -> bool {
        self.entry_owner(e).load(Ordering::SeqCst) == self.me
    }

    fn is_me(&self, w: u64) -> bool {
        word_id(w) == self.me
    }

    /// Reads the holder table and the waiter entries (after the slots). Loads are
    /// `SeqCst`: see `LocalSemaphore::wait_loop`. Not a snapshot while a gift is in
    /// progress: see [`settled_scan`](Table::settled_scan).
    pub(super) fn scan(&self) -> Scan {
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
            s.used = i + 1;
            s.held += u64::from(word_held(w));
            if s.mine.is_none() && self.is_me(w) {
                s.mine = Some((i, w));
            } else if word_held(w) == 0 && s.idle.is_none() && !self.is_me(w) {
                s.idle = Some((i, w));
            }
        }
        for e in 0..self.wait_high() {
            let w = self.entry(e).load(Ordering::SeqCst);
            if w & W_STATE != W_FREE {
                s.used_entries = e + 1;
            }
            if w & W_STATE == W_GIVEN {
                s.held += 1;
                if self.is_my_entry(e) {
                    s.mine_given += 1;
                }
            }
        }
        s
    }

    /// [`scan`](Table::scan) that never counts fewer permits held than there are,
    /// for the critical section. A gift moves a permit between two records with two
    /// stores, so a scan overlapping one could miss it; the gifter announces itself in
    /// `gift` and counts in `gifts`, and a scan that saw neither change is exact. Else it
    /// is retried (a gift is a few stores), a dead gifter's mark is cleared, and as a
    /// last resort each overlapping gift is counted as one more permit held.
    pub(super) fn settled_scan(&self) -> Scan {
        let mut attempt = 0u32;
        // Made at the first overlap: the common exact scan reads no clock.
        let mut spin: Option<wait::Spinner> = None;
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
            if g1 != 0 && g1 == g2 && n1 == n2 && attempt > 4 && self.gifter_dead(g1) {
                // A gifter died mid-gift: its records are consistent (see FORMAT.md).
                let _ = self
                    .gift()
                    .compare_exchange(g1, 0, Ordering::SeqCst, Ordering::SeqCst);
                continue;
            }
            if !spin
                .get_or_insert_with(|| wait::Spinner::new(SETTLE_SPIN))
                .step(None)
            {
                s.held += 1 + u64::from(n2.wrapping_sub(n1));
                return s;
            }
        }
    }

    /// The value read without the critical section, for
    /// [`Semaphore::value`](super::Semaphore::value) when a process stays inside it
    /// (stopped): `capacity` minus the permits held by processes that are alive, so a
    /// dead holder's permits count as free as they will once reclaimed (nothing is
    /// reclaimed here). A take cannot run meanwhile (the critical section is taken);
    /// returns and gifts can, as for any reading of a value that other processes change.
    pub(super) fn value_unlocked(&self) -> u32 {
        let scan = self.settled_scan();
        let mut dead = 0u64;
        for i in 0..scan.high {
            let w = self.owner(i).load(Ordering::SeqCst);
            if w != 0 && !self.alive(word_id(w)) {
                dead += u64::from(word_held(w));
            }
        }
        for e in 0..self.wait_high() {
            let who = self.entry_owner(e).load(Ordering::SeqCst);
            if self.entry(e).load(Ordering::SeqCst) & W_STATE == W_GIVEN && !self.alive(who) {
                dead += 1;
            }
        }
        value_of(
            self.capacity().load(Ordering::SeqCst),
            scan.held.saturating_sub(dead),
        )
    }

    /// Returns one permit this process holds (in a waiter entry or its slot); `false` if
    /// it holds none. Lock-free: only this process writes its records while it lives.
    pub(super) fn return_own(&self) -> Result<bool> {
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
            let Some((i, w)) = self.my_slot() else {
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

    /// This process's slot and its owner word: the one the hint names if it is still
    /// ours (a process has at most one slot), else found by reading the slots.
    #[inline]
    fn my_slot(&self) -> Option<(usize, u64)> {
        let i = self.hint.load(Ordering::Relaxed);
        if i < MAX_HOLDERS {
            let w = self.owner(i).load(Ordering::SeqCst);
            if self.is_me(w) {
                return Some((i, w));
            }
        }
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        let found = (0..high)
            .map(|i| (i, self.owner(i).load(Ordering::SeqCst)))
            .find(|&(_, w)| self.is_me(w));
        if let Some((i, _)) = found {
            self.hint.store(i, Ordering::Relaxed);
        }
        found
    }

    /// Frees this process's slot if it is idle (holds no permit): for a handle being
    /// dropped, so that a process that is done with the semaphore leaves no record.
    /// Lock-free: freeing a record is allowed outside the critical section, and a take
    /// by another thread of this process that finds its slot freed claims one afresh.
    pub(super) fn free_idle_slot(&self) {
        if let Some((i, w)) = self.my_slot()
            && word_held(w) == 0
        {
            let _ = self
                .owner(i)
                .compare_exchange(w, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Lowers `high` and `whigh` past the unused slots and entries at their top, as
    /// `scan` (made in the critical section) found them; in the critical section. Only
    /// there does a free slot or entry become used (every other writer only frees them),
    /// so none above the new marks is in use, and a reader that loaded the old mark
    /// reads free records. Returns the new `high`.
    fn trim(&self, scan: &Scan) -> usize {
        if scan.used < scan.high {
            self.high().store(scan.used as u32, Ordering::SeqCst);
        }
        if scan.used_entries < self.wait_high() {
            self.whigh()
                .store(scan.used_entries as u32, Ordering::SeqCst);
        }
        scan.used
    }

    /// Hands a permit this process holds directly to the longest-waiting thread that
    /// sleeps on a waiter entry, and wakes that thread alone: it returns without entering
    /// the critical section. Lock-free. Order: announce the gift (`gift`, `gifts`),
    /// return our permit, mark the entry given, end the announcement, wake.
    pub(super) fn give(&self) -> Gift {
        if self.oldest_waiting(None).is_none() {
            return match self.return_own() {
                Ok(true) => Gift::Returned,
                _ => Gift::NotHeld,
            };
        }
        let tag = (u64::from(self.me) << 32) | 1;
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
                    let _ = wait::wake(self.entry(e), 1);
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
    pub(super) fn oldest_waiting(&self, skip: Option<u32>) -> Option<(usize, u32)> {
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

    /// How many threads wait in waiter entries whose owners are alive (a killed waiter's
    /// entry is not counted, though it stays in the table until the next reclaim).
    pub(super) fn live_waiting(&self) -> u32 {
        (0..self.wait_high())
            .filter(|&e| {
                self.entry(e).load(Ordering::SeqCst) & W_STATE == W_WAITING
                    && self.alive(self.entry_owner(e).load(Ordering::SeqCst))
            })
            .count() as u32
    }

    /// Gives free permits to waiting entries, oldest first, and wakes them; in the
    /// critical section. Returns how many were given.
    pub(super) fn distribute(&self) -> u32 {
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
                let _ = wait::wake(self.entry(e), 1);
                free -= 1;
                given += 1;
            }
        }
        given
    }

    /// Claims a free waiter entry for the calling thread; in the critical section.
    /// Returns its index and word, `None` if the table is full.
    pub(super) fn claim_entry(&self) -> Option<(usize, u32)> {
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
        self.entry_pid(e)
            .store(u64::from(self.pid), Ordering::SeqCst);
        self.entry_owner(e).store(self.me, Ordering::SeqCst);
        self.entry(e).store(w, Ordering::SeqCst);
        Some((e, w))
    }

    /// [`take_locked`](Table::take_locked) when nothing is unusual, in one pass over the
    /// holder table; in the critical section. `None` (nothing changed) when it cannot
    /// decide cheaply: a gift in progress or begun during the pass, waiter entries in the
    /// table, no slot of this process, or its slot changed under the compare-and-swap
    /// (another thread's return). The caller then takes the full way, which also trims.
    ///
    /// With no gift overlapping the pass and no waiter entry, the pass is exact (as
    /// [`settled_scan`](Table::settled_scan)'s): permits are only taken in the
    /// critical section, and a concurrent return only lowers what is held.
    #[inline]
    pub(super) fn take_quick(&self) -> Option<bool> {
        let n1 = self.gifts().load(Ordering::SeqCst);
        if self.gift().load(Ordering::SeqCst) != 0 || self.whigh().load(Ordering::SeqCst) != 0 {
            return None;
        }
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        let mut held = 0u64;
        let mut mine = None;
        for i in 0..high {
            let w = self.owner(i).load(Ordering::SeqCst);
            held += u64::from(word_held(w));
            if self.is_me(w) {
                mine = Some((i, w));
            }
        }
        if self.gift().load(Ordering::SeqCst) != 0 || self.gifts().load(Ordering::SeqCst) != n1 {
            return None;
        }
        let (i, w) = mine?;
        if value_of(self.capacity().load(Ordering::SeqCst), held) == 0 {
            return Some(false);
        }
        self.owner(i)
            .compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::SeqCst)
            .ok()?;
        self.hint.store(i, Ordering::Relaxed);
        Some(true)
    }

    /// Takes a permit if the value is positive; in the critical section.
    ///
    /// The permit goes to this process's slot (kept, idle, when it returns its last
    /// permit), claimed if it has none: a free one, or with all in use another
    /// process's idle one. With every slot holding permits of other processes it goes to
    /// a waiter entry marked given, as a gift would leave it: the caller's own waiting
    /// entry `entry` (then set to `None`: the entry holds the permit now), or one claimed
    /// for it. With no entry free either, `false`: the caller waits like one that found
    /// no permit, woken when a holder returns one (which leaves its slot idle, or frees
    /// its entry).
    pub(super) fn take_locked(&self, entry: &mut Option<(usize, u32)>) -> Result<bool> {
        let scan = self.settled_scan();
        self.trim(&scan);
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
                    Ok(_) => {
                        self.hint.store(i, Ordering::Relaxed);
                        return Ok(true);
                    }
                    Err(now) if word_id(now) == self.me => w = now,
                    // Freed by our own last release meanwhile: claim a slot afresh.
                    Err(_) => break,
                }
            }
        }
        let scan = self.scan();
        let high = self.trim(&scan);
        // An idle slot (no permit in it) can be taken from its process, which changes
        // its word only in the critical section while it holds none, and claims a slot
        // afresh: a dead process's at once (processes killed after their last release
        // leave those), a live one's only when every slot is in use.
        let idle = scan
            .idle
            .filter(|&(_, w)| high >= MAX_HOLDERS || !self.alive(word_id(w)));
        let slot = match scan.free.filter(|&i| i < high) {
            Some(i) => i,
            None => match idle {
                Some((i, w))
                    if self
                        .owner(i)
                        .compare_exchange(w, 0, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok() =>
                {
                    i
                }
                _ if high < MAX_HOLDERS => {
                    // Raise the high-water mark first: a crash right after leaves an
                    // empty slot in range, which is harmless.
                    self.owner(high).store(0, Ordering::SeqCst);
                    self.high().store(high as u32 + 1, Ordering::SeqCst);
                    high
                }
                _ => return Ok(self.take_into_entry(entry)),
            },
        };
        // Claim: the PID first (display only), then owner and count in one store.
        self.holder_pid(slot)
            .store(u64::from(self.pid), Ordering::SeqCst);
        self.owner(slot).store(word(self.me, 1), Ordering::SeqCst);
        self.hint.store(slot, Ordering::Relaxed);
        Ok(true)
    }

    /// Records a permit taken from the pool in a waiter entry of the caller, marked
    /// given: its own waiting `entry`, or a new one; in the critical section, with the
    /// value positive. `false` if no entry is free.
    fn take_into_entry(&self, entry: &mut Option<(usize, u32)>) -> bool {
        let Some((e, w)) = entry.take().or_else(|| self.claim_entry()) else {
            return false;
        };
        // A gifter may have marked the entry given already (lock-free): that permit is
        // ours then, and the pool keeps its own.
        let _ = self.entry(e).compare_exchange(
            w,
            (w & !W_STATE) | W_GIVEN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        true
    }

    /// Frees the slots and waiter entries of processes whose owner ids are dead; in the
    /// critical section. Returns
    /// the number of permits returned.
    pub(super) fn reclaim_dead(&self) -> u64 {
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        let mut reclaimed = 0;
        for i in 0..high {
            let w = self.owner(i).load(Ordering::SeqCst);
            if w == 0 || self.is_me(w) {
                continue;
            }
            if !self.alive(word_id(w))
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
            if !self.alive(self.entry_owner(e).load(Ordering::SeqCst))
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
        if g != 0 && self.gifter_dead(g) {
            let _ = self
                .gift()
                .compare_exchange(g, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        reclaimed
    }

    /// Takes waiter entry `e`, whose word was `w`, out of the queue; `false` if a permit
    /// was handed to it meanwhile (the entry then holds it for this process).
    pub(super) fn leave(&self, e: usize, w: u32) -> bool {
        self.entry(e)
            .compare_exchange(w, w & !W_STATE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The processes holding permits, from the holder table and the waiter entries
    /// holding a handed-over permit: [`Semaphore::holders`](super::Semaphore::holders).
    pub(super) fn holders(&self) -> Vec<SemaphoreHolder> {
        let high = (self.high().load(Ordering::SeqCst) as usize).min(MAX_HOLDERS);
        // (owner id, holder) pairs; the PID and start time are for display only.
        let mut out: Vec<(u32, SemaphoreHolder)> = Vec::new();
        let holder = |id: u32, pid: u64, permits: u32| {
            let pid = u32::try_from(pid).unwrap_or(0);
            SemaphoreHolder {
                pid,
                start_time: sys::process_start_time(pid).unwrap_or(0),
                permits,
                alive: self.alive(id),
            }
        };
        for i in 0..high {
            let w = self.owner(i).load(Ordering::SeqCst);
            if w == 0 || word_held(w) == 0 {
                continue;
            }
            let pid = self.holder_pid(i).load(Ordering::SeqCst);
            out.push((word_id(w), holder(word_id(w), pid, word_held(w))));
        }
        // Permits handed to waiters and still held in their waiter entries.
        for e in 0..self.wait_high() {
            if self.entry(e).load(Ordering::SeqCst) & W_STATE != W_GIVEN {
                continue;
            }
            let id = self.entry_owner(e).load(Ordering::SeqCst);
            match out.iter_mut().find(|(i, _)| *i == id) {
                Some((_, h)) => h.permits = h.permits.saturating_add(1),
                None => {
                    let pid = self.entry_pid(e).load(Ordering::SeqCst);
                    out.push((id, holder(id, pid, 1)));
                }
            }
        }
        out.into_iter().map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_word() {
        let w = word(4242, 3);
        assert_eq!(word_id(w), 4242);
        assert_eq!(word_held(w), 3);
        assert_eq!(word_after_release(w), word(4242, 2));
        assert_eq!(word_after_release(word(4242, 1)), word(4242, 0));
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

    /// The one-pass take decides only the plain case and declines (changing nothing)
    /// whenever the full path must run.
    #[test]
    fn take_quick_decides_only_the_plain_case() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::open(&dir.path().join("sem"), 0o600, 2).unwrap();
        // No slot of this process yet: the full path claims one.
        assert_eq!(t.take_quick(), None);
        assert_eq!(t.scan().held, 0);
        assert!(t.take_locked(&mut None).unwrap());
        assert_eq!(t.take_quick(), Some(true));
        assert_eq!(t.scan().held, 2);
        // Value 0: no permit, nothing changed.
        assert_eq!(t.take_quick(), Some(false));
        assert_eq!(t.scan().held, 2);
        assert!(t.return_own().unwrap());
        // A gift in progress, or waiter entries in the table: declined.
        t.gift().store(1, Ordering::SeqCst);
        assert_eq!(t.take_quick(), None);
        t.gift().store(0, Ordering::SeqCst);
        t.whigh().store(1, Ordering::SeqCst);
        assert_eq!(t.take_quick(), None);
        assert_eq!(t.scan().held, 1);
        t.whigh().store(0, Ordering::SeqCst);
        assert_eq!(t.take_quick(), Some(true));
        assert_eq!(t.scan().held, 2);
        // Another process's permits count: with its slot holding one, one is left.
        assert!(t.return_own().unwrap());
        assert!(t.return_own().unwrap());
        t.owner(1).store(word(t.me + 1, 1), Ordering::SeqCst);
        t.high().store(2, Ordering::SeqCst);
        assert_eq!(t.take_quick(), Some(true));
        assert_eq!(t.take_quick(), Some(false));
        assert_eq!(t.scan().held, 2);
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
}
