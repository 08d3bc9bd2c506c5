//! Portable backend for Unix systems without a supported kernel wait primitive.
//!
//! Waits poll with exponential back-off from 50 us to 2 ms. This is the code a platform
//! without futexes or inotify runs; Linux runs it too with the `force-portable` feature.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::remaining;

pub(super) const NAME: &str = "portable (polling)";

const FIRST_NAP: Duration = Duration::from_micros(50);
const LONGEST_NAP: Duration = Duration::from_millis(2);

fn nap(deadline: Option<Instant>, nap: Duration) {
    let d = match remaining(deadline) {
        Some(left) => left.min(nap),
        None => nap,
    };
    std::thread::sleep(d);
}

/// Returns after one short sleep if `*word == expected`; callers loop and re-check.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> io::Result<()> {
    // Back off longer the longer the word stays unchanged: keyed on a per-thread
    // counter that resets whenever the caller observes a change.
    thread_local!(static NAP: std::cell::Cell<(usize, u32, Duration)> =
        const { std::cell::Cell::new((0, 0, FIRST_NAP)) });
    let key = word as *const AtomicU32 as usize;
    let d = NAP.with(|c| {
        let (k, v, d) = c.get();
        let d = if k == key && v == expected {
            (d * 2).min(LONGEST_NAP)
        } else {
            FIRST_NAP
        };
        c.set((key, expected, d));
        d
    });
    if word.load(Ordering::Acquire) == expected {
        nap(deadline, d);
    }
    Ok(())
}

/// Nothing to wake: waiters poll.
pub(crate) fn futex_wake(_word: &AtomicU32, _n: u32) -> io::Result<usize> {
    Ok(0)
}

/// Unknown here: liveness falls back to the PID alone.
pub(crate) fn process_start_time(_pid: u32) -> Option<u64> {
    None
}

/// Polls a directory for a name.
#[derive(Debug)]
pub(crate) struct DirWatch {
    dir: PathBuf,
    /// The directory as it was when the watch was made, to tell that it was removed
    /// (no links left) from a path that leads nowhere for a moment (an ancestor being
    /// swapped); `None` if it cannot be opened (no read permission): then a path that
    /// leads to no directory counts as removed.
    handle: Option<std::fs::File>,
}

impl DirWatch {
    /// Starts watching `dir`, which must be a directory.
    pub(crate) fn new(dir: &Path) -> io::Result<DirWatch> {
        let meta = std::fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other("not a directory"));
        }
        Ok(DirWatch {
            dir: dir.to_owned(),
            handle: std::fs::File::open(dir).ok(),
        })
    }

    /// Whether the directory is gone: removed (no links left), or, without a handle,
    /// the path leads to no directory.
    fn gone(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match &self.handle {
            Some(f) => f.metadata().is_ok_and(|m| m.nlink() == 0),
            None => !std::fs::metadata(&self.dir).is_ok_and(|m| m.is_dir()),
        }
    }

    /// Polls, with the back-off above, until an entry named `name` exists in the
    /// directory, the directory is gone, or `deadline` passes. An entry created and
    /// removed again between two polls is not seen: only kernel notification sees those.
    /// Each poll looks the path up anew, so a path re-pointed to another directory (an
    /// ancestor swapped, a symbolic link changed) is followed at once.
    pub(crate) fn wait_for(
        &self,
        name: &OsStr,
        deadline: Option<Instant>,
    ) -> io::Result<super::DirEvent> {
        let path = self.dir.join(name);
        let mut d = FIRST_NAP;
        loop {
            match std::fs::symlink_metadata(&path) {
                Ok(_) => return Ok(super::DirEvent::Appeared),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.gone() {
                        return Ok(super::DirEvent::Gone);
                    }
                }
                Err(e) => return Err(e),
            }
            if remaining(deadline).is_some_and(|r| r.is_zero()) {
                return Ok(super::DirEvent::TimedOut);
            }
            nap(deadline, d);
            d = (d * 2).min(LONGEST_NAP);
        }
    }

    /// Nothing is queued when polling, and each poll looks at the directory anew.
    pub(crate) fn discard(&self) -> io::Result<bool> {
        Ok(true)
    }
}
