//! What [`inspect`](crate::inspect) finds at a Redis URL: the kind and version in the
//! name's `meta` hash, and the server-side figures a person debugging wants (leases
//! left, fences, backlog), read without changing anything.

use super::Conn;
use crate::error::Result;
use crate::inspect::FileKind;
use crate::location::RedisUrl;

/// Reads everything in one script: `{meta as flat list, figures as flat list}`.
const LOOK: &str = r"
local meta = redis.call('HGETALL', KEYS[1])
local kind = redis.call('HGET', KEYS[1], 'kind')
local out = {}
local function put(k, v) out[#out + 1] = k; out[#out + 1] = tostring(v) end
if kind == 'mutex' then
  put('lease_left_ms', redis.call('PTTL', KEYS[2] .. 'lock'))
elseif kind == 'semaphore' then
  put('held', redis.call('ZCARD', KEYS[2] .. 'held'))
  local first = redis.call('ZRANGE', KEYS[2] .. 'held', 0, 0, 'WITHSCORES')
  if first[2] then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    put('earliest_lease_left_ms', tonumber(first[2]) - now)
  end
elseif kind == 'queue' then
  -- Taken entries stay in the stream until a trim: the backlog is the group's lag
  -- (not yet delivered) plus its pending entries, or the stream's length (an upper
  -- bound) on a server that cannot tell the lag.
  local s = KEYS[2] .. 'stream'
  local backlog = redis.call('XLEN', s)
  local ok, p = pcall(redis.call, 'XPENDING', s, 'g')
  if ok then
    local lag = group(s).lag
    if type(lag) == 'number' then backlog = lag + p[1] end
  end
  put('backlog', backlog)
  if redis.call('EXISTS', s) == 1 then
    local info = redis.call('XINFO', 'STREAM', s)
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then
        local sent = position(info[j + 1]) - tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
        put('sent', string.format('%d', sent))
        put('received', string.format('%d', sent - backlog))
      end
    end
  end
  if ok then
    local released = 0
    for _, c in ipairs(p[4] or {}) do
      if c[1] == '~' then released = tonumber(c[2]) end
    end
    put('in_flight', p[1] - released)
    put('given_back', released)
  end
  put('dead_letters', redis.call('XLEN', KEYS[2] .. 'dead:stream'))
elseif kind == 'shared_data' then
  put('keys', redis.call('HLEN', KEYS[2] .. 'data'))
  put('transaction_lease_left_ms', redis.call('PTTL', KEYS[2] .. 'txlock'))
elseif kind == 'pidfile' then
  put('entry', redis.call('GET', KEYS[2] .. 'pid') or '')
  put('lease_left_ms', redis.call('PTTL', KEYS[2] .. 'pid'))
elseif kind == 'event' then
  put('set', redis.call('EXISTS', KEYS[2] .. 'flag'))
end
return {meta, out}
";

/// What `inspect` found: the kind, the format version, the figures by name.
type Found = (FileKind, Option<u32>, Vec<(String, String)>);

/// The kind, version and figures of the name `url`.
pub(crate) fn inspect(url: &RedisUrl) -> Result<Found> {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let conn = Conn::open(url)?;
    let base = url.key("");
    let (meta, figures): (Vec<String>, Vec<String>) = conn.read(|c| {
        super::script(&S, &[super::STREAM_LUA, LOOK])
            .key(url.key("meta"))
            .key(&base)
            .invoke(c)
    })?;
    let pairs = |v: Vec<String>| -> Vec<(String, String)> {
        v.chunks(2)
            .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
            .collect()
    };
    let meta = pairs(meta);
    let mut details = pairs(figures);
    let get = |k: &str| meta.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let version = get("version").and_then(|v| v.parse().ok());
    for k in ["fence", "capacity", "free", "sent", "received", "gen"] {
        if let Some(v) = get(k) {
            details.push((k.to_owned(), v));
        }
    }
    let kind = match get("kind").as_deref() {
        None => FileKind::Missing,
        Some("mutex") => FileKind::Mutex,
        Some("semaphore") => FileKind::Semaphore,
        Some("queue") => FileKind::Queue,
        Some("shared_data") => FileKind::SharedData,
        Some("event") => FileKind::Event,
        Some("pidfile") => {
            let entry = details
                .iter()
                .find(|(k, _)| k == "entry")
                .map(|(_, v)| v.clone());
            match entry.and_then(|e| e.split(' ').next().and_then(|p| p.parse().ok())) {
                Some(pid) => FileKind::PidFile { pid },
                None => FileKind::Missing,
            }
        }
        Some(other) => FileKind::Other(format!("a Redis name of unknown kind {other:?}")),
    };
    Ok((kind, version, details))
}
