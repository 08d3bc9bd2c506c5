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

mod control;
pub(crate) mod record;
mod segment;

use std::fmt;
use std::fs;
use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, IoResultExt, Result};
use crate::robust::{Acquired, RobustLock, Watch};
use crate::state::{self, DEFAULT_MODE};
use crate::sys;
use control::Control;
use record::{HEADER, Header, record_size};
use segment::{Missing, SegmentCache};

const CONTROL: &str = "control";
/// The largest log position a sound queue can reach (see the check in `open_with`).
const MAX_POSITION: u64 = 1 << 62;
const DIR_EXPECTED: &str = "fileipc queue directory";

/// Default largest message: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Default segment size: 8 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 8 << 20;
/// The largest `max_message_size` the format allows (record lengths are 32-bit).
pub const MESSAGE_SIZE_LIMIT: usize = u32::MAX as usize - 64;

/// How long a sleeping receiver waits before re-checking the queue on its own. A send
/// rings the doorbell, so this only bounds the delay after a sender was killed between
/// publishing a message and ringing.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// How long an idle receiver keeps checking before it sleeps: a cross-CPU futex wake-up
/// costs ~45 us on the reference machine, a send on another CPU shows up in well under
/// 1 us. (Checking that long rides out a sender's page fault or short preemption, which a
/// futex sleep and wake would turn into two context switches.)
const SPIN: Duration = Duration::from_micros(100);
/// The most an idle receiver spins without yielding the CPU, before the yielding phase.
/// The actual budget is learned per thread (see [`SpinBudget`]).
const SPIN_BEFORE_YIELD_MAX: u32 = 5_000;
/// Above the uncontended cost of a `sched_yield` (0.6 us here) and below what handing
/// the CPU to another process and getting it back costs (two context switches plus the
/// other's work, 2 us and more): a yield that took longer gave the CPU away.
const YIELD_HANDED_OFF: Duration = Duration::from_micros(2);
/// How long a durable syncer waits at most for the senders of the last group to append
/// again (see `MessageQueue::linger_for_group`).
const SYNC_LINGER: Duration = Duration::from_micros(200);

/// Records a send commits per lock hold in [`MessageQueue::send_all`].
const BATCH: usize = 256;

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
    max_message_size: usize,
    segment_size: u64,
    durable: bool,
    mode: u32,
}

impl Default for QueueOptions {
    fn default() -> QueueOptions {
        QueueOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            segment_size: DEFAULT_SEGMENT_SIZE,
            durable: false,
            mode: DEFAULT_MODE,
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

    /// Permission bits of the files this call creates (default `0o600`; e.g. `0o660` to
    /// share the queue with a group). The directory, if created, gets the matching
    /// execute bits.
    pub fn mode(mut self, mode: u32) -> QueueOptions {
        self.mode = mode & 0o777;
        self
    }

    /// Opens the queue in directory `dir` with these options, creating the directory and
    /// the queue if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for out-of-range options; [`Error::Format`] if `dir` exists and
    /// is not empty but holds no queue, or holds a queue of another format version;
    /// [`Error::Io`] if the file system refuses.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<MessageQueue> {
        MessageQueue::open_with(dir.as_ref(), self)
    }
}

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
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Message {
    data: Vec<u8>,
}

impl Message {
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
    /// Messages waiting (as [`MessageQueue::count`]).
    pub count: u64,
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
    /// Segment files in the directory.
    pub segments: u64,
    /// Bytes the directory's files occupy on disk (allocated blocks).
    pub bytes_on_disk: u64,
    /// Receivers sleeping for a message now.
    pub waiting_consumers: u32,
}

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
/// assert_eq!(q.recv()?.unwrap(), "Task 1");
/// assert_eq!(&*q.recv()?.unwrap(), b"\x00binary\xff");
/// assert!(q.try_recv()?.is_none());
/// q.destroy()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MessageQueue {
    dir: PathBuf,
    ctl: Control,
    seg_size: u64,
    max_message_size: usize,
    durable: bool,
    producer: Mutex<SegmentCache>,
    consumer: Mutex<SegmentCache>,
    syncer: Mutex<SegmentCache>,
    /// The highest tail this handle has read. Every record below it is committed, so a
    /// consumer reads the shared tail (a cache line every producer writes) only when the
    /// head reaches this mark, not once per message.
    seen_tail: AtomicU64,
}

impl fmt::Debug for MessageQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageQueue")
            .field("dir", &self.dir)
            .field("segment_size", &self.seg_size)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// Holds a robust lock of the control file; unlocks on drop.
struct Held<'a>(RobustLock<'a>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

