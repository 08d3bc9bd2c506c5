//! The local engine of the semaphore: a semaphore file on the local file system, the
//! critical section on it, the acquire and release paths, and waiting.
//!
//! The table protocol (holders, waiter entries, gifts) is in `table.rs`. Taking a permit
//! happens in a short critical section under a robust lock on a word of the file
//! (`robust.rs`: the holder's owner id in the word, one compare-and-swap to enter, a dead
//! holder's lock taken over); returning one takes no lock. The lock word names a thread,
//! so it excludes the threads sharing a handle as well as other handles and processes.
//!
//! A process stopped (`SIGSTOP`, a debugger) inside the critical section holds each
//! caller only as long as its bound ([`LocalSemaphore::critical`]): `acquire_timeout` and
//! `acquire_deadline` their deadline, `try_acquire` and `value` [`CRITICAL_PATIENCE`]
//! (10 ms). Only a signalling `release` (one by a process holding no permit) and
//! `detach`, which have no deadline, wait for it without limit. A process killed inside
//! it leaves the table consistent (every change is one store); the next caller takes the
//! lock over and first reclaims the dead holders' records.
//!
//! Waiters sleep in bounded slices of [`WAITER_SLICE`] (10 ms), on their waiter entry,
//! or on the futex doorbell ([`wait::CountedBell`]) rung by releases if the entry table
//! is full. A dead holder cannot release, so every slice a waiter checks the holders'
//! liveness and reclaims the permits of dead ones (and of dead waiters' entries),
//! handing them on: a killed holder's permits come back within about one slice. The
//! proof that no wake-up is lost is on [`LocalSemaphore::wait_loop`].

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::SemaphoreHolder;
use super::options::Capacity;
use super::table::{Gift, Table, value_of, word_held};
use crate::error::{Error, IoResultExt, Result};
use crate::robust::{Acquired, Held, RobustLock};
use crate::sys;
use crate::wait::{self, CountedBell, WAITER_SLICE};

/// How long an operation without a deadline of its own waits to enter the critical
/// section: [`try_acquire`](super::Semaphore::try_acquire) (then `false`),
/// [`value`](super::Semaphore::value) (then the value read without it), and the wake-up
/// after a permit went back to the pool (then left to the waiters' slices). The critical
/// section lasts microseconds: a process inside it for this long is stopped, or was
/// descheduled for as long.
pub(super) const CRITICAL_PATIENCE: Duration = WAITER_SLICE;

/// How long a caller waits: to enter the critical section, and in the `acquire`
/// family for a permit.
#[derive(Debug, Clone, Copy)]
pub(super) enum Patience {
    /// This long from the first moment the caller has to wait (the critical section
    /// taken, or no permit free): the clock is read only then, and later waits by the
    /// same operation share that deadline. A duration too large to represent: forever.
    For(Duration),
    /// Until this instant (`None`: without limit).
    Until(Option<Instant>),
}

impl Patience {
    /// The deadline, fixed at the first call.
    pub(super) fn deadline(&mut self) -> Option<Instant> {
        match *self {
            Patience::For(d) => {
                let until = crate::deadline_after(d);
                *self = Patience::Until(until);
                until
            }
            Patience::Until(until) => until,
        }
    }
}

/// A [`Semaphore`](super::Semaphore) handle's engine: its file, mapped.
#[derive(Debug)]
pub(super) struct LocalSemaphore {
    table: Table,
    mode: u32,
    /// The [`sys::fork_epoch`] of the process that opened the handle. A child forked
    /// without `exec` shares the handle's owner id with the parent: it must open the
    /// semaphore again.
    epoch: u64,
}

/// The owners of semaphore files whose handles were all dropped while this process held
/// permits there: permits belong to the process, so its id must stay alive as long as
/// it runs.
static KEPT: std::sync::Mutex<Vec<std::sync::Arc<crate::owner::Owners>>> =
    std::sync::Mutex::new(Vec::new());

