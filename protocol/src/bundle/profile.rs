//! The inner bundle: the subscription profile signed by the new operator (MNO-B) as a
//! COSE_Sign1 (RFC 9052 §4.2, tag 18) with ES256 (RFC 9053 §2.1) and the signer's
//! certificate in an x5chain header (RFC 9360 §2, label 33), validated to the CI root.
//!
//! `docs/bundle.md` documents the payload fields and the order of the checks.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::sign1::{CoseSigner, verify_sign1};
use super::{BundleError, MAX_SIGNED_PROFILE_LEN, cbor};
use crate::ids::DeviceId;
use crate::role::{Expected, Role};
use crate::secret::SubscriptionProfile;
use crate::x509::TrustAnchors;

/// How far in the future `issued` may lie, for clocks that disagree a little.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What MNO-B signs: the profile and everything it is bound to. CBOR map with text keys
/// (field names below); `docs/bundle.md` gives the encoding of each field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePayload {
    /// The device the profile is for (TPM name of its EK).
    pub device_id: DeviceId,
    /// The signer's role name, which is its certificate's common name (e.g. `mno-b`).
    pub operator: String,
    /// The campaign this change belongs to.
    pub campaign: String,
    /// IMSI, ICCID, K, OPc, AMF and OTA keys for the card.
    pub profile: SubscriptionProfile,
    /// Anti-rollback sequence: the TRE installs it only above its NV counter.
    pub sequence: u64,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; the profile is refused at and after this instant.
    pub expires: u64,
    /// SHA-256 of the EAR (COSE_Sign1 bytes) the operator based the release on.
    #[serde(with = "serde_bytes")]
    pub ear_hash: [u8; 32],
}

/// A signed profile whose every check passed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedProfile {
    pub payload: ProfilePayload,
    /// The signer certificate's subject (RFC 4514 string).
    pub signer_subject: String,
    /// The validated path, signer first, CI root last (DER).
    pub signer_chain: Vec<Vec<u8>>,
}

impl VerifiedProfile {
    /// The anti-rollback sequence number, for [`super::check_sequence`].
    pub fn sequence(&self) -> u64 {
        self.payload.sequence
    }

    /// The profile must have been made for the EAR whose hash is `ear_hash`.
    pub fn check_ear_hash(&self, ear_hash: &[u8; 32]) -> Result<(), BundleError> {
        if &self.payload.ear_hash == ear_hash {
            Ok(())
        } else {
            Err(BundleError::WrongEar {
                expected: hex::encode(ear_hash),
                found: hex::encode(self.payload.ear_hash),
            })
        }
    }
}

/// An operator's profile-signing identity: its ES256 key and its certificate chain.
#[derive(Debug)]
pub struct ProfileSigner(CoseSigner);

impl ProfileSigner {
    /// A PKCS#8 PEM "PRIVATE KEY" (ECDSA P-256) as `tresor pki init` writes `mno-b.key`, and
    /// the chain for the x5chain header: the operator certificate first, then any
    /// intermediates (not the CI root, which verifiers hold).
    pub fn from_pkcs8_pem(key_pem: &str, x5chain: Vec<Vec<u8>>) -> Result<Self, BundleError> {
        CoseSigner::from_pkcs8_pem(key_pem, x5chain).map(Self)
    }

    /// As [`Self::from_pkcs8_pem`], from the PKCS#8 DER.
    pub fn from_pkcs8_der(pkcs8: &[u8], x5chain: Vec<Vec<u8>>) -> Result<Self, BundleError> {
        CoseSigner::from_pkcs8_der(pkcs8, x5chain).map(Self)
    }

    /// The operator name verifiers will see: the certificate's common name.
    pub fn operator(&self) -> &str {
        self.0.name()
    }

