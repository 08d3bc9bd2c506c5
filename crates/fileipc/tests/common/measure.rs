//! The clock of the cross-process timing tests.

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
