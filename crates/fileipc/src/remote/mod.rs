//! What every Redis engine shares: connections to the server named by a
//! [`RedisUrl`], the error conversion, the kind check on the `meta` hash, and the
//! process's lease keeper ([`lease`]). The engines themselves are siblings of the local
//! ones (`mutex/redis.rs`, ...); `docs/REDIS.md` has the key layout and every script.

pub(crate) mod host;
pub(crate) mod inspect;
pub(crate) mod lease;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex as StdMutex, MutexGuard as StdGuard, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::location::{RedisUrl, Server};

/// How long one command may take before the connection is dropped and the call fails;
/// a blocking wait sets its own, longer read timeout.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The format version written in the `meta` hash of a name of `kind`: 1, and 2 for a
/// queue since its stream ids are positions (`queue/redis.rs`).
pub(crate) fn version(kind: &str) -> i64 {
    if kind == "queue" { 2 } else { 1 }
}

/// Lua shared by the queue's scripts and `inspect`: `group(key)`, the fields of stream
/// `key`'s consumer group `g` by name (`{}` without it; a field the server sends as nil,
/// such as an unknown `lag`, is `false`), and `position(id)`, the number after the `-`
/// of a stream id (queue ids are positions, see `queue/redis.rs`).
pub(crate) const STREAM_LUA: &str = r"
local function group(key)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local t = {}
    for j = 1, #g, 2 do t[g[j]] = g[j + 1] end
    if t.name == 'g' then return t end
  end
  return {}
end
local function position(id)
  return tonumber(string.match(id, '(%d+)$'))
end
";

/// The `redis` crate's URL for `url`'s server, speaking RESP3 if `resp3`.
fn client_url_with(url: &RedisUrl, resp3: bool) -> Result<String> {
    let mut u = client_url(url)?;
    if resp3 {
        u.push_str(if u.contains('?') {
            "&protocol=resp3"
        } else {
            "?protocol=resp3"
        });
    }
    Ok(u)
}

/// The `redis` crate's URL for `url`'s server.
fn client_url(url: &RedisUrl) -> Result<String> {
    Ok(match url.server() {
        Server::Tcp { tls: true, .. } => {
            return Err(Error::Invalid {
                path: url.as_path(),
                detail: "rediss:// needs TLS, which this build of fileipc does not have".into(),
            });
        }
        Server::Tcp { host, port, .. } => {
            let auth = match url.credentials() {
                (None, None) => String::new(),
                (u, p) => format!("{}:{}@", u.unwrap_or(""), p.unwrap_or("")),
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            format!("redis://{auth}{host}:{port}/{}", url.db())
        }
        Server::Unix(path) => format!("redis+unix://{}?db={}", path.display(), url.db()),
    })
}

/// Converts a `redis` error into ours, naming the URL.
pub(crate) fn error(url: &RedisUrl, e: redis::RedisError) -> Error {
    Error::Redis {
        path: url.as_path(),
        source: Box::new(e),
    }
}

/// Opens a new connection to `url`'s server, with [`COMMAND_TIMEOUT`] on reads and
/// writes.
pub(crate) fn connect(url: &RedisUrl) -> Result<redis::Connection> {
    connect_with(url, false)
}

/// As [`connect`], speaking RESP3 if `resp3` (for subscriptions: published messages
/// are then push frames, which a reader that timed out does not mistake for a late
/// reply and skip, as it skips the next reply after a timeout on RESP2).
fn connect_with(url: &RedisUrl, resp3: bool) -> Result<redis::Connection> {
    let client = redis::Client::open(client_url_with(url, resp3)?).map_err(|e| error(url, e))?;
    let mut con = client
        .get_connection_with_timeout(COMMAND_TIMEOUT)
        .map_err(|e| error(url, e))?;
    con.set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|()| con.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .map_err(|e| error(url, e))?;
    warn_on_eviction(url, &mut con);
    Ok(con)
}

/// A lazily (re)connected connection owned by one handle. After any error the
/// connection is dropped and the next call connects anew: a reply that arrives after a
/// timeout must never be read as the answer to a later command.
pub(crate) struct Conn {
    url: RedisUrl,
    path: std::path::PathBuf,
    con: StdMutex<Option<redis::Connection>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A connection to `url`'s server, opened now so that a wrong URL fails at `open`.
    pub(crate) fn open(url: &RedisUrl) -> Result<Conn> {
        let con = connect(url)?;
        Ok(Conn {
            url: url.clone(),
            path: url.as_path(),
            con: StdMutex::new(Some(con)),
        })
    }

    /// The URL this connection serves.
    pub(crate) fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The URL as a path (password redacted), for `path()` and errors.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `f`, a command that changes nothing (or whose repetition changes nothing
    /// more), retrying it once on a fresh connection if the connection was dropped
    /// (`CLIENT KILL`, a server restart, an idle timeout).
    pub(crate) fn read<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        match self.run(&mut f)? {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                self.run(f)?.map_err(|e| error(&self.url, e))
            }
            r => r.map_err(|e| error(&self.url, e)),
        }
    }

    /// Runs `f` on the connection. A command is repeated on a fresh connection only if
    /// it could not be sent (the server had closed the connection): one that may have
    /// run is never run twice.
    pub(crate) fn with<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        match self.run(&mut f)? {
            Err(e) if not_sent(&e) => self.run(f)?.map_err(|e| error(&self.url, e)),
            r => r.map_err(|e| error(&self.url, e)),
        }
    }

    /// Runs `f` on the connection, connecting first if there is none; drops the
    /// connection if `f` fails. The outer error is a failure to connect.
    fn run<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<redis::RedisResult<T>> {
        let mut slot = lock(&self.con);
        if slot.is_none() {
            *slot = Some(connect(&self.url)?);
        }
        let con = slot.as_mut().expect("connected above");
        let out = f(con);
        if out.is_err() {
            *slot = None;
        }
        Ok(out)
    }
}

