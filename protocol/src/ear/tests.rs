//! Tests of EAR building and relying-party verification, with a CI, a PVA and an MNO
//! certificate made here with rcgen (the shape `tresor pki init` issues).

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use super::*;
use crate::ids::Nonce;
use crate::x509::TrustAnchors;
use ciborium::Value;
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

struct Pki {
    roots: TrustAnchors,
    pva: (Vec<u8>, EcdsaKeyPair),
    mno: (Vec<u8>, EcdsaKeyPair),
    pva_named_operator: (Vec<u8>, EcdsaKeyPair),
}

fn ca(name: &str) -> (CertificateParams, KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let der = params.self_signed(&key).unwrap().der().to_vec();
    (params, key, der)
}

fn leaf(cn: &str, issuer: &Issuer<'_, &KeyPair>) -> (Vec<u8>, EcdsaKeyPair) {
    leaf_as(cn, crate::role::Role::of_lab_name(cn), issuer)
}

/// A certificate named `cn` that the CI issued to `role`.
fn leaf_as(
    cn: &str,
    role: crate::role::Role,
    issuer: &Issuer<'_, &KeyPair>,
) -> (Vec<u8>, EcdsaKeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names =
        vec![rcgen::SanType::DnsName(crate::role::dns_name(cn).try_into().unwrap())];
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 32], role.policies_der()));
    let der = params.signed_by(&key, issuer).unwrap().der().to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    (der, pair)
}

fn pki() -> Pki {
    let (params, key, root) = ca("tresor test CI");
    let issuer = Issuer::from_params(&params, &key);
    let mut roots = TrustAnchors::new();
    roots.add_der(&root).unwrap();
    Pki {
        roots,
        pva: leaf(DEFAULT_SIGNER, &issuer),
        mno: leaf("mno-a", &issuer),
        pva_named_operator: leaf_as(DEFAULT_SIGNER, crate::role::Role::Operator, &issuer),
    }
}

fn device(byte: u8) -> DeviceId {
    let mut name = vec![0x00, 0x0B];
    name.extend([byte; 32]);
    DeviceId::from_name(&name).unwrap()
}

fn affirming_vector() -> TrustVector {
    let mut v = TrustVector::new();
    v.set(Claim::InstanceIdentity, value::RECOGNIZED_INSTANCE)
        .set(Claim::Configuration, value::APPROVED_CONFIG)
        .set(Claim::Executables, value::APPROVED_BOOT)
        .set(Claim::Hardware, value::GENUINE_HARDWARE)
        .set(Claim::StorageOpaque, value::HW_KEYS_ENCRYPTED_SECRETS);
    v
}

fn claims(vector: TrustVector, nonce: Nonce, now: SystemTime) -> EarClaims {
    let mut appraisal = Appraisal::new(vector, "policy-1".into(), device(1));
    appraisal.bundle_key = Some(BundleKey::new([1; 32], [2; 32], vec![0, 0x0B, 3]));
    appraisal.rollback_counter = Some(7);
    EarClaims {
        issued_at: unix(now),
        expires_at: unix(now) + 300,
        nonce: Some(nonce),
        verifier_id: VerifierId { developer: "tresor".into(), build: "test".into() },
        appraisal,
    }
}

fn sign(claims: &EarClaims, signer: &(Vec<u8>, EcdsaKeyPair)) -> Vec<u8> {
    sign_as(EarProfile::Ietf, claims, signer)
}

fn sign_as(profile: EarProfile, claims: &EarClaims, signer: &(Vec<u8>, EcdsaKeyPair)) -> Vec<u8> {
    let rng = SystemRandom::new();
    claims
        .sign_as(profile, std::slice::from_ref(&signer.0), |tbs| {
            signer.1.sign(&rng, tbs).map(|s| s.as_ref().to_vec()).map_err(|_| "sign")
        })
        .unwrap()
}

