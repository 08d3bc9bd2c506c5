//! [`QueueOptions`], the builder that opens a [`MessageQueue`], and the public limits
//! and defaults of the queue format.

use std::path::Path;

use super::open::LocalQueue;
use super::{Engine, MessageQueue};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::state::DEFAULT_MODE;

/// Default largest message: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Default segment size: 8 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 8 << 20;
/// The largest `max_message_size` the format allows (record lengths are 32-bit).
pub const MESSAGE_SIZE_LIMIT: usize = u32::MAX as usize - 64;

/// Options for opening a [`MessageQueue`]; `QueueOptions::default()` gives the values of
/// [`MessageQueue::open`].
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use fileipc::QueueOptions;
/// let q = QueueOptions::new()
///     .max_message_size(1 << 20)
///     .durable(true)
///     .open(dir.path().join("jobs"))?;
/// q.send("fsynced before send returns")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub(super) max_message_size: usize,
    pub(super) segment_size: u64,
    pub(super) durable: bool,
    pub(super) mode: u32,
    pub(super) lease: std::time::Duration,
    pub(super) max_deliveries: u32,
    pub(super) capacity: Option<u64>,
}

impl Default for QueueOptions {
    fn default() -> QueueOptions {
        QueueOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            segment_size: DEFAULT_SEGMENT_SIZE,
            durable: false,
            mode: DEFAULT_MODE,
            lease: super::claim::DEFAULT_LEASE,
            max_deliveries: 0,
            capacity: None,
        }
    }
}

impl QueueOptions {
    /// The default options.
    pub fn new() -> QueueOptions {
        QueueOptions::default()
    }

    /// The largest payload this handle sends (default 64 MiB, at most
    /// [`MESSAGE_SIZE_LIMIT`]); a larger one is refused before anything is written.
    pub fn max_message_size(mut self, bytes: usize) -> QueueOptions {
        self.max_message_size = bytes;
        self
    }

    /// The size of segment files for a queue this call creates (default 8 MiB; a multiple
    /// of 4096 between 64 KiB and 1 GiB). An existing queue keeps the size it was created
    /// with.
    pub fn segment_size(mut self, bytes: u64) -> QueueOptions {
        self.segment_size = bytes;
        self
    }

    /// Whether `send` returns only once the message is on stable storage, surviving a
    /// power loss (default `false`: a message survives every process exiting or being
    /// killed, but the page cache may still hold it). Concurrent senders share syncs.
    pub fn durable(mut self, durable: bool) -> QueueOptions {
        self.durable = durable;
        self
    }

    /// Permission bits of the files this handle creates, exactly (not filtered by the
    /// umask): the control file, and segment files as it sends (default `0o600`; e.g.
    /// `0o660` to share the queue with a group). The directory, if this call creates it,
    /// gets the matching execute bits (`0o770` for `0o660`). The queue's group is its
    /// control file's (its creator's, or the directory's if that is set-group-ID); with
    /// a mode that grants the group anything, a segment file another member creates gets
    /// that group too. Every handle on a shared queue should ask for the same mode.
    pub fn mode(mut self, mode: u32) -> QueueOptions {
        self.mode = mode & 0o777;
        self
    }

    /// How long a message this handle [claims](MessageQueue::claim) stays invisible to
    /// other claimers unless acknowledged, given back or
    /// [extended](super::Claimed::extend) (default 30 s). A claimer that dies loses its
    /// claims at once, whatever the lease (on the Redis engine: when the lease runs out;
    /// a URL's `?lease=` is for holders of locks, not for claims); one that lives on
    /// (stopped, stuck) loses them when the lease runs out, and its late `ack` then fails.
    pub fn lease(mut self, lease: std::time::Duration) -> QueueOptions {
        self.lease = lease;
        self
    }

    /// After how many deliveries a claimed message that is not acknowledged (given back,
    /// or its claimer died or let its lease run out) moves to the dead-letter queue
    /// ([`MessageQueue::dead_letters`]) instead of being delivered again (default 0: no
    /// limit). Applies to the claims of this handle and to the redeliveries it makes.
    pub fn max_deliveries(mut self, n: u32) -> QueueOptions {
        self.max_deliveries = n;
        self
    }

    /// The most messages this handle lets the queue hold (waiting, claimed or awaiting
    /// redelivery): its `send` waits for room beyond that, and
    /// [`try_send`](MessageQueue::try_send) and [`send_timeout`](MessageQueue::send_timeout)
    /// report the queue full (default: no limit). Checked under the producer lock, so
    /// producers that all ask for it never together pass it. Give every producer
    /// handle the same capacity.
    pub fn capacity(mut self, messages: u64) -> QueueOptions {
        self.capacity = Some(messages);
        self
    }

    /// Opens the queue in directory `dir` with these options, creating the directory and
    /// the queue if missing (the parent directory must exist).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for out-of-range options; [`Error::Format`] if `dir` exists and
    /// is not empty but holds no queue, or holds a queue of another format version;
    /// [`Error::Io`] if the file system refuses.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<MessageQueue> {
        let engine = match crate::location::Location::parse(dir.as_ref())? {
            crate::location::Location::Path(p) => Engine::Local(LocalQueue::open(&p, self)?),
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(super::redis::RedisQueue::open(u, self)?));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?}")
            })?,
        };
        Ok(MessageQueue { engine })
    }

    /// Opens the existing queue in directory `dir` with these options; never creates
    /// anything.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` naming `dir` if there is no queue there;
    /// otherwise as [`open`](QueueOptions::open).
    pub fn open_existing(&self, dir: impl AsRef<Path>) -> Result<MessageQueue> {
        if let crate::location::Location::Redis(_) = crate::location::Location::parse(dir.as_ref())?
        {
            return crate::state::without_creating(|| self.open(dir));
        }
        Ok(MessageQueue {
            engine: Engine::Local(LocalQueue::open_existing(dir.as_ref(), self)?),
        })
    }
}
