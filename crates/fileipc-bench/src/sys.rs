//! The raw system calls the baselines are made of: POSIX message queues and named
//! semaphores, futexes on a shared mapping, a process-shared robust pthread mutex, `flock`,
//! inotify, `statfs`, the monotonic clock; and those of the harness itself: CPU time
//! (`getrusage`, `wait4`), the parent-death signal and the nice value of load processes.
//!
//! The library keeps its system calls in `fileipc::sys`; the benchmark's baselines are
//! *by definition* raw system calls written outside the library, so they live here, in the
//! one module of this crate that may use `unsafe`. The example measurements
//! (`examples/*.rs`) use them too, hence `pub`.
//!
//! # Safety
//!
//! Every unsafe block is a foreign call into libc with arguments that are valid for the
//! duration of the call (NUL-terminated names kept alive in `CString`s, buffers borrowed
//! from slices of the stated length), or, in [`Shm`], the view of a `MAP_SHARED` mapping
//! as atomics: the mapping lives as long as the `Shm` that hands out the references,
//! offsets are bounds- and alignment-checked, and every process touches those bytes only
//! through atomic operations; in [`RobustMutex`], a `pthread_mutex_t` placed in such a
//! mapping, initialised once (by the process that wins a compare-and-swap on the mapping's
//! first word) and only ever touched through the pthread calls.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine, so
/// timestamps taken in different processes can be subtracted.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in name"))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// ---------------------------------------------------------------------------------------
// POSIX message queues

/// A POSIX message queue descriptor (`mq_open(3)`), closed on drop.
#[derive(Debug)]
pub struct Mq {
    mqd: libc::mqd_t,
    msgsize: usize,
}

impl Mq {
    /// Opens (creating if missing) the queue `name` ("/..."), with room for `maxmsg`
    /// messages of `msgsize` bytes when it is created.
    pub fn open(name: &str, maxmsg: usize, msgsize: usize) -> io::Result<Mq> {
        let cname = cstr(name)?;
        // SAFETY: mq_attr is a plain C struct; all-zero is a valid value.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = maxmsg as libc::c_long;
        attr.mq_msgsize = msgsize as libc::c_long;
        // SAFETY: `cname` is NUL-terminated and `attr` valid for the call; the variadic
        // mode and attr arguments are the ones O_CREAT requires.
        let mqd = unsafe {
            libc::mq_open(
                cname.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                0o600 as libc::mode_t,
                &mut attr as *mut libc::mq_attr,
            )
        };
        if mqd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; `attr` is written by the call.
        check(unsafe { libc::mq_getattr(mqd, &mut attr) })?;
        Ok(Mq {
            mqd,
            msgsize: attr.mq_msgsize as usize,
        })
    }