/// The top-level claims map of `c` in `profile`.
fn top_map(c: &EarClaims, profile: EarProfile) -> Vec<(Value, Value)> {
    let value: Value = ciborium::from_reader(&c.to_cbor_as(profile).unwrap()[..]).unwrap();
    let Value::Map(top) = value else { panic!() };
    top
}

fn encode(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Map(map), &mut out).unwrap();
    out
}

/// The `tre` appraisal map inside a top-level map.
fn submod(top: &mut [(Value, Value)]) -> &mut Vec<(Value, Value)> {
    let (_, submods) = top.iter_mut().find(|(k, _)| *k == int(266)).unwrap();
    let Value::Map(submods) = submods else { panic!() };
    let Value::Map(appraisal) = &mut submods[0].1 else { panic!() };
    appraisal
}

#[test]
fn an_affirming_ear_verifies_and_round_trips() {
    let pki = pki();
    let now = SystemTime::now();
    let nonce = Nonce::random().unwrap();
    let c = claims(affirming_vector(), nonce, now);
    assert_eq!(c.appraisal.status(), TrustTier::Affirming);
    assert_eq!(EarClaims::from_cbor(&c.to_cbor().unwrap()).unwrap(), c);
    let ear = sign(&c, &pki.pva);
    assert_eq!(ear[0], 0xD2, "COSE_Sign1 tag 18");
    let v = VerifiedEar::verify(&ear, &pki.roots, now, &device(1), Some(&nonce)).unwrap();
    assert_eq!(v.claims(), &c);
    assert_eq!(v.status(), TrustTier::Affirming);
    assert_eq!(v.rollback_counter(), Some(7));
    assert_eq!(v.policy_id(), "policy-1");
    assert_eq!(v.signer(), "CN=pva");
    v.check_bundle_key(&BundleKey::new([1; 32], [2; 32], vec![0, 0x0B, 3])).unwrap();
    assert_eq!(
        v.check_bundle_key(&BundleKey::new([1; 32], [3; 32], vec![0, 0x0B, 3])),
        Err(EarError::OtherBundleKey)
    );
    assert_eq!(v.digest().as_slice(), ring::digest::digest(&ring::digest::SHA256, &ear).as_ref());
}

fn keys(map: &[(Value, Value)]) -> Vec<i128> {
    map.iter().map(|(k, _)| i128::from(k.as_integer().unwrap())).collect()
}

#[test]
fn claim_keys_are_the_drafts() {
    let nonce = Nonce::random().unwrap();
    let c = claims(affirming_vector(), nonce, SystemTime::now());
    let text = |t: &str| Value::Text(t.into());
    // draft-ietf-rats-ear-04 §3, §3.1: the profile, an overall status, the evidence nonce and
    // the policy ids (an array) in the submodule, which names its own profile.
    let mut top = top_map(&c, EarProfile::Ietf);
    assert_eq!(keys(&top), [265, 6, 4, 1004, 1000, 266]);
    assert_eq!(top[0].1, text("tag:ietf.org,2026:rats/ear#04"));
    assert_eq!(top[4].1, int(2));
    let appraisal = submod(&mut top).clone();
    assert_eq!(keys(&appraisal), [265, 1000, 1001, 1003, 10, -76000, -76001, -76002]);
    assert_eq!(appraisal[0].1, text(TRE_APPRAISAL_PROFILE));
    assert_eq!(appraisal[1].1, int(2));
    assert_eq!(appraisal[3].1, Value::Array(vec![text("policy-1")]));
    assert_eq!(appraisal[4].1, Value::Bytes(nonce.as_bytes().to_vec()));
    // draft-ietf-rats-ear-00 (Veraison): the nonce at the top, the policy id a text string.
    let mut top = top_map(&c, EarProfile::Veraison);
    assert_eq!(keys(&top), [265, 6, 4, 1004, 266, 10]);
    assert_eq!(top[0].1, text("tag:github.com,2023:veraison/ear"));
    assert_eq!(top[5].1, Value::Bytes(nonce.as_bytes().to_vec()));
    let appraisal = submod(&mut top).clone();
    assert_eq!(keys(&appraisal), [1000, 1001, 1003, -76000, -76001, -76002]);
    assert_eq!(appraisal[2].1, text("policy-1"));
    // The default is the current draft.
    assert_eq!(c.to_cbor().unwrap(), c.to_cbor_as(EarProfile::Ietf).unwrap());
    assert_eq!(EarProfile::default(), EarProfile::Ietf);
}

