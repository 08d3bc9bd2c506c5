//! Combining contended increments: a handle's `increment` publishes its request on the
//! board (`board`) and either waits for a combiner to apply it or, getting the writers'
//! lock, becomes the combiner and applies every pending request in one transaction,
//! noting the batch in doubt on the board and marking the rows it changes with the
//! batch's id, so that none is applied twice across crashes (`settle`). The argument
//! for exactly-once is in `board` and `docs/FORMAT.md`.

use rusqlite::Connection;

use super::board::{self, Applied};
use super::local::{Inner, LocalSharedData};
use super::settle::{Outcome, outcome, settle};
use super::sql::Ops;
use crate::error::{Error, IoResultExt, Result};
use crate::sys;
use crate::wait;

impl LocalSharedData {
    /// Publishes the increment on the board and waits until a combiner (possibly this
    /// thread) applied it; `None` if it must be done the ordinary way.
    pub(super) fn increment_combined(
        &self,
        inner: &mut Inner,
        key: &str,
        by: i64,
    ) -> Result<Option<i64>> {
        let slot = match inner.slot {
            Some(s) => s,
            None => match inner.board.claim(inner.me) {
                Some((s, board_seq)) => {
                    inner.slot = Some(s);
                    inner.seq = board_seq;
                    s
                }
                None => return Ok(None),
            },
        };
        inner.seq += 1;
        inner.board.publish(slot, inner.seq, key, by);
        let inner = &*inner;
        loop {
            let seen = inner.board.observe(slot);
            if let Some(done) = inner.board.take_done(slot) {
                return Ok(done.ok());
            }
            // A combiner that just finished a batch comes back for its own next
            // request within its lease and combines ours with it.
            if let Some(left) = inner.board.lease_left(slot) {
                if let Err(e) = inner.board.wait(slot, seen, Some(left)) {
                    return self.abandon(inner, slot, e);
                }
                continue;
            }
            let step = match sys::try_lock_exclusive(&inner.lock).at("lock", &self.lock_path) {
                Ok(true) => {
                    let mut finished = Vec::new();
                    let r = self.combine(inner, slot, &mut finished);
                    if r.is_ok() {
                        inner.board.renew_lease(slot);
                    }
                    // As for any writer, an unlock error is ignored (the kernel drops
                    // the lock with the descriptor at the latest).
                    let _ = sys::unlock(&inner.lock);
                    for &(s, sleeping) in &finished {
                        if sleeping {
                            inner.board.wake(s);
                        }
                    }
                    inner.board.kick(slot + 1);
                    if !finished.is_empty() {
                        // An owner sharing our CPU cannot see its result, nor publish
                        // its next request in time for our next batch, until we let it
                        // run.
                        let _ = wait::yield_cpu();
                    }
                    match r {
                        Ok(Some(done)) => return Ok(done.ok()),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Ok(false) => inner.board.wait(slot, seen, None),
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                return self.abandon(inner, slot, e);
            }
        }
    }

    /// After an error while a request is pending: settles it under the writers' lock
    /// (done: its result; else withdrawn), so that an increment reported as failed is
    /// never applied later, and reports it as applied if it was.
    ///
    /// A withdrawn request may still have been applied: our own combining noted it in
    /// its batch, and the commit took place though it reported an error, or failed
    /// after it. So the batch in doubt is settled first, which says whether it
    /// committed ours; only a request it did not commit returns `Err` (a caller's
    /// natural retry would otherwise count it twice).
    fn abandon(&self, inner: &Inner, slot: usize, e: Error) -> Result<Option<i64>> {
        sys::lock_exclusive(&inner.lock).at("lock", &self.lock_path)?;
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        let settled = settle(&ops, &inner.board, Some(slot));
        let done = match inner.board.take_done(slot) {
            Some(done) => Ok(Some(done)),
            None => {
                inner.board.withdraw(slot);
                settled
            }
        };
        let _ = sys::unlock(&inner.lock);
        inner.board.kick(slot + 1);
        match done {
            Ok(Some(Ok(v))) => Ok(Some(v)),
            // Refused or never applied: nothing was changed.
            Ok(Some(Err(_)) | None) => Err(e),
            // The rows cannot be read (the database itself fails): the outcome is
            // unknown; the failure to read says more than the first error.
            Err(read) => Err(read),
        }
    }

    /// Holding the writers' lock: applies every pending request on the board in one
    /// transaction, then marks the others' requests done, noting in `finished` each of
    /// their slots and whether its owner sleeps (to be woken once the lock is released).
    /// Returns the outcome of our own request (slot `own`) if it was pending.
    ///
    /// Before its commit the batch is noted in doubt on the board, each request's slot
    /// with its outcome, and every row it changes carries the batch's id, so that a
    /// writer after a combiner killed between its commit and the end of its marking
    /// finds out (`settle`) and never applies them twice. Our own request is withdrawn
    /// from the board before the commit, so after a crash nobody finds it pending.
    fn combine(
        &self,
        inner: &Inner,
        own: usize,
        finished: &mut Vec<(usize, bool)>,
    ) -> Result<Option<Outcome>> {
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        // Before anything is applied: not into a store no longer at the path (one
        // `lstat` per batch), and not before a batch a killed combiner left in doubt is
        // settled (it may hold our request or others').
        self.check_still_at_path()?;
        settle(&ops, &inner.board, None)?;
        let rollback = Rollback(&inner.conn);
        ops.exec("BEGIN IMMEDIATE")?;
        let mut seen = [false; board::SLOTS];
        let mut outcomes: Vec<(usize, Applied)> = Vec::new();
        // Current value of each key touched: `None` if it is not an integer.
        let mut values: Vec<(String, Option<i64>, bool)> = Vec::new();
        // Requests published while we work join the batch: they cost a statement or
        // two, the commit they would otherwise need costs far more.
        loop {
            let batch = inner.board.pending(&seen);
            if batch.is_empty() {
                break;
            }
            for r in batch {
                seen[r.slot] = true;
                if r.slot == own {
                    inner.board.withdraw(own);
                }
                let (result, status) = match r.key {
                    None => (0, board::STATUS_BAD_REQUEST),
                    Some(key) => {
                        let at = match values.iter().position(|v| v.0 == key) {
                            Some(at) => at,
                            None => {
                                let cur = match ops.get::<i64>(&key) {
                                    Ok(v) => Some(v.unwrap_or(0)),
                                    Err(Error::Value { .. }) => None,
                                    Err(e) => return Err(e),
                                };
                                values.push((key, cur, false));
                                values.len() - 1
                            }
                        };
                        let v = &mut values[at];
                        match v.1.map(|c| c.checked_add(r.delta)) {
                            None => (0, board::STATUS_NOT_INTEGER),
                            Some(None) => (0, board::STATUS_OVERFLOW),
                            Some(Some(n)) => {
                                v.1 = Some(n);
                                v.2 = true;
                                (n, board::STATUS_OK)
                            }
                        }
                    }
                };
                outcomes.push((r.slot, Applied { result, status }));
            }
        }
        if outcomes.is_empty() {
            return Ok(None);
        }
        let batch = inner.batch_ids.next();
        inner.board.set_in_doubt(batch);
        for &(slot, a) in &outcomes {
            inner.board.prepare(slot, batch, a);
        }
        let written = values
            .iter()
            .filter_map(|(key, cur, changed)| cur.filter(|_| *changed).map(|v| (key, v)))
            .try_for_each(|(key, v)| ops.put_in_batch(key, &v.to_string(), batch as i64))
            .and_then(|()| ops.exec("COMMIT").map(drop));
        if let Err(e) = written {
            drop(rollback);
            // An error may come after the commit frame was written: the rows say
            // whether the batch committed, and settling marks the others' requests.
            return match settle(&ops, &inner.board, Some(own)) {
                Ok(Some(mine)) => Ok(Some(mine)),
                _ => Err(e),
            };
        }
        let mut mine = None;
        for (slot, a) in outcomes {
            if slot == own {
                mine = Some(outcome(a));
            } else {
                finished.push((slot, inner.board.finish(slot, a)));
            }
        }
        inner.board.clear_in_doubt(batch);
        super::local::bound_wal(&inner.conn, &inner.wal);
        Ok(mine)
    }
}

/// Rolls back an open transaction on drop, also on error or unwinding.
struct Rollback<'a>(&'a Connection);

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::shared_data::SharedDataOptions;
    use crate::shared_data::board::Board;
    use crate::shared_data::open::sidecar;

