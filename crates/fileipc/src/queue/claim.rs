//! Claim/ack (at-least-once delivery) on the local engine: the grant behind
//! [`Claimed`](super::Claimed), the claim calls, redelivery of
//! messages whose claimer died, gave them back or let the lease run out, and dead
//! letters. The in-flight table they work on is in `inflight.rs`.
//!
//! A claim takes a record at the head as a receive does, but first records it in an
//! in-flight slot, so the message stays in the log (its segment is kept) until the
//! claim is acknowledged. Claimers take the *claim lock* around the head exchange only
//! (a few hundred nanoseconds): that makes "did the exchange happen?" answerable after
//! a claimer died in between (see [`LocalQueue::repair_claims`]). Plain receivers take
//! no part in it: a plain `recv` costs exactly what it cost before.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::consume::{LockWait, Skip, record_at};
use super::control;
use super::inflight::{self, CLAIMED, FREE, READY, State, TAKING};
use super::open::{LocalQueue, lock_cache};
use super::options::QueueOptions;
use super::record::{HEADER, Header};
use crate::error::{Error, Result};
use crate::wait;

/// The default lease: how long a claimed message stays invisible to other claimers
/// unless acknowledged, given back or extended.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How often at most a claimer checks whether the owners of other claims are alive
/// while it finds work (each check is one system call per claim in the table); a
/// claimer that waits checks at every slice.
const OWNER_CHECK_NS: u64 = 2_000_000;

/// A waiting claimer looks at the in-flight table at least this often: claims of dead
/// owners, ended leases and released messages ring no doorbell.
const CLAIM_SLICE: Duration = Duration::from_millis(10);

/// The name of the dead-letter queue's directory inside the queue's directory.
pub(crate) const DEAD_LETTERS: &str = "dead-letters";

/// A handle's claim settings and state.
pub(crate) struct ClaimConfig {
    lease_ns: u64,
    max_deliveries: u32,
    opts: QueueOptions,
    /// When this handle last checked the owners of other claims (boot clock, ns).
    last_check: AtomicU64,
    dead: OnceLock<Box<LocalQueue>>,
}

