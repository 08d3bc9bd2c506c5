//! A manual-reset event: set while a file exists.
//!
//! The state of the event *is* the existence of a directory entry at its path: [`set`]
//! creates an empty file, [`clear`] removes it, [`is_set`] asks whether something is
//! there. So shell users and other programs take part without this library:
//! `touch PATH` sets the event, `rm -f PATH` clears it, `test -e PATH` reads it.
//!
//! This file holds the public front: [`Event`], which dispatches every call to its
//! engine, and [`EventOptions`]. The local engine (the file itself, and waits on a
//! watch of its directory) is in `local.rs`, with the argument that no `set` is missed.
//!
//! [`set`]: Event::set
//! [`clear`]: Event::clear
//! [`is_set`]: Event::is_set

mod local;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

use local::LocalEvent;

/// The mode of an event file created by [`Event::set`] unless
/// [`EventOptions::mode`] says otherwise: read-write for its owner only, like every
/// fileipc state file. The file never holds data, so its mode only matters to tools
/// that open it; anyone who may write the directory may set or clear the event.
const DEFAULT_MODE: u32 = 0o600;

/// A manual-reset event shared by processes through a file: set while the file exists.
///
/// Handles are cheap: opening one touches nothing on disk besides checking that the
/// parent directory exists. Any number of processes (and threads, the handle is
/// `Send + Sync`) may set, clear and wait on the same path. The event is set exactly
/// while a directory entry exists at the path, so `touch PATH` sets it, `rm PATH`
/// clears it and `test -e PATH` reads it: shell users take part without this library.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("ready");
/// use std::time::Duration;
/// use fileipc::Event;
///
/// let event = Event::open(&path)?;          // does not set it
/// assert!(!event.wait_timeout(Duration::from_millis(10))?);
/// event.set()?;                             // from any process
/// event.wait_forever()?;                    // returns at once: it is set
/// event.clear()?;
/// assert!(!event.is_set()?);
/// # Ok(())
/// # }
/// ```
pub struct Event {
    engine: Engine,
}

/// The engine behind an [`Event`] handle.
enum Engine {
    /// The event is a file in the local file system.
    Local(LocalEvent),
    /// A flag and a generation on a Redis server.
    #[cfg(feature = "redis")]
    Redis(Box<self::redis::RedisEvent>),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each engine formats itself as `Event { .. }`.
        match &self.engine {
            Engine::Local(e) => fmt::Debug::fmt(e, f),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => fmt::Debug::fmt(e, f),
        }
    }
}

/// Options for opening an [`Event`]: the mode its file gets when set.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("ready");
/// use std::os::unix::fs::PermissionsExt;
///
/// let event = fileipc::EventOptions::new().mode(0o640).open(&path)?;
/// event.set()?;
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOptions {
    mode: u32,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions { mode: DEFAULT_MODE }
    }
}

impl EventOptions {
    /// The default options: mode 0600.
    pub fn new() -> Self {
        Self::default()
    }

    /// The permission bits the event file gets when [`Event::set`] creates it, exactly
    /// (not filtered by the umask). Bits outside `0o777` are ignored. A file created by
    /// another program (`touch`) has whatever mode that program gave it.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Opens the event at `path` with these options; see [`Event::open`].
    ///
    /// # Errors
    ///
    /// As [`Event::open`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Event> {
        let engine = match crate::location::Location::parse(path.as_ref())? {
            crate::location::Location::Path(p) => Engine::Local(LocalEvent::open(&p, self.mode)?),
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(Box::new(self::redis::RedisEvent::open(u)?)));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?}")
            })?,
        };
        Ok(Event { engine })
    }
}

impl Event {
    /// Opens the event at `path` without changing it.
    ///
    /// The parent directory must exist; the file itself need not. Whatever exists at
    /// `path` counts as "set" (an empty file, a file with content, a symbolic link, which
    /// is never followed), except what would be destroyed by [`clear`](Event::clear)
    /// by mistake: a directory or another fileipc primitive's file is refused.
    ///
    /// # Errors
    ///
    /// - [`Error::Io`] with kind `NotFound` naming `path` if its parent directory does
    ///   not exist (`ENOTDIR` if the parent is not a directory).
    /// - [`Error::Invalid`] if `path` does not end in a file name (`/`, `..`).
    /// - [`Error::Format`] if a directory or another primitive's state file is at `path`.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = fileipc::Event::open("/nonexistent-dir/ready").unwrap_err();
    /// assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound));
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Event> {
        EventOptions::default().open(path)
    }

