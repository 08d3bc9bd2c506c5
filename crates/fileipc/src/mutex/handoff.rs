//! The mutex's hand-off word: the fairness rule and its pure logic.
//!
//! `flock` alone lets a process that unlocks and immediately locks again starve the
//! waiters (it is running, they still have to be scheduled). So an unlock that sees
//! waiters posts a *hand-off* in the mapping: a mark naming the doorbell sequence number
//! at the unlock and a deadline [`HANDOFF_TTL`] (10 ms) ahead. While it is pending, only
//! waiters that registered before it was posted may take the lock; anyone else queues up
//! behind them. The taker clears the mark. A hand-off that nobody takes (the woken waiter
//! died or was stopped) expires at its deadline, one that no process sleeps for is
//! withdrawn at once, and a waiter that gives up while it could take one withdraws it and
//! rings the doorbell, so nothing stalls on it (`local.rs` posts, takes and withdraws).
//!
//! A strict hand-off on every unlock costs a context switch per grant under contention,
//! so an unlock posts one only when a *fair unlock* is due ([`fair_due`]), parking_lot's
//! eventual fairness: at most [`FAIR_INTERVAL_US`] (0.5 ms) after the previous fair one.
//! Other unlocks let the lock be barged (the unlocker or any running locker may take it
//! again at once) and only wake one sleeper, which retries and sleeps again if it lost.
//! A waiter therefore waits at most about one fair interval per waiter registered before
//! it, while a running holder keeps the lock hot between fair unlocks.
//!
//! The word: 0 = no hand-off. Otherwise bits 63..32 hold the doorbell sequence number
//! read by the unlocker before it rang, bit 31 is set, and bits 30..0 hold the deadline
//! in milliseconds of the shared monotonic clock, modulo 2^31.

use std::time::Duration;

use crate::sys;

/// How long a posted hand-off stays reserved for the waiters it was posted for, in
/// milliseconds.
pub(super) const HANDOFF_TTL_MS: u32 = 10;

/// [`HANDOFF_TTL_MS`] as a duration, for the documentation.
#[allow(dead_code)]
pub(super) const HANDOFF_TTL: Duration = Duration::from_millis(HANDOFF_TTL_MS as u64);

const MS_MASK: u32 = 0x7fff_ffff;

/// The longest time between two fair unlocks while waiters are registered, in
/// microseconds of the shared monotonic clock.
pub(super) const FAIR_INTERVAL_US: u32 = 500;

/// Whether an unlock at `now_us` (microseconds of the shared monotonic clock, modulo 2^32)
/// must be fair, given `fair_at`, the time the next fair unlock is due. A due time in the
/// past is due; one further ahead than [`FAIR_INTERVAL_US`] (plus a margin for processes
/// that read the clock a moment apart) is garbage (a damaged word, a clock restarted by a
/// reboot) and due too, so that no word can put fairness off for long.
pub(super) fn fair_due(fair_at: u32, now_us: u32) -> bool {
    let ahead = fair_at.wrapping_sub(now_us);
    ahead == 0 || ahead > 2 * FAIR_INTERVAL_US
}

/// The word of a hand-off posted when the doorbell read `seq`, expiring at
/// `deadline_ms` of the shared monotonic clock.
pub(super) fn encode(seq: u32, deadline_ms: u32) -> u64 {
    (u64::from(seq) << 32) | 0x8000_0000 | u64::from(deadline_ms & MS_MASK)
}

/// The doorbell sequence number hand-off `h` was posted at.
fn seq(h: u64) -> u32 {
    (h >> 32) as u32
}

/// Whether the hand-off `h` has expired at `now_ms` (same clock, any wrap).
///
/// A hand-off is posted with a deadline [`HANDOFF_TTL_MS`] + 1 ms ahead, so a deadline
/// reached, in the past, or further ahead than that (plus a margin for processes that
/// read the clock a moment apart) has expired: a garbage word, or one left by a machine
/// that crashed and rebooted (the monotonic clock restarts), bars nobody for long.
fn expired(h: u64, now_ms: u32) -> bool {
    let deadline = (h as u32) & MS_MASK;
    let ahead = deadline.wrapping_sub(now_ms) & MS_MASK;
    ahead == 0 || ahead > 2 * HANDOFF_TTL_MS + 1
}

