//! Shared mappings: a file mapped `MAP_SHARED` into every process that opens it, read
//! and written through atomics and bulk copies.
//!
//! # Safety
//!
//! This is the one file of the crate with `unsafe` code: viewing bytes of a `MAP_SHARED`
//! mapping as atomics ([`SharedMap::u32`], [`SharedMap::u64`]) and copying ranges in and
//! out of it ([`SharedMap::copy_in`], [`SharedMap::copy_out`]). It is sound because the
//! mapping outlives every reference handed out (they borrow the map), offsets are checked
//! for bounds and alignment, every process touches the atomic words only through atomic
//! operations, and the copied ranges are, by the caller's protocol, written by one party
//! and not read until published. What no user-space code can prevent is another process
//! truncating the file under the mapping, which turns an access into `SIGBUS`; state
//! files are created `0600` and checked at open so only their owner can do that.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// A file mapped `MAP_SHARED`, read-write, whose bytes other processes see and change.
///
/// All access goes through atomics ([`SharedMap::u32`], [`SharedMap::u64`]) or through
/// whole-range copies ([`SharedMap::copy_out`], [`SharedMap::copy_in`]) of bytes that the
/// caller's protocol keeps from being written during the copy.
#[derive(Debug)]
pub(crate) struct SharedMap {
    raw: memmap2::MmapRaw,
}

impl SharedMap {
    /// Maps the first `len` bytes of `file`, which must be at least that long.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<SharedMap> {
        let raw = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        Ok(SharedMap { raw })
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    fn check(&self, offset: usize, size: usize, align: usize) {
        assert!(
            offset.is_multiple_of(align)
                && offset.checked_add(size).is_some_and(|e| e <= self.len()),
            "sys::SharedMap access out of bounds or misaligned: offset {offset} size {size}"
        );
    }

    /// The 32-bit atomic word at `offset` (must be 4-byte aligned and in bounds).
    pub(crate) fn u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: (1) the range is inside the mapping and 4-aligned (checked above; the
        // mapping itself is page-aligned); (2) the mapping lives as long as `self`, which
        // the returned reference borrows; (3) `AtomicU32` has the size and alignment of
        // `u32` and may be shared between threads and, over MAP_SHARED memory, between
        // processes; every accessor of these bytes uses atomic operations.
        unsafe { &*self.raw.as_mut_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The 64-bit atomic word at `offset` (must be 8-byte aligned and in bounds).
    pub(crate) fn u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: as for `u32` above, with 8-byte size and alignment.
        unsafe { &*self.raw.as_mut_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies `buf.len()` bytes out of the mapping at `offset` with one `memcpy`.
    ///
    /// The caller must know, from its protocol, that no other thread or process writes
    /// this range during the copy, or else discard the copy (for the queue: the bytes
    /// lie below a committed tail, which no producer writes again until the segment is
    /// recycled after the head passed it; a consumer that copied from it then loses its
    /// claim and drops the copy). A hostile process that writes anyway can only make the
    /// copy hold unexpected bytes, which the caller verifies with a checksum.
    pub(crate) fn copy_out(&self, offset: usize, buf: &mut [u8]) {
        self.check(offset, buf.len(), 1);
        // SAFETY: (1) `offset..offset + buf.len()` lies inside the mapping (checked
        // above), which lives as long as `self`; (2) `buf` is a distinct, exclusively
        // borrowed heap or stack buffer, so the ranges cannot overlap; (3) no Rust
        // reference to the mapped bytes exists (all other access is through atomics on
        // other offsets or through these raw copies), and by the caller's protocol no
        // writer touches the range while it is copied.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.raw.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
    }

    /// Copies `len` bytes out of the mapping at `offset` into a new vector, with one
    /// `memcpy` and without first zeroing the vector. The same protocol as
    /// [`Self::copy_out`] applies.
    pub(crate) fn copy_out_vec(&self, offset: usize, len: usize) -> Vec<u8> {
        self.check(offset, len, 1);
        let mut v = Vec::with_capacity(len);
        // SAFETY: (1) `offset..offset + len` lies inside the mapping (checked above),
        // which lives as long as `self`; (2) `v` owns a fresh allocation of at least `len`
        // bytes, distinct from the mapping, so the ranges cannot overlap; (3) as in
        // `copy_out`, the mapped bytes are only read, through a raw pointer; (4) the copy
        // initialises the first `len` bytes of `v` before `set_len` exposes them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.raw.as_ptr().add(offset), v.as_mut_ptr(), len);
            v.set_len(len);
        }
        v
    }

    /// Copies `data` into the mapping at `offset` with one `memcpy`. The caller must hold
    /// the lock that makes it the only writer of this range, and no reader may read the
    /// range before the caller publishes it (for the queue: the bytes lie beyond the
    /// committed tail until the producer's release store of the new tail).
    pub(crate) fn copy_in(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len(), 1);
        // SAFETY: (1) in bounds (checked above) of a read-write mapping alive as long as
        // `self`; (2) `data` is an ordinary Rust slice, never part of this mapping's range
        // being written (the queue copies from user buffers), so no overlap; (3) the
        // caller is the only writer of the range and readers wait for its publication.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.raw.as_mut_ptr().add(offset),
                data.len(),
            );
        }
    }

    /// Writes the pages holding `offset..offset + len` to storage and waits (`msync`
    /// with `MS_SYNC`, which on Linux also syncs the block allocation of a sparse file).
    pub(crate) fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len, 1);
        if len == 0 {
            return Ok(());
        }
        self.raw.flush_range(offset, len)
    }

    /// Maps the pages holding `offset..offset + len` writable in this process ahead of
    /// use (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14 and later), so that later writes
    /// there take no page fault. The bytes are left unchanged. Elsewhere (or on an older
    /// kernel) it returns an error, which callers ignore: the writes then fault as usual.
    pub(crate) fn populate_write(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len, 1);
        if len == 0 {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            self.raw
                .advise_range(memmap2::Advice::PopulateWrite, offset, len)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }
}

