//! The attestation tools as a user runs them, on what a real PVA produces: `tresor ear
//! verify`, `tresor evidence show` and `tresor pva check-quote --json`.
//!
//! The EARs and evidence come from the PVA of `examples/pva.toml` (PKI by `tresor pki
//! init`, reference values of `examples/image`), appraising a swtpm device that was
//! manufactured with the lab's TPM manufacturer CA and booted with the image: enrolment,
//! credential activation, challenge, evidence, appraisal, exactly the steps the device's
//! agent takes through the RO. The quotes come from `tresor tre quote` on swtpm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use protocol::evidence::Evidence;
use protocol::pva_api::{ActivateRequest, ChallengeRequest, CredentialSecret, EnrolRequest};
use serde_bytes::ByteBuf;
use serde_json::Value;
use support::{TRESOR, prepare, tresor};
use tre::attester::{Attester, AttesterOptions};
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::Tpm;

/// One appraisal's artifacts, written into the test's directory.
struct Appraisal {
    ear: PathBuf,
    evidence: PathBuf,
    device: String,
    nonce: String,
}

/// A directory prepared as a newcomer would (`examples/`, `tresor pki init pki`), with
/// `ear_profile` set in its pva.toml when given.
fn lab(profile: Option<&str>) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    prepare(temp.path());
    if let Some(profile) = profile {
        let config = temp.path().join("pva.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("ear_profile = \"{profile}\"\n"));
        std::fs::write(&config, text).unwrap();
    }
    temp
}

/// A fresh swtpm device booted with `image` runs enrolment, activation, challenge and
/// evidence against the PVA of `dir/pva.toml`; its evidence and EAR are written as
/// `dir/TAG.evidence.cbor` and `dir/TAG.ear.cbor`.
fn appraise(dir: &Path, image: &Path, tag: &str) -> Appraisal {
    let config = verifier::Config::load(&dir.join("pva.toml")).unwrap();
    let pva = verifier::Pva::from_config(&config).unwrap();
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let ca = ManufacturerCa::from_pem(
        &std::fs::read_to_string(dir.join("pki/manufacturer.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("pki/manufacturer.key")).unwrap(),
    )
    .unwrap();
    manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();
    let mut attester = Attester::boot(tpm, image, AttesterOptions::default()).unwrap();
    let device = attester.device_id().unwrap();

    let r = attester.enrolment_request().unwrap();
    let enrol = EnrolRequest {
        device_id: r.device_id,
        ek_certificate: ByteBuf::from(r.ek_certificate),
        ek_intermediates: vec![],
        ek_public: ByteBuf::from(r.ek_public),
        ak_public: ByteBuf::from(r.ak_public),
    };
    let enrolled = pva.enrol(&enrol, SystemTime::now()).unwrap();
    let secret = attester
        .activate_credential(&enrolled.credential_blob, &enrolled.encrypted_secret)
        .unwrap();
    pva.activate(
        &ActivateRequest {
            device_id: device.clone(),
            ak_name: enrolled.ak_name,
            secret: CredentialSecret::from_slice(&secret).unwrap(),
        },
        SystemTime::now(),
    )
    .unwrap();
    let challenge = ChallengeRequest { device_id: device.clone(), policy_id: None };
    let nonce = pva.challenge(&challenge, SystemTime::now()).unwrap().nonce;
    let evidence = attester.evidence(&nonce).unwrap().to_cbor().unwrap();
    let appraised = pva.appraise(&evidence, SystemTime::now()).unwrap();

    let ear = dir.join(format!("{tag}.ear.cbor"));
    let evidence_file = dir.join(format!("{tag}.evidence.cbor"));
    std::fs::write(&ear, &appraised.ear).unwrap();
    std::fs::write(&evidence_file, &evidence).unwrap();
    // The TPM connection closes before swtpm stops.
    drop(attester);
    drop(swtpm);
    Appraisal { ear, evidence: evidence_file, device: device.to_hex(), nonce: nonce.to_hex() }
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(TRESOR).current_dir(dir).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(out))
    })
}

