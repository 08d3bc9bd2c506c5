//! `SharedData.transaction(fn)`: `fn(tx)` runs as one atomic transaction of the store.
//!
//! A library transaction lives inside the closure given to
//! `fileipc::SharedData::transaction`, and the Python function must reach it through an
//! object it can keep. The transaction therefore runs on a scoped thread of its own,
//! which serves the requests of the `_Transaction` object handed to the Python
//! function over a channel until that function returns; it then commits (or rolls back
//! if the function raised). Once it is over the object refuses every call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use serde_json::{Map, Value};

use crate::errors::to_py;
use crate::json;

/// One call of the Python function on its transaction.
enum Op {
    Get(String),
    Set(String, Value),
    Delete(String),
    Contains(String),
    Keys,
    Len,
    Increment(String, i64),
    CompareAndSwap(String, Option<Value>, Value),
    Dump,
}

/// What an [`Op`] returns.
enum Reply {
    Value(Option<Value>),
    Bool(bool),
    Int(i64),
    Keys(Vec<String>),
    Len(usize),
    Map(Map<String, Value>),
    Done,
}

type Request = (Op, mpsc::SyncSender<fileipc::Result<Reply>>);

fn run(tx: &fileipc::Transaction<'_>, op: Op) -> fileipc::Result<Reply> {
    Ok(match op {
        Op::Get(k) => Reply::Value(tx.get(&k)?),
        Op::Set(k, v) => {
            tx.set(&k, &v)?;
            Reply::Done
        }
        Op::Delete(k) => Reply::Bool(tx.delete(&k)?),
        Op::Contains(k) => Reply::Bool(tx.contains_key(&k)?),
        Op::Keys => Reply::Keys(tx.keys()?),
        Op::Len => Reply::Len(tx.len()?),
        Op::Increment(k, by) => Reply::Int(tx.increment(&k, by)?),
        Op::CompareAndSwap(k, expected, new) => {
            Reply::Bool(tx.compare_and_swap(&k, expected.as_ref(), &new)?)
        }
        Op::Dump => Reply::Map(tx.dump()?),
    })
}

/// Runs `f(tx)` as one transaction of `store` (see the module's documentation); what
/// `f` returns, or the exception it raised (then nothing it wrote is kept).
pub(crate) fn transaction(
    py: Python<'_>,
    store: &fileipc::SharedData,
    path: &std::path::Path,
    f: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let (requests, served) = mpsc::channel::<Request>();
    let tx = Bound::new(
        py,
        Transaction {
            path: path.to_owned(),
            requests: Mutex::new(Some(requests)),
        },
    )?;
    let commit = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            store.transaction(|t| {
                // Until the Python function returned and its object was closed.
                for (op, reply) in served.iter() {
                    let _ = reply.send(run(t, op));
                }
                if commit.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(fileipc::Error::Invalid {
                        path: path.to_owned(),
                        detail: "the transaction function raised; rolled back".to_owned(),
                    })
                }
            })
        });
        let out = f.call1((tx.clone(),));
        commit.store(out.is_ok(), Ordering::SeqCst);
        tx.get().close();
        let done = py.detach(|| worker.join());
        let out = out?;
        match done {
            Ok(result) => result.map_err(to_py)?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        Ok(out.unbind())
    })
}

/// The transaction handed to the function of `SharedData.transaction`: reads and writes
/// of the store inside it, as the store's own methods. Valid only until that function
/// returns.
#[pyclass(frozen, name = "_Transaction", module = "fileipc")]
pub(crate) struct Transaction {
    path: std::path::PathBuf,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
}

impl Transaction {
    fn close(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// `op` run by the transaction's thread, waited for without the GIL.
    fn call(&self, py: Python<'_>, op: Op) -> PyResult<Reply> {
        let sender = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let over = || {
            to_py(fileipc::Error::Invalid {
                path: self.path.clone(),
                detail: "the transaction is over (use its object only inside the function)"
                    .to_owned(),
            })
        };
        let Some(sender) = sender else {
            return Err(over());
        };
        let (reply, answer) = mpsc::sync_channel(1);
        sender.send((op, reply)).map_err(|_| over())?;
        drop(sender);
        py.detach(move || answer.recv())
            .map_err(|_| over())?
            .map_err(to_py)
    }
}

#[pymethods]
impl Transaction {
    /// The value of `key`, or `default`.
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: String,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.call(py, Op::Get(key))? {
            Reply::Value(Some(v)) => json::to_py(py, &v),
            _ => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        match self.call(py, Op::Get(key.clone()))? {
            Reply::Value(Some(v)) => json::to_py(py, &v),
            _ => Err(PyKeyError::new_err(key)),
        }
    }

    fn __setitem__(&self, py: Python<'_>, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = json::to_value(value)?;
        self.call(py, Op::Set(key, value)).map(drop)
    }

    fn __delitem__(&self, py: Python<'_>, key: String) -> PyResult<()> {
        match self.call(py, Op::Delete(key.clone()))? {
            Reply::Bool(true) => Ok(()),
            _ => Err(PyKeyError::new_err(key)),
        }
    }

    fn __contains__(&self, py: Python<'_>, key: String) -> PyResult<bool> {
        Ok(matches!(
            self.call(py, Op::Contains(key))?,
            Reply::Bool(true)
        ))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        match self.call(py, Op::Len)? {
            Reply::Len(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// The keys.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        match self.call(py, Op::Keys)? {
            Reply::Keys(k) => Ok(k),
            _ => Ok(Vec::new()),
        }
    }

    /// Removes `key`; whether it was there.
    fn delete(&self, py: Python<'_>, key: String) -> PyResult<bool> {
        Ok(matches!(self.call(py, Op::Delete(key))?, Reply::Bool(true)))
    }

    /// Adds `by` to the integer at `key` (missing: 0); the new value.
    #[pyo3(signature = (key, by = 1))]
    fn increment(&self, py: Python<'_>, key: String, by: i64) -> PyResult<i64> {
        match self.call(py, Op::Increment(key, by))? {
            Reply::Int(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Stores `new` if the current value equals `expected` (`None`: absent); whether it did.
    fn compare_and_swap(
        &self,
        py: Python<'_>,
        key: String,
        expected: &Bound<'_, PyAny>,
        new: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let expected = if expected.is_none() {
            None
        } else {
            Some(json::to_value(expected)?)
        };
        let new = json::to_value(new)?;
        let op = Op::CompareAndSwap(key, expected, new);
        Ok(matches!(self.call(py, op)?, Reply::Bool(true)))
    }

    /// Every key and value.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.call(py, Op::Dump)? {
            Reply::Map(m) => json::to_py(py, &Value::Object(m)),
            _ => json::to_py(py, &Value::Object(Map::new())),
        }
    }
}
