//! Combining contended increments: a handle's `increment` publishes its request on the
//! board (`board`) and either waits for a combiner to apply it or, getting the writers'
//! lock, becomes the combiner and applies every pending request in one transaction,
//! recording the others' outcomes in `fileipc_applied` so that none is applied twice
//! across crashes. The argument for exactly-once is in `board` and `docs/FORMAT.md`.

use rusqlite::Connection;

use super::board::{self, Applied};
use super::local::{Inner, LocalSharedData};
use super::sql::Ops;
use crate::error::{Error, IoResultExt, Result};
use crate::sys;
use crate::wait;

/// The outcome of a combined request: the new value, or a refusal status.
type Outcome = std::result::Result<i64, u32>;

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
            None => match self.claim_slot(inner)? {
                Some(s) => s,
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
                        wait::yield_cpu();
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

    /// Claims a slot on the board for this handle; `None` if none is free.
    fn claim_slot(&self, inner: &mut Inner) -> Result<Option<usize>> {
        let Some((slot, board_seq)) = inner.board.claim(inner.me) else {
            return Ok(None);
        };
        // The record cannot move for a slot no request is pending in; continuing from
        // it keeps the slot's sequence numbers above every recorded one. (A recreated
        // board has its own record row: `Board::record_row`.)
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        match ops.load_record(inner.board.record_row()) {
            Ok(rec) => {
                inner.slot = Some(slot);
                inner.seq = board_seq.max(Applied::read(&rec, slot).seq);
                Ok(Some(slot))
            }
            Err(e) => {
                inner.board.release(slot, inner.me);
                Err(e)
            }
        }
    }

    /// After an error while a request is pending: settles it under the writers' lock
    /// (done: its result; else withdrawn), so that an increment reported as failed is
    /// never applied later, and reports it as applied if it was.
    ///
    /// A withdrawn request may still have been applied: another process's combiner read
    /// it, committed it with its record entry, and was killed before marking it done
    /// (our own combining, which would have found it in the record, is what failed).
    /// So the record decides: only a request it does not hold returns `Err` (a caller's
    /// natural retry would otherwise count it twice).
    fn abandon(&self, inner: &Inner, slot: usize, e: Error) -> Result<Option<i64>> {
        sys::lock_exclusive(&inner.lock).at("lock", &self.lock_path)?;
        let done = match inner.board.take_done(slot) {
            Some(done) => Ok(Some(done)),
            None => {
                inner.board.withdraw(slot);
                // Read under the lock: no combiner is between its commit and its
                // marking, and none will read the request again.
                self.recorded_outcome(inner, slot)
            }
        };
        let _ = sys::unlock(&inner.lock);
        inner.board.kick(slot + 1);
        match done {
            Ok(Some(Ok(v))) => Ok(Some(v)),
            // Refused or never applied: nothing was changed.
            Ok(Some(Err(_)) | None) => Err(e),
            // The record cannot be read (the database itself fails): the outcome is
            // unknown; the failure to read says more than the first error.
            Err(read) => Err(read),
        }
    }

    /// The outcome of our latest request (slot `slot`) if a combiner of another process
    /// applied it and recorded it in `fileipc_applied`; `None` if it did not.
    fn recorded_outcome(&self, inner: &Inner, slot: usize) -> Result<Option<Outcome>> {
        let ops = Ops {
            conn: &inner.conn,
            path: &self.path,
        };
        let entry = Applied::read(&ops.load_record(inner.board.record_row())?, slot);
        // Sequence numbers of a slot only grow and ours is its latest: an entry holding
        // it is our request's.
        Ok(
            (entry.seq == inner.seq).then_some(if entry.status == board::STATUS_OK {
                Ok(entry.result)
            } else {
                Err(entry.status)
            }),
        )
    }

    /// Holding the writers' lock: applies every pending request on the board in one
    /// transaction, then marks the others' requests done, noting in `finished` each of
    /// their slots and whether its owner sleeps (to be woken once the lock is released).
    /// Returns the outcome of our own request (slot `own`) if it was pending.
    ///
    /// Others' requests are recorded in `fileipc_applied` in the same transaction (so a
    /// combiner killed between commit and marking never makes its successor apply them
    /// twice). Our own needs no record: it is withdrawn from the board before the
    /// commit, so after a crash nobody finds it pending.
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
        // `lstat` per batch).
        self.check_still_at_path()?;
        let _rollback = Rollback(&inner.conn);
        ops.exec("BEGIN IMMEDIATE")?;
        let mut seen = [false; board::SLOTS];
        let mut record: Option<Vec<u8>> = None;
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
                // A request another combiner read may be in its commit already: look it
                // up in the record (always for others' requests, whose owners count on
                // it; for our own only then).
                if r.slot != own || r.taken {
                    let record = match &mut record {
                        Some(rec) => rec,
                        None => record.insert(ops.load_record(inner.board.record_row())?),
                    };
                    let prev = Applied::read(record, r.slot);
                    if r.seq <= prev.seq {
                        // Applied by a combiner that died before marking it done
                        // (equal), or older than the record (damage; a recreated board
                        // has its own row): never apply twice.
                        let status = if r.seq == prev.seq {
                            prev.status
                        } else {
                            board::STATUS_BAD_REQUEST
                        };
                        outcomes.push((r.slot, Applied { status, ..prev }));
                        continue;
                    }
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
                outcomes.push((
                    r.slot,
                    Applied {
                        seq: r.seq,
                        result,
                        status,
                    },
                ));
            }
        }
        if outcomes.is_empty() {
            return Ok(None);
        }
        for (key, cur, changed) in &values {
            if let (Some(v), true) = (cur, changed) {
                ops.put(key, &v.to_string())?;
            }
        }
        if let Some(record) = &mut record
            && outcomes.iter().any(|(slot, _)| *slot != own)
        {
            for (slot, a) in &outcomes {
                if *slot != own {
                    a.write(record, *slot);
                }
            }
            ops.store_record(inner.board.record_row(), record)?;
        }
        ops.exec("COMMIT")?;
        super::local::bound_wal(&inner.conn, &inner.wal);
        let mut mine = None;
        for (slot, a) in outcomes {
            if slot == own {
                mine = Some(if a.status == board::STATUS_OK {
                    Ok(a.result)
                } else {
                    Err(a.status)
                });
            } else {
                finished.push((slot, inner.board.finish(slot, a)));
            }
        }
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

    /// What a combiner killed after its commit leaves: key "k" set to 15 and the
    /// record saying request `seq` of `slot` was applied with result 15, committed in one
    /// transaction, while the board still shows the request pending.
    fn commit_as_killed_combiner(path: &Path, slot: usize, seq: u64) {
        let mut rec = Vec::new();
        Applied {
            seq,
            result: 15,
            status: board::STATUS_OK,
        }
        .write(&mut rec, slot);
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE kv SET value = '15' WHERE key = 'k'")
            .unwrap();
        let row = Board::open(&sidecar(path, "-board"), 0o600)
            .unwrap()
            .record_row();
        conn.execute(
            "INSERT INTO fileipc_applied (id, slots) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET slots = excluded.slots",
            rusqlite::params![row, rec],
        )
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }

    /// An owner identity no process has (owner ids fit in 31 bits).
    fn ghost(n: u32) -> u64 {
        (u64::from((1 << 30) + n) << 32) | 1
    }

    #[test]
    fn combiner_killed_after_commit_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let d = open(&path);
        d.set("k", &10).unwrap();
        // A requester (a process since killed) published +5 on "k" ...
        let board = Board::open(&sidecar(&path, "-board"), 0o600).unwrap();
        let (slot, seq) = board.claim(ghost(0)).unwrap();
        board.publish(slot, seq + 1, "k", 5);
        // ... and a combiner applied it, committed, and was killed before marking it
        // done: the commit holds the change and the record, the board still says pending.
        commit_as_killed_combiner(&path, slot, seq + 1);
        // The next combiner marks it done with the recorded result, without applying
        // it again.
        assert_eq!(d.increment("k", 1).unwrap(), 16);
        assert_eq!(board.take_done(slot), Some(Ok(15)));
        assert_eq!(d.get::<i64>("k").unwrap(), Some(16));
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
        commit_as_killed_combiner(&path, slot, inner.seq);
        // ... so when we combine, our own request is found in the record.
        let mut finished = Vec::new();
        assert_eq!(d.combine(inner, slot, &mut finished).unwrap(), Some(Ok(15)));
        drop(guard);
        assert_eq!(d.get::<i64>("k").unwrap(), Some(15));
        assert_eq!(d.increment("k", 1).unwrap(), 16);
    }

    /// How our own increment ends when it must settle its request after an error: a
    /// handle's increment of "k" (10, then +5) is published and read (`TAKEN`) by
    /// another process's combiner, which applies it, commits (k = 15, the record holds
    /// it) and is killed before marking it done; then `fault` makes our own combining
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
        let (slot, seq) = {
            let guard = d.inner.lock().unwrap();
            let inner = guard.as_ref().unwrap();
            // Our BEGIN IMMEDIATE gives up soon when a foreign writer holds SQLite's lock.
            inner.conn.busy_timeout(Duration::from_millis(50)).unwrap();
            (inner.slot.unwrap(), inner.seq + 1)
        };
        let board = Board::open(&sidecar(&path, "-board"), 0o600).unwrap();
        // The other process's combiner holds the writers' lock ...
        let lock = std::fs::File::open(&d.lock_path).unwrap();
        sys::lock_exclusive(&lock).unwrap();
        let (tx, rx) = mpsc::channel();
        let owner = Arc::clone(&d);
        let t = std::thread::spawn(move || tx.send(owner.increment("k", 5)).unwrap());
        // ... reads our request once it is published (setting TAKEN) ...
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut skip = [true; board::SLOTS];
            skip[slot] = false;
            if let Some(r) = board.pending(&skip).pop() {
                assert_eq!(r.seq, seq);
                break;
            }
            assert!(Instant::now() < deadline, "our request was never published");
            std::thread::sleep(Duration::from_millis(1));
        }
        // ... applies it, commits, and is killed before marking it done.
        commit_as_killed_combiner(&path, slot, seq);
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
