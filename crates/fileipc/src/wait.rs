//! The one waiting core: how every primitive spins, yields, sleeps and wakes.
//!
//! Each primitive keeps its own protocol (which shared word it sleeps on, what "ready"
//! means, who wakes whom) and, next to that protocol, the argument that no wake-up is
//! lost. This module holds the mechanics they share, so that there is one spin loop and
//! one sleep to get right:
//!
//! - [`Spinner`]: the short busy phase before a sleep, in one of three [`Spin`] shapes;
//! - [`sleep`]: one bounded sleep on a shared word, which ends when the word no longer
//!   holds the value the caller saw, when it is woken, at the end of the slice computed
//!   by [`slice_end`], or spuriously;
//! - [`wake`], [`wake_all`]: wake sleepers of a shared word;
//! - [`CountedBell`]: the doorbell of the mutex and the semaphore, a sequence word that
//!   every release bumps and that is woken only when the waiter count says someone waits;
//! - [`yield_cpu`] and [`yield_while`]: give the CPU to another runnable thread;
//! - [`nap`]: a short sleep between polls of what cannot wake its waiters.
//!
//! # Slices
//!
//! A sleeper never sleeps longer than a slice: a party that died between publishing a
//! change and waking the sleepers cannot wake anyone, so the slice bounds the delay it
//! causes, and the sleeper re-checks (and, where the protocol has owners, reclaims what a
//! dead owner held). The slices, one per kind of sleeper:
//!
//! | constant | length | sleeper |
//! |---|---|---|
//! | [`LOCK_WORD_SLICE`] | 2 ms | waiters of a robust lock word (`robust.rs`) and of the queue's durable sync |
//! | [`WAITER_SLICE`] | 10 ms | mutex and semaphore waiters, SharedData owners waiting on the board |
//! | [`RECEIVER_SLICE`] | 50 ms | idle queue receivers (every send rings their doorbell) |
//!
//! The spinning before a sleep is described with each [`Spin`] shape; the primitives'
//! policies are constants next to their protocols.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// How long a waiter of a robust lock word sleeps before it checks whether the holder
/// died. A holder's critical section is a few hundred nanoseconds; a slice this long
/// passing with the same holder means it was preempted for long or killed.
pub(crate) const LOCK_WORD_SLICE: Duration = Duration::from_millis(2);

/// How long a mutex or semaphore waiter, or a SharedData owner waiting on its board
/// slot, sleeps before it looks again on its own. Every release rings the sleepers, so
/// the slice only matters when a holder was killed between its release and the ring.
pub(crate) const WAITER_SLICE: Duration = Duration::from_millis(10);

/// How long a sleeping queue receiver waits before re-checking the queue on its own. A
/// send rings the doorbell, so this only bounds the delay after a sender was killed
/// between publishing a message and ringing.
pub(crate) const RECEIVER_SLICE: Duration = Duration::from_millis(50);

/// The end of the next sleep of a waiter whose deadline is `deadline` (`None`: without
/// limit): a slice from now, or the deadline if that comes first.
pub(crate) fn slice_end(deadline: Option<Instant>, slice: Duration) -> Instant {
    let end = Instant::now() + slice;
    match deadline {
        Some(d) if d < end => d,
        _ => end,
    }
}

/// Sleeps while `word` holds `seen`, until `until` at the latest. Returns early when
/// woken, when the word changed before the sleep began (the kernel compares atomically
/// with queueing the sleeper), or spuriously: callers re-check their condition.
pub(crate) fn sleep(word: &AtomicU32, seen: u32, until: Instant) -> io::Result<()> {
    sys::futex_wait(word, seen, Some(until))
}

/// Wakes at most `n` sleepers of `word`; returns how many were woken where the backend
/// knows (the portable backend's sleepers poll, so it reports 0).
pub(crate) fn wake(word: &AtomicU32, n: u32) -> io::Result<usize> {
    sys::futex_wake(word, n)
}

/// Wakes every sleeper of `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> io::Result<usize> {
    sys::futex_wake(word, u32::MAX)
}

/// Gives the CPU to another runnable thread, if there is one (`sched_yield`): for a
/// thread that just made another's progress possible and shares its CPU. Returns
/// whether it yielded: not while this thread's yields are off.
///
/// [`LOST_IN_A_ROW`] yields in a row that each kept the CPU away for [`YIELD_LOST`] or
/// more turn this thread's yields off for [`YIELDS_OFF`]: the CPU went to a CPU-bound
/// process for its slice, and with one runnable, a yielding thread counts as having
/// run, so the scheduler (EEVDF) lets it finish that slice (milliseconds) before the
/// yielder runs again, while a thread woken from a sleep preempts it. Yields that come
/// back at once (nobody else wanted the CPU) or soon (a partner sharing the CPU ran)
/// keep them on.
pub(crate) fn yield_cpu() -> bool {
    let now = Instant::now();
    let (lost, off_until) = YIELDS.with(Cell::get);
    if off_until.is_some_and(|u| now < u) {
        return false;
    }
    std::thread::yield_now();
    let after = Instant::now();
    let lost = if after.duration_since(now) >= YIELD_LOST {
        lost + 1
    } else {
        0
    };
    YIELDS.with(|y| {
        y.set(if lost >= LOST_IN_A_ROW {
            (0, Some(after + YIELDS_OFF))
        } else {
            (lost, None)
        })
    });
    true
}

