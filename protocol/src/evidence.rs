//! Evidence: what the TRE presents to the PVA for appraisal (DESIGN.md §3 "Evidence";
//! RFC 9334 §3.1 names the concept). One TPM2_Quote by the AK over the selected PCRs with
//! the PVA's nonce as qualifying data, the measurement event log that explains those PCRs
//! (empty when the TPM has none), optionally the PCR values quoted (TPM2_PCR_Read), and —
//! when the appraisal policy asks for one (`bundle_key = "required"`, the subscription
//! change) — one TPM2_Certify by the AK over the bundle key with the same nonce.
//!
//! Both optional fields were added to version 1 without a new version: a map without them
//! is what every earlier version-1 writer produced, so this reader reads all of them; a
//! writer leaves a field out (not null) when it has nothing to put there.
//!
//! Encoding: CBOR (RFC 8949), a map with text keys, byte strings for every TPM structure
//! exactly as the TPM produced it (marshalled TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC) so
//! that signatures can be checked over the bytes received, never over a re-encoding.
//! `docs/evidence.md` documents every field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::DeviceId;
use crate::tpm::HashAlg;

/// The evidence format this code writes and the only one it reads.
pub const EVIDENCE_VERSION: u32 = 1;

/// Evidence larger than this is refused before decoding: a real one is a few kilobytes,
/// most of it event log.
pub const MAX_EVIDENCE_SIZE: usize = 256 * 1024;

/// Why bytes are not evidence this code can appraise.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("evidence is not valid CBOR of the expected shape: {0}")]
    Decode(String),
    #[error("evidence version {0} is not supported (expected {EVIDENCE_VERSION})")]
    Version(u32),
    #[error("evidence could not be encoded: {0}")]
    Encode(String),
}

/// A TPM-signed attestation structure as the TPM returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedAttest {
    /// Marshalled TPMS_ATTEST: the signed message.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub attest: ByteBuf,
    /// Marshalled TPMT_SIGNATURE over `attest`.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub signature: ByteBuf,
}

/// The key the new operator encrypts the subscription bundle to, with the TPM's word for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleKeyEvidence {
    /// Marshalled TPMT_PUBLIC of the bundle key.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub public: ByteBuf,
    /// TPM2_Certify of the bundle key by the AK, qualifying data = the nonce.
    pub certify: SignedAttest,
}

/// Everything the PVA appraises (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub version: u32,
    /// TPM name of the EK.
    pub device_id: DeviceId,
    /// EK certificate, DER, as read from the TCG NV index.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ek_certificate: ByteBuf,
    /// Marshalled TPMT_PUBLIC of the AK. Informational: the PVA appraises with the AK it
    /// enrolled for `device_id`, never with this one.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub ak_public: ByteBuf,
    /// TPM2_Quote by the AK, qualifying data = the nonce.
    pub quote: SignedAttest,
    /// TCG PC Client crypto-agile event log (TCG_PCR_EVENT header + TCG_PCR_EVENT2s);
    /// empty: the TPM has no event log (a plain TPM, swtpm), which only a policy of pinned
    /// PCR values accepts.
    #[serde(with = "crate::wire::bytes")]
    #[schema(value_type = crate::wire::Base64Url)]
    pub event_log: ByteBuf,
    /// The values of the quoted PCRs as TPM2_PCR_Read returned them, bank → PCR → value:
    /// what the quote's PCR digest is a digest of (as `tpm2_quote -o` writes them). With
    /// them the PVA names the PCR that differs; without them it replays the event log.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::wire::pcr_values")]
    #[schema(value_type = Option<BTreeMap<HashAlg, BTreeMap<u8, crate::wire::Base64Url>>>)]
    pub pcr_values: Option<BTreeMap<HashAlg, BTreeMap<u8, ByteBuf>>>,
    /// The certified bundle key; absent in evidence for an attestation-only policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_key: Option<BundleKeyEvidence>,
    /// The TRE's anti-rollback NV counter: a bundle must carry a larger sequence number.
    pub rollback_counter: u64,
}

