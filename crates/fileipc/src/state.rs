//! The common header of fileipc's fixed-size state files, and their race-free creation.
//!
//! Every state file (mutex, semaphore, queue control file, SharedData request board)
//! starts with the same 64-byte header, so that a file of one primitive opened as another
//! is recognised and named, and [`crate::inspect()`] can tell them apart ([`peek`]):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"FILEIPC\0"` |
//! | 8 | 4 | kind (little-endian u32, see [`Kind`]) |
//! | 12 | 4 | format version of that kind |
//! | 16 | 4 | length of the mapped state region in bytes |
//! | 20 | 44 | reserved, zero |
//!
//! The rest of the region belongs to the kind; see `docs/FORMAT.md`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoResultExt, Result};
use crate::sys::{self, Open, SharedMap};

pub(crate) const MAGIC: [u8; 8] = *b"FILEIPC\0";
pub(crate) const HEADER_LEN: usize = 64;

/// Default mode of state files: only their owner may read or write them.
pub(crate) const DEFAULT_MODE: u32 = 0o600;

/// What a state file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Mutex = 1,
    Semaphore = 2,
    Queue = 3,
    SharedDataBoard = 4,
    /// The host-wide file in which processes using the Redis engine register their
    /// owner ids (`remote/host.rs`).
    HostOwners = 5,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Mutex => "fileipc mutex file",
            Kind::Semaphore => "fileipc semaphore file",
            Kind::Queue => "fileipc queue control file",
            Kind::SharedDataBoard => "fileipc shared data request board",
            Kind::HostOwners => "fileipc host owners file",
        }
    }

    /// The kind a header's kind field names; `None` for a code this library does not know.
    pub(crate) fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Mutex,
            2 => Kind::Semaphore,
            3 => Kind::Queue,
            4 => Kind::SharedDataBoard,
            5 => Kind::HostOwners,
            _ => return None,
        })
    }
}

/// Reads the kind and format version fields of the common header from the first bytes
/// of a file, without checking anything else: `(kind, version)`, the version `None` if
/// the bytes end before it; `None` if they do not start with [`MAGIC`] or end before the
/// kind field.
pub(crate) fn peek(bytes: &[u8]) -> Option<(u32, Option<u32>)> {
    if !bytes.starts_with(&MAGIC) {
        return None;
    }
    let field = |at: usize| {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    };
    Some((field(8)?, field(12)))
}

/// The layout a caller expects: kind, version and region length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) kind: Kind,
    pub(crate) version: u32,
    pub(crate) len: usize,
}

/// An open, validated and mapped state file.
#[derive(Debug)]
pub(crate) struct StateFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) map: SharedMap,
}

