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

use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoResultExt, Result};
use crate::sys;

/// What a PID file must hold, for error messages.
const EXPECTED: &str = "PID file (a process ID and a newline)";

/// The longest content accepted; a PID file is a few bytes.
const MAX_LEN: usize = 64;

/// How often `create` starts over when the file changes under it before giving up.
const MAX_ATTEMPTS: usize = 100;

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
    path: PathBuf,
    mode: u32,
    /// The locked file while this handle owns the PID file.
    owned: Option<File>,
}

impl fmt::Debug for PidFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PidFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &self.owned.is_some())
            .finish()
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
    pub fn open(self, path: impl AsRef<Path>) -> Result<PidFile> {
        PidFile::open_with(path.as_ref(), self)
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
    /// A file no live process owns: its owner died without removing it (or it was
    /// written by a program that does not lock it). The next [`PidFile::create`]
    /// takes it over.
    Stale {
        /// The process ID the file names; that process is not the owner, even if a
        /// process with that ID exists now.
        pid: Option<u32>,
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
        }
    }
}

impl PidFile {
    /// A handle on the PID file at `path`. Touches nothing on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `path` does not end in a file name (`/`, `..`).
    pub fn open(path: impl AsRef<Path>) -> Result<PidFile> {
        PidFile::open_with(path.as_ref(), PidFileOptions::default())
    }

    /// Options for a PID file, e.g. another mode; see [`PidFileOptions`].
    pub fn options() -> PidFileOptions {
        PidFileOptions::default()
    }

    fn open_with(path: &Path, opts: PidFileOptions) -> Result<PidFile> {
        if path.file_name().is_none() {
            return Err(Error::invalid(
                path,
                "a PID file path must end in a file name",
            ));
        }
        Ok(PidFile {
            path: path.to_owned(),
            mode: opts.mode,
            owned: None,
        })
    }

    /// The path of the PID file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes this process the owner: `true` if it now owns the file (or already did
    /// through this handle), `false` if another live process, or another handle in
    /// this process, owns it.
    ///
    /// A new file is written completely (`PID\n`, the mode asked for) under a
    /// temporary name and linked into place already locked, so readers never see it
    /// empty. An existing file is locked first and only then truncated and rewritten,
    /// so a running owner's PID is never disturbed; a stale one (its owner died) is
    /// taken over.
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
    pub fn create(&mut self) -> Result<bool> {
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
                    Some(file) => {
                        self.owned = Some(file);
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
            // Ours now. Only now may the old content go.
            file.set_permissions(Permissions::from_mode(self.mode))
                .at("chmod", &self.path)?;
            file.set_len(0).at("truncate", &self.path)?;
            file.write_all_at(pid_line().as_bytes(), 0)
                .at("write", &self.path)?;
            self.owned = Some(file);
            return Ok(true);
        }
        Err(Error::io(
            "create",
            &self.path,
            io::Error::other("the file keeps changing while being created"),
        ))
    }

    /// Writes a complete, locked PID file under a temporary name and links it into
    /// place if the name is free; `None` if something is there by then.
    fn create_new(&self) -> Result<Option<File>> {
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
        match tmp.persist_noclobber(path) {
            Ok(file) => Ok(Some(file)),
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
        let Some(file) = self.owned.take() else {
            return Err(Error::invalid(
                &self.path,
                "this handle does not own the PID file; not removing it",
            ));
        };
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

    /// Whether this handle owns the PID file: it holds the lock on the file that is at
    /// the path now.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if it cannot be examined.
    pub fn is_owner(&self) -> Result<bool> {
        match &self.owned {
            None => Ok(false),
            Some(file) => sys::is_same_file(file, &self.path).at("stat", &self.path),
        }
    }

    /// Whether the PID file is absent, owned by a live process, or stale, with the PID
    /// it names. Changes nothing and needs no write permission.
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
    /// owner.create()?;
    /// assert_eq!(probe.status()?, PidStatus::Running { pid: Some(std::process::id()) });
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(&self) -> Result<PidStatus> {
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
        Ok(if free {
            PidStatus::Stale { pid }
        } else {
            PidStatus::Running { pid }
        })
    }
}

impl Drop for PidFile {
    /// An owning handle removes its file (if it is still the file at the path).
    fn drop(&mut self) {
        if let Some(file) = self.owned.take()
            && sys::is_same_file(&file, &self.path).unwrap_or(false)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// This process's PID file content.
fn pid_line() -> String {
    format!("{}\n", std::process::id())
}

/// Parses PID file content: `None` if empty, the PID if it is one (trailing white
/// space allowed), else what is wrong.
pub(crate) fn parse_pid(content: &[u8]) -> std::result::Result<Option<u32>, String> {
    if content.is_empty() {
        return Ok(None);
    }
    if content.len() > MAX_LEN {
        return Err(format!("more than {MAX_LEN} bytes"));
    }
    let end = content
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let digits = &content[..end];
    let shown = || format!("{:?}", String::from_utf8_lossy(content));
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 10 {
        return Err(format!("{} is not a process ID", shown()));
    }
    // At most 10 ASCII digits: fits in u64.
    let n: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    if n == 0 || n > i32::MAX as u64 {
        return Err(format!("{} is out of the range of process IDs", shown()));
    }
    Ok(Some(n as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pids_leniently_at_the_end_only() {
        assert_eq!(parse_pid(b""), Ok(None));
        assert_eq!(parse_pid(b"1234\n"), Ok(Some(1234)));
        assert_eq!(parse_pid(b"1234"), Ok(Some(1234)));
        assert_eq!(parse_pid(b"1234 \r\n\n\t"), Ok(Some(1234)));
        assert_eq!(parse_pid(b"2147483647\n"), Ok(Some(2147483647)));
        assert_eq!(parse_pid(b"007\n"), Ok(Some(7)));
        for bad in [
            &b"\n"[..],
            b" 1234\n",
            b"+1234\n",
            b"-1\n",
            b"12 34\n",
            b"1234\nextra\n",
            b"0\n",
            b"2147483648\n",
            b"99999999999\n",
            b"hello",
            b"\xff\xfe",
            b"1234\0",
        ] {
            assert!(parse_pid(bad).is_err(), "{bad:?} accepted");
        }
        let long = vec![b'1'; MAX_LEN + 1];
        assert!(parse_pid(&long).unwrap_err().contains("more than"));
        let e = parse_pid(b"hello\n").unwrap_err();
        assert_eq!(e, r#""hello\n" is not a process ID"#);
    }

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
