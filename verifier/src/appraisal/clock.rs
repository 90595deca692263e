//! TPM clock and boot counters (TPM 2.0 Part 1 §36 "Clocks and Timers", Part 2 §10.11.1
//! TPMS_CLOCK_INFO): resetCount counts TPM resets, restartCount the restarts since the last
//! reset, and clock the milliseconds powered, with `safe` clear when clock may have gone
//! backwards. For one device the triple (resetCount, restartCount, clock) only grows; the PVA
//! keeps its high-water mark, so evidence from a TPM whose state was rolled back (an old
//! swtpm state restored, a TPM2_Clear) is flagged. The quote and the certification come
//! from the same TPM in the same boot, so their counters and firmware versions agree.
//!
//! These fields are only meaningful from an AK in the endorsement hierarchy (as tresor's
//! AK is): the TPM obfuscates them for keys in the storage hierarchy.

use protocol::tpm::Attest;

use super::failures::Failures;
use crate::error::AppraisalError;
use crate::store::ClockMark;

/// The clock mark a quote reports.
pub(crate) fn mark_of(quote: &Attest) -> ClockMark {
    ClockMark {
        reset_count: quote.clock_info.reset_count,
        restart_count: quote.clock_info.restart_count,
        clock: quote.clock_info.clock,
    }
}

pub(super) fn check(
    quote: &Attest,
    certify: &Attest,
    previous: Option<ClockMark>,
    failures: &mut Failures,
) {
    if !quote.clock_info.safe || !certify.clock_info.safe {
        failures.push(AppraisalError::ClockNotSafe);
    }
    let (q, c) = (&quote.clock_info, &certify.clock_info);
    if q.reset_count != c.reset_count
        || q.restart_count != c.restart_count
        || quote.firmware_version != certify.firmware_version
    {
        failures.push(AppraisalError::ClockInfoInconsistent);
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
