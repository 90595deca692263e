//! Authentic evidence that fails integrity or policy checks gets a signed, non-affirming EAR
//! naming each failed check. Every case is real swtpm evidence: the device's TPM really
//! measured, quoted and certified what the test describes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::SystemTime;

use protocol::ear::{EarVerifier, TrustTier};
use protocol::eventlog::EventType;
use protocol::evidence::Evidence;
use protocol::tpm::{HashAlg, PcrSelection};
use serde_bytes::ByteBuf;
use support::{Device, Lab, image_copy, log_of, measurements_of, raw_log, slugs};
use tre::attester::AttesterOptions;
use tre::manufacture::ManufactureOptions;
use verifier::{AppraisalError, Appraised, Pva};

fn appraise(pva: &Pva, evidence: &Evidence) -> Appraised {
    pva.appraise_evidence(evidence, SystemTime::now()).unwrap()
}

/// Fresh evidence of `device` (its real quote for a new nonce) presented with `event_log`
/// instead of its own, appraised.
fn appraise_with_log(pva: &Pva, device: &mut Device, event_log: Vec<u8>) -> Appraised {
    let mut e = device.evidence(pva);
    e.event_log = ByteBuf::from(event_log);
    appraise(pva, &e)
}

/// Asserts a signed EAR with this status whose failed-check list names `expected` (in
/// order, among possibly others), and that the EAR says the same as the summary.
fn assert_fails(
    lab: &Lab,
    device: &Device,
    a: &Appraised,
    status: TrustTier,
    expected: &[&AppraisalError],
) {
    assert_eq!(a.status(), status, "{:?}", a.failures);
    for e in expected {
        assert!(a.failures.contains(e), "{e:?} not in {:?}", a.failures);
    }
    let ear = EarVerifier::new(lab.ci.anchors())
        .accept_any_status()
        .verify(&a.ear, SystemTime::now(), &device.id, None)
        .unwrap();
    assert_eq!(ear.status(), status);
    assert_eq!(ear.failed_checks(), slugs(&a.failures).as_slice());
}

fn enrolled(lab: &Lab, pva: &Pva) -> Device {
    let mut d = lab.device();
    d.enrol(pva);
    d
}

#[test]
fn a_component_changed_after_the_reference_values_were_made() {
    let lab = Lab::new();
    let pva = lab.pva();
    let image = image_copy();
    let os = image.path().join("os.img");
    let mut bytes = std::fs::read(&os).unwrap();
    bytes.push(0x90);
    std::fs::write(&os, &bytes).unwrap();
    let mut device =
        lab.device_with(image.path(), AttesterOptions::default(), ManufactureOptions::default());
    device.enrol(&pva);
    let a = appraise(&pva, &device.evidence(&pva));
    let unknown = AppraisalError::EventNotInReferenceValues {
        pcr: 4,
        event_type: EventType::EV_IPL,
        bank: HashAlg::Sha256,
        digest: HashAlg::Sha256.digest(&bytes),
    };
    assert_eq!(a.failures.first(), Some(&unknown), "the changed component is named first");
    assert_fails(
        &lab,
        &device,
        &a,
        TrustTier::Contraindicated,
        &[
            &unknown,
            &AppraisalError::RequiredComponentMissing { component: "os".into() },
            &AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 4 },
            &AppraisalError::BundleKeyPolicyMismatch,
        ],
    );
    assert!(!a.failures.contains(&AppraisalError::PcrDigestMismatch), "the log is the TPM's");
}

#[test]
fn retyped_and_relabelled_events_do_not_match_although_their_digests_do() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = enrolled(&lab, &pva);
    let genuine = device.evidence(&pva);
    let (banks, measurements) = measurements_of(&genuine.event_log);
    let os =
        measurements.iter().position(|m| m.pcr == 4 && m.event_type == EventType::EV_IPL).unwrap();

    // The event type is not covered by the digest: retyping keeps the PCR digest intact.
    let mut retyped = measurements.clone();
    retyped[os].event_type = EventType::EV_POST_CODE;
    let a = appraise_with_log(&pva, &mut device, log_of(&banks, &retyped));
    assert!(!a.failures.contains(&AppraisalError::PcrDigestMismatch));
    assert!(matches!(
        a.failures.first(),
        Some(AppraisalError::EventNotInReferenceValues {
            pcr: 4,
            event_type: EventType::EV_POST_CODE,
            ..
        })
    ));
    assert_fails(&lab, &device, &a, TrustTier::Contraindicated, &[]);

    // Nor is the event data: an event relabelled as another version.
    let mut relabelled = measurements.clone();
    relabelled[os].data = b"os 9.9.9".to_vec();
    let a = appraise_with_log(&pva, &mut device, log_of(&banks, &relabelled));
    assert!(!a.failures.contains(&AppraisalError::PcrDigestMismatch));
    assert_fails(
        &lab,
        &device,
        &a,
        TrustTier::Contraindicated,
        &[&AppraisalError::EventDataMismatch { pcr: 4, component: "os".into() }],
    );
}

