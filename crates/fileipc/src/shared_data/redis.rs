//! The Redis engine of [`SharedData`](super::SharedData): a hash of JSON texts.
//!
//! Keys (`{p}` = prefix + name): `{p}:data` (hash: key -> JSON text), `{p}:meta` (hash:
//! kind, version), `{p}:txlock` (the token of the transaction in progress, leased),
//! `{p}:fences` (hash: key -> the highest fence of a fenced write, decimal), channel
//! `{p}:wake` (published when a transaction ends).
//!
//! Plain writes (`set`, `delete`, `clear`) are one script each; read-modify-writes
//! that can be retried (`increment`, `compare_and_swap`) read the value, compute in
//! Rust (so `increment` is exact for every i64: Lua numbers are doubles) and write it
//! back with a script that applies only if the stored text is still the one read,
//! retrying otherwise. Closures run once (`update`, `transaction`), so they run under
//! the store's transaction lock: writes are buffered and committed by one script that
//! applies them only if the lock is still this transaction's (its lease not lost);
//! every other write waits while a transaction holds the lock. A transaction is thus
//! wholly applied or not at all, even if its process dies at any instant.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::sql::{cas_operands, check_key, decode, encode};
use super::transaction::Transaction;
use crate::error::{Error, Result};
use crate::location::RedisUrl;
use crate::remote::lease::Lease;
use crate::remote::{self, Conn, MAX_NAP, Wake};

/// The guard at the head of every write script: `-2` (busy) when a transaction other
/// than `ARGV[1]` holds the lock `KEYS[2]`.
const GUARD: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return -2 end
";

/// `HSET` (`ARGV[2]` = 's', field `ARGV[3]`, JSON `ARGV[4]`), `HDEL` (`d`, field), or
/// `DEL` of the whole hash (`c`); `HDEL` returns whether the field existed.
const WRITE: &str = r"
if ARGV[2] == 's' then redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) return 1 end
if ARGV[2] == 'd' then return redis.call('HDEL', KEYS[1], ARGV[3]) end
redis.call('DEL', KEYS[1])
return 1
";

/// Replaces field `ARGV[2]` by `ARGV[5]` (or deletes it if `ARGV[4]` is '0') if its
/// stored text is still `ARGV[3]` (absent if `ARGV[3]` is empty and `ARGV[6]` is '0'):
/// 1 applied, 0 changed since it was read.
const SWAP: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[6] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[3] then
  return 0
end
if ARGV[4] == '0' then redis.call('HDEL', KEYS[1], ARGV[2]) else redis.call('HSET', KEYS[1], ARGV[2], ARGV[5]) end
return 1
";

/// A fenced write of field `ARGV[2]` with fence `ARGV[3]` (decimal digits, compared as
/// such: Lua numbers are doubles, exact only below 2^53): -1 if `KEYS[3]` records a
/// higher fence for the field; else, if `ARGV[4]` is '1', 0 when its stored text is not
/// `ARGV[5]` (absent if `ARGV[6]` is '0') any more; else sets it to `ARGV[7]`, records
/// the fence and returns 1.
const FENCED: &str = r"
local seen = redis.call('HGET', KEYS[3], ARGV[2])
local f = ARGV[3]
if seen and (#seen > #f or (#seen == #f and seen > f)) then return -1 end
if ARGV[4] == '1' then
  local cur = redis.call('HGET', KEYS[1], ARGV[2])
  if ARGV[6] == '0' then
    if cur then return 0 end
  elseif cur ~= ARGV[5] then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[7])
redis.call('HSET', KEYS[3], ARGV[2], f)
return 1
";

/// Commits a transaction `ARGV[1]`: if the lock `KEYS[2]` is still ours, clears the
/// hash if `ARGV[2]` is '1', applies the pairs that follow (field, '1' + JSON to set or
/// '0' to delete), releases the lock and wakes waiters: 1; else 0 (lease lost).
const COMMIT: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
for i = 3, #ARGV, 2 do
  local v = ARGV[i + 1]
  if string.sub(v, 1, 1) == '1' then
    redis.call('HSET', KEYS[1], ARGV[i], string.sub(v, 2))
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], '1')
return 1
";

