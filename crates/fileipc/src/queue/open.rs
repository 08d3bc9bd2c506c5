//! The local engine's handle, [`LocalQueue`]: opening (and creating) a queue directory,
//! the control file's locks and their repair after a dead holder, and the whole-queue
//! operations (`count`, `is_empty`, `clear`, `destroy`,
//! `stats`).
//!
//! The other mechanisms of the engine add their methods to [`LocalQueue`] in their own
//! files: `produce.rs`, `consume.rs`, `durable.rs`, `doorbell.rs`, `retire.rs`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use super::QueueStats;
use super::claim::{ClaimConfig, DEAD_LETTERS};
use super::consume::record_at;
use super::control::{self, Control};
use super::options::{MESSAGE_SIZE_LIMIT, QueueOptions};
use super::segment::{self, Missing, SegmentCache};
use crate::error::{Error, IoResultExt, Result};
use crate::owner::Owners;
use crate::robust::{Acquired, Held, RobustLock};
use crate::state;
use crate::sys;

pub(crate) const CONTROL: &str = "control";
/// The largest log position a sound queue can reach (see the check in `open`).
const MAX_POSITION: u64 = 1 << 62;
const DIR_EXPECTED: &str = "fileipc queue directory";
/// How many times `open` starts over after a destroy removed the directory under it.
const OPEN_ATTEMPTS: usize = 100;

/// A handle on a queue in a local directory: the mapped control file, the options this
/// handle was opened with, and one segment cache per side.
pub(crate) struct LocalQueue {
    pub(super) dir: PathBuf,
    pub(super) ctl: Control,
    /// The control file's identity (device, inode): `destroy` removes the files in the
    /// directory only while this file is its control file.
    ctl_id: (u64, u64),
    pub(super) seg_size: u64,
    pub(super) max_message_size: usize,
    pub(super) durable: bool,
    /// The mode this handle was opened with (for `try_clone`).
    pub(super) mode: u32,
    /// The most messages a send of this handle lets the queue hold (`None`: no limit).
    pub(super) capacity: Option<u64>,
    pub(super) producer: Mutex<SegmentCache>,
    pub(super) consumer: Mutex<SegmentCache>,
    pub(super) syncer: Mutex<SegmentCache>,
    /// The highest tail this handle has read. Every record below it is committed, so a
    /// consumer reads the shared tail (a cache line every producer writes) only when the
    /// head reaches this mark, not once per message.
    pub(super) seen_tail: AtomicU64,
    /// Claim/ack settings and the dead-letter queue (see `claim.rs`).
    pub(super) claims: ClaimConfig,
}

