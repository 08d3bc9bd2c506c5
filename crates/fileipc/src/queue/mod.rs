//! [`MessageQueue`]: a crash-safe, exactly-once, multi-producer multi-consumer queue of
//! byte messages in a directory.
//!
//! # Design
//!
//! The queue is one linear log of records, a byte stream addressed by a `u64` position,
//! cut into segment files of a fixed size `S` (8 MiB by default): segment `k` holds the
//! bytes `[k*S, (k+1)*S)`. A small control file, mapped by every handle, holds the
//! *tail* (end of the last committed record), the *head* (start of the next record to
//! consume), the `sent`/`received` counters, two robust futex locks (producers serialise
//! only among themselves at the tail, consumers only among themselves at the head) and a
//! doorbell word on which idle consumers sleep.
//!
//! A send copies one record (32-byte header with the payload's CRC-32, then the payload)
//! into the mapped segment beyond the tail and publishes it with a single store of the
//! new tail. A receive copies the record at the head out of the mapping, checks it, and
//! consumes it with a single store of the new head. Segments are removed once the head
//! passes their end, so disk use follows the backlog. A receiver with nothing to do spins
//! (for a budget learned from its recent waits) and yields, then sleeps on the doorbell;
//! a sender rings it only when someone sleeps, once per sleep. See `docs/FORMAT.md` for
//! the formats and the crash-consistency argument.
//!
//! # Process death
//!
//! A process killed at any instant leaves the queue consistent: its half-written record
//! lies beyond the tail and is overwritten by the next send; a message is either consumed
//! (the head moved) or still there. The next process that wants a lock a dead process
//! held takes it over within a few milliseconds and repairs the counters.
//!
//! # At-least-once delivery
//!
//! A `recv` consumes a message when it takes it: if the receiver dies before finishing
//! its work, the message is gone. [`MessageQueue::claim`] instead records the message in
//! an in-flight table of the control file and leaves it in the log until the
//! [`Claimed`] is acknowledged; it is delivered again if it is given back, if its
//! claimer's process dies (seen at once through the kernel's lock on the claimer's owner
//! id), or if its lease runs out. Plain receivers and claimers can share a queue.

//! # Layout of this module
//!
//! This file is the public front: [`MessageQueue`] dispatches every call to its engine.
//! The local file-system engine, [`LocalQueue`], is cut by mechanism:
//!
//! | file | holds |
//! |---|---|
//! | `options.rs` | [`QueueOptions`] and the public limits and defaults |
//! | `message.rs` | [`Message`] and [`QueueStats`] |
//! | `open.rs` | the engine's handle: open, lock repair, segment removal, clear, destroy, stats |
//! | `produce.rs` | the producer commit: `send`, `send_all` |
//! | `consume.rs` | the lock-free consumer claim, damaged-record skipping, the receive calls |
//! | `claimed.rs` | [`Claimed`], the public front of a claimed message |
//! | `claim.rs` | claim/ack: the local grant, the claim calls, redelivery, dead letters |
//! | `inflight.rs` | the in-flight table of claimed messages in the control file |
//! | `iter.rs`, `json.rs` | iterators over the messages; messages as JSON (serde) |
//! | `bounded.rs` | sends that wait for room in a queue with a capacity |
//! | `durable.rs` | the group commit of durable mode |
//! | `doorbell.rs` | the doorbell, the waiter registry and a receiver's wait for data |
//! | `control.rs` | the control file's layout |
//! | `record.rs` | the record header's encoding |
//! | `segment.rs` | segment files and the per-side caches of their mappings |
//! | `redis.rs`, `redis_claim.rs` | the Redis engine: a stream with one consumer group; its claim/ack |

mod bounded;
mod claim;
mod claimed;
mod consume;
mod control;
mod doorbell;
mod durable;
mod inflight;
mod iter;
mod json;
mod message;
mod open;
mod options;
mod produce;
pub(crate) mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_claim;
mod retire;
mod segment;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
pub use claim::DEFAULT_LEASE;
pub use claimed::{ClaimToken, Claimed};
pub use iter::{Iter, TryIter};
pub use message::{Message, QueueStats};
pub(crate) use open::CONTROL;
use open::LocalQueue;
pub use options::{
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEGMENT_SIZE, MESSAGE_SIZE_LIMIT, QueueOptions,
};
pub(crate) use segment::parse_name as parse_segment_name;