/// Whether `e` says the command was never sent: writing to a connection the server had
/// already closed (`EPIPE`). Nothing else proves that a command did not run.
fn not_sent(e: &redis::RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let Some(source) = std::error::Error::source(e) else {
        return false;
    };
    let io = source.downcast_ref::<std::io::Error>().or_else(|| {
        source
            .downcast_ref::<Shared>()
            .and_then(|a| a.downcast_ref::<std::io::Error>())
    });
    io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Locks a std mutex, ignoring poisoning (the data behind each is valid at every
/// instant: a connection slot, a list of leases).
pub(crate) fn lock<T>(m: &StdMutex<T>) -> StdGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks that the `meta` hash of `url` names `kind` at our version, creating it if
/// it is absent and `create` is true (and creation is not refused on this thread, see
/// `state::without_creating`); absent otherwise: an [`Error::Io`] of kind `NotFound`
/// naming the URL.
pub(crate) fn check_kind(conn: &Conn, kind: &str, create: bool) -> Result<()> {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    let script = script(
        &SCRIPT,
        &[r"
        if ARGV[3] == '1' then
          redis.call('HSETNX', KEYS[1], 'kind', ARGV[1])
          redis.call('HSETNX', KEYS[1], 'version', ARGV[2])
        end
        local v = redis.call('HMGET', KEYS[1], 'kind', 'version')
        return {v[1] or '', tonumber(v[2] or '0')}
        "],
    );
    let create = create && crate::state::check_may_create(conn.path()).is_ok();
    let (found, version): (String, i64) = conn.read(|c| {
        script
            .key(conn.url().key("meta"))
            .arg(kind)
            .arg(version(kind))
            .arg(if create { "1" } else { "0" })
            .invoke(c)
    })?;
    if found.is_empty() {
        return Err(Error::io(
            "open",
            conn.path(),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    if found != kind {
        return Err(Error::Format {
            path: conn.url().as_path(),
            expected: "fileipc name of this kind",
            detail: format!("it holds a {found}, not a {kind}"),
        });
    }
    if version != self::version(kind) {
        return Err(Error::Format {
            path: conn.url().as_path(),
            expected: "fileipc name of this kind",
            detail: format!(
                "format version {version}; this build reads version {}",
                self::version(kind)
            ),
        });
    }
    Ok(())
}

/// Warns once per process when the server may evict keys: an evicted lease key is a
/// lock granted twice. Checked on the first connection only; a server that refuses
/// `CONFIG` is not warned about.
fn warn_on_eviction(url: &RedisUrl, con: &mut redis::Connection) {
    static CHECKED: AtomicBool = AtomicBool::new(false);
    if CHECKED.swap(true, Ordering::Relaxed) {
        return;
    }
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(con);
    if let Ok(v) = policy
        && let Some(p) = v.get(1)
        && p != "noeviction"
    {
        eprintln!(
            "fileipc: warning: {url}: the server's maxmemory-policy is {p:?}, not \"noeviction\": \
             evicting a lease key would let two holders in at once"
        );
    }
}

/// The longest a waiter sleeps between two polls, whatever the TTL: bounds the cost of a
/// lost wake-up message (pub/sub is not reliable).
pub(crate) const MAX_NAP: Duration = Duration::from_millis(500);

/// The script in `cell`, made from the concatenated `parts` on first use.
pub(crate) fn script(
    cell: &'static OnceLock<redis::Script>,
    parts: &[&str],
) -> &'static redis::Script {
    cell.get_or_init(|| redis::Script::new(&parts.concat()))
}

/// A token no other grant has: 128 random bits from the kernel, in hex, followed by
/// this process's host identity and owner id where it has them (`host.rs`), so that a
/// waiter on the same host can prove the holder dead.
pub(crate) fn token() -> String {
    let mut b = [0u8; 16];
    crate::sys::random(&mut b);
    let mut t: String = b.iter().map(|x| format!("{x:02x}")).collect();
    t.push_str(&host::token_suffix());
    t
}

/// A wake-up channel: releases publish on it, waiters nap on it between polls. Only a
/// hint: a waiter always polls again after its nap, so a lost message costs latency,
/// never a missed grant.
pub(crate) struct Wake {
    url: RedisUrl,
    channel: String,
    sub: StdMutex<Option<redis::Connection>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Wake {
    pub(crate) fn new(url: &RedisUrl, channel: String) -> Wake {
        Wake {
            url: url.clone(),
            channel,
            sub: StdMutex::new(None),
        }
    }

    /// Waits for a message on the channel, at most `nap`. The first call only
    /// subscribes and returns at once: the caller polls again, so a message published
    /// between its first poll and the subscription is not waited for.
    ///
    /// The connection stays subscribed from then on (it is this handle's, used for
    /// nothing else): `SUBSCRIBE` is sent raw and messages are read with
    /// `recv_response`, because the `redis` crate's `PubSub` guard unsubscribes when
    /// dropped, which would lose every message published between two naps. It speaks
    /// RESP3, so that a message after a nap that timed out is not skipped as a late
    /// reply.
    pub(crate) fn nap(&self, nap: Duration) -> Result<()> {
        let mut sub = lock(&self.sub);
        if sub.is_none() {
            let mut c = connect_with(&self.url, true)?;
            let packed = redis::cmd("SUBSCRIBE")
                .arg(&self.channel)
                .get_packed_command();
            c.send_packed_command(&packed)
                .and_then(|()| c.recv_response())
                .map_err(|e| error(&self.url, e))?;
            *sub = Some(c);
            return Ok(());
        }
        let c = sub.as_mut().expect("subscribed above");
        let r = c
            .set_read_timeout(Some(nap.max(Duration::from_millis(1))))
            .and_then(|()| c.recv_response());
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_timeout() => Ok(()),
            Err(_) => {
                // A broken subscription is made anew by the next nap.
                *sub = None;
                Ok(())
            }
        }
    }
}

/// Deletes `key` if it still holds `value` and publishes on `channel`: how a waiter
/// frees what a holder proven dead held (`host.rs`). Whether it deleted.
pub(crate) fn delete_if_holds(conn: &Conn, key: &str, value: &str, channel: &str) -> Result<bool> {
    static S: OnceLock<redis::Script> = OnceLock::new();
    let n: i64 = conn.with(|c| {
        script(
            &S,
            &[r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then
              redis.call('DEL', KEYS[1])
              redis.call('PUBLISH', KEYS[2], '1')
              return 1
            end
            return 0
            "],
        )
        .key(key)
        .key(channel)
        .arg(value)
        .invoke(c)
    })?;
    Ok(n == 1)
}

/// If `key` holds the token of a holder of this host proven dead, frees it (see
/// [`delete_if_holds`]). Whether it did.
pub(crate) fn free_if_dead(conn: &Conn, key: &str, channel: &str) -> Result<bool> {
    let holder: Option<String> = conn.read(|c| redis::cmd("GET").arg(key).query(c))?;
    match holder {
        Some(h) if host::holder_is_dead(&h) => delete_if_holds(conn, key, &h, channel),
        _ => Ok(false),
    }
}
