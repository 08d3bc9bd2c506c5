//! Owners: who holds a lock word, a permit or a slot, and whether it is still alive, as
//! the kernel vouches for it.
//!
//! Every state file hands out *owner ids*, 31-bit numbers from a counter in its common
//! header ([`NEXT_ID`], never reused until the counter wraps after 2^31 ids). A process
//! that needs an identity in a file opens the file once more (an open file description
//! of its own, never used for anything else), takes the next id from the counter, and
//! takes an exclusive open-file-description lock on the byte at [`LOCK_BASE`]` + id`
//! (see `sys/ofd.rs`). Only then does it write the id into any lock word, table entry or
//! slot, so no state exists in which a live owner looks unverifiable. The kernel drops
//! the byte lock when the last descriptor of that description closes: when the process
//! exits or is killed, or, for a descriptor it handed to a child on purpose (the CLI's
//! `run` wrappers), when the child and everything that inherited it are gone.
//!
//! Whether id `x` is alive is then one `F_OFD_GETLK` on its byte (about 0.2 us): locked by
//! another description means alive; unlocked means its owner is gone for good (ids are
//! not reused). No process ID is looked up, so this is right across users, `hidepid`
//! `/proc` mounts and PID namespaces, and nothing is ever taken from a live owner
//! because a timer ran out. A probe that fails (a file system without these locks)
//! counts as alive: never robbed, at the price of no recovery there.
//!
//! Ids are per thread for lock words (a thread that finds its own id in a word it is
//! trying to take knows the word is damaged) and per process for what belongs to the
//! process (semaphore permits). All the ids of one process in one file share its one
//! description: one [`Owners`] per file and process, found in a process-wide registry.
//!
//! A child created by `fork` without `exec` is a new owner from the moment it touches a
//! handle: [`sys::fork_epoch`] tells it apart from its parent with one memory read, and
//! it then registers ids of its own through a description of its own, and closes its copy
//! of the parent's, so it never speaks for, releases or keeps alive what its parent owns.
//! The parent's [`Owners`] objects in the child lead to the child's own and keep it alive
//! (the registry holds weak references only), so the child's ids live as long as the
//! handles it inherited or opened: several children using one inherited handle at once
//! are distinct, live owners, as separate processes are.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{Error, IoResultExt, Result};
use crate::sys::{self, SharedMap};

/// Owner ids fit in 31 bits, so that a lock word keeps bit 31 for itself. 0 is no owner.
pub(crate) const ID_MASK: u32 = 0x7fff_ffff;

/// Offset in the common header of the counter of owner ids handed out (a `u32`).
pub(crate) const NEXT_ID: usize = 20;

/// The byte whose lock marks owner `id` alive lies at `LOCK_BASE + id`, far beyond the
/// end of any state file (locks there need no storage).
pub(crate) const LOCK_BASE: u64 = 1 << 40;

/// The owners of one state file as one process (one `fork` generation) sees them: its
/// own open file description of the file, which holds the byte locks of its ids.
#[derive(Debug)]
pub(crate) struct Owners {
    path: PathBuf,
    /// The description holding this process's byte locks; `None` once this process,
    /// a forked child, gave up its copy of its parent's.
    file: Mutex<Option<File>>,
    /// The header's page, for the id counter.
    map: SharedMap,
    id: (u64, u64),
    /// The [`sys::fork_epoch`] of the process that made this.
    epoch: u64,
    /// Tells this object apart from every other in the process, for the thread cache.
    serial: u64,
    /// The id of the process.
    process: u32,
    /// The ids of the threads that asked for one.
    threads: Mutex<Vec<(std::thread::ThreadId, u32)>>,
    /// In a forked child that uses this object (its parent's), the child's own owners of
    /// the same file, kept alive by it: the ids the child registers through this object
    /// stay locked (alive) for as long as the child's handles that hold it.
    forked: Mutex<Option<Arc<Owners>>>,
}