/// How many lost yields in a row turn yields off: one now and then also happens when
/// the CPU went to a partner with a long turn (a combiner's transaction).
const LOST_IN_A_ROW: u32 = 3;

/// A yield that kept the CPU away this long gave it to a CPU-bound process for its
/// slice: long against a partner's turnaround or a cross-CPU wake-up (~45 us on the
/// reference machine), short against a slice (0.75-3 ms).
const YIELD_LOST: Duration = Duration::from_micros(200);

/// How long a thread whose yields were lost ([`LOST_IN_A_ROW`]) does not yield in
/// [`yield_cpu`] and [`Spin::Timed`]. Trying again after that costs at most a few more
/// lost slices, a few percent of this.
const YIELDS_OFF: Duration = Duration::from_millis(100);

thread_local! {
    /// This thread's lost yields in a row, and until when its yields are off.
    static YIELDS: Cell<(u32, Option<Instant>)> = const { Cell::new((0, None)) };
}

/// Yields the CPU while `busy()` holds, for `limit` at most: a short wait for other
/// threads' progress that is not worth a sleep and a wake-up.
pub(crate) fn yield_while(limit: Duration, mut busy: impl FnMut() -> bool) {
    let start = Instant::now();
    while busy() && start.elapsed() < limit {
        std::thread::yield_now();
    }
}

/// Sleeps for `d`: the pause between two polls of something that has no wake-up, such
/// as a `flock` taken without blocking (the semaphore's critical section).
pub(crate) fn nap(d: Duration) {
    std::thread::sleep(d);
}

/// The shape of a waiter's busy phase before it sleeps (see [`Spinner`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Spin {
    /// `checks` checks two pauses apart, then `yields` checks a yield apart. For a word
    /// whose holder, when it runs, leaves within a microsecond (a pause is 10-140 cycles
    /// depending on the CPU), but may be preempted waiting for the waiter's CPU.
    Counted { checks: u32, yields: u32 },
    /// Checks a pause apart for `limit`, yielding instead of pausing at every
    /// `yield_every`-th check, so that a spinner sharing its CPU lets the thread it
    /// waits for run; gives up at once while this thread's yields are off (see
    /// [`yield_cpu`]).
    Timed { limit: Duration, yield_every: u32 },
    /// Checks a pause apart for this thread's learned budget ([`Budget`]), `limit` at
    /// most, then gives up: never yields. The clock is read at the first and every 64th
    /// check. The budget learns from how each wait ended (see [`Spinner::finish`]).
    ///
    /// For a waiter whose partner may run on another CPU, or may not run at all for a
    /// while (CPU-bound processes beside it). A yield is worse than a sleep there: with
    /// a runnable process on its CPU, a yielding thread counts as having run, and the
    /// scheduler (EEVDF) lets that process finish its slice (milliseconds) before the
    /// spinner runs again, even once its partner's message is there; a thread woken from
    /// a sleep preempts it instead. Spinning long is no better: the spinner holds a CPU
    /// its partner waits for. Measured on 2 vCPUs with two busy loops beside a
    /// ping-pong: 0.4-1.8 ms per round trip with yields, 75-170 us with spins that
    /// learned to last up to 50 us, 10-44 us with these. The price is on an idle
    /// machine: a partner whose answer takes longer than the budget (a wake-up) makes
    /// both sides sleep on every message (30 us per round trip with the benchmark at
    /// real-time priority, 2.7 us with yields; POSIX mq 35 us).
    Adaptive { limit: Duration },
}

/// The busy phase of one wait. Callers check their condition, then call
/// [`step`](Spinner::step) until it returns `false`, then sleep:
///
/// ```ignore
/// let mut spin = Spinner::new(POLICY);
/// while !ready() {
///     if !spin.step(deadline) {
///         break; // sleep now
///     }
/// }
/// spin.finish();
/// ```
#[derive(Debug)]
pub(crate) struct Spinner {
    spin: Spin,
    i: u32,
    start: Instant,
    /// For [`Spin::Adaptive`]: the pause budget in nanoseconds, read at the start.
    budget_ns: u32,
    /// For [`Spin::Adaptive`]: whether the busy phase ran out (the wait did not end
    /// while spinning).
    gave_up: bool,
}

