//! [`Location`]: where a primitive lives, a path on this machine or a name on a Redis
//! server, parsed from the one string a user gives (`/tmp/jobs`,
//! `redis://host:6379/jobs?lease=30s`).
//!
//! Rule: a name that starts with a known scheme (`redis://`, `rediss://`,
//! `redis+unix://`) is a URL; anything else is a path, and a `./` prefix forces a path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The schemes that select the Redis engine.
const REDIS_SCHEMES: [&str; 3] = ["redis://", "rediss://", "redis+unix://"];

/// Where a primitive lives: a path on the local file system, or a name on a Redis server.
///
/// Every `open` takes a path-like argument and parses it with [`Location::parse`], so
/// `Mutex::open("redis://host/cron-sync")` opens the Redis engine and
/// `Mutex::open("/tmp/cron-sync")` the local one; programs that build locations
/// themselves can name one explicitly.
///
/// # Examples
///
/// ```
/// use fileipc::Location;
///
/// assert!(matches!(Location::parse("/tmp/jobs")?, Location::Path(_)));
/// assert!(matches!(Location::parse("./redis://x")?, Location::Path(_)));
/// let Location::Redis(url) = Location::parse("redis://db.internal:6380/jobs?db=2&lease=10s")? else {
///     unreachable!()
/// };
/// assert_eq!(url.name(), "jobs");
/// assert_eq!(url.lease(), std::time::Duration::from_secs(10));
/// # Ok::<(), fileipc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A path on this machine's file system.
    Path(PathBuf),
    /// A name on a Redis server.
    Redis(RedisUrl),
}

impl Location {
    /// Parses the string a user gave: a URL with a known scheme, or a path.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL with a known scheme that does not parse (naming the
    /// URL and what is wrong).
    pub fn parse(name: impl AsRef<Path>) -> Result<Location> {
        let path = name.as_ref();
        let Some(s) = path.to_str() else {
            return Ok(Location::Path(path.to_path_buf()));
        };
        if REDIS_SCHEMES.iter().any(|p| s.starts_with(p)) {
            RedisUrl::parse(s).map(Location::Redis)
        } else {
            Ok(Location::Path(path.to_path_buf()))
        }
    }
}

/// Builds the Redis engine of a primitive with `build`, or, in a build without the
/// `redis` feature, fails naming the URL.
pub(crate) fn redis_engine<T>(
    url: &RedisUrl,
    build: impl FnOnce(&RedisUrl) -> Result<T>,
) -> Result<T> {
    if cfg!(feature = "redis") {
        build(url)
    } else {
        Err(Error::Invalid {
            path: url.as_path(),
            detail: "this build of fileipc has no Redis engine (cargo feature `redis`)".into(),
        })
    }
}

use crate::DEFAULT_LEASE;

/// A primitive on a Redis server:
/// `redis://[user[:password]@]host[:port]/NAME[?db=N&prefix=P&lease=D]`,
/// `rediss://...` (TLS), or `redis+unix:///path/to/socket?name=NAME[&db=..]`.
///
/// `prefix` (default `fileipc:`) starts every key; `lease` (default [`DEFAULT_LEASE`], 30 s; `500ms`,
/// `10s`, `2m`) is how long a dead holder keeps what it held.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    text: String,
    server: Server,
    db: i64,
    user: Option<String>,
    password: Option<String>,
    name: String,
    prefix: String,
    lease: Duration,
}

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Server {
    Tcp { host: String, port: u16, tls: bool },
    Unix(PathBuf),
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs.
        f.debug_struct("RedisUrl")
            .field("url", &self.to_string())
            .finish()
    }
}

impl fmt::Display for RedisUrl {
    /// The URL as given, with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.password {
            Some(p) if !p.is_empty() => {
                f.write_str(&self.text.replacen(&format!(":{p}@"), ":***@", 1))
            }
            _ => f.write_str(&self.text),
        }
    }
}

