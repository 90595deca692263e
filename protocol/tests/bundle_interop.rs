//! Interop of tresor's COSE (bundles and attestation results) with an independent
//! implementation, pycose (`tests/interop/cose_interop.py`): tresor's COSE_Sign1 profiles
//! and EARs verify in pycose and pycose's verify in tresor; tresor's COSE_Encrypt (ECDH-ES + HKDF-256, A256GCM, external AAD)
//! decrypts in pycose and pycose's decrypts in tresor.
//!
//! Needs a Python 3 with pycose and cbor2 < 6 (`pip install pycose 'cbor2<6'`; pycose 1.1.0
//! cannot read what cbor2 6 decodes): `$TRESOR_COSE_PYTHON` if set, else `python3`.
//! Without it the tests say so on stderr and pass, unless `TRESOR_REQUIRE_INTEROP=1`, which
//! turns a missing pycose into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use bundle_support::*;
use protocol::bundle::{
    SoftwareRecipient, decrypt_bundle, ear_hash, encrypt_bundle, external_aad, verify_profile,
};
use serde_json::{Value, json};

fn python() -> String {
    std::env::var("TRESOR_COSE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/cose_interop.py")
}

/// Runs one request; `None` when the request failed (stderr is printed).
fn call(request: &Value) -> Option<Value> {
    let mut child = Command::new(python())
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(request.to_string().as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        eprintln!("pycose: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Whether pycose is there; a missing pycose fails only under TRESOR_REQUIRE_INTEROP=1.
fn pycose_available() -> bool {
    match call(&json!({"op": "probe"})) {
        Some(v) => {
            eprintln!("interop with {v}");
            true
        }
        None => {
            let required = std::env::var("TRESOR_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "pycose is required (TRESOR_REQUIRE_INTEROP=1) but {} cannot import it",
                python()
            );
            eprintln!(
                "SKIPPED: {} has no pycose (pip install pycose 'cbor2<6', or set TRESOR_COSE_PYTHON)",
                python()
            );
            false
        }
    }
}

fn field(v: &Value, name: &str) -> Vec<u8> {
    hex::decode(v[name].as_str().unwrap()).unwrap()
}

#[test]
fn tresor_signed_profiles_verify_in_pycose() {
    if !pycose_available() {
        return;
    }
    let ci = Ci::new("tresor CI");
    let p = payload(&device(1), "mno-b");
    let signed = ci.role("mno-b").signer().sign(&p).unwrap();
    let answer = call(&json!({"op": "verify_sign1", "cose": hex::encode(&signed)}))
        .expect("pycose verifies");
    assert_eq!(field(&answer, "payload"), cbor(&p));
}

#[test]
fn pycose_signed_profiles_verify_in_tresor() {
    if !pycose_available() {
        return;
    }
    let ci = Ci::new("tresor CI");
    let mno_b = ci.role("mno-b");
    let p = payload(&device(1), "mno-b");
    let answer = call(&json!({
        "op": "sign1",
        "payload": hex::encode(cbor(&p)),
        "key_pem": mno_b.key_pem,
        "x5chain": [hex::encode(&mno_b.der)],
    }))
    .expect("pycose signs");
    let signed = field(&answer, "cose");
    let v = verify_profile(&signed, &ci.anchors(), SystemTime::now(), "mno-b", &device(1)).unwrap();
    assert_eq!(v.payload, p);
}

#[test]
fn tresor_bundles_decrypt_in_pycose() {
    if !pycose_available() {
        return;
    }
    // A static P-256 recipient key pycose can load (PKCS#8 PEM).
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw();
    let (x, y): ([u8; 32], [u8; 32]) =
        (raw[1..33].try_into().unwrap(), raw[33..].try_into().unwrap());
    let ear = ear_hash(EAR);
    let plaintext = b"the signed profile stands here".to_vec();
    let bundle = encrypt_bundle(&plaintext, &x, &y, &device(1), &ear).unwrap();
    let answer = call(&json!({
        "op": "decrypt",
        "cose": hex::encode(&bundle),
        "key_pem": key.serialize_pem(),
        "external_aad": hex::encode(external_aad(&device(1), &ear)),
    }))
    .expect("pycose decrypts");
    assert_eq!(field(&answer, "plaintext"), plaintext);
    assert_eq!(field(&answer, "device_id"), device(1).as_bytes());
    assert_eq!(field(&answer, "ear_hash"), ear);
    // With another external AAD pycose refuses it as well.
    let other = external_aad(&device(2), &ear);
    assert!(
        call(&json!({
            "op": "decrypt",
            "cose": hex::encode(&bundle),
            "key_pem": key.serialize_pem(),
            "external_aad": hex::encode(other),
        }))
        .is_none()
    );
}

#[test]
fn pycose_bundles_decrypt_in_tresor() {
    if !pycose_available() {
        return;
    }
    let ci = Ci::new("tresor CI");
    let signed = ci.role("mno-b").signer().sign(&payload(&device(1), "mno-b")).unwrap();
    let key = SoftwareRecipient::generate().unwrap();
    let ear = ear_hash(EAR);
    let answer = call(&json!({
        "op": "encrypt",
        "plaintext": hex::encode(&signed),
        "x": hex::encode(key.x()),
        "y": hex::encode(key.y()),
        "device_id": hex::encode(device(1).as_bytes()),
        "ear_hash": hex::encode(ear),
        "external_aad": hex::encode(external_aad(&device(1), &ear)),
    }))
    .expect("pycose encrypts");
    let bundle = field(&answer, "cose");
    let plain = decrypt_bundle(&bundle, &device(1), &ear, |x, y| key.zgen(x, y)).unwrap();
    assert_eq!(plain.as_slice(), signed.as_slice());
    verify_profile(&plain, &ci.anchors(), SystemTime::now(), "mno-b", &device(1)).unwrap();
}

/// An EAR as the PVA signs it, for the attestation-result interop.
fn ear_claims() -> protocol::ear::EarClaims {
    use protocol::ear::{Appraisal, Claim, EarClaims, TrustVector, VerifierId};
    let mut vector = TrustVector::new();
    vector.set(Claim::InstanceIdentity, 2).set(Claim::Executables, 2).set(Claim::Configuration, 2);
    let now = now_secs();
    EarClaims {
        issued_at: now,
        expires_at: now + 300,
        nonce: Some(protocol::Nonce::from_bytes(&[0x4E; 32]).unwrap()),
        verifier_id: VerifierId { developer: "tresor".into(), build: "interop".into() },
        appraisal: Appraisal::new(vector, "policy".into(), device(1)),
    }
}

#[test]
fn tresor_ears_verify_in_pycose() {
    use protocol::ear::EarProfile;
    if !pycose_available() {
        return;
    }
    let ci = Ci::new("tresor CI");
    let pva = ci.role("pva");
    let claims = ear_claims();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pem::parse(&pva.key_pem).unwrap().into_contents(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    for profile in EarProfile::ALL {
        let ear = claims
            .sign_as(profile, std::slice::from_ref(&pva.der), |tbs| {
                key.sign(&ring::rand::SystemRandom::new(), tbs).map(|s| s.as_ref().to_vec())
            })
            .unwrap();
        let answer = call(&json!({"op": "verify_sign1", "cose": hex::encode(&ear)}))
            .expect("pycose verifies");
        let payload = field(&answer, "payload");
        assert_eq!(payload, claims.to_cbor_as(profile).unwrap());
        // The claims set reads as a CWT with the draft's keys: eat_profile (265), submods (266).
        let value: ciborium::Value = ciborium::from_reader(&payload[..]).unwrap();
        let map = value.as_map().unwrap();
        let uri = map.iter().find(|(k, _)| k.as_integer() == Some(265.into())).unwrap();
        assert_eq!(uri.1.as_text(), Some(profile.uri()));
        assert!(map.iter().any(|(k, _)| k.as_integer() == Some(266.into())));
    }
}

#[test]
fn pycose_signed_ears_verify_in_tresor() {
    use protocol::ear::EarProfile;
    if !pycose_available() {
        return;
    }
    let ci = Ci::new("tresor CI");
    let pva = ci.role("pva");
    let claims = ear_claims();
    for profile in EarProfile::ALL {
        let answer = call(&json!({
            "op": "sign1",
            "payload": hex::encode(claims.to_cbor_as(profile).unwrap()),
            "key_pem": pva.key_pem,
            "x5chain": [hex::encode(&pva.der)],
        }))
        .expect("pycose signs");
        let ear = field(&answer, "cose");
        let verified = protocol::ear::VerifiedEar::verify(
            &ear,
            &ci.anchors(),
            SystemTime::now(),
            &device(1),
            claims.nonce.as_ref(),
        )
        .unwrap();
        assert_eq!(verified.claims(), &claims);
        assert_eq!(verified.profile(), profile);
    }
}
