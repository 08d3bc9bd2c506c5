//! The local engine of [`PidFile`](super::PidFile): ownership is an exclusive `flock`
//! on the file at the path, held by the owning handle's descriptor.
//!
//! - `create` opens what is at the path without following a link and locks it before
//!   anything else; only the lock holder truncates and rewrites it, so a running
//!   owner's PID is never disturbed. A missing file is written completely and locked
//!   under a temporary name, then linked into place (`persist_noclobber`), so nobody
//!   sees it empty or unlocked. After locking, `create` checks that the locked file is
//!   still the one at the path (its owner may have removed it in between) and starts
//!   over if not.
//! - `remove` unlinks before it unlocks, so nobody takes over a file about to vanish;
//!   it and `Drop` remove only the file this handle locked.
//! - `status` probes with a shared lock, released at once.
//! - A file nobody locks is stale if it is empty or names a PID no process has; one
//!   naming a live process other than this one was written by a program that does not
//!   lock it (`echo $! > app.pid`): `create` leaves it alone unless forced, and
//!   `status` says so. Whether a PID is alive is [`sys::process_exists`], asked only
//!   of such unlocked files, never of a file a fileipc owner holds.
//! - A handle belongs to the process (the `fork` generation, [`sys::fork_epoch`]) that
//!   created the file: in a child forked without `exec` it owns nothing, so the child's
//!   drop neither removes nor unlocks its parent's file (it only closes its own copy of
//!   the descriptor, which leaves the parent's lock in place).
//! - [`share_with_children`](LocalPidFile::share_with_children) lets the programs this
//!   process runs inherit the locked descriptor: the file stays locked while any of them
//!   keeps it, whatever happens to this process; this handle's `remove` and drop then
//!   remove the file only if no one else holds it any more.

use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PidStatus;
use super::parse::{EXPECTED, MAX_LEN, parse_pid, pid_line};
use crate::error::{Error, IoResultExt, Result};
use crate::sys;

/// How often `create` starts over when the file changes under it before giving up.
const MAX_ATTEMPTS: usize = 100;

/// A PID file in the local file system, owned while `owned` holds its locked file.
pub(super) struct LocalPidFile {
    path: PathBuf,
    mode: u32,
    /// The locked file while this handle owns the PID file.
    owned: Option<File>,
    /// The [`sys::fork_epoch`] of the process that took the lock.
    epoch: u64,
    /// Whether programs this process runs inherit the locked descriptor.
    shared: bool,
    /// The generation of the ownership `owned` holds (see [`generation_after`]).
    generation: u64,
}

impl fmt::Debug for LocalPidFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PidFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &self.owned.is_some())
            .finish()
    }
}

impl LocalPidFile {
    /// A handle on the PID file at `path`, which gets `mode` when this process creates
    /// or takes it over. Touches nothing on disk.
    pub(super) fn open(path: &Path, mode: u32) -> Result<LocalPidFile> {
        if path.file_name().is_none() {
            return Err(Error::invalid(
                path,
                "a PID file path must end in a file name",
            ));
        }
        Ok(LocalPidFile {
            path: path.to_owned(),
            mode,
            owned: None,
            epoch: 0,
            shared: false,
            generation: 0,
        })
    }

    /// Forgets the lock if this handle was inherited by a forked child: the lock is the
    /// parent's. Closing the child's copy of the descriptor leaves it in place.
    fn drop_if_forked(&mut self) {
        if self.owned.is_some() && self.epoch != sys::fork_epoch() {
            self.owned = None;
            self.shared = false;
        }
    }

    /// See [`PidFile::share_with_children`](super::PidFile::share_with_children).
    pub(super) fn share_with_children(&mut self) -> Result<i32> {
        use std::os::fd::AsRawFd;
        self.drop_if_forked();
        let Some(file) = &self.owned else {
            return Err(Error::invalid(
                &self.path,
                "this handle does not own the PID file; nothing to share",
            ));
        };
        sys::set_inherited(file, true).at("fcntl", &self.path)?;
        self.shared = true;
        Ok(file.as_raw_fd())
    }

