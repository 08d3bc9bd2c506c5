//! The Redis baselines of `fileipc bench --redis`: the same jobs done by hand with raw
//! redis-rs commands on one connection each, as a user without fileipc would write them.
//!
//! - lock: `SET key token NX PX 30000` (retried every millisecond while taken), released by
//!   a Lua compare-and-delete (`EVALSHA`);
//! - semaphore: a counter, acquired by a script that `INCR`s it and `DECR`s it back when
//!   above the bound (retried every millisecond), released by `DECR` (no lease: a crashed
//!   holder's permit is lost for good);
//! - queue: `LPUSH` / `BRPOP` (at-most-once: a consumer killed after `BRPOP` loses the
//!   message);
//! - key-value: a hash, `HSET` / `HGET` of JSON text and `HINCRBY`;
//! - event: `PUBLISH` / `SUBSCRIBE` (a message, no state: a set before the subscribe is
//!   missed).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use redis::Commands;

use super::Env;
use crate::api::{EventFlag, Kv, Lock, QueueEnd};
use crate::redis_env;
use crate::sys::now_ns;

/// How long a blocking baseline call waits before the run fails, as fileipc's default.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The release of the lock baseline: delete the key only if it still holds our token.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The acquire of the semaphore baseline: take a permit if fewer than ARGV[1] are taken.
const SEM_ACQUIRE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1";

/// The server URL of the run, or an error when the worker has none.
fn base(env: &Env) -> Result<&str> {
    env.redis
        .as_deref()
        .context("a Redis implementation without --redis")
}

/// The baseline's key `part` of the run.
fn key(env: &Env, part: &str) -> String {
    format!("bench:{}:{part}", env.tag)
}

/// A connection whose reads wait longer than any blocking command of the baselines.
fn connect(env: &Env) -> Result<redis::Connection> {
    redis_env::connect(base(env)?, TIMEOUT + Duration::from_secs(5))
}

/// Opens the lock baseline `imp` (`redis_setnx` or `redis_sem`).
pub(crate) fn open_lock(imp: &str, env: &Env) -> Result<Box<dyn Lock>> {
    let con = connect(env)?;
    Ok(match imp {
        "redis_setnx" => Box::new(SetNx {
            con,
            key: key(env, "lock"),
            token: format!("{}:{}", std::process::id(), now_ns()),
            unlock: redis::Script::new(UNLOCK),
        }),
        "redis_sem" => Box::new(Counter {
            con,
            key: key(env, "sem"),
            acquire: redis::Script::new(SEM_ACQUIRE),
        }),
        other => bail!("unknown Redis lock {other:?}"),
    })
}

/// Retries `attempt` every millisecond until it succeeds, for at most [`TIMEOUT`].
fn retry(what: &str, mut attempt: impl FnMut() -> Result<bool>) -> Result<()> {
    let give_up = now_ns() + TIMEOUT.as_nanos() as u64;
    while !attempt()? {
        if now_ns() >= give_up {
            bail!("{what}: timed out");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// `SET NX PX` + a compare-and-delete script.
struct SetNx {
    con: redis::Connection,
    key: String,
    token: String,
    unlock: redis::Script,
}

impl Lock for SetNx {
    fn lock(&mut self) -> Result<()> {
        let Self {
            con, key, token, ..
        } = self;
        retry("SET NX", || {
            let set: Option<String> = redis::cmd("SET")
                .arg(&*key)
                .arg(&*token)
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query(con)?;
            Ok(set.is_some())
        })
    }

    fn unlock(&mut self) -> Result<()> {
        let deleted: i64 = self
            .unlock
            .key(&self.key)
            .arg(&self.token)
            .invoke(&mut self.con)?;
        if deleted != 1 {
            bail!("the lock key no longer held our token");
        }
        Ok(())
    }
}

/// A bounded counter of one permit.
struct Counter {
    con: redis::Connection,
    key: String,
    acquire: redis::Script,
}

impl Lock for Counter {
    fn lock(&mut self) -> Result<()> {
        let Self { con, key, acquire } = self;
        retry("semaphore script", || {
            let got: i64 = acquire.key(&*key).arg(1).invoke(con)?;
            Ok(got == 1)
        })
    }

    fn unlock(&mut self) -> Result<()> {
        let _: i64 = self.con.decr(&self.key, 1)?;
        Ok(())
    }
}

/// Opens the queue baseline (`LPUSH` / `BRPOP`) on channel `chan`.
pub(crate) fn open_queue(env: &Env, chan: &str) -> Result<Box<dyn QueueEnd>> {
    Ok(Box::new(List {
        con: connect(env)?,
        key: key(env, chan),
    }))
}

struct List {
    con: redis::Connection,
    key: String,
}

impl QueueEnd for List {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let _: i64 = self.con.lpush(&self.key, msg)?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        let got: Option<(String, Vec<u8>)> = self.con.brpop(&self.key, TIMEOUT.as_secs_f64())?;
        match got {
            Some((_, m)) => {
                *buf = m;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Opens the key-value baseline (a hash).
pub(crate) fn open_kv(env: &Env) -> Result<Box<dyn Kv>> {
    Ok(Box::new(Hash {
        con: connect(env)?,
        key: key(env, "kv"),
    }))
}

struct Hash {
    con: redis::Connection,
    key: String,
}

impl Kv for Hash {
    fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<()> {
        let _: i64 = self.con.hset(&self.key, key, value.to_string())?;
        Ok(())
    }

    fn get(&mut self, key: &str) -> Result<Option<serde_json::Value>> {
        let v: Option<String> = self.con.hget(&self.key, key)?;
        Ok(v.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    fn increment(&mut self, key: &str, delta: i64) -> Result<i64> {
        Ok(self.con.hincr(&self.key, key, delta)?)
    }
}

/// Opens the event baseline (`PUBLISH` / `SUBSCRIBE`).
pub(crate) fn open_event(env: &Env) -> Result<Box<dyn EventFlag>> {
    Ok(Box::new(PubSub {
        con: connect(env)?,
        channel: key(env, "event"),
        sub: None,
        base: base(env)?.to_owned(),
    }))
}

/// The setter publishes on `con`; the waiter subscribes on a connection of its own the
/// first time it clears (before it is armed), and each `wait` reads one message.
struct PubSub {
    con: redis::Connection,
    channel: String,
    sub: Option<redis::PubSub<'static>>,
    base: String,
}

impl EventFlag for PubSub {
    fn set(&mut self) -> Result<()> {
        let _: i64 = self.con.publish(&self.channel, "1")?;
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        if self.sub.is_none() {
            // The worker process ends after the run: leaking its one subscriber connection
            // lets the subscription live in the struct.
            let con: &'static mut redis::Connection = Box::leak(Box::new(redis_env::connect(
                &self.base,
                TIMEOUT + Duration::from_secs(5),
            )?));
            let mut sub = con.as_pubsub();
            sub.subscribe(&self.channel)?;
            sub.set_read_timeout(Some(TIMEOUT))?;
            self.sub = Some(sub);
        }
        Ok(())
    }

    fn wait(&mut self) -> Result<bool> {
        let sub = self.sub.as_mut().context("wait before clear")?;
        match sub.get_message() {
            Ok(_) => Ok(true),
            Err(e) if e.is_timeout() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