    /// `mq_send`, retried on `EINTR`.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `msg` is a valid buffer of `msg.len()` bytes.
            let r = unsafe { libc::mq_send(self.mqd, msg.as_ptr().cast(), msg.len(), 0) };
            match check(r) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map(drop),
            }
        }
    }

    /// `mq_receive` into `buf` (resized to the queue's message size), retried on `EINTR`.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.resize(self.msgsize, 0);
        loop {
            // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes, which is at
            // least the queue's message size as mq_receive requires.
            let r = unsafe {
                libc::mq_receive(
                    self.mqd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                buf.truncate(r as usize);
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `mq_unlink`; a missing name is not an error.
    pub fn unlink(name: &str) {
        if let Ok(c) = cstr(name) {
            // SAFETY: `c` is NUL-terminated.
            unsafe { libc::mq_unlink(c.as_ptr()) };
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: `mqd` is an open descriptor owned by this value.
        unsafe { libc::mq_close(self.mqd) };
    }
}

/// The system's `msg_max` (the largest `mq_maxmsg` an unprivileged process may ask for).
pub fn mq_msg_max() -> usize {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

/// The system's `msgsize_max` (the largest `mq_msgsize` an unprivileged process may ask
/// for; 8192 by default).
pub fn mq_msgsize_max() -> usize {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msgsize_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(8192)
}

/// Raises `RLIMIT_MSGQUEUE` (bytes of message queues per user) to `bytes` if this process
/// may; returns the limit in force afterwards.
pub fn raise_mq_rlimit(bytes: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut lim) };
    if lim.rlim_cur < bytes {
        let want = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: lim.rlim_max.max(bytes),
        };
        // SAFETY: `want` is a valid rlimit; failure (not privileged) leaves the old one.
        if unsafe { libc::setrlimit(libc::RLIMIT_MSGQUEUE, &want) } == 0 {
            lim = want;
        }
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------------------
// POSIX named semaphores

/// A POSIX named semaphore (`sem_open(3)`), closed on drop.
#[derive(Debug)]
pub struct NamedSem(*mut libc::sem_t);

impl NamedSem {
    /// Opens (creating with `initial` if missing) the semaphore `name` ("/...").
    pub fn open(name: &str, initial: u32) -> io::Result<NamedSem> {
        let cname = cstr(name)?;
        // SAFETY: `cname` is NUL-terminated; mode and value are the variadic arguments
        // O_CREAT requires.
        let s = unsafe {
            libc::sem_open(
                cname.as_ptr(),
                libc::O_CREAT,
                0o600 as libc::c_uint,
                initial as libc::c_uint,
            )
        };
        if s == libc::SEM_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(NamedSem(s))
    }

    /// `sem_wait`, retried on `EINTR`.
    pub fn wait(&self) -> io::Result<()> {
        loop {
            // SAFETY: `self.0` is a semaphore returned by sem_open and not yet closed.
            match check(unsafe { libc::sem_wait(self.0) }) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map(drop),
            }
        }
    }

    /// `sem_post`.
    pub fn post(&self) -> io::Result<()> {
        // SAFETY: `self.0` is a semaphore returned by sem_open and not yet closed.
        check(unsafe { libc::sem_post(self.0) }).map(drop)
    }

    /// `sem_unlink`; a missing name is not an error.
    pub fn unlink(name: &str) {
        if let Ok(c) = cstr(name) {
            // SAFETY: `c` is NUL-terminated.
            unsafe { libc::sem_unlink(c.as_ptr()) };
        }
    }
}

impl Drop for NamedSem {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from sem_open and is closed exactly once, here.
        unsafe { libc::sem_close(self.0) };
    }
}

// ---------------------------------------------------------------------------------------
// A shared mapping of a file, seen as atomic words, and futexes on them

/// A file mapped `MAP_SHARED`, read and written only through atomics.
#[derive(Debug)]
pub struct Shm {
    ptr: *mut u8,
    len: usize,
    _file: File,
}

impl Shm {
    /// Opens (creating if missing, growing to `len` bytes, zero-filled) and maps `path`.
    pub fn open(path: &Path, len: usize) -> io::Result<Shm> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < len as u64 {
            file.set_len(len as u64)?;
        }
        // SAFETY: mapping `len` bytes of a file we just sized to at least `len`; the
        // kernel picks the address; the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shm {
            ptr: ptr.cast(),
            len,
            _file: file,
        })
    }

    /// The 32-bit word at byte `offset` (a multiple of 4 inside the mapping).
    pub fn u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.len,
            "bad shm offset"
        );
        // SAFETY: in bounds and aligned (checked above; the mapping is page-aligned); the
        // reference borrows `self`, which keeps the mapping alive; all access is atomic.
        unsafe { &*self.ptr.add(offset).cast::<AtomicU32>() }
    }

    /// The 64-bit word at byte `offset` (a multiple of 8 inside the mapping).
    pub fn u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "bad shm offset"
        );
        // SAFETY: as for `u32`.
        unsafe { &*self.ptr.add(offset).cast::<AtomicU64>() }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `open`; no reference outlives
        // `self` because they all borrow it.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `FUTEX_WAIT` (shared, not `PRIVATE`: the waker is another process) while `word` holds
/// `expected`, for at most `timeout`. Returns on wake, mismatch, signal or timeout.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid aligned u32 for the call; `tsp` is null or points to a
    // timespec that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// `FUTEX_WAKE` (shared) of up to `n` waiters of `word` (`u32::MAX`: all; the kernel
