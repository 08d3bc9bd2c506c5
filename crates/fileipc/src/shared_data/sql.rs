//! The SQL of a store: `Ops`, the statements on an open connection shared by the local
//! handle and the local transaction (the table `kv` and its combiners' `batch` mark), and
//! the JSON encoding and decoding of values with errors that name the key.

use std::any::type_name;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::finite;
use crate::error::{Error, Result};

/// The operations on an open connection, shared by the local handle and the local
/// transaction.
#[derive(Clone, Copy)]
pub(super) struct Ops<'a> {
    pub(super) conn: &'a Connection,
    pub(super) path: &'a Path,
}

impl Ops<'_> {
    fn sq(&self, e: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.to_owned(),
            source: e,
        }
    }

    /// Inside a write transaction: an error if SQLite ended it already. On a full disk
    /// or an I/O error (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM...) SQLite rolls the
    /// whole transaction back by itself and returns to autocommit; a later statement
    /// would then be a transaction of its own, committed at once.
    pub(super) fn check_in_transaction(&self) -> Result<()> {
        if !self.conn.is_autocommit() {
            return Ok(());
        }
        Err(Error::Sqlite {
            path: self.path.to_owned(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some(
                    "transaction rolled back by SQLite after an earlier operation in it \
                     failed; nothing of it was written"
                        .to_owned(),
                ),
            ),
        })
    }

    pub(super) fn exec(&self, sql: &str) -> Result<usize> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.sq(e))?;
        st.execute([]).map_err(|e| self.sq(e))
    }

    /// Calls `f` on the stored JSON bytes of `key`, if any.
    pub(super) fn get_raw<R>(
        &self,
        key: &str,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        check_key(self.path, key)?;
        let mut st = self
            .conn
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([key]).map_err(|e| self.sq(e))?;
        let Some(row) = rows.next().map_err(|e| self.sq(e))? else {
            return Ok(None);
        };
        let v = row.get_ref(0).map_err(|e| self.sq(e))?;
        with_json_bytes(v, f).map(Some)
    }

    pub(super) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_raw(key, |b| decode(self.path, key, b))
    }

    pub(super) fn put(&self, key: &str, json: &str) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .map_err(|e| self.sq(e))?;
        st.execute([key, json]).map_err(|e| self.sq(e))?;
        Ok(())
    }

    pub(super) fn delete(&self, key: &str) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("DELETE FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        Ok(st.execute([key]).map_err(|e| self.sq(e))? > 0)
    }

    pub(super) fn contains_key(&self, key: &str) -> Result<bool> {
        check_key(self.path, key)?;
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        st.exists([key]).map_err(|e| self.sq(e))
    }

    pub(super) fn keys(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key FROM kv ORDER BY key")
            .map_err(|e| self.sq(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sq(e))
    }

    pub(super) fn len(&self) -> Result<usize> {
        let mut st = self
            .conn
            .prepare_cached("SELECT count(*) FROM kv")
            .map_err(|e| self.sq(e))?;
        let n: i64 = st.query_row([], |r| r.get(0)).map_err(|e| self.sq(e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(super) fn clear(&self) -> Result<()> {
        self.exec("DELETE FROM kv").map(drop)
    }

    pub(super) fn dump(&self) -> Result<Map<String, Value>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key, value FROM kv ORDER BY key")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([]).map_err(|e| self.sq(e))?;
        let mut out = Map::new();
        while let Some(row) = rows.next().map_err(|e| self.sq(e))? {
            let key: String = row.get(0).map_err(|e| self.sq(e))?;
            let v = row.get_ref(1).map_err(|e| self.sq(e))?;
            let value = with_json_bytes(v, |b| decode::<Value>(self.path, &key, b))?;
            out.insert(key, value);
        }
        Ok(out)
    }

    pub(super) fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        let new = f(self.get::<T>(key)?);
        match &new {
            Some(v) => self.put(key, &encode(self.path, key, v)?)?,
            None => {
                self.delete(key)?;
            }
        }
        Ok(new)
    }

    pub(super) fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let cur: i64 = self.get(key)?.unwrap_or(0);
        let new = cur.checked_add(by).ok_or_else(|| Error::Value {
            path: self.path.to_owned(),
            key: key.to_owned(),
            detail: format!("{cur} + {by} overflows i64"),
        })?;
        self.put(key, &new.to_string())?;
        Ok(new)
    }

    /// As `put`, for a combiner's batch: the row also carries the batch's id (column
    /// `batch`), the mark `settle` looks for.
    pub(super) fn put_in_batch(&self, key: &str, json: &str, batch: i64) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO kv (key, value, batch) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, batch = excluded.batch",
            )
            .map_err(|e| self.sq(e))?;
        st.execute(rusqlite::params![key, json, batch])
            .map_err(|e| self.sq(e))?;
        Ok(())
    }

    /// The id of the batch that last changed `key`'s row through a combiner, if any.
    pub(super) fn row_batch(&self, key: &str) -> Result<Option<i64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT batch FROM kv WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([key]).map_err(|e| self.sq(e))?;
        let Some(row) = rows.next().map_err(|e| self.sq(e))? else {
            return Ok(None);
        };
        match row.get_ref(0).map_err(|e| self.sq(e))? {
            ValueRef::Integer(b) => Ok(Some(b)),
            _ => Ok(None),
        }
    }

    pub(super) fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&Value>,
        new: &str,
    ) -> Result<bool> {
        let cur: Option<Value> = self.get(key)?;
        if cur.as_ref() != expected {
            return Ok(false);
        }
        self.put(key, new)?;
        Ok(true)
    }

    /// Whether a write fenced with `fence` may go to `key`: no fence higher than it was
    /// recorded for the key (table `fileipc_fences`). Inside a write transaction.
    pub(super) fn fence_admits(&self, key: &str, fence: i64) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT fence FROM fileipc_fences WHERE key = ?1")
            .map_err(|e| self.sq(e))?;
        let mut rows = st.query([key]).map_err(|e| self.sq(e))?;
        let Some(row) = rows.next().map_err(|e| self.sq(e))? else {
            return Ok(true);
        };
        let highest: i64 = row.get(0).map_err(|e| self.sq(e))?;
        Ok(fence >= highest)
    }

    /// Records `fence` as the highest seen for `key` (it is, after `fence_admits`).
    pub(super) fn record_fence(&self, key: &str, fence: i64) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO fileipc_fences (key, fence) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET fence = max(fence, excluded.fence)",
            )
            .map_err(|e| self.sq(e))?;
        st.execute(rusqlite::params![key, fence])
            .map_err(|e| self.sq(e))?;
        Ok(())
    }
}