#[test]
fn both_profiles_round_trip_and_verify() {
    let pki = pki();
    let now = SystemTime::now();
    let nonce = Nonce::random().unwrap();
    let mut c = claims(affirming_vector(), nonce, now);
    c.appraisal.failure_details = vec![FailureDetail::new("none-really")];
    for profile in EarProfile::ALL {
        let (p, back) = EarClaims::decode(&c.to_cbor_as(profile).unwrap()).unwrap();
        assert_eq!((p, &back), (profile, &c), "{profile}");
        let ear = sign_as(profile, &c, &pki.pva);
        let v = VerifiedEar::verify(&ear, &pki.roots, now, &device(1), Some(&nonce)).unwrap();
        assert_eq!(v.profile(), profile);
        assert_eq!(v.claims(), &c);
        assert_eq!(v.failure_details(), c.appraisal.failure_details.as_slice());
        // exp is enforced in both.
        let later = now + Duration::from_secs(301);
        assert!(matches!(
            VerifiedEar::verify(&ear, &pki.roots, later, &device(1), None),
            Err(EarError::Expired { .. })
        ));
        // Another nonce, in both.
        let other = Nonce::random().unwrap();
        assert_eq!(
            VerifiedEar::verify(&ear, &pki.roots, now, &device(1), Some(&other)),
            Err(EarError::OtherNonce)
        );
    }
}

#[test]
fn each_profile_is_read_by_its_own_rules_only() {
    let nonce = Nonce::random().unwrap();
    let c = claims(affirming_vector(), nonce, SystemTime::now());
    let malformed = |bytes: &[u8], why: &str| match EarClaims::from_cbor(bytes) {
        Err(EarError::Malformed(m)) => assert!(m.contains(why), "{m:?} lacks {why:?}"),
        other => panic!("{why}: {other:?}"),
    };
    let nonce_value = Value::Bytes(nonce.as_bytes().to_vec());
    let text = |t: &str| Value::Text(t.into());

    // IETF with Veraison's shapes.
    let ietf = || top_map(&c, EarProfile::Ietf);
    let mut t = ietf();
    submod(&mut t).retain(|(k, _)| *k != int(10));
    t.push((int(10), nonce_value.clone()));
    malformed(&encode(t), "top-level eat_nonce");
    let mut t = ietf();
    submod(&mut t)[3].1 = text("policy-1");
    malformed(&encode(t), "text string");
    let mut t = ietf();
    submod(&mut t).remove(0);
    malformed(&encode(t), "submod eat_profile missing");
    let mut t = ietf();
    submod(&mut t)[0].1 = text("tag:example.com,2026:other");
    malformed(&encode(t), "submod profile");
    let mut t = ietf();
    submod(&mut t)[3].1 = Value::Array(vec![text("a"), text("b")]);
    malformed(&encode(t), "one policy");
    let mut t = ietf();
    submod(&mut t)[3].1 = Value::Array(vec![]);
    malformed(&encode(t), "one policy");
    // Without the submodule's nonce an IETF EAR answers no challenge (a relying party that
    // names its nonce gets OtherNonce).
    let mut t = ietf();
    submod(&mut t).retain(|(k, _)| *k != int(10));
    let (_, no_nonce) = EarClaims::decode(&encode(t)).unwrap();
    assert_eq!(no_nonce.nonce, None);

    // Veraison with the IETF shapes.
    let veraison = || top_map(&c, EarProfile::Veraison);
    let mut t = veraison();
    t.retain(|(k, _)| *k != int(10));
    submod(&mut t).push((int(10), nonce_value.clone()));
    malformed(&encode(t), "eat_nonce in the submod");
    let mut t = veraison();
    submod(&mut t)[2].1 = Value::Array(vec![text("policy-1")]);
    malformed(&encode(t), "as an array");
    let mut t = veraison();
    submod(&mut t).insert(0, (int(265), text(TRE_APPRAISAL_PROFILE)));
    malformed(&encode(t), "submod eat_profile");
    let mut t = veraison();
    t.insert(4, (int(1000), int(2)));
    malformed(&encode(t), "top-level ear.status");

    // Both: exp is required.
    for profile in EarProfile::ALL {
        let mut t = top_map(&c, profile);
        t.retain(|(k, _)| *k != int(4));
        malformed(&encode(t), "exp missing");
    }
}

