//! The Redis engine of [`MessageQueue`](super::MessageQueue): a Stream with one
//! consumer group.
//!
//! Keys (`{p}` = prefix + name): `{p}:stream` (entries with the field `d`, the
//! message), its consumer group `g`, `{p}:meta` (hash: kind, version, base, fence),
//! `{p}:due` (claims and given-back entries, see `redis_claim.rs`), and the dead-letter
//! queue `{p}:dead:*` (the queue `NAME:dead`).
//!
//! Entry ids are positions: the stream is made with its last id set to `0-base`
//! (`base` = the server's clock in microseconds, kept in `meta`) and every `send` is a
//! plain `XADD ... 0-*`, so message `k` (from 0) has the id `0-(base+k+1)`, a later
//! incarnation of the name has higher ids than an earlier one, and nothing else is
//! written per message. Taking is one `XREADGROUP ... NOACK` for the group: the group
//! moves past the entry in the same command, so a message is taken exactly once and a
//! receiver that dies before the command ran took nothing. The entries taken stay in
//! the stream until a trim ([`TRIM`]) removes every entry the group delivered that no
//! claim holds; each handle trims after every [`TRIM_EVERY`] messages it took, and
//! `count`, `stats` and a full capacity trim first, so they count messages, not
//! leftovers. A receiver whose last take emptied the queue (or found it empty) first
//! waits with `XREAD BLOCK` for an entry after the group's last delivered id, on its own
//! connection (whose read timeout exceeds the block), then takes: waiting never
//! consumes, so an abandoned wait loses nothing. `destroy` leaves a mark, `{p}:gone`,
//! that every wait reads too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use redis::streams::{StreamInfoGroup, StreamInfoGroupsReply, StreamReadReply};

use super::message::{Message, QueueStats};
use super::options::QueueOptions;
use crate::error::{Error, Result};
use crate::location::RedisUrl;
use crate::remote::{self, Conn, lock};

/// Refuses a server older than 7.0 (which has no `XADD ... 0-*`), removes the mark of
/// an earlier destruction (`KEYS[2]`, see
/// [`RedisQueue::destroy`]) and makes the stream (`KEYS[1]`) with its group if missing:
/// its last id is set to `0-base`, `base` being the server's clock in microseconds,
/// written to `meta` (`KEYS[3]`).
const CREATE: &str = r"
if not redis.REDIS_VERSION_NUM or redis.REDIS_VERSION_NUM < 0x070000 then
  return redis.error_reply('fileipc queues need Redis 7.0 or later (stream ids 0-*)')
end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  local base = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('XGROUP', 'CREATE', KEYS[1], 'g', '0', 'MKSTREAM')
  redis.call('XSETID', KEYS[1], '0-' .. base)
  redis.call('HSET', KEYS[3], 'base', base)
else
  pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], 'g', '0')
end
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

