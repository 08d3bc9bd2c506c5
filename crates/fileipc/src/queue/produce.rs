//! The producer commit: `send` and `send_all` write records beyond the tail under the
//! producer lock and publish them with one store of the tail; the journal that lets the
//! next holder repair `sent` after a producer died holding the lock.
//!
//! A record written beyond the tail is invisible to consumers until the tail store, so a
//! producer killed while writing leaves bytes that the next send overwrites.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control;
use super::open::{LocalQueue, lock_cache, unreachable_timeout};
use super::record::{HEADER, Header, record_size};
use crate::error::{Error, Result};
use crate::wait;

/// How often a sender waiting for room in a full queue looks again.
const ROOM_POLL: Duration = Duration::from_millis(1);

/// Records a send commits per lock hold in `send_all`.
const BATCH: usize = 256;

impl LocalQueue {
    fn check_size(&self, len: usize) -> Result<()> {
        if len > self.max_message_size {
            return Err(Error::invalid(
                &self.dir,
                format!(
                    "message of {len} bytes is over the maximum of {} bytes",
                    self.max_message_size
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn send(&self, data: &[u8]) -> Result<()> {
        self.send_until(data, None).map(|_| ())
    }

    /// Sends `data`, waiting for room until `deadline` (`None`: as long as it takes) if
    /// the handle has a capacity; `Ok(false)` if the queue stayed full.
    pub(super) fn send_until(&self, data: &[u8], deadline: Option<Instant>) -> Result<bool> {
        self.check_size(data.len())?;
        self.check_destroyed()?;
        let crc = crc32fast::hash(data);
        let end = loop {
            let records = std::iter::once((data, crc));
            match self.append(Some(record_size(data.len())), records, 0, 1)? {
                Some(end) => break end,
                None if self.wait_for_room(deadline)? => {}
                None => return Ok(false),
            }
        };
        self.ring();
        if self.durable {
            self.sync_to(end)?;
        }
        Ok(true)
    }

    /// Waits a moment for consumers to make room; `Ok(false)` once `deadline` passed.
    /// Consumers ring nothing for producers: a full queue is polled (1 ms apart).
    fn wait_for_room(&self, deadline: Option<Instant>) -> Result<bool> {
        let left = crate::sys::remaining(deadline);
        if left == Some(Duration::ZERO) {
            return Ok(false);
        }
        wait::nap(left.map_or(ROOM_POLL, |l| l.min(ROOM_POLL)));
        self.check_destroyed()?;
        Ok(true)
    }

    /// Whether `n` more messages fit within the handle's capacity; the caller holds the
    /// producer lock (so producers never together pass it). Messages that wait count
    /// (`received` is a lower bound of those consumed: a dead consumer's message may
    /// count a moment longer), and so do claimed ones and those awaiting redelivery.
    fn has_room(&self, n: u64) -> bool {
        let Some(cap) = self.capacity else {
            return true;
        };
        let sent = self.a64(control::SENT).load(Ordering::Acquire);
        let received = self.a64(control::RECEIVED).load(Ordering::Acquire);
        let f = self.in_flight();
        let held = sent.saturating_sub(received) + f.claimed + f.released;
        held.saturating_add(n) <= cap
    }

    pub(super) fn send_all<I>(&self, messages: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let items: Vec<I::Item> = messages.into_iter().collect();
        for m in &items {
            self.check_size(m.as_ref().len())?;
        }
        self.check_destroyed()?;
        let crcs: Vec<u32> = items.iter().map(|m| crc32fast::hash(m.as_ref())).collect();
        // Each batch is committed on its own (holding the producer lock across all of
        // them would stall every other sender for as long as the whole call), so a
        // failure after the first batch reports what was committed (`Error::Partial`).
        let (mut end, mut committed) = (0, 0);
        let batch = self
            .capacity
            .map_or(BATCH, |c| BATCH.min(c.max(1) as usize));
        for (chunk, crcs) in items.chunks(batch).zip(crcs.chunks(batch)) {
            let appended = loop {
                let records = chunk.iter().map(|m| m.as_ref()).zip(crcs.iter().copied());
                match self.append(None, records, 0, chunk.len() as u64) {
                    Ok(None) => match self.wait_for_room(None) {
                        Ok(_) => continue,
                        Err(e) => break Err(e),
                    },
                    Ok(Some(e)) => break Ok(e),
                    Err(e) => break Err(e),
                }
            };
            match appended {
                Ok(e) => end = e,
                Err(e) if committed == 0 => return Err(e),
                Err(e) => {
                    if self.durable {
                        // What was committed is made durable as promised, if it can be.
                        let _ = self.sync_to(end);
                    }
                    return Err(self.partial(committed, e));
                }
            }
            committed += chunk.len();
            self.ring();
        }
        if self.durable && committed > 0 {
            self.sync_to(end).map_err(|e| self.partial(committed, e))?;
        }
        Ok(committed)
    }

    /// Sends a dead letter: `data`, after `deliveries` deliveries in the queue it left.
    pub(super) fn send_dead(&self, data: &[u8], deliveries: u32) -> Result<()> {
        self.check_destroyed()?;
        let crc = crc32fast::hash(data);
        let end = self
            .append(
                Some(record_size(data.len())),
                std::iter::once((data, crc)),
                deliveries,
                1,
            )?
            .unwrap_or(0);
        self.ring();
        if self.durable {
            self.sync_to(end)?;
        }
        Ok(())
    }

    /// The error of a `send_all` that committed its first `committed` messages only.
    fn partial(&self, committed: usize, source: Error) -> Error {
        Error::Partial {
            path: self.dir.clone(),
            completed: committed,
            source: Box::new(source),
        }
    }

    /// Appends `records` (payload, payload checksum) at the tail under one hold of the
    /// producer lock and commits them; returns the new tail. With `prefault`, the pages of
    /// that many bytes beyond the tail are made writable before the lock is taken, so
    /// that their page faults are not taken while holding it. `deliveries` goes into
    /// every record's header (0 but in a dead-letter queue). `Ok(None)`, with nothing
    /// written, if the handle has a capacity and the `count` records do not fit.
    #[inline]
    fn append<'a>(
        &self,
        prefault: Option<u64>,
        records: impl Iterator<Item = (&'a [u8], u32)>,
        deliveries: u32,
        count: u64,
    ) -> Result<Option<u64>> {
        let mut cache = lock_cache(&self.producer);
        if let Some(bytes) = prefault {
            let tail = self.a64(control::TAIL).load(Ordering::Relaxed);
            cache.prefault(tail, tail + bytes);
        }
        let Some(held) = self.lock_producer(None)? else {
            unreachable_timeout()?
        };
        if self.capacity.is_some() && !self.has_room(count) {
            return Ok(None);
        }
        let mut tail = self.a64(control::TAIL).load(Ordering::Relaxed);
        let mut seq = self.a64(control::SENT).load(Ordering::Relaxed);
        for (data, crc) in records {
            let h = Header {
                len: data.len() as u32,
                payload_crc: crc,
                seq,
                deliveries,
            };
            cache.write(tail, &h.encode(tail))?;
            cache.write(tail + HEADER as u64, data)?;
            tail += record_size(data.len());
            seq += 1;
        }
        self.commit_tail(tail, seq);
        drop(held);
        cache.retain_from(tail / self.seg_size);
        Ok(Some(tail))
    }

    /// Commits the producer side: journal, then the tail (the commit point), then `sent`.
    fn commit_tail(&self, tail: u64, sent: u64) {
        self.a64(control::P_JOURNAL_TAIL)
            .store(tail, Ordering::Relaxed);
        self.a64(control::P_JOURNAL_SENT)
            .store(sent, Ordering::Relaxed);
        // SeqCst: ordered before the producer's check of the waiter mask (see `ring`).
        self.a64(control::TAIL).store(tail, Ordering::SeqCst);
        self.a64(control::SENT).store(sent, Ordering::Relaxed);
    }

    /// After a producer died holding the lock: its record is committed iff the tail is
    /// the journalled tail; then `sent` must be the journalled count.
    pub(super) fn repair_producer(&self) {
        let jt = self.a64(control::P_JOURNAL_TAIL).load(Ordering::Relaxed);
        if self.a64(control::TAIL).load(Ordering::Relaxed) == jt {
            let js = self.a64(control::P_JOURNAL_SENT).load(Ordering::Relaxed);
            self.a64(control::SENT).store(js, Ordering::Relaxed);
        }
    }
}