impl Drop for LocalSemaphore {
    fn drop(&mut self) {
        if self.epoch != sys::fork_epoch() {
            return;
        }
        self.table.free_idle_slot();
        let scan = self.table.scan();
        if scan.mine.is_some() || scan.mine_given > 0 {
            let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
            if !kept
                .iter()
                .any(|o| std::sync::Arc::ptr_eq(o, &self.table.owners))
            {
                kept.push(self.table.owners.clone());
            }
        }
    }
}

impl LocalSemaphore {
    /// Refuses a handle inherited across `fork`: its lock and its owner id are the
    /// parent's.
    #[inline]
    fn check_fork(&self) -> Result<()> {
        crate::owner::check_not_forked(self.epoch, self.path(), "semaphore")
    }

    /// [`Semaphore::capacity`](super::Semaphore::capacity).
    pub(super) fn capacity(&self) -> u32 {
        self.table.capacity().load(Ordering::SeqCst)
    }

    /// [`Semaphore::share_with_children`](super::Semaphore::share_with_children).
    pub(super) fn share_with_children(&self) -> Result<i32> {
        self.check_fork()?;
        self.table.owners.inherit()
    }

    /// Opens the semaphore file at `path`, creating it with `mode` and `initial` permits
    /// if it is missing; an existing one whose capacity is not `initial` is refused.
    /// `None`: any capacity (the caller refuses creation, see `state::without_creating`).
    pub(super) fn open(path: &Path, mode: u32, asked: Capacity) -> Result<LocalSemaphore> {
        let initial = match asked {
            Capacity::Exactly(n) => n,
            Capacity::Default => 1,
            Capacity::Existing => 0,
        };
        let table = Table::open(path, mode, initial)?;
        let capacity = table.capacity().load(Ordering::SeqCst);
        if let Capacity::Exactly(initial) = asked
            && initial != capacity
        {
            return Err(Error::invalid(
                path,
                format!(
                    "the semaphore exists with capacity {capacity}, not the {initial} asked for \
                     (remove it to start over, or open it without a capacity)"
                ),
            ));
        }
        Ok(LocalSemaphore {
            table,
            mode,
            epoch: sys::fork_epoch(),
        })
    }

    /// A new handle on the same path, opened with the same mode.
    pub(super) fn try_clone(&self) -> Result<LocalSemaphore> {
        crate::state::without_creating(|| {
            LocalSemaphore::open(&self.table.state.path, self.mode, Capacity::Existing)
        })
    }

    /// [`Semaphore::destroy`](super::Semaphore::destroy).
    pub(super) fn destroy(&self) -> Result<()> {
        crate::state::remove_if_same(&self.table.state.path, &self.table.state.file).map(drop)
    }

    /// [`Semaphore::path`](super::Semaphore::path).
    pub(super) fn path(&self) -> &Path {
        &self.table.state.path
    }

    /// [`Semaphore::try_acquire`](super::Semaphore::try_acquire): `false` also if the
    /// critical section stayed taken for [`CRITICAL_PATIENCE`].
    /// The fence of the permit taken, `None` if none was.
    pub(super) fn try_acquire(&self) -> Result<Option<u64>> {
        self.check_fork()?;
        let mut patience = Patience::For(CRITICAL_PATIENCE);
        let took = match self.take(false, &mut patience)? {
            Some(true) => true,
            Some(false) => self.take(true, &mut patience)? == Some(true),
            None => false,
        };
        Ok(took.then(|| self.next_fence()))
    }