    fn open(path: &Path) -> LocalSharedData {
        LocalSharedData::open(path, SharedDataOptions::default(), true).unwrap()
    }

    /// What a combiner killed after noting its batch in doubt leaves: request `slot`
    /// noted with result 15 (+5 on "k" = 10) and, if `commit`, key "k" set to 15 with the
    /// batch's mark, committed; the board still shows the request pending (or, for the
    /// owner's own combining, withdrawn).
    fn kill_combiner_in_doubt(path: &Path, board: &Board, slot: usize, commit: bool) {
        let batch = 0x5eed_0000_0000_0001u64;
        board.set_in_doubt(batch);
        board.prepare(
            slot,
            batch,
            Applied {
                result: 15,
                status: board::STATUS_OK,
            },
        );
        if commit {
            Connection::open(path)
                .unwrap()
                .execute(
                    "UPDATE kv SET value = '15', batch = ?1 WHERE key = 'k'",
                    [batch as i64],
                )
                .unwrap();
        }
    }

    /// An owner identity no process has (owner ids fit in 31 bits).
    fn ghost(n: u32) -> u64 {
        (u64::from((1 << 30) + n) << 32) | 1
    }

    /// A store with "k" = 10 and a request +5 on it published by a process since
    /// killed; the store, the board and the request's slot.
    fn dead_requester(path: &Path) -> (LocalSharedData, Board, usize) {
        let d = open(path);
        d.set("k", &10).unwrap();
        let board = Board::open(&sidecar(path, "-board"), 0o600).unwrap();
        let (slot, seq) = board.claim(ghost(0)).unwrap();
        board.publish(slot, seq + 1, "k", 5);
        (d, board, slot)
    }