#[test]
fn an_overall_status_more_trusting_than_the_submodule_is_refused() {
    let mut warning = affirming_vector();
    warning.set(Claim::Executables, value::UNSAFE_RUNTIME);
    let c = claims(warning, Nonce::random().unwrap(), SystemTime::now());
    let mut t = top_map(&c, EarProfile::Ietf);
    assert_eq!(t[4], (int(1000), int(32)));
    t[4].1 = int(2);
    assert_eq!(
        EarClaims::from_cbor(&encode(t)),
        Err(EarError::StatusInconsistent {
            status: TrustTier::Affirming,
            worst: TrustTier::Warning
        })
    );
    // Less trusting is allowed (-04 §3: "no higher trust than").
    let mut t = top_map(&c, EarProfile::Ietf);
    t[4].1 = int(96);
    assert!(EarClaims::from_cbor(&encode(t)).is_ok());
}

#[test]
fn status_is_the_worst_tier_of_the_vector() {
    let mut v = affirming_vector();
    assert_eq!(v.worst_tier(), TrustTier::Affirming);
    v.set(Claim::Executables, value::UNSAFE_RUNTIME);
    assert_eq!(v.worst_tier(), TrustTier::Warning);
    v.set(Claim::Hardware, value::CONTRAINDICATED_HARDWARE);
    assert_eq!(v.worst_tier(), TrustTier::Contraindicated);
    assert_eq!(TrustVector::new().worst_tier(), TrustTier::None);
    // AR4SI §2.3.3 tier boundaries.
    for (value, tier) in [
        (0, TrustTier::None),
        (-1, TrustTier::None),
        (1, TrustTier::None),
        (2, TrustTier::Affirming),
        (31, TrustTier::Affirming),
        (-32, TrustTier::Affirming),
        (32, TrustTier::Warning),
        (95, TrustTier::Warning),
        (-33, TrustTier::Warning),
        (96, TrustTier::Contraindicated),
        (99, TrustTier::Contraindicated),
        (-97, TrustTier::Contraindicated),
    ] {
        assert_eq!(TrustTier::of_claim(value), tier, "{value}");
    }
}

#[test]
fn an_ear_claiming_a_better_status_than_its_vector_is_refused() {
    let mut c = claims(affirming_vector(), Nonce::random().unwrap(), SystemTime::now());
    c.appraisal.vector.set(Claim::Executables, value::CONTRAINDICATED_RUNTIME);
    // status still says affirming: a forger (or a bug) set it apart from the vector
    let bytes = c.to_cbor().unwrap();
    assert_eq!(
        EarClaims::from_cbor(&bytes),
        Err(EarError::StatusInconsistent {
            status: TrustTier::Affirming,
            worst: TrustTier::Contraindicated
        })
    );
}

