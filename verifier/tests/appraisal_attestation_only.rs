//! Attestation-only policies (issue 13): `[policy] bundle_key = "none"`, PCR values pinned in
//! `pcr_values` for PCRs no reference event extends (as Keylime's `tpm_policy`), evidence
//! without an event log or without a bundle key. Real swtpm devices (the example image
//! measured by `tre::attester`), whose TPM then attests as a plain TPM through
//! `tre::plain::PlainAttester`: the quote, the PCR values read, no log, a bundle key only
//! when asked. Every check fails closed: a bundle key required and missing, present and not
//! expected, a pinned value that differs (named by PCR and bank), PCR values that are not
//! the quoted ones, a policy with events and no log, a log that does not replay to the
//! values presented.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fmt::Write as _;
use std::time::SystemTime;

use protocol::ear::{Claim, EarVerifier, TrustTier};
use protocol::evidence::Evidence;
use protocol::pva_api::ChallengeRequest;
use protocol::tpm::{HashAlg, PcrSelection};
use protocol::{DeviceId, Nonce};
use serde_bytes::ByteBuf;
use support::{Device, Lab, log_of, logged, measurements_of, slugs};
use tre::attester::read_pcrs;
use tre::plain::{EvidenceRequest, PlainAttester};
use tre::tpm::KeyAlg;
use verifier::store::Store;
use verifier::{AppraisalError, Appraised, Pva, ReferenceValues, Settings};

const SELECTION: &str = "sha256:0,2,4,8,9";
const PINNED: &str = "pinned-sample";

/// A policy pinning every PCR of `selection` to `values` (PCR → hex), no events.
fn pinned_policy(id: &str, selection: &str, values: &[(u8, String)], bundle_key: &str) -> String {
    let mut t = format!("format = 1\nid = \"{id}\"\n\n[pcr_map]\n");
    for (pcr, _) in values {
        let _ = writeln!(t, "\"{pcr}\" = \"pinned\"");
    }
    let _ = write!(
        t,
        "\n[policy]\npcr_selection = \"{selection}\"\nbanks = [\"sha256\"]\nbundle_key = \"{bundle_key}\"\n\n[pcr_values.sha256]\n"
    );
    for (pcr, value) in values {
        let _ = writeln!(t, "\"{pcr}\" = \"{value}\"");
    }
    t
}

struct Plain {
    lab: Lab,
    pva: Pva,
    device: Device,
    attester: PlainAttester,
    /// The device's event log from its measured boot.
    log: Vec<u8>,
}

/// A device booted with the example image, enrolled with a PVA that holds the image's
/// policy (default) and `policies`; its TPM then handed to a plain attester. `policies`
/// gets the device's real PCR values.
fn plain(policies: impl FnOnce(&[(u8, String)]) -> Vec<String>) -> Plain {
    let lab = Lab::new();
    let mut device = lab.device();
    let selection: PcrSelection = SELECTION.parse().unwrap();
    let values = read_pcrs(device.attester().tpm(), &selection).unwrap();
    let values: Vec<(u8, String)> =
        values.iter().map(|(_, pcr, v)| (pcr, hex::encode(v))).collect();
    let mut all = vec![ReferenceValues::parse(&lab.refvalues).unwrap()];
    all.extend(policies(&values).iter().map(|t| ReferenceValues::parse(t).unwrap()));
    let settings = Settings { default_policy: Some(all[0].id().to_owned()), ..Settings::default() };
    let pva = Pva::new(
        Store::open_in_memory().unwrap(),
        lab.manufacturer.anchors(),
        all,
        lab.signer(),
        settings,
    )
    .unwrap();
    device.enrol(&pva);
    let log = device.attester().event_log().to_vec();
    let tpm = device.attester.take().unwrap().into_tpm();
    let attester = PlainAttester::new(tpm, KeyAlg::Ecc, KeyAlg::Ecc);
    Plain { lab, pva, device, attester, log }
}

impl Plain {
    fn challenge(&self, policy: Option<&str>) -> (Nonce, PcrSelection) {
        let req = ChallengeRequest {
            device_id: self.device.id.clone(),
            policy_id: policy.map(Into::into),
        };
        let ch = self.pva.challenge(&req, SystemTime::now()).unwrap();
        (ch.nonce, ch.pcr_selection.parse().unwrap())
    }

    /// Evidence for a challenge under `policy`.
    fn evidence(&mut self, policy: Option<&str>, log: Vec<u8>, bundle_key: bool) -> Evidence {
        let (nonce, selection) = self.challenge(policy);
        let request =
            EvidenceRequest { nonce: &nonce, selection: &selection, event_log: log, bundle_key };
        self.attester.evidence(request).unwrap()
    }

    fn appraise(&self, evidence: &Evidence) -> Result<Appraised, verifier::Error> {
        self.pva.appraise_evidence(evidence, SystemTime::now())
    }

