//! Processes and threads: the IDs of the caller, and what identifies a process for
//! display.
//!
//! Nothing here decides whether an owner is alive: that is the kernel's word through
//! open-file-description locks (`owner.rs`, `sys/ofd.rs`). A PID and its start time
//! ([`process_start_time`]) are shown to people (`fileipc stat`, `Mutex::holder`) and
//! may be unreadable (a `hidepid` `/proc`, another PID namespace): they read as 0 then.
//! [`process_exists`] answers for a PID file another program wrote, which carries no
//! lock to ask instead.

use super::process_start_time;

/// A process as shown to people: its PID and the time it started (in clock ticks since
/// boot on Linux; 0 where unknown).
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
}

/// Whether a process with this PID exists in the caller's PID namespace: `kill(pid, 0)`,
/// where `ESRCH` means none and `EPERM` (it exists, owned by another user) means one.
/// Only a hint: the PID may have been reused by an unrelated process, and a PID written
/// in another PID namespace names another process (or none) here. Any other error
/// answers `true`, the cautious answer for the one caller (a foreign PID file is not
/// taken over while its process may live).
pub(crate) fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// The calling thread's kernel thread ID.
pub(crate) fn thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The effective user ID of the calling process.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// An identifier of the current boot of the machine, the same in every process until it
/// restarts: the first 64 bits of Linux's random boot ID
/// (`/proc/sys/kernel/random/boot_id`), never 0. `None` where unknown (other systems),
/// read once per process.
pub(crate) fn boot_id() -> Option<u64> {
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        if !cfg!(any(target_os = "linux", target_os = "android")) {
            return None;
        }
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: String = text
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        if hex.len() < 16 {
            return None;
        }
        u64::from_str_radix(&hex, 16).ok().map(|v| v.max(1))
    })
}

/// Fills `buf` with random bytes from the kernel (`getrandom`), for tokens no other
/// process can guess or repeat.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
}