impl ClaimConfig {
    pub(super) fn new(opts: &QueueOptions) -> ClaimConfig {
        ClaimConfig {
            lease_ns: duration_ns(opts.lease),
            max_deliveries: opts.max_deliveries,
            opts: opts.clone(),
            last_check: AtomicU64::new(0),
            dead: OnceLock::new(),
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A claim on the local engine: the in-flight slot it holds, and the message's copy.
/// The public [`Claimed`](super::Claimed) wraps it.
pub(crate) struct LocalClaim<'q> {
    q: &'q LocalQueue,
    slot: usize,
    state: State,
    seq: u64,
    data: Vec<u8>,
    fence: u64,
    /// The record header's dead-letter delivery count.
    dead_attempts: u32,
    done: bool,
}

impl std::fmt::Debug for LocalClaim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClaim")
            .field("seq", &self.seq)
            .field("attempt", &self.attempt())
            .field("fence", &self.fence)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl LocalClaim<'_> {
    /// The message's bytes, exactly as sent.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Which delivery of the message this is: 1 the first time, 2 after one redelivery...
    pub(crate) fn attempt(&self) -> u32 {
        self.state.attempt()
    }

    /// The fencing token of this grant: higher than that of every earlier claim of the
    /// queue (of any message, by any process, and of a queue once created at the same
    /// path: the counter starts from the wall clock in nanoseconds), never reused. Pass it
    /// to the resource the work writes to, which refuses tokens lower than the highest it
    /// has seen: a claimer stopped past its lease then cannot overwrite its successor's
    /// work (`UPDATE ... WHERE last_fence < $fence`).
    pub(crate) fn fence(&self) -> u64 {
        self.fence
    }

    /// In a [dead-letter queue](super::MessageQueue::dead_letters): how many deliveries
    /// the message had before it was moved there (as
    /// [`Message::dead_letter_attempts`](super::Message::dead_letter_attempts)).
    pub(crate) fn dead_letter_attempts(&self) -> u32 {
        self.dead_attempts
    }

    /// The message's sequence number in the queue (its `sent` count when it was sent).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Acknowledges the message: its work is done, it is gone for good.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the lost lease if the claim was lost: its lease ran out
    /// and another claimer took the message (the work may be done twice: see
    /// [`fence`](Self::fence)).
    pub(crate) fn ack(mut self) -> Result<()> {
        self.done = true;
        let slot = self.q.slot(self.slot);
        if !self.still_ours() || !slot.cas(self.state, self.state.next(FREE, 0, 0)) {
            return Err(self.lost("ack"));
        }
        self.q.after_release(slot.pos.load(SeqCst));
        Ok(())
    }

    /// Gives the message back, to be delivered again (to any claimer) after `delay`
    /// (`Duration::ZERO`: at once, as dropping it does). A message that had its
    /// `max_deliveries` moves to the dead-letter queue instead.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack); [`Error::Io`] if moving it to the dead-letter queue failed
    /// (it is then delivered again).
    pub(crate) fn nack(mut self, delay: Duration) -> Result<()> {
        self.done = true;
        if !self.still_ours() {
            return Err(self.lost("nack"));
        }
        self.q.give_back(self.slot, self.state, delay, self.seq)
    }

    /// Extends the lease: the message stays this claimer's until `lease` from now.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack), if the lease had already run out and another claimer took
    /// the message.
    pub(crate) fn extend(&mut self, lease: Duration) -> Result<()> {
        let slot = self.q.slot(self.slot);
        let taking = self.state.next(TAKING, self.state.owner(), self.attempt());
        if !self.still_ours() || !slot.cas(self.state, taking) {
            return Err(self.lost("extend"));
        }
        slot.deadline
            .store(inflight::now().saturating_add(duration_ns(lease)), SeqCst);
        let claimed = taking.next(CLAIMED, taking.owner(), taking.attempt());
        slot.state.store(claimed.0, SeqCst);
        self.state = claimed;
        Ok(())
    }

    /// Whether the slot still holds this grant's fence. The state word's generation has
    /// 14 bits: after 16,384 changes of the slot it could repeat, with the same owner and
    /// delivery count, for a claim of another message; the fence (never reused) tells
    /// that claim apart from this one. (The compare-and-swap that follows decides.)
    fn still_ours(&self) -> bool {
        self.q.slot(self.slot).fence.load(SeqCst) == self.fence
    }

    fn lost(&self, op: &str) -> Error {
        Error::invalid(
            &self.q.dir,
            format!(
                "lost lease: message {} (delivery {}) was taken by another claimer after its \
                 lease ran out; this {op} did nothing",
                self.seq,
                self.attempt()
            ),
        )
    }
}

/// A local claim detached from its handle's borrow (see `ClaimToken`).
#[derive(Debug)]
pub(crate) struct LocalToken {
    dir: std::path::PathBuf,
    slot: usize,
    state: State,
    seq: u64,
    data: Vec<u8>,
    fence: u64,
    dead_attempts: u32,
}

impl<'q> LocalClaim<'q> {
    /// The claim without its borrow of the handle; the message stays claimed.
    pub(crate) fn detach(mut self) -> LocalToken {
        self.done = true;
        LocalToken {
            dir: self.q.dir.clone(),
            slot: self.slot,
            state: self.state,
            seq: self.seq,
            data: std::mem::take(&mut self.data),
            fence: self.fence,
            dead_attempts: self.dead_attempts,
        }
    }
}

impl LocalToken {
    /// The claim again, on `q`; `Err(self)` if `q` is another queue's handle.
    pub(crate) fn attach(self, q: &LocalQueue) -> std::result::Result<LocalClaim<'_>, Self> {
        if q.dir != self.dir {
            return Err(self);
        }
        Ok(LocalClaim {
            q,
            slot: self.slot,
            state: self.state,
            seq: self.seq,
            data: self.data,
            fence: self.fence,
            dead_attempts: self.dead_attempts,
            done: false,
        })
    }
}

