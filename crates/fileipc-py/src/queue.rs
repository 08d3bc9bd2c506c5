//! `fileipc.MessageQueue`.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::PyBytes;

use crate::errors::to_py;
use crate::fork::Reopening;
use crate::wait::{deadline, sliced};

/// A message queue at a directory path, shared by any processes that open it: many
/// producers, many consumers, each message delivered once, in order per producer.
///
/// `MessageQueue(path)` opens the queue, creating the directory if it is missing.
/// Messages are bytes; a `str` is sent as its UTF-8 encoding.
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct MessageQueue {
    path: std::path::PathBuf,
    // Reopened in a forked child: children of one parent sending concurrently through
    // the inherited library handle lose messages (crates/fileipc-py/tests,
    // `test_child_is_a_distinct_owner[fork]`), through handles of their own they do not.
    inner: Reopening<fileipc::MessageQueue>,
}

/// The bytes of a message argument: `bytes`, `bytearray` or `str` (UTF-8).
enum Payload {
    Bytes(PyBackedBytes),
    Str(PyBackedStr),
}

impl Payload {
    fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Payload> {
        if let Ok(s) = obj.extract::<PyBackedStr>() {
            return Ok(Payload::Str(s));
        }
        match obj.extract::<PyBackedBytes>() {
            Ok(b) => Ok(Payload::Bytes(b)),
            Err(_) => Err(PyTypeError::new_err(format!(
                "a message is bytes, bytearray or str, not {}",
                obj.get_type().name()?
            ))),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b,
            Payload::Str(s) => s.as_bytes(),
        }
    }
}

#[pymethods]
impl MessageQueue {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let p = path.clone();
        let inner = Reopening::new(py, move || fileipc::MessageQueue::open(&p))?;
        Ok(MessageQueue { path, inner })
    }

    /// The queue's directory.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (std::path::PathBuf,))> {
        Ok((slf.get_type().into_any(), (slf.get().path.clone(),)))
    }

    #[getter]
    fn path(&self) -> std::ffi::OsString {
        self.path.as_os_str().to_owned()
    }

    /// Appends `message` (bytes, bytearray or str) to the queue.
    fn send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let payload = Payload::extract(message)?;
        let bytes = payload.bytes();
        py.detach(|| self.inner.get()?.send(bytes)).map_err(to_py)
    }

    /// Takes the next message, waiting at most `timeout` seconds (`None`: without
    /// limit); `None` if none came in time. Ctrl-C interrupts the wait.
    #[pyo3(signature = (timeout = 5.0))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let deadline = deadline(timeout)?;
        let msg = sliced(py, deadline, |d| self.inner.get()?.recv_deadline(d))?;
        Ok(msg.map(|m| PyBytes::new(py, &m)))
    }

    /// Takes the next message if there is one, without waiting.
    fn try_recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let msg = py.detach(|| self.inner.get()?.try_recv()).map_err(to_py)?;
        Ok(msg.map(|m| PyBytes::new(py, &m)))
    }

    /// The number of messages in the queue.
    fn count(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.get()?.count()).map_err(to_py)
    }

    /// Whether the queue holds no message.
    fn is_empty(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.get()?.is_empty()).map_err(to_py)
    }

    /// Discards every message in the queue.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.get()?.clear()).map_err(to_py)
    }

    /// Removes the queue's directory; every handle on it fails from then on.
    fn destroy(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.get()?.destroy()).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("MessageQueue({:?})", self.path)
    }
}
