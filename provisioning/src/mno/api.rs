//! The operators' HTTP API messages (docs/flow.md steps 2–4, 6, 9–10, 12; `docs/mno.md`
//! "API"). JSON (`application/json`) for administration — campaigns, prepare, register,
//! reports, status — and CBOR (`application/cbor`) where a body carries an OTA command, an
//! IMSI list, a COSE object or AKA values; those routes also take and give the same
//! messages in JSON, byte strings as base64url (`protocol::wire`). Every message refuses
//! unknown fields.

use std::fmt;
use std::str::FromStr;

use protocol::{DeviceId, Iccid, Imsi};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use super::error::{MnoError, Result};
use super::records::SubscriberView;

pub const CBOR: &str = "application/cbor";
pub const JSON: &str = "application/json";

/// Most devices in one campaign.
pub const MAX_DEVICES: usize = 10_000;
/// Body limit of the campaign and IMSI-list routes (10 000 devices fit).
pub const MAX_BULK_BODY: usize = 2 * 1024 * 1024;
/// Body limit of every other route (an EAR is at most 64 KiB).
pub const MAX_DEVICE_BODY: usize = 128 * 1024;
/// Longest failure reason kept from a report.
pub const MAX_REASON_LEN: usize = 1024;

/// Routes, relative to an operator's base URL.
pub mod path {
    use super::CampaignId;
    use protocol::{DeviceId, Imsi};

    pub const HEALTH: &str = "/health";
    pub const CAMPAIGNS: &str = "/v1/campaigns";
    pub const REPORTS: &str = "/v1/reports";

    pub fn campaign(id: &CampaignId) -> String {
        format!("/v1/campaigns/{id}")
    }
    pub fn prepare(id: &CampaignId) -> String {
        format!("/v1/campaigns/{id}/prepare")
    }
    pub fn imsi_list(id: &CampaignId) -> String {
        format!("/v1/campaigns/{id}/imsi-list")
    }
    /// `action`: `activate-tre`, `tre-activated`, `register`, `attestation`,
    /// `aka-challenge`, `aka-response`.
    pub fn device(id: &CampaignId, device: &DeviceId, action: &str) -> String {
        format!("/v1/campaigns/{id}/devices/{device}/{action}")
    }
    pub fn subscriber(imsi: &Imsi) -> String {
        format!("/v1/subscribers/{imsi}")
    }
}

/// A campaign id as the RO chose it: 1 to 64 of `A–Z a–z 0–9 . _ -`, so it is safe in a
/// URL path and a log line.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CampaignId(String);

impl CampaignId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CampaignId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, &'static str> {
        if protocol::ids::valid_campaign_id(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err("1 to 64 of A-Z a-z 0-9 . _ -")
        }
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl utoipa::PartialSchema for CampaignId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        protocol::wire::string_schema("Campaign id, as the RO chose it", "^[A-Za-z0-9._-]{1,64}$")
    }
}

impl utoipa::ToSchema for CampaignId {}

impl Serialize for CampaignId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CampaignId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// `POST /v1/campaigns` (JSON, from the RO): the campaign as the subscriber created it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub id: CampaignId,
    /// The old operator (MNO-A).
    pub from: String,
    /// The new operator (MNO-B).
    pub to: String,
    pub devices: Vec<CampaignDevice>,
}

/// A device of a campaign: its id (EK name) and the ICCID of its current (old) profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignDevice {
    pub device_id: DeviceId,
    pub iccid: Iccid,
}

impl CampaignRequest {
    /// Structural checks, independent of this operator's state.
    pub fn validate(&self) -> Result<()> {
        let invalid = |r: &str| Err(MnoError::InvalidCampaign(r.into()));
        if self.from == self.to {
            return invalid("from and to name the same operator");
        }
        for name in [&self.from, &self.to] {
            // Role names (`protocol::role`): MNO-A names the new one in its OTA command.
            if !protocol::role::valid_name(name) {
                return invalid("operator names are role names: 1 to 63 of a-z 0-9 -");
            }
        }
        if self.devices.is_empty() || self.devices.len() > MAX_DEVICES {
            return invalid(&format!("a campaign has 1 to {MAX_DEVICES} devices"));
        }
        let mut ids: Vec<&DeviceId> = self.devices.iter().map(|d| &d.device_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return invalid("a device is listed twice");
        }
        let mut iccids: Vec<&Iccid> = self.devices.iter().map(|d| &d.iccid).collect();
        iccids.sort_unstable();
        if iccids.windows(2).any(|w| w[0] == w[1]) {
            return invalid("an ICCID is listed twice");
        }
        Ok(())
    }

