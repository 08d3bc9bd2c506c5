//! The request board: contended `increment`s combined into one SQLite transaction.
//!
//! A commit costs SQLite far more than the statements inside it (WAL append, WAL index,
//! locks), and only one writer can commit at a time. So a writer that finds the writers'
//! lock taken does not queue for it: it publishes its request in its slot of a small
//! shared mapping, `PATH-board`, and sleeps on the slot's state word. Whoever holds the
//! lock next (the *combiner*) applies every pending request in one transaction, writes
//! each result back into its slot and wakes its owner.
//!
//! Exactly-once across crashes rests on one rule: the combiner records, in the same
//! SQLite transaction as the changes, the sequence number and outcome of every request
//! it applied (table `fileipc_applied`). A request is pending in the board until marked
//! done; a combiner finding a pending request whose sequence number the record already
//! holds (its predecessor died between commit and marking) only marks it done, with the
//! recorded outcome. The full argument is in `docs/FORMAT.md`.
//!
//! Batches only form if the owners are awake when their results arrive, so that they
//! publish their next requests while the combiner's next transaction is open: waiting
//! owners spin briefly before sleeping ([`SPIN`]), the combiner keeps the role for a
//! short lease after each batch ([`Board::renew_lease`]) and, if the batch held others'
//! requests, yields the CPU once after it, so that an owner sharing its CPU gets to run. The lease and the spinning are
//! hints for speed only; no rule of exactly-once depends on them.
//!
//! This module is the board itself (layout, slot states, publication, waiting, waking);
//! the combiner's transaction is in `combining`, its statements in `sql`.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{IoResultExt, Result};
use crate::state::{self, HEADER_LEN, Kind, Layout, StateFile};
use std::sync::Arc;

use crate::owner::Owners;
use crate::sys;
use crate::wait::{self, Spin, Spinner};

/// Format version of the board file: 2 since slot owners are owner ids (`owner.rs`),
/// whose life the kernel vouches for (version 1 held a PID and start time).
pub(super) const VERSION: u32 = 2;
/// Number of request slots: at most this many handles combine at once; others take the
/// writers' lock themselves.
pub(super) const SLOTS: usize = 64;
/// Bytes per slot.
const SLOT_LEN: usize = 256;
/// Where the slots start.
const SLOTS_AT: usize = 128;
/// Where a slot's key bytes start, from the slot start.
const KEY_AT: usize = 64;
/// The longest key a slot holds; longer keys take the writers' lock themselves.
pub(super) const KEY_MAX: usize = SLOT_LEN - KEY_AT;
/// Length of the mapped region.
const LEN: usize = SLOTS_AT + SLOTS * SLOT_LEN;

const LAYOUT: Layout = Layout {
    kind: Kind::SharedDataBoard,
    version: VERSION,
    len: LEN,
};

// Slot fields, offsets from the slot start.
const STATE: usize = 0;
const KEY_LEN: usize = 4;
const OWNER: usize = 8;
const SEQ: usize = 16;
const DELTA: usize = 24;
const RESULT: usize = 32;
const STATUS: usize = 40;
const OP: usize = 44;

/// The operation of a request (only `increment` is combined).
const OP_INCREMENT: u32 = 1;

// The state word: bits 0-1 the state, bit 2 "the owner sleeps on this word", bit 3 "a
// combiner has read this request", bits 4-31 a counter bumped by every change, so a
// sleeper whose word changed never misses it.
const STATE_MASK: u32 = 0b11;
const IDLE: u32 = 0;
const PENDING: u32 = 1;
const DONE: u32 = 2;
const SLEEPING: u32 = 0b100;
const TAKEN: u32 = 0b1000;
const TICK: u32 = 0b1_0000;

/// The outcome of a request, as stored in its slot and in the record.
pub(super) const STATUS_OK: u32 = 0;
/// The current value is not an integer in `i64` range: nothing was changed.
pub(super) const STATUS_NOT_INTEGER: u32 = 1;
/// The sum overflows `i64`: nothing was changed.
pub(super) const STATUS_OVERFLOW: u32 = 2;
/// The request itself is damaged (key not UTF-8, unknown operation): nothing was changed.
pub(super) const STATUS_BAD_REQUEST: u32 = 3;

