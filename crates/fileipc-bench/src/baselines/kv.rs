//! The key-value baselines: bare SQLite (rusqlite) and the seed's single JSON file
//! rewritten under an `flock`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::Env;
use crate::api::Kv;
use crate::ours;
use crate::sys;

/// Opens the key-value implementation `imp`.
pub(crate) fn open_kv(imp: &str, env: &Env) -> Result<Box<dyn Kv>> {
    Ok(match imp {
        "ours" => ours::kv(&env.dir.join("shared_data"))?,
        "ours_redis" => ours::kv(&env.redis_ours("shared_data")?)?,
        "redis_hash" => super::redis::open_kv(env)?,
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