/// Whether a waiter that registered when the doorbell read `reg` may take hand-off `h`:
/// it registered before the hand-off was posted (sequence numbers compared modulo 2^32).
pub(super) fn eligible(reg: u32, h: u64) -> bool {
    seq(h).wrapping_sub(reg) as i32 >= 0
}

/// Whether the pending hand-off `h` keeps out a locker registered at `reg` (`None`: not
/// a registered waiter).
pub(super) fn bars(h: u64, reg: Option<u32>) -> bool {
    h != 0 && !reg.is_some_and(|r| eligible(r, h)) && !expired(h, sys::monotonic_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_word_round_trips() {
        let h = encode(0xdead_beef, 1234);
        assert_ne!(h, 0);
        assert_eq!(seq(h), 0xdead_beef);
        // A zero sequence number and a zero deadline still make a pending hand-off.
        assert_ne!(encode(0, 0), 0);
    }

    #[test]
    fn handoff_expiry_wraps() {
        let h = encode(1, 100);
        assert!(!expired(h, 90));
        assert!(expired(h, 100));
        assert!(expired(h, 5000));
        // Deadline just after the 31-bit clock wraps.
        let h = encode(1, 3);
        assert!(!expired(h, MS_MASK - 2));
        assert!(expired(h, 3));
        assert!(expired(h, 10));
        // The full 32-bit clock value works too (only 31 bits are kept).
        let now = u32::MAX - 1;
        let h = encode(1, now.wrapping_add(11));
        assert!(!expired(h, now));
        assert!(expired(h, now.wrapping_add(11)));
    }

    /// Found by the corruption suite (tests/corruption.rs): a flipped bit in the hand-off
    /// word put its deadline days ahead, and the free mutex refused every locker.
    #[test]
    fn a_garbage_handoff_deadline_expires_at_once() {
        let now = 1_000_000;
        for ahead in [2 * HANDOFF_TTL_MS + 2, 60_000, 0x3fff_ffff, 0x7fff_fffe] {
            let h = encode(0, now + ahead);
            assert!(expired(h, now), "{ahead} ms ahead");
        }
        // A bare flipped bit in the deadline bytes (bit 31 clear).
        assert!(expired(0x00ff_0000, now));
        assert!(!expired(encode(0, now + HANDOFF_TTL_MS + 1), now));
    }

    #[test]
    fn fair_unlocks_come_due_and_garbage_is_due() {
        let now = 1_000_000u32;
        assert!(fair_due(0, now));
        assert!(fair_due(now, now));
        assert!(fair_due(now - 1, now));
        assert!(!fair_due(now + FAIR_INTERVAL_US, now));
        assert!(!fair_due(now + 1, now));
        assert!(fair_due(now + 2 * FAIR_INTERVAL_US + 1, now));
        assert!(fair_due(now.wrapping_add(0x8000_0000), now));
        // Across the wrap of the 32-bit clock.
        let now = u32::MAX - 10;
        assert!(!fair_due(now.wrapping_add(FAIR_INTERVAL_US), now));
        assert!(fair_due(now.wrapping_sub(5), now));
    }

    #[test]
    fn eligibility_is_registration_before_post() {
        let h = encode(10, 0);
        assert!(eligible(9, h));
        assert!(eligible(10, h));
        assert!(!eligible(11, h));
        let h = encode(2, 0); // the doorbell wrapped
        assert!(eligible(u32::MAX, h));
        assert!(!eligible(3, h));
    }

    #[test]
    fn bars_only_strangers_before_expiry() {
        let now = sys::monotonic_millis();
        let h = encode(10, now.wrapping_add(HANDOFF_TTL_MS));
        assert!(bars(h, None));
        assert!(bars(h, Some(11)));
        assert!(!bars(h, Some(10)));
        assert!(!bars(0, None));
        let old = encode(10, now.wrapping_sub(1));
        assert!(!bars(old, None));
    }
}
