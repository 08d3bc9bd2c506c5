//! Durable mode's group commit: a durable send returns once a sync covers its record,
//! and whoever takes the sync lock syncs for every sender committed so far. Also the
//! recovery after a power loss: the first open after a restart ends the log at the first
//! record beyond the synced part that did not reach the disk.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::consume::record_at;
use super::control;
use super::open::{CONTROL, LocalQueue, lock_cache, unreachable_timeout};
use super::record::HEADER;
use super::segment::SegmentCache;
use crate::error::{IoResultExt, Result};
use crate::robust::Held;
use crate::{sys, wait};

/// How long a durable syncer waits at most for the senders of the last group to append
/// again (see `LocalQueue::linger_for_group`).
const SYNC_LINGER: Duration = Duration::from_micros(200);

impl LocalQueue {
    /// Group commit: makes the log durable up to at least `end`. Whoever takes the sync
    /// lock syncs everything committed so far, for all senders; the others sleep on the
    /// sync generation until a sync that covers them completes, so a sender that is
    /// already covered returns at once instead of queueing for the lock (which would
    /// let one sender barge in and sync alone, shrinking every group).
    ///
    /// No lost wake-up: a waiter reads the generation `g`, fails to take the lock, sees
    /// `synced < end` and sleeps only while the generation is still `g`; a syncer stores
    /// `synced`, then bumps the generation, then wakes every sleeper. A syncer that died
    /// cannot wake anyone: sleepers wake every [`wait::LOCK_WORD_SLICE`] and take a dead
    /// holder's lock over.
    pub(super) fn sync_to(&self, end: u64) -> Result<()> {
        let synced = self.a64(control::SYNCED);
        let generation = self.ctl.u32(control::SYNC_GEN);
        let l = self.ctl.sync_lock();
        // Whether a whole slice passed without a sync completing: only then is the
        // holder possibly dead, worth the liveness check of `try_lock`.
        let mut stale = false;
        loop {
            if synced.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            let g = generation.load(Ordering::SeqCst);
            let acquired = if stale {
                l.try_lock()?.is_some()
            } else {
                l.try_lock_free()?
            };
            if acquired {
                // The sync lock protects one monotone store: a dead holder leaves nothing
                // to repair.
                let _held = Held(l);
                self.check_destroyed()?;
                let done = synced.load(Ordering::Acquire);
                if done >= end {
                    return Ok(());
                }
                self.linger_for_group();
                let sent = self.a64(control::SENT).load(Ordering::Acquire);
                let target = self.a64(control::TAIL).load(Ordering::Acquire);
                // Consumed bytes need no sync (their segments may be gone already).
                let head = self.a64(control::HEAD).load(Ordering::Acquire);
                let from = done.max(head.min(target));
                lock_cache(&self.syncer).flush(from, target)?;
                // The log is on disk below `target`: say so in the control page before it
                // is flushed. Its tail may already cover later, unsynced records (and the
                // kernel may write it back at any time): after a power loss, recovery
                // trusts only what lies below this mark.
                self.a64(control::FLUSHED)
                    .fetch_max(target, Ordering::SeqCst);
                // The control file holds the tail that makes those records visible.
                self.ctl
                    .map
                    .flush_range(0, control::LEN)
                    .at("msync", &self.dir.join(CONTROL))?;
                synced.fetch_max(target, Ordering::SeqCst);
                let last = self.a64(control::SYNC_SENT).swap(sent, Ordering::Relaxed);
                let group = sent.saturating_sub(last).min(u64::from(u32::MAX)) as u32;
                self.a32(control::SYNC_GROUP)
                    .store(group, Ordering::Relaxed);
                generation.fetch_add(1, Ordering::SeqCst);
                let _ = wait::wake_all(generation);
                return Ok(());
            }
            self.check_destroyed()?;
            if synced.load(Ordering::SeqCst) >= end {
                return Ok(());
            }
            let until = Instant::now() + wait::LOCK_WORD_SLICE;
            wait::sleep(generation, g, until).at("wait", &self.dir.join(CONTROL))?;
            stale = generation.load(Ordering::SeqCst) == g && Instant::now() >= until;
        }
    }

    /// Before a sync: if the last sync covered several senders, they are appending their
    /// next messages right now (woken by that sync, tens of microseconds apart on this
    /// kind of machine); the first of them back would otherwise sync alone and leave the
    /// rest to the sync after. Wait (yielding) until as many messages as the last sync
    /// covered were appended since, or [`SYNC_LINGER`] passed. A lone sender (group 1)
    /// never waits.
    fn linger_for_group(&self) {
        let group = u64::from(self.a32(control::SYNC_GROUP).load(Ordering::Relaxed));
        if group < 2 {
            return;
        }
        let want = self.a64(control::SYNC_SENT).load(Ordering::Relaxed) + group;
        let sent = self.a64(control::SENT);
        wait::yield_while(SYNC_LINGER, || sent.load(Ordering::Acquire) < want);
    }
}

