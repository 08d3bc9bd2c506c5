//! The operating-system layer: the only module that talks to the kernel.
//!
//! The primitives above are written against the small, safe contract below. Each item
//! is implemented once for all Unix systems (in this file, on top of `rustix` and the
//! standard library) unless the kernel offers something better, in which case a
//! backend file provides it. The backend is selected here and nowhere else:
//!
//! | need | contract | Linux (`linux.rs`) | portable (`portable.rs`) |
//! |---|---|---|---|
//! | wait on a shared word with a deadline | [`futex_wait`] returns when the word may have changed, at the deadline, or spuriously | `FUTEX_WAIT` (shared, never `PRIVATE`) | sleeps with exponential back-off, 50 us to 2 ms |
//! | wake waiters of a shared word | [`futex_wake`] | `FUTEX_WAKE` | nothing to do |
//! | watch a directory for a name to appear | [`DirWatch`] | inotify | polls the name with back-off |
//! | identify a process across PID reuse | [`ProcessId`] | PID + start time from `/proc/PID/stat` | PID only (recycling not detected) |
//!
//! Common to all Unix systems (this file): whole-file `flock` locks owned by an open file
//! description ([`try_lock_exclusive`], [`lock_exclusive`], [`unlock`]), opening state
//! files without following symbolic links ([`open_state_file`]), and mapping a file
//! shared between processes ([`SharedMap`]).
//!
//! The `force-portable` cargo feature selects the portable backend on Linux too, so
//! CI runs the code a platform without futexes or inotify would run. A macOS port adds a
//! `macos.rs` backend (`os_sync_wait_on_address`, kqueue `EVFILT_VNODE`,
//! `proc_pidinfo` start time) and changes nothing above this module.
//!
//! # Safety
//!
//! The one unsafe operation in the crate lives in [`SharedMap`]: viewing bytes of a
//! `MAP_SHARED` mapping as atomics. It is sound because the mapping outlives every
//! reference handed out (they borrow the map), offsets are checked for bounds and
//! alignment, and every process touches those bytes only through atomic operations.
//! What no user-space code can prevent is another process truncating the file under the
//! mapping, which turns an access into `SIGBUS`; state files are created `0600` and
//! checked at open so only their owner can do that.

#![allow(unsafe_code)]
#![allow(clippy::disallowed_methods)]

#[cfg_attr(
    all(target_os = "linux", not(feature = "force-portable")),
    path = "linux.rs"
)]
#[cfg_attr(
    not(all(target_os = "linux", not(feature = "force-portable"))),
    path = "portable.rs"
)]
mod imp;

pub(crate) use imp::{DirWatch, futex_wait, futex_wake, process_start_time};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Instant;

use rustix::fs::{FlockOperation, OFlags};

/// The name of the backend in use, for diagnostics (`fileipc stat`, benchmarks).
pub(crate) const BACKEND: &str = imp::NAME;

/// Time left until `deadline`, `None` meaning "no deadline"; zero once it has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<std::time::Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

// ---------------------------------------------------------------------------------------
// Opening files

/// How [`open_state_file`] may open a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// The file must exist.
    Existing,
    /// Create it with this mode if it is missing.
    CreateWithMode(u32),
}

/// Opens `path` read-write, never following a symbolic link at its last component
/// (`O_NOFOLLOW`: a link there fails with `ELOOP`), close-on-exec, and checks that what
/// was opened is a regular file.
pub(crate) fn open_state_file(path: &Path, how: Open) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32);
    if let Open::CreateWithMode(mode) = how {
        opts.create(true).mode(mode);
    }
    let file = opts.open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Whether an error from opening is the refusal of `O_NOFOLLOW` to follow a link.
