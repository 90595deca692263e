//! The failure paths of the subscription change, end to end (issue 6): a device running a
//! tampered component, an install that fails on the card, and an IMSI list that does not
//! come from the campaign's new operator. In each, the device keeps a working MNO-A
//! subscription with its USIM active, and both operators learn what happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use protocol::milenage::{Autn, Rand};
use protocol::{Iccid, Imsi, SubscriptionProfile};
use provisioning::pki::Role;
use tre::agent::{Agent, AgentState, Outcome, Uicc};
use tre::attester::{Attester, AttesterOptions};
use tre::tpm::{KeyAlg, Tpm};
use tresor::lab::{Lab, LabDevice, run_agent};
use uicc::auth::Outcome as AkaOutcome;
use uicc::{Card, Change, ChangeRef, FallBack, Phase, UiccError};

fn image() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

async fn join(agent: std::thread::JoinHandle<anyhow::Result<Outcome>>) -> Outcome {
    tokio::task::spawn_blocking(move || agent.join().unwrap()).await.unwrap().unwrap()
}

/// The operator's view of a device of a campaign (GET /v1/campaigns/{id}, as the RO).
async fn operator_view(lab: &Lab, base: &str, campaign: &str) -> serde_json::Value {
    let client = lab.pki.client(Role::Ro).unwrap();
    let response = client.get(format!("{base}/v1/campaigns/{campaign}")).send().await.unwrap();
    transport::client::json(response).await.unwrap()
}

fn assert_kept_mno_a(outcome: &Outcome, device: &LabDevice) {
    assert_eq!(outcome.state, AgentState::RolledBack, "{outcome:?}");
    assert!(outcome.usim_active && !outcome.tre_active, "{outcome:?}");
    assert_eq!(outcome.imsi, device.imsi.to_string(), "still the MNO-A IMSI");
    // and the card on disk agrees (a restarted device comes up the same)
    let card = Card::open(&device.card).unwrap();
    assert!(card.usim_active() && !card.tre_active());
    assert_eq!(card.imsi(), &device.imsi);
}

