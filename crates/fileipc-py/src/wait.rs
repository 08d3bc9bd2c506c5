//! Blocking calls from Python: the GIL is released while the library waits, and the
//! wait is cut into slices of at most [`SLICE`], between which pending signals are
//! handled (`check_signals`), so that Ctrl-C interrupts a waiting call at once.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The longest a blocking call waits without handling signals.
pub(crate) const SLICE: Duration = Duration::from_millis(25);

/// The deadline of a Python `timeout` argument in seconds: `None` (or `inf`, or a
/// value too large for `Instant`) waits forever; negative or NaN is a `ValueError`.
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(t) = timeout else { return Ok(None) };
    if t.is_nan() || t < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, not {t}"
        )));
    }
    Ok(Duration::try_from_secs_f64(t)
        .ok()
        .and_then(|d| Instant::now().checked_add(d)))
}

/// A duration argument `what` in seconds (finite, non-negative) as a `Duration`.
pub(crate) fn seconds(what: &str, t: f64) -> PyResult<Duration> {
    if t.is_nan() || t < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {t}"
        )));
    }
    Duration::try_from_secs_f64(t)
        .map_err(|_| PyValueError::new_err(format!("{what} is too large: {t} seconds")))
}

/// Calls `step(slice_deadline)` without the GIL until it returns `Some`, or until
/// `deadline` passes (then `None`); between calls, runs Python's signal handlers and
/// returns the exception one raises (`KeyboardInterrupt` for Ctrl-C). `step` is called
/// at least once, so a zero timeout is a single attempt.
pub(crate) fn sliced<T, F>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut step: F,
) -> PyResult<Option<T>>
where
    T: Send,
    F: FnMut(Instant) -> fileipc::Result<Option<T>> + Send,
{
    loop {
        let now = Instant::now();
        let slice_end = match deadline {
            Some(d) => d.min(now + SLICE),
            None => now + SLICE,
        };
        if let Some(v) = py
            .detach(|| step(slice_end))
            .map_err(crate::errors::to_py)?
        {
            return Ok(Some(v));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

/// [`sliced`] for the calls that answer `true` (done) or `false` (timed out).
pub(crate) fn sliced_bool<F>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut step: F,
) -> PyResult<bool>
where
    F: FnMut(Instant) -> fileipc::Result<bool> + Send,
{
    Ok(sliced(py, deadline, |d| Ok(step(d)?.then_some(())))?.is_some())
}