    /// SHA-256 over the canonical content (devices in id order): two requests with the same
    /// digest are the same campaign.
    pub(crate) fn digest(&self) -> Vec<u8> {
        let mut devices: Vec<&CampaignDevice> = self.devices.iter().collect();
        devices.sort_unstable_by(|a, b| a.device_id.cmp(&b.device_id));
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [self.id.as_str(), &self.from, &self.to] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        for d in devices {
            ctx.update(d.device_id.as_bytes());
            ctx.update(&[0]);
            ctx.update(d.iccid.as_str().as_bytes());
            ctx.update(&[0]);
        }
        ctx.finish().as_ref().to_vec()
    }
}

/// `POST /v1/campaigns/{id}/imsi-list` (CBOR, MNO-B → MNO-A, step 3): one new IMSI per
/// device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImsiList {
    pub entries: Vec<ImsiListEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImsiListEntry {
    pub device_id: DeviceId,
    /// The device's current ICCID (of the old operator's profile).
    pub iccid: Iccid,
    /// IMSI_B: the new operator's IMSI for the device.
    pub imsi: Imsi,
}

/// The old operator's answer to an IMSI list (CBOR).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImsiListAck {
    pub accepted: u64,
}

/// The answer to `POST /v1/campaigns/{id}/prepare` (JSON): the list sent to the old
/// operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareResponse {
    pub campaign: CampaignId,
    pub entries: Vec<ImsiListEntry>,
}

/// The answer to `POST …/activate-tre` (CBOR, step 4): the OTA command APDU of
/// `protocol::ota` for the device's UICC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateTreResponse {
    #[serde(with = "protocol::wire::bytes")]
    #[schema(value_type = protocol::wire::Base64Url)]
    pub command: ByteBuf,
    /// The OTA counter the command carries.
    pub counter: u64,
}

/// `POST …/tre-activated` (CBOR, RO → old operator, step 4 confirmed): the card's MACed
/// response to the activate-TRE command (`protocol::ota::response`), as the device attached
/// with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TreActivated {
    #[serde(with = "protocol::wire::bytes")]
    #[schema(value_type = protocol::wire::Base64Url)]
    pub response: ByteBuf,
}

/// The old operator's answer to a verified activation (CBOR): which subscription the card
/// proved it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TreActivatedAck {
    pub iccid: Iccid,
    pub imsi: Imsi,
    /// The OTA counter of the command the card answered.
    pub counter: u64,
}

/// The answer to `POST …/register` (JSON, steps 6–7): the new operator asks for validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    /// Always true: no profile without an attestation result.
    pub validation_required: bool,
    /// Common names whose EARs this operator accepts (`pva`).
    pub ear_signers: Vec<String>,
}

/// The answer to `POST …/attestation` (CBOR, steps 10–11): the new subscription end to end
/// to the device (issue 12, "Trust boundaries"), and the facts the DPF needs to check the
/// device's install receipt. Nothing here is secret: K, OPc and the OTA keys travel only
/// inside `bundle`, which the operator signed and encrypted itself to the bundle key of the
/// EAR it verified, so only the attested device's TPM can open it; the RO relays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationResponse {
    /// COSE_Encrypt (`protocol::bundle::encrypt_bundle`) of the signed profile, to the EAR's
    /// bundle key, bound to the device id and SHA-256 of the EAR.
    #[serde(with = "protocol::wire::bytes")]
    #[schema(value_type = protocol::wire::Base64Url)]
    pub bundle: ByteBuf,
    /// The device the profile names.
    pub device_id: DeviceId,
    /// The ICCID the campaign pairs the device with (its current, old profile), as this
    /// operator was told it.
    pub campaign_iccid: Iccid,
    /// The new profile's ICCID and IMSI, as the install receipt names them.
    pub iccid: Iccid,
    pub imsi: Imsi,
    /// The profile's anti-rollback sequence: the EAR's rollback counter + 1.
    pub sequence: u64,
}

/// The answer to `POST …/aka-challenge` (CBOR, step 12): RAND and AUTN for the USIM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AkaChallenge {
    #[serde(with = "protocol::wire::bytes")]
    #[schema(value_type = protocol::wire::Base64Url)]
    pub rand: ByteBuf,
    #[serde(with = "protocol::wire::bytes")]
    #[schema(value_type = protocol::wire::Base64Url)]
    pub autn: ByteBuf,
}

/// The answer to `POST …/aka-response` (CBOR; the request is
/// `protocol::device_api::AkaResult` as the device posted it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum AkaVerdict {
    /// RES = XRES: the subscription is live.
    Live,
    /// The card sent AUTS; the AuC resynchronised and asks again with this challenge.
    Challenge {
        #[serde(with = "protocol::wire::bytes")]
        #[schema(value_type = protocol::wire::Base64Url)]
        rand: ByteBuf,
        #[serde(with = "protocol::wire::bytes")]
        #[schema(value_type = protocol::wire::Base64Url)]
        autn: ByteBuf,
    },
}

