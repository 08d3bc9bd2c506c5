//! The alternatives every figure is compared with, written with raw system calls
//! (`bench/sys.rs`) or the bare libraries, and the seed's own designs.
//!
//! Each `open_*` function maps an implementation name (the `--imp` of a worker) to an
//! object of the workload's trait; `"ours*"` names go to `ours.rs`.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::api::{EventFlag, Kv, Lock, QueueEnd};
use super::ours;
use super::sys::{self, Mq, NamedSem, Shm, now_ns};

/// What a worker process knows about its run, shared by the implementations it opens.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The run's private directory (on the file system under test).
    pub(crate) dir: PathBuf,
    /// Prefix of this run's POSIX IPC names (`/TAG-...`), unique per run.
    pub(crate) tag: String,
    /// Message size in bytes.
    pub(crate) size: usize,
    /// POSIX mq capacity (`mq_maxmsg`).
    pub(crate) depth: usize,
    /// Number of consumer processes sharing a queue.
    pub(crate) consumers: u32,
    /// CLOCK_MONOTONIC ns after which polling implementations give up (u64::MAX: none).
    pub(crate) deadline: Rc<Cell<u64>>,
}

/// The seed's polling interval.
const SEED_POLL: Duration = Duration::from_millis(10);
/// The seed's default timeout for blocking calls.
const SEED_TIMEOUT_NS: u64 = 5_000_000_000;

// ---------------------------------------------------------------------------------------
// Queues

/// Opens channel `chan` of the queue implementation `imp`.
pub(crate) fn open_queue(imp: &str, env: &Env, chan: &str) -> Result<Box<dyn QueueEnd>> {
    Ok(match imp {
        "ours" => ours::queue(&env.dir.join(chan), false)?,
        "ours_durable" => ours::queue(&env.dir.join(chan), true)?,
        "posix_mq" => {
            let name = format!("/{}-{chan}", env.tag);
            let mq = Mq::open(&name, env.depth, env.size.max(16))
                .with_context(|| format!("mq_open {name} (maxmsg {})", env.depth))?;
            Box::new(MqQueue(mq))
        }
        "pipe" => {
            let path = env.dir.join(format!("{chan}.fifo"));
            sys::mkfifo(&path).with_context(|| format!("mkfifo {}", path.display()))?;
            // O_RDWR: opening never blocks waiting for the other end (Linux).
            let f = OpenOptions::new().read(true).write(true).open(&path)?;
            Box::new(Pipe {
                f,
                size: env.size.max(12),
                multi: env.consumers > 1,
            })
        }
        "seed_files" => {
            let dir = env.dir.join(chan);
            fs::create_dir_all(&dir)?;
            Box::new(SeedDir {
                dir,
                seq: 0,
                pid: std::process::id(),
                deadline: env.deadline.clone(),
            })
        }
        "futex" => {
            let shm = Shm::open(&env.dir.join(format!("{chan}.futex")), 64)?;
            Box::new(FutexChan { shm, seen: 0 })
        }
        "fdatasync" => {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .open(env.dir.join(format!("{chan}.log")))?;
            Box::new(SyncLog(f))
        }
        other => bail!("unknown queue implementation {other:?}"),
    })
}

/// POSIX message queue.
struct MqQueue(Mq);

impl QueueEnd for MqQueue {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.0.send(msg)?)
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        self.0.recv(buf)?;
        Ok(true)
    }
}

/// A named pipe carrying fixed-size frames (every message is `size` bytes).
struct Pipe {
    f: File,
    size: usize,
    multi: bool,
}

impl QueueEnd for Pipe {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        // Frames up to PIPE_BUF (4096) bytes are written atomically.
        self.f.write_all(msg)?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let want = self.size;
        buf.resize(want, 0);
        let n = loop {
            match self.f.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            bail!("pipe: end of file");
        }
        if n < want {
            if self.multi {
                bail!("pipe: short read ({n} of {want} bytes) with several readers");
            }
            self.f.read_exact(&mut buf[n..])?;
        }
        Ok(true)
    }
}

