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
    // A mixed fleet: the default ECC P-256 EK and AK, and the RSA 2048 EK most real TPMs
    // carry, with an RSA AK (credential activation with RSA-OAEP, RSASSA quotes and receipt).
    let devices: Vec<_> = [KeyAlg::Ecc, KeyAlg::Rsa]
        .into_iter()
        .enumerate()
        .map(|(i, alg)| lab.manufacture(i, alg).unwrap())
        .collect();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_moves_to_mno_b_and_back_to_mno_a() {
    use provisioning::mno::api::CampaignDevice;
    use provisioning::pki::Role;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &image()).await.unwrap();
    let device = lab.manufacture(0, KeyAlg::Ecc).unwrap();
    lab.create_campaign(&[&device]).await.unwrap();
    let config = || lab.agent_config(&device, Duration::from_secs(60)).unwrap();
    let join = |agent: std::thread::JoinHandle<anyhow::Result<tre::agent::Outcome>>| {
        tokio::task::spawn_blocking(move || agent.join().unwrap().unwrap())
    };
    let first = join(run_agent(&device, &image(), config())).await.unwrap();
    assert_eq!(first.state, AgentState::Switched);
    assert!(first.imsi.starts_with("00102"));

    // The device reboots (a fresh measured boot) and a second campaign takes it back.
    device.swtpm.power_cycle().unwrap();
    let back = lab
        .create_campaign_between(
            Role::mno_b(),
            Role::mno_a(),
            vec![CampaignDevice {
                device_id: device.device_id.clone(),
                iccid: first.iccid.parse().unwrap(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(back.state, "ready", "{back:?}");
    let second = join(run_agent(&device, &image(), config())).await.unwrap();
    let status = lab.campaign(&back.id).await.unwrap();
    assert_eq!(second.state, AgentState::Switched, "{status:#?}");
    assert!(second.imsi.starts_with("00101"), "an MNO-A IMSI again: {}", second.imsi);
    assert_ne!(second.imsi, device.imsi.to_string(), "a new subscription, not the retired one");
    assert!(second.usim_active && !second.tre_active);
    lab.stop().await;
}

/// Any number of operators, by any name: a device goes round three (the third named unlike
/// the lab's defaults) and comes back to the first, each hop a new subscription AKA-checked
/// by its operator; a campaign naming an operator the RO does not know is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_goes_round_three_operators_and_back() {
    use provisioning::mno::api::CampaignDevice;
    use provisioning::pki::Role;
    use tresor::lab::LabOptions;
    let dir = tempfile::tempdir().unwrap();
    let names = ["mno-a", "mno-b", "acme-mobile"].map(String::from).to_vec();
    let options = LabOptions { operators: names.clone(), ..LabOptions::default() };
    let lab = Lab::start_with(dir.path(), &image(), &options).await.unwrap();
    let device = lab.manufacture(0, KeyAlg::Ecc).unwrap();
    let config = || lab.agent_config(&device, Duration::from_secs(60)).unwrap();
    let join = |agent: std::thread::JoinHandle<anyhow::Result<tre::agent::Outcome>>| {
        tokio::task::spawn_blocking(move || agent.join().unwrap().unwrap())
    };

    let unknown = lab
        .create_campaign_between(
            Role::mno_a(),
            Role::operator("mno-z").unwrap(),
            vec![CampaignDevice {
                device_id: device.device_id.clone(),
                iccid: device.iccid.clone(),
            }],
        )
        .await;
    assert!(unknown.is_err(), "a campaign to an unknown operator: {unknown:?}");

    let mut iccid = device.iccid.clone();
    let mut imsis = vec![device.imsi.to_string()];
    // MNC of each operator: the lab numbers them 01, 02, 03.
    for (hop, (from, to, mnc)) in
        [("mno-a", "mno-b", "02"), ("mno-b", "acme-mobile", "03"), ("acme-mobile", "mno-a", "01")]
            .into_iter()
            .enumerate()
    {
        if hop > 0 {
            device.swtpm.power_cycle().unwrap();
        }
        let campaign = lab
            .create_campaign_between(
                Role::operator(from).unwrap(),
                Role::operator(to).unwrap(),
                vec![CampaignDevice { device_id: device.device_id.clone(), iccid: iccid.clone() }],
            )
            .await
            .unwrap();
        assert_eq!(campaign.state, "ready", "{from} → {to}: {campaign:?}");
        let outcome = join(run_agent(&device, &image(), config())).await.unwrap();
        let status = lab.campaign(&campaign.id).await.unwrap();
        assert_eq!(outcome.state, AgentState::Switched, "{from} → {to}: {status:#?}");
        assert!(outcome.imsi.starts_with(&format!("001{mnc}")), "{to}: {}", outcome.imsi);
        assert!(!imsis.contains(&outcome.imsi), "a new subscription each hop: {imsis:?}");
        assert!(outcome.usim_active && !outcome.tre_active);
        imsis.push(outcome.imsi.clone());
        iccid = outcome.iccid.parse().unwrap();
    }
    lab.stop().await;
}
