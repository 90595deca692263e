//! The encrypted bundle (outer): MNO-B encrypts its signed profile to the device's
//! bundle key, the device decrypts (a software ECDH key stands in for TPM2_ECDH_ZGen) and
//! checks it. Issue 7, attack 12: replayed, meant for another device, tampered ciphertext
//! or AAD, signed by MNO-A or an unknown operator: each refused with its own error. A relay
//! that cannot open the bundle (the RO's DPF) checks its binding to the device and the EAR.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle_support;

use std::time::SystemTime;

use bundle_support::*;
use coset::cbor::value::Value;
use coset::{CoseEncrypt, ProtectedHeader, TaggedCborSerializable};
use protocol::bundle::{
    BundleError, BundleExpectations, HEADER_DEVICE_ID, HEADER_EAR_HASH, MAX_BUNDLE_LEN,
    SoftwareRecipient, check_bundle_binding, check_sequence, decrypt_bundle, ear_hash,
    encrypt_bundle, external_aad, open_bundle,
};
use protocol::x509::{ChainError, TrustAnchors};
use zeroize::Zeroizing;

struct World {
    anchors: TrustAnchors,
    signed: Vec<u8>,
    ear_hash: [u8; 32],
}

fn world() -> World {
    let ci = Ci::new("tresor CI");
    let signed = ci.role("mno-b").signer().sign(&payload(&device(1), "mno-b")).unwrap();
    World { anchors: ci.anchors(), signed, ear_hash: ear_hash(EAR) }
}

fn expectations<'a>(w: &'a World, device_id: &'a protocol::DeviceId) -> BundleExpectations<'a> {
    BundleExpectations {
        ci_roots: &w.anchors,
        now: SystemTime::now(),
        operator: "mno-b",
        device_id,
        ear_hash: &w.ear_hash,
    }
}

fn encrypt_to(key: &SoftwareRecipient, signed: &[u8], ear: &[u8; 32]) -> Vec<u8> {
    encrypt_bundle(signed, key.x(), key.y(), &device(1), ear).unwrap()
}

/// Rewrites a bundle through coset (protected headers keep their original bytes unless
/// `edit` replaces them).
fn edit(bundle: &[u8], edit: impl FnOnce(&mut CoseEncrypt)) -> Vec<u8> {
    let mut m = CoseEncrypt::from_tagged_slice(bundle).unwrap();
    edit(&mut m);
    m.to_tagged_vec().unwrap()
}

#[test]
fn round_trip_through_open_bundle() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    assert_eq!(&bundle[..2], [0xD8, 0x60], "tag 96");
    assert!(!leaks_a_secret(&bundle), "the bundle carries the profile in clear");
    let dev = device(1);
    let v = open_bundle(&bundle, &expectations(&w, &dev), |x, y| key.zgen(x, y)).unwrap();
    assert_eq!(v.payload, payload_like(&v.payload));
    check_sequence(v.sequence(), 7).unwrap();
}

/// The payload the world signed, with its own timestamps.
fn payload_like(p: &protocol::bundle::ProfilePayload) -> protocol::bundle::ProfilePayload {
    let mut expected = payload(&device(1), "mno-b");
    expected.issued = p.issued;
    expected.expires = p.expires;
    expected
}

#[test]
fn the_layout_is_the_documented_one() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let m = CoseEncrypt::from_tagged_slice(&encrypt_to(&key, &w.signed, &w.ear_hash)).unwrap();
    // Body: protected {1: 3, -65537: device id, -65538: EAR hash}, unprotected {5: IV}.
    let p = &m.protected.header;
    assert_eq!(p.alg, Some(coset::Algorithm::Assigned(coset::iana::Algorithm::A256GCM)));
    assert_eq!(p.rest.len(), 2);
    assert_eq!(
        p.rest[0],
        (coset::Label::Int(HEADER_DEVICE_ID), Value::Bytes(device(1).as_bytes().to_vec()))
    );
    assert_eq!(p.rest[1], (coset::Label::Int(HEADER_EAR_HASH), Value::Bytes(w.ear_hash.to_vec())));
    assert_eq!(m.unprotected.iv.len(), 12);
    assert_eq!(m.ciphertext.as_ref().unwrap().len(), w.signed.len() + 16);
    // One recipient: protected h'A1013818' ({1: -25}), unprotected {-1: EC2 key}, h''.
    let [r] = m.recipients.as_slice() else { panic!() };
    assert_eq!(r.protected.original_data.as_deref(), Some(&[0xA1, 0x01, 0x38, 0x18][..]));
    assert_eq!(r.ciphertext.as_deref(), Some(&[][..]));
    assert_eq!(r.unprotected.rest.len(), 1);
    assert_eq!(r.unprotected.rest[0].0, coset::Label::Int(-1));
    // External AAD: name ‖ EAR hash.
    let aad = external_aad(&device(1), &w.ear_hash);
    assert_eq!(aad.len(), 34 + 32);
    assert_eq!(&aad[..34], device(1).as_bytes());
}

