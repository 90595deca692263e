//! The DPF (download and provisioning function, TR 33.812 §5.1.3.5.3 steps 10–12): releases a
//! new operator's profile only against an attestation result that verifies, encrypted to the
//! bundle key the TPM certified; verifies the device's install receipt.
//!
//! Release checks, each failing closed: the EAR's PVA signature chains to the CI root, it is
//! unexpired, affirming, for this device and this nonce, and certifies exactly the bundle
//! key of the evidence the RO relayed; the profile is signed by the campaign's new operator
//! under the CI root, for this device, unexpired, and bound to this EAR's hash.

use std::time::SystemTime;

use protocol::bundle::{self, VerifiedProfile};
use protocol::ear::{BundleKey, EarVerifier, VerifiedEar};
use protocol::evidence::Evidence;
use protocol::receipt::{Receipt, SignedReceipt};
use protocol::tpm::{Public, Spki, Unmarshal};
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Iccid, Imsi, Nonce};

use super::error::RoError;

/// What the DPF expects the install receipt to say, kept from the release (none of it is
/// secret: identifiers and a sequence number).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpectedReceipt {
    pub iccid: Iccid,
    pub imsi: Imsi,
    pub sequence: u64,
}

/// A released bundle and what its receipt must say.
#[derive(Debug)]
pub struct Release {
    pub bundle: Vec<u8>,
    pub expected: ExpectedReceipt,
}

/// The DPF's trust: the CI root for operator signatures and PVA results.
#[derive(Debug, Clone)]
pub struct Dpf {
    ci_roots: TrustAnchors,
    ears: EarVerifier,
}

impl Dpf {
    pub fn new(ci_roots: TrustAnchors) -> Self {
        Self { ears: EarVerifier::new(ci_roots.clone()), ci_roots }
    }

    /// The verifier of attestation results (PVA signatures under the CI).
    pub fn ears(&self) -> &EarVerifier {
        &self.ears
    }

    /// The bundle key certified in `evidence`, as an EAR names it.
    pub fn evidence_bundle_key(evidence: &Evidence) -> Result<BundleKey, RoError> {
        let public = Public::from_bytes(&evidence.bundle_key.public)
            .map_err(|e| RoError::Release(format!("bundle key public area: {e}")))?;
        let spki =
            Spki::from_public(&public).map_err(|e| RoError::Release(format!("bundle key: {e}")))?;
        BundleKey::from_spki(&spki, public.name().as_ref().to_vec())
            .map_err(|e| RoError::Release(format!("bundle key: {e}")))
    }

    /// Checks the EAR for release (steps 9–10) without a profile yet.
    pub fn check_ear(
        &self,
        ear: &[u8],
        device: &DeviceId,
        nonce: &Nonce,
        bundle_key: &BundleKey,
        now: SystemTime,
    ) -> Result<VerifiedEar, RoError> {
        let verified = self
            .ears
            .verify(ear, now, device, Some(nonce))
            .map_err(|e| RoError::Release(format!("attestation result: {e}")))?;
        verified
            .check_bundle_key(bundle_key)
            .map_err(|e| RoError::Release(format!("attestation result: {e}")))?;
        Ok(verified)
    }

    /// Step 10–11: verifies `signed_profile` against the campaign's new operator and the EAR,
    /// and encrypts it to the EAR's bundle key. The plaintext profile never leaves this call.
    pub fn release(
        &self,
        ear: &VerifiedEar,
        ear_bytes: &[u8],
        operator: &str,
        device: &DeviceId,
        signed_profile: &[u8],
        now: SystemTime,
    ) -> Result<Release, RoError> {
        let profile: VerifiedProfile =
            bundle::verify_profile(signed_profile, &self.ci_roots, now, operator, device)
                .map_err(|e| RoError::Release(format!("profile: {e}")))?;
        let ear_hash = bundle::ear_hash(ear_bytes);
        profile.check_ear_hash(&ear_hash).map_err(|e| RoError::Release(format!("profile: {e}")))?;
        let key =
            ear.bundle_key().map_err(|e| RoError::Release(format!("attestation result: {e}")))?;
        let bundle = bundle::encrypt_bundle(signed_profile, key.x(), key.y(), device, &ear_hash)
            .map_err(|e| RoError::Release(format!("encryption: {e}")))?;
        let expected = ExpectedReceipt {
            iccid: profile.payload.profile.iccid.clone(),
            imsi: profile.payload.profile.imsi.clone(),
            sequence: profile.sequence(),
        };
        Ok(Release { bundle, expected })
    }

    /// Step 12: the receipt must be signed by the device's enrolled AK and name exactly the
    /// released profile.
    pub fn verify_receipt(
        &self,
        signed: &[u8],
        ak_public: &[u8],
        device: &DeviceId,
        expected: &ExpectedReceipt,
    ) -> Result<Receipt, RoError> {
        let ak = Public::from_bytes(ak_public).map_err(|e| RoError::Receipt(format!("AK: {e}")))?;
        let signed =
            SignedReceipt::from_cbor(signed).map_err(|e| RoError::Receipt(e.to_string()))?;
        let want =
            Receipt::new(device.clone(), expected.iccid.clone(), &expected.imsi, expected.sequence);
        signed.verify(&ak, &want).map_err(|e| RoError::Receipt(e.to_string()))
    }
}
