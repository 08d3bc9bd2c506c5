//! The event baselines: raw inotify on the directory (the file's creation is the event)
//! and 10 ms polling for the file's existence.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{Env, SEED_POLL, SEED_TIMEOUT_NS};
use crate::api::EventFlag;
use crate::ours;
use crate::sys::{self, now_ns};

/// Opens the event implementation `imp` (the waiter side arms itself at open).
pub(crate) fn open_event(imp: &str, env: &Env) -> Result<Box<dyn EventFlag>> {
    let path = env.dir.join("event");
    Ok(match imp {
        "ours" => ours::event(&path)?,
        "ours_redis" => ours::event(&env.redis_ours("event")?)?,
        "redis_pubsub" => super::redis::open_event(env)?,
        "inotify" => Box::new(InotifyFlag {
            watch: sys::Inotify::watch_dir(&env.dir)?,
            path,
        }),
        "poll10ms" => Box::new(PollFlag(path)),
        other => bail!("unknown event implementation {other:?}"),
    })
}

fn touch(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Raw inotify: the file's creation is the event; the waiter watches the directory.
struct InotifyFlag {
    watch: sys::Inotify,
    path: PathBuf,
}

impl EventFlag for InotifyFlag {
    fn set(&mut self) -> Result<()> {
        touch(&self.path)
    }

    fn clear(&mut self) -> Result<()> {
        remove_if_present(&self.path)
    }

    fn wait(&mut self) -> Result<bool> {
        let name = self.path.file_name().map(|n| n.as_encoded_bytes().to_vec());
        if self.path.exists() {
            return Ok(true);
        }
        loop {
            let names = self.watch.read_names()?;
            // A creation event left from an earlier round is stale if the file is gone.
            if names.iter().any(|n| Some(n) == name.as_ref()) && self.path.exists() {
                return Ok(true);
            }
        }
    }
}

/// The file's existence is the event; the waiter checks every 10 ms.
struct PollFlag(PathBuf);

impl EventFlag for PollFlag {
    fn set(&mut self) -> Result<()> {
        touch(&self.0)
    }

    fn clear(&mut self) -> Result<()> {
        remove_if_present(&self.0)
    }

    fn wait(&mut self) -> Result<bool> {
        let give_up = now_ns() + SEED_TIMEOUT_NS;
        loop {
            if self.0.exists() {
                return Ok(true);
            }
            if now_ns() >= give_up {
                return Ok(false);
            }
            std::thread::sleep(SEED_POLL);
        }
    }
}