fn lock_cache(m: &Mutex<SegmentCache>) -> MutexGuard<'_, SegmentCache> {
    // A panic while holding it cannot leave the cache inconsistent (it is only a set of
    // mappings), so a poisoned mutex is simply used.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        MessageQueue::open_with(dir.as_ref(), &QueueOptions::default())
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

    fn open_with(dir: &Path, opts: &QueueOptions) -> Result<MessageQueue> {
        if opts.max_message_size > MESSAGE_SIZE_LIMIT {
            return Err(Error::invalid(
                dir,
                format!(
                    "max_message_size {} is over the limit of {MESSAGE_SIZE_LIMIT} bytes",
                    opts.max_message_size
                ),
            ));
        }
        let s = opts.segment_size;
        if !s.is_multiple_of(4096) || !(64 << 10..=1 << 30).contains(&s) {
            return Err(Error::invalid(
                dir,
                format!("segment_size {s} is not a multiple of 4096 between 64 KiB and 1 GiB"),
            ));
        }
        let dir_mode = opts.mode | ((opts.mode & 0o444) >> 2);
        // A symbolic link at the queue's path is never followed, and a directory another
        // user could fill or swap files in is not trusted.
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Symlink {
                path: dir.to_owned(),
            });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(dir)
            .at("create directory", dir)?;
        let meta = fs::symlink_metadata(dir).at("stat", dir)?;
        if !meta.is_dir() {
            return Err(Error::format(dir, DIR_EXPECTED, "not a directory"));
        }
        state::check_trust(dir, &meta, dir_mode, DIR_EXPECTED)?;
        let ctl_path = dir.join(CONTROL);
        for _ in 0..3 {
            let exists = match fs::symlink_metadata(&ctl_path) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io("stat", &ctl_path, e)),
            };
            if !exists {
                // Only an empty directory becomes a queue (a racing creator's temporary
                // control file does not count, nor its control file if it appeared since
                // we looked: open_or_create then opens it).
                let stray = fs::read_dir(dir)
                    .at("read directory", dir)?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n != CONTROL && !(n.starts_with(".control.") && n.ends_with(".tmp")));
                if let Some(name) = stray {
                    return Err(Error::format(
                        dir,
                        DIR_EXPECTED,
                        format!("it has no control file and is not empty (it holds {name:?})"),
                    ));
                }
            }
            let sf = state::open_or_create(&ctl_path, control::LAYOUT, opts.mode, |r| {
                control::init(r, s)
            })?;
            let ctl = Control { map: sf.map };
            if ctl.u32(control::DESTROYED).load(Ordering::SeqCst) != 0 {
                // A destroy was interrupted (or is in progress): finish removing the old
                // queue's files, then create a new queue.
                let same = sys::is_same_file(&sf.file, &ctl_path).unwrap_or(false);
                if same {
                    remove_queue_files(dir)?;
                }
                continue;
            }
            let seg_size = ctl.u64(control::SEGMENT_SIZE).load(Ordering::Relaxed);
            if !seg_size.is_multiple_of(4096) || !(64 << 10..=1 << 30).contains(&seg_size) {
                return Err(Error::format(
                    &ctl_path,
                    control::LAYOUT.kind.name(),
                    format!("impossible segment size {seg_size}"),
                ));
            }
            // The head never passes the tail (read in this order: the tail only grows).
            let head = ctl.u64(control::HEAD).load(Ordering::SeqCst);
            let tail = ctl.u64(control::TAIL).load(Ordering::SeqCst);
            if head > tail {
                return Err(Error::Corrupt {
                    path: ctl_path,
                    offset: control::HEAD as u64,
                    detail: format!("head {head} is beyond tail {tail}"),
                });
            }
            // A log position grows by the bytes sent: 2^62 bytes would take a century
            // at 1 GiB/s. A tail beyond that is damage, and the position arithmetic
            // (which adds record and segment sizes to it) must never overflow.
            if tail > MAX_POSITION {
                return Err(Error::Corrupt {
                    path: ctl_path,
                    offset: control::TAIL as u64,
                    detail: format!("tail {tail} is beyond any possible log position"),
                });
            }
            let q = MessageQueue {
                dir: dir.to_owned(),
                ctl,
                seg_size,
                max_message_size: opts.max_message_size,
                durable: opts.durable,
                producer: Mutex::new(SegmentCache::new(
                    dir,
                    seg_size,
                    Missing::Create {
                        mode: opts.mode,
                        durable: opts.durable,
                    },
                )),
                consumer: Mutex::new(SegmentCache::new(dir, seg_size, Missing::Fail)),
                syncer: Mutex::new(SegmentCache::new(dir, seg_size, Missing::Skip)),
                seen_tail: AtomicU64::new(tail),
            };
            q.repair_abandoned();
            q.remove_consumed_segments();
            return Ok(q);
        }
        Err(Error::io(
            "open",
            &ctl_path,
            std::io::Error::other("the queue keeps being destroyed while being opened"),
        ))
    }

    /// The queue's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn a64(&self, off: usize) -> &AtomicU64 {
        self.ctl.u64(off)
    }

    fn a32(&self, off: usize) -> &AtomicU32 {
        self.ctl.u32(off)
    }

    fn destroyed(&self) -> bool {
        self.a32(control::DESTROYED).load(Ordering::SeqCst) != 0
    }

    fn check_destroyed(&self) -> Result<()> {
        if self.destroyed() {
            return Err(Error::Destroyed {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    // --- locks and repair ---------------------------------------------------------------

    /// Takes the producer lock, repairing after a dead holder. `Ok(None)` at `deadline`.
    fn lock_producer(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>> {
        self.lock_side(self.ctl.producer_lock(), deadline, Self::repair_producer)
    }

    /// Takes the consumer lock, repairing after a dead holder. `Ok(None)` at `deadline`.
    fn lock_consumer(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>> {
        // The consumer lock guards no half-done state: the head moves only by
        // compare-and-swap and `received` only by `fetch_max`, so a dead holder leaves
        // nothing to repair.
        self.lock_side(self.ctl.consumer_lock(), deadline, |_| {})
    }

    fn lock_side<'a>(
        &'a self,
        l: RobustLock<'a>,
        deadline: Option<Instant>,
        repair: fn(&Self),
    ) -> Result<Option<Held<'a>>> {
        match l.lock(deadline) {
            None => return Ok(None),
            Some(Acquired::TakenOver) => repair(self),
            Some(Acquired::Normal) => {}
        }
        let held = Held(l);
        self.check_destroyed()?;
        Ok(Some(held))
    }

    /// After a producer died holding the lock: its record is committed iff the tail is
    /// the journalled tail; then `sent` must be the journalled count.
    fn repair_producer(&self) {
        let jt = self.a64(control::P_JOURNAL_TAIL).load(Ordering::Relaxed);
        if self.a64(control::TAIL).load(Ordering::Relaxed) == jt {
            let js = self.a64(control::P_JOURNAL_SENT).load(Ordering::Relaxed);
            self.a64(control::SENT).store(js, Ordering::Relaxed);
        }
    }

    /// Takes over and repairs any lock whose holder died, without waiting a slice.
    fn repair_abandoned(&self) {
        let p = self.ctl.producer_lock();
        if p.is_held() && p.take_if_abandoned().is_some() {
            self.repair_producer();
            p.unlock();
        }
        let c = self.ctl.consumer_lock();
        if c.is_held() && c.take_if_abandoned().is_some() {
            c.unlock();
        }
        let s = self.ctl.sync_lock();
        if s.is_held() && s.take_if_abandoned().is_some() {
            s.unlock();
        }
    }

    /// Commits the producer side: journal, then the tail (the commit point), then `sent`.
    fn commit_tail(&self, tail: u64, sent: u64) {
        self.a64(control::P_JOURNAL_TAIL)
            .store(tail, Ordering::Relaxed);
        self.a64(control::P_JOURNAL_SENT)
            .store(sent, Ordering::Relaxed);
        // SeqCst: ordered before the producer's check of the waiter mask (see `ring`).
        self.a64(control::TAIL).store(tail, Ordering::SeqCst);
        self.a64(control::SENT).store(sent, Ordering::Relaxed);
    }

    /// Removes the segment files wholly below the head. Idempotent; any handle may do it.
    fn remove_consumed_segments(&self) {
        let below = self.a64(control::HEAD).load(Ordering::Acquire) / self.seg_size;
        let removed = self.a64(control::REMOVED_BELOW);
        let from = removed.load(Ordering::Acquire);
        if from >= below {
            return;
        }
        let remove = |k: u64| match fs::remove_file(segment::path(&self.dir, k)) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if below - from <= 64 {
            for k in from..below {
                // A failure (other than "already gone") leaves a file behind; the next
                // call retries from `from` only if nobody advanced the mark, so report
                // nothing.
                if !remove(k) {
                    return;
                }
            }
        } else {
            // A long way behind (the mark or the head is damaged, or many segments went
            // by at once): remove the segment files that exist rather than try every
            // index, which could take hours.
            let Ok(entries) = fs::read_dir(&self.dir) else {
                return;
            };
            for e in entries.filter_map(|e| e.ok()) {
                let k = segment::parse_name(&e.file_name().to_string_lossy());
                if k.is_some_and(|k| k >= from && k < below) && !remove(k.unwrap_or(0)) {
                    return;
                }
            }
        }
        removed.fetch_max(below, Ordering::AcqRel);
    }

    // --- sending ------------------------------------------------------------------------

    fn check_size(&self, len: usize) -> Result<()> {
        if len > self.max_message_size {
            return Err(Error::invalid(
                &self.dir,
                format!(
                    "message of {len} bytes is over the maximum of {} bytes",
                    self.max_message_size
                ),
            ));
        }
        Ok(())
    }

    /// Appends a message (any bytes, empty included) to the queue. In durable mode it is
    /// on stable storage when this returns.
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
    pub fn send(&self, message: impl AsRef<[u8]>) -> Result<()> {
        let data = message.as_ref();
        self.check_size(data.len())?;
        self.check_destroyed()?;
        let crc = crc32fast::hash(data);
        let end = {
            let mut cache = lock_cache(&self.producer);
            // Take the page faults of the write before the lock, not while holding it.
            let tail = self.a64(control::TAIL).load(Ordering::Relaxed);
            cache.prefault(tail, tail + record_size(data.len()));
            let Some(held) = self.lock_producer(None)? else {
                unreachable_timeout()?
            };
            let tail = self.a64(control::TAIL).load(Ordering::Relaxed);
            let seq = self.a64(control::SENT).load(Ordering::Relaxed);
            let h = Header {
                len: data.len() as u32,
                payload_crc: crc,
                seq,
            };
            cache.write(tail, &h.encode(tail))?;
            cache.write(tail + HEADER as u64, data)?;
            let end = tail + record_size(data.len());
            self.commit_tail(end, seq + 1);
            drop(held);
            cache.retain_from(end / self.seg_size);
            end
        };
        self.ring();
        if self.durable {
            self.sync_to(end)?;
        }
        Ok(())
    }

    /// Sends every message of `messages` in order, holding the producer lock once per
    /// batch of records and waking receivers once per batch. Returns how many were sent.
    /// All sizes are checked first: if one is over the maximum, nothing is sent.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
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
        let items: Vec<I::Item> = messages.into_iter().collect();
        for m in &items {
            self.check_size(m.as_ref().len())?;
        }
        self.check_destroyed()?;
        let crcs: Vec<u32> = items.iter().map(|m| crc32fast::hash(m.as_ref())).collect();
        let mut end = 0;
        for (chunk, crcs) in items.chunks(BATCH).zip(crcs.chunks(BATCH)) {
            {
                let mut cache = lock_cache(&self.producer);
                let Some(held) = self.lock_producer(None)? else {
                    unreachable_timeout()?
                };
                let mut tail = self.a64(control::TAIL).load(Ordering::Relaxed);
                let mut seq = self.a64(control::SENT).load(Ordering::Relaxed);
                for (m, &crc) in chunk.iter().zip(crcs) {
                    let data = m.as_ref();
                    let h = Header {
                        len: data.len() as u32,
                        payload_crc: crc,
                        seq,
                    };
                    cache.write(tail, &h.encode(tail))?;
                    cache.write(tail + HEADER as u64, data)?;
                    tail += record_size(data.len());
                    seq += 1;
                }
                self.commit_tail(tail, seq);
                drop(held);
                cache.retain_from(tail / self.seg_size);
                end = tail;
            }
            self.ring();
        }
        if self.durable && !items.is_empty() {
            self.sync_to(end)?;
        }
        Ok(items.len())
    }

    /// Group commit: makes the log durable up to at least `end`. Whoever takes the sync
    /// lock syncs everything committed so far, for all senders; the others sleep on the
    /// sync generation until a sync that covers them completes, so a sender that is
    /// already covered returns at once instead of queueing for the lock (which would
    /// let one sender barge in and sync alone, shrinking every group).
    ///
    /// No lost wake-up: a waiter reads the generation `g`, fails to take the lock, sees
    /// `synced < end` and sleeps only while the generation is still `g`; a syncer stores
    /// `synced`, then bumps the generation, then wakes every sleeper. A syncer that died
    /// cannot wake anyone: sleepers wake every [`crate::robust::SLICE`] and take a dead
    /// holder's lock over.
    fn sync_to(&self, end: u64) -> Result<()> {
        let synced = self.a64(control::SYNCED);
        let generation = self.ctl.u32(control::SYNC_GEN);
        let l = self.ctl.sync_lock();
        // Whether a whole slice passed without a sync completing: only then is the
        // holder possibly dead, worth the liveness check of `try_lock` (a `/proc` read).
        let mut stale = false;
        // How long the holder has stayed unverifiable (see `RobustLock::try_lock_watching`).
        let mut watch = Watch::default();
        loop {
            if synced.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            let g = generation.load(Ordering::SeqCst);
            let acquired = if stale {
                l.try_lock_watching(&mut watch).is_some()
            } else {
                watch = Watch::default();
                l.try_lock_free()
            };
            if acquired {
                // The sync lock protects one monotone store: a dead holder leaves nothing
                // to repair.
                let _held = Held(l);
                self.check_destroyed()?;
                let done = synced.load(Ordering::Acquire);
                if done >= end {
                    return Ok(());
                }
                self.linger_for_group();
                let sent = self.a64(control::SENT).load(Ordering::Acquire);
                let target = self.a64(control::TAIL).load(Ordering::Acquire);
                // Consumed bytes need no sync (their segments may be gone already).
                let head = self.a64(control::HEAD).load(Ordering::Acquire);
                let from = done.max(head.min(target));
                lock_cache(&self.syncer).flush(from, target)?;
                // The control file holds the tail that makes those records visible.
                self.ctl
                    .map
                    .flush_range(0, control::LEN)
                    .at("msync", &self.dir.join(CONTROL))?;
                synced.fetch_max(target, Ordering::SeqCst);
                let last = self.a64(control::SYNC_SENT).swap(sent, Ordering::Relaxed);
                let group = sent.saturating_sub(last).min(u64::from(u32::MAX)) as u32;
                self.a32(control::SYNC_GROUP)
                    .store(group, Ordering::Relaxed);
                generation.fetch_add(1, Ordering::SeqCst);
                let _ = sys::futex_wake(generation, u32::MAX);
                return Ok(());
            }
            self.check_destroyed()?;
            if synced.load(Ordering::SeqCst) >= end {
                return Ok(());
            }
            let until = Instant::now() + crate::robust::SLICE;
            sys::futex_wait(generation, g, Some(until)).at("wait", &self.dir.join(CONTROL))?;
            stale = generation.load(Ordering::SeqCst) == g && Instant::now() >= until;
        }
    }

    /// Before a sync: if the last sync covered several senders, they are appending their
    /// next messages right now (woken by that sync, tens of microseconds apart on this
    /// kind of machine); the first of them back would otherwise sync alone and leave the
    /// rest to the sync after. Wait (yielding) until as many messages as the last sync
    /// covered were appended since, or [`SYNC_LINGER`] passed. A lone sender (group 1)
    /// never waits.
    fn linger_for_group(&self) {
        let group = u64::from(self.a32(control::SYNC_GROUP).load(Ordering::Relaxed));
        if group < 2 {
            return;
        }
        let want = self.a64(control::SYNC_SENT).load(Ordering::Relaxed) + group;
        let sent = self.a64(control::SENT);
        let start = Instant::now();
        while sent.load(Ordering::Acquire) < want && start.elapsed() < SYNC_LINGER {
            std::thread::yield_now();
        }
    }

    /// Wakes the sleeping receivers, if there are any, once per sleep: the first send
    /// after receivers went to sleep rings, the sends after it (while the woken receivers
    /// get a CPU) make no system call.
    ///
    /// The doorbell word holds an epoch (bits 1..32) and a *sleepers* bit (bit 0). No lost
    /// wake-up: a receiver (1) sets the sleepers bit (or sees it set) in the doorbell,
    /// (2) re-reads the tail, and sleeps only if the tail showed nothing new and the
    /// doorbell still holds the value of (1). A sender (a) stores the tail, then (b) reads
    /// the doorbell and, if the sleepers bit is set, moves it to the next epoch with the
    /// bit clear and wakes every sleeper. All are SeqCst, so in their single total order
    /// either (a) precedes (2) — the receiver sees the message and does not sleep — or
    /// (2) precedes (a), hence (1) precedes (b): the sender reads the value of (1) or a
    /// later one. If it reads (1)'s value, it advances the doorbell and wakes; if a later
    /// one, another sender advanced the doorbell after (1). Either way the receiver's
    /// `futex_wait` sees a changed word and returns at once, or is already asleep and is
    /// woken.
    fn ring(&self) {
        let bell = self.a32(control::DOORBELL);
        let v = bell.load(Ordering::SeqCst);
        if v & SLEEPERS == 0 {
            return;
        }
        // Only senders clear the bit: if the exchange fails, another sender advanced the
        // epoch and wakes everyone who slept on it.
        if bell
            .compare_exchange(v, next_epoch(v), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            // A failed wake leaves the receivers to their WAIT_SLICE timeout.
            let _ = sys::futex_wake(bell, u32::MAX);
        }
    }

    // --- receiving ----------------------------------------------------------------------

    /// Takes up to `max` messages that are there now. `Ok(n)` with `n` appended to `out`.
    /// A damaged record is reported as an error only when it is the first one met (the
    /// messages before it are returned first), and it is consumed when reported, so the
    /// next call goes on with the records after it.
    ///
    /// Consumers claim records without a lock: they read the record headers at the head
    /// and move the head past them with one compare-and-swap (records below the tail
    /// never change and positions are never reused, so a consumer that loses the race
    /// only retries). A consumer preempted or killed at any instant therefore holds up
    /// nobody. Only a damaged header, whose length cannot be trusted, is skipped under
    /// the consumer lock (see [`Self::skip_damaged`]).
    fn take(&self, max: usize, out: &mut impl Sink, wait: LockWait) -> Result<usize> {
        let head_word = self.a64(control::HEAD);
        let mut tail = self.seen_tail.load(Ordering::Acquire);
        loop {
            let head = head_word.load(Ordering::Acquire);
            if head >= tail {
                tail = self.refresh_tail();
                if head >= tail {
                    return Ok(0);
                }
            }
            let mut cache = lock_cache(&self.consumer);
            let claimed = match self.claim(&mut cache, head, tail, max) {
                Ok(c) => c,
                // A read can fail because other consumers took the record and removed
                // its segment meanwhile: then it is no longer ours to report.
                Err(_) if head_word.load(Ordering::Acquire) != head => continue,
                Err(e) => return Err(e),
            };
            let (end, result) = match claimed {
                Claim::Raced => continue,
                Claim::Damaged => {
                    drop(cache);
                    match self.skip_damaged(head, tail, wait)? {
                        Some(e) => return Err(e),
                        None if matches!(wait, LockWait::IfFree) => return Ok(0),
                        None => continue,
                    }
                }
                Claim::Deferred { end, header } => {
                    // Copied and checked after the claim: the record lies in one segment,
                    // mapped in this handle's cache since its header was read, and its
                    // bytes never change. A consumer killed here loses this message, as
                    // one killed just after `recv` returned it.
                    let mut payload = vec![0u8; header.len as usize];
                    cache.read(head + HEADER as u64, &mut payload)?;
                    if header.payload_ok(&payload) {
                        out.push(Message { data: payload });
                        (end, Ok(1))
                    } else {
                        (end, Err(payload_error(&cache, head, &header)))
                    }
                }
                Claim::Checked { end, messages } => {
                    let n = messages.len();
                    for m in messages {
                        out.push(m);
                    }
                    (end, Ok(n))
                }
                Claim::Corrupt { end, header } => (end, Err(payload_error(&cache, head, &header))),
            };
            if end / self.seg_size != head / self.seg_size {
                cache.retain_from(end / self.seg_size);
                drop(cache);
                self.remove_consumed_segments();
            }
            return result;
        }
    }

    /// Tries to claim records from `head` (a value of the head word just read) up to
    /// `max` and below `tail`.
    fn claim(&self, cache: &mut SegmentCache, head: u64, tail: u64, max: usize) -> Result<Claim> {
        let head_word = self.a64(control::HEAD);
        let claim = |end: u64, seq: u64| {
            if head_word
                .compare_exchange(head, end, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return false;
            }
            self.a64(control::RECEIVED)
                .fetch_max(seq + 1, Ordering::AcqRel);
            true
        };
        let Some((h, size)) = record_at(cache, head, tail)? else {
            return Ok(Claim::Damaged);
        };
        let end = head + size;
        if max == 1 && head / self.seg_size == (end - 1) / self.seg_size {
            return Ok(if claim(end, h.seq) {
                Claim::Deferred { end, header: h }
            } else {
                Claim::Raced
            });
        }
        // Several records, or one spanning segments: copy and check first, claim after
        // (a lost race only wastes the copies).
        let mut messages = Vec::new();
        let (mut pos, mut seq) = (head, 0);
        while messages.len() < max && pos < tail {
            let (h, size) = if pos == head {
                (h, size)
            } else {
                match record_at(cache, pos, tail)? {
                    Some(x) => x,
                    None => break, // reported by the next call
                }
            };
            let mut payload = vec![0u8; h.len as usize];
            cache.read(pos + HEADER as u64, &mut payload)?;
            if !h.payload_ok(&payload) {
                if pos == head {
                    return Ok(if claim(pos + size, h.seq) {
                        Claim::Corrupt {
                            end: pos + size,
                            header: h,
                        }
                    } else {
                        Claim::Raced
                    });
                }
                break; // reported by the next call
            }
            messages.push(Message { data: payload });
            seq = h.seq;
            pos += size;
        }
        Ok(if claim(pos, seq) {
            Claim::Checked { end: pos, messages }
        } else {
            Claim::Raced
        })
    }

    /// Skips a damaged record header at `head` under the consumer lock: scans forward for
    /// the next valid header (everything before it is lost) and moves the head there.
    /// `Some(error)` describing the damage if this call skipped it; `None` if the head
    /// moved meanwhile, or the lock was not to be had (`IfFree`, or the deadline).
    fn skip_damaged(&self, head: u64, tail: u64, wait: LockWait) -> Result<Option<Error>> {
        let _held = match wait {
            LockWait::IfFree => {
                let l = self.ctl.consumer_lock();
                if !l.try_lock_free() {
                    return Ok(None);
                }
                Held(l)
            }
            LockWait::Until(deadline) => match self.lock_consumer(deadline)? {
                Some(held) => held,
                None => return Ok(None),
            },
        };
        self.check_destroyed()?;
        let head_word = self.a64(control::HEAD);
        if head_word.load(Ordering::Acquire) != head {
            return Ok(None);
        }
        let mut cache = lock_cache(&self.consumer);
        let (path, offset) = cache.locate(head);
        let (next, seq) = resync(&mut cache, head, tail)?;
        // Nobody else moves the head past a damaged header, except `clear` (which holds
        // this lock too): the exchange fails only if the header was not damaged after all.
        if head_word
            .compare_exchange(head, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(None);
        }
        let received = self.a64(control::RECEIVED);
        let r = received.load(Ordering::Acquire);
        received.fetch_max(seq.unwrap_or(r + 1), Ordering::AcqRel);
        if next / self.seg_size != head / self.seg_size {
            cache.retain_from(next / self.seg_size);
            drop(cache);
            self.remove_consumed_segments();
        }
        Ok(Some(Error::Corrupt {
            path,
            offset,
            detail: format!(
                "damaged record header; skipped {} bytes to {}",
                next - head,
                if seq.is_some() {
                    "the next valid record"
                } else {
                    "the end of the log"
                }
            ),
        }))
    }

    /// Reads the shared tail and raises this handle's mark to it.
    fn refresh_tail(&self) -> u64 {
        let tail = self.a64(control::TAIL).load(Ordering::Acquire);
        // Release: a thread that reads the mark also sees the records below it.
        self.seen_tail.fetch_max(tail, Ordering::AcqRel).max(tail)
    }

    /// Waits (spinning briefly, then sleeping on the doorbell) until the queue may hold a
    /// message or `deadline` passes; `Ok(false)` at the deadline.
    fn wait_for_data(&self, deadline: Option<Instant>) -> Result<bool> {
        let head = self.a64(control::HEAD);
        let tail = self.a64(control::TAIL);
        let ready = || tail.load(Ordering::SeqCst) != head.load(Ordering::SeqCst);
        // Spin, then yield between checks. Spinning pays when the sender runs on another
        // CPU (its message shows up within a microsecond), and only steals time from it
        // when it waits for our CPU: then yielding at once lets it run. Which case holds
        // is learned from how recent waits ended (see `SpinBudget`).
        let spin_start = Instant::now();
        let spin_ns = SPIN_BUDGET.with(|b| b.get());
        let mut handed_off = false;
        let mut i = 0u32;
        loop {
            if ready() {
                SPIN_BUDGET.with(|b| b.learn(handed_off));
                return Ok(true);
            }
            i += 1;
            let yielding = i.is_multiple_of(64) || spin_ns == 0;
            if yielding {
                let now = Instant::now();
                let spun = now.duration_since(spin_start);
                if spun >= SPIN || deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if spun.as_nanos() >= u128::from(spin_ns) {
                    std::thread::yield_now();
                    if now.elapsed() >= YIELD_HANDED_OFF {
                        handed_off = true;
                    }
                }
            }
            std::hint::spin_loop();
        }
        SPIN_BUDGET.with(|b| b.learn(handed_off));
        // Sleep: register as a waiter, then re-check (see `ring` for the ordering).
        let slot = self.register_waiter();
        let bell = self.a32(control::DOORBELL);
        let mut b = bell.load(Ordering::SeqCst);
        while b & SLEEPERS == 0 {
            match bell.compare_exchange(b, b | SLEEPERS, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => b |= SLEEPERS,
                Err(v) => b = v,
            }
        }
        let mut woke = ready();
        if !woke && !self.destroyed() {
            let now = Instant::now();
            if deadline.is_none_or(|d| now < d) {
                let slice_end = now + WAIT_SLICE;
                let until = match deadline {
                    Some(d) if d < slice_end => d,
                    _ => slice_end,
                };
                let r = sys::futex_wait(bell, b, Some(until));
                woke = ready();
                if r.is_ok() && !woke && Instant::now() >= slice_end {
                    // A whole slice without a ring: clear the registrations of waiters
                    // that died asleep (they count only in `stats`).
                    self.reap_dead_waiters(slot);
                }
                if let Err(e) = r {
                    self.unregister_waiter(slot);
                    return Err(Error::io("futex wait", self.dir.join(CONTROL), e));
                }
            }
        }
        self.unregister_waiter(slot);
        self.check_destroyed()?;
        Ok(woke || deadline.is_none_or(|d| Instant::now() < d))
    }

    /// Registers the calling thread as a sleeping receiver: a bit of the waiter mask with
    /// its owner ident in the matching slot (or, if all 64 are taken, the overflow count).
    fn register_waiter(&self) -> Option<usize> {
        let mask = self.a64(control::WAIT_MASK);
        let mut m = mask.load(Ordering::SeqCst);
        loop {
            if m == u64::MAX {
                self.a32(control::WAITERS).fetch_add(1, Ordering::SeqCst);
                return None;
            }
            let i = (!m).trailing_zeros() as usize;
            match mask.compare_exchange(m, m | 1 << i, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    self.a64(control::WAIT_SLOTS + 8 * i)
                        .store(sys::owner_ident(), Ordering::SeqCst);
                    return Some(i);
                }
                Err(v) => m = v,
            }
        }
    }

    fn unregister_waiter(&self, slot: Option<usize>) {
        match slot {
            Some(i) => {
                self.a64(control::WAIT_SLOTS + 8 * i)
                    .store(0, Ordering::SeqCst);
                self.a64(control::WAIT_MASK)
                    .fetch_and(!(1 << i), Ordering::SeqCst);
            }
            None => {
                self.a32(control::WAITERS).fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Frees the waiter slots of threads that died while registered.
    fn reap_dead_waiters(&self, mine: Option<usize>) {
        let mask = self.a64(control::WAIT_MASK).load(Ordering::SeqCst);
        for i in 0..64 {
            if mask & (1 << i) == 0 || Some(i) == mine {
                continue;
            }
            let slot = self.a64(control::WAIT_SLOTS + 8 * i);
            let ident = slot.load(Ordering::SeqCst);
            let tid = (ident >> 32) as u32;
            // 0: being registered right now (or its owner died in that instant; see
            // FORMAT.md); a live owner keeps its slot.
            if tid == 0 || sys::owner_alive(tid, ident) {
                continue;
            }
            if slot
                .compare_exchange(ident, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.a64(control::WAIT_MASK)
                    .fetch_and(!(1 << i), Ordering::SeqCst);
            }
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Message>> {
        let mut out = None;
        self.recv_many_until(1, deadline, &mut out)?;
        Ok(out)
    }

    fn recv_many_until(
        &self,
        max: usize,
        deadline: Option<Instant>,
        out: &mut impl Sink,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        loop {
            self.check_destroyed()?;
            let n = self.take(max, out, LockWait::Until(deadline))?;
            if n > 0 {
                return Ok(n);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
            if !self.wait_for_data(deadline)? {
                // At the deadline: one last look.
                return self.take(max, out, LockWait::Until(None));
            }
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
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        // A message there now and nobody else receiving: no need to read the clock.
        self.check_destroyed()?;
        let mut out = None;
        if self.take(1, &mut out, LockWait::IfFree)? > 0 {
            return Ok(out);
        }
        self.recv_until(crate::deadline_after(timeout))
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
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Option<Message>> {
        self.recv_until(Some(deadline))
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
    pub fn recv_forever(&self) -> Result<Message> {
        loop {
            if let Some(m) = self.recv_until(None)? {
                return Ok(m);
            }
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
    pub fn try_recv(&self) -> Result<Option<Message>> {
        self.check_destroyed()?;
        let mut out = None;
        self.take(1, &mut out, LockWait::Until(None))?;
        Ok(out)
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
    pub fn recv_many(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        self.recv_many_until(max, crate::deadline_after(timeout), &mut out)?;
        Ok(out)
    }

    // --- state --------------------------------------------------------------------------

    /// How many messages are waiting. O(1); exact when no process is sending or receiving
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
        self.check_destroyed()?;
        self.repair_abandoned();
        Ok(self.count_now())
    }

    fn count_now(&self) -> u64 {
        let head = self.a64(control::HEAD).load(Ordering::Acquire);
        let received = self.a64(control::RECEIVED).load(Ordering::Acquire);
        let tail = self.a64(control::TAIL).load(Ordering::Acquire);
        let sent = self.a64(control::SENT).load(Ordering::Acquire);
        if head >= tail {
            return 0;
        }
        // The record at the head knows how many were sent before it. `received` only
        // lags it if a consumer died between claiming records and raising it.
        let first = record_at(&mut lock_cache(&self.consumer), head, tail)
            .ok()
            .flatten()
            .map(|(h, _)| h.seq);
        sent.saturating_sub(first.unwrap_or(received).max(received))
            .max(1)
    }

    /// Whether no message is waiting. O(1).
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
        self.check_destroyed()?;
        let head = self.a64(control::HEAD).load(Ordering::Acquire);
        Ok(head >= self.a64(control::TAIL).load(Ordering::Acquire))
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
        {
            // Always producer lock first, then consumer lock.
            let Some(_p) = self.lock_producer(None)? else {
                unreachable_timeout()?
            };
            let Some(_c) = self.lock_consumer(None)? else {
                unreachable_timeout()?
            };
            // Both locks: no sender moves the tail and no consumer skips a damaged
            // header meanwhile; consumers claiming records lose their exchange.
            let tail = self.a64(control::TAIL).load(Ordering::Relaxed);
            let sent = self.a64(control::SENT).load(Ordering::Relaxed);
            self.a64(control::HEAD).fetch_max(tail, Ordering::AcqRel);
            self.a64(control::RECEIVED)
                .fetch_max(sent, Ordering::AcqRel);
        }
        self.remove_consumed_segments();
        Ok(())
    }

    /// Removes the queue: its files and its directory. Every handle (in any process) then
    /// fails with [`Error::Destroyed`]; receivers asleep in `recv` wake up with it.
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
        {
            let Some(_p) = self.lock_producer(None)? else {
                unreachable_timeout()?
            };
            let Some(_c) = self.lock_consumer(None)? else {
                unreachable_timeout()?
            };
            self.a32(control::DESTROYED).store(1, Ordering::SeqCst);
        }
        let bell = self.a32(control::DOORBELL);
        let _ = bell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(next_epoch(v)));
        let _ = sys::futex_wake(bell, u32::MAX);
        remove_queue_files(&self.dir)?;
        fs::remove_dir(&self.dir).at("remove directory", &self.dir)
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
        self.check_destroyed()?;
        self.repair_abandoned();
        let mut segments = 0;
        let mut bytes_on_disk = 0;
        for e in fs::read_dir(&self.dir).at("read directory", &self.dir)? {
            let e = e.at("read directory", &self.dir)?;
            let name = e.file_name();
            let is_seg = segment::parse_name(&name.to_string_lossy()).is_some();
            if let Ok(m) = e.metadata() {
                use std::os::unix::fs::MetadataExt;
                bytes_on_disk += m.blocks() * 512;
            }
            segments += u64::from(is_seg);
        }
        let mask = self.a64(control::WAIT_MASK).load(Ordering::Relaxed);
        Ok(QueueStats {
            count: self.count_now(),
            head: self.a64(control::HEAD).load(Ordering::Acquire),
            tail: self.a64(control::TAIL).load(Ordering::Acquire),
            sent: self.a64(control::SENT).load(Ordering::Acquire),
            received: self.a64(control::RECEIVED).load(Ordering::Acquire),
            segment_size: self.seg_size,
            segments,
            bytes_on_disk,
            waiting_consumers: mask.count_ones()
                + self.a32(control::WAITERS).load(Ordering::Relaxed),
        })
    }
}

/// What [`MessageQueue::claim`] found at the head.
enum Claim {
    /// Another consumer moved the head first: try again.
    Raced,
    /// The header at the head is damaged.
    Damaged,
    /// One record claimed, to be copied and checked by the caller.
    Deferred { end: u64, header: Header },
    /// Records copied, checked and claimed.
    Checked { end: u64, messages: Vec<Message> },
    /// The first record failed its payload checksum; it was claimed (skipped).
    Corrupt { end: u64, header: Header },
}

/// The error for a record whose payload failed its checksum.
fn payload_error(cache: &SegmentCache, pos: u64, h: &Header) -> Error {
    let (path, offset) = cache.locate(pos);
    Error::Corrupt {
        path,
        offset,
        detail: format!(
            "payload checksum mismatch in message {} ({} bytes); skipped",
            h.seq, h.len
        ),
    }
}

/// How [`MessageQueue::take`] takes the consumer lock (needed only to skip a damaged
/// header).
#[derive(Clone, Copy)]
enum LockWait {
    /// Only if it is free right now (otherwise take nothing).
    IfFree,
    /// Waiting until the deadline (`None`: without limit).
    Until(Option<Instant>),
}

/// How long a receiver spins before it starts yielding, learned from its recent waits
/// (like the adaptive spinning of mutexes): dropped to zero by a wait in which a yield
/// handed the CPU to another process (the sender shares our CPU, or the machine is
/// oversubscribed: spinning would only keep others from running), doubled back up to
/// [`SPIN_BEFORE_YIELD_MAX`] by a wait that ended while spinning or while yields
/// returned at once (the sender runs elsewhere: spinning costs nobody).
struct SpinBudget(std::cell::Cell<u32>);

thread_local!(static SPIN_BUDGET: SpinBudget = const {
    SpinBudget(std::cell::Cell::new(SPIN_BEFORE_YIELD_MAX))
});

impl SpinBudget {
    fn get(&self) -> u32 {
        self.0.get()
    }

    fn learn(&self, handed_off: bool) {
        let b = self.0.get();
        self.0.set(if handed_off {
            0
        } else {
            (b.max(128) * 2).min(SPIN_BEFORE_YIELD_MAX)
        });
    }
}

/// Where [`MessageQueue::take`] puts the messages it takes: a vector, or for a single
/// receive an `Option` (no vector to allocate per message).
trait Sink {
    fn push(&mut self, m: Message);
}

impl Sink for Vec<Message> {
    fn push(&mut self, m: Message) {
        Vec::push(self, m);
    }
}

impl Sink for Option<Message> {
    fn push(&mut self, m: Message) {
        *self = Some(m);
    }
}

/// The doorbell's sleepers bit: set by a receiver about to sleep, cleared by the send that
/// wakes it.
const SLEEPERS: u32 = 1;

/// The doorbell value of the epoch after `v`, with the sleepers bit clear.
fn next_epoch(v: u32) -> u32 {
    (v & !SLEEPERS).wrapping_add(2)
}

/// The lock calls above wait without a deadline, so they never time out.
fn unreachable_timeout<T>() -> Result<T> {
    Err(Error::Io {
        op: "lock",
        path: PathBuf::new(),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    })
}

/// Scans `[from + 8, tail)` for the next valid record header. Returns its position and
/// sequence number, or `(tail, None)`.
fn resync(cache: &mut SegmentCache, from: u64, tail: u64) -> Result<(u64, Option<u64>)> {
    let mut p = from + 8;
    while p + HEADER as u64 <= tail {
        if let Some((h, _)) = record_at(cache, p, tail)? {
            return Ok((p, Some(h.seq)));
        }
        p += 8;
    }
    Ok((tail, None))
}

/// The record at `pos`, if its header verifies there and the record ends by `tail`:
/// the header and the record's size in the log.
fn record_at(cache: &mut SegmentCache, pos: u64, tail: u64) -> Result<Option<(Header, u64)>> {
    let mut hb = [0u8; HEADER];
    cache.read(pos, &mut hb)?;
    Ok(match Header::decode(&hb, pos) {
        Some(h) if record_size(h.len as usize) <= tail - pos => {
            Some((h, record_size(h.len as usize)))
        }
        _ => None,
    })
}

/// Removes the control file, the segments and stray temporary files of a queue.
fn remove_queue_files(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).at("read directory", dir)? {
        let e = e.at("read directory", dir)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name == CONTROL
            || segment::parse_name(&name).is_some()
            || (name.starts_with(".control.") && name.ends_with(".tmp"));
        if ours {
            match fs::remove_file(e.path()) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io("remove", e.path(), err)),
            }
        }
    }
    Ok(())
}