#[test]
fn two_encryptions_differ() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    assert_ne!(encrypt_to(&key, &w.signed, &w.ear_hash), encrypt_to(&key, &w.signed, &w.ear_hash));
}

#[test]
fn a_relay_checks_the_binding_without_the_key() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    check_bundle_binding(&bundle, &device(1), &w.ear_hash).unwrap();
    assert_eq!(
        check_bundle_binding(&bundle, &device(2), &w.ear_hash),
        Err(BundleError::BundleForAnotherDevice { expected: device(2), found: device(1) })
    );
    assert!(matches!(
        check_bundle_binding(&bundle, &device(1), &ear_hash(b"another EAR")),
        Err(BundleError::BundleForAnotherEar { .. })
    ));
    // A signed profile is not a bundle; neither is a bundle without its binding headers.
    assert!(matches!(
        check_bundle_binding(&w.signed, &device(1), &w.ear_hash),
        Err(BundleError::MalformedEncrypt(_))
    ));
    let unbound = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.rest.clear();
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(
        check_bundle_binding(&unbound, &device(1), &w.ear_hash),
        Err(BundleError::MissingHeader("device id (-65537)"))
    );
    let huge = vec![0u8; MAX_BUNDLE_LEN + 1];
    assert!(matches!(
        check_bundle_binding(&huge, &device(1), &w.ear_hash),
        Err(BundleError::TooLarge { .. })
    ));
    // The binding says nothing about who may open it: the device still decrypts.
    key.decrypt(&bundle, &device(1), &w.ear_hash).unwrap();
}

#[test]
fn attack_12_replayed_bundle() {
    // The TRE's counter is already at the bundle's sequence (it installed it before).
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let dev = device(1);
    let v = open_bundle(&bundle, &expectations(&w, &dev), |x, y| key.zgen(x, y)).unwrap();
    assert_eq!(
        check_sequence(v.sequence(), 8),
        Err(BundleError::Replayed { sequence: 8, counter: 8 })
    );
    assert_eq!(
        check_sequence(v.sequence(), 9),
        Err(BundleError::Replayed { sequence: 8, counter: 9 })
    );
}

#[test]
fn attack_12_bundle_meant_for_another_device() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    // Device 2 receives device 1's bundle.
    let err = key.decrypt(&bundle, &device(2), &w.ear_hash).unwrap_err();
    assert_eq!(err, BundleError::BundleForAnotherDevice { expected: device(2), found: device(1) });

    // The header rewritten to name device 2: the AEAD (header and external AAD) refuses.
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let forged = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.rest[0].1 = Value::Bytes(device(2).as_bytes().to_vec());
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(
        key.decrypt(&forged, &device(2), &w.ear_hash).unwrap_err(),
        BundleError::DecryptionFailed
    );

    // A bundle correctly encrypted for device 2, but whose profile MNO-B made for device 1.
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_bundle(&w.signed, key.x(), key.y(), &device(2), &w.ear_hash).unwrap();
    let dev2 = device(2);
    let err = open_bundle(&bundle, &expectations(&w, &dev2), |x, y| key.zgen(x, y)).unwrap_err();
    assert_eq!(err, BundleError::WrongDevice { expected: device(2), found: device(1) });
}

