//! The subscription change end to end (DESIGN.md §2, steps 1–12): real swtpm devices, real
//! UICC emulators, PVA, RO, MNO-A and MNO-B on loopback HTTPS with mutual TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use tre::agent::AgentState;
use tre::tpm::KeyAlg;
use tresor::lab::{Lab, run_agent};

fn image() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_switch_from_mno_a_to_mno_b() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &image()).await.unwrap();
    let devices: Vec<_> = (0..2).map(|i| lab.manufacture(i, KeyAlg::Ecc).unwrap()).collect();
    let report = lab.create_campaign(&devices.iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(report.state, "ready", "{report:?}");

    let agents: Vec<_> = devices
        .iter()
        .map(|d| run_agent(d, &image(), lab.agent_config(d, Duration::from_secs(60)).unwrap()))
        .collect();
    let outcomes: Vec<_> = tokio::task::spawn_blocking(move || {
        agents.into_iter().map(|a| a.join().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let status = lab.campaign(&report.id).await.unwrap();
    for (device, outcome) in devices.iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|e| panic!("{e:#}\n{status:#?}"));
        assert_eq!(outcome.state, AgentState::Switched, "{status:#?}");
        assert!(outcome.usim_active && !outcome.tre_active);
        assert_ne!(outcome.imsi, device.imsi.to_string());
        assert!(outcome.imsi.starts_with("00102"), "new IMSI from MNO-B: {}", outcome.imsi);
    }
    assert_eq!(status.summary.switched, 2, "{status:#?}");
    lab.stop().await;
}
