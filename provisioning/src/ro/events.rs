//! Campaign events for device-management stacks (`docs/campaigns.md`, "Events"): every
//! device transition and every campaign's end, as JSON documents with a unique `id`.
//!
//! Each event is written to the outbox once per configured webhook (`webhooks`), in the
//! same transaction as the state change it reports (`Ro::transition`, the one way a
//! device's state changes), so an event is never lost and never sent for a change that did
//! not happen. The same events feed the Server-Sent Events stream of `GET /v1/events`
//! (memory only: a live view; the webhooks are the durable channel).

use protocol::DeviceId;
use serde::{Deserialize, Serialize};

use super::error::RoError;
use super::metrics::{StateLabel, StepLabel};
use super::state::DeviceState;
use super::store::{DeviceRow, OutboxMessage};
use super::webhooks::{PEER_PREFIX, Webhooks};

/// What happened: a device moved, or a campaign ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// A device's change moved from one state to another (`docs/flow.md`, RO states).
    DeviceTransition {
        id: String,
        campaign: String,
        device_id: DeviceId,
        from: String,
        to: String,
        /// The new state is final: `switched` or `rolled-back`.
        #[serde(rename = "final")]
        is_final: bool,
        at_ms: u64,
    },
    /// Every device of the campaign is final (`completed`) or the campaign ended otherwise
    /// (`cancelled`, `failed`).
    CampaignFinished {
        id: String,
        campaign: String,
        state: String,
        switched: u32,
        rolled_back: u32,
        at_ms: u64,
    },
}

impl Event {
    pub fn id(&self) -> &str {
        match self {
            Event::DeviceTransition { id, .. } | Event::CampaignFinished { id, .. } => id,
        }
    }

    pub fn campaign(&self) -> &str {
        match self {
            Event::DeviceTransition { campaign, .. } | Event::CampaignFinished { campaign, .. } => {
                campaign
            }
        }
    }

    /// A device transition; its id is unique because a device enters a state at most once
    /// per millisecond.
    pub fn transition(
        campaign: &str,
        device: &DeviceId,
        from: &str,
        to: &str,
        is_final: bool,
        at_ms: u64,
    ) -> Self {
        Event::DeviceTransition {
            id: format!("{campaign}/{}/{to}/{at_ms}", device.to_hex()),
            campaign: campaign.to_owned(),
            device_id: device.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            is_final,
            at_ms,
        }
    }

    /// A campaign's end; a campaign ends once.
    pub fn finished(campaign: &str, state: &str, switched: u32, rolled_back: u32) -> Self {
        Event::CampaignFinished {
            id: format!("{campaign}/{state}"),
            campaign: campaign.to_owned(),
            state: state.to_owned(),
            switched,
            rolled_back,
            at_ms: now_ms(),
        }
    }

    /// The outbox messages that deliver this event to every webhook.
    pub(crate) fn messages(&self, webhooks: &Webhooks) -> Result<Vec<OutboxMessage>, RoError> {
        let names = webhooks.names();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::to_vec(self).map_err(|e| RoError::Store(e.to_string()))?;
        let device_id = match self {
            Event::DeviceTransition { device_id, .. } => Some(device_id.clone()),
            Event::CampaignFinished { .. } => None,
        };
        Ok(names
            .into_iter()
            .map(|name| OutboxMessage {
                key: format!("event/{name}/{}", self.id()),
                peer: format!("{PEER_PREFIX}{name}"),
                path: String::new(),
                body: body.clone(),
                missing_ok: false,
                campaign_id: self.campaign().to_owned(),
                device_id: device_id.clone(),
            })
            .collect())
    }
}

impl super::Ro {
    /// Moves a device to `state` (`RoStore::transition`) with the events it causes queued
    /// for the webhooks in the same transaction; then counts it, logs it, and publishes it
    /// on the event stream. `completed` are the steps that brought it there, timed from
    /// when the device entered its previous state.
    pub(crate) fn transition(
        &self,
        row: &DeviceRow,
        state: &DeviceState,
        completed: &[u8],
        messages: &[OutboxMessage],
    ) -> Result<(), RoError> {
        self.transition_by(row, state, completed, messages, |queued| {
            self.store.transition(&row.campaign_id, &row.device_id, state, completed, queued)
        })
    }