impl Spinner {
    /// Starts a busy phase of shape `spin`.
    #[inline]
    pub(crate) fn new(spin: Spin) -> Spinner {
        let budget_ns = match spin {
            Spin::Adaptive { .. } => BUDGET.with(Budget::get),
            _ => 0,
        };
        Spinner {
            spin,
            i: 0,
            start: Instant::now(),
            budget_ns,
            gave_up: false,
        }
    }

    /// Waits a moment (a pause or a yield) before the caller's next check. `false`: the
    /// busy phase is over (its amount spent, or `deadline` passed where the shape reads
    /// the clock); the caller sleeps or gives up instead.
    #[inline]
    pub(crate) fn step(&mut self, deadline: Option<Instant>) -> bool {
        self.i = self.i.wrapping_add(1);
        match self.spin {
            Spin::Counted { checks, yields } => {
                let i = self.i - 1;
                if i < checks {
                    std::hint::spin_loop();
                    std::hint::spin_loop();
                    true
                } else if i < checks + yields {
                    std::thread::yield_now();
                    true
                } else {
                    false
                }
            }
            Spin::Timed { limit, yield_every } => {
                let limit = match deadline {
                    Some(d) => limit.min(d.saturating_duration_since(self.start)),
                    None => limit,
                };
                if self.start.elapsed() >= limit {
                    return false;
                }
                if yield_every > 0 && self.i.is_multiple_of(yield_every) {
                    if !yield_cpu() {
                        // Yields are off (a recent one was lost to a CPU-bound
                        // process): spinning on would hold a CPU others wait for.
                        return false;
                    }
                } else {
                    std::hint::spin_loop();
                }
                true
            }
            Spin::Adaptive { limit } => {
                if self.i % 64 == 1 {
                    let now = Instant::now();
                    let spun = now.duration_since(self.start);
                    if spun >= limit
                        || spun.as_nanos() >= u128::from(self.budget_ns)
                        || deadline.is_some_and(|d| now >= d)
                    {
                        self.gave_up = true;
                        return false;
                    }
                }
                std::hint::spin_loop();
                true
            }
        }
    }

    /// Ends the busy phase, whether the condition became true or the phase ran out. For
    /// [`Spin::Adaptive`], teaches this thread's budget how it went.
    #[inline]
    pub(crate) fn finish(self) {
        if let Spin::Adaptive { .. } = self.spin {
            BUDGET.with(|b| b.learn(self.gave_up));
        }
    }
}

/// The most an adaptive spinner pauses, in nanoseconds: a few partner turnarounds of
/// a message on another CPU (under 1 us each when the partner runs), well under what a
/// sleep and a cross-CPU wake-up cost (~45 us on the reference machine).
const BUDGET_MAX: u32 = 5_000;

/// The least: an adaptive spinner always checks a little (64 pauses at least), so that
/// a budget that fell while its partner was idle or not running can learn again that
/// spinning pays.
const BUDGET_MIN: u32 = 500;

/// How long a thread's adaptive spinner pauses before it gives up and sleeps, learned
/// from its recent waits: doubled (up to [`BUDGET_MAX`]) by a wait that ended while
/// spinning, halved (down to [`BUDGET_MIN`]) by one that ran out. A partner running on
/// another CPU keeps it high; a partner that is idle, or does not run because the CPUs
/// are busy, brings it down within a few waits, so that the waiter sleeps almost at once
/// instead of taking a CPU from the processes that would run.
#[derive(Debug)]
struct Budget(Cell<u32>);

thread_local!(static BUDGET: Budget = const { Budget(Cell::new(BUDGET_MAX)) });

impl Budget {
    fn get(&self) -> u32 {
        self.0.get()
    }

    fn learn(&self, gave_up: bool) {
        let b = self.0.get();
        self.0.set(if gave_up {
            (b / 2).max(BUDGET_MIN)
        } else {
            b.saturating_mul(2).clamp(BUDGET_MIN, BUDGET_MAX)
        });
    }
}

/// A doorbell made of a sequence word that every release bumps and a count of
/// registered waiters: the mutex's and the semaphore's.
///
/// A waiter registers (`waiters += 1`), then in each round reads the sequence
/// ([`CountedBell::seen`]), tries its operation, and sleeps only while the sequence still
/// holds what it read ([`CountedBell::sleep`]). A releaser publishes its release, then
/// rings ([`CountedBell::ring`]): bumps the sequence and, only if a waiter is registered,
/// wakes. All accesses are sequentially consistent, so a waiter whose attempt failed
/// because of a release not yet published reads the sequence before the bump, and either
/// the kernel refuses its sleep (the sequence changed) or the ring that follows the bump
/// sees its registration and wakes it. The primitive's docs carry the full argument for
/// its own state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CountedBell<'a> {
    /// The sequence word, bumped by every ring.
    pub(crate) seq: &'a AtomicU32,
    /// How many waiters are registered.
    pub(crate) waiters: &'a AtomicU32,
}

