//! [`Namespace`]: a temporary directory of primitives, removed with everything in it
//! when dropped, for tests and short-lived jobs.

use std::path::{Path, PathBuf};

use crate::error::{IoResultExt, Result};
use crate::{Event, MessageQueue, Mutex, PidFile, Semaphore, SharedData};

/// A fresh private directory (mode `0o700`) for primitives, removed with everything in
/// it when the `Namespace` is dropped, like `tempfile::TempDir`.
///
/// Removal takes the files from under handles still open, in this process or others:
/// as with each primitive's `destroy`, those keep working on the removed files (a
/// SharedData store refuses their writes), and nothing at the old paths exists for new
/// handles. Drop the handles first, or [`keep`](Namespace::keep) the directory.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// let ns = fileipc::Namespace::new()?;
/// let jobs = ns.queue("jobs")?;
/// let lock = ns.mutex("jobs.lock")?;
/// jobs.send("one")?;
/// {
///     let _guard = lock.guard_forever()?;
///     assert_eq!(jobs.recv_forever()?, "one");
/// }
/// let dir = ns.path().to_owned();
/// drop((jobs, lock));
/// drop(ns);
/// assert!(!dir.exists());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Namespace {
    /// `None` only after `keep` or `close`; the `TempDir` removes the directory when
    /// dropped.
    dir: Option<tempfile::TempDir>,
}

impl Namespace {
    /// Creates a new directory `fileipc-XXXXXX` in the system's temporary directory
    /// (`$TMPDIR`, else `/tmp`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if the directory cannot be created.
    pub fn new() -> Result<Namespace> {
        Namespace::new_in(std::env::temp_dir())
    }

    /// Creates a new directory `fileipc-XXXXXX` in `parent`, which must exist.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) naming `parent` if the directory cannot be
    /// created.
    pub fn new_in(parent: impl AsRef<Path>) -> Result<Namespace> {
        let parent = parent.as_ref();
        let dir = tempfile::Builder::new()
            .prefix("fileipc-")
            .tempdir_in(parent)
            .at("create a directory in", parent)?;
        Ok(Namespace { dir: Some(dir) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }

    /// The path of `name` in the directory, for a primitive opened with options.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path().join(name)
    }

    /// [`Mutex::open`] on `name` in the directory.
    ///
    /// # Errors
    ///
    /// As [`Mutex::open`].
    pub fn mutex(&self, name: impl AsRef<Path>) -> Result<Mutex> {
        Mutex::open(self.join(name))
    }

    /// [`Semaphore::open`] on `name` in the directory.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::open`].
    pub fn semaphore(&self, name: impl AsRef<Path>, initial: u32) -> Result<Semaphore> {
        Semaphore::open(self.join(name), initial)
    }

    /// [`Event::open`] on `name` in the directory.
    ///
    /// # Errors
    ///
    /// As [`Event::open`].
    pub fn event(&self, name: impl AsRef<Path>) -> Result<Event> {
        Event::open(self.join(name))
    }

    /// [`MessageQueue::open`] on `name` in the directory.
    ///
    /// # Errors
    ///
    /// As [`MessageQueue::open`].
    pub fn queue(&self, name: impl AsRef<Path>) -> Result<MessageQueue> {
        MessageQueue::open(self.join(name))
    }

    /// [`SharedData::open`] on `name` in the directory.
    ///
    /// # Errors
    ///
    /// As [`SharedData::open`].
    pub fn shared_data(&self, name: impl AsRef<Path>) -> Result<SharedData> {
        SharedData::open(self.join(name))
    }

    /// [`PidFile::open`] on `name` in the directory.
    ///
    /// # Errors
    ///
    /// As [`PidFile::open`].
    pub fn pid_file(&self, name: impl AsRef<Path>) -> Result<PidFile> {
        PidFile::open(self.join(name))
    }

    /// Keeps the directory and returns its path: nothing is removed.
    pub fn keep(mut self) -> PathBuf {
        self.dir.take().expect("present until dropped").keep()
    }

    /// Removes the directory and everything in it now, reporting an error (dropping
    /// ignores them).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) naming the directory if it cannot be removed.
    pub fn close(mut self) -> Result<()> {
        let dir = self.dir.take().expect("present until dropped");
        let path = dir.path().to_owned();
        dir.close().at("remove", &path)
    }
}
