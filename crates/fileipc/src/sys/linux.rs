//! Linux backend: futexes on shared mappings, inotify, `/proc` start times.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify;
use rustix::io::Errno;
use rustix::thread::futex;

use super::remaining;

pub(super) const NAME: &str = "linux (futex, inotify)";

/// Sleeps while `*word == expected`, until woken by [`futex_wake`], until `deadline`,
/// or spuriously. Callers re-check their condition in a loop. The futex is *shared*
/// (no `FUTEX_PRIVATE_FLAG`): its waiters and wakers live in different processes.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let ts = match remaining(deadline) {
        Some(d) if d.is_zero() => return Ok(()),
        Some(d) => Some(timespec(d)),
        None => None,
    };
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Wakes up to `n` waiters sleeping on `word` (`u32::MAX`: all); returns how many were
/// woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> io::Result<usize> {
    // The kernel reads the count as a signed int: `u32::MAX` would be -1, and wake just
    // one waiter. `i32::MAX` is "all" (measured: 1 of 3 sleepers woken vs 3 of 3).
    let n = n.min(i32::MAX as u32);
    futex::wake(word, futex::Flags::empty(), n).map_err(Into::into)
}

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`); `None` if there is no such process or it is a zombie.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything, including
    // ") "; the fields after it start after the *last* ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" {
        return None;
    }
    // Fields 4..=21 come next; field 22 is the start time.
    fields.nth(18)?.parse().ok()
}

/// How often a waiting [`DirWatch`] checks that its directory's path still leads to the
/// directory it watches (an ancestor renamed away and recreated, a symbolic link in the
/// path re-pointed): inotify follows the inode, not the path.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Watches one directory for names created in it or moved into it.
#[derive(Debug)]
pub(crate) struct DirWatch {
    fd: OwnedFd,
    /// The path the directory was watched by, and the (device, inode) it led to.
    dir: PathBuf,
    id: (u64, u64),
}

/// The (device, inode) of the directory `dir` leads to now (links followed).
fn dir_identity(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    Ok((m.dev(), m.ino()))
}

impl DirWatch {
    /// Starts watching `dir`. Events that happen after this call are not missed.
    pub(crate) fn new(dir: &Path) -> io::Result<DirWatch> {
        // The identity is taken before the watch is added: if the path is re-pointed in
        // between, the first re-check sees a difference and watches anew (harmless).
        let id = dir_identity(dir)?;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::CREATE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::ONLYDIR
                | inotify::WatchFlags::DELETE_SELF
                | inotify::WatchFlags::MOVE_SELF,
        )?;
        Ok(DirWatch {
            fd,
            dir: dir.to_owned(),
            id,
        })
    }

    /// Whether the watched path leads to another directory now than when the watch was
    /// made. A path that leads nowhere (mid-swap) is not a change: the next check decides.
    fn repointed(&self) -> bool {
        dir_identity(&self.dir).is_ok_and(|id| id != self.id)
    }

    /// Sleeps until an entry named `name` is created in (or moved into) the directory,
    /// the directory goes away, events are lost, or `deadline` passes; says which. Events
    /// queued before the call count: call [`DirWatch::discard`] first to ignore them.
    ///
    /// Every [`RECHECK`] (100 ms) of sleep, the path is checked to still lead to the
    /// watched directory; if it leads to another one, this returns `Gone`, so the caller
    /// watches the directory the path leads to now.
    pub(crate) fn wait_for(
        &self,
        name: &OsStr,
        deadline: Option<Instant>,
    ) -> io::Result<super::DirEvent> {
        let mut next_check = Instant::now() + RECHECK;
        loop {
            if let Some(ev) = self.scan(name)? {
                return Ok(ev);
            }
            let now = Instant::now();
            if now >= next_check {
                // Checked by the clock, not only after a quiet slice: a busy old
                // directory must not keep a waiter on it.
                if self.repointed() {
                    return Ok(super::DirEvent::Gone);
                }
                next_check = now + RECHECK;
            }
            let slice = next_check - now;
            let slice = match deadline.map(|d| d.saturating_duration_since(now)) {
                Some(d) if d.is_zero() => return Ok(super::DirEvent::TimedOut),
                Some(d) => d.min(slice),
                None => slice,
            };
            let ts = timespec(slice);
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Drops every event queued so far (stale events from before a new wait); `false`
    /// if one said the directory went away, so the watch is dead and must be replaced.
    pub(crate) fn discard(&self) -> io::Result<bool> {
        Ok(self.scan(OsStr::new(""))? != Some(super::DirEvent::Gone))
    }

    /// Reads all pending events; the most telling one: the name appeared (even if the
    /// directory went away after), else the directory is gone, else events were lost.
    fn scan(&self, name: &OsStr) -> io::Result<Option<super::DirEvent>> {
        use super::DirEvent::{Appeared, Gone, Lost};
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd.as_fd(), &mut buf);
        let mut found = None;
        loop {
            match reader.next() {
                Ok(ev) => {
                    let flags = ev.events();
                    let this = if flags.intersects(
                        inotify::ReadFlags::DELETE_SELF
                            | inotify::ReadFlags::MOVE_SELF
                            | inotify::ReadFlags::IGNORED
                            | inotify::ReadFlags::UNMOUNT,
                    ) {
                        Some(Gone)
                    } else if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                        Some(Lost)
                    } else if !name.is_empty()
                        && ev
                            .file_name()
                            .is_some_and(|n| n.to_bytes() == name.as_bytes())
                    {
                        Some(Appeared)
                    } else {
                        None
                    };
                    found = match (found, this) {
                        (Some(Appeared), _) | (_, Some(Appeared)) => Some(Appeared),
                        (Some(Gone), _) | (_, Some(Gone)) => Some(Gone),
                        (a, b) => a.or(b),
                    };
                }
                Err(Errno::AGAIN) => return Ok(found),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn timespec(d: std::time::Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn futex_wake_all_wakes_every_sleeper() {
        static WORD: AtomicU32 = AtomicU32::new(0);
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    let until = std::time::Instant::now() + Duration::from_secs(30);
                    while WORD.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        futex_wait(&WORD, 0, Some(until)).unwrap();
                    }
                })
            })
            .collect();
        // Wake until all three were woken at once by one call (a sleeper may not be
        // asleep yet when a call is made: then that call wakes fewer, and we go on).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(std::time::Instant::now() < deadline, "never woke 3 at once");
            std::thread::sleep(Duration::from_millis(20));
            if futex_wake(&WORD, u32::MAX).unwrap() == 3 {
                break;
            }
        }
        WORD.store(1, std::sync::atomic::Ordering::SeqCst);
        futex_wake(&WORD, u32::MAX).unwrap();
        for s in sleepers {
            s.join().unwrap();
        }
    }
}
