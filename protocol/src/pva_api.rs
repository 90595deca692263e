//! The PVA's HTTP API messages (DESIGN.md §2 steps 5–9, `docs/pva-api.md`): enrolment of a
//! device's AK by credential activation (TPM 2.0 Part 1 §24), nonce challenges, and appraisal
//! of evidence into a signed EAR. The device agent builds the requests, the RO relays them
//! unchanged, the PVA answers; every body is CBOR (RFC 8949, media type
//! `application/cbor`), a map with text keys, byte strings for TPM structures exactly as the
//! TPM produced them, or the same message in JSON with byte strings as base64url
//! (`crate::wire`). Errors are RFC 9457 problem documents (`transport::Problem`).
//!
//! Decoding is bounded ([`MAX_REQUEST_SIZE`]) and strict: unknown fields are refused, so a
//! message that means something else to its sender is not half-understood here.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ear::TrustTier;
use crate::evidence::MAX_EVIDENCE_SIZE;
use crate::ids::{DeviceId, Nonce};
use crate::wire::Format;

/// The media type of every request and response body except problems and health (the
/// default; `application/json` is the other, `crate::wire`).
pub const CBOR_MEDIA_TYPE: &str = crate::wire::CBOR_MEDIA_TYPE;

/// The routes, relative to the PVA's base URL.
pub mod path {
    /// POST [`EnrolRequest`](super::EnrolRequest) → [`EnrolResponse`](super::EnrolResponse).
    pub const ENROL: &str = "/v1/enrol";
    /// POST [`ActivateRequest`](super::ActivateRequest) →
    /// [`ActivateResponse`](super::ActivateResponse).
    pub const ACTIVATE: &str = "/v1/activate";
    /// POST [`ChallengeRequest`](super::ChallengeRequest) →
    /// [`ChallengeResponse`](super::ChallengeResponse).
    pub const CHALLENGE: &str = "/v1/challenge";
    /// POST [`AppraiseRequest`](super::AppraiseRequest) →
    /// [`AppraiseResponse`](super::AppraiseResponse).
    pub const APPRAISE: &str = "/v1/appraise";
    /// GET → `{"status":"ok", ...}` (JSON).
    pub const HEALTH: &str = "/v1/health";
    /// POST (no body), by the PVA's own certificate → `{"policies": [...], "default": id}`
    /// (JSON): the policies read again from the configuration file.
    pub const RELOAD_POLICIES: &str = "/v1/policies/reload";
}

/// Largest request body the PVA reads: an appraisal request is the evidence plus a few
/// bytes of framing.
pub const MAX_REQUEST_SIZE: usize = MAX_EVIDENCE_SIZE + 1024;
/// Largest response a client should read: an EAR with its certificate chain.
pub const MAX_RESPONSE_SIZE: usize = 64 * 1024;
/// Most EK certificate intermediates an enrolment may carry (`protocol::x509` considers 8).
pub const MAX_EK_INTERMEDIATES: usize = 8;