/// How long a waiting owner spins (yielding the CPU now and then) before it sleeps: a
/// few combines' worth. An owner that is awake when its result arrives publishes its
/// next request within microseconds, in time for the combiner's next batch; one that
/// sleeps costs the combiner a wake-up call and takes tens of microseconds to run again
/// (on a 2-vCPU VM, ~45 us across CPUs), so batches stay at one or two requests and
/// combining gains nothing over taking turns (measured: 0.9x bare SQLite sleeping at
/// once, ~2x spinning first; `docs/BENCHMARKS.md`).
const SPIN: Duration = Duration::from_micros(100);
/// Spin iterations between two `sched_yield`s while spinning, so that a spinning owner
/// sharing its CPU lets the combiner or another owner run (spinning without yielding
/// measured 0.4x bare SQLite; yielding every 4 to 64 iterations all did well, 4 best
/// when other programs load the machine).
const YIELD_EVERY: u32 = 4;

/// Where the combiner's lease is noted (see [`Board::renew_lease`]): its slot + 1 in the
/// high half, the [`sys::monotonic_micros`] time of its last release of the writers'
/// lock in the low half; 0 = none. (In the header's reserved bytes, which older
/// versions leave zero and never read: a compatible extension of version 1.)
const LEASE: usize = HEADER_LEN;
/// Where the board's identity is: a random 64-bit number written when the board file
/// is created (never 0 or 1), naming its row of `fileipc_applied`. Slot numbers of
/// two boards (one deleted while handles still use it, and its replacement) must not
/// share record entries, or a request of one board could be taken for an applied
/// request of the other. 0 = a board created before identities (reserved bytes), whose
/// row is 1 as before.
const IDENTITY: usize = HEADER_LEN + 8;
/// The record row of a board created before identities.
const LEGACY_ROW: i64 = 1;

/// How long a combiner's lease runs after it released the writers' lock.
const LEASE_US: u32 = 30;

/// Bytes per slot in the record of applied requests (`fileipc_applied.slots`).
pub(super) const RECORD_ENTRY: usize = 24;
/// Length of the record blob.
pub(super) const RECORD_LEN: usize = SLOTS * RECORD_ENTRY;

/// The word after a change of state (which clears the flags).
fn next(word: u32, state: u32) -> u32 {
    (word & !(TICK - 1)).wrapping_add(TICK) | state
}

/// The word of a pending request after a kick: only the counter moves.
fn kicked(word: u32) -> u32 {
    (word & !SLEEPING).wrapping_add(TICK)
}

/// The request board of one store, mapped.
#[derive(Debug)]
pub(super) struct Board {
    file: StateFile,
    /// Who owns the slots, and whether they live.
    owners: Arc<Owners>,
}

/// A request read by the combiner.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) slot: usize,
    pub(super) seq: u64,
    /// The key, or `None` if the slot holds a damaged request.
    pub(super) key: Option<String>,
    pub(super) delta: i64,
    /// Whether an earlier combiner read this request already (it may have applied it,
    /// and died before marking it done).
    pub(super) taken: bool,
}

/// One entry of the record of applied requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Applied {
    pub(super) seq: u64,
    pub(super) result: i64,
    pub(super) status: u32,
}

impl Applied {
    /// Entry `slot` of a record blob (zero where the blob is short).
    pub(super) fn read(record: &[u8], slot: usize) -> Applied {
        let at = slot * RECORD_ENTRY;
        let mut e = [0u8; RECORD_ENTRY];
        if let Some(src) = record.get(at..at + RECORD_ENTRY) {
            e.copy_from_slice(src);
        }
        let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().unwrap_or_default());
        Applied {
            seq: u64_at(0),
            result: u64_at(8) as i64,
            status: u32::from_le_bytes(e[16..20].try_into().unwrap_or_default()),
        }
    }

    /// Writes this entry as entry `slot` of `record`, lengthening it if needed (a
    /// record only grows).
    pub(super) fn write(self, record: &mut Vec<u8>, slot: usize) {
        let at = slot * RECORD_ENTRY;
        if record.len() < at + RECORD_ENTRY {
            record.resize(at + RECORD_ENTRY, 0);
        }
        if let Some(e) = record.get_mut(at..at + RECORD_ENTRY) {
            e[0..8].copy_from_slice(&self.seq.to_le_bytes());
            e[8..16].copy_from_slice(&self.result.to_le_bytes());
            e[16..20].copy_from_slice(&self.status.to_le_bytes());
            e[20..24].fill(0);
        }
    }
}

impl Board {
    /// Opens the board at `path`, creating it (all slots free) if missing.
    pub(super) fn open(path: &Path, mode: u32) -> Result<Board> {
        let file = state::open_or_create(path, LAYOUT, mode, |region| {
            let at = IDENTITY - HEADER_LEN;
            region[at..at + 8].copy_from_slice(&new_identity().to_le_bytes());
        })?;
        let owners = Owners::of(&file.file, &file.path)?;
        Ok(Board { file, owners })
    }

