//! [`Transaction`]: the operations of one atomic transaction, a front over the engine's
//! transaction like [`SharedData`] is over its handle; and its local part,
//! `LocalTransaction`, the operations on the connection inside `BEGIN IMMEDIATE ...
//! COMMIT` under the writers' lock.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[cfg(doc)]
use super::SharedData;
use super::sql::{Ops, cas_operands, check_key, encode};
use crate::error::Result;

/// The operations of one atomic transaction, passed to the closure of
/// [`SharedData::transaction`]. Reads see the transaction's own writes.
///
/// An operation that fails on a full disk or an I/O error ends the whole transaction
/// (SQLite rolls it back): the closure may handle that error, but every later operation
/// of the transaction then fails too, nothing of it is written, and
/// [`SharedData::transaction`] returns an error.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let d = fileipc::SharedData::open(dir.path().join("s"))?;
/// let n = d.transaction(|tx| {
///     tx.set("a", &1)?;
///     tx.set("b", &2)?;
///     tx.len()
/// })?;
/// assert_eq!(n, 2);
/// # Ok(())
/// # }
/// ```
pub struct Transaction<'a> {
    engine: Engine<'a>,
}

/// The engine's transaction behind a [`Transaction`].
enum Engine<'a> {
    /// Inside a write transaction of the local engine's connection.
    Local(LocalTransaction<'a>),
    /// Buffered writes under a Redis store's transaction lock.
    #[cfg(feature = "redis")]
    Redis(&'a super::redis::RedisTransaction<'a>),
}

impl<'a> Transaction<'a> {
    /// The transaction of a local handle's write, run by `ops`.
    pub(super) fn local(ops: Ops<'a>) -> Transaction<'a> {
        Transaction {
            engine: Engine::Local(LocalTransaction { ops }),
        }
    }

    /// The transaction of a Redis handle.
    #[cfg(feature = "redis")]
    pub(super) fn redis(tx: &'a super::redis::RedisTransaction<'a>) -> Transaction<'a> {
        Transaction {
            engine: Engine::Redis(tx),
        }
    }
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match &self.engine {
            Engine::Local(e) => e.ops.path,
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        };
        f.debug_struct("Transaction")
            .field("path", &path)
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    /// As [`SharedData::get`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::get`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match &self.engine {
            Engine::Local(e) => e.get(key),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.get(key),
        }
    }

    /// As [`SharedData::set`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::set`].
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.set(key, value),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.set(key, value),
        }
    }

    /// As [`SharedData::delete`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::delete`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.delete(key),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.delete(key),
        }
    }

    /// As [`SharedData::contains_key`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::contains_key`].
    pub fn contains_key(&self, key: &str) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.contains_key(key),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.contains_key(key),
        }
    }

    /// As [`SharedData::keys`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::keys`].
    pub fn keys(&self) -> Result<Vec<String>> {
        match &self.engine {
            Engine::Local(e) => e.keys(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.keys(),
        }
    }

    /// As [`SharedData::len`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::len`].
    pub fn len(&self) -> Result<usize> {
        match &self.engine {
            Engine::Local(e) => e.len(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.len(),
        }
    }

    /// As [`SharedData::is_empty`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::is_empty`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// As [`SharedData::clear`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::clear`].
    pub fn clear(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.clear(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.clear(),
        }
    }

    /// As [`SharedData::update`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::update`].
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        match &self.engine {
            Engine::Local(e) => e.update(key, f),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.update(key, f),
        }
    }

    /// As [`SharedData::increment`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::increment`].
    pub fn increment(&self, key: &str, by: i64) -> Result<i64> {
        match &self.engine {
            Engine::Local(e) => e.increment(key, by),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.increment(key, by),
        }
    }

    /// As [`SharedData::compare_and_swap`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::compare_and_swap`].
    pub fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.compare_and_swap(key, expected, new),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.compare_and_swap(key, expected, new),
        }
    }

    /// As [`SharedData::dump`], inside the transaction.
    ///
    /// # Errors
    ///
    /// As [`SharedData::dump`].
    pub fn dump(&self) -> Result<Map<String, Value>> {
        match &self.engine {
            Engine::Local(e) => e.dump(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.dump(),
        }
    }
}

/// The operations of a transaction of the local engine, on the connection of the handle
/// whose write runs it.
struct LocalTransaction<'a> {
    ops: Ops<'a>,
}

impl LocalTransaction<'_> {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.ops.check_in_transaction()?;
        self.ops.get(key)
    }

    fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.ops.check_in_transaction()?;
        check_key(self.ops.path, key)?;
        let json = encode(self.ops.path, key, value)?;
        self.ops.put(key, &json)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.ops.check_in_transaction()?;
        check_key(self.ops.path, key)?;
        self.ops.delete(key)
    }

    fn contains_key(&self, key: &str) -> Result<bool> {
        self.ops.check_in_transaction()?;
        self.ops.contains_key(key)
    }

    fn keys(&self) -> Result<Vec<String>> {
        self.ops.check_in_transaction()?;
        self.ops.keys()
    }

    fn len(&self) -> Result<usize> {
        self.ops.check_in_transaction()?;
        self.ops.len()
    }

    fn clear(&self) -> Result<()> {
        self.ops.check_in_transaction()?;
        self.ops.clear()
    }

    fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        self.ops.check_in_transaction()?;
        check_key(self.ops.path, key)?;
        self.ops.update(key, f)
    }

    fn increment(&self, key: &str, by: i64) -> Result<i64> {
        self.ops.check_in_transaction()?;
        check_key(self.ops.path, key)?;
        self.ops.increment(key, by)
    }

    fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool> {
        self.ops.check_in_transaction()?;
        let (expected, new) = cas_operands(self.ops.path, key, expected, new)?;
        self.ops.compare_and_swap(key, expected.as_ref(), &new)
    }

    fn dump(&self) -> Result<Map<String, Value>> {
        self.ops.check_in_transaction()?;
        self.ops.dump()
    }
}
