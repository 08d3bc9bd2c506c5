//! `fileipc._SharedData`, the native core of `fileipc.SharedData` (the `MutableMapping`
//! in python/fileipc/__init__.py): values cross as JSON values (see `json`). Every call
//! releases the GIL, including `update`, whose callback takes it back: a thread holding
//! the GIL never waits for the store's connection.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use serde_json::Value;

use crate::errors::to_py;
use crate::fork::Reopening;
use crate::json;

/// The native store behind `fileipc.SharedData`.
#[pyclass(frozen, name = "_SharedData", module = "fileipc")]
pub(crate) struct SharedDataCore {
    path: std::path::PathBuf,
    inner: Reopening<fileipc::SharedData>,
}

#[pymethods]
impl SharedDataCore {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let p = path.clone();
        let inner = Reopening::new(py, move || fileipc::SharedData::open(&p))?;
        Ok(SharedDataCore { path, inner })
    }

    #[getter]
    fn path(&self) -> std::ffi::OsString {
        self.path.as_os_str().to_owned()
    }

    /// The value of `key`; `KeyError` if there is none.
    fn getitem<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match py
            .detach(|| self.inner.get()?.get::<Value>(key))
            .map_err(to_py)?
        {
            Some(v) => json::to_py(py, &v),
            None => Err(PyKeyError::new_err(key.to_owned())),
        }
    }

    fn set(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = json::to_value(value)?;
        py.detach(|| self.inner.get()?.set(key, &value))
            .map_err(to_py)
    }

    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        py.detach(|| self.inner.get()?.delete(key)).map_err(to_py)
    }

    fn contains(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        py.detach(|| self.inner.get()?.contains_key(key))
            .map_err(to_py)
    }

    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.get()?.keys()).map_err(to_py)
    }

    fn len(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.inner.get()?.len()).map_err(to_py)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.get()?.clear()).map_err(to_py)
    }

    fn dump<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let map = py.detach(|| self.inner.get()?.dump()).map_err(to_py)?;
        json::to_py(py, &Value::Object(map))
    }

    #[pyo3(signature = (key, by = 1))]
    fn increment(&self, py: Python<'_>, key: &str, by: i64) -> PyResult<i64> {
        py.detach(|| self.inner.get()?.increment(key, by))
            .map_err(to_py)
    }

    fn compare_and_swap(
        &self,
        py: Python<'_>,
        key: &str,
        expected: &Bound<'_, PyAny>,
        new: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let expected = if expected.is_none() {
            None
        } else {
            Some(json::to_value(expected)?)
        };
        let new = json::to_value(new)?;
        py.detach(|| {
            self.inner
                .get()?
                .compare_and_swap(key, expected.as_ref(), &new)
        })
        .map_err(to_py)
    }

    /// Runs `f(tx)` as one atomic transaction (see `transaction.rs`); what `f` returns.
    fn transaction(&self, py: Python<'_>, f: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let store = self.inner.get().map_err(to_py)?;
        crate::transaction::transaction(py, &store, &self.path, f)
    }

    /// Atomically replaces the value of `key` with `f(current)` (`None` for a missing
    /// key); `f` returning `None` deletes the key. Returns the new value. If `f`
    /// raises, nothing is changed and the exception propagates.
    fn update<'py>(&self, py: Python<'py>, key: &str, f: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let mut raised: Option<PyErr> = None;
        let result = py.detach(|| {
            self.inner.get()?.transaction(|tx| {
                let old: Option<Value> = tx.get(key)?;
                let new = Python::attach(|py| -> PyResult<Option<Value>> {
                    let arg = match &old {
                        Some(v) => json::to_py(py, v)?,
                        None => py.None().into_bound(py),
                    };
                    let out = f.bind(py).call1((arg,))?;
                    if out.is_none() {
                        Ok(None)
                    } else {
                        json::to_value(&out).map(Some)
                    }
                });
                match new {
                    Ok(Some(v)) => {
                        tx.set(key, &v)?;
                        Ok(Some(v))
                    }
                    Ok(None) => {
                        tx.delete(key)?;
                        Ok(None)
                    }
                    Err(e) => {
                        raised = Some(e);
                        Err(fileipc::Error::Invalid {
                            path: self.path.clone(),
                            detail: "the update function raised".to_owned(),
                        })
                    }
                }
            })
        });
        if let Some(e) = raised {
            return Err(e);
        }
        match result.map_err(to_py)? {
            Some(v) => json::to_py(py, &v),
            None => Ok(py.None().into_bound(py)),
        }
    }
}