pub(crate) fn is_symlink_refusal(err: &io::Error) -> bool {
    err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Whether `file` is still the file named `path` (same device and inode). A lock
/// taken on a file that was meanwhile unlinked or replaced protects nothing.
pub(crate) fn is_same_file(file: &File, path: &Path) -> io::Result<bool> {
    let a = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(b) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Whole-file locks (flock): owned by the open file description, released by the kernel
// when the last descriptor of it is closed, including when its process is killed.

/// Takes an exclusive lock if it is free; `Ok(false)` if another description holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    flock_nb(file, FlockOperation::NonBlockingLockExclusive)
}

/// Takes a shared lock if no exclusive lock is held; `Ok(false)` otherwise.
pub(crate) fn try_lock_shared(file: &File) -> io::Result<bool> {
    flock_nb(file, FlockOperation::NonBlockingLockShared)
}

fn flock_nb(file: &File, op: FlockOperation) -> io::Result<bool> {
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes an exclusive lock, sleeping in the kernel until it is free. Use only where the
/// wait is known to be short (a holder's critical section of a few instructions).
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        match rustix::fs::flock(file, FlockOperation::LockExclusive) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// Releases a lock taken by any of the functions above.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, FlockOperation::Unlock).map_err(Into::into)
}

// ---------------------------------------------------------------------------------------
// Shared mappings

/// A file mapped `MAP_SHARED`, read-write, whose bytes other processes see and change.
///
/// All access goes through atomics ([`SharedMap::u32`], [`SharedMap::u64`]) or through
/// whole-slice copies made while the caller holds a lock that excludes writers
/// ([`SharedMap::read_at`], [`SharedMap::write_at`]).
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
}

// ---------------------------------------------------------------------------------------
// Processes

/// A process, identified so that a recycled PID is not mistaken for it: its PID and the
/// time it started (in clock ticks since boot on Linux; 0 where unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProcessId {
    /// The process ID.
    pub(crate) pid: u32,
    /// When the process started, in an OS-specific unit; 0 if unknown.
    pub(crate) start: u64,
}

impl ProcessId {
    /// The calling process.
    pub(crate) fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId {
            pid,
            start: process_start_time(pid).unwrap_or(0),
        }
    }

    /// Looks up process `pid`; `None` if no such process exists now.
    #[cfg(test)]
    pub(crate) fn of_pid(pid: u32) -> Option<ProcessId> {
        if !pid_exists(pid) {
            return None;
        }
        Some(ProcessId {
            pid,
            start: process_start_time(pid).unwrap_or(0),
        })
    }

    /// Whether this very process (same PID, same start time) is still running.
    /// A zombie counts as dead: it holds nothing any more.
    pub(crate) fn is_alive(&self) -> bool {
        if self.pid == 0 || !pid_exists(self.pid) {
            return false;
        }
        match process_start_time(self.pid) {
            Some(start) => self.start == 0 || start == self.start,
            None => imp::START_TIME_UNSUPPORTED && pid_exists(self.pid),
        }
    }
}

fn pid_exists(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(rustix::io::Errno::PERM) => true,
        Err(_) => false,
    }
}

/// The calling thread's kernel thread ID (for diagnostics).
pub(crate) fn thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

// --- added for Event and PidFile

/// Why [`DirWatch::wait_for`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirEvent {
    /// An entry with the name was created in (or moved into) the directory since the
    /// watch started or since the last call; it may be gone again already. The portable
    /// backend reports this only when it sees the entry exist.
    Appeared,
    /// The watched directory was deleted or moved away; the watch is dead.
    Gone,
    /// Events were lost (the kernel queue overflowed): the caller must re-check.
    #[allow(
        dead_code,
        reason = "only a notifying backend can lose events; polling cannot"
    )]
    Lost,
    /// The deadline passed.
    TimedOut,
}

/// Creates `path` as a new, empty regular file and opens it read-write, close-on-exec.
/// Fails with `AlreadyExists` if any entry is there, a symbolic link included (`O_EXCL`
/// never follows one). The file gets exactly `mode`: it is `fchmod`ed after creation,
/// since the umask filters the mode given to `open`.
pub(crate) fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)?;
    rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(mode))?;
    Ok(file)
}

/// Opens an existing `path` without following a symbolic link at its last component
/// (`ELOOP`, see [`is_symlink_refusal`]), without blocking on a FIFO (`O_NONBLOCK`),
/// close-on-exec; read-only, or read-write if `write`. Does not check the file type:
/// callers `fstat` the result.
pub(crate) fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK).bits() as i32)
        .open(path)
}

/// The effective user ID of the calling process.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

// --- added for queue
//
// Bulk copies in and out of a mapping (the byte-wise volatile loops above cost about a
// nanosecond per byte, too slow for megabyte payloads), flushing part of a mapping, and
// the liveness of a lock owner identified by its thread ID.

