//! Inter-process communication through the file system.
//!
//! (The crate documentation essay — Design, Process death, Security — is written in
//! `docs` once the primitives land.)

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod state;
pub(crate) mod sys;

mod event;
mod mutex;
mod pidfile;
mod queue;
mod semaphore;
mod shared_data;

use std::time::{Duration, Instant};

pub use error::{Error, Result};

// Re-exports of the primitives: one line per module, each owned by that module's author.
// mutex:
pub use mutex::{Mutex, MutexBuilder, MutexGuard, MutexHolder};
// semaphore:
pub use semaphore::{Semaphore, SemaphoreBuilder, SemaphorePermit};
// event:
// pidfile:
// queue:
// shared_data:

/// How long the blocking calls without a timeout in their name (`lock`, `acquire`,
/// `wait`, `recv`) wait before giving up, as in the original `@stdlib/ipc`: 5 seconds.
/// Each has a `_timeout` form taking any duration and a `_forever` form without limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline `timeout` from now; `None` ("forever") if that overflows `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