/// Why bytes are not the message expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("message is not of the expected shape: {0}")]
    Decode(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
    #[error("{0}")]
    Invalid(&'static str),
}

/// A message of this API: CBOR in both directions, decoding bounded by `max`.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Most bytes [`Message::from_cbor`] accepts.
    const MAX_SIZE: usize;

    fn to_cbor(&self) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::with_capacity(256);
        ciborium::into_writer(self, &mut out).map_err(|e| ApiError::Encode(e.to_string()))?;
        Ok(out)
    }

    fn from_cbor(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.len() > Self::MAX_SIZE {
            return Err(ApiError::TooLarge { size: bytes.len(), max: Self::MAX_SIZE });
        }
        let message: Self =
            ciborium::from_reader(bytes).map_err(|e| ApiError::Decode(e.to_string()))?;
        message.check()?;
        Ok(message)
    }

    /// JSON (`crate::wire`: byte strings as base64url), bounded and checked as CBOR is.
    fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        let message: Self = crate::wire::from_json(bytes, Self::MAX_SIZE).map_err(|e| match e {
            crate::wire::WireError::TooLarge { size, max } => ApiError::TooLarge { size, max },
            other => ApiError::Decode(other.to_string()),
        })?;
        message.check()?;
        Ok(message)
    }

    fn to_json(&self) -> Result<Vec<u8>, ApiError> {
        crate::wire::to_json(self).map_err(|e| ApiError::Encode(e.to_string()))
    }

    /// [`Message::from_cbor`] or [`Message::from_json`].
    fn decode(format: Format, bytes: &[u8]) -> Result<Self, ApiError> {
        match format {
            Format::Cbor => Self::from_cbor(bytes),
            Format::Json => Self::from_json(bytes),
        }
    }

    /// [`Message::to_cbor`] or [`Message::to_json`].
    fn encode(&self, format: Format) -> Result<Vec<u8>, ApiError> {
        match format {
            Format::Cbor => self.to_cbor(),
            Format::Json => self.to_json(),
        }
    }

    /// Checks beyond the shape (counts, lengths).
    fn check(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Step 5: the device presents its EK (certificate and public area) and the AK it wants
/// the PVA to accept. The PVA validates the EK certificate, checks the AK's attributes and
/// answers with a credential only this TPM can activate, and only for this AK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The TPM name of the EK. The PVA computes it from `ek_public` and refuses a mismatch.
    pub device_id: DeviceId,
    /// EK certificate, DER, as read from the TCG NV index.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_certificate: ByteBuf,
    /// Certificates between the EK certificate and a manufacturer root, DER, any order.
    #[serde(default, with = "crate::wire::bytes_list")]
    #[schema(value_type = Vec<crate::wire::Base64Url>)]
    pub ek_intermediates: Vec<ByteBuf>,
    /// Marshalled TPMT_PUBLIC of the EK.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_public: ByteBuf,
    /// Marshalled TPMT_PUBLIC of the AK.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ak_public: ByteBuf,
}

impl EnrolRequest {
    /// A request without EK certificate intermediates, from the bytes the TPM gave.
    pub fn new(
        device_id: DeviceId,
        ek_certificate: Vec<u8>,
        ek_public: Vec<u8>,
        ak_public: Vec<u8>,
    ) -> Self {
        Self {
            device_id,
            ek_certificate: ByteBuf::from(ek_certificate),
            ek_intermediates: Vec::new(),
            ek_public: ByteBuf::from(ek_public),
            ak_public: ByteBuf::from(ak_public),
        }
    }
}

impl Message for EnrolRequest {
    const MAX_SIZE: usize = MAX_REQUEST_SIZE;

    fn check(&self) -> Result<(), ApiError> {
        if self.ek_intermediates.len() > MAX_EK_INTERMEDIATES {
            return Err(ApiError::Invalid("too many EK certificate intermediates"));
        }
        Ok(())
    }
}

/// The credential for TPM2_ActivateCredential(AK, EK): tss-esapi takes these as
/// `IdObject::try_from(credential_blob)` and `EncryptedSecret::try_from(encrypted_secret)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolResponse {
    pub device_id: DeviceId,
    /// TPM2B_ID_OBJECT body: TPM2B_DIGEST(integrityHMAC) ‖ encIdentity.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub credential_blob: ByteBuf,
    /// TPM2B_ENCRYPTED_SECRET body: the OAEP ciphertext or the ephemeral ECC point.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub encrypted_secret: ByteBuf,
    /// The TPM name of the AK the credential is bound to.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ak_name: ByteBuf,
    /// Seconds since the Unix epoch after which the credential is no longer accepted.
    pub expires_at: u64,
}

impl Message for EnrolResponse {
    const MAX_SIZE: usize = MAX_RESPONSE_SIZE;
}

/// What TPM2_ActivateCredential returned: proof that the AK lives in the EK's TPM.
/// Compares in constant time, zeroizes on drop, never prints.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CredentialSecret([u8; CredentialSecret::LEN]);

impl CredentialSecret {
    pub const LEN: usize = 32;

    pub fn new(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, ApiError> {
        let arr: [u8; Self::LEN] = bytes
            .try_into()
            .map_err(|_| ApiError::Invalid("credential secret must be 32 bytes"))?;
        Ok(Self(arr))
    }

    /// A fresh secret from the operating system's CSPRNG.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; Self::LEN];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The secret bytes. Callers must not log them.
    pub fn expose(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        other.len() == Self::LEN && bool::from(self.0.ct_eq(other))
    }
}

impl PartialEq for CredentialSecret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(&other.0)
    }
}

impl Eq for CredentialSecret {}

impl fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialSecret(…)")
    }
}