impl Drop for LocalClaim<'_> {
    fn drop(&mut self) {
        if !self.done && self.still_ours() {
            let _ = self
                .q
                .give_back(self.slot, self.state, Duration::ZERO, self.seq);
        }
    }
}

/// What one look at the queue found.
enum Look<'q> {
    Got(LocalClaim<'q>),
    /// Nothing to claim now.
    Empty,
    /// Messages wait at the head, but every in-flight slot is taken.
    Full,
}

impl LocalQueue {
    /// Claims a message, waiting until `deadline` (`None`: without limit).
    pub(super) fn claim_until(&self, deadline: Option<Instant>) -> Result<Option<LocalClaim<'_>>> {
        let mut waited = false;
        loop {
            self.check_destroyed()?;
            let full = match self.look(waited, deadline)? {
                Look::Got(c) => return Ok(Some(c)),
                Look::Empty => false,
                Look::Full => true,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            // While the table holds claims, their owners may die or their leases and
            // delays end, which rings no doorbell: look again every slice. Otherwise a
            // send rings (and `wait_for_data` returns at its own slices' end anyway).
            let f = self.in_flight();
            let until = if f.claimed + f.released > 0 || full {
                Some(wait::slice_end(deadline, CLAIM_SLICE))
            } else {
                deadline
            };
            if let (true, Some(until)) = (full, until) {
                // The head holds messages (so the doorbell would not hold us): sleep the
                // slice; an ack frees a slot without ringing.
                let bell = self.a32(control::DOORBELL);
                let _ = wait::sleep(bell, bell.load(SeqCst), until);
            } else {
                self.wait_for_data(until)?;
            }
            waited = true;
        }
    }

