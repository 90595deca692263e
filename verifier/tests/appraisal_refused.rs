//! Evidence that is not authentic or not fresh is refused with no EAR, each forgery by the
//! check named for it. Every case starts from real evidence of a real swtpm device.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime};

use protocol::Nonce;
use protocol::evidence::{Evidence, SignedAttest};
use protocol::tpm::error::SignatureError;
use protocol::tpm::wire::EccParameter;
use protocol::tpm::{HashAlg, Marshal, Signature};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_bytes::ByteBuf;
use support::Lab;
use tre::tpm::KeyAlg;
use verifier::error::Attestation;
use verifier::store::Store;
use verifier::{AppraisalError, Error, Pva};

fn refused(pva: &Pva, evidence: &Evidence) -> AppraisalError {
    match pva.appraise_evidence(evidence, SystemTime::now()) {
        Err(Error::Appraisal(e)) => {
            assert!(e.is_refusal(), "{e:?} should be a refusal");
            e
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(a) => panic!("accepted: {:?} {:?}", a.status(), a.failures),
    }
}

fn signed(attest: Vec<u8>, signature: Vec<u8>) -> SignedAttest {
    SignedAttest { attest: ByteBuf::from(attest), signature: ByteBuf::from(signature) }
}

#[test]
fn replayed_expired_unknown_and_foreign_nonces_are_refused() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut a = lab.device();
    let mut b = lab.device();
    a.enrol(&pva);
    b.enrol(&pva);

    // replay of evidence whose nonce was used
    let evidence = a.evidence(&pva);
    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
    assert_eq!(refused(&pva, &evidence), AppraisalError::NonceReused);

    // an expired nonce (the default lifetime is 60 s)
    let evidence = a.evidence(&pva);
    let later = SystemTime::now() + Duration::from_secs(61);
    assert!(matches!(
        pva.appraise_evidence(&evidence, later),
        Err(Error::Appraisal(AppraisalError::NonceExpired))
    ));

    // a nonce issued for another device
    let nonce_b = b.challenge(&pva);
    let evidence = a.attester().evidence(&nonce_b).unwrap();
    assert_eq!(refused(&pva, &evidence), AppraisalError::NonceForAnotherDevice);

    // a nonce never issued
    let evidence = a.attester().evidence(&Nonce::random().unwrap()).unwrap();
    assert_eq!(refused(&pva, &evidence), AppraisalError::NonceUnknown);
}

#[test]
fn a_quote_qualified_with_something_else_than_a_nonce_is_refused() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let mut evidence = device.evidence(&pva);
    let selection = device.attester().selection().clone();
    let tpm = device.attester().tpm();
    let ak = tpm.ak(KeyAlg::Ecc).unwrap();
    let short = tpm.quote(&ak, &[7u8; 16], &selection).unwrap();
    evidence.quote = signed(short.attest, short.signature);
    assert_eq!(refused(&pva, &evidence), AppraisalError::NonceMalformed { len: 16 });
}

#[test]
fn quotes_not_signed_by_the_enrolled_ak_are_refused() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut a = lab.device();
    let mut b = lab.device();
    a.enrol(&pva);
    b.enrol(&pva);
    let genuine = a.evidence(&pva);

    // The evidence names another AK (a real one, of device B): not the enrolled AK.
    let mut other_ak = genuine.clone();
    other_ak.ak_public =
        b.attester().enrolment_request().map(|r| ByteBuf::from(r.ak_public)).unwrap();
    assert_eq!(refused(&pva, &other_ak), AppraisalError::AkNotEnrolled(a.id.clone()));

    // A software key posing as the AK: the evidence keeps the enrolled AK's public area
    // but the quote is signed in software.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let sig = key.sign(&rng, &genuine.quote.attest).unwrap();
    let (r, s) = sig.as_ref().split_at(32);
    let software = Signature::Ecdsa {
        hash: HashAlg::Sha256,
        r: EccParameter::new(r.to_vec()).unwrap(),
        s: EccParameter::new(s.to_vec()).unwrap(),
    };
    let mut forged = genuine.clone();
    forged.quote.signature = ByteBuf::from(software.to_bytes());
    assert_eq!(
        refused(&pva, &forged),
        AppraisalError::QuoteSignatureInvalid(SignatureError::BadSignature)
    );

    // A genuine quote of another TPM over this device's nonce.
    let nonce = a.challenge(&pva);
    let evidence_a = a.attester().evidence(&nonce).unwrap();
    let selection = b.attester().selection().clone();
    let tpm_b = b.attester().tpm();
    let ak_b = tpm_b.ak(KeyAlg::Ecc).unwrap();
    let quote_b = tpm_b.quote(&ak_b, nonce.as_bytes(), &selection).unwrap();
    let mut mixed = evidence_a.clone();
    mixed.quote = signed(quote_b.attest, quote_b.signature);
    assert_eq!(
        refused(&pva, &mixed),
        AppraisalError::QuoteSignatureInvalid(SignatureError::BadSignature)
    );
    // None of the forgeries used up the nonce: the genuine evidence still appraises.
    pva.appraise_evidence(&evidence_a, SystemTime::now()).unwrap();
}