/// The process-wide registry: at most one live [`Owners`] per file and fork epoch.
static REGISTRY: Mutex<Vec<Weak<Owners>>> = Mutex::new(Vec::new());

/// [`Owners`] objects made so far, for their serial numbers.
static SERIAL: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks can leave the data inconsistent if a thread panics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Owners {
    /// The owners of the state file `file` (at `path`) for the calling process, made and
    /// registered (a new description, the process's id) on first use.
    pub(crate) fn of(file: &File, path: &Path) -> Result<Arc<Owners>> {
        let id = sys::file_id(file).at("stat", path)?;
        let epoch = sys::fork_epoch();
        let mut reg = lock(&REGISTRY);
        reg.retain(|w| w.strong_count() > 0);
        if let Some(o) = reg
            .iter()
            .filter_map(Weak::upgrade)
            .find(|o| o.id == id && o.epoch == epoch)
        {
            return Ok(o);
        }
        // A handle inherited from the parent, used first in a forked child: give up the
        // child's copy of the parent's description, so the child neither speaks for the
        // parent nor keeps its ids alive; the parent's objects then lead to (and keep
        // alive) the child's own, made below.
        let older: Vec<Arc<Owners>> = reg
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|o| o.id == id && o.epoch != epoch)
            .collect();
        for o in &older {
            *lock(&o.file) = None;
        }
        let own = sys::reopen(file, path).at("open", path)?;
        let map = SharedMap::new(&own, crate::state::HEADER_LEN).at("mmap", path)?;
        let mut o = Owners {
            path: path.to_owned(),
            file: Mutex::new(None),
            map,
            id,
            epoch,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            process: 0,
            threads: Mutex::new(Vec::new()),
            forked: Mutex::new(None),
        };
        o.process = o.register(&own)?;
        *lock(&o.file) = Some(own);
        let o = Arc::new(o);
        reg.push(Arc::downgrade(&o));
        for older in older {
            *lock(&older.forked) = Some(o.clone());
        }
        Ok(o)
    }

    fn counter(&self) -> &AtomicU32 {
        self.map.u32(NEXT_ID)
    }

    /// Takes a fresh id and locks its byte through `file`.
    fn register(&self, file: &File) -> Result<u32> {
        // Ids already locked by someone (the counter wrapped onto a live id, or was
        // damaged) are skipped; give up after a run of them rather than loop forever.
        for _ in 0..4096 {
            let id = self
                .counter()
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1)
                & ID_MASK;
            if id == 0 {
                continue;
            }
            if sys::try_lock_byte(file, LOCK_BASE + u64::from(id)).at("lock", &self.path)? {
                return Ok(id);
            }
        }
        Err(Error::io(
            "lock",
            &self.path,
            std::io::Error::other("no free owner id (4096 in a row are in use)"),
        ))
    }

    /// Whether this object belongs to the calling process (not to the parent of a
    /// forked child).
    fn current(&self) -> bool {
        self.epoch == sys::fork_epoch()
    }

    /// The owners of the same file for the calling process: `self`, or in a forked child
    /// the child's own, which `self` then keeps alive (the registry holds only weak
    /// references: without this, the child's ids would die, their byte locks closed,
    /// as soon as the call that registered them returned, while lock words and slots
    /// still name them).
    fn here(self: &Arc<Self>) -> Result<Arc<Owners>> {
        if self.current() {
            return Ok(self.clone());
        }
        // Not held across `Owners::of`, which sets it (under the registry's lock).
        let known = lock(&self.forked).clone();
        if let Some(o) = &known {
            if o.current() {
                return Ok(o.clone());
            }
            // A child of the child (or further): through the generation before.
            let o = o.here()?;
            *lock(&self.forked) = Some(o.clone());
            return Ok(o);
        }
        let file = lock(&self.file);
        let o = match file.as_ref() {
            Some(f) => {
                let f = f.try_clone().at("dup", &self.path)?;
                drop(file);
                Owners::of(&f, &self.path)?
            }
            None => {
                // The child gave up its copy of the parent's description; the registry
                // holds the child's own.
                drop(file);
                Owners::of_registered(self.id, &self.path)?
            }
        };
        *lock(&self.forked) = Some(o.clone());
        Ok(o)
    }

    fn of_registered(id: (u64, u64), path: &Path) -> Result<Arc<Owners>> {
        let epoch = sys::fork_epoch();
        let found = lock(&REGISTRY)
            .iter()
            .filter_map(Weak::upgrade)
            .find(|o| o.id == id && o.epoch == epoch);
        match found {
            Some(o) => Ok(o),
            None => {
                let f = sys::open_state_file(path, sys::Open::Existing).at("open", path)?;
                Owners::of(&f, path)
            }
        }
    }

    /// The calling process's id in this file.
    pub(crate) fn process_id(self: &Arc<Self>) -> Result<u32> {
        if self.current() {
            return Ok(self.process);
        }
        Ok(self.here()?.process)
    }

    /// The calling thread's id in this file (registered on its first call; one memory
    /// read and a compare from then on).
    #[inline]
    pub(crate) fn thread_id(self: &Arc<Self>) -> Result<u32> {
        let epoch = sys::fork_epoch();
        let key = (self.serial, epoch);
        if let Some(id) = CACHE.with(|c| c.get(key)) {
            return Ok(id);
        }
        self.thread_id_slow(key)
    }

    #[cold]
    fn thread_id_slow(self: &Arc<Self>, key: (u64, u64)) -> Result<u32> {
        let here = self.here()?;
        let me = std::thread::current().id();
        let mut threads = lock(&here.threads);
        let id = match threads.iter().find(|(t, _)| *t == me) {
            Some(&(_, id)) => id,
            None => {
                let file = lock(&here.file);
                let f = file.as_ref().ok_or_else(|| {
                    Error::io(
                        "lock",
                        &here.path,
                        std::io::Error::other("owner file closed"),
                    )
                })?;
                let id = here.register(f)?;
                drop(file);
                threads.push((me, id));
                id
            }
        };
        CACHE.with(|c| c.put(key, id));
        Ok(id)
    }

    /// A fresh id whose byte is locked through `file`, another open file description of
    /// the same file: the id lives exactly as long as that description (a handle's own,
    /// for an owner that is the handle rather than a thread or the process).
    pub(crate) fn register_on(self: &Arc<Self>, file: &File) -> Result<u32> {
        self.here()?.register(file)
    }

    /// Whether `id` is one of the calling process's ids in this file.
    pub(crate) fn is_mine(self: &Arc<Self>, id: u32) -> bool {
        let Ok(here) = self.here() else {
            return false;
        };
        id != 0 && (id == here.process || lock(&here.threads).iter().any(|&(_, t)| t == id))
    }

    /// Whether the owner `id` is alive: one of the calling process's ids, or an id whose
    /// byte another description holds locked. 0 is nobody. A probe that fails counts as
    /// alive (nothing is taken on a guess).
    pub(crate) fn is_alive(self: &Arc<Self>, id: u32) -> bool {
        if id == 0 || id > ID_MASK {
            return false;
        }
        let Ok(here) = self.here() else {
            return true;
        };
        if here.is_mine(id) {
            return true;
        }
        let file = lock(&here.file);
        match file.as_ref() {
            Some(f) => sys::byte_locked_by_other(f, LOCK_BASE + u64::from(id)).unwrap_or(true),
            None => true,
        }
    }

    /// Makes this process's ownership in the file inherited by the programs it executes
    /// from now on (the CLI's `run` wrappers: the command keeps the permit or lock alive
    /// after the wrapper is gone). Returns the descriptor number the command inherits.
    pub(crate) fn inherit(self: &Arc<Self>) -> Result<i32> {
        use std::os::fd::AsRawFd;
        let here = self.here()?;
        let file = lock(&here.file);
        let f = file.as_ref().ok_or_else(|| {
            Error::io(
                "fcntl",
                &here.path,
                std::io::Error::other("owner file closed"),
            )
        })?;
        sys::set_inherited(f, true).at("fcntl", &here.path)?;
        Ok(f.as_raw_fd())
    }
}

