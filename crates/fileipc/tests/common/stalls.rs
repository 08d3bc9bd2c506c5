//! Stalls of the machine itself, for the tests that time wake-ups.
//!
//! On a virtual machine the host can leave a virtual CPU unscheduled for milliseconds:
//! a thread woken there neither runs nor waits in the guest's run queue, and the guest
//! counts the time as sleep. A [`StallProbe`] runs one thread pinned to each CPU, at
//! real-time priority where allowed (`SCHED_FIFO`: nothing in the guest runs before it),
//! sleeping 100 us at a time; a sleep that ends late by more than [`MIN_STALL`] records
//! the stretch as a stall of that CPU. On the 2-vCPU test machine, idle, the probe saw 19
//! stalls of 5-9.4 ms per minute.
//!
//! A late wake-up is excused only by the time a stall of the CPU it finally ran on
//! overlaps it ([`Stalls::overlap`]): a wake-up our code lost still shows, unless the
//! host happened to stall that same CPU for most of the same milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::measure::mono_ns;

/// How long each probe sleeps.
const TICK: Duration = Duration::from_micros(100);
/// Lateness of a probe's wake-up recorded as a stall.
pub const MIN_STALL: Duration = Duration::from_micros(500);

/// One stall: the CPU, and the stretch (monotonic ns) its probe should have run in.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub cpu: usize,
    pub from: u64,
    pub to: u64,
}

/// The probe threads while they run.
pub struct StallProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Vec<Stall>, bool)>>,
}

/// What a probe saw.
#[derive(Debug)]
pub struct Stalls {
    pub stalls: Vec<Stall>,
    /// Whether every probe ran at real-time priority (otherwise a busy guest delays
    /// the probes too, and they also report guest run-queue waits).
    pub realtime: bool,
}

impl StallProbe {
    /// Starts one probe per CPU this process may run on.
    pub fn start() -> StallProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let allowed = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
        let threads = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| allowed.is_set(cpu))
            .map(|cpu| {
                let stop = stop.clone();
                std::thread::spawn(move || probe(cpu, &stop))
            })
            .collect();
        StallProbe { stop, threads }
    }

    /// Stops the probes and returns their stalls.
    pub fn finish(self) -> Stalls {
        self.stop.store(true, Ordering::SeqCst);
        let mut stalls = Vec::new();
        let mut realtime = true;
        for t in self.threads {
            let (s, rt) = t.join().expect("stall probe panicked");
            stalls.extend(s);
            realtime &= rt;
        }
        Stalls { stalls, realtime }
    }
}

impl Stalls {
    /// Nanoseconds of `[from, to]` that stalls of `cpu` cover.
    pub fn overlap(&self, cpu: usize, from: u64, to: u64) -> u64 {
        self.stalls
            .iter()
            .filter(|s| s.cpu == cpu)
            .map(|s| to.min(s.to).saturating_sub(from.max(s.from)))
            .sum()
    }

    /// The longest stall, in nanoseconds (0 if none).
    pub fn longest(&self) -> u64 {
        self.stalls.iter().map(|s| s.to - s.from).max().unwrap_or(0)
    }
}

#[allow(unsafe_code)]
fn probe(cpu: usize, stop: &AtomicBool) -> (Vec<Stall>, bool) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("pinning a stall probe");
    let param = nix::libc::sched_param { sched_priority: 1 };
    // SAFETY: `sched_setscheduler` reads the `sched_param` we pass by reference, which
    // lives across the call; pid 0 is the calling thread. It fails without privilege,
    // which we report instead of acting on.
    let realtime = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_FIFO, &param) } == 0;
    let tick = TICK.as_nanos() as u64;
    let min = MIN_STALL.as_nanos() as u64;
    let mut stalls = Vec::new();
    let mut before = mono_ns();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = mono_ns();
        if now - before > tick + min {
            stalls.push(Stall {
                cpu,
                from: before + tick,
                to: now,
            });
        }
        before = now;
    }
    (stalls, realtime)
}
