//! `fileipc.MessageQueue`.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::PyBytes;

use crate::claim::Job;
use crate::errors::to_py;
use crate::fork::Reopening;
use crate::wait::{deadline, seconds, sliced};

/// A message queue at a directory path, shared by any processes that open it: many
/// producers, many consumers, each message delivered once, in order per producer.
///
/// `MessageQueue(path)` opens the queue, creating the directory if it is missing.
/// Messages are bytes; a `str` is sent as its UTF-8 encoding. For `claim`: `lease`
/// (seconds a claimed message stays invisible unless acknowledged; default 30) and
/// `max_deliveries` (deliveries after which a message goes to the dead letters; 0, the
/// default: no limit).
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct MessageQueue {
    path: std::path::PathBuf,
    lease: Option<f64>,
    max_deliveries: u32,
    // Reopened in a forked child, like every handle of the package: the child owns
    // what it takes through a handle of its own.
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
    #[pyo3(signature = (path, lease = None, max_deliveries = 0))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        lease: Option<f64>,
        max_deliveries: u32,
    ) -> PyResult<Self> {
        let opts = options(lease, max_deliveries)?;
        let p = path.clone();
        let inner = Reopening::new(py, move || opts.open(&p))?;
        Ok(MessageQueue {
            path,
            lease,
            max_deliveries,
            inner,
        })
    }

    /// The queue's directory and claim options.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (std::path::PathBuf, Option<f64>, u32))> {
        let q = slf.get();
        Ok((
            slf.get_type().into_any(),
            (q.path.clone(), q.lease, q.max_deliveries),
        ))
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

    /// Claims the next message, waiting at most `timeout` seconds (`None`: without
    /// limit): a `Job` to acknowledge when its work is done, or `None` if none came in
    /// time. Ctrl-C interrupts the wait. `with q.claim() as job: ...` acknowledges on
    /// success and gives the message back on an exception.
    #[pyo3(signature = (timeout = 5.0))]
    fn claim(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Job>> {
        let deadline = deadline(timeout)?;
        let q = self.inner.get().map_err(to_py)?;
        let token = sliced(py, deadline, |d| {
            Ok(q.claim_deadline(d)?.map(fileipc::Claimed::detach))
        })?;
        job(py, q, token)
    }

    /// Claims the next message if one can be had now, without waiting.
    fn try_claim(&self, py: Python<'_>) -> PyResult<Option<Job>> {
        let q = self.inner.get().map_err(to_py)?;
        let token = py
            .detach(|| Ok(q.try_claim()?.map(fileipc::Claimed::detach)))
            .map_err(to_py)?;
        job(py, q, token)
    }

    /// The dead-letter queue: the messages claimed `max_deliveries` times without being
    /// acknowledged (claim them to read `Job.dead_letter_attempts`), an ordinary queue
    /// in the sub-directory `dead-letters`.
    fn dead_letters(&self, py: Python<'_>) -> PyResult<MessageQueue> {
        let opts = options(self.lease, self.max_deliveries)?;
        let p = self.path.clone();
        let inner = Reopening::new(py, move || opts.open(&p)?.dead_letters())?;
        let path = inner.get().map_err(to_py)?.path().to_owned();
        Ok(MessageQueue {
            path,
            lease: self.lease,
            max_deliveries: 0,
            inner,
        })
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

/// The library options of `MessageQueue(path, lease, max_deliveries)`.
fn options(lease: Option<f64>, max_deliveries: u32) -> PyResult<fileipc::QueueOptions> {
    let mut opts = fileipc::MessageQueue::options().max_deliveries(max_deliveries);
    if let Some(lease) = lease {
        opts = opts.lease(seconds("lease", lease)?);
    }
    Ok(opts)
}

/// The `Job` of a claim detached from `q`.
fn job(
    py: Python<'_>,
    q: std::sync::Arc<fileipc::MessageQueue>,
    token: Option<fileipc::ClaimToken>,
) -> PyResult<Option<Job>> {
    let Some(token) = token else {
        return Ok(None);
    };
    let q2 = q.clone();
    let claim = token.attach(&q2).map_err(to_py)?;
    Ok(Some(Job::new(py, q, claim)))
}