    /// One look: a message due for redelivery first, else the record at the head.
    fn look(&self, check_owners: bool, deadline: Option<Instant>) -> Result<Look<'_>> {
        let now = inflight::now();
        let last = &self.claims.last_check;
        let check =
            check_owners || now.saturating_sub(last.load(Ordering::Relaxed)) >= OWNER_CHECK_NS;
        if check {
            last.store(now, Ordering::Relaxed);
        }
        if let Some(c) = self.redeliver(now, check)? {
            return Ok(Look::Got(c));
        }
        match self.claim_at_head(now, deadline)? {
            // Nothing at the head either: before answering "nothing", check the owners
            // of the claims after all (the rate limit is for a claimer that finds work).
            nothing @ (Look::Empty | Look::Full) if !check => {
                last.store(now, Ordering::Relaxed);
                Ok(match self.redeliver(now, true)? {
                    Some(c) => Look::Got(c),
                    None => nothing,
                })
            }
            found => Ok(found),
        }
    }

    /// Takes a message due for redelivery, if there is one: released and visible again,
    /// or claimed by an owner that is dead (checked only with `check_owners`) or whose
    /// lease ran out. One that had its `max_deliveries` goes to the dead letters.
    fn redeliver(&self, now: u64, check_owners: bool) -> Result<Option<LocalClaim<'_>>> {
        for i in 0..self.slots_used() {
            let slot = self.slot(i);
            let s = slot.load();
            let due = match s.tag() {
                // The deadline is read after the state, and trusted only if the state is
                // unchanged: whoever stores CLAIMED or READY stored the deadline first.
                CLAIMED => {
                    (slot.deadline.load(SeqCst) <= now && slot.load() == s)
                        || (check_owners && !self.ctl.owners.is_alive(s.owner()))
                }
                TAKING => check_owners && !self.ctl.owners.is_alive(s.owner()),
                READY => slot.deadline.load(SeqCst) <= now && slot.load() == s,
                _ => false,
            };
            if !due {
                continue;
            }
            let me = self.ctl.owners.process_id()?;
            let taking = s.next(TAKING, me, s.attempt());
            if !slot.cas(s, taking) {
                continue;
            }
            let max = self.claims.max_deliveries;
            if max != 0 && s.attempt() >= max {
                self.dead_letter(i, taking)?;
                continue;
            }
            let fence = self.next_fence();
            slot.fence.store(fence, SeqCst);
            slot.deadline
                .store(now.saturating_add(self.claims.lease_ns), SeqCst);
            let state = taking.next(CLAIMED, me, s.attempt().saturating_add(1));
            slot.state.store(state.0, SeqCst);
            let pos = slot.pos.load(SeqCst);
            return match self.read_record(pos) {
                Ok((h, data)) => Ok(Some(LocalClaim {
                    q: self,
                    slot: i,
                    state,
                    seq: h.seq,
                    data,
                    fence,
                    dead_attempts: h.deliveries,
                    done: false,
                })),
                Err(e) => {
                    // Damaged in place: it cannot be delivered again.
                    slot.cas(state, state.next(FREE, 0, 0));
                    self.after_release(pos);
                    Err(e)
                }
            };
        }
        Ok(None)
    }

    /// Claims the record at the head, holding the claim lock around the exchange.
    fn claim_at_head(&self, now: u64, deadline: Option<Instant>) -> Result<Look<'_>> {
        let head_word = self.a64(control::HEAD);
        if head_word.load(SeqCst) >= self.a64(control::TAIL).load(SeqCst) {
            return Ok(Look::Empty);
        }
        let Some(held) = self.lock_claim(deadline)? else {
            return Ok(Look::Empty);
        };
        let me = self.ctl.owners.process_id()?;
        loop {
            let head = head_word.load(SeqCst);
            let tail = self.a64(control::TAIL).load(SeqCst);
            if head >= tail {
                return Ok(Look::Empty);
            }
            let mut cache = lock_cache(&self.consumer);
            let (h, size) = match record_at(&mut cache, head, tail) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    drop(cache);
                    drop(held);
                    let wait = match deadline {
                        Some(d) if Instant::now() >= d => LockWait::Now,
                        d => LockWait::Until(d),
                    };
                    return match self.skip_damaged(head, tail, wait)? {
                        Skip::Skipped(e) => Err(e),
                        Skip::Moved | Skip::Busy => Ok(Look::Empty),
                    };
                }
                // Removed under us by plain receivers that took it meanwhile.
                Err(_) if head_word.load(SeqCst) != head => continue,
                Err(e) => {
                    self.check_destroyed()?;
                    return Err(e);
                }
            };
            let fence = self.next_fence();
            let lease_end = now.saturating_add(self.claims.lease_ns);
            let Some((i, reserved)) = self.reserve(me, head, lease_end, fence) else {
                return Ok(Look::Full);
            };
            let slot = self.slot(i);
            let end = head + size;
            if head_word
                .compare_exchange(head, end, SeqCst, SeqCst)
                .is_err()
            {
                // A plain receiver (or `clear`) moved the head first.
                slot.cas(reserved, reserved.next(FREE, 0, 0));
                continue;
            }
            self.a64(control::RECEIVED).fetch_max(h.seq + 1, SeqCst);
            let state = reserved.next(CLAIMED, me, 1);
            slot.cas(reserved, state);
            drop(held);
            let mut data = vec![0u8; h.len as usize];
            let read = cache.read(head + HEADER as u64, &mut data);
            if end / self.seg_size != head / self.seg_size {
                cache.retain_from(end / self.seg_size);
            }
            drop(cache);
            if read.is_err() || !h.payload_ok(&data) {
                slot.cas(state, state.next(FREE, 0, 0));
                self.after_release(head);
                read?;
                return Err(self.damaged_payload(head, &h));
            }
            return Ok(Look::Got(LocalClaim {
                q: self,
                slot: i,
                state,
                seq: h.seq,
                data,
                fence,
                dead_attempts: h.deliveries,
                done: false,
            }));
        }
    }

    /// The record at `pos` (below the head: an in-flight slot keeps its segment), read
    /// and checked.
    fn read_record(&self, pos: u64) -> Result<(Header, Vec<u8>)> {
        let tail = self.a64(control::TAIL).load(SeqCst);
        let mut cache = lock_cache(&self.consumer);
        let Some((h, _)) = record_at(&mut cache, pos, tail)? else {
            let (path, offset) = cache.locate(pos);
            return Err(Error::Corrupt {
                path,
                offset,
                detail: "damaged record header in a message to deliver again; dropped".into(),
            });
        };
        let mut data = vec![0u8; h.len as usize];
        cache.read(pos + HEADER as u64, &mut data)?;
        drop(cache);
        if !h.payload_ok(&data) {
            return Err(self.damaged_payload(pos, &h));
        }
        Ok((h, data))
    }

    fn damaged_payload(&self, pos: u64, h: &Header) -> Error {
        let cache = lock_cache(&self.consumer);
        let (path, offset) = cache.locate(pos);
        Error::Corrupt {
            path,
            offset,
            detail: format!(
                "payload checksum mismatch in message {} ({} bytes); skipped",
                h.seq, h.len
            ),
        }
    }

    /// After a slot pointing at `pos` was freed: its segment may be removable now.
    pub(super) fn after_release(&self, pos: u64) {
        let head = self.a64(control::HEAD).load(SeqCst);
        if pos / self.seg_size < head / self.seg_size {
            self.remove_consumed_segments();
        }
    }

    /// Gives a claimed message back (nack, drop): visible again after `delay`, or to the
    /// dead letters if it had its deliveries.
    fn give_back(&self, i: usize, state: State, delay: Duration, seq: u64) -> Result<()> {
        let slot = self.slot(i);
        let taking = state.next(TAKING, state.owner(), state.attempt());
        if !slot.cas(state, taking) {
            return Err(Error::invalid(
                &self.dir,
                format!(
                    "lost lease: message {seq} (delivery {}) was taken by another claimer \
                     after its lease ran out; this nack did nothing",
                    state.attempt()
                ),
            ));
        }
        let max = self.claims.max_deliveries;
        if max != 0 && state.attempt() >= max {
            return self.dead_letter(i, taking);
        }
        slot.deadline
            .store(inflight::now().saturating_add(duration_ns(delay)), SeqCst);
        slot.state
            .store(taking.next(READY, 0, taking.attempt()).0, SeqCst);
        // Claimers asleep on the doorbell look again (a system call only if one sleeps).
        self.ring();
        Ok(())
    }

    /// Moves the message of slot `i` (in state `taking`, ours) to the dead-letter queue
    /// with its delivery count, then frees the slot. If that fails, the message is
    /// released for another try a second later.
    fn dead_letter(&self, i: usize, taking: State) -> Result<()> {
        let slot = self.slot(i);
        let pos = slot.pos.load(SeqCst);
        let moved = match self.read_record(pos) {
            Ok((_, data)) => self
                .dead_letter_queue()
                .and_then(|d| d.send_dead(&data, taking.attempt())),
            // Damaged in place: nothing left to move.
            Err(Error::Corrupt { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = moved {
            slot.deadline
                .store(inflight::now().saturating_add(1_000_000_000), SeqCst);
            slot.state
                .store(taking.next(READY, 0, taking.attempt()).0, SeqCst);
            return Err(e);
        }
        slot.cas(taking, taking.next(FREE, 0, 0));
        self.after_release(pos);
        Ok(())
    }

    /// The dead-letter queue: the queue in the sub-directory `dead-letters`, opened with
    /// this handle's options (without a delivery limit).
    pub(super) fn dead_letter_queue(&self) -> Result<&LocalQueue> {
        if let Some(q) = self.claims.dead.get() {
            return Ok(q);
        }
        let q = LocalQueue::open(&self.dir.join(DEAD_LETTERS), &self.claims_options())?;
        let _ = self.claims.dead.set(Box::new(q));
        Ok(self.claims.dead.get().expect("set above"))
    }
}

impl LocalQueue {
    /// The options the dead-letter queue is opened with: this handle's, without a
    /// delivery limit.
    pub(super) fn claims_options(&self) -> QueueOptions {
        let mut opts = self.claims.opts.clone().max_deliveries(0);
        // Dead-lettering never waits for room.
        opts.capacity = None;
        opts
    }
}
