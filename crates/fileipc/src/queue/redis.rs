//! The Redis engine of [`MessageQueue`](super::MessageQueue): a Stream with one
//! consumer group.
//!
//! Keys (`{p}` = prefix + name): `{p}:stream` (entries with the fields `d`, the
//! message, and `s`, its sequence number), its consumer group `g`, `{p}:meta` (hash:
//! kind, version, sent, received, fence), `{p}:due` (claims and given-back entries, see
//! `redis_claim.rs`), and the dead-letter queue `{p}:dead:*` (the queue `NAME:dead`).
//! `send` is one script (`XADD`, refused beyond a capacity); taking is one script that
//! reads the next entries for the group and deletes them: a message is taken exactly
//! once, and a receiver that dies before the script ran took nothing. A receiver whose
//! last take emptied the queue (or found it empty) first waits with `XREAD BLOCK` for an
//! entry after the last id it saw, on its own connection (whose read timeout exceeds the
//! block), then takes: waiting never consumes, so an abandoned wait loses nothing.
//! `destroy` leaves a mark, `{p}:gone`, that every wait reads too.

use std::sync::{Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use super::message::{Message, QueueStats};
use super::options::QueueOptions;
use crate::error::{Error, Result};
use crate::location::RedisUrl;
use crate::remote::{self, Conn, lock};

/// Creates the group if missing (with the stream), and removes the mark of an earlier
/// destruction (`KEYS[2]`, see [`RedisQueue::destroy`]).
const CREATE: &str = r"
redis.call('DEL', KEYS[2])
local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], 'g', '0', 'MKSTREAM')
return 1
";

/// Removes the queue's keys (`KEYS[1..5]`) and marks each destroyed queue (`KEYS[6]`,
/// `KEYS[7]`: a stream every wait also reads, so blocked receivers wake at once and
/// later ones find it there; it expires after [`GONE_MARK_SECS`]).
const DESTROY: &str = r"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
for i = 6, 7 do
  redis.call('XADD', KEYS[i], '*', 'gone', '1')
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
";

/// How long the mark of a destroyed queue stays: receivers that start waiting on a
/// handle of it later notice at the end of their wait (at most a minute) instead.
const GONE_MARK_SECS: u32 = 600;

/// Appends message `ARGV[1]` with its sequence number (field `s`): 1, or -1 if the
/// queue was destroyed, or 0 if it holds `ARGV[2]` entries (unless empty: no capacity).
const SEND: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if ARGV[2] ~= '' and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local n = redis.call('HINCRBY', KEYS[2], 'sent', 1)
redis.call('XADD', KEYS[1], '*', 'd', ARGV[1], 's', n - 1)
return 1
";

