//! The operating-system layer: the only module that talks to the kernel.
//!
//! The primitives above are written against the small, safe contract re-exported here.
//! Each item is implemented once for all Unix systems, on top of `rustix`, `memmap2` and
//! the standard library, unless the kernel offers something better, in which case a
//! platform file provides it. The platform file is selected here and nowhere else.
//!
//! Common to all Unix systems:
//!
//! | file | what it provides |
//! |---|---|
//! | `fs.rs` | opening and creating state files without following symbolic links ([`open_state_file`], [`create_new_file`], [`open_nofollow`], [`open_dir`]), their group ([`set_group`]), opening one again ([`reopen`]) and handing a descriptor to executed programs ([`set_inherited`]), file identity ([`is_same_file`], [`file_id`]), whole-file `flock` locks owned by an open file description ([`try_lock_exclusive`], [`try_lock_shared`], [`lock_exclusive`], [`unlock`]), reserving storage ([`allocate`]) |
//! | `map.rs` | a file mapped shared between processes, read through atomics and bulk copies ([`SharedMap`]), and the [`fork_epoch`] that tells a forked child from its parent; the only file with `unsafe` code |
//! | `ofd.rs` | byte-range locks owned by an open file description ([`try_lock_byte`], [`byte_locked_by_other`]): how an owner shows it is alive; [`lock_byte`] and [`unlock_byte`], waiting, for adopting an empty state file (Linux; a port provides these) |
//! | `process.rs` | a process as shown to people ([`ProcessId`]: PID and start time, never used to decide liveness), [`thread_id`], [`effective_uid`], the machine's [`boot_id`], whether a PID exists ([`process_exists`], only for PID files other programs wrote) |
//! | `time.rs` | clocks every process reads alike ([`monotonic_millis`], [`monotonic_micros`]) and [`remaining`] time to a deadline |
//!
//! Provided by the platform file:
//!
//! | need | contract | Linux (`linux.rs`) | portable (`portable.rs`) |
//! |---|---|---|---|
//! | wait on a shared word with a deadline | [`futex_wait`] returns when the word may have changed, at the deadline, or spuriously | `FUTEX_WAIT` (shared, never `PRIVATE`) | sleeps with exponential back-off, 50 us to 2 ms |
//! | wake waiters of a shared word | [`futex_wake`] | `FUTEX_WAKE` | nothing to do |
//! | watch a directory for a name to appear | [`DirWatch`], answering a [`DirEvent`] | inotify | polls the name with back-off |
//! | a process's start time, for display | [`process_start_time`], used by [`ProcessId`] | `/proc/PID/stat` | unknown (0) |
//!
//! The `force-portable` cargo feature selects the portable backend on Linux too, so
//! CI runs the code a platform without futexes or inotify would run. A macOS port adds a
//! `macos.rs` backend (`os_sync_wait_on_address`, kqueue `EVFILT_VNODE`,
//! `proc_pidinfo` start time) and changes nothing above this module.
//!
//! The raw calls the rest of the crate may not make (see `clippy.toml`) are allowed in
//! this module and its files only.

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

mod fs;
mod map;
mod ofd;
mod process;
mod time;

pub(crate) use fs::{
    Open, allocate, create_new_file, file_id, is_same_file, is_symlink_refusal, lock_exclusive,
    open_dir, open_nofollow, open_state_file, rename_no_replace, reopen, set_group, set_inherited,
    try_lock_exclusive, try_lock_shared, unlock,
};
pub(crate) use imp::{DirWatch, futex_wait, futex_wake, process_start_time};
pub(crate) use map::{SharedMap, fork_epoch};
pub(crate) use ofd::{byte_locked_by_other, lock_byte, try_lock_byte, unlock_byte};
#[cfg(feature = "redis")]
pub(crate) use process::random;
pub(crate) use process::{ProcessId, boot_id, effective_uid, process_exists, thread_id};
pub(crate) use time::{boot_nanos, monotonic_micros, monotonic_millis, remaining};

/// The name of the backend in use, for diagnostics (`fileipc stat`, benchmarks).
pub(crate) const BACKEND: &str = imp::NAME;

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