/// A number that tells this process image apart from its parent and its children: the
/// same in every thread, different in a child created by `fork` (before it calls `exec`).
/// A handle that recorded it can tell, with one memory read, that it is now used in a
/// forked child. It lives in a private page marked `MADV_WIPEONFORK` (Linux 4.14 and
/// later), which the kernel gives a child as zeros; where that is not available, the
/// process ID is read instead (a system call per use).
///
/// # References
///
/// - [madvise(2), `MADV_WIPEONFORK`](https://man7.org/linux/man-pages/man2/madvise.2.html)
pub(crate) fn fork_epoch() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::Ordering;

    /// The page, or `None` where it cannot be wiped on fork.
    static PAGE: OnceLock<Option<memmap2::MmapRaw>> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let raw = memmap2::MmapRaw::from(memmap2::MmapOptions::new().len(4096).map_anon().ok()?);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the range is exactly this process's own anonymous mapping, alive for
            // the rest of the process (it is never unmapped: it lives in a static), and
            // MADV_WIPEONFORK changes only what a forked child sees, not this process's
            // view of the bytes.
            unsafe {
                rustix::mm::madvise(
                    raw.as_mut_ptr().cast(),
                    raw.len(),
                    rustix::mm::Advice::LinuxWipeOnFork,
                )
            }
            .ok()?;
            Some(raw)
        }
        #[cfg(not(target_os = "linux"))]
        {
            drop(raw);
            None
        }
    });
    let Some(raw) = page else {
        return u64::from(std::process::id()) << 32;
    };
    // SAFETY: (1) the first 8 bytes of a page-aligned anonymous mapping of 4096 bytes,
    // which lives in a static and is never unmapped; (2) `AtomicU64` has the size and
    // alignment of `u64`; (3) these bytes are only ever accessed through this atomic.
    let word = unsafe { &*raw.as_mut_ptr().cast::<AtomicU64>() };
    let v = word.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    // First use in this process image (or in a child, where the page reads as zeros):
    // the process ID tells it apart from its parent, whose ID differs.
    let new = u64::from(std::process::id()) << 32 | 1;
    match word.compare_exchange(0, new, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => new,
        Err(v) => v,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fork_epoch_is_stable_within_a_process() {
        let a = super::fork_epoch();
        assert_ne!(a, 0);
        let b = std::thread::spawn(super::fork_epoch).join().unwrap();
        assert_eq!(a, b);
    }
}
