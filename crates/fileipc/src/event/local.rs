//! The local engine of [`Event`](super::Event): the event is the existence of a file.
//!
//! `set` creates the file (`O_CREAT | O_EXCL`, never through a link), `clear` unlinks
//! it, `is_set` is an `lstat`.
//!
//! Waiting is kernel-assisted: a waiter watches the parent directory (inotify on Linux)
//! and sleeps until the name is created there or moved there. The watch is armed before
//! the waiter checks the event, so a `set` racing with the start of a wait is never
//! missed. A waiter that was woken by the creation of its name reports `true` even if
//! the event has been cleared again by the time it looks: a waiter never sleeps past a
//! `set`, however briefly the event stayed set, with two exceptions: the portable
//! polling backend, which can only look, may miss an event set and cleared between two
//! looks; and on Linux, a set cleared again is lost if the watch's inotify queue
//! overflows (more than `fs.inotify.max_queued_events`, default 16384, entries created
//! in the directory while the waiter did not read; see docs/FORMAT.md, "Event").
//!
//! A handle keeps the watch of its last wait for the next one: closing an inotify
//! instance waits for an RCU grace period (measured: a short wait costs ~0.5 ms with a
//! fresh watch, ~0.1 ms with the kept one). So each handle that has waited holds one
//! inotify instance (a descriptor) until it is dropped; Linux allows 128 instances per
//! user by default (`fs.inotify.max_user_instances`), so programs waiting on hundreds of
//! events at once should raise that limit or share handles. The kept watch belongs to
//! the process that made it: a child created by `fork` that waits on an inherited handle
//! closes its copy unread (one memory read, [`sys::fork_epoch`], tells it is a child) and
//! makes its own, so parent and children never take each other's wake-ups.
//!
//! inotify follows the directory's inode, not its path: while sleeping, the watch checks
//! every 100 ms that the path still leads to the watched directory, and a waiter whose
//! path was re-pointed (an ancestor renamed away and recreated, a symbolic link in the
//! path changed) watches the directory the path leads to now and looks again.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use crate::error::{Error, IoResultExt, Result};
use crate::sys::{self, DirEvent, DirWatch};

/// An event whose state is the existence of a directory entry at `path`.
pub(super) struct LocalEvent {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    mode: u32,
    /// The last wait's directory watch, kept for the next one (see `wait_until`), with
    /// the [`sys::fork_epoch`] of the process that made it: a forked child shares the
    /// parent's inotify instance, so it must never use (or read) an inherited watch.
    watch: StdMutex<Option<(u64, DirWatch)>>,
}

impl fmt::Debug for LocalEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish_non_exhaustive()
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

impl LocalEvent {
    /// Opens the event at `path`, whose file gets `mode` when set; see
    /// [`Event::open`](super::Event::open) for what is refused.
    pub(super) fn open(path: &Path, mode: u32) -> Result<LocalEvent> {
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
        let event = LocalEvent {
            path: path.to_owned(),
            dir,
            name: name.to_owned(),
            mode,
            watch: StdMutex::new(None),
        };
        event.check_existing()?;
        Ok(event)
    }

    /// [`Event::try_clone`](super::Event::try_clone).
    pub(super) fn try_clone(&self) -> Result<LocalEvent> {
        LocalEvent::open(&self.path, self.mode)
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
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file (mode `self.mode`, never through a link); an entry already
    /// there means the event is set already.
    pub(super) fn set(&self) -> Result<()> {
        match sys::create_new_file(&self.path, self.mode) {
            Ok(_file) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("set", &self.path, e)),
        }
    }

    /// Unlinks the entry at the path (a link, never its target); none there means the
    /// event is clear already.
    pub(super) fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("clear", &self.path, e)),
        }
    }

    /// Whether anything exists at the path (`lstat`); a missing directory reads as
    /// "not set".
    pub(super) fn is_set(&self) -> Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", &self.path, e)),
        }
    }

    /// Waits until the event is set or `deadline` passes (`None`: without limit);
    /// `true` if it was set at some moment during the call.
    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.is_set()? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Ok(false);
        }
        // Reuse the last wait's watch if no other thread is using it: creating an
        // inotify instance is cheap but destroying one waits for an RCU grace period.
        // A watch inherited through fork() is shared with the parent (and its other
        // children): reading it would steal their wake-ups, so it is only closed here.
        let epoch = sys::fork_epoch();
        let cached = self.watch.lock().map(|mut w| w.take()).unwrap_or(None);
        let mut watch = match cached {
            // Events queued since the last wait are about earlier sets; drop them. If
            // the directory went away meanwhile, the watch is dead: watch the new one.
            Some((e, w))
                if e == epoch && w.discard().at("watch the directory of", &self.path)? =>
            {
                w
            }
            _ => self.new_watch()?,
        };
        let result = self.wait_with(&mut watch, deadline);
        if result.is_ok()
            && let Ok(mut slot) = self.watch.lock()
            && slot.as_ref().is_none_or(|(e, _)| *e != epoch)
        {
            *slot = Some((epoch, watch));
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
    use crate::Event;
    use std::time::Duration;

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
        let e = LocalEvent::open(Path::new("some-event-that-does-not-exist"), 0o600).unwrap();
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
