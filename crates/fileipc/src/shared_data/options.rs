//! [`SharedDataOptions`]: how a [`SharedData`] store is opened (mode, durability); its
//! `open` builds the handle over the local engine.

use std::path::Path;

use super::local::LocalSharedData;
use super::readonly::{ReadOnlySharedData, refuses_writing};
use super::{Engine, SharedData};
use crate::error::Result;
use crate::state::DEFAULT_MODE;

/// Options for opening a [`SharedData`] store; [`SharedData::open`] uses the defaults.
///
/// # Examples
///
/// ```
/// # fn main() -> fileipc::Result<()> {
/// use std::os::unix::fs::PermissionsExt;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("state");
/// let d = fileipc::SharedData::options().mode(0o640).durable(true).open(&path)?;
/// d.set("k", &1)?;
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedDataOptions {
    pub(super) mode: u32,
    pub(super) durable: bool,
}

impl Default for SharedDataOptions {
    fn default() -> Self {
        SharedDataOptions {
            mode: DEFAULT_MODE,
            durable: false,
        }
    }
}

impl SharedDataOptions {
    /// The default options: mode 0600, `synchronous=NORMAL`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The permission bits the store and its lock file get when this call creates them,
    /// exactly (not filtered by the umask); SQLite gives its `-wal` and `-shm` files the
    /// store's mode. Bits outside `0o777` are ignored. Existing files keep their mode.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Whether every commit is synced to storage (`synchronous=FULL`), so that it also
    /// survives a power loss; slower. The default (`false`, `synchronous=NORMAL`)
    /// survives any process crash but may lose the last commits on a power loss.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Opens the store at `path` with these options; see [`SharedData::open`].
    ///
    /// # Errors
    ///
    /// As [`SharedData::open`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<SharedData> {
        self.open_as(path.as_ref(), true)
    }

    /// The engine the path names; for a local store, if the read-write open is refused
    /// (`EROFS`, `EACCES`), the read-only one on the existing store (the first error if
    /// there is none).
    fn open_as(&self, path: &Path, create: bool) -> Result<SharedData> {
        let path = match crate::location::Location::parse(path)? {
            crate::location::Location::Path(p) => p,
            crate::location::Location::Redis(url) => {
                let engine = crate::location::redis_engine(&url, |u| {
                    #[cfg(feature = "redis")]
                    return Ok(Engine::Redis(super::redis::RedisSharedData::open(
                        u, create,
                    )?));
                    #[cfg(not(feature = "redis"))]
                    unreachable!("{u:?} {create}")
                })?;
                return Ok(SharedData { engine });
            }
        };
        let path = path.as_path();
        let engine = match LocalSharedData::open(path, *self, create) {
            Ok(local) => Engine::Local(local),
            Err(e) if refuses_writing(&e) => match ReadOnlySharedData::open(path, *self, &e) {
                Ok(ro) => Engine::ReadOnly(ro),
                Err(ro) if ro.io_kind() == Some(std::io::ErrorKind::NotFound) => return Err(e),
                Err(ro) => return Err(ro),
            },
            Err(e) => return Err(e),
        };
        Ok(SharedData { engine })
    }

    /// Opens the existing store at `path` with these options; never creates the store
    /// file (its lock file and request board are created beside it if missing); see
    /// [`SharedData::open_existing`].
    ///
    /// # Errors
    ///
    /// As [`SharedData::open_existing`].
    pub fn open_existing(&self, path: impl AsRef<Path>) -> Result<SharedData> {
        self.open_as(path.as_ref(), false)
    }
}