impl LocalQueue {
    /// On the first open after the machine restarted (the control file names another
    /// boot), recovers from a possible power loss: the control page that reached the disk
    /// may hold a tail covering records whose pages did not (a sync flushes the log up to
    /// its target, then the control page, whose tail may be later already; and the kernel
    /// writes the page back whenever it likes). Those records were never acknowledged by
    /// a sync: the log ends at the first of them that does not verify (header and payload
    /// checksums), instead of reporting it as damage. Records below the flushed mark are
    /// on disk; damage there is real and still reported. Only for queues that were synced
    /// (durable mode): without it nothing is promised across a power loss, and a damaged
    /// record is skipped as usual.
    ///
    /// Runs under the producer lock, before this handle is used; concurrent first openers
    /// wait for it, and the boot ID is stored last, so exactly one recovers.
    pub(super) fn recover_after_reboot(&self) -> Result<()> {
        let Some(boot) = sys::boot_id() else {
            return Ok(());
        };
        let word = self.a64(control::BOOT_ID);
        if word.load(Ordering::SeqCst) == boot {
            return Ok(());
        }
        let Some(_held) = self.lock_producer(None)? else {
            unreachable_timeout()?
        };
        let last = word.load(Ordering::SeqCst);
        if last == boot {
            return Ok(());
        }
        // 0: written by a version that did not record boots; nothing known.
        if last != 0 {
            self.end_log_at_first_lost_record()?;
        }
        word.store(boot, Ordering::SeqCst);
        Ok(())
    }

    /// See [`Self::recover_after_reboot`]; the caller holds the producer lock.
    fn end_log_at_first_lost_record(&self) -> Result<()> {
        let tail = self.a64(control::TAIL).load(Ordering::Acquire);
        let head = self.a64(control::HEAD).load(Ordering::Acquire);
        let flushed = self.a64(control::FLUSHED).load(Ordering::Acquire);
        // `synced` too: it is stored after its data reached the disk, and is the only
        // mark in files written before `flushed` existed.
        let durable = flushed
            .max(self.a64(control::SYNCED).load(Ordering::Acquire))
            .min(tail);
        if durable == 0 {
            return Ok(()); // never synced
        }
        let from = head.max(durable);
        let mut cache = lock_cache(&self.consumer);
        let (mut end, mut last_seq) = (from, None);
        while end < tail {
            match verified_record(&mut cache, end, tail) {
                Some((seq, size)) => {
                    last_seq = Some(seq);
                    end += size;
                }
                None => break,
            }
        }
        if end >= tail {
            return Ok(());
        }
        // `sent` after the new tail: the sequence number the record at `end` had.
        let sent = match last_seq {
            Some(seq) => seq + 1,
            // The queue is empty now: any count from `received` on is exact.
            None if end == head => self.a64(control::RECEIVED).load(Ordering::Acquire),
            // The records from the head to the mark are on disk: walk their headers.
            None => seq_after(&mut cache, head, end)
                .unwrap_or_else(|| self.a64(control::SENT).load(Ordering::Acquire)),
        };
        drop(cache);
        // Committed as a send commits (journal, then the tail), so a crash here leaves
        // either the old state or the new one.
        self.a64(control::P_JOURNAL_TAIL)
            .store(end, Ordering::Relaxed);
        self.a64(control::P_JOURNAL_SENT)
            .store(sent, Ordering::Relaxed);
        self.a64(control::TAIL).store(end, Ordering::SeqCst);
        self.a64(control::SENT).store(sent, Ordering::SeqCst);
        self.ctl
            .map
            .flush_range(0, control::LEN)
            .at("msync", &self.dir.join(CONTROL))
    }
}

/// The record at `pos`, if its header and its payload verify and it ends by `tail`: its
/// sequence number and its size in the log. A segment that cannot be read (missing, or
/// short) does not verify.
fn verified_record(cache: &mut SegmentCache, pos: u64, tail: u64) -> Option<(u64, u64)> {
    let (h, size) = record_at(cache, pos, tail).ok().flatten()?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; (h.len as usize).min(64 << 10)];
    let (mut at, end) = (pos + HEADER as u64, pos + HEADER as u64 + u64::from(h.len));
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        cache.read(at, &mut buf[..n]).ok()?;
        crc.update(&buf[..n]);
        at += n as u64;
    }
    (crc.finalize() == h.payload_crc).then_some((h.seq, size))
}

/// Walks the record headers from `head` to `end`: the sequence number after the last
/// record before `end`, or `None` if the chain does not lead exactly there.
fn seq_after(cache: &mut SegmentCache, head: u64, end: u64) -> Option<u64> {
    let (mut pos, mut last) = (head, None);
    while pos < end {
        let (h, size) = record_at(cache, pos, end).ok().flatten()?;
        last = Some(h.seq);
        pos += size;
    }
    (pos == end).then_some(last? + 1)
}