#[test]
fn logs_that_are_not_the_tpms_history_fail_the_pcr_digest() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = enrolled(&lab, &pva);
    let genuine = device.evidence(&pva);
    let (banks, measurements) = measurements_of(&genuine.event_log);

    // reordered within a PCR: bootloader and PCR 0's separator swapped
    let mut reordered = measurements.clone();
    let sep0 = reordered
        .iter()
        .position(|m| m.pcr == 0 && m.event_type == EventType::EV_SEPARATOR)
        .unwrap();
    reordered.swap(0, sep0);
    // truncated: the last event dropped
    let mut truncated = measurements.clone();
    truncated.pop();
    // another image's log for this quote
    let other = image_copy();
    std::fs::write(other.path().join("tre-agent.bin"), b"another agent").unwrap();
    let other_log = log_of(&banks, &protocol::image::measure(other.path(), &banks).unwrap());

    for (what, log) in [
        ("reordered", log_of(&banks, &reordered)),
        ("truncated", log_of(&banks, &truncated)),
        ("another image", other_log),
    ] {
        let a = appraise_with_log(&pva, &mut device, log);
        assert_eq!(a.failures.first(), Some(&AppraisalError::PcrDigestMismatch), "{what}");
        assert_fails(
            &lab,
            &device,
            &a,
            TrustTier::Contraindicated,
            &[&AppraisalError::PcrDigestMismatch],
        );
    }
}

#[test]
fn unknown_events_are_contraindicated_wherever_they_are_logged() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = enrolled(&lab, &pva);
    let genuine = device.evidence(&pva);
    let (banks, mut measurements) = measurements_of(&genuine.event_log);

    // An event the TPM really extended into a quoted PCR, with a digest nobody approved.
    let digests: Vec<(HashAlg, Vec<u8>)> =
        banks.iter().map(|b| (*b, b.digest(b"rootkit"))).collect();
    device.attester().tpm().pcr_extend(9, &digests).unwrap();
    measurements.push(protocol::eventlog::Measurement {
        pcr: 9,
        event_type: EventType::EV_IPL,
        data: b"rootkit 1".to_vec(),
        digests: digests
            .iter()
            .map(|(alg, value)| protocol::eventlog::BankDigest { alg: *alg, value: value.clone() })
            .collect(),
    });
    let a = appraise_with_log(&pva, &mut device, log_of(&banks, &measurements));
    assert!(!a.failures.contains(&AppraisalError::PcrDigestMismatch));
    assert_fails(
        &lab,
        &device,
        &a,
        TrustTier::Contraindicated,
        &[
            &AppraisalError::EventNotInReferenceValues {
                pcr: 9,
                event_type: EventType::EV_IPL,
                bank: HashAlg::Sha256,
                digest: HashAlg::Sha256.digest(b"rootkit"),
            },
            &AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 9 },
            &AppraisalError::BundleKeyPolicyMismatch,
        ],
    );
}

#[test]
fn a_known_component_measured_twice_leaves_its_pcr_off_reference() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = enrolled(&lab, &pva);
    let genuine = device.evidence(&pva);
    let (banks, mut measurements) = measurements_of(&genuine.event_log);
    let bootloader = measurements[0].clone();
    let digests: Vec<(HashAlg, Vec<u8>)> =
        bootloader.digests.iter().map(|d| (d.alg, d.value.clone())).collect();
    device.attester().tpm().pcr_extend(0, &digests).unwrap();
    measurements.push(bootloader);
    let a = appraise_with_log(&pva, &mut device, log_of(&banks, &measurements));
    assert_eq!(
        a.failures,
        [
            AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 0 },
            AppraisalError::BundleKeyPolicyMismatch
        ]
    );
    assert_fails(&lab, &device, &a, TrustTier::Contraindicated, &[]);
}

