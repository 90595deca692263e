//! The operator's authenticated over-the-air commands to the UICC: "activate TRE" (3GPP TR
//! 33.812 §5.4.4.3 / alternative 3d step 4, made by MNO-A) and "deactivate TRE", and the
//! card's MACed answer to them ([`response`]).
//!
//! Real OTA wraps commands in SMS-PP secured packets (ETSI TS 102 225 / TS 102 226). tresor
//! keeps the security of TS 102 225 §5.1 — a cryptographic checksum with the profile's KID,
//! AES-CMAC truncated to 8 bytes, and a 5-byte counter that the card requires to increase —
//! and delivers the command as one proprietary APDU instead of an SMS:
//!
//! ```text
//! APDU       = CLA 80 ‖ INS EE ‖ P1 00 ‖ P2 00 ‖ Lc ‖ header ‖ MAC
//! header     = version 01 ‖ command (1) ‖ counter (5, big-endian)
//!              ‖ ICCID length (1) ‖ ICCID (ASCII digits) ‖ parameter length (1) ‖ parameters
//! MAC        = leftmost 8 bytes of AES-CMAC(KID, CLA ‖ INS ‖ P1 ‖ P2 ‖ header)
//! command    = 01 activate TRE, 02 deactivate TRE (no parameters)
//! parameters = campaign length (1) ‖ campaign (ASCII) ‖ operator length (1) ‖ operator (ASCII)
//!              (activate TRE only)
//! ```
//!
//! The ICCID binds a command to one card; the counter makes it single-use. The parameters
//! of "activate TRE" are MNO-A's word, authenticated with the rest, on which change the TRE
//! is activated for: the campaign (its id at the RO, [`crate::ids::valid_campaign_id`]) and
//! the new operator (its role name, [`crate::role::valid_name`]), whose signature alone the
//! TRE then accepts on the new profile. Whatever a task or a bundle says about the operator
//! is not trusted.
//!
//! The card checks, in this order: syntax, ICCID, MAC, counter > the last counter it
//! accepted, then the parameters. The MAC is checked before the counter, so an
//! unauthenticated sender learns nothing about the counter.

pub mod response;

use aes::Aes128;
use cmac::{Cmac, Mac};
use serde::{Deserialize, Serialize};

use crate::ids::{Iccid, valid_campaign_id};
use crate::role::valid_name;
use crate::secret::OtaKey;

pub use response::{Response, ResponseStatus, seal_response, verify_response};

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

/// The code of an operator command.
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

/// What MNO-A activates the TRE for: the campaign and its new operator. Only well-formed
/// values can be held (a campaign id of the RO, an operator's role name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActivationFields", into = "ActivationFields")]
pub struct Activation {
    campaign: String,
    operator: String,
}

/// [`Activation`] as serialized: checked on the way in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivationFields {
    campaign: String,
    operator: String,
}

impl TryFrom<ActivationFields> for Activation {
    type Error = OtaError;
    fn try_from(f: ActivationFields) -> Result<Self, OtaError> {
        Self::new(&f.campaign, &f.operator)
    }
}

impl From<Activation> for ActivationFields {
    fn from(a: Activation) -> Self {
        Self { campaign: a.campaign, operator: a.operator }
    }
}

impl Activation {
    pub fn new(campaign: &str, operator: &str) -> Result<Self, OtaError> {
        if !valid_campaign_id(campaign) {
            return Err(OtaError::BadParameter("the campaign is not a campaign id"));
        }
        if !valid_name(operator) {
            return Err(OtaError::BadParameter("the operator is not a role name"));
        }
        Ok(Self { campaign: campaign.to_owned(), operator: operator.to_owned() })
    }

    /// The campaign the TRE is activated for.
    pub fn campaign(&self) -> &str {
        &self.campaign
    }

