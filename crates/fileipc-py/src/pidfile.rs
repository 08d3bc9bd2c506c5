//! `fileipc.PidFile`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

use crate::errors::to_py;

/// A PID file guarding a single instance: `create()` makes this process its owner
/// (taking over a file whose owner died), the file stays locked while the handle lives,
/// and `remove()` (or `with`'s exit) removes it.
///
/// `with PidFile(path): ...` raises `fileipc.AlreadyRunning` if a live process owns
/// the file.
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct PidFile {
    // `create` and `remove` take `&mut`: threads sharing the handle take turns.
    inner: Mutex<fileipc::PidFile>,
}

impl PidFile {
    fn inner(&self) -> MutexGuard<'_, fileipc::PidFile> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PidFile {
    #[new]
    fn new(path: std::path::PathBuf) -> PyResult<Self> {
        let inner = fileipc::PidFile::open(&path).map_err(to_py)?;
        Ok(PidFile {
            inner: Mutex::new(inner),
        })
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (std::path::PathBuf,))> {
        Ok((slf.get_type().into_any(), (slf.get().path().into(),)))
    }

    /// The PID file's path.
    #[getter]
    fn path(&self) -> std::ffi::OsString {
        self.inner().path().as_os_str().to_owned()
    }

    /// Makes this process the owner; `False` if another live process (or another handle
    /// in this process) owns the file.
    fn create(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner().create()).map_err(to_py)
    }

    /// The process ID in the file; `None` if there is no file.
    fn read(&self, py: Python<'_>) -> PyResult<Option<u32>> {
        py.detach(|| self.inner().read()).map_err(to_py)
    }

    /// Removes the file if this handle owns it, and gives up ownership.
    fn remove(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner().remove()).map_err(to_py)
    }

    /// Whether this handle owns the file.
    fn is_owner(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner().is_owner()).map_err(to_py)
    }

    /// What is at the path: `("absent", None)`, `("running", pid)` or `("stale", pid)`
    /// (a file whose owner died; the next `create` takes it over).
    fn status(&self, py: Python<'_>) -> PyResult<(&'static str, Option<u32>)> {
        let status = py.detach(|| self.inner().status()).map_err(to_py)?;
        let name = match status {
            fileipc::PidStatus::Absent => "absent",
            fileipc::PidStatus::Running { .. } => "running",
            _ => "stale",
        };
        Ok((name, status.pid()))
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, Self>> {
        if slf.get().create(py)? {
            return Ok(slf.clone());
        }
        let pid = slf.get().read(py)?;
        let path = slf.get().path();
        let make = py.import("fileipc._errors")?.getattr("already_running")?;
        Err(PyErr::from_value(make.call1((path, pid))?))
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.remove(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("PidFile({:?})", self.inner().path())
    }
}
