//! The request board: contended `increment`s combined into one SQLite transaction.
//!
//! A commit costs SQLite far more than the statements inside it (WAL append, WAL index,
//! locks), and only one writer can commit at a time. So a writer that finds the writers'
//! lock taken does not queue for it: it publishes its request in its slot of a small
//! shared mapping, `PATH-board`, and sleeps on the slot's state word. Whoever holds the
//! lock next (the *combiner*) applies every pending request in one transaction, writes
//! each result back into its slot and wakes its owner.
//!
//! Exactly-once across crashes rests on one rule: before its commit, the combiner notes
//! the batch as *in doubt* on the board (a random batch id in the header, and in each
//! request's slot that id with the request's outcome), and its transaction writes that
//! id into every row it changes (column `kv.batch`): the pages the batch writes anyway.
//! A request is pending in the board until marked done. Every fileipc writer, once it
//! holds the writers' lock and before it writes anything, settles a batch left in doubt
//! by a combiner that died between its commit and the end of its marking
//! (`settle`): if a changed row carries the batch's id the batch committed and its
//! pending requests are marked done with their noted outcomes, else they stay pending
//! and are applied anew. The full argument is in `docs/FORMAT.md`.
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

/// Format version of the board file: 3 since combiners note their batch in doubt
/// (`IN_DOUBT`, the slots' `BATCH`) instead of recording outcomes in `fileipc_applied`
/// (version 2; version 1 held a PID and start time where owner ids are now).
pub(super) const VERSION: u32 = 3;
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
/// The id of the batch a combiner applied the pending request in, noted before its
/// commit with `RESULT` and `STATUS`; cleared by each publication.
const BATCH: usize = 48;

/// The operation of a request (only `increment` is combined).
const OP_INCREMENT: u32 = 1;

// The state word: bits 0-1 the state, bit 2 "the owner sleeps on this word", bit 3
// unused (zero), bits 4-31 a counter bumped by every change, so a sleeper whose word
// changed never misses it.
const STATE_MASK: u32 = 0b11;
const IDLE: u32 = 0;
const PENDING: u32 = 1;
const DONE: u32 = 2;
const SLEEPING: u32 = 0b100;
const TICK: u32 = 0b1_0000;

/// The outcome of a request, as stored in its slot.
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
/// Where the batch in doubt is noted: the id of the batch whose combiner is between
/// noting it (before its commit) and marking the last of its requests done; 0 = none.
/// Only the holder of the writers' lock writes it.
const IN_DOUBT: usize = HEADER_LEN + 8;

/// How long a combiner's lease runs after it released the writers' lock.
const LEASE_US: u32 = 30;

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
    /// The key, or `None` if the slot holds a damaged request.
    pub(super) key: Option<String>,
    pub(super) delta: i64,
}

/// The outcome of a request: the key's new value, or a refusal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Applied {
    pub(super) result: i64,
    pub(super) status: u32,
}

/// A request noted in the batch in doubt, for `settle`.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) slot: usize,
    /// Whether it is still pending (else it is the caller's own, withdrawn).
    pub(super) pending: bool,
    /// The key, or `None` if it is not valid UTF-8.
    pub(super) key: Option<String>,
    pub(super) outcome: Applied,
}

impl Board {
    /// Opens the board at `path`, creating it (all slots free) if missing.
    pub(super) fn open(path: &Path, mode: u32) -> Result<Board> {
        let file = state::open_or_create(path, LAYOUT, mode, |_| {})?;
        let owners = Owners::of(&file.file, &file.path)?;
        Ok(Board { file, owners })
    }