    /// The campaign's new operator: the only signer of a profile the TRE installs.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// `campaign LV ‖ operator LV`; both fit one length byte (64 and 63 at most).
    fn encode(&self, out: &mut Vec<u8>) {
        for field in [&self.campaign, &self.operator] {
            out.push(field.len() as u8);
            out.extend_from_slice(field.as_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, OtaError> {
        let bad = |_| OtaError::BadParameter("not ASCII");
        let (campaign, rest) = take_lv(bytes, "campaign")?;
        let (operator, rest) = take_lv(rest, "operator")?;
        if !rest.is_empty() {
            return Err(OtaError::Malformed("trailing bytes after the operator"));
        }
        Self::new(
            std::str::from_utf8(campaign).map_err(bad)?,
            std::str::from_utf8(operator).map_err(bad)?,
        )
    }
}

/// An authenticated command with its parameters: "activate TRE" always names its campaign
/// and new operator, "deactivate TRE" nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    ActivateTre(Activation),
    DeactivateTre,
}

impl Action {
    pub fn command(&self) -> OtaCommand {
        match self {
            Self::ActivateTre(_) => OtaCommand::ActivateTre,
            Self::DeactivateTre => OtaCommand::DeactivateTre,
        }
    }

    /// The activation, for "activate TRE".
    pub fn activation(&self) -> Option<&Activation> {
        match self {
            Self::ActivateTre(a) => Some(a),
            Self::DeactivateTre => None,
        }
    }
}

/// Why an OTA command or response was not made or not accepted. One variant per check.
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
    #[error("OTA command parameter is not valid: {0}")]
    BadParameter(&'static str),
    #[error("OTA response is malformed: {0}")]
    ResponseMalformed(&'static str),
    #[error("OTA response cryptographic checksum does not verify with the card's KID")]
    ResponseBadMac,
    #[error("OTA response status {0:#04x} is not PoR OK")]
    ResponseStatus(u8),
    #[error("OTA response names another {0} than the command it answers")]
    ResponseMismatch(&'static str),
}

/// An OTA command that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub action: Action,
    /// The card must store this as its new last accepted counter.
    pub counter: u64,
}

/// Builds the command APDU (MNO-A's side): `action` for the card `iccid`, MACed with the
/// current profile's KID, numbered `counter` (which must exceed every counter the card
/// already accepted).
pub fn seal(
    action: &Action,
    kid: &OtaKey,
    iccid: &Iccid,
    counter: u64,
) -> Result<Vec<u8>, OtaError> {
    if counter > COUNTER_MAX {
        return Err(OtaError::CounterRange);
    }
    let digits = iccid.as_str().as_bytes();
    let iccid_len = u8::try_from(digits.len()).map_err(|_| OtaError::Malformed("ICCID"))?;
    let mut params = Vec::new();
    if let Action::ActivateTre(activation) = action {
        activation.encode(&mut params);
    }
    let params_len = u8::try_from(params.len()).map_err(|_| OtaError::Malformed("parameters"))?;
    let mut header = Vec::with_capacity(10 + digits.len() + params.len());
    header.push(VERSION);
    header.push(action.command().code());
    header.extend_from_slice(&counter.to_be_bytes()[3..]);
    header.push(iccid_len);
    header.extend_from_slice(digits);
    header.push(params_len);
    header.extend_from_slice(&params);
    let apdu_header = [CLA, INS, 0x00, 0x00];
    let mac = checksum(kid, &[&apdu_header, &header]);
    let lc = u8::try_from(header.len() + MAC_LEN).map_err(|_| OtaError::Malformed("too long"))?;
    let mut apdu = Vec::with_capacity(5 + usize::from(lc));
    apdu.extend_from_slice(&apdu_header);
    apdu.push(lc);
    apdu.extend_from_slice(&header);
    apdu.extend_from_slice(&mac);
    Ok(apdu)
}

/// "Activate TRE" for `iccid`, for the change `activation` names (TR 33.812 alternative 3d
/// step 4).
pub fn seal_activate_tre(
    kid: &OtaKey,
    iccid: &Iccid,
    counter: u64,
    activation: &Activation,
) -> Result<Vec<u8>, OtaError> {
    seal(&Action::ActivateTre(activation.clone()), kid, iccid, counter)
}

/// The card's check of a command APDU: syntax, addressed to `iccid`, MAC under `kid`, counter
/// above `last_counter`, parameters. The caller stores [`Verified::counter`] before acting on
/// it.
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
    // Case 3 (no Le) or case 4 (one Le byte: the card answers with its response packet).
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
    let action = match (parsed.command, parsed.params) {
        (OtaCommand::ActivateTre, []) => {
            return Err(OtaError::Malformed("activate TRE names no campaign and operator"));
        }
        (OtaCommand::ActivateTre, params) => Action::ActivateTre(Activation::decode(params)?),
        (OtaCommand::DeactivateTre, []) => Action::DeactivateTre,
        (OtaCommand::DeactivateTre, _) => {
            return Err(OtaError::Malformed("deactivate TRE takes no parameters"));
        }
    };
    Ok(Verified { action, counter: parsed.counter })
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
        let (iccid, rest) = take_lv(rest, "ICCID")?;
        let (params, rest) = take_lv(rest, "parameters")?;
        if !rest.is_empty() {
            return Err(OtaError::Malformed("trailing bytes after the parameters"));
        }
        Ok(Self { command, counter: counter_of(counter), iccid, params })
    }
}

/// A 5-byte big-endian counter.
fn counter_of(bytes: &[u8; 5]) -> u64 {
    let mut wide = [0u8; 8];
    wide[3..].copy_from_slice(bytes);
    u64::from_be_bytes(wide)
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

/// The leftmost [`MAC_LEN`] bytes of AES-CMAC(KID, the concatenation of `parts`).
fn checksum(kid: &OtaKey, parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut cmac = new_cmac(kid);
    for part in parts {
        cmac.update(part);
    }
    let full = cmac.finalize().into_bytes();
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&full[..MAC_LEN]);
    mac
}

#[cfg(test)]
#[path = "ota_tests.rs"]
mod tests;