    /// The row of `fileipc_applied` holding this board's record: its identity, or 1
    /// for a board created before identities.
    pub(super) fn record_row(&self) -> i64 {
        match self.file.map.u64(IDENTITY).load(Ordering::Relaxed) {
            0 => LEGACY_ROW,
            id => id as i64,
        }
    }

    fn lease(&self) -> &AtomicU64 {
        self.file.map.u64(LEASE)
    }

    /// Called by a combiner (the owner of `slot`) as it releases the writers' lock after
    /// a batch: for [`LEASE_US`] the others leave the lock to it (see
    /// [`Board::lease_left`]). A process that keeps incrementing is back within
    /// microseconds and combines whatever was published meanwhile; if the lock changed
    /// hands at every batch instead, each new combiner would start with a cold SQLite
    /// page cache (another connection wrote last) and the old one would have to be
    /// woken, which measured about half the throughput.
    pub(super) fn renew_lease(&self, slot: usize) {
        let now = u64::from(sys::monotonic_micros());
        self.lease()
            .store(((slot as u64 + 1) << 32) | now, Ordering::Release);
    }

    /// How much longer another slot's owner holds the lease, if it does: meanwhile the
    /// owner of `slot` waits for its result instead of trying the writers' lock. Only a
    /// hint: a lease ends by itself, so a lease holder that died or went on to other
    /// work delays the others by at most [`LEASE_US`].
    pub(super) fn lease_left(&self, slot: usize) -> Option<Duration> {
        let lease = self.lease().load(Ordering::Acquire);
        let holder = lease >> 32;
        if holder == 0 || holder == slot as u64 + 1 {
            return None;
        }
        let age = sys::monotonic_micros().wrapping_sub(lease as u32);
        (age < LEASE_US).then(|| Duration::from_micros(u64::from(LEASE_US - age)))
    }

    fn at(slot: usize, field: usize) -> usize {
        SLOTS_AT + slot * SLOT_LEN + field
    }

    fn state(&self, slot: usize) -> &AtomicU32 {
        self.file.map.u32(Self::at(slot, STATE))
    }

    fn owner(&self, slot: usize) -> &AtomicU64 {
        self.file.map.u64(Self::at(slot, OWNER))
    }

    fn u64_field(&self, slot: usize, field: usize) -> &AtomicU64 {
        self.file.map.u64(Self::at(slot, field))
    }

    fn u32_field(&self, slot: usize, field: usize) -> &AtomicU32 {
        self.file.map.u32(Self::at(slot, field))
    }