pub(super) fn lock_cache(m: &Mutex<SegmentCache>) -> MutexGuard<'_, SegmentCache> {
    // A panic while holding it cannot leave the cache inconsistent (it is only a set of
    // mappings), so a poisoned mutex is simply used.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalQueue {
    /// Opens (creating if missing) the queue in directory `dir` with `opts`.
    pub(super) fn open(dir: &Path, opts: &QueueOptions) -> Result<LocalQueue> {
        if opts.max_message_size > MESSAGE_SIZE_LIMIT {
            return Err(Error::invalid(
                dir,
                format!(
                    "max_message_size {} is over the limit of {MESSAGE_SIZE_LIMIT} bytes",
                    opts.max_message_size
                ),
            ));
        }
        if opts.capacity == Some(0) {
            return Err(Error::invalid(
                dir,
                "capacity 0: a queue must hold at least 1 message",
            ));
        }
        let s = opts.segment_size;
        if !segment::valid_size(s) {
            return Err(Error::invalid(
                dir,
                format!("segment_size {s} is not a multiple of 4096 between 64 KiB and 1 GiB"),
            ));
        }
        let dir_mode = opts.mode | ((opts.mode & 0o444) >> 2);
        let ctl_path = dir.join(CONTROL);
        // Each retry follows a destroy that removed the directory meanwhile.
        for _ in 0..OPEN_ATTEMPTS {
            if !make_dir(dir, dir_mode)? {
                continue;
            }
            // The common case: a live queue, opened without any lock.
            let sf = match state::open_existing(&ctl_path, control::LAYOUT, opts.mode)? {
                Some(sf) if !flag_destroyed(&sf) => sf,
                // No queue, or a destroyed one: create one, excluding destroyers.
                _ => match create_excluding_destroy(dir, opts.mode, s)? {
                    Some(sf) => sf,
                    None => continue,
                },
            };
            match Self::from_control(dir, sf, opts) {
                // Destroyed while we opened it: open the next queue.
                Err(Error::Destroyed { .. }) => continue,
                r => return r,
            }
        }
        Err(Error::io(
            "open",
            &ctl_path,
            std::io::Error::other("the queue keeps being destroyed while being opened"),
        ))
    }

    /// Opens the live queue in directory `dir`; never creates anything: `NotFound`
    /// naming `dir` if there is none (no directory, no control file, a destroyed one).
    pub(super) fn open_existing(dir: &Path, opts: &QueueOptions) -> Result<LocalQueue> {
        let dir_mode = opts.mode | ((opts.mode & 0o444) >> 2);
        let meta = match fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(state::not_found(dir));
            }
            Err(e) => return Err(Error::io("stat", dir, e)),
        };
        if meta.file_type().is_symlink() {
            return Err(Error::Symlink {
                path: dir.to_owned(),
            });
        }
        if !meta.is_dir() {
            return Err(Error::format(dir, DIR_EXPECTED, "not a directory"));
        }
        state::check_trust(dir, &meta, dir_mode, DIR_EXPECTED)?;
        match state::open_existing(&dir.join(CONTROL), control::LAYOUT, opts.mode)? {
            Some(sf) if !flag_destroyed(&sf) => match Self::from_control(dir, sf, opts) {
                Err(Error::Destroyed { .. }) => Err(state::not_found(dir)),
                r => r,
            },
            _ => Err(state::not_found(dir)),
        }
    }

    /// The handle on the live queue whose control file `sf` was opened.
    fn from_control(dir: &Path, sf: state::StateFile, opts: &QueueOptions) -> Result<LocalQueue> {
        let ctl_path = sf.path.clone();
        let ctl_id = sys::file_id(&sf.file).at("stat", &ctl_path)?;
        let owners = Owners::of(&sf.file, &sf.path)?;
        // The group the queue is shared with, if its mode shares it: new segment files
        // get it, as the control file has it.
        let group = if opts.mode & 0o070 != 0 {
            Some(sf.file.metadata().at("stat", &ctl_path)?.gid())
        } else {
            None
        };
        let ctl = Control {
            map: sf.map,
            owners,
        };
        let seg_size = ctl.u64(control::SEGMENT_SIZE).load(Ordering::Relaxed);
        if !segment::valid_size(seg_size) {
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
        let q = LocalQueue {
            dir: dir.to_owned(),
            ctl,
            ctl_id,
            seg_size,
            max_message_size: opts.max_message_size,
            durable: opts.durable,
            mode: opts.mode,
            capacity: opts.capacity,
            producer: Mutex::new(SegmentCache::new(
                dir,
                seg_size,
                Missing::Create {
                    mode: opts.mode,
                    group,
                    durable: opts.durable,
                },
            )),
            consumer: Mutex::new(SegmentCache::new(dir, seg_size, Missing::Fail)),
            syncer: Mutex::new(SegmentCache::new(dir, seg_size, Missing::Skip)),
            seen_tail: AtomicU64::new(tail),
            claims: ClaimConfig::new(opts),
        };
        q.repair_abandoned()?;
        q.recover_after_reboot()?;
        // The tail may have been cut back by the recovery.
        q.seen_tail.store(
            q.a64(control::TAIL).load(Ordering::Acquire),
            Ordering::Release,
        );
        q.remove_consumed_segments();
        Ok(q)
    }

    /// The queue's directory.
    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    pub(super) fn a64(&self, off: usize) -> &AtomicU64 {
        self.ctl.u64(off)
    }

    pub(super) fn a32(&self, off: usize) -> &AtomicU32 {
        self.ctl.u32(off)
    }

    pub(super) fn destroyed(&self) -> bool {
        self.a32(control::DESTROYED).load(Ordering::SeqCst) != 0
    }

    pub(super) fn check_destroyed(&self) -> Result<()> {
        if self.destroyed() {
            return Err(Error::Destroyed {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    // --- locks and repair ---------------------------------------------------------------

    /// Takes the producer lock, repairing after a dead holder. `Ok(None)` at `deadline`.
    pub(super) fn lock_producer(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>> {
        self.lock_side(self.ctl.producer_lock(), deadline, Self::repair_producer)
    }

    /// Takes the consumer lock, repairing after a dead holder. `Ok(None)` at `deadline`.
    pub(super) fn lock_consumer(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>> {
        // The consumer lock guards no half-done state: the head moves only by
        // compare-and-swap and `received` only by `fetch_max`, so a dead holder leaves
        // nothing to repair.
        self.lock_side(self.ctl.consumer_lock(), deadline, |_| {})
    }

    /// Takes the claim lock, resolving the slot a dead holder left reserved.
    /// `Ok(None)` at `deadline`.
    pub(super) fn lock_claim(&self, deadline: Option<Instant>) -> Result<Option<Held<'_>>> {
        self.lock_side(self.ctl.claim_lock(), deadline, Self::repair_claims)
    }

    fn lock_side<'a>(
        &'a self,
        l: RobustLock<'a>,
        deadline: Option<Instant>,
        repair: fn(&Self),
    ) -> Result<Option<Held<'a>>> {
        match l.lock(deadline)? {
            None => return Ok(None),
            Some(Acquired::TakenOver) => repair(self),
            Some(Acquired::Normal) => {}
        }
        let held = Held(l);
        self.check_destroyed()?;
        Ok(Some(held))
    }

    /// Takes over and repairs any lock whose holder died, without waiting a slice.
    fn repair_abandoned(&self) -> Result<()> {
        let p = self.ctl.producer_lock();
        if p.is_held() && p.take_if_abandoned()?.is_some() {
            self.repair_producer();
            p.unlock();
        }
        let c = self.ctl.consumer_lock();
        if c.is_held() && c.take_if_abandoned()?.is_some() {
            c.unlock();
        }
        let s = self.ctl.sync_lock();
        if s.is_held() && s.take_if_abandoned()?.is_some() {
            s.unlock();
        }
        let k = self.ctl.claim_lock();
        if k.is_held() && k.take_if_abandoned()?.is_some() {
            self.repair_claims();
            k.unlock();
        }
        Ok(())
    }

    /// Unmaps, on every side of this handle, the segments wholly below the head: they
    /// are unlinked (or about to be), and a mapping would keep their blocks allocated.
    /// Called before a receiver sleeps and by `count` and `stats`, so that a handle
    /// that waits in `recv` or only monitors the queue while other handles move the head
    /// keeps no stale mapping. A cache another thread is using is left alone (that
    /// thread's own accesses trim it).
    pub(super) fn release_consumed_mappings(&self) {
        // The mark first: a file unlinked after this read raises it again after.
        let removed = self.a64(control::REMOVED_BELOW).load(Ordering::Acquire);
        let k = self.a64(control::HEAD).load(Ordering::Acquire) / self.seg_size;
        for cache in [&self.consumer, &self.producer, &self.syncer] {
            let mut guard = match cache.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            guard.retain_from(k);
            guard.release_unlinked_since(removed);
        }
    }

    // --- whole-queue operations ---------------------------------------------------------

    pub(super) fn count(&self) -> Result<u64> {
        self.check_destroyed()?;
        self.repair_abandoned()?;
        self.release_consumed_mappings();
        let f = self.in_flight();
        Ok(self.count_now() + f.claimed + f.released)
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

    pub(super) fn is_empty(&self) -> Result<bool> {
        self.check_destroyed()?;
        let head = self.a64(control::HEAD).load(Ordering::Acquire);
        if head < self.a64(control::TAIL).load(Ordering::Acquire) {
            return Ok(false);
        }
        let f = self.in_flight();
        Ok(f.claimed + f.released == 0)
    }

    pub(super) fn clear(&self) -> Result<()> {
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
        self.clear_released();
        self.remove_consumed_segments();
        Ok(())
    }

    /// Destroys the queue: sets the destroyed flag, then removes its files and directory,
    /// all under the directory's lock, so that no `open` finishes this destroy or creates
    /// a new queue in the directory meanwhile (see "Destroy" in docs/FORMAT.md).
    pub(super) fn destroy(&self) -> Result<()> {
        let dir_lock = match sys::open_dir(&self.dir) {
            Ok(d) => {
                sys::lock_exclusive(&d).at("lock", &self.dir)?;
                Some(d)
            }
            // Gone already (removed by hand): there is only the flag to set.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &self.dir, e)),
        };
        {
            let Some(_p) = self.lock_producer(None)? else {
                unreachable_timeout()?
            };
            let Some(_c) = self.lock_consumer(None)? else {
                unreachable_timeout()?
            };
            self.a32(control::DESTROYED).store(1, Ordering::SeqCst);
        }
        self.wake_all_receivers();
        // Remove the files only if the directory at the path is the one locked and still
        // holds this queue's control file: then, under the lock, every queue file in it
        // is this queue's (a new queue is only ever created under the same lock).
        let ours = match &dir_lock {
            Some(d) => {
                sys::is_same_file(d, &self.dir).at("stat", &self.dir)?
                    && fs::symlink_metadata(self.dir.join(CONTROL)).is_ok_and(|m| {
                        use std::os::unix::fs::MetadataExt;
                        (m.dev(), m.ino()) == self.ctl_id
                    })
            }
            None => false,
        };
        if ours {
            // The dead-letter queue inside goes first (its own destroy, so that its
            // handles see it destroyed).
            let dead = self.dir.join(DEAD_LETTERS);
            if fs::symlink_metadata(dead.join(CONTROL)).is_ok() {
                match LocalQueue::open(&dead, &self.claims_options()) {
                    Ok(d) => match d.destroy() {
                        Ok(()) | Err(Error::Destroyed { .. }) => {}
                        Err(e) => return Err(e),
                    },
                    Err(Error::Destroyed { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            // A handle recycling a segment when the flag was set may rename it after the
            // listing; it then removes it itself. Wait for that (a few attempts).
            let mut attempts = 0;
            loop {
                remove_queue_files(&self.dir)?;
                match fs::remove_dir(&self.dir) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 10 =>
                    {
                        attempts += 1;
                        std::thread::yield_now();
                    }
                    r => break r.at("remove directory", &self.dir)?,
                }
            }
        }
        drop(dir_lock);
        Ok(())
    }

    pub(super) fn stats(&self) -> Result<QueueStats> {
        self.check_destroyed()?;
        self.repair_abandoned()?;
        self.release_consumed_mappings();
        let (mut segments, mut spare_segments) = (0, 0);
        let mut bytes_on_disk = 0;
        let tail = self.a64(control::TAIL).load(Ordering::Acquire);
        for e in fs::read_dir(&self.dir).at("read directory", &self.dir)? {
            let e = e.at("read directory", &self.dir)?;
            let name = e.file_name();
            if let Ok(m) = e.metadata() {
                use std::os::unix::fs::MetadataExt;
                bytes_on_disk += m.blocks() * 512;
            }
            // A segment starting at or beyond the tail holds no record: a recycled spare
            // (or one a producer is about to write).
            match segment::parse_name(&name.to_string_lossy()) {
                Some(k) if k.saturating_mul(self.seg_size) >= tail => spare_segments += 1,
                Some(_) => segments += 1,
                None => {}
            }
        }
        let waiting = self.waiting_receivers();
        let f = self.in_flight();
        let ready = self.count_now() + f.released;
        Ok(QueueStats {
            count: ready + f.claimed,
            ready,
            in_flight: f.claimed,
            head: self.a64(control::HEAD).load(Ordering::Acquire),
            tail: self.a64(control::TAIL).load(Ordering::Acquire),
            sent: self.a64(control::SENT).load(Ordering::Acquire),
            received: self.a64(control::RECEIVED).load(Ordering::Acquire),
            segment_size: self.seg_size,
            segments,
            spare_segments,
            bytes_on_disk,
            waiting_consumers: waiting,
        })
    }
}

/// The lock calls of this engine wait without a deadline, so they never time out.
pub(super) fn unreachable_timeout<T>() -> Result<T> {
    Err(Error::Io {
        op: "lock",
        path: PathBuf::new(),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    })
}

/// Creates the queue directory `dir` if it is missing; its parent must exist (as for
/// every primitive: no parent directory is ever created). A queue directory this call
/// creates gets exactly `mode` (`mkdir` filters it by the umask: a group mode would lose
/// its group bits); an existing one keeps its mode.
fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    // Through a descriptor, so that a symbolic link swapped in meanwhile is not followed
    // (the caller refuses it next).
    let d = sys::open_nofollow(dir, false).at("open", dir)?;
    if d.metadata().at("stat", dir)?.is_dir() {
        d.set_permissions(fs::Permissions::from_mode(mode))
            .at("chmod", dir)?;
    }
    Ok(())
}

/// Removes the segments and stray temporary files of a queue, then its control file
/// (last: a destroy interrupted before leaves the control file with its destroyed flag,
/// for the next `open` to finish the removal). The caller holds the directory's lock.
fn remove_queue_files(dir: &Path) -> Result<()> {
    let remove = |path: PathBuf| match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io("remove", path, err)),
    };
    for e in fs::read_dir(dir).at("read directory", dir)? {
        let e = e.at("read directory", dir)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = segment::parse_name(&name).is_some()
            || (name.starts_with(".control.") && name.ends_with(".tmp"));
        if ours {
            remove(e.path())?;
        }
    }
    remove(dir.join(CONTROL))
}

/// Whether the destroyed flag of the control file `sf` is set.
fn flag_destroyed(sf: &state::StateFile) -> bool {
    sf.map.u32(control::DESTROYED).load(Ordering::SeqCst) != 0
}

/// Creates the queue directory `dir` if missing (not its parent), and checks it: not a
/// symbolic link, a directory, trusted. `Ok(false)` if it vanished meanwhile (a destroy
/// removed it): the caller starts over.
fn make_dir(dir: &Path, dir_mode: u32) -> Result<bool> {
    // A symbolic link at the queue's path is never followed, and a directory another
    // user could fill or swap files in is not trusted.
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Symlink {
            path: dir.to_owned(),
        });
    }
    match create_dir(dir, dir_mode) {
        Ok(()) => {}
        // It existed when `mkdir` ran, and was gone when we opened it (a `NotFound` from
        // `mkdir` itself is a missing parent: an error).
        Err(Error::Io {
            op: "open", source, ..
        }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("stat", dir, e)),
    };
    if !meta.is_dir() {
        return Err(Error::format(dir, DIR_EXPECTED, "not a directory"));
    }
    state::check_trust(dir, &meta, dir_mode, DIR_EXPECTED)?;
    Ok(true)
}

/// The slow path of `open`, when `dir` holds no live queue: under the directory's lock
/// (which `destroy` holds from setting the destroyed flag until the directory is gone),
/// finishes an interrupted destroy if the control file has the flag, then creates the
/// queue if the directory is empty. `Ok(None)` if the directory was removed meanwhile
/// (a destroy finished while we waited for the lock): the caller starts over.
fn create_excluding_destroy(
    dir: &Path,
    mode: u32,
    seg_size: u64,
) -> Result<Option<state::StateFile>> {
    let ctl_path = dir.join(CONTROL);
    let lock = match sys::open_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", dir, e)),
    };
    sys::lock_exclusive(&lock).at("lock", dir)?;
    if !sys::is_same_file(&lock, dir).at("stat", dir)? {
        return Ok(None);
    }
    match state::open_existing(&ctl_path, control::LAYOUT, mode)? {
        // Created by another opener while we waited.
        Some(sf) if !flag_destroyed(&sf) => return Ok(Some(sf)),
        // Its destroyer died before the end (a live one would hold the lock): finish.
        Some(_) => remove_queue_files(dir)?,
        None => {
            // Only an empty directory becomes a queue (a crashed creator's temporary
            // control file does not count).
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
    }
    let sf = state::open_or_create(&ctl_path, control::LAYOUT, mode, |r| {
        control::init(r, seg_size)
    })?;
    drop(lock);
    Ok(Some(sf))
}
