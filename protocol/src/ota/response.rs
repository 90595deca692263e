//! The card's answer to an OTA command it carried out, in the spirit of the Response Packet
//! of ETSI TS 102 225 §5.2 (counter, status code, cryptographic checksum): the card says,
//! MACed with the KID of the profile the command was MACed for, which command it ran with
//! which counter, which card it is (ICCID) and which subscription it ran (IMSI), and for
//! "activate TRE" the campaign and new operator it took from the command.
//!
//! MNO-A checks it against what it knows — the KID, the ICCID and IMSI of the subscription
//! the campaign pairs with the device, the counter it issued, the campaign and its new
//! operator — before it retires the old subscription: only the card that holds the KID can
//! make it, so a device paired with another card's ICCID cannot prove the pairing.
//!
//! ```text
//! response = version 01 ‖ command (1) ‖ counter (5, big-endian) ‖ status (1)
//!            ‖ ICCID LV ‖ IMSI LV ‖ campaign LV ‖ operator LV ‖ MAC (8)
//! LV       = length (1) ‖ ASCII; campaign and operator are empty for "deactivate TRE"
//! status   = 00 PoR OK (the only status the card MACs: it answers commands it carried out)
//! MAC      = leftmost 8 bytes of AES-CMAC(KID, "tresor OTA response" ‖ response without MAC)
//! ```
//!
//! The domain string keeps responses and commands apart under the same KID: a command's MAC
//! input starts with its class byte 80, a response's with `t` (74), so neither MAC is ever
//! valid for the other; and a response does not parse as a command APDU (no class 80), nor a
//! command as a response (no version 01 in front).

use super::{
    Activation, MAC_LEN, OtaCommand, OtaError, VERSION, checksum, counter_of, new_cmac, take_lv,
};
use crate::ids::{Iccid, Imsi};
use crate::secret::OtaKey;
use cmac::Mac;

/// What the response MAC covers first, before the response itself.
pub const RESPONSE_DOMAIN: &[u8] = b"tresor OTA response";

/// The response status codes the card uses (after TS 102 225's response status codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseStatus {
    /// 00: the command was carried out.
    PorOk,
}

impl ResponseStatus {
    pub fn code(self) -> u8 {
        match self {
            Self::PorOk => 0x00,
        }
    }
}

/// A card's response, as the card makes it and MNO-A expects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub command: OtaCommand,
    pub counter: u64,
    pub status: ResponseStatus,
    pub iccid: Iccid,
    /// The IMSI of the profile the command was MACed for (the card's current IMSI).
    pub imsi: Imsi,
    /// For "activate TRE": the campaign and new operator the card took from the command.
    pub activation: Option<Activation>,
}

/// The card's side: the response, MACed with `kid`.
pub fn seal_response(kid: &OtaKey, response: &Response) -> Result<Vec<u8>, OtaError> {
    if response.counter > super::COUNTER_MAX {
        return Err(OtaError::CounterRange);
    }
    let (campaign, operator) = match &response.activation {
        Some(a) => (a.campaign(), a.operator()),
        None => ("", ""),
    };
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.push(response.command.code());
    out.extend_from_slice(&response.counter.to_be_bytes()[3..]);
    out.push(response.status.code());
    for field in [response.iccid.as_str(), response.imsi.as_str(), campaign, operator] {
        let len = u8::try_from(field.len()).map_err(|_| OtaError::ResponseMalformed("field"))?;
        out.push(len);
        out.extend_from_slice(field.as_bytes());
    }
    let mac = checksum(kid, &[RESPONSE_DOMAIN, &out]);
    out.extend_from_slice(&mac);
    Ok(out)
}

/// MNO-A's side: `bytes` must be a response MACed with `kid` that says exactly `expected`.
/// Checked in this order: syntax, MAC, status, then each field (command, counter, ICCID,
/// IMSI, campaign, operator), each refusal naming the field.
pub fn verify_response(bytes: &[u8], kid: &OtaKey, expected: &Response) -> Result<(), OtaError> {
    let malformed = OtaError::ResponseMalformed;
    let Some((body, mac)) = bytes.split_last_chunk::<MAC_LEN>() else {
        return Err(malformed("shorter than a MAC"));
    };
    let Some((&[version, code], rest)) = body.split_first_chunk::<2>() else {
        return Err(malformed("truncated header"));
    };
    if version != VERSION {
        return Err(malformed("not a response of format version 01"));
    }
    let Some((counter, rest)) = rest.split_first_chunk::<5>() else {
        return Err(malformed("truncated counter"));
    };
    let Some((&status, rest)) = rest.split_first() else {
        return Err(malformed("no status"));
    };
    let lv = |bytes, what| take_lv(bytes, what).map_err(|_| malformed(what));
    let (iccid, rest) = lv(rest, "ICCID")?;
    let (imsi, rest) = lv(rest, "IMSI")?;
    let (campaign, rest) = lv(rest, "campaign")?;
    let (operator, rest) = lv(rest, "operator")?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes before the MAC"));
    }
    let mut cmac = new_cmac(kid);
    cmac.update(RESPONSE_DOMAIN);
    cmac.update(body);
    cmac.verify_truncated_left(mac).map_err(|_| OtaError::ResponseBadMac)?;
    if status != ResponseStatus::PorOk.code() {
        return Err(OtaError::ResponseStatus(status));
    }
    let (want_campaign, want_operator) = match &expected.activation {
        Some(a) => (a.campaign(), a.operator()),
        None => ("", ""),
    };
    let checks: [(bool, &'static str); 6] = [
        (code == expected.command.code(), "command"),
        (counter_of(counter) == expected.counter, "counter"),
        (iccid == expected.iccid.as_str().as_bytes(), "ICCID"),
        (imsi == expected.imsi.as_str().as_bytes(), "IMSI"),
        (campaign == want_campaign.as_bytes(), "campaign"),
        (operator == want_operator.as_bytes(), "operator"),
    ];
    match checks.into_iter().find(|(ok, _)| !ok) {
        Some((_, field)) => Err(OtaError::ResponseMismatch(field)),
        None => Ok(()),
    }
}
