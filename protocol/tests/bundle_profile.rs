//! The signed profile (inner bundle): MNO-B signs, the DPF and the device verify; every
//! check of `verify_profile` refuses its own forgery with its own error (issue 7, attack 12:
//! signed by MNO-A or by an operator the CI never certified).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle_support;

use std::time::{Duration, SystemTime};

use bundle_support::*;
use coset::cbor::value::Value;
use coset::iana;
use protocol::bundle::{
    BundleError, MAX_SIGNED_PROFILE_LEN, ProfileSigner, VerifiedProfile, verify_profile,
};
use protocol::role::{Role, RoleError};
use protocol::x509::ChainError;

struct World {
    ci: Ci,
    mno_b: RoleCert,
}

fn world() -> World {
    let ci = Ci::new("tresor CI");
    let mno_b = ci.role("mno-b");
    World { ci, mno_b }
}

fn verify(w: &World, bytes: &[u8]) -> Result<VerifiedProfile, BundleError> {
    verify_profile(bytes, &w.ci.anchors(), SystemTime::now(), "mno-b", &device(1))
}

#[test]
fn a_signed_profile_verifies_and_carries_everything() {
    let w = world();
    let p = payload(&device(1), "mno-b");
    let signed = w.mno_b.signer().sign(&p).unwrap();
    let v = verify(&w, &signed).unwrap();
    assert_eq!(v.payload, p);
    assert_eq!(v.sequence(), 8);
    assert!(v.signer_subject.contains("CN=mno-b"), "{}", v.signer_subject);
    assert_eq!(v.signer_chain, vec![w.mno_b.der.clone(), w.ci.der.clone()]);
    v.check_ear_hash(&protocol::bundle::ear_hash(EAR)).unwrap();
    assert!(matches!(v.check_ear_hash(&[0; 32]), Err(BundleError::WrongEar { .. })));
    // Tag 18, protected header {1: -7, 33: cert}.
    assert_eq!(signed[0], 0xD2);
}

#[test]
fn x5chain_with_an_intermediate_validates() {
    // CI root → operator CA → mno-b; the x5chain carries mno-b and the operator CA.
    let root = Ci::new("tresor CI");
    let inter = root.intermediate("tresor operator CA");
    let mno_b = inter.role("mno-b");
    let signer =
        ProfileSigner::from_pkcs8_pem(&mno_b.key_pem, vec![mno_b.der.clone(), inter.der.clone()])
            .unwrap();
    let signed = signer.sign(&payload(&device(1), "mno-b")).unwrap();
    let v =
        verify_profile(&signed, &root.anchors(), SystemTime::now(), "mno-b", &device(1)).unwrap();
    assert_eq!(v.signer_chain, vec![mno_b.der.clone(), inter.der.clone(), root.der.clone()]);
    // Without the operator CA in the x5chain, there is no path.
    let alone = mno_b.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    assert!(matches!(
        verify_profile(&alone, &root.anchors(), SystemTime::now(), "mno-b", &device(1)),
        Err(BundleError::SignerChain(ChainError::UnknownIssuer { .. }))
    ));
}

#[test]
fn attack_12_signed_by_mno_a() {
    let w = world();
    let mno_a = w.ci.role("mno-a");
    let signed = mno_a.signer().sign(&payload(&device(1), "mno-a")).unwrap();
    assert_eq!(
        verify(&w, &signed).unwrap_err(),
        BundleError::WrongSigner { expected: "mno-b".into(), found: "mno-a".into() }
    );
}

#[test]
fn attack_12_signed_by_an_operator_the_ci_never_certified() {
    let w = world();
    let rogue_ci = Ci::new("tresor CI");
    let rogue = rogue_ci.role("mno-b");
    let signed = rogue.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    assert!(matches!(
        verify(&w, &signed).unwrap_err(),
        BundleError::SignerChain(
            ChainError::BadSignature { .. } | ChainError::UnknownIssuer { .. }
        )
    ));
    // A self-signed "mno-b".
    let own_role = Ci::new("mno-b").as_role();
    let signed = sign_raw(
        &own_role.key_pem,
        es256_x5chain(&own_role.der),
        Default::default(),
        Some(cbor(&payload(&device(1), "mno-b"))),
        None,
    );
    assert!(matches!(verify(&w, &signed).unwrap_err(), BundleError::SignerChain(_)));
}

