//! What a queue hands out: a received [`Message`], and the [`QueueStats`] snapshot.

use std::fmt;
use std::ops::Deref;

/// A received message: the bytes one `send` passed, exactly.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let q = fileipc::MessageQueue::open(dir.path())?;
/// q.send("Task 1")?;
/// let m = q.try_recv()?.expect("a message");
/// assert_eq!(m.to_str()?, "Task 1");
/// assert_eq!(&*m, b"Task 1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a received message is removed from the queue: ignoring it loses it"]
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Message {
    pub(super) data: Vec<u8>,
    pub(super) deliveries: u32,
}

impl Message {
    /// In a [dead-letter queue](super::MessageQueue::dead_letters): how many deliveries
    /// the message had before it was moved there. 0 for a message sent by `send`.
    pub fn dead_letter_attempts(&self) -> u32 {
        self.deliveries
    }

    /// The payload, as owned bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The payload as text.
    ///
    /// # Errors
    ///
    /// If the payload is not valid UTF-8.
    pub fn to_str(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.data)
    }

    /// The payload as an owned `String`.
    ///
    /// # Errors
    ///
    /// If the payload is not valid UTF-8 (the error gives the bytes back).
    pub fn into_string(self) -> std::result::Result<String, std::string::FromUtf8Error> {
        String::from_utf8(self.data)
    }
}

impl Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl From<Message> for Vec<u8> {
    fn from(m: Message) -> Vec<u8> {
        m.data
    }
}

impl PartialEq<[u8]> for Message {
    fn eq(&self, other: &[u8]) -> bool {
        self.data == other
    }
}

impl PartialEq<str> for Message {
    fn eq(&self, other: &str) -> bool {
        self.data == other.as_bytes()
    }
}

impl PartialEq<&str> for Message {
    fn eq(&self, other: &&str) -> bool {
        self.data == other.as_bytes()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.data) {
            Ok(s) => write!(f, "Message({s:?})"),
            Err(_) => write!(f, "Message({} bytes)", self.data.len()),
        }
    }
}

/// A snapshot of a queue's state, for monitoring (`fileipc stat`). Fields read without
/// locks while other processes work may be mutually inconsistent by a few messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages waiting (as [`MessageQueue::count`](super::MessageQueue::count)):
    /// `ready + in_flight`.
    pub count: u64,
    /// Messages a receiver or claimer could take: in the log, or given back (or whose
    /// claimer died or let its lease run out) and awaiting redelivery.
    pub ready: u64,
    /// Messages claimed and not yet acknowledged or given back.
    pub in_flight: u64,
    /// Log position of the next record to receive.
    pub head: u64,
    /// Log position after the last committed record.
    pub tail: u64,
    /// Messages ever sent.
    pub sent: u64,
    /// Messages ever received (or cleared).
    pub received: u64,
    /// Segment file size in bytes.
    pub segment_size: u64,
    /// Segment files holding the log (from the head's segment to the tail's).
    pub segments: u64,
    /// Segment files beyond the tail, holding no record: consumed segments kept for
    /// reuse (at most 2, see `docs/FORMAT.md`), or one a producer is about to write.
    pub spare_segments: u64,
    /// Bytes the directory's files occupy on disk (allocated blocks).
    pub bytes_on_disk: u64,
    /// Receivers sleeping for a message now.
    pub waiting_consumers: u32,
}
