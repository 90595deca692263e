//! Campaigns at the RO (docs/flow.md steps 1–3): an operator creates one for a set of
//! devices; the RO tells both operators, asks the new one to prepare (allocate IMSIs and
//! send the list to the old one), and then hands the devices their tasks.
//!
//! Creation is a persisted step machine: the campaign and its devices are stored first, and
//! each of the three creation steps (announce to `from`, announce to `to`, prepare at `to`)
//! is recorded once its operator acknowledged it. Every step is idempotent at the operator
//! (the campaign id is the key), so a creation interrupted by a crash is resumed by the
//! restarted RO, and one interrupted by a peer that is down is retried with backoff until
//! its deadline; then the campaign fails and its devices are released at both operators by
//! their final reports. `cancel` ends a campaign at any point before a device's commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{DeviceId, Iccid};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::Ro;
use super::error::RoError;
use super::events::Event;
use super::outbox::{backoff, final_reports};
use super::state::{DeviceState, step_name};
use super::store::{CampaignQuery, CampaignRow, Created, DeviceRow, Idempotency, now_ms};
use crate::mno::api::{CampaignDevice, CampaignId, CampaignRequest};

/// How long `POST /v1/campaigns` waits for the creation before it answers `preparing`.
const CREATE_WAIT: Duration = Duration::from_secs(20);

/// `POST /v1/campaigns` (JSON): what the subscriber wants switched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// The old operator, e.g. `mno-a`.
    pub from: String,
    /// The new operator, e.g. `mno-b`.
    pub to: String,
    pub devices: Vec<CampaignDevice>,
}

/// `GET /v1/campaigns/{id}` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignReport {
    pub id: String,
    pub from: String,
    pub to: String,
    /// `preparing`, `ready`, `completed` (every device final), `failed` (creation did not
    /// complete), `cancelling` or `cancelled`.
    pub state: String,
    pub failure: Option<String>,
    pub devices: Vec<DeviceReport>,
    pub summary: Summary,
}

/// One campaign in `GET /v1/campaigns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignSummary {
    pub id: String,
    pub from: String,
    pub to: String,
    pub state: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Its devices counted by state (`pending`, …, `switched`, `rolled-back`).
    pub devices: BTreeMap<String, u32>,
}

/// `GET /v1/campaigns?state=&operator=&limit=&after=` (JSON): oldest first; `next` is the
/// `after` of the next page, absent on the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignSummary>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}

/// Largest page of `GET /v1/campaigns`, and its default.
pub const MAX_PAGE: usize = 500;
pub const DEFAULT_PAGE: usize = 100;

/// One device of [`CampaignReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceReport {
    pub device_id: DeviceId,
    pub iccid: Iccid,
    pub state: String,
    /// The step that failed, and why (rolled back or aborting), or why the device is
    /// reconciling.
    pub failed_step: Option<u8>,
    pub failure: Option<String>,
    /// What the current step is waiting for: a peer's transient failure being retried.
    pub waiting: Option<String>,
    /// Both operators acknowledged the device's final report.
    pub reported: bool,
    /// A report an operator refused for good, with its reason.
    pub report_refused: Vec<String>,
    pub steps: Vec<StepTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepTime {
    pub step: u8,
    pub name: String,
    pub ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub switched: usize,
    /// Rolled back: the device runs its old profile.
    pub failed: usize,
    pub in_progress: usize,
    /// Devices whose answer contradicted the protocol: they need a person.
    pub reconciling: usize,
    /// Final reports not yet acknowledged by an operator.
    pub reports_pending: usize,
}