/// The seed's queue: one file per message in a directory; `recv` lists and sorts the
/// directory, takes the first name, reads and deletes it, and sleeps 10 ms when empty.
struct SeedDir {
    dir: PathBuf,
    seq: u64,
    pid: u32,
    deadline: Rc<Cell<u64>>,
}

impl QueueEnd for SeedDir {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.seq += 1;
        let name = format!("{:020}_{:010}_{:012}", now_ns(), self.pid, self.seq);
        // Written under a temporary name and renamed, so a reader never sees half a
        // message (the seed did not even do that; this baseline must stay countable).
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, msg)?;
        fs::rename(&tmp, self.dir.join(format!("{name}.msg")))?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let give_up = self.deadline.get().min(now_ns() + SEED_TIMEOUT_NS);
        loop {
            let mut names: Vec<_> = fs::read_dir(&self.dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n.as_bytes_lossy().ends_with(b".msg"))
                .collect();
            names.sort();
            for name in names {
                let path = self.dir.join(&name);
                match fs::read(&path) {
                    Ok(data) => {
                        if fs::remove_file(&path).is_ok() {
                            *buf = data;
                            return Ok(true);
                        }
                        // Another consumer took it between our read and our delete.
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if now_ns() >= give_up {
                return Ok(false);
            }
            std::thread::sleep(SEED_POLL);
        }
    }
}

trait LossyBytes {
    fn as_bytes_lossy(&self) -> &[u8];
}

impl LossyBytes for std::ffi::OsString {
    fn as_bytes_lossy(&self) -> &[u8] {
        use std::os::unix::ffi::OsStrExt;
        self.as_os_str().as_bytes()
    }
}

/// The floor for ping-pong: a counter word in a shared mapping, `FUTEX_WAIT`/`FUTEX_WAKE`
/// on it, and only the 12-byte frame header as payload (two atomic words). One sender and
/// one receiver per channel, one message in flight (ping-pong only).
struct FutexChan {
    shm: Shm,
    seen: u32,
}

impl QueueEnd for FutexChan {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let head: [u8; 12] = msg
            .get(..12)
            .and_then(|h| h.try_into().ok())
            .unwrap_or([0; 12]);
        let (p, s) = head.split_at(4);
        self.shm
            .u32(4)
            .store(u32::from_le_bytes(p.try_into()?), Ordering::Relaxed);
        self.shm
            .u64(8)
            .store(u64::from_le_bytes(s.try_into()?), Ordering::Relaxed);
        let w = self.shm.u32(0);
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, 1);
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let w = self.shm.u32(0);
        loop {
            let v = w.load(Ordering::Acquire);
            if v != self.seen {
                self.seen = self.seen.wrapping_add(1);
                if buf.len() < 12 {
                    buf.resize(12, 0);
                }
                let p = self.shm.u32(4).load(Ordering::Relaxed);
                let s = self.shm.u64(8).load(Ordering::Relaxed);
                buf[..4].copy_from_slice(&p.to_le_bytes());
                buf[4..12].copy_from_slice(&s.to_le_bytes());
                return Ok(true);
            }
            sys::futex_wait(w, v, None);
        }
    }
}

/// A durable log: one `write` + `fdatasync` per message, on one file shared by producers.
struct SyncLog(File);

impl QueueEnd for SyncLog {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.0.write_all(msg)?;
        self.0.sync_data()?;
        Ok(())
    }

    fn recv(&mut self, _buf: &mut Vec<u8>) -> Result<bool> {
        bail!("the fdatasync log is send-only")
    }
}

/// Removes the POSIX IPC names a run with `tag` may have created.
pub(crate) fn unlink_names(tag: &str) {
    for chan in ["q", "ping", "pong"] {
        Mq::unlink(&format!("/{tag}-{chan}"));
    }
    for s in ["lock", "a", "b"] {
        NamedSem::unlink(&format!("/{tag}-{s}"));
    }
}

// ---------------------------------------------------------------------------------------
// Locks