    /// Claims a slot for a handle of this process: a free one, or else one whose owner
    /// died with no request pending. Returns the slot and the last sequence number used
    /// in it; `None` if every slot is taken by a live process (or has a dead owner's
    /// request still pending).
    pub(super) fn claim(&self, me: u64) -> Option<(usize, u64)> {
        let mut won = None;
        for i in 0..SLOTS {
            if self
                .owner(i)
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                won = Some(i);
                break;
            }
        }
        if won.is_none() {
            for i in 0..SLOTS {
                let owner = self.owner(i).load(Ordering::Acquire);
                // A dead owner can no longer publish, so a slot seen not pending stays
                // so; a pending one waits for the next combiner to apply it.
                let state = self.state(i).load(Ordering::Acquire) & STATE_MASK;
                if owner == 0
                    || state == PENDING
                    || u32::try_from(owner).is_ok_and(|id| self.owners.is_alive(id))
                {
                    continue;
                }
                if self
                    .owner(i)
                    .compare_exchange(owner, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    won = Some(i);
                    break;
                }
            }
        }
        let i = won?;
        // Only the owner moves a slot out of DONE or IDLE; nobody else changes the
        // word of a slot that is not pending.
        let w = self.state(i).load(Ordering::Acquire);
        self.state(i).store(next(w, IDLE), Ordering::Release);
        Some((i, self.u64_field(i, SEQ).load(Ordering::Acquire)))
    }

    /// Gives a claimed slot back (its state is idle).
    pub(super) fn release(&self, slot: usize, me: u64) {
        let _ = self
            .owner(slot)
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Publishes an increment request in the caller's slot.
    pub(super) fn publish(&self, slot: usize, seq: u64, key: &str, delta: i64) {
        let key = key.as_bytes();
        debug_assert!(key.len() <= KEY_MAX);
        self.file.map.copy_in(Self::at(slot, KEY_AT), key);
        self.u32_field(slot, KEY_LEN)
            .store(key.len() as u32, Ordering::Relaxed);
        self.u32_field(slot, OP)
            .store(OP_INCREMENT, Ordering::Relaxed);
        self.u64_field(slot, DELTA)
            .store(delta as u64, Ordering::Relaxed);
        self.u64_field(slot, SEQ).store(seq, Ordering::Relaxed);
        // SeqCst: ordered before the caller's attempt at the lock, against the
        // releaser's scan after its unlock (see `kick`).
        let w = self.state(slot).load(Ordering::Relaxed);
        self.state(slot).store(next(w, PENDING), Ordering::SeqCst);
    }

    /// If the caller's request is done: its result (`Err(status)` for a refused one),
    /// and the slot is idle again.
    pub(super) fn take_done(&self, slot: usize) -> Option<std::result::Result<i64, u32>> {
        let w = self.state(slot).load(Ordering::Acquire);
        if w & STATE_MASK != DONE {
            return None;
        }
        let status = self.u32_field(slot, STATUS).load(Ordering::Relaxed);
        let result = self.u64_field(slot, RESULT).load(Ordering::Relaxed) as i64;
        self.state(slot).store(next(w, IDLE), Ordering::Release);
        Some(if status == STATUS_OK {
            Ok(result)
        } else {
            Err(status)
        })
    }

    /// Takes the caller's pending request back; only while holding the writers' lock
    /// (so no combiner is reading it).
    pub(super) fn withdraw(&self, slot: usize) {
        let _ = self
            .state(slot)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & STATE_MASK == PENDING).then_some(next(w, IDLE))
            });
    }

    /// The caller's state word, read before it tries the writers' lock: [`Board::wait`]
    /// sleeps only if the word still holds this value, so a kick or completion between
    /// the two is never missed.
    pub(super) fn observe(&self, slot: usize) -> u32 {
        self.state(slot).load(Ordering::SeqCst)
    }

    /// Waits while the caller's state word still holds `seen` (from
    /// [`Board::observe`]): until its request is done, it is kicked, `limit` (default: a
    /// slice, [`wait::WAITER_SLICE`]) passes, or spuriously. Spins for up to [`SPIN`]
    /// first, then sleeps on the word.
    pub(super) fn wait(&self, slot: usize, seen: u32, limit: Option<Duration>) -> Result<()> {
        let word = self.state(slot);
        let start = Instant::now();
        let limit = limit.unwrap_or(wait::WAITER_SLICE);
        let until = start + limit;
        // The spin ends after SPIN, or at `until` if the limit is shorter.
        let mut spin = Spinner::new(Spin::Timed {
            limit: SPIN,
            yield_every: YIELD_EVERY,
        });
        loop {
            if word.load(Ordering::Acquire) != seen {
                spin.finish();
                return Ok(());
            }
            if !spin.step(Some(until)) {
                break;
            }
        }
        spin.finish();
        if SPIN >= limit {
            return Ok(());
        }
        let asleep = seen | SLEEPING;
        if word
            .compare_exchange(seen, asleep, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(()); // changed meanwhile: look again
        }
        wait::sleep(word, asleep, until).at("futex wait", &self.file.path)?;
        Ok(())
    }

    /// The pending requests in slots not marked in `skip`, for the combiner (holding
    /// the writers' lock).
    pub(super) fn pending(&self, skip: &[bool; SLOTS]) -> Vec<Request> {
        let mut out = Vec::new();
        for (i, &skip) in skip.iter().enumerate() {
            if skip || self.state(i).load(Ordering::Acquire) & STATE_MASK != PENDING {
                continue;
            }
            let taken = self.state(i).fetch_or(TAKEN, Ordering::AcqRel) & TAKEN != 0;
            let seq = self.u64_field(i, SEQ).load(Ordering::Relaxed);
            let delta = self.u64_field(i, DELTA).load(Ordering::Relaxed) as i64;
            let op = self.u32_field(i, OP).load(Ordering::Relaxed);
            let len = self.u32_field(i, KEY_LEN).load(Ordering::Relaxed) as usize;
            let key = if op == OP_INCREMENT && (1..=KEY_MAX).contains(&len) {
                let mut buf = vec![0u8; len];
                self.file.map.copy_out(Self::at(i, KEY_AT), &mut buf);
                String::from_utf8(buf).ok()
            } else {
                None
            };
            out.push(Request {
                slot: i,
                seq,
                key,
                delta,
                taken,
            });
        }
        out
    }

    /// Marks a request done with its outcome; whether its owner sleeps and must be
    /// woken with [`Board::wake`] (best after releasing the writers' lock, so the next
    /// combiner need not wait for the wake-up calls).
    pub(super) fn finish(&self, slot: usize, outcome: Applied) -> bool {
        self.u64_field(slot, RESULT)
            .store(outcome.result as u64, Ordering::Relaxed);
        self.u32_field(slot, STATUS)
            .store(outcome.status, Ordering::Relaxed);
        let old = self
            .state(slot)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & STATE_MASK == PENDING).then_some(next(w, DONE))
            });
        matches!(old, Ok(old) if old & SLEEPING != 0)
    }

    /// Wakes the owner of a slot sleeping in [`Board::wait`].
    pub(super) fn wake(&self, slot: usize) {
        let _ = wait::wake(self.state(slot), 1);
    }

    /// After releasing the writers' lock: wakes the owner of one pending request (if
    /// any), so that it takes the lock and combines. Called by every releaser, so a
    /// request published before this scan is seen here, and one published after it
    /// finds the lock free or held by someone who will scan again after it.
    pub(super) fn kick(&self, start: usize) {
        for k in 0..SLOTS {
            let i = (start + k) % SLOTS;
            let word = self.state(i);
            if word.load(Ordering::SeqCst) & STATE_MASK != PENDING {
                continue;
            }
            let old = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & STATE_MASK == PENDING).then_some(kicked(w))
            });
            if let Ok(old) = old {
                if old & SLEEPING != 0 {
                    let _ = wait::wake(word, 1);
                }
                return;
            }
        }
    }
}