thread_local! {
    /// Set while [`without_creating`] runs on this thread.
    static NO_CREATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with creation refused on this thread: inside it, [`open_or_create`] (and the
/// SharedData store's own `open_or_create`) fail with an [`Error::Io`] of kind
/// `NotFound` naming the missing file instead of creating it. The `open_existing`
/// constructors open through the same code as `open` under this rule, so they differ
/// from it in nothing else.
pub(crate) fn without_creating<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_CREATE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(NO_CREATE.with(|c| c.replace(true)));
    f()
}

/// `Err(NotFound)` naming `path` if creation is refused on this thread (see
/// [`without_creating`]).
pub(crate) fn check_may_create(path: &Path) -> Result<()> {
    if NO_CREATE.with(|c| c.get()) {
        return Err(not_found(path));
    }
    Ok(())
}

/// The error of a query on a path where nothing exists: `NotFound`, naming the path.
pub(crate) fn not_found(path: &Path) -> Error {
    Error::io(
        "open",
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
    )
}

/// The first value of a fence counter: the wall clock in nanoseconds since 1970, so a
/// file created again at the same path hands out higher fences than the one before it
/// (a counter moves by one per grant, far slower than the clock).
pub(crate) fn fence_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Opens the state file at `path`, creating it if missing. A new file is written in full
/// (header, then `init` fills the bytes after the header) under a temporary name in the
/// same directory and linked into place only if nothing exists there yet, so no process
/// ever sees a half-initialised file, and two racing creators agree on one.
pub(crate) fn open_or_create(
    path: &Path,
    layout: Layout,
    mode: u32,
    init: impl FnOnce(&mut [u8]),
) -> Result<StateFile> {
    open_or_create_inner(path, layout, mode, init, false)
}

/// As [`open_or_create`], but an existing *empty*
/// regular file (made by `touch` or `flock(1)`, which lock files and not content) is
/// adopted: the header and the zeroed region are written into it in place, keeping its
/// inode (the one other `flock` users lock), owner and mode.
///
/// Adopters serialise on an exclusive open-file-description lock on the byte at
/// [`ADOPT_LOCK_BYTE`] (far past the end of the file, never written, independent of
/// `flock` locks) and write only if the file is still empty under it, so two adopters
/// never both write, and an adopter that found the file empty before another adopted it
/// and put it to use writes nothing. A `flock` held on the file meanwhile (by `flock(1)`
/// or a fileipc holder) does not matter: adoption takes no `flock` and changes no lock.
/// The region is one write of at most a page, done before the file is mapped; an adopter
/// killed during it leaves at worst a file too short to validate (refused, never mapped).
///
/// A file created here (not one adopted) has the bytes after the header filled by
/// `init`; an adopted file's stay zero.
pub(crate) fn open_or_adopt_with(
    path: &Path,
    layout: Layout,
    mode: u32,
    init: impl FnOnce(&mut [u8]),
) -> Result<StateFile> {
    open_or_create_inner(path, layout, mode, init, true)
}

/// The byte whose open-file-description lock serialises [`open_or_adopt_with`]'s adopters:
/// just below the owners' bytes (`owner::LOCK_BASE + id`, id 0 never used).
pub(crate) const ADOPT_LOCK_BYTE: u64 = crate::owner::LOCK_BASE - 1;

fn open_or_create_inner(
    path: &Path,
    layout: Layout,
    mode: u32,
    init: impl FnOnce(&mut [u8]),
    adopt: bool,
) -> Result<StateFile> {
    let mut init = Some(init);
    loop {
        match sys::open_state_file(path, Open::Existing) {
            Ok(file) => {
                if adopt {
                    adopt_if_empty(path, &file, layout, mode)?;
                }
                return validate(path, file, layout, mode);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => check_may_create(path)?,
            Err(e) => return Err(Error::io("open", path, e)),
        }
        let Some(init) = init.take() else {
            // We created one, lost the race, and the winner's file vanished again.
            return Err(Error::io(
                "open",
                path,
                std::io::Error::other("file keeps disappearing while being opened"),
            ));
        };
        let mut region = new_region(layout);
        init(&mut region[HEADER_LEN..]);

        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)
            .at("create", path)?;
        // The creation mode was filtered by the umask; apply the mode asked for.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .at("chmod", path)?;
        tmp.write_all(&region).at("write", path)?;
        match tmp.persist_noclobber(path) {
            Ok(file) => return validate(path, file, layout, mode),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", path, e.error)),
        }
    }
}

/// A new region of `layout`: its header, then zeros.
fn new_region(layout: Layout) -> Vec<u8> {
    let mut region = vec![0u8; layout.len];
    region[..8].copy_from_slice(&MAGIC);
    region[8..12].copy_from_slice(&(layout.kind as u32).to_le_bytes());
    region[12..16].copy_from_slice(&layout.version.to_le_bytes());
    region[16..20].copy_from_slice(&(layout.len as u32).to_le_bytes());
    region
}

/// Writes a new zeroed region of `layout` into `file` if it is empty; see
/// [`open_or_adopt_with`]. A file this process may not trust is refused before anything is
/// written.
fn adopt_if_empty(path: &Path, file: &File, layout: Layout, mode: u32) -> Result<()> {
    let meta = file.metadata().at("stat", path)?;
    if meta.len() != 0 {
        return Ok(());
    }
    check_trust(path, &meta, mode, layout.kind.name())?;
    sys::lock_byte(file, ADOPT_LOCK_BYTE).at("lock", path)?;
    let written = match file.metadata() {
        Ok(m) if m.len() == 0 => file.write_all_at(&new_region(layout), 0),
        Ok(_) => Ok(()), // another adopter was first
        Err(e) => Err(e),
    };
    let unlocked = sys::unlock_byte(file, ADOPT_LOCK_BYTE);
    written.at("write", path)?;
    unlocked.at("unlock", path)
}

/// Removes the file at `path` if it is still `file` (same device and inode); `false` if
/// nothing, or another file, is there now (that is left alone). Processes that have the
/// file open keep it: the kernel frees it when the last of them closes it.
pub(crate) fn remove_if_same(path: &Path, file: &File) -> Result<bool> {
    if !sys::is_same_file(file, path).at("stat", path)? {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Opens the existing state file at `path` as [`open_or_create`] does; `Ok(None)` if
/// there is none (nothing is created).
pub(crate) fn open_existing(path: &Path, layout: Layout, mode: u32) -> Result<Option<StateFile>> {
    match sys::open_state_file(path, Open::Existing) {
        Ok(file) => validate(path, file, layout, mode).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", path, e)),
    }
}

fn validate(path: &Path, file: File, layout: Layout, mode: u32) -> Result<StateFile> {
    let expected = layout.kind.name();
    let meta = file.metadata().at("stat", path)?;
    check_trust(path, &meta, mode, expected)?;
    let size = meta.len();
    let mut header = [0u8; HEADER_LEN];
    let n = read_prefix(&file, &mut header).at("read", path)?;
    if n < HEADER_LEN || header[..8] != MAGIC {
        let detail = if size == 0 {
            "the file is empty".to_owned()
        } else {
            "no fileipc header".to_owned()
        };
        return Err(Error::format(path, expected, detail));
    }
    let kind = u32::from_le_bytes(header[8..12].try_into().unwrap());
    let version = u32::from_le_bytes(header[12..16].try_into().unwrap());
    let len = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
    match Kind::from_u32(kind) {
        Some(k) if k == layout.kind => {}
        Some(k) => {
            return Err(Error::format(
                path,
                expected,
                format!("it is a {}", k.name()),
            ));
        }
        None => {
            return Err(Error::format(
                path,
                expected,
                format!("unknown kind {kind}"),
            ));
        }
    }
    if version != layout.version {
        return Err(Error::format(
            path,
            expected,
            format!(
                "format version {version}, this library reads version {}",
                layout.version
            ),
        ));
    }
    if len != layout.len || size < layout.len as u64 {
        return Err(Error::format(
            path,
            expected,
            format!(
                "region of {len} bytes in a file of {size}, expected {}",
                layout.len
            ),
        ));
    }
    let map = SharedMap::new(&file, layout.len).at("mmap", path)?;
    Ok(StateFile {
        path: path.to_owned(),
        file,
        map,
    })
}

/// Refuses an existing state file that another user could have planted or can change,
/// following the checks systemd applies to PID files before trusting them:
///
/// - a file owned by another user is refused when `mode` is private (grants nothing to
///   group or others): only its user should have been able to create it, so it was
///   planted (running as root, a file an unprivileged user controls is never trusted);
///   with a shared `mode` (e.g. `0o660`) files of other users are expected;
/// - a file writable by group or others beyond what `mode` grants is refused: anyone it
///   lets write could change the state under us.
///
/// Used by every primitive that keeps state in a file (mutex, semaphore, queue control
/// file, SharedData database and lock file; PID files apply the same rule on take-over).
pub(crate) fn check_trust(
    path: &Path,
    meta: &std::fs::Metadata,
    mode: u32,
    expected: &'static str,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = sys::effective_uid();
    if meta.uid() != me && mode & 0o066 == 0 {
        return Err(Error::invalid(
            path,
            format!(
                "{expected} owned by uid {}, not by this process (uid {me}), with a private \
                 mode {mode:04o} asked for; refusing to trust it",
                meta.uid()
            ),
        ));
    }
    let loose = meta.mode() & 0o022 & !mode;
    if loose != 0 {
        return Err(Error::invalid(
            path,
            format!(
                "{expected} with mode {:04o} is writable by {} beyond the mode {mode:04o} \
                 asked for; refusing to trust it (remove it, or ask for that mode)",
                meta.mode() & 0o7777,
                match loose {
                    0o022 => "its group and others",
                    0o020 => "its group",
                    _ => "others",
                }
            ),
        ));
    }
    Ok(())
}

/// Reads the first `buf.len()` bytes of `file` (fewer if it is shorter) into `buf`;
/// returns how many were read.
pub(crate) fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Layout = Layout {
        kind: Kind::Mutex,
        version: 1,
        len: 4096,
    };

    #[test]
    fn create_then_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        open_or_create(&p, L, 0o600, |r| r[0] = 7).unwrap();
        let b = open_or_create(&p, L, 0o600, |_| panic!("must not init twice")).unwrap();
        assert_eq!(
            b.map
                .u32(HEADER_LEN)
                .load(std::sync::atomic::Ordering::Relaxed),
            7
        );
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_other_kind_garbage_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        open_or_create(&p, L, 0o600, |_| {}).unwrap();
        let sem = Layout {
            kind: Kind::Semaphore,
            ..L
        };
        let e = open_or_create(&p, sem, 0o600, |_| {}).unwrap_err();
        assert!(e.to_string().contains("it is a fileipc mutex file"), "{e}");

        let g = dir.path().join("garbage");
        std::fs::write(&g, b"hello world").unwrap();
        let e = open_or_create(&g, L, 0o600, |_| {}).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e}");
        assert_eq!(std::fs::read(&g).unwrap(), b"hello world");

        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&g, &l).unwrap();
        let e = open_or_create(&l, L, 0o600, |_| {}).unwrap_err();
        assert!(matches!(e, Error::Symlink { .. }), "{e}");
    }

    #[test]
    fn peek_reads_kind_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        open_or_create(&p, L, 0o600, |_| {}).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(peek(&bytes), Some((Kind::Mutex as u32, Some(1))));
        assert_eq!(peek(&bytes[..14]), Some((Kind::Mutex as u32, None)));
        assert_eq!(peek(&bytes[..11]), None);
        assert_eq!(peek(b"hello world, not a header"), None);
    }

    #[test]
    fn refuses_other_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        open_or_create(&p, L, 0o600, |_| {}).unwrap();
        let v2 = Layout { version: 2, ..L };
        let e = open_or_create(&p, v2, 0o600, |_| {}).unwrap_err();
        assert!(e.to_string().contains("format version 1"), "{e}");
    }
}
