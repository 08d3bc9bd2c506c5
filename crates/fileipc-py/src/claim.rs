//! `fileipc.Job`: a message claimed from a `fileipc.MessageQueue` (`claim`), to
//! acknowledge, give back or extend; a context manager that acknowledges on success and
//! gives back on an exception.
//!
//! A library claim borrows its queue handle; a job keeps an `Arc` of the handle and the
//! claim detached from it ([`fileipc::ClaimToken`]), attaching it again for each call.
//! A job that is neither acknowledged nor given back when it is collected gives its
//! message back at once, as a dropped library claim does, but only in the process that
//! claimed it: in a child made by `os.fork()` the claim is the parent's.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors::to_py;
use crate::fork;
use crate::wait::seconds;

/// A message claimed by `MessageQueue.claim`: invisible to other claimers until it is
/// acknowledged (`ack`), given back (`nack`, or the job being collected), its lease runs
/// out (`extend`), or the claiming process dies (then it is delivered again at once).
///
/// As a context manager (`with q.claim() as job: ...`) it acknowledges the message when
/// the block ends normally and gives it back (for immediate redelivery) when the block
/// raises; an `ack` or `nack` inside the block is final.
#[pyclass(frozen, module = "fileipc")]
pub(crate) struct Job {
    queue: Arc<fileipc::MessageQueue>,
    token: Mutex<Option<fileipc::ClaimToken>>,
    data: Py<PyBytes>,
    attempt: u32,
    fence: u64,
    seq: u64,
    dead_letter_attempts: u32,
    /// The fork generation of the process that claimed it.
    generation: u64,
}

impl Job {
    /// A job for `claim`, detached from `queue`.
    pub(crate) fn new(
        py: Python<'_>,
        queue: Arc<fileipc::MessageQueue>,
        claim: fileipc::Claimed<'_>,
    ) -> Job {
        let data = PyBytes::new(py, claim.bytes()).unbind();
        let (attempt, fence, seq) = (claim.attempt(), claim.fence(), claim.seq());
        let dead_letter_attempts = claim.dead_letter_attempts();
        Job {
            queue,
            token: Mutex::new(Some(claim.detach())),
            data,
            attempt,
            fence,
            seq,
            dead_letter_attempts,
            generation: fork::generation(),
        }
    }

    /// Runs `op` on the claim without the GIL; `keep` puts the claim back afterwards
    /// (`extend`), otherwise it is finished (`ack`, `nack`). An InvalidOperation if the
    /// job is finished already or was claimed by the parent of a forked process.
    fn with_claim(
        &self,
        py: Python<'_>,
        what: &str,
        keep: bool,
        op: impl FnOnce(&mut fileipc::Claimed<'_>) -> fileipc::Result<()> + Send,
        finish: impl FnOnce(fileipc::Claimed<'_>) -> fileipc::Result<()> + Send,
    ) -> PyResult<()> {
        let invalid = |detail: String| {
            to_py(fileipc::Error::Invalid {
                path: self.queue.path().to_owned(),
                detail,
            })
        };
        if self.generation != fork::generation() {
            return Err(invalid(format!(
                "{what}: message {} was claimed by the parent of this forked process",
                self.seq
            )));
        }
        // Taken out for the call (the lock is not held without the GIL).
        let taken = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(token) = taken else {
            return Err(invalid(format!(
                "{what}: message {} was already acknowledged or given back (or another \
                 thread is using the job)",
                self.seq
            )));
        };
        let queue = &self.queue;
        let (kept, result) = py.detach(|| {
            let mut claim = match token.attach(queue) {
                Ok(c) => c,
                Err(e) => return (None, Err(e)),
            };
            if let Err(e) = op(&mut claim) {
                return (Some(claim.detach()), Err(e));
            }
            if keep {
                (Some(claim.detach()), Ok(()))
            } else {
                (None, finish(claim))
            }
        });
        if let Some(kept) = kept {
            *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
        }
        result.map_err(to_py)
    }
}

#[pymethods]
impl Job {
    /// The message's bytes.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    /// The message's bytes (as `data`).
    #[getter]
    fn bytes(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    /// Which delivery of the message this is: 1 the first time, 2 after one redelivery...
    #[getter]
    fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The fencing token of this claim: higher than that of every earlier claim of the
    /// queue, never reused. Give it to what the work writes to, which refuses tokens
    /// lower than the highest it has seen.
    #[getter]
    fn fence(&self) -> u64 {
        self.fence
    }

    /// The message's sequence number in the queue.
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }

    /// In a dead-letter queue: how many deliveries the message had before it was moved
    /// there (0 elsewhere).
    #[getter]
    fn dead_letter_attempts(&self) -> u32 {
        self.dead_letter_attempts
    }

    /// Whether the job was acknowledged or given back.
    #[getter]
    fn done(&self) -> bool {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Acknowledges the message: its work is done, it is gone for good.
    /// `InvalidOperation` if the job is already finished, or if the lease ran out and
    /// another claimer took the message.
    fn ack(&self, py: Python<'_>) -> PyResult<()> {
        self.with_claim(py, "ack", false, |_| Ok(()), |c| c.ack())
    }

    /// Gives the message back, to be delivered again after `delay` seconds (0: at
    /// once); a message that had its `max_deliveries` goes to the dead letters instead.
    #[pyo3(signature = (delay = 0.0))]
    fn nack(&self, py: Python<'_>, delay: f64) -> PyResult<()> {
        let delay = seconds("delay", delay)?;
        self.with_claim(py, "nack", false, |_| Ok(()), move |c| c.nack(delay))
    }

    /// Extends the lease: the message stays this job's until `seconds` from now.
    fn extend(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let lease = crate::wait::seconds("seconds", seconds)?;
        self.with_claim(py, "extend", true, move |c| c.extend(lease), |_| Ok(()))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Acknowledges the message if the block ended normally, gives it back if it
    /// raised; nothing if the job was finished inside the block.
    fn __exit__(
        &self,
        py: Python<'_>,
        ty: Option<&Bound<'_, PyType>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.done() {
            if ty.is_none() {
                self.ack(py)?;
            } else {
                self.nack(py, 0.0)?;
            }
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Job(seq={}, attempt={}, fence={}, done={})",
            self.seq,
            self.attempt,
            self.fence,
            if self.done() { "True" } else { "False" }
        )
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let token = self
            .token
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(token) = token
            && self.generation == fork::generation()
        {
            // Dropping the attached claim gives the message back at once.
            drop(token.attach(&self.queue));
        }
    }
}
