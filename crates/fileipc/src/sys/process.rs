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

/// The calling thread's kernel thread ID.
pub(crate) fn thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The effective user ID of the calling process.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}
