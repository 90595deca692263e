//! Secret hygiene of the whole system (issue 7, "Secret hygiene"): several devices switch
//! from MNO-A to MNO-B (and one tampered device is refused and rolls back), with every log
//! line captured at TRACE level; then every K, OPc, KIc and KID issued — MNO-A's profiles,
//! read from the cards before the campaign, and MNO-B's, read from the cards after it — is
//! searched for, as raw bytes and as lowercase and uppercase hex, in every log line, every
//! error, every report and JSON output, every SQLite file of every role (main, -wal, -shm)
//! and every other file of the deployment's directory. The cards' state files are the only
//! place they may appear; the operators' stores hold them only encrypted.
//!
//! The first test runs the deployment in this process (`tresor::lab`), so that the MNO-A
//! profiles can be read before they are replaced; the second runs `tresor demo --keep DIR
//! --json FILE` with `RUST_LOG=trace` and searches its output for the MNO-B profiles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::SubscriptionProfile;
use provisioning::pki::Role;
use tre::tpm::KeyAlg;
use tresor::lab::{Lab, run_agent, write_sample_image, write_tampered_image};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A secret in every form it could leak in: (what, bytes).
fn forms(label: &str, profile: &SubscriptionProfile) -> Vec<(String, Vec<u8>)> {
    let raw = [
        ("K", profile.k.expose().to_vec()),
        ("OPc", profile.opc.expose().to_vec()),
        ("KIc", profile.ota.kic.expose().to_vec()),
        ("KID", profile.ota.kid.expose().to_vec()),
    ];
    let mut out = Vec::new();
    for (name, bytes) in raw {
        let what = format!("{name} of {label} profile {}", profile.imsi);
        out.push((format!("{what} (hex)"), hex::encode(&bytes).into_bytes()));
        out.push((format!("{what} (HEX)"), hex::encode_upper(&bytes).into_bytes()));
        out.push((format!("{what} (raw)"), bytes));
    }
    out
}

fn profile_of(card: &Path) -> SubscriptionProfile {
    uicc::state::State::load(card).unwrap().profile
}

/// Every file under `dir` but the cards' state files, with its contents.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "uicc.json") {
                // A file may vanish between listing and reading (a WAL checkpoint).
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no secret of `secrets` appears in any of `places`.
fn assert_nowhere(secrets: &[(String, Vec<u8>)], places: &[(String, Vec<u8>)]) {
    for (what, needle) in secrets {
        for (place, bytes) in places {
            assert!(!contains(bytes, needle), "{what} found in {place}");
        }
    }
}