#[test]
fn each_check_fails_with_its_own_error() {
    let pki = pki();
    let now = SystemTime::now();
    let nonce = Nonce::random().unwrap();
    let good = claims(affirming_vector(), nonce, now);
    let ear = sign(&good, &pki.pva);

    // another device, another nonce
    assert!(matches!(
        VerifiedEar::verify(&ear, &pki.roots, now, &device(2), Some(&nonce)),
        Err(EarError::OtherDevice { .. })
    ));
    let other = Nonce::random().unwrap();
    assert_eq!(
        VerifiedEar::verify(&ear, &pki.roots, now, &device(1), Some(&other)),
        Err(EarError::OtherNonce)
    );
    // expired, issued in the future
    let later = now + Duration::from_secs(301);
    assert!(matches!(
        VerifiedEar::verify(&ear, &pki.roots, later, &device(1), None),
        Err(EarError::Expired { .. })
    ));
    let earlier = now - Duration::from_secs(120);
    assert!(matches!(
        VerifiedEar::verify(&ear, &pki.roots, earlier, &device(1), None),
        Err(EarError::NotYetValid { .. })
    ));
    // signed by another role under the same CI
    let mno = sign(&good, &pki.mno);
    assert!(matches!(
        VerifiedEar::verify(&mno, &pki.roots, now, &device(1), None),
        Err(EarError::SignerNotAllowed { .. })
    ));
    // named "pva", but the CI issued it to an operator: the role decides, not the name
    let impostor = sign(&good, &pki.pva_named_operator);
    assert!(matches!(
        VerifiedEar::verify(&impostor, &pki.roots, now, &device(1), None),
        Err(EarError::SignerNotAllowed { .. })
    ));
    // a CI we do not trust
    let stranger = self::pki();
    assert!(matches!(
        VerifiedEar::verify(&ear, &stranger.roots, now, &device(1), None),
        Err(EarError::UntrustedSigner(_))
    ));
    // the PVA certificate with another key's signature
    let forged_signer = (pki.pva.0.clone(), stranger.pva.1);
    let forged = sign(&good, &forged_signer);
    assert_eq!(
        VerifiedEar::verify(&forged, &pki.roots, now, &device(1), None),
        Err(EarError::BadSignature)
    );
    // one flipped payload byte
    let mut flipped = ear.clone();
    let at = flipped.len() - 80;
    flipped[at] ^= 1;
    assert!(VerifiedEar::verify(&flipped, &pki.roots, now, &device(1), None).is_err());
    // not affirming
    let mut warning = affirming_vector();
    warning.set(Claim::Executables, value::UNSAFE_RUNTIME);
    let mut c = claims(warning, nonce, now);
    c.appraisal.failed_checks = vec!["component-below-minimum-version".into()];
    let w = sign(&c, &pki.pva);
    assert_eq!(
        VerifiedEar::verify(&w, &pki.roots, now, &device(1), None),
        Err(EarError::NotAffirming {
            status: TrustTier::Warning,
            failed_checks: vec!["component-below-minimum-version".into()]
        })
    );
    let any = EarVerifier::new(pki.roots.clone()).accept_any_status();
    assert_eq!(any.verify(&w, now, &device(1), None).unwrap().status(), TrustTier::Warning);
    // garbage, oversize, untagged
    assert!(matches!(
        VerifiedEar::verify(b"\x00", &pki.roots, now, &device(1), None),
        Err(EarError::Malformed(_))
    ));
    assert!(matches!(
        VerifiedEar::verify(&vec![0; MAX_EAR_SIZE + 1], &pki.roots, now, &device(1), None),
        Err(EarError::TooLarge { .. })
    ));
    assert!(matches!(
        VerifiedEar::verify(&ear[1..], &pki.roots, now, &device(1), None),
        Err(EarError::Malformed(_))
    ));
}

#[test]
fn other_algorithms_and_missing_chains_are_refused() {
    let pki = pki();
    let now = SystemTime::now();
    let c = claims(affirming_vector(), Nonce::random().unwrap(), now);
    let rng = SystemRandom::new();
    let sign_with = |protected: coset::Header| {
        CoseSign1Builder::new()
            .protected(protected)
            .payload(c.to_cbor().unwrap())
            .create_signature(&[], |tbs| pki.pva.1.sign(&rng, tbs).unwrap().as_ref().to_vec())
            .build()
            .to_tagged_vec()
            .unwrap()
    };
    let es384 = sign_with(
        HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES384)
            .value(X5CHAIN, Value::Bytes(pki.pva.0.clone()))
            .build(),
    );
    assert_eq!(
        VerifiedEar::verify(&es384, &pki.roots, now, &device(1), None),
        Err(EarError::UnsupportedAlgorithm)
    );
    let no_chain = sign_with(HeaderBuilder::new().algorithm(iana::Algorithm::ES256).build());
    assert_eq!(
        VerifiedEar::verify(&no_chain, &pki.roots, now, &device(1), None),
        Err(EarError::MissingCertificateChain)
    );
}

