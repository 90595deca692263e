//! The device's authenticated channel to the RO (docs/flow.md "The device channel"): every
//! request of a device agent is signed by its AK, with a nonce the RO issued, so the RO acts
//! only on requests of the TPM it bound to the device id, and only once.
//!
//! Binding (once per AK, before anything else): the device presents its EK certificate, EK
//! and AK public areas (`POST /v1/devices/{id}/credential`, [`CredentialRequest`]); the RO
//! checks the EK certificate and the AK's attributes and answers with TPM2_MakeCredential for
//! the AK's name under the EK ([`CredentialChallenge`]); the device's TPM releases the
//! secret only if the AK lives beside that EK (TPM2_ActivateCredential, TPM 2.0 Part 1 §24),
//! and the device posts it back (`…/credential/activate`, [`CredentialProof`]). Until then a
//! device gets nothing: no task, no relay, no call to a peer.
//!
//! Requests: each carries the [`NONCE_HEADER`] (a nonce from the RO's last answer, single
//! use, valid [`NONCE_TTL_SECS`]) and the [`SIGNATURE_HEADER`] (TPM2_Hash + TPM2_Sign by the
//! AK over [`RequestStatement::to_cbor`], hex of the TPMT_SIGNATURE). Every answer of the RO,
//! refusals included, carries a fresh nonce in [`NEXT_NONCE_HEADER`]. A replayed request
//! names a used nonce and is refused; a request for another device names another device id;
//! a restarted RO forgets its nonces, and the device retries with the one its refusal gave.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::bundle::encode;
use crate::ids::DeviceId;
use crate::receipt::ReceiptError;
use crate::tpm::public::{ObjectAttributes, Public};
use crate::tpm::signature::Signature;
use crate::tpm::wire::Unmarshal;

/// Request header: the RO-issued nonce this request uses (hex, 32 bytes).
pub const NONCE_HEADER: &str = "tresor-device-nonce";
/// Request header: the AK's signature over the [`RequestStatement`] (hex TPMT_SIGNATURE).
pub const SIGNATURE_HEADER: &str = "tresor-device-signature";
/// Response header: a fresh nonce for the device's next request (hex, 32 bytes).
pub const NEXT_NONCE_HEADER: &str = "tresor-next-nonce";
/// How long an issued nonce stays usable.
pub const NONCE_TTL_SECS: u64 = 120;
/// Length of a device nonce.
pub const NONCE_LEN: usize = 32;

/// Domain label of a request statement (distinct from every other thing an AK signs).
const KIND: &str = "tresor-device-request-v1";

/// What the AK signs for one request: the device, the request line, the RO's nonce and the
/// body's SHA-256. A CBOR map, so never TPM_GENERATED_VALUE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestStatement {
    pub kind: String,
    pub device_id: DeviceId,
    pub method: String,
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; NONCE_LEN],
    #[serde(with = "serde_bytes")]
    pub body: [u8; 32],
}

impl RequestStatement {
    pub fn new(
        device_id: DeviceId,
        method: &str,
        path: &str,
        nonce: [u8; NONCE_LEN],
        body: &[u8],
    ) -> Self {
        let body: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, body)
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        Self {
            kind: KIND.into(),
            device_id,
            method: method.to_ascii_uppercase(),
            path: path.into(),
            nonce,
            body,
        }
    }

    /// The bytes the AK signs.
    pub fn to_cbor(&self) -> Result<Vec<u8>, ReceiptError> {
        encode(self).map_err(ReceiptError::Encode)
    }

    /// Checks that `signature` (a marshalled TPMT_SIGNATURE) is `ak`'s over this statement.
    pub fn verify(&self, ak: &Public, signature: &[u8]) -> Result<(), ReceiptError> {
        let signature = Signature::from_bytes(signature).map_err(ReceiptError::SignatureFormat)?;
        signature.verify(ak, &self.to_cbor()?).map_err(ReceiptError::BadSignature)
    }
}

/// Binding, first message: who the device claims to be, and the AK it will sign with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    /// EK certificate, DER.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_certificate: ByteBuf,
    /// Marshalled TPMT_PUBLIC of the EK; its name is the device id.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_public: ByteBuf,
    /// Marshalled TPMT_PUBLIC of the AK.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ak_public: ByteBuf,
}

/// Binding, the RO's challenge: TPM2_MakeCredential's output for the AK under the EK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialChallenge {
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub id_object: ByteBuf,
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub encrypted_secret: ByteBuf,
}

/// Binding, the device's answer: the secret TPM2_ActivateCredential released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialProof {
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub secret: ByteBuf,
}

/// The attributes a device-channel AK must have: created in the TPM and never leaving it,
/// a restricted signing key (as every AK), never a decryption key.
pub fn check_ak_attributes(ak: &Public) -> Result<(), String> {
    let required = ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::SIGN_ENCRYPT;
    if !ak.attributes.contains(required) {
        return Err(format!(
            "the AK lacks {}",
            ObjectAttributes::from_bits(required.bits() & !ak.attributes.bits())
                .map(|a| a.names().collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ));
    }
    if ak.attributes.contains(ObjectAttributes::DECRYPT) {
        return Err("the AK is a decryption key".into());
    }
    Ok(())
}

/// Parses a hex nonce header.
pub fn parse_nonce(hex_nonce: &str) -> Option<[u8; NONCE_LEN]> {
    hex::decode(hex_nonce).ok()?.try_into().ok()
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
    fn a_statement_is_a_map_bound_to_every_part_of_the_request() {
        let base = RequestStatement::new(device(), "get", "/v1/devices/x/task", [1; 32], b"");
        let bytes = base.to_cbor().unwrap();
        assert_eq!(bytes[0] >> 5, 5, "a CBOR map, never TPM_GENERATED_VALUE");
        assert_eq!(base.method, "GET");
        let variants = [
            RequestStatement::new(device(), "POST", "/v1/devices/x/task", [1; 32], b""),
            RequestStatement::new(device(), "GET", "/v1/devices/y/task", [1; 32], b""),
            RequestStatement::new(device(), "GET", "/v1/devices/x/task", [2; 32], b""),
            RequestStatement::new(device(), "GET", "/v1/devices/x/task", [1; 32], b"x"),
        ];
        for v in variants {
            assert_ne!(v.to_cbor().unwrap(), bytes);
        }
    }

    #[test]
    fn nonces_parse_only_at_their_length() {
        assert_eq!(parse_nonce(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_nonce(&"ab".repeat(31)), None);
        assert_eq!(parse_nonce("zz"), None);
    }
}
