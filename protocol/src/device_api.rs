//! The device API of the RO (docs/flow.md, steps 4–12): what a device agent asks the
//! registration operator and what it posts back. The device long-polls for one
//! [`DeviceTask`] at a time and answers it at the endpoint the task's kind implies.
//!
//! Every message is CBOR (`application/cbor`), or JSON (`application/json`) with byte
//! strings as base64url (`crate::wire`); TPM structures and COSE objects travel as byte
//! strings exactly as produced.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{DeviceId, Nonce};
use crate::wire::Format;

/// Largest device API message accepted by either side (the biggest, an evidence or an
/// install task, is a few kilobytes).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// What the RO asks the device to do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Externally tagged: serde buffers internally tagged enums in a form that forgets the
// CBOR deserializer is not human-readable, which breaks the byte-string newtypes.
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum DeviceTask {
    /// Nothing yet: poll again.
    Idle,
    /// Step 4: hand MNO-A's OTA command to the UICC, then attach (step 5).
    ActivateTre {
        campaign: String,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        command: ByteBuf,
    },
    /// Step 8, first time: post the PVA's enrolment request (`protocol::pva_api::EnrolRequest`:
    /// EK certificate, EK and AK public areas); the RO relays it unchanged.
    Enrol,
    /// Step 8: answer the PVA's MakeCredential challenge with TPM2_ActivateCredential and
    /// post `protocol::pva_api::ActivateRequest`.
    ActivateCredential {
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        id_object: ByteBuf,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        encrypted_secret: ByteBuf,
    },
    /// Step 8: produce evidence for this nonce, quoting (and binding the bundle key to)
    /// the PVA's PCR selection in tpm2-tools syntax, e.g. `sha256:0,2,4,8,9`.
    Attest { nonce: Nonce, pcr_selection: String },
    /// Step 11: decrypt, check and install the bundle; `ear` is the attestation result it
    /// was released on (its hash is bound into the bundle's AAD), which the device checks
    /// itself. The operator whose signature the profile must carry is not named here: the
    /// device learnt it from MNO-A's MACed activate-TRE command.
    Install {
        campaign: String,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        bundle: ByteBuf,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        ear: ByteBuf,
    },
    /// Step 12: run USIM AUTHENTICATE for the new operator's AuC.
    Aka {
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        rand: ByteBuf,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        autn: ByteBuf,
    },
    /// Step 12, the commit point: the new operator's AuC accepted the new USIM; make the
    /// change of `campaign` (the profile of `sequence`) permanent on the card, dropping the
    /// old profile kept as fallback, and post [`CommitResult`]. `order` is the RO's signed
    /// commit order (`protocol::order`), which the device verifies first.
    Commit {
        campaign: String,
        sequence: u64,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        order: ByteBuf,
    },
    /// The change of `campaign` is abandoned: restore the old profile with the USIM active
    /// (if the card has not committed) and post [`AbortAck`]. `order` is the RO's signed
    /// abort order.
    Abort {
        campaign: String,
        reason: String,
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        order: ByteBuf,
    },
    /// The change of `campaign` is over: `switched` if the RO holds the device's word that
    /// the card committed, else rolled back (for `reason`). A device whose card has not
    /// committed that change restores its old profile, whatever it is told.
    Done { campaign: String, switched: bool, reason: Option<String> },
}

/// Step 5: a device attaches to the DRF with its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub device_id: DeviceId,
    /// EK certificate, DER.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_certificate: ByteBuf,
    /// Marshalled TPMT_PUBLIC of the EK (its name must be `device_id`).
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_public: ByteBuf,
    /// Whether the UICC accepted the activate-TRE command (TRE active, USIM inactive).
    pub tre_active: bool,
    /// The card's MACed answer to MNO-A's activate-TRE command (`protocol::ota::response`),
    /// which the RO forwards to MNO-A: the card's proof of its ICCID, its IMSI and the
    /// campaign it activated the TRE for. Empty when the card gave none.
    #[serde(default, with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub activation_proof: ByteBuf,
}

/// Step 11/12: how the installation went on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum InstallResult {
    /// Installed; the receipt is a `protocol::receipt::SignedReceipt`, CBOR.
    Installed {
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        receipt: ByteBuf,
    },
    /// Not installed; the old profile is active again with the USIM.
    Failed { reason: String },
}