#[test]
fn wrong_profile_and_extra_submods_are_refused() {
    let c = claims(affirming_vector(), Nonce::random().unwrap(), SystemTime::now());
    for profile in EarProfile::ALL {
        let mut top = top_map(&c, profile);
        top[0].1 = Value::Text("tag:example.com,2024:other".into());
        assert!(matches!(EarClaims::from_cbor(&encode(top)), Err(EarError::WrongProfile(_))));
        // draft-ietf-rats-ear-03's profile is not -04's.
        let mut top = top_map(&c, profile);
        top[0].1 = Value::Text("tag:ietf.org,2026:rats/ear#03".into());
        assert!(matches!(EarClaims::from_cbor(&encode(top)), Err(EarError::WrongProfile(_))));
        let mut top = top_map(&c, profile);
        if let Some((_, Value::Map(submods))) = top.iter_mut().find(|(k, _)| *k == int(266)) {
            let copy = submods[0].1.clone();
            submods.push((Value::Text("other".into()), copy));
        }
        assert!(matches!(EarClaims::from_cbor(&encode(top)), Err(EarError::Malformed(_))));
    }
}

/// `ear` re-encoded after `edit` changed its COSE_Sign1; the signature stays as it was.
fn edit_sign1(ear: &[u8], edit: impl FnOnce(&mut coset::CoseSign1)) -> Vec<u8> {
    let mut sign1 = coset::CoseSign1::from_tagged_slice(ear).unwrap();
    edit(&mut sign1);
    sign1.to_tagged_vec().unwrap()
}

#[test]
fn unprotected_headers_decide_nothing() {
    // The unprotected header is outside the signature: an EAR whose unprotected header
    // carries alg, crit or an x5chain is refused although its signature still verifies.
    let pki = pki();
    let now = SystemTime::now();
    let ear = sign(&claims(affirming_vector(), Nonce::random().unwrap(), now), &pki.pva);
    let verify = |e: &[u8]| VerifiedEar::verify(e, &pki.roots, now, &device(1), None);
    verify(&ear).unwrap();
    let alg = edit_sign1(&ear, |s| {
        s.unprotected.alg = Some(coset::Algorithm::Assigned(iana::Algorithm::ES256));
    });
    assert_eq!(verify(&alg), Err(EarError::UnsupportedAlgorithm));
    let other_alg = edit_sign1(&ear, |s| {
        s.unprotected.alg = Some(coset::Algorithm::Assigned(iana::Algorithm::EdDSA));
    });
    assert_eq!(verify(&other_alg), Err(EarError::UnsupportedAlgorithm));
    let crit = edit_sign1(&ear, |s| {
        s.unprotected.crit = vec![coset::RegisteredLabelWithPrivate::PrivateUse(-65_537)];
    });
    assert!(matches!(verify(&crit), Err(EarError::Malformed(m)) if m.contains("critical")));
    let chain = edit_sign1(&ear, |s| {
        s.unprotected.rest.push((coset::Label::Int(X5CHAIN), Value::Bytes(pki.pva.0.clone())));
    });
    assert!(matches!(verify(&chain), Err(EarError::Malformed(m)) if m.contains("x5chain")));
}

