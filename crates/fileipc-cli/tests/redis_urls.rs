//! The CLI with Redis URLs where paths go, through the real `fileipc` binary against a
//! private `redis-server` (a unix socket in a temporary directory, no persistence). Without
//! `redis-server` the tests say so and skip; where `FILEIPC_REQUIRE_REDIS_TESTS` is set
//! (CI sets it) that is a failure.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(30);

struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(test: &str) -> Option<Server> {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("FILEIPC_REQUIRE_REDIS_TESTS").is_none(),
                    "{test} could not run (no redis-server: {e}), and FILEIPC_REQUIRE_REDIS_TESTS is set"
                );
                eprintln!("SKIPPED {test}: no redis-server ({e}); apt-get install redis-server");
                return None;
            }
        };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(start.elapsed() < PATIENCE, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        Some(Server { child, dir })
    }

    fn url(&self, name: &str) -> String {
        format!(
            "redis+unix://{}?name={name}&lease=2s",
            self.dir.path().join("redis.sock").display()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fileipc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_command_family_takes_a_url() {
    let Some(s) = Server::start("every_command_family_takes_a_url") else {
        return;
    };
    let (q, m, sem, kv, ev, pid) = (
        s.url("q"),
        s.url("m"),
        s.url("s"),
        s.url("kv"),
        s.url("ev"),
        s.url("pid"),
    );

    // mutex run: the command runs holding the lock, with its fence.
    let o = fileipc(&[
        "mutex",
        "run",
        &m,
        "--",
        "sh",
        "-c",
        &format!(
            "{} mutex status '{m}' && echo fence=$FILEIPC_FENCE",
            env!("CARGO_BIN_EXE_fileipc")
        ),
    ]);
    assert!(o.status.success(), "{o:?}");
    let text = out(&o);
    assert!(text.contains("locked") && text.contains("fence="), "{text}");
    assert!(!text.contains("fence=\n"), "a fence was exported: {text}");
    let o = fileipc(&["mutex", "status", &m]);
    assert_eq!((o.status.code(), out(&o).trim()), (Some(1), "free"));

    // sem run with a capacity, then value.
    let o = fileipc(&["sem", "run", &sem, "--initial", "2", "--", "true"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(out(&fileipc(&["sem", "value", &sem])).trim(), "2");

    // queue send / count / recv / claim.
    assert!(
        fileipc(&["queue", "send", &q, "a", "b", "c"])
            .status
            .success()
    );
    assert_eq!(out(&fileipc(&["queue", "count", &q])).trim(), "3");
    let o = fileipc(&["queue", "recv", &q, "--timeout", "5s"]);
    assert_eq!(out(&o), "a\n");
    let o = fileipc(&[
        "queue",
        "claim",
        &q,
        "--timeout",
        "5s",
        "--",
        "sh",
        "-c",
        "cat; exit 1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(out(&o), "b", "the command read the message");
    assert_eq!(
        out(&fileipc(&["queue", "count", &q])).trim(),
        "2",
        "a failed command gives its message back"
    );
    let o = fileipc(&["queue", "recv", &q, "--all", "--timeout", "5s"]);
    assert_eq!(out(&o), "b\nc\n");

    // kv, event, pidfile.
    assert!(fileipc(&["kv", "set", &kv, "k", "41"]).status.success());
    assert_eq!(out(&fileipc(&["kv", "incr", &kv, "k"])).trim(), "42");
    assert_eq!(out(&fileipc(&["kv", "get", &kv, "k"])).trim(), "42");
    assert!(fileipc(&["event", "set", &ev]).status.success());
    assert!(
        fileipc(&["event", "wait", &ev, "--timeout", "5s"])
            .status
            .success()
    );
    let o = fileipc(&["pidfile", "run", &pid, "--", "true"]);
    assert!(o.status.success(), "{o:?}");

    // stat shows the kind and the server-side figures.
    let o = fileipc(&["stat", &q, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "queue", "{v}");
    assert_eq!(v["backlog"], 0, "{v}");
    let o = fileipc(&["stat", &m, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "mutex", "{v}");
    assert!(v["fence"].as_u64().is_some_and(|f| f > 0), "{v}");

    // A query on a name that holds nothing: not found, exit 1, nothing created.
    let o = fileipc(&["stat", &s.url("nothing")]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = fileipc(&["queue", "count", &s.url("nothing")]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // Another kind at a name is refused naming the URL.
    let o = fileipc(&["queue", "count", &m]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mutex"),
        "{o:?}"
    );
}
