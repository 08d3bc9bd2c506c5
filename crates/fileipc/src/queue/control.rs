//! The queue's control file: a fixed 36 KiB region mapped by every handle (4 KiB of
//! fields, then the in-flight table of claim/ack).
//!
//! Fields are grouped by who writes them, each group on its own 128-byte block so that
//! producers and consumers do not bounce one cache line between CPUs. Offsets below are
//! from the start of the file (the common 64-byte state header comes first).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::owner::Owners;
use crate::robust::RobustLock;
use crate::state::{Kind, Layout};
use crate::sys::SharedMap;

/// Version 5: consumed segments are recycled (renamed beyond the tail and overwritten),
/// so consumers copy a record before claiming it; version 4's consumers copied after,
/// from a segment that may now be recycled under them. Version 4: the file grows to 36 KiB and holds the in-flight table of claimed messages
/// (claim/ack), the claim lock and the fence counter. Version 3: lock words and waiter
/// slots hold owner ids (`owner.rs`), whose life the kernel vouches for; version 2 held
/// thread IDs judged through `/proc`. Consumers claim records by compare-and-swap on the
/// head (since version 2). No two versions may share a queue.
pub(crate) const VERSION: u32 = 5;
pub(crate) const LEN: usize = TABLE + SLOT_COUNT * SLOT_SIZE;
pub(crate) const LAYOUT: Layout = Layout {
    kind: Kind::Queue,
    version: VERSION,
    len: LEN,
};

// Configuration, written once at creation.
pub(crate) const SEGMENT_SIZE: usize = 64;
/// 1 once `destroy` began: every handle refuses to work.
pub(crate) const DESTROYED: usize = 72;
/// The boot ([`sys::boot_id`](crate::sys::boot_id)) in which the queue was last opened:
/// the first open after a restart finds another one and recovers from a possible power
/// loss (see `recover_after_reboot`). 0: unknown (files made before it existed).
pub(crate) const BOOT_ID: usize = 80;

// Producer block (under the producer lock).
pub(crate) const P_LOCK: usize = 128;
// 136..144: reserved (zero).
pub(crate) const TAIL: usize = 144;
pub(crate) const SENT: usize = 152;
pub(crate) const P_JOURNAL_TAIL: usize = 160;
pub(crate) const P_JOURNAL_SENT: usize = 168;

// Consumer block. The lock is taken only to skip a damaged header and by `clear` and
// `destroy`; the head moves by compare-and-swap, `received` by fetch-max.
pub(crate) const C_LOCK: usize = 256;
/// The claim lock: claimers hold it from reserving an in-flight slot until the slot
/// records whether their compare-and-swap of the head took the record (see `inflight.rs`).
pub(crate) const CLAIM_LOCK: usize = 264;
// 268..272: reserved (zero).
pub(crate) const HEAD: usize = 272;
pub(crate) const RECEIVED: usize = 280;
// 288..304: the consumer journal of version 1, unused (zero) since version 2.
/// Every segment with an index below this was removed.
pub(crate) const REMOVED_BELOW: usize = 304;

// Wake-up block.
/// Epoch (bits 1..32) and sleepers bit (bit 0): receivers sleep on it, the first send
/// after one set the sleepers bit advances the epoch and wakes them.
pub(crate) const DOORBELL: usize = 384;
// 388..400: reserved (zero).
/// 64 slots of 8 bytes: the owner id of the receiver sleeping (or about to) in each
/// taken slot, 0 in a free one (for [`stats`](super::MessageQueue::stats); senders look
/// only at the doorbell).
pub(crate) const WAIT_SLOTS: usize = 1024;
/// How many waiter slots there are.
pub(crate) const WAIT_SLOT_COUNT: usize = 64;

// Group commit block (durable mode).
pub(crate) const S_LOCK: usize = 512;
// 520..528: reserved (zero).
pub(crate) const SYNCED: usize = 528;
/// Bumped after every sync: senders waiting for a sync someone else is doing sleep on
/// it (zero in files made before it existed: it was reserved space).
pub(crate) const SYNC_GEN: usize = 536;
/// How many messages the last sync covered (a hint for the next syncer; see `sync_to`).
pub(crate) const SYNC_GROUP: usize = 540;
/// `sent` as the last sync read it.
pub(crate) const SYNC_SENT: usize = 544;
/// The log is on stable storage below this position: stored by a syncer after flushing
/// the log and *before* flushing the control page, so the control page on disk always
/// holds a value that covers every record a completed sync acknowledged (`SYNCED` is
/// stored after, for senders to see that their sync is complete).
pub(crate) const FLUSHED: usize = 552;

// Claim block (see `inflight.rs`).
/// One more than the highest in-flight slot index ever used (fetch-max): scans of the
/// table stop there.
pub(crate) const SLOTS_USED: usize = 1536;
/// The last fence handed out (fetch-add); seeded at creation with the wall clock in
/// nanoseconds, so a queue created again at the same path hands out higher fences.
pub(crate) const FENCE: usize = 1544;

/// The in-flight table: [`SLOT_COUNT`] slots of [`SLOT_SIZE`] bytes from here.
pub(crate) const TABLE: usize = 4096;
/// Slots in the in-flight table: claimed messages, and released ones awaiting redelivery.
pub(crate) const SLOT_COUNT: usize = 1024;
/// Bytes per in-flight slot: state word, record position, deadline, fence.
pub(crate) const SLOT_SIZE: usize = 32;

/// Typed access to the mapped control region.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) map: SharedMap,
    /// The owners of the control file: who holds its locks and waiter slots.
    pub(crate) owners: Arc<Owners>,
}

impl Control {
    pub(crate) fn u64(&self, off: usize) -> &AtomicU64 {
        self.map.u64(off)
    }
    pub(crate) fn u32(&self, off: usize) -> &AtomicU32 {
        self.map.u32(off)
    }
    pub(crate) fn producer_lock(&self) -> RobustLock<'_> {
        RobustLock::new(self.u32(P_LOCK), &self.owners)
    }
    pub(crate) fn consumer_lock(&self) -> RobustLock<'_> {
        RobustLock::new(self.u32(C_LOCK), &self.owners)
    }
    pub(crate) fn sync_lock(&self) -> RobustLock<'_> {
        RobustLock::new(self.u32(S_LOCK), &self.owners)
    }
    pub(crate) fn claim_lock(&self) -> RobustLock<'_> {
        RobustLock::new(self.u32(CLAIM_LOCK), &self.owners)
    }
}

/// Fills a new control region (the bytes after the common header).
pub(crate) fn init(region: &mut [u8], segment_size: u64) {
    let at = |off: usize| off - crate::state::HEADER_LEN..off - crate::state::HEADER_LEN + 8;
    region[at(SEGMENT_SIZE)].copy_from_slice(&segment_size.to_le_bytes());
    let boot = crate::sys::boot_id().unwrap_or(0);
    region[at(BOOT_ID)].copy_from_slice(&boot.to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    region[at(FENCE)].copy_from_slice(&now.to_le_bytes());
}