fn named_files(dir: &Path, when: &str) -> Vec<(String, Vec<u8>)> {
    files(dir).into_iter().map(|(p, b)| (format!("{} ({when})", p.display()), b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_issued_secret_leaves_the_cards_or_the_operators_encrypted_stores() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("lab");
    let image = write_sample_image(&scratch.path().join("image")).unwrap();
    let bad_image = write_tampered_image(&scratch.path().join("tampered-image")).unwrap();
    let lab = Lab::start(&dir, &image).await.unwrap();
    let devices: Vec<_> = (0..4).map(|i| lab.manufacture(i, KeyAlg::Ecc).unwrap()).collect();
    let mut secrets = Vec::new();
    for d in &devices {
        secrets.extend(forms("MNO-A", &profile_of(&d.card)));
    }
    let campaign = lab.create_campaign(&devices.iter().collect::<Vec<_>>()).await.unwrap();
    let agents: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let config = lab.agent_config(d, Duration::from_secs(60)).unwrap();
            run_agent(d, if i == 3 { &bad_image } else { &image }, config)
        })
        .collect();
    let outcomes: Vec<_> = tokio::task::spawn_blocking(move || {
        agents.into_iter().map(|a| a.join().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // Everything the deployment said: the RO's report, the operators' views, the outcomes.
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let status = lab.campaign(&campaign.id).await.unwrap();
    assert_eq!(status.summary.switched, 3, "{status:#?}");
    assert_eq!(status.summary.failed, 1, "{status:#?}");
    outputs.push(("the RO's campaign report".into(), serde_json::to_vec(&status).unwrap()));
    let ro = lab.pki.client(Role::Ro).unwrap();
    let mut imsis = Vec::new();
    for (name, base) in [("MNO-A", &lab.urls.mno_a), ("MNO-B", &lab.urls.mno_b)] {
        let view = ro.get(format!("{base}/v1/campaigns/{}", campaign.id)).send().await.unwrap();
        let view: serde_json::Value = transport::client::json(view).await.unwrap();
        for device in view["devices"].as_array().unwrap() {
            for key in ["old_imsi", "new_imsi"] {
                if let Some(imsi) = device[key].as_str() {
                    imsis.push((base.clone(), imsi.to_owned()));
                }
            }
        }
        outputs.push((format!("{name}'s campaign view"), serde_json::to_vec(&view).unwrap()));
    }
    for (base, imsi) in imsis {
        let response = ro.get(format!("{base}/v1/subscribers/{imsi}")).send().await.unwrap();
        outputs.push((format!("subscriber {imsi}"), response.bytes().await.unwrap().to_vec()));
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        let text = match outcome {
            Ok(o) => format!("{o:?}"),
            Err(e) => format!("{e:#} / {e:?}"),
        };
        outputs.push((format!("outcome of device {i}"), text.into_bytes()));
    }
    for (i, d) in devices.iter().enumerate().take(3) {
        let new = profile_of(&d.card);
        assert_ne!(new.imsi, d.imsi, "device {i} switched");
        let card = std::fs::read(&d.card).unwrap();
        let new_forms = forms("MNO-B", &new);
        // The search finds what is there: the card holds its profile (as hex).
        assert!(contains(&card, &new_forms[0].1), "the card state holds K as hex");
        secrets.extend(new_forms);
    }
    assert_eq!(secrets.len(), (4 + 3) * 4 * 3);

    let running = named_files(&dir, "services running");
    lab.stop().await;
    drop(devices);
    let stopped = named_files(&dir, "services stopped");
    for role in ["pva/pva.sqlite", "ro/ro.sqlite", "mno-a/mno-a.sqlite", "mno-b/mno-b.sqlite"] {
        assert!(
            running.iter().chain(&stopped).any(|(p, _)| p.contains(role)),
            "{role} was searched"
        );
    }
    assert!(
        running.iter().any(|(p, _)| p.ends_with("-wal (services running)")),
        "WAL files were searched"
    );

    let logs = captured.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&logs);
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "logs were captured at TRACE level");
    assert!(
        text.contains("profile signed") && text.contains("event-not-in-reference-values"),
        "{text}"
    );
    let mut places = vec![("the logs".to_owned(), logs)];
    places.extend(outputs);
    places.extend(running);
    places.extend(stopped);
    assert!(places.len() > 100, "every file, output and log was searched");
    assert_nowhere(&secrets, &places);
}

#[test]
fn tresor_demo_writes_no_new_secret_to_its_output_logs_or_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let keep = scratch.path().join("demo");
    let json = scratch.path().join("demo.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tresor"))
        .args(["demo", "--devices", "2", "--keep"])
        .arg(&keep)
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG"), "verbose logs were captured");
    let mut secrets = Vec::new();
    for device in std::fs::read_dir(keep.join("devices")).unwrap() {
        secrets.extend(forms("MNO-B", &profile_of(&device.unwrap().path().join("uicc.json"))));
    }
    assert_eq!(secrets.len(), 2 * 4 * 3);
    let mut places = vec![
        ("stdout".to_owned(), output.stdout.clone()),
        ("stderr".to_owned(), output.stderr.clone()),
        ("the --json report".to_owned(), std::fs::read(&json).unwrap()),
    ];
    places.extend(named_files(&keep, "kept"));
    assert_nowhere(&secrets, &places);
}