    /// Puts a new board (all slots free) at `path` in place of whatever is there, by
    /// renaming a fresh one (made at `path` + `.new`) over it: processes that mapped the
    /// old file keep using it among themselves. Under the writers' lock.
    pub(super) fn replace(path: &Path, mode: u32) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = std::path::PathBuf::from(tmp);
        // A fresh board, or one a replacement killed before its rename left (never used).
        drop(state::open_or_create(&tmp, LAYOUT, mode, |_| {})?);
        std::fs::rename(&tmp, path).at("rename", path)
    }

    fn in_doubt_word(&self) -> &AtomicU64 {
        self.file.map.u64(IN_DOUBT)
    }

    /// The id of the batch in doubt, 0 if none.
    pub(super) fn in_doubt(&self) -> u64 {
        self.in_doubt_word().load(Ordering::Acquire)
    }

    /// Notes batch `batch` as in doubt (the combiner, before its commit).
    pub(super) fn set_in_doubt(&self, batch: u64) {
        self.in_doubt_word().store(batch, Ordering::SeqCst);
    }

    /// Ends the doubt about batch `batch`, once each of its requests is marked done (or
    /// found not committed).
    pub(super) fn clear_in_doubt(&self, batch: u64) {
        let _ =
            self.in_doubt_word()
                .compare_exchange(batch, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Notes in a request's slot that batch `batch` applied it with `outcome` (the
    /// combiner, holding the writers' lock, before its commit; the slot is pending, or
    /// its own, withdrawn).
    pub(super) fn prepare(&self, slot: usize, batch: u64, outcome: Applied) {
        self.u64_field(slot, RESULT)
            .store(outcome.result as u64, Ordering::Relaxed);
        self.u32_field(slot, STATUS)
            .store(outcome.status, Ordering::Relaxed);
        self.u64_field(slot, BATCH).store(batch, Ordering::SeqCst);
    }

    /// Forgets a slot's note of batch `batch` (a batch found not committed).
    pub(super) fn unprepare(&self, slot: usize, batch: u64) {
        let _ = self.u64_field(slot, BATCH).compare_exchange(
            batch,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The requests noted in batch `batch` that are still pending, and the slot `own`
    /// (the caller's, not pending: withdrawn by its combiner) if it was noted in it. Holding
    /// the writers' lock: nobody changes a pending request meanwhile.
    pub(super) fn prepared(&self, batch: u64, own: Option<usize>) -> Vec<Prepared> {
        let mut out = Vec::new();
        for i in 0..SLOTS {
            let pending = self.state(i).load(Ordering::Acquire) & STATE_MASK == PENDING;
            if !pending && own != Some(i) {
                continue;
            }
            if self.u64_field(i, BATCH).load(Ordering::Acquire) != batch {
                continue;
            }
            out.push(Prepared {
                slot: i,
                pending,
                key: self.key(i),
                outcome: Applied {
                    result: self.u64_field(i, RESULT).load(Ordering::Relaxed) as i64,
                    status: self.u32_field(i, STATUS).load(Ordering::Relaxed),
                },
            });
        }
        out
    }

    /// The key published in `slot`: `None` if its recorded length is out of range or
    /// the bytes are not UTF-8 (a damaged slot).
    fn key(&self, slot: usize) -> Option<String> {
        let len = self.u32_field(slot, KEY_LEN).load(Ordering::Relaxed) as usize;
        if !(1..=KEY_MAX).contains(&len) {
            return None;
        }
        String::from_utf8(self.file.map.copy_out_vec(Self::at(slot, KEY_AT), len)).ok()
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
        self.u64_field(slot, BATCH).store(0, Ordering::Relaxed);
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
            let delta = self.u64_field(i, DELTA).load(Ordering::Relaxed) as i64;
            let op = self.u32_field(i, OP).load(Ordering::Relaxed);
            let key = if op == OP_INCREMENT {
                self.key(i)
            } else {
                None
            };
            out.push(Request {
                slot: i,
                key,
                delta,
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

/// The identity a slot owner records: the process's owner id in the board file (what
/// [`Owners::is_alive`] checks).
pub(super) fn owner_ident(board: &Board) -> Result<u64> {
    Ok(u64::from(board.owners.process_id()?))
}

const _: () = assert!(
    HEADER_LEN <= SLOTS_AT
        && IN_DOUBT + 8 <= SLOTS_AT
        && LEASE + 8 <= IN_DOUBT
        && BATCH + 8 <= KEY_AT
        && KEY_AT + KEY_MAX == SLOT_LEN
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_transitions_keep_counter_moving() {
        let w = next(0, PENDING);
        assert_eq!(w & STATE_MASK, PENDING);
        let k = kicked(w | SLEEPING);
        assert_ne!(k, w);
        assert_eq!(k & (SLEEPING | STATE_MASK), PENDING);
        assert_eq!(next(k, IDLE) & (TICK - 1), IDLE);
        assert_eq!(next(u32::MAX, DONE) & STATE_MASK, DONE);
    }

    #[test]
    fn prepared_requests_of_the_batch_in_doubt() {
        let dir = tempfile::tempdir().unwrap();
        let b = Board::open(&dir.path().join("b"), 0o600).unwrap();
        let me = owner_ident(&b).unwrap();
        let (s, _) = b.claim(me).unwrap();
        let (t, _) = b.claim(me).unwrap();
        let (u, _) = b.claim(me).unwrap();
        b.publish(s, 1, "k", 5);
        b.publish(t, 1, "j", 1);
        let ok = Applied {
            result: 15,
            status: STATUS_OK,
        };
        b.set_in_doubt(9);
        b.prepare(s, 9, ok);
        b.prepare(u, 9, ok); // u: not pending, so only as the caller's own slot
        let p = b.prepared(9, None);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].slot, p[0].pending, p[0].key.as_deref()),
            (s, true, Some("k"))
        );
        assert_eq!(p[0].outcome, ok);
        assert_eq!(b.prepared(9, Some(u)).len(), 2);
        assert!(b.prepared(8, Some(u)).is_empty());
        b.clear_in_doubt(8);
        assert_eq!(b.in_doubt(), 9, "only the batch named is cleared");
        b.clear_in_doubt(9);
        assert_eq!(b.in_doubt(), 0);
        // A new publication in the slot is no longer the noted request.
        let _ = b.finish(s, ok);
        assert_eq!(b.take_done(s), Some(Ok(15)));
        b.publish(s, 2, "k", 5);
        assert!(b.prepared(9, None).is_empty());
        b.unprepare(u, 9);
        assert!(b.prepared(9, Some(u)).is_empty());
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
            (p[0].slot, p[0].key.as_deref(), p[0].delta),
            (s, Some("k"), 5)
        );
        let sleeping = b.finish(
            s,
            Applied {
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
