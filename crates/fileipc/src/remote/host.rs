//! Same-host fast reclaim: a holder on Redis also proves it is alive the way local
//! owners do (an owner id in a host-wide state file, `owner.rs`), so a waiter on the
//! same host that finds the holder dead frees what it held at once instead of waiting
//! for its lease.
//!
//! Every token this process writes (a lock's value, a permit's member, a PID file's
//! entry) ends in ` HOST OWNER`: the host identity (below) and the process's owner id in
//! the host file. A waiter whose host identity is the same probes that id's byte lock
//! (one `F_OFD_GETLK`); unlocked means the holder is gone for good, and the waiter
//! deletes the entry with a script that checks it still holds exactly that token. A
//! token from another host, or written where no host file could be opened, is never
//! reclaimed early: its lease decides.
//!
//! The host identity names the one file every process that can probe the others uses:
//! the boot id, `/etc/machine-id`, the PID namespace, and the host file's device and
//! inode. Two processes agree on it only if they share that very file (same machine,
//! same boot, same mount of `/dev/shm` or of the temporary directory), so a waiter never
//! probes a file the holder did not register in; processes in different containers
//! disagree and fall back to the lease.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::owner::Owners;
use crate::state::{self, Kind, Layout};

/// The host file: the common header only (its owner-id counter).
const LAYOUT: Layout = Layout {
    kind: Kind::HostOwners,
    version: 1,
    len: state::HEADER_LEN,
};

/// This process's registration in the host file, if one could be made.
struct Here {
    host: String,
    owners: Arc<Owners>,
}

fn here() -> Option<&'static Here> {
    static HERE: OnceLock<Option<Here>> = OnceLock::new();
    HERE.get_or_init(|| {
        let boot = crate::sys::boot_id()?;
        let machine = std::fs::read_to_string("/etc/machine-id").ok()?;
        let pidns = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join("fileipc-redis-owners");
        // Shared by every user of the host: any of them may register in it (a
        // user can at worst keep a dead owner looking alive, which only costs the
        // lease; no one can make a live owner look dead).
        let file = state::open_or_create(&path, LAYOUT, 0o666, |_| {}).ok()?;
        let meta = file.file.metadata().ok()?;
        let owners = Owners::of(&file.file, &path).ok()?;
        let host = format!(
            "{boot:016x}-{}-{pidns}-{}-{}",
            machine.trim(),
            meta.dev(),
            meta.ino()
        );
        Some(Here { host, owners })
    })
    .as_ref()
}

/// The suffix every token of this process ends in: ` HOST OWNER`, or nothing where the
/// host file could not be used (or this is a forked child that has no id yet: it
/// registers on first use).
pub(crate) fn token_suffix() -> String {
    match here() {
        Some(h) => match h.owners.process_id() {
            Ok(id) => format!(" {} {id}", h.host),
            Err(_) => String::new(),
        },
        None => String::new(),
    }
}

/// The host identity and owner id a token ends in, if it has them.
fn origin(token: &str) -> Option<(&str, u32)> {
    let mut parts = token.rsplitn(3, ' ');
    let id = parts.next()?.parse().ok()?;
    Some((parts.next()?, id))
}

/// Whether `token` was written by a process of this host that is gone: its owner id in
/// the host file is no longer locked. `false` whenever that cannot be proven.
pub(crate) fn holder_is_dead(token: &str) -> bool {
    match (here(), origin(token)) {
        (Some(h), Some((host, id))) => host == h.host && !h.owners.is_alive(id),
        _ => false,
    }
}

/// Whether `token` was written by a process of this host (alive or not).
pub(crate) fn is_local(token: &str) -> bool {
    match (here(), origin(token)) {
        (Some(h), Some((host, _))) => host == h.host,
        _ => false,
    }
}
