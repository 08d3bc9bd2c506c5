//! The Redis engine of [`Semaphore`](super::Semaphore): free permits counted in the
//! `meta` hash, each taken permit a leased member of a sorted set scored by its expiry
//! in server time, reclaimed by the next acquire or `value` once expired (so a crashed
//! holder's permits come back after the lease, never forever lost).
//!
//! Keys (`{p}` = prefix + name): `{p}:meta` (hash: kind, version, capacity, free,
//! fence), `{p}:held` (sorted set: member `PID:token`, score = expiry in server ms),
//! channel `{p}:wake`. As on the local engine, permits belong to the process: any
//! handle or thread of it may release one, and a release by a process holding none adds
//! a permit (signalling). Scripts and failure model: `docs/REDIS.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use super::SemaphoreHolder;
use super::options::Capacity;
use crate::error::{Error, Result};
use crate::location::RedisUrl;
use crate::remote::lease::Lease;
use crate::remote::{self, Conn, MAX_NAP, Wake, lock};

/// How often a waiter polls when some permits are held by processes of its own host,
/// whose death it can prove.
const LOCAL_HOLDER_POLL: Duration = Duration::from_millis(50);

/// Returns the permits of expired members to `free`. Shared head of the scripts below:
/// defines `now` (server ms) and `t` (server TIME).
const RECLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[1], 'free', #dead)
end
";

/// Takes a permit for member `ARGV[1]` with a lease of `ARGV[2]` ms: `{1, fence}`, or
/// `{0, ms until the earliest lease expires (-1: none), the members}`.
const ACQUIRE: &str = r"
local free = tonumber(redis.call('HGET', KEYS[1], 'free') or '0')
if free > 0 then
  redis.call('HINCRBY', KEYS[1], 'free', -1)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local f = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if f < us then f = us else f = f + 1 end
  redis.call('HSET', KEYS[1], 'fence', string.format('%d', f))
  return {1, f, {}}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = -1
if first[2] then wait = tonumber(first[2]) - now end
return {0, wait, redis.call('ZRANGE', KEYS[2], 0, -1)}
";

/// Returns the permit of member `ARGV[1]`, whose holder was proven dead, and wakes
/// waiters: 1, or 0 if the member is gone already.
const RECLAIM_DEAD: &str = r"
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'free', 1)
redis.call('PUBLISH', KEYS[3], '1')
return 1
";

/// Returns the permit of member `ARGV[1]` (or, if `ARGV[1]` is empty, adds one:
/// signalling, which also raises the capacity, as on the local engine) and wakes waiters: 1, or 0 if the member's lease was lost. Refuses to
/// count past `ARGV[2]` permits in all.
const RELEASE: &str = r"
if ARGV[1] ~= '' then
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
else
  if tonumber(redis.call('HGET', KEYS[1], 'free') or '0') + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    return -1
  end
  redis.call('HINCRBY', KEYS[1], 'capacity', 1)
end
redis.call('HINCRBY', KEYS[1], 'free', 1)
redis.call('PUBLISH', KEYS[3], '1')
return 1
";

/// Creates the counters with `ARGV[1]` permits if they are missing (and `ARGV[1]` is
/// not -1); the capacity (-1: none stored).
const CREATE: &str = r"
if ARGV[1] ~= '-1' and redis.call('HSETNX', KEYS[1], 'capacity', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'free', ARGV[1])
end
return tonumber(redis.call('HGET', KEYS[1], 'capacity') or '-1')
";

/// The permits this process holds, per semaphore (server and key), newest last.
fn held_here() -> &'static StdMutex<HashMap<String, Vec<Arc<Lease>>>> {
    static HELD: OnceLock<StdMutex<HashMap<String, Vec<Arc<Lease>>>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
}

/// A semaphore on a Redis server.
#[derive(Debug)]
pub(super) struct RedisSemaphore {
    conn: Conn,
    wake: Wake,
    /// This semaphore's entry in [`held_here`].
    id: String,
    /// The capacity read at open.
    opened_capacity: u32,
}