    /// Closes a shared descriptor, then removes the file if nobody else (a program that
    /// inherited it) still holds the lock: locks it through a new description first.
    fn finish_shared(&mut self, file: File) -> Result<()> {
        drop(file);
        self.shared = false;
        let f = match sys::open_nofollow(&self.path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        if sys::try_lock_exclusive(&f).at("lock", &self.path)?
            && sys::is_same_file(&f, &self.path).at("stat", &self.path)?
        {
            std::fs::remove_file(&self.path).at("remove", &self.path)?;
        }
        Ok(())
    }

    /// The path of the PID file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes this process the owner; see [`PidFile::create`](super::PidFile::create).
    /// `force`: also take over a file naming a live process that holds no lock on it
    /// ([`PidFile::create_force`](super::PidFile::create_force)).
    pub(super) fn create(&mut self, force: bool) -> Result<bool> {
        self.drop_if_forked();
        self.epoch = sys::fork_epoch();
        if let Some(file) = &self.owned {
            if sys::is_same_file(file, &self.path).at("stat", &self.path)? {
                return Ok(true);
            }
            // Our file was removed or replaced behind our back: we own nothing.
            self.owned = None;
        }
        for _ in 0..MAX_ATTEMPTS {
            let file = match sys::open_nofollow(&self.path, true) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match self.create_new()? {
                    Some((file, generation)) => {
                        self.owned = Some(file);
                        self.generation = generation;
                        return Ok(true);
                    }
                    None => continue, // someone created it meanwhile
                },
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return self.probe_unwritable(e);
                }
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                    return Err(Error::format(&self.path, EXPECTED, "it is a directory"));
                }
                Err(e) => return Err(Error::io("open", &self.path, e)),
            };
            let meta = file.metadata().at("stat", &self.path)?;
            if !meta.is_file() {
                return Err(Error::format(&self.path, EXPECTED, "not a regular file"));
            }
            if !sys::try_lock_exclusive(&file).at("lock", &self.path)? {
                return Ok(false);
            }
            if !sys::is_same_file(&file, &self.path).at("stat", &self.path)? {
                continue; // its owner removed it between our open and our lock
            }
            self.check_takeover(&meta)?;
            // Only a PID file (or an empty file) is taken over: anything else at the path
            // (a store, a lock file of another kind, a mistyped path) is refused and left
            // as it is.
            let pid = self.read_pid(&file)?;
            if !force && pid.is_some_and(names_other_live_process) {
                // Released explicitly, not by closing `file`: a process another thread
                // is starting holds a copy of the descriptor until it executes, and
                // would keep the lock until then.
                let _ = sys::unlock(&file);
                return Ok(false);
            }
            // Ours now. Only now may the old content go.
            file.set_permissions(Permissions::from_mode(self.mode))
                .at("chmod", &self.path)?;
            let previous = modified_ns(&file.metadata().at("stat", &self.path)?);
            file.set_len(0).at("truncate", &self.path)?;
            file.write_all_at(pid_line().as_bytes(), 0)
                .at("write", &self.path)?;
            let generation = generation_after(previous);
            stamp(&file, generation).at("utimens", &self.path)?;
            self.owned = Some(file);
            self.generation = generation;
            return Ok(true);
        }
        Err(Error::io(
            "create",
            &self.path,
            io::Error::other("the file keeps changing while being created"),
        ))
    }

    /// [`PidFile::generation`](super::PidFile::generation).
    pub(super) fn generation(&self) -> Option<u64> {
        (self.owned.is_some() && self.epoch == sys::fork_epoch()).then_some(self.generation)
    }

    /// [`PidFile::last_generation`](super::PidFile::last_generation): the file's
    /// modification time in nanoseconds, `None` if there is no file.
    pub(super) fn last_generation(&self) -> Result<Option<u64>> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) => Ok(Some(modified_ns(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &self.path, e)),
        }
    }

    /// Writes a complete, locked PID file under a temporary name and links it into
    /// place if the name is free; `None` if something is there by then.
    fn create_new(&self) -> Result<Option<(File, u64)>> {
        let path = &self.path;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(self.mode))
            .tempfile_in(dir)
            .at("create", path)?;
        let file = tmp.as_file();
        // The creation mode was filtered by the umask; apply the mode asked for.
        file.set_permissions(Permissions::from_mode(self.mode))
            .at("chmod", path)?;
        // Nobody else knows this file yet, so the lock is free.
        sys::try_lock_exclusive(file).at("lock", path)?;
        file.write_all_at(pid_line().as_bytes(), 0)
            .at("write", path)?;
        let generation = generation_after(0);
        stamp(file, generation).at("utimens", path)?;
        match tmp.persist_noclobber(path) {
            Ok(file) => Ok(Some((file, generation))),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::io("create", path, e.error)),
        }
    }

    /// `create` could not open the file for writing: `false` if a live owner holds it,
    /// an error saying why it cannot be taken over otherwise.
    fn probe_unwritable(&self, denied: io::Error) -> Result<bool> {
        let Ok(file) = sys::open_nofollow(&self.path, false) else {
            return Err(Error::io("open", &self.path, denied));
        };
        if !sys::try_lock_shared(&file).at("lock", &self.path)? {
            return Ok(false);
        }
        let meta = file.metadata().at("stat", &self.path)?;
        Err(Error::invalid(
            &self.path,
            format!(
                "stale PID file owned by uid {} with mode {:04o}, not writable by this \
                 process (uid {}); refusing to take it over",
                meta.uid(),
                meta.mode() & 0o7777,
                sys::effective_uid()
            ),
        ))
    }

    /// Refuses to take over a stale file another user could have planted or edited.
    fn check_takeover(&self, meta: &std::fs::Metadata) -> Result<()> {
        let me = sys::effective_uid();
        if meta.uid() != me {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "stale PID file owned by uid {}, not by this process (uid {me}); \
                     refusing to take it over",
                    meta.uid()
                ),
            ));
        }
        let loose = meta.mode() & 0o022 & !self.mode;
        if loose != 0 {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "stale PID file with mode {:04o} is writable by {}; refusing to trust \
                     it (remove it, or ask for that mode)",
                    meta.mode() & 0o7777,
                    if loose & 0o020 != 0 {
                        "its group"
                    } else {
                        "others"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// The process ID in the file; `None` if there is no file or it is empty.
    pub(super) fn read(&self) -> Result<Option<u32>> {
        match self.open_for_reading()? {
            None => Ok(None),
            Some(file) => self.read_pid(&file),
        }
    }

    fn open_for_reading(&self) -> Result<Option<File>> {
        let file = match sys::open_nofollow(&self.path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        if !file.metadata().at("stat", &self.path)?.is_file() {
            return Err(Error::format(&self.path, EXPECTED, "not a regular file"));
        }
        Ok(Some(file))
    }

    fn read_pid(&self, file: &File) -> Result<Option<u32>> {
        let mut buf = Vec::with_capacity(MAX_LEN + 1);
        file.take(MAX_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .at("read", &self.path)?;
        parse_pid(&buf).map_err(|detail| Error::format(&self.path, EXPECTED, detail))
    }

    /// Unlinks the file if it is still the one this handle locked, then unlocks it;
    /// see [`PidFile::remove`](super::PidFile::remove).
    pub(super) fn remove(&mut self) -> Result<()> {
        self.drop_if_forked();
        let Some(file) = self.owned.take() else {
            return Err(Error::invalid(
                &self.path,
                "this handle does not own the PID file; not removing it",
            ));
        };
        if self.shared {
            return self.finish_shared(file);
        }
        let ours = match sys::is_same_file(&file, &self.path) {
            Ok(ours) => ours,
            Err(e) => {
                self.owned = Some(file);
                return Err(Error::io("stat", &self.path, e));
            }
        };
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            self.owned = Some(file);
            return Err(Error::io("remove", &self.path, e));
        }
        drop(file); // releases the lock
        Ok(())
    }

    /// Whether this handle holds the lock on the file that is at the path now.
    pub(super) fn is_owner(&self) -> Result<bool> {
        match &self.owned {
            None => Ok(false),
            Some(_) if self.epoch != sys::fork_epoch() => Ok(false),
            Some(file) => sys::is_same_file(file, &self.path).at("stat", &self.path),
        }
    }

    /// Absent, running or stale, probed with a shared lock released at once; see
    /// [`PidFile::status`](super::PidFile::status).
    pub(super) fn status(&self) -> Result<PidStatus> {
        if self.is_owner()? {
            return Ok(PidStatus::Running { pid: self.read()? });
        }
        let Some(file) = self.open_for_reading()? else {
            return Ok(PidStatus::Absent);
        };
        let free = sys::try_lock_shared(&file).at("lock", &self.path)?;
        if free {
            sys::unlock(&file).at("unlock", &self.path)?;
        }
        let pid = self.read_pid(&file)?;
        Ok(match pid {
            _ if !free => PidStatus::Running { pid },
            Some(pid) if sys::process_exists(pid) => PidStatus::AliveUnlocked { pid },
            pid => PidStatus::Stale { pid },
        })
    }
}

/// Whether `pid`, read from a file nobody locks, names a live process other than the
/// caller: a program that does not lock its PID file may be running as `pid`. The
/// caller's own PID in such a file is a previous owner's, reused.
/// The generation of a new ownership: the wall clock in nanoseconds, or one more than
/// the `previous` generation (the file's modification time) if the clock is behind it.
/// Owners follow one another under the file's lock, so each reads the clock after its
/// predecessor did: generations only grow, also across a removed and recreated file.
fn generation_after(previous: u64) -> u64 {
    crate::state::fence_seed().max(previous.saturating_add(1))
}

/// Records `generation` as the file's modification time (after the last write, which
/// would change it).
fn stamp(file: &File, generation: u64) -> io::Result<()> {
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(generation))
}

/// A file's modification time in nanoseconds since 1970 (0 before it).
fn modified_ns(meta: &std::fs::Metadata) -> u64 {
    let (s, ns) = (meta.mtime(), meta.mtime_nsec());
    u64::try_from(s)
        .map_or(0, |s| s.saturating_mul(1_000_000_000))
        .saturating_add(ns as u64)
}

fn names_other_live_process(pid: u32) -> bool {
    pid != std::process::id() && sys::process_exists(pid)
}

impl Drop for LocalPidFile {
    /// An owning handle removes its file (if it is still the file at the path).
    fn drop(&mut self) {
        self.drop_if_forked();
        let Some(file) = self.owned.take() else {
            return;
        };
        if self.shared {
            let _ = self.finish_shared(file);
        } else if sys::is_same_file(&file, &self.path).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::PidFile;

    #[test]
    fn no_temporary_files_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pid");
        let mut a = PidFile::open(&p).unwrap();
        let mut b = PidFile::open(&p).unwrap();
        assert!(a.create().unwrap());
        assert!(!b.create().unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("a.pid")]);
    }
}
