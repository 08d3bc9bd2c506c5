//! The Redis engine of [`Mutex`](super::Mutex): a key holding the holder's token with
//! a lease (`SET NX PX`), renewed by the process's lease keeper, released by a script
//! that checks the token, and a fence from the `meta` hash that only grows.
//!
//! Keys (`{p}` = prefix + name): `{p}:lock` (the token, with a TTL), `{p}:meta` (hash:
//! kind, version, fence), channel `{p}:wake` (published on release; only a hint: a
//! waiter re-polls at the server-reported TTL). Scripts and failure model:
//! `docs/REDIS.md`.

use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::location::RedisUrl;
use crate::remote::lease::Lease;
use crate::remote::{self, Conn, Wake, lock};

/// Takes the lock for token `ARGV[1]` with a lease of `ARGV[2]` ms: `{1, fence}`, or
/// `{0, pttl, holder's token}` when it is held.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local f = tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')
  if f < now then f = now else f = f + 1 end
  redis.call('HSET', KEYS[2], 'fence', string.format('%d', f))
  return {1, f, false}
end
return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1]) or ''}
";

/// Deletes the lock if it still holds `ARGV[1]` (a holder proven dead), and wakes
/// waiters.
const RECLAIM: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], '1')
  return 1
end
return 0
";

/// How often a waiter polls a holder of its own host, whose death it can prove.
const LOCAL_HOLDER_POLL: Duration = Duration::from_millis(50);

/// Releases the lock if `ARGV[1]` still holds it, and wakes waiters.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], '1')
  return 1
end
return 0
";

use crate::remote::MAX_NAP;

/// A mutex on a Redis server.
pub(super) struct RedisMutex {
    conn: Conn,
    /// The wake channel, subscribed by the first wait.
    wake: Wake,
    /// The lease this handle holds, if it holds the lock.
    held: StdMutex<Option<(Arc<Lease>, u64)>>,
}

