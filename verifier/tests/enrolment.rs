//! Enrolment on real swtpm devices: the EK certificate must chain to a configured
//! manufacturer root and certify the EK presented, the device id must be the EK's name,
//! the AK must be a restricted signing key of an accepted algorithm, and only the TPM
//! holding both the EK and the AK can recover the credential, once, before it expires.
//! Enrolling a known EK again keeps its history: every enrolment is recorded, and the TPM's
//! clock high-water mark is never lowered, so a TPM state restored from an old copy and
//! enrolled again is still caught.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime};

use protocol::ekcert::EkCertError;
use protocol::pva_api::{ActivateRequest, CredentialSecret, EnrolRequest};
use protocol::tpm::public::EccCurve;
use protocol::tpm::{HashAlg, Marshal, ObjectAttributes, Public, PublicKey, Unmarshal};
use protocol::x509::ChainError;
use rcgen::{CertificateParams, KeyPair};
use serde_bytes::ByteBuf;
use support::{Ca, Lab, Restorable, clock_of, example_image};
use tre::attester::AttesterOptions;
use tre::manufacture::ManufactureOptions;
use verifier::store::Store;
use verifier::{AppraisalError, EnrolmentError, Error, Pva, ReferenceValues, Settings};

fn refused(result: Result<impl std::fmt::Debug, Error>) -> EnrolmentError {
    match result {
        Err(Error::Enrolment(e)) => e,
        other => panic!("expected an enrolment error, got {other:?}"),
    }
}

#[test]
fn the_credential_is_activated_once_by_the_right_tpm_before_it_expires() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    let req = device.enrol_request();
    let now = SystemTime::now();
    let resp = pva.enrol(&req, now).unwrap();
    let id = device.id.clone();
    let activate = |secret: CredentialSecret, at| {
        pva.activate(
            &ActivateRequest { device_id: id.clone(), ak_name: resp.ak_name.clone(), secret },
            at,
        )
    };
    // A guess is refused, and uses up the credential.
    assert_eq!(refused(activate(CredentialSecret::new([0; 32]), now)), EnrolmentError::WrongSecret);
    let secret = device
        .attester()
        .activate_credential(&resp.credential_blob, &resp.encrypted_secret)
        .unwrap();
    let secret = CredentialSecret::from_slice(&secret).unwrap();
    assert_eq!(refused(activate(secret.clone(), now)), EnrolmentError::NoPendingEnrolment);

    // Too late.
    let resp = pva.enrol(&req, now).unwrap();
    let secret = device
        .attester()
        .activate_credential(&resp.credential_blob, &resp.encrypted_secret)
        .unwrap();
    let late = now + Duration::from_secs(301);
    let again = pva.activate(
        &ActivateRequest {
            device_id: device.id.clone(),
            ak_name: resp.ak_name.clone(),
            secret: CredentialSecret::from_slice(&secret).unwrap(),
        },
        late,
    );
    assert_eq!(refused(again), EnrolmentError::CredentialExpired);

    // In time, the right secret: enrolled, and enrolling again (same TPM, same AK) works.
    device.enrol(&pva);
    device.enrol(&pva);
    let evidence = device.evidence(&pva);
    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
}

#[test]
fn an_ak_from_another_tpm_cannot_be_activated() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut victim = lab.device();
    let mut attacker = lab.device();
    // The victim's EK (public information) with the attacker's AK.
    let mut req = victim.enrol_request();
    req.ak_public = attacker.enrol_request().ak_public;
    let resp = pva.enrol(&req, SystemTime::now()).unwrap();
    // Neither TPM can recover the secret: the attacker lacks the EK, the victim the AK.
    assert!(
        attacker
            .attester()
            .activate_credential(&resp.credential_blob, &resp.encrypted_secret)
            .is_err()
    );
    assert!(
        victim
            .attester()
            .activate_credential(&resp.credential_blob, &resp.encrypted_secret)
            .is_err()
    );
    let guess = ActivateRequest {
        device_id: victim.id.clone(),
        ak_name: resp.ak_name.clone(),
        secret: CredentialSecret::new([0x11; 32]),
    };
    assert_eq!(refused(pva.activate(&guess, SystemTime::now())), EnrolmentError::WrongSecret);
    // The attacker's attempt does not stand in the victim's way.
    victim.enrol(&pva);
}

