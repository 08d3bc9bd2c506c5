//! The lock baselines: `flock`, a POSIX named semaphore of one permit, a process-shared
//! robust pthread mutex in a shared mapping, and the seed's polled value file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{Env, SEED_POLL, SEED_TIMEOUT_NS};
use crate::api::Lock;
use crate::ours;
use crate::sys::{self, NamedSem, now_ns};

/// Opens the lock implementation `imp`.
pub(crate) fn open_lock(imp: &str, env: &Env) -> Result<Box<dyn Lock>> {
    Ok(match imp {
        "ours_mutex" => ours::mutex(&env.dir.join("mutex"))?,
        "ours_mutex_word" => ours::mutex_word(&env.dir.join("mutex_word"))?,
        "ours_sem" => ours::semaphore(&env.dir.join("semaphore"))?,
        "ours_redis_mutex" => ours::mutex(&env.redis_ours("mutex")?)?,
        "ours_redis_sem" => ours::semaphore(&env.redis_ours("semaphore")?)?,
        "redis_setnx" | "redis_sem" => super::redis::open_lock(imp, env)?,
        "flock" => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(env.dir.join("flock"))?;
            Box::new(Flock(f))
        }
        "posix_sem" => {
            let name = format!("/{}-lock", env.tag);
            Box::new(SemLock(
                NamedSem::open(&name, 1).with_context(|| format!("sem_open {name}"))?,
            ))
        }
        "pthread_robust" => Box::new(Robust(
            sys::RobustMutex::open(&env.dir.join("pthread.shm"))
                .context("initialising the robust pthread mutex")?,
        )),
        "seed_file" => Box::new(SeedLock(env.dir.join("mutex.value"))),
        other => bail!("unknown lock implementation {other:?}"),
    })
}

/// A raw `flock(LOCK_EX)` / `flock(LOCK_UN)` pair on an open file.
struct Flock(File);

impl Lock for Flock {
    fn lock(&mut self) -> Result<()> {
        Ok(sys::flock_lock(&self.0, true)?)
    }

    fn unlock(&mut self) -> Result<()> {
        Ok(sys::flock_unlock(&self.0)?)
    }
}

/// A POSIX named semaphore of one permit used as a lock (`sem_wait` / `sem_post`).
struct SemLock(NamedSem);

impl Lock for SemLock {
    fn lock(&mut self) -> Result<()> {
        Ok(self.0.wait()?)
    }

    fn unlock(&mut self) -> Result<()> {
        Ok(self.0.post()?)
    }
}

/// A process-shared robust pthread mutex (`pthread_mutex_lock` / `pthread_mutex_unlock`;
/// a holder's death is recovered with `pthread_mutex_consistent`).
struct Robust(sys::RobustMutex);

impl Lock for Robust {
    fn lock(&mut self) -> Result<()> {
        Ok(self.0.lock()?)
    }

    fn unlock(&mut self) -> Result<()> {
        Ok(self.0.unlock()?)
    }
}

/// The seed's mutex: a value file read and rewritten, polled every 10 ms while held.
/// (It is not even exclusive under contention: it is only measured uncontended.)
struct SeedLock(PathBuf);

impl Lock for SeedLock {
    fn lock(&mut self) -> Result<()> {
        let give_up = now_ns() + SEED_TIMEOUT_NS;
        loop {
            let held = match fs::read_to_string(&self.0) {
                Ok(s) => s.trim() == "1",
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            if !held {
                fs::write(&self.0, "1")?;
                return Ok(());
            }
            if now_ns() >= give_up {
                bail!("seed mutex: timed out");
            }
            std::thread::sleep(SEED_POLL);
        }
    }

    fn unlock(&mut self) -> Result<()> {
        fs::write(&self.0, "0")?;
        Ok(())
    }
}
