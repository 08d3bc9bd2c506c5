//! PID files whose liveness is a kernel lock, not a guess from the PID.
//!
//! A PID file holds the decimal process ID of its owner and a newline (`1234\n`), as
//! daemons have always written them, so `cat`, `kill $(cat app.pid)` and every other
//! tool reads it. What makes it reliable is that the owner also holds an exclusive
//! `flock` on the file for as long as it runs: the kernel drops that lock when the owner
//! dies, however it dies (`SIGKILL` included). So:
//!
//! - "already running" means "a live process holds the lock", never "a process with that
//!   PID exists": a recycled PID cannot keep a crashed daemon from restarting;
//! - a stale file left by a killed owner is simply taken over by the next `create`;
//! - a file another program wrote without locking it (`sleep 100 & echo $! > app.pid`)
//!   is not taken over while the process it names is alive
//!   ([`PidStatus::AliveUnlocked`]; [`PidFile::create_force`] takes it anyway);
//! - the running owner's PID stays readable while others try to start: nobody writes
//!   the file before holding the lock.
//!
//! # Security
//!
//! A PID file in a shared directory (`/tmp`, `/run` writable by a group) is a classic
//! target: a symbolic link planted at its path would make a privileged process
//! overwrite the link's target. `create` and `read` never follow a link at the path
//! (an [`Error::Symlink`]), refuse what is not a regular file, and refuse to take over a
//! stale file owned by another user or writable by group or others beyond the mode the
//! caller chose (the checks systemd makes of PID files). The lock is advisory: it keeps
//! out fileipc and other `flock` users, not a process that writes the file blindly.
//!
//! A child made with `fork` (without `exec`) shares its parent's lock; the descriptor is
//! close-on-exec, so a program started with `exec` does not.
//!
//! This file holds the public front: [`PidFile`], which dispatches every call to its
//! engine, [`PidFileOptions`] and [`PidStatus`]. The local engine (the lock and the
//! protocols of `create`, `remove` and `status`) is in `local.rs`, the content format
//! in `parse.rs`.

mod local;
mod parse;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::path::Path;

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

use local::LocalPidFile;
pub(crate) use parse::parse_pid;

/// The mode of a new PID file unless [`PidFileOptions::mode`] says otherwise:
/// readable by everyone, writable by its owner (`0644`), as PID files traditionally are.
const DEFAULT_MODE: u32 = 0o644;

/// A PID file for single-instance enforcement and process discovery.
///
/// Opening a handle touches nothing on disk. [`create`](PidFile::create) makes this
/// process the owner, unless a live process already is; the owner holds a lock on the
/// file until it calls [`remove`](PidFile::remove) or drops the handle (both remove the
/// file), or dies (the file stays, stale, and the next `create` takes it over).
///
/// Two handles on one path exclude each other even within one process. The handle is
/// `Send + Sync`; methods that change ownership take `&mut self`.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("myapp.pid");
/// use fileipc::PidFile;
///
/// let mut pid_file = PidFile::open(&path)?;
/// if !pid_file.create()? {
///     eprintln!("already running with PID {:?}", pid_file.read()?);
///     std::process::exit(1);
/// }
/// assert_eq!(pid_file.read()?, Some(std::process::id()));
/// // ... run the application; dropping the handle (or `remove`) removes the file.
/// pid_file.remove()?;
/// assert_eq!(pid_file.read()?, None);
/// # Ok(())
/// # }
/// ```
pub struct PidFile {
    engine: Engine,
}

/// The engine behind a [`PidFile`] handle. Dropping it gives up ownership.
enum Engine {
    /// The PID file is a locked file in the local file system.
    Local(LocalPidFile),
    /// A leased entry on a Redis server.
    #[cfg(feature = "redis")]
    Redis(Box<self::redis::RedisPidFile>),
}

impl fmt::Debug for PidFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each engine formats itself as `PidFile { .. }`.
        match &self.engine {
            Engine::Local(e) => fmt::Debug::fmt(e, f),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => fmt::Debug::fmt(e, f),
        }
    }
}

/// Options for a [`PidFile`]: the mode its file gets.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("myapp.pid");
/// use std::os::unix::fs::PermissionsExt;
///
/// let mut pid_file = fileipc::PidFileOptions::new().mode(0o600).open(&path)?;
/// assert!(pid_file.create()?);
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidFileOptions {
    mode: u32,
}