    #[test]
    fn combiner_killed_after_commit_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (d, board, slot) = dead_requester(&path);
        // A combiner applied the request, committed, and was killed before marking it
        // done: the commit holds the change, the board still says pending.
        kill_combiner_in_doubt(&path, &board, slot, true);
        // The next combiner marks it done with the noted result, without applying it
        // again.
        assert_eq!(d.increment("k", 1).unwrap(), 16);
        assert_eq!(board.take_done(slot), Some(Ok(15)));
        assert_eq!(board.in_doubt(), 0);
        assert_eq!(d.get::<i64>("k").unwrap(), Some(16));
    }

    #[test]
    fn combiner_killed_before_commit_leaves_its_requests_to_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (d, board, slot) = dead_requester(&path);
        kill_combiner_in_doubt(&path, &board, slot, false);
        // Not committed: the next combiner applies it (with its own, in slot order).
        let mine = d.increment("k", 1).unwrap();
        assert_eq!(d.get::<i64>("k").unwrap(), Some(16));
        let theirs = board.take_done(slot).unwrap().unwrap();
        assert!(
            matches!((mine, theirs), (16, 15) | (11, 16)),
            "{mine} {theirs}"
        );
        assert_eq!(board.in_doubt(), 0);
    }

    #[test]
    fn plain_write_settles_a_batch_in_doubt_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (d, board, slot) = dead_requester(&path);
        kill_combiner_in_doubt(&path, &board, slot, true);
        // A delete takes the row and its mark: the batch is settled before, so the
        // request is done with its result and not applied again afterwards.
        assert!(d.delete("k").unwrap());
        assert_eq!(board.take_done(slot), Some(Ok(15)));
        assert_eq!(d.increment("k", 1).unwrap(), 1);
        assert_eq!(d.get::<i64>("k").unwrap(), Some(1));
    }

    #[test]
    fn own_request_applied_by_a_killed_combiner_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let d = open(&path);
        assert_eq!(d.increment("k", 10).unwrap(), 10); // claims a slot
        let mut guard = d.inner.lock().unwrap();
        let inner = guard.as_mut().unwrap();
        let slot = inner.slot.unwrap();
        inner.seq += 1;
        inner.board.publish(slot, inner.seq, "k", 5);
        // Another process's combiner read our request, applied it, committed, and was
        // killed before marking it done ...
        assert_eq!(inner.board.pending(&[false; board::SLOTS]).len(), 1);
        kill_combiner_in_doubt(&path, &inner.board, slot, true);
        // ... so when we combine, our own request is settled first, not applied again.
        let mut finished = Vec::new();
        assert_eq!(d.combine(inner, slot, &mut finished).unwrap(), None);
        assert_eq!(inner.board.take_done(slot), Some(Ok(15)));
        drop(guard);
        assert_eq!(d.get::<i64>("k").unwrap(), Some(15));
        assert_eq!(d.increment("k", 1).unwrap(), 16);
    }

    /// How our own increment ends when it must settle its request after an error: a
    /// handle's increment of "k" (10, then +5) is published and read by another
    /// process's combiner, which notes it in doubt, applies it, commits (k = 15, marked)
    /// and is killed before marking it done; then `fault` makes our own combining
    /// fail (it returns what must stay alive until our increment returned). The store is
    /// `dir/s`. Returns what our `increment("k", 5)` returned, and the store.
    fn own_request_applied_by_a_killed_combiner_then(
        dir: &Path,
        fault: impl FnOnce(&Path, &Board) -> Option<Connection>,
    ) -> (Result<i64>, LocalSharedData) {
        use std::sync::{Arc, mpsc};
        use std::time::{Duration, Instant};

        let path = dir.join("s");
        let d = Arc::new(open(&path));
        assert_eq!(d.increment("k", 10).unwrap(), 10); // claims a slot
        let slot = {
            let guard = d.inner.lock().unwrap();
            let inner = guard.as_ref().unwrap();
            // Our BEGIN IMMEDIATE gives up soon when a foreign writer holds SQLite's lock.
            inner.conn.busy_timeout(Duration::from_millis(50)).unwrap();
            inner.slot.unwrap()
        };
        let board = Board::open(&sidecar(&path, "-board"), 0o600).unwrap();
        // The other process's combiner holds the writers' lock ...
        let lock = std::fs::File::open(&d.lock_path).unwrap();
        sys::lock_exclusive(&lock).unwrap();
        let (tx, rx) = mpsc::channel();
        let owner = Arc::clone(&d);
        let t = std::thread::spawn(move || tx.send(owner.increment("k", 5)).unwrap());
        // ... reads our request once it is published ...
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut skip = [true; board::SLOTS];
            skip[slot] = false;
            if board.pending(&skip).pop().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "our request was never published");
            std::thread::sleep(Duration::from_millis(1));
        }
        // ... applies it, commits, and is killed before marking it done.
        kill_combiner_in_doubt(&path, &board, slot, true);
        let held = fault(&path, &board);
        sys::unlock(&lock).unwrap();
        board.kick(0);
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("our increment hung");
        t.join().unwrap();
        drop(held);
        (r, Arc::into_inner(d).unwrap())
    }

    #[test]
    fn own_request_applied_by_a_killed_combiner_is_reported_when_begin_fails() {
        // A program writing the store without fileipc holds SQLite's write lock past our
        // busy timeout: our combiner's BEGIN IMMEDIATE fails.
        let dir = tempfile::tempdir().unwrap();
        let (r, d) = own_request_applied_by_a_killed_combiner_then(dir.path(), |path, _| {
            let foreign = Connection::open(path).unwrap();
            foreign.execute_batch("BEGIN IMMEDIATE").unwrap();
            Some(foreign)
        });
        assert_eq!(
            r.as_ref().ok(),
            Some(&15),
            "an increment that was applied reported {r:?}"
        );
        // Counted once: a retry is not needed, and the next increment sees 15.
        assert_eq!(d.get::<i64>("k").unwrap(), Some(15));
        assert_eq!(d.increment("k", 1).unwrap(), 16);
    }

    #[test]
    fn own_request_applied_by_a_killed_combiner_is_reported_when_the_commit_fails() {
        // Another dead process left a request that our combiner applies in the same
        // transaction, and the write fails (as on a full disk; here a trigger refuses it)
        // after our own request was withdrawn from the board.
        let dir = tempfile::tempdir().unwrap();
        let (r, d) = own_request_applied_by_a_killed_combiner_then(dir.path(), |path, board| {
            let (slot, seq) = board.claim(ghost(1)).unwrap();
            board.publish(slot, seq + 1, "boom", 1);
            Connection::open(path)
                .unwrap()
                .execute_batch(
                    "CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = 'boom' \
                     BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
                )
                .unwrap();
            None
        });
        assert_eq!(
            r.as_ref().ok(),
            Some(&15),
            "an increment that was applied reported {r:?}"
        );
        // Counted once: a retry is not needed, and the next increment sees 15.
        d.write(false, |ops| ops.exec("DROP TRIGGER boom")).unwrap();
        assert_eq!(d.get::<i64>("k").unwrap(), Some(15));
        assert_eq!(d.increment("k", 1).unwrap(), 16);
    }

    /// A tmpfs mounted on a temporary directory, unmounted when dropped.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        /// Mounts a tmpfs of `size`; `None` (after a loud skip line) where that needs a
        /// root this process is not, unless `FILEIPC_REQUIRE_ROOT_TESTS` is set.
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path())
                .output();
            match out {
                Ok(o) if o.status.success() => Some(Tmpfs(dir)),
                r => {
                    let why = match r {
                        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                        Err(e) => e.to_string(),
                    };
                    assert!(
                        std::env::var_os("FILEIPC_REQUIRE_ROOT_TESTS").is_none(),
                        "FILEIPC_REQUIRE_ROOT_TESTS is set but a tmpfs cannot be mounted: {why}"
                    );
                    eprintln!("SKIPPED: needs root (to mount a tmpfs): {why}");
                    None
                }
            }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let umount = |lazy: bool| {
                let mut c = std::process::Command::new("umount");
                if lazy {
                    c.arg("-l");
                }
                matches!(c.arg(self.0.path()).status(), Ok(s) if s.success())
            };
            if !umount(false) {
                umount(true);
            }
        }
    }

    #[test]
    fn own_request_applied_by_a_killed_combiner_is_reported_on_a_full_disk() {
        use std::io::Write;

        let Some(fs) = Tmpfs::mount("1m") else {
            return;
        };
        let filler = fs.0.path().join("filler");
        // Another dead process left a request that our combiner applies in the same
        // transaction; the disk is full, so the commit fails after our own request was
        // withdrawn from the board.
        let (r, d) = own_request_applied_by_a_killed_combiner_then(fs.0.path(), |_, board| {
            let (slot, seq) = board.claim(ghost(1)).unwrap();
            board.publish(slot, seq + 1, "boom", 1);
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = [0xaau8; 4096];
            let e = loop {
                if let Err(e) = f.write_all(&block) {
                    break e;
                }
            };
            assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
            None
        });
        assert_eq!(
            r.as_ref().ok(),
            Some(&15),
            "an increment that was applied reported {r:?}"
        );
        // Counted once: a retry is not needed, and the next increment sees 15.
        std::fs::remove_file(&filler).unwrap();
        assert_eq!(d.get::<i64>("k").unwrap(), Some(15));
        assert_eq!(d.increment("k", 1).unwrap(), 16);
        drop(d);
    }

    #[test]
    fn dead_owners_requests_are_applied_and_their_slots_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let d = open(&path);
        let board = Board::open(&sidecar(&path, "-board"), 0o600).unwrap();
        // Dead processes hold every slot; one left a request pending.
        let mut pending = None;
        for n in 0..board::SLOTS as u32 {
            let (slot, seq) = board.claim(ghost(n)).unwrap();
            if n == 7 {
                board.publish(slot, seq + 1, "k", 2);
                pending = Some(slot);
            }
        }
        // Our increment reclaims a dead owner's idle slot and, combining, applies the
        // pending request too.
        d.increment("k", 1).unwrap();
        assert_eq!(d.get::<i64>("k").unwrap(), Some(3));
        let slot = pending.unwrap();
        assert!(matches!(board.take_done(slot), Some(Ok(2 | 3))));
        assert!(d.inner.lock().unwrap().as_ref().unwrap().slot.is_some());
    }
}