    /// The fence of a permit just taken: one `fetch_add` on the counter, seeded at
    /// creation from the wall clock.
    fn next_fence(&self) -> u64 {
        self.table
            .fence()
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1)
    }

    /// The last fence granted on this file.
    pub(super) fn last_granted_fence(&self) -> u64 {
        self.table.fence().load(Ordering::SeqCst)
    }

    /// [`Semaphore::release`](super::Semaphore::release).
    pub(super) fn release(&self) -> Result<()> {
        self.check_fork()?;
        // Fast path, no lock: hand the permit straight to the longest waiter, or return
        // it from this process's records.
        if self.table.waiters().load(Ordering::SeqCst) > 0 {
            match self.table.give() {
                Gift::Given => return Ok(()),
                Gift::Returned => {
                    self.wake_returned();
                    return Ok(());
                }
                Gift::NotHeld => {}
            }
        } else if self.table.return_own()? {
            self.wake_returned();
            return Ok(());
        }
        let given = self.critical_forever(|| {
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
            // In the critical section, so every waiting entry was served: only sleepers
            // on the doorbell (entry table full) may need waking.
            self.ring(1);
        }
        Ok(())
    }

    /// [`Semaphore::detach`](super::Semaphore::detach).
    pub(super) fn detach(&self) -> Result<bool> {
        self.check_fork()?;
        self.critical_forever(|| {
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

    /// [`Semaphore::value`](super::Semaphore::value): if the critical section stays
    /// taken for [`CRITICAL_PATIENCE`], the value read without it, dead holders' permits
    /// counted free (see [`Table::value_unlocked`]).
    pub(super) fn value(&self) -> Result<u32> {
        self.check_fork()?;
        let inside = self.critical(&mut Patience::For(CRITICAL_PATIENCE), || {
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
        let Some((reclaimed, value)) = inside else {
            return Ok(self.table.value_unlocked());
        };
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        Ok(value)
    }

    /// [`Semaphore::held`](super::Semaphore::held).
    pub(super) fn held(&self) -> Result<u32> {
        self.check_fork()?;
        let scan = self.table.scan();
        Ok(scan
            .mine
            .map_or(0, |(_, w)| word_held(w))
            .saturating_add(scan.mine_given))
    }

    /// [`Semaphore::waiting`](super::Semaphore::waiting).
    pub(super) fn waiting(&self) -> u32 {
        self.table.live_waiting()
    }

    /// Takes a permit, waiting as long as `patience` allows; its fence, or `None` if
    /// none became free.
    #[inline]
    pub(super) fn acquire(&self, mut patience: Patience) -> Result<Option<u64>> {
        self.check_fork()?;
        let got = match self.take(false, &mut patience)? {
            Some(true) => true,
            Some(false) => self.wait_for_permit(patience.deadline())?,
            // The critical section stayed taken until the deadline.
            None => false,
        };
        Ok(got.then(|| self.next_fence()))
    }

    /// The waiting side of [`acquire`](Self::acquire), after the first attempt found no
    /// permit: waits until `deadline` (`None`: without limit).
    #[cold]
    fn wait_for_permit(&self, deadline: Option<Instant>) -> Result<bool> {
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

    /// Runs `f` in the critical section: under the robust lock on the file's lock word
    /// ([`Table::lock`]), which names the calling thread, so it excludes this handle's
    /// other threads as well as other handles and processes. `None` (and `f` not run) if
    /// it could not be entered within `patience`.
    ///
    /// The uncontended path is one compare-and-swap to enter and one swap to leave; it
    /// makes no system call and reads no clock. See [`critical_slow`](Self::critical_slow)
    /// for the rest.
    #[inline]
    fn critical<T>(
        &self,
        patience: &mut Patience,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<Option<T>> {
        let lock = self.table.lock();
        if !lock.try_lock_free()? {
            return self.critical_slow(lock, patience, f);
        }
        let held = Held(lock);
        let r = f();
        drop(held);
        r.map(Some)
    }

    /// [`critical`](Self::critical) when the lock was taken: the caller spins briefly,
    /// then sleeps on the word (woken by the unlock) in slices, until its deadline. A
    /// live holder is never robbed, however long it stays (stopped, traced). A holder
    /// found dead (its owner id, `owner.rs`) is taken over; the caller then first
    /// reclaims the dead processes' records ([`Table::reclaim_dead`]) and gives their
    /// permits to waiting entries, and rings the doorbell after leaving. Nothing else
    /// needs repair: every change the dead holder made was one store that left the table
    /// consistent (docs/FORMAT.md, "Crash consistency").
    #[cold]
    fn critical_slow<T>(
        &self,
        lock: RobustLock<'_>,
        patience: &mut Patience,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(how) = lock.lock(patience.deadline())? else {
            return Ok(None);
        };
        let held = Held(lock);
        let mut reclaimed = 0;
        if how == Acquired::TakenOver {
            reclaimed = self.table.reclaim_dead();
            if reclaimed > 0 {
                self.table.distribute();
            }
        }
        let r = f();
        drop(held);
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        r.map(Some)
    }

    /// [`critical`](Self::critical) without a deadline, for the operations that have
    /// none.
    fn critical_forever<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.critical(&mut Patience::Until(None), f)? {
            Some(v) => Ok(v),
            None => unreachable!("the critical section is waited for without limit"),
        }
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
    ///
    /// With nobody registered it changes nothing (no atomic add on the shared line): a
    /// waiter registers before it reads the doorbell and looks at the table, so one that
    /// registers after this (sequentially consistent) load sees the change being
    /// announced, which the caller made before calling.
    #[inline]
    fn ring(&self, n: u32) -> bool {
        if self.table.waiters().load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.bell().ring(n).is_some()
    }

    /// After a permit went back to the pool outside the critical section (a release
    /// that found no waiting entry to hand it to): makes sure no waiter sleeps with it
    /// free. See [`wait_loop`](Self::wait_loop) for the argument.
    ///
    /// Rings the doorbell (for waiters without an entry); then, if a waiting entry
    /// exists, gives the free permits to waiting entries in the critical section
    /// ([`Table::distribute`]), which changes the words their waiters sleep on. A waiter
    /// that scanned the table before our return has published its entry before that scan,
    /// so it is among them. If the critical section stays taken for
    /// [`CRITICAL_PATIENCE`] (a process stopped inside it, which keeps any waiter from
    /// taking the permit anyway), the oldest entry's sleeper is woken instead and the
    /// waiters' slices do the rest.
    ///
    /// Reports no error: the permit is returned already, and a caller told the release
    /// failed might release again.
    fn wake_returned(&self) {
        // A waiter registers before it claims an entry and looks at the value: if
        // nobody is registered after our return, any later waiter sees the permit.
        if !self.ring(1) || self.table.oldest_waiting(None).is_none() {
            return;
        }
        let served = self.critical(&mut Patience::For(CRITICAL_PATIENCE), || {
            Ok(self.table.distribute())
        });
        if !matches!(served, Ok(Some(_)))
            && let Some((e, _)) = self.table.oldest_waiting(None)
        {
            let _ = wait::wake(self.table.entry(e), 1);
        }
    }

    /// One attempt to take a permit in the critical section; with `reclaim`, first
    /// returns the permits of dead holders (and wakes waiters if there were any).
    /// `None` if the critical section could not be entered within `patience`.
    fn take(&self, reclaim: bool, patience: &mut Patience) -> Result<Option<bool>> {
        let inside = self.critical(patience, || {
            if !reclaim && let Some(got) = self.table.take_quick() {
                return Ok((got, 0));
            }
            let reclaimed = if reclaim {
                self.table.reclaim_dead()
            } else {
                0
            };
            let got = self.table.take_locked(&mut None)?;
            if reclaimed > 0 {
                self.table.distribute();
            }
            Ok((got, reclaimed))
        })?;
        let Some((got, reclaimed)) = inside else {
            return Ok(None);
        };
        if reclaimed > 0 {
            self.ring(u32::MAX);
        }
        Ok(Some(got))
    }

    /// The waiting side.
    ///
    /// A waiter claims a *waiter entry* (in the critical section, before it looks at
    /// the value) and sleeps on the entry's word; a releaser that holds a permit hands it
    /// over by marking the oldest waiting entry given and wakes that thread alone, which
    /// then returns without entering the critical section. Other permits (signalling
    /// releases, reclaimed ones, and permits a release put back in the pool) are given
    /// to entries in the critical section. A waiter that found the entry table full
    /// sleeps on the doorbell `seq` instead.
    ///
    /// No waiter sleeps with a permit free. The waiter (1) registers (`waiters += 1`),
    /// then in each round (2) reads `seq` as `s`, (3) in the critical section stores its
    /// entry as waiting and scans the table, finding the value 0, and (4) sleeps only
    /// while its entry word (without an entry: `seq`) is unchanged; the kernel compares
    /// atomically with queueing the sleeper. A permit becomes free in one of three ways,
    /// and each changes the word of every waiter that could have missed it:
    ///
    /// - *A gift* ([`Table::give`]): the releaser marks the oldest waiting entry given
    ///   (that waiter's word) and wakes it. The permit is never free.
    /// - *In the critical section* (a signalling release, a reclaim, a waiter returning
    ///   a permit it got twice): serialised with (3). A waiter whose round came earlier
    ///   has its entry stored, and the critical section gives free permits to waiting
    ///   entries ([`Table::distribute`]: their words) and then rings `seq`; a later round
    ///   sees the permit.
    /// - *A return to the pool without the lock* (a release that found no waiting entry
    ///   to give it to, [`wake_returned`](Self::wake_returned)): the releaser (a) returns
    ///   the permit, (b) reads `waiters` and, if a waiter is registered, increments
    ///   `seq` and wakes a sleeper on it, (c) reads the entries and, if one is waiting,
    ///   (d) gives the free permits to waiting entries in the critical section. If (3)'s scan came before (a), the
    ///   waiter stored its entry before the scan, so before (a): (c) sees it (unless it
    ///   changed already: given, or withdrawn), and (d), which waits for the waiter to
    ///   leave the critical section, changes its word. A waiter without an entry read
    ///   `s` before (3); if it registered before (b)'s read, (b) increments `seq` after
    ///   it read `s`, and its sleep is refused or woken by (b). If (b) finds
    ///   nobody registered, or (c) no waiting entry, every waiter registered or stored
    ///   its entry after (a), so its scan sees the permit.
    ///
    /// All these accesses are sequentially consistent. ((c) must change the entry's word,
    /// not only wake its futex: a waiter between (3) and (4) would otherwise sleep its
    /// whole slice with the permit free.) What remains is bounded by the
    /// slice: a dead holder cannot release, a releaser killed or stopped between (a) and
    /// (d) cannot serve anyone, and one that could not enter the critical section for
    /// [`CRITICAL_PATIENCE`] only wakes the oldest entry; every [`WAITER_SLICE`] each
    /// waiter retries and reclaims dead holders' records.
    ///
    /// The critical section is waited for until the next reclaim or the deadline; a
    /// waiter that could not enter it by then (a process stopped inside) checks whether
    /// a permit was handed to its entry meanwhile, and otherwise starts its next round.
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
            // The sleep ends at the next reclaim, not a slice from now: wake-ups that
            // serve nobody do not postpone the reclaim.
            let until = match deadline {
                Some(d) if d < next_reclaim => d,
                _ => next_reclaim,
            };
            let s = bell.seen();
            let inside = self.critical(&mut Patience::Until(Some(until)), || {
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
                // Taken into our own entry (every slot taken by others), `entry` is
                // `None` afterwards: the entry holds the permit and is not left below.
                if !self.table.take_locked(entry)? {
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
            match inside {
                Some((got, reclaimed, extra)) => {
                    if reclaimed > 0 {
                        self.ring(u32::MAX);
                    } else if extra {
                        // No entry was waiting in the critical section: only sleepers
                        // on the doorbell may need waking.
                        self.ring(1);
                    }
                    if got {
                        return Ok(true);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(false);
                    }
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
                }
                None => {
                    // The critical section stayed taken until `until`.
                    if let Some((e, w)) = *entry
                        && self.table.entry(e).load(Ordering::SeqCst) != w
                    {
                        *entry = None;
                        return Ok(true);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(false);
                    }
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

    use super::super::table::{MAX_HOLDERS, MAX_WAITS, word, word_id};
    use super::super::{Engine, Semaphore};
    use super::*;
    use crate::owner::LOCK_BASE;

    fn table(s: &Semaphore) -> &Table {
        match &s.engine {
            Engine::Local(e) => &e.table,
            #[cfg(feature = "redis")]
            Engine::Redis(_) => unreachable!("a local test opened a path"),
        }
    }

    #[test]
    fn dead_slots_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        let t = table(&s);
        // A slot naming no possible owner id, and one naming an id nobody holds (never
        // handed out, or its owner gone): both are dead holders, whatever their PIDs.
        t.high().store(2, Ordering::SeqCst);
        t.holder_pid(0).store(1, Ordering::SeqCst);
        t.owner(0).store(word(u32::MAX - 7, 1), Ordering::SeqCst);
        t.holder_pid(1)
            .store(u64::from(std::process::id()), Ordering::SeqCst);
        t.owner(1).store(word(t.me + 1000, 2), Ordering::SeqCst);
        assert_eq!(s.held().unwrap(), 0);
        assert_eq!(s.value().unwrap(), 3);
        assert_eq!(t.owner(0).load(Ordering::SeqCst), 0);
        assert!(s.try_acquire().unwrap());
        assert_eq!(s.held().unwrap(), 1);
    }

    /// The value read without the critical section counts a dead holder's permits as
    /// free and reclaims nothing.
    #[test]
    fn value_unlocked_counts_dead_holders_free() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        let t = table(&s);
        assert!(s.try_acquire().unwrap());
        t.high().store(2, Ordering::SeqCst);
        t.holder_pid(1).store(1, Ordering::SeqCst);
        t.owner(1).store(word(u32::MAX - 7, 1), Ordering::SeqCst);
        assert_eq!(t.value_unlocked(), 2);
        assert_ne!(t.owner(1).load(Ordering::SeqCst), 0);
        assert_eq!(s.value().unwrap(), 2);
        assert_eq!(t.owner(1).load(Ordering::SeqCst), 0);
    }

    /// With every slot of the holder table taken by other (live) processes, a permit
    /// that is free is still taken: recorded in a waiter entry marked given. With every
    /// entry taken too, `try_acquire` says `false` and `acquire` waits (no "table full"
    /// error) until a record frees, then takes the permit.
    #[test]
    fn a_full_holder_table_never_refuses_a_free_permit() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Semaphore::open(dir.path().join("s"), 1000).unwrap());
        let t = table(&s);
        // A live owner that is not this process: an id whose byte another open file
        // description holds locked.
        let other = crate::sys::reopen(&t.state.file, &t.state.path).unwrap();
        let live = 0x4000_0000;
        assert!(crate::sys::try_lock_byte(&other, LOCK_BASE + u64::from(live)).unwrap());
        t.high().store(MAX_HOLDERS as u32, Ordering::SeqCst);
        for i in 0..MAX_HOLDERS {
            t.owner(i).store(word(live, 1), Ordering::SeqCst);
        }
        assert_eq!(s.value().unwrap(), 1000 - MAX_HOLDERS as u32);
        assert!(s.try_acquire().unwrap());
        assert!(s.acquire_timeout(Duration::from_millis(100)).unwrap());
        assert_eq!((t.scan().mine, t.scan().mine_given), (None, 2));
        assert_eq!(s.held().unwrap(), 2);
        assert_eq!(s.value().unwrap(), 1000 - MAX_HOLDERS as u32 - 2);
        s.release().unwrap();
        assert_eq!(s.held().unwrap(), 1);

        // Every entry taken as well: a permit of the other process in each.
        let high = t.whigh().load(Ordering::SeqCst) as usize;
        for e in 0..MAX_WAITS {
            if e >= high || t.entry(e).load(Ordering::SeqCst) & 3 == 0 {
                t.entry_owner(e).store(live, Ordering::SeqCst);
                t.entry(e).store(2, Ordering::SeqCst);
            }
        }
        t.whigh().store(MAX_WAITS as u32, Ordering::SeqCst);
        assert!(!s.try_acquire().unwrap());
        assert!(!s.acquire_timeout(Duration::from_millis(30)).unwrap());
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.acquire_timeout(Duration::from_secs(10)))
        };
        let t0 = Instant::now();
        while s.waiting() == 0 && t.waiters().load(Ordering::SeqCst) == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "waiter never waited"
            );
            std::thread::yield_now();
        }
        // The other process returns the permit of slot 7: the slot is free again.
        t.owner(7).store(0, Ordering::SeqCst);
        assert!(waiter.join().unwrap().unwrap());
        assert_eq!(word_id(t.owner(7).load(Ordering::SeqCst)), t.me);
        assert_eq!(s.held().unwrap(), 2);
    }

    /// A process keeps its slot, idle, after returning its last permit (its next take
    /// is one compare-and-swap of its word); with every slot in use, a taker without a
    /// slot takes another live process's idle one rather than a waiter entry.
    #[test]
    fn idle_slots_are_kept_and_taken_when_the_table_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = Semaphore::open(dir.path().join("s"), 3).unwrap();
        let t = table(&s);
        assert!(s.try_acquire().unwrap());
        s.release().unwrap();
        assert_eq!(t.owner(0).load(Ordering::SeqCst), word(t.me, 0));
        assert_eq!((s.held().unwrap(), s.value().unwrap()), (0, 3));

        let other = crate::sys::reopen(&t.state.file, &t.state.path).unwrap();
        let live = 0x4000_0000;
        assert!(crate::sys::try_lock_byte(&other, LOCK_BASE + u64::from(live)).unwrap());
        t.high().store(MAX_HOLDERS as u32, Ordering::SeqCst);
        for i in 0..MAX_HOLDERS {
            let held = if i == 5 { 0 } else { 1 };
            t.owner(i)
                .store(word(live + i as u32 % 2, held), Ordering::SeqCst);
        }
        assert!(crate::sys::try_lock_byte(&other, LOCK_BASE + u64::from(live + 1)).unwrap());
        assert_eq!(s.value().unwrap(), 0);
        t.capacity().store(1000, Ordering::SeqCst);
        assert!(s.try_acquire().unwrap());
        assert_eq!(t.owner(5).load(Ordering::SeqCst), word(t.me, 1));
        assert_eq!((t.scan().mine_given, s.held().unwrap()), (0, 1));
    }

    /// A dropped handle frees its process's idle slot; a dead process's idle slot is
    /// reused by the next process that claims one, rather than raising `high`.
    #[test]
    fn idle_slots_are_freed_on_drop_and_dead_ones_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let s = Semaphore::open(&path, 3).unwrap();
            assert!(s.try_acquire().unwrap());
            s.release().unwrap();
            assert_eq!(word_held(table(&s).owner(0).load(Ordering::SeqCst)), 0);
        }
        let s = Semaphore::open(&path, 3).unwrap();
        let t = table(&s);
        assert_eq!(
            t.owner(0).load(Ordering::SeqCst),
            0,
            "the idle slot was kept"
        );

        let other = crate::sys::reopen(&t.state.file, &t.state.path).unwrap();
        let live = 0x4000_0000;
        assert!(crate::sys::try_lock_byte(&other, LOCK_BASE + u64::from(live)).unwrap());
        t.owner(0).store(word(u32::MAX - 7, 0), Ordering::SeqCst);
        t.owner(1).store(word(live, 1), Ordering::SeqCst);
        t.high().store(2, Ordering::SeqCst);
        assert!(s.try_acquire().unwrap());
        assert_eq!(t.owner(0).load(Ordering::SeqCst), word(t.me, 1));
        assert_eq!(t.high().load(Ordering::SeqCst), 2);
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
        let tag = (u64::from(t.me) << 32) | 1;
        t.gift().store(tag, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 2);
        t.gift().store(0, Ordering::SeqCst);
        assert_eq!(s.value().unwrap(), 3);
    }
}
