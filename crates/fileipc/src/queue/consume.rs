//! The consumer side: receivers claim records at the head without a lock, by one
//! compare-and-swap of the head per claim; a damaged header is skipped under the consumer
//! lock by scanning for the next valid one. Also the receive calls built on them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control;
use super::message::Message;
use super::open::{LocalQueue, lock_cache};
use super::record::{HEADER, Header, record_size};
use super::segment::SegmentCache;
use crate::error::{Error, Result};
use crate::robust::Held;

impl LocalQueue {
    /// Takes up to `max` messages that are there now. `Ok(n)` with `n` appended to `out`.
    /// A damaged record is reported as an error only when it is the first one met (the
    /// messages before it are returned first), and it is consumed when reported, so the
    /// next call goes on with the records after it.
    ///
    /// Consumers claim records without a lock: they read the record headers at the head
    /// and move the head past them with one compare-and-swap (records below the tail
    /// never change and positions are never reused, so a consumer that loses the race
    /// only retries). A consumer preempted or killed at any instant therefore holds up
    /// nobody. Only a damaged header, whose length cannot be trusted, is skipped under
    /// the consumer lock (see [`Self::skip_damaged`]).
    fn take(&self, max: usize, out: &mut impl Sink, wait: LockWait) -> Result<usize> {
        let head_word = self.a64(control::HEAD);
        let mut tail = self.seen_tail.load(Ordering::Acquire);
        loop {
            let head = head_word.load(Ordering::Acquire);
            if head >= tail {
                tail = self.refresh_tail();
                if head >= tail {
                    return Ok(0);
                }
            }
            let mut cache = lock_cache(&self.consumer);
            let claimed = match self.claim(&mut cache, head, tail, max) {
                Ok(c) => c,
                // A read can fail because other consumers took the record and removed
                // its segment meanwhile: then it is no longer ours to report.
                Err(_) if head_word.load(Ordering::Acquire) != head => continue,
                // Or because the queue was destroyed (and its files removed) meanwhile.
                Err(e) => {
                    self.check_destroyed()?;
                    return Err(e);
                }
            };
            let (end, result) = match claimed {
                Claim::Raced => continue,
                Claim::Damaged => {
                    drop(cache);
                    match self.skip_damaged(head, tail, wait)? {
                        Skip::Skipped(e) => return Err(e),
                        // Progress: look at the new head.
                        Skip::Moved => continue,
                        // Another consumer holds the lock (skipping this very record)
                        // past our deadline: nothing to take. Never retry here: the
                        // head is still the damaged record, and a retry would spin on
                        // it until the holder lets go.
                        Skip::Busy => return Ok(0),
                    }
                }
                Claim::One { end, message } => {
                    out.push(message);
                    (end, Ok(1))
                }
                Claim::Checked { end, messages } => {
                    let n = messages.len();
                    for m in messages {
                        out.push(m);
                    }
                    (end, Ok(n))
                }
                Claim::Corrupt { end, header } => (end, Err(payload_error(&cache, head, &header))),
            };
            if end / self.seg_size != head / self.seg_size {
                cache.retain_from(end / self.seg_size);
                drop(cache);
                self.remove_consumed_segments();
            }
            return result;
        }
    }

