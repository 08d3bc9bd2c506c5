//! MessageQueue throughput and latency beside a POSIX message queue, in one run.
//!
//! ```text
//! cargo run --release -p fileipc-bench --example queue_bench [-- MESSAGES [RUNS]]
//! ```
//!
//! Every figure is between real processes (this program runs itself again in a role):
//! 1 producer / 1 consumer throughput with 64-byte messages (also through the batch calls
//! `send_all` / `recv_many`, which `fileipc bench` does not measure), ping-pong round trip
//! through two queues, and 4 producers / 4 consumers aggregate throughput, measured
//! between two 1P/1C runs. Each run measures every figure beside its baseline (the
//! machine drifts between runs); the summary gives the medians over RUNS runs (default
//! 3). The POSIX queues hold at most 10 messages of 64 bytes (the default `msg_max` an
//! unprivileged user gets: `/proc/sys/fs/mqueue/msg_max`).

use std::time::{Duration, Instant};

use fileipc::MessageQueue;
use fileipc_bench::measure::{Child, wait_go};
use fileipc_bench::sys;

const MSG: usize = 64;

// --- POSIX mq (baseline) ------------------------------------------------------------

/// A POSIX message queue of at most 10 messages of `MSG` bytes.
struct Mq(sys::Mq);

impl Mq {
    /// Opens the queue `name`, creating it if missing.
    fn open(name: &str) -> Mq {
        Mq(sys::Mq::open(name, 10, MSG).unwrap_or_else(|e| panic!("mq_open {name}: {e}")))
    }

    fn unlink(name: &str) {
        sys::Mq::unlink(name);
    }

    fn send(&self, buf: &[u8]) {
        self.0.send(buf).expect("mq_send");
    }

    fn recv(&self, buf: &mut Vec<u8>) -> usize {
        self.0.recv(buf).expect("mq_receive");
        buf.len()
    }
}

// --- roles --------------------------------------------------------------------------

