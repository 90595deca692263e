//! The operator's authenticated over-the-air commands to the UICC: "activate TRE" (3GPP TR
//! 33.812 §5.4.4.3 / alternative 3d step 4, made by MNO-A) and "deactivate TRE".
//!
//! Real OTA wraps commands in SMS-PP secured packets (ETSI TS 102 225 / TS 102 226). tresor
//! keeps the security of TS 102 225 §5.1 — a cryptographic checksum with the profile's KID,
//! AES-CMAC truncated to 8 bytes, and a 5-byte counter that the card requires to increase —
//! and delivers the command as one proprietary APDU instead of an SMS:
//!
//! ```text
//! APDU    = CLA 80 ‖ INS EE ‖ P1 00 ‖ P2 00 ‖ Lc ‖ header ‖ MAC
//! header  = version 01 ‖ command (1) ‖ counter (5, big-endian)
//!           ‖ ICCID length (1) ‖ ICCID (ASCII digits) ‖ parameter length (1) ‖ parameters
//! MAC     = leftmost 8 bytes of AES-CMAC(KID, CLA ‖ INS ‖ P1 ‖ P2 ‖ header)
//! command = 01 activate TRE, 02 deactivate TRE (both without parameters)
//! ```
//!
//! The ICCID binds a command to one card; the counter makes it single-use. The card checks,
//! in this order: syntax, ICCID, MAC, counter > the last counter it accepted. The MAC is
//! checked before the counter, so an unauthenticated sender learns nothing about the counter.

use aes::Aes128;
use cmac::{Cmac, Mac};

use crate::ids::Iccid;
use crate::secret::OtaKey;

/// The proprietary class of OTA command APDUs.
pub const CLA: u8 = 0x80;
/// The proprietary instruction of OTA command APDUs (unused by ETSI TS 102 221 and by
/// GlobalPlatform in class 80).
pub const INS: u8 = 0xEE;
/// The format version this module writes and reads.
pub const VERSION: u8 = 0x01;
/// The length of the cryptographic checksum (ETSI TS 102 225 §5.1.3: 8 bytes for AES CMAC).
pub const MAC_LEN: usize = 8;
/// The largest counter: 5 bytes (ETSI TS 102 225 §5.1.1).
pub const COUNTER_MAX: u64 = (1 << 40) - 1;

/// An operator command the card carries out once it authenticated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtaCommand {
    /// Activate the TRE; the card deactivates the USIM (TR 33.812 §5.4.4.3).
    ActivateTre,
    /// Deactivate the TRE; the card reactivates the USIM with the current profile.
    DeactivateTre,
}

impl OtaCommand {
    pub fn code(self) -> u8 {
        match self {
            Self::ActivateTre => 0x01,
            Self::DeactivateTre => 0x02,
        }
    }

    pub fn from_code(code: u8) -> Result<Self, OtaError> {
        match code {
            0x01 => Ok(Self::ActivateTre),
            0x02 => Ok(Self::DeactivateTre),
            other => Err(OtaError::UnknownCommand(other)),
        }
    }
}

/// Why an OTA command was not made or not accepted. One variant per check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtaError {
    #[error("OTA command is malformed: {0}")]
    Malformed(&'static str),
    #[error("OTA command is not an APDU of class 80, instruction EE")]
    NotOta,
    #[error("OTA command format version {0} is not supported")]
    UnknownVersion(u8),
    #[error("OTA command code {0:#04x} is not known")]
    UnknownCommand(u8),
    #[error("OTA command is addressed to another card (ICCID mismatch)")]
    WrongIccid,
    #[error("OTA command cryptographic checksum does not verify with this card's KID")]
    BadMac,
    #[error("OTA counter {counter} is not above the last accepted counter {last}: replay")]
    Replay { counter: u64, last: u64 },
    #[error("OTA counter exceeds 5 bytes")]
    CounterRange,
}

/// An OTA command that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub command: OtaCommand,
    /// The card must store this as its new last accepted counter.
    pub counter: u64,
}