#[test]
fn ek_certificates_that_do_not_vouch_for_this_ek_are_refused() {
    let lab = Lab::new();
    let mut a = lab.device();
    let mut b = lab.device();
    let req_a = a.enrol_request();
    let req_b = b.enrol_request();

    // From a CA the PVA does not trust.
    let stranger = Ca::new("another TPM manufacturer");
    let pva_elsewhere = Pva::new(
        Store::open_in_memory().unwrap(),
        stranger.anchors(),
        vec![ReferenceValues::parse(&lab.refvalues).unwrap()],
        lab.signer(),
        Settings::default(),
    )
    .unwrap();
    assert!(matches!(
        refused(pva_elsewhere.enrol(&req_a, SystemTime::now())),
        EnrolmentError::EkCertificate(EkCertError::Chain(ChainError::UnknownIssuer { .. }))
    ));

    let pva = lab.pva();
    // Self-signed.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let selfsigned = CertificateParams::new(vec![]).unwrap().self_signed(&key).unwrap();
    let mut req = req_a.clone();
    req.ek_certificate = ByteBuf::from(selfsigned.der().to_vec());
    assert!(matches!(
        refused(pva.enrol(&req, SystemTime::now())),
        EnrolmentError::EkCertificate(EkCertError::Chain(_))
    ));

    // Another TPM's certificate (genuine, trusted) for this EK.
    let mut req = req_a.clone();
    req.ek_certificate = req_b.ek_certificate.clone();
    assert_eq!(
        refused(pva.enrol(&req, SystemTime::now())),
        EnrolmentError::EkCertificate(EkCertError::PublicKeyMismatch)
    );

    // Expired.
    let soon = SystemTime::now() + Duration::from_secs(60);
    let make = ManufactureOptions { not_after: Some(soon), ..Default::default() };
    let mut c = lab.device_with(&example_image(), AttesterOptions::default(), make);
    let req = c.enrol_request();
    assert!(matches!(
        refused(pva.enrol(&req, soon + Duration::from_secs(3600))),
        EnrolmentError::EkCertificate(EkCertError::Chain(ChainError::Expired { .. }))
    ));
}

#[test]
fn the_device_id_is_the_ek_name_and_bound_to_one_ek() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pva.sqlite");
    let pva = lab.pva_with(&lab.refvalues, Store::open(&db).unwrap());
    let mut a = lab.device();
    let b = lab.device();
    let req_a = a.enrol_request();

    let mut claimed = req_a.clone();
    claimed.device_id = b.id.clone();
    assert!(matches!(
        refused(pva.enrol(&claimed, SystemTime::now())),
        EnrolmentError::DeviceIdNotEkName { .. }
    ));

    let mut sha1 = req_a.clone();
    let mut ek = Public::from_bytes(&sha1.ek_public).unwrap();
    ek.name_alg = HashAlg::Sha1;
    sha1.ek_public = ByteBuf::from(ek.to_bytes());
    assert_eq!(
        refused(pva.enrol(&sha1, SystemTime::now())),
        EnrolmentError::EkNameAlgorithm(HashAlg::Sha1)
    );

    // Once enrolled, the id stays with its EK: a store that remembers another EK for it
    // (a TPM whose endorsement seed changed, or a tampered record) refuses the enrolment.
    a.enrol(&pva);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE devices SET ek_public = x'00'", []).unwrap();
    assert_eq!(
        refused(pva.enrol(&req_a, SystemTime::now())),
        EnrolmentError::DeviceBoundToAnotherEk(a.id.clone())
    );
}

#[test]
fn aks_must_be_restricted_signing_keys_of_accepted_algorithms() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    let req = device.enrol_request();
    let nonce = protocol::Nonce::random().unwrap();
    let bundle_key = device.attester().evidence(&nonce).unwrap().bundle_key.unwrap().public;

    // A decryption key offered as AK.
    let mut r = req.clone();
    r.ak_public = bundle_key;
    assert_eq!(
        refused(pva.enrol(&r, SystemTime::now())),
        EnrolmentError::AkAttributes {
            missing: ObjectAttributes::RESTRICTED | ObjectAttributes::SIGN_ENCRYPT,
            forbidden: ObjectAttributes::DECRYPT
        }
    );
    // Another curve, and a SHA-1 name.
    let with = |edit: &dyn Fn(&mut Public)| -> EnrolRequest {
        let mut ak = Public::from_bytes(&req.ak_public).unwrap();
        edit(&mut ak);
        EnrolRequest { ak_public: ByteBuf::from(ak.to_bytes()), ..req.clone() }
    };
    let p384 = with(&|ak| {
        if let PublicKey::Ecc { parms, .. } = &mut ak.key {
            parms.curve = EccCurve::NistP384;
        }
    });
    assert_eq!(
        refused(pva.enrol(&p384, SystemTime::now())),
        EnrolmentError::AkAlgorithm("ECC AK not on NIST P-256")
    );
    let sha1 = with(&|ak| ak.name_alg = HashAlg::Sha1);
    assert_eq!(
        refused(pva.enrol(&sha1, SystemTime::now())),
        EnrolmentError::AkAlgorithm("SHA-1 name algorithm")
    );
    // Garbage.
    let mut r = req.clone();
    r.ak_public = ByteBuf::from(vec![0, 1, 2]);
    assert!(matches!(
        refused(pva.enrol(&r, SystemTime::now())),
        EnrolmentError::AkPublicMalformed(_)
    ));
    let mut r = req.clone();
    r.ek_public = ByteBuf::from(vec![0, 1, 2]);
    assert!(matches!(
        refused(pva.enrol(&r, SystemTime::now())),
        EnrolmentError::EkPublicMalformed(_)
    ));
}

