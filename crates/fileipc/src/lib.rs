//! Inter-process communication through the file system.
//!
//! Six primitives, each named by a path, for processes on one machine that must talk,
//! wait for each other or share a little state: [`MessageQueue`], [`Mutex`],
//! [`Semaphore`], [`Event`], [`PidFile`] and [`SharedData`]. They implement the
//! `@stdlib/ipc` module of the Hemlock language, made correct under concurrency and
//! robust to processes that die at any instant.
//!
//! ```no_run
//! use fileipc::{Mutex, MessageQueue};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let jobs = MessageQueue::open("/tmp/jobs")?;
//! jobs.send("resize photo.png")?;
//!
//! let lock = Mutex::open("/tmp/jobs.lock")?;
//! {
//!     let _guard = lock.guard_forever()?; // waits as long as it takes
//!     // ... critical section: the guard unlocks when dropped ...
//! }
//! let job = jobs.recv_forever()?;
//! println!("{}", job.to_str()?);
//! # Ok(())
//! # }
//! ```
//!
//! # Waiting
//!
//! The first choice for every wait is the form that waits as long as it takes and hands
//! back what it obtained: [`Mutex::guard_forever`] (a guard that unlocks when dropped),
//! [`Semaphore::permit_forever`] (a permit released when dropped),
//! [`MessageQueue::recv_forever`] and [`Event::wait_forever`]. Each also has a `_timeout`
//! and a `_deadline` form, a `try_` form that does not wait, and a plain form (`lock`,
//! `acquire`, `wait`, `recv`, `guard`, `permit`) that waits at most
//! [`DEFAULT_TIMEOUT`] (5 s, as in the original `@stdlib/ipc`). A timeout is a result,
//! not an error: `false` or `None`, which the caller must check:
//!
//! ```no_run
//! # fn main() -> fileipc::Result<()> {
//! # let m = fileipc::Mutex::open("/tmp/m")?;
//! if m.lock()? {
//!     // ... critical section ...
//!     m.unlock()?;
//! } else {
//!     eprintln!("still locked after 5 s");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! These calls are `#[must_use]`, so `m.lock();` warns, but the compiler does not warn
//! about a `bool` or an `Option` left behind `?`: `m.lock()?;` compiles and goes on
//! without the lock after 5 s. Never write it; write `let _guard = m.guard_forever()?;`.
//!
//! # Opening
//!
//! Every primitive opens the same way: `Prim::open(path)` with the default options, or
//! the builder `PrimOptions::new()` (also `Prim::options()`, and `Default`) with
//! chained setters (`.mode(0o660)`, ...) ending in `.open(path)`, which can be called
//! again with the same options. [`Semaphore::open`] also takes the initial permits
//! (`SemaphoreOptions::initial` in the builder).
//!
//! Opening creates the primitive if it is missing (the queue its directory, the others
//! their file; [`PidFile`] and [`Event`] only when [`PidFile::create`] or [`Event::set`]
//! runs), but never a missing parent directory: the parent must exist, as for
//! `std::fs::File::create`, and an error of kind `NotFound` names the path otherwise.
//! Create the directory first (`std::fs::create_dir_all`) with the mode you want.
//!
//! A handle that holds nothing for its user can be shared between threads through an
//! `Arc` (every handle is `Send + Sync`); `try_clone` opens an independent handle on the
//! same path and options: for [`Mutex`] and [`Semaphore`] a second holder that excludes
//! the first, for [`MessageQueue`], [`Event`] and [`SharedData`] one with its own
//! mappings or connection. A [`PidFile`] has none: ownership belongs to one handle.
//!
//! # Cleanup
//!
//! Every primitive can be removed: [`Mutex::destroy`], [`Semaphore::destroy`],
//! [`Event::destroy`], [`SharedData::destroy`] (with its `-wal`, `-shm`, `-board` and
//! `-lock` files), [`MessageQueue::destroy`] and [`PidFile::remove`]; from the shell,
//! `fileipc rm PATH...` knows every kind and refuses anything else. Removal never waits
//! for or takes from a live holder: handles opened before keep working on the removed
//! files (a destroyed queue or SharedData refuses their further sends and writes), and
//! a handle opened at the path afterwards gets a new primitive. A [`Namespace`] is a
//! temporary directory of primitives, removed with everything in it when dropped.
//!
//! # Design
//!
//! State lives in small files mapped into every process that opens them, so the common
//! path of every operation is a few atomic instructions on shared memory; the kernel is
//! called only to sleep and to wake. Waits are kernel-assisted: a futex on a word of the
//! mapping (woken only when someone sleeps), `flock` for locks the kernel must release
//! when their holder dies, inotify for events created from the shell. Nothing polls in
//! the common path. The operating-system layer is one private module (`sys`) with a
//! small safe contract; everything else is portable. The formats are versioned and
//! documented in `docs/FORMAT.md`.
//!
//! # When a process dies
//!
//! A process can be killed with `SIGKILL` between any two instructions. Every primitive
//! is built so that this corrupts nothing and loses nothing that was acknowledged, and
//! whether the owner of a lock, a permit or a slot is alive is always the kernel's word,
//! never a guess from `/proc`: an owner holds an open-file-description lock on a byte
//! of the state file that names its id, which the kernel drops when its last descriptor
//! closes. That is right across users, `hidepid` `/proc` mounts, PID namespaces
//! (containers sharing a volume) and `fork`, and no timer ever takes anything from a
//! live owner, however long it is stopped (see `docs/FORMAT.md`, "Owners"):
//!
//! - a [`Mutex`] is an `flock` on the lock file: the kernel releases it when the holder's
//!   last descriptor closes, and a waiter takes it over at once;
//! - a [`Semaphore`] records which process (its owner id) holds which permits; waiters
//!   reclaim the permits of the dead;
//! - a [`MessageQueue`] publishes every change with one final store after the data is in
//!   place, and its internal locks are repaired by the next process when their owner died;
//!   a message is lost only if a consumer died after taking it, before it returned;
//! - a [`PidFile`] is locked for its owner's lifetime, so a stale file is taken over and a
//!   recycled PID never reads as "already running";
//! - [`SharedData`] is SQLite in WAL mode: a transaction is wholly there or wholly absent.
//!
//! # Security
//!
//! The locks are advisory: they exclude processes that use them, not others. State files
//! are created with mode `0600` (PID files `0644`) unless a `mode` option says otherwise,
//! are never opened through a symbolic link (`O_NOFOLLOW`), and a file holding anything
//! but what the primitive expects is refused with an error naming the path. In a shared
//! directory such as `/tmp`, prefer paths inside a directory only you can write: a
//! predictable name there can be taken by another user first (you will get an error,
//! never their file).
//!
//! # Platforms
//!
//! Linux is the tested platform. Other Unix systems run the portable backend (the same
//! code with polling waits), which Linux CI also runs through the `force-portable`
//! feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod inspect;
mod location;
mod namespace;
mod owner;
#[cfg(feature = "redis")]
mod remote;
mod robust;
mod state;
pub(crate) mod sys;
pub(crate) mod wait;

