//! TPM clock and boot counters (TPM 2.0 Part 1 §36 "Clocks and Timers", Part 2 §10.11.1
//! TPMS_CLOCK_INFO): resetCount counts TPM resets, restartCount the restarts since the last
//! reset, and clock the milliseconds powered, with `safe` clear when clock may have gone
//! backwards. For one device the triple (resetCount, restartCount, clock) only grows; the PVA
//! keeps its high-water mark, so evidence from a TPM whose state was rolled back (an old
//! swtpm state restored, a TPM2_Clear) is flagged. The quote and the certification come
//! from the same TPM in the same boot, so their counters and firmware versions agree.
//!
//! With equal resetCount and restartCount no _TPM_Init came between two quotes (every
//! TPM2_Startup after one changes a counter: Part 1 §36.3), so the TPM ran all along and
//! its clock advanced with the wall time, at a rate within the ±15 % the specification allows
//! a TPM's Clock (Part 4's reference platform code, `Clock.c`: "the clock tolerance is
//! +/-15%", with TPM2_ClockRateAdjust clamped at a 16.7 % guard band).
//! A state restored from a copy has lost the time between the copy and the restore; it is
//! caught by [`behind_wall_time`], however long its owner lets its clock run past the mark
//! (`docs/appraisal.md` "Clock" has the argument and its limits).
//!
//! These fields are only meaningful from an AK in the endorsement hierarchy (as tresor's
//! AK is): the TPM obfuscates them for keys in the storage hierarchy.

use std::time::Duration;

use protocol::tpm::Attest;

use super::failures::Failures;
use crate::error::AppraisalError;
use crate::store::{ClockMark, SeenClock};

/// How far a running TPM's Clock may fall behind the PVA's wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockTolerance {
    /// How much slower than the wall time the TPM's Clock may run, in percent (a TPM's
    /// Clock is allowed ±15 %).
    pub drift_percent: u8,
    /// A fixed allowance on top: the PVA's wall-clock steps, millisecond rounding.
    pub slack: Duration,
}

impl Default for ClockTolerance {
    fn default() -> Self {
        Self { drift_percent: 15, slack: Duration::from_secs(2) }
    }
}

/// The clock mark a quote reports.
pub(crate) fn mark_of(quote: &Attest) -> ClockMark {
    ClockMark {
        reset_count: quote.clock_info.reset_count,
        restart_count: quote.clock_info.restart_count,
        clock: quote.clock_info.clock,
    }
}

/// `certify` is the bundle key's certification, when the evidence has one.
pub(super) fn check(
    quote: &Attest,
    certify: Option<&Attest>,
    previous: Option<ClockMark>,
    failures: &mut Failures,
) {
    if !quote.clock_info.safe || certify.is_some_and(|c| !c.clock_info.safe) {
        failures.push(AppraisalError::ClockNotSafe);
    }
    if let Some(certify) = certify {
        let (q, c) = (&quote.clock_info, &certify.clock_info);
        if q.reset_count != c.reset_count
            || q.restart_count != c.restart_count
            || quote.firmware_version != certify.firmware_version
        {
            failures.push(AppraisalError::ClockInfoInconsistent);
        }
    }
    let Some(last) = previous else { return };
    let now = mark_of(quote);
    if now.reset_count < last.reset_count {
        failures.push(AppraisalError::ResetCountWentBackwards {
            last: last.reset_count,
            got: now.reset_count,
        });
    } else if now.reset_count == last.reset_count {
        if now.restart_count < last.restart_count {
            failures.push(AppraisalError::RestartCountWentBackwards {
                last: last.restart_count,
                got: now.restart_count,
            });
        } else if now.restart_count == last.restart_count && now.clock < last.clock {
            failures.push(AppraisalError::ClockWentBackwards { last: last.clock, got: now.clock });
        }
    }
}

