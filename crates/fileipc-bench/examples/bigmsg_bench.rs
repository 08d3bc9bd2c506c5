//! MessageQueue throughput with large messages (4 KiB, 64 KiB) beside a POSIX message
//! queue and a pipe, P producers and C consumers, in one run.
//!
//! ```text
//! cargo run --release -p fileipc-bench --example bigmsg_bench -- SIZE P C MESSAGES [ROUNDS [DIR [WHICH]]]
//! ```
//!
//! Every figure is between real processes (this program runs itself again in a role).
//! Each round measures our queue (a new queue in DIR, default the system temp dir), a
//! POSIX queue (10 messages of SIZE bytes; `/proc/sys/fs/mqueue/msgsize_max` must allow
//! SIZE) and a FIFO in DIR (each consumer reads its share of the bytes), and prints each
//! rate, the CPU time its processes used per message, and our ratio to each baseline. WHICH (`all`, `ours`, `mq`, `pipe`) limits the
//! contenders, e.g. to profile ours alone.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fileipc::MessageQueue;
use fileipc_bench::measure::{Child, wait_go};
use fileipc_bench::sys;

fn role(args: &[String]) {
    let target = &args[2];
    let n: u64 = args[3].parse().unwrap();
    let size: usize = args[4].parse().unwrap();
    let msg = vec![7u8; size];
    match args[1].as_str() {
        "q-prod" => {
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            for _ in 0..n {
                q.send(&msg).unwrap();
            }
        }
        "q-cons" => {
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            for _ in 0..n {
                let m = q.recv_forever().unwrap();
                assert_eq!(m.len(), size);
            }
        }
        "mq-prod" => {
            let q = sys::Mq::open(target, 10, size).unwrap();
            wait_go();
            for _ in 0..n {
                q.send(&msg).unwrap();
            }
        }
        "mq-cons" => {
            let q = sys::Mq::open(target, 10, size).unwrap();
            wait_go();
            let mut b = Vec::with_capacity(size);
            for _ in 0..n {
                q.recv(&mut b).unwrap();
            }
        }
        "pipe-prod" => {
            let mut f = File::options().write(true).open(target).unwrap();
            wait_go();
            for _ in 0..n {
                f.write_all(&msg).unwrap();
            }
        }
        "pipe-cons" => {
            let mut f = File::open(target).unwrap();
            wait_go();
            let mut b = vec![0u8; size];
            for _ in 0..n {
                f.read_exact(&mut b).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts `p` producers and `c` consumers of `role`, waits until all are ready (a FIFO's
/// opens block until both ends are open, so none is waited for before all are started),
/// says go, and times until all exit.
fn timed(role: &str, target: &str, n: u64, size: usize, p: u64, c: u64) -> Duration {
    let child = |side: &str, count: u64| {
        let (role, n, size) = (
            format!("{role}-{side}"),
            (n / count).to_string(),
            size.to_string(),
        );
        Child::spawn(&[&role, target, &n, &size])
    };
    let mut kids: Vec<Child> = (0..c).map(|_| child("cons", c)).collect();
    kids.extend((0..p).map(|_| child("prod", p)));
    for k in &mut kids {
        k.expect("ready");
    }
    let t = Instant::now();
    for k in &mut kids {
        k.go();
    }
    for k in &mut kids {
        k.wait_success();
    }
    t.elapsed()
}

/// Runs `role` and formats its rate and CPU time per message.
fn measure(role: &str, target: &str, n: u64, size: usize, p: u64, c: u64) -> (f64, String) {
    let cpu = sys::cpu_children_ns();
    let d = timed(role, target, n, size, p, c);
    let per = (sys::cpu_children_ns() - cpu) as f64 / n as f64;
    let v = n as f64 / d.as_secs_f64();
    (v, format!("{:.0}k ({per:.0} ns cpu/msg)", v / 1e3))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1].contains('-') {
        return role(&args);
    }
    let size: usize = args[1].parse().unwrap();
    let p: u64 = args[2].parse().unwrap();
    let c: u64 = args[3].parse().unwrap();
    let n: u64 = args[4].parse().unwrap();
    let rounds: usize = args.get(5).map_or(3, |r| r.parse().unwrap());
    let dir = args
        .get(6)
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("bigmsg-bench-{}", std::process::id()));
    let which = args.get(7).map_or("all", String::as_str);
    std::fs::create_dir_all(&dir).unwrap();
    let n = n / (p * c) * (p * c);
    for r in 0..rounds {
        let mut line = format!("size {size} {p}p{c}c n {n} round {r}:");
        let mut ours = None;
        if which == "all" || which == "ours" {
            let q = dir.join(format!("q{r}"));
            let qs = q.to_str().unwrap().to_owned();
            drop(MessageQueue::open(&q).unwrap());
            let (v, f) = measure("q", &qs, n, size, p, c);
            let _ = std::fs::remove_dir_all(&q);
            line += &format!(" ours {f}");
            ours = Some(v);
        }
        if which == "all" || which == "mq" {
            let name = format!("/bigmsg-bench-{}-{r}", std::process::id());
            let (v, f) = measure("mq", &name, n, size, p, c);
            sys::Mq::unlink(&name);
            line += &format!(" mq {f}");
            if let Some(o) = ours {
                line += &format!(" ({:.2}x)", o / v);
            }
        }
        if which == "all" || which == "pipe" {
            let fifo = dir.join(format!("fifo{r}"));
            sys::mkfifo(&fifo).unwrap();
            let (v, f) = measure("pipe", fifo.to_str().unwrap(), n, size, p, c);
            let _ = std::fs::remove_file(&fifo);
            line += &format!(" pipe {f}");
            if let Some(o) = ours {
                line += &format!(" ({:.2}x)", o / v);
            }
        }
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
