//! The local engine of the semaphore: a semaphore file on the local file system, the
//! critical section on it, the acquire and release paths, and waiting.
//!
//! The table protocol (holders, waiter entries, gifts) is in `table.rs`. Taking a permit
//! happens in a short critical section under an exclusive `flock` on the file, plus an
//! in-process lock for threads sharing a handle; returning one takes no lock.
//!
//! Waiters sleep in bounded slices of [`WAITER_SLICE`] (10 ms), on their waiter entry,
//! or on the futex doorbell ([`wait::CountedBell`]) rung by releases if the entry table
//! is full. A dead holder cannot release, so every slice a waiter checks the holders'
//! liveness and reclaims the permits of dead ones (and of dead waiters' entries),
//! handing them on: a killed holder's permits come back within about one slice. The
//! proof that no wake-up is lost is on [`LocalSemaphore::wait_loop`].

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::SemaphoreHolder;
use super::table::{Gift, Table, value_of, word_held};
use crate::error::{Error, IoResultExt, Result};
use crate::sys;
use crate::wait::{self, CountedBell, WAITER_SLICE};

/// A [`Semaphore`](super::Semaphore) handle's engine: its file, mapped.
#[derive(Debug)]
pub(super) struct LocalSemaphore {
    table: Table,
    mode: u32,
    /// Excludes the threads sharing this handle from the critical section (the `flock`
    /// belongs to the open file description, which they share).
    local: std::sync::Mutex<()>,
}

impl LocalSemaphore {
    /// Opens the semaphore file at `path`, creating it with `mode` and `initial` permits
    /// if it is missing.
    pub(super) fn open(path: &Path, mode: u32, initial: u32) -> Result<LocalSemaphore> {
        Ok(LocalSemaphore {
            table: Table::open(path, mode, initial)?,
            mode,
            local: std::sync::Mutex::new(()),
        })
    }

    /// A new handle on the same path, opened with the same mode.
    pub(super) fn try_clone(&self) -> Result<LocalSemaphore> {
        LocalSemaphore::open(&self.table.state.path, self.mode, 0)
    }

    /// [`Semaphore::path`](super::Semaphore::path).
    pub(super) fn path(&self) -> &Path {
        &self.table.state.path
    }

    /// [`Semaphore::try_acquire`](super::Semaphore::try_acquire).
    pub(super) fn try_acquire(&self) -> Result<bool> {
        if self.take(false)? {
            return Ok(true);
        }
        self.take(true)
    }

    /// [`Semaphore::release`](super::Semaphore::release).
    pub(super) fn release(&self) -> Result<()> {
        // Fast path, no lock: hand the permit straight to the longest waiter, or return
        // it from this process's records.
        if self.table.waiters().load(Ordering::SeqCst) > 0 {
            match self.table.give() {
                Gift::Given => return Ok(()),
                Gift::Returned => {
                    self.wake_released();
                    return Ok(());
                }
                Gift::NotHeld => {}
            }
        } else if self.table.return_own()? {
            self.wake_released();
            return Ok(());
        }
        let given = self.critical(|| {
            // This process may have acquired meanwhile (another thread or handle).
            if self.table.return_own()? {
                return Ok(false);
            }
            let cap = self.table.capacity().load(Ordering::SeqCst);
            if cap == u32::MAX {
                return Err(Error::invalid(
                    self.path(),
                    "release would raise the semaphore past u32::MAX",
                ));
            }
            self.table.capacity().store(cap + 1, Ordering::SeqCst);
            Ok(self.table.distribute() > 0)
        })?;
        if !given {
            self.wake_released();
        }
        Ok(())
    }

    /// [`Semaphore::detach`](super::Semaphore::detach).
    pub(super) fn detach(&self) -> Result<bool> {
        self.critical(|| {
            // Our slot first, then the capacity: a death between the two stores leaves
            // the permit with nobody, as if we had died holding it (reclaimed), never a
            // permit lost for good.
            if !self.table.return_own()? {
                return Ok(false);
            }
            let cap = self.table.capacity().load(Ordering::SeqCst);
            self.table
                .capacity()
                .store(cap.saturating_sub(1), Ordering::SeqCst);
            Ok(true)
        })
    }