#[test]
fn expired_and_not_yet_valid_signer_certificates() {
    let w = world();
    let expired = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(7200)).into();
        p.not_after = (now - Duration::from_secs(3600)).into();
    });
    let signed = expired.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    assert!(matches!(
        verify(&w, &signed).unwrap_err(),
        BundleError::SignerChain(ChainError::Expired { .. })
    ));
    let future = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = (SystemTime::now() + Duration::from_secs(3600)).into();
    });
    let signed = future.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    assert!(matches!(
        verify(&w, &signed).unwrap_err(),
        BundleError::SignerChain(ChainError::NotYetValid { .. })
    ));
}

#[test]
fn signer_certificate_must_allow_signatures_with_a_p256_key() {
    let w = world();
    let no_ds = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
    });
    let signed = no_ds.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    assert_eq!(verify(&w, &signed).unwrap_err(), BundleError::SignerKeyUsage);

    // A P-384 operator key: ProfileSigner refuses it; a hand-made ES256-labelled profile
    // with such a certificate is refused at the key type.
    let p384 = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P384_SHA384, |_| {});
    assert_eq!(
        ProfileSigner::from_pkcs8_pem(&p384.key_pem, vec![p384.der.clone()]).unwrap_err(),
        BundleError::SigningKey("not an ECDSA P-256 PKCS#8 key")
    );
    let signed = sign_raw(
        &w.mno_b.key_pem,
        es256_x5chain(&p384.der),
        Default::default(),
        Some(cbor(&payload(&device(1), "mno-b"))),
        None,
    );
    assert_eq!(verify(&w, &signed).unwrap_err(), BundleError::SignerKeyType);

    // No common name: no operator name. (rcgen cannot write two common names, which
    // `verify_profile` refuses as ambiguous with the same error.)
    let no_cn = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.distinguished_name.remove(rcgen::DnType::CommonName);
    });
    let signed = sign_raw(
        &no_cn.key_pem,
        es256_x5chain(&no_cn.der),
        Default::default(),
        Some(cbor(&payload(&device(1), "mno-b"))),
        None,
    );
    assert_eq!(verify(&w, &signed).unwrap_err(), BundleError::SignerRole(RoleError::NoName));
}

#[test]
fn the_signer_must_hold_the_operator_role() {
    let w = world();
    let sign_with = |cert: &RoleCert| {
        sign_raw(
            &cert.key_pem,
            es256_x5chain(&cert.der),
            Default::default(),
            Some(cbor(&payload(&device(1), "mno-b"))),
            None,
        )
    };
    // A valid CI certificate named mno-b, but issued to the PVA role: refused by role.
    let pva_named_mno_b = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            Role::Pva.policies_der(),
        )];
    });
    assert!(matches!(
        verify(&w, &sign_with(&pva_named_mno_b)).unwrap_err(),
        BundleError::SignerRole(RoleError::WrongRole {
            expected: Role::Operator,
            found: Role::Pva,
            ..
        })
    ));
    // Without a role (a certificate from before role-bound PKIs): refused.
    let role_less = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.custom_extensions.clear();
    });
    assert_eq!(
        verify(&w, &sign_with(&role_less)).unwrap_err(),
        BundleError::SignerRole(RoleError::NoRole)
    );
    // The operator role, but its own DNS name missing: the name is not certified.
    let no_dns = w.ci.role_with("mno-b", &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.subject_alt_names.clear();
    });
    assert!(matches!(
        verify(&w, &sign_with(&no_dns)).unwrap_err(),
        BundleError::SignerRole(RoleError::NameMismatch { .. })
    ));
}