impl SharedMap {
    /// Copies `buf.len()` bytes out of the mapping at `offset` with one `memcpy`.
    ///
    /// The caller must know, from its protocol, that no other thread or process writes
    /// this range during the copy (for the queue: the bytes lie below a committed tail,
    /// which no producer writes again). A hostile process that writes anyway can only
    /// make the copy hold unexpected bytes, which the caller verifies with a checksum.
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
}

/// Whether the thread `tid` that took a lock is still running. `ident` is what the owner
/// recorded about itself with [`owner_ident`] (0 if it was killed before recording it):
/// when it names `tid`, the start time must match too, so a recycled thread ID is not
/// mistaken for the owner. A zombie counts as dead.
pub(crate) fn owner_alive(tid: u32, ident: u64) -> bool {
    if tid == 0 {
        return false;
    }
    if imp::START_TIME_UNSUPPORTED {
        return pid_exists(tid);
    }
    match process_start_time(tid) {
        None => false,
        Some(start) => (ident >> 32) as u32 != tid || ident as u32 == start as u32,
    }
}

/// The identity the calling thread records as a lock owner: its thread ID in the high
/// half and the low 32 bits of its start time in the low half. Computed once per thread.
/// (A child created by `fork` without `exec` inherits its parent's cached value; locks
/// stay exclusive, but owner-death detection then watches the parent thread.)
pub(crate) fn owner_ident() -> u64 {
    thread_local!(static IDENT: u64 = {
        let tid = thread_id();
        let start = if imp::START_TIME_UNSUPPORTED { 0 } else { process_start_time(tid).unwrap_or(0) };
        (u64::from(tid) << 32) | (start & 0xffff_ffff)
    });
    IDENT.with(|v| *v)
}

// --- added for shared_data

/// The device and inode numbers of an open file: its identity in this boot.
pub(crate) fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

// --- added for Mutex and Semaphore

/// Milliseconds of `CLOCK_MONOTONIC`, a clock every process of the machine reads the same
/// way (unlike [`Instant`], whose value cannot be shared), so a deadline stored in a
/// shared mapping means the same moment to all of them. Wraps after 49 days; compare
/// values with wrapping arithmetic only.
pub(crate) fn monotonic_millis() -> u32 {
    monotonic_in(1000)
}

/// `CLOCK_MONOTONIC` in units of 1/`per_second` s, modulo 2^32.
fn monotonic_in(per_second: u64) -> u32 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let units = (ts.tv_sec as u64)
        .wrapping_mul(per_second)
        .wrapping_add(ts.tv_nsec as u64 / (1_000_000_000 / per_second));
    units as u32
}

// --- added for queue (prefaulting outside the producer lock)

impl SharedMap {
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

// --- added for the torture suite (full disk)

/// Allocates storage for the bytes `offset..offset + len` of `file` (growing it if
/// needed), so that writing them through a shared mapping cannot fault: a page the file
/// system cannot allocate on first write through a mapping raises `SIGBUS` instead of
/// returning `ENOSPC`. Fails with `StorageFull` when there is no room. Where the file
/// system or the OS cannot reserve space (no `fallocate`), does nothing.
///
/// # References
///
/// - [fallocate(2)](https://man7.org/linux/man-pages/man2/fallocate.2.html)
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    loop {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
            r => return r.map_err(Into::into),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = (file, offset, len);
        Ok(())
    }
}

// --- added for Semaphore (direct hand-off)

/// Whether process `pid` is still running and its start time's low 32 bits are
/// `start_low`: [`ProcessId::is_alive`] for a start time kept in 32 bits. As there, an
/// unknown start time (0) matches any.
pub(crate) fn is_alive_low(pid: u32, start_low: u32) -> bool {
    if pid == 0 || !pid_exists(pid) {
        return false;
    }
    match process_start_time(pid) {
        Some(start) => start_low == 0 || start as u32 == start_low,
        None => imp::START_TIME_UNSUPPORTED,
    }
}

// --- added for SharedData (combining board)

/// Microseconds of the system-wide monotonic clock (`CLOCK_MONOTONIC`), the same in
/// every process of the machine, modulo 2^32 (compare with `wrapping_sub`).
pub(crate) fn monotonic_micros() -> u32 {
    monotonic_in(1_000_000)
}