    /// [`Semaphore::holders`](super::Semaphore::holders).
    pub(super) fn holders(&self) -> Result<Vec<SemaphoreHolder>> {
        Ok(self.table.holders())
    }

    /// [`Semaphore::value`](super::Semaphore::value).
    pub(super) fn value(&self) -> Result<u32> {
        let (reclaimed, value) = self.critical(|| {
            let reclaimed = self.table.reclaim_dead();
            if reclaimed > 0 {
                self.table.distribute();
            }
            let scan = self.table.settled_scan();
            Ok((
                reclaimed,
                value_of(self.table.capacity().load(Ordering::SeqCst), scan.held),
            ))
        })?;
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        Ok(value)
    }

    /// [`Semaphore::held`](super::Semaphore::held).
    pub(super) fn held(&self) -> Result<u32> {
        let scan = self.table.scan();
        Ok(scan
            .mine
            .map_or(0, |(_, w)| word_held(w))
            .saturating_add(scan.mine_given))
    }

    /// [`Semaphore::waiting`](super::Semaphore::waiting).
    pub(super) fn waiting(&self) -> u32 {
        self.table.waiters().load(Ordering::Relaxed)
    }

    /// Takes a permit, waiting until `deadline` (`None`: without limit); `false` if none
    /// became free.
    pub(super) fn acquire_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.take(false)? {
            return Ok(true);
        }
        self.table.waiters().fetch_add(1, Ordering::SeqCst);
        let mut entry = None;
        let mut woken = false;
        let mut r = self.wait_loop(deadline, &mut entry, &mut woken);
        if let Some((e, w)) = entry
            && !matches!(r, Ok(true))
        {
            // Leave the queue; a permit handed over meanwhile is ours after all.
            if !self.table.leave(e, w) {
                r = Ok(true);
            }
        }
        let _ = self
            .table
            .waiters()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1));
        if woken && !matches!(r, Ok(true)) {
            // We may have taken a wake-up meant for a release: pass it on.
            let _ = wait::wake(self.table.seq(), 1);
        }
        r
    }

    /// Runs `f` in the critical section: this handle's threads excluded by `local`,
    /// other handles and processes by an exclusive `flock` on the file (released by the
    /// kernel if this process dies inside).
    fn critical<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = &self.table.state.file;
        if !sys::try_lock_exclusive(file).at("lock", self.path())? {
            sys::lock_exclusive(file).at("lock", self.path())?;
        }
        let r = f();
        let u = sys::unlock(file).at("unlock", self.path());
        let v = r?;
        u?;
        Ok(v)
    }

    /// The doorbell: the sequence word and the waiter count.
    fn bell(&self) -> CountedBell<'_> {
        CountedBell {
            seq: self.table.seq(),
            waiters: self.table.waiters(),
        }
    }

    /// Increments the doorbell and wakes up to `n` sleepers if anyone waits. Returns
    /// whether anyone was registered as waiting.
    fn ring(&self, n: u32) -> bool {
        self.bell().ring(n).is_some()
    }

    /// After a permit went back to the pool: wakes a sleeper on the doorbell and the
    /// oldest sleeper on a waiter entry, if any (they take it in the critical section).
    fn wake_released(&self) {
        // A waiter registers before it claims an entry and looks at the value: if
        // nobody is registered after our release, any later waiter sees the permit.
        if !self.ring(1) {
            return;
        }
        if let Some((e, _)) = self.table.oldest_waiting(None) {
            let _ = wait::wake(self.table.entry(e), 1);
        }
    }

    /// One attempt to take a permit in the critical section; with `reclaim`, first
    /// returns the permits of dead holders (and wakes waiters if there were any).
    fn take(&self, reclaim: bool) -> Result<bool> {
        let (got, reclaimed) = self.critical(|| {
            let reclaimed = if reclaim {
                self.table.reclaim_dead()
            } else {
                0
            };
            let got = self.table.take_locked()?;
            if reclaimed > 0 {
                self.table.distribute();
            }
            Ok((got, reclaimed))
        })?;
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        Ok(got)
    }

    /// The waiting side.
    ///
    /// A waiter claims a *waiter entry* (in the critical section, before it looks at
    /// the value) and sleeps on the entry's word; a releaser that holds a permit hands it
    /// over by marking the oldest waiting entry given and wakes that thread alone, which
    /// then returns without entering the critical section. Other permits (signalling
    /// releases, reclaimed ones) are given to entries in the critical section. A waiter
    /// that found the entry table full sleeps on the doorbell `seq` instead.
    ///
    /// No wake-up can be lost. The waiter (1) registers (`waiters += 1`), then in each
    /// round (2) reads `seq` as `s`, (3) in the critical section stores its entry as
    /// waiting and scans the table, finding the value 0, and (4) sleeps only while its
    /// entry (or `seq`) is unchanged. A releaser (a) changes the table, (b) reads
    /// `waiters`, the entries or `seq`: it either marks the entry given (the kernel
    /// refuses the sleep, or wakes it) or, finding no waiting entry, increments `seq`
    /// and wakes a sleeper on it and on the oldest waiting entry. All these accesses are
    /// sequentially consistent: if (3) saw the table before (a), (a) precedes the scan,
    /// so the entry stored before the scan is seen by (b). A dead holder cannot release:
    /// every [`WAITER_SLICE`] the waiter reclaims dead holders' records.
    fn wait_loop(
        &self,
        deadline: Option<Instant>,
        entry: &mut Option<(usize, u32)>,
        woken: &mut bool,
    ) -> Result<bool> {
        // The first round reclaims dead holders at once: the fast path did not.
        let mut reclaim = true;
        let bell = self.bell();
        let mut next_reclaim = Instant::now() + WAITER_SLICE;
        loop {
            let s = bell.seen();
            let (got, reclaimed, extra) = self.critical(|| {
                let reclaimed = if reclaim {
                    self.table.reclaim_dead()
                } else {
                    0
                };
                match *entry {
                    Some((e, w)) if self.table.entry(e).load(Ordering::SeqCst) != w => {
                        // Given to us (nobody else frees a live waiter's entry).
                        *entry = None;
                        return Ok((true, reclaimed, false));
                    }
                    Some(_) => {}
                    None => *entry = self.table.claim_entry(),
                }
                if !self.table.take_locked()? {
                    if reclaimed > 0 {
                        self.table.distribute();
                    }
                    return Ok((false, reclaimed, false));
                }
                // Leave the queue. Given a permit meanwhile: we got two; return one of
                // the process's (permits are the process's: another thread may already
                // have released the one in our entry).
                let mut extra = false;
                if let Some((e, w)) = entry.take()
                    && !self.table.leave(e, w)
                {
                    self.table.return_own()?;
                    extra = self.table.distribute() == 0;
                }
                if reclaimed > 0 {
                    self.table.distribute();
                }
                Ok((true, reclaimed, extra))
            })?;
            if reclaimed > 0 {
                self.ring(u32::MAX);
            } else if extra {
                self.wake_released();
            }
            if got {
                return Ok(true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            // The sleep ends at the next reclaim, not a slice from now: wake-ups that
            // serve nobody do not postpone the reclaim.
            let until = match deadline {
                Some(d) if d < next_reclaim => d,
                _ => next_reclaim,
            };
            match *entry {
                Some((e, w)) => {
                    wait::sleep(self.table.entry(e), w, until).at("wait", self.path())?;
                    if self.table.entry(e).load(Ordering::SeqCst) != w {
                        // Handed over: the entry holds our permit.
                        *entry = None;
                        return Ok(true);
                    }
                }
                None => {
                    bell.sleep(s, until).at("wait", self.path())?;
                    *woken = bell.rang_since(s);
                }
            }
            let now = Instant::now();
            reclaim = now >= next_reclaim;
            if reclaim {
                next_reclaim = now + WAITER_SLICE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::table::{MAX_HOLDERS, word, word_pid};
    use super::super::{Engine, Semaphore};
    use super::*;
    use crate::sys::ProcessId;

    fn table(s: &Semaphore) -> &Table {
        match &s.engine {
            Engine::Local(e) => &e.table,
        }
    }

    #[test]
    fn dead_slot_is_reclaimed_and_recycled_pid_is_not_mine() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        let t = table(&s);
        // A slot of a process that does not exist, and one with our PID but another
        // start time (a recycled PID): both are dead holders.
        t.high().store(2, Ordering::SeqCst);
        t.start(0).store(1, Ordering::SeqCst);
        t.owner(0).store(word(u32::MAX - 7, 1), Ordering::SeqCst);
        t.start(1)
            .store(t.me.start.wrapping_add(1), Ordering::SeqCst);
        t.owner(1).store(word(t.me.pid, 2), Ordering::SeqCst);
        assert_eq!(s.held().unwrap(), 0);
        let v = s.value().unwrap();
        if cfg!(all(target_os = "linux", not(feature = "force-portable"))) {
            assert_eq!(v, 3);
        } else {
            // Without start times the recycled PID looks alive.
            assert_eq!(v, 1);
        }
        assert_eq!(t.owner(0).load(Ordering::SeqCst), 0);
        assert!(s.try_acquire().unwrap());
        assert_eq!(s.held().unwrap(), 1);
    }

    #[test]
    fn full_table_is_a_clear_error() {
        let Some(init) = ProcessId::of_pid(1) else {
            return; // no process 1 to stand for a live holder
        };
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 1000).unwrap();
        let t = table(&s);
        t.high().store(MAX_HOLDERS as u32, Ordering::SeqCst);
        for i in 0..MAX_HOLDERS {
            t.start(i).store(init.start, Ordering::SeqCst);
            t.owner(i).store(word(1, 1), Ordering::SeqCst);
        }
        assert_eq!(s.value().unwrap(), 1000 - MAX_HOLDERS as u32);
        let e = s.try_acquire().unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("holder table full"), "{e}");
        // A slot freed by its holder is reused.
        t.owner(7).store(0, Ordering::SeqCst);
        assert!(s.try_acquire().unwrap());
        assert_eq!(word_pid(t.owner(7).load(Ordering::SeqCst)), t.me.pid);
    }

    /// A thread waiting in the same process gets the permit handed over; the permit
    /// then lives in its waiter entry and is accounted like any other.
    #[test]
    fn hand_off_to_a_waiting_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Semaphore::open(dir.path().join("s"), 1).unwrap());
        let t = table(&s);
        assert!(s.try_acquire().unwrap());
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.acquire_timeout(Duration::from_secs(10)).unwrap())
        };
        let t0 = Instant::now();
        while s.waiting() == 0 || t.oldest_waiting(None).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "waiter never queued"
            );
            std::thread::yield_now();
        }
        s.release().unwrap();
        assert!(waiter.join().unwrap());
        // The process holds one permit, in a waiter entry.
        assert_eq!(t.scan().mine_given, 1);
        assert_eq!((s.held().unwrap(), s.value().unwrap()), (1, 0));
        s.release().unwrap();
        assert_eq!((s.held().unwrap(), s.value().unwrap()), (0, 1));
        assert_eq!(t.scan().mine_given, 0);
    }

    /// A gift left half done by a dead gifter is cleared; one still in progress makes
    /// the critical section's count conservative (never more free permits than exist).
    #[test]
    fn stuck_gift_marks() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        let t = table(&s);
        t.gift()
            .store(u64::from(u32::MAX - 7) << 32, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 3);
        assert_eq!(t.gift().load(Ordering::SeqCst), 0);
        // A live "gifter" (ourselves) that never finishes.
        let tag = (u64::from(t.me.pid) << 32) | (t.me.start & 0xffff_ffff);
        t.gift().store(tag, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 2);
        t.gift().store(0, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 3);
    }
}