/// Refuses a handle opened with fork epoch `epoch` (see [`sys::fork_epoch`]) when used
/// in a child forked since: for handles whose ownership (an `flock` on the handle's open
/// file description, a process's owner id) the child would share with its parent.
#[inline]
pub(crate) fn check_not_forked(epoch: u64, path: &Path, primitive: &str) -> Result<()> {
    if epoch == sys::fork_epoch() {
        return Ok(());
    }
    Err(Error::invalid(
        path,
        format!(
            "this handle was opened by the parent of this forked process, and shares its \
             ownership; open the {primitive} again in this process"
        ),
    ))
}

/// The calling thread's last few ids: `(owners serial, fork epoch) -> id`.
struct Cache(Cell<[(u64, u64, u32); 4]>, Cell<usize>);

thread_local!(static CACHE: Cache = const { Cache(Cell::new([(0, 0, 0); 4]), Cell::new(0)) });

impl Cache {
    #[inline]
    fn get(&self, key: (u64, u64)) -> Option<u32> {
        // Entry by entry, without copying the array out of its cell.
        let entries: &Cell<[(u64, u64, u32)]> = &self.0;
        entries
            .as_slice_of_cells()
            .iter()
            .map(Cell::get)
            .find(|e| (e.0, e.1) == key)
            .map(|e| e.2)
    }