/// reads the count as a signed int, so it is clamped to `i32::MAX`).
pub fn futex_wake(word: &AtomicU32, n: u32) {
    let n = n.min(i32::MAX as u32);
    // SAFETY: `word` is a valid aligned u32 for the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

// ---------------------------------------------------------------------------------------
// A process-shared robust pthread mutex

/// Byte offset of the `pthread_mutex_t` in a [`RobustMutex`]'s mapping (word 0 is the
/// initialisation state: 0 none, 1 under way, 2 done).
const PTHREAD_MUTEX_AT: usize = 64;

/// A `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`, in a file
/// mapped `MAP_SHARED`: the natural limit of a cross-process mutex that survives its
/// holder's death (the kernel's robust-futex list hands the next locker `EOWNERDEAD`).
#[derive(Debug)]
pub struct RobustMutex {
    shm: Shm,
    /// How many times `lock` found the previous holder dead and made the mutex consistent.
    recovered: u64,
}

impl RobustMutex {
    /// Opens (creating and initialising if needed) the mutex in the file at `path`. The
    /// first process to move the state word from 0 to 1 initialises it; the others wait
    /// (at most 10 s) for the state 2.
    pub fn open(path: &Path) -> io::Result<RobustMutex> {
        assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= 4096 - PTHREAD_MUTEX_AT);
        let shm = Shm::open(path, 4096)?;
        let state = shm.u32(0);
        let ptr = shm
            .ptr
            .wrapping_add(PTHREAD_MUTEX_AT)
            .cast::<libc::pthread_mutex_t>();
        if state
            .compare_exchange(
                0,
                1,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok()
        {
            // SAFETY: pthread_mutexattr_t is a plain C struct, initialised by the call
            // before any other use; `ptr` is inside the live mapping, aligned (page-aligned
            // mapping + 64), large enough (asserted above), and no other process touches it
            // before the state word says 2.
            unsafe {
                let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
                pcheck(libc::pthread_mutexattr_init(&mut attr))?;
                pcheck(libc::pthread_mutexattr_setpshared(
                    &mut attr,
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                pcheck(libc::pthread_mutexattr_setrobust(
                    &mut attr,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                let r = pcheck(libc::pthread_mutex_init(ptr, &attr));
                libc::pthread_mutexattr_destroy(&mut attr);
                r?;
            }
            state.store(2, std::sync::atomic::Ordering::Release);
            futex_wake(state, u32::MAX);
        } else {
            let give_up = now_ns() + 10_000_000_000;
            loop {
                let v = state.load(std::sync::atomic::Ordering::Acquire);
                if v == 2 {
                    break;
                }
                if now_ns() >= give_up {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "robust pthread mutex: never initialised",
                    ));
                }
                futex_wait(state, v, Some(Duration::from_millis(100)));
            }
        }
        Ok(RobustMutex { shm, recovered: 0 })
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.shm
            .ptr
            .wrapping_add(PTHREAD_MUTEX_AT)
            .cast::<libc::pthread_mutex_t>()
    }

    /// `pthread_mutex_lock`; on `EOWNERDEAD` (the holder died) marks the mutex consistent
    /// with `pthread_mutex_consistent` and counts it in [`RobustMutex::recovered`].
    pub fn lock(&mut self) -> io::Result<()> {
        // SAFETY: `raw()` points at the mutex initialised in `open` (state 2 seen), inside
        // the mapping `self.shm` keeps alive.
        match unsafe { libc::pthread_mutex_lock(self.raw()) } {
            0 => Ok(()),
            libc::EOWNERDEAD => {
                self.recovered += 1;
                // SAFETY: as above; this thread holds the mutex (EOWNERDEAD grants it).
                pcheck(unsafe { libc::pthread_mutex_consistent(self.raw()) })
            }
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// `pthread_mutex_unlock`.
    pub fn unlock(&mut self) -> io::Result<()> {
        // SAFETY: as in `lock`; the caller holds the mutex.
        pcheck(unsafe { libc::pthread_mutex_unlock(self.raw()) })
    }

    /// How many times `lock` recovered the mutex from a dead holder.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }
}

/// A pthread return code (0 or an errno value) as a result.
fn pcheck(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

// ---------------------------------------------------------------------------------------
// The harness's own calls: CPU time, load processes

/// User + system CPU time this process has used so far, in nanoseconds
/// (`getrusage(RUSAGE_SELF)`: all its threads, none of its children).
pub fn cpu_self_ns() -> u64 {
    // SAFETY: rusage is a plain C struct; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime)
}

/// User + system CPU time of this process's children that have been waited for, in
/// nanoseconds (`getrusage(RUSAGE_CHILDREN)`).
pub fn cpu_children_ns() -> u64 {
    // SAFETY: rusage is a plain C struct; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime)
}

fn tv_ns(tv: libc::timeval) -> u64 {
    (tv.tv_sec as u64) * 1_000_000_000 + (tv.tv_usec as u64) * 1000
}

/// Sends `SIGKILL` to the child `pid` and reaps it with `wait4`; returns the user + system
/// CPU time it used, in nanoseconds. The caller must not wait for it otherwise.
pub fn kill_and_reap(pid: u32) -> io::Result<u64> {
    let pid = pid as libc::pid_t;
    // SAFETY: plain syscall; `pid` is a child of this process not yet reaped, so the id
    // cannot have been reused.
    check(unsafe { libc::kill(pid, libc::SIGKILL) })?;
    // SAFETY: rusage is a plain C struct; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    loop {
        // SAFETY: `status` and `ru` are valid, writable for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok(tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Asks the kernel to send this process `SIGKILL` when its parent thread exits
/// (`PR_SET_PDEATHSIG`), so a load process never outlives a harness that died.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).map(drop)
}

/// This process's nice value (`getpriority(PRIO_PROCESS, 0)`).
pub fn nice() -> i32 {
    // SAFETY: plain syscall with integer arguments (-1 is also a valid nice value; the
    // nice values used here are never ambiguous in practice, so errno is not checked).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

// ---------------------------------------------------------------------------------------
// Files: flock, FIFOs, statfs

/// `flock(2)` with `LOCK_EX` (`exclusive`) or `LOCK_SH`, blocking, retried on `EINTR`.
pub fn flock_lock(file: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: plain syscall on an fd owned by `file`.
        match check(unsafe { libc::flock(file.as_raw_fd(), op) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// `flock(2)` with `LOCK_EX | LOCK_NB`: takes the lock if it is free, `WouldBlock` if not.
pub fn flock_try_lock(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an fd owned by `file`.
    check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(drop)
}

/// `flock(2)` with `LOCK_UN`.
pub fn flock_unlock(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an fd owned by `file`.
    check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) }).map(drop)
}

/// `mkfifo(3)` with mode 0600; an existing path is not an error.
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is NUL-terminated.
    match check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
}

/// The name of the file system holding `path`, from `statfs(2)`'s `f_type`.
pub fn fs_type(path: &Path) -> String {
    let Ok(c) = cpath(path) else {
        return "unknown".into();
    };
    // SAFETY: statfs is a plain C struct; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` writable for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64 as u32;
    match magic {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x6969 => "nfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6573_5546 => "fuse".into(),
        0x0102_1997 => "9p".into(),
        other => format!("0x{other:x}"),
    }
}

// ---------------------------------------------------------------------------------------
// inotify

/// An inotify instance watching one directory.
#[derive(Debug)]
pub struct Inotify {
    fd: File,
    buf: Vec<u8>,
}

impl Inotify {
    /// Watches `dir` for names created or moved in (`IN_CREATE | IN_MOVED_TO`).
    pub fn watch_dir(dir: &Path) -> io::Result<Inotify> {
        // SAFETY: plain syscall; the returned fd is checked and then owned by a File.
        let fd = check(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let c = cpath(dir)?;
        // SAFETY: `c` is NUL-terminated; `fd` is an inotify descriptor.
        check(unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                c.as_ptr(),
                libc::IN_CREATE | libc::IN_MOVED_TO,
            )
        })?;
        Ok(Inotify {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Blocks until events arrive; returns the names they carry.
    pub fn read_names(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let n = loop {
            // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
            let r = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut names = Vec::new();
        let head = std::mem::size_of::<libc::inotify_event>();
        let mut off = 0;
        while off + head <= n {
            // The name length is the last u32 of the fixed header (wd, mask, cookie, len).
            let len_bytes: [u8; 4] = self.buf[off + 12..off + 16].try_into().unwrap_or([0; 4]);
            let len = u32::from_ne_bytes(len_bytes) as usize;
            let name = &self.buf[off + head..(off + head + len).min(n)];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            names.push(name[..end].to_vec());
            off += head + len;
        }
        Ok(names)
    }
}
