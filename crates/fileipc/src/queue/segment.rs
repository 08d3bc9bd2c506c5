//! Segment files: the log's bytes `[k*S, (k+1)*S)` live in `seg-<k as 16 hex digits>.log`,
//! created sparse at their full size `S` and mapped shared.
//!
//! Each side of a handle (producer, consumer, syncer) keeps its own small cache of mapped
//! segments, so the common path touches no file system call at all. A cache uses only
//! segments a side can still read or write: it retires those below the segment it maps
//! next, and its owner trims it to the head (`LocalQueue::release_consumed_mappings`).
//! A few retired mappings are kept, to be reused when their file comes back as a
//! recycled segment (`retire.rs`); those whose file was unlinked are unmapped, since a
//! mapping keeps an unlinked segment's blocks allocated.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoResultExt, Result};
use crate::sys::{self, Open, SharedMap};

/// The file name of segment `k`.
pub(crate) fn name(k: u64) -> String {
    format!("seg-{k:016x}.log")
}

/// The segment index of a file name, if it is a segment's.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn path(dir: &Path, k: u64) -> PathBuf {
    dir.join(name(k))
}

/// Whether `bytes` is a segment size the format allows: a multiple of 4096 between
/// 64 KiB and 1 GiB.
pub(crate) fn valid_size(bytes: u64) -> bool {
    bytes.is_multiple_of(4096) && (64 << 10..=1 << 30).contains(&bytes)
}

/// What to do when a segment file is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Create it (producers: the segment lies at or beyond the tail) with exactly
    /// `mode`, in `group` if given (the group the queue is shared with).
    Create {
        mode: u32,
        group: Option<u32>,
        durable: bool,
    },
    /// It is an error (consumers: the bytes were committed, so the file must exist).
    Fail,
    /// Skip it (the syncer: consumers may have removed it meanwhile).
    Skip,
}

/// Producers reserve storage this far ahead of what they write (see [`SegmentCache::write`]).
const RESERVE_CHUNK: u64 = 1 << 20;

#[derive(Debug)]
struct Mapped {
    k: u64,
    map: SharedMap,
    /// The file: producers reserve storage in it; its identity finds the mapping again
    /// once the file is recycled (see [`SegmentCache::retain_from`]).
    file: File,
    /// Device and inode numbers of `file`.
    id: (u64, u64),
    /// Producers only: how far the file's storage is reserved.
    reserved: u64,
    /// Bytes from the start of the mapping made writable by [`SegmentCache::prefault`]
    /// (kept when the mapping is reused: its pages stay mapped).
    populated: u64,
}

/// A mapping of a segment this side left behind, kept in case its file is recycled
/// (renamed to a segment beyond the tail) and reached again: reusing it spares the
/// `mmap`, a page fault per page and the `munmap`.
#[derive(Debug)]
struct Retired {
    map: SharedMap,
    file: File,
    id: (u64, u64),
    populated: u64,
}

/// How many consumed segments may wait beyond the tail for reuse (see
/// `LocalQueue::recycle`).
pub(crate) const SPARES: u64 = 2;

/// How many mappings of left segments a cache keeps for reuse: with a short backlog the
/// files cycle through the head's segment, the tail's and the spares beyond the tail.
const RETIRED_MAX: usize = SPARES as usize + 2;

#[derive(Debug)]
pub(crate) struct SegmentCache {
    dir: PathBuf,
    size: u64,
    missing: Missing,
    maps: Vec<Mapped>,
    /// Mappings of segments below those in `maps`, oldest first (see [`Retired`]).
    retired: Vec<Retired>,
    /// The queue's "removed below" mark when `retired` was last checked for unlinked
    /// files, `None` if entries were added since (see [`Self::release_unlinked_since`]).
    checked_at: Option<u64>,
    /// Log position below which this cache's mappings were populated by [`Self::prefault`].
    populated: u64,
}

/// Page size assumed for prefaulting (a larger real page only makes a range round up).
const PAGE: u64 = 4096;
/// How far beyond the record about to be written [`SegmentCache::prefault`] populates:
/// one `madvise` per 16 pages instead of a page fault per page.
const PREFAULT_AHEAD: u64 = 64 << 10;

impl SegmentCache {
    pub(crate) fn new(dir: &Path, size: u64, missing: Missing) -> SegmentCache {
        SegmentCache {
            dir: dir.to_owned(),
            size,
            missing,
            maps: Vec::new(),
            retired: Vec::new(),
            checked_at: None,
            populated: 0,
        }
    }

