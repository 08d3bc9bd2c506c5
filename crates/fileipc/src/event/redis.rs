//! The Redis engine of [`Event`](super::Event): a flag key that exists while the event
//! is set, a generation counted by every `set`, and a pub/sub hint.
//!
//! Keys (`{p}` = prefix + name): `{p}:flag` (exists while set), `{p}:meta` (hash: kind,
//! version, gen), channel `{p}:wake`. A waiter returns when the flag is set or the
//! generation moved since it began, so it never sleeps past a set however briefly the
//! event stayed set; the pub/sub message only shortens its nap.

use std::sync::OnceLock;
use std::time::Instant;

use crate::error::Result;
use crate::location::RedisUrl;
use crate::remote::{self, Conn, MAX_NAP, Wake};

/// Sets the flag, counts the generation and wakes waiters.
const SET: &str = r"
redis.call('SET', KEYS[1], '1')
redis.call('HINCRBY', KEYS[2], 'gen', 1)
redis.call('PUBLISH', KEYS[3], '1')
return 1
";

/// `{flag exists, generation}`.
const STATE: &str = r"
return {redis.call('EXISTS', KEYS[1]), tonumber(redis.call('HGET', KEYS[2], 'gen') or '0')}
";

/// An event on a Redis server.
#[derive(Debug)]
pub(super) struct RedisEvent {
    conn: Conn,
    wake: Wake,
}

impl RedisEvent {
    pub(super) fn open(url: &RedisUrl) -> Result<RedisEvent> {
        let conn = Conn::open(url)?;
        remote::check_kind(&conn, "event", true)?;
        Ok(RedisEvent {
            wake: Wake::new(url, url.key("wake")),
            conn,
        })
    }

    fn url(&self) -> &RedisUrl {
        self.conn.url()
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.conn.path()
    }

    pub(super) fn set(&self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let _: i64 = self.conn.with(|c| {
            remote::script(&S, &[SET])
                .key(self.url().key("flag"))
                .key(self.url().key("meta"))
                .key(self.url().key("wake"))
                .invoke(c)
        })?;
        Ok(())
    }

    pub(super) fn clear(&self) -> Result<()> {
        let _: i64 = self
            .conn
            .read(|c| redis::cmd("DEL").arg(self.url().key("flag")).query(c))?;
        Ok(())
    }

    fn state(&self) -> Result<(bool, i64)> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let (set, generation): (i64, i64) = self.conn.read(|c| {
            remote::script(&S, &[STATE])
                .key(self.url().key("flag"))
                .key(self.url().key("meta"))
                .invoke(c)
        })?;
        Ok((set == 1, generation))
    }

    pub(super) fn is_set(&self) -> Result<bool> {
        Ok(self.state()?.0)
    }

    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let (set, first) = self.state()?;
        if set {
            return Ok(true);
        }
        loop {
            let mut nap = MAX_NAP;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Ok(false);
                }
                nap = nap.min(d - now);
            }
            self.wake.nap(nap)?;
            let (set, generation) = self.state()?;
            if set || generation != first {
                return Ok(true);
            }
        }
    }
}
