//! Processes and threads: identities that survive ID reuse, liveness, and the IDs of
//! the caller.
//!
//! A PID or thread ID alone is not an identity: the kernel recycles it. Where the
//! platform file knows start times ([`process_start_time`]), an identity is the ID plus
//! the start time; where it does not, the ID alone, and recycling goes undetected.

use super::imp::START_TIME_UNSUPPORTED;
use super::process_start_time;

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
            None => START_TIME_UNSUPPORTED && pid_exists(self.pid),
        }
    }
}

/// Whether process `pid` is still running and its start time's low 32 bits are
/// `start_low`: [`ProcessId::is_alive`] for a start time kept in 32 bits. As there, an
/// unknown start time (0) matches any.
pub(crate) fn is_alive_low(pid: u32, start_low: u32) -> bool {
    if pid == 0 || !pid_exists(pid) {
        return false;
    }
    match process_start_time(pid) {
        Some(start) => start_low == 0 || start as u32 == start_low,
        None => START_TIME_UNSUPPORTED,
    }
}

/// Whether a process with this ID exists (a zombie included): signal 0 can be sent to
/// it, or is refused for lack of permission.
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

/// The identity the calling thread records as a lock owner: its thread ID in the high
/// half and the low 32 bits of its start time in the low half. Computed once per thread.
/// (A child created by `fork` without `exec` inherits its parent's cached value; locks
/// stay exclusive, but owner-death detection then watches the parent thread.)
pub(crate) fn owner_ident() -> u64 {
    thread_local!(static IDENT: u64 = {
        let tid = thread_id();
        let start = if START_TIME_UNSUPPORTED { 0 } else { process_start_time(tid).unwrap_or(0) };
        (u64::from(tid) << 32) | (start & 0xffff_ffff)
    });
    IDENT.with(|v| *v)
}

/// Whether the thread `tid` that took a lock is still running. `ident` is what the owner
/// recorded about itself with [`owner_ident`] (0 if it was killed before recording it):
/// when it names `tid`, the start time must match too, so a recycled thread ID is not
/// mistaken for the owner. A zombie counts as dead.
pub(crate) fn owner_alive(tid: u32, ident: u64) -> bool {
    if tid == 0 {
        return false;
    }
    if START_TIME_UNSUPPORTED {
        return pid_exists(tid);
    }
    match process_start_time(tid) {
        None => false,
        Some(start) => (ident >> 32) as u32 != tid || ident as u32 == start as u32,
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