#[test]
fn structures_the_tpm_did_not_generate_or_of_the_wrong_type_are_refused() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let evidence = device.evidence(&pva);
    let tpm = device.attester().tpm();
    let ak = tpm.ak(KeyAlg::Ecc).unwrap();

    // The restricted AK refuses TPM2_Sign over anything that starts with TPM_GENERATED_VALUE.
    assert!(tpm.sign(&ak, &evidence.quote.attest).is_err());

    // A "quote" made with TPM2_Sign over a forged TPMS_ATTEST: the signature is the AK's,
    // but the magic cannot be TPM_GENERATED_VALUE.
    let mut forged = evidence.quote.attest.to_vec();
    forged[..4].copy_from_slice(&[0, 0, 0, 0]);
    let sig = tpm.sign(&ak, &forged).unwrap();
    let mut e = evidence.clone();
    e.quote = signed(forged, sig);
    assert_eq!(refused(&pva, &e), AppraisalError::NotTpmGenerated(Attestation::Quote));

    // The same for the certification of the bundle key.
    let mut forged = evidence.bundle_key.as_ref().unwrap().certify.attest.to_vec();
    forged[..4].copy_from_slice(&[0, 0, 0, 0]);
    let sig = tpm.sign(&ak, &forged).unwrap();
    let mut e = evidence.clone();
    e.bundle_key.as_mut().unwrap().certify = signed(forged, sig);
    assert_eq!(refused(&pva, &e), AppraisalError::NotTpmGenerated(Attestation::Certify));

    // A certification passed as the quote, and the quote passed as the certification.
    let mut e = evidence.clone();
    e.quote = evidence.bundle_key.as_ref().unwrap().certify.clone();
    assert_eq!(refused(&pva, &e), AppraisalError::NotAQuote { tag: 0x8017 });
    let mut e = evidence.clone();
    e.bundle_key.as_mut().unwrap().certify = evidence.quote.clone();
    assert_eq!(refused(&pva, &e), AppraisalError::NotACertify { tag: 0x8018 });

    // The genuine evidence was never consumed by the refusals.
    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
}

#[test]
fn bundle_keys_not_certified_for_this_appraisal_are_refused() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut a = lab.device();
    let mut b = lab.device();
    a.enrol(&pva);
    b.enrol(&pva);
    let nonce = a.challenge(&pva);
    let evidence = a.attester().evidence(&nonce).unwrap();

    // A key certified by another device's AK, with this device's nonce.
    let evidence_b = b.attester().evidence(&nonce).unwrap();
    let mut e = evidence.clone();
    e.bundle_key = evidence_b.bundle_key.clone();
    assert_eq!(
        refused(&pva, &e),
        AppraisalError::CertifySignatureInvalid(SignatureError::BadSignature)
    );

    // This device's key certified for another nonce.
    let other_nonce = a.challenge(&pva);
    let later = a.attester().evidence(&other_nonce).unwrap();
    let mut e = evidence.clone();
    e.bundle_key = later.bundle_key.clone();
    assert_eq!(refused(&pva, &e), AppraisalError::CertifyNonceMismatch);

    // A real certification presented with another public area (the AK's).
    let mut e = evidence.clone();
    e.bundle_key.as_mut().unwrap().public = evidence.ak_public.clone();
    assert_eq!(refused(&pva, &e), AppraisalError::BundleKeyNotCertified);

    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
}

#[test]
fn unknown_devices_and_foreign_ek_certificates_are_refused() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut a = lab.device();
    let mut stranger = lab.device();
    a.enrol(&pva);
    let evidence = stranger.attester().evidence(&Nonce::random().unwrap()).unwrap();
    assert_eq!(refused(&pva, &evidence), AppraisalError::UnknownDevice(stranger.id.clone()));
    let mut e = a.evidence(&pva);
    e.ek_certificate = evidence.ek_certificate.clone();
    assert_eq!(refused(&pva, &e), AppraisalError::EkCertificateNotEnrolled(a.id.clone()));
}

