//! The Redis engine across machines, for real: `redis-server` and two clients in three
//! network namespaces this test makes (veth pairs, addresses in the benchmarking range
//! 198.18.0.0/15 that exist only inside them), removed at the end. Traffic goes nowhere
//! but between those namespaces.
//!
//! Needs root and `ip` (iproute2); skips loudly otherwise, and fails where
//! `FILEIPC_REQUIRE_ROOT_TESTS` is set.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, say};
use fileipc::{Error, MessageQueue, Mutex, Semaphore};

#[test]
fn child_process_entry() {
    common::child_main(|role, args| match role {
        "hold-until-lost" => hold_until_lost(&args),
        "lock-once" => lock_once(&args),
        "produce" => produce(&args),
        "consume" => consume(&args),
        "permits" => permits(&args),
        other => panic!("unknown role {other}"),
    });
}

/// Three namespaces: a server reachable from client 1 at 198.18.1.1 and from client 2
/// at 198.18.2.1. Removed (with their links) when dropped.
struct Net {
    srv: String,
    c1: String,
    c2: String,
    /// Client 1's end of its link to the server.
    c1_link: String,
    server: Option<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    fn make() -> Result<Net, String> {
        let id = std::process::id() % 100_000;
        let mut net = Net {
            srv: format!("fipc{id}s"),
            c1: format!("fipc{id}a"),
            c2: format!("fipc{id}b"),
            c1_link: format!("fi{id}a1"),
            server: None,
        };
        for ns in [&net.srv, &net.c1, &net.c2] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        for (client, n) in [(net.c1.clone(), 1), (net.c2.clone(), 2)] {
            let (srv_end, cli_end) = (
                format!("fi{id}s{n}"),
                format!("fi{id}{}1", if n == 1 { 'a' } else { 'b' }),
            );
            ip(&[
                "link", "add", &srv_end, "netns", &net.srv, "type", "veth", "peer", "name",
                &cli_end, "netns", &client,
            ])?;
            ip(&[
                "-n",
                &net.srv,
                "addr",
                "add",
                &format!("198.18.{n}.1/24"),
                "dev",
                &srv_end,
            ])?;
            ip(&[
                "-n",
                &client,
                "addr",
                "add",
                &format!("198.18.{n}.2/24"),
                "dev",
                &cli_end,
            ])?;
            ip(&["-n", &net.srv, "link", "set", &srv_end, "up"])?;
            ip(&["-n", &client, "link", "set", &cli_end, "up"])?;
        }
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.srv,
                "redis-server",
                "--bind",
                "198.18.1.1",
                "198.18.2.1",
            ])
            .args([
                "--port",
                "6379",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        net.server = Some(server);
        // Ready when client 1 reaches it.
        let start = Instant::now();
        loop {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &net.c1,
                    "redis-cli",
                    "-h",
                    "198.18.1.1",
                    "PING",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
            if ok {
                break;
            }
            if start.elapsed() > PATIENCE {
                return Err("redis-server in the namespace never answered".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(net)
    }

    /// Runs `role` of this test binary inside namespace `ns`.
    fn spawn(&self, ns: &str, role: &str, args: &[&str]) -> Proc {
        Proc::spawn_under(&["ip", "netns", "exec", ns], role, args)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in [&self.srv, &self.c1, &self.c2] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Child: takes the lock, says "locked", waits until the lease is lost, reports unlock.
fn hold_until_lost(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let g = m.guard_timeout(PATIENCE).unwrap().unwrap();
    say("locked");
    let start = Instant::now();
    while !g.is_lost() {
        assert!(start.elapsed() < PATIENCE, "lease never reported lost");
        std::thread::park_timeout(Duration::from_millis(5));
    }
    say(format!("lost after {} ms", start.elapsed().as_millis()));
    match g.unlock() {
        Err(Error::LeaseLost { .. }) => say("unlock refused"),
        other => say(format!("unlock gave {other:?}")),
    }
}

/// Child: takes the lock once, says how long it waited, releases.
fn lock_once(args: &[String]) {
    let m = Mutex::open(&args[0]).unwrap();
    let start = Instant::now();
    let g = m
        .guard_timeout(PATIENCE)
        .unwrap()
        .expect("the lock within PATIENCE");
    say(format!("locked after {} ms", start.elapsed().as_millis()));
    g.unlock().unwrap();
}

fn produce(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    for i in 0..args[1].parse::<u32>().unwrap() {
        q.send(i.to_string()).unwrap();
    }
    say("sent");
}

fn consume(args: &[String]) {
    let q = MessageQueue::open(&args[0]).unwrap();
    let n: u32 = args[1].parse().unwrap();
    let mut got: Vec<u32> = (0..n)
        .map(|_| {
            q.recv_timeout(PATIENCE)
                .unwrap()
                .expect("a message")
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    say("received all once");
}

/// Child: `args[1]` cycles of a permit, logging the holders seen by `value`.
fn permits(args: &[String]) {
    let s = Semaphore::open(&args[0], 2).unwrap();
    let mut most = 0;
    for _ in 0..args[1].parse::<u32>().unwrap() {
        let p = s.permit_timeout(PATIENCE).unwrap().expect("a permit");
        most = most.max(2 - s.value().unwrap());
        p.release().unwrap();
    }
    say(format!("most held {most}"));
}

#[test]
fn mutex_semaphore_and_queue_across_three_network_namespaces() {
    let test = "mutex_semaphore_and_queue_across_three_network_namespaces";
    if !rustix::process::geteuid().is_root() {
        common::skip(test, "needs root to make network namespaces");
        return;
    }
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        common::redis::skip(test, "no redis-server (apt-get install redis-server)");
        return;
    }
    if !cfg!(feature = "redis") {
        common::redis::skip(test, "built without the `redis` feature");
        return;
    }
    let net = match Net::make() {
        Ok(n) => n,
        Err(e) => {
            common::skip(test, format!("cannot make the namespaces: {e}"));
            return;
        }
    };
    let via1 = |name: &str| format!("redis://198.18.1.1:6379/{name}?lease=1s");
    let via2 = |name: &str| format!("redis://198.18.2.1:6379/{name}?lease=1s");

    // The queue: what client 1 sends, client 2 receives, each message once.
    let mut consumer = net.spawn(&net.c2, "consume", &[&via2("q"), "300"]);
    let mut producer = net.spawn(&net.c1, "produce", &[&via1("q"), "300"]);
    producer.expect("sent");
    consumer.expect("received all once");

    // The semaphore: two permits shared by both clients.
    let mut a = net.spawn(&net.c1, "permits", &[&via1("s"), "100"]);
    let mut b = net.spawn(&net.c2, "permits", &[&via2("s"), "100"]);
    for p in [&mut a, &mut b] {
        let line = p.expect_line(PATIENCE);
        let most: u32 = line.trim_start_matches("most held ").parse().unwrap();
        assert!(most <= 2, "{line}");
    }

    // The mutex: client 1 holds it, its link is cut past the lease; client 2 gets it
    // after the lease, and client 1 knows it lost it.
    let mut holder = net.spawn(&net.c1, "hold-until-lost", &[&via1("m")]);
    holder.expect("locked");
    ip(&["-n", &net.c1, "link", "set", &net.c1_link, "down"]).unwrap();
    let cut = Instant::now();
    let mut successor = net.spawn(&net.c2, "lock-once", &[&via2("m")]);
    let got = successor.expect_line(PATIENCE);
    eprintln!("successor: {got} (link cut {:?} ago)", cut.elapsed());
    let lost = holder.expect_line(PATIENCE);
    eprintln!("cut-off holder: {lost}");
    assert!(lost.starts_with("lost after"), "{lost}");
    holder.expect("unlock refused");
    successor.wait_success();
    drop(net);
}
