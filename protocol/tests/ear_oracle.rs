//! tresor's EARs read by an independent implementation: Veraison's `ear` crate (crates.io,
//! 0.6, which implements draft-ietf-rats-ear-04, the draft tresor's default profile
//! follows). Its decoder and `Ear::validate` take the claims set of a tresor-signed EAR in
//! the IETF profile: the same profile URI (its `EAR_PROFILE` constant), iat and exp, the one
//! submodule with its status, trustworthiness vector, appraisal policy ids and the evidence
//! nonce where -04 puts it. tresor's private claims are unregistered extensions to it,
//! which -04 §4 says a receiver ignores.
//!
//! The crate reads -04 only: tresor's Veraison-profile EARs (draft-ietf-rats-ear-00, the
//! policy id a text string) are refused by it, as tresor's verifier refuses that shape
//! under the IETF profile. The COSE_Sign1 around the claims is checked against pycose
//! (`bundle_interop.rs`); the crate's own COSE feature is left off (see the workspace
//! `Cargo.toml`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle_support;

use std::time::SystemTime;

use bundle_support::{Ci, device, now_secs};
use ciborium::Value;
use protocol::Nonce;
use protocol::ear::{
    Appraisal, BundleKey, Claim, EarClaims, EarProfile, EarVerifier, FailureDetail, TrustVector,
    VerifierId, value,
};

fn claims(vector: TrustVector) -> EarClaims {
    let now = now_secs();
    let mut appraisal = Appraisal::new(vector, "tresor-sample-m2me-2025.1".into(), device(1));
    appraisal.bundle_key = Some(BundleKey::new([1; 32], [2; 32], vec![0, 0x0B, 3]));
    appraisal.rollback_counter = Some(3);
    EarClaims {
        issued_at: now,
        expires_at: now + 300,
        nonce: Some(Nonce::from_bytes(&[0x5D; 32]).unwrap()),
        verifier_id: VerifierId {
            developer: "https://example.invalid/tresor".into(),
            build: "tresor-pva/oracle".into(),
        },
        appraisal,
    }
}

fn affirming() -> TrustVector {
    let mut v = TrustVector::new();
    v.set(Claim::InstanceIdentity, value::RECOGNIZED_INSTANCE)
        .set(Claim::Configuration, value::APPROVED_CONFIG)
        .set(Claim::Executables, value::APPROVED_BOOT)
        .set(Claim::Hardware, value::GENUINE_HARDWARE)
        .set(Claim::StorageOpaque, value::HW_KEYS_ENCRYPTED_SECRETS);
    v
}

/// A tresor EAR signed by a PVA under a test CI, verified by tresor, and its payload.
fn signed(claims: &EarClaims, profile: EarProfile) -> Vec<u8> {
    let ci = Ci::new("tresor CI");
    let pva = ci.role("pva");
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pem::parse(&pva.key_pem).unwrap().into_contents(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let ear = claims
        .sign_as(profile, std::slice::from_ref(&pva.der), |tbs| {
            key.sign(&ring::rand::SystemRandom::new(), tbs).map(|s| s.as_ref().to_vec())
        })
        .unwrap();
    let verified = EarVerifier::new(ci.anchors()).accept_any_status().verify(
        &ear,
        SystemTime::now(),
        &device(1),
        claims.nonce.as_ref(),
    );
    assert_eq!(verified.unwrap().profile(), profile);
    payload(&ear)
}

/// The payload of a tagged COSE_Sign1, read with ciborium alone.
fn payload(cose: &[u8]) -> Vec<u8> {
    let Value::Tag(18, inner) = ciborium::from_reader::<Value, _>(cose).unwrap() else {
        panic!("not a COSE_Sign1")
    };
    let Value::Array(parts) = *inner else { panic!("not a COSE_Sign1 array") };
    let Some(Value::Bytes(payload)) = parts.into_iter().nth(2) else { panic!("no payload") };
    payload
}

fn oracle(payload: &[u8]) -> Result<ear::Ear, String> {
    let ear: ear::Ear = ciborium::from_reader(payload).map_err(|e| e.to_string())?;
    ear.validate().map_err(|e| e.to_string())?;
    Ok(ear)
}

#[test]
fn the_oracle_reads_tresors_ietf_ears() {
    let c = claims(affirming());
    let read = oracle(&signed(&c, EarProfile::Ietf)).unwrap();
    assert_eq!(read.profile, ear::EAR_PROFILE, "the profile of draft-ietf-rats-ear-04");
    assert_eq!(read.profile, EarProfile::Ietf.uri());
    assert_eq!(read.iat, c.issued_at as i64);
    assert_eq!(read.exp, Some(c.expires_at as i64));
    assert_eq!(read.vid.developer, c.verifier_id.developer);
    assert_eq!(read.vid.build, c.verifier_id.build);
    assert_eq!(read.nonce, None, "the evidence nonce is the submodule's, not the EAR's");
    assert_eq!(read.status, Some(ear::TrustTier::Affirming));
    assert_eq!(read.submods.len(), 1);
    let tre = &read.submods["tre"];
    assert_eq!(tre.profile.as_deref(), Some(protocol::ear::TRE_APPRAISAL_PROFILE));
    assert_eq!(tre.status, ear::TrustTier::Affirming);
    assert_eq!(tre.policy_ids, ["tresor-sample-m2me-2025.1"]);
    assert_eq!(tre.nonce, Some(ear::Nonce::try_from([0x5D; 32].as_slice()).unwrap()));
    for (claim, v) in c.appraisal.vector.iter() {
        assert_eq!(tre.trust_vector.by_key(claim.key() as i32).unwrap().get(), v, "{claim:?}");
    }
}

#[test]
fn the_oracle_agrees_on_a_failed_appraisal() {
    let mut vector = affirming();
    vector.set(Claim::Executables, value::CONTRAINDICATED_RUNTIME);
    let mut c = claims(vector);
    c.appraisal.failed_checks = vec!["pcr-not-reference-value".into()];
    c.appraisal.failure_details = vec![FailureDetail {
        pcr: Some(9),
        bank: Some("sha256".into()),
        ..FailureDetail::new("pcr-not-reference-value")
    }];
    let read = oracle(&signed(&c, EarProfile::Ietf)).unwrap();
    assert_eq!(read.status, Some(ear::TrustTier::Contraindicated));
    let tre = &read.submods["tre"];
    assert_eq!(tre.status, ear::TrustTier::Contraindicated);
    assert_eq!(tre.trust_vector.by_key(2).unwrap().get(), 96);
    assert_eq!(tre.trust_vector.by_key(2).unwrap().tier(), ear::TrustTier::Contraindicated);
}

#[test]
fn the_oracle_reads_minus_04_only_and_refuses_the_veraison_profile() {
    // ear 0.6 follows -04: the -00 shape (the policy id a text string) does not decode.
    let err = oracle(&signed(&claims(affirming()), EarProfile::Veraison)).unwrap_err();
    eprintln!("ear 0.6 on a Veraison-profile EAR: {err}");
    assert!(err.contains("sequence") || err.contains("invalid type"), "{err}");
}