#[test]
fn malformed_evidence_is_refused_without_panic() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let evidence = device.evidence(&pva);
    let bytes = evidence.to_cbor().unwrap();

    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(
            pva.appraise(&bytes[..cut], SystemTime::now()),
            Err(Error::Appraisal(AppraisalError::EvidenceMalformed(_)))
        ));
    }
    let mut e = evidence.clone();
    e.quote.attest = ByteBuf::from(evidence.quote.attest[..20].to_vec());
    assert!(matches!(
        refused(&pva, &e),
        AppraisalError::AttestationMalformed { what: Attestation::Quote, .. }
    ));
    let mut e = evidence.clone();
    e.bundle_key.as_mut().unwrap().certify.signature = ByteBuf::from(vec![0x00, 0x18]);
    assert!(matches!(
        refused(&pva, &e),
        AppraisalError::AttestationMalformed { what: Attestation::Certify, .. }
    ));
    let mut e = evidence.clone();
    e.bundle_key.as_mut().unwrap().public =
        ByteBuf::from(evidence.bundle_key.as_ref().unwrap().public[..30].to_vec());
    assert!(matches!(refused(&pva, &e), AppraisalError::BundleKeyMalformed(_)));
    let mut e = evidence.clone();
    e.event_log = ByteBuf::from(evidence.event_log[..evidence.event_log.len() - 3].to_vec());
    assert!(matches!(refused(&pva, &e), AppraisalError::EventLogMalformed(_)));

    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
}

#[test]
fn a_restart_refuses_every_nonce_issued_before_it() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pva.sqlite");
    let mut device = lab.device();

    let pva = lab.pva_with(&lab.refvalues, Store::open(&db).unwrap());
    device.enrol(&pva);
    let used = device.evidence(&pva);
    pva.appraise_evidence(&used, SystemTime::now()).unwrap();
    assert_eq!(refused(&pva, &used), AppraisalError::NonceReused);
    let pending = device.challenge(&pva);
    let answered_late = device.attester().evidence(&pending).unwrap();
    drop(pva);

    // A new PVA on the same store: the enrolment is there, no nonce of the old one is.
    let pva = lab.pva_with(&lab.refvalues, Store::open(&db).unwrap());
    assert_eq!(refused(&pva, &used), AppraisalError::NonceUnknown);
    assert_eq!(refused(&pva, &answered_late), AppraisalError::NonceUnknown);
    // Not even the benchmark's back door takes them.
    assert!(matches!(
        pva.reissue_nonce_for_benchmark(&device.id, pending),
        Err(Error::Appraisal(AppraisalError::NonceUnknown))
    ));
    // A fresh challenge works, once.
    let evidence = device.evidence(&pva);
    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
    assert_eq!(refused(&pva, &evidence), AppraisalError::NonceReused);
    drop(pva);
    let pva = lab.pva_with(&lab.refvalues, Store::open(&db).unwrap());
    assert_eq!(refused(&pva, &evidence), AppraisalError::NonceUnknown);
}

#[test]
fn concurrent_appraisals_of_one_evidence_accept_it_once() {
    let lab = Lab::new();
    let pva = std::sync::Arc::new(lab.pva());
    let mut device = lab.device();
    device.enrol(&pva);
    let evidence = device.evidence(&pva);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (pva, evidence) = (pva.clone(), evidence.clone());
            std::thread::spawn(move || pva.appraise_evidence(&evidence, SystemTime::now()))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(matches!(r, Err(Error::Appraisal(AppraisalError::NonceReused))));
    }
}

#[test]
fn byte_changes_of_real_evidence_never_panic_and_are_never_affirming_where_signed() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let nonce = device.challenge(&pva);
    let evidence = device.attester().evidence(&nonce).unwrap();
    let bytes = evidence.to_cbor().unwrap();
    // Bytes nothing vouches for, by design: the event log's unmeasured parts (the Spec ID
    // header, digests of banks the quote does not cover) and the rollback counter, which
    // the TRE enforces itself (the last field).
    let log_at = bytes
        .windows(evidence.event_log.len())
        .position(|w| w == evidence.event_log.as_slice())
        .unwrap();
    let unvouched = |at: usize| {
        (log_at..log_at + evidence.event_log.len()).contains(&at) || at + 9 >= bytes.len()
    };
    let mut refused = 0;
    // Every 3rd byte, each flipped in one bit: never a panic; an affirming EAR only where
    // nothing vouches for the byte.
    for at in (0..bytes.len()).step_by(3) {
        let mut changed = bytes.clone();
        changed[at] ^= 0x04;
        pva.reissue_nonce_for_benchmark(&device.id, nonce).unwrap();
        match pva.appraise(&changed, SystemTime::now()) {
            Err(Error::Appraisal(e)) => {
                assert!(e.is_refusal());
                refused += 1;
            }
            Err(other) => panic!("byte {at}: {other}"),
            Ok(a) => assert!(
                a.status() != protocol::ear::TrustTier::Affirming || unvouched(at),
                "byte {at} changed and still affirming"
            ),
        }
    }
    assert!(refused > bytes.len() / 10);
}