/// Releases the lock `KEYS[2]` if it is still `ARGV[1]`'s, writing nothing.
const ABORT: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', KEYS[3], '1')
end
return 1
";

/// A store on a Redis server.
#[derive(Debug)]
pub(super) struct RedisSharedData {
    conn: Conn,
    wake: Wake,
}

impl RedisSharedData {
    pub(super) fn open(url: &RedisUrl, create: bool) -> Result<RedisSharedData> {
        let conn = Conn::open(url)?;
        remote::check_kind(&conn, "shared_data", create)?;
        Ok(RedisSharedData {
            wake: Wake::new(url, url.key("wake")),
            conn,
        })
    }

    fn url(&self) -> &RedisUrl {
        self.conn.url()
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.conn.path()
    }

    /// Removes the store (its data and metadata); a transaction in progress fails to
    /// commit with [`Error::LeaseLost`] only if its lock went too, which it does.
    pub(super) fn destroy(&self) -> Result<()> {
        self.conn.read(|c| {
            redis::cmd("DEL")
                .arg(self.url().key("data"))
                .arg(self.url().key("meta"))
                .arg(self.url().key("txlock"))
                .arg(self.url().key("fences"))
                .query::<()>(c)
        })
    }

    // ---- reading ----

    fn get_raw(&self, key: &str) -> Result<Option<String>> {
        self.conn.read(|c| {
            redis::cmd("HGET")
                .arg(self.url().key("data"))
                .arg(key)
                .query(c)
        })
    }

