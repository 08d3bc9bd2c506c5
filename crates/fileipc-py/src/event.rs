//! `fileipc.Event`.

use pyo3::prelude::*;

use crate::errors::to_py;
use crate::wait::{deadline, sliced_bool};

/// An event named by a file path: set while the file exists (`touch PATH` sets it,
/// `rm PATH` clears it).
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct Event {
    inner: fileipc::Event,
}

#[pymethods]
impl Event {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| fileipc::Event::open(&path)).map_err(to_py)?;
        Ok(Event { inner })
    }

    /// The event file's path.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (std::path::PathBuf,))> {
        Ok((
            slf.get_type().into_any(),
            (slf.get().inner.path().to_path_buf(),),
        ))
    }

    #[getter]
    fn path(&self) -> std::ffi::OsString {
        self.inner.path().as_os_str().to_owned()
    }

    /// Sets the event, waking every waiter.
    fn set(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.set()).map_err(to_py)
    }

    /// Clears the event.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.clear()).map_err(to_py)
    }

    /// Whether the event is set.
    fn is_set(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.is_set()).map_err(to_py)
    }

    /// Waits at most `timeout` seconds (`None`: without limit) until the event is set;
    /// whether it was.
    #[pyo3(signature = (timeout = 5.0))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        sliced_bool(py, deadline, |d| self.inner.wait_deadline(d))
    }

    fn __repr__(&self) -> String {
        format!("Event({:?})", self.inner.path())
    }
}
