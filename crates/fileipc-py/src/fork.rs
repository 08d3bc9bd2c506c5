//! Handles that become distinct owners in a child made by `os.fork()`.
//!
//! The library refuses a `Mutex`, `Semaphore` or `SharedData` handle inherited across
//! `fork` (its lock or connection is the parent's). The package registers
//! [`after_fork_in_child`] with `os.register_at_fork`, which moves the fork
//! generation on; a [`Reopening`] handle used in a later generation first opens its
//! primitive again by path (dropping the inherited copy, which the library makes
//! harmless in a child), so in the child it is an owner of its own: it holds nothing
//! the parent holds, and what it takes is released when the child dies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use pyo3::prelude::*;

use crate::errors::to_py;

/// Moved on in every child made by `os.fork()`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Called by `os.register_at_fork(after_in_child=...)` (see `fileipc/__init__.py`).
#[pyfunction]
pub(crate) fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This process's fork generation: it differs in every child made by `os.fork()`.
pub(crate) fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

type Opener<T> = Box<dyn Fn() -> fileipc::Result<T> + Send + Sync>;

/// A library handle, opened again by `open` when used in a forked child.
pub(crate) struct Reopening<T> {
    generation: AtomicU64,
    handle: RwLock<Arc<T>>,
    open: Opener<T>,
}

impl<T> Reopening<T> {
    /// Opens the handle with `open` (without the GIL), which is kept to reopen it.
    pub(crate) fn new(
        py: Python<'_>,
        open: impl Fn() -> fileipc::Result<T> + Send + Sync + 'static,
    ) -> PyResult<Self>
    where
        T: Send,
    {
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        let handle = py.detach(&open).map_err(to_py)?;
        Ok(Reopening {
            generation: AtomicU64::new(generation),
            handle: RwLock::new(Arc::new(handle)),
            open: Box::new(open),
        })
    }

    /// The handle of this process (one atomic load and a shared lock when not forked).
    pub(crate) fn get(&self) -> fileipc::Result<Arc<T>> {
        let now = FORK_GENERATION.load(Ordering::Relaxed);
        if self.generation.load(Ordering::Relaxed) == now {
            return Ok(self
                .handle
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone());
        }
        let mut handle = self.handle.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Relaxed) != now {
            *handle = Arc::new((self.open)()?);
            self.generation.store(now, Ordering::Relaxed);
        }
        Ok(handle.clone())
    }
}