    pub(super) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_key(self.path(), key)?;
        self.get_raw(key)?
            .map(|j| decode(self.path(), key, j.as_bytes()))
            .transpose()
    }

    pub(super) fn get_json(&self, key: &str) -> Result<Option<String>> {
        check_key(self.path(), key)?;
        self.get_raw(key)
    }

    pub(super) fn contains_key(&self, key: &str) -> Result<bool> {
        check_key(self.path(), key)?;
        let n: i64 = self.conn.read(|c| {
            redis::cmd("HEXISTS")
                .arg(self.url().key("data"))
                .arg(key)
                .query(c)
        })?;
        Ok(n == 1)
    }

    pub(super) fn keys(&self) -> Result<Vec<String>> {
        let mut k: Vec<String> = self
            .conn
            .read(|c| redis::cmd("HKEYS").arg(self.url().key("data")).query(c))?;
        k.sort();
        Ok(k)
    }

    pub(super) fn len(&self) -> Result<usize> {
        self.conn
            .read(|c| redis::cmd("HLEN").arg(self.url().key("data")).query(c))
    }

    pub(super) fn dump(&self) -> Result<Map<String, Value>> {
        let all: BTreeMap<String, String> = self
            .conn
            .read(|c| redis::cmd("HGETALL").arg(self.url().key("data")).query(c))?;
        all.into_iter()
            .map(|(k, j)| {
                let v = decode::<Value>(self.path(), &k, j.as_bytes())?;
                Ok((k, v))
            })
            .collect()
    }

    // ---- writing ----

    /// Runs a guarded write script until no transaction blocks it.
    fn write(&self, op: &str, field: &str, json: &str) -> Result<i64> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        loop {
            let r: i64 = self.conn.with(|c| {
                remote::script(&S, &[GUARD, WRITE])
                    .key(self.url().key("data"))
                    .key(self.url().key("txlock"))
                    .arg("")
                    .arg(op)
                    .arg(field)
                    .arg(json)
                    .invoke(c)
            })?;
            if r != -2 {
                return Ok(r);
            }
            self.wait_for_transaction()?;
        }
    }

    /// Waits while another transaction holds the lock: until it ends (the `wake`
    /// hint), at most [`MAX_NAP`]; a transaction of this host whose process is proven
    /// dead is ended at once (nothing of it was committed).
    fn wait_for_transaction(&self) -> Result<()> {
        let (lock, wake) = (self.url().key("txlock"), self.url().key("wake"));
        if !remote::free_if_dead(&self.conn, &lock, &wake)? {
            self.wake.nap(MAX_NAP)?;
        }
        Ok(())
    }

    pub(super) fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(self.path(), key)?;
        let json = encode(self.path(), key, value)?;
        self.write("s", key, &json).map(drop)
    }

    pub(super) fn delete(&self, key: &str) -> Result<bool> {
        check_key(self.path(), key)?;
        Ok(self.write("d", key, "")? == 1)
    }

    pub(super) fn clear(&self) -> Result<()> {
        self.write("c", "", "").map(drop)
    }

    /// Writes `new` (or deletes, if `None`) at `key` if its stored text is still `old`:
    /// `Ok(false)` if it changed since it was read. Waits while a transaction runs.
    fn swap(&self, key: &str, old: Option<&str>, new: Option<&str>) -> Result<bool> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        loop {
            let r: i64 = self.conn.with(|c| {
                remote::script(&S, &[GUARD, SWAP])
                    .key(self.url().key("data"))
                    .key(self.url().key("txlock"))
                    .arg("")
                    .arg(key)
                    .arg(old.unwrap_or(""))
                    .arg(if new.is_some() { "1" } else { "0" })
                    .arg(new.unwrap_or(""))
                    .arg(if old.is_some() { "1" } else { "0" })
                    .invoke(c)
            })?;
            match r {
                -2 => self.wait_for_transaction()?,
                r => return Ok(r == 1),
            }
        }
    }

    /// See `LocalSharedData::write_fenced`: the fence check, the compare (against the
    /// text read, retried if it changed meanwhile) and the write in one script.
    pub(super) fn write_fenced(
        &self,
        key: &str,
        expected: Option<Option<&Value>>,
        json: &str,
        fence: u64,
    ) -> Result<bool> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        loop {
            let old = match expected {
                Some(expected) => {
                    let old = self.get_raw(key)?;
                    let cur = old
                        .as_deref()
                        .map(|j| decode::<Value>(self.path(), key, j.as_bytes()))
                        .transpose()?;
                    if cur.as_ref() != expected {
                        return Ok(false);
                    }
                    Some(old)
                }
                None => None,
            };
            let r: i64 = self.conn.with(|c| {
                let (cas, old) = match &old {
                    Some(old) => ("1", old.as_deref()),
                    None => ("0", None),
                };
                remote::script(&S, &[GUARD, FENCED])
                    .key(self.url().key("data"))
                    .key(self.url().key("txlock"))
                    .key(self.url().key("fences"))
                    .arg("")
                    .arg(key)
                    .arg(fence.to_string())
                    .arg(cas)
                    .arg(old.unwrap_or(""))
                    .arg(if old.is_some() { "1" } else { "0" })
                    .arg(json)
                    .invoke(c)
            })?;
            match r {
                -2 => self.wake.nap(MAX_NAP)?,
                0 => {}
                r => return Ok(r == 1),
            }
        }
    }

    pub(super) fn increment(&self, key: &str, by: i64) -> Result<i64> {
        check_key(self.path(), key)?;
        loop {
            let old = self.get_raw(key)?;
            let new = add(self.path(), key, old.as_deref(), by)?;
            if self.swap(key, old.as_deref(), Some(&new.to_string()))? {
                return Ok(new);
            }
        }
    }

    pub(super) fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        let (expected, new) = cas_operands(self.path(), key, expected, new)?;
        loop {
            let old = self.get_raw(key)?;
            let cur = old
                .as_deref()
                .map(|j| decode::<Value>(self.path(), key, j.as_bytes()))
                .transpose()?;
            if cur != expected {
                return Ok(false);
            }
            if self.swap(key, old.as_deref(), Some(&new))? {
                return Ok(true);
            }
        }
    }

    pub(super) fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        check_key(self.path(), key)?;
        self.transaction(|tx| tx.update(key, f))
    }

    /// Takes the transaction lock (waiting while another transaction holds it), runs
    /// `f` over a buffer of its writes, and commits them in one script.
    pub(super) fn transaction<R>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        let lease = self.lock_transactions()?;
        let tx = RedisTransaction {
            store: self,
            buf: RefCell::new(Buffer::default()),
        };
        let out = f(&Transaction::redis(&tx));
        match out {
            Ok(r) => {
                self.end(&lease, Some(tx.buf.into_inner()))?;
                Ok(r)
            }
            Err(e) => {
                // The closure's error is the one to report; an abort that fails
                // leaves the lock to expire with its lease.
                let _ = self.end(&lease, None);
                Err(e)
            }
        }
    }

    fn lock_transactions(&self) -> Result<Arc<Lease>> {
        loop {
            let token = remote::token();
            let sent = Instant::now();
            let ttl: i64 = self.conn.with(|c| {
                let ok: Option<String> = redis::cmd("SET")
                    .arg(self.url().key("txlock"))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.url().lease().as_millis() as u64)
                    .query(c)?;
                if ok.is_some() {
                    return Ok(-10);
                }
                redis::cmd("PTTL").arg(self.url().key("txlock")).query(c)
            })?;
            if ttl == -10 {
                return Ok(Lease::start(
                    self.url(),
                    self.url().key("txlock"),
                    token,
                    sent,
                ));
            }
            // A transaction of this host whose process is proven dead ends at once
            // (nothing of it was committed).
            if remote::free_if_dead(
                &self.conn,
                &self.url().key("txlock"),
                &self.url().key("wake"),
            )? {
                continue;
            }
            let nap = if ttl > 0 {
                std::time::Duration::from_millis(ttl as u64).min(MAX_NAP)
            } else {
                MAX_NAP
            };
            self.wake.nap(nap)?;
        }
    }

    /// Commits `buf` (or, with `None`, aborts) and releases the lock.
    fn end(&self, lease: &Lease, buf: Option<Buffer>) -> Result<()> {
        static C: OnceLock<redis::Script> = OnceLock::new();
        static A: OnceLock<redis::Script> = OnceLock::new();
        let lost = lease.is_lost();
        lease.end();
        let keys = |s: &'static redis::Script| {
            let mut inv = s.prepare_invoke();
            inv.key(self.url().key("data"))
                .key(self.url().key("txlock"))
                .key(self.url().key("wake"))
                .arg(lease.token());
            inv
        };
        let Some(buf) = buf else {
            let inv = keys(remote::script(&A, &[ABORT]));
            let _: i64 = self.conn.with(|c| inv.invoke(c))?;
            return Ok(());
        };
        if lost {
            let inv = keys(remote::script(&A, &[ABORT]));
            let _: i64 = self.conn.with(|c| inv.invoke(c))?;
            return Err(self.lost());
        }
        let mut inv = keys(remote::script(&C, &[COMMIT]));
        inv.arg(if buf.cleared { "1" } else { "0" });
        for (k, v) in &buf.writes {
            inv.arg(k);
            match v {
                Some(j) => inv.arg(format!("1{j}")),
                None => inv.arg("0"),
            };
        }
        let ok: i64 = self.conn.with(|c| inv.invoke(c))?;
        if ok == 1 { Ok(()) } else { Err(self.lost()) }
    }

    fn lost(&self) -> Error {
        Error::LeaseLost {
            path: self.url().as_path(),
            lease: self.url().lease(),
        }
    }
}