impl Default for PidFileOptions {
    fn default() -> Self {
        PidFileOptions { mode: DEFAULT_MODE }
    }
}

impl PidFileOptions {
    /// The default options: mode `0644`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The permission bits the file gets when this process creates or takes it over,
    /// exactly (not filtered by the umask). Bits outside `0o777` are ignored. Group or
    /// other write bits given here are also the ones a stale file may have for
    /// [`PidFile::create`] to take it over.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// A handle on the PID file at `path` with these options; see [`PidFile::open`].
    ///
    /// # Errors
    ///
    /// As [`PidFile::open`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<PidFile> {
        let engine = match crate::location::Location::parse(path.as_ref())? {
            crate::location::Location::Path(p) => Engine::Local(LocalPidFile::open(&p, self.mode)?),
            crate::location::Location::Redis(url) => crate::location::redis_engine(&url, |u| {
                #[cfg(feature = "redis")]
                return Ok(Engine::Redis(Box::new(self::redis::RedisPidFile::open(u)?)));
                #[cfg(not(feature = "redis"))]
                unreachable!("{u:?}")
            })?,
        };
        Ok(PidFile { engine })
    }
}

/// What [`PidFile::status`] found at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PidStatus {
    /// No file at the path: nothing runs (or it runs without a PID file).
    Absent,
    /// A live process owns the file. `pid` is what the file says; `None` for the
    /// moment between an owner taking over a stale file and writing its PID.
    Running {
        /// The owner's process ID, as written in the file.
        pid: Option<u32>,
    },
    /// A file no live process owns: its owner died without removing it, and no process
    /// with the PID it names exists (or it is empty). The next [`PidFile::create`]
    /// takes it over.
    Stale {
        /// The process ID the file names; no process has it.
        pid: Option<u32>,
    },
    /// Nobody holds the lock on the file, but a process with the PID it names is alive:
    /// most likely a program that writes its PID file without locking it (a daemon, a
    /// shell's `echo $! > app.pid`). [`PidFile::create`] does not take such a file
    /// over; [`PidFile::create_force`] does.
    ///
    /// Whether the process is alive is asked of the kernel (`kill(pid, 0)`), which knows
    /// only that *some* process has that PID now. Two cases read wrong:
    ///
    /// - PID reuse: the file's writer died (or a fileipc owner was killed) and an
    ///   unrelated process got its PID since. The file is reported here, not as
    ///   [`Stale`](PidStatus::Stale), until that process ends or the file is forced or
    ///   removed.
    /// - PID namespaces: a PID written in another namespace (a container) names another
    ///   process, or none, in the caller's.
    ///
    /// A file a live fileipc owner holds is [`Running`](PidStatus::Running), whatever its
    /// PID: the lock, not the PID, decides that.
    AliveUnlocked {
        /// The process ID the file names; a process with that ID exists.
        pid: u32,
    },
}

impl PidStatus {
    /// Whether a live owner holds the file.
    pub fn is_running(&self) -> bool {
        matches!(self, PidStatus::Running { .. })
    }

    /// The process ID written in the file, if there is one.
    pub fn pid(&self) -> Option<u32> {
        match *self {
            PidStatus::Absent => None,
            PidStatus::Running { pid } | PidStatus::Stale { pid } => pid,
            PidStatus::AliveUnlocked { pid } => Some(pid),
        }
    }
}

impl PidFile {
    /// The generation of this handle's ownership, `None` unless it owns the file: a
    /// fencing token that only grows from one owner to the next, never reused, also
    /// across a removed and recreated file (it starts from the clock). Pass it to the
    /// resources the owner writes, which refuse a lower one than the highest seen
    /// ([`SharedData::set_fenced`](crate::SharedData::set_fenced)): a previous owner
    /// still running (stopped past its Redis lease, or a forced take-over) is refused.
    ///
    /// On the local engine it is the wall clock in nanoseconds when the ownership began
    /// (or one more than the previous owner's, if the clock is behind it), stored as the
    /// file's modification time; on Redis, `max(last + 1, server TIME in us)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.pid");
    /// let mut p = fileipc::PidFile::open(&path)?;
    /// assert_eq!(p.generation(), None);
    /// assert!(p.create()?);
    /// let first = p.generation().unwrap();
    /// p.remove()?;
    /// assert!(p.create()?);
    /// assert!(p.generation().unwrap() > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn generation(&self) -> Option<u64> {
        match &self.engine {
            Engine::Local(e) => e.generation(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.generation(),
        }
    }

