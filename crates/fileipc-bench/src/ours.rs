//! The `fileipc` primitives behind the benchmark's traits.

use std::path::Path;

use anyhow::{Result, bail};
use fileipc::{Event, MessageQueue, Mutex, Semaphore, SharedData};

use crate::api::{EventFlag, Kv, Lock, QueueEnd};

struct Queue(MessageQueue);

impl QueueEnd for Queue {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.0.send(msg)?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        // `recv` waits at most DEFAULT_TIMEOUT (5 s): a stuck queue fails the run.
        // The message's own buffer becomes `buf`, as a caller keeping the `Message`
        // would use it: no second copy of the bytes.
        match self.0.recv()? {
            Some(m) => {
                *buf = m.into_bytes();
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// A queue end whose receive is a claim acknowledged at once (at-least-once delivery).
struct ClaimQueue(MessageQueue);

impl QueueEnd for ClaimQueue {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.0.send(msg)?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        // `claim` waits at most DEFAULT_TIMEOUT (5 s), as `recv` does.
        match self.0.claim()? {
            Some(m) => {
                buf.clear();
                buf.extend_from_slice(m.bytes());
                m.ack()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The queue in directory `dir`, received by claim and ack.
pub(crate) fn queue_claim(dir: &Path) -> Result<Box<dyn QueueEnd>> {
    Ok(Box::new(ClaimQueue(MessageQueue::open(dir)?)))
}

/// The queue in directory `dir`; `durable` asks for fsync-per-send with group commit.
pub(crate) fn queue(dir: &Path, durable: bool) -> Result<Box<dyn QueueEnd>> {
    let q = if durable {
        fileipc::QueueOptions::default().durable(true).open(dir)?
    } else {
        MessageQueue::open(dir)?
    };
    Ok(Box::new(Queue(q)))
}

struct MutexLock(Mutex);

impl Lock for MutexLock {
    fn lock(&mut self) -> Result<()> {
        if !self.0.lock()? {
            bail!("Mutex::lock timed out");
        }
        Ok(())
    }

    fn unlock(&mut self) -> Result<()> {
        self.0.unlock()?;
        Ok(())
    }
}

/// The mutex at `path`.
pub(crate) fn mutex(path: &Path) -> Result<Box<dyn Lock>> {
    Ok(Box::new(MutexLock(Mutex::open(path)?)))
}

/// The mutex at `path`, created in word mode (not `flock(1)`-compatible).
pub(crate) fn mutex_word(path: &Path) -> Result<Box<dyn Lock>> {
    let m = Mutex::options().flock_compatible(false).open(path)?;
    Ok(Box::new(MutexLock(m)))
}

struct SemLock(Semaphore);

impl Lock for SemLock {
    fn lock(&mut self) -> Result<()> {
        if !self.0.acquire()? {
            bail!("Semaphore::acquire timed out");
        }
        Ok(())
    }

    fn unlock(&mut self) -> Result<()> {
        self.0.release()?;
        Ok(())
    }
}

/// The semaphore at `path`, created with one permit.
pub(crate) fn semaphore(path: &Path) -> Result<Box<dyn Lock>> {
    Ok(Box::new(SemLock(Semaphore::open(path, 1)?)))
}

struct Data(SharedData);

impl Kv for Data {
    fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<()> {
        self.0.set(key, value)?;
        Ok(())
    }

    fn get(&mut self, key: &str) -> Result<Option<serde_json::Value>> {
        Ok(self.0.get::<serde_json::Value>(key)?)
    }

    fn increment(&mut self, key: &str, delta: i64) -> Result<i64> {
        Ok(self.0.increment(key, delta)?)
    }
}

/// The SharedData store at `path`.
pub(crate) fn kv(path: &Path) -> Result<Box<dyn Kv>> {
    Ok(Box::new(Data(SharedData::open(path)?)))
}

struct Flag(Event);

impl EventFlag for Flag {
    fn set(&mut self) -> Result<()> {
        self.0.set()?;
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        self.0.clear()?;
        Ok(())
    }

    fn wait(&mut self) -> Result<bool> {
        Ok(self.0.wait()?)
    }
}

/// The event at `path`.
pub(crate) fn event(path: &Path) -> Result<Box<dyn EventFlag>> {
    Ok(Box::new(Flag(Event::open(path)?)))
}