#[test]
fn a_critical_protected_header_is_refused() {
    let pki = pki();
    let now = SystemTime::now();
    let c = claims(affirming_vector(), Nonce::random().unwrap(), now);
    let rng = SystemRandom::new();
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(X5CHAIN, Value::Bytes(pki.pva.0.clone()))
        .add_critical(iana::HeaderParameter::ContentType)
        .build();
    let signed = CoseSign1Builder::new()
        .protected(protected)
        .payload(c.to_cbor().unwrap())
        .create_signature(&[], |tbs| {
            crate::es256::to_low_s(pki.pva.1.sign(&rng, tbs).unwrap().as_ref())
        })
        .build()
        .to_tagged_vec()
        .unwrap();
    assert!(matches!(
        VerifiedEar::verify(&signed, &pki.roots, now, &device(1), None),
        Err(EarError::Malformed(m)) if m.contains("critical")
    ));
}

#[test]
fn only_the_low_s_signature_is_accepted_and_tresor_signs_low_s() {
    let pki = pki();
    let now = SystemTime::now();
    let c = claims(affirming_vector(), Nonce::random().unwrap(), now);
    for profile in EarProfile::ALL {
        for _ in 0..16 {
            // ring gives a high s half the time; EarClaims::sign_as normalises it.
            let ear = sign_as(profile, &c, &pki.pva);
            let sign1 = coset::CoseSign1::from_tagged_slice(&ear).unwrap();
            assert!(crate::es256::is_low_s(&sign1.signature));
            VerifiedEar::verify(&ear, &pki.roots, now, &device(1), None).unwrap();
            // (r, n − s) is as valid for ECDSA, and refused.
            let twin = edit_sign1(&ear, |s| s.signature = crate::es256::flip_s(&s.signature));
            assert!(matches!(
                VerifiedEar::verify(&twin, &pki.roots, now, &device(1), None),
                Err(EarError::Malformed(m)) if m.contains("low-S")
            ));
        }
    }
}

mod properties {
    //! Random and mutated input for the relying parties' EAR verifier: never a panic, and
    //! no single flipped bit of a signed EAR is accepted.

    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    struct Fixture {
        pki: Pki,
        now: SystemTime,
        ear: Vec<u8>,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let pki = pki();
            let now = SystemTime::now();
            let ear = sign(&claims(affirming_vector(), Nonce::random().unwrap(), now), &pki.pva);
            Fixture { pki, now, ear }
        })
    }

    fn verify(ear: &[u8]) -> Result<VerifiedEar, EarError> {
        let f = fixture();
        VerifiedEar::verify(ear, &f.pki.roots, f.now, &device(1), None)
    }

    #[test]
    fn the_fixture_verifies() {
        verify(&fixture().ear).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(verify(&bytes).is_err());
            if let Ok(claims) = EarClaims::from_cbor(&bytes) {
                prop_assert_eq!(EarClaims::from_cbor(&claims.to_cbor().unwrap()).unwrap(), claims);
            }
        }

        #[test]
        fn random_claims_signed_by_the_pva_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            // Past the signature, the claims decoder and its checks see arbitrary bytes.
            let f = fixture();
            let rng = SystemRandom::new();
            let protected = HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES256)
                .value(X5CHAIN, Value::Bytes(f.pki.pva.0.clone()))
                .build();
            let signed = CoseSign1Builder::new()
                .protected(protected)
                .payload(bytes)
                .create_signature(b"", |tbs| f.pki.pva.1.sign(&rng, tbs).unwrap().as_ref().to_vec())
                .build()
                .to_tagged_vec()
                .unwrap();
            let _ = verify(&signed);
        }

        #[test]
        fn no_flipped_bit_of_a_signed_ear_is_accepted(bit in any::<prop::sample::Index>()) {
            let mut ear = fixture().ear.clone();
            let bit = bit.index(ear.len() * 8);
            ear[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify(&ear).is_err(), "bit {} flipped and still accepted", bit);
        }

        #[test]
        fn no_truncation_of_a_signed_ear_is_accepted(cut in any::<prop::sample::Index>()) {
            let ear = &fixture().ear;
            prop_assert!(verify(&ear[..cut.index(ear.len())]).is_err());
        }
    }
}