/// Calls `f` on the JSON bytes of a stored value. fileipc stores text; a number or
/// blob written by another program is passed on as its text.
fn with_json_bytes<R>(v: ValueRef<'_>, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => f(b),
        ValueRef::Integer(i) => f(i.to_string().as_bytes()),
        ValueRef::Real(x) => f(x.to_string().as_bytes()),
        ValueRef::Null => f(b"null"),
    }
}

pub(super) fn check_key(path: &Path, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(path, "a key must not be empty"));
    }
    Ok(())
}

pub(super) fn encode<T: Serialize + ?Sized>(path: &Path, key: &str, value: &T) -> Result<String> {
    let json = serde_json::to_string(value).map_err(|e| cannot_encode::<T>(path, key, e))?;
    // serde_json writes NaN and infinities as `null`, which would not read back: look
    // for them only when there is a null.
    if json.contains("null") {
        finite::check(value).map_err(|e| cannot_encode::<T>(path, key, e))?;
    }
    Ok(json)
}

fn cannot_encode<T: ?Sized>(path: &Path, key: &str, e: impl std::fmt::Display) -> Error {
    Error::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: format!("cannot encode {} as JSON: {e}", type_name::<T>()),
    }
}

/// The operands of a compare-and-swap on `key`, checked and encoded: the expected value
/// as a JSON value (`None`: the key must be absent) and the new value as JSON text.
pub(super) fn cas_operands<T: Serialize + ?Sized>(
    path: &Path,
    key: &str,
    expected: Option<&T>,
    new: &T,
) -> Result<(Option<Value>, String)> {
    check_key(path, key)?;
    let expected = match expected {
        Some(e) => Some(to_value(path, key, e)?),
        None => None,
    };
    Ok((expected, encode(path, key, new)?))
}

fn to_value<T: Serialize + ?Sized>(path: &Path, key: &str, value: &T) -> Result<Value> {
    let v = serde_json::to_value(value).map_err(|e| cannot_encode::<T>(path, key, e))?;
    if has_null(&v) {
        finite::check(value).map_err(|e| cannot_encode::<T>(path, key, e))?;
    }
    Ok(v)
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

pub(super) fn decode<T: DeserializeOwned>(path: &Path, key: &str, json: &[u8]) -> Result<T> {
    serde_json::from_slice(json).map_err(|e| Error::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: format!("expected {}: {e}", type_name::<T>()),
    })
}
