//! The native module `fileipc._fileipc`: the six primitives of the `fileipc` crate as
//! Python classes. The Python package `fileipc` (python/fileipc/) re-exports them, adds
//! `SharedData` as a `MutableMapping` over `_SharedData`, and defines the exception
//! classes that `errors::to_py` raises.

mod claim;
mod errors;
mod event;
mod fork;
mod json;
mod pidfile;
mod queue;
mod shared;
mod sync;
mod transaction;
mod wait;

use pyo3::prelude::*;

/// The native part of the `fileipc` package; import `fileipc` instead.
#[pymodule]
fn _fileipc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<queue::MessageQueue>()?;
    m.add_class::<claim::Job>()?;
    m.add_class::<sync::Mutex>()?;
    m.add_class::<sync::Semaphore>()?;
    m.add_class::<event::Event>()?;
    m.add_class::<pidfile::PidFile>()?;
    m.add_class::<shared::SharedDataCore>()?;
    m.add_class::<transaction::Transaction>()?;
    m.add_function(wrap_pyfunction!(fork::after_fork_in_child, m)?)?;
    m.add("DEFAULT_TIMEOUT", fileipc::DEFAULT_TIMEOUT.as_secs_f64())?;
    m.add("WAIT_BACKEND", fileipc::WAIT_BACKEND)?;
    Ok(())
}
