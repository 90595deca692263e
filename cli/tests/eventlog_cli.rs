//! `tresor eventlog` end to end: the real binary on real firmware logs, compared with
//! `tpm2_eventlog`, on malformed input, and on a device image; reference values from a
//! golden log, loaded by `tresor serve pva` and appraised against the log and a modified one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tresor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tresor")).args(args).output().unwrap()
}

fn logs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eventlogs")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tresor-eventlog-cli-{}-{name}", std::process::id()))
}

type Pcrs = BTreeMap<String, BTreeMap<u32, String>>;

/// The `pcrs:` section of `tpm2_eventlog FILE`.
fn tpm2_eventlog_pcrs(path: &Path) -> Pcrs {
    let out = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog (tpm2-tools) must be installed: `make deps`");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text.split("\npcrs:\n").nth(1).unwrap();
    let mut pcrs = Pcrs::new();
    let mut bank = String::new();
    for line in section.lines() {
        if let Some(name) = line
            .strip_prefix("  ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|n| !n.starts_with(' '))
        {
            bank = name.to_owned();
        } else if let Some((index, value)) = line.trim().split_once(':') {
            let value = value.trim().trim_start_matches("0x").to_owned();
            pcrs.entry(bank.clone()).or_default().insert(index.trim().parse().unwrap(), value);
        }
    }
    pcrs
}

/// `replay --json` output, checked to have exactly the keys `events` and `pcrs`.
fn json_pcrs(stdout: &[u8]) -> (u64, Pcrs) {
    let doc: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    let obj = doc.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["events", "pcrs"]);
    let events = obj["events"].as_u64().unwrap();
    let mut pcrs = Pcrs::new();
    for (bank, values) in obj["pcrs"].as_object().unwrap() {
        for (index, value) in values.as_object().unwrap() {
            pcrs.entry(bank.clone())
                .or_default()
                .insert(index.parse().unwrap(), value.as_str().unwrap().to_owned());
        }
    }
    (events, pcrs)
}

