//! Processes and threads: the IDs of the caller, and what identifies a process for
//! display.
//!
//! Nothing here decides whether an owner is alive: that is the kernel's word through
//! open-file-description locks (`owner.rs`, `sys/ofd.rs`). A PID and its start time
//! ([`process_start_time`]) are shown to people (`fileipc stat`, `Mutex::holder`) and
//! may be unreadable (a `hidepid` `/proc`, another PID namespace): they read as 0 then.

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

/// The calling thread's kernel thread ID.
pub(crate) fn thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The effective user ID of the calling process.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}
