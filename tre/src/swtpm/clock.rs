//! The TPM's clock after a power loss (TPM 2.0 Part 1 §36, "Clock"; Part 3 §29.2
//! TPM2_ReadClock, §29.3 TPM2_ClockSet). The TPM saves Clock to NV only every few seconds
//! (the reference implementation: every 2^NV_CLOCK_UPDATE_INTERVAL ms, 4.096 s); after a
//! reset without TPM2_Shutdown it restarts from the saved value, which may lie below
//! values it already reported, and says so with TPMS_CLOCK_INFO.safe = NO — which a
//! strict verifier refuses. A device that lost power (an agent killed with its swtpm) sets
//! Clock forward past every value it can have reported, which makes the TPM save it and
//! report `safe` again: exactly what the TPM itself does once it has run for one update
//! interval. Clock only moves forward, so no verifier's history check is weakened.

use std::path::Path;

use super::{SwtpmError, tpm_command};

/// TPM_CC_ReadClock and TPM_CC_ClockSet (TPM 2.0 Part 2 §6.5.2).
const TPM_CC_READ_CLOCK: u32 = 0x0000_0181;
const TPM_CC_CLOCK_SET: u32 = 0x0000_0128;
/// TPM_RH_OWNER: ClockSet needs owner (or platform) authorization.
const TPM_RH_OWNER: u32 = 0x4000_0001;
/// How far Clock is set forward: more than one NV update interval (4.096 s), so it is
/// certainly above anything reported before the power loss.
pub(super) const ADVANCE_MS: u64 = 8_192;

/// TPMS_CLOCK_INFO's `clock` and `safe`, from TPM2_ReadClock.
pub(super) fn read(socket: &Path) -> Result<(u64, bool), SwtpmError> {
    let mut command = Vec::with_capacity(10);
    command.extend_from_slice(&0x8001u16.to_be_bytes());
    command.extend_from_slice(&10u32.to_be_bytes());
    command.extend_from_slice(&TPM_CC_READ_CLOCK.to_be_bytes());
    let body = tpm_command(socket, "TPM2_ReadClock", &command)?;
    // TPMS_TIME_INFO: time (8), clockInfo { clock (8), resetCount (4), restartCount (4), safe (1) }
    let clock = body.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok());
    match (clock, body.get(24)) {
        (Some(clock), Some(&safe)) => Ok((u64::from_be_bytes(clock), safe != 0)),
        _ => Err(SwtpmError::Control("TPM2_ReadClock answer too short".into())),
    }
}

/// TPM2_ClockSet(TPM_RH_OWNER, new_time) with an empty owner password.
pub(super) fn set(socket: &Path, new_time: u64) -> Result<(), SwtpmError> {
    tpm_command(socket, "TPM2_ClockSet", &clock_set_command(new_time)).map(drop)
}

fn clock_set_command(new_time: u64) -> Vec<u8> {
    // TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, attributes 0, empty password.
    let auth: [u8; 9] = [0x40, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00];
    let size = 10 + 4 + 4 + auth.len() + 8;
    let mut c = Vec::with_capacity(size);
    c.extend_from_slice(&0x8002u16.to_be_bytes());
    c.extend_from_slice(&(size as u32).to_be_bytes());
    c.extend_from_slice(&TPM_CC_CLOCK_SET.to_be_bytes());
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    c.extend_from_slice(&(auth.len() as u32).to_be_bytes());
    c.extend_from_slice(&auth);
    c.extend_from_slice(&new_time.to_be_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_set_command_is_well_formed() {
        let c = clock_set_command(0x0102_0304_0506_0708);
        assert_eq!(u32::from_be_bytes([c[2], c[3], c[4], c[5]]) as usize, c.len());
        assert_eq!(&c[6..10], &TPM_CC_CLOCK_SET.to_be_bytes());
        assert_eq!(&c[c.len() - 8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