impl std::fmt::Debug for RedisMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMutex")
            .field("conn", &self.conn)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl RedisMutex {
    pub(super) fn open(url: &RedisUrl) -> Result<RedisMutex> {
        let conn = Conn::open(url)?;
        remote::check_kind(&conn, "mutex", true)?;
        Ok(RedisMutex {
            conn,
            wake: Wake::new(url, url.key("wake")),
            held: StdMutex::new(None),
        })
    }

    pub(super) fn try_clone(&self) -> Result<RedisMutex> {
        RedisMutex::open(self.conn.url())
    }

    fn url(&self) -> &RedisUrl {
        self.conn.url()
    }

    /// One attempt: `Ok(None)` when taken, `Ok(Some(pttl))` when held by someone.
    fn attempt(&self) -> Result<Option<Duration>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let mut held = lock(&self.held);
        if held.is_some() {
            // This handle already holds it: as for the local engine, another thread
            // of this handle waits until it is unlocked.
            return Ok(Some(MAX_NAP));
        }
        let token = remote::token();
        let sent = Instant::now();
        let (ok, n, holder): (i64, i64, Option<String>) = self.conn.with(|c| {
            remote::script(&S, &[ACQUIRE])
                .key(self.url().key("lock"))
                .key(self.url().key("meta"))
                .arg(&token)
                .arg(self.url().lease().as_millis() as u64)
                .invoke(c)
        })?;
        if ok == 1 {
            let lease = Lease::start(self.url(), self.url().key("lock"), token, sent);
            *held = Some((lease, n as u64));
            Ok(None)
        } else {
            let ttl = if n > 0 {
                Duration::from_millis(n as u64)
            } else {
                MAX_NAP
            };
            match holder {
                Some(h) if remote::host::holder_is_dead(&h) => {
                    drop(held);
                    self.reclaim(&h)?;
                    Ok(Some(Duration::ZERO))
                }
                Some(h) if remote::host::is_local(&h) => Ok(Some(ttl.min(LOCAL_HOLDER_POLL))),
                _ => Ok(Some(ttl)),
            }
        }
    }

    /// Frees the lock of a holder proven dead (same host, owner id unlocked).
    fn reclaim(&self, holder: &str) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let _: i64 = self.conn.with(|c| {
            remote::script(&S, &[RECLAIM])
                .key(self.url().key("lock"))
                .key(self.url().key("wake"))
                .arg(holder)
                .invoke(c)
        })?;
        Ok(())
    }

    pub(super) fn try_lock(&self) -> Result<bool> {
        match self.attempt()? {
            None => Ok(true),
            // A dead holder was freed: try once more.
            Some(d) if d.is_zero() => Ok(self.attempt()?.is_none()),
            Some(_) => Ok(false),
        }
    }

    pub(super) fn lock_until(&self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            let Some(ttl) = self.attempt()? else {
                return Ok(true);
            };
            if ttl.is_zero() {
                continue;
            }
            let now = Instant::now();
            let mut nap = ttl.min(MAX_NAP);
            if let Some(d) = deadline {
                if now >= d {
                    return Ok(false);
                }
                nap = nap.min(d - now);
            }
            self.wake.nap(nap)?;
        }
    }

    pub(super) fn unlock(&self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let Some((lease, _)) = lock(&self.held).take() else {
            return Err(Error::Invalid {
                path: self.url().as_path(),
                detail: "unlock of a mutex this handle does not hold".into(),
            });
        };
        let was_lost = lease.is_lost();
        lease.end();
        let released: Result<i64> = self.conn.with(|c| {
            remote::script(&S, &[RELEASE])
                .key(self.url().key("lock"))
                .key(self.url().key("wake"))
                .arg(lease.token())
                .invoke(c)
        });
        // A lost lease is the error to report, whatever the release found.
        if was_lost || released? != 1 {
            return Err(Error::LeaseLost {
                path: self.url().as_path(),
                lease: self.url().lease(),
            });
        }
        Ok(())
    }

    /// The fence of the grant this handle holds.
    pub(super) fn fence(&self) -> Option<u64> {
        lock(&self.held).as_ref().map(|(_, f)| *f)
    }

    /// The last fence granted (the `meta` hash's `fence`, 0 if none).
    pub(super) fn last_fence(&self) -> Result<u64> {
        let f: Option<u64> = self.conn.read(|c| {
            redis::cmd("HGET")
                .arg(self.url().key("meta"))
                .arg("fence")
                .query(c)
        })?;
        Ok(f.unwrap_or(0))
    }

    /// Whether the lease of the lock this handle holds is lost (always `false` when it
    /// holds nothing).
    pub(super) fn is_lost(&self) -> bool {
        lock(&self.held).as_ref().is_some_and(|(l, _)| l.is_lost())
    }

    /// Removes the name's metadata (kind, fence). A lock held now stays held until
    /// its holder releases it or its lease runs out: nothing is taken from a holder.
    pub(super) fn destroy(&self) -> Result<()> {
        self.conn
            .read(|c| redis::cmd("DEL").arg(self.url().key("meta")).query::<()>(c))
    }

    pub(super) fn is_locked(&self) -> Result<bool> {
        let n: i64 = self
            .conn
            .read(|c| redis::cmd("EXISTS").arg(self.url().key("lock")).query(c))?;
        Ok(n == 1)
    }

    /// A lock on Redis is not a descriptor: a program started by the holder cannot
    /// inherit it (the holder keeps renewing the lease while it lives).
    pub(super) fn share_with_children(&self) -> Result<std::os::fd::RawFd> {
        Err(Error::Invalid {
            path: self.url().as_path(),
            detail: "a lock on Redis cannot be handed to a child process as a descriptor".into(),
        })
    }

    /// The holder is not recorded on Redis (only its token).
    pub(super) fn holder(&self) -> Result<Option<super::MutexHolder>> {
        Ok(None)
    }

    /// Waiters are not counted on Redis.
    pub(super) fn waiting(&self) -> u32 {
        0
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.conn.path()
    }
}

impl Drop for RedisMutex {
    fn drop(&mut self) {
        if lock(&self.held).is_some() {
            let _ = self.unlock();
        }
    }
}