#[test]
fn attack_12_tampered_ciphertext() {
    let w = world();
    for at in [0, 100, w.signed.len() - 1, w.signed.len() + 15] {
        let key = SoftwareRecipient::generate().unwrap();
        let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
        let tampered = edit(&bundle, |m| m.ciphertext.as_mut().unwrap()[at] ^= 0x01);
        assert_eq!(
            key.decrypt(&tampered, &device(1), &w.ear_hash).unwrap_err(),
            BundleError::DecryptionFailed
        );
    }
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let truncated = edit(&bundle, |m| m.ciphertext.as_mut().unwrap().truncate(10));
    assert_eq!(
        key.decrypt(&truncated, &device(1), &w.ear_hash).unwrap_err(),
        BundleError::MissingCiphertext
    );
}

#[test]
fn attack_12_tampered_aad() {
    let w = world();
    // The device holds another EAR than the one the bundle was released on.
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let other_ear = ear_hash(b"another EAR");
    assert!(matches!(
        key.decrypt(&bundle, &device(1), &other_ear).unwrap_err(),
        BundleError::BundleForAnotherEar { .. }
    ));
    // The EAR hash header rewritten to match: the AEAD refuses.
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let forged = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.rest[1].1 = Value::Bytes(other_ear.to_vec());
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(
        key.decrypt(&forged, &device(1), &other_ear).unwrap_err(),
        BundleError::DecryptionFailed
    );
    // Any protected header change (an extra parameter) fails the AEAD.
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let forged = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.content_type = Some(coset::ContentType::Assigned(coset::iana::CoapContentFormat::Cbor));
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(
        key.decrypt(&forged, &device(1), &w.ear_hash).unwrap_err(),
        BundleError::DecryptionFailed
    );
    // The IV changed.
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let forged = edit(&bundle, |m| m.unprotected.iv[0] ^= 1);
    assert_eq!(
        key.decrypt(&forged, &device(1), &w.ear_hash).unwrap_err(),
        BundleError::DecryptionFailed
    );
    // The recipient's protected header (in the KDF context) changed to an equivalent
    // encoding: {1: -25} with a two-byte integer (39 0018 instead of 38 18).
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let forged = edit(&bundle, |m| {
        let mut r = m.recipients[0].protected.clone();
        r.original_data = Some(vec![0xA1, 0x01, 0x39, 0x00, 0x18]);
        m.recipients[0].protected = r;
    });
    assert_eq!(
        key.decrypt(&forged, &device(1), &w.ear_hash).unwrap_err(),
        BundleError::DecryptionFailed
    );
}

#[test]
fn attack_12_signed_by_mno_a_or_an_unknown_operator() {
    let w = world();
    let dev = device(1);
    // MNO-A signs a profile for this device; the DPF (or an attacker) encrypts it properly.
    let ci_for_a = Ci::new("tresor CI");
    let mut w_a = World { anchors: ci_for_a.anchors(), signed: vec![], ear_hash: w.ear_hash };
    w_a.signed = ci_for_a.role("mno-a").signer().sign(&payload(&dev, "mno-a")).unwrap();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w_a.signed, &w.ear_hash);
    assert_eq!(
        open_bundle(&bundle, &expectations(&w_a, &dev), |x, y| key.zgen(x, y)).unwrap_err(),
        BundleError::WrongSigner { expected: "mno-b".into(), found: "mno-a".into() }
    );
    // An "mno-b" certified by another CI.
    let rogue = Ci::new("tresor CI").role("mno-b").signer().sign(&payload(&dev, "mno-b")).unwrap();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &rogue, &w.ear_hash);
    assert!(matches!(
        open_bundle(&bundle, &expectations(&w, &dev), |x, y| key.zgen(x, y)).unwrap_err(),
        BundleError::SignerChain(
            ChainError::UnknownIssuer { .. } | ChainError::BadSignature { .. }
        )
    ));
}

#[test]
fn a_profile_for_another_ear_is_refused_after_decryption() {
    // The DPF encrypted with the right EAR, but MNO-B's profile names another one.
    let ci = Ci::new("tresor CI");
    let mut p = payload(&device(1), "mno-b");
    p.ear_hash = ear_hash(b"an older EAR");
    let signed = ci.role("mno-b").signer().sign(&p).unwrap();
    let w = World { anchors: ci.anchors(), signed, ear_hash: ear_hash(EAR) };
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let dev = device(1);
    assert!(matches!(
        open_bundle(&bundle, &expectations(&w, &dev), |x, y| key.zgen(x, y)).unwrap_err(),
        BundleError::WrongEar { .. }
    ));
}