impl Evidence {
    /// CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>, EvidenceError> {
        let mut out = Vec::with_capacity(4096);
        ciborium::into_writer(self, &mut out).map_err(|e| EvidenceError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Decodes and checks the version; bounded by [`MAX_EVIDENCE_SIZE`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE_SIZE {
            return Err(EvidenceError::TooLarge { size: bytes.len(), max: MAX_EVIDENCE_SIZE });
        }
        let evidence: Self =
            ciborium::from_reader(bytes).map_err(|e| EvidenceError::Decode(e.to_string()))?;
        if evidence.version != EVIDENCE_VERSION {
            return Err(EvidenceError::Version(evidence.version));
        }
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Evidence {
        let mut name = vec![0x00, 0x0B];
        name.extend([0xA5; 32]);
        let signed = |tag: u8| SignedAttest {
            attest: ByteBuf::from(vec![tag; 100]),
            signature: ByteBuf::from(vec![tag; 72]),
        };
        Evidence {
            version: EVIDENCE_VERSION,
            device_id: DeviceId::from_name(&name).unwrap(),
            ek_certificate: ByteBuf::from(vec![0x30; 600]),
            ak_public: ByteBuf::from(vec![0x23; 90]),
            quote: signed(1),
            event_log: ByteBuf::from(vec![0; 2000]),
            pcr_values: None,
            bundle_key: Some(BundleKeyEvidence {
                public: ByteBuf::from(vec![0x23; 90]),
                certify: signed(2),
            }),
            rollback_counter: 7,
        }
    }

    #[test]
    fn round_trips_through_cbor() {
        let e = sample();
        let bytes = e.to_cbor().unwrap();
        assert_eq!(Evidence::from_cbor(&bytes).unwrap(), e);
    }

    #[test]
    fn optional_fields_are_left_out_when_absent_and_round_trip_when_present() {
        let mut e = sample();
        e.bundle_key = None;
        let bytes = e.to_cbor().unwrap();
        let value: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
        let keys: Vec<String> = value
            .as_map()
            .unwrap()
            .iter()
            .filter_map(|(k, _)| k.as_text().map(str::to_owned))
            .collect();
        assert!(!keys.iter().any(|k| k == "bundle_key" || k == "pcr_values"), "{keys:?}");
        assert_eq!(Evidence::from_cbor(&bytes).unwrap(), e);
        let mut values = BTreeMap::new();
        values.insert(16u8, ByteBuf::from(vec![0; 32]));
        e.pcr_values = Some(BTreeMap::from([(HashAlg::Sha256, values)]));
        assert_eq!(Evidence::from_cbor(&e.to_cbor().unwrap()).unwrap(), e);
        // A null is not an absent field.
        let mut value: ciborium::Value =
            ciborium::from_reader(&sample().to_cbor().unwrap()[..]).unwrap();
        if let ciborium::Value::Map(m) = &mut value {
            for (k, v) in m.iter_mut() {
                if k.as_text() == Some("bundle_key") {
                    *v = ciborium::Value::Bool(false);
                }
            }
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&value, &mut bytes).unwrap();
        assert!(matches!(Evidence::from_cbor(&bytes), Err(EvidenceError::Decode(_))));
    }

    #[test]
    fn refuses_other_versions_oversize_and_unknown_fields() {
        let mut e = sample();
        e.version = 2;
        assert!(matches!(
            Evidence::from_cbor(&e.to_cbor().unwrap()),
            Err(EvidenceError::Version(2))
        ));
        let huge = vec![0u8; MAX_EVIDENCE_SIZE + 1];
        assert!(matches!(Evidence::from_cbor(&huge), Err(EvidenceError::TooLarge { .. })));
        let mut value: ciborium::Value =
            ciborium::from_reader(&sample().to_cbor().unwrap()[..]).unwrap();
        if let ciborium::Value::Map(m) = &mut value {
            m.push((ciborium::Value::Text("extra".into()), ciborium::Value::Integer(1.into())));
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&value, &mut bytes).unwrap();
        assert!(matches!(Evidence::from_cbor(&bytes), Err(EvidenceError::Decode(_))));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Evidence::from_cbor(&bytes);
        }

        #[test]
        fn truncations_and_flips_never_panic(cut in 0usize..3000, flip in 0usize..3000) {
            let mut bytes = sample().to_cbor().unwrap();
            if flip < bytes.len() { bytes[flip] ^= 0x55; }
            bytes.truncate(cut.min(bytes.len()));
            let _ = Evidence::from_cbor(&bytes);
        }
    }
}