/// Builds the command APDU (MNO-A's side): `command` for the card `iccid`, MACed with the
/// current profile's KID, numbered `counter` (which must exceed every counter the card
/// already accepted).
pub fn seal(
    command: OtaCommand,
    kid: &OtaKey,
    iccid: &Iccid,
    counter: u64,
) -> Result<Vec<u8>, OtaError> {
    if counter > COUNTER_MAX {
        return Err(OtaError::CounterRange);
    }
    let digits = iccid.as_str().as_bytes();
    let iccid_len = u8::try_from(digits.len()).map_err(|_| OtaError::Malformed("ICCID"))?;
    let mut header = Vec::with_capacity(10 + digits.len());
    header.push(VERSION);
    header.push(command.code());
    header.extend_from_slice(&counter.to_be_bytes()[3..]);
    header.push(iccid_len);
    header.extend_from_slice(digits);
    header.push(0); // no parameters
    let apdu_header = [CLA, INS, 0x00, 0x00];
    let mac = checksum(kid, &apdu_header, &header);
    let lc = u8::try_from(header.len() + MAC_LEN).map_err(|_| OtaError::Malformed("too long"))?;
    let mut apdu = Vec::with_capacity(5 + usize::from(lc));
    apdu.extend_from_slice(&apdu_header);
    apdu.push(lc);
    apdu.extend_from_slice(&header);
    apdu.extend_from_slice(&mac);
    Ok(apdu)
}

/// "Activate TRE" for `iccid` (TR 33.812 alternative 3d step 4).
pub fn seal_activate_tre(kid: &OtaKey, iccid: &Iccid, counter: u64) -> Result<Vec<u8>, OtaError> {
    seal(OtaCommand::ActivateTre, kid, iccid, counter)
}

/// The card's check of a command APDU: syntax, addressed to `iccid`, MAC under `kid`, counter
/// above `last_counter`. The caller stores [`Verified::counter`] before acting on it.
pub fn verify(
    apdu: &[u8],
    kid: &OtaKey,
    iccid: &Iccid,
    last_counter: u64,
) -> Result<Verified, OtaError> {
    let Some((apdu_header, rest)) = apdu.split_first_chunk::<4>() else {
        return Err(OtaError::Malformed("shorter than an APDU header"));
    };
    if apdu_header[0] != CLA || apdu_header[1] != INS {
        return Err(OtaError::NotOta);
    }
    if apdu_header[2] != 0 || apdu_header[3] != 0 {
        return Err(OtaError::Malformed("P1 and P2 must be 00"));
    }
    let Some((&lc, body)) = rest.split_first() else {
        return Err(OtaError::Malformed("no Lc"));
    };
    // Case 3 (no Le) or case 4 (one Le byte, ignored: the command returns no data).
    let body = match body.len().checked_sub(usize::from(lc)) {
        Some(0) => body,
        Some(1) => body.get(..usize::from(lc)).ok_or(OtaError::Malformed("Lc"))?,
        _ => return Err(OtaError::Malformed("Lc does not match the data length")),
    };
    let Some((header, mac)) = body.split_last_chunk::<MAC_LEN>() else {
        return Err(OtaError::Malformed("shorter than a MAC"));
    };
    let parsed = Header::parse(header)?;
    if parsed.iccid != iccid.as_str().as_bytes() {
        return Err(OtaError::WrongIccid);
    }
    let mut cmac = new_cmac(kid);
    cmac.update(apdu_header);
    cmac.update(header);
    cmac.verify_truncated_left(mac).map_err(|_| OtaError::BadMac)?;
    if parsed.counter <= last_counter {
        return Err(OtaError::Replay { counter: parsed.counter, last: last_counter });
    }
    if !parsed.params.is_empty() {
        return Err(OtaError::Malformed("this command takes no parameters"));
    }
    Ok(Verified { command: parsed.command, counter: parsed.counter })
}

/// The parsed header, before authentication.
struct Header<'a> {
    command: OtaCommand,
    counter: u64,
    iccid: &'a [u8],
    params: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, OtaError> {
        let Some((&[version, code], rest)) = bytes.split_first_chunk::<2>() else {
            return Err(OtaError::Malformed("truncated header"));
        };
        if version != VERSION {
            return Err(OtaError::UnknownVersion(version));
        }
        let command = OtaCommand::from_code(code)?;
        let Some((counter, rest)) = rest.split_first_chunk::<5>() else {
            return Err(OtaError::Malformed("truncated counter"));
        };
        let mut wide = [0u8; 8];
        wide[3..].copy_from_slice(counter);
        let (iccid, rest) = take_lv(rest, "ICCID")?;
        let (params, rest) = take_lv(rest, "parameters")?;
        if !rest.is_empty() {
            return Err(OtaError::Malformed("trailing bytes after the parameters"));
        }
        Ok(Self { command, counter: u64::from_be_bytes(wide), iccid, params })
    }
}