    /// [`Ro::transition`] written by `write`, which must queue the messages it is given in
    /// the transaction that moves the device (e.g. `RoStore::set_enrolled`).
    pub(crate) fn transition_by(
        &self,
        row: &DeviceRow,
        state: &DeviceState,
        completed: &[u8],
        messages: &[OutboxMessage],
        write: impl FnOnce(&[OutboxMessage]) -> Result<(), RoError>,
    ) -> Result<(), RoError> {
        let now = now_ms();
        let event = Event::transition(
            &row.campaign_id,
            &row.device_id,
            row.state.name(),
            state.name(),
            state.is_final(),
            now,
        );
        let mut queued = messages.to_vec();
        queued.extend(event.messages(&self.webhooks)?);
        write(&queued)?;
        if state.is_final() && !row.state.is_final() && row.state != DeviceState::Pending {
            self.admission.released();
        }
        let share = match completed.len() {
            0 => 0.0,
            n => now.saturating_sub(row.since_ms) as f64 / 1000.0 / n as f64,
        };
        for step in completed {
            self.observe_step(*step, share);
        }
        self.metrics.transitions.get_or_create(&StateLabel { state: state.name().into() }).inc();
        tracing::info!(
            campaign = %row.campaign_id,
            device = %row.device_id,
            from = row.state.name(),
            to = state.name(),
            "device transition"
        );
        if !queued.is_empty() {
            self.outbox_wake.notify_one();
        }
        let _ = self.events.send(event);
        Ok(())
    }

    /// Adds `ms` to a step's recorded time (`RoStore::record_step`) and to its histogram.
    pub(crate) fn record_step(&self, row: &DeviceRow, step: u8, ms: u64) -> Result<(), RoError> {
        self.store.record_step(&row.campaign_id, &row.device_id, step, ms)?;
        self.observe_step(step, ms as f64 / 1000.0);
        Ok(())
    }

    fn observe_step(&self, step: u8, seconds: f64) {
        let label = StepLabel { step: format!("{step:02}-{}", super::state::step_name(step)) };
        self.metrics.step_seconds.get_or_create(&label).observe(seconds);
    }

    /// The end of a campaign as an event: queued for the webhooks, published on the stream.
    pub(crate) fn campaign_finished_event(
        &self,
        campaign: &str,
        state: &str,
    ) -> Result<(Event, Vec<OutboxMessage>), RoError> {
        let (mut switched, mut rolled_back) = (0, 0);
        for row in self.store.campaign_devices(campaign)? {
            match row.state {
                DeviceState::Switched => switched += 1,
                DeviceState::RolledBack { .. } => rolled_back += 1,
                _ => {}
            }
        }
        let event = Event::finished(campaign, state, switched, rolled_back);
        let messages = event.messages(&self.webhooks)?;
        Ok((event, messages))
    }

    /// Publishes a committed event on the stream and wakes the outbox.
    pub(crate) fn published(&self, event: Event) {
        self.outbox_wake.notify_one();
        let _ = self.events.send(event);
    }
}

fn now_ms() -> u64 {
    super::store::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_their_type() {
        let device = DeviceId::from_name(&[0, 11, 1, 2, 3]).unwrap_or_else(|_| {
            let mut name = vec![0x00, 0x0B];
            name.extend([0xA5; 32]);
            DeviceId::from_name(&name).unwrap()
        });
        let e = Event::transition("c-1", &device, "pending", "tre-activated", false, 5);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "device-transition");
        assert_eq!(json["final"], false);
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        let f = Event::finished("c-1", "completed", 3, 1);
        assert_eq!(serde_json::to_value(&f).unwrap()["type"], "campaign-finished");
        assert_eq!(f.id(), "c-1/completed");
    }
}