/// Takes up to `ARGV[1]` entries: `{1, {{d1, n1}, {d2, n2}, ...}, last id taken, more}`
/// (`n`: the field `n` of a dead letter, else 0; `more`: 1 if newer entries wait), or
/// `{0, last delivered id}` when there is none.
const TAKE: &str = r"
local r = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', ARGV[1], 'NOACK', 'STREAMS', KEYS[1], '>')
if r and r[1] and #r[1][2] > 0 then
  local out = {}
  local ids = {}
  for i, e in ipairs(r[1][2]) do
    ids[i] = e[1]
    local f = e[2]
    local d, n = '', 0
    if f then
      for j = 1, #f, 2 do
        if f[j] == 'd' then d = f[j + 1] elseif f[j] == 'n' then n = tonumber(f[j + 1]) end
      end
    end
    out[i] = {d, n}
  end
  redis.call('XDEL', KEYS[1], unpack(ids))
  redis.call('HINCRBY', KEYS[2], 'received', #ids)
  local last = ids[#ids]
  local newer = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
  return {1, out, last, #newer}
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then last = g[j + 1] end
  end
  if name == 'g' then return {0, last} end
end
return {0, '0-0'}
";

/// How often a producer waiting for room in a full queue asks again.
const ROOM_POLL: Duration = Duration::from_millis(5);

/// A queue on a Redis server.
pub(super) struct RedisQueue {
    conn: Conn,
    /// The connection a receiver blocks on, made by the first wait.
    waiter: StdMutex<Option<redis::Connection>>,
    /// The newest stream id this handle's last take saw (the last entry taken, or the
    /// group's last delivered id when there was nothing), if no newer entry was waiting
    /// then: a receive first waits for an entry after it. `None`: take at once.
    last: StdMutex<Option<String>>,
    max_message_size: usize,
    /// The lease of this handle's claims.
    pub(super) lease: Duration,
    /// After how many deliveries a claimed message goes to the dead letters (0: never).
    pub(super) max_deliveries: u32,
    /// The most entries (claimed ones included) this handle's sends let the stream hold.
    pub(super) capacity: Option<u64>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// The script of [`TAKE`].
fn take_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    remote::script(&S, &[TAKE])
}

/// What one take found.
enum Taken {
    /// Messages, each with its dead-letter delivery count; the id of the last, and
    /// whether newer entries were waiting.
    Messages(Vec<(Vec<u8>, u32)>, String, bool),
    /// None; new entries will have ids after this one.
    Empty(String),
}

impl RedisQueue {
    pub(super) fn open(url: &RedisUrl, opts: &QueueOptions) -> Result<RedisQueue> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        if opts.capacity == Some(0) {
            return Err(Error::invalid(
                url.as_path(),
                "capacity 0: a queue must hold at least 1 message",
            ));
        }
        let conn = Conn::open(url)?;
        remote::check_kind(&conn, "queue", true)?;
        let _: i64 = conn.read(|c| {
            remote::script(&S, &[CREATE])
                .key(url.key("stream"))
                .key(url.key("gone"))
                .invoke(c)
        })?;
        Ok(RedisQueue {
            conn,
            waiter: StdMutex::new(None),
            last: StdMutex::new(None),
            max_message_size: opts.max_message_size,
            lease: opts.lease,
            max_deliveries: opts.max_deliveries,
            capacity: opts.capacity,
        })
    }

    /// The dead-letter queue: the queue named `NAME:dead` on the same server, opened
    /// with this handle's options but without a delivery limit.
    pub(super) fn dead_letters(&self) -> Result<RedisQueue> {
        let opts = QueueOptions::new()
            .max_message_size(self.max_message_size)
            .lease(self.lease);
        RedisQueue::open(&self.url().with_suffix(":dead"), &opts)
    }

    /// Runs `f` on the handle's connection (see `Conn::with`).
    pub(super) fn conn_with<T>(
        &self,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.conn.with(f)
    }

    pub(super) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub(super) fn url(&self) -> &RedisUrl {
        self.conn.url()
    }

    pub(super) fn path(&self) -> &std::path::Path {
        self.conn.path()
    }

    fn check_size(&self, m: &[u8]) -> Result<()> {
        if m.len() > self.max_message_size {
            return Err(Error::Invalid {
                path: self.url().as_path(),
                detail: format!(
                    "message of {} bytes is over the limit of {} bytes",
                    m.len(),
                    self.max_message_size
                ),
            });
        }
        Ok(())
    }

    pub(super) fn send(&self, m: &[u8]) -> Result<()> {
        self.send_until(m, None).map(drop)
    }

    /// Sends `m`, waiting until `deadline` (`None`: without limit) for room if the queue
    /// has a capacity; `Ok(false)` if it stayed full. Receivers and acks signal nothing
    /// to producers: a full queue is polled ([`ROOM_POLL`] apart).
    pub(super) fn send_until(&self, m: &[u8], deadline: Option<Instant>) -> Result<bool> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        self.check_size(m)?;
        let cap = self.capacity.map(|c| c.to_string()).unwrap_or_default();
        loop {
            let r: i64 = self.conn.with(|c| {
                remote::script(&S, &[SEND])
                    .key(self.url().key("stream"))
                    .key(self.url().key("meta"))
                    .arg(m)
                    .arg(&cap)
                    .invoke(c)
            })?;
            match r {
                1 => return Ok(true),
                0 => {}
                _ => {
                    return Err(Error::Destroyed {
                        path: self.url().as_path(),
                    });
                }
            }
            let left = crate::sys::remaining(deadline);
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            crate::wait::nap(left.map_or(ROOM_POLL, |l| l.min(ROOM_POLL)));
        }
    }

    pub(super) fn send_all<I>(&self, messages: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut n = 0;
        for m in messages {
            if let Err(e) = self.send(m.as_ref()) {
                return Err(Error::Partial {
                    path: self.url().as_path(),
                    completed: n,
                    source: Box::new(e),
                });
            }
            n += 1;
        }
        Ok(n)
    }

    fn take(&self, max: usize) -> Result<Taken> {
        let r: Result<redis::Value> = self.conn.with(|c| {
            take_script()
                .key(self.url().key("stream"))
                .key(self.url().key("meta"))
                .arg(max.max(1))
                .invoke(c)
        });
        let taken = self.parse_take(self.destroyed_if_nogroup(r)?)?;
        self.remember(&taken);
        Ok(taken)
    }

    /// The reply of [`TAKE`] as a [`Taken`].
    fn parse_take(&self, v: redis::Value) -> Result<Taken> {
        let parse = |e: redis::ParsingError| remote::error(self.url(), e.into());
        let mut parts: Vec<redis::Value> = redis::from_redis_value(v).map_err(parse)?;
        let ok: i64 = match parts.first() {
            Some(v) => redis::from_redis_value_ref(v).map_err(parse)?,
            None => 0,
        };
        if ok == 1 && parts.len() == 4 {
            let more: i64 =
                redis::from_redis_value(parts.pop().expect("4 parts")).map_err(parse)?;
            let last: String =
                redis::from_redis_value(parts.pop().expect("4 parts")).map_err(parse)?;
            let m = redis::from_redis_value(parts.pop().expect("4 parts")).map_err(parse)?;
            Ok(Taken::Messages(m, last, more == 1))
        } else if ok == 0 && parts.len() == 2 {
            Ok(Taken::Empty(
                redis::from_redis_value(parts.pop().expect("2 parts")).map_err(parse)?,
            ))
        } else {
            Err(remote::error(
                self.url(),
                redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "unexpected reply of the take script",
                )),
            ))
        }
    }

    /// Notes where this handle's next receive starts: the newest id a take saw, unless
    /// newer entries were waiting (then the next receive takes at once).
    fn remember(&self, taken: &Taken) {
        *lock(&self.last) = match taken {
            Taken::Messages(_, _, true) => None,
            Taken::Messages(_, id, false) | Taken::Empty(id) => Some(id.clone()),
        };
    }

    /// `r`, or [`Error::Destroyed`] if the server said the group is gone.
    pub(super) fn destroyed_if_nogroup<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if e.to_string().contains("NOGROUP") => Err(Error::Destroyed {
                path: self.url().as_path(),
            }),
            r => r,
        }
    }

    /// Blocks until an entry after `last` exists, the queue was destroyed, or `limit`
    /// passed. Consumes nothing.
    pub(super) fn wait_after(&self, last: &str, limit: Duration) -> Result<()> {
        let block = limit.as_millis().clamp(1, 60_000) as u64;
        let mut slot = lock(&self.waiter);
        if slot.is_none() {
            *slot = Some(remote::connect(self.url())?);
        }
        let c = slot.as_mut().expect("connected above");
        let r: redis::RedisResult<redis::Value> = c
            .set_read_timeout(Some(Duration::from_millis(block) + remote::COMMAND_TIMEOUT))
            .and_then(|()| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(self.url().key("stream"))
                    .arg(self.url().key("gone"))
                    .arg(last)
                    .arg("0-0")
                    .query(c)
            });
        if let Err(e) = r {
            *slot = None;
            return Err(remote::error(self.url(), e));
        }
        Ok(())
    }

    pub(super) fn recv_deadline(&self, deadline: Instant) -> Result<Option<Message>> {
        self.recv_until(Some(deadline))
    }

    pub(super) fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        self.recv_until(crate::deadline_after(timeout))
    }

    pub(super) fn recv_forever(&self) -> Result<Message> {
        Ok(self.recv_until(None)?.expect("no deadline"))
    }

    pub(super) fn try_recv(&self) -> Result<Option<Message>> {
        match self.take(1)? {
            Taken::Messages(mut m, _, _) => Ok(m.pop().map(message)),
            Taken::Empty(_) => Ok(None),
        }
    }

    /// Receives one message. A receive takes at once when its handle has seen nothing
    /// yet or its last take left newer entries; otherwise (the last take emptied the
    /// queue, or found it empty) it first waits with `XREAD BLOCK` for an entry after
    /// the last id seen, which consumes nothing, then takes. A receiver that keeps up
    /// makes two round trips per message; one draining a backlog, one.
    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Message>> {
        loop {
            let last = lock(&self.last).clone();
            if let Some(last) = last {
                let limit = match deadline {
                    None => Duration::from_secs(60),
                    Some(d) => d.saturating_duration_since(Instant::now()),
                };
                self.wait_after(&last, limit)?;
            }
            if let Taken::Messages(mut m, _, _) = self.take(1)? {
                return Ok(m.pop().map(message));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    pub(super) fn recv_many(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let Some(first) = self.recv_timeout(timeout)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        if max > 1
            && let Taken::Messages(more, _, _) = self.take(max - 1)?
        {
            out.extend(more.into_iter().map(message));
        }
        Ok(out)
    }

    pub(super) fn count(&self) -> Result<u64> {
        self.conn
            .read(|c| redis::cmd("XLEN").arg(self.url().key("stream")).query(c))
    }

    pub(super) fn is_empty(&self) -> Result<bool> {
        Ok(self.count()? == 0)
    }

    /// Removes every message, claimed ones included (their late `ack` then fails as a
    /// lost lease); they count as received, as on the local engine. The group is made
    /// anew at the stream's last id, which empties the pending list.
    pub(super) fn clear(&self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let r = self.conn.with(|c| {
            remote::script(
                &S,
                &[r"
                local n = redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
                redis.call('XGROUP', 'DESTROY', KEYS[1], 'g')
                redis.call('XGROUP', 'CREATE', KEYS[1], 'g', '$')
                redis.call('DEL', KEYS[3])
                redis.call('HINCRBY', KEYS[2], 'received', n)
                return n
                "],
            )
            .key(self.url().key("stream"))
            .key(self.url().key("meta"))
            .key(self.url().key("due"))
            .invoke::<i64>(c)
            .map(drop)
        });
        self.destroyed_if_nogroup(r)
    }

    /// Removes the queue's keys and those of its dead-letter queue.
    pub(super) fn destroy(&self) -> Result<()> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let dead = self.url().with_suffix(":dead");
        self.conn.with(|c| {
            remote::script(&S, &[DESTROY])
                .key(self.url().key("stream"))
                .key(self.url().key("meta"))
                .key(self.url().key("due"))
                .key(dead.key("stream"))
                .key(dead.key("meta"))
                .key(self.url().key("gone"))
                .key(dead.key("gone"))
                .arg(GONE_MARK_SECS)
                .invoke::<i64>(c)
                .map(drop)
        })
    }

    pub(super) fn stats(&self) -> Result<QueueStats> {
        type Pending = (u64, Option<String>, Option<String>, Vec<(String, u64)>);
        let (count, sent, received, pending): (u64, Option<u64>, Option<u64>, Pending) = self
            .destroyed_if_nogroup(self.conn.read(|c| {
                redis::pipe()
                    .cmd("XLEN")
                    .arg(self.url().key("stream"))
                    .cmd("HGET")
                    .arg(self.url().key("meta"))
                    .arg("sent")
                    .cmd("HGET")
                    .arg(self.url().key("meta"))
                    .arg("received")
                    .cmd("XPENDING")
                    .arg(self.url().key("stream"))
                    .arg("g")
                    .query(c)
            }))?;
        let (sent, received) = (sent.unwrap_or(0), received.unwrap_or(0));
        // Entries given back (owned by the consumer `~`) are ready, not in flight.
        let released: u64 = pending
            .3
            .iter()
            .filter(|(name, _)| name == super::redis_claim::RELEASED)
            .map(|(_, n)| n)
            .sum();
        let in_flight = pending.0.saturating_sub(released).min(count);
        Ok(QueueStats {
            count,
            head: received,
            tail: sent,
            sent,
            received,
            segment_size: 0,
            segments: 0,
            spare_segments: 0,
            bytes_on_disk: 0,
            waiting_consumers: 0,
            ready: count - in_flight,
            in_flight,
        })
    }
}

/// A taken entry as a message.
fn message((data, deliveries): (Vec<u8>, u32)) -> Message {
    Message { data, deliveries }
}