impl Ro {
    /// Creates a campaign and runs steps 2–3. `caller` is the operator whose certificate
    /// made the request; it must be one of the campaign's two operators. Answers once the
    /// campaign is ready or failed, or with state `preparing` if a peer keeps it waiting;
    /// the creation goes on in the background either way.
    pub(crate) async fn create_campaign(
        self: &Arc<Self>,
        caller: &str,
        new: NewCampaign,
        idempotency_key: Option<&str>,
    ) -> Result<CampaignReport, RoError> {
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(RoError::BadCampaign(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
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
        let request_sha256 = ring::digest::digest(
            &ring::digest::SHA256,
            &serde_json::to_vec(&(&request.from, &request.to, &request.devices))
                .map_err(|e| RoError::Decode(e.to_string()))?,
        );
        let idempotency = idempotency_key.map(|key| Idempotency {
            caller,
            key,
            request_sha256: request_sha256.as_ref(),
        });
        let created = self.store.create_campaign(
            id.as_str(),
            &request.from,
            &request.to,
            &devices,
            idempotency,
        )?;
        if let Created::Earlier(earlier) = created {
            tracing::info!(campaign = %earlier, by = caller, "campaign request repeated with its Idempotency-Key");
            return self.campaign_report(&earlier);
        }
        tracing::info!(campaign = %id, from = %request.from, to = %request.to, devices = devices.len(), "campaign created");
        let driver = tokio::spawn(Arc::clone(self).drive_creation(id.to_string()));
        let _ = tokio::time::timeout(CREATE_WAIT, driver).await;
        self.campaign_report(id.as_str())
    }

    /// Resumes the creation of every campaign a previous run left preparing (or cancelled
    /// while preparing), and completes the campaigns whose last device finished just
    /// before the crash.
    ///
    /// Instances sharing a store call it again now and then (`run_outbox`): a campaign whose
    /// creating instance died is taken over once that instance's lease lapsed.
    pub(crate) fn resume_creations(self: &Arc<Self>) -> Result<(), RoError> {
        let cancelled_early =
            self.store.campaigns_in("cancelling")?.into_iter().filter(|c| c.prep_step < 3);
        for campaign in self.store.campaigns_in("preparing")?.into_iter().chain(cancelled_early) {
            if self.driving.lock().unwrap_or_else(|p| p.into_inner()).contains(&campaign.id) {
                continue;
            }
            tracing::debug!(campaign = %campaign.id, step = campaign.prep_step, "resuming creation");
            tokio::spawn(Arc::clone(self).drive_creation(campaign.id));
        }
        self.campaigns_progress()
    }

    /// The creation step machine of one campaign, until it is ready, failed or cancelled.
    async fn drive_creation(self: Arc<Self>, id: String) {
        if !self.claim(&id) {
            return;
        }
        let mut attempts = 0u32;
        loop {
            // Renewed at every step: another instance takes the creation over only if this
            // one stops driving it.
            if !matches!(self.lease_campaign(&id), Ok(true)) {
                tracing::warn!(campaign = %id, "lost the lease on the campaign's creation");
                self.driving.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                return;
            }
            let campaign = match self.store.campaign(&id) {
                Ok(Some(c)) if c.state == "preparing" => c,
                Ok(Some(c)) if c.state == "cancelling" && c.prep_step < 3 => {
                    self.end_unprepared(&c, "cancelled", "campaign cancelled").await;
                    break;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(campaign = %id, error = %e, "cannot read the campaign");
                    tokio::time::sleep(backoff(attempts)).await;
                    attempts = attempts.saturating_add(1);
                    continue;
                }
            };
            let timer = Instant::now();
            let step = campaign.prep_step;
            match self.creation_step(&campaign, step).await {
                Ok(()) => {
                    let ms = Some(timer.elapsed().as_millis() as u64);
                    let (step2, step3) = if step < 2 { (ms, None) } else { (None, ms) };
                    // Step 2's time is the sum of its two announcements.
                    let step2 = step2.map(|ms| ms + campaign.step2_ms.unwrap_or(0));
                    if let Err(e) = self.store.prepared_step(&id, step + 1, step2, step3) {
                        tracing::warn!(campaign = %id, error = %e, "cannot record a creation step");
                        tokio::time::sleep(backoff(attempts)).await;
                        attempts = attempts.saturating_add(1);
                        continue;
                    }
                    attempts = 0;
                    if step + 1 >= 3 {
                        tracing::info!(campaign = %id, "campaign ready");
                        self.wake.notify_waiters();
                        break;
                    }
                }
                Err(e) if e.is_transient() && !self.past_deadline(campaign.created_ms) => {
                    tracing::warn!(campaign = %id, step, error = %e, attempts, "creation step failed; will retry");
                    tokio::time::sleep(backoff(attempts)).await;
                    attempts = attempts.saturating_add(1);
                }
                Err(e) => {
                    tracing::warn!(campaign = %id, step, error = %e, "campaign creation failed");
                    self.end_unprepared(&campaign, "failed", &e.to_string()).await;
                    break;
                }
            }
        }
        self.release_claim(&id);
    }

    /// Creation step `step`: 0 and 1 announce the campaign to its old and new operator, 2
    /// asks the new one to prepare. Each is idempotent at the operator.
    async fn creation_step(&self, campaign: &CampaignRow, step: u8) -> Result<(), RoError> {
        let request = self.campaign_request(campaign)?;
        match step {
            0 => self.peers.announce(&campaign.from, &request).await,
            1 => self.peers.announce(&campaign.to, &request).await,
            _ => {
                let prepared = self.peers.prepare(&campaign.to, &request.id).await?;
                if prepared.entries.len() == request.devices.len() {
                    Ok(())
                } else {
                    Err(RoError::PeerRefused {
                        peer: campaign.to.clone(),
                        status: 200,
                        problem_type: "incomplete-imsi-list".into(),
                        detail: format!(
                            "{} IMSIs for {} devices",
                            prepared.entries.len(),
                            request.devices.len()
                        ),
                    })
                }
            }
        }
    }

    /// The campaign as the operators were told it, rebuilt from the store.
    fn campaign_request(&self, campaign: &CampaignRow) -> Result<CampaignRequest, RoError> {
        let devices = self
            .store
            .campaign_devices(&campaign.id)?
            .into_iter()
            .map(|d| CampaignDevice { device_id: d.device_id, iccid: d.iccid })
            .collect();
        Ok(CampaignRequest {
            id: campaign.id.parse().map_err(|e: &str| RoError::Store(e.into()))?,
            from: campaign.from.clone(),
            to: campaign.to.clone(),
            devices,
        })
    }

    /// Ends a campaign none of whose devices received a command: every device is rolled
    /// back and both operators get its failure report, which releases it there.
    async fn end_unprepared(&self, campaign: &CampaignRow, state: &str, reason: &str) {
        let devices = self.store.campaign_devices(&campaign.id).map_or(0, |d| d.len() as u32);
        let finished = Event::finished(&campaign.id, state, 0, devices);
        loop {
            let closed = finished.messages(&self.webhooks).and_then(|messages| {
                self.store.close_campaign(
                    &campaign.id,
                    state,
                    reason,
                    |device| {
                        let mut queued = final_reports(campaign, device, Err((2, reason)))?;
                        let rolled = Event::transition(
                            &campaign.id,
                            device,
                            "pending",
                            "rolled-back",
                            true,
                            now_ms(),
                        );
                        queued.extend(rolled.messages(&self.webhooks)?);
                        Ok(queued)
                    },
                    &messages,
                )
            });
            match closed {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(campaign = %campaign.id, error = %e, "cannot close the campaign; will retry");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.published(finished);
        tracing::info!(campaign = %campaign.id, state, reason, "campaign closed");
    }

    /// `POST /v1/campaigns/{id}/cancel`: devices that have not started are released, devices
    /// under way are told to restore their old profile, devices past the commit decision
    /// finish their switch. The campaign is `cancelled` once every device is final.
    pub(crate) async fn cancel_campaign(
        self: &Arc<Self>,
        caller: &str,
        id: &str,
    ) -> Result<CampaignReport, RoError> {
        let campaign = self.campaign_of(id)?;
        if caller != campaign.from && caller != campaign.to {
            return Err(RoError::Forbidden(format!("{caller} is not an operator of {id}")));
        }
        match campaign.state.as_str() {
            "preparing" => {
                self.store.set_campaign_state(id, "cancelling")?;
                // The creation driver sees it and closes the campaign; if none runs (the
                // campaign's creation already ended), close it here.
                if self.claim(id) {
                    self.release_claim(id);
                    tokio::spawn(Arc::clone(self).drive_creation(id.to_owned()));
                }
            }
            "ready" => {
                self.store.set_campaign_state(id, "cancelling")?;
                for row in self.store.campaign_devices(id)? {
                    self.abandon(&row.device_id, id, "campaign cancelled").await?;
                }
                self.campaign_progress(id)?;
            }
            _ => {}
        }
        tracing::info!(campaign = %id, by = caller, "campaign cancel requested");
        self.wake.notify_waiters();
        self.campaign_report(id)
    }

    /// A page of campaigns, oldest first, with the cursor of the next page.
    pub(crate) fn campaign_page(&self, query: &CampaignQuery<'_>) -> Result<CampaignPage, RoError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let rows =
            self.store.campaigns_page(&CampaignQuery { limit: limit + 1, ..query.clone() })?;
        let more = rows.len() > limit;
        let mut campaigns = Vec::new();
        for c in rows.into_iter().take(limit) {
            let mut devices = BTreeMap::new();
            for (state, n) in self.store.campaign_counts(&c.id)? {
                devices.insert(state, n);
            }
            campaigns.push(CampaignSummary {
                id: c.id,
                from: c.from,
                to: c.to,
                state: c.state,
                created_ms: c.created_ms,
                devices,
            });
        }
        let next = if more { campaigns.last().map(|c| c.id.clone()) } else { None };
        Ok(CampaignPage { campaigns, next })
    }

    /// [`Ro::campaign_progress`] for every campaign under way.
    pub(crate) fn campaigns_progress(&self) -> Result<(), RoError> {
        for state in ["ready", "cancelling"] {
            for campaign in self.store.campaigns_in(state)? {
                self.campaign_progress(&campaign.id)?;
            }
        }
        Ok(())
    }

    /// Marks a campaign `completed` (or `cancelled`) once every device is final.
    pub(crate) fn campaign_progress(&self, id: &str) -> Result<(), RoError> {
        let Some(campaign) = self.store.campaign(id)? else { return Ok(()) };
        let next = match campaign.state.as_str() {
            "ready" => "completed",
            "cancelling" => "cancelled",
            _ => return Ok(()),
        };
        if self.store.campaign_unfinished(id)? == 0 {
            let (event, messages) = self.campaign_finished_event(id, next)?;
            self.store.set_campaign_state_with(id, next, &messages)?;
            self.published(event);
            tracing::info!(campaign = %id, state = next, "campaign finished");
        }
        Ok(())
    }

    /// Every device's state and step timings.
    pub(crate) fn campaign_report(&self, id: &str) -> Result<CampaignReport, RoError> {
        let campaign = self.campaign_of(id)?;
        let mut summary = Summary::default();
        let mut devices = Vec::new();
        for row in self.store.campaign_devices(id)? {
            devices.push(self.device_report(&campaign, row, &mut summary)?);
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

    /// One device of a campaign (`GET /v1/campaigns/{id}/devices/{device}`).
    pub(crate) fn campaign_device(
        &self,
        id: &str,
        device: &DeviceId,
    ) -> Result<DeviceReport, RoError> {
        let campaign = self.campaign_of(id)?;
        let row = self
            .store
            .campaign_device(id, device)?
            .ok_or_else(|| RoError::NotFound(format!("device {device} in campaign {id}")))?;
        self.device_report(&campaign, row, &mut Summary::default())
    }

    /// A device's state, failure, what it waits for and its step timings; counted into
    /// `summary`.
    fn device_report(
        &self,
        campaign: &CampaignRow,
        row: DeviceRow,
        summary: &mut Summary,
    ) -> Result<DeviceReport, RoError> {
        let id = campaign.id.as_str();
        let (failed_step, failure) = match &row.state {
            DeviceState::Aborting { step, reason } | DeviceState::RolledBack { step, reason } => {
                (Some(*step), Some(reason.clone()))
            }
            DeviceState::Reconciling { reason } => (Some(12), Some(reason.clone())),
            _ => (None, None),
        };
        match &row.state {
            DeviceState::Switched => summary.switched += 1,
            DeviceState::RolledBack { .. } => summary.failed += 1,
            DeviceState::Reconciling { .. } => summary.reconciling += 1,
            _ => summary.in_progress += 1,
        }
        let outbox = self.store.outbox_state(id, Some(&row.device_id))?;
        let reported = row.state.is_final() && outbox.pending == 0 && outbox.dead.is_empty();
        if row.state.is_final() && !reported {
            summary.reports_pending += 1;
        }
        let since = row.since_ms / 1000;
        let waiting = match (&row.retry, &outbox.last_error, &row.state) {
            (Some(retry), _, _) => {
                Some(format!("{} (attempt {})", retry.last_error, retry.attempts))
            }
            (None, Some(error), _) if outbox.pending > 0 => {
                Some(format!("final report not yet acknowledged: {error}"))
            }
            // Between the decision and the device's word nothing is reported.
            (None, _, DeviceState::Committing { .. }) => Some(format!(
                "the device's signed answer to the commit order (since {since}; until it \
                 commits, its fallback timer may still restore the old profile)"
            )),
            (None, _, DeviceState::Aborting { .. }) => Some(format!(
                "the device's signed acknowledgement of the abort order (since {since})"
            )),
            _ => None,
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
        Ok(DeviceReport {
            device_id: row.device_id,
            iccid: row.iccid,
            state: row.state.name().into(),
            failed_step,
            failure,
            waiting,
            reported,
            report_refused: outbox.dead,
            steps,
        })
    }

    /// Whether a step begun at `since_ms` has run past its deadline.
    pub(crate) fn past_deadline(&self, since_ms: u64) -> bool {
        now_ms().saturating_sub(since_ms) > self.config.step_deadline().as_millis() as u64
    }

    /// Takes the right to drive a campaign's creation in this process and, on a shared
    /// store, among the instances (its lease).
    fn claim(&self, id: &str) -> bool {
        if !self.driving.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned()) {
            return false;
        }
        if matches!(self.lease_campaign(id), Ok(true)) {
            return true;
        }
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        false
    }

    fn release_claim(&self, id: &str) {
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.release_campaign(id);
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
