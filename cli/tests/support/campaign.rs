//! A lab's fleet through one campaign, as the fleet and scale-out tests run it: the campaign
//! created ready, every device's agent run to its end, each device switched.

use std::thread::JoinHandle;

use provisioning::mno::api::CampaignDevice;
use provisioning::pki::Role;
use tre::agent::{AgentState, Outcome};
use tresor::lab::{Lab, LabDevice};

/// Creates the campaign of `devices` from operator `from` to `to`; it must be ready.
pub async fn create(lab: &Lab, devices: &[LabDevice], from: &str, to: &str) -> String {
    let members: Vec<CampaignDevice> = devices
        .iter()
        .map(|d| CampaignDevice { device_id: d.device_id.clone(), iccid: d.iccid.clone() })
        .collect();
    let campaign = lab
        .create_campaign_between(
            Role::operator(from).unwrap(),
            Role::operator(to).unwrap(),
            members,
        )
        .await
        .unwrap();
    assert_eq!(campaign.state, "ready", "{:?}", campaign.failure);
    campaign.id
}

/// Waits for every agent and checks that each device switched; their outcomes.
pub async fn all_switched(
    devices: &[LabDevice],
    agents: Vec<JoinHandle<anyhow::Result<Outcome>>>,
) -> Vec<Outcome> {
    let outcomes = tokio::task::spawn_blocking(move || {
        agents.into_iter().map(|a| a.join().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    devices
        .iter()
        .zip(outcomes)
        .map(|(d, outcome)| match outcome {
            Ok(o) => {
                assert_eq!(o.state, AgentState::Switched, "{}: {o:?}", d.device_id);
                o
            }
            Err(e) => panic!("{}: {e:#}", d.device_id),
        })
        .collect()
}