impl RedisUrl {
    /// Parses a Redis URL (see the type's documentation for the grammar).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the URL and what is wrong with it.
    pub fn parse(url: &str) -> Result<RedisUrl> {
        let bad = |detail: String| Error::Invalid {
            path: PathBuf::from(redact(url)),
            detail,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not a URL".into()))?;
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let mut db = 0;
        let mut prefix = "fileipc:".to_string();
        let mut lease = DEFAULT_LEASE;
        let mut qname = None;
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "db" => {
                    db = v
                        .parse()
                        .map_err(|_| bad(format!("db={v:?} is not a number")))?
                }
                "prefix" => prefix = v.to_string(),
                "lease" => {
                    lease = parse_duration(v).ok_or_else(|| {
                        bad(format!("lease={v:?} is not a duration (500ms, 10s, 2m)"))
                    })?;
                    if lease < Duration::from_millis(100) {
                        return Err(bad(format!("lease={v:?} is shorter than 100ms")));
                    }
                }
                "name" => qname = Some(v.to_string()),
                _ => {
                    return Err(bad(format!(
                        "unknown parameter {k:?} (db, prefix, lease, name)"
                    )));
                }
            }
        }
        let (server, user, password, name) = match scheme {
            "redis" | "rediss" => {
                let (authority, path) = body.split_once('/').unwrap_or((body, ""));
                let (userinfo, hostport) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, authority),
                };
                let (user, password) = match userinfo {
                    None => (None, None),
                    Some(u) => match u.split_once(':') {
                        Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
                        None => (Some(u.to_string()), None),
                    },
                };
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                        h,
                        p.parse()
                            .map_err(|_| bad(format!("port {p:?} is not a number")))?,
                    ),
                    _ => (hostport, 6379),
                };
                if host.is_empty() {
                    return Err(bad("no host".into()));
                }
                let name = qname.unwrap_or_else(|| path.to_string());
                let server = Server::Tcp {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port,
                    tls: scheme == "rediss",
                };
                (server, user, password, name)
            }
            "redis+unix" => {
                if body.is_empty() {
                    return Err(bad("no socket path".into()));
                }
                let name = qname.ok_or_else(|| {
                    bad("a redis+unix URL names the primitive with ?name=NAME".into())
                })?;
                (Server::Unix(PathBuf::from(body)), None, None, name)
            }
            other => return Err(bad(format!("unknown scheme {other:?}"))),
        };
        if name.is_empty() {
            return Err(bad(
                "no name: add it as the URL's path (redis://host/NAME)".into()
            ));
        }
        Ok(RedisUrl {
            text: url.to_string(),
            server,
            db,
            user,
            password,
            name,
            prefix,
            lease,
        })
    }

    /// The primitive's name on the server (the URL's path, or `?name=`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prefix of every key (default `fileipc:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The database number (default 0).
    pub fn db(&self) -> i64 {
        self.db
    }

    /// How long a dead holder keeps what it held (default [`DEFAULT_LEASE`]).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The URL as a path, for errors and `path()` (password redacted).
    pub(crate) fn as_path(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }

    /// The server's address.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// The user and password, if the URL has them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn credentials(&self) -> (Option<&str>, Option<&str>) {
        (self.user.as_deref(), self.password.as_deref())
    }

    /// The key `{prefix}{name}:{part}`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn key(&self, part: &str) -> String {
        format!("{}{}:{}", self.prefix, self.name, part)
    }

    /// The same server, database, prefix and lease, naming `{name}{suffix}` (its text
    /// too, where the name appears in it).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_suffix(&self, suffix: &str) -> RedisUrl {
        let name = format!("{}{suffix}", self.name);
        let text = if let Some(i) = self.text.find(&format!("name={}", self.name)) {
            let at = i + "name=".len() + self.name.len();
            format!("{}{suffix}{}", &self.text[..at], &self.text[at..])
        } else {
            let end = self.text.find('?').unwrap_or(self.text.len());
            format!("{}{suffix}{}", &self.text[..end], &self.text[end..])
        };
        RedisUrl {
            text,
            name,
            ..self.clone()
        }
    }
}

/// `url` with any `user:password@` password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h`, or a bare number of milliseconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "" | "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(s: &str) -> RedisUrl {
        match Location::parse(s).unwrap() {
            Location::Redis(u) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn paths_stay_paths() {
        for s in [
            "/tmp/x",
            "x",
            "./redis://h/x",
            "redis:/x",
            "redisx://h/x",
            "",
        ] {
            assert_eq!(Location::parse(s).unwrap(), Location::Path(s.into()), "{s}");
        }
    }

    #[test]
    fn tcp_urls() {
        let u = redis("redis://h/cron-sync");
        assert_eq!(
            u.server(),
            &Server::Tcp {
                host: "h".into(),
                port: 6379,
                tls: false
            }
        );
        assert_eq!(
            (u.name(), u.db(), u.prefix(), u.lease()),
            ("cron-sync", 0, "fileipc:", DEFAULT_LEASE)
        );
        let u = redis("rediss://alice:s3cret@10.0.0.1:7000/a/b?db=3&prefix=app:&lease=1500ms");
        assert_eq!(
            u.server(),
            &Server::Tcp {
                host: "10.0.0.1".into(),
                port: 7000,
                tls: true
            }
        );
        assert_eq!(u.credentials(), (Some("alice"), Some("s3cret")));
        assert_eq!((u.name(), u.db(), u.prefix()), ("a/b", 3, "app:"));
        assert_eq!(u.lease(), Duration::from_millis(1500));
        assert_eq!(u.key("lock"), "app:a/b:lock");
        assert!(!u.to_string().contains("s3cret"), "{u}");
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn unix_urls() {
        let u = redis("redis+unix:///run/redis.sock?name=x&db=1");
        assert_eq!(u.server(), &Server::Unix("/run/redis.sock".into()));
        assert_eq!((u.name(), u.db()), ("x", 1));
    }

    #[test]
    fn bad_urls_name_the_url_and_the_fault() {
        for (s, want) in [
            ("redis://h", "no name"),
            ("redis://h:x/n", "port"),
            ("redis://h/n?lease=fast", "lease"),
            ("redis://h/n?lease=10ms", "shorter"),
            ("redis://h/n?colour=red", "unknown parameter"),
            ("redis+unix:///s", "?name="),
            ("redis://u:pw@h/n?db=x", "db="),
        ] {
            let e = Location::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(!e.contains(":pw@"), "{e}");
        }
    }
}
