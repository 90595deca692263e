//! The attester on real swtpm: measured boot of the example image, enrolment, evidence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use protocol::Nonce;
use protocol::evidence::Evidence;
use protocol::image;
use protocol::tpm::{Attest, HashAlg, Name, Public, Signature, Unmarshal, make_credential};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tre::attester::{Attester, AttesterOptions};
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::Tpm;

fn image_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

fn manufactured() -> (Swtpm, Tpm) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "test manufacturer");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap();
    let ca = ManufacturerCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();
    (swtpm, tpm)
}

#[test]
fn measured_boot_matches_the_software_prediction() {
    let (_swtpm, tpm) = manufactured();
    let mut attester = Attester::boot(tpm, &image_dir(), AttesterOptions::default()).unwrap();
    let banks = attester.tpm().active_banks().unwrap();
    let measurements = image::measure(&image_dir(), &banks).unwrap();
    let expected = image::expected_pcrs(&banks, &measurements).unwrap();
    let mut compared = 0;
    for bank in expected.iter() {
        for (pcr, value) in bank.measured() {
            let read = attester.tpm().pcr_read(bank.alg(), &[pcr as u8]).unwrap();
            assert_eq!(read[0].1, value, "{} PCR {pcr}", bank.alg());
            compared += 1;
        }
    }
    assert_eq!(compared, 5 * banks.len());
    // the log replays to the same values
    let replayed =
        protocol::eventlog::EventLog::parse(attester.event_log()).unwrap().replay().unwrap();
    assert_eq!(replayed.value(HashAlg::Sha256, 0), expected.value(HashAlg::Sha256, 0));
}

#[test]
fn enrolment_and_evidence() {
    let (_swtpm, tpm) = manufactured();
    let mut attester = Attester::boot(tpm, &image_dir(), AttesterOptions::default()).unwrap();
    let request = attester.enrolment_request().unwrap();
    let ek = Public::from_bytes(&request.ek_public).unwrap();
    assert_eq!(ek.name().as_ref(), request.device_id.as_bytes());
    let ak = Public::from_bytes(&request.ak_public).unwrap();
    let made =
        make_credential(&ek, &Name::try_from(ak.name().as_ref().to_vec()).unwrap(), &[7; 32])
            .unwrap();
    let secret = attester
        .activate_credential(made.id_object.as_ref(), made.encrypted_secret.as_ref())
        .unwrap();
    assert_eq!(secret.as_slice(), &[7; 32]);

    let nonce = Nonce::random().unwrap();
    let evidence = attester.evidence(&nonce).unwrap();
    let bytes = evidence.to_cbor().unwrap();
    let decoded = Evidence::from_cbor(&bytes).unwrap();
    assert_eq!(decoded, evidence);
    assert_eq!(decoded.device_id, request.device_id);

    let quote = Attest::from_bytes(&evidence.quote.attest).unwrap();
    assert_eq!(quote.extra_data.as_ref(), nonce.as_bytes());
    Signature::from_bytes(&evidence.quote.signature)
        .unwrap()
        .verify(&ak, &evidence.quote.attest)
        .unwrap();
    let certify =
        Attest::from_bytes(&evidence.bundle_key.as_ref().unwrap().certify.attest).unwrap();
    let key = Public::from_bytes(&evidence.bundle_key.as_ref().unwrap().public).unwrap();
    assert_eq!(certify.certify().unwrap().name.as_ref(), key.name().as_ref());
    assert!(bytes.len() < 8 * 1024, "evidence is {} bytes", bytes.len());
    eprintln!(
        "evidence size: {} bytes (event log {} bytes)",
        bytes.len(),
        evidence.event_log.len()
    );

    // a second attestation replaces the bundle key
    let again = attester.evidence(&Nonce::random().unwrap()).unwrap();
    assert_ne!(again.bundle_key.unwrap().public, evidence.bundle_key.as_ref().unwrap().public);
}