/// A byte string in CBOR, base64url in JSON (`crate::wire`); every copy zeroized.
impl Serialize for CredentialSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&zeroize::Zeroizing::new(crate::wire::base64url(&self.0)))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for CredentialSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let bytes = if d.is_human_readable() {
            let text = zeroize::Zeroizing::new(String::deserialize(d)?);
            zeroize::Zeroizing::new(crate::wire::from_base64url(&text).map_err(D::Error::custom)?)
        } else {
            zeroize::Zeroizing::new(ByteBuf::deserialize(d)?.into_vec())
        };
        Self::from_slice(&bytes).map_err(D::Error::custom)
    }
}

impl utoipa::PartialSchema for CredentialSecret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::wire::string_schema(
            "The 32-byte secret TPM2_ActivateCredential released: base64url without padding \
             in JSON, a byte string in CBOR",
            "^[A-Za-z0-9_-]{43}$",
        )
    }
}

impl utoipa::ToSchema for CredentialSecret {}

/// Step 5, second half: the secret the TPM recovered. One attempt per credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub device_id: DeviceId,
    /// The TPM name of the AK, as in the [`EnrolResponse`].
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ak_name: ByteBuf,
    pub secret: CredentialSecret,
}

impl Message for ActivateRequest {
    const MAX_SIZE: usize = 4096;
}

/// The AK is enrolled: from now on the PVA appraises this device's evidence with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateResponse {
    pub device_id: DeviceId,
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ak_name: ByteBuf,
}

impl Message for ActivateResponse {
    const MAX_SIZE: usize = MAX_RESPONSE_SIZE;
}

/// Step 8: a fresh nonce for an enrolled device, to be used as qualifying data of its
/// quote and of its bundle key's certification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub device_id: DeviceId,
    /// The appraisal policy (reference values) to apply; the PVA's default when absent.
    #[serde(default)]
    pub policy_id: Option<String>,
}

impl Message for ChallengeRequest {
    const MAX_SIZE: usize = 4096;
}

/// A single-use nonce, bound to one device and one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    pub device_id: DeviceId,
    pub nonce: Nonce,
    /// Seconds since the Unix epoch after which the nonce is refused.
    pub expires_at: u64,
    pub policy_id: String,
    /// The PCR selection the quote must cover and the bundle key must be bound to
    /// (tpm2-tools syntax, e.g. `sha256:0,2,4,8,9`).
    pub pcr_selection: String,
}

impl Message for ChallengeResponse {
    const MAX_SIZE: usize = MAX_RESPONSE_SIZE;
}

/// Step 8, second half: the evidence (`protocol::evidence::Evidence`, CBOR), carried as
/// bytes so that the RO relays it without re-encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppraiseRequest {
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub evidence: ByteBuf,
}

impl AppraiseRequest {
    /// From CBOR evidence (`Evidence::to_cbor`).
    pub fn new(evidence: Vec<u8>) -> Self {
        Self { evidence: ByteBuf::from(evidence) }
    }
}

impl Message for AppraiseRequest {
    const MAX_SIZE: usize = MAX_REQUEST_SIZE;

    fn check(&self) -> Result<(), ApiError> {
        if self.evidence.len() > MAX_EVIDENCE_SIZE {
            return Err(ApiError::TooLarge { size: self.evidence.len(), max: MAX_EVIDENCE_SIZE });
        }
        Ok(())
    }
}

/// Step 9: the signed EAR, and an unsigned summary of it for logs. Relying parties decide
/// on the EAR alone, after `protocol::ear::EarVerifier::verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppraiseResponse {
    /// COSE_Sign1 (tag 18) over the EAR claims set.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ear: ByteBuf,
    /// The EAR's `ear.status` (informational copy).
    pub status: TrustTier,
    /// The names of the checks that failed (informational copy of the EAR's list).
    pub failed_checks: Vec<String>,
}