    /// The generation of the last ownership of the file, by any process (the file's
    /// modification time in nanoseconds on the local engine; `None` if there is no file,
    /// or, on Redis, no ownership yet).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if the file cannot be examined.
    pub fn last_generation(&self) -> Result<Option<u64>> {
        match &self.engine {
            Engine::Local(e) => e.last_generation(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.last_generation(),
        }
    }

    /// A handle on the PID file at `path`. Touches nothing on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `path` does not end in a file name (`/`, `..`).
    pub fn open(path: impl AsRef<Path>) -> Result<PidFile> {
        PidFileOptions::default().open(path)
    }

    /// Options for a PID file, e.g. another mode; see [`PidFileOptions`].
    pub fn options() -> PidFileOptions {
        PidFileOptions::default()
    }

    /// The path of the PID file.
    pub fn path(&self) -> &Path {
        match &self.engine {
            Engine::Local(e) => e.path(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.path(),
        }
    }

    /// Makes this process the owner: `true` if it now owns the file (or already did
    /// through this handle), `false` if another live process, or another handle in
    /// this process, owns it.
    ///
    /// A new file is written completely (`PID\n`, the mode asked for) under a
    /// temporary name and linked into place already locked, so readers never see it
    /// empty. An existing file is locked first and only then truncated and rewritten,
    /// so a running owner's PID is never disturbed; a stale one (its owner died) is
    /// taken over. A file nobody locks that names a live process other than this one
    /// ([`PidStatus::AliveUnlocked`]: another program's PID file) is left as it is and
    /// this returns `false`; [`create_force`](PidFile::create_force) takes it over.
    ///
    /// # Errors
    ///
    /// - [`Error::Symlink`] if a symbolic link is at the path; neither it nor its
    ///   target is touched.
    /// - [`Error::Format`] if something else than a regular file is at the path.
    /// - [`Error::Invalid`] if a stale file may not be taken over: it belongs to
    ///   another user, or is writable by group or others beyond this handle's mode.
    /// - [`Error::Io`] naming the path for file system errors (missing directory,
    ///   permissions).
    #[must_use = "`false` means another live process owns the PID file: this one is not the single instance"]
    pub fn create(&mut self) -> Result<bool> {
        match &mut self.engine {
            Engine::Local(e) => e.create(false),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.create(),
        }
    }

    /// As [`create`](PidFile::create), but also takes over a file that names a live
    /// process holding no lock on it ([`PidStatus::AliveUnlocked`]), for when the caller
    /// knows that process is not the program the file is about (a reused PID) or wants
    /// to replace a program that does not lock its PID file. A file a live owner holds
    /// is still never taken: this returns `false` then.
    ///
    /// # Errors
    ///
    /// As [`create`](PidFile::create).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("myapp.pid");
    /// use fileipc::{PidFile, PidStatus};
    ///
    /// // Another program wrote its PID (here: PID 1, always alive) without locking.
    /// std::fs::write(&path, "1\n").unwrap();
    /// let mut pid_file = PidFile::open(&path)?;
    /// assert_eq!(pid_file.status()?, PidStatus::AliveUnlocked { pid: 1 });
    /// assert!(!pid_file.create()?);
    /// assert!(pid_file.create_force()?);
    /// assert_eq!(pid_file.read()?, Some(std::process::id()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn create_force(&mut self) -> Result<bool> {
        match &mut self.engine {
            Engine::Local(e) => e.create(true),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.create(),
        }
    }

    /// The process ID in the file; `None` if there is no file (or it is empty: an
    /// owner taking over a stale file truncates it just before writing its PID).
    ///
    /// Trailing white space is accepted (`1234`, `1234\n`, `1234 \r\n`); anything else
    /// is an error. The number says who wrote the file, not whether it still runs:
    /// ask [`status`](PidFile::status) for that.
    ///
    /// # Errors
    ///
    /// - [`Error::Format`] naming the path if the content is not a process ID, or
    ///   what is at the path is not a regular file.
    /// - [`Error::Symlink`] if a symbolic link is at the path (never followed).
    /// - [`Error::Io`] naming the path if it cannot be read.
    pub fn read(&self) -> Result<Option<u32>> {
        match &self.engine {
            Engine::Local(e) => e.read(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.read(),
        }
    }

    /// Gives up ownership and removes the file (unlinked first, then unlocked, so
    /// nobody takes over a file that is about to disappear).
    ///
    /// If the file at the path is no longer the one this handle locked (someone
    /// removed or replaced it), it is left alone, the lock is released, and this
    /// returns `Ok(())`: nothing of ours is left to remove.
    ///
    /// # Errors
    ///
    /// - [`Error::Invalid`] if this handle does not own the PID file (never created it,
    ///   `create` returned `false`, or it was already removed); the file is untouched.
    /// - [`Error::Io`] naming the path if it cannot be removed; the handle still owns
    ///   the file then.
    pub fn remove(&mut self) -> Result<()> {
        match &mut self.engine {
            Engine::Local(e) => e.remove(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.remove(),
        }
    }

    /// Lets the programs this process runs from now on inherit the locked descriptor
    /// (its close-on-exec flag is cleared), and returns its number. The PID file then
    /// stays locked (and `create` elsewhere returns `false`) while this process or any
    /// program that kept the descriptor runs, even if this process is killed, as with
    /// `flock(1)`. [`remove`](PidFile::remove) and dropping the handle then remove the
    /// file only if nobody else still holds it. A program that must not keep the PID
    /// file held closes the descriptor (in a shell: `exec {fd}>&-` with the number this
    /// returned, which `fileipc pidfile run` passes as `FILEIPC_LOCK_FD`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if this handle does not own the PID file; [`Error::Io`] if the
    /// descriptor's flags cannot be changed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mut p = fileipc::PidFile::open(dir.path().join("app.pid"))?;
    /// assert!(p.create()?);
    /// let fd = p.share_with_children()?;
    /// let status = std::process::Command::new("true").status()?; // inherits `fd`
    /// assert!(status.success() && fd > 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn share_with_children(&mut self) -> Result<std::os::fd::RawFd> {
        match &mut self.engine {
            Engine::Local(e) => e.share_with_children(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.share_with_children(),
        }
    }

    /// Whether this handle owns the PID file: it holds the lock on the file that is at
    /// the path now.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if it cannot be examined.
    pub fn is_owner(&self) -> Result<bool> {
        match &self.engine {
            Engine::Local(e) => e.is_owner(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.is_owner(),
        }
    }

    /// Whether the PID file is absent, owned by a live process, stale, or written by a
    /// program that does not lock it and naming a live process
    /// ([`PidStatus::AliveUnlocked`]), with the PID it names. Changes nothing and needs
    /// no write permission.
    ///
    /// The probe takes a shared lock on the file and releases it at once. For the
    /// microseconds it holds it, a [`create`](PidFile::create) in another process sees
    /// the file locked and returns `false` although nobody owns it: callers that start
    /// a service right after probing for it should retry `create` once. (A probe that
    /// cannot disturb anyone would read `/proc/locks`, which is Linux-only.)
    ///
    /// # Errors
    ///
    /// As [`read`](PidFile::read).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> fileipc::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("myapp.pid");
    /// use fileipc::{PidFile, PidStatus};
    ///
    /// let mut owner = PidFile::open(&path)?;
    /// let probe = PidFile::open(&path)?;
    /// assert_eq!(probe.status()?, PidStatus::Absent);
    /// assert!(owner.create()?);
    /// assert_eq!(probe.status()?, PidStatus::Running { pid: Some(std::process::id()) });
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(&self) -> Result<PidStatus> {
        match &self.engine {
            Engine::Local(e) => e.status(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PidFile>();
    }

    #[test]
    fn open_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pid");
        let h = PidFile::open(&p).unwrap();
        assert!(!p.exists());
        assert!(!h.is_owner().unwrap());
        assert_eq!(h.status().unwrap(), PidStatus::Absent);
        assert!(PidFile::open("/").is_err());
    }
}