/// A queue of byte messages in a directory, shared by any number of producer and
/// consumer processes and threads; every message goes to exactly one receiver, in the
/// order of the log (one producer's messages arrive in its send order).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("work_queue");
/// use fileipc::MessageQueue;
/// let q = MessageQueue::open(&path)?; // e.g. "/tmp/work_queue"
/// q.send("Task 1")?;
/// q.send(b"\x00binary\xff")?;
/// assert_eq!(q.count()?, 2);
/// assert_eq!(q.recv_forever()?, "Task 1"); // waits as long as it takes
/// assert_eq!(&*q.recv_forever()?, b"\x00binary\xff");
/// assert!(q.try_recv()?.is_none());
/// q.destroy()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MessageQueue {
    engine: Engine,
}

/// The implementation behind a [`MessageQueue`].
#[cfg_attr(feature = "redis", allow(clippy::large_enum_variant))]
enum Engine {
    /// The queue in a local directory: a log of segment files and a mapped control file.
    Local(LocalQueue),
    /// A stream with one consumer group on a Redis server.
    #[cfg(feature = "redis")]
    Redis(self::redis::RedisQueue),
}

impl fmt::Debug for MessageQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MessageQueue");
        match &self.engine {
            Engine::Local(e) => d
                .field("dir", &e.dir)
                .field("segment_size", &e.seg_size)
                .field("durable", &e.durable),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => d.field("url", &e.path()),
        };
        d.finish_non_exhaustive()
    }
}

