//! Campaigns at the RO (docs/flow.md steps 1–3): an operator creates one for a set of devices;
//! the RO tells both operators, asks the new one to prepare (allocate IMSIs and send the list
//! to the old one), and then hands the devices their tasks. Status reports every device's
//! state and how long each of the twelve steps took.

use std::time::Instant;

use protocol::{DeviceId, Iccid};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::Ro;
use super::error::RoError;
use super::state::{DeviceState, step_name};
use crate::mno::api::{CampaignDevice, CampaignId, CampaignRequest};

/// `POST /v1/campaigns` (JSON): what the subscriber wants switched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// The old operator, e.g. `mno-a`.
    pub from: String,
    /// The new operator, e.g. `mno-b`.
    pub to: String,
    pub devices: Vec<CampaignDevice>,
}

/// `GET /v1/campaigns/{id}` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignReport {
    pub id: String,
    pub from: String,
    pub to: String,
    /// `preparing`, `ready` or `failed`.
    pub state: String,
    pub failure: Option<String>,
    pub devices: Vec<DeviceReport>,
    pub summary: Summary,
}

/// One device of [`CampaignReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub device_id: DeviceId,
    pub iccid: Iccid,
    pub state: String,
    /// The step that failed, and why.
    pub failed_step: Option<u8>,
    pub failure: Option<String>,
    pub reported: bool,
    pub steps: Vec<StepTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTime {
    pub step: u8,
    pub name: String,
    pub ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub switched: usize,
    pub failed: usize,
    pub in_progress: usize,
}

impl Ro {
    /// Creates a campaign and runs steps 2–3. `caller` is the operator whose certificate
    /// made the request; it must be one of the campaign's two operators.
    pub(crate) async fn create_campaign(
        &self,
        caller: &str,
        new: NewCampaign,
    ) -> Result<CampaignReport, RoError> {
        for name in [&new.from, &new.to] {
            self.peers.operator(name)?;
        }
        if caller != new.from && caller != new.to {
            return Err(RoError::Forbidden(format!(
                "{caller} is not an operator of this campaign"
            )));
        }
        let id = campaign_id()?;
        let request = CampaignRequest {
            id: id.clone(),
            from: new.from.clone(),
            to: new.to.clone(),
            devices: new.devices,
        };
        request.validate().map_err(|e| RoError::BadCampaign(e.to_string()))?;
        let devices: Vec<(DeviceId, Iccid)> =
            request.devices.iter().map(|d| (d.device_id.clone(), d.iccid.clone())).collect();
        self.store.create_campaign(id.as_str(), &request.from, &request.to, &devices)?;

        let outcome = self.prepare(&request).await;
        let recorded = outcome.as_ref().map(|t| *t).map_err(|e| e.to_string());
        self.store.finish_preparation(id.as_str(), recorded)?;
        self.wake.notify_waiters();
        outcome?;
        self.campaign_report(id.as_str())
    }

    /// Steps 2 and 3; returns their durations in milliseconds.
    async fn prepare(&self, request: &CampaignRequest) -> Result<(u64, u64), RoError> {
        let timer = Instant::now();
        self.peers.announce(&request.from, request).await?;
        self.peers.announce(&request.to, request).await?;
        let step2 = timer.elapsed().as_millis() as u64;
        let timer = Instant::now();
        let prepared = self.peers.prepare(&request.to, &request.id).await?;
        if prepared.entries.len() != request.devices.len() {
            return Err(RoError::PeerRefused {
                peer: request.to.clone(),
                status: 200,
                problem_type: "incomplete-imsi-list".into(),
                detail: format!(
                    "{} IMSIs for {} devices",
                    prepared.entries.len(),
                    request.devices.len()
                ),
            });
        }
        Ok((step2, timer.elapsed().as_millis() as u64))
    }

    /// Every device's state and step timings.
    pub(crate) fn campaign_report(&self, id: &str) -> Result<CampaignReport, RoError> {
        let campaign =
            self.store.campaign(id)?.ok_or_else(|| RoError::UnknownCampaign(id.to_owned()))?;
        let mut summary = Summary::default();
        let mut devices = Vec::new();
        for row in self.store.campaign_devices(id)? {
            let (failed_step, failure) = match &row.state {
                DeviceState::Failed { step, reason } | DeviceState::RolledBack { step, reason } => {
                    summary.failed += 1;
                    (Some(*step), Some(reason.clone()))
                }
                DeviceState::Switched => {
                    summary.switched += 1;
                    (None, None)
                }
                _ => {
                    summary.in_progress += 1;
                    (None, None)
                }
            };
            let mut steps: Vec<StepTime> = Vec::new();
            for (step, ms) in [(2u8, campaign.step2_ms), (3, campaign.step3_ms)] {
                if let Some(ms) = ms {
                    steps.push(StepTime { step, name: step_name(step).into(), ms });
                }
            }
            steps.extend(row.steps.iter().map(|(step, ms)| StepTime {
                step: *step,
                name: step_name(*step).into(),
                ms: *ms,
            }));
            devices.push(DeviceReport {
                device_id: row.device_id,
                iccid: row.iccid,
                state: row.state.name().into(),
                failed_step,
                failure,
                reported: row.reported,
                steps,
            });
        }
        Ok(CampaignReport {
            id: campaign.id,
            from: campaign.from,
            to: campaign.to,
            state: campaign.state,
            failure: campaign.failure,
            devices,
            summary,
        })
    }
}

/// A fresh campaign id: `c-` and 16 random hex digits.
fn campaign_id() -> Result<CampaignId, RoError> {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RoError::Store("no randomness".into()))?;
    format!("c-{}", hex::encode(bytes)).parse().map_err(|e: &str| RoError::Store(e.into()))
}