#[test]
fn signer_construction_checks_key_and_chain() {
    let w = world();
    let other = w.ci.role("mno-b");
    assert_eq!(
        ProfileSigner::from_pkcs8_pem(&w.mno_b.key_pem, vec![other.der.clone()]).unwrap_err(),
        BundleError::KeyCertificateMismatch
    );
    assert!(matches!(
        ProfileSigner::from_pkcs8_pem(&w.mno_b.key_pem, vec![]).unwrap_err(),
        BundleError::X5chainLength { count: 0, .. }
    ));
    assert!(matches!(
        ProfileSigner::from_pkcs8_pem("not pem", vec![w.mno_b.der.clone()]).unwrap_err(),
        BundleError::SigningKey(_)
    ));
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", w.mno_b.der.clone()));
    assert!(matches!(
        ProfileSigner::from_pkcs8_pem(&cert_pem, vec![w.mno_b.der.clone()]).unwrap_err(),
        BundleError::SigningKey(_)
    ));
    let signer = w.mno_b.signer();
    assert_eq!(signer.operator(), "mno-b");
    // Signing a payload that names another operator would only produce a refused profile.
    assert_eq!(
        signer.sign(&payload(&device(1), "mno-a")).unwrap_err(),
        BundleError::OperatorMismatch { payload: "mno-a".into(), signer: "mno-b".into() }
    );
    // Debug shows no key material.
    let shown = format!("{signer:?}");
    assert!(shown.contains("mno-b") && !shown.contains("PRIVATE"), "{shown}");
}

#[test]
fn header_checks() {
    let w = world();
    let body = Some(cbor(&payload(&device(1), "mno-b")));
    let key = &w.mno_b.key_pem;
    let cert = &w.mno_b.der;

    // ES384 label over an ES256 signature: refused before the signature.
    let mut h = es256_x5chain(cert);
    h.alg = Some(coset::RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384));
    let signed = sign_raw(key, h, Default::default(), body.clone(), None);
    assert_eq!(
        verify(&w, &signed).unwrap_err(),
        BundleError::SignatureAlgorithm { found: "-35".into() }
    );

    // The algorithm only in the unprotected header.
    let mut h = es256_x5chain(cert);
    h.alg = None;
    let u = coset::HeaderBuilder::new().algorithm(iana::Algorithm::ES256).build();
    let signed = sign_raw(key, h, u, body.clone(), None);
    assert_eq!(
        verify(&w, &signed).unwrap_err(),
        BundleError::UnprotectedAlgorithm { structure: "COSE_Sign1" }
    );
    // No algorithm at all.
    let mut h = es256_x5chain(cert);
    h.alg = None;
    let signed = sign_raw(key, h, Default::default(), body.clone(), None);
    assert_eq!(
        verify(&w, &signed).unwrap_err(),
        BundleError::SignatureAlgorithm { found: "none".into() }
    );

    // No x5chain; x5chain unprotected; x5chain of the wrong type.
    let h = coset::HeaderBuilder::new().algorithm(iana::Algorithm::ES256).build();
    let signed = sign_raw(key, h.clone(), Default::default(), body.clone(), None);
    assert_eq!(verify(&w, &signed).unwrap_err(), BundleError::MissingX5chain);
    let u = coset::HeaderBuilder::new().value(33, Value::Bytes(cert.clone())).build();
    let signed = sign_raw(key, h.clone(), u, body.clone(), None);
    assert!(matches!(verify(&w, &signed).unwrap_err(), BundleError::MalformedX5chain(_)));
    let bad = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, Value::Text("cert".into()))
        .build();
    let signed = sign_raw(key, bad, Default::default(), body.clone(), None);
    assert!(matches!(verify(&w, &signed).unwrap_err(), BundleError::MalformedX5chain(_)));
    let garbage = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, Value::Bytes(vec![0x30, 0x03, 1, 2, 3]))
        .build();
    let signed = sign_raw(key, garbage, Default::default(), body.clone(), None);
    assert!(matches!(
        verify(&w, &signed).unwrap_err(),
        BundleError::SignerChain(ChainError::Malformed(_))
    ));

    // A critical header parameter.
    let crit = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, Value::Bytes(cert.clone()))
        .add_critical(iana::HeaderParameter::ContentType)
        .build();
    let signed = sign_raw(key, crit, Default::default(), body.clone(), None);
    assert_eq!(verify(&w, &signed).unwrap_err(), BundleError::UnsupportedCriticalHeader);
}