#[test]
fn logs_without_digests_for_the_quoted_bank_fail() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = enrolled(&lab, &pva);
    let genuine = device.evidence(&pva);
    let (banks, measurements) = measurements_of(&genuine.event_log);

    // A SHA-1-only log for a SHA-256 quote.
    let sha1_only: Vec<_> = measurements
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.digests.retain(|d| d.alg == HashAlg::Sha1);
            m
        })
        .collect();
    let a = appraise_with_log(&pva, &mut device, log_of(&[HashAlg::Sha1], &sha1_only));
    assert_fails(
        &lab,
        &device,
        &a,
        TrustTier::Contraindicated,
        &[
            &AppraisalError::EventLogMissingBank { bank: HashAlg::Sha256 },
            &AppraisalError::EventMissingDigest {
                pcr: 0,
                event_type: EventType::EV_POST_CODE,
                bank: HashAlg::Sha256,
            },
        ],
    );

    // One record without its SHA-256 digest, in a log that declares the bank.
    let records: Vec<_> = measurements
        .iter()
        .map(|m| {
            let digests = m
                .digests
                .iter()
                .filter(|d| {
                    !(m.pcr == 4 && m.event_type == EventType::EV_IPL && d.alg == HashAlg::Sha256)
                })
                .map(|d| (d.alg, d.value.clone()))
                .collect();
            (m.pcr, m.event_type.0, digests, m.data.clone())
        })
        .collect();
    let a = appraise_with_log(&pva, &mut device, raw_log(&genuine.event_log, &records));
    assert!(banks.contains(&HashAlg::Sha256));
    assert_fails(
        &lab,
        &device,
        &a,
        TrustTier::Contraindicated,
        &[&AppraisalError::EventMissingDigest {
            pcr: 4,
            event_type: EventType::EV_IPL,
            bank: HashAlg::Sha256,
        }],
    );
}

#[test]
fn quotes_over_the_wrong_banks_or_pcrs_fail_the_policy() {
    let lab = Lab::new();
    let pva = lab.pva();
    // Every bank allocated, so that the TPM can quote SHA-384 too.
    let mut device = lab.device_on(
        &support::swtpm_config_all_banks(),
        &support::example_image(),
        AttesterOptions::default(),
        ManufactureOptions::default(),
    );
    device.enrol(&pva);
    let cases: [(&str, &[AppraisalError]); 4] = [
        ("sha1:0,2,4,8,9+sha256:0,2,4,8,9", &[AppraisalError::Sha1BankRefused]),
        (
            "sha1:0,2,4,8,9",
            &[
                AppraisalError::Sha1BankRefused,
                AppraisalError::PolicyPcrNotQuoted { bank: HashAlg::Sha256, pcr: 0 },
            ],
        ),
        ("sha256:0,2,4,8,9+sha384:0", &[AppraisalError::BankNotAllowed { bank: HashAlg::Sha384 }]),
        ("sha256:0,2,4,8", &[AppraisalError::PolicyPcrNotQuoted { bank: HashAlg::Sha256, pcr: 9 }]),
    ];
    for (selection, expected) in cases {
        let selection: PcrSelection = selection.parse().unwrap();
        device.attester().set_selection(selection.clone());
        let a = appraise(&pva, &device.evidence(&pva));
        assert_eq!(a.failures.first(), expected.first(), "{selection}");
        let expected: Vec<&AppraisalError> = expected.iter().collect();
        assert_fails(&lab, &device, &a, TrustTier::Contraindicated, &expected);
    }
}

#[test]
fn required_components_and_minimum_versions_are_policy() {
    let lab = Lab::new();
    // A device whose image lacks its configuration component.
    let image = image_copy();
    let manifest = std::fs::read_to_string(image.path().join("manifest.toml")).unwrap();
    let cut = manifest.find("[[component]]\nname = \"device-config\"").unwrap();
    std::fs::write(image.path().join("manifest.toml"), &manifest[..cut]).unwrap();
    let pva = lab.pva();
    let mut device =
        lab.device_with(image.path(), AttesterOptions::default(), ManufactureOptions::default());
    device.enrol(&pva);
    let a = appraise(&pva, &device.evidence(&pva));
    assert_fails(
        &lab,
        &device,
        &a,
        TrustTier::Contraindicated,
        &[&AppraisalError::RequiredComponentMissing { component: "device-config".into() }],
    );

    // The OS below the minimum version: contraindicated by default, a warning where the
    // policy says so.
    let strict = lab
        .refvalues
        .replace("[policy.minimum_versions]", "[policy.minimum_versions]\nos = \"6.2\"");
    let lenient = strict.replace(
        "below_minimum_version = \"contraindicated\"",
        "below_minimum_version = \"warning\"",
    );
    for (text, status, warning) in
        [(strict, TrustTier::Contraindicated, false), (lenient, TrustTier::Warning, true)]
    {
        let pva = lab.pva_with(&text, verifier::store::Store::open_in_memory().unwrap());
        let mut device = lab.device();
        device.enrol(&pva);
        let a = appraise(&pva, &device.evidence(&pva));
        let below = AppraisalError::ComponentBelowMinimumVersion {
            component: "os".into(),
            version: "6.1.55-m2me".into(),
            minimum: "6.2".into(),
            warning,
        };
        assert_eq!(a.failures, std::slice::from_ref(&below));
        assert_fails(&lab, &device, &a, status, &[&below]);
    }
}