    /// Tries to claim records from `head` (a value of the head word just read) up to
    /// `max` and below `tail`.
    fn claim(&self, cache: &mut SegmentCache, head: u64, tail: u64, max: usize) -> Result<Claim> {
        let head_word = self.a64(control::HEAD);
        let claim = |end: u64, seq: u64| {
            if head_word
                .compare_exchange(head, end, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return false;
            }
            self.a64(control::RECEIVED)
                .fetch_max(seq + 1, Ordering::AcqRel);
            true
        };
        let Some((h, size)) = record_at(cache, head, tail)? else {
            return Ok(Claim::Damaged);
        };
        let end = head + size;
        if max == 1 {
            // Copied and checked before the claim, as every record is: once the head
            // passes its segment, the segment may be recycled and overwritten (see
            // `recycle`). A consumer that wins the exchange copied the record while the
            // head was still at it, so before any recycling of its segment; one that
            // loses it only wasted the copy, whatever it read.
            let payload = cache.read_vec(head + HEADER as u64, h.len as usize)?;
            if !h.payload_ok(&payload) {
                return Ok(if claim(end, h.seq) {
                    Claim::Corrupt { end, header: h }
                } else {
                    Claim::Raced
                });
            }
            return Ok(if claim(end, h.seq) {
                Claim::One {
                    end,
                    message: Message {
                        data: payload,
                        deliveries: h.deliveries,
                    },
                }
            } else {
                Claim::Raced
            });
        }
        // Several records: copy and check first, claim after (a lost race only wastes
        // the copies).
        let mut messages = Vec::new();
        let (mut pos, mut seq) = (head, 0);
        while messages.len() < max && pos < tail {
            let (h, size) = if pos == head {
                (h, size)
            } else {
                match record_at(cache, pos, tail)? {
                    Some(x) => x,
                    None => break, // reported by the next call
                }
            };
            let payload = cache.read_vec(pos + HEADER as u64, h.len as usize)?;
            if !h.payload_ok(&payload) {
                if pos == head {
                    return Ok(if claim(pos + size, h.seq) {
                        Claim::Corrupt {
                            end: pos + size,
                            header: h,
                        }
                    } else {
                        Claim::Raced
                    });
                }
                break; // reported by the next call
            }
            messages.push(Message {
                data: payload,
                deliveries: h.deliveries,
            });
            seq = h.seq;
            pos += size;
        }
        Ok(if claim(pos, seq) {
            Claim::Checked { end: pos, messages }
        } else {
            Claim::Raced
        })
    }

    /// Skips a damaged record header at `head` under the consumer lock: scans forward for
    /// the next valid header (everything before it is lost) and moves the head there.
    pub(super) fn skip_damaged(&self, head: u64, tail: u64, wait: LockWait) -> Result<Skip> {
        let _held = match wait {
            LockWait::Now => {
                // Free, or held by a dead thread (taken over; the consumer lock guards
                // nothing to repair): never waits.
                let l = self.ctl.consumer_lock();
                if l.try_lock()?.is_none() {
                    return Ok(Skip::Busy);
                }
                Held(l)
            }
            LockWait::Until(deadline) => match self.lock_consumer(deadline)? {
                Some(held) => held,
                None => return Ok(Skip::Busy),
            },
        };
        self.check_destroyed()?;
        let head_word = self.a64(control::HEAD);
        if head_word.load(Ordering::Acquire) != head {
            return Ok(Skip::Moved);
        }
        let mut cache = lock_cache(&self.consumer);
        let (path, offset) = cache.locate(head);
        let (next, seq) = resync(&mut cache, head, tail)?;
        // Nobody else moves the head past a damaged header, except `clear` (which holds
        // this lock too): the exchange fails only if the header was not damaged after all.
        if head_word
            .compare_exchange(head, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(Skip::Moved);
        }
        let received = self.a64(control::RECEIVED);
        let r = received.load(Ordering::Acquire);
        received.fetch_max(seq.unwrap_or(r + 1), Ordering::AcqRel);
        if next / self.seg_size != head / self.seg_size {
            cache.retain_from(next / self.seg_size);
            drop(cache);
            self.remove_consumed_segments();
        }
        Ok(Skip::Skipped(Error::Corrupt {
            path,
            offset,
            detail: format!(
                "damaged record header; skipped {} bytes to {}",
                next - head,
                if seq.is_some() {
                    "the next valid record"
                } else {
                    "the end of the log"
                }
            ),
        }))
    }

