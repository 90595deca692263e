//! The RO's outbox (docs/flow.md, "Reports"): every report and release the RO owes an
//! operator is written to the store in the same transaction as the state change that causes
//! it, and a background task delivers it with retries — exponential backoff with jitter —
//! until the operator acknowledges it, whether or not the device still polls and across
//! restarts of the RO. Operators handle a repeated message idempotently (keyed by campaign
//! and device), so "at least once" from here is "exactly once in effect" there.
//!
//! A message the operator refuses for good (a 4xx other than 408 and 429, e.g. a report
//! that contradicts one it already has) is kept as `dead` with the operator's reason and
//! shown in the campaign's status: that needs a person, not a retry.

use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;

use protocol::DeviceId;

use super::Ro;
use super::error::RoError;
use super::store::{CampaignRow, OutboxMessage, OutboxRow, now_ms};
use crate::mno::api::{CampaignId, MAX_REASON_LEN, Report, ReportOutcome, path as mno_path};

/// The first retry comes after about this long; each further one waits twice as long.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Messages delivered at once.
const BATCH: usize = 32;

/// How long to wait before attempt `attempts + 1`: `BACKOFF_BASE · 2^attempts`, capped, with
/// ±50 % jitter so that many retries started by one outage do not arrive together.
pub(crate) fn backoff(attempts: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempts.min(16)).min(BACKOFF_CAP);
    let mut byte = [0u8; 1];
    let jitter = match ring::rand::SystemRandom::new().fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    };
    exp.mul_f64(jitter)
}

/// The final reports of a device to the campaign's two operators (step 12): success when
/// the card committed, failure with the step and reason when it runs the old profile again.
/// The new operator is told first in the list; the two are delivered independently.
pub(crate) fn final_reports(
    campaign: &CampaignRow,
    device: &DeviceId,
    outcome: Result<(), (u8, &str)>,
) -> Result<Vec<OutboxMessage>, RoError> {
    let id: CampaignId = campaign.id.parse().map_err(|e: &str| RoError::Store(e.into()))?;
    let report = match outcome {
        Ok(()) => Report {
            campaign: id,
            device_id: device.clone(),
            outcome: ReportOutcome::Success,
            step: None,
            reason: None,
        },
        Err((step, reason)) => Report {
            campaign: id,
            device_id: device.clone(),
            outcome: ReportOutcome::Failure,
            step: Some(step),
            reason: Some(reason.chars().take(MAX_REASON_LEN).collect()),
        },
    };
    let body = serde_json::to_vec(&report).map_err(|e| RoError::Store(e.to_string()))?;
    Ok([&campaign.to, &campaign.from]
        .into_iter()
        .map(|operator| OutboxMessage {
            key: format!("report/{}/{}/{operator}", campaign.id, device.to_hex()),
            peer: operator.clone(),
            path: mno_path::REPORTS.to_owned(),
            body: body.clone(),
            missing_ok: false,
            campaign_id: campaign.id.clone(),
            device_id: Some(device.clone()),
        })
        .collect())
}

impl Ro {
    /// Delivers the outbox for as long as the RO runs; woken early when a message is queued.
    pub(crate) async fn run_outbox(self: Arc<Self>) {
        loop {
            let rows = match self.store.outbox_due(now_ms(), BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            let handles: Vec<_> = rows
                .into_iter()
                .map(|row| {
                    let ro = Arc::clone(&self);
                    tokio::spawn(async move { ro.deliver(row).await })
                })
                .collect();
            for handle in handles {
                let _ = handle.await;
            }
            // A campaign whose last device finished just before a crash is completed here.
            if let Err(e) = self.campaigns_progress() {
                tracing::warn!(error = %e, "cannot update the campaigns' progress");
            }
            let wait = match self.store.outbox_next_due() {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())),
                _ => Duration::from_secs(5),
            };
            let wait = wait.clamp(Duration::from_millis(10), Duration::from_secs(5));
            let _ = tokio::time::timeout(wait, self.outbox_wake.notified()).await;
        }
    }

    async fn deliver(&self, row: OutboxRow) {
        let m = &row.message;
        let sent = async {
            let base = self.peers.operator(&m.peer)?;
            self.peers
                .post(&m.peer, &format!("{base}{}", m.path), "application/json", m.body.clone())
                .await
        }
        .await;
        let outcome = match sent {
            Ok(_) => Ok(()),
            Err(RoError::PeerRefused { status: 404, .. }) if m.missing_ok => Ok(()),
            Err(e) => Err(e),
        };
        let recorded = match outcome {
            Ok(()) => {
                tracing::info!(key = %m.key, peer = %m.peer, attempts = row.attempts + 1, "delivered");
                self.store.outbox_delivered(row.id)
            }
            Err(e) => {
                let dead = !e.is_transient();
                let next = now_ms() + backoff(row.attempts).as_millis() as u64;
                if dead {
                    tracing::error!(key = %m.key, peer = %m.peer, error = %e, "refused for good; kept as dead");
                } else {
                    tracing::warn!(key = %m.key, peer = %m.peer, attempts = row.attempts + 1, error = %e, "not delivered; will retry");
                }
                self.store.outbox_failed(row.id, &e.to_string(), next, dead)
            }
        };
        if let Err(e) = recorded {
            tracing::error!(key = %m.key, error = %e, "cannot record the delivery attempt");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        for attempts in 0..40 {
            let d = backoff(attempts);
            let exp = BACKOFF_BASE.saturating_mul(1 << attempts.min(16)).min(BACKOFF_CAP);
            assert!(d >= exp / 2 && d <= exp.mul_f64(1.5), "{attempts}: {d:?}");
        }
        assert!(backoff(30) <= BACKOFF_CAP.mul_f64(1.5));
    }
}