fn role(args: &[String]) {
    let n: u64 = args[3].parse().unwrap();
    let target = &args[2];
    let msg = [7u8; MSG];
    match args[1].as_str() {
        "mq-prod" => {
            let q = Mq::open(target);
            wait_go();
            for _ in 0..n {
                q.send(&msg);
            }
        }
        "mq-cons" => {
            let q = Mq::open(target);
            wait_go();
            let mut b = Vec::with_capacity(MSG);
            for _ in 0..n {
                q.recv(&mut b);
            }
        }
        "mq-echo" => {
            let a = Mq::open(&format!("{target}a"));
            let b = Mq::open(&format!("{target}b"));
            wait_go();
            let mut buf = Vec::with_capacity(MSG);
            for _ in 0..n {
                let k = a.recv(&mut buf);
                b.send(&buf[..k]);
            }
        }
        "q-prod" => {
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            for _ in 0..n {
                q.send(msg).unwrap();
            }
        }
        "q-prod-batch" => {
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            let mut left = n;
            while left > 0 {
                let k = left.min(64);
                q.send_all((0..k).map(|_| msg)).unwrap();
                left -= k;
            }
        }
        "q-cons" => {
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            for _ in 0..n {
                let _ = q.recv_forever().unwrap();
            }
        }
        "q-cons-batch" => {
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            let mut got = 0;
            while got < n {
                got += q
                    .recv_many((n - got).min(64) as usize, Duration::from_secs(60))
                    .unwrap()
                    .len() as u64;
            }
        }
        "q-cons-any" => {
            // Receives until an empty STOP message.
            let q = MessageQueue::open(target).unwrap();
            wait_go();
            while !q.recv_forever().unwrap().is_empty() {}
        }
        "q-echo" => {
            let a = MessageQueue::open(format!("{target}/a")).unwrap();
            let b = MessageQueue::open(format!("{target}/b")).unwrap();
            wait_go();
            for _ in 0..n {
                let m = a.recv_forever().unwrap();
                b.send(&m).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// This program in `role` on `target`, started and ready (waiting for its go).
fn spawn(role: &str, target: &str, n: u64) -> Child {
    let mut child = Child::spawn(&[role, target, &n.to_string()]);
    child.expect("ready");
    child
}

/// Runs the given children (started and ready), says go to all, and times until all exit.
fn timed(mut kids: Vec<Child>, after_go: impl FnOnce()) -> Duration {
    let t = Instant::now();
    for k in &mut kids {
        k.go();
    }
    after_go();
    for k in &mut kids {
        k.wait_success();
    }
    t.elapsed()
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64() / 1e6
}

/// Queue 1P/1C throughput (M msg/s) through a new queue in `d`.
fn q11_rate(n: u64, d: &str) -> f64 {
    MessageQueue::open(d).unwrap();
    rate(
        n,
        timed(vec![spawn("q-cons", d, n), spawn("q-prod", d, n)], || {}),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One round's figures (rates in M msg/s, round trips in us); NaN for a skipped section.
#[derive(Clone, Copy)]
struct Round {
    mq11: f64,
    q11: f64,
    q11b: f64,
    mq_rtt: f64,
    q_rtt: f64,
    mq44: f64,
    q44: f64,
    /// Queue 1P/1C measured right before and right after the 4P/4C run (mean), so that
    /// the ratio of the two sees the same machine load.
    q11_ref: f64,
}

fn one_round(
    n: u64,
    rounds: u64,
    tmp: &std::path::Path,
    mqname: &str,
    run: &dyn Fn(&str) -> bool,
) -> Round {
    let dir = |name: &str| {
        let p = tmp.join(name);
        let _ = std::fs::remove_dir_all(&p);
        p.to_string_lossy().into_owned()
    };
    let mut r = Round {
        mq11: f64::NAN,
        q11: f64::NAN,
        q11b: f64::NAN,
        mq_rtt: f64::NAN,
        q_rtt: f64::NAN,
        mq44: f64::NAN,
        q44: f64::NAN,
        q11_ref: f64::NAN,
    };
    if run("11") {
        // 1P/1C throughput.
        Mq::unlink(mqname);
        let keep = Mq::open(mqname);
        r.mq11 = rate(
            n,
            timed(
                vec![spawn("mq-cons", mqname, n), spawn("mq-prod", mqname, n)],
                || {},
            ),
        );
        drop(keep);
        Mq::unlink(mqname);
        r.q11 = q11_rate(n, &dir("q11"));
        let d = dir("q11b");
        MessageQueue::open(&d).unwrap();
        r.q11b = rate(
            n,
            timed(
                vec![spawn("q-cons-batch", &d, n), spawn("q-prod-batch", &d, n)],
                || {},
            ),
        );
        println!(
            "  1P/1C throughput   POSIX mq {:6.3} M msg/s | queue send/recv {:6.3} M msg/s ({:.2}x) | send_all/recv_many(64) {:6.3} M msg/s ({:.2}x)",
            r.mq11,
            r.q11,
            r.q11 / r.mq11,
            r.q11b,
            r.q11b / r.mq11
        );
    }

    if run("pp") {
        // Ping-pong round trip.
        let (a, b) = (format!("{mqname}a"), format!("{mqname}b"));
        Mq::unlink(&a);
        Mq::unlink(&b);
        let (qa, qb) = (Mq::open(&a), Mq::open(&b));
        let echo = spawn("mq-echo", mqname, rounds);
        let mut buf = Vec::with_capacity(MSG);
        let mq_rtt = timed(vec![echo], || {
            for _ in 0..rounds {
                qa.send(&[1u8; MSG]);
                qb.recv(&mut buf);
            }
        }) / rounds as u32;
        drop((qa, qb));
        Mq::unlink(&a);
        Mq::unlink(&b);
        let d = dir("pp");
        std::fs::create_dir(&d).unwrap();
        let (qa, qb) = (
            MessageQueue::open(format!("{d}/a")).unwrap(),
            MessageQueue::open(format!("{d}/b")).unwrap(),
        );
        let echo = spawn("q-echo", &d, rounds);
        let q_rtt = timed(vec![echo], || {
            for _ in 0..rounds {
                qa.send([1u8; MSG]).unwrap();
                let _ = qb.recv_forever().unwrap();
            }
        }) / rounds as u32;
        r.mq_rtt = mq_rtt.as_secs_f64() * 1e6;
        r.q_rtt = q_rtt.as_secs_f64() * 1e6;
        println!(
            "  ping-pong RTT      POSIX mq {:6.2} us       | queue {:6.2} us ({:.2}x)",
            r.mq_rtt,
            r.q_rtt,
            r.q_rtt / r.mq_rtt
        );
    }

    if run("44") {
        // 4P/4C aggregate, between two queue 1P/1C runs (A B A): the machine's load
        // drifts within seconds, and the goal compares these two.
        let per = n / 4;
        let q11_before = q11_rate(n, &dir("q11r1"));
        let d = dir("q44");
        let q = MessageQueue::open(&d).unwrap();
        let mut cons: Vec<Child> = (0..4).map(|_| spawn("q-cons-any", &d, 0)).collect();
        let mut prods: Vec<Child> = (0..4).map(|_| spawn("q-prod", &d, per)).collect();
        let t = Instant::now();
        for k in cons.iter_mut().chain(prods.iter_mut()) {
            k.go();
        }
        for k in &mut prods {
            k.wait_success();
        }
        q.send_all([[0u8; 0]; 4]).unwrap();
        for k in &mut cons {
            k.wait_success();
        }
        r.q44 = rate(4 * per, t.elapsed());
        let q11_after = q11_rate(n, &dir("q11r2"));
        r.q11_ref = (q11_before + q11_after) / 2.0;
        Mq::unlink(mqname);
        let keep = Mq::open(mqname);
        let mut kids: Vec<Child> = (0..4).map(|_| spawn("mq-cons", mqname, per)).collect();
        kids.extend((0..4).map(|_| spawn("mq-prod", mqname, per)));
        r.mq44 = rate(4 * per, timed(kids, || {}));
        drop(keep);
        Mq::unlink(mqname);
        println!(
            "  4P/4C aggregate    POSIX mq {:6.3} M msg/s | queue {:6.3} M msg/s ({:.2}x of queue 1P/1C run just before and after: {q11_before:.3}, {q11_after:.3}; {:.2}x of POSIX mq 4P/4C)",
            r.mq44,
            r.q44,
            r.q44 / r.q11_ref,
            r.q44 / r.mq44
        );
    }
    r
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 {
        return role(&args);
    }
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let rounds = (n / 10).max(1000);
    let tmp = tempfile::Builder::new()
        .prefix("queue-bench-")
        .tempdir()
        .unwrap();
    let mqname = format!("/fileipc-bench-{}", std::process::id());
    println!(
        "fileipc MessageQueue vs POSIX mq, 64-byte messages, {n} messages, {rounds} ping-pong rounds, {reps} runs"
    );
    // QUEUE_BENCH_ONLY=11|pp|44 runs one section.
    let only = std::env::var("QUEUE_BENCH_ONLY").unwrap_or_default();
    let run = |s: &str| only.is_empty() || only == s;
    // Other users of the machine change every figure: say how busy it was.
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into())
    };
    println!("load average before: {}", load());
    let mut all = Vec::new();
    for i in 0..reps {
        println!("run {}:", i + 1);
        all.push(one_round(n, rounds, tmp.path(), &mqname, &run));
    }
    let med = |f: &dyn Fn(&Round) -> f64| median(&mut all.iter().map(f).collect::<Vec<_>>());
    println!("load average after: {}", load());
    println!("medians of {reps} runs (ratios: median of the per-run ratios):");
    if run("11") {
        println!(
            "1P/1C throughput   POSIX mq {:6.3} M msg/s | queue {:6.3} M msg/s | ratio {:.2}x (goal >= 2) | batched ratio {:.2}x",
            med(&|r| r.mq11),
            med(&|r| r.q11),
            med(&|r| r.q11 / r.mq11),
            med(&|r| r.q11b / r.mq11)
        );
    }
    if run("pp") {
        println!(
            "ping-pong RTT      POSIX mq {:6.2} us       | queue {:6.2} us       | ratio {:.2}x (goal <= 1.5)",
            med(&|r| r.mq_rtt),
            med(&|r| r.q_rtt),
            med(&|r| r.q_rtt / r.mq_rtt)
        );
    }
    if run("44") {
        println!(
            "4P/4C aggregate    POSIX mq {:6.3} M msg/s | queue {:6.3} M msg/s | {:.2}x of queue 1P/1C around it (goal >= 1) | {:.2}x of POSIX mq 4P/4C",
            med(&|r| r.mq44),
            med(&|r| r.q44),
            med(&|r| r.q44 / r.q11_ref),
            med(&|r| r.q44 / r.mq44)
        );
    }
}