/// Splits a one-byte-length-prefixed field off the front of `bytes`.
fn take_lv<'a>(bytes: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), OtaError> {
    let Some((&len, rest)) = bytes.split_first() else {
        return Err(OtaError::Malformed(what));
    };
    if rest.len() < usize::from(len) {
        return Err(OtaError::Malformed(what));
    }
    Ok(rest.split_at(usize::from(len)))
}

fn new_cmac(kid: &OtaKey) -> Cmac<Aes128> {
    <Cmac<Aes128> as cmac::digest::KeyInit>::new(kid.expose().into())
}

fn checksum(kid: &OtaKey, apdu_header: &[u8; 4], header: &[u8]) -> [u8; MAC_LEN] {
    let mut cmac = new_cmac(kid);
    cmac.update(apdu_header);
    cmac.update(header);
    let full = cmac.finalize().into_bytes();
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&full[..MAC_LEN]);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iccid() -> Iccid {
        "89883030000000000015".parse().unwrap()
    }

    #[test]
    fn cmac_matches_rfc4493() {
        // RFC 4493 §4, example 2 (AES-128, 16-byte message): the CMAC engine under the MAC.
        let key = OtaKey::from_hex("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let mut m = new_cmac(&key);
        m.update(&hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap());
        assert_eq!(hex::encode(m.finalize().into_bytes()), "070a16b46b4d4144f79bdd9dd04a287c");
    }

    #[test]
    fn sealed_command_verifies_once() {
        let kid = OtaKey::new([7; 16]);
        let apdu = seal_activate_tre(&kid, &iccid(), 5).unwrap();
        assert_eq!(&apdu[..4], &[0x80, 0xEE, 0x00, 0x00]);
        assert_eq!(usize::from(apdu[4]), apdu.len() - 5);
        let v = verify(&apdu, &kid, &iccid(), 4).unwrap();
        assert_eq!(v, Verified { command: OtaCommand::ActivateTre, counter: 5 });
        assert_eq!(verify(&apdu, &kid, &iccid(), 5), Err(OtaError::Replay { counter: 5, last: 5 }));
        // A trailing Le byte is tolerated.
        let mut case4 = apdu.clone();
        case4.push(0);
        assert!(verify(&case4, &kid, &iccid(), 0).is_ok());
    }

    #[test]
    fn each_check_has_its_own_error() {
        let kid = OtaKey::new([7; 16]);
        let apdu = seal(OtaCommand::DeactivateTre, &kid, &iccid(), 9).unwrap();
        let other: Iccid = "89883030000000000023".parse().unwrap();
        assert_eq!(verify(&apdu, &kid, &other, 0), Err(OtaError::WrongIccid));
        assert_eq!(verify(&apdu, &OtaKey::new([8; 16]), &iccid(), 0), Err(OtaError::BadMac));
        let mut flipped = apdu.clone();
        flipped[7] ^= 1; // a counter byte
        assert_eq!(verify(&flipped, &kid, &iccid(), 0), Err(OtaError::BadMac));
        let mut version = apdu.clone();
        version[5] = 9;
        assert_eq!(verify(&version, &kid, &iccid(), 0), Err(OtaError::UnknownVersion(9)));
        let mut code = apdu.clone();
        code[6] = 0x77;
        assert_eq!(verify(&code, &kid, &iccid(), 0), Err(OtaError::UnknownCommand(0x77)));
        let mut cla = apdu.clone();
        cla[0] = 0x00;
        assert_eq!(verify(&cla, &kid, &iccid(), 0), Err(OtaError::NotOta));
        assert!(matches!(
            verify(&apdu[..apdu.len() - 1], &kid, &iccid(), 0),
            Err(OtaError::Malformed(_))
        ));
        assert_eq!(seal_activate_tre(&kid, &iccid(), COUNTER_MAX + 1), Err(OtaError::CounterRange));
    }

    #[test]
    fn truncations_never_panic() {
        let kid = OtaKey::new([1; 16]);
        let apdu = seal_activate_tre(&kid, &iccid(), COUNTER_MAX).unwrap();
        for n in 0..apdu.len() {
            assert!(verify(&apdu[..n], &kid, &iccid(), 0).is_err());
        }
        assert!(verify(&apdu, &kid, &iccid(), COUNTER_MAX - 1).is_ok());
    }
}
