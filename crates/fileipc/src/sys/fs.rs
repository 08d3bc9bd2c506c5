//! Files: opening and creating state files, their identity, whole-file locks, and
//! reserving their storage.
//!
//! No function here follows a symbolic link at the last component of a path
//! (`O_NOFOLLOW`, or `O_EXCL` for creation), and every descriptor is close-on-exec.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{FlockOperation, OFlags};

// ---------------------------------------------------------------------------------------
// Opening and creating

/// How [`open_state_file`] may open a path. (A file to create gets its exact mode from
/// [`create_new_file`]; `open(2)` would filter it by the umask.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// The file must exist.
    Existing,
}

/// Opens `path` read-write, never following a symbolic link at its last component
/// (`O_NOFOLLOW`: a link there fails with `ELOOP`), close-on-exec, and checks that what
/// was opened is a regular file.
pub(crate) fn open_state_file(path: &Path, how: Open) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32);
    let Open::Existing = how;
    let file = opts.open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
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

/// Gives `file` the group `gid`, keeping its owner (`fchown`). The kernel allows it to
/// the file's owner if a member of that group, and to root.
pub(crate) fn set_group(file: &File, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(file, None, Some(rustix::fs::Gid::from_raw(gid))).map_err(Into::into)
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

/// Opens the directory `path` read-only (for a [`lock_exclusive`] on it), without
/// following a symbolic link at its last component, close-on-exec. Fails with
/// `NotADirectory` if it is not a directory.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

/// Renames `from` to `to` unless an entry named `to` exists: fails with
/// `AlreadyExists` then, and with `NotFound` if `from` is gone. Atomic where the kernel
/// offers it (`renameat2(RENAME_NOREPLACE)`, Linux 3.15 and later, on the common file
/// systems); elsewhere `link` then `unlink`, so that a process killed between the two
/// leaves the file under both names (the caller must tolerate finding `from` again).
///
/// # References
///
/// - [renameat2(2)](https://man7.org/linux/man-pages/man2/rename.2.html)
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        // Not supported by this kernel or file system: fall back below.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
        r => return r.map_err(Into::into),
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Whether an error from opening is the refusal of `O_NOFOLLOW` to follow a link.
pub(crate) fn is_symlink_refusal(err: &io::Error) -> bool {
    err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

// ---------------------------------------------------------------------------------------
// Identity

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

/// The device and inode numbers of an open file: its identity in this boot.
pub(crate) fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
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

/// Releases a lock taken by [`try_lock_exclusive`], [`try_lock_shared`] or
/// [`lock_exclusive`].
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, FlockOperation::Unlock).map_err(Into::into)
}

// ---------------------------------------------------------------------------------------
// Storage

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

/// Opens `file` (found at `path`) again: a new open file description of the same file,
/// read-write, close-on-exec, so that byte-range locks taken through it are its own.
/// Goes through `/proc/self/fd` where it exists (the path may have been replaced since),
/// else through `path`, checking that the same file was opened.
pub(crate) fn reopen(file: &File, path: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let opts = || {
        let mut o = OpenOptions::new();
        o.read(true)
            .write(true)
            .custom_flags((OFlags::CLOEXEC).bits() as i32);
        o
    };
    let (dev, ino) = file_id(file)?;
    let by_fd = Path::new("/proc/self/fd").join(file.as_raw_fd().to_string());
    for candidate in [by_fd.as_path(), path] {
        if let Ok(f) = opts().open(candidate)
            && file_id(&f)? == (dev, ino)
        {
            return Ok(f);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "the file was replaced and cannot be opened again",
    ))
}

/// Makes the descriptor of `file` inherited by programs this process executes (clears
/// close-on-exec), or not.
pub(crate) fn set_inherited(file: &File, inherited: bool) -> io::Result<()> {
    let mut flags = rustix::io::fcntl_getfd(file)?;
    flags.set(rustix::io::FdFlags::CLOEXEC, !inherited);
    rustix::io::fcntl_setfd(file, flags).map_err(Into::into)
}