impl Message for AppraiseResponse {
    const MAX_SIZE: usize = MAX_RESPONSE_SIZE;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([0x5A; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let enrol = EnrolRequest {
            device_id: device(),
            ek_certificate: ByteBuf::from(vec![0x30; 10]),
            ek_intermediates: vec![],
            ek_public: ByteBuf::from(vec![0; 8]),
            ak_public: ByteBuf::from(vec![1; 8]),
        };
        assert_eq!(EnrolRequest::from_cbor(&enrol.to_cbor().unwrap()).unwrap(), enrol);
        let activate = ActivateRequest {
            device_id: device(),
            ak_name: ByteBuf::from(vec![0, 0x0B]),
            secret: CredentialSecret::new([7; 32]),
        };
        assert_eq!(ActivateRequest::from_cbor(&activate.to_cbor().unwrap()).unwrap(), activate);
        let challenge = ChallengeResponse {
            device_id: device(),
            nonce: Nonce::random().unwrap(),
            expires_at: 1,
            policy_id: "p".into(),
            pcr_selection: "sha256:0".into(),
        };
        assert_eq!(ChallengeResponse::from_cbor(&challenge.to_cbor().unwrap()).unwrap(), challenge);
        let appraised = AppraiseResponse {
            ear: ByteBuf::from(vec![0xD2]),
            status: TrustTier::Contraindicated,
            failed_checks: vec!["pcr-digest-mismatch".into()],
        };
        assert_eq!(AppraiseResponse::from_cbor(&appraised.to_cbor().unwrap()).unwrap(), appraised);
    }

    #[test]
    fn refuses_oversize_unknown_fields_and_bad_secrets() {
        let big = vec![0u8; ActivateRequest::MAX_SIZE + 1];
        assert!(matches!(ActivateRequest::from_cbor(&big), Err(ApiError::TooLarge { .. })));
        let mut value = ciborium::Value::Map(vec![(
            ciborium::Value::Text("device_id".into()),
            ciborium::Value::Bytes(device().as_bytes().to_vec()),
        )]);
        if let ciborium::Value::Map(m) = &mut value {
            m.push((ciborium::Value::Text("extra".into()), ciborium::Value::Bool(true)));
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&value, &mut bytes).unwrap();
        assert!(matches!(ChallengeRequest::from_cbor(&bytes), Err(ApiError::Decode(_))));
        assert!(CredentialSecret::from_slice(&[0; 31]).is_err());
        let secret = CredentialSecret::new([9; 32]);
        assert_eq!(format!("{secret:?}"), "CredentialSecret(…)");
        assert!(secret.ct_eq(&[9; 32]));
        assert!(!secret.ct_eq(&[9; 31]));
        assert!(!secret.ct_eq(&[8; 32]));
    }

    #[test]
    fn json_is_as_strict_as_cbor() {
        let activate = ActivateRequest {
            device_id: device(),
            ak_name: ByteBuf::from(vec![0, 0x0B]),
            secret: CredentialSecret::new([7; 32]),
        };
        let json = activate.to_json().unwrap();
        assert_eq!(ActivateRequest::decode(Format::Json, &json).unwrap(), activate);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["extra"] = true.into();
        let unknown = serde_json::to_vec(&value).unwrap();
        assert!(matches!(ActivateRequest::from_json(&unknown), Err(ApiError::Decode(_))));
        value.as_object_mut().unwrap().remove("extra");
        value["secret"] = crate::wire::base64url(&[7; 31]).into();
        let Err(ApiError::Decode(why)) =
            ActivateRequest::from_json(&serde_json::to_vec(&value).unwrap())
        else {
            panic!("a short secret is refused")
        };
        assert!(why.contains("`secret`"), "{why}");
        assert!(!why.contains(&crate::wire::base64url(&[7; 31])), "the secret is not echoed");
        let big = vec![b' '; ActivateRequest::MAX_SIZE + 1];
        assert!(matches!(ActivateRequest::from_json(&big), Err(ApiError::TooLarge { .. })));
        let enrol = too_many_intermediates();
        assert!(matches!(
            EnrolRequest::decode(Format::Json, &enrol.to_json().unwrap()),
            Err(ApiError::Invalid(_))
        ));
    }

    fn too_many_intermediates() -> EnrolRequest {
        EnrolRequest {
            device_id: device(),
            ek_certificate: ByteBuf::from(vec![0x30; 10]),
            ek_intermediates: vec![ByteBuf::from(vec![1]); MAX_EK_INTERMEDIATES + 1],
            ek_public: ByteBuf::from(vec![0; 8]),
            ak_public: ByteBuf::from(vec![1; 8]),
        }
    }

    #[test]
    fn too_many_intermediates_are_refused() {
        let enrol = too_many_intermediates();
        assert!(matches!(
            EnrolRequest::from_cbor(&enrol.to_cbor().unwrap()),
            Err(ApiError::Invalid(_))
        ));
    }
}