/// How a device's change ended, as the DPF reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportOutcome {
    Success,
    Failure,
}

impl ReportOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// `POST /v1/reports` (JSON, from the RO's DPF, step 12): one device's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub campaign: CampaignId,
    pub device_id: DeviceId,
    pub outcome: ReportOutcome,
    /// The TR 33.812 step that failed (failures).
    #[serde(default)]
    pub step: Option<u8>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a report (JSON): what the operator did with the subscription concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportAck {
    pub campaign: CampaignId,
    pub device_id: DeviceId,
    pub outcome: ReportOutcome,
    pub subscriber: Option<SubscriberView>,
}

/// Which side of a campaign this operator is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    /// The campaign's `from`: MNO-A.
    OldOperator,
    /// The campaign's `to`: MNO-B.
    NewOperator,
}

/// Where a device stands at this operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceStage {
    // Old operator.
    AwaitingImsiList,
    ImsiListReceived,
    TreActivationIssued,
    /// The card proved the activation (its MACed response verified).
    TreActivated,
    // New operator.
    AwaitingPrepare,
    ImsiAllocated,
    ImsiListSent,
    Registered,
    ProfileIssued,
    Live,
    // Both, after the report.
    Switched,
    Failed,
}

/// `GET /v1/campaigns/{id}` (JSON): identifiers and stages, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignStatus {
    pub id: CampaignId,
    pub from: String,
    pub to: String,
    pub party: Party,
    pub devices: Vec<DeviceStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceStatus {
    pub device_id: DeviceId,
    pub iccid: Iccid,
    /// The old operator's IMSI (known to the old operator).
    pub old_imsi: Option<Imsi>,
    /// The new operator's IMSI (allocated by the new operator, listed to the old one).
    pub new_imsi: Option<Imsi>,
    pub stage: DeviceStage,
    pub report: Option<ReportOutcome>,
}

/// `GET /health` and `GET /ready` (JSON, `transport::health`): open to anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub status: String,
    pub role: String,
    /// The operator's name.
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<std::collections::BTreeMap<String, String>>,
}

/// CBOR-encodes a message.
pub fn to_cbor<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(message, &mut out).map_err(|_| MnoError::Internal("CBOR encoding"))?;
    Ok(out)
}

/// Decodes a CBOR message (the caller bounds the length); trailing bytes are refused.
pub fn from_cbor<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader)
        .map_err(|e| MnoError::BadBody { expected: "CBOR", reason: cbor_reason(&e) })?;
    if !reader.is_empty() {
        return Err(MnoError::BadBody { expected: "CBOR", reason: "trailing bytes".into() });
    }
    Ok(value)
}

/// A short reason that does not echo the input (ciborium's messages name types and
/// offsets, never bytes).
fn cbor_reason<E: fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "truncated".into(),
        ciborium::de::Error::Syntax(offset) => format!("syntax error at byte {offset}"),
        ciborium::de::Error::Semantic(_, msg) => msg.chars().take(200).collect(),
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([n; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    #[test]
    fn campaign_ids_are_url_safe() {
        assert!("c-2024.01_a".parse::<CampaignId>().is_ok());
        for bad in ["", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(bad.parse::<CampaignId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn campaign_validation_and_digest() {
        let mut c = CampaignRequest {
            id: "c1".parse().unwrap(),
            from: "mno-a".into(),
            to: "mno-b".into(),
            devices: vec![
                CampaignDevice {
                    device_id: device(1),
                    iccid: "89001010000000000018".parse().unwrap(),
                },
                CampaignDevice {
                    device_id: device(2),
                    iccid: "89001010000000000026".parse().unwrap(),
                },
            ],
        };
        c.validate().unwrap();
        let d = c.digest();
        c.devices.reverse();
        assert_eq!(c.digest(), d, "order does not matter");
        c.devices[1].iccid = c.devices[0].iccid.clone();
        assert!(c.validate().is_err());
        c.devices.truncate(0);
        assert!(c.validate().is_err());
    }

    #[test]
    fn cbor_round_trip_and_trailing_bytes() {
        let v = AkaVerdict::Challenge {
            rand: ByteBuf::from(vec![1; 16]),
            autn: ByteBuf::from(vec![2; 16]),
        };
        let mut bytes = to_cbor(&v).unwrap();
        assert_eq!(from_cbor::<AkaVerdict>(&bytes).unwrap(), v);
        bytes.push(0);
        assert!(from_cbor::<AkaVerdict>(&bytes).is_err());
        assert!(from_cbor::<ImsiList>(&[0xff]).is_err());
    }
}
