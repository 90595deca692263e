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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ro_resumes_without_provisioning_a_device_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), &image()).await.unwrap();
    let devices: Vec<_> = (0..3).map(|i| lab.manufacture(i, KeyAlg::Ecc).unwrap()).collect();
    let report = lab.create_campaign(&devices.iter().collect::<Vec<_>>()).await.unwrap();
    let agents: Vec<_> = devices
        .iter()
        .map(|d| run_agent(d, &image(), lab.agent_config(d, Duration::from_secs(90)).unwrap()))
        .collect();
    // Restart as soon as the devices are under way, and once more a little later.
    for _ in 0..2 {
        loop {
            let status = lab.campaign(&report.id).await.unwrap();
            if status.devices.iter().any(|d| d.state != "pending") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lab.restart_ro().await.unwrap();
    }
    let outcomes: Vec<_> = tokio::task::spawn_blocking(move || {
        agents.into_iter().map(|a| a.join().unwrap().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let status = lab.campaign(&report.id).await.unwrap();
    assert_eq!(status.summary.switched, 3, "{status:#?}");
    // Each device got exactly one MNO-B subscription: the first three IMSIs of MNO-B's
    // range, once each.
    let mut imsis: Vec<_> = outcomes.iter().map(|o| o.imsi.clone()).collect();
    imsis.sort();
    assert_eq!(imsis, ["001020000000001", "001020000000002", "001020000000003"]);
    assert!(outcomes.iter().all(|o| o.state == AgentState::Switched && o.usim_active));
    lab.stop().await;
}
