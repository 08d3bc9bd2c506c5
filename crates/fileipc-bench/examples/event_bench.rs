//! Event set-to-wake latency across processes, beside a raw inotify create-to-wake
//! measured in the same run on the same file system, in `/tmp` and in `/dev/shm`
//! (400 rounds each, alternating ours and inotify, each round on a fresh name).
//! Printed, never asserted.
//!
//! ```text
//! cargo run --release -p fileipc-bench --example event_bench
//! ```
//!
//! `fileipc bench event` measures the same comparison on one `--dir`; the waiter here is
//! this program re-executed with the role `waiter`.

use std::path::Path;
use std::time::Duration;

use fileipc::Event;
use fileipc_bench::measure::{Child, PATIENCE, mono_ns, say};
use fileipc_bench::sys;

/// Alternates: even rounds wait with `Event::wait_forever`, odd rounds with a raw
/// blocking inotify read; each round on a fresh name, says the wake-up time.
fn waiter(args: &[String]) {
    let dir = Path::new(&args[0]);
    let rounds: usize = args[1].parse().unwrap();
    for i in 0..rounds {
        let name = format!("n{i}");
        if i % 2 == 0 {
            let e = Event::open(dir.join(&name)).unwrap();
            say("ready");
            e.wait_forever().unwrap();
            let t1 = mono_ns();
            say(t1);
        } else {
            let mut watch = sys::Inotify::watch_dir(dir).unwrap();
            say("ready");
            while !watch
                .read_names()
                .unwrap()
                .iter()
                .any(|n| n == name.as_bytes())
            {}
            let t1 = mono_ns();
            say(t1);
        }
    }
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn bench_on(base: &Path, rounds: usize) {
    let dir = tempfile::Builder::new()
        .prefix("fileipc-bench-")
        .tempdir_in(base)
        .unwrap();
    let mut child = Child::spawn(&["waiter", dir.path().to_str().unwrap(), &rounds.to_string()]);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let p = dir.path().join(format!("n{i}"));
        child.expect("ready");
        // Give the waiter time to fall asleep so the wake-up path is what is measured.
        std::thread::sleep(Duration::from_millis(2));
        let e = Event::open(&p).unwrap();
        let t0 = mono_ns();
        if i % 2 == 0 {
            e.set().unwrap();
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .unwrap();
        }
        let t1: u64 = child.expect_line(PATIENCE).parse().unwrap();
        let d = t1.saturating_sub(t0);
        if i % 2 == 0 {
            ours.push(d)
        } else {
            raw.push(d)
        }
    }
    child.wait_success();
    let (mo, mr) = (median(&mut ours), median(&mut raw));
    println!(
        "{}: Event set-to-wake median {:.1} us, raw inotify create-to-wake median {:.1} us, ratio {:.2} ({} rounds each)",
        base.display(),
        mo as f64 / 1e3,
        mr as f64 / 1e3,
        mo as f64 / mr as f64,
        ours.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("waiter") {
        return waiter(&args[1..]);
    }
    for base in ["/tmp", "/dev/shm"] {
        if Path::new(base).is_dir() {
            bench_on(Path::new(base), 400);
        }
    }
}