#[test]
fn the_unsigned_header_decides_nothing() {
    // Issue 12: the unprotected header is outside the signature. A genuine profile whose
    // unprotected header an attacker filled with alg or crit still verifies as a signature,
    // and is refused.
    let w = world();
    let signed = w.mno_b.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    verify(&w, &signed).unwrap();
    for alg in [iana::Algorithm::ES256, iana::Algorithm::ES384] {
        let forged =
            edit_sign1(&signed, |s| s.unprotected.alg = Some(coset::Algorithm::Assigned(alg)));
        assert_eq!(
            verify(&w, &forged).unwrap_err(),
            BundleError::UnprotectedAlgorithm { structure: "COSE_Sign1" }
        );
    }
    let forged = edit_sign1(&signed, |s| {
        s.unprotected.crit =
            vec![coset::RegisteredLabelWithPrivate::Assigned(iana::HeaderParameter::ContentType)];
    });
    assert_eq!(verify(&w, &forged).unwrap_err(), BundleError::UnsupportedCriticalHeader);
}

#[test]
fn only_the_low_s_signature_is_accepted_and_profiles_are_signed_low_s() {
    let w = world();
    for sequence in 0..16 {
        let mut p = payload(&device(1), "mno-b");
        p.sequence = sequence + 1;
        let signed = w.mno_b.signer().sign(&p).unwrap();
        let sign1 = <coset::CoseSign1 as coset::TaggedCborSerializable>::from_tagged_slice(&signed)
            .unwrap();
        assert!(protocol::es256::is_low_s(&sign1.signature), "ProfileSigner signs low-S");
        verify(&w, &signed).unwrap();
        // The other ECDSA encoding of the same signature.
        let twin = edit_sign1(&signed, |s| s.signature = protocol::es256::flip_s(&s.signature));
        assert_eq!(verify(&w, &twin).unwrap_err(), BundleError::NonCanonicalSignature);
    }
}

#[test]
fn structure_checks() {
    let w = world();
    let signed = w.mno_b.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    assert!(matches!(
        verify(&w, &untagged_sign1(&signed)).unwrap_err(),
        BundleError::MalformedSign1(_)
    ));
    assert!(matches!(
        verify(&w, &signed[..signed.len() - 1]).unwrap_err(),
        BundleError::MalformedSign1(_)
    ));
    let mut trailing = signed.clone();
    trailing.push(0);
    assert!(matches!(verify(&w, &trailing).unwrap_err(), BundleError::MalformedSign1(_)));
    assert!(matches!(
        verify(&w, &vec![0u8; MAX_SIGNED_PROFILE_LEN + 1]).unwrap_err(),
        BundleError::TooLarge { .. }
    ));
    // A COSE_Encrypt is not a COSE_Sign1.
    assert!(matches!(verify(&w, &[0xD8, 0x60, 0x80]).unwrap_err(), BundleError::MalformedSign1(_)));
}