/// `old` (a stored JSON text, or none: 0) plus `by`, exactly.
fn add(path: &std::path::Path, key: &str, old: Option<&str>, by: i64) -> Result<i64> {
    let cur: i64 = match old {
        Some(j) => decode(path, key, j.as_bytes())?,
        None => 0,
    };
    cur.checked_add(by).ok_or_else(|| Error::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        detail: format!("{cur} + {by} overflows i64"),
    })
}

/// The writes of a transaction not yet committed.
#[derive(Debug, Default)]
struct Buffer {
    /// `clear` was called: the stored hash counts as empty.
    cleared: bool,
    /// Key -> new JSON text, or `None` for deleted.
    writes: BTreeMap<String, Option<String>>,
}

/// A transaction on a Redis store: reads see the store (unless cleared) under the
/// transaction's own writes.
pub(super) struct RedisTransaction<'a> {
    store: &'a RedisSharedData,
    buf: RefCell<Buffer>,
}

impl RedisTransaction<'_> {
    pub(super) fn path(&self) -> &std::path::Path {
        self.store.path()
    }

    fn raw(&self, key: &str) -> Result<Option<String>> {
        let buf = self.buf.borrow();
        if let Some(v) = buf.writes.get(key) {
            return Ok(v.clone());
        }
        if buf.cleared {
            return Ok(None);
        }
        drop(buf);
        self.store.get_raw(key)
    }

    fn put(&self, key: &str, json: Option<String>) {
        self.buf.borrow_mut().writes.insert(key.to_owned(), json);
    }

    pub(super) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_key(self.path(), key)?;
        self.raw(key)?
            .map(|j| decode(self.path(), key, j.as_bytes()))
            .transpose()
    }

    pub(super) fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(self.path(), key)?;
        let json = encode(self.path(), key, value)?;
        self.put(key, Some(json));
        Ok(())
    }

    pub(super) fn delete(&self, key: &str) -> Result<bool> {
        check_key(self.path(), key)?;
        let existed = self.raw(key)?.is_some();
        self.put(key, None);
        Ok(existed)
    }

    pub(super) fn contains_key(&self, key: &str) -> Result<bool> {
        check_key(self.path(), key)?;
        Ok(self.raw(key)?.is_some())
    }

    pub(super) fn keys(&self) -> Result<Vec<String>> {
        let stored = if self.buf.borrow().cleared {
            Vec::new()
        } else {
            self.store.keys()?
        };
        let buf = self.buf.borrow();
        let mut keys: Vec<String> = stored
            .into_iter()
            .filter(|k| !buf.writes.contains_key(k))
            .collect();
        keys.extend(
            buf.writes
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        Ok(keys)
    }

    pub(super) fn len(&self) -> Result<usize> {
        Ok(self.keys()?.len())
    }

    pub(super) fn clear(&self) -> Result<()> {
        let mut buf = self.buf.borrow_mut();
        buf.cleared = true;
        buf.writes.clear();
        Ok(())
    }

    pub(super) fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        let new = f(self.get::<T>(key)?);
        match &new {
            Some(v) => self.set(key, v)?,
            None => {
                self.delete(key)?;
            }
        }
        Ok(new)
    }

    pub(super) fn increment(&self, key: &str, by: i64) -> Result<i64> {
        check_key(self.path(), key)?;
        let new = add(self.path(), key, self.raw(key)?.as_deref(), by)?;
        self.put(key, Some(new.to_string()));
        Ok(new)
    }

    pub(super) fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        let (expected, new) = cas_operands(self.path(), key, expected, new)?;
        let cur: Option<Value> = self.get(key)?;
        if cur != expected {
            return Ok(false);
        }
        self.put(key, Some(new));
        Ok(true)
    }

    pub(super) fn dump(&self) -> Result<Map<String, Value>> {
        self.keys()?
            .into_iter()
            .filter_map(|k| match self.get::<Value>(&k) {
                Ok(Some(v)) => Some(Ok((k, v))),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }
}
