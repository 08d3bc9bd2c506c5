//! Retiring consumed segments: the segment files wholly below the head (and below every
//! in-flight claim) are recycled, one per pass, as the next segment the producers need,
//! or unlinked. See "Recycled segments" in docs/FORMAT.md for why a recycled file's old
//! records are never mistaken for new ones.

use std::fs;
use std::sync::atomic::Ordering;

use super::control;
use super::open::LocalQueue;
use super::segment;
use crate::sys;

impl LocalQueue {
    /// Removes the segment files wholly below the head and below every in-flight claim.
    /// Idempotent; any handle may do it.
    pub(super) fn remove_consumed_segments(&self) {
        // The files at these paths may belong to a queue created since in the directory.
        if self.destroyed() {
            return;
        }
        // The head first, then the table: a claimer reserves its slot before it moves
        // the head (both SeqCst), so a head read here past its record comes with the slot.
        let head = self.a64(control::HEAD).load(Ordering::SeqCst);
        let keep = self.lowest_in_flight().map_or(head, |p| p.min(head));
        let below = keep / self.seg_size;
        let removed = self.a64(control::REMOVED_BELOW);
        let from = removed.load(Ordering::Acquire);
        if from >= below {
            return;
        }
        let remove = |k: u64| match fs::remove_file(segment::path(&self.dir, k)) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if below - from <= 64 {
            // One consumed segment per call may become the next segment producers need
            // (see `recycle`); the others are unlinked. A failure (other than "already
            // gone") leaves a file behind; the next call retries from `from` only if
            // nobody advanced the mark, so report nothing.
            for k in from..below {
                let recycled = k == from && self.recycle(k);
                if !(recycled || remove(k)) {
                    return;
                }
            }
        } else {
            // A long way behind (the mark or the head is damaged, or many segments went
            // by at once): remove the segment files that exist rather than try every
            // index, which could take hours.
            let Ok(entries) = fs::read_dir(&self.dir) else {
                return;
            };
            for e in entries.filter_map(|e| e.ok()) {
                let k = segment::parse_name(&e.file_name().to_string_lossy());
                if let Some(k) = k
                    && (from..below).contains(&k)
                    && !remove(k)
                {
                    return;
                }
            }
        }
        removed.fetch_max(below, Ordering::AcqRel);
    }

    /// Recycles the consumed segment `k` (wholly below the head and every in-flight
    /// claim): renames it, without replacing anything, to the first of the
    /// [`segment::SPARES`] segments after the tail's (from the tail's own if the tail is
    /// at its start) that does not exist yet, so that the
    /// producer that reaches it finds its blocks allocated and its pages in the page
    /// cache instead of creating a sparse file, and no page is freed, allocated or
    /// zeroed. Its old records stay in it until overwritten; they never verify at their
    /// new positions (see "Recycled segments" in docs/FORMAT.md). `true` if `k` is gone
    /// (recycled, or removed by another handle); `false` if it is still to be unlinked.
    fn recycle(&self, k: u64) -> bool {
        let tail = self.a64(control::TAIL).load(Ordering::SeqCst);
        let from = segment::path(&self.dir, k);
        let t = tail / self.seg_size;
        // The tail's own segment exists unless the tail is at its very start.
        let first = if tail.is_multiple_of(self.seg_size) {
            t
        } else {
            t + 1
        };
        for j in first..first + segment::SPARES {
            match sys::rename_no_replace(&from, &segment::path(&self.dir, j)) {
                Ok(()) => {
                    // The tail read above may be stale: if the head has passed segment `j`
                    // meanwhile, `j` was created, consumed and unlinked in between, and
                    // the rename brought it back below the head; unlink it. (Whoever
                    // unlinked `j` first read a head past it before the rename, so this
                    // read, after the rename, sees that head too.)
                    // Likewise, a destroy that began meanwhile may have listed the
                    // directory before the rename: the file is ours to remove then.
                    let head = self.a64(control::HEAD).load(Ordering::SeqCst);
                    if (j + 1).saturating_mul(self.seg_size) <= head || self.destroyed() {
                        let _ = fs::remove_file(segment::path(&self.dir, j));
                    }
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
            }
        }
        false
    }
}