    fn id(&self) -> &DeviceId {
        &self.device.id
    }
}

fn pinned(values: &[(u8, String)]) -> Vec<String> {
    vec![pinned_policy(PINNED, SELECTION, values, "none")]
}

#[test]
fn pinned_values_without_an_event_log_affirm_and_the_ear_certifies_no_key() {
    let mut p = plain(pinned);
    let evidence = p.evidence(Some(PINNED), Vec::new(), false);
    assert!(evidence.bundle_key.is_none() && evidence.event_log.is_empty());
    let appraised = p.appraise(&evidence).unwrap();
    assert!(appraised.failures.is_empty(), "{:?}", appraised.failures);
    let verified = EarVerifier::new(p.lab.ci.anchors())
        .verify(&appraised.ear, SystemTime::now(), p.id(), None)
        .unwrap();
    assert_eq!(verified.status(), TrustTier::Affirming);
    assert_eq!(verified.claims().appraisal.policy_id, PINNED);
    assert!(verified.bundle_key().is_err(), "an attestation-only EAR names no bundle key");
    assert_eq!(verified.claims().appraisal.vector.get(Claim::StorageOpaque), None);

    // Without the PCR values, the pinned values themselves are what the digest is over.
    let mut evidence = p.evidence(Some(PINNED), Vec::new(), false);
    evidence.pcr_values = None;
    assert!(p.appraise(&evidence).unwrap().failures.is_empty());
}

#[test]
fn a_pinned_value_that_differs_is_named_by_pcr_and_bank() {
    let mut p = plain(|values| {
        let mut wrong = values.to_vec();
        wrong[4].1 = "ab".repeat(32);
        vec![pinned_policy(PINNED, SELECTION, &wrong, "none")]
    });
    let evidence = p.evidence(Some(PINNED), Vec::new(), false);
    let (appraised, log) = logged(|| p.appraise(&evidence).unwrap());
    assert_eq!(
        appraised.failures,
        vec![AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 9 }]
    );
    let details = &appraised.claims.appraisal.failure_details;
    assert_eq!(details[0].to_string(), "pcr-not-reference-value (sha256 PCR 9)");
    assert_eq!(appraised.claims.appraisal.status(), TrustTier::Contraindicated);
    assert!(log.contains("pcr-not-reference-value (sha256 PCR 9)"), "{log}");

    // Without the values presented, only the digest can say so.
    let mut evidence = p.evidence(Some(PINNED), Vec::new(), false);
    evidence.pcr_values = None;
    assert_eq!(slugs(&p.appraise(&evidence).unwrap().failures), ["pcr-digest-mismatch"]);
}

#[test]
fn presented_pcr_values_must_be_exactly_the_quoted_ones() {
    let mut p = plain(pinned);
    // A value changed to the pinned one's neighbour: the digest no longer matches.
    let mut evidence = p.evidence(Some(PINNED), Vec::new(), false);
    let values = evidence.pcr_values.as_mut().unwrap().get_mut(&HashAlg::Sha256).unwrap();
    values.insert(4, ByteBuf::from(vec![0x11; 32]));
    let failures = p.appraise(&evidence).unwrap().failures;
    assert_eq!(slugs(&failures), ["pcr-digest-mismatch", "pcr-not-reference-value"]);

    // One left out, one not quoted, one of the wrong size: refused, no EAR.
    let edits: [fn(&mut Evidence); 3] = [
        |e| {
            e.pcr_values.as_mut().unwrap().get_mut(&HashAlg::Sha256).unwrap().remove(&8);
        },
        |e| {
            let values = e.pcr_values.as_mut().unwrap().get_mut(&HashAlg::Sha256).unwrap();
            values.insert(16, ByteBuf::from(vec![0; 32]));
        },
        |e| {
            let values = e.pcr_values.as_mut().unwrap().get_mut(&HashAlg::Sha256).unwrap();
            values.insert(0, ByteBuf::from(vec![0; 20]));
        },
    ];
    for edit in edits {
        let mut evidence = p.evidence(Some(PINNED), Vec::new(), false);
        edit(&mut evidence);
        let refused = p.appraise(&evidence).unwrap_err();
        assert!(
            matches!(refused, verifier::Error::Appraisal(AppraisalError::PcrValuesMalformed(_))),
            "{refused:?}"
        );
    }
}

