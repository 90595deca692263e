//! The DPF (download and provisioning function, TR 33.812 §5.1.3.5.3 steps 10–12): asks the
//! new operator for the profile only against an attestation result that verifies, relays
//! the bundle the operator encrypted to the attested bundle key, and verifies the device's
//! install receipt.
//!
//! The DPF never sees the profile: the new operator signs it and encrypts it itself to the
//! EAR's bundle key, end to end to the device's TPM (issue 12, "Trust boundaries"), which
//! decrypts it, verifies the signature, the device and the EAR hash. The DPF checks what it
//! can without the key, each failing closed: before the operator is asked, the EAR's PVA
//! signature chains to the CI root, it is unexpired, affirming, for this device and this
//! nonce, and certifies exactly the bundle key of the evidence the RO relayed; of the
//! answer, that it speaks of this device and the campaign's pairing, that its sequence is
//! the EAR's rollback counter + 1, and that the bundle is bound to this device and this EAR
//! ([`protocol::bundle::check_bundle_binding`]). The answer's ICCID, IMSI and sequence are
//! what the install receipt must name.

use std::time::SystemTime;

use protocol::bundle;
use protocol::ear::{BundleKey, EarError, EarVerifier, VerifiedEar};
use protocol::evidence::Evidence;
use protocol::receipt::{Receipt, SignedReceipt};
use protocol::tpm::{Public, Spki, Unmarshal};
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Iccid, Imsi, Nonce};

use super::error::RoError;
use crate::mno::api::AttestationResponse;

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

/// The DPF's trust: the CI root for PVA results.
#[derive(Debug, Clone)]
pub struct Dpf {
    ears: EarVerifier,
}

impl Dpf {
    pub fn new(ci_roots: TrustAnchors) -> Self {
        Self { ears: EarVerifier::new(ci_roots) }
    }

    /// The verifier of attestation results (PVA signatures under the CI).
    pub fn ears(&self) -> &EarVerifier {
        &self.ears
    }

    /// The bundle key certified in `evidence`, as an EAR names it.
    pub fn evidence_bundle_key(evidence: &Evidence) -> Result<BundleKey, RoError> {
        let certified = evidence.bundle_key.as_ref().ok_or_else(|| {
            RoError::Release(
                "the evidence certifies no bundle key (attestation only): nothing to release a \
                 bundle to"
                    .into(),
            )
        })?;
        let public = Public::from_bytes(&certified.public)
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
        verified.check_bundle_key(bundle_key).map_err(|e| match e {
            EarError::MissingBundleKey => RoError::Release(
                "attestation result certifies no bundle key (an attestation-only appraisal): \
                 no bundle can be released on it"
                    .into(),
            ),
            e => RoError::Release(format!("attestation result: {e}")),
        })?;
        Ok(verified)
    }

    /// Steps 10–11: takes the new operator's answer to `ear` (verified, for `device`) for
    /// release, if it speaks of this device and `campaign_iccid` (the campaign's pairing),
    /// carries the sequence the EAR calls for and a bundle bound to this device and EAR. The
    /// bundle is relayed as it came; the rest is what the receipt must say.
    pub fn accept(
        &self,
        ear: &VerifiedEar,
        ear_bytes: &[u8],
        device: &DeviceId,
        campaign_iccid: &Iccid,
        answer: AttestationResponse,
    ) -> Result<Release, RoError> {
        let refuse =
            |what: String| Err(RoError::Release(format!("the new operator's answer {what}")));
        if &answer.device_id != device {
            return refuse(format!("is for device {}", answer.device_id));
        }
        if &answer.campaign_iccid != campaign_iccid {
            return refuse(format!(
                "pairs the device with ICCID {}, the campaign with {campaign_iccid}",
                answer.campaign_iccid
            ));
        }
        let counter = ear
            .rollback_counter()
            .ok_or_else(|| RoError::Release("attestation result: no rollback counter".into()))?;
        if counter.checked_add(1) != Some(answer.sequence) {
            return refuse(format!(
                "has sequence {}, not the EAR's rollback counter {counter} + 1",
                answer.sequence
            ));
        }
        bundle::check_bundle_binding(&answer.bundle, device, &bundle::ear_hash(ear_bytes))
            .map_err(|e| RoError::Release(format!("bundle: {e}")))?;
        let expected =
            ExpectedReceipt { iccid: answer.iccid, imsi: answer.imsi, sequence: answer.sequence };
        Ok(Release { bundle: answer.bundle.into_vec(), expected })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Pki, Role};
    use protocol::bundle::SoftwareRecipient;
    use protocol::ear::{Appraisal, Claim, EarClaims, TrustVector, VerifierId, unix, value};
    use ring::rand::SystemRandom;
    use serde_bytes::ByteBuf;

    fn device(byte: u8) -> DeviceId {
        DeviceId::from_name(&[&[0x00, 0x0B][..], &[byte; 32]].concat()).unwrap()
    }

    fn iccid(last: &str) -> Iccid {
        Iccid::with_check_digit(&format!("890010200000000000{last}")).unwrap()
    }