#[test]
fn replay_json_matches_tpm2_eventlog_on_real_logs() {
    for (name, events) in [
        ("event-gce-ubuntu-2104-log.bin", 111),
        ("event-uefi-sha1-log.bin", 17),
        ("event-uefiaction.bin", 1),
    ] {
        let path = logs_dir().join(name);
        let out = tresor(&["eventlog", "replay", path.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let (n, pcrs) = json_pcrs(&out.stdout);
        assert_eq!(n, events, "{name}");
        assert_eq!(pcrs, tpm2_eventlog_pcrs(&path), "{name}");
    }
}

#[test]
fn replay_json_lists_pcrs_in_numeric_order() {
    let path = logs_dir().join("event-bootorder.bin");
    let out = tresor(&["eventlog", "replay", path.to_str().unwrap(), "--json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let sha256 = text.split("\"sha256\":").nth(1).unwrap();
    let keys: Vec<u32> = sha256
        .split(',')
        .filter_map(|kv| kv.trim_start_matches('{').split(':').next())
        .map_while(|k| k.trim_matches('"').parse().ok())
        .collect();
    assert_eq!(keys, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn replay_prints_banks_and_pcrs() {
    let path = logs_dir().join("event-uefiaction.bin");
    let out = tresor(&["eventlog", "replay", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("crypto-agile (Spec ID Event03) log, 1 event\n"), "{text}");
    assert!(text.contains("sha1:\n   4: ee01a03529a6b38b5ded18ab6ae8d771aaac1925\n"), "{text}");
    assert!(text.contains("sha384: declared, no PCR measured"), "{text}");
}

#[test]
fn malformed_logs_fail_with_the_offset() {
    let bytes = std::fs::read(logs_dir().join("event.bin")).unwrap();
    let truncated = temp("truncated.bin");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let out = tresor(&["eventlog", "replay", truncated.to_str().unwrap()]);
    std::fs::remove_file(&truncated).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(
            "malformed event log: truncated at offset 91: digest needs 20 bytes, only 9 left"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = tresor(&["eventlog", "replay", "/nonexistent/log.bin"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read /nonexistent/log.bin"));
}

#[test]
fn measure_writes_a_log_that_replays_to_the_prediction() {
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image");
    let log = temp("image.bin");
    let out = tresor(&[
        "eventlog",
        "measure",
        "--image",
        image.to_str().unwrap(),
        "--bank",
        "sha256",
        "--bank",
        "sha384",
        "--out",
        log.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (events, predicted) = json_pcrs(&out.stdout);
    assert_eq!(events, 10);
    let replay = tresor(&["eventlog", "replay", log.to_str().unwrap(), "--json"]);
    let oracle = tpm2_eventlog_pcrs(&log);
    std::fs::remove_file(&log).unwrap();
    assert_eq!(json_pcrs(&replay.stdout), (10, predicted.clone()));
    assert_eq!(predicted, oracle);
    assert_eq!(predicted["sha256"].keys().copied().collect::<Vec<_>>(), [0, 2, 4, 8, 9]);
}

/// Reference values from tpm2-tss's H-CRTM log of a real machine (SHA-1, SHA-256, SM3_256):
/// `tresor serve pva` starts with them as its policy; the log's event-log appraisal (the
/// PVA's `appraisal::evaluate_event_log`, since no swtpm can quote a foreign log) passes,
/// and a log with one boot application changed fails.
#[test]
fn refvalues_from_a_golden_log_serve_in_the_pva_and_catch_a_changed_boot() {
    use protocol::eventlog::{EventLog, EventType};
    use protocol::tpm::HashAlg;
    use verifier::AppraisalError;
    use verifier::appraisal::evaluate_event_log;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::prepare(d);
    let log_path = logs_dir().join("tpm2-tss/binary_measurements_hcrtm.bin");
    let golden_path = d.join("golden.toml");
    let out = tresor(&[
        "eventlog",
        "refvalues",
        log_path.to_str().unwrap(),
        "--out",
        golden_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("reference values \"eventlog-binary_measurements_hcrtm\" written to"));
    let text = std::fs::read_to_string(&golden_path).unwrap();
    // Without --out the same text goes to standard output.
    let stdout = tresor(&["eventlog", "refvalues", log_path.to_str().unwrap()]);
    assert_eq!(String::from_utf8(stdout.stdout).unwrap(), text);
    assert!(text.contains("banks = [\"sha256\", \"sm3_256\"]"), "{text}");
    assert!(text.contains("\"0\" = \"15f4e6ca457d1af6bc49511a93ba3500ad69acc5\""));

    // The PVA starts with it as its only policy.
    support::edit(
        &d.join("pva.toml"),
        &[
            ("127.0.0.1:8440", "127.0.0.1:0"),
            ("policies = [\"reference-values.toml\"]", "policies = [\"golden.toml\"]"),
        ],
    );
    let (pva, url) = support::serve(d, "pva", "pva", "pva.toml");
    assert!(url.starts_with("https://"), "{url}");
    drop(pva);

    let refs = verifier::ReferenceValues::load(&golden_path).unwrap();
    let golden = EventLog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
    assert_eq!(evaluate_event_log(&golden, &refs).unwrap(), []);
    let mut measurements = golden.measurements();
    let app = measurements
        .iter_mut()
        .find(|m| m.event_type == EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
        .unwrap();
    for d in &mut app.digests {
        d.value[0] ^= 0x80;
    }
    let changed = EventLog::from_measurements(&golden.banks(), &measurements).unwrap();
    let failures = evaluate_event_log(&changed, &refs).unwrap();
    assert!(
        failures.iter().any(|f| matches!(
            f,
            AppraisalError::EventNotInReferenceValues {
                pcr: 4,
                event_type: EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
                ..
            }
        )),
        "{failures:?}"
    );
    assert!(
        failures.contains(&AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 4 })
    );
}

#[test]
fn refvalues_of_a_malformed_log_fail_with_the_reason() {
    let bytes = std::fs::read(logs_dir().join("event.bin")).unwrap();
    let truncated = temp("refvalues-truncated.bin");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let out = tresor(&["eventlog", "refvalues", truncated.to_str().unwrap()]);
    std::fs::remove_file(&truncated).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("malformed event log: truncated at offset 91"), "{err}");
    assert!(out.stdout.is_empty());
    let out = tresor(&[
        "eventlog",
        "refvalues",
        logs_dir().join("event.bin").to_str().unwrap(),
        "--id",
        "not an id",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot derive reference values"));
}
