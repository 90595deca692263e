//! `tresor attest` against a real `tresor serve pva` over HTTPS, with a plain swtpm: no EK
//! certificate (the PVA admits the EK by its `ek_allow_list`), no firmware event log, and an
//! attestation-only policy (`bundle_key = "none"`) that pins PCR values — as an attestation
//! engineer with an ordinary TPM would use the PVA (issue 13). The EAR it saves verifies
//! with `tresor ear verify`; a wrong pinned value exits 1 naming the PCR; and the EAR of
//! this attestation-only appraisal, which names no bundle key, is refused by the DPF and
//! by the device agent's own check, the two places that release and accept a bundle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use protocol::ear::{BundleKey, EarVerifier};
use protocol::evidence::Evidence;
use protocol::x509::TrustAnchors;
use support::{TRESOR, edit, prepare, serve};
use tre::swtpm::{Swtpm, SwtpmConfig};

fn attest(dir: &Path, tcti: &str, url: &str, extra: &[&str]) -> Output {
    Command::new(TRESOR)
        .current_dir(dir)
        .args(["attest", "--tcti", tcti, "--pva", url, "--ca", "pki/ci.pem"])
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn attest_a_plain_swtpm_against_pinned_pcr_values() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    let lab = support::pinned::start(dir);
    let (tcti, device, url) = (lab.tcti.clone(), lab.device.clone(), lab.url.clone());

    // Enrolled by the RO's certificate, appraised under the pinned policy: affirming.
    let enrol = ["--client-cert", "pki/ro.pem", "--client-key", "pki/ro.key"];
    let saved = ["--out", "ear.cbor", "--evidence-out", "evidence.cbor"];
    let out =
        attest(dir, &tcti, &url, &[&["--policy", "swtpm-pinned"], &enrol[..], &saved].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("status affirming"), "{stdout}");
    assert!(stdout.contains("bundle key certified: no"), "{stdout}");
    let verified = Command::new(TRESOR)
        .current_dir(dir)
        .args(["ear", "verify", "ear.cbor", "--ca", "pki/ci.pem", "--device", &device])
        .output()
        .unwrap();
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    let shown = Command::new(TRESOR)
        .current_dir(dir)
        .args(["evidence", "show", "evidence.cbor"])
        .output()
        .unwrap();
    let shown = text(&shown);
    assert!(shown.contains("event log:        none"), "{shown}");
    assert!(shown.contains("bundle key:       none"), "{shown}");

    // The EAR of this attestation-only appraisal releases no bundle: the DPF and the device
    // agent refuse it for want of a bundle-key claim.
    let ear = std::fs::read(dir.join("ear.cbor")).unwrap();
    let evidence = Evidence::from_cbor(&std::fs::read(dir.join("evidence.cbor")).unwrap()).unwrap();
    let ci = TrustAnchors::from_pem(&std::fs::read(dir.join("pki/ci.pem")).unwrap()).unwrap();
    let claims = EarVerifier::new(ci.clone())
        .verify(&ear, SystemTime::now(), &evidence.device_id, None)
        .unwrap()
        .claims()
        .clone();
    let nonce = claims.nonce.unwrap();
    assert!(claims.appraisal.bundle_key.is_none());
    let some_key = BundleKey::new([1; 32], [2; 32], vec![0, 0x0B, 3]);
    let dpf = provisioning::ro::Dpf::new(ci.clone());
    let refused = dpf
        .check_ear(&ear, &evidence.device_id, &nonce, &some_key, SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("certifies no bundle key"), "{refused}");
    let refused = provisioning::ro::Dpf::evidence_bundle_key(&evidence).unwrap_err();
    assert!(refused.to_string().contains("certifies no bundle key"), "{refused}");
    let refused = tre::agent::check_attestation_result_for(
        &ci,
        &ear,
        &evidence.device_id,
        &nonce,
        some_key.tpm_name(),
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("certifies no bundle key"), "{refused}");

    // A pinned value that differs: exit 1, the PCR and bank named. Already enrolled.
    let out = attest(dir, &tcti, &url, &["--policy", "swtpm-wrong", "--no-enrol", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "contraindicated");
    assert_eq!(report["failed_checks"], serde_json::json!(["pcr-not-reference-value"]));
    assert_eq!(
        report["failure_details"],
        serde_json::json!(["pcr-not-reference-value (sha256 PCR 23)"])
    );

    // A certified bundle key offered to the attestation-only policy: refused, exit 1.
    let out = attest(dir, &tcti, &url, &["--policy", "swtpm-pinned", "--no-enrol", "--bundle-key"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bundle-key-not-expected"),
        "{}",
        text(&out)
    );

    // The image's policy (the default) needs an event log and a bundle key: exit 1.
    let out = attest(dir, &tcti, &url, &["--no-enrol"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("event-log-missing") && stdout.contains("bundle-key-missing"),
        "{stdout}"
    );

    // Errors exit 2: an unknown policy, a PVA that is not there.
    let out = attest(dir, &tcti, &url, &["--policy", "no-such-policy", "--no-enrol"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown-policy"), "{}", text(&out));
}

#[test]
fn without_an_allow_listed_ek_enrolment_is_refused_with_exit_2() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    edit(&dir.join("pva.toml"), &[("127.0.0.1:8440", "127.0.0.1:0")]);
    let (_pva, url) = serve(dir, "pva", "pva", "pva.toml");
    let enrol = ["--client-cert", "pki/ro.pem", "--client-key", "pki/ro.key"];
    let out = attest(dir, &swtpm.tcti(), &url, &enrol);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("no EK certificate") && all.contains("enrolment"), "{all}");
}