    /// The mapping of segment `k`, opening (and maybe creating) it on first use.
    /// `Ok(None)` only in [`Missing::Skip`] mode for a file that is gone.
    fn get(&mut self, k: u64) -> Result<Option<&mut Mapped>> {
        if let Some(i) = self.maps.iter().position(|m| m.k == k) {
            return Ok(Some(&mut self.maps[i]));
        }
        // Each side moves forward through the log: it never needs a segment below the
        // one it needs now again, and that segment may be unlinked already (a mapping
        // keeps an unlinked file's blocks allocated). Unmap them.
        self.retain_from(k);
        let path = path(&self.dir, k);
        let opened = match self.missing {
            Missing::Create { mode, group, .. } => open_or_create(&path, mode, group),
            _ => sys::open_state_file(&path, Open::Existing),
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.missing == Missing::Skip => {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let meta = file.metadata().at("stat", &path)?;
        let (len, id) = (meta.len(), (meta.dev(), meta.ino()));
        if len < self.size {
            match self.missing {
                Missing::Create { .. } => {
                    file.set_len(self.size).at("truncate", &path)?;
                }
                _ => {
                    return Err(Error::Corrupt {
                        path,
                        offset: len,
                        detail: format!("segment file is {len} bytes, expected {}", self.size),
                    });
                }
            }
        }
        if let Missing::Create { durable: true, .. } = self.missing {
            // The segment's name, new or given by the rename that recycled the file
            // (perhaps by a handle that syncs nothing), must survive a power loss along
            // with the records about to be written in it.
            file.sync_all().at("fsync", &path)?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .at("fsync", &self.dir)?;
        }
        // A recycled file this side mapped before (the inode cannot have been reused for
        // another file while that mapping holds it): its pages are mapped already.
        let (map, populated) = match self.retired.iter().position(|r| r.id == id) {
            Some(i) => {
                let r = self.retired.remove(i);
                (r.map, r.populated)
            }
            None => (
                SharedMap::new(&file, self.size as usize).at("mmap", &path)?,
                0,
            ),
        };
        self.release_unlinked();
        // Keep the cache small: a handle works on one or two segments at a time (more
        // only while a message larger than a segment is copied).
        if self.maps.len() >= 8 {
            self.maps.remove(0);
        }
        self.maps.push(Mapped {
            k,
            map,
            file,
            id,
            reserved: 0,
            populated,
        });
        Ok(self.maps.last_mut())
    }

    /// Retires the mappings of segments below `k`: keeps the last [`RETIRED_MAX`] of them
    /// for reuse should their files be recycled, and unmaps the others.
    pub(crate) fn retain_from(&mut self, k: u64) {
        if !self.maps.iter().any(|m| m.k < k) {
            return;
        }
        let (left, kept) = std::mem::take(&mut self.maps)
            .into_iter()
            .partition(|m| m.k < k);
        self.maps = kept;
        for m in left {
            self.retired.push(Retired {
                map: m.map,
                file: m.file,
                id: m.id,
                populated: m.populated,
            });
        }
        let excess = self.retired.len().saturating_sub(RETIRED_MAX);
        self.retired.drain(..excess);
        self.checked_at = None;
    }

    /// Unmaps the retired mappings whose file was unlinked rather than recycled (one
    /// `fstat` each): a mapping keeps an unlinked file's blocks allocated.
    pub(crate) fn release_unlinked(&mut self) {
        self.retired
            .retain(|r| r.file.metadata().is_ok_and(|m| m.nlink() > 0));
    }

    /// [`Self::release_unlinked`], unless nothing was retired and the queue's "removed
    /// below" mark stayed `mark` since the last check: a pass that unlinks segment files
    /// raises that mark after (a pass racing another that raised it first is the
    /// exception: its mapping then waits for the next move of the mark or the next
    /// segment this side maps). Spares a receiver about to sleep its `fstat`s when
    /// nothing moved.
    pub(crate) fn release_unlinked_since(&mut self, mark: u64) {
        if self.retired.is_empty() || self.checked_at == Some(mark) {
            return;
        }
        self.release_unlinked();
        self.checked_at = Some(mark);
    }

    /// Makes the pages of the log range `[from, to)` (and [`PREFAULT_AHEAD`] beyond)
    /// writable in this process's mappings without writing them, so that the producer
    /// takes its page faults (a few microseconds each, and a possible sleep in the file
    /// system) before it takes the producer lock rather than while holding it. Only
    /// within a segment already mapped (a new segment is created under the lock, as
    /// before), and only pages this mapping has not populated before: a reused mapping
    /// of a recycled segment has them all. Best effort: a failure only leaves the faults
    /// to the writes.
    pub(crate) fn prefault(&mut self, from: u64, to: u64) {
        if to <= self.populated {
            return;
        }
        let k = from / self.size;
        // Positions come from the shared control file; damage there must not overflow.
        let (Some(seg_start), Some(ahead)) = (
            k.checked_mul(self.size),
            to.checked_add(PREFAULT_AHEAD + PAGE - 1),
        ) else {
            return;
        };
        let Some(m) = self.maps.iter_mut().find(|m| m.k == k) else {
            return;
        };
        let end = (ahead & !(PAGE - 1)).min(seg_start + self.size);
        let start = self
            .populated
            .max(from & !(PAGE - 1))
            .max(seg_start + m.populated);
        if start < end {
            let off = (start - seg_start) as usize;
            if m.map.populate_write(off, (end - start) as usize).is_err() {
                // Unsupported here: do not try again for every message.
                self.populated = u64::MAX;
                return;
            }
            m.populated = m.populated.max(end - seg_start);
        }
        self.populated = end.max(seg_start + m.populated);
    }

    /// Copies `data` into the log at position `pos`, across segment boundaries.
    ///
    /// Segments are sparse; before writing into a range a producer reserves its storage
    /// (in chunks of [`RESERVE_CHUNK`]), so that a full file system fails the send with
    /// `ENOSPC` instead of killing the process with `SIGBUS` on the page fault.
    pub(crate) fn write(&mut self, mut pos: u64, mut data: &[u8]) -> Result<()> {
        let size = self.size;
        let producer = matches!(self.missing, Missing::Create { .. });
        while !data.is_empty() {
            let (k, off) = (pos / size, (pos % size) as usize);
            let n = data.len().min(size as usize - off);
            if let Some(m) = self.get(k)? {
                let end = (off + n) as u64;
                if producer && end > m.reserved {
                    let to = end
                        .div_ceil(RESERVE_CHUNK)
                        .saturating_mul(RESERVE_CHUNK)
                        .min(size);
                    if let Err(e) = sys::allocate(&m.file, m.reserved, to - m.reserved) {
                        return Err(Error::io("allocate", path(&self.dir, k), e));
                    }
                    m.reserved = to;
                }
                m.map.copy_in(off, &data[..n]);
            }
            data = &data[n..];
            pos += n as u64;
        }
        Ok(())
    }

    /// Copies log bytes at `pos` into `buf`, across segment boundaries.
    pub(crate) fn read(&mut self, mut pos: u64, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            let (k, off) = (pos / self.size, (pos % self.size) as usize);
            let n = buf.len().min(self.size as usize - off);
            let (now, rest) = buf.split_at_mut(n);
            match self.get(k)? {
                Some(m) => m.map.copy_out(off, now),
                None => now.fill(0),
            }
            buf = rest;
            pos += n as u64;
        }
        Ok(())
    }

    /// The `len` log bytes at `pos`, in a new vector (not zeroed first when they lie in
    /// one segment, the common case).
    pub(crate) fn read_vec(&mut self, pos: u64, len: usize) -> Result<Vec<u8>> {
        let (k, off) = (pos / self.size, (pos % self.size) as usize);
        if off + len <= self.size as usize
            && let Some(m) = self.get(k)?
        {
            return Ok(m.map.copy_out_vec(off, len));
        }
        let mut buf = vec![0u8; len];
        self.read(pos, &mut buf)?;
        Ok(buf)
    }

    /// Writes the log range `[from, to)` to storage (segments already removed are skipped).
    pub(crate) fn flush(&mut self, mut from: u64, to: u64) -> Result<()> {
        while from < to {
            let (k, off) = (from / self.size, (from % self.size) as usize);
            let n = (to - from).min(self.size - off as u64) as usize;
            if let Some(m) = self.get(k)?
                && let Err(e) = m.map.flush_range(off, n)
            {
                return Err(Error::io("msync", path(&self.dir, k), e));
            }
            from += n as u64;
        }
        // The next flush starts at or beyond `to` (the synced mark and the head only
        // grow): the segments below its segment are done with.
        self.retain_from(to / self.size);
        Ok(())
    }

    /// The path and in-segment offset of log position `pos`, for error messages.
    pub(crate) fn locate(&self, pos: u64) -> (PathBuf, u64) {
        (path(&self.dir, pos / self.size), pos % self.size)
    }
}

/// Opens segment file `path`, creating it if missing with exactly `mode` (`open(2)`
/// would filter it by the umask) and in `group`: a new file otherwise gets its creator's
/// group, which the other users the queue is shared with may not be in.
fn open_or_create(path: &Path, mode: u32, group: Option<u32>) -> std::io::Result<File> {
    let mut attempts = 0;
    loop {
        match sys::open_state_file(path, Open::Existing) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => return r,
        }
        match sys::create_new_file(path, mode) {
            Ok(file) => {
                if let Some(g) = group {
                    // Best effort: only a member of the group may give a file to it; a
                    // creator outside it reaches the queue through the mode's other
                    // bits, and so do the others then.
                    let _ = sys::set_group(&file, g);
                }
                return Ok(file);
            }
            // Another producer created it meanwhile: open theirs (it is removed only
            // once the head passed it, or by `destroy`: then give up after a few tries).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 3 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(0), "seg-0000000000000000.log");
        assert_eq!(name(0xab), "seg-00000000000000ab.log");
        assert_eq!(parse_name(&name(12345)), Some(12345));
        assert_eq!(parse_name("seg-12.log"), None);
        assert_eq!(parse_name("control"), None);
    }

    #[test]
    fn sizes() {
        assert!(valid_size(64 << 10));
        assert!(valid_size(8 << 20));
        assert!(valid_size(1 << 30));
        assert!(!valid_size((64 << 10) - 4096));
        assert!(!valid_size((1 << 30) + 4096));
        assert!(!valid_size((64 << 10) + 1));
        assert!(!valid_size(0));
    }
}
