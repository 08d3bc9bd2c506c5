//! The Redis server of `fileipc bench --redis [URL]`: the server URL the user gives (or a
//! private `redis-server` the harness starts), the per-run names built on it for our
//! primitives and for the raw redis-rs baselines, and the removal of a run's keys.
//!
//! The user's URL names a server only (`redis+unix:///tmp/r.sock`, `redis://host:6379`,
//! with `?db=N` and the other parameters of fileipc's grammar if wanted); the harness
//! chooses every name, unique per run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// The server URL (`base`) split into its address and its query.
fn split(base: &str) -> (&str, Option<&str>) {
    match base.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (base, None),
    }
}

/// `url` with any `user:password@` password replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// fileipc's URL for the primitive `name` on the server `base`.
pub(crate) fn ours_url(base: &str, name: &str) -> String {
    let (addr, query) = split(base);
    if addr.starts_with("redis+unix://") {
        match query {
            Some(q) => format!("{addr}?name={name}&{q}"),
            None => format!("{addr}?name={name}"),
        }
    } else {
        let addr = addr.trim_end_matches('/');
        match query {
            Some(q) => format!("{addr}/{name}?{q}"),
            None => format!("{addr}/{name}"),
        }
    }
}

/// The redis-rs URL of the server `base` (its address and `db`), for the baselines.
pub(crate) fn client_url(base: &str) -> String {
    let (addr, query) = split(base);
    let db = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("db="))
        .unwrap_or("0");
    if addr.starts_with("redis+unix://") {
        format!("{addr}?db={db}")
    } else {
        format!("{}/{db}", addr.trim_end_matches('/'))
    }
}

/// A new connection to the server `base` whose reads wait at most `read_timeout`.
pub(crate) fn connect(base: &str, read_timeout: Duration) -> Result<redis::Connection> {
    let url = client_url(base);
    let client =
        redis::Client::open(url.as_str()).with_context(|| format!("redis URL {}", redact(&url)))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .with_context(|| format!("connecting to {}", redact(&url)))?;
    con.set_read_timeout(Some(read_timeout))?;
    con.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// Checks that `base` names a server (a fileipc Redis URL without a primitive's name)
/// that answers; returns the server's version.
pub(crate) fn check(base: &str) -> Result<String> {
    let shown = redact(base);
    ensure!(
        ["redis://", "rediss://", "redis+unix://"]
            .iter()
            .any(|s| base.starts_with(s)),
        "--redis {shown:?}: not a Redis URL (redis://HOST[:PORT], redis+unix:///SOCKET); \
         `fileipc bench --redis` alone starts a private redis-server"
    );
    let (addr, query) = split(base);
    let has_path = addr
        .split_once("://")
        .is_some_and(|(s, rest)| s != "redis+unix" && rest.trim_end_matches('/').contains('/'));
    ensure!(
        !has_path && !query.is_some_and(|q| q.split('&').any(|p| p.starts_with("name="))),
        "--redis {shown:?}: give the server only, the benchmark chooses the names"
    );
    match fileipc::Location::parse(ours_url(base, "probe"))
        .with_context(|| format!("--redis {shown:?}"))?
    {
        fileipc::Location::Redis(_) => {}
        _ => bail!("--redis {shown:?}: not a Redis URL"),
    }
    let mut con = connect(base, Duration::from_secs(5))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut con)
        .with_context(|| format!("INFO server on {shown}"))?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned())
}

/// Removes every key of the run `tag` (ours and the baselines' names all contain it).
pub(crate) fn remove_keys(base: &str, tag: &str) -> Result<()> {
    let mut con = connect(base, Duration::from_secs(5))?;
    let pattern = format!("*{tag}*");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).exec(&mut con)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A `redis-server` the harness started for the run (unix socket in the run's directory,
/// no persistence), killed when dropped.
#[derive(Debug)]
pub(crate) struct PrivateServer {
    child: Child,
    /// The server's URL, for [`ours_url`] and [`client_url`].
    pub(crate) url: String,
}

impl PrivateServer {
    /// Starts `redis-server` with its socket and files in `dir`, and waits (at most 10 s)
    /// until it answers.
    pub(crate) fn start(dir: &Path) -> Result<PrivateServer> {
        let sock: PathBuf = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context(
                "starting redis-server (install it: apt-get install redis-server, \
                 or give a server: --redis redis://HOST:PORT)",
            )?;
        let server = PrivateServer {
            child,
            url: format!("redis+unix://{}", sock.display()),
        };
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if sock.exists() && check(&server.url).is_ok() {
                return Ok(server);
            }
            ensure!(
                Instant::now() < give_up,
                "redis-server did not answer on {} within 10 s",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_where_the_grammar_wants_them() {
        let unix = "redis+unix:///tmp/r.sock";
        assert_eq!(ours_url(unix, "m"), "redis+unix:///tmp/r.sock?name=m");
        assert_eq!(client_url(unix), "redis+unix:///tmp/r.sock?db=0");
        let tcp = "redis://127.0.0.1:6379/?db=2&lease=5s";
        assert_eq!(ours_url(tcp, "m"), "redis://127.0.0.1:6379/m?db=2&lease=5s");
        assert_eq!(client_url(tcp), "redis://127.0.0.1:6379/2");
        assert_eq!(
            ours_url("redis+unix:///s?db=1", "q"),
            "redis+unix:///s?name=q&db=1"
        );
        assert_eq!(redact("redis://u:pw@h:1"), "redis://u:***@h:1");
    }
}