    /// A PVA-signed affirming EAR for device 1 naming `key`, rollback counter `counter`.
    fn ear(pki: &Pki, key: &SoftwareRecipient, counter: Option<u64>) -> Vec<u8> {
        let mut vector = TrustVector::new();
        vector
            .set(Claim::InstanceIdentity, value::RECOGNIZED_INSTANCE)
            .set(Claim::Configuration, value::APPROVED_CONFIG)
            .set(Claim::Executables, value::APPROVED_BOOT)
            .set(Claim::Hardware, value::GENUINE_HARDWARE)
            .set(Claim::StorageOpaque, value::HW_KEYS_ENCRYPTED_SECRETS);
        let mut appraisal = Appraisal::new(vector, "policy-1".into(), device(1));
        appraisal.bundle_key = Some(BundleKey::new(*key.x(), *key.y(), vec![0, 0x0B, 3]));
        appraisal.rollback_counter = counter;
        let now = unix(SystemTime::now());
        let claims = EarClaims {
            issued_at: now,
            expires_at: now + 300,
            nonce: None,
            verifier_id: VerifierId { developer: "tresor".into(), build: "test".into() },
            appraisal,
        };
        let pva = pki.role(&Role::Pva).unwrap();
        let signing = pva.signing_key().unwrap();
        claims
            .sign(&pva.x5chain(), |tbs| {
                signing.sign(&SystemRandom::new(), tbs).map(|s| s.as_ref().to_vec()).map_err(|_| "")
            })
            .unwrap()
    }

    /// The new operator's answer for device 1: a bundle to `key` for `ear`.
    fn answer(key: &SoftwareRecipient, ear: &[u8]) -> AttestationResponse {
        let ear_hash = bundle::ear_hash(ear);
        let bundle =
            bundle::encrypt_bundle(b"signed profile", key.x(), key.y(), &device(1), &ear_hash)
                .unwrap();
        AttestationResponse {
            bundle: ByteBuf::from(bundle),
            device_id: device(1),
            campaign_iccid: iccid("1"),
            iccid: iccid("2"),
            imsi: "001020000000001".parse().unwrap(),
            sequence: 8,
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        pki: Pki,
        dpf: Dpf,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::init(&dir.path().join("pki"), false).unwrap();
        let dpf = Dpf::new(pki.ci_trust_anchors().unwrap());
        World { _dir: dir, pki, dpf }
    }

    fn accept(w: &World, ear: &[u8], answer: AttestationResponse) -> Result<Release, RoError> {
        let verified = w.dpf.ears().verify(ear, SystemTime::now(), &device(1), None).unwrap();
        w.dpf.accept(&verified, ear, &device(1), &iccid("1"), answer)
    }

    fn refusal(result: Result<Release, RoError>) -> String {
        match result {
            Err(RoError::Release(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_bundle_is_relayed_as_it_came_and_the_receipt_expected_from_the_facts() {
        let w = world();
        let key = SoftwareRecipient::generate().unwrap();
        let ear = ear(&w.pki, &key, Some(7));
        let answer = answer(&key, &ear);
        let release = accept(&w, &ear, answer.clone()).unwrap();
        assert_eq!(release.bundle, answer.bundle.as_slice());
        assert_eq!(
            release.expected,
            ExpectedReceipt { iccid: iccid("2"), imsi: answer.imsi.clone(), sequence: 8 }
        );
    }

    #[test]
    fn an_answer_that_does_not_fit_the_campaign_or_the_ear_is_refused() {
        let w = world();
        let key = SoftwareRecipient::generate().unwrap();
        let ear = ear(&w.pki, &key, Some(7));

        let other_device = AttestationResponse { device_id: device(2), ..answer(&key, &ear) };
        assert!(refusal(accept(&w, &ear, other_device)).contains("is for device"));

        let other_pairing =
            AttestationResponse { campaign_iccid: iccid("3"), ..answer(&key, &ear) };
        assert!(refusal(accept(&w, &ear, other_pairing)).contains("pairs the device with ICCID"));

        for sequence in [7, 9, 0, u64::MAX] {
            let wrong = AttestationResponse { sequence, ..answer(&key, &ear) };
            assert!(refusal(accept(&w, &ear, wrong)).contains("not the EAR's rollback counter"));
        }
        let no_counter = self::ear(&w.pki, &key, None);
        assert!(
            refusal(accept(&w, &no_counter, answer(&key, &no_counter)))
                .contains("rollback counter")
        );
    }

    #[test]
    fn a_bundle_bound_to_another_device_or_ear_or_no_bundle_is_refused() {
        let w = world();
        let key = SoftwareRecipient::generate().unwrap();
        let ear = ear(&w.pki, &key, Some(7));
        let ear_hash = bundle::ear_hash(&ear);

        let for_device_2 =
            bundle::encrypt_bundle(b"p", key.x(), key.y(), &device(2), &ear_hash).unwrap();
        let answer_2 =
            AttestationResponse { bundle: ByteBuf::from(for_device_2), ..answer(&key, &ear) };
        assert!(refusal(accept(&w, &ear, answer_2)).contains("bundle is for device"));

        let older = bundle::ear_hash(b"an earlier EAR");
        let for_old_ear =
            bundle::encrypt_bundle(b"p", key.x(), key.y(), &device(1), &older).unwrap();
        let answer_old =
            AttestationResponse { bundle: ByteBuf::from(for_old_ear), ..answer(&key, &ear) };
        assert!(refusal(accept(&w, &ear, answer_old)).contains("bundle was released on EAR"));

        // What an operator answered before issue 12: the signed profile itself, in the clear.
        let plaintext =
            AttestationResponse { bundle: ByteBuf::from(ear.clone()), ..answer(&key, &ear) };
        assert!(refusal(accept(&w, &ear, plaintext)).contains("not a tagged COSE_Encrypt"));
    }
}