mod event;
mod mutex;
mod pidfile;
mod queue;
mod semaphore;
mod shared_data;

use std::time::{Duration, Instant};

/// The pure parsers of untrusted bytes, for the fuzz targets in `fuzz/` and the corpus
/// replay in `tests/corruption.rs`. Not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    /// Decodes a queue record header read at log position `pos` (needs 32 bytes) and
    /// checks `payload` against it: `(length, sequence, payload matches)`.
    pub fn queue_record(bytes: &[u8], pos: u64) -> Option<(u32, u64, bool)> {
        let b: &[u8; 32] = bytes.get(..32)?.try_into().ok()?;
        let h = crate::queue::record::Header::decode(b, pos)?;
        Some((h.len, h.seq, h.payload_ok(&bytes[32..])))
    }

    /// Parses the content of a PID file.
    pub fn pid_file(content: &[u8]) -> Result<Option<u32>, String> {
        crate::pidfile::parse_pid(content)
    }
}

pub use error::{Error, Result};
pub use inspect::{FileKind, Inspection, inspect};
pub use location::{Location, RedisUrl};
pub use namespace::Namespace;

// Re-exports of the primitives: one line per module, each owned by that module's author.
// mutex:
pub use mutex::{Mutex, MutexGuard, MutexHolder, MutexOptions};
// semaphore:
pub use semaphore::{Semaphore, SemaphoreHolder, SemaphoreOptions, SemaphorePermit};
// event:
pub use event::{Event, EventOptions};
// pidfile:
pub use pidfile::{PidFile, PidFileOptions, PidStatus};
// queue:
pub use queue::{ClaimToken, Claimed, DEFAULT_LEASE, Iter as QueueIter, TryIter as QueueTryIter};
pub use queue::{
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEGMENT_SIZE, MESSAGE_SIZE_LIMIT, Message, MessageQueue,
    QueueOptions, QueueStats,
};
// shared_data:
pub use shared_data::{SharedData, SharedDataOptions, Transaction};

/// What the compiler says about an ignored result (compile-fail doctests; each has a
/// twin that compiles, so it fails for the reason named and no other).
///
/// An ignored `bool` from a timed call (a `Result` not even unwrapped):
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f(m: &fileipc::Mutex) { m.lock(); }
/// ```
/// ```
/// #![deny(unused_must_use)]
/// fn f(m: &fileipc::Mutex) { let _ = m.lock(); }
/// ```
///
/// A received message, a guard or a permit dropped at once, behind `?`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f(q: &fileipc::MessageQueue) -> fileipc::Result<()> { q.recv_forever()?; Ok(()) }
/// ```
/// ```
/// #![deny(unused_must_use)]
/// fn f(q: &fileipc::MessageQueue) -> fileipc::Result<()> { let _m = q.recv_forever()?; Ok(()) }
/// ```
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f(m: &fileipc::Mutex) -> fileipc::Result<()> { m.guard_forever()?; Ok(()) }
/// ```
/// ```
/// #![deny(unused_must_use)]
/// fn f(m: &fileipc::Mutex) -> fileipc::Result<()> { let _g = m.guard_forever()?; Ok(()) }
/// ```
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f(s: &fileipc::Semaphore) -> fileipc::Result<()> { s.permit_forever()?; Ok(()) }
/// ```
/// ```
/// #![deny(unused_must_use)]
/// fn f(s: &fileipc::Semaphore) -> fileipc::Result<()> { let _p = s.permit_forever()?; Ok(()) }
/// ```
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f(e: &fileipc::Event) { e.wait_timeout(std::time::Duration::ZERO); }
/// ```
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f(p: &mut fileipc::PidFile) { p.create(); }
/// ```
#[cfg(doctest)]
pub struct MustUseChecks;

// The README's examples are compiled as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The wait backend in use: `"linux (futex, inotify)"`, or `"portable (polling)"` on
/// systems without a kernel-assisted one (and with the `force-portable` feature).
pub const WAIT_BACKEND: &str = sys::BACKEND;

/// How long the blocking calls without a timeout in their name (`lock`, `acquire`,
/// `wait`, `recv`) wait before giving up, as in the original `@stdlib/ipc`: 5 seconds.
/// Each has a `_timeout` form taking any duration and a `_forever` form without limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline `timeout` from now; `None` ("forever") if that overflows `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