/// Opens the lock implementation `imp`.
pub(crate) fn open_lock(imp: &str, env: &Env) -> Result<Box<dyn Lock>> {
    Ok(match imp {
        "ours_mutex" => ours::mutex(&env.dir.join("mutex"))?,
        "ours_sem" => ours::semaphore(&env.dir.join("semaphore"))?,
        "flock" => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(env.dir.join("flock"))?;
            Box::new(Flock(f))
        }
        "posix_sem" => {
            let name = format!("/{}-lock", env.tag);
            Box::new(SemLock(
                NamedSem::open(&name, 1).with_context(|| format!("sem_open {name}"))?,
            ))
        }
        "seed_file" => Box::new(SeedLock(env.dir.join("mutex.value"))),
        other => bail!("unknown lock implementation {other:?}"),
    })
}

/// A raw `flock(LOCK_EX)` / `flock(LOCK_UN)` pair on an open file.
struct Flock(File);

impl Lock for Flock {
    fn lock(&mut self) -> Result<()> {
        Ok(sys::flock_lock(&self.0, true)?)
    }

    fn unlock(&mut self) -> Result<()> {
        Ok(sys::flock_unlock(&self.0)?)
    }
}

/// A POSIX named semaphore of one permit used as a lock (`sem_wait` / `sem_post`).
struct SemLock(NamedSem);

impl Lock for SemLock {
    fn lock(&mut self) -> Result<()> {
        Ok(self.0.wait()?)
    }

    fn unlock(&mut self) -> Result<()> {
        Ok(self.0.post()?)
    }
}

/// The seed's mutex: a value file read and rewritten, polled every 10 ms while held.
/// (It is not even exclusive under contention: it is only measured uncontended.)
struct SeedLock(PathBuf);