#[test]
fn wrong_key_and_zgen_failures() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let other = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    assert_eq!(
        other.decrypt(&bundle, &device(1), &w.ear_hash).unwrap_err(),
        BundleError::DecryptionFailed
    );
    // The TPM refuses ZGen (PCRs changed after attestation: PolicyPCR fails).
    let err = decrypt_bundle(&bundle, &device(1), &w.ear_hash, |_, _| {
        Err::<Zeroizing<Vec<u8>>, _>("TPM_RC_POLICY_FAIL")
    })
    .unwrap_err();
    assert_eq!(err, BundleError::KeyAgreement("TPM_RC_POLICY_FAIL".into()));
}

#[test]
fn invalid_recipient_keys_are_refused() {
    let w = world();
    let e = |x: [u8; 32], y: [u8; 32]| encrypt_bundle(&w.signed, &x, &y, &device(1), &w.ear_hash);
    assert_eq!(e([1; 32], [2; 32]).unwrap_err(), BundleError::InvalidRecipientKey);
    assert_eq!(e([0; 32], [0; 32]).unwrap_err(), BundleError::InvalidRecipientKey);
    assert_eq!(e([0xFF; 32], [0xFF; 32]).unwrap_err(), BundleError::InvalidRecipientKey);
    let key = SoftwareRecipient::generate().unwrap();
    let mut y = *key.y();
    y[31] ^= 1;
    assert_eq!(e(*key.x(), y).unwrap_err(), BundleError::InvalidRecipientKey);
    // Too large a plaintext.
    assert!(matches!(
        encrypt_bundle(&vec![0; 70_000], key.x(), key.y(), &device(1), &w.ear_hash),
        Err(BundleError::TooLarge { .. })
    ));
}

#[test]
fn structural_checks_before_key_agreement() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let never = |_: &[u8; 32], _: &[u8; 32]| -> Result<Zeroizing<Vec<u8>>, BundleError> {
        panic!("zgen must not run")
    };
    let d = |b: &[u8]| decrypt_bundle(b, &device(1), &w.ear_hash, never);

    assert!(matches!(d(&vec![0; MAX_BUNDLE_LEN + 1]), Err(BundleError::TooLarge { .. })));
    assert!(matches!(d(&bundle[2..]), Err(BundleError::MalformedEncrypt(_))), "untagged");
    assert!(matches!(d(&w.signed), Err(BundleError::MalformedEncrypt(_))), "a COSE_Sign1");
    assert!(matches!(d(&bundle[..bundle.len() - 1]), Err(BundleError::MalformedEncrypt(_))));

    let no_device = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.rest.retain(|(l, _)| *l != coset::Label::Int(HEADER_DEVICE_ID));
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert!(matches!(d(&no_device), Err(BundleError::MissingHeader(_))));
    let no_ear = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.rest.retain(|(l, _)| *l != coset::Label::Int(HEADER_EAR_HASH));
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert!(matches!(d(&no_ear), Err(BundleError::MissingHeader(_))));
    let junk_device = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.rest[0].1 = Value::Bytes(vec![1, 2, 3]);
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert!(matches!(d(&junk_device), Err(BundleError::MalformedEncrypt(_))));
    let a128 = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.alg = Some(coset::Algorithm::Assigned(coset::iana::Algorithm::A128GCM));
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(d(&a128), Err(BundleError::ContentAlgorithm { found: "1".into() }));
    let crit = edit(&bundle, |m| {
        let mut h = m.protected.header.clone();
        h.crit = vec![coset::RegisteredLabelWithPrivate::PrivateUse(HEADER_DEVICE_ID)];
        m.protected = ProtectedHeader { original_data: None, header: h };
    });
    assert_eq!(d(&crit), Err(BundleError::UnsupportedCriticalHeader));
    let no_iv = edit(&bundle, |m| m.unprotected.iv.clear());
    assert!(matches!(d(&no_iv), Err(BundleError::BadIv(_))));
    let two = edit(&bundle, |m| m.recipients.push(m.recipients[0].clone()));
    assert_eq!(d(&two), Err(BundleError::RecipientCount { count: 2 }));
    let none = edit(&bundle, |m| m.recipients.clear());
    assert_eq!(d(&none), Err(BundleError::RecipientCount { count: 0 }));
    let ss = edit(&bundle, |m| {
        m.recipients[0].protected = ProtectedHeader {
            original_data: None,
            header: coset::HeaderBuilder::new()
                .algorithm(coset::iana::Algorithm::ECDH_ES_A256KW)
                .build(),
        };
    });
    assert_eq!(d(&ss), Err(BundleError::KeyAgreementAlgorithm { found: "-31".into() }));
    let wrapped = edit(&bundle, |m| m.recipients[0].ciphertext = Some(vec![0; 40]));
    assert!(matches!(d(&wrapped), Err(BundleError::RecipientStructure(_))));
    let no_eph = edit(&bundle, |m| m.recipients[0].unprotected.rest.clear());
    assert_eq!(d(&no_eph), Err(BundleError::MissingEphemeralKey));
    let bad_eph = edit(&bundle, |m| m.recipients[0].unprotected.rest[0].1 = Value::from(1));
    assert!(matches!(d(&bad_eph), Err(BundleError::MalformedEphemeralKey(_))));
    let off_curve = edit(&bundle, |m| {
        let Value::Map(entries) = &mut m.recipients[0].unprotected.rest[0].1 else { panic!() };
        for (k, v) in entries.iter_mut() {
            if *k == Value::from(-3) {
                let Value::Bytes(y) = v else { panic!() };
                y[0] ^= 1;
            }
        }
    });
    assert_eq!(d(&off_curve), Err(BundleError::EphemeralKeyNotOnCurve));
}