    /// Reads the shared tail and raises this handle's mark to it.
    fn refresh_tail(&self) -> u64 {
        let tail = self.a64(control::TAIL).load(Ordering::Acquire);
        // Release: a thread that reads the mark also sees the records below it.
        self.seen_tail.fetch_max(tail, Ordering::AcqRel).max(tail)
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Message>> {
        let mut out = None;
        self.recv_many_until(1, deadline, &mut out)?;
        Ok(out)
    }

    fn recv_many_until(
        &self,
        max: usize,
        deadline: Option<Instant>,
        out: &mut impl Sink,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        loop {
            self.check_destroyed()?;
            let n = self.take(max, out, LockWait::Until(deadline))?;
            if n > 0 {
                return Ok(n);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
            if !self.wait_for_data(deadline)? {
                // At the deadline: one last look, without waiting.
                return self.take(max, out, LockWait::Now);
            }
        }
    }

    pub(super) fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        // A message there now and nobody else receiving: no need to read the clock.
        self.check_destroyed()?;
        let mut out = None;
        if self.take(1, &mut out, LockWait::Now)? > 0 {
            return Ok(out);
        }
        self.recv_until(crate::deadline_after(timeout))
    }

    pub(super) fn recv_deadline(&self, deadline: Instant) -> Result<Option<Message>> {
        self.recv_until(Some(deadline))
    }

    pub(super) fn recv_forever(&self) -> Result<Message> {
        loop {
            if let Some(m) = self.recv_until(None)? {
                return Ok(m);
            }
        }
    }

    pub(super) fn try_recv(&self) -> Result<Option<Message>> {
        self.check_destroyed()?;
        let mut out = None;
        self.take(1, &mut out, LockWait::Now)?;
        Ok(out)
    }

    pub(super) fn recv_many(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        self.recv_many_until(max, crate::deadline_after(timeout), &mut out)?;
        Ok(out)
    }
}

/// What [`LocalQueue::claim`] found at the head.
enum Claim {
    /// Another consumer moved the head first: try again.
    Raced,
    /// The header at the head is damaged.
    Damaged,
    /// One record copied, checked and claimed (the common single receive: no vector).
    One { end: u64, message: Message },
    /// Records copied, checked and claimed.
    Checked { end: u64, messages: Vec<Message> },
    /// The first record failed its payload checksum; it was claimed (skipped).
    Corrupt { end: u64, header: Header },
}

/// The error for a record whose payload failed its checksum.
fn payload_error(cache: &SegmentCache, pos: u64, h: &Header) -> Error {
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

/// How [`LocalQueue::take`] takes the consumer lock (needed only to skip a damaged
/// header).
#[derive(Clone, Copy)]
pub(super) enum LockWait {
    /// Only if it is free right now, or its holder is dead (otherwise take nothing).
    Now,
    /// Waiting until the deadline (`None`: without limit).
    Until(Option<Instant>),
}

/// What [`LocalQueue::skip_damaged`] did.
pub(super) enum Skip {
    /// It skipped the damaged header; the error describes the damage.
    Skipped(Error),
    /// The head moved meanwhile (another consumer skipped it, or `clear`): look again.
    Moved,
    /// The lock was not to be had (held by a live consumer, now or until the deadline).
    Busy,
}

/// Where [`LocalQueue::take`] puts the messages it takes: a vector, or for a single
/// receive an `Option` (no vector to allocate per message).
trait Sink {
    fn push(&mut self, m: Message);
}

impl Sink for Vec<Message> {
    fn push(&mut self, m: Message) {
        Vec::push(self, m);
    }
}

impl Sink for Option<Message> {
    fn push(&mut self, m: Message) {
        *self = Some(m);
    }
}

/// Scans `[from + 8, tail)` for the next valid record header. Returns its position and
/// sequence number, or `(tail, None)`.
fn resync(cache: &mut SegmentCache, from: u64, tail: u64) -> Result<(u64, Option<u64>)> {
    let mut p = from + 8;
    while p + HEADER as u64 <= tail {
        if let Some((h, _)) = record_at(cache, p, tail)? {
            return Ok((p, Some(h.seq)));
        }
        p += 8;
    }
    Ok((tail, None))
}

/// The record at `pos`, if its header verifies there and the record ends by `tail`:
/// the header and the record's size in the log.
pub(super) fn record_at(
    cache: &mut SegmentCache,
    pos: u64,
    tail: u64,
) -> Result<Option<(Header, u64)>> {
    let mut hb = [0u8; HEADER];
    cache.read(pos, &mut hb)?;
    Ok(match Header::decode(&hb, pos) {
        Some(h) if record_size(h.len as usize) <= tail - pos => {
            Some((h, record_size(h.len as usize)))
        }
        _ => None,
    })
}