impl CountedBell<'_> {
    /// The sequence, read before an attempt; a later [`sleep`](Self::sleep) with it
    /// returns at once if a ring came in between.
    pub(crate) fn seen(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Whether a ring came since [`seen`](Self::seen) returned `s`.
    pub(crate) fn rang_since(&self, s: u32) -> bool {
        self.seq.load(Ordering::SeqCst) != s
    }

    /// Bumps the sequence and, if a waiter is registered, wakes up to `n` sleepers.
    /// Returns whether a waiter was registered, and how many sleepers the kernel woke
    /// (`n` where the backend cannot tell, or the wake failed).
    pub(crate) fn ring(&self, n: u32) -> Option<usize> {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            Some(wake(self.seq, n).unwrap_or(n as usize))
        } else {
            None
        }
    }

    /// Sleeps while the sequence still holds `s`, until `until` at the latest.
    pub(crate) fn sleep(&self, s: u32, until: Instant) -> io::Result<()> {
        sleep(self.seq, s, until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_spin_gives_up_after_its_checks_and_yields() {
        let mut s = Spinner::new(Spin::Counted {
            checks: 3,
            yields: 2,
        });
        let steps = std::iter::from_fn(|| s.step(None).then_some(())).count();
        assert_eq!(steps, 5);
    }

    #[test]
    fn timed_spin_ends_at_the_deadline_before_its_limit() {
        let mut s = Spinner::new(Spin::Timed {
            limit: Duration::from_secs(10),
            yield_every: 4,
        });
        let deadline = Instant::now() + Duration::from_millis(5);
        let t0 = Instant::now();
        while s.step(Some(deadline)) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "spun past its deadline"
            );
        }
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn timed_spin_gives_up_at_its_first_yield_while_yields_are_off() {
        YIELDS.with(|y| y.set((0, Some(Instant::now() + Duration::from_secs(60)))));
        let mut s = Spinner::new(Spin::Timed {
            limit: Duration::from_secs(60),
            yield_every: 4,
        });
        let mut steps = 0;
        while s.step(None) {
            steps += 1;
            assert!(steps < 4, "spun on past a yield with yields off");
        }
        assert!(!yield_cpu(), "yielded with yields off");
        YIELDS.with(|y| y.set((0, None)));
        assert!(yield_cpu(), "did not yield with yields on");
    }

    #[test]
    fn adaptive_budget_halves_when_it_runs_out_and_doubles_when_it_pays() {
        let b = Budget(Cell::new(BUDGET_MAX));
        b.learn(true);
        assert_eq!(b.get(), BUDGET_MAX / 2);
        for _ in 0..20 {
            b.learn(true);
        }
        assert_eq!(b.get(), BUDGET_MIN);
        b.learn(false);
        assert_eq!(b.get(), 2 * BUDGET_MIN);
        for _ in 0..20 {
            b.learn(false);
        }
        assert_eq!(b.get(), BUDGET_MAX);
    }

    #[test]
    fn adaptive_spin_gives_up_after_its_budget() {
        let mut s = Spinner::new(Spin::Adaptive {
            limit: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        while s.step(None) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "spun past its budget"
            );
        }
        assert!(s.gave_up);
        s.finish();
    }

    #[test]
    fn slice_end_is_the_earlier_of_slice_and_deadline() {
        let soon = Instant::now() + Duration::from_millis(1);
        assert_eq!(slice_end(Some(soon), Duration::from_secs(1)), soon);
        let far = Instant::now() + Duration::from_secs(100);
        assert!(slice_end(Some(far), Duration::from_millis(1)) < far);
        assert!(
            slice_end(None, Duration::from_millis(1)) > Instant::now() - Duration::from_secs(1)
        );
    }

    #[test]
    fn counted_bell_wakes_only_when_a_waiter_is_registered() {
        let seq = AtomicU32::new(0);
        let waiters = AtomicU32::new(0);
        let bell = CountedBell {
            seq: &seq,
            waiters: &waiters,
        };
        let s = bell.seen();
        assert_eq!(bell.ring(1), None);
        assert!(bell.rang_since(s));
        waiters.store(1, Ordering::SeqCst);
        assert!(bell.ring(1).is_some());
        // A sleep on a stale value returns at once.
        let t0 = Instant::now();
        bell.sleep(s, Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(4));
    }
}