#[test]
fn the_unprotected_headers_name_no_algorithm_and_nothing_is_critical() {
    // Issue 12: neither the COSE_Encrypt's nor its recipient's unprotected header may name
    // an algorithm, and neither may hold crit, whatever the protected headers say.
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let never = |_: &[u8; 32], _: &[u8; 32]| -> Result<Zeroizing<Vec<u8>>, BundleError> {
        panic!("zgen must not run")
    };
    let d = |b: &[u8]| decrypt_bundle(b, &device(1), &w.ear_hash, never);
    let a256 = || Some(coset::Algorithm::Assigned(coset::iana::Algorithm::A256GCM));
    let content = edit(&bundle, |m| m.unprotected.alg = a256());
    assert_eq!(d(&content), Err(BundleError::UnprotectedAlgorithm { structure: "COSE_Encrypt" }));
    let recipient = edit(&bundle, |m| {
        m.recipients[0].unprotected.alg =
            Some(coset::Algorithm::Assigned(coset::iana::Algorithm::ECDH_ES_HKDF_256));
    });
    assert_eq!(
        d(&recipient),
        Err(BundleError::UnprotectedAlgorithm { structure: "COSE_recipient" })
    );
    let label = || vec![coset::RegisteredLabelWithPrivate::PrivateUse(HEADER_DEVICE_ID)];
    let crit = edit(&bundle, |m| m.unprotected.crit = label());
    assert_eq!(d(&crit), Err(BundleError::UnsupportedCriticalHeader));
    let crit = edit(&bundle, |m| m.recipients[0].unprotected.crit = label());
    assert_eq!(d(&crit), Err(BundleError::UnsupportedCriticalHeader));
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let w = world();
    let key = SoftwareRecipient::generate().unwrap();
    let bundle = encrypt_to(&key, &w.signed, &w.ear_hash);
    let plaintext = key.decrypt(&bundle, &device(1), &w.ear_hash).unwrap();
    assert_eq!(plaintext.as_slice(), w.signed.as_slice());
    assert!(leaks_a_secret(&plaintext), "sanity: the search finds secrets where they are");
    let shown = format!("{:?}", SoftwareRecipient::generate().unwrap());
    assert!(shown.starts_with("SoftwareRecipient("));
    for err in [
        BundleError::DecryptionFailed,
        BundleError::BundleForAnotherDevice { expected: device(1), found: device(2) },
        BundleError::KeyAgreement("x".into()),
    ] {
        assert!(!leaks_a_secret(err.to_string().as_bytes()));
    }
}