#[test]
fn bundle_keys_without_the_reference_pcr_policy_fail() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = enrolled(&lab, &pva);
    // No policy at all, and PolicyPCR over other PCR values.
    let other_values = {
        let selection = lab_selection(&lab);
        let mut values = protocol::tpm::PcrValues::new();
        for (bank, pcr) in selection.iter() {
            values.insert(bank, pcr, vec![0xAB; bank.size()]).unwrap();
        }
        protocol::tpm::policy_pcr(HashAlg::Sha256, &selection, &values).unwrap().as_bytes().to_vec()
    };
    for policy in [vec![], other_values] {
        let nonce = device.challenge(&pva);
        let mut e = device.attester().evidence(&nonce).unwrap();
        let tpm = device.attester().tpm();
        let ak = tpm.ak(tre::tpm::KeyAlg::Ecc).unwrap();
        let key = tpm.create_bundle_key(&policy, &[0x42; 32]).unwrap();
        let certify = tpm.certify(&key, &ak, nonce.as_bytes()).unwrap();
        e.bundle_key.as_mut().unwrap().public = ByteBuf::from(key.public_bytes().unwrap());
        e.bundle_key.as_mut().unwrap().certify = protocol::evidence::SignedAttest {
            attest: ByteBuf::from(certify.attest),
            signature: ByteBuf::from(certify.signature),
        };
        tpm.release(key).unwrap();
        let a = appraise(&pva, &e);
        assert_eq!(a.failures, [AppraisalError::BundleKeyPolicyMismatch]);
        assert_fails(&lab, &device, &a, TrustTier::Contraindicated, &[]);
    }
}

fn lab_selection(lab: &Lab) -> PcrSelection {
    verifier::ReferenceValues::parse(&lab.refvalues).unwrap().policy().selection.clone()
}

#[test]
fn what_the_quote_does_not_cover_must_still_be_true() {
    let lab = Lab::new();
    // Reference values that record SHA-1 digests too (SHA-1 quotes stay refused).
    let refvalues =
        verifier::refvalues::derive(&support::example_image(), &[HashAlg::Sha1, HashAlg::Sha256])
            .unwrap();
    let pva = lab.pva_with(&refvalues, verifier::store::Store::open_in_memory().unwrap());
    let mut device = enrolled(&lab, &pva);
    let genuine = device.evidence(&pva);
    let (banks, measurements) = measurements_of(&genuine.event_log);

    // A SHA-1 digest the quote (SHA-256) does not vouch for, but the reference values know.
    let mut lying = measurements.clone();
    let sha1 = lying[2].digests.iter_mut().find(|d| d.alg == HashAlg::Sha1).unwrap();
    sha1.value = vec![0x11; 20];
    let a = appraise_with_log(&pva, &mut device, log_of(&banks, &lying));
    assert!(!a.failures.contains(&AppraisalError::PcrDigestMismatch));
    assert_eq!(
        a.failures,
        [
            AppraisalError::EventNotInReferenceValues {
                pcr: lying[2].pcr,
                event_type: lying[2].event_type,
                bank: HashAlg::Sha1,
                digest: vec![0x11; 20],
            },
            AppraisalError::RequiredComponentMissing { component: "os".into() }
        ]
    );
    assert_fails(&lab, &device, &a, TrustTier::Contraindicated, &[]);

    // A separator whose data says "error" (0x00000001) but whose digest says normal.
    let mut error_separator = measurements.clone();
    let sep = error_separator.iter_mut().find(|m| m.event_type == EventType::EV_SEPARATOR).unwrap();
    sep.data = vec![1, 0, 0, 0];
    let a = appraise_with_log(&pva, &mut device, log_of(&banks, &error_separator));
    assert_eq!(
        a.failures,
        [AppraisalError::EventDataMismatch { pcr: 0, component: "EV_SEPARATOR".into() }]
    );
    assert_fails(&lab, &device, &a, TrustTier::Contraindicated, &[]);
}
