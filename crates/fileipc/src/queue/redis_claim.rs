//! Claim/ack on the Redis engine: the grant behind [`Claimed`](super::Claimed), its
//! scripts, redelivery and dead letters.
//!
//! A claim reads an entry for the group (`XREADGROUP ... >`) and moves it in the
//! pending list (PEL) to a consumer of its own, named by the grant's fence (`f<fence>`):
//! the entry stays in the stream and the PEL until acknowledged, and "is it still
//! ours?" is "is its PEL consumer still `f<fence>`?". The lease is a score in the sorted
//! set `{p}:due` (entry id → server ms when it may be delivered again): `extend`
//! re-scores it, `nack(delay)` moves the entry to the consumer `~` (given back) and
//! scores it `now + delay`. Every claim first takes the oldest entry whose score has
//! passed, moving it to its own consumer with the PEL's delivery count + 1 (or, after
//! `max_deliveries`, to the dead-letter stream). Each step is one script.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::redis::RedisQueue;
use crate::error::{Error, Result};
use crate::remote;

/// The PEL consumer that holds entries given back (nacked, dropped) until redelivery.
pub(super) const RELEASED: &str = "~";

/// A waiting claimer looks again at least this often while claims are in flight or
/// given back: their leases and delays end without a new stream entry to wake it.
const CLAIM_SLICE: Duration = Duration::from_millis(25);

/// Shared Lua: server time, fences, fields, consumer removal, dead-lettering. Keys:
/// 1 stream, 2 meta, 3 due, 4 dead-letter stream.
const COMMON: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fence()
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local f = tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')
  if f < us then f = us else f = f + 1 end
  redis.call('HSET', KEYS[2], 'fence', string.format('%d', f))
  return f
end
local function field(f, name, default)
  if f then
    for j = 1, #f, 2 do if f[j] == name then return f[j + 1] end end
  end
  return default
end
local function forget(consumer)
  if consumer ~= '~' and consumer ~= 'c' then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'g', consumer)
  end
end
local function owner(id)
  local p = redis.call('XPENDING', KEYS[1], 'g', id, id, 1)
  if #p == 0 then return nil, 0 end
  return p[1][2], tonumber(p[1][4])
end
local function bury(id, consumer, n)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e > 0 then
    redis.call('XADD', KEYS[4], '0-*', 'd', field(e[1][2], 'd', ''), 'n', n)
  end
  redis.call('XACK', KEYS[1], 'g', id)
  redis.call('XDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[3], id)
  forget(consumer)
end
local function seq(id)
  return position(id) - tonumber(redis.call('HGET', KEYS[2], 'base') or '0') - 1
end
";

/// Claims for `ARGV[1]` ms (`ARGV[2]` = max deliveries, 0: no limit): an entry due for
/// redelivery first, else a new one. `{1, data, attempt, fence, id, seq, dead n}`, or
/// `{0, '', 0, 0, last delivered id, 0, entries in due}`.
const CLAIM: &str = r"
local lease, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local function grant(id, n)
  local f = fence()
  redis.call('XCLAIM', KEYS[1], 'g', 'f' .. string.format('%d', f), 0, id, 'JUSTID', 'RETRYCOUNT', n)
  redis.call('ZADD', KEYS[3], now + lease, id)
  return f
end
while true do
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1)
  if #due == 0 then break end
  local id = due[1]
  local who, n = owner(id)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if not who or #e == 0 then
    redis.call('ZREM', KEYS[3], id)
    if who then
      redis.call('XACK', KEYS[1], 'g', id)
      forget(who)
    end
  elseif max > 0 and n >= max then
    bury(id, who, n)
  else
    local f = grant(id, n + 1)
    forget(who)
    local fl = e[1][2]
    return {1, field(fl, 'd', ''), n + 1, f, id, seq(id), tonumber(field(fl, 'n', '0'))}
  end
end
local r = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if r and r[1] and #r[1][2] > 0 then
  local e = r[1][2][1]
  local f = grant(e[1], 1)
  return {1, field(e[2], 'd', ''), 1, f, e[1], seq(e[1]), tonumber(field(e[2], 'n', '0'))}
end
local last = group(KEYS[1])['last-delivered-id'] or '0-0'
return {0, '', 0, 0, last, 0, redis.call('ZCARD', KEYS[3])}
";

/// Acknowledges entry `ARGV[1]` if consumer `ARGV[2]` still holds it: 1, else 0.
const ACK: &str = r"
local who = owner(ARGV[1])
if who ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], 'g', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
forget(ARGV[2])
return 1
";

/// Gives entry `ARGV[1]` back if consumer `ARGV[2]` still holds it, visible again after
/// `ARGV[3]` ms, or to the dead letters if it had `ARGV[4]` deliveries (> 0): 1, or 0
/// if no longer ours.
const NACK: &str = r"
local who, n = owner(ARGV[1])
if who ~= ARGV[2] then return 0 end
local max = tonumber(ARGV[4])
if max > 0 and n >= max then
  bury(ARGV[1], who, n)
  return 1
end
redis.call('XCLAIM', KEYS[1], 'g', '~', 0, ARGV[1], 'JUSTID')
forget(who)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
return 1
";

/// Extends the lease of entry `ARGV[1]` to `ARGV[3]` ms from now if consumer `ARGV[2]`
/// still holds it: 1, else 0.
const EXTEND: &str = r"
local who = owner(ARGV[1])
if who ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
";

/// What one claim script found.
enum Found<'q> {
    Got(RedisClaim<'q>),
    /// Nothing: new entries will have ids after `last`; `pending` entries are claimed
    /// or given back (their leases or delays may end while we wait).
    Empty {
        last: String,
        pending: u64,
    },
}

