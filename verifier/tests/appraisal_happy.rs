//! The path that must work: a manufactured swtpm device enrols, answers a challenge, and its
//! evidence appraises as affirming; the EAR verifies as a relying party would verify it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::SystemTime;

use protocol::ear::{Claim, EarVerifier, TrustTier, VerifiedEar, value};
use protocol::tpm::{Public, Unmarshal};
use support::{Lab, example_image};
use tre::attester::AttesterOptions;
use tre::manufacture::ManufactureOptions;
use tre::tpm::KeyAlg;

#[test]
fn ecc_device_appraises_affirming_and_the_ear_verifies() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let nonce = device.challenge(&pva);
    let evidence = device.attester().evidence(&nonce).unwrap();
    let appraised = pva.appraise(&evidence.to_cbor().unwrap(), SystemTime::now()).unwrap();
    assert!(appraised.failures.is_empty(), "{:?}", appraised.failures);
    assert_eq!(appraised.status(), TrustTier::Affirming);

    let ear = VerifiedEar::verify(
        &appraised.ear,
        &lab.ci.anchors(),
        SystemTime::now(),
        &device.id,
        Some(&nonce),
    )
    .unwrap();
    assert_eq!(ear.status(), TrustTier::Affirming);
    assert_eq!(ear.policy_id(), "tresor-sample-m2me-2025.1");
    let key = ear.bundle_key().unwrap();
    let public = Public::from_bytes(&evidence.bundle_key.as_ref().unwrap().public).unwrap();
    assert_eq!(key.tpm_name(), public.name().as_bytes());
    let vector = &ear.claims().appraisal.vector;
    assert_eq!(vector.get(Claim::InstanceIdentity), Some(value::RECOGNIZED_INSTANCE));
    assert_eq!(vector.get(Claim::Executables), Some(value::APPROVED_BOOT));
    assert_eq!(ear.rollback_counter(), Some(evidence.rollback_counter));
    // The EAR is for this device only.
    let other = lab.device();
    assert!(
        EarVerifier::new(lab.ci.anchors())
            .verify(&appraised.ear, SystemTime::now(), &other.id, None)
            .is_err()
    );
}

#[test]
fn rsa_ek_and_rsa_ak_appraise_affirming() {
    let lab = Lab::new();
    let pva = lab.pva();
    let options = AttesterOptions { ek_alg: KeyAlg::Rsa, ak_alg: KeyAlg::Rsa, selection: None };
    let make = ManufactureOptions { ek_alg: KeyAlg::Rsa, ..Default::default() };
    let mut device = lab.device_with(&example_image(), options, make);
    device.enrol(&pva);
    let evidence = device.evidence(&pva);
    let appraised = pva.appraise(&evidence.to_cbor().unwrap(), SystemTime::now()).unwrap();
    assert_eq!(appraised.status(), TrustTier::Affirming, "{:?}", appraised.failures);
}