    /// The same as [`open`](Event::open), which never creates anything either (an
    /// event's file exists exactly while it is set); named like the other primitives'
    /// `open_existing`, whose rule it follows: `NotFound` naming `path` if its directory
    /// does not exist.
    ///
    /// # Errors
    ///
    /// As [`open`](Event::open).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Event> {
        EventOptions::default().open(path)
    }

    /// Options to open an event with, e.g. another mode; see [`EventOptions`].
    pub fn options() -> EventOptions {
        EventOptions::default()
    }

    /// A new handle on the same path, opened again with the same options. Handles
    /// hold nothing on behalf of their user, so this is the same as sharing one handle
    /// (it is `Send + Sync`) through an `Arc`; it exists for symmetry with the other
    /// primitives.
    ///
    /// # Errors
    ///
    /// As [`Event::open`].
    pub fn try_clone(&self) -> Result<Event> {
        match &self.engine {
            Engine::Local(e) => Ok(Event {
                engine: Engine::Local(e.try_clone()?),
            }),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => EventOptions::new().open(e.path()),
        }
    }

    /// Removes the event: its file, which is all its state, so this is
    /// [`clear`](Event::clear) under the name every primitive has. Waiters keep waiting
    /// for the next [`set`](Event::set).
    ///
    /// # Errors
    ///
    /// As [`clear`](Event::clear).
    pub fn destroy(&self) -> Result<()> {
        self.clear()
    }

    /// The path of the event file.
    pub fn path(&self) -> &Path {
        match &self.engine {
            Engine::Local(e) => e.path(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        }
    }

    /// Sets the event: creates its file (empty, mode 0600 unless
    /// [`EventOptions::mode`] says otherwise) and wakes every waiter. Setting a set
    /// event changes nothing. A symbolic link at the path counts as set and is never
    /// followed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if the file cannot be created (the directory was
    /// removed, no permission to write it, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let event = fileipc::Event::open(dir.path().join("go"))?;
    /// event.set()?;
    /// event.set()?; // still set, no error
    /// assert!(event.is_set()?);
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn set(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.set(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.set(),
        }
    }

    /// Clears the event: removes its file (or link, never its target). Clearing a
    /// clear event changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if the entry cannot be removed (no permission to
    /// write the directory, a directory was put at the path).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let event = fileipc::Event::open(dir.path().join("go"))?;
    /// event.set()?;
    /// event.clear()?;
    /// event.clear()?; // still clear, no error
    /// assert!(!event.is_set()?);
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn clear(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.clear(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.clear(),
        }
    }

    /// Whether the event is set: whether anything exists at its path (`lstat`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if it cannot be examined (no search permission on
    /// the directory). A missing directory reads as "not set".
    #[inline]
    pub fn is_set(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.is_set(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.is_set(),
        }
    }

    /// Waits until the event is set, at most [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)
    /// (5 s); `true` if it was set, `false` at the timeout. Returns at once if it is set.
    ///
    /// # Errors
    ///
    /// As [`wait_deadline`](Event::wait_deadline).
    #[must_use = "`false` means the event was not set (the wait timed out)"]
    pub fn wait(&self) -> Result<bool> {
        self.wait_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Whether the event is set, without waiting: the same as [`is_set`](Event::is_set),
    /// named for symmetry with the other `try_` calls of the crate.
    ///
    /// # Errors
    ///
    /// As [`is_set`](Event::is_set).
    #[inline]
    #[must_use = "`false` means the event was not set (the wait timed out)"]
    pub fn try_wait(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.is_set(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.is_set(),
        }
    }

    /// Waits at most `timeout` until the event is set; `true` if it was set, `false` at
    /// the timeout. A timeout too large to represent waits forever.
    ///
    /// # Errors
    ///
    /// As [`wait_deadline`](Event::wait_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let event = fileipc::Event::open(dir.path().join("never"))?;
    /// assert!(!event.wait_timeout(Duration::from_millis(20))?);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use = "`false` means the event was not set (the wait timed out)"]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        let deadline = crate::deadline_after(timeout);
        match &self.engine {
            Engine::Local(e) => e.wait_until(deadline),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.wait_until(deadline),
        }
    }

    /// Waits until the event is set or `deadline` passes; `true` if it was set.
    ///
    /// `true` means the event was set at some moment during the call: a waiter woken
    /// by the creation of the file reports it even if another process cleared the
    /// event again before this call returned. (Limit on Linux: a set cleared again is
    /// lost if more than `fs.inotify.max_queued_events` entries, default 16384, are
    /// created in the directory while the waiter cannot run; see docs/FORMAT.md.)
    ///
    /// The wait follows the path, not the directory it led to at first: every 100 ms
    /// of sleep it checks that the path still leads to the watched directory, so an
    /// ancestor renamed away and recreated, or a re-pointed symbolic link in the path,
    /// delays a wake-up by at most that. A handle used in a child created by `fork`
    /// makes its own watch there.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if the directory cannot be watched (on Linux, the
    /// per-user inotify limits `fs.inotify.max_user_instances` and
    /// `max_user_watches` apply: `EMFILE`/`ENOSPC`), or if the directory is deleted
    /// while waiting (`NotFound`, reported at once, not at the deadline).
    #[must_use = "`false` means the event was not set (the wait timed out)"]
    pub fn wait_deadline(&self, deadline: Instant) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.wait_until(Some(deadline)),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.wait_until(Some(deadline)),
        }
    }

    /// Waits until the event is set, without time limit; returns once it was set (like
    /// the other `_forever` calls, which return `()` or what they obtained, never a
    /// `bool`).
    ///
    /// # Errors
    ///
    /// As [`wait_deadline`](Event::wait_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let event = fileipc::Event::open(dir.path().join("ready"))?;
    /// let setter = event.try_clone()?;
    /// std::thread::spawn(move || setter.set());
    /// event.wait_forever()?;
    /// assert!(event.is_set()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_forever(&self) -> Result<()> {
        match &self.engine {
            Engine::Local(e) => e.wait_until(None).map(drop),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.wait_until(None).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Event>();
    }

    #[test]
    fn refuses_paths_without_file_name() {
        let e = Event::open("/").unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
    }
}