fn ear_verify(dir: &Path, ear: &Path, extra: &[&str]) -> Output {
    let ear = ear.to_str().unwrap();
    let mut args = vec!["ear", "verify", ear, "--ca", "pki/ci.pem"];
    args.extend_from_slice(extra);
    run(dir, &args)
}

/// Refused with exit status 2, the check named in `--json` and the error on stderr.
fn assert_refused(out: &Output, check: &str, message: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    assert!(stderr(out).contains(message), "wanted {message:?} in: {}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
    let doc = json(out);
    assert_eq!(doc["verified"], false);
    assert_eq!(doc["check"], check, "{doc}");
}

#[test]
fn ear_verify_affirms_a_real_ear_and_refuses_every_forgery() {
    let temp = lab(None);
    let dir = temp.path();
    let a = appraise(dir, &dir.join("image"), "good");

    let out = ear_verify(dir, &a.ear, &["--device", &a.device, "--nonce", &a.nonce, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["status"], "affirming");
    assert_eq!(doc["profile"], "ietf");
    assert_eq!(doc["eat_profile"], protocol::ear::IETF_EAR_PROFILE);
    assert_eq!(doc["device"], a.device.as_str());
    assert_eq!(doc["device_checked"], true);
    assert_eq!(doc["nonce"], a.nonce.as_str());
    assert_eq!(doc["nonce_checked"], true);
    assert_eq!(doc["policy_id"], "tresor-sample-m2me-2025.1");
    assert!(doc["signer"].as_str().unwrap().contains("pva"), "{doc}");
    assert!(doc["expires_at"].as_u64().unwrap() > doc["issued_at"].as_u64().unwrap());
    assert!(doc["issued_at_utc"].as_str().unwrap().ends_with('Z'));
    let vector = doc["trust_vector"].as_array().unwrap();
    assert!(vector.iter().all(|c| c["tier"] == "affirming"), "{doc}");
    assert!(vector.iter().any(|c| c["claim"] == "instance-identity" && c["value"] == 2));
    assert_eq!(doc["bundle_key"]["crv"], "P-256");
    assert_eq!(doc["bundle_key"]["x"].as_str().unwrap().len(), 64);
    assert!(doc["failed_checks"].as_array().unwrap().is_empty());

    // The summary, without --device: the EAR's own device is shown and said to be unchecked.
    let out = ear_verify(dir, &a.ear, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("EAR verified"), "{text}");
    assert!(text.contains("affirming") && text.contains(&a.device), "{text}");
    assert!(text.contains("not checked: no --device"), "{text}");

    // A byte of the signature, and one of the signed claims (the policy id), changed.
    let bytes = std::fs::read(&a.ear).unwrap();
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 0x01;
    std::fs::write(dir.join("sig.ear"), &changed).unwrap();
    let out = ear_verify(dir, &dir.join("sig.ear"), &["--json"]);
    assert_refused(&out, "signature", "EAR signature does not verify");
    let at = bytes.windows(13).position(|w| w == b"tresor-sample").unwrap();
    let mut changed = bytes.clone();
    changed[at] ^= 0x20;
    std::fs::write(dir.join("claims.ear"), &changed).unwrap();
    let out = ear_verify(dir, &dir.join("claims.ear"), &["--json"]);
    assert_refused(&out, "signature", "EAR signature does not verify");

    // Another CI: the PVA's certificate does not chain to it.
    tresor(dir, &["pki", "init", "other"]);
    let out =
        run(dir, &["ear", "verify", a.ear.to_str().unwrap(), "--ca", "other/ci.pem", "--json"]);
    assert_refused(&out, "signer-chain", "does not chain to a trusted CI root");

    // Another challenge, another device.
    let out = ear_verify(dir, &a.ear, &["--nonce", &"00".repeat(32), "--json"]);
    assert_refused(&out, "nonce", "EAR is for another nonce");
    let other = format!("000b{}", "11".repeat(32));
    let out = ear_verify(dir, &a.ear, &["--device", &other, "--json"]);
    assert_refused(&out, "device", "EAR is for device");

    // Not an EAR at all, and bad arguments: clear errors, never a panic.
    std::fs::write(dir.join("garbage.ear"), b"\xd2\x84garbage").unwrap();
    let out = ear_verify(dir, &dir.join("garbage.ear"), &["--json"]);
    assert_refused(&out, "structure", "EAR is malformed");
    let out = ear_verify(dir, &a.ear, &["--nonce", "abc", "--json"]);
    assert_refused(&out, "input", "--nonce");
    let out = ear_verify(dir, &dir.join("missing.ear"), &["--json"]);
    assert_refused(&out, "input", "missing.ear");
}

#[test]
fn ear_verify_reads_the_veraison_profile() {
    let temp = lab(Some("veraison"));
    let dir = temp.path();
    let a = appraise(dir, &dir.join("image"), "veraison");
    let out = ear_verify(dir, &a.ear, &["--device", &a.device, "--nonce", &a.nonce, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["profile"], "veraison");
    assert_eq!(doc["eat_profile"], protocol::ear::VERAISON_EAR_PROFILE);
    assert_eq!(doc["status"], "affirming");
    assert_eq!(doc["nonce"], a.nonce.as_str());
}

#[test]
fn ear_verify_reports_a_contraindicated_ear_only_when_asked() {
    let temp = lab(None);
    let dir = temp.path();
    let image = tresor::lab::write_tampered_image(&dir.join("tampered")).unwrap();
    let a = appraise(dir, &image, "tampered");

    let out = ear_verify(dir, &a.ear, &["--device", &a.device, "--json"]);
    assert_refused(&out, "status", "not affirming");

    let out = ear_verify(dir, &a.ear, &["--device", &a.device, "--any-status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["status"], "contraindicated");
    let failed = doc["failed_checks"].as_array().unwrap();
    assert!(!failed.is_empty(), "{doc}");
    let details = doc["failure_details"].as_array().unwrap();
    assert!(details.iter().any(|d| d["pcr"].is_u64() && d["bank"] == "sha256"), "{doc}");

    let out = ear_verify(dir, &a.ear, &["--any-status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT affirming") && text.contains("failed checks:"), "{text}");
}

#[test]
fn evidence_show_decodes_real_evidence_and_refuses_garbage() {
    let temp = lab(None);
    let dir = temp.path();
    let a = appraise(dir, &dir.join("image"), "good");
    let evidence = a.evidence.to_str().unwrap();

    let out = run(dir, &["evidence", "show", evidence, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["device_id"], a.device.as_str());
    assert_eq!(doc["ak"]["alg"], "ECC NIST P-256");
    assert_eq!(doc["ak"]["name"].as_str().unwrap().len(), 68);
    let quote = &doc["quote"];
    assert_eq!(quote["magic"], "0xff544347");
    assert_eq!(quote["tpm_generated"], true);
    assert_eq!(quote["type"], "TPM_ST_ATTEST_QUOTE");
    assert_eq!(quote["extra_data"], a.nonce.as_str());
    assert!(quote["clock_info"]["clock"].is_u64());
    assert!(quote["clock_info"]["reset_count"].is_u64());
    assert!(quote["pcr_selection"].as_str().unwrap().starts_with("sha256:"), "{quote}");
    assert_eq!(quote["pcr_digest"].as_str().unwrap().len(), 64);
    assert_eq!(quote["signature"]["scheme"], "ecdsa");
    let log = &doc["event_log"];
    assert_eq!(log["format"], "crypto-agile");
    assert!(log["banks"].as_array().unwrap().iter().any(|b| b == "sha256"), "{log}");
    assert!(log["events"].as_u64().unwrap() > 0);
    assert!(log["events_per_pcr"].as_object().unwrap().contains_key("0"), "{log}");
    let bundle = &doc["bundle_key"];
    assert_eq!(bundle["certify"]["type"], "TPM_ST_ATTEST_CERTIFY");
    assert_eq!(bundle["certify"]["extra_data"], a.nonce.as_str());
    assert_eq!(bundle["certify"]["certified_name"], bundle["public"]["name"]);
    assert_eq!(bundle["certifies_this_key"], true);
    assert!(doc["rollback_counter"].is_u64());

    let out = run(dir, &["evidence", "show", evidence]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for field in ["extraData", "resetCount", "PCR digest", "events per PCR", "certified name"] {
        assert!(text.contains(field), "{field}: {text}");
    }

    // Garbage, a truncated file, and well-formed CBOR whose quote is cut short.
    let bytes = std::fs::read(&a.evidence).unwrap();
    let mut decoded = Evidence::from_cbor(&bytes).unwrap();
    decoded.quote.attest = ByteBuf::from(decoded.quote.attest[..40].to_vec());
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage.cbor", b"not evidence at all".to_vec(), "not tresor evidence"),
        ("empty.cbor", Vec::new(), "not tresor evidence"),
        ("truncated.cbor", bytes[..bytes.len() / 2].to_vec(), "not tresor evidence"),
        ("short-quote.cbor", decoded.to_cbor().unwrap(), "quote.attest"),
    ];
    for (name, content, message) in cases {
        std::fs::write(dir.join(name), content).unwrap();
        for json in [true, false] {
            let mut args = vec!["evidence", "show", name];
            if json {
                args.push("--json");
            }
            let out = run(dir, &args);
            assert!(!out.status.success(), "{name}");
            assert!(out.stdout.is_empty(), "{name}: printed {:?}", out.stdout);
            assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
            assert!(!stderr(&out).contains("panicked"), "{name}: {}", stderr(&out));
        }
    }
}

#[test]
fn check_quote_json_names_each_check_and_the_pcr_values() {
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let nonce = "5c1f0b7a9e33d2c4a18f00e6b2a79d5513c8e4f06a2b9d7e1f3c5a7b9d0e2f41";
    let out = run(dir, &["tre", "quote", "--tcti", &swtpm.tcti(), "--nonce", nonce, "--out", "."]);
    assert!(out.status.success(), "{}", stderr(&out));
    let check = |nonce: &str| {
        run(
            dir,
            &[
                "pva",
                "check-quote",
                "--ak",
                "ak.pem",
                "--msg",
                "quote.msg",
                "--sig",
                "quote.sig",
                "--pcrs",
                "quote.pcrs",
                "--nonce",
                nonce,
                "--json",
            ],
        )
    };

    let out = check(nonce);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["valid"], true);
    assert!(doc.get("failed_check").is_none());
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 11);
    assert!(checks.iter().all(|c| c["result"] == "passed"), "{doc}");
    assert_eq!(doc["selection"], "sha256:0,1,2,3,4,5,6,7");
    assert_eq!(doc["quote"]["extra_data"], nonce);
    assert_eq!(doc["signature"]["scheme"], "ecdsa");
    let pcrs = doc["pcrs"].as_array().unwrap();
    assert_eq!(pcrs.len(), 8);
    for (i, pcr) in pcrs.iter().enumerate() {
        assert_eq!(pcr["bank"], "sha256");
        assert_eq!(pcr["index"], i as u64);
        assert_eq!(pcr["digest"].as_str().unwrap().len(), 64);
    }
    // swtpm's PCRs 0–7 are zero until something is measured into them.
    assert_eq!(pcrs[0]["digest"], "00".repeat(32));

    let out = check(&"00".repeat(32));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["failed_check"], "nonce");
    assert!(doc["error"].as_str().unwrap().contains("qualifying data is not the nonce"));
    let result = |name: &str| {
        doc["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).unwrap()["result"]
            .clone()
    };
    assert_eq!(result("signature"), "passed");
    assert_eq!(result("nonce"), "failed");
    assert_eq!(result("pcr-digest"), "not-run");
    assert_eq!(doc["pcrs"].as_array().unwrap().len(), 8);
}
