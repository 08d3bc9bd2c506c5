//! Byte-range locks owned by an open file description (`F_OFD_SETLK`, Linux 3.15 and
//! later): the mark by which an owner shows that it is alive.
//!
//! Unlike classic POSIX record locks, these belong to the open file description, not to
//! the process: they are not released when the process closes some *other* descriptor of
//! the file, they are shared by every descriptor duplicated from the same description
//! (`dup`, inheritance across `fork` and `exec`), and the kernel drops them when the last
//! such descriptor closes, including when every process holding one is killed. They work
//! across users, PID namespaces and `hidepid` `/proc` mounts, since nothing is looked up
//! by process ID. Locks may lie beyond the end of the file; no byte is ever written.
//!
//! # References
//!
//! - [fcntl(2), "Open file description locks"](https://man7.org/linux/man-pages/man2/fcntl.2.html)

use std::fs::File;
use std::io;

#[cfg(target_os = "linux")]
fn lock_struct(kind: nix::libc::c_short, offset: u64) -> io::Result<nix::libc::flock> {
    let start = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(nix::libc::flock {
        l_type: kind,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: start,
        l_len: 1,
        // Must be 0 for open file description locks.
        l_pid: 0,
    })
}

/// Takes an exclusive lock on the byte at `offset` through `file`'s open file
/// description; `Ok(false)` if another description holds a lock there.
#[cfg(target_os = "linux")]
pub(crate) fn try_lock_byte(file: &File, offset: u64) -> io::Result<bool> {
    use nix::fcntl::{FcntlArg, fcntl};
    let l = lock_struct(nix::libc::F_WRLCK as nix::libc::c_short, offset)?;
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLK(&l)) {
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => return Ok(false),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes an exclusive lock on the byte at `offset` through `file`'s open file
/// description, waiting as long as another description holds one there
/// (`F_OFD_SETLKW`). Release it with [`unlock_byte`] (or by closing the description).
#[cfg(target_os = "linux")]
pub(crate) fn lock_byte(file: &File, offset: u64) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let l = lock_struct(nix::libc::F_WRLCK as nix::libc::c_short, offset)?;
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLKW(&l)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Releases the lock `file`'s open file description holds on the byte at `offset`.
#[cfg(target_os = "linux")]
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let l = lock_struct(nix::libc::F_UNLCK as nix::libc::c_short, offset)?;
    fcntl(file, FcntlArg::F_OFD_SETLK(&l))?;
    Ok(())
}

/// Whether a description other than `file`'s holds a lock on the byte at `offset`
/// (`F_OFD_GETLK`; `file` must be open for reading and writing).
#[cfg(target_os = "linux")]
pub(crate) fn byte_locked_by_other(file: &File, offset: u64) -> io::Result<bool> {
    use nix::fcntl::{FcntlArg, fcntl};
    let mut l = lock_struct(nix::libc::F_WRLCK as nix::libc::c_short, offset)?;
    loop {
        match fcntl(file, FcntlArg::F_OFD_GETLK(&mut l)) {
            Ok(_) => return Ok(l.l_type != nix::libc::F_UNLCK as nix::libc::c_short),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Open file description locks exist on Linux only. A port to another system provides
/// these functions in its own file (for macOS: an `flock` on a per-owner file).
#[cfg(not(target_os = "linux"))]
pub(crate) fn try_lock_byte(_file: &File, _offset: u64) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// See the Linux version.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lock_byte(_file: &File, _offset: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// See the Linux version.
#[cfg(not(target_os = "linux"))]
pub(crate) fn unlock_byte(_file: &File, _offset: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// See the Linux version.
#[cfg(not(target_os = "linux"))]
pub(crate) fn byte_locked_by_other(_file: &File, _offset: u64) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_byte_lock_is_seen_by_other_descriptions_and_dropped_with_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap()
        };
        let (a, b) = (open(), open());
        let far = 1u64 << 40;
        assert!(try_lock_byte(&a, far + 7).unwrap());
        assert!(byte_locked_by_other(&b, far + 7).unwrap());
        assert!(
            !byte_locked_by_other(&a, far + 7).unwrap(),
            "its own lock is no conflict"
        );
        assert!(!byte_locked_by_other(&b, far + 8).unwrap());
        assert!(!try_lock_byte(&b, far + 7).unwrap());
        // A duplicate of the description shares the lock; closing one copy keeps it.
        let a2 = a.try_clone().unwrap();
        drop(a);
        assert!(byte_locked_by_other(&b, far + 7).unwrap());
        drop(a2);
        assert!(!byte_locked_by_other(&b, far + 7).unwrap());
    }
}
