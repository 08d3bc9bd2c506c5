//! Durable mode's group commit: a durable send returns once a sync covers its record,
//! and whoever takes the sync lock syncs for every sender committed so far.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control;
use super::open::{CONTROL, Held, LocalQueue, lock_cache};
use crate::error::{IoResultExt, Result};
use crate::wait;

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