#[test]
fn signature_checks() {
    let w = world();
    let signed = w.mno_b.signer().sign(&payload(&device(1), "mno-b")).unwrap();
    let flipped = edit_sign1(&signed, |s| s.signature[5] ^= 1);
    assert_eq!(verify(&w, &flipped).unwrap_err(), BundleError::BadSignature);
    let short = edit_sign1(&signed, |s| s.signature.truncate(63));
    assert_eq!(verify(&w, &short).unwrap_err(), BundleError::BadSignature);
    // A changed payload (another sequence) under the old signature.
    let mut other = payload(&device(1), "mno-b");
    other.sequence = 99;
    let swapped = edit_sign1(&signed, |s| s.payload = Some(cbor(&other)));
    assert_eq!(verify(&w, &swapped).unwrap_err(), BundleError::BadSignature);
    // A protected header with one more parameter (kid) under the old signature.
    let more = edit_sign1(&signed, |s| {
        let mut h = s.protected.header.clone();
        h.key_id = vec![0];
        s.protected = coset::ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(verify(&w, &more).unwrap_err(), BundleError::BadSignature);
    // Detached payload.
    let body = cbor(&payload(&device(1), "mno-b"));
    let detached = sign_raw(
        &w.mno_b.key_pem,
        es256_x5chain(&w.mno_b.der),
        Default::default(),
        None,
        Some(&body),
    );
    assert_eq!(verify(&w, &detached).unwrap_err(), BundleError::MissingPayload);
}

#[test]
fn payload_checks() {
    let w = world();
    let key = &w.mno_b.key_pem;
    let h = || es256_x5chain(&w.mno_b.der);
    let sign = |body: Vec<u8>| sign_raw(key, h(), Default::default(), Some(body), None);

    // Not a payload: signed, but garbage.
    assert!(matches!(verify(&w, &sign(vec![0x01])).unwrap_err(), BundleError::MalformedPayload(_)));
    // An extra field.
    #[derive(serde::Serialize)]
    struct Extra {
        #[serde(flatten)]
        p: protocol::bundle::ProfilePayload,
        extra: u8,
    }
    let err =
        verify(&w, &sign(cbor(&Extra { p: payload(&device(1), "mno-b"), extra: 1 }))).unwrap_err();
    assert!(
        matches!(&err, BundleError::MalformedPayload(m) if m.contains("unknown field")),
        "{err}"
    );
    // The payload names another operator than its signer.
    assert_eq!(
        verify(&w, &sign(cbor(&payload(&device(1), "mno-a")))).unwrap_err(),
        BundleError::OperatorMismatch { payload: "mno-a".into(), signer: "mno-b".into() }
    );
    // Another device (the profile itself is for device 2).
    assert_eq!(
        verify(&w, &sign(cbor(&payload(&device(2), "mno-b")))).unwrap_err(),
        BundleError::WrongDevice { expected: device(1), found: device(2) }
    );
    // Validity.
    let now = now_secs();
    let mut p = payload(&device(1), "mno-b");
    p.issued = now - 7200;
    p.expires = now - 3600;
    assert!(matches!(verify(&w, &sign(cbor(&p))).unwrap_err(), BundleError::Expired { .. }));
    let mut p = payload(&device(1), "mno-b");
    p.issued = now + 3600;
    p.expires = now + 7200;
    assert!(matches!(verify(&w, &sign(cbor(&p))).unwrap_err(), BundleError::IssuedInFuture { .. }));
    let mut p = payload(&device(1), "mno-b");
    p.expires = p.issued;
    assert!(matches!(verify(&w, &sign(cbor(&p))).unwrap_err(), BundleError::EmptyValidity { .. }));
    // Issued a little in the future (clock skew) is fine.
    let mut p = payload(&device(1), "mno-b");
    p.issued = now + 60;
    verify(&w, &sign(cbor(&p))).unwrap();
}

#[test]
fn secrets_never_reach_debug_or_errors() {
    let w = world();
    let p = payload(&device(1), "mno-b");
    let signed = w.mno_b.signer().sign(&p).unwrap();
    let v = verify(&w, &signed).unwrap();
    for shown in [format!("{v:?}"), format!("{p:?}"), format!("{:?}", v.payload.profile)] {
        assert!(!leaks_a_secret(shown.as_bytes()), "{shown}");
    }
    // A payload whose K is a text string of "secret" hex: the error names no value.
    use ciborium::value::Value as V;
    let mut bad = V::serialized(&p).unwrap();
    let V::Map(fields) = &mut bad else { panic!() };
    let profile = fields.iter_mut().find(|(k, _)| k.as_text() == Some("profile")).unwrap();
    let V::Map(profile_fields) = &mut profile.1 else { panic!() };
    let k = profile_fields.iter_mut().find(|(k, _)| k.as_text() == Some("k")).unwrap();
    k.1 = V::Text(hex::encode(K));
    let signed = sign_raw(
        &w.mno_b.key_pem,
        es256_x5chain(&w.mno_b.der),
        Default::default(),
        Some(cbor(&bad)),
        None,
    );
    let err = verify(&w, &signed).unwrap_err();
    assert!(matches!(err, BundleError::MalformedPayload(_)));
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!leaks_a_secret(shown.as_bytes()), "{shown}");
    }
}
