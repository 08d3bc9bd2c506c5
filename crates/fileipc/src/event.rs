//! A manual-reset event: set while a file exists.
//!
//! The state of the event *is* the existence of a directory entry at its path: [`set`]
//! creates an empty file, [`clear`] removes it, [`is_set`] asks whether something is
//! there. So shell users and other programs take part without this library:
//! `touch PATH` sets the event, `rm -f PATH` clears it, `test -e PATH` reads it.
//!
//! Waiting is kernel-assisted: a waiter watches the parent directory (inotify on Linux)
//! and sleeps until the name is created there or moved there. The watch is armed before
//! the waiter checks the event, so a `set` racing with the start of a wait is never
//! missed. A waiter that was woken by the creation of its name reports `true` even if
//! the event has been cleared again by the time it looks: a waiter never sleeps past a
//! `set`, however briefly the event stayed set (the portable polling backend, which can
//! only look, may miss an event set and cleared between two looks).
//!
//! A handle keeps the watch of its last wait for the next one: closing an inotify
//! instance waits for an RCU grace period (measured: a short wait costs ~0.5 ms with a
//! fresh watch, ~0.1 ms with the kept one). So each handle that has waited holds one
//! inotify instance (a descriptor) until it is dropped; Linux allows 128 instances per
//! user by default (`fs.inotify.max_user_instances`), so programs waiting on hundreds of
//! events at once should raise that limit or share handles.
//!
//! [`set`]: Event::set
//! [`clear`]: Event::clear
//! [`is_set`]: Event::is_set

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use crate::error::{Error, IoResultExt, Result};
use crate::sys::{self, DirEvent, DirWatch};

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
/// assert!(event.wait()?);                   // returns at once: it is set
/// event.clear()?;
/// assert!(!event.is_set()?);
/// # Ok(())
/// # }
/// ```
pub struct Event {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    mode: u32,
    /// The last wait's directory watch, kept for the next one (see `wait_until`).
    watch: StdMutex<Option<DirWatch>>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish_non_exhaustive()
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
    pub fn open(self, path: impl AsRef<Path>) -> Result<Event> {
        Event::open_with(path.as_ref(), self)
    }
}