impl MessageQueue {
    /// Opens the queue in directory `dir` with default options, creating the directory
    /// and the queue if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if `dir` exists and is not empty but holds no queue, or holds a
    /// queue of another format version; [`Error::Corrupt`] if the control file is
    /// damaged (its head beyond its tail); [`Error::Symlink`] if `dir` or its control file
    /// is a symbolic link (never followed); [`Error::Invalid`] if the directory or the
    /// control file belongs to another user (with a private mode) or is writable by
    /// group or others beyond the mode asked for; [`Error::Io`] if the file system
    /// refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path().join("q"))?;
    /// assert!(q.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<MessageQueue> {
        QueueOptions::default().open(dir)
    }

    /// Opens the existing queue in directory `dir`; never creates anything (neither the
    /// directory, its parents, nor a control file). For queries on a path that may be
    /// mistyped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `dir` if there is no queue there (no
    /// directory, or a directory without a live queue); otherwise as
    /// [`QueueOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("a/jobs");
    /// let e = fileipc::MessageQueue::open_existing(&path).unwrap_err();
    /// assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    /// assert!(!dir.path().join("a").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_existing(dir: impl AsRef<Path>) -> Result<MessageQueue> {
        QueueOptions::default().open_existing(dir)
    }

    /// Options for opening a queue (the same as [`QueueOptions::new`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::options()
    ///     .durable(true)
    ///     .mode(0o660)
    ///     .open(dir.path().join("q"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options() -> QueueOptions {
        QueueOptions::new()
    }

    /// A new handle on the same queue, opened again with the same options. A handle
    /// holds nothing on behalf of its user (it is `Send + Sync`: an `Arc` shares one as
    /// well); a new one has its own mappings and segment caches.
    ///
    /// # Errors
    ///
    /// As [`QueueOptions::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let a = fileipc::MessageQueue::open(dir.path().join("q"))?;
    /// let b = a.try_clone()?;
    /// a.send("hi")?;
    /// assert_eq!(b.recv_forever()?, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<MessageQueue> {
        match &self.engine {
            Engine::Local(e) => QueueOptions::new()
                .max_message_size(e.max_message_size)
                .segment_size(e.seg_size)
                .durable(e.durable)
                .mode(e.mode)
                .open(&e.dir),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => {
                let mut opts = QueueOptions::new()
                    .max_message_size(e.max_message_size())
                    .lease(e.lease)
                    .max_deliveries(e.max_deliveries);
                opts.capacity = e.capacity;
                opts.open(e.path())
            }
        }
    }

    /// The queue's directory.
    pub fn path(&self) -> &Path {
        match &self.engine {
            Engine::Local(e) => e.path(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        }
    }

    /// Appends a message (any bytes, empty included) to the queue. In durable mode it is
    /// on stable storage when this returns. With a
    /// [`capacity`](QueueOptions::capacity), waits as long as it takes for room (see
    /// [`try_send`](Self::try_send), [`send_timeout`](Self::send_timeout)); so does
    /// [`send_all`](Self::send_all), batch by batch.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if the message is larger than the handle's maximum (nothing is
    /// written); [`Error::Destroyed`] if the queue was destroyed; [`Error::Io`] if a
    /// segment file cannot be created or synced.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("Task 1")?;
    /// q.send(vec![0u8, 159, 146, 150])?;
    /// q.send([])?;
    /// assert_eq!(q.count()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn send(&self, message: impl AsRef<[u8]>) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.send(message.as_ref()),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.send(message.as_ref()),
        }
    }

    /// Sends every message of `messages` in order, holding the producer lock once per
    /// batch of records (256) and waking receivers once per batch. Returns how many were
    /// sent. All sizes are checked first: if one is over the maximum, nothing is sent.
    ///
    /// Not all-or-nothing: each batch is committed on its own (receivers may take its
    /// messages before the next batch is written), so a failure can come after some
    /// messages were committed. The error says which: [`Error::Partial`] means exactly
    /// the first `completed` messages were committed, in order (and, in durable mode,
    /// synced if the sync could be done: when the sync is what failed, `completed` may
    /// be all of them); any other error means none was.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), or [`Error::Partial`] (whose `source` is one of those)
    /// after the first batch was committed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// assert_eq!(q.send_all((0..100).map(|i| format!("task {i}")))?, 100);
    /// assert_eq!(q.count()?, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_all<I>(&self, messages: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        match &self.engine {
            Engine::Local(e) => e.send_all(messages),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.send_all(messages),
        }
    }

    /// Receives the next message, waiting at most [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)
    /// (5 s); `Ok(None)` if none came.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] (with the segment path and offset) if the next record is damaged:
    /// it is skipped, and the next call returns the records after it;
    /// [`Error::Destroyed`] if the queue was destroyed; [`Error::Io`] if a segment cannot
    /// be opened.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("hello")?;
    /// assert_eq!(q.recv()?.unwrap(), "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "a received message is removed from the queue: ignoring it loses it"]
    pub fn recv(&self) -> Result<Option<Message>> {
        self.recv_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Receives the next message, waiting at most `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// assert!(q.recv_timeout(Duration::from_millis(10))?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "a received message is removed from the queue: ignoring it loses it"]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        match &self.engine {
            Engine::Local(e) => e.recv_timeout(timeout),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.recv_timeout(timeout),
        }
    }

    /// Receives the next message, waiting until `deadline`; `Ok(None)` if none came.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::{Duration, Instant};
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("x")?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(q.recv_deadline(deadline)?.unwrap(), "x");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a received message is removed from the queue: ignoring it loses it"]
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Option<Message>> {
        match &self.engine {
            Engine::Local(e) => e.recv_deadline(deadline),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.recv_deadline(deadline),
        }
    }

    /// Receives the next message, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("x")?;
    /// assert_eq!(q.recv_forever()?, "x");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a received message is removed from the queue: ignoring it loses it"]
    pub fn recv_forever(&self) -> Result<Message> {
        match &self.engine {
            Engine::Local(e) => e.recv_forever(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.recv_forever(),
        }
    }

    /// Receives the next message if one is there now, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// assert!(q.try_recv()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    #[must_use = "a received message is removed from the queue: ignoring it loses it"]
    pub fn try_recv(&self) -> Result<Option<Message>> {
        match &self.engine {
            Engine::Local(e) => e.try_recv(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.try_recv(),
        }
    }

    /// Receives up to `max` messages under one lock hold, waiting at most `timeout` for
    /// the first; an empty vector if none came.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); a damaged record is reported by the call that meets it
    /// first, after the messages before it were returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send_all(["a", "b", "c"])?;
    /// let got = q.recv_many(10, Duration::from_secs(1))?;
    /// assert_eq!(got.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a received message is removed from the queue: ignoring it loses it"]
    pub fn recv_many(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        match &self.engine {
            Engine::Local(e) => e.recv_many(max, timeout),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.recv_many(max, timeout),
        }
    }

    /// How many messages are waiting, claimed ones not yet acknowledged included
    /// ([`stats`](Self::stats) shows them apart). O(1) without claims; exact when no process is sending or receiving
    /// (after a process was killed in a critical section too: the lock it held is taken
    /// over and repaired first).
    ///
    /// # Errors
    ///
    /// [`Error::Destroyed`] if the queue was destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("a")?;
    /// assert_eq!(q.count()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count(&self) -> Result<u64> {
        match &self.engine {
            Engine::Local(e) => e.count(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.count(),
        }
    }

    /// Whether no message is waiting (none claimed and unacknowledged either). O(1)
    /// without claims.
    ///
    /// # Errors
    ///
    /// [`Error::Destroyed`] if the queue was destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// assert!(q.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.is_empty(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.is_empty(),
        }
    }

    /// Discards every waiting message, atomically with respect to concurrent senders and
    /// receivers: a message is either discarded or received, never half of either.
    ///
    /// # Errors
    ///
    /// [`Error::Destroyed`] if the queue was destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("a")?;
    /// q.clear()?;
    /// assert!(q.is_empty()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.clear(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.clear(),
        }
    }

    /// Removes the queue: its files and its directory. Every handle (in any process) then
    /// fails with [`Error::Destroyed`]; receivers asleep in `recv` wake up with it. An
    /// [`open`](Self::open) of the same path meanwhile either gets this queue (and then
    /// `Destroyed`) or waits for the removal to finish and creates a new queue.
    ///
    /// # Errors
    ///
    /// [`Error::Destroyed`] if it was destroyed already; [`Error::Io`] if a file cannot
    /// be removed (e.g. the directory holds files that are not the queue's).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("q");
    /// let q = fileipc::MessageQueue::open(&path)?;
    /// q.destroy()?;
    /// assert!(!path.exists());
    /// assert!(matches!(q.send("x"), Err(fileipc::Error::Destroyed { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn destroy(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.destroy(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.destroy(),
        }
    }

    /// Claims the next message for at-least-once processing, waiting at most
    /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT) (5 s); `Ok(None)` if none came.
    ///
    /// The message stays in the queue, invisible to other claimers and receivers, until
    /// the [`Claimed`] is acknowledged ([`Claimed::ack`]); it is delivered again (to any
    /// claimer, [`Claimed::attempt`] counting up) if it is given back ([`Claimed::nack`]
    /// or dropping it), if this process dies (seen at once: the kernel releases the
    /// process's lock on its owner id; on the Redis engine, when its lease runs out), or
    /// if its lease ([`QueueOptions::lease`], 30 s by default) runs out first. Messages due for redelivery come before newer ones. With
    /// [`QueueOptions::max_deliveries`], a message that had that many deliveries moves to
    /// the [dead-letter queue](Self::dead_letters) instead.
    ///
    /// Plain receives ([`recv`](Self::recv)) work on the same queue and take messages
    /// from the log only, never a message given back for redelivery. At most 1024
    /// messages can be claimed (or await redelivery) at once on the local engine; beyond
    /// that `claim` waits (the Redis engine has no such limit).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("job")?;
    /// let first = q.claim()?.expect("a job");
    /// drop(first); // not acknowledged: given back at once
    /// let again = q.claim()?.expect("the same job");
    /// assert_eq!((again.bytes(), again.attempt()), (&b"job"[..], 2));
    /// again.ack()?;
    /// assert!(q.try_claim()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(&self) -> Result<Option<Claimed<'_>>> {
        self.claim_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Claims the next message, waiting at most `timeout`; `Ok(None)` if none came. See
    /// [`claim`](Self::claim).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// assert!(q.claim_timeout(Duration::from_millis(10))?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim_timeout(&self, timeout: Duration) -> Result<Option<Claimed<'_>>> {
        match &self.engine {
            Engine::Local(e) => Ok(e
                .claim_until(crate::deadline_after(timeout))?
                .map(Into::into)),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Ok(e
                .claim_until(crate::deadline_after(timeout))?
                .map(Into::into)),
        }
    }

    /// Claims the next message, waiting until `deadline`; `Ok(None)` if none came. See
    /// [`claim`](Self::claim).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::{Duration, Instant};
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("x")?;
    /// let job = q.claim_deadline(Instant::now() + Duration::from_secs(1))?.unwrap();
    /// job.ack()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim_deadline(&self, deadline: Instant) -> Result<Option<Claimed<'_>>> {
        match &self.engine {
            Engine::Local(e) => Ok(e.claim_until(Some(deadline))?.map(Into::into)),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Ok(e.claim_until(Some(deadline))?.map(Into::into)),
        }
    }

    /// Claims the next message if one can be had now, without waiting. See
    /// [`claim`](Self::claim).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// assert!(q.try_claim()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_claim(&self) -> Result<Option<Claimed<'_>>> {
        match &self.engine {
            Engine::Local(e) => Ok(e.claim_until(Some(Instant::now()))?.map(Into::into)),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Ok(e.claim_until(Some(Instant::now()))?.map(Into::into)),
        }
    }

    /// Claims the next message, waiting as long as it takes. See [`claim`](Self::claim).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("x")?;
    /// q.claim_forever()?.ack()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim_forever(&self) -> Result<Claimed<'_>> {
        match &self.engine {
            Engine::Local(e) => loop {
                if let Some(c) = e.claim_until(None)? {
                    return Ok(c.into());
                }
            },
            #[cfg(feature = "redis")]
            Engine::Redis(e) => loop {
                if let Some(c) = e.claim_until(None)? {
                    return Ok(c.into());
                }
            },
        }
    }

    /// The dead-letter queue: messages claimed [`max_deliveries`](QueueOptions::max_deliveries)
    /// times without being acknowledged, each with its delivery count
    /// ([`Message::dead_letter_attempts`]). It is an ordinary queue in the sub-directory
    /// `dead-letters` of this queue's directory (on Redis, the queue named `NAME:dead`),
    /// opened (created if missing) with this handle's options but without a delivery
    /// limit; [`destroy`](Self::destroy) removes it with the queue.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// let q = fileipc::MessageQueue::options().max_deliveries(1).open(dir.path())?;
    /// q.send("poison")?;
    /// q.claim()?.unwrap().nack(Duration::ZERO)?; // its only delivery failed
    /// assert!(q.try_claim()?.is_none());
    /// let dead = q.dead_letters()?.try_recv()?.unwrap();
    /// assert_eq!((&*dead, dead.dead_letter_attempts()), (&b"poison"[..], 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dead_letters(&self) -> Result<MessageQueue> {
        match &self.engine {
            Engine::Local(e) => Ok(MessageQueue {
                engine: Engine::Local(LocalQueue::open(
                    &e.dir.join(claim::DEAD_LETTERS),
                    &e.claims_options(),
                )?),
            }),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Ok(MessageQueue {
                engine: Engine::Redis(e.dead_letters()?),
            }),
        }
    }

    /// A snapshot of the queue's state (backlog, positions, disk use, sleepers).
    ///
    /// # Errors
    ///
    /// [`Error::Destroyed`] if the queue was destroyed; [`Error::Io`] if the directory
    /// cannot be listed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let q = fileipc::MessageQueue::open(dir.path())?;
    /// q.send("abc")?;
    /// let s = q.stats()?;
    /// assert_eq!((s.count, s.segments), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Result<QueueStats> {
        match &self.engine {
            Engine::Local(e) => e.stats(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.stats(),
        }
    }
}
