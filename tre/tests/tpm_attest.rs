//! AK, credential activation, quote, certify and the PCR-bound bundle key on real swtpm,
//! each result checked with tresor's own software side (`protocol::tpm`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use protocol::tpm::{
    Attest, HashAlg, Name, PcrSelection, PcrValues, Public, Signature, Unmarshal, make_credential,
    policy_pcr,
};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};

fn lab() -> (Swtpm, Tpm) {
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    (swtpm, tpm)
}

fn public(key: &tre::tpm::Key) -> Public {
    Public::from_bytes(&key.public_bytes().unwrap()).unwrap()
}

#[test]
fn ak_name_matches_the_software_name() {
    for alg in [KeyAlg::Ecc, KeyAlg::Rsa] {
        let (_swtpm, mut tpm) = lab();
        let ak = tpm.ak(alg).unwrap();
        assert_eq!(public(&ak).name().as_ref(), ak.name.as_slice(), "{alg}");
        // persistent: asking again yields the same key
        let again = tpm.ak(alg).unwrap();
        assert_eq!(again.name, ak.name);
    }
}

#[test]
fn credential_activation_round_trip_for_ecc_and_rsa_eks() {
    for alg in [KeyAlg::Ecc, KeyAlg::Rsa] {
        let (_swtpm, mut tpm) = lab();
        let ek = tpm.ek(alg).unwrap();
        let ak = tpm.ak(KeyAlg::Ecc).unwrap();
        let secret = [0x5Au8; 32];
        let name = Name::try_from(ak.name.clone()).unwrap();
        let made = make_credential(&public(&ek), &name, &secret).unwrap();
        let got = tpm
            .activate_credential(&ak, &ek, made.id_object.as_ref(), made.encrypted_secret.as_ref())
            .unwrap();
        assert_eq!(got.as_slice(), &secret, "{alg}");
        tpm.release(ek).unwrap();
    }
}

#[test]
fn a_credential_for_another_tpm_does_not_activate() {
    let (_a, mut tpm_a) = lab();
    let (_b, mut tpm_b) = lab();
    let ek_b = tpm_b.ek(KeyAlg::Ecc).unwrap();
    let ek_a = tpm_a.ek(KeyAlg::Ecc).unwrap();
    let ak_a = tpm_a.ak(KeyAlg::Ecc).unwrap();
    let name = Name::try_from(ak_a.name.clone()).unwrap();
    let made = make_credential(&public(&ek_b), &name, &[1u8; 32]).unwrap();
    let err = tpm_a
        .activate_credential(&ak_a, &ek_a, made.id_object.as_ref(), made.encrypted_secret.as_ref())
        .unwrap_err();
    assert!(err.to_string().contains("TPM2_ActivateCredential"), "{err}");
}

#[test]
fn quote_verifies_and_carries_the_nonce_and_pcr_digest() {
    let (_swtpm, mut tpm) = lab();
    tpm.pcr_extend(4, &[(HashAlg::Sha256, vec![7; 32]), (HashAlg::Sha1, vec![7; 20])]).unwrap();
    let ak = tpm.ak(KeyAlg::Ecc).unwrap();
    let selection: PcrSelection = "sha256:0,4,7".parse().unwrap();
    let nonce = [0xC3u8; 32];
    let quote = tpm.quote(&ak, &nonce, &selection).unwrap();
    let attest = Attest::from_bytes(&quote.attest).unwrap();
    assert!(attest.is_tpm_generated());
    assert_eq!(attest.extra_data.as_ref(), &nonce);
    let signature = Signature::from_bytes(&quote.signature).unwrap();
    signature.verify(&public(&ak), &quote.attest).unwrap();
    let info = attest.quote().expect("a quote");
    let mut values = PcrValues::new();
    for (pcr, value) in tpm.pcr_read(HashAlg::Sha256, &[0, 4, 7]).unwrap() {
        values.insert(HashAlg::Sha256, pcr, value).unwrap();
    }
    let digest = selection.pcr_digest(HashAlg::Sha256, &values).unwrap();
    assert_eq!(info.pcr_digest.as_ref(), digest.as_ref());
}