/// Step 12: the USIM's answer to AUTHENTICATE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum AkaResult {
    Res {
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        res: ByteBuf,
    },
    /// Synchronisation failure: AUTS for the AuC to resynchronise.
    Auts {
        #[serde(with = "crate::wire::bytes")]
        #[schema(value_type = crate::wire::Base64Url)]
        auts: ByteBuf,
    },
    /// The USIM refused (MAC failure, or not active).
    Failed { reason: String },
}

/// The answer to [`DeviceTask::Commit`], signed like an install answer: what the card did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum CommitResult {
    /// The card committed: the new profile is permanent, the old one is gone.
    Committed { imsi: String },
    /// The card had already fallen back to the old profile (its fallback timer expired, or
    /// an abort came first): the change is rolled back.
    FellBack { imsi: String, reason: String },
}

/// The answer to [`DeviceTask::Abort`], signed like an install answer: which profile the
/// card runs now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortAck {
    pub usim_active: bool,
    pub tre_active: bool,
    pub imsi: String,
    /// The card had committed the change before the abort reached it: nothing was undone.
    #[serde(default)]
    pub committed: bool,
}

/// Why a device API message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DeviceApiError {
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("message is not of the expected shape: {0}")]
    Decode(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// CBOR-encodes a device API message.
pub fn to_cbor<T: Serialize>(message: &T) -> Result<Vec<u8>, DeviceApiError> {
    let mut out = Vec::new();
    ciborium::into_writer(message, &mut out).map_err(|e| DeviceApiError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a device API message, bounded by [`MAX_MESSAGE_SIZE`].
pub fn from_cbor<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DeviceApiError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DeviceApiError::TooLarge { size: bytes.len(), max: MAX_MESSAGE_SIZE });
    }
    ciborium::from_reader(bytes).map_err(|e| DeviceApiError::Decode(e.to_string()))
}

/// Decodes a device API message in `format` (JSON: `crate::wire`), bounded by
/// [`MAX_MESSAGE_SIZE`]; a JSON refusal names the field.
pub fn decode<T: for<'de> Deserialize<'de>>(
    format: Format,
    bytes: &[u8],
) -> Result<T, DeviceApiError> {
    match format {
        Format::Cbor => from_cbor(bytes),
        Format::Json => crate::wire::from_json(bytes, MAX_MESSAGE_SIZE).map_err(|e| match e {
            crate::wire::WireError::TooLarge { size, max } => {
                DeviceApiError::TooLarge { size, max }
            }
            other => DeviceApiError::Decode(other.to_string()),
        }),
    }
}

/// Encodes a device API message in `format`.
pub fn encode<T: Serialize>(format: Format, message: &T) -> Result<Vec<u8>, DeviceApiError> {
    match format {
        Format::Cbor => to_cbor(message),
        Format::Json => {
            crate::wire::to_json(message).map_err(|e| DeviceApiError::Encode(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tasks_round_trip() {
        let tasks = [
            DeviceTask::Idle,
            DeviceTask::ActivateTre { campaign: "c1".into(), command: ByteBuf::from(vec![1, 2]) },
            DeviceTask::Attest {
                nonce: Nonce::from_bytes(&[9; 32]).unwrap(),
                pcr_selection: "sha256:0,2".into(),
            },
            DeviceTask::Commit {
                campaign: "c1".into(),
                sequence: 3,
                order: ByteBuf::from(vec![0xd2]),
            },
            DeviceTask::Abort {
                campaign: "c1".into(),
                reason: "contraindicated".into(),
                order: ByteBuf::from(vec![0xd2]),
            },
            DeviceTask::Done { campaign: "c1".into(), switched: true, reason: None },
        ];
        for task in tasks {
            let bytes = to_cbor(&task).unwrap();
            assert_eq!(from_cbor::<DeviceTask>(&bytes).unwrap(), task);
        }
    }

    #[test]
    fn oversized_and_malformed_are_errors() {
        let huge = vec![0u8; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(from_cbor::<DeviceTask>(&huge), Err(DeviceApiError::TooLarge { .. })));
        assert!(matches!(from_cbor::<DeviceTask>(&[0xff, 0x00]), Err(DeviceApiError::Decode(_))));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = from_cbor::<DeviceTask>(&bytes);
            let _ = from_cbor::<AttachRequest>(&bytes);
            let _ = from_cbor::<InstallResult>(&bytes);
            let _ = from_cbor::<AkaResult>(&bytes);
            let _ = from_cbor::<CommitResult>(&bytes);
            let _ = from_cbor::<AbortAck>(&bytes);
            let _ = decode::<DeviceTask>(Format::Json, &bytes);
            let _ = decode::<AttachRequest>(Format::Json, &bytes);
        }
    }
}