    /// Signs `payload` as a tagged COSE_Sign1. `payload.operator` must be this signer's
    /// name, or verifiers would refuse the result.
    pub fn sign(&self, payload: &ProfilePayload) -> Result<Vec<u8>, BundleError> {
        if payload.operator != self.operator() {
            return Err(BundleError::OperatorMismatch {
                payload: payload.operator.clone(),
                signer: self.operator().to_owned(),
            });
        }
        let body = Zeroizing::new(cbor::encode(payload).map_err(BundleError::Encode)?);
        if body.len() > MAX_SIGNED_PROFILE_LEN {
            return Err(BundleError::TooLarge {
                what: "profile payload",
                len: body.len(),
                max: MAX_SIGNED_PROFILE_LEN,
            });
        }
        Ok(self.0.sign(&body, MAX_SIGNED_PROFILE_LEN)?.to_vec())
    }
}

/// Verifies a signed profile. Checks, in order, each with its own error: the COSE_Sign1
/// checks of [`super::sign1::verify_sign1`] with `expected_operator` as the signer, then the
/// payload's decoding, payload operator = signer, device = `expected_device`, a non-empty
/// validity, not expired, not issued in the future (beyond [`MAX_CLOCK_SKEW_SECS`]). The EAR
/// hash and the sequence are the caller's checks ([`VerifiedProfile::check_ear_hash`],
/// [`super::check_sequence`]).
pub fn verify_profile(
    cose_bytes: &[u8],
    ci_roots: &TrustAnchors,
    now: SystemTime,
    expected_operator: &str,
    expected_device: &DeviceId,
) -> Result<VerifiedProfile, BundleError> {
    let signed = verify_sign1(
        cose_bytes,
        "signed profile",
        MAX_SIGNED_PROFILE_LEN,
        ci_roots,
        now,
        &Expected::named(Role::Operator, expected_operator),
    )?;
    let payload: ProfilePayload =
        cbor::decode_exact(&signed.payload).map_err(BundleError::MalformedPayload)?;
    if payload.operator != signed.signer {
        return Err(BundleError::OperatorMismatch {
            payload: payload.operator,
            signer: signed.signer,
        });
    }
    if &payload.device_id != expected_device {
        return Err(BundleError::WrongDevice {
            expected: expected_device.clone(),
            found: payload.device_id,
        });
    }
    check_validity(&payload, unix_seconds(now))?;
    Ok(VerifiedProfile { payload, signer_subject: signed.subject, signer_chain: signed.chain })
}

fn check_validity(payload: &ProfilePayload, now: u64) -> Result<(), BundleError> {
    let (issued, expires) = (payload.issued, payload.expires);
    if expires <= issued {
        return Err(BundleError::EmptyValidity { issued, expires });
    }
    if now >= expires {
        return Err(BundleError::Expired { expires, now });
    }
    if issued > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(BundleError::IssuedInFuture { issued, now, skew: MAX_CLOCK_SKEW_SECS });
    }
    Ok(())
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_window() {
        let mut p = ProfilePayload {
            device_id: DeviceId::from_name(
                &[0, 0x0B].iter().chain(&[1u8; 32]).copied().collect::<Vec<_>>(),
            )
            .unwrap(),
            operator: "mno-b".into(),
            campaign: "c".into(),
            profile: crate::bundle::tests::profile(),
            sequence: 1,
            issued: 1000,
            expires: 2000,
            ear_hash: [0; 32],
        };
        assert!(check_validity(&p, 1000).is_ok());
        assert!(check_validity(&p, 1999).is_ok());
        assert_eq!(
            check_validity(&p, 2000),
            Err(BundleError::Expired { expires: 2000, now: 2000 })
        );
        assert_eq!(
            check_validity(&p, 600),
            Err(BundleError::IssuedInFuture { issued: 1000, now: 600, skew: 300 })
        );
        assert!(check_validity(&p, 700).is_ok());
        p.expires = 1000;
        assert_eq!(
            check_validity(&p, 1000),
            Err(BundleError::EmptyValidity { issued: 1000, expires: 1000 })
        );
    }
}
