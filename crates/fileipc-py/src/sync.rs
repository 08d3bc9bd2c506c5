//! `fileipc.Mutex` and `fileipc.Semaphore`: blocking calls wait in slices without the
//! GIL (see `wait`); both are context managers that wait without limit on entry.

use pyo3::prelude::*;

use std::path::PathBuf;

use crate::errors::to_py;
use crate::fork::Reopening;
use crate::wait::{deadline, sliced_bool};

/// A mutex named by a file path, excluding every process (and thread) that uses it;
/// released by the kernel when its holder dies.
///
/// `with Mutex(path): ...` waits for the lock without limit (Ctrl-C interrupts) and
/// releases it on exit. The lock is not re-entrant; one handle may be shared by
/// threads, which then exclude each other.
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct Mutex {
    path: PathBuf,
    inner: Reopening<fileipc::Mutex>,
}

#[pymethods]
impl Mutex {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let p = path.clone();
        let inner = Reopening::new(py, move || fileipc::Mutex::open(&p))?;
        Ok(Mutex { path, inner })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (PathBuf,))> {
        Ok((slf.get_type().into_any(), (slf.get().path.clone(),)))
    }

    /// The lock file's path.
    #[getter]
    fn path(&self) -> std::ffi::OsString {
        self.path.as_os_str().to_owned()
    }

    /// Takes the lock, waiting at most `timeout` seconds (`None`: without limit);
    /// whether it was taken.
    #[pyo3(signature = (timeout = 5.0))]
    fn lock(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        sliced_bool(py, deadline, |d| self.inner.get()?.lock_deadline(d))
    }

    /// Takes the lock if it is free; whether it was taken.
    fn try_lock(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.get()?.try_lock()).map_err(to_py)
    }

    /// Releases the lock; `fileipc.InvalidOperation` if this handle does not hold it.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.get()?.unlock()).map_err(to_py)
    }

    /// Whether any process holds the lock.
    fn is_locked(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.get()?.is_locked()).map_err(to_py)
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, Self>> {
        let inner = &slf.get().inner;
        sliced_bool(py, None, |d| inner.get()?.lock_deadline(d))?;
        Ok(slf.clone())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.unlock(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Mutex({:?})", self.path)
    }
}

/// A counting semaphore named by a file path; the permits of a holder that dies come
/// back. `initial` is the number of permits when the file is created (`None`: 1); when
/// it exists, an `initial` given must be its capacity (`InvalidOperation` otherwise),
/// and `None` takes the capacity it has.
///
/// `with Semaphore(path, 4): ...` waits for a permit without limit (Ctrl-C interrupts)
/// and releases it on exit.
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct Semaphore {
    path: PathBuf,
    initial: Option<u32>,
    inner: Reopening<fileipc::Semaphore>,
}

#[pymethods]
impl Semaphore {
    #[new]
    #[pyo3(signature = (path, initial = None))]
    fn new(py: Python<'_>, path: PathBuf, initial: Option<u32>) -> PyResult<Self> {
        let p = path.clone();
        let inner = Reopening::new(py, move || match initial {
            Some(n) => fileipc::Semaphore::open(&p, n),
            None => fileipc::Semaphore::options().open(&p),
        })?;
        Ok(Semaphore {
            path,
            initial,
            inner,
        })
    }

    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (PathBuf, Option<u32>))> {
        let s = slf.get();
        Ok((slf.get_type().into_any(), (s.path.clone(), s.initial)))
    }

    /// The semaphore file's path.
    #[getter]
    fn path(&self) -> std::ffi::OsString {
        self.path.as_os_str().to_owned()
    }

    /// Takes a permit, waiting at most `timeout` seconds (`None`: without limit);
    /// whether one was taken.
    #[pyo3(signature = (timeout = 5.0))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        sliced_bool(py, deadline, |d| self.inner.get()?.acquire_deadline(d))
    }

    /// Takes a permit if one is free; whether one was taken.
    fn try_acquire(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.get()?.try_acquire()).map_err(to_py)
    }

    /// Gives back a permit this process holds.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.get()?.release()).map_err(to_py)
    }

    /// The number of free permits.
    fn value(&self, py: Python<'_>) -> PyResult<u32> {
        py.detach(|| self.inner.get()?.value()).map_err(to_py)
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, Self>> {
        let inner = &slf.get().inner;
        sliced_bool(py, None, |d| inner.get()?.acquire_deadline(d))?;
        Ok(slf.clone())
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Semaphore({:?})", self.path)
    }
}