async fn assert_failure_reported(lab: &Lab, campaign: &str) {
    for base in [&lab.urls.mno_a, &lab.urls.mno_b] {
        let view = operator_view(lab, base, campaign).await;
        for device in view["devices"].as_array().unwrap() {
            assert_eq!(device["report"], "failure", "{base}: {view}");
        }
    }
    // MNO-A did not retire the old IMSI
    let client = lab.pki.client(Role::Ro).unwrap();
    let view = operator_view(lab, &lab.urls.mno_a, campaign).await;
    let imsi = view["devices"][0]["old_imsi"].as_str().unwrap().to_owned();
    let response =
        client.get(format!("{}/v1/subscribers/{imsi}", lab.urls.mno_a)).send().await.unwrap();
    let subscriber: serde_json::Value = transport::client::json(response).await.unwrap();
    assert_eq!(subscriber["status"], "active", "{subscriber}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_component_gets_no_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &image()).await.unwrap();
    let device = lab.manufacture(0, KeyAlg::Ecc).unwrap();
    let campaign = lab.create_campaign(&[&device]).await.unwrap();
    let config = lab.agent_config(&device, Duration::from_secs(60)).unwrap();
    let outcome = join(run_agent(
        &device,
        &tresor::lab::write_tampered_image(&dir.path().join("tampered-image")).unwrap(),
        config,
    ))
    .await;
    assert_kept_mno_a(&outcome, &device);

    let status = lab.campaign(&campaign.id).await.unwrap();
    let row = &status.devices[0];
    assert_eq!(row.state, "rolled-back");
    let failure = row.failure.as_deref().unwrap();
    assert!(failure.contains("contraindicated"), "{failure}");
    assert!(failure.contains("event-not-in-reference-values"), "the named check: {failure}");
    assert!(!device.dir.join("bundle.cose").exists(), "no bundle was released");
    assert_failure_reported(&lab, &campaign.id).await;
    lab.stop().await;
}

/// A real card whose profile install fails the way a card's write can fail; everything
/// else is the card's own behaviour (its atomic store is tested step by step in `uicc`).
struct FailingInstall(Card);

impl Uicc for FailingInstall {
    fn ota(&mut self, apdu: &[u8]) -> Result<Vec<u8>, UiccError> {
        self.0.ota(apdu)
    }
    fn tre_activation(&self) -> Option<uicc::TreActivation> {
        self.0.tre_activation().cloned()
    }
    fn install_on_trial(
        &mut self,
        _profile: SubscriptionProfile,
        _change: ChangeRef,
    ) -> Result<(), UiccError> {
        let source = std::io::Error::other("EF write failed (injected)");
        Err(UiccError::Persist { step: uicc::WriteStep::Write, source })
    }
    fn commit_change(&mut self, campaign: &str, sequence: u64) -> Result<Phase, UiccError> {
        self.0.commit_change(campaign, sequence)
    }
    fn fall_back(&mut self, reason: &str) -> Result<FallBack, UiccError> {
        self.0.fall_back(reason)
    }
    fn change(&self) -> Option<Change> {
        self.0.change().cloned()
    }
    fn fallback_due(&self, now: u64) -> bool {
        self.0.fallback_due(now)
    }
    fn run_aka(&mut self, rand: &Rand, autn: &Autn) -> AkaOutcome {
        self.0.run_aka(rand, autn)
    }
    fn usim_active(&self) -> bool {
        self.0.usim_active()
    }
    fn tre_active(&self) -> bool {
        self.0.tre_active()
    }
    fn iccid(&self) -> Iccid {
        self.0.iccid().clone()
    }
    fn imsi(&self) -> Imsi {
        self.0.imsi().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_failing_on_the_card_falls_back_to_mno_a() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &image()).await.unwrap();
    let device = lab.manufacture(0, KeyAlg::Ecc).unwrap();
    let campaign = lab.create_campaign(&[&device]).await.unwrap();
    let config = lab.agent_config(&device, Duration::from_secs(60)).unwrap();
    let (tcti, card, image) = (device.swtpm.tcti(), device.card.clone(), image());
    let agent = std::thread::spawn(move || -> anyhow::Result<Outcome> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let attester = Attester::boot(Tpm::connect(&tcti)?, &image, AttesterOptions::default())?;
        let mut agent = Agent::new(attester, FailingInstall(Card::open(&card)?), config)?;
        Ok(runtime.block_on(agent.run())?)
    });
    let outcome = join(agent).await;
    assert_kept_mno_a(&outcome, &device);
    let status = lab.campaign(&campaign.id).await.unwrap();
    let row = &status.devices[0];
    assert_eq!(row.failed_step, Some(11), "{row:?}");
    assert!(row.failure.as_deref().unwrap().contains("injected"), "{row:?}");
    assert_failure_reported(&lab, &campaign.id).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imsi_list_not_from_the_new_operator_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &image()).await.unwrap();
    let device = lab.manufacture(0, KeyAlg::Ecc).unwrap();
    let campaign = lab.create_campaign(&[&device]).await.unwrap();
    // The RO, the PVA and MNO-A itself each try to hand MNO-A an IMSI list.
    let list = provisioning::mno::api::ImsiList {
        entries: vec![provisioning::mno::api::ImsiListEntry {
            device_id: device.device_id.clone(),
            iccid: device.iccid.clone(),
            imsi: "001099999999999".parse().unwrap(),
        }],
    };
    let body = provisioning::mno::api::to_cbor(&list).unwrap();
    for role in [Role::Ro, Role::Pva, Role::mno_a()] {
        let client = lab.pki.client(role.clone()).unwrap();
        let response = client
            .post(format!("{}/v1/campaigns/{}/imsi-list", lab.urls.mno_a, campaign.id))
            .header("content-type", "application/cbor")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{role}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert!(problem["type"].as_str().unwrap().contains("imsi-list-sender"), "{problem}");
    }
    // MNO-A still holds the list MNO-B sent, not the forged IMSI
    let view = operator_view(&lab, &lab.urls.mno_a, &campaign.id).await;
    assert!(view["devices"][0]["new_imsi"].as_str().unwrap().starts_with("00102"), "{view}");
    lab.stop().await;
}
