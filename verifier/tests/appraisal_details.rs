//! A failed appraisal says where it failed: the EAR's failure details (private claim −76004,
//! `docs/ear.md`) and the PVA's one info line name the check, the PCR, the bank, the
//! event-log record and its type, and the component — and nothing secret or bulky (no
//! digest, no event data). Real swtpm evidence of a device whose OS image changed after the
//! reference values were made, signed in both EAR profiles.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::SystemTime;

use protocol::ear::{EarProfile, EarVerifier, FailureDetail, TrustTier};
use protocol::eventlog::{EventLog, EventType};
use protocol::tpm::HashAlg;
use support::{Lab, image_copy, logged};
use tre::attester::AttesterOptions;
use tre::manufacture::ManufactureOptions;
use verifier::store::Store;
use verifier::{Pva, ReferenceValues, Settings};

fn pva(lab: &Lab, profile: EarProfile) -> Pva {
    Pva::new(
        Store::open_in_memory().unwrap(),
        lab.manufacturer.anchors(),
        vec![ReferenceValues::parse(&lab.refvalues).unwrap()],
        lab.signer().with_profile(profile),
        Settings::default(),
    )
    .unwrap()
}

#[test]
fn a_failed_appraisal_names_the_pcr_bank_event_and_component() {
    let lab = Lab::new();
    let image = image_copy();
    let os = image.path().join("os.img");
    let mut bytes = std::fs::read(&os).unwrap();
    bytes.push(0x90);
    std::fs::write(&os, &bytes).unwrap();
    let digest = hex::encode(HashAlg::Sha256.digest(&bytes));
    for profile in EarProfile::ALL {
        let pva = pva(&lab, profile);
        let mut device = lab.device_with(
            image.path(),
            AttesterOptions::default(),
            ManufactureOptions::default(),
        );
        device.enrol(&pva);
        let evidence = device.evidence(&pva);
        let (appraised, log) =
            logged(|| pva.appraise_evidence(&evidence, SystemTime::now()).unwrap());
        let ear = EarVerifier::new(lab.ci.anchors())
            .accept_any_status()
            .verify(&appraised.ear, SystemTime::now(), &device.id, None)
            .unwrap();
        assert_eq!(ear.profile(), profile);
        assert_eq!(ear.status(), TrustTier::Contraindicated);

        // The OS image's record: its number as tpm2_eventlog counts, found in the log.
        let events = EventLog::parse(&evidence.event_log).unwrap();
        let index = events
            .events()
            .iter()
            .position(|e| e.pcr == 4 && e.event_type == EventType::EV_IPL)
            .unwrap();
        let number = u32::try_from(index).unwrap() + u32::from(events.spec_id().is_some());

        let details = ear.failure_details();
        assert_eq!(details.len(), ear.failed_checks().len(), "a detail per failure");
        for (d, check) in details.iter().zip(ear.failed_checks()) {
            assert_eq!(&d.check, check);
        }
        assert_eq!(
            details[0],
            FailureDetail {
                pcr: Some(4),
                bank: Some("sha256".into()),
                event: Some(number),
                event_type: Some(EventType::EV_IPL.0),
                ..FailureDetail::new("event-not-in-reference-values")
            }
        );
        let pcr = FailureDetail {
            pcr: Some(4),
            bank: Some("sha256".into()),
            ..FailureDetail::new("pcr-not-reference-value")
        };
        assert!(details.contains(&pcr), "{details:?}");
        let missing = FailureDetail {
            component: Some("os".into()),
            ..FailureDetail::new("required-component-missing")
        };
        assert!(details.contains(&missing), "{details:?}");

        // One info line at the PVA says the same.
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("appraisal failed")).collect();
        assert_eq!(lines.len(), 1, "{log}");
        let line = lines[0];
        assert!(line.contains("INFO"), "{line}");
        assert!(line.contains(&device.id.to_string()), "{line}");
        assert!(line.contains("status=contraindicated"), "{line}");
        assert!(
            line.contains(&format!(
                "event-not-in-reference-values (sha256 PCR 4, event {number} EV_IPL)"
            )),
            "{line}"
        );
        assert!(line.contains("pcr-not-reference-value (sha256 PCR 4)"), "{line}");
        assert!(line.contains("required-component-missing (component os)"), "{line}");

        // Nothing bulky or secret: not the unknown digest, not the event data, not the
        // PVA's key, in the EAR's details or the log line.
        let claims = protocol::ear::EarClaims::from_cbor(&payload(&appraised.ear)).unwrap();
        let shown = format!("{:?} {}", claims.appraisal.failure_details, line).to_lowercase();
        assert!(!shown.contains(&digest), "the unknown digest leaked: {shown}");
        assert!(!shown.contains(&digest[..16]), "a prefix of the digest leaked");
        let event_data = &events.events()[index].data;
        assert!(!shown.contains(&hex::encode(event_data)), "event data leaked");
        assert!(!log.contains("PRIVATE KEY") && !log.contains(&lab.pva_key_pem[40..80]));
    }
}

/// The payload of a tagged COSE_Sign1.
fn payload(cose: &[u8]) -> Vec<u8> {
    use coset::TaggedCborSerializable;
    coset::CoseSign1::from_tagged_slice(cose).unwrap().payload.unwrap()
}

#[test]
fn an_affirming_appraisal_logs_no_failure_and_carries_no_details() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let evidence = device.evidence(&pva);
    let (appraised, log) = logged(|| pva.appraise_evidence(&evidence, SystemTime::now()).unwrap());
    assert_eq!(appraised.status(), TrustTier::Affirming, "{:?}", appraised.failures);
    assert!(!log.contains("appraisal failed"), "{log}");
    let ear = EarVerifier::new(lab.ci.anchors())
        .verify(&appraised.ear, SystemTime::now(), &device.id, None)
        .unwrap();
    assert!(ear.failure_details().is_empty());
    assert_eq!(ear.profile(), EarProfile::Ietf, "the PVA signs the current draft by default");
}