#[test]
fn bundle_key_works_in_the_measured_state_only() {
    let (_swtpm, mut tpm) = lab();
    tpm.pcr_extend(8, &[(HashAlg::Sha256, vec![9; 32]), (HashAlg::Sha1, vec![9; 20])]).unwrap();
    let selection: PcrSelection = "sha256:0,8".parse().unwrap();
    let mut values = PcrValues::new();
    for (pcr, value) in tpm.pcr_read(HashAlg::Sha256, &[0, 8]).unwrap() {
        values.insert(HashAlg::Sha256, pcr, value).unwrap();
    }
    let policy = policy_pcr(HashAlg::Sha256, &selection, &values).unwrap();
    let key = tpm.create_bundle_key(policy.as_ref(), &[0x11; 32]).unwrap();
    let key = tpm.persist_bundle_key(key).unwrap();
    let bundle_public = public(&key);
    assert_eq!(bundle_public.auth_policy.as_ref(), policy.as_ref());

    // certified by the AK
    let ak = tpm.ak(KeyAlg::Ecc).unwrap();
    let certified = tpm.certify(&key, &ak, b"certify-nonce").unwrap();
    let attest = Attest::from_bytes(&certified.attest).unwrap();
    assert_eq!(attest.certify().expect("certify").name.as_ref(), key.name.as_slice());
    Signature::from_bytes(&certified.signature)
        .unwrap()
        .verify(&public(&ak), &certified.attest)
        .unwrap();

    // ECDH in software against the TPM's ZGen
    let rng = ring::rand::SystemRandom::new();
    let eph =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    let eph_pub = eph.compute_public_key().unwrap();
    let (x, y) = eph_pub.as_ref()[1..].split_at(32);
    let z_tpm = tpm.ecdh_z_gen(&key, &selection, x, y).unwrap();
    let tpm_point = bundle_public.to_spki_der().unwrap();
    let spki = protocol::tpm::Spki::from_der(&tpm_point).unwrap();
    let peer = ring::agreement::UnparsedPublicKey::new(
        &ring::agreement::ECDH_P256,
        spki.sec1_point().unwrap(),
    );
    let z_sw = ring::agreement::agree_ephemeral(eph, &peer, |z| z.to_vec()).unwrap();
    assert_eq!(z_tpm.as_slice(), z_sw.as_slice());

    // after a PCR moves, the TPM refuses
    tpm.pcr_extend(8, &[(HashAlg::Sha256, vec![1; 32]), (HashAlg::Sha1, vec![1; 20])]).unwrap();
    let err = tpm.ecdh_z_gen(&key, &selection, x, y).unwrap_err();
    assert!(err.to_string().contains("ECDH_ZGen"), "{err}");
    // and no session leaked: ZGen of another key still has a session slot
    for _ in 0..5 {
        assert!(tpm.ecdh_z_gen(&key, &selection, x, y).is_err());
    }
}

#[test]
fn anti_rollback_counter_only_grows() {
    let (_swtpm, mut tpm) = lab();
    let first = tpm.define_rollback_counter().unwrap();
    assert_eq!(tpm.rollback_counter().unwrap(), first);
    assert_eq!(tpm.increment_rollback_counter().unwrap(), first + 1);
    assert_eq!(tpm.increment_rollback_counter().unwrap(), first + 2);
}

#[test]
fn ak_signs_external_data_with_a_hash_ticket() {
    let (_swtpm, mut tpm) = lab();
    let ak = tpm.ak(KeyAlg::Ecc).unwrap();
    let data = b"\xa4receipt";
    let signature = tpm.sign(&ak, data).unwrap();
    Signature::from_bytes(&signature).unwrap().verify(&public(&ak), data).unwrap();
    // data that starts like a TPM attestation cannot be signed: no forged quotes
    let mut forged = vec![0xFF, 0x54, 0x43, 0x47];
    forged.extend([0u8; 60]);
    assert!(tpm.sign(&ak, &forged).is_err());
}