#[test]
fn a_state_two_resets_old_enrolled_again_is_still_caught_and_the_history_is_kept() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pva.sqlite");
    let pva = lab.pva_with(&lab.refvalues, Store::open(&db).unwrap());
    let mut tpm = Restorable::new(&lab);
    let id = tpm.device().id.clone();
    tpm.device().enrol(&pva);

    // The attacker copies the state; two TPM Resets later the device attests.
    let copy = tpm.copy_state();
    tpm.reset();
    let last = tpm.device().evidence(&pva);
    assert!(pva.appraise_evidence(&last, SystemTime::now()).unwrap().failures.is_empty());
    let mark = pva.clock_mark(&id).unwrap().unwrap();
    assert_eq!(mark.mark.reset_count, clock_of(&last).reset_count);

    // The copy is put back (its resetCount one below the mark) and enrolled again: the
    // same EK, the same AK (a primary key of the endorsement hierarchy), a valid credential
    // activation. The enrolment succeeds, and changes nothing about the TPM's history.
    tpm.restore(&copy);
    tpm.device().enrol(&pva);
    assert_eq!(pva.clock_mark(&id).unwrap(), Some(mark));
    let restored = tpm.device().evidence(&pva);
    let got = clock_of(&restored).reset_count;
    assert_eq!(got + 1, mark.mark.reset_count);
    let a = pva.appraise_evidence(&restored, SystemTime::now()).unwrap();
    let backwards = AppraisalError::ResetCountWentBackwards { last: mark.mark.reset_count, got };
    assert_eq!(a.failures, std::slice::from_ref(&backwards));

    // Nor does a restart of the PVA: the mark was written behind before it stopped.
    drop(pva);
    let pva = lab.pva_with(&lab.refvalues, Store::open(&db).unwrap());
    assert_eq!(failures(&pva, &mut tpm), std::slice::from_ref(&backwards));
    tpm.device().enrol(&pva);
    assert_eq!(failures(&pva, &mut tpm), [backwards]);

    // Every enrolment is on record, in order, with its AK.
    let history = pva.enrolments(&id).unwrap();
    assert_eq!(history.len(), 3);
    let ak_name = tpm.device().attester().ak_name().unwrap();
    assert!(history.iter().all(|e| e.ak_name == ak_name && e.requested_by.is_none()));
    assert!(history.windows(2).all(|w| w[0].enrolled_at <= w[1].enrolled_at));
}

fn failures(pva: &Pva, tpm: &mut Restorable) -> Vec<AppraisalError> {
    let evidence = tpm.device().evidence(pva);
    pva.appraise_evidence(&evidence, SystemTime::now()).unwrap().failures
}

#[test]
fn an_ek_without_certificate_enrols_only_from_the_allow_list_and_a_bad_certificate_never() {
    let lab = Lab::new();
    let mut device = lab.device();
    let listed = device.enrol_request();
    let without = EnrolRequest { ek_certificate: ByteBuf::new(), ..listed.clone() };
    let now = SystemTime::now();

    // Not listed: no certificate, no enrolment.
    let pva = lab.pva();
    assert!(matches!(refused(pva.enrol(&without, now)), EnrolmentError::EkCertificate(_)));

    // Listed: enrolled without a certificate, and the credential still proves the AK.
    let list = verifier::ek_allow::EkAllowList::parse(&format!("{}\n", device.id)).unwrap();
    let pva = lab.pva().with_ek_allow_list(list.clone());
    let resp = pva.enrol(&without, now).unwrap();
    let secret = device
        .attester()
        .activate_credential(&resp.credential_blob, &resp.encrypted_secret)
        .unwrap();
    pva.activate(
        &ActivateRequest {
            device_id: device.id.clone(),
            ak_name: resp.ak_name.clone(),
            secret: CredentialSecret::from_slice(&secret).unwrap(),
        },
        now,
    )
    .unwrap();

    // Listed, but presenting a certificate that is not a manufacturer's: still verified,
    // still refused.
    let mut garbage = listed.clone();
    garbage.ek_certificate = ByteBuf::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(refused(pva.enrol(&garbage, now)), EnrolmentError::EkCertificate(_)));
    // Another device's EK is not on the list.
    let mut other = lab.device();
    let stranger = EnrolRequest { ek_certificate: ByteBuf::new(), ..other.enrol_request() };
    assert!(matches!(refused(pva.enrol(&stranger, now)), EnrolmentError::EkCertificate(_)));
}
