//! Time: clocks every process of the machine reads alike, and the time left to a deadline.

use std::time::{Duration, Instant};

/// Time left until `deadline`, `None` meaning "no deadline"; zero once it has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Milliseconds of `CLOCK_MONOTONIC`, a clock every process of the machine reads the same
/// way (unlike [`Instant`], whose value cannot be shared), so a deadline stored in a
/// shared mapping means the same moment to all of them. Wraps after 49 days; compare
/// values with wrapping arithmetic only.
pub(crate) fn monotonic_millis() -> u32 {
    monotonic_in(1000)
}

/// Microseconds of the system-wide monotonic clock (`CLOCK_MONOTONIC`), the same in
/// every process of the machine, modulo 2^32 (compare with `wrapping_sub`).
pub(crate) fn monotonic_micros() -> u32 {
    monotonic_in(1_000_000)
}

/// `CLOCK_MONOTONIC` in units of 1/`per_second` s, modulo 2^32.
fn monotonic_in(per_second: u64) -> u32 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let units = (ts.tv_sec as u64)
        .wrapping_mul(per_second)
        .wrapping_add(ts.tv_nsec as u64 / (1_000_000_000 / per_second));
    units as u32
}

/// Nanoseconds since boot, the same in every process of the machine: `CLOCK_BOOTTIME`
/// on Linux (it keeps counting while the machine is suspended, so a lease stored as a
/// deadline on it expires when it should), `CLOCK_MONOTONIC` elsewhere. For deadlines
/// stored in shared mappings.
pub(crate) fn boot_nanos() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let clock = rustix::time::ClockId::Boottime;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let clock = rustix::time::ClockId::Monotonic;
    let ts = rustix::time::clock_gettime(clock);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