    fn put(&self, key: (u64, u64), id: u32) {
        let mut entries = self.0.get();
        let i = self.1.get();
        entries[i] = (key.0, key.1, id);
        self.0.set(entries);
        self.1.set((i + 1) % entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{self, Kind, Layout};

    fn state_file(dir: &Path) -> crate::state::StateFile {
        let layout = Layout {
            kind: Kind::Mutex,
            version: 1,
            len: 128,
        };
        state::open_or_create(&dir.join("s"), layout, 0o600, |_| {}).unwrap()
    }

    #[test]
    fn one_registry_entry_per_file_and_distinct_ids_per_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = state_file(dir.path());
        let a = Owners::of(&s.file, &s.path).unwrap();
        let b = Owners::of(&s.file, &s.path).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let mine = a.thread_id().unwrap();
        assert_eq!(mine, a.thread_id().unwrap(), "stable per thread");
        let other = {
            let a = a.clone();
            std::thread::spawn(move || a.thread_id().unwrap())
                .join()
                .unwrap()
        };
        assert_ne!(mine, other);
        assert_ne!(mine, a.process_id().unwrap());
        for id in [mine, other, a.process_id().unwrap()] {
            assert!(a.is_mine(id) && a.is_alive(id));
        }
        assert!(!a.is_alive(0));
        assert!(!a.is_alive(mine + 1000), "never handed out");
    }

    #[test]
    fn ids_of_a_dropped_registry_are_dead_to_another_description() {
        let dir = tempfile::tempdir().unwrap();
        let s = state_file(dir.path());
        let a = Owners::of(&s.file, &s.path).unwrap();
        let id = a.thread_id().unwrap();
        let probe = sys::reopen(&s.file, &s.path).unwrap();
        assert!(sys::byte_locked_by_other(&probe, LOCK_BASE + u64::from(id)).unwrap());
        drop(a);
        assert!(!sys::byte_locked_by_other(&probe, LOCK_BASE + u64::from(id)).unwrap());
        let b = Owners::of(&s.file, &s.path).unwrap();
        assert!(!b.is_alive(id));
        assert_ne!(b.thread_id().unwrap(), id, "ids are not reused");
    }
}