#[test]
fn the_bundle_key_policy_fails_closed_both_ways() {
    let mut p = plain(pinned);
    // The image's policy requires a bundle key: evidence without one is contraindicated.
    let log = p.log.clone();
    let evidence = p.evidence(None, log, false);
    let (appraised, logged_text) = logged(|| p.appraise(&evidence).unwrap());
    assert_eq!(slugs(&appraised.failures), ["bundle-key-missing"]);
    assert_eq!(appraised.claims.appraisal.failed_checks, ["bundle-key-missing"]);
    assert_eq!(appraised.claims.appraisal.failure_details[0].to_string(), "bundle-key-missing");
    assert!(logged_text.contains("bundle-key-missing"), "{logged_text}");
    assert!(appraised.claims.appraisal.bundle_key.is_none());
    assert_eq!(appraised.claims.appraisal.status(), TrustTier::Contraindicated);

    // The same device and log with a certified bundle key affirm under the image's policy
    // (the presented values are the log's replay), and the EAR names the key.
    let log = p.log.clone();
    let evidence = p.evidence(None, log, true);
    let appraised = p.appraise(&evidence).unwrap();
    assert!(appraised.failures.is_empty(), "{:?}", appraised.failures);
    assert!(appraised.claims.appraisal.bundle_key.is_some());

    // An attestation-only policy refuses a certified key, and its EAR does not carry it.
    let evidence = p.evidence(Some(PINNED), Vec::new(), true);
    let appraised = p.appraise(&evidence).unwrap();
    assert_eq!(slugs(&appraised.failures), ["bundle-key-not-expected"]);
    assert!(appraised.claims.appraisal.bundle_key.is_none());
    assert_eq!(appraised.claims.appraisal.status(), TrustTier::Contraindicated);
}

#[test]
fn a_policy_with_reference_events_needs_the_event_log() {
    let mut p = plain(pinned);
    let evidence = p.evidence(None, Vec::new(), true);
    let failures = p.appraise(&evidence).unwrap().failures;
    let slugs = slugs(&failures);
    assert!(slugs.contains(&"event-log-missing"), "{slugs:?}");
    assert!(slugs.contains(&"required-component-missing"), "{slugs:?}");
}

#[test]
fn the_event_log_must_replay_to_the_values_presented() {
    let mut p = plain(pinned);
    // The last event of PCR 9 (its separator) left out.
    let (banks, mut measurements) = measurements_of(&p.log);
    let last = measurements.iter().rposition(|m| m.pcr == 9).unwrap();
    measurements.remove(last);
    let evidence = p.evidence(None, log_of(&banks, &measurements), true);
    let failures = p.appraise(&evidence).unwrap().failures;
    assert_eq!(
        failures.first(),
        Some(&AppraisalError::EventLogNotPcrValue { bank: HashAlg::Sha256, pcr: 9 }),
        "{failures:?}"
    );
}

#[test]
fn a_golden_log_and_a_pinned_pcr_together() {
    // The image's reference values with PCR 16 pinned too: the log explains 0, 2, 4, 8, 9,
    // the pinned value PCR 16 (extended by something that logs nothing).
    // PCR 16 starts at zero; one extension with 32 bytes of 0x01 (TPM 2.0 Part 1 §17.5).
    let extended = hex::encode(HashAlg::Sha256.digest(&[[0u8; 32], [1u8; 32]].concat()));
    let mixed = |pin: &str| {
        let refs = Lab::new().refvalues;
        refs.replace("id = \"tresor-sample-m2me-2025.1\"", "id = \"mixed\"")
            .replace("[pcr_map]", "[pcr_map]\n\"16\" = \"debug\"")
            .replace(
                "pcr_selection = \"sha256:0,2,4,8,9\"",
                "pcr_selection = \"sha256:0,2,4,8,9,16\"",
            )
            .replace(
                "[policy.minimum_versions]",
                &format!("[pcr_values.sha256]\n\"16\" = \"{pin}\"\n\n[policy.minimum_versions]"),
            )
    };
    let good = mixed(&extended);
    let bad = mixed(&"cd".repeat(32)).replace("id = \"mixed\"", "id = \"mixed-bad\"");
    let mut p = plain(|_| vec![good.clone(), bad.clone()]);
    p.attester_extend_16();
    let log = p.log.clone();
    let evidence = p.evidence(Some("mixed"), log, true);
    let appraised = p.appraise(&evidence).unwrap();
    assert!(appraised.failures.is_empty(), "{:?}", appraised.failures);
    // Pinned to another value: named, and the bundle key's PolicyPCR (over the pinned
    // value) is not the key's.
    let log = p.log.clone();
    let evidence = p.evidence(Some("mixed-bad"), log, true);
    let failures = p.appraise(&evidence).unwrap().failures;
    assert_eq!(
        failures,
        vec![
            AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 16 },
            AppraisalError::BundleKeyPolicyMismatch
        ]
    );
}

impl Plain {
    /// PCR 16 extended once with 32 bytes of 0x01, by something that logs nothing.
    fn attester_extend_16(&mut self) {
        self.attester
            .tpm()
            .pcr_extend(16, &[(HashAlg::Sha1, vec![1; 20]), (HashAlg::Sha256, vec![1; 32])])
            .unwrap();
    }
}