/// Magic numbers of files that are certainly not events: clearing one would destroy
/// another primitive's state.
const FOREIGN_MAGIC: [(&[u8], &str); 2] = [
    (&crate::state::MAGIC, "a fileipc state file"),
    (
        b"SQLite format 3\0",
        "an SQLite database (a fileipc shared data store?)",
    ),
];

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
        Event::open_with(path.as_ref(), EventOptions::default())
    }

    /// Options to open an event with, e.g. another mode; see [`EventOptions`].
    pub fn options() -> EventOptions {
        EventOptions::default()
    }

    fn open_with(path: &Path, opts: EventOptions) -> Result<Event> {
        let Some(name) = path.file_name() else {
            return Err(Error::invalid(
                path,
                "an event path must end in a file name",
            ));
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let meta = std::fs::metadata(&dir).at("open the directory of", path)?;
        if !meta.is_dir() {
            return Err(Error::io(
                "open the directory of",
                path,
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        let event = Event {
            path: path.to_owned(),
            dir,
            name: name.to_owned(),
            mode: opts.mode,
            watch: StdMutex::new(None),
        };
        event.check_existing()?;
        Ok(event)
    }

    /// Refuses a directory or another primitive's file at the path.
    fn check_existing(&self) -> Result<()> {
        let path = &self.path;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", path, e)),
        };
        const EXPECTED: &str = "fileipc event file (any file, usually empty)";
        if meta.is_dir() {
            return Err(Error::format(path, EXPECTED, "it is a directory"));
        }
        if !meta.is_file() || meta.len() < 8 {
            return Ok(());
        }
        let file = match sys::open_nofollow(path, false) {
            Ok(f) => f,
            // Vanished or replaced meanwhile, or unreadable to us: nothing to check.
            Err(_) => return Ok(()),
        };
        let mut head = [0u8; 16];
        let n = file.read_at(&mut head, 0).unwrap_or(0);
        for (magic, what) in FOREIGN_MAGIC {
            if head[..n].starts_with(magic) {
                return Err(Error::format(path, EXPECTED, format!("it is {what}")));
            }
        }
        Ok(())
    }

    /// The path of the event file.
    pub fn path(&self) -> &Path {
        &self.path
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
    pub fn set(&self) -> Result<()> {
        match sys::create_new_file(&self.path, self.mode) {
            Ok(_file) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("set", &self.path, e)),
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
    pub fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("clear", &self.path, e)),
        }
    }

    /// Whether the event is set: whether anything exists at its path (`lstat`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if it cannot be examined (no search permission on
    /// the directory). A missing directory reads as "not set".
    pub fn is_set(&self) -> Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", &self.path, e)),
        }
    }

    /// Waits until the event is set, at most [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)
    /// (5 s); `true` if it was set, `false` at the timeout. Returns at once if it is set.
    ///
    /// # Errors
    ///
    /// As [`wait_deadline`](Event::wait_deadline).
    pub fn wait(&self) -> Result<bool> {
        self.wait_timeout(crate::DEFAULT_TIMEOUT)
    }

    /// Whether the event is set, without waiting: the same as [`is_set`](Event::is_set),
    /// named for symmetry with the other `try_` calls of the crate.
    ///
    /// # Errors
    ///
    /// As [`is_set`](Event::is_set).
    pub fn try_wait(&self) -> Result<bool> {
        self.is_set()
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
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(crate::deadline_after(timeout))
    }

    /// Waits until the event is set or `deadline` passes; `true` if it was set.
    ///
    /// `true` means the event was set at some moment during the call: a waiter woken
    /// by the creation of the file reports it even if another process cleared the
    /// event again before this call returned.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if the directory cannot be watched (on Linux, the
    /// per-user inotify limits `fs.inotify.max_user_instances` and
    /// `max_user_watches` apply: `EMFILE`/`ENOSPC`), or if the directory is deleted
    /// while waiting (`NotFound`, reported at once, not at the deadline).
    pub fn wait_deadline(&self, deadline: Instant) -> Result<bool> {
        self.wait_until(Some(deadline))
    }

    /// Waits until the event is set, without time limit.
    ///
    /// # Errors
    ///
    /// As [`wait_deadline`](Event::wait_deadline).
    pub fn wait_forever(&self) -> Result<bool> {
        self.wait_until(None)
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.is_set()? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Ok(false);
        }
        // Reuse the last wait's watch if no other thread is using it: creating an
        // inotify instance is cheap but destroying one waits for an RCU grace period.
        let cached = self.watch.lock().map(|mut w| w.take()).unwrap_or(None);
        let mut watch = match cached {
            // Events queued since the last wait are about earlier sets; drop them. If
            // the directory went away meanwhile, the watch is dead: watch the new one.
            Some(w) if w.discard().at("watch the directory of", &self.path)? => w,
            _ => self.new_watch()?,
        };
        let result = self.wait_with(&mut watch, deadline);
        if result.is_ok()
            && let Ok(mut slot) = self.watch.lock()
        {
            slot.get_or_insert(watch);
        }
        result
    }

    fn new_watch(&self) -> Result<DirWatch> {
        DirWatch::new(&self.dir).at("watch the directory of", &self.path)
    }

    /// The wait proper, with a watch armed before the first look.
    fn wait_with(&self, watch: &mut DirWatch, deadline: Option<Instant>) -> Result<bool> {
        loop {
            if self.is_set()? {
                return Ok(true);
            }
            match watch
                .wait_for(&self.name, deadline)
                .at("wait for", &self.path)?
            {
                DirEvent::Appeared => return Ok(true),
                DirEvent::TimedOut => return self.is_set(),
                DirEvent::Lost => {}
                // The directory was removed or renamed: watch whatever directory is at
                // the path now, or report that there is none.
                DirEvent::Gone => *watch = self.new_watch()?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn refuses_directories_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = Event::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("it is a directory"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"FILEIPC\0\x01\0\0\0").unwrap();
        let e = Event::open(&f).unwrap_err();
        assert!(e.to_string().contains("fileipc state file"), "{e}");
        std::fs::write(&f, b"hello, world").unwrap();
        assert!(Event::open(&f).unwrap().is_set().unwrap());
    }

    #[test]
    fn relative_path_uses_current_directory() {
        let e = Event::open("some-event-that-does-not-exist").unwrap();
        assert_eq!(e.dir, Path::new("."));
        assert!(!e.is_set().unwrap());
    }

    #[test]
    fn cached_watch_ignores_stale_events() {
        let dir = tempfile::tempdir().unwrap();
        let e = Event::open(dir.path().join("ev")).unwrap();
        assert!(!e.wait_timeout(Duration::from_millis(1)).unwrap());
        // Set and clear while nobody waits: the cached watch queues a create event.
        e.set().unwrap();
        e.clear().unwrap();
        assert!(!e.wait_timeout(Duration::from_millis(20)).unwrap());
    }
}
