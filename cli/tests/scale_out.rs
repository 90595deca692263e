//! Scale-out (issue 15) end to end: several PVA and RO instances on one PostgreSQL, started
//! by the test (a private server, `storage::pg_server`), as `tresor serve` processes over
//! real HTTPS.
//! - Two PVA processes share a database: a nonce one issued is accepted by the other, and
//!   the evidence replayed to either is refused (`tresor attest --appraise-at --replay-to`).
//! - A lab of two PVAs and two ROs behind round-robin fronts switches a fleet: every device
//!   switched, every instance served connections.
//! - The database down for a few seconds in the middle of a campaign is waited out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use storage::pg_server::{Durability, PgServer};
use support::{TRESOR, edit, prepare, serve};
use tre::tpm::KeyAlg;
use tresor::lab::{self, Backend, Lab, LabOptions, run_agent};

/// Waits until the campaign completed with every report acknowledged: `n` switched.
async fn completed(lab: &Lab, id: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let report = lab.campaign(id).await.unwrap();
        if report.state == "completed" && report.summary.reports_pending == 0 {
            assert_eq!((report.summary.switched, report.summary.failed), (n, 0));
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not finished: {:?}", report.summary);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn a_nonce_of_one_pva_instance_is_accepted_by_the_other_once() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    let (_swtpm, tcti, _device) = support::pinned::setup(dir);
    let postgres = PgServer::start_with(Durability::Fast).unwrap();
    let url = postgres.create_database("pva").unwrap();
    edit(&dir.join("pva.toml"), &[("database = \"pva.sqlite\"", &format!("database = \"{url}\""))]);
    let (_one, first) = serve(dir, "pva-1", "pva", "pva.toml");
    let (_two, second) = serve(dir, "pva-2", "pva", "pva.toml");

    let out = Command::new(TRESOR)
        .current_dir(dir)
        .args(["attest", "--tcti", &tcti, "--pva", &first, "--ca", "pki/ci.pem"])
        .args(["--client-cert", "pki/ro.pem", "--client-key", "pki/ro.key"])
        .args(["--policy", "swtpm-pinned", "--appraise-at", &second])
        .args(["--replay-to", &first, "--replay-to", &second, "--json"])
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "affirming", "{text}");
    assert_eq!(report["replays_refused"], serde_json::json!([first, second]), "{text}");

    // Enrolled at the first instance, known to the second: a second attestation starts there.
    let out = Command::new(TRESOR)
        .current_dir(dir)
        .args(["attest", "--tcti", &tcti, "--pva", &second, "--ca", "pki/ci.pem"])
        .args(["--policy", "swtpm-pinned", "--no-enrol", "--appraise-at", &first])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_switches_through_two_instances_of_each_role_behind_fronts() {
    let n = 20;
    let temp = tempfile::Builder::new().prefix("tresor-scale-out-").tempdir().unwrap();
    let image = lab::write_sample_image(&temp.path().join("image")).unwrap();
    let options = LabOptions {
        processes: Some(PathBuf::from(env!("CARGO_BIN_EXE_tresor"))),
        instances: 2,
        database: Backend::Postgres,
        ..LabOptions::default()
    };
    let lab = Lab::start_with(&temp.path().join("lab"), &image, &options).await.unwrap();
    let names: Vec<String> = lab.role_pids().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["pva-1", "pva-2", "mno-a", "mno-b", "ro-1", "ro-2"]);

    let devices = lab.manufacture_fleet(n, KeyAlg::Ecc, lab::manufacture_parallelism()).unwrap();
    let campaign = support::campaign::create(&lab, &devices, "mno-a", "mno-b").await;
    let agents: Vec<_> = devices
        .iter()
        .map(|d| run_agent(d, &image, lab.agent_config(d, Duration::from_secs(600)).unwrap()))
        .collect();
    support::campaign::all_switched(&devices, agents).await;
    completed(&lab, &campaign, n).await;
    let served = lab.instance_connections();
    assert_eq!(served.len(), 4, "{served:?}");
    assert!(served.iter().all(|(_, n)| *n > 0), "every instance served: {served:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_down_for_a_while_is_waited_out() {
    let temp = tempfile::Builder::new().prefix("tresor-db-down-").tempdir().unwrap();
    let image = lab::write_sample_image(&temp.path().join("image")).unwrap();
    let options = LabOptions { database: Backend::Postgres, ..LabOptions::default() };
    let mut lab = Lab::start_with(&temp.path().join("lab"), &image, &options).await.unwrap();
    let devices = lab.manufacture_fleet(4, KeyAlg::Ecc, 2).unwrap();
    let campaign = support::campaign::create(&lab, &devices, "mno-a", "mno-b").await;
    let agents: Vec<_> = devices
        .iter()
        .map(|d| run_agent(d, &image, lab.agent_config(d, Duration::from_secs(300)).unwrap()))
        .collect();
    // Down while the devices start their change (one takes about a second).
    tokio::time::sleep(Duration::from_millis(100)).await;
    lab.pause_database().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    lab.resume_database().unwrap();
    support::campaign::all_switched(&devices, agents).await;
    completed(&lab, &campaign, 4).await;
    lab.stop().await;
}