/// The wall-time check: `now` is the quote's clock state, `last` the device's mark and when
/// it was seen, `issued_at_ms` when the nonce the quote answers was issued. With equal
/// resetCount and restartCount, a running TPM's clock advanced at least
///
/// ```text
/// minimum = last.clock + (issued_at − last.seen_at) × (100 − drift) / 100 − slack
/// ```
///
/// because the last quote was made before `last.seen_at` and this one after `issued_at`.
/// A clock below the mark itself is [`check`]'s `ClockWentBackwards`, not this.
pub(crate) fn behind_wall_time(
    now: ClockMark,
    last: &SeenClock,
    issued_at_ms: u64,
    tolerance: ClockTolerance,
) -> Option<AppraisalError> {
    let l = last.mark;
    if (now.reset_count, now.restart_count) != (l.reset_count, l.restart_count)
        || now.clock < l.clock
    {
        return None;
    }
    let elapsed = u128::from(issued_at_ms.saturating_sub(last.seen_at_ms));
    let rate = u128::from(100u8.saturating_sub(tolerance.drift_percent.min(100)));
    let slack = tolerance.slack.as_millis();
    let minimum = (u128::from(l.clock) + elapsed * rate / 100).saturating_sub(slack);
    (u128::from(now.clock) < minimum).then(|| AppraisalError::ClockBehindWallTime {
        last: l.clock,
        got: now.clock,
        minimum: u64::try_from(minimum).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(reset: u32, restart: u32, clock: u64) -> ClockMark {
        ClockMark { reset_count: reset, restart_count: restart, clock }
    }

    const LAST: SeenClock = SeenClock {
        mark: ClockMark { reset_count: 3, restart_count: 1, clock: 50_000 },
        seen_at_ms: 1_000_000,
    };

    #[test]
    fn a_running_clock_keeps_up_with_the_wall_time_within_the_tolerance() {
        let t = ClockTolerance::default();
        // 100 s of wall time between the last appraisal and this nonce: at least
        // 50 000 + 85 000 − 2 000 ms.
        let issued = LAST.seen_at_ms + 100_000;
        assert_eq!(behind_wall_time(mark(3, 1, 133_000), &LAST, issued, t), None);
        assert_eq!(behind_wall_time(mark(3, 1, 150_000), &LAST, issued, t), None);
        assert_eq!(
            behind_wall_time(mark(3, 1, 132_999), &LAST, issued, t),
            Some(AppraisalError::ClockBehindWallTime {
                last: 50_000,
                got: 132_999,
                minimum: 133_000
            })
        );
        // A state restored from a copy, its clock just past the mark.
        assert!(behind_wall_time(mark(3, 1, 50_001), &LAST, issued, t).is_some());
        // Without a tolerance the clock must keep exact pace.
        let strict = ClockTolerance { drift_percent: 0, slack: Duration::ZERO };
        assert_eq!(behind_wall_time(mark(3, 1, 150_000), &LAST, issued, strict), None);
        assert!(behind_wall_time(mark(3, 1, 149_999), &LAST, issued, strict).is_some());
    }

    #[test]
    fn only_the_same_boot_cycle_and_a_later_nonce_bind() {
        let t = ClockTolerance::default();
        let issued = LAST.seen_at_ms + 3_600_000;
        // A reset or a restart since: the TPM may have been off, nothing to require.
        assert_eq!(behind_wall_time(mark(4, 0, 10), &LAST, issued, t), None);
        assert_eq!(behind_wall_time(mark(3, 2, 10), &LAST, issued, t), None);
        // Below the mark is ClockWentBackwards, reported by `check`.
        assert_eq!(behind_wall_time(mark(3, 1, 49_999), &LAST, issued, t), None);
        // A nonce issued before the last appraisal (concurrent challenges): no wall time
        // to account for.
        assert_eq!(behind_wall_time(mark(3, 1, 50_000), &LAST, LAST.seen_at_ms - 5, t), None);
        // Overflowing inputs saturate rather than wrap.
        let far = SeenClock { mark: mark(3, 1, u64::MAX - 1), seen_at_ms: 0 };
        assert!(behind_wall_time(mark(3, 1, u64::MAX - 1), &far, u64::MAX, t).is_some());
        assert_eq!(behind_wall_time(mark(3, 1, u64::MAX), &far, 0, t), None);
    }
}