/// A fresh board identity: 64 bits from the standard library's randomly keyed hasher
/// (seeded from the OS), mixed with the time and the PID; never 0 or 1.
fn new_identity() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        let id = h.finish();
        if id > 1 {
            return id;
        }
    }
}

/// The identity a slot owner records: the process's owner id in the board file (what
/// [`Owners::is_alive`] checks).
pub(super) fn owner_ident(board: &Board) -> Result<u64> {
    Ok(u64::from(board.owners.process_id()?))
}

const _: () = assert!(
    HEADER_LEN <= SLOTS_AT
        && IDENTITY + 8 <= SLOTS_AT
        && LEASE + 8 <= IDENTITY
        && KEY_AT + KEY_MAX == SLOT_LEN
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_transitions_keep_counter_moving() {
        let w = next(0, PENDING);
        assert_eq!(w & STATE_MASK, PENDING);
        let k = kicked(w | SLEEPING | TAKEN);
        assert_ne!(k, w | TAKEN);
        assert_eq!(k & (SLEEPING | TAKEN | STATE_MASK), TAKEN | PENDING);
        assert_eq!(next(k, IDLE) & (TICK - 1), IDLE);
        assert_eq!(next(u32::MAX, DONE) & STATE_MASK, DONE);
    }

    #[test]
    fn record_entries_round_trip() {
        let mut rec = Vec::new();
        let a = Applied {
            seq: 7,
            result: -3,
            status: STATUS_OVERFLOW,
        };
        a.write(&mut rec, SLOTS - 1);
        assert_eq!(rec.len(), RECORD_LEN);
        assert_eq!(Applied::read(&rec, SLOTS - 1), a);
        assert_eq!(Applied::read(&rec, 0), Applied::default());
        assert_eq!(Applied::read(&[], 3), Applied::default());
    }

    #[test]
    fn publish_combine_finish_take() {
        let dir = tempfile::tempdir().unwrap();
        let b = Board::open(&dir.path().join("b"), 0o600).unwrap();
        let me = owner_ident(&b).unwrap();
        let (s, seq) = b.claim(me).unwrap();
        assert_eq!(seq, 0);
        let (t, _) = b.claim(me).unwrap();
        assert_ne!(s, t);
        b.publish(s, 1, "k", 5);
        assert!(b.take_done(s).is_none());
        let p = b.pending(&[false; SLOTS]);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].slot, p[0].seq, p[0].key.as_deref(), p[0].delta),
            (s, 1, Some("k"), 5)
        );
        assert!(!p[0].taken);
        assert!(b.pending(&[false; SLOTS])[0].taken, "read once already");
        let sleeping = b.finish(
            s,
            Applied {
                seq: 1,
                result: 42,
                status: STATUS_OK,
            },
        );
        assert!(!sleeping);
        assert_eq!(b.take_done(s), Some(Ok(42)));
        assert!(b.pending(&[false; SLOTS]).is_empty());
        b.release(s, me);
        b.release(t, me);
        assert_eq!(
            b.claim(me).map(|c| c.1),
            Some(1),
            "sequence kept across owners"
        );
    }
}