impl Lock for SeedLock {
    fn lock(&mut self) -> Result<()> {
        let give_up = now_ns() + SEED_TIMEOUT_NS;
        loop {
            let held = match fs::read_to_string(&self.0) {
                Ok(s) => s.trim() == "1",
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            if !held {
                fs::write(&self.0, "1")?;
                return Ok(());
            }
            if now_ns() >= give_up {
                bail!("seed mutex: timed out");
            }
            std::thread::sleep(SEED_POLL);
        }
    }

    fn unlock(&mut self) -> Result<()> {
        fs::write(&self.0, "0")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Key-value stores

/// Opens the key-value implementation `imp`.
pub(crate) fn open_kv(imp: &str, env: &Env) -> Result<Box<dyn Kv>> {
    Ok(match imp {
        "ours" => ours::kv(&env.dir.join("shared_data"))?,
        "sqlite" => Box::new(Sqlite::open(&env.dir.join("kv.sqlite"))?),
        "seed_json" => Box::new(SeedJson {
            path: env.dir.join("kv.json"),
            lock: OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(env.dir.join("kv.json.lock"))?,
        }),
        other => bail!("unknown kv implementation {other:?}"),
    })
}

/// Bare rusqlite: WAL, `synchronous=NORMAL`, SQLite's own `busy_timeout`, one upsert per
/// operation (autocommit), values as JSON text.
struct Sqlite(rusqlite::Connection);

impl Sqlite {
    /// Opens (and on first use sets up) the database. Several workers set up the same
    /// new file at once, and switching to WAL can report "database is locked" without
    /// going through the busy handler, so setup is retried for a while.
    fn open(path: &Path) -> Result<Sqlite> {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Sqlite::try_open(path) {
                Err(e) if std::time::Instant::now() < give_up && is_busy(&e) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                r => return r,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Sqlite> {
        let c = rusqlite::Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        Ok(Sqlite(c))
    }
}

fn is_busy(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl Kv for Sqlite {
    fn fill(&mut self, entries: &[(String, serde_json::Value)]) -> Result<()> {
        let tx = self.0.transaction()?;
        for (k, v) in entries {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (k, serde_json::to_string(v)?),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<()> {
        let text = serde_json::to_string(value)?;
        self.0
            .prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute((key, text))?;
        Ok(())
    }

    fn get(&mut self, key: &str) -> Result<Option<serde_json::Value>> {
        let mut st = self
            .0
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
        let mut rows = st.query([key])?;
        match rows.next()? {
            Some(row) => {
                let text: String = row.get(0)?;
                Ok(Some(serde_json::from_str(&text)?))
            }
            None => Ok(None),
        }
    }

    fn increment(&mut self, key: &str, delta: i64) -> Result<i64> {
        let v: i64 = self
            .0
            .prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, CAST(?2 AS TEXT)) \
                 ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ?2 AS TEXT) \
                 RETURNING CAST(value AS INTEGER)",
            )?
            .query_row((key, delta), |r| r.get(0))?;
        Ok(v)
    }
}

/// The seed's store: the whole map as one JSON file, read (and for writes rewritten) under
/// an `flock` of a side lock file.
struct SeedJson {
    path: PathBuf,
    lock: File,
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

impl SeedJson {
    fn load(&self) -> Result<JsonMap> {
        match fs::read(&self.path) {
            Ok(b) if b.is_empty() => Ok(JsonMap::new()),
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(JsonMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn modify<T>(&mut self, f: impl FnOnce(&mut JsonMap) -> T) -> Result<T> {
        sys::flock_lock(&self.lock, true)?;
        let result = (|| {
            let mut map = self.load()?;
            let out = f(&mut map);
            fs::write(&self.path, serde_json::to_vec(&map)?)?;
            Ok(out)
        })();
        sys::flock_unlock(&self.lock)?;
        result
    }
}

impl Kv for SeedJson {
    fn fill(&mut self, entries: &[(String, serde_json::Value)]) -> Result<()> {
        self.modify(|m| {
            for (k, v) in entries {
                m.insert(k.clone(), v.clone());
            }
        })
    }

    fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<()> {
        self.modify(|m| {
            m.insert(key.to_owned(), value.clone());
        })
    }

    fn get(&mut self, key: &str) -> Result<Option<serde_json::Value>> {
        sys::flock_lock(&self.lock, false)?;
        let map = self.load();
        sys::flock_unlock(&self.lock)?;
        Ok(map?.remove(key))
    }

    fn increment(&mut self, key: &str, delta: i64) -> Result<i64> {
        self.modify(|m| {
            let v = m.get(key).and_then(|v| v.as_i64()).unwrap_or(0) + delta;
            m.insert(key.to_owned(), v.into());
            v
        })
    }
}

// ---------------------------------------------------------------------------------------
// Events

/// Opens the event implementation `imp` (the waiter side arms itself at open).
pub(crate) fn open_event(imp: &str, env: &Env) -> Result<Box<dyn EventFlag>> {
    let path = env.dir.join("event");
    Ok(match imp {
        "ours" => ours::event(&path)?,
        "inotify" => Box::new(InotifyFlag {
            watch: sys::Inotify::watch_dir(&env.dir)?,
            path,
        }),
        "poll10ms" => Box::new(PollFlag(path)),
        other => bail!("unknown event implementation {other:?}"),
    })
}

fn touch(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Raw inotify: the file's creation is the event; the waiter watches the directory.
struct InotifyFlag {
    watch: sys::Inotify,
    path: PathBuf,
}

impl EventFlag for InotifyFlag {
    fn set(&mut self) -> Result<()> {
        touch(&self.path)
    }

    fn clear(&mut self) -> Result<()> {
        remove_if_present(&self.path)
    }

    fn wait(&mut self) -> Result<bool> {
        let name = self.path.file_name().map(|n| n.as_encoded_bytes().to_vec());
        if self.path.exists() {
            return Ok(true);
        }
        loop {
            let names = self.watch.read_names()?;
            // A creation event left from an earlier round is stale if the file is gone.
            if names.iter().any(|n| Some(n) == name.as_ref()) && self.path.exists() {
                return Ok(true);
            }
        }
    }
}

/// The file's existence is the event; the waiter checks every 10 ms.
struct PollFlag(PathBuf);

impl EventFlag for PollFlag {
    fn set(&mut self) -> Result<()> {
        touch(&self.0)
    }

    fn clear(&mut self) -> Result<()> {
        remove_if_present(&self.0)
    }

    fn wait(&mut self) -> Result<bool> {
        let give_up = now_ns() + SEED_TIMEOUT_NS;
        loop {
            if self.0.exists() {
                return Ok(true);
            }
            if now_ns() >= give_up {
                return Ok(false);
            }
            std::thread::sleep(SEED_POLL);
        }
    }
}