impl RedisSemaphore {
    /// Opens the semaphore, treating its capacity as `asked` says (as the local
    /// engine does): an explicit capacity that disagrees with the stored one is an error
    /// naming both.
    pub(super) fn open(url: &RedisUrl, asked: Capacity) -> Result<RedisSemaphore> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let conn = Conn::open(url)?;
        remote::check_kind(&conn, "semaphore", asked != Capacity::Existing)?;
        let create = match asked {
            Capacity::Exactly(n) => i64::from(n),
            Capacity::Default => 1,
            Capacity::Existing => -1,
        };
        let capacity: i64 = conn.read(|c| {
            remote::script(&S, &[CREATE])
                .key(url.key("meta"))
                .arg(create)
                .invoke(c)
        })?;
        if let Capacity::Exactly(n) = asked
            && i64::from(n) != capacity
        {
            return Err(Error::Invalid {
                path: url.as_path(),
                detail: format!(
                    "the semaphore exists with capacity {capacity}, not the {n} asked for \
                     (open it without a capacity to take the stored one)"
                ),
            });
        }
        Ok(RedisSemaphore {
            wake: Wake::new(url, url.key("wake")),
            id: format!("{url}#{}", url.key("held")),
            conn,
            opened_capacity: u32::try_from(capacity.max(0)).unwrap_or(u32::MAX),
        })
    }

    pub(super) fn try_clone(&self) -> Result<RedisSemaphore> {
        let url = self.url();
        Ok(RedisSemaphore {
            conn: Conn::open(url)?,
            wake: Wake::new(url, url.key("wake")),
            id: self.id.clone(),
            opened_capacity: self.opened_capacity,
        })
    }

    fn url(&self) -> &RedisUrl {
        self.conn.url()
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.conn.path()
    }

    /// One attempt: `Ok(Ok(fence))` when a permit was taken, else how long until the
    /// earliest lease expires (capped).
    fn attempt(&self) -> Result<std::result::Result<u64, Duration>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let member = format!("{}:{}", std::process::id(), remote::token());
        let sent = Instant::now();
        let (ok, n, members): (i64, i64, Vec<String>) = self.conn.with(|c| {
            remote::script(&S, &[RECLAIM, ACQUIRE])
                .key(self.url().key("meta"))
                .key(self.url().key("held"))
                .arg(&member)
                .arg(self.url().lease().as_millis() as u64)
                .invoke(c)
        })?;
        if ok == 1 {
            let lease = Lease::start_member(self.url(), self.url().key("held"), member, sent);
            lock(held_here())
                .entry(self.id.clone())
                .or_default()
                .push(lease);
            return Ok(Ok(n as u64));
        }
        // Holders of this host proven dead give their permits back at once.
        let mut freed = false;
        let mut local = false;
        for m in &members {
            let token = m.split_once(':').map_or(m.as_str(), |(_, t)| t);
            if remote::host::holder_is_dead(token) {
                freed |= self.reclaim(m)?;
            } else if remote::host::is_local(token) {
                local = true;
            }
        }
        if freed {
            return Ok(Err(Duration::ZERO));
        }
        let wait = if n > 0 {
            Duration::from_millis(n as u64).min(MAX_NAP)
        } else {
            MAX_NAP
        };
        Ok(Err(if local {
            wait.min(LOCAL_HOLDER_POLL)
        } else {
            wait
        }))
    }

    /// Returns the permit of `member`, whose holder was proven dead.
    fn reclaim(&self, member: &str) -> Result<bool> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let n: i64 = self.conn.with(|c| {
            remote::script(&S, &[RECLAIM_DEAD])
                .key(self.url().key("meta"))
                .key(self.url().key("held"))
                .key(self.url().key("wake"))
                .arg(member)
                .invoke(c)
        })?;
        Ok(n == 1)
    }

    pub(super) fn try_acquire(&self) -> Result<Option<u64>> {
        match self.attempt()? {
            Ok(fence) => Ok(Some(fence)),
            // Dead holders' permits came back: try once more.
            Err(d) if d.is_zero() => Ok(self.attempt()?.ok()),
            Err(_) => Ok(None),
        }
    }

    pub(super) fn acquire_until(&self, deadline: Option<Instant>) -> Result<Option<u64>> {
        loop {
            let mut nap = match self.attempt()? {
                Ok(fence) => return Ok(Some(fence)),
                Err(nap) => nap,
            };
            if nap.is_zero() {
                continue;
            }
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Ok(None);
                }
                nap = nap.min(d - now);
            }
            self.wake.nap(nap)?;
        }
    }

    /// Takes one of this process's permits out of the registry, newest first.
    fn take_held(&self) -> Option<Arc<Lease>> {
        let mut held = lock(held_here());
        let list = held.get_mut(&self.id)?;
        let lease = list.pop();
        if list.is_empty() {
            held.remove(&self.id);
        }
        lease
    }

    pub(super) fn release(&self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let lease = self.take_held();
        let member = lease.as_ref().map_or("", |l| l.token()).to_string();
        let was_lost = lease.as_ref().is_some_and(|l| l.is_lost());
        if let Some(l) = &lease {
            l.end();
        }
        let r: i64 = self.conn.with(|c| {
            remote::script(&S, &[RELEASE])
                .key(self.url().key("meta"))
                .key(self.url().key("held"))
                .key(self.url().key("wake"))
                .arg(&member)
                .arg(u32::MAX)
                .invoke(c)
        })?;
        match r {
            1 if !was_lost => Ok(()),
            -1 => Err(Error::Invalid {
                path: self.url().as_path(),
                detail: format!("release past {} permits", u32::MAX),
            }),
            _ => Err(Error::LeaseLost {
                path: self.url().as_path(),
                lease: self.url().lease(),
            }),
        }
    }

    /// Removes the semaphore (its counters and the leases of its permits): a holder's
    /// later release fails with [`Error::LeaseLost`]; a handle opened afterwards makes a
    /// new semaphore.
    pub(super) fn destroy(&self) -> Result<()> {
        self.conn.read(|c| {
            redis::cmd("DEL")
                .arg(self.url().key("meta"))
                .arg(self.url().key("held"))
                .query::<()>(c)
        })
    }

    /// Turns one permit this process holds into a permit no process holds.
    pub(super) fn detach(&self) -> Result<bool> {
        let Some(lease) = self.take_held() else {
            return Ok(false);
        };
        lease.end();
        let removed: i64 = self.conn.with(|c| {
            redis::cmd("ZREM")
                .arg(self.url().key("held"))
                .arg(lease.token())
                .query(c)
        })?;
        if removed == 1 {
            Ok(true)
        } else {
            Err(Error::LeaseLost {
                path: self.url().as_path(),
                lease: self.url().lease(),
            })
        }
    }

    /// The last fence granted (the `meta` hash's `fence`, 0 if none).
    pub(super) fn last_granted_fence(&self) -> Result<u64> {
        let f: Option<u64> = self.conn.read(|c| {
            redis::cmd("HGET")
                .arg(self.url().key("meta"))
                .arg("fence")
                .query(c)
        })?;
        Ok(f.unwrap_or(0))
    }

    pub(super) fn value(&self) -> Result<u32> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let free: i64 = self.conn.read(|c| {
            remote::script(
                &S,
                &[
                    RECLAIM,
                    "return tonumber(redis.call('HGET', KEYS[1], 'free') or '0')",
                ],
            )
            .key(self.url().key("meta"))
            .key(self.url().key("held"))
            .invoke(c)
        })?;
        Ok(u32::try_from(free.max(0)).unwrap_or(u32::MAX))
    }

    pub(super) fn capacity(&self) -> u32 {
        let c: Result<Option<u32>> = self.conn.read(|c| {
            redis::cmd("HGET")
                .arg(self.url().key("meta"))
                .arg("capacity")
                .query(c)
        });
        c.ok().flatten().unwrap_or(self.opened_capacity)
    }

    pub(super) fn held(&self) -> Result<u32> {
        let held = lock(held_here());
        let n = held
            .get(&self.id)
            .map_or(0, |l| l.iter().filter(|l| !l.is_lost()).count());
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The holders recorded on the server: one entry per PID (of any host), `alive`
    /// while its lease runs.
    pub(super) fn holders(&self) -> Result<Vec<SemaphoreHolder>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let (members, now): (Vec<(String, f64)>, i64) = self.conn.read(|c| {
            remote::script(
                &S,
                &[r"
                local t = redis.call('TIME')
                local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                return {redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), now}
                "],
            )
            .key(self.url().key("held"))
            .invoke(c)
        })?;
        let mut out: Vec<SemaphoreHolder> = Vec::new();
        for (m, expiry) in members {
            let pid = m
                .split(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let alive = expiry > now as f64;
            match out.iter_mut().find(|h| h.pid == pid && h.alive == alive) {
                Some(h) => h.permits += 1,
                None => out.push(SemaphoreHolder {
                    pid,
                    start_time: 0,
                    permits: 1,
                    alive,
                }),
            }
        }
        Ok(out)
    }

    /// Waiters are not counted on Redis.
    pub(super) fn waiting(&self) -> u32 {
        0
    }

    /// A permit on Redis is not a descriptor: a child cannot inherit it.
    pub(super) fn share_with_children(&self) -> Result<std::os::fd::RawFd> {
        Err(Error::Invalid {
            path: self.url().as_path(),
            detail: "a permit on Redis cannot be handed to a child process as a descriptor".into(),
        })
    }
}
