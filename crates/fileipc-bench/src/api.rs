//! What a workload needs from an implementation: one small trait per kind of primitive.
//!
//! Every contender of a workload (ours and each baseline) implements the same trait, and
//! the worker loops in `workers.rs` are written once against it, so ours and the baselines
//! are timed by the very same code. `baselines/` implements these traits with raw system
//! calls; `ours.rs` implements them with the `fileipc` primitives.

use anyhow::Result;

/// One end of a message queue, as used by one worker process.
pub(crate) trait QueueEnd {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Receives one message into `buf` (replacing its contents); `Ok(false)` when the
    /// implementation gave up waiting (its own timeout) before a message came.
    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool>;
}

/// Something that one process at a time may hold: a mutex, or a semaphore with one permit.
pub(crate) trait Lock {
    /// Blocks until held (an error if the implementation times out).
    fn lock(&mut self) -> Result<()>;
    /// Releases what `lock` took.
    fn unlock(&mut self) -> Result<()>;
}

/// A key-value store shared between processes; values are JSON.
pub(crate) trait Kv {
    /// Stores `value` under `key`.
    fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<()>;
    /// The value under `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<serde_json::Value>>;
    /// Stores many entries (setting up a workload; not timed). One `set` each by default.
    fn fill(&mut self, entries: &[(String, serde_json::Value)]) -> Result<()> {
        for (k, v) in entries {
            self.set(k, v)?;
        }
        Ok(())
    }
    /// Atomically adds `delta` to the integer under `key` (missing = 0); the new value.
    fn increment(&mut self, key: &str, delta: i64) -> Result<i64>;
}

/// An event flag: set by one process, waited for by another.
pub(crate) trait EventFlag {
    /// Sets the event (wakes waiters).
    fn set(&mut self) -> Result<()>;
    /// Clears the event.
    fn clear(&mut self) -> Result<()>;
    /// Blocks until the event is set; `Ok(false)` if the implementation timed out.
    fn wait(&mut self) -> Result<bool>;
}