/// Lua (after [`remote::STREAM_LUA`]): `trim(key)` removes from stream `key` the
/// entries its group `g` delivered that
/// no consumer holds (plain receives take with `NOACK` and leave them): everything up
/// to the last delivered id when nothing is pending, else everything before the oldest
/// pending entry, then the entries between it and the last delivered id that are not
/// pending. Afterwards `XLEN` counts the messages: not yet delivered, or claimed, or
/// given back.
pub(super) const TRIM: &str = r"
local function trim(key)
  local last = group(key)['last-delivered-id'] or '0-0'
  local p = redis.call('XPENDING', key, 'g')
  if p[1] == 0 then
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    redis.call('XTRIM', key, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
    return
  end
  redis.call('XTRIM', key, 'MINID', p[2])
  local held = {}
  for _, e in ipairs(redis.call('XPENDING', key, 'g', p[2], last, p[1])) do held[e[1]] = true end
  local from = p[2]
  while true do
    local es = redis.call('XRANGE', key, from, last, 'COUNT', 1000)
    local gone = {}
    for _, e in ipairs(es) do
      if not held[e[1]] then gone[#gone + 1] = e[1] end
    end
    if #gone > 0 then redis.call('XDEL', key, unpack(gone)) end
    if #es < 1000 then break end
    from = '(' .. es[#es][1]
  end
end
";

/// The number of messages in stream `KEYS[1]` (0 if it is gone), after a trim.
const COUNT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
trim(KEYS[1])
return redis.call('XLEN', KEYS[1])
";

/// Appends message `ARGV[1]` unless the queue holds `ARGV[2]` messages (trimming first
/// when the stream's length says it might): 1, 0 if full, -1 if the queue was
/// destroyed. Without a capacity, `send` is a plain `XADD` instead.
const SEND_CAPPED: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  trim(KEYS[1])
  if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
if not redis.call('XADD', KEYS[1], 'NOMKSTREAM', '0-*', 'd', ARGV[1]) then return -1 end
return 1
";

/// After how many messages taken a handle trims the stream: the entries a plain receive
/// leaves behind are at most this many per handle (plus those of a handle killed
/// between two trims, until another trims).
const TRIM_EVERY: usize = 64;

/// How often a producer waiting for room in a full queue asks again.
const ROOM_POLL: Duration = Duration::from_millis(5);

/// A queue on a Redis server.
pub(super) struct RedisQueue {
    conn: Conn,
    /// The connection a receiver blocks on, made by the first wait.
    waiter: StdMutex<Option<redis::Connection>>,
    /// Where this handle's next receive starts (set by every take, see
    /// [`RedisQueue::take`]): the group's last delivered id when the last take left no
    /// entry waiting, and the receive first waits for an entry after it; `None`: take at
    /// once.
    last: StdMutex<Option<String>>,
    /// The stream's key.
    stream: String,
    /// Messages taken since this handle last trimmed the stream.
    untrimmed: AtomicUsize,
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

/// The script of [`COUNT`].
fn count_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    remote::script(&S, &[remote::STREAM_LUA, TRIM, COUNT])
}

/// A message taken and its dead-letter delivery count.
type Taken = (Vec<u8>, u32);

/// Whether a take asks the server where the handle's next receive starts (see
/// [`RedisQueue::take`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// With the read, in the same write (`XINFO GROUPS`): its `lag` says whether more
    /// entries wait, `last-delivered-id` where a wait starts. After a wait.
    With,
    /// Not with the read: a take that got messages assumes more wait (a receiver
    /// draining a backlog asks nothing); one that got none asks after, to wait.
    After,
    /// Never: a take that got none leaves the next receive to take at once (and ask).
    /// For `try_recv`, which does not wait.
    Never,
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
                .key(url.key("meta"))
                .invoke(c)
        })?;
        Ok(RedisQueue {
            conn,
            waiter: StdMutex::new(None),
            last: StdMutex::new(None),
            stream: url.key("stream"),
            untrimmed: AtomicUsize::new(0),
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
        loop {
            let sent = match self.capacity {
                None => self.conn.with(|c| {
                    redis::cmd("XADD")
                        .arg(&self.stream)
                        .arg("NOMKSTREAM")
                        .arg("0-*")
                        .arg("d")
                        .arg(m)
                        .query::<Option<String>>(c)
                        .map(|id| if id.is_some() { 1 } else { -1 })
                })?,
                Some(cap) => self.conn.with(|c| {
                    remote::script(&S, &[remote::STREAM_LUA, TRIM, SEND_CAPPED])
                        .key(&self.stream)
                        .arg(m)
                        .arg(cap)
                        .invoke::<i64>(c)
                })?,
            };
            match sent {
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

    /// Takes up to `max` messages (at least 1) with one `XREADGROUP ... NOACK` for the
    /// group, and notes where this handle's next receive starts: at once if more
    /// entries may wait, else with a wait for an entry after the group's last delivered
    /// id: see [`Ask`]. Trims the stream after every [`TRIM_EVERY`] messages.
    fn take(&self, max: usize, ask: Ask) -> Result<Vec<Taken>> {
        let r = self.conn.with(|c| {
            let mut p = redis::pipe();
            p.cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(max.max(1))
                .arg("NOACK")
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">");
            if ask == Ask::With {
                p.cmd("XINFO").arg("GROUPS").arg(&self.stream);
                p.query::<(Option<StreamReadReply>, StreamInfoGroupsReply)>(c)
                    .map(|(r, g)| (r, Some(g)))
            } else {
                p.query::<(Option<StreamReadReply>,)>(c)
                    .map(|(r,)| (r, None))
            }
        });
        let (read, groups) = self.destroyed_if_nogroup(r)?;
        let group = match groups {
            Some(g) => Some(self.group(g)?),
            None => None,
        };
        let taken = read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(entry)
            .collect::<Vec<_>>();
        let next = match (taken.is_empty(), group) {
            (false, None) => None,
            // Unknown lag (a server before 7.0, or a deletion it cannot see past):
            // take at once next time.
            (false, Some(g)) if g.lag.is_none_or(|l| l > 0) => None,
            (_, Some(g)) => Some(g.last_delivered_id),
            (true, None) if ask == Ask::Never => None,
            (true, None) => {
                let r = self.conn.read(|c| {
                    redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(&self.stream)
                        .query::<StreamInfoGroupsReply>(c)
                });
                Some(self.group(self.destroyed_if_nogroup(r)?)?.last_delivered_id)
            }
        };
        *lock(&self.last) = next;
        let n = taken.len();
        if n > 0 && self.untrimmed.fetch_add(n, Ordering::Relaxed) + n >= TRIM_EVERY {
            self.untrimmed.store(0, Ordering::Relaxed);
            // The messages are taken: a failed trim must not lose them, and the next
            // one removes what this one left.
            let _ = self.count();
        }
        Ok(taken)
    }

    /// The queue's group `g` in an `XINFO GROUPS` reply; [`Error::Destroyed`] if absent.
    fn group(&self, reply: StreamInfoGroupsReply) -> Result<StreamInfoGroup> {
        reply
            .groups
            .into_iter()
            .find(|g| g.name == "g")
            .ok_or_else(|| Error::Destroyed {
                path: self.url().as_path(),
            })
    }

    /// `r`, or [`Error::Destroyed`] if the server said the group or the stream is gone.
    pub(super) fn destroyed_if_nogroup<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) => {
                let text = e.to_string();
                if text.contains("NOGROUP") || text.contains("no such key") {
                    Err(Error::Destroyed {
                        path: self.url().as_path(),
                    })
                } else {
                    Err(e)
                }
            }
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
        Ok(self.take(1, Ask::Never)?.pop().map(message))
    }

    /// Receives one message. A receive takes at once when its handle has taken nothing
    /// yet or its last take may have left newer entries; otherwise (the last take
    /// emptied the queue, or found it empty) it first waits with `XREAD BLOCK` for an
    /// entry after the group's last delivered id, which consumes nothing, then takes.
    /// A receiver that keeps up makes two round trips per message; one draining a
    /// backlog, one (and one more when the backlog ends).
    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Message>> {
        loop {
            let last = lock(&self.last).clone();
            let waited = last.is_some();
            if let Some(last) = last {
                let limit = match deadline {
                    None => Duration::from_secs(60),
                    Some(d) => d.saturating_duration_since(Instant::now()),
                };
                self.wait_after(&last, limit)?;
            }
            let ask = if waited { Ask::With } else { Ask::After };
            if let Some(m) = self.take(1, ask)?.pop() {
                return Ok(Some(message(m)));
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
        if max > 1 {
            out.extend(self.take(max - 1, Ask::Never)?.into_iter().map(message));
        }
        Ok(out)
    }

    /// The number of messages (ready, claimed or given back), after a trim.
    pub(super) fn count(&self) -> Result<u64> {
        let r = self
            .conn
            .read(|c| count_script().key(&self.stream).invoke(c));
        self.destroyed_if_nogroup(r)
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
                redis.call('DEL', KEYS[2])
                return n
                "],
            )
            .key(&self.stream)
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

    /// The figures of [`QueueStats`]: `count` after a trim; `sent` from the stream's
    /// last id (ids are positions, see the module's documentation); what was sent and
    /// is no longer counted was received.
    pub(super) fn stats(&self) -> Result<QueueStats> {
        type Pending = (u64, Option<String>, Option<String>, Vec<(String, u64)>);
        let count = self.count()?;
        let (info, base, pending): (redis::streams::StreamInfoStreamReply, Option<u64>, Pending) =
            self.destroyed_if_nogroup(self.conn.read(|c| {
                redis::pipe()
                    .cmd("XINFO")
                    .arg("STREAM")
                    .arg(&self.stream)
                    .cmd("HGET")
                    .arg(self.url().key("meta"))
                    .arg("base")
                    .cmd("XPENDING")
                    .arg(&self.stream)
                    .arg("g")
                    .query(c)
            }))?;
        let sent = position(&info.last_generated_id).saturating_sub(base.unwrap_or(0));
        let received = sent.saturating_sub(count);
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

/// The position part of a stream id (`0-<position>`; 0 if it is not one).
fn position(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(0)
}

/// A stream entry as a message and the dead-letter delivery count in its field `n`.
fn entry(e: redis::streams::StreamId) -> Taken {
    let field = |name: &str| -> Option<Vec<u8>> {
        e.map
            .get(name)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
    };
    let data = field("d").unwrap_or_default();
    let n = field("n")
        .and_then(|n| String::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(0);
    (data, n)
}

/// A taken entry as a message.
fn message((data, deliveries): (Vec<u8>, u32)) -> Message {
    Message { data, deliveries }
}
