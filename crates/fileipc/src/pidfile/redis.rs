//! The Redis engine of [`PidFile`](super::PidFile): one key holding `PID TOKEN` under a
//! lease renewed while the owner lives, so a dead owner's entry expires by itself.
//!
//! Keys (`{p}` = prefix + name): `{p}:pid` (`PID TOKEN`, leased), `{p}:meta` (hash:
//! kind, version, fence: the last generation). "Running" means the lease runs: an owner on another machine counts.

use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Instant;

use super::PidStatus;
use crate::error::{Error, Result};
use crate::location::RedisUrl;
use crate::remote::lease::Lease;
use crate::remote::{self, Conn, lock};

/// Creates the entry `ARGV[1]` with a lease of `ARGV[2]` ms if there is none: its
/// generation, `max(last + 1, server TIME in us)`; else 0.
const CREATE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local f = tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')
  if f < now then f = now else f = f + 1 end
  redis.call('HSET', KEYS[2], 'fence', string.format('%d', f))
  return f
end
return 0
";

/// Deletes the entry if it is still `ARGV[1]`'s: 1, else 0.
const REMOVE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// A PID file on a Redis server.
#[derive(Debug)]
pub(super) struct RedisPidFile {
    conn: Conn,
    /// The lease of the entry this handle created, and its generation.
    owned: StdMutex<Option<Arc<Lease>>>,
    generation: std::sync::atomic::AtomicU64,
}

impl RedisPidFile {
    pub(super) fn open(url: &RedisUrl) -> Result<RedisPidFile> {
        let conn = Conn::open(url)?;
        remote::check_kind(&conn, "pidfile", true)?;
        Ok(RedisPidFile {
            conn,
            owned: StdMutex::new(None),
            generation: Default::default(),
        })
    }

    fn url(&self) -> &RedisUrl {
        self.conn.url()
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.conn.path()
    }

    pub(super) fn create(&self) -> Result<bool> {
        let mut owned = lock(&self.owned);
        if owned.as_ref().is_some_and(|l| !l.is_lost()) {
            return Ok(true);
        }
        let value = format!("{} {}", std::process::id(), remote::token());
        static S: OnceLock<redis::Script> = OnceLock::new();
        let sent = Instant::now();
        let generation: u64 = self.conn.with(|c| {
            remote::script(&S, &[CREATE])
                .key(self.url().key("pid"))
                .key(self.url().key("meta"))
                .arg(&value)
                .arg(self.url().lease().as_millis() as u64)
                .invoke(c)
        })?;
        if generation == 0 {
            // An owner of this host proven dead is taken over at once.
            let key = self.url().key("pid");
            if remote::free_if_dead(&self.conn, &key, &self.url().key("wake"))? {
                drop(owned);
                return self.create();
            }
            return Ok(false);
        }
        *owned = Some(Lease::start(self.url(), self.url().key("pid"), value, sent));
        self.generation
            .store(generation, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    pub(super) fn generation(&self) -> Option<u64> {
        lock(&self.owned)
            .is_some()
            .then(|| self.generation.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The `meta` hash's `fence`: the last generation, `None` if none was made.
    pub(super) fn last_generation(&self) -> Result<Option<u64>> {
        self.conn.read(|c| {
            redis::cmd("HGET")
                .arg(self.url().key("meta"))
                .arg("fence")
                .query(c)
        })
    }

    pub(super) fn read(&self) -> Result<Option<u32>> {
        let v: Option<String> = self
            .conn
            .read(|c| redis::cmd("GET").arg(self.url().key("pid")).query(c))?;
        Ok(v.and_then(|v| v.split(' ').next().and_then(|p| p.parse().ok())))
    }

    pub(super) fn remove(&self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let Some(lease) = lock(&self.owned).take() else {
            return Err(Error::Invalid {
                path: self.url().as_path(),
                detail: "remove of a PID file this handle did not create".into(),
            });
        };
        let lost = lease.is_lost();
        lease.end();
        let removed: i64 = self.conn.with(|c| {
            remote::script(&S, &[REMOVE])
                .key(self.url().key("pid"))
                .arg(lease.token())
                .invoke(c)
        })?;
        if removed == 1 && !lost {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                path: self.url().as_path(),
                lease: self.url().lease(),
            })
        }
    }

    pub(super) fn is_owner(&self) -> Result<bool> {
        let owned = lock(&self.owned);
        let Some(lease) = owned.as_ref().filter(|l| !l.is_lost()) else {
            return Ok(false);
        };
        let v: Option<String> = self
            .conn
            .read(|c| redis::cmd("GET").arg(self.url().key("pid")).query(c))?;
        Ok(v.as_deref() == Some(lease.token()))
    }

    pub(super) fn status(&self) -> Result<PidStatus> {
        Ok(match self.read()? {
            None => PidStatus::Absent,
            pid => PidStatus::Running { pid },
        })
    }

    /// An entry on Redis is not a descriptor: a child cannot inherit it.
    pub(super) fn share_with_children(&self) -> Result<std::os::fd::RawFd> {
        Err(Error::Invalid {
            path: self.url().as_path(),
            detail: "a PID file on Redis cannot be handed to a child process as a descriptor"
                .into(),
        })
    }
}

impl Drop for RedisPidFile {
    fn drop(&mut self) {
        if lock(&self.owned).is_some() {
            let _ = self.remove();
        }
    }
}
