//! A private `redis-server` for one test: a unix socket in a temporary directory, no
//! persistence, killed by PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` that only this test talks to.
pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server, or reports loudly that the test cannot run (no `redis-server`
    /// installed, or a build without the `redis` feature) and returns `None`; where
    /// `FILEIPC_REQUIRE_REDIS_TESTS` is set (CI sets it) that is a failure instead.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !cfg!(feature = "redis") {
            skip(test, "built without the `redis` feature");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let child = match spawn(dir.path()) {
            Ok(c) => c,
            Err(e) => {
                skip(
                    test,
                    format!(
                        "cannot start redis-server ({e}); install it: apt-get install redis-server"
                    ),
                );
                return None;
            }
        };
        let server = RedisServer { child, dir };
        server.wait_ready();
        Some(server)
    }

    /// Kills the server (losing every key: it persists nothing) and starts a new one on
    /// the same socket.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
        self.child = spawn(self.dir.path()).expect("restarting redis-server");
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let sock = self.socket();
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                start.elapsed() < super::PATIENCE,
                "redis-server did not open {sock:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The server's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// A URL naming `name` on this server, with extra query parameters (`lease=1s`).
    pub fn url(&self, name: &str, params: &str) -> String {
        let mut u = format!("redis+unix://{}?name={name}", self.socket().display());
        if !params.is_empty() {
            u.push('&');
            u.push_str(params);
        }
        u
    }

    /// Runs `redis-cli` against the server with `args`, returning its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("running redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` with its socket and files in `dir`.
fn spawn(dir: &std::path::Path) -> std::io::Result<Child> {
    let sock = dir.join("redis.sock");
    Command::new("redis-server")
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
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Reports that a Redis test cannot run here: loudly, and as a failure where
/// `FILEIPC_REQUIRE_REDIS_TESTS` is set.
pub fn skip(test: &str, why: impl std::fmt::Display) {
    assert!(
        std::env::var_os("FILEIPC_REQUIRE_REDIS_TESTS").is_none(),
        "{test} could not run ({why}), and FILEIPC_REQUIRE_REDIS_TESTS is set"
    );
    eprintln!("SKIPPED {test}: {why}");
}