/// A claim on the Redis engine: the entry's id, its consumer (named by the fence) and
/// the message's copy.
pub(crate) struct RedisClaim<'q> {
    q: &'q RedisQueue,
    id: String,
    data: Vec<u8>,
    attempt: u32,
    fence: u64,
    seq: u64,
    dead_attempts: u32,
    done: bool,
}

/// A Redis claim detached from its handle's borrow (see `ClaimToken`).
#[derive(Debug)]
pub(crate) struct RedisToken {
    path: std::path::PathBuf,
    id: String,
    data: Vec<u8>,
    attempt: u32,
    fence: u64,
    seq: u64,
    dead_attempts: u32,
}

impl<'q> RedisClaim<'q> {
    /// The claim without its borrow of the handle; the message stays claimed.
    pub(crate) fn detach(mut self) -> RedisToken {
        self.done = true;
        RedisToken {
            path: self.q.path().to_owned(),
            id: std::mem::take(&mut self.id),
            data: std::mem::take(&mut self.data),
            attempt: self.attempt,
            fence: self.fence,
            seq: self.seq,
            dead_attempts: self.dead_attempts,
        }
    }
}

impl RedisToken {
    /// The claim again, on `q`; `Err(self)` if `q` is another queue's handle.
    pub(super) fn attach(self, q: &RedisQueue) -> std::result::Result<RedisClaim<'_>, Self> {
        if q.path() != self.path {
            return Err(self);
        }
        Ok(RedisClaim {
            q,
            id: self.id,
            data: self.data,
            attempt: self.attempt,
            fence: self.fence,
            seq: self.seq,
            dead_attempts: self.dead_attempts,
            done: false,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisQueue {
    /// Runs one of the claim scripts with the queue's keys and `args`.
    fn run_claim_script<T: redis::FromRedisValue>(
        &self,
        cell: &'static OnceLock<redis::Script>,
        body: &str,
        args: &[String],
    ) -> Result<T> {
        let url = self.url();
        let dead = url.with_suffix(":dead");
        let script = remote::script(cell, &[remote::STREAM_LUA, COMMON, body]);
        let r = self.conn_with(|c| {
            let mut inv = script.key(url.key("stream"));
            inv.key(url.key("meta"))
                .key(url.key("due"))
                .key(dead.key("stream"));
            for a in args {
                inv.arg(a);
            }
            inv.invoke(c)
        });
        self.destroyed_if_nogroup(r)
    }

    fn claim_once(&self) -> Result<Found<'_>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let (ok, data, attempt, fence, id, seq, n): (i64, Vec<u8>, u32, u64, String, u64, u64) =
            self.run_claim_script(
                &S,
                CLAIM,
                &[
                    millis(self.lease).to_string(),
                    self.max_deliveries.to_string(),
                ],
            )?;
        if ok == 0 {
            return Ok(Found::Empty {
                last: id,
                pending: n,
            });
        }
        Ok(Found::Got(RedisClaim {
            q: self,
            id,
            data,
            attempt,
            fence,
            seq,
            dead_attempts: u32::try_from(n).unwrap_or(u32::MAX),
            done: false,
        }))
    }

    /// Claims a message, waiting until `deadline` (`None`: without limit).
    pub(super) fn claim_until(&self, deadline: Option<Instant>) -> Result<Option<RedisClaim<'_>>> {
        loop {
            let (last, pending) = match self.claim_once()? {
                Found::Got(c) => return Ok(Some(c)),
                Found::Empty { last, pending } => (last, pending),
            };
            let mut limit = match deadline {
                None => Duration::from_secs(60),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    d - now
                }
            };
            if pending > 0 {
                limit = limit.min(CLAIM_SLICE);
            }
            self.wait_after(&last, limit)?;
        }
    }
}

impl RedisClaim<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn fence(&self) -> u64 {
        self.fence
    }

    pub(crate) fn dead_letter_attempts(&self) -> u32 {
        self.dead_attempts
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    fn consumer(&self) -> String {
        format!("f{}", self.fence)
    }

    /// Runs `body` with (id, consumer, `more`...); `Ok(())` if it returned 1, else the
    /// lost-lease error for `op`.
    fn run(
        &self,
        cell: &'static OnceLock<redis::Script>,
        body: &str,
        op: &str,
        more: &[String],
    ) -> Result<()> {
        let mut args = vec![self.id.clone(), self.consumer()];
        args.extend_from_slice(more);
        let r: i64 = self.q.run_claim_script(cell, body, &args)?;
        if r == 1 { Ok(()) } else { Err(self.lost(op)) }
    }

    pub(crate) fn ack(mut self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        self.done = true;
        self.run(&S, ACK, "ack", &[])
    }

    pub(crate) fn nack(mut self, delay: Duration) -> Result<()> {
        self.done = true;
        self.give_back(delay, "nack")
    }

    fn give_back(&self, delay: Duration, op: &str) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        self.run(
            &S,
            NACK,
            op,
            &[millis(delay).to_string(), self.q.max_deliveries.to_string()],
        )
    }

    pub(crate) fn extend(&mut self, lease: Duration) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        self.run(&S, EXTEND, "extend", &[millis(lease).to_string()])
    }

    fn lost(&self, op: &str) -> Error {
        Error::invalid(
            self.q.path(),
            format!(
                "lost lease: message {} (delivery {}, entry {}) was taken by another claimer \
                 after its lease ran out; this {op} did nothing",
                self.seq, self.attempt, self.id
            ),
        )
    }
}

impl Drop for RedisClaim<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.give_back(Duration::ZERO, "drop");
        }
    }
}
